//! The console's "recent events": the last log events of the holdfast crates that an
//! operator wants to see at a glance (warnings and errors, and the transaction layer's
//! resolutions of lost COMMIT replies), kept in memory by a `tracing` layer.
//!
//! The layer is installed with the process's subscriber ([`crate::logging::init`]); without
//! it the list stays empty. Log fields never carry secrets (promise 8), so neither does
//! this list.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// How many events are kept.
pub const KEPT: usize = 100;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentEvent {
    /// When it was logged.
    pub at: SystemTime,
    /// Its level (`WARN`, `ERROR`, `INFO`).
    pub level: &'static str,
    /// The module that logged it (`holdfast_pool::pool::maintenance`, say).
    pub target: String,
    /// Its message and fields, `message key=value ...`.
    pub text: String,
}

static RECENT: Mutex<VecDeque<RecentEvent>> = Mutex::new(VecDeque::new());

/// The kept events, newest first.
pub fn recent() -> Vec<RecentEvent> {
    RECENT
        .lock()
        .map(|r| r.iter().rev().cloned().collect())
        .unwrap_or_default()
}

/// Whether an event is one the console keeps: a warning or error of a holdfast crate, or
/// any event of the transaction layer (a lost COMMIT's resolution is logged at INFO).
fn kept(level: &Level, target: &str) -> bool {
    let ours = target.starts_with("holdfast");
    let warning = *level <= Level::WARN;
    ours && (warning || (target.starts_with("holdfast_tx") && *level <= Level::INFO))
}

/// The layer that keeps them.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepRecent;

impl<S: Subscriber> tracing_subscriber::Layer<S> for KeepRecent {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if !kept(meta.level(), meta.target()) {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let event = RecentEvent {
            at: SystemTime::now(),
            level: meta.level().as_str(),
            target: meta.target().to_string(),
            text: text.finish(),
        };
        if let Ok(mut recent) = RECENT.lock() {
            if recent.len() == KEPT {
                recent.pop_front();
            }
            recent.push_back(event);
        }
    }
}

/// An event's message followed by its fields.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else {
            format!("{}{}", self.message, self.fields)
        }
    }
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_holdfast_warnings_and_the_transaction_layer_and_nothing_else() {
        let subscriber = tracing_subscriber::registry().with(KeepRecent);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "holdfast_pool::pool::maintenance", pool = "api", "closed a connection");
            tracing::info!(target: "holdfast_tx::tx", xid = 7, "the COMMIT whose reply was lost did commit");
            tracing::info!(target: "holdfast_pool::migrate", "migrations applied");
            tracing::warn!(target: "hyper::proto", "not ours");
        });
        let recent = recent();
        let texts: Vec<&str> = recent.iter().map(|e| e.text.as_str()).collect();
        assert!(texts.contains(&"closed a connection pool=api"), "{texts:?}");
        assert!(
            texts.contains(&"the COMMIT whose reply was lost did commit xid=7"),
            "{texts:?}"
        );
        assert!(
            !texts
                .iter()
                .any(|t| t.contains("migrations") || t.contains("not ours")),
            "{texts:?}"
        );
        let newest = recent.iter().position(|e| e.text.starts_with("the COMMIT"));
        let older = recent.iter().position(|e| e.text.starts_with("closed a"));
        assert!(newest < older, "newest first: {texts:?}");
    }
}
