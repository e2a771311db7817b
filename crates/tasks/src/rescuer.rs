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
/// The least time a rescue pass may take before it is given up (the pass interval, when longer).
const MIN_PASS_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// Rescues expired leases of one queue.
#[derive(Debug, Clone)]
pub struct Rescuer {
    queue: Queue,
    pool: Pool,
}

impl Rescuer {
    /// A rescuer for `queue`, working through `pool`.
    pub fn new(queue: Queue, pool: Pool) -> Rescuer {
        Rescuer { queue, pool }
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
            // Counting by state scans the table: not more than every STATE_COUNT_INTERVAL.
            if last_count.is_none_or(|t| t.elapsed() >= STATE_COUNT_INTERVAL) {
                last_count = Some(tokio::time::Instant::now());
                let count = async {
                    let conn = self.pool.get().await.ok()?;
                    self.queue.counts(&conn).await.ok()
                };
                if let Ok(Some(counts)) = tokio::time::timeout(bound, count).await {
                    metrics.states(&counts);
                }
            }
        }
    }
}
