//! The OpenTelemetry Python SDK's Jaeger exporter (collector HTTP and agent UDP) and Zipkin
//! exporters (JSON and proto3) — the last releases that ship them — export a two-service
//! trace to a running strand; the script reads it back through the native API and checks
//! everything each protocol can carry (`tests/interop/legacy_export.py`).
//!
//! Needs the venv the test script (`scripts/test.sh`) installs in `.venv-legacy`. Without it
//! the test fails when `INTEROP_TESTS_REQUIRED` or `CI` is set and is skipped (loudly)
//! otherwise.

mod common;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_jaeger_and_zipkin_exporters_read_back() {
    let Some(python) =
        common::interop_python("LEGACY_INTEROP_PYTHON", ".venv-legacy", "the legacy exporters")
    else {
        return;
    };
    let server = common::start(|_| {}).await;
    let query = format!("http://{}", server.http);
    let runs = [
        ("jaeger-http", format!("http://{}/api/traces", server.jaeger_http)),
        ("jaeger-udp", server.jaeger_agent.to_string()),
        ("zipkin-json", format!("http://{}/api/v2/spans", server.zipkin)),
        ("zipkin-proto", format!("http://{}/api/v2/spans", server.zipkin)),
    ];
    for (protocol, endpoint) in runs {
        let (py, q) = (python.clone(), query.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(py)
                .args(["-W", "ignore::DeprecationWarning"])
                .arg(common::repo().join("tests/interop/legacy_export.py"))
                .args(["export", protocol, &endpoint, &q])
                .output()
                .expect("run python")
        })
        .await
        .expect("python task");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{protocol} interop failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains(&format!("{protocol}: all 4 spans read back as sent")), "{stdout}");
    }
    server.stop().await;
}
