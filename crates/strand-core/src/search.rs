//! What a trace search asks and answers: the vocabulary shared by the store (which runs
//! searches) and the query APIs (which translate Jaeger, Tempo and native parameters into
//! a [`TraceQuery`]).
//!
//! Semantics, stated once for every API:
//! - Span conditions (service, operation, kind, attributes, status, span duration, time
//!   range) must all hold **on one span**; the trace of such a span matches.
//! - The time range applies to that span's start time (`start <= span start <= end`).
//! - Trace conditions (trace duration) apply to the whole trace.
//! - Results are newest first: by trace start time descending, then trace id ascending.
//! - Pages follow a snapshot (see [`Cursor`]): traces first received after the first page
//!   never appear, and a trace is not returned twice. Known limit of the embedded store: a
//!   span arriving while the pages are read that lands in the same in-memory head as the
//!   rest of its trace and starts earlier (a late root) moves the trace, which can then be
//!   returned again or skipped; spans landing anywhere else do not.

use std::fmt;
use std::str::FromStr;

use crate::ids::TraceId;
use crate::model::{AnyValue, KeyValue, SpanKind, StatusCode, StoredSpan};

/// Where an attribute filter looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum AttrScope {
    /// Anywhere on the span: its attributes, its resource's, its scope's, its events' and
    /// its links' (what Jaeger's tag search does).
    #[default]
    Any,
    /// Span attributes only.
    Span,
    /// Resource attributes only.
    Resource,
}

/// `key = value`, compared as text: `500` matches the integer 500 and the string "500",
/// `true` the boolean.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttrFilter {
    /// Where to look.
    pub scope: AttrScope,
    /// Attribute name.
    pub key: String,
    /// Value, as text.
    pub value: String,
}

/// Span status condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StatusFilter {
    /// Status code ERROR.
    Error,
    /// Anything but ERROR (OK or UNSET).
    Ok,
}

/// A trace search. Build with struct update syntax from [`TraceQuery::default`].
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TraceQuery {
    /// Service (`service.name`) of the matching span.
    pub service: Option<String>,
    /// Span name of the matching span.
    pub operation: Option<String>,
    /// Kind of the matching span.
    pub kind: Option<SpanKind>,
    /// Attribute conditions, all on the matching span.
    pub attributes: Vec<AttrFilter>,
    /// Status of the matching span.
    pub status: Option<StatusFilter>,
    /// Minimum duration of the matching span, inclusive.
    pub min_span_duration_nano: Option<u64>,
    /// Maximum duration of the matching span, inclusive.
    pub max_span_duration_nano: Option<u64>,
    /// Minimum duration of the whole trace, inclusive.
    pub min_trace_duration_nano: Option<u64>,
    /// Maximum duration of the whole trace, inclusive.
    pub max_trace_duration_nano: Option<u64>,
    /// Earliest start of the matching span (0: unbounded).
    pub start_unix_nano: u64,
    /// Latest start of the matching span (`u64::MAX`: unbounded).
    pub end_unix_nano: u64,
    /// Most results in one page.
    pub limit: usize,
    /// Continue after this position (from the previous page's `next_cursor`).
    pub cursor: Option<Cursor>,
}

impl TraceQuery {
    /// A query over all time with the given limit and no conditions.
    pub fn all(limit: usize) -> Self {
        Self { end_unix_nano: u64::MAX, limit, ..Self::default() }
    }
}

/// A query's span conditions, prepared once (attribute values expanded to the forms they
/// match, see [`value_forms`]): what one span must meet for its trace to match.
#[derive(Debug)]
pub struct SpanConditions<'q> {
    q: &'q TraceQuery,
    forms: Vec<Vec<String>>,
}

impl<'q> SpanConditions<'q> {
    /// Prepares the conditions of `q`.
    pub fn new(q: &'q TraceQuery) -> Self {
        Self { q, forms: q.attributes.iter().map(|a| value_forms(&a.value)).collect() }
    }

    /// The forms of each attribute filter's value, in the query's order.
    pub fn forms(&self) -> &[Vec<String>] {
        &self.forms
    }

