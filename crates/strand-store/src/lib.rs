//! Strand's embedded store.
//!
//! - [`wal`]: the write-ahead log; its record format is documented there.
//! - [`head`]: recent spans in memory.
//! - [`block`]: immutable Parquet blocks; the schema is documented there.
//! - [`engine`]: [`Store`], which ties them together, plus compaction and retention.
//! - [`fs`]: the file-system trait everything writes through, and [`fs::FaultyFs`] for
//!   tests.
//! - [`conformance`]: the suite every `TraceWriter`/`TraceReader` backend must pass.
//!
//! Data directory:
//!
//! ```text
//! <data-dir>/
//!   wal/<segment>.wal          write-ahead log segments (deleted once in a block)
//!   blocks/<block-id>/         spans.parquet, traces.parquet, meta.json
//!   corrupt/<block-id>/        blocks that failed to open, set aside for inspection
//! ```

pub mod block;
pub mod conformance;
pub mod engine;
pub mod fs;
pub mod head;
pub mod testdata;
pub mod wal;

pub use engine::{FsyncPolicy, Store, StoreConfig, StoreSnapshot, StoreStats, now_unix_nano};
