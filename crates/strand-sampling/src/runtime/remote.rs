//! Jaeger remote sampling at run time: the strategies SDKs' remote samplers are answered
//! with (the server's `GET /sampling?service=X` asks [`RemoteSampling::strategy_for`]),
//! from the strategies file and the adaptive engine ([`crate::remote`]).
//!
//! A background task recomputes adaptive probabilities from the root spans the RED
//! observer counted (before tail sampling) every `calculation_interval`, persists them to
//! `<data_dir>/sampling/adaptive.json` so a restart resumes them, and re-reads the
//! strategies file every `reload_interval` (a file that no longer parses is logged and the
//! previous strategies stay).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use strand_core::MetricFamily;
use tracing::{info, warn};

use crate::red::RedMetrics;
use crate::remote::{
    Adaptive, AdaptiveProbability, RemoteSamplingConfig, StaticStrategies, Strategies, StrategyResponse,
};

/// Why remote sampling could not start.
#[derive(Debug, thiserror::Error)]
pub enum RemoteSamplingError {
    /// The strategies file could not be read.
    #[error("reading the sampling strategies file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The strategies file is not a valid Jaeger strategies document.
    #[error("sampling strategies file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RemoteStats {
    /// Strategies served.
    pub requests: AtomicU64,
    /// Requests refused (no or repeated `service`).
    pub bad_requests: AtomicU64,
    /// Adaptive calculations run.
    pub calculations: AtomicU64,
    /// Strategies file reloads that changed the strategies.
    pub reloads: AtomicU64,
    /// Reloads or adaptive-state writes that failed.
    pub errors: AtomicU64,
}

/// The strategies and what keeps them current.
#[derive(Debug)]
pub struct RemoteSampling {
    cfg: RemoteSamplingConfig,
    strategies: RwLock<Strategies>,
    red: Arc<RedMetrics>,
    state_path: PathBuf,
    /// Bytes of the strategies file last loaded, to reload only on change.
    file_bytes: parking_lot::Mutex<Option<Vec<u8>>>,
    stats: RemoteStats,
}

