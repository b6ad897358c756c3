//! `storage.backend: memory` serves every API from memory and writes no data files.

mod common;

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_backend_stores_and_serves_without_data_files() {
    let server = common::start(|c| c.storage.backend = strand_server::config::Backend::Memory).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    server
        .export(&json!({ "resourceSpans": [{
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "memory-svc" } }] },
            "scopeSpans": [{ "spans": [{
                "traceId": trace, "spanId": "b7ad6b7169203331", "name": "GET /mem", "kind": 2,
                "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000"
            }] }]
        }] }))
        .await;
    let client = reqwest::Client::new();
    let body: serde_json::Value = client
        .get(server.query(&format!("/api/v1/traces/{trace}")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(body["spanCount"], 1, "{body}");
    let services: serde_json::Value =
        client.get(server.query("/api/services")).send().await.expect("get").json().await.expect("json");
    assert_eq!(services["data"], json!(["memory-svc"]));
    server.flush().await;
    let metrics = client.get(server.query("/metrics")).send().await.expect("get").text().await.expect("text");
    assert_eq!(common::metric_value(&metrics, "strand_memory_spans"), Some(1.0), "{metrics}");
    let data_dir = server.dir.path().join("data");
    assert!(!data_dir.join("wal").exists() && !data_dir.join("blocks").exists(), "no store files written");
    server.stop().await;
}
