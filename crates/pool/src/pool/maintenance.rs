//! Background upkeep, once a second, holding only a `Weak` to the pool so it ends when the
//! pool is dropped: parked `pool.query` lanes past their term given back, idle timeout and
//! age recycling above `min_idle`, jittered keepalive pings of idle connections, `min_idle`
//! refill, leak warnings, closing connections whose requests get no answer (see
//! `unanswered`), gauges.

use std::sync::{Arc, Weak};
use std::time::Duration;

use holdfast_wire::CoarseInstant;

use super::slot::{CloseReason, Slot};
use super::Shared;

/// How often maintenance runs.
const TICK: Duration = Duration::from_secs(1);

pub(crate) fn spawn(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    shared.runtime.spawn(run(weak));
}

async fn run(pool: Weak<Shared>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(shared) = pool.upgrade() else {
            return;
        };
        if shared.lock().closed {
            return;
        }
        run_once(&shared).await;
    }
}

/// One maintenance pass.
pub(crate) async fn run_once(shared: &Arc<Shared>) {
    let config = &shared.config;
    // A `pool.query` lane parked past its term returns its connection to the idle set below.
    shared.lanes.unpark_past_term(std::time::Instant::now());
    if let Some(bound) = shared.unanswered {
        for silenced in shared.watch.take_silent(bound) {
            shared.metrics.unanswered.increment(1);
            tracing::warn!(
                pool = %config.name,
                conn = silenced.id,
                backend_pid = silenced.backend_pid,
                in_flight = silenced.in_flight,
                silent_for = ?silenced.silent_for,
                bound = ?bound,
                "closed a connection whose requests got no answer: the server never got them or cannot answer"
            );
            // Counted and logged first: its callers may look as soon as it is closed.
            let pid = silenced.backend_pid;
            silenced.close();
            if let Some(pid) = pid {
                super::abandon::terminate(shared, pid, "unanswered_timeout");
            }
        }
    }
    if let Some(after) = shared.probe_after.filter(|_| shared.backends_are_ours()) {
        for quiet in shared.watch.take_quiet(after) {
            shared
                .runtime
                .spawn(super::probe::run(Arc::clone(shared), quiet, after));
        }
    }
    let now = CoarseInstant::now();
    let mut to_close: Vec<(Box<Slot>, CloseReason)> = Vec::new();
    let mut to_ping: Vec<Box<Slot>> = Vec::new();
    {
        let mut g = shared.lock();
        let idle = std::mem::take(&mut g.idle);
        let mut remaining = idle.len();
        let mut kept = Vec::with_capacity(idle.len());
        // Oldest returned first: those are the ones to let go above min_idle.
        for slot in idle {
            let idle_too_long = config
                .idle_timeout
                .is_some_and(|t| now.saturating_duration_since(slot.idle_since) > t);
            if let Some(reason) = slot.expired(now) {
                to_close.push((slot, reason));
                remaining -= 1;
            } else if idle_too_long && remaining > config.min_idle {
                to_close.push((slot, CloseReason::Idle));
                remaining -= 1;
            } else if keepalive_due(shared, &slot) {
                to_ping.push(slot);
            } else {
                kept.push(slot);
            }
        }
        g.idle = kept;
        g.open -= to_close.len();
        if let Some(threshold) = config.leak_threshold {
            for (id, lease) in g.leases.iter_mut() {
                let held = now.saturating_duration_since(lease.since);
                if held > threshold && !lease.warned {
                    lease.warned = true;
                    shared.metrics.leaks.increment(1);
                    tracing::warn!(
                        pool = %config.name,
                        conn = id,
                        held = ?held,
                        taken_at = %lease.location,
                        "connection held longer than the leak threshold"
                    );
                }
            }
        }
        shared.publish_gauges(&g);
        shared.spawn_openers(&mut g);
    }
    for slot in to_close {
        shared.close_slot(Some(slot));
    }
    for slot in to_ping {
        shared.metrics.pings.increment(1);
        let ok = matches!(
            tokio::time::timeout(config.ping_timeout, slot.conn.batch_execute("")).await,
            Ok(Ok(()))
        ) && slot.conn.state().is_clean();
        if ok {
            shared.put(slot);
        } else {
            shared.metrics.ping_failures.increment(1);
            shared.discard(slot, CloseReason::PingFailed, false);
        }
    }
}

/// True when the server has been silent on an idle connection longer than the keepalive
/// interval, minus up to 10% jitter so that pings spread out.
fn keepalive_due(shared: &Shared, slot: &Slot) -> bool {
    let Some(interval) = shared.config.keepalive_interval else {
        return false;
    };
    let jittered = interval.mul_f64(1.0 - fastrand::f64() * 0.1);
    slot.conn.state().idle_for().is_none_or(|idle| idle > jittered)
}
