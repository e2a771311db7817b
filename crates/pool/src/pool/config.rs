//! Pool settings: a builder, and `from_env()` with the incident's own variables and values as
//! defaults. Everything is checked before the pool starts.

use std::time::Duration;

use crate::connect::{ConnectConfig, Pooler};
use crate::error::ConfigError;
use crate::settings::{self as env, ProcessEnv, Source};

/// When a connection taken from the idle set is pinged before it is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrePing {
    /// Only when the server has been silent on it for longer than the pre-ping window (or it
    /// predates a disconnect): the default. A connection the tap saw answer moments ago is
    /// not asked again.
    #[default]
    Auto,
    /// Before every checkout (one extra round trip each time).
    Always,
    /// Never; rely on the wire state alone.
    Never,
}

/// What `Auto` adds to the start-up `statement_timeout`: room for the server's own
/// cancellation and its error to arrive, on a loaded machine.
pub const AUTO_GRACE: Duration = Duration::from_secs(30);

/// When the pool closes a connection that has requests in flight and has received nothing
/// for a while (`DB_UNANSWERED_TIMEOUT_MS`: `auto`, `0` for off, or milliseconds).
///
/// A statement running under `statement_timeout` is answered (rows or the timeout's error)
/// within it, so silence well past it means the request never reached a server that can
/// answer. Checked once a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnansweredTimeout {
    /// The `statement_timeout` sent at start-up plus 30 s (the default). Off when none is
    /// sent: the server's own may be unbounded, and behind a transaction-mode pooler it is
    /// set only inside holdfast-tx transactions, so other statements may legitimately run
    /// longer.
    #[default]
    Auto,
    /// Never close a connection for silence.
    Off,
    /// After this long; it must exceed the start-up `statement_timeout`, if any. A session
    /// that raises its own `statement_timeout` (`SET statement_timeout = ...`) beyond this
    /// bound will have its long statements cut off: turn the bound off or raise it too.
    After(Duration),
}

impl UnansweredTimeout {
    /// The bound this setting gives for `config`'s connections, if any.
    pub fn resolve(self, config: &PoolConfig) -> Option<Duration> {
        match self {
            UnansweredTimeout::Off => None,
            UnansweredTimeout::After(bound) => Some(bound),
            UnansweredTimeout::Auto => start_up_statement_timeout(config).map(|t| t + AUTO_GRACE),
        }
    }
}

/// The `statement_timeout` every statement on the pool's connections runs under, if the
/// pool sets one at start-up (it does not behind a transaction-mode pooler).
pub(crate) fn start_up_statement_timeout(config: &PoolConfig) -> Option<Duration> {
    if config.connect.get_pooler().is_transaction() {
        return None;
    }
    config.connect.get_statement_timeout()
}

