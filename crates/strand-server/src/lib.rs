//! The `strand` server: wiring of receivers, store and query API, and its commands.
//!
//! [`run`] starts everything on listeners it binds from the [`Config`] and runs until the
//! shutdown future resolves; tests start it on port 0. `main.rs` only parses arguments.

pub mod bench;
pub mod bench_sampling;
pub mod bench_ui;
pub mod compress;
pub mod config;
pub mod pipeline;
pub mod remote_sampling;
pub mod search_cmd;
pub mod trace_cmd;
pub mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Serialize;
use strand_core::{MetricKind, SpanSink, TraceReader, TraceStore};
use strand_ingest::{IngestLimits, Protocol, ProtocolCounters, Receiver, ReceiverStats};

use crate::pipeline::Pipeline;
use crate::remote_sampling::RemoteSampling;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

pub use config::Config;

/// Addresses the server actually listens on (ports resolved when configured as 0).
#[derive(Debug, Clone, Serialize)]
pub struct BoundAddrs {
    /// OTLP/gRPC, if enabled.
    pub otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP, if enabled.
    pub otlp_http: Option<SocketAddr>,
    /// Jaeger thrift over HTTP, if enabled.
    pub jaeger_thrift_http: Option<SocketAddr>,
    /// Jaeger agent UDP, if enabled.
    pub jaeger_agent: Option<SocketAddr>,
    /// Zipkin v2, if enabled.
    pub zipkin: Option<SocketAddr>,
    /// Jaeger remote sampling, if enabled.
    pub remote_sampling: Option<SocketAddr>,
    /// Query API, UI, health, admin.
    pub http: SocketAddr,
}

