//! Per-request cost of `HttpServerLayer` over a bare axum router, in-process (no sockets):
//! unsampled (the sampler says no) and sampled (a real SDK span, batched to an exporter
//! that discards). Targets: ≤ 1 µs unsampled, ≤ 4 µs sampled.

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::global;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter};
use strand_instrument::http_server::HttpServerLayer;
use tower::ServiceExt as _;

/// Drops every batch: the benchmark measures the service's side, not an exporter.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

fn request() -> http::Request<Body> {
    http::Request::builder()
        .uri("/patients/42")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("user-agent", "bench")
        .body(Body::empty())
        .expect("request")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = rt.enter();
    strand_instrument::propagation::install_propagator();
    let bare: Router = Router::new().route("/patients/{id}", get(|| async { "ok" }));
    // Each layer keeps the tracer of the provider installed at its first request.
    let unsampled = bare.clone().layer(HttpServerLayer::new());
    let sampled = bare.clone().layer(HttpServerLayer::new());
    let mut group = c.benchmark_group("axum_request");
    group.bench_function("bare_router", |b| {
        b.iter(|| rt.block_on(bare.clone().oneshot(request())).expect("ok"))
    });
    global::set_tracer_provider(SdkTracerProvider::builder().with_sampler(Sampler::AlwaysOff).build());
    group.bench_function("layer_unsampled", |b| {
        b.iter(|| rt.block_on(unsampled.clone().oneshot(request())).expect("ok"))
    });
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .with_span_processor(BatchSpanProcessor::builder(Discard).build())
        .build();
    global::set_tracer_provider(provider.clone());
    group.bench_function("layer_sampled", |b| {
        b.iter(|| rt.block_on(sampled.clone().oneshot(request())).expect("ok"))
    });
    group.finish();
    let _ = provider.shutdown();
}

criterion_group!(benches, bench);
criterion_main!(benches);
