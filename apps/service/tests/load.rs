//! `holdfast load` end to end: the short CI run with one fault plan against the run's own
//! service, its report parsed back; and a run against a running service (`--url`) whose
//! database holds a session idle in a transaction, which must fail with a non-zero exit.

use std::collections::HashMap;
use std::process::Command;

use holdfast::pool::settings::table;
use holdfast::tasks::settings as task_settings;
use holdfast_service::harness::load::plan::FaultKind;
use holdfast_service::harness::load::{run, LoadArgs};
use holdfast_service::service::config::{self, ServeArgs};
use holdfast_service::service::serve::Service;
use holdfast_testkit::cluster;
use quick_xml::events::Event;

fn args(report: std::path::PathBuf) -> LoadArgs {
    LoadArgs {
        url: None,
        database_url: None,
        faults_control: None,
        task_schema: "holdfast".into(),
        duration_s: 15,
        assemblies: 3,
        segments: 10,
        step_ms: 30,
        api_clients: 3,
        api_rate: None,
        api_timeout_ms: 5000,
        faults: vec![FaultKind::Kill],
        in_order: false,
        short_timeouts: false,
        fault_every_s: 3.0,
        fault_length_s: 1.0,
        latency_ms: 100,
        seed: Some(42),
        max_fault_error_pct: 25.0,
        max_error_pct: 0.1,
        max_recovery_s: 3.0,
        drain_timeout_s: 60,
        report,
    }
}

