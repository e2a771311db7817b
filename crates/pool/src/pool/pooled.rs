//! A connection on loan from the pool. It derefs to `tokio_postgres::Client`, so existing
//! tokio-postgres code works; dropping it (normally, in a panic, or with a future cancelled
//! mid-query) returns it through the same path, which decides from the wire state what
//! must happen before anyone else gets it.

use futures_util::TryStreamExt;
use holdfast_wire::{CoarseInstant, WireState};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

use super::slot::{CloseReason, Slot};
use super::{Pool, Shared};
use crate::connect::Connection;
use crate::error::PoolError;

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

    /// Prepares `sql` once per connection and reuses the statement afterwards (one round
    /// trip the first time on each connection, none after).
    ///
    /// Behind a transaction-mode pooler this is refused with
    /// [`PoolError::NotThroughPooler`]: a named statement lives on one server connection, and
    /// the next transaction may run on another. Use [`query_cached`](Self::query_cached) and
    /// [`execute_cached`](Self::execute_cached), which work in both places.
    pub async fn prepare_cached(&self, sql: &str) -> Result<tokio_postgres::Statement, PoolError> {
        if self.behind_pooler() {
            return Err(PoolError::NotThroughPooler {
                feature: "prepare_cached",
                instead:
                    "use query_cached / execute_cached (unnamed statements), or prepare inside a transaction",
            });
        }
        Ok(self.cached_statement(sql, &[]).await?)
    }

    /// Runs `sql` with parameters given with their types and returns its rows: on a direct
    /// connection through a statement prepared once per connection (no parse after the
    /// first time); behind a transaction-mode pooler as an unnamed statement (parse, bind
    /// and execute in one round trip), the only kind that works there. The same `sql` must
    /// always come with the same parameter types.
    pub async fn query_cached(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        if self.behind_pooler() {
            return self.query_typed(sql, params).await;
        }
        let statement = self.cached_statement(sql, params).await?;
        self.query(&statement, &values(params)).await
    }

    /// Like [`query_cached`](Self::query_cached), returning the number of rows affected.
    pub async fn execute_cached(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, tokio_postgres::Error> {
        if self.behind_pooler() {
            let rows = self
                .query_typed_raw(sql, params.iter().map(|(value, ty)| (*value, ty.clone())))
                .await?;
            futures_util::pin_mut!(rows);
            while rows.try_next().await?.is_some() {}
            return Ok(rows.rows_affected().unwrap_or(0));
        }
        let statement = self.cached_statement(sql, params).await?;
        self.execute(&statement, &values(params)).await
    }

    fn behind_pooler(&self) -> bool {
        self.shared.config.connect.get_pooler().is_transaction()
    }

    async fn cached_statement(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        let slot = self.slot();
        let cached = slot
            .statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned();
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let types: Vec<Type> = params.iter().map(|(_, ty)| ty.clone()).collect();
        let statement = slot.conn.prepare_typed(sql, &types).await?;
        slot.statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// The connection's id within the pool.
    pub(crate) fn slot_id(&self) -> u64 {
        self.slot().id
    }

    fn slot(&self) -> &Slot {
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

fn values<'a>(params: &'a [(&'a (dyn ToSql + Sync), Type)]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|(value, _)| *value).collect()
}
