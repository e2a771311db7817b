//! The demo as an integration test, in a shortened form: the same faults (every connection
//! reset mid-assembly, then a database restart), fewer and shorter assemblies.

use holdfast_service::demo::{run, DemoArgs, Fault};
use holdfast_testkit::cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incidents_smoke_test_passes_through_resets_and_a_restart() {
    let report = run(DemoArgs {
        assemblies: 4,
        segments: 12,
        step_ms: 60,
        api_clients: 2,
        faults: vec![Fault::Reset, Fault::Restart],
        timeout_s: 90,
        workers: 2,
        database_url: None,
    })
    .await
    .expect("the demo runs");
    print!("{}", report.render());
    assert_eq!(report.events.len(), 2, "both faults were played");
    assert_eq!((report.completed, report.failed, report.stuck), (4, 0, 0));
    assert_eq!(report.lost_or_doubled, 0);
    assert_eq!(report.task_mismatch, 0);
    assert_eq!(report.idle_in_transaction, 0);
    assert!(
        report.connections_killed > 0,
        "the reset reached live connections"
    );
    assert!(report.api_ok > 0);
    assert!(report.passed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_against_a_given_database_too() {
    let db = cluster().create_database().expect("database");
    let report = run(DemoArgs {
        assemblies: 2,
        segments: 6,
        step_ms: 30,
        api_clients: 1,
        faults: vec![Fault::Reset, Fault::Restart],
        timeout_s: 90,
        workers: 2,
        database_url: Some(db.url.clone()),
    })
    .await
    .expect("the demo runs");
    assert!(
        report.events[1].contains("restart skipped"),
        "{:?}",
        report.events
    );
    assert_eq!((report.completed, report.stuck), (2, 0));
    assert!(report.passed(), "{}", report.render());
}
