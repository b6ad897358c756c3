//! `/healthz` says the process serves; `/readyz` says whether ingest is accepted right now.
//! What makes a server not ready, and the reasons it names, is tested on a real full disk
//! in `disk_on_tmpfs.rs` and in the store's own tests.

mod common;

async fn get(url: String) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.expect("get");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_is_healthy_and_ready() {
    let server = common::start(|_| {}).await;
    assert_eq!(get(server.query("/healthz")).await, (200, serde_json::json!({ "status": "ok" })));
    assert_eq!(get(server.query("/readyz")).await, (200, serde_json::json!({ "status": "ready" })));
    server.export_json(std::fs::read(common::fixture("otlp/trace.json")).expect("fixture")).await;
    assert_eq!(get(server.query("/readyz")).await.0, 200, "still ready after a write");
    server.stop().await;
}
