//! The pool: [`Pool`], its public face (create, get a connection, run one statement, look at
//! its state, close), and [`Shared`], the state every handle of one pool shares.
//!
//! The files beside this one each hold one concern of the pool:
//! - `config`: the settings; `internals`: the bookkeeping behind the lock; `slot`: a
//!   connection the pool owns;
//! - `checkout`: taking a connection out (idle set, FIFO queue, checks); `release`: giving
//!   it back (to a waiter, the idle set, a reset, or closed); `reset`: rolling back and
//!   draining a connection returned dirty;
//! - `opener`: connects for unmet demand, with backoff while the database is down;
//!   `deadlines`: the task that fails waiters whose time is up; `maintenance`: the
//!   once-a-second upkeep; `unanswered`: connections whose requests get no answer;
//! - `lanes`: connections shared by [`Pool::query`]; `pooled`: a connection on loan;
//!   `statements`: statements prepared once per connection, typed and untyped;
//!   `metrics` and `status`: what the pool reports.
//!
//! Locking rule: the internals lock is never held across an `.await`, and nothing that can
//! run pool code on drop (a `PooledConnection`, a waiter's receiver) is dropped under it.
//! The lanes have a lock of their own, never taken while the internals lock is held.

mod abandon;
pub(crate) mod after_connect;
mod checkout;
pub(crate) mod config;
mod deadlines;
mod internals;
mod lane_spans;
mod lanes;
mod maintenance;
mod metrics;
mod opener;
pub(crate) mod pooled;
mod probe;
mod read;
mod release;
mod reset;
mod slot;
pub(crate) mod statements;
pub(crate) mod status;
mod unanswered;

use std::future::Future;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;
use tracing::Instrument;

use crate::error::PoolError;
use config::PoolConfig;
use internals::Internals;
use lanes::Lanes;
use metrics::PoolMetrics;
use pooled::PooledConnection;
use slot::{CloseReason, Slot};
use statements::Params;
use status::{DatabaseDown, PoolStatus};
use std::collections::HashMap;
use unanswered::Watch;

