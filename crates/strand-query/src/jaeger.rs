//! Jaeger query APIs: v1 JSON (what Grafana's Jaeger data source and the Jaeger UI call)
//! and `api_v3` (OTLP/JSON results).
//!
//! v1 conversion follows the OpenTelemetry → Jaeger translation: span tags are the scope
//! name/version (`otel.scope.name`, `otel.scope.version`), the span attributes, then
//! `span.kind`, `otel.status_code`, `error=true`, `otel.status_description` and
//! `w3c.tracestate`; the process is the service name plus the other resource attributes;
//! the parent is a `CHILD_OF` reference and links are `FOLLOWS_FROM` (or `CHILD_OF` when
//! their `opentracing.ref_type` attribute says `child_of`, as Jaeger's own translator
//! does); events are `logs` whose first field is `event` = the event name. Times are
//! microseconds. Spans come in start-time order; processes are numbered `p1, p2, ...` in
//! order of first use.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};
use strand_core::{
    AnyValue, AttrFilter, AttrScope, Integrity, KeyValue, SpanKind, StatusCode as OtelStatus, StatusFilter,
    StoredLog, TimeRange, Trace, TraceId, TraceQuery,
};

use crate::native::parse_kind;
use crate::params::{Params, check_bounds, now_nanos, parse_rfc3339};
use crate::{ApiError, ErrorShape, QueryState, Shaped, parse_trace_id};

const MAX_SAFE_INT: i64 = 1 << 53;

/// Jaeger v1 errors: the envelope with `errors`, and the HTTP status.
pub(crate) struct JaegerShape;

pub(crate) type JaegerError = Shaped<JaegerShape>;

impl ErrorShape for JaegerShape {
    fn response(status: StatusCode, msg: String) -> Response {
        let body = json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{ "code": status.as_u16(), "msg": msg }],
        });
        (status, Json(body)).into_response()
    }
}

fn envelope(data: Value, total: usize, warnings: Vec<String>) -> Response {
    let mut body = json!({ "data": data, "total": total, "limit": 0, "offset": 0, "errors": null });
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    Json(body).into_response()
}

/// Jaeger's trace id text: 16 hex digits when the high half is zero, else 32.
pub fn jaeger_trace_id(id: &TraceId) -> String {
    let hex = id.to_hex();
    if id.0[..8].iter().all(|b| *b == 0) { hex[16..].to_owned() } else { hex }
}

/// A Jaeger id from a request: 1 to 32 hex digits (left-padded), as Jaeger accepts them.
fn parse_jaeger_trace_id(raw: &str) -> Result<TraceId, ApiError> {
    if raw.len() < 32 && !raw.is_empty() && raw.chars().all(|c| c.is_ascii_hexdigit()) {
        return parse_trace_id(&format!("{raw:0>32}"));
    }
    parse_trace_id(raw)
}

fn tag(key: &str, v: &AnyValue) -> Value {
    let (ty, value) = match v {
        AnyValue::String(s) => ("string", json!(s)),
        AnyValue::Bool(b) => ("bool", json!(b)),
        AnyValue::Int(i) if (-MAX_SAFE_INT..=MAX_SAFE_INT).contains(i) => ("int64", json!(i)),
        AnyValue::Int(i) => ("int64", json!(i.to_string())),
        AnyValue::Double(d) => ("float64", json!(d)),
        AnyValue::Bytes(b) => ("binary", json!(base64::engine::general_purpose::STANDARD.encode(b))),
        AnyValue::Empty => ("string", json!("")),
        other => ("string", json!(any_to_json(other).to_string())),
    };
    json!({ "key": key, "type": ty, "value": value })
}

fn any_to_json(v: &AnyValue) -> Value {
    match v {
        AnyValue::Empty => Value::Null,
        AnyValue::String(s) => json!(s),
        AnyValue::Bool(b) => json!(b),
        AnyValue::Int(i) => json!(i),
        AnyValue::Double(d) => json!(d),
        AnyValue::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        AnyValue::Array(a) => Value::Array(a.iter().map(any_to_json).collect()),
        AnyValue::KvList(kvs) => Value::Object(
            kvs.iter().map(|kv| (kv.key.clone(), any_to_json(&kv.value))).collect::<Map<_, _>>(),
        ),
    }
}

