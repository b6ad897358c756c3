//! TraceQL, the subset Grafana's Tempo data source and people write: spanset filters,
//! spanset operators, structural operators and a pipeline of aggregates and `select`.
//!
//! ```text
//! query      := spansets ( '|' stage )*
//! stage      := spansets | aggregate op static | 'select' '(' field ( ',' field )* ')'
//! aggregate  := 'count' '(' ')' | ( 'avg' | 'min' | 'max' | 'sum' ) '(' field ')'
//! spansets   := and ( '||' and )*            and := struct ( '&&' struct )*
//! struct     := primary ( ( '>' | '>>' ) primary )*
//! primary    := '{' expr? '}' | '(' spansets ')'
//! expr       := conj ( '||' conj )*          conj := unary ( '&&' unary )*
//! unary      := '!' unary | operand ( op operand )?
//! operand    := '(' expr ')' | field | static
//! op         := '=' | '!=' | '>' | '>=' | '<' | '<=' | '=~' | '!~'
//! ```
//!
//! Fields are intrinsics (`name`, `status`, `statusMessage`, `kind`, `duration`, `rootName`,
//! `rootServiceName`, `traceDuration`, `span:id`, `trace:id` and their `span:`/`trace:`
//! spellings) or attributes: `span.k` (the span's), `resource.k` (its resource's), `.k`
//! (the span's, else the resource's); `span."k with spaces"` quotes a key. Statics are
//! strings (`"…"` with escapes, or `` `raw` ``), integers, floats, durations (`150ms`, `1.5s`,
//! `ns us µs ms s m h`), `true`/`false`, `nil`, statuses (`error ok unset`) and kinds
//! (`server client producer consumer internal unspecified`).
//!
//! Semantics, as Tempo's: `{ cond }` is the set of a trace's spans meeting `cond`; a trace
//! matches when the whole pipeline leaves a non-empty set. `A && B` needs both sets non-empty
//! (their union), `A || B` either; `A > B` is the spans of `B` whose parent is in `A`, `A >> B`
//! those with an ancestor in `A`. A comparison with a missing attribute is false (`!= nil`
//! tests presence); values of different types never compare equal, integers and floats
//! compare as numbers; `=~` is a regular expression matched against the whole value.
//! Anything else (arithmetic, `by()`, other scopes, other operators) is refused with the
//! column where it starts.

mod eval;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;

use regex::Regex;
use strand_core::{SpanKind, StatusCode};

pub use eval::{Matched, SpanMatch};
pub use parse::{MAX_QUERY_BYTES, ParseError, parse, parse_field};

/// A parsed query: the first stage selects spans, later ones filter or annotate them.
#[derive(Debug, Clone)]
pub struct Query {
    /// Stages in order; the first is always [`Stage::Spansets`].
    pub stages: Vec<Stage>,
}

/// One stage of the pipeline.
#[derive(Debug, Clone)]
pub enum Stage {
    /// Spanset filters and operators, over the spans the previous stage left.
    Spansets(SpansetExpr),
    /// `count() > 2`, `avg(duration) > 1s`: keeps the spanset when the aggregate compares.
    Aggregate {
        /// The function.
        func: AggFunc,
        /// Its field (`None` for `count()`).
        field: Option<Field>,
        /// The comparison.
        op: CmpOp,
        /// What it compares with.
        value: Static,
    },
    /// `select(f, …)`: fields to return with each matched span.
    Select(Vec<Field>),
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    /// Spans in the set.
    Count,
    /// Mean of a numeric field.
    Avg,
    /// Least value.
    Min,
    /// Greatest value.
    Max,
    /// Sum.
    Sum,
}

/// Spanset expressions.
#[derive(Debug, Clone)]
pub enum SpansetExpr {
    /// `{ expr }`; `None` for `{ }`, every span.
    Filter(Option<Expr>),
    /// Both non-empty: their union.
    And(Box<SpansetExpr>, Box<SpansetExpr>),
    /// Union.
    Or(Box<SpansetExpr>, Box<SpansetExpr>),
    /// `A > B`: spans of `B` whose parent is in `A`.
    Child(Box<SpansetExpr>, Box<SpansetExpr>),
    /// `A >> B`: spans of `B` with an ancestor in `A`.
    Descendant(Box<SpansetExpr>, Box<SpansetExpr>),
}

