//! The conformance suite every storage backend passes: the contracts of
//! [`TraceWriter`], [`TraceReader`] and [`TraceStore`] as checks.
//!
//! A backend's test implements [`Harness`] (how to open the backend over storage of its
//! own, with the suite's [`Options`]) and calls [`run_all`] with a constructor of fresh
//! harnesses. Each check gets a fresh harness, writes fixture traces and asserts what the
//! contract promises, in every tier the backend has: right after the write, after
//! [`TraceStore::flush`], and after closing and opening the backend again. Failures panic
//! with a message naming the check, as test assertions do.
//!
//! What is checked:
//! - write / get: every field reads back; unknown ids are absent; rewrites are idempotent;
//!   a trace written in pieces (across flushes) reads back whole; batch reads;
//! - search: every filter (service, operation, kind, attributes of each type and scope,
//!   span and trace duration bounds, status, time range, limit) over Jaeger's query
//!   fixtures and Strand's own cases, newest-first order, and pagination that neither
//!   skips nor repeats while writes continue;
//! - listings: services, operations with their kinds, attribute keys and values;
//! - dependencies: HTTP, gRPC and producer → consumer hops, error counts, time ranges;
//! - retention by receive age and by the byte budget, oldest first, as of the backend's
//!   clock;
//! - concurrent writers; reopening after close;
//! - log records: every field reads back by trace and by span, each once whatever the
//!   retries, records without trace context kept; searches by service, severity, text,
//!   attributes and time, newest first, paged without skips or repeats; retention deletes
//!   them by age and within the byte budget together with the spans.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use strand_core::{
    AnyValue, AttrFilter, AttrScope, BoxFuture, Event, KeyValue, Link, ManualClock, Scope, SpanBatch, SpanId,
    SpanKind, Status, StatusCode, StatusFilter, StoredSpan, TimeRange, Trace, TraceId, TraceQuery,
    TraceReader, TraceStore, TraceWriter,
};

use crate::testdata::{batch, service_batch, span, trace_id};

/// What the suite opens every backend with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The backend's clock: receive times and retention are read from it.
    pub clock: Arc<ManualClock>,
    /// Delete data received longer ago than this.
    pub retention: Duration,
    /// Delete the oldest data while the stored data takes more than this.
    pub max_bytes: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(ManualClock::new(START)),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_bytes: None,
        }
    }
}

/// The suite's clock starts here (2026-01-01), long after the fixture spans' timestamps:
/// retention counts from when data was received, not from span times.
pub const START: u64 = 1_767_225_600_000_000_000;

/// How the suite opens one backend.
pub trait Harness: Send + Sync + 'static {
    /// The backend.
    type Store: TraceStore;

    /// Opens the backend over this harness's own storage. Opening again after
    /// [`TraceStore::close`] must find everything acknowledged before.
    fn open(&self, opts: Options) -> BoxFuture<'_, Self::Store>;
}

/// Runs every check, each on a fresh harness from `make`.
pub async fn run_all<H: Harness>(make: impl Fn() -> H) {
    written_traces_read_back_whole(&make()).await;
    unknown_traces_are_absent(&make()).await;
    rewrites_are_idempotent(&make()).await;
    a_trace_written_in_pieces_reads_back_whole(&make()).await;
    traces_are_kept_apart(&make()).await;
    batch_reads_return_the_stored_traces_in_order(&make()).await;
    jaeger_query_fixtures_match(&make()).await;
    search_conditions_hold_on_one_span(&make()).await;
    pages_neither_skip_nor_repeat_while_data_is_written(&make()).await;
    listings_name_services_operations_and_attributes(&make()).await;
    dependencies_count_calls_between_services(&make()).await;
    retention_deletes_by_receive_age(&make()).await;
    retention_keeps_the_byte_budget_oldest_first(&make()).await;
    concurrent_writers_lose_nothing(&make()).await;
    writes_after_close_are_refused(&make()).await;
    log_records_read_back_by_trace_and_span(&make()).await;
    log_searches_filter_and_page(&make()).await;
    log_retention_follows_the_spans(&make()).await;
}

/// The tiers of a backend, in the order a check visits them.
#[derive(Debug, Clone, Copy)]
enum Tier {
    Written,
    Flushed,
    Reopened,
}

/// Visits every tier: calls `check` right after the data is written, after a flush, and
/// after a close and reopen; returns the reopened store.
async fn in_every_tier<H: Harness>(
    h: &H,
    opts: &Options,
    store: H::Store,
    check: impl for<'a> Fn(&'a H::Store, Tier) -> BoxFuture<'a, ()>,
) -> H::Store {
    check(&store, Tier::Written).await;
    store.flush().await.expect("conformance: flush");
    check(&store, Tier::Flushed).await;
    let store = reopen(h, opts, store).await;
    check(&store, Tier::Reopened).await;
    store
}

async fn reopen<H: Harness>(h: &H, opts: &Options, store: H::Store) -> H::Store {
    store.close().await;
    drop(store);
    h.open(opts.clone()).await
}

async fn write<S: TraceWriter + ?Sized>(s: &S, b: SpanBatch) {
    s.write(b).await.expect("conformance: a write to a healthy backend succeeds");
}

async fn get<S: TraceReader + ?Sized>(s: &S, id: TraceId) -> Option<Trace> {
    s.get_trace(id).await.expect("conformance: get_trace on a healthy backend succeeds")
}

async fn search<S: TraceReader + ?Sized>(s: &S, q: TraceQuery) -> strand_core::SearchPage {
    s.find_traces(q).await.expect("conformance: find_traces on a healthy backend succeeds")
}

async fn ids<S: TraceReader + ?Sized>(s: &S, q: TraceQuery) -> Vec<TraceId> {
    search(s, q).await.traces.iter().map(|t| t.trace_id).collect()
}

fn sorted_spans(b: &SpanBatch) -> Vec<StoredSpan> {
    let mut v: Vec<_> = b.clone().into_stored().collect();
    v.sort_by_key(|s| (s.span.start_time_unix_nano, s.span.span_id));
    v
}

/// Written spans read back field for field: resource, scope and every span field.
pub async fn written_traces_read_back_whole<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    let input = batch(1, 5);
    write(&store, input.clone()).await;
    let want = sorted_spans(&input);
    in_every_tier(h, &opts, store, |s, tier| {
        let want = want.clone();
        Box::pin(async move {
            let trace = get(s, trace_id(1)).await;
            let trace =
                trace.unwrap_or_else(|| panic!("conformance ({tier:?}): written trace must be found"));
            assert_eq!(trace.trace_id, trace_id(1));
            assert_eq!(trace.spans, want, "conformance ({tier:?}): trace must read back unchanged");
        })
    })
    .await;
}

