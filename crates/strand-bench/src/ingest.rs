//! `strand bench ingest`: realistic OTLP/gRPC load against a server, reporting server CPU
//! per span, bytes on disk per span, peak memory and trace-by-id latency as JSON.
//!
//! By default it starts `strand serve` as a child process on a temporary directory (so its
//! CPU and memory can be read from `/proc`); `--target` points it at a running server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Options of `strand bench ingest`.
#[derive(Args, Debug, Clone)]
pub struct IngestArgs {
    /// Spans to send.
    #[arg(long, default_value_t = 1_000_000)]
    pub spans: u64,
    /// Spans per trace.
    #[arg(long, default_value_t = 10)]
    pub spans_per_trace: usize,
    /// Services a trace crosses.
    #[arg(long, default_value_t = 4)]
    pub services: usize,
    /// Extra bytes of attribute payload per span (0 for the standard profile).
    #[arg(long, default_value_t = 0)]
    pub attr_size: usize,
    /// Spans per export request.
    #[arg(long, default_value_t = 512)]
    pub batch_spans: usize,
    /// Export requests in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Trace-by-id lookups to time after loading.
    #[arg(long, default_value_t = 1000)]
    pub lookups: usize,
    /// OTLP/gRPC address of a running server (host:port); default: start one.
    #[arg(long)]
    pub target: Option<String>,
    /// Query API URL of the `--target` server, for flush and lookups.
    #[arg(long)]
    pub query: Option<String>,
    /// WAL fsync policy of the started server: always or interval.
    #[arg(long, default_value = "always")]
    pub fsync: String,
    /// Keep the started server's data directory (printed in the report).
    #[arg(long)]
    pub keep_data: bool,
    /// Print the report as one JSON line (the last line of stdout), with the summary keys
    /// `spans`, `cpu_us_per_span` (all-in), `disk_bytes_per_span`, `rss_peak_bytes`,
    /// `by_id_p50_ms`, `by_id_p99_ms` and, from `bench query`, `search_p50_ms`.
    #[arg(long)]
    pub json: bool,
    /// Seed of the traffic generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// After loading and flushing, restart the started server on the same data and time the
    /// lookups there too (`lookup_after_restart_*`): reads of stored data without the
    /// ingesting process's memory state.
    #[arg(long)]
    pub restart_before_lookups: bool,
    /// Extra `--set KEY=VALUE` for the started server, e.g. `storage.head_max_spans=100000`.
    #[arg(long = "server-set", value_name = "KEY=VALUE")]
    pub server_set: Vec<String>,
}

#[derive(Serialize, Default)]
struct Report {
    /// Spans sent (= `spans_sent`; a summary key of `--json`).
    spans: u64,
    /// Server CPU per span, final flush included (µs).
    cpu_us_per_span: Option<f64>,
    /// Peak server RSS (= `peak_server_rss_bytes`).
    rss_peak_bytes: Option<u64>,
    /// Trace-by-id latency (= `lookup_p50_ms`, `lookup_p99_ms`).
    by_id_p50_ms: Option<f64>,
    by_id_p99_ms: Option<f64>,
    /// `bench query`: p50 of the service + attribute search over one hour.
    search_p50_ms: Option<f64>,
    profile: String,
    spans_sent: u64,
    traces_sent: u64,
    requests: u64,
    seconds: f64,
    spans_per_second: f64,
    server_cpu_seconds: Option<f64>,
    server_cpu_seconds_per_million_spans: Option<f64>,
    server_cpu_seconds_including_final_flush: Option<f64>,
    server_cpu_seconds_per_million_spans_including_final_flush: Option<f64>,
    /// Server CPU per span by thread, final flush included: where it went by phase
    /// (`tokio-rt-worker`: receiving, decoding, sampling, chain analysis; `strand-wal`: WAL
    /// records and the head; `strand-index`: the head's search index; `strand-flush`:
    /// block cuts; `strand-maintain`: compaction, retention, scrub).
    server_cpu_us_per_span_by_thread: std::collections::BTreeMap<String, f64>,
    disk_bytes_blocks: Option<u64>,
    disk_bytes_per_span: Option<f64>,
    peak_server_rss_bytes: Option<u64>,
    lookups: usize,
    lookup_p50_ms: Option<f64>,
    lookup_p99_ms: Option<f64>,
    lookup_max_ms: Option<f64>,
    lookup_after_restart_p50_ms: Option<f64>,
    lookup_after_restart_p99_ms: Option<f64>,
    lookup_after_restart_max_ms: Option<f64>,
    /// From starting the process on the stored data to its listening (WAL replay and
    /// opening blocks included).
    start_after_restart_ms: Option<f64>,
    /// Resident memory of the restarted server once listening: what stored data costs
    /// with nothing asked of it yet.
    rss_after_restart_bytes: Option<u64>,
    /// ... and after the lookups and one run of each search.
    rss_after_restart_queries_bytes: Option<u64>,
    /// First search after loading, before the flush: includes indexing the head.
    first_search_before_flush_ms: Option<f64>,
    queries: Vec<QueryTiming>,
    data_dir: Option<String>,
}

