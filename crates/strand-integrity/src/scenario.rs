//! A labelled generator: patient-report submissions shaped as the demo system sends them
//! (gateway → user-service over HTTP and epro-service over gRPC → data-service over gRPC
//! with SQL → a NATS hop to notify-service → a detached SMS task calling an uninstrumented
//! gateway), either complete — with every legitimate pattern the analyser must accept — or
//! broken at one known place, with the findings the break must produce.
//!
//! Used by the analyser's tests and by `strand bench integrity` (recall per kind, false
//! alarms, cost).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use strand_core::{
    AnyValue, Confidence, Finding, FindingKind, KeyValue, Link, Resource, ResourceSpans, Scope, ScopeSpans,
    Span, SpanBatch, SpanId, SpanKind, Status, StatusCode, TraceId,
};

use crate::observer::Observer;

const MS: u64 = 1_000_000;
/// The queue the demo publishes to.
pub const TOPIC: &str = "patient-report.submitted";

/// Where a submission breaks (or how a complete one looks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// Whole, with the SMS task outliving the request.
    Complete,
    /// Whole; notify-service consumes in batches and links the producer instead of
    /// continuing its trace.
    CompleteLinkedConsumer,
    /// Whole; a span whose context was not sampled arrives without its (unexported) parent.
    CompleteUnsampledOrphan,
    /// user-service does not extract the context of the HTTP call.
    BreakHttp,
    /// data-service does not extract the context of the gRPC call.
    BreakGrpc,
    /// The message carries no context: notify-service starts a new trace.
    BreakQueue,
    /// The SMS task is spawned without the trace (a new root in notify-service).
    BreakSpawn,
    /// epro-service's server span is lost on export: the data-service subtree is detached.
    BreakLostSpan,
    /// The gateway's root span is lost on export.
    BreakLostRoot,
    /// user-service's clock runs 40 ms behind.
    BreakSkew,
}

impl Shape {
    /// Every shape: the complete ones first.
    pub const ALL: [Shape; 10] = [
        Shape::Complete,
        Shape::CompleteLinkedConsumer,
        Shape::CompleteUnsampledOrphan,
        Shape::BreakHttp,
        Shape::BreakGrpc,
        Shape::BreakQueue,
        Shape::BreakSpawn,
        Shape::BreakLostSpan,
        Shape::BreakLostRoot,
        Shape::BreakSkew,
    ];

    /// Whether the shape is a complete trace (no finding may be raised).
    pub fn is_complete(self) -> bool {
        matches!(self, Shape::Complete | Shape::CompleteLinkedConsumer | Shape::CompleteUnsampledOrphan)
    }
}

/// A finding a break must produce: in which trace, of which kind, across which edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The trace that must carry it.
    pub trace_id: TraceId,
    /// Its kind.
    pub kind: FindingKind,
    /// Caller-side and callee-side services (`""`: not checked).
    pub services: [&'static str; 2],
    /// The trace it must name as the other half, when there is one.
    pub related: Option<TraceId>,
}

/// One generated submission.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Its shape.
    pub shape: Shape,
    /// Every trace id it produced (one, or two when a break started a new trace).
    pub traces: Vec<TraceId>,
    /// Batches as the services export them, each with the time it is received.
    pub batches: Vec<(u64, SpanBatch)>,
    /// The findings the analyser must produce (none for complete shapes).
    pub expected: Vec<Expected>,
}

