//! `strand serve --demo`: a first look without any instrumented service. At start the
//! server stores a handful of patient-report submissions from the last few minutes, shaped
//! as the demo system (`examples/epro`) sends them: gateway → user-service (HTTP) and
//! epro-service (gRPC) → data-service (gRPC, SQL) → a queue hop to notify-service → a
//! detached SMS task that outlives the request. One submission fails in the database (an
//! error chain up to the gateway); the featured one has a slow query, the queue hop and an
//! SMS attempt the gateway refused (a red span, retried), so the search page, the trace
//! view, the critical path and the service map all have something to show; the newest one
//! loses its trace context on the queue hop, for chain integrity to find once it settled. The
//! UI's search page links to the featured one's red span and to the broken chain
//! (`GET /api/v1/status` names both).
//!
//! Every submission also has the log lines its services wrote, each with the trace and span
//! it was written in (the slow query a WARN, the failures ERRORs), so the trace page shows
//! them under their spans.
//!
//! The spans go through the same sink as received spans (RED metrics, sampling, store).

use std::sync::Arc;

use strand_core::{
    AnyValue, Event, KeyValue, LogBatch, LogRecord, Resource, ResourceLogs, ResourceSpans, Scope, ScopeLogs,
    ScopeSpans, Span, SpanBatch, SpanId, SpanKind, Status, StatusCode, TraceId,
};

/// Submissions the demo stores.
pub const SUBMISSIONS: u8 = 6;
/// Which submission fails in the database.
pub const FAILING: u8 = 2;
/// Which submission is slow (a slow SELECT) and featured: it also has the queue hop and a
/// failed SMS attempt.
pub const SLOW: u8 = 4;
/// The featured submission, which the UI points a newcomer to.
pub const FEATURED: u8 = SLOW;
/// The submission whose queue hop loses the trace context: notify-service's part becomes a
/// trace of its own.
pub const BROKEN: u8 = 6;
/// Span number (within a submission) of the featured submission's failed SMS attempt.
const FAILED_SMS: u8 = 14;

const MS: u64 = 1_000_000;

/// The trace id of demo submission `n` of the run started at `run` (Unix nanoseconds):
/// `n` and three bytes mixed from the run (so the UI's 7-character short ids differ), then
/// `de30de30`, then the run. Each start stores new traces, so a kept data directory never
/// mixes an earlier run's spans into this one's (they age out by retention).
pub fn trace_id(run: u64, n: u8) -> TraceId {
    let mix =
        run.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(u64::from(n)).rotate_left(29).to_be_bytes();
    let mut b = [0u8; 16];
    b[0] = n;
    b[1..4].copy_from_slice(&mix[..3]);
    b[4..8].copy_from_slice(&[0xde, 0x30, 0xde, 0x30]);
    b[8..].copy_from_slice(&run.to_be_bytes());
    TraceId(b)
}

/// The span id of span `k` of demo submission `n`.
fn span_id(n: u8, k: u8) -> SpanId {
    SpanId([0xd0, n, k, 1, 1, 1, 1, 1])
}

/// The trace notify-service's part of the broken submission of run `run` starts.
pub fn broken_half(run: u64) -> TraceId {
    trace_id(run, BROKEN + 100)
}

/// The featured submission of run `run` and its red span (the SMS attempt that failed).
pub fn featured(run: u64) -> (TraceId, SpanId) {
    (trace_id(run, FEATURED), span_id(FEATURED, FAILED_SMS))
}

fn attr(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue::new(key, AnyValue::String(value.into()))
}

/// The resource of one demo service.
fn resource(name: &str) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![attr("service.name", name), attr("deployment.environment.name", "demo")],
        ..Resource::default()
    })
}

/// Spans of one service, as one resource.
fn service(name: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: resource(name),
        scope_spans: vec![ScopeSpans {
            scope: Arc::new(Scope { name: "strand.demo".into(), ..Scope::default() }),
            spans,
        }],
    }
}

