//! `strand bench ui`: how fast the web UI's trace view opens and handles a huge trace, in
//! a real browser.
//!
//! Starts `strand serve` as a child process, sends one trace of `--spans` spans over
//! OTLP/gRPC (a realistic tree: fan-out of 1–8 calls, 20 services, HTTP/DB/RPC attributes,
//! events, 0.5 % errors), cuts it into a block, and runs `tests/browser/bench.mjs`
//! (headless Chromium through playwright-core, as the browser tests) which opens
//! `/trace/{id}` `--runs` times in fresh pages and times each step: the API response, the
//! page being interactive (rows drawn, handlers attached), the next paint, and scrolling,
//! keyboard moves, folding and finding on the loaded trace. Prints a JSON report.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ingest::{ChildServer, int, kv, s};

/// Options of `strand bench ui`.
#[derive(Args, Debug, Clone)]
pub struct UiArgs {
    /// Spans in the trace.
    #[arg(long, default_value_t = 100_000)]
    pub spans: usize,
    /// Times the trace view is opened (each in a fresh page).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// The browser script (run from the repository root by default).
    #[arg(long, default_value = "tests/browser/bench.mjs")]
    pub script: PathBuf,
    /// Random seed of the trace.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

const SERVICES: usize = 20;
const CHUNK: usize = 5_000;

/// Runs the benchmark and prints the JSON report on stdout.
pub async fn run(args: UiArgs) -> anyhow::Result<()> {
    if !args.script.exists() {
        bail!(
            "{} not found: run `strand bench ui` from the repository root (after scripts/test.sh installed playwright-core)",
            args.script.display()
        );
    }
    let server = ChildServer::start("interval", false, &[])?;
    let (trace_id, requests) = big_trace(args.spans, args.seed);
    let endpoint = format!("http://{}", server.grpc);
    let mut client = TraceServiceClient::connect(endpoint.clone())
        .await
        .with_context(|| format!("connecting to {endpoint}"))?
        .max_encoding_message_size(64 << 20);
    for req in requests {
        client.export(req).await.context("exporting the trace")?;
    }
    let http = reqwest::Client::new();
    http.post(format!("{}/api/v1/admin/flush", server.http))
        .header("content-type", "application/json")
        .send()
        .await
        .context("flush")?;

    // The API alone, for comparison with what the browser sees: plain, and compressed as a
    // browser asks for it (zstd) and as curl or Prometheus do (gzip).
    let raw = reqwest::Client::builder().no_gzip().build().context("http client")?;
    let mut api = serde_json::Map::new();
    let mut bytes = 0;
    for encoding in ["identity", "zstd", "gzip"] {
        let mut ms = Vec::new();
        let mut size = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let body = raw
                .get(format!("{}/api/v1/traces/{trace_id}", server.http))
                .header("accept-encoding", encoding)
                .send()
                .await
                .context("trace lookup")?
                .bytes()
                .await
                .context("trace body")?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            size = body.len();
            if encoding == "identity" {
                let v: serde_json::Value = serde_json::from_slice(&body).context("trace json")?;
                if v["spanCount"].as_u64() != Some(args.spans as u64) {
                    bail!("the server returned {} spans, expected {}", v["spanCount"], args.spans);
                }
                bytes = size;
            }
        }
        ms.sort_by(f64::total_cmp);
        api.insert(encoding.into(), serde_json::json!({ "ms_median": ms[ms.len() / 2], "bytes": size }));
    }
    let http_url = server.http.clone();
    let script = args.script.clone();
    let runs = args.runs;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&script)
            .env("STRAND_URL", http_url)
            .env("TRACE_ID", &trace_id)
            .env("RUNS", runs.to_string())
            .output()
    })
    .await
    .context("browser task")?
    .context("running node")?;
    if !out.status.success() {
        bail!("the browser benchmark failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let browser: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("the browser benchmark printed no JSON")?;
    let report = serde_json::json!({
        "spans": args.spans,
        "trace_json_bytes": bytes,
        "api_lookup": api,
        "browser": browser,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// One trace of `n` spans as export requests of [`CHUNK`] spans, and its hex id. Spans are
/// generated breadth first: each takes 1–8 children inside its own time, so the tree is
/// wide and about eight levels deep, like a fan-out-heavy request; a few children are
/// async (they end after their parent).
fn big_trace(n: usize, seed: u64) -> (String, Vec<ExportTraceServiceRequest>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let tid: [u8; 16] = rng.random();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let total = 30_000_000_000u64; // 30 s
    struct Node {
        id: [u8; 8],
        start: u64,
        end: u64,
        svc: usize,
    }
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    let mut spans: Vec<(usize, Span)> = Vec::with_capacity(n);
    let mut push = |rng: &mut StdRng,
                    nodes: &mut Vec<Node>,
                    parent: Option<usize>,
                    start: u64,
                    end: u64,
                    svc: usize| {
        let id: [u8; 8] = rng.random();
        let i = nodes.len();
        let (name, kind, attributes) = match i % 4 {
            0 => (
                format!("GET /api/v{}/items/{{id}}", i % 3),
                span::SpanKind::Server,
                vec![
                    kv("http.request.method", s("GET")),
                    kv("http.route", s("/api/items/{id}")),
                    kv("http.response.status_code", int(200)),
                    kv("url.path", s(&format!("/api/items/{}", rng.random_range(0..100_000)))),
                ],
            ),
            1 => (
                "SELECT items".to_owned(),
                span::SpanKind::Client,
                vec![
                    kv("db.system.name", s("postgresql")),
                    kv("db.query.text", s("SELECT * FROM items WHERE id = $1")),
                ],
            ),
            2 => (
                format!("items.Service/Get{}", i % 5),
                span::SpanKind::Client,
                vec![kv("rpc.system", s("grpc")), kv("rpc.method", s("Get"))],
            ),
            _ => ("compute".to_owned(), span::SpanKind::Internal, vec![kv("work.units", int(i as i64 % 97))]),
        };
        let error = rng.random_range(0..200) == 0;
        let mut events = Vec::new();
        if i.is_multiple_of(10) {
            events.push(span::Event {
                time_unix_nano: start + (end - start) / 2,
                name: "cache.lookup".into(),
                attributes: vec![kv(
                    "cache.hit",
                    Some(AnyValue { value: Some(any_value::Value::BoolValue(i.is_multiple_of(20))) }),
                )],
                dropped_attributes_count: 0,
            });
        }
        spans.push((
            svc,
            Span {
                trace_id: tid.to_vec(),
                span_id: id.to_vec(),
                parent_span_id: parent.map(|p| nodes[p].id.to_vec()).unwrap_or_default(),
                name,
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                events,
                status: error.then(|| Status { code: 2, message: "upstream timed out".into() }),
                ..Default::default()
            },
        ));
        nodes.push(Node { id, start, end, svc });
    };
    push(&mut rng, &mut nodes, None, now - total, now, 0);
    let mut next = 0;
    while nodes.len() < n && next < nodes.len() {
        let (pstart, pend, psvc) = (nodes[next].start, nodes[next].end, nodes[next].svc);
        let kids = rng.random_range(1..=8).min(n - nodes.len());
        let width = (pend - pstart).max(kids as u64 * 2);
        for k in 0..kids {
            let slot = width / kids as u64;
            let start = pstart + slot * k as u64 + rng.random_range(0..slot / 4 + 1);
            let mut end = start + (slot * 3 / 4).max(1);
            if rng.random_range(0..50) == 0 {
                end = pend + (pend - pstart) / 3; // async: outlives its parent
            }
            let svc = if rng.random_range(0..3) == 0 { rng.random_range(0..SERVICES) } else { psvc };
            push(&mut rng, &mut nodes, Some(next), start, end, svc);
        }
        next += 1;
    }
    let scope = InstrumentationScope { name: "strand-bench-ui".into(), ..Default::default() };
    let requests = spans
        .chunks(CHUNK)
        .map(|chunk| {
            let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES];
            for (svc, span) in chunk {
                by_service[*svc].push(span.clone());
            }
            let resource_spans = by_service
                .into_iter()
                .enumerate()
                .filter(|(_, spans)| !spans.is_empty())
                .map(|(i, spans)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            kv("service.name", s(&format!("service-{i:02}"))),
                            kv("host.name", s(&format!("node-{}", i % 4))),
                        ],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(scope.clone()),
                        spans,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                })
                .collect();
            ExportTraceServiceRequest { resource_spans }
        })
        .collect();
    (tid.iter().map(|b| format!("{b:02x}")).collect(), requests)
}
