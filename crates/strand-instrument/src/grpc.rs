//! gRPC spans for tonic, as tower layers on the server and on the client channel.
//!
//! - [`GrpcServerLayer`] (`Server::builder().layer(GrpcServerLayer)`): SERVER span
//!   `package.Service/Method` parented to the caller's `traceparent` (gRPC metadata are HTTP/2
//!   headers), current while the method runs.
//! - [`GrpcClientLayer`] (`ServiceBuilder::new().layer(GrpcClientLayer).service(channel)`):
//!   CLIENT span, the trace injected into the request metadata.
//!
//! Both set `rpc.system`, `rpc.service`, `rpc.method` and `rpc.grpc.status_code`. The status
//! is read from the response headers, where tonic puts it when a call fails before sending
//! a message (every error a unary handler returns); a status sent only in trailers after a
//! streamed body counts as OK. Error status follows the conventions: every non-OK code on
//! the client; on the server UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
//! UNAVAILABLE and DATA_LOSS.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};

use crate::propagation::{HeaderExtractor, HeaderInjector, extract, inject};
use crate::start_span;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Server side; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcServerLayer;

/// Client side; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClientLayer;

impl<S> tower::Layer<S> for GrpcServerLayer {
    type Service = GrpcService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcService { inner, kind: SpanKind::Server }
    }
}

impl<S> tower::Layer<S> for GrpcClientLayer {
    type Service = GrpcService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcService { inner, kind: SpanKind::Client }
    }
}

/// The service either layer wraps.
#[derive(Debug, Clone)]
pub struct GrpcService<S> {
    inner: S,
    kind: SpanKind,
}

/// `(service, method)` from a gRPC path `/package.Service/Method`.
fn rpc_parts(path: &str) -> (String, String) {
    let p = path.trim_start_matches('/');
    match p.rsplit_once('/') {
        Some((svc, m)) => (svc.to_owned(), m.to_owned()),
        None => (p.to_owned(), String::new()),
    }
}

fn server_error(code: i32) -> bool {
    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcService<S>
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

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let (service, method) = rpc_parts(req.uri().path());
        let name = format!("{service}/{method}");
        let mut attrs = vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service),
            KeyValue::new("rpc.method", method),
        ];
        let kind = self.kind.clone();
        let cx = if kind == SpanKind::Server {
            let parent = extract(&HeaderExtractor(req.headers()));
            start_span(name, SpanKind::Server, attrs, &parent)
        } else {
            if let Some(host) = req.uri().host() {
                attrs.push(KeyValue::new("server.address", host.to_owned()));
            }
            if let Some(port) = req.uri().port_u16() {
                attrs.push(KeyValue::new("server.port", i64::from(port)));
            }
            let cx = start_span(name, SpanKind::Client, attrs, &Context::current());
            inject(&cx, &mut HeaderInjector(req.headers_mut()));
            cx
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = {
            let _attached = cx.clone().attach();
            inner.call(req)
        };
        Box::pin(async move {
            let result = fut.with_context(cx.clone()).await;
            let span = cx.span();
            match &result {
                Ok(resp) => {
                    let code = resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(0);
                    span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
                    let failed = if kind == SpanKind::Server { server_error(code) } else { code != 0 };
                    if failed {
                        let message = resp
                            .headers()
                            .get("grpc-message")
                            .and_then(|v| v.to_str().ok())
                            .map(crate::percent_decode)
                            .unwrap_or_default();
                        span.set_attribute(KeyValue::new("error.type", code.to_string()));
                        span.set_status(Status::error(message));
                    }
                }
                Err(e) => {
                    span.set_attribute(KeyValue::new("error.type", "transport"));
                    span.set_status(Status::error(e.to_string()));
                }
            }
            span.end();
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(rpc_parts("/epro.Reports/Submit"), ("epro.Reports".into(), "Submit".into()));
        assert_eq!(rpc_parts("/odd"), ("odd".into(), String::new()));
        assert_eq!(crate::percent_decode("patient%20not%20found"), "patient not found");
    }
}
