//! The official OTLP example trace (JSON and its protobuf twin) and a span using every
//! field of the OTLP model are accepted over HTTP and gRPC and read back field for field,
//! from the head and after a flush from Parquet blocks.

mod common;

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;

const FIXTURE_TRACE: &str = "5b8efff798038103d269b633813fc60c";

fn fixture_json() -> Vec<u8> {
    std::fs::read(common::fixture("otlp/trace.json")).expect("fixture")
}

fn fixture_pb() -> Vec<u8> {
    std::fs::read(common::fixture("otlp/trace.protobuf-bin")).expect("fixture")
}

/// Fields the server fills in with their defaults on the way out.
fn normalize(mut req: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for rs in &mut req.resource_spans {
        rs.resource.get_or_insert_with(Default::default);
        for ss in &mut rs.scope_spans {
            ss.scope.get_or_insert_with(Default::default);
            for sp in &mut ss.spans {
                if sp.status == Some(Status::default()) {
                    sp.status = None;
                }
            }
        }
    }
    req
}

async fn read_back(server: &common::TestServer, id: &str) -> ExportTraceServiceRequest {
    let resp = reqwest::get(server.query(&format!("/api/v1/traces/{id}"))).await.expect("get trace");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["traceId"], id);
    serde_json::from_value(body).expect("answer is OTLP/JSON resourceSpans")
}

async fn assert_round_trip(server: &common::TestServer, id: &str, sent: &ExportTraceServiceRequest) {
    assert_eq!(normalize(read_back(server, id).await), normalize(sent.clone()), "read back from the head");
    server.flush().await;
    assert_eq!(normalize(read_back(server, id).await), normalize(sent.clone()), "read back from a block");
}

#[test]
fn protobuf_fixture_is_the_json_fixtures_twin() {
    let from_json: ExportTraceServiceRequest = serde_json::from_slice(&fixture_json()).expect("json fixture");
    let from_pb = ExportTraceServiceRequest::decode(fixture_pb().as_slice()).expect("pb fixture");
    assert_eq!(from_json, from_pb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_fixture_over_http_reads_back() {
    let server = common::start(|_| {}).await;
    let resp = reqwest::Client::new()
        .post(server.otlp_url())
        .header("content-type", "application/json")
        .body(fixture_json())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.expect("json answer");
    assert!(body["partialSuccess"].is_null(), "{body}");
    let sent: ExportTraceServiceRequest = serde_json::from_slice(&fixture_json()).expect("fixture");
    assert_eq!(metric(&server, "strand_store_spans_written_total").await, 1);
    assert_eq!(metric(&server, "strand_head_spans").await, 1);
    assert_round_trip(&server, FIXTURE_TRACE, &sent).await;
    assert_eq!(metric(&server, "strand_head_spans").await, 0, "flushed into a block");
    assert_eq!(metric(&server, "strand_blocks").await, 1);
    assert_eq!(metric(&server, "strand_block_spans").await, 1);
    server.stop().await;
}

/// The value of an unlabelled metric from `/metrics`.
async fn metric(server: &common::TestServer, name: &str) -> u64 {
    let text = reqwest::get(server.query("/metrics")).await.expect("metrics").text().await.expect("text");
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("numeric value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_protobuf_fixture_over_http_reads_back() {
    let server = common::start(|_| {}).await;
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&fixture_pb()).expect("gzip");
    let resp = reqwest::Client::new()
        .post(server.otlp_url())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.expect("body");
    let answer = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(bytes)
        .expect("protobuf answer");
    assert!(answer.partial_success.is_none());
    let sent = ExportTraceServiceRequest::decode(fixture_pb().as_slice()).expect("fixture");
    assert_round_trip(&server, FIXTURE_TRACE, &sent).await;
    server.stop().await;
}

/// deflate (zlib) and zstd bodies, as the collector's HTTP receivers take them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_and_zstd_bodies_read_back() {
    let server = common::start(|_| {}).await;
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    zlib.write_all(&fixture_pb()).expect("deflate");
    let sent = ExportTraceServiceRequest::decode(fixture_pb().as_slice()).expect("fixture");
    for (encoding, body) in [
        ("deflate", zlib.finish().expect("deflate")),
        ("zstd", zstd::encode_all(fixture_pb().as_slice(), 3).expect("zstd")),
    ] {
        let resp = reqwest::Client::new()
            .post(server.otlp_url())
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", encoding)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 200, "{encoding}: {}", resp.text().await.unwrap_or_default());
        assert_round_trip(&server, FIXTURE_TRACE, &sent).await;
    }
    server.stop().await;
}

fn v(value: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: v(value), key_strindex: 0 }
}