/// Field expressions inside `{ }`.
#[derive(Debug, Clone)]
pub enum Expr {
    /// Both.
    And(Box<Expr>, Box<Expr>),
    /// Either.
    Or(Box<Expr>, Box<Expr>),
    /// Negation.
    Not(Box<Expr>),
    /// A comparison of two operands (a field and a static, two fields, …).
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
    /// `field =~ "re"` / `!~`: the regular expression is compiled once, anchored.
    Match(Field, Regex, bool),
    /// A field on its own: true when it is the boolean `true`.
    Field(Field),
    /// A static on its own.
    Static(Static),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl CmpOp {
    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
        }
    }
}

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `span.`
    Span,
    /// `resource.`
    Resource,
    /// `.`: the span's, else its resource's.
    Unscoped,
}

/// Built-in fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intrinsic {
    /// Span name.
    Name,
    /// Status code.
    Status,
    /// Status message.
    StatusMessage,
    /// Span kind.
    Kind,
    /// Span duration.
    Duration,
    /// Root span's name.
    RootName,
    /// Root span's service.
    RootServiceName,
    /// Trace duration.
    TraceDuration,
    /// Span id, hex.
    SpanId,
    /// Trace id, hex.
    TraceId,
    /// Strand's extension: the trace's chain-integrity findings, compared with `broken` or
    /// a finding kind (`= "producer_without_consumer"`).
    Integrity,
}

impl Intrinsic {
    /// The name a result carries the value under.
    pub fn name(self) -> &'static str {
        match self {
            Intrinsic::Name => "name",
            Intrinsic::Status => "status",
            Intrinsic::StatusMessage => "statusMessage",
            Intrinsic::Kind => "kind",
            Intrinsic::Duration => "duration",
            Intrinsic::RootName => "rootName",
            Intrinsic::RootServiceName => "rootServiceName",
            Intrinsic::TraceDuration => "traceDuration",
            Intrinsic::SpanId => "span:id",
            Intrinsic::TraceId => "trace:id",
            Intrinsic::Integrity => "integrity",
        }
    }
}

/// A field: an intrinsic or an attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Built in.
    Intrinsic(Intrinsic),
    /// An attribute in a scope.
    Attr(Scope, String),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Intrinsic(i) => f.write_str(i.name()),
            Field::Attr(Scope::Span, k) => write!(f, "span.{k}"),
            Field::Attr(Scope::Resource, k) => write!(f, "resource.{k}"),
            Field::Attr(Scope::Unscoped, k) => write!(f, ".{k}"),
        }
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Static {
    /// Text.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A duration in nanoseconds.
    Duration(u64),
    /// A status.
    Status(StatusCode),
    /// A kind.
    Kind(SpanKind),
    /// `nil`: no value.
    Nil,
}

impl Query {
    /// Whether any condition reads the trace's chain integrity.
    pub fn uses_integrity(&self) -> bool {
        self.result_fields().contains(&Field::Intrinsic(Intrinsic::Integrity))
    }

    /// The integrity filter every match needs (`integrity = "…"` at the top of the first
    /// filter every match must meet), to find candidates among the analysed traces.
    pub fn integrity_filter(&self) -> Option<strand_core::IntegrityFilter> {
        let Some(Stage::Spansets(s)) = self.stages.first() else { return None };
        let mut filters = Vec::new();
        s.required_filters(&mut filters);
        filters.into_iter().find_map(|expr| {
            let mut conjuncts = Vec::new();
            expr.conjuncts(&mut conjuncts);
            conjuncts.into_iter().find_map(|c| match c {
                Expr::Cmp(l, CmpOp::Eq, r) => match (&**l, &**r) {
                    (Expr::Field(Field::Intrinsic(Intrinsic::Integrity)), Expr::Static(Static::Str(v)))
                    | (Expr::Static(Static::Str(v)), Expr::Field(Field::Intrinsic(Intrinsic::Integrity))) => {
                        v.parse().ok()
                    }
                    _ => None,
                },
                _ => None,
            })
        })
    }

