//! The service's settings. The library's tables (connection, pool, tasks) and the service's
//! own ([`SERVICE`]) are the only place a setting is declared: `holdfast serve`'s flags
//! (`--db-pool-size`, each also read from its variable, `DB_POOL_SIZE`), its help, the
//! README's tables and the values the service starts with all come from them. The service
//! starts from the library's reading and overrides only what it must, and refuses at
//! start-up the few library settings it sets itself ([`OVERRIDDEN`]).
//!
//! Connection budgets (bulkheads): API requests use a pool of their own sized by
//! `DB_POOL_SIZE` and `DB_MAX_OVERFLOW`; assembly work uses a second pool of one connection per
//! worker slot (`ASSEMBLY_WORKERS`); the task control plane (claims, heartbeats, final writes)
//! a third of two connections plus one of overflow, and one listening connection. No number of
//! running assemblies can make an API request wait for a connection, and no API burst can
//! delay a heartbeat. At most `DB_POOL_SIZE + DB_MAX_OVERFLOW + ASSEMBLY_WORKERS + 3`
//! connections per instance through `DATABASE_URL` (and `TASKS_DATABASE_URL`), plus the
//! listening one: [`ServeArgs::connection_budget`], the figure docs/scale-out.md sizes
//! PgBouncer with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use holdfast::pool::settings::{self as lib, table, Choice, Count, Describe, Source, Span, Text, Unit};
use holdfast::pool::{ConfigError, ConnectConfig, PoolConfig, TargetSessionAttrs, DEFAULT_APPLICATION_NAME};
use holdfast::tasks::{Listen, WorkerConfig};

use crate::service::console::auth::AdminToken;

/// `LISTEN`.
pub const LISTEN: Text = Text {
    env: "LISTEN",
    name: "listen",
    default: "127.0.0.1:8080",
    accepted: "an address and port, such as 127.0.0.1:8080 (port 0: any free port)",
    secret: false,
    doc: "where the HTTP API listens",
};

/// `TASKS_DATABASE_URL`.
pub const TASKS_DATABASE_URL: Text = Text {
    env: "TASKS_DATABASE_URL",
    name: "tasks_database_url",
    default: "(`DATABASE_URL`)",
    accepted: "a postgres:// URL reaching the same database as DATABASE_URL",
    secret: true,
    doc: "a connection route of their own for the assembly workers (another host, port, pooler or role); episodes and the queue live in one database, so that starting an assembly stays one transaction",
};

/// `DATABASE_REPLICA_URL`.
pub const DATABASE_REPLICA_URL: Text = Text {
    env: "DATABASE_REPLICA_URL",
    name: "database_replica_url",
    default: "(none: reads go to `DATABASE_URL`)",
    accepted: "a postgres:// URL or key=value string listing standbys (and the primary last, as the fallback)",
    secret: true,
    doc: "where the API's reads go (an episode, intent hints): without its own target_session_attrs, `prefer-standby`, so a standby serves them and the primary when none is up; a standby may lag the primary, so a read right after a write may not see it yet",
};

/// `TASKS_DB_POOLER`.
pub const TASKS_DB_POOLER: Choice = Choice {
    env: "TASKS_DB_POOLER",
    name: "tasks_db_pooler",
    default: "(`DB_POOLER` without TASKS_DATABASE_URL, else none)",
    choices: &["none", "transaction"],
    doc: "like DB_POOLER, for TASKS_DATABASE_URL",
};

/// `TASKS_LISTEN_URL`.
pub const TASKS_LISTEN_URL: Text = Text {
    env: "TASKS_LISTEN_URL",
    name: "tasks_listen_url",
    default: "(LISTEN through the tasks route)",
    accepted: "a postgres:// URL straight to PostgreSQL (not through a transaction pooler)",
    secret: true,
    doc: "where the assembly workers LISTEN, so that a new assembly starts at once instead of at the next poll; one connection per instance",
};

