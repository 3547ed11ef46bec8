//! The PromQL front end: parses PromQL text with `promql-parser` and lowers the syntax tree
//! to the engine's plan IR. It evaluates nothing itself.
#![warn(missing_docs)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promflow_engine::plan::{
    AggOp, BinOp, Cardinality, DateFn, Edges, Grouping, JoinKey, MapFn, Origin, Plan, Relabel, TimeAnchor,
    TimeShift, TrigFn, ValueKind, VectorFn, WindowFn,
};
use promflow_storage::{MatchOp, Matcher, METRIC_NAME};

pub mod parser;
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{self as p, Expr};

/// Errors of the PromQL front end.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not valid PromQL (Prometheus answers `bad_data`).
    #[error("{0}")]
    Parse(String),
    /// Valid PromQL that promflow does not evaluate yet.
    #[error("{0}")]
    Unsupported(String),
}

/// Settings the lowering needs.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Step of a subquery that gives none (Prometheus uses the global evaluation interval).
    pub default_subquery_step: Duration,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { default_subquery_step: Duration::from_secs(60) }
    }
}

/// Parses `query`, turning the parser's message into Prometheus's `parse error: …` form.
pub fn parse(query: &str) -> Result<Expr, Error> {
    p::parse(query).map_err(|e| Error::Parse(parse_error_message(query, &e)))
}

fn parse_error_message(query: &str, e: &str) -> String {
    let e = e.trim();
    // promql-parser reports some errors without a position; Prometheus always gives one.
    if e.contains("parse error") {
        e.to_string()
    } else {
        let end = query.chars().count();
        format!("1:{}: parse error: {e}", end.max(1))
    }
}

/// Parses and lowers `query` to a plan.
pub fn compile(query: &str, opts: &CompileOptions) -> Result<Plan, Error> {
    let expr = parse(query)?;
    lower(&expr, opts)
}

/// Pretty-prints `query` in Prometheus's canonical form (`/api/v1/format_query`).
pub fn format_query(query: &str) -> Result<String, Error> {
    Ok(parse(query)?.prettify())
}

/// Lowers a parsed expression to the plan IR.
pub fn lower(expr: &Expr, opts: &CompileOptions) -> Result<Plan, Error> {
    Lowering { opts }.lower(expr)
}

struct Lowering<'a> {
    opts: &'a CompileOptions,
}

fn millis(d: &Duration) -> i64 {
    d.as_millis() as i64
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

fn shift_of(offset: &Option<p::Offset>, at: &Option<p::AtModifier>) -> TimeShift {
    let offset_ms = match offset {
        Some(p::Offset::Pos(d)) => millis(d),
        Some(p::Offset::Neg(d)) => -millis(d),
        None => 0,
    };
    let at = match at {
        None => TimeAnchor::Step,
        Some(p::AtModifier::Start) => TimeAnchor::Start,
        Some(p::AtModifier::End) => TimeAnchor::End,
        Some(p::AtModifier::At(t)) => TimeAnchor::Fixed(system_time_ms(t)),
    };
    TimeShift { offset_ms, at }
}

fn matchers_of(vs: &p::VectorSelector) -> Result<Vec<Matcher>, Error> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(Error::Unsupported("`or` inside a selector's braces is not PromQL".into()));
    }
    let mut out = Vec::with_capacity(vs.matchers.matchers.len() + 1);
    if let Some(name) = &vs.name {
        out.push(
            Matcher::new(MatchOp::Equal, METRIC_NAME, name.as_str())
                .map_err(|e| Error::Parse(e.to_string()))?,
        );
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::Regex,
            PMatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(
            Matcher::new(op, m.name.as_str(), m.value.as_str()).map_err(|e| Error::Parse(e.to_string()))?,
        );
    }
    Ok(out)
}

fn label_list(l: &promql_parser::label::Labels) -> Vec<String> {
    l.labels.iter().map(|s| s.to_string()).collect()
}

