//! The native API under `/api/v1/` (documented in `docs/api.md`).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use strand_core::{
    AttrFilter, AttrScope, Cursor, SpanKind, StatusFilter, TimeRange, TraceQuery, TraceSummary,
};

use crate::params::{Params, check_bounds, parse_time};
use crate::{ApiError, QueryState, parse_trace_id};

/// A trace summary as the native API returns it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryJson {
    trace_id: String,
    root_service: String,
    root_name: String,
    /// Unix nanoseconds, as a string (beyond JSON's exact integer range).
    start_time_unix_nano: String,
    duration_nano: u64,
    span_count: u64,
    error_count: u64,
    services: Vec<ServiceJson>,
    /// Kinds of the chain-integrity findings of a settled trace (left out when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    integrity: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceJson {
    name: String,
    span_count: u64,
    error_count: u64,
}

impl From<&TraceSummary> for SummaryJson {
    fn from(t: &TraceSummary) -> Self {
        Self {
            trace_id: t.trace_id.to_hex(),
            root_service: t.root_service.clone(),
            root_name: t.root_name.clone(),
            start_time_unix_nano: t.start_unix_nano.to_string(),
            duration_nano: t.duration_nano,
            span_count: t.span_count,
            error_count: t.error_count,
            services: t
                .services
                .iter()
                .map(|s| ServiceJson {
                    name: s.name.clone(),
                    span_count: s.span_count,
                    error_count: s.error_count,
                })
                .collect(),
            integrity: Vec::new(),
        }
    }
}

/// Parses a span kind name (`server`, `client`, `producer`, `consumer`, `internal`,
/// `unspecified`), any case.
pub fn parse_kind(v: &str) -> Result<SpanKind, String> {
    let k = v.to_ascii_lowercase();
    let k = k.strip_prefix("span_kind_").unwrap_or(&k);
    (0..=5)
        .map(SpanKind::from_i32)
        .find(|kind| kind.as_str() == k)
        .ok_or_else(|| format!("unknown span kind `{v}`"))
}

fn parse_attr(scope: AttrScope) -> impl Fn(&str) -> Result<AttrFilter, ApiError> {
    move |raw: &str| {
        let (key, value) = raw.split_once('=').ok_or_else(|| {
            ApiError::BadRequest(format!("attribute filter `{raw}` is not of the form key=value"))
        })?;
        if key.is_empty() {
            return Err(ApiError::BadRequest(format!("attribute filter `{raw}` has an empty key")));
        }
        Ok(AttrFilter { scope, key: key.to_owned(), value: value.to_owned() })
    }
}

/// The native search parameters as a query.
pub fn search_query(p: &Params, st: &QueryState, warnings: &mut Vec<String>) -> Result<TraceQuery, ApiError> {
    let mut attributes = Vec::new();
    for (name, scope) in
        [("attr", AttrScope::Any), ("spanAttr", AttrScope::Span), ("resourceAttr", AttrScope::Resource)]
    {
        for raw in p.all(name) {
            attributes.push(parse_attr(scope)(raw)?);
        }
    }
    let status = p.parse_with(&["status"], "error or ok", |v| match v {
        "error" => Ok(StatusFilter::Error),
        "ok" => Ok(StatusFilter::Ok),
        other => Err(format!("unknown status `{other}`")),
    })?;
    let (min_span, max_span) = (p.duration(&["minDuration"])?, p.duration(&["maxDuration"])?);
    check_bounds(min_span, max_span, "minDuration/maxDuration")?;
    let (min_trace, max_trace) = (p.duration(&["minTraceDuration"])?, p.duration(&["maxTraceDuration"])?);
    check_bounds(min_trace, max_trace, "minTraceDuration/maxTraceDuration")?;
    let start = p.parse_with(&["start"], "RFC 3339 or Unix nanoseconds", parse_time)?;
    let end = p.parse_with(&["end"], "RFC 3339 or Unix nanoseconds", parse_time)?;
    let since = p.duration(&["since"])?;
    let range = st.limits.range(start, end, since, warnings)?;
    let cursor = p.parse_with(&["cursor"], "a cursor from a previous page", |v| v.parse::<Cursor>())?;
    let nanos = |d: Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64);
    Ok(TraceQuery {
        service: p.get(&["service"]).map(str::to_owned),
        operation: p.get(&["operation"]).map(str::to_owned),
        kind: p.parse_with(&["kind"], "a span kind", parse_kind)?,
        attributes,
        status,
        min_span_duration_nano: nanos(min_span),
        max_span_duration_nano: nanos(max_span),
        min_trace_duration_nano: nanos(min_trace),
        max_trace_duration_nano: nanos(max_trace),
        start_unix_nano: range.start,
        end_unix_nano: range.end,
        limit: st.limits.limit(p.u64(&["limit"])?, warnings)?,
        cursor,
    })
}

