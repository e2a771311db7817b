//! `holdfast demo`: a preset of `holdfast load`. A throwaway PostgreSQL, the fault proxy in
//! front of it, the service behind the proxy; assemblies run while API clients keep asking;
//! every database connection is killed mid-assembly, later the database restarts. The same
//! set-up, checks, percentiles and report as a load run, because it is one: [`preset`] says
//! which flags, and the demo prints them.

use std::path::PathBuf;

use clap::Parser;

use super::load::plan::FaultKind;
use super::load::report::LoadReport;
use super::load::{self, LoadArgs};
use crate::error::ServiceError;

/// Options of `holdfast demo`: the few a first run may want to change; everything else is
/// `holdfast load`'s default.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Assemblies kept running at once (and assembly workers).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub assemblies: u32,
    /// Segments per episode (one mixing step each).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub segments: u32,
    /// Mixing time per segment, in milliseconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub step_ms: u64,
    /// Concurrent API clients running while assemblies do.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub api_clients: u32,
    /// Faults to play once each, in this order (kill, restart, terminate, blackhole,
    /// latency); `none` for a clean run.
    #[arg(long, value_delimiter = ',', default_value = "kill,restart")]
    pub faults: Vec<FaultKind>,
    /// How long to send load, seconds (then running assemblies are let finish).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub duration_s: u64,
    /// Use this database instead of a throwaway one (the proxy still goes in front; the
    /// restart fault is left out, the database is not the demo's to restart).
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Where to write the HTML report; the JSON goes next to it.
    #[arg(long, default_value = "holdfast-demo.html")]
    pub report: PathBuf,
}

/// The `holdfast load` flags the demo stands for (without the database URL, which is
/// passed as it is and never printed).
pub fn preset(args: &DemoArgs) -> Vec<String> {
    let mut faults: Vec<&str> = args
        .faults
        .iter()
        .filter(|f| !(args.database_url.is_some() && **f == FaultKind::Restart))
        .map(|f| f.as_str())
        .collect();
    if faults.is_empty() {
        faults.push("none");
    }
    [
        "--in-order",
        "--seed",
        "1",
        // Outside faults, not one failed request; during kill and restart the run requires
        // none either, nor an ERROR line.
        "--max-error-pct",
        "0",
        "--duration-s",
        &args.duration_s.to_string(),
        "--assemblies",
        &args.assemblies.to_string(),
        "--segments",
        &args.segments.to_string(),
        "--step-ms",
        &args.step_ms.to_string(),
        "--api-clients",
        &args.api_clients.to_string(),
        "--faults",
        &faults.join(","),
        "--report",
        &args.report.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The load run's arguments, as its command line would give them.
#[derive(Debug, Parser)]
struct LoadCommand {
    #[command(flatten)]
    load: LoadArgs,
}

/// Runs the demo: the load run of [`preset`].
pub async fn run(args: DemoArgs) -> Result<LoadReport, ServiceError> {
    let flags = preset(&args);
    println!("holdfast demo: holdfast load {}", flags.join(" "));
    if args.database_url.is_some() && args.faults.contains(&FaultKind::Restart) {
        println!("  (restart left out: the given database is not the demo's to restart)");
    }
    let parsed = LoadCommand::try_parse_from(std::iter::once("load".to_string()).chain(flags))
        .map_err(|e| ServiceError::Run(format!("the demo's preset is not a valid load run: {e}")))?;
    let mut load = parsed.load;
    load.database_url = args.database_url;
    load::run(load).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo(faults: &[FaultKind], database_url: Option<&str>) -> DemoArgs {
        DemoArgs {
            assemblies: 2,
            segments: 5,
            step_ms: 10,
            api_clients: 1,
            faults: faults.to_vec(),
            duration_s: 8,
            database_url: database_url.map(str::to_string),
            report: PathBuf::from("demo.html"),
        }
    }

    #[test]
    fn the_preset_is_a_valid_load_command_that_keeps_the_demos_choices() {
        let flags = preset(&demo(&[FaultKind::Kill, FaultKind::Restart], None));
        let parsed = LoadCommand::try_parse_from(std::iter::once("load".to_string()).chain(flags))
            .expect("a valid load command");
        let load = parsed.load;
        assert!(load.in_order);
        assert_eq!(load.faults, [FaultKind::Kill, FaultKind::Restart]);
        assert_eq!((load.duration_s, load.assemblies, load.segments), (8, 2, 5));
        assert_eq!((load.step_ms, load.api_clients), (10, 1));
        assert_eq!(load.report, PathBuf::from("demo.html"));
    }

    #[test]
    fn against_a_given_database_the_restart_is_left_out_and_the_url_never_printed() {
        let url = "postgres://app:s3cret@db.example/app";
        let flags = preset(&demo(&[FaultKind::Restart, FaultKind::Kill], Some(url)));
        let text = flags.join(" ");
        assert!(text.contains("--faults kill"), "{text}");
        assert!(!text.contains("restart"), "{text}");
        assert!(!text.contains("s3cret") && !text.contains("db.example"), "{text}");
        let only_restart = preset(&demo(&[FaultKind::Restart], Some(url))).join(" ");
        assert!(only_restart.contains("--faults none"), "{only_restart}");
    }
}
