//! Jaeger remote-sampling strategies: what SDKs' remote samplers fetch from
//! `GET /sampling?service=X` to decide, at the root span, whether to record a trace.
//!
//! Strategies come from three places, the first that covers a service wins:
//!
//! 1. the strategies file (Jaeger's format: `service_strategies`, `default_strategy`),
//!    for the services it names;
//! 2. the adaptive engine, when enabled: per service and root operation, a probability
//!    steered toward `target_traces_per_second` from the root spans actually received;
//! 3. the file's `default_strategy`, or a probabilistic `default_sampling_probability`.
//!
//! Responses have the JSON shape of Jaeger's `api_v2.SamplingStrategyResponse` that
//! Jaeger's `/sampling` endpoint serves (`strategyType` as an enum name).
//!
//! The adaptive engine follows Jaeger's: every `calculation_interval` the root spans of
//! each operation over the last interval give its sampled rate `qps`; within
//! `delta_tolerance` of the target the probability stays, a rate of 0 doubles it, else it
//! becomes `p · target / qps` — at once when lowering, by at most `max_increase` when
//! raising (so a burst of oversampling never follows a quiet minute) — clamped to
//! `[min_sampling_probability, 1]`. It assumes SDKs apply what they are served, so their
//! refresh interval should be shorter than the calculation interval.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strand_core::units::HumanDuration;

/// The `remote_sampling:` configuration section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteSamplingConfig {
    /// Whether strategies are served (on `listen`, and at `/api/sampling` on the Jaeger
    /// collector port).
    pub enabled: bool,
    /// Listen address of the Jaeger remote-sampling endpoint.
    pub listen: SocketAddr,
    /// A Jaeger strategies file (JSON).
    pub strategies_file: Option<PathBuf>,
    /// How often the strategies file is read again (`0s`: only at start).
    pub reload_interval: HumanDuration,
    /// Served to services neither the file nor the adaptive engine covers, when the file
    /// has no `default_strategy`. 1 (everything) suits a server that tail-samples.
    pub default_sampling_probability: f64,
    /// Adaptive probabilities.
    pub adaptive: AdaptiveConfig,
}

impl Default for RemoteSamplingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 5778)),
            strategies_file: None,
            reload_interval: HumanDuration(Duration::ZERO),
            default_sampling_probability: 1.0,
            adaptive: AdaptiveConfig::default(),
        }
    }
}

/// Adaptive sampling settings; defaults are Jaeger's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConfig {
    /// Whether probabilities are computed from received root spans.
    pub enabled: bool,
    /// Sampled traces per second wanted for each root operation.
    pub target_traces_per_second: f64,
    /// Relative distance from the target within which a probability is left alone.
    pub delta_tolerance: f64,
    /// How often probabilities are recomputed.
    pub calculation_interval: HumanDuration,
    /// Probability of an operation not seen yet.
    pub initial_sampling_probability: f64,
    /// Lowest probability ever served.
    pub min_sampling_probability: f64,
    /// Lower-bound rate served with every adaptive strategy (SDKs that support it sample
    /// at least this many traces per second per operation).
    pub min_traces_per_second: f64,
    /// Largest relative increase of a probability per calculation (0.5 = +50 %).
    pub max_increase: f64,
    /// Calculations without a root span after which an operation is forgotten.
    pub forget_after_intervals: u32,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            target_traces_per_second: 1.0,
            delta_tolerance: 0.3,
            calculation_interval: HumanDuration(Duration::from_secs(60)),
            initial_sampling_probability: 0.001,
            min_sampling_probability: 1e-5,
            min_traces_per_second: 1.0 / 60.0,
            max_increase: 0.5,
            forget_after_intervals: 10,
        }
    }
}

