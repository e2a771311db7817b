//! `query_as` and the application's own migrations, against a real cluster.

mod support;

use holdfast_pool::{migrate, FromRow, MigrateError, Migration, Pool};
use support::{cluster, config_for_url};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "notes",
        sql: "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)",
    },
    Migration {
        version: 2,
        name: "notes_rating",
        sql: "ALTER TABLE notes ADD COLUMN rating int; INSERT INTO notes (body, rating) VALUES ('first', 5)",
    },
];

struct Note {
    id: i64,
    body: String,
    rating: Option<i32>,
}

impl FromRow for Note {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Note {
            id: row.try_get("id")?,
            body: row.try_get("body")?,
            rating: row.try_get("rating")?,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_across_concurrent_migrators_and_rows_map_to_types() {
    let db = cluster().create_database().expect("database");
    let pools: Vec<Pool> = (0..4)
        .map(|i| Pool::new(config_for_url(&db.url, &format!("migrate-{i}"))).expect("pool"))
        .collect();
    // Four migrators at once (as four instances starting together): each version once.
    let runs = futures_util::future::join_all(
        pools
            .iter()
            .map(|pool| migrate(pool, "app.schema_migrations", MIGRATIONS)),
    )
    .await;
    let mut applied: Vec<i64> = Vec::new();
    for run in runs {
        applied.extend(run.expect("migrate"));
    }
    applied.sort_unstable();
    assert_eq!(
        applied,
        vec![1, 2],
        "each version applied by exactly one migrator"
    );
    let pool = &pools[0];
    assert!(migrate(pool, "app.schema_migrations", MIGRATIONS)
        .await
        .expect("again")
        .is_empty());

    let notes: Vec<Note> = pool
        .query_as("SELECT id, body, rating FROM notes", &[])
        .await
        .expect("query_as");
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (notes[0].id, notes[0].body.as_str(), notes[0].rating),
        (1, "first", Some(5))
    );
    let conn = pool.get().await.expect("get");
    let pairs: Vec<(String, Option<i32>)> = conn
        .query_as("SELECT body, rating FROM notes WHERE id = $1", &[&1i64])
        .await
        .expect("on a connection");
    assert_eq!(pairs, vec![("first".to_string(), Some(5))]);
    let wrong = conn
        .query_as::<(i64,)>("SELECT body FROM notes", &[])
        .await
        .expect_err("text is not an int8");
    assert!(
        wrong.to_string().contains("column 0") || wrong.to_string().contains("deserializ"),
        "{wrong}"
    );
    drop(conn);

    // A failing migration leaves nothing behind; a renamed one is refused.
    let broken = [
        MIGRATIONS[0],
        MIGRATIONS[1],
        Migration {
            version: 3,
            name: "broken",
            sql: "CREATE TABLE half (x int); SELECT no_such_column FROM notes",
        },
    ];
    let error = migrate(pool, "app.schema_migrations", &broken)
        .await
        .expect_err("broken");
    assert!(
        matches!(error, MigrateError::Database { version: 3, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("42703"),
        "the server's message: {error}"
    );
    let half: Vec<(bool,)> = pool
        .query_as("SELECT to_regclass('half') IS NOT NULL", &[])
        .await
        .expect("check");
    assert_eq!(half, vec![(false,)], "rolled back with its migration");
    let renamed = [Migration {
        name: "renamed",
        ..MIGRATIONS[0]
    }];
    let error = migrate(pool, "app.schema_migrations", &renamed)
        .await
        .expect_err("renamed");
    assert!(
        matches!(error, MigrateError::Changed { version: 1, .. }),
        "{error}"
    );
}