/// An id never written is absent, from single and batch reads.
pub async fn unknown_traces_are_absent<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    write(&store, batch(1, 2)).await;
    in_every_tier(h, &opts, store, |s, tier| {
        Box::pin(async move {
            assert!(
                get(s, trace_id(250)).await.is_none(),
                "conformance ({tier:?}): unknown trace must be None"
            );
            let found = s.get_traces(vec![trace_id(250)]).await.expect("get_traces");
            assert!(found.is_empty(), "conformance ({tier:?}): unknown ids are left out of batch reads");
        })
    })
    .await;
}

/// Writing the same spans again (a retry, before or after a flush) does not duplicate them.
pub async fn rewrites_are_idempotent<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    write(&store, batch(2, 4)).await;
    write(&store, batch(2, 4)).await;
    let store = in_every_tier(h, &opts, store, |s, tier| {
        Box::pin(async move {
            let trace = get(s, trace_id(2)).await.expect("conformance: trace must be found");
            assert_eq!(
                trace.spans.len(),
                4,
                "conformance ({tier:?}): a retried write must not duplicate spans"
            );
        })
    })
    .await;
    // The retry arrives after the first copy reached long-term storage.
    write(&store, batch(2, 4)).await;
    store.flush().await.expect("flush");
    let trace = get(&store, trace_id(2)).await.expect("conformance: trace must be found");
    assert_eq!(trace.spans.len(), 4, "conformance: a retry after a flush must not duplicate spans");
    let page = search(&store, TraceQuery::all(10)).await;
    assert_eq!(page.traces.len(), 1);
    assert_eq!(page.traces[0].span_count, 4, "conformance: summaries count each span once");
}

/// Spans of one trace written in separate batches, a flush apart, come back as one trace
/// and are summarised whole.
pub async fn a_trace_written_in_pieces_reads_back_whole<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    let whole = batch(3, 6);
    let mut first = whole.clone();
    let mut second = whole.clone();
    first.resource_spans[0].scope_spans[0].spans.truncate(2);
    second.resource_spans[0].scope_spans[0].spans.drain(..2);
    write(&store, second).await;
    store.flush().await.expect("flush");
    write(&store, first).await;
    let want = sorted_spans(&whole);
    in_every_tier(h, &opts, store, |s, tier| {
        let want = want.clone();
        Box::pin(async move {
            let trace = get(s, trace_id(3)).await.expect("conformance: trace must be found");
            assert_eq!(trace.spans, want, "conformance ({tier:?}): split trace must be merged");
            let page = search(s, TraceQuery { operation: Some("op-5".into()), ..TraceQuery::all(10) }).await;
            assert_eq!(page.traces.len(), 1, "conformance ({tier:?}): split trace found by a later span");
            let t = &page.traces[0];
            assert_eq!(
                (t.span_count, t.root_name.as_str(), t.start_unix_nano),
                (6, "op-0", want[0].span.start_time_unix_nano),
                "conformance ({tier:?}): the summary covers both pieces"
            );
        })
    })
    .await;
}

/// Traces do not bleed into each other.
pub async fn traces_are_kept_apart<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    for seed in 10..20 {
        write(&store, batch(seed, 3)).await;
    }
    in_every_tier(h, &opts, store, |s, tier| {
        Box::pin(async move {
            for seed in 10..20 {
                let t = get(s, trace_id(seed)).await.expect("conformance: trace must be found");
                assert_eq!(t.spans.len(), 3);
                assert!(
                    t.spans.iter().all(|x| x.span.trace_id == trace_id(seed)),
                    "conformance ({tier:?}): foreign span in trace"
                );
            }
        })
    })
    .await;
}

/// `get_traces` returns the stored traces in the order asked, each whole.
pub async fn batch_reads_return_the_stored_traces_in_order<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    for seed in 1..=3 {
        write(&store, batch(seed, 2 + seed)).await;
    }
    in_every_tier(h, &opts, store, |s, tier| {
        Box::pin(async move {
            let asked = vec![trace_id(3), trace_id(77), trace_id(1), trace_id(2)];
            let got = s.get_traces(asked).await.expect("get_traces");
            let got: Vec<(TraceId, usize)> = got.iter().map(|t| (t.trace_id, t.spans.len())).collect();
            assert_eq!(
                got,
                vec![(trace_id(3), 5), (trace_id(1), 3), (trace_id(2), 4)],
                "conformance ({tier:?}): batch reads keep the order asked and skip unknown ids"
            );
        })
    })
    .await;
}

/// Jaeger's storage query fixtures (`testdata/jaeger/queries.json`): each query finds
/// exactly its traces and none of the decoys that differ from them in one way.
pub async fn jaeger_query_fixtures_match<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    let scenarios = Arc::new(scenarios());
    assert_eq!(scenarios.len(), 25, "every entry of queries.json is exercised");
    for s in scenarios.iter() {
        for b in &s.batches {
            write(&store, b.clone()).await;
        }
    }
    in_every_tier(h, &opts, store, |store, tier| {
        let scenarios = scenarios.clone();
        Box::pin(async move {
            for s in scenarios.iter() {
                let page = search(store, s.query.clone()).await;
                let got: HashSet<TraceId> = page.traces.iter().map(|t| t.trace_id).collect();
                assert_eq!(got, s.expected, "conformance ({tier:?}): {}", s.caption);
                let starts: Vec<u64> = page.traces.iter().map(|t| t.start_unix_nano).collect();
                assert!(
                    starts.windows(2).all(|w| w[0] >= w[1]),
                    "conformance ({tier:?}): {}: newest first",
                    s.caption
                );
                assert!(page.next_cursor.is_none());
            }
        })
    })
    .await;
}

fn error_span(trace: TraceId, id: u64, parent: Option<u64>, name: &str, start: u64) -> strand_core::Span {
    let mut s = span(trace, id, parent, name, start, 1_000);
    s.status = Status { code: StatusCode::Error, message: "boom".into() };
    s
}

