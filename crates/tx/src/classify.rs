//! Which failures a transaction may safely run again, decided by SQLSTATE and connection
//! state, never by message text.

use std::error::Error as StdError;

/// What kind of failure an error is, for retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Serialization failure (40001), deadlock (40P01), or a cached statement a schema
    /// change made stale (26000, or 0A000 from plan revalidation): the transaction was rolled
    /// back; running it again may succeed.
    Conflict,
    /// The connection or the server went away, or the server cannot serve this session any
    /// more (class 08, 57P01, 57P02, 57P03, 25P03, 57P05, 25006): run again on a new
    /// connection, provided no COMMIT was sent.
    Disconnected,
    /// Anything else (constraint violations, syntax errors, application errors): running
    /// again would fail the same way.
    Permanent,
}

impl ErrorClass {
    /// True for the classes a transaction retries.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Conflict | ErrorClass::Disconnected)
    }
}

/// The class of a SQLSTATE.
pub fn class_of_sqlstate(code: &str) -> ErrorClass {
    match code {
        "40001" | "40P01" => ErrorClass::Conflict,
        "57P01" | "57P02" | "57P03" | "25P03" | "57P05" | "25006" => ErrorClass::Disconnected,
        _ if code.starts_with("08") => ErrorClass::Disconnected,
        _ => ErrorClass::Permanent,
    }
}

/// The class of a driver error: by its SQLSTATE when the server sent one; a closed
/// connection or an I/O error underneath is `Disconnected`; anything else `Permanent`.
pub fn classify(error: &tokio_postgres::Error) -> ErrorClass {
    // A cached statement a schema change made stale: the pool has forgotten it, and the
    // transaction's next attempt prepares it again.
    if holdfast_pool::is_stale_statement(error) {
        return ErrorClass::Conflict;
    }
    if let Some(code) = error.code() {
        return class_of_sqlstate(code.code());
    }
    if error.is_closed() || has_io_source(error) {
        return ErrorClass::Disconnected;
    }
    ErrorClass::Permanent
}

/// True when `classify(error)` says a retry may succeed.
pub fn is_retryable(error: &tokio_postgres::Error) -> bool {
    classify(error).is_retryable()
}

fn has_io_source(error: &(dyn StdError + 'static)) -> bool {
    let mut source = error.source();
    while let Some(e) = source {
        if e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Errors a transaction closure may return: anything that can say what class it is. The
/// driver's errors, the pool's and boxed errors (searched for a driver or pool error)
/// implement it;
/// an application error type implements it in one line (usually `Permanent`, or delegating
/// to a wrapped driver error).
pub trait ClassifyError: std::fmt::Display {
    /// The error's class.
    fn error_class(&self) -> ErrorClass;
}

impl ClassifyError for tokio_postgres::Error {
    fn error_class(&self) -> ErrorClass {
        classify(self)
    }
}

impl ClassifyError for holdfast_pool::PoolError {
    fn error_class(&self) -> ErrorClass {
        match self {
            // A refusal no wait can fix (a wrong password, a missing database) is told at
            // once, not retried until the deadline.
            holdfast_pool::PoolError::Unavailable { cause, .. } if cause.is_permanent() => {
                ErrorClass::Permanent
            }
            holdfast_pool::PoolError::Unavailable { .. } | holdfast_pool::PoolError::Timeout { .. } => {
                ErrorClass::Disconnected
            }
            holdfast_pool::PoolError::Database(e) => classify(e),
            _ => ErrorClass::Permanent,
        }
    }
}

impl ClassifyError for Box<dyn StdError + Send + Sync> {
    fn error_class(&self) -> ErrorClass {
        let mut current: Option<&(dyn StdError + 'static)> = Some(self.as_ref());
        while let Some(e) = current {
            if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
                return classify(pg);
            }
            if let Some(pool) = e.downcast_ref::<holdfast_pool::PoolError>() {
                return pool.error_class();
            }
            current = e.source();
        }
        ErrorClass::Permanent
    }
}

impl ClassifyError for std::convert::Infallible {
    fn error_class(&self) -> ErrorClass {
        ErrorClass::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        assert_eq!(class_of_sqlstate("40001"), ErrorClass::Conflict);
        assert_eq!(class_of_sqlstate("40P01"), ErrorClass::Conflict);
        for code in [
            "57P01", "57P02", "57P03", "25P03", "57P05", "25006", "08006", "08001",
        ] {
            assert_eq!(class_of_sqlstate(code), ErrorClass::Disconnected, "{code}");
        }
        for code in ["23505", "23503", "42601", "42P01", "22012", "25P02", "53300"] {
            assert_eq!(class_of_sqlstate(code), ErrorClass::Permanent, "{code}");
        }
    }
}