/// Runs the server until `shutdown` resolves, then stops accepting, answers in-flight
/// requests and closes the store (cutting the head into a block). `on_bound` is called
/// once every listener is bound.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(&BoundAddrs),
) -> anyhow::Result<()> {
    let data_dir = cfg.data_dir.clone();
    let storage = cfg.storage.clone();
    let store: Arc<dyn TraceStore> = tokio::task::spawn_blocking(move || storage.open_backend(&data_dir))
        .await
        .context("store open task failed")?
        .with_context(|| {
            format!("opening the {:?} store in {}", cfg.storage.backend, cfg.data_dir.display())
        })?;
    let limits = IngestLimits {
        max_request_bytes: cfg.otlp.max_request_size.0 as usize,
        max_concurrent_requests: cfg.otlp.max_concurrent_requests,
        ..IngestLimits::default()
    };
    let red = Arc::new(strand_sampling::red::RedMetrics::new(
        strand_sampling::red::RedLimits::default(),
        strand_store::now_unix_nano(),
    ));
    let remote = Arc::new(RemoteSampling::open(&cfg.remote_sampling, &cfg.data_dir, red.clone())?);
    let pipeline = Arc::new(
        Pipeline::open(
            store.clone(),
            red,
            &cfg.sampling,
            &cfg.data_dir,
            cfg.storage.fsync == config::Fsync::Always,
        )
        .await
        .context("starting tail sampling")?,
    );
    let sink: Arc<dyn SpanSink> = pipeline.clone();
    let receiver = Receiver::new(sink, limits);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let grpc =
        if cfg.otlp.grpc_enabled { Some(bind(cfg.otlp.grpc_listen, "otlp grpc").await?) } else { None };
    let otlp_http =
        if cfg.otlp.http_enabled { Some(bind(cfg.otlp.http_listen, "otlp http").await?) } else { None };
    let jaeger_http = if cfg.jaeger.thrift_http_enabled {
        Some(bind(cfg.jaeger.thrift_http_listen, "jaeger thrift http").await?)
    } else {
        None
    };
    let jaeger_agent = if cfg.jaeger.agent_enabled {
        let addr = cfg.jaeger.agent_listen;
        Some(
            tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding the jaeger agent UDP socket to {addr}"))?,
        )
    } else {
        None
    };
    let zipkin = if cfg.zipkin.enabled { Some(bind(cfg.zipkin.listen, "zipkin").await?) } else { None };
    let remote_http = if cfg.remote_sampling.enabled {
        Some(bind(cfg.remote_sampling.listen, "remote sampling").await?)
    } else {
        None
    };
    let http = bind(cfg.http_listen, "query http").await?;
    let addrs = BoundAddrs {
        otlp_grpc: grpc.as_ref().map(|l| l.local_addr()).transpose()?,
        otlp_http: otlp_http.as_ref().map(|l| l.local_addr()).transpose()?,
        jaeger_thrift_http: jaeger_http.as_ref().map(|l| l.local_addr()).transpose()?,
        jaeger_agent: jaeger_agent.as_ref().map(|s| s.local_addr()).transpose()?,
        zipkin: zipkin.as_ref().map(|l| l.local_addr()).transpose()?,
        remote_sampling: remote_http.as_ref().map(|l| l.local_addr()).transpose()?,
        http: http.local_addr()?,
    };
    info!(
        otlp_grpc = ?addrs.otlp_grpc,
        otlp_http = ?addrs.otlp_http,
        jaeger_thrift_http = ?addrs.jaeger_thrift_http,
        jaeger_agent_udp = ?addrs.jaeger_agent,
        zipkin = ?addrs.zipkin,
        remote_sampling = ?addrs.remote_sampling,
        http = %addrs.http,
        data_dir = %cfg.data_dir.display(),
        "strand listening"
    );
    on_bound(&addrs);

    let mut tasks = tokio::task::JoinSet::new();
    {
        let stop = stopped();
        let p = pipeline.clone();
        tasks.spawn(async move {
            p.run_decider(stop).await;
            Ok(())
        });
    }
    if let Some(listener) = grpc {
        let svc = strand_ingest::otlp::grpc::service(receiver.clone());
        let stop = stopped();
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stop)
                .await
                .context("otlp grpc server")
        });
    }
    if let Some(listener) = otlp_http {
        let app = strand_ingest::otlp::http::router(receiver.clone());
        let stop = stopped();
        tasks.spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(stop).await.context("otlp http server")
        });
    }
    {
        let stop = stopped();
        let r = remote.clone();
        tasks.spawn(async move {
            r.run(stop).await;
            Ok(())
        });
    }
    // Like Jaeger's collector, the thrift HTTP port also answers `/api/sampling`.
    let mut jaeger_app = strand_ingest::jaeger::router(receiver.clone());
    if cfg.remote_sampling.enabled {
        jaeger_app = jaeger_app.merge(remote.router());
    }
    for (listener, app, what) in [
        (jaeger_http, jaeger_app, "jaeger thrift http server"),
        (zipkin, strand_ingest::zipkin::router(receiver.clone()), "zipkin server"),
        (remote_http, remote.router(), "remote sampling server"),
    ] {
        if let Some(listener) = listener {
            let stop = stopped();
            tasks.spawn(async move {
                axum::serve(listener, app).with_graceful_shutdown(stop).await.context(what)
            });
        }
    }
    if let Some(socket) = jaeger_agent {
        let stop = stopped();
        let rx = receiver.clone();
        tasks.spawn(async move {
            strand_ingest::jaeger::serve_agent(socket, rx, stop).await.context("jaeger agent udp receiver")
        });
    }
    {
        let reader: Arc<dyn TraceReader> = store.clone();
        let mut app = strand_query::router(reader, cfg.query.to_limits()).merge(admin_router(
            store.clone(),
            receiver.stats(),
            pipeline.clone(),
            remote.clone(),
        ));
        if cfg.query.ui_enabled {
            app = app.merge(ui::router(cfg.query.ui_dir.clone()));
        }
        if cfg.query.compression {
            app = app.layer(axum::middleware::from_fn(compress::compress));
        }
        let stop = stopped();
        tasks.spawn(async move {
            axum::serve(http, app).with_graceful_shutdown(stop).await.context("query http server")
        });
    }

    tokio::select! {
        _ = shutdown => info!("shutting down"),
        Some(res) = tasks.join_next() => {
            // A server ended on its own: that is an error worth stopping for.
            let _ = stop_tx.send(true);
            res.context("server task panicked")??;
        }
    }
    let _ = stop_tx.send(true);
    while let Some(res) = tasks.join_next().await {
        res.context("server task panicked")??;
    }
    store.close().await;
    info!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding the {what} listener to {addr}"))
}

type MetricsState = (Arc<dyn TraceStore>, Arc<ReceiverStats>, Arc<Pipeline>, Arc<RemoteSampling>);

