//! Pool settings: a builder with a setter per setting, and `from_env()`; defaults, ranges
//! and variables come from [`settings::table`](crate::settings::table). Everything is
//! checked before the pool starts.

use std::time::Duration;

use crate::connect::ConnectConfig;
use crate::error::ConfigError;
use crate::settings::{table, AutoValue, Count, Describe, ProcessEnv, Source};

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

/// Everything a [`Pool`](crate::Pool) needs. Build it with [`PoolConfig::new`] (or
/// [`from_url`](Self::from_url)) and the setters, or read it with
/// [`from_env`](Self::from_env); [`Pool::new`](crate::Pool::new) checks it. Each field's
/// environment variable, default and accepted values are in [`settings::table`].
///
/// [`settings::table`]: crate::settings::table
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolConfig {
    /// How to open a connection.
    pub connect: ConnectConfig,
    /// Connections kept open when idle (`DB_POOL_SIZE`).
    pub pool_size: usize,
    /// Extra connections allowed under load, closed when they come back to a full idle set
    /// (`DB_MAX_OVERFLOW`).
    pub max_overflow: usize,
    /// Connections older than this (plus 0 to 5% jitter) are replaced; `None` keeps them
    /// (`DB_POOL_RECYCLE`).
    pub recycle: Option<Duration>,
    /// How long `get()` waits for a connection (`DB_POOL_TIMEOUT`).
    pub pool_timeout: Duration,
    /// Pre-ping policy (`DB_PRE_PING`).
    pub pre_ping: PrePing,
    /// Under `PrePing::Auto`, ping only when the server was silent longer than this
    /// (`DB_PRE_PING_WINDOW_MS`).
    pub pre_ping_window: Duration,
    /// Bound on one ping (`DB_PING_TIMEOUT_MS`).
    pub ping_timeout: Duration,
    /// Callers allowed to wait for a connection at once; past that a new caller fails at
    /// once with `PoolError::Overloaded`; 0: no limit (`DB_MAX_WAITING`).
    pub max_waiting: usize,
    /// Idle connections above `min_idle` are closed after this long unused; `None` keeps them
    /// (`DB_IDLE_TIMEOUT`).
    pub idle_timeout: Option<Duration>,
    /// Idle connections kept open and warm, at most `pool_size`; the warm-up opens
    /// connections only while fewer than `pool_size` are open (`DB_MIN_IDLE`).
    pub min_idle: usize,
    /// Connects in progress at once, at most (`DB_MAX_CONNECTING`).
    pub max_connecting: usize,
    /// Bound on the ROLLBACK (or reset query) of a connection returned dirty, and on waiting
    /// for requests still in flight (`DB_RESET_TIMEOUT_MS`).
    pub reset_timeout: Duration,
    /// Run on every returned connection outside a transaction, for example `DISCARD ALL`
    /// (`DB_RESET_QUERY`).
    pub reset_query: Option<String>,
    /// A connection held longer than this is logged as a possible leak, with the place it
    /// was taken; `None` turns detection off (`DB_LEAK_THRESHOLD_MS`). Connections serving
    /// [`Pool::query`](crate::Pool::query) are the pool's own and are never reported.
    pub leak_threshold: Option<Duration>,
    /// Idle connections are pinged (jittered) when silent this long, so that firewalls and
    /// servers do not drop them unseen; `None` turns it off (`DB_KEEPALIVE_INTERVAL`).
    pub keepalive_interval: Option<Duration>,
    /// Longest pause between reconnect attempts while the database is down
    /// (`DB_RECONNECT_BACKOFF_MAX_MS`).
    pub reconnect_backoff_max: Duration,
    /// Bound on waiting for connections in use when the pool closes (`DB_CLOSE_TIMEOUT_MS`).
    pub close_timeout: Duration,
    /// Statements in flight at once on one connection shared by [`Pool::query`] and
    /// [`Pool::execute`]; more callers take another connection. 1 gives every statement a
    /// connection of its own (`DB_PIPELINE_DEPTH`).
    ///
    /// [`Pool::query`]: crate::Pool::query
    /// [`Pool::execute`]: crate::Pool::execute
    pub pipeline_depth: usize,
    /// Statements kept prepared per connection; past it the least recently used one is
    /// closed on the server (`DB_STATEMENT_CACHE_SIZE`).
    pub statement_cache_size: usize,
    /// A shared connection whose oldest unanswered statement has waited this long takes no
    /// more callers while the pool has room for another: callers do not queue long behind
    /// a statement that is stuck or slow, or on a connection that is behind
    /// (`DB_PIPELINE_STALL_MS`).
    pub pipeline_stall: Duration,
    /// Reads of [`Pool::query`] callers sharing a connection go to the server gathered, as
    /// one read-only transaction with one Sync (`DB_GATHER_READS`).
    ///
    /// [`Pool::query`]: crate::Pool::query
    pub gather_reads: bool,
    /// A connection with requests in flight that has received nothing for this long is
    /// closed, and its callers get an error instead of waiting forever for a reply that
    /// will not come (`DB_UNANSWERED_TIMEOUT_MS`).
    pub unanswered_timeout: UnansweredTimeout,
    /// A request unanswered this long makes the pool ask the server what its backend is
    /// doing, and close the connection if the request or its answer was lost; `None`: never
    /// (`DB_PROBE_AFTER_MS`).
    pub probe_after: Option<Duration>,
    /// Name used in logs and metric labels (`DB_POOL_NAME`).
    pub name: String,
    /// Run on each new connection before it is handed out (see
    /// [`after_connect`](Self::after_connect)).
    pub after_connect: Option<super::after_connect::AfterConnect>,
}

