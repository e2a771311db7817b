//! What `pool.transaction` costs over a hand-written BEGIN / INSERT / COMMIT on a pooled
//! connection: throughput side by side in alternating rounds, and round trips per
//! transaction counted by a relay.

use std::time::Instant;

use holdfast_pool::{ConnectConfig, Pool, PoolConfig};
use holdfast_tempdb::{ClusterOptions, TempCluster};
use holdfast_tx::{TransactionExt, TxOptions};
use tokio_postgres::types::Type;

use crate::affinity;
use crate::relay::Relay;
use crate::stats::Spread;

/// Options of the transaction benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Alternating rounds.
    #[arg(long, default_value_t = 30)]
    rounds: usize,
    /// Transactions per contender per round.
    #[arg(long, default_value_t = 500)]
    transactions: usize,
    /// Do not pin client and server to CPU 0.
    #[arg(long, conflicts_with = "split")]
    no_pin: bool,
    /// Server on CPU 0, client (holdfast or pgbench) on CPU 1, as when they run on different
    /// machines; the default puts both on CPU 0, where every server cycle is the client's loss.
    #[arg(long)]
    split: bool,
}

/// The statement both contenders run, prepared once per connection.
const INSERT: &str = "INSERT INTO items (key) VALUES ($1)";
/// The same statement in the pgbench scripts.
const PGBENCH_INSERT: &str = "INSERT INTO items (key) VALUES (1)";
/// Transactions per pgbench run: enough to outweigh the program's start.
const PGBENCH_TRANSACTIONS: usize = 2000;

/// A fresh directory for the pgbench scripts.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("holdfast-bench-tx-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn hand_written(pool: &Pool, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    for i in 0..n {
        let conn = pool.get().await?;
        let key = i as i32;
        conn.batch_execute("BEGIN").await?;
        conn.execute_typed_cached(INSERT, &[(&key, Type::INT4)]).await?;
        conn.batch_execute("COMMIT").await?;
    }
    Ok(())
}

