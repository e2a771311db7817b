//! How a worker runs: [`WorkerConfig`], a setter per setting, its defaults, ranges and
//! variables from [`settings`](crate::settings).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use holdfast_pool::settings::{AutoValue, Describe, ProcessEnv, Source};
use holdfast_pool::{ConfigError, ConnectConfig};

use crate::settings::*;

/// How a worker runs. Build it with [`WorkerConfig::default`] and the setters, or read it
/// with [`from_env`](Self::from_env); [`Worker::spawn`](crate::Worker::spawn) checks it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Tasks run at once (`TASK_CONCURRENCY`).
    pub concurrency: usize,
    /// Most tasks one claim takes and one statement marks succeeded; the worker fetches
    /// ahead only what its slots start within about 20 ms at their recent pace
    /// (`TASK_CLAIM_BATCH`; 1: no batching).
    pub claim_batch: usize,
    /// How long a claim or heartbeat holds a task (`TASK_LEASE_MS`).
    pub lease: Duration,
    /// Time between heartbeats; `None`: a third of the lease (`TASK_HEARTBEAT_MS`).
    pub heartbeat: Option<Duration>,
    /// How often to look for work when no notification comes (`TASK_POLL_MS`).
    pub poll_interval: Duration,
    /// How the worker hears of enqueues between polls (`TASK_LISTEN`).
    pub listen: Listen,
    /// How long shutdown waits for running tasks before releasing their leases
    /// (`TASK_SHUTDOWN_GRACE_MS`).
    pub shutdown_grace: Duration,
    /// How long one attempt's body may run: past it, the body is stopped (its future
    /// dropped) and the attempt fails and is retried like any failure. Heartbeats keep a
    /// task whose worker lives, so without this bound a body stuck on a request nobody will
    /// answer (a hung network eats it) would hold its task forever; `None`: no bound
    /// (`TASK_RUN_TIMEOUT_MS`).
    pub run_timeout: Option<Duration>,
    /// First retry delay of a failed task; doubles each attempt, with jitter
    /// (`TASK_RETRY_BASE_MS`).
    pub retry_base: Duration,
    /// Longest retry delay (`TASK_RETRY_MAX_MS`).
    pub retry_max: Duration,
    /// Run a rescuer in this worker (`TASK_RESCUE`).
    pub rescue: bool,
    /// How often the rescuer looks for expired leases (`TASK_RESCUE_INTERVAL_MS`).
    pub rescue_interval: Duration,
    /// Succeeded tasks are deleted this long after they finished; `None` keeps them
    /// (`TASK_RETAIN_SUCCEEDED_S`).
    pub retain_succeeded: Option<Duration>,
    /// Failed and cancelled tasks are deleted this long after they finished; `None` keeps
    /// them (`TASK_RETAIN_FAILED_S`).
    pub retain_failed: Option<Duration>,
    /// This worker's name in leases and logs (`TASK_OWNER`).
    pub owner: String,
}

/// How a worker hears of new tasks between polls.
#[derive(Debug, Clone, Default)]
pub enum Listen {
    /// LISTEN on a connection made like the control pool's, so that an enqueue wakes an idle
    /// worker at once; poll only when that pool is behind a transaction-mode pooler, which
    /// does not deliver notifications (the default).
    #[default]
    Auto,
    /// LISTEN on a connection of its own with these settings: a direct connection to
    /// PostgreSQL, for workers whose pools go through a transaction-mode pooler (one
    /// connection per worker; enqueues through the pooler still notify it).
    Direct(Box<ConnectConfig>),
    /// Never LISTEN: poll every `poll_interval`.
    Off,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: CONCURRENCY.default_usize(),
            claim_batch: CLAIM_BATCH.default_usize(),
            lease: LEASE.default_duration(),
            heartbeat: None,
            poll_interval: POLL_INTERVAL.default_duration(),
            listen: Listen::Auto,
            shutdown_grace: SHUTDOWN_GRACE.default_duration(),
            run_timeout: RUN_TIMEOUT.default_value(),
            retry_base: RETRY_BASE.default_duration(),
            retry_max: RETRY_MAX.default_duration(),
            rescue: true,
            rescue_interval: RESCUE_INTERVAL.default_duration(),
            retain_succeeded: RETAIN_SUCCEEDED.default_value(),
            retain_failed: RETAIN_FAILED.default_value(),
            owner: default_owner(),
        }
    }
}

