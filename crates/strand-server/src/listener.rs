//! The listeners' guard (every HTTP listener and OTLP/gRPC): at most `connections.max_per_listener` open connections per
//! listener (more are closed at once, counted and logged), and connections that neither
//! send nor receive a byte for `connections.idle_timeout` are closed. Together with the
//! receivers' body timeout and the memory budget this keeps slow, idle or abandoned clients
//! from holding the server's descriptors and stopping other clients.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tracing::warn;

/// Counters of every guarded listener, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections closed at once because their listener was at its cap.
    pub refused: AtomicU64,
    /// Connections closed after `idle_timeout` without a byte either way.
    pub idle_closed: AtomicU64,
    /// Connections open now, all guarded listeners.
    pub open: AtomicU64,
    /// Connections closed because their TLS handshake failed or timed out.
    pub tls_failed: AtomicU64,
}

impl ConnectionStats {
    /// The counters as metric families.
    pub fn metric_families(&self) -> Vec<strand_core::MetricFamily> {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        vec![
            strand_core::MetricFamily::gauge(
                "strand_http_connections_open",
                "Open connections of the TCP listeners (OTLP gRPC and HTTP, Jaeger, Zipkin, query and UI, remote sampling).",
                c(&self.open),
            ),
            strand_core::MetricFamily::counter(
                "strand_http_connections_refused_total",
                "Connections closed at once because their listener had connections.max_per_listener open.",
                c(&self.refused),
            ),
            strand_core::MetricFamily::counter(
                "strand_http_connections_idle_closed_total",
                "Connections closed after connections.idle_timeout without a byte either way.",
                c(&self.idle_closed),
            ),
            strand_core::MetricFamily::counter(
                "strand_tls_handshake_failures_total",
                "Connections closed because their TLS handshake failed or took longer than connections.header_read_timeout.",
                c(&self.tls_failed),
            ),
        ]
    }
}

/// A TCP listener for `axum::serve` with a connection cap and an idle timeout.
pub struct GuardedListener {
    inner: TcpListener,
    what: &'static str,
    slots: Arc<Semaphore>,
    max: usize,
    idle: Duration,
    stats: Arc<ConnectionStats>,
    /// When a refusal was last logged (refusals are logged at most once a minute).
    last_warned: Mutex<Option<Instant>>,
}

impl GuardedListener {
    /// Guards `inner` (named `what` in logs).
    pub fn new(
        inner: TcpListener,
        what: &'static str,
        max_connections: usize,
        idle: Duration,
        stats: Arc<ConnectionStats>,
    ) -> Self {
        let max = max_connections.max(1);
        Self {
            inner,
            what,
            slots: Arc::new(Semaphore::new(max)),
            max,
            idle,
            stats,
            last_warned: Mutex::new(None),
        }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    self.stats.open.fetch_add(1, Ordering::Relaxed);
                    return (GuardedStream::new(stream, permit, self.idle, self.stats.clone()), addr);
                }
                Err(_) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    let mut last = self.last_warned.lock();
                    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        *last = Some(Instant::now());
                        warn!(
                            listener = self.what,
                            max = self.max,
                            peer = %addr,
                            "closing new connections: the listener has connections.max_per_listener open"
                        );
                    }
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl GuardedListener {
    /// The counters this listener adds to.
    pub fn stats(&self) -> Arc<ConnectionStats> {
        self.stats.clone()
    }
}

/// A guarded connection: holds its listener's slot, and fails reads once it has been idle
/// (no byte in or out) for the idle timeout, which makes the server close it.
pub struct GuardedStream {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    stats: Arc<ConnectionStats>,
}

impl GuardedStream {
    fn new(
        inner: TcpStream,
        slot: OwnedSemaphorePermit,
        idle: Duration,
        stats: Arc<ConnectionStats>,
    ) -> Self {
        let deadline = Box::pin(tokio::time::sleep(idle));
        Self { inner, _slot: slot, idle, deadline, stats }
    }

    fn active(&mut self) {
        self.deadline.as_mut().reset(tokio::time::Instant::now() + self.idle);
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.active();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no byte either way for {} s", this.idle.as_secs_f64()),
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.active();
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.active();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