    /// The fields a result should carry for each matched span: those the conditions name,
    /// then those `select` asks for, each once.
    pub fn result_fields(&self) -> Vec<Field> {
        let mut out = Vec::new();
        let mut add = |f: &Field| {
            if !out.contains(f) {
                out.push(f.clone());
            }
        };
        for stage in &self.stages {
            match stage {
                Stage::Spansets(s) => s.fields(&mut add),
                Stage::Aggregate { field: Some(f), .. } => add(f),
                Stage::Aggregate { field: None, .. } => {}
                Stage::Select(fields) => fields.iter().for_each(&mut add),
            }
        }
        out
    }

    /// What the store can be asked for first: the conditions that every matching trace
    /// has on one span, as a [`strand_core::TraceQuery`]'s span and trace conditions. Each
    /// spanset filter every match needs (both sides of `&&`, `>` and `>>`; none under `||`)
    /// offers the conjunction at its top; the most selective one is taken (see
    /// [`selectivity`]). The full query is still evaluated on each trace the store returns.
    pub fn prefilter(&self, q: &mut strand_core::TraceQuery) {
        let Some(Stage::Spansets(s)) = self.stages.first() else { return };
        let mut filters = Vec::new();
        s.required_filters(&mut filters);
        let mut best: Option<(u32, strand_core::TraceQuery)> = None;
        for expr in filters {
            let mut candidate = q.clone();
            let mut conjuncts = Vec::new();
            expr.conjuncts(&mut conjuncts);
            for c in conjuncts {
                prefilter_one(c, &mut candidate);
            }
            let score = selectivity(&candidate);
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, candidate));
            }
        }
        if let Some((_, chosen)) = best {
            *q = chosen;
        }
    }
}

/// How few traces a prefilter is likely to leave: errors are rare, an attribute value or a
/// span name picks out few traces, a service or a duration bound fewer than nothing, a kind
/// hardly any. Ties keep the leftmost filter.
fn selectivity(q: &strand_core::TraceQuery) -> u32 {
    let n = |b: bool| u32::from(b);
    8 * n(q.status == Some(strand_core::StatusFilter::Error))
        + 4 * q.attributes.len() as u32
        + 4 * n(q.operation.is_some())
        + 2 * n(q.service.is_some())
        + 2 * n(q.min_span_duration_nano.is_some() || q.max_span_duration_nano.is_some())
        + 2 * n(q.min_trace_duration_nano.is_some() || q.max_trace_duration_nano.is_some())
        + n(q.kind.is_some())
}

