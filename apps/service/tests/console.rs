//! The operator's console against a running service and a real cluster: in headless
//! Chromium (sign in, the pools and a failed task with its attempts on the page, retry with
//! and without the token, a screenshot kept as an artifact), and its access rules request
//! by request.

mod browser;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::FutureExt;
use holdfast::pool::settings::table;
use holdfast::tasks::{NewTask, TaskFailure, TaskId, TaskState};
use holdfast_service::harness::http_client::fetch;
use holdfast_service::service::config::{self, ServeArgs};
use holdfast_service::service::serve::Service;
use holdfast_testkit::{cluster, eventually, fast_worker, start_worker};
use http_body_util::BodyExt;
use tower::ServiceExt;

use browser::Browser;

const TOKEN: &str = "console-test-token-0123456789";
const ERROR: &str = "the mixer caught fire";

fn args(url: &str) -> ServeArgs {
    ServeArgs::for_database(url)
        .set(&config::LISTEN, "127.0.0.1:0")
        .set(&table::POOL_SIZE, 2)
        .set(&config::ADMIN_TOKEN, TOKEN)
}

/// A task of a kind no one but this function's worker runs, failed after two attempts.
async fn failed_task(service: &Service, url: &str) -> TaskId {
    let queue = service.queue().clone();
    let id = {
        let conn = service.api_pool().get().await.expect("connection");
        queue
            .enqueue(
                &conn,
                &NewTask::new("doomed", serde_json::json!({})).max_attempts(2),
            )
            .await
            .expect("enqueue")
            .expect("a new task")
    };
    let worker = start_worker(url, "doomed", &queue, fast_worker(1), "doomed", |_| {
        async { Err(TaskFailure::retry(ERROR)) }.boxed()
    });
    eventually("the task fails its two attempts", || {
        state_is(service, id, TaskState::Failed)
    })
    .await;
    worker.shutdown().await;
    id
}

/// A task of a kind only this function's worker runs, running until cancelled, its
/// progress at 42% "mixing". Returns it, the worker (to shut down) and its lease owner.
async fn running_task(service: &Service, url: &str) -> (TaskId, holdfast::tasks::WorkerHandle, String) {
    let queue = service.queue().clone();
    let id = {
        let conn = service.api_pool().get().await.expect("connection");
        queue
            .enqueue(&conn, &NewTask::new("endless", serde_json::json!({})))
            .await
            .expect("enqueue")
            .expect("a new task")
    };
    let worker = start_worker(url, "endless", &queue, fast_worker(1), "endless", |ctx| {
        async move {
            ctx.progress(42.0, "mixing");
            std::future::pending::<()>().await;
            Ok(())
        }
        .boxed()
    });
    let read = || async {
        let conn = service.api_pool().get().await.expect("connection");
        service
            .queue()
            .get(&conn, id)
            .await
            .expect("read")
            .expect("exists")
    };
    eventually("the task runs with its progress written", || async {
        let task = read().await;
        task.state == TaskState::Running && task.progress_percent.is_some()
    })
    .await;
    let owner = read().await.lease_owner.expect("a running task has an owner");
    (id, worker, owner)
}

async fn state(service: &Service, id: TaskId) -> TaskState {
    let conn = service.api_pool().get().await.expect("connection");
    let task = service.queue().get(&conn, id).await.expect("read task");
    task.expect("the task exists").state
}

async fn state_is(service: &Service, id: TaskId, want: TaskState) -> bool {
    state(service, id).await == want
}

