//! The service's settings: the incident's environment variables and command-line flags
//! (every one in `holdfast serve --help`), turned into the three pools and the worker.
//!
//! Connection budgets (bulkheads): API requests use a pool of their own sized by
//! `DB_POOL_SIZE` and `DB_MAX_OVERFLOW`; assembly work uses a second pool of one connection per
//! worker slot; the task control plane (claims, heartbeats, final writes) a third of two
//! connections, plus one listening connection. No number of running assemblies can make an API
//! request wait for a connection, and no API burst can delay a heartbeat. At most
//! `DB_POOL_SIZE + DB_MAX_OVERFLOW + 2 * ASSEMBLY_WORKERS + 3` connections per instance.

use std::net::SocketAddr;
use std::time::Duration;

use holdfast::pool::{ConnectConfig, PoolConfig, Pooler};
use holdfast::tasks::{Listen, WorkerConfig};

/// Options of `holdfast serve` (each also read from the environment variable named).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ServeArgs {
    /// PostgreSQL URL of the application database. TLS and credentials as in libpq: `sslmode`
    /// (disable, prefer, require, verify-ca, verify-full), `sslrootcert`, `sslcert`, `sslkey`,
    /// `sslsni`, `passfile` in the URL, or DB_SSLMODE, DB_SSLROOTCERT, DB_SSLCERT, DB_SSLKEY,
    /// DB_SSLSNI, DB_PASSWORD, DB_PASSFILE for what the URL leaves unset.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: String,
    /// A connection route of their own for the assembly workers (the incident's "separate
    /// database instance for background tasks": another host, port, pooler or role). It must
    /// reach the same database, where episodes and the queue live together, so that starting
    /// an assembly stays one transaction. Default: DATABASE_URL.
    #[arg(
        long,
        env = "TASKS_DATABASE_URL",
        value_name = "TASKS_DATABASE_URL",
        hide_env_values = true
    )]
    pub tasks_database_url: Option<String>,
    /// What DATABASE_URL reaches: `none` (PostgreSQL itself, or a session-mode pooler) or
    /// `transaction` (a transaction-mode pooler such as PgBouncer: no start-up options, no
    /// named statements across transactions, no LISTEN through it). See docs/scale-out.md.
    #[arg(long, env = "DB_POOLER", value_name = "DB_POOLER", default_value = "none", value_parser = ["none", "transaction"])]
    pub db_pooler: String,
    /// Like DB_POOLER, for TASKS_DATABASE_URL. Default: DB_POOLER when TASKS_DATABASE_URL is
    /// not set, `none` when it is.
    #[arg(long, env = "TASKS_DB_POOLER", value_name = "TASKS_DB_POOLER", value_parser = ["none", "transaction"])]
    pub tasks_db_pooler: Option<String>,
    /// A direct PostgreSQL URL (not through a transaction-mode pooler) on which the assembly
    /// workers LISTEN, so that a new assembly starts at once instead of at the next poll.
    /// Default: LISTEN through the tasks route, or poll only when that is a transaction-mode
    /// pooler. One connection per instance.
    #[arg(
        long,
        env = "TASKS_LISTEN_URL",
        value_name = "TASKS_LISTEN_URL",
        hide_env_values = true
    )]
    pub tasks_listen_url: Option<String>,
    /// How often idle assembly workers look for work when no notification wakes them, in
    /// milliseconds.
    #[arg(long, env = "TASK_POLL_MS", value_name = "TASK_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub task_poll_ms: u64,
    /// HTTP listen address.
    #[arg(long, env = "LISTEN", value_name = "LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// API pool: connections kept open.
    #[arg(long, env = "DB_POOL_SIZE", value_name = "DB_POOL_SIZE", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub pool_size: u32,
    /// API pool: extra connections under load.
    #[arg(long, env = "DB_MAX_OVERFLOW", value_name = "DB_MAX_OVERFLOW", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=10000))]
    pub max_overflow: u32,
    /// How long an API request waits for a connection before answering 503, in milliseconds.
    #[arg(long, env = "API_POOL_TIMEOUT_MS", value_name = "API_POOL_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub api_pool_timeout_ms: u64,
    /// How long an API request may take in all before it is answered 503 and its database
    /// work dropped, in milliseconds. Bounds requests the database never answers (a hung
    /// server or network), which `statement_timeout` cannot.
    #[arg(long, env = "API_REQUEST_TIMEOUT_MS", value_name = "API_REQUEST_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub api_request_timeout_ms: u64,
    /// `statement_timeout` of API connections, in milliseconds (0: the server's).
    #[arg(
        long,
        env = "DB_STATEMENT_TIMEOUT_MS",
        value_name = "DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 300_000
    )]
    pub statement_timeout_ms: u64,
    /// Assemblies run at once per instance.
    #[arg(long, env = "ASSEMBLY_WORKERS", value_name = "ASSEMBLY_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub assembly_workers: u32,
    /// Simulated mixing time per segment, in milliseconds (assemblies are long on purpose).
    #[arg(long, env = "ASSEMBLY_STEP_MS", value_name = "ASSEMBLY_STEP_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub assembly_step_ms: u64,
    /// How long one assembly attempt may run before it is stopped and retried, in
    /// milliseconds: bounds an assembly whose database request was swallowed by a hung
    /// network, which its heartbeats (on other connections) would otherwise keep forever.
    #[arg(long, env = "ASSEMBLY_TIMEOUT_MS", value_name = "ASSEMBLY_TIMEOUT_MS", default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub assembly_timeout_ms: u64,
    /// Lease of a running assembly, in milliseconds (heartbeats every third of it).
    #[arg(long, env = "TASK_LEASE_MS", value_name = "TASK_LEASE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(300..=86_400_000))]
    pub task_lease_ms: u64,
    /// Schema of the task queue.
    #[arg(
        long,
        env = "TASK_SCHEMA",
        value_name = "TASK_SCHEMA",
        default_value = "holdfast"
    )]
    pub task_schema: String,
    /// How long shutdown lets running assemblies finish before releasing them, in ms.
    #[arg(
        long,
        env = "SHUTDOWN_GRACE_MS",
        value_name = "SHUTDOWN_GRACE_MS",
        default_value_t = 10_000
    )]
    pub shutdown_grace_ms: u64,
}

