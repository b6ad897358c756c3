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

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python, or `None` (after saying why) when the test may be skipped.
pub fn venv_python() -> Option<PathBuf> {
    let python = std::env::var_os("INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    if python.exists() {
        return Some(python);
    }
    let required = std::env::var_os("INTEROP_TESTS_REQUIRED").is_some() || std::env::var_os("CI").is_some();
    assert!(
        !required,
        "{} missing: run scripts/test.sh, which installs the Python OTel SDK",
        python.display()
    );
    eprintln!("SKIPPED: {} missing; run scripts/test.sh to install the Python OTel SDK", python.display());
    None
}

fn run_script(python: &PathBuf, protocol: &str, endpoint: &str, query: &str) {
    let out = Command::new(python)
        .arg(repo().join("tests/interop/python_sdk_export.py"))
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
    let Some(python) = venv_python() else { return };
    let server = common::start(|_| {}).await;
    let query = format!("http://{}", server.http);
    let (py, q, grpc) = (python.clone(), query.clone(), server.grpc.to_string());
    tokio::task::spawn_blocking(move || run_script(&py, "grpc", &grpc, &q)).await.expect("grpc run");
    let (py, q, http) = (python, query, server.otlp_url());
    tokio::task::spawn_blocking(move || run_script(&py, "http", &http, &q)).await.expect("http run");
    server.stop().await;
}
