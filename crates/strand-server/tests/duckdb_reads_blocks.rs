//! Blocks are plain Parquet: the README's DuckDB queries (spans, traces, log records) run
//! against a real data directory
//! (`tests/interop/duckdb_reads_readme_queries.py` runs the SQL taken from the README).

mod common;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_duckdb_queries_read_blocks() {
    let repo = common::repo();
    let Some(python) = common::interop_python("INTEROP_PYTHON", ".venv", "DuckDB") else { return };
    let server = common::start(|_| {}).await;
    let fixture = std::fs::read(common::fixture("otlp/trace.json")).expect("fixture");
    server.export_json(fixture.clone()).await;
    // The fixture span's parent, starting before it: stored as a row back, which the
    // README's self-join turns into its id.
    let mut parent: serde_json::Value = serde_json::from_slice(&fixture).expect("json");
    let span = &mut parent["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    span["spanId"] = "EEE19B7EC3C1B173".into();
    span["parentSpanId"] = "".into();
    span["startTimeUnixNano"] = "1544712659000000000".into();
    server.export_json(serde_json::to_vec(&parent).expect("json")).await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/logs", server.otlp_http))
        .header("content-type", "application/json")
        .body(std::fs::read(common::fixture("otlp/logs.json")).expect("fixture"))
        .send()
        .await
        .expect("post logs");
    assert_eq!(resp.status(), 200);
    let data = server.dir.path().join("data");
    let dir = server.stop().await; // a clean stop cuts the head into a block
    let out = Command::new(&python)
        .arg(repo.join("tests/interop/duckdb_reads_readme_queries.py"))
        .arg(repo.join("README.md"))
        .arg(&data)
        .arg("5b8efff798038103d269b633813fc60c")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("'eee19b7ec3c1b174', 'eee19b7ec3c1b173', 1,"),
        "the fixture span's parent, one row back, through the self-join: {stdout}"
    );
    drop(dir);
}
