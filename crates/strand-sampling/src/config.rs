//! Tail-sampling configuration, in the OpenTelemetry Collector's `tail_sampling` syntax.
//!
//! A collector's `policies:` list carries over unchanged:
//!
//! ```
//! use strand_sampling::config::SamplingConfig;
//!
//! let cfg: SamplingConfig = serde_saphyr::from_str(
//!     r#"
//! decision_wait: 10s
//! policies:
//!   - name: errors
//!     type: status_code
//!     status_code: { status_codes: [ERROR] }
//!   - name: five-percent
//!     type: probabilistic
//!     probabilistic: { sampling_percentage: 5 }
//! "#,
//! )?;
//! assert_eq!(cfg.policies.len(), 2);
//! assert!(cfg.validate().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! No policies means no tail sampling: every span is stored as it arrives.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strand_core::units::{ByteSize, HumanDuration};

/// The `sampling:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// How long after a trace's root span arrived the trace is decided.
    pub decision_delay: HumanDuration,
    /// Longest a trace waits after its first span before it is decided anyway.
    pub decision_wait: HumanDuration,
    /// Bytes of buffered spans; beyond it the traces closest to their decision are decided
    /// early.
    pub max_buffer_bytes: ByteSize,
    /// Bytes one trace may buffer; a trace reaching it is decided at once.
    pub max_trace_bytes: ByteSize,
    /// Percentage of traces kept when they are decided early because the buffer is full
    /// and no policy kept them on the spans seen so far (consistent per trace id).
    pub overflow_sampling_percentage: f64,
    /// How many decisions are remembered for spans arriving after their trace was decided.
    pub decision_cache: DecisionCacheConfig,
    /// The policies; empty means keep everything without buffering.
    pub policies: Vec<PolicyConfig>,
    /// What the tail decision does to log records.
    pub logs: LogSampling,
}

/// `sampling.logs`: whether a trace's log records follow its tail decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSampling {
    /// Every record is stored whatever happens to its trace (the default): the logs of a
    /// trace sampled away stay findable by its id.
    #[default]
    Keep,
    /// Records of traces the sampler dropped are dropped too; records without a trace id
    /// are always kept. Records of undecided traces wait with their spans, in the pending
    /// log and the buffer, until the decision (at most `decision_wait`).
    FollowTraces,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            decision_delay: HumanDuration(Duration::from_secs(5)),
            decision_wait: HumanDuration(Duration::from_secs(30)),
            max_buffer_bytes: ByteSize(256 << 20),
            max_trace_bytes: ByteSize(16 << 20),
            overflow_sampling_percentage: 10.0,
            decision_cache: DecisionCacheConfig::default(),
            policies: Vec::new(),
            logs: LogSampling::Keep,
        }
    }
}

/// Sizes of the caches of decisions taken (collector keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    /// Trace ids remembered as kept.
    pub sampled_cache_size: usize,
    /// Trace ids remembered as dropped.
    pub non_sampled_cache_size: usize,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        Self { sampled_cache_size: 100_000, non_sampled_cache_size: 100_000 }
    }
}

/// One policy: a name, a type and the settings block named like the type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name recorded on kept traces (`strand.sampling.policy`).
    pub name: String,
    /// Which policy.
    #[serde(rename = "type")]
    pub kind: PolicyType,
    /// `latency` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyConfig>,
    /// `status_code` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<StatusCodeConfig>,
    /// `string_attribute` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_attribute: Option<StringAttributeConfig>,
    /// `numeric_attribute` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric_attribute: Option<NumericAttributeConfig>,
    /// `boolean_attribute` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    /// `probabilistic` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilistic: Option<ProbabilisticConfig>,
    /// `rate_limiting` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiting: Option<RateLimitingConfig>,
    /// `span_count` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_count: Option<SpanCountConfig>,
    /// `trace_state` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_state: Option<TraceStateConfig>,
    /// `and` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and: Option<AndConfig>,
    /// `not` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<NotConfig>,
    /// `drop` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<DropConfig>,
    /// `composite` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite: Option<CompositeConfig>,
    /// `ottl_condition` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ottl_condition: Option<OttlConditionConfig>,
}