fn bin_op(op: &str) -> Option<BinOp> {
    Some(match op {
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        "%" => BinOp::Mod,
        "^" => BinOp::Pow,
        "atan2" => BinOp::Atan2,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        ">" => BinOp::Gt,
        "<" => BinOp::Lt,
        ">=" => BinOp::Ge,
        "<=" => BinOp::Le,
        "and" => BinOp::And,
        "or" => BinOp::Or,
        "unless" => BinOp::Unless,
        _ => return None,
    })
}

fn agg_op(op: &str) -> Option<AggOp> {
    Some(match op {
        "sum" => AggOp::Sum,
        "avg" => AggOp::Avg,
        "min" => AggOp::Min,
        "max" => AggOp::Max,
        "count" => AggOp::Count,
        "group" => AggOp::Group,
        "stddev" => AggOp::Stddev,
        "stdvar" => AggOp::Stdvar,
        "topk" => AggOp::Topk,
        "bottomk" => AggOp::Bottomk,
        "quantile" => AggOp::Quantile,
        "count_values" => AggOp::CountValues,
        "limitk" => AggOp::Limitk,
        "limit_ratio" => AggOp::LimitRatio,
        _ => return None,
    })
}

fn window_fn(name: &str) -> Option<WindowFn> {
    Some(match name {
        "rate" => WindowFn::Rate,
        "increase" => WindowFn::Increase,
        "delta" => WindowFn::Delta,
        "irate" => WindowFn::Irate,
        "idelta" => WindowFn::Idelta,
        "deriv" => WindowFn::Deriv,
        "predict_linear" => WindowFn::PredictLinear,
        "changes" => WindowFn::Changes,
        "resets" => WindowFn::Resets,
        "avg_over_time" => WindowFn::AvgOverTime,
        "min_over_time" => WindowFn::MinOverTime,
        "max_over_time" => WindowFn::MaxOverTime,
        "sum_over_time" => WindowFn::SumOverTime,
        "count_over_time" => WindowFn::CountOverTime,
        "last_over_time" => WindowFn::LastOverTime,
        "first_over_time" => WindowFn::FirstOverTime,
        "present_over_time" => WindowFn::PresentOverTime,
        "stddev_over_time" => WindowFn::StddevOverTime,
        "stdvar_over_time" => WindowFn::StdvarOverTime,
        "quantile_over_time" => WindowFn::QuantileOverTime,
        "absent_over_time" => WindowFn::AbsentOverTime,
        "mad_over_time" => WindowFn::MadOverTime,
        "ts_of_min_over_time" => WindowFn::TsOfMinOverTime,
        "ts_of_max_over_time" => WindowFn::TsOfMaxOverTime,
        "ts_of_last_over_time" => WindowFn::TsOfLastOverTime,
        "ts_of_first_over_time" => WindowFn::TsOfFirstOverTime,
        "double_exponential_smoothing" => WindowFn::DoubleExponentialSmoothing,
        _ => return None,
    })
}

fn map_fn(name: &str) -> Option<MapFn> {
    Some(match name {
        "abs" => MapFn::Abs,
        "ceil" => MapFn::Ceil,
        "floor" => MapFn::Floor,
        "exp" => MapFn::Exp,
        "sqrt" => MapFn::Sqrt,
        "ln" => MapFn::Ln,
        "log2" => MapFn::Log2,
        "log10" => MapFn::Log10,
        "sgn" => MapFn::Sgn,
        "round" => MapFn::Round,
        "clamp" => MapFn::Clamp,
        "clamp_min" => MapFn::ClampMin,
        "clamp_max" => MapFn::ClampMax,
        "timestamp" => MapFn::Timestamp,
        "acos" => MapFn::Trig(TrigFn::Acos),
        "acosh" => MapFn::Trig(TrigFn::Acosh),
        "asin" => MapFn::Trig(TrigFn::Asin),
        "asinh" => MapFn::Trig(TrigFn::Asinh),
        "atan" => MapFn::Trig(TrigFn::Atan),
        "atanh" => MapFn::Trig(TrigFn::Atanh),
        "cos" => MapFn::Trig(TrigFn::Cos),
        "cosh" => MapFn::Trig(TrigFn::Cosh),
        "sin" => MapFn::Trig(TrigFn::Sin),
        "sinh" => MapFn::Trig(TrigFn::Sinh),
        "tan" => MapFn::Trig(TrigFn::Tan),
        "tanh" => MapFn::Trig(TrigFn::Tanh),
        "deg" => MapFn::Trig(TrigFn::Deg),
        "rad" => MapFn::Trig(TrigFn::Rad),
        "day_of_month" => MapFn::Date(DateFn::DayOfMonth),
        "day_of_week" => MapFn::Date(DateFn::DayOfWeek),
        "day_of_year" => MapFn::Date(DateFn::DayOfYear),
        "days_in_month" => MapFn::Date(DateFn::DaysInMonth),
        "hour" => MapFn::Date(DateFn::Hour),
        "minute" => MapFn::Date(DateFn::Minute),
        "month" => MapFn::Date(DateFn::Month),
        "year" => MapFn::Date(DateFn::Year),
        _ => return None,
    })
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        other => other,
    }
}

