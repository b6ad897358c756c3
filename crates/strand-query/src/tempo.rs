//! The Tempo HTTP API that Grafana's Tempo data source uses.
//!
//! Trace lookups return OTLP as Tempo does: JSON with base64 ids under `batches`
//! (`/api/traces/{id}`) or `trace.resourceSpans` (`/api/v2/traces/{id}`), or protobuf when
//! the request accepts `application/protobuf`. Search takes TraceQL (`q=`, see
//! [`crate::traceql`]) and answers with each trace's matched spans (`spanSets`, `spss` per
//! set), or, without `q`, `tags=` in logfmt: `service.name`, `name` and `status` are span
//! fields, every other key an attribute anywhere on the span. `minDuration`/`maxDuration`
//! bound the **trace** duration, as in Tempo; `start`/`end` are Unix seconds.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use prost::Message;
use serde_json::{Value, json};
use strand_core::{AttrFilter, AttrScope, StatusFilter, TraceId, TraceQuery, TraceSummary};

use crate::native::parse_kind;
use crate::params::{Params, check_bounds};
use crate::{ApiError, ErrorShape, QueryState, Shaped, parse_trace_id, traceql};

/// Tempo errors: plain text, as Tempo answers.
pub(crate) struct TempoShape;

pub(crate) type TempoError = Shaped<TempoShape>;

impl ErrorShape for TempoShape {
    fn response(status: axum::http::StatusCode, msg: String) -> Response {
        (status, msg).into_response()
    }
}

pub(crate) async fn echo() -> &'static str {
    "echo"
}

pub(crate) async fn buildinfo() -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}

