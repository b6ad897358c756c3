//! OTLP ⇄ Strand model conversion: the one place where OTLP span types meet the core model.
//!
//! [`from_request`] validates and converts an `ExportTraceServiceRequest`: a span with an
//! invalid id is rejected on its own (and described in [`Rejections`]) while the rest of
//! the request is kept. [`to_resource_spans`] turns stored spans back into OTLP, which is
//! also the shape of the native JSON API.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as pc;
use opentelemetry_proto::tonic::resource::v1 as pr;
use opentelemetry_proto::tonic::trace::v1 as pt;
use strand_core::{
    AnyValue, Event, KeyValue, Link, Resource, ResourceSpans, Scope, ScopeSpans, Span, SpanBatch, SpanId,
    SpanKind, Status, StatusCode, TraceId,
};

pub use opentelemetry_proto::tonic as proto;

pub mod json_ids;
pub mod logs;

/// How deeply arrays and key-value lists may nest before a value is rejected; guards the
/// recursion against hostile input.
pub const MAX_VALUE_DEPTH: usize = 32;

/// Spans of a request that were not accepted, for the OTLP `partial_success` answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejections {
    /// How many spans were rejected.
    pub count: u64,
    /// Why, for the first few (at most [`Rejections::MAX_MESSAGES`]).
    pub messages: Vec<String>,
    /// What was rejected, for the message: spans unless set.
    what: &'static str,
}

impl Rejections {
    /// How many individual reasons are kept in the message.
    pub const MAX_MESSAGES: usize = 5;

    /// Records one rejected span and why.
    pub fn push(&mut self, msg: String) {
        self.count += 1;
        if self.messages.len() < Self::MAX_MESSAGES {
            self.messages.push(msg);
        }
    }

    /// Records one rejected log record and why.
    pub fn push_record(&mut self, msg: String) {
        self.what = "log records";
        self.push(msg);
    }

    /// The OTLP `error_message`: the reasons joined, with a count of the rest.
    pub fn message(&self) -> String {
        let mut msg = self.messages.join("; ");
        let rest = self.count.saturating_sub(self.messages.len() as u64);
        if rest > 0 {
            let what = if self.what.is_empty() { "spans" } else { self.what };
            msg.push_str(&format!("; and {rest} more rejected {what}"));
        }
        msg
    }
}

/// Converts a request, rejecting invalid spans one by one.
///
/// A span is rejected when its trace id or span id is missing, of the wrong length or
/// all zero, when its parent span id is neither empty nor a valid 8-byte id, when a link
/// carries an invalid id, or when an attribute value nests deeper than
/// [`MAX_VALUE_DEPTH`]. Empty resource and scope groups are dropped.
pub fn from_request(req: ExportTraceServiceRequest) -> (SpanBatch, Rejections) {
    let mut rejections = Rejections::default();
    let mut batch = SpanBatch::default();
    for (ri, rs) in req.resource_spans.into_iter().enumerate() {
        let resource = match convert_resource(rs.resource, rs.schema_url) {
            Ok(r) => r,
            Err(e) => {
                let n: usize = rs.scope_spans.iter().map(|s| s.spans.len()).sum();
                for _ in 0..n {
                    rejections.push(format!("resource {ri}: attributes: {e}"));
                }
                continue;
            }
        };
        let mut scope_spans = Vec::with_capacity(rs.scope_spans.len());
        for (si, ss) in rs.scope_spans.into_iter().enumerate() {
            let scope = match convert_scope(ss.scope, ss.schema_url) {
                Ok(s) => s,
                Err(e) => {
                    for _ in 0..ss.spans.len() {
                        rejections.push(format!("resource {ri} scope {si}: attributes: {e}"));
                    }
                    continue;
                }
            };
            let mut spans = Vec::with_capacity(ss.spans.len());
            for (pi, span) in ss.spans.into_iter().enumerate() {
                match convert_span(span) {
                    Ok(span) => spans.push(span),
                    Err(e) => rejections.push(format!("resource {ri} scope {si} span {pi}: {e}")),
                }
            }
            if !spans.is_empty() {
                scope_spans.push(ScopeSpans { scope, spans });
            }
        }
        if !scope_spans.is_empty() {
            batch.resource_spans.push(ResourceSpans { resource, scope_spans });
        }
    }
    (batch, rejections)
}

