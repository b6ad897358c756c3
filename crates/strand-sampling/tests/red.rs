//! RED metrics and service-graph edges.

use std::sync::Arc;

use strand_core::metrics::SampleValue;
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
fn operations_fold_into_other_and_histograms_are_capped() {
    let lim = RedLimits {
        max_operations_per_service: 2,
        max_histogram_operations_per_service: 1,
        ..RedLimits::default()
    };
    let m = RedMetrics::new(lim, T0);
    for (i, name) in ["a", "b", "c", "d", "a"].iter().enumerate() {
        m.observe(&one("svc\"x", 1, i as u8 + 1, None, name, 3, *name == "d"), T0);
    }
    let families = m.metric_families();
    let family = |name: &str| families.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("{name}"));
    let requests = family("strand_span_requests_total");
    let cell = |op: &str, status: &str| {
        requests.value(&[
            ("service", "svc\"x"),
            ("operation", op),
            ("span_kind", "server"),
            ("status", status),
        ])
    };
    assert_eq!(cell("a", "unset"), Some(2.0));
    assert_eq!(cell("b", "unset"), Some(1.0));
    assert_eq!(cell("other", "unset"), Some(1.0), "c folds into other");
    assert_eq!(cell("other", "error"), Some(1.0), "d folds into other");
    assert_eq!(cell("c", "unset"), None);
    // Histograms: only the first operation has its own; b's durations join other's, and
    // statuses are merged.
    let durations = family("strand_span_duration_seconds");
    let histogram = |op: &str| {
        durations.samples.iter().find_map(|s| {
            let l: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            (l == [("service", "svc\"x"), ("operation", op), ("span_kind", "server")]).then_some(&s.value)
        })
    };
    let Some(SampleValue::Histogram { buckets, sum, count }) = histogram("a") else {
        panic!("histogram of a: {durations:?}")
    };
    assert_eq!(*count, 2);
    assert!((sum - 0.006).abs() < 1e-12, "{sum}");
    // 3 ms lands in the 4 ms bucket; counts are cumulative.
    assert_eq!(&buckets[..3], &[(0.002, 0), (0.004, 2), (0.006, 2)]);
    assert!(histogram("b").is_none(), "b has no histogram of its own");
    assert!(
        matches!(histogram("other"), Some(SampleValue::Histogram { count: 3, .. })),
        "b, c and d (whatever their status) under other"
    );
    assert_eq!(durations.samples.len(), 2, "a and other");
}

#[test]
fn a_retried_batch_is_counted_once() {
    let m = RedMetrics::new(RedLimits::default(), T0);
    let batch = one("api", 7, 1, None, "POST /reports", 5, false);
    m.observe(&batch, T0);
    // The client was told 429 and sent the same spans again a second later.
    m.observe(&batch, T0 + SEC);
    let families = m.metric_families();
    let requests = families.iter().find(|f| f.name == "strand_span_requests_total").expect("requests");
    let labels =
        [("service", "api"), ("operation", "POST /reports"), ("span_kind", "server"), ("status", "unset")];
    assert_eq!(requests.value(&labels), Some(1.0));
    // A new span of the same operation still counts.
    m.observe(&one("api", 8, 1, None, "POST /reports", 5, false), T0 + 2 * SEC);
    let families = m.metric_families();
    let requests = families.iter().find(|f| f.name == "strand_span_requests_total").expect("requests");
    assert_eq!(requests.value(&labels), Some(2.0));
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

#[test]
fn series_count_each_points_window_at_minute_resolution() {
    use strand_sampling::red::SeriesQuery;
    // T0 is on a minute boundary plus 40 s; counting starts a minute earlier.
    let start = T0 - 60 * SEC;
    let m = RedMetrics::new(RedLimits::default(), start);
    // Minute of T0: 10 calls to GET /x (2 failing, 100 ms); ten minutes later 30 calls of 20 ms,
    // and 5 calls to another operation and 5 client spans (another kind).
    for i in 0..10u8 {
        m.observe(&one("api", i, 1, None, "GET /x", 100, i < 2), T0 + u64::from(i));
    }
    let later = T0 + 600 * SEC;
    for i in 0..30u8 {
        m.observe(&one("api", 100 + i, 1, None, "GET /x", 20, false), later + u64::from(i));
    }
    for i in 0..5u8 {
        m.observe(&one("api", 200 + i, 1, None, "GET /y", 20, false), later + u64::from(i));
        let mut client = one("api", 210 + i, 1, None, "call", 20, false);
        client.resource_spans[0].scope_spans[0].spans[0].kind = SpanKind::Client;
        m.observe(&client, later + u64::from(i));
    }
    m.observe(&one("other-service", 250, 1, None, "GET /", 1, false), later);
    let now = later + 90 * SEC;
    let minute = 60 * SEC;
    // Points: before anything, just after the first burst, after the second, and now.
    let points = [T0 - 50 * SEC, T0 + minute, later + minute, now];
    let services = ["api".to_string()];
    let q = SeriesQuery {
        services: &services,
        kinds: &[SpanKind::Server],
        by_operation: false,
        points: &points,
        window: 5 * minute,
        quantile: 0.5,
    };
    let series = m.series(&q, now);
    assert_eq!(series.len(), 1, "one series for the one service asked: {series:?}");
    let got: Vec<(u64, u64)> = series[0].points.iter().map(|p| (p.requests, p.errors)).collect();
    // The 5-minute window before each point. Before the service's first span it has no
    // point (as Prometheus has no sample); then the first burst; the second (the first is
    // over 5 minutes older); the second again (now is 90 s later).
    assert_eq!(got, vec![(10, 2), (35, 0), (35, 0)]);
    assert_eq!(series[0].points[0].at, T0 + minute);
    let p50 = series[0].points[0].quantile_seconds.expect("first burst");
    assert!((0.05..=0.1).contains(&p50), "p50 {p50} in the 50–100 ms bucket");
    // Grouped by operation, with client spans too: a series per operation.
    let q = SeriesQuery { by_operation: true, kinds: &[], ..q };
    let series = m.series(&q, now);
    let ops: Vec<(Option<&str>, u64)> =
        series.iter().map(|s| (s.operation.as_deref(), s.points.last().map_or(0, |p| p.requests))).collect();
    assert_eq!(ops, vec![(Some("GET /x"), 30), (Some("GET /y"), 5), (Some("call"), 5)]);
}
