//! Statement spans at the wire: one `tracing` span per request a connection answers, opened
//! when the request is written and closed at its `ReadyForQuery`, whatever API sent it (a
//! `PooledConnection`'s methods, a transaction, the task queue's `&Client` calls). Each is a
//! child of the span that was current when the connection was checked out, and follows
//! OpenTelemetry's database conventions: `db.system.name`, `db.namespace`,
//! `db.operation.name` (from the command tag), `server.address`, `server.port`, and on
//! failure `db.response.status_code` and `error.type` (the SQLSTATE).
//!
//! Attached only when a subscriber wants `holdfast_pool::statement` spans at DEBUG when the
//! connection opens: otherwise the tap has no listener and statements cost nothing extra.

use std::collections::VecDeque;
use std::sync::Mutex;

use holdfast_wire::{QueryText, RequestListener};
use tracing::field::Empty;
use tracing::{Level, Span};

/// Where the connection's statements go.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) database: String,
    pub(crate) address: String,
    pub(crate) port: u16,
    /// Whether spans carry the statement's text (`DB_TRACE_STATEMENT_TEXT`).
    pub(crate) text: bool,
}

/// One connection's statement spans.
#[derive(Debug)]
pub(crate) struct StatementSpans {
    target: Target,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The span statements belong to: the holder's at checkout (none while idle).
    parent: Span,
    /// One span per unanswered request, oldest first.
    open: VecDeque<Span>,
}

impl StatementSpans {
    /// A listener for a connection to `target`, if statement spans are wanted now.
    pub(crate) fn wanted(target: Target) -> Option<StatementSpans> {
        tracing::enabled!(target: "holdfast_pool::statement", Level::DEBUG).then(|| StatementSpans {
            target,
            inner: Mutex::new(Inner {
                parent: Span::none(),
                open: VecDeque::new(),
            }),
        })
    }

    /// Statements from now on belong to `parent`.
    pub(crate) fn set_parent(&self, parent: Span) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.parent = parent;
        }
    }
}

impl RequestListener for StatementSpans {
    fn wants_text(&self) -> bool {
        self.target.text
    }

    fn written(&self, text: Option<QueryText<'_>>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let span = if inner.parent.is_none() {
            // The pool's own requests (reset, ping) between holders: not traced.
            Span::none()
        } else {
            let t = &self.target;
            tracing::debug_span!(
                target: "holdfast_pool::statement",
                parent: &inner.parent,
                "statement",
                otel.name = Empty,
                otel.kind = "client",
                otel.status_code = Empty,
                db.system.name = "postgresql",
                db.namespace = %t.database,
                db.operation.name = Empty,
                db.response.status_code = Empty,
                error.type = Empty,
                server.address = %t.address,
                server.port = t.port,
                db.query.text = Empty,
            )
        };
        if let Some(text) = text {
            let shown = String::from_utf8_lossy(text.bytes);
            if text.whole {
                span.record("db.query.text", &*shown);
            } else {
                span.record("db.query.text", format!("{shown}...").as_str());
            }
        }
        inner.open.push_back(span);
    }

    fn answered(&self, tag: &str, sqlstate: Option<&str>) {
        let span = self
            .inner
            .lock()
            .ok()
            .and_then(|mut inner| inner.open.pop_front());
        let Some(span) = span else {
            return;
        };
        if span.is_none() {
            return;
        }
        if !tag.is_empty() {
            span.record("db.operation.name", tag);
            span.record("otel.name", tag);
        } else {
            span.record("otel.name", "statement");
        }
        if let Some(code) = sqlstate {
            span.record("db.response.status_code", code);
            span.record("error.type", code);
            span.record("otel.status_code", "ERROR");
        }
    }

    fn withdrawn(&self, n: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            for _ in 0..n {
                inner.open.pop_back();
            }
        }
    }

    fn ended(&self) {
        let open: Vec<Span> = match self.inner.lock() {
            Ok(mut inner) => inner.open.drain(..).collect(),
            Err(_) => return,
        };
        for span in open {
            span.record("error.type", "connection_lost");
            span.record("otel.status_code", "ERROR");
        }
    }
}
