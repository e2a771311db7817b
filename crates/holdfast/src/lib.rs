#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub use holdfast_pool as pool;
pub use holdfast_tasks as tasks;
pub use holdfast_tx as tx;
pub use holdfast_wire as wire;
pub use tokio_postgres;

pub use holdfast_pool::{ConfigError, Pool, PoolConfig, PoolError, PooledConnection};
pub use holdfast_tasks::{
    NewTask, Queue, TaskContext, TaskError, TaskFailure, Worker, WorkerConfig, WorkerPools,
};
pub use holdfast_tx::{RetryPolicy, TransactionExt, Tx, TxError, TxOptions};

/// What most code that uses holdfast needs in one import: `use holdfast::prelude::*;`.
///
/// The pool and its configuration, transactions (the [`TransactionExt`] trait puts
/// `transaction` on a [`Pool`]) and their errors. Tasks are imported from [`tasks`].
pub mod prelude {
    pub use holdfast_pool::{Pool, PoolConfig, PoolError, PooledConnection};
    pub use holdfast_tx::{TransactionExt, Tx, TxError, TxOptions};
}

/// The repository's README, included so that its quick start compiles as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct RepositoryReadme;
