//! `/healthz` says the process serves; `/readyz` says whether ingest is accepted right now,
//! naming what is not ready.

mod common;

use serde_json::Value;

async fn get(url: String) -> (u16, Value) {
    let r = reqwest::get(url).await.expect("get");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_until_the_disk_budget_is_exceeded_and_healthy_throughout() {
    let server = common::start(|c| {
        c.storage.max_disk_size = Some("1KiB".parse().expect("size"));
    })
    .await;
    assert_eq!(get(server.query("/healthz")).await, (200, serde_json::json!({ "status": "ok" })));
    assert_eq!(get(server.query("/readyz")).await, (200, serde_json::json!({ "status": "ready" })));

    // The official example's spans, a few times over: more WAL than the budget allows.
    let trace = std::fs::read(common::fixture("otlp/trace.json")).expect("fixture");
    for _ in 0..8 {
        server.export_json(trace.clone()).await;
    }
    let (status, body) = get(server.query("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not ready");
    let reasons = body["reasons"].as_array().expect("reasons");
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.starts_with("disk: ") && r.contains("1024-byte budget"))),
        "{body}"
    );
    assert_eq!(get(server.query("/healthz")).await.0, 200, "the process still serves");
    server.stop().await;
}