async fn with_transaction(
    pool: &Pool,
    n: usize,
    options: TxOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    for i in 0..n {
        let key = i as i32;
        pool.transaction(options, move |tx| {
            Box::pin(async move {
                tx.connection()
                    .execute_typed_cached(INSERT, &[(&key, Type::INT4)])
                    .await
            })
        })
        .await?;
    }
    Ok(())
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if !args.no_pin {
        affinity::pin_to_cpu0()?;
    }
    // The server's processes inherit the CPU of the thread that starts them.
    let cluster = TempCluster::start(ClusterOptions::default())?;
    cluster.psql("postgres", "CREATE TABLE items (key int)")?;
    if args.split {
        affinity::pin_to_cpu(1)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let relay = Relay::start(cluster.port()).await?;
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", relay.port);
        let pool = Pool::new(
            PoolConfig::new(ConnectConfig::from_url(&url)?)
                .pool_size(1)
                .max_overflow(0),
        )?;
        let resolved = TxOptions::new();
        let unresolved = TxOptions::new().without_commit_resolution();
        hand_written(&pool, 100).await?;
        with_transaction(&pool, 100, resolved).await?;
        with_transaction(&pool, 100, unresolved).await?;

        let before = relay.requests();
        hand_written(&pool, 100).await?;
        let hand_rt = (relay.requests() - before) as f64 / 100.0;
        let before = relay.requests();
        with_transaction(&pool, 100, resolved).await?;
        let tx_rt = (relay.requests() - before) as f64 / 100.0;
        let before = relay.requests();
        with_transaction(&pool, 100, unresolved).await?;
        let unresolved_rt = (relay.requests() - before) as f64 / 100.0;

        // The same SQL with no client library: what reading the xid costs the server alone.
        let dir = tempfile_dir()?;
        let plain = dir.join("plain.sql");
        let with_xid = dir.join("with_xid.sql");
        std::fs::write(&plain, format!("BEGIN;\n{PGBENCH_INSERT};\nCOMMIT;\n"))?;
        std::fs::write(
            &with_xid,
            format!("BEGIN\\; SELECT pg_current_xact_id();\n{PGBENCH_INSERT};\nCOMMIT;\n"),
        )?;
        let pgbench = |script: &std::path::Path| {
            crate::pgbench::tps(
                &cluster,
                &crate::pgbench::Run {
                    script,
                    protocol: "simple",
                    clients: 1,
                    transactions: PGBENCH_TRANSACTIONS,
                },
            )
        };
        let mut sql_rates = [Vec::new(), Vec::new()];
        let mut sql_ratios = Vec::new();

        let mut rates = [Vec::new(), Vec::new(), Vec::new()];
        let mut ratios = Vec::new();
        let mut unresolved_ratios = Vec::new();
        for round in 0..args.rounds {
            let mut sql = [0.0; 2];
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                sql[i] = pgbench(if i == 0 { &plain } else { &with_xid })?;
                sql_rates[i].push(sql[i]);
            }
            sql_ratios.push(sql[1] / sql[0]);

            let mut this = [0.0; 3];
            for k in 0..3 {
                let i = (round + k) % 3;
                let start = Instant::now();
                match i {
                    0 => hand_written(&pool, args.transactions).await?,
                    1 => with_transaction(&pool, args.transactions, resolved).await?,
                    _ => with_transaction(&pool, args.transactions, unresolved).await?,
                }
                this[i] = args.transactions as f64 / start.elapsed().as_secs_f64();
                rates[i].push(this[i]);
            }
            ratios.push(this[1] / this[0]);
            unresolved_ratios.push(this[2] / this[0]);
        }
        let pinning = if args.no_pin {
            "unpinned"
        } else if args.split {
            "server on CPU 0, client on CPU 1"
        } else {
            "client and server pinned to CPU 0"
        };
        println!(
            "one-INSERT transactions on a pool of 1, {} rounds x {} each, alternating, {pinning}",
            args.rounds, args.transactions
        );
        println!(
            "{:<32}{:>12}{:>12}{:>12}{:>14}",
            "", "median tx/s", "p10", "p90", "round trips"
        );
        for (i, (name, rt)) in [
            ("hand-written BEGIN/COMMIT", hand_rt),
            ("pool.transaction", tx_rt),
            ("  without commit resolution", unresolved_rt),
        ]
        .iter()
        .enumerate()
        {
            let r = Spread::of(&mut rates[i]);
            println!(
                "{name:<32}{:>12.0}{:>12.0}{:>12.0}{:>14.2}",
                r.median, r.p10, r.p90, rt
            );
            let row = name.trim();
            crate::report::record("transactions", row, "median", r.median, "tx/s");
            crate::report::record("transactions", row, "p10", r.p10, "tx/s");
            crate::report::record("transactions", row, "p90", r.p90, "tx/s");
            crate::report::record("transactions", row, "round trips", *rt, "round trips");
        }
        let tx = Spread::of(&mut ratios);
        crate::report::record(
            "ratios",
            "pool.transaction / hand-written",
            "median",
            tx.median,
            "ratio",
        );
        println!(
            "ratio transaction / hand-written, per round: {tx}; cost {:+.2}%; extra round trips {:+.2}",
            tx.cost_percent(),
            tx_rt - hand_rt
        );
        let unresolved = Spread::of(&mut unresolved_ratios);
        let row = "without commit resolution / hand-written";
        crate::report::record("ratios", row, "median", unresolved.median, "ratio");
        println!(
            "ratio without commit resolution / hand-written: {unresolved}; cost {:+.2}%",
            unresolved.cost_percent()
        );
        println!("the same SQL in pgbench -M simple, no client library, {PGBENCH_TRANSACTIONS} per round:");
        for (i, name) in ["BEGIN / INSERT / COMMIT", "BEGIN; SELECT pg_current_xact_id()"]
            .iter()
            .enumerate()
        {
            let r = Spread::of(&mut sql_rates[i]);
            println!("{name:<36}{:>8.0}{:>12.0}{:>12.0}", r.median, r.p10, r.p90);
            crate::report::record("pgbench", name, "median", r.median, "tx/s");
        }
        let sql = Spread::of(&mut sql_ratios);
        crate::report::record(
            "ratios",
            "pgbench with xid / without",
            "median",
            sql.median,
            "ratio",
        );
        println!(
            "ratio with xid / without, per round: {sql}; the xid read costs the server {:+.2}%",
            sql.cost_percent()
        );
        println!(
            "holdfast's own part (ratio of the ratios): cost {:+.2}%",
            (1.0 - tx.median / sql.median) * 100.0
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    })
}
