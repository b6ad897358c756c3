//! The per-trace analysis: pure, given the trace's spans, what was learned from other
//! traces ([`Relations`]) and the time. The same function runs when a trace settles in the
//! stream and when a trace is read.
//!
//! Rules (`docs/integrity.md` says them for users):
//! - `missing_parent`: spans whose parent id is absent, grouped by that id; a CLIENT or
//!   PRODUCER span of the trace that was running when the orphan started and has no child
//!   in the orphan's service is named as the likely caller.
//! - `missing_root`: no span without a parent; the earliest group of orphans is where the
//!   root should be (the other groups are `missing_parent`).
//! - `client_without_server`: a CLIENT span (not to a database or a broker) with no child
//!   in another service, whose callee is known to report server spans; the callee's new
//!   root SERVER span, matched by time and method/path or RPC, is the other half, and that
//!   trace carries the same finding from its side.
//! - `producer_without_consumer` / `consumer_new_root`: a PRODUCER no CONSUMER continues
//!   (child or link) on a destination with consumers, once a new-root consumer on the same
//!   destination is matched to it (message id first, else time) or the hop window has
//!   passed; a CONSUMER root without links on a destination with producers.
//! - `unrooted_work`: the root is INTERNAL or CLIENT work, without links, in a service that
//!   receives requests, and requests of that service were in progress when it started
//!   (listed as low-confidence candidates).
//! - `clock_skew`: across services, a child starting before its parent, or a SERVER child
//!   starting after its CLIENT parent ended, by more than the tolerance.
//!
//! Nothing is reported for spans whose flags say their context was not sampled.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt as _};
use std::sync::Arc;

use strand_core::{Confidence, Finding, FindingKind, SpanId, SpanKind, TraceId};

use crate::span::Lite;

/// The other half of a break: a span in another trace, and its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The other trace.
    pub trace_id: TraceId,
    /// The span there.
    pub span_id: SpanId,
    /// Its service.
    pub service: Arc<str>,
}

/// What the analysis may ask about the rest of the world: learned from every span before
/// sampling. Matching methods pair spans one to one and remember the pair, so both halves
/// name each other.
pub trait Relations {
    /// Whether `service` reports SERVER or CONSUMER spans (it is instrumented and receives
    /// requests).
    fn receives_requests(&self, service: &str) -> bool;
    /// The service a callee key (`peer:`, `rpc:`, `addr:`) was seen to reach.
    fn callee_service(&self, key: &str) -> Option<Arc<str>>;
    /// Services with CONSUMER spans on `destination`.
    fn consumers_of(&self, destination: &str) -> Vec<Arc<str>>;
    /// Whether PRODUCER spans were seen on `destination`.
    fn has_producers(&self, destination: &str) -> bool;
    /// Whether an instrumented caller was seen calling `service` (a call whose context
    /// reached it).
    fn has_instrumented_caller(&self, service: &str) -> bool;
    /// A CONSUMER span in another trace that links to the producer span `(trace, span)`.
    fn consumer_linking(&self, trace: TraceId, span: SpanId) -> Option<Peer>;
    /// The new-root CONSUMER span that received what `producer` (in `trace`) sent.
    fn consumer_root_for(&mut self, trace: TraceId, producer: &Lite) -> Option<Peer>;
    /// The PRODUCER span that sent what the new-root `consumer` (in `trace`) received.
    fn producer_for(&mut self, trace: TraceId, consumer: &Lite) -> Option<Peer>;
    /// The new-root SERVER span that `client` (in `trace`) called, in `callee` if known.
    fn server_root_for(&mut self, trace: TraceId, client: &Lite, callee: Option<&str>) -> Option<Peer>;
    /// The CLIENT span whose call started the new-root `server` span (in `trace`).
    fn client_for(&mut self, trace: TraceId, server: &Lite) -> Option<Peer>;
    /// Traces with a SERVER or CONSUMER span of `service` in progress at `at`, closest
    /// first, `exclude` left out.
    fn requests_at(&self, service: &str, at: u64, exclude: TraceId) -> Vec<TraceId>;
}

/// Settings of one analysis.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Now, Unix nanoseconds.
    pub now: u64,
    /// How long a message may wait in a queue before its producer counts as unanswered.
    pub hop_window_nanos: u64,
    /// Clock disagreement between services tolerated before `clock_skew`.
    pub clock_skew_tolerance_nanos: u64,
}

