//! `holdfast load`: the incident's load and failure-recovery tests as one command. It drives
//! the service (a running one, or its own behind a throwaway database and the fault proxy)
//! with assemblies and API clients for a bounded time, plays a fault plan drawn from a seed,
//! samples everything once a second, checks the database against what the API acknowledged,
//! and writes an HTML and a JSON report. The exit code is non-zero if any check failed.

pub mod checks;
pub mod inject;
pub mod nodes;
pub mod plan;
pub mod progress;
pub mod report;
pub mod samples;
pub mod traffic;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holdfast::pool::{ConnectConfig, PoolConfig};
use holdfast::Pool;
use holdfast_faults::FaultProxy;
use serde_json::json;

use self::checks::Bounds;
use self::inject::{Injector, Proxy, OWN_APPLICATION_NAME};
use self::nodes::Nodes;
use self::plan::{FaultKind, Planned, Played};
use self::progress::Progress;
use self::report::{LoadReport, Totals};
use self::samples::{percentile, Sample, Sampler};
use self::traffic::{lock, ApiLoad, Ledger};
use crate::error::ServiceError;
use crate::harness::db_target::Target;
use crate::service::config::{self, ServeArgs};
use crate::service::serve::{prometheus, Service};
use holdfast::pool::settings::table;
use holdfast::tasks::settings as task_settings;

/// Options of `holdfast load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// A running service to drive (`http://127.0.0.1:8080`; loopback only). Without it the
    /// run starts its own: a throwaway PostgreSQL, the fault proxy, the service behind it.
    #[arg(long)]
    pub url: Option<String>,
    /// The service's database, reached directly (not through any proxy): the end checks read
    /// it. Required with --url; without --url, the run's own service uses it instead of a
    /// throwaway database.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// With --url: the control port of the `holdfast faults` proxy in front of the service's
    /// database (needed for the kill, blackhole and latency faults).
    #[arg(long)]
    pub faults_control: Option<SocketAddr>,
    /// With --url: the schema of the service's task queue.
    #[arg(
        long,
        env = "TASK_SCHEMA",
        value_name = "TASK_SCHEMA",
        default_value = "holdfast"
    )]
    pub task_schema: String,
    /// How long to send load, seconds (then running assemblies are let finish).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(5..=86_400))]
    pub duration_s: u64,
    /// Assemblies kept running at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub assemblies: u32,
    /// Segments per assembled episode.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub segments: u32,
    /// The run's own service: mixing time per segment, milliseconds.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub step_ms: u64,
    /// API clients, each sending its next request when the last is answered.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub api_clients: u32,
    /// Instead of --api-clients: API requests per second, whatever the answers.
    #[arg(long, conflicts_with = "api_clients", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub api_rate: Option<u32>,
    /// Give up on an API request after this many milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub api_timeout_ms: u64,
    /// Faults to draw from (comma-separated): none, kill, restart, terminate, blackhole, latency.
    #[arg(long, value_delimiter = ',', default_value = "kill")]
    pub faults: Vec<FaultKind>,
    /// The run's own service: short timeouts instead of `holdfast serve`'s defaults (API
    /// pool wait 1 s, request 3 s, statement 30 s, lease 3 s, assembly 20 s, shutdown grace
    /// 2 s), for quick test runs. Without it the service runs as shipped.
    #[arg(long)]
    pub short_timeouts: bool,
    /// Play each fault of --faults once, in the order given, spread evenly over the run,
    /// instead of a plan drawn from the seed.
    #[arg(long)]
    pub in_order: bool,
    /// About how often a fault is played, seconds (never sooner than --max-recovery-s after
    /// the previous one ended).
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    pub fault_every_s: f64,
    /// How long a blackhole or latency fault lasts, seconds.
    #[arg(long, default_value_t = 2.0, value_parser = positive_seconds)]
    pub fault_length_s: f64,
    /// Delay the latency fault adds each way, milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub latency_ms: u64,
    /// Seed of the fault plan and the request mix (default: random, and printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Check: most API requests failing during a fault (from its start until the API
    /// recovered, plus the longest a request may take), percent.
    #[arg(long, default_value_t = 25.0, value_parser = percent)]
    pub max_fault_error_pct: f64,
    /// Check: most API requests failing outside faults, percent.
    #[arg(long, default_value_t = 0.1, value_parser = percent)]
    pub max_error_pct: f64,
    /// Check: longest time from a fault's end to the first API success after it, seconds.
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    pub max_recovery_s: f64,
    /// After the load: how long running assemblies may take to finish, seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub drain_timeout_s: u64,
    /// Where to write the HTML report; the JSON goes next to it (same name, `.json`).
    #[arg(long, default_value = "holdfast-load.html")]
    pub report: PathBuf,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("expected seconds above 0 and at most 86400, got {s:?}")),
    }
}

