//! Jaeger's service performance monitoring API (the Jaeger UI's Monitor tab), answered from
//! the RED metrics Strand keeps of every span before sampling:
//!
//! - `GET /api/metrics/latencies?service=…&quantile=0.95` — the quantile of span durations
//!   (ms), from the duration histogram;
//! - `GET /api/metrics/calls?service=…` — spans per second;
//! - `GET /api/metrics/errors?service=…` — the share of spans with error status;
//! - `GET /api/metrics/minstep` — the finest step, in ms (a minute: the history's
//!   resolution).
//!
//! Parameters as Jaeger's: `service` (repeated, required), `groupByOperation`, `endTs` (ms,
//! default now), `lookback` (ms, default 1 h, at most the hour kept), `step` (ms, default and
//! minimum a minute), `ratePer` (ms, the window each point counts, default 10 min),
//! `spanKind` (repeated: `unspecified internal server client producer consumer`, default
//! `server`). Answers are Jaeger's `MetricFamily` JSON; errors its envelope.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use strand_core::SpanKind;
use strand_query::params::Params;
use strand_sampling::red::RedMetrics;
use strand_sampling::red::{RedSeries, SeriesQuery};

const MINUTE_MS: u64 = 60_000;
/// The history the RED metrics keep.
const MAX_LOOKBACK_MS: u64 = strand_sampling::red::HISTORY_MINUTES as u64 * MINUTE_MS;
/// Most points in one series.
const MAX_POINTS: u64 = 1_000;

/// A refusal: its status and message, answered in Jaeger's envelope.
type Refusal = (StatusCode, String);

fn refusal_response((status, msg): Refusal) -> Response {
    let body = json!({ "data": null, "total": 0, "limit": 0, "offset": 0,
                       "errors": [{ "code": status.as_u16(), "msg": msg }] });
    (status, Json(body)).into_response()
}

fn bad(msg: String) -> Refusal {
    (StatusCode::BAD_REQUEST, msg)
}

/// `GET /api/metrics/minstep`.
pub async fn min_step() -> Response {
    Json(json!({ "data": MINUTE_MS, "total": 0, "limit": 0, "offset": 0, "errors": null })).into_response()
}

/// `GET /api/metrics/{latencies|calls|errors}`.
pub async fn metrics(
    State(red): State<Arc<RedMetrics>>,
    Path(kind): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    match answer(&red, &kind, raw.as_deref(), strand_store::now_unix_nano()) {
        Ok(v) => Json(v).into_response(),
        Err(r) => refusal_response(r),
    }
}

fn answer(red: &RedMetrics, kind: &str, raw: Option<&str>, now: u64) -> Result<Value, Refusal> {
    let p = Params::parse(raw).map_err(|e| bad(e.parts().1))?;
    let u64_param = |name: &str| p.u64(&[name]).map_err(|e| bad(e.parts().1));
    let services: Vec<String> = p.all("service").into_iter().map(str::to_owned).collect();
    if services.is_empty() {
        return Err(bad("please provide at least one service name (parameter `service`)".into()));
    }
    let by_operation = match p.get(&["groupByOperation"]) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(bad(format!("parameter `groupByOperation`: `{other}` is not true or false")));
        }
    };
    let quantile = match (kind, p.get(&["quantile"])) {
        ("latencies", None) => return Err(bad("parameter `quantile` is required for latencies".into())),
        ("latencies", Some(q)) => match q.parse::<f64>() {
            Ok(q) if (0.0..=1.0).contains(&q) => q,
            _ => return Err(bad(format!("parameter `quantile`: `{q}` is not a number from 0 to 1"))),
        },
        ("calls" | "errors", _) => 0.5,
        (other, _) => {
            return Err((
                StatusCode::NOT_FOUND,
                format!("unknown metric `{other}`: latencies, calls, errors or minstep"),
            ));
        }
    };
    let now_ms = now / 1_000_000;
    // Points past now count what there is now.
    let end = u64_param("endTs")?.unwrap_or(now_ms).min(now_ms);
    let lookback = u64_param("lookback")?.unwrap_or(MAX_LOOKBACK_MS).min(MAX_LOOKBACK_MS);
    let step = u64_param("step")?.unwrap_or(MINUTE_MS).max(MINUTE_MS).max(lookback / MAX_POINTS);
    let rate_per = u64_param("ratePer")?.unwrap_or(10 * MINUTE_MS).max(MINUTE_MS);
    let kinds = p
        .all("spanKind")
        .into_iter()
        .map(|k| span_kind(k).ok_or_else(|| bad(format!("parameter `spanKind`: unknown kind `{k}`"))))
        .collect::<Result<Vec<_>, _>>()?;
    let kinds = if kinds.is_empty() { vec![SpanKind::Server] } else { kinds };
    let points: Vec<u64> =
        (0..=lookback / step).rev().map(|i| (end - (i * step).min(end)).saturating_mul(1_000_000)).collect();
    let q = SeriesQuery {
        services: &services,
        kinds: &kinds,
        by_operation,
        points: &points,
        window: rate_per.saturating_mul(1_000_000),
        quantile,
    };
    let series = red.series(&q, now);
    let window_secs = rate_per as f64 / 1e3;
    let value = |pt: &strand_sampling::red::RedPoint| -> Option<f64> {
        match kind {
            "latencies" => pt.quantile_seconds.map(|s| s * 1e3),
            "calls" => Some(pt.requests as f64 / window_secs),
            // No spans: no error rate (Prometheus' 0/0 is no sample either).
            _ => (pt.requests > 0).then(|| pt.errors as f64 / pt.requests as f64),
        }
    };
    let (name, help) = match kind {
        "latencies" => ("latencies", format!("{quantile}th quantile latency, grouped by service")),
        "calls" => ("call_rate", "calls/sec, grouped by service".to_owned()),
        _ => (
            "error_rate",
            "error rate, computed as a fraction of errors/sec over calls/sec, grouped by service".to_owned(),
        ),
    };
    let (name, help) = if by_operation {
        (format!("service_operation_{name}"), format!("{help} & operation"))
    } else {
        (format!("service_{name}"), help)
    };
    let metrics: Vec<Value> = series.iter().map(|s| metric_json(s, &value)).collect();
    Ok(json!({ "name": name, "type": "GAUGE", "help": help, "metrics": metrics }))
}

fn metric_json(s: &RedSeries, value: &dyn Fn(&strand_sampling::red::RedPoint) -> Option<f64>) -> Value {
    let mut labels = Vec::new();
    if let Some(op) = &s.operation {
        labels.push(json!({ "name": "operation", "value": op }));
    }
    labels.push(json!({ "name": "service_name", "value": s.service }));
    let points: Vec<Value> = s
        .points
        .iter()
        .filter_map(|pt| {
            let v = value(pt)?;
            let at = chrono::DateTime::from_timestamp_nanos(pt.at as i64)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            Some(json!({ "gaugeValue": { "doubleValue": v }, "timestamp": at }))
        })
        .collect();
    json!({ "labels": labels, "metricPoints": points })
}

fn span_kind(k: &str) -> Option<SpanKind> {
    Some(match k.to_ascii_lowercase().trim_start_matches("span_kind_") {
        "unspecified" => SpanKind::Unspecified,
        "internal" => SpanKind::Internal,
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        _ => return None,
    })
}
