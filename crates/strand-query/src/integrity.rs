//! Chain integrity in the query APIs: the `integrity` of a trace as JSON, searches with an
//! `integrity=` filter (the native parameter, or a Jaeger or Tempo tag named `integrity`),
//! badges for search results, and `GET /api/v1/integrity/edges`.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use strand_core::search::SpanConditions;
use strand_core::{
    ChainIntegrity, Cursor, Finding, FindingKind, Integrity, IntegrityFilter, SearchPage, Trace, TraceQuery,
    TraceSummary,
};

use crate::params::{Params, now_nanos, parse_time};
use crate::{ApiError, QueryState};

/// The name of Strand's integrity filter among Jaeger and Tempo tags.
pub const TAG: &str = "integrity";

/// Broken traces an `integrity=` search reads from the store for one page at most.
const SCAN_BUDGET: usize = 2_000;

/// A finding as the native API writes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingJson {
    kind: FindingKind,
    span_ids: Vec<String>,
    services: Vec<String>,
    related_trace_id: Option<String>,
    related_span_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    candidates: Vec<String>,
    confidence: strand_core::Confidence,
    message: String,
}

impl From<&Finding> for FindingJson {
    fn from(f: &Finding) -> Self {
        Self {
            kind: f.kind,
            span_ids: f.span_ids.iter().map(|s| s.to_hex()).collect(),
            services: f.services.clone(),
            related_trace_id: f.related_trace_id.map(|t| t.to_hex()),
            related_span_id: f.related_span_id.map(|s| s.to_hex()),
            candidates: f.candidates.iter().map(|t| t.to_hex()).collect(),
            confidence: f.confidence,
            message: f.message.clone(),
        }
    }
}

/// A trace's integrity as the native API writes it.
#[derive(Serialize)]
pub struct IntegrityJson {
    settled: bool,
    complete: bool,
    findings: Vec<FindingJson>,
}

impl From<&Integrity> for IntegrityJson {
    fn from(i: &Integrity) -> Self {
        Self {
            settled: i.settled,
            complete: i.complete,
            findings: i.findings.iter().map(FindingJson::from).collect(),
        }
    }
}

/// The chain-integrity analyser, or the 501 a request for it gets when analysis is off.
pub(crate) fn analyser(st: &QueryState) -> Result<&dyn ChainIntegrity, ApiError> {
    st.integrity.as_deref().ok_or_else(|| {
        ApiError::NotImplemented(
            "chain-integrity analysis is off on this server (integrity.enabled: false)".into(),
        )
    })
}

/// Parses an `integrity` filter value (`broken` or a finding kind).
pub fn parse_filter(v: &str) -> Result<IntegrityFilter, ApiError> {
    v.parse().map_err(|e: String| ApiError::BadRequest(format!("integrity filter: {e}")))
}

/// Takes an `integrity` tag out of a query's attribute filters (Jaeger and Tempo searches
/// carry the filter as a tag).
pub fn take_tag(q: &mut TraceQuery) -> Result<Option<IntegrityFilter>, ApiError> {
    let Some(i) = q.attributes.iter().position(|a| a.key == TAG) else { return Ok(None) };
    let tag = q.attributes.remove(i);
    parse_filter(&tag.value).map(Some)
}

/// Whether a query has span conditions beyond its time range.
fn has_span_conditions(q: &TraceQuery) -> bool {
    q.service.is_some()
        || q.operation.is_some()
        || q.kind.is_some()
        || !q.attributes.is_empty()
        || q.status.is_some()
        || q.min_span_duration_nano.is_some()
        || q.max_span_duration_nano.is_some()
}

