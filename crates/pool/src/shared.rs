//! The state every handle of one pool shares, and the synchronous moves on it: placing a
//! connection (to the oldest waiter, the idle set, or closed as overflow), discarding one,
//! and starting connects for unmet demand.
//!
//! Locking rule: the internals lock is never held across an `.await`, and nothing that can
//! run pool code on drop (a `PooledConnection`, a waiter's receiver) is dropped under it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use holdfast_wire::{CoarseInstant, Liveness};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::connection::Connection;
use crate::internals::{CloseReason, Internals, Slot};
use crate::pipelined::{Lanes, Outlook};
use crate::pool_config::PoolConfig;
use crate::pool_metrics::PoolMetrics;
use crate::pooled::PooledConnection;
use crate::status::PoolStatus;
use crate::unanswered::Watch;

/// SQLSTATEs after which every older connection is suspect: admin or crash shutdown,
/// cannot connect now, read-only transaction (a failover left us on a standby).
const DISCONNECT_SQLSTATES: [&str; 4] = ["57P01", "57P02", "57P03", "25006"];

pub(crate) struct Shared {
    pub(crate) config: PoolConfig,
    internals: Mutex<Internals>,
    /// Bumped on every disconnect-class failure; connections older than the current value
    /// are verified before their next use.
    pub(crate) generation: AtomicU64,
    next_slot: AtomicU64,
    pub(crate) runtime: Handle,
    pub(crate) metrics: PoolMetrics,
    /// Signalled whenever a connection closes, for `close()` to wait on.
    pub(crate) closed_one: Notify,
    /// Whether the warning about named statements behind a pooler was logged (once).
    warned_named: AtomicBool,
    /// Connections shared by `Pool::query` and `Pool::execute`.
    pub(crate) lanes: Lanes,
    /// Wakes the deadline keeper (a waiter with an earlier deadline, or the pool dropped).
    pub(crate) deadline_keeper: Arc<Notify>,
    /// How long a connection with requests in flight may hear nothing before it is closed
    /// (resolved from `config.unanswered_timeout`), and the connections watched for it.
    pub(crate) unanswered: Option<Duration>,
    pub(crate) watch: Watch,
    /// Wakes stalled connects to check whether they were given up.
    pub(crate) give_up: Notify,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The keeper holds only a Weak: woken, it finds the pool gone and ends.
        self.deadline_keeper.notify_one();
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.config.name)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(config: PoolConfig, runtime: Handle) -> Shared {
        Shared {
            metrics: PoolMetrics::new(&config.name),
            unanswered: config.unanswered_timeout.resolve(&config),
            watch: Watch::default(),
            give_up: Notify::new(),
            config,
            internals: Mutex::new(Internals::default()),
            generation: AtomicU64::new(0),
            next_slot: AtomicU64::new(0),
            runtime,
            closed_one: Notify::new(),
            lanes: Lanes::default(),
            deadline_keeper: Arc::new(Notify::new()),
            warned_named: AtomicBool::new(false),
        }
    }

    /// A loan prepared a named statement outside a transaction behind a transaction-mode
    /// pooler: counted, and explained once in the log.
    pub(crate) fn named_statement_behind_pooler(&self) {
        self.metrics.named_behind_pooler.increment(1);
        if !self.warned_named.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                pool = %self.config.name,
                "a named prepared statement was used outside a transaction behind a transaction-mode pooler: \
                 the pooler may run it on another server connection, where it does not exist (SQLSTATE 26000) \
                 or another one of the same name does (42P05); use query_cached / execute_cached or \
                 tokio-postgres' query_typed, or run it inside a transaction"
            );
        }
    }

    /// The internals; a panic elsewhere never poisons the pool for good.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Internals> {
        self.internals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What lanes may do now, given how many callers of `Pool::query` wait in the queue.
    pub(crate) fn lane_outlook(&self, lane_waiters: usize) -> Outlook {
        let g = self.lock();
        Outlook {
            may_join: !g.closed && g.waiters.len() <= lane_waiters,
            has_room: !g.idle.is_empty() || g.total() < self.config.max_size(),
        }
    }

    pub(crate) fn status(&self) -> PoolStatus {
        let g = self.lock();
        self.status_of(&g)
    }

    pub(crate) fn status_of(&self, g: &Internals) -> PoolStatus {
        PoolStatus {
            open: g.open,
            idle: g.idle.len(),
            in_use: g.in_use,
            waiting: g.waiters.len(),
            opening: g.opening,
            max: self.config.max_size(),
            database_down: g.down.is_some(),
        }
    }

    /// Wraps a freshly opened connection.
    pub(crate) fn new_slot(&self, conn: Connection) -> Box<Slot> {
        let now = CoarseInstant::now();
        let recycle_at = self.config.recycle.map(|age| {
            // 0 to 5% jitter, so that connections opened together are not all replaced at once.
            now.after(age.mul_f64(1.0 + fastrand::f64() * 0.05))
        });
        let id = self.next_slot.fetch_add(1, Ordering::Relaxed) + 1;
        if self.unanswered.is_some() {
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

    /// A clean connection is available (returned, reset, verified or new; counted in `open`,
    /// not in `in_use`): give it to the oldest waiter still waiting, else keep it idle, else
    /// (the idle set is full) close it as overflow.
    ///
    /// The hand-over itself (which wakes the waiter's task) happens outside the lock; a
    /// waiter that gave up in the meantime gets skipped and the next one is tried.
    pub(crate) fn put(self: &Arc<Self>, slot: Box<Slot>) {
        self.place(slot, false);
    }

    /// `put`, for a connection a caller just gave back: its `in_use` count moves to the next
    /// waiter, or is dropped, in the same critical section.
    fn put_released(self: &Arc<Self>, slot: Box<Slot>) {
        self.place(slot, true);
    }

    fn place(self: &Arc<Self>, mut slot: Box<Slot>, mut released: bool) {
        let leak_detection = self.config.leak_threshold.is_some();
        loop {
            let mut g = self.lock();
            if std::mem::take(&mut released) {
                g.in_use -= 1;
                if leak_detection {
                    g.leases.remove(&slot.id);
                }
            }
            if g.closed {
                g.open -= 1;
                drop(g);
                return self.close_slot(Some((slot, CloseReason::PoolClosed)));
            }
            let Some(waiter) = g.waiters.pop_front() else {
                if g.idle.len() >= self.config.pool_size {
                    g.open -= 1;
                    drop(g);
                    return self.close_slot(Some((slot, CloseReason::Overflow)));
                }
                slot.idle_since = CoarseInstant::now();
                g.idle.push(slot);
                return;
            };
            g.in_use += 1;
            let id = slot.id;
            if leak_detection {
                g.record_lease(id, waiter.location);
            }
            drop(g);
            match waiter.tx.send(Ok(PooledConnection::new(Arc::clone(self), slot))) {
                Ok(()) => return,
                // The waiter gave up meanwhile: take the connection back, try the next one.
                Err(returned) => {
                    match returned.ok().and_then(PooledConnection::into_slot) {
                        Some(back) => slot = back,
                        None => return,
                    }
                    // Undo the hand-over's count at the top of the loop.
                    released = true;
                }
            }
        }
    }

    /// Stops leak detection for connection `id`: it now serves `pool.query` lanes, which the
    /// pool itself gives back (no caller can hold one beyond its own statement).
    pub(crate) fn forget_lease(&self, id: u64) {
        if self.config.leak_threshold.is_some() {
            self.lock().leases.remove(&id);
        }
    }

    /// A caller is done with a connection. Clean ones go straight back (no round trip);
    /// dead ones are dropped; anything else is reset in a task of its own first.
    pub(crate) fn release(self: &Arc<Self>, slot: Box<Slot>, errors_at_checkout: u64, held: Duration) {
        self.metrics.held.record(PoolMetrics::seconds(held));
        self.note_disconnect(&slot.conn, errors_at_checkout);
        let clean = slot.conn.state().is_clean() && self.config.reset_query.is_none();
        if clean {
            return self.put_released(slot);
        }
        let dead = slot.conn.is_closed();
        {
            let mut g = self.lock();
            g.in_use -= 1;
            if self.config.leak_threshold.is_some() {
                g.leases.remove(&slot.id);
            }
            if dead {
                g.open -= 1;
                self.spawn_openers(&mut g);
            }
        }
        if dead {
            self.close_slot(Some((slot, CloseReason::Broken)));
        } else {
            crate::reset::spawn(Arc::clone(self), slot);
        }
    }

    /// Drops a connection the pool still counts as open (in use or not), and lets demand
    /// open a replacement.
    pub(crate) fn discard(self: &Arc<Self>, slot: Box<Slot>, reason: CloseReason, was_in_use: bool) {
        let mut g = self.lock();
        g.open -= 1;
        if was_in_use {
            g.in_use -= 1;
            g.leases.remove(&slot.id);
        }
        self.spawn_openers(&mut g);
        drop(g);
        self.close_slot(Some((slot, reason)));
    }

    /// Closes a connection already taken off the books: counts it, logs it, drops it.
    pub(crate) fn close_slot(&self, slot: Option<(Box<Slot>, CloseReason)>) {
        if let Some((slot, reason)) = slot {
            self.metrics.closed(reason);
            tracing::debug!(pool = %self.config.name, conn = slot.id, reason = reason.label(), "connection closed");
            drop(slot);
            self.closed_one.notify_waiters();
        }
    }

    /// Starts as many connects as unmet demand calls for, within `max_connecting` and the
    /// size limit. Each waits out the reconnect backoff first if the database is down.
    pub(crate) fn spawn_openers(self: &Arc<Self>, g: &mut Internals) {
        if g.closed {
            return;
        }
        let c = &self.config;
        let n = g.connects_wanted(crate::internals::Limits {
            max_size: c.max_size(),
            pool_size: c.pool_size,
            max_connecting: c.max_connecting,
            min_idle: c.min_idle,
        });
        let delay = g.backoff_remaining(Instant::now());
        for _ in 0..n {
            g.opening += 1;
            let weak = Arc::downgrade(self);
            self.runtime.spawn(crate::opener::open_one(weak, delay));
        }
    }

    /// Starts a new disconnect generation if this connection died of, or saw, a
    /// disconnect-class failure since it was checked out.
    pub(crate) fn note_disconnect(&self, conn: &Connection, errors_at_checkout: u64) {
        let state = conn.state();
        let died = matches!(
            state.liveness(),
            Liveness::Closed | Liveness::IoError | Liveness::Malformed
        );
        let new_error = state.errors() > errors_at_checkout
            && state
                .last_sqlstate()
                .is_some_and(|code| code.starts_with("08") || DISCONNECT_SQLSTATES.contains(&code.as_str()));
        if died || new_error {
            self.bump_generation();
        }
    }

    /// Every connection opened before now is verified before its next use.
    pub(crate) fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.metrics.disconnects.increment(1);
    }
}
