//! Typed JSON for attribute, event and link columns.
//!
//! Attributes are a JSON object in their original order. Strings, booleans and arrays are
//! themselves; integers are JSON integers; doubles always carry a decimal point or an
//! exponent (`1.0`), so the two number types stay apart; bytes are `{"$bytes":"<hex>"}`;
//! non-finite doubles are `{"$double":"NaN"|"Infinity"|"-Infinity"}`; an empty value is
//! `null`; nested key-value lists are objects. DuckDB reads them with `json_extract`.

use serde_json::{Map, Value};
use strand_core::{AnyValue, Event, KeyValue, Link, SpanId, TraceId};

/// Encodes attributes; `None` for an empty list (stored as a null cell).
pub fn attrs_to_json(attrs: &[KeyValue]) -> Option<String> {
    if attrs.is_empty() {
        return None;
    }
    Some(Value::Object(attrs_map(attrs)).to_string())
}

fn attrs_map(attrs: &[KeyValue]) -> Map<String, Value> {
    attrs.iter().map(|kv| (kv.key.clone(), value_to_json(&kv.value))).collect()
}

fn value_to_json(v: &AnyValue) -> Value {
    match v {
        AnyValue::Empty => Value::Null,
        AnyValue::String(s) => Value::String(s.clone()),
        AnyValue::Bool(b) => Value::Bool(*b),
        AnyValue::Int(i) => Value::from(*i),
        AnyValue::Double(d) => match serde_json::Number::from_f64(*d) {
            Some(n) => Value::Number(n),
            None => {
                let text = if d.is_nan() {
                    "NaN"
                } else if *d > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                };
                single("$double", Value::String(text.into()))
            }
        },
        AnyValue::Bytes(b) => single("$bytes", Value::String(hex(b))),
        AnyValue::Array(a) => Value::Array(a.iter().map(value_to_json).collect()),
        AnyValue::KvList(l) => Value::Object(attrs_map(l)),
    }
}

fn single(key: &str, v: Value) -> Value {
    let mut m = Map::new();
    m.insert(key.into(), v);
    Value::Object(m)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd-length hex".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).ok_or("bad hex")?, 16).map_err(|e| e.to_string()))
        .collect()
}

/// Decodes attributes written by [`attrs_to_json`]; `None` is an empty list.
pub fn attrs_from_json(s: Option<&str>) -> Result<Vec<KeyValue>, String> {
    let Some(s) = s else { return Ok(Vec::new()) };
    match serde_json::from_str(s).map_err(|e| e.to_string())? {
        Value::Object(m) => map_to_attrs(m),
        _ => Err("attributes are not a JSON object".into()),
    }
}

fn map_to_attrs(m: Map<String, Value>) -> Result<Vec<KeyValue>, String> {
    m.into_iter().map(|(k, v)| Ok(KeyValue { key: k, value: json_to_value(v)? })).collect()
}

fn json_to_value(v: Value) -> Result<AnyValue, String> {
    Ok(match v {
        Value::Null => AnyValue::Empty,
        Value::Bool(b) => AnyValue::Bool(b),
        Value::String(s) => AnyValue::String(s),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            None => AnyValue::Double(n.as_f64().ok_or("number out of range")?),
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
                            other => return Err(format!("bad $double {other}")),
                        }));
                    }
                    _ => {}
                }
            }
            AnyValue::KvList(map_to_attrs(m)?)
        }
    })
}

/// Encodes events; `None` when there are none.
pub fn events_to_json(events: &[Event]) -> Option<String> {
    if events.is_empty() {
        return None;
    }
    let list: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("time_unix_nano".into(), Value::from(e.time_unix_nano));
            m.insert("name".into(), Value::String(e.name.clone()));
            m.insert("attributes".into(), Value::Object(attrs_map(&e.attributes)));
            m.insert("dropped_attributes_count".into(), Value::from(e.dropped_attributes_count));
            Value::Object(m)
        })
        .collect();
    Some(Value::Array(list).to_string())
}

/// Encodes links; `None` when there are none.
pub fn links_to_json(links: &[Link]) -> Option<String> {
    if links.is_empty() {
        return None;
    }
    let list: Vec<Value> = links
        .iter()
        .map(|l| {
            let mut m = Map::new();
            m.insert("trace_id".into(), Value::String(l.trace_id.to_hex()));
            m.insert("span_id".into(), Value::String(l.span_id.to_hex()));
            m.insert("trace_state".into(), Value::String(l.trace_state.clone()));
            m.insert("attributes".into(), Value::Object(attrs_map(&l.attributes)));
            m.insert("dropped_attributes_count".into(), Value::from(l.dropped_attributes_count));
            m.insert("flags".into(), Value::from(l.flags));
            Value::Object(m)
        })
        .collect();
    Some(Value::Array(list).to_string())
}

fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Result<&'a Value, String> {
    m.get(key).ok_or_else(|| format!("missing {key}"))
}

fn u64_field(m: &Map<String, Value>, key: &str) -> Result<u64, String> {
    field(m, key)?.as_u64().ok_or_else(|| format!("{key} is not an unsigned integer"))
}

fn u32_field(m: &Map<String, Value>, key: &str) -> Result<u32, String> {
    u32::try_from(u64_field(m, key)?).map_err(|_| format!("{key} out of range"))
}

fn str_field(m: &Map<String, Value>, key: &str) -> Result<String, String> {
    field(m, key)?.as_str().map(str::to_owned).ok_or_else(|| format!("{key} is not a string"))
}

fn attrs_field(m: &mut Map<String, Value>) -> Result<Vec<KeyValue>, String> {
    match m.remove("attributes") {
        Some(Value::Object(a)) => map_to_attrs(a),
        _ => Err("attributes is not an object".into()),
    }
}

fn list(s: Option<&str>) -> Result<Vec<Map<String, Value>>, String> {
    let Some(s) = s else { return Ok(Vec::new()) };
    match serde_json::from_str(s).map_err(|e| e.to_string())? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                _ => Err("list item is not an object".to_string()),
            })
            .collect(),
        _ => Err("not a JSON array".into()),
    }
}

/// Decodes events written by [`events_to_json`].
pub fn events_from_json(s: Option<&str>) -> Result<Vec<Event>, String> {
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

/// Decodes links written by [`links_to_json`].
pub fn links_from_json(s: Option<&str>) -> Result<Vec<Link>, String> {
    list(s)?
        .into_iter()
        .map(|mut m| {
            Ok(Link {
                trace_id: str_field(&m, "trace_id")?.parse::<TraceId>().map_err(|e| e.to_string())?,
                span_id: str_field(&m, "span_id")?.parse::<SpanId>().map_err(|e| e.to_string())?,
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
            let ev = events_to_json(&span.events);
            assert_eq!(events_from_json(ev.as_deref()).expect("valid"), span.events);
            let ln = links_to_json(&span.links);
            assert_eq!(links_from_json(ln.as_deref()).expect("valid"), span.links);
        }
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
