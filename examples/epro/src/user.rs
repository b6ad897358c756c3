//! user-service: `GET /patients/{id}` — patients 1 to 10,000 exist.

use std::net::SocketAddr;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use strand_instrument::http_server::HttpServerLayer;

/// Options.
#[derive(clap::Args)]
pub struct Args {
    /// Listen address.
    #[arg(long)]
    listen: SocketAddr,
    /// strand's OTLP/gRPC endpoint.
    #[arg(long)]
    strand: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let _telemetry = crate::telemetry::init("user-service", &args.strand)?;
    let app = Router::new()
        .route("/patients/{id}", get(patient))
        .route("/healthz", get(|| async { "ok" }))
        .layer(HttpServerLayer::new());
    crate::telemetry::serve_http(args.listen, app).await
}

async fn patient(
    Path(id): Path<u64>,
) -> Result<Json<serde_json::Value>, (StatusCode, Json<serde_json::Value>)> {
    if (1..=10_000).contains(&id) {
        tracing::info!(patient_id = id, "patient found");
        Ok(Json(
            serde_json::json!({ "id": id, "name": format!("patient {id}"), "phone": format!("+4670{id:07}") }),
        ))
    } else {
        tracing::warn!(patient_id = id, "unknown patient");
        Err((StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": format!("no patient {id}") }))))
    }
}
