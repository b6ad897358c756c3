//! Cross-origin requests from web pages (CORS), off unless `cors.allowed_origins` lists
//! origins: browser OTel SDKs exporting to the OTLP/HTTP receiver, and web apps reading the
//! query API. A preflight from a listed origin is answered here, before the token check
//! (browsers send preflights without credentials); a request from any other origin gets no
//! CORS header, so the browser keeps the answer from the page.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The origins allowed (`*` for any).
#[derive(Debug, Clone)]
pub struct Cors(pub Arc<Vec<String>>);

impl Cors {
    fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// The middleware.
pub async fn cors(State(cors): State<Cors>, req: Request, next: Next) -> Response {
    if cors.0.is_empty() {
        return next.run(req).await;
    }
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let Some(origin) = origin.filter(|o| cors.allows(o)) else {
        // Answers differ by origin once origins are listed: caches must key on it.
        let mut resp = next.run(req).await;
        resp.headers_mut().append(header::VARY, HeaderValue::from_static("Origin"));
        return resp;
    };
    let allow_origin = HeaderValue::from_str(&origin).unwrap_or(HeaderValue::from_static("null"));
    if req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(
                "authorization, content-type, content-encoding, accept, accept-encoding, x-scope-orgid",
            ),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        h.insert(
            header::VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        );
        return resp;
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after"));
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    resp
}