impl RemoteSamplingConfig {
    /// Every problem with the section, each with its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let probability = |v: f64| (0.0..=1.0).contains(&v);
        if !probability(self.default_sampling_probability) {
            errs.push("`remote_sampling.default_sampling_probability`: must be between 0 and 1".into());
        }
        let a = &self.adaptive;
        if !(a.target_traces_per_second > 0.0 && a.target_traces_per_second.is_finite()) {
            errs.push("`remote_sampling.adaptive.target_traces_per_second`: must be more than 0".into());
        }
        if !(a.delta_tolerance >= 0.0 && a.delta_tolerance < 1.0) {
            errs.push("`remote_sampling.adaptive.delta_tolerance`: must be at least 0 and below 1".into());
        }
        if a.calculation_interval.0 < Duration::from_secs(1) {
            errs.push("`remote_sampling.adaptive.calculation_interval`: must be at least 1s".into());
        }
        if !probability(a.initial_sampling_probability) || a.initial_sampling_probability == 0.0 {
            errs.push(
                "`remote_sampling.adaptive.initial_sampling_probability`: must be more than 0 and at most 1"
                    .into(),
            );
        }
        if !probability(a.min_sampling_probability) || a.min_sampling_probability == 0.0 {
            errs.push(
                "`remote_sampling.adaptive.min_sampling_probability`: must be more than 0 and at most 1"
                    .into(),
            );
        }
        if !(a.min_traces_per_second >= 0.0 && a.min_traces_per_second.is_finite()) {
            errs.push("`remote_sampling.adaptive.min_traces_per_second`: must be 0 or more".into());
        }
        if !(a.max_increase > 0.0 && a.max_increase.is_finite()) {
            errs.push("`remote_sampling.adaptive.max_increase`: must be more than 0".into());
        }
        if a.forget_after_intervals == 0 {
            errs.push("`remote_sampling.adaptive.forget_after_intervals`: must be at least 1".into());
        }
        errs
    }
}

// ---------------------------------------------------------------------------------------
// Responses: Jaeger api_v2 JSON.

/// Which of the strategies a response carries (legacy; per-operation responses say
/// `PROBABILISTIC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StrategyType {
    /// `probabilisticSampling` (or `operationSampling`).
    Probabilistic,
    /// `rateLimitingSampling`.
    RateLimiting,
}

/// `{"samplingRate": p}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probabilistic {
    /// Probability in `[0, 1]`.
    pub sampling_rate: f64,
}

/// `{"maxTracesPerSecond": n}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimiting {
    /// Traces per second (an integer in Jaeger's schema).
    pub max_traces_per_second: i32,
}

/// One operation's probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStrategy {
    /// Span name of the root span.
    pub operation: String,
    /// Its probability.
    pub probabilistic_sampling: Probabilistic,
}

/// Per-operation probabilities with service-wide defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerOperation {
    /// Probability of operations not listed.
    pub default_sampling_probability: f64,
    /// Traces per second sampled per operation at least (by SDKs that support it).
    pub default_lower_bound_traces_per_second: f64,
    /// The listed operations.
    pub per_operation_strategies: Vec<OperationStrategy>,
    /// Upper bound (0: none; hardly any SDK reads it, some require the field).
    pub default_upper_bound_traces_per_second: f64,
}

/// `GET /sampling?service=X`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyResponse {
    /// Which strategy field is set.
    pub strategy_type: StrategyType,
    /// Probabilistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilistic_sampling: Option<Probabilistic>,
    /// Rate limiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiting_sampling: Option<RateLimiting>,
    /// Per operation (wins over the others in SDKs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_sampling: Option<PerOperation>,
}

impl StrategyResponse {
    /// A probabilistic strategy.
    pub fn probabilistic(p: f64) -> Self {
        Self {
            strategy_type: StrategyType::Probabilistic,
            probabilistic_sampling: Some(Probabilistic { sampling_rate: p }),
            rate_limiting_sampling: None,
            operation_sampling: None,
        }
    }