/// `<host>-<pid>-<n>`: unique per worker of the process.
fn default_owner() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl WorkerConfig {
    /// Reads the `TASK_*` variables of the process environment.
    pub fn from_env() -> Result<WorkerConfig, ConfigError> {
        WorkerConfig::from_source(&ProcessEnv)
    }

    /// Reads the `TASK_*` variables of `source`.
    pub fn from_source(source: &dyn Source) -> Result<WorkerConfig, ConfigError> {
        let defaults = WorkerConfig::default();
        let config = WorkerConfig {
            concurrency: CONCURRENCY.read(source)? as usize,
            claim_batch: CLAIM_BATCH.read(source)? as usize,
            lease: LEASE.read_duration(source)?,
            heartbeat: match HEARTBEAT.read(source)? {
                AutoValue::Set(every) => Some(every),
                AutoValue::Auto | AutoValue::Off => None,
            },
            poll_interval: POLL_INTERVAL.read_duration(source)?,
            listen: match LISTEN.read(source)? {
                "off" => Listen::Off,
                _ => Listen::Auto,
            },
            shutdown_grace: SHUTDOWN_GRACE.read_duration(source)?,
            run_timeout: RUN_TIMEOUT.read(source)?,
            retry_base: RETRY_BASE.read_duration(source)?,
            retry_max: RETRY_MAX.read_duration(source)?,
            rescue: RESCUE.read(source)? == "1",
            rescue_interval: RESCUE_INTERVAL.read_duration(source)?,
            retain_succeeded: RETAIN_SUCCEEDED.read(source)?,
            retain_failed: RETAIN_FAILED.read(source)?,
            owner: OWNER.read(source).unwrap_or(defaults.owner),
        };
        config.check(|s| s.env())?;
        Ok(config)
    }

    /// Tasks run at once. Defaults to 4.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Most tasks one claim takes and one statement marks succeeded (1: one at a time,
    /// nothing fetched ahead). Defaults to 100.
    pub fn claim_batch(mut self, n: usize) -> Self {
        self.claim_batch = n;
        self
    }

    /// How long a claim or heartbeat holds a task. Defaults to 30000 ms.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Time between heartbeats, below the lease (`None`: a third of the lease). Defaults to
    /// a third of the lease.
    pub fn heartbeat(mut self, every: Option<Duration>) -> Self {
        self.heartbeat = every;
        self
    }

    /// How often an idle worker looks for work when no notification wakes it. Defaults to
    /// 1000 ms.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// How the worker hears of enqueues. Defaults to [`Listen::Auto`].
    pub fn listen(mut self, listen: Listen) -> Self {
        self.listen = listen;
        self
    }

    /// How long shutdown lets running tasks finish. Defaults to 30000 ms.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// How long one attempt's body may run (`None`: no bound). Defaults to 3600000 ms.
    pub fn run_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.run_timeout = timeout;
        self
    }

    /// First retry delay of a failed task. Defaults to 1000 ms.
    pub fn retry_base(mut self, delay: Duration) -> Self {
        self.retry_base = delay;
        self
    }

    /// Longest retry delay. Defaults to 600000 ms.
    pub fn retry_max(mut self, delay: Duration) -> Self {
        self.retry_max = delay;
        self
    }

    /// Whether this worker rescues tasks whose lease expired. Defaults to true
    /// (`TASK_RESCUE=1`).
    pub fn rescue(mut self, on: bool) -> Self {
        self.rescue = on;
        self
    }

    /// How often the rescuer looks for expired leases. Defaults to 1000 ms.
    pub fn rescue_interval(mut self, every: Duration) -> Self {
        self.rescue_interval = every;
        self
    }

    /// How long succeeded tasks are kept after they finished (`None`: forever). Defaults to
    /// 86400 s.
    pub fn retain_succeeded(mut self, retain: Option<Duration>) -> Self {
        self.retain_succeeded = retain;
        self
    }

    /// How long failed and cancelled tasks are kept after they finished (`None`: forever).
    /// Defaults to 604800 s.
    pub fn retain_failed(mut self, retain: Option<Duration>) -> Self {
        self.retain_failed = retain;
        self
    }

    /// The worker's name in leases and logs. Defaults to `<host>-<pid>-<n>`.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// The time between heartbeats this configuration gives.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat.unwrap_or(self.lease / 3)
    }

    /// Checks the settings, alone and against each other; errors name the setter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check(|s| s.name())
    }

    fn check(&self, name: impl Fn(&dyn Describe) -> &'static str) -> Result<(), ConfigError> {
        CONCURRENCY.check(name(&CONCURRENCY), self.concurrency)?;
        CLAIM_BATCH.check(name(&CLAIM_BATCH), self.claim_batch)?;
        for (setting, value) in [
            (&LEASE, Some(self.lease)),
            (&POLL_INTERVAL, Some(self.poll_interval)),
            (&SHUTDOWN_GRACE, Some(self.shutdown_grace)),
            (&RUN_TIMEOUT, self.run_timeout),
            (&RETRY_BASE, Some(self.retry_base)),
            (&RETRY_MAX, Some(self.retry_max)),
            (&RESCUE_INTERVAL, Some(self.rescue_interval)),
            (&RETAIN_SUCCEEDED, self.retain_succeeded),
            (&RETAIN_FAILED, self.retain_failed),
        ] {
            setting.check(name(setting), value)?;
        }
        let invalid = |setting: &dyn Describe, value: String, accepted: &str| {
            Err(ConfigError::InvalidValue {
                setting: name(setting).to_string(),
                value,
                accepted: accepted.to_string(),
            })
        };
        if self.lease < Duration::from_millis(LEASE.min) {
            return invalid(&LEASE, format!("{:?}", self.lease), "at least 100 ms");
        }
        let heartbeat = self.heartbeat_interval();
        if heartbeat.is_zero() || heartbeat >= self.lease {
            return invalid(
                &HEARTBEAT,
                format!("{heartbeat:?}"),
                "above zero and below the lease",
            );
        }
        if let Listen::Direct(direct) = &self.listen {
            if direct.get_pooler().is_transaction() {
                return invalid(
                    &LISTEN,
                    "a direct listen connection behind a transaction-mode pooler".into(),
                    "a direct connection to PostgreSQL (a transaction-mode pooler does not deliver \
                     notifications), auto or off",
                );
            }
        }
        Ok(())
    }
}

