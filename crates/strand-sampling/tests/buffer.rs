//! The trace buffer: when traces are decided, late spans, caps, the byte bound, the log.

use std::sync::Arc;

use strand_core::{
    AnyValue, Resource, ResourceSpans, Scope, ScopeSpans, Span, SpanBatch, SpanId, SpanKind, Status,
    StatusCode, TraceId, find_attr,
};
use strand_core::{LogBatch, StoredLog};
use strand_sampling::buffer::{POLICY_ATTRIBUTE, RATE_ATTRIBUTE, decisions_record, logs_record};
use strand_sampling::{DecisionReason, LogRecord, Prepared, SamplingConfig, TraceBuffer};

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SEC;

fn config(extra: &str) -> SamplingConfig {
    let yaml = format!(
        "policies:\n  - {{ name: errors, type: status_code, status_code: {{ status_codes: [ERROR] }} }}\n{extra}"
    );
    serde_saphyr::from_str(&yaml).expect("valid")
}

fn span(trace: u8, id: u8, parent: Option<u8>, error: bool) -> Span {
    let start = T0 + u64::from(id);
    Span {
        parent_span_id: parent.map(|p| SpanId([p; 8])),
        flags: 1,
        kind: SpanKind::Internal,
        status: Status {
            code: if error { StatusCode::Error } else { StatusCode::Unset },
            message: String::new(),
        },
        ..Span::new(TraceId([trace; 16]), SpanId([id; 8]), format!("op-{id}"), start, start + 1000)
    }
}

fn batch(spans: Vec<Span>) -> SpanBatch {
    SpanBatch {
        resource_spans: vec![ResourceSpans {
            resource: Arc::new(Resource::default()),
            scope_spans: vec![ScopeSpans { scope: Arc::new(Scope::default()), spans }],
        }],
    }
}

fn insert(buf: &mut TraceBuffer, spans: Vec<Span>, now: u64) -> strand_sampling::Admitted {
    let p = Prepared::new(&batch(spans), &buf.preparer());
    buf.insert(&p, now, 1)
}

#[test]
fn decided_at_root_plus_delay_or_at_the_wait() {
    let mut buf = TraceBuffer::new(&config("decision_delay: 5s\ndecision_wait: 30s")).expect("valid");
    insert(&mut buf, vec![span(1, 2, Some(1), true)], T0);
    insert(&mut buf, vec![span(1, 1, None, false)], T0 + SEC); // root after 1 s
    insert(&mut buf, vec![span(2, 2, Some(1), false)], T0); // never gets a root
    assert!(buf.decide_due(T0 + 6 * SEC - 1).is_empty());
    let d = buf.decide_due(T0 + 6 * SEC);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].trace_id, d[0].keep, d[0].reason), (TraceId([1; 16]), true, DecisionReason::RootSeen));
    assert_eq!(d[0].spans.len(), 2);
    let root = d[0].spans.iter().find(|s| s.span.parent_span_id.is_none()).expect("root");
    assert_eq!(find_attr(&root.span.attributes, POLICY_ATTRIBUTE), Some(&AnyValue::String("errors".into())));
    assert_eq!(find_attr(&root.span.attributes, RATE_ATTRIBUTE), Some(&AnyValue::Double(1.0)));
    assert!(buf.decide_due(T0 + 30 * SEC - 1).is_empty());
    let d = buf.decide_due(T0 + 30 * SEC);
    assert_eq!((d.len(), d[0].keep, d[0].reason), (1, false, DecisionReason::Timeout));
    // What stays is the string dictionary (span names, attribute keys), shared and bounded.
    let dict = buf.preparer().dictionary().bytes();
    assert_eq!((buf.traces(), buf.spans(), buf.bytes()), (0, 0, dict));
}

