//! The query APIs against fixtures and each other: Jaeger's OTLP → UI JSON fixture, Tempo
//! protobuf, multi-get, every parameter error naming its parameter, unknown traces 404 in
//! each API's own error shape, and bounded limits saying so.

mod common;

use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;
use serde_json::{Value, json};

async fn get(server: &common::TestServer, path: &str) -> (u16, Value) {
    let resp = reqwest::get(server.query(path)).await.expect("get");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
}

/// A two-service trace with a big integer attribute, as OTLP/JSON.
fn two_service_trace(trace_id: &str, start_ns: u64) -> Vec<u8> {
    let span = |id: &str, parent: &str, name: &str, kind: u8, code: u8, attrs: Value| {
        json!({
            "traceId": trace_id, "spanId": id, "parentSpanId": parent, "name": name, "kind": kind,
            "startTimeUnixNano": start_ns.to_string(), "endTimeUnixNano": (start_ns + 2_500_000).to_string(),
            "attributes": attrs, "status": { "code": code }
        })
    };
    let rs = |service: &str, spans: Vec<Value>| {
        json!({
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
            "scopeSpans": [{ "scope": { "name": "lib" }, "spans": spans }]
        })
    };
    let big = json!([{ "key": "big", "value": { "intValue": "9223372036854775222" } },
                     { "key": "http.response.status_code", "value": { "intValue": "503" } }]);
    serde_json::to_vec(&json!({ "resourceSpans": [
        rs("front", vec![span("1111111111111111", "", "GET /", 2, 0, big)]),
        rs("back", vec![span("2222222222222222", "1111111111111111", "query", 2, 2, json!([]))]),
    ]}))
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_otlp_fixture_reads_back_as_jaeger_ui_json() {
    let server = common::start(|_| {}).await;
    server.export_json(std::fs::read(common::fixture("jaeger/otlp2jaeger-in.json")).expect("fixture")).await;
    let (status, got) = get(&server, "/api/traces/83a9efd15c1c98a977e0711cc93ee28b").await;
    assert_eq!(status, 200);
    let mut want: Value = serde_json::from_slice(
        &std::fs::read(common::fixture("jaeger/otlp2jaeger-out.json")).expect("fixture"),
    )
    .expect("json");
    // The fixture's input sends one span twice; Strand stores a (trace id, span id) once
    // (TraceWriter is idempotent), so it comes back once.
    let spans = want["data"][0]["spans"].as_array_mut().expect("spans");
    spans.dedup();
    assert_eq!(spans.len(), 1);
    // The span's parent never arrived: Jaeger's query service warns so, and Strand adds the
    // chain-integrity finding as a span warning.
    spans[0]["warnings"] = json!([
        "invalid parent span IDs=909541b92cf05311; skipping clock skew adjustment",
        "chain integrity: missing_root: no span of this trace is without a parent: its root span \
         909541b92cf05311 never arrived; the trace starts at telemetrygen okey-dokey-0"
    ]);
    assert_eq!(got, want);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_answers_in_its_own_shape() {
    let server = common::start(|_| {}).await;
    let id = "0af7651916cd43dd8448eb211c80319c";
    let now = now_ns();
    server.export_json(two_service_trace(id, now - 60_000_000_000)).await;
    let other = "00000000000000000000000000000abc";
    server.export_json(two_service_trace(other, now - 120_000_000_000)).await;

    // Jaeger: typed tags, big ints as strings, error tags, multi-get, 64-bit ids.
    let (status, body) =
        get(&server, "/api/traces?service=front&tags=%7B%22http.response.status_code%22%3A503%7D").await;
    assert_eq!(status, 200, "{body}");
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["traceID"], id, "newest first");
    assert_eq!(data[1]["traceID"], "0000000000000abc", "64-bit ids print as 16 hex digits");
    let tags = &data[0]["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .find(|s| s["operationName"] == "GET /")
        .expect("root")["tags"];
    assert!(
        tags.as_array()
            .expect("tags")
            .contains(&json!({ "key": "big", "type": "int64", "value": "9223372036854775222" }))
    );
    let (_, errs) =
        get(&server, "/api/traces?service=back&tag=error:true&minDuration=2ms&maxDuration=3ms").await;
    assert_eq!(errs["data"].as_array().map(Vec::len), Some(2));
    let (_, none) = get(&server, "/api/traces?service=back&minDuration=3ms").await;
    assert_eq!(none["data"], json!([]));
    // What the Jaeger UI sends: lookback=custom next to start/end, or lookback=2d.
    let (start_us, end_us) = (now / 1000 - 3_600_000_000, now / 1000 + 1_000_000);
    let (status, ui) =
        get(&server, &format!("/api/traces?service=back&lookback=custom&start={start_us}&end={end_us}"))
            .await;
    assert_eq!((status, ui["data"].as_array().map(Vec::len)), (200, Some(2)), "{ui}");
    let (status, ui) = get(&server, "/api/traces?service=back&lookback=2d").await;
    assert_eq!((status, ui["data"].as_array().map(Vec::len)), (200, Some(2)), "{ui}");
    let (_, multi) = get(&server, &format!("/api/traces?traceID={id}&traceID=abc")).await;
    assert_eq!(multi["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(multi["errors"], Value::Null);
    // Ids not found are each an entry in `errors`, with status 200 even when none is found
    // (the Jaeger UI's compare view asks for two and shows what it gets).
    let (status, some) = get(&server, &format!("/api/traces?traceID={id}&traceID=abd")).await;
    assert_eq!(status, 200);
    assert_eq!(some["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        some["errors"],
        json!([{ "code": 404, "msg": "trace not found", "traceID": "0000000000000abd" }])
    );
    let (status, none) = get(&server, "/api/traces?traceID=abd&traceID=abe").await;
    assert_eq!((status, none["data"].clone()), (200, json!([])));
    assert_eq!(none["errors"].as_array().map(Vec::len), Some(2));
    // The Jaeger UI's OTLP file upload: converted, not stored.
    let upload = "00000000000000000000000000000def";
    let client = reqwest::Client::new();
    let resp = client
        .post(server.query("/api/transform"))
        .body(two_service_trace(upload, now - 60_000_000_000))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let ui: Value = resp.json().await.expect("json");
    assert_eq!(ui["data"][0]["traceID"], "0000000000000def");
    assert_eq!(ui["data"][0]["spans"].as_array().map(Vec::len), Some(2));
    assert_eq!(ui["data"][0]["processes"].as_object().map(|p| p.len()), Some(2));
    let (status, _) = get(&server, "/api/traces/0000000000000def").await;
    assert_eq!(status, 404, "an upload is not stored");
    // A span whose id is not hex is left out and said so; the rest converts.
    let mut with_bad: Value =
        serde_json::from_slice(&two_service_trace(upload, now - 60_000_000_000)).expect("json");
    with_bad["resourceSpans"][1]["scopeSpans"][0]["spans"][0]["spanId"] = json!("zz");
    let resp =
        client.post(server.query("/api/transform")).body(with_bad.to_string()).send().await.expect("post");
    assert_eq!(resp.status(), 200);
    let ui: Value = resp.json().await.expect("json");
    assert_eq!(ui["data"][0]["spans"].as_array().map(Vec::len), Some(1), "{ui}");
    assert!(ui["warnings"][0].as_str().is_some_and(|w| w.contains("spanId `zz` is not hex")), "{ui}");
    let resp = client
        .post(server.query("/api/transform"))
        .body("{\"resourceSpans\": 7}")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert!(body["errors"][0]["msg"].as_str().is_some_and(|m| m.starts_with("invalid OTLP/JSON")), "{body}");

    let resp = client
        .post(server.query("/api/transform"))
        .body(vec![b' '; (16 << 20) + 1])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["errors"][0]["msg"], "the OTLP/JSON file is over 16777216 bytes", "{body}");

    // `prettyPrint=true` indents the answer, which stays the same JSON.
    let pretty = reqwest::get(server.query("/api/services?prettyPrint=true")).await.expect("get");
    let text = pretty.text().await.expect("text");
    assert!(text.starts_with("{\n  \""), "{text}");
    let plain = reqwest::get(server.query("/api/services")).await.expect("get").text().await.expect("text");
    assert!(!plain.contains('\n'), "{plain}");
    assert_eq!(serde_json::from_str::<Value>(&text).ok(), serde_json::from_str::<Value>(&plain).ok());
    let (_, services) = get(&server, "/api/services").await;
    assert_eq!(
        services,
        json!({ "data": ["back", "front"], "total": 2, "limit": 0, "offset": 0, "errors": null })
    );
    let (_, ops) = get(&server, "/api/operations?service=front&spanKind=server").await;
    assert_eq!(ops["data"], json!([{ "name": "GET /", "spanKind": "server" }]));
    let (_, ops) = get(&server, "/api/services/back/operations").await;
    assert_eq!(ops["data"], json!(["query"]));
    let end_ms = now / 1_000_000 + 1000;
    let (_, deps) = get(&server, &format!("/api/dependencies?endTs={end_ms}&lookback=3600000")).await;
    assert_eq!(deps["data"], json!([{ "parent": "front", "child": "back", "callCount": 2 }]));

    // Native: summaries, pagination, attributes, dependencies with error counts.
    let (_, page1) = get(&server, "/api/v1/search?service=back&status=error&limit=1").await;
    assert_eq!(page1["traces"][0]["traceId"], id);
    assert_eq!(page1["traces"][0]["rootService"], "front");
    assert_eq!(page1["traces"][0]["errorCount"], 1);
    let cursor = page1["nextCursor"].as_str().expect("cursor");
    let (_, page2) =
        get(&server, &format!("/api/v1/search?service=back&status=error&limit=1&cursor={cursor}")).await;
    assert_eq!(page2["traces"][0]["traceId"], other);
    assert_eq!(page2["nextCursor"], Value::Null);
    let (_, attrs) = get(&server, "/api/v1/attributes/http.response.status_code/values?service=front").await;
    assert_eq!(attrs["values"], json!(["503"]));
    let (_, deps) = get(&server, "/api/v1/dependencies?since=1h").await;
    assert_eq!(
        deps["dependencies"],
        json!([{ "parent": "front", "child": "back", "callCount": 2, "errorCount": 2 }])
    );
    let (_, sums) = get(&server, &format!("/api/v1/summaries?traceId={id}")).await;
    assert_eq!(sums["traces"][0]["spanCount"], 2);

    // api_v3.
    let (_, v3) = get(&server, &format!("/api/v3/traces/{id}")).await;
    assert_eq!(v3["result"]["resourceSpans"].as_array().map(Vec::len), Some(2));
    let (_, v3ops) = get(&server, "/api/v3/operations?service=back").await;
    assert_eq!(v3ops["operations"], json!([{ "name": "query", "spanKind": "server" }]));
    let (_, v3s) = get(&server, "/api/v3/trace-summaries?query.service_name=front").await;
    assert_eq!(v3s["summaries"].as_array().map(Vec::len), Some(2));

    // Tempo: JSON with base64 ids, protobuf, search by logfmt tags and trace duration.
    let (_, t) = get(&server, &format!("/api/v2/traces/{id}")).await;
    assert_eq!(
        t["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"],
        "CvdlGRbNQ92ESOshHIAxnA=="
    );
    let pb = reqwest::Client::new()
        .get(server.query(&format!("/api/traces/{id}")))
        .header("accept", "application/protobuf")
        .send()
        .await
        .expect("get");
    assert_eq!(pb.headers()["content-type"], "application/protobuf");
    let data =
        TracesData::decode(pb.bytes().await.expect("body")).expect("Tempo's Trace is TracesData on the wire");
    assert_eq!(data.resource_spans.len(), 2);
    let (_, found) =
        get(&server, "/api/search?tags=service.name%3Dback%20status%3Derror&minDuration=2ms").await;
    assert_eq!(found["traces"].as_array().map(Vec::len), Some(2));
    assert_eq!(found["traces"][0]["rootServiceName"], "front");
    assert_eq!(found["traces"][0]["serviceStats"]["back"], json!({ "spanCount": 1, "errorCount": 1 }));
    let (_, none) = get(&server, "/api/search?tags=service.name%3Dback&minDuration=3ms").await;
    assert_eq!(none["traces"], json!([]));
    let (_, tags) = get(&server, "/api/search/tags").await;
    assert!(tags["tagNames"].as_array().expect("names").contains(&json!("http.response.status_code")));
    let (_, values) = get(&server, "/api/v2/search/tag/service.name/values").await;
    assert_eq!(
        values["tagValues"],
        json!([{ "type": "string", "value": "back" }, { "type": "string", "value": "front" }])
    );
    let (status, echo) = get(&server, "/api/echo").await;
    assert_eq!((status, echo), (200, json!("echo")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_errors_name_the_parameter_and_unknown_traces_are_404() {
    let server = common::start(|_| {}).await;
    let unknown = "0123456789abcdef0123456789abcdef";
    let cases: &[(&str, u16, &str)] = &[
        ("/api/traces", 400, "`service` is required"),
        ("/api/traces?service=a&minDuration=abc", 400, "`minDuration`"),
        ("/api/traces?service=a&minDuration=2s&maxDuration=1s", 400, "minimum is above the maximum"),
        ("/api/traces?service=a&limit=-1", 400, "`limit`"),
        ("/api/traces?service=a&tags=notjson", 400, "`tags`"),
        ("/api/traces?service=a&tag=nocolon", 400, "`tag`"),
        ("/api/traces?service=a&start=yesterday", 400, "`start`"),
        ("/api/traces?service=a&start=20&end=10", 400, "after its end"),
        ("/api/traces/zz", 400, "invalid trace id"),
        (&format!("/api/traces/{unknown}"), 404, "trace not found"),
        ("/api/operations", 400, "`service` is required"),
        ("/api/operations?service=a&spanKind=sideways", 400, "`spanKind`"),
        ("/api/dependencies?endTs=x", 400, "`endTs`"),
        ("/api/v1/search?status=bad", 400, "`status`"),
        ("/api/v1/search?cursor=garbage", 400, "`cursor`"),
        ("/api/v1/search?start=yesterday", 400, "`start`"),
        ("/api/v1/search?attr=novalue", 400, "key=value"),
        ("/api/v1/search?kind=sideways", 400, "`kind`"),
        ("/api/v1/search?minTraceDuration=1", 400, "`minTraceDuration`"),
        ("/api/v1/summaries", 400, "`traceId` is required"),
        (&format!("/api/v1/traces/{unknown}"), 404, "not found"),
        ("/api/v3/traces?query.start_time_min=notatime", 400, "`query.start_time_min`"),
        ("/api/v3/traces?query.durationMin=x", 400, "`query.durationMin`"),
        (&format!("/api/v3/traces/{unknown}"), 404, "not found"),
        (
            "/api/search?q=%7B%20.a%20%2B%201%20%7D",
            400,
            "TraceQL: column 6: `+`: arithmetic is not supported",
        ),
        ("/api/search?q=%7B%7D&spss=x", 400, "`spss`"),
        ("/api/search?tags=broken", 400, "`tags`"),
        ("/api/search?tags=status%3Dweird", 400, "unknown status"),
        (&format!("/api/v2/traces/{unknown}"), 404, "trace not found"),
    ];
    for (path, want_status, fragment) in cases {
        let (status, body) = get(&server, path).await;
        assert_eq!(status, *want_status, "{path}: {body}");
        let text = body.to_string();
        assert!(text.contains(fragment), "{path}: {text} should mention {fragment}");
        if path.starts_with("/api/traces") {
            assert_eq!(body["errors"][0]["code"], *want_status, "{path}: Jaeger envelope");
        }
        if path.starts_with("/api/v3/") {
            assert_eq!(body["error"]["httpCode"], *want_status, "{path}: api_v3 error shape");
        }
    }
    // A multi-get of more ids than the search limit is refused, naming the parameter.
    let many: String = (1..=1001).map(|i| format!("traceID={i:x}&")).collect();
    let (status, body) = get(&server, &format!("/api/traces?{many}")).await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("`traceID`: 1001 ids"), "{body}");
    // Bounds say so instead of failing or exhausting memory.
    let (status, body) = get(&server, "/api/v1/search?limit=999999999&since=100000h").await;
    assert_eq!(status, 200);
    let warnings = body["warnings"].to_string();
    assert!(warnings.contains("max_search_limit") && warnings.contains("max_search_range"), "{warnings}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_as_the_client_accepts() {
    let server = common::start(|_| {}).await;
    let id = "0af7651916cd43dd8448eb211c80319c";
    server.export_json(two_service_trace(id, now_ns() - 60_000_000_000)).await;
    // Raw bytes: this client neither asks for nor undoes any encoding by itself.
    let client = reqwest::Client::builder().no_gzip().build().expect("client");
    let fetch = |path: &str, accept: Option<&str>, method: reqwest::Method| {
        let mut req = client.request(method, server.query(path));
        if let Some(a) = accept {
            req = req.header("accept-encoding", a);
        }
        async move {
            let resp = req.send().await.expect("request");
            let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().expect("ascii").to_owned());
            let (encoding, vary, etag) = (header("content-encoding"), header("vary"), header("etag"));
            let status = resp.status().as_u16();
            (status, encoding, vary, etag, resp.bytes().await.expect("body").to_vec())
        }
    };
    let get = reqwest::Method::GET;
    let trace = format!("/api/v1/traces/{id}");
    let (status, encoding, vary, _, plain) = fetch(&trace, None, get.clone()).await;
    assert_eq!((status, encoding, vary), (200, None, None), "nothing asked, nothing compressed");
    assert!(plain.len() > 1024, "the trace is big enough to compress: {} bytes", plain.len());

    let (status, encoding, vary, _, body) = fetch(&trace, Some("gzip, deflate, br, zstd"), get.clone()).await;
    assert_eq!((status, encoding.as_deref(), vary.as_deref()), (200, Some("zstd"), Some("accept-encoding")));
    assert!(body.len() < plain.len());
    assert_eq!(zstd::stream::decode_all(&body[..]).expect("zstd"), plain);

    let (_, encoding, _, _, body) = fetch(&trace, Some("zstd;q=0.1, gzip"), get.clone()).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut unzipped).expect("gunzip");
    assert_eq!(unzipped, plain);

    // Prometheus scrapes with gzip; the text comes back whole.
    let (_, _, _, _, metrics_plain) = fetch("/metrics", None, get.clone()).await;
    let (_, encoding, _, _, body) = fetch("/metrics", Some("gzip"), get.clone()).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text).expect("gunzip");
    assert!(text.contains("strand_store_spans_written_total") && metrics_plain.len() > 1024);

    // Small answers, refused codings and HEAD stay as they are.
    let (_, encoding, _, _, body) = fetch("/healthz", Some("zstd"), get.clone()).await;
    assert_eq!((encoding, &body[..]), (None, &br#"{"status":"ok"}"#[..]));
    let (_, encoding, _, _, _) = fetch(&trace, Some("zstd;q=0, gzip;q=0"), get.clone()).await;
    assert_eq!(encoding, None);
    let (status, encoding, _, _, _) = fetch(&trace, Some("zstd"), reqwest::Method::HEAD).await;
    assert_eq!((status, encoding), (200, None));

    // UI files: the compressed answer carries a weak ETag, and revalidating with it is a 304.
    let (_, encoding, _, etag, _) = fetch("/static/app.js", Some("zstd"), get.clone()).await;
    assert_eq!(encoding.as_deref(), Some("zstd"));
    let etag = etag.expect("etag");
    assert!(etag.starts_with("W/\""), "{etag}");
    let resp = client
        .get(server.query("/static/app.js"))
        .header("accept-encoding", "zstd")
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("revalidate");
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"], etag.as_str());
    server.stop().await;
}

/// Tempo's `TraceByIDResponse`, as far as a cut trace needs.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_over_the_span_cap_is_cut_to_its_earliest_spans_and_every_api_says_so() {
    let server = common::start(|c| c.query.max_trace_spans = 5).await;
    let big = strand_store::testdata::batch(1, 8);
    let small = strand_store::testdata::batch(2, 3);
    server.export_batch(&big).await;
    server.export_batch(&small).await;
    let (big_id, small_id) = (strand_store::testdata::trace_id(1), strand_store::testdata::trace_id(2));
    let mut starts: Vec<u64> = big.clone().into_stored().map(|s| s.span.start_time_unix_nano).collect();
    starts.sort_unstable();
    let message =
        "this trace has 8 spans; the response holds the first 5 by start time (query.max_trace_spans)";

    let (_, native) = get(&server, &format!("/api/v1/traces/{big_id}")).await;
    assert_eq!(native["spanCount"], 5);
    assert_eq!(native["truncated"], json!({ "storedSpans": 8, "returnedSpans": 5, "message": message }));
    let kept: Vec<u64> = native["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| s["startTimeUnixNano"].as_str().expect("start").parse().expect("number"))
        .collect();
    assert_eq!(kept, starts[..5], "the earliest five");
    let (_, whole) = get(&server, &format!("/api/v1/traces/{small_id}")).await;
    assert_eq!((whole["spanCount"].clone(), whole.get("truncated")), (json!(3), None));

    let (_, jaeger) = get(&server, &format!("/api/traces/{big_id}")).await;
    assert_eq!(jaeger["data"][0]["spans"].as_array().map(Vec::len), Some(5));
    assert_eq!(jaeger["data"][0]["warnings"], json!([message]));
    let (_, jaeger) = get(&server, &format!("/api/traces/{small_id}")).await;
    assert_eq!(jaeger["data"][0]["warnings"], Value::Null);

    let header = |resp: &reqwest::Response| {
        resp.headers().get("strand-trace-truncated").map(|v| v.to_str().expect("ascii").to_owned())
    };
    let v3 = reqwest::get(server.query(&format!("/api/v3/traces/{big_id}"))).await.expect("get");
    assert_eq!(header(&v3), Some(format!("traceId={big_id}; stored=8; returned=5")));
    let v3: Value = v3.json().await.expect("json");
    let v3_spans: usize = v3["result"]["resourceSpans"]
        .as_array()
        .expect("resourceSpans")
        .iter()
        .map(|rs| rs["scopeSpans"][0]["spans"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(v3_spans, 5);
    let v3 = reqwest::get(server.query(&format!("/api/v3/traces/{small_id}"))).await.expect("get");
    assert_eq!(header(&v3), None);
    let found = reqwest::get(server.query("/api/v3/traces?query.service_name=svc-1&query.start_time_min=2023-11-14T00:00:00Z&query.start_time_max=2023-11-16T00:00:00Z")).await.expect("get");
    assert_eq!(header(&found), Some(format!("traceId={big_id}; stored=8; returned=5")), "searches cut too");

    let (_, tempo) = get(&server, &format!("/api/v2/traces/{big_id}")).await;
    assert_eq!((tempo["status"].clone(), tempo["message"].clone()), (json!("PARTIAL"), json!(message)));
    let (_, tempo) = get(&server, &format!("/api/v2/traces/{small_id}")).await;
    assert_eq!(tempo.get("status"), None);
    let pb = reqwest::Client::new()
        .get(server.query(&format!("/api/v2/traces/{big_id}")))
        .header("accept", "application/protobuf")
        .send()
        .await
        .expect("get");
    assert_eq!(header(&pb), Some(format!("traceId={big_id}; stored=8; returned=5")));
    let resp = TraceByIdResponse::decode(pb.bytes().await.expect("body")).expect("TraceByIDResponse");
    assert_eq!((resp.status, resp.message.as_str()), (1, message), "PartialStatus PARTIAL");
    let spans: usize =
        resp.trace.expect("trace").resource_spans.iter().map(|rs| rs.scope_spans[0].spans.len()).sum();
    assert_eq!(spans, 5);
    server.stop().await;
}
