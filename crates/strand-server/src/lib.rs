//! The `strand` server: wiring of receivers, store and query API, and its commands.
//!
//! [`run`] starts everything on listeners it binds from the [`Config`] and runs until the
//! shutdown future resolves; tests start it on port 0. `main.rs` only parses arguments.

pub mod auth;
pub mod cluster;
pub mod compress;
pub mod config;
pub mod cors;
pub mod demo;
pub mod http_serve;
pub mod listener;
pub mod metrics;
pub mod remote_sampling;
pub mod search_cmd;
pub mod spm;
pub mod tenants;
pub mod tls;
pub mod trace_cmd;
pub mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Serialize;
use strand_core::{LogSink, SpanSink};
use strand_ingest::{IngestLimits, Receiver};

use strand_sampling::runtime::remote::RemoteSampling;
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
    /// Jaeger agent UDP, binary thrift (`None` when off).
    pub jaeger_agent_binary: Option<SocketAddr>,
    /// Zipkin v2, if enabled.
    pub zipkin: Option<SocketAddr>,
    /// Jaeger remote sampling, if enabled.
    pub remote_sampling: Option<SocketAddr>,
    /// Query API, UI, health, admin.
    pub http: SocketAddr,
}

/// Raises the soft limit on open files to the hard limit and returns both (before, after):
/// every connection and every block file is a descriptor, and the common soft limit of
/// 1,024 is reached by about a thousand idle clients, after which accepts, writes and
/// reads fail.
pub fn raise_open_files_limit() -> std::io::Result<(Option<u64>, Option<u64>)> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current.is_some() && now.current != now.maximum {
        setrlimit(Resource::Nofile, Rlimit { current: now.maximum, maximum: now.maximum })?;
    }
    Ok((now.current, getrlimit(Resource::Nofile).current))
}

