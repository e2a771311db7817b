//! Versioned schema migrations: SQL applied in order, each version once and in a transaction
//! of its own, under an advisory lock so that several processes starting at once do not race.
//! One machinery for the application's tables ([`migrate`]), the task queue's schema and the
//! reference service's tables.

use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;

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
    /// The list of migrations cannot be applied as given, or does not agree with what the
    /// database recorded (a version missing from the list, or one left out before a later
    /// one that ran).
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
/// records them in `table` (created, with its schema, if missing; a plain or schema-qualified
/// name of lowercase letters, digits and `_`). Several processes may run it at once: an
/// advisory lock keyed by the table lets one apply each version. Returns the versions applied
/// by this call. The same as `Migrator::new(table, migrations).run(pool)`.
///
/// A version recorded in the table but missing from the list is refused, unless it comes
/// after the list's last one: that is a newer release's migration, and an older release
/// still running during a rolling deploy goes on.
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
    Migrator::new(table, migrations).run(pool).await
}

/// A set of migrations, where they are recorded, and the schema they run in.
///
/// ```no_run
/// # async fn example(pool: holdfast::Pool) -> Result<(), holdfast::MigrateError> {
/// use holdfast::pool::Migrator;
/// use holdfast::Migration;
/// // Unqualified names in the SQL land in schema `tenant_7`.
/// const TENANT: &[Migration] = &[
///     Migration { version: 1, name: "notes", sql: "CREATE TABLE notes (id bigserial PRIMARY KEY)" },
/// ];
/// Migrator::new("tenant_7.migrations", TENANT).search_path("tenant_7").run(&pool).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Migrator<'a> {
    table: &'a str,
    migrations: &'a [Migration],
    search_path: Option<&'a str>,
}

impl<'a> Migrator<'a> {
    /// Migrations recorded in `table` (see [`migrate`]).
    pub fn new(table: &'a str, migrations: &'a [Migration]) -> Self {
        Migrator {
            table,
            migrations,
            search_path: None,
        }
    }

    /// Runs each migration with `search_path` set to `schema` alone (created if missing), so
    /// that the SQL's unqualified names are created and found there: one list of migrations
    /// for any number of schemas. Without it, the session's search path is used.
    pub fn search_path(mut self, schema: &'a str) -> Self {
        self.search_path = Some(schema);
        self
    }

    /// Applies what is not applied yet; returns the versions this call applied.
    pub async fn run(&self, pool: &Pool) -> Result<Vec<i64>, MigrateError> {
        self.check()?;
        let mut conn = pool
            .get()
            .await
            .map_err(|error| MigrateError::Database { version: 0, error })?;
        // First the bookkeeping, in a transaction of its own: the table, and what it records
        // checked against the list. When everything is applied, that is all.
        let tx = conn.transaction().await.map_err(db(0))?;
        self.lock_and_prepare(&tx).await?;
        let recorded = self.recorded(&tx).await?;
        let pending = self.pending(&recorded)?;
        tx.commit().await.map_err(db(0))?;

        let mut applied_now = Vec::new();
        for migration in pending {
            let version = migration.version;
            let tx = conn.transaction().await.map_err(db(version))?;
            self.lock(&tx).await?;
            // Another process may have applied it since the bookkeeping read.
            let row = tx
                .query_opt(
                    &format!("SELECT name FROM {} WHERE version = $1::bigint", self.table),
                    &[&version],
                )
                .await
                .map_err(db(0))?;
            if let Some(row) = row {
                let applied: Option<String> = row.get(0);
                self.same_name(migration, applied)?;
                continue;
            }
            if let Some(schema) = self.search_path {
                tx.batch_execute(&format!("SET LOCAL search_path TO {schema}"))
                    .await
                    .map_err(db(version))?;
            }
            tx.batch_execute(migration.sql).await.map_err(db(version))?;
            tx.execute(
                &format!(
                    "INSERT INTO {} (version, name) VALUES ($1::bigint, $2)",
                    self.table
                ),
                &[&version as &(dyn ToSql + Sync), &migration.name],
            )
            .await
            .map_err(db(version))?;
            tx.commit().await.map_err(db(version))?;
            applied_now.push(version);
        }
        if !applied_now.is_empty() {
            tracing::info!(table = self.table, versions = ?applied_now, "migrations applied");
        }
        Ok(applied_now)
    }

