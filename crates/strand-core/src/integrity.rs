//! Chain integrity: where a trace's context was lost, per trace and per service edge.
//!
//! A *finding* says that a trace's chain is broken at a known place: which kind of break,
//! which span(s), the services on both sides and, where known, the other trace that holds
//! the rest of the chain. The kinds ([`FindingKind`]) and what is *not* a break (async
//! children outliving their parent, links instead of parents, callees that are never
//! instrumented, spans still arriving, children of unsampled parents) are specified in
//! `docs/integrity.md`; `strand-integrity` implements them.
//!
//! [`ChainIntegrity`] is what the query APIs ask; [`SpanObserver`] is how the analyser sees
//! every span before sampling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::contract::BoxFuture;
use crate::ids::{SpanId, TraceId};
use crate::model::{SpanBatch, Trace};

/// A kind of break, named as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A span's parent is not in the trace: the subtree under it is detached.
    MissingParent,
    /// No span of the trace is without a parent: its root never arrived.
    MissingRoot,
    /// A CLIENT span whose (instrumented) callee has no SERVER span under it: the callee did
    /// not extract the context.
    ClientWithoutServer,
    /// A PRODUCER span that no CONSUMER span continues (as child or link) while the
    /// destination has consumers.
    ProducerWithoutConsumer,
    /// A CONSUMER span that starts a trace of its own on a destination with producers: the
    /// context was lost on the queue hop.
    ConsumerNewRoot,
    /// A trace whose root is INTERNAL or CLIENT work in a service that otherwise receives
    /// requests: a task started without the request's context.
    UnrootedWork,
    /// A child outside its parent's time range beyond the tolerance: the two services'
    /// clocks disagree.
    ClockSkew,
}

impl FindingKind {
    /// Every kind, in the order of the API's documentation.
    pub const ALL: [FindingKind; 7] = [
        FindingKind::MissingParent,
        FindingKind::MissingRoot,
        FindingKind::ClientWithoutServer,
        FindingKind::ProducerWithoutConsumer,
        FindingKind::ConsumerNewRoot,
        FindingKind::UnrootedWork,
        FindingKind::ClockSkew,
    ];

    /// The API name (`missing_parent`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::MissingParent => "missing_parent",
            FindingKind::MissingRoot => "missing_root",
            FindingKind::ClientWithoutServer => "client_without_server",
            FindingKind::ProducerWithoutConsumer => "producer_without_consumer",
            FindingKind::ConsumerNewRoot => "consumer_new_root",
            FindingKind::UnrootedWork => "unrooted_work",
            FindingKind::ClockSkew => "clock_skew",
        }
    }

    /// A bit of its own, for sets of kinds.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Whether the kind means the chain is broken (every kind but clock skew: a skewed
    /// clock misplaces spans, it loses no context).
    pub fn breaks_chain(self) -> bool {
        self != FindingKind::ClockSkew
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FindingKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        FindingKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = FindingKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown integrity finding kind `{s}` (known: broken, {})", names.join(", "))
        })
    }
}

/// How sure a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Read from the trace's own structure, or matched one to one.
    #[default]
    High,
    /// Inferred from timing (candidate parent traces of unrooted work).
    Low,
}

/// One break in a trace's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What kind of break.
    pub kind: FindingKind,
    /// The span(s) at the break: the orphan, the client or producer, the new root.
    pub span_ids: Vec<SpanId>,
    /// The services on both sides of the break, caller side first (`""` where unknown).
    pub services: Vec<String>,
    /// The trace holding the other half of the chain, where known.
    pub related_trace_id: Option<TraceId>,
    /// The span of the other half, where known.
    pub related_span_id: Option<SpanId>,
    /// Further candidates for the other half (unrooted work: requests in progress when the
    /// work started), best first.
    pub candidates: Vec<TraceId>,
    /// How sure the finding is.
    pub confidence: Confidence,
    /// What happened, in a sentence.
    pub message: String,
}

