//! Jaeger receivers, for services that still export with a Jaeger client or the OTel SDKs'
//! Jaeger exporters:
//!
//! - **HTTP** (`:14268`) `POST /api/traces`: one `Batch` in the thrift binary protocol,
//!   `Content-Type: application/x-thrift` (or `application/vnd.apache.thrift.binary`),
//!   optionally gzip. Answers `202 Accepted`.
//! - **UDP agent** (`:6831`): `Agent.emitBatch` messages in the thrift compact protocol, one
//!   per datagram; and (`:6832`) in the thrift binary protocol, what the Node
//!   `jaeger-client` and the OTel JS Jaeger exporter send. UDP has no answer, so refused
//!   datagrams are only counted and logged.
//!
//! [`thrift`] reads both protocols, [`model`] the `jaeger.thrift` structs, [`convert`] maps
//! them to the OTLP model the way the OpenTelemetry Collector's Jaeger receiver does.

pub mod convert;
pub mod encode;
pub mod model;
pub mod thrift;

use std::future::Future;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use strand_core::SpanBatch;
use strand_otlp::Rejections;
use tokio::net::UdpSocket;

use crate::http_body::media_type;
use crate::legacy::receive;
use crate::{IngestError, Protocol, Receiver};

/// Largest UDP datagram.
pub const MAX_DATAGRAM: usize = 65_535;

/// Decodes an HTTP body: a binary-protocol `Batch`.
pub fn decode_http(body: &[u8]) -> Result<(SpanBatch, Rejections), IngestError> {
    let batch = model::decode_binary_batch(body)
        .map_err(|e| IngestError::BadRequest(format!("invalid thrift Batch: {e}")))?;
    Ok(convert::to_span_batch(batch))
}

/// Decodes an agent datagram: a compact-protocol `emitBatch` message.
pub fn decode_agent(datagram: &[u8]) -> Result<(SpanBatch, Rejections), IngestError> {
    let batch = model::decode_compact_emit_batch(datagram)
        .map_err(|e| IngestError::BadRequest(format!("invalid compact-thrift emitBatch: {e}")))?;
    Ok(convert::to_span_batch(batch))
}

/// Decodes an agent datagram of the binary port: a binary-protocol `emitBatch` message.
pub fn decode_agent_binary(datagram: &[u8]) -> Result<(SpanBatch, Rejections), IngestError> {
    let batch = model::decode_binary_emit_batch(datagram)
        .map_err(|e| IngestError::BadRequest(format!("invalid binary-thrift emitBatch: {e}")))?;
    Ok(convert::to_span_batch(batch))
}

/// The routes of the Jaeger thrift HTTP receiver.
pub fn router(receiver: Receiver) -> Router {
    Router::new().route("/api/traces", post(submit)).layer(DefaultBodyLimit::disable()).with_state(receiver)
}

async fn submit(State(rx): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    let decoder = match media_type(&headers).as_str() {
        "application/x-thrift" | "application/vnd.apache.thrift.binary" => Ok(decode_http),
        "" => Err(IngestError::UnsupportedMediaType(
            "missing Content-Type; send a thrift binary Batch as application/x-thrift".into(),
        )),
        other => Err(IngestError::UnsupportedMediaType(format!(
            "unsupported Content-Type `{other}`; send a thrift binary Batch as application/x-thrift"
        ))),
    };
    receive(&rx, Protocol::JaegerThriftHttp, &headers, body, decoder).await
}

/// Serves one of the agent's UDP ports until `stop` resolves: `protocol` is
/// [`Protocol::JaegerAgentCompact`] (`:6831`) or [`Protocol::JaegerAgentBinary`] (`:6832`).
/// Each datagram is decoded and stored in its own task, holding one of the receiver's
/// in-flight slots; a datagram that finds none free is dropped and counted (UDP cannot
/// push back).
pub async fn serve_agent(
    socket: UdpSocket,
    rx: Receiver,
    stop: impl Future<Output = ()>,
    protocol: Protocol,
) -> std::io::Result<()> {
    let decode = if protocol == Protocol::JaegerAgentBinary { decode_agent_binary } else { decode_agent };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(stop);
    loop {
        let n = tokio::select! {
            _ = &mut stop => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, _)) => n,
                // ICMP errors surface on some platforms as errors on the next recv: not fatal.
                Err(e) => {
                    tracing::debug!(error = %e, "jaeger agent socket error");
                    continue;
                }
            },
        };
        let slot = match rx.admit() {
            Ok(slot) => slot,
            Err(e) => {
                rx.refused(protocol);
                tracing::debug!(error = %e, "jaeger agent datagram dropped");
                continue;
            }
        };
        let datagram = buf[..n].to_vec();
        let rx = rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result = match decode(&datagram) {
                Ok((batch, rejections)) => rx.store(protocol, batch, &rejections).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                rx.refused(protocol);
                tracing::debug!(error = %e, bytes = datagram.len(), "jaeger agent datagram refused");
            }
        });
    }
}
