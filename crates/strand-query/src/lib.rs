//! Strand's query APIs over the [`strand_core::TraceReader`] contract, all on one port:
//!
//! - native JSON under `/api/v1/` ([`native`]; documented in `docs/api.md`),
//! - Jaeger v1 JSON under `/api/` and Jaeger `api_v3` under `/api/v3/` ([`jaeger`]),
//! - the Tempo subset Grafana's Tempo data source uses ([`tempo`]), with TraceQL search
//!   ([`traceql`]),
//! - chain integrity: a trace's findings, `integrity=` searches, edge health ([`integrity`]),
//! - log records by trace and span, and log search, under `/api/v1/logs` ([`logs`]); traces
//!   carry their log counts (native) or their log lines as span logs (Jaeger v1).
//!
//! `GET /healthz` and `GET /readyz` are the server's (they ask the store and the sampler).
//!
//! Every parameter error names the parameter and says why (400); unknown traces are 404.
//! Limits and time ranges are bounded by [`QueryLimits`], and a response says when it was
//! bounded. Errors are shaped as each API's clients expect; the native API's are
//! `{"error": "..."}` ([`ApiError`]). A storage error's kind picks the status in one place:
//! a capability the backend lacks is 501, an overloaded or unavailable backend 429 or 503
//! with `Retry-After`, a query it rejects 400, anything else 500.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use strand_core::{ChainIntegrity, ErrorKind, LogStore, StoreError, TraceId, TraceReader};

pub mod integrity;
pub mod jaeger;
pub mod logs;
pub mod native;
pub mod params;
pub mod tempo;
pub mod traceql;

pub use params::QueryLimits;

/// An API failure; becomes an HTTP status and a JSON body.
#[derive(Debug)]
pub enum ApiError {
    /// A parameter is malformed (400).
    BadRequest(String),
    /// The thing asked for does not exist (404).
    NotFound(String),
    /// The storage backend does not offer this (501).
    NotImplemented(String),
    /// Too much in flight; retry after a second (429 with `Retry-After`).
    Overloaded(String),
    /// The backend is down or closing; retry after a second (503 with `Retry-After`).
    Unavailable(String),
    /// The backend failed (500).
    Internal(String),
}

/// Seconds a client is told to wait before retrying a 429 or 503.
const RETRY_AFTER_SECONDS: &str = "1";

impl ApiError {
    /// The HTTP status and message, for APIs that shape their own bodies.
    pub fn parts(self) -> (StatusCode, String) {
        match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::NotImplemented(m) => (StatusCode::NOT_IMPLEMENTED, m),
            ApiError::Overloaded(m) => (StatusCode::TOO_MANY_REQUESTS, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

/// Adds `Retry-After` to the answers a client should retry (429, 503).
fn with_retry_after(status: StatusCode, mut resp: Response) -> Response {
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, msg) = self.parts();
        with_retry_after(status, (status, axum::Json(json!({ "error": msg }))).into_response())
    }
}

/// How one API family writes an error body.
pub(crate) trait ErrorShape {
    /// The response for an error with this status and message.
    fn response(status: StatusCode, msg: String) -> Response;
}

/// An [`ApiError`] answered in the shape `S` of one API family (Jaeger's envelope,
/// api_v3's gateway error, Tempo's plain text).
pub(crate) struct Shaped<S>(ApiError, std::marker::PhantomData<S>);

impl<S> From<ApiError> for Shaped<S> {
    fn from(e: ApiError) -> Self {
        Self(e, std::marker::PhantomData)
    }
}

impl<S> From<StoreError> for Shaped<S> {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl<S: ErrorShape> IntoResponse for Shaped<S> {
    fn into_response(self) -> Response {
        let (status, msg) = self.0.parts();
        with_retry_after(status, S::response(status, msg))
    }
}

/// The one place a store error becomes an HTTP status (see [`ErrorKind`]).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e.kind() {
            ErrorKind::InvalidInput => ApiError::BadRequest(msg),
            ErrorKind::Unsupported => ApiError::NotImplemented(msg),
            ErrorKind::Overloaded => ApiError::Overloaded(msg),
            ErrorKind::Unavailable => ApiError::Unavailable(msg),
            ErrorKind::Internal => ApiError::Internal(msg),
        }
    }
}

