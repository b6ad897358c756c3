//! Blocks holding log records say so in their version (2), so a strand without log support
//! refuses them; blocks without are still version 1.

use std::sync::Arc;

use strand_store::fs::{FileSystem, StdFs};
use strand_store::testdata::{batch, log_batch};
use strand_store::{Store, StoreConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_with_log_records_is_version_2_and_one_without_is_version_1() {
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
    assert_eq!((found[0].0, found[0].1), (1, 0), "{found:?}");
    assert!(!found[0].2.iter().any(|f| f.contains("logs")), "{found:?}");
    assert_eq!((found[1].0, found[1].1), (2, 7), "{found:?}");
    assert!(found[1].2.iter().any(|f| f.contains("logs.parquet")), "{found:?}");
}
