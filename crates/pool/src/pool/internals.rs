//! The pool's bookkeeping, always changed under one lock and never across an `.await`:
//! which connections exist, which are idle, who waits, how many are being opened.
//!
//! Counting rule (promise 3): `open + opening <= pool_size + max_overflow`, where `open`
//! counts every connection that exists: idle, in use, or being reset or pinged by the pool.

use std::collections::{HashMap, VecDeque};
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_wire::CoarseInstant;
use tokio::sync::oneshot;

use super::pooled::PooledConnection;
use super::slot::{CloseReason, Slot};
use crate::error::{ConnectError, PoolError};

/// A caller waiting for a connection, first come first served.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) id: u64,
    pub(crate) tx: oneshot::Sender<Result<PooledConnection, PoolError>>,
    /// Where the caller asked, for leak reports.
    pub(crate) location: &'static Location<'static>,
    /// When the deadline keeper fails it.
    pub(crate) deadline: tokio::time::Instant,
    /// The wait it was given, for the error's text.
    pub(crate) timeout: Duration,
}

/// The database could not be reached on the last attempt.
#[derive(Debug, Clone)]
pub(crate) struct Down {
    pub(crate) cause: Arc<ConnectError>,
    pub(crate) since: Instant,
    pub(crate) failures: u32,
    pub(crate) next_attempt: Instant,
    /// The cause is one no wait can fix (authentication, a missing database, TLS
    /// settings): callers are told at once instead of waiting for their deadline.
    pub(crate) fatal: bool,
}

/// Who holds a connection, for leak detection.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) since: CoarseInstant,
    pub(crate) location: &'static Location<'static>,
    pub(crate) warned: bool,
}

/// Everything behind the pool's lock.
#[derive(Debug, Default)]
pub(crate) struct Internals {
    /// Idle connections, most recently returned last (taken from the end: warm first).
    /// Boxed so that handing one around moves a pointer, not the connection.
    #[allow(clippy::vec_box)]
    pub(crate) idle: Vec<Box<Slot>>,
    pub(crate) waiters: VecDeque<Waiter>,
    /// Connections that exist (idle, in use, being reset or pinged).
    pub(crate) open: usize,
    /// Connects in progress.
    pub(crate) opening: usize,
    /// Of those, the numbers of connects running longer than `STALLED_CONNECT` (probably
    /// sent into a hung network): still counted against the maximum, but no longer against
    /// `max_connecting` nor as covering a waiter, so that a fresh attempt starts while they
    /// hang.
    pub(crate) stalled: Vec<u64>,
    /// Connect attempts started so far; each is numbered by this count when it starts.
    pub(crate) attempts_started: u64,
    /// Connections held by callers.
    pub(crate) in_use: usize,
    pub(crate) closed: bool,
    pub(crate) down: Option<Down>,
    pub(crate) next_waiter: u64,
    /// Held connections by slot id, only when leak detection is on.
    pub(crate) leases: HashMap<u64, Lease>,
    /// When the deadline keeper wakes next (`None`: it sleeps until told).
    pub(crate) sweep_at: Option<tokio::time::Instant>,
}

/// The size settings `connects_wanted` works within (from the pool's configuration).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// pool_size + max_overflow.
    pub max_size: usize,
    /// The size kept; min_idle warm-up stays within it.
    pub pool_size: usize,
    /// Connects at a time.
    pub max_connecting: usize,
    /// Idle connections kept warm.
    pub min_idle: usize,
}

impl Internals {
    /// Connections that exist or are being opened: never above the pool's maximum.
    pub(crate) fn total(&self) -> usize {
        self.open + self.opening
    }

    /// Takes the warmest idle connection that can be handed out, moving expired ones to
    /// `expired` (still counted open; the caller closes them outside the lock).
    pub(crate) fn take_idle(
        &mut self,
        now: CoarseInstant,
        expired: &mut Vec<(Box<Slot>, CloseReason)>,
    ) -> Option<Box<Slot>> {
        while let Some(slot) = self.idle.pop() {
            match slot.expired(now) {
                None => return Some(slot),
                Some(reason) => expired.push((slot, reason)),
            }
        }
        None
    }

