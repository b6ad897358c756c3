//! The querier's store: every read asked of each live ingester and the answers merged, so
//! the query APIs and the UI run on it unchanged.
//!
//! A trace lives in one partition, so in one ingester, except while a partition moves (or
//! when a retried copy reached another): the merge takes each span and log record once, as
//! the embedded store does across its blocks. An ingester that does not answer fails the
//! read with 503 rather than leaving its traces out silently; a killed ingester leaves the
//! registry after `lease_ttl`, and until it is back its data cannot be read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strand_core::logs::{LogBatch, LogPage, LogQuery, StoredLog, dedup_and_sort, page_of};
use strand_core::metrics::MetricFamily;
use strand_core::search::{
    Cursor, DependencyEdge, Operation, SearchPage, TimeRange, TraceQuery, TraceSummary,
};
use strand_core::{
    BoxFuture, BrokenTrace, ChainIntegrity, EdgeHealth, Integrity, IntegrityFilter, SinkError, SpanBatch,
    SpanId, StoreError, Trace, TraceId, TraceReader, TraceStore, TraceWriter,
};

use crate::bus::{Bus, Member};
use crate::handoff::RemoteBlocks;
use crate::wire::{self, ReadRequest, ReadResponse};

/// How long a listing of the registry is used before it is read again.
const MEMBERS_FRESH_FOR: Duration = Duration::from_secs(1);

/// The registered ingesters, read from the registry at most once a second.
pub struct Members {
    bus: Arc<Bus>,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<(Instant, Vec<Member>)>>,
    reads: AtomicU64,
    failures: AtomicU64,
}

