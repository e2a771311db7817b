//! What the wire tap costs: `SELECT 1` round trips on one connection through the tap, and on
//! the same kind of socket without it, in alternating rounds; plus the tap's own CPU time per
//! round trip, measured on the same bytes without any I/O.

use std::time::Instant;

use holdfast_pool::{connect, ConnectConfig};
use holdfast_tempdb::{ClusterOptions, TempCluster};
use holdfast_wire::Observer;
use tokio_postgres::{Client, NoTls};

use crate::affinity;
use crate::stats::Spread;

/// Options of the tap benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Alternating rounds (each contender runs once per round, the order flips each round).
    #[arg(long, default_value_t = 64)]
    rounds: usize,
    /// SELECT 1 round trips per contender per round.
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    /// Connection pairs (plain, tapped) the rounds rotate over, so that what one server
    /// process happens to cost does not pass for the tap's cost.
    #[arg(long, default_value_t = 8)]
    pairs: usize,
    /// Warm-up round trips per contender before measuring.
    #[arg(long, default_value_t = 2000)]
    warmup: usize,
    /// Run client and server on all CPUs instead of pinning both to CPU 0. On a small shared
    /// machine unpinned runs are bimodal (wake-ups across cores), which hides a 1% effect.
    #[arg(long)]
    no_pin: bool,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if !args.no_pin {
        // Set before the cluster starts: the server inherits it.
        affinity::pin_to_cpu0()?;
    }
    let cluster = TempCluster::start(ClusterOptions::demo())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let url = cluster.url();
        let pg: tokio_postgres::Config = url.parse()?;
        let mut plains = Vec::new();
        let mut tapped = Vec::new();
        for _ in 0..args.pairs.max(1) {
            // Plain: tokio-postgres over a bare TcpStream (nodelay, like its own connect).
            let socket = tokio::net::TcpStream::connect(("127.0.0.1", cluster.port())).await?;
            socket.set_nodelay(true)?;
            let (plain, driver) = pg.connect_raw(socket, NoTls).await?;
            tokio::spawn(driver);
            plains.push(plain);
            // Tapped: holdfast's connect (the same socket type, wrapped in the tap).
            tapped.push(connect(&ConnectConfig::from_url(&url)?).await?);
        }
        for (plain, tap) in plains.iter().zip(&tapped) {
            select_ones(plain, args.warmup).await?;
            select_ones(tap.client(), args.warmup).await?;
        }
        let mut rates = [Vec::new(), Vec::new()];
        let mut ratios = Vec::with_capacity(args.rounds);
        for round in 0..args.rounds {
            let pair = round % plains.len();
            let clients = [&plains[pair], tapped[pair].client()];
            let order: [usize; 2] = if (round / plains.len()) % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut this_round = [0.0; 2];
            for i in order {
                let start = Instant::now();
                select_ones(clients[i], args.queries).await?;
                this_round[i] = args.queries as f64 / start.elapsed().as_secs_f64();
                rates[i].push(this_round[i]);
            }
            ratios.push(this_round[1] / this_round[0]);
        }
        let pinning = if args.no_pin { "unpinned" } else { "client and server pinned to CPU 0" };
        println!(
            "SELECT 1, {} rounds x {} round trips per contender, alternating over {} connection pairs, {pinning}",
            args.rounds,
            args.queries,
            plains.len()
        );
        println!("{:<16} {:>12} {:>12} {:>12}", "contender", "median q/s", "p10 q/s", "p90 q/s");
        let mut medians = [0.0; 2];
        for (i, name) in ["tokio-postgres", "holdfast tap"].iter().enumerate() {
            let r = Spread::of(&mut rates[i]);
            medians[i] = r.median;
            println!("{name:<16} {:>12.0} {:>12.0} {:>12.0}", r.median, r.p10, r.p90);
            crate::report::record("SELECT 1", name, "median", r.median, "q/s");
            crate::report::record("SELECT 1", name, "p10", r.p10, "q/s");
            crate::report::record("SELECT 1", name, "p90", r.p90, "q/s");
        }
        let ratio = Spread::of(&mut ratios);
        println!(
            "throughput ratio tap / plain, per round: {ratio}; tap cost {:+.2}%",
            ratio.cost_percent()
        );
        crate::report::record("SELECT 1", "tap / plain", "median", ratio.median, "ratio");
        crate::report::record("SELECT 1", "tap / plain", "p10", ratio.p10, "ratio");
        crate::report::record("SELECT 1", "tap / plain", "p90", ratio.p90, "ratio");
        let snap = tapped[0].state().snapshot();
        println!(
            "tap observed on pair 0: {} messages sent, {} received, {} ReadyForQuery, status {:?}",
            snap.messages_sent, snap.messages_received, snap.ready_for_query, snap.tx_status
        );
        let ns = observer_ns_per_round_trip(1_000_000);
        println!(
            "tap CPU time on the same bytes without I/O: {ns:.0} ns per round trip = {:.2}% of a plain round trip",
            ns * medians[0] / 1e9 * 100.0
        );
        crate::report::record("tap CPU without I/O", "per round trip", "time", ns, "ns");
        Ok(())
    })
}

async fn select_ones(client: &Client, n: usize) -> Result<(), tokio_postgres::Error> {
    let stmt = client.prepare("SELECT 1").await?;
    for _ in 0..n {
        client.query_one(&stmt, &[]).await?;
    }
    Ok(())
}

/// Feeds the bytes of one prepared `SELECT 1` round trip (Bind, Execute, Sync; BindComplete,
/// DataRow, CommandComplete, ReadyForQuery) through an observer, `n` times.
fn observer_ns_per_round_trip(n: u32) -> f64 {
    fn msg(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
        out.push(tag);
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
    }
    let (mut frontend, mut backend) = (Vec::new(), Vec::new());
    msg(&mut frontend, b'B', b"\0s0\0\0\0\0\0\0\x01\0\x01");
    msg(&mut frontend, b'E', b"\0\0\0\0\0");
    msg(&mut frontend, b'S', b"");
    msg(&mut backend, b'2', b"");
    msg(&mut backend, b'D', b"\0\x01\0\0\0\x011");
    msg(&mut backend, b'C', b"SELECT 1\0");
    msg(&mut backend, b'Z', b"I");
    let mut observer = Observer::established();
    let start = Instant::now();
    for _ in 0..n {
        observer.frontend_bytes(std::hint::black_box(&frontend));
        observer.backend_bytes(std::hint::black_box(&backend));
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}
