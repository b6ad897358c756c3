//! data-service: gRPC `epro.Data/Store` — writes the report to SQLite (a CLIENT span per
//! statement) and publishes `patient-report.submitted` on NATS JetStream. With
//! `--fail-every K`, every K-th submission first writes to an archive table that does not
//! exist, so SQLite itself fails it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use opentelemetry::trace::{FutureExt as _, SpanKind, Status as SpanStatus, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use rusqlite::Connection;
use tonic::Status;

use crate::rpc::{DataService, STORE, StoreReport, Stored, UnaryServer};

/// Options.
#[derive(clap::Args)]
pub struct Args {
    /// gRPC listen address.
    #[arg(long)]
    listen: SocketAddr,
    /// Health endpoint (HTTP).
    #[arg(long)]
    health: SocketAddr,
    /// SQLite database file.
    #[arg(long)]
    db: PathBuf,
    /// NATS server URL.
    #[arg(long)]
    nats: String,
    /// Fail every K-th submission (0: never).
    #[arg(long, default_value_t = 0)]
    fail_every: u64,
    /// strand's OTLP/gRPC endpoint.
    #[arg(long)]
    strand: String,
    /// Lose the trace context here: `queue` (publish without the injected headers) or
    /// `grpc` (drop the incoming metadata before the server layer).
    #[arg(long = "break", value_enum)]
    breaks: Vec<crate::Break>,
}

/// The JetStream stream the demo's events go to.
pub const STREAM: &str = "PATIENT_REPORTS";
/// The event's subject.
pub const SUBJECT: &str = "patient-report.submitted";

type Db = Arc<Mutex<Connection>>;

/// Runs one statement on the blocking pool inside a CLIENT span named
/// `{operation} {table}` with the database semantic conventions.
async fn statement<T: Send + 'static>(
    db: &Db,
    operation: &'static str,
    table: &'static str,
    sql: &'static str,
    run: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
) -> rusqlite::Result<T> {
    let cx = strand_instrument::start_span(
        format!("{operation} {table}"),
        SpanKind::Client,
        vec![
            KeyValue::new("db.system.name", "sqlite"),
            KeyValue::new("db.operation.name", operation),
            KeyValue::new("db.collection.name", table),
            KeyValue::new("db.query.text", sql),
        ],
        &Context::current(),
    );
    let db = db.clone();
    let result = async {
        tokio::task::spawn_blocking(move || {
            let conn = db.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            run(&conn)
        })
        .await
        .unwrap_or_else(|e| Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))
    }
    .with_context(cx.clone())
    .await;
    if let Err(e) = &result {
        cx.span().set_attribute(KeyValue::new("error.type", "sqlite"));
        cx.span().set_status(SpanStatus::error(e.to_string()));
    }
    cx.span().end();
    result
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let _telemetry = crate::telemetry::init("data-service", &args.strand)?;
    let conn = Connection::open(&args.db)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE IF NOT EXISTS reports (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             patient_id INTEGER NOT NULL,
             score INTEGER NOT NULL,
             answers TEXT NOT NULL,
             created_at TEXT NOT NULL
         );",
    )?;
    let db: Db = Arc::new(Mutex::new(conn));
    let js = jetstream::new(async_nats::connect(&args.nats).await?);
    js.get_or_create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["patient-report.>".into()],
        ..Default::default()
    })
    .await?;
    let count = Arc::new(AtomicU64::new(0));
    let fail_every = args.fail_every;
    let break_queue = args.breaks.contains(&crate::Break::Queue);
    let service = DataService(UnaryServer::new("epro.Data", STORE, move |req: StoreReport| {
        let (db, js, count) = (db.clone(), js.clone(), count.clone());
        async move {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let internal = |e: rusqlite::Error| {
                tracing::error!(error = %e, patient_id = req.patient_id, "database statement failed");
                Status::internal(format!("database: {e}"))
            };
            if fail_every > 0 && n.is_multiple_of(fail_every) {
                let patient = req.patient_id as i64;
                statement(
                    &db,
                    "INSERT",
                    "reports_archive",
                    "INSERT INTO reports_archive (patient_id) VALUES (?1)",
                    move |c| c.execute("INSERT INTO reports_archive (patient_id) VALUES (?1)", [patient]),
                )
                .await
                .map_err(internal)?;
            }
            let (patient, score, answers) =
                (req.patient_id as i64, i64::from(req.score), req.answers_json.clone());
            let id = statement(
                &db,
                "INSERT",
                "reports",
                "INSERT INTO reports (patient_id, score, answers, created_at) VALUES (?1, ?2, ?3, datetime('now'))",
                move |c| {
                    c.execute(
                        "INSERT INTO reports (patient_id, score, answers, created_at) VALUES (?1, ?2, ?3, datetime('now'))",
                        rusqlite::params![patient, score, answers],
                    )?;
                    Ok(c.last_insert_rowid())
                },
            )
            .await
            .map_err(internal)?;
            let previous = statement(
                &db,
                "SELECT",
                "reports",
                "SELECT COUNT(*) FROM reports WHERE patient_id = ?1",
                move |c| {
                    c.query_row("SELECT COUNT(*) FROM reports WHERE patient_id = ?1", [patient], |row| {
                        row.get::<_, i64>(0)
                    })
                },
            )
            .await
            .map_err(internal)?;
            tracing::info!(report_id = id, patient_id = req.patient_id, previous, "report stored");
            let event =
                serde_json::json!({ "report_id": id, "patient_id": req.patient_id, "score": req.score });
            if break_queue {
                publish_without_context(&js, event.to_string().into()).await
            } else {
                strand_instrument::nats::publish_jetstream(
                    &js,
                    SUBJECT,
                    async_nats::HeaderMap::new(),
                    event.to_string().into(),
                )
                .await
                .map(|_| ())
                .map_err(|e| Status::unavailable(e.to_string()))
            }?;
            Ok(Stored { report_id: id as u64 })
        }
    }));
    let drop_metadata = args.breaks.contains(&crate::Break::Grpc);
    crate::telemetry::serve_grpc(args.listen, args.health, service, drop_metadata).await
}

/// `--break queue`: the PRODUCER span is recorded and its context injected into a header
/// map, but the message goes out with a fresh one — the mistake that loses the context on
/// a queue hop.
async fn publish_without_context(js: &jetstream::Context, payload: bytes::Bytes) -> Result<(), Status> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = strand_instrument::start_span(
        format!("send {SUBJECT}"),
        opentelemetry::trace::SpanKind::Producer,
        vec![
            opentelemetry::KeyValue::new("messaging.system", "nats"),
            opentelemetry::KeyValue::new("messaging.destination.name", SUBJECT),
            opentelemetry::KeyValue::new("messaging.operation.type", "send"),
        ],
        &opentelemetry::Context::current(),
    );
    let mut injected = std::collections::HashMap::new();
    strand_instrument::propagation::inject(&cx, &mut injected);
    let sent = async {
        let ack = js.publish(SUBJECT, payload).await.map_err(|e| Status::unavailable(e.to_string()))?;
        ack.await.map_err(|e| Status::unavailable(e.to_string()))
    }
    .await;
    if let Ok(ack) = &sent {
        cx.span().set_attribute(opentelemetry::KeyValue::new(
            "messaging.message.id",
            format!("{}:{}", ack.stream, ack.sequence),
        ));
    }
    cx.span().end();
    sent.map(|_| ())
}