/// `API_REQUEST_TIMEOUT_MS`.
pub const API_REQUEST_TIMEOUT: Span = Span {
    env: "API_REQUEST_TIMEOUT_MS",
    name: "api_request_timeout",
    unit: Unit::Milliseconds,
    default: 10_000,
    min: 1,
    max: 3_600_000,
    zero_is_off: false,
    doc: "an API request's one budget: its wait for a connection, its transaction's retries and its reads' repeats all share it; past it the request is answered 503 and its database work dropped",
};

/// `ASSEMBLY_WORKERS`.
pub const ASSEMBLY_WORKERS: Count = Count {
    env: "ASSEMBLY_WORKERS",
    name: "assembly_workers",
    default: 2,
    min: 1,
    max: 256,
    doc: "assemblies run at once per instance (the worker's TASK_CONCURRENCY, and the size of the assembly pool)",
};

/// `ASSEMBLY_STEP_MS`.
pub const ASSEMBLY_STEP: Span = Span {
    env: "ASSEMBLY_STEP_MS",
    name: "assembly_step",
    unit: Unit::Milliseconds,
    default: 200,
    min: 0,
    max: 3_600_000,
    zero_is_off: false,
    doc: "simulated mixing time per segment (assemblies are long on purpose)",
};

/// `ASSEMBLY_TIMEOUT_MS`.
pub const ASSEMBLY_TIMEOUT: Span = Span {
    env: "ASSEMBLY_TIMEOUT_MS",
    name: "assembly_timeout",
    unit: Unit::Milliseconds,
    default: 600_000,
    min: 1,
    max: 86_400_000,
    zero_is_off: false,
    doc: "an assembly attempt running longer is stopped and retried (the worker's TASK_RUN_TIMEOUT_MS): a last resort for a body whose request a hung network swallowed",
};

/// `ADMIN_TOKEN`.
pub const ADMIN_TOKEN: Text = Text {
    env: "ADMIN_TOKEN",
    name: "admin_token",
    default: "(none: the console is off)",
    accepted: "at least 16 characters without whitespace (for example `openssl rand -hex 32`)",
    secret: true,
    doc: "turns on the operator's console at /console: signing in and every action (retry, cancel) need this token",
};

/// The service's own settings.
pub static SERVICE: &[&dyn Describe] = &[
    &LISTEN,
    &ADMIN_TOKEN,
    &API_REQUEST_TIMEOUT,
    &ASSEMBLY_WORKERS,
    &ASSEMBLY_STEP,
    &ASSEMBLY_TIMEOUT,
    &DATABASE_REPLICA_URL,
    &TASKS_DATABASE_URL,
    &TASKS_DB_POOLER,
    &TASKS_LISTEN_URL,
];

/// Library settings the service sets itself, with what to use instead: set, they are
/// refused at start-up rather than silently ignored.
pub static OVERRIDDEN: &[(&str, &str)] = &[
    (
        table::POOL_NAME.env,
        "the service names its pools api, assembly and tasks",
    ),
    (
        table::POOL_TIMEOUT.env,
        "an API request waits within its API_REQUEST_TIMEOUT_MS budget; the assembly and task pools wait 30 s and 10 s",
    ),
    (
        "API_POOL_TIMEOUT_MS",
        "an API request's wait for a connection shares its API_REQUEST_TIMEOUT_MS budget with its retries (DB_MAX_WAITING sheds load)",
    ),
    (holdfast::tasks::settings::CONCURRENCY.env, "use ASSEMBLY_WORKERS"),
    (
        holdfast::tasks::settings::RUN_TIMEOUT.env,
        "use ASSEMBLY_TIMEOUT_MS",
    ),
];

/// Every setting `holdfast serve` takes, in the order its help lists them.
pub fn all_settings() -> Vec<&'static dyn Describe> {
    let library = table::CONNECT
        .iter()
        .chain(table::POOL)
        .chain(holdfast::tasks::SETTINGS)
        .copied()
        .filter(|s| !OVERRIDDEN.iter().any(|(env, _)| *env == s.env()));
    SERVICE.iter().copied().chain(library).collect()
}

