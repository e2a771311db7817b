//! Claims several tasks per statement for a queue's slots. One fetcher per queue claims what
//! the idle slots need plus what they will start within [`AHEAD`] at their recent pace (at
//! most `claim_batch`), and keeps it in a small local buffer the slots take from. Long tasks
//! are therefore never hoarded: at a pace of seconds per task nothing is fetched ahead.
//!
//! A fetched task is leased from its claim, like a running one: if the worker dies, the
//! task waits for its lease to run out and is rescued, as a running task would be. A
//! fetched task that has not started while less than two heartbeat intervals of its lease
//! are left is given back (released without counting the attempt) instead of started.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::execution;
use crate::listener::Wake;
use crate::queue::Finish;
use crate::task::Claimed;
use crate::worker_state::Shared;

/// How far ahead a fetcher claims: what the slots start within this time at their pace.
pub(crate) const AHEAD: Duration = Duration::from_millis(20);

/// One queue's claimed tasks waiting for a slot, and the slots waiting for a task.
#[derive(Debug)]
pub(crate) struct Feed {
    queue: Arc<str>,
    slots: usize,
    buffer: Mutex<VecDeque<Claimed>>,
    /// Slots waiting for a task.
    idle: AtomicUsize,
    /// Tasks were put in the buffer.
    filled: Notify,
    /// A slot wants a task (the fetcher looks whether to claim).
    wanted: Notify,
    /// Mean time from a task's start to its end, in nanoseconds (`f64` bits; 0: none yet).
    pace_ns: AtomicU64,
}

impl Feed {
    /// The feed of `queue`, whose `slots` slots take from it.
    pub(crate) fn new(queue: Arc<str>, slots: usize) -> Feed {
        Feed {
            queue,
            slots,
            buffer: Mutex::new(VecDeque::new()),
            idle: AtomicUsize::new(0),
            filled: Notify::new(),
            wanted: Notify::new(),
            pace_ns: AtomicU64::new(0),
        }
    }

    /// The queue's name.
    pub(crate) fn queue(&self) -> &str {
        &self.queue
    }

    /// The next task for a slot, or `None` once `stopping` is set.
    pub(crate) async fn next(&self, stopping: &mut watch::Receiver<bool>) -> Option<Claimed> {
        self.idle.fetch_add(1, Ordering::SeqCst);
        self.wanted.notify_one();
        let task = loop {
            let filled = self.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            if let Some(task) = self.pop() {
                break Some(task);
            }
            if *stopping.borrow() {
                break None;
            }
            tokio::select! {
                _ = &mut filled => {}
                _ = stopping.changed() => {}
            }
        };
        self.idle.fetch_sub(1, Ordering::SeqCst);
        task
    }

    /// Records how long a task took from its start to its end.
    pub(crate) fn ran(&self, took: Duration) {
        let took = took.as_nanos() as f64;
        let old = f64::from_bits(self.pace_ns.load(Ordering::Relaxed));
        let new = if old == 0.0 {
            took.max(1.0)
        } else {
            old * 0.9 + took * 0.1
        };
        self.pace_ns.store(new.to_bits(), Ordering::Relaxed);
    }

    fn pop(&self) -> Option<Claimed> {
        self.buffer.lock().ok()?.pop_front()
    }

    fn len(&self) -> usize {
        self.buffer.lock().map(|b| b.len()).unwrap_or(0)
    }

    /// Tasks to hold beyond the idle slots: what the slots start within [`AHEAD`].
    fn ahead(&self, most: usize) -> usize {
        let pace = f64::from_bits(self.pace_ns.load(Ordering::Relaxed));
        if pace == 0.0 || most <= 1 {
            return 0;
        }
        let starts = self.slots as f64 * AHEAD.as_nanos() as f64 / pace;
        (starts as usize).min(most)
    }

    /// Takes out the buffered tasks that are too close to the end of their lease to start.
    fn stale(&self, shared: &Shared) -> Vec<Claimed> {
        let Ok(mut buffer) = self.buffer.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        let (stale, fresh): (VecDeque<Claimed>, VecDeque<Claimed>) =
            buffer.drain(..).partition(|task| too_late(shared, task, now));
        *buffer = fresh;
        stale.into()
    }

    fn take_all(&self) -> Vec<Claimed> {
        self.buffer
            .lock()
            .map(|mut b| b.drain(..).collect())
            .unwrap_or_default()
    }
}

/// Whether a fetched task has too little of its lease left to start: less than two heartbeat
/// intervals (the first heartbeat comes one interval after the start).
pub(crate) fn too_late(shared: &Shared, task: &Claimed, now: Instant) -> bool {
    let config = shared.config_for(&task.kind);
    task.claimed_at + config.lease < now + config.heartbeat_interval() * 2
}

