//! `strand trace <id>`: fetch a trace from a running server and print it as a tree.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::{Context, bail};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use strand_core::{SpanId, StatusCode, StoredLog, StoredSpan, Trace, TraceId};

use crate::search_cmd::Remote;

/// Fetches a trace; returns the server's JSON body.
pub async fn fetch(server: &Remote, id: &str) -> anyhow::Result<serde_json::Value> {
    server.get_json(&format!("/api/v1/traces/{id}")).await
}

/// Fetches the log records of a trace; returns the server's JSON body.
pub async fn fetch_logs(server: &Remote, id: &str) -> anyhow::Result<serde_json::Value> {
    server.get_json(&format!("/api/v1/logs?traceId={id}")).await
}

/// Parses the `resourceLogs` of a logs answer back into records.
pub fn parse_logs(body: &serde_json::Value) -> anyhow::Result<Vec<StoredLog>> {
    let req: ExportLogsServiceRequest =
        serde_json::from_value(body.clone()).context("decoding resourceLogs")?;
    let (batch, rej) = strand_otlp::logs::from_request(req);
    if rej.count > 0 {
        bail!("server returned invalid log records: {}", rej.message());
    }
    Ok(batch.into_stored().collect())
}

/// Parses the native JSON of a trace back into the model.
pub fn parse(body: &serde_json::Value) -> anyhow::Result<Trace> {
    let req: ExportTraceServiceRequest =
        serde_json::from_value(body.clone()).context("decoding resourceSpans")?;
    let id: TraceId = body
        .get("traceId")
        .and_then(|v| v.as_str())
        .context("answer has no traceId")?
        .parse()
        .context("answer has an invalid traceId")?;
    let (batch, rej) = strand_otlp::from_request(req);
    if rej.count > 0 {
        bail!("server returned invalid spans: {}", rej.message());
    }
    Ok(Trace::from_spans(id, batch.into_stored().collect()))
}

/// `1 span`, `3 spans`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// A duration for people: `1.234s`, `5.000ms`, `12.0µs`.
pub fn fmt_duration(nanos: u64) -> String {
    match nanos {
        n if n >= 1_000_000_000 => format!("{:.3}s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.3}ms", n as f64 / 1e6),
        n => format!("{:.1}µs", n as f64 / 1e3),
    }
}

/// Renders a trace as an indented tree: service, operation, duration, status. Spans whose
/// parent is not in the trace are shown as roots, marked `(parent missing)`.
pub fn render_tree(trace: &Trace) -> String {
    render_tree_with_logs(trace, &[])
}

/// One log line: time of day (UTC, ms), severity, body, attributes.
fn log_line(l: &StoredLog) -> String {
    let r = &l.record;
    let t = r.effective_time();
    let secs = t / 1_000_000_000;
    let (h, m, s, ms) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60, (t / 1_000_000) % 1000);
    let level = if r.severity_text.is_empty() {
        strand_core::logs::severity_name(r.severity_number).to_owned()
    } else {
        r.severity_text.clone()
    };
    let mut line = format!("{h:02}:{m:02}:{s:02}.{ms:03} {level:<5} {}", r.body_text());
    for kv in &r.attributes {
        let v = strand_core::search::value_text(&kv.value).unwrap_or_else(|| "…".into());
        let _ = write!(line, " {}={v}", kv.key);
    }
    line
}

