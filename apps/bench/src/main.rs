//! Side-by-side benchmarks. Every comparison runs its contenders alternately in one process
//! against one throwaway server and prints ratios, because this machine is noisy. Each
//! subcommand is a module of `benches/` of the same name; `--json FILE` also writes what it
//! measured, which `doc` turns into `docs/benchmarks.md`.

mod affinity;
mod benches;
mod contenders;
mod cpu;
mod doc;
mod lean_client;
mod pgbench;
mod relay;
mod report;
mod stats;

use std::path::PathBuf;

use benches::{api, enqueue, pooler, pools, proxy, tap, task_counts, task_peers, tasks, tls, tx};
use clap::{Parser, Subcommand};

/// holdfast benchmarks.
#[derive(Debug, Parser)]
#[command(name = "holdfast-bench", about = "Side-by-side benchmarks of holdfast")]
struct Cli {
    /// Also write every figure the bench prints, with the date, commit, machine and
    /// command, to this JSON file.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// SELECT 1 on one connection: through the wire tap versus plain tokio-postgres.
    Tap(tap::Args),
    /// holdfast's pool against deadpool-postgres, bb8, sqlx and raw tokio-postgres. holdfast's
    /// pools read the pool's DB_* variables (DB_PIPELINE_DEPTH, DB_PIPELINE_STALL_MS, ...) as
    /// a service would; size, overflow and timeout are the bench's.
    Pools(pools::Args),
    /// Round trips through the fault proxy with latency and bandwidth faults.
    Proxy(proxy::Args),
    /// pool.transaction against hand-written BEGIN/COMMIT.
    Tx(tx::Args),
    /// No-op tasks per second (holdfast batched, by default) against one task per statement in pgbench and on plain tokio-postgres.
    Tasks(tasks::Args),
    /// No-op tasks per second: holdfast against graphile-worker (without and with its
    /// batching) and pg-boss, installed with npm on first use.
    TaskPeers(task_peers::Args),
    /// Enqueueing tasks one at a time against `enqueue_many` in batches.
    Enqueue(enqueue::Args),
    /// Counting tasks by state with many finished tasks in the table: every state against
    /// the states that come and go.
    TaskCounts(task_counts::Args),
    /// API latency with and without assemblies running.
    Api(api::Args),
    /// Direct with named statements, direct with unnamed ones, and through PgBouncer.
    Pooler(pooler::Args),
    /// SELECT 1 throughput and connect time over TLS against plain TCP.
    Tls(tls::Args),
    /// docs/benchmarks.md from files written by --json.
    Doc(doc::Args),
}

impl Bench {
    fn name(&self) -> &'static str {
        match self {
            Bench::Tap(_) => "tap",
            Bench::Pools(_) => "pools",
            Bench::Proxy(_) => "proxy",
            Bench::Tx(_) => "tx",
            Bench::Tasks(_) => "tasks",
            Bench::TaskCounts(_) => "task-counts",
            Bench::Enqueue(_) => "enqueue",
            Bench::TaskPeers(_) => "task-peers",
            Bench::Api(_) => "api",
            Bench::Pooler(_) => "pooler",
            Bench::Tls(_) => "tls",
            Bench::Doc(_) => "doc",
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let name = cli.bench.name();
    match cli.bench {
        Bench::Tap(args) => tap::run(args),
        Bench::Pools(args) => pools::run(args),
        Bench::Proxy(args) => proxy::run(args),
        Bench::Tx(args) => tx::run(args),
        Bench::Tasks(args) => tasks::run(args),
        Bench::TaskCounts(args) => task_counts::run(args),
        Bench::Enqueue(args) => enqueue::run(args),
        Bench::TaskPeers(args) => task_peers::run(args),
        Bench::Api(args) => api::run(args),
        Bench::Pooler(args) => pooler::run(args),
        Bench::Tls(args) => tls::run(args),
        Bench::Doc(args) => return doc::run(args),
    }?;
    if let Some(path) = cli.json {
        report::write_json(&path, name)?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
