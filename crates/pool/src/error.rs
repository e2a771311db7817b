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
    /// The server is not what `target_session_attrs` asks for (a standby when writes are
    /// wanted, say).
    #[error("{target} is {server}, which target_session_attrs={wanted} does not accept")]
    WrongRole {
        /// Host and port.
        target: String,
        /// What was asked for.
        wanted: crate::TargetSessionAttrs,
        /// What the server is.
        server: &'static str,
    },
    /// The credentials provider failed (its error, which never holds the secret).
    #[error("the credentials provider failed: {reason}")]
    Credentials {
        /// The provider's error.
        reason: String,
    },
    /// The `after_connect` hook failed on a new connection, which was closed.
    #[error("after_connect failed on a new connection: {reason}")]
    AfterConnect {
        /// The hook's error.
        reason: String,
    },
    /// A standby further behind its primary than `max_standby_lag`.
    #[error("{target} is a standby {lag:.1?} behind its primary, more than max_standby_lag ({bound:?})")]
    StandbyBehind {
        /// Host and port.
        target: String,
        /// How far behind.
        lag: Duration,
        /// The bound.
        bound: Duration,
    },
    /// Several hosts were tried and none gave a connection that qualifies: why each one
    /// failed, in the order they were tried.
    #[error(
        "no host gave a usable connection (target_session_attrs={wanted}): {}",
        list(attempts)
    )]
    NoHostQualified {
        /// What was asked for.
        wanted: crate::TargetSessionAttrs,
        /// Each host's failure.
        attempts: Vec<ConnectError>,
    },
}

fn list(attempts: &[ConnectError]) -> String {
    let each: Vec<String> = attempts.iter().map(|a| a.to_string()).collect();
    each.join("; ")
}

impl ConnectError {
    /// Whether waiting and trying again cannot fix it: authentication, a missing database
    /// or role, no host to connect to, a refused certificate or TLS required of a server
    /// without it. A pool tells its callers such an error at once.
    pub fn is_permanent(&self) -> bool {
        match self {
            ConnectError::NoHost => true,
            // Every host refused in a way no wait fixes; a host of the wrong role may change
            // role (a failover), one that is down may come back.
            ConnectError::NoHostQualified { attempts, .. } => attempts.iter().all(ConnectError::is_permanent),
            ConnectError::Tls { problem, .. } => *problem != TlsProblem::Handshake,
            ConnectError::Postgres { .. } => self
                .sqlstate()
                .is_some_and(|code| matches!(code.code(), "28P01" | "28000" | "3D000" | "42704")),
            _ => false,
        }
    }

    /// The SQLSTATE the server sent, if the failure came from the server
    /// (for example `28P01` invalid password, `57P03` cannot connect now).
    pub fn sqlstate(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            ConnectError::Postgres { error, .. } => error.code(),
            // The same SQLSTATE from every host (a wrong password everywhere, say).
            ConnectError::NoHostQualified { attempts, .. } => {
                let first = attempts.first()?.sqlstate()?;
                attempts
                    .iter()
                    .all(|a| a.sqlstate() == Some(first))
                    .then_some(first)
            }
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
    /// No connection became free within the caller's deadline (`pool_timeout`, or the one
    /// given to [`get_timeout`](crate::Pool::get_timeout)) while the database was reachable:
    /// every connection was in use. Carries the pool's state at that moment.
    #[error("pool {pool:?}: timed out after {waited:?} waiting for a connection ({status})")]
    Timeout {
        /// The pool's name.
        pool: String,
        /// How long the caller waited.
        waited: Duration,
        /// Connections open, idle, in use, waiting and opening when it gave up.
        status: crate::PoolStatus,
    },
    /// The database could not be reached until the caller's deadline passed, or refused in
    /// a way no wait can fix (authentication, a missing database or role, TLS settings):
    /// carries the real cause. While the database is down a caller waits in its place in
    /// the queue and is served as soon as a connection opens again; the pool keeps
    /// reconnecting (with backoff) whether anyone waits or not.
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
    /// Too many callers were waiting already (`max_waiting`): this one is turned away at
    /// once (load shedding) instead of joining a queue it would likely time out in.
    #[error("pool {pool:?}: overloaded: {waiting} callers already waiting for a connection (DB_MAX_WAITING); try again shortly")]
    Overloaded {
        /// The pool's name.
        pool: String,
        /// Callers waiting when this one came.
        waiting: usize,
    },
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
    /// A short, stable name of the error's kind, for traces (`error.type`) and metrics:
    /// `timeout`, `unavailable`, `closed`, `no_runtime`, `config`, `overloaded`,
    /// `not_through_pooler`, or the SQLSTATE of a statement the server refused.
    pub fn kind_name(&self) -> String {
        match self {
            PoolError::Timeout { .. } => "timeout".into(),
            PoolError::Unavailable { .. } => "unavailable".into(),
            PoolError::Closed { .. } => "closed".into(),
            PoolError::NoRuntime => "no_runtime".into(),
            PoolError::Config(_) => "config".into(),
            PoolError::Overloaded { .. } => "overloaded".into(),
            PoolError::NotThroughPooler { .. } => "not_through_pooler".into(),
            PoolError::Database(e) => e
                .code()
                .map(|c| c.code().to_string())
                .unwrap_or_else(|| "connection_lost".into()),
        }
    }

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
