//! `query_as` and the application's own migrations, against a real cluster.

mod support;

use holdfast_pool::{migrate, FromRow, MigrateError, Migration, Migrator, Pool};
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

#[tokio::test]
async fn one_list_serves_many_schemas_and_older_or_newer_records_are_handled() {
    let db = cluster().create_database().expect("database");
    let pool = Pool::new(config_for_url(&db.url, "migrate-schemas")).expect("pool");
    // The same list in two schemas: unqualified names land in each.
    for schema in ["tenant_a", "tenant_b"] {
        let table = format!("{schema}.migrations");
        let applied = Migrator::new(&table, MIGRATIONS)
            .search_path(schema)
            .run(&pool)
            .await
            .expect("migrate");
        assert_eq!(applied, vec![1, 2], "{schema}");
    }
    let notes: Vec<(String, i64)> = pool
        .query_as(
            "SELECT table_schema::text, count(*) FROM information_schema.tables
              WHERE table_name = 'notes' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("tables");
    assert_eq!(
        notes,
        vec![("tenant_a".to_string(), 1), ("tenant_b".to_string(), 1)],
        "a notes table in each schema and none elsewhere"
    );

    // A table left by an older migrator (integer versions, no names) is taken over: its
    // versions get the listed names, and only what is new runs.
    let conn = pool.get().await.expect("get");
    conn.batch_execute(
        "CREATE TABLE legacy_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO legacy_migrations (version) VALUES (1);
         CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL);",
    )
    .await
    .expect("the older layout");
    drop(conn);
    let applied = migrate(&pool, "legacy_migrations", MIGRATIONS)
        .await
        .expect("taken over");
    assert_eq!(applied, vec![2], "version 1 was there already");
    let recorded: Vec<(i64, String)> = pool
        .query_as(
            "SELECT version, name FROM legacy_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("recorded");
    assert_eq!(
        recorded,
        vec![(1, "notes".to_string()), (2, "notes_rating".to_string())]
    );

    // During a rolling deploy the older release (which lists only version 1) goes on after
    // the newer one applied version 2; a list that leaves out an applied version before its
    // last one is refused, naming it.
    assert!(migrate(&pool, "legacy_migrations", &MIGRATIONS[..1])
        .await
        .expect("an older release")
        .is_empty());
    let holed = [MIGRATIONS[1]];
    let error = migrate(&pool, "legacy_migrations", &holed)
        .await
        .expect_err("version 1 missing from the list");
    assert!(
        error
            .to_string()
            .contains("version 1 (notes) is recorded in legacy_migrations but missing"),
        "{error}"
    );
}
