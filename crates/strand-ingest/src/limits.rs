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
    /// slow client holds none while it sends: what it has sent so far is counted in
    /// `memory_bytes` instead.
    pub max_concurrent_requests: usize,
    /// The memory budget ([`crate::memory::MemoryBudget`]): bytes being received (HTTP
    /// bodies and gRPC messages as they arrive, inflated bodies), decoded batches on their
    /// way to storage and, once the server counts them in, the stores' data not yet in
    /// blocks. Beyond it requests are refused (HTTP 429, gRPC `RESOURCE_EXHAUSTED`).
    pub memory_bytes: u64,
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
            memory_bytes: 2 * 1024 * 1024 * 1024,
            body_read_timeout: std::time::Duration::from_secs(30),
        }
    }
}
