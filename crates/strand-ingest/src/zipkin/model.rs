//! Zipkin v2 spans as they arrive — JSON (`application/json`) or proto3
//! (`application/x-protobuf`, `zipkin.proto3.ListOfSpans`) — decoded into one shape,
//! [`ZipkinSpan`], with ids validated. Each span is decoded on its own, so one malformed span
//! is rejected while the rest of the request is kept.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use serde_json::value::RawValue;
use strand_core::{SpanId, TraceId};

/// Zipkin span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `CLIENT`.
    Client,
    /// `SERVER`.
    Server,
    /// `PRODUCER`.
    Producer,
    /// `CONSUMER`.
    Consumer,
}

/// A network endpoint: a service and its address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// Service name; empty when unknown.
    pub service_name: String,
    /// IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// Port; `None` when absent or zero.
    pub port: Option<u16>,
}

impl Endpoint {
    /// The IPv4 address, else the IPv6 one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ipv4.map(IpAddr::V4).or(self.ipv6.map(IpAddr::V6))
    }
}

/// One decoded span.
#[derive(Debug, Clone, PartialEq)]
pub struct ZipkinSpan {
    /// Trace id; 64-bit ids fill the low half.
    pub trace_id: TraceId,
    /// Span id.
    pub id: SpanId,
    /// Parent span id.
    pub parent_id: Option<SpanId>,
    /// Kind, when given.
    pub kind: Option<Kind>,
    /// Operation name.
    pub name: String,
    /// Start in epoch microseconds; 0 when absent.
    pub timestamp: u64,
    /// Duration in microseconds; 0 when absent.
    pub duration: u64,
    /// Forced sampling.
    pub debug: bool,
    /// A server span that shares its client's span id.
    pub shared: bool,
    /// The host that recorded the span.
    pub local_endpoint: Option<Endpoint>,
    /// The other side of an RPC or messaging span.
    pub remote_endpoint: Option<Endpoint>,
    /// `(epoch microseconds, value)`.
    pub annotations: Vec<(u64, String)>,
    /// Tags, in the order received (JSON) or by key (proto3).
    pub tags: Vec<(String, String)>,
}

/// Decodes a JSON body: an array of spans. A body that is not a JSON array is an error; a
/// span that does not decode is returned as its own error.
pub fn decode_json(body: &[u8]) -> Result<Vec<Result<ZipkinSpan, String>>, String> {
    let raw: Vec<&RawValue> =
        serde_json::from_slice(body).map_err(|e| format!("expected a JSON array of Zipkin v2 spans: {e}"))?;
    Ok(raw
        .into_iter()
        .map(|r| {
            serde_json::from_str::<JsonSpan>(r.get()).map_err(|e| e.to_string()).and_then(JsonSpan::validate)
        })
        .collect())
}

/// Decodes a proto3 body: `ListOfSpans`.
pub fn decode_proto(body: &[u8]) -> Result<Vec<Result<ZipkinSpan, String>>, String> {
    let list: proto::ListOfSpans = prost::Message::decode(body)
        .map_err(|e| format!("invalid protobuf zipkin.proto3.ListOfSpans: {e}"))?;
    Ok(list.spans.into_iter().map(proto::Span::validate).collect())
}

/// A hex id of at most `2 * N` digits, left-padded with zeros as Zipkin does.
fn hex_id<const N: usize>(text: &str, what: &str) -> Result<[u8; N], String> {
    let digits = text.trim();
    if digits.is_empty() || digits.len() > 2 * N || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{what} `{text}` is not 1 to {} hex digits", 2 * N));
    }
    let mut out = [0u8; N];
    let padded = format!("{digits:0>width$}", width = 2 * N);
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(out)
}

fn trace_id_hex(text: &str) -> Result<TraceId, String> {
    let bytes: [u8; 16] = hex_id(text, "traceId")?;
    TraceId::from_slice(&bytes).map_err(|e| e.to_string())
}

fn span_id_hex(text: &str, what: &str) -> Result<SpanId, String> {
    let bytes: [u8; 8] = hex_id(text, what)?;
    SpanId::from_slice(&bytes).map_err(|e| format!("{what}: {e}"))
}

/// A parent id equal to zero or to the span's own id means "no parent" (some tracers send
/// either for roots).
fn parent_or_none(parent: Option<SpanId>, id: SpanId) -> Option<SpanId> {
    parent.filter(|p| *p != id)
}

