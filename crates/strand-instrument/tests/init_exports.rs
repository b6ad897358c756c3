//! `init` end to end against an OTLP/HTTP receiver in the test: spans and log records
//! recorded before the guard drops are all exported when it does, logs carry the trace id
//! of the span they were written in, and the resource names the service.

#![cfg(feature = "otlp-http")]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry::trace::{TraceContextExt as _, Tracer as _};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use strand_instrument::{ExportProtocol, LogFormat, TelemetryConfig};

#[derive(Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    logs: Vec<ExportLogsServiceRequest>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_flushes_spans_and_logs_with_trace_ids() {
    let received = Arc::new(Mutex::new(Received::default()));
    let (t, l) = (received.clone(), received.clone());
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(move |body: Bytes| async move {
                t.lock().expect("lock").traces.push(ExportTraceServiceRequest::decode(body).expect("traces"));
                ""
            }),
        )
        .route(
            "/v1/logs",
            post(move |body: Bytes| async move {
                l.lock().expect("lock").logs.push(ExportLogsServiceRequest::decode(body).expect("logs"));
                ""
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut cfg = TelemetryConfig::new("init-test");
    cfg.protocol = ExportProtocol::HttpProtobuf;
    cfg.endpoint = Some(format!("http://{addr}"));
    cfg.logs.format = LogFormat::None;
    cfg.logs.export = true;
    cfg.resource.insert("deployment.environment.name".into(), "test".into());
    let guard = strand_instrument::init(cfg).expect("init");

    let tracer = opentelemetry::global::tracer("app");
    let trace_id = tracer.in_span("submit report", |cx| {
        tracing::info!(patient_id = 42, "report stored");
        let _span = tracing::info_span!("notify").entered();
        tracing::warn!("sms delayed");
        cx.span().span_context().trace_id()
    });
    // Everything recorded so far goes out when the guard drops (well before the 5 s
    // batch delay).
    tokio::task::spawn_blocking(move || drop(guard)).await.expect("shutdown");

    let got = received.lock().expect("lock");
    let spans: Vec<_> = got
        .traces
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"submit report") && names.contains(&"notify"), "{names:?}");
    let resource = &got.traces[0].resource_spans[0].resource.as_ref().expect("resource").attributes;
    let attr = |k: &str| {
        resource.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.clone()).map(|v| format!("{v:?}"))
    };
    assert!(attr("service.name").is_some_and(|v| v.contains("init-test")));
    assert!(attr("deployment.environment.name").is_some_and(|v| v.contains("test")));

    let records: Vec<_> = got
        .logs
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .collect();
    let body = |r: &&opentelemetry_proto::tonic::logs::v1::LogRecord| format!("{:?}", r.body);
    let stored = records.iter().find(|r| body(r).contains("report stored")).expect("log record exported");
    assert_eq!(stored.trace_id, trace_id.to_bytes().to_vec(), "the log record carries the span's trace id");
    let delayed = records.iter().find(|r| body(r).contains("sms delayed")).expect("log record exported");
    assert_eq!(delayed.trace_id, trace_id.to_bytes().to_vec());
    let notify = spans.iter().find(|s| s.name == "notify").expect("notify span");
    assert_eq!(delayed.span_id, notify.span_id, "inside a tracing span, the record has that span's id");
}
