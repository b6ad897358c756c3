//! Parser tests over Tempo's documented examples, errors with their columns, and
//! evaluation on a small trace.

use std::sync::Arc;

use strand_core::{
    AnyValue, KeyValue, Resource, Scope as OtelScope, Span, SpanId, SpanKind, StatusCode, StoredSpan, Trace,
};

use super::*;

/// Queries from Tempo's TraceQL documentation, each of which must parse.
const DOCUMENTED: &[&str] = &[
    r#"{ span.http.method = "GET" }"#,
    r#"{ resource.service.name = "frontend" && span.http.status_code = 500 }"#,
    "{ duration > 500ms }",
    "{ status = error }",
    "{ span.http.status_code >= 400 && span.http.status_code < 500 }",
    r#"{ .http.method = "DELETE" && status != ok }"#,
    r#"{ resource.cloud.region = "us-east-1" } && { resource.cloud.region = "us-west-1" }"#,
    r#"{ resource.service.name = "frontend" } > { resource.service.name = "shopping-cart" }"#,
    r#"{ resource.service.name = "frontend" } >> { status = error }"#,
    r#"{ span.db.statement =~ "INSERT.*" }"#,
    r#"{ name !~ "GET /health.*" }"#,
    r#"{ .http.url = "/checkout" } | count() > 2"#,
    r#"{ resource.service.name = "api" } | avg(duration) > 1s"#,
    "{ status = error } | select(span.http.status_code, .http.url)",
    r#"{ rootServiceName = "frontend" && traceDuration > 2s }"#,
    r#"{ trace:rootService = "frontend" && trace:duration > 2s && span:kind = client }"#,
    "{ kind = server && span:status = unset }",
    r#"{ span:id = "0000000000000001" || trace:id = "00000000000000000000000000000001" }"#,
    "{ .http.status_code != nil }",
    r#"{ span."attribute name with spaces" = "value" }"#,
    "{ true }",
    "{ }",
    r#"({ .a = "x" } && { .b = "y" }) || { .c = 1.5 }"#,
    "{ status = error && (span.http.status_code = 500 || span.http.status_code = 503) }",
    "{ !(.cache.hit = true) }",
    "{ statusMessage =~ `timed out.*` && rootName != \"GET /\" }",
    "{ duration >= 1.5ms && duration <= 2h } | max(duration) < 3h | min(.size) >= -3 | sum(.n) = 10",
];

#[test]
fn documented_examples_parse() {
    for q in DOCUMENTED {
        if let Err(e) = parse(q) {
            panic!("{q}: {e}");
        }
    }
}