impl Members {
    /// The registry of `bus`.
    pub fn new(bus: Arc<Bus>) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .timeout(bus.cfg.read_timeout.0)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Arc::new(Self {
            bus,
            http,
            cached: Default::default(),
            reads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }))
    }

    async fn list(&self) -> Result<Vec<Member>, StoreError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, members)) = &*cached
            && at.elapsed() < MEMBERS_FRESH_FOR
        {
            return Ok(members.clone());
        }
        let members = self.bus.members().await.map_err(|e| {
            StoreError::Unavailable(format!("reading the cluster's ingesters from NATS: {e:#}"))
        })?;
        *cached = Some((Instant::now(), members.clone()));
        Ok(members)
    }

    /// Asks every live ingester, at the querier's `clock` (see [`crate::handoff`]); fails
    /// when any of them fails.
    pub(crate) async fn ask_all(
        &self,
        tenant: Option<&str>,
        clock: Option<u64>,
        req: &ReadRequest,
    ) -> Result<Vec<ReadResponse>, StoreError> {
        let members = self.list().await?;
        if members.is_empty() {
            // An empty answer would read as "no such data".
            return Err(StoreError::Unavailable(
                "no ingester is registered in the cluster (are they running and reaching NATS?)".into(),
            ));
        }
        let body = bytes::Bytes::from(wire::encode_request(clock, req));
        let asks = members.iter().map(|m| self.ask(m, tenant, body.clone()));
        futures_util::future::try_join_all(asks).await
    }

    async fn ask(
        &self,
        member: &Member,
        tenant: Option<&str>,
        body: bytes::Bytes,
    ) -> Result<ReadResponse, StoreError> {
        let m = self;
        m.reads.fetch_add(1, Ordering::Relaxed);
        let failed = |what: String| {
            m.failures.fetch_add(1, Ordering::Relaxed);
            StoreError::Unavailable(format!("ingester {} at {}: {what}", member.id, member.url))
        };
        let mut req = m
            .http
            .post(format!("{}{}", member.url.trim_end_matches('/'), wire::READ_PATH))
            .header(reqwest::header::CONTENT_TYPE, wire::READ_MEDIA_TYPE)
            .body(body);
        if let Some(t) = &m.bus.cfg.token {
            req = req.bearer_auth(t);
        }
        if let Some(t) = tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        let resp = req.send().await.map_err(|e| failed(e.to_string()))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| failed(e.to_string()))?;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(failed(format!(
                "{status}: the ingester refused this querier's token; set cluster.token to a token with the read scope (and the tenants) the ingesters accept"
            )));
        }
        if !status.is_success() {
            return Err(failed(format!(
                "{status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            )));
        }
        match wire::decode_response(&bytes).map_err(failed)? {
            Ok(r) => Ok(r),
            Err(e) => {
                m.failures.fetch_add(1, Ordering::Relaxed);
                Err(e.into_store_error(&member.id))
            }
        }
    }

    /// Asks the ingester up longest (whose analysis and RED history are the most complete)
    /// with the read protocol; the next one when it does not answer.
    pub(crate) async fn ask_longest_up(
        &self,
        tenant: Option<&str>,
        req: ReadRequest,
    ) -> Result<ReadResponse, StoreError> {
        let mut members = self.list().await?;
        members.sort_by_key(|m| (m.started_unix_nano == 0, m.started_unix_nano, m.id.clone()));
        let body = bytes::Bytes::from(wire::encode_request(None, &req));
        let mut last = StoreError::Unavailable(
            "no ingester is registered in the cluster (are they running and reaching NATS?)".into(),
        );
        for m in &members {
            match self.ask(m, tenant, body.clone()).await {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Forwards a GET of the query API (`path_and_query`) to the ingester up longest (the
    /// longest RED history) that answers; its status, content type and body.
    pub async fn proxy_get(
        &self,
        tenant: Option<&str>,
        path_and_query: &str,
    ) -> Result<(u16, Option<String>, bytes::Bytes), StoreError> {
        let mut members = self.list().await?;
        members.sort_by_key(|m| (m.started_unix_nano == 0, m.started_unix_nano, m.id.clone()));
        let mut last = StoreError::Unavailable(
            "no ingester is registered in the cluster (are they running and reaching NATS?)".into(),
        );
        for m in &members {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let mut req = self.http.get(format!("{}{path_and_query}", m.url.trim_end_matches('/')));
            if let Some(t) = &self.bus.cfg.token {
                req = req.bearer_auth(t);
            }
            if let Some(t) = tenant {
                req = req.header("X-Scope-OrgID", t);
            }
            let answer = async {
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                let kind = resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok::<_, reqwest::Error>((status, kind, resp.bytes().await?))
            };
            match answer.await {
                // Another ingester may answer what this one could not.
                Ok((status, _, body)) if status >= 500 || status == 401 || status == 403 || status == 404 => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    last = StoreError::Unavailable(format!(
                        "ingester {} at {}: {status}: {}",
                        m.id,
                        m.url,
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    ));
                }
                Ok(a) => return Ok(a),
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    last = StoreError::Unavailable(format!("ingester {} at {}: {e}", m.id, m.url));
                }
            }
        }
        Err(last)
    }

    /// Counters of the reads sent to ingesters.
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        vec![
            MetricFamily::counter(
                "strand_cluster_remote_reads_total",
                "Reads this querier sent to ingesters.",
                self.reads.load(Ordering::Relaxed) as f64,
            ),
            MetricFamily::counter(
                "strand_cluster_remote_read_failures_total",
                "Reads sent to ingesters that failed (no answer, or an error).",
                self.failures.load(Ordering::Relaxed) as f64,
            ),
        ]
    }
}

/// A tenant's store on a querier.
pub struct RemoteStore {
    /// The ingesters (none: a store handing its blocks over in this process, see
    /// [`RemoteStore::tiered`]).
    members: Option<Arc<Members>>,
    tenant: Option<String>,
    /// The tenant's blocks in object storage, when blocks go there.
    blocks: Option<Arc<RemoteBlocks>>,
    /// A store of this process that hands its blocks over to `blocks`.
    local: Option<wire::ViewAt>,
}

impl RemoteStore {
    /// Reads of `tenant` (`None`: the single tenant) through `members` and, when blocks
    /// go to object storage, `blocks`.
    pub fn new(members: Arc<Members>, tenant: Option<String>, blocks: Option<Arc<RemoteBlocks>>) -> Self {
        Self { members: Some(members), tenant, blocks, local: None }
    }

    /// Reads of a store in this process (seen through `local` at each read's clock) whose
    /// blocks are handed over to `blocks`, merged as a querier merges an ingester's
    /// answers with the bucket's: the object-storage read path without NATS (its
    /// conformance test).
    pub fn tiered(local: wire::ViewAt, blocks: Arc<RemoteBlocks>) -> Self {
        Self { members: None, tenant: None, blocks: Some(blocks), local: Some(local) }
    }

    /// Every live ingester's answer and, with object storage, the answer of the blocks
    /// handed over by now: one clock for all, so each block is read exactly once.
    async fn ask_all(&self, req: ReadRequest) -> Result<Vec<ReadResponse>, StoreError> {
        let clock = crate::handoff::now_unix_nano();
        let ingesters = async {
            let mut answers = match &self.members {
                // The ingesters are told the clock only when this querier reads the bucket.
                Some(m) => {
                    m.ask_all(self.tenant.as_deref(), self.blocks.as_ref().map(|_| clock), &req).await?
                }
                None => Vec::new(),
            };
            if let Some(local) = &self.local {
                answers.push(wire::answer(&local(clock), None, req.clone()).await?);
            }
            Ok(answers)
        };
        let Some(blocks) = &self.blocks else { return ingesters.await };
        let stored = async {
            let view = blocks.view_at(clock).await?;
            match wire::answer(&view, None, req.clone()).await {
                Ok(answer) => Ok(answer),
                // A block deleted since the listing (merged by the compactor, or past
                // retention): list again and read once more.
                Err(e) => {
                    tracing::debug!(error = %e, "cluster: reading object storage failed; listing again");
                    blocks.refresh().await?;
                    wire::answer(&blocks.view_at(clock).await?, None, req.clone()).await
                }
            }
        };
        let (mut answers, stored) = futures_util::future::try_join(ingesters, stored).await?;
        answers.push(stored);
        Ok(answers)
    }
}

/// A tenant's chain integrity on a querier. Every ingester's analyser sees every span (see
/// [`crate::ingester`]), so each holds the cluster's analysis, except for what it missed
/// while it was down: the ingester up longest is asked (the next one when it does not
/// answer), never a mix, so one analyser's view answers every question.
pub struct RemoteIntegrity {
    members: Arc<Members>,
    tenant: Option<String>,
}

impl RemoteIntegrity {
    /// Chain integrity of `tenant` (`None`: the single tenant) through `members`.
    pub fn new(members: Arc<Members>, tenant: Option<String>) -> Self {
        Self { members, tenant }
    }

    async fn ask(&self, req: ReadRequest) -> Result<ReadResponse, StoreError> {
        self.members.ask_longest_up(self.tenant.as_deref(), req).await
    }
}

impl ChainIntegrity for RemoteIntegrity {
    fn of_trace(&self, trace: &Trace) -> BoxFuture<'_, Option<Integrity>> {
        let (id, req) = (trace.trace_id, ReadRequest::IntegrityOf(trace.clone()));
        Box::pin(async move {
            match self.ask(req).await {
                Ok(ReadResponse::Integrity(i)) => i,
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(trace = %id, error = %e, "cluster: a trace's integrity could not be asked");
                    None
                }
            }
        })
    }

    fn kinds_of(&self, ids: &[TraceId]) -> BoxFuture<'_, Vec<u8>> {
        let ids = ids.to_vec();
        Box::pin(async move {
            let n = ids.len();
            match self.ask(ReadRequest::KindsOf(ids)).await {
                Ok(ReadResponse::Kinds(k)) if k.len() == n => k,
                Ok(_) => vec![0; n],
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: integrity badges could not be asked");
                    vec![0; n]
                }
            }
        })
    }

    fn find_broken(
        &self,
        filter: IntegrityFilter,
        start_unix_nano: u64,
        end_unix_nano: u64,
        after: Option<(u64, TraceId)>,
        as_of_unix_nano: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<BrokenTrace>, StoreError>> {
        Box::pin(async move {
            let req = ReadRequest::FindBroken {
                filter,
                start_unix_nano,
                end_unix_nano,
                after,
                as_of_unix_nano,
                limit,
            };
            match self.ask(req).await? {
                ReadResponse::Broken(b) => Ok(b),
                _ => Err(unexpected("broken-trace")),
            }
        })
    }

    fn edges(
        &self,
        start_unix_nano: u64,
        end_unix_nano: u64,
    ) -> BoxFuture<'_, Result<Vec<EdgeHealth>, StoreError>> {
        Box::pin(async move {
            match self.ask(ReadRequest::IntegrityEdges(start_unix_nano, end_unix_nano)).await? {
                ReadResponse::Edges(e) => Ok(e),
                _ => Err(unexpected("edge health")),
            }
        })
    }
}

