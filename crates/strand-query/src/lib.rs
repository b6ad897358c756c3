//! Strand's query API over the [`strand_core::TraceReader`] contract.
//!
//! Native JSON API (documented in `docs/api.md`):
//! - `GET /api/v1/traces/{trace_id}`: the whole trace as OTLP/JSON (`resourceSpans`), with
//!   `traceId` and `spanCount` beside it; 400 for a malformed id, 404 for an unknown one.
//! - `GET /healthz`, `GET /readyz`.
//!
//! Errors are `{"error": "..."}` with the matching HTTP status, mapped in one place
//! ([`ApiError`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use strand_core::{StoreError, TraceId, TraceReader};

/// An API failure; becomes an HTTP status and a JSON body.
#[derive(Debug)]
pub enum ApiError {
    /// A parameter is malformed (400).
    BadRequest(String),
    /// The thing asked for does not exist (404).
    NotFound(String),
    /// The backend failed (500).
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        (status, axum::Json(json!({ "error": msg }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// Shared state of the query routes.
#[derive(Clone)]
pub struct QueryState {
    reader: Arc<dyn TraceReader>,
}

/// The query routes.
pub fn router(reader: Arc<dyn TraceReader>) -> Router {
    Router::new()
        .route("/api/v1/traces/{trace_id}", get(get_trace))
        .route("/healthz", get(|| async { axum::Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(|| async { axum::Json(json!({ "status": "ready" })) }))
        .with_state(QueryState { reader })
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
    let trace =
        st.reader.get_trace(id).await?.ok_or_else(|| ApiError::NotFound(format!("trace {id} not found")))?;
    let body = TraceBody {
        trace_id: id.to_hex(),
        span_count: trace.spans.len(),
        resource_spans: strand_otlp::to_resource_spans(&trace.to_batch()),
    };
    Ok(axum::Json(body).into_response())
}

/// Body of `GET /api/v1/traces/{id}`: OTLP/JSON `resourceSpans` with the id and span count
/// beside it. Serialized directly, without an intermediate JSON value tree.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TraceBody {
    trace_id: String,
    span_count: usize,
    resource_spans: Vec<strand_otlp::proto::trace::v1::ResourceSpans>,
}
