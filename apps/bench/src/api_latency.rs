//! API latency while assemblies run: p50 and p99 of `GET /api/ai/intent-hints` with no
//! assembly running, with `--assemblies` running (each longer than the measurement), and with
//! none again, in one run; the ratio is loaded p99 over the idle p99s.

use std::time::{Duration, Instant};

use holdfast_service::config::ServeArgs;
use holdfast_service::http_client::request;
use holdfast_service::serve::Service;
use holdfast_tempdb::{ClusterOptions, TempCluster};
use serde_json::json;

use crate::stats::quantile;

/// Options of the API latency benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Requests per phase.
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    /// Assemblies running in the loaded phase.
    #[arg(long, default_value_t = 10)]
    assemblies: u32,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = TempCluster::start(ClusterOptions::demo())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let serve = ServeArgs {
            database_url: cluster.url(),
            tasks_database_url: None,
            listen: "127.0.0.1:0".parse()?,
            pool_size: 5,
            max_overflow: 10,
            api_pool_timeout_ms: 2000,
            statement_timeout_ms: 30_000,
            assembly_workers: args.assemblies,
            assembly_step_ms: 50,
            task_lease_ms: 30_000,
            task_schema: "holdfast".into(),
            shutdown_grace_ms: 100,
        };
        let service = Service::start(&serve).await?;
        let addr = service.addr();
        let idle_before = phase(addr, args.requests).await;
        // Assemblies long enough to outlast the loaded phase: many 50 ms steps each, every
        // step a transaction through the workers' own pool.
        let mut ids = Vec::new();
        for n in 0..args.assemblies {
            let body = json!({
                "title": format!("Load {n}"),
                "segments": (0..400).map(|i| json!({"text": format!("s{i}"), "duration_ms": 1000})).collect::<Vec<_>>(),
            });
            let id = request(addr, "POST", "/api/episodes", Some(&body), Duration::from_secs(10)).await.body["id"]
                .as_i64()
                .ok_or("episode not created")?;
            request(addr, "POST", &format!("/api/episodes/{id}/assemble"), None, Duration::from_secs(10)).await;
            ids.push(id);
        }
        // Wait until they all run.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut running = 0;
            for id in &ids {
                let r = request(addr, "GET", &format!("/api/episodes/{id}"), None, Duration::from_secs(5)).await;
                if r.body["status"] == "assembling" {
                    running += 1;
                }
            }
            if running == ids.len() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let loaded = phase(addr, args.requests).await;
        let mut still = 0;
        for id in &ids {
            let r = request(addr, "GET", &format!("/api/episodes/{id}"), None, Duration::from_secs(5)).await;
            if r.body["status"] == "assembling" {
                still += 1;
            }
        }
        service.stop().await?;
        // The released assemblies must not run in the idle phase that follows.
        cluster.psql("postgres", "UPDATE holdfast.tasks SET state = 'cancelled' WHERE state <> 'succeeded'")?;
        let service = Service::start(&serve).await?;
        let idle_after = phase(service.addr(), args.requests).await;
        service.stop().await?;
        println!(
            "GET /api/ai/intent-hints, {} requests per phase, one client; {} assemblies in the loaded phase ({} still running at its end)",
            args.requests, args.assemblies, still
        );
        println!("{:<28}{:>10}{:>10}{:>10}", "phase", "p50 ms", "p99 ms", "errors");
        for (name, p) in [("idle", &idle_before), ("assemblies running", &loaded), ("idle again", &idle_after)] {
            println!("{name:<28}{:>10.3}{:>10.3}{:>10}", p.0, p.1, p.2);
        }
        let idle_p99 = (idle_before.1 + idle_after.1) / 2.0;
        println!("p99 ratio loaded / idle: {:.3} (target under 1.5)", loaded.1 / idle_p99);
        Ok(())
    })
}

/// `n` sequential requests; returns p50 ms, p99 ms and failures.
async fn phase(addr: std::net::SocketAddr, n: usize) -> (f64, f64, usize) {
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
