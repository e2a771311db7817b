//! Opening connections for unmet demand. Callers never connect themselves: they wait, and
//! openers (at most `max_connecting` at a time) connect on their behalf. A connect that is
//! no longer wanted when it finishes still lands in the idle set, so a cancelled caller
//! wastes nothing. While the database is down, openers wait out an exponential backoff with
//! full jitter first: one reconnect loop, no herd.
//!
//! A connect that stalls (sent into a hung network: the bytes are swallowed, nothing ever
//! answers) stops counting against `max_connecting`, so another attempt starts beside it.
//! The stall bound follows the connects that succeed (ten times the slowest recent one,
//! within 0.5 to 2 s), so a fresh attempt goes out soon after a network heals. Stalled
//! attempts give up once a newer connect gets through (they are lost in the hole), and at
//! most `max_connecting` of them hang at once (the oldest gives up), so they do not hold
//! the pool's capacity until their connect timeout.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::connection::{connect, Connection};
use crate::error::{ConnectError, PoolError};
use crate::internals::{backoff, Down};
use crate::shared::Shared;

/// Bounds on how long a connect may run before it counts as stalled. Connects to a healthy
/// server take milliseconds, even with TLS across a region; before any connect succeeded
/// the longest bound applies.
pub(crate) const STALL_MIN: Duration = Duration::from_millis(500);
pub(crate) const STALL_MAX: Duration = Duration::from_secs(2);

/// The stall bound for a slowest recent connect of `slowest` nanoseconds (0: none yet).
pub(crate) fn stall_bound(slowest: u64) -> Duration {
    match slowest {
        0 => STALL_MAX,
        slowest => Duration::from_nanos(slowest.saturating_mul(10)).clamp(STALL_MIN, STALL_MAX),
    }
}

/// The slowest recent connect after one that took `took`: the larger of it and the old
/// value less an eighth, so that one slow connect is forgotten over the next few.
pub(crate) fn slowest_after(old: u64, took: Duration) -> u64 {
    let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
    took.max(old - old / 8)
}

/// One connect attempt, after `delay`.
pub(crate) async fn open_one(pool: Weak<Shared>, delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Some(shared) = pool.upgrade() else {
        return;
    };
    {
        // Still wanted? A waiter may have been served by a returned connection meanwhile.
        let mut g = shared.lock();
        let c = &shared.config;
        let others = g.opening.saturating_sub(g.stalled.len() + 1);
        // (This attempt is counted in `total`: warm-up stays within pool_size.)
        let warm_up = g.idle.len() + others < c.min_idle && g.total() <= c.pool_size;
        let wanted = g.waiters.len() > others || warm_up;
        if g.closed || !wanted {
            g.opening -= 1;
            return;
        }
    }
    let started = Instant::now();
    let attempt = connect(&shared.config.connect);
    tokio::pin!(attempt);
    let (result, ticket) = tokio::select! {
        result = &mut attempt => (Some(result), None),
        _ = tokio::time::sleep(shared.stall_bound()) => {
            let ticket = stall(&shared);
            (until_done_or_given_up(&shared, ticket, attempt).await, Some(ticket))
        }
    };
    let mut g = shared.lock();
    if let Some(ticket) = ticket {
        let Some(at) = g.stalled.iter().position(|t| *t == ticket) else {
            // Given up: whoever did so already released its place (a connection that
            // finished at that very moment is closed with it).
            tracing::debug!(pool = %shared.config.name, "gave up a stalled connect");
            return;
        };
        g.stalled.remove(at);
    }
    g.opening -= 1;
    let Some(result) = result else {
        // Not reached: an attempt is given up only after its ticket was taken out above.
        return;
    };
    let mut fresh = None;
    match result {
        Ok(conn) => {
            shared.metrics.opened.increment(1);
            shared.note_connect_time(started.elapsed());
            // Connects still hanging were sent into a network that has since let this one
            // through: they will not come back.
            if !g.stalled.is_empty() {
                g.opening -= g.stalled.len();
                g.stalled.clear();
                g.give_up_below = g.next_stall_ticket;
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
            let fatal = is_fatal(&error);
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
            });
            // Nothing open could come back to the waiters: tell them now, with the cause.
            if g.open == 0 {
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
    }
}

/// Marks the calling attempt stalled and lets a fresh one start beside it; past
/// `max_connecting` stalled attempts, the oldest gives up. Returns this attempt's ticket.
///
/// Whoever gives an attempt up takes its ticket out of `stalled` and releases its place in
/// `opening` at once, under the lock, so the counts never include an attempt being
/// abandoned; the attempt itself only drops its connect when it wakes.
fn stall(shared: &Arc<Shared>) -> u64 {
    let mut g = shared.lock();
    let ticket = g.next_stall_ticket;
    g.next_stall_ticket += 1;
    g.stalled.push_back(ticket);
    if g.stalled.len() > shared.config.max_connecting {
        if let Some(oldest) = g.stalled.pop_front() {
            g.opening -= 1;
            g.give_up_below = g.give_up_below.max(oldest + 1);
            shared.give_up.notify_waiters();
        }
    }
    shared.spawn_openers(&mut g);
    ticket
}

/// Waits for a stalled attempt to finish, or for it to be given up (`None`).
async fn until_done_or_given_up(
    shared: &Shared,
    ticket: u64,
    mut attempt: Pin<&mut impl std::future::Future<Output = Result<Connection, ConnectError>>>,
) -> Option<Result<Connection, ConnectError>> {
    loop {
        let given_up = shared.give_up.notified();
        tokio::pin!(given_up);
        given_up.as_mut().enable();
        if shared.lock().give_up_below > ticket {
            return None;
        }
        tokio::select! {
            result = &mut attempt => return Some(result),
            _ = given_up => {}
        }
    }
}

/// Errors that retrying soon will not fix: authentication, a missing database or role, a
/// configuration that names no host, a refused certificate. The reconnect loop waits its longest pause after them.
fn is_fatal(error: &ConnectError) -> bool {
    match error {
        ConnectError::NoHost => true,
        // A certificate refused, or TLS required of a server without it: settings to fix.
        ConnectError::Tls { problem, .. } => *problem != crate::TlsProblem::Handshake,
        ConnectError::Postgres { .. } => error
            .sqlstate()
            .is_some_and(|code| matches!(code.code(), "28P01" | "28000" | "3D000" | "42704")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_bound_follows_recent_connects_within_its_limits() {
        assert_eq!(stall_bound(0), STALL_MAX, "nothing known yet");
        let ms = |n: u64| Duration::from_millis(n);
        let nanos = |d: Duration| d.as_nanos() as u64;
        assert_eq!(stall_bound(nanos(ms(3))), STALL_MIN, "a quick network: the floor");
        assert_eq!(stall_bound(nanos(ms(120))), ms(1200));
        assert_eq!(stall_bound(nanos(ms(900))), STALL_MAX, "the ceiling");
        // One slow connect raises it at once and is forgotten over the next ones.
        let mut slowest = slowest_after(0, ms(3));
        slowest = slowest_after(slowest, ms(150));
        assert_eq!(stall_bound(slowest), ms(1500));
        for _ in 0..40 {
            slowest = slowest_after(slowest, ms(3));
        }
        assert_eq!(stall_bound(slowest), STALL_MIN);
    }
}
