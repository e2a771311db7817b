//! `holdfast demo`: the incident's smoke test, played for real. A throwaway PostgreSQL, the
//! fault proxy in front of it, the service behind the proxy; several assemblies start while
//! API clients keep asking; every database connection is killed mid-assembly, later the
//! database restarts. Live progress, then a report and a verdict: the exit code is non-zero
//! if anything is stuck or lost.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast::pool::{ConnectConfig, PoolConfig};
use holdfast::Pool;
use holdfast_faults::FaultProxy;
use holdfast_tempdb::{ClusterOptions, StopMode, TempCluster};
use serde_json::json;

use crate::config::{self, ServeArgs};
use crate::db_target::Target;
use crate::http_client::request;
use crate::prom;
use crate::serve::{prometheus, Service};
use holdfast::pool::settings::table;
use holdfast::tasks::settings as task_settings;

/// Options of `holdfast demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Assemblies to start.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub assemblies: u32,
    /// Segments per episode (one mixing step each).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub segments: u32,
    /// Mixing time per segment, in milliseconds.
    #[arg(long, default_value_t = 120)]
    pub step_ms: u64,
    /// Concurrent API clients running while assemblies do.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub api_clients: u32,
    /// Faults to play, in order: `reset` (kill every connection through the proxy
    /// mid-assembly), `restart` (restart the database once); `none` for a clean run.
    #[arg(long, value_delimiter = ',', default_value = "reset,restart")]
    pub faults: Vec<Fault>,
    /// Give up (and report what is stuck) after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Assembly workers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Use this database instead of a throwaway one (the proxy still goes in front; the
    /// restart fault is skipped, the database is not the demo's to restart).
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

/// A fault the demo plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// Reset every database connection through the proxy.
    Reset,
    /// Restart the database (fast shutdown, then start).
    Restart,
    /// Play no fault.
    None,
}

/// What the demo found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Assemblies that finished.
    pub completed: u32,
    /// Assemblies that failed for good.
    pub failed: u32,
    /// Assemblies neither finished nor failed at the end.
    pub stuck: u32,
    /// Assembled episodes whose transcript is not exactly one line per segment.
    pub lost_or_doubled: u32,
    /// Tasks for the episodes that are not exactly one per assembly started.
    pub task_mismatch: i64,
    /// Sessions left idle in a transaction on the server.
    pub idle_in_transaction: i64,
    /// API requests answered 2xx.
    pub api_ok: u64,
    /// API requests that failed (any other status, or no answer).
    pub api_failed: u64,
    /// API latency percentiles, milliseconds.
    pub api_p50_ms: f64,
    /// 99th percentile.
    pub api_p99_ms: f64,
    /// Most API connections in use at once.
    pub api_pool_peak: usize,
    /// Connections the proxy reset or closed.
    pub connections_killed: u64,
    /// Pool connections closed as broken or failed checks.
    pub connections_discarded: u64,
    /// Transaction retries and task attempts retried.
    pub retries: u64,
    /// Commit outcomes resolved from the server after a lost reply.
    pub commits_resolved: u64,
    /// Faults played, with when.
    pub events: Vec<String>,
    /// Wall time.
    pub seconds: f64,
}