/// Runs the server until `shutdown` resolves, then stops accepting, answers in-flight
/// requests and closes the stores (cutting each head into a block). `on_bound` is called
/// once every listener is bound.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(&BoundAddrs),
) -> anyhow::Result<()> {
    match raise_open_files_limit() {
        Ok((before, after)) if before != after => {
            info!(before = ?before, after = ?after, "raised the soft limit on open files");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the soft limit on open files"),
    }
    let cfg = Arc::new(cfg);
    let tls = if cfg.tls.enabled() {
        Some(tls::Tls::load(&cfg.tls).context("loading the TLS certificate")?)
    } else {
        None
    };
    let authority = Arc::new(auth::Authority::new(&cfg.auth, cfg.multitenancy.enabled));
    if !authority.required() {
        info!("auth: none (no tokens configured); admin endpoints answer loopback clients only");
    } else if tls.is_none() && cfg.listeners().iter().any(|(_, a, udp)| !udp && !a.ip().is_loopback()) {
        tracing::warn!(
            "auth tokens are required on listeners beyond loopback without TLS: tokens and traces cross the network in the clear (set tls.cert_file and tls.key_file)"
        );
    }
    let limits = IngestLimits {
        max_request_bytes: cfg.otlp.max_request_size.0 as usize,
        max_concurrent_requests: cfg.otlp.max_concurrent_requests,
        body_read_timeout: cfg.otlp.body_read_timeout.0,
        memory_bytes: cfg.memory_budget_bytes(),
        ..IngestLimits::default()
    };
    info!(
        memory_budget = %config::ByteSize(limits.memory_bytes),
        max_unwritten = %config::ByteSize(cfg.max_unwritten_bytes()),
        "ingest memory budget (limits.memory_size)"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    // The receivers' bounds (requests in flight, bytes being received) are shared by every
    // tenant's receivers, made from this one; it stores nothing itself.
    let base = Receiver::new(Arc::new(tenants::Refuse), limits);
    let mut store_cfg = cfg.storage.to_store_config();
    store_cfg.max_unwritten_bytes = cfg.max_unwritten_bytes();
    let node = cluster::Node::open(&cfg.cluster, &cfg.data_dir, store_cfg).await?;
    // The tenants' background work (tail-sampling decisions, chain analysis) stops after
    // the servers and the ingester: an ingester giving its partitions back at shutdown
    // hands its undecided traces over through the tenants' pipelines.
    let (tenants_stop_tx, _) = watch::channel(false);
    let tenants =
        tenants::Tenants::start(cfg.clone(), base, tenants_stop_tx.subscribe(), node.clone()).await?;
    let primary = tenants.primary();
    let remote = Arc::new(RemoteSampling::open(&cfg.remote_sampling, &cfg.data_dir, primary.red.clone())?);
    let mut featured = None;
    if cfg.demo {
        let now = strand_store::now_unix_nano();
        for batch in demo::submissions(now) {
            primary.pipeline.consume(batch).await.context("storing the demo traces")?;
        }
        for batch in demo::submission_logs(now) {
            primary.pipeline.consume_logs(batch).await.context("storing the demo log lines")?;
        }
        let (trace, span) = demo::featured(now);
        featured = Some(DemoTrace {
            trace_id: trace.to_hex(),
            span_id: span.to_hex(),
            broken_trace_id: demo::trace_id(now, demo::BROKEN).to_hex(),
        });
        info!(
            traces = demo::SUBMISSIONS,
            featured = %trace,
            "stored the demo traces: open the web UI (its search page links to the featured one)"
        );
    }

    let grpc =
        if cfg.otlp.grpc_enabled { Some(bind(cfg.otlp.grpc_listen, "otlp grpc").await?) } else { None };
    let otlp_http =
        if cfg.otlp.http_enabled { Some(bind(cfg.otlp.http_listen, "otlp http").await?) } else { None };
    let jaeger_http = if cfg.jaeger.thrift_http_enabled {
        Some(bind(cfg.jaeger.thrift_http_listen, "jaeger thrift http").await?)
    } else {
        None
    };
    let udp = |addr: SocketAddr, what: &'static str| async move {
        tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding the {what} UDP socket to {addr}"))
    };
    let (jaeger_agent, jaeger_agent_binary) = if cfg.jaeger.agent_enabled {
        (
            Some(udp(cfg.jaeger.agent_listen, "jaeger agent (compact)").await?),
            Some(udp(cfg.jaeger.agent_binary_listen, "jaeger agent (binary)").await?),
        )
    } else {
        (None, None)
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
        jaeger_agent_binary: jaeger_agent_binary.as_ref().map(|s| s.local_addr()).transpose()?,
        zipkin: zipkin.as_ref().map(|l| l.local_addr()).transpose()?,
        remote_sampling: remote_http.as_ref().map(|l| l.local_addr()).transpose()?,
        http: http.local_addr()?,
    };
    let at = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
    info!(
        otlp_grpc = %at(addrs.otlp_grpc),
        otlp_http = %at(addrs.otlp_http),
        jaeger_thrift_http = %at(addrs.jaeger_thrift_http),
        jaeger_agent_udp = %at(addrs.jaeger_agent),
        jaeger_agent_binary_udp = %at(addrs.jaeger_agent_binary),
        zipkin = %at(addrs.zipkin),
        remote_sampling = %at(addrs.remote_sampling),
        http = %addrs.http,
        data_dir = %cfg.data_dir.display(),
        tls = tls.is_some(),
        tokens = authority.required(),
        multitenancy = cfg.multitenancy.enabled,
        "strand listening"
    );
    // SIGHUP re-reads the TLS files: listened for before anyone can know the server is up,
    // since the signal's default action would end the process.
    let hup = match &tls {
        Some(_) => Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("listening for SIGHUP (TLS certificate reloads)")?,
        ),
        None => None,
    };
    on_bound(&addrs);

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(node) = node.as_ref().filter(|n| n.role == strand_cluster::Role::Ingester) {
        let url = if cfg.cluster.advertise_url.is_empty() {
            advertised(addrs.http, tls.is_some())
        } else {
            cfg.cluster.advertise_url.clone()
        };
        let ingester = node.start_ingester(&cfg.cluster, url, &tenants, &stopped)?;
        tasks.spawn(async move { ingester.await.context("the ingester's task failed") });
    }
    let connections = Arc::new(listener::ConnectionStats::default());
    let header_timeout = cfg.connections.header_read_timeout.0;
    let guard = |listener: TcpListener, what: &'static str| {
        listener::GuardedListener::new(
            listener,
            what,
            cfg.connections.max_per_listener,
            cfg.connections.idle_timeout.0,
            connections.clone(),
        )
    };
    let serving = |ingest: bool, http2_only: bool| http_serve::Serving {
        header_timeout,
        tls: tls.as_ref().map(|t| (t.clone(), ingest)),
        http2_only,
    };
    let cors = cors::Cors(Arc::new(cfg.cors.allowed_origins.clone()));
    let guarded = |app: Router, listener: auth::Listener| {
        let check_host = tls.is_none() && listener != auth::Listener::OtlpGrpc;
        app.layer(axum::middleware::from_fn_with_state(
            auth::Guard { authority: authority.clone(), listener, check_host },
            auth::guard,
        ))
    };
    // Every tenant-scoped request goes to its tenant's stack (see `tenants`).
    let to_tenant = |listener: auth::Listener| {
        Router::new().fallback(tenants::dispatch).with_state((tenants.clone(), listener))
    };
    {
        let stop = stopped();
        let r = remote.clone();
        tasks.spawn(async move {
            r.run(stop).await;
            Ok(())
        });
    }
    // Like Jaeger's collector, the thrift HTTP port also answers `/api/sampling`.
    let mut jaeger_app = to_tenant(auth::Listener::JaegerHttp);
    if cfg.remote_sampling.enabled {
        jaeger_app = remote_sampling::router(&remote).merge(jaeger_app);
    }
    // gRPC is served by hyper like the HTTP listeners (it tells HTTP/2 from the first
    // bytes), so TLS, the token check and the tenant routing are the same code everywhere.
    for (listener, app, what, kind) in [
        (grpc, to_tenant(auth::Listener::OtlpGrpc), "otlp grpc", auth::Listener::OtlpGrpc),
        (otlp_http, to_tenant(auth::Listener::OtlpHttp), "otlp http", auth::Listener::OtlpHttp),
        (jaeger_http, jaeger_app, "jaeger thrift http server", auth::Listener::JaegerHttp),
        (zipkin, to_tenant(auth::Listener::Zipkin), "zipkin server", auth::Listener::Zipkin),
        (
            remote_http,
            remote_sampling::router(&remote),
            "remote sampling server",
            auth::Listener::RemoteSampling,
        ),
    ] {
        if let Some(listener) = listener {
            let stop = stopped();
            let listener = guard(listener, what);
            let mut app = guarded(app, kind);
            if kind == auth::Listener::OtlpHttp {
                app = app.layer(axum::middleware::from_fn_with_state(cors.clone(), cors::cors));
            }
            // gRPC is HTTP/2 only: over HTTP/1 a web page could post a gRPC-framed body
            // as a "simple" request, without a CORS preflight.
            let how = serving(kind != auth::Listener::RemoteSampling, kind == auth::Listener::OtlpGrpc);
            tasks.spawn(async move {
                http_serve::serve(listener, app, stop, how).await;
                Ok(())
            });
        }
    }
    use strand_ingest::Protocol::{JaegerAgentBinary, JaegerAgentCompact};
    for (socket, protocol) in [(jaeger_agent, JaegerAgentCompact), (jaeger_agent_binary, JaegerAgentBinary)] {
        let Some(socket) = socket else { continue };
        let stop = stopped();
        // UDP carries no tenant: the agent's spans go to `jaeger.agent_tenant`.
        let rx = match tenants.get(&cfg.jaeger.agent_tenant).await {
            Ok(stack) => stack.receiver.clone(),
            Err(tenants::TenantError::Open(e)) => {
                return Err(e.context("opening jaeger.agent_tenant's store"));
            }
            Err(tenants::TenantError::TooMany(n)) => {
                anyhow::bail!(
                    "jaeger.agent_tenant cannot be opened: multitenancy.max_tenants ({n}) tenants are open"
                )
            }
        };
        tasks.spawn(async move {
            strand_ingest::jaeger::serve_agent(socket, rx, stop, protocol)
                .await
                .with_context(|| format!("jaeger agent udp receiver ({})", protocol.as_str()))
        });
    }
    {
        let status = Router::new()
            .route("/api/v1/status", get(status))
            .with_state(Arc::new(StatusInfo { addrs: addrs.clone(), demo: featured }))
            .route("/api/v1/tenants", get(tenant_list))
            .with_state(tenants.clone());
        let mut app = Router::new()
            .route("/api/{*rest}", axum::routing::any(tenants::dispatch))
            .with_state((tenants.clone(), auth::Listener::Query))
            .merge(status)
            .merge(admin_router(MetricSources {
                tenants: tenants.clone(),
                remote: remote.clone(),
                connections: connections.clone(),
                authority: authority.clone(),
                tls: tls.clone(),
                node: node.clone(),
            }));
        if cfg.query.ui_enabled {
            app = app.merge(ui::router(cfg.query.ui_dir.clone()));
        }
        app = app.layer(axum::middleware::from_fn(strand_query::pretty_print));
        app = guarded(app, auth::Listener::Query);
        if cfg.query.compression {
            app = app.layer(axum::middleware::from_fn(compress::compress));
        }
        app = app
            .layer(axum::middleware::from_fn_with_state(cors.clone(), cors::cors))
            .layer(axum::middleware::from_fn(security_headers));
        let stop = stopped();
        let http = guard(http, "query http");
        let how = serving(false, false);
        tasks.spawn(async move {
            http_serve::serve(http, app, stop, how).await;
            Ok(())
        });
    }
    if let (Some(tls), Some(hup)) = (tls.clone(), hup) {
        let stop = stopped();
        tasks.spawn(async move {
            reload_tls_on_sighup(tls, hup, stop).await;
            Ok(())
        });
    }

    let mut failed = None;
    tokio::select! {
        _ = shutdown => info!("shutting down"),
        Some(res) = tasks.join_next() => {
            // A server ended on its own: that is an error worth stopping for.
            failed = Some(res);
        }
    }
    let _ = stop_tx.send(true);
    while let Some(res) = tasks.join_next().await {
        res.context("server task panicked")??;
    }
    let _ = tenants_stop_tx.send(true);
    tenants.close().await;
    if let Some(res) = failed {
        res.context("server task panicked")??;
    }
    info!("stopped");
    Ok(())
}