/// Where a worker LISTENs, if anywhere: `control` is how its control pool connects.
pub(crate) fn listen_on(listen: &Listen, control: &ConnectConfig) -> Option<ConnectConfig> {
    match listen {
        Listen::Auto if control.get_pooler().is_transaction() => None,
        Listen::Auto => Some(control.clone()),
        Listen::Direct(direct) => Some((**direct).clone()),
        Listen::Off => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_pool::settings::{check_readme_table, check_setter_docs, markdown_table};
    use holdfast_pool::Pooler;

    #[test]
    fn bad_settings_are_refused_naming_the_setting() {
        let setting = |config: WorkerConfig| match config.validate() {
            Err(ConfigError::InvalidValue { setting, .. }) => setting,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(WorkerConfig::default().validate().is_ok());
        assert_eq!(setting(WorkerConfig::default().concurrency(0)), "concurrency");
        assert_eq!(
            setting(WorkerConfig::default().lease(Duration::from_millis(50))),
            "lease"
        );
        let config = WorkerConfig::default().heartbeat(Some(LEASE.default_duration()));
        assert_eq!(setting(config), "heartbeat");
        let config = WorkerConfig::default().run_timeout(Some(Duration::ZERO));
        assert_eq!(setting(config), "run_timeout");
        let config = WorkerConfig::default().run_timeout(None);
        assert!(config.validate().is_ok(), "no bound is a valid choice");
        let err = WorkerConfig::from_source(&[("TASK_LEASE_MS", "abc")])
            .expect_err("abc")
            .to_string();
        assert!(err.starts_with("TASK_LEASE_MS: invalid value \"abc\""), "{err}");
        let err = WorkerConfig::from_source(&[("TASK_HEARTBEAT_MS", "40000")])
            .expect_err("above the lease")
            .to_string();
        assert!(err.starts_with("TASK_HEARTBEAT_MS: invalid value"), "{err}");
    }

    #[test]
    fn every_variable_is_read() {
        let c = WorkerConfig::from_source(&[
            ("TASK_CONCURRENCY", "9"),
            ("TASK_LEASE_MS", "6000"),
            ("TASK_HEARTBEAT_MS", "500"),
            ("TASK_POLL_MS", "50"),
            ("TASK_LISTEN", "off"),
            ("TASK_SHUTDOWN_GRACE_MS", "0"),
            ("TASK_RUN_TIMEOUT_MS", "0"),
            ("TASK_RETRY_BASE_MS", "7"),
            ("TASK_RETRY_MAX_MS", "70"),
            ("TASK_RESCUE", "0"),
            ("TASK_RESCUE_INTERVAL_MS", "300"),
            ("TASK_OWNER", "w1"),
        ])
        .expect("config");
        assert_eq!(c.concurrency, 9);
        assert_eq!(c.lease, Duration::from_secs(6));
        assert_eq!(c.heartbeat_interval(), Duration::from_millis(500));
        assert_eq!(c.poll_interval, Duration::from_millis(50));
        assert!(matches!(c.listen, Listen::Off));
        assert_eq!(c.shutdown_grace, Duration::ZERO);
        assert_eq!(c.run_timeout, None);
        assert_eq!(
            (c.retry_base, c.retry_max),
            (Duration::from_millis(7), Duration::from_millis(70))
        );
        assert!(!c.rescue);
        assert_eq!(c.rescue_interval, Duration::from_millis(300));
        assert_eq!(c.owner, "w1");
        let d = WorkerConfig::from_source(&[("TASK_LEASE_MS", "9000")]).expect("config");
        assert_eq!(d.heartbeat_interval(), Duration::from_secs(3), "a third");
    }

    #[test]
    fn the_readme_table_and_the_setters_are_the_settings() {
        if let Err(e) = check_readme_table(include_str!("../README.md"), "tasks", &markdown_table(SETTINGS)) {
            panic!("{e}");
        }
        let setters: Vec<&dyn Describe> = SETTINGS
            .iter()
            .copied()
            .filter(|s| s.name() != "schema")
            .collect();
        if let Err(e) = check_setter_docs(include_str!("config.rs"), &setters) {
            panic!("{e}");
        }
    }

    #[test]
    fn listen_goes_around_a_transaction_pooler() {
        let direct = ConnectConfig::from_url("postgres://u@db/app").expect("url");
        let pooled = ConnectConfig::from_url("postgres://u@bouncer:6432/app")
            .expect("url")
            .pooler(Pooler::Transaction);
        let host = |c: Option<ConnectConfig>| c.map(|c| format!("{:?}", c.pg().get_hosts()));
        assert_eq!(
            host(listen_on(&Listen::Auto, &direct)),
            host(Some(direct.clone()))
        );
        assert_eq!(
            host(listen_on(&Listen::Auto, &pooled)),
            None,
            "polls behind the pooler"
        );
        let own = Listen::Direct(Box::new(direct.clone()));
        assert_eq!(
            host(listen_on(&own, &pooled)),
            host(Some(direct)),
            "the direct route"
        );
        assert_eq!(host(listen_on(&Listen::Off, &pooled)), None);
    }
}
