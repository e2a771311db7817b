//! What sits between the pool and PostgreSQL: nothing, or a pooler such as PgBouncer in
//! transaction mode, which changes what a connection may rely on.

use std::fmt;

/// Whether connections go straight to PostgreSQL or through a transaction-mode pooler.
///
/// Behind a transaction-mode pooler (PgBouncer `pool_mode = transaction`), each transaction,
/// and each statement outside one, may run on a different server connection. So holdfast
/// then sends no start-up `options` (PgBouncer rejects them; the pool's timeouts are applied
/// with `SET LOCAL` inside holdfast-tx transactions instead), keeps no named prepared statement
/// beyond a transaction ([`query_cached`](crate::PooledConnection::query_cached) uses unnamed
/// statements, [`prepare_cached`](crate::PooledConnection::prepare_cached) refuses), runs no
/// reset query, and holdfast-tasks does not LISTEN through it. A PgBouncer in session mode
/// behaves like a direct connection: use [`Pooler::None`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooler {
    /// Straight to PostgreSQL, or through a session-mode pooler (the default).
    #[default]
    None,
    /// Through a transaction-mode pooler such as PgBouncer (`DB_POOLER=transaction`).
    Transaction,
}

impl Pooler {
    /// True behind a transaction-mode pooler.
    pub fn is_transaction(self) -> bool {
        self == Pooler::Transaction
    }

    /// The `DB_POOLER` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooler::None => "none",
            Pooler::Transaction => "transaction",
        }
    }
}

impl fmt::Display for Pooler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
