//! Request size limits.

/// Limits applied by every receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest request body accepted, compressed or not, and the largest a compressed body
    /// may inflate to.
    pub max_request_bytes: usize,
    /// Bodies above this size are decoded on the blocking pool instead of an async worker.
    pub blocking_decode_threshold: usize,
    /// Requests being read, decoded or stored at once, across all OTLP receivers; more are
    /// refused (HTTP 429, gRPC `RESOURCE_EXHAUSTED`) so memory stays bounded by about
    /// `2 × max_request_bytes × max_concurrent_requests`.
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
