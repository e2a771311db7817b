//! `holdfast faults`: the fault proxy with an HTTP+JSON control port on loopback.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /faults` | the faults in force |
//! | `PUT /faults` | replace them (a `Faults` JSON object; omitted fields pass through) |
//! | `DELETE /faults` | pass everything through again |
//! | `POST /reset` | reset (RST) every open connection |
//! | `POST /close` | close (FIN) every open connection |
//! | `GET /connections` | the open connections |
//! | `GET /counters` | connections opened, closed, refused; bytes; faults fired |
//!
//! Errors are `{"error": "..."}` with status 400 (bad JSON, a bad value) or 404.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::ServiceError;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use holdfast_faults::{FaultProxy, Faults, ProxyHandle};
use serde_json::json;

/// Options of `holdfast faults`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where clients connect (loopback only; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:6432")]
    pub listen: SocketAddr,
    /// The PostgreSQL server to relay to.
    #[arg(long)]
    pub upstream: SocketAddr,
    /// The HTTP control port (loopback only).
    #[arg(long, default_value = "127.0.0.1:6433")]
    pub control: SocketAddr,
}

/// Runs the proxy and its control API until `shutdown` completes.
pub async fn run(
    args: Args,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    for (what, addr) in [("--listen", args.listen), ("--control", args.control)] {
        if !addr.ip().is_loopback() {
            return Err(ServiceError::Config(holdfast::pool::ConfigError::InvalidValue {
                setting: what.to_string(),
                value: addr.to_string(),
                accepted: "a loopback address: the proxy only listens on loopback".into(),
            }));
        }
    }
    let proxy = FaultProxy::start(args.listen, args.upstream).await?;
    let control = tokio::net::TcpListener::bind(args.control)
        .await
        .map_err(ServiceError::io(format!(
            "--control: could not listen on {}",
            args.control
        )))?;
    let control_addr = control
        .local_addr()
        .map_err(ServiceError::io("--control: the socket has no address"))?;
    // Machine-readable for scripts and tests that asked for port 0.
    println!(
        "listening {} control {} upstream {}",
        proxy.addr(),
        control_addr,
        args.upstream
    );
    tracing::info!(listen = %proxy.addr(), control = %control_addr, upstream = %args.upstream, "fault proxy running");
    axum::serve(control, router(Arc::new(proxy)))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServiceError::io("serving the control API"))
}

/// The control API over a running proxy.
pub fn router(proxy: Arc<ProxyHandle>) -> Router {
    Router::new()
        .route("/faults", get(get_faults).put(put_faults).delete(clear_faults))
        .route("/reset", post(reset))
        .route("/close", post(close))
        .route("/connections", get(connections))
        .route("/counters", get(counters))
        .fallback(not_found)
        .with_state(proxy)
}

type Proxy = State<Arc<ProxyHandle>>;

async fn get_faults(State(proxy): Proxy) -> Json<Faults> {
    Json(proxy.faults())
}

async fn put_faults(State(proxy): Proxy, body: Result<Json<Faults>, JsonRejection>) -> Response {
    let faults = match body {
        Ok(Json(faults)) => faults,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    match proxy.set(faults) {
        Ok(()) => Json(proxy.faults()).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn clear_faults(State(proxy): Proxy) -> Json<Faults> {
    proxy.clear();
    Json(proxy.faults())
}

async fn reset(State(proxy): Proxy) -> Json<serde_json::Value> {
    Json(json!({ "reset": proxy.reset_all() }))
}

async fn close(State(proxy): Proxy) -> Json<serde_json::Value> {
    Json(json!({ "closed": proxy.close_all() }))
}

async fn connections(State(proxy): Proxy) -> Json<serde_json::Value> {
    Json(json!(proxy.connections()))
}

async fn counters(State(proxy): Proxy) -> Json<serde_json::Value> {
    Json(json!(proxy.counters()))
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; see GET/PUT/DELETE /faults, POST /reset, POST /close, GET /connections, GET /counters",
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
