//! gateway: `POST /reports` `{"patient_id": 42, "answers": [3, 5, 8]}` → checks the patient
//! with user-service (HTTP), submits to epro-service (gRPC), answers
//! `202 {"report_id", "score", "trace_id"}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use strand_instrument::grpc::GrpcService;
use strand_instrument::http_client::TracedRequest as _;
use strand_instrument::http_server::HttpServerLayer;
use tonic::transport::Channel;

use crate::rpc::{SUBMIT, SubmitReport, Submitted, channel, unary};

/// Options.
#[derive(clap::Args)]
pub struct Args {
    /// Listen address.
    #[arg(long)]
    listen: SocketAddr,
    /// user-service base URL.
    #[arg(long)]
    users: String,
    /// epro-service gRPC URL.
    #[arg(long)]
    epro: String,
    /// strand's OTLP/gRPC endpoint.
    #[arg(long)]
    strand: String,
}

struct Deps {
    http: reqwest::Client,
    users: String,
    epro: GrpcService<Channel>,
}

#[derive(serde::Deserialize)]
struct Report {
    patient_id: u64,
    answers: Vec<u32>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let _telemetry = crate::telemetry::init("gateway", &args.strand)?;
    let deps = Arc::new(Deps { http: reqwest::Client::new(), users: args.users, epro: channel(&args.epro)? });
    let app = Router::new()
        .route("/reports", post(submit))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(deps)
        .layer(HttpServerLayer::new());
    crate::telemetry::serve_http(args.listen, app).await
}

type Reply = (StatusCode, Json<serde_json::Value>);

fn trace_id() -> String {
    strand_instrument::logs::current_ids().map(|(t, _)| t).unwrap_or_default()
}

async fn submit(State(deps): State<Arc<Deps>>, Json(report): Json<Report>) -> Reply {
    tracing::info!(patient_id = report.patient_id, answers = report.answers.len(), "report received");
    let url = format!("{}/patients/{}", deps.users, report.patient_id);
    match deps.http.get(url).send_traced().await {
        Ok(r) if r.status() == StatusCode::NOT_FOUND => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": "unknown patient", "trace_id": trace_id() })),
            );
        }
        Ok(r) if !r.status().is_success() => {
            return fail(format!("user-service answered {}", r.status()));
        }
        Ok(_) => {}
        Err(e) => return fail(format!("user-service unreachable: {e}")),
    }
    let req = SubmitReport { patient_id: report.patient_id, answers: report.answers };
    match unary::<_, Submitted>(&deps.epro, SUBMIT, req).await {
        Ok(done) => {
            tracing::info!(report_id = done.report_id, score = done.score, "report accepted");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "report_id": done.report_id, "score": done.score, "trace_id": trace_id() })),
            )
        }
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            tracing::warn!(reason = status.message(), "report rejected");
            (StatusCode::BAD_REQUEST, Json(json!({ "error": status.message(), "trace_id": trace_id() })))
        }
        Err(status) => fail(format!("epro-service: {}", status.message())),
    }
}

fn fail(msg: String) -> Reply {
    tracing::error!(error = %msg, "report submission failed");
    (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": msg, "trace_id": trace_id() })))
}
