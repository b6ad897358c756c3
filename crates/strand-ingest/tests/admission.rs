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

#[tokio::test]
async fn a_request_holds_its_body_inflated_body_and_decoded_batch_in_the_memory_budget_until_stored() {
    let gate = Arc::new(Semaphore::new(0));
    let rx = Receiver::new(Arc::new(Gate(gate.clone())), IngestLimits::default());
    let app = strand_ingest::otlp::http::router(rx.clone());
    let (req, compressed, plain) = gzipped_export();
    let first = tokio::spawn(app.clone().oneshot(req));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Body and inflated body, then the decoded batch on top while the sink holds it.
    while rx.memory().taken() <= (compressed + plain) as u64 {
        assert!(std::time::Instant::now() < deadline, "taken {}", rx.memory().taken());
        tokio::task::yield_now().await;
    }
    let held = rx.memory().taken();
    gate.add_permits(1);
    assert_eq!(first.await.expect("task").expect("answer").status(), 200);
    assert_eq!(rx.memory().taken(), 0, "all given back once stored");

    // A budget that holds the body and its inflated copy but not the decoded batch.
    let limits = IngestLimits { memory_bytes: held - 1, ..IngestLimits::default() };
    let rx = Receiver::new(Arc::new(Gate(gate.clone())), limits);
    let app = strand_ingest::otlp::http::router(rx.clone());
    let resp = app.oneshot(gzipped_export().0).await.expect("answer");
    assert_eq!(resp.status(), 429);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.expect("body");
    assert!(String::from_utf8_lossy(&body).contains("memory budget is full"), "{body:?}");
    use strand_ingest::memory::Stage;
    assert_eq!((rx.memory().refused(Stage::Decoded), rx.memory().refused(Stage::Inflated)), (1, 0));
    assert_eq!(rx.memory().taken(), 0);
}
