//! Errors of holdfast-pool: bad configuration and failed connects.

use std::time::Duration;

/// A setting that cannot be used. Raised at start-up, before any connection is made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The connection URL or string could not be parsed. The URL is shown with its password
    /// masked.
    #[error("{setting}: invalid connection URL {url:?}: {reason}; expected postgres://user[:password]@host[:port]/dbname[?param=value...] or key=value pairs")]
    InvalidUrl {
        /// The setting (for example `DATABASE_URL`).
        setting: String,
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting has a value outside what is accepted.
    #[error("{setting}: invalid value {value:?}; accepted: {accepted}")]
    InvalidValue {
        /// The setting (an environment variable or a builder method).
        setting: String,
        /// The value it got (never a secret).
        value: String,
        /// What would have been accepted.
        accepted: String,
    },
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The whole connect (TCP, start-up, authentication) did not finish in time.
    #[error("connecting to {target} timed out after {timeout:?} (connect_timeout)")]
    Timeout {
        /// Host and port (or socket path) being connected to when time ran out.
        target: String,
        /// The configured bound.
        timeout: Duration,
    },
    /// The socket could not be opened or configured.
    #[error("could not connect to {target}: {error}")]
    Io {
        /// Host and port, or socket path.
        target: String,
        /// The underlying error (shown in this error's text, so not its `source()`).
        error: std::io::Error,
    },
    /// The server refused the start-up or authentication, or the conversation failed.
    #[error("connection to {target} failed during start-up: {}", pg_error_text(error))]
    Postgres {
        /// Host and port, or socket path.
        target: String,
        /// The driver's error (carries the SQLSTATE when the server sent one). Shown in
        /// this error's text, so not its `source()`.
        error: tokio_postgres::Error,
    },
    /// TLS could not be set up, or the server's or our certificate was refused.
    #[error("TLS with {target} failed: {problem}: {detail}")]
    Tls {
        /// Host and port.
        target: String,
        /// What went wrong.
        problem: TlsProblem,
        /// The details (never key material or a password).
        detail: String,
    },
    /// The configuration names no host to connect to.
    #[error("no host to connect to: set a host in the URL")]
    NoHost,
}

impl ConnectError {
    /// The SQLSTATE the server sent, if the failure came from the server
    /// (for example `28P01` invalid password, `57P03` cannot connect now).
    pub fn sqlstate(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            ConnectError::Postgres { error, .. } => error.code(),
            _ => None,
        }
    }
}

/// What went wrong setting up TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The server does not offer TLS, and the sslmode requires it.
    #[error("the server does not support TLS")]
    NotSupportedByServer,
    /// The server's certificate is not signed by an authority in `sslrootcert`.
    #[error("the server's certificate is signed by an unknown authority (not in sslrootcert)")]
    UnknownAuthority,
    /// The server's certificate has expired.
    #[error("the server's certificate has expired")]
    CertificateExpired,
    /// The server's certificate is not valid yet.
    #[error("the server's certificate is not valid yet")]
    CertificateNotYetValid,
    /// The server's certificate does not name the host (`verify-full`).
    #[error("the server's certificate does not match the host name")]
    HostMismatch,
    /// The server's certificate is unusable for another reason.
    #[error("the server's certificate is invalid")]
    InvalidCertificate,
    /// The server refused our client certificate (or required one we did not send).
    #[error("the server rejected the client certificate")]
    ClientCertificateRejected,
    /// The handshake failed otherwise.
    #[error("the TLS handshake failed")]
    Handshake,
}

/// Why a pool operation failed: `get()` gave no connection (timeout, database unavailable,
/// pool closed), or a statement the pool ran for the caller (`pool.query`,
/// `query_cached`) failed on the server or the connection.
///
/// Its text says the whole cause, with the server's message and SQLSTATE; it has no
/// `source()` (the text already holds it): use [`connect_error`](Self::connect_error),
/// [`as_db_error`](Self::as_db_error) and [`code`](Self::code) to look inside.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// No connection became free within `pool_timeout`. Carries the pool's state at that
    /// moment and the last connect error, if any.
    #[error(
        "pool {pool:?}: timed out after {waited:?} waiting for a connection ({status}){}",
        last_connect_error.as_ref().map(|e| format!("; last connect error: {e}")).unwrap_or_default()
    )]
    Timeout {
        /// The pool's name.
        pool: String,
        /// How long the caller waited.
        waited: Duration,
        /// Connections open, idle, in use, waiting and opening when it gave up.
        status: crate::PoolStatus,
        /// The most recent failure to open a connection (shown in this error's text).
        last_connect_error: Option<std::sync::Arc<ConnectError>>,
    },
    /// The database cannot be reached and the pool has no connection left to give: the
    /// caller fails fast with the real cause instead of waiting out its timeout. The pool
    /// keeps reconnecting (with backoff) and serves again as soon as the database is back.
    #[error("pool {pool:?}: database unavailable: {cause}")]
    Unavailable {
        /// The pool's name.
        pool: String,
        /// The connect error (shown in this error's text).
        cause: std::sync::Arc<ConnectError>,
    },
    /// The pool was closed.
    #[error("pool {pool:?} is closed")]
    Closed {
        /// The pool's name.
        pool: String,
    },
    /// The pool was created outside a tokio runtime.
    #[error("a holdfast pool must be created inside a tokio runtime (it runs background tasks)")]
    NoRuntime,
    /// The configuration was rejected.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A feature was asked for that cannot work behind a transaction-mode pooler.
    #[error("{feature} cannot work behind a transaction-mode pooler (DB_POOLER=transaction): {instead}")]
    NotThroughPooler {
        /// What was asked for.
        feature: &'static str,
        /// What works instead.
        instead: &'static str,
    },
    /// The server or the connection failed a statement the pool ran for the caller.
    #[error("{}", pg_error_text(.0))]
    Database(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for PoolError {
    fn from(error: tokio_postgres::Error) -> PoolError {
        PoolError::Database(error)
    }
}

impl PoolError {
    /// The server's error, when a statement failed on the server.
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            PoolError::Database(e) => e.as_db_error(),
            _ => None,
        }
    }

    /// The SQLSTATE of the server's error, when a statement failed on the server or a
    /// connect was refused by it.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            PoolError::Database(e) => e.code(),
            other => other.connect_error().and_then(ConnectError::sqlstate),
        }
    }

    /// The connect error behind this failure, if there is one.
    pub fn connect_error(&self) -> Option<&ConnectError> {
        match self {
            PoolError::Timeout {
                last_connect_error, ..
            } => last_connect_error.as_deref(),
            PoolError::Unavailable { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

/// A driver error as a person needs to read it. tokio-postgres shows every server error as
/// just "db error" and leaves out the cause of the others ("error communicating with the
/// server", without the I/O error); this gives the server's severity, message and SQLSTATE,
/// with its detail and hint when it sent them, or the driver's text with every cause behind
/// it, on one line.
pub fn pg_error_text(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return db_error_text(db);
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// What the server said: `ERROR: message (SQLSTATE 23505); DETAIL: ...; HINT: ...`.
pub fn db_error_text(db: &tokio_postgres::error::DbError) -> String {
    let mut text = format!(
        "{}: {} (SQLSTATE {})",
        db.severity(),
        db.message(),
        db.code().code()
    );
    if let Some(detail) = db.detail() {
        text.push_str("; DETAIL: ");
        text.push_str(detail);
    }
    if let Some(hint) = db.hint() {
        text.push_str("; HINT: ");
        text.push_str(hint);
    }
    text
}
