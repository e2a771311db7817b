// The README's snippets use the facade's paths (`holdfast::...`, what a user has), so they
// are compiled as doctests in `apps/outside`, which depends on holdfast alone, not here.
#![cfg_attr(not(doctest), doc = include_str!("../README.md"))]
#![deny(missing_docs)]

mod config;
mod context;
mod error;
mod execution;
mod listener;
mod metrics;
mod queue;
mod rescuer;
mod schema;
pub mod settings;
mod task;
mod worker;
mod worker_state;

pub use config::{Listen, WorkerConfig};
pub use context::{TaskContext, TaskFailure};
pub use error::TaskError;
pub use queue::Queue;
pub use rescuer::Rescuer;
pub use settings::SETTINGS;
pub use task::{NewTask, TaskId, TaskRecord, TaskState};
pub use worker::{Worker, WorkerHandle, WorkerPools};
pub use worker_state::Handler;
