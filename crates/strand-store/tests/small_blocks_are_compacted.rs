//! Small blocks are merged without duplicates. (Retention by age and by bytes is part of
//! the conformance suite.)

use std::sync::Arc;
use std::time::Duration;

use strand_core::TraceStore;
use strand_store::fs::StdFs;
use strand_store::testdata::{batch, trace_id};
use strand_store::{Store, StoreConfig};

/// Each of the traces `seeds` reads back whole: five spans.
fn five_spans_each(store: &Store, seeds: impl IntoIterator<Item = u8>) {
    for seed in seeds {
        assert_eq!(
            store.get_trace_blocking(trace_id(seed)).expect("read").expect("trace").spans.len(),
            5,
            "trace {seed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blocks_are_compacted_and_duplicates_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        compaction_target_spans: 1000,
        compaction_window: Duration::ZERO,
        ..StoreConfig::default()
    };
    let store = Store::open(Arc::new(StdFs), dir.path(), cfg).expect("open");
    for seed in 0..4 {
        store.append(batch(seed, 5)).await.expect("write");
        // The same trace again in the next block: a client retry after a cut.
        store.append(batch(0, 5)).await.expect("write");
        store.flush().await.expect("flush");
    }
    assert_eq!(store.snapshot().blocks, 4);
    TraceStore::maintain(&store).await.expect("maintain");
    let snap = store.snapshot();
    assert_eq!(snap.blocks, 1);
    assert_eq!(snap.block_spans, 20, "duplicates of trace 0 dropped");
    five_spans_each(&store, 0..4);
    let blocks = || {
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("blocks"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        names
    };
    let merged = blocks();
    assert_eq!(merged.len(), 1);
    TraceStore::maintain(&store).await.expect("maintain");
    assert_eq!(blocks(), merged, "nothing left to merge: the merged block is not rewritten");
}

/// A store of two small blocks (traces 1 and 2) on `fs`, and a compaction of them started
/// in the background and stalled reading the oldest block (a very slow disk under it) —
/// returned once it is.
async fn stalled_compaction(
    dir: &std::path::Path,
    fs: &strand_store::fs::FaultyFs,
    cfg: StoreConfig,
) -> (Arc<Store>, tokio::task::JoinHandle<Result<(), strand_core::StoreError>>) {
    let store = Arc::new(Store::open(Arc::new(fs.clone()), dir, cfg).expect("open"));
    for seed in 1..=2 {
        store.append(batch(seed, 5)).await.expect("write");
        store.flush().await.expect("flush");
    }
    let mut inputs: Vec<_> =
        std::fs::read_dir(dir.join("blocks")).expect("dir").map(|e| e.expect("entry").path()).collect();
    inputs.sort();
    fs.hold_reads_under(Some(inputs[0].clone()));
    let compacting = tokio::spawn({
        let store = store.clone();
        async move { TraceStore::maintain(store.as_ref()).await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fs.held_reads() == 0 {
        assert!(std::time::Instant::now() < deadline, "the compaction never read its inputs");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    (store, compacting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_writes_go_on_while_a_compaction_reads_its_inputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = strand_store::fs::FaultyFs::new();
    let cfg = StoreConfig {
        compaction_target_spans: 1000,
        compaction_window: Duration::ZERO,
        ..StoreConfig::default()
    };
    let (store, compacting) = stalled_compaction(dir.path(), &fs, cfg).await;
    store.append(batch(3, 5)).await.expect("write during the compaction");
    let flushed = tokio::time::timeout(std::time::Duration::from_secs(10), store.flush()).await;
    let still_compacting = !compacting.is_finished();
    // Released before anything is asserted, so a failure does not leave the compaction
    // (and the test) waiting forever.
    fs.hold_reads_under(None);
    flushed.expect("a block is written while the compaction waits").expect("flush");
    assert!(still_compacting, "the compaction was still held");
    compacting.await.expect("task").expect("compaction");
    let snap = store.snapshot();
    assert_eq!(snap.blocks, 2, "the two inputs merged; the block written meanwhile kept");
    assert_eq!(store.stats().compactions.load(std::sync::atomic::Ordering::Relaxed), 1);
    five_spans_each(&store, 1..=3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_whose_inputs_retention_deleted_meanwhile_is_discarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = strand_store::fs::FaultyFs::new();
    let clock = Arc::new(strand_core::clock::ManualClock::new(1_700_000_000_000_000_000));
    let cfg = StoreConfig {
        compaction_target_spans: 1000,
        compaction_window: Duration::ZERO,
        retention: std::time::Duration::from_secs(3600),
        clock: clock.clone(),
        ..StoreConfig::default()
    };
    let (store, compacting) = stalled_compaction(dir.path(), &fs, cfg).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Both inputs age out while the merge waits; a second maintenance run deletes them
    // (then waits for the first compaction to end before its own).
    clock.advance(std::time::Duration::from_secs(7200));
    let retention = tokio::spawn({
        let store = store.clone();
        async move { TraceStore::maintain(store.as_ref()).await }
    });
    while store.snapshot().blocks > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let deleted = store.snapshot().blocks == 0;
    fs.hold_reads_under(None);
    assert!(deleted, "retention deleted the inputs while the merge waited");
    compacting.await.expect("task").expect("compaction");
    retention.await.expect("task").expect("retention");
    assert_eq!(store.snapshot().blocks, 0, "the merge of deleted blocks was not published");
    assert_eq!(store.stats().compactions.load(std::sync::atomic::Ordering::Relaxed), 0);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("blocks")).expect("dir").collect();
    assert!(left.is_empty(), "nothing left on disk: {left:?}");
    assert!(store.get_trace_blocking(trace_id(1)).expect("read").is_none(), "deleted data stays deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_written_during_a_merge_counts_as_newer_than_the_merge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = strand_store::fs::FaultyFs::new();
    let cfg = StoreConfig {
        compaction_target_spans: 1000,
        compaction_window: Duration::ZERO,
        ..StoreConfig::default()
    };
    let (store, compacting) = stalled_compaction(dir.path(), &fs, cfg).await;
    // A retried copy of trace 2's root span, changed, arrives while the merge waits: its
    // block gets an id older than the merged block's, but it holds newer data. (Trace 2
    // is in the input not held: the cut reads the blocks holding its traces, for the
    // dependency edges between them.)
    let mut retry = batch(2, 1);
    retry.resource_spans[0].scope_spans[0].spans[0].name = "retried copy".into();
    store.append(retry).await.expect("write");
    let flushed = tokio::time::timeout(std::time::Duration::from_secs(10), store.flush()).await;
    fs.hold_reads_under(None);
    flushed.expect("flushed during the merge").expect("flush");
    compacting.await.expect("task").expect("compaction");
    let root = |store: &Store| {
        let t = store.get_trace_blocking(trace_id(2)).expect("read").expect("trace 2");
        assert_eq!(t.spans.len(), 5, "one copy of each span");
        t.spans.iter().find(|s| s.span.parent_span_id.is_none()).expect("root").span.name.clone()
    };
    assert_eq!(root(&store), "op-0", "reads take the first-received copy");
    TraceStore::maintain(store.as_ref()).await.expect("maintain");
    assert_eq!(store.snapshot().blocks, 1, "the merged block and the one written meanwhile merged");
    assert_eq!(root(&store), "op-0", "so does compaction");
}

/// The largest span text column (attribute, event or link JSON, decoded) of a block, as
/// the block reports it from its Parquet footer.
fn text_bytes(block: &std::path::Path) -> u64 {
    use strand_store::block::{Block, Verify};
    let fs: Arc<dyn strand_store::fs::FileSystem> = Arc::new(StdFs);
    let cache = Arc::new(strand_store::cache::BlockCache::new(1 << 20));
    Block::open(&fs, block, &cache, Verify::Lazy).expect("block").span_text_bytes()
}

/// A merge stops at `compaction_max_text_bytes` of span text, whatever the row target: big
/// events (stack traces) would otherwise overflow a column of the merged block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_stops_at_the_text_budget() {
    let blocks = |dir: &std::path::Path| {
        let mut v: Vec<_> =
            std::fs::read_dir(dir.join("blocks")).expect("dir").map(|e| e.expect("entry").path()).collect();
        v.sort();
        v
    };
    let fill = |cfg: StoreConfig| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(Arc::new(StdFs), dir.path(), cfg).expect("open");
        for seed in 0..4 {
            store.append(batch(seed, 5)).await.expect("write");
            store.flush().await.expect("flush");
        }
        (dir, store)
    };
    // Measure one block's text, then allow a little over two of them.
    let (probe, _store) = fill(StoreConfig::default()).await;
    let one = blocks(probe.path()).iter().map(|b| text_bytes(b)).max().expect("a block");
    assert!(one > 0);
    let cfg = StoreConfig {
        compaction_target_spans: 1000,
        compaction_window: Duration::ZERO,
        compaction_max_text_bytes: 2 * one + one / 2,
        ..StoreConfig::default()
    };
    let (dir, store) = fill(cfg.clone()).await;
    TraceStore::maintain(&store).await.expect("maintain");
    let after = blocks(dir.path());
    assert_eq!(after.len(), 3, "two merged, two left: {after:?}");
    for b in &after {
        assert!(text_bytes(b) <= cfg.compaction_max_text_bytes, "{b:?}: {}", text_bytes(b));
    }
    five_spans_each(&store, 0..4);
    // A budget under one block's text: nothing merges (each is left as it is).
    let (dir, store) = fill(StoreConfig { compaction_max_text_bytes: one / 2, ..cfg }).await;
    TraceStore::maintain(&store).await.expect("maintain");
    assert_eq!(blocks(dir.path()).len(), 4);
}

/// A merge reads its inputs side by side a slice at a time; it writes what building the
/// block from all their spans at once writes: traces cut across the inputs come out as
/// one run of rows each, and a span two inputs hold is kept once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_of_inputs_read_side_by_side_writes_what_a_whole_build_writes() {
    use strand_core::TraceId;
    use strand_store::block::BlockBuilder;
    use strand_store::testdata::{read_parquet, service_batch, span};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).expect("open");
    let tid = |t: u64| {
        let t = t + 1;
        TraceId((u128::from(t.wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 64 | u128::from(t)).to_be_bytes())
    };
    const TRACES: u64 = 6_000;
    // Three blocks, each with two spans of every trace: more rows than a slice each.
    for block in 0..3u64 {
        for group in 0..TRACES / 100 {
            let spans = (group * 100..(group + 1) * 100)
                .flat_map(|t| {
                    (0..2).map(move |i| {
                        let id = block * 2 + i;
                        span(tid(t), id, (id > 0).then_some(0), &format!("op-{id}"), 1_000 + id * 10, 5)
                    })
                })
                .collect();
            let service = format!("svc-{}", (group + block) % 3);
            store.append(service_batch(&service, vec![], Default::default(), spans)).await.expect("write");
        }
        if block > 0 {
            // A retried copy of a span the first block holds (told apart by its name).
            let again = span(tid(7), 0, None, "retried", 1_000, 5);
            store
                .append(service_batch("svc-0", vec![], Default::default(), vec![again]))
                .await
                .expect("write");
        }
        store.flush().await.expect("flush");
    }
    let blocks = store.blocks();
    assert_eq!(blocks.len(), 3);
    let out = tempfile::tempdir().expect("tempdir");
    let merged = strand_store::merge_blocks(out.path(), &blocks, StoreConfig::default()).expect("merges");
    assert_eq!(merged.meta.span_count, TRACES * 6, "the retried copies dropped");
    assert_eq!(merged.meta.trace_count, TRACES);
    let mut whole = BlockBuilder::new();
    for b in &blocks {
        b.for_each_slice(|spans| {
            whole.append_stored(&spans).expect("appends");
            Ok(())
        })
        .expect("reads");
    }
    let whole = whole.finish("whole".into(), 0, 0, Vec::new()).expect("builds");
    let file = |name: &str| std::fs::read(merged.dir.join(name)).expect("a block file");
    assert_eq!(read_parquet(&file("spans.parquet")), read_parquet(&whole.spans), "the same rows");
    assert_eq!(file("traces.parquet"), whole.traces, "the same trace summaries");
    let names = read_parquet(&file("spans.parquet"));
    let names = arrow_array::cast::AsArray::as_string::<i32>(names.column(5));
    assert!(names.iter().all(|n| n != Some("retried")), "the oldest input's copy is kept");
}

/// A compaction reads its inputs at `compaction_bytes_per_second` at most: merging blocks
/// of N bytes at N bytes per second takes most of a second (the pace is checked every
/// 8,192 rows: at 16,384 of 20,000), and unpaced it never waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_is_paced_to_its_rate() {
    for paced in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = StoreConfig {
            compaction_target_spans: 100_000,
            compaction_window: Duration::ZERO,
            ..StoreConfig::default()
        };
        let bytes = four_blocks(dir.path(), &cfg).await;
        let rate = if paced { bytes } else { 0 };
        let store =
            reopen_checked(dir.path(), StoreConfig { compaction_bytes_per_second: rate, ..cfg }).await;
        let started = std::time::Instant::now();
        let merge_took = loop {
            assert!(started.elapsed() < std::time::Duration::from_secs(60), "{:?}", store.snapshot());
            let maintained = std::time::Instant::now();
            TraceStore::maintain(&store).await.expect("maintain");
            if store.snapshot().blocks == 1 {
                break maintained.elapsed();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        let paced_micros = store.stats().compaction_paced_micros.load(std::sync::atomic::Ordering::Relaxed);
        if paced {
            assert!(merge_took >= std::time::Duration::from_millis(800), "{merge_took:?}");
            // The waits add up to the pace of the last slice waited for (16,384 rows of
            // 20,000: 0.82 s) at most.
            assert!((1..=1_000_000).contains(&paced_micros), "{paced_micros}");
        } else {
            assert_eq!(paced_micros, 0);
        }
        assert_eq!(store.snapshot().block_spans, 20_000);
    }
}

/// Writes four blocks of 25 traces of 200 spans (traces 0 to 99) in `dir` and closes the
/// store; returns the blocks' bytes.
async fn four_blocks(dir: &std::path::Path, cfg: &StoreConfig) -> u64 {
    let store = Store::open(Arc::new(StdFs), dir, cfg.clone()).expect("open");
    for block in 0..4u8 {
        for seed in block * 25..(block + 1) * 25 {
            store.append(batch(seed, 200)).await.expect("write");
        }
        store.flush().await.expect("flush");
    }
    let bytes = store.snapshot().block_bytes;
    store.close();
    bytes
}

/// Opens the store in `dir` and waits for the scrub after start to check every block
/// (compaction merges checked blocks only: all four at once, then).
async fn reopen_checked(dir: &std::path::Path, cfg: StoreConfig) -> Store {
    let store = Store::open(Arc::new(StdFs), dir, cfg).expect("reopen");
    let started = std::time::Instant::now();
    while !store.blocks().iter().all(|b| b.verified()) {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "never verified");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    store
}

/// A paced merge whose input retention deletes meanwhile (writes during the merge pass the
/// disk budget) stops instead of running its pace out: the maintenance thread runs the
/// merge, so only the merge's own budget checks can run retention meanwhile. No merged
/// block is published, and the oldest input's traces are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_merge_stops_when_retention_deletes_an_input() {
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        compaction_target_spans: 100_000,
        compaction_window: Duration::ZERO,
        ..StoreConfig::default()
    };
    let inputs = four_blocks(dir.path(), &cfg).await;
    // What the WAL takes for the writes that will pass the budget during the merge.
    let late = || (200..210u8).map(|seed| batch(seed, 20));
    let wal = {
        let scratch = tempfile::tempdir().expect("tempdir");
        let store = Store::open(Arc::new(StdFs), scratch.path(), cfg.clone()).expect("open");
        for b in late() {
            store.append(b).await.expect("write");
        }
        store.snapshot().wal_bytes
    };
    // A pace that would take ten minutes; a budget the inputs fit, and which those writes
    // pass by half their WAL (the head is cut at a quarter of the budget: not by them).
    let budget = inputs + wal / 2;
    assert!(wal < budget / 4, "{wal} {budget}");
    let paced = StoreConfig {
        compaction_bytes_per_second: inputs / 600,
        max_disk_bytes: Some(budget),
        maintenance_interval: Duration::from_millis(100),
        ..cfg
    };
    let store = reopen_checked(dir.path(), paced).await;
    let started = Instant::now();
    // The maintenance thread's compaction is under way once it waits for its pace.
    while store.stats().compaction_paced_micros.load(Ordering::Relaxed) == 0 {
        assert!(started.elapsed() < Duration::from_secs(120), "the merge never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for b in late() {
        store.append(b).await.expect("write");
    }
    while store.get_trace_blocking(trace_id(0)).expect("read").is_some() {
        assert!(started.elapsed() < Duration::from_secs(240), "retention never ran during the merge");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(store.blocks().iter().all(|b| b.meta.compacted_from.is_empty()), "nothing merged");
    assert_eq!(store.stats().compactions.load(Ordering::Relaxed), 0);
    assert!(store.get_trace_blocking(trace_id(99)).expect("read").is_some(), "the newest input stays");
    assert!(store.get_trace_blocking(trace_id(209)).expect("read").is_some(), "the late writes stay");
}

/// Small blocks are merged by time: the blocks cut within one window once it is over
/// (level 1), then a day's blocks once the day is (level 2), which are not merged again; a
/// window's blocks are merged before it is over once they reach half the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blocks_are_merged_by_window_then_by_day() {
    const HOUR: u64 = 3600;
    let day_start = 1_700_000_000 / 86_400 * 86_400;
    let clock = Arc::new(strand_core::clock::ManualClock::new(day_start * 1_000_000_000));
    let at = |secs: u64| clock.set((day_start + secs) * 1_000_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        compaction_target_spans: 1000,
        compaction_window: Duration::from_secs(HOUR),
        head_max_age: Duration::from_secs(300),
        // Only the test's own maintenance runs.
        maintenance_interval: Duration::from_secs(24 * HOUR),
        clock: clock.clone(),
        ..StoreConfig::default()
    };
    let store = Store::open(Arc::new(StdFs), dir.path(), cfg).expect("open");
    let cut = |seed: u8, spans: u8| {
        let store = &store;
        async move {
            store.append(batch(seed, spans)).await.expect("write");
            store.flush().await.expect("flush");
        }
    };
    let levels = || {
        let mut levels: Vec<(u32, u64)> =
            store.blocks().iter().map(|b| (b.meta.compaction_level, b.meta.span_count)).collect();
        levels.sort();
        levels
    };
    let maintain = || TraceStore::maintain(&store);

    // Hour 0: three blocks, not merged while the hour lasts.
    for (seed, minute) in [(1, 0), (2, 10), (3, 20)] {
        at(minute * 60);
        cut(seed, 5).await;
    }
    at(HOUR - 60);
    store.append(batch(10, 5)).await.expect("write");
    maintain().await.expect("maintain");
    assert_eq!(levels(), [(0, 5), (0, 5), (0, 5)], "the window is not over");
    // Nor until the head's longest age after it: a head begun in it may still be cut.
    at(HOUR + 299);
    maintain().await.expect("maintain");
    assert_eq!(levels(), [(0, 5), (0, 5), (0, 5)], "a head of the window may still be cut");
    // Nor while data received in it is not in a block.
    at(HOUR + 300);
    maintain().await.expect("maintain");
    assert_eq!(levels(), [(0, 5), (0, 5), (0, 5)], "data of the window is still in the head");
    store.flush().await.expect("flush");
    // Hour 1: one block; hour 0's four are merged.
    cut(4, 5).await;
    maintain().await.expect("maintain");
    assert_eq!(levels(), [(0, 5), (1, 20)], "hour 0 merged");
    maintain().await.expect("maintain");
    assert_eq!(levels(), [(0, 5), (1, 20)], "hour 1 goes on; the day too");
    // Hour 2: two blocks, merged once it is over; hour 1's lone block waits for the day.
    for (seed, secs) in [(5, 2 * HOUR), (6, 2 * HOUR + 600)] {
        at(secs);
        cut(seed, 5).await;
    }
    at(3 * HOUR + 300);
    maintain().await.expect("maintain");
    assert_eq!(levels(), [(0, 5), (1, 10), (1, 20)], "hour 2 merged");
    at(24 * HOUR + 299);
    maintain().await.expect("maintain");
    assert_eq!(levels(), [(0, 5), (1, 10), (1, 20)], "the day is not over");
    // The next day: the day's blocks are merged into one.
    at(24 * HOUR + 300);
    maintain().await.expect("maintain");
    assert_eq!(levels(), [(2, 35)], "the day merged");

    // Within a window, blocks that reach half the target together are merged at once.
    at(24 * HOUR + 1800);
    for seed in [7, 8, 9] {
        cut(seed, 250).await;
        maintain().await.expect("maintain");
    }
    assert_eq!(levels(), [(0, 250), (1, 500), (2, 35)], "two blocks reached half the target");
    // A later window of that day; the day's two small blocks make a second level-2 block,
    // which is not merged with the first.
    at(26 * HOUR);
    cut(11, 5).await;
    at(48 * HOUR + 300);
    maintain().await.expect("maintain");
    assert_eq!(levels(), [(1, 500), (2, 35), (2, 255)], "the second day merged");
    maintain().await.expect("maintain");
    assert_eq!(levels(), [(1, 500), (2, 35), (2, 255)], "blocks of level 2 are not merged again");
    for seed in (1..=11).filter(|s| *s != 10) {
        assert!(store.get_trace_blocking(trace_id(seed)).expect("read").is_some(), "trace {seed}");
    }
    assert_eq!(store.get_trace_blocking(trace_id(10)).expect("read").expect("trace").spans.len(), 5);
}

/// A merge that fails on a block's unreadable file leaves that block out of compaction for
/// a while: the other small blocks are merged meanwhile instead of waiting behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_merge_does_not_stop_the_other_blocks_being_merged() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = strand_store::fs::FaultyFs::new();
    let cfg = StoreConfig {
        compaction_target_spans: 1000,
        compaction_window: Duration::ZERO,
        maintenance_interval: Duration::from_secs(24 * 3600),
        ..StoreConfig::default()
    };
    let store = Store::open(Arc::new(fs.clone()), dir.path(), cfg).expect("open");
    for seed in 1..=4 {
        store.append(batch(seed, 5)).await.expect("write");
        store.flush().await.expect("flush");
    }
    let inputs = block_dirs(dir.path());
    // The oldest block, in every run, cannot be read (a bad sector).
    fs.fail_reads_under(Some(inputs[0].clone()));
    let failed = TraceStore::maintain(&store).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(store.snapshot().blocks, 4);
    assert_eq!(store.stats().compaction_failures.load(Ordering::Relaxed), 1);
    TraceStore::maintain(&store).await.expect("maintain");
    assert_eq!(store.snapshot().blocks, 2, "the three readable blocks merged");
    TraceStore::maintain(&store).await.expect("maintain");
    assert_eq!(store.snapshot().blocks, 2, "the failed block is left out for now");
    assert_eq!(store.stats().compaction_failures.load(Ordering::Relaxed), 1);
    fs.fail_reads_under(None);
    five_spans_each(&store, 1..=4);
}

/// By time too: the block a merge failed with does not hold its window open, so the
/// window's other blocks are merged once it is over; the scrub is to check it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_a_merge_failed_with_does_not_hold_its_window_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = strand_store::fs::FaultyFs::new();
    let start = 1_700_000_000 / 3600 * 3600;
    let clock = Arc::new(strand_core::clock::ManualClock::new(start * 1_000_000_000));
    let cfg = StoreConfig {
        compaction_target_spans: 1000,
        maintenance_interval: Duration::from_secs(24 * 3600),
        clock: clock.clone(),
        ..StoreConfig::default()
    };
    let store = Store::open(Arc::new(fs.clone()), dir.path(), cfg).expect("open");
    for seed in 1..=4 {
        store.append(batch(seed, 5)).await.expect("write");
        store.flush().await.expect("flush");
        clock.advance(Duration::from_secs(60));
    }
    let inputs = block_dirs(dir.path());
    fs.fail_reads_under(Some(inputs[0].clone()));
    clock.set((start + 3600 + 300) * 1_000_000_000);
    assert!(TraceStore::maintain(&store).await.is_err(), "the merge of the hour fails");
    let oldest = inputs[0].file_name().and_then(|n| n.to_str()).expect("id").to_owned();
    let unverified = |id: &str| store.blocks().iter().any(|b| b.meta.id == id && !b.verified());
    assert!(unverified(&oldest), "the scrub is to check the failed block again");
    TraceStore::maintain(&store).await.expect("maintain");
    assert_eq!(store.snapshot().blocks, 2, "the hour's three readable blocks merged");
}

/// The block directories under `dir`, oldest first.
fn block_dirs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> =
        std::fs::read_dir(dir.join("blocks")).expect("dir").map(|e| e.expect("entry").path()).collect();
    dirs.sort();
    dirs
}
