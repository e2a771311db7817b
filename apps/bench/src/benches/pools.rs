//! holdfast's pool against deadpool-postgres (Fast and Verified), bb8-postgres, sqlx and raw
//! tokio-postgres clients: throughput, errors after faults, round trips per checkout, and
//! whether a forgotten transaction reaches the next user. One cluster, one runtime, one run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_tempdb::{ClusterOptions, StopMode, TempCluster};

use crate::contenders::{BenchResult, Contender, Kind};
use crate::cpu::Cpu;
use crate::relay::Relay;
use crate::stats::{median, quantile};

mod control;
mod syncs;

/// Options of the pool comparison.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pool size for every contender (raw: number of clients).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Seconds per measurement window.
    #[arg(long, default_value_t = 1.0)]
    secs: f64,
    /// Alternating rounds per concurrency level.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Sections to run: acquire (acquire + release), select (acquire + SELECT 1 + release,
    /// and pool.query), faults (errors after terminate and restart), round-trips (per
    /// checkout), forgotten (a raw BEGIN given back); syncs (server CPU per statement by
    /// statements per Sync, on one connection; not in the default set).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "acquire,select,faults,round-trips,forgotten"
    )]
    sections: Vec<String>,
    /// Only these contenders (comma-separated: holdfast, deadpool-fast, deadpool-verified,
    /// bb8, sqlx, raw); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Server on CPU 0, the clients (this process's runtime) on CPU 1, as when the database
    /// has a machine of its own; by default they share both CPUs.
    #[arg(long)]
    split: bool,
    /// Concurrent tasks per level in section select (comma-separated), to look at one level
    /// closely (under `perf sched`, say).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    tasks: Vec<usize>,
    /// In section select, a second holdfast pool used exactly as the first: how far two
    /// identical contenders differ in the same run (the noise floor), printed beside how far
    /// `pool.query`'s p99 and p999 are from `get()`'s.
    #[arg(long)]
    control: bool,
}

