//! Evaluating a parsed query on one whole trace.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Value, json};
use strand_core::model::find_attr;
use strand_core::{AnyValue, Integrity, SpanKind, StatusCode, StoredSpan, Trace, TraceSummary};

use super::{AggFunc, CmpOp, Expr, Field, Intrinsic, Query, Scope, SpansetExpr, Stage, Static};

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Duration(u64),
    Status(StatusCode),
    Kind(SpanKind),
    /// The static `nil`.
    Nil,
    /// A field the span does not have.
    Missing,
    /// Present but not comparable (bytes, arrays, maps, an empty value).
    Other,
    /// The kinds of the trace's findings ([`strand_core::FindingKind::bit`]s), when its
    /// chain integrity is known (analysed and settled).
    Findings(Option<u8>),
}

impl<'a> Val<'a> {
    fn of(v: &'a AnyValue) -> Self {
        match v {
            AnyValue::String(s) => Val::Str(Cow::Borrowed(s)),
            AnyValue::Int(i) => Val::Int(*i),
            AnyValue::Double(d) => Val::Float(*d),
            AnyValue::Bool(b) => Val::Bool(*b),
            _ => Val::Other,
        }
    }

    fn of_static(s: &'a Static) -> Self {
        match s {
            Static::Str(s) => Val::Str(Cow::Borrowed(s)),
            Static::Int(i) => Val::Int(*i),
            Static::Float(f) => Val::Float(*f),
            Static::Bool(b) => Val::Bool(*b),
            Static::Duration(d) => Val::Duration(*d),
            Static::Status(s) => Val::Status(*s),
            Static::Kind(k) => Val::Kind(*k),
            Static::Nil => Val::Nil,
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// Whether `a op b` holds. Values of different types never compare (but integers and
/// floats do, as numbers). A missing field compares with nothing but `nil`: `= nil` tests
/// absence and `!= nil` presence, while `.k != "v"` is false on a span without `k`.
fn compare(a: &Val<'_>, op: CmpOp, b: &Val<'_>) -> bool {
    let equality_only = |eq: bool| match op {
        CmpOp::Eq => eq,
        CmpOp::Ne => !eq,
        _ => false,
    };
    match (a, b) {
        (Val::Findings(kinds), Val::Str(s)) | (Val::Str(s), Val::Findings(kinds)) => {
            let (Some(kinds), Ok(filter)) = (kinds, s.parse::<strand_core::IntegrityFilter>()) else {
                return false;
            };
            equality_only(filter.matches(*kinds))
        }
        (Val::Missing | Val::Nil, Val::Missing | Val::Nil) => {
            op == CmpOp::Eq && (matches!(a, Val::Nil) || matches!(b, Val::Nil))
        }
        (Val::Missing, _) | (_, Val::Missing) => false,
        (Val::Nil, _) | (_, Val::Nil) => op == CmpOp::Ne,
        (Val::Str(x), Val::Str(y)) => op.holds(x.cmp(y)),
        (Val::Int(x), Val::Int(y)) => op.holds(x.cmp(y)),
        (Val::Duration(x), Val::Duration(y)) => op.holds(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => equality_only(x == y),
        (Val::Status(x), Val::Status(y)) => equality_only(x == y),
        (Val::Kind(x), Val::Kind(y)) => equality_only(x == y),
        _ => match (a.number(), b.number()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).is_some_and(|o| op.holds(o)),
            _ => false,
        },
    }
}

/// What evaluation needs to know about the trace beyond each span.
struct Ctx<'t> {
    trace: &'t Trace,
    /// Each span's parent, by index, when the parent is in the trace.
    parents: Vec<Option<usize>>,
    summary: TraceSummary,
    /// The kinds of the trace's findings, when its integrity is known and settled.
    findings: Option<u8>,
}

impl<'t> Ctx<'t> {
    fn new(trace: &'t Trace, integrity: Option<&Integrity>) -> Self {
        let by_id: HashMap<_, usize> =
            trace.spans.iter().enumerate().map(|(i, s)| (s.span.span_id, i)).collect();
        let parents =
            trace.spans.iter().map(|s| s.span.parent_span_id.and_then(|p| by_id.get(&p).copied())).collect();
        let findings = integrity
            .filter(|i| i.settled)
            .map(|i| i.findings.iter().fold(0u8, |bits, f| bits | f.kind.bit()));
        Self { trace, parents, summary: TraceSummary::of(trace.trace_id, &trace.spans), findings }
    }

    fn field(&self, i: usize, f: &Field) -> Val<'t> {
        let s: &'t StoredSpan = &self.trace.spans[i];
        let attr =
            |attrs: &'t [strand_core::KeyValue], k: &str| find_attr(attrs, k).map_or(Val::Missing, Val::of);
        match f {
            Field::Intrinsic(x) => match x {
                Intrinsic::Name => Val::Str(Cow::Borrowed(&s.span.name)),
                Intrinsic::Status => Val::Status(s.span.status.code),
                Intrinsic::StatusMessage => Val::Str(Cow::Borrowed(&s.span.status.message)),
                Intrinsic::Kind => Val::Kind(s.span.kind),
                Intrinsic::Duration => Val::Duration(s.span.duration_nanos()),
                Intrinsic::RootName => Val::Str(Cow::Owned(self.summary.root_name.clone())),
                Intrinsic::RootServiceName => Val::Str(Cow::Owned(self.summary.root_service.clone())),
                Intrinsic::TraceDuration => Val::Duration(self.summary.duration_nano),
                Intrinsic::SpanId => Val::Str(Cow::Owned(s.span.span_id.to_hex())),
                Intrinsic::TraceId => Val::Str(Cow::Owned(self.trace.trace_id.to_hex())),
                Intrinsic::Integrity => Val::Findings(self.findings),
            },
            Field::Attr(Scope::Span, k) => attr(&s.span.attributes, k),
            Field::Attr(Scope::Resource, k) => attr(&s.resource.attributes, k),
            Field::Attr(Scope::Unscoped, k) => match attr(&s.span.attributes, k) {
                Val::Missing => attr(&s.resource.attributes, k),
                v => v,
            },
        }
    }

    fn value<'s>(&'s self, i: usize, e: &'s Expr) -> Val<'s> {
        match e {
            Expr::Field(f) => self.field(i, f),
            Expr::Static(s) => Val::of_static(s),
            other => Val::Bool(self.holds(i, other)),
        }
    }

    fn holds(&self, i: usize, e: &Expr) -> bool {
        match e {
            Expr::And(a, b) => self.holds(i, a) && self.holds(i, b),
            Expr::Or(a, b) => self.holds(i, a) || self.holds(i, b),
            Expr::Not(a) => !self.holds(i, a),
            Expr::Cmp(a, op, b) => compare(&self.value(i, a), *op, &self.value(i, b)),
            Expr::Match(f, re, negated) => match self.field(i, f) {
                Val::Str(s) => re.is_match(&s) != *negated,
                _ => false,
            },
            Expr::Field(f) => self.field(i, f) == Val::Bool(true),
            Expr::Static(s) => *s == Static::Bool(true),
        }
    }

    /// The spans of `input` that `e` selects, in index order.
    fn spans(&self, e: &SpansetExpr, input: &[usize]) -> Vec<usize> {
        match e {
            SpansetExpr::Filter(None) => input.to_vec(),
            SpansetExpr::Filter(Some(x)) => input.iter().copied().filter(|&i| self.holds(i, x)).collect(),
            SpansetExpr::And(a, b) => {
                let left = self.spans(a, input);
                if left.is_empty() {
                    return left;
                }
                let right = self.spans(b, input);
                if right.is_empty() { right } else { union(left, right) }
            }
            SpansetExpr::Or(a, b) => union(self.spans(a, input), self.spans(b, input)),
            SpansetExpr::Child(a, b) | SpansetExpr::Descendant(a, b) => {
                let left = self.spans(a, input);
                if left.is_empty() {
                    return left;
                }
                let mut in_left = vec![false; self.trace.spans.len()];
                left.iter().for_each(|&i| in_left[i] = true);
                let right = self.spans(b, input);
                if matches!(e, SpansetExpr::Child(..)) {
                    return right
                        .into_iter()
                        .filter(|&i| self.parents[i].is_some_and(|p| in_left[p]))
                        .collect();
                }
                let below = self.below(&in_left);
                right.into_iter().filter(|&i| below[i]).collect()
            }
        }
    }

    /// For every span, whether some ancestor is marked. Each span's answer is worked out
    /// once (a walk up stops at the first span already known), so a trace costs O(spans)
    /// however deep; a parent cycle counts as no marked ancestor.
    fn below(&self, marked: &[bool]) -> Vec<bool> {
        let n = self.parents.len();
        let mut known: Vec<Option<bool>> = vec![None; n];
        let mut path = Vec::new();
        for start in 0..n {
            let mut at = start;
            let answer = loop {
                if let Some(k) = known[at] {
                    break k;
                }
                if path.len() > n {
                    break false;
                }
                path.push(at);
                match self.parents[at] {
                    None => break false,
                    Some(p) if marked[p] => break true,
                    Some(p) => at = p,
                }
            };
            // Each span on the walk has the answer of the span above it, up to the end.
            for i in path.drain(..) {
                known[i] = Some(answer);
            }
        }
        known.into_iter().map(|k| k == Some(true)).collect()
    }

    /// The aggregate of `field` over `spans` (`count()` when `None`), typed as its values.
    fn aggregate(&self, func: AggFunc, field: Option<&Field>, spans: &[usize]) -> Option<Val<'static>> {
        let Some(field) = field else { return Some(Val::Int(spans.len() as i64)) };
        let mut durations = true;
        let values: Vec<f64> = spans
            .iter()
            .filter_map(|&i| match self.field(i, field) {
                Val::Duration(d) => Some(d as f64),
                v => {
                    durations = false;
                    v.number()
                }
            })
            .collect();
        if values.is_empty() {
            return None;
        }
        let sum: f64 = values.iter().sum();
        let v = match func {
            AggFunc::Count => values.len() as f64,
            AggFunc::Avg => sum / values.len() as f64,
            AggFunc::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            AggFunc::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            AggFunc::Sum => sum,
        };
        Some(if durations { Val::Duration(v.round() as u64) } else { Val::Float(v) })
    }
}

