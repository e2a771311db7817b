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
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement};

use super::pooled::PooledConnection;
use crate::error::PoolError;

/// Statements prepared on one connection: by SQL text (hashed with foldhash: SipHash over a
/// kilobyte of SQL on every call showed in profiles), then by parameter types, without
/// building a key on the hot path.
#[derive(Debug, Default)]
pub(crate) struct StatementCache {
    by_sql: HashMap<String, Vec<(Vec<Type>, Statement)>, foldhash::fast::RandomState>,
}

impl StatementCache {
    fn get(&self, sql: &str, types: Option<&[Type]>) -> Option<Statement> {
        let wanted = types.unwrap_or(&[]);
        self.by_sql
            .get(sql)?
            .iter()
            .find(|(key, _)| key.as_slice() == wanted)
            .map(|(_, statement)| statement.clone())
    }

    fn insert(&mut self, sql: &str, types: Option<&[Type]>, statement: Statement) {
        let key = types.unwrap_or(&[]).to_vec();
        let entries = self.by_sql.entry(sql.to_string()).or_default();
        entries.retain(|(k, _)| *k != key);
        entries.push((key, statement));
    }

    /// Forgets every statement (the server deallocated them).
    pub(crate) fn clear(&mut self) {
        self.by_sql.clear();
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
        let statement = self.cached_statement(sql, params.types().as_deref()).await?;
        self.query(&statement, &params.values()).await
    }

    pub(crate) async fn affected(&self, sql: &str, params: Params<'_>) -> Result<u64, tokio_postgres::Error> {
        if self.behind_pooler() {
            let types = self.pooler_types(sql, &params).await?;
            let rows = self.query_typed_raw(sql, typed(&params, &types)).await?;
            futures_util::pin_mut!(rows);
            while rows.try_next().await?.is_some() {}
            return Ok(rows.rows_affected().unwrap_or(0));
        }
        let statement = self.cached_statement(sql, params.types().as_deref()).await?;
        self.execute(&statement, &params.values()).await
    }

    async fn cached_statement(
        &self,
        sql: &str,
        types: Option<&[Type]>,
    ) -> Result<Statement, tokio_postgres::Error> {
        let slot = self.slot();
        let cached = slot
            .statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql, types);
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = slot.conn.prepare_typed(sql, types.unwrap_or(&[])).await?;
        slot.statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql, types, statement.clone());
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
