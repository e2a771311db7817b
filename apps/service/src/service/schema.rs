//! The service's own tables (episodes, segments, transcript lines, intent hints), created by
//! versioned migrations at start-up, one starter at a time.

use holdfast::{migrate as run_migrations, Migration, Pool};

use crate::error::ServiceError;

/// The migrations, in order, recorded in `service_migrations`.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "episodes",
    sql: r#"
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
"#,
}];

/// Applies the migrations not applied yet (holdfast's migrator: one starter at a time, a
/// transaction per version); returns the versions applied now.
pub async fn migrate(pool: &Pool) -> Result<Vec<i64>, ServiceError> {
    run_migrations(pool, "service_migrations", MIGRATIONS)
        .await
        .map_err(ServiceError::Migrate)
}
