//! [`SearchIndex`], the finished index of a block: `index.bin` encoding, lookups, and
//! candidate sets for searches.

use super::*;
use crate::error::FormatError;

/// CRC-32C of trace ids, in order: what a version 3 `index.bin` keeps of the ids it leaves
/// out, to check that those it is given on load are the same.
pub(crate) fn ids_checksum<'a>(ids: impl IntoIterator<Item = &'a [u8; 16]>) -> u32 {
    ids.into_iter().fold(0, |crc, id| crc32c::crc32c_append(crc, id))
}

impl SearchIndex {
    /// Encodes for `index.bin`: postings delta-encoded, then postcard. Written piece by
    /// piece (postcard writes a struct as its fields in order, a sequence as its length
    /// then its items), with the deltas made as they are written, not in a copy.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        /// A posting list, written as the gaps between its ordinals.
        struct Deltas<'a>(&'a [u32]);
        impl Serialize for Deltas<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut prev = 0;
                s.collect_seq(self.0.iter().map(|&v| {
                    let d = v.wrapping_sub(prev);
                    prev = v;
                    d
                }))
            }
        }
        /// The terms, each as [`Postings`] with its ordinals delta-encoded.
        struct Terms<'a>(&'a [Postings]);
        impl Serialize for Terms<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|p| (&p.term, Deltas(&p.traces))))
            }
        }
        /// The trace parts without their ids (version 3).
        struct Parts<'a>(&'a [TracePart]);
        impl Serialize for Parts<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(TracePart::without_id))
            }
        }
        let ids = ids_checksum(self.traces.iter().map(|t| &t.id));
        let head = (INDEX_VERSION, ids, &self.services, &self.names, Parts(&self.traces));
        let mut raw = postcard::to_allocvec(&head)?;
        raw = postcard::to_extend(&Terms(&self.terms), raw)?;
        raw = postcard::to_extend(&(&self.unindexed, &self.edges), raw)?;
        raw = postcard::to_extend(&(&self.cross_services, &self.cross_edges), raw)?;
        zstd::bulk::compress(&raw, 3).map_err(FormatError::Zstd)
    }

    /// Decodes `index.bin`, checking that it is consistent. `ids` gives the block's trace
    /// ids in order (those of `traces.parquet`), asked for only by a version 3 file, which
    /// does not hold them.
    pub fn decode(
        data: &[u8],
        ids: impl FnOnce() -> Result<Vec<[u8; 16]>, FormatError>,
    ) -> Result<Self, FormatError> {
        let raw = zstd::stream::decode_all(data).map_err(FormatError::Zstd)?;
        let (version, _): (u32, _) = postcard::take_from_bytes(&raw)?;
        let mut idx = match version {
            1 => postcard::take_from_bytes::<SearchIndex>(&raw)?.0,
            2 => {
                let (mut idx, rest): (SearchIndex, _) = postcard::take_from_bytes(&raw)?;
                (idx.cross_services, idx.cross_edges) = postcard::from_bytes(rest)?;
                idx
            }
            INDEX_VERSION => {
                type Head = (u32, u32, Vec<String>, Vec<String>, Vec<TracePartNoId>);
                type Tail = (Vec<(u16, String)>, Vec<EdgeCount>);
                let ((_, checksum, services, names, parts), rest): (Head, _) =
                    postcard::take_from_bytes(&raw)?;
                let (terms, rest): (Vec<Postings>, _) = postcard::take_from_bytes(rest)?;
                let ((unindexed, edges), rest): (Tail, _) = postcard::take_from_bytes(rest)?;
                let (cross_services, cross_edges) = postcard::from_bytes(rest)?;
                let ids = ids()?;
                if ids.len() != parts.len() {
                    return Err(FormatError::invalid(format!(
                        "{} trace parts for {} trace ids",
                        parts.len(),
                        ids.len()
                    )));
                }
                if ids_checksum(&ids) != checksum {
                    return Err(FormatError::invalid(
                        "the trace ids given are not those the index was written for",
                    ));
                }
                let traces = parts.into_iter().zip(ids).map(|(p, id)| p.with_id(id)).collect();
                SearchIndex {
                    version,
                    services,
                    names,
                    traces,
                    terms,
                    unindexed,
                    edges,
                    cross_edges,
                    cross_services,
                    by_start: Vec::new(),
                }
            }
            found => return Err(FormatError::UnknownVersion { what: "search index", found }),
        };
        let n = idx.traces.len() as u64;
        for p in &mut idx.terms {
            let mut acc = 0u64;
            for t in &mut p.traces {
                acc += u64::from(*t);
                if acc >= n {
                    return Err(FormatError::invalid("posting out of range"));
                }
                *t = acc as u32;
            }
        }
        let services = idx.services.len();
        let names = idx.names.len();
        let bad_part = idx.traces.iter().any(|t| {
            t.services.iter().any(|s| usize::from(s.service) >= services)
                || t.root
                    .as_ref()
                    .is_some_and(|r| usize::from(r.service) >= services || r.name as usize >= names)
        });
        if bad_part
            || idx.terms.iter().any(|p| usize::from(p.term.service) >= services)
            || idx.edges.iter().any(|e| usize::from(e.parent.max(e.child)) >= services)
            || idx.cross_edges.iter().any(|e| usize::from(e.parent.max(e.child)) >= idx.cross_services.len())
            || idx.traces.windows(2).any(|w| w[0].id >= w[1].id)
        {
            return Err(FormatError::invalid("inconsistent search index"));
        }
        idx.order_by_start();
        Ok(idx)
    }

    pub(super) fn order_by_start(&mut self) {
        let mut order: Vec<u32> = (0..self.traces.len() as u32).collect();
        order.sort_unstable_by_key(|&o| {
            let t = &self.traces[o as usize];
            (std::cmp::Reverse(t.start), t.id)
        });
        self.by_start = order;
    }

    /// The part of a trace, if this source has spans of it.
    pub fn part(&self, id: &TraceId) -> Option<&TracePart> {
        self.traces.binary_search_by(|t| t.id.cmp(&id.0)).ok().map(|i| &self.traces[i])
    }

    fn postings(&self, service: u16, field: Field, key: &str, value: &str) -> Option<&[u32]> {
        self.terms
            .binary_search_by(|p| {
                let t = &p.term;
                (t.service, t.field, t.key.as_str(), t.value.as_str()).cmp(&(service, field, key, value))
            })
            .ok()
            .map(|i| self.terms[i].traces.as_slice())
    }

    fn terms_of(&self, service: u16, field: Field) -> &[Postings] {
        let lo = self.terms.partition_point(|p| (p.term.service, p.term.field) < (service, field));
        let hi = self.terms.partition_point(|p| (p.term.service, p.term.field) <= (service, field));
        &self.terms[lo..hi]
    }
}

