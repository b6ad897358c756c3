//! OTLP/JSON ids that are not hex. The protobuf JSON mapping decodes a request in one go, so
//! one span with an odd-length or non-hex `traceId` would fail the whole request. When a
//! request does not decode, each span (or log record) with such an id is marked invalid in
//! place — its bad ids emptied and its `traceId` given one byte, which conversion rejects
//! at the same position as any other invalid span — and the request decodes; the rejection
//! message then says which id was not hex.

use crate::Rejections;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How a request names its lists, and what its items are called in rejection messages.
pub struct Shape {
    /// `resourceSpans` / `resourceLogs`.
    resources: &'static str,
    /// `scopeSpans` / `scopeLogs`.
    scopes: &'static str,
    /// `spans` / `logRecords`.
    items: &'static str,
    /// `span` / `log record`, as conversion's messages name an item.
    item_name: &'static str,
    /// Whether items carry links with ids (spans).
    links: bool,
}

/// Spans: their trace, span and parent ids and their links' ids.
pub const SPANS: Shape = Shape {
    resources: "resourceSpans",
    scopes: "scopeSpans",
    items: "spans",
    item_name: "span",
    links: true,
};
/// Log records: their trace and span ids.
pub const LOG_RECORDS: Shape = Shape {
    resources: "resourceLogs",
    scopes: "scopeLogs",
    items: "logRecords",
    item_name: "log record",
    links: false,
};

/// Messages for items marked invalid: conversion's message prefix for the item, and what to
/// say instead.
pub type Marked = Vec<(String, String)>;

/// Decodes `body` as `T`; when that fails, marks the items whose ids are not hex and
/// decodes again. The error of the first attempt stands when nothing was marked.
pub fn decode<T: DeserializeOwned>(body: &[u8], shape: &Shape) -> Result<(T, Marked), serde_json::Error> {
    let first = match serde_json::from_slice(body) {
        Ok(v) => return Ok((v, Vec::new())),
        Err(e) => e,
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else { return Err(first) };
    let marked = mark_bad_ids(&mut value, shape);
    if marked.is_empty() {
        return Err(first);
    }
    Ok((serde_json::from_value(value)?, marked))
}

/// Decodes an OTLP/JSON `ExportTraceServiceRequest` (or `TracesData`) and converts it,
/// rejecting spans with invalid ids one by one, ids that are not hex included.
pub fn traces_from_json(body: &[u8]) -> Result<(strand_core::SpanBatch, Rejections), serde_json::Error> {
    let (req, marked) = decode::<ExportTraceServiceRequest>(body, &SPANS)?;
    let (batch, mut rejections) = crate::from_request(req);
    explain(&mut rejections, &marked);
    Ok((batch, rejections))
}

/// Decodes an OTLP/JSON `ExportLogsServiceRequest` and converts it, rejecting log records
/// with invalid ids one by one, ids that are not hex included.
pub fn logs_from_json(body: &[u8]) -> Result<(strand_core::LogBatch, Rejections), serde_json::Error> {
    let (req, marked) = decode::<ExportLogsServiceRequest>(body, &LOG_RECORDS)?;
    let (batch, mut rejections) = crate::logs::from_request(req);
    explain(&mut rejections, &marked);
    Ok((batch, rejections))
}

/// Puts the "not hex" messages in place of conversion's messages for the marked items.
pub fn explain(rejections: &mut Rejections, marked: &Marked) {
    for msg in &mut rejections.messages {
        if let Some((_, why)) = marked.iter().find(|(prefix, _)| msg.starts_with(prefix.as_str())) {
            msg.clone_from(why);
        }
    }
}

/// Hex of an even length (either case), as the JSON mapping decodes bytes.
fn is_hex(s: &str) -> bool {
    s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

const IDS: [&str; 3] = ["traceId", "spanId", "parentSpanId"];

/// Empties every id of `item` (and of its links) that is present and not hex; returns the
/// first such field and its text.
fn empty_bad_ids(item: &mut Value, fields: &[&'static str], links: bool) -> Option<(&'static str, String)> {
    let mut first = None;
    if let Some(obj) = item.as_object_mut() {
        for field in fields {
            let Some(v) = obj.get_mut(*field) else { continue };
            if v.as_str().is_some_and(is_hex) {
                continue;
            }
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            first.get_or_insert((*field, text));
            *v = Value::String(String::new());
        }
    }
    if links && let Some(list) = item.get_mut("links").and_then(Value::as_array_mut) {
        for link in list {
            if let Some(bad) = empty_bad_ids(link, &IDS[..2], false) {
                first.get_or_insert(bad);
            }
        }
    }
    first
}

fn mark_bad_ids(value: &mut Value, shape: &Shape) -> Marked {
    let mut marked = Vec::new();
    let fields = if shape.links { &IDS[..] } else { &IDS[..2] };
    for (ri, resource) in items_mut(value, shape.resources).enumerate() {
        for (si, scope) in items_mut(resource, shape.scopes).enumerate() {
            for (ii, item) in items_mut(scope, shape.items).enumerate() {
                let Some((field, text)) = empty_bad_ids(item, fields, shape.links) else { continue };
                if let Some(obj) = item.as_object_mut() {
                    // One byte: conversion rejects the item here, as it would any bad id.
                    obj.insert("traceId".into(), Value::String("00".into()));
                }
                let prefix = format!("resource {ri} scope {si} {} {ii}:", shape.item_name);
                let shown: String = text.chars().take(40).collect();
                marked.push((prefix.clone(), format!("{prefix} {field} `{shown}` is not hex")));
            }
        }
    }
    marked
}

fn items_mut<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key).and_then(Value::as_array_mut).into_iter().flat_map(|l| l.iter_mut())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_with_a_bad_id_is_rejected_in_place_and_the_rest_decodes() {
        let body = serde_json::json!({ "resourceSpans": [{ "scopeSpans": [{ "spans": [
            { "traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708", "name": "good" },
            { "traceId": "abc", "spanId": "0102030405060708", "name": "odd" },
            { "traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "zz02030405060708", "name": "not hex" },
            { "traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060709", "name": "link",
              "links": [{ "traceId": "0102030405060708090a0b0c0d0e0f1", "spanId": "0102030405060708" }] },
            { "traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0000000000000000", "name": "zero" },
        ] }] }] });
        let (req, marked) =
            decode::<ExportTraceServiceRequest>(&serde_json::to_vec(&body).expect("json"), &SPANS)
                .expect("decodes");
        let (batch, mut rejections) = crate::from_request(req);
        explain(&mut rejections, &marked);
        let names: Vec<String> = batch.into_stored().map(|s| s.span.name).collect();
        assert_eq!(names, vec!["good"]);
        assert_eq!(rejections.count, 4);
        assert_eq!(
            rejections.messages,
            vec![
                "resource 0 scope 0 span 1: traceId `abc` is not hex",
                "resource 0 scope 0 span 2: spanId `zz02030405060708` is not hex",
                "resource 0 scope 0 span 3: traceId `0102030405060708090a0b0c0d0e0f1` is not hex",
                "resource 0 scope 0 span 4: span_id must not be all zeroes",
            ]
        );
        // Malformed JSON, or a bad field that is not an id, keeps the first error.
        assert!(decode::<ExportTraceServiceRequest>(b"{\"resourceSpans\": [", &SPANS).is_err());
        let kind = br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "sideways"}]}]}]}"#;
        assert!(decode::<ExportTraceServiceRequest>(kind, &SPANS).is_err());
    }
}