impl PolicyConfig {
    /// A policy of `kind` with no settings block (fill in the one it needs).
    pub fn new(name: impl Into<String>, kind: PolicyType) -> Self {
        Self {
            name: name.into(),
            kind,
            latency: None,
            status_code: None,
            string_attribute: None,
            numeric_attribute: None,
            boolean_attribute: None,
            probabilistic: None,
            rate_limiting: None,
            span_count: None,
            trace_state: None,
            and: None,
            not: None,
            drop: None,
            composite: None,
            ottl_condition: None,
        }
    }

    /// Names of the settings blocks present, to report one that does not fit the type.
    pub(crate) fn blocks(&self) -> Vec<PolicyType> {
        let mut out = Vec::new();
        let present = [
            (self.latency.is_some(), PolicyType::Latency),
            (self.status_code.is_some(), PolicyType::StatusCode),
            (self.string_attribute.is_some(), PolicyType::StringAttribute),
            (self.numeric_attribute.is_some(), PolicyType::NumericAttribute),
            (self.boolean_attribute.is_some(), PolicyType::BooleanAttribute),
            (self.probabilistic.is_some(), PolicyType::Probabilistic),
            (self.rate_limiting.is_some(), PolicyType::RateLimiting),
            (self.span_count.is_some(), PolicyType::SpanCount),
            (self.trace_state.is_some(), PolicyType::TraceState),
            (self.and.is_some(), PolicyType::And),
            (self.not.is_some(), PolicyType::Not),
            (self.drop.is_some(), PolicyType::Drop),
            (self.composite.is_some(), PolicyType::Composite),
            (self.ottl_condition.is_some(), PolicyType::OttlCondition),
        ];
        for (is, kind) in present {
            if is {
                out.push(kind);
            }
        }
        out
    }
}

/// Policy types, spelled as the collector spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    /// Keep every trace.
    AlwaysSample,
    /// Trace duration (earliest start to latest end).
    Latency,
    /// Any span's status code.
    StatusCode,
    /// A string attribute of any span or resource.
    StringAttribute,
    /// An integer attribute of any span or resource.
    NumericAttribute,
    /// A boolean attribute of any span or resource.
    BooleanAttribute,
    /// A share of trace ids, consistent everywhere.
    Probabilistic,
    /// Spans per second.
    RateLimiting,
    /// Number of spans in the trace.
    SpanCount,
    /// A key and value in any span's W3C trace state.
    TraceState,
    /// Every sub-policy samples.
    And,
    /// The sub-policy's decision reversed.
    Not,
    /// Drop the trace when every sub-policy samples; wins over every other policy.
    Drop,
    /// Sub-policies in order, each with a spans-per-second budget.
    Composite,
    /// OTTL conditions on spans and span events.
    OttlCondition,
}

impl PolicyType {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlwaysSample => "always_sample",
            Self::Latency => "latency",
            Self::StatusCode => "status_code",
            Self::StringAttribute => "string_attribute",
            Self::NumericAttribute => "numeric_attribute",
            Self::BooleanAttribute => "boolean_attribute",
            Self::Probabilistic => "probabilistic",
            Self::RateLimiting => "rate_limiting",
            Self::SpanCount => "span_count",
            Self::TraceState => "trace_state",
            Self::And => "and",
            Self::Not => "not",
            Self::Drop => "drop",
            Self::Composite => "composite",
            Self::OttlCondition => "ottl_condition",
        }
    }
}

/// `latency`: sampled when the trace lasted `threshold_ms` or more; with an upper
/// threshold, when it lasted more than `threshold_ms` and at most `upper_threshold_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Lower bound in milliseconds.
    pub threshold_ms: i64,
    /// Upper bound in milliseconds; 0 means none.
    #[serde(default)]
    pub upper_threshold_ms: i64,
}

/// `status_code`: sampled when any span has one of the codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// `OK`, `ERROR`, `UNSET`.
    pub status_codes: Vec<String>,
}