/// Everything a [`Pool`](crate::Pool) needs. Build with [`PoolConfig::new`] and the setters,
/// or [`PoolConfig::from_env`].
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// How to open a connection.
    pub connect: ConnectConfig,
    /// Connections kept open when idle (`DB_POOL_SIZE`, default 5).
    pub pool_size: usize,
    /// Extra connections allowed under load, closed when they come back to a full idle set
    /// (`DB_MAX_OVERFLOW`, default 10).
    pub max_overflow: usize,
    /// Connections older than this (plus 0 to 5% jitter) are replaced; `None` keeps them
    /// (`DB_POOL_RECYCLE` seconds, default 300, 0 = never).
    pub recycle: Option<Duration>,
    /// How long `get()` waits for a connection (`DB_POOL_TIMEOUT` seconds, default 30).
    pub pool_timeout: Duration,
    /// Pre-ping policy (`DB_PRE_PING`: auto, always, never; default auto).
    pub pre_ping: PrePing,
    /// Under `PrePing::Auto`, ping only when the server was silent longer than this
    /// (`DB_PRE_PING_WINDOW_MS`, default 500).
    pub pre_ping_window: Duration,
    /// Bound on one ping (`DB_PING_TIMEOUT_MS`, default 2000).
    pub ping_timeout: Duration,
    /// Idle connections above `min_idle` are closed after this long unused; `None` keeps them
    /// (`DB_IDLE_TIMEOUT` seconds, default 600, 0 = never).
    pub idle_timeout: Option<Duration>,
    /// Idle connections kept open and warm (`DB_MIN_IDLE`, default 0, at most `pool_size`);
    /// the warm-up opens connections only while fewer than `pool_size` are open.
    pub min_idle: usize,
    /// Connects in progress at once, at most (`DB_MAX_CONNECTING`, default 2).
    pub max_connecting: usize,
    /// Bound on the ROLLBACK (or reset query) of a connection returned dirty, and on waiting
    /// for requests still in flight (`DB_RESET_TIMEOUT_MS`, default 5000).
    pub reset_timeout: Duration,
    /// Run on every returned connection outside a transaction, for example `DISCARD ALL`
    /// (`DB_RESET_QUERY`, default none).
    pub reset_query: Option<String>,
    /// A connection held longer than this is logged as a possible leak, with the place it
    /// was taken; `None` turns detection off (`DB_LEAK_THRESHOLD_MS`, default 0 = off).
    /// Connections serving [`Pool::query`](crate::Pool::query) are the pool's own and are
    /// never reported.
    pub leak_threshold: Option<Duration>,
    /// Idle connections are pinged (jittered) when silent this long, so that firewalls and
    /// servers do not drop them unseen; `None` turns it off (`DB_KEEPALIVE_INTERVAL` seconds,
    /// default 120, 0 = off).
    pub keepalive_interval: Option<Duration>,
    /// Longest pause between reconnect attempts while the database is down
    /// (`DB_RECONNECT_BACKOFF_MAX_MS`, default 2000).
    pub reconnect_backoff_max: Duration,
    /// Bound on waiting for connections in use when the pool closes
    /// (`DB_CLOSE_TIMEOUT_MS`, default 10000).
    pub close_timeout: Duration,
    /// Statements in flight at once on one connection shared by [`Pool::query`] and
    /// [`Pool::execute`]; more callers take another connection. 1 gives every statement a
    /// connection of its own (`DB_PIPELINE_DEPTH`, default 8).
    ///
    /// [`Pool::query`]: crate::Pool::query
    /// [`Pool::execute`]: crate::Pool::execute
    pub pipeline_depth: usize,
    /// A shared connection none of whose statements has finished for this long takes no
    /// more callers while the pool has room for another: callers do not queue behind a
    /// statement that is stuck or slow (`DB_PIPELINE_STALL_MS`, default 10).
    pub pipeline_stall: Duration,
    /// A connection with requests in flight that has received nothing for this long is
    /// closed, and its callers get an error instead of waiting forever for a reply that
    /// will not come (`DB_UNANSWERED_TIMEOUT_MS`: `auto`, the default, is the start-up
    /// `statement_timeout` plus 30 s, or off without one; `0` is off).
    pub unanswered_timeout: UnansweredTimeout,
    /// Name used in logs and metric labels (`DB_POOL_NAME`, default `default`).
    pub name: String,
}

/// Largest accepted `DB_POOL_SIZE` and `DB_MAX_OVERFLOW`: beyond what any PostgreSQL server
/// accepts as `max_connections`, so larger values are mistakes.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Reads `DB_UNANSWERED_TIMEOUT_MS`: `auto` (or unset), `0` for off, or milliseconds.
fn unanswered_from_env(source: &dyn Source) -> Result<UnansweredTimeout, ConfigError> {
    const NAME: &str = "DB_UNANSWERED_TIMEOUT_MS";
    const MAX_MS: u64 = 86_400_000;
    let Some(raw) = source.get(NAME).filter(|v| !v.trim().is_empty()) else {
        return Ok(UnansweredTimeout::Auto);
    };
    let value = raw.trim();
    if value.eq_ignore_ascii_case("auto") {
        return Ok(UnansweredTimeout::Auto);
    }
    match value.parse::<u64>() {
        Ok(0) => Ok(UnansweredTimeout::Off),
        Ok(ms) if ms <= MAX_MS => Ok(UnansweredTimeout::After(Duration::from_millis(ms))),
        _ => Err(ConfigError::InvalidValue {
            setting: NAME.into(),
            value: raw.clone(),
            accepted: format!("auto, or a whole number of milliseconds from 0 to {MAX_MS} (0 turns it off)"),
        }),
    }
}