/// Keeps a file next to the test binaries (`target/tmp/console/`) for a person to look at.
fn keep(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).expect("artifact directory");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write artifact");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_console_shows_pools_and_a_failed_task_and_retries_it_only_with_the_token() {
    let db = cluster().create_database().expect("database");
    let service = Service::start(&args(&db.url)).await.expect("service starts");
    let id = failed_task(&service, &db.url).await;
    let console = format!("http://{}/console", service.addr());
    let browser = Browser::start().await;

    // Without a session the page is the sign-in form; with the token, the console.
    browser.open(&console).await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#sign-in").await;
    let page = browser.page_with("Sign out").await;
    for pool in ["api", "assembly", "tasks"] {
        assert!(
            page.contains(&format!("id=\"pool-{pool}\"")),
            "pool {pool} is shown: {page}"
        );
    }
    assert!(page.contains("database reachable"), "{page}");
    assert!(
        page.contains(&format!("id=\"failed-{id}\"")),
        "the failed task is listed: {page}"
    );
    assert!(page.contains(ERROR), "with its error: {page}");
    assert!(
        page.contains("attempt 1: failed") && page.contains("attempt 2: failed"),
        "with its attempt history: {page}"
    );

    // A task starts running: the open page shows it by itself (it refreshes), with its
    // progress and owner.
    let (running, worker, owner) = running_task(&service, &db.url).await;
    let page = browser.page_with(&format!("id=\"running-{running}\"")).await;
    assert!(
        page.contains("42% mixing") && page.contains(&owner),
        "progress and owner: {page}"
    );
    let shot = keep("console.png", &browser.screenshot().await);
    keep("console.html", page.as_bytes());
    eprintln!("console screenshot: {}", shot.display());

    // The same button without the token (the cookie gone): refused, nothing changed.
    browser.delete_cookies().await;
    browser.click(&format!("#retry-{id}")).await;
    browser.page_with("Not signed in").await;
    assert_eq!(
        state(&service, id).await,
        TaskState::Failed,
        "a refused retry changes nothing"
    );

    // Signed in again, the button re-queues the task.
    browser.open(&console).await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#sign-in").await;
    browser.page_with("Sign out").await;
    browser.click(&format!("#retry-{id}")).await;
    browser.page_with(&format!("Task {id}: retry done.")).await;
    assert!(browser.url().await.contains("/console"), "back on the console");
    assert_eq!(
        state(&service, id).await,
        TaskState::Available,
        "re-queued in the database"
    );

    // Cancel stops the running task at its worker's next heartbeat.
    browser.page_with(&format!("id=\"cancel-{running}\"")).await;
    browser.click(&format!("#cancel-{running}")).await;
    browser.page_with(&format!("Task {running}: cancel done.")).await;
    eventually("the running task is cancelled", || {
        state_is(&service, running, TaskState::Cancelled)
    })
    .await;
    worker.shutdown().await;
    drop(browser);
    service.stop().await.expect("stops");
}

