//! The one error type of holdfast-tasks.

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The schema name cannot be used.
    #[error("invalid task schema name {0:?}: use 1 to 63 characters from a-z, 0-9 and _, not starting with a digit")]
    InvalidSchema(String),
    /// A setting cannot be used.
    #[error(transparent)]
    Config(#[from] holdfast_pool::ConfigError),
    /// The database refused or failed.
    #[error("task database operation failed: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// No connection was available.
    #[error(transparent)]
    Pool(#[from] holdfast_pool::PoolError),
    /// The database did not answer in time (a hung server or network); the connection is
    /// dropped, so the pool resets or closes it.
    #[error("task {what} got no answer from the database within {after:?}")]
    TimedOut {
        /// What was asked.
        what: &'static str,
        /// How long it waited.
        after: std::time::Duration,
    },
    /// A state change inside a transaction failed.
    #[error("task state change failed: {0}")]
    Transaction(#[from] holdfast_tx::TxError<tokio_postgres::Error>),
}
