//! The tasks table and its indexes, created by embedded, versioned migrations in a schema the
//! user names. Migrations run in one transaction under an advisory lock, so several processes
//! starting at once apply each version exactly once.

use tokio_postgres::Client;

use crate::error::TaskError;

/// The migrations, in order; version `i + 1` is `MIGRATIONS[i]`. `{s}` is the schema.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TYPE {s}.task_state AS ENUM ('available', 'running', 'retry_wait', 'succeeded', 'failed', 'cancelled');
CREATE TABLE {s}.tasks (
    id               bigserial PRIMARY KEY,
    kind             text NOT NULL,
    payload          jsonb NOT NULL DEFAULT '{}',
    state            {s}.task_state NOT NULL DEFAULT 'available',
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
CREATE INDEX tasks_ready ON {s}.tasks (priority DESC, run_at, id) WHERE state IN ('available', 'retry_wait');
-- What the claim and the rescuer read: leases by expiry.
CREATE INDEX tasks_leases ON {s}.tasks (lease_expires_at) WHERE state = 'running';
-- An active task per unique key at most; a finished one does not block a new one.
CREATE UNIQUE INDEX tasks_unique_key ON {s}.tasks (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'running', 'retry_wait');
"#,
    r#"
-- What retention reads: finished tasks by state and age.
CREATE INDEX tasks_finished ON {s}.tasks (state, finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
"#,
    r#"
-- Named queues, each with its workers' own slots; the claim reads one queue's ready tasks.
ALTER TABLE {s}.tasks ADD COLUMN queue text NOT NULL DEFAULT 'default';
DROP INDEX {s}.tasks_ready;
CREATE INDEX tasks_ready ON {s}.tasks (queue, priority DESC, run_at, id) WHERE state IN ('available', 'retry_wait');
-- Periodic tasks: each schedule's next slot, locked and advanced with the enqueue.
CREATE TABLE {s}.periodic (
    name       text PRIMARY KEY,
    next_slot  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- One row per attempt that ended otherwise than in success (failed, cancelled, released,
-- snoozed, lease_expired), written by the same statement that ends it; deleted with its
-- task. A success is read from the task's row (its owner, attempt start and end).
ALTER TABLE {s}.tasks ADD COLUMN attempt_started_at timestamptz;
CREATE TABLE {s}.task_attempts (
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

/// Brings `schema` up to the latest version; returns the versions applied now.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<Vec<i32>, TaskError> {
    check_schema_name(schema)?;
    let tx = client.transaction().await?;
    // One migrator at a time across processes; the lock ends with the transaction.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('holdfast_tasks_migrate'), hashtext($1))",
        &[&schema],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.migrations"),
            &[],
        )
        .await?
        .get(0);
    let mut applied = Vec::new();
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if version <= current {
            continue;
        }
        tx.batch_execute(&sql.replace("{s}", schema)).await?;
        tx.execute(
            &format!("INSERT INTO {schema}.migrations (version) VALUES ($1)"),
            &[&version],
        )
        .await?;
        applied.push(version);
    }
    tx.commit().await?;
    if !applied.is_empty() {
        tracing::info!(schema, versions = ?applied, "task schema migrated");
    }
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