/// Largest accepted `DB_PIPELINE_DEPTH`.
const MAX_PIPELINE_DEPTH: usize = 1024;

impl PoolConfig {
    /// Defaults (the incident's values) for connections described by `connect`.
    pub fn new(connect: ConnectConfig) -> PoolConfig {
        PoolConfig {
            connect,
            pool_size: 5,
            max_overflow: 10,
            recycle: Some(Duration::from_secs(300)),
            pool_timeout: Duration::from_secs(30),
            pre_ping: PrePing::Auto,
            pre_ping_window: Duration::from_millis(500),
            ping_timeout: Duration::from_secs(2),
            idle_timeout: Some(Duration::from_secs(600)),
            min_idle: 0,
            max_connecting: 2,
            reset_timeout: Duration::from_secs(5),
            reset_query: None,
            leak_threshold: None,
            keepalive_interval: Some(Duration::from_secs(120)),
            reconnect_backoff_max: Duration::from_secs(2),
            close_timeout: Duration::from_secs(10),
            pipeline_depth: 8,
            pipeline_stall: Duration::from_millis(10),
            unanswered_timeout: UnansweredTimeout::Auto,
            name: "default".to_string(),
        }
    }

    /// Parses `url` (a `postgres://` URL or key=value string) with default pool settings.
    pub fn from_url(url: &str) -> Result<PoolConfig, ConfigError> {
        Ok(PoolConfig::new(ConnectConfig::from_url(url)?))
    }

    /// Reads the process environment. See the crate README for every variable and default.
    pub fn from_env() -> Result<PoolConfig, ConfigError> {
        PoolConfig::from_source(&ProcessEnv)
    }

