//! The service's own tables (episodes, segments, transcript lines, intent hints), created by
//! versioned migrations at start-up, one starter at a time.

use holdfast::pool::Pool;

use crate::error::ServiceError;

/// Migrations in order; version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE episodes (
    id          bigserial PRIMARY KEY,
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    status      text NOT NULL DEFAULT 'draft'
                CHECK (status IN ('draft', 'queued', 'assembling', 'assembled', 'failed')),
    progress    real NOT NULL DEFAULT 0,
    output_path text,
    task_id     bigint,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE segments (
    episode_id  bigint NOT NULL REFERENCES episodes ON DELETE CASCADE,
    position    integer NOT NULL,
    text        text NOT NULL,
    duration_ms integer NOT NULL CHECK (duration_ms > 0),
    PRIMARY KEY (episode_id, position)
);
CREATE TABLE transcript_lines (
    episode_id  bigint NOT NULL REFERENCES episodes ON DELETE CASCADE,
    line_no     integer NOT NULL,
    starts_ms   bigint NOT NULL,
    text        text NOT NULL,
    PRIMARY KEY (episode_id, line_no)
);
CREATE TABLE intent_hints (
    id     serial PRIMARY KEY,
    phrase text NOT NULL,
    intent text NOT NULL
);
INSERT INTO intent_hints (phrase, intent) VALUES
    ('make it shorter', 'trim'), ('add music', 'score'), ('remove the pause', 'tighten'),
    ('louder', 'gain'), ('start over', 'reset'), ('publish', 'release');
"#];

/// Applies the migrations not applied yet; returns the versions applied now.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, ServiceError> {
    let mut conn = pool.get().await?;
    let tx = conn
        .transaction()
        .await
        .map_err(ServiceError::database("service migration failed"))?;
    let step = async {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('holdfast_service_migrate'))",
            &[],
        )
        .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS service_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
        let current: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM service_migrations", &[])
            .await?
            .get(0);
        let mut applied = Vec::new();
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i32 + 1;
            if version > current {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO service_migrations (version) VALUES ($1)",
                    &[&version],
                )
                .await?;
                applied.push(version);
            }
        }
        Ok::<_, tokio_postgres::Error>(applied)
    };
    let applied = step
        .await
        .map_err(ServiceError::database("service migration failed"))?;
    tx.commit()
        .await
        .map_err(ServiceError::database("service migration failed"))?;
    Ok(applied)
}
