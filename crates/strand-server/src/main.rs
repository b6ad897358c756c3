//! The `strand` command: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use strand_server::config::{self, Sources};
use strand_server::search_cmd;

/// jemalloc rather than glibc's allocator: see docs/memory.md ("The allocator").
#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "strand", version, about = "OpenTelemetry-native distributed tracing: ingest, store, query")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print a trace from a running server as a tree.
    Trace(TraceArgs),
    /// Search traces on a running server.
    Search(SearchCli),
    /// List the services a running server has seen.
    Services(ListCli),
    /// Print service dependencies (caller -> callee edges).
    Deps(ListCli),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Bearer tokens for `auth.tokens`.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random token and the `auth.tokens` entry (its SHA-256) for the
    /// configuration. The server never stores the token itself.
    New(TokenNewArgs),
}

#[derive(Args)]
struct TokenNewArgs {
    /// Who holds it (shown in metrics and logs).
    #[arg(long, default_value = "my-token")]
    name: String,
    /// Scopes, comma-separated: write (ingest), read (query API and UI), admin, metrics.
    #[arg(long, default_value = "write,read", value_delimiter = ',')]
    scopes: Vec<String>,
    /// Tenants it may use when multi-tenancy is on, comma-separated (`*` for all).
    #[arg(long, value_delimiter = ',')]
    tenants: Vec<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (`data_dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// OTLP/gRPC listen address (`otlp.grpc_listen`).
    #[arg(long, value_name = "ADDR")]
    otlp_grpc_listen: Option<String>,
    /// OTLP/HTTP listen address (`otlp.http_listen`).
    #[arg(long, value_name = "ADDR")]
    otlp_http_listen: Option<String>,
    /// Jaeger thrift-over-HTTP listen address (`jaeger.thrift_http_listen`).
    #[arg(long, value_name = "ADDR")]
    jaeger_thrift_listen: Option<String>,
    /// Jaeger agent UDP (compact thrift) listen address (`jaeger.agent_listen`).
    #[arg(long, value_name = "ADDR")]
    jaeger_agent_listen: Option<String>,
    /// Jaeger agent UDP (binary thrift) listen address (`jaeger.agent_binary_listen`).
    #[arg(long, value_name = "ADDR")]
    jaeger_agent_binary_listen: Option<String>,
    /// Zipkin v2 listen address (`zipkin.listen`).
    #[arg(long, value_name = "ADDR")]
    zipkin_listen: Option<String>,
    /// Query API and UI listen address (`http_listen`).
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Set any configuration key: `--set storage.fsync=interval`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Tail sampling in one word: `errors-plus=5%` keeps every trace with an error span
    /// plus 5 % of the rest; `5%`; `all` (the default: keep everything).
    #[arg(long, value_name = "SHORTHAND")]
    sampling: Option<String>,
    /// YAML file with the `sampling:` section in the collector's `tail_sampling` syntax:
    /// the section's keys, a bare list of policies, a `tail_sampling:` block or a collector
    /// configuration holding one (`num_traces` and `expected_new_traces_per_sec` are ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "sampling")]
    sampling_config: Option<PathBuf>,
    /// Jaeger strategies file served to SDKs' remote samplers
    /// (`remote_sampling.strategies_file`).
    #[arg(long, value_name = "FILE")]
    sampling_strategies: Option<String>,
    /// Jaeger remote-sampling listen address (`remote_sampling.listen`).
    #[arg(long, value_name = "ADDR")]
    remote_sampling_listen: Option<String>,
    /// Store a few demo traces (an error, a slow one, a queue hop, a detached task) at start,
    /// to look around the UI without any instrumented service (`demo`).
    #[arg(long)]
    demo: bool,
    /// Server log format: `text` or `json` (`log_format`).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Listen on all interfaces instead of loopback (`listen_all`); beyond loopback the
    /// server needs `auth.tokens`, or `auth: none` written out.
    #[arg(long)]
    listen_all: bool,
    /// Role in a cluster (`cluster.role`): `all` (the single binary, the default),
    /// `receiver`, `ingester` or `querier`; see docs/cluster.md.
    #[arg(long, value_name = "ROLE")]
    role: Option<String>,
    /// Write the bound addresses as JSON to this file once listening.
    #[arg(long, value_name = "FILE")]
    listen_info_file: Option<PathBuf>,
}

#[derive(Args)]
struct TraceArgs {
    /// Trace id (32 hex characters).
    trace_id: String,
    #[command(flatten)]
    server: search_cmd::Remote,
    /// Print the server's JSON instead of a tree.
    #[arg(long)]
    json: bool,
    /// Print each span's log lines under it (with `--json`: add the trace's
    /// `/api/v1/logs` answer as `logs`).
    #[arg(long)]
    logs: bool,
}

#[derive(Args)]
struct SearchCli {
    /// Service of the matching span.
    #[arg(long)]
    service: Option<String>,
    /// Span name of the matching span.
    #[arg(long)]
    operation: Option<String>,
    /// Attribute filter KEY=VALUE on the matching span (repeatable; all must hold).
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    attrs: Vec<String>,
    /// Minimum duration of the matching span (`100ms`, `1.5s`).
    #[arg(long, value_name = "DURATION")]
    min_duration: Option<String>,
    /// Only traces where the matching span has status ERROR.
    #[arg(long)]
    errors: bool,
    /// How far back to search (`15m`, `24h`, `7d`); the last hour when neither this nor
    /// `--start` is given. The server bounds a search's range (`query.max_search_range`,
    /// default 7d) and says so when it does.
    #[arg(long, value_name = "DURATION", conflicts_with = "start")]
    since: Option<String>,
    #[command(flatten)]
    range: RangeArgs,
    /// Most traces to print.
    #[arg(long, default_value_t = 20)]
    limit: u64,
    /// Continue from a previous page.
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    server: search_cmd::Remote,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// An absolute time range.
#[derive(Args)]
struct RangeArgs {
    /// Start of the time range: RFC 3339 (`2026-01-31T12:00:00Z`) or Unix nanoseconds.
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// End of the time range (RFC 3339 or Unix nanoseconds); now when not given.
    #[arg(long, value_name = "TIME")]
    end: Option<String>,
}

#[derive(Args)]
struct ListCli {
    /// How far back to look (`1h`, `24h`, `30d`); all stored data when neither this nor
    /// `--start`/`--end` is given.
    #[arg(long, value_name = "DURATION", conflicts_with = "start")]
    since: Option<String>,
    #[command(flatten)]
    range: RangeArgs,
    #[command(flatten)]
    server: search_cmd::Remote,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Generate OTLP traffic against a server and report cost, size and latency.
    Ingest(strand_bench::ingest::IngestArgs),
    /// Load traffic as `ingest` does, then time trace lookups, searches and dependencies.
    Query(strand_bench::ingest::QueryArgs),
    /// Send the standard log profile to a server and report CPU and bytes per record and
    /// lookup and search latencies.
    Logs(strand_bench::logs::LogsArgs),
    /// Time the tail sampler in-process: memory per buffered span, CPU per span, decisions.
    Sampling(strand_bench::sampling::SamplingArgs),
    /// Chain integrity on labelled traffic, in-process: recall per kind of break, false
    /// alarms on complete traces, CPU per span.
    Integrity(strand_bench::integrity::IntegrityArgs),
    /// Open a huge trace in the web UI (headless Chromium) and time it.
    Ui(strand_bench::ui::UiArgs),
}

/// `strand serve --help` names each flag's default, read from the configuration's defaults
/// so the help cannot drift from them (the flags themselves have no clap default: a value
/// from the configuration file must win over an unset flag).
fn with_serve_defaults(cmd: clap::Command) -> clap::Command {
    let d = config::Config::default();
    let defaults = [
        ("data_dir", d.data_dir.display().to_string()),
        ("otlp_grpc_listen", d.otlp.grpc_listen.to_string()),
        ("otlp_http_listen", d.otlp.http_listen.to_string()),
        ("jaeger_thrift_listen", d.jaeger.thrift_http_listen.to_string()),
        ("jaeger_agent_listen", d.jaeger.agent_listen.to_string()),
        ("jaeger_agent_binary_listen", d.jaeger.agent_binary_listen.to_string()),
        ("zipkin_listen", d.zipkin.listen.to_string()),
        ("http_listen", d.http_listen.to_string()),
        ("remote_sampling_listen", d.remote_sampling.listen.to_string()),
        ("log_format", d.log_format.as_str().to_owned()),
    ];
    cmd.mut_subcommand("serve", |mut serve| {
        for (id, value) in defaults {
            serve = serve.mut_arg(id, |a| {
                let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                a.help(format!("{help} [default: {value}]"))
            });
        }
        serve
    })
}

fn main() -> ExitCode {
    let matches = with_serve_defaults(Cli::command()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve(args, &rt),
        Command::Trace(args) => rt.block_on(trace(args)),
        Command::Search(args) => rt.block_on(search(args)),
        Command::Services(args) => rt.block_on(list(args, "/api/v1/services", search_cmd::render_services)),
        Command::Deps(args) => rt.block_on(list(args, "/api/v1/dependencies", search_cmd::render_deps)),
        Command::Bench(BenchCommand::Ingest(args)) => rt.block_on(strand_bench::ingest::ingest(args)),
        Command::Bench(BenchCommand::Query(args)) => rt.block_on(strand_bench::ingest::query(args)),
        Command::Bench(BenchCommand::Logs(args)) => rt.block_on(strand_bench::logs::run(args)),
        Command::Bench(BenchCommand::Sampling(args)) => strand_bench::sampling::run(args),
        Command::Bench(BenchCommand::Integrity(args)) => strand_bench::integrity::run(args),
        Command::Bench(BenchCommand::Ui(args)) => rt.block_on(strand_bench::ui::run(args)),
        Command::Token(TokenCommand::New(args)) => new_token(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn search(args: SearchCli) -> anyhow::Result<()> {
    let q = search_cmd::SearchArgs {
        service: args.service,
        operation: args.operation,
        attrs: args.attrs,
        min_duration: args.min_duration,
        errors: args.errors,
        since: if args.range.start.is_none() {
            Some(args.since.unwrap_or_else(|| "1h".into()))
        } else {
            None
        },
        start: args.range.start,
        end: args.range.end,
        limit: Some(args.limit),
    };
    let mut qs = q.query_string();
    if let Some(c) = args.cursor {
        qs.push_str(&format!("&cursor={c}"));
    }
    let body = args.server.get_json(&format!("/api/v1/search?{qs}")).await?;
    if args.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&body)?))
    } else {
        emit(&search_cmd::render_search(&body))
    }
}

/// Writes a command's output to stdout. A reader that went away (`strand trace … | head`)
/// ends the output quietly instead of with a "Broken pipe" panic.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

async fn list(args: ListCli, path: &str, render: fn(&serde_json::Value) -> String) -> anyhow::Result<()> {
    let pairs: Vec<(&str, String)> =
        [("since", args.since), ("start", args.range.start), ("end", args.range.end)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
    let qs =
        if pairs.is_empty() { String::new() } else { format!("?{}", serde_urlencoded::to_string(&pairs)?) };
    let body = args.server.get_json(&format!("{path}{qs}")).await?;
    if args.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&body)?))
    } else {
        emit(&render(&body))
    }
}

fn serve(args: ServeArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let mut flags = Vec::new();
    for (flag, path, value) in [
        ("--data-dir", "data_dir", &args.data_dir),
        ("--otlp-grpc-listen", "otlp.grpc_listen", &args.otlp_grpc_listen),
        ("--otlp-http-listen", "otlp.http_listen", &args.otlp_http_listen),
        ("--jaeger-thrift-listen", "jaeger.thrift_http_listen", &args.jaeger_thrift_listen),
        ("--jaeger-agent-listen", "jaeger.agent_listen", &args.jaeger_agent_listen),
        ("--jaeger-agent-binary-listen", "jaeger.agent_binary_listen", &args.jaeger_agent_binary_listen),
        ("--zipkin-listen", "zipkin.listen", &args.zipkin_listen),
        ("--http-listen", "http_listen", &args.http_listen),
        ("--sampling-strategies", "remote_sampling.strategies_file", &args.sampling_strategies),
        ("--remote-sampling-listen", "remote_sampling.listen", &args.remote_sampling_listen),
        ("--log-format", "log_format", &args.log_format),
        ("--role", "cluster.role", &args.role),
    ] {
        if let Some(v) = value {
            flags.push((flag.to_string(), path.to_string(), v.clone()));
        }
    }
    if args.demo {
        flags.push(("--demo".to_string(), "demo".to_string(), "true".to_string()));
    }
    if args.listen_all {
        flags.push(("--listen-all".to_string(), "listen_all".to_string(), "true".to_string()));
    }
    for kv in &args.set {
        match kv.split_once('=') {
            Some((k, v)) => flags.push((format!("--set {k}"), k.trim().to_string(), v.to_string())),
            None => anyhow::bail!("--set expects KEY=VALUE, got `{kv}`"),
        }
    }
    let sources = Sources {
        file: args.config,
        env: std::env::vars().collect(),
        flags,
        sampling_file: args.sampling_config,
        sampling_shorthand: args.sampling,
    };
    let cfg = config::load(&sources)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log_level))
        .map_err(|e| anyhow::anyhow!("invalid log_level `{}`: {e}", cfg.log_level))?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cfg.log_format {
        config::LogFormat::Json => logs.json().init(),
        // Colour codes only where a terminal shows them, not in a log file or a collector.
        config::LogFormat::Text => {
            logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init()
        }
    }
    let info_file = args.listen_info_file;
    rt.block_on(strand_server::run(cfg, shutdown_signal(), move |addrs| {
        if let Some(path) = &info_file
            && let Err(e) = strand_server::write_listen_info(path, addrs)
        {
            tracing::error!(path = %path.display(), error = %e, "cannot write listen info file");
        }
    }))
}

fn new_token(args: TokenNewArgs) -> anyhow::Result<()> {
    let mut scopes = Vec::new();
    for s in &args.scopes {
        let scope: strand_server::auth::Scope =
            serde_json::from_value(serde_json::Value::String(s.trim().into()))
                .map_err(|_| anyhow::anyhow!("--scopes: `{s}` is not one of write, read, admin, metrics"))?;
        scopes.push(scope);
    }
    for t in &args.tenants {
        if t != "*" {
            strand_server::auth::check_tenant_id(t).map_err(|e| anyhow::anyhow!("--tenants: {e}"))?;
        }
    }
    let (token, hash) = strand_server::auth::new_token()?;
    let entry =
        strand_server::auth::TokenConfig { name: args.name, sha256: hash, scopes, tenants: args.tenants };
    let yaml = serde_json::to_string(&entry)?;
    emit(&format!(
        "token: {token}\n\
         # Give the token to its holder; put this entry in the server's configuration\n\
         # (it holds only the token's SHA-256):\n\
         auth:\n  tokens:\n    - {yaml}\n"
    ))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let mut body = strand_server::trace_cmd::fetch(&args.server, &args.trace_id).await?;
    let logs = if args.logs {
        Some(strand_server::trace_cmd::fetch_logs(&args.server, &args.trace_id).await?)
    } else {
        None
    };
    if args.json {
        if let Some(logs) = logs {
            body["logs"] = logs;
        }
        emit(&format!("{}\n", serde_json::to_string_pretty(&body)?))
    } else {
        let trace = strand_server::trace_cmd::parse(&body)?;
        let records = match &logs {
            Some(l) => strand_server::trace_cmd::parse_logs(l)?,
            None => Vec::new(),
        };
        let mut text = strand_server::trace_cmd::render_tree_with_logs(&trace, &records);
        text.push_str(&strand_server::trace_cmd::render_integrity(&body["integrity"]));
        if let Some(message) = body["truncated"]["message"].as_str() {
            text.push_str(&format!("\ntruncated: {message}\n"));
        }
        emit(&text)
    }
}
