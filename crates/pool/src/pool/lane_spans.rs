//! Spans for statements `Pool::query` and `Pool::execute` run on shared lanes, where no one
//! holds the connection and the wire's statement spans (see `connect::statement_spans`)
//! cannot tell whose a statement is: one span per call instead, in the caller's context,
//! named after the statement's first keyword, with the same OpenTelemetry database fields.

use tracing::field::Empty;
use tracing::Span;

use crate::error::PoolError;

/// A span for one lane statement (disabled unless a subscriber wants
/// `holdfast_pool::statement` at DEBUG, and outside any current span: a statement is traced
/// as part of something traced, like the wire's statement spans).
pub(super) fn start(pool: &str, sql: &str, text: bool) -> Span {
    if !tracing::enabled!(target: "holdfast_pool::statement", tracing::Level::DEBUG)
        || Span::current().is_none()
    {
        return Span::none();
    }
    tracing::debug_span!(
        target: "holdfast_pool::statement",
        "statement",
        otel.name = operation(sql),
        otel.kind = "client",
        otel.status_code = Empty,
        db.system.name = "postgresql",
        db.operation.name = operation(sql),
        db.client.connection.pool.name = pool,
        db.response.status_code = Empty,
        error.type = Empty,
        holdfast.pipelined = true,
        db.query.text = if text { Some(sql) } else { None },
    )
}

/// Records a failure on the span.
pub(super) fn end<T>(span: &Span, result: &Result<T, PoolError>) {
    if let Err(e) = result {
        let kind = e.kind_name();
        if let Some(db) = e.as_db_error() {
            span.record("db.response.status_code", db.code().code());
        }
        span.record("error.type", kind.as_str());
        span.record("otel.status_code", "ERROR");
    }
}

/// The statement's first keyword, upper-cased (`SELECT`, `WITH`, ...).
fn operation(sql: &str) -> String {
    sql.split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_operation_is_the_first_keyword() {
        assert_eq!(super::operation("  select 1"), "SELECT");
        assert_eq!(super::operation("WITH x AS (SELECT 1) SELECT * FROM x"), "WITH");
        assert_eq!(super::operation("(select 1)"), "SELECT");
        assert_eq!(super::operation(""), "");
    }
}
