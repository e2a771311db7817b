//! The queue's SQL: enqueue (also inside a caller's transaction), claim, and every later
//! state change as a compare-and-set on `(id, attempt, lease_token)`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use holdfast_pool::{Pool, PooledConnection};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use crate::error::TaskError;
use crate::schema::{check_schema_name, migrate};
use crate::sql::Sql;
use crate::task::{Claimed, NewTask, TaskId, TaskRecord, TaskState};

/// The state of a running task's lease, as a heartbeat found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// Still ours; `cancel` when a cancel was requested.
    Held { cancel: bool },
    /// No row matched: someone else holds the task now, or it was finished.
    Lost,
}

/// A task queue in one schema. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    pub(crate) schema: Arc<str>,
    pub(crate) sql: Arc<Sql>,
}

impl Queue {
    /// A queue in the schema `TASK_SCHEMA` names (default `holdfast`).
    pub fn from_env() -> Result<Queue, TaskError> {
        Queue::from_source(&holdfast_pool::ProcessEnv)
    }

    /// A queue in the schema `TASK_SCHEMA` of `source` names (default `holdfast`).
    pub fn from_source(source: &dyn holdfast_pool::Source) -> Result<Queue, TaskError> {
        Queue::new(&crate::settings::SCHEMA.read_or_default(source))
    }