fn unexpected(what: &str) -> StoreError {
    StoreError::Unavailable(format!("an ingester answered a {what} read with another kind of answer"))
}

/// Merges traces found on several ingesters: per id, each span once.
fn merge_traces(ids: &[TraceId], answers: Vec<Vec<Trace>>) -> Vec<Trace> {
    let mut spans: HashMap<TraceId, Vec<strand_core::StoredSpan>> = HashMap::new();
    for trace in answers.into_iter().flatten() {
        spans.entry(trace.trace_id).or_default().extend(trace.spans);
    }
    let mut out = Vec::new();
    for id in ids {
        if let Some(s) = spans.remove(id) {
            out.push(Trace::from_spans(*id, s));
        }
    }
    out
}

/// Traces found by more than one ingester's search (a partition that moved).
fn split_traces(pages: &[SearchPage]) -> Vec<TraceId> {
    let mut seen = BTreeMap::new();
    for s in pages.iter().flat_map(|p| &p.traces) {
        *seen.entry(s.trace_id).or_insert(0) += 1;
    }
    seen.into_iter().filter(|(_, n)| *n > 1).map(|(id, _)| id).collect()
}

/// Merges search pages: newest first (start descending, then id ascending), at most
/// `limit`; the traces of `whole` (those [`split_traces`] names, read whole) summarised
/// from all of their spans.
fn merge_pages(q: &TraceQuery, pages: Vec<SearchPage>, whole: Vec<Trace>, now: u64) -> SearchPage {
    let mut by_id: BTreeMap<TraceId, TraceSummary> = BTreeMap::new();
    let mut warnings = BTreeSet::new();
    let mut more = false;
    let mut as_of = q.cursor.map(|c| c.as_of_unix_nano);
    for page in pages {
        warnings.extend(page.warnings);
        if let Some(c) = page.next_cursor {
            more = true;
            // Each store's snapshot is its newest receive time, so one ingester's is earlier
            // than another's by what it received last: the latest keeps every store's
            // first-page traces (a trace received in between may appear on a later page).
            as_of = Some(as_of.map_or(c.as_of_unix_nano, |a| a.max(c.as_of_unix_nano)));
        }
        for s in page.traces {
            by_id.entry(s.trace_id).or_insert(s);
        }
    }
    for t in whole {
        if let Some(e) = by_id.get_mut(&t.trace_id) {
            *e = TraceSummary::of(t.trace_id, &t.spans);
        }
    }
    let mut traces: Vec<TraceSummary> = by_id.into_values().collect();
    traces.sort_by(|a, b| b.start_unix_nano.cmp(&a.start_unix_nano).then(a.trace_id.cmp(&b.trace_id)));
    if traces.len() > q.limit {
        traces.truncate(q.limit);
        more = true;
    }
    let next_cursor = if more {
        traces.last().map(|last| Cursor {
            as_of_unix_nano: as_of.unwrap_or(now),
            start_unix_nano: last.start_unix_nano,
            trace_id: last.trace_id,
        })
    } else {
        None
    };
    SearchPage { traces, next_cursor, warnings: warnings.into_iter().collect() }
}

