//! `strand bench logs`: the standard log profile over OTLP/gRPC against a server, reporting
//! server CPU per record, bytes on disk per record, peak memory, logs-of-a-trace latency and
//! text-search latency as JSON.
//!
//! Standard log profile: traces of 10 spans, 3 records per span written under the span
//! (trace and span ids set), plus records without trace context so that 80 % carry one;
//! bodies from 20 templates with changing numbers and ids; 3 attributes per record; 4
//! services. Like `bench ingest` it starts `strand serve` as a child process on a
//! temporary directory and reads its CPU and memory from `/proc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::ingest::{
    ChildServer, dir_bytes, export_retrying, int, kv, percentile, proc_cpu_by_thread, proc_cpu_seconds,
    proc_peak_rss, reservoir, s,
};

/// Options of `strand bench logs`.
#[derive(Args, Debug, Clone)]
pub struct LogsArgs {
    /// Log records to send (use 10000000 for the standard figures).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Records per export request.
    #[arg(long, default_value_t = 512)]
    pub batch_records: usize,
    /// Export requests in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Logs-of-a-trace lookups to time after loading.
    #[arg(long, default_value_t = 500)]
    pub lookups: usize,
    /// Runs of each search.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// WAL fsync policy of the started server: always or interval.
    #[arg(long, default_value = "always")]
    pub fsync: String,
    /// Keep the started server's data directory (printed in the report).
    #[arg(long)]
    pub keep_data: bool,
    /// Seed of the traffic generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Extra `--set KEY=VALUE` for the started server.
    #[arg(long = "server-set", value_name = "KEY=VALUE")]
    pub server_set: Vec<String>,
}

/// Spans per trace and records per span of the profile.
const SPANS: usize = 10;
const PER_SPAN: usize = 3;
/// Records with trace context per trace, and how many without go with them (80 % carry one).
const TRACED: usize = SPANS * PER_SPAN;
const UNTRACED_PER_4_TRACES: usize = 30;

const SERVICES: [&str; 4] = ["gateway", "user-service", "epro-service", "data-service"];

/// Body templates; `#` is replaced by a changing number, `@` by a changing hex id.
const TEMPLATES: [(&str, i32, &str); 20] = [
    ("GET /api/patients/# completed in # ms", 9, "http"),
    ("POST /reports accepted report @ in # ms", 9, "http"),
    ("cache miss for key patient:#", 5, "cache"),
    ("cache hit for key questionnaire:# (age # s)", 5, "cache"),
    ("report @ validated with score #", 9, "epro"),
    ("inserted # rows into reports in # ms", 9, "db"),
    ("SELECT reports WHERE patient = # returned # rows", 5, "db"),
    ("slow query: SELECT reports took # ms", 13, "db"),
    ("published message @ to patient-report.submitted", 9, "queue"),
    ("received message @ (redelivery #)", 9, "queue"),
    ("sms sent to patient # via provider #", 9, "sms"),
    ("sms gateway refused message @: 503 Service Unavailable", 17, "sms"),
    ("retrying request @ attempt #", 13, "http"),
    ("user # logged in from 10.0.#.#", 9, "auth"),
    ("token for user # expires in # s", 5, "auth"),
    ("connection pool size # idle #", 5, "db"),
    ("questionnaire # has # unanswered items", 13, "epro"),
    ("payload of # bytes exceeds the soft limit", 13, "http"),
    ("scheduled reminder @ for patient #", 9, "sms"),
    ("background sweep removed # expired sessions", 9, "auth"),
];

/// Generates the standard log profile.
pub struct LogGenerator {
    rng: StdRng,
    resources: Vec<Resource>,
    traces: u64,
}

/// A generator of the standard log profile (for the in-process cost examples).
pub fn profile_generator(seed: u64) -> LogGenerator {
    LogGenerator::new(seed)
}

impl LogGenerator {
    /// About `records` records of whole traces, as the receivers hand them on; and how many.
    pub fn batch(&mut self, records: usize) -> (strand_core::LogBatch, usize) {
        let (req, _, count) = self.request(records);
        let (batch, rejected) = strand_otlp::logs::from_request(req);
        assert_eq!(rejected.count, 0, "the profile's records are valid");
        (batch, count)
    }