/// A request using every field of the OTLP span model.
fn rich_request() -> ExportTraceServiceRequest {
    let all_values = vec![
        kv("string", Value::StringValue("text ✓".into())),
        kv("bool", Value::BoolValue(true)),
        kv("int", Value::IntValue(-9_007_199_254_740_993)),
        kv("double", Value::DoubleValue(2.5)),
        kv("whole_double", Value::DoubleValue(3.0)),
        kv("bytes", Value::BytesValue(vec![0, 1, 2, 254, 255])),
        kv(
            "array",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    v(Value::IntValue(1)).expect("v"),
                    v(Value::StringValue("two".into())).expect("v"),
                ],
            }),
        ),
        kv(
            "kvlist",
            Value::KvlistValue(KeyValueList { values: vec![kv("nested", Value::BoolValue(false))] }),
        ),
        KeyValue { key: "empty".into(), value: Some(AnyValue { value: None }), key_strindex: 0 },
    ];
    let root = Span {
        trace_id: vec![0xab; 16],
        span_id: vec![1; 8],
        trace_state: "congo=t61rcWkgMzE".into(),
        parent_span_id: vec![],
        flags: 0x301,
        name: "POST /reports".into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_250_000_000,
        attributes: all_values.clone(),
        dropped_attributes_count: 1,
        events: vec![span::Event {
            time_unix_nano: 1_700_000_000_100_000_000,
            name: "exception".into(),
            attributes: all_values.clone(),
            dropped_attributes_count: 2,
        }],
        dropped_events_count: 3,
        links: vec![span::Link {
            trace_id: vec![0xcd; 16],
            span_id: vec![9; 8],
            trace_state: "x=y".into(),
            attributes: all_values.clone(),
            dropped_attributes_count: 4,
            flags: 0x100,
        }],
        dropped_links_count: 5,
        status: Some(Status { message: "report rejected".into(), code: 2 }),
    };
    let child = Span {
        span_id: vec![2; 8],
        parent_span_id: vec![1; 8],
        kind: 3,
        name: "SELECT".into(),
        status: Some(Status { message: String::new(), code: 1 }),
        ..root.clone()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: [
                    vec![kv("service.name", Value::StringValue("epro-service".into()))],
                    all_values.clone(),
                ]
                .concat(),
                dropped_attributes_count: 6,
                entity_refs: vec![],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "strand.test".into(),
                    version: "0.1".into(),
                    attributes: all_values,
                    dropped_attributes_count: 7,
                }),
                spans: vec![root, child],
                schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_otlp_field_survives_grpc_with_gzip() {
    let server = common::start(|_| {}).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect")
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let sent = rich_request();
    let answer = client.export(sent.clone()).await.expect("export").into_inner();
    assert!(answer.partial_success.is_none());
    assert_round_trip(&server, &"ab".repeat(16), &sent).await;
    // And the protobuf fixture over gRPC.
    let fixture = ExportTraceServiceRequest::decode(fixture_pb().as_slice()).expect("fixture");
    client.export(fixture.clone()).await.expect("export fixture");
    assert_round_trip(&server, FIXTURE_TRACE, &fixture).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_cli_prints_the_tree() {
    let server = common::start(|_| {}).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc)).await.expect("connect");
    client.export(rich_request()).await.expect("export");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strand"))
        .args(["trace", &"AB".repeat(16), "--server", &format!("http://{}", server.http)])
        .output()
        .expect("run strand trace");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(
        text,
        format!(
            "trace {} (2 spans)\nepro-service POST /reports [server] 250.000ms ERROR: report rejected\n  epro-service SELECT [client] 250.000ms\n\n\
             chain: whole (not settled yet: spans may still arrive)\n",
            "ab".repeat(16)
        )
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strand"))
        .args(["trace", &"12".repeat(16), "--server", &format!("http://{}", server.http)])
        .output()
        .expect("run strand trace");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("404 Not Found: trace 12121212121212121212121212121212 not found")
    );
    server.stop().await;
}