fn tags(attrs: &[KeyValue]) -> Vec<Value> {
    attrs.iter().map(|kv| tag(&kv.key, &kv.value)).collect()
}

fn kind_tag(kind: SpanKind) -> Option<&'static str> {
    match kind {
        SpanKind::Unspecified => None,
        k => Some(k.as_str()),
    }
}

/// A trace in Jaeger v1 UI JSON.
pub fn trace_to_jaeger(trace: &Trace) -> Value {
    trace_to_jaeger_with(trace, None, &[])
}

/// A trace in Jaeger v1 UI JSON with its chain-integrity findings: each finding is a
/// `warnings` entry of every span it names (the Jaeger UI shows span warnings), and the
/// other half of a break a `FOLLOWS_FROM` reference of the span at the break. Log records
/// that carry a span id are among that span's `logs` (fields `message`, `level`, then
/// their attributes), beside its events, in time order.
pub fn trace_to_jaeger_with(trace: &Trace, integrity: Option<&Integrity>, records: &[StoredLog]) -> Value {
    let tid = jaeger_trace_id(&trace.trace_id);
    let findings = integrity.map_or(&[][..], |i| &i.findings[..]);
    let mut processes: Vec<(Value, String)> = Vec::new();
    let mut spans = Vec::with_capacity(trace.spans.len());
    let mut records_of: std::collections::HashMap<strand_core::SpanId, Vec<&StoredLog>> =
        std::collections::HashMap::new();
    for l in records {
        if let Some(s) = l.record.span_id {
            records_of.entry(s).or_default().push(l);
        }
    }
    let span_ids: std::collections::HashSet<strand_core::SpanId> =
        trace.spans.iter().map(|s| s.span.span_id).collect();
    for s in &trace.spans {
        let resource = &s.resource;
        let process = json!({
            "serviceName": resource.service_name(),
            "tags": tags(&resource.attributes.iter().filter(|kv| kv.key != "service.name").cloned().collect::<Vec<_>>()),
        });
        let pid = match processes.iter().find(|(p, _)| *p == process) {
            Some((_, id)) => id.clone(),
            None => {
                let id = format!("p{}", processes.len() + 1);
                processes.push((process, id.clone()));
                id
            }
        };
        let span = &s.span;
        let mut t = Vec::new();
        if !s.scope.name.is_empty() {
            t.push(tag("otel.scope.name", &AnyValue::String(s.scope.name.clone())));
        }
        if !s.scope.version.is_empty() {
            t.push(tag("otel.scope.version", &AnyValue::String(s.scope.version.clone())));
        }
        t.extend(tags(&span.attributes));
        if let Some(k) = kind_tag(span.kind) {
            t.push(tag("span.kind", &AnyValue::String(k.into())));
        }
        match span.status.code {
            OtelStatus::Ok => t.push(tag("otel.status_code", &AnyValue::String("OK".into()))),
            OtelStatus::Error => {
                t.push(tag("otel.status_code", &AnyValue::String("ERROR".into())));
                // The Jaeger UI marks a span red by `error` = true: added unless an `error`
                // attribute (a Zipkin span's message) already says so.
                let says_true =
                    matches!(strand_core::find_attr(&span.attributes, "error"), Some(AnyValue::Bool(true)))
                        || strand_core::find_attr(&span.attributes, "error").and_then(AnyValue::as_str)
                            == Some("true");
                if !says_true {
                    t.push(tag("error", &AnyValue::Bool(true)));
                }
            }
            OtelStatus::Unset => {}
        }
        if !span.status.message.is_empty() {
            t.push(tag("otel.status_description", &AnyValue::String(span.status.message.clone())));
        }
        if !span.trace_state.is_empty() {
            t.push(tag("w3c.tracestate", &AnyValue::String(span.trace_state.clone())));
        }
        let mut refs = Vec::new();
        if let Some(p) = span.parent_span_id {
            refs.push(json!({ "refType": "CHILD_OF", "traceID": tid, "spanID": p.to_hex() }));
        }
        for l in &span.links {
            // A link that came in as a Jaeger CHILD_OF reference goes back out as one.
            let child_of = strand_core::find_attr(&l.attributes, "opentracing.ref_type")
                .is_some_and(|v| v.as_str() == Some("child_of"));
            let ref_type = if child_of { "CHILD_OF" } else { "FOLLOWS_FROM" };
            refs.push(json!({ "refType": ref_type, "traceID": jaeger_trace_id(&l.trace_id), "spanID": l.span_id.to_hex() }));
        }
        let mut warnings = Vec::new();
        if let Some(p) = span.parent_span_id.filter(|p| !span_ids.contains(p)) {
            // As Jaeger's clock-skew adjuster says of a parent the trace does not hold.
            warnings.push(Value::String(format!(
                "invalid parent span IDs={}; skipping clock skew adjustment",
                p.to_hex()
            )));
        }
        for f in findings.iter().filter(|f| f.span_ids.contains(&span.span_id)) {
            warnings.push(Value::String(format!("chain integrity: {}: {}", f.kind, f.message)));
            if let (Some(t), Some(sid)) = (f.related_trace_id, f.related_span_id)
                && f.span_ids.first() == Some(&span.span_id)
            {
                refs.push(json!({ "refType": "FOLLOWS_FROM", "traceID": jaeger_trace_id(&t), "spanID": sid.to_hex() }));
            }
        }
        let mut logs: Vec<(u64, Value)> = span
            .events
            .iter()
            .map(|e| {
                let mut fields = vec![tag("event", &AnyValue::String(e.name.clone()))];
                fields.extend(tags(&e.attributes));
                (e.time_unix_nano, json!({ "timestamp": e.time_unix_nano / 1000, "fields": fields }))
            })
            .collect();
        for l in records_of.get(&span.span_id).into_iter().flatten() {
            let r = &l.record;
            let level = if r.severity_text.is_empty() {
                strand_core::logs::severity_name(r.severity_number).to_owned()
            } else {
                r.severity_text.clone()
            };
            let mut fields = vec![
                tag("message", &AnyValue::String(r.body_text())),
                tag("level", &AnyValue::String(level)),
            ];
            fields.extend(tags(&r.attributes));
            let t = r.effective_time();
            logs.push((t, json!({ "timestamp": t / 1000, "fields": fields })));
        }
        logs.sort_by_key(|(t, _)| *t);
        let logs: Vec<Value> = logs.into_iter().map(|(_, v)| v).collect();
        spans.push(json!({
            "traceID": tid,
            "spanID": span.span_id.to_hex(),
            "operationName": span.name,
            "references": refs,
            "startTime": span.start_time_unix_nano / 1000,
            "duration": span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) / 1000,
            "tags": t,
            "logs": logs,
            "processID": pid,
            "warnings": if warnings.is_empty() { Value::Null } else { Value::Array(warnings) },
        }));
    }
    let processes: Map<String, Value> = processes.into_iter().map(|(p, id)| (id, p)).collect();
    json!({ "traceID": tid, "spans": spans, "processes": processes, "warnings": null })
}

