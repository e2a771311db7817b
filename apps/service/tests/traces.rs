//! Traces over OTLP from the real `holdfast serve` binary to an OTLP/HTTP receiver this test
//! runs on loopback: one API request that starts an assembly yields its server span, the
//! transaction with how it committed, the acquire with its wait, the statements (following
//! OpenTelemetry's database conventions) under the transaction, and the task's attempt in
//! the same trace with the assembly's own statements under it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use holdfast_service::harness::http_client::request;
use holdfast_testkit::{cluster, eventually};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

type Received = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP (protobuf) receiver on loopback, keeping every span it gets.
async fn receiver() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let keep = keep.clone();
            async move {
                let export = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                let spans = export
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans);
                keep.lock().expect("spans").extend(spans);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

/// `holdfast serve` exporting to `otlp`; returns it and where it listens.
fn serve(database_url: &str, otlp: SocketAddr) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("LISTEN", "127.0.0.1:0")
        .env("ASSEMBLY_STEP_MS", "1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_SERVICE_NAME", "holdfast-trace-test")
        .env("DB_TRACE_STATEMENT_TEXT", "on")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start holdfast serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("holdfast serve did not say where it listens: {line:?}"));
    (child, addr)
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Any::StringValue(s) => s.clone(),
        Any::IntValue(i) => i.to_string(),
        Any::DoubleValue(d) => d.to_string(),
        Any::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
        .collect()
}

/// Every span below `root`, at any depth.
fn descendants<'a>(spans: &'a [Span], root: &Span) -> Vec<&'a Span> {
    let mut found = children(spans, root);
    let mut i = 0;
    while i < found.len() {
        let next = children(spans, found[i]);
        found.extend(next);
        i += 1;
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_starts_an_assembly_is_one_trace_from_the_api_to_the_tasks_statements() {
    let db = cluster().create_database().expect("database");
    let (otlp, received) = receiver().await;
    let (mut child, addr) = serve(&db.url, otlp);
    let wait = Duration::from_secs(30);
    let created = request(
        addr,
        "POST",
        "/api/episodes",
        Some(&json!({"title": "t", "segments": [{"text": "a", "duration_ms": 10}]})),
        wait,
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let episode = created.body["id"].clone();
    let started = request(
        addr,
        "POST",
        &format!("/api/episodes/{episode}/assemble"),
        None,
        wait,
    )
    .await;
    assert_eq!(started.status, 202, "{:?}", started.body);
    let task = started.body["task_id"].clone();
    eventually("the assembly succeeds", || async {
        request(addr, "GET", &format!("/api/tasks/{task}"), None, wait)
            .await
            .body["state"]
            == "succeeded"
    })
    .await;
    // SIGTERM: the service stops and flushes its traces.
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "holdfast serve exited with {status}");

    let spans = received.lock().expect("spans").clone();
    let names: HashMap<&str, usize> = spans.iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.name.as_str()).or_default() += 1;
        m
    });
    let route = "POST /api/episodes/{id}/assemble";
    let server = spans
        .iter()
        .find(|s| s.name == route)
        .unwrap_or_else(|| panic!("no span named {route:?}; got {names:?}"));
    assert_eq!(attr(server, "http.response.status_code").as_deref(), Some("202"));
    let trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == server.trace_id).collect();

    // The transaction, under the request, committed once.
    let tx = children(&spans, server)
        .into_iter()
        .find(|s| s.name == "transaction")
        .unwrap_or_else(|| panic!("no transaction under the request; got {names:?}"));
    assert_eq!(attr(tx, "holdfast.tx.commit").as_deref(), Some("committed"));
    assert_eq!(attr(tx, "holdfast.tx.attempts").as_deref(), Some("1"));
    assert_eq!(attr(tx, "db.system.name").as_deref(), Some("postgresql"));

    // Its acquire, with the time waited, and its statements, named by their command, with
    // the database conventions' fields.
    let under_tx = children(&spans, tx);
    let acquire = under_tx
        .iter()
        .find(|s| s.name == "acquire")
        .unwrap_or_else(|| panic!("no acquire under the transaction: {under_tx:?}"));
    assert_eq!(
        attr(acquire, "db.client.connection.pool.name").as_deref(),
        Some("api")
    );
    assert!(attr(acquire, "db.client.connection.wait_time_ms").is_some());
    let commands: Vec<&str> = under_tx
        .iter()
        .filter(|s| attr(s, "db.operation.name").is_some())
        .map(|s| s.name.as_str())
        .collect();
    // The episode's row read FOR UPDATE, the enqueue (a WITH ... INSERT whose tag is
    // SELECT), the episode's update.
    for command in ["BEGIN", "SELECT", "UPDATE", "COMMIT"] {
        assert!(
            commands.contains(&command),
            "no {command} statement under the transaction: {commands:?}"
        );
    }
    assert_eq!(
        commands.iter().filter(|c| **c == "SELECT").count(),
        2,
        "{commands:?}"
    );
    let statement = under_tx
        .iter()
        .find(|s| s.name == "UPDATE")
        .expect("the episode's update");
    assert_eq!(attr(statement, "db.system.name").as_deref(), Some("postgresql"));
    assert_eq!(attr(statement, "db.namespace").as_deref(), Some(db.name.as_str()));
    assert_eq!(attr(statement, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr(statement, "server.port"), Some(cluster().port().to_string()));
    let text = attr(statement, "db.query.text").unwrap_or_default();
    assert!(
        text.starts_with("UPDATE episodes SET status = 'queued'"),
        "DB_TRACE_STATEMENT_TEXT=on: {text:?}"
    );

    // The task's attempt is in the same trace, and its statements under it.
    let attempt = trace
        .iter()
        .find(|s| s.name == "task assemble")
        .unwrap_or_else(|| panic!("the assembly's attempt is not in the request's trace; got {names:?}"));
    assert_eq!(
        attr(attempt, "holdfast.task.outcome").as_deref(),
        Some("succeeded")
    );
    assert_eq!(attr(attempt, "holdfast.task.id"), Some(task.to_string()));
    assert!(
        trace.iter().any(|s| s.span_id == attempt.parent_span_id),
        "the attempt's parent is a span of the request's trace"
    );
    let work: Vec<&str> = descendants(&spans, attempt)
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        work.contains(&"transaction") && work.contains(&"UPDATE"),
        "the assembly's transactions and statements are under its attempt: {work:?}"
    );
}

#[test]
fn an_otlp_protocol_other_than_http_protobuf_is_refused_at_start_up() {
    let output = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["serve", "--help"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .expect("run holdfast");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && stderr.contains("http/protobuf"),
        "{stderr}"
    );
}