impl PoolConfig {
    /// The defaults of [`settings::table`](crate::settings::table) for connections described
    /// by `connect`.
    pub fn new(connect: ConnectConfig) -> PoolConfig {
        PoolConfig {
            connect,
            pool_size: table::POOL_SIZE.default_usize(),
            max_overflow: table::MAX_OVERFLOW.default_usize(),
            recycle: table::RECYCLE.default_value(),
            pool_timeout: table::POOL_TIMEOUT.default_duration(),
            pre_ping: PrePing::Auto,
            pre_ping_window: table::PRE_PING_WINDOW.default_duration(),
            ping_timeout: table::PING_TIMEOUT.default_duration(),
            idle_timeout: table::IDLE_TIMEOUT.default_value(),
            max_waiting: table::MAX_WAITING.default_usize(),
            min_idle: table::MIN_IDLE.default_usize(),
            max_connecting: table::MAX_CONNECTING.default_usize(),
            reset_timeout: table::RESET_TIMEOUT.default_duration(),
            reset_query: None,
            leak_threshold: table::LEAK_THRESHOLD.default_value(),
            keepalive_interval: table::KEEPALIVE_INTERVAL.default_value(),
            reconnect_backoff_max: table::RECONNECT_BACKOFF_MAX.default_duration(),
            close_timeout: table::CLOSE_TIMEOUT.default_duration(),
            pipeline_depth: table::PIPELINE_DEPTH.default_usize(),
            statement_cache_size: table::STATEMENT_CACHE_SIZE.default_usize(),
            pipeline_stall: table::PIPELINE_STALL.default_duration(),
            gather_reads: table::GATHER_READS.default == "on",
            unanswered_timeout: UnansweredTimeout::Auto,
            probe_after: table::PROBE_AFTER.default_value(),
            name: table::POOL_NAME.default.to_string(),
            after_connect: None,
        }
    }

    /// Parses `url` (a `postgres://` URL or key=value string) with default pool settings.
    pub fn from_url(url: &str) -> Result<PoolConfig, ConfigError> {
        Ok(PoolConfig::new(ConnectConfig::from_url(url)?))
    }

    /// Reads the process environment: `DATABASE_URL` and every variable of
    /// [`settings::table`](crate::settings::table).
    pub fn from_env() -> Result<PoolConfig, ConfigError> {
        PoolConfig::from_source(&ProcessEnv)
    }

    /// Reads settings from `source` (the environment, or a fixed list in tests).
    pub fn from_source(source: &dyn Source) -> Result<PoolConfig, ConfigError> {
        PoolConfig::with_connect(ConnectConfig::from_source(source)?, source)
    }

