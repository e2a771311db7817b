//! One sample a second: the service's pools (from its `/metrics`), the API as the clients
//! saw it, tasks by state (from the database), and resets, retries and discarded
//! connections over that second.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use holdfast::Pool;
use serde::Serialize;

use super::traffic::{lock, Ledger, Outcome};
use crate::harness::http_client::fetch;
use crate::harness::prom;

/// The pools a service has, by their `pool` label.
pub const POOLS: [&str; 3] = ["api", "assembly", "tasks"];

/// A pool at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PoolSample {
    /// Connections open.
    pub open: f64,
    /// Open and idle.
    pub idle: f64,
    /// Handed out.
    pub in_use: f64,
    /// Callers waiting for one.
    pub waiting: f64,
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    /// End of the second, from the start of the run.
    pub t_s: f64,
    /// The service's pools (empty when its `/metrics` did not answer).
    pub pools: BTreeMap<String, PoolSample>,
    /// API requests answered (or given up on) in this second.
    pub requests: u64,
    /// Of which succeeded.
    pub ok: u64,
    /// Failures by kind (`http 503`, `timeout`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Latency percentiles of this second's requests, milliseconds.
    pub p50_ms: f64,
    /// 95th.
    pub p95_ms: f64,
    /// 99th.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
    /// The run's assembly tasks by state (empty when the database did not answer).
    pub tasks: BTreeMap<String, i64>,
    /// Connections reset on return (rollback, drain, reset query) in this second.
    pub resets: f64,
    /// Transactions and task attempts retried in this second.
    pub retries: f64,
    /// Connections closed as broken in this second.
    pub discarded: f64,
    /// The fault in force, if any.
    pub fault: Option<String>,
}

/// Takes the samples.
#[derive(Debug)]
pub struct Sampler {
    service: SocketAddr,
    admin: Pool,
    schema: String,
    since: SystemTime,
    seen: usize,
    counters: Option<[f64; 3]>,
}

impl Sampler {
    /// Samples `service`; tasks are those of `schema` created since `since`.
    pub fn new(service: SocketAddr, admin: Pool, schema: String, since: SystemTime) -> Sampler {
        Sampler {
            service,
            admin,
            schema,
            since,
            seen: 0,
            counters: None,
        }
    }

    /// The sample for the second that ends now.
    pub async fn take(&mut self, ledger: &Ledger, fault: Option<String>) -> Sample {
        let t_s = (ledger.now_s() * 10.0).round() / 10.0;
        let fresh: Vec<Outcome> = {
            let outcomes = lock(&ledger.outcomes);
            let fresh = outcomes[self.seen.min(outcomes.len())..].to_vec();
            self.seen = outcomes.len();
            fresh
        };
        let mut sample = Sample {
            t_s,
            fault,
            requests: fresh.len() as u64,
            ok: fresh.iter().filter(|o| o.ok).count() as u64,
            ..Sample::default()
        };
        for kind in fresh.iter().filter_map(Outcome::error_kind) {
            *sample.errors.entry(kind).or_default() += 1;
        }
        let mut ms: Vec<f64> = fresh.iter().map(Outcome::ms).collect();
        ms.sort_by(f64::total_cmp);
        sample.p50_ms = percentile(&ms, 0.50);
        sample.p95_ms = percentile(&ms, 0.95);
        sample.p99_ms = percentile(&ms, 0.99);
        sample.max_ms = ms.last().copied().unwrap_or(0.0);
        let (metrics, tasks) = tokio::join!(self.metrics(), self.tasks());
        if let Some(text) = metrics {
            self.read_metrics(&text, &mut sample);
        }
        sample.tasks = tasks.unwrap_or_default();
        sample
    }

    async fn metrics(&self) -> Option<String> {
        let reply = fetch(self.service, "GET", "/metrics", None, Duration::from_millis(900))
            .await
            .ok()?;
        (reply.status == 200).then_some(reply.text)
    }

    fn read_metrics(&mut self, text: &str, sample: &mut Sample) {
        for pool in POOLS {
            let label = [("pool", pool)];
            let read = |name: &str| prom::sum(text, name, &label);
            if prom::has(text, "holdfast_pool_open") {
                sample.pools.insert(
                    pool.to_string(),
                    PoolSample {
                        open: read("holdfast_pool_open"),
                        idle: read("holdfast_pool_idle"),
                        in_use: read("holdfast_pool_in_use"),
                        waiting: read("holdfast_pool_waiting"),
                    },
                );
            }
        }
        let ours: Vec<(&str, &str)> = POOLS.iter().map(|p| ("pool", *p)).collect();
        let broken: Vec<(&str, &str)> = ours
            .iter()
            .copied()
            .chain([
                ("reason", "broken"),
                ("reason", "ping_failed"),
                ("reason", "reset_failed"),
            ])
            .collect();
        let now = [
            prom::sum(text, "holdfast_pool_resets_total", &ours),
            prom::sum(text, "holdfast_tx_retries_total", &[])
                + prom::sum(text, "holdfast_tasks_retried_total", &[]),
            prom::sum(text, "holdfast_pool_connections_closed_total", &broken),
        ];
        if let Some(before) = self.counters {
            sample.resets = (now[0] - before[0]).max(0.0);
            sample.retries = (now[1] - before[1]).max(0.0);
            sample.discarded = (now[2] - before[2]).max(0.0);
        }
        self.counters = Some(now);
    }

    async fn tasks(&self) -> Option<BTreeMap<String, i64>> {
        let query = async {
            let conn = self.admin.get().await.ok()?;
            let sql = format!(
                "SELECT state::text, count(*) FROM {}.tasks WHERE kind = 'assemble' AND created_at >= $1 GROUP BY 1",
                self.schema
            );
            let rows = conn.query(&sql, &[&self.since]).await.ok()?;
            Some(
                rows.iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                    .collect(),
            )
        };
        tokio::time::timeout(Duration::from_millis(900), query)
            .await
            .ok()
            .flatten()
    }
}

/// The `q` quantile of sorted values (nearest rank); 0 when there are none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
