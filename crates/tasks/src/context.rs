//! What a task body gets: its input, a pool for its own work, progress reporting and a way
//! to see that it should stop; and what it returns when it fails.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_pool::Pool;
use serde_json::Value;
use tokio_postgres::Client;

use crate::error::TaskError;
use crate::queue::Queue;
use crate::task::TaskId;

/// Handed to a task body.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task's id.
    pub id: TaskId,
    /// Its kind.
    pub kind: String,
    /// Its input.
    pub payload: Value,
    /// This attempt's number, from 1.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The pool for the task's own database work (not the control plane's).
    pub pool: Pool,
    pub(crate) token: i64,
    pub(crate) queue: Queue,
    pub(crate) link: Arc<Link>,
}

/// What the worker and the body of one attempt share: progress to store at the next
/// heartbeat, and the flag that says the attempt is over. One allocation per attempt.
#[derive(Debug, Default)]
pub(crate) struct Link {
    progress: Mutex<Option<(f32, String)>>,
    stop: AtomicBool,
}

impl Link {
    /// The attempt is over: whatever the body left running sees it in `should_stop`.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl TaskContext {
    /// Reports progress (0 to 100, clamped); stored with the task at the next heartbeat.
    pub fn progress(&self, percent: f32, message: impl Into<String>) {
        let percent = if percent.is_nan() {
            0.0
        } else {
            percent.clamp(0.0, 100.0)
        };
        *self.link.progress.lock().unwrap_or_else(|p| p.into_inner()) = Some((percent, message.into()));
    }

    /// True once the task should stop (lease lost, cancel requested, shutdown). The worker
    /// also drops the task's future at that point; this is for work done outside it.
    pub fn should_stop(&self) -> bool {
        self.link.stop.load(Ordering::Acquire)
    }

    /// This attempt's lease token: random, new at every claim. With the task id and the
    /// attempt it names this attempt alone, so a system outside the database can use it as
    /// a fencing key (refuse a write that carries an older token than one it has seen).
    pub fn token(&self) -> i64 {
        self.token
    }

    /// Marks the task succeeded through `client`: call it inside the transaction that makes
    /// the task's effects (`ctx.complete_in(tx)`), and the effects and the task's end commit
    /// together. A worker that dies right after that COMMIT leaves nothing to run again, and
    /// a COMMIT whose reply was lost is resolved by the transaction like any other.
    ///
    /// The write is checked against this attempt's `(id, attempt, token)`: when the lease was
    /// lost meanwhile (another worker has the task), it matches nothing and this returns
    /// [`TaskError::LeaseLost`], so that the transaction rolls back instead of doing the
    /// work a second time. The worker sees the task finished and writes nothing more.
    ///
    /// ```no_run
    /// # async fn body(ctx: holdfast::TaskContext) -> Result<(), holdfast::TaskFailure> {
    /// use holdfast::{BoxError, TaskFailure, TransactionExt, TxOptions};
    /// let ctx = &ctx;
    /// ctx.pool
    ///     .transaction(TxOptions::new(), move |tx| {
    ///         Box::pin(async move {
    ///             tx.execute("INSERT INTO shipments (order_id) VALUES (7)", &[]).await?;
    ///             ctx.complete_in(tx).await?;
    ///             Ok::<_, BoxError>(())
    ///         })
    ///     })
    ///     .await
    ///     .map_err(TaskFailure::retry)?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn complete_in(&self, client: &Client) -> Result<(), TaskError> {
        if self
            .queue
            .complete(client, self.id, self.attempt, self.token)
            .await?
        {
            Ok(())
        } else {
            Err(TaskError::LeaseLost { id: self.id })
        }
    }

    pub(crate) fn take_progress(&self) -> Option<(f32, String)> {
        self.link
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Why a task attempt failed, or that it asked to wait ([`snooze`](TaskFailure::snooze)).
///
/// Made with its constructors: [`retry`](TaskFailure::retry),
/// [`permanent`](TaskFailure::permanent), [`snooze`](TaskFailure::snooze), and the `From`
/// conversions of database, pool and transaction errors (so `?` works in a body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// Kept as the task's last error.
    pub message: String,
    /// When false, the task is failed at once instead of retried.
    pub retryable: bool,
    /// When set, the next attempt waits this long instead of the worker's backoff.
    pub retry_after: Option<Duration>,
    /// A snooze: not a failure, the attempt is not counted.
    snooze: bool,
}

impl TaskFailure {
    /// A failure worth another attempt (after the worker's backoff).
    pub fn retry(message: impl fmt::Display) -> TaskFailure {
        TaskFailure {
            message: message.to_string(),
            retryable: true,
            retry_after: None,
            snooze: false,
        }
    }

    /// A failure worth another attempt after `delay` (a rate limit's `Retry-After`, say)
    /// rather than after the backoff.
    pub fn retry_after(message: impl fmt::Display, delay: Duration) -> TaskFailure {
        TaskFailure {
            retry_after: Some(delay),
            ..TaskFailure::retry(message)
        }
    }

    /// A failure no retry will fix.
    pub fn permanent(message: impl fmt::Display) -> TaskFailure {
        TaskFailure {
            retryable: false,
            ..TaskFailure::retry(message)
        }
    }

    /// Not a failure: run the task again in `delay`, without counting this attempt (what
    /// waits for something outside, such as an upload still in progress, returns this).
    /// The task keeps its last error, if it had one.
    pub fn snooze(delay: Duration) -> TaskFailure {
        TaskFailure {
            message: format!("snoozed for {delay:?}"),
            retryable: true,
            retry_after: Some(delay),
            snooze: true,
        }
    }

    /// True for a [`snooze`](TaskFailure::snooze).
    pub fn is_snooze(&self) -> bool {
        self.snooze
    }
}

impl From<tokio_postgres::Error> for TaskFailure {
    /// Database errors are retried when their class says so (conflicts, lost connections).
    fn from(e: tokio_postgres::Error) -> Self {
        TaskFailure {
            retryable: holdfast_tx::is_retryable(&e),
            ..TaskFailure::retry(holdfast_pool::pg_error_text(&e))
        }
    }
}

impl From<holdfast_pool::PoolError> for TaskFailure {
    /// No connection: retried. A statement the pool ran: retried when its class says so.
    fn from(e: holdfast_pool::PoolError) -> Self {
        TaskFailure {
            retryable: match &e {
                holdfast_pool::PoolError::Database(pg) => holdfast_tx::is_retryable(pg),
                _ => true,
            },
            ..TaskFailure::retry(e)
        }
    }
}

impl<E: holdfast_tx::ClassifyError + 'static> From<holdfast_tx::TxError<E>> for TaskFailure {
    /// Retryable when running the transaction again may succeed, and also when a COMMIT's
    /// outcome is unknown (a failover took it): a task's attempts are at least once by
    /// design, so its body is written to run again, and the next attempt sees what landed.
    fn from(e: holdfast_tx::TxError<E>) -> Self {
        let unknown = matches!(e, holdfast_tx::TxError::CommitOutcomeUnknown { .. });
        TaskFailure {
            retryable: unknown || e.is_retryable(),
            ..TaskFailure::retry(e)
        }
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