/// A trace's integrity as the query APIs report it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Integrity {
    /// Whether the trace has settled (no new span for the settle time). An unsettled trace
    /// is analysed as it stands; spans still arriving may complete it.
    pub settled: bool,
    /// Whether the trace is one tree: exactly one root and every parent present.
    pub complete: bool,
    /// The breaks found, by kind then span.
    pub findings: Vec<Finding>,
}

impl Integrity {
    /// Whether any finding breaks the chain.
    pub fn broken(&self) -> bool {
        self.findings.iter().any(|f| f.kind.breaks_chain())
    }
}

/// What an `integrity=` search filter asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntegrityFilter {
    /// Any finding that breaks the chain.
    Broken,
    /// A finding of this kind.
    Kind(FindingKind),
}

impl IntegrityFilter {
    /// Whether a trace with findings of `kinds` (a set of [`FindingKind::bit`]s) matches.
    pub fn matches(self, kinds: u8) -> bool {
        match self {
            IntegrityFilter::Broken => kinds & !FindingKind::ClockSkew.bit() != 0,
            IntegrityFilter::Kind(k) => kinds & k.bit() != 0,
        }
    }
}

impl FromStr for IntegrityFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "broken" { Ok(IntegrityFilter::Broken) } else { s.parse().map(IntegrityFilter::Kind) }
    }
}

/// Calls across one caller → callee edge whose context crossed or was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeHealth {
    /// Calling (or producing) service.
    pub caller: String,
    /// Called (or consuming) service.
    pub callee: String,
    /// How: `http`, `grpc`, `rpc`, `messaging:<destination>`, or `call`.
    pub via: String,
    /// Calls whose context reached the callee.
    pub crossed: u64,
    /// Calls whose context was lost.
    pub lost: u64,
}

/// A trace found by an `integrity=` search: its start and id (the search order), and the
/// kinds of its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenTrace {
    /// Earliest span start.
    pub start_unix_nano: u64,
    /// The trace.
    pub trace_id: TraceId,
    /// Its finding kinds, as [`FindingKind::bit`]s.
    pub kinds: u8,
}

/// Chain integrity as the query APIs see it. Called concurrently from request tasks.
pub trait ChainIntegrity: Send + Sync + 'static {
    /// The integrity of a trace read from the store: analysed now as it stands, with what
    /// the analyser learned from other traces (the other halves, which callees are
    /// instrumented). An empty trace is complete and settled. `None` when it cannot be
    /// told now (an analyser elsewhere did not answer).
    fn of_trace(&self, trace: &Trace) -> BoxFuture<'_, Option<Integrity>>;

    /// The finding kinds recorded for settled traces, by id (`0` for none or unknown);
    /// cheap, for badges in search results.
    fn kinds_of(&self, ids: &[TraceId]) -> BoxFuture<'_, Vec<u8>>;

    /// Settled traces with findings matching `filter` whose start is in
    /// `[start, end]`, newest first (start descending, then id ascending), strictly after
    /// `after` in that order, recorded no later than `as_of` (Unix nanoseconds); at most
    /// `limit`.
    fn find_broken(
        &self,
        filter: IntegrityFilter,
        start_unix_nano: u64,
        end_unix_nano: u64,
        after: Option<(u64, TraceId)>,
        as_of_unix_nano: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<BrokenTrace>, crate::StoreError>>;

    /// Per caller → callee edge, calls whose context crossed and was lost, counted from
    /// every span before sampling, for calls that started in `[start, end]`.
    fn edges(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
    ) -> BoxFuture<'_, Result<Vec<EdgeHealth>, crate::StoreError>>;
}

/// Sees every span as it is received, before sampling. Called concurrently from the
/// receivers' tasks on the ingest path: it must be cheap and must not block on I/O.
pub trait SpanObserver: Send + Sync + 'static {
    /// One received batch, at `received_unix_nano`.
    fn observe(&self, batch: &SpanBatch, received_unix_nano: u64);
}
