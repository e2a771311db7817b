//! The queue's SQL, written once per schema: enqueue, claim, and every later state change
//! as a compare-and-set on `(id, attempt, lease_token)`.

use std::sync::Arc;

/// Columns of a lease check: the task must still be running under our claim.
const OURS: &str = "id = $1 AND attempt = $2 AND lease_token = $3 AND state = 'running'";
/// Columns cleared when a lease ends. The token stays: it tells a worker whose final write
/// lost its reply that the write landed (a new claim or the rescuer replaces it).
const NO_LEASE: &str = "lease_owner = NULL, lease_expires_at = NULL, updated_at = now()";

/// The columns of a [`TaskRecord`](crate::TaskRecord), in the order `record` reads them.
pub(crate) const RECORD: &str = "id, kind, payload, state::text, attempt, max_attempts, lease_owner,
    progress_percent, progress_message, last_error, cancel_requested, priority, unique_key,
    run_at, created_at, finished_at, queue";

/// A final write: `update` (an UPDATE matching our lease, `OURS`) with the attempt's row in
/// the history, written when (and only when) the update matched. `outcome` and `error` are
/// SQL. The statement's tag is `INSERT 0 1` when the write landed, `INSERT 0 0` when the
/// lease was no longer ours. (The owner and start are read from the statement's snapshot;
/// a `FOR UPDATE` there would skip the row the update changes.)
fn final_write(s: &str, update: &str, outcome: &str, error: &str) -> String {
    format!(
        "WITH old AS (
            SELECT lease_owner, attempt_started_at FROM {s}.tasks WHERE {OURS}
         ), done AS (
            {update}
            RETURNING id
         )
         INSERT INTO {s}.task_attempts (task_id, attempt, token, owner, started_at, outcome, error)
         SELECT $1, $2, $3, old.lease_owner, old.attempt_started_at, '{outcome}', {error} FROM done, old"
    )
}

/// The SQL of one schema, built once.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) enqueue: String,
    pub(crate) enqueue_many: String,
    pub(crate) claim: String,
    /// The claim of one task (what every slot sends), built once.
    pub(crate) claim_one: Arc<str>,
    pub(crate) heartbeat: String,
    pub(crate) succeed: String,
    /// The success of many attempts at once (`$1` ids, `$2` attempts, `$3` tokens),
    /// returning the ids whose attempt still held its task.
    pub(crate) succeed_many: String,
    pub(crate) fail: String,
    pub(crate) cancelled: String,
    pub(crate) release: String,
    pub(crate) snooze: String,
    pub(crate) cancel: String,
    pub(crate) get: String,
    pub(crate) landed: String,
    pub(crate) counts: String,
    pub(crate) active_counts: String,
    pub(crate) rescue: String,
    pub(crate) expire: String,
}

