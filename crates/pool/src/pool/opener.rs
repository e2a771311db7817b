//! Opening connections for unmet demand. Callers never connect themselves: they wait, and
//! openers (at most `max_connecting` at a time) connect on their behalf. A connect that is
//! no longer wanted when it finishes still lands in the idle set, so a cancelled caller
//! wastes nothing. While the database is down, openers wait out an exponential backoff with
//! full jitter first: one reconnect loop, no herd. Callers keep waiting meanwhile, in their
//! order, until a connection opens or their deadline passes.
//!
//! A connect that stalls (sent into a hung network: the bytes are swallowed, nothing ever
//! answers) stops counting against `max_connecting` after `STALLED_CONNECT`, so another
//! attempt starts beside it. Once a newer attempt gets through, the stalled ones that
//! started before it give up: they were lost in a hole the newer one did not meet, and
//! would otherwise hold the pool's capacity until their connect timeout. (With a slow
//! server the older attempts mostly finish first; one given up there costs only a connect,
//! since a newer one has just succeeded, and nothing can keep every attempt from finishing.)

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use holdfast_wire::CoarseInstant;

use super::internals::{backoff, Down, Internals, Limits};
use super::slot::Slot;
use super::Shared;
use crate::connect::{connect, Connection};
use crate::error::{ConnectError, PoolError};

/// How long a connect may run before it counts as stalled (see `Internals::stalled`).
/// Connects to a healthy server take milliseconds, even with TLS across a region.
pub(crate) const STALLED_CONNECT: Duration = Duration::from_secs(2);

/// Who a connect is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Demand {
    /// Callers waiting, or the `min_idle` warm-up: checked again before connecting.
    Waiters,
    /// The callers to come (`try_get` found nothing idle): opened whatever the queue holds.
    NextCaller,
}

/// One connect attempt, after `delay`.
pub(crate) async fn open_one(pool: Weak<Shared>, delay: Duration, demand: Demand) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Some(shared) = pool.upgrade() else {
        return;
    };
    let number = {
        // Still wanted? A waiter may have been served by a returned connection meanwhile.
        let mut g = shared.lock();
        let c = &shared.config;
        let others = g.opening.saturating_sub(g.stalled.len() + 1);
        // (This attempt is counted in `total`: warm-up stays within pool_size.)
        let warm_up = g.idle.len() + others < c.min_idle && g.total() <= c.pool_size;
        let wanted = demand == Demand::NextCaller || g.waiters.len() > others || warm_up;
        if g.closed || !wanted {
            g.opening -= 1;
            return;
        }
        g.attempts_started += 1;
        g.attempts_started
    };
    let attempt = open_connection(&shared);
    tokio::pin!(attempt);
    let (result, stalled) = tokio::select! {
        result = &mut attempt => (Some(result), false),
        _ = tokio::time::sleep(STALLED_CONNECT) => {
            // Probably sent into a hung network or server: let a fresh attempt start beside
            // it (within the maximum), so the pool recovers as soon as the network does,
            // not when this one reaches connect_timeout.
            {
                let mut g = shared.lock();
                g.stalled.push(number);
                shared.spawn_openers(&mut g);
            }
            (until_done_or_given_up(&shared, number, attempt).await, true)
        }
    };
    let mut g = shared.lock();
    if stalled {
        let Some(at) = g.stalled.iter().position(|n| *n == number) else {
            // Given up: whoever did so already released its place (a connection that
            // finished at that very moment is closed with it).
            tracing::debug!(pool = %shared.config.name, "gave up a stalled connect");
            return;
        };
        g.stalled.swap_remove(at);
    }
    g.opening -= 1;
    let Some(result) = result else {
        // Not reached: an attempt is given up only after its number was taken out above.
        return;
    };
    let mut fresh = None;
    match result {
        Ok(conn) => {
            shared.metrics.opened.increment(1);
            // Stalled connects that started before this one were lost in a hole it did not
            // meet: they give up, and their places are released now.
            let before = g.stalled.len();
            g.stalled.retain(|n| *n > number);
            let outrun = before - g.stalled.len();
            if outrun > 0 {
                g.opening -= outrun;
                shared.give_up.notify_waiters();
            }
            if let Some(down) = g.down.take() {
                tracing::info!(
                    pool = %shared.config.name,
                    down_for = ?down.since.elapsed(),
                    failures = down.failures,
                    "database reachable again"
                );
            }
            tracing::debug!(pool = %shared.config.name, backend_pid = conn.backend_pid(), "connection opened");
            g.open += 1;
            fresh = Some(shared.new_slot(conn));
        }
        Err(error) => {
            shared.metrics.connect_failures.increment(1);
            let now = Instant::now();
            let fatal = error.is_permanent();
            let failures = g.down.as_ref().map_or(1, |d| d.failures + 1);
            let pause = if fatal {
                shared.config.reconnect_backoff_max
            } else {
                backoff(failures, shared.config.reconnect_backoff_max)
            };
            if failures == 1 {
                tracing::warn!(pool = %shared.config.name, %error, "cannot connect to the database");
            } else {
                tracing::debug!(pool = %shared.config.name, %error, failures, "still cannot connect");
            }
            let cause = Arc::new(error);
            g.down = Some(Down {
                cause: Arc::clone(&cause),
                since: g.down.as_ref().map_or(now, |d| d.since),
                failures,
                next_attempt: now + pause,
                fatal,
            });
            // Waiters keep their place until a connection opens again or their deadline
            // passes (the deadline keeper then tells them the cause): an outage shorter
            // than a caller's budget costs it only time. A cause no wait can fix, with
            // nothing open that could come back to them, is told at once.
            if fatal && g.open == 0 {
                let pool = shared.config.name.clone();
                g.fail_waiters(|| PoolError::Unavailable {
                    pool: pool.clone(),
                    cause: Arc::clone(&cause),
                });
            }
        }
    }
    shared.spawn_openers(&mut g);
    drop(g);
    if let Some(slot) = fresh {
        shared.put(slot);
        shared.publish_gauges(&shared.lock());
    }
}

