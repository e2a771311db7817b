//! The one error type of holdfast-tempdb.

use std::path::PathBuf;

/// Why a throwaway cluster could not be made, started, stopped or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No PostgreSQL server binaries were found.
    #[error(
        "PostgreSQL server binaries not found (looked in {looked}); install them \
         (Debian/Ubuntu: `apt-get install -y postgresql`) or set PG_BIN to the directory \
         holding initdb, postgres and psql"
    )]
    BinariesNotFound {
        /// Where the search looked, in order.
        looked: String,
    },
    /// The PgBouncer program was not found.
    #[error(
        "pgbouncer not found (looked in {looked}); install it (Debian/Ubuntu: \
         `apt-get install -y pgbouncer`) or set PGBOUNCER to the program's path"
    )]
    PgBouncerNotFound {
        /// Where the search looked, in order.
        looked: String,
    },
    /// Running as root, and the unprivileged account to run the server as is missing.
    #[error(
        "running as root, but the unprivileged account {user:?} that would run the server does \
         not exist (initdb refuses root); create it or set HOLDFAST_TEMPDB_USER to another account"
    )]
    NoUnprivilegedAccount {
        /// The account that was looked for.
        user: String,
    },
    /// A file system operation failed.
    #[error("{what} {path}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The underlying error (shown in this error's text, so not its `source()`).
        error: std::io::Error,
    },
    /// A program could not be started.
    #[error("could not run {program}: {error}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The underlying error (shown in this error's text, so not its `source()`).
        error: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{program} failed ({status}): {output}")]
    Command {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// The end of what it printed.
        output: String,
    },
    /// The server did not come up within the start-up timeout.
    #[error("the server did not accept connections within {seconds} s; log tail:\n{log}")]
    StartTimeout {
        /// The timeout.
        seconds: u64,
        /// The end of the server log.
        log: String,
    },
    /// The server exited while starting.
    #[error("the server exited during start-up ({status}); log tail:\n{log}")]
    ExitedDuringStart {
        /// Its exit status.
        status: String,
        /// The end of the server log.
        log: String,
    },
    /// The server did not stop within the shutdown timeout.
    #[error("the server did not stop within {seconds} s")]
    StopTimeout {
        /// The timeout.
        seconds: u64,
    },
    /// The operation needs a running server.
    #[error("the server is not running")]
    NotRunning,
    /// The operation needs a stopped server.
    #[error("the server is already running")]
    AlreadyRunning,
    /// A server file name would land outside the data directory.
    #[error(
        "invalid server file name {value:?}: give a relative path inside the data directory, without `..`"
    )]
    InvalidFileName {
        /// The name.
        value: String,
    },
    /// A name given by the caller is not a plain SQL identifier.
    #[error(
        "invalid {what} {value:?}: use 1 to 63 characters from a-z, 0-9 and _, starting with a letter or _"
    )]
    InvalidName {
        /// What the name is for.
        what: &'static str,
        /// The name.
        value: String,
    },
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
