//! How tasks of one kind run where they differ from the worker's configuration: their lease
//! (and heartbeat), their run timeout and their retry policy.

use std::time::Duration;

use holdfast_pool::ConfigError;

use crate::config::WorkerConfig;

/// Per-kind settings, given with [`Worker::handle_with`](crate::Worker::handle_with); what
/// is not set comes from the worker's [`WorkerConfig`]. The result is checked like a worker's
/// configuration when the worker spawns, and an error names the kind.
///
/// ```
/// # use std::time::Duration;
/// use holdfast::tasks::KindOptions;
/// let slow = KindOptions::new()
///     .lease(Duration::from_secs(120))
///     .run_timeout(Some(Duration::from_secs(3600)))
///     .retry(Duration::from_secs(30), Duration::from_secs(3600));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindOptions {
    lease: Option<Duration>,
    heartbeat: Option<Option<Duration>>,
    run_timeout: Option<Option<Duration>>,
    retry_base: Option<Duration>,
    retry_max: Option<Duration>,
}

impl KindOptions {
    /// Everything as the worker's configuration says.
    pub fn new() -> KindOptions {
        KindOptions::default()
    }

    /// How long a claim or heartbeat holds a task of this kind (the worker's `lease`).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Time between heartbeats; `None`: a third of the lease (the worker's `heartbeat`).
    pub fn heartbeat(mut self, every: Option<Duration>) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// How long one attempt may run; `None`: no bound (the worker's `run_timeout`).
    pub fn run_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.run_timeout = Some(timeout);
        self
    }

    /// The retry policy: the first delay, doubling each attempt with jitter, at most `max`
    /// (the worker's `retry_base` and `retry_max`).
    pub fn retry(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base = Some(base);
        self.retry_max = Some(max);
        self
    }

    /// The worker's configuration with this kind's settings in place, checked.
    pub(crate) fn apply(&self, kind: &str, worker: &WorkerConfig) -> Result<WorkerConfig, ConfigError> {
        let mut config = worker.clone();
        if let Some(lease) = self.lease {
            config.lease = lease;
            // A heartbeat derived from the worker's lease would not fit this one.
            if self.heartbeat.is_none() && worker.heartbeat.is_some_and(|h| h >= lease) {
                config.heartbeat = None;
            }
        }
        if let Some(heartbeat) = self.heartbeat {
            config.heartbeat = heartbeat;
        }
        if let Some(timeout) = self.run_timeout {
            config.run_timeout = timeout;
        }
        config.retry_base = self.retry_base.unwrap_or(config.retry_base);
        config.retry_max = self.retry_max.unwrap_or(config.retry_max);
        config.validate().map_err(|e| match e {
            ConfigError::InvalidValue {
                setting,
                value,
                accepted,
            } => ConfigError::InvalidValue {
                setting: format!("KindOptions::{setting} of task kind {kind:?}"),
                value,
                accepted,
            },
            other => other,
        })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_options_keep_the_workers_settings_and_errors_name_the_kind() {
        let worker = WorkerConfig::default();
        let same = KindOptions::new().apply("a", &worker).expect("valid");
        assert_eq!(
            (same.lease, same.run_timeout, same.retry_base, same.retry_max),
            (
                worker.lease,
                worker.run_timeout,
                worker.retry_base,
                worker.retry_max
            )
        );
        let long = KindOptions::new()
            .lease(Duration::from_secs(600))
            .retry(Duration::from_secs(1), Duration::from_secs(2))
            .apply("slow", &worker)
            .expect("valid");
        assert_eq!(long.lease, Duration::from_secs(600));
        assert_eq!(long.heartbeat_interval(), Duration::from_secs(200));
        assert_eq!(long.retry_max, Duration::from_secs(2));
        let err = KindOptions::new()
            .lease(Duration::from_millis(1))
            .apply("tiny", &worker)
            .expect_err("too short");
        let text = err.to_string();
        assert!(text.contains("\"tiny\"") && text.contains("lease"), "{text}");
    }
}
