//! RED metrics and service-graph edges.

use std::sync::Arc;

use strand_core::{
    AnyValue, KeyValue, Resource, ResourceSpans, Scope, ScopeSpans, Span, SpanBatch, SpanId, SpanKind,
    Status, StatusCode, TraceId,
};
use strand_sampling::red::{RedLimits, RedMetrics};

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_040 * SEC;

fn one(service: &str, trace: u8, id: u8, parent: Option<u8>, name: &str, ms: u64, error: bool) -> SpanBatch {
    let span = Span {
        parent_span_id: parent.map(|p| SpanId([p; 8])),
        kind: SpanKind::Server,
        status: Status {
            code: if error { StatusCode::Error } else { StatusCode::Unset },
            message: String::new(),
        },
        ..Span::new(TraceId([trace; 16]), SpanId([id; 8]), name, T0, T0 + ms * 1_000_000)
    };
    let resource = Resource {
        attributes: vec![KeyValue::new("service.name", AnyValue::String(service.into()))],
        ..Resource::default()
    };
    SpanBatch {
        resource_spans: vec![ResourceSpans {
            resource: Arc::new(resource),
            scope_spans: vec![ScopeSpans { scope: Arc::new(Scope::default()), spans: vec![span] }],
        }],
    }
}

#[test]
fn edges_pair_parent_and_child_in_either_order() {
    let m = RedMetrics::new(RedLimits::default(), T0);
    m.observe(&one("gateway", 1, 1, None, "GET /", 10, false), T0);
    m.observe(&one("users", 1, 2, Some(1), "lookup", 5, false), T0);
    // Child first, parent later.
    m.observe(&one("notify", 2, 2, Some(1), "sms", 5, true), T0);
    m.observe(&one("gateway", 2, 1, None, "GET /", 10, false), T0 + SEC);
    // Same service: no edge.
    m.observe(&one("users", 1, 3, Some(2), "db", 1, false), T0);
    assert_eq!(
        m.edges(),
        vec![
            ("gateway".to_string(), "notify".to_string(), 1, 1),
            ("gateway".to_string(), "users".to_string(), 1, 0),
        ]
    );
    // A parent arriving more than two windows after its child no longer pairs.
    let lim = RedLimits { edge_window_nanos: SEC, ..RedLimits::default() };
    let m = RedMetrics::new(lim, T0);
    m.observe(&one("b", 3, 2, Some(1), "x", 1, false), T0);
    m.observe(&one("a", 9, 9, None, "y", 1, false), T0 + SEC);
    m.observe(&one("a", 9, 8, None, "y", 1, false), T0 + 2 * SEC);
    m.observe(&one("a", 3, 1, None, "y", 1, false), T0 + 3 * SEC);
    assert!(m.edges().is_empty());
}

#[test]
fn operations_fold_into_other_and_the_text_format_is_prometheus() {
    let m = RedMetrics::new(RedLimits { max_operations_per_service: 2, ..RedLimits::default() }, T0);
    for (i, name) in ["a", "b", "c", "d", "a"].iter().enumerate() {
        m.observe(&one("svc\"x", 1, i as u8 + 1, None, name, 3, *name == "d"), T0);
    }
    let mut out = String::new();
    m.render_prometheus(&mut out);
    assert!(out.contains(r#"strand_span_requests_total{service="svc\"x",operation="a",span_kind="server",status="unset"} 2"#), "{out}");
    assert!(out.contains(r#"strand_span_requests_total{service="svc\"x",operation="other",span_kind="server",status="unset"} 1"#), "{out}");
    assert!(out.contains(r#"strand_span_requests_total{service="svc\"x",operation="other",span_kind="server",status="error"} 1"#), "{out}");
    assert!(!out.contains("operation=\"c\""));
    // 3 ms lands in the 4 ms bucket; cumulative counts.
    assert!(out.contains(r#"strand_span_duration_seconds_bucket{service="svc\"x",operation="a",span_kind="server",status="unset",le="0.002"} 0"#));
    assert!(out.contains(r#"strand_span_duration_seconds_bucket{service="svc\"x",operation="a",span_kind="server",status="unset",le="0.004"} 2"#));
    assert!(out.contains(r#"strand_span_duration_seconds_count{service="svc\"x",operation="a",span_kind="server",status="unset"} 2"#));
}

#[test]
fn query_covers_the_range_at_minute_resolution() {
    let m = RedMetrics::new(RedLimits::default(), T0);
    for i in 0..10u8 {
        m.observe(&one("api", i, 1, None, "GET /x", 100, i < 2), T0 + u64::from(i) * SEC);
    }
    // Ten minutes later, another 30 requests, none failing.
    let later = T0 + 600 * SEC;
    for i in 0..30u8 {
        m.observe(&one("api", 100 + i, 1, None, "GET /x", 20, false), later + u64::from(i) * SEC);
    }
    let now = later + 60 * SEC;
    let (_, all) = m.query(Some("api"), 3600 * SEC, now);
    assert_eq!((all[0].requests, all[0].errors), (40, 2));
    let (from, recent) = m.query(Some("api"), 5 * 60 * SEC, now);
    assert!(from >= now - 6 * 60 * SEC && from <= now - 5 * 60 * SEC, "from {from}");
    assert_eq!((recent[0].requests, recent[0].errors), (30, 0));
    assert_eq!(recent[0].error_rate, 0.0);
    let p50 = recent[0].p50_ms.expect("has data");
    assert!((10.0..=50.0).contains(&p50), "p50 {p50} within the 10–50 ms bucket");
    assert!(m.query(Some("nobody"), 3600 * SEC, now).1.is_empty());
}
