//! What counting tasks by state costs once a queue holds many finished tasks: the full count
//! the rescuer ran every 15 s (`SELECT state, count(*) ... GROUP BY state`, every row) side by
//! side with the count of the states that come and go, each through its partial index
//! (`Queue::active_counts`, what it runs now). Retention keeps finished rows bounded; this
//! measures the count itself with `--finished` of them.

use std::time::Instant;

use holdfast_pool::{ConnectConfig, Pool, PoolConfig};
use holdfast_tasks::Queue;
use holdfast_tempdb::{ClusterOptions, TempCluster};

use crate::stats::median;

/// Options of the task-count benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Finished (succeeded) tasks in the table.
    #[arg(long, default_value_t = 1_000_000)]
    finished: i64,
    /// Ready tasks in the table.
    #[arg(long, default_value_t = 1_000)]
    ready: i64,
    /// Rounds; each times both counts, the order alternating.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = TempCluster::start(ClusterOptions::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let connect = ConnectConfig::from_url(&cluster.url())?.application_name("holdfast-bench");
        let pool = Pool::new(PoolConfig::new(connect).pool_size(1))?;
        let queue = Queue::new("bench_counts")?;
        queue.migrate(&pool).await?;
        let s = queue.schema();
        let conn = pool.get().await?;
        conn.batch_execute(&format!(
            "INSERT INTO {s}.tasks (kind, state, finished_at)
             SELECT 'noop', 'succeeded', now() FROM generate_series(1, {finished});
             INSERT INTO {s}.tasks (kind) SELECT 'noop' FROM generate_series(1, {ready});",
            finished = args.finished,
            ready = args.ready,
        ))
        .await?;
        conn.batch_execute(&format!("VACUUM ANALYZE {s}.tasks")).await?;
        println!(
            "counting tasks by state with {} finished and {} ready tasks in the table; median of {} rounds, the order alternating",
            args.finished, args.ready, args.rounds
        );
        let (mut full, mut active) = (Vec::new(), Vec::new());
        for round in 0..args.rounds.max(1) {
            for k in 0..2 {
                let started = Instant::now();
                if (round + k) % 2 == 0 {
                    queue.counts(&conn).await?;
                    full.push(started.elapsed().as_secs_f64() * 1000.0);
                } else {
                    queue.active_counts(&conn).await?;
                    active.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        let (f, a) = (median(&mut full), median(&mut active));
        println!("{:<44}{:>12.3} ms", "every state (GROUP BY over every row)", f);
        println!("{:<44}{:>12.3} ms", "states that come and go (partial indexes)", a);
        println!("{:<44}{:>12.1}", "ratio (every state / active states)", f / a);
        crate::report::record("counts", "every state", "median", f, "ms");
        crate::report::record("counts", "active states", "median", a, "ms");
        crate::report::record("counts", "every / active", "median", f / a, "ratio");
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