    /// About `records` records of whole traces as an encoded OTLP/protobuf export
    /// request, as a client sends them; and how many.
    pub fn encoded_request(&mut self, records: usize) -> (Vec<u8>, usize) {
        let (req, _, count) = self.request(records);
        (prost::Message::encode_to_vec(&req), count)
    }

    fn new(seed: u64) -> Self {
        let resources = SERVICES
            .iter()
            .map(|name| Resource {
                attributes: vec![
                    kv("service.name", s(name)),
                    kv("service.version", s("1.4.2")),
                    kv("host.name", s("node-1")),
                    kv("telemetry.sdk.language", s("rust")),
                ],
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            })
            .collect();
        Self { rng: StdRng::seed_from_u64(seed), resources, traces: 0 }
    }

    fn body(&mut self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 32);
        for c in template.chars() {
            match c {
                '#' => out.push_str(&self.rng.random_range(0..100_000u32).to_string()),
                '@' => out.push_str(&format!("{:016x}", self.rng.random::<u64>())),
                c => out.push(c),
            }
        }
        out
    }

    fn record(&mut self, time: u64, trace: Option<([u8; 16], [u8; 8])>) -> LogRecord {
        let (template, severity, area) = TEMPLATES[self.rng.random_range(0..TEMPLATES.len())];
        let severity_text = ["", "TRACE", "DEBUG", "INFO", "WARN", "ERROR"][(severity as usize - 1) / 4 + 1];
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time + self.rng.random_range(10_000..2_000_000),
            severity_number: severity,
            severity_text: severity_text.into(),
            body: s(&self.body(template)),
            attributes: vec![
                kv("code.namespace", s(&format!("epro::{area}"))),
                kv("patient.id", int(self.rng.random_range(1..50_000))),
                kv("thread.name", s(&format!("tokio-runtime-worker-{}", self.rng.random_range(0..8)))),
            ],
            dropped_attributes_count: 0,
            flags: u32::from(trace.is_some()),
            trace_id: trace.map(|t| t.0.to_vec()).unwrap_or_default(),
            span_id: trace.map(|t| t.1.to_vec()).unwrap_or_default(),
            event_name: String::new(),
        }
    }

    /// One export request of whole traces' records (about `records`); returns it, the
    /// trace ids it wrote under, and its record count.
    fn request(&mut self, records: usize) -> (ExportLogsServiceRequest, Vec<[u8; 16]>, usize) {
        let mut by_service: Vec<Vec<LogRecord>> = vec![Vec::new(); SERVICES.len()];
        let mut ids = Vec::new();
        let mut count = 0;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        while count < records.max(1) {
            let tid: [u8; 16] = self.rng.random();
            ids.push(tid);
            self.traces += 1;
            let start = now - self.rng.random_range(5_000_000u64..80_000_000);
            for span in 0..SPANS {
                let sid: [u8; 8] = self.rng.random();
                let svc = span * SERVICES.len() / SPANS;
                for k in 0..PER_SPAN {
                    let t = start + (span * 3_000_000 + k * 400_000) as u64;
                    let r = self.record(t, Some((tid, sid)));
                    by_service[svc].push(r);
                }
            }
            count += TRACED;
            let untraced = UNTRACED_PER_4_TRACES / 4 + usize::from(self.traces.is_multiple_of(2));
            for _ in 0..untraced {
                let svc = self.rng.random_range(0..SERVICES.len());
                let at = now - self.rng.random_range(0..50_000_000);
                let r = self.record(at, None);
                by_service[svc].push(r);
            }
            count += untraced;
        }
        let scope = InstrumentationScope {
            name: "tracing-opentelemetry-appender".into(),
            version: "0.33.1".into(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
        };
        let resource_logs = by_service
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, log_records)| ResourceLogs {
                resource: Some(self.resources[i].clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope.clone()),
                    log_records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect();
        (ExportLogsServiceRequest { resource_logs }, ids, count)
    }
}

