//! Jaeger remote sampling over HTTP: `GET /sampling?service=X` and `/api/sampling?service=X`
//! answer SDKs' remote samplers with the strategy
//! [`strand_sampling::runtime::remote::RemoteSampling`] holds for their service.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use strand_sampling::runtime::remote::RemoteSampling;

/// `GET /sampling` and `GET /api/sampling`.
pub fn router(remote: &Arc<RemoteSampling>) -> Router {
    Router::new()
        .route("/sampling", get(strategy))
        .route("/api/sampling", get(strategy))
        .with_state(remote.clone())
}

/// Answers with the strategy for the one `service` parameter (Jaeger: 400 unless it is
/// given exactly once).
async fn strategy(
    State(remote): State<Arc<RemoteSampling>>,
    params: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let bad = |msg: String| {
        remote.count_bad_request();
        (StatusCode::BAD_REQUEST, msg).into_response()
    };
    let params = match params {
        Ok(Query(p)) => p,
        Err(e) => return bad(format!("invalid query parameters: {e}")),
    };
    let mut services = params.iter().filter(|(k, _)| k == "service").map(|(_, v)| v);
    let service = match (services.next(), services.next()) {
        (Some(s), None) if !s.is_empty() => s,
        (Some(_), None) => return bad("'service' parameter must not be empty".into()),
        _ => return bad("'service' parameter must be provided once".into()),
    };
    axum::Json(remote.strategy_for(service)).into_response()
}
