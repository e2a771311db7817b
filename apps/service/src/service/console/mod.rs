//! The operator's console, served by `holdfast serve` at `/console` when `ADMIN_TOKEN` is
//! set: each pool's counts over the last ten minutes, whether the database is reachable
//! (and the last connect error when it is not), disconnects, resets and lost-COMMIT
//! resolutions, tasks by state and by kind, running tasks with progress and owner, failed
//! tasks with their attempts, retry and cancel. Server-rendered HTML (templates in
//! `templates/`), refreshed by the page itself every few seconds, no JavaScript.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /console` | the page (the sign-in form without a session) |
//! | `POST /console/login` | signs in with the token (form field `token`) |
//! | `POST /console/logout` | signs out |
//! | `POST /console/tasks/{id}/retry` | runs a failed or cancelled task again |
//! | `POST /console/tasks/{id}/cancel` | cancels a waiting or running task |
//!
//! Access rules are in [`auth`]. Without `ADMIN_TOKEN` every `/console` path answers 404
//! saying the console is off.

pub mod auth;
pub mod chart;
pub mod events;
pub mod history;
pub mod view;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use holdfast::tasks::Queue;
use holdfast::Pool;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use self::auth::{Access, AdminToken, Keys};
use self::history::{History, Sampler};
use self::view::{ConsolePage, LoginPage, MessagePage};

/// How long the console waits for the database per page or action.
pub const DB_BUDGET: Duration = Duration::from_secs(2);

/// What the console reads and acts on.
#[derive(Clone)]
pub struct Console {
    keys: Keys,
    /// Every pool of the service, charted.
    pools: Vec<Pool>,
    /// The pool the console's own queries use (the API's).
    data: Pool,
    queue: Queue,
    history: Arc<Mutex<History>>,
    _sampler: Arc<Sampler>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("pools", &self.pools.len())
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console over `pools` (charted in this order) that reads and acts on `queue`
    /// through `data`; it starts sampling the pools now. Needs a Tokio runtime.
    pub fn new(
        token: &AdminToken,
        pools: Vec<Pool>,
        data: Pool,
        queue: Queue,
        metrics: Option<Arc<PrometheusHandle>>,
    ) -> Console {
        let history = Arc::new(Mutex::new(History::default()));
        let sampler = history::spawn_sampler(pools.clone(), metrics, history.clone());
        Console {
            keys: Keys::new(token),
            pools,
            data,
            queue,
            history,
            _sampler: Arc::new(sampler),
        }
    }
}

/// The console's routes, for the service's router (state `S` is the router's; the console
/// carries its own).
pub fn routes<S: Clone + Send + Sync + 'static>(console: Option<Console>) -> Router<S> {
    match console {
        Some(console) => Router::new()
            .route("/console", get(page))
            .route("/console/login", post(login))
            .route("/console/logout", post(logout))
            .route("/console/tasks/{id}/{action}", post(act))
            .with_state(console),
        None => Router::new()
            .route("/console", get(off))
            .route("/console/{*rest}", get(off).post(off)),
    }
}

async fn off() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "The console is off",
        "Set ADMIN_TOKEN (at least 16 characters) for holdfast serve to turn it on.",
    )
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let page = MessagePage {
        title: title.into(),
        text: text.into(),
    };
    (status, render(&page)).into_response()
}

fn render(page: &impl Template) -> Html<String> {
    Html(
        page.render()
            .unwrap_or_else(|e| format!("the page could not be rendered: {e}")),
    )
}

