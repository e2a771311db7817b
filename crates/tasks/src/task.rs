//! What a task is: how one is described when enqueued, and how it is stored.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde_json::Value;

/// A task's id.
pub type TaskId = i64;

/// The queue of tasks enqueued without one, served by every worker's `concurrency` slots.
pub const DEFAULT_QUEUE: &str = "default";

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting to be claimed.
    Available,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Failed an attempt; waits for `run_at` to be tried again.
    RetryWait,
    /// Done.
    Succeeded,
    /// Gave up: a permanent error, or out of attempts. The last error is kept.
    Failed,
    /// Cancelled by request.
    Cancelled,
}

impl TaskState {
    /// Every state.
    pub const ALL: [TaskState; 6] = [
        TaskState::Available,
        TaskState::Running,
        TaskState::RetryWait,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// The name used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Available => "available",
            TaskState::Running => "running",
            TaskState::RetryWait => "retry_wait",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// True for the states a task never leaves.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown task state {s:?}"))
    }
}

/// A task to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Which handler runs it.
    pub kind: String,
    /// Its input, as JSON.
    pub payload: Value,
    /// Higher runs first (default 0).
    pub priority: i16,
    /// Attempts before it is failed for good (default 5).
    pub max_attempts: i32,
    /// Not before this time (default: now).
    pub run_at: Option<SystemTime>,
    /// At most one active task per key; enqueueing a second returns no id.
    pub unique_key: Option<String>,
    /// The named queue it waits in (default `default`): only workers serving that queue
    /// claim it, each with its own slots for it.
    pub queue: String,
    /// The trace its attempts join (default: the current span's, through the installed
    /// [`TraceCarrier`](crate::TraceCarrier), if any).
    pub trace_context: Option<String>,
}

impl NewTask {
    /// A task of `kind` with `payload`.
    pub fn new(kind: impl Into<String>, payload: Value) -> NewTask {
        NewTask {
            kind: kind.into(),
            payload,
            priority: 0,
            max_attempts: 5,
            run_at: None,
            unique_key: None,
            queue: DEFAULT_QUEUE.to_string(),
            trace_context: None,
        }
    }

    /// Priority (higher first).
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Attempts before giving up (at least 1).
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Earliest start.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Deduplication key.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// The named queue to wait in.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// The trace its attempts join, as text the installed
    /// [`TraceCarrier`](crate::TraceCarrier) reads (instead of the current span's).
    pub fn trace_context(mut self, context: impl Into<String>) -> Self {
        self.trace_context = Some(context.into());
        self
    }
}

/// A stored task, as read back.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TaskRecord {
    /// Its id.
    pub id: TaskId,
    /// Its kind.
    pub kind: String,
    /// Its input.
    pub payload: Value,
    /// Its state.
    pub state: TaskState,
    /// Attempts started so far.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The worker holding its lease, while running; once succeeded, the worker that ran it.
    pub lease_owner: Option<String>,
    /// Progress reported by the running task, 0 to 100.
    pub progress_percent: Option<f32>,
    /// Progress message reported by the running task.
    pub progress_message: Option<String>,
    /// The last error, if an attempt failed.
    pub last_error: Option<String>,
    /// A cancel was requested.
    pub cancel_requested: bool,
    /// Higher runs first.
    pub priority: i16,
    /// Its deduplication key.
    pub unique_key: Option<String>,
    /// Not run before this time.
    pub run_at: SystemTime,
    /// When it was enqueued.
    pub created_at: SystemTime,
    /// When it reached its final state.
    pub finished_at: Option<SystemTime>,
    /// The named queue it waits in.
    pub queue: String,
}

/// One ended attempt of a task, from its history.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// The attempt's number (a snoozed or released attempt's number is used again).
    pub attempt: i32,
    /// The worker that ran it.
    pub owner: Option<String>,
    /// When it was claimed.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub finished_at: SystemTime,
    /// How: `succeeded`, `failed`, `cancelled`, `released` (given back on shutdown),
    /// `snoozed` or `lease_expired` (its worker stopped heartbeating).
    pub outcome: String,
    /// The error, for `failed` and `lease_expired`.
    pub error: Option<String>,
}

/// A task this worker holds the lease of. Every state change is checked against
/// `(id, attempt, token)`.
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub(crate) id: TaskId,
    pub(crate) kind: String,
    pub(crate) payload: Value,
    pub(crate) attempt: i32,
    pub(crate) max_attempts: i32,
    /// The enqueuer's trace context, for the attempt's span.
    pub(crate) trace_context: Option<String>,
    pub(crate) token: i64,
    /// When the claim was sent: the lease runs from (a little after) then.
    pub(crate) claimed_at: std::time::Instant,
}
