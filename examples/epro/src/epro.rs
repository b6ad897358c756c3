//! epro-service: gRPC `epro.Reports/Submit` — validates the answers (0–10 each, 1–50 of
//! them), scores the report and stores it through data-service (gRPC).

use std::net::SocketAddr;

use tonic::Status;

use crate::rpc::{
    ReportsService, STORE, SUBMIT, StoreReport, Stored, SubmitReport, Submitted, UnaryServer, channel, unary,
};

/// Options.
#[derive(clap::Args)]
pub struct Args {
    /// Listen address.
    #[arg(long)]
    listen: SocketAddr,
    /// data-service gRPC URL.
    #[arg(long)]
    data: String,
    /// strand's OTLP/gRPC endpoint.
    #[arg(long)]
    strand: String,
    /// Health endpoint (HTTP).
    #[arg(long)]
    health: SocketAddr,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let _telemetry = crate::telemetry::init("epro-service", &args.strand)?;
    let data = channel(&args.data)?;
    let service = ReportsService(UnaryServer::new("epro.Reports", SUBMIT, move |req: SubmitReport| {
        let data = data.clone();
        async move {
            if req.answers.is_empty() || req.answers.len() > 50 || req.answers.iter().any(|a| *a > 10) {
                tracing::warn!(patient_id = req.patient_id, "invalid answers");
                return Err(Status::invalid_argument("answers must be 1 to 50 scores of 0 to 10"));
            }
            let score = req.answers.iter().sum();
            tracing::info!(patient_id = req.patient_id, score, "report validated");
            let store = StoreReport {
                patient_id: req.patient_id,
                score,
                answers_json: serde_json::to_string(&req.answers).unwrap_or_default(),
            };
            let stored: Stored = unary(&data, STORE, store).await.map_err(|s| {
                tracing::error!(error = s.message(), "storing the report failed");
                Status::internal(format!("storing the report failed: {}", s.message()))
            })?;
            Ok(Submitted { report_id: stored.report_id, score })
        }
    }));
    crate::telemetry::serve_grpc(args.listen, args.health, service, false).await
}
