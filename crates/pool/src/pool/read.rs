//! Reads the caller declares safe to repeat: `Pool::read` runs a statement like
//! `Pool::query`, and when the connection died before the answer was complete (cut, reset,
//! its backend terminated or shut down) runs it again on a fresh connection, with backoff,
//! until `pool_timeout` (or the budget given) from the first try is spent. `query` and `get()` stay at most once:
//! only the caller knows that a statement has no effect worth keeping from running twice.

use std::time::Duration;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::statements::Params;
use super::Pool;
use crate::error::PoolError;

/// The first pause before a repeat; it doubles (full jitter) up to `MAX_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(500);

impl Pool {
    /// Like [`query`](Self::query), for a statement that is safe to run more than once (a
    /// read): if the connection dies before the answer is complete, it runs again on a
    /// fresh connection until `pool_timeout` from the first try is spent, so that a
    /// terminated backend, a reset connection or a restart costs the caller only time.
    /// Errors the server answers (a syntax error, a constraint) are returned at once.
    pub async fn read(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, PoolError> {
        let budget = self.config().pool_timeout;
        self.repeat_until_answered(sql, Params::Untyped(params), budget)
            .await
    }

    /// Like [`read`](Self::read), with each parameter's type given (as
    /// [`query_typed`](Self::query_typed)).
    pub async fn read_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, PoolError> {
        let budget = self.config().pool_timeout;
        self.repeat_until_answered(sql, Params::Typed(params), budget)
            .await
    }

    /// Like [`read`](Self::read) within `budget` instead of `pool_timeout` (what is left of
    /// a request's budget, say): every wait for a connection and every repeat share it.
    pub async fn read_within(
        &self,
        budget: Duration,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PoolError> {
        self.repeat_until_answered(sql, Params::Untyped(params), budget)
            .await
    }

    /// Like [`read_typed`](Self::read_typed) within `budget` (see
    /// [`read_within`](Self::read_within)).
    pub async fn read_typed_within(
        &self,
        budget: Duration,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, PoolError> {
        self.repeat_until_answered(sql, Params::Typed(params), budget)
            .await
    }

    async fn repeat_until_answered(
        &self,
        sql: &str,
        params: Params<'_>,
        budget: Duration,
    ) -> Result<Vec<Row>, PoolError> {
        let deadline = super::deadlines::deadline_after(budget);
        let mut bound = FIRST_PAUSE;
        loop {
            // Each try waits for a connection at most what is left of the budget.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let error = match self.rows(sql, params, left).await {
                Ok(rows) => return Ok(rows),
                Err(error) => error,
            };
            let pause = bound.mul_f64(fastrand::f64());
            if !connection_died(&error) || tokio::time::Instant::now() + pause >= deadline {
                return Err(error);
            }
            tracing::debug!(pool = %self.config().name, %error, "connection lost during a read: reading again");
            tokio::time::sleep(pause).await;
            bound = (bound * 2).min(MAX_PAUSE);
        }
    }
}

/// The connection died before the answer was complete: closed, a connection-class SQLSTATE
/// (08), or the backend terminated or shut down (57P01, 57P02, 57P03).
fn connection_died(error: &PoolError) -> bool {
    let PoolError::Database(e) = error else {
        return false;
    };
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        // No SQLSTATE and not closed: an I/O error on the socket.
        None => {
            e.as_db_error().is_none()
                && std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}
