//! The deadline keeper: one task per pool that fails waiters whose `pool_timeout` ran out,
//! so that a caller waiting for a connection arms no timer of its own (registering and
//! clearing a timer per wait was a tenth of the pool's CPU under contention).
//!
//! It sleeps until the earliest deadline in the queue, or until a waiter with an earlier
//! one arrives (`Internals::enqueue` says when), and holds only a `Weak` to the pool: the
//! pool's drop wakes it to end.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::Shared;
use crate::error::PoolError;

/// `wait` from now; a wait too long for the clock (`Duration::MAX`, say) is a deadline a
/// century away instead of a panic.
pub(crate) fn deadline_after(wait: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

pub(crate) fn spawn(shared: &Arc<Shared>) {
    let pool = Arc::downgrade(shared);
    let wake = Arc::clone(&shared.deadline_keeper);
    shared.runtime.spawn(run(pool, wake));
}

async fn run(pool: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        // Registered before looking, so a waiter queued meanwhile is not missed.
        let told = wake.notified();
        tokio::pin!(told);
        told.as_mut().enable();
        let next = {
            let Some(shared) = pool.upgrade() else {
                return;
            };
            expire(&shared)
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = &mut told => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => told.await,
        }
    }
}

/// Fails every waiter past its deadline, and returns the next deadline. While the database
/// is down the error is `Unavailable` with the connect error (the real cause); otherwise a
/// timeout that carries the pool's state.
fn expire(shared: &Shared) -> Option<tokio::time::Instant> {
    let mut g = shared.lock();
    let expired = g.take_expired(tokio::time::Instant::now());
    let next = g.sweep_at;
    if expired.is_empty() {
        return next;
    }
    let status = shared.status_of(&g);
    let down = g.down.as_ref().map(|d| Arc::clone(&d.cause));
    drop(g);
    for waiter in expired {
        let pool = shared.config.name.clone();
        let error = match &down {
            Some(cause) => PoolError::Unavailable {
                pool,
                cause: Arc::clone(cause),
            },
            None => PoolError::Timeout {
                pool,
                waited: waiter.timeout,
                status,
            },
        };
        // A waiter that gave up meanwhile has nothing to be told.
        let _ = waiter.tx.send(Err(error));
    }
    next
}
