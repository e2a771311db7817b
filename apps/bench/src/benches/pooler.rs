//! What running behind PgBouncer costs, split in two: the unnamed statements that a
//! transaction-mode pooler requires (parsed on every call instead of once per connection),
//! and the extra hop through PgBouncer. Three contenders in alternating rounds against one
//! throwaway server, each a pool of `--connections` driven by as many concurrent callers:
//! direct with named statements, direct with unnamed statements, and through PgBouncer.

use std::time::Instant;

use holdfast_pool::{ConnectConfig, Pool, PoolConfig, Pooler};
use holdfast_tempdb::{ClusterOptions, PgBouncerOptions, TempCluster, TempPgBouncer};
use holdfast_tx::{TransactionExt, TxOptions};
use tokio_postgres::types::Type;

use crate::affinity;
use crate::stats::{median, quantile};

/// Options of the pooler benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Alternating rounds (each contender runs once per round, the order rotates).
    #[arg(long, default_value_t = 24)]
    rounds: usize,
    /// Operations per caller per contender per round.
    #[arg(long, default_value_t = 400)]
    operations: usize,
    /// Connections per pool, and concurrent callers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Run everything on all CPUs instead of pinning client, PgBouncer and server to CPU 0.
    #[arg(long)]
    no_pin: bool,
}

const NAMES: [&str; 3] = [
    "direct, named statements",
    "direct, unnamed statements",
    "through PgBouncer (unnamed)",
];

/// The two workloads: a point read, and a one-row write in a holdfast-tx transaction.
#[derive(Debug, Clone, Copy)]
enum Work {
    Read,
    Write,
}

async fn caller(pool: Pool, work: Work, operations: usize, offset: usize) -> Result<(), String> {
    for i in 0..operations {
        let key = ((offset * operations + i) % 1000) as i32;
        match work {
            Work::Read => {
                let conn = pool.get().await.map_err(|e| e.to_string())?;
                conn.query_typed_cached(
                    "SELECT key, label FROM items WHERE key = $1",
                    &[(&key, Type::INT4)],
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            Work::Write => {
                pool.transaction(TxOptions::new(), move |tx| {
                    Box::pin(async move {
                        tx.connection()
                            .execute_typed_cached(
                                "UPDATE items SET hits = hits + 1 WHERE key = $1",
                                &[(&key, Type::INT4)],
                            )
                            .await
                    })
                })
                .await
                .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// Operations per second of one contender over one round.
async fn round(pool: &Pool, work: Work, args: &Args) -> Result<f64, String> {
    let start = Instant::now();
    let callers: Vec<_> = (0..args.connections)
        .map(|c| tokio::spawn(caller(pool.clone(), work, args.operations, c)))
        .collect();
    for c in callers {
        c.await.map_err(|e| e.to_string())??;
    }
    Ok((args.connections * args.operations) as f64 / start.elapsed().as_secs_f64())
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if !args.no_pin {
        // Set before the cluster and PgBouncer start: they inherit it.
        affinity::pin_to_cpu0()?;
    }
    let cluster = TempCluster::start(ClusterOptions::default())?;
    cluster.psql(
        "postgres",
        "CREATE TABLE items (key int PRIMARY KEY, label text NOT NULL, hits bigint NOT NULL DEFAULT 0);
         INSERT INTO items (key, label) SELECT k, 'item ' || k FROM generate_series(0, 999) k",
    )?;
    let bouncer = TempPgBouncer::start(
        &cluster,
        PgBouncerOptions::default().default_pool_size(args.connections as u32),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pool = |url: String, pooler: Pooler| -> Result<Pool, Box<dyn std::error::Error>> {
            let connect = ConnectConfig::from_url(&url)?.pooler(pooler);
            Ok(Pool::new(
                PoolConfig::new(connect)
                    .pool_size(args.connections)
                    .max_overflow(0),
            )?)
        };
        let pools = [
            pool(cluster.url(), Pooler::None)?,
            pool(cluster.url(), Pooler::Transaction)?,
            pool(bouncer.url_for("postgres"), Pooler::Transaction)?,
        ];
        let pinning = if args.no_pin { "unpinned" } else { "client, PgBouncer and server pinned to CPU 0" };
        println!(
            "{} connections and callers per pool, {} rounds x {} operations per caller, rotating order, {pinning}",
            args.connections, args.rounds, args.operations
        );
        for (work, label) in [(Work::Read, "point read (query_cached)"), (Work::Write, "one-row UPDATE in pool.transaction")] {
            for p in &pools {
                round(p, work, &Args { operations: 50, ..args }).await?;
            }
            let mut rates = [Vec::new(), Vec::new(), Vec::new()];
            let mut ratios = [Vec::new(), Vec::new()];
            for r in 0..args.rounds {
                let mut this = [0.0; 3];
                for k in 0..3 {
                    let i = (r + k) % 3;
                    this[i] = round(&pools[i], work, &args).await?;
                    rates[i].push(this[i]);
                }
                ratios[0].push(this[1] / this[0]);
                ratios[1].push(this[2] / this[0]);
            }
            println!("\n{label}");
            println!("{:<32}{:>12}{:>12}{:>12}", "", "median op/s", "p10", "p90");
            for (i, name) in NAMES.iter().enumerate() {
                let r = &mut rates[i];
                println!(
                    "{name:<32}{:>12.0}{:>12.0}{:>12.0}",
                    median(r),
                    quantile(r, 0.1),
                    quantile(r, 0.9)
                );
            }
            for (i, what) in ["unnamed / named (direct)", "PgBouncer / direct named"].iter().enumerate() {
                let r = &mut ratios[i];
                println!(
                    "ratio {what}, per round: median {:.3} (p10 {:.3}, p90 {:.3})",
                    median(r),
                    quantile(r, 0.1),
                    quantile(r, 0.9)
                );
            }
        }
        Ok(())
    })
}
