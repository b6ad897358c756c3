//! Jaeger (thrift over HTTP, agent UDP) and Zipkin v2 (JSON, proto3, gzip) into a running
//! strand, read back through the native and Jaeger v1 APIs; bad input gets precise errors;
//! the per-protocol counters in `/metrics` say what happened.

mod common;

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;

const PY_COLLECTOR: &[u8] = include_bytes!("../../../testdata/jaeger/python-otel-1.21-collector.thrift");
const PY_AGENT: &[u8] = include_bytes!("../../../testdata/jaeger/python-otel-1.21-agent.thrift");
const PY_ZIPKIN_PROTO: &[u8] = include_bytes!("../../../testdata/zipkin/python-otel-1.21.pb");

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

async fn post(url: &str, content_type: Option<&str>, gzipped: bool, body: Vec<u8>) -> (u16, String) {
    let mut req = reqwest::Client::new().post(url);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if gzipped {
        req = req.header("content-encoding", "gzip");
    }
    let resp = req.body(body).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

async fn get_json(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The native API's trace as `span id → (service, span)`, waiting until `spans` arrived.
async fn native_trace(server: &common::TestServer, trace_id: &str, spans: usize) -> Vec<(String, Value)> {
    let url = server.query(&format!("/api/v1/traces/{trace_id}"));
    let body = common::eventually(&format!("trace {trace_id} with {spans} spans"), || async {
        let (status, body) = get_json(&url).await;
        (status == 200 && body["spanCount"].as_u64() == Some(spans as u64)).then_some(body)
    })
    .await;
    let mut out = Vec::new();
    for rs in body["resourceSpans"].as_array().expect("resourceSpans") {
        let service = rs["resource"]["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|kv| kv["key"] == "service.name"))
            .map_or("", |kv| kv["value"]["stringValue"].as_str().unwrap_or(""))
            .to_owned();
        for ss in rs["scopeSpans"].as_array().expect("scopeSpans") {
            for sp in ss["spans"].as_array().expect("spans") {
                out.push((service.clone(), sp.clone()));
            }
        }
    }
    out
}

fn span<'a>(spans: &'a [(String, Value)], name: &str) -> &'a (String, Value) {
    spans.iter().find(|(_, s)| s["name"] == name).unwrap_or_else(|| panic!("span {name} missing"))
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == key))
        .map_or(&Value::Null, |kv| &kv["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_fixtures_read_back_through_native_and_jaeger_apis() {
    let server = common::start(|_| {}).await;
    let url = format!("http://{}/api/v2/spans", server.zipkin);
    for name in ["skew.json", "simple-db-p6.json", "otelcol-sample3.json", "otelcol-sample4.json"] {
        let body = std::fs::read(common::fixture(&format!("zipkin/{name}"))).expect("fixture");
        let (status, text) = post(&url, Some("application/json"), false, body).await;
        assert_eq!((status, text.as_str()), (202, ""), "{name}");
    }

    // skew.json: a 64-bit trace id; a shared SERVER span reusing its CLIENT's id.
    let skew = native_trace(&server, "00000000000000001e223ff1f80f1c69", 4).await;
    let ids: std::collections::HashSet<&str> =
        skew.iter().map(|(_, s)| s["spanId"].as_str().unwrap_or("")).collect();
    assert_eq!(ids.len(), 4, "the shared server span got its own id: {skew:?}");
    let server_span = skew
        .iter()
        .find(|(_, s)| s["name"] == "post" && s["kind"] == 2)
        .map(|(svc, s)| (svc.as_str(), s))
        .expect("server post");
    let client = skew
        .iter()
        .find(|(_, s)| s["name"] == "post" && s["kind"] == 3)
        .map(|(_, s)| s)
        .expect("client post");
    assert_eq!(client["spanId"], "74280ae0c10d8062");
    assert_eq!(server_span.0, "serviceb");
    assert_eq!(server_span.1["parentSpanId"], "74280ae0c10d8062", "server is the client's child");
    assert_eq!(attr(server_span.1, "zipkin.shared_span_id")["stringValue"], "74280ae0c10d8062");
    let (_, async_span) = span(&skew, "async");
    assert_eq!(
        async_span["parentSpanId"], server_span.1["spanId"],
        "serviceb's child hangs under the server side"
    );
    assert_eq!(async_span.get("kind").and_then(Value::as_u64).unwrap_or(0), 0, "no kind stays unspecified");
    let (root_svc, root) = span(&skew, "get");
    assert_eq!((root_svc.as_str(), root["kind"].as_u64()), ("servicea", Some(2)));
    assert!(root.get("parentSpanId").is_none_or(|p| p == ""), "root has no parent");

    // simple-db-p6.json: remote endpoints.
    let fixture: Value =
        serde_json::from_slice(&std::fs::read(common::fixture("zipkin/simple-db-p6.json")).expect("read"))
            .expect("json");
    let db_trace = format!("{:0>32}", fixture[0]["traceId"].as_str().expect("traceId"));
    let db = native_trace(&server, &db_trace, 5).await;
    let (svc, http_root) = span(&db, "http:/book");
    assert_eq!(svc, "bootifulmeters");
    assert_eq!(http_root["kind"], 2);
    assert_eq!(attr(http_root, "client.address")["stringValue"], "::1");
    assert_eq!(attr(http_root, "network.peer.port")["intValue"].to_string().trim_matches('"'), "53367");
    assert_eq!(attr(http_root, "network.local.address")["stringValue"], "172.23.250.16");
    let inserts: Vec<&Value> = db.iter().filter(|(_, s)| s["name"] == "insert").map(|(_, s)| s).collect();
    assert_eq!(inserts.len(), 3);
    for s in inserts {
        assert_eq!(s["kind"], 3);
        assert_eq!(s["parentSpanId"], http_root["spanId"]);
        assert_eq!(attr(s, "peer.service")["stringValue"], "app_db");
        assert!(attr(s, "sql.query")["stringValue"].as_str().is_some_and(|q| q.contains("insert")));
    }

    // otelcol-sample3/4: status from otel.status_code and from the error tag; annotations.
    let three = native_trace(&server, "4d1e00c0db9010db86154a4ba6e91385", 1).await;
    let (svc, get) = &three[0];
    assert_eq!(svc, "", "no local service name: no service.name attribute");
    assert_eq!(get["status"]["code"], 2);
    assert_eq!(get["status"]["message"], "Something failed");
    assert_eq!(attr(get, "peer.service")["stringValue"], "backend");
    assert_eq!(attr(get, "server.address")["stringValue"], "192.168.99.101");
    assert_eq!(attr(get, "network.local.address")["stringValue"], "7::80:807f");
    assert_eq!(attr(get, "http.path")["stringValue"], "/api");
    assert!(attr(get, "otel.status_code").is_null() && attr(get, "error").is_null());
    let events: Vec<(&str, &str)> = get["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["name"].as_str().unwrap_or(""), e["timeUnixNano"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(events, vec![("foo", "1472470996238000000"), ("bar", "1472470996403000000")]);

    // The same through the Jaeger v1 API, in its own terms. Sample 4 reuses sample 3's ids
    // (both are the collector's fixtures for one span); the first copy stored wins.
    let (status, jaeger) = get_json(&server.query("/api/traces/00000000000000001e223ff1f80f1c69")).await;
    assert_eq!(status, 200, "{jaeger}");
    let trace = &jaeger["data"][0];
    let processes: std::collections::BTreeSet<&str> = trace["processes"]
        .as_object()
        .expect("processes")
        .values()
        .map(|p| p["serviceName"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(processes, ["servicea", "serviceb"].into_iter().collect());
    let jspans = trace["spans"].as_array().expect("spans");
    let jserver =
        jspans.iter().find(|s| s["spanID"] == server_span.1["spanId"]).expect("server span in jaeger");
    assert_eq!(jserver["references"][0]["refType"], "CHILD_OF");
    assert_eq!(jserver["references"][0]["spanID"], "74280ae0c10d8062");
    let kind = jserver["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .find(|t| t["key"] == "span.kind")
        .expect("span.kind");
    assert_eq!(kind["value"], "server");
    let (_, services) = get_json(&server.query("/api/services")).await;
    for s in ["servicea", "serviceb", "bootifulmeters"] {
        assert!(services["data"].as_array().expect("data").iter().any(|v| v == s), "{s} in {services}");
    }
    let (_, ops) = get_json(&server.query("/api/services/bootifulmeters/operations")).await;
    let mut ops: Vec<&str> = ops["data"].as_array().expect("data").iter().filter_map(Value::as_str).collect();
    ops.sort_unstable();
    assert_eq!(ops, vec!["call", "http:/book", "insert"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_http_udp_and_zipkin_proto_payloads_are_stored() {
    let server = common::start(|_| {}).await;
    let jaeger = format!("http://{}/api/traces", server.jaeger_http);
    let (status, body) = post(&jaeger, Some("application/x-thrift"), false, PY_COLLECTOR.to_vec()).await;
    assert_eq!((status, body.as_str()), (202, ""));
    let spans = native_trace(&server, "5eed0000000000000000000000000001", 3).await;
    let (svc, client) = span(&spans, "GET user-service");
    assert_eq!(svc, "legacy-gateway");
    assert_eq!((client["kind"].as_u64(), client["status"]["code"].as_u64()), (Some(3), Some(2)));

    // References: the parent given only as CHILD_OF, a FOLLOWS_FROM and a second CHILD_OF
    // come back through the Jaeger API as they went in.
    use strand_ingest::jaeger::model::{Batch, CHILD_OF, FOLLOWS_FROM, Process, Span, SpanRef};
    let r = |ref_type, low, span_id| SpanRef { ref_type, trace_id_low: low, trace_id_high: 0, span_id };
    let batch = Batch {
        process: Process { service_name: "refs".into(), ..Process::default() },
        spans: vec![Span {
            trace_id_low: 0xfeed,
            span_id: 2,
            operation_name: "child".into(),
            references: vec![r(CHILD_OF, 0xfeed, 1), r(FOLLOWS_FROM, 0xbeef, 7), r(CHILD_OF, 0xfeed, 3)],
            start_time: Some(1_700_000_000_000_000),
            duration: 10,
            ..Span::default()
        }],
    };
    let body = strand_ingest::jaeger::encode::binary_batch(&batch);
    assert_eq!(post(&jaeger, Some("application/x-thrift"), false, body).await.0, 202);
    native_trace(&server, "0000000000000000000000000000feed", 1).await;
    let (_, trace) = get_json(&server.query("/api/traces/000000000000feed")).await;
    let refs: Vec<(&str, &str)> = trace["data"][0]["spans"][0]["references"]
        .as_array()
        .expect("references")
        .iter()
        .map(|r| (r["refType"].as_str().unwrap_or(""), r["spanID"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        refs,
        vec![
            ("CHILD_OF", "0000000000000001"),
            ("FOLLOWS_FROM", "0000000000000007"),
            ("CHILD_OF", "0000000000000003")
        ]
    );

    // gzip, and the alternative content type Jaeger accepts.
    let (status, _) =
        post(&jaeger, Some("application/vnd.apache.thrift.binary"), true, gzip(PY_COLLECTOR)).await;
    assert_eq!(status, 202);

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    socket.send_to(PY_AGENT, server.jaeger_agent).await.expect("send datagram");
    let spans = native_trace(&server, "5eed0000000000000000000000000010", 3).await;
    assert_eq!(span(&spans, "POST /reports").1["events"][0]["name"], "accepted");

    // The binary agent port (what Node clients send): the same batch as a strict
    // binary-protocol emitBatch, and the refs batch above in the old non-strict header.
    let mut agent_batch = strand_ingest::jaeger::model::decode_compact_emit_batch(PY_AGENT).expect("compact");
    for s in &mut agent_batch.spans {
        s.trace_id_low += 0x100;
    }
    let binary = strand_ingest::jaeger::encode::binary_emit_batch(&agent_batch, 7);
    socket.send_to(&binary, server.jaeger_agent_binary).await.expect("send datagram");
    let spans = native_trace(&server, "5eed0000000000000000000000000110", 3).await;
    assert_eq!(span(&spans, "POST /reports").1["events"][0]["name"], "accepted");
    let mut non_strict = 9i32.to_be_bytes().to_vec();
    non_strict.extend_from_slice(b"emitBatch");
    non_strict.push(4); // oneway
    non_strict.extend_from_slice(&1i32.to_be_bytes());
    let mut elsewhere = batch.clone();
    elsewhere.spans[0].trace_id_low = 0xfeee;
    elsewhere.spans[0].references.clear();
    non_strict.extend_from_slice(&[12, 0, 1]); // field 1: the Batch struct
    non_strict.extend(strand_ingest::jaeger::encode::binary_batch(&elsewhere));
    non_strict.push(0);
    socket.send_to(&non_strict, server.jaeger_agent_binary).await.expect("send datagram");
    common::eventually("the non-strict datagram's span", || async {
        let r = reqwest::get(server.query("/api/v1/traces/0000000000000000000000000000feee")).await.ok()?;
        let body: serde_json::Value = r.json().await.ok()?;
        (body["spanCount"] == 1).then_some(())
    })
    .await;

    let zipkin = format!("http://{}/api/v2/spans", server.zipkin);
    let (status, _) = post(&zipkin, Some("application/x-protobuf"), true, gzip(PY_ZIPKIN_PROTO)).await;
    assert_eq!(status, 202);
    let spans = native_trace(&server, "5eed0000000000000000000000000003", 3).await;
    assert_eq!(span(&spans, "render").1["status"]["code"], 1);
    // Zipkin's `error` tag stays an attribute with its message, and the Jaeger JSON still
    // marks the span as an error the way the Jaeger UI reads it.
    let (_, jaeger_json) = get_json(&server.query("/api/traces/5eed0000000000000000000000000003")).await;
    let client = jaeger_json["data"][0]["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .find(|s| s["operationName"] == "GET user-service")
        .expect("the client span");
    let errors: Vec<&serde_json::Value> = client["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter(|t| t["key"] == "error")
        .map(|t| &t["value"])
        .collect();
    assert_eq!(errors, vec![&serde_json::json!("upstream failed"), &serde_json::json!(true)], "{client}");

    // A garbage datagram is counted, not fatal; a compact datagram on the binary port is
    // garbage there.
    socket.send_to(b"not thrift", server.jaeger_agent).await.expect("send");
    socket.send_to(PY_AGENT, server.jaeger_agent_binary).await.expect("send");
    let metrics = common::eventually("the garbage datagrams to be counted", || async {
        let text = reqwest::get(server.query("/metrics")).await.expect("metrics").text().await.expect("text");
        (text.contains("strand_receiver_requests_refused_total{protocol=\"jaeger_agent_compact\"} 1")
            && text.contains("strand_receiver_requests_refused_total{protocol=\"jaeger_agent_binary\"} 1"))
        .then_some(text)
    })
    .await;
    for line in [
        "strand_receiver_spans_accepted_total{protocol=\"jaeger_thrift_http\"} 7",
        "strand_receiver_spans_accepted_total{protocol=\"jaeger_agent_compact\"} 3",
        "strand_receiver_spans_accepted_total{protocol=\"jaeger_agent_binary\"} 4",
        "strand_receiver_spans_accepted_total{protocol=\"zipkin\"} 3",
        "strand_receiver_spans_accepted_total{protocol=\"otlp_http\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_legacy_input_gets_precise_errors() {
    const LIMIT: u64 = 4096;
    let server = common::start(|c| c.otlp.max_request_size = strand_server::config::ByteSize(LIMIT)).await;
    let jaeger = format!("http://{}/api/traces", server.jaeger_http);
    let zipkin = format!("http://{}/api/v2/spans", server.zipkin);
    let thrift = Some("application/x-thrift");
    let json = Some("application/json");
    // (name, url, content type, gzipped, body, status, message)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, bool, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "jaeger garbage",
            &jaeger,
            thrift,
            false,
            b"\x0c\x00\x01garbage".to_vec(),
            400,
            "invalid thrift Batch: ",
        ),
        (
            "jaeger truncated",
            &jaeger,
            thrift,
            false,
            PY_COLLECTOR[..100].to_vec(),
            400,
            "invalid thrift Batch: truncated",
        ),
        (
            "jaeger json",
            &jaeger,
            json,
            false,
            b"{}".to_vec(),
            415,
            "unsupported Content-Type `application/json`",
        ),
        ("jaeger no type", &jaeger, None, false, PY_COLLECTOR.to_vec(), 415, "missing Content-Type"),
        (
            "jaeger too large",
            &jaeger,
            thrift,
            false,
            vec![0; LIMIT as usize + 1],
            413,
            "exceeds the limit of 4096 bytes",
        ),
        (
            "jaeger gzip bomb",
            &jaeger,
            thrift,
            true,
            gzip(&vec![0; 1 << 20]),
            413,
            "decompressed request body exceeds",
        ),
        ("jaeger bad gzip", &jaeger, thrift, true, b"nope".to_vec(), 400, "invalid gzip body"),
        (
            "zipkin not json",
            &zipkin,
            json,
            false,
            b"[{".to_vec(),
            400,
            "expected a JSON array of Zipkin v2 spans",
        ),
        ("zipkin object", &zipkin, json, false, b"{}".to_vec(), 400, "expected a JSON array"),
        (
            "zipkin bad proto",
            &zipkin,
            Some("application/x-protobuf"),
            false,
            b"\x0a\xff".to_vec(),
            400,
            "invalid protobuf zipkin.proto3.ListOfSpans",
        ),
        (
            "zipkin thrift",
            &zipkin,
            thrift,
            false,
            b"x".to_vec(),
            415,
            "use application/json or application/x-protobuf",
        ),
        ("zipkin too large", &zipkin, json, false, vec![b' '; LIMIT as usize + 1], 413, "exceeds the limit"),
    ];
    for (name, url, ct, gz, body, want_status, want_message) in cases {
        let (status, text) = post(url, ct, gz, body).await;
        assert_eq!(status, want_status, "{name}: {text}");
        assert!(text.contains(want_message), "{name}: `{text}` lacks `{want_message}`");
    }
    let (status, text) =
        post(&format!("http://{}/api/v1/spans", server.zipkin), json, false, b"[]".to_vec()).await;
    assert_eq!(status, 415);
    assert!(text.contains("POST Zipkin v2 spans to /api/v2/spans"), "{text}");

    // One bad span is reported; the rest is stored.
    let body = br#"[{"traceId":"aa","id":"1","name":"good","timestamp":1700000000000000,"duration":5,"localEndpoint":{"serviceName":"mixed"}},
                    {"traceId":"aa","id":"zz","name":"bad id","timestamp":1700000000000000},
                    {"traceId":"aa","id":"3","name":"no time"}]"#;
    let (status, text) = post(&zipkin, json, false, body.to_vec()).await;
    assert_eq!(status, 202);
    let report: Value = serde_json::from_str(&text).expect("partial-success json");
    assert_eq!(report["rejectedSpans"], 2);
    let message = report["errorMessage"].as_str().expect("message");
    assert!(message.contains("span 1: id `zz` is not 1 to 16 hex digits"), "{message}");
    assert!(message.contains("span 2: timestamp is missing"), "{message}");
    let spans = native_trace(&server, "000000000000000000000000000000aa", 1).await;
    assert_eq!(spans[0].1["name"], "good");

    // Still serving after all that.
    let (status, _) = post(&jaeger, thrift, false, PY_COLLECTOR.to_vec()).await;
    assert_eq!(status, 202);
    server.stop().await;
}
