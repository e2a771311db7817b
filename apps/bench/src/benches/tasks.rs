//! No-op tasks per second, claim to succeeded, against the one-task statements run by
//! pgbench, by plain tokio-postgres clients and by a hand-written protocol loop with no
//! framework around them, with the same number of connections, in one run. holdfast runs
//! with its defaults, so it claims and writes successes several to a statement (batching,
//! `claim_batch`); the other sides show what one task per statement costs.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_pool::{ConnectConfig, Pool, PoolConfig};
use holdfast_tasks::{Queue, TaskState, Worker, WorkerConfig, WorkerPools};
use holdfast_tempdb::{ClusterOptions, TempCluster};
use tokio_postgres::types::{ToSql, Type};

use crate::cpu::Cpu;
use crate::lean_client::Lean;
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
    /// Sides to run (holdfast, tokio-postgres, lean, pgbench); a ratio needs both of its sides.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "holdfast,tokio-postgres,lean,pgbench"
    )]
    sides: Vec<String>,
    /// Worker threads of the tokio runtime that runs the holdfast and tokio-postgres sides.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Server on CPU 0, every client (this process's runtime, or pgbench) on CPU 1, as when
    /// the database has a machine of its own; by default they share both CPUs, and every
    /// cycle a client spends is taken from the server.
    #[arg(long)]
    split: bool,
}