    fn rate_limiting(n: i32) -> Self {
        Self {
            strategy_type: StrategyType::RateLimiting,
            probabilistic_sampling: None,
            rate_limiting_sampling: Some(RateLimiting { max_traces_per_second: n }),
            operation_sampling: None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The strategies file.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStrategies {
    #[serde(default)]
    service_strategies: Vec<FileStrategy>,
    #[serde(default)]
    default_strategy: Option<FileStrategy>,
}

/// A service's strategy (with `service`) or the default (without).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStrategy {
    #[serde(default)]
    service: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    param: f64,
    #[serde(default)]
    operation_strategies: Vec<FileOperationStrategy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOperationStrategy {
    operation: String,
    #[serde(rename = "type")]
    kind: String,
    param: f64,
}

/// A parsed strategies file: a response per named service and the default.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticStrategies {
    services: BTreeMap<String, StrategyResponse>,
    default: Option<StrategyResponse>,
    /// Operation strategies skipped because Jaeger's schema cannot carry them.
    pub warnings: Vec<String>,
}

impl StaticStrategies {
    /// Parses a Jaeger strategies file (JSON) with Jaeger's semantics: a service without
    /// its own operation strategies inherits the default's (with its own probability as
    /// the default probability when it is probabilistic); a service with its own has the
    /// default's appended for operations it does not name. Operation strategies can only
    /// be probabilistic: rate-limiting ones are skipped with a warning, as Jaeger does.
    /// Unknown strategy types and out-of-range parameters are errors (Jaeger would fall
    /// back silently).
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let file: FileStrategies = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let mut warnings = Vec::new();
        let default = match &file.default_strategy {
            Some(d) if d.service.is_some() => {
                return Err("default_strategy: has no `service` (it serves every other service)".into());
            }
            Some(d) => Some(service_response(
                "default_strategy",
                &d.kind,
                d.param,
                &d.operation_strategies,
                &mut warnings,
            )?),
            None => None,
        };
        let default_ops = default.as_ref().and_then(|d| d.operation_sampling.clone());
        let mut services = BTreeMap::new();
        for (i, s) in file.service_strategies.iter().enumerate() {
            let service = match s.service.as_deref() {
                Some(name) if !name.is_empty() => name,
                _ => return Err(format!("service_strategies[{i}]: `service` must be given and not empty")),
            };
            let at = format!("service_strategies[{i}] ({service})");
            let mut resp = service_response(&at, &s.kind, s.param, &s.operation_strategies, &mut warnings)?;
            if let Some(default_ops) = &default_ops {
                match &mut resp.operation_sampling {
                    None => {
                        let mut ops = default_ops.clone();
                        if let Some(p) = resp.probabilistic_sampling {
                            ops.default_sampling_probability = p.sampling_rate;
                        }
                        resp.operation_sampling = Some(ops);
                    }
                    Some(own) => {
                        for op in &default_ops.per_operation_strategies {
                            if !own.per_operation_strategies.iter().any(|o| o.operation == op.operation) {
                                own.per_operation_strategies.push(op.clone());
                            }
                        }
                    }
                }
            }
            if services.insert(service.to_string(), resp).is_some() {
                return Err(format!("{at}: the service is listed twice"));
            }
        }
        Ok(Self { services, default, warnings })
    }
}

/// Jaeger's default probability for operations when a rate-limited service lists some.
const FILE_DEFAULT_PROBABILITY: f64 = 0.001;

fn strategy(at: &str, kind: &str, param: f64) -> Result<StrategyResponse, String> {
    match kind {
        "probabilistic" if (0.0..=1.0).contains(&param) => Ok(StrategyResponse::probabilistic(param)),
        "probabilistic" => Err(format!("{at}: a probabilistic `param` must be between 0 and 1, not {param}")),
        "ratelimiting" if param >= 0.0 && param <= f64::from(i32::MAX) => {
            Ok(StrategyResponse::rate_limiting(param as i32))
        }
        "ratelimiting" => {
            Err(format!("{at}: a ratelimiting `param` must be a number of traces per second, not {param}"))
        }
        other => Err(format!("{at}: unknown strategy type `{other}` (use probabilistic or ratelimiting)")),
    }
}

fn service_response(
    at: &str,
    kind: &str,
    param: f64,
    ops: &[FileOperationStrategy],
    warnings: &mut Vec<String>,
) -> Result<StrategyResponse, String> {
    let mut resp = strategy(at, kind, param)?;
    if ops.is_empty() {
        return Ok(resp);
    }
    let default_sampling_probability =
        resp.probabilistic_sampling.map_or(FILE_DEFAULT_PROBABILITY, |p| p.sampling_rate);
    let mut per_operation_strategies = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let op_at = format!("{at}.operation_strategies[{i}] ({})", op.operation);
        match strategy(&op_at, &op.kind, op.param)? {
            StrategyResponse { probabilistic_sampling: Some(p), .. } => {
                per_operation_strategies
                    .push(OperationStrategy { operation: op.operation.clone(), probabilistic_sampling: p });
            }
            _ => warnings.push(format!(
                "{op_at}: operation strategies can only be probabilistic; skipped (the operation gets probability {default_sampling_probability})"
            )),
        }
    }
    resp.operation_sampling = Some(PerOperation {
        default_sampling_probability,
        default_lower_bound_traces_per_second: 0.0,
        per_operation_strategies,
        default_upper_bound_traces_per_second: 0.0,
    });
    Ok(resp)
}

