//! Deterministic fixture spans for tests and the conformance suite.

use std::sync::Arc;

use strand_core::{
    AnyValue, Event, KeyValue, Link, Resource, ResourceSpans, Scope, ScopeSpans, Span, SpanBatch, SpanId,
    SpanKind, Status, StatusCode, TraceId,
};

/// The resource of fixture trace `seed`: service `svc-<seed % 3>`.
fn fixture_resource(seed: u8) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![
            KeyValue::new("service.name", AnyValue::String(format!("svc-{}", seed % 3))),
            KeyValue::new("host.cores", AnyValue::Int(2)),
        ],
        dropped_attributes_count: 1,
        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
    })
}

/// A fixture scope using every scope field.
fn fixture_scope(name: &str) -> Arc<Scope> {
    Arc::new(Scope {
        name: name.into(),
        version: "1.2.3".into(),
        attributes: vec![KeyValue::new("scope.attr", AnyValue::Bool(true))],
        dropped_attributes_count: 2,
        schema_url: "scope-schema".into(),
    })
}

/// The trace id of fixture trace `seed`.
pub fn trace_id(seed: u8) -> TraceId {
    let mut b = [0u8; 16];
    b[0] = seed;
    b[15] = 0xa5;
    TraceId(b)
}

/// A trace of `spans` spans (a root and children) numbered by `seed`, using every field of
/// the span model: all attribute value types, events, links, status, trace state, flags and
/// dropped counts.
pub fn batch(seed: u8, spans: u8) -> SpanBatch {
    let tid = trace_id(seed);
    let (resource, scope) = (fixture_resource(seed), fixture_scope("strand.test"));
    let base = 1_700_000_000_000_000_000u64 + u64::from(seed) * 1_000_000_000;
    let spans = (0..spans)
        .map(|i| {
            let span_id = SpanId([seed, i, 1, 1, 1, 1, 1, 1]);
            let parent = (i > 0).then_some(SpanId([seed, 0, 1, 1, 1, 1, 1, 1]));
            Span {
                trace_id: tid,
                span_id,
                parent_span_id: parent,
                trace_state: if i == 0 { "vendor=x".into() } else { String::new() },
                flags: 0x101,
                name: format!("op-{i}"),
                kind: if i == 0 { SpanKind::Server } else { SpanKind::Client },
                start_time_unix_nano: base + u64::from(i) * 1000,
                end_time_unix_nano: base + u64::from(i) * 1000 + 500,
                attributes: vec![
                    KeyValue::new("str", AnyValue::String("v\"\u{e9}".into())),
                    KeyValue::new("int", AnyValue::Int(-(i64::from(i)) * 1_000_000_000_000)),
                    KeyValue::new("dbl", AnyValue::Double(1.0)),
                    KeyValue::new("inf", AnyValue::Double(f64::INFINITY)),
                    KeyValue::new("bool", AnyValue::Bool(false)),
                    KeyValue::new("bytes", AnyValue::Bytes(vec![0, 1, 255])),
                    KeyValue::new(
                        "arr",
                        AnyValue::Array(vec![AnyValue::Int(1), AnyValue::String("x".into())]),
                    ),
                    KeyValue::new("kv", AnyValue::KvList(vec![KeyValue::new("inner", AnyValue::Empty)])),
                ],
                dropped_attributes_count: 3,
                events: if i % 2 == 0 {
                    vec![Event {
                        time_unix_nano: base + 10,
                        name: "exception".into(),
                        attributes: vec![KeyValue::new("exception.message", AnyValue::String("boom".into()))],
                        dropped_attributes_count: 4,
                    }]
                } else {
                    Vec::new()
                },
                dropped_events_count: 5,
                links: if i == 1 {
                    vec![Link {
                        trace_id: trace_id(seed.wrapping_add(100)),
                        span_id: SpanId([9; 8]),
                        trace_state: "l=1".into(),
                        attributes: vec![KeyValue::new("link.attr", AnyValue::Int(7))],
                        dropped_attributes_count: 6,
                        flags: 1,
                    }]
                } else {
                    Vec::new()
                },
                dropped_links_count: 7,
                status: if i == 1 && seed.is_multiple_of(2) {
                    Status { code: StatusCode::Error, message: "failed".into() }
                } else {
                    Status::default()
                },
            }
        })
        .collect();
    SpanBatch {
        resource_spans: vec![ResourceSpans { resource, scope_spans: vec![ScopeSpans { scope, spans }] }],
    }
}

