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
        out.contains("gateway: POST /reports") && out.contains("200.000ms") && out.contains("\n1 trace\n"),
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

/// Data with old timestamps (the official examples, fixtures) is found by an absolute
/// range; `deps` without a range covers all stored data; day units parse; a closed pipe
/// ends the output quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_data_is_found_and_output_survives_a_closed_pipe() {
    let server = common::start(|_| {}).await;
    // 2023-11-14T22:13:20Z, as in the official OTLP example; 400 spans make the JSON far
    // bigger than a pipe buffer.
    let t0 = 1_700_000_000_000_000_000u64;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let spans: Vec<_> = (1..=400u64)
        .map(|i| {
            json!({ "traceId": trace, "spanId": format!("{i:016x}"),
                    "parentSpanId": if i == 1 { String::new() } else { format!("{:016x}", 1) },
                    "name": format!("op-{i}"), "kind": 2,
                    "startTimeUnixNano": (t0 + i).to_string(), "endTimeUnixNano": (t0 + 1_000_000 + i).to_string() })
        })
        .collect();
    let (root, children) = spans.split_at(1);
    server
        .export(&json!({ "resourceSpans": [
            { "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "old-gateway" } }] },
              "scopeSpans": [{ "spans": root }] },
            { "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "old-backend" } }] },
              "scopeSpans": [{ "spans": children }] } ] }))
        .await;
    let url = format!("http://{}", server.http);
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || strand(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).chain(["--server".into(), url.clone()]).collect();

    let (ok, out, err) =
        run(args(&["search", "--start", "2023-11-14T00:00:00Z", "--end", "2023-11-15T00:00:00Z"]))
            .await
            .expect("join");
    assert!(ok && out.contains(trace) && out.contains("\n1 trace\n"), "{out}{err}");
    let (ok, out, err) = run(args(&["search", "--since", "800d"])).await.expect("join");
    assert!(
        ok && out.contains("warning: time range reduced"),
        "day units parse; the range is bounded: {out}{err}"
    );
    assert!(
        out.contains("the newest matching trace started at 2023-11-14 22:13:20.000 UTC"),
        "a shortened range still says where the data is: {out}"
    );
    let (ok, out, err) = run(args(&["deps"])).await.expect("join");
    assert!(
        ok && out
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["old-gateway", "old-backend", "399", "0"]),
        "deps without a range covers all stored data: {out}{err}"
    );
    let (ok, out, _) = run(args(&["services", "--since", "1h"])).await.expect("join");
    assert!(ok && out.is_empty(), "nothing in the last hour: {out}");

    // `strand trace --json | head -1`: the reader goes away after the first line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_strand"))
        .args(["trace", trace, "--json", "--server", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run strand");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("some output");
    drop(stdout);
    let out =
        tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.is_empty(),
        "a closed pipe ends the output quietly: {:?} {err}",
        out.status
    );
    server.stop().await;
}

#[test]
fn deps_columns_fit_long_names() {
    let body = json!({ "dependencies": [
        { "parent": "a", "child": "patient-report-notification-service-eu-west", "callCount": 3, "errorCount": 0 },
        { "parent": "gateway-with-a-rather-long-name-for-a-service", "child": "b", "callCount": 12, "errorCount": 1 } ] });
    let out = strand_server::search_cmd::render_deps(&body);
    let lines: Vec<&str> = out.lines().collect();
    // Every row is as long as the header: the numbers line up under CALLS and ERRORS.
    assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{out}");
    assert!(lines[2].ends_with("      12         1"), "{out}");
}

#[test]
fn an_empty_search_says_where_the_newest_match_is() {
    let body = json!({ "traces": [], "nextCursor": null, "warnings": [],
                       "newestMatch": { "traceId": "5b8efff798038103d269b633813fc60c", "startTimeUnixNano": "1544712660000000000",
                                        "endTimeUnixNano": "1544716261000000000" } });
    let out = strand_server::search_cmd::render_search(&body);
    assert!(out.contains("0 traces"), "{out}");
    assert!(
        out.contains("the newest matching trace started at 2018-12-13 14:51:00.000 UTC: search with --start 2018-12-13T13:51:00Z --end 2018-12-13T16:51:01Z (instead of --since)"),
        "{out}"
    );
}

#[test]
fn an_unreachable_server_is_named_once_with_the_cause() {
    // Port 1 on loopback: nothing listens there.
    let (ok, out, err) = strand(&["services", "--server", "http://127.0.0.1:1"]);
    assert!(!ok && out.is_empty());
    assert!(err.starts_with("error: cannot reach the Strand server at http://127.0.0.1:1: "), "{err}");
    assert!(err.contains("refused") && err.contains("STRAND_SERVER"), "{err}");
    assert_eq!(err.matches("127.0.0.1:1").count(), 1, "the address once, not the URL twice: {err}");
    assert!(!err.to_lowercase().contains("error: error"), "{err}");
}
