//! Request size limits.

/// Limits applied by every receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest request body accepted, compressed or not, and the largest a compressed body
    /// may inflate to.
    pub max_request_bytes: usize,
    /// Bodies above this size are decoded on the blocking pool instead of an async worker.
    pub blocking_decode_threshold: usize,
    /// Requests decoded or stored at once, across all OTLP receivers; more are refused
    /// (HTTP 429, gRPC `RESOURCE_EXHAUSTED`). HTTP requests take their slot before the body is
    /// read, so HTTP bodies in memory stay under about
    /// `2 × max_request_bytes × max_concurrent_requests`. gRPC messages take it after tonic
    /// has buffered them (each capped at `max_request_bytes`), so for gRPC this bounds the
    /// decode and store work, not the buffered messages.
    pub max_concurrent_requests: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 * 1024 * 1024,
            blocking_decode_threshold: 64 * 1024,
            max_concurrent_requests: 64,
        }
    }
}
