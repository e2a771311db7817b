//! The pools compared, behind one small interface. Each uses its defaults except the size.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use deadpool_postgres::{ManagerConfig, RecyclingMethod};
use holdfast_pool::{ConnectConfig, PoolConfig};
use tokio_postgres::NoTls;

/// Which pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Holdfast,
    DeadpoolFast,
    DeadpoolVerified,
    Bb8,
    Sqlx,
    /// tokio-postgres clients, no pool: tasks share `size` clients round-robin.
    Raw,
    /// holdfast's `Pool::query`: single statements pipelined on shared connections (a row
    /// of section select).
    HoldfastQuery,
    /// One tokio-postgres client shared by every task: what a pool's single connection
    /// does at one task, without the pool (a diagnostic row of section select).
    RawOne,
    /// A second holdfast pool used exactly as [`Kind::Holdfast`] (`--control`): how far two
    /// identical contenders differ in one run, the noise floor of every comparison.
    HoldfastControl,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Holdfast,
        Kind::DeadpoolFast,
        Kind::DeadpoolVerified,
        Kind::Bb8,
        Kind::Sqlx,
        Kind::Raw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Holdfast => "holdfast",
            Kind::DeadpoolFast => "deadpool Fast",
            Kind::DeadpoolVerified => "deadpool Verified",
            Kind::Bb8 => "bb8",
            Kind::Sqlx => "sqlx",
            Kind::Raw => "raw (no pool)",
            Kind::RawOne => "raw, one client",
            Kind::HoldfastQuery => "holdfast pool.query",
            Kind::HoldfastControl => "holdfast, again (control)",
        }
    }

    /// Short form, for application_name and `--only`.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Holdfast => "holdfast",
            Kind::DeadpoolFast => "deadpool-fast",
            Kind::DeadpoolVerified => "deadpool-verified",
            Kind::Bb8 => "bb8",
            Kind::Sqlx => "sqlx",
            Kind::Raw => "raw",
            Kind::RawOne => "raw-one",
            Kind::HoldfastQuery => "holdfast-query",
            Kind::HoldfastControl => "holdfast-control",
        }
    }

    /// holdfast's pool, used either way.
    pub fn is_holdfast(self) -> bool {
        matches!(self, Kind::Holdfast | Kind::HoldfastQuery | Kind::HoldfastControl)
    }

    pub fn is_pool(self) -> bool {
        !matches!(self, Kind::Raw | Kind::RawOne)
    }
}

pub struct Raw {
    clients: Vec<tokio_postgres::Client>,
    statements: Vec<tokio_postgres::Statement>,
    next: AtomicUsize,
}

pub enum Contender {
    Holdfast(holdfast_pool::Pool),
    HoldfastQuery(holdfast_pool::Pool),
    Deadpool(deadpool_postgres::Pool),
    Bb8(bb8::Pool<PostgresConnectionManager<NoTls>>),
    Sqlx(sqlx::PgPool),
    Raw(Arc<Raw>),
}

