//! Runs pgbench with a custom script against a test cluster: the same SQL with no client
//! library around it, for benchmarks to compare holdfast with.

use std::path::Path;
use std::process::Command;

use holdfast_tempdb::{PgBin, TempCluster};

/// How to run one pgbench measurement.
pub struct Run<'a> {
    /// The script file (pgbench's `-f`).
    pub script: &'a Path,
    /// `simple`, `extended` or `prepared` (`-M`).
    pub protocol: &'a str,
    /// Connections (`-c`); threads are `min(clients, 2)`, this machine's cores.
    pub clients: usize,
    /// Transactions per client (`-t`).
    pub transactions: usize,
}

/// Runs pgbench and returns its transactions per second (without connecting time).
pub fn tps(cluster: &TempCluster, run: &Run<'_>) -> Result<f64, Box<dyn std::error::Error>> {
    let pgbench = PgBin::find()?.program("pgbench");
    let out = Command::new(pgbench)
        .args(["-n", "-M", run.protocol, "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &cluster.port().to_string()])
        .args(["-c", &run.clients.to_string()])
        .args(["-j", &run.clients.min(2).to_string()])
        .args(["-t", &run.transactions.to_string()])
        .arg("-f")
        .arg(run.script)
        .arg("postgres")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| {
            format!(
                "pgbench printed no tps: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into()
        })
}