/// The RED and service-performance routes of one tenant's RED metrics.
pub(crate) fn red_router(red: Arc<strand_sampling::red::RedMetrics>) -> Router {
    Router::new()
        .route("/api/v1/metrics/red", get(red_metrics))
        .route("/api/metrics/minstep", get(spm::min_step))
        .route("/api/metrics/{kind}", get(spm::metrics))
        .with_state(red)
}

/// `GET /api/v1/tenants`: the tenants the caller may read (its token's, or every open one),
/// for the UI's tenant picker.
async fn tenant_list(
    State(tenants): State<Arc<tenants::Tenants>>,
    caller: Option<axum::Extension<auth::Caller>>,
) -> axum::response::Response {
    let open: Vec<String> = tenants.all().iter().map(|s| s.tenant.clone()).collect();
    let list = match caller.as_ref().and_then(|c| c.tenants.clone()) {
        Some(allowed) => allowed,
        None => open,
    };
    axum::Json(serde_json::json!({ "multitenancy": tenants.multitenant(), "tenants": list })).into_response()
}

/// Re-reads the TLS certificate and key on every SIGHUP until `stop` resolves; a failed
/// reload keeps the old certificate and says why.
async fn reload_tls_on_sighup(
    tls: Arc<tls::Tls>,
    mut hup: tokio::signal::unix::Signal,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            Some(()) = hup.recv() => match tls.reload() {
                Ok(()) => info!("SIGHUP: reloaded the TLS certificate and key"),
                Err(e) => tracing::error!(error = format!("{e:#}"), "SIGHUP: the TLS certificate could not be reloaded; the old one stays"),
            },
        }
    }
}