/// Latency of one kind of query (`strand bench query`).
#[derive(Serialize)]
struct QueryTiming {
    name: &'static str,
    path: String,
    runs: usize,
    results: usize,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// Options of `strand bench query`: the ingest options (load) plus how often to run each
/// query.
#[derive(Args, Debug, Clone)]
pub struct QueryArgs {
    /// Loading options (use `--spans 10000000` for the standard profile).
    #[command(flatten)]
    pub ingest: IngestArgs,
    /// Runs of each query.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
}

/// The queries `strand bench query` times, over the last hour (the data's whole range).
fn bench_queries() -> Vec<(&'static str, String)> {
    vec![
        ("search by service, 1h", "/api/v1/search?service=epro-service&since=1h&limit=20".into()),
        (
            SEARCH_SUMMARY,
            "/api/v1/search?service=gateway&attr=http.response.status_code%3D200&since=1h&limit=20".into(),
        ),
        (
            "search by service + min span duration, 1h",
            "/api/v1/search?service=epro-service&minDuration=10ms&since=1h&limit=20".into(),
        ),
        ("search errors (any service), 1h", "/api/v1/search?status=error&since=1h&limit=20".into()),
        ("dependencies, 1h", "/api/v1/dependencies?since=1h".into()),
        (
            "TraceQL service + attribute (indexed), 1h",
            tempo_search(r#"{ resource.service.name = "gateway" && span.http.response.status_code = 200 }"#),
        ),
        (
            "TraceQL errors below the gateway (>>), 1h",
            tempo_search(r#"{ resource.service.name = "gateway" } >> { status = error }"#),
        ),
        (
            "TraceQL regex on span name (not indexed), 1h",
            tempo_search(r#"{ name =~ "POST /api/v1/reports/.*" }"#),
        ),
        ("TraceQL count() over each trace (not indexed), 1h", tempo_search("{ } | count() > 3")),
    ]
}

/// A Tempo TraceQL search over the default hour, as Grafana sends it.
fn tempo_search(q: &str) -> String {
    let q: String = q
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/api/search?q={q}&limit=20&spss=3")
}

async fn time_query(
    client: &reqwest::Client,
    http: &str,
    path: &str,
    runs: usize,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut lat = Vec::with_capacity(runs);
    let mut results = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let resp = client.get(format!("{http}{path}")).send().await.context("query")?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.context("query body")?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() {
            bail!("{path} returned {status}: {body}");
        }
        results = body["traces"].as_array().or(body["dependencies"].as_array()).map_or(0, Vec::len);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok((lat, results))
}

/// `strand bench query`: loads data as `bench ingest` does, then times searches.
pub async fn query(args: QueryArgs) -> anyhow::Result<()> {
    run(args.ingest, Some(args.runs)).await
}

const SERVICES: [&str; 4] = ["gateway", "user-service", "epro-service", "data-service"];

/// A string attribute value.
pub(crate) fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(v.to_owned())) })
}

/// An attribute.
pub(crate) fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
    KeyValue { key: k.to_owned(), value: v, key_strindex: 0 }
}

/// An integer attribute value.
pub(crate) fn int(v: i64) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::IntValue(v)) })
}

fn service_name(i: usize) -> String {
    SERVICES.get(i).map(|s| (*s).to_owned()).unwrap_or_else(|| format!("service-{i}"))
}

