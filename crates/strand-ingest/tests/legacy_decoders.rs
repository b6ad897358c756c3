//! Jaeger thrift and Zipkin decoders against payloads captured from a real client (the
//! OpenTelemetry Python SDK 1.21 exporters, `tests/interop/legacy_export.py capture`), the
//! shared Zipkin fixtures, and batches built with the hand-written encoder (checked here to
//! reproduce the captured payloads byte for byte).

use strand_core::{AnyValue, KeyValue, SpanBatch, SpanKind, StatusCode, StoredSpan, find_attr};
use strand_ingest::jaeger::model::{
    self, Batch, CHILD_OF, FOLLOWS_FROM, Log, Process, SpanRef, Tag, tag_type,
};
use strand_ingest::jaeger::{decode_agent, decode_agent_binary, decode_http, encode};
use strand_ingest::zipkin::{self, Format};

const COLLECTOR: &[u8] = include_bytes!("../../../testdata/jaeger/python-otel-1.21-collector.thrift");
const AGENT: &[u8] = include_bytes!("../../../testdata/jaeger/python-otel-1.21-agent.thrift");
const ZIPKIN_JSON: &[u8] = include_bytes!("../../../testdata/zipkin/python-otel-1.21.json");
const ZIPKIN_PROTO: &[u8] = include_bytes!("../../../testdata/zipkin/python-otel-1.21.pb");

fn spans(batch: SpanBatch) -> Vec<StoredSpan> {
    batch.into_stored().collect()
}

fn by_name<'a>(spans: &'a [StoredSpan], name: &str) -> &'a StoredSpan {
    spans.iter().find(|s| s.span.name == name).unwrap_or_else(|| panic!("span {name} missing"))
}

fn attr<'a>(s: &'a StoredSpan, key: &str) -> Option<&'a AnyValue> {
    find_attr(&s.span.attributes, key)
}

/// What the Python exporter sent for the gateway (fixed ids, times and attributes), checked
/// the same way whichever transport carried it.
fn check_python_gateway(spans: &[StoredSpan], typed: bool) {
    assert_eq!(spans.len(), 3);
    let root = by_name(spans, "POST /reports");
    let client = by_name(spans, "GET user-service");
    let render = by_name(spans, "render");
    for s in spans {
        assert_eq!(s.resource.service_name(), "legacy-gateway");
        assert_eq!((s.scope.name.as_str(), s.scope.version.as_str()), ("legacy.legacy-gateway", "1.2.3"));
        assert_eq!(s.span.trace_id, root.span.trace_id);
        assert_eq!(s.span.flags & 1, 1, "sampled");
        for removed in ["span.kind", "otel.status_code", "otel.status_description", "otel.library.name"] {
            assert!(attr(s, removed).is_none(), "{removed} left on {}", s.span.name);
        }
    }
    assert_eq!(root.span.parent_span_id, None);
    assert_eq!(client.span.parent_span_id, Some(root.span.span_id));
    assert_eq!(render.span.parent_span_id, Some(root.span.span_id));
    assert_eq!(root.span.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(root.span.duration_nanos(), 50_000_000);
    assert_eq!((root.span.kind, client.span.kind), (SpanKind::Server, SpanKind::Client));
    let (status, ratio, retry) = if typed {
        (AnyValue::Int(201), AnyValue::Double(0.25), AnyValue::Bool(false))
    } else {
        (AnyValue::String("201".into()), AnyValue::String("0.25".into()), AnyValue::String("false".into()))
    };
    assert_eq!(attr(root, "http.response.status_code"), Some(&status));
    assert_eq!(attr(root, "ratio"), Some(&ratio));
    assert_eq!(attr(root, "retry"), Some(&retry));
    assert_eq!(attr(root, "http.request.method"), Some(&AnyValue::String("POST".into())));
    let event = &root.span.events[..];
    assert_eq!(event.len(), 1);
    assert_eq!((event[0].name.as_str(), event[0].time_unix_nano), ("accepted", 1_700_000_000_001_000_000));
    let mut event_attrs = event[0].attributes.clone();
    event_attrs.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        event_attrs,
        vec![KeyValue::new("ok", AnyValue::Bool(true)), KeyValue::new("size", AnyValue::Int(1024))]
    );
    assert_eq!(
        (client.span.status.code, client.span.status.message.as_str()),
        (StatusCode::Error, "upstream failed")
    );
    // Jaeger's `error` tag becomes the status; Zipkin's stays an attribute too, as the
    // collector's Zipkin receiver keeps it.
    let error_tag = if typed { None } else { Some(AnyValue::String("upstream failed".into())) };
    assert_eq!(attr(client, "error").cloned(), error_tag);
    assert_eq!(render.span.status.code, StatusCode::Ok);
}