fn convert_resource(resource: Option<pr::Resource>, schema_url: String) -> Result<Arc<Resource>, String> {
    let resource = resource.unwrap_or_default();
    Ok(Arc::new(Resource {
        attributes: convert_attrs(resource.attributes)?,
        dropped_attributes_count: resource.dropped_attributes_count,
        schema_url,
    }))
}

fn convert_scope(scope: Option<pc::InstrumentationScope>, schema_url: String) -> Result<Arc<Scope>, String> {
    let scope = scope.unwrap_or_default();
    Ok(Arc::new(Scope {
        name: scope.name,
        version: scope.version,
        attributes: convert_attrs(scope.attributes)?,
        dropped_attributes_count: scope.dropped_attributes_count,
        schema_url,
    }))
}

fn convert_span(s: pt::Span) -> Result<Span, String> {
    let trace_id = TraceId::from_slice(&s.trace_id).map_err(|e| e.to_string())?;
    let span_id = SpanId::from_slice(&s.span_id).map_err(|e| e.to_string())?;
    let parent_span_id = if s.parent_span_id.is_empty() {
        None
    } else {
        Some(SpanId::from_slice(&s.parent_span_id).map_err(|e| format!("parent_{e}"))?)
    };
    let attributes = convert_attrs(s.attributes).map_err(|e| format!("attributes: {e}"))?;
    let mut events = Vec::with_capacity(s.events.len());
    for (i, e) in s.events.into_iter().enumerate() {
        events.push(Event {
            time_unix_nano: e.time_unix_nano,
            name: e.name,
            attributes: convert_attrs(e.attributes).map_err(|err| format!("event {i}: {err}"))?,
            dropped_attributes_count: e.dropped_attributes_count,
        });
    }
    let mut links = Vec::with_capacity(s.links.len());
    for (i, l) in s.links.into_iter().enumerate() {
        links.push(Link {
            trace_id: TraceId::from_slice(&l.trace_id).map_err(|e| format!("link {i}: {e}"))?,
            span_id: SpanId::from_slice(&l.span_id).map_err(|e| format!("link {i}: {e}"))?,
            trace_state: l.trace_state,
            attributes: convert_attrs(l.attributes).map_err(|e| format!("link {i}: {e}"))?,
            dropped_attributes_count: l.dropped_attributes_count,
            flags: l.flags,
        });
    }
    let status = s.status.unwrap_or_default();
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: s.trace_state,
        flags: s.flags,
        name: s.name,
        kind: SpanKind::from_i32(s.kind),
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes,
        dropped_attributes_count: s.dropped_attributes_count,
        events,
        dropped_events_count: s.dropped_events_count,
        links,
        dropped_links_count: s.dropped_links_count,
        status: Status { code: StatusCode::from_i32(status.code), message: status.message },
    })
}

pub(crate) fn convert_attrs(attrs: Vec<pc::KeyValue>) -> Result<Vec<KeyValue>, String> {
    attrs.into_iter().map(|kv| convert_kv(kv, 0)).collect()
}

fn convert_kv(kv: pc::KeyValue, depth: usize) -> Result<KeyValue, String> {
    Ok(KeyValue { value: convert_value(kv.value, depth)?, key: kv.key })
}

pub(crate) fn convert_value(v: Option<pc::AnyValue>, depth: usize) -> Result<AnyValue, String> {
    use pc::any_value::Value as V;
    if depth > MAX_VALUE_DEPTH {
        return Err(format!("value nests deeper than {MAX_VALUE_DEPTH} levels"));
    }
    Ok(match v.and_then(|v| v.value) {
        None | Some(V::StringValueStrindex(_)) => AnyValue::Empty,
        Some(V::StringValue(s)) => AnyValue::String(s),
        Some(V::BoolValue(b)) => AnyValue::Bool(b),
        Some(V::IntValue(i)) => AnyValue::Int(i),
        Some(V::DoubleValue(d)) => AnyValue::Double(d),
        Some(V::BytesValue(b)) => AnyValue::Bytes(b),
        Some(V::ArrayValue(a)) => AnyValue::Array(
            a.values.into_iter().map(|v| convert_value(Some(v), depth + 1)).collect::<Result<_, _>>()?,
        ),
        Some(V::KvlistValue(l)) => AnyValue::KvList(
            l.values.into_iter().map(|kv| convert_kv(kv, depth + 1)).collect::<Result<_, _>>()?,
        ),
    })
}

