//! Operating a queue: list and filter tasks (paged), read a task's attempts, retry or
//! redrive failed ones, delete and prune, and per-kind statistics. What a console or the
//! `holdfast tasks` command runs.

use std::time::Duration;

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::error::TaskError;
use crate::queue::{record, Queue};
use crate::sql::RECORD;
use crate::task::{AttemptRecord, TaskId, TaskRecord, TaskState};

/// Which tasks [`Queue::list`] returns: newest first, `limit` at a time; the next page
/// starts `before` the last id of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only these states (all when empty).
    pub states: Vec<TaskState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only ids below this one (the previous page's last id).
    pub before: Option<TaskId>,
    /// At most this many (1 to 1,000; default 50).
    pub limit: i64,
}

impl Default for TaskFilter {
    fn default() -> Self {
        TaskFilter {
            states: Vec::new(),
            kind: None,
            before: None,
            limit: 50,
        }
    }
}

impl TaskFilter {
    /// Every task, 50 at a time.
    pub fn new() -> TaskFilter {
        TaskFilter::default()
    }

    /// Only tasks in `state` (may be given several times).
    pub fn state(mut self, state: TaskState) -> Self {
        self.states.push(state);
        self
    }

    /// Only tasks of `kind`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// The page after the one whose last task was `id`.
    pub fn before(mut self, id: TaskId) -> Self {
        self.before = Some(id);
        self
    }

    /// At most `n` tasks.
    pub fn limit(mut self, n: i64) -> Self {
        self.limit = n;
        self
    }
}

/// The tasks of one kind that are not finished, from [`Queue::stats`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KindStats {
    /// The kind.
    pub kind: String,
    /// Waiting to be claimed.
    pub available: i64,
    /// Waiting for a retry (or a snooze) to come due.
    pub retry_wait: i64,
    /// Held by a worker.
    pub running: i64,
    /// How long the oldest due task has waited: the queue's latency for this kind.
    pub oldest_due: Option<Duration>,
}

/// The states of tasks that are not finished.
const ACTIVE: &str = "('available', 'running', 'retry_wait')";
/// How many finished tasks one prune statement deletes.
const PRUNE_PAGE: i64 = 10_000;

impl Queue {
    /// Tasks matching `filter`, newest first.
    pub async fn list(&self, client: &Client, filter: &TaskFilter) -> Result<Vec<TaskRecord>, TaskError> {
        if !(1..=1000).contains(&filter.limit) {
            return Err(TaskError::invalid(
                "TaskFilter::limit",
                filter.limit.to_string(),
                "1 to 1000",
            ));
        }
        let s = &self.schema;
        let states: Vec<&str> = filter.states.iter().map(|st| st.as_str()).collect();
        let rows = client
            .query_typed(
                &format!(
                    "SELECT {RECORD} FROM {s}.tasks
                     WHERE (cardinality($1::text[]) = 0 OR state::text = ANY($1))
                       AND ($2::text IS NULL OR kind = $2)
                       AND ($3::int8 IS NULL OR id < $3)
                     ORDER BY id DESC LIMIT $4"
                ),
                &[
                    (&states, Type::TEXT_ARRAY),
                    (&filter.kind, Type::TEXT),
                    (&filter.before, Type::INT8),
                    (&filter.limit, Type::INT8),
                ],
            )
            .await?;
        Ok(rows.iter().map(record).collect())
    }

    /// The ended attempts of a task, oldest first (the one running now is not among them).
    /// A successful attempt is read from the task's row, which keeps its owner, start and
    /// end; the others from the history table.
    pub async fn attempts(&self, client: &Client, id: TaskId) -> Result<Vec<AttemptRecord>, TaskError> {
        let s = &self.schema;
        let rows = client
            .query_typed(
                &format!(
                    "SELECT attempt, owner, started_at, finished_at, outcome, error
                     FROM {s}.task_attempts WHERE task_id = $1
                     UNION ALL
                     SELECT attempt, lease_owner, attempt_started_at, finished_at, 'succeeded', NULL
                     FROM {s}.tasks WHERE id = $1 AND state = 'succeeded'
                     ORDER BY 4, 1"
                ),
                &[(&id, Type::INT8)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AttemptRecord {
                attempt: r.get(0),
                owner: r.get(1),
                started_at: r.get(2),
                finished_at: r.get(3),
                outcome: r.get(4),
                error: r.get(5),
            })
            .collect())
    }

