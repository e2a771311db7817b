//! Why the service, the fault proxy, the demo or a load run could not start or run. Each
//! text names the cause, with the server's message and SQLSTATE where the server gave one.

use holdfast::pool::{pg_error_text, ConfigError, PoolError};
use holdfast::tasks::TaskError;

/// What stopped a command of the `holdfast` binary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A setting cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No connection could be had, or a statement the pool ran failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The service's own tables could not be created or upgraded.
    #[error("service schema: {0}")]
    Migrate(holdfast::MigrateError),
    /// The task queue failed.
    #[error(transparent)]
    Tasks(#[from] TaskError),
    /// A statement failed.
    #[error("{what}: {}", pg_error_text(error))]
    Database {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        error: tokio_postgres::Error,
    },
    /// A socket, a file or a process could not be used.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A throwaway cluster could not be made or run.
    #[error(transparent)]
    TempDb(#[from] holdfast_tempdb::Error),
    /// The fault proxy could not be set up.
    #[error(transparent)]
    Faults(#[from] holdfast_faults::FaultError),
    /// A run could not be made as asked (a fault its setup cannot inject, a missing
    /// address), or ended in a way the report cannot describe.
    #[error("{0}")]
    Run(String),
    /// A command could not do what was asked (an unknown task, say).
    #[error("{0}")]
    Usage(String),
}

impl ServiceError {
    /// A statement failure, saying what was being done.
    pub fn database(what: &'static str) -> impl Fn(tokio_postgres::Error) -> ServiceError + Copy {
        move |error| ServiceError::Database { what, error }
    }

    /// An I/O failure, saying what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
        let what = what.into();
        move |error| ServiceError::Io { what, error }
    }
}