fn union_sorted<T: Ord>(lists: impl IntoIterator<Item = Vec<T>>) -> Vec<T> {
    lists.into_iter().flatten().collect::<BTreeSet<T>>().into_iter().collect()
}

impl TraceWriter for RemoteStore {
    fn write(&self, _: SpanBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async {
            Err(SinkError::Unavailable("a querier stores nothing: send spans to a receiver".into()))
        })
    }
}

impl RemoteStore {
    /// Summarises whole the traces of `page` that one source found and another holds
    /// spans of (a trace cut into a block handed over to object storage while the rest
    /// is still in an ingester's head; a moved partition), `done` excepted. The page keeps
    /// its traces; their order follows the whole summaries.
    async fn summarise_split(&self, page: &mut SearchPage, done: &[TraceId]) -> Result<(), StoreError> {
        let ids: Vec<TraceId> =
            page.traces.iter().map(|t| t.trace_id).filter(|id| !done.contains(id)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut holders = vec![0usize; ids.len()];
        for r in self.ask_all(ReadRequest::Holds(ids.clone())).await? {
            let ReadResponse::Holds(held) = r else { return Err(unexpected("holds")) };
            for (n, h) in holders.iter_mut().zip(held) {
                *n += usize::from(h);
            }
        }
        let split: Vec<TraceId> =
            ids.into_iter().zip(holders).filter(|(_, n)| *n > 1).map(|(id, _)| id).collect();
        if split.is_empty() {
            return Ok(());
        }
        for t in self.get_traces(split).await? {
            if let Some(s) = page.traces.iter_mut().find(|s| s.trace_id == t.trace_id) {
                *s = TraceSummary::of(t.trace_id, &t.spans);
            }
        }
        page.traces
            .sort_by(|a, b| b.start_unix_nano.cmp(&a.start_unix_nano).then(a.trace_id.cmp(&b.trace_id)));
        // The next page starts after the last trace as now summarised.
        if let (Some(c), Some(last)) = (page.next_cursor.as_mut(), page.traces.last()) {
            c.start_unix_nano = last.start_unix_nano;
            c.trace_id = last.trace_id;
        }
        Ok(())
    }
}

impl TraceReader for RemoteStore {
    fn get_trace(&self, trace_id: TraceId) -> BoxFuture<'_, Result<Option<Trace>, StoreError>> {
        Box::pin(async move { Ok(self.get_traces(vec![trace_id]).await?.pop()) })
    }

