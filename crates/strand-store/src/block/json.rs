//! Typed JSON for attribute, event and link columns.
//!
//! Attributes are a JSON object in their original order. Strings, booleans and arrays are
//! themselves; integers are JSON integers; doubles always carry a decimal point or an
//! exponent (`1.0`), so the two number types stay apart; bytes are `{"$bytes":"<hex>"}`;
//! non-finite doubles are `{"$double":"NaN"|"Infinity"|"-Infinity"}`; an empty value is
//! `null`; nested key-value lists are objects. DuckDB reads them with `json_extract`.

use std::fmt::Write;

use serde_json::{Map, Value};
use strand_core::{AnyValue, Event, KeyValue, Link, SpanId, TraceId};

use crate::error::FormatError;

fn invalid(what: impl Into<String>) -> FormatError {
    FormatError::invalid(what)
}

/// Encodes attributes; `None` for an empty list (stored as a null cell).
pub fn attrs_to_json(attrs: &[KeyValue]) -> Option<String> {
    if attrs.is_empty() {
        return None;
    }
    let mut out = String::new();
    write_attrs(&mut out, attrs);
    Some(out)
}

/// Writes `s` as a JSON string literal. Scans bytes: every byte that needs escaping is
/// ASCII, so slicing at it keeps UTF-8 boundaries.
fn write_str(out: &mut impl Write, s: &str) {
    let _ = out.write_char('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'"' && b != b'\\' && b >= 0x20 {
            continue;
        }
        let _ = out.write_str(&s[start..i]);
        let _ = match b {
            b'"' => out.write_str("\\\""),
            b'\\' => out.write_str("\\\\"),
            b'\n' => out.write_str("\\n"),
            b'\r' => out.write_str("\\r"),
            b'\t' => out.write_str("\\t"),
            _ => write!(out, "\\u{b:04x}"),
        };
        start = i + 1;
    }
    let _ = out.write_str(&s[start..]);
    let _ = out.write_char('"');
}

/// Writes attributes as a JSON object, in order, without intermediate values.
pub fn write_attrs(out: &mut impl Write, attrs: &[KeyValue]) {
    let _ = out.write_char('{');
    for (i, kv) in attrs.iter().enumerate() {
        if i > 0 {
            let _ = out.write_char(',');
        }
        write_str(out, &kv.key);
        let _ = out.write_char(':');
        write_value(out, &kv.value);
    }
    let _ = out.write_char('}');
}

fn write_value(out: &mut impl Write, v: &AnyValue) {
    match v {
        AnyValue::Empty => {
            let _ = out.write_str("null");
        }
        AnyValue::String(s) => write_str(out, s),
        AnyValue::Bool(b) => {
            let _ = out.write_str(if *b { "true" } else { "false" });
        }
        AnyValue::Int(i) => {
            let _ = write!(out, "{i}");
        }
        AnyValue::Double(d) if d.is_finite() => {
            // serde_json's float format always keeps a '.' or an exponent: 3.0, 1e+300.
            let _ = out.write_str(&Value::from(*d).to_string());
        }
        AnyValue::Double(d) => {
            let text = if d.is_nan() {
                "NaN"
            } else if *d > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            };
            let _ = write!(out, "{{\"$double\":\"{text}\"}}");
        }
        AnyValue::Bytes(b) => {
            let _ = write!(out, "{{\"$bytes\":\"{}\"}}", hex(b));
        }
        AnyValue::Array(a) => {
            let _ = out.write_char('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    let _ = out.write_char(',');
                }
                write_value(out, v);
            }
            let _ = out.write_char(']');
        }
        AnyValue::KvList(l) => write_attrs(out, l),
    }
}

/// Encodes one value (a structured log body) as typed JSON.
pub fn value_to_json(v: &AnyValue) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

