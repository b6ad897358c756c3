//! gRPC spans for tonic, as tower layers on the server and on the client channel.
//!
//! - [`GrpcServerLayer`] (`Server::builder().layer(GrpcServerLayer)`): SERVER span
//!   `package.Service/Method` parented to the caller's `traceparent` (gRPC metadata are HTTP/2
//!   headers), current while the method runs.
//! - [`GrpcClientLayer`] (`ServiceBuilder::new().layer(GrpcClientLayer).service(channel)`):
//!   CLIENT span, the trace injected into the request metadata.
//!
//! Both set `rpc.system`, `rpc.service`, `rpc.method` and `rpc.grpc.status_code`. The span
//! ends when the call's status is known: in the response headers (a call that fails before
//! any message, as tonic answers every error a unary handler returns) or in the trailers
//! after the last message; a body that ends or is dropped without one ends the span as it
//! is. Error status follows the conventions: every non-OK code on the client; on the server
//! UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS.

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
    type Response = http::Response<TracedBody<R>>;
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
            let mut end = CallEnd { cx: Some(cx.clone()), kind };
            match fut.with_context(cx).await {
                Ok(resp) => {
                    if resp.headers().contains_key("grpc-status") {
                        end.finish(resp.headers());
                    }
                    Ok(resp.map(|inner| TracedBody { inner, end }))
                }
                Err(e) => {
                    end.fail("transport", e.to_string());
                    Err(e)
                }
            }
        })
    }
}

/// Ends a call's span once, from the status in headers or trailers, or as it is when
/// dropped first.
struct CallEnd {
    cx: Option<Context>,
    kind: SpanKind,
}

impl CallEnd {
    fn finish(&mut self, headers: &http::HeaderMap) {
        let Some(cx) = self.cx.take() else { return };
        let span = cx.span();
        let code = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(2); // a status that does not parse is UNKNOWN
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
        let failed = if self.kind == SpanKind::Server { server_error(code) } else { code != 0 };
        if failed {
            let message = headers
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .map(crate::percent_decode)
                .unwrap_or_default();
            span.set_attribute(KeyValue::new("error.type", code.to_string()));
            span.set_status(Status::error(message));
        }
        span.end();
    }

    fn fail(&mut self, kind: &'static str, message: String) {
        if let Some(cx) = self.cx.take() {
            cx.span().set_attribute(KeyValue::new("error.type", kind));
            cx.span().set_status(Status::error(message));
            cx.span().end();
        }
    }
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        if let Some(cx) = self.cx.take() {
            cx.span().end();
        }
    }
}

pin_project_lite::pin_project! {
    /// A gRPC response body that ends the call's span when the status trailers pass.
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        end: CallEnd,
    }
}

impl<B: http_body::Body> http_body::Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.end.finish(trailers);
                }
            }
            Poll::Ready(Some(Err(_))) => this.end.fail("stream", "the response stream failed".into()),
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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
