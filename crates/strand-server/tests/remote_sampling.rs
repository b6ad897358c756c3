//! Jaeger remote sampling served by a running server and read by the Rust
//! `opentelemetry_sdk` Jaeger remote sampler: strategies from a file, adaptive
//! probabilities from received root spans, and their survival across a restart.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
use serde_json::{Value, json};

const STRATEGIES: &str = r#"{
  "service_strategies": [
    {
      "service": "checkout",
      "type": "probabilistic",
      "param": 0.0,
      "operation_strategies": [
        { "operation": "POST /pay", "type": "probabilistic", "param": 1.0 }
      ]
    },
    { "service": "limited", "type": "ratelimiting", "param": 3 }
  ],
  "default_strategy": { "type": "probabilistic", "param": 0.0 }
}"#;

/// The SDK's sampler for `service`, refreshing every 50 ms from `addr`.
fn sdk_sampler(addr: SocketAddr, service: &str, default: Sampler) -> Sampler {
    Sampler::jaeger_remote(
        Tokio,
        HyperClient::with_default_connector(Duration::from_secs(5), None),
        default,
        service,
    )
    .with_endpoint(format!("http://{addr}/sampling"))
    .with_update_interval(Duration::from_millis(50))
    .build()
    .expect("remote sampler")
}

fn sampled(sampler: &Sampler, operation: &str) -> bool {
    let id = TraceId::from_bytes(rand::random::<u128>().to_be_bytes());
    let r = sampler.should_sample(None, id, operation, &SpanKind::Server, &[], &[]);
    r.decision == SamplingDecision::RecordAndSample
}