/// Every element of a well-formed XML document (the reader checks that every end tag closes
/// the element open), with its attributes; panics if it is not well-formed.
fn elements(xml: &str) -> Vec<(String, HashMap<String, String>)> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                let name = e.name().into_inner().to_string();
                let attrs = e
                    .attributes()
                    .map(|a| {
                        let a = a.expect("attribute");
                        (
                            a.key.into_inner().to_string(),
                            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .expect("value")
                                .to_string(),
                        )
                    })
                    .collect();
                out.push((name, attrs));
            }
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_with_connection_kills_passes_and_its_report_holds_the_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let html_path = dir.path().join("load.html");
    let report = run(args(html_path.clone())).await.expect("the run runs");
    print!("{}", report.render_text());
    assert!(report.passed, "{}", report.render_text());
    assert!(!report.faults.is_empty(), "the plan played faults");
    assert!(report.faults.iter().all(|f| f.kind == FaultKind::Kill));
    assert!(
        report.faults.iter().all(|f| f.detail.starts_with("reset ")),
        "{:?}",
        report.faults
    );
    assert!(report.samples.len() >= 15, "{} samples", report.samples.len());
    assert!(report.totals.assemblies >= 3 && report.totals.ok > 0);
    assert_eq!(report.checks.len(), 10);
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.name == "no API error during kill, terminate and restart" && c.passed),
        "{:?}",
        report.checks
    );

    // The HTML: well-formed, every chart there, each series with a point per sample, every
    // fault marked on every chart.
    let html = std::fs::read_to_string(&html_path).expect("html written");
    let elements = elements(&html);
    let svgs: Vec<&HashMap<String, String>> = elements
        .iter()
        .filter(|(n, _)| n == "svg")
        .map(|(_, a)| a)
        .collect();
    for id in [
        "pool-api",
        "pool-work",
        "throughput",
        "latency",
        "tasks",
        "errors",
        "recovery",
    ] {
        assert!(
            svgs.iter()
                .any(|a| a.get("id").map(String::as_str) == Some(&format!("chart-{id}"))),
            "chart {id} missing"
        );
    }
    let in_use = elements
        .iter()
        .find(|(n, a)| n == "polyline" && a.get("data-series").map(String::as_str) == Some("in use"))
        .expect("API pool in-use series");
    let with_pool = report
        .samples
        .iter()
        .filter(|s| s.pools.contains_key("api"))
        .count();
    assert!(with_pool >= 14, "the service's /metrics was sampled: {with_pool}");
    assert_eq!(in_use.1["points"].split(' ').count(), with_pool);
    let ok = elements
        .iter()
        .find(|(n, a)| n == "polyline" && a.get("data-series").map(String::as_str) == Some("ok"))
        .expect("throughput series");
    assert_eq!(ok.1["points"].split(' ').count(), report.samples.len());
    let fault_marks = elements
        .iter()
        .filter(|(n, a)| n == "rect" && a.get("class").map(String::as_str) == Some("fault"))
        .count();
    assert_eq!(fault_marks, report.faults.len() * svgs.len());
    let check_rows = elements.iter().filter(|(n, _)| n == "tr").count();
    assert!(check_rows >= report.checks.len() + report.faults.len());

    // The JSON: the same data.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("load.json")).expect("json written"))
            .expect("json");
    assert_eq!(json["passed"], true);
    assert_eq!(
        json["samples"].as_array().map(Vec::len),
        Some(report.samples.len())
    );
    assert_eq!(json["settings"]["seed"], 42);
    assert_eq!(json["faults"][0]["kind"], "kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_running_service_a_session_left_in_a_transaction_fails_the_run() {
    let db = cluster().create_database().expect("database");
    let serve = ServeArgs::for_database(db.url.clone())
        .set(&config::LISTEN, "127.0.0.1:0")
        .set(&table::POOL_SIZE, 3)
        .set(&table::MAX_OVERFLOW, 2)
        .set(&table::STATEMENT_TIMEOUT, 30_000)
        .set(&config::ASSEMBLY_STEP, 20)
        .set(&task_settings::LEASE, 3000)
        .set(&task_settings::SHUTDOWN_GRACE, 100);
    let service = Service::start(&serve).await.expect("service starts");
    // Somebody else's session, left inside a transaction.
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("open a transaction");

    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("r.html");
    let url = format!("http://{}", service.addr());
    let bin = env!("CARGO_BIN_EXE_holdfast");
    let output = tokio::task::spawn_blocking({
        let (url, db_url, report) = (url.clone(), db.url.clone(), report.clone());
        move || {
            Command::new(bin)
                .args(["load", "--url", &url, "--duration-s", "5", "--assemblies", "2"])
                .args([
                    "--segments",
                    "5",
                    "--api-clients",
                    "2",
                    "--faults",
                    "none",
                    "--drain-timeout-s",
                    "30",
                ])
                .arg("--report")
                .arg(&report)
                .env("DATABASE_URL", &db_url)
                .output()
                .expect("holdfast load runs")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  no session left idle in a transaction: 1:"),
        "{stdout}"
    );
    assert!(stdout.contains("pass  no task or episode stuck"), "{stdout}");
    assert!(stdout.contains("verdict         FAIL"), "{stdout}");
    assert!(report.exists() && report.with_extension("json").exists());

    // A fault this setup cannot play is refused up front, naming the flag.
    let refused = Command::new(bin)
        .args(["load", "--url", &url, "--faults", "restart"])
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--faults restart"), "{stderr}");
    client.batch_execute("ROLLBACK").await.expect("rollback");
    service.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failovers_and_switchovers_lose_nothing_and_leave_nothing_stuck() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = args(dir.path().join("ha.html"));
    args.faults = vec![FaultKind::Failover, FaultKind::Switchover];
    args.in_order = true;
    let report = run(args).await.expect("the run runs");
    print!("{}", report.render_text());
    let errors: Vec<String> = report
        .samples
        .iter()
        .filter(|s| !s.errors.is_empty())
        .map(|s| format!("{:.0} s: {:?}", s.t_s, s.errors))
        .collect();
    assert!(report.passed, "{}\nerrors: {errors:?}", report.render_text());
    let kinds: Vec<FaultKind> = report.faults.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [FaultKind::Failover, FaultKind::Switchover],
        "both played, in order"
    );
    assert!(
        report
            .faults
            .iter()
            .all(|f| f.detail.contains("promoted the standby")),
        "{:?}",
        report.faults
    );
    // A write went through after each promotion.
    assert!(
        report.faults.iter().all(|f| f.write_recovered_s.is_some()),
        "{:?}",
        report.faults
    );
    for name in [
        "nothing acknowledged is lost",
        "nothing is doubled",
        "every assembly started is completed",
    ] {
        assert!(
            report.checks.iter().any(|c| c.name.starts_with(name) && c.passed),
            "{name}: {:?}",
            report.checks
        );
    }
}
