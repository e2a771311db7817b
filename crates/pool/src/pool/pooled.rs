//! A connection on loan from the pool. It derefs to `tokio_postgres::Client`, so existing
//! tokio-postgres code works; dropping it (normally, in a panic, or with a future cancelled
//! mid-query) returns it through the same path, which decides from the wire state what
//! must happen before anyone else gets it.

use holdfast_wire::{CoarseInstant, WireState};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use tokio_postgres::Client;

use super::slot::{CloseReason, Slot};
use super::{Pool, Shared};
use crate::connect::Connection;

/// A pooled connection. Use it as a `tokio_postgres::Client`; drop it to give it back.
#[derive(Debug)]
pub struct PooledConnection {
    shared: Arc<Shared>,
    slot: Option<Box<Slot>>,
    since: CoarseInstant,
    errors_at_checkout: u64,
    named_at_checkout: u64,
}

impl PooledConnection {
    pub(crate) fn new(shared: Arc<Shared>, slot: Box<Slot>) -> PooledConnection {
        let state = slot.conn.state();
        let errors_at_checkout = state.errors();
        let named_at_checkout = state.named_statements_outside_transactions();
        PooledConnection {
            shared,
            slot: Some(slot),
            since: CoarseInstant::now(),
            errors_at_checkout,
            named_at_checkout,
        }
    }

    /// Takes the slot out without returning it (the pool's own bookkeeping moves it).
    pub(crate) fn into_slot(mut self) -> Option<Box<Slot>> {
        self.slot.take()
    }

    pub(crate) fn slot_mut(&mut self) -> Option<&mut Slot> {
        self.slot.as_deref_mut()
    }

    /// Closes this connection instead of returning it (the pool opens a replacement when
    /// there is demand).
    pub fn discard(mut self) {
        if let Some(slot) = self.slot.take() {
            self.shared.discard(slot, CloseReason::Broken, true);
        }
    }

    pub(crate) fn discard_for(&mut self, reason: CloseReason) {
        if let Some(slot) = self.slot.take() {
            self.shared.discard(slot, reason, true);
        }
    }

    /// The underlying connection (its wire state, backend pid, age).
    pub fn connection(&self) -> &Connection {
        &self.slot().conn
    }

    pub(super) fn behind_pooler(&self) -> bool {
        self.shared.config.connect.get_pooler().is_transaction()
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Nothing happened on the connection since it was taken that its return would look
    /// at: it is clean (idle, nothing in flight) and no statement failed on it.
    pub(super) fn as_taken(&self) -> bool {
        let state = self.state();
        state.is_clean() && state.errors() == self.errors_at_checkout
    }

    /// The connection's id within the pool.
    pub(crate) fn slot_id(&self) -> u64 {
        self.slot().id
    }

    pub(super) fn slot(&self) -> &Slot {
        match &self.slot {
            Some(slot) => slot,
            // Only `discard`/`into_slot` empty it, and both consume or end the loan.
            None => unreachable!("a PooledConnection is used after it was given back"),
        }
    }

    /// The pool this connection belongs to.
    pub fn pool(&self) -> Pool {
        Pool::from_shared(Arc::clone(&self.shared))
    }

    /// The server process serving this connection.
    pub fn backend_pid(&self) -> Option<i32> {
        self.connection().backend_pid()
    }

    /// What the wire tap observed on this connection.
    pub fn state(&self) -> &WireState {
        self.connection().state()
    }
}

impl Deref for PooledConnection {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.connection().client()
    }
}

impl DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut Client {
        match &mut self.slot {
            Some(slot) => slot.conn.client_mut(),
            None => unreachable!("a PooledConnection is used after it was given back"),
        }
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.conn.trace_under(&tracing::Span::none());
            if self.behind_pooler()
                && slot.conn.state().named_statements_outside_transactions() > self.named_at_checkout
            {
                self.shared.named_statement_behind_pooler();
            }
            self.shared
                .release(slot, self.errors_at_checkout, self.since.elapsed());
        }
    }
}