/// `a ∪ b`, both sorted, sorted.
fn union(mut a: Vec<usize>, b: Vec<usize>) -> Vec<usize> {
    a.extend(b);
    a.sort_unstable();
    a.dedup();
    a
}

/// A trace the query matched: the spans of its final spanset.
pub struct Matched<'t> {
    ctx: Ctx<'t>,
    /// The matched spans, by start time.
    pub spans: Vec<SpanMatch<'t>>,
}

/// One matched span.
pub struct SpanMatch<'t> {
    /// Its index in the trace's spans.
    pub index: usize,
    /// The span.
    pub span: &'t StoredSpan,
}

impl<'t> Matched<'t> {
    /// The trace's summary (root, duration, services).
    pub fn summary(&self) -> &TraceSummary {
        &self.ctx.summary
    }

    /// `field` of a matched span as an OTLP/JSON attribute (`{"key", "value"}`) under the
    /// name a result shows it by, when the span has it. Fields a result carries elsewhere
    /// (name, duration, ids, trace-level intrinsics) give `None`.
    pub fn attribute(&self, m: &SpanMatch<'_>, field: &Field) -> Option<Value> {
        let key = match field {
            Field::Attr(_, k) => k.as_str(),
            Field::Intrinsic(i @ (Intrinsic::Status | Intrinsic::StatusMessage | Intrinsic::Kind)) => {
                i.name()
            }
            Field::Intrinsic(_) => return None,
        };
        let value = match self.ctx.field(m.index, field) {
            Val::Str(s) => json!({ "stringValue": s }),
            Val::Int(i) => json!({ "intValue": i.to_string() }),
            Val::Float(f) => json!({ "doubleValue": f }),
            Val::Bool(b) => json!({ "boolValue": b }),
            Val::Status(s) => json!({ "stringValue": s.as_str() }),
            Val::Kind(k) => json!({ "stringValue": k.as_str() }),
            Val::Duration(d) => json!({ "intValue": d.to_string() }),
            Val::Nil | Val::Missing | Val::Other | Val::Findings(_) => return None,
        };
        Some(json!({ "key": key, "value": value }))
    }
}

