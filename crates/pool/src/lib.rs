#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod connect;
mod error;
mod from_row;
mod migrate;
mod pool;
pub mod settings;

pub use connect::{
    connect, connect_listening, redact_url, BoxError, ConnectConfig, Connection, Credentials, Keepalive,
    Pooler, RootCerts, SslMode, TargetSessionAttrs, Tls, TlsOptions, DEFAULT_APPLICATION_NAME,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_TCP_USER_TIMEOUT,
};
pub use error::{db_error_text, pg_error_text, ConfigError, ConnectError, PoolError, TlsProblem};
pub use from_row::FromRow;
pub use holdfast_wire::{CommitState, Liveness, ServerRole, Snapshot, TxStatus, WireState};
pub use migrate::{migrate, MigrateError, Migration, Migrator};
pub use pool::after_connect::AfterConnect;
pub use pool::config::{PoolConfig, PrePing, UnansweredTimeout};
pub use pool::pooled::PooledConnection;
pub use pool::statements::is_stale_statement;
pub use pool::status::{DatabaseDown, PoolStatus};
pub use pool::Pool;
pub use settings::{ProcessEnv, Source};
