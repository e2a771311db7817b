//! Why a transaction did not commit (or may not have).

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;

use crate::classify::{classify, ClassifyError, ErrorClass};

/// A transaction that failed; `E` is the closure's own error type.
///
/// It implements `std::error::Error` for any `E` that is `Debug + Display`, boxed errors
/// included, so `?` works in functions returning `Box<dyn Error>`. The closure's error is the
/// `source()` when it is a driver error or a boxed error.
#[derive(Debug)]
#[non_exhaustive]
pub enum TxError<E> {
    /// The closure returned an error; the transaction was rolled back.
    Closure(E),
    /// BEGIN, COMMIT or ROLLBACK failed on the server or the connection.
    Database(tokio_postgres::Error),
    /// No connection could be had.
    Pool(holdfast_pool::PoolError),
    /// The server answered COMMIT with ROLLBACK: the transaction had already failed (an error
    /// inside it was swallowed), and nothing was committed.
    CommitRolledBack,
    /// COMMIT was sent and its reply lost, and the server could not tell whether it
    /// committed (the transaction id is unknown to it, or it cannot be reached). The work
    /// may or may not be durable; only an idempotency key can settle it.
    CommitOutcomeUnknown {
        /// The transaction id (`pg_current_xact_id()`), when it was read.
        xid: Option<u64>,
        /// Why the outcome could not be resolved.
        reason: String,
    },
    /// COMMIT's reply was lost, and the server says the transaction was rolled back: nothing
    /// was committed, and running it again is safe.
    CommitAborted,
    /// The closure ended the transaction itself (a raw COMMIT or ROLLBACK): holdfast cannot
    /// vouch for what was committed.
    EndedByClosure,
}

impl<E> From<holdfast_pool::PoolError> for TxError<E> {
    fn from(e: holdfast_pool::PoolError) -> Self {
        TxError::Pool(e)
    }
}

impl<E: fmt::Display> fmt::Display for TxError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxError::Closure(e) => write!(f, "the transaction's work failed: {e}"),
            TxError::Database(e) => write!(f, "transaction statement failed: {e}"),
            TxError::Pool(e) => write!(f, "{e}"),
            TxError::CommitRolledBack => f.write_str(
                "COMMIT was answered with ROLLBACK: the transaction had failed and nothing was committed",
            ),
            TxError::CommitOutcomeUnknown { xid, reason } => {
                write!(f, "commit outcome unknown for transaction {xid:?}: {reason}")
            }
            TxError::CommitAborted => f.write_str(
                "the COMMIT's reply was lost and the server rolled the transaction back; nothing was committed",
            ),
            TxError::EndedByClosure => f.write_str(
                "the transaction was ended inside the closure (raw COMMIT or ROLLBACK); let holdfast end it",
            ),
        }
    }
}

impl<E: fmt::Debug + fmt::Display + 'static> StdError for TxError<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            TxError::Closure(e) => {
                let any = e as &dyn Any;
                if let Some(pg) = any.downcast_ref::<tokio_postgres::Error>() {
                    Some(pg)
                } else if let Some(boxed) = any.downcast_ref::<Box<dyn StdError + Send + Sync>>() {
                    Some(boxed.as_ref())
                } else {
                    None
                }
            }
            TxError::Database(e) => Some(e),
            TxError::Pool(e) => Some(e),
            _ => None,
        }
    }
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