/// `string_attribute`: sampled when a span or resource attribute `key` equals (or, with
/// regex matching, matches) one of `values`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    /// Attribute key.
    pub key: String,
    /// Values (or regular expressions).
    pub values: Vec<String>,
    /// Treat `values` as regular expressions (unanchored, as Go's `MatchString`).
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// Accepted for compatibility; Strand compiles the expressions once instead.
    #[serde(default)]
    pub cache_max_size: usize,
    /// Reverse the decision (a deprecated collector feature; prefer `drop`).
    #[serde(default)]
    pub invert_match: bool,
}

/// `numeric_attribute`: sampled when an integer attribute lies in `[min_value, max_value]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    /// Attribute key.
    pub key: String,
    /// Inclusive lower bound; none when absent.
    #[serde(default)]
    pub min_value: Option<i64>,
    /// Inclusive upper bound; none when absent.
    #[serde(default)]
    pub max_value: Option<i64>,
    /// Reverse the decision.
    #[serde(default)]
    pub invert_match: bool,
}

/// `boolean_attribute`: sampled when a boolean attribute has `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    /// Attribute key.
    pub key: String,
    /// The value to match.
    pub value: bool,
    /// Reverse the decision.
    #[serde(default)]
    pub invert_match: bool,
}

/// `probabilistic`: sampled when the salted FNV-1a hash of the trace id falls under the
/// percentage (the collector's hash, so both decide alike for the same salt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Percentage of traces, 0 to 100.
    pub sampling_percentage: f64,
    /// Salt of the hash; the collector's default when empty.
    #[serde(default)]
    pub hash_salt: String,
}

/// `rate_limiting`: sampled while the spans sampled by this policy in the current second
/// stay under the limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// Spans per second.
    pub spans_per_second: i64,
}

/// `span_count`: sampled when the trace has `min_spans` to `max_spans` spans (inclusive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    /// Fewest spans.
    pub min_spans: i64,
    /// Most spans; 0 means no upper bound.
    #[serde(default)]
    pub max_spans: i64,
}

/// `trace_state`: sampled when any span's trace state has `key` with one of `values`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceStateConfig {
    /// Trace-state key.
    pub key: String,
    /// Accepted values.
    pub values: Vec<String>,
}

/// `and`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    /// Sub-policies; all must sample.
    pub and_sub_policy: Vec<PolicyConfig>,
}

/// `not`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotConfig {
    /// The policy whose decision is reversed.
    pub not_sub_policy: Box<PolicyConfig>,
}

/// `ottl_condition`: sampled when any span meets any `span` condition, or any span event
/// meets any `spanevent` condition (see [`crate::ottl`] for the language).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OttlConditionConfig {
    /// What an evaluation error does. Strand's subset only errs on a type error in
    /// arithmetic, which makes the condition false under every mode (the collector's
    /// `propagate` makes the policy not sample; `ignore` and `silent` skip the condition).
    #[serde(default)]
    pub error_mode: OttlErrorMode,
    /// Conditions on spans (with their resource and scope).
    #[serde(default)]
    pub span: Vec<String>,
    /// Conditions on span events.
    #[serde(default)]
    pub spanevent: Vec<String>,
}

/// `ottl_condition.error_mode`, as the collector spells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OttlErrorMode {
    /// The error ends the policy's evaluation: not sampled (the collector's default).
    #[default]
    Propagate,
    /// The condition is skipped, logged.
    Ignore,
    /// The condition is skipped.
    Silent,
}

/// `drop`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    /// Sub-policies; when all sample, the trace is dropped.
    pub drop_sub_policy: Vec<PolicyConfig>,
}

/// `composite`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    /// Total spans per second the composite may sample.
    pub max_total_spans_per_second: i64,
    /// Order in which sub-policies are tried (names).
    #[serde(default)]
    pub policy_order: Vec<String>,
    /// The sub-policies.
    pub composite_sub_policy: Vec<PolicyConfig>,
    /// Share of `max_total_spans_per_second` per sub-policy. As in the collector, a
    /// sub-policy not listed here gets no budget, and one listed with percent 0 gets an
    /// equal share.
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocation>,
}

/// One composite budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateAllocation {
    /// Sub-policy name.
    pub policy: String,
    /// Percent of the composite's budget.
    pub percent: f64,
}

