//! Workers: claim tasks up to a concurrency limit, run them under a lease, and stop in
//! order. One start/stop lifecycle; `spawn` returns a handle whose `shutdown` stops claiming,
//! lets running tasks finish within a grace period and releases the leases of the rest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use holdfast_pool::Pool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::completions::{self, Success};
use crate::config::{listen_on, Listen, WorkerConfig};
use crate::context::{TaskContext, TaskFailure};
use crate::error::TaskError;
use crate::execution;
use crate::feed::{self, Feed};
use crate::kind::KindOptions;
use crate::listener::{self, Wake};
use crate::metrics::TaskMetrics;
use crate::periodic::Periodic;
use crate::queue::{Finish, Queue};
use crate::rescuer::Rescuer;
use crate::task::DEFAULT_QUEUE;
use crate::worker_state::{Handler, Shared};

/// The two pools a worker draws on, named so that they cannot be swapped.
#[derive(Debug, Clone)]
pub struct WorkerPools {
    /// Claims, heartbeats, final writes and rescues: a small pool of the worker's own, so
    /// that task bodies and the rest of the application cannot starve it (2 connections
    /// plus one per 8 concurrent tasks is plenty).
    pub control: Pool,
    /// Handed to task bodies as [`TaskContext::pool`].
    pub work: Pool,
}

/// A worker being configured.
pub struct Worker {
    pub(crate) queue: Queue,
    pub(crate) pools: WorkerPools,
    pub(crate) config: WorkerConfig,
    pub(crate) handlers: HashMap<String, Handler>,
    options: HashMap<String, KindOptions>,
    /// Named queues served besides the default one, with their slots.
    queues: Vec<(String, usize)>,
    /// Schedules this worker enqueues (once per slot across every worker that has them).
    periodic: Vec<Periodic>,
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
    /// A worker for `queue`, drawing on `pools`.
    pub fn new(queue: Queue, pools: WorkerPools, config: WorkerConfig) -> Worker {
        Worker {
            queue,
            pools,
            config,
            handlers: HashMap::new(),
            options: HashMap::new(),
            queues: Vec::new(),
            periodic: Vec::new(),
        }
    }

    /// Registers the body of tasks of `kind`.
    pub fn handle<F>(mut self, kind: &str, body: F) -> Self
    where
        F: Fn(TaskContext) -> BoxFuture<'static, Result<(), TaskFailure>> + Send + Sync + 'static,
    {
        self.handlers.insert(kind.to_string(), Arc::new(body));
        self.options.remove(kind);
        self
    }

    /// Also serves the named queue `name` with `concurrency` slots of its own (besides the
    /// `concurrency` slots of the default queue): a queue's tasks never wait behind another
    /// queue's. Given twice, the last concurrency counts.
    pub fn queue(mut self, name: &str, concurrency: usize) -> Self {
        self.queues.retain(|(q, _)| q != name);
        self.queues.push((name.to_string(), concurrency));
        self
    }

    /// Enqueues `schedule`'s task at each of its slots. Every worker may be given the same
    /// schedules: each slot is enqueued once across them (a row per schedule, locked and
    /// advanced with the enqueue). The worker looks every second (or every poll interval,
    /// if shorter).
    pub fn periodic(mut self, schedule: Periodic) -> Self {
        self.periodic.retain(|p| p.name() != schedule.name());
        self.periodic.push(schedule);
        self
    }

    /// Registers the body of tasks of `kind`, run with settings of their own (lease, run
    /// timeout, retry policy) where `options` sets them.
    pub fn handle_with<F>(self, kind: &str, options: KindOptions, body: F) -> Self
    where
        F: Fn(TaskContext) -> BoxFuture<'static, Result<(), TaskFailure>> + Send + Sync + 'static,
    {
        let mut worker = self.handle(kind, body);
        worker.options.insert(kind.to_string(), options);
        worker
    }

