//! Blocks holding log records say so in their version (2 or later), so a strand without
//! log support refuses them. Since version 4 every block is written as version 4, with or
//! without log records; only those with records have log files.

use std::sync::Arc;

use strand_store::fs::{FileSystem, StdFs};
use strand_store::testdata::{batch, log_batch};
use strand_store::{Store, StoreConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_with_log_records_is_a_version_a_strand_without_logs_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open");
    store.append(batch(1, 3)).await.expect("write");
    store.flush().await.expect("flush");
    store.append(batch(2, 3)).await.expect("write");
    store.append_logs(log_batch(2, 2)).await.expect("write logs");
    store.flush().await.expect("flush");
    store.close();
    let mut found: Vec<(u64, u64, Vec<String>)> = StdFs
        .list(&dir.path().join("blocks"))
        .expect("list")
        .into_iter()
        .map(|b| {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(b.join("meta.json")).expect("meta")).expect("json");
            let files =
                meta["files"].as_array().expect("files").iter().map(|f| f["name"].to_string()).collect();
            (
                meta["format_version"].as_u64().expect("version"),
                meta["log_count"].as_u64().expect("count"),
                files,
            )
        })
        .collect();
    found.sort();
    assert_eq!(found.len(), 2, "{found:?}");
    let version = u64::from(strand_store::block::FORMAT_VERSION);
    assert!(version >= u64::from(strand_store::block::LOGS_VERSION));
    assert_eq!((found[0].0, found[0].1), (version, 0), "{found:?}");
    assert!(!found[0].2.iter().any(|f| f.contains("logs")), "{found:?}");
    assert_eq!((found[1].0, found[1].1), (version, 7), "{found:?}");
    assert!(found[1].2.iter().any(|f| f.contains("logs.parquet")), "{found:?}");
}

/// The block's log files, opened as a search opens them.
fn log_files(block: &std::path::Path) -> strand_store::logs::LogFiles {
    let meta: strand_store::block::BlockMeta =
        serde_json::from_slice(&std::fs::read(block.join("meta.json")).expect("meta")).expect("meta json");
    let fs: Arc<dyn strand_store::fs::FileSystem> = Arc::new(StdFs);
    let cache = Arc::new(strand_store::cache::BlockCache::new(1 << 20));
    let key: Arc<str> = Arc::from(meta.id.as_str());
    strand_store::logs::LogFiles::open(&fs, block, &meta, &key, &cache, true, None).expect("open log files").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_search_skips_row_groups_its_text_cannot_be_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open");
    store.append_logs(log_batch(3, 4)).await.expect("write logs");
    store.flush().await.expect("flush");
    store.close();
    let blocks = StdFs.list(&dir.path().join("blocks")).expect("list");
    assert_eq!(blocks.len(), 1);
    let files = log_files(&blocks[0]);
    // Text bodies ("Order 3-1 handled in 11 ms ...", any case) and structured ones (their
    // JSON-like text) are in the filter; anything else is not.
    for present in ["order 3-1", "HANDLED IN", "\"quoted\"", "structured", "ms \""] {
        let lower = present.to_lowercase();
        assert_eq!(files.groups_to_search(Some(&lower)), vec![(0, 0)], "{present}");
    }
    for absent in ["no such line", "order 4-", "handled  in"] {
        assert!(files.groups_to_search(Some(absent)).is_empty(), "{absent}");
    }
    // Texts the filter cannot judge read every row group.
    for unjudged in ["or", "\u{e9}", ""] {
        assert_eq!(files.groups_to_search(Some(unjudged)).len(), 1, "{unjudged:?}");
    }
    assert_eq!(files.groups_to_search(None).len(), 1);

    // A block written before the filter (no log_grams.bin in meta.json) reads every row group.
    let meta_path = blocks[0].join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).expect("meta")).expect("json");
    meta["files"].as_array_mut().expect("files").retain(|f| f["name"] != "log_grams.bin");
    std::fs::write(&meta_path, serde_json::to_vec(&meta).expect("json")).expect("write meta");
    std::fs::remove_file(blocks[0].join("log_grams.bin")).expect("remove filter");
    assert_eq!(log_files(&blocks[0]).groups_to_search(Some("no such line")).len(), 1);
}

/// A text search with other conditions over a block of more rows than one read batch
/// (8,192): the rows the text picks in the first pass are the rows the second pass checks
/// the other conditions on and answers with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_search_with_other_conditions_finds_its_rows_across_read_batches() {
    use strand_core::{AnyValue, LogBatch, LogQuery, LogRecord, LogStore, ResourceLogs, ScopeLogs};
    const RECORDS: u64 = 20_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open");
    let base = 1_700_000_000_000_000_000u64;
    let records: Vec<LogRecord> = (0..RECORDS)
        .map(|n| LogRecord {
            time_unix_nano: base + n * 1_000,
            severity_number: 1 + (n % 24) as u8,
            // Most hold the text: the second pass reads more rows than one batch too.
            body: AnyValue::String(match n % 7 {
                0 => format!("item {n} is fine"),
                _ => format!("item {n} has the Needle"),
            }),
            ..LogRecord::default()
        })
        .collect();
    let resource = Arc::new(strand_core::Resource {
        attributes: vec![strand_core::KeyValue::new("service.name", AnyValue::String("svc".into()))],
        ..Default::default()
    });
    let batch = LogBatch {
        resource_logs: vec![ResourceLogs {
            resource,
            scope_logs: vec![ScopeLogs { scope: Default::default(), records: records.clone() }],
        }],
    };
    store.append_logs(batch).await.expect("write logs");
    store.flush().await.expect("flush");
    let q = LogQuery {
        text: Some("needle".into()),
        min_severity: 5,
        limit: RECORDS as usize,
        ..Default::default()
    };
    let mut got: Vec<u64> = LogStore::find_logs(&store, q)
        .await
        .expect("search")
        .records
        .iter()
        .map(|l| l.record.time_unix_nano)
        .collect();
    got.sort_unstable();
    let want: Vec<u64> = records
        .iter()
        .filter(|r| r.severity_number >= 5 && r.body.as_str().is_some_and(|b| b.contains("Needle")))
        .map(|r| r.time_unix_nano)
        .collect();
    assert!(want.len() > 8192 && want.len() < RECORDS as usize, "{}", want.len());
    assert_eq!(got, want);
}