/// One page of a search: the store's, or with an integrity filter, the settled traces with
/// matching findings whose start is in the query's range (newest first, the same cursor),
/// each also meeting the query's other conditions.
pub(crate) async fn search(
    st: &QueryState,
    q: TraceQuery,
    filter: Option<IntegrityFilter>,
) -> Result<SearchPage, ApiError> {
    let Some(filter) = filter else { return Ok(st.reader.find_traces(q).await?) };
    let chain = analyser(st)?;
    let as_of = q.cursor.map_or_else(now_nanos, |c| c.as_of_unix_nano);
    let mut after = q.cursor.map(|c| (c.start_unix_nano, c.trace_id));
    let conditions = SpanConditions::new(&q);
    let span_conditions = has_span_conditions(&q);
    let mut page = SearchPage::default();
    let batch = q.limit.clamp(1, 200);
    // Broken traces read per page at most, when the other conditions rarely hold.
    let mut budget = SCAN_BUDGET;
    'pages: loop {
        if budget == 0 {
            // Stop here; the cursor continues after the last trace looked at.
            if let Some((start, trace_id)) = after {
                page.next_cursor = Some(Cursor { as_of_unix_nano: as_of, start_unix_nano: start, trace_id });
            }
            page.warnings.push(format!(
                "looked at {SCAN_BUDGET} broken traces without filling the page: follow nextCursor for more, \
                 or narrow the time range"
            ));
            break;
        }
        let candidates = chain
            .find_broken(filter, q.start_unix_nano, q.end_unix_nano, after, as_of, batch.min(budget))
            .await?;
        budget -= candidates.len();
        let Some(last) = candidates.last() else { break };
        after = Some((last.start_unix_nano, last.trace_id));
        let traces = st.reader.get_traces(candidates.iter().map(|c| c.trace_id).collect()).await?;
        for c in &candidates {
            // Traces retention deleted, or that sampling dropped, are not returned.
            let Some(t) = traces.iter().find(|t| t.trace_id == c.trace_id) else { continue };
            if span_conditions && !t.spans.iter().any(|s| conditions.matches(s)) {
                continue;
            }
            let summary = TraceSummary::of(t.trace_id, &t.spans);
            let duration = summary.duration_nano;
            if q.min_trace_duration_nano.is_some_and(|m| duration < m)
                || q.max_trace_duration_nano.is_some_and(|m| duration > m)
            {
                continue;
            }
            page.traces.push(summary);
            if page.traces.len() == q.limit {
                page.next_cursor = Some(Cursor {
                    as_of_unix_nano: as_of,
                    start_unix_nano: c.start_unix_nano,
                    trace_id: c.trace_id,
                });
                break 'pages;
            }
        }
        if candidates.len() < batch.min(budget + candidates.len()) {
            break;
        }
    }
    Ok(page)
}

/// The finding kinds of search results, by position (`[]` where none or unknown).
pub(crate) async fn kinds_of(st: &QueryState, traces: &[TraceSummary]) -> Vec<Vec<&'static str>> {
    let Some(chain) = st.integrity.as_deref() else { return vec![Vec::new(); traces.len()] };
    let ids: Vec<_> = traces.iter().map(|t| t.trace_id).collect();
    chain
        .kinds_of(&ids)
        .await
        .into_iter()
        .map(|bits| FindingKind::ALL.iter().filter(|k| bits & k.bit() != 0).map(|k| k.as_str()).collect())
        .collect()
}

/// A trace's integrity, when analysis is on.
pub(crate) async fn of_trace(st: &QueryState, trace: &Trace) -> Option<Integrity> {
    match st.integrity.as_deref() {
        Some(chain) => chain.of_trace(trace).await,
        None => None,
    }
}

/// `GET /api/v1/integrity/edges?start=&end=` (or `since=`): per caller → callee edge,
/// calls whose context crossed and was lost. All kept history when no range is given.
pub(crate) async fn edges(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let chain = analyser(&st)?;
    let p = Params::parse(raw.as_deref())?;
    let start = p.parse_with(&["start"], "RFC 3339 or Unix nanoseconds", parse_time)?;
    let end = p.parse_with(&["end"], "RFC 3339 or Unix nanoseconds", parse_time)?.unwrap_or(u64::MAX);
    let since = p.duration(&["since"])?;
    let start = match (start, since) {
        (Some(s), _) => s,
        (None, Some(d)) => end.min(now_nanos()).saturating_sub(d.as_nanos() as u64),
        (None, None) => 0,
    };
    if start > end {
        return Err(ApiError::BadRequest("the start of the time range is after its end".into()));
    }
    let edges: Vec<_> = chain
        .edges(start, end)
        .await?
        .into_iter()
        .map(|e| {
            let calls = e.crossed + e.lost;
            json!({
                "caller": e.caller,
                "callee": e.callee,
                "via": e.via,
                "crossed": e.crossed,
                "lost": e.lost,
                "breakRate": if calls == 0 { 0.0 } else { e.lost as f64 / calls as f64 },
            })
        })
        .collect();
    Ok(Json(json!({ "edges": edges })).into_response())
}