    fn get_traces(&self, ids: Vec<TraceId>) -> BoxFuture<'_, Result<Vec<Trace>, StoreError>> {
        Box::pin(async move {
            let mut answers = Vec::new();
            for r in self.ask_all(ReadRequest::Traces(ids.clone())).await? {
                let ReadResponse::Traces(t) = r else { return Err(unexpected("trace")) };
                answers.push(t);
            }
            Ok(merge_traces(&ids, answers))
        })
    }

    fn find_traces(&self, query: TraceQuery) -> BoxFuture<'_, Result<SearchPage, StoreError>> {
        Box::pin(async move {
            let mut pages = Vec::new();
            for r in self.ask_all(ReadRequest::Find(query.clone())).await? {
                let ReadResponse::Find(p) = r else { return Err(unexpected("search")) };
                pages.push(p);
            }
            // A trace several sources found (a partition that moved) is summarised whole.
            let sources = pages.len();
            let split = split_traces(&pages);
            let whole = if split.is_empty() { Vec::new() } else { self.get_traces(split.clone()).await? };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let mut page = merge_pages(&query, pages, whole, now);
            if sources > 1 {
                self.summarise_split(&mut page, &split).await?;
            }
            Ok(page)
        })
    }

    fn services(&self, range: TimeRange) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let mut lists = Vec::new();
            for r in self.ask_all(ReadRequest::Services(range)).await? {
                let ReadResponse::Services(s) = r else { return Err(unexpected("services")) };
                lists.push(s);
            }
            Ok(union_sorted(lists))
        })
    }

    fn operations(
        &self,
        service: String,
        range: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<Operation>, StoreError>> {
        Box::pin(async move {
            let mut lists = Vec::new();
            for r in self.ask_all(ReadRequest::Operations(service, range)).await? {
                let ReadResponse::Operations(o) = r else { return Err(unexpected("operations")) };
                lists.push(o);
            }
            Ok(union_sorted(lists))
        })
    }

    fn attributes(
        &self,
        service: Option<String>,
        range: TimeRange,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        Box::pin(async move {
            let mut lists = Vec::new();
            for r in self.ask_all(ReadRequest::Attributes(service, range)).await? {
                let ReadResponse::Attributes(a) = r else { return Err(unexpected("attributes")) };
                lists.push(a);
            }
            Ok(union_sorted(lists))
        })
    }

    fn dependencies(&self, range: TimeRange) -> BoxFuture<'_, Result<Vec<DependencyEdge>, StoreError>> {
        Box::pin(async move {
            let mut counts: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
            for r in self.ask_all(ReadRequest::Dependencies(range)).await? {
                let ReadResponse::Dependencies(edges) = r else { return Err(unexpected("dependencies")) };
                for e in edges {
                    let c = counts.entry((e.parent, e.child)).or_default();
                    c.0 += e.call_count;
                    c.1 += e.error_count;
                }
            }
            Ok(DependencyEdge::from_counts(counts))
        })
    }
}