/// The claim size for `n` wanted tasks: the next power of two (at most `most`), so that a
/// connection prepares a handful of claim statements, not one per size.
fn claim_size(n: usize, most: usize) -> usize {
    n.max(1).next_power_of_two().min(most)
}

/// Claims for `feed`'s slots until `stopping` is set; then gives back what was fetched and
/// not started.
pub(crate) async fn run(
    shared: Arc<Shared>,
    feed: Arc<Feed>,
    wake: Arc<Wake>,
    mut stopping: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let most = config.claim_batch.max(1);
    loop {
        if *stopping.borrow() {
            break;
        }
        give_back(&shared, feed.stale(&shared)).await;
        let wanted = feed.wanted.notified();
        tokio::pin!(wanted);
        wanted.as_mut().enable();
        // Read before claiming, so that a notification that arrives meanwhile is not lost.
        let seen = wake.epoch();
        let buffered = feed.len();
        let idle = feed.idle.load(Ordering::SeqCst);
        // Refilled when the idle slots are not all served, or when what is held for later
        // has fallen to half: claims stay large instead of topping up a task at a time.
        let target = idle + feed.ahead(most);
        let need = if buffered < idle || buffered * 2 <= target {
            target - buffered
        } else {
            0
        };
        if need == 0 {
            // Enough in hand: wait for a slot to take some (or to give back stale ones).
            tokio::select! {
                _ = &mut wanted => {}
                _ = tokio::time::sleep(config.heartbeat_interval()) => {}
                _ = stopping.changed() => {}
            }
            continue;
        }
        let size = claim_size(need, most);
        let started = Instant::now();
        let claimed = execution::claim(&shared, feed.queue(), size).await;
        shared
            .metrics
            .claim_seconds
            .record(started.elapsed().as_secs_f64());
        let got = match claimed {
            Ok(tasks) => {
                let got = tasks.len();
                if got > 0 {
                    if let Ok(mut buffer) = feed.buffer.lock() {
                        buffer.extend(tasks);
                    }
                    feed.filled.notify_waiters();
                }
                got
            }
            Err(error) => {
                tracing::warn!(owner = %config.owner, queue = feed.queue(), %error, "claim failed; will try again");
                0
            }
        };
        if got == size {
            continue;
        }
        // Nothing more is ready: wait for an enqueue, the poll interval, or shutdown. A slot
        // that wants a task does not end the wait (the queue was just found empty).
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if wake.epoch() != seen {
            continue;
        }
        // Spread the polls so that idle workers do not query in step.
        let poll = config.poll_interval.mul_f64(0.75 + fastrand::f64() * 0.5);
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stopping.changed() => {}
        }
    }
    // Fetched but not started: given back without counting the attempt, so that other
    // workers take them at once.
    give_back(&shared, feed.take_all()).await;
}

/// Releases fetched tasks that will not be started here.
async fn give_back(shared: &Arc<Shared>, tasks: Vec<Claimed>) {
    futures_util::future::join_all(tasks.into_iter().map(|task| {
        let shared = Arc::clone(shared);
        async move {
            let lease_until = task.claimed_at + shared.config_for(&task.kind).lease;
            execution::finish(&shared, &task, Finish::Released, lease_until).await;
        }
    }))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_sizes_are_few() {
        assert_eq!(claim_size(1, 100), 1);
        assert_eq!(claim_size(3, 100), 4);
        assert_eq!(claim_size(64, 100), 64);
        assert_eq!(claim_size(65, 100), 100);
        assert_eq!(claim_size(150, 100), 100);
        assert_eq!(claim_size(5, 1), 1);
        let sizes: std::collections::BTreeSet<usize> = (1..=1000).map(|n| claim_size(n, 100)).collect();
        assert_eq!(sizes.len(), 8, "{sizes:?}");
    }

    #[test]
    fn nothing_is_fetched_ahead_of_slow_tasks() {
        let feed = Feed::new("default".into(), 16);
        assert_eq!(feed.ahead(100), 0, "no pace yet: only what idle slots need");
        feed.ran(Duration::from_secs(2));
        assert_eq!(feed.ahead(100), 0, "2 s tasks: nothing ahead");
        let feed = Feed::new("default".into(), 16);
        feed.ran(Duration::from_micros(10));
        assert_eq!(feed.ahead(100), 100, "no-op tasks: a full batch");
        assert_eq!(feed.ahead(1), 0, "claim_batch 1: nothing ahead");
    }
}
