//! What every service shares: telemetry set-up from `--strand` and a shutdown signal.

use std::time::Duration;

use strand_instrument::{TelemetryConfig, TelemetryGuard};

/// Telemetry for `service` exporting spans and log records over OTLP/gRPC to `strand` (the
/// `OTEL_*` variables win), batching every 200 ms so the demo's traces show up quickly.
pub fn init(service: &str, strand: &str) -> anyhow::Result<TelemetryGuard> {
    let mut cfg = TelemetryConfig::new(service);
    cfg.endpoint = Some(strand.to_owned());
    cfg.service_version = Some(env!("CARGO_PKG_VERSION").to_owned());
    cfg.resource.insert("deployment.environment.name".into(), "demo".into());
    cfg.batch.scheduled_delay = Duration::from_millis(200);
    cfg.logs.export = true;
    Ok(strand_instrument::init(cfg.with_env()?)?)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Serves an axum router until shutdown.
pub async fn serve_http(listen: std::net::SocketAddr, app: axum::Router) -> anyhow::Result<()> {
    serve_on(bind(listen).await?, app).await
}

/// Binds `listen`, failing with the address when it is taken (a service whose health
/// port is taken must exit, not run on while another process answers its health checks).
pub async fn bind(listen: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "listening");
    Ok(listener)
}

/// Serves `app` on a bound listener until shutdown.
pub async fn serve_on(listener: tokio::net::TcpListener, app: axum::Router) -> anyhow::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

/// Serves one gRPC service (traced by `GrpcServerLayer`) until shutdown, with `GET /healthz`
/// on `health` for the launcher.
pub async fn serve_grpc<S>(
    listen: std::net::SocketAddr,
    health: std::net::SocketAddr,
    service: S,
    drop_metadata: bool,
) -> anyhow::Result<()>
where
    S: tower::Service<
            axum::http::Request<tonic::body::Body>,
            Response = axum::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let health_app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    // Bound here, before serving, so a taken port ends the process.
    let health = tokio::spawn(serve_on(bind(health).await?, health_app));
    tracing::info!(%listen, "listening");
    // `--break grpc`: a middleware that drops the trace-context metadata before the server
    // layer could extract it (as a proxy stripping unknown headers would).
    let strip = tower::util::MapRequestLayer::new(move |mut req: axum::http::Request<tonic::body::Body>| {
        if drop_metadata {
            for h in ["traceparent", "tracestate", "baggage"] {
                req.headers_mut().remove(h);
            }
        }
        req
    });
    tonic::transport::Server::builder()
        .layer(strip)
        .layer(strand_instrument::grpc::GrpcServerLayer)
        .add_service(service)
        .serve_with_shutdown(listen, shutdown())
        .await?;
    health.abort();
    Ok(())
}
