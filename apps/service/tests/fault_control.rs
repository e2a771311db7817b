//! The fault proxy's control API, in process and through the real `holdfast faults` binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use holdfast_faults::FaultProxy;
use holdfast_testkit::cluster;
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn call(router: axum::Router, method: &str, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = router.oneshot(request).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn control_api_sets_reads_and_clears_faults() {
    let upstream = SocketAddr::from(([127, 0, 0, 1], cluster().port()));
    let proxy = Arc::new(FaultProxy::start_local(upstream).await.expect("proxy"));
    let router = holdfast_service::harness::fault_control::router(Arc::clone(&proxy));

    let (status, body) = call(
        router.clone(),
        "PUT",
        "/faults",
        r#"{"refuse": true, "upstream": {"latency": {"base_ms": 3}}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["refuse"], true);
    assert!(proxy.faults().refuse, "applied to the proxy");
    let (_, body) = call(router.clone(), "GET", "/faults", "").await;
    assert_eq!(body["upstream"]["latency"]["base_ms"], 3);
    let (status, body) = call(router.clone(), "DELETE", "/faults", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["refuse"], false);
    let (_, body) = call(router.clone(), "GET", "/counters", "").await;
    assert_eq!(body["connections_opened"], 0);
    let (_, body) = call(router.clone(), "POST", "/reset", "").await;
    assert_eq!(body["reset"], 0);
    let (_, body) = call(router.clone(), "GET", "/connections", "").await;
    assert_eq!(body, serde_json::json!([]));
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors() {
    let upstream = SocketAddr::from(([127, 0, 0, 1], cluster().port()));
    let proxy = Arc::new(FaultProxy::start_local(upstream).await.expect("proxy"));
    let router = holdfast_service::harness::fault_control::router(Arc::clone(&proxy));
    let (status, body) = call(router.clone(), "PUT", "/faults", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    let (status, body) = call(router.clone(), "PUT", "/faults", r#"{"latnecy": 5}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("latnecy")),
        "names the unknown field: {body}"
    );
    let (status, body) = call(
        router.clone(),
        "PUT",
        "/faults",
        r#"{"downstream": {"bandwidth_bytes_per_sec": 0}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("downstream.bandwidth_bytes_per_sec")),
        "{body}"
    );
    let (status, body) = call(router, "GET", "/nope", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().is_some(), "{body}");
    assert_eq!(proxy.faults(), holdfast_faults::Faults::none(), "nothing changed");
}

/// A raw HTTP/1.1 request; returns the status code and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("control port");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_relays_and_obeys_its_control_port() {
    let upstream = format!("127.0.0.1:{}", cluster().port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args([
            "faults",
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run holdfast faults");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"listening"), "{line}");
    let (listen, control) = (words[1].to_string(), words[3].to_string());

    let url = format!("postgres://postgres@{listen}/postgres");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("through the proxy");
    tokio::spawn(connection);
    let n: i32 = client.query_one("SELECT 3", &[]).await.expect("query").get(0);
    assert_eq!(n, 3);

    let (status, body) = tokio::task::spawn_blocking(move || http(&control, "POST", "/reset", ""))
        .await
        .expect("http");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"reset\":1"), "{body}");
    assert!(
        client.query_one("SELECT 1", &[]).await.is_err(),
        "the reset reached the client"
    );
    child.kill().expect("stop");
    child.wait().expect("reap");
}

#[test]
fn non_loopback_addresses_are_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["faults", "--listen", "0.0.0.0:0", "--upstream", "127.0.0.1:5432"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--listen") && stderr.contains("loopback"),
        "{stderr}"
    );
}
