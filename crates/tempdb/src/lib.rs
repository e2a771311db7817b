#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod account;
mod binaries;
mod cluster;
mod error;
mod options;
mod pgbouncer;
mod process;
mod shared;
mod standby;
mod watchdog;

pub use binaries::PgBin;
pub use cluster::{Database, TempCluster, SUPERUSER};
pub use error::{Error, Result};
pub use options::{ClusterOptions, Purpose, StopMode};
pub use pgbouncer::{PgBouncerOptions, PoolMode, TempPgBouncer};
pub use shared::shared;
pub use standby::Replication;
