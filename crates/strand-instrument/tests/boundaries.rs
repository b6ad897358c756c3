//! The trace survives every boundary: HTTP in and out (axum, reqwest), spawned tasks, gRPC
//! layers, and log lines — checked on the spans a real SDK exports.

#![cfg(all(feature = "axum", feature = "reqwest", feature = "tonic"))]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use opentelemetry::global;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use strand_instrument::http_client::TracedRequest as _;
use strand_instrument::http_server::HttpServerLayer;
use strand_instrument::logs::LogLayer;
use strand_instrument::{LogFormat, spawn_detached};
use tracing_subscriber::layer::SubscriberExt as _;

/// Spans end in the exporter at once (simple processor); log lines go to `logs`.
///
/// The tracer provider and the `tracing` subscriber are process-global, and `cargo test`
/// runs every test of this file in one process: they are installed once and shared, and each
/// test looks only at the spans it named.
fn install() -> (InMemorySpanExporter, Arc<Mutex<Vec<u8>>>) {
    static INSTALLED: OnceLock<(InMemorySpanExporter, Arc<Mutex<Vec<u8>>>)> = OnceLock::new();
    INSTALLED.get_or_init(install_once).clone()
}

fn install_once() -> (InMemorySpanExporter, Arc<Mutex<Vec<u8>>>) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    global::set_tracer_provider(provider.clone());
    strand_instrument::propagation::install_propagator();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = logs.clone();
    let make = move || SharedWriter(sink.clone());
    // As `init` sets it up: `tracing` spans become OpenTelemetry spans.
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "test");
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(LogLayer::with_writer(LogFormat::Json, "test", make));
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber per test process");
    (exporter, logs)
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .await
            .expect("serve")
    });
    format!("http://{addr}")
}

fn find<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!("no span {name} in {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>())
    })
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

