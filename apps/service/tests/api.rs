//! The assembly service against a real PostgreSQL: the API through `app(state)`, an assembly
//! end to end, bad input, the database away, shutdown with assemblies running.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use holdfast::pool::settings::table;
use holdfast::pool::{ConnectConfig, PoolConfig};
use holdfast::tasks::settings as task_settings;
use holdfast::tasks::{Queue, TaskState};
use holdfast::Pool;
use holdfast_service::service::api::{app, AppState};
use holdfast_service::service::api_error::ApiError;
use holdfast_service::service::config::{self, ServeArgs};
use holdfast_service::service::serve::Service;
use holdfast_testkit::cluster;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const BOUND: Duration = Duration::from_secs(60);

fn args(url: &str, step_ms: u64) -> ServeArgs {
    ServeArgs::for_database(url)
        .set(&config::LISTEN, "127.0.0.1:0")
        .set(&table::POOL_SIZE, 3)
        .set(&table::MAX_OVERFLOW, 2)
        .set(&table::STATEMENT_TIMEOUT, 30_000)
        .set(&config::ASSEMBLY_STEP, step_ms)
        .set(&task_settings::LEASE, 3000)
        .set(&task_settings::SHUTDOWN_GRACE, 100)
}

async fn service(step_ms: u64) -> Service {
    let db = cluster().create_database().expect("database");
    Service::start(&args(&db.url, step_ms))
        .await
        .expect("service starts")
}

fn router(service: &Service) -> axum::Router {
    app(AppState {
        reads: service.api_pool().clone(),
        pool: service.api_pool().clone(),
        queue: service.queue().clone(),
        metrics: holdfast_service::service::serve::prometheus(),
        request_timeout: Duration::from_secs(10),
    })
}