impl strand_core::LogStore for RemoteStore {
    fn write_logs(&self, _: LogBatch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async {
            Err(SinkError::Unavailable("a querier stores nothing: send log records to a receiver".into()))
        })
    }

    fn trace_logs(
        &self,
        trace_id: TraceId,
        span_id: Option<SpanId>,
    ) -> BoxFuture<'_, Result<Vec<StoredLog>, StoreError>> {
        Box::pin(async move {
            let mut all = Vec::new();
            for r in self.ask_all(ReadRequest::TraceLogs(trace_id, span_id)).await? {
                let ReadResponse::Logs(l) = r else { return Err(unexpected("trace logs")) };
                all.extend(l);
            }
            Ok(dedup_and_sort(all))
        })
    }

    fn find_logs(&self, query: LogQuery) -> BoxFuture<'_, Result<LogPage, StoreError>> {
        Box::pin(async move {
            let mut all = Vec::new();
            let mut more = false;
            for r in self.ask_all(ReadRequest::FindLogs(query.clone())).await? {
                let ReadResponse::LogPage(p) = r else { return Err(unexpected("log search")) };
                more |= p.next_cursor.is_some();
                all.extend(p.records);
            }
            let mut page = page_of(&query, all);
            // An ingester with more than its page: the merged page goes on after its last.
            if more && page.next_cursor.is_none() {
                page.next_cursor = page.records.last().map(strand_core::LogCursor::after);
            }
            Ok(page)
        })
    }
}

