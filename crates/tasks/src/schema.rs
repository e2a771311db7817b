//! The tasks table and its indexes, created by embedded, versioned migrations in a schema the
//! user names, applied by holdfast's migrator (`holdfast_pool::Migrator`): under an advisory
//! lock, so several processes starting at once apply each version exactly once.

use holdfast_pool::{Migration, Migrator, Pool};

use crate::error::TaskError;

/// The migrations, in order. They run with `search_path` set to the queue's schema alone, so
/// their unqualified names are created there.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "tasks",
        sql: r#"
CREATE TYPE task_state AS ENUM ('available', 'running', 'retry_wait', 'succeeded', 'failed', 'cancelled');
CREATE TABLE tasks (
    id               bigserial PRIMARY KEY,
    kind             text NOT NULL,
    payload          jsonb NOT NULL DEFAULT '{}',
    state            task_state NOT NULL DEFAULT 'available',
    priority         smallint NOT NULL DEFAULT 0,
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_at           timestamptz NOT NULL DEFAULT now(),
    unique_key       text,
    lease_owner      text,
    lease_token      bigint,
    lease_expires_at timestamptz,
    heartbeat_at     timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    progress_percent real,
    progress_message text,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- What the claim reads: ready tasks by priority, then age.
CREATE INDEX tasks_ready ON tasks (priority DESC, run_at, id) WHERE state IN ('available', 'retry_wait');
-- What the claim and the rescuer read: leases by expiry.
CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE state = 'running';
-- An active task per unique key at most; a finished one does not block a new one.
CREATE UNIQUE INDEX tasks_unique_key ON tasks (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'running', 'retry_wait');
"#,
    },
    Migration {
        version: 2,
        name: "tasks_finished_index",
        sql: r#"
-- What retention reads: finished tasks by state and age.
CREATE INDEX tasks_finished ON tasks (state, finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
"#,
    },
    Migration {
        version: 3,
        name: "queues_periodic_attempts",
        sql: r#"
-- Named queues, each with its workers' own slots; the claim reads one queue's ready tasks.
ALTER TABLE tasks ADD COLUMN queue text NOT NULL DEFAULT 'default';
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (queue, priority DESC, run_at, id) WHERE state IN ('available', 'retry_wait');
-- Periodic tasks: each schedule's next slot, locked and advanced with the enqueue.
CREATE TABLE periodic (
    name       text PRIMARY KEY,
    next_slot  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- One row per attempt that ended otherwise than in success (failed, cancelled, released,
-- snoozed, lease_expired), written by the same statement that ends it; deleted with its
-- task. A success is read from the task's row (its owner, attempt start and end).
ALTER TABLE tasks ADD COLUMN attempt_started_at timestamptz;
CREATE TABLE task_attempts (
    task_id     bigint NOT NULL,
    attempt     integer NOT NULL,
    token       bigint NOT NULL,
    owner       text,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    outcome     text NOT NULL,
    error       text,
    PRIMARY KEY (task_id, token)
);
"#,
    },
    Migration {
        version: 4,
        name: "task_trace_context",
        sql: r#"
-- The enqueuer's trace context (W3C traceparent), adopted by each attempt's span.
ALTER TABLE tasks ADD COLUMN trace_context text;
"#,
    },
];

/// Checks that `schema` is a plain SQL identifier holdfast can interpolate safely.
pub fn check_schema_name(schema: &str) -> Result<(), TaskError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(TaskError::InvalidSchema(schema.to_string()))
    }
}

/// Brings `schema` up to the latest version with holdfast's one migrator (versions recorded
/// in `<schema>.migrations`, an advisory lock, a transaction per version); returns the
/// versions applied now. A table written by the task queue's own migrator before 0.3
/// (versions without names) is taken over as it is.
pub async fn migrate(pool: &Pool, schema: &str) -> Result<Vec<i64>, TaskError> {
    check_schema_name(schema)?;
    let table = format!("{schema}.migrations");
    let applied = Migrator::new(&table, MIGRATIONS)
        .search_path(schema)
        .run(pool)
        .await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        assert!(check_schema_name("holdfast").is_ok());
        assert!(check_schema_name("tasks_2").is_ok());
        for bad in ["", "1x", "a-b", "Tasks", "x;drop table y", &"a".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }
}
