//! Statements prepared once per connection, keyed by SQL text and parameter types (as
//! deadpool-postgres keys its cache), and the two ways of giving parameters: with their
//! types (`query_typed`, as tokio-postgres names it) or without, the types then coming
//! from the server's reading of the statement at prepare.
//!
//! Behind a transaction-mode pooler a named statement may not outlive its transaction, so
//! statements run unnamed there (parse, bind and execute in one round trip). An untyped
//! statement learns its parameter types once per pool, from a prepare inside a transaction
//! that is rolled back (the statement is closed within it, on the same server connection).

use std::collections::HashMap;

use futures_util::TryStreamExt;
use holdfast_wire::TxStatus;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement};

use super::pooled::PooledConnection;
use crate::error::PoolError;

/// Statements prepared on one connection: by SQL text (hashed with foldhash: SipHash over a
/// kilobyte of SQL on every call showed in profiles), then by parameter types, without
/// building a key on the hot path. At most `capacity` of them: past it the least recently
/// used is dropped, and tokio-postgres closes it on the server. A schema change that makes
/// a statement stale bumps the pool's statement epoch, and every connection's cache starts
/// afresh at its next use.
#[derive(Debug, Default)]
pub(crate) struct StatementCache {
    by_sql: HashMap<String, Vec<Entry>, foldhash::fast::RandomState>,
    /// Entries in all.
    len: usize,
    /// The use counter: an entry's `used` is its value at its last use.
    tick: u64,
    /// The pool's statement epoch these statements were prepared in.
    epoch: u64,
}

#[derive(Debug)]
struct Entry {
    types: Vec<Type>,
    statement: Statement,
    used: u64,
}

impl StatementCache {
    /// The statement for `sql` and `types`, if cached in `epoch`; a cache of an older epoch
    /// is emptied first (its statements are dropped, so closed on the server).
    fn get(&mut self, sql: &str, types: Option<&[Type]>, epoch: u64) -> Option<Statement> {
        if self.epoch != epoch {
            self.clear();
            self.epoch = epoch;
            return None;
        }
        let wanted = types.unwrap_or(&[]);
        self.tick += 1;
        let tick = self.tick;
        let entry = self
            .by_sql
            .get_mut(sql)?
            .iter_mut()
            .find(|e| e.types.as_slice() == wanted)?;
        entry.used = tick;
        Some(entry.statement.clone())
    }

    /// Caches `statement`; returns the least recently used one if the cache was full (for the
    /// caller to drop outside the lock).
    fn insert(
        &mut self,
        sql: &str,
        types: Option<&[Type]>,
        statement: Statement,
        capacity: usize,
    ) -> Option<Statement> {
        let key = types.unwrap_or(&[]).to_vec();
        self.tick += 1;
        let entries = self.by_sql.entry(sql.to_string()).or_default();
        let before = entries.len();
        entries.retain(|e| e.types != key);
        self.len -= before - entries.len();
        entries.push(Entry {
            types: key,
            statement,
            used: self.tick,
        });
        self.len += 1;
        if self.len > capacity {
            self.evict_least_recent()
        } else {
            None
        }
    }

    fn evict_least_recent(&mut self) -> Option<Statement> {
        let (sql, index) = self
            .by_sql
            .iter()
            .flat_map(|(sql, entries)| entries.iter().enumerate().map(move |(i, e)| (e.used, sql, i)))
            .min_by_key(|(used, _, _)| *used)
            .map(|(_, sql, i)| (sql.clone(), i))?;
        let entries = self.by_sql.get_mut(&sql)?;
        let evicted = entries.swap_remove(index);
        if entries.is_empty() {
            self.by_sql.remove(&sql);
        }
        self.len -= 1;
        Some(evicted.statement)
    }

    /// Forgets every statement (the server deallocated them, or they may be stale).
    pub(crate) fn clear(&mut self) {
        self.by_sql.clear();
        self.len = 0;
    }
}

/// Whether `error` says a prepared statement no longer fits the schema (0A000 "cached plan
/// must not change result type", raised while revalidating the plan, before anything ran)
/// or is gone (26000): preparing it again fixes it.
pub fn is_stale_statement(error: &tokio_postgres::Error) -> bool {
    let Some(db) = error.as_db_error() else {
        return false;
    };
    match db.code().code() {
        "26000" => true,
        "0A000" => db.routine() == Some("RevalidateCachedQuery"),
        _ => false,
    }
}

/// Parameters of one statement: values alone, or values with the types to prepare for.
#[derive(Clone, Copy)]
pub(crate) enum Params<'a> {
    /// Types as the server infers them from the statement.
    Untyped(&'a [&'a (dyn ToSql + Sync)]),
    /// Types given by the caller.
    Typed(&'a [(&'a (dyn ToSql + Sync), Type)]),
}

impl<'a> Params<'a> {
    /// The types to prepare for: `None` for the server's inference.
    fn types(&self) -> Option<Vec<Type>> {
        match self {
            Params::Untyped(_) => None,
            Params::Typed(typed) => Some(typed.iter().map(|(_, ty)| ty.clone()).collect()),
        }
    }

    fn values(&self) -> Vec<&'a (dyn ToSql + Sync)> {
        match self {
            Params::Untyped(values) => values.to_vec(),
            Params::Typed(typed) => typed.iter().map(|(value, _)| *value).collect(),
        }
    }
}

