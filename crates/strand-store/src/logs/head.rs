//! Recent log records in memory.

use std::collections::HashMap;

use bytes::Bytes;
use strand_core::{LogBatch, StoredLog, TraceId};

use crate::error::FormatError;
use crate::wal::LogWalRecord;

/// In-memory log records, kept as the encoded WAL records they arrived in, with an index
/// from trace id to the records holding it. Repeated copies are kept here and dropped by
/// readers and at the cut. Not synchronised: the engine's head lock covers it.
///
/// Ids come from the network, so the map keeps std's keyed hasher.
#[derive(Default)]
pub struct LogHead {
    records: Vec<Bytes>,
    traces: HashMap<TraceId, Vec<u32>>,
    count: usize,
    bytes: u64,
    min_received: u64,
    max_received: u64,
    min_time: u64,
    max_time: u64,
}

impl LogHead {
    /// Adds a batch given as its encoded WAL record and its decoded form (used to index
    /// it). Returns how many records it held.
    pub fn insert(&mut self, encoded: Bytes, batch: &LogBatch, received_unix_nano: u64) -> usize {
        let n = batch.record_count();
        if n == 0 {
            return 0;
        }
        if self.count == 0 {
            self.min_time = u64::MAX;
            self.min_received = received_unix_nano;
        }
        let idx = self.records.len() as u32;
        for r in batch.resource_logs.iter().flat_map(|rl| &rl.scope_logs).flat_map(|sl| &sl.records) {
            if let Some(t) = r.trace_id {
                let recs = self.traces.entry(t).or_default();
                if recs.last() != Some(&idx) {
                    recs.push(idx);
                }
            }
            let time = r.effective_time();
            self.min_time = self.min_time.min(time);
            self.max_time = self.max_time.max(time);
        }
        self.min_received = self.min_received.min(received_unix_nano);
        self.max_received = self.max_received.max(received_unix_nano);
        self.bytes += encoded.len() as u64;
        self.records.push(encoded);
        self.count += n;
        n
    }

    /// The encoded records holding records of a trace: cheap to take under a lock,
    /// decoded afterwards with [`decode_records`].
    pub fn trace_records(&self, id: &TraceId) -> Vec<Bytes> {
        self.traces
            .get(id)
            .map(|recs| recs.iter().filter_map(|&r| self.records.get(r as usize).cloned()).collect())
            .unwrap_or_default()
    }

    /// Every encoded record (cheap handles), for a search, when any record's time may lie
    /// in `[start, end]`.
    pub fn records_in(&self, start: u64, end: u64) -> Vec<Bytes> {
        if self.count == 0 || self.max_time < start || self.min_time > end {
            return Vec::new();
        }
        self.records.clone()
    }

    /// Every record, decoded, in arrival order.
    pub fn batches(&self) -> impl Iterator<Item = Result<LogBatch, FormatError>> + '_ {
        self.records.iter().map(|rec| LogWalRecord::decode_framed(rec).map(|r| r.batch))
    }

    /// Records held (repeated copies included).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Encoded bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Earliest receive time (0 when empty).
    pub fn min_received(&self) -> u64 {
        self.min_received
    }

    /// Latest receive time.
    pub fn max_received(&self) -> u64 {
        self.max_received
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Decodes encoded records (from [`LogHead::trace_records`] or [`LogHead::records_in`]),
/// keeping those `keep` accepts.
pub fn decode_records(
    records: &[Bytes],
    mut keep: impl FnMut(&StoredLog) -> bool,
) -> Result<Vec<StoredLog>, FormatError> {
    let mut out = Vec::new();
    for rec in records {
        let batch = LogWalRecord::decode_framed(rec)?.batch;
        out.extend(batch.into_stored().filter(|l| keep(l)));
    }
    Ok(out)
}