/// A three-span trace over two services, cut by a flush between its spans; the span
/// conditions of a query must all hold on one span.
pub async fn search_conditions_hold_on_one_span<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    let id = tid(1);
    let mut root = span(id, 1, None, "GET /report", 1_000_000, 50_000);
    root.attributes = vec![
        KeyValue::new("http.response.status_code", AnyValue::Int(500)),
        KeyValue::new("sampled.ratio", AnyValue::Double(0.25)),
        KeyValue::new("retry", AnyValue::Bool(true)),
        KeyValue::new("tags", AnyValue::Array(vec![AnyValue::String("urgent".into())])),
        KeyValue::new("digest", AnyValue::Bytes(b"urgent".to_vec())),
    ];
    write(&store, service_batch("gateway", vec![], Scope::default(), vec![root])).await;
    store.flush().await.expect("flush");
    let mut call = span(id, 2, Some(1), "SubmitReport", 1_010_000, 10_000);
    call.kind = SpanKind::Client;
    call.attributes = vec![KeyValue::new("rpc.system", AnyValue::String("grpc".into()))];
    write(&store, service_batch("gateway", vec![], Scope::default(), vec![call])).await;
    let epro = vec![KeyValue::new("deployment.environment", AnyValue::String("prod".into()))];
    write(
        &store,
        service_batch(
            "epro",
            epro,
            Scope::default(),
            vec![error_span(id, 3, Some(2), "SubmitReport", 1_012_000)],
        ),
    )
    .await;
    // A second, later trace that matches none of the narrow queries.
    write(
        &store,
        service_batch(
            "gateway",
            vec![],
            Scope::default(),
            vec![span(tid(2), 1, None, "GET /health", 9_000_000, 100)],
        ),
    )
    .await;
    in_every_tier(h, &opts, store, |s, tier| {
        Box::pin(async move {
            let page = search(
                s,
                TraceQuery {
                    service: Some("epro".into()),
                    status: Some(StatusFilter::Error),
                    ..TraceQuery::all(10)
                },
            )
            .await;
            assert_eq!(page.traces.len(), 1, "conformance ({tier:?}): error span of epro");
            let t = &page.traces[0];
            assert_eq!(
                (t.root_service.as_str(), t.root_name.as_str()),
                ("gateway", "GET /report"),
                "{tier:?}"
            );
            assert_eq!(
                (t.start_unix_nano, t.duration_nano, t.span_count, t.error_count),
                (1_000_000, 50_000, 3, 1),
                "{tier:?}"
            );
            let services: Vec<(&str, u64, u64)> =
                t.services.iter().map(|x| (x.name.as_str(), x.span_count, x.error_count)).collect();
            assert_eq!(services, vec![("epro", 1, 1), ("gateway", 2, 0)], "{tier:?}");

            let q = |f: fn(&mut TraceQuery)| {
                let mut q = TraceQuery::all(10);
                f(&mut q);
                q
            };
            let cases: Vec<(&str, TraceQuery, Vec<TraceId>)> = vec![
                ("everything, newest first", TraceQuery::all(10), vec![tid(2), id]),
                ("limit", TraceQuery::all(1), vec![tid(2)]),
                ("service", q(|q| q.service = Some("epro".into())), vec![id]),
                ("operation", q(|q| q.operation = Some("SubmitReport".into())), vec![id]),
                ("kind", q(|q| q.kind = Some(SpanKind::Client)), vec![id]),
                (
                    "service and kind on different spans",
                    q(|q| {
                        q.service = Some("epro".into());
                        q.kind = Some(SpanKind::Client)
                    }),
                    vec![],
                ),
                (
                    "status ok",
                    q(|q| {
                        q.service = Some("epro".into());
                        q.status = Some(StatusFilter::Ok)
                    }),
                    vec![],
                ),
                (
                    "status ok, unset spans",
                    q(|q| {
                        q.service = Some("gateway".into());
                        q.status = Some(StatusFilter::Ok)
                    }),
                    vec![tid(2), id],
                ),
                (
                    "array and bytes attributes never match as text",
                    q(|q| q.attributes = vec![attr(AttrScope::Span, "tags", "urgent")]),
                    vec![],
                ),
                (
                    "bytes attribute",
                    q(|q| q.attributes = vec![attr(AttrScope::Span, "digest", "urgent")]),
                    vec![],
                ),
                (
                    "int attribute",
                    q(|q| q.attributes = vec![attr(AttrScope::Any, "http.response.status_code", "500")]),
                    vec![id],
                ),
                (
                    "int attribute, other value",
                    q(|q| q.attributes = vec![attr(AttrScope::Any, "http.response.status_code", "501")]),
                    vec![],
                ),
                (
                    "double attribute",
                    q(|q| q.attributes = vec![attr(AttrScope::Span, "sampled.ratio", "0.250")]),
                    vec![id],
                ),
                (
                    "bool attribute",
                    q(|q| q.attributes = vec![attr(AttrScope::Span, "retry", "true")]),
                    vec![id],
                ),
                (
                    "string attribute",
                    q(|q| q.attributes = vec![attr(AttrScope::Span, "rpc.system", "grpc")]),
                    vec![id],
                ),
                (
                    "span attribute asked on the resource",
                    q(|q| q.attributes = vec![attr(AttrScope::Resource, "rpc.system", "grpc")]),
                    vec![],
                ),
                (
                    "resource attribute",
                    q(|q| q.attributes = vec![attr(AttrScope::Resource, "deployment.environment", "prod")]),
                    vec![id],
                ),
                (
                    "service.name as a resource attribute",
                    q(|q| q.attributes = vec![attr(AttrScope::Resource, "service.name", "epro")]),
                    vec![id],
                ),
                (
                    "attributes of two spans",
                    q(|q| {
                        q.attributes = vec![
                            attr(AttrScope::Any, "rpc.system", "grpc"),
                            attr(AttrScope::Any, "retry", "true"),
                        ]
                    }),
                    vec![],
                ),
                ("min span duration", q(|q| q.min_span_duration_nano = Some(50_000)), vec![id]),
                (
                    "max span duration",
                    q(|q| {
                        q.operation = Some("SubmitReport".into());
                        q.max_span_duration_nano = Some(1_000)
                    }),
                    vec![id],
                ),
                (
                    "both span duration bounds, no span between",
                    q(|q| {
                        q.min_span_duration_nano = Some(1_001);
                        q.max_span_duration_nano = Some(9_999)
                    }),
                    vec![],
                ),
                ("min trace duration", q(|q| q.min_trace_duration_nano = Some(50_000)), vec![id]),
                ("min trace duration, above", q(|q| q.min_trace_duration_nano = Some(50_001)), vec![]),
                ("max trace duration", q(|q| q.max_trace_duration_nano = Some(100)), vec![tid(2)]),
                (
                    "time range on span start",
                    q(|q| {
                        q.start_unix_nano = 1_011_000;
                        q.end_unix_nano = 1_013_000
                    }),
                    vec![id],
                ),
                ("time range after everything", q(|q| q.start_unix_nano = 9_000_001), vec![]),
            ];
            for (what, query, want) in cases {
                assert_eq!(ids(s, query).await, want, "conformance ({tier:?}): {what}");
            }
        })
    })
    .await;
}

