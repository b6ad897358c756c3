//! Jaeger model → Strand (OTLP) model, following the OpenTelemetry Collector's Jaeger
//! receiver:
//!
//! - the process's `serviceName` becomes the resource's `service.name`, its tags the other
//!   resource attributes (`hostname` becomes `host.name`);
//! - `span.kind` → kind; `otel.scope.name`/`otel.scope.version` (or the older
//!   `otel.library.*`) → scope; `w3c.tracestate` → trace state; these tags are removed;
//! - status: `error=true` is an error (message from `otel.status_description`, else
//!   `http.status_message`); otherwise `otel.status_code` `OK`/`ERROR` with
//!   `otel.status_description`; otherwise `http.status_code` by the HTTP rule (4xx is an
//!   error for clients only);
//! - the parent is `parentSpanId`, or else the first `CHILD_OF` reference in the same trace;
//!   every other reference (`FOLLOWS_FROM`, more `CHILD_OF`s) becomes a link with an
//!   `opentracing.ref_type` attribute;
//! - logs become events named by their `event` field (or, failing that, a `message` field,
//!   where OpenTelemetry Python's exporter puts the name); times are microseconds;
//! - the `sampled` flag is kept as the W3C sampled bit.

use strand_core::{
    AnyValue, Event, KeyValue, Link, Resource, Span, SpanBatch, SpanId, SpanKind, Status, StatusCode, TraceId,
};
use strand_otlp::Rejections;

use super::model::{self, Batch, CHILD_OF, Tag, tag_type};
use crate::legacy::{BatchBuilder, kind_from_name, micros_to_nanos, status_from_http};

/// Converts a batch; a span that cannot be stored (zero or malformed ids, no or negative
/// start time, a string that is not UTF-8) is rejected on its own and described in the
/// [`Rejections`]; a process whose strings are not UTF-8 rejects every span of its batch.
pub fn to_span_batch(batch: Batch) -> (SpanBatch, Rejections) {
    let mut rejections = Rejections::default();
    let mut out = BatchBuilder::default();
    let Batch { process, spans } = batch;
    if let Some(what) = &process.invalid_utf8 {
        for i in 0..spans.len() {
            rejections.push(format!("span {i}: the process's {what} is not valid UTF-8"));
        }
        return (out.finish(), rejections);
    }
    let mut resource = Some(to_resource(process));
    for (i, span) in spans.into_iter().enumerate() {
        match convert_span(span) {
            Ok((scope, span)) => {
                out.push("", || resource.take().unwrap_or_default(), scope, span);
            }
            Err(e) => rejections.push(format!("span {i}: {e}")),
        }
    }
    (out.finish(), rejections)
}

fn to_resource(process: model::Process) -> Resource {
    let mut attributes = Vec::with_capacity(process.tags.len() + 1);
    let has_service = !process.service_name.is_empty();
    if has_service {
        attributes.push(KeyValue::new("service.name", AnyValue::String(process.service_name)));
    }
    let has_host_name = process.tags.iter().any(|t| t.key == "host.name");
    for tag in process.tags {
        let mut kv = to_key_value(tag);
        // `serviceName` wins over a `service.name` process tag; without it, the tag counts.
        if kv.key == "service.name" && has_service {
            continue;
        }
        if kv.key == "hostname" && !has_host_name {
            kv.key = "host.name".into();
        }
        attributes.push(kv);
    }
    Resource { attributes, ..Resource::default() }
}

/// A tag as an attribute; a value missing for its declared type is empty.
pub fn to_key_value(tag: Tag) -> KeyValue {
    let value = match tag.v_type {
        tag_type::STRING => tag.v_str.map(AnyValue::String),
        tag_type::DOUBLE => tag.v_double.map(AnyValue::Double),
        tag_type::BOOL => tag.v_bool.map(AnyValue::Bool),
        tag_type::LONG => tag.v_long.map(AnyValue::Int),
        tag_type::BINARY => tag.v_binary.map(AnyValue::Bytes),
        other => Some(AnyValue::String(format!("<Unknown Jaeger TagType {other}>"))),
    };
    KeyValue { key: tag.key, value: value.unwrap_or_default() }
}

fn take(attrs: &mut Vec<KeyValue>, key: &str) -> Option<AnyValue> {
    let i = attrs.iter().position(|kv| kv.key == key)?;
    Some(attrs.remove(i).value)
}

fn take_str(attrs: &mut Vec<KeyValue>, key: &str) -> Option<String> {
    match take(attrs, key)? {
        AnyValue::String(s) => Some(s),
        other => strand_core::search::value_text(&other),
    }
}

fn trace_id(high: i64, low: i64) -> Result<TraceId, String> {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&low.to_be_bytes());
    TraceId::from_slice(&bytes).map_err(|e| e.to_string())
}

fn span_id(id: i64) -> Result<SpanId, String> {
    SpanId::from_slice(&id.to_be_bytes()).map_err(|e| e.to_string())
}