/// Demo submission `n` of run `run`, starting at `start` (Unix nanoseconds).
pub fn submission(run: u64, n: u8, start: u64) -> SpanBatch {
    let trace = trace_id(run, n);
    let fails = n == FAILING;
    let slow = if n == SLOW { 900 * MS } else { 0 };
    let sid = |k: u8| span_id(n, k);
    let span = |k: u8, parent: Option<u8>, name: &str, kind: SpanKind, from: u64, to: u64| Span {
        parent_span_id: parent.map(sid),
        kind,
        ..Span::new(trace, sid(k), name, start + from, start + to)
    };
    let error = |message: &str| Status { code: StatusCode::Error, message: message.into() };
    let end = 120 * MS + slow;

    let mut root = span(1, None, "POST /reports", SpanKind::Server, 0, end);
    root.attributes = vec![
        attr("http.request.method", "POST"),
        attr("http.route", "/reports"),
        KeyValue::new("http.response.status_code", AnyValue::Int(if fails { 500 } else { 202 })),
    ];
    let mut user_call = span(2, Some(1), "GET", SpanKind::Client, 2 * MS, 14 * MS);
    user_call.attributes = vec![attr("url.full", format!("http://user-service/patients/{}", 40 + n))];
    let mut submit_call = span(3, Some(1), "epro.Reports/Submit", SpanKind::Client, 16 * MS, end - 4 * MS);
    submit_call.attributes = vec![attr("rpc.system", "grpc")];
    if fails {
        root.status = error("report rejected");
        submit_call.status = error("internal: no such table: reports_archive");
    }
    let gateway = service("gateway", vec![root, user_call, submit_call]);

    let mut user = span(4, Some(2), "GET /patients/{id}", SpanKind::Server, 3 * MS, 13 * MS);
    user.attributes = vec![attr("http.route", "/patients/{id}")];
    let users = service("user-service", vec![user]);

    let mut submit = span(5, Some(3), "epro.Reports/Submit", SpanKind::Server, 18 * MS, end - 6 * MS);
    let mut store_call = span(6, Some(5), "epro.Data/Store", SpanKind::Client, 20 * MS, end - 10 * MS);
    if fails {
        submit.status = error("no such table: reports_archive");
        store_call.status = error("internal: no such table: reports_archive");
    }
    let epro = service("epro-service", vec![submit, store_call]);

    let mut store = span(7, Some(6), "epro.Data/Store", SpanKind::Server, 22 * MS, end - 12 * MS);
    store.attributes = vec![attr("rpc.system", "grpc")];
    let mut select = span(8, Some(7), "SELECT reports", SpanKind::Client, 24 * MS, 40 * MS + slow);
    select.attributes = vec![
        attr("db.system.name", "sqlite"),
        attr("db.query.text", "SELECT COUNT(*) FROM reports WHERE patient = ?"),
    ];
    let mut insert = span(9, Some(7), "INSERT reports", SpanKind::Client, 42 * MS + slow, 70 * MS + slow);
    insert.attributes = vec![attr("db.system.name", "sqlite")];
    let mut data_spans = vec![store, select, insert];
    if fails {
        let archive = &mut data_spans[2];
        archive.name = "INSERT reports_archive".into();
        archive.status = error("no such table: reports_archive");
        data_spans[0].status = error("no such table: reports_archive");
    } else {
        let mut publish = span(
            10,
            Some(7),
            "send patient-report.submitted",
            SpanKind::Producer,
            72 * MS + slow,
            80 * MS + slow,
        );
        publish.attributes = vec![
            attr("messaging.system", "nats"),
            attr("messaging.destination.name", "patient-report.submitted"),
            attr("messaging.message.id", format!("PATIENT_REPORTS:{}", u64::from(n) + run % 1_000_000 * 10)),
        ];
        data_spans.push(publish);
    }
    let data = service("data-service", data_spans);

    let mut out = vec![gateway, users, epro, data];
    if !fails {
        // The queue hop, and the SMS task that finishes long after the request.
        let mut consume = span(
            11,
            Some(10),
            "process patient-report.submitted",
            SpanKind::Consumer,
            95 * MS + slow,
            110 * MS + slow,
        );
        consume.attributes = vec![
            attr("messaging.system", "nats"),
            attr("messaging.destination.name", "patient-report.submitted"),
            attr("messaging.message.id", format!("PATIENT_REPORTS:{}", u64::from(n) + run % 1_000_000 * 10)),
        ];
        let mut sms = span(12, Some(11), "send-sms", SpanKind::Internal, 112 * MS + slow, 480 * MS + slow);
        let mut sms_call = span(13, Some(12), "POST", SpanKind::Client, 150 * MS + slow, 470 * MS + slow);
        sms_call.attributes = vec![
            attr("url.full", "http://sms-gateway/messages"),
            KeyValue::new("http.response.status_code", AnyValue::Int(202)),
        ];
        let mut notify = vec![consume];
        if n == FEATURED {
            // The SMS gateway refuses the first attempt; the task waits and tries again.
            let mut refused =
                span(FAILED_SMS, Some(12), "POST", SpanKind::Client, 115 * MS + slow, 128 * MS + slow);
            refused.attributes = vec![
                attr("url.full", "http://sms-gateway/messages"),
                KeyValue::new("http.response.status_code", AnyValue::Int(503)),
            ];
            refused.status = error("503 Service Unavailable: sms gateway busy");
            sms.events = vec![Event {
                time_unix_nano: start + 130 * MS + slow,
                name: "retrying after 503".into(),
                attributes: vec![KeyValue::new("retry.attempt", AnyValue::Int(1))],
                dropped_attributes_count: 0,
            }];
            sms_call.start_time_unix_nano = start + 150 * MS + slow;
            notify.push(refused);
        }
        notify.extend([sms, sms_call]);
        if n == BROKEN {
            // The message went out without its trace context: notify-service's work is a
            // trace of its own (Strand's chain integrity links the two).
            for s in &mut notify {
                s.trace_id = broken_half(run);
            }
            notify[0].parent_span_id = None;
        }
        out.push(service("notify-service", notify));
    }
    SpanBatch { resource_spans: out }
}