fn percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a percentage from 0 to 100, got {s:?}")),
    }
}

/// What the run drives.
struct Setup {
    addr: SocketAddr,
    service: Option<Service>,
    admin: Pool,
    injector: Injector,
    schema: String,
    /// The longest an API request can take (the service's request timeout, or the client's).
    tail: Duration,
}

/// Runs a load: returns the report (already written to disk), or why it could not run.
pub async fn run(args: LoadArgs) -> Result<LoadReport, ServiceError> {
    let started = Instant::now();
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    println!("holdfast load: seed {seed} (--seed {seed} plays the same faults again)");
    let mut setup = match &args.url {
        Some(url) => external(&args, url).await?,
        None => own(&args).await?,
    };
    setup.injector.check(&args.faults)?;
    let spacing = plan::Spacing {
        duration_s: args.duration_s as f64,
        every_s: args.fault_every_s,
        length_s: args.fault_length_s,
        quiet_s: args.max_recovery_s,
    };
    let plan = if args.in_order {
        plan::in_order(&args.faults, spacing)
    } else {
        plan::schedule(&args.faults, seed, spacing)
    };
    let since = server_now(&setup.admin).await?;
    let tag = format!(
        "{:x}",
        since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
    );
    let ledger = Arc::new(Ledger::new(tag));
    let duration = Duration::from_secs(args.duration_s);
    let timeout = Duration::from_millis(args.api_timeout_ms);

    // The load, and the faults.
    let stop = Arc::new(AtomicBool::new(false));
    let load = match args.api_rate {
        Some(rate) => ApiLoad::Rate(rate),
        None => ApiLoad::Concurrency(args.api_clients),
    };
    let clients = tokio::spawn(traffic::api_clients(
        setup.addr,
        Arc::clone(&ledger),
        load,
        seed,
        timeout,
        Arc::clone(&stop),
    ));
    let keeper = tokio::spawn(traffic::keep_assemblies(
        setup.addr,
        setup.admin.clone(),
        Arc::clone(&ledger),
        args.assemblies as usize,
        args.segments,
        timeout,
        ledger.origin + duration,
    ));
    let injector = Arc::new(setup.injector);
    let played = Arc::new(Mutex::new(Vec::<Played>::new()));
    let current = Arc::new(Mutex::new(None::<String>));
    let faults = tokio::spawn(play(
        plan,
        Arc::clone(&injector),
        Arc::clone(&ledger),
        Arc::clone(&played),
        Arc::clone(&current),
    ));

    // One sample a second while the load runs, then while the assemblies finish.
    let mut sampler = Sampler::new(setup.addr, setup.admin.clone(), setup.schema.clone(), since);
    let mut progress = Progress::default();
    let mut samples: Vec<Sample> = Vec::new();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let total_s = duration.as_secs_f64();
    loop {
        tick.tick().await;
        let fault = lock(&current).clone();
        let sample = sampler.take(&ledger, fault).await;
        progress.show("load", sample.t_s, total_s, &sample);
        samples.push(sample);
        if ledger.origin.elapsed() >= duration {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = keeper.await;
    let _ = clients.await;
    let _ = faults.await;
    let drain_until = Instant::now() + Duration::from_secs(args.drain_timeout_s);
    loop {
        tick.tick().await;
        let sample = sampler.take(&ledger, None).await;
        let unfinished: i64 = ["available", "running", "retry_wait"]
            .iter()
            .map(|s| sample.tasks.get(*s).copied().unwrap_or(0))
            .sum();
        progress.show("draining", sample.t_s, total_s, &sample);
        let drained = !sample.tasks.is_empty() && unfinished == 0;
        samples.push(sample);
        if drained || Instant::now() >= drain_until {
            break;
        }
    }
    progress.finish();

    // The checks: the database first, while the service still runs (a session left idle in
    // a transaction shows now, not after its pool is closed).
    let mut played = lock(&played).clone();
    let outcomes = lock(&ledger.outcomes).clone();
    checks::recoveries(&mut played, &outcomes);
    let mut all_checks = checks::data_checks(&setup.admin, &setup.schema, since, &ledger).await?;
    let bounds = Bounds {
        fault_error_pct: args.max_fault_error_pct,
        error_pct: args.max_error_pct,
        recovery_s: args.max_recovery_s,
        tail_s: setup.tail.as_secs_f64(),
    };
    all_checks.extend(checks::api_checks(&played, &outcomes, bounds));
    // The service's ERROR lines, when it runs in this process (with the binary's logging).
    let errors_at: Option<Vec<f64>> = setup.service.is_some().then(|| {
        crate::logging::errors_logged()
            .iter()
            .filter_map(|at| at.checked_duration_since(ledger.origin))
            .map(|d| d.as_secs_f64())
            .collect()
    });
    all_checks.extend(checks::absorbed_checks(
        &played,
        &outcomes,
        errors_at.as_deref(),
        bounds.tail_s,
    ));
    if let Some(service) = setup.service.take() {
        service.stop().await?;
    }
    setup.admin.close().await;

    let mut ms: Vec<f64> = outcomes.iter().map(|o| o.ms()).collect();
    ms.sort_by(f64::total_cmp);
    let totals = Totals {
        requests: outcomes.len() as u64,
        ok: outcomes.iter().filter(|o| o.ok).count() as u64,
        p50_ms: percentile(&ms, 0.5),
        p99_ms: percentile(&ms, 0.99),
        not_sent: ledger.not_sent.load(Ordering::Relaxed),
        episodes: lock(&ledger.episodes).iter().filter(|e| e.id.is_some()).count() as u64,
        assemblies: lock(&ledger.started).len() as u64,
    };
    let report = LoadReport {
        passed: all_checks.iter().all(|c| c.passed),
        settings: settings(&args, seed),
        seconds: started.elapsed().as_secs_f64(),
        samples,
        faults: played,
        checks: all_checks,
        totals,
    };
    write(&args.report, &report)?;
    Ok(report)
}

/// Plays the faults at their moments; records each as played.
async fn play(
    plan: Vec<Planned>,
    injector: Arc<Injector>,
    ledger: Arc<Ledger>,
    played: Arc<Mutex<Vec<Played>>>,
    current: Arc<Mutex<Option<String>>>,
) {
    for fault in plan {
        let at = ledger.origin + Duration::from_secs_f64(fault.at_s);
        tokio::time::sleep_until(at.into()).await;
        let start_s = ledger.now_s();
        *lock(&current) = Some(fault.kind.as_str().to_string());
        let mut detail = injector
            .begin(fault.kind)
            .await
            .unwrap_or_else(|e| format!("failed: {e}"));
        if fault.kind.lasts() {
            let until = ledger.origin + Duration::from_secs_f64(start_s + fault.length_s);
            tokio::time::sleep_until(until.into()).await;
            if let Err(e) = injector.end(fault.kind).await {
                detail.push_str(&format!("; lifting it failed: {e}"));
            }
        }
        *lock(&current) = None;
        lock(&played).push(Played {
            kind: fault.kind,
            start_s,
            end_s: ledger.now_s(),
            detail,
            recovered_s: None,
            write_recovered_s: None,
        });
    }
}

/// A running service at `url`, its database at DATABASE_URL.
async fn external(args: &LoadArgs, url: &str) -> Result<Setup, ServiceError> {
    let addr = loopback_url(url)?;
    let direct = args.database_url.as_deref().ok_or_else(|| {
        ServiceError::Run(
            "--url: the end checks read the service's database directly; give --database-url (or DATABASE_URL)"
                .into(),
        )
    })?;
    if let Some(control) = args.faults_control {
        if !control.ip().is_loopback() {
            return Err(ServiceError::Run(format!(
                "--faults-control: {control} is not a loopback address"
            )));
        }
    }
    let schema = holdfast::tasks::Queue::new(&args.task_schema)
        .map_err(|e| ServiceError::Run(format!("--task-schema: {e}")))?
        .schema()
        .to_string();
    let admin = admin_pool(direct)?;
    Ok(Setup {
        addr,
        service: None,
        injector: Injector {
            proxy: args.faults_control.map_or(Proxy::Absent, Proxy::Remote),
            nodes: None,
            admin: admin.clone(),
            latency: Duration::from_millis(args.latency_ms),
        },
        admin,
        schema,
        tail: Duration::from_millis(args.api_timeout_ms),
    })
}

/// The run's own service, behind the fault proxy, on a throwaway database (or DATABASE_URL).
async fn own(args: &LoadArgs) -> Result<Setup, ServiceError> {
    // The recorder must be in place before the service's pools register their metrics.
    let _ = prometheus();
    let (nodes, direct) = match &args.database_url {
        Some(url) => (None, url.clone()),
        None => {
            let standby = args.faults.iter().any(|f| f.needs_standby());
            println!(
                "starting a throwaway PostgreSQL{}, the fault proxy and the service...",
                if standby {
                    " with a synchronous standby"
                } else {
                    ""
                }
            );
            let nodes = tokio::task::spawn_blocking(move || Nodes::start(standby))
                .await
                .map_err(|e| ServiceError::Run(format!("starting the throwaway PostgreSQL: {e}")))??;
            let ports = nodes.ports();
            let nodes = Arc::new(nodes);
            let url = if ports.len() == 1 {
                nodes.primary().url()
            } else {
                Target::on_hosts(&ports, "postgres", "postgres")
            };
            (Some(nodes), url)
        }
    };
    // A proxy in front of each server; the service lists them all.
    let mut proxies = Vec::new();
    let service_url = match &nodes {
        Some(n) if n.has_standby() => {
            for port in n.ports() {
                proxies
                    .push(FaultProxy::start_local(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await?);
            }
            let ports: Vec<u16> = proxies.iter().map(|p| p.port()).collect();
            Target::on_hosts(&ports, "postgres", "postgres")
        }
        _ => {
            let target = Target::parse(&direct)?;
            let proxy = FaultProxy::start_local(target.resolve().await?).await?;
            let url = target.through(proxy.port());
            proxies.push(proxy);
            url
        }
    };
    // The load's shape (assemblies at once, mixing time) is the run's; every timeout is
    // `holdfast serve`'s default unless --short-timeouts.
    let mut serve = ServeArgs::for_database(service_url)
        .set(&config::LISTEN, "127.0.0.1:0")
        .set(&config::ASSEMBLY_WORKERS, args.assemblies)
        .set(&config::ASSEMBLY_STEP, args.step_ms);
    if args.short_timeouts {
        // Assemblies here take about a second, several during a latency fault; a body
        // whose statement a blackhole swallowed is stopped after 20 s and runs again.
        serve = serve
            .set(&config::API_REQUEST_TIMEOUT, 3000)
            .set(&table::STATEMENT_TIMEOUT, 30_000)
            .set(&task_settings::LEASE, 3000)
            .set(&config::ASSEMBLY_TIMEOUT, 20_000)
            .set(&task_settings::SHUTDOWN_GRACE, 2000);
    }
    let request_timeout = serve.request_timeout()?;
    let service = Service::start(&serve).await?;
    let ports: Vec<String> = proxies.iter().map(|p| p.port().to_string()).collect();
    println!(
        "service on http://{}, database behind the fault proxy on port {}",
        service.addr(),
        ports.join(" and ")
    );
    let admin = admin_pool(&direct)?;
    Ok(Setup {
        addr: service.addr(),
        service: Some(service),
        injector: Injector {
            proxy: Proxy::Local(proxies),
            nodes,
            admin: admin.clone(),
            latency: Duration::from_millis(args.latency_ms),
        },
        admin,
        schema: task_settings::SCHEMA.read_or_default(&serve),
        tail: request_timeout.min(Duration::from_millis(args.api_timeout_ms)),
    })
}

fn admin_pool(url: &str) -> Result<Pool, ServiceError> {
    let connect = ConnectConfig::parse_setting("DATABASE_URL", url)?.application_name(OWN_APPLICATION_NAME);
    Ok(Pool::new(PoolConfig::new(connect).pool_size(3).name("load"))?)
}

async fn server_now(admin: &Pool) -> Result<SystemTime, ServiceError> {
    let conn = admin.get().await?;
    let row = conn
        .query_one("SELECT now()", &[])
        .await
        .map_err(ServiceError::database("reading the service database's clock"))?;
    Ok(row.get(0))
}

/// `http://127.0.0.1:8080` (or `localhost`, or `[::1]`) to its address; nothing else.
fn loopback_url(url: &str) -> Result<SocketAddr, ServiceError> {
    loopback_addr(url).map_err(ServiceError::Run)
}

fn loopback_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url: expected http://HOST:PORT of the service on loopback, got {url:?}"))?;
    let authority = rest.trim_end_matches('/');
    let authority = authority.replacen("localhost:", "127.0.0.1:", 1);
    let addr: SocketAddr = authority.parse().map_err(|_| {
        format!("--url: expected http://HOST:PORT with a loopback IP or localhost, got {url:?}")
    })?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--url: {} is not a loopback address; load runs only drive services on this machine",
            addr.ip()
        ));
    }
    Ok(addr)
}