async fn wait_for(exporter: &InMemorySpanExporter, name: &str) -> Vec<SpanData> {
    // At most 10 s: tests of this file share the process and run in parallel.
    for _ in 0..1000 {
        let spans = exporter.get_finished_spans().expect("spans");
        if spans.iter().any(|s| s.name == name) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("span {name} never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_http_a_detached_task_and_log_lines() {
    let (exporter, logs) = install();
    let downstream = serve(
        Router::new()
            .route("/patients/{id}", get(|| async { "ok" }))
            .route("/boom", get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }))
            .route(
                "/panic",
                get(|| async {
                    if true {
                        panic!("patient record corrupt")
                    }
                    "never"
                }),
            )
            .layer(HttpServerLayer::new()),
    )
    .await;
    let down = downstream.clone();
    let gateway = serve(
        Router::new()
            .route(
                "/reports/{id}",
                get(move || {
                    let down = down.clone();
                    async move {
                        tracing::info!(report = 7, "report received");
                        tracing::info_span!("score report").in_scope(|| tracing::info!("scoring"));
                        let resp = reqwest::Client::new()
                            .get(format!("{down}/patients/42"))
                            .send_traced()
                            .await
                            .expect("call");
                        assert_eq!(resp.status(), 200);
                        spawn_detached("send-sms", async {
                            tokio::time::sleep(Duration::from_millis(150)).await;
                            tracing::info!("sms sent");
                        });
                        "accepted"
                    }
                }),
            )
            .layer(HttpServerLayer::new()),
    )
    .await;

    let resp = reqwest::Client::new()
        .get(format!("{gateway}/reports/7"))
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("user-agent", "boundary-test")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.text().await.expect("body"), "accepted");
    let spans = wait_for(&exporter, "send-sms").await;

    let server = find(&spans, "GET /reports/{id}");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(server.span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(server.parent_span_is_remote);
    assert_eq!(attr(server, "http.route").as_deref(), Some("/reports/{id}"));
    assert_eq!(attr(server, "url.path").as_deref(), Some("/reports/7"));
    assert_eq!(attr(server, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(server, "user_agent.original").as_deref(), Some("boundary-test"));
    assert_eq!(attr(server, "client.address").as_deref(), Some("127.0.0.1"));

    let client = find(&spans, "GET");
    assert_eq!(client.span_kind, SpanKind::Client);
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    assert!(attr(client, "url.full").is_some_and(|u| u.ends_with("/patients/42")));
    let downstream_server = find(&spans, "GET /patients/{id}");
    assert_eq!(downstream_server.parent_span_id, client.span_context.span_id());
    assert_eq!(downstream_server.span_context.trace_id(), server.span_context.trace_id());

    let sms = find(&spans, "send-sms");
    assert_eq!(sms.span_kind, SpanKind::Internal);
    assert_eq!(sms.parent_span_id, server.span_context.span_id());
    assert!(sms.end_time > server.end_time, "the task outlived the request and its span still ended");
    assert_eq!(sms.status, Status::Unset);

    let trace = server.span_context.trace_id().to_string();
    let text = String::from_utf8(logs.lock().expect("logs").clone()).expect("utf-8");
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    let received = lines.iter().find(|l| l["message"] == "report received").expect("log line");
    assert_eq!(received["trace_id"], trace.as_str());
    assert_eq!(received["span_id"], server.span_context.span_id().to_string());
    assert_eq!(received["report"], 7);
    // A `tracing` span in the handler is a child of the server span, and its log line
    // carries its own span id.
    let scoring = find(&spans, "score report");
    assert_eq!(scoring.parent_span_id, server.span_context.span_id());
    assert_eq!(scoring.span_context.trace_id(), server.span_context.trace_id());
    let scored = lines.iter().find(|l| l["message"] == "scoring").expect("log line");
    assert_eq!(scored["span_id"], scoring.span_context.span_id().to_string());
    assert_eq!(scored["span"], "score report");
    let sent = lines.iter().find(|l| l["message"] == "sms sent").expect("log line");
    assert_eq!(sent["trace_id"], trace.as_str());
    assert_eq!(sent["span_id"], sms.span_context.span_id().to_string());

    // 5xx and panics end their server spans in error; a bad traceparent starts a new trace.
    let r = reqwest::Client::new()
        .get(format!("{downstream}/boom"))
        .header("traceparent", "00-zzzz-00f067aa0ba902b7-01")
        .send()
        .await
        .expect("boom");
    assert_eq!(r.status(), 503);
    let _ = reqwest::get(format!("{downstream}/panic")).await;
    let spans = wait_for(&exporter, "GET /panic").await;
    let boom = find(&spans, "GET /boom");
    assert!(matches!(boom.status, Status::Error { .. }));
    assert_eq!(boom.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    assert_ne!(boom.span_context.trace_id().to_string(), trace);
    let panicked = find(&spans, "GET /panic");
    assert_eq!(panicked.status, Status::error("handler panicked: patient record corrupt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_keep_the_trace_and_end_their_spans_however_they_end() {
    let (exporter, _logs) = install();
    let tracer = global::tracer("test");
    let root = opentelemetry::trace::Tracer::start(&tracer, "request");
    let cx = opentelemetry::Context::current_with_span(root);
    let (in_trace, blocking, aborted) = {
        let _attached = cx.clone().attach();
        let in_trace = strand_instrument::spawn_in_trace(async {
            opentelemetry::Context::current().span().span_context().trace_id()
        });
        let blocking = strand_instrument::spawn_blocking_detached("render-pdf", || {
            opentelemetry::Context::current().span().span_context().trace_id()
        });
        let aborted = spawn_detached("never-finishes", std::future::pending::<()>());
        (in_trace, blocking, aborted)
    };
    let trace = cx.span().span_context().trace_id();
    assert_eq!(in_trace.await.expect("task"), trace);
    assert_eq!(blocking.await.expect("task"), trace);
    aborted.abort();
    let _ = aborted.await;
    let spans = wait_for(&exporter, "never-finishes").await;
    assert_eq!(find(&spans, "never-finishes").status, Status::error("task cancelled before it finished"));
    assert_eq!(find(&spans, "render-pdf").span_context.trace_id(), trace);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_layers_propagate_and_map_status() {
    use strand_instrument::grpc::{GrpcClientLayer, GrpcServerLayer};
    use tower::{Layer as _, ServiceExt as _};
    let (exporter, _logs) = install();
    // A gRPC server that fails the call (trailers-only response, as tonic sends it).
    let server = GrpcServerLayer.layer(tower::service_fn(|req: http::Request<()>| async move {
        let tp = req.headers().get("traceparent").map(|v| v.to_str().expect("ascii").to_owned());
        let resp = http::Response::builder()
            .header("grpc-status", "13")
            .header("grpc-message", "database%20locked")
            .header("x-seen-traceparent", tp.unwrap_or_default())
            .body(())
            .expect("response");
        Ok::<_, std::convert::Infallible>(resp)
    }));
    let client = GrpcClientLayer.layer(server);
    let req =
        http::Request::builder().uri("http://data-service:50051/epro.Data/Store").body(()).expect("request");
    let resp = client.oneshot(req).await.expect("call");
    assert!(resp.headers()["x-seen-traceparent"].to_str().expect("ascii").starts_with("00-"));
    let spans = wait_for(&exporter, "epro.Data/Store").await;
    let call = |kind: SpanKind| spans.iter().find(|s| s.name == "epro.Data/Store" && s.span_kind == kind);
    let client_span = call(SpanKind::Client).expect("client span");
    let server_span = call(SpanKind::Server).expect("server span");
    assert_eq!(server_span.parent_span_id, client_span.span_context.span_id());
    assert_eq!(attr(server_span, "rpc.service").as_deref(), Some("epro.Data"));
    assert_eq!(attr(server_span, "rpc.method").as_deref(), Some("Store"));
    assert_eq!(attr(server_span, "rpc.grpc.status_code").as_deref(), Some("13"));
    assert_eq!(server_span.status, Status::error("database locked"));
    assert_eq!(client_span.status, Status::error("database locked"));
    assert_eq!(attr(client_span, "server.address").as_deref(), Some("data-service"));
}

/// A response body: one message, then trailers.
struct Streamed(Option<http_body::Frame<axum::body::Bytes>>, Option<http::HeaderMap>);

impl http_body::Body for Streamed {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Some(data) = self.0.take() {
            return std::task::Poll::Ready(Some(Ok(data)));
        }
        std::task::Poll::Ready(self.1.take().map(|t| Ok(http_body::Frame::trailers(t))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_in_trailers_ends_the_span_when_the_body_is_read() {
    use http_body::Body as _;
    use strand_instrument::grpc::GrpcServerLayer;
    use tower::{Layer as _, ServiceExt as _};
    let (exporter, _logs) = install();
    let server = GrpcServerLayer.layer(tower::service_fn(|_req: http::Request<()>| async move {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        trailers.insert("grpc-message", http::HeaderValue::from_static("nats%20down"));
        let body = Streamed(
            Some(http_body::Frame::data(axum::body::Bytes::from_static(b"\0\0\0\0\0"))),
            Some(trailers),
        );
        Ok::<_, std::convert::Infallible>(http::Response::new(body))
    }));
    let req = http::Request::builder().uri("/epro.Notify/Stream").body(()).expect("request");
    let resp = server.oneshot(req).await.expect("call");
    assert!(
        !exporter.get_finished_spans().expect("spans").iter().any(|s| s.name == "epro.Notify/Stream"),
        "the call is not over before its trailers"
    );
    let mut body = std::pin::pin!(resp.into_body());
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        frame.expect("frame");
    }
    let spans = wait_for(&exporter, "epro.Notify/Stream").await;
    let span = find(&spans, "epro.Notify/Stream");
    assert_eq!(attr(span, "rpc.grpc.status_code").as_deref(), Some("14"));
    assert_eq!(span.status, Status::error("nats down"));
}
