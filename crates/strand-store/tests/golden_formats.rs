//! Data directories written by earlier versions of Strand stay readable.
//!
//! `tests/golden/vN/` holds the bytes a release with format version N wrote (by
//! `examples/write_golden.rs`): fixture traces 1–3 (three spans each) in one block and 4–5
//! (two spans each) in the WAL; since version 3 the block also holds trace 6, whose second
//! span ends before it starts. Every later binary must open each of them and read every
//! trace back unchanged; a file from a newer version than the binary is refused with an
//! error naming the version, and nothing is moved or deleted.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strand_core::{StoredSpan, TraceQuery, TraceReader};
use strand_store::fs::StdFs;
use strand_store::testdata::{batch, skewed_batch, trace_id};
use strand_store::{Store, StoreConfig};

fn golden(version: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(version)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A store over a copy of a golden directory; retention long enough that no golden data
/// ever ages out.
fn open_copy(version: &str) -> (tempfile::TempDir, Result<Store, strand_core::StoreError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&golden(version), dir.path());
    let cfg = StoreConfig { retention: Duration::from_secs(100 * 365 * 24 * 3600), ..StoreConfig::default() };
    let store = Store::open(Arc::new(StdFs), dir.path(), cfg);
    (dir, store)
}

fn sorted(spans: u8, seed: u8) -> Vec<StoredSpan> {
    let mut v: Vec<_> = batch(seed, spans).into_stored().collect();
    v.sort_by_key(|s| (s.span.start_time_unix_nano, s.span.span_id));
    v
}

async fn reads_back_whole(version: &str) {
    reads_back_whole_with(version, false).await;
}

async fn reads_back_whole_with(version: &str, skewed: bool) {
    let (_dir, store) = open_copy(version);
    let store = store.unwrap_or_else(|e| panic!("golden {version} must open: {e}"));
    let stats = store.stats();
    assert_eq!(stats.wal_replayed_records.load(std::sync::atomic::Ordering::Relaxed), 2, "{version}");
    assert_eq!(stats.wal_corrupt_records.load(std::sync::atomic::Ordering::Relaxed), 0, "{version}");
    // The start reports how long the replay and the opening of blocks took.
    assert!(stats.wal_replay_nanos.load(std::sync::atomic::Ordering::Relaxed) > 0, "{version}");
    assert!(stats.open_blocks_nanos.load(std::sync::atomic::Ordering::Relaxed) > 0, "{version}");
    assert_eq!(stats.corrupt_blocks.load(std::sync::atomic::Ordering::Relaxed), 0, "{version}");
    for (seed, spans) in [(1, 3), (2, 3), (3, 3), (4, 2), (5, 2)] {
        let trace = store
            .get_trace(trace_id(seed))
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("{version}: trace {seed} missing"));
        assert_eq!(trace.spans, sorted(spans, seed), "{version}: trace {seed} reads back unchanged");
    }
    if skewed {
        let trace = store.get_trace(trace_id(6)).await.expect("read").expect("trace 6");
        let mut want: Vec<_> = skewed_batch(6, 3).into_stored().collect();
        want.sort_by_key(|s| (s.span.start_time_unix_nano, s.span.span_id));
        assert_eq!(trace.spans, want, "{version}: a span ending before it starts keeps its times");
    }
    let page = store.find_traces(TraceQuery::all(10)).await.expect("search");
    assert_eq!(page.traces.len(), 5 + usize::from(skewed), "{version}: search finds block and WAL traces");
    // Written again by this binary, the data still reads the same.
    store.flush().await.expect("flush");
    assert_eq!(store.get_trace(trace_id(4)).await.expect("read").expect("trace 4").spans, sorted(2, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_data_directory_reads_back_whole() {
    reads_back_whole("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_2_data_directory_reads_back_whole() {
    reads_back_whole("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_3_data_directory_reads_back_whole() {
    reads_back_whole_with("v3", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_4_data_directory_reads_back_whole() {
    reads_back_whole_with("v4", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_from_a_newer_strand_are_refused_by_version_and_left_alone() {
    // A newer WAL segment.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&golden("v2"), dir.path());
    let segment =
        std::fs::read_dir(dir.path().join("wal")).expect("wal").next().expect("segment").expect("entry");
    let mut bytes = std::fs::read(segment.path()).expect("read");
    bytes[7] = 200;
    std::fs::write(segment.path(), &bytes).expect("write");
    let err = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).err().expect("refused");
    assert!(err.to_string().contains("format version 200"), "{err}");
    assert_eq!(std::fs::read(segment.path()).expect("untouched"), bytes);

    // A newer block.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&golden("v2"), dir.path());
    let block =
        std::fs::read_dir(dir.path().join("blocks")).expect("blocks").next().expect("block").expect("entry");
    let meta_path = block.path().join("meta.json");
    let meta = std::fs::read_to_string(&meta_path).expect("meta");
    std::fs::write(&meta_path, meta.replace("\"format_version\": 1", "\"format_version\": 7"))
        .expect("write");
    let err = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).err().expect("refused");
    assert!(err.to_string().contains("format version 7"), "{err}");
    assert!(meta_path.exists(), "a newer block is not set aside as corrupt");
    assert!(!dir.path().join("corrupt").exists());
}
