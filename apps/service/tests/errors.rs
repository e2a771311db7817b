//! What a person reads when the database refuses: the service's start-up error, an API error's
//! log line and a 503's body all name the server's message and SQLSTATE, never a bare
//! "db error" (tokio-postgres's Display of every server error).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use holdfast::pool::settings::table;
use holdfast_service::service::api::{app, AppState};
use holdfast_service::service::config::{self, ServeArgs};
use holdfast_service::service::serve::Service;
use holdfast_testkit::cluster;
use holdfast_testkit::{capture_logs_everywhere, connect_to};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn args(url: &str) -> ServeArgs {
    ServeArgs::for_database(url)
        .set(&config::LISTEN, "127.0.0.1:0")
        .set(&table::POOL_SIZE, 2)
}

/// Makes every new session of `db` read-only, and ends the ones it has.
async fn make_read_only(url: &str, db: &str) {
    let admin = connect_to(url).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" SET default_transaction_read_only = on"
        ))
        .await
        .expect("alter database");
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .expect("terminate");
}

fn names_the_cause(text: &str, sqlstate: &str) {
    assert!(
        text.contains(&format!("SQLSTATE {sqlstate}")),
        "does not name SQLSTATE {sqlstate}: {text}"
    );
    assert!(!text.contains("db error"), "reads \"db error\": {text}");
}

#[tokio::test]
async fn a_service_started_on_a_read_only_database_says_why_it_cannot_start() {
    let db = cluster().create_database().expect("database");
    make_read_only(&db.url, &db.name).await;
    let error = match Service::start(&args(&db.url)).await {
        Ok(_) => panic!("a read-only database cannot take the service's schema"),
        Err(e) => e.to_string(),
    };
    names_the_cause(&error, "25006");
    assert!(error.contains("read-only"), "{error}");
}

async fn post_episode(router: &axum::Router) -> (StatusCode, String) {
    let request = Request::builder()
        .method("POST")
        .uri("/api/episodes")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"title":"t","segments":[{"text":"a","duration_ms":10}]}"#,
        ))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_and_a_failed_requests_log_line_name_the_servers_message_and_sqlstate() {
    let logs = capture_logs_everywhere();
    let db = cluster().create_database().expect("database");
    let service = Service::start(&args(&db.url)).await.expect("service starts");
    let router = app(AppState {
        reads: service.api_pool().clone(),
        pool: service.api_pool().clone(),
        queue: service.queue().clone(),
        metrics: None,
        request_timeout: Duration::from_secs(30),
    });

    // A write the server refuses as a bug of ours would be (its table is gone): a 500 whose
    // log line carries the cause.
    let admin = connect_to(&db.url).await;
    admin
        .batch_execute("ALTER TABLE segments RENAME TO segments_elsewhere")
        .await
        .expect("rename");
    let (status, body) = post_episode(&router).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let text = logs.text();
    let failures: Vec<&str> = text.lines().filter(|l| l.contains("request failed")).collect();
    assert!(!failures.is_empty(), "the failure is logged: {text}");
    for line in failures {
        names_the_cause(line, "42P01");
    }
    admin
        .batch_execute("ALTER TABLE segments_elsewhere RENAME TO segments")
        .await
        .expect("rename back");

    // A database that turned read-only (a standby after a switchover, as the service sees
    // it): a 503 whose body names the cause; or the termination that preceded it.
    make_read_only(&db.url, &db.name).await;
    let (status, body) = post_episode(&router).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    if !body.contains("57P01") {
        names_the_cause(&body, "25006");
    }
    assert!(!body.contains("db error"), "{body}");
    let text = logs.text();
    assert!(
        !text.contains("db error"),
        "a log line reads \"db error\": {text}"
    );
    service.stop().await.expect("stops");
}
