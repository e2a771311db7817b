//! The pool's numbers, through the `metrics` facade. Handles are registered once when the
//! pool is created (install a recorder before that), so the hot path only bumps them.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use super::slot::CloseReason;
use super::status::PoolStatus;

const REASONS: [CloseReason; 8] = [
    CloseReason::Recycled,
    CloseReason::Idle,
    CloseReason::Broken,
    CloseReason::Overflow,
    CloseReason::ResetFailed,
    CloseReason::PingFailed,
    CloseReason::PoolClosed,
    CloseReason::WrongRole,
];

/// What was done to a connection returned dirty.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ResetKind {
    /// Waited for requests still in flight (after cancelling them).
    Drain,
    /// Rolled back an open or failed transaction.
    Rollback,
    /// Ran the configured reset query.
    Query,
}

pub(crate) struct PoolMetrics {
    pub(crate) acquired: Counter,
    pub(crate) timeouts: Counter,
    pub(crate) unavailable: Counter,
    pub(crate) overloaded: Counter,
    pub(crate) opened: Counter,
    pub(crate) connect_failures: Counter,
    closed: [Counter; 8],
    resets: [Counter; 3],
    pub(crate) pings: Counter,
    pub(crate) ping_failures: Counter,
    pub(crate) leaks: Counter,
    pub(crate) unanswered: Counter,
    pub(crate) backends_terminated: Counter,
    pub(crate) stale_statements: Counter,
    pub(crate) after_connect_failures: Counter,
    pub(crate) disconnects: Counter,
    pub(crate) named_behind_pooler: Counter,
    pub(crate) wait: Histogram,
    pub(crate) held: Histogram,
    open: Gauge,
    idle: Gauge,
    in_use: Gauge,
    waiting: Gauge,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolMetrics")
    }
}

impl PoolMetrics {
    pub(crate) fn new(pool: &str) -> PoolMetrics {
        let p = pool.to_string();
        let counter = |name: &'static str| metrics::counter!(name, "pool" => p.clone());
        let gauge = |name: &'static str| metrics::gauge!(name, "pool" => p.clone());
        PoolMetrics {
            acquired: counter("holdfast_pool_acquired_total"),
            timeouts: counter("holdfast_pool_acquire_timeouts_total"),
            unavailable: counter("holdfast_pool_acquire_unavailable_total"),
            overloaded: counter("holdfast_pool_acquire_overloaded_total"),
            opened: counter("holdfast_pool_connections_opened_total"),
            connect_failures: counter("holdfast_pool_connect_failures_total"),
            closed: REASONS.map(|r| {
                metrics::counter!("holdfast_pool_connections_closed_total", "pool" => p.clone(), "reason" => r.label())
            }),
            resets: ["drain", "rollback", "reset_query"]
                .map(|k| metrics::counter!("holdfast_pool_resets_total", "pool" => p.clone(), "kind" => k)),
            pings: counter("holdfast_pool_pings_total"),
            ping_failures: counter("holdfast_pool_ping_failures_total"),
            leaks: counter("holdfast_pool_leaks_total"),
            unanswered: counter("holdfast_pool_unanswered_closed_total"),
            backends_terminated: counter("holdfast_pool_abandoned_backends_terminated_total"),
            stale_statements: counter("holdfast_pool_stale_statements_total"),
            after_connect_failures: counter("holdfast_pool_after_connect_failures_total"),
            disconnects: counter("holdfast_pool_disconnect_generations_total"),
            named_behind_pooler: counter("holdfast_pool_named_statements_behind_pooler_total"),
            wait: metrics::histogram!("holdfast_pool_acquire_wait_seconds", "pool" => p.clone()),
            held: metrics::histogram!("holdfast_pool_held_seconds", "pool" => p.clone()),
            open: gauge("holdfast_pool_open"),
            idle: gauge("holdfast_pool_idle"),
            in_use: gauge("holdfast_pool_in_use"),
            waiting: gauge("holdfast_pool_waiting"),
        }
    }

    /// An abandoned backend's termination ended: counted when it was still there.
    pub(crate) fn terminated(&self, terminated: bool) {
        if terminated {
            self.backends_terminated.increment(1);
        }
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.closed[i].increment(1);
        }
    }

    pub(crate) fn reset(&self, kind: ResetKind) {
        self.resets[kind as usize].increment(1);
    }

    pub(crate) fn seconds(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    /// Publishes the gauges: once a second from maintenance, and on the slow paths (a
    /// connection opened or discarded, a caller starting to wait). The fast paths (an idle
    /// connection taken or given back) leave them to the next update: a shared gauge written
    /// on every checkout would bounce its cache line between every core.
    ///
    /// The counts are [`PoolStatus`]'s: `waiting` counts the pool's queue and the callers of
    /// `query`/`execute` waiting for the lane another caller is making, `idle` a lane parked
    /// for the next statement.
    pub(crate) fn gauges(&self, status: &PoolStatus) {
        self.open.set(status.open as f64);
        self.idle.set(status.idle as f64);
        self.in_use.set(status.in_use as f64);
        self.waiting.set(status.waiting as f64);
    }
}
