//! The Grafana dashboard in `deploy/grafana/` queries only metrics the service exports: a
//! service runs an assembly against a real cluster, and every metric name in the
//! dashboard's queries must be in its `/metrics` (or, for the two counters registered at
//! their first event, in the code that registers them).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use holdfast::pool::settings::table;
use holdfast_service::service::config::{self, ServeArgs};
use holdfast_service::service::serve::Service;
use holdfast_testkit::{cluster, eventually};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const DASHBOARD: &str = include_str!("../../../deploy/grafana/holdfast-dashboard.json");

/// Counters made at their first increment (a transaction retried, a lost COMMIT reply
/// resolved), with the source that makes them.
const AT_FIRST_EVENT: &[(&str, &str)] = &[
    (
        "holdfast_tx_retries_total",
        include_str!("../../../crates/tx/src/run.rs"),
    ),
    (
        "holdfast_tx_commit_outcomes_resolved_total",
        include_str!("../../../crates/tx/src/tx.rs"),
    ),
];

async fn call(router: &axum::Router, method: &str, path: &str, body: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Every `holdfast_...` name in the dashboard's queries.
fn queried_metrics(dashboard: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("each target has a PromQL expr");
            let mut rest = expr;
            while let Some(at) = rest.find("holdfast_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    names
}

fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_dashboard_is_well_formed() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_i64().expect("an id")),
            "duplicate id: {panel}"
        );
        let pos = &panel["gridPos"];
        let right = pos["x"].as_i64().unwrap_or(99) + pos["w"].as_i64().unwrap_or(99);
        assert!(right <= 24, "panel {} is wider than the grid", panel["title"]);
        if panel["type"] == "timeseries" {
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        }
    }
    assert!(queried_metrics(&dashboard).len() > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_one_the_service_exports() {
    let db = cluster().create_database().expect("database");
    let args = ServeArgs::for_database(&db.url)
        .set(&config::LISTEN, "127.0.0.1:0")
        .set(&table::POOL_SIZE, 2)
        .set(&config::ASSEMBLY_STEP, 1);
    let service = Service::start(&args).await.expect("service starts");
    let router = service.router();
    let (status, created) = call(
        &router,
        "POST",
        "/api/episodes",
        r#"{"title":"t","segments":[{"text":"a","duration_ms":10}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = serde_json::from_str::<Value>(&created).expect("json")["id"].clone();
    let (status, started) = call(&router, "POST", &format!("/api/episodes/{id}/assemble"), "").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let task = serde_json::from_str::<Value>(&started).expect("json")["task_id"].clone();
    eventually("the assembly succeeds", || async {
        let (_, body) = call(&router, "GET", &format!("/api/tasks/{task}"), "").await;
        body.contains("\"succeeded\"")
    })
    .await;
    let (status, metrics) = call(&router, "GET", "/metrics", "").await;
    assert_eq!(status, StatusCode::OK);
    let exported = exported(&metrics);

    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut missing = Vec::new();
    for name in queried_metrics(&dashboard) {
        if exported.contains(&name) {
            continue;
        }
        match AT_FIRST_EVENT.iter().find(|(lazy, _)| *lazy == name) {
            Some((_, source)) => assert!(
                source.contains(&format!("\"{name}\"")),
                "{name} is no longer made"
            ),
            None => missing.push(name),
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the service does not export: {missing:?}"
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), service.stop()).await;
}