#[test]
fn python_jaeger_collector_payload_decodes() {
    let (batch, rejections) = decode_http(COLLECTOR).expect("decodes");
    assert_eq!(rejections.count, 0);
    let spans = spans(batch);
    check_python_gateway(&spans, true);
    let render = by_name(&spans, "render");
    assert_eq!(render.span.kind, SpanKind::Internal);
    // The exporter puts resource attributes on each span; the collector mapping keeps them.
    assert_eq!(attr(render, "telemetry.sdk.language"), Some(&AnyValue::String("python".into())));
    let client = by_name(&spans, "GET user-service");
    assert_eq!(client.span.links.len(), 1, "FOLLOWS_FROM reference becomes a link");
    assert_eq!(client.span.links[0].span_id.to_hex(), "0000000000abcdef");
    assert_eq!(
        client.span.links[0].attributes,
        vec![KeyValue::new("opentracing.ref_type", AnyValue::String("follows_from".into()))]
    );
}

#[test]
fn python_jaeger_agent_datagram_decodes() {
    let (batch, rejections) = decode_agent(AGENT).expect("decodes");
    assert_eq!(rejections.count, 0);
    check_python_gateway(&spans(batch), true);
}

#[test]
fn encoder_reproduces_the_captured_payloads() {
    let batch = model::decode_binary_batch(COLLECTOR).expect("binary");
    assert_eq!(encode::binary_batch(&batch), COLLECTOR);
    let batch = model::decode_compact_emit_batch(AGENT).expect("compact");
    let seq_id = {
        let mut p = strand_ingest::jaeger::thrift::Compact::new(AGENT);
        p.message_header().expect("header").seq_id
    };
    assert_eq!(encode::compact_emit_batch(&batch, seq_id), AGENT);
}

#[test]
fn binary_agent_datagrams_decode_and_bad_ones_are_clear_errors() {
    let batch = model::decode_compact_emit_batch(AGENT).expect("compact");
    let datagram = encode::binary_emit_batch(&batch, 3);
    let (decoded, rejections) = decode_agent_binary(&datagram).expect("decodes");
    assert_eq!(rejections.count, 0);
    check_python_gateway(&spans(decoded), true);
    for (bytes, says) in [
        (AGENT.to_vec(), "not a binary-protocol message (version word 0x8281"),
        (datagram[..datagram.len() - 1].to_vec(), "truncated"),
        ([datagram.as_slice(), b"xx"].concat(), "2 unexpected bytes after the emitBatch message"),
    ] {
        let err = decode_agent_binary(&bytes).expect_err("refused").to_string();
        assert!(err.starts_with("invalid binary-thrift emitBatch: "), "{err}");
        assert!(err.contains(says), "{err} lacks {says}");
    }
    let renamed = {
        let mut d = datagram.clone();
        let at = d.windows(9).position(|w| w == b"emitBatch").expect("name");
        d[at..at + 9].copy_from_slice(b"emitZipkn");
        d
    };
    assert!(decode_agent_binary(&renamed).expect_err("other method").to_string().contains("`emitZipkn`"));
}

