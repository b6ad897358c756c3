//! The subset of OTTL (the OpenTelemetry Transformation Language) that the collector's
//! `ottl_condition` sampling policy uses: boolean conditions on a span, or on a span event,
//! with the resource and instrumentation scope around it.
//!
//! ```text
//! condition  := or
//! or         := and ( 'or' and )*           and := not ( 'and' not )*
//! not        := 'not' not | primary
//! primary    := '(' condition ')' | value ( op value )?     op := == != < <= > >=
//! value      := term ( ( '+' | '-' ) term )*                 term := factor ( ( '*' | '/' ) factor )*
//! factor     := '-' factor | '(' value ')' | literal | path | Converter '(' args ')'
//! ```
//!
//! Span paths: `name`, `kind`, `status.code`, `status.message`, `attributes["k"]`,
//! `start_time_unix_nano`, `end_time_unix_nano`, `start_time`, `end_time`,
//! `trace_id.string`, `span_id.string`, `parent_span_id.string`, `trace_state`,
//! `dropped_attributes_count`, `dropped_events_count`, `dropped_links_count`; on both
//! contexts `resource.attributes["k"]`, `instrumentation_scope.name` / `.version` /
//! `.attributes["k"]`. Span-event paths: `name`, `attributes["k"]`, `time_unix_nano`, `time`,
//! `dropped_attributes_count`, and `span.<span path>`. Literals: strings, integers, floats,
//! `true`, `false`, `nil` and the enums `SPAN_KIND_*` and `STATUS_CODE_*`. Converters:
//! `IsMatch(target, "regex")` and `Duration("1h30m")`. Times subtract to durations, and
//! durations add to times and to each other; integers and floats compare as numbers; values
//! of other different types are never equal; a missing attribute is `nil`. Anything else is
//! refused when the configuration loads, naming the column.

use std::fmt;

use regex::Regex;
use strand_core::{AnyValue, Event, KeyValue, Resource, Scope, Span};

/// Longest condition accepted, in bytes.
const MAX_CONDITION_BYTES: usize = 8 << 10;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 32;

/// What a condition is evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A span (`span:` conditions).
    Span,
    /// One of a span's events (`spanevent:` conditions).
    SpanEvent,
}

/// A parse error: the column (1-based, in characters) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OttlError {
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for OttlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

/// A compiled condition.
#[derive(Debug)]
pub struct Condition(Bool);

#[derive(Debug)]
enum Bool {
    And(Box<Bool>, Box<Bool>),
    Or(Box<Bool>, Box<Bool>),
    Not(Box<Bool>),
    Cmp(Expr, Op, Expr),
    /// A value that must be the boolean `true` (a bare `IsMatch(…)`, `true`, a path).
    Value(Expr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug)]
enum Expr {
    Lit(Val),
    Path(Path),
    IsMatch(Box<Expr>, Regex),
    Neg(Box<Expr>),
    Math(Box<Expr>, char, Box<Expr>),
}

/// Values during evaluation.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Nanoseconds since the epoch.
    Time(i64),
    /// Nanoseconds.
    Duration(i64),
    Nil,
    /// Present but not comparable (bytes, arrays, maps).
    Other,
}

#[derive(Debug, Clone, PartialEq)]
enum Path {
    Name,
    Kind,
    StatusCode,
    StatusMessage,
    Attr(String),
    StartNanos,
    EndNanos,
    Start,
    End,
    TraceId,
    SpanId,
    ParentSpanId,
    TraceState,
    DroppedAttributes,
    DroppedEvents,
    DroppedLinks,
    ResourceAttr(String),
    ScopeName,
    ScopeVersion,
    ScopeAttr(String),
    EventName,
    EventAttr(String),
    EventNanos,
    EventTime,
    EventDroppedAttributes,
}

/// What a condition sees.
pub struct Subject<'a> {
    /// The resource.
    pub resource: &'a Resource,
    /// The instrumentation scope.
    pub scope: &'a Scope,
    /// The span.
    pub span: &'a Span,
    /// The event, for span-event conditions.
    pub event: Option<&'a Event>,
}