fn prefilter_one(e: &Expr, q: &mut strand_core::TraceQuery) {
    use strand_core::{AttrFilter, AttrScope, StatusFilter};
    let Expr::Cmp(l, op, r) = e else { return };
    let (field, op, value) = match (&**l, &**r) {
        (Expr::Field(f), Expr::Static(v)) => (f, *op, v),
        (Expr::Static(v), Expr::Field(f)) => (f, flip(*op), v),
        _ => return,
    };
    match (field, op, value) {
        (Field::Intrinsic(Intrinsic::Name), CmpOp::Eq, Static::Str(s)) => q.operation = Some(s.clone()),
        (Field::Intrinsic(Intrinsic::Kind), CmpOp::Eq, Static::Kind(k)) => q.kind = Some(*k),
        (Field::Intrinsic(Intrinsic::Status), CmpOp::Eq, Static::Status(StatusCode::Error)) => {
            q.status = Some(StatusFilter::Error)
        }
        (Field::Intrinsic(Intrinsic::Status), CmpOp::Eq, Static::Status(_))
        | (Field::Intrinsic(Intrinsic::Status), CmpOp::Ne, Static::Status(StatusCode::Error)) => {
            q.status = Some(StatusFilter::Ok)
        }
        (Field::Intrinsic(Intrinsic::Duration), op, Static::Duration(d)) => {
            let (min, max) = bounds(op, *d);
            raise(&mut q.min_span_duration_nano, min, u64::max);
            raise(&mut q.max_span_duration_nano, max, u64::min);
        }
        (Field::Intrinsic(Intrinsic::TraceDuration), op, Static::Duration(d)) => {
            let (min, max) = bounds(op, *d);
            raise(&mut q.min_trace_duration_nano, min, u64::max);
            raise(&mut q.max_trace_duration_nano, max, u64::min);
        }
        (Field::Attr(Scope::Resource, k), CmpOp::Eq, Static::Str(s)) if k == "service.name" => {
            q.service = Some(s.clone())
        }
        (Field::Attr(scope, k), CmpOp::Eq, v) => {
            // The store compares values as text in their canonical forms: exact for
            // strings, integers and booleans (floats are left to the evaluation).
            let value = match v {
                Static::Str(s) => s.clone(),
                // A stored -0.0 reads as the text "-0", which the store's forms of 0 lack.
                Static::Int(0) => return,
                Static::Int(i) => i.to_string(),
                Static::Bool(b) => b.to_string(),
                _ => return,
            };
            let scope = match scope {
                Scope::Span => AttrScope::Span,
                Scope::Resource => AttrScope::Resource,
                Scope::Unscoped => AttrScope::Any,
            };
            q.attributes.push(AttrFilter { scope, key: k.clone(), value });
        }
        _ => {}
    }
}

/// `static op field` as `field op' static`.
fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        other => other,
    }
}

/// The inclusive (min, max) a comparison with `d` allows.
fn bounds(op: CmpOp, d: u64) -> (Option<u64>, Option<u64>) {
    match op {
        CmpOp::Eq => (Some(d), Some(d)),
        CmpOp::Gt => (Some(d.saturating_add(1)), None),
        CmpOp::Ge => (Some(d), None),
        CmpOp::Lt => (None, Some(d.saturating_sub(1))),
        CmpOp::Le => (None, Some(d)),
        CmpOp::Ne => (None, None),
    }
}

/// Tightens a bound: keeps the stricter of the two (`pick` is `max` for a minimum).
fn raise(slot: &mut Option<u64>, new: Option<u64>, pick: fn(u64, u64) -> u64) {
    if let Some(n) = new {
        *slot = Some(slot.map_or(n, |old| pick(old, n)));
    }
}

impl SpansetExpr {
    fn fields(&self, add: &mut impl FnMut(&Field)) {
        match self {
            SpansetExpr::Filter(Some(e)) => e.fields(add),
            SpansetExpr::Filter(None) => {}
            SpansetExpr::And(a, b)
            | SpansetExpr::Or(a, b)
            | SpansetExpr::Child(a, b)
            | SpansetExpr::Descendant(a, b) => {
                a.fields(add);
                b.fields(add);
            }
        }
    }

    /// The filters some span of every matching trace must meet, left to right (none under
    /// `||`).
    fn required_filters<'a>(&'a self, out: &mut Vec<&'a Expr>) {
        match self {
            SpansetExpr::Filter(e) => out.extend(e.as_ref()),
            SpansetExpr::And(a, b) | SpansetExpr::Child(a, b) | SpansetExpr::Descendant(a, b) => {
                a.required_filters(out);
                b.required_filters(out);
            }
            SpansetExpr::Or(..) => {}
        }
    }
}

impl Expr {
    fn fields(&self, add: &mut impl FnMut(&Field)) {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(a, _, b) => {
                a.fields(add);
                b.fields(add);
            }
            Expr::Not(a) => a.fields(add),
            Expr::Match(f, ..) | Expr::Field(f) => add(f),
            Expr::Static(_) => {}
        }
    }

    fn conjuncts<'a>(&'a self, out: &mut Vec<&'a Expr>) {
        match self {
            Expr::And(a, b) => {
                a.conjuncts(out);
                b.conjuncts(out);
            }
            other => out.push(other),
        }
    }
}
