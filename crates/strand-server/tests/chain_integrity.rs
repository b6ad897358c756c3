//! Chain integrity through a running server: labelled submissions (the generator's) sent
//! over OTLP/HTTP are analysed once settled; the broken ones are flagged on the right edge
//! and linked to their other half in the native API, the Jaeger JSON and searches of all
//! three APIs; complete ones raise nothing; edge health and `/metrics` count the calls.

mod common;

use std::time::Duration;

use serde_json::Value;
use strand_integrity::scenario::{Shape, Submission, submission};

/// Quiet time before a trace is analysed: long enough to read a trace before it settles.
const SETTLE: Duration = Duration::from_secs(2);

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
}

/// Sends one labelled submission of each shape, a second apart, the first `ago` seconds ago.
async fn send(server: &common::TestServer, ago: u64, shapes: &[Shape]) -> Vec<Submission> {
    let start = now_ns() - ago * 1_000_000_000;
    let subs: Vec<Submission> = shapes
        .iter()
        .enumerate()
        .map(|(n, shape)| submission(n as u64, start + n as u64 * 1_000_000_000, *shape))
        .collect();
    for sub in &subs {
        for (_, batch) in &sub.batches {
            server.export_batch(batch).await;
        }
    }
    subs
}

async fn get(server: &common::TestServer, path: &str) -> Value {
    common::get_json(&server.query(path)).await
}

