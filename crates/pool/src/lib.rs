#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod connect_config;
mod connect_env;
mod connection;
mod deadlines;
mod env;
mod error;
mod internals;
mod maintenance;
mod opener;
mod passfile;
mod pipelined;
mod pool;
mod pool_config;
mod pool_metrics;
mod pooled;
mod pooler;
mod reset;
mod shared;
mod socket;
mod status;
mod tls_config;
mod tls_stream;
mod tls_verify;
mod unanswered;
mod url_params;

pub use connect_config::{
    redact_url, ConnectConfig, Keepalive, DEFAULT_APPLICATION_NAME, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TCP_USER_TIMEOUT,
};
pub use connection::{connect, connect_listening, Connection};
pub use env::{ProcessEnv, Source};
pub use error::{ConfigError, ConnectError, PoolError, TlsProblem};
pub use holdfast_wire::{CommitState, Liveness, Snapshot, TxStatus, WireState};
pub use pipelined::LANE_TERM;
pub use pool::Pool;
pub use pool_config::{PoolConfig, PrePing, MAX_CONNECTIONS};
pub use pooled::PooledConnection;
pub use pooler::Pooler;
pub use socket::Socket;
pub use status::PoolStatus;
pub use tls_config::{RootCerts, SslMode, Tls, TlsOptions};
pub use unanswered::{UnansweredTimeout, AUTO_GRACE};
