//! AMQP 0.9.1 against a real RabbitMQ broker (Debian's `rabbitmq-server`; `scripts/test.sh`
//! installs it): the trace crosses the broker in the message headers, the consumer's span is
//! the producer's child, and an uninstrumented message starts a new trace.

#![cfg(feature = "amqp")]

mod support;

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use opentelemetry::global;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

const BROKER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// A broker and its own Erlang port mapper, each in its own process group, killed on drop.
struct RabbitMq {
    broker: Child,
    epmd: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        // The broker script starts the Erlang VM and its helpers as children: end the group.
        for child in [&mut self.broker, &mut self.epmd] {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
        }
    }
}

/// RabbitMQ on free ports with its state in a temporary directory, or `None` when it is not
/// installed and not required.
async fn rabbitmq() -> Option<RabbitMq> {
    let broker = support::installed("rabbitmq-server", &[BROKER])?;
    let dir = tempfile::tempdir().expect("tempdir");
    let (amqp_port, dist_port, epmd_port) =
        (support::free_port(), support::free_port(), support::free_port());
    let log = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
    // Our own epmd, so the test leaves no daemon behind and ignores any system one.
    let epmd = Command::new("epmd")
        .args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(log("epmd.log"))
        .process_group(0)
        .spawn()
        .expect("start epmd");
    let plugins = dir.path().join("enabled_plugins");
    std::fs::write(&plugins, "[].").expect("plugins file");
    let broker = Command::new(broker)
        .env("HOME", dir.path())
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .env("RABBITMQ_NODENAME", format!("strand-test-{amqp_port}@localhost"))
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", amqp_port.to_string())
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env("RABBITMQ_MNESIA_BASE", dir.path().join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.path().join("log"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
        .env("RABBITMQ_CONFIG_FILE", dir.path().join("none"))
        .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.path().join("none-advanced"))
        .stdin(Stdio::null())
        .stdout(log("broker.out"))
        .stderr(log("broker.err"))
        .process_group(0)
        .spawn()
        .expect("start rabbitmq-server");
    let mut server =
        RabbitMq { broker, epmd, url: format!("amqp://guest:guest@127.0.0.1:{amqp_port}/%2f"), dir };
    // The VM boots in a few seconds; give a busy machine a minute.
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", amqp_port)).await.is_ok() {
            return Some(server);
        }
        if let Ok(Some(status)) = server.broker.try_wait() {
            panic!("rabbitmq-server exited with {status}:\n{}", server.output());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("rabbitmq-server did not listen on {amqp_port}:\n{}", server.output());
}

impl RabbitMq {
    /// An AMQP connection. The port opens while the broker is still booting, and a
    /// handshake then is aborted: retry until one succeeds, for at most a minute.
    async fn connect(&self) -> Connection {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match Connection::connect(&self.url, ConnectionProperties::default()).await {
                Ok(conn) => return conn,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("rabbitmq not ready yet ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("connect: {e}\n{}", self.output()),
            }
        }
    }

    fn output(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        read(self.dir.path().join("broker.out")) + &read(self.dir.path().join("broker.err"))
    }
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_spans_are_children_of_producer_spans_across_the_broker() {
    let Some(server) = rabbitmq().await else { return };
    let exporter = InMemorySpanExporter::default();
    global::set_tracer_provider(SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build());
    strand_instrument::propagation::install_propagator();

    let conn = server.connect().await;
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let queue = "patient-report.submitted";
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("queue");
    channel
        .exchange_declare(
            "reports".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    channel
        .queue_bind(
            queue.into(),
            "reports".into(),
            "submitted".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");

    // Two requests: one publishes through the default exchange, one through `reports`.
    let tracer = global::tracer("test");
    let mut request_traces = Vec::new();
    for (i, (exchange, routing_key)) in [("", queue), ("reports", "submitted")].into_iter().enumerate() {
        let cx = opentelemetry::Context::current_with_span(tracer.start(format!("request {i}")));
        request_traces.push(cx.span().span_context().trace_id());
        let _attached = cx.clone().attach();
        let props = BasicProperties::default().with_message_id(format!("report-{i}").into());
        strand_instrument::amqp::publish(
            &channel,
            exchange,
            routing_key,
            format!("report {i}").as_bytes(),
            props,
        )
        .await
        .expect("publish");
        cx.span().end();
    }
    // A third message from a publisher without instrumentation.
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            b"legacy",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");

    let consume_channel = conn.create_channel().await.expect("channel");
    let mut consumer = consume_channel
        .basic_consume(queue.into(), "notify".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    for i in 0..3 {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("delivery in time")
            .expect("consumer open")
            .expect("delivery");
        let out: Result<(), String> = strand_instrument::amqp::process(&delivery, || async move {
            if i == 0 { Err("sms gateway down".into()) } else { Ok(()) }
        })
        .await;
        assert_eq!(out.is_err(), i == 0);
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    conn.close(200, "done".into()).await.expect("close");

    let spans = exporter.get_finished_spans().expect("spans");
    let producers: Vec<_> = spans.iter().filter(|s| s.span_kind == SpanKind::Producer).collect();
    let consumers: Vec<_> = spans.iter().filter(|s| s.span_kind == SpanKind::Consumer).collect();
    assert_eq!((producers.len(), consumers.len()), (2, 3));
    for (i, trace_id) in request_traces.iter().enumerate() {
        let producer = producers.iter().find(|s| s.span_context.trace_id() == *trace_id).expect("producer");
        let consumer = consumers.iter().find(|s| s.span_context.trace_id() == *trace_id).expect("consumer");
        assert_eq!(
            consumer.parent_span_id,
            producer.span_context.span_id(),
            "consumer {i} parented to its producer"
        );
        let message_id = format!("report-{i}");
        for span in [producer, consumer] {
            assert_eq!(attr(span, "messaging.system").as_deref(), Some("rabbitmq"));
            assert_eq!(attr(span, "messaging.message.id"), Some(message_id.clone()));
            assert_eq!(attr(span, "messaging.message.body.size").as_deref(), Some("8"));
        }
        assert_eq!(attr(producer, "messaging.operation.type").as_deref(), Some("send"));
        assert_eq!(attr(consumer, "messaging.operation.type").as_deref(), Some("process"));
    }
    let by_default =
        producers.iter().find(|s| s.span_context.trace_id() == request_traces[0]).expect("producer");
    assert_eq!(by_default.name, "send patient-report.submitted");
    let by_exchange =
        producers.iter().find(|s| s.span_context.trace_id() == request_traces[1]).expect("producer");
    assert_eq!(by_exchange.name, "send reports");
    assert_eq!(attr(by_exchange, "messaging.rabbitmq.destination.routing_key").as_deref(), Some("submitted"));
    let failed = consumers.iter().find(|s| s.span_context.trace_id() == request_traces[0]).expect("consumer");
    assert_eq!(failed.status, Status::error("sms gateway down"));
    assert_eq!(failed.name, "process patient-report.submitted");

    // The uninstrumented message: a consumer span that starts its own trace.
    let legacy =
        consumers.iter().find(|s| !request_traces.contains(&s.span_context.trace_id())).expect("legacy");
    assert_eq!(legacy.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    assert_eq!(legacy.status, Status::Unset);
}