/// Shared state of the query routes.
#[derive(Clone)]
pub struct QueryState {
    reader: Arc<dyn TraceReader>,
    limits: QueryLimits,
    /// The chain-integrity analyser, when analysis is on.
    integrity: Option<Arc<dyn ChainIntegrity>>,
    /// Log storage, when the backend keeps log records.
    logs: Option<Arc<dyn LogStore>>,
}

impl QueryState {
    /// The log records of a trace, for the trace views; `None` (with a warning in the
    /// server log when the read failed) when the backend keeps none or the read fails: a
    /// trace is still shown without its logs.
    pub(crate) async fn logs_of(&self, id: TraceId) -> Option<Vec<strand_core::StoredLog>> {
        match self.logs.as_ref()?.trace_logs(id, None).await {
            Ok(records) => Some(records),
            Err(e) => {
                tracing::warn!(trace_id = %id, error = %e, "reading the trace's log records failed");
                None
            }
        }
    }
}

/// The query routes. Without `integrity` (analysis off) traces carry no `integrity` and
/// `integrity=` searches and `/api/v1/integrity/edges` answer 501; without `logs` (a
/// backend that keeps none) `/api/v1/logs` answers 501 and traces carry no logs.
pub fn router(
    reader: Arc<dyn TraceReader>,
    limits: QueryLimits,
    integrity: Option<Arc<dyn ChainIntegrity>>,
    logs: Option<Arc<dyn LogStore>>,
) -> Router {
    Router::new()
        // native
        .route("/api/v1/traces/{trace_id}", get(get_trace))
        .route("/api/v1/search", get(native::search))
        .route("/api/v1/summaries", get(native::summaries))
        .route("/api/v1/services", get(native::services))
        .route("/api/v1/services/{service}/operations", get(native::operations))
        .route("/api/v1/attributes", get(native::attribute_names))
        .route("/api/v1/attributes/{key}/values", get(native::attribute_values))
        .route("/api/v1/dependencies", get(native::dependencies))
        .route("/api/v1/integrity/edges", get(integrity::edges))
        .route("/api/v1/logs", get(logs::logs))
        // Jaeger v1
        .route("/api/services", get(jaeger::services))
        .route("/api/services/{service}/operations", get(jaeger::service_operations))
        .route("/api/operations", get(jaeger::operations))
        .route("/api/traces", get(jaeger::find_traces))
        .route("/api/dependencies", get(jaeger::dependencies))
        .route(
            "/api/transform",
            axum::routing::post(jaeger::transform)
                .layer(axum::extract::DefaultBodyLimit::max(jaeger::MAX_TRANSFORM_BYTES)),
        )
        // Jaeger v1 and Tempo share `/api/traces/{id}`: Tempo clients ask for protobuf or
        // send Tempo's headers; see `traces_by_id`.
        .route("/api/traces/{trace_id}", get(traces_by_id))
        // Jaeger api_v3
        .route("/api/v3/services", get(jaeger::v3_services))
        .route("/api/v3/operations", get(jaeger::v3_operations))
        .route("/api/v3/traces", get(jaeger::v3_find_traces))
        .route("/api/v3/traces/{trace_id}", get(jaeger::v3_get_trace))
        .route("/api/v3/trace-summaries", get(jaeger::v3_summaries))
        // Tempo
        .route("/api/echo", get(tempo::echo))
        .route("/api/status/buildinfo", get(tempo::buildinfo))
        .route("/api/v2/traces/{trace_id}", get(tempo::get_trace_v2))
        .route("/api/search", get(tempo::search))
        .route("/api/search/tags", get(tempo::search_tags))
        .route("/api/v2/search/tags", get(tempo::search_tags_v2))
        .route("/api/search/tag/{name}/values", get(tempo::search_tag_values))
        .route("/api/v2/search/tag/{name}/values", get(tempo::search_tag_values_v2))
        .with_state(QueryState { reader, limits, integrity, logs })
}