    /// Queues a waiter and returns its id, and whether the deadline keeper must be woken
    /// (its next wake-up is later than this waiter's deadline, or it has none).
    pub(crate) fn enqueue(
        &mut self,
        tx: oneshot::Sender<Result<PooledConnection, PoolError>>,
        location: &'static Location<'static>,
        front: bool,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> (u64, bool) {
        self.next_waiter += 1;
        let waiter = Waiter {
            id: self.next_waiter,
            tx,
            location,
            deadline,
            timeout,
        };
        let wake_keeper = self.sweep_at.is_none_or(|at| deadline < at);
        if wake_keeper {
            // Told once: later waiters with later deadlines need not wake it again.
            self.sweep_at = Some(deadline);
        }
        if front {
            self.waiters.push_front(waiter);
        } else {
            self.waiters.push_back(waiter);
        }
        (self.next_waiter, wake_keeper)
    }

    /// Takes the waiters whose deadline has passed off the queue, and sets the keeper's next
    /// wake-up to the earliest deadline left.
    pub(crate) fn take_expired(&mut self, now: tokio::time::Instant) -> Vec<Waiter> {
        let mut expired = Vec::new();
        if self.waiters.iter().any(|w| w.deadline <= now) {
            for waiter in std::mem::take(&mut self.waiters) {
                if waiter.deadline <= now {
                    expired.push(waiter);
                } else {
                    self.waiters.push_back(waiter);
                }
            }
        }
        self.sweep_at = self.waiters.iter().map(|w| w.deadline).min();
        expired
    }

    /// Notes who holds connection `id`, for leak detection.
    pub(crate) fn record_lease(&mut self, id: u64, location: &'static Location<'static>) {
        self.leases.insert(
            id,
            Lease {
                since: CoarseInstant::now(),
                location,
                warned: false,
            },
        );
    }

    /// Removes waiter `id` if it is still queued.
    pub(crate) fn dequeue(&mut self, id: u64) {
        if let Some(i) = self.waiters.iter().position(|w| w.id == id) {
            self.waiters.remove(i);
        }
    }

    /// How many more connections the current demand calls for, within the limits.
    pub(crate) fn connects_wanted(&self, limits: Limits) -> usize {
        let Limits {
            max_size,
            pool_size,
            max_connecting,
            min_idle,
        } = limits;
        // Waiters not yet covered by connects in progress, or the warm-up shortfall. Warm-up
        // never reaches into overflow: an overflow connection is closed when it comes back
        // to an idle set at pool_size, so opening one for min_idle would only churn.
        let live = self.opening.saturating_sub(self.stalled.len());
        let for_waiters = self.waiters.len().saturating_sub(live);
        let for_min_idle = min_idle
            .saturating_sub(self.idle.len() + live)
            .min(pool_size.saturating_sub(self.total()));
        let wanted = for_waiters.max(for_min_idle);
        let room = max_size.saturating_sub(self.total());
        let slots = max_connecting.saturating_sub(live);
        wanted.min(room).min(slots)
    }

    /// Fails every waiter with `error` (the pool closed, or the database refused in a way no
    /// wait can fix and no connection is left that could come back to them).
    pub(crate) fn fail_waiters(&mut self, error: impl Fn() -> PoolError) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.tx.send(Err(error()));
        }
    }

    /// The pause before the next connect attempt while the database is down.
    pub(crate) fn backoff_remaining(&self, now: Instant) -> Duration {
        self.down
            .as_ref()
            .map(|d| d.next_attempt.saturating_duration_since(now))
            .unwrap_or(Duration::ZERO)
    }
}

