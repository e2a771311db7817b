//! Why a transaction did not commit (or may not have).

use crate::classify::{classify, ClassifyError, ErrorClass};

/// A transaction that failed; `E` is the closure's own error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TxError<E> {
    /// The closure returned an error; the transaction was rolled back.
    #[error("the transaction's work failed: {0}")]
    Closure(#[source] E),
    /// BEGIN, COMMIT or ROLLBACK failed on the server or the connection.
    #[error("transaction statement failed: {0}")]
    Database(#[source] tokio_postgres::Error),
    /// No connection could be had.
    #[error(transparent)]
    Pool(#[from] holdfast_pool::PoolError),
    /// The server answered COMMIT with ROLLBACK: the transaction had already failed (an error
    /// inside it was swallowed), and nothing was committed.
    #[error("COMMIT was answered with ROLLBACK: the transaction had failed and nothing was committed")]
    CommitRolledBack,
    /// COMMIT was sent and its reply lost, and the server could not tell whether it
    /// committed (the transaction id is unknown to it, or it cannot be reached). The work
    /// may or may not be durable; only an idempotency key can settle it.
    #[error("commit outcome unknown for transaction {xid:?}: {reason}")]
    CommitOutcomeUnknown {
        /// The transaction id (`pg_current_xact_id()`), when it was read.
        xid: Option<u64>,
        /// Why the outcome could not be resolved.
        reason: String,
    },
    /// COMMIT's reply was lost, and the server says the transaction was rolled back: nothing
    /// was committed, and running it again is safe.
    #[error("the COMMIT's reply was lost and the server rolled the transaction back; nothing was committed")]
    CommitAborted,
    /// The closure ended the transaction itself (a raw COMMIT or ROLLBACK): holdfast cannot
    /// vouch for what was committed.
    #[error("the transaction was ended inside the closure (raw COMMIT or ROLLBACK); let holdfast end it")]
    EndedByClosure,
}

impl<E: ClassifyError> ClassifyError for TxError<E> {
    fn error_class(&self) -> ErrorClass {
        match self {
            TxError::Closure(e) => e.error_class(),
            TxError::Database(e) => classify(e),
            TxError::Pool(e) => e.error_class(),
            TxError::CommitAborted => ErrorClass::Disconnected,
            TxError::CommitRolledBack | TxError::CommitOutcomeUnknown { .. } | TxError::EndedByClosure => {
                ErrorClass::Permanent
            }
        }
    }
}

impl<E: ClassifyError> TxError<E> {
    /// True when running the transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.error_class().is_retryable()
    }
}
