//! Request size limits.

/// Limits applied by every receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest request body accepted, compressed or not, and the largest a compressed body
    /// may inflate to.
    pub max_request_bytes: usize,
    /// Bodies above this size are decoded on the blocking pool instead of an async worker.
    pub blocking_decode_threshold: usize,
    /// Requests decoded or stored at once, across all receivers; more are refused (HTTP 429,
    /// gRPC `RESOURCE_EXHAUSTED`). A request takes its slot once its body is read, so a
    /// slow client holds none while it sends. HTTP bodies being received share a budget of
    /// `2 × max_request_bytes × max_concurrent_requests` bytes (429 beyond it). gRPC
    /// messages are buffered by tonic (each capped at `max_request_bytes`) before they
    /// take a slot.
    pub max_concurrent_requests: usize,
    /// Longest an HTTP request body may take to arrive, from the handler's first read;
    /// slower is refused with 408.
    pub body_read_timeout: std::time::Duration,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 * 1024 * 1024,
            blocking_decode_threshold: 64 * 1024,
            max_concurrent_requests: 64,
            body_read_timeout: std::time::Duration::from_secs(30),
        }
    }
}