fn expect(
    trace_id: TraceId,
    kind: FindingKind,
    services: [&'static str; 2],
    related: Option<TraceId>,
) -> Expected {
    Expected { trace_id, kind, services, related }
}

fn trace_id(n: u64, half: u8) -> TraceId {
    let mut b = [0u8; 16];
    b[0] = 0x5c;
    b[1] = half + 1;
    b[8..].copy_from_slice(&n.to_be_bytes());
    TraceId(b)
}

fn span_id(n: u64, k: u8) -> SpanId {
    let mut b = (n << 8 | u64::from(k)).to_be_bytes();
    b[0] |= 0x80; // never all zero
    SpanId(b)
}

fn attr(k: &str, v: &str) -> KeyValue {
    KeyValue::new(k, AnyValue::String(v.into()))
}

fn int(k: &str, v: i64) -> KeyValue {
    KeyValue::new(k, AnyValue::Int(v))
}

fn batch(service: &str, spans: Vec<Span>) -> SpanBatch {
    SpanBatch {
        resource_spans: vec![ResourceSpans {
            resource: Arc::new(Resource {
                attributes: vec![attr("service.name", service)],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans { scope: Arc::new(Scope::default()), spans }],
        }],
    }
}

/// Submission `n` starting at `start` (Unix nanoseconds), in `shape`.
pub fn submission(n: u64, start: u64, shape: Shape) -> Submission {
    let main = trace_id(n, 0);
    let second = trace_id(n, 1);
    let sid = |k: u8| span_id(n, k);
    let sampled = 0x101; // W3C sampled, flags filled in
    let span =
        |trace: TraceId, k: u8, parent: Option<u8>, name: &str, kind: SpanKind, from: u64, to: u64| Span {
            parent_span_id: parent.map(sid),
            kind,
            flags: sampled,
            ..Span::new(trace, sid(k), name, start + from * MS, start + to * MS)
        };
    let mut expected = Vec::new();

    // gateway: the root, an HTTP call to user-service, a gRPC call to epro-service, and a
    // call to an external payments API nobody instruments.
    let mut root = span(main, 1, None, "POST /reports", SpanKind::Server, 0, 120);
    root.attributes = vec![attr("http.request.method", "POST"), attr("http.route", "/reports")];
    let mut user_call = span(main, 2, Some(1), "GET", SpanKind::Client, 2, 14);
    user_call.attributes = vec![
        attr("http.request.method", "GET"),
        attr("server.address", "user-service"),
        int("server.port", 8080),
        attr("url.full", &format!("http://user-service:8080/patients/{n}")),
    ];
    let mut submit_call = span(main, 3, Some(1), "epro.Reports/Submit", SpanKind::Client, 16, 112);
    submit_call.attributes =
        vec![attr("rpc.system", "grpc"), attr("rpc.service", "epro.Reports"), attr("rpc.method", "Submit")];
    let mut payments = span(main, 4, Some(1), "POST", SpanKind::Client, 113, 118);
    payments.attributes = vec![
        attr("http.request.method", "POST"),
        attr("server.address", "payments.example.com"),
        int("server.port", 443),
        attr("url.full", "https://payments.example.com/v1/charges"),
    ];
    let mut gateway = vec![root, user_call, submit_call, payments];

    // user-service
    let (user_trace, user_parent) = if shape == Shape::BreakHttp { (second, None) } else { (main, Some(2)) };
    let skew = if shape == Shape::BreakSkew { 40 } else { 0 };
    let mut user = span(user_trace, 5, user_parent, "GET /patients/{id}", SpanKind::Server, 3, 13);
    user.start_time_unix_nano -= skew * MS;
    user.end_time_unix_nano -= skew * MS;
    user.attributes = vec![
        attr("http.request.method", "GET"),
        attr("http.route", "/patients/{id}"),
        attr("url.path", &format!("/patients/{n}")),
        attr("server.address", "user-service"),
    ];
    if shape == Shape::BreakHttp {
        expected.extend([
            expect(main, FindingKind::ClientWithoutServer, ["gateway", "user-service"], Some(second)),
            expect(second, FindingKind::ClientWithoutServer, ["gateway", "user-service"], Some(main)),
        ]);
    }
    if shape == Shape::BreakSkew {
        expected.push(expect(main, FindingKind::ClockSkew, ["gateway", "user-service"], None));
    }

    // epro-service
    let mut submit = span(main, 6, Some(3), "epro.Reports/Submit", SpanKind::Server, 18, 110);
    submit.attributes =
        vec![attr("rpc.system", "grpc"), attr("rpc.service", "epro.Reports"), attr("rpc.method", "Submit")];
    let mut store_call = span(main, 7, Some(6), "epro.Data/Store", SpanKind::Client, 20, 106);
    store_call.attributes =
        vec![attr("rpc.system", "grpc"), attr("rpc.service", "epro.Data"), attr("rpc.method", "Store")];
    let mut epro = vec![submit, store_call];
    if shape == Shape::BreakLostSpan {
        epro.remove(0);
        expected.push(expect(main, FindingKind::MissingParent, ["gateway", "epro-service"], None));
    }

    // data-service and everything after it: in the main trace, or in a new one when the
    // gRPC call loses its context.
    let t = if shape == Shape::BreakGrpc { second } else { main };
    if shape == Shape::BreakGrpc {
        expected.extend([
            expect(main, FindingKind::ClientWithoutServer, ["epro-service", "data-service"], Some(second)),
            expect(second, FindingKind::ClientWithoutServer, ["epro-service", "data-service"], Some(main)),
        ]);
    }
    let mut store = span(t, 8, (t == main).then_some(7), "epro.Data/Store", SpanKind::Server, 22, 104);
    store.attributes =
        vec![attr("rpc.system", "grpc"), attr("rpc.service", "epro.Data"), attr("rpc.method", "Store")];
    let mut select = span(t, 9, Some(8), "SELECT reports", SpanKind::Client, 24, 40);
    select.attributes = vec![attr("db.system.name", "sqlite"), attr("db.query.text", "SELECT 1")];
    let mut insert = span(t, 10, Some(8), "INSERT reports", SpanKind::Client, 42, 70);
    insert.attributes = vec![attr("db.system.name", "sqlite")];
    let message_id = format!("msg-{n}");
    let mut publish = span(t, 11, Some(8), &format!("send {TOPIC}"), SpanKind::Producer, 72, 80);
    publish.attributes = vec![
        attr("messaging.system", "nats"),
        attr("messaging.destination.name", TOPIC),
        attr("messaging.message.id", &message_id),
    ];
    let data = vec![store, select, insert, publish];

    // notify-service: the consumer, the detached SMS task (outlives the request) and its
    // call to the SMS gateway, which is never instrumented.
    let consumer_trace = if shape == Shape::BreakQueue { second } else { t };
    let linked = shape == Shape::CompleteLinkedConsumer;
    let consumer_trace = if linked { second } else { consumer_trace };
    let mut consume = span(
        consumer_trace,
        12,
        (consumer_trace == t).then_some(11),
        &format!("process {TOPIC}"),
        SpanKind::Consumer,
        95,
        110,
    );
    consume.attributes = vec![
        attr("messaging.system", "nats"),
        attr("messaging.destination.name", TOPIC),
        attr("messaging.message.id", &message_id),
    ];
    if linked {
        consume.links = vec![Link {
            trace_id: t,
            span_id: sid(11),
            trace_state: String::new(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            flags: sampled,
        }];
    }
    if shape == Shape::BreakQueue {
        expected.extend([
            expect(
                main,
                FindingKind::ProducerWithoutConsumer,
                ["data-service", "notify-service"],
                Some(second),
            ),
            expect(second, FindingKind::ConsumerNewRoot, ["data-service", "notify-service"], Some(main)),
        ]);
    }
    let (sms_trace, sms_parent) =
        if shape == Shape::BreakSpawn { (second, None) } else { (consumer_trace, Some(12)) };
    if shape == Shape::BreakSpawn {
        expected.push(expect(second, FindingKind::UnrootedWork, ["", "notify-service"], Some(main)));
    }
    let sms = span(sms_trace, 13, sms_parent, "send-sms", SpanKind::Internal, 108, 480);
    let mut sms_call = span(sms_trace, 14, Some(13), "POST", SpanKind::Client, 150, 470);
    sms_call.attributes =
        vec![attr("http.request.method", "POST"), attr("url.full", "http://sms-gateway/messages")];
    let mut notify = vec![consume, sms, sms_call];

    if shape == Shape::CompleteUnsampledOrphan {
        // A span recorded under a context that was not sampled: its parent was never
        // exported, as head sampling intends.
        let mut audit = span(main, 15, Some(99), "audit", SpanKind::Internal, 100, 101);
        audit.flags = 0x100;
        notify.push(audit);
    }
    if shape == Shape::BreakLostRoot {
        gateway.remove(0);
        expected.push(expect(main, FindingKind::MissingRoot, ["", "gateway"], None));
    }
    if matches!(shape, Shape::BreakHttp) {
        // The new trace's root should be the callee's error-free server span.
        user.status = Status { code: StatusCode::Unset, message: String::new() };
    }

    // Each service exports when its work is done; notify-service twice (the consumer,
    // then the task).
    let sms_spans = notify.split_off(1);
    let at = |ms: u64| start + ms * MS;
    let batches = vec![
        (at(14), batch("user-service", vec![user])),
        (at(106), batch("data-service", data)),
        (at(110), batch("epro-service", epro)),
        (at(111), batch("notify-service", notify)),
        (at(120), batch("gateway", gateway)),
        (at(480), batch("notify-service", sms_spans)),
    ];
    let mut traces = vec![main];
    let split = !matches!(
        shape,
        Shape::Complete
            | Shape::CompleteUnsampledOrphan
            | Shape::BreakLostSpan
            | Shape::BreakLostRoot
            | Shape::BreakSkew
    );
    if split {
        traces.push(second);
    }
    Submission { shape, traces, batches, expected }
}

/// `count` submissions cycling through `shapes`, one every `gap` nanoseconds from `start`.
pub fn submissions(count: u64, start: u64, gap: u64, shapes: &[Shape]) -> Vec<Submission> {
    (0..count).map(|n| submission(n, start + n * gap, shapes[n as usize % shapes.len()])).collect()
}

/// Feeds every batch to `observer` in the order received, settling once a (simulated)
/// second, and finally long enough after the last batch for every trace to be settled and
/// dropped. Returns each trace's last recorded findings.
pub fn replay(
    subs: &[Submission],
    observer: &mut Observer,
    finish_after: u64,
) -> HashMap<TraceId, Vec<Finding>> {
    let mut batches: Vec<&(u64, SpanBatch)> = subs.iter().flat_map(|s| &s.batches).collect();
    batches.sort_by_key(|(at, _)| *at);
    let mut findings = HashMap::new();
    let mut record = |recorded: Vec<crate::observer::Recorded>| {
        for r in recorded {
            findings.insert(r.trace_id, r.findings);
        }
    };
    let second = 1_000_000_000;
    let mut next_tick = batches.first().map_or(0, |(at, _)| at + second);
    for (at, batch) in &batches {
        while *at >= next_tick {
            record(observer.tick(next_tick));
            next_tick += second;
        }
        observer.observe(batch, *at);
    }
    let end = batches.last().map_or(0, |(at, _)| *at) + finish_after;
    while next_tick <= end {
        record(observer.tick(next_tick));
        next_tick += second;
    }
    findings
}

/// How well findings match the labels.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Score {
    /// Per kind: expected findings found on the right trace, kind and edge (and naming the
    /// right other trace where one exists), and expected findings in all.
    pub found: BTreeMap<FindingKind, (u64, u64)>,
    /// Complete submissions.
    pub complete: u64,
    /// Complete submissions with any finding in any of their traces.
    pub false_alarms: u64,
    /// Broken submissions with a finding beyond the expected ones.
    pub extra_findings: u64,
    /// Low-confidence findings whose candidates include the true other half, and such
    /// findings in all.
    pub candidates: (u64, u64),
    /// What was missed or raised wrongly, for reading (first few).
    pub notes: Vec<String>,
}

impl Score {
    /// Share of expected findings found, over all kinds.
    pub fn recall(&self) -> f64 {
        let (f, t) = self.found.values().fold((0, 0), |(a, b), (f, t)| (a + f, b + t));
        if t == 0 { 1.0 } else { f as f64 / t as f64 }
    }

    /// Share of complete submissions with any finding.
    pub fn false_alarm_rate(&self) -> f64 {
        if self.complete == 0 { 0.0 } else { self.false_alarms as f64 / self.complete as f64 }
    }
}

/// Scores `findings` (by trace) against the submissions' labels.
pub fn score(subs: &[Submission], findings: &HashMap<TraceId, Vec<Finding>>) -> Score {
    let mut s = Score::default();
    let none = Vec::new();
    let of = |t: &TraceId| findings.get(t).unwrap_or(&none);
    for sub in subs {
        if sub.shape.is_complete() {
            s.complete += 1;
            let raised: Vec<&Finding> = sub.traces.iter().flat_map(&of).collect();
            if !raised.is_empty() {
                s.false_alarms += 1;
                if s.notes.len() < 20 {
                    s.notes.push(format!("{:?}: false alarm {:?}", sub.shape, raised));
                }
            }
            continue;
        }
        let mut matched = 0;
        for e in &sub.expected {
            let entry = s.found.entry(e.kind).or_default();
            entry.1 += 1;
            // Low-confidence findings (unrooted work) count when found on the right trace
            // and service; whether the true request is among their candidates is counted
            // apart.
            let hit = of(&e.trace_id).iter().find(|f| {
                f.kind == e.kind
                    && e.services.iter().zip(&f.services).all(|(want, got)| want.is_empty() || want == got)
                    && (f.confidence == Confidence::Low
                        || e.related.is_none_or(|r| f.related_trace_id == Some(r)))
            });
            if let (Some(f), Some(r), Confidence::Low) =
                (hit, e.related, hit.map_or(Confidence::High, |f| f.confidence))
            {
                s.candidates.1 += 1;
                s.candidates.0 += u64::from(f.candidates.contains(&r));
            }
            let hit = hit.is_some();
            if hit {
                entry.0 += 1;
                matched += 1;
            } else if s.notes.len() < 20 {
                s.notes.push(format!("{:?}: missed {:?}; found {:?}", sub.shape, e, of(&e.trace_id)));
            }
        }
        let raised: usize = sub.traces.iter().map(|t| of(t).len()).sum();
        if raised > matched {
            s.extra_findings += 1;
            if s.notes.len() < 20 {
                let all: Vec<&Finding> = sub.traces.iter().flat_map(&of).collect();
                s.notes.push(format!("{:?}: more findings than expected: {all:?}", sub.shape));
            }
        }
    }
    s
}