fn ids(page: &Value, list: &str, key: &str) -> Vec<String> {
    page[list].as_array().into_iter().flatten().filter_map(|t| t[key].as_str().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_chains_are_flagged_linked_and_counted() {
    let server = common::start(|c| {
        c.integrity.settle_time = strand_core::units::HumanDuration(SETTLE);
        c.integrity.hop_window = strand_core::units::HumanDuration(Duration::from_secs(1));
    })
    .await;
    let subs = send(
        &server,
        60,
        &[Shape::Complete, Shape::Complete, Shape::BreakQueue, Shape::BreakSpawn, Shape::BreakHttp],
    )
    .await;
    let sent = std::time::Instant::now();
    let hex = |t: strand_core::TraceId| t.to_hex();
    let queue = &subs[2];
    let (producer_trace, consumer_trace) = (hex(queue.traces[0]), hex(queue.traces[1]));

    // Before it settles, a trace is analysed as it stands and says so (checked when the read
    // surely came before the settle time, which a very slow machine could miss).
    let early = get(&server, &format!("/api/v1/traces/{producer_trace}")).await;
    if sent.elapsed() < SETTLE {
        assert_eq!(early["integrity"]["settled"], false, "{}", early["integrity"]);
    }

    // Settled and analysed within a tick: the search finds the broken ones.
    let broken = common::eventually("the broken traces to be found", || async {
        let page = get(&server, "/api/v1/search?integrity=broken&limit=50").await;
        let found = ids(&page, "traces", "traceId");
        (found.len() >= 5).then_some(page)
    })
    .await;
    let mut found = ids(&broken, "traces", "traceId");
    found.sort();
    let mut want: Vec<String> = subs.iter().flat_map(|s| &s.expected).map(|e| e.trace_id.to_hex()).collect();
    want.sort();
    want.dedup();
    assert_eq!(found, want, "exactly the traces the breaks leave broken");
    let badge = broken["traces"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["traceId"] == consumer_trace))
        .expect("the consumer trace");
    assert_eq!(badge["integrity"], serde_json::json!(["consumer_new_root"]));

    // The queue hop: both halves name each other.
    let producer = get(&server, &format!("/api/v1/traces/{producer_trace}")).await;
    let integrity = &producer["integrity"];
    assert_eq!((integrity["settled"].as_bool(), integrity["complete"].as_bool()), (Some(true), Some(true)));
    let f = &integrity["findings"][0];
    assert_eq!(f["kind"], "producer_without_consumer", "{integrity}");
    assert_eq!(f["services"], serde_json::json!(["data-service", "notify-service"]));
    assert_eq!(f["relatedTraceId"], consumer_trace.as_str());
    let consumer = get(&server, &format!("/api/v1/traces/{consumer_trace}")).await;
    let f = &consumer["integrity"]["findings"][0];
    assert_eq!(f["kind"], "consumer_new_root", "{}", consumer["integrity"]);
    assert_eq!(f["relatedTraceId"], producer_trace.as_str());

    // A complete submission: settled, whole, nothing found.
    let whole = get(&server, &format!("/api/v1/traces/{}", hex(subs[0].traces[0]))).await;
    assert_eq!(whole["integrity"], serde_json::json!({ "settled": true, "complete": true, "findings": [] }));

    // Kind filters in all three APIs.
    let page = get(&server, "/api/v1/search?integrity=unrooted_work").await;
    assert_eq!(ids(&page, "traces", "traceId"), [hex(subs[3].traces[1])]);
    let page = get(&server, "/api/v1/search?integrity=client_without_server&service=user-service").await;
    assert_eq!(ids(&page, "traces", "traceId"), [hex(subs[4].traces[1])], "with a span condition too");
    let tags = "%7B%22integrity%22%3A%22consumer_new_root%22%7D";
    let jaeger = get(&server, &format!("/api/traces?service=notify-service&tags={tags}")).await;
    assert_eq!(ids(&jaeger, "data", "traceID"), [consumer_trace.as_str()]);
    let tempo = get(&server, "/api/search?tags=integrity%3Dproducer_without_consumer").await;
    assert_eq!(ids(&tempo, "traces", "traceID"), [producer_trace.as_str()]);
    // TraceQL's `integrity` extension, alone and beside span conditions.
    let traceql = |q: &str| {
        let q: String = q.bytes().map(|b| format!("%{b:02X}")).collect();
        format!("/api/search?q={q}")
    };
    let tempo = get(&server, &traceql(r#"{ integrity = "producer_without_consumer" }"#)).await;
    assert_eq!(ids(&tempo, "traces", "traceID"), [producer_trace.as_str()]);
    let tempo = get(
        &server,
        &traceql(r#"{ resource.service.name = "notify-service" && integrity = "consumer_new_root" }"#),
    )
    .await;
    assert_eq!(ids(&tempo, "traces", "traceID"), [consumer_trace.as_str()]);
    let whole_trace = hex(subs[0].traces[0]);
    let tempo = get(&server, &traceql(r#"{ integrity != "broken" && kind = server } | count() > 1"#)).await;
    assert!(ids(&tempo, "traces", "traceID").contains(&whole_trace), "{tempo}");
    assert!(!ids(&tempo, "traces", "traceID").contains(&producer_trace), "{tempo}");
    let bad = reqwest::get(server.query(&traceql(r#"{ integrity = "shaky" }"#))).await.expect("get");
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.expect("text").contains("column 3: `integrity`"));
    let bad = reqwest::get(server.query("/api/v1/search?integrity=shaky")).await.expect("get");
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.expect("text").contains("unknown integrity finding kind `shaky`"));
    // Malformed filters and ranges are refused with the parameter named, in every API.
    for (path, says) in [
        (
            "/api/traces?service=gateway&tags=%7B%22integrity%22%3A%22nope%22%7D",
            "unknown integrity finding kind `nope`",
        ),
        ("/api/search?tags=integrity%3Dnope", "unknown integrity finding kind `nope`"),
        ("/api/v1/integrity/edges?start=yesterday", "start"),
        ("/api/v1/integrity/edges?since=forever", "since"),
        ("/api/v1/integrity/edges?start=2000&end=1000", "start of the time range is after its end"),
    ] {
        let resp = reqwest::get(server.query(path)).await.expect("get");
        assert_eq!(resp.status(), 400, "{path}");
        let text = resp.text().await.expect("text");
        assert!(text.contains(says), "{path}: {text}");
    }

    // Jaeger JSON: the producer span carries the finding as a warning and references the
    // consumer's span in the other trace.
    let jaeger = get(&server, &format!("/api/traces/{producer_trace}")).await;
    let spans = jaeger["data"][0]["spans"].as_array().expect("spans");
    let send =
        spans.iter().find(|s| s["operationName"] == "send patient-report.submitted").expect("producer");
    assert!(
        send["warnings"][0]
            .as_str()
            .is_some_and(|w| w.starts_with("chain integrity: producer_without_consumer"))
    );
    assert!(
        send["references"]
            .as_array()
            .expect("refs")
            .iter()
            .any(|r| r["refType"] == "FOLLOWS_FROM" && r["traceID"] == consumer_trace.as_str()),
        "{send}"
    );

    // Edge health and metrics count each call once.
    let edges = get(&server, "/api/v1/integrity/edges").await;
    let edge = |caller: &str, callee: &str| {
        edges["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["caller"] == caller && e["callee"] == callee)
            .map(|e| (e["crossed"].as_u64().unwrap_or(0), e["lost"].as_u64().unwrap_or(0)))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    assert_eq!(edge("gateway", "user-service"), (4, 1), "{edges}");
    let queue_edge = common::eventually("the queue edge to count every hop", || async {
        let edges = get(&server, "/api/v1/integrity/edges").await;
        let sum = edges["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["caller"] == "data-service" && e["callee"] == "notify-service")
            .map(|e| (e["crossed"].as_u64().unwrap_or(0), e["lost"].as_u64().unwrap_or(0)))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        (sum == (4, 1)).then_some(sum)
    })
    .await;
    assert_eq!(queue_edge, (4, 1));
    let metrics = reqwest::get(server.query("/metrics")).await.expect("get").text().await.expect("text");
    let series = r#"strand_chain_calls_total{caller="gateway",callee="user-service",outcome="lost"}"#;
    assert_eq!(common::metric_value(&metrics, series), Some(1.0), "{series} in {metrics}");
    server.stop().await;
}

/// The UI shows it: `tests/browser/integrity.test.mjs` in headless Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_shows_findings_links_halves_and_marks_the_edge() {
    if common::node_with_playwright().is_none() {
        return;
    }
    let server = common::start(|c| {
        c.integrity.settle_time = strand_core::units::HumanDuration(Duration::from_millis(200));
    })
    .await;
    let subs =
        send(&server, 120, &[Shape::Complete, Shape::BreakQueue, Shape::BreakSpawn, Shape::BreakLostSpan])
            .await;
    common::eventually("the breaks to be analysed", || async {
        let page = get(&server, "/api/v1/search?integrity=broken").await;
        (ids(&page, "traces", "traceId").len() == 4).then_some(())
    })
    .await;
    let hex = |t: strand_core::TraceId| t.to_hex();
    let envs = [
        ("STRAND_URL", format!("http://{}", server.http)),
        ("STRAND_UI_ARTIFACTS", common::repo().join("test-artifacts/ui").display().to_string()),
        ("PRODUCER_TRACE", hex(subs[1].traces[0])),
        ("CONSUMER_TRACE", hex(subs[1].traces[1])),
        ("REQUEST_TRACE", hex(subs[2].traces[0])),
        ("TASK_TRACE", hex(subs[2].traces[1])),
        ("DETACHED_TRACE", hex(subs[3].traces[0])),
    ];
    tokio::task::spawn_blocking(move || {
        common::run_node(&["--test", "--test-concurrency=1", "integrity.test.mjs"], &envs)
    })
    .await
    .expect("browser tests");
    server.stop().await;
}

/// Findings of settled traces are in the findings log before the next tick ends: a
/// SIGKILL loses none of them, and after the restart searches and trace reads find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_survive_a_kill_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let args = ["--set", "integrity.settle_time=1s"];
    let server = common::spawn_binary(&data, &args);
    let sub = submission(7, now_ns() - 60_000_000_000, Shape::BreakQueue);
    for (_, batch) in &sub.batches {
        common::export_batch_to(&server.otlp_http, batch).await;
    }
    let search = |http: String| async move {
        let page = common::get_json(&format!("http://{http}/api/v1/search?integrity=broken")).await;
        let mut found = ids(&page, "traces", "traceId");
        found.sort();
        found
    };
    let mut want: Vec<String> = sub.traces.iter().map(|t| t.to_hex()).collect();
    want.sort();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while search(server.http.clone()).await != want {
        assert!(std::time::Instant::now() < deadline, "the break was never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server); // SIGKILL

    let server = common::spawn_binary(&data, &args);
    assert_eq!(search(server.http.clone()).await, want, "found again after the restart");
    let trace = common::get_json(&format!("http://{}/api/v1/traces/{}", server.http, want[0])).await;
    let kinds: Vec<&str> = trace["integrity"]["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert!(!kinds.is_empty(), "{}", trace["integrity"]);
    assert!(
        trace["integrity"]["findings"][0]["relatedTraceId"].is_string(),
        "still linked: {}",
        trace["integrity"]
    );
}
