//! API latency while assemblies run: p50 and p99 of `GET /api/ai/intent-hints` with no
//! assembly running and with `--assemblies` running, alternating in rounds on one service
//! (assemblies are started for a loaded phase and cancelled after it); the figure is the
//! median over rounds of loaded p99 / idle p99.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use holdfast_pool::settings::table;
use holdfast_service::harness::http_client::request;
use holdfast_service::service::config::{self, ServeArgs};
use holdfast_service::service::serve::Service;
use holdfast_tasks::settings as task_settings;
use holdfast_tempdb::{ClusterOptions, TempCluster};
use serde_json::json;

use crate::stats::{median, quantile};

/// Options of the API latency benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Requests per phase.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Assemblies running in the loaded phases.
    #[arg(long, default_value_t = 10)]
    assemblies: u32,
    /// Idle/loaded rounds.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = TempCluster::start(ClusterOptions::demo())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Short leases: a cancelled assembly stops within a heartbeat (a third of this).
        let serve = ServeArgs::for_database(cluster.url())
            .set(&config::LISTEN, "127.0.0.1:0")
            .set(&table::STATEMENT_TIMEOUT, 30_000)
            .set(&config::ASSEMBLY_WORKERS, args.assemblies)
            .set(&config::ASSEMBLY_STEP, 50)
            .set(&task_settings::LEASE, 1500)
            .set(&task_settings::SHUTDOWN_GRACE, 100);
        let service = Service::start(&serve).await?;
        let addr = service.addr();
        phase(addr, 200).await; // warm-up
        println!(
            "GET /api/ai/intent-hints, one client, {} requests per phase; {} assemblies running in each loaded phase",
            args.requests, args.assemblies
        );
        println!("{:<8}{:>14}{:>14}{:>16}{:>16}{:>10}", "round", "idle p50 ms", "idle p99 ms", "loaded p50 ms", "loaded p99 ms", "ratio");
        let mut ratios = Vec::new();
        for round in 0..args.rounds {
            let idle = phase(addr, args.requests).await;
            let tasks = start_assemblies(addr, args.assemblies, round).await?;
            let loaded = phase(addr, args.requests).await;
            stop_assemblies(addr, &service, &tasks).await?;
            let ratio = loaded.1 / idle.1;
            ratios.push(ratio);
            println!(
                "{:<8}{:>14.3}{:>14.3}{:>16.3}{:>16.3}{:>10.3}",
                round + 1,
                idle.0,
                idle.1,
                loaded.0,
                loaded.1,
                ratio
            );
        }
        service.stop().await?;
        println!("median p99 ratio loaded / idle: {:.3} (target under 1.5)", median(&mut ratios));
        Ok(())
    })
}

/// Starts `n` assemblies long enough to outlast a phase, and waits until all run.
async fn start_assemblies(
    addr: SocketAddr,
    n: u32,
    round: usize,
) -> Result<Vec<i64>, Box<dyn std::error::Error>> {
    let t = Duration::from_secs(10);
    let mut tasks = Vec::new();
    let mut episodes = Vec::new();
    for i in 0..n {
        let body = json!({
            "title": format!("Load {round}-{i}"),
            "segments": (0..500).map(|s| json!({"text": format!("s{s}"), "duration_ms": 1000})).collect::<Vec<_>>(),
        });
        let id = request(addr, "POST", "/api/episodes", Some(&body), t).await.body["id"]
            .as_i64()
            .ok_or("episode not created")?;
        let task = request(addr, "POST", &format!("/api/episodes/{id}/assemble"), None, t)
            .await
            .body["task_id"]
            .as_i64()
            .ok_or("assembly not started")?;
        episodes.push(id);
        tasks.push(task);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut running = 0;
        for id in &episodes {
            if request(addr, "GET", &format!("/api/episodes/{id}"), None, t)
                .await
                .body["status"]
                == "assembling"
            {
                running += 1;
            }
        }
        if running == episodes.len() {
            return Ok(tasks);
        }
        if Instant::now() > deadline {
            return Err(format!("only {running} of {} assemblies started", episodes.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cancels the assemblies and waits until none runs.
async fn stop_assemblies(
    addr: SocketAddr,
    service: &Service,
    tasks: &[i64],
) -> Result<(), Box<dyn std::error::Error>> {
    let conn = service.api_pool().get().await?;
    for task in tasks {
        service.queue().cancel(&conn, *task).await?;
    }
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut running = 0;
        for task in tasks {
            let r = request(
                addr,
                "GET",
                &format!("/api/tasks/{task}"),
                None,
                Duration::from_secs(10),
            )
            .await;
            if r.body["state"] == "running" {
                running += 1;
            }
        }
        if running == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("cancelled assemblies did not stop".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` sequential requests; returns p50 ms, p99 ms and failures.
async fn phase(addr: SocketAddr, n: usize) -> (f64, f64, usize) {
    let mut ms = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = request(
            addr,
            "GET",
            "/api/ai/intent-hints?q=mu",
            None,
            Duration::from_secs(5),
        )
        .await;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if !r.ok() {
            errors += 1;
        }
    }
    (quantile(&mut ms.clone(), 0.5), quantile(&mut ms, 0.99), errors)
}
