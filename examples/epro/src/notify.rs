//! notify-service: consumes `patient-report.submitted` (durable JetStream consumer
//! `notify-service`) and sends the patient an SMS from a detached task, which outlives the
//! message handling (and the HTTP request that started it all) but stays in its trace.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt as _;
use strand_instrument::http_client::TracedRequest as _;
use tokio::task::JoinHandle;

use crate::data::{STREAM, SUBJECT};

/// Options.
#[derive(clap::Args)]
pub struct Args {
    /// NATS server URL.
    #[arg(long)]
    nats: String,
    /// The SMS gateway's URL (`POST` a JSON message).
    #[arg(long)]
    sms: String,
    /// Health endpoint (HTTP).
    #[arg(long)]
    health: SocketAddr,
    /// strand's OTLP/gRPC endpoint.
    #[arg(long)]
    strand: String,
    /// Lose the trace context here: `spawn` (the SMS task starts from a fresh context).
    #[arg(long = "break", value_enum)]
    breaks: Vec<crate::Break>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let _telemetry = crate::telemetry::init("notify-service", &args.strand)?;
    let js = jetstream::new(async_nats::connect(&args.nats).await?);
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["patient-report.>".into()],
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .get_or_create_consumer(
            "notify-service",
            jetstream::consumer::pull::Config {
                durable_name: Some("notify-service".into()),
                filter_subject: SUBJECT.into(),
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    // `/progress`: events handled and SMS tasks finished, so a launcher can wait for the
    // notifications a load started instead of guessing how long they take.
    let handled_events = Arc::new(AtomicU64::new(0));
    let sms_done = Arc::new(AtomicU64::new(0));
    let progress = {
        let (handled, done) = (handled_events.clone(), sms_done.clone());
        move || async move {
            axum::Json(serde_json::json!({
                "handled": handled.load(Ordering::SeqCst),
                "sms_done": done.load(Ordering::SeqCst),
            }))
        }
    };
    let health_app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/progress", axum::routing::get(progress));
    // Bound here, before serving, so a taken port ends the process.
    let health =
        tokio::spawn(crate::telemetry::serve_on(crate::telemetry::bind(args.health).await?, health_app));
    let http = reqwest::Client::new();
    let mut in_flight: Vec<JoinHandle<()>> = Vec::new();
    let break_spawn = args.breaks.contains(&crate::Break::Spawn);
    let shutdown = crate::telemetry::shutdown();
    tokio::pin!(shutdown);
    loop {
        let msg = tokio::select! {
            _ = &mut shutdown => break,
            next = messages.next() => match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "receiving from jetstream");
                    continue;
                }
                None => break,
            },
        };
        let (http, sms, payload) = (http.clone(), args.sms.clone(), msg.payload.clone());
        let sms_done = sms_done.clone();
        let handled = strand_instrument::nats::process_jetstream(&msg, move || async move {
            let event: serde_json::Value = serde_json::from_slice(&payload)?;
            tracing::info!(report_id = %event["report_id"], patient_id = %event["patient_id"], "notifying the patient");
            let sms_task = async move {
                let text = format!("Thank you, your report {} was received.", event["report_id"]);
                match http.post(&sms).json(&serde_json::json!({ "patient_id": event["patient_id"], "text": text })).send_traced().await {
                    Ok(r) if r.status().is_success() => tracing::info!(report_id = %event["report_id"], "sms sent"),
                    Ok(r) => tracing::error!(status = %r.status(), "sms gateway refused the message"),
                    Err(e) => tracing::error!(error = %e, "sms gateway unreachable"),
                }
                sms_done.fetch_add(1, Ordering::SeqCst);
            };
            let task = if break_spawn {
                spawn_without_context(sms_task)
            } else {
                strand_instrument::spawn_detached("send-sms", sms_task)
            };
            Ok::<_, anyhow::Error>(task)
        })
        .await;
        match handled {
            Ok(task) => in_flight.push(task),
            Err(e) => tracing::error!(error = %e, "bad patient-report event"),
        }
        if let Err(e) = msg.ack().await {
            tracing::warn!(error = %e, "ack failed");
        }
        handled_events.fetch_add(1, Ordering::SeqCst);
        in_flight.retain(|t| !t.is_finished());
    }
    // Let SMS tasks already started finish (their spans end properly), for a while.
    let _ = tokio::time::timeout(Duration::from_secs(5), futures_util::future::join_all(in_flight)).await;
    health.abort();
    Ok(())
}

/// `--break spawn`: the SMS task runs in a span started from an empty context, as a task
/// spawned with a fresh context (Go's `context.Background()`) does: it becomes a trace of
/// its own.
fn spawn_without_context(task: impl std::future::Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
    use opentelemetry::trace::{FutureExt as _, TraceContextExt as _};
    let cx = strand_instrument::start_span(
        "send-sms",
        opentelemetry::trace::SpanKind::Internal,
        Vec::new(),
        &opentelemetry::Context::new(),
    );
    tokio::spawn(async move {
        task.with_context(cx.clone()).await;
        cx.span().end();
    })
}
