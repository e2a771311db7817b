//! Connections whose requests get no answer at all: the pool closes them.
//!
//! `statement_timeout` bounds a statement the server runs, but not one it never received.
//! A proxy or middlebox that swallows traffic (while its kernel still acknowledges the
//! bytes and keepalive probes, so TCP sees nothing wrong), a PgBouncer that is paused, a
//! server frozen on a dead disk: the caller then waits forever, holding its connection.
//! Maintenance looks at every open connection's wire state once a second: one that had
//! requests in flight at one look and has received no byte since has been waiting at least
//! that long. Past the bound it is closed, and its callers get an error instead of waiting
//! forever. Nothing of this runs on the query path: the tap's counters are read as they are.

use std::sync::Mutex;
use std::time::Duration;

use tokio::task::AbortHandle;

use holdfast_wire::{CoarseInstant, WireState};

/// One open connection, as the watch sees it.
struct Watched {
    id: u64,
    state: WireState,
    driver: AbortHandle,
    /// Since when the connection has had requests in flight and received nothing, as far
    /// as the looks so far show: (bytes received then, the first look that saw it so).
    waiting: Option<(u64, CoarseInstant)>,
    /// A probe is asking the server about it now.
    probing: bool,
    /// When the last probe of this silence ended.
    probed_at: Option<CoarseInstant>,
}

impl Watched {
    /// Updates what the looks show; returns how long the connection has had requests in
    /// flight and received nothing (`None`: it has nothing in flight, or this is the first
    /// look that sees it waiting).
    fn look(&mut self, now: CoarseInstant) -> Option<Duration> {
        if self.state.in_flight() == 0 {
            self.waiting = None;
            self.probed_at = None;
            return None;
        }
        let received = self.state.bytes_received();
        match self.waiting {
            // Requests were in flight at that look and no byte has come since.
            Some((then, since)) if then == received => Some(now.saturating_duration_since(since)),
            _ => {
                self.waiting = Some((received, now));
                self.probed_at = None;
                None
            }
        }
    }
}

/// A connection whose request has been unanswered past `probe_after`: the probe asks the
/// server what its backend is doing.
pub(crate) struct Quiet {
    pub(crate) id: u64,
    pub(crate) backend_pid: i32,
    pub(crate) state: WireState,
    /// Bytes received when it was picked: any byte since means an answer came.
    pub(crate) received: u64,
    pub(crate) driver: AbortHandle,
    pub(crate) silent_for: Duration,
}

/// Every open connection of the pool (idle, in use, serving `Pool::query`), registered when
/// opened and forgotten once its driver has ended; nothing on the checkout path.
#[derive(Default)]
pub(crate) struct Watch {
    connections: Mutex<Vec<Watched>>,
}

/// A connection silent past the bound: counted and logged, then closed with [`close`].
///
/// [`close`]: Silenced::close
pub(crate) struct Silenced {
    driver: AbortHandle,
    pub(crate) id: u64,
    pub(crate) backend_pid: Option<i32>,
    pub(crate) silent_for: Duration,
    pub(crate) in_flight: u32,
}

impl Watch {
    /// Starts watching connection `id`.
    pub(crate) fn register(&self, id: u64, state: WireState, driver: AbortHandle) {
        self.lock().push(Watched {
            id,
            state,
            driver,
            waiting: None,
            probing: false,
            probed_at: None,
        });
    }

    /// Connections whose requests have been unanswered longer than `after`, not being
    /// probed, and not probed within the last `after`: marked as being probed.
    pub(crate) fn take_quiet(&self, after: Duration) -> Vec<Quiet> {
        let now = CoarseInstant::now();
        let mut quiet = Vec::new();
        for w in self.lock().iter_mut() {
            if w.probing || w.driver.is_finished() {
                continue;
            }
            let Some(silent_for) = w.look(now) else {
                continue;
            };
            let probed_lately = w
                .probed_at
                .is_some_and(|at| now.saturating_duration_since(at) <= after);
            let Some(backend_pid) = w.state.backend_pid() else {
                continue;
            };
            if silent_for > after && !probed_lately {
                w.probing = true;
                quiet.push(Quiet {
                    id: w.id,
                    backend_pid,
                    state: w.state.clone(),
                    received: w.state.bytes_received(),
                    driver: w.driver.clone(),
                    silent_for,
                });
            }
        }
        quiet
    }

    /// The probe of connection `id` has ended.
    pub(crate) fn probed(&self, id: u64) {
        if let Some(w) = self.lock().iter_mut().find(|w| w.id == id) {
            w.probing = false;
            w.probed_at = Some(CoarseInstant::now());
        }
    }

    /// Looks at every connection: returns, and stops watching, those that have had requests
    /// in flight and received nothing for longer than `bound`; forgets those that have
    /// ended.
    pub(crate) fn take_silent(&self, bound: Duration) -> Vec<Silenced> {
        let now = CoarseInstant::now();
        let mut silent = Vec::new();
        self.lock().retain_mut(|w| {
            if w.driver.is_finished() {
                return false;
            }
            let in_flight = w.state.in_flight();
            let Some(silent_for) = w.look(now) else {
                return true;
            };
            if silent_for <= bound {
                return true;
            }
            silent.push(Silenced {
                driver: w.driver.clone(),
                id: w.id,
                backend_pid: w.state.backend_pid(),
                silent_for,
                in_flight,
            });
            false
        });
        silent
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        // Nothing here panics while holding the lock; a poisoned list is still a list.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Silenced {
    /// Closes the connection: its driver ends, the socket closes, and callers waiting on it
    /// get a "connection closed" error.
    pub(crate) fn close(self) {
        self.driver.abort();
    }
}
