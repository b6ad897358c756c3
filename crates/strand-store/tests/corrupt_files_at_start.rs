//! Corrupt files found at start-up are reported and set aside; everything else is served.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use strand_store::fs::{FileSystem, StdFs};
use strand_store::testdata::{batch, trace_id};
use strand_store::{Store, StoreConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_block_is_set_aside_and_others_are_served() {
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
        let second = 8 + 8 + first_len;
        bytes[second + 20] ^= 0xff;
        bytes.extend_from_slice(&copy[8..8 + 8 + first_len / 2]);
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
