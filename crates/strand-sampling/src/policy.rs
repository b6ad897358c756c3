//! Compiled policies and the final decision rule.
//!
//! Policies that look at spans (status, attributes, trace state) are *conditions*: each
//! span is checked once, when it enters the buffer, and a trace keeps one bit per
//! condition ("some span or resource matched"). A decision then reads only those bits and
//! a few totals ([`TraceFacts`]), so deciding costs the same for a trace of 3 spans or of
//! 30,000 and never decodes a span. The outcome is the collector's for the same spans.
//!
//! Evaluation is pure except for the budget policies (`rate_limiting`, `composite`), whose
//! state advances with the time passed in; nothing here reads a clock.

use std::collections::HashSet;
use std::sync::Arc;

use regex::RegexSet;
use strand_core::{AnyValue, KeyValue, Resource, Scope, Span, StatusCode, TraceId};

use crate::ottl::{self, Subject};

use crate::config::{PolicyConfig, PolicyType};

/// Most span conditions (status, attribute and trace-state policies, nested ones included)
/// one configuration may hold.
pub const MAX_CONDITIONS: usize = 64;

/// The collector's default `hash_salt`.
const DEFAULT_HASH_SALT: &str = "default-hash-seed";

/// One policy's verdict, as the collector names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not sampled by this policy.
    NotSampled,
    /// Sampled.
    Sampled,
    /// Sampled by an `invert_match` policy (deprecated collector semantics).
    InvertSampled,
    /// Not sampled by an `invert_match` policy: overrides every `Sampled`.
    InvertNotSampled,
    /// Dropped by a `drop` policy: overrides everything.
    Dropped,
}

impl Decision {
    fn sampled(self) -> bool {
        matches!(self, Decision::Sampled | Decision::InvertSampled)
    }
}

/// What a decision needs to know about a buffered trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceFacts {
    /// Spans buffered.
    pub span_count: u32,
    /// Earliest span start (ns).
    pub min_start: u64,
    /// Latest span end (ns).
    pub max_end: u64,
    /// Bit `i` set: condition `i` matched some span or its resource.
    pub matched: u64,
}

impl Default for TraceFacts {
    fn default() -> Self {
        Self { span_count: 0, min_start: u64::MAX, max_end: 0, matched: 0 }
    }
}

impl TraceFacts {
    /// Adds one span.
    pub fn add(&mut self, start: u64, end: u64, matched: u64) {
        self.span_count = self.span_count.saturating_add(1);
        self.min_start = self.min_start.min(start);
        self.max_end = self.max_end.max(end);
        self.matched |= matched;
    }

    /// Duration from the earliest start to the latest end, in whole milliseconds (as Go's
    /// `Duration.Milliseconds`, which the collector compares).
    pub fn duration_ms(&self) -> i64 {
        if self.span_count == 0 {
            return 0;
        }
        (self.max_end.saturating_sub(self.min_start) / 1_000_000) as i64
    }
}

/// A check on one span (and, for attribute conditions, on its resource).
#[derive(Debug)]
enum Condition {
    /// Bit mask of [`StatusCode`] values.
    Status(u8),
    Str {
        key: String,
        exact: HashSet<String>,
        regex: Option<RegexSet>,
    },
    Num {
        key: String,
        min: i64,
        max: i64,
    },
    Bool {
        key: String,
        value: bool,
    },
    TraceState {
        key: String,
        values: HashSet<String>,
    },
    /// `ottl_condition`: any span condition on the span, or any event condition on one of
    /// its events.
    Ottl {
        span: Vec<crate::ottl::Condition>,
        events: Vec<crate::ottl::Condition>,
    },
}

impl Condition {
    fn on_resource(&self) -> bool {
        matches!(self, Condition::Str { .. } | Condition::Num { .. } | Condition::Bool { .. })
    }

    fn matches_attrs(&self, attrs: &[KeyValue]) -> bool {
        let find = |key: &str| attrs.iter().find(|kv| kv.key == key).map(|kv| &kv.value);
        match self {
            Condition::Str { key, exact, regex } => match find(key) {
                Some(AnyValue::String(v)) => match regex {
                    Some(set) => set.is_match(v),
                    None => exact.contains(v.as_str()),
                },
                _ => false,
            },
            Condition::Num { key, min, max } => {
                matches!(find(key), Some(AnyValue::Int(v)) if (*min..=*max).contains(v))
            }
            Condition::Bool { key, value } => matches!(find(key), Some(AnyValue::Bool(v)) if v == value),
            Condition::Status(_) | Condition::TraceState { .. } | Condition::Ottl { .. } => false,
        }
    }