/// Waits until the sampler's decision for `operation` is `want` (its default sampler
/// decides the other way until the first strategy arrives).
async fn wait_decision(sampler: &Sampler, operation: &str, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while sampled(sampler, operation) != want {
        assert!(Instant::now() < deadline, "the SDK never applied the served strategy for {operation}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let r = client.get(url).send().await.expect("get");
    (r.status().as_u16(), r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_from_a_file_reach_the_sdk_sampler() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("strategies.json");
    std::fs::write(&file, STRATEGIES).expect("write strategies");
    let server = common::start(|c| c.remote_sampling.strategies_file = Some(file)).await;
    let addr = server.remote_sampling.expect("remote sampling enabled");
    let client = reqwest::Client::new();

    // The wire shape, on both paths and on the Jaeger collector port.
    let want = json!({
        "strategyType": "PROBABILISTIC",
        "probabilisticSampling": { "samplingRate": 0.0 },
        "operationSampling": {
            "defaultSamplingProbability": 0.0,
            "defaultLowerBoundTracesPerSecond": 0.0,
            "perOperationStrategies": [
                { "operation": "POST /pay", "probabilisticSampling": { "samplingRate": 1.0 } }
            ],
            "defaultUpperBoundTracesPerSecond": 0.0
        }
    });
    for url in [
        format!("http://{addr}/sampling?service=checkout"),
        format!("http://{addr}/api/sampling?service=checkout"),
        format!("http://{}/api/sampling?service=checkout", server.jaeger_http),
    ] {
        let (status, body) = get(&client, &url).await;
        assert_eq!(status, 200, "{url}: {body}");
        assert_eq!(serde_json::from_str::<Value>(&body).expect("json"), want, "{url}");
    }
    // Jaeger's rule: exactly one `service`.
    for query in ["", "?service=a&service=b", "?service="] {
        let (status, body) = get(&client, &format!("http://{addr}/sampling{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains("'service' parameter"), "{body}");
    }
    let r = client.post(format!("http://{addr}/sampling?service=a")).send().await.expect("post");
    assert_eq!(r.status(), 405);

    // Per-operation probabilities: the SDK samples POST /pay always and the rest never.
    let checkout = sdk_sampler(addr, "checkout", Sampler::AlwaysOn);
    wait_decision(&checkout, "GET /cart", false).await;
    assert!((0..500).all(|_| sampled(&checkout, "POST /pay")));
    assert!((0..500).all(|_| !sampled(&checkout, "GET /cart")));

    // Rate limiting, in Jaeger's enum spelling. (opentelemetry_sdk 0.33 expects
    // `RATELIMITING` and so cannot read any Jaeger rate-limiting strategy; Go, Java and JS
    // SDKs read this one.)
    let (status, body) = get(&client, &format!("http://{addr}/sampling?service=limited")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({ "strategyType": "RATE_LIMITING", "rateLimitingSampling": { "maxTracesPerSecond": 3 } })
    );

    // Any other service gets the default strategy (probability 0).
    let other = sdk_sampler(addr, "elsewhere", Sampler::AlwaysOn);
    wait_decision(&other, "x", false).await;

    let metrics = get(&client, &server.query("/metrics")).await.1;
    assert!(metrics.contains("strand_remote_sampling_bad_requests_total 3"), "{metrics}");
    drop((checkout, other));
    server.stop().await;
}

/// `n` root spans of `operation` in `service`, each its own trace, sent over OTLP/HTTP.
async fn send_roots(server: &common::TestServer, service: &str, operation: &str, n: u64) {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    let spans: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "traceId": format!("{:032x}", rand::random::<u128>() | 1),
                "spanId": format!("{:016x}", i + 1),
                "name": operation, "kind": 2,
                "startTimeUnixNano": (now - 2_000_000).to_string(),
                "endTimeUnixNano": now.to_string()
            })
        })
        .collect();
    let body = json!({ "resourceSpans": [{
        "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
        "scopeSpans": [{ "scope": { "name": "t" }, "spans": spans }]
    }]});
    server.export(&body).await;
}

fn operation_probability(strategy: &Value, operation: &str) -> Option<f64> {
    strategy["operationSampling"]["perOperationStrategies"]
        .as_array()?
        .iter()
        .find(|o| o["operation"] == operation)?["probabilisticSampling"]["samplingRate"]
        .as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_probabilities_follow_root_spans_and_survive_a_restart() {
    let adaptive = |c: &mut strand_server::Config| {
        c.remote_sampling.adaptive.enabled = true;
        c.remote_sampling.adaptive.calculation_interval = "1s".parse().expect("valid");
        c.remote_sampling.adaptive.initial_sampling_probability = 1.0;
    };
    let server = common::start(adaptive).await;
    let addr = server.remote_sampling.expect("remote sampling enabled");
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/sampling?service=busy");

    // Before any root span: the initial probability for every operation.
    let (_, body) = get(&client, &url).await;
    let strategy: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(strategy["operationSampling"]["defaultSamplingProbability"], 1.0);
    assert_eq!(strategy["operationSampling"]["perOperationStrategies"], json!([]));

    // 400 root traces of GET /hot within about a second: far above the 1 trace/s target,
    // so its probability drops to about 1/400 at the next calculation (it then doubles
    // each idle second, so read it soon). Child spans are not roots and do not count.
    send_roots(&server, "busy", "GET /hot", 400).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let p = loop {
        let strategy: Value = serde_json::from_str(&get(&client, &url).await.1).expect("json");
        if let Some(p) = operation_probability(&strategy, "GET /hot") {
            break p;
        }
        assert!(Instant::now() < deadline, "no adaptive probability: {strategy}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(p > 0.0 && p < 0.02, "probability {p} after 400 roots/s");

    // The SDK samples GET /hot rarely and everything else (initial probability 1) always.
    let sampler = sdk_sampler(addr, "busy", Sampler::AlwaysOff);
    wait_decision(&sampler, "GET /other", true).await;
    let hot = (0..2000).filter(|_| sampled(&sampler, "GET /hot")).count();
    assert!(hot < 400, "GET /hot sampled {hot} of 2000");
    assert!((0..500).all(|_| sampled(&sampler, "GET /other")));
    drop(sampler);

    // The probabilities are saved and served again right after a restart.
    let dir = server.stop().await;
    let saved: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("data/sampling/adaptive.json")).expect("state"),
    )
    .expect("state json");
    assert_eq!(saved[0]["service"], "busy");
    assert_eq!(saved[0]["operation"], "GET /hot");
    let data = dir.path().join("data");
    let server = common::start(move |c| {
        adaptive(c);
        c.data_dir = data;
    })
    .await;
    let addr = server.remote_sampling.expect("remote sampling enabled");
    let strategy: Value =
        serde_json::from_str(&get(&client, &format!("http://{addr}/sampling?service=busy")).await.1)
            .expect("json");
    let restored = operation_probability(&strategy, "GET /hot").expect("restored probability");
    assert!(restored < 1.0, "restored {restored}");
    server.stop().await;
}