/// Headers every answer of the query port carries: no MIME sniffing, no framing (the UI's
/// CSP says `frame-ancestors 'none'` too, for browsers that read only one of them).
async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    resp
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding the {what} listener to {addr}"))
}

/// The URL queriers reach an ingester's query port at: the bound address, or the host
/// name when it listens on all interfaces.
fn advertised(http: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if http.ip().is_unspecified() {
        let host = cluster::host_name().unwrap_or_else(|_| "localhost".into());
        format!("{scheme}://{host}:{}", http.port())
    } else {
        if http.ip().is_loopback() {
            tracing::warn!(
                %http,
                "cluster: this ingester advertises a loopback address; queriers on other machines cannot reach it (set cluster.advertise_url)"
            );
        }
        format!("{scheme}://{http}")
    }
}

/// Everything `/metrics` reports on.
#[derive(Clone)]
struct MetricSources {
    tenants: Arc<tenants::Tenants>,
    remote: Arc<RemoteSampling>,
    connections: Arc<listener::ConnectionStats>,
    authority: Arc<auth::Authority>,
    tls: Option<Arc<tls::Tls>>,
    node: Option<Arc<cluster::Node>>,
}

fn admin_router(sources: MetricSources) -> Router {
    Router::new()
        .route("/api/v1/admin/flush", post(flush))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(sources))
}

