//! SIGKILL at random moments while clients send: after a restart every span whose request
//! got success is there exactly once. Small head limits make block cuts and WAL segment
//! deletion happen during the run too.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rand::Rng;
use std::sync::Mutex;

const SPANS_PER_BATCH: usize = 7;

fn batch(n: u32) -> Vec<u8> {
    let mut tid = [0x5a_u8; 16];
    tid[..4].copy_from_slice(&n.to_be_bytes());
    let spans = (0..SPANS_PER_BATCH as u8)
        .map(|i| Span {
            trace_id: tid.to_vec(),
            span_id: vec![i + 1, 2, 3, 4, 5, 6, 7, 8],
            parent_span_id: if i == 0 { vec![] } else { vec![1, 2, 3, 4, 5, 6, 7, 8] },
            name: format!("op-{i}"),
            start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i),
            end_time_unix_nano: 1_700_000_000_000_000_100 + u64::from(i),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn trace_hex(n: u32) -> String {
    let mut tid = [0x5a_u8; 16];
    tid[..4].copy_from_slice(&n.to_be_bytes());
    tid.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let args = ["--set", "storage.head_max_spans=300", "--set", "storage.compaction_window=0s"];
    let acked: Arc<Mutex<HashMap<u32, bool>>> = Arc::default();
    let mut next = 0u32;
    let mut rng = rand::rng();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    for round in 0..4 {
        let mut server = common::spawn_binary(&data, &args);
        let url = format!("http://{}/v1/traces", server.otlp_http);
        let mut senders = Vec::new();
        for _ in 0..4 {
            let first = next;
            next += 10_000;
            let (url, client, acked) = (url.clone(), client.clone(), acked.clone());
            senders.push(tokio::spawn(async move {
                for n in first..first + 10_000 {
                    let resp = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(batch(n))
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status().is_success() => {
                            acked.lock().expect("lock").insert(n, true);
                        }
                        Ok(r) => panic!("unexpected status {} before the kill", r.status()),
                        Err(_) => return, // the server died under us
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..600))).await;
        server.child.kill().expect("SIGKILL");
        server.child.wait().expect("reap");
        for s in senders {
            s.await.expect("sender");
        }
        assert!(
            acked.lock().expect("lock").len() > round * 4,
            "round {round}: some requests were acknowledged before the kill"
        );
    }
    // Default head limits now, so the replayed head is not cut into a block at start.
    let server = common::spawn_binary(&data, &[]);
    let acked = acked.lock().expect("lock").clone();
    for n in acked.keys() {
        let resp = client
            .get(format!("http://{}/api/v1/traces/{}", server.http, trace_hex(*n)))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200, "acknowledged batch {n} lost; log: {}", common::log_text(&data));
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(body["spanCount"], SPANS_PER_BATCH, "batch {n} not exactly once");
    }
    // The store accounts for every acknowledged span, and whatever it holds in its head
    // after the restart came from replaying the WAL.
    let metrics = client
        .get(format!("http://{}/metrics", server.http))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |series: &str| {
        common::metric_value(&metrics, series).unwrap_or_else(|| panic!("{series} missing from\n{metrics}"))
    };
    let (head, in_blocks) = (value("strand_head_spans"), value("strand_block_spans"));
    let replayed = value("strand_wal_replayed_records_total");
    assert!(
        head + in_blocks >= (acked.len() * SPANS_PER_BATCH) as f64,
        "{head} spans in the head and {in_blocks} in blocks cannot hold {} acknowledged batches",
        acked.len()
    );
    assert_eq!(head > 0.0, replayed > 0.0, "head spans after a restart come only from the WAL: {metrics}");
    // Kills during cuts, compactions and deletions leave nothing a start mistakes for damage.
    assert!(!data.join("corrupt").exists(), "a block was set aside as corrupt after the kills");
    eprintln!("{} acknowledged batches verified after 4 kills", acked.len());
}
