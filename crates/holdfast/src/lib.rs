#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub use holdfast_pool as pool;
pub use holdfast_tasks as tasks;
pub use holdfast_tx as tx;
pub use holdfast_wire as wire;
pub use tokio_postgres;

pub use holdfast_pool::{Pool, PoolConfig, PoolError, PooledConnection};
pub use holdfast_tasks::{NewTask, Queue, TaskContext, TaskFailure, Worker, WorkerConfig};
pub use holdfast_tx::{TransactionExt, Tx, TxError, TxOptions};