/// The settings of `holdfast serve`: every value given on the command line or in the
/// environment, by variable name. Everything not given has its table's default.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServeArgs {
    values: HashMap<String, String>,
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |name: &str| all_settings().iter().any(|s| s.env() == name && s.secret());
        let mut shown: Vec<(&String, &str)> = self
            .values
            .iter()
            .map(|(k, v)| (k, if secret(k) { "<hidden>" } else { v.as_str() }))
            .collect();
        shown.sort();
        f.debug_map().entries(shown).finish()
    }
}

impl Source for ServeArgs {
    fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }
}

impl ServeArgs {
    /// The settings `holdfast serve --database-url <url>` starts with, the environment
    /// aside: every other setting at its default (for code that starts the service itself,
    /// such as the demo, the load run and tests, which then [`set`](Self::set) what they
    /// need).
    pub fn for_database(database_url: impl Into<String>) -> ServeArgs {
        ServeArgs::default().set(&table::DATABASE_URL, database_url.into())
    }

    /// Sets one setting, as its variable would. Checked when the service starts.
    pub fn set(mut self, setting: &dyn Describe, value: impl ToString) -> ServeArgs {
        self.values.insert(setting.env().to_string(), value.to_string());
        self
    }

    /// Refuses a library setting the service sets itself, if the process environment has
    /// one (the command line has no flag for them).
    pub fn refuse_overridden(source: &dyn Source) -> Result<(), ConfigError> {
        for (env, instead) in OVERRIDDEN {
            if let Some(value) = source.get(env).filter(|v| !v.trim().is_empty()) {
                return Err(ConfigError::InvalidValue {
                    setting: (*env).to_string(),
                    value,
                    accepted: format!("nothing: holdfast serve sets it itself ({instead})"),
                });
            }
        }
        Ok(())
    }

    /// Where the HTTP API listens.
    pub fn listen(&self) -> Result<SocketAddr, ConfigError> {
        let raw = LISTEN.read_or_default(self);
        raw.trim().parse().map_err(|_| ConfigError::InvalidValue {
            setting: LISTEN.env.into(),
            value: raw,
            accepted: LISTEN.accepted.into(),
        })
    }

    /// The console's token, if the console is on.
    pub fn admin_token(&self) -> Result<Option<AdminToken>, ConfigError> {
        let Some(raw) = ADMIN_TOKEN.read(self) else {
            return Ok(None);
        };
        AdminToken::new(&raw)
            .map(Some)
            .map_err(|problem| ConfigError::InvalidValue {
                setting: ADMIN_TOKEN.env.into(),
                value: format!("<hidden: {problem}>"),
                accepted: ADMIN_TOKEN.accepted.into(),
            })
    }

    /// The API's request timeout.
    pub fn request_timeout(&self) -> Result<Duration, ConfigError> {
        API_REQUEST_TIMEOUT.read_duration(self)
    }

    /// Simulated mixing time per segment.
    pub fn assembly_step(&self) -> Result<Duration, ConfigError> {
        ASSEMBLY_STEP.read_duration(self)
    }

    /// Assemblies run at once.
    pub fn assembly_workers(&self) -> Result<usize, ConfigError> {
        Ok(ASSEMBLY_WORKERS.read(self)? as usize)
    }

    /// True when the assembly workers have a route of their own.
    pub fn has_tasks_route(&self) -> bool {
        TASKS_DATABASE_URL.read(self).is_some()
    }

    /// The API pool: the library's reading of every pool and connection setting, named
    /// `api`. A request waits within its own budget; outside one (start-up, say), a wait
    /// is bounded by `API_REQUEST_TIMEOUT_MS` too.
    pub fn api_pool(&self) -> Result<PoolConfig, ConfigError> {
        let url = table::DATABASE_URL
            .read(self)
            .ok_or_else(|| ConfigError::InvalidValue {
                setting: table::DATABASE_URL.env.into(),
                value: String::new(),
                accepted: format!("{}; it is not set", table::DATABASE_URL.accepted),
            })?;
        let connect = ConnectConfig::from_url_and_source(table::DATABASE_URL.env, &url, self)?;
        let config = PoolConfig::with_connect(name_connections(connect, "holdfast-api"), self)?
            .pool_timeout(API_REQUEST_TIMEOUT.read_duration(self)?)
            .name("api");
        config.validate()?;
        Ok(config)
    }