#[test]
fn late_spans_follow_the_decision() {
    let mut buf = TraceBuffer::new(&config("")).expect("valid");
    insert(&mut buf, vec![span(1, 1, None, true), span(2, 1, None, false)], T0);
    let d = buf.decide_all(T0);
    assert_eq!(d.iter().filter(|t| t.keep).count(), 1);
    let a = insert(&mut buf, vec![span(1, 9, Some(1), false), span(2, 9, Some(1), true)], T0 + SEC);
    assert_eq!(a.late_kept.len(), 1);
    assert_eq!(a.late_kept[0].span.span_id, SpanId([9; 8]));
    assert_eq!(a.late_dropped, 1, "an error arriving after a drop does not revive the trace");
    assert_eq!(buf.traces(), 0);
    let s = buf.stats();
    assert_eq!((s.late_spans_kept, s.late_spans_dropped), (1, 1));

    // With no cache the late span starts a new buffered trace instead.
    let mut uncached =
        TraceBuffer::new(&config("decision_cache: { sampled_cache_size: 0, non_sampled_cache_size: 0 }"))
            .expect("valid");
    insert(&mut uncached, vec![span(1, 1, None, true)], T0);
    uncached.decide_all(T0);
    let a = insert(&mut uncached, vec![span(1, 9, Some(1), false)], T0 + SEC);
    assert!(a.late_kept.is_empty());
    assert_eq!(uncached.traces(), 1);
}

#[test]
fn a_huge_trace_is_capped_and_decided_early() {
    let mut buf = TraceBuffer::new(&config("max_trace_bytes: 4KiB\nmax_buffer_bytes: 1MiB")).expect("valid");
    insert(&mut buf, vec![span(5, 1, None, false)], T0);
    let mut decided = None;
    for i in 2..200u8 {
        let a = insert(&mut buf, vec![span(9, i, Some(1), i == 100)], T0);
        if let Some(d) = a.decided.into_iter().next() {
            decided = Some((i, d));
            break;
        }
    }
    let (at, d) = decided.expect("the big trace is decided before 200 spans");
    assert_eq!(d.reason, DecisionReason::TraceTooBig);
    assert!(!d.keep, "no error among its first {at} spans");
    assert_eq!(buf.stats().traces_capped, 1);
    assert_eq!(buf.traces(), 1, "the small trace keeps waiting");
    let a = insert(&mut buf, vec![span(9, 250, Some(1), false)], T0);
    assert_eq!(a.late_dropped, 1);
}

