//! `/metrics` is valid Prometheus exposition by the Prometheus project's own checker
//! (`promtool check metrics`, from Debian's `prometheus` package): names, types, units,
//! help texts. It carries the process's metrics and the build info, and stays small when
//! services have many operations.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// 12 services with 25 operations each; a call edge and an error in every trace.
fn traffic(now_ns: u64) -> Value {
    let mut resource_spans = Vec::new();
    for svc in 0..12u64 {
        let spans: Vec<Value> = (0..25u64)
            .flat_map(|op| {
                let trace = format!("{:016x}{:016x}", 0xabc0 + svc, op + 1);
                let start = (now_ns - 40_000_000).to_string();
                let end = (now_ns - 10_000_000).to_string();
                [
                    json!({ "traceId": trace, "spanId": format!("{:016x}", op + 1), "name": format!("GET /op/{op}"),
                            "kind": 2, "startTimeUnixNano": start, "endTimeUnixNano": end }),
                    json!({ "traceId": trace, "spanId": format!("{:016x}", op + 1001), "parentSpanId": format!("{:016x}", op + 1),
                            "name": "SELECT", "kind": 3, "startTimeUnixNano": start, "endTimeUnixNano": end,
                            "status": { "code": if op % 5 == 0 { 2 } else { 0 } } }),
                ]
            })
            .collect();
        resource_spans.push(json!({
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": format!("svc-{svc}") } }] },
            "scopeSpans": [{ "scope": { "name": "t" }, "spans": spans }]
        }));
    }
    json!({ "resourceSpans": resource_spans })
}

fn promtool() -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from("/usr/bin/promtool");
    if path.exists() {
        return Some(path);
    }
    let required = std::env::var_os("INTEROP_TESTS_REQUIRED").is_some() || std::env::var_os("CI").is_some();
    assert!(!required, "promtool missing: run scripts/test.sh, which installs Debian's prometheus package");
    eprintln!("SKIPPED: promtool missing; run scripts/test.sh to install it");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_stay_small() {
    let Some(promtool) = promtool() else { return };
    let server = common::start(|c| {
        c.sampling.policies = strand_sampling::SamplingConfig::shorthand("errors-plus=5%").expect("valid");
    })
    .await;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    server.export(&traffic(now)).await;
    // Some refused input, so the refusal counters have something to say.
    let refused = reqwest::Client::new()
        .post(server.otlp_url())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 400);
    let resp = reqwest::get(server.query("/metrics")).await.expect("metrics");
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4");
    let text = resp.text().await.expect("text");

    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = check.wait_with_output().expect("promtool");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}\n--- exposition ---\n{text}"
    );

    for series in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "strand_build_info{version=\"0.1.0\"}",
        "strand_receiver_requests_refused_total{protocol=\"otlp_http\"}",
        "strand_wal_fsync_seconds_total",
    ] {
        assert!(common::metric_value(&text, series).is_some(), "{series} missing from\n{text}");
    }
    assert_eq!(
        common::metric_value(
            &text,
            "strand_span_requests_total{service=\"svc-3\",operation=\"SELECT\",span_kind=\"client\",status=\"error\"}"
        ),
        Some(5.0),
        "{text}"
    );
    // 312 operations in 12 services: a histogram per service for each of its first five
    // operations (per kind), the rest under operation="other".
    let histograms = text.lines().filter(|l| l.starts_with("strand_span_duration_seconds_count{")).count();
    assert!(histograms <= 12 * 7, "{histograms} duration histograms");
    assert!(text.len() < 250 * 1024, "the exposition is {} KiB", text.len() / 1024);
    eprintln!("exposition: {} KiB, {histograms} histograms", text.len() / 1024);
    server.stop().await;
}
