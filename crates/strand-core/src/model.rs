//! The span model: OTLP's, field for field, without protobuf types.
//!
//! Resources and scopes are shared between the spans that carry them through [`Arc`],
//! so a batch of 512 spans from one SDK holds one copy of its resource.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{SpanId, TraceId};

/// An attribute value: every OTLP `AnyValue` variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum AnyValue {
    /// No value set.
    #[default]
    Empty,
    /// UTF-8 text.
    String(String),
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Double(f64),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A list of values.
    Array(Vec<AnyValue>),
    /// A nested list of key-value pairs.
    KvList(Vec<KeyValue>),
}

impl AnyValue {
    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AnyValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    /// Attribute name.
    pub key: String,
    /// Attribute value.
    pub value: AnyValue,
}

impl KeyValue {
    /// Builds an attribute.
    pub fn new(key: impl Into<String>, value: AnyValue) -> Self {
        Self { key: key.into(), value }
    }
}

/// Finds an attribute's value by key.
pub fn find_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

/// The entity that produced spans (a service instance).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Resource {
    /// Resource attributes; `service.name` among them.
    pub attributes: Vec<KeyValue>,
    /// Attributes the SDK dropped.
    pub dropped_attributes_count: u32,
    /// Schema URL of the `ResourceSpans`.
    pub schema_url: String,
}

impl Resource {
    /// The `service.name` attribute, or `unknown_service` as the OTel spec prescribes.
    pub fn service_name(&self) -> &str {
        find_attr(&self.attributes, "service.name").and_then(AnyValue::as_str).unwrap_or("unknown_service")
    }
}

/// The instrumentation scope (library) that produced spans.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Scope {
    /// Scope name.
    pub name: String,
    /// Scope version.
    pub version: String,
    /// Scope attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes the SDK dropped.
    pub dropped_attributes_count: u32,
    /// Schema URL of the `ScopeSpans`.
    pub schema_url: String,
}

/// Span kind, numbered as in OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[repr(u8)]
pub enum SpanKind {
    /// Not specified.
    #[default]
    Unspecified = 0,
    /// Internal operation.
    Internal = 1,
    /// Server side of a synchronous call.
    Server = 2,
    /// Client side of a synchronous call.
    Client = 3,
    /// Sender of an asynchronous message.
    Producer = 4,
    /// Receiver of an asynchronous message.
    Consumer = 5,
}

impl SpanKind {
    /// Kind from its OTLP number; unknown numbers become `Unspecified`.
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    /// Lowercase name (`server`, `client`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// Status code, numbered as in OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[repr(u8)]
pub enum StatusCode {
    /// Not set.
    #[default]
    Unset = 0,
    /// Explicitly OK.
    Ok = 1,
    /// Error.
    Error = 2,
}

impl StatusCode {
    /// Code from its OTLP number; unknown numbers become `Unset`.
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    /// Lowercase name (`unset`, `ok`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

/// Span status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Status {
    /// The code.
    pub code: StatusCode,
    /// Developer-facing message.
    pub message: String,
}

/// A timestamped event within a span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened, in nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// Event name.
    pub name: String,
    /// Event attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes the SDK dropped.
    pub dropped_attributes_count: u32,
}

/// A link from a span to another span, possibly in another trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Linked trace.
    pub trace_id: TraceId,
    /// Linked span.
    pub span_id: SpanId,
    /// W3C trace state of the link.
    pub trace_state: String,
    /// Link attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes the SDK dropped.
    pub dropped_attributes_count: u32,
    /// W3C trace flags and OTLP link flags.
    pub flags: u32,
}

