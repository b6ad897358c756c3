//! The buffer's compact span encoding: every field survives the buffer and the pending
//! log, shared strings shrink buffered spans, the dictionary stays bounded, and corrupt
//! bytes are errors.

use std::sync::Arc;

use strand_core::{
    AnyValue, Event, KeyValue, Link, Resource, ResourceSpans, Scope, ScopeSpans, Span, SpanBatch, SpanId,
    SpanKind, Status, StatusCode, TraceId,
};
use strand_sampling::buffer::{POLICY_ATTRIBUTE, RATE_ATTRIBUTE};
use strand_sampling::codec::{MAX_ENTRIES, MAX_STRING};
use strand_sampling::{LogRecord, Prepared, SamplingConfig, TraceBuffer};

const T0: u64 = 1_700_000_000_000_000_000;

fn keep_all() -> SamplingConfig {
    serde_saphyr::from_str("policies:\n  - { name: all, type: always_sample }\n").expect("valid")
}

fn s(v: &str) -> AnyValue {
    AnyValue::String(v.into())
}

/// A span using every field, with values at their edges.
fn rich(trace: u8, id: u8, parent: Option<u8>) -> Span {
    let start = T0 + u64::from(id) * 1000;
    Span {
        parent_span_id: parent.map(|p| SpanId([p; 8])),
        trace_state: "vendor=a,other=b".into(),
        flags: 0x301,
        kind: SpanKind::Consumer,
        attributes: vec![
            KeyValue::new("http.request.method", s("POST")),
            KeyValue::new("empty", AnyValue::Empty),
            KeyValue::new("flag", AnyValue::Bool(true)),
            KeyValue::new("min", AnyValue::Int(i64::MIN)),
            KeyValue::new("max", AnyValue::Int(i64::MAX)),
            KeyValue::new("neg", AnyValue::Int(-1)),
            KeyValue::new("nan-free double", AnyValue::Double(-0.125)),
            KeyValue::new("bytes", AnyValue::Bytes(vec![0, 255, 7])),
            KeyValue::new(
                "nested",
                AnyValue::Array(vec![
                    s("a"),
                    AnyValue::KvList(vec![KeyValue::new("inner", AnyValue::Array(vec![AnyValue::Int(2)]))]),
                ]),
            ),
            KeyValue::new("ünïcødé ключ", s("värde")),
            KeyValue::new("", s("empty key")),
            KeyValue::new("k".repeat(MAX_STRING + 1), s("a key too long to share")),
        ],
        dropped_attributes_count: 3,
        events: vec![
            Event {
                time_unix_nano: start + 10,
                name: "exception".into(),
                attributes: vec![KeyValue::new("exception.type", s("Timeout"))],
                dropped_attributes_count: 1,
            },
            // An event before its span started (clock skew) survives exactly.
            Event {
                time_unix_nano: start - 5,
                name: String::new(),
                attributes: vec![],
                dropped_attributes_count: 0,
            },
        ],
        dropped_events_count: 4,
        links: vec![Link {
            trace_id: TraceId([9; 16]),
            span_id: SpanId([8; 8]),
            trace_state: "x=y".into(),
            attributes: vec![KeyValue::new("messaging.system", s("nats"))],
            dropped_attributes_count: 2,
            flags: 1,
        }],
        dropped_links_count: 5,
        status: Status { code: StatusCode::Error, message: "deadline exceeded".into() },
        // Ends before it starts: kept as sent.
        ..Span::new(TraceId([trace; 16]), SpanId([id; 8]), "POST /reports", start, start - 7)
    }
}

fn batch(spans: Vec<Span>) -> SpanBatch {
    let resource =
        Resource { attributes: vec![KeyValue::new("service.name", s("gateway"))], ..Resource::default() };
    SpanBatch {
        resource_spans: vec![ResourceSpans {
            resource: Arc::new(resource),
            scope_spans: vec![ScopeSpans { scope: Arc::new(Scope::default()), spans }],
        }],
    }
}

fn spans_of(b: &SpanBatch) -> Vec<Span> {
    b.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| ss.spans.clone()).collect()
}

#[test]
fn every_field_survives_the_log_cold_and_warm() {
    let buf = TraceBuffer::new(&keep_all()).expect("valid");
    let original = batch(vec![rich(1, 1, None), rich(1, 2, Some(1)), rich(2, 1, None)]);
    // Cold: nothing shared yet, strings inline. Warm: keys and names come from the
    // dictionary, and the record carries its own copy of them.
    for round in ["cold", "warm"] {
        let record = Prepared::new(&original, &buf.preparer()).to_record(T0);
        match LogRecord::decode(&record).expect("valid record") {
            LogRecord::Spans { batch, .. } => assert_eq!(batch, original, "{round}"),
            other => panic!("{round}: expected spans, got {other:?}"),
        }
        for cut in 0..record.len() {
            assert!(LogRecord::decode(&record[..cut]).is_err(), "{round}: cut at {cut}");
        }
        for i in 0..record.len() {
            let mut r = record.clone();
            r[i] ^= 0xa5;
            let _ = LogRecord::decode(&r);
        }
    }
    assert!(!buf.preparer().dictionary().is_empty());
}

