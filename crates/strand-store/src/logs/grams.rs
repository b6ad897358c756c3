//! The text filter of a block's log records (`log_grams.bin`): for each row group of
//! `logs.parquet`, every byte trigram of its bodies, ASCII-lowercased. A search for a text
//! some of whose trigrams a row group lacks cannot match there, so that row group is not
//! read: a search for something absent costs a few set lookups per row group instead of
//! decompressing every body.
//!
//! ```text
//! log_grams.bin = postcard(GramFile { version: 1, groups: [Group { rows, grams }] })
//!   one Group per row group of logs.parquet, in order; rows: that row group's row count
//!   grams: None (too many distinct trigrams: always read), or the trigrams ascending,
//!          each (b0 << 16 | b1 << 8 | b2) of three consecutive lowercased body bytes,
//!          written as differences from the one before (postcard varints)
//! ```
//!
//! Trigrams never span two bodies (a match across bodies does not count). A structured
//! body contributes the trigrams of its text as a search sees it, lowercased both ASCII-only
//! and fully (Unicode), so the filter never refuses a row the scan would accept.

use serde::{Deserialize, Serialize};
use strand_core::{AnyValue, LogRecord};

use crate::error::FormatError;

/// File name of the filter in a block directory.
pub const LOG_GRAMS_FILE: &str = "log_grams.bin";

const VERSION: u8 = 1;

/// Beyond this many distinct trigrams a row group gets no set (it is always read): such a
/// set would cost more bytes than the reads it saves.
const MAX_GRAMS: usize = 1 << 17;

#[derive(Serialize, Deserialize)]
struct GramFile {
    version: u8,
    groups: Vec<Group>,
}

#[derive(Serialize, Deserialize)]
struct Group {
    rows: u64,
    /// Differences between consecutive trigrams, the first from 0.
    grams: Option<Vec<u32>>,
}

/// Collects the trigrams of one row group at a time, in a bit per possible trigram.
pub struct GramCollector {
    bits: Vec<u64>,
    distinct: usize,
    groups: Vec<Group>,
    rows: u64,
}

impl Default for GramCollector {
    fn default() -> Self {
        Self { bits: vec![0; (1 << 24) / 64], distinct: 0, groups: Vec::new(), rows: 0 }
    }
}

impl GramCollector {
    /// Adds one row's body text (already as a search sees it, not yet lowercased).
    pub fn add(&mut self, text: &[u8]) {
        if text.len() >= 3 {
            let mut g =
                (u32::from(text[0].to_ascii_lowercase()) << 8) | u32::from(text[1].to_ascii_lowercase());
            for &b in &text[2..] {
                g = ((g << 8) | u32::from(b.to_ascii_lowercase())) & 0x00ff_ffff;
                let (word, bit) = ((g >> 6) as usize, 1u64 << (g & 63));
                if self.bits[word] & bit == 0 {
                    self.bits[word] |= bit;
                    self.distinct += 1;
                }
            }
        }
    }

    /// Adds one row's body as a search sees it: a text body as it is, a structured one as
    /// its text, lowercased both ASCII-only and fully (Unicode), so the filter never refuses
    /// a row the scan would accept.
    pub fn add_body(&mut self, body: &AnyValue) {
        match body {
            AnyValue::String(s) => self.add(s.as_bytes()),
            AnyValue::Empty => {}
            other => {
                let text = LogRecord { body: other.clone(), ..LogRecord::default() }.body_text();
                self.add(text.as_bytes());
                self.add(text.to_lowercase().as_bytes());
            }
        }
    }

    /// Counts a row (whatever its body).
    pub fn row(&mut self) {
        self.rows += 1;
    }

    /// Ends the current row group.
    pub fn end_group(&mut self) {
        let keep = self.distinct <= MAX_GRAMS;
        let mut deltas = Vec::with_capacity(if keep { self.distinct } else { 0 });
        let mut last = 0u32;
        for (w, word) in self.bits.iter_mut().enumerate() {
            let mut bits = std::mem::take(word);
            while keep && bits != 0 {
                let g = (w as u32) << 6 | bits.trailing_zeros();
                deltas.push(g - last);
                last = g;
                bits &= bits - 1;
            }
        }
        self.groups.push(Group { rows: self.rows, grams: keep.then_some(deltas) });
        self.distinct = 0;
        self.rows = 0;
    }

    /// The encoded file.
    pub fn finish(self) -> Vec<u8> {
        postcard::to_allocvec(&GramFile { version: VERSION, groups: self.groups })
            .expect("encoding into a Vec cannot fail")
    }
}

/// A block's filter, decoded: the trigram set of each row group, ascending.
#[derive(Debug)]
pub struct GramSets {
    groups: Vec<Option<Vec<u32>>>,
}