impl Report {
    /// Nothing stuck, nothing lost or doubled, no session left in a transaction.
    pub fn passed(&self) -> bool {
        self.stuck == 0
            && self.lost_or_doubled == 0
            && self.task_mismatch == 0
            && self.idle_in_transaction == 0
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "\nholdfast demo: the incident's smoke test, {:.1} s\n",
            self.seconds
        ));
        for e in &self.events {
            out.push_str(&format!("  fault: {e}\n"));
        }
        out.push_str(&format!(
            "  assemblies      completed {}, failed {}, stuck {}\n",
            self.completed, self.failed, self.stuck
        ));
        out.push_str(&format!(
            "  data            transcripts lost or doubled {}, task/episode mismatches {}, sessions idle in transaction {}\n",
            self.lost_or_doubled, self.task_mismatch, self.idle_in_transaction
        ));
        let total = self.api_ok + self.api_failed;
        out.push_str(&format!(
            "  API requests    ok {} / failed {} ({:.1}% ok), p50 {:.1} ms, p99 {:.1} ms\n",
            self.api_ok,
            self.api_failed,
            if total == 0 {
                100.0
            } else {
                self.api_ok as f64 * 100.0 / total as f64
            },
            self.api_p50_ms,
            self.api_p99_ms
        ));
        out.push_str(&format!(
            "  connections     API pool peak in use {}, killed by faults {}, discarded by pools {}\n",
            self.api_pool_peak, self.connections_killed, self.connections_discarded
        ));
        out.push_str(&format!(
            "  recovery        retries {}, commit outcomes resolved from the server {}\n",
            self.retries, self.commits_resolved
        ));
        out.push_str(&format!(
            "  verdict         {}\n",
            if self.passed() {
                "PASS: nothing stuck, nothing lost"
            } else {
                "FAIL"
            }
        ));
        out
    }
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<Report, String> {
    let started = Instant::now();
    let metrics = prometheus();
    let (cluster, direct) = match &args.database_url {
        Some(url) => (None, url.clone()),
        None => {
            println!("starting a throwaway PostgreSQL and the fault proxy...");
            let cluster = tokio::task::spawn_blocking(|| TempCluster::start(ClusterOptions::demo()))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let url = cluster.url();
            (Some(Arc::new(cluster)), url)
        }
    };
    let target = Target::parse(&direct)?;
    let upstream = target.resolve().await?;
    let proxy = FaultProxy::start_local(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let via = target.through(proxy.port());
    let serve = ServeArgs::for_database(via)
        .set(&config::LISTEN, "127.0.0.1:0")
        .set(&table::POOL_SIZE, 4)
        .set(&table::MAX_OVERFLOW, 4)
        .set(&table::STATEMENT_TIMEOUT, 30_000)
        .set(&config::ASSEMBLY_WORKERS, args.workers)
        .set(&config::ASSEMBLY_STEP, args.step_ms)
        .set(&task_settings::LEASE, 3000)
        .set(&task_settings::SHUTDOWN_GRACE, 2000);
    let service = Service::start(&serve).await.map_err(|e| e.to_string())?;
    let addr = service.addr();
    let admin = Pool::new(
        PoolConfig::new(
            ConnectConfig::from_url(&direct)
                .map_err(|e| e.to_string())?
                .application_name("holdfast-demo"),
        )
        .pool_size(2),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "service on http://{addr}, database behind the proxy on port {}",
        proxy.port()
    );

    // Episodes and their assemblies.
    let timeout = Duration::from_secs(10);
    let mut episodes = Vec::new();
    for n in 0..args.assemblies {
        let body = json!({
            "title": format!("Episode {}", n + 1),
            "segments": (0..args.segments).map(|i| json!({"text": format!("segment {i} of episode {}", n + 1), "duration_ms": 1500})).collect::<Vec<_>>(),
        });
        let created = request(addr, "POST", "/api/episodes", Some(&body), timeout).await;
        let id = created.body["id"]
            .as_i64()
            .ok_or(format!("creating an episode failed: {created:?}"))?;
        let started = request(
            addr,
            "POST",
            &format!("/api/episodes/{id}/assemble"),
            None,
            timeout,
        )
        .await;
        if !started.ok() {
            return Err(format!("starting assembly {id} failed: {started:?}"));
        }
        episodes.push(id);
    }

    // API clients, all the time.
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<(bool, f64)>::new()));
    let mut clients = Vec::new();
    for c in 0..args.api_clients {
        let (stop, latencies, episodes) = (Arc::clone(&stop), Arc::clone(&latencies), episodes.clone());
        clients.push(tokio::spawn(async move {
            let mut i = c as usize;
            while !stop.load(Ordering::Relaxed) {
                let path = if i.is_multiple_of(2) {
                    "/api/ai/intent-hints?q=mu".to_string()
                } else {
                    format!("/api/episodes/{}", episodes[i % episodes.len()])
                };
                let t = Instant::now();
                let reply = request(addr, "GET", &path, None, Duration::from_secs(5)).await;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                latencies.lock().map(|mut l| l.push((reply.ok(), ms))).ok();
                i += 1;
            }
        }));
    }

    // Watch, play the faults at the right moments, draw progress.
    let faults: Vec<Fault> = args
        .faults
        .iter()
        .copied()
        .filter(|f| *f != Fault::None)
        .collect();
    let mut report = Report::default();
    let mut next_fault = 0;
    let tty = std::io::stdout().is_terminal();
    let mut drawn = 0usize;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let mut last_line = Instant::now();
    loop {
        let progress = progress(&admin, &episodes).await;
        report.api_pool_peak = report.api_pool_peak.max(service.api_pool().status().in_use);
        let mean = if progress.is_empty() {
            0.0
        } else {
            progress.iter().map(|p| p.1).sum::<f32>() / progress.len() as f32
        };
        if next_fault < faults.len() && mean >= 25.0 + 30.0 * next_fault as f32 {
            let at = started.elapsed().as_secs_f64();
            match faults[next_fault] {
                Fault::Reset => {
                    let n = proxy.reset_all();
                    report.events.push(format!(
                        "{at:.1} s: reset all {n} database connections through the proxy"
                    ));
                }
                Fault::Restart => match &cluster {
                    Some(cluster) => {
                        let c = Arc::clone(cluster);
                        tokio::task::spawn_blocking(move || c.restart(StopMode::Fast))
                            .await
                            .map_err(|e| e.to_string())?
                            .map_err(|e| e.to_string())?;
                        report.events.push(format!("{at:.1} s: restarted the database"));
                    }
                    None => report.events.push(format!(
                        "{at:.1} s: restart skipped (not the demo's own database)"
                    )),
                },
                Fault::None => {}
            }
            next_fault += 1;
        }
        let (ok, total) = latencies
            .lock()
            .map(|l| (l.iter().filter(|x| x.0).count(), l.len()))
            .unwrap_or((0, 0));
        if tty {
            drawn = draw(&progress, ok, total, drawn);
        } else if last_line.elapsed() >= Duration::from_secs(2) {
            last_line = Instant::now();
            let done = progress.iter().filter(|p| final_status(&p.0)).count();
            println!(
                "{:>5.1} s  assemblies done {done}/{}  mean progress {mean:.0}%  API ok {ok}/{total}",
                started.elapsed().as_secs_f64(),
                progress.len()
            );
        }
        if progress.len() == episodes.len()
            && progress.iter().all(|p| final_status(&p.0))
            && next_fault == faults.len()
        {
            break;
        }
        if Instant::now() >= deadline {
            println!("timed out after {} s", args.timeout_s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }

    // The verdict, from the database itself (directly, not through the proxy).
    let progress = progress(&admin, &episodes).await;
    report.completed = progress.iter().filter(|p| p.0 == "assembled").count() as u32;
    report.failed = progress.iter().filter(|p| p.0 == "failed").count() as u32;
    report.stuck = episodes.len() as u32 - report.completed - report.failed;
    check_data(&admin, &episodes, args.segments, &mut report).await?;
    let lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    report.api_ok = lat.iter().filter(|x| x.0).count() as u64;
    report.api_failed = lat.len() as u64 - report.api_ok;
    let mut ms: Vec<f64> = lat.iter().map(|x| x.1).collect();
    ms.sort_by(f64::total_cmp);
    report.api_p50_ms = percentile(&ms, 0.5);
    report.api_p99_ms = percentile(&ms, 0.99);
    report.connections_killed = proxy.counters().faults_fired;
    if let Some(m) = &metrics {
        let text = m.render();
        let broken = [
            ("reason", "broken"),
            ("reason", "ping_failed"),
            ("reason", "reset_failed"),
        ];
        report.connections_discarded =
            prom::sum(&text, "holdfast_pool_connections_closed_total", &broken) as u64;
        report.retries = (prom::sum(&text, "holdfast_tx_retries_total", &[])
            + prom::sum(&text, "holdfast_tasks_retried_total", &[])) as u64;
        report.commits_resolved = prom::sum(&text, "holdfast_tx_commit_outcomes_resolved_total", &[]) as u64;
    }
    service.stop().await.map_err(|e| e.to_string())?;
    admin.close().await;
    drop(proxy);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn final_status(status: &str) -> bool {
    status == "assembled" || status == "failed"
}

async fn progress(admin: &Pool, episodes: &[i64]) -> Vec<(String, f32)> {
    let Ok(conn) = admin.get().await else {
        return Vec::new();
    };
    match conn
        .query(
            "SELECT status, progress FROM episodes WHERE id = ANY($1) ORDER BY id",
            &[&episodes],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(_) => Vec::new(),
    }
}

/// Every assembled episode has exactly one transcript line per segment; every episode has
/// exactly the tasks it was given; no session is idle in a transaction.
async fn check_data(
    admin: &Pool,
    episodes: &[i64],
    segments: u32,
    report: &mut Report,
) -> Result<(), String> {
    let conn = admin.get().await.map_err(|e| e.to_string())?;
    let bad: i64 = conn
        .query_one(
            "SELECT count(*) FROM episodes e
             WHERE e.id = ANY($1) AND e.status = 'assembled'
               AND (SELECT count(*) FROM transcript_lines t WHERE t.episode_id = e.id) <> $2",
            &[&episodes, &i64::from(segments)],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    report.lost_or_doubled = bad as u32;
    let tasks: i64 = conn
        .query_one(
            "SELECT count(*) FROM holdfast.tasks WHERE kind = 'assemble' AND (payload->>'episode')::bigint = ANY($1)",
            &[&episodes],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    report.task_mismatch = tasks - episodes.len() as i64;
    report.idle_in_transaction = conn
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Draws a progress bar per assembly, redrawing in place; returns the lines drawn.
fn draw(progress: &[(String, f32)], ok: usize, total: usize, previous: usize) -> usize {
    let mut out = String::new();
    if previous > 0 {
        out.push_str(&format!("\x1b[{previous}A"));
    }
    for (i, (status, pct)) in progress.iter().enumerate() {
        let filled = (*pct as usize * 30 / 100).min(30);
        out.push_str(&format!(
            "\x1b[2K  episode {:>3} [{}{}] {:>3.0}% {status}\n",
            i + 1,
            "#".repeat(filled),
            ".".repeat(30 - filled),
            pct
        ));
    }
    out.push_str(&format!("\x1b[2K  API requests ok {ok}/{total}\n"));
    print!("{out}");
    let _ = std::io::stdout().flush();
    progress.len() + 1
}
