//! Taking a connection out: the idle set first, else a place in the first-come-first-served
//! queue until a connection is handed over or the deadline keeper fails the wait; then the
//! checks a connection that could be stale must pass before the caller sees it.

use std::panic::Location;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use holdfast_wire::CoarseInstant;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::config::PrePing;
use super::pooled::PooledConnection;
use super::slot::{CloseReason, Slot};
use super::{Pool, Shared};
use crate::connect::Connection;
use crate::error::PoolError;

impl Pool {
    pub(super) async fn acquire(
        &self,
        location: &'static Location<'static>,
        timeout: Duration,
    ) -> Result<PooledConnection, PoolError> {
        // Traced only as part of something traced (a request, a transaction, a task): the
        // pool's own background checkouts (claims, heartbeats) would each be a trace.
        if !tracing::enabled!(target: "holdfast_pool::acquire", tracing::Level::DEBUG)
            || tracing::Span::current().is_none()
        {
            return self.acquire_untraced(location, timeout).await;
        }
        let span = tracing::debug_span!(
            target: "holdfast_pool::acquire",
            "acquire",
            otel.name = "acquire",
            otel.status_code = tracing::field::Empty,
            db.system.name = "postgresql",
            db.client.connection.pool.name = %self.shared.config.name,
            db.client.connection.wait_time_ms = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = self
            .acquire_untraced(location, timeout)
            .instrument(span.clone())
            .await;
        span.record(
            "db.client.connection.wait_time_ms",
            started.elapsed().as_secs_f64() * 1000.0,
        );
        match &result {
            // The caller's span (current here, outside the acquire span) owns its statements.
            Ok(conn) => conn.connection().trace_under(&tracing::Span::current()),
            Err(e) => {
                span.record("error.type", e.kind_name());
                span.record("otel.status_code", "ERROR");
            }
        }
        result
    }

    pub(super) async fn acquire_untraced(
        &self,
        location: &'static Location<'static>,
        timeout: Duration,
    ) -> Result<PooledConnection, PoolError> {
        // The deadline is set when the caller first has to wait: the fast path (an idle
        // connection ready) reads no clock and arms no timer.
        let mut deadline = None;
        let mut retry = false;
        loop {
            let mut conn = match self.checkout(&mut deadline, retry, location, timeout).await {
                Ok(conn) => conn,
                Err(e) => {
                    match e {
                        PoolError::Timeout { .. } => self.shared.metrics.timeouts.increment(1),
                        PoolError::Unavailable { .. } => self.shared.metrics.unavailable.increment(1),
                        PoolError::Overloaded { .. } => self.shared.metrics.overloaded.increment(1),
                        _ => {}
                    }
                    return Err(e);
                }
            };
            // A connection that failed its check sends the caller to the front of the queue.
            retry = true;
            if self.verify(&mut conn, deadline, timeout).await {
                let metrics = &self.shared.metrics;
                metrics.acquired.increment(1);
                if let Some(deadline) = deadline {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    metrics.wait.record(timeout.saturating_sub(left).as_secs_f64());
                }
                return Ok(conn);
            }
        }
    }

    /// Takes an idle connection, or queues and waits for one until `deadline` (set here on
    /// the first wait, `timeout` from now). Turned away at once instead: when the database
    /// refused in a way no wait can fix and nothing is open, or when `max_waiting` callers
    /// wait already (a caller sent back to the front after a failed check is never shed).
    async fn checkout(
        &self,
        deadline: &mut Option<tokio::time::Instant>,
        front: bool,
        location: &'static Location<'static>,
        timeout: Duration,
    ) -> Result<PooledConnection, PoolError> {
        let shared = &self.shared;
        let mut expired = Vec::new();
        let mut unparked = false;
        let (id, rx) = loop {
            let mut g = shared.lock();
            if g.closed {
                return Err(PoolError::Closed {
                    pool: shared.config.name.clone(),
                });
            }
            let before = expired.len();
            let taken = g.take_idle(CoarseInstant::now(), &mut expired);
            g.open -= expired.len() - before;
            if let Some(slot) = taken {
                g.in_use += 1;
                if shared.config.leak_threshold.is_some() {
                    g.record_lease(slot.id, location);
                }
                drop(g);
                self.close_expired(expired);
                return Ok(PooledConnection::new(Arc::clone(shared), slot));
            }
            // No idle connection, but a `pool.query` lane parked for the next statement
            // holds one: it goes back (to the first waiter, if any), and we look again.
            if !unparked && shared.lanes.parked() > 0 {
                drop(g);
                unparked = true;
                shared.lanes.unpark_all();
                continue;
            }
            if let Some(down) = g.down.as_ref().filter(|d| d.fatal && g.open == 0) {
                return Err(PoolError::Unavailable {
                    pool: shared.config.name.clone(),
                    cause: Arc::clone(&down.cause),
                });
            }
            if timeout.is_zero() {
                // `try_get`: no wait at all. Demand still opens a connection for the next
                // caller, and the answer is the one a deadline would give.
                shared.spawn_openers_for_one(&mut g);
                let pool = shared.config.name.clone();
                return Err(match g.down.as_ref() {
                    Some(down) => PoolError::Unavailable {
                        pool,
                        cause: Arc::clone(&down.cause),
                    },
                    None => PoolError::Timeout {
                        pool,
                        waited: Duration::ZERO,
                        status: shared.status_of(&g),
                    },
                });
            }
            let max_waiting = shared.config.max_waiting;
            if max_waiting > 0 && !front && g.waiters.len() >= max_waiting {
                return Err(PoolError::Overloaded {
                    pool: shared.config.name.clone(),
                    waiting: g.waiters.len(),
                });
            }
            let (tx, rx) = oneshot::channel();
            // No timer of our own: the pool's deadline keeper fails us at the deadline (one
            // timer per pool instead of one per waiting caller).
            let deadline = *deadline.get_or_insert_with(|| super::deadlines::deadline_after(timeout));
            let (id, wake_keeper) = g.enqueue(tx, location, front, deadline, timeout);
            if wake_keeper {
                shared.deadline_keeper.notify_one();
            }
            shared.spawn_openers(&mut g);
            shared.publish_gauges(&g);
            break (id, rx);
        };
        self.close_expired(expired);
        // A lane parked after our look, before we queued, saw no waiter to give its
        // connection to (see `Seat`'s drop); now that we are queued, it comes to us.
        if shared.lanes.parked() > 0 {
            shared.lanes.unpark_all();
        }
        let mut waiting = Waiting {
            shared,
            id,
            rx: Some(rx),
            served: false,
        };
        let received = match waiting.rx.as_mut() {
            Some(rx) => rx.await.ok(),
            None => None,
        };
        // Whoever answered (a connection, the deadline keeper's timeout, a failure) took us
        // off the queue first.
        waiting.served = true;
        received.unwrap_or_else(|| {
            Err(PoolError::Closed {
                pool: shared.config.name.clone(),
            })
        })
    }

    fn close_expired(&self, expired: Vec<(Box<Slot>, CloseReason)>) {
        let mut any_broken = false;
        for (slot, reason) in expired {
            if reason == CloseReason::Broken {
                self.shared.note_disconnect(&slot.conn, 0);
                any_broken = true;
            }
            self.shared.close_slot(Some((slot, reason)));
        }
        if any_broken {
            let mut g = self.shared.lock();
            self.shared.spawn_openers(&mut g);
        }
    }

    /// Pings a connection that could be stale: one older than the last disconnect, or (with
    /// pre-ping `auto`) one the server has been silent on for longer than the window. A
    /// connection that fails is closed and the caller never sees it.
    async fn verify(
        &self,
        conn: &mut PooledConnection,
        deadline: Option<tokio::time::Instant>,
        timeout: Duration,
    ) -> bool {
        let shared = &self.shared;
        let generation = shared.generation.load(Ordering::Acquire);
        let Some(slot) = conn.slot_mut() else {
            return false;
        };
        let stale = slot.generation < generation;
        if !stale && !shared.pre_ping_due(&slot.conn) {
            return true;
        }
        let left = deadline.map_or(timeout, |d| {
            d.saturating_duration_since(tokio::time::Instant::now())
        });
        let budget = shared
            .config
            .ping_timeout
            .min(left)
            .max(Duration::from_millis(10));
        shared.metrics.pings.increment(1);
        let ok = matches!(
            tokio::time::timeout(budget, slot.conn.batch_execute("")).await,
            Ok(Ok(()))
        ) && slot.conn.state().is_clean();
        if ok && shared.wrong_role(&slot.conn, slot.conn.state().errors()) {
            // Answered, but the server changed role (a standby promoted): not what the pool
            // wants any more.
            conn.discard_for(CloseReason::WrongRole);
            return false;
        }
        if ok {
            slot.generation = generation;
            return true;
        }
        shared.metrics.ping_failures.increment(1);
        tracing::debug!(pool = %shared.config.name, conn = slot.id, stale, "connection failed its check: replacing it");
        conn.discard_for(CloseReason::PingFailed);
        false
    }
}

impl Shared {
    /// Whether the pre-ping policy wants `conn` pinged before its next use: always, never,
    /// or (`auto`) when the server has been silent on it longer than the window.
    pub(super) fn pre_ping_due(&self, conn: &Connection) -> bool {
        match self.config.pre_ping {
            PrePing::Always => true,
            PrePing::Never => false,
            PrePing::Auto => conn
                .state()
                .idle_for()
                .is_none_or(|idle| idle > self.config.pre_ping_window),
        }
    }
}

/// A place in the queue. Dropping it (the caller's future was cancelled) leaves the queue
/// first, under the lock, and only then drops the receiver: a connection already sent to it
/// is returned to the pool by its own drop, outside the lock.
struct Waiting<'a> {
    shared: &'a Arc<Shared>,
    id: u64,
    rx: Option<oneshot::Receiver<Result<PooledConnection, PoolError>>>,
    /// Already off the queue (answered, or dequeued after a timeout): no lock needed.
    served: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.served {
            self.shared.lock().dequeue(self.id);
        }
        drop(self.rx.take());
    }
}