impl GramSets {
    /// Decodes `log_grams.bin`, checking that its row groups are those of `logs.parquet`
    /// (`rows`: each row group's row count).
    pub fn decode(bytes: &[u8], rows: &[u64]) -> Result<Self, FormatError> {
        let file: GramFile = postcard::from_bytes(bytes)?;
        if file.version != VERSION {
            return Err(FormatError::UnknownVersion {
                what: "log_grams.bin",
                found: u32::from(file.version),
            });
        }
        if file.groups.len() != rows.len() || file.groups.iter().zip(rows).any(|(g, r)| g.rows != *r) {
            return Err(FormatError::invalid(
                "log_grams.bin does not describe the row groups of logs.parquet",
            ));
        }
        let groups = file
            .groups
            .into_iter()
            .map(|g| {
                g.grams.map(|deltas| {
                    let mut at = 0u32;
                    deltas
                        .iter()
                        .map(|d| {
                            at = at.saturating_add(*d);
                            at
                        })
                        .collect::<Vec<u32>>()
                })
            })
            .collect::<Vec<_>>();
        if groups
            .iter()
            .flatten()
            .any(|g| g.windows(2).any(|w| w[0] >= w[1]) || g.last().is_some_and(|x| *x > 0x00ff_ffff))
        {
            return Err(FormatError::invalid("log_grams.bin: trigrams out of order"));
        }
        Ok(Self { groups })
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> u64 {
        self.groups.iter().map(|g| 32 + g.as_ref().map_or(0, |v| v.capacity() as u64 * 4)).sum()
    }

    /// Whether row group `group` may hold a body containing the text whose trigrams are
    /// `needle` (see [`needle_grams`]). `false` is certain; `true` means read it.
    pub fn may_contain(&self, group: usize, needle: &[u32]) -> bool {
        match self.groups.get(group) {
            Some(Some(set)) => needle.iter().all(|g| set.binary_search(g).is_ok()),
            _ => true,
        }
    }
}

/// The trigrams of a search text (lowercase), or `None` when the filter cannot judge it:
/// shorter than three bytes, or not ASCII (blocks fold case for ASCII only, and a
/// non-ASCII text is matched with Unicode case folding).
pub fn needle_grams(lower: &str) -> Option<Vec<u32>> {
    let b = lower.as_bytes();
    if b.len() < 3 || !lower.is_ascii() {
        return None;
    }
    let mut out: Vec<u32> =
        b.windows(3).map(|w| u32::from(w[0]) << 16 | u32::from(w[1]) << 8 | u32::from(w[2])).collect();
    out.sort_unstable();
    out.dedup();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(groups: &[&[&str]]) -> GramSets {
        let mut c = GramCollector::default();
        let mut rows = Vec::new();
        for g in groups {
            for body in *g {
                c.add(body.as_bytes());
                c.row();
            }
            c.end_group();
            rows.push(g.len() as u64);
        }
        GramSets::decode(&c.finish(), &rows).expect("valid")
    }

    #[test]
    fn a_group_is_skipped_only_when_a_trigram_is_missing() {
        let s = sets(&[&["Cache MISS for key 42", "slow query"], &["sms sent", "ok"]]);
        let q = |text: &str| needle_grams(text).expect("judged");
        assert!(s.may_contain(0, &q("cache miss")));
        assert!(s.may_contain(0, &q("miss for")));
        assert!(!s.may_contain(1, &q("cache miss")));
        assert!(!s.may_contain(0, &q("no such line")));
        assert!(s.may_contain(1, &q("ms se")));
        // Trigrams do not span bodies: "queryok" is in no body.
        assert!(!s.may_contain(0, &q("key 42slow")));
        // A false positive is allowed (every trigram present, text absent), never a miss.
        assert!(s.may_contain(0, &q("ache miss for key 4")));
        assert!(needle_grams("ab").is_none());
        assert!(needle_grams("grüße").is_none());
    }

    #[test]
    fn decoding_checks_the_row_groups_and_the_order() {
        let mut c = GramCollector::default();
        c.add(b"abcd");
        c.row();
        c.end_group();
        let bytes = c.finish();
        assert!(GramSets::decode(&bytes, &[1]).is_ok());
        assert!(GramSets::decode(&bytes, &[2]).is_err());
        assert!(GramSets::decode(&bytes, &[1, 1]).is_err());
        for cut in 0..bytes.len() {
            assert!(GramSets::decode(&bytes[..cut], &[1]).is_err(), "cut at {cut}");
        }
        let zero_delta = postcard::to_allocvec(&GramFile {
            version: VERSION,
            groups: vec![Group { rows: 1, grams: Some(vec![5, 0]) }],
        })
        .expect("encodes");
        assert!(GramSets::decode(&zero_delta, &[1]).is_err());
    }

    #[test]
    fn too_many_trigrams_means_no_filter() {
        let mut c = GramCollector::default();
        // Every 3-byte combination of 64 letters: 262,144 distinct trigrams.
        let alphabet: Vec<u8> = (0..64).map(|i| 0x80 + i as u8).collect();
        for &a in &alphabet {
            for &b in &alphabet {
                let body: Vec<u8> = alphabet.iter().flat_map(|&x| [a, b, x]).collect();
                c.add(&body);
                c.row();
            }
        }
        c.end_group();
        let s = GramSets::decode(&c.finish(), &[64 * 64]).expect("valid");
        assert!(s.may_contain(0, &[0x00_61_62_63]), "no set: always read");
    }
}
