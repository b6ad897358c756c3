//! The Jaeger UI's Monitor tab (service performance monitoring): call rates, error rates and
//! latencies per service and operation from the RED metrics, in Jaeger's `MetricFamily`
//! shape, with Jaeger's parameter errors.

mod common;

use serde_json::{Value, json};
use strand_server::demo;

async fn get(server: &common::TestServer, path: &str) -> (u16, Value) {
    let resp = reqwest::get(server.query(path)).await.expect("get");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
}

/// The last point's value of the series with these labels.
fn last(family: &Value, labels: Value) -> f64 {
    let metric = family["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .find(|m| m["labels"] == labels)
        .unwrap_or_else(|| panic!("no series {labels} in {family}"));
    let points = metric["metricPoints"].as_array().expect("points");
    points.last().expect("a point")["gaugeValue"]["doubleValue"].as_f64().expect("value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_tab_reads_rates_errors_and_latencies() {
    let server = common::start(|_| {}).await;
    for batch in demo::submissions(now_ns()) {
        server.export_batch(&batch).await;
    }
    let (status, step) = get(&server, "/api/metrics/minstep").await;
    assert_eq!((status, &step["data"]), (200, &json!(60000)));
    let pretty = reqwest::get(server.query("/api/metrics/minstep?prettyPrint=true")).await.expect("get");
    assert!(pretty.text().await.expect("text").starts_with("{\n  "), "prettyPrint holds here too");

    // Six submissions: six gateway server spans (one failing), six data-service ones.
    let window = "lookback=3600000&step=60000&ratePer=600000";
    let (status, calls) =
        get(&server, &format!("/api/metrics/calls?service=gateway&service=data-service&{window}")).await;
    assert_eq!(status, 200, "{calls}");
    assert_eq!((calls["name"].as_str(), calls["type"].as_str()), (Some("service_call_rate"), Some("GAUGE")));
    let gateway = json!([{ "name": "service_name", "value": "gateway" }]);
    assert_eq!(last(&calls, gateway.clone()), 6.0 / 600.0, "6 calls over the 10-minute window, per second");
    assert_eq!(last(&calls, json!([{ "name": "service_name", "value": "data-service" }])), 6.0 / 600.0);
    let points = calls["metrics"][0]["metricPoints"].as_array().expect("points");
    assert!(points.iter().all(|p| p["timestamp"].as_str().is_some_and(|t| t.ends_with('Z'))), "{calls}");

    let (_, errors) = get(&server, &format!("/api/metrics/errors?service=gateway&{window}")).await;
    assert_eq!(errors["name"], "service_error_rate");
    assert_eq!(last(&errors, gateway), 1.0 / 6.0);

    // Client spans, grouped by operation: the gateway's two calls per submission.
    let (_, latencies) = get(
        &server,
        &format!("/api/metrics/latencies?service=gateway&quantile=0.95&groupByOperation=true&spanKind=client&{window}"),
    )
    .await;
    assert_eq!(latencies["name"], "service_operation_latencies");
    let labels: Vec<Value> =
        latencies["metrics"].as_array().expect("metrics").iter().map(|m| m["labels"].clone()).collect();
    assert_eq!(
        labels,
        vec![
            json!([{ "name": "operation", "value": "GET" }, { "name": "service_name", "value": "gateway" }]),
            json!([{ "name": "operation", "value": "epro.Reports/Submit" }, { "name": "service_name", "value": "gateway" }]),
        ]
    );
    // The user-service call takes 12 ms: its 95th percentile is in the 10–50 ms bucket.
    let p95 = last(&latencies, labels[0].clone());
    assert!((10.0..=50.0).contains(&p95), "p95 {p95} ms");

    // An end far in the future counts what there is now (no overflow).
    let (status, far) =
        get(&server, &format!("/api/metrics/calls?service=gateway&endTs={}&{window}", u64::MAX / 2)).await;
    assert_eq!(status, 200, "{far}");
    assert_eq!(last(&far, json!([{ "name": "service_name", "value": "gateway" }])), 6.0 / 600.0);

    for (path, status, says) in [
        ("/api/metrics/calls", 400, "at least one service"),
        ("/api/metrics/latencies?service=gateway", 400, "`quantile` is required"),
        ("/api/metrics/latencies?service=gateway&quantile=2", 400, "`quantile`"),
        ("/api/metrics/calls?service=gateway&spanKind=sideways", 400, "unknown kind `sideways`"),
        ("/api/metrics/calls?service=gateway&groupByOperation=maybe", 400, "`groupByOperation`"),
        ("/api/metrics/calls?service=gateway&lookback=x", 400, "`lookback`"),
        ("/api/metrics/throughput?service=gateway", 404, "unknown metric"),
    ] {
        let (got, body) = get(&server, path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["errors"][0]["code"], status, "{path}: Jaeger's envelope");
        assert!(body["errors"][0]["msg"].as_str().is_some_and(|m| m.contains(says)), "{path}: {body}");
    }
    server.stop().await;
}
