//! The application's own schema migrations: versioned SQL applied in order, each version once,
//! under an advisory lock so that several processes starting at once do not race (the task
//! queue's schema has a migrator of its own, built the same way; they are not yet one).

use crate::error::PoolError;
use crate::Pool;

/// One migration: its version (1, 2, ... in order), a name, and the SQL it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its version: positive, each greater than the one before.
    pub version: i64,
    /// A short name, recorded with it (a version recorded under another name is refused).
    pub name: &'static str,
    /// The SQL, one or more statements.
    pub sql: &'static str,
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The list of migrations cannot be applied as given.
    #[error("migrations: {0}")]
    Invalid(String),
    /// A version already applied was recorded under another name: the list was changed
    /// after it ran.
    #[error("migration {version} was applied as {applied:?}, but the list names it {listed:?}")]
    Changed {
        /// The version.
        version: i64,
        /// The name it was applied under.
        applied: String,
        /// The name in the list now.
        listed: String,
    },
    /// The database failed (with the server's message and SQLSTATE; a failed migration
    /// rolls back, and nothing of it stays).
    #[error("migration {version}: {error}")]
    Database {
        /// The version being applied (0: the migrator's own bookkeeping).
        version: i64,
        /// The error.
        error: PoolError,
    },
}

/// Applies the migrations not applied yet, in order, each in a transaction of its own, and
/// records them in `table` (created, with its schema, if missing; a plain or schema-qualified name of lowercase
/// letters, digits and `_`). Several processes may run it at once: an advisory lock keyed by
/// the table lets one apply each version. Returns the versions applied by this call.
///
/// ```no_run
/// # async fn example(pool: holdfast::Pool) -> Result<(), holdfast::MigrateError> {
/// use holdfast::{migrate, Migration};
/// const MIGRATIONS: &[Migration] = &[
///     Migration { version: 1, name: "notes", sql: "CREATE TABLE notes (id bigserial PRIMARY KEY, body text)" },
///     Migration { version: 2, name: "notes_at", sql: "ALTER TABLE notes ADD COLUMN at timestamptz DEFAULT now()" },
/// ];
/// migrate(&pool, "schema_migrations", MIGRATIONS).await?;
/// # Ok(())
/// # }
/// ```
pub async fn migrate(pool: &Pool, table: &str, migrations: &[Migration]) -> Result<Vec<i64>, MigrateError> {
    check(table, migrations)?;
    let db = |version: i64| {
        move |error: tokio_postgres::Error| MigrateError::Database {
            version,
            error: PoolError::Database(error),
        }
    };
    let mut conn = pool
        .get()
        .await
        .map_err(|error| MigrateError::Database { version: 0, error })?;
    let mut applied_now = Vec::new();
    for migration in migrations {
        let tx = conn.transaction().await.map_err(db(migration.version))?;
        // One migrator at a time per table; the lock ends with the transaction.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('holdfast_migrate'), hashtext($1))",
            &[&table],
        )
        .await
        .map_err(db(0))?;
        if let Some((schema, _)) = table.split_once('.') {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await
                .map_err(db(0))?;
        }
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                 version bigint PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )"
        ))
        .await
        .map_err(db(0))?;
        let recorded = tx
            .query_opt(
                &format!("SELECT name FROM {table} WHERE version = $1"),
                &[&migration.version],
            )
            .await
            .map_err(db(0))?;
        match recorded {
            Some(row) => {
                let applied: String = row.get(0);
                if applied != migration.name {
                    return Err(MigrateError::Changed {
                        version: migration.version,
                        applied,
                        listed: migration.name.to_string(),
                    });
                }
                // Already there: nothing to do; the transaction ends with the loop's turn.
            }
            None => {
                tx.batch_execute(migration.sql)
                    .await
                    .map_err(db(migration.version))?;
                tx.execute(
                    &format!("INSERT INTO {table} (version, name) VALUES ($1, $2)"),
                    &[
                        &migration.version as &(dyn tokio_postgres::types::ToSql + Sync),
                        &migration.name,
                    ],
                )
                .await
                .map_err(db(migration.version))?;
                applied_now.push(migration.version);
            }
        }
        tx.commit().await.map_err(db(migration.version))?;
    }
    if !applied_now.is_empty() {
        tracing::info!(table, versions = ?applied_now, "migrations applied");
    }
    Ok(applied_now)
}

fn check(table: &str, migrations: &[Migration]) -> Result<(), MigrateError> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !p.as_bytes()[0].is_ascii_digit()
    };
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| part_ok(p)) {
        return Err(MigrateError::Invalid(format!(
            "table {table:?}: use a name (or schema.name) of a-z, 0-9 and _, not starting with a digit"
        )));
    }
    let mut last = 0;
    for m in migrations {
        if m.version <= last {
            return Err(MigrateError::Invalid(format!(
                "version {} ({:?}) must be positive and greater than the one before ({last})",
                m.version, m.name
            )));
        }
        last = m.version;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn m(version: i64) -> Migration {
        Migration {
            version,
            name: "x",
            sql: "SELECT 1",
        }
    }

    #[test]
    fn versions_in_order_and_plain_table_names_only() {
        assert!(check("schema_migrations", &[m(1), m(2), m(5)]).is_ok());
        assert!(check("app.schema_migrations", &[]).is_ok());
        for table in ["", "Bad", "a;drop", "a.b.c", "1x"] {
            assert!(check(table, &[m(1)]).is_err(), "{table:?}");
        }
        let error = check("t", &[m(2), m(1)]).expect_err("out of order").to_string();
        assert!(error.contains("greater than the one before"), "{error}");
        assert!(check("t", &[m(0)]).is_err(), "positive");
    }
}