/// What `GET /api/v1/status` tells.
struct StatusInfo {
    addrs: BoundAddrs,
    /// The demo's featured trace and its red span, with `--demo`.
    demo: Option<DemoTrace>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DemoTrace {
    trace_id: String,
    span_id: String,
    /// The submission whose queue hop lost the context.
    broken_trace_id: String,
}

/// `GET /api/v1/status`: the version and the addresses this server listens on (`null` for a
/// receiver that is off), so the UI can tell a newcomer where to send spans; with `--demo`,
/// the featured demo trace and its red span (`demo`), which the UI's search page links to.
async fn status(State(info): State<Arc<StatusInfo>>) -> axum::response::Response {
    let at = |a: Option<SocketAddr>| a.map(|a| a.to_string());
    let addrs = &info.addrs;
    axum::Json(serde_json::json!({
        "demo": info.demo,
        "version": env!("CARGO_PKG_VERSION"),
        "listen": {
            "otlpGrpc": at(addrs.otlp_grpc),
            "otlpHttp": at(addrs.otlp_http),
            "jaegerThriftHttp": at(addrs.jaeger_thrift_http),
            "jaegerAgentUdp": at(addrs.jaeger_agent),
            "jaegerAgentBinaryUdp": at(addrs.jaeger_agent_binary),
            "zipkin": at(addrs.zipkin),
            "remoteSampling": at(addrs.remote_sampling),
            "http": addrs.http.to_string(),
        },
    }))
    .into_response()
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
    State(red): State<Arc<strand_sampling::red::RedMetrics>>,
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
    let (from, operations) = red.query(params.service.as_deref(), since.as_nanos() as u64, now);
    axum::Json(serde_json::json!({
        "service": params.service,
        "fromUnixNano": from.to_string(),
        "toUnixNano": now.to_string(),
        "operations": operations,
    }))
    .into_response()
}

/// `POST /api/v1/admin/flush`: cuts every tenant's head into a block.
async fn flush(State(m): State<Arc<MetricSources>>) -> axum::response::Response {
    for stack in m.tenants.all() {
        if let Err(e) = stack.store.flush().await {
            return strand_query::ApiError::from(e).into_response();
        }
    }
    axum::Json(serde_json::json!({ "status": "flushed" })).into_response()
}

async fn metrics(State(m): State<Arc<MetricSources>>) -> axum::response::Response {
    let mut per_tenant = Vec::new();
    for stack in m.tenants.all() {
        let mut families = stack.store.metrics().await;
        families.extend(stack.receiver.stats().metric_families());
        families.extend(stack.pipeline.metric_families());
        // An ingester's RED counts every span of the cluster: summed over pods it would count
        // them N times. The receivers export what they received.
        if m.node.as_ref().is_none_or(|n| n.role != strand_cluster::Role::Ingester) {
            families.extend(stack.red.metric_families());
        }
        if let Some(a) = &stack.integrity {
            families.extend(a.metric_families());
        }
        families.push(strand_core::MetricFamily::counter(
            "strand_tenant_ingest_refused_total",
            "Spans and log records refused by the tenant's ingest rate limits (multitenancy.limits).",
            stack.refused() as f64,
        ));
        per_tenant.push((stack.tenant.clone(), families));
    }
    // With tenants every tenant's series carries a `tenant` label; without, the one
    // stack's series are as they always were.
    let mut families = if m.tenants.multitenant() {
        metrics::label_tenants(per_tenant)
    } else {
        per_tenant.into_iter().flat_map(|(_, f)| f).collect()
    };
    if m.tenants.multitenant() {
        families.push(strand_core::MetricFamily::counter(
            "strand_tenants_writes_refused_memory_total",
            "Writes refused because all tenants' data waiting for blocks was at its shared bound together (storage.max_unwritten_size, at most three quarters of limits.memory_size).",
            m.tenants.refused_for_memory() as f64,
        ));
    }
    families.extend(m.tenants.memory().metric_families());
    families.extend(m.remote.metric_families());
    if let Some(n) = &m.node {
        families.extend(n.metric_families());
    }
    families.extend(m.connections.metric_families());
    families.extend(m.authority.metric_families());
    if let Some(t) = &m.tls {
        families.extend(t.metric_families());
    }
    match metrics::encode(&families) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => strand_query::ApiError::Internal(format!("encoding metrics: {e}")).into_response(),
    }
}