impl RemoteSampling {
    /// Reads the strategies file (an error if it is missing or invalid) and the adaptive
    /// state an earlier run left in `data_dir`. Disabled, it reads nothing and does nothing.
    pub fn open(
        cfg: &RemoteSamplingConfig,
        data_dir: &Path,
        red: Arc<RedMetrics>,
    ) -> Result<Self, RemoteSamplingError> {
        let mut cfg = cfg.clone();
        if !cfg.enabled {
            cfg.strategies_file = None;
            cfg.adaptive.enabled = false;
        }
        let cfg = &cfg;
        let (file, bytes) = match &cfg.strategies_file {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|source| RemoteSamplingError::Read { path: path.clone(), source })?;
                let parsed = StaticStrategies::parse(&bytes).map_err(|e| RemoteSamplingError::Invalid {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                for w in &parsed.warnings {
                    warn!(file = %path.display(), "{w}");
                }
                (Some(parsed), Some(bytes))
            }
            None => (None, None),
        };
        let state_path = data_dir.join("sampling").join("adaptive.json");
        let adaptive = cfg.adaptive.enabled.then(|| {
            let restored = read_state(&state_path);
            if !restored.is_empty() {
                info!(operations = restored.len(), "resumed adaptive sampling probabilities");
            }
            Adaptive::new(cfg.adaptive.clone(), &restored)
        });
        Ok(Self {
            cfg: cfg.clone(),
            strategies: RwLock::new(Strategies::new(file, adaptive, cfg.default_sampling_probability)),
            red,
            state_path,
            file_bytes: parking_lot::Mutex::new(bytes),
            stats: RemoteStats::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> &RemoteStats {
        &self.stats
    }

    /// Operations with an adaptive probability.
    pub fn adaptive_operations(&self) -> usize {
        self.strategies.read().adaptive().map_or(0, |a| a.probabilities().len())
    }

    /// Counters and gauges for `/metrics`.
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let st = self.stats();
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);

        vec![
            MetricFamily::counter(
                "strand_remote_sampling_requests_total",
                "Sampling strategies served to SDKs.",
                c(&st.requests) as f64,
            ),
            MetricFamily::counter(
                "strand_remote_sampling_bad_requests_total",
                "Strategy requests refused (no or repeated service).",
                c(&st.bad_requests) as f64,
            ),
            MetricFamily::counter(
                "strand_remote_sampling_calculations_total",
                "Adaptive sampling calculations.",
                c(&st.calculations) as f64,
            ),
            MetricFamily::gauge(
                "strand_remote_sampling_adaptive_operations",
                "Root operations with an adaptive probability.",
                self.adaptive_operations() as f64,
            ),
            MetricFamily::counter(
                "strand_remote_sampling_reloads_total",
                "Strategies file reloads that changed the strategies.",
                c(&st.reloads) as f64,
            ),
            MetricFamily::counter(
                "strand_remote_sampling_errors_total",
                "Strategies file reloads or adaptive state writes that failed.",
                c(&st.errors) as f64,
            ),
        ]
    }

    /// The strategy to answer `service`'s remote sampler with (counted as served).
    pub fn strategy_for(&self, service: &str) -> StrategyResponse {
        let resp = self.strategies.read().for_service(service);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        resp
    }

    /// Counts a strategy request refused for its parameters.
    pub fn count_bad_request(&self) {
        self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Recomputes adaptive probabilities and reloads the strategies file until `stop`
    /// resolves; then saves the adaptive state once more.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let every = |d: Duration| {
            let mut t =
                tokio::time::interval(if d.is_zero() { Duration::from_secs(86_400 * 365) } else { d });
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        let adaptive = self.cfg.adaptive.enabled;
        let reload = self.cfg.strategies_file.is_some() && !self.cfg.reload_interval.0.is_zero();
        let mut calc =
            every(if adaptive { self.cfg.adaptive.calculation_interval.0 } else { Duration::ZERO });
        let mut reload_tick = every(if reload { self.cfg.reload_interval.0 } else { Duration::ZERO });
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = calc.tick(), if adaptive => self.calculate().await,
                _ = reload_tick.tick(), if reload => self.reload().await,
            }
        }
        if adaptive {
            self.save().await;
        }
    }

    async fn calculate(&self) {
        let counts = self.red.root_counts();
        let now = strand_store::now_unix_nano();
        let changed = {
            let mut s = self.strategies.write();
            let Some(a) = s.adaptive_mut() else { return };
            a.calculate(counts.iter().map(|(s, o, n)| (&**s, &**o, *n)), now)
        };
        self.stats.calculations.fetch_add(1, Ordering::Relaxed);
        if changed {
            self.save().await;
        }
    }

    async fn save(&self) {
        let Some(probabilities) = self.strategies.read().adaptive().map(Adaptive::probabilities) else {
            return;
        };
        let path = self.state_path.clone();
        let written = tokio::task::spawn_blocking(move || write_state(&path, &probabilities)).await;
        let written = written.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "saving adaptive sampling probabilities failed");
        }
    }

    async fn reload(&self) {
        let Some(path) = self.cfg.strategies_file.clone() else { return };
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                warn!(file = %path.display(), error = %e, "re-reading the sampling strategies file failed; keeping the previous strategies");
                return;
            }
        };
        if self.file_bytes.lock().as_deref() == Some(&bytes[..]) {
            return;
        }
        match StaticStrategies::parse(&bytes) {
            Ok(parsed) => {
                for w in &parsed.warnings {
                    warn!(file = %path.display(), "{w}");
                }
                self.strategies.write().set_file(Some(parsed));
                *self.file_bytes.lock() = Some(bytes);
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                info!(file = %path.display(), "reloaded sampling strategies");
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                // Remember the bad bytes so the same error is logged once, not every tick.
                *self.file_bytes.lock() = Some(bytes);
                warn!(file = %path.display(), error = %e, "the sampling strategies file is invalid; keeping the previous strategies");
            }
        }
    }
}

fn read_state(path: &Path) -> Vec<AdaptiveProbability> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            warn!(file = %path.display(), error = %e, "ignoring unreadable adaptive sampling state");
            Vec::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            warn!(file = %path.display(), error = %e, "ignoring unreadable adaptive sampling state");
            Vec::new()
        }
    }
}

fn write_state(path: &Path, probabilities: &[AdaptiveProbability]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(probabilities)?)?;
    std::fs::rename(&tmp, path)
}
