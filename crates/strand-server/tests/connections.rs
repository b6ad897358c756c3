//! Every HTTP listener and the OTLP/gRPC one cap its open connections and closes idle ones, so idle or abandoned
//! clients cannot hold the server's descriptors; HTTP/1 listeners also cut off a client
//! that trickles its request headers.

mod common;

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

async fn metric(server: &common::TestServer, series: &str) -> Option<f64> {
    let text = reqwest::get(server.query("/metrics")).await.ok()?.text().await.ok()?;
    common::metric_value(&text, series)
}

/// Waits (at most 30 s) for the server to close `s`: a read gives end of file or an error
/// (what the server sends first, like HTTP/2's settings, is read past).
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    let closed = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), closed).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let server = common::start(|c| c.connections.idle_timeout = "1s".parse().expect("duration")).await;
    for port in [server.otlp_http, server.grpc] {
        let mut idle = TcpStream::connect(port).await.expect("connect");
        assert!(closed_by_server(&mut idle).await, "an idle connection to {port} is closed");
    }
    assert!(metric(&server, "strand_http_connections_idle_closed_total").await >= Some(2.0));
    // A client that talks is served as usual.
    server.export_json(std::fs::read(common::fixture("otlp/trace.json")).expect("fixture")).await;
    server.stop().await;
}

/// Opens the two connections a cap of 2 allows to `addr`, waits until the server counts
/// `open` connections in all, then checks that a third is closed at once and that
/// `refused` connections have been refused in all. Returns the two held open.
async fn fill_and_overflow(
    server: &common::TestServer,
    addr: std::net::SocketAddr,
    open: f64,
    refused: f64,
) -> [TcpStream; 2] {
    let held =
        [TcpStream::connect(addr).await.expect("connect"), TcpStream::connect(addr).await.expect("connect")];
    common::eventually("the two connections to be open", || async {
        (metric(server, "strand_http_connections_open").await >= Some(open)).then_some(())
    })
    .await;
    let mut third = TcpStream::connect(addr).await.expect("connect");
    assert!(closed_by_server(&mut third).await, "the third connection to {addr} is closed at once");
    assert_eq!(metric(server, "strand_http_connections_refused_total").await, Some(refused));
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_and_counted() {
    let server = common::start(|c| c.connections.max_per_listener = 2).await;
    // The query port is another listener: its own connection (each /metrics request)
    // counts too. The OTLP/gRPC listener has its own cap.
    let held = fill_and_overflow(&server, server.otlp_http, 3.0, 1.0).await;
    let grpc_held = fill_and_overflow(&server, server.grpc, 5.0, 2.0).await;
    drop(grpc_held);
    drop(held);
    let trace = std::fs::read(common::fixture("otlp/trace.json")).expect("fixture");
    common::eventually("a connection to be accepted again", || {
        let trace = trace.clone();
        let url = server.otlp_url();
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(trace)
                .send()
                .await
                .ok()?;
            (resp.status() == 200).then_some(())
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_request_headers_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let server = common::start(|c| c.connections.header_read_timeout = "1s".parse().expect("duration")).await;
    for addr in [server.otlp_http, server.http, server.zipkin] {
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"POST /v1/traces HTTP/1.1\r\nhost: strand\r\n").await.expect("write");
        // A header line every 100 ms: never idle, never done.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 256];
        loop {
            assert!(std::time::Instant::now() < deadline, "a trickling client to {addr} was never cut off");
            if slow.write_all(b"x-slow: 1\r\n").await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => {
                    // hyper may answer before it closes; anything but a success is a cut.
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    assert!(!head.starts_with("HTTP/1.1 2"), "{head}");
                }
                Err(_) => {}
            }
        }
    }
    // A client that sends its request at once is served as usual.
    server.export_json(std::fs::read(common::fixture("otlp/trace.json")).expect("fixture")).await;
    server.stop().await;
}
