//! Traces over OTLP, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; nothing is exported, and the spans cost
//! nothing, otherwise.
//!
//! The spans come from the holdfast crates at DEBUG, following OpenTelemetry's database
//! conventions: `acquire` (with the time waited), `statement` (one per request on the wire,
//! named by its command), `transaction` (with how the commit ended, a lost reply's
//! resolution included), `task attempt` (joined to the trace of the request that enqueued
//! it), and the service's own `http` request spans (which continue a caller's
//! `traceparent`). The OpenTelemetry SDK's environment variables are honoured:
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`. The exporter speaks
//! HTTP with protobuf; `OTEL_EXPORTER_OTLP_PROTOCOL` set to anything else is refused at
//! start-up.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The protocol the exporter speaks.
pub const PROTOCOL: &str = "http/protobuf";
/// The variables that turn export on.
pub const ENDPOINTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
const PROTOCOLS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];

/// The exporter, while traces are exported; [`shutdown`](Self::shutdown) flushes it.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Sends what is buffered and stops.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("holdfast: traces could not all be sent: {e}");
        }
    }

    /// The tracer the `tracing` layer feeds.
    pub fn tracer(&self) -> opentelemetry_sdk::trace::Tracer {
        self.provider.tracer("holdfast")
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The exporter the environment asks for: `None` without an endpoint; an error naming the
/// variable when it asks for what holdfast cannot do.
pub fn from_env() -> Result<Option<Exporter>, String> {
    if let Some((name, value)) = PROTOCOLS.iter().find_map(|n| var(n).map(|v| (*n, v))) {
        if value.trim() != PROTOCOL {
            return Err(format!(
                "{name}={value:?} is not supported: holdfast exports traces over {PROTOCOL} (unset it, or set {PROTOCOL})"
            ));
        }
    }
    if !ENDPOINTS.iter().any(|n| var(n).is_some()) {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: the trace exporter cannot start: {e}"))?;
    let mut resource = Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("holdfast");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    holdfast::tasks::set_trace_carrier(W3cCarrier);
    Ok(Some(Exporter { provider }))
}

/// Carries W3C trace context (`traceparent`, `tracestate`) between the span that enqueues
/// a task and its attempts, and from an incoming request's headers.
#[derive(Debug, Clone, Copy)]
pub struct W3cCarrier;

impl holdfast::tasks::TraceCarrier for W3cCarrier {
    fn current(&self) -> Option<String> {
        let context = tracing::Span::current().context();
        let mut fields = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut fields);
        let parent = fields.remove("traceparent")?;
        Some(match fields.remove("tracestate").filter(|s| !s.is_empty()) {
            Some(state) => format!("{parent};{state}"),
            None => parent,
        })
    }

    fn adopt(&self, span: &tracing::Span, carried: &str) {
        let (parent, state) = carried.split_once(';').unwrap_or((carried, ""));
        let mut fields = HashMap::new();
        fields.insert("traceparent".to_string(), parent.to_string());
        if !state.is_empty() {
            fields.insert("tracestate".to_string(), state.to_string());
        }
        adopt_fields(span, &fields);
    }
}

/// Makes `span` a child of the W3C context in `fields` (`traceparent`, `tracestate`).
pub fn adopt_fields(span: &tracing::Span, fields: &HashMap<String, String>) {
    let context = TraceContextPropagator::new().extract(fields);
    let _ = span.set_parent(context);
}