#[test]
fn structure_and_precedence() {
    let q = parse(r#"{ .a = 1 || .b = 2 && .c = 3 } > { } >> { } && { } || { }"#).expect("parses");
    let Stage::Spansets(SpansetExpr::Or(left, _)) = &q.stages[0] else { panic!("|| binds loosest: {q:?}") };
    let SpansetExpr::And(structural, _) = &**left else { panic!("&& above structural: {left:?}") };
    let SpansetExpr::Descendant(child, _) = &**structural else { panic!(">> is left-associative") };
    let SpansetExpr::Child(filter, _) = &**child else { panic!("> first") };
    let SpansetExpr::Filter(Some(Expr::Or(_, and))) = &**filter else { panic!("|| inside: {filter:?}") };
    assert!(matches!(&**and, Expr::And(..)), "&& binds tighter than || in a filter");
    let q = parse("{ duration > 1.5ms }").expect("parses");
    let Stage::Spansets(SpansetExpr::Filter(Some(Expr::Cmp(_, CmpOp::Gt, v)))) = &q.stages[0] else {
        panic!()
    };
    assert!(matches!(**v, Expr::Static(Static::Duration(1_500_000))));
    let q = parse(r#"{ span."a b" = "c\"d" }"#).expect("parses");
    let Stage::Spansets(SpansetExpr::Filter(Some(Expr::Cmp(f, _, v)))) = &q.stages[0] else { panic!() };
    assert!(matches!(&**f, Expr::Field(Field::Attr(Scope::Span, k)) if k == "a b"));
    assert!(matches!(&**v, Expr::Static(Static::Str(s)) if s == "c\"d"));
}

#[test]
fn errors_name_the_column_and_what_is_unsupported() {
    let cases: &[(&str, usize, &str)] = &[
        ("{ .a + 1 = 2 }", 6, "arithmetic is not supported"),
        ("{ .a = 1 } | by(.b)", 14, "`by` is not supported"),
        ("{ .a = 1 } ~ { .b = 2 }", 12, "sibling"),
        ("{ .a = 1 } < { .b = 2 }", 12, "use `>` (child) or `>>`"),
        ("{ status = 500 }", 3, "`status` compares with error, ok or unset"),
        ("{ duration > 5 }", 3, "a duration such as 150ms"),
        ("{ .a = }", 8, "expected a field or a value, found `}`"),
        ("{ .a = \"x }", 8, "unterminated string"),
        ("{ foo = 1 }", 3, "unknown name `foo`"),
        ("{ .a =~ \"(\" }", 9, "invalid regular expression"),
        ("{ event.name = \"x\" }", 3, "the `event` scope is not supported"),
        ("{ .a = 1 } | count()", 21, "expected a comparison after the aggregate, found the end"),
        ("{ .a = 1 } | avg(name) > 1", 14, "not numeric"),
        ("{ .a = 1 }}", 11, "expected `|`"),
        ("{ duration > 5parsecs }", 14, "unknown duration unit `parsecs`"),
        ("{ .a = 1 ", 10, "expected `}`"),
        ("", 1, "expected a spanset filter"),
        ("{ \"x\" =~ \"y\" }", 3, "the left of `=~`"),
        ("{ } | avg(duration) > 1", 23, "a duration aggregate compares with a duration"),
        ("{ integrity = 3 }", 3, "`integrity` compares with a string"),
        ("{ integrity > \"broken\" }", 3, "`integrity` compares with = or != only"),
        ("{ trace:integrity = \"shaky\" }", 3, "`integrity`: "),
        ("{ } | count() > 1s", 17, "this aggregate is a number"),
        ("{ .é = \"ü\" } | foo()", 16, "found `foo`"),
    ];
    for (q, column, message) in cases {
        match parse(q) {
            Ok(parsed) => panic!("{q} parsed: {parsed:?}"),
            Err(e) => {
                assert!(e.message.contains(message), "{q}: {e}");
                assert_eq!(e.column, *column, "{q}: {e}");
            }
        }
    }
    let deep = format!("{}{{ }}{}", "(".repeat(100), ")".repeat(100));
    assert!(parse(&deep).is_err_and(|e| e.message.contains("nested deeper")));
    let chain = format!("{{ {}true }}", "true && ".repeat(600));
    assert!(
        parse(&chain).is_err_and(|e| e.message.contains("over 1024 tokens")),
        "a chain too long to evaluate"
    );
    let regexes = format!("{{ {}.a =~ \"x\" }}", ".a =~ \"x\" && ".repeat(16));
    assert!(parse(&regexes).is_err_and(|e| e.message.contains("over 16 regular expressions")));
    let huge = format!("{{ .a = \"{}\" }}", "x".repeat(parse::MAX_QUERY_BYTES));
    assert!(parse(&huge).is_err_and(|e| e.message.contains("bytes")));
}

fn span(
    id: u64,
    parent: Option<u64>,
    service: &str,
    name: &str,
    ms: u64,
    attrs: Vec<KeyValue>,
) -> StoredSpan {
    let trace_id = "0102030405060708090a0b0c0d0e0f10".parse().expect("id");
    let mut span =
        Span::new(trace_id, SpanId(id.to_be_bytes()), name, 1_000 + id, 1_000 + id + ms * 1_000_000);
    span.parent_span_id = parent.map(|p| SpanId(p.to_be_bytes()));
    span.attributes = attrs;
    let resource = Resource {
        attributes: vec![KeyValue::new("service.name", AnyValue::String(service.into()))],
        ..Default::default()
    };
    StoredSpan { resource: Arc::new(resource), scope: Arc::new(OtelScope::default()), span }
}

/// gateway (1) → users (2) → db (3, error), gateway (1) → notify (4, producer).
fn sample() -> Trace {
    let mut spans = vec![
        span(
            1,
            None,
            "gateway",
            "POST /reports",
            120,
            vec![KeyValue::new("http.status_code", AnyValue::Int(500))],
        ),
        span(2, Some(1), "users", "check", 30, vec![KeyValue::new("cache.hit", AnyValue::Bool(false))]),
        span(
            3,
            Some(2),
            "db",
            "SELECT",
            20,
            vec![KeyValue::new("db.statement", AnyValue::String("SELECT * FROM u".into()))],
        ),
        span(4, Some(1), "notify", "publish", 5, vec![KeyValue::new("size", AnyValue::Double(2.5))]),
    ];
    spans[0].span.kind = SpanKind::Server;
    spans[2].span.status.code = StatusCode::Error;
    spans[3].span.kind = SpanKind::Producer;
    Trace::from_spans(spans[0].span.trace_id, spans)
}

fn matched(q: &str) -> Option<Vec<u64>> {
    let trace = sample();
    let query = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    query
        .evaluate(&trace)
        .map(|m| m.spans.iter().map(|s| u64::from_be_bytes(s.span.span.span_id.0)).collect())
}

#[test]
fn evaluation_follows_tempos_semantics() {
    let cases: &[(&str, Option<&[u64]>)] = &[
        ("{ }", Some(&[1, 2, 3, 4])),
        ("{ status = error }", Some(&[3])),
        ("{ status != error }", Some(&[1, 2, 4])),
        (r#"{ resource.service.name = "users" }"#, Some(&[2])),
        (r#"{ .service.name = "users" }"#, Some(&[2])),
        (r#"{ span.service.name = "users" }"#, None),
        ("{ .http.status_code = 500 }", Some(&[1])),
        ("{ .http.status_code = 500.0 }", Some(&[1])),
        (r#"{ .http.status_code = "500" }"#, None),
        ("{ .http.status_code >= 400 && .http.status_code < 600 }", Some(&[1])),
        ("{ .http.status_code != 200 }", Some(&[1])),
        ("{ .http.status_code != nil }", Some(&[1])),
        ("{ .http.status_code = nil }", Some(&[2, 3, 4])),
        ("{ .cache.hit = false }", Some(&[2])),
        ("{ !.cache.hit && .cache.hit != nil }", Some(&[2])),
        ("{ .size > 2 && .size < 3 }", Some(&[4])),
        ("{ duration > 25ms }", Some(&[1, 2])),
        ("{ duration >= 20ms && duration <= 20ms }", Some(&[3])),
        ("{ kind = producer }", Some(&[4])),
        ("{ kind = client }", None),
        (r#"{ name =~ "SEL.*" }"#, Some(&[3])),
        (r#"{ name =~ "SEL" }"#, None),
        (r#"{ name !~ "SEL.*|check" }"#, Some(&[1, 4])),
        (r#"{ .db.statement =~ "(?i)select \\* from .*" }"#, Some(&[3])),
        (r#"{ rootName = "POST /reports" && rootServiceName = "gateway" && kind = server }"#, Some(&[1])),
        ("{ traceDuration > 100ms && status = error }", Some(&[3])),
        ("{ traceDuration > 1s }", None),
        (r#"{ span:id = "0000000000000002" }"#, Some(&[2])),
        (r#"{ trace:id = "0102030405060708090a0b0c0d0e0f10" && span:id = "0000000000000004" }"#, Some(&[4])),
        (r#"{ resource.service.name = "gateway" } > { resource.service.name = "users" }"#, Some(&[2])),
        (r#"{ resource.service.name = "gateway" } > { status = error }"#, None),
        (r#"{ resource.service.name = "gateway" } >> { status = error }"#, Some(&[3])),
        (r#"{ status = error } >> { }"#, None),
        (r#"{ kind = producer } && { status = error }"#, Some(&[3, 4])),
        (r#"{ kind = producer } && { kind = client }"#, None),
        (r#"{ kind = producer } || { kind = client }"#, Some(&[4])),
        ("{ } | count() = 4", Some(&[1, 2, 3, 4])),
        ("{ } | count() > 4", None),
        ("{ duration > 10ms } | avg(duration) > 50ms", Some(&[1, 2, 3])),
        ("{ duration > 10ms } | avg(duration) > 60ms", None),
        ("{ } | max(duration) = 120ms | min(duration) < 10ms | sum(.size) = 2.5", Some(&[1, 2, 3, 4])),
        ("{ } | avg(.nothing) > 0", None),
        ("{ duration > 10ms } | { status = error }", Some(&[3])),
        ("{ true }", Some(&[1, 2, 3, 4])),
        ("{ false }", None),
        // Without the trace's integrity (analysis off, not settled), never.
        (r#"{ integrity = "broken" }"#, None),
        (r#"{ integrity != "broken" }"#, None),
    ];
    for (q, want) in cases {
        assert_eq!(matched(q).as_deref(), *want, "{q}");
    }
}

#[test]
fn descendants_are_found_in_deep_chains_and_parent_cycles_end() {
    // A chain 1 → 2 → … → 200, and two spans that are each other's parent (malformed, but
    // a client can send it).
    let mut spans: Vec<StoredSpan> =
        (1..=200).map(|i| span(i, (i > 1).then(|| i - 1), "svc", &format!("s{i}"), 1, vec![])).collect();
    spans.push(span(301, Some(302), "svc", "loop-a", 1, vec![]));
    spans.push(span(302, Some(301), "svc", "loop-b", 1, vec![]));
    let trace = Trace::from_spans(spans[0].span.trace_id, spans);
    let ids = |q: &str| -> Vec<String> {
        let m = parse(q).expect("parses").evaluate(&trace);
        m.map(|m| m.spans.iter().map(|s| s.span.span.name.clone()).collect()).unwrap_or_default()
    };
    assert_eq!(ids(r#"{ name = "s198" } >> { }"#), vec!["s199", "s200"]);
    assert_eq!(ids(r#"{ name = "s1" } >> { name = "s200" }"#), vec!["s200"]);
    assert_eq!(ids(r#"{ name = "s1" } > { name = "s200" }"#), Vec::<String>::new());
    assert_eq!(ids(r#"{ name = "s1" } >> { }"#).len(), 199);
    // Through the cycle each is the other's ancestor, and its own: the walk ends.
    assert_eq!(ids(r#"{ name = "loop-a" } >> { }"#), vec!["loop-a", "loop-b"]);
    assert_eq!(ids(r#"{ name = "s5" } >> { name =~ "loop.*" }"#), Vec::<String>::new());
}

#[test]
fn results_carry_the_fields_the_query_names_and_selects() {
    let trace = sample();
    let q =
        parse(r#"{ status = error && .db.statement != nil } | select(resource.service.name, span.nothing)"#)
            .expect("parses");
    let fields = q.result_fields();
    assert_eq!(
        fields,
        vec![
            Field::Intrinsic(Intrinsic::Status),
            Field::Attr(Scope::Unscoped, "db.statement".into()),
            Field::Attr(Scope::Resource, "service.name".into()),
            Field::Attr(Scope::Span, "nothing".into()),
        ]
    );
    let m = q.evaluate(&trace).expect("matches");
    let attrs: Vec<_> = fields.iter().filter_map(|f| m.attribute(&m.spans[0], f)).collect();
    assert_eq!(
        serde_json::Value::Array(attrs),
        serde_json::json!([
            { "key": "status", "value": { "stringValue": "error" } },
            { "key": "db.statement", "value": { "stringValue": "SELECT * FROM u" } },
            { "key": "service.name", "value": { "stringValue": "db" } },
        ])
    );
}

#[test]
fn the_prefilter_keeps_only_what_every_match_needs() {
    let pre = |q: &str| {
        let mut t = strand_core::TraceQuery::default();
        parse(q).expect("parses").prefilter(&mut t);
        t
    };
    let t = pre(
        r#"{ resource.service.name = "api" && name = "GET" && kind = server && status = error && duration > 1s && duration <= 2s && span.http.status_code = 500 && .x = true && .y = 1.5 && traceDuration >= 3s }"#,
    );
    assert_eq!(t.service.as_deref(), Some("api"));
    assert_eq!(t.operation.as_deref(), Some("GET"));
    assert_eq!(t.kind, Some(SpanKind::Server));
    assert_eq!(t.status, Some(strand_core::StatusFilter::Error));
    assert_eq!(
        (t.min_span_duration_nano, t.max_span_duration_nano),
        (Some(1_000_000_001), Some(2_000_000_000))
    );
    assert_eq!(t.min_trace_duration_nano, Some(3_000_000_000));
    let attrs: Vec<_> = t.attributes.iter().map(|a| (a.scope, a.key.as_str(), a.value.as_str())).collect();
    assert_eq!(
        attrs,
        vec![
            (strand_core::AttrScope::Span, "http.status_code", "500"),
            (strand_core::AttrScope::Any, "x", "true")
        ]
    );
    // Nothing every match needs: an `||`, a negation, a regular expression.
    for q in [
        r#"{ .a = "x" || .b = "y" }"#,
        r#"{ .a = "x" } || { .b = "y" }"#,
        r#"{ !(.a = "x") }"#,
        r#"{ .a =~ "x" }"#,
    ] {
        assert_eq!(pre(q), strand_core::TraceQuery::default(), "{q}");
    }
    // Both sides of `&&`, `>` and `>>` are needed: the more selective one is used, the
    // leftmost on a tie.
    assert_eq!(pre(r#"{ } > { .a = "x" }"#).attributes.len(), 1);
    assert_eq!(pre(r#"{ status = error } && { .a = "x" }"#).status, Some(strand_core::StatusFilter::Error));
    let errors_below = pre(r#"{ resource.service.name = "gateway" } >> { status = error }"#);
    assert_eq!((errors_below.service, errors_below.status), (None, Some(strand_core::StatusFilter::Error)));
    let named = pre(r#"{ kind = server } >> ({ name = "a" } && { kind = client })"#);
    assert_eq!((named.operation.as_deref(), named.kind), (Some("a"), None));
    assert_eq!(pre(r#"{ name = "a" } > { name = "b" }"#).operation.as_deref(), Some("a"));
    assert_eq!(pre(r#"{ name = "a" } || { status = error }"#), strand_core::TraceQuery::default());
    assert_eq!(pre(r#"{ 500 = .code }"#).attributes[0].value, "500");
    assert_eq!(pre("{ 1s < duration }").min_span_duration_nano, Some(1_000_000_001));
}
