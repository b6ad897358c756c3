//! The block cache: the parts of blocks that queries need in memory (search indexes, trace
//! indexes), loaded from the block's files when first asked for and kept within one byte
//! budget (`store.cache_bytes`), least recently used first out.
//!
//! What stays resident per block whatever the budget is small and fixed per trace: its
//! `meta.json`, the Parquet footers and a [`TraceFilter`] of its trace ids (about 1.2 bytes
//! per trace), which lets a trace lookup skip the blocks that cannot hold it without
//! loading their indexes.
//!
//! Weights are estimates of the heap bytes a value holds. A value larger than the whole
//! budget is handed out without being kept. Two queries missing the same part at once both
//! load it; the second copy replaces the first.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Which part of a block a cache entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// `index.bin`, decoded.
    SearchIndex,
    /// `traces.parquet`: where each trace's spans are.
    TraceIndex,
    /// `log_traces.parquet`: where each trace's log records are.
    LogTraceIndex,
    /// `spans.parquet`'s footer with its page index (where each page of each column is),
    /// which reads of a few rows need.
    SpanPages,
    /// The same for `logs.parquet`.
    LogPages,
}

/// Counters of a [`BlockCache`].
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Parts found in the cache.
    pub hits: AtomicU64,
    /// Parts loaded from disk.
    pub misses: AtomicU64,
    /// Parts dropped to keep within the budget.
    pub evictions: AtomicU64,
}

struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    bytes: u64,
    used: u64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<(Arc<str>, Part), Entry>,
    bytes: u64,
    tick: u64,
}

/// A byte-bounded, least-recently-used cache of block parts, shared by every block of a
/// store.
pub struct BlockCache {
    budget: u64,
    entries: Mutex<Entries>,
    /// Hits, misses and evictions.
    pub stats: CacheStats,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache").field("budget", &self.budget).field("bytes", &self.bytes()).finish()
    }
}

impl BlockCache {
    /// A cache holding at most `budget` bytes.
    pub fn new(budget: u64) -> Self {
        Self { budget, entries: Mutex::new(Entries::default()), stats: CacheStats::default() }
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.entries.lock().bytes
    }

