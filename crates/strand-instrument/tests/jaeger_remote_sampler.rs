//! The `jaeger_remote` sampler from config: strategies polled from a Jaeger remote-sampling
//! endpoint (strand's `:5778` serves this shape) decide per operation, after the initial
//! ratio has covered the time before the first answer.

#![cfg(feature = "jaeger-remote")]

use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::routing::get;
use opentelemetry::trace::{Span as _, Tracer as _};
use strand_instrument::{SamplerConfig, TelemetryConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_operation_strategies_from_the_endpoint_decide() {
    let app = axum::Router::new().route(
        "/sampling",
        get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
            assert_eq!(q.get("service").map(String::as_str), Some("checkout"), "asks for its own service");
            axum::Json(serde_json::json!({
                "strategyType": "PROBABILISTIC",
                "probabilisticSampling": { "samplingRate": 0.0 },
                "operationSampling": {
                    "defaultSamplingProbability": 0.0,
                    "defaultLowerBoundTracesPerSecond": 0.0,
                    "defaultUpperBoundTracesPerSecond": 0.0,
                    "perOperationStrategies": [
                        { "operation": "POST /pay", "probabilisticSampling": { "samplingRate": 1.0 } }
                    ]
                }
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut cfg = TelemetryConfig::new("checkout");
    cfg.enabled = false; // decisions only; nothing to export
    cfg.logs.format = strand_instrument::LogFormat::None;
    cfg.sampler = SamplerConfig::JaegerRemote {
        endpoint: format!("http://{addr}/sampling"),
        refresh_interval: Duration::from_millis(100),
        initial_ratio: 1.0,
    };
    let _guard = strand_instrument::init(cfg).expect("init");
    let tracer = opentelemetry::global::tracer("test");
    let sampled = |name: &'static str| {
        let mut span = tracer.start(name);
        let s = span.span_context().is_sampled();
        span.end();
        s
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while sampled("GET /health") {
        assert!(Instant::now() < deadline, "the strategy never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        assert!(sampled("POST /pay"), "the operation's own probability (1.0) applies");
        assert!(!sampled("GET /health"), "the default (0.0) applies to other operations");
    }
}