    /// The pool the API's reads go through when `DATABASE_REPLICA_URL` is set: every pool
    /// and connection setting as the API pool's, named `replica`, `prefer-standby` unless the
    /// URL says otherwise.
    pub fn replica_pool(&self) -> Result<Option<PoolConfig>, ConfigError> {
        let Some(url) = DATABASE_REPLICA_URL.read(self) else {
            return Ok(None);
        };
        let mut connect = ConnectConfig::from_url_and_source(DATABASE_REPLICA_URL.env, &url, self)?;
        if !url.contains("target_session_attrs") {
            connect = connect.target_session_attrs(TargetSessionAttrs::PreferStandby);
        }
        let config = PoolConfig::with_connect(name_connections(connect, "holdfast-replica"), self)?
            .pool_timeout(API_REQUEST_TIMEOUT.read_duration(self)?)
            .name("replica");
        config.validate()?;
        Ok(Some(config))
    }

    /// The assembly work pool: one connection per worker slot.
    pub fn work_pool(&self) -> Result<PoolConfig, ConfigError> {
        let workers = self.assembly_workers()?;
        self.tasks_pool(
            "holdfast-assembly",
            "assembly",
            workers,
            0,
            Duration::from_secs(30),
        )
    }

    /// The task control plane's pool.
    pub fn control_pool(&self) -> Result<PoolConfig, ConfigError> {
        self.tasks_pool("holdfast-tasks", "tasks", 2, 1, Duration::from_secs(10))
    }

    fn tasks_pool(
        &self,
        application_name: &str,
        name: &str,
        size: usize,
        overflow: usize,
        timeout: Duration,
    ) -> Result<PoolConfig, ConfigError> {
        let route = self.tasks_route()?;
        let (setting, url) = match TASKS_DATABASE_URL.read(self) {
            Some(url) => (TASKS_DATABASE_URL.env, url),
            None => (
                table::DATABASE_URL.env,
                table::DATABASE_URL.read(self).unwrap_or_default(),
            ),
        };
        let connect = ConnectConfig::from_url_and_source(setting, &url, &route)?;
        let connect = name_connections(connect, application_name);
        // DB_POOL_SIZE, DB_MAX_OVERFLOW and DB_MIN_IDLE size the API pool; these are sized
        // by the worker.
        let config = PoolConfig::with_connect(connect, &route)?
            .pool_size(size)
            .max_overflow(overflow)
            .min_idle(0)
            .pool_timeout(timeout)
            .name(name);
        config.validate()?;
        Ok(config)
    }

    /// The worker: the library's reading of the `TASK_*` settings, with the service's
    /// concurrency, run timeout and listening route.
    pub fn worker(&self) -> Result<WorkerConfig, ConfigError> {
        let mut config = WorkerConfig::from_source(self)?
            .concurrency(self.assembly_workers()?)
            .run_timeout(Some(ASSEMBLY_TIMEOUT.read_duration(self)?));
        if let Some(url) = TASKS_LISTEN_URL.read(self) {
            // Straight to PostgreSQL, whatever DB_POOLER says of the other routes.
            let direct_route = Overlay {
                base: self,
                pooler: Some("none".into()),
            };
            let direct = ConnectConfig::from_url_and_source(TASKS_LISTEN_URL.env, &url, &direct_route)?;
            config = config.listen(Listen::Direct(Box::new(name_connections(
                direct,
                "holdfast-listen",
            ))));
        }
        config.validate()?;
        Ok(config)
    }