/// Connects, then runs the `after_connect` hook (bounded by `connect_timeout`): a
/// connection whose hook failed is closed, and the connect fails with the hook's error.
async fn open_connection(shared: &Shared) -> Result<Connection, ConnectError> {
    let conn = connect(&shared.config.connect).await?;
    let Some(hook) = &shared.config.after_connect else {
        return Ok(conn);
    };
    let bound = shared.config.connect.get_connect_timeout();
    let reason = match tokio::time::timeout(bound, hook.run(&conn)).await {
        Ok(Ok(())) => return Ok(conn),
        Ok(Err(error)) => crate::connect::box_error_text(&error),
        Err(_) => format!("did not finish within connect_timeout ({bound:?})"),
    };
    shared.metrics.after_connect_failures.increment(1);
    tracing::warn!(pool = %shared.config.name, %reason, "after_connect failed: closing the new connection");
    Err(ConnectError::AfterConnect { reason })
}

/// Waits for a stalled attempt to finish, or for it to be given up (`None`): whoever gives
/// it up takes its number out of `stalled` and releases its place, under the lock.
async fn until_done_or_given_up(
    shared: &Shared,
    number: u64,
    mut attempt: Pin<&mut impl std::future::Future<Output = Result<Connection, ConnectError>>>,
) -> Option<Result<Connection, ConnectError>> {
    loop {
        let given_up = shared.give_up.notified();
        tokio::pin!(given_up);
        given_up.as_mut().enable();
        if !shared.lock().stalled.contains(&number) {
            return None;
        }
        tokio::select! {
            result = &mut attempt => return Some(result),
            _ = given_up => {}
        }
    }
}

impl Shared {
    /// Wraps a freshly opened connection.
    pub(crate) fn new_slot(&self, conn: Connection) -> Box<Slot> {
        let now = CoarseInstant::now();
        let recycle_at = self.config.recycle.map(|age| {
            // 0 to 5% jitter, so that connections opened together are not all replaced at once.
            now.after(age.mul_f64(1.0 + fastrand::f64() * 0.05))
        });
        let id = self.next_slot.fetch_add(1, Ordering::Relaxed) + 1;
        if self.unanswered.is_some() || self.probe_after.is_some() {
            self.watch
                .register(id, conn.state().clone(), conn.driver_handle());
        }
        Box::new(Slot {
            conn,
            id,
            generation: self.generation.load(Ordering::Acquire),
            recycle_at,
            idle_since: now,
            statements: Default::default(),
        })
    }

    /// `try_get` found nothing idle: opens one connection for the callers to come, unless
    /// one is being opened already or the pool is at `pool_size`.
    pub(crate) fn spawn_openers_for_one(self: &Arc<Self>, g: &mut Internals) {
        if g.closed || g.opening > 0 || g.total() >= self.config.pool_size {
            return;
        }
        g.opening += 1;
        let delay = g.backoff_remaining(Instant::now());
        self.runtime
            .spawn(open_one(Arc::downgrade(self), delay, Demand::NextCaller));
    }

    /// Starts as many connects as unmet demand calls for, within `max_connecting` and the
    /// size limit. Each waits out the reconnect backoff first if the database is down.
    pub(crate) fn spawn_openers(self: &Arc<Self>, g: &mut Internals) {
        if g.closed {
            return;
        }
        let c = &self.config;
        let n = g.connects_wanted(Limits {
            max_size: c.max_size(),
            pool_size: c.pool_size,
            max_connecting: c.max_connecting,
            min_idle: c.min_idle,
        });
        let delay = g.backoff_remaining(Instant::now());
        for _ in 0..n {
            g.opening += 1;
            let weak = Arc::downgrade(self);
            self.runtime.spawn(open_one(weak, delay, Demand::Waiters));
        }
    }
}