/// Decodes a value written by [`value_to_json`].
pub fn value_from_json(s: &str) -> Result<AnyValue, FormatError> {
    json_to_value(serde_json::from_str(s)?)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, FormatError> {
    if !s.len().is_multiple_of(2) {
        return Err(invalid("odd-length hex"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(|| invalid("bad hex"))
        })
        .collect()
}

/// Decodes attributes written by [`attrs_to_json`]; `None` is an empty list.
pub fn attrs_from_json(s: Option<&str>) -> Result<Vec<KeyValue>, FormatError> {
    let Some(s) = s else { return Ok(Vec::new()) };
    match serde_json::from_str(s)? {
        Value::Object(m) => map_to_attrs(m),
        _ => Err(invalid("attributes are not a JSON object")),
    }
}

fn map_to_attrs(m: Map<String, Value>) -> Result<Vec<KeyValue>, FormatError> {
    m.into_iter().map(|(k, v)| Ok(KeyValue { key: k, value: json_to_value(v)? })).collect()
}

fn json_to_value(v: Value) -> Result<AnyValue, FormatError> {
    Ok(match v {
        Value::Null => AnyValue::Empty,
        Value::Bool(b) => AnyValue::Bool(b),
        Value::String(s) => AnyValue::String(s),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            None => AnyValue::Double(n.as_f64().ok_or_else(|| invalid("number out of range"))?),
        },
        Value::Array(a) => AnyValue::Array(a.into_iter().map(json_to_value).collect::<Result<_, _>>()?),
        Value::Object(m) => {
            if m.len() == 1 {
                match m.iter().next() {
                    Some((k, Value::String(s))) if k == "$bytes" => return Ok(AnyValue::Bytes(unhex(s)?)),
                    Some((k, Value::String(s))) if k == "$double" => {
                        return Ok(AnyValue::Double(match s.as_str() {
                            "NaN" => f64::NAN,
                            "Infinity" => f64::INFINITY,
                            "-Infinity" => f64::NEG_INFINITY,
                            other => return Err(invalid(format!("bad $double {other}"))),
                        }));
                    }
                    _ => {}
                }
            }
            AnyValue::KvList(map_to_attrs(m)?)
        }
    })
}

/// Writes events as a JSON list:
/// `[{"time_unix_nano":..,"name":..,"attributes":{..},"dropped_attributes_count":..}]`.
pub fn write_events(out: &mut impl Write, events: &[Event]) {
    let _ = out.write_char('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            let _ = out.write_char(',');
        }
        let _ = write!(out, "{{\"time_unix_nano\":{},\"name\":", e.time_unix_nano);
        write_str(out, &e.name);
        let _ = out.write_str(",\"attributes\":");
        write_attrs(out, &e.attributes);
        let _ = write!(out, ",\"dropped_attributes_count\":{}}}", e.dropped_attributes_count);
    }
    let _ = out.write_char(']');
}

/// Writes links as a JSON list: `[{"trace_id":..,"span_id":..,"trace_state":..,
/// "attributes":{..},"dropped_attributes_count":..,"flags":..}]`.
pub fn write_links(out: &mut impl Write, links: &[Link]) {
    let _ = out.write_char('[');
    for (i, l) in links.iter().enumerate() {
        if i > 0 {
            let _ = out.write_char(',');
        }
        let _ =
            write!(out, "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",\"trace_state\":", l.trace_id, l.span_id);
        write_str(out, &l.trace_state);
        let _ = out.write_str(",\"attributes\":");
        write_attrs(out, &l.attributes);
        let _ = write!(
            out,
            ",\"dropped_attributes_count\":{},\"flags\":{}}}",
            l.dropped_attributes_count, l.flags
        );
    }
    let _ = out.write_char(']');
}

fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Result<&'a Value, FormatError> {
    m.get(key).ok_or_else(|| invalid(format!("missing {key}")))
}

fn u64_field(m: &Map<String, Value>, key: &str) -> Result<u64, FormatError> {
    field(m, key)?.as_u64().ok_or_else(|| invalid(format!("{key} is not an unsigned integer")))
}

fn u32_field(m: &Map<String, Value>, key: &str) -> Result<u32, FormatError> {
    u32::try_from(u64_field(m, key)?).map_err(|_| invalid(format!("{key} out of range")))
}

