//! No-op tasks per second, claim to succeeded, against the same SQL run by pgbench with no
//! framework around it, with the same number of connections, in one run.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_pool::{ConnectConfig, Pool, PoolConfig};
use holdfast_tasks::{Queue, TaskState, Worker, WorkerConfig};
use holdfast_tempdb::{ClusterOptions, TempCluster};

use crate::cpu::Cpu;
use crate::stats::{median, quantile};

/// Options of the task benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tasks per measurement.
    #[arg(long, default_value_t = 20_000)]
    tasks: i64,
    /// Worker slots (task concurrency and connections) to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    workers: Vec<usize>,
    /// Rounds per worker count; each runs holdfast and pgbench once, the order alternating,
    /// so that drift (autovacuum, a busy neighbour) falls on both.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let cluster = TempCluster::start(ClusterOptions::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "no-op tasks, claim to succeeded; {} tasks per measurement, {} alternating rounds",
        args.tasks, args.rounds
    );
    println!(
        "{:<10}{:>16}{:>16}{:>12}{:>18}",
        "workers", "holdfast t/s", "pgbench t/s", "ratio", "ratio p10..p90"
    );
    let mut cpu_lines = Vec::new();
    for &n in &args.workers {
        let schema = format!("bench_{n}");
        let mut rates = [Vec::new(), Vec::new()];
        let mut ratios = Vec::new();
        // Microseconds of CPU per task: the client's own, and the whole machine's.
        let mut client_us = [Vec::new(), Vec::new()];
        let mut machine_us = [Vec::new(), Vec::new()];
        runtime.block_on(async {
            let admin = pool(&cluster.url(), 2)?;
            let queue = Queue::new(&schema)?;
            queue.migrate(&admin).await?;
            for round in 0..args.rounds.max(1) {
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                let mut this = [0.0; 2];
                for i in order {
                    fill(&cluster, &schema, args.tasks)?;
                    let before = Cpu::now();
                    this[i] = if i == 0 {
                        run_holdfast(&cluster, &queue, &admin, n, args.tasks).await?
                    } else {
                        tokio::task::block_in_place(|| run_pgbench(&cluster, &queue, n, args.tasks))?
                    };
                    let used = Cpu::now().since(&before);
                    let client = if i == 0 { used.own } else { used.children };
                    let per_task = |d: Duration| d.as_secs_f64() * 1e6 / args.tasks as f64;
                    client_us[i].push(per_task(client));
                    machine_us[i].push(per_task(used.machine));
                    rates[i].push(this[i]);
                }
                ratios.push(this[0] / this[1]);
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        })?;
        println!(
            "{:<10}{:>16.0}{:>16.0}{:>12.3}{:>10.3}..{:.3}",
            n,
            median(&mut rates[0]),
            median(&mut rates[1]),
            median(&mut ratios),
            quantile(&mut ratios, 0.1),
            quantile(&mut ratios, 0.9)
        );
        cpu_lines.push(format!(
            "{:<10}{:>16.1}{:>16.1}{:>16.1}{:>16.1}",
            n,
            median(&mut client_us[0]),
            median(&mut client_us[1]),
            median(&mut machine_us[0]),
            median(&mut machine_us[1])
        ));
    }
    println!("\nCPU per task in microseconds (medians; the machine's includes the server and any neighbour)");
    println!(
        "{:<10}{:>16}{:>16}{:>16}{:>16}",
        "workers", "holdfast client", "pgbench client", "machine (hf)", "machine (pgb)"
    );
    for line in cpu_lines {
        println!("{line}");
    }
    Ok(())
}

fn pool(url: &str, size: usize) -> Result<Pool, Box<dyn std::error::Error>> {
    Ok(Pool::new(
        PoolConfig::new(ConnectConfig::from_url(url)?)
            .pool_size(size)
            .max_overflow(0),
    )?)
}

/// Empties the queue and enqueues `n` no-op tasks in one statement.
fn fill(cluster: &TempCluster, schema: &str, n: i64) -> Result<(), Box<dyn std::error::Error>> {
    cluster.psql(
        "postgres",
        &format!(
            "TRUNCATE {schema}.tasks; INSERT INTO {schema}.tasks (kind) SELECT 'noop' FROM generate_series(1, {n})"
        ),
    )?;
    cluster.psql("postgres", &format!("VACUUM ANALYZE {schema}.tasks"))?;
    Ok(())
}

async fn run_holdfast(
    cluster: &TempCluster,
    queue: &Queue,
    admin: &Pool,
    n: usize,
    total: i64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
    .concurrency(n);
    // The same number of connections as pgbench's clients carry claims and final writes.
    let control = pool(&cluster.url(), n)?;
    let work = pool(&cluster.url(), 1)?;
    // Connected before the clock starts, as pgbench's figure leaves out its connecting.
    let warm: Vec<_> = futures_util::future::try_join_all((0..n).map(|_| control.get())).await?;
    drop(warm);
    // Bodies count themselves, and the last one says so, so that waiting for the end puts no
    // load on the server or the runtime while the workers run; only the last few final
    // writes are then waited for in the table.
    let counter = Arc::new(AtomicI64::new(0));
    let all_ran = Arc::new(tokio::sync::Notify::new());
    let last = Arc::clone(&all_ran);
    let start = Instant::now();
    let worker = Worker::new(queue.clone(), control, work, config)
        .handle("noop", move |_| {
            if counter.fetch_add(1, Ordering::Relaxed) + 1 == total {
                last.notify_one();
            }
            Box::pin(async { Ok(()) })
        })
        .spawn()?;
    all_ran.notified().await;
    let running = format!(
        "SELECT EXISTS (SELECT 1 FROM {s}.tasks WHERE state = 'running')",
        s = queue.schema()
    );
    loop {
        let conn = admin.get().await?;
        if !conn.query_one(&running, &[]).await?.get::<_, bool>(0) {
            break;
        }
        drop(conn);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let conn = admin.get().await?;
    let done = queue.counts(&conn).await?[&TaskState::Succeeded];
    if done != total {
        return Err(format!("{done} of {total} tasks succeeded").into());
    }
    let elapsed = start.elapsed();
    worker.shutdown().await;
    Ok(total as f64 / elapsed.as_secs_f64())
}

/// The claim and the completion, as a pgbench script: each transaction claims one task and
/// marks it succeeded, with nothing around it.
fn run_pgbench(
    cluster: &TempCluster,
    queue: &Queue,
    clients: usize,
    total: i64,
) -> Result<f64, Box<dyn std::error::Error>> {
    // The very statements a worker runs (claim of one task, final write), with pgbench's
    // variables in place of the parameters.
    let one_line = |sql: &str| sql.split_whitespace().collect::<Vec<_>>().join(" ");
    let claim = one_line(&queue.claim_sql(1))
        .replace("$1", "'pgbench'")
        .replace("$2", ":token")
        .replace("$3", ":lease");
    let succeed = one_line(queue.succeed_sql())
        .replace("$1", ":id")
        .replace("$2", ":attempt")
        .replace("$3", ":token");
    let script =
        format!("\\set token random(1, 1000000000)\n\\set lease 30000\n{claim} \\gset\n{succeed};\n");
    let schema = queue.schema();
    let path = std::env::temp_dir().join(format!("holdfast-bench-{schema}.sql"));
    std::fs::write(&path, script)?;
    crate::pgbench::tps(
        cluster,
        &crate::pgbench::Run {
            script: &path,
            protocol: "prepared",
            clients,
            transactions: (total / clients as i64) as usize,
        },
    )
}
