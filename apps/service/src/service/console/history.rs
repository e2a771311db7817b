//! What the console charts: each pool's counts sampled once a second over the last
//! [`WINDOW`] samples, and the fault counters (disconnects, resets, broken connections,
//! lost-COMMIT resolutions) read from the service's own Prometheus recorder, so that the
//! console can say how many happened in that window as well as since start.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast::pool::PoolStatus;
use holdfast::Pool;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::prom;

/// Samples kept: ten minutes at one a second.
pub const WINDOW: usize = 600;
/// Time between samples.
pub const EVERY: Duration = Duration::from_secs(1);

/// The counters the console shows, each a Prometheus metric and the labels it sums over.
pub const COUNTERS: &[Counter] = &[
    Counter {
        what: "disconnects seen (every connection verified before its next use)",
        metric: "holdfast_pool_disconnect_generations_total",
        labels: &[],
    },
    Counter {
        what: "connections closed broken or failing their check",
        metric: "holdfast_pool_connections_closed_total",
        labels: &[
            ("reason", "broken"),
            ("reason", "ping_failed"),
            ("reason", "reset_failed"),
        ],
    },
    Counter {
        what: "connections reset on return: transaction rolled back",
        metric: "holdfast_pool_resets_total",
        labels: &[("kind", "rollback")],
    },
    Counter {
        what: "connections reset on return: requests drained",
        metric: "holdfast_pool_resets_total",
        labels: &[("kind", "drain")],
    },
    Counter {
        what: "lost COMMIT replies resolved: committed",
        metric: "holdfast_tx_commit_outcomes_resolved_total",
        labels: &[("outcome", "committed")],
    },
    Counter {
        what: "lost COMMIT replies resolved: aborted",
        metric: "holdfast_tx_commit_outcomes_resolved_total",
        labels: &[("outcome", "aborted")],
    },
    Counter {
        what: "lost COMMIT replies left unknown",
        metric: "holdfast_tx_commit_outcomes_resolved_total",
        labels: &[("outcome", "unknown")],
    },
    Counter {
        what: "transactions retried",
        metric: "holdfast_tx_retries_total",
        labels: &[],
    },
];

/// One counter the console shows.
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    /// What it counts, in words.
    pub what: &'static str,
    /// The Prometheus metric.
    pub metric: &'static str,
    /// The labels summed over (any of the values of a label listed twice; all when empty).
    pub labels: &'static [(&'static str, &'static str)],
}

/// The samples of one pool, oldest first.
#[derive(Debug, Clone)]
pub struct PoolHistory {
    /// The pool's name.
    pub name: String,
    /// Its counts, one a second.
    pub samples: VecDeque<PoolStatus>,
}

/// Everything sampled so far.
#[derive(Debug, Default)]
pub struct History {
    pools: Vec<PoolHistory>,
    /// The counters' values, oldest first, one row per sample (in [`COUNTERS`]'s order).
    counters: VecDeque<Vec<f64>>,
}

impl History {
    /// The pools' samples.
    pub fn pools(&self) -> &[PoolHistory] {
        &self.pools
    }

    /// Each counter's value now and its increase over the kept window (`None` without a
    /// recorder).
    pub fn counters(&self) -> Option<Vec<(f64, f64)>> {
        let newest = self.counters.back()?;
        let oldest = self.counters.front()?;
        Some(
            newest
                .iter()
                .zip(oldest)
                .map(|(n, o)| (*n, (n - o).max(0.0)))
                .collect(),
        )
    }

    /// Adds one sample of every pool and counter.
    pub fn sample(&mut self, pools: &[Pool], metrics: Option<&PrometheusHandle>) {
        for pool in pools {
            let name = pool.config().name.clone();
            let index = match self.pools.iter().position(|p| p.name == name) {
                Some(i) => i,
                None => {
                    self.pools.push(PoolHistory {
                        name,
                        samples: VecDeque::with_capacity(WINDOW),
                    });
                    self.pools.len() - 1
                }
            };
            let samples = &mut self.pools[index].samples;
            if samples.len() == WINDOW {
                samples.pop_front();
            }
            samples.push_back(pool.status());
        }
        if let Some(handle) = metrics {
            let text = handle.render();
            let row = COUNTERS
                .iter()
                .map(|c| prom::sum(&text, c.metric, c.labels))
                .collect();
            if self.counters.len() == WINDOW {
                self.counters.pop_front();
            }
            self.counters.push_back(row);
        }
    }
}

/// Samples `pools` every [`EVERY`] into `history` until the returned handle is dropped.
pub fn spawn_sampler(
    pools: Vec<Pool>,
    metrics: Option<Arc<PrometheusHandle>>,
    history: Arc<Mutex<History>>,
) -> Sampler {
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if let Ok(mut h) = history.lock() {
                h.sample(&pools, metrics.as_deref());
            }
        }
    });
    Sampler(task)
}

/// The sampling task; dropping it stops the sampling (and lets go of the pools).
#[derive(Debug)]
pub struct Sampler(tokio::task::JoinHandle<()>);

impl Drop for Sampler {
    fn drop(&mut self) {
        self.0.abort();
    }
}