fn attr(scope: AttrScope, key: &str, value: &str) -> AttrFilter {
    AttrFilter { scope, key: key.into(), value: value.into() }
}

/// Following `next_cursor` gives exactly the traces of the first page's snapshot, each once,
/// in order, while traces older and newer than all of them keep arriving (and flushes cut
/// them); a new query then sees everything, the same way twice.
pub async fn pages_neither_skip_nor_repeat_while_data_is_written<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    let one = |n: u32, start: u64| {
        service_batch("svc", vec![], Scope::default(), vec![span(tid(n), 1, None, "op", start, 10)])
    };
    // 60 traces, some sharing a start time (ties are broken by trace id).
    for n in 0..60u32 {
        write(&store, one(n, 1_000 + u64::from(n / 2))).await;
        opts.clock.advance(Duration::from_millis(1));
        if n == 30 {
            store.flush().await.expect("flush");
        }
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut extra = 1000u32;
    loop {
        let page =
            search(&store, TraceQuery { service: Some("svc".into()), cursor, ..TraceQuery::all(7) }).await;
        seen.extend(page.traces.iter().map(|t| (t.start_unix_nano, t.trace_id)));
        // A late span of a trace already in the snapshot, starting before everything, in
        // long-term storage apart from the rest of its trace: the trace keeps its place in
        // the snapshot's order and does not come back. (A span that joins its trace's
        // spans in the embedded store's head can still move the trace; see
        // `strand_core::search`.)
        if let Some(first) = page.traces.first() {
            store.flush().await.expect("flush");
            let late = span(first.trace_id, 2, Some(1), "late", 1, 10);
            write(&store, service_batch("svc", vec![], Scope::default(), vec![late])).await;
        }
        write(&store, one(extra, 500)).await;
        write(&store, one(extra + 1, 5_000)).await;
        opts.clock.advance(Duration::from_millis(1));
        extra += 2;
        if extra.is_multiple_of(6) {
            store.flush().await.expect("flush");
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let unique: HashSet<TraceId> = seen.iter().map(|s| s.1).collect();
    assert_eq!(unique.len(), seen.len(), "conformance: no trace repeats across pages");
    assert_eq!(
        unique,
        (0..60).map(tid).collect::<HashSet<_>>(),
        "conformance: exactly the first page's snapshot"
    );
    let mut ordered = seen.clone();
    ordered.sort_by_key(|&(start, id)| (std::cmp::Reverse(start), id));
    assert_eq!(seen, ordered, "conformance: pages continue in order");
    let all = search(&store, TraceQuery { service: Some("svc".into()), ..TraceQuery::all(1000) }).await;
    let again = search(&store, TraceQuery { service: Some("svc".into()), ..TraceQuery::all(1000) }).await;
    assert_eq!(all, again, "conformance: the same query gives the same page");
    assert_eq!(all.traces.len(), 60 + (extra as usize - 1000));
}

/// Services, operations with their kinds, and attribute pairs of stored spans; nothing for
/// a range far from all data.
pub async fn listings_name_services_operations_and_attributes<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    let mut get_report = span(tid(1), 1, None, "GET /report", 1_000_000, 50_000);
    get_report.attributes = vec![KeyValue::new("http.route", AnyValue::String("/report".into()))];
    let mut call = span(tid(1), 2, Some(1), "SubmitReport", 1_010_000, 10_000);
    call.kind = SpanKind::Client;
    call.attributes = vec![
        KeyValue::new("rpc.system", AnyValue::String("grpc".into())),
        KeyValue::new("attempt", AnyValue::Int(2)),
    ];
    let mut served = span(tid(1), 3, Some(2), "SubmitReport", 1_011_000, 8_000);
    served.kind = SpanKind::Server;
    write(&store, service_batch("gateway", vec![], Scope::default(), vec![get_report, call])).await;
    write(&store, service_batch("epro", vec![], Scope::default(), vec![served])).await;
    in_every_tier(h, &opts, store, |s, tier| {
        Box::pin(async move {
            assert_eq!(
                s.services(TimeRange::ALL).await.expect("services"),
                vec!["epro", "gateway"],
                "conformance ({tier:?})"
            );
            let ops = s.operations("gateway".into(), TimeRange::ALL).await.expect("operations");
            let ops: Vec<(&str, SpanKind)> = ops.iter().map(|o| (o.name.as_str(), o.span_kind)).collect();
            assert_eq!(
                ops,
                vec![("GET /report", SpanKind::Server), ("SubmitReport", SpanKind::Client)],
                "conformance ({tier:?})"
            );
            let ops = s.operations("epro".into(), TimeRange::ALL).await.expect("operations");
            assert_eq!(ops.len(), 1, "conformance ({tier:?}): operations are per service");
            assert_eq!(ops[0].span_kind, SpanKind::Server);
            let attrs = s.attributes(Some("gateway".into()), TimeRange::ALL).await.expect("attributes");
            for pair in [("rpc.system", "grpc"), ("attempt", "2"), ("http.route", "/report")] {
                assert!(
                    attrs.contains(&(pair.0.into(), pair.1.into())),
                    "conformance ({tier:?}): {pair:?} in {attrs:?}"
                );
            }
            let epro = s.attributes(Some("epro".into()), TimeRange::ALL).await.expect("attributes");
            assert!(
                !epro.iter().any(|(k, _)| k == "rpc.system"),
                "conformance ({tier:?}): attributes are per service"
            );
            assert!(attrs.windows(2).all(|w| w[0] <= w[1]), "conformance ({tier:?}): sorted");
            let after = TimeRange { start_unix_nano: 1_050_001, end_unix_nano: u64::MAX };
            let before = TimeRange { start_unix_nano: 0, end_unix_nano: 999_999 };
            for (what, range) in [("just after the last span", after), ("just before the first", before)] {
                assert!(
                    s.services(range).await.expect("services").is_empty(),
                    "conformance ({tier:?}): {what}"
                );
                assert!(
                    s.operations("gateway".into(), range).await.expect("operations").is_empty(),
                    "{what}"
                );
                assert!(s.attributes(None, range).await.expect("attributes").is_empty(), "{what}");
            }
        })
    })
    .await;
}

/// Caller → callee edges from parent spans in another service: HTTP and gRPC calls, and a
/// producer → consumer hop across a queue, with errors counted on the callee.
pub async fn dependencies_count_calls_between_services<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    let minute = 60_000_000_000u64;
    let t0 = 100 * minute;
    for n in 0..3u32 {
        let id = tid(n);
        let start = t0 + u64::from(n) * minute;
        let root = span(id, 1, None, "POST /reports", start, 1_000_000);
        let mut http = span(id, 2, Some(1), "GET /users", start + 10, 1_000);
        http.kind = SpanKind::Client;
        let mut produce = span(id, 4, Some(1), "send reports", start + 20, 1_000);
        produce.kind = SpanKind::Producer;
        write(&store, service_batch("gateway", vec![], Scope::default(), vec![root, http, produce])).await;
        let mut users = span(id, 3, Some(2), "GET /users", start + 11, 900);
        if n == 2 {
            users.status = Status { code: StatusCode::Error, message: "no such user".into() };
        }
        write(&store, service_batch("user-service", vec![], Scope::default(), vec![users])).await;
        let mut consume = span(id, 5, Some(4), "process reports", start + 5_000, 1_000);
        consume.kind = SpanKind::Consumer;
        let mut grpc = span(id, 6, Some(5), "epro.Data/Store", start + 5_100, 500);
        grpc.kind = SpanKind::Client;
        write(&store, service_batch("notify-service", vec![], Scope::default(), vec![consume, grpc])).await;
        write(
            &store,
            service_batch(
                "data-service",
                vec![],
                Scope::default(),
                vec![span(id, 7, Some(6), "epro.Data/Store", start + 5_150, 400)],
            ),
        )
        .await;
        // A batch consumer in its own trace that links the producer: links are not calls.
        let mut archive = span(tid(100 + n), 1, None, "process reports batch", start + 6_000, 1_000);
        archive.kind = SpanKind::Consumer;
        archive.links = vec![Link {
            trace_id: id,
            span_id: SpanId(5u64.to_be_bytes()), // span 4 (testdata ids are n + 1)
            trace_state: String::new(),
            attributes: vec![],
            dropped_attributes_count: 0,
            flags: 0,
        }];
        write(&store, service_batch("archive-service", vec![], Scope::default(), vec![archive])).await;
    }
    in_every_tier(h, &opts, store, |s, tier| {
        Box::pin(async move {
            let edges = s.dependencies(TimeRange::ALL).await.expect("dependencies");
            let edges: Vec<(&str, &str, u64, u64)> = edges
                .iter()
                .map(|e| (e.parent.as_str(), e.child.as_str(), e.call_count, e.error_count))
                .collect();
            assert_eq!(
                edges,
                vec![
                    ("gateway", "notify-service", 3, 0),
                    ("gateway", "user-service", 3, 1),
                    ("notify-service", "data-service", 3, 0),
                ],
                "conformance ({tier:?}): every edge, sorted, errors counted; a span link is no call"
            );
            let first_minute = TimeRange { start_unix_nano: t0, end_unix_nano: t0 + minute - 1 };
            let edges = s.dependencies(first_minute).await.expect("dependencies");
            assert!(
                edges.iter().all(|e| e.call_count == 1),
                "conformance ({tier:?}): the range counts one trace: {edges:?}"
            );
            assert_eq!(edges.len(), 3, "{tier:?}");
            let later = TimeRange { start_unix_nano: t0 + 10 * minute, end_unix_nano: u64::MAX };
            assert!(s.dependencies(later).await.expect("dependencies").is_empty(), "conformance ({tier:?})");
        })
    })
    .await;
}

