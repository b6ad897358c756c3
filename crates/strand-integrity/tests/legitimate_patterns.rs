//! What is not a break stays unflagged, and reading a trace changes nothing: calls that
//! failed without an answer, calls to an uninstrumented API whose path an instrumented
//! service also serves, consumers on a destination nobody matched, requests from outside,
//! and a producer read while its message is still queued.

use std::sync::Arc;

use strand_core::{
    AnyValue, FindingKind, KeyValue, Resource, ResourceSpans, Scope, ScopeSpans, Span, SpanBatch, SpanId,
    SpanKind, StatusCode, TraceId,
};
use strand_integrity::observer::{Observer, ObserverConfig, Recorded};
use strand_integrity::span::{Interner, Lite};

const SECOND: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SECOND;

/// The server's default settings.
fn observer() -> Observer {
    Observer::new(ObserverConfig::default())
}

fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs.iter().map(|(k, v)| KeyValue::new(*k, AnyValue::String((*v).into()))).collect()
}

fn span(trace: u8, id: u8, parent: Option<u8>, kind: SpanKind, a: &[(&str, &str)]) -> Span {
    Span {
        parent_span_id: parent.map(|p| SpanId([p; 8])),
        kind,
        attributes: attrs(a),
        ..Span::new(
            TraceId([trace; 16]),
            SpanId([id; 8]),
            format!("op-{id}"),
            T0 + u64::from(id) * 1000,
            T0 + 50_000_000,
        )
    }
}

fn batch(service: &str, spans: Vec<Span>) -> SpanBatch {
    SpanBatch {
        resource_spans: vec![ResourceSpans {
            resource: Arc::new(Resource {
                attributes: attrs(&[("service.name", service)]),
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans { scope: Arc::new(Scope::default()), spans }],
        }],
    }
}

fn kinds(recorded: &[Recorded], trace: u8) -> Vec<FindingKind> {
    recorded
        .iter()
        .rev()
        .find(|r| r.trace_id == TraceId([trace; 16]))
        .map(|r| r.findings.iter().map(|f| f.kind).collect())
        .unwrap_or_default()
}

#[test]
fn failed_calls_and_uninstrumented_apis_raise_nothing() {
    let mut obs = observer();
    // An instrumented service that serves GET /health (and so receives requests).
    obs.observe(
        &batch(
            "api",
            vec![span(
                1,
                1,
                None,
                SpanKind::Server,
                &[("http.request.method", "GET"), ("http.route", "/health"), ("server.address", "api")],
            )],
        ),
        T0,
    );
    // Meanwhile the gateway calls a third-party /health (never instrumented) and a refused one.
    let mut refused = span(
        2,
        3,
        Some(1),
        SpanKind::Client,
        &[
            ("http.request.method", "GET"),
            ("url.full", "http://api:80/health"),
            ("error.type", "connection_refused"),
        ],
    );
    refused.status.code = StatusCode::Error;
    obs.observe(
        &batch(
            "gateway",
            vec![
                span(2, 1, None, SpanKind::Server, &[]),
                span(
                    2,
                    2,
                    Some(1),
                    SpanKind::Client,
                    &[("http.request.method", "GET"), ("url.full", "https://status.example.com/health")],
                ),
                refused,
            ],
        ),
        T0,
    );
    let recorded = obs.tick(T0 + 31 * SECOND);
    assert_eq!(kinds(&recorded, 2), [], "{recorded:?}");
    assert_eq!(kinds(&recorded, 1), [], "{recorded:?}");
    assert!(obs.edges(0, u64::MAX).is_empty(), "no outcome known for either call");
}

#[test]
fn a_consumer_root_without_a_matched_producer_is_no_break_and_requests_from_outside_are_whole() {
    let mut obs = observer();
    // Some producer on the destination is instrumented, but this message has another id.
    let dest = ("messaging.destination.name", "jobs");
    obs.observe(
        &batch(
            "web",
            vec![
                span(1, 1, None, SpanKind::Server, &[]),
                span(1, 2, Some(1), SpanKind::Producer, &[dest, ("messaging.message.id", "a")]),
            ],
        ),
        T0,
    );
    obs.observe(&batch("worker", vec![span(1, 3, Some(2), SpanKind::Consumer, &[dest])]), T0);
    obs.observe(
        &batch("worker", vec![span(2, 1, None, SpanKind::Consumer, &[dest, ("messaging.message.id", "b")])]),
        T0,
    );
    // A request whose parent is a browser's (remote, never exported), to a service no
    // instrumented caller reaches.
    let mut entry = span(3, 1, Some(9), SpanKind::Server, &[]);
    entry.flags = 0x301;
    obs.observe(&batch("edge", vec![entry]), T0);
    let recorded = obs.tick(T0 + 31 * SECOND);
    assert_eq!(kinds(&recorded, 2), [], "{recorded:?}");
    assert_eq!(kinds(&recorded, 3), [], "{recorded:?}");
}

#[test]
fn reading_a_trace_makes_no_match() {
    let mut obs = observer();
    let dest = ("messaging.destination.name", "jobs");
    // A producer whose message is still queued, and an unrelated new-root consumer.
    obs.observe(
        &batch(
            "web",
            vec![span(1, 1, None, SpanKind::Server, &[]), span(1, 2, Some(1), SpanKind::Producer, &[dest])],
        ),
        T0,
    );
    obs.observe(&batch("worker", vec![span(2, 1, None, SpanKind::Consumer, &[dest])]), T0);
    let mut strings = Interner::default();
    let producer = batch(
        "web",
        vec![span(1, 1, None, SpanKind::Server, &[]), span(1, 2, Some(1), SpanKind::Producer, &[dest])],
    );
    let rs = &producer.resource_spans[0];
    let lites: Vec<Lite> =
        rs.scope_spans[0].spans.iter().map(|s| Lite::of(s, &rs.resource, &mut strings)).collect();
    let read = obs.analyse_read(TraceId([1; 16]), &lites, T0 + SECOND);
    assert!(read.findings.is_empty(), "{:?}", read.findings);
    // Its own consumer arrives: the producer is continued, the other consumer stays alone.
    obs.observe(&batch("worker", vec![span(1, 3, Some(2), SpanKind::Consumer, &[dest])]), T0 + 2 * SECOND);
    let mut recorded = obs.tick(T0 + 40 * SECOND);
    recorded.extend(obs.tick(T0 + 400 * SECOND));
    assert_eq!(kinds(&recorded, 1), [], "{recorded:?}");
    assert_eq!(kinds(&recorded, 2), [], "{recorded:?}");
}
