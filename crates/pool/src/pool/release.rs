//! Giving a connection back: a clean one goes to the oldest waiter, else the idle set, else
//! (the idle set is full) it is closed as overflow; a dirty one is reset first, a dead one
//! closed. A connection that died of, or saw, a disconnect-class failure starts a new
//! disconnect generation: every older connection is verified before its next use.
//!
//! Locking rule (see `mod.rs`): nothing that can run pool code on drop is dropped under the
//! lock, so hand-overs and closes happen after it is released.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use holdfast_wire::{CoarseInstant, Liveness};

use super::metrics::PoolMetrics;
use super::pooled::PooledConnection;
use super::slot::{CloseReason, Slot};
use super::Shared;
use crate::connect::Connection;

/// SQLSTATEs after which every older connection is suspect: admin or crash shutdown,
/// cannot connect now, read-only transaction (a failover left us on a standby).
const DISCONNECT_SQLSTATES: [&str; 4] = ["57P01", "57P02", "57P03", "25006"];

impl Shared {
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
        let state = slot.conn.state();
        if state.errors() > errors_at_checkout
            && matches!(state.last_sqlstate().as_deref(), Some("26000" | "0A000"))
        {
            // A statement of its own (prepare_cached) may have gone stale: start afresh.
            self.statements_went_stale();
        }
        let clean = slot.conn.state().is_clean() && self.config.reset_query.is_none();
        let wrong_role = self.wrong_role(&slot.conn, errors_at_checkout);
        if clean && !wrong_role {
            return self.put_released(slot);
        }
        if wrong_role {
            tracing::info!(pool = %self.config.name, conn = slot.id, "the server is no longer what target_session_attrs asks for: closing the connection, the next connect walks the host list");
            return self.discard(slot, CloseReason::WrongRole, true);
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
            super::reset::spawn(Arc::clone(self), slot);
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
        self.publish_gauges(&g);
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

    /// Whether the connection's server stopped being what the pool's `target_session_attrs`
    /// asks for: its role changed (a standby promoted), or a pool that wants writes got a
    /// read-only error (25006) since checkout. Such a connection is never kept: keeping it
    /// would pin the pool to a server that cannot serve it.
    pub(crate) fn wrong_role(&self, conn: &Connection, errors_at_checkout: u64) -> bool {
        let target = self.config.connect.get_target_session_attrs();
        if !target.needs_role() {
            return false;
        }
        let state = conn.state();
        conn.role_changed()
            || (target.wants_writes()
                && state.errors() > errors_at_checkout
                && state.last_sqlstate().as_deref() == Some("25006"))
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
