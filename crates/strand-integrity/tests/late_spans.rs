//! A trace is analysed again when spans arrive after it settled, and when the store holds
//! spans the stream did not bring: a break that turns out not to be one is withdrawn.

use std::sync::Arc;

use strand_core::{
    FindingKind, Resource, ResourceSpans, Scope, ScopeSpans, Span, SpanBatch, SpanId, SpanKind, TraceId,
};
use strand_integrity::observer::{Observer, ObserverConfig};
use strand_integrity::span::{Interner, Lite};

const SECOND: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SECOND;

/// The server's default settings.
fn observer() -> Observer {
    Observer::new(ObserverConfig::default())
}

fn span(id: u8, parent: Option<u8>, kind: SpanKind) -> Span {
    let trace = TraceId([7; 16]);
    Span {
        parent_span_id: parent.map(|p| SpanId([p; 8])),
        kind,
        ..Span::new(trace, SpanId([id; 8]), format!("op-{id}"), T0 + u64::from(id), T0 + 1000)
    }
}

fn batch(service: &str, spans: Vec<Span>) -> SpanBatch {
    let resource = Resource {
        attributes: vec![strand_core::KeyValue::new(
            "service.name",
            strand_core::AnyValue::String(service.into()),
        )],
        ..Resource::default()
    };
    SpanBatch {
        resource_spans: vec![ResourceSpans {
            resource: Arc::new(resource),
            scope_spans: vec![ScopeSpans { scope: Arc::new(Scope::default()), spans }],
        }],
    }
}

#[test]
fn a_late_parent_withdraws_the_missing_parent_finding() {
    let mut obs = observer();
    obs.observe(&batch("gateway", vec![span(1, None, SpanKind::Server)]), T0);
    obs.observe(&batch("worker", vec![span(3, Some(2), SpanKind::Internal)]), T0);
    let recorded = obs.tick(T0 + 31 * SECOND);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].findings[0].kind, FindingKind::MissingParent);
    assert!(!obs.is_pending(&TraceId([7; 16])));

    // The parent arrives two minutes later: the trace settles again, whole.
    obs.observe(&batch("gateway", vec![span(2, Some(1), SpanKind::Internal)]), T0 + 120 * SECOND);
    assert!(obs.is_pending(&TraceId([7; 16])), "a late span makes the trace settle again");
    assert!(obs.tick(T0 + 121 * SECOND).is_empty(), "not before the settle time");
    let recorded = obs.tick(T0 + 151 * SECOND);
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].findings.is_empty(), "withdrawn: {:?}", recorded[0].findings);
}

#[test]
fn spans_read_back_from_the_store_complete_a_trace() {
    let mut obs = observer();
    // After a restart the stream brings only the child; its parent is in the store.
    obs.observe(&batch("worker", vec![span(3, Some(2), SpanKind::Internal)]), T0);
    let recorded = obs.tick(T0 + 31 * SECOND);
    assert_eq!(recorded[0].findings[0].kind, FindingKind::MissingRoot);
    let mut strings = Interner::default();
    let stored =
        batch("gateway", vec![span(1, None, SpanKind::Server), span(2, Some(1), SpanKind::Internal)]);
    let rs = &stored.resource_spans[0];
    let lites: Vec<Lite> =
        rs.scope_spans[0].spans.iter().map(|s| Lite::of(s, &rs.resource, &mut strings)).collect();
    let recorded = obs.merge_stored(TraceId([7; 16]), lites, T0 + 32 * SECOND);
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].findings.is_empty(), "{:?}", recorded[0].findings);
    // Spans it already has change nothing.
    let again =
        Lite::of(&span(3, Some(2), SpanKind::Internal), &stored.resource_spans[0].resource, &mut strings);
    assert!(obs.merge_stored(TraceId([7; 16]), vec![again], T0 + 33 * SECOND).is_empty());
}