/// When submission `n` of the run at `now` starts: one every 40 seconds, the last 100 s
/// before `now`.
fn start_of(now: u64, n: u8) -> u64 {
    now - u64::from(SUBMISSIONS + 1 - n) * 40_000 * MS - 60_000 * MS
}

/// The demo's submissions, one every 40 seconds, the last starting 100 s before `now`.
pub fn submissions(now: u64) -> Vec<SpanBatch> {
    (1..=SUBMISSIONS).map(|n| submission(now, n, start_of(now, n))).collect()
}

/// The log lines of the demo's submissions.
pub fn submission_logs(now: u64) -> Vec<LogBatch> {
    (1..=SUBMISSIONS).map(|n| logs(now, n, start_of(now, n))).collect()
}

/// One demo log line: service, span number, offset from the submission's start, severity
/// number, text, attributes.
struct Line(&'static str, u8, u64, u8, String, Vec<KeyValue>);

/// The log lines the services wrote while handling submission `n`, each in its span (the
/// numbering of [`submission`]).
pub fn logs(run: u64, n: u8, start: u64) -> LogBatch {
    let trace = trace_id(run, n);
    let slow = if n == SLOW { 900 * MS } else { 0 };
    let patient = i64::from(40 + n);
    let mut lines: Vec<Line> = vec![
        Line(
            "gateway",
            1,
            MS,
            9,
            "report received".into(),
            vec![KeyValue::new("patient_id", AnyValue::Int(patient))],
        ),
        Line(
            "user-service",
            4,
            8 * MS,
            9,
            "patient found".into(),
            vec![KeyValue::new("patient_id", AnyValue::Int(patient))],
        ),
        Line("epro-service", 5, 19 * MS, 9, format!("report validated score={}", 10 + n), Vec::new()),
    ];
    if n == FAILING {
        lines.push(Line(
            "data-service",
            7,
            60 * MS,
            17,
            "database statement failed: no such table: reports_archive".into(),
            Vec::new(),
        ));
        lines.push(Line("gateway", 1, 110 * MS, 17, "report submission failed".into(), Vec::new()));
    } else {
        if n == SLOW {
            lines.push(Line(
                "data-service",
                8,
                40 * MS + slow,
                13,
                format!("slow query: SELECT reports took {} ms", (16 * MS + slow) / MS),
                vec![attr("db.system.name", "sqlite")],
            ));
        }
        lines.push(Line(
            "data-service",
            7,
            71 * MS + slow,
            9,
            format!("report stored report_id={}", 1000 + u16::from(n)),
            Vec::new(),
        ));
        lines.push(Line("gateway", 1, 118 * MS + slow, 9, "report accepted".into(), Vec::new()));
    }
    if n == FEATURED {
        lines.push(Line(
            "notify-service",
            FAILED_SMS,
            128 * MS + slow,
            17,
            "sms gateway refused the message: 503 Service Unavailable".into(),
            vec![KeyValue::new("retry.attempt", AnyValue::Int(1))],
        ));
        lines.push(Line("notify-service", 13, 470 * MS + slow, 9, "sms sent".into(), Vec::new()));
    }
    let mut out: Vec<ResourceLogs> = Vec::new();
    for Line(svc, k, at, severity, text, attributes) in lines {
        let record = LogRecord {
            time_unix_nano: start + at,
            observed_time_unix_nano: start + at,
            severity_number: severity,
            severity_text: strand_core::logs::severity_name(severity).into(),
            body: AnyValue::String(text),
            attributes,
            flags: 1,
            trace_id: Some(trace),
            span_id: Some(span_id(n, k)),
            ..LogRecord::default()
        };
        match out.iter_mut().find(|rl| rl.resource.service_name() == svc) {
            Some(rl) => rl.scope_logs[0].records.push(record),
            None => out.push(ResourceLogs {
                resource: resource(svc),
                scope_logs: vec![ScopeLogs {
                    scope: Arc::new(Scope { name: "strand.demo".into(), ..Scope::default() }),
                    records: vec![record],
                }],
            }),
        }
    }
    LogBatch { resource_logs: out }
}
