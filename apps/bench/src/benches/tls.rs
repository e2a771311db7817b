//! What TLS costs: `SELECT 1` round trips on one connection, and opening a connection, over
//! TLS (sslmode=verify-full, certificates made here) and over plain TCP to the same throwaway
//! server, in alternating rounds. Also what the default `sslmode=prefer` adds to a connect to
//! a server without TLS (the SSLRequest it refuses) against `sslmode=disable`.

use std::time::Instant;

use holdfast_pool::{connect, ConnectConfig, Connection};
use holdfast_tempdb::{ClusterOptions, TempCluster};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::affinity;
use crate::stats::{median, quantile};

/// Options of the TLS benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Alternating rounds (each contender runs once per round, the order flips each round).
    #[arg(long, default_value_t = 32)]
    rounds: usize,
    /// SELECT 1 round trips per contender per round.
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    /// Connects per contender per round.
    #[arg(long, default_value_t = 20)]
    connects: usize,
    /// Run client and server on all CPUs instead of pinning both to CPU 0.
    #[arg(long)]
    no_pin: bool,
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A CA and a server certificate for localhost: (CA PEM, server certificate PEM, key PEM).
fn certificates() -> BenchResult<(String, String, String)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "holdfast bench CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&key, &ca)?;
    Ok((ca.pem(), server.pem(), key.serialize_pem()))
}

async fn select_ones(conn: &Connection, n: usize) -> Result<(), tokio_postgres::Error> {
    let stmt = conn.prepare("SELECT 1").await?;
    for _ in 0..n {
        conn.query_one(&stmt, &[]).await?;
    }
    Ok(())
}

/// Median seconds of `n` connects (each closed before the next).
async fn connect_times(config: &ConnectConfig, n: usize) -> BenchResult<Vec<f64>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let conn = connect(config).await?;
        times.push(start.elapsed().as_secs_f64());
        drop(conn);
    }
    Ok(times)
}

pub fn run(args: Args) -> BenchResult<()> {
    if !args.no_pin {
        affinity::pin_to_cpu0()?;
    }
    let (ca, cert, key) = certificates()?;
    let cluster = TempCluster::start(
        ClusterOptions::default()
            .server_file("server.crt", cert, 0o644)
            .server_file("server.key", key, 0o600)
            .setting("ssl", "on")
            .setting("ssl_cert_file", "'server.crt'")
            .setting("ssl_key_file", "'server.key'"),
    )?;
    let no_tls = TempCluster::start(ClusterOptions::default())?;
    let root = cluster.socket_dir().join("bench-root.crt");
    std::fs::write(&root, ca)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let base = format!("postgres://postgres@localhost:{}/postgres", cluster.port());
        let configs = [
            ConnectConfig::from_url(&format!("{base}?sslmode=disable"))?,
            ConnectConfig::from_url(&format!("{base}?sslmode=verify-full&sslrootcert={}", root.display()))?,
        ];
        let no_tls_base = format!("postgres://postgres@127.0.0.1:{}/postgres", no_tls.port());
        let refused = [
            ConnectConfig::from_url(&format!("{no_tls_base}?sslmode=disable"))?,
            ConnectConfig::from_url(&format!("{no_tls_base}?sslmode=prefer"))?,
        ];
        let conns = [connect(&configs[0]).await?, connect(&configs[1]).await?];
        if conns[0].is_tls() || !conns[1].is_tls() {
            return Err("the contenders are not plain and TLS".into());
        }
        for conn in &conns {
            select_ones(conn, args.queries).await?;
        }
        let mut rates = [Vec::new(), Vec::new()];
        let mut connects = [Vec::new(), Vec::new()];
        let mut rate_ratios = Vec::new();
        let mut connect_ratios = Vec::new();
        let mut refused_times = [Vec::new(), Vec::new()];
        let mut refused_ratios = Vec::new();
        for round in 0..args.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut rate = [0.0; 2];
            let mut time = [0.0; 2];
            for i in order {
                let start = Instant::now();
                select_ones(&conns[i], args.queries).await?;
                rate[i] = args.queries as f64 / start.elapsed().as_secs_f64();
                rates[i].push(rate[i]);
                let mut t = connect_times(&configs[i], args.connects).await?;
                time[i] = median(&mut t);
                connects[i].push(time[i]);
            }
            rate_ratios.push(rate[1] / rate[0]);
            connect_ratios.push(time[1] / time[0]);
            let mut refused_time = [0.0; 2];
            for i in order {
                let mut t = connect_times(&refused[i], args.connects).await?;
                refused_time[i] = median(&mut t);
                refused_times[i].push(refused_time[i]);
            }
            refused_ratios.push(refused_time[1] / refused_time[0]);
        }
        let pinning = if args.no_pin { "unpinned" } else { "client and server pinned to CPU 0" };
        println!(
            "{} alternating rounds: {} SELECT 1 round trips and {} connects per contender per round, {pinning}",
            args.rounds, args.queries, args.connects
        );
        println!(
            "{:<28}{:>12}{:>10}{:>10}{:>16}",
            "", "median q/s", "p10", "p90", "median connect"
        );
        for (i, name) in ["plain TCP (sslmode=disable)", "TLS (sslmode=verify-full)"].iter().enumerate() {
            println!(
                "{name:<28}{:>12.0}{:>10.0}{:>10.0}{:>13.2} ms",
                median(&mut rates[i]),
                quantile(&mut rates[i], 0.1),
                quantile(&mut rates[i], 0.9),
                median(&mut connects[i]) * 1000.0
            );
        }
        println!(
            "ratio TLS / plain, per round: throughput median {:.3} (p10 {:.3}, p90 {:.3}); connect time median {:.2}x (p10 {:.2}x, p90 {:.2}x)",
            median(&mut rate_ratios),
            quantile(&mut rate_ratios, 0.1),
            quantile(&mut rate_ratios, 0.9),
            median(&mut connect_ratios),
            quantile(&mut connect_ratios, 0.1),
            quantile(&mut connect_ratios, 0.9)
        );
        println!(
            "server without TLS: connect with sslmode=prefer {:.3} ms, sslmode=disable {:.3} ms; ratio per round median {:.3} (p10 {:.3}, p90 {:.3})",
            median(&mut refused_times[1]) * 1000.0,
            median(&mut refused_times[0]) * 1000.0,
            median(&mut refused_ratios),
            quantile(&mut refused_ratios, 0.1),
            quantile(&mut refused_ratios, 0.9)
        );
        Ok(())
    })
}
