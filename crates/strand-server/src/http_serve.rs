//! Serving an axum app on a [`GuardedListener`] the way `axum::serve` does, plus hyper's
//! HTTP/1 header-read timeout: `axum::serve` gives hyper no timer, so that timeout is off,
//! and a client trickling a request's header block a byte at a time (never idle, so the
//! idle timeout never fires) could hold a connection slot for as long as it kept sending.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

use crate::listener::GuardedListener;

/// Serves `app` on `listener` until `stop` completes, then lets open connections finish
/// their requests (graceful shutdown) and returns. An HTTP/1 connection that waits
/// `header_timeout` for a request's whole header block is closed; hyper starts that clock
/// when it starts waiting for a request, so it also closes keep-alive connections left
/// that long without one.
pub async fn serve(
    mut listener: GuardedListener,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    header_timeout: Duration,
) {
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        stop.await;
        drop(signal_rx);
    });
    let (close_tx, close_rx) = watch::channel(());
    loop {
        let (io, _) = tokio::select! {
            conn = axum::serve::Listener::accept(&mut listener) => conn,
            _ = signal_tx.closed() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let (signal_tx, close_rx) = (signal_tx.clone(), close_rx.clone());
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
            let mut signalled = pin!(signal_tx.closed());
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
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}
