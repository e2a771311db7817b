//! Workers: claim tasks up to a concurrency limit, run them under a lease, and stop in
//! order. One start/stop lifecycle; `spawn` returns a handle whose `shutdown` stops claiming,
//! lets running tasks finish within a grace period and releases the leases of the rest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use holdfast_pool::{ConnectConfig, Pool};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::context::{TaskContext, TaskFailure};
use crate::error::TaskError;
use crate::execution;
use crate::listener::{self, Wake};
use crate::metrics::TaskMetrics;
use crate::queue::{Finish, Queue};
use crate::rescuer::Rescuer;
use crate::task::Claimed;

/// A task body: given its context, does the work.
pub type Handler = Arc<dyn Fn(TaskContext) -> BoxFuture<'static, Result<(), TaskFailure>> + Send + Sync>;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Tasks run at once (default 4).
    pub concurrency: usize,
    /// How long a claim or heartbeat holds a task (default 30 s).
    pub lease: Duration,
    /// Time between heartbeats (default lease / 3).
    pub heartbeat: Duration,
    /// How often to look for work when no notification comes (default 1 s).
    pub poll_interval: Duration,
    /// How the worker hears of enqueues between polls (default [`Listen::Auto`]).
    pub listen: Listen,
    /// How long shutdown waits for running tasks before releasing their leases (default 30 s).
    pub shutdown_grace: Duration,
    /// How long one attempt's body may run: past it, the body is stopped (its future
    /// dropped) and the attempt fails and is retried like any failure. Heartbeats keep a
    /// task whose worker lives, so without this bound a body stuck on a request nobody will
    /// answer (a hung network eats it) would hold its task forever (default 1 hour; `None`:
    /// no bound).
    pub run_timeout: Option<Duration>,
    /// First retry delay of a failed task; doubles each attempt, with jitter (default 1 s).
    pub retry_base: Duration,
    /// Longest retry delay (default 10 min).
    pub retry_max: Duration,
    /// Run a rescuer in this worker (default true).
    pub rescue: bool,
    /// How often the rescuer looks for expired leases (default 1 s).
    pub rescue_interval: Duration,
    /// This worker's name in leases and logs (default `<host>-<pid>-<n>`).
    pub owner: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "worker".into());
        WorkerConfig {
            concurrency: 4,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            listen: Listen::Auto,
            shutdown_grace: Duration::from_secs(30),
            run_timeout: Some(Duration::from_secs(3600)),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            rescue: true,
            rescue_interval: Duration::from_secs(1),
            owner: format!(
                "{host}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
}

impl WorkerConfig {
    /// Sets the lease and a heartbeat of a third of it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self.heartbeat = lease / 3;
        self
    }

    /// Sets the concurrency limit.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    fn validate(&self) -> Result<(), TaskError> {
        let bad = |setting: &'static str, value: String, accepted: &str| {
            Err(TaskError::InvalidSetting {
                setting,
                value,
                accepted: accepted.into(),
            })
        };
        if self.concurrency == 0 {
            return bad("concurrency", "0".into(), "1 or more");
        }
        if self.lease < Duration::from_millis(100) {
            return bad("lease", format!("{:?}", self.lease), "at least 100 ms");
        }
        if self.heartbeat.is_zero() || self.heartbeat >= self.lease {
            return bad(
                "heartbeat",
                format!("{:?}", self.heartbeat),
                "above zero and below the lease",
            );
        }
        if self.run_timeout.is_some_and(|t| t.is_zero()) {
            return bad("run_timeout", "0".into(), "above zero, or None for no bound");
        }
        if self.poll_interval.is_zero() || self.rescue_interval.is_zero() {
            return bad("poll_interval / rescue_interval", "0".into(), "above zero");
        }
        if let Listen::Direct(direct) = &self.listen {
            if direct.get_pooler().is_transaction() {
                return bad(
                    "listen",
                    "Listen::Direct with a connection behind a transaction-mode pooler".into(),
                    "a direct connection to PostgreSQL (a transaction-mode pooler does not deliver \
                     notifications), Listen::Auto or Listen::Off",
                );
            }
        }
        Ok(())
    }
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

/// Where a worker LISTENs, if anywhere: `control` is how its control pool connects.
fn listen_on(listen: &Listen, control: &ConnectConfig) -> Option<ConnectConfig> {
    match listen {
        Listen::Auto if control.get_pooler().is_transaction() => None,
        Listen::Auto => Some(control.clone()),
        Listen::Direct(direct) => Some((**direct).clone()),
        Listen::Off => None,
    }
}