    /// The pool settings of `source` for connections described by `connect` (for a URL
    /// that comes from elsewhere, read with
    /// [`ConnectConfig::from_url_and_source`](crate::ConnectConfig::from_url_and_source)).
    pub fn with_connect(connect: ConnectConfig, source: &dyn Source) -> Result<PoolConfig, ConfigError> {
        let count = |setting: &Count| setting.read(source).map(|n| n as usize);
        let config = PoolConfig {
            connect,
            pool_size: count(&table::POOL_SIZE)?,
            max_overflow: count(&table::MAX_OVERFLOW)?,
            recycle: table::RECYCLE.read(source)?,
            pool_timeout: table::POOL_TIMEOUT.read_duration(source)?,
            pre_ping: match table::PRE_PING.read(source)? {
                "always" => PrePing::Always,
                "never" => PrePing::Never,
                _ => PrePing::Auto,
            },
            pre_ping_window: table::PRE_PING_WINDOW.read_duration(source)?,
            ping_timeout: table::PING_TIMEOUT.read_duration(source)?,
            idle_timeout: table::IDLE_TIMEOUT.read(source)?,
            max_waiting: count(&table::MAX_WAITING)?,
            min_idle: count(&table::MIN_IDLE)?,
            max_connecting: count(&table::MAX_CONNECTING)?,
            reset_timeout: table::RESET_TIMEOUT.read_duration(source)?,
            reset_query: table::RESET_QUERY.read(source),
            leak_threshold: table::LEAK_THRESHOLD.read(source)?,
            keepalive_interval: table::KEEPALIVE_INTERVAL.read(source)?,
            reconnect_backoff_max: table::RECONNECT_BACKOFF_MAX.read_duration(source)?,
            close_timeout: table::CLOSE_TIMEOUT.read_duration(source)?,
            pipeline_depth: count(&table::PIPELINE_DEPTH)?,
            statement_cache_size: count(&table::STATEMENT_CACHE_SIZE)?,
            pipeline_stall: table::PIPELINE_STALL.read_duration(source)?,
            gather_reads: table::GATHER_READS.read(source)? == "on",
            probe_after: table::PROBE_AFTER.read(source)?,
            unanswered_timeout: match table::UNANSWERED_TIMEOUT.read(source)? {
                AutoValue::Auto => UnansweredTimeout::Auto,
                AutoValue::Off => UnansweredTimeout::Off,
                AutoValue::Set(bound) => UnansweredTimeout::After(bound),
            },
            name: table::POOL_NAME.read_or_default(source),
            after_connect: None,
        };
        config.check(Naming::Env)?;
        Ok(config)
    }

    /// Connections kept open when idle. Defaults to 5.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }

    /// Extra connections allowed under load. Defaults to 10.
    pub fn max_overflow(mut self, n: usize) -> Self {
        self.max_overflow = n;
        self
    }

    /// Replace connections older than this (`None`: never). Defaults to 300 s.
    pub fn recycle(mut self, age: Option<Duration>) -> Self {
        self.recycle = age;
        self
    }

    /// How long `get()` waits. Defaults to 30 s.
    pub fn pool_timeout(mut self, timeout: Duration) -> Self {
        self.pool_timeout = timeout;
        self
    }

    /// Pre-ping policy. Defaults to [`PrePing::Auto`].
    pub fn pre_ping(mut self, policy: PrePing) -> Self {
        self.pre_ping = policy;
        self
    }

    /// Under [`PrePing::Auto`], ping connections the server was silent on for longer than
    /// this. Defaults to 500 ms.
    pub fn pre_ping_window(mut self, window: Duration) -> Self {
        self.pre_ping_window = window;
        self
    }

