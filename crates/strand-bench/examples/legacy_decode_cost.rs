//! Decode + convert cost per span of each receiver's wire format, on the bench traffic
//! profile: the same spans as OTLP protobuf, Jaeger thrift (binary and compact) and Zipkin
//! (JSON and proto3). `cargo run --release -p strand-bench --example legacy_decode_cost`
use std::time::Instant;

use prost::Message;
use strand_core::{AnyValue, SpanBatch, SpanKind, StatusCode};
use strand_ingest::jaeger::model::{self as jm, tag_type};
use strand_ingest::zipkin::model::proto as zp;

fn tag(key: &str, v: &AnyValue) -> jm::Tag {
    let mut t = jm::Tag { key: key.to_owned(), ..jm::Tag::default() };
    match v {
        AnyValue::Bool(b) => (t.v_type, t.v_bool) = (tag_type::BOOL, Some(*b)),
        AnyValue::Int(i) => (t.v_type, t.v_long) = (tag_type::LONG, Some(*i)),
        AnyValue::Double(d) => (t.v_type, t.v_double) = (tag_type::DOUBLE, Some(*d)),
        other => (t.v_type, t.v_str) = (tag_type::STRING, strand_core::search::value_text(other)),
    }
    t
}

fn id64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b.try_into().expect("8 bytes"))
}

fn jaeger_batches(batch: &SpanBatch) -> Vec<jm::Batch> {
    batch
        .resource_spans
        .iter()
        .map(|rs| jm::Batch {
            process: jm::Process {
                service_name: rs.resource.service_name().to_owned(),
                ..jm::Process::default()
            },
            spans: rs
                .scope_spans
                .iter()
                .flat_map(|ss| &ss.spans)
                .map(|s| {
                    let mut tags: Vec<jm::Tag> =
                        s.attributes.iter().map(|kv| tag(&kv.key, &kv.value)).collect();
                    tags.push(tag("span.kind", &AnyValue::String(s.kind.as_str().into())));
                    if s.status.code == StatusCode::Error {
                        tags.push(tag("error", &AnyValue::Bool(true)));
                    }
                    jm::Span {
                        trace_id_high: id64(&s.trace_id.0[..8]),
                        trace_id_low: id64(&s.trace_id.0[8..]),
                        span_id: id64(&s.span_id.0),
                        parent_span_id: s.parent_span_id.map_or(0, |p| id64(&p.0)),
                        operation_name: s.name.clone(),
                        flags: 1,
                        start_time: Some((s.start_time_unix_nano / 1000) as i64),
                        duration: (s.duration_nanos() / 1000) as i64,
                        tags,
                        ..jm::Span::default()
                    }
                })
                .collect(),
        })
        .collect()
}

fn zipkin_spans(batch: &SpanBatch) -> Vec<zp::Span> {
    batch
        .clone()
        .into_stored()
        .map(|st| {
            let s = &st.span;
            zp::Span {
                trace_id: s.trace_id.0.to_vec(),
                parent_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
                id: s.span_id.0.to_vec(),
                kind: match s.kind {
                    SpanKind::Client => 1,
                    SpanKind::Server => 2,
                    SpanKind::Producer => 3,
                    SpanKind::Consumer => 4,
                    _ => 0,
                },
                name: s.name.clone(),
                timestamp: s.start_time_unix_nano / 1000,
                duration: s.duration_nanos() / 1000,
                local_endpoint: Some(zp::Endpoint {
                    service_name: st.resource.service_name().to_owned(),
                    ..zp::Endpoint::default()
                }),
                tags: s
                    .attributes
                    .iter()
                    .filter_map(|kv| Some((kv.key.clone(), strand_core::search::value_text(&kv.value)?)))
                    .collect(),
                ..zp::Span::default()
            }
        })
        .collect()
}

fn zipkin_json(spans: &[zp::Span]) -> Vec<u8> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let kinds = ["", "CLIENT", "SERVER", "PRODUCER", "CONSUMER"];
    let arr: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let mut v = serde_json::json!({
                "traceId": hex(&s.trace_id), "id": hex(&s.id), "name": s.name,
                "timestamp": s.timestamp, "duration": s.duration,
                "localEndpoint": {"serviceName": s.local_endpoint.as_ref().map(|e| e.service_name.clone())},
                "tags": s.tags,
            });
            if !s.parent_id.is_empty() {
                v["parentId"] = hex(&s.parent_id).into();
            }
            if s.kind > 0 {
                v["kind"] = kinds[s.kind as usize].into();
            }
            v
        })
        .collect();
    serde_json::to_vec(&arr).expect("json")
}

fn main() {
    let mut g = strand_bench::ingest::Generator::new(1, 10, 4, 0);
    let mut bodies: [(&str, Vec<Vec<u8>>); 5] = Default::default();
    let names =
        ["otlp protobuf", "jaeger thrift binary", "jaeger thrift compact", "zipkin json", "zipkin proto3"];
    for (slot, name) in bodies.iter_mut().zip(names) {
        slot.0 = name;
    }
    let mut spans = 0;
    for _ in 0..200 {
        let (req, _, _) = g.request(500);
        let batch = strand_otlp::from_request(req.clone()).0;
        spans += batch.span_count();
        bodies[0].1.push(req.encode_to_vec());
        for jb in jaeger_batches(&batch) {
            bodies[1].1.push(strand_ingest::jaeger::encode::binary_batch(&jb));
            bodies[2].1.push(strand_ingest::jaeger::encode::compact_emit_batch(&jb, 1));
        }
        let zs = zipkin_spans(&batch);
        bodies[3].1.push(zipkin_json(&zs));
        bodies[4].1.push(zp::ListOfSpans { spans: zs }.encode_to_vec());
    }
    for (name, list) in &bodies {
        let bytes: usize = list.iter().map(Vec::len).sum();
        let t = Instant::now();
        let mut decoded = 0;
        for body in list {
            let (batch, rejected) = match *name {
                "otlp protobuf" => strand_ingest::otlp::decode(strand_ingest::otlp::Format::Protobuf, body),
                "jaeger thrift binary" => strand_ingest::jaeger::decode_http(body),
                "jaeger thrift compact" => strand_ingest::jaeger::decode_agent(body),
                "zipkin json" => strand_ingest::zipkin::decode(strand_ingest::zipkin::Format::Json, body),
                _ => strand_ingest::zipkin::decode(strand_ingest::zipkin::Format::Proto, body),
            }
            .expect("decodes");
            assert_eq!(rejected.count, 0);
            decoded += batch.span_count();
        }
        let elapsed = t.elapsed();
        assert_eq!(decoded, spans);
        println!(
            "{name:>22}: {:.2} us/span decode+convert, {:.0} B/span on the wire",
            elapsed.as_secs_f64() * 1e6 / spans as f64,
            bytes as f64 / spans as f64
        );
    }
}