impl Args {
    fn kinds(&self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| self.only.is_empty() || self.only.iter().any(|o| o == k.tag()))
            .collect()
    }
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.tasks.is_empty() || args.tasks.contains(&0) {
        return Err("--tasks: give one or more levels, each at least 1 task (as in 1,16,64,256)".into());
    }
    if args.split {
        // The server's processes inherit the CPU of the thread that starts them; the
        // runtime's threads inherit ours afterwards.
        crate::affinity::pin_to_cpu(0)?;
    }
    let cluster = TempCluster::start(ClusterOptions::default().max_connections(300))?;
    if args.split {
        crate::affinity::pin_to_cpu(1)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!(
            "pools of size {}, one cluster, one tokio runtime (2 workers), {} rounds of {} s, contenders alternated; {}\n",
            args.size,
            args.rounds,
            args.secs,
            if args.split {
                "server on CPU 0, clients on CPU 1 (a restart in section faults starts the server on CPU 1)"
            } else {
                "client and server share both CPUs"
            }
        );
        for section in &args.sections {
            match section.as_str() {
                "acquire" => {
                    let title = "acquire + release, no query";
                    throughput(&cluster, &args, "acquire", title, &[1, 64], Op::AcquireRelease).await?;
                }
                "select" => {
                    let title = "acquire + prepared SELECT 1 + release";
                    throughput(&cluster, &args, "select", title, &args.tasks, Op::SelectOne).await?;
                }
                "faults" => faults(&cluster, &args).await?,
                "round-trips" => round_trips(&cluster, &args).await?,
                "forgotten" => forgotten_transactions(&cluster, &args).await?,
                "syncs" => {
                    let window = Duration::from_secs_f64(args.secs);
                    syncs::run(&cluster, args.rounds, window).await.map_err(|e| e.to_string())?;
                }
                other => {
                    return Err(format!(
                        "--sections: unknown section {other:?}; accepted: acquire, select, faults, round-trips, forgotten, syncs"
                    )
                    .into())
                }
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    AcquireRelease,
    SelectOne,
}

async fn throughput(
    cluster: &TempCluster,
    args: &Args,
    section: &str,
    title: &str,
    levels: &[usize],
    op: Op,
) -> BenchResult<()> {
    let mut kinds: Vec<Kind> = args
        .kinds()
        .into_iter()
        .filter(|k| op == Op::SelectOne || k.is_pool())
        .collect();
    if op == Op::SelectOne {
        // Single statements pipelined on shared connections, holdfast's answer to raw
        // clients shared by many tasks; and one raw client for all, which shows what of
        // the gap to raw is that sharing rather than the pool.
        if kinds.contains(&Kind::Holdfast) {
            kinds.insert(1, Kind::HoldfastQuery);
            if args.control {
                kinds.insert(2, Kind::HoldfastControl);
            }
        }
        if kinds.contains(&Kind::Raw) {
            kinds.push(Kind::RawOne);
        }
    }
    let mut contenders = Vec::new();
    for kind in &kinds {
        contenders.push(Arc::new(
            Contender::build(*kind, &cluster.url(), section, args.size).await?,
        ));
    }
    println!(
        "[{section}] {title}: operations per second, median of {} rounds",
        args.rounds
    );
    print!("{:<34}", "tasks");
    for level in levels {
        print!("{:>11}", level);
    }
    println!();
    let mut table = vec![vec![0.0; levels.len()]; kinds.len()];
    // p50, p99 and p999 latency per contender and task count, over every round's operations.
    let mut tails = vec![vec![[0.0; 3]; levels.len()]; kinds.len()];
    // CPU used per contender and task count, over every round: where the time goes.
    let postmaster = match op {
        Op::SelectOne => Some(crate::cpu::postmaster_pid(cluster).map_err(|e| e.to_string())?),
        Op::AcquireRelease => None,
    };
    let mut cpu = vec![vec![CpuUse::default(); levels.len()]; kinds.len()];
    for (li, &tasks) in levels.iter().enumerate() {
        let mut samples = vec![Vec::new(); kinds.len()];
        // Warm-up: every contender opens its connections.
        for c in &contenders {
            measure(c, tasks, Duration::from_millis(200), op).await?;
        }
        let mut latencies = vec![Vec::new(); kinds.len()];
        for round in 0..args.rounds {
            for i in 0..kinds.len() {
                let k = (i + round) % kinds.len();
                let before = postmaster.map(|pid| (pid, Cpu::now_with_server(pid)));
                let started = Instant::now();
                let (rate, lat) =
                    measure(&contenders[k], tasks, Duration::from_secs_f64(args.secs), op).await?;
                if let Some((pid, before)) = before {
                    cpu[k][li].add(
                        &Cpu::now_with_server(pid).since(&before),
                        started.elapsed(),
                        lat.len(),
                    );
                }
                samples[k].push(rate);
                latencies[k].extend(lat);
            }
        }
        for (k, s) in samples.iter_mut().enumerate() {
            table[k][li] = median(s);
        }
        for (k, lat) in latencies.iter_mut().enumerate() {
            if !lat.is_empty() {
                tails[k][li] = [0.5, 0.99, 0.999].map(|q| quantile(lat, q));
            }
        }
    }
    for (k, kind) in kinds.iter().enumerate() {
        print!("{:<34}", kind.name());
        for (li, rate) in table[k].iter().enumerate() {
            print!("{:>11.0}", rate);
            crate::report::record(
                section,
                kind.name(),
                &format!("{} tasks", levels[li]),
                *rate,
                "ops/s",
            );
        }
        println!();
    }
    let row = |kind: Kind| kinds.iter().position(|k| *k == kind);
    let best_other: Vec<f64> = (0..levels.len())
        .map(|li| {
            kinds
                .iter()
                .enumerate()
                .filter(|(_, k)| k.is_pool() && !k.is_holdfast())
                .map(|(i, _)| table[i][li])
                .fold(0.0, f64::max)
        })
        .collect();
    for ours in [Kind::Holdfast, Kind::HoldfastQuery] {
        let Some(h) = row(ours) else { continue };
        let mut ratios = vec![("best other pool", best_other.clone())];
        for raw in [Kind::Raw, Kind::RawOne] {
            if let Some(r) = row(raw) {
                ratios.push((raw.tag(), table[r].clone()));
            }
        }
        for (label, against) in ratios {
            if against.iter().all(|v| *v == 0.0) {
                continue;
            }
            let row = format!("{} / {label}", ours.tag());
            print!("{row:<34}");
            for li in 0..levels.len() {
                let ratio = table[h][li] / against[li];
                print!("{ratio:>11.3}");
                crate::report::record(section, &row, &format!("{} tasks", levels[li]), ratio, "ratio");
            }
            println!();
        }
    }
    if op == Op::SelectOne {
        print_head(
            &format!("[{section}] latency per operation, microseconds, p50 / p99 / p999 over every round"),
            levels,
        );
        for (k, kind) in kinds.iter().enumerate() {
            print!("{:<34}", kind.name());
            for (li, [p50, p99, p999]) in tails[k].iter().enumerate() {
                print!("{:>22}", format!("{p50:.0} / {p99:.0} / {p999:.0}"));
                for (name, value) in [("p50", p50), ("p99", p99), ("p999", p999)] {
                    crate::report::record(
                        &format!("{section} latency"),
                        kind.name(),
                        &format!("{} tasks {name}", levels[li]),
                        *value,
                        "us",
                    );
                }
            }
            println!();
        }
        control::print(section, levels, &kinds, &tails);
        print_cpu(section, levels, &kinds, &cpu);
    }
    println!();
    for c in contenders {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await;
        }
    }
    Ok(())
}

/// A table's title and its header line: a column of three figures per task count.
fn print_head(title: &str, levels: &[usize]) {
    println!("{title}");
    print!("{:<34}", "tasks");
    for level in levels {
        print!("{:>22}", level);
    }
    println!();
}

/// CPU one contender used at one task count, summed over its rounds.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    /// This process: the contender's tasks, its connections' drivers, the runtime.
    client: Duration,
    /// The server's processes.
    server: Duration,
    wall: Duration,
    ops: usize,
}