/// Generates the standard traffic profile.
pub struct Generator {
    rng: StdRng,
    spans_per_trace: usize,
    services: usize,
    attr_size: usize,
    resources: Vec<Resource>,
}

impl Generator {
    /// A generator with its own seed.
    pub fn new(seed: u64, spans_per_trace: usize, services: usize, attr_size: usize) -> Self {
        let resources = (0..services.max(1))
            .map(|i| Resource {
                attributes: vec![
                    kv("service.name", s(&service_name(i))),
                    kv("service.version", s("1.4.2")),
                    kv("service.namespace", s("epro")),
                    kv("host.name", s(&format!("node-{}", i % 3))),
                    kv("telemetry.sdk.name", s("opentelemetry")),
                    kv("telemetry.sdk.language", s("go")),
                    kv("telemetry.sdk.version", s("1.28.0")),
                ],
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            })
            .collect();
        Self {
            rng: StdRng::seed_from_u64(seed),
            spans_per_trace: spans_per_trace.max(1),
            services: services.max(1),
            attr_size,
            resources,
        }
    }

    /// One export request of about `spans` spans (whole traces); returns it, its trace
    /// ids and span count.
    pub fn request(&mut self, spans: usize) -> (ExportTraceServiceRequest, Vec<[u8; 16]>, usize) {
        let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); self.services];
        let mut ids = Vec::new();
        let mut count = 0;
        while count < spans.max(1) {
            let (tid, trace) = self.trace();
            ids.push(tid);
            for (svc, span) in trace {
                by_service[svc].push(span);
                count += 1;
            }
        }
        let scope = InstrumentationScope {
            name: "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp".into(),
            version: "0.53.0".into(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
        };
        let resource_spans = by_service
            .into_iter()
            .enumerate()
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(i, spans)| ResourceSpans {
                resource: Some(self.resources[i].clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            })
            .collect();
        (ExportTraceServiceRequest { resource_spans }, ids, count)
    }

    fn trace(&mut self) -> ([u8; 16], Vec<(usize, Span)>) {
        let tid: [u8; 16] = self.rng.random();
        let error_trace = self.rng.random_range(0..100) == 0;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let n = self.spans_per_trace;
        let mut out: Vec<(usize, Span)> = Vec::with_capacity(n);
        let mut starts = Vec::with_capacity(n);
        let mut ids: Vec<[u8; 8]> = Vec::with_capacity(n);
        let total = self.rng.random_range(5_000_000u64..80_000_000);
        for i in 0..n {
            let svc = (i * self.services / n).min(self.services - 1);
            let parent = if i == 0 {
                None
            } else if i % 3 == 0 && i > 1 {
                Some(i - 2)
            } else {
                Some(i - 1)
            };
            let start = match parent {
                None => now - total,
                Some(p) => starts[p] + self.rng.random_range(50_000u64..500_000),
            };
            let dur = (total / (i as u64 + 1)).saturating_sub(self.rng.random_range(0..200_000)).max(20_000);
            starts.push(start);
            let span_id: [u8; 8] = self.rng.random();
            ids.push(span_id);
            let role = i % 5;
            let (name, kind, attributes) = self.shape(role, svc);
            let mut events = Vec::new();
            if self.rng.random_range(0..5) == 0 {
                events.push(span::Event {
                    time_unix_nano: start + dur / 2,
                    name: "cache.lookup".into(),
                    attributes: vec![kv(
                        "cache.hit",
                        Some(AnyValue { value: Some(any_value::Value::BoolValue(self.rng.random())) }),
                    )],
                    dropped_attributes_count: 0,
                });
            }
            let mut status = None;
            if error_trace && i == n - 1 {
                status = Some(Status { code: 2, message: "deadline exceeded".into() });
                events.push(span::Event {
                    time_unix_nano: start + dur,
                    name: "exception".into(),
                    attributes: vec![
                        kv("exception.type", s("context.DeadlineExceeded")),
                        kv("exception.message", s("context deadline exceeded")),
                    ],
                    dropped_attributes_count: 0,
                });
            }
            out.push((
                svc,
                Span {
                    trace_id: tid.to_vec(),
                    span_id: span_id.to_vec(),
                    parent_span_id: parent.map(|p| ids[p].to_vec()).unwrap_or_default(),
                    flags: 0x301,
                    name,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + dur,
                    attributes,
                    events,
                    status,
                    ..Default::default()
                },
            ));
        }
        (tid, out)
    }

    fn shape(&mut self, role: usize, svc: usize) -> (String, i32, Vec<KeyValue>) {
        let peer = service_name((svc + 1) % self.services);
        let mut attrs;
        let (name, kind) = match role {
            0 => {
                attrs = vec![
                    kv("http.request.method", s("POST")),
                    kv("http.route", s("/api/v1/reports/{id}")),
                    kv("url.path", s(&format!("/api/v1/reports/{}", self.rng.random_range(1000..99999)))),
                    kv("url.scheme", s("http")),
                    kv("http.response.status_code", int(200)),
                    kv("server.address", s(&service_name(svc))),
                    kv("user_agent.original", s("okhttp/4.12.0")),
                ];
                ("POST /api/v1/reports/{id}".to_string(), 2)
            }
            1 => {
                attrs = vec![
                    kv("http.request.method", s("GET")),
                    kv(
                        "url.full",
                        s(&format!("http://{peer}:8080/users/{}", self.rng.random_range(1..5000))),
                    ),
                    kv("server.address", s(&peer)),
                    kv("server.port", int(8080)),
                    kv("http.response.status_code", int(200)),
                ];
                ("GET".to_string(), 3)
            }
            2 => {
                attrs = vec![
                    kv("rpc.system", s("grpc")),
                    kv("rpc.service", s("epro.v1.ReportService")),
                    kv("rpc.method", s("Submit")),
                    kv("rpc.grpc.status_code", int(0)),
                    kv("server.address", s(&peer)),
                ];
                ("epro.v1.ReportService/Submit".to_string(), if svc.is_multiple_of(2) { 3 } else { 2 })
            }
            3 => {
                attrs = vec![
                    kv("db.system.name", s("postgresql")),
                    kv("db.namespace", s("epro")),
                    kv("db.operation.name", s("SELECT")),
                    kv(
                        "db.query.text",
                        s("SELECT id, status, payload FROM reports WHERE patient_id = $1 AND visit = $2"),
                    ),
                    kv("server.address", s("postgres.internal")),
                ];
                ("SELECT epro.reports".to_string(), 3)
            }
            _ => {
                attrs = vec![kv("code.function.name", s("report.Validate"))];
                ("validate report".to_string(), 1)
            }
        };
        if self.attr_size > 0 {
            let payload: String =
                (0..self.attr_size).map(|_| char::from(self.rng.random_range(b'a'..=b'z'))).collect();
            attrs.push(kv("app.payload.preview", s(&payload)));
        }
        (name, kind, attrs)
    }
}

