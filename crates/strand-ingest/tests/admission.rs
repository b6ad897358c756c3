//! Admission: a request takes a slot only once its body has arrived and holds it while it
//! is stored; beyond `max_concurrent_requests` slots, requests get 429.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use strand_core::{BoxFuture, SinkError, SpanBatch, SpanSink};
use strand_ingest::{IngestLimits, Receiver};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// A sink that stores nothing until the test lets a batch through.
struct Gate(Arc<Semaphore>);

impl SpanSink for Gate {
    fn consume(&self, _batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            self.0.acquire().await.expect("gate open").forget();
            Ok(())
        })
    }
}

fn export() -> Request<Body> {
    let body = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/otlp/trace.json"))
        .expect("fixture");
    Request::post("/v1/traces")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request")
}

#[tokio::test]
async fn requests_beyond_the_slots_get_429_until_one_is_stored() {
    let gate = Arc::new(Semaphore::new(0));
    let limits = IngestLimits { max_concurrent_requests: 1, ..IngestLimits::default() };
    let rx = Receiver::new(Arc::new(Gate(gate.clone())), limits);
    let app = strand_ingest::otlp::http::router(rx.clone());
    let first = tokio::spawn(app.clone().oneshot(export()));
    // The first request holds the only slot while the sink holds it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let families = rx.stats().metric_families();
        let in_flight = families.iter().find(|f| f.name == "strand_receiver_requests_in_flight");
        if in_flight.is_some_and(|f| {
            f.samples.first().is_some_and(|s| s.value == strand_core::metrics::SampleValue::Number(1.0))
        }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the first request never took its slot");
        tokio::task::yield_now().await;
    }
    let second = app.clone().oneshot(export()).await.expect("answer");
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");
    let body = axum::body::to_bytes(second.into_body(), 1 << 16).await.expect("body");
    assert!(String::from_utf8_lossy(&body).contains("1 requests already in flight"), "{body:?}");
    gate.add_permits(1);
    assert_eq!(first.await.expect("task").expect("answer").status(), 200);
    gate.add_permits(1);
    assert_eq!(app.oneshot(export()).await.expect("answer").status(), 200, "the slot is free again");
}

fn gzipped_export() -> (Request<Body>, usize, usize) {
    use std::io::Write;
    let plain = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/otlp/trace.json"))
        .expect("fixture");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).expect("gzip");
    let body = gz.finish().expect("gzip");
    let sizes = (body.len(), plain.len());
    let req = Request::post("/v1/traces")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Body::from(body))
        .expect("request");
    (req, sizes.0, sizes.1)
}

/// An OTLP/HTTP protobuf export of ten spans with three attributes each, and its size.
fn protobuf_export() -> (Request<Body>, usize) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    let attr = |k: &str, v: i64| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(Value::IntValue(v)) }),
        ..Default::default()
    };
    let spans = (1..=10u8)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: vec![i; 8],
            name: "op".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![attr("a", 1), attr("b", 2), attr("c", 3)],
            ..Default::default()
        })
        .collect();
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let len = body.len();
    let req = Request::post("/v1/traces")
        .header("content-type", "application/x-protobuf")
        .body(Body::from(body))
        .expect("request");
    (req, len)
}

/// A sink that notes the decoded size of the batch it is handed, then waits for the gate.
struct Noting {
    gate: Arc<Semaphore>,
    decoded: Arc<std::sync::atomic::AtomicU64>,
}

impl SpanSink for Noting {
    fn consume(&self, batch: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        self.decoded.store(batch.approx_bytes() as u64, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            self.gate.acquire().await.expect("gate open").forget();
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_request_holds_its_decoded_batch_in_the_memory_budget_until_stored() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use strand_ingest::memory::Stage;
    let gate = Arc::new(Semaphore::new(0));
    let decoded = Arc::new(AtomicU64::new(0));
    let sink = Noting { gate: gate.clone(), decoded: decoded.clone() };
    let rx = Receiver::new(Arc::new(sink), IngestLimits::default());
    let app = strand_ingest::otlp::http::router(rx.clone());
    let (req, compressed, plain) = gzipped_export();
    let first = tokio::spawn(app.clone().oneshot(req));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while decoded.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the batch never reached the sink");
        tokio::task::yield_now().await;
    }
    // While the sink stores it, the budget holds the decoded batch; the body and its
    // inflated copy are gone and given back.
    let batch = decoded.load(Ordering::SeqCst);
    assert_eq!(rx.memory().taken(), batch, "body {compressed} B, inflated {plain} B");
    gate.add_permits(1);
    assert_eq!(first.await.expect("task").expect("answer").status(), 200);
    assert_eq!(rx.memory().taken(), 0, "all given back once stored");

    // A budget smaller than the decoded batch alone (but holding the body) can never take
    // it: 413, not a retry.
    let (req, body_len) = protobuf_export();
    decoded.store(0, Ordering::SeqCst);
    let sink = Noting { gate: gate.clone(), decoded: decoded.clone() };
    let rx = Receiver::new(Arc::new(sink), IngestLimits::default());
    let first = tokio::spawn(strand_ingest::otlp::http::router(rx).oneshot(req));
    while decoded.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the batch never reached the sink");
        tokio::task::yield_now().await;
    }
    let batch = decoded.load(Ordering::SeqCst);
    gate.add_permits(1);
    assert_eq!(first.await.expect("task").expect("answer").status(), 200);
    assert!(batch > body_len as u64, "decoded {batch} B, body {body_len} B");
    let limits = IngestLimits { memory_bytes: batch - 1, ..IngestLimits::default() };
    let rx = Receiver::new(Arc::new(Gate(gate.clone())), limits);
    let app = strand_ingest::otlp::http::router(rx.clone());
    let resp = app.oneshot(protobuf_export().0).await.expect("answer");
    assert_eq!(resp.status(), 413);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.expect("body");
    assert!(String::from_utf8_lossy(&body).contains("more than the whole memory budget"), "{body:?}");
    assert_eq!((rx.memory().refused(Stage::Decoded), rx.memory().refused(Stage::Body)), (1, 0));
    assert_eq!(rx.memory().taken(), 0);
}