/// `/api/traces` and `/api/traces?traceID=...`.
pub(crate) async fn find_traces(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, JaegerError> {
    let p = Params::parse(raw.as_deref())?;
    let ids = p.all("traceID");
    if ids.len() > st.limits.max_limit {
        return Err(ApiError::BadRequest(format!(
            "parameter `traceID`: {} ids, at most {} (query.max_search_limit)",
            ids.len(),
            st.limits.max_limit
        ))
        .into());
    }
    if !ids.is_empty() {
        // As Jaeger answers a multi-get: 200 with the traces found and, for each id not
        // found, an entry in `errors` (also when none is found).
        let ids = ids.into_iter().map(parse_jaeger_trace_id).collect::<Result<Vec<_>, _>>()?;
        let traces = st.reader.get_traces(ids.clone()).await?;
        let missing: Vec<Value> = ids
            .iter()
            .filter(|id| !traces.iter().any(|t| t.trace_id == **id))
            .map(|id| json!({ "code": 404, "msg": "trace not found", "traceID": jaeger_trace_id(id) }))
            .collect();
        let data = jaeger_traces(&st, traces).await;
        let errors = if missing.is_empty() { Value::Null } else { Value::Array(missing) };
        let body = json!({ "data": data, "total": 0, "limit": 0, "offset": 0, "errors": errors });
        return Ok(Json(body).into_response());
    }
    let mut warnings = Vec::new();
    let mut q = v1_query(&p, &st, &mut warnings)?;
    let filter = crate::integrity::take_tag(&mut q)?;
    let mut page = crate::integrity::search(&st, q, filter).await?;
    warnings.append(&mut page.warnings);
    let ids = page.traces.iter().map(|s| s.trace_id).collect();
    let data = jaeger_traces(&st, st.reader.get_traces(ids).await?).await;
    Ok(envelope(Value::Array(data), 0, warnings))
}

/// Largest OTLP/JSON file `POST /api/transform` takes (as OTLP/HTTP's default request size).
pub const MAX_TRANSFORM_BYTES: usize = 16 << 20;

/// `POST /api/transform`: the Jaeger UI's upload of an OTLP/JSON file (`TracesData` /
/// `ExportTraceServiceRequest`), answered as Jaeger UI traces without storing anything.
/// Spans with invalid ids are left out and counted in `warnings`.
pub(crate) async fn transform(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, JaegerError> {
    let body = match body {
        Ok(b) => b,
        // Over the size limit (413) or unreadable: said in Jaeger's envelope.
        Err(e) => {
            let msg = match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    format!("the OTLP/JSON file is over {MAX_TRANSFORM_BYTES} bytes")
                }
                _ => format!("cannot read the request body: {e}"),
            };
            return Ok(JaegerShape::response(e.status(), msg));
        }
    };
    let (batch, rejections) = strand_otlp::json_ids::traces_from_json(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid OTLP/JSON: {e}")))?;
    let mut by_trace: std::collections::BTreeMap<TraceId, Vec<strand_core::StoredSpan>> = Default::default();
    for s in batch.into_stored() {
        by_trace.entry(s.span.trace_id).or_default().push(s);
    }
    let data: Vec<Value> = by_trace
        .into_iter()
        .map(|(id, spans)| trace_to_jaeger_with(&Trace::from_spans(id, spans), None, &[]))
        .collect();
    let warnings = if rejections.count > 0 {
        vec![format!("{} spans left out: {}", rejections.count, rejections.message())]
    } else {
        Vec::new()
    };
    Ok(envelope(Value::Array(data), 0, warnings))
}

/// Traces in Jaeger v1 UI JSON, each with its chain-integrity findings.
/// A trace over `query.max_trace_spans` is cut to its earliest spans, with a trace-level
/// warning saying so (the Jaeger UI shows it).
async fn jaeger_traces(st: &QueryState, traces: Vec<Trace>) -> Vec<Value> {
    let mut out = Vec::with_capacity(traces.len());
    for mut t in traces {
        let integrity = crate::integrity::of_trace(st, &t).await;
        let truncated = st.limits.cut_trace(&mut t);
        let logs = st.logs_of(t.trace_id).await.unwrap_or_default();
        let mut json = trace_to_jaeger_with(&t, integrity.as_ref(), &logs);
        if let Some(cut) = truncated {
            json["warnings"] = json!([cut.message()]);
        }
        out.push(json);
    }
    out
}

/// Maps Jaeger tag filters onto the span model: `error`, `span.kind` and
/// `otel.status_code` are span fields here, not attributes.
fn apply_tag(q: &mut TraceQuery, key: &str, value: &str) -> Result<(), ApiError> {
    match key {
        "error" if value == "true" => q.status = Some(StatusFilter::Error),
        "error" if value == "false" => q.status = Some(StatusFilter::Ok),
        "span.kind" => {
            q.kind = Some(parse_kind(value).map_err(|e| ApiError::BadRequest(format!("tag span.kind: {e}")))?)
        }
        "otel.status_code" => {
            q.status = Some(match value {
                "ERROR" | "error" => StatusFilter::Error,
                "OK" | "ok" => StatusFilter::Ok,
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "tag otel.status_code: unknown status `{other}`"
                    )));
                }
            })
        }
        _ => q.attributes.push(AttrFilter { scope: AttrScope::Any, key: key.into(), value: value.into() }),
    }
    Ok(())
}