    fn matches_span(&self, resource: &Resource, scope: &Scope, span: &Span) -> bool {
        match self {
            Condition::Ottl { span: conditions, events } => {
                let subject = |event| Subject { resource, scope, span, event };
                conditions.iter().any(|c| c.holds(&subject(None)))
                    || span.events.iter().any(|e| events.iter().any(|c| c.holds(&subject(Some(e)))))
            }
            Condition::Status(mask) => mask & (1 << span.status.code as u8) != 0,
            Condition::TraceState { key, values } => span.trace_state.split(',').any(|member| {
                member.trim().split_once('=').is_some_and(|(k, v)| k == key && values.contains(v))
            }),
            _ => self.matches_attrs(&span.attributes),
        }
    }
}

#[derive(Debug)]
struct CompositeSub {
    node: Node,
    allocated: i64,
    spent: i64,
}

#[derive(Debug)]
enum Node {
    Always,
    Latency { lower: i64, upper: i64 },
    Condition { bit: u32, invert: bool },
    Probabilistic { threshold: u64, salt: Vec<u8>, ratio: f64 },
    RateLimiting(TokenBucket),
    SpanCount { min: i64, max: i64 },
    And(Vec<Node>),
    Not(Box<Node>),
    Drop(Vec<Node>),
    Composite { max_total: i64, second: u64, subs: Vec<CompositeSub> },
}

/// The collector's rate limiter: a token bucket of `2 × spans_per_second` spans, full at
/// start, refilled continuously.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<u64>,
}

impl TokenBucket {
    fn allow(&mut self, now: u64, n: u32) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_sub(last) as f64 / 1e9;
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        if f64::from(n) <= self.tokens {
            self.tokens -= f64::from(n);
            true
        } else {
            false
        }
    }
}