/// What happened to one call (CLIENT or PRODUCER span) across its edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The callee continued the trace.
    Crossed,
    /// The callee did not.
    Lost,
}

/// One call's outcome, for edge health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The CLIENT or PRODUCER span.
    pub span_id: SpanId,
    /// Its start.
    pub start: u64,
    /// Calling service.
    pub caller: Arc<str>,
    /// Called service.
    pub callee: Arc<str>,
    /// `http`, `grpc`, `messaging:<destination>`, ...
    pub via: Arc<str>,
    /// What the caller calls the callee by (`rpc:`, `addr:`, `peer:`), when it says.
    pub callee_key: Option<Arc<str>>,
    /// Crossed or lost.
    pub outcome: Outcome,
}

/// The result for one trace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysis {
    /// One tree: exactly one root, every parent present.
    pub complete: bool,
    /// Breaks, by kind then first span.
    pub findings: Vec<Finding>,
    /// Calls whose outcome is known (calls to callees never seen instrumented, and
    /// producers still within the hop window, are not).
    pub calls: Vec<Call>,
}

fn ms(nanos: u64) -> String {
    let ms = nanos as f64 / 1e6;
    if ms >= 100.0 { format!("{ms:.0} ms") } else { format!("{ms:.1} ms") }
}

fn finding(kind: FindingKind, spans: Vec<SpanId>, services: [&str; 2], message: String) -> Finding {
    Finding {
        kind,
        span_ids: spans,
        services: services.iter().map(|s| (*s).to_owned()).collect(),
        related_trace_id: None,
        related_span_id: None,
        candidates: Vec::new(),
        confidence: Confidence::High,
        message,
    }
}

fn relate(f: &mut Finding, peer: &Peer) {
    f.related_trace_id = Some(peer.trace_id);
    f.related_span_id = Some(peer.span_id);
}

