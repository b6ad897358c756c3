//! Recent log records in memory.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use strand_core::{LogBatch, StoredLog, TraceId};

use super::LogBlockBuilder;
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
    /// The records as block columns, filled off the ingest path (see [`LogColumns`]).
    columns: Arc<Mutex<LogColumns>>,
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

    /// The head's column builders, for [`LogColumns::add`], and the position of the newest
    /// record (the one to add next).
    pub fn columns(&self) -> (Arc<Mutex<LogColumns>>, usize) {
        (self.columns.clone(), self.records.len().saturating_sub(1))
    }

    /// The head's records as a block's column builders, for the cut: the records already
    /// appended as they arrived are taken, the rest (missed, or replayed from the WAL at
    /// start) are decoded and appended now. Taking leaves the columns empty, so a cut that
    /// is retried decodes everything.
    pub fn take_builder(&self) -> Result<LogBlockBuilder, FormatError> {
        let LogColumns { mut builder, appended, poisoned } = std::mem::take(&mut *self.columns.lock());
        let from = if poisoned {
            builder = LogBlockBuilder::default();
            0
        } else {
            appended
        };
        for rec in self.records.iter().skip(from) {
            builder.append_batch(&LogWalRecord::decode_framed(rec)?.batch)?;
        }
        Ok(builder)
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

/// The column builders of a head's records, in record order, filled by the index thread
/// from the batches the WAL thread has just decoded and written, so that a cut needs not
/// decode the head's records again. Records it misses (its queue was full) are decoded by
/// the cut ([`LogHead::take_builder`]).
#[derive(Default)]
pub struct LogColumns {
    builder: LogBlockBuilder,
    /// Head records appended, the first ones in order.
    appended: usize,
    /// An append failed half-way: the cut starts over from the records.
    poisoned: bool,
}

impl LogColumns {
    /// Appends the batch of the head's record at `position` when it is the next one;
    /// otherwise leaves it to the cut.
    pub fn add(&mut self, position: usize, batch: &LogBatch) {
        if self.poisoned || position != self.appended {
            return;
        }
        match self.builder.append_batch(batch) {
            Ok(()) => self.appended += 1,
            Err(_) => self.poisoned = true,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::log_batch;

    /// A head of `n` batches, each inserted as the WAL thread does; `columns` says which of
    /// them the index thread appended.
    fn head(n: u8, columns: impl Fn(usize) -> bool) -> LogHead {
        let mut head = LogHead::default();
        for seed in 1..=n {
            let batch = log_batch(seed, 2);
            head.insert(LogWalRecord::encode_parts(1, "", &batch).into(), &batch, 1);
            let (cols, position) = head.columns();
            if columns(position) {
                cols.lock().add(position, &batch);
            }
        }
        head
    }

    /// The cut's block file; every record appended exactly once (copies would be dropped
    /// by the encoding, so the rows are counted before).
    fn encoded(head: &LogHead) -> Vec<u8> {
        let builder = head.take_builder().expect("builds");
        assert_eq!(builder.rows(), head.count());
        builder.finish().expect("encodes").logs
    }

    #[test]
    fn a_cut_gives_the_same_block_whatever_the_index_thread_appended() {
        let decoded_only = encoded(&head(4, |_| false));
        assert_eq!(encoded(&head(4, |_| true)), decoded_only, "all appended as they came");
        assert_eq!(encoded(&head(4, |p| p != 1)), decoded_only, "one missed: the rest decoded at the cut");
        // Taking empties the columns: a retried cut decodes everything again.
        let h = head(4, |_| true);
        assert_eq!(encoded(&h), decoded_only);
        assert_eq!(encoded(&h), decoded_only);
    }
}