/// `GET /readyz`: 200 when ingest is accepted right now, else 503 naming each reason (the
/// WAL cannot be written, a block write is failing, the disk budget is exceeded, the
/// sampling log fails or its buffer is nearly full).
async fn readyz(State(m): State<Arc<MetricSources>>) -> axum::response::Response {
    let mut reasons = Vec::new();
    reasons.extend(m.tenants.memory().not_ready(m.tenants.max_request_bytes()));
    for stack in m.tenants.all() {
        let mut mine = stack.store.not_ready().await;
        mine.extend(stack.pipeline.not_ready());
        if m.tenants.multitenant() {
            reasons.extend(mine.into_iter().map(|r| format!("tenant {}: {r}", stack.tenant)));
        } else {
            reasons.extend(mine);
        }
    }
    if reasons.is_empty() {
        axum::Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        let body = serde_json::json!({ "status": "not ready", "reasons": reasons });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

/// Writes the bound addresses as JSON to `path` (atomically), for scripts and tests that
/// start `strand` on port 0.
pub fn write_listen_info(path: &PathBuf, addrs: &BoundAddrs) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(addrs)?)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        // Start from the common soft limit (when the hard one allows more).
        // An unlimited hard limit cannot be a soft one on every system: not tried then.
        let Some(hard) = getrlimit(Resource::Nofile).maximum else { return };
        if hard > 1024 {
            setrlimit(Resource::Nofile, Rlimit { current: Some(1024), maximum: Some(hard) })
                .expect("lowered");
        }
        let (before, after) = super::raise_open_files_limit().expect("raised");
        if hard > 1024 {
            assert_eq!(before, Some(1024));
        }
        let now = getrlimit(Resource::Nofile);
        assert_eq!(after, now.current);
        assert_eq!(now.current, now.maximum, "soft limit = hard limit");
    }
}
