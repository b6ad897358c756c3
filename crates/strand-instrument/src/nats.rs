//! NATS and JetStream: the trace rides in message headers.
//!
//! [`publish_jetstream`] / [`publish`] wrap a publish in a PRODUCER span and inject its
//! context into the headers; [`process_jetstream`] / [`process`] run the handling of a
//! received message in a CONSUMER span parented to the producer; [`process_batch`] links
//! every producer of a batch. Messaging semantic conventions: `messaging.system` = `nats`,
//! `messaging.destination.name`, `messaging.operation.type` (`send`, `process`),
//! `messaging.operation.name`, `messaging.message.id` (JetStream: `stream:sequence`),
//! `messaging.message.body.size`, `messaging.consumer.group.name` (the durable consumer).

use std::future::Future;

use async_nats::HeaderMap;
use bytes::Bytes;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{
    FutureExt as _, Link, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, global};

use crate::propagation::{extract, inject};
use crate::start_span;

/// Writes into NATS headers.
pub struct NatsInjector<'a>(pub &'a mut HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Reads from NATS headers.
pub struct NatsExtractor<'a>(pub &'a HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(async_nats::HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// A publish or a handler that failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The JetStream publish was refused or not acknowledged.
    #[error("jetstream publish to `{subject}`: {message}")]
    Publish {
        /// Where it went.
        subject: String,
        /// What the client said.
        message: String,
    },
}

fn producer(subject: &str, size: usize) -> Context {
    start_span(
        format!("send {subject}"),
        SpanKind::Producer,
        vec![
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.destination.name", subject.to_owned()),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.operation.name", "publish"),
            KeyValue::new("messaging.message.body.size", size as i64),
        ],
        &Context::current(),
    )
}

/// Publishes to a JetStream stream inside a PRODUCER span (child of the current span) and
/// waits for the stream's acknowledgement, whose `stream:sequence` becomes the message id.
pub async fn publish_jetstream(
    js: &async_nats::jetstream::Context,
    subject: impl Into<String>,
    mut headers: HeaderMap,
    payload: Bytes,
) -> Result<async_nats::jetstream::publish::PublishAck, NatsError> {
    let subject = subject.into();
    let cx = producer(&subject, payload.len());
    inject(&cx, &mut NatsInjector(&mut headers));
    let fail =
        |e: &dyn std::fmt::Display| NatsError::Publish { subject: subject.clone(), message: e.to_string() };
    let result = async {
        let ack = js.publish_with_headers(subject.clone(), headers, payload).await.map_err(|e| fail(&e))?;
        ack.await.map_err(|e| fail(&e))
    }
    .with_context(cx.clone())
    .await;
    let span = cx.span();
    match &result {
        Ok(ack) => span
            .set_attribute(KeyValue::new("messaging.message.id", format!("{}:{}", ack.stream, ack.sequence))),
        Err(e) => {
            span.set_attribute(KeyValue::new("error.type", "publish"));
            span.set_status(Status::error(e.to_string()));
        }
    }
    span.end();
    result
}

/// Publishes a core NATS message inside a PRODUCER span.
pub async fn publish(
    client: &async_nats::Client,
    subject: impl Into<String>,
    mut headers: HeaderMap,
    payload: Bytes,
) -> Result<(), async_nats::PublishError> {
    let subject = subject.into();
    let cx = producer(&subject, payload.len());
    inject(&cx, &mut NatsInjector(&mut headers));
    let result = client.publish_with_headers(subject, headers, payload).await;
    if let Err(e) = &result {
        cx.span().set_status(Status::error(e.to_string()));
    }
    cx.span().end();
    result
}

fn consumer(subject: &str, parent: &Context, mut attrs: Vec<KeyValue>, links: Vec<Link>) -> Context {
    attrs.extend([
        KeyValue::new("messaging.system", "nats"),
        KeyValue::new("messaging.destination.name", subject.to_owned()),
        KeyValue::new("messaging.operation.type", "process"),
        KeyValue::new("messaging.operation.name", "process"),
    ]);
    let tracer = global::tracer_provider().tracer_with_scope(crate::SCOPE.clone());
    let span = tracer
        .span_builder(format!("process {subject}"))
        .with_kind(SpanKind::Consumer)
        .with_attributes(attrs)
        .with_links(links)
        .start_with_context(&tracer, parent);
    parent.with_span(span)
}

/// Runs `f` (the handling of `msg`) in a CONSUMER span parented to the message's producer.
pub async fn process_jetstream<F, Fut, T, E>(msg: &async_nats::jetstream::Message, f: F) -> Result<T, E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let parent = msg.headers.as_ref().map(|h| extract(&NatsExtractor(h))).unwrap_or_default();
    let mut attrs = vec![KeyValue::new("messaging.message.body.size", msg.payload.len() as i64)];
    if let Ok(info) = msg.info() {
        attrs
            .push(KeyValue::new("messaging.message.id", format!("{}:{}", info.stream, info.stream_sequence)));
        attrs.push(KeyValue::new("messaging.consumer.group.name", info.consumer.to_owned()));
        attrs.push(KeyValue::new("messaging.nats.delivered", info.delivered));
    }
    crate::run_in_span(consumer(&msg.subject, &parent, attrs, Vec::new()), f).await
}

/// Runs `f` (the handling of a core NATS `msg`) in a CONSUMER span parented to the producer.
pub async fn process<F, Fut, T, E>(msg: &async_nats::Message, f: F) -> Result<T, E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let parent = msg.headers.as_ref().map(|h| extract(&NatsExtractor(h))).unwrap_or_default();
    let attrs = vec![KeyValue::new("messaging.message.body.size", msg.payload.len() as i64)];
    crate::run_in_span(consumer(&msg.subject, &parent, attrs, Vec::new()), f).await
}

/// Runs `f` (the handling of several messages together) in one CONSUMER span linked to
/// every message's producer; when they all come from one producer span it is also the
/// parent, otherwise the current span is.
pub async fn process_batch<F, Fut, T, E>(
    subject: &str,
    msgs: &[async_nats::jetstream::Message],
    f: F,
) -> Result<T, E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let producers: Vec<Context> = msgs
        .iter()
        .map(|m| m.headers.as_ref().map(|h| extract(&NatsExtractor(h))).unwrap_or_default())
        .collect();
    let contexts: Vec<_> =
        producers.iter().map(|c| c.span().span_context().clone()).filter(|sc| sc.is_valid()).collect();
    let links = contexts.iter().map(|sc| Link::with_context(sc.clone())).collect();
    let one_parent = !contexts.is_empty() && contexts.iter().all(|sc| sc == &contexts[0]);
    let parent = if one_parent {
        producers.into_iter().find(|c| c.span().span_context().is_valid()).unwrap_or_default()
    } else {
        Context::current()
    };
    let attrs = vec![KeyValue::new("messaging.batch.message_count", msgs.len() as i64)];
    crate::run_in_span(consumer(subject, &parent, attrs, links), f).await
}