impl Matched<'_> {
    /// `field` of a matched span as Tempo's tag values are typed (`string`, `int`, `float`,
    /// `bool`, `duration`, `keyword` for statuses and kinds) and its text, when the span
    /// has it.
    pub fn typed_value(&self, m: &SpanMatch<'_>, field: &Field) -> Option<(&'static str, String)> {
        Some(match self.ctx.field(m.index, field) {
            Val::Str(s) => ("string", s.into_owned()),
            Val::Int(i) => ("int", i.to_string()),
            Val::Float(f) => ("float", f.to_string()),
            Val::Bool(b) => ("bool", b.to_string()),
            Val::Duration(d) => ("duration", format!("{d}ns")),
            Val::Status(s) => ("keyword", s.as_str().to_owned()),
            Val::Kind(k) => ("keyword", k.as_str().to_owned()),
            Val::Nil | Val::Missing | Val::Other | Val::Findings(_) => return None,
        })
    }
}

impl Query {
    /// Evaluates the query on a whole trace: the matched spans, or `None` when the trace
    /// does not match.
    pub fn evaluate<'t>(&self, trace: &'t Trace) -> Option<Matched<'t>> {
        self.evaluate_with(trace, None)
    }

    /// [`Query::evaluate`] with the trace's chain integrity, for `integrity` conditions
    /// (without it, or before the trace settled, they never hold).
    pub fn evaluate_with<'t>(&self, trace: &'t Trace, integrity: Option<&Integrity>) -> Option<Matched<'t>> {
        let ctx = Ctx::new(trace, integrity);
        let mut set: Vec<usize> = (0..trace.spans.len()).collect();
        for stage in &self.stages {
            match stage {
                Stage::Spansets(e) => set = ctx.spans(e, &set),
                Stage::Aggregate { func, field, op, value } => {
                    let holds = ctx
                        .aggregate(*func, field.as_ref(), &set)
                        .is_some_and(|agg| compare(&agg, *op, &Val::of_static(value)));
                    if !holds {
                        set.clear();
                    }
                }
                Stage::Select(_) => {}
            }
            if set.is_empty() {
                return None;
            }
        }
        let mut spans: Vec<SpanMatch<'t>> =
            set.into_iter().map(|index| SpanMatch { index, span: &trace.spans[index] }).collect();
        spans.sort_by_key(|m| (m.span.span.start_time_unix_nano, m.index));
        Some(Matched { ctx, spans })
    }
}
