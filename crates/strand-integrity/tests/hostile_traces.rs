//! A trace broken in thousands of places is described by a bounded number of findings,
//! each naming a bounded number of spans (and only the first pieces are searched for a
//! likely caller, so the analysis stays linear in the trace).

use std::sync::Arc;

use strand_core::{
    AnyValue, FindingKind, KeyValue, Resource, ResourceSpans, Scope, ScopeSpans, Span, SpanBatch, SpanId,
    SpanKind, TraceId,
};
use strand_integrity::observer::{Observer, ObserverConfig};

const SECOND: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SECOND;

fn batch(spans: Vec<Span>) -> SpanBatch {
    SpanBatch {
        resource_spans: vec![ResourceSpans {
            resource: Arc::new(Resource {
                attributes: vec![KeyValue::new("service.name", AnyValue::String("worker".into()))],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans { scope: Arc::new(Scope::default()), spans }],
        }],
    }
}

fn id(n: u64) -> SpanId {
    SpanId((n | 1 << 63).to_be_bytes())
}

#[test]
fn thousands_of_orphans_give_bounded_findings() {
    let trace = TraceId([9; 16]);
    let root = Span::new(trace, id(0), "root", T0, T0 + SECOND);
    // 1,000 spans under one absent parent, and 20,000 each under its own.
    let mut spans = vec![root];
    spans.extend((1..=1_000u64).map(|n| Span {
        parent_span_id: Some(id(999_999)),
        ..Span::new(trace, id(n), "sibling", T0 + 1, T0 + 2)
    }));
    spans.extend((1_001..=21_000u64).map(|n| Span {
        parent_span_id: Some(id(1_000_000 + n)),
        kind: SpanKind::Internal,
        ..Span::new(trace, id(n), "orphan", T0 + n, T0 + n + 10)
    }));
    let mut obs = Observer::new(ObserverConfig::default());
    obs.observe(&batch(spans), T0);
    let recorded = obs.tick(T0 + 31 * SECOND);
    let findings = &recorded[0].findings;
    assert!(findings.iter().all(|f| f.kind == FindingKind::MissingParent));
    assert_eq!(findings.len(), 32, "at most 32 findings of a kind");
    assert!(findings.last().is_some_and(|f| f.message.contains("more like it")), "{:?}", findings.last());
    assert!(findings.iter().all(|f| f.span_ids.len() <= 32));
    let siblings =
        findings.iter().find(|f| f.message.contains("sibling")).expect("the big group is among the first");
    assert!(siblings.message.contains("(968 more spans)"), "{}", siblings.message);
}
