//! `GET /api/v1/logs`: log records by trace (and span), or a search.
//!
//! - `?traceId=<hex>[&spanId=<hex>]`: every record of the trace (or span), ordered by time,
//!   as OTLP/JSON `resourceLogs`, whatever the time: a trace is looked up, not searched.
//! - `?service=&severity=<min>&q=<text>&attr=k=v&start=&end=&since=&limit=&cursor=`: a
//!   search, newest first; `severity` is a range name (`WARN`) or number (13) and keeps
//!   that severity and above; `q` is a case-insensitive substring of the body; `attr`
//!   (repeatable) matches record or resource attributes. The answer holds the page as
//!   `resourceLogs` (groups in order of their newest record, records newest first within
//!   a group) and `nextCursor` while more match.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use strand_core::{LogBatch, LogCursor, LogQuery, SpanId, StoredLog, TimeRange};

use crate::params::{Params, parse_time};
use crate::{ApiError, QueryState, parse_trace_id};

/// Search parameters that make no sense with `traceId`.
const SEARCH_ONLY: [&str; 9] =
    ["service", "severity", "q", "attr", "start", "end", "since", "limit", "cursor"];

pub(crate) async fn logs(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let logs = st.logs.clone().ok_or_else(|| {
        ApiError::NotImplemented("this storage backend does not support log records".into())
    })?;
    let p = Params::parse(raw.as_deref())?;
    let span =
        p.parse_with(&["spanId"], "16 hex characters", |v| v.parse::<SpanId>().map_err(|e| e.to_string()))?;
    if let Some(raw_id) = p.get(&["traceId"]) {
        if let Some(other) = SEARCH_ONLY.iter().find(|n| p.get(&[n]).is_some()) {
            return Err(ApiError::BadRequest(format!(
                "parameter `{other}` searches records; it cannot be combined with `traceId`, which returns every record of the trace"
            )));
        }
        let id = parse_trace_id(raw_id)?;
        let records = logs.trace_logs(id, span).await?;
        return Ok(Json(json!({
            "traceId": id.to_hex(),
            "spanId": span.map(|s| s.to_hex()),
            "count": records.len(),
            "resourceLogs": resource_logs(records),
        }))
        .into_response());
    }
    if span.is_some() {
        return Err(ApiError::BadRequest("parameter `spanId` needs `traceId`".into()));
    }
    let mut warnings = Vec::new();
    let q = search_query(&p, &st, &mut warnings)?;
    let page = logs.find_logs(q).await?;
    Ok(Json(json!({
        "count": page.records.len(),
        "nextCursor": page.next_cursor.map(|c| c.to_string()),
        "resourceLogs": resource_logs(page.records),
        "warnings": warnings,
    }))
    .into_response())
}

fn search_query(p: &Params, st: &QueryState, warnings: &mut Vec<String>) -> Result<LogQuery, ApiError> {
    let min_severity =
        p.parse_with(&["severity"], "TRACE, DEBUG, INFO, WARN, ERROR, FATAL or 1-24", |v| {
            strand_core::logs::parse_min_severity(v)
        })?;
    let mut attributes = Vec::new();
    for raw in p.all("attr") {
        let (k, v) = raw.split_once('=').filter(|(k, _)| !k.is_empty()).ok_or_else(|| {
            ApiError::BadRequest(format!("parameter `attr`: expected key=value, got `{raw}`"))
        })?;
        attributes.push((k.to_owned(), v.to_owned()));
    }
    let start = p.parse_with(&["start"], "RFC 3339 or Unix nanoseconds", parse_time)?;
    let end = p.parse_with(&["end"], "RFC 3339 or Unix nanoseconds", parse_time)?;
    let since = p.duration(&["since"])?;
    let range = st.limits.range(start, end, since, warnings)?;
    let text = p.get(&["q"]).map(str::to_owned);
    if text.as_ref().is_some_and(|t| t.len() > 1024) {
        return Err(ApiError::BadRequest("parameter `q`: at most 1024 bytes".into()));
    }
    Ok(LogQuery {
        service: p.get(&["service"]).map(str::to_owned),
        min_severity: min_severity.unwrap_or(0),
        text,
        attributes,
        range: TimeRange { start_unix_nano: range.start, end_unix_nano: range.end },
        limit: st.limits.limit(p.u64(&["limit"])?, warnings)?,
        cursor: p.parse_with(&["cursor"], "a cursor from a previous page", |v| v.parse::<LogCursor>())?,
    })
}

/// Records as OTLP/JSON `resourceLogs`, keeping their order within each scope.
pub fn resource_logs(records: Vec<StoredLog>) -> Vec<strand_otlp::proto::logs::v1::ResourceLogs> {
    strand_otlp::logs::to_resource_logs(&LogBatch::from_stored(records))
}
