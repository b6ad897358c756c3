//! The official OpenTelemetry Python SDK exports a multi-service trace over OTLP/gRPC and
//! OTLP/HTTP (both gzipped) to a running strand; its script reads the trace back through the
//! API and checks every field it sent, then finds it through the native, Jaeger v1, api_v3
//! and Tempo APIs and checks each answer's shape (`tests/interop/python_sdk_export.py`).
//!
//! Needs the Python venv the test script (`scripts/test.sh`) installs in `.venv`. Without it
//! the test fails when `INTEROP_TESTS_REQUIRED` or `CI` is set and is skipped (loudly)
//! otherwise.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn run_script(python: &PathBuf, protocol: &str, endpoint: &str, query: &str) {
    let out = Command::new(python)
        .arg(common::repo().join("tests/interop/python_sdk_export.py"))
        .args([protocol, endpoint, query])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{protocol} interop failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("and through the native, Jaeger v1, api_v3 and Tempo APIs"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_exports_over_grpc_and_http_and_reads_back() {
    let Some(python) = common::interop_python("INTEROP_PYTHON", ".venv", "the Python OTel SDK") else {
        return;
    };
    let server = common::start(|_| {}).await;
    let query = format!("http://{}", server.http);
    let (py, q, grpc) = (python.clone(), query.clone(), server.grpc.to_string());
    tokio::task::spawn_blocking(move || run_script(&py, "grpc", &grpc, &q)).await.expect("grpc run");
    let (py, q, http) = (python, query, server.otlp_url());
    tokio::task::spawn_blocking(move || run_script(&py, "http", &http, &q)).await.expect("http run");
    server.stop().await;
}
