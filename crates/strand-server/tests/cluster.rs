//! The roles as separate processes on a real NATS JetStream (Debian's `nats-server`) and a
//! real S3-compatible server (`s3s-fs` from crates.io; `scripts/test.sh` installs both):
//! two receivers, two ingesters, one querier. Spans of one trace go through both
//! receivers; an ingester is killed with SIGKILL in the middle and restarted, another
//! leaves; ingesters cut blocks every few seconds and hand them over to object storage,
//! where the querier reads them. Every acknowledged span is read back through the querier
//! exactly once, before and after the handoffs; searches, services and dependencies answer
//! as for one machine, and chain integrity (a queue hop whose two traces land on two
//! ingesters included) finds what one machine finds on the same spans.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{ChildServer, eventually, export_batch_to, get_json, metric_value, spawn_binary};
use strand_core::{KeyValue, Resource, ResourceSpans, Scope, ScopeSpans, Span, SpanBatch, SpanId, TraceId};

const PARTITIONS: u32 = 8;

struct Nats {
    child: Child,
    url: String,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nats-server -js` on a free port, or `None` when it is missing and not required.
async fn nats(dir: &Path) -> Option<Nats> {
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"].into_iter().find(|p| Path::new(p).exists());
    let Some(bin) = bin else {
        let required =
            std::env::var_os("INTEROP_TESTS_REQUIRED").is_some() || std::env::var_os("CI").is_some();
        assert!(!required, "nats-server missing: run scripts/test.sh, which installs it");
        eprintln!("SKIPPED: nats-server missing; run scripts/test.sh to install it");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let nats = Nats { child, url: format!("nats://127.0.0.1:{port}") };
    eventually("nats-server to listen", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await;
    Some(nats)
}

struct S3 {
    child: Child,
    endpoint: String,
    root: std::path::PathBuf,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const S3_KEY: &str = "strandtest";
const S3_SECRET: &str = "strandtestsecret";

/// `s3s-fs` on a free port with a bucket `strand`, or `None` when it is missing and not
/// required (`scripts/test.sh` builds it into `.tools/s3s`).
async fn s3(dir: &Path) -> Option<S3> {
    let bin = std::env::var_os("S3S_FS_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/s3s/bin/s3s-fs"));
    if !bin.exists() {
        let required =
            std::env::var_os("INTEROP_TESTS_REQUIRED").is_some() || std::env::var_os("CI").is_some();
        assert!(!required, "s3s-fs missing at {}: run scripts/test.sh, which builds it", bin.display());
        eprintln!("SKIPPED: s3s-fs missing; run scripts/test.sh to build it");
        return None;
    }
    std::fs::create_dir_all(dir.join("strand")).expect("bucket directory");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    let s3 = S3 { child, endpoint: format!("http://127.0.0.1:{port}"), root: dir.to_path_buf() };
    eventually("s3s-fs to listen", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await;
    Some(s3)
}

/// The blocks object storage holds (uploaded whole: `meta.json` is written last).
fn blocks_in(s3: &S3) -> usize {
    let dir = s3.root.join("strand/cluster-test/single-tenant/blocks");
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter(|e| e.path().join("meta.json").exists()).count())
        .unwrap_or(0)
}

fn role_args(role: &str, nats: &str, s3: &str, id: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "--role".to_owned(),
        role.to_owned(),
        "--set".to_owned(),
        format!("cluster.nats_url={nats}"),
        "--set".to_owned(),
        format!("cluster.partitions={PARTITIONS}"),
        "--set".to_owned(),
        // Long enough for a killed ingester to restart and take its own leases back (what
        // it had not acknowledged then comes back to it, not to the other one).
        "cluster.lease_ttl=20s".to_owned(),
        "--set".to_owned(),
        "cluster.ack_wait=2s".to_owned(),
        "--set".to_owned(),
        "integrity.settle_time=1s".to_owned(),
    ];
    // Blocks are cut every 2 s and handed over 3 s after their upload; the ingesters keep
    // their copies 3 s more.
    for set in [
        "cluster.objects.url=s3://strand/cluster-test".to_owned(),
        format!("cluster.objects.endpoint={s3}"),
        format!("cluster.objects.access_key_id={S3_KEY}"),
        format!("cluster.objects.secret_access_key={S3_SECRET}"),
        "cluster.objects.handoff_delay=3s".to_owned(),
        "cluster.objects.keep_after_handoff=3s".to_owned(),
        "cluster.objects.compaction_interval=2s".to_owned(),
        "storage.head_max_age=2s".to_owned(),
        // Small blocks merged as soon as there are two, not by the hour.
        "storage.compaction_window=0s".to_owned(),
    ] {
        args.extend(["--set".to_owned(), set]);
    }
    if let Some(id) = id {
        args.extend(["--set".to_owned(), format!("cluster.ingester_id={id}")]);
    }
    args
}

/// Tail sampling on the ingesters: every trace kept, each decided 6 s after its first span
/// (so a trace's two halves wait for one decision together).
const SAMPLING: &str = "decision_wait: 6s\npolicies:\n  - { name: all, type: always_sample }\n";

fn spawn_role(dir: &Path, role: &str, (nats, s3): (&str, &str), id: Option<&str>) -> ChildServer {
    let mut args = role_args(role, nats, s3, id);
    if role == "ingester" {
        let file = dir.with_file_name("sampling.yaml");
        std::fs::write(&file, SAMPLING).expect("sampling config");
        args.extend(["--sampling-config".to_owned(), file.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_binary(dir, &args)
}

/// A series of an ingester's `/metrics`.
async fn metric(ingester: &ChildServer, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", ingester.http)).await.ok()?.text().await.ok()?;
    metric_value(&text, series)
}

/// Partitions an ingester holds, from its `/metrics`.
async fn owned(ingester: &ChildServer) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", ingester.http)).await.ok()?.text().await.ok()?;
    metric_value(&text, "strand_cluster_partitions_owned")
}

/// Blocks an ingester deleted after handing them over, from its `/metrics`.
async fn handed_over(ingester: &ChildServer) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", ingester.http)).await.ok()?.text().await.ok()?;
    metric_value(&text, "strand_cluster_blocks_handed_over_total")
}

/// Merges an ingester made in object storage, from its `/metrics`.
async fn compactions(ingester: &ChildServer) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", ingester.http)).await.ok()?.text().await.ok()?;
    metric_value(&text, "strand_cluster_compactions_total")
}

/// Messages an ingester wrote and acknowledged, from its `/metrics`.
async fn consumed(ingester: &ChildServer) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", ingester.http)).await.ok()?.text().await.ok()?;
    metric_value(&text, "strand_cluster_consumed_messages_total")
}

fn attr(k: &str, v: &str) -> KeyValue {
    KeyValue::new(k, strand_core::AnyValue::String(v.into()))
}

fn resource(service: &str) -> std::sync::Arc<Resource> {
    std::sync::Arc::new(Resource {
        attributes: vec![attr("service.name", service), attr("test.suite", "cluster")],
        ..Resource::default()
    })
}

/// Trace `n`: gateway → user-service → epro-service, and two more epro-service spans;
/// the first three spans in one batch, the last two in another.
fn trace(n: u32, now: u64) -> (TraceId, SpanBatch, SpanBatch) {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id[4..12].copy_from_slice(&0x5eed_c1a5_7e12_0000u64.to_be_bytes());
    id[15] = 1;
    let trace_id = TraceId(id);
    let span_id = |i: u8| {
        let mut s = [0u8; 8];
        s[..4].copy_from_slice(&n.to_be_bytes());
        s[7] = i + 1;
        SpanId(s)
    };
    let start = now - 60_000_000_000 + u64::from(n) * 1_000_000;
    let mk = |i: u8, parent: Option<u8>, name: &str| {
        let mut s = Span::new(trace_id, span_id(i), name, start + u64::from(i) * 1000, start + 500_000);
        s.parent_span_id = parent.map(span_id);
        s.attributes = vec![attr("report.id", &format!("r-{n}"))];
        s
    };
    let group = |service: &str, spans: Vec<Span>| ResourceSpans {
        resource: resource(service),
        scope_spans: vec![ScopeSpans { scope: std::sync::Arc::new(Scope::default()), spans }],
    };
    let first = SpanBatch {
        resource_spans: vec![
            group("gateway", vec![mk(0, None, "POST /reports")]),
            group("user-service", vec![mk(1, Some(0), "GetUser")]),
            group("epro-service", vec![mk(2, Some(1), "SubmitReport")]),
        ],
    };
    let second = SpanBatch {
        resource_spans: vec![group("epro-service", vec![mk(3, Some(2), "Validate"), mk(4, Some(2), "Save")])],
    };
    (trace_id, first, second)
}

/// Sends traces `range` through the receivers, the two halves of each through different
/// receivers.
async fn send(receivers: &[&ChildServer], range: std::ops::Range<u32>, now: u64, sent: &mut Sent) {
    send_halves(receivers, range.clone(), now, sent, 0).await;
    send_halves(receivers, range, now, sent, 1).await;
}

/// Sends half `half` (0 or 1) of each trace of `range`, alternating the receivers.
async fn send_halves(
    receivers: &[&ChildServer],
    range: std::ops::Range<u32>,
    now: u64,
    sent: &mut Sent,
    half: u32,
) {
    for n in range {
        let (_, first, second) = trace(n, now);
        let batch = if half == 0 { first } else { second };
        export_batch_to(&receivers[((n + half) % 2) as usize].otlp_http, &batch).await;
        sent.add(&batch);
    }
}

/// What the receivers acknowledged.
#[derive(Default)]
struct Sent {
    spans: Vec<strand_core::StoredSpan>,
}

impl Sent {
    fn add(&mut self, batch: &SpanBatch) {
        self.spans.extend(batch.clone().into_stored());
    }

    /// Spans per trace.
    fn traces(&self) -> BTreeMap<TraceId, usize> {
        let mut out = BTreeMap::new();
        for s in &self.spans {
            *out.entry(s.span.trace_id).or_insert(0) += 1;
        }
        out
    }

    /// Calls per caller → callee service: one per span whose parent has another service.
    fn edges(&self) -> BTreeMap<(String, String), u64> {
        let by_id: BTreeMap<(TraceId, SpanId), &str> = self
            .spans
            .iter()
            .map(|s| ((s.span.trace_id, s.span.span_id), s.resource.service_name()))
            .collect();
        let mut out = BTreeMap::new();
        for s in &self.spans {
            let Some(parent) = s.span.parent_span_id.and_then(|p| by_id.get(&(s.span.trace_id, p))) else {
                continue;
            };
            if *parent != s.resource.service_name() {
                *out.entry((parent.to_string(), s.resource.service_name().to_owned())).or_insert(0) += 1;
            }
        }
        out
    }
}

/// Every trace of `sent` is read whole through the querier, each span once.
async fn all_found(querier: &ChildServer, sent: &Sent) {
    let client = reqwest::Client::new();
    for (id, spans) in &sent.traces() {
        let url = format!("http://{}/api/v1/traces/{id}", querier.http);
        let client = client.clone();
        eventually(&format!("trace {id} whole through the querier"), || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let resp = client.get(&url).send().await.ok()?;
                if resp.status() != 200 {
                    return None;
                }
                let body: serde_json::Value = resp.json().await.ok()?;
                let got = body["spanCount"].as_u64()? as usize;
                assert!(got <= *spans, "trace {id}: {got} spans read, {spans} sent: a span was read twice");
                (got == *spans).then_some(())
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_two_ingesters_one_querier_lose_nothing_through_a_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(nats) = nats(&dir.path().join("nats")).await else { return };
    let Some(s3) = s3(&dir.path().join("s3")).await else { return };
    let now = strand_store::now_unix_nano();
    let d = |name: &str| dir.path().join(name);
    let at = (nats.url.as_str(), s3.endpoint.as_str());
    let receivers = [spawn_role(&d("r1"), "receiver", at, None), spawn_role(&d("r2"), "receiver", at, None)];
    let mut i1 = spawn_role(&d("i1"), "ingester", at, Some("i1"));
    let i2 = spawn_role(&d("i2"), "ingester", at, Some("i2"));
    let querier = spawn_role(&d("q"), "querier", at, None);

    // The partitions are shared between the two ingesters.
    eventually("both ingesters to hold half of the partitions", || async {
        let (a, b) = (owned(&i1).await?, owned(&i2).await?);
        (a == f64::from(PARTITIONS / 2) && b == f64::from(PARTITIONS / 2)).then_some(())
    })
    .await;

    let r = [&receivers[0], &receivers[1]];
    let mut sent = Sent::default();
    send(&r, 0..60, now, &mut sent).await;
    // The patient-report traces of the demo, through the first receiver.
    for batch in strand_server::demo::submissions(now) {
        sent.add(&batch);
        export_batch_to(&receivers[0].otlp_http, &batch).await;
    }
    all_found(&querier, &sent).await;
    // The ingesters cut blocks, upload them and, after the handoff, delete their copies:
    // the same traces are then read from object storage, still each span once.
    eventually("both ingesters to hand blocks over to object storage", || async {
        (handed_over(&i1).await? >= 1.0 && handed_over(&i2).await? >= 1.0).then_some(())
    })
    .await;
    assert!(blocks_in(&s3) >= 2, "blocks in object storage: {}", blocks_in(&s3));
    all_found(&querier, &sent).await;
    // One ingester at a time merges the small blocks there (once no ingester answers for
    // them); readers go on finding each span once.
    eventually("an ingester to compact blocks in object storage", || async {
        (compactions(&i1).await? + compactions(&i2).await? >= 1.0).then_some(())
    })
    .await;
    all_found(&querier, &sent).await;
    // One page at a time, newest first: pages neither repeat nor skip (checked while no
    // partition has moved: a trace split across ingesters can shift a page, see
    // docs/cluster.md).
    let mut paged = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let page = get_json(&format!(
            "http://{}{}",
            querier.http,
            &format!(
                "/api/v1/search?resourceAttr=test.suite=cluster&operation=Save&limit=25&since=1h{cursor}"
            )
        ))
        .await;
        paged.extend(
            page["traces"]
                .as_array()
                .expect("traces")
                .iter()
                .map(|t| t["traceId"].as_str().expect("id").to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let mut unique = paged.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((paged.len(), unique.len()), (60, 60), "paging through the querier");

    // SIGKILL one ingester while traces keep coming; the receivers go on acknowledging
    // (JetStream holds the killed ingester's partitions), then it comes back.
    // The kill comes while messages are being written, so some were written and not yet
    // acknowledged: JetStream delivers them again, and they must not count twice.
    let before = consumed(&i1).await.expect("consumed count");
    let killing = async {
        eventually("the ingester to consume more", || async {
            (consumed(&i1).await? >= before + 10.0).then_some(())
        })
        .await;
        i1.child.kill().expect("kill -9 the ingester");
        let _ = i1.child.wait();
    };
    tokio::join!(send(&r, 60..120, now, &mut sent), killing);
    i1 = spawn_role(&d("i1"), "ingester", at, Some("i1"));
    send(&r, 120..150, now, &mut sent).await;
    all_found(&querier, &sent).await;
    eventually("the restarted ingester to hold its half again", || async {
        (owned(&i1).await? == f64::from(PARTITIONS / 2)).then_some(())
    })
    .await;

    // Searches and listings merge the ingesters' answers.
    let q = |path: &str| format!("http://{}{path}", querier.http);
    let found =
        get_json(&q("/api/v1/search?service=gateway&resourceAttr=test.suite=cluster&limit=1000&since=1h"))
            .await;
    let traces = found["traces"].as_array().expect("traces");
    assert_eq!(traces.len(), 150, "every generated trace: {found}");
    assert!(traces.iter().all(|t| t["spanCount"] == 5), "each summarised from all its spans: {found}");
    let services = get_json(&q("/api/v1/services")).await;
    for s in ["gateway", "user-service", "epro-service"] {
        assert!(services.to_string().contains(s), "{s} in {services}");
    }
    // Each call once, although the kill left messages written and not acknowledged.
    let deps = get_json(&q("/api/v1/dependencies")).await;
    let edges: BTreeMap<(String, String), u64> = deps["dependencies"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            let name = |k: &str| e[k].as_str().expect("service").to_owned();
            ((name("parent"), name("child")), e["callCount"].as_u64().expect("count"))
        })
        .collect();
    assert_eq!(edges, sent.edges(), "dependencies through the querier");
    assert!(edges.get(&("gateway".to_owned(), "user-service".to_owned())) >= Some(&150), "{deps}");

    // Chain integrity through the querier is what one machine finds on the same spans.
    let one = spawn_binary(&d("one"), &["--set", "integrity.settle_time=1s"]);
    for chunk in sent.spans.chunks(500) {
        export_batch_to(&one.otlp_http, &SpanBatch::from_stored(chunk.iter().cloned())).await;
    }
    let broken = |server: &ChildServer| {
        let url = format!("http://{}/api/v1/search?integrity=broken&limit=1000&since=1h", server.http);
        async move {
            let page = get_json(&url).await;
            let mut ids: Vec<(String, String)> = page["traces"]
                .as_array()
                .expect("traces")
                .iter()
                .map(|t| (t["traceId"].as_str().expect("id").to_owned(), t["integrity"].to_string()))
                .collect();
            ids.sort();
            ids
        }
    };
    let expected = eventually("one machine to settle the broken traces", || async {
        let found = broken(&one).await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    eventually("the querier to find the same broken traces", || async {
        let found = broken(&querier).await;
        (found == expected).then_some(())
    })
    .await;
    for (id, _) in &expected {
        let findings = |server: &ChildServer| {
            let url = format!("http://{}/api/v1/traces/{id}", server.http);
            async move { get_json(&url).await["integrity"].clone() }
        };
        assert_eq!(findings(&querier).await, findings(&one).await, "trace {id}'s integrity");
    }
    let edges = |server: &ChildServer| {
        let url = format!("http://{}/api/v1/integrity/edges", server.http);
        async move {
            let body = get_json(&url).await;
            let mut e: Vec<String> = body["edges"]
                .as_array()
                .expect("edges")
                .iter()
                .map(|e| format!("{} -> {} via {}", e["caller"], e["callee"], e["via"]))
                .collect();
            e.sort();
            e
        }
    };
    assert_eq!(edges(&querier).await, edges(&one).await, "edge health through the querier");
    // RED counts every span received, as on one machine (any ingester's covers them all).
    let red = |server: &ChildServer| {
        let url = format!("http://{}/api/v1/metrics/red?since=1h", server.http);
        async move {
            let body = get_json(&url).await;
            let mut ops: Vec<String> = body["operations"]
                .as_array()
                .expect("operations")
                .iter()
                .map(|o| format!("{} {} {} {}", o["service"], o["operation"], o["spanKind"], o["requests"]))
                .collect();
            ops.sort();
            ops
        }
    };
    let expected = red(&one).await;
    assert!(expected.iter().any(|o| o.starts_with("\"gateway\"")), "{expected:?}");
    assert_eq!(red(&querier).await, expected, "RED through the querier");

    // An ingester that leaves gives its partitions back at once; the other takes them all,
    // and with them the traces waiting for their tail-sampling decision on the one that
    // left: the first halves of 20 traces wait on both ingesters when it stops; the second
    // halves come after. Each trace gets one decision, on all of its spans.
    let kept = "strand_sampling_traces_kept_total";
    let waiting = "strand_sampling_buffer_traces";
    eventually("earlier traces to be decided", || async {
        (metric(&i1, waiting).await? == 0.0 && metric(&i2, waiting).await? == 0.0).then_some(())
    })
    .await;
    let kept_before = metric(&i1, kept).await.expect("kept count");
    let mut more = Sent::default();
    send_halves(&r, 150..170, now, &mut more, 0).await;
    eventually("first halves waiting for decisions on both ingesters", || async {
        (metric(&i1, waiting).await? >= 1.0 && metric(&i2, waiting).await? >= 1.0).then_some(())
    })
    .await;
    let status =
        Command::new("kill").args(["-TERM", &i2.child.id().to_string()]).status().expect("kill -TERM");
    assert!(status.success());
    eventually("the remaining ingester to hold every partition", || async {
        (owned(&i1).await? == f64::from(PARTITIONS)).then_some(())
    })
    .await;
    drop(i2);
    send_halves(&r, 150..170, now, &mut more, 1).await;
    all_found(&querier, &more).await;
    assert_eq!(
        metric(&i1, kept).await.expect("kept count") - kept_before,
        20.0,
        "one decision per trace, all on the ingester that took the partitions"
    );
    // Once everything is handed over (no block or head span left on the ingester: a count
    // of handoffs read after the traces were found may already include theirs), all of it
    // is read from object storage, once.
    eventually("the restarted ingester to hand over what it wrote since", || async {
        let text = reqwest::get(format!("http://{}/metrics", i1.http)).await.ok()?.text().await.ok()?;
        let left = metric_value(&text, "strand_blocks")? + metric_value(&text, "strand_head_spans")?;
        (left == 0.0).then_some(())
    })
    .await;
    all_found(&querier, &sent).await;

    // A querier refuses writes and a receiver refuses reads, each saying where to go.
    let resp = reqwest::get(q("/api/v1/traces/0af7651916cd43dd8448eb211c80319c")).await.expect("get");
    assert_eq!(resp.status(), 404, "an unknown trace through the querier");
    let resp = reqwest::get(format!("http://{}/api/v1/services", receivers[0].http)).await.expect("get");
    let text = resp.text().await.unwrap_or_default();
    assert!(text.contains("ask a querier"), "{text}");
    drop(nats);
}
