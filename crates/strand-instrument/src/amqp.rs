//! AMQP 0.9.1 (lapin): the trace rides in the message's header table.
//!
//! [`publish`] wraps `basic_publish` (and the broker's confirm) in a PRODUCER span and
//! injects its context into the properties' headers; [`process`] runs the handling of a
//! delivery in a CONSUMER span parented to the producer. Attributes: `messaging.system` =
//! `rabbitmq`, `messaging.destination.name` (exchange, or the routing key for the default
//! exchange), `messaging.rabbitmq.destination.routing_key`, `messaging.operation.type`,
//! `messaging.message.id` (the `message_id` property), `messaging.message.body.size`.

use std::future::Future;

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};

use crate::propagation::{extract, inject};
use crate::start_span;

/// Writes into an AMQP field table (as long strings).
pub struct FieldTableInjector<'a>(pub &'a mut FieldTable);

impl Injector for FieldTableInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(ShortString::from(key.to_owned()), AMQPValue::LongString(value.into()));
    }
}

/// Reads from an AMQP field table (long and short string values; others are skipped).
pub struct FieldTableExtractor<'a>(pub &'a FieldTable);

impl Extractor for FieldTableExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}

fn destination(exchange: &str, routing_key: &str) -> String {
    if exchange.is_empty() { routing_key.to_owned() } else { exchange.to_owned() }
}

/// Publishes inside a PRODUCER span (child of the current span) and waits for the broker's
/// confirm (a no-op on channels without confirms).
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> lapin::Result<()> {
    let dest = destination(exchange, routing_key);
    let mut attrs = vec![
        KeyValue::new("messaging.system", "rabbitmq"),
        KeyValue::new("messaging.destination.name", dest.clone()),
        KeyValue::new("messaging.rabbitmq.destination.routing_key", routing_key.to_owned()),
        KeyValue::new("messaging.operation.type", "send"),
        KeyValue::new("messaging.operation.name", "publish"),
        KeyValue::new("messaging.message.body.size", payload.len() as i64),
    ];
    if let Some(id) = properties.message_id() {
        attrs.push(KeyValue::new("messaging.message.id", id.to_string()));
    }
    let cx = start_span(format!("send {dest}"), SpanKind::Producer, attrs, &Context::current());
    let mut headers = properties.headers().clone().unwrap_or_default();
    inject(&cx, &mut FieldTableInjector(&mut headers));
    let properties = properties.with_headers(headers);
    let result = async {
        channel
            .basic_publish(exchange.into(), routing_key.into(), Default::default(), payload, properties)
            .await?
            .await
            .map(|_| ())
    }
    .with_context(cx.clone())
    .await;
    if let Err(e) = &result {
        cx.span().set_status(Status::error(e.to_string()));
    }
    cx.span().end();
    result
}

/// The producer's context carried by a delivery's headers (empty when it has none).
pub fn delivery_context(properties: &BasicProperties) -> Context {
    properties.headers().as_ref().map(|h| extract(&FieldTableExtractor(h))).unwrap_or_default()
}

/// Runs `f` (the handling of `delivery`) in a CONSUMER span parented to its producer.
pub async fn process<F, Fut, T, E>(delivery: &lapin::message::Delivery, f: F) -> Result<T, E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let parent = delivery_context(&delivery.properties);
    let dest = destination(delivery.exchange.as_str(), delivery.routing_key.as_str());
    let mut attrs = vec![
        KeyValue::new("messaging.system", "rabbitmq"),
        KeyValue::new("messaging.destination.name", dest.clone()),
        KeyValue::new("messaging.rabbitmq.destination.routing_key", delivery.routing_key.to_string()),
        KeyValue::new("messaging.operation.type", "process"),
        KeyValue::new("messaging.operation.name", "process"),
        KeyValue::new("messaging.message.body.size", delivery.data.len() as i64),
        KeyValue::new("messaging.rabbitmq.message.delivery_tag", delivery.delivery_tag as i64),
    ];
    if let Some(id) = delivery.properties.message_id() {
        attrs.push(KeyValue::new("messaging.message.id", id.to_string()));
    }
    crate::run_in_span(start_span(format!("process {dest}"), SpanKind::Consumer, attrs, &parent), f).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    #[test]
    fn field_tables_carry_the_trace_both_ways() {
        crate::propagation::install_propagator();
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(sc.clone());
        let mut table = FieldTable::default();
        table.insert("x-app".into(), AMQPValue::Boolean(true));
        inject(&cx, &mut FieldTableInjector(&mut table));
        let props = BasicProperties::default().with_headers(table);
        assert_eq!(delivery_context(&props).span().span_context(), &sc);
        // A table with a non-string traceparent is ignored, not trusted.
        let mut odd = FieldTable::default();
        odd.insert("traceparent".into(), AMQPValue::LongLongInt(7));
        assert!(
            !delivery_context(&BasicProperties::default().with_headers(odd)).span().span_context().is_valid()
        );
        assert!(!delivery_context(&BasicProperties::default()).span().span_context().is_valid());
    }
}