impl Condition {
    /// Parses a condition for `context`.
    pub fn parse(src: &str, context: Context) -> Result<Self, OttlError> {
        if src.len() > MAX_CONDITION_BYTES {
            return Err(OttlError { column: 1, message: format!("over {MAX_CONDITION_BYTES} bytes") });
        }
        let toks = lex(src)?;
        let mut p = Parser { src, toks, at: 0, depth: 0, context };
        let b = p.or()?;
        if p.peek() != &Tok::End {
            return Err(p.unexpected("`and`, `or` or the end of the condition"));
        }
        Ok(Condition(b))
    }

    /// Whether the condition holds. A type error in arithmetic (a string plus a number)
    /// makes the condition false, as the collector's policy does not sample on an error.
    pub fn holds(&self, s: &Subject<'_>) -> bool {
        holds(&self.0, s).unwrap_or(false)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Op(Op),
    Plus,
    Minus,
    Star,
    Slash,
    Str(String),
    Int(i64),
    Float(f64),
    Ident(String),
    End,
}

fn column(src: &str, at: usize) -> usize {
    src[..at].chars().count() + 1
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, OttlError> {
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    let err = |at: usize, m: String| OttlError { column: column(src, at), message: m };
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let two = |s: &str| src[i..].starts_with(s);
        let (tok, len) = match c {
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b',' => (Tok::Comma, 1),
            b'.' => (Tok::Dot, 1),
            b'+' => (Tok::Plus, 1),
            b'-' => (Tok::Minus, 1),
            b'*' => (Tok::Star, 1),
            b'/' => (Tok::Slash, 1),
            b'=' if two("==") => (Tok::Op(Op::Eq), 2),
            b'!' if two("!=") => (Tok::Op(Op::Ne), 2),
            b'<' if two("<=") => (Tok::Op(Op::Le), 2),
            b'<' => (Tok::Op(Op::Lt), 1),
            b'>' if two(">=") => (Tok::Op(Op::Ge), 2),
            b'>' => (Tok::Op(Op::Gt), 1),
            b'"' => {
                let mut s = String::new();
                let mut chars = src[i + 1..].char_indices();
                let end = loop {
                    match chars.next() {
                        None => return Err(err(start, "unterminated string".into())),
                        Some((j, '"')) => break i + 1 + j + 1,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => s.push('\n'),
                            Some((_, 't')) => s.push('\t'),
                            Some((_, ch @ ('"' | '\\'))) => s.push(ch),
                            Some((j, other)) => {
                                return Err(err(i + 1 + j, format!("unknown escape `\\{other}`")));
                            }
                            None => return Err(err(start, "unterminated string".into())),
                        },
                        Some((_, ch)) => s.push(ch),
                    }
                };
                out.push((Tok::Str(s), start));
                i = end;
                continue;
            }
            b'0'..=b'9' => {
                let mut j = i;
                while j < bytes.len() && (bytes[j].is_ascii_digit() || bytes[j] == b'.') {
                    j += 1;
                }
                let text = &src[i..j];
                let tok = if let Ok(n) = text.parse::<i64>() {
                    Tok::Int(n)
                } else {
                    match text.parse::<f64>() {
                        Ok(f) if f.is_finite() => Tok::Float(f),
                        _ => return Err(err(start, format!("`{text}` is not a number"))),
                    }
                };
                out.push((tok, start));
                i = j;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                out.push((Tok::Ident(src[i..j].to_owned()), start));
                i = j;
                continue;
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(err(start, format!("unexpected `{ch}`")));
            }
        };
        out.push((tok, start));
        i += len;
    }
    out.push((Tok::End, src.len()));
    Ok(out)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    at: usize,
    depth: usize,
    context: Context,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Str(s) => format!("the string {s:?}"),
        Tok::Int(i) => format!("the number {i}"),
        Tok::Float(f) => format!("the number {f}"),
        Tok::Ident(w) => format!("`{w}`"),
        Tok::End => "the end of the condition".into(),
        other => format!(
            "`{}`",
            match other {
                Tok::LParen => "(",
                Tok::RParen => ")",
                Tok::LBracket => "[",
                Tok::RBracket => "]",
                Tok::Comma => ",",
                Tok::Dot => ".",
                Tok::Plus => "+",
                Tok::Minus => "-",
                Tok::Star => "*",
                Tok::Slash => "/",
                Tok::Op(Op::Eq) => "==",
                Tok::Op(Op::Ne) => "!=",
                Tok::Op(Op::Lt) => "<",
                Tok::Op(Op::Le) => "<=",
                Tok::Op(Op::Gt) => ">",
                Tok::Op(Op::Ge) => ">=",
                _ => "?",
            }
        ),
    }
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.at.min(self.toks.len() - 1)].0
    }

    fn pos(&self) -> usize {
        self.toks[self.at.min(self.toks.len() - 1)].1
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.at < self.toks.len() - 1 {
            self.at += 1;
        }
        t
    }

    fn err_at(&self, at: usize, message: impl Into<String>) -> OttlError {
        OttlError { column: column(self.src, at), message: message.into() }
    }

    fn unexpected(&self, want: &str) -> OttlError {
        self.err_at(self.pos(), format!("expected {want}, found {}", describe(self.peek())))
    }

    fn expect(&mut self, t: Tok, want: &str) -> Result<(), OttlError> {
        if self.peek() == &t {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected(want))
        }
    }

    fn keyword(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Tok::Ident(x) if x == w) {
            self.next();
            true
        } else {
            false
        }
    }

    fn deeper(&mut self) -> Result<(), OttlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err_at(self.pos(), format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Bool, OttlError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Bool::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Bool, OttlError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            left = Bool::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Bool, OttlError> {
        if self.keyword("not") {
            self.deeper()?;
            let b = Bool::Not(Box::new(self.not()?));
            self.depth -= 1;
            return Ok(b);
        }
        // `(` opens either a boolean group or an arithmetic one: try the boolean first.
        if self.peek() == &Tok::LParen {
            let (save, depth) = (self.at, self.depth);
            self.next();
            self.deeper()?;
            if let Ok(b) = self.or()
                && self.peek() == &Tok::RParen
            {
                self.next();
                self.depth -= 1;
                // `(a) == b` continues as a comparison of values; only a group of
                // conditions stands on its own.
                if !matches!(self.peek(), Tok::Op(_) | Tok::Plus | Tok::Minus | Tok::Star | Tok::Slash) {
                    return Ok(b);
                }
            }
            self.at = save;
            self.depth = depth;
        }
        let left = self.value()?;
        match self.peek().clone() {
            Tok::Op(op) => {
                self.next();
                let right = self.value()?;
                Ok(Bool::Cmp(left, op, right))
            }
            _ => Ok(Bool::Value(left)),
        }
    }

    fn value(&mut self) -> Result<Expr, OttlError> {
        self.left_assoc(Self::term, |t| match t {
            Tok::Plus => Some('+'),
            Tok::Minus => Some('-'),
            _ => None,
        })
    }

    fn term(&mut self) -> Result<Expr, OttlError> {
        self.left_assoc(Self::factor, |t| match t {
            Tok::Star => Some('*'),
            Tok::Slash => Some('/'),
            _ => None,
        })
    }

    /// `operand (op operand)*`, folded to the left, for the operators `op_of` names.
    fn left_assoc(
        &mut self,
        operand: fn(&mut Self) -> Result<Expr, OttlError>,
        op_of: fn(&Tok) -> Option<char>,
    ) -> Result<Expr, OttlError> {
        let mut left = operand(self)?;
        while let Some(op) = op_of(self.peek()) {
            self.next();
            left = Expr::Math(Box::new(left), op, Box::new(operand(self)?));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<Expr, OttlError> {
        let at = self.pos();
        match self.next() {
            Tok::Minus => {
                self.deeper()?;
                let e = Expr::Neg(Box::new(self.factor()?));
                self.depth -= 1;
                Ok(e)
            }
            Tok::LParen => {
                self.deeper()?;
                let e = self.value()?;
                self.expect(Tok::RParen, "`)`")?;
                self.depth -= 1;
                Ok(e)
            }
            Tok::Str(s) => Ok(Expr::Lit(Val::Str(s))),
            Tok::Int(i) => Ok(Expr::Lit(Val::Int(i))),
            Tok::Float(f) => Ok(Expr::Lit(Val::Float(f))),
            Tok::Ident(w) => self.word(w, at),
            other => {
                self.at -= usize::from(other != Tok::End);
                Err(self.unexpected("a value, a path or a converter"))
            }
        }
    }

    /// A literal keyword, an enum, a converter call or a path, starting with `w` at `at`.
    fn word(&mut self, w: String, at: usize) -> Result<Expr, OttlError> {
        if let Some(v) = enum_value(&w) {
            return Ok(Expr::Lit(v));
        }
        if self.peek() == &Tok::LParen {
            return self.converter(&w, at);
        }
        if w.starts_with(|c: char| c.is_ascii_uppercase()) && !w.contains('_') {
            return Err(self.err_at(at, format!("`{w}` is not a supported converter or value")));
        }
        let mut segments = vec![w];
        while self.peek() == &Tok::Dot {
            self.next();
            match self.next() {
                Tok::Ident(s) => segments.push(s),
                _ => {
                    return Err(self.err_at(
                        self.toks[self.at.saturating_sub(1)].1,
                        "expected a path segment after `.`",
                    ));
                }
            }
        }
        let mut keys = Vec::new();
        while self.peek() == &Tok::LBracket {
            self.next();
            match self.next() {
                Tok::Str(k) => keys.push(k),
                _ => {
                    return Err(self.err_at(
                        self.toks[self.at.saturating_sub(1)].1,
                        "expected a string key inside `[ ]`",
                    ));
                }
            }
            self.expect(Tok::RBracket, "`]`")?;
        }
        let path: Vec<&str> = segments.iter().map(String::as_str).collect();
        resolve(&path, &keys, self.context).map(Expr::Path).map_err(|m| self.err_at(at, m))
    }

    fn converter(&mut self, name: &str, at: usize) -> Result<Expr, OttlError> {
        self.next(); // (
        match name {
            "IsMatch" => {
                let target = self.value()?;
                self.expect(Tok::Comma, "`,` and a pattern")?;
                let pat_at = self.pos();
                let Tok::Str(pattern) = self.next() else {
                    return Err(self.err_at(pat_at, "IsMatch's pattern must be a string literal"));
                };
                let re = regex::RegexBuilder::new(&pattern)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| self.err_at(pat_at, format!("invalid regular expression: {e}")))?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(Expr::IsMatch(Box::new(target), re))
            }
            "Duration" => {
                let arg_at = self.pos();
                let Tok::Str(text) = self.next() else {
                    return Err(self.err_at(arg_at, "Duration takes a string literal such as \"1h30m\""));
                };
                let nanos = go_duration(&text).map_err(|m| self.err_at(arg_at, m))?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(Expr::Lit(Val::Duration(nanos)))
            }
            other => {
                Err(self
                    .err_at(at, format!("converter `{other}` is not supported (IsMatch and Duration are)")))
            }
        }
    }
}

fn enum_value(w: &str) -> Option<Val> {
    let n = match w {
        "true" => return Some(Val::Bool(true)),
        "false" => return Some(Val::Bool(false)),
        "nil" => return Some(Val::Nil),
        "SPAN_KIND_UNSPECIFIED" | "STATUS_CODE_UNSET" => 0,
        "SPAN_KIND_INTERNAL" | "STATUS_CODE_OK" => 1,
        "SPAN_KIND_SERVER" | "STATUS_CODE_ERROR" => 2,
        "SPAN_KIND_CLIENT" => 3,
        "SPAN_KIND_PRODUCER" => 4,
        "SPAN_KIND_CONSUMER" => 5,
        _ => return None,
    };
    Some(Val::Int(n))
}

/// A Go duration (`300ms`, `1h30m`, `-2s`), as OTTL's `Duration` reads it.
fn go_duration(text: &str) -> Result<i64, String> {
    let (negative, body) = match text.trim().strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let d = strand_core::units::parse_duration(body)?;
    let n = i64::try_from(d.as_nanos()).map_err(|_| format!("duration `{text}` is too large"))?;
    Ok(if negative { -n } else { n })
}

fn resolve(path: &[&str], keys: &[String], ctx: Context) -> Result<Path, String> {
    let key = |what: &str| -> Result<String, String> {
        match keys {
            [k] => Ok(k.clone()),
            [] => Err(format!("`{what}` is a map: name a key, as in {what}[\"key\"]")),
            _ => Err(format!("nested keys in `{what}` are not supported")),
        }
    };
    let no_keys =
        |p: Path| if keys.is_empty() { Ok(p) } else { Err(format!("`{}` takes no key", path.join("."))) };
    match (ctx, path) {
        (_, ["resource", "attributes"]) => key("resource.attributes").map(Path::ResourceAttr),
        (_, ["instrumentation_scope", "name"]) => no_keys(Path::ScopeName),
        (_, ["instrumentation_scope", "version"]) => no_keys(Path::ScopeVersion),
        (_, ["instrumentation_scope", "attributes"]) => {
            key("instrumentation_scope.attributes").map(Path::ScopeAttr)
        }
        (Context::SpanEvent, ["name"]) => no_keys(Path::EventName),
        (Context::SpanEvent, ["attributes"]) => key("attributes").map(Path::EventAttr),
        (Context::SpanEvent, ["time_unix_nano"]) => no_keys(Path::EventNanos),
        (Context::SpanEvent, ["time"]) => no_keys(Path::EventTime),
        (Context::SpanEvent, ["dropped_attributes_count"]) => no_keys(Path::EventDroppedAttributes),
        (Context::SpanEvent, ["span", rest @ ..]) => resolve(rest, keys, Context::Span),
        (Context::SpanEvent, _) => Err(format!("`{}` is not a span event path", path.join("."))),
        (Context::Span, ["name"]) => no_keys(Path::Name),
        (Context::Span, ["kind"]) => no_keys(Path::Kind),
        (Context::Span, ["status", "code"]) => no_keys(Path::StatusCode),
        (Context::Span, ["status", "message"]) => no_keys(Path::StatusMessage),
        (Context::Span, ["attributes"]) => key("attributes").map(Path::Attr),
        (Context::Span, ["start_time_unix_nano"]) => no_keys(Path::StartNanos),
        (Context::Span, ["end_time_unix_nano"]) => no_keys(Path::EndNanos),
        (Context::Span, ["start_time"]) => no_keys(Path::Start),
        (Context::Span, ["end_time"]) => no_keys(Path::End),
        (Context::Span, ["trace_id", "string"]) => no_keys(Path::TraceId),
        (Context::Span, ["span_id", "string"]) => no_keys(Path::SpanId),
        (Context::Span, ["parent_span_id", "string"]) => no_keys(Path::ParentSpanId),
        (Context::Span, ["trace_state"]) => no_keys(Path::TraceState),
        (Context::Span, ["dropped_attributes_count"]) => no_keys(Path::DroppedAttributes),
        (Context::Span, ["dropped_events_count"]) => no_keys(Path::DroppedEvents),
        (Context::Span, ["dropped_links_count"]) => no_keys(Path::DroppedLinks),
        (Context::Span, _) => {
            Err(format!("`{}` is not a span path (or not a supported one)", path.join(".")))
        }
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Val {
    match attrs.iter().find(|kv| kv.key == key).map(|kv| &kv.value) {
        None | Some(AnyValue::Empty) => Val::Nil,
        Some(AnyValue::String(s)) => Val::Str(s.clone()),
        Some(AnyValue::Int(i)) => Val::Int(*i),
        Some(AnyValue::Double(d)) => Val::Float(*d),
        Some(AnyValue::Bool(b)) => Val::Bool(*b),
        Some(_) => Val::Other,
    }
}

fn nanos(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn get(path: &Path, s: &Subject<'_>) -> Val {
    let sp = s.span;
    match path {
        Path::Name => Val::Str(sp.name.clone()),
        Path::Kind => Val::Int(sp.kind as i64),
        Path::StatusCode => Val::Int(sp.status.code as i64),
        Path::StatusMessage => Val::Str(sp.status.message.clone()),
        Path::Attr(k) => attr(&sp.attributes, k),
        Path::StartNanos => Val::Int(nanos(sp.start_time_unix_nano)),
        Path::EndNanos => Val::Int(nanos(sp.end_time_unix_nano)),
        Path::Start => Val::Time(nanos(sp.start_time_unix_nano)),
        Path::End => Val::Time(nanos(sp.end_time_unix_nano)),
        Path::TraceId => Val::Str(sp.trace_id.to_hex()),
        Path::SpanId => Val::Str(sp.span_id.to_hex()),
        Path::ParentSpanId => Val::Str(sp.parent_span_id.map(|p| p.to_hex()).unwrap_or_default()),
        Path::TraceState => Val::Str(sp.trace_state.clone()),
        Path::DroppedAttributes => Val::Int(i64::from(sp.dropped_attributes_count)),
        Path::DroppedEvents => Val::Int(i64::from(sp.dropped_events_count)),
        Path::DroppedLinks => Val::Int(i64::from(sp.dropped_links_count)),
        Path::ResourceAttr(k) => attr(&s.resource.attributes, k),
        Path::ScopeName => Val::Str(s.scope.name.clone()),
        Path::ScopeVersion => Val::Str(s.scope.version.clone()),
        Path::ScopeAttr(k) => attr(&s.scope.attributes, k),
        Path::EventName => s.event.map_or(Val::Nil, |e| Val::Str(e.name.clone())),
        Path::EventAttr(k) => s.event.map_or(Val::Nil, |e| attr(&e.attributes, k)),
        Path::EventNanos => s.event.map_or(Val::Nil, |e| Val::Int(nanos(e.time_unix_nano))),
        Path::EventTime => s.event.map_or(Val::Nil, |e| Val::Time(nanos(e.time_unix_nano))),
        Path::EventDroppedAttributes => {
            s.event.map_or(Val::Nil, |e| Val::Int(i64::from(e.dropped_attributes_count)))
        }
    }
}

/// A type error in arithmetic.
struct TypeError;

fn eval(e: &Expr, s: &Subject<'_>) -> Result<Val, TypeError> {
    Ok(match e {
        Expr::Lit(v) => v.clone(),
        Expr::Path(p) => get(p, s),
        Expr::IsMatch(target, re) => {
            let text = match eval(target, s)? {
                Val::Str(t) => t,
                Val::Int(i) => i.to_string(),
                Val::Float(f) => f.to_string(),
                Val::Bool(b) => b.to_string(),
                _ => return Ok(Val::Bool(false)),
            };
            Val::Bool(re.is_match(&text))
        }
        Expr::Neg(inner) => match eval(inner, s)? {
            Val::Int(i) => Val::Int(i.checked_neg().ok_or(TypeError)?),
            Val::Float(f) => Val::Float(-f),
            Val::Duration(d) => Val::Duration(d.checked_neg().ok_or(TypeError)?),
            _ => return Err(TypeError),
        },
        Expr::Math(l, op, r) => math(eval(l, s)?, *op, eval(r, s)?)?,
    })
}

fn math(l: Val, op: char, r: Val) -> Result<Val, TypeError> {
    use Val::*;
    let int = |a: i64, b: i64| -> Result<i64, TypeError> {
        match op {
            '+' => a.checked_add(b),
            '-' => a.checked_sub(b),
            '*' => a.checked_mul(b),
            _ => a.checked_div(b),
        }
        .ok_or(TypeError)
    };
    let float = |a: f64, b: f64| match op {
        '+' => a + b,
        '-' => a - b,
        '*' => a * b,
        _ => a / b,
    };
    Ok(match (l, op, r) {
        (Int(a), _, Int(b)) => Int(int(a, b)?),
        (Float(a), _, Float(b)) => Float(float(a, b)),
        (Int(a), _, Float(b)) => Float(float(a as f64, b)),
        (Float(a), _, Int(b)) => Float(float(a, b as f64)),
        (Time(a), '-', Time(b)) => Duration(int(a, b)?),
        (Time(a), '+' | '-', Duration(b)) => Time(int(a, b)?),
        (Duration(a), '+' | '-', Duration(b)) => Duration(int(a, b)?),
        (Duration(a), '+', Time(b)) => Time(int(b, a)?),
        (Str(a), '+', Str(b)) => Str(a + &b),
        _ => return Err(TypeError),
    })
}

fn compare(l: &Val, op: Op, r: &Val) -> bool {
    use Val::*;
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (l, r) {
        // nil equals nil, and is neither less nor greater.
        (Nil, Nil) => return op == Op::Eq,
        (Str(a), Str(b)) => Some(a.cmp(b)),
        (Int(a), Int(b)) | (Time(a), Time(b)) | (Duration(a), Duration(b)) => Some(a.cmp(b)),
        (Int(a), Float(b)) => (*a as f64).partial_cmp(b),
        (Float(a), Int(b)) => a.partial_cmp(&(*b as f64)),
        (Float(a), Float(b)) => a.partial_cmp(b),
        (Bool(a), Bool(b)) => return matches!(op, Op::Eq if a == b) || matches!(op, Op::Ne if a != b),
        // Different types: never equal, always unequal, never ordered.
        _ => return op == Op::Ne,
    };
    let Some(o) = ord else { return op == Op::Ne };
    match op {
        Op::Eq => o == Ordering::Equal,
        Op::Ne => o != Ordering::Equal,
        Op::Lt => o == Ordering::Less,
        Op::Le => o != Ordering::Greater,
        Op::Gt => o == Ordering::Greater,
        Op::Ge => o != Ordering::Less,
    }
}

fn holds(b: &Bool, s: &Subject<'_>) -> Result<bool, TypeError> {
    Ok(match b {
        Bool::And(x, y) => holds(x, s)? && holds(y, s)?,
        Bool::Or(x, y) => holds(x, s)? || holds(y, s)?,
        Bool::Not(x) => !holds(x, s)?,
        Bool::Cmp(l, op, r) => compare(&eval(l, s)?, *op, &eval(r, s)?),
        Bool::Value(v) => eval(v, s)? == Val::Bool(true),
    })
}

#[cfg(test)]
mod tests {
    use strand_core::{SpanId, SpanKind, StatusCode, TraceId};

    use super::*;

    fn subject_parts() -> (Resource, Scope, Span) {
        let resource = Resource {
            attributes: vec![KeyValue::new("service.name", AnyValue::String("checkout".into()))],
            ..Resource::default()
        };
        let scope = Scope { name: "io.opentelemetry.http".into(), version: "1.2".into(), ..Scope::default() };
        let mut span = Span::new(TraceId([1; 16]), SpanId([2; 8]), "GET /cart", 1_000_000_000, 4_500_000_000);
        span.kind = SpanKind::Server;
        span.status.code = StatusCode::Error;
        span.status.message = "upstream timed out".into();
        span.attributes = vec![
            KeyValue::new("http.route", AnyValue::String("/cart".into())),
            KeyValue::new("http.response.status_code", AnyValue::Int(504)),
            KeyValue::new("retry.ratio", AnyValue::Double(0.5)),
            KeyValue::new("cache.hit", AnyValue::Bool(false)),
        ];
        span.events = vec![Event {
            time_unix_nano: 2_000_000_000,
            name: "exception".into(),
            attributes: vec![KeyValue::new("exception.type", AnyValue::String("TimeoutError".into()))],
            dropped_attributes_count: 0,
        }];
        (resource, scope, span)
    }

    fn check(ctx: Context, cases: &[(&str, bool)]) {
        let (resource, scope, span) = subject_parts();
        let event = span.events.first();
        let s = Subject {
            resource: &resource,
            scope: &scope,
            span: &span,
            event: if ctx == Context::SpanEvent { event } else { None },
        };
        for (text, want) in cases {
            let c = Condition::parse(text, ctx).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.holds(&s), *want, "{text}");
        }
    }

    #[test]
    fn span_conditions_evaluate_as_the_collector_does() {
        check(
            Context::Span,
            &[
                (r#"attributes["http.route"] == "/cart""#, true),
                (r#"attributes["http.route"] != "/cart""#, false),
                (r#"attributes["http.response.status_code"] >= 500"#, true),
                (r#"attributes["http.response.status_code"] == 504.0"#, true),
                (r#"attributes["http.response.status_code"] == "504""#, false),
                (r#"attributes["retry.ratio"] < 1"#, true),
                (r#"attributes["cache.hit"] == false"#, true),
                (r#"attributes["missing"] == nil"#, true),
                (r#"attributes["missing"] != nil"#, false),
                (r#"attributes["http.route"] != nil"#, true),
                (r#"resource.attributes["service.name"] == "checkout""#, true),
                (
                    r#"instrumentation_scope.name == "io.opentelemetry.http" and instrumentation_scope.version == "1.2""#,
                    true,
                ),
                ("kind == SPAN_KIND_SERVER", true),
                ("kind == SPAN_KIND_CLIENT", false),
                ("status.code == STATUS_CODE_ERROR", true),
                (r#"status.message == "upstream timed out""#, true),
                (r#"name == "GET /cart" and not (kind == SPAN_KIND_CLIENT)"#, true),
                (r#"name == "nope" or kind == SPAN_KIND_SERVER"#, true),
                (r#"not name == "GET /cart""#, false),
                (r#"IsMatch(name, "^GET /.*")"#, true),
                (r#"IsMatch(attributes["http.response.status_code"], "^5\\d\\d$")"#, true),
                (r#"IsMatch(attributes["missing"], ".*")"#, false),
                (r#"end_time - start_time > Duration("3s")"#, true),
                (r#"end_time - start_time > Duration("3.5s")"#, false),
                (r#"end_time - start_time == Duration("3s500ms")"#, true),
                ("end_time_unix_nano - start_time_unix_nano >= 3500000000", true),
                (r#"start_time + Duration("1h") > end_time"#, true),
                ("(end_time_unix_nano - start_time_unix_nano) / 1000000 == 3500", true),
                ("-attributes[\"http.response.status_code\"] < 0", true),
                (
                    r#"span_id.string == "0202020202020202" and trace_id.string == "01010101010101010101010101010101""#,
                    true,
                ),
                (r#"parent_span_id.string == """#, true),
                (r#"attributes["http.route"] + 1 == 2"#, false),
                ("true", true),
                ("(true and false) or (1 + 1) == 2", true),
            ],
        );
    }

    #[test]
    fn span_event_conditions_see_the_event_and_its_span() {
        check(
            Context::SpanEvent,
            &[
                (r#"name == "exception""#, true),
                (r#"attributes["exception.type"] == "TimeoutError""#, true),
                ("time_unix_nano == 2000000000", true),
                (r#"span.name == "GET /cart" and span.attributes["http.route"] == "/cart""#, true),
                (r#"resource.attributes["service.name"] == "checkout""#, true),
                (r#"time - span.start_time == Duration("1s")"#, true),
            ],
        );
    }

    #[test]
    fn unsupported_syntax_is_refused_with_its_column() {
        let cases: &[(&str, Context, usize, &str)] = &[
            (r#"Len(name) > 3"#, Context::Span, 1, "converter `Len` is not supported"),
            (r#"name == "a" && kind == 2"#, Context::Span, 13, "unexpected `&`"),
            (r#"attributes == nil"#, Context::Span, 1, "is a map"),
            (r#"attributes["a"]["b"] == 1"#, Context::Span, 1, "nested keys"),
            (r#"time_unix_nano > 0"#, Context::Span, 1, "not a span path"),
            (r#"kind == 2"#, Context::SpanEvent, 1, "not a span event path"),
            (r#"IsMatch(name, "(")"#, Context::Span, 15, "invalid regular expression"),
            (r#"Duration("soon") > 0"#, Context::Span, 10, "invalid duration `soon`"),
            (r#"name == "open"#, Context::Span, 9, "unterminated string"),
            (r#"name =="#, Context::Span, 8, "expected a value"),
            (r#"name == "a" xor kind == 2"#, Context::Span, 13, "expected `and`, `or`"),
        ];
        for (text, ctx, column, says) in cases {
            match Condition::parse(text, *ctx) {
                Ok(_) => panic!("{text} parsed"),
                Err(e) => {
                    assert!(e.message.contains(says), "{text}: {e}");
                    assert_eq!(e.column, *column, "{text}: {e}");
                }
            }
        }
        let deep = format!("{}true{}", "(".repeat(100), ")".repeat(100));
        assert!(Condition::parse(&deep, Context::Span).is_err_and(|e| e.message.contains("nested deeper")));
    }
}
