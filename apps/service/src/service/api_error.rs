//! API errors: a status and a JSON body `{"error": "..."}`. A client's mistake is a 4xx that
//! says what was wrong; a database that cannot be reached is a quick 503 with `Retry-After`;
//! nothing a client sends yields a 500.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use holdfast::pool::{pg_error_text, PoolError};
use holdfast::tasks::TaskError;
use holdfast::tx::{ClassifyError, ErrorClass, TxError};
use serde_json::json;

/// What went wrong with a request.
#[derive(Debug)]
pub enum ApiError {
    /// The request is malformed or a value is out of range.
    BadRequest(String),
    /// The thing asked for does not exist.
    NotFound(String),
    /// The request conflicts with the current state.
    Conflict(String),
    /// The database cannot serve now; try again shortly.
    Unavailable(String),
    /// A fault of ours; the details are logged, not returned.
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_string())
            }
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Timeout { .. } | PoolError::Unavailable { .. } | PoolError::Closed { .. } => {
                ApiError::Unavailable(format!("database unavailable: {e}"))
            }
            // Load shed by the pool (DB_MAX_WAITING): a 503 with Retry-After, like an outage.
            PoolError::Overloaded { .. } => ApiError::Unavailable(format!("overloaded: {e}")),
            // A statement the pool ran for the caller (`pool.query`): classified like any.
            PoolError::Database(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        match holdfast::tx::classify(&e) {
            ErrorClass::Disconnected | ErrorClass::Conflict => {
                ApiError::Unavailable(format!("database unavailable: {}", pg_error_text(&e)))
            }
            ErrorClass::Permanent => ApiError::Internal(pg_error_text(&e)),
        }
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        match e {
            TaskError::Database(e) => e.into(),
            TaskError::Pool(e) => e.into(),
            TaskError::TimedOut { .. } => ApiError::Unavailable(format!("database unavailable: {e}")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<TxError<ApiError>> for ApiError {
    fn from(e: TxError<ApiError>) -> Self {
        match e {
            TxError::Closure(inner) => inner,
            TxError::Pool(p) => p.into(),
            TxError::Database(d) => d.into(),
            // The database went away with the COMMIT unanswered and could not be asked
            // afterwards: an outage, said as such (the client learns the write may or may not
            // have landed), not a fault of ours.
            TxError::CommitOutcomeUnknown { .. } => ApiError::Unavailable(format!(
                "the database became unreachable while committing; whether the change was saved is unknown: {e}"
            )),
            other if other.is_retryable() => ApiError::Unavailable(other.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Unavailable(m)
            | ApiError::Internal(m) => f.write_str(m),
        }
    }
}

/// Lets API errors be returned from transaction closures, with retries where they help.
impl ClassifyError for ApiError {
    fn error_class(&self) -> ErrorClass {
        match self {
            ApiError::Unavailable(_) => ErrorClass::Disconnected,
            _ => ErrorClass::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_whose_outcome_is_unknown_is_a_503_that_says_so_not_a_500() {
        let e: ApiError = TxError::<ApiError>::CommitOutcomeUnknown {
            xid: Some(7),
            reason: "cannot reach the server".into(),
        }
        .into();
        assert!(
            matches!(&e, ApiError::Unavailable(m) if m.contains("unknown")),
            "{e:?}"
        );
        assert_eq!(e.into_response().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
