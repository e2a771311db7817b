//! The one error type of holdfast-tasks. Its text says the whole cause (the server's message
//! and SQLSTATE where there is one) and it has no `source()`: a cause is never printed twice.

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
    #[error("task database operation failed: {}", holdfast_pool::pg_error_text(.0))]
    Database(tokio_postgres::Error),
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
    /// This attempt no longer holds the task (its lease expired and another worker or the
    /// rescuer took it, or it was finished): nothing was written.
    #[error("task {id}: this attempt no longer holds the task's lease; nothing was written")]
    LeaseLost {
        /// The task.
        id: crate::TaskId,
    },
    /// Creating or upgrading the queue's schema failed.
    #[error("task schema: {0}")]
    Migrate(holdfast_pool::MigrateError),
    /// A state change inside a transaction failed.
    #[error("task state change failed: {0}")]
    Transaction(holdfast_tx::TxError<tokio_postgres::Error>),
}

impl TaskError {
    /// A value that cannot be used: `setting` names it, `accepted` says what would be.
    pub(crate) fn invalid(
        setting: impl Into<String>,
        value: impl Into<String>,
        accepted: impl Into<String>,
    ) -> TaskError {
        TaskError::Config(holdfast_pool::ConfigError::InvalidValue {
            setting: setting.into(),
            value: value.into(),
            accepted: accepted.into(),
        })
    }
}

// By hand rather than `#[from]`, which would also make them the `source()`: the text above
// already shows them, and a cause printed twice in a chain reads as two failures.
impl From<tokio_postgres::Error> for TaskError {
    fn from(e: tokio_postgres::Error) -> Self {
        TaskError::Database(e)
    }
}

impl From<holdfast_pool::MigrateError> for TaskError {
    fn from(e: holdfast_pool::MigrateError) -> Self {
        TaskError::Migrate(e)
    }
}

impl From<holdfast_tx::TxError<tokio_postgres::Error>> for TaskError {
    fn from(e: holdfast_tx::TxError<tokio_postgres::Error>) -> Self {
        TaskError::Transaction(e)
    }
}

/// So that a transaction closure can return a queue's error (`queue.enqueue(tx, ..).await`)
/// and still be retried when the cause is one a retry can fix.
impl holdfast_tx::ClassifyError for TaskError {
    fn error_class(&self) -> holdfast_tx::ErrorClass {
        match self {
            TaskError::Database(e) => holdfast_tx::classify(e),
            TaskError::Pool(e) => holdfast_tx::ClassifyError::error_class(e),
            TaskError::Transaction(e) => holdfast_tx::ClassifyError::error_class(e),
            TaskError::TimedOut { .. } => holdfast_tx::ErrorClass::Disconnected,
            TaskError::InvalidSchema(_)
            | TaskError::Config(_)
            | TaskError::Migrate(_)
            | TaskError::LeaseLost { .. } => holdfast_tx::ErrorClass::Permanent,
        }
    }
}