impl TraceStore for RemoteStore {
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // Nothing is held here; each ingester flushes its own head.
        Box::pin(async { Ok(()) })
    }

    fn maintain(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn stored_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }

    fn metrics(&self) -> BoxFuture<'_, Vec<MetricFamily>> {
        Box::pin(async { Vec::new() })
    }

    fn not_ready(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            let Some(members) = &self.members else { return Vec::new() };
            match members.list().await {
                Ok(m) if m.is_empty() => vec!["cluster: no ingester is registered".to_owned()],
                Ok(_) => Vec::new(),
                Err(e) => vec![format!("cluster: {e}")],
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: u8, start: u64) -> TraceSummary {
        TraceSummary {
            trace_id: TraceId([id; 16]),
            root_service: "s".into(),
            root_name: "n".into(),
            start_unix_nano: start,
            duration_nano: 1,
            span_count: 1,
            error_count: 0,
            services: Vec::new(),
        }
    }

    fn page(traces: Vec<TraceSummary>, cursor_as_of: Option<u64>) -> SearchPage {
        let next_cursor = cursor_as_of.and_then(|as_of| {
            traces.last().map(|t| Cursor {
                as_of_unix_nano: as_of,
                start_unix_nano: t.start_unix_nano,
                trace_id: t.trace_id,
            })
        });
        SearchPage { traces, next_cursor, warnings: Vec::new() }
    }

    #[test]
    fn pages_merge_newest_first_with_a_cursor_after_the_last() {
        let q = TraceQuery::all(3);
        let a = page(vec![summary(1, 50), summary(2, 30), summary(3, 10)], Some(900));
        let b = page(vec![summary(4, 40), summary(5, 30)], None);
        let merged = merge_pages(&q, vec![a, b], Vec::new(), 1000);
        let ids: Vec<u8> = merged.traces.iter().map(|t| t.trace_id.0[0]).collect();
        assert_eq!(ids, vec![1, 4, 2], "start descending, then id ascending");
        let c = merged.next_cursor.expect("more to come");
        assert_eq!((c.as_of_unix_nano, c.start_unix_nano, c.trace_id), (900, 30, TraceId([2; 16])));
        // Two ingesters' snapshots: the later one, so neither's first-page traces are lost.
        let a = page(vec![summary(1, 50), summary(2, 40)], Some(900));
        let b = page(vec![summary(3, 45), summary(4, 35)], Some(950));
        let c = merge_pages(&TraceQuery::all(2), vec![a, b], Vec::new(), 1000).next_cursor.expect("more");
        assert_eq!(c.as_of_unix_nano, 950);
        // Everything fits and nobody has more: no cursor.
        let last = merge_pages(&TraceQuery::all(10), vec![page(vec![summary(1, 5)], None)], Vec::new(), 7);
        assert!(last.next_cursor.is_none());
        assert_eq!(last.traces.len(), 1);
    }

    #[test]
    fn a_trace_on_two_ingesters_is_summarised_whole() {
        let q = TraceQuery::all(10);
        let a = page(vec![summary(1, 50)], None);
        let b = page(vec![summary(1, 20)], None);
        let pages = vec![a, b];
        assert_eq!(split_traces(&pages), vec![TraceId([1; 16])]);
        let span = |id: u8, start: u64| strand_core::StoredSpan {
            resource: Default::default(),
            scope: Default::default(),
            span: strand_core::Span::new(TraceId([1; 16]), SpanId([id; 8]), "x", start, start + 5),
        };
        let whole = vec![Trace::from_spans(TraceId([1; 16]), vec![span(1, 20), span(2, 50)])];
        let merged = merge_pages(&q, pages, whole, 0);
        assert_eq!(merged.traces.len(), 1);
        assert_eq!(merged.traces[0].span_count, 2);
        assert_eq!(merged.traces[0].start_unix_nano, 20);
    }

    #[test]
    fn traces_merge_each_span_once_in_the_order_asked() {
        let span = |t: u8, id: u8| strand_core::StoredSpan {
            resource: Default::default(),
            scope: Default::default(),
            span: strand_core::Span::new(
                TraceId([t; 16]),
                SpanId([id; 8]),
                "x",
                u64::from(id),
                u64::from(id) + 1,
            ),
        };
        let one = vec![Trace::from_spans(TraceId([1; 16]), vec![span(1, 1), span(1, 2)])];
        let two = vec![
            Trace::from_spans(TraceId([1; 16]), vec![span(1, 2), span(1, 3)]),
            Trace::from_spans(TraceId([2; 16]), vec![span(2, 9)]),
        ];
        let merged = merge_traces(&[TraceId([2; 16]), TraceId([1; 16]), TraceId([3; 16])], vec![one, two]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].trace_id, TraceId([2; 16]));
        let ids: Vec<u8> = merged[1].spans.iter().map(|s| s.span.span_id.0[0]).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }
}