/// Exponential backoff with full jitter: up to `base * 2^(failures-1)`, capped at `max`.
pub(crate) fn backoff(failures: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(50);
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let cap = exp.min(max);
    cap.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later(secs: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(secs)
    }

    #[test]
    fn the_deadline_keeper_is_woken_only_for_an_earlier_deadline() {
        let mut i = Internals::default();
        let now = tokio::time::Instant::now();
        let mut ids = Vec::new();
        for (secs, wake) in [(30, true), (31, false), (5, true), (40, false)] {
            let (tx, rx) = oneshot::channel();
            let (id, woken) = i.enqueue(
                tx,
                Location::caller(),
                false,
                now + Duration::from_secs(secs),
                Duration::from_secs(secs),
            );
            assert_eq!(woken, wake, "deadline in {secs} s");
            ids.push((id, rx));
        }
        assert!(i.take_expired(now).is_empty());
        assert_eq!(i.sweep_at, Some(now + Duration::from_secs(5)));
        let gone: Vec<u64> = i
            .take_expired(now + Duration::from_secs(31))
            .iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(gone, [ids[0].0, ids[1].0, ids[2].0]);
        assert_eq!(i.waiters.len(), 1);
        assert_eq!(i.sweep_at, Some(now + Duration::from_secs(40)));
        i.take_expired(now + Duration::from_secs(40));
        assert_eq!(i.sweep_at, None, "nothing left to wake for");
    }

    fn limits(max_size: usize, max_connecting: usize, min_idle: usize) -> Limits {
        Limits {
            max_size,
            pool_size: 5,
            max_connecting,
            min_idle,
        }
    }

    #[test]
    fn connects_wanted_respects_every_limit() {
        let mut i = Internals::default();
        assert_eq!(i.connects_wanted(limits(15, 2, 0)), 0, "no demand");
        for _ in 0..5 {
            let (tx, _rx) = oneshot::channel();
            i.enqueue(tx, Location::caller(), false, later(30), Duration::from_secs(30));
        }
        assert_eq!(i.connects_wanted(limits(15, 2, 0)), 2, "max_connecting");
        i.opening = 2;
        assert_eq!(i.connects_wanted(limits(15, 2, 0)), 0);
        i.stalled = vec![1, 2];
        assert_eq!(
            i.connects_wanted(limits(15, 2, 0)),
            2,
            "stalled connects leave max_connecting free"
        );
        assert_eq!(
            i.connects_wanted(limits(4, 2, 0)),
            2,
            "but count against the maximum"
        );
        assert_eq!(i.connects_wanted(limits(3, 2, 0)), 1);
        i.stalled.clear();
        i.opening = 0;
        i.open = 14;
        assert_eq!(
            i.connects_wanted(limits(15, 2, 0)),
            1,
            "room left under the maximum"
        );
        i.open = 15;
        assert_eq!(i.connects_wanted(limits(15, 2, 0)), 0);
        i.waiters.clear();
        i.open = 0;
        assert_eq!(i.connects_wanted(limits(15, 2, 3)), 2, "warm-up to min_idle");
        i.open = 4;
        assert_eq!(
            i.connects_wanted(limits(15, 2, 3)),
            1,
            "warm-up stops at pool_size (5), all four in use"
        );
        i.open = 5;
        assert_eq!(i.connects_wanted(limits(15, 2, 3)), 0, "never into overflow");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(2);
        for failures in 1..40 {
            let d = backoff(failures, max);
            assert!(d <= max);
            let ceiling = Duration::from_millis(50).saturating_mul(1u32 << (failures - 1).min(16));
            assert!(d <= ceiling, "{failures}: {d:?}");
        }
    }

    #[test]
    fn dequeue_removes_only_that_waiter() {
        let mut i = Internals::default();
        let (a, _ra) = oneshot::channel();
        let (b, _rb) = oneshot::channel();
        let (ida, _) = i.enqueue(a, Location::caller(), false, later(30), Duration::from_secs(30));
        let (idb, _) = i.enqueue(b, Location::caller(), false, later(30), Duration::from_secs(30));
        i.dequeue(ida);
        assert_eq!(i.waiters.len(), 1);
        assert_eq!(i.waiters[0].id, idb);
        i.dequeue(ida);
        assert_eq!(i.waiters.len(), 1);
    }
}