pub type BenchResult<T> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Contender {
    /// The application_name this contender's sessions carry.
    pub fn app_name(kind: Kind, run: &str) -> String {
        format!("bench-{}-{run}", kind.tag())
    }

    pub async fn build(kind: Kind, url: &str, run: &str, size: usize) -> BenchResult<Contender> {
        let app = Contender::app_name(kind, run);
        let mut pg: tokio_postgres::Config = url.parse().map_err(err)?;
        pg.application_name(&app);
        Ok(match kind {
            Kind::Holdfast | Kind::HoldfastQuery | Kind::HoldfastControl => {
                let connect = ConnectConfig::from_url(url).map_err(err)?.application_name(&app);
                // The pool's own DB_* variables apply (DB_PIPELINE_DEPTH, say), as they would
                // in a service; the size, overflow and timeout are the bench's.
                let config = PoolConfig::with_connect(connect, &holdfast_pool::ProcessEnv)
                    .map_err(err)?
                    .pool_size(size)
                    .max_overflow(0)
                    .pool_timeout(Duration::from_secs(30));
                let pool = holdfast_pool::Pool::new(config).map_err(err)?;
                if kind != Kind::HoldfastQuery {
                    Contender::Holdfast(pool)
                } else {
                    Contender::HoldfastQuery(pool)
                }
            }
            Kind::DeadpoolFast | Kind::DeadpoolVerified => {
                let recycling_method = if kind == Kind::DeadpoolFast {
                    RecyclingMethod::Fast
                } else {
                    RecyclingMethod::Verified
                };
                let manager =
                    deadpool_postgres::Manager::from_config(pg, NoTls, ManagerConfig { recycling_method });
                let pool = deadpool_postgres::Pool::builder(manager)
                    .max_size(size)
                    .build()
                    .map_err(err)?;
                Contender::Deadpool(pool)
            }
            Kind::Bb8 => {
                let manager = PostgresConnectionManager::new(pg, NoTls);
                let pool = bb8::Pool::builder()
                    .max_size(size as u32)
                    .build(manager)
                    .await
                    .map_err(err)?;
                Contender::Bb8(pool)
            }
            Kind::Sqlx => {
                use std::str::FromStr;
                let options = sqlx::postgres::PgConnectOptions::from_str(url)
                    .map_err(err)?
                    .application_name(&app);
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(size as u32)
                    .connect_with(options)
                    .await
                    .map_err(err)?;
                Contender::Sqlx(pool)
            }
            Kind::Raw | Kind::RawOne => {
                let mut clients = Vec::new();
                let mut statements = Vec::new();
                let size = if kind == Kind::RawOne { 1 } else { size };
                for _ in 0..size {
                    let (client, connection) = pg.connect(NoTls).await.map_err(err)?;
                    tokio::spawn(connection);
                    statements.push(client.prepare("SELECT 1").await.map_err(err)?);
                    clients.push(client);
                }
                Contender::Raw(Arc::new(Raw {
                    clients,
                    statements,
                    next: AtomicUsize::new(0),
                }))
            }
        })
    }

    /// Takes a connection and gives it back, no query.
    pub async fn acquire_release(&self) -> BenchResult<()> {
        match self {
            Contender::Holdfast(p) | Contender::HoldfastQuery(p) => p.get().await.map(drop).map_err(err),
            Contender::Deadpool(p) => p.get().await.map(drop).map_err(err),
            Contender::Bb8(p) => p.get().await.map(drop).map_err(err),
            Contender::Sqlx(p) => p.acquire().await.map(drop).map_err(err),
            Contender::Raw(_) => Ok(()),
        }
    }

    /// Takes a connection, runs a prepared `SELECT 1`, gives it back. Statements are cached
    /// per connection where the pool offers a cache (holdfast, deadpool, sqlx); bb8 has
    /// none, so it runs `query_typed` (one round trip, no named statement).
    pub async fn select_one(&self) -> BenchResult<()> {
        match self {
            Contender::Holdfast(p) => {
                let conn = p.get().await.map_err(err)?;
                let stmt = conn.prepare_cached("SELECT 1").await.map_err(err)?;
                conn.query_one(&stmt, &[]).await.map(drop).map_err(err)
            }
            Contender::HoldfastQuery(p) => p.query("SELECT 1", &[]).await.map(drop).map_err(err),
            Contender::Deadpool(p) => {
                let conn = p.get().await.map_err(err)?;
                let stmt = conn.prepare_cached("SELECT 1").await.map_err(err)?;
                conn.query_one(&stmt, &[]).await.map(drop).map_err(err)
            }
            Contender::Bb8(p) => {
                let conn = p.get().await.map_err(err)?;
                conn.query_typed("SELECT 1", &[]).await.map(drop).map_err(err)
            }
            Contender::Sqlx(p) => {
                let mut conn = p.acquire().await.map_err(err)?;
                sqlx::query("SELECT 1")
                    .fetch_one(&mut *conn)
                    .await
                    .map(drop)
                    .map_err(err)
            }
            Contender::Raw(raw) => {
                let i = raw.next.fetch_add(1, Ordering::Relaxed) % raw.clients.len();
                raw.clients[i]
                    .query_one(&raw.statements[i], &[])
                    .await
                    .map(drop)
                    .map_err(err)
            }
        }
    }

    /// Takes a connection, runs a raw `BEGIN` and gives it back without finishing it: the
    /// incident's mistake.
    pub async fn forget_a_transaction(&self) -> BenchResult<()> {
        match self {
            Contender::Holdfast(p) | Contender::HoldfastQuery(p) => p
                .get()
                .await
                .map_err(err)?
                .batch_execute("BEGIN")
                .await
                .map_err(err),
            Contender::Deadpool(p) => p
                .get()
                .await
                .map_err(err)?
                .batch_execute("BEGIN")
                .await
                .map_err(err),
            Contender::Bb8(p) => p
                .get()
                .await
                .map_err(err)?
                .batch_execute("BEGIN")
                .await
                .map_err(err),
            Contender::Sqlx(p) => {
                let mut conn = p.acquire().await.map_err(err)?;
                sqlx::raw_sql("BEGIN")
                    .execute(&mut *conn)
                    .await
                    .map(drop)
                    .map_err(err)
            }
            Contender::Raw(raw) => raw.clients[0].batch_execute("BEGIN").await.map_err(err),
        }
    }

    /// True when the next user's connection is inside a transaction someone else began: the
    /// next user takes a connection, asks its backend pid and, while still holding it, the
    /// server is asked (over `admin`) whether that session is idle in a transaction.
    pub async fn next_user_inherits_a_transaction(
        &self,
        admin: &tokio_postgres::Client,
    ) -> BenchResult<bool> {
        let sql = "SELECT pg_backend_pid()";
        let check = |pid: i32| async move {
            let row = admin
                .query_one("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await
                .map_err(err)?;
            let state: Option<String> = row.get(0);
            Ok::<bool, String>(state.is_some_and(|s| s.starts_with("idle in transaction")))
        };
        match self {
            Contender::Holdfast(p) | Contender::HoldfastQuery(p) => {
                let conn = p.get().await.map_err(err)?;
                let pid: i32 = conn.query_one(sql, &[]).await.map_err(err)?.get(0);
                check(pid).await
            }
            Contender::Deadpool(p) => {
                let conn = p.get().await.map_err(err)?;
                let pid: i32 = conn.query_one(sql, &[]).await.map_err(err)?.get(0);
                check(pid).await
            }
            Contender::Bb8(p) => {
                let conn = p.get().await.map_err(err)?;
                let pid: i32 = conn.query_one(sql, &[]).await.map_err(err)?.get(0);
                check(pid).await
            }
            Contender::Sqlx(p) => {
                let mut conn = p.acquire().await.map_err(err)?;
                let pid: i32 = sqlx::query_scalar(sql).fetch_one(&mut *conn).await.map_err(err)?;
                check(pid).await
            }
            Contender::Raw(raw) => {
                let pid: i32 = raw.clients[0].query_one(sql, &[]).await.map_err(err)?.get(0);
                check(pid).await
            }
        }
    }

    pub async fn close(self) {
        match self {
            Contender::Holdfast(p) | Contender::HoldfastQuery(p) => {
                p.close().await;
            }
            Contender::Deadpool(p) => p.close(),
            Contender::Bb8(p) => drop(p),
            Contender::Sqlx(p) => p.close().await,
            Contender::Raw(raw) => drop(raw),
        }
    }
}