/// Data received longer ago than the retention is deleted; newer data stays. Span times
/// play no part (the fixtures are from 2023).
pub async fn retention_deletes_by_receive_age<H: Harness>(h: &H) {
    let opts = Options { retention: Duration::from_secs(24 * 3600), ..Options::default() };
    let store = h.open(opts.clone()).await;
    write(&store, batch(1, 3)).await;
    store.flush().await.expect("flush");
    store.maintain().await.expect("maintain");
    assert!(get(&store, trace_id(1)).await.is_some(), "conformance: data received just now is kept");
    opts.clock.advance(Duration::from_secs(36 * 3600));
    write(&store, batch(2, 3)).await;
    store.flush().await.expect("flush");
    store.maintain().await.expect("maintain");
    assert!(get(&store, trace_id(1)).await.is_none(), "conformance: data received 36 h ago is deleted");
    assert!(get(&store, trace_id(2)).await.is_some(), "conformance: newer data is kept");
    assert_eq!(
        ids(&store, TraceQuery::all(10)).await,
        vec![trace_id(2)],
        "conformance: search forgets deleted data"
    );
    let store = reopen(h, &opts, store).await;
    assert!(get(&store, trace_id(1)).await.is_none(), "conformance: deleted data stays deleted");
}

/// With a byte budget, the oldest received data goes first until the rest fits.
pub async fn retention_keeps_the_byte_budget_oldest_first<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    for seed in 1..=10 {
        write(&store, batch(seed, 5)).await;
        store.flush().await.expect("flush");
        opts.clock.advance(Duration::from_secs(60));
    }
    let full = store.stored_bytes().await.expect("stored_bytes");
    store.close().await;
    drop(store);
    let budget = full / 2;
    let opts = Options { max_bytes: Some(budget), ..opts };
    let store = h.open(opts.clone()).await;
    store.maintain().await.expect("maintain");
    let left = store.stored_bytes().await.expect("stored_bytes");
    assert!(left <= budget, "conformance: {left} bytes left over a budget of {budget}");
    let kept: Vec<u8> = {
        let mut kept = Vec::new();
        for seed in 1..=10 {
            if get(&store, trace_id(seed)).await.is_some() {
                kept.push(seed);
            }
        }
        kept
    };
    assert!(kept.contains(&10), "conformance: the newest data is kept: {kept:?}");
    assert!(kept.len() >= 3, "conformance: what fits in half the bytes is kept: {kept:?}");
    assert!(!kept.contains(&1), "conformance: the oldest data goes first: {kept:?}");
    assert!(
        kept.windows(2).all(|w| w[1] == w[0] + 1),
        "conformance: what is kept is the newest run: {kept:?}"
    );
}

/// A closed backend refuses writes as unavailable (retryable), never silently.
pub async fn writes_after_close_are_refused<H: Harness>(h: &H) {
    let store = h.open(Options::default()).await;
    write(&store, batch(1, 2)).await;
    store.close().await;
    match store.write(batch(2, 2)).await {
        Err(strand_core::SinkError::Unavailable(_)) => {}
        other => panic!("conformance: a write after close must fail as unavailable, got {other:?}"),
    }
}