    /// Whether the span meets every span condition: service, operation, kind, status, span
    /// duration, start within the time range, and each attribute filter in its scope.
    pub fn matches(&self, s: &StoredSpan) -> bool {
        let (q, span) = (self.q, &s.span);
        let duration = span.duration_nanos();
        q.service.as_ref().is_none_or(|svc| s.resource.service_name() == svc)
            && q.operation.as_ref().is_none_or(|op| &span.name == op)
            && q.kind.is_none_or(|k| span.kind == k)
            && match q.status {
                None => true,
                Some(StatusFilter::Error) => span.status.code == StatusCode::Error,
                Some(StatusFilter::Ok) => span.status.code != StatusCode::Error,
            }
            && q.min_span_duration_nano.is_none_or(|m| duration >= m)
            && q.max_span_duration_nano.is_none_or(|m| duration <= m)
            && span.start_time_unix_nano >= q.start_unix_nano
            && span.start_time_unix_nano <= q.end_unix_nano
            && q.attributes.iter().zip(&self.forms).all(|(a, forms)| {
                let hit = |attrs: &[KeyValue]| {
                    attrs.iter().any(|kv| kv.key == a.key && value_matches(&kv.value, forms))
                };
                match a.scope {
                    AttrScope::Span => hit(&span.attributes),
                    AttrScope::Resource => hit(&s.resource.attributes),
                    AttrScope::Any => {
                        hit(&span.attributes)
                            || hit(&s.resource.attributes)
                            || hit(&s.scope.attributes)
                            || span.events.iter().any(|e| hit(&e.attributes))
                            || span.links.iter().any(|l| hit(&l.attributes))
                    }
                }
            })
    }
}

/// Position in a paginated search: the last trace returned (start, id) and the snapshot
/// the first page saw (`as_of`: spans first received later are not counted, so pages
/// neither skip nor repeat traces while data is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// Receive-time watermark of the first page.
    pub as_of_unix_nano: u64,
    /// Start of the last trace returned.
    pub start_unix_nano: u64,
    /// Id of the last trace returned.
    pub trace_id: TraceId,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c1.{:x}.{:x}.{}", self.as_of_unix_nano, self.start_unix_nano, self.trace_id)
    }
}

impl FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("not a cursor returned by this server: {s:?}");
        let mut parts = s.split('.');
        if parts.next() != Some("c1") {
            return Err(bad());
        }
        let mut hex = || parts.next().and_then(|p| u64::from_str_radix(p, 16).ok()).ok_or_else(bad);
        let as_of_unix_nano = hex()?;
        let start_unix_nano = hex()?;
        let trace_id = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self { as_of_unix_nano, start_unix_nano, trace_id })
    }
}

/// Spans of one service in a trace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSpans {
    /// Service name.
    pub name: String,
    /// Its spans in the trace.
    pub span_count: u64,
    /// Its spans with status ERROR.
    pub error_count: u64,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceSummary {
    /// Trace id.
    pub trace_id: TraceId,
    /// Service of the root span (the earliest span without a parent, else the earliest
    /// span).
    pub root_service: String,
    /// Name of the root span.
    pub root_name: String,
    /// Earliest span start.
    pub start_unix_nano: u64,
    /// Latest span end minus earliest start.
    pub duration_nano: u64,
    /// Spans in the trace.
    pub span_count: u64,
    /// Spans with status ERROR.
    pub error_count: u64,
    /// Services, by name.
    pub services: Vec<ServiceSpans>,
}

impl TraceSummary {
    /// The summary of a trace from its spans (any order; each span once).
    pub fn of(trace_id: TraceId, spans: &[StoredSpan]) -> Self {
        let start_unix_nano = spans.iter().map(|s| s.span.start_time_unix_nano).min().unwrap_or(0);
        // A span ending before it starts (a clock step) counts as ending at its start.
        let end = spans
            .iter()
            .map(|s| s.span.end_time_unix_nano.max(s.span.start_time_unix_nano))
            .max()
            .unwrap_or(0);
        // A span without a parent beats one with a parent, then the earlier start wins.
        let root =
            spans.iter().min_by_key(|s| (s.span.parent_span_id.is_some(), s.span.start_time_unix_nano));
        let mut services: Vec<ServiceSpans> = Vec::new();
        for s in spans {
            let name = s.resource.service_name();
            let error = u64::from(s.span.status.code == StatusCode::Error);
            match services.iter_mut().find(|x| x.name == name) {
                Some(x) => {
                    x.span_count += 1;
                    x.error_count += error;
                }
                None => {
                    services.push(ServiceSpans { name: name.to_owned(), span_count: 1, error_count: error })
                }
            }
        }
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            trace_id,
            root_service: root.map(|r| r.resource.service_name().to_owned()).unwrap_or_default(),
            root_name: root.map(|r| r.span.name.clone()).unwrap_or_default(),
            start_unix_nano,
            duration_nano: end.saturating_sub(start_unix_nano),
            span_count: spans.len() as u64,
            error_count: services.iter().map(|s| s.error_count).sum(),
            services,
        }
    }
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SearchPage {
    /// Matching traces, newest first.
    pub traces: Vec<TraceSummary>,
    /// Where the next page starts; `None` when this is the last page.
    pub next_cursor: Option<Cursor>,
    /// Limits that changed the query (a limit or range reduced to the configured maximum).
    pub warnings: Vec<String>,
}

