//! Strand's embedded store.
//!
//! - [`wal`]: the write-ahead log (its record format, versions and damage handling are
//!   documented there and in `docs/formats.md`) and [`wal::group_commit`], the writer loop
//!   the store and the tail sampler's pending log share.
//! - [`head`]: recent spans in memory, kept as their encoded WAL records with a trace index.
//! - [`logs`]: log records: their head, their block files (schema documented there), reads.
//! - [`block`]: immutable Parquet blocks; the schema is documented there.
//! - [`engine`]: [`Store`], which ties them together, plus compaction and retention.
//! - [`error`]: [`error::FormatError`], what decoding or encoding the store's files can
//!   meet.
//! - [`fs`]: the file-system trait everything writes through, and [`fs::FaultyFs`] for
//!   tests.
//! - [`memory`]: [`memory::MemoryStore`], the in-memory reference backend.
//! - [`conformance`]: the suite every backend (`TraceStore`) must pass; the embedded store
//!   and the in-memory one run it.
//!
//! Data directory:
//!
//! ```text
//! <data-dir>/
//!   wal/<segment>.wal          write-ahead log segments (deleted once in a block)
//!   blocks/<block-id>/         spans.parquet, traces.parquet, index.bin, meta.json;
//!                              logs.parquet, log_traces.parquet when it holds log records
//!   corrupt/<block-id>/        blocks that failed to open, set aside for inspection
//!   corrupt/wal/<segment>      WAL segments with a damaged file header (see [`wal`])
//!   LOCK                       held by the one process that has the directory open
//! ```
//!
//! ```
//! use std::sync::Arc;
//! use strand_store::{Store, StoreConfig, fs::StdFs, testdata};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(Arc::new(StdFs), dir.path(), StoreConfig::default())?;
//! store.append(testdata::batch(1, 3)).await?; // returns once fsynced
//! store.flush().await?;                       // head -> Parquet block
//! let trace = store.get_trace_blocking(testdata::trace_id(1))?.expect("stored");
//! assert_eq!(trace.spans.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod block;
pub mod cache;
pub mod conformance;
pub mod engine;
pub mod error;
pub mod fs;
pub mod head;
pub mod index;
pub mod logs;
pub mod memory;
pub mod search;
pub mod testdata;
pub mod wal;

pub use engine::{
    BlockSet, FsyncPolicy, Refreshed, Store, StoreConfig, StoreSnapshot, StoreStats, StoreView, Visibility,
    failed_inputs, merge_blocks, now_unix_nano,
};
