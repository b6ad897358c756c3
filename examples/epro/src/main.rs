//! The patient-report demo system: a clinical report submission crossing five services,
//! each its own process, over real sockets:
//!
//! ```text
//! gateway (HTTP) ─▶ user-service (HTTP)
//!        └───────▶ epro-service (gRPC) ─▶ data-service (gRPC, SQLite) ─▶ NATS JetStream
//!                                                           notify-service ◀─┘ └─▶ send-sms task ─▶ SMS stub (HTTP)
//! ```
//!
//! `epro run --strand http://127.0.0.1:4317` starts them all (and `nats-server` when no
//! `--nats` is given); `--load N` submits N reports, `--fail-every K` makes every K-th
//! submission fail in data-service, and `--break queue|spawn|grpc` makes one boundary lose
//! the trace context the way real code does (see [`Break`]). Every service exports its
//! spans to strand and writes JSON log lines with trace ids.

mod data;
mod epro;
mod gateway;
mod launcher;
mod notify;
mod rpc;
mod telemetry;
mod user;

use clap::{Parser, Subcommand, ValueEnum};

/// A boundary where the demo loses the trace context on purpose, as real code does, so
/// Strand's chain-integrity analysis has something to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Break {
    /// data-service publishes inside its PRODUCER span but sends the message without the
    /// headers the span was injected into (notify-service starts a new trace).
    Queue,
    /// notify-service spawns the SMS task with a fresh context instead of the message's
    /// (the task starts a trace of its own).
    Spawn,
    /// A middleware in front of data-service's gRPC server drops the incoming metadata
    /// (the server starts a new trace).
    Grpc,
}

#[derive(Parser)]
#[command(name = "epro", about = "The patient-report demo system")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start every service (and nats-server) as its own process; optionally submit reports.
    Run(launcher::RunArgs),
    /// Submit reports to a running gateway.
    Load(launcher::LoadArgs),
    /// The HTTP entry point: POST /reports.
    Gateway(gateway::Args),
    /// Patients: GET /patients/{id}.
    UserService(user::Args),
    /// gRPC epro.Reports/Submit: validates and scores a report.
    EproService(epro::Args),
    /// gRPC epro.Data/Store: SQLite, then publishes patient-report.submitted.
    DataService(data::Args),
    /// Consumes patient-report.submitted and sends an SMS in a detached task.
    NotifyService(notify::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Run(a) => launcher::run(a).await,
            Command::Load(a) => launcher::load(a).await.map(|_| ()),
            Command::Gateway(a) => gateway::run(a).await,
            Command::UserService(a) => user::run(a).await,
            Command::EproService(a) => epro::run(a).await,
            Command::DataService(a) => data::run(a).await,
            Command::NotifyService(a) => notify::run(a).await,
        }
    })
}