/// Applies a parameter holding a JSON object of tags (`{"http.status_code": 500}`).
fn apply_json_tags(q: &mut TraceQuery, p: &Params, name: &str) -> Result<(), ApiError> {
    let Some(raw) = p.get(&[name]) else { return Ok(()) };
    let obj: Map<String, Value> = serde_json::from_str(raw)
        .map_err(|e| ApiError::BadRequest(format!("parameter `{name}`: not a JSON object of tags: {e}")))?;
    for (k, v) in &obj {
        apply_tag(q, k, &json_text(v))?;
    }
    Ok(())
}

fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn v1_query(p: &Params, st: &QueryState, warnings: &mut Vec<String>) -> Result<TraceQuery, ApiError> {
    let service = p
        .get(&["service"])
        .ok_or_else(|| ApiError::BadRequest("parameter `service` is required".into()))?
        .to_owned();
    let mut q = TraceQuery { service: Some(service), ..TraceQuery::default() };
    q.operation = p.get(&["operation"]).map(str::to_owned);
    apply_json_tags(&mut q, p, "tags")?;
    for raw in p.all("tag") {
        let (k, v) = raw.split_once(':').ok_or_else(|| {
            ApiError::BadRequest(format!("parameter `tag`: `{raw}` is not of the form key:value"))
        })?;
        apply_tag(&mut q, k, v)?;
    }
    let (min, max) = (p.duration(&["minDuration"])?, p.duration(&["maxDuration"])?);
    check_bounds(min, max, "minDuration/maxDuration")?;
    q.min_span_duration_nano = min.map(|d| d.as_nanos() as u64);
    q.max_span_duration_nano = max.map(|d| d.as_nanos() as u64);
    let micros = |names: &[&str]| -> Result<Option<u64>, ApiError> {
        Ok(p.u64(names)?.map(|us| us.saturating_mul(1000)))
    };
    let range = st.limits.range(micros(&["start"])?, micros(&["end"])?, lookback(p)?, warnings)?;
    q.start_unix_nano = range.start;
    q.end_unix_nano = range.end;
    q.limit = st.limits.limit(p.u64(&["limit"])?, warnings)?;
    Ok(q)
}

