//! Enqueueing tasks: one `enqueue` per task (each its own transaction, as a request handler
//! does), one `enqueue` per task inside one transaction, and `enqueue_many` in batches, side
//! by side on one server, the order alternating per round.

use std::time::Instant;

use holdfast_pool::{ConnectConfig, Pool, PoolConfig};
use holdfast_tasks::{NewTask, Queue};
use holdfast_tempdb::{ClusterOptions, TempCluster};
use holdfast_tx::{TransactionExt, TxOptions};
use serde_json::json;

use crate::stats::median;

/// Options of the enqueue benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tasks enqueued per contender and round.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Tasks per `enqueue_many` call.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Rounds; each runs every contender once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const CONTENDERS: [&str; 3] = [
    "enqueue, one per transaction",
    "enqueue, all in one transaction",
    "enqueue_many",
];

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = TempCluster::start(ClusterOptions::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let connect = ConnectConfig::from_url(&cluster.url())?.application_name("holdfast-bench");
        let pool = Pool::new(PoolConfig::new(connect).pool_size(1))?;
        let queue = Queue::new("bench_enqueue")?;
        queue.migrate(&pool).await?;
        let tasks: Vec<NewTask> = (0..args.tasks)
            .map(|i| NewTask::new("noop", json!({ "episode": i })))
            .collect();
        println!(
            "enqueueing {} tasks per contender and round (batches of {}); median of {} rounds, the order rotating",
            args.tasks, args.batch, args.rounds
        );
        let mut rates = vec![Vec::new(); CONTENDERS.len()];
        for round in 0..args.rounds.max(1) {
            for k in 0..CONTENDERS.len() {
                let which = (round + k) % CONTENDERS.len();
                let started = Instant::now();
                enqueue(which, &pool, &queue, &tasks, args.batch.max(1)).await?;
                rates[which].push(tasks.len() as f64 / started.elapsed().as_secs_f64());
                pool.get()
                    .await?
                    .batch_execute("TRUNCATE bench_enqueue.tasks")
                    .await?;
            }
        }
        let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
        for (name, rate) in CONTENDERS.iter().zip(&medians) {
            println!("{name:<56}{rate:>12.0} tasks/s");
            crate::report::record("enqueue", name, "median", *rate, "tasks/s");
        }
        for (i, name) in CONTENDERS.iter().enumerate().take(2) {
            let ratio = medians[2] / medians[i];
            println!("{:<56}{ratio:>12.1}", format!("ratio enqueue_many / {name}"));
            crate::report::record("enqueue", &format!("enqueue_many / {name}"), "median", ratio, "ratio");
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

async fn enqueue(
    which: usize,
    pool: &Pool,
    queue: &Queue,
    tasks: &[NewTask],
    batch: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    match which {
        0 => {
            let conn = pool.get().await?;
            for task in tasks {
                queue.enqueue(&conn, task).await?;
            }
        }
        1 => {
            pool.transaction(TxOptions::new(), move |tx| {
                Box::pin(async move {
                    for task in tasks {
                        queue.enqueue(tx, task).await?;
                    }
                    Ok::<_, holdfast_tasks::TaskError>(())
                })
            })
            .await?;
        }
        _ => {
            let conn = pool.get().await?;
            for chunk in tasks.chunks(batch) {
                queue.enqueue_many(&conn, chunk).await?;
            }
        }
    }
    Ok(())
}
