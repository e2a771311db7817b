//! Recording the `tracing` spans a test makes: each span's name, its parent's name and its
//! fields (as recorded at creation and later), for checking what a trace backend would get.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// A span as recorded.
#[derive(Debug, Clone, Default)]
pub struct SeenSpan {
    /// Its name.
    pub name: String,
    /// Its parent's name, if it has a parent.
    pub parent: Option<String>,
    /// Its fields, as text.
    pub fields: HashMap<String, String>,
}

impl SeenSpan {
    /// One field, as text.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// The spans recorded so far (a `tracing_subscriber` layer; clones share the record).
#[derive(Debug, Clone, Default)]
pub struct Spans(Arc<Mutex<HashMap<u64, SeenSpan>>>);

impl Spans {
    /// The recorded spans named `name`.
    pub fn named(&self, name: &str) -> Vec<SeenSpan> {
        self.0
            .lock()
            .map(|spans| spans.values().filter(|s| s.name == name).cloned().collect())
            .unwrap_or_default()
    }
}

/// Records every span of this thread (and the tasks a current-thread runtime runs on it)
/// until the guard is dropped.
pub fn record_spans() -> (Spans, tracing::subscriber::DefaultGuard) {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    (spans, tracing::subscriber::set_default(subscriber))
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S> Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut seen = SeenSpan {
            name: attrs.metadata().name().to_string(),
            parent: ctx
                .span(id)
                .and_then(|s| s.parent())
                .map(|p| p.name().to_string()),
            ..SeenSpan::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        if let Ok(mut spans) = self.0.lock() {
            spans.insert(id.into_u64(), seen);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Ok(mut spans) = self.0.lock() {
            if let Some(seen) = spans.get_mut(&id.into_u64()) {
                values.record(&mut Fields(&mut seen.fields));
            }
        }
    }
}