fn admin_router(
    store: Arc<dyn TraceStore>,
    receivers: Arc<ReceiverStats>,
    pipeline: Arc<Pipeline>,
    remote: Arc<RemoteSampling>,
) -> Router {
    Router::new()
        .route("/api/v1/admin/flush", post(flush))
        .with_state(store.clone())
        .route("/api/v1/metrics/red", get(red_metrics))
        .with_state(pipeline.clone())
        .route("/metrics", get(metrics))
        .with_state((store, receivers, pipeline, remote))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RedParams {
    service: Option<String>,
    since: Option<String>,
}

/// `GET /api/v1/metrics/red?service=&since=15m`: rate, errors and duration per operation,
/// from every span before sampling, over the last `since` (at most an hour).
async fn red_metrics(
    State(pipeline): State<Arc<Pipeline>>,
    params: Result<axum::extract::Query<RedParams>, axum::extract::rejection::QueryRejection>,
) -> axum::response::Response {
    let bad = |msg: String| {
        (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": msg }))).into_response()
    };
    let params = match params {
        Ok(p) => p.0,
        Err(e) => return bad(format!("invalid query parameters: {e}")),
    };
    let since = match params.since.as_deref().map(str::parse::<config::HumanDuration>) {
        None => std::time::Duration::from_secs(15 * 60),
        Some(Ok(d)) if d.0 <= std::time::Duration::from_secs(3600) && !d.0.is_zero() => d.0,
        Some(Ok(_)) => return bad("`since` must be more than 0 and at most 1h (the history kept)".into()),
        Some(Err(e)) => return bad(format!("`since`: {e}")),
    };
    let now = strand_store::now_unix_nano();
    let (from, operations) = pipeline.red().query(params.service.as_deref(), since.as_nanos() as u64, now);
    axum::Json(serde_json::json!({
        "service": params.service,
        "fromUnixNano": from.to_string(),
        "toUnixNano": now.to_string(),
        "operations": operations,
    }))
    .into_response()
}

async fn flush(State(store): State<Arc<dyn TraceStore>>) -> axum::response::Response {
    match store.flush().await {
        Ok(()) => axum::Json(serde_json::json!({ "status": "flushed" })).into_response(),
        Err(e) => strand_query::ApiError::from(e).into_response(),
    }
}

async fn metrics(State((store, receivers, pipeline, remote)): State<MetricsState>) -> impl IntoResponse {
    let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    for m in store.metrics().await {
        let kind = match m.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        out.push_str(&format!(
            "# HELP strand_{0} {1}\n# TYPE strand_{0} {kind}\nstrand_{0} {2}\n",
            m.name, m.help, m.value
        ));
    }
    type Counter = fn(&ProtocolCounters) -> &AtomicU64;
    let per_protocol: [(&str, &str, Counter); 3] = [
        ("strand_receiver_spans_accepted_total", "Spans stored, per receiver protocol.", |p| {
            &p.spans_accepted
        }),
        (
            "strand_receiver_spans_rejected_total",
            "Invalid spans rejected one by one (the rest of their request was stored).",
            |p| &p.spans_rejected,
        ),
        (
            "strand_receiver_requests_refused_total",
            "Requests or datagrams refused as a whole (malformed, too large, overloaded, storage unavailable).",
            |p| &p.requests_refused,
        ),
    ];
    for (name, help, field) in per_protocol {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for protocol in Protocol::ALL {
            let value = c(field(receivers.of(protocol)));
            out.push_str(&format!("{name}{{protocol=\"{}\"}} {value}\n", protocol.as_str()));
        }
    }
    sampling_metrics(&pipeline, &mut out);
    remote_sampling_metrics(&remote, &mut out);
    pipeline.red().render_prometheus(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// Writes unlabelled series: (name, type, help, value).
fn write_series(out: &mut String, rows: &[(&str, &str, &str, u64)]) {
    for (name, kind, help, value) in rows {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
}

fn sampling_metrics(pipeline: &Pipeline, out: &mut String) {
    let tail = pipeline.tail_snapshot().unwrap_or_default();
    let st = &tail.stats;
    let ps = pipeline.stats();
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 15] = [
        (
            "strand_sampling_buffer_bytes",
            "gauge",
            "Bytes of spans waiting for a tail-sampling decision.",
            tail.buffer_bytes as u64,
        ),
        (
            "strand_sampling_buffer_traces",
            "gauge",
            "Traces waiting for a decision.",
            tail.buffer_traces as u64,
        ),
        ("strand_sampling_buffer_spans", "gauge", "Spans waiting for a decision.", tail.buffer_spans as u64),
        ("strand_sampling_traces_kept_total", "counter", "Traces kept by tail sampling.", st.traces_kept),
        (
            "strand_sampling_traces_dropped_total",
            "counter",
            "Traces dropped by tail sampling.",
            st.traces_dropped,
        ),
        (
            "strand_sampling_spans_sampled_out_total",
            "counter",
            "Spans dropped by a sampling decision (late spans included).",
            st.spans_dropped + st.late_spans_dropped,
        ),
        (
            "strand_sampling_late_spans_kept_total",
            "counter",
            "Spans that arrived after their trace was kept, stored.",
            st.late_spans_kept,
        ),
        (
            "strand_sampling_late_spans_dropped_total",
            "counter",
            "Spans that arrived after their trace was dropped.",
            st.late_spans_dropped,
        ),
        (
            "strand_sampling_traces_capped_total",
            "counter",
            "Traces decided early because they reached max_trace_bytes.",
            st.traces_capped,
        ),
        (
            "strand_sampling_traces_overflowed_total",
            "counter",
            "Traces decided early because the buffer reached max_buffer_bytes.",
            st.traces_overflowed,
        ),
        (
            "strand_sampling_overflow_kept_total",
            "counter",
            "Of those, traces kept by the overflow fallback percentage.",
            st.overflow_kept,
        ),
        (
            "strand_sampling_log_errors_total",
            "counter",
            "Pending-log writes that failed (requests refused).",
            c(&ps.log_errors),
        ),
        (
            "strand_sampling_store_retries_total",
            "counter",
            "Writes of kept traces that failed and were retried.",
            c(&ps.store_retries),
        ),
        (
            "strand_sampling_log_replayed_records_total",
            "counter",
            "Pending-log records replayed at start.",
            c(&ps.replayed_records),
        ),
        (
            "strand_sampling_log_corrupt_records_total",
            "counter",
            "Pending-log records skipped at start because they were corrupt.",
            c(&ps.corrupt_records),
        ),
    ];
    write_series(out, &rows);
    out.push_str("# HELP strand_sampling_traces_kept_by_policy_total Traces kept, per policy that sampled them.\n# TYPE strand_sampling_traces_kept_by_policy_total counter\n");
    let mut by_policy: Vec<_> = st.kept_by_policy.iter().collect();
    by_policy.sort();
    for (policy, n) in by_policy {
        out.push_str(&format!(
            "strand_sampling_traces_kept_by_policy_total{{policy=\"{}\"}} {n}\n",
            strand_sampling::red::escape(policy)
        ));
    }
}

fn remote_sampling_metrics(remote: &RemoteSampling, out: &mut String) {
    let st = remote.stats();
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 6] = [
        (
            "strand_remote_sampling_requests_total",
            "counter",
            "Sampling strategies served to SDKs.",
            c(&st.requests),
        ),
        (
            "strand_remote_sampling_bad_requests_total",
            "counter",
            "Strategy requests refused (no or repeated service).",
            c(&st.bad_requests),
        ),
        (
            "strand_remote_sampling_calculations_total",
            "counter",
            "Adaptive sampling calculations.",
            c(&st.calculations),
        ),
        (
            "strand_remote_sampling_adaptive_operations",
            "gauge",
            "Root operations with an adaptive probability.",
            remote.adaptive_operations() as u64,
        ),
        (
            "strand_remote_sampling_reloads_total",
            "counter",
            "Strategies file reloads that changed the strategies.",
            c(&st.reloads),
        ),
        (
            "strand_remote_sampling_errors_total",
            "counter",
            "Strategies file reloads or adaptive state writes that failed.",
            c(&st.errors),
        ),
    ];
    write_series(out, &rows);
}

/// Writes the bound addresses as JSON to `path` (atomically), for scripts and tests that
/// start `strand` on port 0.
pub fn write_listen_info(path: &PathBuf, addrs: &BoundAddrs) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(addrs)?)?;
    std::fs::rename(tmp, path)
}