impl PooledConnection {
    /// Prepares `sql` once per connection and reuses the statement afterwards (one round
    /// trip the first time on each connection, none after).
    ///
    /// Behind a transaction-mode pooler this is refused with
    /// [`PoolError::NotThroughPooler`]: a named statement lives on one server connection, and
    /// the next transaction may run on another. Use [`query_cached`](Self::query_cached) and
    /// [`execute_cached`](Self::execute_cached), which work in both places.
    pub async fn prepare_cached(&self, sql: &str) -> Result<Statement, PoolError> {
        if self.behind_pooler() {
            return Err(PoolError::NotThroughPooler {
                feature: "prepare_cached",
                instead:
                    "use query_cached / execute_cached (unnamed statements), or prepare inside a transaction",
            });
        }
        Ok(self.cached_statement(sql, None).await?)
    }

    /// Runs `sql` and returns its rows, through a statement prepared once per connection
    /// (no parse after the first time); the parameters' types are those the server infers.
    /// Behind a transaction-mode pooler it runs as an unnamed statement, the only kind that
    /// works there.
    pub async fn query_cached(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.rows(sql, Params::Untyped(params)).await
    }

    /// Like [`query_cached`](Self::query_cached), with each parameter's type given: the
    /// statement is prepared for those types (a statement cached per text and types).
    pub async fn query_typed_cached(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.rows(sql, Params::Typed(params)).await
    }

    /// Like [`query_cached`](Self::query_cached), returning the number of rows affected.
    pub async fn execute_cached(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        self.affected(sql, Params::Untyped(params)).await
    }

    /// Like [`query_typed_cached`](Self::query_typed_cached), returning the number of rows
    /// affected.
    pub async fn execute_typed_cached(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, tokio_postgres::Error> {
        self.affected(sql, Params::Typed(params)).await
    }

    pub(crate) async fn rows(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        if self.behind_pooler() {
            let types = self.pooler_types(sql, &params).await?;
            let typed = typed(&params, &types);
            return self.query_typed(sql, &typed).await;
        }
        let types = params.types();
        let statement = self.cached_statement(sql, types.as_deref()).await?;
        match self.query(&statement, &params.values()).await {
            Err(error) if self.prepare_again(&error) => {
                let statement = self.cached_statement(sql, types.as_deref()).await?;
                self.query(&statement, &params.values()).await
            }
            answer => answer,
        }
    }

    pub(crate) async fn affected(&self, sql: &str, params: Params<'_>) -> Result<u64, tokio_postgres::Error> {
        if self.behind_pooler() {
            let types = self.pooler_types(sql, &params).await?;
            let rows = self.query_typed_raw(sql, typed(&params, &types)).await?;
            futures_util::pin_mut!(rows);
            while rows.try_next().await?.is_some() {}
            return Ok(rows.rows_affected().unwrap_or(0));
        }
        let types = params.types();
        let statement = self.cached_statement(sql, types.as_deref()).await?;
        match self.execute(&statement, &params.values()).await {
            Err(error) if self.prepare_again(&error) => {
                let statement = self.cached_statement(sql, types.as_deref()).await?;
                self.execute(&statement, &params.values()).await
            }
            answer => answer,
        }
    }

    /// A cached statement failed as stale: every connection of the pool forgets its cached
    /// statements. True when it may run once more here: outside a transaction block, where
    /// the failed attempt ran nothing and left nothing behind (inside one the transaction
    /// is aborted: holdfast-tx runs it again).
    fn prepare_again(&self, error: &tokio_postgres::Error) -> bool {
        if !is_stale_statement(error) {
            return false;
        }
        self.shared().statements_went_stale();
        self.state().tx_status() == TxStatus::Idle
    }

    async fn cached_statement(
        &self,
        sql: &str,
        types: Option<&[Type]>,
    ) -> Result<Statement, tokio_postgres::Error> {
        let slot = self.slot();
        let shared = self.shared();
        let epoch = shared.statement_epoch();
        let cached = slot
            .statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql, types, epoch);
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = slot.conn.prepare_typed(sql, types.unwrap_or(&[])).await?;
        let evicted = slot.statements.lock().unwrap_or_else(|p| p.into_inner()).insert(
            sql,
            types,
            statement.clone(),
            shared.config.statement_cache_size,
        );
        // Dropped outside the lock: tokio-postgres closes it on the server.
        drop(evicted);
        Ok(statement)
    }

    /// The types to send `sql`'s parameters as behind a transaction-mode pooler: the given
    /// ones, or (untyped, with parameters) those the server inferred, learned once per pool.
    async fn pooler_types(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Type>, tokio_postgres::Error> {
        match params {
            Params::Typed(typed) => Ok(typed.iter().map(|(_, ty)| ty.clone()).collect()),
            Params::Untyped([]) => Ok(Vec::new()),
            Params::Untyped(_) => {
                if let Some(types) = self.shared().pooler_types(sql) {
                    return Ok(types);
                }
                // Inside a transaction the pooler keeps this server connection for us: the
                // statement is prepared, described, and closed (on drop, ahead of the
                // ROLLBACK) where it was made.
                self.batch_execute("BEGIN").await?;
                let prepared = self.prepare(sql).await.map(|s| s.params().to_vec());
                let ended = self.batch_execute("ROLLBACK").await;
                let types = prepared?;
                ended?;
                self.shared().remember_pooler_types(sql, &types);
                Ok(types)
            }
        }
    }
}

fn typed<'a>(params: &Params<'a>, types: &[Type]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.values().into_iter().zip(types.iter().cloned()).collect()
}
