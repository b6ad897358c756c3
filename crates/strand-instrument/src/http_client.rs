//! HTTP client spans for `reqwest`: a CLIENT span per request, the trace sent along in
//! `traceparent`/`tracestate`/`baggage`.
//!
//! ```no_run
//! use strand_instrument::http_client::TracedRequest as _;
//! # async fn f(client: reqwest::Client) -> reqwest::Result<()> {
//! let resp = client.get("http://user-service/patients/42").send_traced().await?;
//! # Ok(()) }
//! ```

use std::future::Future;

use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};

use crate::http_server::{method_name, protocol_version};
use crate::propagation::{HeaderInjector, inject};
use crate::start_span;

/// Sending a `reqwest` request inside a CLIENT span.
pub trait TracedRequest {
    /// Like `send()`, inside a CLIENT span named after the method (semantic conventions:
    /// method, `server.address`/`server.port`, `url.full`, response status), child of the
    /// current span, with the trace context injected into the request's headers. Status
    /// error on a transport error and on 4xx/5xx responses.
    fn send_traced(self) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send;
}

impl TracedRequest for reqwest::RequestBuilder {
    fn send_traced(self) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send {
        let (client, request) = self.build_split();
        async move {
            let mut request = request?;
            let method = method_name(request.method());
            let url = request.url();
            let mut attrs = vec![KeyValue::new("http.request.method", method)];
            if let Some(host) = url.host_str() {
                attrs.push(KeyValue::new("server.address", host.to_owned()));
            }
            if let Some(port) = url.port_or_known_default() {
                attrs.push(KeyValue::new("server.port", i64::from(port)));
            }
            let mut full = url.clone();
            let _ = full.set_username("");
            let _ = full.set_password(None);
            attrs.push(KeyValue::new("url.full", full.to_string()));
            let cx = start_span(method, SpanKind::Client, attrs, &Context::current());
            inject(&cx, &mut HeaderInjector(request.headers_mut()));
            let result = client.execute(request).with_context(cx.clone()).await;
            let span = cx.span();
            match &result {
                Ok(resp) => {
                    let status = resp.status();
                    span.set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status.as_u16()),
                    ));
                    span.set_attribute(KeyValue::new(
                        "network.protocol.version",
                        protocol_version(resp.version()),
                    ));
                    if status.is_client_error() || status.is_server_error() {
                        span.set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
                        span.set_status(Status::error(""));
                    }
                }
                Err(e) => {
                    let kind = if e.is_timeout() {
                        "timeout"
                    } else if e.is_connect() {
                        "connect"
                    } else {
                        "request"
                    };
                    span.set_attribute(KeyValue::new("error.type", kind));
                    span.set_status(Status::error(e.to_string()));
                }
            }
            span.end();
            result
        }
    }
}