    /// Reads settings from `source` (the environment, or a fixed list in tests).
    pub fn from_source(source: &dyn Source) -> Result<PoolConfig, ConfigError> {
        let ms = Duration::from_millis(1);
        let s = Duration::from_secs(1);
        const DAY_S: u64 = 86_400;
        const DAY_MS: u64 = 86_400_000;
        let url = source
            .get("DATABASE_URL")
            .ok_or_else(|| ConfigError::InvalidValue {
                setting: "DATABASE_URL".into(),
                value: String::new(),
                accepted: "a postgres:// URL; the variable is not set".into(),
            })?;
        let mut connect = ConnectConfig::parse_setting("DATABASE_URL", &url)?;
        let defaults = PoolConfig::new(connect.clone());
        let connect_timeout = env::duration(
            source,
            "DB_CONNECT_TIMEOUT",
            crate::connect::DEFAULT_CONNECT_TIMEOUT,
            s,
            3600,
            false,
        )?;
        connect = connect
            .connect_timeout(connect_timeout.unwrap_or(defaults.connect.get_connect_timeout()))
            .statement_timeout(env::duration(
                source,
                "DB_STATEMENT_TIMEOUT_MS",
                Duration::from_millis(300_000),
                ms,
                DAY_MS,
                true,
            )?)
            .idle_in_transaction_session_timeout(env::duration(
                source,
                "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
                Duration::ZERO,
                ms,
                DAY_MS,
                true,
            )?)
            .lock_timeout(env::duration(
                source,
                "DB_LOCK_TIMEOUT_MS",
                Duration::ZERO,
                ms,
                DAY_MS,
                true,
            )?);
        connect = connect.pooler(
            match env::choice(source, "DB_POOLER", "none", &["none", "transaction"])? {
                "transaction" => Pooler::Transaction,
                _ => Pooler::None,
            },
        );
        connect = connect.apply_env(source)?;
        if let Some(name) = source.get("DB_APPLICATION_NAME").filter(|v| !v.is_empty()) {
            connect = connect.application_name(&name);
        }
        let max = MAX_CONNECTIONS as u64;
        let config = PoolConfig {
            connect,
            pool_size: env::integer(source, "DB_POOL_SIZE", 5, 1, max)? as usize,
            max_overflow: env::integer(source, "DB_MAX_OVERFLOW", 10, 0, max)? as usize,
            recycle: env::duration(
                source,
                "DB_POOL_RECYCLE",
                Duration::from_secs(300),
                s,
                7 * DAY_S,
                true,
            )?,
            pool_timeout: env::duration(
                source,
                "DB_POOL_TIMEOUT",
                Duration::from_secs(30),
                s,
                DAY_S,
                false,
            )?
            .unwrap_or(defaults.pool_timeout),
            pre_ping: match env::choice(source, "DB_PRE_PING", "auto", &["auto", "always", "never"])? {
                "always" => PrePing::Always,
                "never" => PrePing::Never,
                _ => PrePing::Auto,
            },
            pre_ping_window: env::duration(
                source,
                "DB_PRE_PING_WINDOW_MS",
                defaults.pre_ping_window,
                ms,
                DAY_MS,
                true,
            )?
            .unwrap_or(Duration::ZERO),
            ping_timeout: env::duration(
                source,
                "DB_PING_TIMEOUT_MS",
                defaults.ping_timeout,
                ms,
                DAY_MS,
                false,
            )?
            .unwrap_or(defaults.ping_timeout),
            idle_timeout: env::duration(
                source,
                "DB_IDLE_TIMEOUT",
                Duration::from_secs(600),
                s,
                7 * DAY_S,
                true,
            )?,
            min_idle: env::integer(source, "DB_MIN_IDLE", 0, 0, max)? as usize,
            max_connecting: env::integer(source, "DB_MAX_CONNECTING", 2, 1, 1000)? as usize,
            reset_timeout: env::duration(
                source,
                "DB_RESET_TIMEOUT_MS",
                defaults.reset_timeout,
                ms,
                DAY_MS,
                false,
            )?
            .unwrap_or(defaults.reset_timeout),
            reset_query: source.get("DB_RESET_QUERY").filter(|q| !q.trim().is_empty()),
            leak_threshold: env::duration(source, "DB_LEAK_THRESHOLD_MS", Duration::ZERO, ms, DAY_MS, true)?,
            keepalive_interval: env::duration(
                source,
                "DB_KEEPALIVE_INTERVAL",
                Duration::from_secs(120),
                s,
                DAY_S,
                true,
            )?,
            reconnect_backoff_max: env::duration(
                source,
                "DB_RECONNECT_BACKOFF_MAX_MS",
                defaults.reconnect_backoff_max,
                ms,
                3_600_000,
                false,
            )?
            .unwrap_or(defaults.reconnect_backoff_max),
            close_timeout: env::duration(
                source,
                "DB_CLOSE_TIMEOUT_MS",
                defaults.close_timeout,
                ms,
                DAY_MS,
                false,
            )?
            .unwrap_or(defaults.close_timeout),
            pipeline_depth: env::integer(source, "DB_PIPELINE_DEPTH", 8, 1, MAX_PIPELINE_DEPTH as u64)?
                as usize,
            pipeline_stall: env::duration(
                source,
                "DB_PIPELINE_STALL_MS",
                defaults.pipeline_stall,
                ms,
                DAY_MS,
                false,
            )?
            .unwrap_or(defaults.pipeline_stall),
            unanswered_timeout: unanswered_from_env(source)?,
            name: source
                .get("DB_POOL_NAME")
                .filter(|v| !v.is_empty())
                .unwrap_or(defaults.name),
        };
        config.validate_as_env()
    }

    /// Connections kept when idle.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }

    /// Extra connections allowed under load.
    pub fn max_overflow(mut self, n: usize) -> Self {
        self.max_overflow = n;
        self
    }

    /// How long `get()` waits.
    pub fn pool_timeout(mut self, timeout: Duration) -> Self {
        self.pool_timeout = timeout;
        self
    }