fn convert_span(s: model::Span) -> Result<((String, String), Span), String> {
    if let Some(what) = &s.invalid_utf8 {
        return Err(format!("{what} is not valid UTF-8"));
    }
    let trace = trace_id(s.trace_id_high, s.trace_id_low)?;
    let id = span_id(s.span_id)?;
    let start_us = s.start_time.ok_or("startTime is missing")?;
    let start = micros_to_nanos(start_us).ok_or_else(|| format!("startTime {start_us} is out of range"))?;
    let duration =
        micros_to_nanos(s.duration).ok_or_else(|| format!("duration {} is negative", s.duration))?;
    let end = start.checked_add(duration).ok_or("startTime + duration overflows")?;

    let parent_raw = if s.parent_span_id != 0 {
        s.parent_span_id
    } else {
        s.references
            .iter()
            .find(|r| {
                r.ref_type == CHILD_OF
                    && r.trace_id_high == s.trace_id_high
                    && r.trace_id_low == s.trace_id_low
            })
            .map_or(0, |r| r.span_id)
    };
    let parent_span_id = if parent_raw == 0 { None } else { Some(span_id(parent_raw)?) };
    let mut links = Vec::new();
    for (i, r) in s.references.iter().enumerate() {
        if r.ref_type == CHILD_OF && r.span_id == parent_raw {
            continue;
        }
        let ref_type = if r.ref_type == CHILD_OF { "child_of" } else { "follows_from" };
        links.push(Link {
            trace_id: trace_id(r.trace_id_high, r.trace_id_low).map_err(|e| format!("reference {i}: {e}"))?,
            span_id: span_id(r.span_id).map_err(|e| format!("reference {i}: {e}"))?,
            trace_state: String::new(),
            attributes: vec![KeyValue::new("opentracing.ref_type", AnyValue::String(ref_type.into()))],
            dropped_attributes_count: 0,
            flags: 0,
        });
    }

    let mut attrs: Vec<KeyValue> = s.tags.into_iter().map(to_key_value).collect();
    let kind = take_str(&mut attrs, "span.kind").and_then(|k| kind_from_name(&k)).unwrap_or_default();
    // Exporters send the scope under both its current and its older name: take both.
    let library = (take_str(&mut attrs, "otel.library.name"), take_str(&mut attrs, "otel.library.version"));
    let scope_name = take_str(&mut attrs, "otel.scope.name").or(library.0);
    let scope_version = take_str(&mut attrs, "otel.scope.version").or(library.1);
    let trace_state = take_str(&mut attrs, "w3c.tracestate").unwrap_or_default();
    let status = status(&mut attrs, kind);

    let mut events = Vec::with_capacity(s.logs.len());
    for (i, log) in s.logs.into_iter().enumerate() {
        let time = micros_to_nanos(log.timestamp)
            .ok_or_else(|| format!("log {i}: timestamp {} is out of range", log.timestamp))?;
        let mut attributes: Vec<KeyValue> = log.fields.into_iter().map(to_key_value).collect();
        // The `event` field names the event (OpenTracing, the collector); exporters that
        // write the name as `message` (OpenTelemetry Python's) are read the same way.
        let name_key = ["event", "message"].into_iter().find(|key| {
            attributes.iter().any(|kv| kv.key == *key && matches!(kv.value, AnyValue::String(_)))
        });
        let name = name_key.and_then(|key| take_str(&mut attributes, key)).unwrap_or_default();
        events.push(Event { time_unix_nano: time, name, attributes, dropped_attributes_count: 0 });
    }

    let span = Span {
        trace_id: trace,
        span_id: id,
        parent_span_id,
        trace_state,
        flags: (s.flags & 1) as u32,
        name: s.operation_name,
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: attrs,
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links,
        dropped_links_count: 0,
        status,
    };
    Ok(((scope_name.unwrap_or_default(), scope_version.unwrap_or_default()), span))
}

fn status(attrs: &mut Vec<KeyValue>, kind: SpanKind) -> Status {
    let is_true = |v: &AnyValue| matches!(v, AnyValue::Bool(true)) || v.as_str() == Some("true");
    let error_tag = attrs.iter().position(|kv| kv.key == "error" && is_true(&kv.value));
    if let Some(at) = error_tag {
        attrs.remove(at);
        let message = take_str(attrs, "otel.status_description")
            .or_else(|| {
                strand_core::find_attr(attrs, "http.status_message").and_then(strand_core::search::value_text)
            })
            .unwrap_or_default();
        take(attrs, "otel.status_code");
        return Status { code: StatusCode::Error, message };
    }
    if let Some(code) = take_str(attrs, "otel.status_code") {
        let message = take_str(attrs, "otel.status_description").unwrap_or_default();
        let code = match code.to_ascii_uppercase().as_str() {
            "OK" => StatusCode::Ok,
            "ERROR" => StatusCode::Error,
            _ => StatusCode::Unset,
        };
        return Status { code, message };
    }
    let http_code = strand_core::find_attr(attrs, "http.status_code")
        .or_else(|| strand_core::find_attr(attrs, "http.response.status_code"))
        .and_then(|v| match v {
            AnyValue::Int(i) => Some(*i),
            AnyValue::String(s) => s.trim().parse().ok(),
            _ => None,
        });
    match http_code.map(|c| status_from_http(c, kind)) {
        Some(StatusCode::Error) => Status {
            code: StatusCode::Error,
            message: strand_core::find_attr(attrs, "http.status_message")
                .and_then(strand_core::search::value_text)
                .unwrap_or_default(),
        },
        _ => Status::default(),
    }
}
