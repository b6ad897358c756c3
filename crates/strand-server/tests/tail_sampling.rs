//! Tail sampling in a running server: errors plus a consistent share kept, RED metrics
//! exact over every span, and undecided traces surviving a restart.

mod common;

use serde_json::{Value, json};
use strand_core::TraceId;
use strand_sampling::policy::{ratio_threshold, trace_id_hash};

const TRACES: usize = 300;

fn trace_id(i: usize) -> String {
    format!(
        "{:016x}{:016x}",
        0x5eed_0000_0000_0000u64 + i as u64,
        (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

fn is_error(i: usize) -> bool {
    i % 30 == 7
}

/// A two-span trace: gateway (root, server) calls users (server); error on the child.
fn export(range: std::ops::Range<usize>, now_ns: u64) -> Value {
    let span = |i: usize, id: &str, parent: &str, name: &str, error: bool| {
        json!({
            "traceId": trace_id(i), "spanId": id, "parentSpanId": parent, "name": name, "kind": 2,
            "startTimeUnixNano": (now_ns - 50_000_000).to_string(),
            "endTimeUnixNano": (now_ns - 10_000_000).to_string(),
            "status": { "code": if error { 2 } else { 0 } }
        })
    };
    let rs = |service: &str, spans: Vec<Value>| {
        json!({
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
            "scopeSpans": [{ "scope": { "name": "t" }, "spans": spans }]
        })
    };
    let roots = range.clone().map(|i| span(i, "00000000000000a1", "", "GET /report", false)).collect();
    let children =
        range.map(|i| span(i, "00000000000000b2", "00000000000000a1", "check", is_error(i))).collect();
    json!({ "resourceSpans": [rs("gateway", roots), rs("users", children)] })
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
}

async fn metric(client: &reqwest::Client, server: &common::TestServer, series: &str) -> Option<f64> {
    let text = client.get(server.query("/metrics")).send().await.ok()?.text().await.ok()?;
    common::metric_value(&text, series)
}

/// Waits until every trace received has been decided and its decision carried out: kept
/// spans (and log records) stored, dropped ones gone. The buffer empties when traces are
/// decided, before kept ones are stored, so it alone is not enough.
async fn wait_decided(client: &reqwest::Client, server: &common::TestServer) {
    let series = [
        "strand_sampling_buffer_traces",
        "strand_sampling_buffer_log_records",
        "strand_sampling_decisions_in_progress",
    ];
    common::eventually("every trace decided and carried out", || async {
        for s in series {
            if metric(client, server, s).await != Some(0.0) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Jaeger v1 view of a trace: its spans, or none when not stored.
async fn stored_spans(client: &reqwest::Client, server: &common::TestServer, id: &str) -> Vec<Value> {
    let r = client.get(server.query(&format!("/api/traces/{id}"))).send().await.expect("get");
    if r.status() == 404 {
        return Vec::new();
    }
    let body: Value = r.json().await.expect("json");
    body["data"][0]["spans"].as_array().cloned().unwrap_or_default()
}

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"].as_array()?.iter().find(|t| t["key"] == key).map(|t| &t["value"])
}

#[tokio::test]
async fn errors_plus_five_percent_keeps_exactly_those_and_metrics_count_everything() {
    let server = common::start(|c| {
        c.sampling.policies = strand_sampling::SamplingConfig::shorthand("errors-plus=5%").expect("valid");
        c.sampling.decision_delay = "100ms".parse().expect("valid");
        c.sampling.decision_wait = "2s".parse().expect("valid");
    })
    .await;
    let client = reqwest::Client::new();
    let now = now_ns();
    for chunk in (0..TRACES).collect::<Vec<_>>().chunks(50) {
        server.export(&export(chunk[0]..chunk[chunk.len() - 1] + 1, now)).await;
    }
    wait_decided(&client, &server).await;

    // Expected: every error trace, and the traces whose collector hash falls under 5 %.
    let mut expected_sampled = 0;
    for i in 0..TRACES {
        let by_hash = five_percent_by_hash(i);
        let spans = stored_spans(&client, &server, &trace_id(i)).await;
        let kept = is_error(i) || by_hash;
        assert_eq!(!spans.is_empty(), kept, "trace {i} (error {}, hash {by_hash})", is_error(i));
        if !kept {
            continue;
        }
        expected_sampled += usize::from(by_hash);
        assert_eq!(spans.len(), 2, "trace {i} whole");
        let root =
            spans.iter().find(|s| s["references"].as_array().is_none_or(|r| r.is_empty())).expect("root");
        let policy =
            tag(root, "strand.sampling.policy").and_then(Value::as_str).expect("policy tag on the root");
        let rate = tag(root, "strand.sampling.rate").and_then(Value::as_f64).expect("rate tag");
        match (is_error(i), by_hash) {
            (true, true) => assert_eq!((policy, rate), ("errors,probabilistic-5%", 1.0)),
            (true, false) => assert_eq!((policy, rate), ("errors", 1.0)),
            _ => assert_eq!((policy, rate), ("probabilistic-5%", 0.05)),
        }
    }
    assert!(expected_sampled > 0, "some non-error trace falls under 5 % of {TRACES}");

    // RED metrics and the service graph saw every span, kept or not.
    let gw = "strand_span_requests_total{service=\"gateway\",operation=\"GET /report\",span_kind=\"server\",status=\"unset\"}";
    assert_eq!(metric(&client, &server, gw).await, Some(TRACES as f64));
    let errors = (0..TRACES).filter(|i| is_error(*i)).count();
    let users_err = "strand_span_requests_total{service=\"users\",operation=\"check\",span_kind=\"server\",status=\"error\"}";
    assert_eq!(metric(&client, &server, users_err).await, Some(errors as f64));
    let edge = "strand_service_graph_requests_total{client=\"gateway\",server=\"users\"}";
    assert_eq!(metric(&client, &server, edge).await, Some(TRACES as f64));
    let failed = "strand_service_graph_request_failed_total{client=\"gateway\",server=\"users\"}";
    assert_eq!(metric(&client, &server, failed).await, Some(errors as f64));
    let kept = (0..TRACES).filter(|i| is_error(*i) || five_percent_by_hash(*i)).count();
    assert_eq!(metric(&client, &server, "strand_sampling_traces_kept_total").await, Some(kept as f64));
    assert_eq!(
        metric(&client, &server, "strand_sampling_traces_dropped_total").await,
        Some((TRACES - kept) as f64)
    );

    let red: Value = client
        .get(server.query("/api/v1/metrics/red?service=users&since=5m"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let op = &red["operations"][0];
    assert_eq!(
        (op["operation"].as_str(), op["requests"].as_u64(), op["errors"].as_u64()),
        (Some("check"), Some(TRACES as u64), Some(errors as u64))
    );
    let r = client.get(server.query("/api/v1/metrics/red?since=2d")).send().await.expect("get");
    assert_eq!(r.status(), 400);

    // A late span of a dropped trace is dropped; of a kept trace, stored.
    let dropped = (0..TRACES).find(|i| !is_error(*i) && !five_percent_by_hash(*i)).expect("a dropped trace");
    let mut late = export(dropped..dropped + 1, now);
    late["resourceSpans"].as_array_mut().expect("array").remove(0);
    server.export(&late).await;
    assert!(stored_spans(&client, &server, &trace_id(dropped)).await.is_empty());
    assert_eq!(metric(&client, &server, "strand_sampling_late_spans_dropped_total").await, Some(1.0));
    server.stop().await;
}

/// Whether the 5 % probabilistic policy picks trace `i` (the collector's default salt).
fn five_percent_by_hash(i: usize) -> bool {
    let id: TraceId = trace_id(i).parse().expect("valid id");
    trace_id_hash(b"default-hash-seed", &id) <= ratio_threshold(0.05)
}

#[tokio::test]
async fn undecided_traces_survive_a_restart_and_are_decided_after_it() {
    let policies = strand_sampling::SamplingConfig::shorthand("errors-plus=0%").expect("valid");
    let p = policies.clone();
    let server = common::start(move |c| {
        c.sampling.policies = p;
        c.sampling.decision_delay = "60s".parse().expect("valid");
        c.sampling.decision_wait = "60s".parse().expect("valid");
    })
    .await;
    let client = reqwest::Client::new();
    server.export(&export(0..30, now_ns())).await;
    assert_eq!(metric(&client, &server, "strand_sampling_buffer_traces").await, Some(30.0));
    assert!(stored_spans(&client, &server, &trace_id(7)).await.is_empty(), "not decided yet");
    let dir = server.stop().await;

    // Restarted with a shorter wait: the traces' clocks kept running while it was down.
    let data = dir.path().join("data");
    let server = common::start(move |c| {
        c.data_dir = data;
        c.sampling.policies = policies;
        c.sampling.decision_delay = "100ms".parse().expect("valid");
        c.sampling.decision_wait = "1s".parse().expect("valid");
    })
    .await;
    assert_eq!(metric(&client, &server, "strand_sampling_log_replayed_records_total").await, Some(1.0));
    wait_decided(&client, &server).await;
    for i in 0..30 {
        let spans = stored_spans(&client, &server, &trace_id(i)).await;
        assert_eq!(spans.len(), if is_error(i) { 2 } else { 0 }, "trace {i}");
    }
    // Decisions are remembered across a second restart: nothing is buffered or decided
    // again, and the kept traces are still there.
    let _ = server.stop().await;
    let data = dir.path().join("data");
    let server = common::start(move |c| {
        c.data_dir = data;
        c.sampling.policies = strand_sampling::SamplingConfig::shorthand("errors-plus=0%").expect("valid");
    })
    .await;
    // The spans segment is gone (every trace in it was decided); the decisions remain.
    assert_eq!(metric(&client, &server, "strand_sampling_log_replayed_records_total").await, Some(1.0));
    assert_eq!(metric(&client, &server, "strand_sampling_buffer_traces").await, Some(0.0));
    assert_eq!(metric(&client, &server, "strand_sampling_traces_kept_total").await, Some(0.0));
    assert_eq!(stored_spans(&client, &server, &trace_id(7)).await.len(), 2);
    server.stop().await;
}

/// One log record per trace in `range`, written by its child span, plus `extra` records.
fn log_export(range: std::ops::Range<usize>, now_ns: u64, extra: Vec<Value>) -> Value {
    let mut records: Vec<Value> = range
        .map(|i| {
            json!({
                "timeUnixNano": (now_ns - 20_000_000).to_string(), "severityNumber": 9,
                "body": { "stringValue": format!("checked report {i}") },
                "traceId": trace_id(i), "spanId": "00000000000000b2"
            })
        })
        .collect();
    records.extend(extra);
    json!({ "resourceLogs": [{
        "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "users" } }] },
        "scopeLogs": [{ "scope": { "name": "t" }, "logRecords": records }]
    }] })
}

async fn post_logs(client: &reqwest::Client, server: &common::TestServer, body: &Value) {
    let resp = client
        .post(format!("http://{}/v1/logs", server.otlp_http))
        .json(body)
        .send()
        .await
        .expect("post logs");
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
}

async fn log_count(client: &reqwest::Client, server: &common::TestServer, query: &str) -> u64 {
    let r = client.get(server.query(&format!("/api/v1/logs?{query}"))).send().await.expect("get");
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.expect("json")["count"].as_u64().expect("count")
}

#[tokio::test]
async fn with_follow_traces_log_records_share_their_traces_fate_across_a_restart() {
    let sampling = |wait: &str| {
        let wait = wait.to_owned();
        move |c: &mut strand_server::Config| {
            c.sampling.policies =
                strand_sampling::SamplingConfig::shorthand("errors-plus=0%").expect("valid");
            c.sampling.decision_delay = "100ms".parse().expect("valid");
            c.sampling.decision_wait = wait.parse().expect("valid");
            c.sampling.logs = strand_sampling::config::LogSampling::FollowTraces;
        }
    };
    let server = common::start(sampling("60s")).await;
    let client = reqwest::Client::new();
    let now = now_ns();
    // Records first, as services log before their spans end; one without context and one
    // of a trace whose spans never come.
    let lonely = "0123456789abcdef0123456789abcdef";
    let extra = vec![
        json!({ "timeUnixNano": now.to_string(), "body": { "stringValue": "no context at all" } }),
        json!({ "timeUnixNano": now.to_string(), "body": { "stringValue": "lonely" }, "traceId": lonely }),
    ];
    post_logs(&client, &server, &log_export(0..30, now, extra)).await;
    server.export(&export(0..30, now_ns())).await;
    assert_eq!(log_count(&client, &server, "q=no+context&since=1h").await, 1, "stored at once");
    assert_eq!(metric(&client, &server, "strand_sampling_buffer_traces").await, Some(31.0));
    assert_eq!(metric(&client, &server, "strand_sampling_buffer_log_records").await, Some(31.0));
    assert_eq!(log_count(&client, &server, &format!("traceId={}", trace_id(7))).await, 0, "waiting");
    let dir = server.stop().await;

    // The records waited in the sampling log beside their spans; the restart decides
    // everything within a second.
    let data = dir.path().join("data");
    let server = common::start(move |c| {
        sampling("1s")(c);
        c.data_dir = data;
    })
    .await;
    wait_decided(&client, &server).await;
    for i in 0..30 {
        let n = log_count(&client, &server, &format!("traceId={}", trace_id(i))).await;
        assert_eq!(n, u64::from(is_error(i)), "trace {i}: records follow the spans");
    }
    assert_eq!(log_count(&client, &server, &format!("traceId={lonely}")).await, 1, "no spans: kept");
    assert_eq!(metric(&client, &server, "strand_sampling_log_records_kept_total").await, Some(1.0));
    assert_eq!(metric(&client, &server, "strand_sampling_log_records_dropped_total").await, Some(29.0));
    assert_eq!(metric(&client, &server, "strand_sampling_log_records_without_spans_total").await, Some(1.0));

    // Late records follow the remembered decisions.
    post_logs(&client, &server, &log_export(7..9, now_ns(), Vec::new())).await;
    assert_eq!(log_count(&client, &server, &format!("traceId={}", trace_id(7))).await, 2);
    assert_eq!(log_count(&client, &server, &format!("traceId={}", trace_id(8))).await, 0);
    assert_eq!(metric(&client, &server, "strand_sampling_log_records_dropped_total").await, Some(30.0));
    server.stop().await;
}

/// A collector configuration's tail sampling, `ottl_condition` included, decides in a
/// running server as the collector would: a slow checkout kept by its OTTL condition, a
/// failing health check dropped by the `drop` policy although it failed, a fast checkout
/// dropped.
#[tokio::test]
async fn a_collector_tail_sampling_file_decides_in_a_running_server() {
    let example = common::repo().join("examples/collector-tail-sampling.yaml");
    let sources = strand_server::config::Sources { sampling_file: Some(example), ..Default::default() };
    let loaded = strand_server::config::load(&sources).expect("the example loads");
    let server = common::start(move |c| {
        c.sampling = loaded.sampling;
        c.sampling.decision_delay = "100ms".parse().expect("valid");
        c.sampling.decision_wait = "1s".parse().expect("valid");
    })
    .await;
    let client = reqwest::Client::new();
    let now = now_ns();
    // Ids the 5 % policy does not pick.
    let ids: Vec<usize> = (0..).filter(|i| !five_percent_by_hash(*i)).take(3).collect();
    let trace = |i: usize, service: &str, name: &str, path: &str, ms: u64, error: bool| {
        json!({
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
            "scopeSpans": [{ "spans": [{
                "traceId": trace_id(i), "spanId": "00000000000000a1", "name": name, "kind": 2,
                "startTimeUnixNano": (now - ms * 1_000_000).to_string(), "endTimeUnixNano": now.to_string(),
                "attributes": [{ "key": "url.path", "value": { "stringValue": path } }],
                "status": { "code": if error { 2 } else { 0 } }
            }] }]
        })
    };
    server
        .export(&json!({ "resourceSpans": [
            trace(ids[0], "checkout", "POST /pay", "/pay", 3_000, false),
            trace(ids[1], "checkout", "POST /pay", "/pay", 20, false),
            trace(ids[2], "gateway", "GET /healthz", "/healthz", 1, true),
        ] }))
        .await;
    wait_decided(&client, &server).await;
    let slow = stored_spans(&client, &server, &trace_id(ids[0])).await;
    assert_eq!(slow.len(), 1, "kept by its OTTL condition");
    assert_eq!(tag(&slow[0], "strand.sampling.policy").and_then(Value::as_str), Some("slow-checkout"));
    assert!(stored_spans(&client, &server, &trace_id(ids[1])).await.is_empty(), "fast: dropped");
    assert!(stored_spans(&client, &server, &trace_id(ids[2])).await.is_empty(), "health check: dropped");
    server.stop().await;
}