pub(crate) fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks as f64 / 100.0)
}

/// CPU seconds of each thread of a process, summed by thread name (`strand-flush`,
/// `strand-wal`, `tokio-rt-worker`, ...): where the server's CPU went, by phase.
pub(crate) fn proc_cpu_by_thread(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { continue };
        let (Some((head, rest)), Some(name_start)) = (stat.rsplit_once(") "), stat.find('(')) else {
            continue;
        };
        let name = head[name_start + 1..].to_owned();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        *out.entry(name).or_insert(0.0) += ticks as f64 / 100.0;
    }
    out
}

pub(crate) fn proc_peak_rss(pid: u32) -> Option<u64> {
    proc_status_bytes(pid, "VmHWM:")
}

/// The server's resident memory now.
pub(crate) fn proc_rss(pid: u32) -> Option<u64> {
    proc_status_bytes(pid, "VmRSS:")
}

fn proc_status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub(crate) use strand_store::testdata::dir_bytes;

pub(crate) struct ChildServer {
    child: Child,
    pub(crate) grpc: String,
    pub(crate) http: String,
    dir: PathBuf,
    fsync: String,
    extra: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl ChildServer {
    /// Starts `strand serve` on a temporary directory.
    pub(crate) fn start(fsync: &str, keep: bool, extra: &[String]) -> anyhow::Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix("strand-bench-")
            .tempdir()
            .context("creating a temporary directory")?;
        let dir = tmp.path().to_path_buf();
        // keep() detaches the directory so it outlives the run.
        let tmp = if keep {
            let _ = tmp.keep();
            None
        } else {
            Some(tmp)
        };
        let child = Self::spawn(&dir, fsync, extra)?;
        let mut server = ChildServer {
            child,
            grpc: String::new(),
            http: String::new(),
            dir,
            fsync: fsync.to_owned(),
            extra: extra.to_vec(),
            _tmp: tmp,
        };
        server.wait_listening()?;
        Ok(server)
    }