impl CpuUse {
    fn add(&mut self, used: &Cpu, wall: Duration, ops: usize) {
        self.client += used.own;
        self.server += used.server;
        self.wall += wall;
        self.ops += ops;
    }
}

/// Where the time goes: client and server CPU per operation, and how many CPUs the server
/// kept busy (1.00 with `--split` is its CPU's ceiling: no contender can go faster there).
/// Read from the kernel's counters in ticks of 10 ms, summed over every round.
fn print_cpu(section: &str, levels: &[usize], kinds: &[Kind], cpu: &[Vec<CpuUse>]) {
    print_head(
        &format!("[{section}] CPU per operation, microseconds, client / server; CPUs the server kept busy"),
        levels,
    );
    for (k, kind) in kinds.iter().enumerate() {
        print!("{:<34}", kind.name());
        for (li, used) in cpu[k].iter().enumerate() {
            let per_op = |d: Duration| d.as_secs_f64() * 1e6 / used.ops.max(1) as f64;
            let (client, server) = (per_op(used.client), per_op(used.server));
            let busy = used.server.as_secs_f64() / used.wall.as_secs_f64().max(f64::MIN_POSITIVE);
            print!("{:>22}", format!("{client:.1} / {server:.1} / {busy:.2}"));
            for (name, value, unit) in [
                ("client us/op", client, "us"),
                ("server us/op", server, "us"),
                ("server CPUs", busy, "CPUs"),
            ] {
                let column = format!("{} tasks {name}", levels[li]);
                crate::report::record(&format!("{section} cpu"), kind.name(), &column, value, unit);
            }
        }
        println!();
    }
}

/// Runs `op` from `tasks` tasks for `window`; returns completed operations per second and,
/// for `SELECT 1`, each operation's latency in microseconds (from the call to its answer,
/// waiting for a connection included).
async fn measure(
    contender: &Arc<Contender>,
    tasks: usize,
    window: Duration,
    op: Op,
) -> BenchResult<(f64, Vec<f64>)> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(tasks);
    let start = Instant::now();
    for _ in 0..tasks {
        let (c, done, stop, failures) = (
            Arc::clone(contender),
            Arc::clone(&done),
            Arc::clone(&stop),
            Arc::clone(&failures),
        );
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let result = match op {
                    Op::AcquireRelease => c.acquire_release().await,
                    Op::SelectOne => {
                        let started = Instant::now();
                        let result = c.select_one().await;
                        latencies.push(started.elapsed().as_secs_f64() * 1e6);
                        result
                    }
                };
                match result {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
            latencies
        }));
    }
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await.map_err(|e| e.to_string())?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} operations failed during a throughput window"));
    }
    Ok((done.load(Ordering::Relaxed) as f64 / elapsed, latencies))
}

/// Section `faults`: Errors callers see: after every backend is terminated, and after a server restart.
async fn faults(cluster: &TempCluster, args: &Args) -> BenchResult<()> {
    println!("[faults] errors seen by callers in 200 acquire + SELECT 1 right after the fault (warm pools)");
    println!("{:<18}{:>22}{:>22}", "", "terminate backends", "server restart");
    for kind in args.kinds() {
        // Raw clients do not reconnect: a fresh set for each fault.
        let run = "c1";
        let c = Contender::build(kind, &cluster.url(), run, args.size).await?;
        warm(&c, args.size).await?;
        terminate_all(cluster, &Contender::app_name(kind, run))?;
        let after_terminate = errors_in(&c, 200).await;
        c.close().await;
        let c = Contender::build(kind, &cluster.url(), "c2", args.size).await?;
        warm(&c, args.size).await?;
        tokio::task::block_in_place(|| cluster.restart(StopMode::Fast)).map_err(|e| e.to_string())?;
        let after_restart = errors_in(&c, 200).await;
        println!("{:<18}{:>22}{:>22}", kind.name(), after_terminate, after_restart);
        crate::report::record(
            "faults",
            kind.name(),
            "terminate backends",
            after_terminate as f64,
            "count",
        );
        crate::report::record(
            "faults",
            kind.name(),
            "server restart",
            after_restart as f64,
            "count",
        );
        c.close().await;
    }
    println!();
    Ok(())
}

