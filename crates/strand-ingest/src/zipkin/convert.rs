//! Zipkin v2 → Strand (OTLP) model, following the OpenTelemetry Collector's Zipkin receiver
//! and today's semantic conventions:
//!
//! - `localEndpoint.serviceName` → resource `service.name`; tags that name resource
//!   attributes (`service.*`, `telemetry.sdk.*`, `host.*`, `process.*`, ...) move to the
//!   resource; `otel.scope.name`/`otel.library.name` (and versions) → scope;
//! - kind from `kind` (or a `span.kind` tag), unspecified when absent;
//! - status: `otel.status_code` (`OK`/`ERROR`, also `STATUS_CODE_*`) with
//!   `otel.status_description`; an `error` tag makes the span an error, its value (unless
//!   `true`) the message;
//! - `remoteEndpoint` → `peer.service`, `network.peer.address`/`network.peer.port`, and
//!   `server.address`/`server.port` on client and producer spans (`client.*` on server and
//!   consumer spans); `localEndpoint`'s address → `network.local.address`/`.port`;
//! - annotations → events; a value that is a JSON object `{"name": {attributes}}` (how the
//!   OpenTelemetry SDKs' Zipkin exporters write events) or `name|{attributes}|dropped` (the
//!   collector's form) keeps its attributes;
//! - a **shared** span (a SERVER span reporting under its CLIENT's span id) gets its own
//!   span id, derived from the trace and the shared id so retries map to the same one, with
//!   the client span as its parent; spans of the same request that named the shared id as
//!   their parent from the server's side are re-parented to it. The shared id is kept as
//!   the attribute `zipkin.shared_span_id`;
//! - every span gets the W3C sampled flag (it was reported, so it was sampled); `debug`
//!   (forced sampling, which OpenTelemetry's Zipkin exporters set for every sampled span)
//!   adds nothing beyond that and is not kept.
//!
//! A span with no timestamp (an incomplete span, legal in Zipkin) takes its first
//! annotation's time; with neither it is rejected: it cannot be placed in time.

use std::collections::HashMap;

use strand_core::{
    AnyValue, Event, KeyValue, Resource, Span, SpanBatch, SpanId, SpanKind, Status, StatusCode, TraceId,
};
use strand_otlp::Rejections;

use super::model::{Endpoint, Kind, ZipkinSpan};
use crate::legacy::{BatchBuilder, kind_from_name};

/// Tag prefixes that name resource attributes in the OpenTelemetry conventions.
const RESOURCE_PREFIXES: &[&str] = &[
    "service.",
    "telemetry.sdk.",
    "telemetry.auto.",
    "telemetry.distro.",
    "host.",
    "os.",
    "process.",
    "container.",
    "k8s.",
    "cloud.",
    "faas.",
    "deployment.",
    "device.",
    "webengine.",
];

/// Attribute keeping a shared span's original (client's) span id.
pub const SHARED_SPAN_ID_ATTR: &str = "zipkin.shared_span_id";

/// Converts decoded spans; those that failed to decode, or have no time, are rejected on
/// their own.
pub fn to_span_batch(spans: Vec<Result<ZipkinSpan, String>>) -> (SpanBatch, Rejections) {
    let mut rejections = Rejections::default();
    let mut ok = Vec::with_capacity(spans.len());
    for (i, span) in spans.into_iter().enumerate() {
        match span {
            Ok(s) if s.timestamp == 0 && s.annotations.iter().all(|(t, _)| *t == 0) => rejections.push(
                format!("span {i}: timestamp is missing (an incomplete span cannot be placed in time)"),
            ),
            Ok(s) => ok.push((i, s)),
            Err(e) => rejections.push(format!("span {i}: {e}")),
        }
    }
    let shared = shared_span_ids(ok.iter().map(|(_, s)| s));
    let mut out = BatchBuilder::default();
    for (i, s) in ok {
        match convert(s, &shared) {
            Ok(Converted { resource_key, service, resource_tags, scope, span }) => {
                out.push(&resource_key, || resource(service, resource_tags), scope, span);
            }
            Err(e) => rejections.push(format!("span {i}: {e}")),
        }
    }
    (out.finish(), rejections)
}