    fn spawn(dir: &Path, fsync: &str, extra: &[String]) -> anyhow::Result<Child> {
        let _ = std::fs::remove_file(dir.join("listen.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .context("opening the server log")?;
        let exe = std::env::current_exe().context("locating the strand binary")?;
        Command::new(exe)
            .args(["serve", "--otlp-grpc-listen", "127.0.0.1:0", "--otlp-http-listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0", "--zipkin-listen", "127.0.0.1:0"])
            .args(["--jaeger-thrift-listen", "127.0.0.1:0", "--jaeger-agent-listen", "127.0.0.1:0"])
            .args(["--jaeger-agent-binary-listen", "127.0.0.1:0"])
            .args(["--remote-sampling-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen-info-file")
            .arg(dir.join("listen.json"))
            .arg("--set")
            .arg(format!("storage.fsync={fsync}"))
            .args(extra.iter().flat_map(|kv| ["--set", kv.as_str()]))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting strand serve")
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let info = self.dir.join("listen.json");
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(text) = std::fs::read_to_string(&info) {
                let v: serde_json::Value = serde_json::from_str(&text).context("parsing listen info")?;
                self.grpc = v["otlp_grpc"].as_str().context("no grpc address")?.to_owned();
                self.http = format!("http://{}", v["http"].as_str().context("no http address")?);
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("strand serve exited with {status}; see {}", self.dir.join("server.log").display());
            }
            if Instant::now() > deadline {
                bail!("strand serve did not start within 300 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's data directory.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Stops the server gracefully (SIGTERM), waiting up to 30 s before SIGKILL.
    fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server and starts a fresh process on the same data directory.
    /// Returns how long the new process took to listen.
    fn restart(&mut self) -> anyhow::Result<Duration> {
        self.stop();
        let started = Instant::now();
        self.child = Self::spawn(&self.dir, &self.fsync, &self.extra)?;
        self.wait_listening()?;
        Ok(started.elapsed())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fetches each sampled trace once, checking its span count; returns sorted latencies in ms.
async fn time_lookups(
    client: &reqwest::Client,
    http: &str,
    samples: &[([u8; 16], usize)],
) -> anyhow::Result<Vec<f64>> {
    let mut lat = Vec::with_capacity(samples.len());
    for (id, expected) in samples {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let t = Instant::now();
        let resp = client.get(format!("{http}/api/v1/traces/{hex}")).send().await.context("lookup")?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.context("lookup body")?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() || body["spanCount"].as_u64() != Some(*expected as u64) {
            bail!(
                "lookup of trace {hex} returned {status} with {} spans, expected {expected}",
                body["spanCount"]
            );
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(lat)
}

/// Takes up to `want` items from what is left to send; `None` once nothing is left.
pub(crate) fn claim(remaining: &std::sync::atomic::AtomicU64, want: u64) -> Option<u64> {
    use std::sync::atomic::Ordering;
    let before = remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(want.min(r)).filter(|_| r > 0))
        .ok()?;
    Some(want.min(before))
}

/// Sends an export, again and again while the server answers overloaded or unavailable
/// (as an SDK retries); any other error ends the benchmark.
pub(crate) async fn export_retrying<T, Fut>(mut send: impl FnMut() -> Fut) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    loop {
        match send().await {
            Ok(resp) => return Ok(resp),
            Err(st)
                if st.code() == tonic::Code::ResourceExhausted || st.code() == tonic::Code::Unavailable =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(st) => bail!("export failed: {st}"),
        }
    }
}

/// Keeps `item`, the `seen`-th (from 1), in a uniform random sample of at most `cap` items
/// (reservoir sampling): every item sent has the same chance to be looked up.
pub(crate) fn reservoir<T>(samples: &mut Vec<T>, cap: usize, seen: u64, item: T, rng: &mut StdRng) {
    if samples.len() < cap {
        samples.push(item);
    } else {
        let j = rng.random_range(0..seen) as usize;
        if j < cap {
            samples[j] = item;
        }
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied()
}

/// Runs the benchmark and prints the JSON report on stdout.
pub async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    run(args, None).await
}

async fn run(args: IngestArgs, query_runs: Option<usize>) -> anyhow::Result<()> {
    let mut server = match &args.target {
        Some(_) => None,
        None => Some(ChildServer::start(&args.fsync, args.keep_data, &args.server_set)?),
    };
    let grpc = match (&args.target, &server) {
        (Some(t), _) => t.clone(),
        (None, Some(s)) => s.grpc.clone(),
        (None, None) => unreachable!("a server is started when no target is given"),
    };
    let http = server.as_ref().map(|s| s.http.clone()).or_else(|| args.query.clone());
    let pid = server.as_ref().map(|s| s.child.id());
    let endpoint = format!("http://{grpc}");
    let client = TraceServiceClient::connect(endpoint.clone())
        .await
        .with_context(|| format!("connecting to {endpoint}"))?
        .max_encoding_message_size(64 << 20);

    let bar = ProgressBar::new(args.spans);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {human_pos}/{human_len} spans {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let remaining = Arc::new(AtomicU64::new(args.spans));
    let sent = Arc::new(AtomicU64::new(0));
    let cpu0 = pid.and_then(proc_cpu_seconds);
    let threads0 = pid.map(proc_cpu_by_thread).unwrap_or_default();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    let per_worker_samples = (args.lookups / args.concurrency.max(1)).max(1);
    for w in 0..args.concurrency.max(1) {
        let client = client.clone();
        let remaining = remaining.clone();
        let sent = sent.clone();
        let bar = bar.clone();
        let a = args.clone();
        workers.spawn(async move {
            let mut generator = Generator::new(
                a.seed.wrapping_mul(1000).wrapping_add(w as u64),
                a.spans_per_trace,
                a.services,
                a.attr_size,
            );
            let mut rng = StdRng::seed_from_u64(a.seed ^ (w as u64 + 77));
            let mut samples: Vec<([u8; 16], usize)> = Vec::new();
            let (mut traces, mut requests) = (0u64, 0u64);
            while let Some(n) = claim(&remaining, a.batch_spans as u64) {
                let (req, ids, count) = generator.request(n as usize);
                let resp = export_retrying(|| {
                    // A tonic client is a cheap handle on the shared channel.
                    let (mut client, req) = (client.clone(), req.clone());
                    async move { client.export(req).await }
                })
                .await?;
                if let Some(ps) = resp.into_inner().partial_success
                    && ps.rejected_spans > 0
                {
                    anyhow::bail!("server rejected {} spans: {}", ps.rejected_spans, ps.error_message);
                }
                requests += 1;
                for id in ids {
                    traces += 1;
                    reservoir(&mut samples, per_worker_samples, traces, (id, a.spans_per_trace), &mut rng);
                }
                sent.fetch_add(count as u64, Ordering::Relaxed);
                bar.inc(count as u64);
            }
            Ok::<_, anyhow::Error>((samples, traces, requests))
        });
    }
    let mut samples = Vec::new();
    let mut report = Report {
        profile: format!(
            "standard: {} spans/trace, {} services, attr_size {}",
            args.spans_per_trace, args.services, args.attr_size
        ),
        ..Report::default()
    };
    while let Some(r) = workers.join_next().await {
        let (s, t, q) = r.context("worker panicked")??;
        samples.extend(s);
        report.traces_sent += t;
        report.requests += q;
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let cpu1 = pid.and_then(proc_cpu_seconds);
    report.spans_sent = sent.load(Ordering::Relaxed);
    report.seconds = seconds;
    report.spans_per_second = report.spans_sent as f64 / seconds;
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        let cpu = b - a;
        report.server_cpu_seconds = Some(cpu);
        report.server_cpu_seconds_per_million_spans = Some(cpu / report.spans_sent as f64 * 1e6);
    }
    let http_client = reqwest::Client::new();
    if let (Some(http), Some(_)) = (&http, query_runs) {
        let (path, t) = (&bench_queries()[0].1, Instant::now());
        time_query(&http_client, http, path, 1).await?;
        report.first_search_before_flush_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
        // Leave the head's index time to catch up so the flush below is measured as
        // it runs in steady state.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some(http) = &http {
        eprintln!("flushing the head into blocks...");
        let resp = http_client
            .post(format!("{http}/api/v1/admin/flush"))
            .header("content-type", "application/json")
            .send()
            .await
            .context("flush request")?;
        if !resp.status().is_success() {
            bail!("flush failed: {}", resp.text().await.unwrap_or_default());
        }
        if let (Some(a), Some(c)) = (cpu0, pid.and_then(proc_cpu_seconds)) {
            report.server_cpu_seconds_including_final_flush = Some(c - a);
            report.server_cpu_seconds_per_million_spans_including_final_flush =
                Some((c - a) / report.spans_sent as f64 * 1e6);
        }
        if let Some(pid) = pid {
            let per_span = |cpu: f64| cpu / report.spans_sent as f64 * 1e6;
            report.server_cpu_us_per_span_by_thread = proc_cpu_by_thread(pid)
                .iter()
                .map(|(name, cpu)| (name.clone(), per_span(cpu - threads0.get(name).copied().unwrap_or(0.0))))
                .filter(|(_, us)| *us >= 0.01)
                .collect();
        }
        if let Some(server) = &server {
            let blocks = dir_bytes(&server.dir.join("data").join("blocks"));
            report.disk_bytes_blocks = Some(blocks);
            report.disk_bytes_per_span = Some(blocks as f64 / report.spans_sent as f64);
        }
        eprintln!("timing {} trace lookups...", samples.len());
        let lat = time_lookups(&http_client, http, &samples).await?;
        report.lookups = lat.len();
        report.lookup_p50_ms = percentile(&lat, 0.5);
        report.lookup_p99_ms = percentile(&lat, 0.99);
        report.lookup_max_ms = lat.last().copied();
        for (name, path) in bench_queries() {
            let Some(runs) = query_runs else { break };
            eprintln!("timing {runs} runs of {name}...");
            let (lat, results) = time_query(&http_client, http, &path, runs).await?;
            report.queries.push(QueryTiming {
                name,
                path,
                runs,
                results,
                p50_ms: percentile(&lat, 0.5),
                p99_ms: percentile(&lat, 0.99),
            });
        }
    }
    report.peak_server_rss_bytes = pid.and_then(proc_peak_rss);
    if args.restart_before_lookups
        && let Some(server) = server.as_mut()
    {
        eprintln!("restarting the server on the same data...");
        report.start_after_restart_ms = Some(server.restart()?.as_secs_f64() * 1000.0);
        report.rss_after_restart_bytes = proc_rss(server.pid());
        let lat = time_lookups(&http_client, &server.http, &samples).await?;
        report.lookup_after_restart_p50_ms = percentile(&lat, 0.5);
        report.lookup_after_restart_p99_ms = percentile(&lat, 0.99);
        report.lookup_after_restart_max_ms = lat.last().copied();
        if query_runs.is_some() {
            for (_, path) in bench_queries() {
                time_query(&http_client, &server.http, &path, 1).await?;
            }
        }
        report.rss_after_restart_queries_bytes = proc_rss(server.pid());
    }
    if args.keep_data {
        report.data_dir = server.as_ref().map(|s| s.dir.join("data").display().to_string());
    }
    report.spans = report.spans_sent;
    report.cpu_us_per_span = report.server_cpu_seconds_per_million_spans_including_final_flush;
    report.rss_peak_bytes = report.peak_server_rss_bytes;
    (report.by_id_p50_ms, report.by_id_p99_ms) = (report.lookup_p50_ms, report.lookup_p99_ms);
    report.search_p50_ms = report.queries.iter().find(|q| q.name == SEARCH_SUMMARY).and_then(|q| q.p50_ms);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// The query whose p50 is the report's `search_p50_ms`.
const SEARCH_SUMMARY: &str = "search by service + attribute, 1h";