impl Sql {
    /// The statements of the queue in `s` (a checked schema name).
    pub(crate) fn new(s: &str) -> Sql {
        let mut sql = Sql {
            claim_one: Arc::from(""),
            enqueue: format!(
                "WITH inserted AS (
                    INSERT INTO {s}.tasks (kind, payload, priority, max_attempts, run_at, unique_key, queue, trace_context)
                    VALUES ($1, $2, $3, $4, coalesce($5, now()), $6, $7, $8)
                    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running', 'retry_wait')
                    DO NOTHING
                    RETURNING id
                 )
                 SELECT id, pg_notify('{s}_tasks', '') FROM inserted"
            ),
            // Many tasks in one statement: ids drawn first, so that each input row's id is
            // known whatever the insert skips (a unique key already active); one
            // notification, evaluated once, when anything was inserted.
            enqueue_many: format!(
                "WITH input AS (
                    SELECT nextval(pg_get_serial_sequence('{s}.tasks', 'id')) AS id, i.*
                    FROM unnest($1::text[], $2::jsonb[], $3::int2[], $4::int4[], $5::timestamptz[], $6::text[], $7::text[], $8::text[])
                         WITH ORDINALITY AS i(kind, payload, priority, max_attempts, run_at, unique_key, queue, trace_context, ord)
                 ), inserted AS (
                    INSERT INTO {s}.tasks (id, kind, payload, priority, max_attempts, run_at, unique_key, queue, trace_context)
                    SELECT id, kind, payload, priority, max_attempts, coalesce(run_at, now()), unique_key, queue, trace_context
                    FROM input ORDER BY ord
                    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running', 'retry_wait')
                    DO NOTHING
                    RETURNING id
                 )
                 SELECT inserted.id,
                        (SELECT pg_notify('{s}_tasks', '') WHERE EXISTS (SELECT 1 FROM inserted))
                 FROM input LEFT JOIN inserted USING (id) ORDER BY input.ord"
            ),
            // Two index-friendly halves (ready tasks by priority; expired leases with attempts
            // left), each skipping rows another claimer has locked. The expired half is only
            // read when the ready half leaves room. The limit is written into the text (one
            // prepared statement per limit): with `LIMIT $1` the server re-plans the statement
            // on every call, which costs more than running it.
            claim: format!(
                "WITH ready AS (
                    SELECT id FROM {s}.tasks
                    WHERE state IN ('available', 'retry_wait') AND queue = $5 AND run_at <= now() AND kind = ANY($4)
                    ORDER BY priority DESC, run_at, id
                    LIMIT __LIMIT__
                    FOR UPDATE SKIP LOCKED
                 ), expired AS (
                    SELECT id, attempt, lease_token, lease_owner, attempt_started_at FROM {s}.tasks
                    WHERE state = 'running' AND lease_expires_at < now() AND attempt < max_attempts
                      AND NOT cancel_requested AND queue = $5 AND kind = ANY($4)
                    ORDER BY lease_expires_at
                    LIMIT __LIMIT__
                    FOR UPDATE SKIP LOCKED
                 ), next AS (
                    SELECT id, NULL::int AS old_attempt, NULL::bigint AS old_token, NULL::text AS old_owner,
                           NULL::timestamptz AS old_started
                    FROM ready
                    UNION ALL
                    SELECT id, attempt, lease_token, lease_owner, attempt_started_at FROM expired
                    LIMIT __LIMIT__
                 ), claimed AS (
                 UPDATE {s}.tasks t
                 SET state = 'running', attempt = t.attempt + 1, lease_owner = $1, lease_token = $2,
                     lease_expires_at = now() + (SELECT u.ms FROM unnest($4::text[], $3::float8[]) AS u(kind, ms)
                                                 WHERE u.kind = t.kind) * interval '1 millisecond',
                     heartbeat_at = now(), attempt_started_at = now(),
                     started_at = coalesce(t.started_at, now()), updated_at = now()
                 FROM next WHERE t.id = next.id
                 RETURNING t.id, t.kind, t.payload, t.attempt, t.max_attempts, t.trace_context,
                           next.old_attempt, next.old_token, next.old_owner, next.old_started
                 ), taken_over AS (
                    INSERT INTO {s}.task_attempts (task_id, attempt, token, owner, started_at, outcome, error)
                    SELECT id, old_attempt, old_token, old_owner, old_started, 'lease_expired',
                           'lease expired: worker ' || coalesce(old_owner, '?') || ' stopped heartbeating'
                    FROM claimed WHERE old_token IS NOT NULL
                 )
                 SELECT id, kind, payload, attempt, max_attempts, trace_context FROM claimed"
            ),
            heartbeat: format!(
                "UPDATE {s}.tasks
                 SET heartbeat_at = now(), lease_expires_at = now() + $4 * interval '1 millisecond',
                     progress_percent = coalesce($5, progress_percent),
                     progress_message = coalesce($6, progress_message), updated_at = now()
                 WHERE {OURS}
                 RETURNING cancel_requested"
            ),
            // A success writes no history row (the hot path stays one UPDATE): the task row
            // keeps its owner, start and end, and `Queue::attempts` reads them from there.
            succeed: format!(
                "UPDATE {s}.tasks SET state = 'succeeded', finished_at = now(), progress_percent = 100,
                     lease_expires_at = NULL, updated_at = now()
                 WHERE {OURS}"
            ),
            // Each row checked against its own attempt and token, found by its position in
            // the arrays: no join, whose nested loop re-reads the arrays once per row. The
            // state is compared as text so that the planner reads the rows by primary key,
            // not every running task through the partial lease index.
            succeed_many: format!(
                "UPDATE {s}.tasks SET state = 'succeeded', finished_at = now(), progress_percent = 100,
                     lease_expires_at = NULL, updated_at = now()
                 WHERE id = ANY($1) AND state::text = 'running'
                   AND attempt = ($2::int4[])[array_position($1, id)]
                   AND lease_token = ($3::int8[])[array_position($1, id)]
                 RETURNING id"
            ),
            fail: final_write(
                s,
                &format!(
                    "UPDATE {s}.tasks SET state = CASE WHEN $5 OR attempt >= max_attempts THEN 'failed' ELSE 'retry_wait' END::{s}.task_state,
                     finished_at = CASE WHEN $5 OR attempt >= max_attempts THEN now() END,
                     run_at = now() + $6 * interval '1 millisecond',
                     last_error = $4, {NO_LEASE}
                 WHERE {OURS}"
                ),
                "failed",
                "$4",
            ),
            cancelled: final_write(
                s,
                &format!(
                    "UPDATE {s}.tasks SET state = 'cancelled', finished_at = now(), {NO_LEASE} WHERE {OURS}"
                ),
                "cancelled",
                "NULL",
            ),
            release: final_write(
                s,
                &format!(
                    "UPDATE {s}.tasks SET state = 'available', attempt = attempt - 1, run_at = now(), {NO_LEASE}
                 WHERE {OURS}"
                ),
                "released",
                "NULL",
            ),
            // Waits `$4` ms without counting the attempt; the next claim makes the same
            // attempt number with a new token, so the fencing holds.
            snooze: final_write(
                s,
                &format!(
                    "UPDATE {s}.tasks SET state = 'retry_wait', attempt = attempt - 1,
                     run_at = now() + $4 * interval '1 millisecond', {NO_LEASE}
                 WHERE {OURS}"
                ),
                "snoozed",
                "NULL",
            ),
            cancel: format!(
                "UPDATE {s}.tasks
                 SET cancel_requested = true,
                     state = CASE WHEN state IN ('available', 'retry_wait') THEN 'cancelled' ELSE state END::{s}.task_state,
                     finished_at = CASE WHEN state IN ('available', 'retry_wait') THEN now() ELSE finished_at END,
                     updated_at = now()
                 WHERE id = $1 AND state IN ('available', 'retry_wait', 'running')
                 RETURNING id"
            ),
            get: format!("SELECT {RECORD} FROM {s}.tasks WHERE id = $1"),
            landed: format!("SELECT 1 FROM {s}.tasks WHERE id = $1 AND lease_token = $2 AND state <> 'running'"),
            counts: format!("SELECT state::text, count(*) FROM {s}.tasks GROUP BY state"),
            // Only the states that come and go, each read through its partial index: cheap
            // however many finished rows the table holds.
            // (Scalar subqueries rather than a UNION: the planner would run the union's
            // branches in parallel workers, whose start costs more than the counts.)
            active_counts: format!(
                "SELECT (SELECT count(*) FROM {s}.tasks WHERE state = 'available'),
                        (SELECT count(*) FROM {s}.tasks WHERE state = 'retry_wait'),
                        (SELECT count(*) FROM {s}.tasks WHERE state = 'running')"
            ),
            // A page of finished tasks past their retention, deleted under a lock one
            // deleter at a time holds (taken for this statement's transaction only).
            expire: format!(
                "WITH lock AS (
                    SELECT pg_try_advisory_xact_lock(hashtext('holdfast_tasks_retention'), hashtext('{s}')) AS held
                 ), doomed AS (
                    SELECT t.id FROM {s}.tasks t, lock
                    WHERE lock.held AND t.state = $1::text::{s}.task_state
                      AND t.finished_at < now() - $2 * interval '1 second'
                    ORDER BY t.finished_at
                    LIMIT $3
                    FOR UPDATE OF t SKIP LOCKED
                 ), gone AS (
                    DELETE FROM {s}.tasks t USING doomed WHERE t.id = doomed.id RETURNING t.id
                 ), history AS (
                    DELETE FROM {s}.task_attempts a USING gone WHERE a.task_id = gone.id
                 )
                 SELECT count(*) FROM gone"
            ),
            rescue: format!(
                "WITH expired AS (
                    SELECT id, attempt, lease_token, lease_owner, attempt_started_at FROM {s}.tasks
                    WHERE state = 'running' AND lease_expires_at < now()
                    ORDER BY lease_expires_at
                    LIMIT $1
                    FOR UPDATE SKIP LOCKED
                 ), rescued AS (
                 UPDATE {s}.tasks t
                 SET state = CASE WHEN t.cancel_requested THEN 'cancelled'
                                  WHEN t.attempt >= t.max_attempts THEN 'failed'
                                  ELSE 'available' END::{s}.task_state,
                     finished_at = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN now() END,
                     last_error = 'lease expired: worker ' || coalesce(t.lease_owner, '?') || ' stopped heartbeating',
                     run_at = now(), lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
                 FROM expired WHERE t.id = expired.id
                 RETURNING t.state::text AS state, t.last_error, expired.*
                 ), history AS (
                    INSERT INTO {s}.task_attempts (task_id, attempt, token, owner, started_at, outcome, error)
                    SELECT id, attempt, lease_token, lease_owner, attempt_started_at, 'lease_expired', last_error
                    FROM rescued
                 )
                 SELECT state FROM rescued"
            ),
        };
        sql.claim_one = sql.claim.replace("__LIMIT__", "1").into();
        sql
    }
}
