//! The TraceQL lexer and recursive-descent parser. Errors name the column (1-based, in
//! characters) where the offending token starts and what was expected there.

use regex::RegexBuilder;
use strand_core::{SpanKind, StatusCode};

use super::{AggFunc, CmpOp, Expr, Field, Intrinsic, Query, Scope, SpansetExpr, Stage, Static};

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 16 << 10;
/// Deepest nesting of parentheses and braces accepted.
const MAX_DEPTH: usize = 64;
/// Most tokens in a query: bounds the tree, so chains of `&&` or `>` cannot nest the
/// evaluation's recursion without limit.
const MAX_TOKENS: usize = 1_024;
/// Most regular expressions in a query.
const MAX_REGEXES: usize = 16;
/// Compiled size a regular expression may take.
const MAX_REGEX_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Pipe,
    Comma,
    AndAnd,
    OrOr,
    Bang,
    Op(CmpOp),
    Re,
    NotRe,
    Desc,
    Str(String),
    Int(i64),
    Float(f64),
    Duration(u64),
    Attr(Scope, String),
    Word(String),
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Pipe => "`|`".into(),
            Tok::Comma => "`,`".into(),
            Tok::AndAnd => "`&&`".into(),
            Tok::OrOr => "`||`".into(),
            Tok::Bang => "`!`".into(),
            Tok::Op(op) => format!("`{}`", op_text(*op)),
            Tok::Re => "`=~`".into(),
            Tok::NotRe => "`!~`".into(),
            Tok::Desc => "`>>`".into(),
            Tok::Str(s) => format!("the string {s:?}"),
            Tok::Int(i) => format!("the number {i}"),
            Tok::Float(f) => format!("the number {f}"),
            Tok::Duration(_) => "a duration".into(),
            Tok::Attr(..) => "an attribute".into(),
            Tok::Word(w) => format!("`{w}`"),
            Tok::End => "the end of the query".into(),
        }
    }
}

fn op_text(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "=",
        CmpOp::Ne => "!=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
    }
}

/// A parse error: the column it is at and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong there.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TraceQL: column {}: {}", self.column, self.message)
    }
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

/// Characters that end an attribute name (besides whitespace).
fn ends_name(c: char) -> bool {
    matches!(
        c,
        '{' | '}'
            | '('
            | ')'
            | '='
            | '!'
            | '~'
            | '<'
            | '>'
            | '&'
            | '|'
            | ','
            | '"'
            | '`'
            | '+'
            | '*'
            | '/'
            | '%'
            | '^'
    )
}

impl<'a> Lexer<'a> {
    fn err(&self, at: usize, message: impl Into<String>) -> ParseError {
        ParseError { column: self.src[..at].chars().count() + 1, message: message.into() }
    }