    /// Replace connections older than this (`None`: never).
    pub fn recycle(mut self, age: Option<Duration>) -> Self {
        self.recycle = age;
        self
    }

    /// Pre-ping policy.
    pub fn pre_ping(mut self, policy: PrePing) -> Self {
        self.pre_ping = policy;
        self
    }

    /// Close idle connections above `min_idle` after this long (`None`: never).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Idle connections kept warm; the warm-up stays within `pool_size`.
    pub fn min_idle(mut self, n: usize) -> Self {
        self.min_idle = n;
        self
    }

    /// Connects in progress at once.
    pub fn max_connecting(mut self, n: usize) -> Self {
        self.max_connecting = n;
        self
    }

    /// Bound on resetting a returned connection.
    pub fn reset_timeout(mut self, timeout: Duration) -> Self {
        self.reset_timeout = timeout;
        self
    }

    /// Query run on returned connections outside a transaction.
    pub fn reset_query(mut self, query: Option<String>) -> Self {
        self.reset_query = query;
        self
    }

    /// Leak detection threshold (`None`: off).
    pub fn leak_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.leak_threshold = threshold;
        self
    }

    /// Keepalive pings of idle connections (`None`: off).
    pub fn keepalive_interval(mut self, interval: Option<Duration>) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// Longest pause between reconnect attempts.
    pub fn reconnect_backoff_max(mut self, max: Duration) -> Self {
        self.reconnect_backoff_max = max;
        self
    }

    /// Name in logs and metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Statements in flight at once on one shared connection ([`Pool::query`]); 1 turns
    /// sharing off.
    ///
    /// [`Pool::query`]: crate::Pool::query
    pub fn pipeline_depth(mut self, depth: usize) -> Self {
        self.pipeline_depth = depth;
        self
    }

    /// How long a shared connection may go without finishing a statement before it takes
    /// no more callers while the pool has room for another ([`Pool::query`]).
    ///
    /// [`Pool::query`]: crate::Pool::query
    pub fn pipeline_stall(mut self, stall: Duration) -> Self {
        self.pipeline_stall = stall;
        self
    }

    /// When a connection whose requests get no answer at all is closed.
    pub fn unanswered_timeout(mut self, timeout: UnansweredTimeout) -> Self {
        self.unanswered_timeout = timeout;
        self
    }

    /// Most connections open at once, counting those being opened.
    pub fn max_size(&self) -> usize {
        self.pool_size + self.max_overflow
    }

    /// Checks the settings against each other; [`Pool::new`](crate::Pool::new) calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check(false)
    }

    fn validate_as_env(self) -> Result<PoolConfig, ConfigError> {
        self.check(true)?;
        Ok(self)
    }

    fn check(&self, env_names: bool) -> Result<(), ConfigError> {
        let name = |env: &str, builder: &str| {
            if env_names {
                env.to_string()
            } else {
                builder.to_string()
            }
        };
        let invalid = |setting: String, value: String, accepted: String| {
            Err(ConfigError::InvalidValue {
                setting,
                value,
                accepted,
            })
        };
        let max = MAX_CONNECTIONS;
        if !(1..=max).contains(&self.pool_size) {
            return invalid(
                name("DB_POOL_SIZE", "pool_size"),
                self.pool_size.to_string(),
                format!("a whole number from 1 to {max}"),
            );
        }
        if self.max_overflow > max {
            return invalid(
                name("DB_MAX_OVERFLOW", "max_overflow"),
                self.max_overflow.to_string(),
                format!("a whole number from 0 to {max}"),
            );
        }
        if self.min_idle > self.pool_size {
            return invalid(
                name("DB_MIN_IDLE", "min_idle"),
                self.min_idle.to_string(),
                format!("at most the pool size ({})", self.pool_size),
            );
        }
        if !(1..=MAX_PIPELINE_DEPTH).contains(&self.pipeline_depth) {
            return invalid(
                name("DB_PIPELINE_DEPTH", "pipeline_depth"),
                self.pipeline_depth.to_string(),
                format!("a whole number from 1 to {MAX_PIPELINE_DEPTH}"),
            );
        }
        if self.max_connecting == 0 {
            return invalid(
                name("DB_MAX_CONNECTING", "max_connecting"),
                "0".into(),
                "a whole number from 1 to 1000".into(),
            );
        }
        for (env, builder, value) in [
            ("DB_POOL_TIMEOUT", "pool_timeout", self.pool_timeout),
            ("DB_PING_TIMEOUT_MS", "ping_timeout", self.ping_timeout),
            ("DB_RESET_TIMEOUT_MS", "reset_timeout", self.reset_timeout),
            (
                "DB_RECONNECT_BACKOFF_MAX_MS",
                "reconnect_backoff_max",
                self.reconnect_backoff_max,
            ),
            ("DB_CLOSE_TIMEOUT_MS", "close_timeout", self.close_timeout),
            ("DB_PIPELINE_STALL_MS", "pipeline_stall", self.pipeline_stall),
        ] {
            if value.is_zero() {
                return invalid(name(env, builder), "0".into(), "a duration above zero".into());
            }
        }
        if let UnansweredTimeout::After(bound) = self.unanswered_timeout {
            let statement = start_up_statement_timeout(self);
            if bound.is_zero() || statement.is_some_and(|t| bound <= t) {
                return invalid(
                    name("DB_UNANSWERED_TIMEOUT_MS", "unanswered_timeout"),
                    format!("{}", bound.as_millis()),
                    match statement {
                        Some(t) => format!(
                            "auto, 0 (off), or more milliseconds than the statement timeout ({}, DB_STATEMENT_TIMEOUT_MS), which a statement may legitimately use",
                            t.as_millis()
                        ),
                        None => "auto, 0 (off), or a number of milliseconds above zero".into(),
                    },
                );
            }
        }
        if self.connect.get_pooler().is_transaction() {
            let behind = "behind a transaction-mode pooler (DB_POOLER=transaction)";
            if let Some(query) = &self.reset_query {
                return invalid(
                    name("DB_RESET_QUERY", "reset_query"),
                    query.clone(),
                    format!("none {behind}: it would run on whichever server connection the pooler picks, not on the one that was used"),
                );
            }
            if let Some(options) = self.connect.pg().get_options() {
                return invalid(
                    name("DATABASE_URL", "connect"),
                    format!("options={options}"),
                    format!("no start-up options {behind}, which rejects them; holdfast applies DB_STATEMENT_TIMEOUT_MS and the other timeouts with SET LOCAL in each transaction, and ALTER ROLE ... SET covers the rest"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_defaults_from_a_bare_environment() {
        let c = PoolConfig::from_source(&[("DATABASE_URL", "postgres://app@db:5432/app")]).expect("config");
        assert_eq!((c.pool_size, c.max_overflow), (5, 10));
        assert_eq!(c.recycle, Some(Duration::from_secs(300)));
        assert_eq!(c.pool_timeout, Duration::from_secs(30));
        assert_eq!(c.connect.get_connect_timeout(), Duration::from_secs(10));
        assert_eq!(
            c.connect.get_statement_timeout(),
            Some(Duration::from_millis(300_000))
        );
        assert_eq!(c.pre_ping, PrePing::Auto);
        assert_eq!(c.max_size(), 15);
    }

    #[test]
    fn every_variable_is_read() {
        let c = PoolConfig::from_source(&[
            ("DATABASE_URL", "postgres://app@db/app"),
            ("DB_POOL_SIZE", "8"),
            ("DB_MAX_OVERFLOW", "0"),
            ("DB_POOL_RECYCLE", "0"),
            ("DB_POOL_TIMEOUT", "3"),
            ("DB_CONNECT_TIMEOUT", "4"),
            ("DB_STATEMENT_TIMEOUT_MS", "0"),
            ("DB_PRE_PING", "never"),
            ("DB_IDLE_TIMEOUT", "9"),
            ("DB_LEAK_THRESHOLD_MS", "1500"),
            ("DB_MIN_IDLE", "2"),
            ("DB_MAX_CONNECTING", "3"),
            ("DB_RESET_QUERY", "DISCARD ALL"),
            ("DB_KEEPALIVE_INTERVAL", "0"),
            ("DB_APPLICATION_NAME", "api"),
            ("DB_PIPELINE_DEPTH", "32"),
            ("DB_PIPELINE_STALL_MS", "25"),
        ])
        .expect("config");
        assert_eq!(c.pipeline_depth, 32);
        assert_eq!(c.pipeline_stall, Duration::from_millis(25));
        assert_eq!(
            (c.pool_size, c.max_overflow, c.min_idle, c.max_connecting),
            (8, 0, 2, 3)
        );
        assert_eq!(c.recycle, None);
        assert_eq!(c.pool_timeout, Duration::from_secs(3));
        assert_eq!(c.connect.get_connect_timeout(), Duration::from_secs(4));
        assert_eq!(c.connect.get_statement_timeout(), None);
        assert_eq!(c.pre_ping, PrePing::Never);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(9)));
        assert_eq!(c.leak_threshold, Some(Duration::from_millis(1500)));
        assert_eq!(c.reset_query.as_deref(), Some("DISCARD ALL"));
        assert_eq!(c.keepalive_interval, None);
        assert_eq!(c.connect.get_application_name(), "api");
    }

    #[test]
    fn bad_values_name_variable_value_and_what_is_accepted() {
        let url = ("DATABASE_URL", "postgres://app:pw@db/app");
        for (var, value, accepted) in [
            ("DB_POOL_SIZE", "abc", "a whole number from 1 to 10000"),
            ("DB_POOL_SIZE", "-1", "a whole number from 1 to 10000"),
            ("DB_POOL_SIZE", "0", "a whole number from 1 to 10000"),
            ("DB_POOL_SIZE", "1000000", "a whole number from 1 to 10000"),
            ("DB_MAX_OVERFLOW", "-3", "a whole number from 0 to 10000"),
            ("DB_POOL_TIMEOUT", "0", "seconds from 1 to 86400"),
            ("DB_POOL_RECYCLE", "soon", "(0 turns it off)"),
            ("DB_PRE_PING", "maybe", "one of auto, always, never"),
            ("DB_MIN_IDLE", "6", "at most the pool size (5)"),
            ("DB_PIPELINE_DEPTH", "0", "a whole number from 1 to 1024"),
            ("DB_PIPELINE_DEPTH", "deep", "a whole number from 1 to 1024"),
        ] {
            let err = PoolConfig::from_source(&[url, (var, value)])
                .expect_err(var)
                .to_string();
            assert!(
                err.starts_with(&format!("{var}: invalid value \"{value}\"")),
                "{err}"
            );
            assert!(err.contains(accepted), "{err}");
            assert!(!err.contains("pw"), "{err}");
        }
        let err = PoolConfig::from_source(&[("DATABASE_URL", "postgres://u:secretpw@h:99999/d")])
            .expect_err("bad port")
            .to_string();
        assert!(err.starts_with("DATABASE_URL: invalid connection URL"), "{err}");
        assert!(!err.contains("secretpw"), "{err}");
        let err = PoolConfig::from_source(&[("DB_POOL_SIZE", "5")])
            .expect_err("no url")
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn the_unanswered_bound_follows_the_statement_timeout_unless_set() {
        let url = ("DATABASE_URL", "postgres://app@db/app");
        let bound = |vars: &[(&str, &str)]| {
            let mut all = vec![url];
            all.extend_from_slice(vars);
            let source: Vec<(String, String)> =
                all.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let c = PoolConfig::from_source(&Pairs(source)).expect("config");
            c.unanswered_timeout.resolve(&c)
        };
        let secs = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(bound(&[]), secs(330), "auto: 300 s statement timeout + 30 s");
        assert_eq!(bound(&[("DB_UNANSWERED_TIMEOUT_MS", "auto")]), secs(330));
        assert_eq!(bound(&[("DB_STATEMENT_TIMEOUT_MS", "2000")]), secs(32));
        assert_eq!(
            bound(&[("DB_STATEMENT_TIMEOUT_MS", "0")]),
            None,
            "server's own: unknown"
        );
        assert_eq!(
            bound(&[("DB_POOLER", "transaction")]),
            None,
            "only inside holdfast-tx there"
        );
        assert_eq!(bound(&[("DB_UNANSWERED_TIMEOUT_MS", "0")]), None);
        assert_eq!(bound(&[("DB_UNANSWERED_TIMEOUT_MS", "400000")]), secs(400));
        assert_eq!(
            bound(&[
                ("DB_STATEMENT_TIMEOUT_MS", "0"),
                ("DB_UNANSWERED_TIMEOUT_MS", "5000")
            ]),
            secs(5)
        );
        for (value, accepted) in [
            (
                "soon",
                "auto, or a whole number of milliseconds from 0 to 86400000",
            ),
            ("-5", "auto, or a whole number of milliseconds from 0 to 86400000"),
            ("300000", "more milliseconds than the statement timeout (300000"),
            ("1000", "more milliseconds than the statement timeout (300000"),
        ] {
            let err = PoolConfig::from_source(&[url, ("DB_UNANSWERED_TIMEOUT_MS", value)])
                .expect_err(value)
                .to_string();
            assert!(
                err.starts_with(&format!("DB_UNANSWERED_TIMEOUT_MS: invalid value \"{value}\"")),
                "{err}"
            );
            assert!(err.contains(accepted), "{err}");
        }
        let c = PoolConfig::from_url("postgres://u@h/d").expect("url");
        let c = c.unanswered_timeout(UnansweredTimeout::After(Duration::ZERO));
        assert!(c.validate().is_err(), "zero is Off, not a bound");
    }

    /// Settings from owned pairs.
    struct Pairs(Vec<(String, String)>);

    impl Source for Pairs {
        fn get(&self, name: &str) -> Option<String> {
            self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn a_transaction_pooler_refuses_what_cannot_work_through_it() {
        let c = PoolConfig::from_source(&[
            ("DATABASE_URL", "postgres://app@bouncer:6432/app"),
            ("DB_POOLER", "transaction"),
        ])
        .expect("config");
        assert_eq!(c.connect.get_pooler(), Pooler::Transaction);
        assert!(
            c.connect
                .local_settings_sql()
                .is_some_and(|s| s.contains("statement_timeout = 300000")),
            "the default statement timeout still applies, per transaction"
        );
        let err = PoolConfig::from_source(&[
            ("DATABASE_URL", "postgres://app@bouncer/app"),
            ("DB_POOLER", "transaction"),
            ("DB_RESET_QUERY", "DISCARD ALL"),
        ])
        .expect_err("reset query")
        .to_string();
        assert!(
            err.starts_with("DB_RESET_QUERY: invalid value \"DISCARD ALL\""),
            "{err}"
        );
        assert!(err.contains("DB_POOLER=transaction"), "{err}");
        let err = PoolConfig::from_source(&[
            (
                "DATABASE_URL",
                "postgres://app@bouncer/app?options=-c%20search_path%3Dx",
            ),
            ("DB_POOLER", "transaction"),
        ])
        .expect_err("options")
        .to_string();
        assert!(
            err.starts_with("DATABASE_URL: invalid value \"options=-c search_path=x\""),
            "{err}"
        );
        let err = PoolConfig::from_source(&[
            ("DATABASE_URL", "postgres://app@bouncer/app"),
            ("DB_POOLER", "statement"),
        ])
        .expect_err("unknown mode")
        .to_string();
        assert!(err.contains("one of none, transaction"), "{err}");
    }

    #[test]
    fn builder_values_are_checked_too() {
        let c = PoolConfig::from_url("postgres://u@h/d").expect("url");
        assert!(c.clone().pool_size(0).validate().is_err());
        let err = c
            .clone()
            .min_idle(9)
            .validate()
            .expect_err("min_idle")
            .to_string();
        assert!(err.starts_with("min_idle: invalid value \"9\""), "{err}");
        assert!(c.pool_timeout(Duration::ZERO).validate().is_err());
    }
}