/// Many writers at once: every acknowledged span is stored once.
pub async fn concurrent_writers_lose_nothing<H: Harness>(h: &H) {
    let opts = Options::default();
    let store = Arc::new(h.open(opts.clone()).await);
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..25u32 {
                let id = tid(w * 1000 + n);
                let spans = (0..4)
                    .map(|i| span(id, i, (i > 0).then_some(0), "op", 1_000 + u64::from(n), 10))
                    .collect();
                write(store.as_ref(), service_batch(&format!("svc-{w}"), vec![], Scope::default(), spans))
                    .await;
                // Every writer also retries one of its earlier batches.
                if n % 5 == 4 {
                    let id = tid(w * 1000 + n - 1);
                    let spans = (0..4)
                        .map(|i| span(id, i, (i > 0).then_some(0), "op", 1_000 + u64::from(n - 1), 10))
                        .collect();
                    write(
                        store.as_ref(),
                        service_batch(&format!("svc-{w}"), vec![], Scope::default(), spans),
                    )
                    .await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let store = Arc::into_inner(store).expect("writers are done");
    in_every_tier(h, &opts, store, |s, tier| {
        Box::pin(async move {
            let all = search(s, TraceQuery::all(1000)).await;
            assert_eq!(all.traces.len(), 200, "conformance ({tier:?}): every trace of every writer");
            assert!(all.traces.iter().all(|t| t.span_count == 4), "conformance ({tier:?}): each span once");
            assert_eq!(s.services(TimeRange::ALL).await.expect("services").len(), 8);
        })
    })
    .await;
}

// Jaeger's query fixtures, turned into traces and queries.

/// A trace id from a number.
fn tid(n: u32) -> TraceId {
    let mut b = [0x11u8; 16];
    b[12..].copy_from_slice(&n.to_be_bytes());
    TraceId(b)
}

fn json_value(v: &serde_json::Value) -> AnyValue {
    match v {
        serde_json::Value::Bool(b) => AnyValue::Bool(*b),
        serde_json::Value::Number(n) if n.is_i64() => AnyValue::Int(n.as_i64().unwrap_or_default()),
        serde_json::Value::Number(n) => AnyValue::Double(n.as_f64().unwrap_or_default()),
        other => AnyValue::String(other.as_str().unwrap_or_default().to_owned()),
    }
}

fn rfc3339(s: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(s).expect("rfc3339").timestamp_nanos_opt().expect("in range") as u64
}

/// One scenario of Jaeger's queries.json: the query, traces that must match and traces
/// that must not.
struct Scenario {
    caption: String,
    query: TraceQuery,
    batches: Vec<SpanBatch>,
    expected: HashSet<TraceId>,
}

/// Where a trace puts the query's tags.
#[derive(Clone, Copy)]
enum Spot {
    Span,
    Event,
    Resource,
    Scope,
    Link,
    /// Spread over span, resource and event of the same span.
    Spread,
    /// The first half on one span, the rest on another span of the same trace.
    TwoSpans,
}

struct TraceSpec<'a> {
    id: TraceId,
    service: &'a str,
    op: &'a str,
    start: u64,
    duration: u64,
    tags: &'a [(String, AnyValue)],
    spot: Spot,
    scope_name: &'a str,
}

fn build(t: &TraceSpec) -> Vec<SpanBatch> {
    let kvs = |tags: &[(String, AnyValue)]| -> Vec<KeyValue> {
        tags.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect()
    };
    let mut root = span(t.id, 1, None, t.op, t.start, t.duration);
    let mut resource = Vec::new();
    let mut scope = Scope { name: t.scope_name.into(), version: "1.0".into(), ..Scope::default() };
    let mut extra = None;
    match t.spot {
        Spot::Span => root.attributes = kvs(t.tags),
        Spot::Event => {
            root.events = vec![Event {
                time_unix_nano: t.start,
                name: "log".into(),
                attributes: kvs(t.tags),
                dropped_attributes_count: 0,
            }]
        }
        Spot::Resource => resource = kvs(t.tags),
        Spot::Scope => scope.attributes = kvs(t.tags),
        Spot::Link => {
            root.links = vec![Link {
                trace_id: tid(999_999),
                span_id: SpanId([9; 8]),
                trace_state: String::new(),
                attributes: kvs(t.tags),
                dropped_attributes_count: 0,
                flags: 0,
            }]
        }
        Spot::Spread => {
            let n = t.tags.len();
            root.attributes = kvs(&t.tags[..n / 3]);
            resource = kvs(&t.tags[n / 3..2 * n / 3]);
            root.events = vec![Event {
                time_unix_nano: t.start,
                name: "log".into(),
                attributes: kvs(&t.tags[2 * n / 3..]),
                dropped_attributes_count: 0,
            }];
        }
        Spot::TwoSpans => {
            let n = t.tags.len();
            root.attributes = kvs(&t.tags[..n / 2]);
            let mut child = span(t.id, 2, Some(1), t.op, t.start, t.duration);
            child.attributes = kvs(&t.tags[n / 2..]);
            extra = Some(child);
        }
    }
    let mut spans = vec![root];
    spans.extend(extra);
    vec![service_batch(t.service, resource, scope, spans)]
}

fn scenarios() -> Vec<Scenario> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/jaeger/queries.json"))
            .expect("queries.json");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).expect("json");
    let mut next_id = 0u32;
    let mut fresh = || {
        next_id += 1;
        tid(next_id)
    };
    let mut out = Vec::new();
    for e in &entries {
        let caption = e["Caption"].as_str().expect("caption").to_owned();
        let q = &e["Query"];
        let service = q["ServiceName"].as_str().expect("service").to_owned();
        let op_query = q["OperationName"].as_str().unwrap_or_default().to_owned();
        let op = if op_query.is_empty() { "some-op".to_owned() } else { op_query.clone() };
        let mut tags: Vec<(String, AnyValue)> = q["Tags"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), json_value(v))).collect())
            .unwrap_or_default();
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        let (min, max) = (
            rfc3339(q["StartTimeMin"].as_str().expect("min")),
            rfc3339(q["StartTimeMax"].as_str().expect("max")),
        );
        let dmin = q["DurationMin"].as_u64().unwrap_or(0);
        let dmax = q["DurationMax"].as_u64().unwrap_or(0);
        let duration = match (dmin, dmax) {
            (0, 0) => 1000,
            (0, m) => m / 2,
            (m, 0) => m * 2,
            (a, b) => (a + b) / 2,
        };
        let spot = if caption.contains("Logs") {
            Spot::Event
        } else if caption.contains("Process") {
            Spot::Resource
        } else if caption.contains("different spots") || caption.contains("Multi-spot") {
            Spot::Spread
        } else if caption.contains("Scope Attributes") {
            Spot::Scope
        } else if caption.contains("Link") {
            Spot::Link
        } else {
            Spot::Span
        };
        let start = min + (max - min) / 2;
        let base = TraceSpec {
            id: tid(0),
            service: &service,
            op: &op,
            start,
            duration,
            tags: &tags,
            spot,
            scope_name: "lib",
        };
        let mut batches = Vec::new();
        let mut expected = HashSet::new();
        let matching = if caption == "Multiple Traces" { 3 } else { 1 };
        for i in 0..matching {
            let id = fresh();
            expected.insert(id);
            batches.extend(build(&TraceSpec { id, start: start + i, ..base }));
        }
        if caption.contains("multiple indices") {
            // Spans of one trace days apart: only the one inside the window matters.
            let id = fresh();
            expected.insert(id);
            let day = 86_400_000_000_000;
            let mut spans = vec![span(id, 1, None, &op, start - day, duration)];
            spans.push(span(id, 2, Some(1), &op, start, duration));
            spans.push(span(id, 3, Some(1), &op, start + day, duration));
            batches.push(service_batch(&service, Vec::new(), Scope::default(), spans));
        }
        // Decoys, each differing in one way.
        let other_service = format!("{service}-other");
        batches.extend(build(&TraceSpec { id: fresh(), service: &other_service, ..base }));
        batches.extend(build(&TraceSpec { id: fresh(), start: min - 3_600_000_000_000, ..base }));
        batches.extend(build(&TraceSpec { id: fresh(), start: max + 1, ..base }));
        if !op_query.is_empty() {
            batches.extend(build(&TraceSpec { id: fresh(), op: "other-op", ..base }));
        }
        if dmax > 0 {
            batches.extend(build(&TraceSpec { id: fresh(), duration: dmax + 1, ..base }));
        }
        if dmin > 0 {
            batches.extend(build(&TraceSpec { id: fresh(), duration: dmin - 1, ..base }));
        }
        let off_tags: Vec<(String, AnyValue)> = tags
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (k.clone(), if i == 1 { AnyValue::Int(124) } else { v.clone() }))
            .collect();
        if tags.len() > 1 {
            batches.extend(build(&TraceSpec { id: fresh(), tags: &off_tags, ..base }));
            batches.extend(build(&TraceSpec { id: fresh(), spot: Spot::TwoSpans, ..base }));
        }
        let query = TraceQuery {
            service: Some(service.clone()),
            operation: (!op_query.is_empty()).then_some(op_query),
            attributes: tags
                .iter()
                .map(|(k, v)| AttrFilter {
                    scope: AttrScope::Any,
                    key: k.clone(),
                    value: strand_core::search::value_text(v).expect("searchable"),
                })
                .collect(),
            min_span_duration_nano: (dmin > 0).then_some(dmin),
            max_span_duration_nano: (dmax > 0).then_some(dmax),
            start_unix_nano: min,
            end_unix_nano: max,
            limit: q["NumTraces"].as_u64().expect("limit") as usize,
            ..TraceQuery::default()
        };
        out.push(Scenario { caption, query, batches, expected });
    }
    out
}

