//! Log records through a running server: the official OTLP logs example in over HTTP (JSON
//! and gzipped protobuf) and gRPC, read back field for field by trace and span, counted
//! on the trace, shown as span logs in Jaeger's JSON, searched and paged; kept across a
//! restart and when the trace's spans were sampled away.

mod common;

use std::io::Write;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use prost::Message;
use serde_json::{Value, json};

const TRACE: &str = "5b8efff798038103d269b633813fc60c";
const SPAN: &str = "eee19b7ec3c1b174";

fn example() -> ExportLogsServiceRequest {
    let text = std::fs::read(common::fixture("otlp/logs.json")).expect("fixture");
    serde_json::from_slice(&text).expect("the official example parses")
}

async fn post(url: String, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(url).header("content-type", content_type).body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.send().await.expect("post")
}

fn resource_logs(answer: &Value) -> Vec<ResourceLogs> {
    serde_json::from_value(answer["resourceLogs"].clone()).expect("OTLP/JSON resourceLogs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_logs_example_is_stored_and_found_by_trace_and_span() {
    let server = common::start(|_| {}).await;
    let logs_url = format!("http://{}/v1/logs", server.otlp_http);
    let fixture = std::fs::read(common::fixture("otlp/logs.json")).expect("fixture");
    let resp = post(logs_url.clone(), "application/json", None, fixture).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
    // The same records again, as an SDK's retry in gzipped protobuf: stored once.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&example().encode_to_vec()).expect("gzip");
    let resp = post(logs_url, "application/x-protobuf", Some("gzip"), gz.finish().expect("gzip")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    // And the trace's spans.
    server.export_json(std::fs::read(common::fixture("otlp/trace.json")).expect("fixture")).await;

    let want = example().resource_logs;
    let by_trace = common::get_json(&server.query(&format!("/api/v1/logs?traceId={TRACE}"))).await;
    assert_eq!(by_trace["count"], 1, "{by_trace}");
    assert_eq!(resource_logs(&by_trace), want, "every field of the example reads back");
    let by_span =
        common::get_json(&server.query(&format!("/api/v1/logs?traceId={TRACE}&spanId={SPAN}"))).await;
    assert_eq!(resource_logs(&by_span), want);
    let other_span =
        common::get_json(&server.query(&format!("/api/v1/logs?traceId={TRACE}&spanId={}", "1".repeat(16))))
            .await;
    assert_eq!(other_span["count"], 0);

    let trace = common::get_json(&server.query(&format!("/api/v1/traces/{TRACE}"))).await;
    assert_eq!(trace["logCount"], 1, "{trace}");
    assert_eq!(trace["spanLogCounts"], json!({ SPAN: 1 }));
    let jaeger = common::get_json(&server.query(&format!("/api/traces/{TRACE}"))).await;
    let span = jaeger["data"][0]["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .find(|s| s["spanID"] == SPAN)
        .expect("the span of the record");
    let line = span["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .find(|l| l["fields"][0]["key"] == "message")
        .unwrap_or_else(|| panic!("the record is among the span's logs: {span}"));
    assert_eq!(line["timestamp"], 1_544_712_660_300_000u64);
    assert_eq!(line["fields"][0]["value"], "Example log record");
    assert_eq!(line["fields"][1], json!({ "key": "level", "type": "string", "value": "Information" }));
    assert!(
        line["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .any(|f| f["key"] == "int.attribute" && f["value"] == 10)
    );

    // Through the CLI: each span's lines under it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strand"))
        .args(["trace", TRACE, "--logs", "--server", &format!("http://{}", server.http)])
        .output()
        .expect("run strand trace");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let span_line = text
        .lines()
        .position(|l| l.contains("I'm a server span"))
        .unwrap_or_else(|| panic!("span listed: {text}"));
    let log_line = text
        .lines()
        .position(|l| l.contains("Example log record"))
        .unwrap_or_else(|| panic!("log listed: {text}"));
    assert!(log_line > span_line, "the record is printed under its span:\n{text}");
    assert!(text.contains("Information"), "{text}");

    // Restart: everything is still there, from blocks now.
    let dir = server.stop().await;
    let server = common::start(|c| c.data_dir = dir.path().join("data")).await;
    let again = common::get_json(&server.query(&format!("/api/v1/logs?traceId={TRACE}"))).await;
    assert_eq!(resource_logs(&again), want, "the records survive a restart");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_search_filters_pages_and_refuses_bad_parameters() {
    let server = common::start(|_| {}).await;
    let base = 1_765_000_000_000_000_000u64;
    // 30 records of two services; every third a WARN, every fifth names a payment.
    let records: Vec<Value> = (0..30u64)
        .map(|i| {
            let body =
                if i % 5 == 0 { format!("Payment {i} DECLINED by bank") } else { format!("step {i} done") };
            json!({
                "timeUnixNano": (base + i * 1_000_000).to_string(),
                "severityNumber": if i % 3 == 0 { 13 } else { 9 },
                "severityText": if i % 3 == 0 { "WARN" } else { "INFO" },
                "body": { "stringValue": body },
                "attributes": [{ "key": "step", "value": { "intValue": i.to_string() } }],
                "traceId": format!("{:032x}", 1000 + i / 10),
                "spanId": format!("{:016x}", 1 + i % 3),
            })
        })
        .collect();
    let group = |service: &str, records: &[Value]| {
        json!({
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
            "scopeLogs": [{ "logRecords": records }],
        })
    };
    let body = json!({ "resourceLogs": [group("checkout", &records[..15]), group("bank", &records[15..])] });
    let resp = post(
        format!("http://{}/v1/logs", server.otlp_http),
        "application/json",
        None,
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let range = format!("start={}&end={}", base, base + 60_000_000_000);
    let search = |q: String| {
        let url = server.query(&format!("/api/v1/logs?{range}&{q}"));
        async move { common::get_json(&url).await }
    };
    let bodies = |answer: &Value| -> Vec<String> {
        let mut out: Vec<(u64, String)> = resource_logs(answer)
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
            .map(|r| {
                let body = match r.body.as_ref().and_then(|b| b.value.as_ref()) {
                    Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                        s.clone()
                    }
                    other => panic!("string body expected, got {other:?}"),
                };
                (r.time_unix_nano, body)
            })
            .collect();
        out.sort_by(|a, b| b.cmp(a));
        out.into_iter().map(|(_, b)| b).collect()
    };
    let all = search("limit=100".into()).await;
    assert_eq!(all["count"], 30);
    assert_eq!(bodies(&all)[0], "step 29 done", "newest first");
    let declined = search("q=declined".into()).await;
    assert_eq!(
        bodies(&declined),
        [
            "Payment 25 DECLINED by bank",
            "Payment 20 DECLINED by bank",
            "Payment 15 DECLINED by bank",
            "Payment 10 DECLINED by bank",
            "Payment 5 DECLINED by bank",
            "Payment 0 DECLINED by bank"
        ]
    );
    let warn_bank = search("severity=warn&service=bank".into()).await;
    assert_eq!(
        bodies(&warn_bank),
        ["step 27 done", "step 24 done", "step 21 done", "step 18 done", "Payment 15 DECLINED by bank"]
    );
    let by_attr = search("attr=step=7".into()).await;
    assert_eq!(bodies(&by_attr), ["step 7 done"]);
    let by_resource = search("attr=service.name=checkout&severity=13&q=PAYMENT".into()).await;
    assert_eq!(bodies(&by_resource), ["Payment 0 DECLINED by bank"]);

    // Pages of 7 walk all 30 once, newest first.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = search(format!("limit=7{cursor}")).await;
        seen.extend(bodies(&page));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, bodies(&all), "pages neither skip nor repeat");

    for (query, message) in [
        ("severity=loud", "parameter `severity`"),
        ("attr=novalue", "parameter `attr`: expected key=value, got `novalue`"),
        ("spanId=0102030405060708", "parameter `spanId` needs `traceId`"),
        ("spanId=xyz&traceId=0102030405060708090a0b0c0d0e0f10", "parameter `spanId`"),
        ("traceId=0102030405060708090a0b0c0d0e0f10&q=x", "parameter `q` searches records"),
        ("traceId=nothex", "invalid trace id `nothex`"),
        ("cursor=c1.2.3", "not a log cursor returned by this server"),
        (
            "start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z",
            "the start of the time range is after its end",
        ),
    ] {
        let resp = reqwest::get(server.query(&format!("/api/v1/logs?{query}"))).await.expect("get");
        assert_eq!(resp.status(), 400, "{query}");
        let body: Value = resp.json().await.expect("json error");
        assert!(body["error"].as_str().expect("error").contains(message), "{query}: {body}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_trace_the_sampler_dropped_are_still_found() {
    let server = common::start(|c| {
        c.sampling.policies = strand_sampling::SamplingConfig::shorthand("errors-plus=0%").expect("valid");
        c.sampling.decision_delay = "100ms".parse().expect("valid");
        c.sampling.decision_wait = "1s".parse().expect("valid");
    })
    .await;
    server.export_json(std::fs::read(common::fixture("otlp/trace.json")).expect("fixture")).await;
    let fixture = std::fs::read(common::fixture("otlp/logs.json")).expect("fixture");
    let resp = post(format!("http://{}/v1/logs", server.otlp_http), "application/json", None, fixture).await;
    assert_eq!(resp.status(), 200);
    common::eventually("the sampler to drop the error-free trace", || async {
        let text = reqwest::get(server.query("/metrics")).await.ok()?.text().await.ok()?;
        (common::metric_value(&text, "strand_sampling_traces_dropped_total") == Some(1.0)).then_some(())
    })
    .await;
    let resp = reqwest::get(server.query(&format!("/api/v1/traces/{TRACE}"))).await.expect("get");
    assert_eq!(resp.status(), 404, "the spans were sampled away");
    let logs = common::get_json(&server.query(&format!("/api/v1/logs?traceId={TRACE}"))).await;
    assert_eq!(logs["count"], 1, "its log records are kept: {logs}");
    server.stop().await;
}
