//! Writes a golden data directory with today's formats, for `tests/golden_formats.rs`:
//! fixture traces 1–3 in one block with trace 6, whose second span ends before it starts
//! (since format version 3), fixture traces 4–5 in the WAL.
//!
//! ```sh
//! cargo run -p strand-store --example write_golden -- crates/strand-store/tests/golden/vN
//! ```
//!
//! Run it once when a format version changes and commit the output next to the older
//! versions; never regenerate a committed version.

use std::path::PathBuf;
use std::sync::Arc;

use strand_store::fs::StdFs;
use strand_store::{Store, StoreConfig, testdata};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out: PathBuf = std::env::args_os().nth(1).ok_or("usage: write_golden <empty output dir>")?.into();
    if out.exists() && std::fs::read_dir(&out)?.next().is_some() {
        return Err(format!("{} is not empty", out.display()).into());
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store = Store::open(Arc::new(StdFs), &out, StoreConfig::default())?;
        for seed in 1..=3 {
            store.append(testdata::batch(seed, 3)).await?;
        }
        store.append(testdata::skewed_batch(6, 3)).await?;
        store.flush().await?;
        for seed in 4..=5 {
            store.append(testdata::batch(seed, 2)).await?;
        }
        // Leave the last two traces in the WAL: no close, which would cut the head.
        std::mem::forget(store);
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    std::fs::remove_file(out.join("LOCK"))?;
    println!("wrote {}", out.display());
    Ok(())
}
