//! Carrying the trace across a boundary: W3C `traceparent`/`tracestate` and `baggage`
//! injected into and extracted from any string header map.
//!
//! [`crate::init`] installs the propagator; [`install_propagator`] does only that (for
//! services that set up their own provider, and for tests).

use std::collections::{BTreeMap, HashMap};

use opentelemetry::Context;
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

/// Installs W3C trace context + baggage as the global propagator.
pub fn install_propagator() {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(StrictTraceContext(TraceContextPropagator::new())),
        Box::new(BaggagePropagator::new()),
    ]));
}

/// The SDK's W3C propagator behind the format check the spec asks for: it parses ids
/// numerically, so a 31-digit trace id or uppercase hex would otherwise be taken as valid.
/// A `traceparent` that is not `vv-<32 lowercase hex>-<16 lowercase hex>-<2 hex>` (version 00
/// exactly so; later versions may append `-...`) is ignored, and the receiver starts a new
/// trace.
#[derive(Debug)]
struct StrictTraceContext(TraceContextPropagator);

fn valid_traceparent(v: &str) -> bool {
    let b = v.trim().as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    if b.len() < 55 || !hex(&b[0..2]) || &b[0..2] == b"ff" {
        return false;
    }
    let fields_ok = b[2] == b'-'
        && hex(&b[3..35])
        && b[35] == b'-'
        && hex(&b[36..52])
        && b[52] == b'-'
        && hex(&b[53..55]);
    fields_ok && (b.len() == 55 || (&b[0..2] != b"00" && b[55] == b'-'))
}

impl opentelemetry::propagation::TextMapPropagator for StrictTraceContext {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        self.0.inject_context(cx, injector);
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match extractor.get("traceparent") {
            Some(v) if valid_traceparent(v) => self.0.extract_with_context(cx, extractor),
            _ => cx.clone(),
        }
    }

    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        self.0.fields()
    }
}

/// Writes `cx` (its span's trace context and its baggage) into `carrier`.
pub fn inject(cx: &Context, carrier: &mut dyn Injector) {
    global::get_text_map_propagator(|p| p.inject_context(cx, carrier));
}

/// Writes the current context into `carrier`.
pub fn inject_current(carrier: &mut dyn Injector) {
    inject(&Context::current(), carrier);
}

/// The context `carrier` carries: a remote parent span and baggage, or nothing (an
/// invalid `traceparent` is ignored, so the receiver starts a new trace).
pub fn extract(carrier: &dyn Extractor) -> Context {
    global::get_text_map_propagator(|p| p.extract(carrier))
}

/// [`extract`] onto `cx` instead of an empty context.
pub fn extract_with_context(cx: &Context, carrier: &dyn Extractor) -> Context {
    global::get_text_map_propagator(|p| p.extract_with_context(cx, carrier))
}

/// An `http::HeaderMap` as a carrier to write to (values that are not valid header values
/// are skipped).
pub struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(val)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, val);
        }
    }
}

/// An `http::HeaderMap` as a carrier to read from.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Any `String → String` map as a carrier (message headers stored as a map, job payloads).
pub struct StringMap<'a, M>(pub &'a mut M);

impl Injector for StringMap<'_, BTreeMap<String, String>> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Injector for StringMap<'_, HashMap<String, String>> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Reads from a `BTreeMap<String, String>`.
pub struct StringMapExtractor<'a>(pub &'a BTreeMap<String, String>);

impl Extractor for StringMapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry::baggage::BaggageExt;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

    fn remote(flags: TraceFlags) -> Context {
        let state =
            TraceState::from_key_value([("vendor", "x1"), ("strand", "y2")]).expect("valid tracestate");
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            flags,
            true,
            state,
        );
        Context::new()
            .with_remote_span_context(sc)
            .with_baggage([KeyValue::new("patient.tenant", "clinic-7")])
    }

    #[test]
    fn inject_then_extract_keeps_ids_flags_tracestate_and_baggage() {
        install_propagator();
        for flags in [TraceFlags::SAMPLED, TraceFlags::NOT_SAMPLED] {
            let cx = remote(flags);
            let mut headers = http::HeaderMap::new();
            inject(&cx, &mut HeaderInjector(&mut headers));
            assert_eq!(
                headers["traceparent"],
                format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0{}", flags.to_u8())
            );
            let back = extract(&HeaderExtractor(&headers));
            let sc = back.span().span_context().clone();
            assert_eq!(sc, cx.span().span_context().clone());
            assert!(sc.is_remote());
            assert_eq!(sc.trace_state().header(), "vendor=x1,strand=y2");
            assert_eq!(back.baggage().get("patient.tenant").map(|v| v.to_string()), Some("clinic-7".into()));

            let mut map = BTreeMap::new();
            inject(&cx, &mut StringMap(&mut map));
            let again = extract(&StringMapExtractor(&map));
            assert_eq!(again.span().span_context(), cx.span().span_context());
        }
    }

    #[test]
    fn invalid_traceparent_is_ignored_and_starts_a_new_trace() {
        install_propagator();
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
            "00-\u{1F600}\u{1F600}-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            let mut map = BTreeMap::new();
            map.insert("traceparent".to_owned(), bad.to_owned());
            map.insert("tracestate".to_owned(), "=,=,%%%".to_owned());
            let cx = extract(&StringMapExtractor(&map));
            assert!(!cx.span().span_context().is_valid(), "{bad:?} was accepted");
        }
        // A later version may append fields; the known ones are read.
        let mut map = BTreeMap::new();
        map.insert(
            "traceparent".to_owned(),
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future".to_owned(),
        );
        assert!(extract(&StringMapExtractor(&map)).span().span_context().is_valid());
    }
}