/// [`batch`] whose second span ends 5 µs before it starts (a client's clock stepped back):
/// a block holding it is format version 3.
pub fn skewed_batch(seed: u8, spans: u8) -> SpanBatch {
    let mut b = batch(seed, spans);
    if let Some(s) = b.resource_spans[0].scope_spans[0].spans.get_mut(1) {
        s.end_time_unix_nano = s.start_time_unix_nano - 5_000;
    }
    b
}

/// A plain span for search tests: `id` and `parent` are small numbers, times in ns.
pub fn span(trace: TraceId, id: u64, parent: Option<u64>, name: &str, start: u64, duration: u64) -> Span {
    let sid = |n: u64| SpanId((n + 1).to_be_bytes());
    Span {
        parent_span_id: parent.map(sid),
        kind: SpanKind::Server,
        ..Span::new(trace, sid(id), name, start, start + duration)
    }
}

/// A batch of spans from one service, with optional resource and scope attributes.
pub fn service_batch(
    service: &str,
    resource_attrs: Vec<KeyValue>,
    scope: Scope,
    spans: Vec<Span>,
) -> SpanBatch {
    let mut attributes = vec![KeyValue::new("service.name", AnyValue::String(service.into()))];
    attributes.extend(resource_attrs);
    SpanBatch {
        resource_spans: vec![ResourceSpans {
            resource: Arc::new(Resource {
                attributes,
                dropped_attributes_count: 0,
                schema_url: String::new(),
            }),
            scope_spans: vec![ScopeSpans { scope: Arc::new(scope), spans }],
        }],
    }
}

/// Log records of fixture trace `seed`: `per_span` records under each of its first three
/// spans (span ids as [`batch`] makes them), using every field of the log model — text and
/// structured bodies, every severity range, attributes, flags, event names — plus one
/// record without trace context. Times follow the trace's spans.
pub fn log_batch(seed: u8, per_span: u8) -> strand_core::LogBatch {
    use strand_core::{LogBatch, LogRecord, ResourceLogs, ScopeLogs};
    let (resource, scope) = (fixture_resource(seed), fixture_scope("strand.test.logs"));
    let base = 1_700_000_000_000_000_000u64 + u64::from(seed) * 1_000_000_000;
    let mut records = Vec::new();
    for span in 0..3u8 {
        for i in 0..per_span {
            let n = span * per_span + i;
            let severity = 1 + (n.wrapping_mul(5).wrapping_add(seed)) % 24;
            records.push(LogRecord {
                time_unix_nano: base + u64::from(span) * 1000 + u64::from(i) * 10,
                observed_time_unix_nano: base + u64::from(span) * 1000 + u64::from(i) * 10 + 3,
                severity_number: severity,
                severity_text: strand_core::logs::severity_name(severity).into(),
                body: if n % 4 == 3 {
                    AnyValue::KvList(vec![
                        KeyValue::new("event", AnyValue::String("structured".into())),
                        KeyValue::new("n", AnyValue::Int(i64::from(n))),
                    ])
                } else {
                    AnyValue::String(format!("Order {seed}-{n} handled in {} ms \"quoted\" \u{e9}", 10 + n))
                },
                attributes: vec![
                    KeyValue::new("order.id", AnyValue::Int(i64::from(seed) * 100 + i64::from(n))),
                    KeyValue::new("ratio", AnyValue::Double(0.5)),
                ],
                dropped_attributes_count: u32::from(n % 2),
                flags: 1,
                trace_id: Some(trace_id(seed)),
                span_id: Some(SpanId([seed, span, 1, 1, 1, 1, 1, 1])),
                event_name: if n == 0 { "app.start".into() } else { String::new() },
            });
        }
    }
    records.push(LogRecord {
        time_unix_nano: 0,
        observed_time_unix_nano: base + 5,
        severity_number: 0,
        body: AnyValue::String(format!("background sweep {seed} without context")),
        ..LogRecord::default()
    });
    LogBatch {
        resource_logs: vec![ResourceLogs { resource, scope_logs: vec![ScopeLogs { scope, records }] }],
    }
}

/// Bytes of every file under `dir`, for tests and benchmarks of disk use; what is deleted
/// during the walk (retention at work) counts as gone.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The rows of a Parquet file, as one batch.
pub fn read_parquet(file: &[u8]) -> arrow_array::RecordBatch {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(file))
        .and_then(|b| b.with_batch_size(usize::MAX).build())
        .expect("a parquet file");
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("decodes");
    arrow_select::concat::concat_batches(&batches[0].schema(), &batches).expect("one schema")
}
