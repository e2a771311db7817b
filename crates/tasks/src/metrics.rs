//! The task system's numbers through the `metrics` facade (handles made once per worker).

use metrics::{Counter, Gauge, Histogram};

use crate::task::TaskState;

pub(crate) struct TaskMetrics {
    pub(crate) claimed: Counter,
    pub(crate) succeeded: Counter,
    pub(crate) failed: Counter,
    pub(crate) retried: Counter,
    pub(crate) cancelled: Counter,
    pub(crate) released: Counter,
    pub(crate) snoozed: Counter,
    pub(crate) lost_leases: Counter,
    pub(crate) finalize_retries: Counter,
    pub(crate) rescued: Counter,
    pub(crate) expired: Counter,
    pub(crate) claim_seconds: Histogram,
    pub(crate) run_seconds: Histogram,
    by_state: Vec<(TaskState, Gauge)>,
}

impl std::fmt::Debug for TaskMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskMetrics")
    }
}

impl TaskMetrics {
    pub(crate) fn new(schema: &str) -> TaskMetrics {
        let s = schema.to_string();
        let counter = |name: &'static str| metrics::counter!(name, "schema" => s.clone());
        TaskMetrics {
            claimed: counter("holdfast_tasks_claimed_total"),
            succeeded: counter("holdfast_tasks_succeeded_total"),
            failed: counter("holdfast_tasks_failed_total"),
            retried: counter("holdfast_tasks_retried_total"),
            cancelled: counter("holdfast_tasks_cancelled_total"),
            released: counter("holdfast_tasks_released_total"),
            snoozed: counter("holdfast_tasks_snoozed_total"),
            lost_leases: counter("holdfast_tasks_lost_leases_total"),
            finalize_retries: counter("holdfast_tasks_finalize_retries_total"),
            rescued: counter("holdfast_tasks_rescued_total"),
            expired: counter("holdfast_tasks_expired_total"),
            claim_seconds: metrics::histogram!("holdfast_tasks_claim_seconds", "schema" => s.clone()),
            run_seconds: metrics::histogram!("holdfast_tasks_run_seconds", "schema" => s.clone()),
            by_state: [TaskState::Available, TaskState::RetryWait, TaskState::Running]
                .into_iter()
                .map(|st| {
                    (
                        st,
                        metrics::gauge!("holdfast_tasks", "schema" => s.clone(), "state" => st.as_str()),
                    )
                })
                .collect(),
        }
    }

    /// The gauges of the states that come and go (finished tasks are counted by the
    /// `_succeeded_total`, `_failed_total` and `_cancelled_total` counters: a gauge of them
    /// would need a count over every finished row).
    pub(crate) fn states(&self, counts: &std::collections::HashMap<TaskState, i64>) {
        for (state, gauge) in &self.by_state {
            gauge.set(counts.get(state).copied().unwrap_or(0) as f64);
        }
    }
}