    fn peek_char(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn tokens(mut self) -> Result<Vec<(Tok, usize)>, ParseError> {
        let mut out = Vec::new();
        loop {
            while self.peek_char().is_some_and(char::is_whitespace) {
                self.pos += self.peek_char().map_or(1, char::len_utf8);
            }
            let start = self.pos;
            let Some(c) = self.peek_char() else {
                out.push((Tok::End, start));
                return Ok(out);
            };
            let rest = &self.src[self.pos..];
            let two = |s: &str| rest.starts_with(s);
            let (tok, len) = match c {
                '{' => (Tok::LBrace, 1),
                '}' => (Tok::RBrace, 1),
                '(' => (Tok::LParen, 1),
                ')' => (Tok::RParen, 1),
                ',' => (Tok::Comma, 1),
                '&' if two("&&") => (Tok::AndAnd, 2),
                '|' if two("||") => (Tok::OrOr, 2),
                '|' => (Tok::Pipe, 1),
                '=' if two("=~") => (Tok::Re, 2),
                '=' => (Tok::Op(CmpOp::Eq), 1),
                '!' if two("!=") => (Tok::Op(CmpOp::Ne), 2),
                '!' if two("!~") => (Tok::NotRe, 2),
                '!' => (Tok::Bang, 1),
                '>' if two(">>") => (Tok::Desc, 2),
                '>' if two(">=") => (Tok::Op(CmpOp::Ge), 2),
                '>' => (Tok::Op(CmpOp::Gt), 1),
                '<' if two("<=") => (Tok::Op(CmpOp::Le), 2),
                '<' => (Tok::Op(CmpOp::Lt), 1),
                '"' | '`' => {
                    let s = self.string()?;
                    out.push((Tok::Str(s), start));
                    continue;
                }
                c if c.is_ascii_digit()
                    || (c == '-' && rest[1..].starts_with(|d: char| d.is_ascii_digit())) =>
                {
                    let tok = self.number()?;
                    out.push((tok, start));
                    continue;
                }
                c if c == '.' || c == '_' || c.is_alphabetic() => {
                    let tok = self.word()?;
                    out.push((tok, start));
                    continue;
                }
                other => {
                    let what = match other {
                        '+' | '-' | '*' | '/' | '%' | '^' => "arithmetic is not supported",
                        '~' => "`~` (sibling) is not supported; use `>` or `>>`",
                        '&' => "`&` is not an operator; use `&&`",
                        _ => "unexpected character",
                    };
                    return Err(self.err(start, format!("`{other}`: {what}")));
                }
            };
            self.pos += len;
            out.push((tok, start));
        }
    }

    /// A quoted string at `pos`: `"…"` with `\" \\ \n \t` escapes, or `` `raw` ``.
    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        let quote = self.peek_char().unwrap_or('"');
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek_char() else {
                return Err(self.err(start, "unterminated string"));
            };
            self.pos += c.len_utf8();
            match c {
                c if c == quote => return Ok(out),
                '\\' if quote == '"' => {
                    let Some(e) = self.peek_char() else {
                        return Err(self.err(start, "unterminated string"));
                    };
                    self.pos += e.len_utf8();
                    out.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '"' | '\\' => e,
                        other => {
                            return Err(self.err(
                                self.pos - other.len_utf8() - 1,
                                format!("unknown escape `\\{other}`"),
                            ));
                        }
                    });
                }
                c => out.push(c),
            }
        }
    }

    /// An integer, float or duration.
    fn number(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let mut end = self.pos + usize::from(bytes[self.pos] == b'-');
        while end < bytes.len() && (bytes[end].is_ascii_digit() || bytes[end] == b'.') {
            end += 1;
        }
        let digits = &self.src[start..end];
        let unit_end = self.src[end..].find(|c: char| !c.is_alphabetic()).map_or(self.src.len(), |i| end + i);
        let unit = &self.src[end..unit_end];
        self.pos = unit_end;
        if unit.is_empty() {
            if let Ok(i) = digits.parse::<i64>() {
                return Ok(Tok::Int(i));
            }
            return match digits.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Tok::Float(f)),
                _ => Err(self.err(start, format!("`{digits}` is not a number"))),
            };
        }
        let per = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => {
                return Err(self.err(
                    start,
                    format!("`{digits}{other}`: unknown duration unit `{other}` (ns, us, µs, ms, s, m, h)"),
                ));
            }
        };
        match digits.parse::<f64>() {
            Ok(v) if v >= 0.0 && (v * per) < u64::MAX as f64 => Ok(Tok::Duration((v * per).round() as u64)),
            _ => Err(self.err(start, format!("`{digits}{unit}` is not a duration"))),
        }
    }

    /// A keyword, intrinsic or attribute (`.k`, `span.k`, `resource.k`, `span."k"`).
    fn word(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let end = self.src[start..]
            .find(|c: char| c.is_whitespace() || ends_name(c))
            .map_or(self.src.len(), |i| start + i);
        let text = &self.src[start..end];
        self.pos = end;
        let (scope, key) = if let Some(k) = text.strip_prefix('.') {
            (Scope::Unscoped, k)
        } else if let Some(k) = text.strip_prefix("span.") {
            (Scope::Span, k)
        } else if let Some(k) = text.strip_prefix("resource.") {
            (Scope::Resource, k)
        } else if let Some((scope, _)) = text
            .split_once(['.', ':'])
            .filter(|(s, _)| matches!(*s, "event" | "link" | "instrumentation" | "parent" | "trace" | "span"))
        {
            if text.contains(':') && matches!(scope, "span" | "trace") {
                return Ok(Tok::Word(text.to_owned()));
            }
            return Err(self.err(
                start,
                format!("`{text}`: the `{scope}` scope is not supported (span., resource. or . are)"),
            ));
        } else {
            return Ok(Tok::Word(text.to_owned()));
        };
        let key =
            if key.is_empty() && self.peek_char() == Some('"') { self.string()? } else { key.to_owned() };
        if key.is_empty() {
            return Err(self.err(start, format!("`{text}` names no attribute")));
        }
        Ok(Tok::Attr(scope, key))
    }
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    at: usize,
    depth: usize,
    regexes: usize,
}