/// Analyses one trace's spans (each once, any order).
pub fn analyse(trace: TraceId, spans: &[Lite], rel: &mut dyn Relations, opts: Options) -> Analysis {
    let mut out = Analysis::default();
    if spans.is_empty() {
        out.complete = true;
        return out;
    }
    let mut by_id: HashMap<SpanId, usize> = HashMap::with_capacity(spans.len());
    for (i, s) in spans.iter().enumerate() {
        by_id.entry(s.span_id).or_insert(i);
    }
    let mut parent_of: Vec<usize> = vec![usize::MAX; spans.len()];
    let mut orphans: BTreeMap<SpanId, Vec<usize>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent {
            None => roots.push(i),
            Some(p) => match by_id.get(&p) {
                Some(&parent) => parent_of[i] = parent,
                None => orphans.entry(p).or_default().push(i),
            },
        }
    }
    let children = Children::new(&parent_of);
    out.complete = roots.len() == 1 && orphans.is_empty();
    let svc = |i: usize| &*spans[i].service;

    // Orphans: the earliest group stands where the root should be when there is none.
    let mut groups: Vec<(SpanId, Vec<usize>)> = orphans.into_iter().collect();
    groups.retain(|(_, g)| g.iter().any(|&i| spans[i].sampled));
    groups.sort_by_key(|(_, g)| g.iter().map(|&i| (spans[i].start, spans[i].span_id)).min());
    let mut explained_clients = Vec::new();
    // A trace of many detached pieces (hostile or broken beyond repair) is described by its
    // first ones: the likely-caller search is linear in the trace per group.
    for (n, (parent, group)) in groups.iter().enumerate().take(MAX_PER_KIND + 1) {
        let first = group.iter().copied().min_by_key(|&i| (spans[i].start, spans[i].span_id)).unwrap_or(0);
        let orphan = &spans[first];
        let ids: Vec<SpanId> = group.iter().map(|&i| spans[i].span_id).collect();
        if n == 0 && roots.is_empty() {
            // A request from outside (a browser, a load balancer that starts traces): its
            // entry point's parent is remote and nothing instrumented calls the service.
            let from_outside = group.iter().all(|&i| {
                let s = &spans[i];
                s.remote_parent
                    && matches!(s.kind, SpanKind::Server | SpanKind::Consumer)
                    && !rel.has_instrumented_caller(&s.service)
            });
            if from_outside {
                continue;
            }
            out.findings.push(finding(
                FindingKind::MissingRoot,
                ids,
                ["", svc(first)],
                format!(
                    "no span of this trace is without a parent: its root span {parent} never arrived; \
                     the trace starts at {} {}",
                    orphan.service, orphan.name
                ),
            ));
            continue;
        }
        // The likely caller: a call of this trace running when the orphan started, with no
        // child in the orphan's service yet (the tightest one).
        let caller = spans
            .iter()
            .enumerate()
            .filter(|(i, c)| {
                matches!(c.kind, SpanKind::Client | SpanKind::Producer)
                    && c.service != orphan.service
                    && c.start <= orphan.start
                    && (c.kind == SpanKind::Producer || orphan.start <= c.end)
                    && !children.of(*i).any(|k| spans[k].service == orphan.service)
                    && c.boundary
                        .callee
                        .as_deref()
                        .and_then(|k| rel.callee_service(k))
                        .is_none_or(|callee| callee == orphan.service)
            })
            .min_by_key(|(_, c)| (c.end - c.start, c.span_id))
            .map(|(i, _)| i);
        let mut f = finding(
            FindingKind::MissingParent,
            ids,
            [caller.map_or("", svc), svc(first)],
            format!(
                "{} {} has parent {parent}, which is not in this trace: the subtree under it is detached",
                orphan.service, orphan.name
            ),
        );
        if let Some(c) = caller {
            explained_clients.push(c);
            f.message.push_str(&format!(
                " ({} {} was calling {} at that time)",
                spans[c].service, spans[c].name, orphan.service
            ));
        }
        out.findings.push(f);
    }

    for (i, s) in spans.iter().enumerate() {
        if !s.sampled {
            continue;
        }
        let crossed = children
            .of(i)
            .map(|k| &spans[k])
            .find(|k| k.service != s.service || matches!(k.kind, SpanKind::Server | SpanKind::Consumer));
        match s.kind {
            SpanKind::Client if s.calls_a_service() => {
                if let Some(k) = crossed {
                    out.calls.push(call(s, &k.service, Outcome::Crossed));
                    continue;
                }
                if explained_clients.contains(&i) || s.failed_unanswered() {
                    // A lost span, not a lost context; or a call no server need have seen.
                    continue;
                }
                let known =
                    s.boundary.callee.as_deref().and_then(|k| {
                        k.strip_prefix("peer:").map(Arc::from).or_else(|| rel.callee_service(k))
                    });
                let peer = rel.server_root_for(trace, s, known.as_deref());
                let callee = known.or_else(|| peer.as_ref().map(|p| p.service.clone()));
                let Some(callee) = callee.filter(|c| **c != *s.service && rel.receives_requests(c)) else {
                    continue;
                };
                let mut f = finding(
                    FindingKind::ClientWithoutServer,
                    vec![s.span_id],
                    [&s.service, &callee],
                    format!(
                        "{} {} called {callee}, which reports server spans, but no server span continues \
                         this trace: {callee} did not extract the trace context",
                        s.service, s.name
                    ),
                );
                if let Some(p) = &peer {
                    relate(&mut f, p);
                    f.message.push_str(&format!(" (it started trace {} instead)", p.trace_id));
                }
                out.findings.push(f);
                out.calls.push(call(s, &callee, Outcome::Lost));
            }
            SpanKind::Server if s.parent.is_none() => {
                // The callee's side of a client_without_server.
                if let Some(p) = rel.client_for(trace, s) {
                    let mut f = finding(
                        FindingKind::ClientWithoutServer,
                        vec![s.span_id],
                        [&p.service, &s.service],
                        format!(
                            "this trace starts at {} {}, which {} called from trace {}: {} did not extract \
                             the trace context",
                            s.service, s.name, p.service, p.trace_id, s.service
                        ),
                    );
                    relate(&mut f, &p);
                    out.findings.push(f);
                }
            }
            SpanKind::Producer => {
                let Some(dest) = s.boundary.destination.clone() else { continue };
                if let Some(k) = crossed {
                    out.calls.push(call(s, &k.service, Outcome::Crossed));
                    continue;
                }
                if let Some(p) = rel.consumer_linking(trace, s.span_id) {
                    out.calls.push(call(s, &p.service, Outcome::Crossed));
                    continue;
                }
                let consumers = rel.consumers_of(&dest);
                if consumers.is_empty() {
                    continue;
                }
                let peer = rel.consumer_root_for(trace, s);
                if peer.is_none() && opts.now.saturating_sub(s.start) < opts.hop_window_nanos {
                    continue; // the message may still be waiting in the queue
                }
                let names: Vec<&str> = consumers.iter().map(|c| &**c).collect();
                let callee = peer.as_ref().map_or_else(|| consumers[0].clone(), |p| p.service.clone());
                let mut f = finding(
                    FindingKind::ProducerWithoutConsumer,
                    vec![s.span_id],
                    [&s.service, &callee],
                    format!(
                        "{} sent to {dest}, which {} consume{}, but no consumer span continues this trace: \
                         the context was lost on the queue hop",
                        s.service,
                        names.join(", "),
                        if names.len() == 1 { "s" } else { "" }
                    ),
                );
                match &peer {
                    Some(p) => {
                        relate(&mut f, p);
                        f.message.push_str(&format!(" ({} received it in trace {})", p.service, p.trace_id));
                        out.calls.push(call(s, &p.service, Outcome::Lost));
                    }
                    None => {
                        for c in &consumers {
                            out.calls.push(call(s, c, Outcome::Lost));
                        }
                    }
                }
                out.findings.push(f);
            }
            SpanKind::Consumer if s.parent.is_none() && s.links.is_empty() => {
                let Some(dest) = s.boundary.destination.clone() else { continue };
                if !rel.has_producers(&dest) {
                    continue;
                }
                // Only once a producer is matched: on a destination that instrumented and
                // uninstrumented producers share, a new root may be a legitimate start.
                let Some(p) = rel.producer_for(trace, s) else { continue };
                let mut f = finding(
                    FindingKind::ConsumerNewRoot,
                    vec![s.span_id],
                    [&p.service, &s.service],
                    format!(
                        "{} {} received from {dest} and started a new trace: the message carried no trace \
                         context (sent by {} in trace {})",
                        s.service, s.name, p.service, p.trace_id
                    ),
                );
                relate(&mut f, &p);
                out.findings.push(f);
            }
            _ => {}
        }
    }

    // Work started without a request's context.
    if let [root] = roots[..] {
        let r = &spans[root];
        let work = r.kind == SpanKind::Internal || (r.kind == SpanKind::Client && r.calls_a_service());
        if r.sampled && work && r.links.is_empty() && rel.receives_requests(&r.service) {
            let candidates: Vec<TraceId> =
                rel.requests_at(&r.service, r.start, trace).into_iter().take(3).collect();
            if !candidates.is_empty() {
                let mut f = finding(
                    FindingKind::UnrootedWork,
                    vec![r.span_id],
                    ["", &r.service],
                    format!(
                        "this trace starts at {} work {} {} in a service that receives requests, without a \
                         request's context: a task started without the trace it belongs to (requests of {} \
                         in progress then are listed as candidates)",
                        r.kind.as_str(),
                        r.service,
                        r.name,
                        r.service
                    ),
                );
                f.confidence = Confidence::Low;
                f.related_trace_id = candidates.first().copied();
                f.candidates = candidates;
                out.findings.push(f);
            }
        }
    }

    // Clocks: children before their parent, servers after their client ended.
    let tol = opts.clock_skew_tolerance_nanos;
    // (parent service, child service) → the children outside their parents, the worst offset.
    type Skewed = BTreeMap<(Arc<str>, Arc<str>), (Vec<SpanId>, u64)>;
    let mut skew = Skewed::new();
    for i in 0..spans.len() {
        let kids = children.of(i);
        let p = &spans[i];
        for k in kids {
            let c = &spans[k];
            if c.service == p.service {
                continue;
            }
            let off = if c.start.saturating_add(tol) < p.start {
                p.start - c.start
            } else if p.kind == SpanKind::Client
                && c.kind == SpanKind::Server
                && !p.failed_unanswered()
                && c.start > p.end.saturating_add(tol)
            {
                c.start - p.end
            } else {
                continue;
            };
            let e = skew.entry((p.service.clone(), c.service.clone())).or_default();
            e.0.push(c.span_id);
            e.1 = e.1.max(off);
        }
    }
    for ((parent, child), (ids, off)) in skew {
        out.findings.push(finding(
            FindingKind::ClockSkew,
            ids,
            [&parent, &child],
            format!(
                "{child}'s spans lie outside their parents in {parent} by up to {}: the two services' clocks \
                 disagree",
                ms(off)
            ),
        ));
    }
    out.findings.sort_by(|a, b| (a.kind, &a.span_ids).cmp(&(b.kind, &b.span_ids)));
    out.findings = bounded(std::mem::take(&mut out.findings));
    out
}