/// The salted FNV-1a hash of a trace id, as the collector's probabilistic policy computes
/// it.
pub fn trace_id_hash(salt: &[u8], trace_id: &TraceId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.iter().chain(&trace_id.0) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The hash threshold of a ratio in `[0, 1]`.
pub fn ratio_threshold(ratio: f64) -> u64 {
    (ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64
}

/// Why a trace was kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Whether the trace is kept.
    pub keep: bool,
    /// Names of the top-level policies that sampled it (empty when dropped).
    pub policies: Vec<Arc<str>>,
    /// Probability that a trace like it is kept: 1 when any deterministic policy kept it,
    /// the percentage of a probabilistic policy otherwise; `None` when only a budget
    /// (`rate_limiting`, `composite`) kept it.
    pub rate: Option<f64>,
}

/// The span conditions of a configuration: shared, read-only, checked outside any lock.
#[derive(Debug, Default)]
pub struct ConditionSet {
    conditions: Vec<Condition>,
    resource_conditions: u64,
}

impl ConditionSet {
    /// Condition bits a resource matches (checked once per resource of a batch).
    pub fn resource_bits(&self, resource: &Resource) -> u64 {
        if self.resource_conditions == 0 {
            return 0;
        }
        let mut bits = 0;
        for (i, c) in self.conditions.iter().enumerate() {
            if self.resource_conditions & (1 << i) != 0 && c.matches_attrs(&resource.attributes) {
                bits |= 1 << i;
            }
        }
        bits
    }

    /// Condition bits a span (with its resource and scope) matches.
    pub fn span_bits(&self, resource: &Resource, scope: &Scope, span: &Span) -> u64 {
        let mut bits = 0;
        for (i, c) in self.conditions.iter().enumerate() {
            if c.matches_span(resource, scope, span) {
                bits |= 1 << i;
            }
        }
        bits
    }
}

/// A compiled configuration.
#[derive(Debug)]
pub struct PolicySet {
    conditions: Arc<ConditionSet>,
    policies: Vec<(Arc<str>, Node)>,
}

impl PolicySet {
    /// Compiles the policies, reporting every problem with the policy's name.
    pub fn compile(configs: &[PolicyConfig]) -> Result<Self, Vec<String>> {
        let mut conditions = Vec::new();
        let mut policies = Vec::new();
        let mut errs = Vec::new();
        let mut names = HashSet::new();
        for cfg in configs {
            if !names.insert(cfg.name.as_str()) {
                errs.push(format!("`sampling.policies`: policy name `{}` is used twice", cfg.name));
            }
            if let Some(node) = Builder(&mut conditions).node(cfg, &mut errs) {
                policies.push((Arc::from(cfg.name.as_str()), node));
            }
        }
        if conditions.len() > MAX_CONDITIONS {
            errs.push(format!(
                "`sampling.policies`: {} span conditions (status, attribute, trace-state policies); at most {MAX_CONDITIONS}",
                conditions.len()
            ));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let mut resource_conditions = 0;
        for (i, c) in conditions.iter().enumerate() {
            if c.on_resource() {
                resource_conditions |= 1 << i;
            }
        }
        Ok(Self { conditions: Arc::new(ConditionSet { conditions, resource_conditions }), policies })
    }

    /// The span conditions, to check spans before taking the buffer's lock.
    pub fn conditions(&self) -> Arc<ConditionSet> {
        self.conditions.clone()
    }

    /// Decides a trace: every policy is evaluated (budgets advance), then the collector's
    /// rule: any `drop` match drops; any inverted not-sampled drops; any sample keeps.
    pub fn decide(&mut self, trace_id: &TraceId, facts: &TraceFacts, now_unix_nano: u64) -> Verdict {
        let mut dropped = false;
        let mut inverted_not = false;
        let mut policies = Vec::new();
        let mut rate: Option<f64> = None;
        for (name, node) in &mut self.policies {
            let d = eval(node, trace_id, facts, now_unix_nano);
            match d {
                Decision::Dropped => dropped = true,
                Decision::InvertNotSampled => inverted_not = true,
                Decision::Sampled | Decision::InvertSampled => {
                    policies.push(name.clone());
                    if let Some(r) = node_rate(node) {
                        rate = Some(rate.map_or(r, |x: f64| x.max(r)));
                    }
                }
                Decision::NotSampled => {}
            }
        }
        if dropped || inverted_not || policies.is_empty() {
            return Verdict { keep: false, policies: Vec::new(), rate: None };
        }
        Verdict { keep: true, policies, rate }
    }
}

/// Compiles policy configurations into nodes, collecting span conditions on the way.
struct Builder<'a>(&'a mut Vec<Condition>);

impl Builder<'_> {
    fn condition(&mut self, c: Condition, invert: bool) -> Node {
        self.0.push(c);
        Node::Condition { bit: (self.0.len() - 1) as u32, invert }
    }

    fn node(&mut self, cfg: &PolicyConfig, errs: &mut Vec<String>) -> Option<Node> {
        let name = &cfg.name;
        let kind = cfg.kind;
        for other in cfg.blocks() {
            if other != kind {
                errs.push(format!(
                    "`sampling.policies`: policy `{name}` ({}): has a `{}:` block, which only a {} policy reads",
                    kind.as_str(),
                    other.as_str(),
                    other.as_str()
                ));
            }
        }
        macro_rules! block {
            ($field:ident) => {
                match &cfg.$field {
                    Some(b) => b,
                    None => {
                        errs.push(format!(
                            "`sampling.policies`: policy `{name}` ({}): needs a `{}:` block",
                            kind.as_str(),
                            kind.as_str()
                        ));
                        return None;
                    }
                }
            };
        }
        let mut bad = |msg: String| errs.push(format!("`sampling.policies`: policy `{name}`: {msg}"));
        Some(match kind {
            PolicyType::AlwaysSample => Node::Always,
            PolicyType::Latency => {
                let b = block!(latency);
                if b.threshold_ms < 0 || b.upper_threshold_ms < 0 {
                    bad("latency thresholds must not be negative".into());
                } else if b.upper_threshold_ms != 0 && b.upper_threshold_ms <= b.threshold_ms {
                    bad("`upper_threshold_ms` must be above `threshold_ms`".into());
                }
                Node::Latency { lower: b.threshold_ms, upper: b.upper_threshold_ms }
            }
            PolicyType::StatusCode => {
                let b = block!(status_code);
                let mut mask = 0u8;
                for code in &b.status_codes {
                    match code.as_str() {
                        "OK" => mask |= 1 << StatusCode::Ok as u8,
                        "ERROR" => mask |= 1 << StatusCode::Error as u8,
                        "UNSET" => mask |= 1 << StatusCode::Unset as u8,
                        other => bad(format!("unknown status code `{other}` (use OK, ERROR or UNSET)")),
                    }
                }
                if b.status_codes.is_empty() {
                    bad("`status_codes` must not be empty".into());
                }
                self.condition(Condition::Status(mask), false)
            }
            PolicyType::StringAttribute => {
                let b = block!(string_attribute);
                if b.key.is_empty() {
                    bad("`key` must not be empty".into());
                }
                let regex = if b.enabled_regex_matching {
                    let bad_one = b.values.iter().find_map(|v| regex::Regex::new(v).err().map(|e| (v, e)));
                    match (bad_one, RegexSet::new(&b.values)) {
                        (Some((v, e)), _) => {
                            bad(format!("invalid regular expression `{v}`: {e}"));
                            None
                        }
                        // Each compiles, but together they exceed the size limit.
                        (None, Err(e)) => {
                            bad(format!("regular expressions too large together: {e}"));
                            None
                        }
                        (None, Ok(set)) => Some(set),
                    }
                } else {
                    None
                };
                let exact = b.values.iter().cloned().collect();
                self.condition(Condition::Str { key: b.key.clone(), exact, regex }, b.invert_match)
            }
            PolicyType::NumericAttribute => {
                let b = block!(numeric_attribute);
                if b.min_value.is_none() && b.max_value.is_none() {
                    bad("needs `min_value`, `max_value` or both".into());
                }
                let (min, max) = (b.min_value.unwrap_or(i64::MIN), b.max_value.unwrap_or(i64::MAX));
                if min > max {
                    bad("`min_value` is above `max_value`".into());
                }
                self.condition(Condition::Num { key: b.key.clone(), min, max }, b.invert_match)
            }
            PolicyType::BooleanAttribute => {
                let b = block!(boolean_attribute);
                self.condition(Condition::Bool { key: b.key.clone(), value: b.value }, b.invert_match)
            }
            PolicyType::Probabilistic => {
                let b = block!(probabilistic);
                if !(0.0..=100.0).contains(&b.sampling_percentage) {
                    bad("`sampling_percentage` must be between 0 and 100".into());
                }
                let salt = if b.hash_salt.is_empty() { DEFAULT_HASH_SALT } else { b.hash_salt.as_str() };
                let ratio = b.sampling_percentage / 100.0;
                Node::Probabilistic {
                    threshold: ratio_threshold(ratio),
                    salt: salt.as_bytes().to_vec(),
                    ratio,
                }
            }
            PolicyType::RateLimiting => {
                let b = block!(rate_limiting);
                if b.spans_per_second <= 0 {
                    bad("`spans_per_second` must be more than 0".into());
                }
                let rate = b.spans_per_second.max(0) as f64;
                Node::RateLimiting(TokenBucket { rate, burst: 2.0 * rate, tokens: 2.0 * rate, last: None })
            }
            PolicyType::SpanCount => {
                let b = block!(span_count);
                if b.min_spans < 0 || b.max_spans < 0 || (b.max_spans != 0 && b.max_spans < b.min_spans) {
                    bad("need 0 ≤ `min_spans` ≤ `max_spans` (or `max_spans` 0 for no bound)".into());
                }
                Node::SpanCount { min: b.min_spans, max: b.max_spans }
            }
            PolicyType::TraceState => {
                let b = block!(trace_state);
                let values = b.values.iter().filter(|v| !v.is_empty()).cloned().collect();
                self.condition(Condition::TraceState { key: b.key.clone(), values }, false)
            }
            PolicyType::OttlCondition => {
                let b = block!(ottl_condition);
                if b.span.is_empty() && b.spanevent.is_empty() {
                    bad("needs at least one `span` or `spanevent` condition".into());
                }
                let mut compile = |list: &[String], ctx: ottl::Context, what: &str| -> Vec<ottl::Condition> {
                    list.iter()
                        .enumerate()
                        .filter_map(|(i, text)| match ottl::Condition::parse(text, ctx) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                bad(format!("{what} condition {} `{text}`: {e}", i + 1));
                                None
                            }
                        })
                        .collect()
                };
                let span = compile(&b.span, ottl::Context::Span, "span");
                let events = compile(&b.spanevent, ottl::Context::SpanEvent, "spanevent");
                self.condition(Condition::Ottl { span, events }, false)
            }
            PolicyType::And => {
                let b = block!(and);
                Node::And(self.children(&b.and_sub_policy, name, errs)?)
            }
            PolicyType::Drop => {
                let b = block!(drop);
                Node::Drop(self.children(&b.drop_sub_policy, name, errs)?)
            }
            PolicyType::Not => {
                let b = block!(not);
                Node::Not(Box::new(self.node(&b.not_sub_policy, errs)?))
            }
            PolicyType::Composite => {
                let b = block!(composite);
                if b.max_total_spans_per_second <= 0 {
                    bad("`max_total_spans_per_second` must be more than 0".into());
                }
                let total = b.max_total_spans_per_second as f64;
                let equal_share = total / b.composite_sub_policy.len().max(1) as f64;
                let mut order: Vec<&PolicyConfig> = Vec::new();
                for wanted in &b.policy_order {
                    match b.composite_sub_policy.iter().find(|p| &p.name == wanted) {
                        Some(p) => order.push(p),
                        None => bad(format!("`policy_order` names `{wanted}`, which is not a sub-policy")),
                    }
                }
                for p in &b.composite_sub_policy {
                    if !order.iter().any(|o| o.name == p.name) {
                        order.push(p);
                    }
                }
                for a in &b.rate_allocation {
                    if !b.composite_sub_policy.iter().any(|p| p.name == a.policy) {
                        bad(format!("`rate_allocation` names `{}`, which is not a sub-policy", a.policy));
                    }
                }
                let mut subs = Vec::new();
                for p in order {
                    let allocated = match b.rate_allocation.iter().find(|a| a.policy == p.name) {
                        Some(a) if a.percent > 0.0 => a.percent / 100.0 * total,
                        Some(_) => equal_share,
                        None => 0.0,
                    };
                    let node = self.node(p, errs)?;
                    subs.push(CompositeSub { node, allocated: allocated as i64, spent: 0 });
                }
                Node::Composite { max_total: b.max_total_spans_per_second, second: u64::MAX, subs }
            }
        })
    }

    fn children(&mut self, cfgs: &[PolicyConfig], name: &str, errs: &mut Vec<String>) -> Option<Vec<Node>> {
        if cfgs.is_empty() {
            errs.push(format!("`sampling.policies`: policy `{name}`: needs at least one sub-policy"));
            return None;
        }
        cfgs.iter().map(|c| self.node(c, errs)).collect()
    }
}