/// `prettyPrint=true` (Jaeger's query parameter): a JSON answer is indented. A middleware
/// (`axum::middleware::from_fn`) for the whole query port, so every API's answers honour it.
pub async fn pretty_print(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let wanted = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.eq_ignore_ascii_case("prettyPrint=true")));
    let response = next.run(request).await;
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !wanted || !json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Query answers are built whole in memory, so collecting one only moves its bytes.
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let pretty = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| serde_json::to_vec_pretty(&v).ok());
    match pretty {
        Some(p) => {
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(p))
        }
        None => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}

/// `/api/traces/{id}` is Jaeger v1's and Tempo's path. A request that accepts protobuf
/// (Grafana's Tempo data source) or passes `?format=tempo` gets Tempo's answer; everything
/// else gets Jaeger's envelope.
async fn traces_by_id(
    state: State<QueryState>,
    path: Path<String>,
    headers: axum::http::HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let tempo_format = raw.as_deref().is_some_and(|q| q.split('&').any(|kv| kv == "format=tempo"));
    let accepts = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if tempo_format || accepts.contains("protobuf") {
        tempo::get_trace(state, path, headers).await.into_response()
    } else {
        jaeger::get_trace(state, path).await.into_response()
    }
}

/// Parses a trace id from a path: 32 hex characters, either case, not all zero.
pub fn parse_trace_id(raw: &str) -> Result<TraceId, ApiError> {
    raw.parse::<TraceId>()
        .map_err(|e| ApiError::BadRequest(format!("invalid trace id `{}`: {e}", truncate(raw, 64))))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

async fn get_trace(State(st): State<QueryState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = parse_trace_id(&raw)?;
    let mut trace =
        st.reader.get_trace(id).await?.ok_or_else(|| ApiError::NotFound(format!("trace {id} not found")))?;
    let integrity = integrity::of_trace(&st, &trace).await;
    let truncated = st.limits.cut_trace(&mut trace);
    let logs = st.logs_of(id).await;
    let span_log_counts = logs.as_ref().map(|logs| {
        let mut counts = std::collections::BTreeMap::new();
        for s in logs.iter().filter_map(|l| l.record.span_id) {
            *counts.entry(s.to_hex()).or_insert(0usize) += 1;
        }
        counts
    });
    let body = TraceBody {
        trace_id: id.to_hex(),
        span_count: trace.spans.len(),
        log_count: logs.as_ref().map(Vec::len),
        span_log_counts,
        integrity: integrity.as_ref().map(integrity::IntegrityJson::from),
        truncated: truncated.map(|cut| TruncatedJson {
            stored_spans: cut.stored,
            returned_spans: cut.returned,
            message: cut.message(),
        }),
        resource_spans: strand_otlp::to_resource_spans(&trace.to_batch()),
    };
    Ok(axum::Json(body).into_response())
}

/// `truncated` of a trace cut to `query.max_trace_spans`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TruncatedJson {
    stored_spans: usize,
    returned_spans: usize,
    message: String,
}

/// Body of `GET /api/v1/traces/{id}`: OTLP/JSON `resourceSpans` with the id and span count
/// beside it. Serialized directly, without an intermediate JSON value tree.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TraceBody {
    trace_id: String,
    span_count: usize,
    /// Log records of the trace (absent when the backend keeps no logs or reading them
    /// failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    log_count: Option<usize>,
    /// Log records per span id that has any (records without a span id are only counted
    /// in `logCount`).
    #[serde(skip_serializing_if = "Option::is_none")]
    span_log_counts: Option<std::collections::BTreeMap<String, usize>>,
    /// Chain integrity (absent when analysis is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    integrity: Option<integrity::IntegrityJson>,
    /// Present when the trace has more spans than `query.max_trace_spans`: `spanCount` and
    /// `resourceSpans` then hold its earliest spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<TruncatedJson>,
    resource_spans: Vec<strand_otlp::proto::trace::v1::ResourceSpans>,
}
