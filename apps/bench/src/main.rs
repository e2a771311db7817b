//! Side-by-side benchmarks. Every comparison runs its contenders alternately in one process
//! against one throwaway server and prints ratios, because this machine is noisy.

mod affinity;
mod api_latency;
mod contenders;
mod cpu;
mod lean_client;
mod pgbench;
mod pooler_cost;
mod pools;
mod proxy_faults;
mod relay;
mod stats;
mod tap_cost;
mod task_throughput;
mod tls_cost;
mod tx_cost;

use clap::{Parser, Subcommand};

/// holdfast benchmarks.
#[derive(Debug, Parser)]
#[command(name = "holdfast-bench", about = "Side-by-side benchmarks of holdfast")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// SELECT 1 on one connection: through the wire tap versus plain tokio-postgres.
    Tap(tap_cost::Args),
    /// holdfast's pool against deadpool-postgres, bb8, sqlx and raw tokio-postgres.
    Pools(pools::Args),
    /// Round trips through the fault proxy with latency and bandwidth faults.
    Proxy(proxy_faults::Args),
    /// pool.transaction against hand-written BEGIN/COMMIT.
    Tx(tx_cost::Args),
    /// No-op tasks per second against the same SQL in pgbench and on plain tokio-postgres.
    Tasks(task_throughput::Args),
    /// API latency with and without assemblies running.
    Api(api_latency::Args),
    /// Direct with named statements, direct with unnamed ones, and through PgBouncer.
    Pooler(pooler_cost::Args),
    /// SELECT 1 throughput and connect time over TLS against plain TCP.
    Tls(tls_cost::Args),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::Tap(args) => tap_cost::run(args),
        Bench::Pools(args) => pools::run(args),
        Bench::Proxy(args) => proxy_faults::run(args),
        Bench::Tx(args) => tx_cost::run(args),
        Bench::Tasks(args) => task_throughput::run(args),
        Bench::Api(args) => api_latency::run(args),
        Bench::Pooler(args) => pooler_cost::run(args),
        Bench::Tls(args) => tls_cost::run(args),
    }
}
