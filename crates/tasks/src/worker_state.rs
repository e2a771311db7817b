//! What a running worker shares between its slots, its background loops and the task
//! bodies it runs.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use holdfast_pool::Pool;
use tokio::sync::watch;

use crate::config::WorkerConfig;
use crate::context::{TaskContext, TaskFailure};
use crate::metrics::TaskMetrics;
use crate::queue::Queue;

/// A task body: given its context, does the work.
pub type Handler = Arc<dyn Fn(TaskContext) -> BoxFuture<'static, Result<(), TaskFailure>> + Send + Sync>;

/// What a worker needs while it runs, shared by its tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) queue: Queue,
    /// Claim, heartbeat, finalize, rescue: a small pool of its own so that task bodies and
    /// the rest of the application cannot starve it.
    pub(crate) control: Pool,
    /// Handed to task bodies.
    pub(crate) work: Pool,
    pub(crate) config: WorkerConfig,
    /// The kinds this worker has handlers for: the only ones it claims, so that a task of a
    /// kind added by a newer deploy waits for a worker that knows it.
    pub(crate) kinds: Vec<String>,
    /// The lease of each of `kinds`, in milliseconds, in the same order (the claim sets it).
    pub(crate) leases_ms: Vec<f64>,
    /// The configuration of the kinds given their own settings (`Worker::handle_with`).
    pub(crate) by_kind: HashMap<String, WorkerConfig>,
    pub(crate) metrics: TaskMetrics,
    /// Set on shutdown: running tasks' contexts see it; past the grace period their futures
    /// are dropped and leases released.
    pub(crate) hard_stop: watch::Sender<bool>,
}

impl Shared {
    /// How tasks of `kind` run: their own settings, or the worker's.
    pub(crate) fn config_for(&self, kind: &str) -> &WorkerConfig {
        self.by_kind.get(kind).unwrap_or(&self.config)
    }
}
