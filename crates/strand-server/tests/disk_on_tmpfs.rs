//! On a real small file system (a tmpfs the test mounts, which needs root; skipped
//! otherwise): the disk budget holds under a stream of spans, and a full disk gets every
//! request answered at once (503 with `Retry-After`, readiness naming why) until space
//! returns, with nothing acknowledged lost.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use strand_core::{SpanBatch, TraceId};

/// A tmpfs mounted on a temporary directory for the test's life.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u64) -> Option<Self> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        if !status.success() {
            eprintln!("skipped: this machine does not let root mount a tmpfs");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Traces `from..from + count` of 10 spans each, in one batch.
fn traces(from: u32, count: u32) -> SpanBatch {
    let mut out = SpanBatch::default();
    for n in from..from + count {
        let mut b = strand_store::testdata::batch((n % 200) as u8, 10);
        for rs in &mut b.resource_spans {
            for ss in &mut rs.scope_spans {
                for sp in &mut ss.spans {
                    sp.trace_id = trace_id(n);
                }
            }
        }
        out.resource_spans.extend(b.resource_spans);
    }
    out
}

fn trace_id(n: u32) -> TraceId {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id[15] = 0x5a;
    TraceId(id)
}

/// Posts a batch as OTLP/HTTP protobuf; the status, which must come within 10 s.
async fn post(client: &reqwest::Client, server: &common::TestServer, batch: &SpanBatch) -> u16 {
    use prost::Message as _;
    let request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: strand_otlp::to_resource_spans(batch),
    };
    let resp = client
        .post(server.otlp_url())
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .expect("every export is answered within 10 s");
    let status = resp.status().as_u16();
    if status != 200 {
        assert!(
            matches!(status, 429 | 503),
            "export answered {status}: {}",
            resp.text().await.unwrap_or_default()
        );
        assert!(resp.headers().contains_key("retry-after"), "a refusal says when to retry");
    }
    status
}

fn stored_bytes(data: &Path) -> u64 {
    strand_store::testdata::dir_bytes(&data.join("wal"))
        + strand_store::testdata::dir_bytes(&data.join("blocks"))
}

/// Polls `check` every 20 ms until it holds, for at most 60 s.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client")
}

async fn has_trace(server: &common::TestServer, n: u32) -> bool {
    let url = server.query(&format!("/api/v1/traces/{}", trace_id(n)));
    reqwest::get(url).await.expect("get").status() == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_budget_holds_on_a_small_tmpfs() {
    let Some(tmpfs) = Tmpfs::mount(16) else { return };
    let data: PathBuf = tmpfs.path().join("data");
    let budget = 2 * 1024 * 1024;
    let server = common::start(|c| {
        c.data_dir = data.clone();
        c.storage.max_disk_size = Some(format!("{budget}B").parse().expect("size"));
    })
    .await;
    let client = client();
    let (mut sent_bytes, mut most, mut refused) = (0, 0, 0);
    let per_request = 100;
    for request in 0..200 {
        let batch = traces(request * per_request, per_request);
        sent_bytes +=
            strand_otlp::to_resource_spans(&batch).iter().map(prost::Message::encoded_len).sum::<usize>();
        until("an export is accepted", async || {
            let ok = post(&client, &server, &batch).await == 200;
            refused += u32::from(!ok);
            ok
        })
        .await;
        most = most.max(stored_bytes(&data));
    }
    println!("sent {sent_bytes} bytes; most stored {most}; refused {refused} times");
    assert!(sent_bytes as u64 > 4 * budget, "the test sends far more than the budget");
    assert!(most < 2 * budget, "stored {most} bytes at one point, budget {budget}");
    until("the data directory is within the budget", async || stored_bytes(&data) <= budget).await;
    let metrics = reqwest::get(server.query("/metrics")).await.expect("metrics").text().await.expect("text");
    let deleted = common::metric_value(&metrics, "strand_retention_deleted_blocks_total").expect("metric");
    assert!(deleted >= 1.0, "old blocks made room");
    assert!(has_trace(&server, 200 * per_request - 1).await, "the newest trace is kept");
    assert!(!has_trace(&server, 0).await, "the oldest trace went first");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_at_once_and_recovers_when_space_returns() {
    let Some(tmpfs) = Tmpfs::mount(12) else { return };
    let data = tmpfs.path().join("data");
    let server = common::start(|c| c.data_dir = data.clone()).await;
    let client = client();
    // Fill the file system, then give back 1 MiB.
    let filler = tmpfs.path().join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![7u8; 256 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let len = f.metadata().expect("len").len();
        f.set_len(len.saturating_sub(1024 * 1024)).expect("shrink filler");
    }
    let mut acked = Vec::new();
    let mut n = 0;
    loop {
        assert!(n < 10_000, "a nearly full disk took 10,000 traces");
        match post(&client, &server, &traces(n, 20)).await {
            200 => acked.push(n),
            503 => break,
            other => panic!("a full disk answers 503, not {other}"),
        }
        n += 20;
    }
    let ready = reqwest::get(server.query("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "not ready", "{body}");
    let reasons = body["reasons"].as_array().expect("reasons");
    assert!(
        reasons.iter().any(|r| r.as_str().is_some_and(|r| r.starts_with("wal: ") && r.contains("No space"))),
        "{body}"
    );
    assert_eq!(reqwest::get(server.query("/healthz")).await.expect("healthz").status(), 200, "still serving");
    for _ in 0..2 {
        let flush = client
            .post(server.query("/api/v1/admin/flush"))
            .header("content-type", "application/json")
            .send()
            .await;
        let status = flush.expect("a flush on a full disk is answered at once").status();
        assert_eq!(status, 503, "a flush on a full disk fails");
    }

    std::fs::remove_file(&filler).expect("free space");
    until("an export is accepted again", async || post(&client, &server, &traces(n, 20)).await == 200).await;
    acked.push(n);
    until("a flush succeeds", async || {
        client
            .post(server.query("/api/v1/admin/flush"))
            .header("content-type", "application/json")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    until("ready again", async || {
        reqwest::get(server.query("/readyz")).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    for &first in &acked {
        assert!(
            has_trace(&server, first).await && has_trace(&server, first + 19).await,
            "traces from {first} lost"
        );
    }
    server.stop().await;
}