/// [`render_tree`] with each span's log records under it (`│ ` lines), and records of no
/// span of the trace after the tree.
pub fn render_tree_with_logs(trace: &Trace, logs: &[StoredLog]) -> String {
    let mut by_span: HashMap<SpanId, Vec<&StoredLog>> = HashMap::new();
    let mut elsewhere = Vec::new();
    let span_ids: std::collections::HashSet<SpanId> = trace.spans.iter().map(|s| s.span.span_id).collect();
    for l in logs {
        match l.record.span_id.filter(|s| span_ids.contains(s)) {
            Some(s) => by_span.entry(s).or_default().push(l),
            None => elsewhere.push(l),
        }
    }
    by_span.values_mut().for_each(|v| v.sort_by_key(|l| l.record.effective_time()));
    elsewhere.sort_by_key(|l| l.record.effective_time());
    let ids: std::collections::HashSet<SpanId> = trace.spans.iter().map(|s| s.span.span_id).collect();
    let mut children: HashMap<Option<SpanId>, Vec<&StoredSpan>> = HashMap::new();
    for s in &trace.spans {
        let parent = s.span.parent_span_id.filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(s);
    }
    let mut out = String::new();
    let _ = writeln!(out, "trace {} ({})", trace.trace_id, plural(trace.spans.len(), "span"));
    let mut stack: Vec<(&StoredSpan, usize)> =
        children.get(&None).map(|v| v.iter().rev().map(|s| (*s, 0)).collect()).unwrap_or_default();
    while let Some((s, depth)) = stack.pop() {
        let sp = &s.span;
        let status = match sp.status.code {
            StatusCode::Error if sp.status.message.is_empty() => " ERROR".to_string(),
            StatusCode::Error => format!(" ERROR: {}", sp.status.message),
            _ => String::new(),
        };
        let orphan = if depth == 0 && sp.parent_span_id.is_some() { " (parent missing)" } else { "" };
        let _ = writeln!(
            out,
            "{}{} {} [{}] {}{}{}",
            "  ".repeat(depth),
            s.resource.service_name(),
            sp.name,
            sp.kind.as_str(),
            fmt_duration(sp.duration_nanos()),
            status,
            orphan
        );
        for l in by_span.get(&sp.span_id).into_iter().flatten() {
            let _ = writeln!(out, "{}  │ {}", "  ".repeat(depth), log_line(l));
        }
        if let Some(kids) = children.get(&Some(sp.span_id)) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    if !elsewhere.is_empty() {
        let _ = writeln!(out, "\nlogs of the trace outside its stored spans ({}):", elsewhere.len());
        for l in elsewhere {
            let _ = writeln!(out, "  {} {}", l.resource.service_name(), log_line(l));
        }
    }
    out
}

/// Renders the `integrity` of a trace's native JSON under its tree: whether it settled, and
/// each finding with its kind, services and the other trace. Nothing when the server does
/// not analyse chains (no `integrity`).
pub fn render_integrity(integrity: &serde_json::Value) -> String {
    let Some(findings) = integrity.get("findings").and_then(|f| f.as_array()) else { return String::new() };
    let settled = integrity["settled"].as_bool() == Some(true);
    let mut out = String::new();
    let state = if settled { "" } else { " (not settled yet: spans may still arrive)" };
    if findings.is_empty() {
        let verdict = if integrity["complete"] == true { "whole" } else { "no break found" };
        let _ = writeln!(out, "\nchain: {verdict}{state}");
        return out;
    }
    let _ = writeln!(out, "\nchain: {}{state}", plural(findings.len(), "finding"));
    for f in findings {
        let services: Vec<&str> =
            f["services"].as_array().into_iter().flatten().filter_map(|s| s.as_str()).collect();
        let edge = match services.as_slice() {
            ["", b] => format!(" at {b}"),
            [a, b] => format!(" {a} → {b}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {}{edge}: {}",
            f["kind"].as_str().unwrap_or("?"),
            f["message"].as_str().unwrap_or("")
        );
        if let Some(t) = f["relatedTraceId"].as_str() {
            let _ = writeln!(out, "    other half: strand trace {t}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strand_store::testdata::{batch, trace_id};

    #[test]
    fn tree_nests_children_under_parents() {
        let t = Trace::from_spans(trace_id(2), batch(2, 3).into_stored().collect());
        let text = render_tree(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("trace {} (3 spans)", trace_id(2)));
        assert_eq!(lines[1], "svc-2 op-0 [server] 0.5µs");
        assert_eq!(lines[2], "  svc-2 op-1 [client] 0.5µs ERROR: failed");
        assert_eq!(lines[3], "  svc-2 op-2 [client] 0.5µs");
    }

    #[test]
    fn log_lines_sit_under_their_span_and_the_rest_after_the_tree() {
        let t = Trace::from_spans(trace_id(2), batch(2, 3).into_stored().collect());
        let logs: Vec<StoredLog> = strand_store::testdata::log_batch(2, 1).into_stored().collect();
        let text = render_tree_with_logs(&t, &logs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "svc-2 op-0 [server] 0.5µs");
        assert!(
            lines[2].starts_with("  │ 22:13:22.000 TRACE Order 2-0 handled in 10 ms \"quoted\" é"),
            "{text}"
        );
        assert!(lines[2].ends_with("order.id=200 ratio=0.5"), "{text}");
        assert_eq!(lines[3], "  svc-2 op-1 [client] 0.5µs ERROR: failed");
        assert!(lines[4].starts_with("    │ "), "{text}");
        assert!(text.contains("logs of the trace outside its stored spans (1):\n  svc-2 "), "{text}");
        assert!(text.contains("background sweep 2 without context"), "{text}");
    }
}

#[cfg(test)]
mod integrity_tests {
    use super::render_integrity;

    #[test]
    fn findings_are_listed_with_their_edge_and_other_half() {
        let body = serde_json::json!({ "settled": true, "complete": true, "findings": [{
            "kind": "producer_without_consumer", "spanIds": ["8000000000000b0b"],
            "services": ["data-service", "notify-service"], "relatedTraceId": "5c020000000000000000000000000002",
            "message": "the context was lost on the queue hop" }] });
        assert_eq!(
            render_integrity(&body),
            "\nchain: 1 finding\n  producer_without_consumer data-service → notify-service: the context was lost \
             on the queue hop\n    other half: strand trace 5c020000000000000000000000000002\n"
        );
        let whole = serde_json::json!({ "settled": false, "complete": true, "findings": [] });
        assert_eq!(render_integrity(&whole), "\nchain: whole (not settled yet: spans may still arrive)\n");
        assert_eq!(render_integrity(&serde_json::Value::Null), "");
    }
}