    /// The most connections one instance opens: the API pool's maximum, the assembly pool,
    /// the control pool's three and the listening connection.
    pub fn connection_budget(&self) -> Result<usize, ConfigError> {
        Ok(self.api_pool()?.max_size() + self.work_pool()?.max_size() + self.control_pool()?.max_size() + 1)
    }

    /// The settings of the tasks route: `TASKS_DB_POOLER` in place of `DB_POOLER` (by
    /// default `DB_POOLER` without a route of its own, `none` with one).
    fn tasks_route(&self) -> Result<Overlay<'_>, ConfigError> {
        let pooler = if self.values.contains_key(TASKS_DB_POOLER.env) {
            Some(TASKS_DB_POOLER.read(self)?.to_string())
        } else if self.has_tasks_route() {
            Some("none".to_string())
        } else {
            None
        };
        Ok(Overlay { base: self, pooler })
    }
}

/// The role name of a connection, when neither its URL nor `DB_APPLICATION_NAME` gave one.
fn name_connections(config: ConnectConfig, application_name: &str) -> ConnectConfig {
    if config.get_application_name() == DEFAULT_APPLICATION_NAME {
        config.application_name(application_name)
    } else {
        config
    }
}

/// The service's settings with `DB_POOLER` replaced (the tasks route's pooler).
struct Overlay<'a> {
    base: &'a ServeArgs,
    pooler: Option<String>,
}

impl Source for Overlay<'_> {
    fn get(&self, name: &str) -> Option<String> {
        if name == table::POOLER.env {
            if let Some(pooler) = &self.pooler {
                return Some(pooler.clone());
            }
        }
        self.base.get(name)
    }
}

/// The command-line flag of a setting: its variable in lower case with dashes.
pub fn flag(env: &str) -> String {
    env.to_ascii_lowercase().replace('_', "-")
}

fn help(setting: &dyn Describe) -> String {
    let unit = match setting.unit() {
        "" => String::new(),
        unit => format!(" {unit}"),
    };
    format!(
        "{} [default: {}{unit}; accepted: {}]",
        setting.doc(),
        setting.default_text(),
        setting.accepted()
    )
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut args = ServeArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        for setting in all_settings() {
            if let Some(value) = matches.get_one::<String>(setting.env()) {
                self.values.insert(setting.env().to_string(), value.clone());
            }
        }
        Ok(())
    }
}

impl clap::Args for ServeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let args = all_settings().into_iter().map(|setting| {
            clap::Arg::new(setting.env())
                .long(flag(setting.env()))
                .env(setting.env())
                .value_name(setting.env())
                .hide_env_values(setting.secret())
                .help(help(setting))
        });
        cmd.args(args).after_help(
            "Each setting is also read from its variable. DB_POOL_SIZE, DB_MAX_OVERFLOW and \
             DB_MIN_IDLE size the API pool; the assembly pool has one connection per \
             ASSEMBLY_WORKERS and the task pool three. Every other DB_* setting applies to all \
             three pools. DB_POOL_NAME, DB_POOL_TIMEOUT, TASK_CONCURRENCY and \
             TASK_RUN_TIMEOUT_MS are set by the service and refused.",
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        ServeArgs::augment_args(cmd)
    }
}

