//! A span whose end precedes its start (a clock step on the client) is stored with its
//! times as sent, and `duration_nano` is never negative: the block carries that end time in
//! its own column (format version 3 on; since version 4 after `parent_rows_back`); blocks
//! without such a span have no such column.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use strand_core::TraceStore;
use strand_store::fs::StdFs;
use strand_store::testdata::{batch, skewed_batch, trace_id};
use strand_store::{Store, StoreConfig};

/// Each block's format version, its spans.parquet column count and the least duration.
fn blocks(dir: &Path) -> Vec<(u64, usize, i64)> {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(dir.join("blocks")).expect("dir").map(|e| e.expect("entry").path()).collect();
    dirs.sort();
    dirs.iter()
        .map(|b| {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(b.join("meta.json")).expect("meta")).expect("json");
            let file = std::fs::File::open(b.join("spans.parquet")).expect("spans");
            let reader = SerializedFileReader::new(file).expect("parquet");
            let columns = reader.metadata().file_metadata().schema_descr().num_columns();
            let at = (0..columns)
                .find(|i| {
                    reader.metadata().file_metadata().schema_descr().column(*i).name() == "duration_nano"
                })
                .expect("a duration column");
            let least = reader
                .get_row_iter(None)
                .expect("rows")
                .map(|r| match r.expect("row").get_column_iter().nth(at).map(|(_, f)| f.clone()) {
                    Some(Field::Long(d)) => d,
                    other => panic!("duration is {other:?}"),
                })
                .min()
                .expect("rows");
            (meta["format_version"].as_u64().expect("version"), columns, least)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_ending_before_it_starts_keeps_its_times_without_a_negative_duration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        compaction_target_spans: 1000,
        compaction_window: Duration::ZERO,
        ..StoreConfig::default()
    };
    let store = Store::open(Arc::new(StdFs), dir.path(), cfg.clone()).expect("open");
    let skewed = skewed_batch(1, 3);
    let span = &skewed.resource_spans[0].scope_spans[0].spans[1];
    let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
    assert!(end < start);
    store.append(skewed).await.expect("write");
    store.flush().await.expect("flush");
    store.append(batch(2, 3)).await.expect("write");
    store.flush().await.expect("flush");
    // The skewed block has one more column (its span's duration 0) than the other.
    let found = blocks(dir.path());
    assert_eq!(found.iter().map(|b| (b.0, b.1)).collect::<Vec<_>>(), vec![(4, 28), (4, 27)]);
    assert_eq!(found[0].2, 0, "no negative duration: {found:?}");
    let times = |store: &Store| {
        let trace = store.get_trace_blocking(trace_id(1)).expect("read").expect("trace");
        trace
            .spans
            .iter()
            .map(|s| (s.span.start_time_unix_nano, s.span.end_time_unix_nano))
            .collect::<Vec<_>>()
    };
    assert!(times(&store).contains(&(start, end)), "times as sent: {:?}", times(&store));

    // Merged with a block without such a span, and read after a restart: still as sent.
    TraceStore::maintain(&store).await.expect("maintain");
    assert_eq!(blocks(dir.path()), vec![(4, 28, 0)], "the merged block keeps the end apart");
    store.close();
    let store = Store::open(Arc::new(StdFs), dir.path(), cfg).expect("reopen");
    assert!(times(&store).contains(&(start, end)));
    assert_eq!(store.get_trace_blocking(trace_id(2)).expect("read").expect("trace").spans.len(), 3);
}