/// Rewrites hex ids in OTLP/JSON to base64, as Go's protobuf JSON writes bytes.
fn ids_to_base64(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if matches!(k.as_str(), "traceId" | "spanId" | "parentSpanId")
                    && let Value::String(s) = val
                {
                    let bytes: Option<Vec<u8>> = (0..s.len() / 2)
                        .map(|i| s.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                        .collect();
                    if let Some(b) = bytes {
                        *s = base64::engine::general_purpose::STANDARD.encode(b);
                    }
                } else {
                    ids_to_base64(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(ids_to_base64),
        _ => {}
    }
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/protobuf") || a.contains("application/x-protobuf"))
}

async fn trace_response(
    st: &QueryState,
    raw: &str,
    headers: &HeaderMap,
    v2: bool,
) -> Result<Response, TempoError> {
    let id = parse_trace_id(&format!("{raw:0>32}"))?;
    let mut trace =
        st.reader.get_trace(id).await?.ok_or_else(|| ApiError::NotFound(format!("trace not found: {id}")))?;
    // A cut trace is Tempo's partial answer: v2 says so in its `status` and `message`
    // (PartialStatus PARTIAL), v1, which has no place for it, in a header.
    let truncated = st.limits.cut_trace(&mut trace);
    let resource_spans = strand_otlp::to_resource_spans(&trace.to_batch());
    let mut resp = trace_body(resource_spans, headers, v2, truncated)?;
    if let Some(cut) = truncated
        && let Ok(v) = header::HeaderValue::from_str(&cut.header_value())
    {
        resp.headers_mut().insert(crate::params::TRUNCATED_HEADER, v);
    }
    Ok(resp)
}

fn trace_body(
    resource_spans: Vec<strand_otlp::proto::trace::v1::ResourceSpans>,
    headers: &HeaderMap,
    v2: bool,
    truncated: Option<crate::params::Truncated>,
) -> Result<Response, TempoError> {
    if wants_protobuf(headers) {
        // Tempo's `Trace { repeated ResourceSpans batches = 1 }` has TracesData's wire form.
        let data = strand_otlp::proto::trace::v1::TracesData { resource_spans };
        let body = if v2 {
            // TraceByIDResponse { Trace trace = 1; metrics = 2; PartialStatus status = 3;
            // string message = 4 }
            let inner = data.encode_to_vec();
            let mut out = Vec::with_capacity(inner.len() + 8);
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut out);
            prost::encoding::encode_varint(inner.len() as u64, &mut out);
            out.extend(inner);
            if let Some(cut) = truncated {
                prost::encoding::int32::encode(3, &1, &mut out);
                prost::encoding::string::encode(4, &cut.message(), &mut out);
            }
            out
        } else {
            data.encode_to_vec()
        };
        return Ok(([(header::CONTENT_TYPE, "application/protobuf")], body).into_response());
    }
    let mut spans = serde_json::to_value(&resource_spans).map_err(|e| ApiError::Internal(e.to_string()))?;
    ids_to_base64(&mut spans);
    let body = match (v2, truncated) {
        (true, None) => json!({ "trace": { "resourceSpans": spans } }),
        (true, Some(cut)) => {
            json!({ "trace": { "resourceSpans": spans }, "status": "PARTIAL", "message": cut.message() })
        }
        (false, _) => json!({ "batches": spans }),
    };
    Ok(Json(body).into_response())
}

pub(crate) async fn get_trace(
    State(st): State<QueryState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, TempoError> {
    trace_response(&st, &raw, &headers, false).await
}

pub(crate) async fn get_trace_v2(
    State(st): State<QueryState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, TempoError> {
    trace_response(&st, &raw, &headers, true).await
}

/// Splits logfmt `k=v k2="v 2"` into pairs.
pub fn parse_logfmt(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("`{key}` has no value (expected key=value)"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quote in the value of `{key}`")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

fn tempo_query(p: &Params, st: &QueryState, warnings: &mut Vec<String>) -> Result<TraceQuery, ApiError> {
    let mut q = TraceQuery::default();
    if let Some(raw) = p.get(&["tags"]) {
        let pairs = parse_logfmt(raw).map_err(|e| ApiError::BadRequest(format!("parameter `tags`: {e}")))?;
        for (k, v) in pairs {
            match k.as_str() {
                "service.name" | "resource.service.name" => q.service = Some(v),
                "name" => q.operation = Some(v),
                "status" => {
                    q.status = Some(match v.as_str() {
                        "error" => StatusFilter::Error,
                        "ok" | "unset" => StatusFilter::Ok,
                        other => {
                            return Err(ApiError::BadRequest(format!(
                                "parameter `tags`: unknown status `{other}`"
                            )));
                        }
                    })
                }
                "kind" => {
                    q.kind = Some(
                        parse_kind(&v).map_err(|e| ApiError::BadRequest(format!("parameter `tags`: {e}")))?,
                    )
                }
                _ => {
                    let (scope, key) = match (k.strip_prefix("span."), k.strip_prefix("resource.")) {
                        (Some(key), _) => (AttrScope::Span, key.to_owned()),
                        (_, Some(key)) => (AttrScope::Resource, key.to_owned()),
                        _ => (AttrScope::Any, k),
                    };
                    q.attributes.push(AttrFilter { scope, key, value: v });
                }
            }
        }
    }
    bound(&mut q, p, st, warnings)?;
    Ok(q)
}

/// The parameters every Tempo search takes: `minDuration`/`maxDuration` (of the trace,
/// tightening what the query already asks), `start`/`end` (Unix seconds) and `limit`.
fn bound(
    q: &mut TraceQuery,
    p: &Params,
    st: &QueryState,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    let (min, max) = (p.duration(&["minDuration"])?, p.duration(&["maxDuration"])?);
    check_bounds(min, max, "minDuration/maxDuration")?;
    if let Some(min) = min {
        let min = min.as_nanos() as u64;
        q.min_trace_duration_nano = Some(q.min_trace_duration_nano.map_or(min, |m| m.max(min)));
    }
    if let Some(max) = max {
        let max = max.as_nanos() as u64;
        q.max_trace_duration_nano = Some(q.max_trace_duration_nano.map_or(max, |m| m.min(max)));
    }
    let secs = |name: &str| -> Result<Option<u64>, ApiError> {
        Ok(p.u64(&[name])?.map(|s| s.saturating_mul(1_000_000_000)))
    };
    let range = st.limits.range(secs("start")?, secs("end")?, None, warnings)?;
    q.start_unix_nano = range.start;
    q.end_unix_nano = range.end;
    q.limit = st.limits.limit(p.u64(&["limit"])?, warnings)?;
    Ok(())
}

pub(crate) async fn search(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, TempoError> {
    let p = Params::parse(raw.as_deref())?;
    let mut warnings = Vec::new();
    if let Some(text) = p.get(&["q"]).filter(|q| !q.trim().is_empty()) {
        return Ok(Json(traceql_search(&st, &p, text, &mut warnings).await?).into_response());
    }
    let mut q = tempo_query(&p, &st, &mut warnings)?;
    let filter = crate::integrity::take_tag(&mut q)?;
    let page = crate::integrity::search(&st, q, filter).await?;
    let traces: Vec<Value> = page.traces.iter().map(summary_json).collect();
    Ok(Json(
        json!({ "traces": traces, "metrics": { "inspectedTraces": traces.len() }, "warnings": warnings }),
    )
    .into_response())
}

/// A search result's trace-level fields, as Tempo writes them.
fn summary_json(t: &TraceSummary) -> Value {
    let stats: serde_json::Map<String, Value> = t
        .services
        .iter()
        .map(|s| (s.name.clone(), json!({ "spanCount": s.span_count, "errorCount": s.error_count })))
        .collect();
    json!({
        "traceID": t.trace_id.to_hex(),
        "rootServiceName": t.root_service,
        "rootTraceName": t.root_name,
        "startTimeUnixNano": t.start_unix_nano.to_string(),
        "durationMs": t.duration_nano / 1_000_000,
        "serviceStats": stats,
    })
}

/// Traces a TraceQL search reads from the store for one answer at most: past this the
/// answer says how many it inspected and that the search stopped early.
pub const TRACEQL_SCAN_BUDGET: usize = 5_000;
/// Pages of candidates one TraceQL search asks the store for at most (each page is a search
/// of its own, with its own budget).
const MAX_ROUNDS: usize = 100;
/// Matching traces whose spans a tag listing with a `q=` filter reads for names and values.
const TAG_TRACES: usize = 100;
/// Spans shown per spanset when `spss` is not given (Tempo's default).
const DEFAULT_SPSS: usize = 3;
/// Most spans shown per spanset.
const MAX_SPSS: usize = 1_000;

/// A TraceQL search (`q=`), see [`run_traceql`].
async fn traceql_search(
    st: &QueryState,
    p: &Params,
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    let query = parse_query(text)?;
    let mut q = TraceQuery::default();
    query.prefilter(&mut q);
    bound(&mut q, p, st, warnings)?;
    let spss = match p.u64(&["spss"])? {
        None | Some(0) => DEFAULT_SPSS,
        Some(n) if n > MAX_SPSS as u64 => {
            warnings.push(format!("spss {n} reduced to {MAX_SPSS} spans per spanset"));
            MAX_SPSS
        }
        Some(n) => n as usize,
    };
    let fields = query.result_fields();
    let mut out = Vec::new();
    let mut run = run_traceql(st, &query, q, |m| out.push(traceql_result(m, &fields, spss))).await?;
    warnings.append(&mut run.store_warnings);
    if run.stopped_early {
        warnings.push(format!(
            "the search stopped after inspecting {} traces; narrow the time range or the query",
            run.inspected_traces
        ));
    }
    Ok(json!({
        "traces": out,
        "metrics": {
            "inspectedTraces": run.inspected_traces,
            "inspectedSpans": run.inspected_spans.to_string(),
        },
        "warnings": warnings,
    }))
}

fn parse_query(text: &str) -> Result<traceql::Query, ApiError> {
    traceql::parse(text).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// What a TraceQL run read.
struct TraceqlRun {
    inspected_traces: usize,
    inspected_spans: usize,
    /// The scan budget ended the run before `limit` matches or the end of the range.
    stopped_early: bool,
    /// What the store said of its searches (a search it ended early says so here).
    store_warnings: Vec<String>,
}

/// Runs a TraceQL query: the store is asked for the traces that meet what every match
/// needs (`q`, with the query's prefilter and the range), newest first, and the whole
/// query is evaluated on each; `on_match` sees each matching trace until `q.limit` matched
/// or [`TRACEQL_SCAN_BUDGET`] traces were read.
async fn run_traceql(
    st: &QueryState,
    query: &traceql::Query,
    mut q: TraceQuery,
    mut on_match: impl FnMut(&traceql::Matched<'_>),
) -> Result<TraceqlRun, ApiError> {
    let limit = q.limit;
    let uses_integrity = query.uses_integrity();
    if uses_integrity {
        crate::integrity::analyser(st)?;
    }
    // An `integrity = "…"` every match needs: the candidates are the analysed traces with
    // such findings, as an `integrity=` search finds them.
    let integrity_filter = query.integrity_filter();
    // Pages of candidates big enough that a selective query needs few round trips, small
    // enough that one page's traces stay well inside the read budget.
    q.limit = limit.clamp(20, 100);
    let mut run = TraceqlRun {
        inspected_traces: 0,
        inspected_spans: 0,
        stopped_early: false,
        store_warnings: Vec::new(),
    };
    let (mut matched, mut rounds) = (0, 0);
    loop {
        let mut page = match integrity_filter {
            Some(f) => crate::integrity::search(st, q.clone(), Some(f)).await?,
            None => st.reader.find_traces(q.clone()).await?,
        };
        for w in page.warnings.drain(..) {
            if !run.store_warnings.contains(&w) {
                run.store_warnings.push(w);
            }
        }
        let ids: Vec<TraceId> = page.traces.iter().map(|t| t.trace_id).collect();
        for trace in st.reader.get_traces(ids).await? {
            run.inspected_traces += 1;
            run.inspected_spans += trace.spans.len();
            let integrity = if uses_integrity { crate::integrity::of_trace(st, &trace).await } else { None };
            if let Some(m) = query.evaluate_with(&trace, integrity.as_ref()) {
                on_match(&m);
                matched += 1;
                if matched == limit {
                    return Ok(run);
                }
            }
        }
        rounds += 1;
        match page.next_cursor {
            // A page that came back empty with a cursor is a search that spent its own
            // budget (an integrity search's): stop rather than page through the index.
            Some(c)
                if run.inspected_traces < TRACEQL_SCAN_BUDGET
                    && rounds < MAX_ROUNDS
                    && !page.traces.is_empty() =>
            {
                q.cursor = Some(c)
            }
            Some(_) => {
                run.stopped_early = true;
                return Ok(run);
            }
            None => return Ok(run),
        }
    }
}

/// One trace of a TraceQL answer, in Tempo's shape: its summary and one spanset (as both
/// `spanSet` and `spanSets`, for older and newer Grafana versions).
fn traceql_result(m: &traceql::Matched<'_>, fields: &[traceql::Field], spss: usize) -> Value {
    let t = m.summary();
    let service = traceql::Field::Attr(traceql::Scope::Resource, "service.name".into());
    let spans: Vec<Value> = m
        .spans
        .iter()
        .take(spss)
        .map(|s| {
            let mut attributes: Vec<Value> = m.attribute(s, &service).into_iter().collect();
            attributes.extend(
                fields
                    .iter()
                    .filter(|f| {
                        **f != service && !matches!(f, traceql::Field::Attr(_, k) if k == "service.name")
                    })
                    .filter_map(|f| m.attribute(s, f)),
            );
            json!({
                "spanID": s.span.span.span_id.to_hex(),
                "name": s.span.span.name,
                "startTimeUnixNano": s.span.span.start_time_unix_nano.to_string(),
                "durationNanos": s.span.span.duration_nanos().to_string(),
                "attributes": attributes,
            })
        })
        .collect();
    let spanset = json!({ "spans": spans, "matched": m.spans.len() });
    let mut v = summary_json(t);
    v["spanSet"] = spanset.clone();
    v["spanSets"] = json!([spanset]);
    v
}

/// Tag names: the intrinsic `service.name`, `name`, `status` and every indexed attribute.
async fn tag_names(st: &QueryState) -> Result<Vec<String>, ApiError> {
    let mut names: Vec<String> =
        st.reader.attributes(None, strand_core::TimeRange::ALL).await?.into_iter().map(|(k, _)| k).collect();
    names.extend(["name".to_owned(), "status".to_owned(), "service.name".to_owned()]);
    names.sort();
    names.dedup();
    Ok(names)
}

pub(crate) async fn search_tags(State(st): State<QueryState>) -> Result<Response, TempoError> {
    Ok(Json(json!({ "tagNames": tag_names(&st).await? })).into_response())
}

/// The `q=` filter of a tag request, when it filters anything (`{}` and `{ }` do not), run
/// over the request's range: the spans of up to [`TAG_TRACES`] matching traces.
async fn tag_filter(
    st: &QueryState,
    p: &Params,
    mut on_span: impl FnMut(&traceql::Matched<'_>, &traceql::SpanMatch<'_>),
) -> Result<bool, ApiError> {
    let Some(text) = p.get(&["q"]).filter(|q| !q.chars().all(|c| c.is_whitespace() || c == '{' || c == '}'))
    else {
        return Ok(false);
    };
    let query = parse_query(text)?;
    let mut q = TraceQuery::default();
    query.prefilter(&mut q);
    let mut warnings = Vec::new();
    bound(&mut q, p, st, &mut warnings)?;
    q.limit = TAG_TRACES;
    run_traceql(st, &query, q, |m| m.spans.iter().for_each(|s| on_span(m, s))).await?;
    Ok(true)
}

pub(crate) async fn search_tags_v2(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, TempoError> {
    let p = Params::parse(raw.as_deref())?;
    let intrinsic = [
        "duration",
        "kind",
        "name",
        "status",
        "statusMessage",
        "rootName",
        "rootServiceName",
        "traceDuration",
    ];
    let (mut resource, mut span) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    let filtered = tag_filter(&st, &p, |_, s| {
        resource.extend(s.span.resource.attributes.iter().map(|kv| kv.key.clone()));
        span.extend(s.span.span.attributes.iter().map(|kv| kv.key.clone()));
    })
    .await?;
    let mut scopes = if filtered {
        vec![json!({ "name": "resource", "tags": resource }), json!({ "name": "span", "tags": span })]
    } else {
        // The index does not keep an attribute's scope: every key is listed as a span's.
        let names: Vec<String> =
            tag_names(&st).await?.into_iter().filter(|n| n != "name" && n != "status").collect();
        vec![json!({ "name": "span", "tags": names })]
    };
    scopes.push(json!({ "name": "intrinsic", "tags": intrinsic }));
    if let Some(scope) = p.get(&["scope"]).filter(|s| *s != "all" && !s.is_empty()) {
        if !matches!(scope, "resource" | "span" | "intrinsic") {
            return Err(ApiError::BadRequest(format!(
                "parameter `scope`: unknown scope `{scope}` (resource, span, intrinsic or all)"
            ))
            .into());
        }
        scopes.retain(|s| s["name"] == scope);
    }
    Ok(Json(json!({ "scopes": scopes })).into_response())
}

async fn tag_values(st: &QueryState, name: &str) -> Result<Vec<String>, ApiError> {
    let name = name.strip_prefix("span.").or_else(|| name.strip_prefix("resource.")).unwrap_or(name);
    let mut values: Vec<String> = match name {
        "service.name" => st.reader.services(strand_core::TimeRange::ALL).await?,
        "status" => vec!["error".into(), "ok".into(), "unset".into()],
        "name" => {
            let mut out = Vec::new();
            for s in st.reader.services(strand_core::TimeRange::ALL).await? {
                out.extend(
                    st.reader.operations(s, strand_core::TimeRange::ALL).await?.into_iter().map(|o| o.name),
                );
            }
            out
        }
        key => st
            .reader
            .attributes(None, strand_core::TimeRange::ALL)
            .await?
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect(),
    };
    values.sort();
    values.dedup();
    Ok(values)
}

pub(crate) async fn search_tag_values(
    State(st): State<QueryState>,
    Path(name): Path<String>,
) -> Result<Response, TempoError> {
    Ok(Json(json!({ "tagValues": tag_values(&st, &name).await? })).into_response())
}

pub(crate) async fn search_tag_values_v2(
    State(st): State<QueryState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, TempoError> {
    let p = Params::parse(raw.as_deref())?;
    let field =
        traceql::parse_field(&name).map_err(|e| ApiError::BadRequest(format!("tag `{name}`: {e}")))?;
    let mut typed = std::collections::BTreeSet::new();
    let filtered = tag_filter(&st, &p, |m, s| typed.extend(m.typed_value(s, &field))).await?;
    let values: Vec<Value> = if filtered {
        typed.into_iter().map(|(t, v)| json!({ "type": t, "value": v })).collect()
    } else {
        tag_values(&st, &name).await?.into_iter().map(|v| json!({ "type": "string", "value": v })).collect()
    };
    Ok(Json(json!({ "tagValues": values })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_pairs() {
        assert_eq!(
            parse_logfmt(r#"service.name=api  http.route="/a b" q="x\"y""#),
            Ok(vec![
                ("service.name".into(), "api".into()),
                ("http.route".into(), "/a b".into()),
                ("q".into(), "x\"y".into())
            ])
        );
        assert!(parse_logfmt("novalue").is_err());
        assert!(parse_logfmt("k=\"open").is_err());
        assert_eq!(parse_logfmt("  "), Ok(vec![]));
    }

    #[test]
    fn hex_ids_become_base64() {
        let mut v = json!({ "spans": [{ "traceId": "0102", "spanId": "ff", "name": "0102" }] });
        ids_to_base64(&mut v);
        assert_eq!(v, json!({ "spans": [{ "traceId": "AQI=", "spanId": "/w==", "name": "0102" }] }));
    }
}