fn local_service(s: &ZipkinSpan) -> &str {
    s.local_endpoint.as_ref().map_or("", |e| e.service_name.as_str())
}

/// The span id a shared span is stored under: a hash of the trace and the shared id
/// (FNV-1a, fixed forever so a retried request maps to the same id).
pub fn shared_server_id(trace: TraceId, shared: SpanId) -> SpanId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in trace.0.iter().chain(&shared.0).chain(b"zipkin.shared") {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if h == 0 || h.to_be_bytes() == shared.0 {
        h = !h;
    }
    SpanId(h.to_be_bytes())
}

/// Shared SERVER spans of a request, keyed by (trace, shared id): their local service and
/// new id.
type SharedIds = HashMap<(TraceId, SpanId), (String, SpanId)>;

fn shared_span_ids<'a>(spans: impl Iterator<Item = &'a ZipkinSpan>) -> SharedIds {
    spans
        .filter(|s| s.shared && s.kind == Some(Kind::Server))
        .map(|s| ((s.trace_id, s.id), (local_service(s).to_owned(), shared_server_id(s.trace_id, s.id))))
        .collect()
}

/// One converted span and what its resource is made of (built once per distinct key).
struct Converted {
    resource_key: String,
    service: String,
    resource_tags: Vec<(String, String)>,
    scope: (String, String),
    span: Span,
}

fn resource(service: String, resource_tags: Vec<(String, String)>) -> Resource {
    let mut resource = Resource::default();
    let has_service = !service.is_empty();
    if has_service {
        resource.attributes.push(KeyValue::new("service.name", AnyValue::String(service)));
    }
    for (k, v) in resource_tags {
        if !(has_service && k == "service.name") {
            resource.attributes.push(KeyValue::new(k, AnyValue::String(v)));
        }
    }
    resource
}

fn is_resource_key(key: &str) -> bool {
    RESOURCE_PREFIXES.iter().any(|p| key.starts_with(p))
}

