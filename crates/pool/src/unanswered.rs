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

use crate::pool_config::PoolConfig;

/// What `Auto` adds to the start-up `statement_timeout`: room for the server's own
/// cancellation and its error to arrive, on a loaded machine.
pub const AUTO_GRACE: Duration = Duration::from_secs(30);

/// When the pool closes a connection that has requests in flight and has received nothing
/// for a while (`DB_UNANSWERED_TIMEOUT_MS`: `auto`, `0` for off, or milliseconds).
///
/// A statement running under `statement_timeout` is answered (rows or the timeout's error)
/// within it, so silence well past it means the request never reached a server that can
/// answer. Checked once a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnansweredTimeout {
    /// The `statement_timeout` sent at start-up plus 30 s (the default). Off when none is
    /// sent: the server's own may be unbounded, and behind a transaction-mode pooler it is
    /// set only inside holdfast-tx transactions, so other statements may legitimately run
    /// longer.
    #[default]
    Auto,
    /// Never close a connection for silence.
    Off,
    /// After this long; it must exceed the start-up `statement_timeout`, if any. A session
    /// that raises its own `statement_timeout` (`SET statement_timeout = ...`) beyond this
    /// bound will have its long statements cut off: turn the bound off or raise it too.
    After(Duration),
}

impl UnansweredTimeout {
    /// The bound this setting gives for `config`'s connections, if any.
    pub fn resolve(self, config: &PoolConfig) -> Option<Duration> {
        match self {
            UnansweredTimeout::Off => None,
            UnansweredTimeout::After(bound) => Some(bound),
            UnansweredTimeout::Auto => start_up_statement_timeout(config).map(|t| t + AUTO_GRACE),
        }
    }
}

/// The `statement_timeout` every statement on the pool's connections runs under, if the
/// pool sets one at start-up (it does not behind a transaction-mode pooler).
pub(crate) fn start_up_statement_timeout(config: &PoolConfig) -> Option<Duration> {
    if config.connect.get_pooler().is_transaction() {
        return None;
    }
    config.connect.get_statement_timeout()
}

/// One open connection, as the watch sees it.
struct Watched {
    id: u64,
    state: WireState,
    driver: AbortHandle,
    /// Since when the connection has had requests in flight and received nothing, as far
    /// as the looks so far show: (bytes received then, the first look that saw it so).
    waiting: Option<(u64, CoarseInstant)>,
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
        });
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
            if in_flight == 0 {
                w.waiting = None;
                return true;
            }
            let received = w.state.bytes_received();
            let since = match w.waiting {
                // Requests were in flight at that look and no byte has come since.
                Some((then, since)) if then == received => since,
                _ => {
                    w.waiting = Some((received, now));
                    return true;
                }
            };
            let silent_for = now.saturating_duration_since(since);
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