impl SamplingConfig {
    /// Whether tail sampling is on (any policy configured).
    pub fn enabled(&self) -> bool {
        !self.policies.is_empty()
    }

    /// Whether log records wait for their trace's decision (`logs: follow_traces` with
    /// tail sampling on).
    pub fn logs_follow_traces(&self) -> bool {
        self.enabled() && self.logs == LogSampling::FollowTraces
    }

    /// Every problem with the settings, each naming its key; empty when valid.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.decision_wait.0.is_zero() {
            errs.push("`sampling.decision_wait`: must be more than 0".into());
        }
        if self.decision_delay.0 > self.decision_wait.0 {
            errs.push("`sampling.decision_delay`: must not be longer than `decision_wait`".into());
        }
        if self.max_trace_bytes.0 == 0 || self.max_trace_bytes.0 > self.max_buffer_bytes.0 {
            errs.push(
                "`sampling.max_trace_bytes`: must be more than 0 and at most `max_buffer_bytes`".into(),
            );
        }
        if !(0.0..=100.0).contains(&self.overflow_sampling_percentage) {
            errs.push("`sampling.overflow_sampling_percentage`: must be between 0 and 100".into());
        }
        if let Err(e) = crate::policy::PolicySet::compile(&self.policies) {
            errs.extend(e);
        }
        errs
    }

    /// Parses the `--sampling` shorthand: `all` (keep everything), `errors-plus=5%`
    /// (every trace with an error span plus 5 % of the rest) or `5%` (5 % of traces).
    pub fn shorthand(s: &str) -> Result<Vec<PolicyConfig>, String> {
        let percent = |p: &str| -> Result<f64, String> {
            let v: f64 = p
                .trim()
                .strip_suffix('%')
                .ok_or_else(|| format!("`{p}`: write the share as a percentage, like 5%"))?
                .trim()
                .parse()
                .map_err(|_| format!("`{p}`: not a percentage"))?;
            if (0.0..=100.0).contains(&v) { Ok(v) } else { Err(format!("`{p}`: must be 0% to 100%")) }
        };
        let probabilistic = |pct: f64| {
            let mut p = PolicyConfig::new(format!("probabilistic-{pct}%"), PolicyType::Probabilistic);
            p.probabilistic =
                Some(ProbabilisticConfig { sampling_percentage: pct, hash_salt: String::new() });
            p
        };
        let s = s.trim();
        if s == "all" {
            return Ok(Vec::new());
        }
        if let Some(rest) = s.strip_prefix("errors-plus=") {
            let mut errors = PolicyConfig::new("errors", PolicyType::StatusCode);
            errors.status_code = Some(StatusCodeConfig { status_codes: vec!["ERROR".into()] });
            return Ok(vec![errors, probabilistic(percent(rest)?)]);
        }
        if s.ends_with('%') {
            return Ok(vec![probabilistic(percent(s)?)]);
        }
        Err(format!("unknown sampling shorthand `{s}`: use `all`, `errors-plus=5%` or `5%`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collector_readme_example_parses() {
        let yaml = r#"
decision_wait: 10s
decision_cache: { sampled_cache_size: 100000, non_sampled_cache_size: 100000 }
policies:
  - { name: test-policy-1, type: always_sample }
  - { name: test-policy-2, type: latency, latency: { threshold_ms: 5000, upper_threshold_ms: 10000 } }
  - { name: test-policy-3, type: numeric_attribute, numeric_attribute: { key: key1, min_value: 50, max_value: 100 } }
  - { name: test-policy-4, type: probabilistic, probabilistic: { sampling_percentage: 10 } }
  - { name: test-policy-5, type: status_code, status_code: { status_codes: [ERROR, UNSET] } }
  - { name: test-policy-6, type: string_attribute, string_attribute: { key: key2, values: [value1, value2] } }
  - name: test-policy-7
    type: string_attribute
    string_attribute: { key: key2, values: [value1, val*], enabled_regex_matching: true, cache_max_size: 10 }
  - { name: test-policy-8, type: rate_limiting, rate_limiting: { spans_per_second: 35 } }
  - { name: test-policy-10, type: span_count, span_count: { min_spans: 2, max_spans: 20 } }
  - { name: test-policy-11, type: trace_state, trace_state: { key: key3, values: [value1, value2] } }
  - { name: test-policy-12, type: boolean_attribute, boolean_attribute: { key: key4, value: true } }
  - name: and-policy-1
    type: and
    and:
      and_sub_policy:
        - { name: test-and-policy-1, type: numeric_attribute, numeric_attribute: { key: key1, min_value: 50, max_value: 100 } }
        - { name: test-and-policy-2, type: string_attribute, string_attribute: { key: key2, values: [value1, value2] } }
  - name: drop-policy-1
    type: drop
    drop:
      drop_sub_policy:
        - name: test-drop-policy-1
          type: string_attribute
          string_attribute: { key: url.path, values: [\/health, \/metrics], enabled_regex_matching: true }
  - name: composite-policy-1
    type: composite
    composite:
      max_total_spans_per_second: 1000
      policy_order: [test-composite-policy-1, test-composite-policy-2, test-composite-policy-3]
      composite_sub_policy:
        - { name: test-composite-policy-1, type: numeric_attribute, numeric_attribute: { key: key1, min_value: 50 } }
        - { name: test-composite-policy-2, type: string_attribute, string_attribute: { key: key2, values: [value1, value2] } }
        - { name: test-composite-policy-3, type: always_sample }
      rate_allocation:
        - { policy: test-composite-policy-1, percent: 50 }
        - { policy: test-composite-policy-2, percent: 25 }
  - name: not-policy
    type: not
    not: { not_sub_policy: { name: healthy, type: status_code, status_code: { status_codes: [OK] } } }
"#;
        let cfg: SamplingConfig = serde_saphyr::from_str(yaml).expect("parses");
        assert_eq!(cfg.policies.len(), 15);
        assert_eq!(cfg.decision_wait.0, Duration::from_secs(10));
        assert_eq!(cfg.validate(), Vec::<String>::new());
    }

    #[test]
    fn problems_name_the_policy_and_key() {
        let yaml = r#"
policies:
  - { name: a, type: latency }
  - { name: b, type: status_code, status_code: { status_codes: [BROKEN] } }
  - { name: c, type: probabilistic, probabilistic: { sampling_percentage: 150 } }
  - { name: d, type: string_attribute, string_attribute: { key: k, values: ["("], enabled_regex_matching: true } }
  - { name: e, type: always_sample, latency: { threshold_ms: 1 } }
  - { name: a, type: always_sample }
"#;
        let cfg: SamplingConfig = serde_saphyr::from_str(yaml).expect("parses");
        let errs = cfg.validate().join("\n");
        for needle in [
            "policy `a` (latency): needs a `latency:` block",
            "policy `b`: unknown status code `BROKEN`",
            "policy `c`: `sampling_percentage` must be between 0 and 100",
            "policy `d`: invalid regular expression `(`",
            "policy `e` (always_sample): has a `latency:` block",
            "policy name `a` is used twice",
        ] {
            assert!(errs.contains(needle), "missing {needle:?} in:\n{errs}");
        }
        let unknown: Result<SamplingConfig, _> =
            serde_saphyr::from_str("policies: [{ name: x, type: always_sample, bogus: 1 }]");
        assert!(unknown.is_err());
    }

    #[test]
    fn shorthand_forms() {
        let p = SamplingConfig::shorthand("errors-plus=5%").expect("valid");
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].status_code.as_ref().map(|s| s.status_codes.clone()),
            Some(vec!["ERROR".to_string()])
        );
        assert_eq!(p[1].probabilistic.as_ref().map(|c| c.sampling_percentage), Some(5.0));
        assert!(SamplingConfig::shorthand("all").expect("valid").is_empty());
        assert_eq!(SamplingConfig::shorthand("12.5%").expect("valid").len(), 1);
        for bad in ["errors-plus=5", "errors-plus=500%", "most", "x%"] {
            assert!(SamplingConfig::shorthand(bad).is_err(), "{bad}");
        }
    }
}