/// The chance a trace kept by `node` had of being kept: `None` for budgets.
fn node_rate(node: &Node) -> Option<f64> {
    match node {
        Node::Probabilistic { ratio, .. } => Some(*ratio),
        Node::RateLimiting(_) | Node::Composite { .. } => None,
        Node::And(subs) => {
            // All must hold: the product of the known chances.
            subs.iter().try_fold(1.0, |acc, n| node_rate(n).map(|r| acc * r))
        }
        _ => Some(1.0),
    }
}

fn eval(node: &mut Node, trace_id: &TraceId, facts: &TraceFacts, now: u64) -> Decision {
    let yes = |b: bool| if b { Decision::Sampled } else { Decision::NotSampled };
    match node {
        Node::Always => Decision::Sampled,
        Node::Latency { lower, upper } => {
            let ms = facts.duration_ms();
            yes(if *upper == 0 { ms >= *lower } else { *lower < ms && ms <= *upper })
        }
        Node::Condition { bit, invert } => {
            let matched = facts.matched & (1 << *bit) != 0;
            match (*invert, matched) {
                (false, m) => yes(m),
                (true, true) => Decision::InvertNotSampled,
                (true, false) => Decision::InvertSampled,
            }
        }
        Node::Probabilistic { threshold, salt, .. } => yes(trace_id_hash(salt, trace_id) <= *threshold),
        Node::RateLimiting(bucket) => yes(bucket.allow(now, facts.span_count)),
        Node::SpanCount { min, max } => {
            let n = i64::from(facts.span_count);
            yes(n >= *min && (*max == 0 || n <= *max))
        }
        Node::And(subs) => {
            for s in subs {
                if !eval(s, trace_id, facts, now).sampled() {
                    return Decision::NotSampled;
                }
            }
            Decision::Sampled
        }
        Node::Not(sub) => match eval(sub, trace_id, facts, now) {
            Decision::Sampled => Decision::NotSampled,
            Decision::NotSampled => Decision::Sampled,
            other => other,
        },
        Node::Drop(subs) => {
            for s in subs {
                if !eval(s, trace_id, facts, now).sampled() {
                    return Decision::NotSampled;
                }
            }
            Decision::Dropped
        }
        Node::Composite { max_total, second, subs } => {
            let now_second = now / 1_000_000_000;
            if *second != now_second {
                *second = now_second;
                for s in subs.iter_mut() {
                    s.spent = 0;
                }
            }
            for s in subs.iter_mut() {
                if eval(&mut s.node, trace_id, facts, now).sampled() {
                    let if_sampled = s.spent + i64::from(facts.span_count);
                    if if_sampled <= s.allocated && if_sampled <= *max_total {
                        s.spent = if_sampled;
                        return Decision::Sampled;
                    }
                    return Decision::NotSampled;
                }
            }
            Decision::NotSampled
        }
    }
}
