//! `strand serve --demo` leaves a newcomer something to look at: recent submissions with
//! an error chain, a featured one with a slow query, a queue hop and a refused SMS attempt,
//! and a task that outlives its request, found by the UI's default search, pointed to by the
//! home page and drawn on the service map.

mod common;

use serde_json::Value;
use strand_server::demo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_stores_recent_traces_worth_a_look() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = common::spawn_binary(&data, &["--demo", "--set", "integrity.settle_time=1s"]);
    let base = format!("http://{}", server.http);
    let get = |path: String| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.expect("get").json::<Value>().await.expect("json") }
    };
    // What the UI's home page asks: the last hour. One trace per submission, and one more:
    // the broken submission's notify-service part.
    let page = get("/api/v1/search?since=1h&limit=20".into()).await;
    let traces = page["traces"].as_array().expect("traces");
    assert_eq!(traces.len(), usize::from(demo::SUBMISSIONS) + 1, "{page}");
    let status = get("/api/v1/status".into()).await;
    let featured = status["demo"]["traceId"].as_str().expect("the featured trace").to_owned();
    let with_errors: Vec<&str> = traces
        .iter()
        .filter(|t| t["errorCount"].as_u64() > Some(0))
        .filter_map(|t| t["traceId"].as_str())
        .collect();
    assert_eq!(with_errors.len(), 2, "the failing submission and the featured one have errors: {page}");
    assert_eq!(with_errors[0], featured, "the featured one (its SMS attempt) is the newer");
    let slow = traces.iter().find(|t| t["traceId"] == featured.as_str()).expect("the featured trace listed");
    assert!(
        slow["durationNano"].as_u64() > Some(1_000_000_000),
        "the slow submission takes over a second: {slow}"
    );

    // A queue hop and a detached task: the consumer is the producer's child, send-sms ends
    // after the request's root span.
    let first = traces.last().and_then(|t| t["traceId"].as_str()).expect("the oldest submission");
    let trace = get(format!("/api/v1/traces/{first}")).await;
    let spans: Vec<&Value> = trace["resourceSpans"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rs| rs["scopeSpans"].as_array().into_iter().flatten())
        .flat_map(|ss| ss["spans"].as_array().into_iter().flatten())
        .collect();
    let by_name = |name: &str| *spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name}"));
    let (producer, consumer) =
        (by_name("send patient-report.submitted"), by_name("process patient-report.submitted"));
    assert_eq!((producer["kind"].as_u64(), consumer["kind"].as_u64()), (Some(4), Some(5)));
    assert_eq!(consumer["parentSpanId"], producer["spanId"]);
    let end = |s: &Value| s["endTimeUnixNano"].as_str().and_then(|t| t.parse::<u64>().ok()).expect("end");
    assert!(end(by_name("send-sms")) > end(by_name("POST /reports")), "the SMS task outlives the request");

    // The broken chain: once settled (a second here), its queue hop is flagged and linked.
    let broken = status["demo"]["brokenTraceId"].as_str().expect("the broken trace").to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let finding = loop {
        let trace = get(format!("/api/v1/traces/{broken}")).await;
        let f = trace["integrity"]["findings"][0].clone();
        if trace["integrity"]["settled"] == true && !f.is_null() {
            break f;
        }
        assert!(std::time::Instant::now() < deadline, "never settled: {}", trace["integrity"]);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(finding["kind"], "producer_without_consumer", "{finding}");
    assert_eq!(finding["services"], serde_json::json!(["data-service", "notify-service"]));
    assert!(finding["relatedTraceId"].is_string(), "the consumer's new trace is named: {finding}");

    let deps = get("/api/v1/dependencies".into()).await;
    let edges: Vec<(String, String)> = deps["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (e["parent"].as_str().unwrap_or("").to_owned(), e["child"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    for (a, b) in [
        ("gateway", "user-service"),
        ("gateway", "epro-service"),
        ("epro-service", "data-service"),
        ("data-service", "notify-service"),
    ] {
        assert!(edges.contains(&(a.to_owned(), b.to_owned())), "{a} → {b} in {edges:?}");
    }
    drop(server);

    // A second start on the same data directory adds a new run beside the first.
    let server = common::spawn_binary(&data, &["--demo"]);
    let page = common::get_json(&format!("http://{}/api/v1/search?since=1h&limit=50", server.http)).await;
    let ids: std::collections::HashSet<&str> =
        page["traces"].as_array().into_iter().flatten().filter_map(|t| t["traceId"].as_str()).collect();
    assert_eq!(
        ids.len(),
        2 * (usize::from(demo::SUBMISSIONS) + 1),
        "two runs, none mixed into the other: {page}"
    );
}

/// From the UI's home page a newcomer reaches the featured demo trace's red span
/// (`tests/browser/demo.test.mjs` in headless Chromium).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_page_leads_to_the_demo_trace_and_its_red_span() {
    if common::node_with_playwright().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::spawn_binary(&dir.path().join("data"), &["--demo"]);
    let status = common::get_json(&format!("http://{}/api/v1/status", server.http)).await;
    assert!(status["demo"]["traceId"].as_str().is_some_and(|t| &t[8..16] == "de30de30"), "{status}");
    let envs = [
        ("STRAND_URL", format!("http://{}", server.http)),
        ("STRAND_UI_ARTIFACTS", common::repo().join("test-artifacts/ui").display().to_string()),
    ];
    tokio::task::spawn_blocking(move || common::run_node(&["--test", "demo.test.mjs"], &envs))
        .await
        .expect("browser test");
}