async fn post(
    router: &axum::Router,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, String) {
    let mut request = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_string());
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let text = cookie.unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_needs_the_token_and_a_browser_also_the_pages_form_field() {
    let db = cluster().create_database().expect("database");
    let service = Service::start(&args(&db.url)).await.expect("service starts");
    let router = service.router();
    let id = failed_task(&service, &db.url).await;
    let retry = format!("/console/tasks/{id}/retry");

    // No token at all, a wrong bearer token, a made-up cookie: 401, nothing changed.
    for headers in [
        vec![],
        vec![("authorization", "Bearer not-the-token-at-all")],
        vec![("cookie", "holdfast_console=0123abcd")],
    ] {
        let (status, body) = post(&router, &retry, &headers, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}: {body}");
        assert!(body.contains("Nothing was changed"), "{body}");
    }
    assert_eq!(state(&service, id).await, TaskState::Failed);

    // A wrong token at the sign-in form: 401 and no cookie.
    let (status, body) = post(
        &router,
        "/console/login",
        &[],
        "token=wrong-token-but-long-enough",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.contains("holdfast_console="), "{body}");

    // The right one: a session cookie that never holds the token.
    let (status, set_cookie) = post(&router, "/console/login", &[], &format!("token={TOKEN}")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains(TOKEN), "{set_cookie}");
    let cookie = set_cookie.split(';').next().expect("name=value").to_string();

    // The cookie without the page's form field, or from another site: refused (403).
    let (status, _) = post(&router, &retry, &[("cookie", &cookie)], "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let page = fetch_page(&router, &cookie).await;
    let field = form_field(&page);
    let cross = [("cookie", cookie.as_str()), ("sec-fetch-site", "cross-site")];
    let (status, _) = post(&router, &retry, &cross, &format!("form={field}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        state(&service, id).await,
        TaskState::Failed,
        "refusals change nothing"
    );

    // Cookie and form field from the same site: done.
    let same = [("cookie", cookie.as_str()), ("sec-fetch-site", "same-origin")];
    let (status, _) = post(&router, &retry, &same, &format!("form={field}")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(state(&service, id).await, TaskState::Available);

    // A script with the bearer token needs no form field: it cancels the task.
    let bearer = format!("Bearer {TOKEN}");
    let cancel = format!("/console/tasks/{id}/cancel");
    let (status, _) = post(&router, &cancel, &[("authorization", &bearer)], "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(state(&service, id).await, TaskState::Cancelled);
    service.stop().await.expect("stops");
}

async fn fetch_page(router: &axum::Router, cookie: &str) -> String {
    let request = Request::builder()
        .uri("/console")
        .header("cookie", cookie)
        .body(Body::empty())
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn form_field(page: &str) -> String {
    let marker = "name=\"form\" value=\"";
    let start = page.find(marker).expect("the page has forms") + marker.len();
    page[start..].split('"').next().expect("a value").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_the_console_says_so_with_the_cause_and_still_shows_the_pools() {
    let own =
        holdfast_tempdb::TempCluster::start(holdfast_tempdb::ClusterOptions::default()).expect("own cluster");
    let service = Service::start(&args(&own.url())).await.expect("service starts");
    let router = service.router();
    let (status, set_cookie) = post(&router, "/console/login", &[], &format!("token={TOKEN}")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = set_cookie.split(';').next().expect("name=value").to_string();
    own.stop().expect("stop the server");
    // The page's own reads fail over the dead server, and the pool learns it is down.
    eventually("the console reports the database down", || async {
        fetch_page(&router, &cookie).await.contains("database down")
    })
    .await;
    let page = fetch_page(&router, &cookie).await;
    assert!(
        page.contains("id=\"pool-api\""),
        "the pools are still shown: {page}"
    );
    assert!(
        page.contains("tasks-unavailable"),
        "the task sections say why they are missing: {page}"
    );
    assert!(
        page.contains("failed attempts"),
        "with the last connect error: {page}"
    );
    drop(router);
    let _ = tokio::time::timeout(Duration::from_secs(30), service.stop()).await;
}

#[tokio::test]
async fn without_admin_token_the_console_is_off_and_says_so() {
    let db = cluster().create_database().expect("database");
    let args = ServeArgs::for_database(&db.url).set(&config::LISTEN, "127.0.0.1:0");
    let service = Service::start(&args).await.expect("service starts");
    let reply = fetch(service.addr(), "GET", "/console", None, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(reply.status, 404);
    assert!(reply.text.contains("ADMIN_TOKEN"), "{}", reply.text);
    let reply = fetch(
        service.addr(),
        "POST",
        "/console/tasks/1/retry",
        None,
        Duration::from_secs(10),
    )
    .await
    .expect("an answer");
    assert_eq!(reply.status, 404);
    service.stop().await.expect("stops");
}

#[tokio::test]
async fn a_short_admin_token_stops_the_start_naming_the_setting_and_not_the_value() {
    let db = cluster().create_database().expect("database");
    let args = args(&db.url).set(&config::ADMIN_TOKEN, "hunter2");
    let error = match Service::start(&args).await {
        Ok(_) => panic!("a 7-character token is refused"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("ADMIN_TOKEN") && error.contains("16"), "{error}");
    assert!(!error.contains("hunter2"), "the token is not repeated: {error}");
}
