//! Search semantics of the embedded store, checked in the head, in blocks and after a
//! restart (when blocks' `index.bin` is read back).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use strand_core::{
    AnyValue, AttrFilter, AttrScope, Event, KeyValue, Link, Scope, SpanBatch, SpanId, SpanKind, Status,
    StatusCode, StatusFilter, TimeRange, TraceId, TraceQuery, TraceReader,
};
use strand_store::engine::{Store, StoreConfig};
use strand_store::fs::StdFs;
use strand_store::testdata::{service_batch, span};

fn open(dir: &Path) -> Store {
    Store::open(Arc::new(StdFs), dir, StoreConfig::default()).expect("store opens")
}

fn tid(n: u32) -> TraceId {
    let mut b = [0x11u8; 16];
    b[12..].copy_from_slice(&n.to_be_bytes());
    TraceId(b)
}

fn json_value(v: &serde_json::Value) -> AnyValue {
    match v {
        serde_json::Value::Bool(b) => AnyValue::Bool(*b),
        serde_json::Value::Number(n) if n.is_i64() => AnyValue::Int(n.as_i64().unwrap_or_default()),
        serde_json::Value::Number(n) => AnyValue::Double(n.as_f64().unwrap_or_default()),
        other => AnyValue::String(other.as_str().unwrap_or_default().to_owned()),
    }
}

fn rfc3339(s: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(s).expect("rfc3339").timestamp_nanos_opt().expect("in range") as u64
}

/// One scenario of Jaeger's queries.json: the query, traces that must match and traces
/// that must not.
struct Scenario {
    caption: String,
    query: TraceQuery,
    batches: Vec<SpanBatch>,
    expected: HashSet<TraceId>,
}

/// Where a trace puts the query's tags.
#[derive(Clone, Copy)]
enum Spot {
    Span,
    Event,
    Resource,
    Scope,
    Link,
    /// Spread over span, resource and event of the same span.
    Spread,
    /// The first half on one span, the rest on another span of the same trace.
    TwoSpans,
}

struct TraceSpec<'a> {
    id: TraceId,
    service: &'a str,
    op: &'a str,
    start: u64,
    duration: u64,
    tags: &'a [(String, AnyValue)],
    spot: Spot,
    scope_name: &'a str,
}

fn build(t: &TraceSpec) -> Vec<SpanBatch> {
    let kvs = |tags: &[(String, AnyValue)]| -> Vec<KeyValue> {
        tags.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect()
    };
    let mut root = span(t.id, 1, None, t.op, t.start, t.duration);
    let mut resource = Vec::new();
    let mut scope = Scope { name: t.scope_name.into(), version: "1.0".into(), ..Scope::default() };
    let mut extra = None;
    match t.spot {
        Spot::Span => root.attributes = kvs(t.tags),
        Spot::Event => {
            root.events = vec![Event {
                time_unix_nano: t.start,
                name: "log".into(),
                attributes: kvs(t.tags),
                dropped_attributes_count: 0,
            }]
        }
        Spot::Resource => resource = kvs(t.tags),
        Spot::Scope => scope.attributes = kvs(t.tags),
        Spot::Link => {
            root.links = vec![Link {
                trace_id: tid(999_999),
                span_id: SpanId([9; 8]),
                trace_state: String::new(),
                attributes: kvs(t.tags),
                dropped_attributes_count: 0,
                flags: 0,
            }]
        }
        Spot::Spread => {
            let n = t.tags.len();
            root.attributes = kvs(&t.tags[..n / 3]);
            resource = kvs(&t.tags[n / 3..2 * n / 3]);
            root.events = vec![Event {
                time_unix_nano: t.start,
                name: "log".into(),
                attributes: kvs(&t.tags[2 * n / 3..]),
                dropped_attributes_count: 0,
            }];
        }
        Spot::TwoSpans => {
            let n = t.tags.len();
            root.attributes = kvs(&t.tags[..n / 2]);
            let mut child = span(t.id, 2, Some(1), t.op, t.start, t.duration);
            child.attributes = kvs(&t.tags[n / 2..]);
            extra = Some(child);
        }
    }
    let mut spans = vec![root];
    spans.extend(extra);
    vec![service_batch(t.service, resource, scope, spans)]
}