/// An operation (span name) of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Operation {
    /// Span name.
    pub name: String,
    /// Span kind it was seen with.
    pub span_kind: SpanKind,
}

/// A caller → callee edge between services.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DependencyEdge {
    /// Calling service.
    pub parent: String,
    /// Called service.
    pub child: String,
    /// Calls: child spans whose parent span is in the parent service (span links are not
    /// counted).
    pub call_count: u64,
    /// Of which the child span had status ERROR.
    pub error_count: u64,
}

impl DependencyEdge {
    /// Edges from `(parent, child) → (calls, errors)` counts, sorted by parent then child.
    pub fn from_counts(counts: impl IntoIterator<Item = ((String, String), (u64, u64))>) -> Vec<Self> {
        let mut out: Vec<Self> = counts
            .into_iter()
            .map(|((parent, child), (call_count, error_count))| Self {
                parent,
                child,
                call_count,
                error_count,
            })
            .collect();
        out.sort_by(|a, b| (&a.parent, &a.child).cmp(&(&b.parent, &b.child)));
        out
    }
}

/// A time range, both ends inclusive, in Unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimeRange {
    /// Start.
    pub start_unix_nano: u64,
    /// End.
    pub end_unix_nano: u64,
}

impl TimeRange {
    /// All of time.
    pub const ALL: Self = Self { start_unix_nano: 0, end_unix_nano: u64::MAX };

    /// Whether `[start, end]` overlaps this range.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        start <= self.end_unix_nano && end >= self.start_unix_nano
    }
}

/// The text an attribute value is compared as (see [`AttrFilter`]); `None` for values
/// that are not searchable (bytes, arrays, maps, empty).
pub fn value_text(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::String(s) => Some(s.clone()),
        AnyValue::Bool(b) => Some(b.to_string()),
        AnyValue::Int(i) => Some(i.to_string()),
        AnyValue::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

/// The texts a filter value stands for: itself, and its canonical number or boolean form
/// (`72.50` also stands for `72.5`, `+5` for `5`), so numbers compare by value.
pub fn value_forms(want: &str) -> Vec<String> {
    let mut forms = vec![want.to_owned()];
    let mut add = |f: String| {
        if !forms.contains(&f) {
            forms.push(f);
        }
    };
    if let Ok(i) = want.parse::<i64>() {
        add(i.to_string());
    }
    if let Ok(d) = want.parse::<f64>()
        && d.is_finite()
    {
        add(d.to_string());
    }
    if let Ok(b) = want.parse::<bool>() {
        add(b.to_string());
    }
    forms
}

/// Whether `v` matches a filter value given as its [`value_forms`].
pub fn value_matches(v: &AnyValue, forms: &[String]) -> bool {
    value_text(v).is_some_and(|t| forms.contains(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            as_of_unix_nano: 17,
            start_unix_nano: u64::MAX,
            trace_id: "0102030405060708090a0b0c0d0e0f10".parse().expect("id"),
        };
        assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
        for bad in ["", "c1", "c2.1.1.0102030405060708090a0b0c0d0e0f10", "c1.x.1.01", "c1.1.1.0102.extra"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn values_compare_as_text_typed() {
        let m = |v: AnyValue, want: &str| value_matches(&v, &value_forms(want));
        assert!(m(AnyValue::Int(500), "500"));
        assert!(!m(AnyValue::Int(500), "500.5"));
        assert!(m(AnyValue::Double(72.5), "72.50"));
        assert!(m(AnyValue::Bool(true), "true"));
        assert!(m(AnyValue::String("500".into()), "500"));
        assert!(!m(AnyValue::Bytes(vec![1]), "1"));
        assert_eq!(value_text(&AnyValue::Double(72.5)).as_deref(), Some("72.5"));
    }
}