fn convert(s: ZipkinSpan, shared: &SharedIds) -> Result<Converted, String> {
    let service = local_service(&s).to_owned();
    let mut resource_tags = Vec::new();
    let mut tags = Vec::with_capacity(s.tags.len() + 6);
    for (k, v) in s.tags {
        if is_resource_key(&k) {
            resource_tags.push((k, v));
        } else {
            tags.push(KeyValue::new(k, AnyValue::String(v)));
        }
    }
    resource_tags.sort();
    let mut resource_key = service.clone();
    for (k, v) in &resource_tags {
        resource_key.push('\u{0}');
        resource_key.push_str(k);
        resource_key.push('=');
        resource_key.push_str(v);
    }

    // Exporters send the scope under both its current and its older name: take both.
    let library = (take(&mut tags, "otel.library.name"), take(&mut tags, "otel.library.version"));
    let scope_name = take(&mut tags, "otel.scope.name").or(library.0);
    let scope_version = take(&mut tags, "otel.scope.version").or(library.1);
    let kind = match s.kind {
        Some(Kind::Client) => SpanKind::Client,
        Some(Kind::Server) => SpanKind::Server,
        Some(Kind::Producer) => SpanKind::Producer,
        Some(Kind::Consumer) => SpanKind::Consumer,
        None => take(&mut tags, "span.kind").and_then(|k| kind_from_name(&k)).unwrap_or_default(),
    };
    let trace_state = take(&mut tags, "w3c.tracestate").unwrap_or_default();
    let status = status(&mut tags);

    let same_service = |key| shared.get(&key).filter(|(svc, _)| *svc == service).map(|(_, id)| *id);
    let (span_id, parent_span_id) = match same_service((s.trace_id, s.id)).filter(|_| s.shared) {
        Some(new_id) => {
            tags.push(KeyValue::new(SHARED_SPAN_ID_ATTR, AnyValue::String(s.id.to_hex())));
            (new_id, Some(s.id))
        }
        None => {
            // A child recorded by the shared server's own service hangs under the server
            // side, which now has its own id.
            let parent =
                s.parent_id.map(|p| same_service((s.trace_id, p)).filter(|_| s.id != p).unwrap_or(p));
            (s.id, parent)
        }
    };
    if let Some(remote) = &s.remote_endpoint {
        remote_attributes(&mut tags, remote, kind);
    }
    if let Some(local) = &s.local_endpoint {
        if let Some(ip) = local.ip() {
            put(&mut tags, "network.local.address", AnyValue::String(ip.to_string()));
        }
        if let Some(port) = local.port {
            put(&mut tags, "network.local.port", AnyValue::Int(port.into()));
        }
    }

    let mut annotations = s.annotations;
    annotations.sort_by_key(|(t, _)| *t);
    let start_us = if s.timestamp > 0 { s.timestamp } else { annotations.first().map_or(0, |(t, _)| *t) };
    let nanos =
        |us: u64, what: &str| us.checked_mul(1000).ok_or_else(|| format!("{what} {us} is out of range"));
    let start = nanos(start_us, "timestamp")?;
    let end = start.checked_add(nanos(s.duration, "duration")?).ok_or("timestamp + duration overflows")?;
    let mut events = Vec::with_capacity(annotations.len());
    for (t, value) in annotations {
        events.push(event(nanos(t, "annotation timestamp")?, value));
    }

    let span = Span {
        trace_id: s.trace_id,
        span_id,
        parent_span_id,
        trace_state,
        // A reported Zipkin span was sampled.
        flags: 1,
        name: s.name,
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: tags,
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status,
    };
    let scope = (scope_name.unwrap_or_default(), scope_version.unwrap_or_default());
    Ok(Converted { resource_key, service, resource_tags, scope, span })
}

fn take(attrs: &mut Vec<KeyValue>, key: &str) -> Option<String> {
    let i = attrs.iter().position(|kv| kv.key == key)?;
    match attrs.remove(i).value {
        AnyValue::String(s) => Some(s),
        _ => None,
    }
}

/// Adds an attribute unless a tag already set it.
fn put(attrs: &mut Vec<KeyValue>, key: &str, value: AnyValue) {
    if !attrs.iter().any(|kv| kv.key == key) {
        attrs.push(KeyValue::new(key, value));
    }
}

fn remote_attributes(attrs: &mut Vec<KeyValue>, remote: &Endpoint, kind: SpanKind) {
    if !remote.service_name.is_empty() {
        put(attrs, "peer.service", AnyValue::String(remote.service_name.clone()));
    }
    let side = match kind {
        SpanKind::Client | SpanKind::Producer => Some("server"),
        SpanKind::Server | SpanKind::Consumer => Some("client"),
        _ => None,
    };
    if let Some(ip) = remote.ip() {
        put(attrs, "network.peer.address", AnyValue::String(ip.to_string()));
        if let Some(side) = side {
            put(attrs, &format!("{side}.address"), AnyValue::String(ip.to_string()));
        }
    }
    if let Some(port) = remote.port {
        put(attrs, "network.peer.port", AnyValue::Int(port.into()));
        if let Some(side) = side {
            put(attrs, &format!("{side}.port"), AnyValue::Int(port.into()));
        }
    }
}

