#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod admin;
mod completions;
mod config;
mod context;
mod drain;
mod error;
mod execution;
mod feed;
mod kind;
mod listener;
mod metrics;
mod periodic;
mod queue;
mod rescuer;
mod schema;
pub mod settings;
mod sql;
mod task;
mod trace;
mod worker;
mod worker_state;

pub use admin::{KindStats, TaskFilter};
pub use config::{Listen, WorkerConfig};
pub use context::{TaskContext, TaskFailure};
pub use drain::Drained;
pub use error::TaskError;
pub use kind::KindOptions;
pub use periodic::{Missed, Periodic};
pub use queue::Queue;
pub use rescuer::Rescuer;
pub use settings::SETTINGS;
pub use task::{AttemptRecord, NewTask, TaskId, TaskRecord, TaskState, DEFAULT_QUEUE};
pub use trace::{set_trace_carrier, TraceCarrier};
pub use worker::{Worker, WorkerHandle, WorkerPools};
pub use worker_state::Handler;
