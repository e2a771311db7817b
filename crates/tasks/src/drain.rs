//! For users' tests: run a worker until its queue has nothing left for it, then stop it and
//! say what happened.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use holdfast_pool::Pool;
use tokio_postgres::types::Type;

use crate::error::TaskError;
use crate::worker::Worker;

/// What [`Worker::drain`] ran: its attempts by how they ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed (retried or not).
    pub failed: u64,
    /// Attempts that snoozed.
    pub snoozed: u64,
    /// Attempts that were cancelled.
    pub cancelled: u64,
}

/// How often `drain` looks whether the queue is empty.
const LOOK_EVERY: Duration = Duration::from_millis(10);

impl Worker {
    /// Runs the worker until no task of its kinds is ready, running or waiting for a
    /// retry (or a snooze), then shuts it down; at most `within`. Tasks scheduled for later
    /// with `run_at` are left. For tests: give the worker a short retry policy
    /// (`retry_base`, `retry_max`) so that retries come due quickly.
    ///
    /// ```no_run
    /// # async fn test(pool: holdfast::Pool) -> Result<(), holdfast::BoxError> {
    /// use std::time::Duration;
    /// use holdfast::tasks::{NewTask, Queue, Worker, WorkerConfig, WorkerPools};
    /// let queue = Queue::new("test_queue")?;
    /// queue.migrate(&pool).await?;
    /// let conn = pool.get().await?;
    /// queue.enqueue(&conn, &NewTask::new("send", serde_json::json!({}))).await?;
    /// let pools = WorkerPools { control: pool.clone(), work: pool.clone() };
    /// let config = WorkerConfig::default().retry_base(Duration::from_millis(10));
    /// let drained = Worker::new(queue, pools, config)
    ///     .handle("send", |_ctx| Box::pin(async { Ok(()) }))
    ///     .drain(Duration::from_secs(10))
    ///     .await?;
    /// assert_eq!(drained.succeeded, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn drain(self, within: Duration) -> Result<Drained, TaskError> {
        let queue = self.queue.clone();
        let control = self.pools.control.clone();
        let owner = self.config.owner.clone();
        let kinds: Vec<String> = self.handlers.keys().cloned().collect();
        let s = queue.schema().to_string();
        // The server's clock, so that only this run's attempts are counted.
        let since: std::time::SystemTime = control
            .get()
            .await?
            .query_typed("SELECT now()", &[])
            .await?
            .first()
            .map_or_else(std::time::SystemTime::now, |r| r.get(0));
        let handle = self.spawn()?;
        let started = Instant::now();
        let outcome = loop {
            match count_left(&control, &s, &kinds).await {
                Ok(0) => break Ok(()),
                Ok(_) if started.elapsed() >= within => {
                    break Err(TaskError::TimedOut {
                        what: "drain",
                        after: within,
                    })
                }
                Ok(_) => tokio::time::sleep(LOOK_EVERY).await,
                Err(e) => break Err(e),
            }
        };
        handle.shutdown().await;
        outcome?;
        let conn = control.get().await?;
        let rows = conn
            .query_typed(
                &format!(
                    "SELECT outcome, count(*) FROM {s}.task_attempts
                     WHERE owner = $1 AND finished_at >= $2 GROUP BY outcome
                     UNION ALL
                     SELECT 'succeeded', count(*) FROM {s}.tasks
                     WHERE state = 'succeeded' AND lease_owner = $1 AND finished_at >= $2"
                ),
                &[(&owner, Type::TEXT), (&since, Type::TIMESTAMPTZ)],
            )
            .await?;
        let by: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let n = |o: &str| by.get(o).copied().unwrap_or(0) as u64;
        Ok(Drained {
            succeeded: n("succeeded"),
            failed: n("failed"),
            snoozed: n("snoozed"),
            cancelled: n("cancelled"),
        })
    }
}

/// Tasks of `kinds` that are ready, running or waiting for a retry.
async fn count_left(control: &Pool, s: &str, kinds: &[String]) -> Result<i64, TaskError> {
    let conn = control.get().await?;
    let rows = conn
        .query_typed(
            &format!(
                "SELECT count(*) FROM {s}.tasks
                 WHERE kind = ANY($1)
                   AND (state IN ('running', 'retry_wait') OR (state = 'available' AND run_at <= now()))"
            ),
            &[(&kinds, Type::TEXT_ARRAY)],
        )
        .await?;
    Ok(rows.first().map_or(0, |r| r.get(0)))
}