fn status(tags: &mut Vec<KeyValue>) -> Status {
    let mut status = Status::default();
    if let Some(code) = take(tags, "otel.status_code") {
        status.code = match code.to_ascii_uppercase().as_str() {
            "OK" | "STATUS_CODE_OK" => StatusCode::Ok,
            "ERROR" | "STATUS_CODE_ERROR" => StatusCode::Error,
            _ => StatusCode::Unset,
        };
        status.message = take(tags, "otel.status_description").unwrap_or_default();
    }
    // The `error` tag sets the status; unless it only says `true`, it stays an attribute,
    // as the collector's Zipkin receiver keeps it (its text is often the only message).
    if let Some(at) = tags.iter().position(|kv| kv.key == "error" && kv.value.as_str() != Some("false")) {
        let message = match &tags[at].value {
            AnyValue::String(s) if !s.is_empty() && s != "true" => s.clone(),
            _ => String::new(),
        };
        if tags[at].value.as_str() == Some("true") {
            tags.remove(at);
        }
        if status.message.is_empty() {
            status.message = message;
        }
        status.code = StatusCode::Error;
    }
    status
}

/// An annotation as an event. Values written by OpenTelemetry exporters carry attributes:
/// `{"name": {"key": value}}` (the SDKs) or `name|{"key": value}|dropped` (the collector).
fn event(time_unix_nano: u64, value: String) -> Event {
    let plain =
        |name: String| Event { time_unix_nano, name, attributes: Vec::new(), dropped_attributes_count: 0 };
    if value.starts_with('{')
        && let Ok(serde_json::Value::Object(outer)) = serde_json::from_str(&value)
        && outer.len() == 1
        && let Some((name, serde_json::Value::Object(attrs))) = outer.into_iter().next()
    {
        return Event { time_unix_nano, name, attributes: json_attrs(attrs), dropped_attributes_count: 0 };
    }
    let parts: Vec<&str> = value.split('|').collect();
    if parts.len() >= 3
        && let Ok(dropped) = parts[parts.len() - 1].parse::<u32>()
        && let Ok(serde_json::Value::Object(attrs)) =
            serde_json::from_str(&parts[1..parts.len() - 1].join("|"))
    {
        return Event {
            time_unix_nano,
            name: parts[0].to_owned(),
            attributes: json_attrs(attrs),
            dropped_attributes_count: dropped,
        };
    }
    plain(value)
}

fn json_attrs(attrs: serde_json::Map<String, serde_json::Value>) -> Vec<KeyValue> {
    attrs.into_iter().filter_map(|(k, v)| json_value(v, 0).map(|v| KeyValue::new(k, v))).collect()
}

fn json_value(v: serde_json::Value, depth: usize) -> Option<AnyValue> {
    use serde_json::Value as J;
    Some(match v {
        J::Null => return None,
        J::Bool(b) => AnyValue::Bool(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            None => AnyValue::Double(n.as_f64()?),
        },
        J::String(s) => AnyValue::String(s),
        J::Array(items) if depth < strand_otlp::MAX_VALUE_DEPTH => {
            AnyValue::Array(items.into_iter().filter_map(|v| json_value(v, depth + 1)).collect())
        }
        other => AnyValue::String(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_values_from_exporters_keep_their_attributes() {
        let e = event(5, r#"{"retry": {"attempt": 2, "reason": "timeout", "ok": false}}"#.into());
        assert_eq!(e.name, "retry");
        assert_eq!(e.attributes.len(), 3);
        assert_eq!(e.attributes[0], KeyValue::new("attempt", AnyValue::Int(2)));
        let e = event(5, r#"cache miss|{"key":"a|b"}|3"#.into());
        assert_eq!(e.name, "cache miss");
        assert_eq!(e.attributes, vec![KeyValue::new("key", AnyValue::String("a|b".into()))]);
        assert_eq!(e.dropped_attributes_count, 3);
        assert_eq!(event(5, "cs".into()).name, "cs");
        assert_eq!(event(5, "{not json".into()).name, "{not json");
    }

    #[test]
    fn shared_ids_are_stable_and_distinct() {
        let t = TraceId([7; 16]);
        let s = SpanId([9; 8]);
        assert_eq!(shared_server_id(t, s), shared_server_id(t, s));
        assert_ne!(shared_server_id(t, s), s);
        assert_ne!(shared_server_id(t, s), shared_server_id(TraceId([8; 16]), s));
    }
}
