//! Every kind of bad input gets its precise status and message, and never takes the
//! server down: on the trace and the log endpoints alike.

mod common;

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

const LIMIT: u64 = 64 * 1024;

/// A message whose field 1 (where `resource_spans` lives) holds bytes that are no message.
#[derive(Clone, PartialEq, prost::Message)]
struct Bogus {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

fn span_json(trace: &str, span: &str) -> String {
    format!(
        r#"{{"traceId":"{trace}","spanId":"{span}","name":"op","startTimeUnixNano":"1","endTimeUnixNano":2}}"#
    )
}

fn request_json(spans: &[String]) -> Vec<u8> {
    format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#, spans.join(",")).into_bytes()
}

struct Case {
    name: &'static str,
    content_type: Option<&'static str>,
    encoding: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    message: String,
}

fn log_json(trace: &str, span: &str, extra: &str) -> String {
    format!(
        r#"{{"traceId":"{trace}","spanId":"{span}","timeUnixNano":"1","body":{{"stringValue":"hello"}}{extra}}}"#
    )
}

fn logs_request_json(records: &[String]) -> Vec<u8> {
    format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}]}}]}}]}}"#, records.join(",")).into_bytes()
}

/// The bad requests of every OTLP/HTTP endpoint; `request` names its message type
/// (`ExportTraceServiceRequest`), `bad_hex` is a request of it with an odd-length id.
fn cases(request: &str, bad_hex: Vec<u8>) -> Vec<Case> {
    vec![
        Case {
            name: "wrong content type",
            content_type: Some("text/plain"),
            encoding: None,
            body: b"hi".to_vec(),
            status: 415,
            message: "unsupported Content-Type `text/plain`".into(),
        },
        Case {
            name: "missing content type",
            content_type: None,
            encoding: None,
            body: b"hi".to_vec(),
            status: 415,
            message: "missing Content-Type".into(),
        },
        Case {
            name: "unknown encoding",
            content_type: Some("application/json"),
            encoding: Some("br"),
            body: b"{}".to_vec(),
            status: 415,
            message: "unsupported Content-Encoding `br`".into(),
        },
        Case {
            name: "malformed json",
            content_type: Some("application/json"),
            encoding: None,
            body: b"{\"resourceSpans\": [".to_vec(),
            status: 400,
            message: format!("invalid OTLP/JSON {request}"),
        },
        Case {
            name: "json of the wrong shape",
            content_type: Some("application/json"),
            encoding: None,
            body: b"[1,2,3]".to_vec(),
            status: 400,
            message: format!("invalid OTLP/JSON {request}"),
        },
        Case {
            // Rejected on its own (partial success), not the whole request.
            name: "odd-length hex id",
            content_type: Some("application/json"),
            encoding: None,
            body: bad_hex,
            status: 200,
            message: "traceId `abc` is not hex".into(),
        },
        Case {
            name: "malformed protobuf",
            content_type: Some("application/x-protobuf"),
            encoding: None,
            body: vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1],
            status: 400,
            message: format!("invalid protobuf {request}"),
        },
        Case {
            name: "corrupt gzip",
            content_type: Some("application/json"),
            encoding: Some("gzip"),
            body: b"\x1f\x8b\x08\x00garbage".to_vec(),
            status: 400,
            message: "invalid gzip body".into(),
        },
        Case {
            name: "corrupt deflate",
            content_type: Some("application/json"),
            encoding: Some("deflate"),
            body: b"\x78\x9cgarbage".to_vec(),
            status: 400,
            message: "invalid deflate body".into(),
        },
        Case {
            name: "corrupt zstd",
            content_type: Some("application/json"),
            encoding: Some("zstd"),
            body: b"\x28\xb5\x2f\xfdgarbage".to_vec(),
            status: 400,
            message: "invalid zstd body".into(),
        },
        Case {
            name: "zstd bomb",
            content_type: Some("application/json"),
            encoding: Some("zstd"),
            body: zstd::encode_all(&vec![b' '; 50 * LIMIT as usize][..], 1).expect("zstd"),
            status: 413,
            message: "decompressed request body exceeds the limit of 65536 bytes".into(),
        },
        Case {
            name: "body over the limit",
            content_type: Some("application/json"),
            encoding: None,
            body: vec![b' '; LIMIT as usize + 1],
            status: 413,
            message: "request body exceeds the limit of 65536 bytes".into(),
        },
        Case {
            // Still being sent when the server answers: it must read the rest away, or
            // the client sees a connection reset instead of the 413.
            name: "body far over the limit",
            content_type: Some("application/json"),
            encoding: None,
            body: vec![b' '; 64 * LIMIT as usize],
            status: 413,
            message: "request body exceeds the limit of 65536 bytes".into(),
        },
        Case {
            name: "gzip bomb",
            content_type: Some("application/json"),
            encoding: Some("gzip"),
            body: gzip(&vec![b' '; 50 * LIMIT as usize]),
            status: 413,
            message: "decompressed request body exceeds the limit of 65536 bytes".into(),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_input_gets_precise_errors() {
    let server = common::start(|c| c.otlp.max_request_size = strand_server::config::ByteSize(LIMIT)).await;
    let good = span_json("0102030405060708090a0b0c0d0e0f10", "0102030405060708");
    let client = reqwest::Client::new();
    let endpoints = [
        (
            "/v1/traces",
            cases("ExportTraceServiceRequest", request_json(&[span_json("abc", "0102030405060708")])),
        ),
        (
            "/v1/logs",
            cases("ExportLogsServiceRequest", logs_request_json(&[log_json("abc", "0102030405060708", "")])),
        ),
    ];
    for (path, cases) in &endpoints {
        let url = format!("http://{}{path}", server.otlp_http);
        for case in cases {
            let mut req = client.post(&url).body(case.body.clone());
            if let Some(ct) = case.content_type {
                req = req.header("content-type", ct);
            }
            if let Some(enc) = case.encoding {
                req = req.header("content-encoding", enc);
            }
            let resp = req.send().await.expect("request");
            assert_eq!(resp.status().as_u16(), case.status, "{path} case {}", case.name);
            let text = resp.text().await.expect("body");
            assert!(
                text.contains(&case.message),
                "{path} case {}: body {text:?} lacks {:?}",
                case.name,
                case.message
            );
        }
        assert!(cases[6].body.len() < 16, "the protobuf case is small");
    }

    // Invalid spans are rejected one by one; the rest is stored.
    let body = request_json(&[
        good.clone(),
        span_json("00000000000000000000000000000000", "0102030405060708"),
        span_json("0102030405060708090a0b0c0d0e0f10", "0000000000000000"),
        span_json("0102030405060708090a0b0c0d0e0f1011", "0102030405060709"),
        r#"{"trace_id":"0102030405060708090a0b0c0d0e0f10","span_id":"0102030405060709","name":"snake"}"#
            .to_string(),
    ]);
    let resp = client
        .post(server.otlp_url())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], 4, "{answer}");
    let msg = answer["partialSuccess"]["errorMessage"].as_str().expect("message");
    for needle in [
        "span 1: trace_id must not be all zeroes",
        "span 2: span_id must not be all zeroes",
        "span 3: trace_id must be 16 bytes, got 17",
        "span 4: trace_id must be 16 bytes, got 0",
    ] {
        assert!(msg.contains(needle), "{msg} lacks {needle}");
    }
    let trace: serde_json::Value =
        reqwest::get(server.query("/api/v1/traces/0102030405060708090a0b0c0d0e0f10"))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
    assert_eq!(trace["spanCount"], 1, "the valid span was stored");

    // Invalid log records are rejected one by one; the rest is stored.
    let body = logs_request_json(&[
        log_json("0102030405060708090a0b0c0d0e0f10", "0102030405060708", ""),
        log_json("0102030405060708090a0b0c0d0e0f1011", "0102030405060708", ""),
        log_json("", "0102030405060708", ""),
        log_json("0102030405060708090a0b0c0d0e0f10", "0102030405060708", r#","severityNumber":99"#),
    ]);
    let resp = client
        .post(format!("http://{}/v1/logs", server.otlp_http))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(answer["partialSuccess"]["rejectedLogRecords"], 3, "{answer}");
    let msg = answer["partialSuccess"]["errorMessage"].as_str().expect("message");
    for needle in [
        "log record 1: trace_id must be 16 bytes or empty, got 17",
        "log record 2: span_id given without a trace_id",
        "log record 3: severity_number must be 0-24, got 99",
    ] {
        assert!(msg.contains(needle), "{msg} lacks {needle}");
    }
    let logs = common::get_json(&server.query("/api/v1/logs?traceId=0102030405060708090a0b0c0d0e0f10")).await;
    assert_eq!(logs["count"], 1, "the valid record was stored: {logs}");

    // Metrics are not stored: 404 with a message saying so, counted.
    let resp = client
        .post(format!("http://{}/v1/metrics", server.otlp_http))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 404);
    let text = resp.text().await.expect("body");
    assert!(text.contains("strand stores traces and logs, not metrics"), "{text}");
    let metrics = reqwest::get(server.query("/metrics")).await.expect("get").text().await.expect("text");
    for (series, want) in [
        (r#"strand_receiver_metrics_requests_refused_total{protocol="otlp_http"}"#, 1.0),
        (r#"strand_receiver_log_records_stored_total{protocol="otlp_http"}"#, 1.0),
        // Three in the partial-success request below, one (a non-hex trace id) in the table.
        (r#"strand_receiver_log_records_rejected_total{protocol="otlp_http"}"#, 4.0),
        (r#"strand_receiver_log_records_received_total{protocol="otlp_http"}"#, 5.0),
        // Every case of the table but the partial success.
        (r#"strand_receiver_log_requests_refused_total{protocol="otlp_http"}"#, 13.0),
    ] {
        assert_eq!(common::metric_value(&metrics, series), Some(want), "{series}");
    }

    // Query-side errors.
    for (path, status, message) in [
        ("/api/v1/traces/xyz", 400, "invalid trace id `xyz`: trace_id must be 32 hex characters"),
        (
            "/api/v1/traces/00000000000000000000000000000000",
            400,
            "invalid trace id `00000000000000000000000000000000`: trace_id must not be all zeroes",
        ),
        (
            "/api/v1/traces/ffffffffffffffffffffffffffffffff",
            404,
            "trace ffffffffffffffffffffffffffffffff not found",
        ),
    ] {
        let resp = reqwest::get(server.query(path)).await.expect("get");
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let body: serde_json::Value = resp.json().await.expect("json error");
        assert_eq!(body["error"], message, "{path}");
    }
    server.stop().await;
}

/// Sends `data` as the protobuf field 1 of a message to a gRPC method, whatever the method
/// expects; the answer's message is left undecoded.
async fn send_raw(
    server: &common::TestServer,
    path: &'static str,
    data: Vec<u8>,
) -> Result<Bogus, tonic::Status> {
    send_raw_compressed(server, path, data, None).await
}

/// [`send_raw`], the message compressed with `compression`.
async fn send_raw_compressed(
    server: &common::TestServer,
    path: &'static str,
    data: Vec<u8>,
    compression: Option<tonic::codec::CompressionEncoding>,
) -> Result<Bogus, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("channel");
    let mut raw = tonic::client::Grpc::new(channel);
    if let Some(c) = compression {
        raw = raw.send_compressed(c);
    }
    raw.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<Bogus, Bogus>::default();
    let path = http::uri::PathAndQuery::from_static(path);
    raw.unary(tonic::Request::new(Bogus { data }), path, codec).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grpc_input_gets_status_codes() {
    let server = common::start(|c| c.otlp.max_request_size = strand_server::config::ByteSize(LIMIT)).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc)).await.expect("connect");
    let span =
        |tid: Vec<u8>, name: String| Span { trace_id: tid, span_id: vec![1; 8], name, ..Default::default() };
    let req = |spans: Vec<Span>| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    // Oversized message.
    let big = req(vec![span(vec![1; 16], "x".repeat(LIMIT as usize))]);
    let err = client.export(big).await.expect_err("too large");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    // Partial success over gRPC.
    let answer = client
        .export(req(vec![span(vec![1; 16], "ok".into()), span(vec![0; 16], "zero".into())]))
        .await
        .expect("export")
        .into_inner();
    let ps = answer.partial_success.expect("partial success");
    assert_eq!(ps.rejected_spans, 1);
    assert!(ps.error_message.contains("trace_id must not be all zeroes"), "{}", ps.error_message);
    // Bytes that are not an ExportTraceServiceRequest: INVALID_ARGUMENT.
    let err = send_raw(
        &server,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        vec![0xff, 0xff, 0xff],
    )
    .await
    .expect_err("garbage must be refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("invalid protobuf ExportTraceServiceRequest"), "{err}");
    // The server still works.
    client.export(req(vec![span(vec![2; 16], "after".into())])).await.expect("server still serves");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grpc_log_input_gets_status_codes_and_metrics_are_refused_with_a_message() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let server = common::start(|c| c.otlp.max_request_size = strand_server::config::ByteSize(LIMIT)).await;
    let mut client = LogsServiceClient::connect(format!("http://{}", server.grpc)).await.expect("connect");
    let record = |tid: Vec<u8>, body: String| LogRecord {
        trace_id: tid,
        span_id: vec![1; 8],
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
        ..Default::default()
    };
    let req = |log_records: Vec<LogRecord>| ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs { log_records, ..Default::default() }],
            ..Default::default()
        }],
    };
    let big = req(vec![record(vec![1; 16], "x".repeat(LIMIT as usize))]);
    let err = client.export(big).await.expect_err("too large");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    let answer = client
        .export(req(vec![record(vec![1; 16], "ok".into()), record(vec![7; 3], "short id".into())]))
        .await
        .expect("export")
        .into_inner();
    let ps = answer.partial_success.expect("partial success");
    assert_eq!(ps.rejected_log_records, 1);
    assert!(ps.error_message.contains("trace_id must be 16 bytes or empty, got 3"), "{}", ps.error_message);
    let err = send_raw(
        &server,
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        vec![0xff, 0xff, 0xff],
    )
    .await
    .expect_err("garbage must be refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("invalid protobuf ExportLogsServiceRequest"), "{err}");
    let logs = common::get_json(&server.query(&format!("/api/v1/logs?traceId={}", "01".repeat(16)))).await;
    assert_eq!(logs["count"], 1, "the valid record was stored: {logs}");

    // Metrics: UNIMPLEMENTED with a message (not tonic's bare answer), counted.
    // (An empty message is a valid ExportMetricsServiceRequest.)
    let err =
        send_raw(&server, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", Vec::new())
            .await
            .expect_err("metrics are refused");
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err}");
    assert!(err.message().contains("strand stores traces and logs, not metrics"), "{err}");
    let text = reqwest::get(server.query("/metrics")).await.expect("get").text().await.expect("text");
    let refused = r#"strand_receiver_metrics_requests_refused_total{protocol="otlp_grpc"}"#;
    assert_eq!(common::metric_value(&text, refused), Some(1.0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_hold_no_slot_but_fill_the_memory_budget_and_time_out() {
    use tokio::io::AsyncReadExt;
    let server = common::start(|c| {
        c.otlp.max_concurrent_requests = 1;
        c.otlp.max_request_size = "1KiB".parse().expect("size");
        c.otlp.body_read_timeout = "2s".parse().expect("duration");
        c.limits.memory_size = "8KiB".parse().expect("size");
    })
    .await;
    // The memory budget is 8 KiB. Eight clients send 990 of their 1000 body bytes and stall.
    let stalled = stalled_http_bodies(&server, 8, 1000, 990).await;
    let metric = |series: &'static str| metric(&server, series);
    common::eventually("the stalled bodies to be received in part", || async {
        (metric("strand_receiver_body_bytes_receiving").await == Some(7920.0)).then_some(())
    })
    .await;
    let post = |body: String| {
        reqwest::Client::new()
            .post(server.otlp_url())
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // They hold no admission slot: the only one is free for a request that has arrived.
    assert_eq!(post("{}".into()).await.expect("post").status(), 200);
    // A body that does not fit in what is left of the budget is refused, retryably.
    let padded = format!("{{\"resourceSpans\":[]}}{}", " ".repeat(380));
    let resp = post(padded.clone()).await.expect("post");
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(resp.text().await.expect("body").contains("memory budget is full"));
    let refused = r#"strand_memory_budget_refused_total{stage="body"}"#;
    assert_eq!(metric(refused).await, Some(1.0));
    // The stalled bodies get 408 once body_read_timeout has passed, and give the budget back.
    for mut s in stalled {
        let mut answer = vec![0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), s.read(&mut answer))
            .await
            .expect("an answer within 30 s")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert_eq!(metric("strand_receiver_body_timeouts_total").await, Some(8.0));
    assert_eq!(metric("strand_receiver_body_budget_refused_total").await, Some(1.0));
    common::eventually("the budget to be given back", || async {
        let receiving = r#"strand_memory_budget_used_bytes{part="receiving"}"#;
        (metric("strand_receiver_body_bytes_receiving").await == Some(0.0)
            && metric(receiving).await == Some(0.0))
        .then_some(())
    })
    .await;
    assert_eq!(post(padded).await.expect("post").status(), 200);
    assert_eq!(reqwest::get(server.query("/readyz")).await.expect("readyz").status(), 200);
    server.stop().await;
}

/// `n` OTLP/HTTP exports announcing `length` body bytes, of which each sends `sent` and
/// stalls; held open while the streams live.
async fn stalled_http_bodies(
    server: &common::TestServer,
    n: usize,
    length: usize,
    sent: usize,
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut stalled = Vec::new();
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(server.otlp_http).await.expect("connect");
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("write");
        s.write_all(&vec![b' '; sent]).await.expect("write");
        stalled.push(s);
    }
    stalled
}

/// The value of one series on the server's `/metrics`.
async fn metric(server: &common::TestServer, series: &str) -> Option<f64> {
    let text = reqwest::get(server.query("/metrics")).await.ok()?.text().await.ok()?;
    common::metric_value(&text, series)
}

/// Opens an HTTP/2 connection and a trace export on it announcing a 1000 KiB message, of
/// which it sends `sent` bytes and then stalls. Held open while the returned parts live.
async fn stalled_grpc_export(
    addr: std::net::SocketAddr,
    sent: usize,
) -> (h2::client::SendRequest<bytes::Bytes>, h2::SendStream<bytes::Bytes>, h2::client::ResponseFuture) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let req = http::Request::post(format!(
        "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    let (resp, mut send) = client.send_request(req, false).expect("send request");
    let mut message = vec![0u8];
    message.extend_from_slice(&(1000u32 * 1024).to_be_bytes());
    message.resize(5 + sent, 0);
    send.send_data(bytes::Bytes::from(message), false).expect("send data");
    (client, send, resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_take_their_bytes_from_the_memory_budget_as_they_arrive() {
    let server = common::start(|c| {
        c.otlp.max_request_size = "1MiB".parse().expect("size");
        c.limits.memory_size = "8MiB".parse().expect("size");
    })
    .await;
    let metric = |series: &'static str| metric(&server, series);
    let receiving = r#"strand_memory_budget_used_bytes{part="receiving"}"#;
    // Eight exports send 900 KiB of their 1000 KiB message each and stall: 7200 KiB held.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(stalled_grpc_export(server.grpc, 900 * 1024).await);
    }
    common::eventually("the stalled messages' bytes to be counted", || async {
        (metric(receiving).await == Some(8.0 * (900.0 * 1024.0 + 5.0))).then_some(())
    })
    .await;
    // A whole message that does not fit in what is left is refused while it arrives
    // (RESOURCE_EXHAUSTED with a RetryInfo), not buffered and decoded (that would answer
    // INVALID_ARGUMENT: its bytes are no export request).
    let err = send_raw(
        &server,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        vec![0; 1000 * 1024],
    )
    .await
    .expect_err("over the memory budget");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("memory budget is full"), "{err}");
    assert!(!err.details().is_empty(), "a RetryInfo tells the exporter to retry");
    // A small gzipped message whose inflated copy does not fit is refused as tonic
    // inflates it, not decoded.
    let err = send_raw_compressed(
        &server,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        vec![0; 1000 * 1024],
        Some(tonic::codec::CompressionEncoding::Gzip),
    )
    .await
    .expect_err("over the memory budget once inflated");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("memory budget is full"), "{err}");
    let refused = r#"strand_memory_budget_refused_total{stage="grpc_message"}"#;
    assert_eq!(metric(refused).await, Some(2.0));
    let refused = r#"strand_receiver_requests_refused_total{protocol="otlp_grpc"}"#;
    assert_eq!(metric(refused).await, Some(2.0));
    // Clients that go away give their bytes back; exports are accepted again.
    drop(stalled);
    common::eventually("the stalled messages' bytes to be given back", || async {
        (metric(receiving).await == Some(0.0)).then_some(())
    })
    .await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc)).await.expect("connect");
    let span = Span {
        trace_id: vec![7; 16],
        span_id: vec![7; 8],
        name: "after".into(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        }],
    };
    client.export(req).await.expect("stored once the budget has room");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_not_yet_in_blocks_counts_against_the_memory_budget() {
    let server = common::start(|c| {
        c.otlp.max_request_size = "256KiB".parse().expect("size");
        c.otlp.body_read_timeout = "2s".parse().expect("duration");
        c.limits.memory_size = "2MiB".parse().expect("size");
    })
    .await;
    let metric = |series: &'static str| metric(&server, series);
    // The store keeps a quarter of the budget for requests: its own bound is 1536 KiB.
    assert_eq!(metric("strand_store_unwritten_budget_bytes").await, Some(1536.0 * 1024.0));
    let post = |body: Vec<u8>| {
        reqwest::Client::new()
            .post(server.otlp_url())
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // About 400 KB of spans wait in the head (it is cut at half the store's bound).
    let value = "v".repeat(1000);
    for batch in 0..4 {
        let spans: Vec<String> = (0..90)
            .map(|i| {
                let span =
                    span_json("0af7651916cd43dd8448eb211c80319c", &format!("{:016x}", batch * 1000 + i + 1));
                span.replace(
                    r#""name":"op""#,
                    &format!(
                        r#""name":"op","attributes":[{{"key":"k","value":{{"stringValue":"{value}"}}}}]"#
                    ),
                )
            })
            .collect();
        assert_eq!(post(request_json(&spans)).await.expect("post").status(), 200);
    }
    let unwritten = metric(r#"strand_memory_budget_used_bytes{part="unwritten"}"#).await.expect("gauge");
    assert!((300_000.0..500_000.0).contains(&unwritten), "the head's bytes are counted: {unwritten}");
    assert_eq!(metric("strand_store_unwritten_bytes").await, Some(unwritten));
    // Six bodies arrive in part (1,500,000 bytes) and stall.
    let stalled = stalled_http_bodies(&server, 6, 260_000, 250_000).await;
    common::eventually("the stalled bodies to be counted", || async {
        (metric(r#"strand_memory_budget_used_bytes{part="receiving"}"#).await == Some(1_500_000.0))
            .then_some(())
    })
    .await;
    // 597,152 bytes are left beside the stalled bodies, under 300,000 beside the head too:
    // a 250,000-byte request does not fit.
    let padded = format!("{{\"resourceSpans\":[]}}{}", " ".repeat(250_000 - 20)).into_bytes();
    let resp = post(padded.clone()).await.expect("post");
    assert_eq!(resp.status(), 429);
    let text = resp.text().await.expect("body");
    assert!(text.contains(&format!("and {unwritten} bytes waiting to be written to blocks")), "{text}");
    // Less than one largest request is left: not ready for ingest, and /readyz says why.
    let ready = reqwest::get(server.query("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 503);
    let why = ready.text().await.expect("body");
    assert!(why.contains("memory budget: 1500000 bytes being received"), "{why}");
    // Block writes free the head's share; the stalled bodies time out and free theirs.
    server.flush().await;
    drop(stalled);
    common::eventually("the budget to be free", || async {
        let receiving = metric(r#"strand_memory_budget_used_bytes{part="receiving"}"#).await;
        let unwritten = metric(r#"strand_memory_budget_used_bytes{part="unwritten"}"#).await;
        (receiving == Some(0.0) && unwritten == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(post(padded).await.expect("post").status(), 200);
    assert_eq!(reqwest::get(server.query("/readyz")).await.expect("readyz").status(), 200);
    server.stop().await;
}
