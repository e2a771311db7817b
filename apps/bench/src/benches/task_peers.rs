//! No-op tasks per second, holdfast against the node queues its users compare it with
//! (graphile-worker without and with its documented batching, pg-boss), on one throwaway
//! server, in one run, the order rotating per round. The peers are installed with npm into
//! a cache directory on first use; without node or npm (or the registry) they are skipped
//! with the reason, and holdfast is measured alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use holdfast_tasks::Queue;
use holdfast_tempdb::{ClusterOptions, TempCluster};

use crate::benches::tasks::{fill, pool, run_holdfast};
use crate::stats::median;

/// Options of the peer comparison.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tasks per measurement.
    #[arg(long, default_value_t = 20_000)]
    tasks: i64,
    /// Worker slots (concurrency) to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    workers: Vec<usize>,
    /// Rounds per worker count; each runs every side once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where the node peers are installed (kept between runs).
    #[arg(long, value_name = "DIR")]
    node_dir: Option<PathBuf>,
}

/// The node sides, as the harness names them.
const PEERS: [&str; 3] = ["graphile", "graphile-batched", "pg-boss"];
/// What npm installs.
const PACKAGES: [&str; 2] = ["graphile-worker@0.17", "pg-boss@10"];
/// The harness the node sides run.
const HARNESS: &str = include_str!("../../peers/run.mjs");

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let dir = args
        .node_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("holdfast-bench-peers"));
    let harness = match install(&dir) {
        Ok(path) => Some(path),
        Err(why) => {
            println!("graphile-worker and pg-boss skipped: {why}");
            None
        }
    };
    let cluster = TempCluster::start(ClusterOptions::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "no-op tasks, enqueued to done; {} tasks per measurement, {} rounds, the order rotating; client and server share both CPUs",
        args.tasks, args.rounds
    );
    println!("graphile-batched: graphile-worker with localQueue.size 500 and completeJobBatchDelay 0 (its documented batching)");
    println!("pg-boss: one work() per slot, batchSize 500, polling every 0.5 s (its minimum)");
    let sides: Vec<&str> = std::iter::once("holdfast")
        .chain(harness.iter().flat_map(|_| PEERS))
        .collect();
    let mut head = format!("{:<9}", "workers");
    for side in &sides {
        head += &format!("{:>22}", format!("{side} t/s"));
    }
    for side in sides.iter().skip(1) {
        head += &format!("{:>22}", format!("hf/{side}"));
    }
    println!("{head}");
    for &n in &args.workers {
        let schema = format!("bench_peers_{n}");
        let mut rates = vec![Vec::new(); sides.len()];
        runtime.block_on(async {
            let admin = pool(&cluster.url(), 2)?;
            let queue = Queue::new(&schema)?;
            queue.migrate(&admin).await?;
            for round in 0..args.rounds.max(1) {
                for k in 0..sides.len() {
                    let i = (round + k) % sides.len();
                    let rate = if i == 0 {
                        fill(&cluster, &schema, args.tasks)?;
                        run_holdfast(&cluster, &queue, &admin, n, args.tasks).await?
                    } else {
                        let script = harness.as_deref().ok_or("no harness")?;
                        peer(script, sides[i], &cluster.url(), n, args.tasks)?
                    };
                    rates[i].push(rate);
                }
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        })?;
        let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
        let mut line = format!("{n:<9}");
        for (side, rate) in sides.iter().zip(&medians) {
            line += &format!("{rate:>22.0}");
            crate::report::record(&format!("{n} workers"), side, "median", *rate, "tasks/s");
        }
        for (side, rate) in sides.iter().zip(&medians).skip(1) {
            let ratio = medians[0] / rate;
            line += &format!("{ratio:>22.2}");
            crate::report::record(
                &format!("{n} workers"),
                &format!("holdfast / {side}"),
                "median",
                ratio,
                "ratio",
            );
        }
        println!("{line}");
    }
    Ok(())
}

/// Installs the peers into `dir` (once) and writes the harness there; the harness's path,
/// or why the peers cannot run.
fn install(dir: &Path) -> Result<PathBuf, String> {
    for tool in ["node", "npm"] {
        let found = Command::new(tool).arg("--version").output();
        if !found.is_ok_and(|o| o.status.success()) {
            return Err(format!("`{tool}` is not installed (apt-get install nodejs npm)"));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let installed = PACKAGES.iter().all(|p| {
        let name = p.rsplit_once('@').map_or(*p, |(name, _)| name);
        dir.join("node_modules").join(name).join("package.json").exists()
    });
    if !installed {
        println!(
            "installing {} into {} with npm ...",
            PACKAGES.join(" and "),
            dir.display()
        );
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir)
            .args(PACKAGES)
            .output()
            .map_err(|e| format!("npm could not run: {e}"))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(format!("npm install failed: {last}"));
        }
    }
    let script = dir.join("run.mjs");
    std::fs::write(&script, HARNESS).map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    Ok(script)
}

/// One measurement of a node peer: its jobs per second.
fn peer(
    script: &Path,
    name: &str,
    url: &str,
    workers: usize,
    tasks: i64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let out = Command::new("node")
        .arg(script)
        .args([name, url, &workers.to_string(), &tasks.to_string()])
        .output()?;
    if !out.status.success() {
        return Err(format!("{name} failed: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("{name} printed no result: {text}"))?;
    value["rate"]
        .as_f64()
        .ok_or_else(|| format!("{name} printed no rate: {value}").into())
}