/// Uses `size` connections at once so that all of them exist, then gives them back.
async fn warm(c: &Contender, size: usize) -> BenchResult<()> {
    let mut ops = Vec::new();
    for _ in 0..size {
        ops.push(c.select_one());
    }
    for r in futures_util::future::join_all(ops).await {
        if let Err(e) = r {
            return Err(format!("warm-up failed: {e}"));
        }
    }
    Ok(())
}

async fn errors_in(c: &Contender, n: usize) -> usize {
    let mut errors = 0;
    for _ in 0..n {
        if c.select_one().await.is_err() {
            errors += 1;
        }
    }
    errors
}

/// Terminates every session with `app` as application_name and waits until those
/// processes are gone (a pool may open new sessions at once; those are not waited for).
fn terminate_all(cluster: &TempCluster, app: &str) -> BenchResult<()> {
    tokio::task::block_in_place(|| {
        let pids = cluster
            .psql(
                "postgres",
                &format!(
                    "WITH victims AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE application_name = '{app}')
                     SELECT string_agg(pid::text, ',') FROM victims WHERE pg_terminate_backend(pid)"
                ),
            )
            .map_err(|e| e.to_string())?;
        if pids.is_empty() {
            return Ok(());
        }
        let check = format!("SELECT count(*) FROM pg_stat_activity WHERE pid IN ({pids})");
        for _ in 0..500 {
            if cluster.psql("postgres", &check).map_err(|e| e.to_string())? == "0" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err("terminated sessions did not go away".to_string())
    })
}

/// Section `round-trips`: Requests (round trips) each pool sends per checkout and return, counted by a relay.
async fn round_trips(cluster: &TempCluster, args: &Args) -> BenchResult<()> {
    let relay = Relay::start(cluster.port()).await.map_err(|e| e.to_string())?;
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", relay.port);
    println!(
        "[round-trips] round trips per checkout + return (pool of 1, connection reused; counted by a relay)"
    );
    println!(
        "{:<18}{:>16}{:>32}",
        "", "no query", "with one SELECT 1 (minus it)"
    );
    for kind in args.kinds().into_iter().filter(|k| k.is_pool()) {
        let c = Contender::build(kind, &url, "d", 1).await?;
        c.select_one().await?;
        let n = 200u64;
        let before = relay.requests();
        for _ in 0..n {
            c.acquire_release().await?;
        }
        let bare = (relay.requests() - before) as f64 / n as f64;
        let before = relay.requests();
        for _ in 0..n {
            c.select_one().await?;
        }
        let with_query = (relay.requests() - before) as f64 / n as f64 - 1.0;
        println!("{:<18}{:>16.2}{:>32.2}", kind.name(), bare, with_query);
        crate::report::record("round-trips", kind.name(), "no query", bare, "round trips");
        crate::report::record(
            "round-trips",
            kind.name(),
            "with SELECT 1 (minus it)",
            with_query,
            "round trips",
        );
        c.close().await;
    }
    println!();
    Ok(())
}

/// Section `forgotten`: A caller runs a raw BEGIN and gives the connection back: does the next user get a
/// connection inside that transaction?
async fn forgotten_transactions(cluster: &TempCluster, args: &Args) -> BenchResult<()> {
    println!("[forgotten] raw BEGIN, connection given back: does the next user inherit the transaction? (pool of 1)");
    let (admin, driver) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(driver);
    for kind in args.kinds() {
        let c = Contender::build(kind, &cluster.url(), "e", 1).await?;
        c.forget_a_transaction().await?;
        let inherited = c.next_user_inherits_a_transaction(&admin).await?;
        println!(
            "{:<18}{:>8}",
            kind.name(),
            if inherited { "LEAKS" } else { "never" }
        );
        let leaked = if inherited { 1.0 } else { 0.0 };
        crate::report::record(
            "forgotten",
            kind.name(),
            "next user inherits the transaction",
            leaked,
            "count",
        );
        c.close().await;
    }
    Ok(())
}
