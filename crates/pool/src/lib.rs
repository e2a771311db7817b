#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod connect_config;
mod connection;
mod error;
mod socket;

pub use connect_config::{
    redact_url, ConnectConfig, Keepalive, DEFAULT_APPLICATION_NAME, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TCP_USER_TIMEOUT,
};
pub use connection::{connect, Connection};
pub use error::{ConfigError, ConnectError};
pub use holdfast_wire::{CommitState, Liveness, Snapshot, TxStatus, WireState};
pub use socket::Socket;