/// The Jaeger UI's `lookback` (`1h`, `2d`), used when no `start` is given; it sends
/// `custom` next to explicit `start`/`end`.
fn lookback(p: &Params) -> Result<Option<Duration>, ApiError> {
    match p.get(&["lookback"]) {
        None | Some("custom") => Ok(None),
        Some(v) => {
            let days = v.strip_suffix('d').and_then(|n| n.parse::<u64>().ok());
            match days {
                Some(d) => Ok(Some(Duration::from_secs(d.saturating_mul(86_400)))),
                None => p.duration(&["lookback"]),
            }
        }
    }
}

fn all_time() -> TimeRange {
    TimeRange::ALL
}

pub(crate) async fn services(State(st): State<QueryState>) -> Result<Response, JaegerError> {
    let s = st.reader.services(all_time()).await?;
    let n = s.len();
    Ok(envelope(json!(s), n, Vec::new()))
}

pub(crate) async fn service_operations(
    State(st): State<QueryState>,
    Path(service): Path<String>,
) -> Result<Response, JaegerError> {
    let mut names: Vec<String> =
        st.reader.operations(service, all_time()).await?.into_iter().map(|o| o.name).collect();
    names.dedup();
    let n = names.len();
    Ok(envelope(json!(names), n, Vec::new()))
}