/// One span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// Trace the span belongs to.
    pub trace_id: TraceId,
    /// The span's own id.
    pub span_id: SpanId,
    /// Parent span; `None` for a root.
    pub parent_span_id: Option<SpanId>,
    /// W3C trace state.
    pub trace_state: String,
    /// W3C trace flags and OTLP span flags.
    pub flags: u32,
    /// Operation name.
    pub name: String,
    /// Span kind.
    pub kind: SpanKind,
    /// Start, nanoseconds since the Unix epoch.
    pub start_time_unix_nano: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_time_unix_nano: u64,
    /// Span attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes the SDK dropped.
    pub dropped_attributes_count: u32,
    /// Events.
    pub events: Vec<Event>,
    /// Events the SDK dropped.
    pub dropped_events_count: u32,
    /// Links.
    pub links: Vec<Link>,
    /// Links the SDK dropped.
    pub dropped_links_count: u32,
    /// Status.
    pub status: Status,
}

impl Span {
    /// A span with an identity, a name and times, and nothing else: no parent, no trace
    /// state or flags, kind unspecified, no attributes, events or links, status unset.
    pub fn new(trace_id: TraceId, span_id: SpanId, name: impl Into<String>, start: u64, end: u64) -> Self {
        Self {
            trace_id,
            span_id,
            parent_span_id: None,
            trace_state: String::new(),
            flags: 0,
            name: name.into(),
            kind: SpanKind::Unspecified,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Status::default(),
        }
    }

    /// Duration in nanoseconds; zero when the end precedes the start.
    pub fn duration_nanos(&self) -> u64 {
        self.end_time_unix_nano.saturating_sub(self.start_time_unix_nano)
    }
}

/// Spans of one scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeSpans {
    /// The scope, shared by its spans.
    pub scope: Arc<Scope>,
    /// The spans.
    pub spans: Vec<Span>,
}

/// Spans of one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSpans {
    /// The resource, shared by its spans.
    pub resource: Arc<Resource>,
    /// Spans grouped by scope.
    pub scope_spans: Vec<ScopeSpans>,
}

/// What one receiver hands on: spans grouped as OTLP groups them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SpanBatch {
    /// Spans grouped by resource and scope.
    pub resource_spans: Vec<ResourceSpans>,
}

impl SpanBatch {
    /// Number of spans in the batch.
    pub fn span_count(&self) -> usize {
        self.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
    }

    /// About the memory the decoded batch holds: its structs and the bytes of its strings
    /// and lists (allocator overhead and spare capacity not counted). For the ingest
    /// memory budget.
    pub fn approx_bytes(&self) -> usize {
        self.resource_spans
            .iter()
            .map(|rs| {
                let scopes = rs.scope_spans.iter().map(|ss| (&*ss.scope, ss.spans.as_slice()));
                grouped_bytes::<ResourceSpans, ScopeSpans, _>(&rs.resource, scopes, span_bytes)
            })
            .sum()
    }

    /// Flattens the batch into stored spans, each with its resource and scope.
    pub fn into_stored(self) -> impl Iterator<Item = StoredSpan> {
        self.resource_spans.into_iter().flat_map(|rs| {
            let resource = rs.resource;
            rs.scope_spans.into_iter().flat_map(move |ss| {
                let resource = resource.clone();
                let scope = ss.scope;
                ss.spans.into_iter().map(move |span| StoredSpan {
                    resource: resource.clone(),
                    scope: scope.clone(),
                    span,
                })
            })
        })
    }
}

/// A span together with the resource and scope it came with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredSpan {
    /// Resource of the span.
    pub resource: Arc<Resource>,
    /// Scope of the span.
    pub scope: Arc<Scope>,
    /// The span.
    pub span: Span,
}

/// A whole trace: its spans in a deterministic order (start time, then span id).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trace {
    /// The trace's id.
    pub trace_id: TraceId,
    /// Its spans, each once.
    pub spans: Vec<StoredSpan>,
}

impl Trace {
    /// Builds a trace, dropping duplicate span ids (the first copy wins) and sorting.
    pub fn from_spans(trace_id: TraceId, spans: Vec<StoredSpan>) -> Self {
        let mut seen = std::collections::HashSet::with_capacity(spans.len());
        let mut spans: Vec<StoredSpan> = spans.into_iter().filter(|s| seen.insert(s.span.span_id)).collect();
        spans.sort_by_key(|s| (s.span.start_time_unix_nano, s.span.span_id));
        Self { trace_id, spans }
    }