/// What a worker needs while it runs, shared by its tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) queue: Queue,
    /// Claim, heartbeat, finalize, rescue: a small pool of its own so that task bodies and
    /// the rest of the application cannot starve it.
    pub(crate) control: Pool,
    /// Handed to task bodies.
    pub(crate) work: Pool,
    pub(crate) config: WorkerConfig,
    pub(crate) metrics: TaskMetrics,
    /// Set on shutdown: running tasks' contexts see it; past the grace period their futures
    /// are dropped and leases released.
    pub(crate) hard_stop: watch::Sender<bool>,
}

/// A worker being configured.
pub struct Worker {
    queue: Queue,
    control: Pool,
    work: Pool,
    config: WorkerConfig,
    handlers: HashMap<String, Handler>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("config", &self.config)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Worker {
    /// A worker for `queue`. `control` carries claims, heartbeats and final writes (size it
    /// small: 2 connections plus one per 8 concurrent tasks is plenty); `work` is handed to
    /// task bodies.
    pub fn new(queue: Queue, control: Pool, work: Pool, config: WorkerConfig) -> Worker {
        Worker {
            queue,
            control,
            work,
            config,
            handlers: HashMap::new(),
        }
    }

    /// Registers the body of tasks of `kind`.
    pub fn handle<F>(mut self, kind: &str, body: F) -> Self
    where
        F: Fn(TaskContext) -> BoxFuture<'static, Result<(), TaskFailure>> + Send + Sync + 'static,
    {
        self.handlers.insert(kind.to_string(), Arc::new(body));
        self
    }

    /// Starts the worker on the current tokio runtime.
    pub fn spawn(self) -> Result<WorkerHandle, TaskError> {
        self.config.validate()?;
        let shared = Arc::new(Shared {
            metrics: TaskMetrics::new(self.queue.schema()),
            queue: self.queue,
            control: self.control,
            work: self.work,
            config: self.config,
            hard_stop: watch::channel(false).0,
        });
        let (stop_claiming, claiming) = watch::channel(false);
        let handlers = Arc::new(self.handlers);
        let main = tokio::spawn(run(Arc::clone(&shared), handlers, claiming));
        Ok(WorkerHandle {
            shared,
            stop_claiming,
            main,
        })
    }
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    shared: Arc<Shared>,
    stop_claiming: watch::Sender<bool>,
    main: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// The worker's name, as written in leases.
    pub fn owner(&self) -> &str {
        &self.shared.config.owner
    }

    /// Stops claiming, lets running tasks finish within the grace period, then stops the
    /// rest and releases their leases (without counting the attempt) so that other workers
    /// take them at once.
    pub async fn shutdown(self) {
        let _ = self.stop_claiming.send(true);
        let _ = self.main.await;
    }

    /// Ends the worker as a crash would: nothing is finished or released; leases expire and
    /// the rescuer (of any worker) takes the tasks over. For tests and fault drills.
    pub fn abort(self) {
        self.main.abort();
    }
}

async fn run(shared: Arc<Shared>, handlers: Arc<HashMap<String, Handler>>, claiming: watch::Receiver<bool>) {
    let config = &shared.config;
    // Woken by enqueue notifications: every idle slot looks at once.
    let wake = Arc::new(Wake::default());
    let mut background = JoinSet::new();
    let listen = listen_on(&config.listen, &shared.control.config().connect);
    if listen.is_none() && matches!(config.listen, Listen::Auto) {
        tracing::info!(
            owner = %config.owner,
            poll_interval = ?config.poll_interval,
            "behind a transaction-mode pooler LISTEN cannot work: polling only \
             (Listen::Direct gives a direct connection for it)"
        );
    }
    if let Some(connect) = listen {
        background.spawn(listener::run(connect, shared.queue.channel(), Arc::clone(&wake)));
    }
    if config.rescue {
        let rescuer = Rescuer::new(shared.queue.clone(), shared.control.clone());
        let interval = config.rescue_interval;
        let shared = Arc::clone(&shared);
        background.spawn(async move { rescuer.run(interval, &shared.metrics).await });
    }
    // One loop per slot, each claiming its next task as soon as it is free, like so many
    // clients: no single claimer to queue behind.
    let mut slots = JoinSet::new();
    for _ in 0..config.concurrency {
        slots.spawn(slot(
            Arc::clone(&shared),
            Arc::clone(&handlers),
            claiming.clone(),
            Arc::clone(&wake),
        ));
    }
    let mut claiming = claiming;
    let _ = claiming.wait_for(|stop| *stop).await;
    // Shutdown: slots stop claiming; running tasks get the grace period, then are stopped
    // and their leases released.
    tracing::info!(owner = %config.owner, "worker stopping");
    let grace = tokio::time::sleep(config.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = slots.join_next() => if next.is_none() { break },
            _ = &mut grace => {
                let _ = shared.hard_stop.send(true);
                while slots.join_next().await.is_some() {}
                break;
            }
        }
    }
    background.shutdown().await;
    tracing::info!(owner = %config.owner, "worker stopped");
}

