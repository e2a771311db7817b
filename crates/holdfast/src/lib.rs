#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

#[doc(inline)]
pub use holdfast_pool as pool;
#[doc(inline)]
pub use holdfast_tasks as tasks;
#[doc(inline)]
pub use holdfast_tx as tx;
#[doc(inline)]
pub use holdfast_wire as wire;
pub use tokio_postgres;

#[doc(inline)]
pub use holdfast_pool::{
    migrate, BoxError, ConfigError, FromRow, MigrateError, Migration, Migrator, Pool, PoolConfig, PoolError,
    PooledConnection,
};
pub use holdfast_tasks::{
    KindOptions, NewTask, Queue, TaskContext, TaskError, TaskFailure, Worker, WorkerConfig, WorkerPools,
};
pub use holdfast_tx::{RetryPolicy, TransactionExt, Tx, TxError, TxOptions};

/// What most code that uses holdfast needs in one import: `use holdfast::prelude::*;`.
///
/// The pool and its configuration, transactions (the [`TransactionExt`] trait puts
/// `transaction` on a [`Pool`]) and their errors. Tasks are imported from [`tasks`].
pub mod prelude {
    pub use holdfast_pool::{FromRow, Pool, PoolConfig, PoolError, PooledConnection};
    pub use holdfast_tx::{TransactionExt, Tx, TxError, TxOptions};
}