fn see_console(notice: Option<&str>) -> Response {
    let to = match notice {
        Some(n) => format!("/console?notice={}", encode(n)),
        None => "/console".into(),
    };
    (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
}

/// Percent-encodes a query value (the notices are plain ASCII sentences).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `?notice=` on the page.
#[derive(Debug, Deserialize)]
struct PageQuery {
    notice: Option<String>,
}

async fn page(
    State(console): State<Console>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    if console.keys.access(&headers).is_none() {
        return (StatusCode::UNAUTHORIZED, render(&LoginPage { problem: None })).into_response();
    }
    let notice = query.ok().and_then(|Query(q)| q.notice);
    render(&ConsolePage::gather(&console, notice).await).into_response()
}

/// The sign-in form.
#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(console): State<Console>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    if auth::cross_site(&headers) || !console.keys.is_token(&form.token) {
        tracing::warn!("console sign-in refused: wrong token or another site's form");
        let problem = Some("That is not the admin token.".to_string());
        return (StatusCode::UNAUTHORIZED, render(&LoginPage { problem })).into_response();
    }
    let mut response = see_console(None);
    if let Ok(cookie) = console.keys.session_cookie().parse() {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

/// An action's form: the anti-forgery field.
#[derive(Debug, Deserialize)]
struct ActionForm {
    #[serde(default)]
    form: String,
}

/// The form as sent; a missing or unreadable body is an empty form (which a cookie alone
/// does not pass), so that a request without the token is always answered 401.
fn action_form(form: Result<Form<ActionForm>, FormRejection>) -> ActionForm {
    form.map(|Form(f)| f)
        .unwrap_or(ActionForm { form: String::new() })
}

/// Why an action is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No token shown: 401.
    NoToken,
    /// The cookie without the page's form field, or from another site: 403.
    NotFromThePage,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::NoToken => message(
                StatusCode::UNAUTHORIZED,
                "Not signed in",
                "Actions need the admin token: sign in, or send Authorization: Bearer with ADMIN_TOKEN. Nothing was changed.",
            ),
            Refusal::NotFromThePage => message(
                StatusCode::FORBIDDEN,
                "Refused",
                "The action did not come from the console's own page (its form field is missing or wrong, or another site sent it). Nothing was changed.",
            ),
        }
    }
}

/// Checks an action's right to run: the token (bearer or cookie), and for a cookie the
/// form field and a same-site origin.
fn allowed(console: &Console, headers: &HeaderMap, form: &ActionForm) -> Result<(), Refusal> {
    match console.keys.access(headers) {
        Some(Access::Bearer) => Ok(()),
        Some(Access::Cookie) if !auth::cross_site(headers) && console.keys.form_ok(&form.form) => Ok(()),
        Some(Access::Cookie) => Err(Refusal::NotFromThePage),
        None => Err(Refusal::NoToken),
    }
}

async fn logout(
    State(console): State<Console>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    if let Err(refused) = allowed(&console, &headers, &action_form(form)) {
        return refused.into_response();
    }
    let mut response = (StatusCode::SEE_OTHER, [(LOCATION, "/console")]).into_response();
    let expired = "holdfast_console=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0";
    if let Ok(cookie) = expired.parse() {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

async fn act(
    State(console): State<Console>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    if let Err(refused) = allowed(&console, &headers, &action_form(form)) {
        return refused.into_response();
    }
    let Ok(id) = id.parse::<i64>() else {
        return message(
            StatusCode::BAD_REQUEST,
            "No such task",
            "A task id is a whole number.",
        );
    };
    let run = async {
        let conn = console
            .data
            .get_timeout(DB_BUDGET)
            .await
            .map_err(|e| e.to_string())?;
        match action.as_str() {
            "retry" => console.queue.retry(&conn, id).await.map_err(|e| e.to_string()),
            "cancel" => console.queue.cancel(&conn, id).await.map_err(|e| e.to_string()),
            other => Err(format!("unknown action {other:?}: retry or cancel")),
        }
    };
    let done = match tokio::time::timeout(DB_BUDGET, run).await {
        Ok(done) => done,
        Err(_) => Err(format!(
            "the database did not answer within {} ms",
            DB_BUDGET.as_millis()
        )),
    };
    match done {
        Ok(true) => {
            tracing::info!(task = id, %action, "console action");
            see_console(Some(&format!("Task {id}: {action} done.")))
        }
        Ok(false) => see_console(Some(&format!(
            "Task {id}: nothing to {action} (unknown, or in a state that does not allow it)."
        ))),
        Err(problem) => message(StatusCode::SERVICE_UNAVAILABLE, "The action failed", &problem),
    }
}
