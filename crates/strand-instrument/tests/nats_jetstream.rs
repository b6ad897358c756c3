//! NATS JetStream against a real `nats-server` (Debian's package; `scripts/test.sh` installs
//! it): the consumer's span is the producer's child, a batch links its producers.

#![cfg(feature = "nats")]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt as _;
use opentelemetry::global;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

struct NatsServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nats-server -js` on a free port, or `None` when it is not installed and not required.
async fn nats_server() -> Option<NatsServer> {
    let bin = support::installed("nats-server", &["/usr/sbin/nats-server", "/usr/bin/nats-server"])?;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_port();
    let mut server = NatsServer {
        child: spawn(bin, port, dir.path()),
        url: format!("nats://127.0.0.1:{port}"),
        _dir: dir,
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("nats-server exited with {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nats-server did not listen on {port}");
}

fn spawn(bin: &str, port: u16, dir: &std::path::Path) -> Child {
    Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_spans_are_children_of_producer_spans() {
    let Some(server) = nats_server().await else { return };
    let exporter = InMemorySpanExporter::default();
    global::set_tracer_provider(SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build());
    strand_instrument::propagation::install_propagator();

    let client = async_nats::connect(&server.url).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: "REPORTS".into(),
        subjects: vec!["patient-report.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");

    // Two requests, each publishing one message.
    let tracer = global::tracer("test");
    let mut request_traces = Vec::new();
    for i in 0..2 {
        let cx = opentelemetry::Context::current_with_span(tracer.start(format!("request {i}")));
        request_traces.push(cx.span().span_context().trace_id());
        let _attached = cx.clone().attach();
        let ack = strand_instrument::nats::publish_jetstream(
            &js,
            "patient-report.submitted",
            async_nats::HeaderMap::new(),
            format!("report {i}").into(),
        )
        .await
        .expect("publish");
        assert_eq!(ack.sequence, i as u64 + 1);
        cx.span().end();
    }

    let stream = js.get_stream("REPORTS").await.expect("stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("notify".into()),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.fetch().max_messages(2).messages().await.expect("fetch");
    let mut received = Vec::new();
    while let Some(msg) = messages.next().await {
        received.push(msg.expect("message"));
    }
    assert_eq!(received.len(), 2);
    let first = &received[0];
    let out: Result<(), String> =
        strand_instrument::nats::process_jetstream(first, || async { Err("sms gateway down".into()) }).await;
    assert!(out.is_err());
    strand_instrument::nats::process_batch("patient-report.submitted", &received, || async {
        Ok::<_, String>(())
    })
    .await
    .expect("batch");
    for m in &received {
        m.ack().await.expect("ack");
    }

    let spans = exporter.get_finished_spans().expect("spans");
    let producers: Vec<_> = spans.iter().filter(|s| s.span_kind == SpanKind::Producer).collect();
    assert_eq!(producers.len(), 2);
    let p0 = producers.iter().find(|s| s.span_context.trace_id() == request_traces[0]).expect("producer 0");
    assert_eq!(p0.name, "send patient-report.submitted");
    assert!(
        p0.attributes
            .iter()
            .any(|kv| kv.key.as_str() == "messaging.message.id" && kv.value.to_string() == "REPORTS:1")
    );
    let consumers: Vec<_> = spans.iter().filter(|s| s.span_kind == SpanKind::Consumer).collect();
    let single = consumers.iter().find(|s| s.links.is_empty()).expect("single consumer span");
    assert_eq!(single.parent_span_id, p0.span_context.span_id(), "consumer parented to its producer");
    assert_eq!(single.span_context.trace_id(), request_traces[0]);
    assert_eq!(single.status, Status::error("sms gateway down"));
    assert!(
        single
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "messaging.consumer.group.name" && kv.value.to_string() == "notify")
    );
    let batch = consumers.iter().find(|s| !s.links.is_empty()).expect("batch span");
    let linked: Vec<_> = batch.links.iter().map(|l| l.span_context.trace_id()).collect();
    assert_eq!(linked.len(), 2);
    assert!(request_traces.iter().all(|t| linked.contains(t)), "the batch links both producers");
}