#[test]
fn python_zipkin_json_and_proto_decode_alike() {
    for (format, body) in [(Format::Json, ZIPKIN_JSON), (Format::Proto, ZIPKIN_PROTO)] {
        let (batch, rejections) = zipkin::decode(format, body).expect("decodes");
        assert_eq!(rejections.count, 0, "{format:?}");
        let spans = spans(batch);
        check_python_gateway(&spans, false);
        let root = by_name(&spans, "POST /reports");
        // Resource attributes the exporter flattened into tags go back to the resource.
        let resource = &root.resource.attributes;
        assert_eq!(find_attr(resource, "deployment.environment"), Some(&AnyValue::String("interop".into())));
        assert_eq!(find_attr(resource, "telemetry.sdk.language"), Some(&AnyValue::String("python".into())));
        assert!(attr(root, "service.name").is_none() && attr(root, "telemetry.sdk.name").is_none());
        assert_eq!(by_name(&spans, "render").span.kind, SpanKind::Unspecified, "Zipkin has no internal kind");
    }
}

fn tag(key: &str, v_type: i32) -> Tag {
    Tag { key: key.into(), v_type, ..Tag::default() }
}

/// A batch with every tag type, both reference types, logs, a 64-bit trace id and a parent
/// given only as a `CHILD_OF` reference.
fn rich_batch() -> Batch {
    let span = |id: i64, parent: i64| model::Span {
        trace_id_low: 0x1122_3344_5566_7788,
        trace_id_high: 0,
        span_id: id,
        parent_span_id: parent,
        operation_name: format!("op-{id}"),
        flags: 1,
        start_time: Some(1_600_000_000_000_000 + id),
        duration: 1500,
        ..model::Span::default()
    };
    let mut root = span(1, 0);
    root.tags = vec![
        Tag { v_str: Some("server".into()), ..tag("span.kind", tag_type::STRING) },
        Tag { v_double: Some(-1.5), ..tag("d", tag_type::DOUBLE) },
        Tag { v_bool: Some(true), ..tag("b", tag_type::BOOL) },
        Tag { v_long: Some(i64::MIN), ..tag("l", tag_type::LONG) },
        Tag { v_binary: Some(vec![0, 159, 255]), ..tag("bin", tag_type::BINARY) },
        Tag { v_long: Some(503), ..tag("http.status_code", tag_type::LONG) },
        Tag { v_str: Some("k=v".into()), ..tag("w3c.tracestate", tag_type::STRING) },
    ];
    root.logs = vec![Log {
        timestamp: 1_600_000_000_000_500,
        fields: vec![
            Tag { v_str: Some("cache miss".into()), ..tag("event", tag_type::STRING) },
            Tag { v_long: Some(3), ..tag("attempt", tag_type::LONG) },
        ],
    }];
    let mut child = span(2, 0);
    child.references = vec![
        SpanRef { ref_type: CHILD_OF, trace_id_low: 0x1122_3344_5566_7788, trace_id_high: 0, span_id: 1 },
        SpanRef { ref_type: FOLLOWS_FROM, trace_id_low: 9, trace_id_high: 8, span_id: 7 },
        SpanRef { ref_type: CHILD_OF, trace_id_low: 5, trace_id_high: 0, span_id: 6 },
    ];
    child.tags = vec![Tag { v_bool: Some(true), ..tag("error", tag_type::BOOL) }];
    Batch {
        process: Process {
            service_name: "rich".into(),
            tags: vec![
                Tag { v_str: Some("box-1".into()), ..tag("hostname", tag_type::STRING) },
                Tag { v_long: Some(42), ..tag("pid", tag_type::LONG) },
            ],
            ..Process::default()
        },
        spans: vec![root, child],
    }
}

