//! The demo, a preset of the load run, end to end in a shortened form: the same faults (every
//! connection killed mid-assembly, then a database restart), fewer and shorter assemblies.

use holdfast_service::harness::demo::{run, DemoArgs};
use holdfast_service::harness::load::plan::FaultKind;
use holdfast_testkit::cluster;

fn demo(report: std::path::PathBuf, database_url: Option<String>) -> DemoArgs {
    DemoArgs {
        assemblies: 2,
        segments: 8,
        step_ms: 40,
        api_clients: 2,
        faults: vec![FaultKind::Kill, FaultKind::Restart],
        duration_s: 10,
        database_url,
        report,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_passes_through_a_kill_and_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = run(demo(dir.path().join("demo.html"), None))
        .await
        .expect("the demo runs");
    print!("{}", report.render_text());
    let played: Vec<FaultKind> = report.faults.iter().map(|f| f.kind).collect();
    assert_eq!(
        played,
        [FaultKind::Kill, FaultKind::Restart],
        "both faults, in order"
    );
    assert!(
        report.faults[0].detail.starts_with("reset ") && !report.faults[0].detail.starts_with("reset 0 "),
        "the kill reached live connections: {}",
        report.faults[0].detail
    );
    for check in &report.checks {
        assert!(check.passed, "{}: {}", check.name, check.detail);
    }
    assert!(report.totals.ok > 0 && report.totals.assemblies > 0);
    assert!(report.passed);
    assert!(dir.path().join("demo.html").exists() && dir.path().join("demo.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_against_a_given_database_too() {
    let db = cluster().create_database().expect("database");
    let dir = tempfile::tempdir().expect("temp dir");
    let report = run(demo(dir.path().join("demo.html"), Some(db.url.clone())))
        .await
        .expect("the demo runs");
    let played: Vec<FaultKind> = report.faults.iter().map(|f| f.kind).collect();
    assert_eq!(
        played,
        [FaultKind::Kill],
        "the restart is left out: not the demo's database"
    );
    assert!(report.passed, "{}", report.render_text());
}