    /// Parts held now.
    pub fn len(&self) -> usize {
        self.entries.lock().map.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether part `part` of block `block` is held (without counting it as used).
    pub fn holds(&self, block: &Arc<str>, part: Part) -> bool {
        self.entries.lock().map.contains_key(&(block.clone(), part))
    }

    /// Part `part` of block `block`: from the cache, or from `load` (which gives the value
    /// and its weight in bytes), kept if it fits the budget.
    pub fn get_or_load<T, E>(
        &self,
        block: &Arc<str>,
        part: Part,
        load: impl FnOnce() -> Result<(T, u64), E>,
    ) -> Result<Arc<T>, E>
    where
        T: Any + Send + Sync,
    {
        if let Some(v) = self.get::<T>(block, part) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(v);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let (value, bytes) = load()?;
        let value = Arc::new(value);
        self.insert(block, part, value.clone(), bytes);
        Ok(value)
    }

    fn get<T: Any + Send + Sync>(&self, block: &Arc<str>, part: Part) -> Option<Arc<T>> {
        let mut e = self.entries.lock();
        e.tick += 1;
        let tick = e.tick;
        let entry = e.map.get_mut(&(block.clone(), part))?;
        entry.used = tick;
        entry.value.clone().downcast::<T>().ok()
    }

    /// Keeps `value` as part `part` of `block` if it fits, evicting the least recently used
    /// parts to make room.
    pub fn insert<T: Any + Send + Sync>(&self, block: &Arc<str>, part: Part, value: Arc<T>, bytes: u64) {
        if bytes > self.budget {
            return;
        }
        let mut e = self.entries.lock();
        e.tick += 1;
        let used = e.tick;
        if let Some(old) = e.map.insert((block.clone(), part), Entry { value, bytes, used }) {
            e.bytes -= old.bytes;
        }
        e.bytes += bytes;
        while e.bytes > self.budget {
            let Some(oldest) = e.map.iter().min_by_key(|(_, v)| v.used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(gone) = e.map.remove(&oldest) {
                e.bytes -= gone.bytes;
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops every part of `block` (deleted by compaction or retention).
    pub fn forget(&self, block: &str) {
        let mut e = self.entries.lock();
        let mut freed = 0;
        e.map.retain(|(b, _), v| {
            let keep = &**b != block;
            if !keep {
                freed += v.bytes;
            }
            keep
        });
        e.bytes -= freed;
    }
}

/// A Bloom filter of a block's trace ids: "certainly not here" or "maybe here" (about 1 %
/// false positives at 10 bits per id), written with the block (`filter.bin`).
/// The default filter holds nothing.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    bits: Vec<u64>,
}

/// Bits per trace id.
const FILTER_BITS_PER_ID: usize = 10;
/// Probes per id.
const FILTER_PROBES: u64 = 7;

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser: ids from tests and some SDKs are far from random.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl TraceFilter {
    /// A filter holding `ids`.
    pub fn new<'a>(ids: impl ExactSizeIterator<Item = &'a [u8; 16]>) -> Self {
        let words = (ids.len() * FILTER_BITS_PER_ID).div_ceil(64).max(1);
        let mut f = Self { bits: vec![0; words] };
        for id in ids {
            for bit in f.probes(id) {
                f.bits[bit / 64] |= 1 << (bit % 64);
            }
        }
        f
    }

    fn probes(&self, id: &[u8; 16]) -> impl Iterator<Item = usize> + use<> {
        let (hi, lo) = id.split_at(8);
        let (hi, lo) = (
            u64::from_le_bytes(hi.try_into().unwrap_or_default()),
            u64::from_le_bytes(lo.try_into().unwrap_or_default()),
        );
        let h1 = mix(hi ^ mix(lo ^ 0x9e37_79b9_7f4a_7c15));
        let h2 = mix(h1 ^ 0x2545_f491_4f6c_dd1d) | 1;
        let n = self.bits.len() as u64 * 64;
        (0..FILTER_PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % n) as usize)
    }

    /// Whether `id` may be among the filter's ids (`false`: certainly not).
    pub fn may_contain(&self, id: &[u8; 16]) -> bool {
        !self.bits.is_empty() && self.probes(id).all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> u64 {
        self.bits.len() as u64 * 8
    }

    /// Appends the filter's encoding (its word count, then the words, little-endian).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.bits.len() as u64).to_le_bytes());
        for w in &self.bits {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// Reads a filter from the front of `data`, advancing it.
    fn decode_from(data: &mut &[u8]) -> Option<Self> {
        let take = |data: &mut &[u8]| -> Option<u64> {
            let (word, rest) = data.split_first_chunk::<8>()?;
            *data = rest;
            Some(u64::from_le_bytes(*word))
        };
        let words = usize::try_from(take(data)?).ok()?;
        if words == 0 || words > data.len() / 8 {
            return None;
        }
        let bits = (0..words).map(|_| take(data)).collect::<Option<Vec<u64>>>()?;
        Some(Self { bits })
    }
}

/// `filter.bin`: the trace-id filters of a block's spans and of its log records, so that
/// opening a block reads this small file instead of its trace indexes.
///
/// Layout: the magic `STRFILT1`, then the span filter, then a byte 0 or 1 telling whether a
/// log filter follows, then it; a filter is its word count (u64) and its 64-bit words, all
/// little-endian. The file is derived (rebuilt from the trace indexes when damaged).
pub(crate) struct BlockFilters {
    pub(crate) spans: TraceFilter,
    pub(crate) logs: Option<TraceFilter>,
}

/// File name of [`BlockFilters`].
pub(crate) const FILTER_FILE: &str = "filter.bin";
const FILTER_MAGIC: &[u8; 8] = b"STRFILT1";

impl BlockFilters {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = FILTER_MAGIC.to_vec();
        self.spans.encode_into(&mut out);
        out.push(u8::from(self.logs.is_some()));
        if let Some(l) = &self.logs {
            l.encode_into(&mut out);
        }
        out
    }

    /// The filters in `data`; `None` when it is not a whole, well-formed `filter.bin`.
    pub(crate) fn decode(data: &[u8]) -> Option<Self> {
        let mut rest = data.strip_prefix(FILTER_MAGIC)?;
        let spans = TraceFilter::decode_from(&mut rest)?;
        let (&has_logs, mut rest) = rest.split_first()?;
        let logs = match has_logs {
            0 => None,
            1 => Some(TraceFilter::decode_from(&mut rest)?),
            _ => return None,
        };
        rest.is_empty().then_some(Self { spans, logs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn keeps_within_the_budget_least_recently_used_out() {
        let c = BlockCache::new(100);
        let load = |v: u32, bytes: u64| move || Ok::<_, ()>((v, bytes));
        assert_eq!(*c.get_or_load(&key("a"), Part::SearchIndex, load(1, 40)).expect("cached"), 1);
        assert_eq!(*c.get_or_load(&key("b"), Part::SearchIndex, load(2, 40)).expect("cached"), 2);
        // "a" is used again, so "b" is the one to go when "c" arrives.
        assert_eq!(*c.get_or_load(&key("a"), Part::SearchIndex, load(9, 40)).expect("cached"), 1);
        assert_eq!(*c.get_or_load(&key("c"), Part::SearchIndex, load(3, 40)).expect("cached"), 3);
        assert_eq!(c.bytes(), 80);
        assert_eq!(c.stats.evictions.load(Ordering::Relaxed), 1);
        assert_eq!(
            *c.get_or_load(&key("b"), Part::SearchIndex, load(20, 40)).expect("cached"),
            20,
            "reloaded"
        );
        assert_eq!(*c.get_or_load(&key("c"), Part::SearchIndex, load(30, 40)).expect("cached"), 3, "kept");
        assert_eq!(c.stats.hits.load(Ordering::Relaxed), 2);
        assert_eq!(c.stats.misses.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_value_over_the_budget_is_served_not_kept_and_errors_pass_through() {
        let c = BlockCache::new(10);
        assert_eq!(
            *c.get_or_load(&key("a"), Part::TraceIndex, || Ok::<_, ()>((7u8, 11))).expect("cached"),
            7
        );
        assert!(c.is_empty());
        let r = c.get_or_load(&key("a"), Part::TraceIndex, || Err::<(u8, u64), _>("broken"));
        assert_eq!(r.err(), Some("broken"));
        assert!(c.is_empty());
    }

    #[test]
    fn parts_are_told_apart_and_forget_drops_a_blocks_parts() {
        let c = BlockCache::new(1000);
        c.insert(&key("a"), Part::SearchIndex, Arc::new(1u32), 10);
        c.insert(&key("a"), Part::TraceIndex, Arc::new(2u32), 10);
        c.insert(&key("b"), Part::TraceIndex, Arc::new(3u32), 10);
        let get = |b: &str, p| c.get_or_load(&key(b), p, || Ok::<_, ()>((0u32, 1))).map(|v| *v);
        assert_eq!(get("a", Part::TraceIndex), Ok(2));
        c.forget("a");
        assert_eq!(c.bytes(), 10, "b's part only");
        assert_eq!(get("a", Part::SearchIndex), Ok(0), "reloaded after forget");
        assert_eq!(c.bytes(), 11);
        assert_eq!(get("b", Part::TraceIndex), Ok(3));
    }

    #[test]
    fn the_filter_has_no_false_negatives_and_few_false_positives() {
        let ids: Vec<[u8; 16]> = (0u64..10_000)
            .map(|i| {
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&i.to_be_bytes());
                id
            })
            .collect();
        let f = TraceFilter::new(ids.iter());
        assert!(ids.iter().all(|id| f.may_contain(id)));
        let false_positives = (10_000u64..20_000)
            .filter(|i| {
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&i.to_be_bytes());
                f.may_contain(&id)
            })
            .count();
        assert!(false_positives < 200, "{false_positives} false positives in 10,000");
        let empty = TraceFilter::new([].iter());
        assert!(!empty.may_contain(&[1; 16]));
    }

    #[test]
    fn filters_round_trip_through_their_file_and_damage_is_refused() {
        let ids: Vec<[u8; 16]> = (0u8..50).map(|i| [i; 16]).collect();
        for logs in [None, Some(TraceFilter::new(ids[..5].iter()))] {
            let f = BlockFilters { spans: TraceFilter::new(ids.iter()), logs };
            let bytes = f.encode();
            let back = BlockFilters::decode(&bytes).expect("decodes");
            assert_eq!(back.spans.bits, f.spans.bits);
            assert_eq!(back.logs.map(|l| l.bits), f.logs.map(|l| l.bits));
            assert!(BlockFilters::decode(&bytes[..bytes.len() - 1]).is_none(), "truncated");
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(BlockFilters::decode(&longer).is_none(), "trailing bytes");
            let mut huge = bytes.clone();
            huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            assert!(BlockFilters::decode(&huge).is_none(), "a word count past the end");
        }
        assert!(BlockFilters::decode(b"STRFILT0").is_none());
    }
}