fn str_field(m: &Map<String, Value>, key: &str) -> Result<String, FormatError> {
    field(m, key)?.as_str().map(str::to_owned).ok_or_else(|| invalid(format!("{key} is not a string")))
}

fn id_field<T: std::str::FromStr>(m: &Map<String, Value>, key: &str) -> Result<T, FormatError>
where
    T::Err: std::fmt::Display,
{
    str_field(m, key)?.parse().map_err(|e| invalid(format!("{key}: {e}")))
}

fn attrs_field(m: &mut Map<String, Value>) -> Result<Vec<KeyValue>, FormatError> {
    match m.remove("attributes") {
        Some(Value::Object(a)) => map_to_attrs(a),
        _ => Err(invalid("attributes is not an object")),
    }
}

fn list(s: Option<&str>) -> Result<Vec<Map<String, Value>>, FormatError> {
    let Some(s) = s else { return Ok(Vec::new()) };
    match serde_json::from_str(s)? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                _ => Err(invalid("list item is not an object")),
            })
            .collect(),
        _ => Err(invalid("not a JSON array")),
    }
}

/// Decodes events written by [`write_events`].
pub fn events_from_json(s: Option<&str>) -> Result<Vec<Event>, FormatError> {
    list(s)?
        .into_iter()
        .map(|mut m| {
            Ok(Event {
                time_unix_nano: u64_field(&m, "time_unix_nano")?,
                name: str_field(&m, "name")?,
                dropped_attributes_count: u32_field(&m, "dropped_attributes_count")?,
                attributes: attrs_field(&mut m)?,
            })
        })
        .collect()
}

/// Decodes links written by [`write_links`].
pub fn links_from_json(s: Option<&str>) -> Result<Vec<Link>, FormatError> {
    list(s)?
        .into_iter()
        .map(|mut m| {
            Ok(Link {
                trace_id: id_field::<TraceId>(&m, "trace_id")?,
                span_id: id_field::<SpanId>(&m, "span_id")?,
                trace_state: str_field(&m, "trace_state")?,
                dropped_attributes_count: u32_field(&m, "dropped_attributes_count")?,
                flags: u32_field(&m, "flags")?,
                attributes: attrs_field(&mut m)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::batch;

    #[test]
    fn every_value_type_round_trips_in_order() {
        let b = batch(4, 3);
        for span in &b.resource_spans[0].scope_spans[0].spans {
            let json = attrs_to_json(&span.attributes);
            assert_eq!(attrs_from_json(json.as_deref()).expect("valid"), span.attributes);
            let mut ev = String::new();
            write_events(&mut ev, &span.events);
            assert_eq!(events_from_json(Some(&ev)).expect("valid"), span.events);
            let mut ln = String::new();
            write_links(&mut ln, &span.links);
            assert_eq!(links_from_json(Some(&ln)).expect("valid"), span.links);
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_would() {
        let tricky = "q\"b\\n\nr\rt\t\u{1}\u{7f}é😀";
        let attrs = vec![KeyValue::new(tricky, AnyValue::String(tricky.into()))];
        let json = attrs_to_json(&attrs).expect("non-empty");
        let parsed: Value = serde_json::from_str(&json).expect("valid json");
        assert_eq!(parsed[tricky], Value::String(tricky.into()));
        assert_eq!(attrs_from_json(Some(&json)).expect("valid"), attrs);
    }

    #[test]
    fn doubles_and_ints_stay_apart() {
        let attrs = vec![
            KeyValue::new("d", AnyValue::Double(3.0)),
            KeyValue::new("i", AnyValue::Int(3)),
            KeyValue::new("big", AnyValue::Double(1e300)),
        ];
        let json = attrs_to_json(&attrs).expect("non-empty");
        assert_eq!(json, r#"{"d":3.0,"i":3,"big":1e+300}"#);
        assert_eq!(attrs_from_json(Some(&json)).expect("valid"), attrs);
    }
}