/// A pool of tapped PostgreSQL connections that never hands out a dirty or dead one.
///
/// Cheap to clone; every clone is the same pool. Background work (maintenance, connects,
/// resets) runs on the tokio runtime the pool was created in and stops when the last handle
/// and the last pooled connection are gone.
#[derive(Debug, Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Creates a pool (no connection is opened until one is needed, or `min_idle` asks for
    /// warm ones). Must be called inside a tokio runtime.
    pub fn new(config: PoolConfig) -> Result<Pool, PoolError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| PoolError::NoRuntime)?;
        let shared = Arc::new(Shared::new(config, runtime));
        maintenance::spawn(&shared);
        deadlines::spawn(&shared);
        if shared.config.min_idle > 0 {
            let mut g = shared.lock();
            shared.spawn_openers(&mut g);
        }
        Ok(Pool { shared })
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Pool {
        Pool { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Creates a pool from the environment (`DATABASE_URL`, `DB_POOL_SIZE`, ...).
    pub fn from_env() -> Result<Pool, PoolError> {
        Pool::new(PoolConfig::from_env()?)
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// Gets a connection: idle with nothing in flight, not known dead, verified when it
    /// could be stale. Waits (first come, first served) up to `pool_timeout`, also while the
    /// database is down: a caller is served as soon as a connection opens again, and only
    /// at its deadline told the cause ([`PoolError::Unavailable`]). Fails at once when the
    /// database refused in a way no wait can fix, and when `max_waiting` callers wait
    /// already ([`PoolError::Overloaded`]).
    ///
    /// Dropping the returned future at any point loses no connection and no capacity.
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<PooledConnection, PoolError>> + Send + '_ {
        let location = Location::caller();
        self.acquire(location, self.shared.config.pool_timeout)
    }

    /// Like [`get`](Self::get), waiting up to `timeout` instead of `pool_timeout` (the
    /// rest of a request's budget, say).
    #[track_caller]
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<PooledConnection, PoolError>> + Send + '_ {
        let location = Location::caller();
        self.acquire(location, timeout)
    }

    /// Like [`get`](Self::get) without waiting: an idle connection now, or at once
    /// [`PoolError::Timeout`] (every connection in use; one is opened for the next caller
    /// when there is room) or [`PoolError::Unavailable`] (the database is down, with the
    /// cause). A connection that could be stale is still verified first.
    #[track_caller]
    pub fn try_get(&self) -> impl Future<Output = Result<PooledConnection, PoolError>> + Send + '_ {
        let location = Location::caller();
        self.acquire(location, Duration::ZERO)
    }

    /// The pool's counts right now.
    pub fn status(&self) -> PoolStatus {
        self.shared.status()
    }

    /// Why the database cannot be reached, while the last connect attempt failed and none
    /// has succeeded since; `None` when it is reachable (or nothing was tried yet).
    pub fn down(&self) -> Option<DatabaseDown> {
        let g = self.shared.lock();
        g.down.as_ref().map(|d| DatabaseDown {
            cause: d.cause.clone(),
            for_how_long: d.since.elapsed(),
            failures: d.failures,
        })
    }

    /// Runs one maintenance pass now (idle timeout, recycling, keepalive pings, `min_idle`
    /// refill, leak warnings). It also runs by itself every second; tests call this to avoid
    /// waiting for it.
    pub async fn run_maintenance(&self) {
        maintenance::run_once(&self.shared).await;
    }

    /// Every connection opened before now will be verified before its next use. The pool
    /// does this by itself on disconnect-class errors; call it after an event it cannot see
    /// (a failover announced elsewhere, for example).
    pub fn invalidate_all(&self) {
        self.shared.bump_generation();
    }

    /// Closes the pool: no more connections are handed out, waiters get
    /// [`PoolError::Closed`], idle connections close now, and connections in use close as
    /// they come back (waiting at most `close_timeout` for them). Returns the number still
    /// in use when the wait ended.
    pub async fn close(&self) -> usize {
        let idle = {
            let mut g = self.shared.lock();
            g.closed = true;
            let name = self.shared.config.name.clone();
            g.fail_waiters(|| PoolError::Closed { pool: name.clone() });
            let idle: Vec<Box<Slot>> = g.idle.drain(..).collect();
            g.open -= idle.len();
            idle
        };
        // A parked lane's connection comes back, and closes as the pool is closed.
        self.shared.lanes.unpark_all();
        for slot in idle {
            self.shared.close_slot(Some((slot, CloseReason::PoolClosed)));
        }
        let deadline = tokio::time::Instant::now() + self.shared.config.close_timeout;
        loop {
            let closed = self.shared.closed_one.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            let open = self.shared.lock().open;
            if open == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                let left = self.shared.lock().in_use;
                tracing::warn!(pool = %self.shared.config.name, in_use = left, "pool closed with connections still in use");
                return left;
            }
        }
    }

    /// Runs one statement in autocommit and returns its rows. Short statements from many
    /// callers are pipelined on connections they share (see the crate README), which is
    /// far cheaper than a connection each; statements that could leave state behind
    /// (anything not starting with SELECT, INSERT, UPDATE, DELETE, MERGE, WITH, VALUES or
    /// TABLE) take a connection of their own. The statement is prepared once per
    /// connection, its parameters' types those the server infers (`$1::int8` in the SQL
    /// says which when it cannot tell).
    pub async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, PoolError> {
        self.rows(sql, Params::Untyped(params), self.config().pool_timeout)
            .await
    }

    /// Like [`query`](Self::query), with each parameter's type given (as tokio-postgres's
    /// `query_typed`): the statement is prepared for those types, and cached per text and
    /// types.
    pub async fn query_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, PoolError> {
        self.rows(sql, Params::Typed(params), self.config().pool_timeout)
            .await
    }

    /// Like [`query`](Self::query), returning the number of rows affected.
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, PoolError> {
        self.affected(sql, Params::Untyped(params), self.config().pool_timeout)
            .await
    }

    /// Like [`query_typed`](Self::query_typed), returning the number of rows affected.
    pub async fn execute_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, PoolError> {
        self.affected(sql, Params::Typed(params), self.config().pool_timeout)
            .await
    }

    /// One statement's rows, waiting for a connection (or a place on a lane) at most `wait`.
    pub(super) async fn rows(
        &self,
        sql: &str,
        params: Params<'_>,
        wait: Duration,
    ) -> Result<Vec<Row>, PoolError> {
        if !self.shares(sql) {
            return Ok(self.get_timeout(wait).await?.rows(sql, params).await?);
        }
        self.traced(sql, self.rows_on_a_lane(sql, params, wait)).await
    }

    /// Runs a lane statement in its span (see `lane_spans`), when spans are wanted.
    async fn traced<T>(
        &self,
        sql: &str,
        work: impl Future<Output = Result<T, PoolError>>,
    ) -> Result<T, PoolError> {
        let config = self.config();
        let span = lane_spans::start(&config.name, sql, config.connect.get_trace_statement_text());
        if span.is_disabled() {
            return work.await;
        }
        let result = work.instrument(span.clone()).await;
        lane_spans::end(&span, &result);
        result
    }

    async fn rows_on_a_lane(
        &self,
        sql: &str,
        params: Params<'_>,
        wait: Duration,
    ) -> Result<Vec<Row>, PoolError> {
        let deadline = deadlines::deadline_after(wait);
        let mut seat = self.seat(deadline).await?;
        let rows = seat.conn.rows(sql, params).await;
        seat.answered = true;
        drop(seat);
        match rows {
            Err(error) if lanes::regather(&error) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                Ok(self.get_timeout(left).await?.rows(sql, params).await?)
            }
            rows => Ok(rows?),
        }
    }

    async fn affected(&self, sql: &str, params: Params<'_>, wait: Duration) -> Result<u64, PoolError> {
        if !self.shares(sql) {
            return Ok(self.get_timeout(wait).await?.affected(sql, params).await?);
        }
        self.traced(sql, self.affected_on_a_lane(sql, params, wait)).await
    }

    async fn affected_on_a_lane(
        &self,
        sql: &str,
        params: Params<'_>,
        wait: Duration,
    ) -> Result<u64, PoolError> {
        let deadline = deadlines::deadline_after(wait);
        let mut seat = self.seat(deadline).await?;
        let affected = seat.conn.affected(sql, params).await;
        seat.answered = true;
        drop(seat);
        match affected {
            Err(error) if lanes::regather(&error) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                Ok(self.get_timeout(left).await?.affected(sql, params).await?)
            }
            affected => Ok(affected?),
        }
    }

    fn shares(&self, sql: &str) -> bool {
        let config = self.config();
        config.pipeline_depth > 1 && !config.connect.get_pooler().is_transaction() && lanes::shareable(sql)
    }
}

