//! Canonical query text: `Display` gives Prometheus's one-line form (its `String()`), and
//! [`prettify`] the indented form `/api/v1/format_query` returns (its `Pretty()`), which
//! splits any node whose one-line form is longer than 100 characters.

use std::fmt::{self, Write};

use promflow_plan::format::format_value;
use promflow_storage::gofmt::format_g;
use promflow_storage::Matcher;

use super::ast::*;
use super::literals::{format_duration, quote};

/// The line length above which [`prettify`] splits a node.
pub const MAX_LINE: usize = 100;

/// Whether Prometheus prints a label name bare (`[a-zA-Z_][a-zA-Z0-9_]*`).
fn is_plain_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
}

fn label(s: &str) -> String {
    if is_plain_label(s) {
        s.to_string()
    } else {
        quote(s)
    }
}

fn labels(list: &[String]) -> String {
    list.iter().map(|l| label(l)).collect::<Vec<_>>().join(", ")
}

fn matcher(m: &Matcher) -> String {
    format!("{}{}{}", label(&m.name), m.op, quote(&m.value))
}

fn duration(d: &Duration) -> String {
    match d {
        Duration::Fixed(ns) => format_duration(*ns),
        Duration::Expr(e) => e.to_string(),
    }
}

/// ` @ …` and ` offset …`, as they follow a selector or subquery.
fn at_and_offset(at: &Option<At>, offset: &Duration) -> (String, String) {
    let at = match at {
        None => String::new(),
        Some(At::Timestamp(ms)) => format!(" @ {:.3}", *ms as f64 / 1000.0),
        Some(At::Start) => " @ start()".into(),
        Some(At::End) => " @ end()".into(),
    };
    let offset = match offset {
        Duration::Fixed(0) => String::new(),
        d => format!(" offset {}", duration(d)),
    };
    (at, offset)
}

fn extended(vs: &VectorSelector) -> &'static str {
    if vs.anchored {
        " anchored"
    } else if vs.smoothed {
        " smoothed"
    } else {
        ""
    }
}

/// The selector without its modifiers.
fn selector_body(vs: &VectorSelector) -> String {
    let mut out = vs.name.clone().unwrap_or_default();
    let mut ms: Vec<String> = vs.matchers.iter().map(matcher).collect();
    if !ms.is_empty() {
        ms.sort();
        out.push('{');
        out.push_str(&ms.join(","));
        out.push('}');
    }
    out
}

fn subquery_suffix(s: &SubqueryExpr) -> String {
    let (at, offset) = at_and_offset(&s.at, &s.offset);
    let step = s.step.as_ref().map(duration).unwrap_or_default();
    format!("[{}:{step}]{at}{offset}", duration(&s.range))
}

/// `sum by (job) ` — an aggregation's operator and grouping, before the parenthesis.
fn aggregate_prefix(a: &AggregateExpr) -> String {
    if a.without {
        format!("{} without ({}) ", a.op.as_str(), labels(&a.grouping))
    } else if !a.grouping.is_empty() {
        format!("{} by ({}) ", a.op.as_str(), labels(&a.grouping))
    } else {
        a.op.as_str().to_string()
    }
}

/// `bool on (…) group_left (…) fill (…)` after a binary operator.
fn binary_modifiers(b: &BinaryExpr) -> String {
    let mut out = String::new();
    if b.return_bool {
        out.push_str(" bool");
    }
    let Some(vm) = &b.matching else { return out };
    let grouped = matches!(vm.card, Cardinality::ManyToOne | Cardinality::OneToMany);
    if !vm.labels.is_empty() || vm.on || grouped {
        let tag = if vm.on { "on" } else { "ignoring" };
        let _ = write!(out, " {tag} ({})", labels(&vm.labels));
    }
    if grouped {
        let side = if vm.card == Cardinality::ManyToOne { "left" } else { "right" };
        let _ = write!(out, " group_{side} ({})", labels(&vm.include));
    }
    // Go's %v of the fill values
    match (vm.fill_lhs, vm.fill_rhs) {
        (Some(l), Some(r)) if l == r => {
            let _ = write!(out, " fill ({})", format_g(l, None));
        }
        (l, r) => {
            if let Some(l) = l {
                let _ = write!(out, " fill_left ({})", format_g(l, None));
            }
            if let Some(r) = r {
                let _ = write!(out, " fill_right ({})", format_g(r, None));
            }
        }
    }
    out
}