impl ServeArgs {
    /// The settings `holdfast serve --database-url <url>` starts with: every other setting at
    /// its documented default (for code that starts the service itself, such as the demo,
    /// the load run and tests, which then change what they need).
    pub fn for_database(database_url: impl Into<String>) -> ServeArgs {
        ServeArgs {
            database_url: database_url.into(),
            tasks_database_url: None,
            db_pooler: "none".into(),
            tasks_db_pooler: None,
            tasks_listen_url: None,
            task_poll_ms: 1000,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            pool_size: 5,
            max_overflow: 10,
            api_pool_timeout_ms: 2000,
            api_request_timeout_ms: 10_000,
            statement_timeout_ms: 300_000,
            assembly_workers: 2,
            assembly_step_ms: 200,
            assembly_timeout_ms: 600_000,
            task_lease_ms: 30_000,
            task_schema: "holdfast".into(),
            shutdown_grace_ms: 10_000,
        }
    }

    /// The API pool.
    pub fn api_pool(&self) -> Result<PoolConfig, String> {
        let connect = connect(&self.database_url, "DATABASE_URL", "holdfast-api")?
            .pooler(pooler(&self.db_pooler))
            .statement_timeout(
                (self.statement_timeout_ms > 0).then(|| Duration::from_millis(self.statement_timeout_ms)),
            );
        let config = PoolConfig::new(connect)
            .pool_size(self.pool_size as usize)
            .max_overflow(self.max_overflow as usize)
            .pool_timeout(Duration::from_millis(self.api_pool_timeout_ms))
            .name("api");
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// The API's request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.api_request_timeout_ms)
    }

    /// The assembly work pool: one connection per worker slot.
    pub fn work_pool(&self) -> Result<PoolConfig, String> {
        let (url, setting) = self.tasks_url();
        let connect = connect(url, setting, "holdfast-assembly")?.pooler(self.tasks_pooler());
        let config = PoolConfig::new(connect)
            .pool_size(self.assembly_workers as usize)
            .max_overflow(0)
            .pool_timeout(Duration::from_secs(30))
            .name("assembly");
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// The task control plane's pool.
    pub fn control_pool(&self) -> Result<PoolConfig, String> {
        let (url, setting) = self.tasks_url();
        let connect = connect(url, setting, "holdfast-tasks")?.pooler(self.tasks_pooler());
        let config = PoolConfig::new(connect)
            .pool_size(2)
            .max_overflow(1)
            .pool_timeout(Duration::from_secs(10))
            .name("tasks");
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// The worker.
    pub fn worker(&self) -> Result<WorkerConfig, String> {
        let listen = match &self.tasks_listen_url {
            Some(url) => Listen::Direct(Box::new(connect(url, "TASKS_LISTEN_URL", "holdfast-listen")?)),
            None => Listen::Auto,
        };
        Ok(WorkerConfig {
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            run_timeout: Some(Duration::from_millis(self.assembly_timeout_ms)),
            poll_interval: Duration::from_millis(self.task_poll_ms),
            listen,
            ..WorkerConfig::default()
        }
        .lease(Duration::from_millis(self.task_lease_ms))
        .concurrency(self.assembly_workers as usize))
    }

    fn tasks_pooler(&self) -> Pooler {
        match (&self.tasks_db_pooler, &self.tasks_database_url) {
            (Some(mode), _) => pooler(mode),
            (None, None) => pooler(&self.db_pooler),
            (None, Some(_)) => Pooler::None,
        }
    }

    fn tasks_url(&self) -> (&str, &'static str) {
        match &self.tasks_database_url {
            Some(url) => (url, "TASKS_DATABASE_URL"),
            None => (&self.database_url, "DATABASE_URL"),
        }
    }
}

/// clap has checked the spelling.
fn pooler(mode: &str) -> Pooler {
    if mode == "transaction" {
        Pooler::Transaction
    } else {
        Pooler::None
    }
}

/// A URL's settings, with TLS and passwords from the environment where the URL leaves them
/// unset (`DB_SSLMODE`, `DB_SSLROOTCERT`, `DB_SSLCERT`, `DB_SSLKEY`, `DB_SSLSNI`,
/// `DB_PASSWORD`, `DB_PASSFILE`).
fn connect(url: &str, setting: &str, application_name: &str) -> Result<ConnectConfig, String> {
    let config = ConnectConfig::parse_setting(setting, url)
        .and_then(|c| c.apply_env(&holdfast::pool::ProcessEnv))
        .map_err(|e| e.to_string())?;
    // The URL's own application_name wins; otherwise name the role of the connection.
    if config.get_application_name() == holdfast::pool::DEFAULT_APPLICATION_NAME {
        return Ok(config.application_name(application_name));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn for_database_has_the_command_lines_defaults() {
        // The environment can set every one of these; the test process sets none of them.
        let parsed = Cli::try_parse_from(["holdfast", "--database-url", "postgres://h/d"])
            .expect("parse")
            .serve;
        assert_eq!(ServeArgs::for_database("postgres://h/d"), parsed);
    }
}
