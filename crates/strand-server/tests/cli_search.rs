//! `strand search`, `strand services` and `strand deps` against a running server.

mod common;

use std::process::Command;

use serde_json::json;

fn strand(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strand")).args(args).output().expect("run strand");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_services_and_deps_print_tables() {
    let server = common::start(|_| {}).await;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    let span = |id: &str, parent: &str, name: &str, code: u8| {
        json!({ "traceId": "5b8efff798038103d269b633813fc60c", "spanId": id, "parentSpanId": parent, "name": name,
                "kind": 2, "startTimeUnixNano": (now - 1_000_000_000).to_string(),
                "endTimeUnixNano": (now - 800_000_000).to_string(), "status": { "code": code },
                "attributes": [{ "key": "patient.region", "value": { "stringValue": "eu" } }] })
    };
    let rs = |svc: &str, spans: Vec<serde_json::Value>| {
        json!({
        "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": svc } }] },
        "scopeSpans": [{ "spans": spans }] })
    };
    let body = json!({ "resourceSpans": [
        rs("gateway", vec![span("1111111111111111", "", "POST /reports", 0)]),
        rs("epro-service", vec![span("2222222222222222", "1111111111111111", "Submit", 2)]) ] });
    server.export(&body).await;
    let url = format!("http://{}", server.http);
    let url2 = url.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        strand(&[
            "search",
            "--server",
            &url2,
            "--service",
            "epro-service",
            "--attr",
            "patient.region=eu",
            "--errors",
            "--min-duration",
            "100ms",
            "--since",
            "1h",
        ])
    })
    .await
    .expect("join");
    assert!(ok, "{err}");
    assert!(out.contains("5b8efff798038103d269b633813fc60c"), "{out}");
    assert!(
        out.contains("gateway: POST /reports") && out.contains("200.000ms") && out.contains("1 traces"),
        "{out}"
    );
    let url2 = url.clone();
    let (ok, out, _) = tokio::task::spawn_blocking(move || {
        strand(&["search", "--server", &url2, "--service", "epro-service", "--min-duration", "1s"])
    })
    .await
    .expect("join");
    assert!(ok && out.contains("0 traces"), "{out}");
    let url2 = url.clone();
    let (ok, out, _) =
        tokio::task::spawn_blocking(move || strand(&["services", "--server", &url2])).await.expect("join");
    assert!(ok);
    assert_eq!(out, "epro-service\ngateway\n");
    let url2 = url.clone();
    let (ok, out, _) =
        tokio::task::spawn_blocking(move || strand(&["deps", "--server", &url2, "--since", "1h"]))
            .await
            .expect("join");
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["gateway", "epro-service", "1", "1"]),
        "{out}"
    );
    let url2 = url.clone();
    let (ok, _, err) =
        tokio::task::spawn_blocking(move || strand(&["search", "--server", &url2, "--min-duration", "fast"]))
            .await
            .expect("join");
    assert!(!ok && err.contains("minDuration"), "{err}");
    server.stop().await;
}