/// Findings of one kind a trace reports at most; the last one kept says how many more.
const MAX_PER_KIND: usize = 32;
/// Span ids one finding names at most.
const MAX_SPAN_IDS: usize = 32;

/// Bounds what one trace records, however many spans break the same way: at most
/// [`MAX_PER_KIND`] findings of a kind (sorted by kind), each naming at most
/// [`MAX_SPAN_IDS`] spans.
fn bounded(findings: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::with_capacity(findings.len().min(4 * MAX_PER_KIND));
    let mut kept_of_kind = 0;
    let mut dropped = 0;
    let close = |out: &mut Vec<Finding>, dropped: &mut usize| {
        if *dropped > 0
            && let Some(last) = out.last_mut()
        {
            last.message.push_str(&format!(" (and {} more like it)", *dropped));
        }
        *dropped = 0;
    };
    for mut f in findings {
        if out.last().is_some_and(|l| l.kind != f.kind) {
            close(&mut out, &mut dropped);
            kept_of_kind = 0;
        }
        if kept_of_kind == MAX_PER_KIND {
            dropped += 1;
            continue;
        }
        if f.span_ids.len() > MAX_SPAN_IDS {
            let more = f.span_ids.len() - MAX_SPAN_IDS;
            f.span_ids.truncate(MAX_SPAN_IDS);
            f.message.push_str(&format!(" ({more} more spans)"));
        }
        kept_of_kind += 1;
        out.push(f);
    }
    close(&mut out, &mut dropped);
    out
}