impl fmt::Display for NumberLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.duration {
            return f.write_str(&format_value(self.val));
        }
        if self.val < 0.0 {
            write!(f, "-{}", format_duration((-self.val * 1e9) as i64))
        } else {
            f.write_str(&format_duration((self.val * 1e9) as i64))
        }
    }
}

impl fmt::Display for DurationExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationExpr::Number(n) => write!(f, "{n}"),
            DurationExpr::Step(_) => f.write_str("step()"),
            DurationExpr::Range(_) => f.write_str("range()"),
            DurationExpr::MinMax { max, lhs, rhs, .. } => {
                write!(f, "{}({lhs}, {rhs})", if *max { "max_of" } else { "min_of" })
            }
            DurationExpr::Neg(e, _) => write!(f, "-{e}"),
            DurationExpr::Binary(op, l, r) => write!(f, "{l} {} {r}", op.as_str()),
            DurationExpr::Paren(e, _) => write!(f, "({e})"),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(n) => write!(f, "{n}"),
            Expr::String(s, _) => f.write_str(&quote(s)),
            Expr::Selector(vs) => {
                let (at, offset) = at_and_offset(&vs.at, &vs.offset);
                write!(f, "{}{at}{}{offset}", selector_body(vs), extended(vs))
            }
            Expr::Matrix(m) => {
                let (at, offset) = at_and_offset(&m.vs.at, &m.vs.offset);
                write!(f, "{}[{}]{}{at}{offset}", selector_body(&m.vs), duration(&m.range), extended(&m.vs))
            }
            Expr::Subquery(s) => write!(f, "{}{}", s.expr, subquery_suffix(s)),
            Expr::Paren(e, _) => write!(f, "({e})"),
            Expr::Unary { neg, expr, .. } => write!(f, "{}{expr}", if *neg { "-" } else { "+" }),
            Expr::Binary(b) => write!(f, "{} {}{} {}", b.lhs, b.op.as_str(), binary_modifiers(b), b.rhs),
            Expr::Aggregate(a) => {
                write!(f, "{}(", aggregate_prefix(a))?;
                if let Some(p) = &a.param {
                    write!(f, "{p}, ")?;
                }
                write!(f, "{})", a.expr)
            }
            Expr::Call(c) => {
                let args: Vec<String> = c.args.iter().map(|a| a.to_string()).collect();
                write!(f, "{}({})", c.func.name, args.join(", "))
            }
        }
    }
}

/// The prettified text of `e`, as Prometheus's `format_query` gives it.
pub fn prettify(e: &Expr) -> String {
    pretty(e, 0, MAX_LINE)
}

/// Prettifies `e` at indentation `level`, splitting nodes longer than `max` characters.
pub fn pretty(e: &Expr, level: usize, max: usize) -> String {
    let one_line = e.to_string();
    let indent = "  ".repeat(level);
    let split = one_line.len() > max;
    match e {
        Expr::Aggregate(a) if split => {
            let mut out = format!("{indent}{}(\n", aggregate_prefix(a));
            if let Some(p) = &a.param {
                out.push_str(&pretty(p, level + 1, max));
                out.push_str(",\n");
            }
            format!("{out}{}\n{indent})", pretty(&a.expr, level + 1, max))
        }
        Expr::Binary(b) if split => format!(
            "{}\n{indent}{}{}\n{}",
            pretty(&b.lhs, level + 1, max),
            b.op.as_str(),
            binary_modifiers(b),
            pretty(&b.rhs, level + 1, max)
        ),
        Expr::Call(c) if split => {
            let args: Vec<String> = c.args.iter().map(|a| pretty(a, level + 1, max)).collect();
            format!("{indent}{}(\n{}\n{indent})", c.func.name, args.join(",\n"))
        }
        Expr::Paren(inner, _) if split => format!("{indent}(\n{}\n{indent})", pretty(inner, level + 1, max)),
        // Prometheus does not indent a subquery that fits on a line
        Expr::Subquery(_) if !split => one_line,
        Expr::Subquery(s) => format!("{}{}", pretty(&s.expr, level, max), subquery_suffix(s)),
        Expr::Unary { neg, expr, .. } => {
            format!("{indent}{}{}", if *neg { "-" } else { "+" }, pretty(expr, level, max).trim())
        }
        _ => format!("{indent}{one_line}"),
    }
}