/// When `info()` reads its info series: at the time of the first selection in `plan`. A
/// selection without `@` takes the offsets of the subqueries around it, up to and including
/// the nearest one with an `@`, whose anchor it takes (Prometheus's `infoSelectTimestampAndOffset`).
fn first_selection_shift(plan: &Plan, enclosing: &[TimeShift]) -> Option<TimeShift> {
    match plan {
        Plan::Select { shift, .. } | Plan::Window { shift, .. } => {
            let mut s = *shift;
            if s.at == TimeAnchor::Step {
                for sq in enclosing.iter().rev() {
                    s.offset_ms += sq.offset_ms;
                    if sq.at != TimeAnchor::Step {
                        s.at = sq.at;
                        break;
                    }
                }
            }
            Some(s)
        }
        Plan::SubWindow { shift, input, .. } => {
            let mut inner = enclosing.to_vec();
            inner.push(*shift);
            first_selection_shift(input, &inner)
        }
        _ => plan.children().into_iter().find_map(|c| first_selection_shift(c, enclosing)),
    }
}

fn string_arg(e: &Expr) -> Result<String, Error> {
    match e {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        Expr::Paren(p) => string_arg(&p.expr),
        _ => Err(Error::Parse("expected a string literal argument".into())),
    }
}

impl Lowering<'_> {
    fn lower(&self, expr: &Expr) -> Result<Plan, Error> {
        Ok(match expr {
            Expr::NumberLiteral(n) => Plan::Number(n.val),
            Expr::StringLiteral(s) => Plan::Str(s.val.clone()),
            Expr::Paren(pe) => self.lower(&pe.expr)?,
            Expr::Unary(u) => {
                Plan::Map { func: MapFn::Negate, input: Box::new(self.lower(&u.expr)?), args: vec![] }
            }
            Expr::VectorSelector(vs) => Plan::Select {
                matchers: matchers_of(vs)?,
                shift: shift_of(&vs.offset, &vs.at),
                edges: Edges::Plain,
            },
            Expr::MatrixSelector(ms) => Plan::Window {
                matchers: matchers_of(&ms.vs)?,
                range_ms: millis(&ms.range),
                shift: shift_of(&ms.vs.offset, &ms.vs.at),
                edges: Edges::Plain,
            },
            Expr::Subquery(sq) => Plan::SubWindow {
                input: Box::new(self.lower(&sq.expr)?),
                range_ms: millis(&sq.range),
                step_ms: millis(&sq.step.unwrap_or(self.opts.default_subquery_step)),
                shift: shift_of(&sq.offset, &sq.at),
            },
            Expr::Aggregate(a) => {
                let name = a.op.to_string();
                let op = agg_op(&name)
                    .ok_or_else(|| Error::Unsupported(format!("aggregation {name} is not supported yet")))?;
                let grouping = match &a.modifier {
                    Some(p::LabelModifier::Include(l)) => Grouping::By(label_list(l)),
                    Some(p::LabelModifier::Exclude(l)) => Grouping::Without(label_list(l)),
                    None => Grouping::By(vec![]),
                };
                let param = match &a.param {
                    Some(e) => Some(Box::new(self.lower(e)?)),
                    None => None,
                };
                Plan::Aggregate {
                    op,
                    grouping,
                    param,
                    input: Box::new(self.lower(&a.expr)?),
                    origin: Origin::default(),
                }
            }
            Expr::Binary(b) => self.binary(b)?,
            Expr::Call(c) => self.call(c)?,
            Expr::Extension(_) => return Err(Error::Unsupported("extension expressions".into())),
        })
    }

    fn binary(&self, b: &p::BinaryExpr) -> Result<Plan, Error> {
        let name = b.op.to_string();
        let op = bin_op(&name)
            .ok_or_else(|| Error::Unsupported(format!("operator {name} is not supported yet")))?;
        let lhs = self.lower(&b.lhs)?;
        let rhs = self.lower(&b.rhs)?;
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        if lhs.kind() == ValueKind::Instant && rhs.kind() == ValueKind::Instant {
            let m = b.modifier.as_ref();
            let grouping = match m.and_then(|m| m.matching.as_ref()) {
                Some(p::LabelModifier::Include(l)) => Grouping::By(label_list(l)),
                Some(p::LabelModifier::Exclude(l)) => Grouping::Without(label_list(l)),
                None => Grouping::Without(vec![]),
            };
            let card = if op.is_set() {
                Cardinality::ManyToMany
            } else {
                match m.map(|m| &m.card) {
                    Some(p::VectorMatchCardinality::ManyToOne(l)) => Cardinality::ManyToOne(label_list(l)),
                    Some(p::VectorMatchCardinality::OneToMany(l)) => Cardinality::OneToMany(label_list(l)),
                    _ => Cardinality::OneToOne,
                }
            };
            // Prometheus applies fill_left to the "many" side and fill_right to the "one"
            // side, whichever operand each is (corpus: fill-modifier.test, group_right cases)
            let fill = m.map(|m| m.fill_values.clone()).unwrap_or_default();
            let key = JoinKey { grouping, card, fill_many: fill.lhs, fill_one: fill.rhs };
            Ok(Plan::Join { op, lhs: Box::new(lhs), rhs: Box::new(rhs), key, return_bool })
        } else {
            Ok(Plan::ScalarOp { op, lhs: Box::new(lhs), rhs: Box::new(rhs), return_bool })
        }
    }

    fn call(&self, c: &p::Call) -> Result<Plan, Error> {
        let name = c.func.name;
        let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
        let arg = |i: usize| -> Result<Plan, Error> {
            args.get(i)
                .map(|e| self.lower(e))
                .unwrap_or_else(|| Err(Error::Parse(format!("missing argument {} of {name}", i + 1))))
        };
        if let Some(func) = window_fn(name) {
            // the range argument's position differs: quantile_over_time(φ, r), others (r, …)
            let (range_idx, scalar_idx): (usize, Vec<usize>) = match func {
                WindowFn::QuantileOverTime => (1, vec![0]),
                _ => (0, (1..args.len()).collect()),
            };
            let input = arg(range_idx)?;
            let scalars = scalar_idx.into_iter().map(arg).collect::<Result<Vec<_>, _>>()?;
            return Ok(Plan::WindowFunction {
                func,
                input: Box::new(input),
                args: scalars,
                origin: Origin::default(),
            });
        }
        if let Some(func) = map_fn(name) {
            let input = if args.is_empty() {
                // date functions default to vector(time())
                Plan::ToVector(Box::new(Plan::Time))
            } else {
                arg(0)?
            };
            let scalars = (1..args.len()).map(arg).collect::<Result<Vec<_>, _>>()?;
            return Ok(Plan::Map { func, input: Box::new(input), args: scalars });
        }
        Ok(match name {
            "time" => Plan::Time,
            "pi" => Plan::Number(std::f64::consts::PI),
            "vector" => Plan::ToVector(Box::new(arg(0)?)),
            "scalar" => Plan::VectorFunction {
                func: VectorFn::Scalar,
                input: Box::new(arg(0)?),
                args: vec![],
                labels: vec![],
                origin: Origin::default(),
            },
            "sort" | "sort_desc" => Plan::VectorFunction {
                func: if name == "sort" { VectorFn::Sort } else { VectorFn::SortDesc },
                input: Box::new(arg(0)?),
                args: vec![],
                labels: vec![],
                origin: Origin::default(),
            },
            "sort_by_label" | "sort_by_label_desc" => Plan::VectorFunction {
                func: if name == "sort_by_label" { VectorFn::SortByLabel } else { VectorFn::SortByLabelDesc },
                input: Box::new(arg(0)?),
                args: (1..args.len()).map(arg).collect::<Result<_, _>>()?,
                labels: vec![],
                origin: Origin::default(),
            },
            "info" => {
                let input = arg(0)?;
                let data_matchers = match args.get(1) {
                    None => None,
                    Some(e) => match unparen(e) {
                        Expr::VectorSelector(vs) => Some(matchers_of(vs)?),
                        _ => {
                            return Err(Error::Parse(
                                "info() takes a label selector as its second argument".into(),
                            ))
                        }
                    },
                };
                let shift = first_selection_shift(&input, &[]).unwrap_or_default();
                Plan::Info { input: Box::new(input), data_matchers, shift }
            }
            "absent" => {
                let input = arg(0)?;
                let labels = promflow_engine::batch::absent_labels(&input)
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                Plan::VectorFunction {
                    func: VectorFn::Absent,
                    input: Box::new(input),
                    args: vec![],
                    labels,
                    origin: Origin::default(),
                }
            }
            "histogram_fraction" => Plan::VectorFunction {
                func: VectorFn::HistogramFraction,
                input: Box::new(arg(2)?),
                args: vec![arg(0)?, arg(1)?],
                labels: vec![],
                origin: Origin::default(),
            },
            "histogram_quantiles" => Plan::VectorFunction {
                func: VectorFn::HistogramQuantiles,
                input: Box::new(arg(0)?),
                args: (1..args.len()).map(arg).collect::<Result<_, _>>()?,
                labels: vec![],
                origin: Origin::default(),
            },
            "histogram_quantile" => Plan::VectorFunction {
                func: VectorFn::HistogramQuantile,
                input: Box::new(arg(1)?),
                args: vec![arg(0)?],
                labels: vec![],
                origin: Origin::default(),
            },
            "label_replace" => {
                let dst = string_arg(
                    args.get(1)
                        .copied()
                        .ok_or_else(|| Error::Parse("label_replace needs 5 arguments".into()))?,
                )?;
                let replacement = string_arg(args[2])?;
                let src = string_arg(args[3])?;
                let regex = string_arg(args[4])?;
                promflow_storage::re2::compile_anchored(&regex).map_err(|e| {
                    Error::Parse(format!("invalid regular expression in label_replace(): {e}"))
                })?;
                Plan::Relabel {
                    rule: Relabel::Replace { dst, replacement, src, regex },
                    input: Box::new(arg(0)?),
                }
            }
            "label_join" => {
                let dst = string_arg(
                    args.get(1)
                        .copied()
                        .ok_or_else(|| Error::Parse("label_join needs a destination".into()))?,
                )?;
                let separator = string_arg(args[2])?;
                let src = args[3..].iter().map(|e| string_arg(e)).collect::<Result<Vec<_>, _>>()?;
                Plan::Relabel { rule: Relabel::Join { dst, separator, src }, input: Box::new(arg(0)?) }
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "function {other}() is not supported yet by promflow"
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_rate_sum() {
        let plan = compile(
            "sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m]))",
            &CompileOptions::default(),
        )
        .unwrap();
        let text = plan.to_string();
        assert!(text.starts_with("Aggregate Sum by(job)"), "{text}");
        assert!(text.contains("WindowFunction Rate"), "{text}");
        assert!(
            text.contains("Window {__name__=\"http_requests_total\", code=~\"5..\"} range=300000ms"),
            "{text}"
        );
    }

    #[test]
    fn parse_error_has_position() {
        let e = compile("sum(", &CompileOptions::default()).unwrap_err().to_string();
        assert!(e.contains("parse error"), "{e}");
        assert!(e.starts_with("1:"), "{e}");
    }

    #[test]
    fn vector_scalar_is_scalar_op() {
        let plan = compile("up * 2 > bool 1", &CompileOptions::default()).unwrap();
        assert!(matches!(plan, Plan::ScalarOp { op: BinOp::Gt, return_bool: true, .. }));
    }
}