    /// Starts the worker on the current tokio runtime; refuses a configuration that does
    /// not pass [`WorkerConfig::validate`].
    pub fn spawn(self) -> Result<WorkerHandle, TaskError> {
        self.config.validate()?;
        let mut queues = vec![(DEFAULT_QUEUE.to_string(), self.config.concurrency)];
        for (name, n) in self.queues {
            if name.is_empty() {
                return Err(TaskError::invalid(
                    "Worker::queue",
                    "an empty name",
                    "a queue name",
                ));
            }
            crate::settings::CONCURRENCY.check("Worker::queue concurrency", n)?;
            queues.retain(|(q, _)| *q != name);
            queues.push((name, n));
        }
        let mut by_kind = HashMap::new();
        for (kind, options) in &self.options {
            by_kind.insert(kind.clone(), options.apply(kind, &self.config)?);
        }
        let mut kinds: Vec<String> = self.handlers.keys().cloned().collect();
        kinds.sort_unstable();
        let leases_ms = kinds
            .iter()
            .map(|k| by_kind.get(k).unwrap_or(&self.config).lease.as_secs_f64() * 1000.0)
            .collect();
        let shared = Arc::new(Shared {
            metrics: TaskMetrics::new(self.queue.schema()),
            queue: self.queue,
            control: self.pools.control,
            work: self.pools.work,
            config: self.config,
            kinds,
            leases_ms,
            by_kind,
            hard_stop: watch::channel(false).0,
        });
        let (stop_claiming, claiming) = watch::channel(false);
        let handlers = Arc::new(self.handlers);
        let main = tokio::spawn(run(
            Arc::clone(&shared),
            handlers,
            claiming,
            queues,
            self.periodic,
        ));
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

async fn run(
    shared: Arc<Shared>,
    handlers: Arc<HashMap<String, Handler>>,
    claiming: watch::Receiver<bool>,
    queues: Vec<(String, usize)>,
    periodic: Vec<Periodic>,
) {
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
        let rescuer = Rescuer::new(shared.queue.clone(), shared.control.clone())
            .retention(config.retain_succeeded, config.retain_failed);
        let interval = config.rescue_interval;
        let shared = Arc::clone(&shared);
        background.spawn(async move { rescuer.run(interval, &shared.metrics).await });
    }
    if !periodic.is_empty() {
        let shared = Arc::clone(&shared);
        background.spawn(async move { schedule(&shared, &periodic).await });
    }
    // Per queue, a fetcher claims for the slots (several tasks per statement) and the
    // slots take from its feed; successes are written together by one writer.
    let (successes, written) = mpsc::unbounded_channel();
    let mut writer = JoinSet::new();
    writer.spawn(completions::run(Arc::clone(&shared), written));
    let mut fetchers = JoinSet::new();
    let mut slots = JoinSet::new();
    for (queue, concurrency) in queues {
        let feed = Arc::new(Feed::new(queue.into(), concurrency));
        fetchers.spawn(feed::run(
            Arc::clone(&shared),
            Arc::clone(&feed),
            Arc::clone(&wake),
            claiming.clone(),
        ));
        for _ in 0..concurrency {
            slots.spawn(slot(
                Arc::clone(&shared),
                Arc::clone(&handlers),
                claiming.clone(),
                Arc::clone(&feed),
                successes.clone(),
            ));
        }
    }
    drop(successes);
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
    // Fetched tasks not started are given back; the last successes are written.
    while fetchers.join_next().await.is_some() {}
    while writer.join_next().await.is_some() {}
    background.shutdown().await;
    tracing::info!(owner = %config.owner, "worker stopped");
}

/// One execution slot: take a task from the queue's feed, run it, hand its outcome on
/// (a success to the batched writer, anything else written here), repeat.
async fn slot(
    shared: Arc<Shared>,
    handlers: Arc<HashMap<String, Handler>>,
    mut stopping: watch::Receiver<bool>,
    feed: Arc<Feed>,
    successes: mpsc::UnboundedSender<Success>,
) {
    let mut hard_stop = shared.hard_stop.subscribe();
    while let Some(task) = feed.next(&mut stopping).await {
        if feed::too_late(&shared, &task, Instant::now()) {
            // Waited in the feed too long to start safely: given back, attempt not counted.
            let lease_until = task.claimed_at + shared.config_for(&task.kind).lease;
            execution::finish(&shared, &task, Finish::Released, lease_until).await;
            continue;
        }
        shared.metrics.claimed.increment(1);
        let handler = handlers.get(&task.kind).cloned();
        let started = Instant::now();
        let pending = execution::run(Arc::clone(&shared), task, handler, &mut hard_stop).await;
        feed.ran(started.elapsed());
        match pending {
            None => {}
            // Without batching each slot writes its own success: no writer to queue behind.
            Some(done) if done.succeeded() && shared.config.claim_batch > 1 => {
                if let Err(mpsc::error::SendError(success)) = successes.send(done.into_success()) {
                    // The writer is gone (it never is while slots run): write it here.
                    execution::finish(&shared, &success.task, Finish::Succeeded, success.lease_until).await;
                }
            }
            Some(other) => execution::write(&shared, other).await,
        }
    }
}

/// Enqueues the periodic tasks whose slots come, for as long as the worker runs.
async fn schedule(shared: &Shared, periodic: &[Periodic]) {
    let every = shared.config.poll_interval.min(std::time::Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match shared
            .queue
            .enqueue_due(&shared.control, periodic, std::time::SystemTime::now())
            .await
        {
            Ok(ids) if !ids.is_empty() => tracing::debug!(?ids, "periodic tasks enqueued"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "enqueueing periodic tasks failed; will try again"),
        }
    }
}
