//! Logging set-up for the binary: `tracing` to stderr, level from `RUST_LOG` (default info).
//! Every ERROR event is also noted (when), so that a load run can check that a fault its
//! service should absorb wrote no ERROR line, and the holdfast crates' warnings are kept for
//! the console's recent events.

use std::sync::Mutex;
use std::time::Instant;

use crate::service::console::events::KeepRecent;

use tracing::Level;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;

/// When each ERROR event of this process was logged.
static ERRORS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());

/// Installs the global subscriber: log lines to stderr (level from `RUST_LOG`, default
/// info), the ERROR notes, the console's recent events, and, when the environment asks for
/// it ([`crate::telemetry`]), the holdfast crates' spans exported over OTLP. Each layer
/// filters for itself, so spans no layer wants cost nothing. Safe to call once per process;
/// returns the exporter to flush at exit, or why the environment's trace settings cannot be
/// used.
pub fn init() -> Result<Option<crate::telemetry::Exporter>, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let exporter = crate::telemetry::from_env()?;
    let spans = exporter.as_ref().map(|e| {
        tracing_opentelemetry::layer()
            .with_tracer(e.tracer())
            .with_filter(Targets::new().with_target("holdfast", Level::DEBUG))
    });
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .with(NoteErrors.with_filter(LevelFilter::ERROR))
        .with(KeepRecent.with_filter(Targets::new().with_target("holdfast", Level::INFO)))
        .with(spans)
        .try_init();
    Ok(exporter)
}

/// When the ERROR events logged since [`init`] were logged (none without it).
pub fn errors_logged() -> Vec<Instant> {
    ERRORS.lock().map(|e| e.clone()).unwrap_or_default()
}

/// A layer that notes when each ERROR event happens.
#[derive(Debug, Clone, Copy)]
pub struct NoteErrors;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for NoteErrors {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::ERROR {
            if let Ok(mut errors) = ERRORS.lock() {
                errors.push(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_events_are_noted_and_others_are_not() {
        let subscriber = tracing_subscriber::registry().with(NoteErrors);
        let before = errors_logged().len();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("a warning");
            tracing::error!("an error");
        });
        assert_eq!(errors_logged().len(), before + 1);
    }
}