async fn write_logs<S: TraceStore + ?Sized>(s: &S, b: strand_core::LogBatch) {
    s.write_logs(b).await.expect("conformance: a log write to a healthy backend succeeds");
}

async fn trace_logs<S: TraceStore + ?Sized>(
    s: &S,
    id: TraceId,
    span: Option<SpanId>,
) -> Vec<strand_core::StoredLog> {
    s.trace_logs(id, span).await.expect("conformance: trace_logs on a healthy backend succeeds")
}

async fn find_logs<S: TraceStore + ?Sized>(s: &S, q: strand_core::LogQuery) -> strand_core::LogPage {
    s.find_logs(q).await.expect("conformance: find_logs on a healthy backend succeeds")
}

/// The records of a fixture log batch that belong to a trace (or span), in read order.
fn expected_logs(
    b: &strand_core::LogBatch,
    id: TraceId,
    span: Option<SpanId>,
) -> Vec<strand_core::StoredLog> {
    let logs = b
        .clone()
        .into_stored()
        .filter(|l| l.record.trace_id == Some(id) && span.is_none_or(|s| l.record.span_id == Some(s)));
    strand_core::logs::dedup_and_sort(logs.collect())
}

/// Log records read back whole by trace and by span, once each however often they were
/// written, in every tier; records without trace context are kept and found by search.
pub async fn log_records_read_back_by_trace_and_span<H: Harness>(h: &H) {
    use crate::testdata::log_batch;
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    write(&store, batch(1, 3)).await;
    write_logs(&store, log_batch(1, 4)).await;
    write_logs(&store, log_batch(1, 4)).await; // a client's retry
    write_logs(&store, log_batch(2, 2)).await;
    let store = in_every_tier(h, &opts, store, |s, tier| {
        Box::pin(async move {
            let want = expected_logs(&log_batch(1, 4), trace_id(1), None);
            assert_eq!(want.len(), 12);
            let got = trace_logs(s, trace_id(1), None).await;
            assert_eq!(got, want, "conformance ({tier:?}): a trace's log records, each once, by time");
            let span = SpanId([1, 1, 1, 1, 1, 1, 1, 1]);
            let got = trace_logs(s, trace_id(1), Some(span)).await;
            assert_eq!(
                got,
                expected_logs(&log_batch(1, 4), trace_id(1), Some(span)),
                "conformance ({tier:?}): by span"
            );
            assert_eq!(got.len(), 4, "conformance ({tier:?}): by span");
            assert!(
                trace_logs(s, trace_id(9), None).await.is_empty(),
                "conformance ({tier:?}): unknown trace"
            );
            assert_eq!(
                trace_logs(s, trace_id(2), None).await.len(),
                6,
                "conformance ({tier:?}): traces apart"
            );
            let q = strand_core::LogQuery { text: Some("WITHOUT CONTEXT".into()), ..Default::default() };
            let page = find_logs(s, q).await;
            assert_eq!(page.records.len(), 2, "conformance ({tier:?}): records without a trace are kept");
            assert!(page.records.iter().all(|l| l.record.trace_id.is_none()));
        })
    })
    .await;
    // A retry after the records reached long-term storage is still read once.
    write_logs(&store, log_batch(1, 4)).await;
    assert_eq!(trace_logs(&store, trace_id(1), None).await.len(), 12, "conformance: retried after a flush");
    store.flush().await.expect("flush");
    assert_eq!(trace_logs(&store, trace_id(1), None).await.len(), 12, "conformance: retried, flushed again");
    // Copies in two places neither end a search's pages early nor show twice.
    for limit in [1, 2, 3, 7] {
        let mut q = strand_core::LogQuery { limit, ..Default::default() };
        let mut seen = Vec::new();
        loop {
            let page = find_logs(&store, q.clone()).await;
            seen.extend(page.records.iter().map(|l| l.order_key()));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        let n = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!((n, seen.len()), (20, 20), "conformance: pages of {limit} over copied records");
    }
}

/// Log searches: each condition, newest first, paged without skips or repeats.
pub async fn log_searches_filter_and_page<H: Harness>(h: &H) {
    use crate::testdata::log_batch;
    use strand_core::{LogCursor, LogQuery};
    let opts = Options::default();
    let store = h.open(opts.clone()).await;
    for seed in 1..=6 {
        write_logs(&store, log_batch(seed, 3)).await;
        if seed == 3 {
            store.flush().await.expect("flush");
        }
    }
    let all: Vec<strand_core::StoredLog> = (1..=6).flat_map(|s| log_batch(s, 3).into_stored()).collect();
    let all = Arc::new(all);
    in_every_tier(h, &opts, store, |s, tier| {
        let all = all.clone();
        Box::pin(async move {
            let expect = |q: &LogQuery| {
                let lower = q.text.as_ref().map(|t| t.to_lowercase());
                let mut v: Vec<_> = all
                    .iter()
                    .filter(|l| {
                        let t = l.record.effective_time();
                        q.range.overlaps(t, t) && q.matches(l, lower.as_deref())
                    })
                    .map(|l| l.order_key())
                    .collect();
                v.sort_by(|a, b| b.cmp(a));
                v
            };
            let queries = [
                LogQuery { limit: 1000, ..Default::default() },
                LogQuery { service: Some("svc-1".into()), limit: 1000, ..Default::default() },
                LogQuery { min_severity: 13, limit: 1000, ..Default::default() },
                LogQuery { text: Some("ORDER 4-".into()), limit: 1000, ..Default::default() },
                LogQuery { text: Some("structured".into()), limit: 1000, ..Default::default() },
                // A text with each other condition: the rows the text picks must be
                // checked against the rest of their own row.
                LogQuery {
                    text: Some("HANDLED in".into()),
                    min_severity: 9,
                    limit: 1000,
                    ..Default::default()
                },
                LogQuery {
                    text: Some("order".into()),
                    service: Some("svc-1".into()),
                    attributes: vec![("ratio".into(), "0.5".into())],
                    range: TimeRange {
                        start_unix_nano: 1_700_000_001_000_001_000,
                        end_unix_nano: 1_700_000_004_000_001_010,
                    },
                    limit: 1000,
                    ..Default::default()
                },
                LogQuery {
                    attributes: vec![("order.id".into(), "203".into())],
                    limit: 1000,
                    ..Default::default()
                },
                LogQuery {
                    attributes: vec![("host.cores".into(), "2".into())],
                    min_severity: 21,
                    limit: 1000,
                    ..Default::default()
                },
                LogQuery {
                    range: TimeRange {
                        start_unix_nano: 1_700_000_002_000_000_000,
                        end_unix_nano: 1_700_000_004_999_999_999,
                    },
                    limit: 1000,
                    ..Default::default()
                },
            ];
            for q in queries {
                let want = expect(&q);
                assert!(!want.is_empty(), "conformance: the fixture has matches for {q:?}");
                let got: Vec<_> =
                    find_logs(s, q.clone()).await.records.iter().map(|l| l.order_key()).collect();
                assert_eq!(got, want, "conformance ({tier:?}): log search {q:?}");
            }
            // Pages of 4 walk every record once, newest first.
            let want = expect(&LogQuery::default());
            let mut q = LogQuery { limit: 4, ..Default::default() };
            let mut got = Vec::new();
            loop {
                let page = find_logs(s, q.clone()).await;
                assert!(page.records.len() <= 4);
                got.extend(page.records.iter().map(|l| l.order_key()));
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c.to_string().parse::<LogCursor>().expect("cursor")),
                    None => break,
                }
            }
            assert_eq!(got, want, "conformance ({tier:?}): pages walk every record once, newest first");
        })
    })
    .await;
}

