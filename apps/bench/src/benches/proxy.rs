//! What the fault proxy's latency and bandwidth faults do to real round trips, measured side
//! by side: direct, through the proxy with no fault, with latency, with latency and jitter,
//! and a 1 MB result under a bandwidth limit.

use std::net::SocketAddr;
use std::time::Instant;

use holdfast_faults::{DirectionFaults, FaultProxy, Faults, Latency};
use holdfast_tempdb::{ClusterOptions, TempCluster};
use tokio_postgres::{Client, NoTls};

use crate::stats::{median, quantile};

/// Options of the proxy benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Round trips per setting.
    #[arg(long, default_value_t = 200)]
    round_trips: usize,
}

async fn client(port: u16) -> Result<Client, Box<dyn std::error::Error>> {
    let (client, connection) =
        tokio_postgres::connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres"), NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn round_trips(client: &Client, n: usize) -> Result<Vec<f64>, tokio_postgres::Error> {
    let stmt = client.prepare("SELECT 1").await?;
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        client.query_one(&stmt, &[]).await?;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(ms)
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = TempCluster::start(ClusterOptions::default())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let upstream = SocketAddr::from(([127, 0, 0, 1], cluster.port()));
        let proxy = FaultProxy::start_local(upstream).await?;
        let direct = client(cluster.port()).await?;
        let via = client(proxy.port()).await?;
        let latency = |base_ms, jitter_ms| Faults {
            upstream: DirectionFaults {
                latency: Some(Latency { base_ms, jitter_ms }),
                ..Default::default()
            },
            ..Faults::none()
        };
        println!(
            "SELECT 1 round trips, {} per setting, milliseconds",
            args.round_trips
        );
        println!("{:<34}{:>10}{:>10}{:>10}", "setting", "median", "p10", "p90");
        let mut rows = Vec::new();
        rows.push(("direct, no proxy", round_trips(&direct, args.round_trips).await?));
        for (name, faults) in [
            ("proxy, no fault", Faults::none()),
            ("proxy, upstream latency 5 ms", latency(5, 0)),
            ("proxy, upstream latency 5 ms +0..5", latency(5, 5)),
        ] {
            proxy.set(faults)?;
            rows.push((name, round_trips(&via, args.round_trips).await?));
        }
        for (name, mut ms) in rows {
            println!(
                "{name:<34}{:>10.3}{:>10.3}{:>10.3}",
                median(&mut ms),
                quantile(&mut ms, 0.1),
                quantile(&mut ms, 0.9)
            );
        }
        let big = "SELECT repeat('x', 1000000)";
        for (name, rate) in [("no limit", None), ("downstream 4 MB/s", Some(4_000_000u64))] {
            proxy.set(Faults {
                downstream: DirectionFaults {
                    bandwidth_bytes_per_sec: rate,
                    ..Default::default()
                },
                ..Faults::none()
            })?;
            let start = Instant::now();
            via.query_one(big, &[]).await?;
            let took = start.elapsed();
            println!(
                "1 MB result, {name:<18}: {:>8.1} ms ({:.1} MB/s)",
                took.as_secs_f64() * 1000.0,
                1.0 / took.as_secs_f64().max(f64::EPSILON)
            );
        }
        proxy.clear();
        Ok(())
    })
}