/// `[{"name", "spanKind"}]` of the service named by `service_keys`, optionally of one kind.
async fn operations_json(
    st: &QueryState,
    p: &Params,
    service_keys: &[&str],
    kind_keys: &[&str],
) -> Result<Vec<Value>, ApiError> {
    let service = p
        .get(service_keys)
        .ok_or_else(|| ApiError::BadRequest(format!("parameter `{}` is required", service_keys[0])))?
        .to_owned();
    let kind = p.parse_with(kind_keys, "a span kind", parse_kind)?;
    Ok(st
        .reader
        .operations(service, all_time())
        .await?
        .into_iter()
        .filter(|o| kind.is_none_or(|k| o.span_kind == k))
        .map(|o| json!({ "name": o.name, "spanKind": kind_tag(o.span_kind).unwrap_or("") }))
        .collect())
}

pub(crate) async fn operations(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, JaegerError> {
    let p = Params::parse(raw.as_deref())?;
    let ops = operations_json(&st, &p, &["service"], &["spanKind"]).await?;
    let n = ops.len();
    Ok(envelope(Value::Array(ops), n, Vec::new()))
}

pub(crate) async fn get_trace(
    State(st): State<QueryState>,
    Path(raw): Path<String>,
) -> Result<Response, JaegerError> {
    let id = parse_jaeger_trace_id(&raw)?;
    let trace = st.reader.get_trace(id).await?.ok_or_else(|| ApiError::NotFound("trace not found".into()))?;
    Ok(envelope(Value::Array(jaeger_traces(&st, vec![trace]).await), 0, Vec::new()))
}

pub(crate) async fn dependencies(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, JaegerError> {
    let p = Params::parse(raw.as_deref())?;
    let end_ms = p.u64(&["endTs"])?.unwrap_or(now_nanos() / 1_000_000);
    let lookback_ms = p.u64(&["lookback"])?.unwrap_or(86_400_000);
    let mut warnings = Vec::new();
    let range = st.limits.range(
        Some(end_ms.saturating_sub(lookback_ms).saturating_mul(1_000_000)),
        Some(end_ms.saturating_mul(1_000_000)),
        None,
        &mut warnings,
    )?;
    let edges =
        st.reader.dependencies(TimeRange { start_unix_nano: range.start, end_unix_nano: range.end }).await?;
    let data: Vec<Value> = edges
        .iter()
        .map(|e| json!({ "parent": e.parent, "child": e.child, "callCount": e.call_count }))
        .collect();
    let n = data.len();
    Ok(envelope(Value::Array(data), n, warnings))
}

// ---------------------------------------------------------------------------------------
// api_v3

/// api_v3 errors, shaped as Jaeger's HTTP gateway writes them.
pub(crate) struct V3Shape;

pub(crate) type V3Error = Shaped<V3Shape>;

impl ErrorShape for V3Shape {
    fn response(status: StatusCode, msg: String) -> Response {
        (status, Json(json!({ "error": { "httpCode": status.as_u16(), "message": msg } }))).into_response()
    }
}

fn otlp_result(traces: &[Trace]) -> Response {
    let mut resource_spans = Vec::new();
    for t in traces {
        resource_spans.extend(strand_otlp::to_resource_spans(&t.to_batch()));
    }
    Json(json!({ "result": { "resourceSpans": resource_spans } })).into_response()
}

/// Traces as api_v3 answers them; those cut to `query.max_trace_spans` are named in the
/// `strand-trace-truncated` header (the OTLP shape has no place for it).
fn otlp_traces_result(st: &QueryState, mut traces: Vec<Trace>) -> Response {
    let cut: Vec<String> =
        traces.iter_mut().filter_map(|t| st.limits.cut_trace(t)).map(|c| c.header_value()).collect();
    let mut resp = otlp_result(&traces);
    if !cut.is_empty()
        && let Ok(v) = axum::http::HeaderValue::from_str(&cut.join(", "))
    {
        resp.headers_mut().insert(crate::params::TRUNCATED_HEADER, v);
    }
    resp
}

pub(crate) async fn v3_services(State(st): State<QueryState>) -> Result<Response, V3Error> {
    Ok(Json(json!({ "services": st.reader.services(all_time()).await? })).into_response())
}

pub(crate) async fn v3_operations(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, V3Error> {
    let p = Params::parse(raw.as_deref())?;
    let ops =
        operations_json(&st, &p, &["service", "query.service_name"], &["span_kind", "spanKind"]).await?;
    Ok(Json(json!({ "operations": ops })).into_response())
}

pub(crate) async fn v3_get_trace(
    State(st): State<QueryState>,
    Path(raw): Path<String>,
) -> Result<Response, V3Error> {
    let id = parse_trace_id(&raw)?;
    let trace =
        st.reader.get_trace(id).await?.ok_or_else(|| ApiError::NotFound(format!("trace {id} not found")))?;
    Ok(otlp_traces_result(&st, vec![trace]))
}

/// api_v3 `query.*` parameters, snake_case or camelCase.
fn v3_query(p: &Params, st: &QueryState, warnings: &mut Vec<String>) -> Result<TraceQuery, ApiError> {
    let get = |snake: &str, camel: &str| p.get(&[snake, camel]).map(str::to_owned);
    let mut q = TraceQuery {
        service: get("query.service_name", "query.serviceName"),
        operation: get("query.operation_name", "query.operationName"),
        ..TraceQuery::default()
    };
    apply_json_tags(&mut q, p, "query.attributes")?;
    let time = |names: &[&str]| p.parse_with(names, "an RFC 3339 time", parse_rfc3339);
    let start = time(&["query.start_time_min", "query.startTimeMin"])?;
    let end = time(&["query.start_time_max", "query.startTimeMax"])?;
    let range = st.limits.range(start, end, None, warnings)?;
    q.start_unix_nano = range.start;
    q.end_unix_nano = range.end;
    let (min, max) = (
        p.duration(&["query.duration_min", "query.durationMin"])?,
        p.duration(&["query.duration_max", "query.durationMax"])?,
    );
    check_bounds(min, max, "query.duration_min/query.duration_max")?;
    q.min_span_duration_nano = min.map(|d: Duration| d.as_nanos() as u64);
    q.max_span_duration_nano = max.map(|d: Duration| d.as_nanos() as u64);
    q.limit = st
        .limits
        .limit(p.u64(&["query.search_depth", "query.searchDepth", "query.num_traces"])?, warnings)?;
    Ok(q)
}

/// Runs an api_v3 search; the page's warnings include those of the parameters.
async fn v3_search(st: &QueryState, raw: Option<&str>) -> Result<strand_core::SearchPage, ApiError> {
    let p = Params::parse(raw)?;
    let mut warnings = Vec::new();
    let mut q = v3_query(&p, st, &mut warnings)?;
    let filter = crate::integrity::take_tag(&mut q)?;
    let mut page = crate::integrity::search(st, q, filter).await?;
    warnings.append(&mut page.warnings);
    page.warnings = warnings;
    Ok(page)
}

pub(crate) async fn v3_find_traces(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, V3Error> {
    let page = v3_search(&st, raw.as_deref()).await?;
    let traces = st.reader.get_traces(page.traces.iter().map(|s| s.trace_id).collect()).await?;
    Ok(otlp_traces_result(&st, traces))
}

pub(crate) async fn v3_summaries(
    State(st): State<QueryState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, V3Error> {
    let page = v3_search(&st, raw.as_deref()).await?;
    let summaries: Vec<crate::native::SummaryJson> = page.traces.iter().map(Into::into).collect();
    Ok(Json(json!({ "summaries": summaries, "warnings": page.warnings })).into_response())
}