// ---------------------------------------------------------------------------------------
// Adaptive.

#[derive(Debug, Clone, PartialEq)]
struct OpState {
    probability: f64,
    /// Calculations in a row without a root span.
    idle: u32,
}

/// Adaptive probabilities per service and root operation.
#[derive(Debug, Clone)]
pub struct Adaptive {
    cfg: AdaptiveConfig,
    ops: BTreeMap<String, BTreeMap<String, OpState>>,
    /// Cumulative root-span counts at the last calculation, and when it was.
    counts: BTreeMap<(String, String), u64>,
    last: Option<u64>,
}

/// One operation's adaptive state, for persistence and inspection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveProbability {
    /// Service.
    pub service: String,
    /// Root span name.
    pub operation: String,
    /// Probability served.
    pub probability: f64,
}

impl Adaptive {
    /// An engine starting from `restored` probabilities (from an earlier run).
    pub fn new(cfg: AdaptiveConfig, restored: &[AdaptiveProbability]) -> Self {
        let mut ops: BTreeMap<String, BTreeMap<String, OpState>> = BTreeMap::new();
        for r in restored {
            let p = r.probability.clamp(cfg.min_sampling_probability, 1.0);
            if p.is_finite() {
                ops.entry(r.service.clone())
                    .or_default()
                    .insert(r.operation.clone(), OpState { probability: p, idle: 0 });
            }
        }
        Self { cfg, ops, counts: BTreeMap::new(), last: None }
    }