    /// The queue in `schema` (created by [`Queue::migrate`]).
    pub fn new(schema: &str) -> Result<Queue, TaskError> {
        check_schema_name(schema)?;
        let sql = Sql::new(schema);
        Ok(Queue {
            schema: schema.into(),
            sql: Arc::new(sql),
        })
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The text of the claim statement for up to `limit` tasks, as workers run it (parameters:
    /// `$1` owner, `$2` lease token, `$3` each kind's lease in milliseconds, float8[], `$4`
    /// the kinds, text[], `$5` the queue, text). Not part of the API: for
    /// holdfast-bench, which runs the same statements on other clients.
    #[doc(hidden)]
    pub fn claim_sql(&self, limit: i64) -> String {
        if limit <= 1 {
            return self.sql.claim_one.to_string();
        }
        self.sql.claim.replace("__LIMIT__", &limit.to_string())
    }

    /// The text of the final write of a task that succeeded (parameters: `$1` id, `$2`
    /// attempt, `$3` lease token). Not part of the API: for holdfast-bench.
    #[doc(hidden)]
    pub fn succeed_sql(&self) -> &str {
        &self.sql.succeed
    }

    /// The channel enqueues notify (`<schema>_tasks`).
    pub fn channel(&self) -> String {
        format!("{}_tasks", self.schema)
    }

    /// Creates or upgrades the schema; returns the versions applied now.
    pub async fn migrate(&self, pool: &Pool) -> Result<Vec<i64>, TaskError> {
        migrate(pool, &self.schema).await
    }

    /// Enqueues a task through `client`: a pooled connection, or a transaction (`&*tx`) so
    /// that the task exists exactly when the rows it is about do. Returns `None` when a
    /// task with the same unique key is already active. Workers listening are woken when
    /// the enclosing transaction commits.
    pub async fn enqueue(&self, client: &Client, task: &NewTask) -> Result<Option<TaskId>, TaskError> {
        check_attempts(task)?;
        let trace = crate::trace::context_to_store(&task.trace_context);
        let rows = client
            .query_typed(
                &self.sql.enqueue,
                &[
                    (&task.kind, Type::TEXT),
                    (&task.payload, Type::JSONB),
                    (&task.priority, Type::INT2),
                    (&task.max_attempts, Type::INT4),
                    (&task.run_at, Type::TIMESTAMPTZ),
                    (&task.unique_key, Type::TEXT),
                    (&task.queue, Type::TEXT),
                    (&trace, Type::TEXT),
                ],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    /// Enqueues many tasks in one statement (and one notification): the answer, in the
    /// order of `tasks`, is each one's id, or `None` where a task with the same unique key
    /// was already active (or came earlier in `tasks`). Like [`enqueue`](Self::enqueue),
    /// through a connection or inside a transaction. Nothing is enqueued when one of them is
    /// invalid.
    pub async fn enqueue_many(
        &self,
        client: &Client,
        tasks: &[NewTask],
    ) -> Result<Vec<Option<TaskId>>, TaskError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        tasks.iter().try_for_each(check_attempts)?;
        let kinds: Vec<&str> = tasks.iter().map(|t| t.kind.as_str()).collect();
        let payloads: Vec<&serde_json::Value> = tasks.iter().map(|t| &t.payload).collect();
        let priorities: Vec<i16> = tasks.iter().map(|t| t.priority).collect();
        let attempts: Vec<i32> = tasks.iter().map(|t| t.max_attempts).collect();
        let run_at: Vec<Option<std::time::SystemTime>> = tasks.iter().map(|t| t.run_at).collect();
        let keys: Vec<Option<&str>> = tasks.iter().map(|t| t.unique_key.as_deref()).collect();
        let queues: Vec<&str> = tasks.iter().map(|t| t.queue.as_str()).collect();
        let current = crate::trace::context_to_store(&None);
        let traces: Vec<Option<String>> = tasks
            .iter()
            .map(|t| t.trace_context.clone().or_else(|| current.clone()))
            .collect();
        let rows = client
            .query_typed(
                &self.sql.enqueue_many,
                &[
                    (&kinds, Type::TEXT_ARRAY),
                    (&payloads, Type::JSONB_ARRAY),
                    (&priorities, Type::INT2_ARRAY),
                    (&attempts, Type::INT4_ARRAY),
                    (&run_at, Type::TIMESTAMPTZ_ARRAY),
                    (&keys, Type::TEXT_ARRAY),
                    (&queues, Type::TEXT_ARRAY),
                    (&traces, Type::TEXT_ARRAY),
                ],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Cancels a task: one waiting is cancelled at once; one running stops at its next
    /// heartbeat. Returns false when the task is unknown or already final.
    pub async fn cancel(&self, client: &Client, id: TaskId) -> Result<bool, TaskError> {
        Ok(!client
            .query_typed(&self.sql.cancel, &[(&id, Type::INT8)])
            .await?
            .is_empty())
    }

    /// Reads a task.
    pub async fn get(&self, client: &Client, id: TaskId) -> Result<Option<TaskRecord>, TaskError> {
        let rows = client.query_typed(&self.sql.get, &[(&id, Type::INT8)]).await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(record(r)))
    }

    /// Tasks by state.
    pub async fn counts(&self, client: &Client) -> Result<HashMap<TaskState, i64>, TaskError> {
        let mut counts: HashMap<TaskState, i64> = TaskState::ALL.into_iter().map(|s| (s, 0)).collect();
        for row in client.query_typed(&self.sql.counts, &[]).await? {
            let state: String = row.get(0);
            if let Ok(state) = state.parse() {
                counts.insert(state, row.get(1));
            }
        }
        Ok(counts)
    }

    /// Claims up to `limit` ready tasks (and expired leases with attempts left) of `kinds`
    /// for `owner`, each leased for its kind's lease (`leases_ms`, in the order of `kinds`).
    pub(crate) async fn claim(
        &self,
        conn: &PooledConnection,
        owner: &str,
        queue: &str,
        kinds: &[String],
        leases_ms: &[f64],
        limit: i64,
    ) -> Result<Vec<Claimed>, tokio_postgres::Error> {
        let token = fastrand::i64(1..i64::MAX);
        let claimed_at = std::time::Instant::now();
        let many;
        let sql: &str = if limit <= 1 {
            &self.sql.claim_one
        } else {
            many = self.claim_sql(limit);
            &many
        };
        let rows = conn
            .query_typed_cached(
                sql,
                &[
                    (&owner, Type::TEXT),
                    (&token, Type::INT8),
                    (&leases_ms, Type::FLOAT8_ARRAY),
                    (&kinds, Type::TEXT_ARRAY),
                    (&queue, Type::TEXT),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Claimed {
                id: r.get(0),
                kind: r.get(1),
                payload: r.get(2),
                attempt: r.get(3),
                max_attempts: r.get(4),
                trace_context: r.get(5),
                token,
                claimed_at,
            })
            .collect())
    }

    pub(crate) async fn heartbeat(
        &self,
        conn: &PooledConnection,
        task: &Claimed,
        lease: Duration,
        progress: Option<(f32, String)>,
    ) -> Result<Lease, tokio_postgres::Error> {
        let (percent, message) = match progress {
            Some((p, m)) => (Some(p), Some(m)),
            None => (None, None),
        };
        let rows = conn
            .query_typed_cached(
                &self.sql.heartbeat,
                &[
                    (&task.id, Type::INT8),
                    (&task.attempt, Type::INT4),
                    (&task.token, Type::INT8),
                    (&millis(lease), Type::FLOAT8),
                    (&percent, Type::FLOAT4),
                    (&message, Type::TEXT),
                ],
            )
            .await?;
        Ok(match rows.first() {
            Some(r) => Lease::Held { cancel: r.get(0) },
            None => Lease::Lost,
        })
    }

    /// The final write of an attempt: one statement (prepared once per connection when no
    /// transaction pooler is in between). Returns
    /// whether our lease still held (one row).
    pub(crate) async fn finish(
        &self,
        conn: &PooledConnection,
        task: &Claimed,
        outcome: &Finish,
    ) -> Result<bool, tokio_postgres::Error> {
        let key = [
            (&task.id as &(dyn ToSql + Sync), Type::INT8),
            (&task.attempt, Type::INT4),
            (&task.token, Type::INT8),
        ];
        let rows = match outcome {
            Finish::Succeeded => conn.execute_typed_cached(&self.sql.succeed, &key).await?,
            Finish::Cancelled => conn.execute_typed_cached(&self.sql.cancelled, &key).await?,
            Finish::Released => conn.execute_typed_cached(&self.sql.release, &key).await?,
            Finish::Snoozed { delay } => {
                let [id, attempt, token] = key;
                let params = [id, attempt, token, (&millis(*delay), Type::FLOAT8)];
                conn.execute_typed_cached(&self.sql.snooze, &params).await?
            }
            Finish::Failed {
                error,
                permanent,
                retry_in,
            } => {
                let [id, attempt, token] = key;
                let params = [
                    id,
                    attempt,
                    token,
                    (error, Type::TEXT),
                    (permanent, Type::BOOL),
                    (&millis(*retry_in), Type::FLOAT8),
                ];
                conn.execute_typed_cached(&self.sql.fail, &params).await?
            }
        };
        Ok(rows == 1)
    }

    /// The success of attempt `(id, attempt, token)`, written through `client` (a body's
    /// transaction); false when that attempt no longer holds the task.
    pub(crate) async fn complete(
        &self,
        client: &Client,
        id: TaskId,
        attempt: i32,
        token: i64,
    ) -> Result<bool, tokio_postgres::Error> {
        let rows = client
            .execute_typed(
                &self.sql.succeed,
                &[(&id, Type::INT8), (&attempt, Type::INT4), (&token, Type::INT8)],
            )
            .await?;
        Ok(rows == 1)
    }

    /// True when the final write of this claim is in the table (its token is there and the
    /// task is no longer running): used after a final write whose reply was lost.
    pub(crate) async fn landed(
        &self,
        conn: &PooledConnection,
        task: &Claimed,
    ) -> Result<bool, tokio_postgres::Error> {
        let rows = conn
            .query_typed_cached(
                &self.sql.landed,
                &[(&task.id, Type::INT8), (&task.token, Type::INT8)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Re-queues up to `page` tasks whose lease expired (or fails them when out of
    /// attempts, or cancels them when a cancel was requested); returns how many.
    /// The tasks that come and go by state (`available`, `retry_wait`, `running`), each
    /// counted through its partial index: cheap however many finished tasks the table holds
    /// ([`counts`](Self::counts) counts every row).
    pub async fn active_counts(&self, client: &Client) -> Result<HashMap<TaskState, i64>, TaskError> {
        let row = client.query_typed(&self.sql.active_counts, &[]).await?;
        let mut counts = HashMap::new();
        if let Some(row) = row.first() {
            counts.insert(TaskState::Available, row.get(0));
            counts.insert(TaskState::RetryWait, row.get(1));
            counts.insert(TaskState::Running, row.get(2));
        }
        Ok(counts)
    }

    /// Deletes up to `page` tasks finished in `state` more than `age` ago; returns how many
    /// (0 also when another deleter holds the retention lock).
    pub(crate) async fn expire(
        &self,
        conn: &PooledConnection,
        state: TaskState,
        age: Duration,
        page: i64,
    ) -> Result<u64, tokio_postgres::Error> {
        let rows = conn
            .query_typed_cached(
                &self.sql.expire,
                &[
                    (&state.as_str(), Type::TEXT),
                    (&age.as_secs_f64(), Type::FLOAT8),
                    (&page, Type::INT8),
                ],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }

    pub(crate) async fn rescue(
        &self,
        conn: &PooledConnection,
        page: i64,
    ) -> Result<u64, tokio_postgres::Error> {
        Ok(conn
            .query_typed_cached(&self.sql.rescue, &[(&page, Type::INT8)])
            .await?
            .len() as u64)
    }
}

/// How an attempt ends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Finish {
    Succeeded,
    Failed {
        error: String,
        permanent: bool,
        retry_in: Duration,
    },
    Cancelled,
    /// Given back on shutdown, without counting the attempt.
    Released,
    /// Asked to wait, without counting the attempt.
    Snoozed {
        delay: Duration,
    },
}

/// A task read with the columns of [`RECORD`](crate::sql::RECORD).
pub(crate) fn record(r: &tokio_postgres::Row) -> TaskRecord {
    let state: String = r.get(3);
    TaskRecord {
        id: r.get(0),
        kind: r.get(1),
        payload: r.get(2),
        state: state.parse().unwrap_or(TaskState::Failed),
        attempt: r.get(4),
        max_attempts: r.get(5),
        lease_owner: r.get(6),
        progress_percent: r.get(7),
        progress_message: r.get(8),
        last_error: r.get(9),
        cancel_requested: r.get(10),
        priority: r.get(11),
        unique_key: r.get(12),
        run_at: r.get(13),
        created_at: r.get(14),
        finished_at: r.get(15),
        queue: r.get(16),
    }
}

/// A task must be allowed at least one attempt.
fn check_attempts(task: &NewTask) -> Result<(), TaskError> {
    if task.max_attempts >= 1 {
        return Ok(());
    }
    Err(TaskError::invalid(
        "max_attempts",
        task.max_attempts.to_string(),
        "1 or more",
    ))
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