/// The values both sorted lists hold.
pub(crate) fn intersect<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

pub(super) fn union(lists: &[&[u32]]) -> Vec<u32> {
    let mut out: Vec<u32> = lists.iter().flat_map(|l| l.iter().copied()).collect();
    out.sort_unstable();
    out.dedup();
    out
}

pub(super) fn parse_kind(v: &str) -> SpanKind {
    SpanKind::from_i32(v.parse().unwrap_or(0))
}

impl IndexView for SearchIndex {
    fn service_names(&self) -> &[String] {
        &self.services
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map(String::as_str).unwrap_or("")
    }

    fn is_unindexed(&self, service: u16, key: &str) -> bool {
        self.unindexed.binary_search_by(|(s, k)| (*s, k.as_str()).cmp(&(service, key))).is_ok()
    }

    fn candidates<'q>(
        &self,
        services: &[u16],
        groups: &dyn Fn(u16) -> Vec<Vec<TermRef<'q>>>,
    ) -> Candidates<'_> {
        let mut all: Vec<Vec<u32>> = Vec::new();
        for &svc in services {
            let mut acc: Option<Vec<u32>> = None;
            for group in groups(svc) {
                let lists: Vec<&[u32]> =
                    group.iter().filter_map(|t| self.postings(svc, t.field, t.key, t.value)).collect();
                let hits = if lists.len() == 1 { lists[0].to_vec() } else { union(&lists) };
                acc = Some(match acc {
                    None => hits,
                    Some(prev) => intersect(&prev, &hits),
                });
                if acc.as_ref().is_some_and(Vec::is_empty) {
                    break;
                }
            }
            if let Some(hits) = acc {
                all.push(hits);
            }
        }
        let ords = if all.len() == 1 {
            all.pop().unwrap_or_default()
        } else {
            union(&all.iter().map(Vec::as_slice).collect::<Vec<_>>())
        };
        Candidates::Ords { ords, parts: &self.traces, by_start: &self.by_start }
    }

    fn part_of(&self, id: &TraceId) -> Option<&TracePart> {
        self.part(id)
    }

    fn operations(&self, service: u16) -> Vec<Operation> {
        self.terms_of(service, Field::NameKind)
            .iter()
            .map(|p| Operation { name: p.term.key.clone(), span_kind: parse_kind(&p.term.value) })
            .collect()
    }

    fn attributes(&self, service: u16) -> Vec<(String, String)> {
        self.terms_of(service, Field::Attr)
            .iter()
            .map(|p| (p.term.key.clone(), p.term.value.clone()))
            .collect()
    }

    fn edges(&self, from_minute: u32, to_minute: u32) -> Vec<EdgeCount> {
        self.edges.iter().filter(|e| e.minute >= from_minute && e.minute <= to_minute).copied().collect()
    }

    fn cross_edges(&self, from_minute: u32, to_minute: u32) -> Vec<Link> {
        self.cross_edges
            .iter()
            .filter(|e| (from_minute..=to_minute).contains(&e.minute))
            .map(|e| self.link(e))
            .collect()
    }

    fn time_range(&self) -> (u64, u64) {
        let start = self.traces.iter().map(|t| t.start).min().unwrap_or(u64::MAX);
        let end = self.traces.iter().map(|t| t.end).max().unwrap_or(0);
        (start, end)
    }
}