    /// Feeds cumulative root-span counts per (service, operation) at `now`. The first call
    /// sets the baseline; each later call recomputes every operation's probability from
    /// the roots received since the previous call. Returns whether a probability changed.
    pub fn calculate<'a>(
        &mut self,
        counts: impl IntoIterator<Item = (&'a str, &'a str, u64)>,
        now: u64,
    ) -> bool {
        let previous = self.last.replace(now);
        let secs = previous.map_or(0.0, |l| now.saturating_sub(l) as f64 / 1e9);
        let mut deltas: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        let mut totals = BTreeMap::new();
        for (s, o, n) in counts {
            let key = (s.to_string(), o.to_string());
            let before = self.counts.get(&key).copied().unwrap_or(0);
            deltas.insert((s, o), n.saturating_sub(before));
            totals.insert(key, n);
        }
        self.counts = totals;
        if previous.is_none() || secs <= 0.0 {
            return false;
        }
        let cfg = &self.cfg;
        let mut changed = false;
        // Operations seen for the first time start from the initial probability, and their
        // first interval already counts.
        for ((s, o), _) in deltas.iter().filter(|(_, n)| **n > 0) {
            let svc = self.ops.entry((*s).to_string()).or_default();
            if !svc.contains_key(*o) {
                let fresh = OpState { probability: cfg.initial_sampling_probability, idle: 0 };
                svc.insert((*o).to_string(), fresh);
                changed = true;
            }
        }
        for (service, svc) in &mut self.ops {
            svc.retain(|op, st| {
                let delta = deltas.get(&(service.as_str(), op.as_str())).copied().unwrap_or(0);
                st.idle = if delta == 0 { st.idle + 1 } else { 0 };
                if st.idle >= cfg.forget_after_intervals {
                    changed = true;
                    return false;
                }
                let p = next_probability(cfg, st.probability, delta as f64 / secs);
                if p != st.probability {
                    st.probability = p;
                    changed = true;
                }
                true
            });
        }
        self.ops.retain(|_, svc| !svc.is_empty());
        changed
    }

    /// The strategy for `service`: its operations' probabilities, the initial probability
    /// for the rest.
    pub fn strategy(&self, service: &str) -> StrategyResponse {
        let per_operation_strategies = self
            .ops
            .get(service)
            .into_iter()
            .flatten()
            .map(|(op, st)| OperationStrategy {
                operation: op.clone(),
                probabilistic_sampling: Probabilistic { sampling_rate: st.probability },
            })
            .collect();
        StrategyResponse {
            strategy_type: StrategyType::Probabilistic,
            probabilistic_sampling: None,
            rate_limiting_sampling: None,
            operation_sampling: Some(PerOperation {
                default_sampling_probability: self.cfg.initial_sampling_probability,
                default_lower_bound_traces_per_second: self.cfg.min_traces_per_second,
                per_operation_strategies,
                default_upper_bound_traces_per_second: 0.0,
            }),
        }
    }

    /// Every operation's probability, ordered by service and operation.
    pub fn probabilities(&self) -> Vec<AdaptiveProbability> {
        self.ops
            .iter()
            .flat_map(|(s, svc)| {
                svc.iter().map(move |(o, st)| AdaptiveProbability {
                    service: s.clone(),
                    operation: o.clone(),
                    probability: st.probability,
                })
            })
            .collect()
    }
}

/// Jaeger's calculation for one operation sampled at `qps` traces/s with probability `p`.
fn next_probability(cfg: &AdaptiveConfig, p: f64, qps: f64) -> f64 {
    let target = cfg.target_traces_per_second;
    if ((qps - target) / target).abs() < cfg.delta_tolerance {
        return p;
    }
    let next = if qps == 0.0 {
        p * 2.0
    } else {
        let wanted = p * target / qps;
        if wanted > p { wanted.min(p * (1.0 + cfg.max_increase)) } else { wanted }
    };
    next.clamp(cfg.min_sampling_probability, 1.0)
}

// ---------------------------------------------------------------------------------------
// Serving.

/// Everything that answers `GET /sampling?service=X`.
#[derive(Debug, Clone)]
pub struct Strategies {
    file: Option<StaticStrategies>,
    adaptive: Option<Adaptive>,
    default_probability: f64,
}

impl Strategies {
    /// Strategies from a parsed file (if any), the adaptive engine (if enabled) and the
    /// configured default.
    pub fn new(file: Option<StaticStrategies>, adaptive: Option<Adaptive>, default_probability: f64) -> Self {
        Self { file, adaptive, default_probability }
    }

    /// The strategy served to `service`.
    pub fn for_service(&self, service: &str) -> StrategyResponse {
        if let Some(s) = self.file.as_ref().and_then(|f| f.services.get(service)) {
            return s.clone();
        }
        if let Some(a) = &self.adaptive {
            return a.strategy(service);
        }
        match self.file.as_ref().and_then(|f| f.default.clone()) {
            Some(d) => d,
            None => StrategyResponse::probabilistic(self.default_probability),
        }
    }

    /// Replaces the file's strategies (after a reload).
    pub fn set_file(&mut self, file: Option<StaticStrategies>) {
        self.file = file;
    }

    /// The adaptive engine, when enabled.
    pub fn adaptive_mut(&mut self) -> Option<&mut Adaptive> {
        self.adaptive.as_mut()
    }

    /// The adaptive engine, when enabled.
    pub fn adaptive(&self) -> Option<&Adaptive> {
        self.adaptive.as_ref()
    }
}
