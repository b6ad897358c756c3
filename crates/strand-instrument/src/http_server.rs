//! HTTP server spans for axum (any tower `Service<http::Request<_>>`).
//!
//! [`HttpServerLayer`] reads `traceparent`/`tracestate`/`baggage` from the request, starts a
//! SERVER span named `METHOD route` (axum's matched route template, e.g.
//! `GET /patients/{id}`, never the raw path), makes it current for the handler, and ends
//! it with the response: HTTP semantic-convention attributes (method, route, path, scheme,
//! protocol version, status, client address, user agent, body sizes when declared), error
//! status on 5xx, on a service error and on a panic (which then continues unwinding).
//! Add it with `Router::layer` after the routes, so the route is known.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use axum::extract::{ConnectInfo, MatchedPath};
use futures_util::FutureExt as _;
use opentelemetry::KeyValue;
use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _};

use crate::propagation::{HeaderExtractor, extract};
use crate::{CachedTracer, start_span_with};

/// The layer; see the module docs. It takes the tracer from the global provider at the
/// first request, so call [`crate::init`] before serving.
#[derive(Debug, Clone, Default)]
pub struct HttpServerLayer {
    tracer: CachedTracer,
}

impl HttpServerLayer {
    /// A layer for `Router::layer`.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> tower::Layer<S> for HttpServerLayer {
    type Service = HttpServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpServerService { inner, tracer: self.tracer.clone() }
    }
}

/// The service [`HttpServerLayer`] wraps around a route.
#[derive(Debug, Clone)]
pub struct HttpServerService<S> {
    inner: S,
    tracer: CachedTracer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The semantic conventions' method value: known methods as they are, others `_OTHER`.
pub(crate) fn method_name(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::TRACE => "TRACE",
        http::Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

pub(crate) fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "",
    }
}

fn content_length(h: &http::HeaderMap) -> Option<i64> {
    h.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

impl<S, B, R> tower::Service<http::Request<B>> for HttpServerService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
    B: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let parent = extract(&HeaderExtractor(req.headers()));
        let method = method_name(req.method());
        let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
        let name = match &route {
            Some(r) => format!("{method} {r}"),
            None => method.to_owned(),
        };
        // What a sampler may look at goes in at the start; the rest only when recording.
        let mut attrs = Vec::with_capacity(5);
        attrs.push(KeyValue::new("http.request.method", method));
        if let Some(r) = route {
            attrs.push(KeyValue::new("http.route", r));
        }
        attrs.push(KeyValue::new("url.path", req.uri().path().to_owned()));
        attrs.push(KeyValue::new(
            "url.scheme",
            if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) { "https" } else { "http" },
        ));
        if let Some(host) = req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()) {
            let host =
                host.rsplit_once(':').map_or(host, |(h, p)| if p.parse::<u16>().is_ok() { h } else { host });
            attrs.push(KeyValue::new("server.address", host.to_owned()));
        }
        let cx = start_span_with(self.tracer.get(), name, SpanKind::Server, attrs, &parent);
        if cx.span().is_recording() {
            let span = cx.span();
            let mut more = Vec::with_capacity(5);
            more.push(KeyValue::new("network.protocol.version", protocol_version(req.version())));
            if let Some(ua) = req.headers().get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()) {
                more.push(KeyValue::new("user_agent.original", ua.to_owned()));
            }
            if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
                more.push(KeyValue::new("client.address", addr.ip().to_string()));
                more.push(KeyValue::new("client.port", i64::from(addr.port())));
            }
            if let Some(n) = content_length(req.headers()) {
                more.push(KeyValue::new("http.request.body.size", n));
            }
            span.set_attributes(more);
        }
        // Drive the service that was made ready; leave a fresh clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // axum's services do their work when polled, inside `with_context` below.
        let fut = inner.call(req);
        Box::pin(async move {
            let outcome = AssertUnwindSafe(fut.with_context(cx.clone())).catch_unwind().await;
            let span = cx.span();
            match outcome {
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    span.set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status.as_u16()),
                    ));
                    if let Some(n) = content_length(resp.headers()) {
                        span.set_attribute(KeyValue::new("http.response.body.size", n));
                    }
                    if status.is_server_error() {
                        span.set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
                        span.set_status(Status::error(""));
                    }
                    span.end();
                    Ok(resp)
                }
                Ok(Err(e)) => {
                    span.set_attribute(KeyValue::new("error.type", "service_error"));
                    span.set_status(Status::error(e.to_string()));
                    span.end();
                    Err(e)
                }
                Err(panic) => {
                    let msg = panic_message(&*panic);
                    span.set_attribute(KeyValue::new("error.type", "panic"));
                    span.set_status(Status::error(format!("handler panicked: {msg}")));
                    span.end();
                    std::panic::resume_unwind(panic)
                }
            }
        })
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