    /// One migrator at a time per table; the lock ends with the transaction.
    async fn lock(&self, tx: &Transaction<'_>) -> Result<(), MigrateError> {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('holdfast_migrate'), hashtext($1))",
            &[&self.table],
        )
        .await
        .map_err(db(0))?;
        Ok(())
    }

    /// Takes the lock, creates the schemas and the table if missing, and brings a table
    /// written by an older migrator (integer versions, no names: holdfast's task queue and
    /// reference service before 0.3) to this layout: its versions' names are filled in from
    /// the list by [`Migrator::recorded`].
    async fn lock_and_prepare(&self, tx: &Transaction<'_>) -> Result<(), MigrateError> {
        self.lock(tx).await?;
        let schemas = self
            .table
            .split_once('.')
            .map(|(schema, _)| schema)
            .into_iter()
            .chain(self.search_path);
        for schema in schemas {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await
                .map_err(db(0))?;
        }
        let table = self.table;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                 version bigint PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )"
        ))
        .await
        .map_err(db(0))?;
        let has_name = tx
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_attribute
                  WHERE attrelid = $1::text::regclass AND attname = 'name' AND NOT attisdropped)",
                &[&table],
            )
            .await
            .map_err(db(0))?
            .get::<_, bool>(0);
        if !has_name {
            tx.batch_execute(&format!(
                "ALTER TABLE {table} ADD COLUMN name text, ALTER COLUMN version TYPE bigint"
            ))
            .await
            .map_err(db(0))?;
            tracing::info!(table, "migration table upgraded: versions now carry their names");
        }
        Ok(())
    }

    /// The versions recorded, checked against the list; names missing (an older
    /// migrator's rows) are filled in from it.
    async fn recorded(&self, tx: &Transaction<'_>) -> Result<Vec<i64>, MigrateError> {
        let rows = tx
            .query(
                &format!("SELECT version, name FROM {} ORDER BY version", self.table),
                &[],
            )
            .await
            .map_err(db(0))?;
        let last_listed = self.migrations.last().map_or(0, |m| m.version);
        let mut recorded = Vec::with_capacity(rows.len());
        for row in rows {
            let version: i64 = row.get(0);
            let name: Option<String> = row.get(1);
            match self.migrations.iter().find(|m| m.version == version) {
                Some(migration) => {
                    if name.is_none() {
                        tx.execute(
                            &format!("UPDATE {} SET name = $2 WHERE version = $1", self.table),
                            &[&version as &(dyn ToSql + Sync), &migration.name],
                        )
                        .await
                        .map_err(db(0))?;
                    }
                    self.same_name(migration, name)?;
                }
                None if version > last_listed => {
                    tracing::info!(
                        table = self.table,
                        version,
                        "a newer release's migration is applied; this release's last is {last_listed}"
                    );
                }
                None => {
                    return Err(MigrateError::Invalid(format!(
                        "version {version} ({}) is recorded in {} but missing from the list",
                        name.as_deref().unwrap_or("unnamed"),
                        self.table
                    )))
                }
            }
            recorded.push(version);
        }
        Ok(recorded)
    }

    /// The listed migrations not recorded yet; none may come before one that is.
    fn pending(&self, recorded: &[i64]) -> Result<Vec<&'a Migration>, MigrateError> {
        let last_recorded = recorded.iter().copied().max().unwrap_or(0);
        let pending: Vec<&Migration> = self
            .migrations
            .iter()
            .filter(|m| !recorded.contains(&m.version))
            .collect();
        match pending.first() {
            Some(first) if first.version < last_recorded => Err(MigrateError::Invalid(format!(
                "version {} ({}) is not applied, but the later version {last_recorded} is: \
                 add new migrations after the last one applied",
                first.version, first.name
            ))),
            _ => Ok(pending),
        }
    }

    fn same_name(&self, migration: &Migration, applied: Option<String>) -> Result<(), MigrateError> {
        match applied {
            Some(applied) if applied != migration.name => Err(MigrateError::Changed {
                version: migration.version,
                applied,
                listed: migration.name.to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn check(&self) -> Result<(), MigrateError> {
        let table = self.table;
        let parts: Vec<&str> = table.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| identifier_ok(p)) {
            return Err(MigrateError::Invalid(format!(
                "table {table:?}: use a name (or schema.name) of a-z, 0-9 and _, not starting with a digit"
            )));
        }
        if let Some(schema) = self.search_path {
            if !identifier_ok(schema) {
                return Err(MigrateError::Invalid(format!(
                    "search path {schema:?}: use a schema name of a-z, 0-9 and _, not starting with a digit"
                )));
            }
        }
        let mut last = 0;
        for m in self.migrations {
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
}

/// A plain SQL identifier holdfast can put into a statement's text as it is.
fn identifier_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

fn db(version: i64) -> impl Fn(tokio_postgres::Error) -> MigrateError {
    move |error| MigrateError::Database {
        version,
        error: PoolError::Database(error),
    }
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

    fn check(table: &str, migrations: &[Migration]) -> Result<(), MigrateError> {
        Migrator::new(table, migrations).check()
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
        let bad_path = Migrator::new("t", &[]).search_path("a;b").check();
        assert!(bad_path.expect_err("path").to_string().contains("search path"));
    }

    #[test]
    fn nothing_may_be_added_before_the_last_applied_version() {
        let list = [m(1), m(2), m(3)];
        let migrator = Migrator::new("t", &list);
        let pending = migrator.pending(&[1]).expect("in order");
        assert_eq!(pending.iter().map(|m| m.version).collect::<Vec<_>>(), [2, 3]);
        let error = migrator.pending(&[1, 3]).expect_err("2 left out").to_string();
        assert!(
            error.contains("version 2") && error.contains("later version 3"),
            "{error}"
        );
        assert!(migrator.pending(&[1, 2, 3]).expect("all").is_empty());
    }
}