    /// Runs a failed, cancelled or waiting task again now, with one more attempt if it had
    /// used them all. False when the task is unknown, running, or succeeded. An error names
    /// the cause when an active task already holds its unique key.
    pub async fn retry(&self, client: &Client, id: TaskId) -> Result<bool, TaskError> {
        let s = &self.schema;
        let rows = client
            .query_typed(
                &format!(
                    "WITH again AS (
                        UPDATE {s}.tasks
                        SET state = 'available', run_at = now(), finished_at = NULL,
                            cancel_requested = false, max_attempts = greatest(max_attempts, attempt + 1),
                            updated_at = now()
                        WHERE id = $1 AND state IN ('failed', 'cancelled', 'retry_wait', 'available')
                        RETURNING id
                     )
                     SELECT id, pg_notify('{s}_tasks', '') FROM again"
                ),
                &[(&id, Type::INT8)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Redrives failed tasks (of `kind`, or all): each runs again now with one more
    /// attempt. Of failed tasks sharing a unique key only the newest is redriven, and none
    /// whose key an active task holds. Returns how many.
    pub async fn retry_failed(&self, client: &Client, kind: Option<&str>) -> Result<u64, TaskError> {
        let s = &self.schema;
        let rows = client
            .query_typed(
                &format!(
                    "WITH chosen AS (
                        SELECT DISTINCT ON (coalesce(f.unique_key, f.id::text)) f.id
                        FROM {s}.tasks f
                        WHERE f.state = 'failed' AND ($1::text IS NULL OR f.kind = $1)
                          AND (f.unique_key IS NULL OR NOT EXISTS (
                                SELECT 1 FROM {s}.tasks a
                                WHERE a.unique_key = f.unique_key AND a.state IN {ACTIVE}))
                        ORDER BY coalesce(f.unique_key, f.id::text), f.id DESC
                     ), again AS (
                        UPDATE {s}.tasks t
                        SET state = 'available', run_at = now(), finished_at = NULL,
                            max_attempts = greatest(t.max_attempts, t.attempt + 1), updated_at = now()
                        FROM chosen WHERE t.id = chosen.id AND t.state = 'failed'
                        RETURNING t.id
                     )
                     SELECT count(*), (SELECT pg_notify('{s}_tasks', '') WHERE EXISTS (SELECT 1 FROM again))
                     FROM again"
                ),
                &[(&kind, Type::TEXT)],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }

    /// Deletes a task that is not running (cancel a running one first), with its history.
    /// False when the task is unknown or running.
    pub async fn delete(&self, client: &Client, id: TaskId) -> Result<bool, TaskError> {
        let s = &self.schema;
        let rows = client
            .query_typed(
                &format!(
                    "WITH gone AS (
                        DELETE FROM {s}.tasks WHERE id = $1 AND state <> 'running' RETURNING id
                     ), history AS (
                        DELETE FROM {s}.task_attempts a USING gone WHERE a.task_id = gone.id
                     )
                     SELECT id FROM gone"
                ),
                &[(&id, Type::INT8)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Deletes the tasks that finished in `state` (a final state) more than `older_than`
    /// ago, with their history, in pages; returns how many. What retention does in the
    /// background, at once.
    pub async fn prune(
        &self,
        client: &Client,
        state: TaskState,
        older_than: Duration,
    ) -> Result<u64, TaskError> {
        if !state.is_final() {
            return Err(TaskError::invalid(
                "state",
                state.to_string(),
                "a final state: succeeded, failed or cancelled",
            ));
        }
        let s = &self.schema;
        let sql = format!(
            "WITH doomed AS (
                SELECT id FROM {s}.tasks
                WHERE state = $1::text::{s}.task_state AND finished_at < now() - $2 * interval '1 second'
                ORDER BY finished_at LIMIT $3
                FOR UPDATE SKIP LOCKED
             ), gone AS (
                DELETE FROM {s}.tasks t USING doomed WHERE t.id = doomed.id RETURNING t.id
             ), history AS (
                DELETE FROM {s}.task_attempts a USING gone WHERE a.task_id = gone.id
             )
             SELECT count(*) FROM gone"
        );
        let mut total = 0u64;
        loop {
            let rows = client
                .query_typed(
                    &sql,
                    &[
                        (&state.as_str(), Type::TEXT),
                        (&older_than.as_secs_f64(), Type::FLOAT8),
                        (&PRUNE_PAGE, Type::INT8),
                    ],
                )
                .await?;
            let n = rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64;
            total += n;
            if n < PRUNE_PAGE as u64 {
                return Ok(total);
            }
        }
    }

    /// The tasks that are not finished, by kind: how many wait, wait for a retry, run, and
    /// how long the oldest due one has waited. Reads active tasks only: cheap however many
    /// finished ones the table holds.
    pub async fn stats(&self, client: &Client) -> Result<Vec<KindStats>, TaskError> {
        let s = &self.schema;
        let rows = client
            .query_typed(
                &format!(
                    "SELECT kind,
                            count(*) FILTER (WHERE state = 'available'),
                            count(*) FILTER (WHERE state = 'retry_wait'),
                            count(*) FILTER (WHERE state = 'running'),
                            extract(epoch FROM now() - min(run_at) FILTER (
                                WHERE state IN ('available', 'retry_wait') AND run_at <= now()))::float8
                     FROM {s}.tasks WHERE state IN {ACTIVE}
                     GROUP BY kind ORDER BY kind"
                ),
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| KindStats {
                kind: r.get(0),
                available: r.get(1),
                retry_wait: r.get(2),
                running: r.get(3),
                oldest_due: r
                    .get::<_, Option<f64>>(4)
                    .map(|secs| Duration::from_secs_f64(secs.max(0.0))),
            })
            .collect())
    }
}
