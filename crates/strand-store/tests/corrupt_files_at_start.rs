//! Corrupt files found at start-up are reported and set aside; everything else is served.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use strand_core::{Scope, TraceId};
use strand_store::fs::{FileSystem, StdFs};
use strand_store::testdata::{batch, service_batch, span, trace_id};
use strand_store::{Store, StoreConfig};

/// Polls `check` every 10 ms for up to 30 s.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A closed store of two blocks (traces 1 and 2, three spans each) and its block dirs.
async fn two_blocks() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open");
    store.append(batch(1, 3)).await.expect("write");
    store.flush().await.expect("flush");
    store.append(batch(2, 3)).await.expect("write");
    store.flush().await.expect("flush");
    store.close();
    drop(store);
    let blocks = StdFs.list(&dir.path().join("blocks")).expect("list");
    assert_eq!(blocks.len(), 2);
    (dir, blocks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_block_is_set_aside_and_others_are_served() {
    let (dir, blocks) = two_blocks().await;
    // Overwrite the middle of the first block's spans file.
    let spans = blocks[0].join("spans.parquet");
    let mut bytes = std::fs::read(&spans).expect("read");
    let len = bytes.len();
    bytes[len - 20..len - 8].fill(0xEE);
    std::fs::write(&spans, bytes).expect("write");

    let store =
        Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("start despite corruption");
    assert_eq!(store.stats().corrupt_blocks.load(Ordering::Relaxed), 1);
    assert!(dir.path().join("corrupt").read_dir().expect("corrupt dir").next().is_some());
    assert!(store.get_trace_blocking(trace_id(1)).expect("read").is_none());
    assert_eq!(store.get_trace_blocking(trace_id(2)).expect("read").expect("trace 2").spans.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_damaged_inside_its_data_is_found_by_the_scrub_after_start_and_set_aside() {
    let (dir, blocks) = two_blocks().await;
    // Damage a data page, not the footer: opening reads only the footer, so the store
    // starts with the block, and the scrub that checks every file afterwards finds it.
    let spans = blocks[0].join("spans.parquet");
    let mut bytes = std::fs::read(&spans).expect("read");
    bytes[8..24].fill(0xEE);
    std::fs::write(&spans, bytes).expect("write");

    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("start");
    eventually("the scrub sets the block aside", || {
        store.stats().corrupt_blocks.load(Ordering::Relaxed) == 1
    });
    assert_eq!(store.snapshot().blocks, 1);
    let aside = dir.path().join("corrupt").join(blocks[0].file_name().expect("name"));
    assert!(aside.join("spans.parquet").exists(), "moved whole to {}", aside.display());
    assert!(store.get_trace_blocking(trace_id(1)).expect("read").is_none());
    assert_eq!(store.get_trace_blocking(trace_id(2)).expect("read").expect("trace 2").spans.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_reads_no_trace_index_and_blocks_without_a_filter_file_get_one() {
    let (dir, blocks) = two_blocks().await;
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("start");
    assert_eq!(store.block_cache().bytes(), 0, "opening loaded no index: the filters come from filter.bin");
    assert_eq!(store.get_trace_blocking(trace_id(1)).expect("read").expect("trace 1").spans.len(), 3);
    store.close();
    drop(store);

    // A block from before filter.bin: its trace index is read at start, and the scrub
    // writes the file so the next start does not.
    let meta_path = blocks[0].join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).expect("meta")).expect("json");
    meta["files"].as_array_mut().expect("files").retain(|f| f["name"] != "filter.bin");
    std::fs::write(&meta_path, serde_json::to_vec(&meta).expect("json")).expect("write meta");
    std::fs::remove_file(blocks[0].join("filter.bin")).expect("remove");
    // And a damaged one: rebuilt at once, counted.
    let filter = blocks[1].join("filter.bin");
    let mut bytes = std::fs::read(&filter).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&filter, bytes).expect("write");

    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("start");
    assert!(store.block_cache().bytes() > 0, "the trace indexes were read to build the filters");
    assert_eq!(store.stats().derived_files_repaired.load(Ordering::Relaxed), 1, "the damaged one");
    eventually("the scrub adds filter.bin", || blocks[0].join("filter.bin").exists());
    for seed in [1, 2] {
        assert_eq!(store.get_trace_blocking(trace_id(seed)).expect("read").expect("trace").spans.len(), 3);
    }
    store.close();
    drop(store);
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("start again");
    assert_eq!(store.block_cache().bytes(), 0, "both blocks open from their filter files");
    assert_eq!(store.stats().derived_files_repaired.load(Ordering::Relaxed), 0);
    assert_eq!(store.stats().corrupt_blocks.load(Ordering::Relaxed), 0);
    for seed in [1, 2] {
        assert_eq!(store.get_trace_blocking(trace_id(seed)).expect("read").expect("trace").spans.len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_torn_wal_records_are_skipped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig::default();
    {
        let store = Store::open(Arc::new(StdFs), dir.path(), cfg.clone()).expect("open");
        for seed in 1..=3 {
            store.append(batch(seed, 2)).await.expect("write");
        }
        // Keep the data in the WAL only: leak the store's state by crashing its files.
        let wal = StdFs.list(&dir.path().join("wal")).expect("list");
        let segment = wal.last().expect("segment").clone();
        let mut bytes = std::fs::read(&segment).expect("read");
        let copy = bytes.clone();
        store.close();
        drop(store);
        // Flip a byte inside the second record's payload and append half a record.
        let first_len = u32::from_le_bytes(copy[8..12].try_into().expect("4 bytes")) as usize;
        let second = 8 + RECORD_HEADER + first_len;
        bytes[second + 20] ^= 0xff;
        bytes.extend_from_slice(&copy[8..8 + RECORD_HEADER + first_len / 2]);
        for b in StdFs.list(&dir.path().join("blocks")).expect("list") {
            std::fs::remove_dir_all(b).expect("remove block");
        }
        std::fs::write(&segment, bytes).expect("write");
    }
    let store = Store::open(Arc::new(StdFs), dir.path(), cfg).expect("start despite corruption");
    assert_eq!(store.stats().wal_corrupt_records.load(Ordering::Relaxed), 1);
    assert_eq!(store.stats().wal_torn_tails.load(Ordering::Relaxed), 1);
    assert!(store.get_trace_blocking(trace_id(1)).expect("read").is_some());
    assert!(store.get_trace_blocking(trace_id(2)).expect("read").is_none());
    assert!(store.get_trace_blocking(trace_id(3)).expect("read").is_some());
}

/// Bytes of a record header in the segments this version writes.
const RECORD_HEADER: usize = 12;

/// Writes traces `1..=n` (one span each) and leaves them in the WAL only; returns the
/// segment holding them and its bytes.
async fn traces_in_the_wal_only(dir: &Path, n: u32) -> (PathBuf, Vec<u8>) {
    let store = Store::open(Arc::new(StdFs), dir, StoreConfig::default()).expect("open");
    for i in 1..=n {
        store.append(one_span(i)).await.expect("write");
    }
    let segment = StdFs.list(&dir.join("wal")).expect("list").last().expect("segment").clone();
    let bytes = std::fs::read(&segment).expect("read");
    store.close();
    drop(store);
    for b in StdFs.list(&dir.join("blocks")).expect("list") {
        std::fs::remove_dir_all(b).expect("remove block");
    }
    std::fs::write(&segment, &bytes).expect("restore the segment");
    (segment, bytes)
}

fn tid(i: u32) -> TraceId {
    let mut b = [0x77u8; 16];
    b[..4].copy_from_slice(&i.to_be_bytes());
    TraceId(b)
}

fn one_span(i: u32) -> strand_core::SpanBatch {
    service_batch(
        "svc",
        vec![],
        Scope::default(),
        vec![span(tid(i), 1, None, "op", 1_000 + u64::from(i), 10)],
    )
}

/// Offsets of every record in a segment (after the 8-byte file header).
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 8;
    while off < bytes.len() {
        out.push(off);
        off += RECORD_HEADER + u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4 bytes")) as usize;
    }
    out
}

fn missing(store: &Store, n: u32) -> Vec<u32> {
    (1..=n).filter(|&i| store.get_trace_blocking(tid(i)).expect("read").is_none()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_a_record_length_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, mut bytes) = traces_in_the_wal_only(dir.path(), 1000).await;
    let offsets = record_offsets(&bytes);
    assert_eq!(offsets.len(), 1000, "one record per write");
    bytes[offsets[100] + 1] ^= 0x04;
    std::fs::write(&segment, &bytes).expect("write");
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("start");
    assert_eq!(store.stats().wal_corrupt_records.load(Ordering::Relaxed), 0);
    assert_eq!(store.stats().wal_torn_tails.load(Ordering::Relaxed), 0, "nothing is truncated");
    assert_eq!(missing(&store, 1000), Vec::<u32>::new(), "the record is recovered behind its damaged length");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_length_and_payload_lose_that_record_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, mut bytes) = traces_in_the_wal_only(dir.path(), 1000).await;
    let offsets = record_offsets(&bytes);
    bytes[offsets[100] + 1] ^= 0x04;
    bytes[offsets[100] + RECORD_HEADER + 5] ^= 0x04;
    std::fs::write(&segment, &bytes).expect("write");
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("start");
    assert_eq!(store.stats().wal_corrupt_records.load(Ordering::Relaxed), 1);
    assert_eq!(store.stats().wal_torn_tails.load(Ordering::Relaxed), 0, "nothing is truncated");
    assert_eq!(missing(&store, 1000), vec![101], "only the damaged record is lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_with_a_damaged_file_header_is_replayed_and_a_copy_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, mut bytes) = traces_in_the_wal_only(dir.path(), 50).await;
    bytes[3] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("write");
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("start");
    assert_eq!(store.stats().wal_segments_set_aside.load(Ordering::Relaxed), 1);
    assert_eq!(missing(&store, 50), Vec::<u32>::new(), "every record behind the damaged header is replayed");
    // A head cut deletes replayed segments; the copy set aside survives it.
    store.append(one_span(2000)).await.expect("write");
    store.flush().await.expect("flush");
    let aside = dir.path().join("corrupt/wal").join(segment.file_name().expect("name"));
    assert_eq!(std::fs::read(&aside).expect("kept for inspection"), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_is_opened_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open");
    let err = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default())
        .err()
        .expect("second open must fail");
    assert!(err.to_string().contains("in use by another strand process"), "{err}");
    drop(first);
    Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open after the first closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_cut_short_are_finished_not_reported_as_damage() {
    let (dir, blocks) = two_blocks().await;
    let blocks_dir = dir.path().join("blocks");
    // A compaction input whose deletion a kill cut short (as a strand before `.deleting-`
    // left it): an empty directory named in a published block's `compacted_from`.
    let meta_path = blocks[1].join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).expect("meta")).expect("json");
    meta["compacted_from"] = serde_json::json!(["01000000000000000000-000000"]);
    std::fs::write(&meta_path, serde_json::to_vec(&meta).expect("json")).expect("write meta");
    std::fs::create_dir(blocks_dir.join("01000000000000000000-000000")).expect("empty input");
    // A retention or compaction deletion cut short after the rename.
    let doomed = blocks_dir.join(".deleting-01000000000000000001-000000");
    std::fs::create_dir(&doomed).expect("doomed");
    std::fs::write(doomed.join("spans.parquet"), b"half").expect("leftover");
    // A damaged block nobody replaced is still damage.
    std::fs::create_dir(blocks_dir.join("01000000000000000002-000000")).expect("empty block");

    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("start");
    assert_eq!(store.stats().corrupt_blocks.load(Ordering::Relaxed), 1, "only the unexplained one");
    let mut left: Vec<String> = StdFs
        .list(&blocks_dir)
        .expect("list")
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut expected: Vec<String> =
        blocks.iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect();
    expected.sort();
    assert_eq!(left, expected);
    let aside: Vec<PathBuf> = StdFs.list(&dir.path().join("corrupt")).expect("corrupt dir");
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].ends_with("01000000000000000002-000000"));
    for seed in [1, 2] {
        assert_eq!(store.get_trace_blocking(trace_id(seed)).expect("read").expect("trace").spans.len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_derived_files_are_rebuilt_from_the_data_and_counted() {
    use strand_core::{LogQuery, LogStore, TraceQuery, TraceReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open");
    store.append(batch(1, 3)).await.expect("write");
    store.append_logs(strand_store::testdata::log_batch(1, 2)).await.expect("write logs");
    store.flush().await.expect("flush");
    store.close();
    drop(store);
    let blocks = StdFs.list(&dir.path().join("blocks")).expect("list");
    assert_eq!(blocks.len(), 1);
    // Garbage in the search index; the text filter gone.
    let index = blocks[0].join("index.bin");
    let mut bytes = std::fs::read(&index).expect("read");
    bytes.iter_mut().skip(4).step_by(3).for_each(|b| *b ^= 0x5a);
    std::fs::write(&index, bytes).expect("write");
    std::fs::remove_file(blocks[0].join("log_grams.bin")).expect("remove");

    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("start");
    // The text filter is read at start; index.bin is checked by the scrub after it.
    eventually("both files are rebuilt", || {
        store.stats().derived_files_repaired.load(Ordering::Relaxed) == 2
    });
    assert_eq!(store.stats().corrupt_blocks.load(Ordering::Relaxed), 0, "no data was damaged");
    let by_service = TraceQuery { service: Some("svc-1".into()), ..TraceQuery::all(10) };
    let found = store.find_traces(by_service.clone()).await.expect("search");
    assert_eq!(found.traces.iter().map(|t| t.trace_id).collect::<Vec<_>>(), [trace_id(1)], "the index works");
    let text = LogQuery { text: Some("HANDLED in".into()), limit: 100, ..LogQuery::default() };
    assert_eq!(store.find_logs(text.clone()).await.expect("search").records.len(), 5, "the filter works");
    store.close();
    drop(store);

    // Written back: the next start finds nothing to repair and the same answers.
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("start again");
    assert_eq!(store.stats().derived_files_repaired.load(Ordering::Relaxed), 0);
    assert_eq!(store.find_traces(by_service).await.expect("search").traces.len(), 1);
    assert_eq!(store.find_logs(text).await.expect("search").records.len(), 5);
    assert!(blocks[0].join("log_grams.bin").exists());
}