fn scenarios() -> Vec<Scenario> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/jaeger/queries.json"))
            .expect("queries.json");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).expect("json");
    let mut next_id = 0u32;
    let mut fresh = || {
        next_id += 1;
        tid(next_id)
    };
    let mut out = Vec::new();
    for e in &entries {
        let caption = e["Caption"].as_str().expect("caption").to_owned();
        let q = &e["Query"];
        let service = q["ServiceName"].as_str().expect("service").to_owned();
        let op_query = q["OperationName"].as_str().unwrap_or_default().to_owned();
        let op = if op_query.is_empty() { "some-op".to_owned() } else { op_query.clone() };
        let mut tags: Vec<(String, AnyValue)> = q["Tags"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), json_value(v))).collect())
            .unwrap_or_default();
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        let (min, max) = (
            rfc3339(q["StartTimeMin"].as_str().expect("min")),
            rfc3339(q["StartTimeMax"].as_str().expect("max")),
        );
        let dmin = q["DurationMin"].as_u64().unwrap_or(0);
        let dmax = q["DurationMax"].as_u64().unwrap_or(0);
        let duration = match (dmin, dmax) {
            (0, 0) => 1000,
            (0, m) => m / 2,
            (m, 0) => m * 2,
            (a, b) => (a + b) / 2,
        };
        let spot = if caption.contains("Logs") {
            Spot::Event
        } else if caption.contains("Process") {
            Spot::Resource
        } else if caption.contains("different spots") || caption.contains("Multi-spot") {
            Spot::Spread
        } else if caption.contains("Scope Attributes") {
            Spot::Scope
        } else if caption.contains("Link") {
            Spot::Link
        } else {
            Spot::Span
        };
        let start = min + (max - min) / 2;
        let base = TraceSpec {
            id: tid(0),
            service: &service,
            op: &op,
            start,
            duration,
            tags: &tags,
            spot,
            scope_name: "lib",
        };
        let mut batches = Vec::new();
        let mut expected = HashSet::new();
        let matching = if caption == "Multiple Traces" { 3 } else { 1 };
        for i in 0..matching {
            let id = fresh();
            expected.insert(id);
            batches.extend(build(&TraceSpec { id, start: start + i, ..base }));
        }
        if caption.contains("multiple indices") {
            // Spans of one trace days apart: only the one inside the window matters.
            let id = fresh();
            expected.insert(id);
            let day = 86_400_000_000_000;
            let mut spans = vec![span(id, 1, None, &op, start - day, duration)];
            spans.push(span(id, 2, Some(1), &op, start, duration));
            spans.push(span(id, 3, Some(1), &op, start + day, duration));
            batches.push(service_batch(&service, Vec::new(), Scope::default(), spans));
        }
        // Decoys, each differing in one way.
        let other_service = format!("{service}-other");
        batches.extend(build(&TraceSpec { id: fresh(), service: &other_service, ..base }));
        batches.extend(build(&TraceSpec { id: fresh(), start: min - 3_600_000_000_000, ..base }));
        batches.extend(build(&TraceSpec { id: fresh(), start: max + 1, ..base }));
        if !op_query.is_empty() {
            batches.extend(build(&TraceSpec { id: fresh(), op: "other-op", ..base }));
        }
        if dmax > 0 {
            batches.extend(build(&TraceSpec { id: fresh(), duration: dmax + 1, ..base }));
        }
        if dmin > 0 {
            batches.extend(build(&TraceSpec { id: fresh(), duration: dmin - 1, ..base }));
        }
        let off_tags: Vec<(String, AnyValue)> = tags
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (k.clone(), if i == 1 { AnyValue::Int(124) } else { v.clone() }))
            .collect();
        if tags.len() > 1 {
            batches.extend(build(&TraceSpec { id: fresh(), tags: &off_tags, ..base }));
            batches.extend(build(&TraceSpec { id: fresh(), spot: Spot::TwoSpans, ..base }));
        }
        let query = TraceQuery {
            service: Some(service.clone()),
            operation: (!op_query.is_empty()).then_some(op_query),
            attributes: tags
                .iter()
                .map(|(k, v)| AttrFilter {
                    scope: AttrScope::Any,
                    key: k.clone(),
                    value: strand_core::search::value_text(v).expect("searchable"),
                })
                .collect(),
            min_span_duration_nano: (dmin > 0).then_some(dmin),
            max_span_duration_nano: (dmax > 0).then_some(dmax),
            start_unix_nano: min,
            end_unix_nano: max,
            limit: q["NumTraces"].as_u64().expect("limit") as usize,
            ..TraceQuery::default()
        };
        out.push(Scenario { caption, query, batches, expected });
    }
    out
}