fn check_rich(batch: SpanBatch) {
    let spans = spans(batch);
    let root = by_name(&spans, "op-1");
    let child = by_name(&spans, "op-2");
    assert_eq!(root.span.trace_id.to_hex(), "00000000000000001122334455667788");
    assert_eq!(root.resource.service_name(), "rich");
    assert_eq!(find_attr(&root.resource.attributes, "host.name"), Some(&AnyValue::String("box-1".into())));
    assert_eq!(find_attr(&root.resource.attributes, "pid"), Some(&AnyValue::Int(42)));
    assert_eq!(root.span.kind, SpanKind::Server);
    assert_eq!(attr(root, "d"), Some(&AnyValue::Double(-1.5)));
    assert_eq!(attr(root, "b"), Some(&AnyValue::Bool(true)));
    assert_eq!(attr(root, "l"), Some(&AnyValue::Int(i64::MIN)));
    assert_eq!(attr(root, "bin"), Some(&AnyValue::Bytes(vec![0, 159, 255])));
    assert_eq!(root.span.trace_state, "k=v");
    assert_eq!(root.span.status.code, StatusCode::Error, "5xx on a server is an error");
    assert_eq!(root.span.start_time_unix_nano, 1_600_000_000_000_001_000);
    assert_eq!(root.span.end_time_unix_nano, 1_600_000_000_001_501_000);
    assert_eq!(root.span.events[0].name, "cache miss");
    assert_eq!(root.span.events[0].time_unix_nano, 1_600_000_000_000_500_000);
    assert_eq!(root.span.events[0].attributes, vec![KeyValue::new("attempt", AnyValue::Int(3))]);
    assert_eq!(child.span.parent_span_id, Some(root.span.span_id), "CHILD_OF reference is the parent");
    assert_eq!(child.span.status.code, StatusCode::Error);
    let links: Vec<(String, String, &AnyValue)> = child
        .span
        .links
        .iter()
        .map(|l| (l.trace_id.to_hex(), l.span_id.to_hex(), &l.attributes[0].value))
        .collect();
    assert_eq!(
        links,
        vec![
            (
                "00000000000000080000000000000009".into(),
                "0000000000000007".into(),
                &AnyValue::String("follows_from".into())
            ),
            (
                "00000000000000000000000000000005".into(),
                "0000000000000006".into(),
                &AnyValue::String("child_of".into())
            ),
        ]
    );
}

#[test]
fn every_tag_type_reference_and_log_survives_both_protocols() {
    let batch = rich_batch();
    let (http, rejected) = decode_http(&encode::binary_batch(&batch)).expect("binary");
    assert_eq!(rejected.count, 0);
    check_rich(http);
    let (udp, rejected) = decode_agent(&encode::compact_emit_batch(&batch, 7)).expect("compact");
    assert_eq!(rejected.count, 0);
    check_rich(udp);
}

#[test]
fn invalid_spans_are_rejected_one_by_one() {
    let mut batch = rich_batch();
    batch.spans[0].span_id = 0;
    batch.spans[1].start_time = None;
    let mut good = batch.spans[1].clone();
    good.span_id = 3;
    good.start_time = Some(1);
    batch.spans.push(good);
    let (out, rejections) = decode_http(&encode::binary_batch(&batch)).expect("decodes");
    assert_eq!(out.span_count(), 1);
    assert_eq!(rejections.count, 2);
    assert!(
        rejections.message().contains("span 0: span_id must not be all zeroes"),
        "{}",
        rejections.message()
    );
    assert!(rejections.message().contains("span 1: startTime is missing"), "{}", rejections.message());
}

#[test]
fn truncated_and_malformed_thrift_are_clear_errors() {
    let body = encode::binary_batch(&rich_batch());
    for cut in [1, body.len() / 3, body.len() - 1] {
        let err = decode_http(&body[..cut]).expect_err("truncated").to_string();
        assert!(err.starts_with("invalid thrift Batch: truncated"), "{cut}: {err}");
    }
    let mut wrong_type = body.clone();
    wrong_type[0] = 99;
    let err = decode_http(&wrong_type).expect_err("bad type").to_string();
    assert_eq!(err, "invalid thrift Batch: unknown binary-protocol type 99 at byte 1");
    let mut trailing = body.clone();
    trailing.extend_from_slice(b"xx");
    assert!(
        decode_http(&trailing)
            .expect_err("trailing")
            .to_string()
            .contains("2 unexpected bytes after the Batch")
    );
    let err = decode_agent(b"\x80\x01\x00\x01").expect_err("binary header on UDP").to_string();
    assert!(err.contains("not a compact-protocol message"), "{err}");
    let mut renamed = encode::compact_emit_batch(&rich_batch(), 1);
    let at = renamed.windows(9).position(|w| w == b"emitBatch").expect("method name");
    renamed[at..at + 9].copy_from_slice(b"emitZipkn");
    let err = decode_agent(&renamed).expect_err("other method").to_string();
    assert!(err.contains("unsupported agent method `emitZipkn`"), "{err}");
}

