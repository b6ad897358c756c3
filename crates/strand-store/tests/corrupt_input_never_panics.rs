//! Mutated WAL segments and block files (span and log files) never panic the store at start-up: replay skips or
//! truncates, a bad block is set aside, the rest is served. (A bounded, seeded stand-in for
//! fuzzing that runs in every test run.)

use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strand_core::{LogQuery, LogStore};
use strand_store::fs::{FileSystem, StdFs};
use strand_store::testdata::{batch, log_batch, trace_id};
use strand_store::{Store, StoreConfig};

fn mutate_file(rng: &mut StdRng, path: &Path) {
    let mut bytes = std::fs::read(path).expect("read");
    for _ in 0..rng.random_range(1..6) {
        if bytes.is_empty() {
            break;
        }
        let i = rng.random_range(0..bytes.len());
        match rng.random_range(0..3) {
            0 => bytes[i] ^= 1 << rng.random_range(0..8),
            1 => bytes[i] = rng.random(),
            _ => bytes.truncate(i.max(1)),
        }
    }
    std::fs::write(path, bytes).expect("write");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_wal_and_blocks_never_panic() {
    // A directory with two blocks and a WAL segment holding more data.
    let pristine = tempfile::tempdir().expect("tempdir");
    // Its own directory, not one beside the data directory: runs of the test side by side
    // would copy into each other's.
    let snapshot_dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(Arc::new(StdFs), pristine.path(), StoreConfig::default()).expect("open");
        for seed in 0..3 {
            store.append(batch(seed, 4)).await.expect("write");
            store.append_logs(log_batch(seed, 2)).await.expect("write logs");
        }
        store.flush().await.expect("flush");
        for seed in 3..6 {
            store.append(batch(seed, 4)).await.expect("write");
            store.append_logs(log_batch(seed, 2)).await.expect("write logs");
        }
        store.flush().await.expect("flush");
        for seed in 6..9 {
            store.append(batch(seed, 4)).await.expect("write");
            store.append_logs(log_batch(seed, 2)).await.expect("write logs");
        }
        // Leave the last three in the WAL only: copy before close flushes them.
        copy_dir(pristine.path(), snapshot_dir.path());
    }
    let snapshot = snapshot_dir.path();
    let mut rng = StdRng::seed_from_u64(3);
    for round in 0..150 {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(snapshot, dir.path());
        let mut files = Vec::new();
        for sub in ["wal", "blocks"] {
            for p in StdFs.list(&dir.path().join(sub)).expect("list") {
                if p.is_dir() {
                    files.extend(StdFs.list(&p).expect("list"));
                } else {
                    files.push(p);
                }
            }
        }
        let victim = &files[rng.random_range(0..files.len())];
        mutate_file(&mut rng, victim);
        let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default()).unwrap_or_else(|e| {
            panic!("round {round}: start-up failed on mutated {}: {e}", victim.display())
        });
        // Everything not in the damaged file is still served; nothing panics.
        for seed in 0..9 {
            if let Ok(Some(t)) = store.get_trace_blocking(trace_id(seed)) {
                assert!(t.spans.len() <= 4, "round {round}: trace {seed} has extra spans")
            }
            if let Ok(logs) = store.trace_logs(trace_id(seed), None).await {
                assert!(logs.len() <= 6, "round {round}: trace {seed} has extra log records")
            }
        }
        let _ = store.find_logs(LogQuery { text: Some("order".into()), ..LogQuery::default() }).await;
    }
    // Second line of defence: damage a block and rewrite its checksums to match, so the
    // Parquet reader itself parses garbage. It may panic inside; the store must not.
    for round in 0..100 {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(snapshot, dir.path());
        let blocks = StdFs.list(&dir.path().join("blocks")).expect("list");
        let block = &blocks[rng.random_range(0..blocks.len())];
        let name =
            ["spans.parquet", "traces.parquet", "logs.parquet", "log_traces.parquet"][rng.random_range(0..4)];
        mutate_file(&mut rng, &block.join(name));
        let meta_path = block.join("meta.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta_path).expect("meta")).expect("json");
        let data = std::fs::read(block.join(name)).expect("read");
        for f in meta["files"].as_array_mut().expect("files") {
            if f["name"] == name {
                f["bytes"] = data.len().into();
                f["crc32c"] = crc32c::crc32c(&data).into();
            }
        }
        std::fs::write(&meta_path, serde_json::to_vec(&meta).expect("json")).expect("write");
        let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default())
            .unwrap_or_else(|e| panic!("round {round}: start-up failed: {e}"));
        for seed in 0..9 {
            let _ = store.get_trace_blocking(trace_id(seed));
            let _ = store.trace_logs(trace_id(seed), None).await;
        }
        let _ = store.find_logs(LogQuery { text: Some("order".into()), ..LogQuery::default() }).await;
    }
    let _ = std::fs::remove_dir_all(snapshot);
}