async fn check(store: &Store, scenarios: &[Scenario], stage: &str) {
    for s in scenarios {
        let page = store.find_traces(s.query.clone()).await.expect("search");
        let got: HashSet<TraceId> = page.traces.iter().map(|t| t.trace_id).collect();
        assert_eq!(got, s.expected, "{stage}: {}", s.caption);
        let starts: Vec<u64> = page.traces.iter().map(|t| t.start_unix_nano).collect();
        assert!(starts.windows(2).all(|w| w[0] >= w[1]), "{stage}: {}: newest first", s.caption);
        assert!(page.next_cursor.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_query_fixtures_match_in_head_blocks_and_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenarios = scenarios();
    assert_eq!(scenarios.len(), 25, "every entry of queries.json is exercised");
    let store = open(dir.path());
    for s in &scenarios {
        for b in &s.batches {
            store.append(b.clone()).await.expect("append");
        }
    }
    check(&store, &scenarios, "head").await;
    store.flush().await.expect("flush");
    check(&store, &scenarios, "block").await;
    store.close();
    drop(store);
    let store = open(dir.path());
    check(&store, &scenarios, "reopened").await;
}

fn error_span(trace: TraceId, id: u64, parent: Option<u64>, name: &str, start: u64) -> strand_core::Span {
    let mut s = span(trace, id, parent, name, start, 1_000);
    s.status = Status { code: StatusCode::Error, message: "boom".into() };
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_split_between_block_and_head_is_summarised_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let id = tid(1);
    let mut root = span(id, 1, None, "GET /report", 1_000_000, 50_000);
    root.kind = SpanKind::Server;
    store.append(service_batch("gateway", vec![], Scope::default(), vec![root])).await.expect("append");
    store.flush().await.expect("flush");
    let mut call = span(id, 2, Some(1), "SubmitReport", 1_010_000, 10_000);
    call.kind = SpanKind::Client;
    call.attributes = vec![KeyValue::new("rpc.system", AnyValue::String("grpc".into()))];
    store.append(service_batch("gateway", vec![], Scope::default(), vec![call])).await.expect("append");
    store
        .append(service_batch(
            "epro",
            vec![],
            Scope::default(),
            vec![error_span(id, 3, Some(2), "SubmitReport", 1_012_000)],
        ))
        .await
        .expect("append");
    let page = store
        .find_traces(TraceQuery {
            service: Some("epro".into()),
            status: Some(StatusFilter::Error),
            ..TraceQuery::all(10)
        })
        .await
        .expect("search");
    assert_eq!(page.traces.len(), 1);
    let t = &page.traces[0];
    assert_eq!((t.root_service.as_str(), t.root_name.as_str()), ("gateway", "GET /report"));
    assert_eq!((t.start_unix_nano, t.duration_nano, t.span_count, t.error_count), (1_000_000, 50_000, 3, 1));
    let services: Vec<(&str, u64, u64)> =
        t.services.iter().map(|s| (s.name.as_str(), s.span_count, s.error_count)).collect();
    assert_eq!(services, vec![("epro", 1, 1), ("gateway", 2, 0)]);
    // Conditions hold on one span: epro's span is not a client span.
    let none = store
        .find_traces(TraceQuery {
            service: Some("epro".into()),
            kind: Some(SpanKind::Client),
            ..TraceQuery::all(10)
        })
        .await
        .expect("search");
    assert!(none.traces.is_empty());
    // Typed attribute match, span- and resource-scoped filters.
    let q = |scope, key: &str, value: &str| TraceQuery {
        attributes: vec![AttrFilter { scope, key: key.into(), value: value.into() }],
        ..TraceQuery::all(10)
    };
    assert_eq!(
        store.find_traces(q(AttrScope::Span, "rpc.system", "grpc")).await.expect("search").traces.len(),
        1
    );
    assert!(
        store
            .find_traces(q(AttrScope::Resource, "rpc.system", "grpc"))
            .await
            .expect("search")
            .traces
            .is_empty()
    );
    assert_eq!(
        store.find_traces(q(AttrScope::Resource, "service.name", "epro")).await.expect("search").traces.len(),
        1
    );
    // Trace duration bounds apply to the whole trace.
    let long = TraceQuery { min_trace_duration_nano: Some(50_000), ..TraceQuery::all(10) };
    assert_eq!(store.find_traces(long).await.expect("search").traces.len(), 1);
    let longer = TraceQuery { min_trace_duration_nano: Some(50_001), ..TraceQuery::all(10) };
    assert!(store.find_traces(longer).await.expect("search").traces.is_empty());

    // Listings and dependencies.
    assert_eq!(store.services(TimeRange::ALL).await.expect("services"), vec!["epro", "gateway"]);
    let ops = store.operations("gateway".into(), TimeRange::ALL).await.expect("operations");
    let ops: Vec<(&str, SpanKind)> = ops.iter().map(|o| (o.name.as_str(), o.span_kind)).collect();
    assert_eq!(ops, vec![("GET /report", SpanKind::Server), ("SubmitReport", SpanKind::Client)]);
    let attrs = store.attributes(Some("gateway".into()), TimeRange::ALL).await.expect("attributes");
    assert!(attrs.contains(&("rpc.system".into(), "grpc".into())), "{attrs:?}");
    let deps = store.dependencies(TimeRange::ALL).await.expect("dependencies");
    assert_eq!(deps.len(), 1);
    assert_eq!(
        (deps[0].parent.as_str(), deps[0].child.as_str(), deps[0].call_count, deps[0].error_count),
        ("gateway", "epro", 1, 1)
    );
    let later = TimeRange { start_unix_nano: 3_600_000_000_000, end_unix_nano: u64::MAX };
    assert!(store.dependencies(later).await.expect("dependencies").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_neither_skip_nor_repeat_while_data_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let write = |n: u32, start: u64| {
        let b = service_batch("svc", vec![], Scope::default(), vec![span(tid(n), 1, None, "op", start, 10)]);
        let store = &store;
        async move { store.append(b).await.expect("append") }
    };
    // 60 traces, some sharing a start time (ties are broken by trace id).
    for n in 0..60u32 {
        write(n, 1_000 + u64::from(n / 2)).await;
        if n == 30 {
            store.flush().await.expect("flush");
        }
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut extra = 1000u32;
    loop {
        let page = store
            .find_traces(TraceQuery { service: Some("svc".into()), cursor, ..TraceQuery::all(7) })
            .await
            .expect("search");
        seen.extend(page.traces.iter().map(|t| t.trace_id));
        // Between pages: new traces, older and newer than anything, and a block cut.
        write(extra, 500).await;
        write(extra + 1, 5_000).await;
        extra += 2;
        if extra.is_multiple_of(6) {
            store.flush().await.expect("flush");
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let unique: HashSet<TraceId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no trace repeats");
    assert_eq!(
        unique,
        (0..60).map(tid).collect::<HashSet<_>>(),
        "exactly the traces of the first page's snapshot"
    );
    // A fresh query sees everything, in a stable order.
    let all = store
        .find_traces(TraceQuery { service: Some("svc".into()), ..TraceQuery::all(1000) })
        .await
        .expect("search");
    let again = store
        .find_traces(TraceQuery { service: Some("svc".into()), ..TraceQuery::all(1000) })
        .await
        .expect("search");
    assert_eq!(all, again);
    assert_eq!(all.traces.len(), 60 + (extra as usize - 1000));
}
