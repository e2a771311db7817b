//! The HTTP API (JSON): episodes, assemblies, tasks, intent hints, health, readiness and
//! metrics.
//!
//! | method and path | does |
//! |---|---|
//! | `POST /api/episodes` | create an episode with its segments (201 `{"id"}`) |
//! | `GET /api/episodes/{id}` | the episode: status, progress, output path |
//! | `POST /api/episodes/{id}/assemble` | start an assembly (202 `{"task_id"}`; 409 if one runs) |
//! | `GET /api/tasks/{id}` | a task: state, attempt, progress, last error |
//! | `GET /api/ai/intent-hints?q=` | a light read, like the incident's |
//! | `GET /healthz` | the process is alive |
//! | `GET /readyz` | the database answers (quickly, or 503) |
//! | `GET /metrics` | Prometheus text: pools, tasks, HTTP latency and status codes |
//! | `/console` | the operator's console, with `ADMIN_TOKEN` (see [`console`]) |
//!
//! Every request has one budget, `API_REQUEST_TIMEOUT_MS`, for all its waits and retries
//! (see `budget`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use holdfast::tasks::Queue;
use holdfast::Pool;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use crate::service::api_error::ApiError;
use crate::service::budget;
use crate::service::console::{self, Console};
use crate::service::domain::{self, NewEpisode};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The API's own pool (its connection budget).
    pub pool: Pool,
    /// The pool reads go through: the replica pool (`DATABASE_REPLICA_URL`), or `pool`.
    pub reads: Pool,
    /// The task queue (enqueue happens through the API pool, in the caller's transaction).
    pub queue: Queue,
    /// Renders `/metrics`.
    pub metrics: Option<Arc<PrometheusHandle>>,
    /// How long a request may take before it is answered 503 and its work dropped (its
    /// connection goes back through the pool's reset, or is closed).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("pool", &self.pool)
            .field("reads", &self.reads)
            .field("queue", &self.queue)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// The router, without the console.
pub fn app(state: AppState) -> Router {
    app_with_console(state, None)
}

/// The router, with the console at `/console` when there is one (when there is not, its
/// paths say that it is off).
pub fn app_with_console(state: AppState, console: Option<Console>) -> Router {
    Router::new()
        .route("/api/episodes", post(create_episode))
        .route("/api/episodes/{id}", get(get_episode))
        .route("/api/episodes/{id}/assemble", post(assemble))
        .route("/api/tasks/{id}", get(get_task))
        .route("/api/ai/intent-hints", get(intent_hints))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .merge(console::routes(console))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn create_episode(
    State(s): State<AppState>,
    body: Result<Json<NewEpisode>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(episode) = body.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let id = domain::create_episode(&s.pool, episode).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

async fn get_episode(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = domain::parse_id("episode", &id)?;
    Ok(Json(domain::get_episode(&s.reads, id).await?).into_response())
}

async fn assemble(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = domain::parse_id("episode", &id)?;
    let task = domain::start_assembly(&s.pool, &s.queue, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "task_id": task }))).into_response())
}

async fn get_task(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = domain::parse_id("task", &id)?;
    let task = domain::get_task(&s.pool, &s.queue, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("task {id} does not exist")))?;
    Ok(Json(json!({
        "id": task.id,
        "kind": task.kind,
        "state": task.state.as_str(),
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
        "progress_percent": task.progress_percent,
        "progress_message": task.progress_message,
        "last_error": task.last_error,
    }))
    .into_response())
}

/// `GET /api/ai/intent-hints?q=...`
#[derive(Debug, Deserialize)]
struct HintQuery {
    #[serde(default)]
    q: String,
}

async fn intent_hints(
    State(s): State<AppState>,
    query: Result<Query<HintQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let hints = domain::intent_hints(&s.reads, &query.q).await?;
    let hints: Vec<_> = hints
        .into_iter()
        .map(|(phrase, intent)| json!({ "phrase": phrase, "intent": intent }))
        .collect();
    Ok(Json(json!({ "hints": hints })).into_response())
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers a trivial query within half a second.
async fn readyz(State(s): State<AppState>) -> Result<&'static str, ApiError> {
    let check = async {
        let conn = s
            .pool
            .get_timeout(budget::left_or(Duration::from_millis(500)))
            .await?;
        conn.batch_execute("").await?;
        Ok::<_, ApiError>(())
    };
    match tokio::time::timeout(Duration::from_millis(500), check).await {
        Ok(result) => result.map(|()| "ready"),
        Err(_) => Err(ApiError::Unavailable(
            "database did not answer within 500 ms".into(),
        )),
    }
}

async fn render_metrics(State(s): State<AppState>) -> Response {
    match &s.metrics {
        Some(handle) => handle.render().into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// Bounds every request by the request timeout, counts it by route and status, and times it.
async fn track(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let span = request_span(&request, &method, &route);
    let started = Instant::now();
    let hard = s.request_timeout;
    let work = budget::within(budget::for_work(hard), next.run(request)).instrument(span.clone());
    let response = match tokio::time::timeout(hard, work).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable(format!(
            "the request did not finish within {} ms (API_REQUEST_TIMEOUT_MS)",
            s.request_timeout.as_millis()
        ))
        .into_response(),
    };
    let status = response.status().as_u16().to_string();
    if !span.is_disabled() {
        span.record("http.response.status_code", response.status().as_u16());
        if response.status().is_server_error() {
            span.record("error.type", status.as_str());
            span.record("otel.status_code", "ERROR");
        }
    }
    metrics::histogram!("holdfast_http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("holdfast_http_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

/// The request's span (when traces are exported): a server span named `METHOD route`,
/// continuing the caller's trace when the request carries a `traceparent`.
fn request_span(request: &Request, method: &str, route: &str) -> tracing::Span {
    let span = tracing::debug_span!(
        target: "holdfast_service::http",
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let fields: std::collections::HashMap<String, String> = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|name| {
                let value = request.headers().get(name)?.to_str().ok()?;
                Some((name.to_string(), value.to_string()))
            })
            .collect();
        if !fields.is_empty() {
            crate::telemetry::adopt_fields(&span, &fields);
        }
    }
    span
}
