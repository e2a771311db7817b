//! Why a transaction did not commit (or may not have).

use std::any::Any;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;

use holdfast_pool::pg_error_text;

use crate::classify::{classify, ClassifyError, ErrorClass};

/// A transaction that failed; `E` is the closure's own error type (none for the guard API:
/// [`Tx::begin`](crate::Tx::begin), `commit` and `rollback` return `TxError`, that is
/// `TxError<Infallible>`).
///
/// Its text says the whole cause, with the server's message and SQLSTATE where the server
/// gave one; it has no `source()` (the text already holds it): match the variants, or use
/// [`as_db_error`](Self::as_db_error), to look inside. It implements `std::error::Error`
/// for any `E` that is `Debug + Display`, boxed errors included, so `?` works in functions
/// returning `Box<dyn Error>`.
#[derive(Debug)]
#[non_exhaustive]
pub enum TxError<E = Infallible> {
    /// The closure returned an error; the transaction was rolled back.
    Closure(E),
    /// BEGIN, ROLLBACK or a savepoint statement failed on the server or the connection.
    Database(tokio_postgres::Error),
    /// COMMIT failed on the server, or the connection was lost before it was sent: nothing
    /// was committed.
    Commit(tokio_postgres::Error),
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

impl TxError {
    /// The same failure as a transaction closure's error type sees it (no closure ran, so
    /// there is no closure error to carry).
    pub fn widen<E>(self) -> TxError<E> {
        match self {
            TxError::Closure(never) => match never {},
            TxError::Database(e) => TxError::Database(e),
            TxError::Commit(e) => TxError::Commit(e),
            TxError::Pool(e) => TxError::Pool(e),
            TxError::CommitRolledBack => TxError::CommitRolledBack,
            TxError::CommitOutcomeUnknown { xid, reason } => TxError::CommitOutcomeUnknown { xid, reason },
            TxError::CommitAborted => TxError::CommitAborted,
            TxError::EndedByClosure => TxError::EndedByClosure,
        }
    }
}

impl<E> TxError<E> {
    /// The closure's own error, or else the failure of the transaction itself (with no
    /// closure error in it, so that it can be [widened](TxError::widen) to another closure
    /// error type): for callers that report the two differently.
    pub fn into_closure(self) -> Result<E, TxError> {
        match self {
            TxError::Closure(e) => Ok(e),
            TxError::Database(e) => Err(TxError::Database(e)),
            TxError::Commit(e) => Err(TxError::Commit(e)),
            TxError::Pool(e) => Err(TxError::Pool(e)),
            TxError::CommitRolledBack => Err(TxError::CommitRolledBack),
            TxError::CommitOutcomeUnknown { xid, reason } => {
                Err(TxError::CommitOutcomeUnknown { xid, reason })
            }
            TxError::CommitAborted => Err(TxError::CommitAborted),
            TxError::EndedByClosure => Err(TxError::EndedByClosure),
        }
    }

    /// A short, stable name of the error's kind, for traces (`error.type`): the pool's
    /// (`timeout`, `unavailable`, ...), the SQLSTATE of a statement of holdfast's the server
    /// refused, `connection_lost`, `closure_error`, `ended_by_closure`,
    /// `commit_rolled_back`, `commit_outcome_unknown` or `commit_aborted`.
    pub fn kind_name(&self) -> String {
        let sqlstate = |e: &tokio_postgres::Error| {
            e.code()
                .map(|c| c.code().to_string())
                .unwrap_or_else(|| "connection_lost".into())
        };
        match self {
            TxError::Closure(_) => "closure_error".into(),
            TxError::Database(e) | TxError::Commit(e) => sqlstate(e),
            TxError::Pool(e) => e.kind_name(),
            TxError::CommitRolledBack => "commit_rolled_back".into(),
            TxError::CommitOutcomeUnknown { .. } => "commit_outcome_unknown".into(),
            TxError::CommitAborted => "commit_aborted".into(),
            TxError::EndedByClosure => "ended_by_closure".into(),
        }
    }

    /// Where it failed: `getting a connection`, `at BEGIN or ROLLBACK`, `in the
    /// transaction's work`, or `at COMMIT`.
    pub fn stage(&self) -> &'static str {
        match self {
            TxError::Pool(_) => "getting a connection",
            TxError::Database(_) => "at BEGIN or ROLLBACK",
            TxError::Closure(_) | TxError::EndedByClosure => "in the transaction's work",
            TxError::Commit(_)
            | TxError::CommitRolledBack
            | TxError::CommitOutcomeUnknown { .. }
            | TxError::CommitAborted => "on commit",
        }
    }

    /// The server's error, when a statement of holdfast's (BEGIN, COMMIT, ROLLBACK) or a
    /// statement the pool ran failed on the server.
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            TxError::Database(e) | TxError::Commit(e) => e.as_db_error(),
            TxError::Pool(e) => e.as_db_error(),
            _ => None,
        }
    }
}

impl<E: fmt::Display + 'static> fmt::Display for TxError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxError::Closure(e) => write!(f, "the transaction's work failed: {}", closure_error_text(e)),
            TxError::Database(e) => write!(f, "transaction statement failed: {}", pg_error_text(e)),
            TxError::Commit(e) => write!(f, "COMMIT failed, nothing was committed: {}", pg_error_text(e)),
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

/// The closure's error as a person needs to read it: a driver error (alone, or boxed) with
/// the server's message and SQLSTATE, anything else as it displays itself.
fn closure_error_text<E: fmt::Display + 'static>(e: &E) -> String {
    let any = e as &dyn Any;
    if let Some(pg) = any.downcast_ref::<tokio_postgres::Error>() {
        return pg_error_text(pg);
    }
    if let Some(boxed) = any.downcast_ref::<Box<dyn StdError + Send + Sync>>() {
        if let Some(pg) = boxed.downcast_ref::<tokio_postgres::Error>() {
            return pg_error_text(pg);
        }
    }
    e.to_string()
}

impl<E: fmt::Debug + fmt::Display + 'static> StdError for TxError<E> {}

impl<E: ClassifyError + 'static> ClassifyError for TxError<E> {
    fn error_class(&self) -> ErrorClass {
        match self {
            TxError::Closure(e) => e.error_class(),
            TxError::Database(e) | TxError::Commit(e) => classify(e),
            TxError::Pool(e) => e.error_class(),
            TxError::CommitAborted => ErrorClass::Disconnected,
            TxError::CommitRolledBack | TxError::CommitOutcomeUnknown { .. } | TxError::EndedByClosure => {
                ErrorClass::Permanent
            }
        }
    }
}

impl<E: ClassifyError + 'static> TxError<E> {
    /// True when running the transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.error_class().is_retryable()
    }
}