/// The sides of one measurement, in the order of their columns; pgbench, the limit, last.
const SIDES: [&str; 4] = ["holdfast", "tokio-postgres", "lean", "pgbench"];
/// Short names for the column heads.
const SHORT: [&str; 4] = ["hf", "tokio-pg", "lean", "pgbench"];
const PGBENCH: usize = 3;

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(bad) = args.sides.iter().find(|s| !SIDES.contains(&s.as_str())) {
        return Err(format!("unknown side {bad:?}: accepted are {}", SIDES.join(", ")).into());
    }
    if args.split {
        // The server's processes inherit the CPU of the thread that starts them; the
        // runtime's threads and pgbench inherit ours afterwards.
        crate::affinity::pin_to_cpu(0)?;
    }
    let cluster = TempCluster::start(ClusterOptions::default())?;
    if args.split {
        crate::affinity::pin_to_cpu(1)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    println!(
        "no-op tasks, claim to succeeded; {} tasks per measurement, {} rounds, the order rotating; {}",
        args.tasks,
        args.rounds,
        if args.split {
            "server on CPU 0, clients on CPU 1"
        } else {
            "client and server share both CPUs"
        }
    );
    println!("tokio-postgres: the workers' statements, pipelined the same way, on plain clients (no pool, no worker)");
    println!("lean: the same on a hand-written protocol loop, one task per connection (no driver task, no channels)");
    let mut head = format!("{:<9}", "workers");
    for side in SHORT {
        head += &format!("{:>13}", format!("{side} t/s"));
    }
    head += &format!(
        "{:>12}{:>16}{:>13}{:>14}",
        "hf/pgbench", "p10..p90", "hf/tokio-pg", "lean/pgbench"
    );
    println!("{head}");
    let mut cpu_lines = Vec::new();
    for &n in &args.workers {
        let schema = format!("bench_{n}");
        let mut rates: [Vec<f64>; 4] = Default::default();
        let mut ratios = Vec::new();
        let mut ratios_raw = Vec::new();
        let mut ratios_lean = Vec::new();
        // Microseconds of CPU per task: the client's own, its user-space part, the server's
        // and the whole machine's.
        let mut client_us: [Vec<f64>; 4] = Default::default();
        let mut user_us: [Vec<f64>; 4] = Default::default();
        let mut server_us: [Vec<f64>; 4] = Default::default();
        let mut machine_us: [Vec<f64>; 4] = Default::default();
        let postmaster = crate::cpu::postmaster_pid(&cluster)?;
        runtime.block_on(async {
            let admin = pool(&cluster.url(), 2)?;
            let queue = Queue::new(&schema)?;
            queue.migrate(&admin).await?;
            for round in 0..args.rounds.max(1) {
                let mut this = [f64::NAN; 4];
                for k in 0..SIDES.len() {
                    let i = (round + k) % SIDES.len();
                    if !args.sides.iter().any(|s| s == SIDES[i]) {
                        continue;
                    }
                    fill(&cluster, &schema, args.tasks)?;
                    let before = Cpu::now_with_server(postmaster);
                    this[i] = match i {
                        0 => run_holdfast(&cluster, &queue, &admin, n, args.tasks).await?,
                        1 => run_tokio_postgres(&cluster, &queue, n, args.tasks).await?,
                        2 => run_lean(&cluster, &queue, n, args.tasks).await?,
                        _ => tokio::task::block_in_place(|| run_pgbench(&cluster, &queue, n, args.tasks))?,
                    };
                    let used = Cpu::now_with_server(postmaster).since(&before);
                    let (client, user) = if i == PGBENCH {
                        (used.children, used.children_user)
                    } else {
                        (used.own, used.own_user)
                    };
                    let per_task = |d: Duration| d.as_secs_f64() * 1e6 / args.tasks as f64;
                    client_us[i].push(per_task(client));
                    user_us[i].push(per_task(user));
                    server_us[i].push(per_task(used.server));
                    machine_us[i].push(per_task(used.machine));
                    rates[i].push(this[i]);
                }
                ratios.push(this[0] / this[PGBENCH]);
                ratios_raw.push(this[0] / this[1]);
                ratios_lean.push(this[2] / this[PGBENCH]);
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        })?;
        let mut line = format!("{n:<9}");
        let workers = format!("{n} workers");
        for (i, side) in rates.iter_mut().enumerate() {
            let rate = median(side);
            line += &format!("{rate:>13.0}");
            if rate.is_finite() {
                crate::report::record(
                    "throughput",
                    &format!("{} tasks/s", SIDES[i]),
                    &workers,
                    rate,
                    "tasks/s",
                );
            }
        }
        for (row, values) in [
            ("holdfast / pgbench", &mut ratios),
            ("holdfast / tokio-postgres", &mut ratios_raw),
            ("lean / pgbench", &mut ratios_lean),
        ] {
            let ratio = median(values);
            if ratio.is_finite() {
                crate::report::record("throughput", row, &workers, ratio, "ratio");
            }
        }
        line += &format!(
            "{:>12.3}{:>9.3}..{:.3}{:>13.3}{:>14.3}",
            median(&mut ratios),
            quantile(&mut ratios, 0.1),
            quantile(&mut ratios, 0.9),
            median(&mut ratios_raw),
            median(&mut ratios_lean),
        );
        println!("{line}");
        let mut line = format!("{n:<9}");
        let all = client_us
            .iter_mut()
            .chain(user_us.iter_mut())
            .chain(server_us.iter_mut())
            .chain(machine_us.iter_mut());
        for (j, per_side) in all.enumerate() {
            let us = median(per_side);
            line += &format!("{us:>17.1}");
            let what = ["client", "user", "server", "machine"][j / SIDES.len()];
            if us.is_finite() {
                let row = format!("{what} CPU per task, {}", SIDES[j % SIDES.len()]);
                crate::report::record("cpu", &row, &workers, us, "us");
            }
        }
        cpu_lines.push(line);
    }
    println!(
        "\nCPU per task in microseconds (medians): the client's own, its user-space part, the database \
         server's processes, then the whole machine's (interrupts and any neighbour included)"
    );
    let mut head = format!("{:<9}", "workers");
    for what in ["client", "user", "server", "machine"] {
        for side in SHORT {
            head += &format!("{:>17}", format!("{what} {side}"));
        }
    }
    println!("{head}");
    for line in cpu_lines {
        println!("{line}");
    }
    Ok(())
}

pub(crate) fn pool(url: &str, size: usize) -> Result<Pool, Box<dyn std::error::Error>> {
    Ok(Pool::new(
        PoolConfig::new(ConnectConfig::from_url(url)?)
            .pool_size(size)
            .max_overflow(0),
    )?)
}

/// Empties the queue and enqueues `n` no-op tasks in one statement.
pub(crate) fn fill(cluster: &TempCluster, schema: &str, n: i64) -> Result<(), Box<dyn std::error::Error>> {
    cluster.psql(
        "postgres",
        &format!(
            "TRUNCATE {schema}.tasks; INSERT INTO {schema}.tasks (kind) SELECT 'noop' FROM generate_series(1, {n})"
        ),
    )?;
    cluster.psql("postgres", &format!("VACUUM ANALYZE {schema}.tasks"))?;
    Ok(())
}

pub(crate) async fn run_holdfast(
    cluster: &TempCluster,
    queue: &Queue,
    admin: &Pool,
    n: usize,
    total: i64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let config = WorkerConfig::default()
        .poll_interval(Duration::from_millis(50))
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
    let worker = Worker::new(queue.clone(), WorkerPools { control, work }, config)
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

/// The lease the plain-client sides claim with, in milliseconds (a worker's default).
const LEASE_MS: f64 = 30_000.0;

/// The workers' own statements on plain tokio-postgres clients, one per slot, pipelined as a
/// slot pipelines them (the final write together with the next claim), with no pool, no
/// worker, no lease bookkeeping and no timeouts around them: what is left of holdfast's
/// figure when the framework is taken away.
async fn run_tokio_postgres(
    cluster: &TempCluster,
    queue: &Queue,
    n: usize,
    total: i64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let claim = client
            .prepare_typed(
                &queue.claim_sql(1),
                &[
                    Type::TEXT,
                    Type::INT8,
                    Type::FLOAT8_ARRAY,
                    Type::TEXT_ARRAY,
                    Type::TEXT,
                ],
            )
            .await?;
        let succeed = client
            .prepare_typed(queue.succeed_sql(), &[Type::INT8, Type::INT4, Type::INT8])
            .await?;
        clients.push((client, claim, succeed));
    }
    let start = Instant::now();
    let loops = clients.into_iter().map(|(client, claim, succeed)| {
        tokio::spawn(async move {
            let claim_one = |token: i64| {
                let (client, claim) = (&client, &claim);
                async move {
                    let rows = client
                        .query(
                            claim,
                            &[&"raw", &token, &vec![LEASE_MS], &vec!["noop"], &"default"],
                        )
                        .await?;
                    Ok::<_, tokio_postgres::Error>(rows.first().map(|r| {
                        // The same columns a worker decodes.
                        let _kind: String = r.get(1);
                        let _payload: serde_json::Value = r.get(2);
                        let _max_attempts: i32 = r.get(4);
                        (r.get::<_, i64>(0), r.get::<_, i32>(3), token)
                    }))
                }
            };
            let mut done = 0i64;
            let mut next = claim_one(fastrand::i64(1..i64::MAX)).await?;
            while let Some((id, attempt, token)) = next {
                let key: [&(dyn ToSql + Sync); 3] = [&id, &attempt, &token];
                let (written, claimed) = tokio::join!(
                    client.execute(&succeed, &key),
                    claim_one(fastrand::i64(1..i64::MAX))
                );
                if written? != 1 {
                    return Err(format!("task {id}: the final write matched no row").into());
                }
                done += 1;
                next = claimed?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(done)
        })
    });
    rate_of("tokio-postgres", loops, start, total).await
}

/// The same as `run_tokio_postgres` on the lean hand-written client.
async fn run_lean(
    cluster: &TempCluster,
    queue: &Queue,
    n: usize,
    total: i64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(
            Lean::connect(cluster.port(), &queue.claim_sql(1), queue.succeed_sql())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let start = Instant::now();
    let loops = clients.into_iter().map(|mut client| {
        tokio::spawn(async move {
            let mut done = 0i64;
            let mut token = fastrand::i64(1..i64::MAX);
            let mut next = client.succeed_and_claim(None, "lean", token, LEASE_MS).await?;
            while let Some((id, attempt)) = next {
                let fresh = fastrand::i64(1..i64::MAX);
                next = client
                    .succeed_and_claim(Some((id, attempt, token)), "lean", fresh, LEASE_MS)
                    .await?;
                token = fresh;
                done += 1;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(done)
        })
    });
    rate_of("lean", loops, start, total).await
}

/// A side's client loops, each answering the tasks it saw through.
type Loop = tokio::task::JoinHandle<Result<i64, Box<dyn std::error::Error + Send + Sync>>>;

/// Waits for a side's loops, checks that they saw every task through, and returns tasks per
/// second since `start`.
async fn rate_of(
    side: &str,
    loops: impl IntoIterator<Item = Loop>,
    start: Instant,
    total: i64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut done = 0;
    for finished in futures_util::future::join_all(loops).await {
        done += finished?.map_err(|e| e.to_string())?;
    }
    let elapsed = start.elapsed();
    if done != total {
        return Err(format!("{side} side: {done} of {total} tasks succeeded").into());
    }
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
        .replace("$3", "ARRAY[:lease]::float8[]")
        .replace("$4", "'{noop}'::text[]")
        .replace("$5", "'default'");
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
