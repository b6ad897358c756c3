//! Grafana's Tempo data source against Strand, the way Grafana drives it: health and build
//! info, tag names and values for autocompletion, TraceQL searches over the patient-report
//! demo traces, then the trace of a result; a bad query is a 400 naming its column.

mod common;

use serde_json::{Value, json};
use strand_server::demo;

async fn get(server: &common::TestServer, path: &str) -> (u16, Value) {
    let resp = reqwest::get(server.query(path)).await.expect("get");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn enc(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
}

/// The trace ids a TraceQL search returns, newest first.
async fn search(server: &common::TestServer, q: &str, range: &str) -> (Vec<String>, Value) {
    let (status, body) = get(server, &format!("/api/search?q={}&{range}", enc(q))).await;
    assert_eq!(status, 200, "{q}: {body}");
    let ids = body["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| t["traceID"].as_str().expect("id").to_owned())
        .collect();
    (ids, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_searches_with_traceql_opens_a_trace_and_autocompletes() {
    let server = common::start(|_| {}).await;
    let now = now_ns();
    for batch in demo::submissions(now) {
        server.export_batch(&batch).await;
    }
    let id = |n: u8| demo::trace_id(now, n).to_hex();
    let range = format!("start={}&end={}&limit=20", now / 1_000_000_000 - 3600, now / 1_000_000_000 + 60);

    // Grafana's connection test and version probe.
    assert_eq!(get(&server, "/api/echo").await, (200, json!("echo")));
    let (status, info) = get(&server, "/api/status/buildinfo").await;
    assert_eq!(status, 200);
    assert!(info["version"].is_string());

    // Every demo trace matches `{ }`, newest first; the broken one's notify half is a trace of its own.
    let (all, body) = search(&server, "{ }", &range).await;
    let mut want: Vec<String> = (1..=demo::SUBMISSIONS).rev().map(id).collect();
    want.insert(0, demo::broken_half(now).to_hex());
    assert_eq!(all, want, "newest first: {body}");
    let first = &body["traces"][1];
    assert_eq!(
        (first["rootServiceName"].as_str(), first["rootTraceName"].as_str()),
        (Some("gateway"), Some("POST /reports"))
    );
    assert_eq!(first["spanSet"]["matched"], first["spanSets"][0]["matched"]);
    assert_eq!(first["spanSets"][0]["spans"].as_array().map(Vec::len), Some(3), "spss defaults to 3");

    // Errors in one service: only the failing submission, its data-service error spans shown.
    let q = r#"{ resource.service.name = "data-service" && status = error }"#;
    let (ids, body) = search(&server, q, &format!("{range}&spss=10")).await;
    assert_eq!(ids, vec![id(demo::FAILING)]);
    let set = &body["traces"][0]["spanSets"][0];
    assert_eq!(set["matched"], 2);
    for span in set["spans"].as_array().expect("spans") {
        let attrs = span["attributes"].as_array().expect("attributes");
        assert!(
            attrs.contains(&json!({ "key": "service.name", "value": { "stringValue": "data-service" } })),
            "{span}"
        );
        assert!(attrs.contains(&json!({ "key": "status", "value": { "stringValue": "error" } })), "{span}");
    }

    // A structural query: an error below the gateway's root on a client call (the
    // featured submission's refused SMS, and the failing one's gRPC call).
    let (ids, _) = search(
        &server,
        r#"{ resource.service.name = "gateway" && kind = server } >> { status = error && kind = client }"#,
        &range,
    )
    .await;
    assert_eq!(ids, vec![id(demo::FEATURED), id(demo::FAILING)]);
    let (ids, _) =
        search(&server, r#"{ name = "send-sms" } > { span.http.response.status_code = 503 }"#, &range).await;
    assert_eq!(ids, vec![id(demo::FEATURED)]);

    // Numbers compare as numbers, durations as durations, aggregates over the spanset.
    let (ids, _) = search(&server, "{ span.http.response.status_code >= 500 }", &range).await;
    assert_eq!(ids, vec![id(demo::FEATURED), id(demo::FAILING)]);
    // `>` is a direct child only: the refused SMS is far below the gateway.
    let (ids, _) = search(
        &server,
        r#"{ resource.service.name = "gateway" && kind = server } > { status = error && kind = client }"#,
        &range,
    )
    .await;
    assert_eq!(ids, vec![id(demo::FAILING)]);
    let (ids, _) = search(&server, r#"{ name = "SELECT reports" && duration > 500ms }"#, &range).await;
    assert_eq!(ids, vec![id(demo::SLOW)]);
    let (ids, _) = search(&server, r#"{ rootServiceName = "gateway" } | count() > 13"#, &range).await;
    assert_eq!(ids, vec![id(demo::FEATURED)], "only the featured submission has 14 spans");
    let (ids, _) = search(&server, r#"{ .db.system.name = "sqlite" } | avg(duration) > 400ms"#, &range).await;
    assert_eq!(ids, vec![id(demo::SLOW)]);

    // select() adds fields to each span; a regular expression matches the whole value.
    let (_, body) = search(
        &server,
        r#"{ name =~ "INSERT.*" } | select(span.db.system.name)"#,
        &format!("{range}&limit=1"),
    )
    .await;
    let span = &body["traces"][0]["spanSets"][0]["spans"][0];
    assert_eq!(span["name"], "INSERT reports");
    assert!(
        span["attributes"]
            .as_array()
            .expect("attrs")
            .contains(&json!({ "key": "db.system.name", "value": { "stringValue": "sqlite" } })),
        "{span}"
    );
    assert_eq!(body["traces"].as_array().map(Vec::len), Some(1), "limit=1");
    let (ids, _) = search(&server, r#"{ name =~ "INSERT" }"#, &range).await;
    assert!(ids.is_empty(), "anchored: {ids:?}");

    // The trace of a result opens.
    let (status, trace) = get(&server, &format!("/api/v2/traces/{}", id(demo::FEATURED))).await;
    assert_eq!(status, 200);
    let spans: usize = trace["trace"]["resourceSpans"]
        .as_array()
        .expect("rs")
        .iter()
        .map(|rs| rs["scopeSpans"][0]["spans"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(spans, 14);

    // Autocompletion: tag names and a tag's values.
    let (_, tags) = get(&server, "/api/v2/search/tags").await;
    let text = tags.to_string();
    assert!(text.contains("db.system.name") && text.contains("intrinsic"), "{tags}");
    let (_, values) = get(&server, "/api/v2/search/tag/resource.service.name/values").await;
    assert!(
        values["tagValues"]
            .as_array()
            .expect("values")
            .contains(&json!({ "type": "string", "value": "notify-service" }))
    );

    // Narrowed by the query being written (`q=`): the scopes and values of matching spans.
    let data = enc(r#"{ resource.service.name = "data-service" }"#);
    let (status, tags) = get(&server, &format!("/api/v2/search/tags?q={data}&{range}")).await;
    assert_eq!(status, 200, "{tags}");
    let scope = |name: &str| {
        tags["scopes"]
            .as_array()
            .expect("scopes")
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["tags"].clone())
    };
    assert_eq!(scope("resource"), Some(json!(["deployment.environment.name", "service.name"])));
    assert_eq!(
        scope("span"),
        Some(json!([
            "db.query.text",
            "db.system.name",
            "messaging.destination.name",
            "messaging.message.id",
            "messaging.system",
            "rpc.system"
        ])),
        "data-service's span attributes only"
    );
    let (_, only) = get(&server, &format!("/api/v2/search/tags?scope=intrinsic&q={data}")).await;
    assert_eq!(
        only["scopes"].as_array().map(|s| s.iter().map(|s| s["name"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("intrinsic")])
    );
    let (_, names) = get(&server, &format!("/api/v2/search/tag/name/values?q={data}&{range}")).await;
    let want: Vec<Value> = [
        "INSERT reports",
        "INSERT reports_archive",
        "SELECT reports",
        "epro.Data/Store",
        "send patient-report.submitted",
    ]
    .iter()
    .map(|v| json!({ "type": "string", "value": v }))
    .collect();
    assert_eq!(names["tagValues"], json!(want));
    let (_, statuses) = get(&server, &format!("/api/v2/search/tag/status/values?q={data}&{range}")).await;
    assert_eq!(
        statuses["tagValues"],
        json!([{ "type": "keyword", "value": "error" }, { "type": "keyword", "value": "unset" }])
    );
    let servers = enc("{ kind = server && resource.service.name = \"gateway\" }");
    let (_, codes) = get(
        &server,
        &format!("/api/v2/search/tag/span.http.response.status_code/values?q={servers}&{range}"),
    )
    .await;
    assert_eq!(
        codes["tagValues"],
        json!([{ "type": "int", "value": "202" }, { "type": "int", "value": "500" }])
    );
    let (status, _) = get(&server, "/api/v2/search/tags?scope=everything").await;
    assert_eq!(status, 400);
    let (status, body) =
        get(&server, &format!("/api/v2/search/tag/name/values?q={}", enc("{ name = }"))).await;
    assert_eq!((status, body), (400, json!("TraceQL: column 10: expected a field or a value, found `}`")));

    // A query the indexes cannot narrow walks the range newest first, page after page:
    // 25 newer traces come before the one it finds.
    let noise: Vec<Value> = (0..25u64)
        .map(|i| {
            json!({ "traceId": format!("{:032x}", 0xfeed_0000 + i), "spanId": "00000000000000a1", "name": "tick",
                    "startTimeUnixNano": (now - 1_000_000_000 + i).to_string(), "endTimeUnixNano": now.to_string() })
        })
        .collect();
    server
        .export(&json!({ "resourceSpans": [{ "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "noise" } }] },
                                              "scopeSpans": [{ "spans": noise }] }] }))
        .await;
    let (ids, body) = search(&server, r#"{ name =~ "INSERT reports_arch.*" }"#, &range).await;
    assert_eq!(ids, vec![id(demo::FAILING)]);
    assert_eq!(body["metrics"]["inspectedTraces"], 25 + 7, "two pages, every trace read: {body}");
    let (ids, _) =
        search(&server, r#"{ resource.service.name = "noise" }"#, &format!("{range}&limit=30")).await;
    assert_eq!(ids.len(), 25);

    // A query Strand cannot run: 400 with the column and what is not supported.
    let (status, body) = get(&server, &format!("/api/search?q={}", enc("{ .a = 1 } | by(.b)"))).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!(
            "TraceQL: column 14: `by` is not supported; stages are count(), avg(), min(), max(), sum(), select() and spanset filters"
        )
    );
    server.stop().await;
}
