//! Parser tests: canonical printing, Prometheus's error messages, precedence.

use super::printer::pretty;
use super::*;

fn canonical(q: &str) -> String {
    match parse(q) {
        Ok(e) => e.to_string(),
        Err(e) => panic!("{q}: {}", e.render(q)),
    }
}

fn error(q: &str) -> String {
    match parse(q) {
        Ok(e) => panic!("{q}: parsed as {e}"),
        Err(e) => e.render(q),
    }
}

/// The tree's binary and unary structure, fully parenthesised.
fn shape(e: &Expr) -> String {
    match e {
        Expr::Binary(b) => format!("({} {} {})", shape(&b.lhs), b.op.as_str(), shape(&b.rhs)),
        Expr::Unary { neg, expr, .. } => format!("({}{})", if *neg { "-" } else { "+" }, shape(expr)),
        Expr::Paren(inner, _) => shape(inner),
        other => other.to_string(),
    }
}

#[test]
fn prints_canonical_form() {
    let cases = [
        // literals
        ("+5", "5"),
        ("- -5", "5"),
        ("0x1F", "31"),
        ("010", "8"),
        ("1e3", "1000"),
        (".5", "0.5"),
        ("inF", "+Inf"),
        ("-Inf", "-Inf"),
        ("nan", "NaN"),
        ("90s", "1m30s"),
        ("-5m", "-5m"),
        ("'single'", "\"single\""),
        (r#""tab\there""#, r#""tab\there""#),
        (r"`raw\d`", r#""raw\\d""#),
        // selectors
        ("foo", "foo"),
        (r#"foo{z="1", a=~"b.*",}"#, r#"foo{a=~"b.*",z="1"}"#),
        (r#"{"foo.bar"}"#, r#"{__name__="foo.bar"}"#),
        (r#"{"a b"="c", __name__!="x"}"#, r#"{"a b"="c",__name__!="x"}"#),
        ("foo offset 5m", "foo offset 5m"),
        ("foo offset -90s", "foo offset -1m30s"),
        ("foo offset 1m @ 5", "foo @ 5.000 offset 1m"),
        ("foo @ start()", "foo @ start()"),
        ("foo[5m] @ end() offset 1m", "foo[5m] @ end() offset 1m"),
        ("foo[1800]", "foo[30m]"),
        ("foo[5m:]", "foo[5m:]"),
        ("rate(foo[5m])[30m:1m] offset 10m", "rate(foo[5m])[30m:1m] offset 10m"),
        // keywords used as names
        ("sum", "sum"),
        ("offset offset 5m", "offset offset 5m"),
        ("fill + fill", "fill + fill"),
        ("step + range", "step + range"),
        ("sum by (by, offset, \"a.b\") (foo)", "sum by (by, offset, \"a.b\") (foo)"),
        // duration expressions
        ("foo[26m+4m]", "foo[26m + 4m]"),
        ("foo[60*30]", "foo[60 * 30]"),
        ("foo[(5m)]", "foo[(5m)]"),
        ("foo[((1+2))]", "foo[(1 + 2)]"),
        ("foo[-5m+35m]", "foo[-5m + 35m]"),
        ("foo[-(1m)*-2]", "foo[-(1m) * -2]"),
        ("foo[STep()]", "foo[step()]"),
        ("foo[min_of(step(),1m)]", "foo[min_of(step(), 1m)]"),
        ("foo[29s+1s:5s+5s]", "foo[29s + 1s:5s + 5s]"),
        ("foo offset -step()", "foo offset -step()"),
        ("foo offset (1m + 2)", "foo offset (1m + 2)"),
        ("foo offset 5m + 2", "foo offset 5m + 2"),
        ("foo offset -(min_of(step(), 1s))+8000", "foo offset -(min_of(step(), 1s)) + 8000"),
        // anchored and smoothed
        ("increase(foo[1m] anchored)", "increase(foo[1m] anchored)"),
        ("rate(foo[1m] smoothed offset 1m)", "rate(foo[1m] smoothed offset 1m)"),
        // operators and modifiers
        ("-foo", "-foo"),
        ("+foo", "+foo"),
        ("a>bool b", "a > bool b"),
        ("a + on(b) group_left(c) d", "a + on (b) group_left (c) d"),
        ("a * ignoring(b) group_right d", "a * ignoring (b) group_right () d"),
        ("a and on() b", "a and on () b"),
        ("a + ignoring() b", "a + b"),
        ("a + fill(0) b", "a + fill (0) b"),
        ("a + fill_left(1) fill_right(-2) b", "a + fill_left (1) fill_right (-2) b"),
        ("a + fill_right(3) fill_left(3) b", "a + fill (3) b"),
        ("a atan2 b", "a atan2 b"),
        ("a </ 5", "a </ 5"),
        // aggregations and calls
        ("sum(rate(foo[5m])) by (job)", "sum by (job) (rate(foo[5m]))"),
        ("sum by () (foo)", "sum(foo)"),
        ("sum without () (foo)", "sum without () (foo)"),
        ("topk(5, foo)", "topk(5, foo)"),
        ("count_values('v', foo)", "count_values(\"v\", foo)"),
        ("limit_ratio(0.5, foo)", "limit_ratio(0.5, foo)"),
        (r#"info(foo, {data=~".+"})"#, r#"info(foo, {data=~".+"})"#),
        ("label_join(foo, 'a', ',', 'b', 'c')", r#"label_join(foo, "a", ",", "b", "c")"#),
        ("time()", "time()"),
        // comments and line breaks
        ("foo # the metric\n  + bar # and another", "foo + bar"),
    ];
    for (q, want) in cases {
        assert_eq!(canonical(q), want, "{q}");
        // the canonical form parses to itself
        assert_eq!(canonical(want), want, "{want}");
    }
}

#[test]
fn precedence_and_associativity() {
    let cases = [
        ("a - b - c", "((a - b) - c)"),
        ("a ^ b ^ c", "(a ^ (b ^ c))"),
        ("a + b * c", "(a + (b * c))"),
        ("a * b + c", "((a * b) + c)"),
        ("a or b and c unless d", "(a or ((b and c) unless d))"),
        ("a == b + c", "(a == (b + c))"),
        ("a atan2 b * c", "((a atan2 b) * c)"),
        ("-a ^ b", "(-(a ^ b))"),
        ("-a * b", "((-a) * b)"),
        ("-1 ^ 2", "(-(1 ^ 2))"),
        ("2 ^ -1", "(2 ^ -1)"),
        ("a + b offset 5m", "(a + b offset 5m)"),
        ("-foo offset 5m", "(-foo offset 5m)"),
        // a literal or a signed form ends an offset's duration; arithmetic follows the selector
        ("foo offset 100 + 2", "(foo offset 1m40s + 2)"),
        ("foo offset -2 ^ 2", "(foo offset -2s ^ 2)"),
        ("foo offset step() * 0", "(foo offset step() * 0)"),
        ("foo offset -step() * 2", "(foo offset -step() * 2)"),
        ("foo offset min_of(step(), 1s) + 8000", "(foo offset min_of(step(), 1s) + 8000)"),
        // an unsigned parenthesis may continue
        ("foo offset (2 ^ 2)", "foo offset (2 ^ 2)"),
        ("foo offset (-2 * 2)", "foo offset (-2 * 2)"),
    ];
    for (q, want) in cases {
        let e = parse(q).unwrap_or_else(|e| panic!("{q}: {}", e.render(q)));
        assert_eq!(shape(&e), want, "{q}");
    }
}

#[test]
fn duration_arithmetic_precedence() {
    let Expr::Matrix(m) = parse("foo[-2^2 + 1m*2]").unwrap() else { panic!("not a matrix selector") };
    let Duration::Expr(DurationExpr::Binary(BinaryOp::Add, lhs, rhs)) = &m.range else {
        panic!("{:?}", m.range)
    };
    assert!(
        matches!(&**lhs, DurationExpr::Neg(inner, _) if matches!(**inner, DurationExpr::Binary(BinaryOp::Pow, ..)))
    );
    assert!(matches!(&**rhs, DurationExpr::Binary(BinaryOp::Mul, ..)));
}

#[test]
fn reports_prometheus_errors() {
    let cases = [
        ("", "unknown position: parse error: no expression found in input"),
        ("  # nothing", "1:1: parse error: no expression found in input"),
        ("sum(", "1:5: parse error: unclosed left parenthesis"),
        ("foo{", "1:5: parse error: unexpected end of input inside braces"),
        ("foo )", "1:6: parse error: unexpected right parenthesis ')'"),
        ("foo +", "1:6: parse error: unexpected end of input"),
        ("foo bar", "1:5: parse error: unexpected identifier \"bar\""),
        ("foo by", "1:5: parse error: unexpected <by>"),
        ("5mm", "1:1: parse error: bad number or duration syntax: \"5mm\""),
        ("5m1h", "1:1: parse error: not a valid duration string: \"5m1h\""),
        (r#""\c""#, "1:1: parse error: unknown escape sequence U+0063 'c'"),
        ("'open", "1:1: parse error: unterminated quoted string"),
        // type checking
        ("rate(foo)", "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector"),
        ("floor(foo[5m])", "1:7: parse error: expected type instant vector in call to function \"floor\", got range vector"),
        ("foo[5m] + 1", "1:1: parse error: binary expression must contain only scalar and instant vector types"),
        ("foo +\n  bar[5m]", "2:3: parse error: binary expression must contain only scalar and instant vector types"),
        ("1 + on(a) foo", "1:1: parse error: vector matching only allowed between instant vectors"),
        ("1 + fill(0) foo", "1:1: parse error: filling in missing series only allowed between instant vectors"),
        ("1 and 2", "1:1: parse error: set operator \"and\" not allowed in binary scalar expression"),
        ("foo or 1", "1:1: parse error: set operator \"or\" not allowed in binary scalar expression"),
        ("1 == 1", "1:3: parse error: comparisons between scalars must use BOOL modifier"),
        ("foo + bool bar", "1:5: parse error: bool modifier can only be used on comparison operators"),
        ("foo and on(a) group_left bar", "1:1: parse error: no grouping allowed for \"and\" operation"),
        ("foo and fill(1) bar", "1:1: parse error: filling in missing series not allowed for set operators"),
        (
            "foo * on(a) group_left(a) bar",
            "1:5: parse error: label \"a\" must not occur in ON and GROUP clause at once",
        ),
        ("topk(foo, bar)", "1:6: parse error: expected type scalar in aggregation parameter, got instant vector"),
        ("count_values(5, bar)", "1:14: parse error: expected type string in aggregation parameter, got scalar"),
        ("sum(1)", "1:5: parse error: expected type instant vector in aggregation expression, got scalar"),
        (
            "-\"foo\"",
            "1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, got \"string\"",
        ),
        ("1[5m:]", "1:1: parse error: subquery is only allowed on instant vector, got scalar instead"),
        ("foo[5m][5m:]", "1:1: parse error: subquery is only allowed on instant vector, got matrix instead"),
        ("floor()", "1:1: parse error: expected 1 argument(s) in call to \"floor\", got 0"),
        ("hour(a, b)", "1:1: parse error: expected at most 1 argument(s) in call to \"hour\", got 2"),
        ("label_join(a, 'b')", "1:1: parse error: expected at least 3 argument(s) in call to \"label_join\", got 2"),
        ("info(foo, bar)", "1:11: parse error: expected label selectors only, got vector selector instead"),
        ("info(foo, 1)", "1:1: parse error: expected type instant vector in call to function \"info\", got scalar"),
        // selectors
        ("{}", "1:1: parse error: vector selector must contain at least one non-empty matcher"),
        (r#"{a=~".*", b!="c"}"#, "1:1: parse error: vector selector must contain at least one non-empty matcher"),
        (r#"foo{__name__="bar"}"#, "1:1: parse error: metric name must not be set twice: \"foo\" or \"bar\""),
        ("foo{a}", "1:6: parse error: unexpected \"}\" in label matching, expected label matching operator"),
        ("foo{a=}", "1:7: parse error: unexpected \"}\" in label matching, expected string"),
        ("foo{,}", "1:5: parse error: unexpected \",\" in label matching, expected identifier or \"}\""),
        (r#"foo{a="b" c="d"}"#, "1:11: parse error: unexpected identifier \"c\" in label matching, expected \",\" or \"}\""),
        ("foo{a!b}", "1:6: parse error: unexpected character after '!' inside braces: 'b'"),
        // modifiers
        ("foo offset 5m offset 1m", "1:1: parse error: offset may not be set multiple times"),
        (
            "(foo) offset 5m",
            "1:1: parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery",
        ),
        ("foo @ 1 @ 2", "1:1: parse error: @ <timestamp> may not be set multiple times"),
        ("foo @ Inf", "1:1: parse error: timestamp out of bounds for @ modifier: +Inf"),
        ("foo offset", "1:11: parse error: unexpected end of input in offset, expected number, duration, step(), or range()"),
        ("foo @", "1:6: parse error: unexpected end of input in @, expected timestamp"),
        ("foo offset 5m[5m]", "1:14: parse error: no offset modifiers allowed before range"),
        ("foo @ 5[5m]", "1:8: parse error: no @ modifiers allowed before range"),
        ("1[5m]", "1:2: parse error: ranges only allowed for vector selectors"),
        ("foo offset 9.5e10", "1:12: parse error: duration out of range"),
        ("foo anchored smoothed", "1:1: parse error: anchored and smoothed modifiers cannot be used together"),
        ("foo[5m:] anchored", "1:1: parse error: anchored modifier is not supported for subqueries"),
        ("1 smoothed", "1:1: parse error: smoothed modifier not implemented"),
        // ranges and duration expressions
        ("foo[0]", "1:5: parse error: duration must be greater than 0"),
        ("foo[-5m]", "1:5: parse error: duration must be greater than 0"),
        ("foo[5m/0]", "1:7: parse error: division by zero"),
        ("foo[5m%0s]", "1:7: parse error: modulo by zero"),
        ("foo[]", "1:5: parse error: unexpected \"]\" in subquery or range selector, expected number, duration, step(), or range()"),
        ("foo[step]", "1:9: parse error: unexpected \"]\" in subquery or range selector, expected number, duration, step(), or range()"),
        ("foo[5m x]", "1:8: parse error: unexpected character: 'x', expected ':'"),
        ("foo[5m \"x\"]", "1:8: parse error: unexpected string \"\\\"x\\\"\" in subquery or range, expected \":\" or \"]\""),
        ("foo[5m:1m:1m]", "1:10: parse error: unexpected colon ':'"),
        ("foo[5m:1m 1m]", "1:11: parse error: unexpected duration \"1m\" in subquery selector, expected \"]\""),
        ("foo[\"5m\"]", "1:5: parse error: unexpected character in duration expression: '\"'"),
        // grouping, aggregation and calls
        ("sum by foo (bar)", "1:8: parse error: unexpected identifier \"foo\" in grouping opts, expected \"(\""),
        ("sum by (a b) (c)", "1:11: parse error: unexpected identifier \"b\" in grouping opts, expected \",\" or \")\""),
        ("sum by (,) (c)", "1:9: parse error: unexpected \",\" in grouping opts, expected label"),
        ("sum by (\"\") (c)", "1:9: parse error: invalid label name for grouping: \"\""),
        ("sum(foo bar)", "1:9: parse error: unexpected identifier \"bar\" in aggregation"),
        ("rate(foo bar)", "1:10: parse error: unexpected identifier \"bar\""),
        ("sum()", "1:1: parse error: no arguments for aggregate expression provided"),
        ("topk(foo)", "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 2, got 1"),
        ("nonexistent(foo)", "1:1: parse error: unknown function with name \"nonexistent\""),
        ("STep()", "1:1: parse error: unknown function with name \"STep\""),
        ("rate(foo[5m],)", "1:13: parse error: trailing commas not allowed in function call args"),
        ("a * group_left b", "1:5: parse error: unexpected <group_left>"),
    ];
    for (q, want) in cases {
        assert_eq!(error(q), want, "{q}");
    }
}

#[test]
fn prettifies_long_expressions() {
    let q = "sum by (job) (rate(foo[5m])) / on (job) group_left (team) max by (job, team) (team_info)";
    let e = parse(q).unwrap();
    assert_eq!(pretty(&e, 0, 100), q, "short enough for one line");
    assert_eq!(
        pretty(&e, 0, 25),
        "  sum by (job) (\n    rate(foo[5m])\n  )\n/ on (job) group_left (team)\n  max by (job, team) (\n    team_info\n  )"
    );
    let e = parse("-topk(3, foo{a=\"b\"})").unwrap();
    assert_eq!(pretty(&e, 0, 10), "-topk(\n  3,\n  foo{a=\"b\"}\n)");
    // a subquery that fits is not indented, as in Prometheus
    let e = parse("max_over_time(rate(foo[5m])[10m:1m])").unwrap();
    assert_eq!(pretty(&e, 0, 22), "max_over_time(\nrate(foo[5m])[10m:1m]\n)");
    let e = parse("(foo + bar)").unwrap();
    assert_eq!(pretty(&e, 0, 5), "(\n    foo\n  +\n    bar\n)");
}

#[test]
fn limits_nesting() {
    // deep trees would exhaust the stack of everything that walks them
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let ok = format!("{}1{}", "(".repeat(100), ")".repeat(100));
            assert!(parse(&ok).is_ok());
            let deep = format!("{}1{}", "(".repeat(600), ")".repeat(600));
            assert!(parse(&deep).unwrap_err().msg.starts_with("query is nested too deeply"));
            let chain = vec!["up"; 2000].join(" or ");
            assert!(parse(&chain).unwrap_err().msg.starts_with("query is nested too deeply"));
            let durations = format!("foo[{}]", vec!["1s"; 2000].join("+"));
            assert!(parse(&durations).unwrap_err().msg.starts_with("query is nested too deeply"));
        })
        .unwrap()
        .join()
        .unwrap();
}
