//! Log lines that lead back to their trace: a `tracing` layer writing each event as one
//! line (JSON or text) with the `trace_id` and `span_id` of the span it happened in.
//!
//! The ids come from the current OpenTelemetry context: the span this crate's layers made
//! current for a request or message, or a `tracing` span bridged by
//! `tracing-opentelemetry` (entering one makes its context current).

use std::fmt::Write as _;
use std::io::Write as _;

use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// The layer; see the module docs. `W` makes the writer for each line (stdout by default).
pub struct LogLayer<W> {
    format: LogFormat,
    service: String,
    make_writer: W,
}

impl LogLayer<fn() -> std::io::Stdout> {
    /// Lines to stdout.
    pub fn stdout(format: LogFormat, service: impl Into<String>) -> Self {
        Self { format, service: service.into(), make_writer: std::io::stdout }
    }
}

impl<W> LogLayer<W> {
    /// Lines to `make_writer` (a file, a buffer in tests).
    pub fn with_writer(format: LogFormat, service: impl Into<String>, make_writer: W) -> Self {
        Self { format, service: service.into(), make_writer }
    }
}

/// The trace and span id (lowercase hex) of the current context, if it has a valid span.
pub fn current_ids() -> Option<(String, String)> {
    let cx = Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

impl<S, W> Layer<S> for LogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        if self.format == LogFormat::None {
            return;
        }
        let mut fields = FieldMap(Map::new());
        event.record(&mut fields);
        let mut fields = fields.0;
        let message = match fields.remove("message") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let meta = event.metadata();
        let ids = current_ids();
        let span_name = ctx.event_span(event).map(|s| s.name());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let timestamp =
            chrono::DateTime::<chrono::Utc>::from_timestamp(now.as_secs() as i64, now.subsec_nanos())
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                .unwrap_or_default();
        let mut line = String::with_capacity(256);
        match self.format {
            LogFormat::Json => {
                let mut obj = Map::new();
                obj.insert("timestamp".into(), timestamp.into());
                obj.insert("level".into(), meta.level().as_str().into());
                obj.insert("service".into(), self.service.clone().into());
                obj.insert("target".into(), meta.target().into());
                obj.insert("message".into(), message.into());
                if let Some((trace_id, span_id)) = ids {
                    obj.insert("trace_id".into(), trace_id.into());
                    obj.insert("span_id".into(), span_id.into());
                }
                if let Some(name) = span_name {
                    obj.insert("span".into(), name.into());
                }
                for (k, v) in fields {
                    obj.entry(k).or_insert(v);
                }
                line = Value::Object(obj).to_string();
            }
            LogFormat::Text => {
                let _ = write!(line, "{timestamp} {:>5} {}: {message}", meta.level(), meta.target());
                for (k, v) in &fields {
                    match v {
                        Value::String(s) => {
                            let _ = write!(line, " {k}={s:?}");
                        }
                        other => {
                            let _ = write!(line, " {k}={other}");
                        }
                    }
                }
                if let Some((trace_id, span_id)) = ids {
                    let _ = write!(line, " trace_id={trace_id} span_id={span_id}");
                }
            }
            LogFormat::None => return,
        }
        line.push('\n');
        let mut writer = self.make_writer.make_writer_for(meta);
        let _ = writer.write_all(line.as_bytes());
    }
}

struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}