#[test]
fn a_flood_never_exceeds_the_byte_bound_and_says_so() {
    let limit = 256 * 1024;
    let mut buf = TraceBuffer::new(&config(&format!(
        "max_buffer_bytes: {limit}\nmax_trace_bytes: 64KiB\noverflow_sampling_percentage: 10"
    )))
    .expect("valid");
    let mut overflowed = Vec::new();
    for t in 0..20_000u32 {
        let id = t.to_le_bytes();
        let mut spans: Vec<Span> =
            (1..=5).map(|i| span(0, i, if i == 1 { None } else { Some(1) }, false)).collect();
        for s in &mut spans {
            s.trace_id = TraceId([id[0], id[1], id[2], id[3] | 0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        }
        let a = insert(&mut buf, spans, T0 + u64::from(t));
        assert!(buf.bytes() <= limit, "{} bytes after trace {t}", buf.bytes());
        overflowed.extend(a.decided);
    }
    let s = buf.stats();
    assert!(s.traces_overflowed > 15_000, "{} overflowed", s.traces_overflowed);
    assert_eq!(s.traces_overflowed as usize, overflowed.len());
    assert!(overflowed.iter().all(|d| d.reason == DecisionReason::BufferFull));
    let kept = overflowed.iter().filter(|d| d.keep).count() as f64 / overflowed.len() as f64;
    assert!((0.08..0.12).contains(&kept), "overflow fallback kept {kept}");
    let d = overflowed.iter().find(|d| d.keep).expect("some kept");
    let root = &d.spans[0].span;
    assert_eq!(
        find_attr(&root.attributes, POLICY_ATTRIBUTE),
        Some(&AnyValue::String("strand.overflow".into()))
    );
    // Deterministic: the same trace ids overflow to the same decisions in another buffer
    // (another node, or this one after a restart).
    for earlier in overflowed.iter().take(200) {
        let mut other =
            TraceBuffer::new(&config("max_buffer_bytes: 100\nmax_trace_bytes: 64KiB")).expect("valid");
        let mut spans: Vec<Span> =
            (1..=5).map(|i| span(0, i, if i == 1 { None } else { Some(1) }, false)).collect();
        for s in &mut spans {
            s.trace_id = earlier.trace_id;
        }
        let a = insert(&mut other, spans, T0);
        assert_eq!(a.decided.len(), 1);
        assert_eq!(a.decided[0].keep, earlier.keep, "{}", earlier.trace_id);
    }
}

#[test]
fn tags_track_the_oldest_segment_still_needed() {
    let mut buf = TraceBuffer::new(&config("")).expect("valid");
    let p = Prepared::new(&batch(vec![span(1, 1, None, false)]), &buf.preparer());
    buf.insert(&p, T0, 7);
    let p = Prepared::new(&batch(vec![span(2, 1, None, false)]), &buf.preparer());
    buf.insert(&p, T0 + SEC, 9);
    let p = Prepared::new(&batch(vec![span(2, 2, Some(1), false)]), &buf.preparer());
    buf.insert(&p, T0 + SEC, 10);
    assert_eq!(buf.min_tag(), Some(7));
    buf.restore_decision(TraceId([1; 16]), false);
    assert_eq!(buf.min_tag(), Some(9));
    buf.decide_all(T0 + 2 * SEC);
    assert_eq!(buf.min_tag(), None);
}

/// Every truncation of a record is an error; a flipped byte anywhere gives an error or a
/// value, never a panic.
fn survives_damage(record: &[u8]) {
    for cut in 0..record.len() {
        assert!(LogRecord::decode(&record[..cut]).is_err(), "cut at {cut}");
    }
    for i in 0..record.len() {
        let mut r = record.to_vec();
        r[i] ^= 0x5a;
        let _ = LogRecord::decode(&r);
    }
}

#[test]
fn log_records_round_trip_and_reject_garbage() {
    let buf = TraceBuffer::new(&config("")).expect("valid");
    let mut spans = vec![span(1, 1, None, true), span(1, 2, Some(1), false), span(3, 1, None, false)];
    spans[1].attributes.push(strand_core::KeyValue::new("k", AnyValue::Int(-3)));
    let original = batch(spans);
    let p = Prepared::new(&original, &buf.preparer());
    let record = p.to_record(T0 + 5);
    match LogRecord::decode(&record).expect("valid") {
        LogRecord::Spans { received_unix_nano, batch } => {
            assert_eq!(received_unix_nano, T0 + 5);
            assert_eq!(batch, original);
        }
        other => panic!("expected spans, got {other:?}"),
    }
    let d = decisions_record(&[(TraceId([1; 16]), true), (TraceId([3; 16]), false)]);
    match LogRecord::decode(&d).expect("valid") {
        LogRecord::Decisions(v) => assert_eq!(v, vec![(TraceId([1; 16]), true), (TraceId([3; 16]), false)]),
        other => panic!("expected decisions, got {other:?}"),
    }
    survives_damage(&record);
    assert!(LogRecord::decode(&[9, 1, 2]).is_err());
}

/// A log record of `trace` (none: no context) written by span `span`.
fn log(trace: Option<u8>, span: u8, body: &str) -> StoredLog {
    StoredLog {
        resource: Arc::new(Resource::default()),
        scope: Arc::new(Scope::default()),
        record: strand_core::LogRecord {
            time_unix_nano: T0 + u64::from(span),
            severity_number: 9,
            body: AnyValue::String(body.into()),
            trace_id: trace.map(|t| TraceId([t; 16])),
            span_id: trace.map(|_| SpanId([span; 8])),
            ..strand_core::LogRecord::default()
        },
    }
}

fn insert_logs(buf: &mut TraceBuffer, logs: Vec<StoredLog>, now: u64) -> strand_sampling::Admitted {
    buf.insert_logs(&LogBatch::from_stored(logs), now, 1)
}

fn bodies(logs: &[StoredLog]) -> Vec<String> {
    let mut b: Vec<String> = logs.iter().map(|l| l.record.body_text()).collect();
    b.sort();
    b
}

#[test]
fn log_records_follow_their_traces_decision() {
    let mut buf = TraceBuffer::new(&config("decision_delay: 5s\ndecision_wait: 30s")).expect("valid");
    // Records first (a service logs while its span is still open), untraced ones pass.
    let a = insert_logs(
        &mut buf,
        vec![log(Some(1), 2, "kept early"), log(Some(2), 2, "dropped early"), log(None, 0, "no context")],
        T0,
    );
    assert_eq!(bodies(&a.logs_now), ["no context"]);
    assert_eq!((buf.traces(), buf.spans(), buf.log_records()), (2, 0, 2));
    let logs_only = buf.bytes();
    assert!(logs_only > buf.preparer().dictionary().bytes(), "waiting records count in the bound");
    insert(&mut buf, vec![span(1, 1, None, false), span(1, 2, Some(1), true)], T0 + SEC);
    insert(&mut buf, vec![span(2, 1, None, false)], T0 + SEC);
    insert_logs(&mut buf, vec![log(Some(1), 1, "kept before the decision")], T0 + 2 * SEC);
    // The records' arrival started the traces' clocks; the roots shorten the wait.
    assert!(buf.decide_due(T0 + 6 * SEC - 1).is_empty());
    let mut d = buf.decide_due(T0 + 6 * SEC);
    d.sort_by_key(|t| t.trace_id);
    assert_eq!(d.len(), 2);
    assert!(d[0].keep && d[0].sampled() && !d[1].keep);
    assert_eq!(bodies(&d[0].logs), ["kept before the decision", "kept early"]);
    assert_eq!((d[0].log_count, d[1].log_count), (2, 1));
    assert!(d[1].logs.is_empty());
    assert_eq!(d[0].logs[0].record.trace_id, Some(TraceId([1; 16])));

    // Late records follow the remembered decisions.
    let a = insert_logs(
        &mut buf,
        vec![log(Some(1), 3, "late kept"), log(Some(2), 3, "late dropped")],
        T0 + 7 * SEC,
    );
    assert_eq!(bodies(&a.logs_now), ["late kept"]);
    assert!(a.decided.is_empty());
    let s = buf.stats();
    assert_eq!((s.logs_kept, s.logs_dropped, s.logs_without_spans), (3, 2, 0));
    let dict = buf.preparer().dictionary().bytes();
    assert_eq!((buf.traces(), buf.log_records(), buf.bytes()), (0, 0, dict));
}

#[test]
fn records_whose_spans_never_came_are_kept_without_a_decision() {
    let mut buf = TraceBuffer::new(&config("decision_wait: 10s")).expect("valid");
    insert_logs(&mut buf, vec![log(Some(7), 1, "alone"), log(Some(7), 2, "alone too")], T0);
    assert!(buf.decide_due(T0 + 10 * SEC - 1).is_empty(), "records wait as spans do");
    let d = buf.decide_due(T0 + 10 * SEC);
    assert_eq!(d.len(), 1);
    assert!(d[0].keep && !d[0].sampled());
    assert_eq!((d[0].span_count, d[0].reason), (0, DecisionReason::Timeout));
    assert_eq!(bodies(&d[0].logs), ["alone", "alone too"]);
    assert_eq!((buf.stats().traces_kept, buf.stats().logs_without_spans), (0, 2));
    // Nothing is remembered: spans arriving now are a new trace for the policies.
    let a = insert(&mut buf, vec![span(7, 1, None, false)], T0 + 11 * SEC);
    assert!(a.late_kept.is_empty() && a.late_dropped == 0);
    assert_eq!(buf.traces(), 1);
}

#[test]
fn log_records_count_toward_the_trace_cap() {
    let mut buf = TraceBuffer::new(&config("max_trace_bytes: 2KiB\nmax_buffer_bytes: 1MiB")).expect("valid");
    insert(&mut buf, vec![span(4, 1, None, true)], T0);
    let big = "x".repeat(1500);
    let a = insert_logs(&mut buf, vec![log(Some(4), 1, &big)], T0);
    assert!(a.decided.is_empty());
    let a = insert_logs(&mut buf, vec![log(Some(4), 2, &big)], T0);
    assert_eq!(a.decided.len(), 1, "the second record takes the trace past 2 KiB");
    assert_eq!(a.decided[0].reason, DecisionReason::TraceTooBig);
    assert_eq!(a.decided[0].logs.len(), 2);
    assert_eq!(buf.stats().traces_capped, 1);
}

#[test]
fn logs_records_round_trip_and_reject_garbage() {
    let batch = LogBatch::from_stored(vec![log(Some(1), 1, "one"), log(Some(2), 2, "two")]);
    let record = logs_record(T0 + 9, &batch);
    match LogRecord::decode(&record).expect("valid") {
        LogRecord::Logs { received_unix_nano, batch: back } => {
            assert_eq!(received_unix_nano, T0 + 9);
            assert_eq!(back, batch);
        }
        other => panic!("expected log records, got {other:?}"),
    }
    survives_damage(&record);
}