pub(crate) async fn search(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref())?;
    let mut warnings = Vec::new();
    let q = search_query(&p, &st, &mut warnings)?;
    let filter = p.parse_with(&["integrity"], "broken or a finding kind", |v| {
        v.parse::<strand_core::IntegrityFilter>()
    })?;
    let first_page = q.cursor.is_none();
    let mut page = crate::integrity::search(&st, q.clone(), filter).await?;
    // The store's own warnings say the search stopped short (a scan limit); the request's
    // (a range or limit reduced to the server's bounds) do not.
    let complete = page.warnings.is_empty();
    warnings.append(&mut page.warnings);
    let kinds = crate::integrity::kinds_of(&st, &page.traces).await;
    let traces: Vec<SummaryJson> = page
        .traces
        .iter()
        .zip(kinds)
        .map(|(t, kinds)| SummaryJson { integrity: kinds, ..SummaryJson::from(t) })
        .collect();
    let mut body = json!({
        "traces": traces,
        "nextCursor": page.next_cursor.map(|c| c.to_string()),
        "warnings": warnings,
    });
    // Nothing in the range (data with old timestamps, a quiet service): say where the
    // newest trace matching the same conditions is, so a client can offer to go there.
    // Best effort, and only after a complete first page: a first search that hit the
    // store's limits would only be repeated at greater cost. A range the server shortened
    // (`since=800d` beyond `max_search_range`) is no reason to stay silent.
    let all_time = q.start_unix_nano == 0 && q.end_unix_nano == u64::MAX;
    if page.traces.is_empty() && first_page && complete && !all_time {
        let anywhere = TraceQuery { start_unix_nano: 0, end_unix_nano: u64::MAX, limit: 1, ..q };
        if let Ok(elsewhere) = crate::integrity::search(&st, anywhere, filter).await {
            match elsewhere.traces.first() {
                Some(t) => {
                    body["newestMatch"] = json!({
                        "traceId": t.trace_id.to_hex(),
                        "startTimeUnixNano": t.start_unix_nano.to_string(),
                        "endTimeUnixNano": t.start_unix_nano.saturating_add(t.duration_nano).to_string(),
                    });
                }
                // Only a complete search may say there is nothing anywhere.
                None if elsewhere.warnings.is_empty() => body["matchesElsewhere"] = json!(false),
                None => {}
            }
        }
    }
    Ok(Json(body).into_response())
}

pub(crate) async fn summaries(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref())?;
    let ids = p.all("traceId");
    if ids.is_empty() {
        return Err(ApiError::BadRequest(
            "parameter `traceId` is required (repeat it for several traces)".into(),
        ));
    }
    if ids.len() > st.limits.max_limit {
        return Err(ApiError::BadRequest(format!("at most {} `traceId` parameters", st.limits.max_limit)));
    }
    let ids = ids.into_iter().map(parse_trace_id).collect::<Result<Vec<_>, _>>()?;
    let traces = st.reader.get_traces(ids).await?;
    let out: Vec<SummaryJson> =
        traces.iter().map(|t| SummaryJson::from(&TraceSummary::of(t.trace_id, &t.spans))).collect();
    Ok(Json(json!({ "traces": out })).into_response())
}

/// The time range of a listing request (`start`, `end`, `since`); all stored data when
/// none is given.
fn listing_range(p: &Params) -> Result<TimeRange, ApiError> {
    let start = p.parse_with(&["start"], "RFC 3339 or Unix nanoseconds", parse_time)?;
    let end = p.parse_with(&["end"], "RFC 3339 or Unix nanoseconds", parse_time)?;
    let since = p.duration(&["since"])?;
    let end_ns = end.unwrap_or(u64::MAX);
    let start_ns = match (start, since) {
        (Some(s), _) => s,
        (None, Some(d)) => end.unwrap_or_else(crate::params::now_nanos).saturating_sub(d.as_nanos() as u64),
        (None, None) => 0,
    };
    if start_ns > end_ns {
        return Err(ApiError::BadRequest("the start of the time range is after its end".into()));
    }
    Ok(TimeRange { start_unix_nano: start_ns, end_unix_nano: end_ns })
}

pub(crate) async fn services(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let range = listing_range(&Params::parse(raw.as_deref())?)?;
    Ok(Json(json!({ "services": st.reader.services(range).await? })).into_response())
}

pub(crate) async fn operations(
    State(st): State<QueryState>,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let range = listing_range(&Params::parse(raw.as_deref())?)?;
    let ops = st.reader.operations(service, range).await?;
    let ops: Vec<_> =
        ops.iter().map(|o| json!({ "name": o.name, "spanKind": o.span_kind.as_str() })).collect();
    Ok(Json(json!({ "operations": ops })).into_response())
}

pub(crate) async fn attribute_names(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref())?;
    let range = listing_range(&p)?;
    let mut names: Vec<String> = st
        .reader
        .attributes(p.get(&["service"]).map(str::to_owned), range)
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    names.dedup();
    Ok(Json(json!({ "names": names })).into_response())
}

pub(crate) async fn attribute_values(
    State(st): State<QueryState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref())?;
    let range = listing_range(&p)?;
    let values: Vec<String> = st
        .reader
        .attributes(p.get(&["service"]).map(str::to_owned), range)
        .await?
        .into_iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect();
    Ok(Json(json!({ "key": key, "values": values })).into_response())
}

pub(crate) async fn dependencies(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    // Like the other listings: all stored data unless a range is given (edges are kept per
    // minute, so even a long range is cheap).
    let range = listing_range(&Params::parse(raw.as_deref())?)?;
    let edges = st.reader.dependencies(range).await?;
    let edges: Vec<_> = edges
        .iter()
        .map(|e| json!({ "parent": e.parent, "child": e.child, "callCount": e.call_count, "errorCount": e.error_count }))
        .collect();
    Ok(Json(json!({ "dependencies": edges, "warnings": [] })).into_response())
}