/// One execution slot: claim a task, run it, repeat; when there is none, wait for a
/// notification or the poll interval.
async fn slot(
    shared: Arc<Shared>,
    handlers: Arc<HashMap<String, Handler>>,
    mut stopping: watch::Receiver<bool>,
    wake: Arc<Wake>,
) {
    let config = &shared.config;
    // A task claimed together with the previous one's final write.
    let mut next: Option<Claimed> = None;
    let mut hard_stop = shared.hard_stop.subscribe();
    loop {
        if *stopping.borrow() {
            if let Some(task) = next.take() {
                // Claimed but not started: given back without counting the attempt.
                let lease_until = Instant::now() + config.lease;
                execution::finish(&shared, &task, Finish::Released, lease_until).await;
            }
            return;
        }
        // Read before claiming, so that a notification that arrives meanwhile is not lost.
        let seen = wake.epoch();
        let claimed = match next.take() {
            Some(task) => Ok(vec![task]),
            None => {
                let started = Instant::now();
                let claimed = claim(&shared, 1).await;
                shared
                    .metrics
                    .claim_seconds
                    .record(started.elapsed().as_secs_f64());
                claimed
            }
        };
        match claimed {
            Ok(mut tasks) if !tasks.is_empty() => {
                let task = tasks.swap_remove(0);
                shared.metrics.claimed.increment(1);
                let handler = handlers.get(&task.kind).cloned();
                let Some(pending) = execution::run(Arc::clone(&shared), task, handler, &mut hard_stop).await
                else {
                    continue;
                };
                if *stopping.borrow() {
                    execution::write(&shared, pending).await;
                } else {
                    // The final write and the next claim in one round trip.
                    next = execution::write_and_claim(&shared, pending).await;
                }
                continue;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(owner = %config.owner, %error, "claim failed; will try again"),
        }
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if wake.epoch() != seen {
            // Tasks were enqueued while we claimed: look again at once.
            continue;
        }
        // Spread the slots' polls so that idle workers do not query in step.
        let poll = config.poll_interval.mul_f64(0.75 + fastrand::f64() * 0.5);
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// Claims up to `free` tasks, bounded by the heartbeat interval: a connection that never
/// answers (a hung server or network) must not hold the slot. A claim that landed but whose
/// answer never came leaves a lease that expires, and the rescuer takes the task back.
async fn claim(shared: &Shared, free: usize) -> Result<Vec<crate::task::Claimed>, TaskError> {
    let config = &shared.config;
    let claim = async {
        let conn = shared.control.get().await?;
        let claimed = shared
            .queue
            .claim(&conn, &config.owner, config.lease, free as i64)
            .await?;
        Ok(claimed)
    };
    tokio::time::timeout(config.heartbeat, claim)
        .await
        .unwrap_or(Err(TaskError::TimedOut {
            what: "claim",
            after: config.heartbeat,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_pool::Pooler;

    #[test]
    fn bad_settings_are_refused_naming_the_setting() {
        let setting = |config: WorkerConfig| match config.validate() {
            Err(TaskError::InvalidSetting { setting, .. }) => setting,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(WorkerConfig::default().validate().is_ok());
        assert_eq!(setting(WorkerConfig::default().concurrency(0)), "concurrency");
        assert_eq!(
            setting(WorkerConfig::default().lease(Duration::from_millis(50))),
            "lease"
        );
        let mut config = WorkerConfig::default();
        config.heartbeat = config.lease;
        assert_eq!(setting(config), "heartbeat");
        let config = WorkerConfig {
            run_timeout: Some(Duration::ZERO),
            ..WorkerConfig::default()
        };
        assert_eq!(setting(config), "run_timeout");
        let config = WorkerConfig {
            run_timeout: None,
            ..WorkerConfig::default()
        };
        assert!(config.validate().is_ok(), "no bound is a valid choice");
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
