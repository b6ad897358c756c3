//! The `integrity:` section of the server's configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strand_core::units::HumanDuration;

/// Chain-integrity analysis settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrityConfig {
    /// Analyse chains at all (every span is looked at before sampling).
    pub enabled: bool,
    /// A trace has settled when no span of it arrived for this long; only settled traces
    /// are counted in edge health and found by `integrity=` searches.
    pub settle_time: HumanDuration,
    /// How long a message may wait in a queue before its producer counts as unanswered,
    /// and how far apart a lost producer and a new-root consumer may be to be matched.
    pub hop_window: HumanDuration,
    /// Clock disagreement between two services tolerated before `clock_skew`.
    pub clock_skew_tolerance: HumanDuration,
    /// Spans held for analysis (traces settling, and settled traces kept for the hop
    /// window so late spans and the other halves of breaks find them), each about 370 bytes
    /// with the indexes. Beyond it the quietest traces are settled early and settled ones
    /// dropped before their hop window ends. Enough for `spans/s × (settle_time +
    /// hop_window)`: 500,000 covers 1,500 spans a second.
    pub max_buffered_spans: usize,
    /// Settled traces with findings kept in memory for `integrity=` searches and trace
    /// reads (all are in the findings log on disk); the oldest beyond it are forgotten.
    pub max_indexed_traces: usize,
    /// How long per-minute edge counts are kept (`GET /api/v1/integrity/edges`).
    pub edge_history: HumanDuration,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            settle_time: HumanDuration(Duration::from_secs(30)),
            hop_window: HumanDuration(Duration::from_secs(300)),
            clock_skew_tolerance: HumanDuration(Duration::from_millis(1)),
            max_buffered_spans: 500_000,
            max_indexed_traces: 200_000,
            edge_history: HumanDuration(Duration::from_secs(7 * 86_400)),
        }
    }
}

impl IntegrityConfig {
    /// Every problem, with its key path under `integrity.`.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.settle_time.0.is_zero() {
            errs.push("integrity.settle_time must be more than 0s".into());
        }
        if self.max_buffered_spans == 0 {
            errs.push("integrity.max_buffered_spans must be at least 1".into());
        }
        if self.max_indexed_traces == 0 {
            errs.push("integrity.max_indexed_traces must be at least 1".into());
        }
        if self.hop_window.0 > Duration::from_secs(30 * 86_400)
            || self.settle_time.0 > Duration::from_secs(86_400)
        {
            errs.push("integrity.hop_window must be at most 30d and integrity.settle_time at most 1d".into());
        }
        if self.edge_history.0 < Duration::from_secs(60) {
            errs.push("integrity.edge_history must be at least 1m".into());
        }
        errs
    }
}