    /// Regroups the spans by resource and scope, in first-seen order.
    pub fn to_batch(&self) -> SpanBatch {
        SpanBatch::from_stored(self.spans.iter().cloned())
    }
}

impl SpanBatch {
    /// Groups stored spans by resource and scope (equal content counts as the same), in
    /// first-seen order.
    pub fn from_stored(spans: impl IntoIterator<Item = StoredSpan>) -> Self {
        let mut batch = SpanBatch::default();
        for s in spans {
            let rs_idx = match batch
                .resource_spans
                .iter()
                .rposition(|rs| Arc::ptr_eq(&rs.resource, &s.resource) || *rs.resource == *s.resource)
            {
                Some(i) => i,
                None => {
                    batch
                        .resource_spans
                        .push(ResourceSpans { resource: s.resource, scope_spans: Vec::new() });
                    batch.resource_spans.len() - 1
                }
            };
            let rs = &mut batch.resource_spans[rs_idx];
            let ss_idx = match rs
                .scope_spans
                .iter()
                .rposition(|ss| Arc::ptr_eq(&ss.scope, &s.scope) || *ss.scope == *s.scope)
            {
                Some(i) => i,
                None => {
                    rs.scope_spans.push(ScopeSpans { scope: s.scope, spans: Vec::new() });
                    rs.scope_spans.len() - 1
                }
            };
            rs.scope_spans[ss_idx].spans.push(s.span);
        }
        batch
    }
}

/// Heap bytes of attributes: each pair and its strings, nested values included.
pub(crate) fn attrs_heap_bytes(attrs: &[KeyValue]) -> usize {
    attrs.iter().map(|kv| std::mem::size_of::<KeyValue>() + kv.key.len() + value_heap_bytes(&kv.value)).sum()
}

/// Heap bytes of a value beyond its own size.
pub(crate) fn value_heap_bytes(v: &AnyValue) -> usize {
    match v {
        AnyValue::String(s) => s.len(),
        AnyValue::Bytes(b) => b.len(),
        AnyValue::Empty | AnyValue::Bool(_) | AnyValue::Int(_) | AnyValue::Double(_) => 0,
        AnyValue::Array(items) => {
            items.iter().map(|i| std::mem::size_of::<AnyValue>() + value_heap_bytes(i)).sum()
        }
        AnyValue::KvList(kvs) => attrs_heap_bytes(kvs),
    }
}

/// Bytes of one resource's group (struct `G`) of scope groups (struct `S`), each scope's
/// items measured by `item`. The resource and scopes are counted whole at each batch that
/// holds them.
pub(crate) fn grouped_bytes<'a, G, S, T: 'a>(
    resource: &Resource,
    scopes: impl Iterator<Item = (&'a Scope, &'a [T])>,
    item: impl Fn(&T) -> usize,
) -> usize {
    use std::mem::size_of;
    let resource = size_of::<G>()
        + size_of::<Resource>()
        + attrs_heap_bytes(&resource.attributes)
        + resource.schema_url.len();
    resource
        + scopes
            .map(|(s, items)| {
                size_of::<S>()
                    + size_of::<Scope>()
                    + s.name.len()
                    + s.version.len()
                    + attrs_heap_bytes(&s.attributes)
                    + s.schema_url.len()
                    + items.iter().map(&item).sum::<usize>()
            })
            .sum::<usize>()
}

fn span_bytes(s: &Span) -> usize {
    use std::mem::size_of;
    size_of::<Span>()
        + s.name.len()
        + s.trace_state.len()
        + s.status.message.len()
        + attrs_heap_bytes(&s.attributes)
        + s.events
            .iter()
            .map(|e| size_of::<Event>() + e.name.len() + attrs_heap_bytes(&e.attributes))
            .sum::<usize>()
        + s.links
            .iter()
            .map(|l| size_of::<Link>() + l.trace_state.len() + attrs_heap_bytes(&l.attributes))
            .sum::<usize>()
}