fn settings(args: &LoadArgs, seed: u64) -> serde_json::Value {
    json!({
        "seed": seed,
        "url": args.url,
        "duration_s": args.duration_s,
        "assemblies": args.assemblies,
        "segments": args.segments,
        "step_ms": args.url.is_none().then_some(args.step_ms),
        "api_clients": args.api_rate.is_none().then_some(args.api_clients),
        "api_rate": args.api_rate,
        "api_timeout_ms": args.api_timeout_ms,
        "faults": args.faults.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "in_order": args.in_order,
        "short_timeouts": args.short_timeouts,
        "fault_every_s": args.fault_every_s,
        "fault_length_s": args.fault_length_s,
        "latency_ms": args.latency_ms,
        "max_fault_error_pct": args.max_fault_error_pct,
        "max_error_pct": args.max_error_pct,
        "max_recovery_s": args.max_recovery_s,
    })
}

/// Writes the HTML report and the JSON next to it.
fn write(path: &std::path::Path, report: &LoadReport) -> Result<(), ServiceError> {
    std::fs::write(path, report.render_html()).map_err(ServiceError::io(format!(
        "--report: cannot write {}",
        path.display()
    )))?;
    let json_path = path.with_extension("json");
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| ServiceError::Run(format!("the report as JSON: {e}")))?;
    std::fs::write(&json_path, json).map_err(ServiceError::io(format!(
        "--report: cannot write {}",
        json_path.display()
    )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_services_are_driven() {
        assert_eq!(
            loopback_addr("http://127.0.0.1:8080/").ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert!(loopback_addr("http://localhost:9000").is_ok());
        assert!(loopback_addr("http://[::1]:9000").is_ok());
        let far = loopback_addr("http://10.1.2.3:8080").unwrap_err();
        assert!(far.contains("not a loopback address"), "{far}");
        assert!(loopback_addr("https://127.0.0.1:1")
            .unwrap_err()
            .contains("http://HOST:PORT"));
        assert!(loopback_addr("http://example.com:80").is_err());
    }
}
