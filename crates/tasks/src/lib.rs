#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod context;
mod error;
mod execution;
mod listener;
mod metrics;
mod queue;
mod rescuer;
mod schema;
mod task;
mod worker;

pub use context::{TaskContext, TaskFailure};
pub use error::TaskError;
pub use queue::Queue;
pub use rescuer::Rescuer;
pub use schema::{check_schema_name, latest_version, migrate};
pub use task::{NewTask, TaskId, TaskRecord, TaskState};
pub use worker::{Handler, Listen, Worker, WorkerConfig, WorkerHandle};