/// Retention deletes log records by receive age and within the byte budget, with the
/// spans received at the same time.
pub async fn log_retention_follows_the_spans<H: Harness>(h: &H) {
    use crate::testdata::log_batch;
    let opts = Options { retention: Duration::from_secs(24 * 3600), ..Options::default() };
    let store = h.open(opts.clone()).await;
    write(&store, batch(1, 3)).await;
    write_logs(&store, log_batch(1, 2)).await;
    store.flush().await.expect("flush");
    opts.clock.advance(Duration::from_secs(36 * 3600));
    write(&store, batch(2, 3)).await;
    write_logs(&store, log_batch(2, 2)).await;
    store.flush().await.expect("flush");
    store.maintain().await.expect("maintain");
    assert!(get(&store, trace_id(1)).await.is_none(), "conformance: old spans deleted");
    assert!(trace_logs(&store, trace_id(1), None).await.is_empty(), "conformance: their logs with them");
    assert_eq!(trace_logs(&store, trace_id(2), None).await.len(), 6, "conformance: newer logs kept");
    let store = reopen(h, &opts, store).await;
    assert!(trace_logs(&store, trace_id(1), None).await.is_empty(), "conformance: deleted logs stay deleted");
    assert_eq!(
        trace_logs(&store, trace_id(2), None).await.len(),
        6,
        "conformance: kept logs survive a restart"
    );

    // The byte budget counts log records: a store of logs only is held to it.
    let opts = Options::default();
    let store = reopen(h, &opts, store).await;
    for seed in 10..=19 {
        write_logs(&store, log_batch(seed, 20)).await;
        store.flush().await.expect("flush");
        opts.clock.advance(Duration::from_secs(60));
    }
    let full = store.stored_bytes().await.expect("stored_bytes");
    let budget = full / 2;
    let opts = Options { max_bytes: Some(budget), ..opts };
    let store = reopen(h, &opts, store).await;
    store.maintain().await.expect("maintain");
    let left = store.stored_bytes().await.expect("stored_bytes");
    assert!(left <= budget, "conformance: {left} bytes of logs left over a budget of {budget}");
    assert!(trace_logs(&store, trace_id(10), None).await.is_empty(), "conformance: the oldest logs go first");
    assert_eq!(
        trace_logs(&store, trace_id(19), None).await.len(),
        60,
        "conformance: the newest logs are kept"
    );
}
