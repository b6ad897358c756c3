//! Serving an axum app on a [`GuardedListener`] the way `axum::serve` does, plus hyper's
//! HTTP/1 header-read timeout, TLS, and the peer's address in every request.
//!
//! `axum::serve` gives hyper no timer, so that timeout is off, and a client trickling a
//! request's header block a byte at a time (never idle, so the idle timeout never fires)
//! could hold a connection slot for as long as it kept sending. HTTP/1 and HTTP/2 (gRPC)
//! are told apart by hyper from the first bytes, so the OTLP/gRPC listener is served here
//! too.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::auth::Peer;
use crate::listener::GuardedListener;
use crate::tls::Tls;

/// How a listener's connections are served.
#[derive(Clone)]
pub struct Serving {
    /// An HTTP/1 connection that waits this long for a request's whole header block is
    /// closed; a TLS handshake gets as long.
    pub header_timeout: Duration,
    /// TLS, and whether this is an ingest listener (client certificates when configured).
    pub tls: Option<(Arc<Tls>, bool)>,
    /// Speak HTTP/2 only (the gRPC listener).
    pub http2_only: bool,
}

/// Serves `app` on `listener` until `stop` completes, then lets open connections finish
/// their requests (graceful shutdown) and returns. hyper starts the HTTP/1 header-read
/// clock when it starts waiting for a request, so it also closes keep-alive connections
/// left that long without one; HTTP/2 connections (gRPC) are closed by the listener's idle
/// timeout instead.
pub async fn serve(
    mut listener: GuardedListener,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    how: Serving,
) {
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        stop.await;
        drop(signal_rx);
    });
    let (close_tx, close_rx) = watch::channel(());
    let stats = listener.stats();
    loop {
        let (io, peer) = tokio::select! {
            conn = axum::serve::Listener::accept(&mut listener) => conn,
            _ = signal_tx.closed() => break,
        };
        let app = app.clone().map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            req
        });
        let (signal_tx, close_rx, how, stats) =
            (signal_tx.clone(), close_rx.clone(), how.clone(), stats.clone());
        tokio::spawn(async move {
            match &how.tls {
                None => serve_connection(io, app, &signal_tx, &how).await,
                Some((tls, ingest)) => {
                    let handshake = tls.acceptor(*ingest).accept(io);
                    match tokio::time::timeout(how.header_timeout, handshake).await {
                        Ok(Ok(io)) => serve_connection(io, app, &signal_tx, &how).await,
                        Ok(Err(e)) => {
                            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                        }
                    }
                }
            }
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}

async fn serve_connection<I, S>(io: I, app: S, signal: &watch::Sender<()>, how: &Serving)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(how.header_timeout);
    if how.http2_only {
        builder = builder.http2_only();
    }
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    let mut signalled = pin!(signal.closed());
    let mut shutting_down = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = &mut signalled, if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