/// `from` replaced by `to` (same length) once in `bytes`.
fn patched(mut bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).expect("present");
    bytes[at..at + to.len()].copy_from_slice(to);
    bytes
}

#[test]
fn invalid_utf8_rejects_its_span_or_its_process_spans() {
    let http = encode::binary_batch(&rich_batch());
    let agent = encode::compact_emit_batch(&rich_batch(), 1);
    for (name, body, agent_body) in [("http", http, false), ("agent", agent, true)] {
        let decode = |b: &[u8]| if agent_body { decode_agent(b) } else { decode_http(b) };
        // A span's name: that span is rejected, the other stored.
        let (batch, rejections) = decode(&patched(body.clone(), b"op-2", b"op\xff2")).expect("decodes");
        assert_eq!(
            spans(batch).iter().map(|s| s.span.name.clone()).collect::<Vec<_>>(),
            vec!["op-1"],
            "{name}"
        );
        assert_eq!(rejections.message(), "span 1: operationName is not valid UTF-8", "{name}");
        // A tag value of the other span.
        let (batch, rejections) =
            decode(&patched(body.clone(), b"cache miss", b"cache\xc3 iss")).expect("decodes");
        assert_eq!(spans(batch).len(), 1, "{name}");
        assert_eq!(rejections.message(), "span 0: log field `event` is not valid UTF-8", "{name}");
        // A process tag: every span of the batch.
        let (batch, rejections) = decode(&patched(body, b"box-1", b"box\xfe1")).expect("decodes");
        assert_eq!(batch.span_count(), 0, "{name}");
        assert_eq!(rejections.count, 2, "{name}");
        assert!(
            rejections
                .message()
                .starts_with("span 0: the process's process tag `hostname` is not valid UTF-8"),
            "{name}: {}",
            rejections.message()
        );
    }
}

#[test]
fn service_name_comes_from_the_process_else_from_its_tag() {
    let mut batch = rich_batch();
    batch.process.service_name = String::new();
    batch.process.tags.push(Tag { v_str: Some("from-tag".into()), ..tag("service.name", tag_type::STRING) });
    let (out, _) = decode_http(&encode::binary_batch(&batch)).expect("decodes");
    assert_eq!(spans(out)[0].resource.service_name(), "from-tag");
    batch.process.service_name = "from-process".into();
    let (out, _) = decode_http(&encode::binary_batch(&batch)).expect("decodes");
    let resource = &spans(out)[0].resource;
    assert_eq!(resource.service_name(), "from-process");
    assert_eq!(resource.attributes.iter().filter(|kv| kv.key == "service.name").count(), 1);
}

#[test]
fn zipkin_times_out_of_range_are_rejected_not_wrapped() {
    let body = br#"[{"traceId":"1","id":"1","timestamp":18446744073709551615,"duration":1},
                    {"traceId":"1","id":"2","timestamp":1700000000000000,"duration":18446744073709551615},
                    {"traceId":"1","id":"3","timestamp":1700000000000000,"duration":1}]"#;
    let (batch, rejections) = zipkin::decode(Format::Json, body).expect("array");
    assert_eq!(batch.span_count(), 1);
    let message = rejections.message();
    assert!(message.contains("span 0: timestamp 18446744073709551615 is out of range"), "{message}");
    assert!(message.contains("span 1: duration 18446744073709551615 is out of range"), "{message}");
}