pub(crate) struct Shared {
    pub(crate) config: PoolConfig,
    internals: Mutex<Internals>,
    /// Bumped on every disconnect-class failure; connections older than the current value
    /// are verified before their next use.
    pub(crate) generation: AtomicU64,
    next_slot: AtomicU64,
    pub(crate) runtime: Handle,
    pub(crate) metrics: PoolMetrics,
    /// Signalled whenever a connection closes, for `close()` to wait on.
    pub(crate) closed_one: Notify,
    /// Whether the warning about named statements behind a pooler was logged (once).
    warned_named: AtomicBool,
    /// Connections shared by `Pool::query` and `Pool::execute`.
    pub(crate) lanes: Lanes,
    /// Wakes the deadline keeper (a waiter with an earlier deadline, or the pool dropped).
    pub(crate) deadline_keeper: Arc<Notify>,
    /// How long a connection with requests in flight may hear nothing before it is closed
    /// (resolved from `config.unanswered_timeout`), and the connections watched for it.
    pub(crate) unanswered: Option<Duration>,
    /// When to ask the server about an unanswered request (`config.probe_after`; never
    /// behind a transaction pooler, where the backend is not the connection's own).
    pub(crate) probe_after: Option<Duration>,
    /// A probe found that backend pids are not the server's (a pooler in between): no
    /// probing, no terminating (see `abandon`).
    pub(crate) foreign_pids: AtomicBool,
    /// Bumped when a cached statement turned out stale (a schema change): every
    /// connection's statement cache of an older epoch starts afresh.
    statement_epoch: AtomicU64,
    pub(crate) watch: Watch,
    /// Wakes stalled connects to check whether they were given up.
    pub(crate) give_up: Notify,
    /// Behind a transaction-mode pooler: the parameter types the server inferred for
    /// untyped statements, by SQL text.
    pooler_types: Mutex<HashMap<String, Vec<Type>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The keeper holds only a Weak: woken, it finds the pool gone and ends.
        self.deadline_keeper.notify_one();
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.config.name)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Parameter types learned for `sql` behind a transaction-mode pooler.
    pub(crate) fn pooler_types(&self, sql: &str) -> Option<Vec<Type>> {
        self.pooler_types
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned()
    }

    /// The current statement epoch (see `statements`).
    pub(crate) fn statement_epoch(&self) -> u64 {
        self.statement_epoch.load(Ordering::Acquire)
    }

    /// A cached statement was stale: every connection prepares its statements again.
    pub(crate) fn statements_went_stale(&self) {
        self.statement_epoch.fetch_add(1, Ordering::AcqRel);
        self.metrics.stale_statements.increment(1);
    }

    pub(crate) fn remember_pooler_types(&self, sql: &str, types: &[Type]) {
        self.pooler_types
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql.to_string(), types.to_vec());
    }

    pub(crate) fn new(config: PoolConfig, runtime: Handle) -> Shared {
        Shared {
            metrics: PoolMetrics::new(&config.name),
            unanswered: config.unanswered_timeout.resolve(&config),
            probe_after: config
                .probe_after
                .filter(|_| !config.connect.get_pooler().is_transaction()),
            foreign_pids: AtomicBool::new(false),
            statement_epoch: AtomicU64::new(0),
            watch: Watch::default(),
            give_up: Notify::new(),
            config,
            internals: Mutex::new(Internals::default()),
            generation: AtomicU64::new(0),
            next_slot: AtomicU64::new(0),
            runtime,
            closed_one: Notify::new(),
            lanes: Lanes::default(),
            deadline_keeper: Arc::new(Notify::new()),
            warned_named: AtomicBool::new(false),
            pooler_types: Mutex::new(HashMap::new()),
        }
    }

    /// A loan prepared a named statement outside a transaction behind a transaction-mode
    /// pooler: counted, and explained once in the log.
    pub(crate) fn named_statement_behind_pooler(&self) {
        self.metrics.named_behind_pooler.increment(1);
        if !self.warned_named.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                pool = %self.config.name,
                "a named prepared statement was used outside a transaction behind a transaction-mode pooler: \
                 the pooler may run it on another server connection, where it does not exist (SQLSTATE 26000) \
                 or another one of the same name does (42P05); use query_cached / execute_cached or \
                 tokio-postgres' query_typed, or run it inside a transaction"
            );
        }
    }

    /// The internals; a panic elsewhere never poisons the pool for good.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Internals> {
        self.internals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn status(&self) -> PoolStatus {
        let g = self.lock();
        self.status_of(&g)
    }

    /// Callers waiting for a connection: in the pool's queue, and callers of
    /// `query`/`execute` waiting for the lane another caller is making.
    pub(crate) fn waiting(&self, g: &Internals) -> usize {
        g.waiters.len() + self.lanes.awaiting.load(Ordering::Relaxed)
    }

    /// Publishes the pool's gauges (see [`PoolMetrics::gauges`]).
    pub(crate) fn publish_gauges(&self, g: &Internals) {
        self.metrics.gauges(&self.status_of(g));
    }

    /// The pool's counts. A `pool.query` lane parked for the next statement counts as idle:
    /// a checkout that finds no other takes it back.
    pub(crate) fn status_of(&self, g: &Internals) -> PoolStatus {
        let parked = self.lanes.parked();
        PoolStatus {
            open: g.open,
            idle: g.idle.len() + parked,
            in_use: g.in_use.saturating_sub(parked),
            waiting: self.waiting(g),
            opening: g.opening,
            max: self.config.max_size(),
            database_down: g.down.is_some(),
        }
    }
}
