//! Carrying a trace from the code that enqueues a task to the task's attempts.
//!
//! The queue stores a text form of the enqueuer's trace context with the task (W3C
//! `traceparent`, say) and each attempt's span adopts it, so that a request and the
//! background work it started are one trace. holdfast depends on `tracing` only; the
//! application installs the [`TraceCarrier`] that knows its tracing backend (the reference
//! service installs one for OpenTelemetry). Without one nothing is stored and attempts are
//! root spans.

use std::sync::OnceLock;

/// Turns the current span's trace context into text and back.
pub trait TraceCarrier: Send + Sync + 'static {
    /// The current span's trace context as text, if it has one.
    fn current(&self) -> Option<String>;

    /// Makes `span` a child of the context `carried` (a value [`current`](Self::current)
    /// returned, possibly in another process).
    fn adopt(&self, span: &tracing::Span, carried: &str);
}

static CARRIER: OnceLock<Box<dyn TraceCarrier>> = OnceLock::new();

/// Installs the process's trace carrier. Only the first call takes effect; false for the
/// others.
pub fn set_trace_carrier(carrier: impl TraceCarrier) -> bool {
    CARRIER.set(Box::new(carrier)).is_ok()
}

/// The installed carrier.
pub(crate) fn carrier() -> Option<&'static dyn TraceCarrier> {
    CARRIER.get().map(|c| &**c)
}

/// The context to store with a task being enqueued: the one given, or the current span's.
pub(crate) fn context_to_store(given: &Option<String>) -> Option<String> {
    given.clone().or_else(|| carrier().and_then(|c| c.current()))
}