/// The Markdown table of the service's own settings, as the root README shows it.
pub fn service_table() -> String {
    lib::markdown_table(SERVICE)
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
    fn the_readme_table_is_the_services_settings() {
        let readme = include_str!("../../../../README.md");
        if let Err(e) = lib::check_readme_table(readme, "service", &service_table()) {
            panic!("{e}");
        }
    }

    #[test]
    fn flags_and_set_give_the_same_settings() {
        let parsed = Cli::try_parse_from([
            "holdfast",
            "--database-url",
            "postgres://h/d",
            "--db-pool-size",
            "8",
            "--assembly-workers",
            "3",
            "--task-lease-ms",
            "6000",
        ])
        .expect("parse")
        .serve;
        let set = ServeArgs::for_database("postgres://h/d")
            .set(&table::POOL_SIZE, 8)
            .set(&ASSEMBLY_WORKERS, 3)
            .set(&holdfast::tasks::settings::LEASE, 6000);
        assert_eq!(parsed, set);
        assert_eq!(set.api_pool().expect("api").pool_size, 8);
        assert_eq!(set.work_pool().expect("work").pool_size, 3);
        assert_eq!(set.worker().expect("worker").lease, Duration::from_secs(6));
    }

    #[test]
    fn the_library_settings_reach_every_pool() {
        let args = ServeArgs::for_database("postgres://h/d")
            .set(&table::PRE_PING, "always")
            .set(&table::STATEMENT_TIMEOUT, 1234)
            .set(&table::UNANSWERED_TIMEOUT, 5000);
        for pool in [args.api_pool(), args.work_pool(), args.control_pool()] {
            let pool = pool.expect("pool");
            assert_eq!(pool.pre_ping, holdfast::pool::PrePing::Always, "{}", pool.name);
            assert_eq!(
                pool.connect.get_statement_timeout(),
                Some(Duration::from_millis(1234))
            );
        }
        let err = args
            .clone()
            .set(&table::POOL_SIZE, "abc")
            .api_pool()
            .expect_err("abc")
            .to_string();
        assert!(err.starts_with("DB_POOL_SIZE: invalid value \"abc\""), "{err}");
    }

    #[test]
    fn the_tasks_route_has_its_own_url_and_pooler() {
        let args = ServeArgs::for_database("postgres://h/d").set(&table::POOLER, "transaction");
        assert!(args
            .control_pool()
            .expect("pool")
            .connect
            .get_pooler()
            .is_transaction());
        let routed = args.clone().set(&TASKS_DATABASE_URL, "postgres://direct/d");
        let control = routed.control_pool().expect("pool");
        assert!(
            !control.connect.get_pooler().is_transaction(),
            "none with a route of its own"
        );
        assert_eq!(
            format!("{:?}", control.connect.pg().get_hosts()),
            "[Tcp(\"direct\")]"
        );
        assert!(routed
            .api_pool()
            .expect("api")
            .connect
            .get_pooler()
            .is_transaction());
        let pooled = routed.set(&TASKS_DB_POOLER, "transaction");
        assert!(pooled
            .control_pool()
            .expect("pool")
            .connect
            .get_pooler()
            .is_transaction());
    }

    #[test]
    fn the_listen_url_is_direct_whatever_db_pooler_says() {
        let args = ServeArgs::for_database("postgres://bouncer/d")
            .set(&table::POOLER, "transaction")
            .set(&TASKS_LISTEN_URL, "postgres://direct/d");
        match args.worker().expect("worker").listen {
            Listen::Direct(direct) => assert!(!direct.get_pooler().is_transaction()),
            other => panic!("expected a direct listen route, got {other:?}"),
        }
    }

    #[test]
    fn overridden_settings_are_refused_by_name() {
        let err = ServeArgs::refuse_overridden(&[("DB_POOL_NAME", "x")])
            .expect_err("refused")
            .to_string();
        assert!(err.starts_with("DB_POOL_NAME: invalid value \"x\""), "{err}");
        assert!(ServeArgs::refuse_overridden(&[("DB_POOL_SIZE", "3")]).is_ok());
        let flags: Vec<String> = all_settings().iter().map(|s| s.env().to_string()).collect();
        for (env, _) in OVERRIDDEN {
            assert!(!flags.iter().any(|f| f == env), "{env} has no flag");
        }
    }

    #[test]
    fn the_budget_counts_every_connection() {
        let args = ServeArgs::for_database("postgres://h/d");
        assert_eq!(args.connection_budget().expect("budget"), 5 + 10 + 2 + 3 + 1);
    }

    #[test]
    fn secrets_are_not_in_debug() {
        let args = ServeArgs::for_database("postgres://u:hunter2@h/d").set(&table::PASSWORD, "pw-s3cret");
        let debug = format!("{args:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("pw-s3cret"),
            "{debug}"
        );
    }
}
