//! The rescuer: re-queues tasks whose lease expired (their worker died, hung, or lost the
//! database for longer than the lease), fails those out of attempts, and never touches a
//! task whose lease is live.

use holdfast_pool::Pool;

use crate::error::TaskError;
use crate::metrics::TaskMetrics;
use crate::queue::Queue;

/// Rows rescued per statement.
const PAGE: i64 = 100;

/// How often the tasks-by-state gauges are refreshed.
const STATE_COUNT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);
/// How often finished tasks past their retention are deleted.
const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// Finished tasks deleted per statement.
const RETENTION_PAGE: i64 = 1000;
/// The least time a rescue pass may take before it is given up (the pass interval, when longer).
const MIN_PASS_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// Rescues expired leases of one queue, and deletes its finished tasks past their retention.
#[derive(Debug, Clone)]
pub struct Rescuer {
    queue: Queue,
    pool: Pool,
    retain_succeeded: Option<std::time::Duration>,
    retain_failed: Option<std::time::Duration>,
}

impl Rescuer {
    /// A rescuer for `queue`, working through `pool`, keeping finished tasks forever.
    pub fn new(queue: Queue, pool: Pool) -> Rescuer {
        Rescuer {
            queue,
            pool,
            retain_succeeded: None,
            retain_failed: None,
        }
    }

    /// Deletes succeeded tasks `succeeded` after they finished, and failed and cancelled
    /// ones `failed` after (`None`: kept).
    pub fn retention(
        mut self,
        succeeded: Option<std::time::Duration>,
        failed: Option<std::time::Duration>,
    ) -> Rescuer {
        self.retain_succeeded = succeeded;
        self.retain_failed = failed;
        self
    }

    /// One retention pass: deletes finished tasks past their retention, a page at a time,
    /// while no other rescuer is doing it; returns how many.
    pub async fn expire_once(&self) -> Result<u64, TaskError> {
        let conn = self.pool.get().await?;
        let mut total = 0;
        let kept = [
            (crate::TaskState::Succeeded, self.retain_succeeded),
            (crate::TaskState::Failed, self.retain_failed),
            (crate::TaskState::Cancelled, self.retain_failed),
        ];
        for (state, age) in kept {
            let Some(age) = age else {
                continue;
            };
            loop {
                let n = self.queue.expire(&conn, state, age, RETENTION_PAGE).await?;
                total += n;
                if n < RETENTION_PAGE as u64 {
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                schema = self.queue.schema(),
                deleted = total,
                "deleted finished tasks past their retention"
            );
        }
        Ok(total)
    }

    /// One pass: rescues every expired lease, a page at a time; returns how many.
    pub async fn run_once(&self) -> Result<u64, TaskError> {
        let conn = self.pool.get().await?;
        let mut total = 0;
        loop {
            let n = self.queue.rescue(&conn, PAGE).await?;
            total += n;
            if n < PAGE as u64 {
                break;
            }
        }
        if total > 0 {
            tracing::info!(
                schema = self.queue.schema(),
                rescued = total,
                "re-queued tasks whose lease expired"
            );
        }
        Ok(total)
    }

    pub(crate) async fn run(self, interval: std::time::Duration, metrics: &TaskMetrics) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_count: Option<tokio::time::Instant> = None;
        let mut last_expiry: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            // Every pass is bounded: a connection that never answers must not stop rescuing.
            let bound = interval.max(MIN_PASS_BOUND);
            match tokio::time::timeout(bound, self.run_once()).await {
                Ok(Ok(n)) => metrics.rescued.increment(n),
                Ok(Err(error)) => tracing::debug!(%error, "rescue pass failed; next pass will try again"),
                Err(_) => tracing::debug!(
                    ?bound,
                    "rescue pass got no answer in time; next pass will try again"
                ),
            }
            if last_expiry.is_none_or(|t| t.elapsed() >= RETENTION_INTERVAL) {
                last_expiry = Some(tokio::time::Instant::now());
                match tokio::time::timeout(bound, self.expire_once()).await {
                    Ok(Ok(n)) => metrics.expired.increment(n),
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "retention pass failed; next pass will try again")
                    }
                    Err(_) => tracing::debug!(
                        ?bound,
                        "retention pass got no answer in time; it goes on next pass"
                    ),
                }
            }
            if last_count.is_none_or(|t| t.elapsed() >= STATE_COUNT_INTERVAL) {
                last_count = Some(tokio::time::Instant::now());
                let count = async {
                    let conn = self.pool.get().await.ok()?;
                    self.queue.active_counts(&conn).await.ok()
                };
                if let Ok(Some(counts)) = tokio::time::timeout(bound, count).await {
                    metrics.states(&counts);
                }
            }
        }
    }
}