/// Converts a batch (for instance a stored trace regrouped by
/// [`strand_core::Trace::to_batch`]) back into OTLP resource spans.
pub fn to_resource_spans(batch: &SpanBatch) -> Vec<pt::ResourceSpans> {
    batch
        .resource_spans
        .iter()
        .map(|rs| pt::ResourceSpans {
            resource: Some(resource_to_otlp(&rs.resource)),
            schema_url: rs.resource.schema_url.clone(),
            scope_spans: rs
                .scope_spans
                .iter()
                .map(|ss| pt::ScopeSpans {
                    scope: Some(scope_to_otlp(&ss.scope)),
                    schema_url: ss.scope.schema_url.clone(),
                    spans: ss.spans.iter().map(span_to_otlp).collect(),
                })
                .collect(),
        })
        .collect()
}

fn resource_to_otlp(r: &Resource) -> pr::Resource {
    pr::Resource {
        attributes: attrs_to_otlp(&r.attributes),
        dropped_attributes_count: r.dropped_attributes_count,
        entity_refs: Vec::new(),
    }
}

fn scope_to_otlp(s: &Scope) -> pc::InstrumentationScope {
    pc::InstrumentationScope {
        name: s.name.clone(),
        version: s.version.clone(),
        attributes: attrs_to_otlp(&s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
    }
}

/// Converts one span to OTLP.
pub fn span_to_otlp(s: &Span) -> pt::Span {
    pt::Span {
        trace_id: s.trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
        flags: s.flags,
        name: s.name.clone(),
        kind: s.kind as i32,
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: attrs_to_otlp(&s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
        events: s
            .events
            .iter()
            .map(|e| pt::span::Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name.clone(),
                attributes: attrs_to_otlp(&e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: s.dropped_events_count,
        links: s
            .links
            .iter()
            .map(|l| pt::span::Link {
                trace_id: l.trace_id.0.to_vec(),
                span_id: l.span_id.0.to_vec(),
                trace_state: l.trace_state.clone(),
                attributes: attrs_to_otlp(&l.attributes),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            })
            .collect(),
        dropped_links_count: s.dropped_links_count,
        status: Some(pt::Status { message: s.status.message.clone(), code: s.status.code as i32 }),
    }
}

/// Converts attributes to OTLP key-values.
pub fn attrs_to_otlp(attrs: &[KeyValue]) -> Vec<pc::KeyValue> {
    attrs
        .iter()
        .map(|kv| pc::KeyValue {
            key: kv.key.clone(),
            value: Some(value_to_otlp(&kv.value)),
            key_strindex: 0,
        })
        .collect()
}

pub(crate) fn value_to_otlp(v: &AnyValue) -> pc::AnyValue {
    use pc::any_value::Value as V;
    let value = match v {
        AnyValue::Empty => None,
        AnyValue::String(s) => Some(V::StringValue(s.clone())),
        AnyValue::Bool(b) => Some(V::BoolValue(*b)),
        AnyValue::Int(i) => Some(V::IntValue(*i)),
        AnyValue::Double(d) => Some(V::DoubleValue(*d)),
        AnyValue::Bytes(b) => Some(V::BytesValue(b.clone())),
        AnyValue::Array(a) => {
            Some(V::ArrayValue(pc::ArrayValue { values: a.iter().map(value_to_otlp).collect() }))
        }
        AnyValue::KvList(l) => Some(V::KvlistValue(pc::KeyValueList { values: attrs_to_otlp(l) })),
    };
    pc::AnyValue { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace_id: Vec<u8>, span_id: Vec<u8>) -> pt::Span {
        pt::Span { trace_id, span_id, name: "op".into(), ..Default::default() }
    }

    fn request(spans: Vec<pt::Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![pt::ResourceSpans {
                scope_spans: vec![pt::ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn invalid_spans_are_rejected_one_by_one() {
        let req = request(vec![
            span(vec![1; 16], vec![2; 8]),
            span(vec![0; 16], vec![2; 8]),
            span(vec![1; 16], vec![]),
            span(vec![1; 15], vec![2; 8]),
        ]);
        let (batch, rej) = from_request(req);
        assert_eq!(batch.span_count(), 1);
        assert_eq!(rej.count, 3);
        assert_eq!(
            rej.message(),
            "resource 0 scope 0 span 1: trace_id must not be all zeroes; \
             resource 0 scope 0 span 2: span_id must be 8 bytes, got 0; \
             resource 0 scope 0 span 3: trace_id must be 16 bytes, got 15"
        );
    }

    #[test]
    fn bad_parent_and_deep_values_are_rejected() {
        let mut bad_parent = span(vec![1; 16], vec![2; 8]);
        bad_parent.parent_span_id = vec![3; 4];
        let mut deep = span(vec![1; 16], vec![3; 8]);
        let mut v = pc::AnyValue { value: Some(pc::any_value::Value::IntValue(1)) };
        for _ in 0..40 {
            v = pc::AnyValue {
                value: Some(pc::any_value::Value::ArrayValue(pc::ArrayValue { values: vec![v] })),
            };
        }
        deep.attributes.push(pc::KeyValue { key: "deep".into(), value: Some(v), key_strindex: 0 });
        let (batch, rej) = from_request(request(vec![bad_parent, deep]));
        assert_eq!(batch.span_count(), 0);
        assert_eq!(rej.count, 2);
        assert!(rej.messages[0].ends_with("parent_span_id must be 8 bytes, got 4"), "{rej:?}");
        assert!(rej.messages[1].contains("nests deeper"), "{rej:?}");
    }

    #[test]
    fn every_value_type_survives_a_round_trip() {
        use pc::any_value::Value as V;
        let values = vec![
            V::StringValue("s".into()),
            V::BoolValue(true),
            V::IntValue(i64::MIN),
            V::DoubleValue(1.5),
            V::BytesValue(vec![0, 255]),
            V::ArrayValue(pc::ArrayValue { values: vec![pc::AnyValue { value: Some(V::IntValue(1)) }] }),
            V::KvlistValue(pc::KeyValueList {
                values: vec![pc::KeyValue {
                    key: "k".into(),
                    value: Some(pc::AnyValue { value: Some(V::StringValue("v".into())) }),
                    key_strindex: 0,
                }],
            }),
        ];
        let mut s = span(vec![1; 16], vec![2; 8]);
        s.parent_span_id = vec![9; 8];
        s.kind = 3;
        s.flags = 0x301;
        s.trace_state = "a=b".into();
        s.status = Some(pt::Status { message: "boom".into(), code: 2 });
        s.dropped_attributes_count = 1;
        s.dropped_events_count = 2;
        s.dropped_links_count = 3;
        s.start_time_unix_nano = 10;
        s.end_time_unix_nano = 20;
        for (i, v) in values.into_iter().enumerate() {
            s.attributes.push(pc::KeyValue {
                key: format!("k{i}"),
                value: Some(pc::AnyValue { value: Some(v) }),
                key_strindex: 0,
            });
        }
        s.events.push(pt::span::Event {
            time_unix_nano: 15,
            name: "ev".into(),
            attributes: s.attributes.clone(),
            dropped_attributes_count: 4,
        });
        s.links.push(pt::span::Link {
            trace_id: vec![5; 16],
            span_id: vec![6; 8],
            trace_state: "x=y".into(),
            attributes: s.attributes.clone(),
            dropped_attributes_count: 5,
            flags: 1,
        });
        let mut req = request(vec![s]);
        req.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.26.0".into();
        req.resource_spans[0].resource = Some(pr::Resource {
            attributes: vec![pc::KeyValue {
                key: "service.name".into(),
                value: Some(pc::AnyValue { value: Some(V::StringValue("svc".into())) }),
                key_strindex: 0,
            }],
            dropped_attributes_count: 7,
            entity_refs: vec![],
        });
        req.resource_spans[0].scope_spans[0].scope = Some(pc::InstrumentationScope {
            name: "lib".into(),
            version: "1.0".into(),
            attributes: vec![],
            dropped_attributes_count: 8,
        });
        req.resource_spans[0].scope_spans[0].schema_url = "scope-schema".into();
        let (batch, rej) = from_request(req.clone());
        assert_eq!(rej.count, 0);
        assert_eq!(batch.resource_spans[0].resource.service_name(), "svc");
        assert_eq!(to_resource_spans(&batch), req.resource_spans);
    }
}
