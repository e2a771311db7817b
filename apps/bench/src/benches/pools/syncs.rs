//! Section `syncs` of the pool comparison: what the server spends on a statement when
//! several statements share one Sync. `Pool::query` (like tokio-postgres, and every client
//! that keeps each statement's error to itself) sends one Sync per statement, so the server
//! ends an implicit transaction and flushes a ReadyForQuery for each. This section drives one
//! connection with the bench's leanest client (postgres-protocol, no driver), keeping
//! `IN_FLIGHT` prepared `SELECT 1`s in flight in batches of k statements per Sync, and prints
//! the server's CPU per statement for each k: the ceiling of one CPU's worth of server at one
//! Sync per statement, and what giving that up would buy.

use std::time::{Duration, Instant};

use holdfast_tempdb::TempCluster;

use super::CpuUse;
use crate::cpu::{postmaster_pid, Cpu};
use crate::lean_client::Lean;

/// Statements kept in flight on the connection (as `Pool::query` at 64 callers); at 64 per
/// Sync, two batches (128) so that the server never waits for the client.
const IN_FLIGHT: usize = 64;
/// Statements per Sync, one column each.
const PER_SYNC: [usize; 5] = [1, 2, 4, 16, 64];

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One figure of a row, from what a batch size used.
type Figure = fn(&CpuUse) -> f64;

/// Runs the section: `rounds` windows of `window` per batch size, batch sizes alternated.
pub async fn run(cluster: &TempCluster, rounds: usize, window: Duration) -> Result<(), Error> {
    let postmaster = postmaster_pid(cluster).map_err(|e| e.to_string())?;
    let mut lean = Lean::prepared(cluster.port(), &[("one", "SELECT 1", &[])]).await?;
    let mut totals = [CpuUse::default(); PER_SYNC.len()];
    for _ in 0..rounds {
        for (i, &k) in PER_SYNC.iter().enumerate() {
            let before = Cpu::now_with_server(postmaster);
            let started = Instant::now();
            let statements = window_of(&mut lean, k, window).await?;
            let wall = started.elapsed();
            let used = Cpu::now_with_server(postmaster).since(&before);
            totals[i].add(&used, wall, statements);
        }
    }
    println!(
        "[syncs] one connection, {IN_FLIGHT} prepared SELECT 1 in flight (at least two batches), \
         k statements per Sync (the bench's lean client, not a client for use); CPU in ticks of 10 ms"
    );
    print!("{:<28}", "statements per Sync");
    for k in PER_SYNC {
        print!("{k:>12}");
    }
    println!();
    let rows: [(&str, &str, Figure); 4] = [
        ("statements/s", "ops/s", |t| t.ops as f64 / t.wall.as_secs_f64()),
        ("server us/statement", "us", |t| per_statement(t.server, t.ops)),
        ("client us/statement", "us", |t| per_statement(t.client, t.ops)),
        ("server CPUs busy", "CPUs", |t| {
            t.server.as_secs_f64() / t.wall.as_secs_f64()
        }),
    ];
    for (name, unit, figure) in rows {
        print!("{name:<28}");
        for (i, k) in PER_SYNC.iter().enumerate() {
            let value = figure(&totals[i]);
            print!("{value:>12.2}");
            crate::report::record("syncs", name, &format!("{k} per Sync"), value, unit);
        }
        println!();
    }
    println!();
    Ok(())
}

/// Microseconds of `cpu` per statement.
fn per_statement(cpu: Duration, statements: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / statements.max(1) as f64
}

/// Keeps `IN_FLIGHT` statements in flight (at least two batches) in batches of `k` for
/// `window`: each time answers arrive, as many batches as were answered go out together in
/// one write (as tokio-postgres's driver gathers what its callers queued). Returns the
/// statements answered.
async fn window_of(lean: &mut Lean, k: usize, window: Duration) -> Result<usize, Error> {
    let batches = (IN_FLIGHT / k).max(2);
    for _ in 0..batches {
        lean.queue_batch("one", k)?;
    }
    lean.send().await?;
    let started = Instant::now();
    let mut answered = 0;
    let mut outstanding = batches;
    while started.elapsed() < window {
        let ready = lean.answered_batches().await?;
        answered += ready * k;
        for _ in 0..ready {
            lean.queue_batch("one", k)?;
        }
        lean.send().await?;
    }
    while outstanding > 0 {
        let ready = lean.answered_batches().await?;
        answered += ready * k;
        outstanding -= ready;
    }
    Ok(answered)
}