/// Analyses a trace by itself, knowing nothing of other traces: only what its own spans
/// show (detached pieces, a missing root, clock skew), with no other half named.
pub fn analyse_alone(trace: TraceId, spans: &[Lite], opts: Options) -> Analysis {
    analyse(trace, spans, &mut Alone, opts)
}

/// Relations of a trace analysed alone: nothing is known, nothing is matched.
struct Alone;

impl Relations for Alone {
    fn receives_requests(&self, _: &str) -> bool {
        false
    }
    fn callee_service(&self, _: &str) -> Option<Arc<str>> {
        None
    }
    fn consumers_of(&self, _: &str) -> Vec<Arc<str>> {
        Vec::new()
    }
    fn has_producers(&self, _: &str) -> bool {
        false
    }
    fn has_instrumented_caller(&self, _: &str) -> bool {
        false
    }
    fn consumer_linking(&self, _: TraceId, _: SpanId) -> Option<Peer> {
        None
    }
    fn consumer_root_for(&mut self, _: TraceId, _: &Lite) -> Option<Peer> {
        None
    }
    fn producer_for(&mut self, _: TraceId, _: &Lite) -> Option<Peer> {
        None
    }
    fn server_root_for(&mut self, _: TraceId, _: &Lite, _: Option<&str>) -> Option<Peer> {
        None
    }
    fn client_for(&mut self, _: TraceId, _: &Lite) -> Option<Peer> {
        None
    }
    fn requests_at(&self, _: &str, _: u64, _: TraceId) -> Vec<TraceId> {
        Vec::new()
    }
}

fn call(s: &Lite, callee: &Arc<str>, outcome: Outcome) -> Call {
    Call {
        span_id: s.span_id,
        start: s.start,
        caller: s.service.clone(),
        callee: callee.clone(),
        via: s.boundary.via.clone().unwrap_or_else(|| Arc::from("call")),
        callee_key: s.boundary.callee.clone(),
        outcome,
    }
}

/// Each span's children, in one array (spans in order, grouped by parent).
struct Children {
    offsets: Vec<u32>,
    kids: Vec<u32>,
}

impl Children {
    /// From each span's parent index (`usize::MAX`: none in the trace).
    fn new(parent_of: &[usize]) -> Self {
        let mut offsets = vec![0u32; parent_of.len() + 1];
        for &p in parent_of.iter().filter(|&&p| p != usize::MAX) {
            offsets[p + 1] += 1;
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut fill = offsets.clone();
        let mut kids = vec![0u32; offsets[parent_of.len()] as usize];
        for (i, &p) in parent_of.iter().enumerate().filter(|(_, p)| **p != usize::MAX) {
            kids[fill[p] as usize] = i as u32;
            fill[p] += 1;
        }
        Self { offsets, kids }
    }

    fn of(&self, i: usize) -> impl ExactSizeIterator<Item = usize> + Clone + '_ {
        self.kids[self.offsets[i] as usize..self.offsets[i + 1] as usize].iter().map(|&k| k as usize)
    }
}