    /// Bound on one ping. Defaults to 2000 ms.
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// Close idle connections above `min_idle` after this long (`None`: never). Defaults to
    /// 600 s.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Callers allowed to wait at once; past that a new caller fails at once with
    /// `PoolError::Overloaded` (0: no limit). Defaults to 0.
    pub fn max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = n;
        self
    }

    /// Idle connections kept warm; the warm-up stays within `pool_size`. Defaults to 0.
    pub fn min_idle(mut self, n: usize) -> Self {
        self.min_idle = n;
        self
    }

    /// Connects in progress at once. Defaults to 2.
    pub fn max_connecting(mut self, n: usize) -> Self {
        self.max_connecting = n;
        self
    }

    /// Bound on resetting a connection returned dirty. Defaults to 5000 ms.
    pub fn reset_timeout(mut self, timeout: Duration) -> Self {
        self.reset_timeout = timeout;
        self
    }

    /// Run on every returned connection outside a transaction (for example `DISCARD ALL`).
    /// Defaults to none.
    pub fn reset_query(mut self, query: Option<String>) -> Self {
        self.reset_query = query;
        self
    }

    /// Warn about connections held longer than this (`None`: off). Defaults to off.
    pub fn leak_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.leak_threshold = threshold;
        self
    }

    /// Ping idle connections the server has been silent on this long (`None`: off).
    /// Defaults to 120 s.
    pub fn keepalive_interval(mut self, interval: Option<Duration>) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// Longest pause between reconnect attempts. Defaults to 2000 ms.
    pub fn reconnect_backoff_max(mut self, max: Duration) -> Self {
        self.reconnect_backoff_max = max;
        self
    }

    /// How long `close()` waits for connections in use. Defaults to 10000 ms.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Statements in flight at once on one shared connection ([`Pool::query`]); 1 turns
    /// sharing off. Defaults to 256: how deep a lane gets is bounded in time by
    /// [`pipeline_stall`](Self::pipeline_stall) first.
    ///
    /// [`Pool::query`]: crate::Pool::query
    pub fn pipeline_depth(mut self, depth: usize) -> Self {
        self.pipeline_depth = depth;
        self
    }

    /// Runs `hook` on each new connection before the pool hands it out: `SET search_path`,
    /// `SET ROLE`, loading types. A hook that fails (or takes longer than `connect_timeout`)
    /// discards the connection; the connect counts as failed with the hook's error as its
    /// cause, logged and counted (`holdfast_pool_after_connect_failures_total`). Settings a
    /// reset query (`DISCARD ALL`) undoes are lost at the next return: set them with the
    /// role or database (`ALTER ROLE ... SET`), or leave `reset_query` unset. Defaults to none.
    ///
    /// ```no_run
    /// # use holdfast::pool::{ConnectConfig, PoolConfig};
    /// let config = PoolConfig::new(ConnectConfig::from_url("postgres://app@db/app")?)
    ///     .after_connect(|conn| Box::pin(async move {
    ///         conn.batch_execute("SET search_path TO app, public").await?;
    ///         Ok(())
    ///     }));
    /// # Ok::<(), holdfast::ConfigError>(())
    /// ```
    pub fn after_connect<F>(mut self, hook: F) -> Self
    where
        F: for<'c> Fn(
                &'c crate::Connection,
            ) -> futures_util::future::BoxFuture<'c, Result<(), crate::BoxError>>
            + Send
            + Sync
            + 'static,
    {
        self.after_connect = Some(super::after_connect::AfterConnect::new(hook));
        self
    }

    /// Statements kept prepared per connection; past it the least recently used one is
    /// closed on the server. Defaults to 256.
    pub fn statement_cache_size(mut self, size: usize) -> Self {
        self.statement_cache_size = size;
        self
    }

    /// How long the oldest unanswered statement on a shared connection may have waited
    /// before the connection takes no more callers while the pool has room for another
    /// ([`Pool::query`]): about the longest a caller queues behind others' statements.
    /// Defaults to 5 ms.
    ///
    /// [`Pool::query`]: crate::Pool::query
    pub fn pipeline_stall(mut self, stall: Duration) -> Self {
        self.pipeline_stall = stall;
        self
    }

    /// Whether reads of [`Pool::query`] callers sharing a connection go to the server
    /// gathered into one read-only transaction with one Sync (a group that fails is rolled
    /// back and its statements run again, each on a connection of its own). Defaults to on;
    /// turn it off when a read has effects outside its transaction that must not happen
    /// twice.
    ///
    /// [`Pool::query`]: crate::Pool::query
    pub fn gather_reads(mut self, on: bool) -> Self {
        self.gather_reads = on;
        self
    }

    /// Ask the server about a request unanswered this long (`None`: never). Defaults to
    /// 2000 ms.
    pub fn probe_after(mut self, after: Option<Duration>) -> Self {
        self.probe_after = after;
        self
    }

    /// When a connection whose requests get no answer at all is closed. Defaults to
    /// [`UnansweredTimeout::Auto`].
    pub fn unanswered_timeout(mut self, timeout: UnansweredTimeout) -> Self {
        self.unanswered_timeout = timeout;
        self
    }

    /// Name in logs and metrics. Defaults to `default`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Most connections open at once, counting those being opened.
    pub fn max_size(&self) -> usize {
        self.pool_size + self.max_overflow
    }

    /// Checks the settings, alone and against each other; [`Pool::new`](crate::Pool::new)
    /// calls it. Errors name the builder method (`pool_size`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check(Naming::Builder)
    }

    fn check(&self, naming: Naming) -> Result<(), ConfigError> {
        let name = |s: &dyn Describe| match naming {
            Naming::Env => s.env(),
            Naming::Builder => s.name(),
        };
        for (setting, value) in [
            (&table::POOL_SIZE, self.pool_size),
            (&table::MAX_OVERFLOW, self.max_overflow),
            (&table::MIN_IDLE, self.min_idle),
            (&table::MAX_WAITING, self.max_waiting),
            (&table::MAX_CONNECTING, self.max_connecting),
            (&table::PIPELINE_DEPTH, self.pipeline_depth),
            (&table::STATEMENT_CACHE_SIZE, self.statement_cache_size),
        ] {
            setting.check(name(setting), value)?;
        }
        for (setting, value) in [
            (&table::RECYCLE, self.recycle),
            (&table::PROBE_AFTER, self.probe_after),
            (&table::POOL_TIMEOUT, Some(self.pool_timeout)),
            (&table::PRE_PING_WINDOW, Some(self.pre_ping_window)),
            (&table::PING_TIMEOUT, Some(self.ping_timeout)),
            (&table::IDLE_TIMEOUT, self.idle_timeout),
            (&table::RESET_TIMEOUT, Some(self.reset_timeout)),
            (&table::LEAK_THRESHOLD, self.leak_threshold),
            (&table::KEEPALIVE_INTERVAL, self.keepalive_interval),
            (&table::RECONNECT_BACKOFF_MAX, Some(self.reconnect_backoff_max)),
            (&table::CLOSE_TIMEOUT, Some(self.close_timeout)),
            (&table::PIPELINE_STALL, Some(self.pipeline_stall)),
        ] {
            setting.check(name(setting), value)?;
        }
        let invalid = |setting: &dyn Describe, value: String, accepted: String| {
            Err(ConfigError::InvalidValue {
                setting: name(setting).to_string(),
                value,
                accepted,
            })
        };
        if self.min_idle > self.pool_size {
            return invalid(
                &table::MIN_IDLE,
                self.min_idle.to_string(),
                format!("at most the pool size ({})", self.pool_size),
            );
        }
        if let UnansweredTimeout::After(bound) = self.unanswered_timeout {
            let statement = start_up_statement_timeout(self);
            if bound.is_zero() || statement.is_some_and(|t| bound <= t) {
                return invalid(
                    &table::UNANSWERED_TIMEOUT,
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
                    &table::RESET_QUERY,
                    query.clone(),
                    format!("none {behind}: it would run on whichever server connection the pooler picks, not on the one that was used"),
                );
            }
            if let Some(options) = self.connect.pg().get_options() {
                return invalid(
                    &table::DATABASE_URL,
                    format!("options={options}"),
                    format!("no start-up options {behind}, which rejects them; holdfast applies DB_STATEMENT_TIMEOUT_MS and the other timeouts with SET LOCAL in each transaction, and ALTER ROLE ... SET covers the rest"),
                );
            }
        }
        Ok(())
    }
}

/// Whether errors name a setting by its environment variable or its builder method.
#[derive(Debug, Clone, Copy)]
enum Naming {
    Env,
    Builder,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::Pooler;

    #[test]
    fn every_setting_has_a_setter_that_states_its_default() {
        let settings: Vec<&dyn Describe> = table::POOL.to_vec();
        if let Err(e) = crate::settings::check_setter_docs(include_str!("config.rs"), &settings) {
            panic!("{e}");
        }
    }

    #[test]
    fn defaults_from_a_bare_environment() {
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
        assert!(c.gather_reads);
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
            ("DB_GATHER_READS", "OFF"),
        ])
        .expect("config");
        assert!(!c.gather_reads);
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