fn kind_from_text(text: &str) -> Result<Option<Kind>, String> {
    Ok(Some(match text.to_ascii_uppercase().as_str() {
        "CLIENT" => Kind::Client,
        "SERVER" => Kind::Server,
        "PRODUCER" => Kind::Producer,
        "CONSUMER" => Kind::Consumer,
        "" | "SPAN_KIND_UNSPECIFIED" => return Ok(None),
        other => return Err(format!("unknown kind `{other}`")),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan {
    trace_id: String,
    id: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    timestamp: Option<Micros>,
    #[serde(default)]
    duration: Option<Micros>,
    #[serde(default)]
    debug: Option<bool>,
    #[serde(default)]
    shared: Option<bool>,
    #[serde(default)]
    local_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    remote_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    annotations: Option<Vec<JsonAnnotation>>,
    #[serde(default)]
    tags: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Epoch or duration microseconds: an integer, or a float some tracers write.
#[derive(Clone, Copy)]
struct Micros(u64);

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        if let Some(u) = n.as_u64() {
            return Ok(Micros(u));
        }
        match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => Ok(Micros(f.round() as u64)),
            _ => {
                Err(serde::de::Error::custom(format!("microseconds must be a non-negative number, got {n}")))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonEndpoint {
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    port: Option<i64>,
}

#[derive(Deserialize)]
struct JsonAnnotation {
    timestamp: Micros,
    value: String,
}

impl JsonEndpoint {
    /// Unparseable addresses and out-of-range ports are dropped, not fatal: the span is
    /// still worth keeping.
    fn into_endpoint(self) -> Endpoint {
        Endpoint {
            service_name: self.service_name.unwrap_or_default(),
            ipv4: self.ipv4.and_then(|s| s.parse().ok()),
            ipv6: self.ipv6.and_then(|s| s.parse().ok()),
            port: self.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0),
        }
    }
}

impl JsonSpan {
    fn validate(self) -> Result<ZipkinSpan, String> {
        let trace_id = trace_id_hex(&self.trace_id)?;
        let id = span_id_hex(&self.id, "id")?;
        let parent_id = match self.parent_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(p) if p.bytes().all(|b| b == b'0') => None,
            Some(p) => Some(span_id_hex(p, "parentId")?),
        };
        let tags = self
            .tags
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| {
                let text = match v {
                    serde_json::Value::Null => return None,
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                Some((k, text))
            })
            .collect();
        Ok(ZipkinSpan {
            trace_id,
            id,
            parent_id: parent_or_none(parent_id, id),
            kind: kind_from_text(self.kind.as_deref().unwrap_or(""))?,
            name: self.name.unwrap_or_default(),
            timestamp: self.timestamp.map_or(0, |m| m.0),
            duration: self.duration.map_or(0, |m| m.0),
            debug: self.debug.unwrap_or(false),
            shared: self.shared.unwrap_or(false),
            local_endpoint: self.local_endpoint.map(JsonEndpoint::into_endpoint),
            remote_endpoint: self.remote_endpoint.map(JsonEndpoint::into_endpoint),
            annotations: self
                .annotations
                .unwrap_or_default()
                .into_iter()
                .map(|a| (a.timestamp.0, a.value))
                .collect(),
            tags,
        })
    }
}

/// `zipkin.proto3` messages (openzipkin/zipkin-api `zipkin.proto`).
pub mod proto {
    use std::collections::BTreeMap;

    /// `ListOfSpans`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListOfSpans {
        /// The spans.
        #[prost(message, repeated, tag = "1")]
        pub spans: Vec<Span>,
    }

    /// `Span`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        /// 8 or 16 bytes, big-endian.
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        /// 8 bytes or empty.
        #[prost(bytes = "vec", tag = "2")]
        pub parent_id: Vec<u8>,
        /// 8 bytes.
        #[prost(bytes = "vec", tag = "3")]
        pub id: Vec<u8>,
        /// 0 unspecified, 1 client, 2 server, 3 producer, 4 consumer.
        #[prost(int32, tag = "4")]
        pub kind: i32,
        /// Operation name.
        #[prost(string, tag = "5")]
        pub name: String,
        /// Epoch microseconds.
        #[prost(fixed64, tag = "6")]
        pub timestamp: u64,
        /// Microseconds.
        #[prost(uint64, tag = "7")]
        pub duration: u64,
        /// The recording host.
        #[prost(message, optional, tag = "8")]
        pub local_endpoint: Option<Endpoint>,
        /// The other side.
        #[prost(message, optional, tag = "9")]
        pub remote_endpoint: Option<Endpoint>,
        /// Timestamped events.
        #[prost(message, repeated, tag = "10")]
        pub annotations: Vec<Annotation>,
        /// Tags.
        #[prost(btree_map = "string, string", tag = "11")]
        pub tags: BTreeMap<String, String>,
        /// Forced sampling.
        #[prost(bool, tag = "12")]
        pub debug: bool,
        /// Shares its client's span id.
        #[prost(bool, tag = "13")]
        pub shared: bool,
    }

    /// `Endpoint`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Endpoint {
        /// Service name.
        #[prost(string, tag = "1")]
        pub service_name: String,
        /// 4 bytes.
        #[prost(bytes = "vec", tag = "2")]
        pub ipv4: Vec<u8>,
        /// 16 bytes.
        #[prost(bytes = "vec", tag = "3")]
        pub ipv6: Vec<u8>,
        /// Port.
        #[prost(int32, tag = "4")]
        pub port: i32,
    }

    /// `Annotation`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Annotation {
        /// Epoch microseconds.
        #[prost(fixed64, tag = "1")]
        pub timestamp: u64,
        /// Event.
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

impl proto::Endpoint {
    fn into_endpoint(self) -> Endpoint {
        Endpoint {
            service_name: self.service_name,
            ipv4: <[u8; 4]>::try_from(self.ipv4.as_slice()).ok().map(Ipv4Addr::from),
            ipv6: <[u8; 16]>::try_from(self.ipv6.as_slice()).ok().map(Ipv6Addr::from),
            port: u16::try_from(self.port).ok().filter(|p| *p != 0),
        }
    }
}

impl proto::Span {
    fn validate(self) -> Result<ZipkinSpan, String> {
        let trace_id = match self.trace_id.len() {
            8 => {
                let mut b = [0u8; 16];
                b[8..].copy_from_slice(&self.trace_id);
                TraceId::from_slice(&b)
            }
            _ => TraceId::from_slice(&self.trace_id),
        }
        .map_err(|e| format!("{e} (Zipkin sends 8 or 16 bytes)"))?;
        let id = SpanId::from_slice(&self.id).map_err(|e| e.to_string())?;
        let parent_id = if self.parent_id.is_empty() || self.parent_id.iter().all(|b| *b == 0) {
            None
        } else {
            Some(SpanId::from_slice(&self.parent_id).map_err(|e| format!("parent_{e}"))?)
        };
        let kind = match self.kind {
            0 => None,
            1 => Some(Kind::Client),
            2 => Some(Kind::Server),
            3 => Some(Kind::Producer),
            4 => Some(Kind::Consumer),
            other => return Err(format!("unknown kind {other}")),
        };
        Ok(ZipkinSpan {
            trace_id,
            id,
            parent_id: parent_or_none(parent_id, id),
            kind,
            name: self.name,
            timestamp: self.timestamp,
            duration: self.duration,
            debug: self.debug,
            shared: self.shared,
            local_endpoint: self.local_endpoint.map(proto::Endpoint::into_endpoint),
            remote_endpoint: self.remote_endpoint.map(proto::Endpoint::into_endpoint),
            annotations: self.annotations.into_iter().map(|a| (a.timestamp, a.value)).collect(),
            tags: BTreeMap::into_iter(self.tags).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hex_ids_are_left_padded_and_bad_ones_rejected() {
        let spans = decode_json(
            br#"[{"traceId":"ABC","id":"1","name":"a","timestamp":1},
                 {"traceId":"xyz","id":"1"},
                 {"traceId":"00000000000000000000000000000000","id":"1"},
                 {"traceId":"1","id":"12345678901234567"},
                 {"traceId":"1","id":"2","timestamp":"soon"}]"#,
        )
        .expect("array");
        let first = spans[0].as_ref().expect("valid");
        assert_eq!(first.trace_id.to_hex(), "00000000000000000000000000000abc");
        assert_eq!(first.id.to_hex(), "0000000000000001");
        let errors: Vec<String> = spans[1..].iter().map(|s| s.clone().expect_err("invalid")).collect();
        assert!(errors[0].contains("traceId `xyz` is not 1 to 32 hex digits"), "{}", errors[0]);
        assert!(errors[1].contains("zero"), "{}", errors[1]);
        assert!(errors[2].contains("id `12345678901234567` is not 1 to 16 hex digits"), "{}", errors[2]);
        assert!(errors[3].contains("invalid type: string \"soon\""), "{}", errors[3]);
        assert!(decode_json(b"{}").expect_err("not an array").contains("expected a JSON array"));
    }
}