#[derive(Serialize, Default)]
struct Report {
    profile: String,
    records_sent: u64,
    traces: u64,
    seconds: f64,
    records_per_second: f64,
    server_cpu_seconds: Option<f64>,
    server_cpu_micros_per_record: Option<f64>,
    server_cpu_micros_per_record_including_final_flush: Option<f64>,
    /// Server CPU µs per record by thread, after the final flush: `tokio-rt-worker` decodes
    /// and answers requests, `strand-wal` appends and fsyncs, `strand-flush` cuts blocks.
    server_cpu_micros_per_record_by_thread: std::collections::BTreeMap<String, f64>,
    disk_bytes_blocks: Option<u64>,
    disk_bytes_per_record: Option<f64>,
    peak_server_rss_bytes: Option<u64>,
    lookups: usize,
    lookup_p50_ms: Option<f64>,
    lookup_p99_ms: Option<f64>,
    searches: Vec<Search>,
    data_dir: Option<String>,
}

#[derive(Serialize)]
struct Search {
    name: &'static str,
    path: String,
    runs: usize,
    results: usize,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// The searches timed, over the last hour (all of the data).
fn searches() -> Vec<(&'static str, &'static str)> {
    vec![
        ("text, rare (a few matches), 1h", "q=refused%20message&service=gateway&since=1h&limit=20"),
        ("text, common, 1h", "q=cache%20miss&since=1h&limit=20"),
        ("text with no match, 1h", "q=no%20such%20line&since=1h&limit=20"),
        // Hex ids and numbers are in every row group's filter: this one reads every body.
        ("an id nothing holds, 1h", "q=0123456789abcdef&since=1h&limit=20"),
        ("severity >= ERROR, 1h", "severity=ERROR&since=1h&limit=20"),
        (
            "service + severity >= WARN + text, 1h",
            "service=data-service&severity=WARN&q=slow&since=1h&limit=20",
        ),
        ("attribute, 1h", "attr=patient.id%3D4242&since=1h&limit=20"),
    ]
}

/// Runs the benchmark and prints the JSON report on stdout.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let server = ChildServer::start(&args.fsync, args.keep_data, &args.server_set)?;
    let pid = server.pid();
    let endpoint = format!("http://{}", server.grpc);
    let client = LogsServiceClient::connect(endpoint.clone())
        .await
        .with_context(|| format!("connecting to {endpoint}"))?
        .max_encoding_message_size(64 << 20);
    let bar = ProgressBar::new(args.records);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {human_pos}/{human_len} records {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let remaining = Arc::new(AtomicU64::new(args.records));
    let sent = Arc::new(AtomicU64::new(0));
    let cpu0 = proc_cpu_seconds(pid);
    let threads_before = proc_cpu_by_thread(pid);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    let per_worker_samples = (args.lookups / args.concurrency.max(1)).max(1);
    for w in 0..args.concurrency.max(1) {
        let (client, remaining, sent, bar) = (client.clone(), remaining.clone(), sent.clone(), bar.clone());
        let a = args.clone();
        workers.spawn(async move {
            let mut generator = LogGenerator::new(a.seed.wrapping_mul(1000).wrapping_add(w as u64));
            let mut rng = StdRng::seed_from_u64(a.seed ^ (w as u64 + 91));
            let mut samples: Vec<[u8; 16]> = Vec::new();
            let mut traces = 0u64;
            while let Some(n) = crate::ingest::claim(&remaining, a.batch_records as u64) {
                let (req, ids, count) = generator.request(n as usize);
                let resp = export_retrying(|| {
                    // A tonic client is a cheap handle on the shared channel.
                    let (mut client, req) = (client.clone(), req.clone());
                    async move { client.export(req).await }
                })
                .await?;
                if let Some(ps) = resp.into_inner().partial_success
                    && ps.rejected_log_records > 0
                {
                    bail!("server rejected {} records: {}", ps.rejected_log_records, ps.error_message);
                }
                for id in ids {
                    traces += 1;
                    reservoir(&mut samples, per_worker_samples, traces, id, &mut rng);
                }
                sent.fetch_add(count as u64, Ordering::Relaxed);
                bar.inc(count as u64);
            }
            Ok::<_, anyhow::Error>((samples, traces))
        });
    }
    let mut samples = Vec::new();
    let mut report = Report {
        profile: format!(
            "standard logs: {PER_SPAN} records per span of {SPANS}-span traces, 80 % with trace context, 20 templates, 3 attributes"
        ),
        ..Report::default()
    };
    while let Some(r) = workers.join_next().await {
        let (s, t) = r.context("worker panicked")??;
        samples.extend(s);
        report.traces += t;
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    report.records_sent = sent.load(Ordering::Relaxed);
    report.seconds = seconds;
    report.records_per_second = report.records_sent as f64 / seconds;
    let per_record = |cpu: f64| cpu / report.records_sent as f64 * 1e6;
    if let (Some(a), Some(b)) = (cpu0, proc_cpu_seconds(pid)) {
        report.server_cpu_seconds = Some(b - a);
        report.server_cpu_micros_per_record = Some(per_record(b - a));
    }
    let http = reqwest::Client::new();
    eprintln!("flushing the head into blocks...");
    let resp = http
        .post(format!("{}/api/v1/admin/flush", server.http))
        .header("content-type", "application/json")
        .send()
        .await
        .context("flush request")?;
    if !resp.status().is_success() {
        bail!("flush failed: {}", resp.text().await.unwrap_or_default());
    }
    if let (Some(a), Some(c)) = (cpu0, proc_cpu_seconds(pid)) {
        report.server_cpu_micros_per_record_including_final_flush = Some(per_record(c - a));
    }
    let threads_after = proc_cpu_by_thread(pid);
    report.server_cpu_micros_per_record_by_thread = threads_after
        .iter()
        .map(|(name, cpu)| (name.clone(), per_record(cpu - threads_before.get(name).copied().unwrap_or(0.0))))
        .filter(|(_, us)| *us >= 0.01)
        .collect();
    let blocks = dir_bytes(&server.data_dir().join("blocks"));
    report.disk_bytes_blocks = Some(blocks);
    report.disk_bytes_per_record = Some(blocks as f64 / report.records_sent as f64);

    eprintln!("timing {} logs-of-a-trace lookups...", samples.len());
    let mut lat = Vec::with_capacity(samples.len());
    for id in &samples {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let t = Instant::now();
        let body: serde_json::Value = http
            .get(format!("{}/api/v1/logs?traceId={hex}", server.http))
            .send()
            .await
            .context("lookup")?
            .json()
            .await
            .context("lookup body")?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        if body["count"].as_u64() != Some(TRACED as u64) {
            bail!("logs of trace {hex}: {} records, expected {TRACED}", body["count"]);
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    report.lookups = lat.len();
    report.lookup_p50_ms = percentile(&lat, 0.5);
    report.lookup_p99_ms = percentile(&lat, 0.99);

    for (name, query) in searches() {
        eprintln!("timing {} runs of {name}...", args.runs);
        let path = format!("/api/v1/logs?{query}");
        let mut lat = Vec::with_capacity(args.runs);
        let mut results = 0;
        for _ in 0..args.runs {
            let t = Instant::now();
            let resp = http.get(format!("{}{path}", server.http)).send().await.context("search")?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.context("search body")?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            if !status.is_success() {
                bail!("{path} returned {status}: {body}");
            }
            results = body["count"].as_u64().unwrap_or(0) as usize;
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        report.searches.push(Search {
            name,
            path,
            runs: args.runs,
            results,
            p50_ms: percentile(&lat, 0.5),
            p99_ms: percentile(&lat, 0.99),
        });
    }
    report.peak_server_rss_bytes = proc_peak_rss(pid);
    if args.keep_data {
        report.data_dir = Some(server.data_dir().display().to_string());
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_has_its_shape() {
        let mut g = LogGenerator::new(3);
        let (req, ids, count) = g.request(500);
        let records: Vec<&LogRecord> =
            req.resource_logs.iter().flat_map(|rl| &rl.scope_logs).flat_map(|sl| &sl.log_records).collect();
        assert_eq!(records.len(), count);
        let traced = records.iter().filter(|r| !r.trace_id.is_empty()).count();
        assert_eq!(traced, ids.len() * TRACED);
        let share = traced as f64 / count as f64;
        assert!((0.78..0.82).contains(&share), "{share} of the records carry trace context");
        assert!(records.iter().all(|r| r.attributes.len() == 3));
        let mut bodies: Vec<String> = records.iter().map(|r| format!("{:?}", r.body)).collect();
        bodies.sort();
        bodies.dedup();
        assert!(bodies.len() > count * 9 / 10, "bodies change: {} distinct of {count}", bodies.len());
    }
}