async fn text(router: &axum::Router, path: &str) -> (StatusCode, String) {
    let request = Request::builder().uri(path).body(Body::empty()).expect("request");
    let response = router.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn call(router: &axum::Router, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn episode(segments: usize) -> String {
    json!({
        "title": "Pilot",
        "segments": (0..segments).map(|i| json!({"text": format!("line {i}"), "duration_ms": 1000})).collect::<Vec<_>>()
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_is_created_assembled_and_read_back() {
    let service = service(5).await;
    let api = router(&service);
    let (status, body) = call(&api, "POST", "/api/episodes", &episode(60)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_i64().expect("id");
    let (status, body) = call(&api, "POST", &format!("/api/episodes/{id}/assemble"), "").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let task = body["task_id"].as_i64().expect("task id");

    let deadline = tokio::time::Instant::now() + BOUND;
    let done = loop {
        let (status, body) = call(&api, "GET", &format!("/api/episodes/{id}"), "").await;
        assert_eq!(status, StatusCode::OK);
        if body["status"] == "assembled" {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "not assembled: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done["progress"], 100.0);
    assert_eq!(done["segments"], 60);
    assert_eq!(
        done["transcript_lines"], 60,
        "every segment's line, written in batches, once"
    );
    assert_eq!(done["output_path"], format!("episodes/{id}/assembled-{task}.mp3"));
    let (status, body) = call(&api, "GET", &format!("/api/tasks/{task}"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "succeeded");
    // Assembling again is allowed once the first is done.
    let (status, _) = call(&api, "POST", &format!("/api/episodes/{id}/assemble"), "").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Prometheus text with the pools, the tasks and the HTTP requests.
    let (status, metrics) = text(&api, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for name in [
        "holdfast_pool_acquired_total",
        "holdfast_tasks_succeeded_total",
        "holdfast_http_requests_total",
        "holdfast_http_request_duration_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    assert!(metrics.contains("status=\"202\""), "status codes are labelled");
    let (status, body) = text(&api, "/readyz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready"));
    service.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_with_a_json_error_and_never_a_500() {
    let service = service(60_000).await;
    let api = router(&service);
    let (_, body) = call(&api, "POST", "/api/episodes", &episode(2)).await;
    let id = body["id"].as_i64().expect("id");
    let long = "x".repeat(201);
    let cases: Vec<(&str, String, String, StatusCode)> = vec![
        (
            "POST",
            "/api/episodes".into(),
            "{not json".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/episodes".into(),
            r#"{"title": "x"}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/episodes".into(),
            r#"{"title": "x", "segments": [], "extra": 1}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/episodes".into(),
            r#"{"title": "", "segments": [{"text": "a", "duration_ms": 5}]}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/episodes".into(),
            format!(r#"{{"title": "{long}", "segments": [{{"text": "a", "duration_ms": 5}}]}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/episodes".into(),
            r#"{"title": "x", "segments": []}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/episodes".into(),
            r#"{"title": "x", "segments": [{"text": "a", "duration_ms": 0}]}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/episodes".into(),
            r#"{"title": "x", "segments": [{"text": "a", "duration_ms": "long"}]}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/episodes".into(),
            r#"{"title": "x", "segments": [{"text": " ", "duration_ms": 5}]}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/episodes/abc".into(),
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/episodes/0".into(),
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/episodes/99999999999999999999".into(),
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/episodes/424242".into(),
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/episodes/424242/assemble".into(),
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/api/tasks/424242".into(),
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/api/tasks/x".into(),
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            format!("/api/ai/intent-hints?q={long}"),
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/api/nope".into(), String::new(), StatusCode::NOT_FOUND),
        (
            "POST",
            format!("/api/episodes/{id}/assemble"),
            String::new(),
            StatusCode::ACCEPTED,
        ),
        (
            "POST",
            format!("/api/episodes/{id}/assemble"),
            String::new(),
            StatusCode::CONFLICT,
        ),
    ];
    for (method, path, body, expected) in cases {
        let (status, answer) = call(&api, method, &path, &body).await;
        assert_eq!(status, expected, "{method} {path} {body}: {answer}");
        if status != StatusCode::ACCEPTED {
            assert!(
                answer["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{method} {path}: a JSON error body: {answer}"
            );
        }
    }
    let (status, body) = call(&api, "GET", "/api/ai/intent-hints?q=music", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["hints"][0]["intent"], "score");
    service.stop().await.expect("stop");
}

#[tokio::test]
async fn an_unreachable_database_is_a_503_naming_the_cause_with_retry_after() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
    // The request waits for the database within its budget (the pool's own timeout is far
    // longer), then is told why: the cause, not just "timed out".
    let pool = Pool::new(
        PoolConfig::new(ConnectConfig::from_url(&url).expect("url")).pool_timeout(Duration::from_secs(600)),
    )
    .expect("pool");
    let api = app(AppState {
        reads: pool.clone(),
        pool,
        queue: Queue::new("holdfast").expect("queue"),
        metrics: None,
        request_timeout: Duration::from_secs(1),
    });
    let request = Request::builder()
        .uri("/api/episodes/1")
        .body(Body::empty())
        .expect("request");
    let response = tokio::time::timeout(BOUND, api.clone().oneshot(request))
        .await
        .expect("answered at the end of the request's budget")
        .expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body = response.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("database unavailable") && text.contains("refused"),
        "the cause is named: {text}"
    );
    let (status, body) = call(&api, "GET", "/readyz", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, _) = call(&api, "GET", "/healthz", "").await;
    assert_eq!(status, StatusCode::OK, "alive even when the database is not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_running_assemblies_for_another_instance() {
    let db = cluster().create_database().expect("database");
    // A minute per segment: the assembly is certainly running when the service stops.
    let first = Service::start(&args(&db.url, 60_000))
        .await
        .expect("first instance");
    let api = router(&first);
    let (_, body) = call(&api, "POST", "/api/episodes", &episode(3)).await;
    let id = body["id"].as_i64().expect("id");
    let (_, body) = call(&api, "POST", &format!("/api/episodes/{id}/assemble"), "").await;
    let task = body["task_id"].as_i64().expect("task");
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let (_, body) = call(&api, "GET", &format!("/api/tasks/{task}"), "").await;
        if body["state"] == "running" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never started: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.stop().await.expect("stop");

    let pool = Pool::new(PoolConfig::from_url(&db.url).expect("url")).expect("pool");
    let conn = pool.get().await.expect("get");
    let t = Queue::new("holdfast")
        .expect("queue")
        .get(&conn, task)
        .await
        .expect("get")
        .expect("task");
    assert_eq!(
        (t.state, t.attempt, t.lease_owner),
        (TaskState::Available, 0, None),
        "released, not counted"
    );

    // Another instance picks it up and finishes it.
    let second = Service::start(&args(&db.url, 1)).await.expect("second instance");
    let api = router(&second);
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let (_, body) = call(&api, "GET", &format!("/api/episodes/{id}"), "").await;
        if body["status"] == "assembled" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not finished by the second instance: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_database_never_answers_is_cut_off_by_the_request_timeout() {
    let db = cluster().create_database().expect("database");
    let target = holdfast_service::harness::db_target::Target::parse(&db.url).expect("url");
    let proxy = holdfast_faults::FaultProxy::start_local(target.resolve().await.expect("address"))
        .await
        .expect("proxy");
    let url = target.through(proxy.port());
    let service = Service::start(&args(&url, 10)).await.expect("service starts");
    let api = app(AppState {
        reads: service.api_pool().clone(),
        pool: service.api_pool().clone(),
        queue: service.queue().clone(),
        metrics: None,
        request_timeout: Duration::from_millis(300),
    });
    let (status, _) = text(&api, "/api/ai/intent-hints?q=mu").await;
    assert_eq!(status, StatusCode::OK);
    // The server stays connected but nothing reaches it any more: a hung network or server.
    proxy
        .update(|f| {
            f.upstream.blackhole = true;
            f.downstream.blackhole = true;
        })
        .expect("blackhole");
    let (status, body) = tokio::time::timeout(BOUND, text(&api, "/api/ai/intent-hints?q=mu"))
        .await
        .expect("answered, not hung");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("API_REQUEST_TIMEOUT_MS"), "{body}");
    proxy.clear();
    // The hung connection was dropped, not handed out again: the next request is served.
    let (status, body) = tokio::time::timeout(BOUND, text(&api, "/api/ai/intent-hints?q=mu"))
        .await
        .expect("answered");
    assert_eq!(status, StatusCode::OK, "{body}");
    service.stop().await.expect("stops");
}

#[tokio::test]
async fn a_statement_the_pool_ran_is_classified_like_any_database_error() {
    // `pool.query` reports a statement's failure as PoolError::Database: a server that went
    // away mid-statement is a 503 (try again), a bad statement a 500, as from a connection.
    let db = cluster().create_database().expect("database");
    let pool = Pool::new(PoolConfig::new(ConnectConfig::from_url(&db.url).expect("url"))).expect("pool");
    let terminated = pool
        .query("SELECT pg_terminate_backend(pg_backend_pid())", &[])
        .await
        .expect_err("the backend ends itself");
    let api_error: ApiError = terminated.into();
    assert!(matches!(api_error, ApiError::Unavailable(_)), "{api_error:?}");
    assert!(api_error.to_string().contains("SQLSTATE 57P01"), "{api_error}");
    let division = pool
        .query("SELECT 1 / 0", &[])
        .await
        .expect_err("division by zero");
    let api_error: ApiError = division.into();
    assert!(matches!(api_error, ApiError::Internal(_)), "{api_error:?}");
    assert!(api_error.to_string().contains("SQLSTATE 22012"), "{api_error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shorter_than_a_requests_budget_costs_it_only_time() {
    use holdfast_tempdb::{ClusterOptions, TempCluster};
    let own = TempCluster::start(ClusterOptions::default()).expect("own cluster");
    let db = own.create_database().expect("database");
    // The schema, an episode and its task, made by the service itself.
    let service = Service::start(&args(&db.url, 1)).await.expect("service");
    let api = router(&service);
    let (_, body) = call(&api, "POST", "/api/episodes", &episode(2)).await;
    let id = body["id"].as_i64().expect("id");
    let (_, body) = call(&api, "POST", &format!("/api/episodes/{id}/assemble"), "").await;
    let task = body["task_id"].as_i64().expect("task");
    service.stop().await.expect("stop");

    // An API whose pool gives up waiting after 1 ms (far shorter than any restart); the
    // request's own budget is 30 s. Its reads, its task read and its transaction all wait
    // within the request's budget.
    let pool = Pool::new(
        PoolConfig::new(ConnectConfig::from_url(&db.url).expect("url"))
            .pool_timeout(Duration::from_millis(1)),
    )
    .expect("pool");
    let api = app(AppState {
        reads: pool.clone(),
        pool: pool.clone(),
        queue: Queue::new("holdfast").expect("queue"),
        metrics: None,
        request_timeout: Duration::from_secs(30),
    });
    tokio::task::block_in_place(|| own.stop()).expect("stop the database");
    let requests = vec![
        ("GET", format!("/api/episodes/{id}"), String::new()),
        ("GET", format!("/api/tasks/{task}"), String::new()),
        ("GET", "/api/ai/intent-hints?q=a".to_string(), String::new()),
        ("POST", "/api/episodes".to_string(), episode(1)),
    ];
    let n = requests.len();
    let answers: Vec<_> = requests
        .into_iter()
        .map(|(method, path, body)| {
            let api = api.clone();
            tokio::spawn(async move { (path.clone(), call(&api, method, &path, &body).await) })
        })
        .collect();
    holdfast_testkit::eventually("every request waits for the database", || async {
        pool.status().waiting >= n
    })
    .await;
    tokio::task::block_in_place(|| own.start_again()).expect("start the database again");
    for answer in answers {
        let (path, (status, body)) = answer.await.expect("request task");
        assert!(status.is_success(), "{path}: {status} {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_standby_and_to_the_primary_when_it_is_gone() {
    use holdfast_tempdb::{ClusterOptions, Replication, TempCluster};
    let primary = TempCluster::start(ClusterOptions::default()).expect("primary");
    let standby = primary.start_standby(Replication::Synchronous).expect("standby");
    let replica_url = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres",
        standby.port(),
        primary.port()
    );
    let service = Service::start(&args(&primary.url(), 1).set(&config::DATABASE_REPLICA_URL, replica_url))
        .await
        .expect("service");
    let api = service.router();
    let (_, body) = call(&api, "POST", "/api/episodes", &episode(2)).await;
    let id = body["id"].as_i64().expect("id");
    // A standby serves what it has replayed: wait for the episode to get there.
    holdfast_testkit::eventually_blocking("the standby has the episode", || {
        standby
            .psql(
                "postgres",
                &format!("SELECT count(*) FROM episodes WHERE id = {id}"),
            )
            .is_ok_and(|n| n == "1")
    });
    let (status, body) = call(&api, "GET", &format!("/api/episodes/{id}"), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let on_standby = standby
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'holdfast-replica'",
        )
        .expect("sessions");
    assert_ne!(on_standby, "0", "the read went to the standby");

    // The standby goes away: reads fall back to the primary, listed last.
    tokio::task::block_in_place(|| standby.stop()).expect("stop the standby");
    let (status, body) = call(&api, "GET", &format!("/api/episodes/{id}"), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    service.stop().await.expect("stop");
}