/// Parses a query.
pub fn parse(src: &str) -> Result<Query, ParseError> {
    if src.len() > MAX_QUERY_BYTES {
        return Err(ParseError { column: 1, message: format!("the query is over {MAX_QUERY_BYTES} bytes") });
    }
    let toks = Lexer { src, pos: 0 }.tokens()?;
    if toks.len() > MAX_TOKENS {
        return Err(ParseError {
            column: src[..toks[MAX_TOKENS].1].chars().count() + 1,
            message: format!("the query has over {MAX_TOKENS} tokens"),
        });
    }
    let mut p = Parser { src, toks, at: 0, depth: 0, regexes: 0 };
    let mut stages = vec![Stage::Spansets(p.spansets()?)];
    while p.eat(&Tok::Pipe) {
        stages.push(p.stage()?);
    }
    if p.peek() != &Tok::End {
        return Err(p.unexpected("`|`, `&&`, `||`, `>` or `>>` between spansets, or the end"));
    }
    Ok(Query { stages })
}

/// Parses a field on its own, as tag endpoints name them: `resource.k`, `span.k`, `.k`, an
/// intrinsic (`name`, `status`, …), or a bare `k` (an attribute anywhere, as Tempo's v1 tag
/// names are written).
pub fn parse_field(src: &str) -> Result<Field, ParseError> {
    if src.len() > MAX_QUERY_BYTES {
        return Err(ParseError { column: 1, message: format!("the name is over {MAX_QUERY_BYTES} bytes") });
    }
    let toks = Lexer { src, pos: 0 }.tokens()?;
    let mut p = Parser { src, toks, at: 0, depth: 0, regexes: 0 };
    let field = match p.peek().clone() {
        Tok::Word(w) if keyword(&w).is_none() => {
            p.next();
            Field::Attr(Scope::Unscoped, w)
        }
        _ => p.field("a tag name")?,
    };
    if p.peek() != &Tok::End {
        return Err(p.unexpected("the end of the tag name"));
    }
    Ok(field)
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

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == t {
            self.next();
            true
        } else {
            false
        }
    }

    fn err_at(&self, at: usize, message: impl Into<String>) -> ParseError {
        ParseError { column: self.src[..at].chars().count() + 1, message: message.into() }
    }

    fn unexpected(&self, expected: &str) -> ParseError {
        self.err_at(self.pos(), format!("expected {expected}, found {}", self.peek().describe()))
    }

    fn expect(&mut self, t: Tok, what: &str) -> Result<(), ParseError> {
        if self.eat(&t) { Ok(()) } else { Err(self.unexpected(what)) }
    }

    fn deeper(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err_at(self.pos(), format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        let at = self.pos();
        match self.peek().clone() {
            Tok::LBrace | Tok::LParen => Ok(Stage::Spansets(self.spansets()?)),
            Tok::Word(w) => {
                self.next();
                let func = match w.as_str() {
                    "count" => AggFunc::Count,
                    "avg" => AggFunc::Avg,
                    "min" => AggFunc::Min,
                    "max" => AggFunc::Max,
                    "sum" => AggFunc::Sum,
                    "select" => {
                        self.expect(Tok::LParen, "`(` after select")?;
                        let mut fields = vec![self.field("a field to select")?];
                        while self.eat(&Tok::Comma) {
                            fields.push(self.field("a field to select")?);
                        }
                        self.expect(Tok::RParen, "`,` or `)`")?;
                        return Ok(Stage::Select(fields));
                    }
                    "by"
                    | "coalesce"
                    | "quantile_over_time"
                    | "rate"
                    | "count_over_time"
                    | "histogram_over_time"
                    | "compare"
                    | "topk"
                    | "bottomk" => {
                        return Err(self.err_at(at, format!("`{w}` is not supported; stages are count(), avg(), min(), max(), sum(), select() and spanset filters")));
                    }
                    _ => {
                        return Err(self.err_at(
                            at,
                            format!("expected a spanset filter, an aggregate or select(), found `{w}`"),
                        ));
                    }
                };
                self.expect(Tok::LParen, "`(`")?;
                let field = if func == AggFunc::Count {
                    None
                } else {
                    let f = self.field("a field to aggregate")?;
                    if matches!(
                        f,
                        Field::Intrinsic(
                            Intrinsic::Name
                                | Intrinsic::Status
                                | Intrinsic::StatusMessage
                                | Intrinsic::Kind
                                | Intrinsic::RootName
                                | Intrinsic::RootServiceName
                                | Intrinsic::SpanId
                                | Intrinsic::TraceId
                                | Intrinsic::Integrity
                        )
                    ) {
                        return Err(self.err_at(
                            at,
                            format!("`{f}` is not numeric; aggregate duration or a numeric attribute"),
                        ));
                    }
                    Some(f)
                };
                self.expect(Tok::RParen, "`)`")?;
                let op_at = self.pos();
                let op = match self.next() {
                    Tok::Op(op) => op,
                    other => {
                        return Err(self.err_at(
                            op_at,
                            format!("expected a comparison after the aggregate, found {}", other.describe()),
                        ));
                    }
                };
                let value_at = self.pos();
                let durations =
                    matches!(field, Some(Field::Intrinsic(Intrinsic::Duration | Intrinsic::TraceDuration)));
                let value = match self.next() {
                    Tok::Int(_) | Tok::Float(_) if durations => {
                        return Err(self.err_at(
                            value_at,
                            "a duration aggregate compares with a duration such as 150ms",
                        ));
                    }
                    Tok::Duration(_) if !durations => {
                        return Err(
                            self.err_at(value_at, "this aggregate is a number; compare it with a number")
                        );
                    }
                    Tok::Int(i) => Static::Int(i),
                    Tok::Float(f) => Static::Float(f),
                    Tok::Duration(d) => Static::Duration(d),
                    other => {
                        return Err(self.err_at(
                            value_at,
                            format!("expected a number or duration, found {}", other.describe()),
                        ));
                    }
                };
                Ok(Stage::Aggregate { func, field, op, value })
            }
            _ => Err(self.unexpected("a spanset filter, an aggregate or select() after `|`")),
        }
    }

    fn spansets(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut left = self.spanset_and()?;
        while self.eat(&Tok::OrOr) {
            left = SpansetExpr::Or(Box::new(left), Box::new(self.spanset_and()?));
        }
        Ok(left)
    }

    fn spanset_and(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut left = self.spanset_struct()?;
        while self.eat(&Tok::AndAnd) {
            left = SpansetExpr::And(Box::new(left), Box::new(self.spanset_struct()?));
        }
        Ok(left)
    }

    fn spanset_struct(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut left = self.spanset_primary()?;
        loop {
            if self.eat(&Tok::Op(CmpOp::Gt)) {
                left = SpansetExpr::Child(Box::new(left), Box::new(self.spanset_primary()?));
            } else if self.eat(&Tok::Desc) {
                left = SpansetExpr::Descendant(Box::new(left), Box::new(self.spanset_primary()?));
            } else if let Tok::Op(op @ (CmpOp::Lt | CmpOp::Ne | CmpOp::Eq | CmpOp::Ge | CmpOp::Le)) =
                self.peek()
            {
                return Err(self.err_at(
                    self.pos(),
                    format!(
                        "`{}` between spansets is not supported; use `>` (child) or `>>` (descendant)",
                        op_text(*op)
                    ),
                ));
            } else {
                return Ok(left);
            }
        }
    }

    fn spanset_primary(&mut self) -> Result<SpansetExpr, ParseError> {
        self.deeper()?;
        let out = if self.eat(&Tok::LBrace) {
            if self.eat(&Tok::RBrace) {
                SpansetExpr::Filter(None)
            } else {
                let e = self.expr()?;
                self.expect(Tok::RBrace, "`}` or a condition operator")?;
                SpansetExpr::Filter(Some(e))
            }
        } else if self.eat(&Tok::LParen) {
            let e = self.spansets()?;
            self.expect(Tok::RParen, "`)`")?;
            e
        } else {
            return Err(self.unexpected("a spanset filter `{ … }`"));
        };
        self.depth -= 1;
        Ok(out)
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.conj()?;
        while self.eat(&Tok::OrOr) {
            left = Expr::Or(Box::new(left), Box::new(self.conj()?));
        }
        Ok(left)
    }

    fn conj(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        while self.eat(&Tok::AndAnd) {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat(&Tok::Bang) {
            self.deeper()?;
            let e = Expr::Not(Box::new(self.unary()?));
            self.depth -= 1;
            return Ok(e);
        }
        let left_at = self.pos();
        let left = self.operand()?;
        match self.peek().clone() {
            Tok::Op(op) => {
                self.next();
                let right = self.operand()?;
                check_types(&left, op, &right).map_err(|m| self.err_at(left_at, m))?;
                Ok(Expr::Cmp(Box::new(left), op, Box::new(right)))
            }
            tok @ (Tok::Re | Tok::NotRe) => {
                self.next();
                let Expr::Field(field) = left else {
                    return Err(self.err_at(left_at, "the left of `=~` / `!~` must be a field"));
                };
                let re_at = self.pos();
                let Tok::Str(pattern) = self.next() else {
                    return Err(self.err_at(re_at, "the right of `=~` / `!~` must be a string"));
                };
                self.regexes += 1;
                if self.regexes > MAX_REGEXES {
                    return Err(
                        self.err_at(re_at, format!("over {MAX_REGEXES} regular expressions in one query"))
                    );
                }
                let re = RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(MAX_REGEX_BYTES)
                    .build()
                    .map_err(|e| self.err_at(re_at, format!("invalid regular expression: {e}")))?;
                Ok(Expr::Match(field, re, tok == Tok::NotRe))
            }
            _ => Ok(left),
        }
    }

    fn operand(&mut self) -> Result<Expr, ParseError> {
        let at = self.pos();
        match self.next() {
            Tok::LParen => {
                self.deeper()?;
                let e = self.expr()?;
                self.expect(Tok::RParen, "`)`")?;
                self.depth -= 1;
                Ok(e)
            }
            Tok::Str(s) => Ok(Expr::Static(Static::Str(s))),
            Tok::Int(i) => Ok(Expr::Static(Static::Int(i))),
            Tok::Float(f) => Ok(Expr::Static(Static::Float(f))),
            Tok::Duration(d) => Ok(Expr::Static(Static::Duration(d))),
            Tok::Attr(scope, key) => Ok(Expr::Field(Field::Attr(scope, key))),
            Tok::Word(w) => match keyword(&w) {
                Some(Ok(f)) => Ok(Expr::Field(f)),
                Some(Err(s)) => Ok(Expr::Static(s)),
                None => Err(self.err_at(
                    at,
                    format!(
                        "unknown name `{w}`: attributes are written `.{w}`, `span.{w}` or `resource.{w}`"
                    ),
                )),
            },
            other => {
                self.at -= usize::from(other != Tok::End);
                Err(self.unexpected("a field or a value"))
            }
        }
    }

    fn field(&mut self, what: &str) -> Result<Field, ParseError> {
        let at = self.pos();
        match self.next() {
            Tok::Attr(scope, key) => Ok(Field::Attr(scope, key)),
            Tok::Word(w) => match keyword(&w) {
                Some(Ok(f)) => Ok(f),
                _ => Err(self.err_at(at, format!("expected {what}, found `{w}`"))),
            },
            other => Err(self.err_at(at, format!("expected {what}, found {}", other.describe()))),
        }
    }
}

/// A bare word: an intrinsic field (`Ok`) or a keyword static (`Err`).
fn keyword(w: &str) -> Option<Result<Field, Static>> {
    let i = |i| Some(Ok(Field::Intrinsic(i)));
    let s = |s| Some(Err(s));
    match w {
        "name" | "span:name" => i(Intrinsic::Name),
        "status" | "span:status" => i(Intrinsic::Status),
        "statusMessage" | "span:statusMessage" => i(Intrinsic::StatusMessage),
        "kind" | "span:kind" => i(Intrinsic::Kind),
        "duration" | "span:duration" => i(Intrinsic::Duration),
        "rootName" | "trace:rootName" => i(Intrinsic::RootName),
        "rootServiceName" | "trace:rootService" => i(Intrinsic::RootServiceName),
        "traceDuration" | "trace:duration" => i(Intrinsic::TraceDuration),
        "span:id" => i(Intrinsic::SpanId),
        "trace:id" => i(Intrinsic::TraceId),
        "integrity" | "trace:integrity" => i(Intrinsic::Integrity),
        "true" => s(Static::Bool(true)),
        "false" => s(Static::Bool(false)),
        "nil" => s(Static::Nil),
        "error" => s(Static::Status(StatusCode::Error)),
        "ok" => s(Static::Status(StatusCode::Ok)),
        "unset" => s(Static::Status(StatusCode::Unset)),
        "server" => s(Static::Kind(SpanKind::Server)),
        "client" => s(Static::Kind(SpanKind::Client)),
        "producer" => s(Static::Kind(SpanKind::Producer)),
        "consumer" => s(Static::Kind(SpanKind::Consumer)),
        "internal" => s(Static::Kind(SpanKind::Internal)),
        "unspecified" => s(Static::Kind(SpanKind::Unspecified)),
        _ => None,
    }
}

/// Refuses comparisons that can never hold because an intrinsic has a fixed type.
fn check_types(left: &Expr, op: CmpOp, right: &Expr) -> Result<(), String> {
    let (field, value) = match (left, right) {
        (Expr::Field(Field::Intrinsic(i)), Expr::Static(v))
        | (Expr::Static(v), Expr::Field(Field::Intrinsic(i))) => (i, v),
        (Expr::Field(Field::Intrinsic(Intrinsic::Integrity)), _)
        | (_, Expr::Field(Field::Intrinsic(Intrinsic::Integrity))) => {
            return Err("`integrity` compares with a string: \"broken\" or a finding kind".into());
        }
        _ => return Ok(()),
    };
    if *field == Intrinsic::Integrity {
        let Static::Str(v) = value else {
            return Err("`integrity` compares with a string: \"broken\" or a finding kind".into());
        };
        if !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            return Err("`integrity` compares with = or != only".into());
        }
        return v.parse::<strand_core::IntegrityFilter>().map(drop).map_err(|e| format!("`integrity`: {e}"));
    }
    let ok = matches!(
        (field, value),
        (_, Static::Nil)
            | (Intrinsic::Status, Static::Status(_))
            | (Intrinsic::Kind, Static::Kind(_))
            | (Intrinsic::Duration | Intrinsic::TraceDuration, Static::Duration(_))
            | (
                Intrinsic::Name
                    | Intrinsic::StatusMessage
                    | Intrinsic::RootName
                    | Intrinsic::RootServiceName
                    | Intrinsic::SpanId
                    | Intrinsic::TraceId,
                Static::Str(_)
            )
    );
    if ok {
        return Ok(());
    }
    let want = match field {
        Intrinsic::Status => "error, ok or unset",
        Intrinsic::Kind => "server, client, producer, consumer, internal or unspecified",
        Intrinsic::Duration | Intrinsic::TraceDuration => "a duration such as 150ms",
        _ => "a string",
    };
    Err(format!("`{}` compares with {want}", field.name()))
}