#[test]
fn every_field_survives_the_buffer_and_shared_strings_shrink_it() {
    let mut buf = TraceBuffer::new(&keep_all()).expect("valid");
    let preparer = buf.preparer();
    let trace = |t: u8| batch(vec![rich(t, 1, None), rich(t, 2, Some(1)), rich(t, 3, Some(1))]);
    let cold = Prepared::new(&trace(1), &preparer);
    let before = buf.bytes();
    buf.insert(&cold, T0, 1);
    let cold_cost = buf.bytes() - before;
    let warm = Prepared::new(&trace(2), &preparer);
    let before = buf.bytes();
    buf.insert(&warm, T0, 1);
    let warm_cost = buf.bytes() - before;
    // Eleven shared keys and two names per span no longer repeat.
    assert!(warm_cost + 3 * 100 < cold_cost, "warm {warm_cost} B, cold {cold_cost} B");

    let decided = buf.decide_all(T0 + 60_000_000_000);
    assert_eq!(decided.len(), 2);
    for d in decided {
        assert!(d.keep);
        let mut got: Vec<Span> = d.spans.iter().map(|s| s.span.clone()).collect();
        for s in &mut got {
            s.attributes.retain(|kv| kv.key != POLICY_ATTRIBUTE && kv.key != RATE_ATTRIBUTE);
        }
        got.sort_by_key(|s| s.span_id);
        let t = d.trace_id.0[0];
        assert_eq!(got, spans_of(&trace(t)), "trace {t}");
        assert!(d.spans.iter().all(|s| s.resource.service_name() == "gateway"));
    }
}

#[test]
fn the_dictionary_is_bounded_and_overflowing_strings_stay_inline() {
    let mut buf = TraceBuffer::new(&keep_all()).expect("valid");
    let preparer = buf.preparer();
    // Hostile cardinality: every span brings 1000 new keys, 80 batches.
    for b in 0..80u32 {
        let mut span = rich(b as u8, 1, None);
        span.trace_id = TraceId(u128::from(b + 1).to_be_bytes());
        span.attributes =
            (0..1000).map(|i| KeyValue::new(format!("key-{b}-{i}"), AnyValue::Int(i))).collect();
        buf.insert(&Prepared::new(&batch(vec![span]), &preparer), T0, 1);
    }
    let dict = preparer.dictionary();
    assert_eq!(dict.len(), MAX_ENTRIES, "full, and no further");
    assert!(dict.bytes() < MAX_ENTRIES * (MAX_STRING + 100));
    // Keys seen after the dictionary filled still round-trip, inline.
    let mut span = rich(0, 1, None);
    span.trace_id = TraceId([0xee; 16]);
    span.attributes = vec![KeyValue::new("late-key", s("v"))];
    buf.insert(&Prepared::new(&batch(vec![span.clone()]), &preparer), T0, 1);
    let decided = buf.decide_all(T0 + 60_000_000_000);
    let late = decided.iter().find(|d| d.trace_id == span.trace_id).expect("decided");
    assert!(late.spans[0].span.attributes.iter().any(|kv| kv.key == "late-key" && kv.value == s("v")));
    let first = decided.iter().find(|d| d.trace_id == TraceId(1u128.to_be_bytes())).expect("decided");
    assert_eq!(first.spans[0].span.attributes.iter().filter(|kv| kv.key.starts_with("key-0-")).count(), 1000);
}

#[test]
fn records_written_before_the_compact_encoding_still_replay() {
    // Tag 1: groups, then each span's group and its postcard-encoded `Span`.
    let original = batch(vec![rich(1, 1, None), rich(1, 2, Some(1))]);
    let rs = &original.resource_spans[0];
    let groups = vec![(&*rs.resource, &*rs.scope_spans[0].scope)];
    let mut record = vec![1u8];
    record.extend_from_slice(&(T0 + 9).to_le_bytes());
    record = postcard::to_extend(&groups, record).expect("encodes");
    record.push(2);
    for span in &rs.scope_spans[0].spans {
        let bytes = postcard::to_allocvec(span).expect("encodes");
        record.push(0);
        record.extend_from_slice(&postcard::to_allocvec(&(bytes.len() as u64)).expect("varint"));
        record.extend_from_slice(&bytes);
    }
    match LogRecord::decode(&record).expect("valid old record") {
        LogRecord::Spans { received_unix_nano, batch } => {
            assert_eq!(received_unix_nano, T0 + 9);
            assert_eq!(batch, original);
        }
        other => panic!("expected spans, got {other:?}"),
    }
}
