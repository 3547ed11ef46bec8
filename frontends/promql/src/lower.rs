//! Lowering of the PromQL syntax tree to the engine's plan IR. Duration expressions are
//! evaluated here, with the query's step and range, as Prometheus does when it prepares a
//! query.

use promflow_plan::{
    AggOp, BinOp, Cardinality as PlanCard, DateFn, Edges, Grouping, JoinKey, MapFn, Origin, Plan, Relabel,
    SourcePos, TimeAnchor, TimeShift, TrigFn, ValueKind, VectorFn, WindowFn,
};
use promflow_storage::{MatchOp, Matcher, METRIC_NAME};

use crate::parser::*;
use crate::{CompileOptions, Error};

/// Functions `anchored` may be used with (Prometheus's `AnchoredSafeFunctions`), sorted.
const ANCHORED_SAFE: &[&str] = &["changes", "delta", "increase", "rate", "resets"];
/// Functions `smoothed` may be used with (Prometheus's `SmoothedSafeFunctions`), sorted.
const SMOOTHED_SAFE: &[&str] = &["delta", "increase", "rate"];

/// Lowers a parsed expression to the plan IR.
pub fn lower(expr: &Expr, opts: &CompileOptions) -> Result<Plan, Error> {
    Lowering { opts, query: None }.lower(expr)
}

/// Lowers `expr`, parsed from `query`, recording where calls and their arguments start so
/// that warnings and infos can point at them.
pub(crate) fn lower_query(expr: &Expr, query: &str, opts: &CompileOptions) -> Result<Plan, Error> {
    Lowering { opts, query: Some(query) }.lower(expr)
}

struct Lowering<'a> {
    opts: &'a CompileOptions,
    /// The query text, for source positions.
    query: Option<&'a str>,
}

fn bin_op(op: BinaryOp) -> Option<BinOp> {
    Some(match op {
        BinaryOp::Add => BinOp::Add,
        BinaryOp::Sub => BinOp::Sub,
        BinaryOp::Mul => BinOp::Mul,
        BinaryOp::Div => BinOp::Div,
        BinaryOp::Mod => BinOp::Mod,
        BinaryOp::Pow => BinOp::Pow,
        BinaryOp::Atan2 => BinOp::Atan2,
        BinaryOp::Eqlc => BinOp::Eq,
        BinaryOp::Neq => BinOp::Ne,
        BinaryOp::Gtr => BinOp::Gt,
        BinaryOp::Lss => BinOp::Lt,
        BinaryOp::Gte => BinOp::Ge,
        BinaryOp::Lte => BinOp::Le,
        BinaryOp::And => BinOp::And,
        BinaryOp::Or => BinOp::Or,
        BinaryOp::Unless => BinOp::Unless,
        BinaryOp::TrimUpper => BinOp::TrimUpper,
        BinaryOp::TrimLower => BinOp::TrimLower,
    })
}

fn agg_op(op: AggregateOp) -> AggOp {
    match op {
        AggregateOp::Sum => AggOp::Sum,
        AggregateOp::Avg => AggOp::Avg,
        AggregateOp::Min => AggOp::Min,
        AggregateOp::Max => AggOp::Max,
        AggregateOp::Count => AggOp::Count,
        AggregateOp::Group => AggOp::Group,
        AggregateOp::Stddev => AggOp::Stddev,
        AggregateOp::Stdvar => AggOp::Stdvar,
        AggregateOp::Topk => AggOp::Topk,
        AggregateOp::Bottomk => AggOp::Bottomk,
        AggregateOp::Quantile => AggOp::Quantile,
        AggregateOp::CountValues => AggOp::CountValues,
        AggregateOp::Limitk => AggOp::Limitk,
        AggregateOp::LimitRatio => AggOp::LimitRatio,
    }
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
        "start_timestamp" => MapFn::StartTimestamp,
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

fn string_arg(e: &Expr) -> Result<String, Error> {
    match e {
        Expr::String(s, _) => Ok(s.clone()),
        Expr::Paren(p, _) => string_arg(p),
        _ => Err(Error::Parse("expected a string literal argument".into())),
    }
}

/// Go's `math.Min`/`math.Max`, which `min_of`/`max_of` use: a NaN argument wins.
fn min_max(max: bool, a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if max {
        a.max(b)
    } else {
        a.min(b)
    }
}

fn grouping(on: bool, labels: &[String]) -> Grouping {
    if on {
        Grouping::By(labels.to_vec())
    } else {
        Grouping::Without(labels.to_vec())
    }
}

/// Parentheses around a function's or aggregation's argument do not count (Prometheus drops
/// them before evaluating).
/// A label name `label_replace`/`label_join` may write or read: non-empty valid UTF-8, as
/// Prometheus requires. The lexer turns escapes that are not UTF-8 (`"\xff"`) into U+FFFD,
/// so that character marks a name Prometheus would refuse.
fn valid_label_name(name: String, role: &str, func: &str) -> Result<String, Error> {
    if name.is_empty() || name.contains('\u{FFFD}') {
        return Err(Error::Invalid(format!("invalid {role} label name in {func}(): {name}")));
    }
    Ok(name)
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(inner, _) => unparen(inner),
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

/// The selector's matchers for storage: the metric name first, then the braces' matchers.
pub(crate) fn matchers_of(vs: &VectorSelector) -> Result<Vec<Matcher>, Error> {
    let mut out = Vec::with_capacity(vs.matchers.len() + 1);
    if let Some(name) = &vs.name {
        out.push(
            Matcher::new(MatchOp::Equal, METRIC_NAME, name.as_str())
                .map_err(|e| Error::Parse(e.to_string()))?,
        );
    }
    out.extend(vs.matchers.iter().cloned());
    Ok(out)
}

impl Lowering<'_> {
    /// Evaluates a duration expression to seconds; errors are positioned `START:END` in
    /// bytes, as Prometheus words them.
    fn eval_duration(&self, e: &DurationExpr) -> Result<f64, Error> {
        let fail = |msg: &str| {
            let s = e.span();
            Error::Parse(format!("{}:{}: {msg}", s.start, s.end))
        };
        Ok(match e {
            DurationExpr::Number(n) => n.val,
            DurationExpr::Step(_) => self.opts.step.as_secs_f64(),
            DurationExpr::Range(_) => self.opts.range.as_secs_f64(),
            DurationExpr::MinMax { max, lhs, rhs, .. } => {
                min_max(*max, self.eval_duration(lhs)?, self.eval_duration(rhs)?)
            }
            DurationExpr::Neg(inner, _) => -self.eval_duration(inner)?,
            DurationExpr::Paren(inner, _) => self.eval_duration(inner)?,
            DurationExpr::Binary(op, l, r) => {
                let (l, r) = (self.eval_duration(l)?, self.eval_duration(r)?);
                match op {
                    BinaryOp::Add => l + r,
                    BinaryOp::Sub => l - r,
                    BinaryOp::Mul => l * r,
                    BinaryOp::Div if r == 0.0 => return Err(fail("division by zero")),
                    BinaryOp::Div => l / r,
                    BinaryOp::Mod if r == 0.0 => return Err(fail("modulo by zero")),
                    BinaryOp::Mod => l % r,
                    _ => l.powf(r),
                }
            }
        })
    }

    /// A duration in milliseconds. Literals were rounded to nanoseconds when parsed;
    /// expressions are truncated to milliseconds, as in Prometheus.
    fn millis(&self, d: &Duration, allow_negative: bool) -> Result<i64, Error> {
        let e = match d {
            Duration::Fixed(ns) => return Ok(ns / 1_000_000),
            Duration::Expr(e) => e,
        };
        let secs = self.eval_duration(e)?;
        let span = e.span();
        let fail = |msg: &str| Err(Error::Parse(format!("{}:{}: {msg}", span.start, span.end)));
        if !secs.is_finite() {
            return fail("duration is NaN or infinite");
        }
        if secs <= 0.0 && !allow_negative {
            return fail("duration must be greater than 0");
        }
        if secs.abs() > MAX_DURATION_SECONDS {
            return fail("duration is out of range");
        }
        Ok((secs * 1000.0) as i64)
    }

    fn shift_of(&self, offset: &Duration, at: &Option<At>) -> Result<TimeShift, Error> {
        let at = match at {
            None => TimeAnchor::Step,
            Some(At::Start) => TimeAnchor::Start,
            Some(At::End) => TimeAnchor::End,
            Some(At::Timestamp(ms)) => TimeAnchor::Fixed(*ms),
        };
        Ok(TimeShift { offset_ms: self.millis(offset, true)?, at })
    }

    fn source_pos(&self, pos: Pos) -> Option<SourcePos> {
        let before = &self.query?.as_bytes()[..pos];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let col = pos - before.iter().rposition(|&b| b == b'\n').map_or(0, |nl| nl + 1) + 1;
        Some(SourcePos { line: line as u32, col: col as u32 })
    }

    /// Where a call or aggregation and each of its arguments start.
    fn origin(&self, start: Pos, args: &[&Expr]) -> Origin {
        Origin {
            expr: self.source_pos(start),
            args: args.iter().map(|a| self.source_pos(unparen(a).span().start)).collect(),
        }
    }

    fn lower(&self, expr: &Expr) -> Result<Plan, Error> {
        Ok(match expr {
            Expr::Number(n) => Plan::Number(n.val),
            Expr::String(s, _) => Plan::Str(s.clone()),
            Expr::Paren(e, _) | Expr::Unary { neg: false, expr: e, .. } => self.lower(e)?,
            Expr::Unary { expr, .. } => {
                Plan::Map { func: MapFn::Negate, input: Box::new(self.lower(expr)?), args: vec![] }
            }
            Expr::Selector(vs) => Plan::Select {
                matchers: matchers_of(vs)?,
                shift: self.shift_of(&vs.offset, &vs.at)?,
                // an instant selection has no window to anchor; Prometheus ignores `anchored`
                edges: if vs.smoothed { Edges::Smoothed } else { Edges::Plain },
                origin: Origin { expr: None, args: vec![self.source_pos(vs.span.start)] },
            },
            Expr::Matrix(ms) => Plan::Window {
                matchers: matchers_of(&ms.vs)?,
                range_ms: self.millis(&ms.range, false)?,
                shift: self.shift_of(&ms.vs.offset, &ms.vs.at)?,
                edges: match (ms.vs.anchored, ms.vs.smoothed) {
                    (true, _) => Edges::Anchored,
                    (_, true) => Edges::Smoothed,
                    _ => Edges::Plain,
                },
            },
            Expr::Subquery(sq) => {
                let step_ms = match &sq.step {
                    Some(step) => self.millis(step, false)?,
                    None => self.opts.default_subquery_step.as_millis() as i64,
                };
                Plan::SubWindow {
                    input: Box::new(self.lower(&sq.expr)?),
                    range_ms: self.millis(&sq.range, false)?,
                    step_ms,
                    shift: self.shift_of(&sq.offset, &sq.at)?,
                }
            }
            Expr::Aggregate(a) => {
                let op = agg_op(a.op);
                // a label name that is not UTF-8 can only come from a literal's escapes
                if let (AggregateOp::CountValues, Some(Expr::String(_, span)), Some(query)) =
                    (a.op, a.param.as_deref().map(unparen), self.query)
                {
                    if let Some(quoted) = non_utf8_literal(&query[span.start..span.end]) {
                        return Err(Error::Invalid(format!("invalid label name {quoted}")));
                    }
                }
                let grouping = if a.without {
                    Grouping::Without(a.grouping.clone())
                } else {
                    Grouping::By(a.grouping.clone())
                };
                let param = match &a.param {
                    Some(e) => Some(Box::new(self.lower(e)?)),
                    None => None,
                };
                let args: Vec<&Expr> = a.param.iter().map(|p| &**p).chain([&*a.expr]).collect();
                let origin = self.origin(a.span.start, &args);
                Plan::Aggregate { op, grouping, param, input: Box::new(self.lower(&a.expr)?), origin }
            }
            Expr::Binary(b) => self.binary(b)?,
            Expr::Call(c) => self.call(c)?,
        })
    }

    fn binary(&self, b: &BinaryExpr) -> Result<Plan, Error> {
        let op = bin_op(b.op)
            .ok_or_else(|| Error::Unsupported(format!("operator {} is not supported yet", b.op.as_str())))?;
        let lhs = self.lower(&b.lhs)?;
        let rhs = self.lower(&b.rhs)?;
        let return_bool = b.return_bool;
        if lhs.kind() != ValueKind::Instant || rhs.kind() != ValueKind::Instant {
            return Ok(Plan::ScalarOp { op, lhs: Box::new(lhs), rhs: Box::new(rhs), return_bool });
        }
        let key = match &b.matching {
            Some(vm) => JoinKey {
                grouping: grouping(vm.on, &vm.labels),
                card: match vm.card {
                    _ if op.is_set() => PlanCard::ManyToMany,
                    Cardinality::ManyToOne => PlanCard::ManyToOne(vm.include.clone()),
                    Cardinality::OneToMany => PlanCard::OneToMany(vm.include.clone()),
                    _ => PlanCard::OneToOne,
                },
                // Prometheus applies fill_left to the "many" side and fill_right to the "one"
                // side, whichever operand each is (corpus: fill-modifier.test, group_right cases)
                fill_many: vm.fill_lhs,
                fill_one: vm.fill_rhs,
            },
            None => JoinKey {
                grouping: Grouping::Without(vec![]),
                card: if op.is_set() { PlanCard::ManyToMany } else { PlanCard::OneToOne },
                fill_many: None,
                fill_one: None,
            },
        };
        let origin = Origin {
            expr: self.source_pos(b.lhs.span().start),
            args: [&b.lhs, &b.rhs].iter().map(|a| self.source_pos(unparen(a).span().start)).collect(),
        };
        Ok(Plan::Join { op, lhs: Box::new(lhs), rhs: Box::new(rhs), key, return_bool, origin })
    }

    fn call(&self, c: &Call) -> Result<Plan, Error> {
        let name = c.func.name;
        check_extended_args(c)?;
        let args: Vec<&Expr> = c.args.iter().collect();
        let origin = self.origin(c.span.start, &args);
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
            return Ok(Plan::WindowFunction { func, input: Box::new(input), args: scalars, origin });
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
        let vector_fn = |func: VectorFn, input: Plan, args: Vec<Plan>| Plan::VectorFunction {
            func,
            input: Box::new(input),
            args,
            labels: vec![],
            origin: origin.clone(),
        };
        let rest = |from: usize| (from..args.len()).map(arg).collect::<Result<Vec<_>, _>>();
        Ok(match name {
            "time" => Plan::Time,
            "pi" => Plan::Number(std::f64::consts::PI),
            // Prometheus folds these into numbers before evaluating; step() is 0 for an
            // instant query
            "step" if self.opts.range.is_zero() => Plan::Number(0.0),
            "step" => Plan::Number(self.opts.step.as_secs_f64()),
            "range" => Plan::Number(self.opts.range.as_secs_f64()),
            // the query's own start and end, read when it runs (an instant query's are its
            // evaluation time; a rule compiled once is evaluated at many times)
            "start" => Plan::QueryTime(TimeAnchor::Start),
            "end" => Plan::QueryTime(TimeAnchor::End),
            "min_of" | "max_of" => match (arg(0)?, arg(1)?) {
                (Plan::Number(a), Plan::Number(b)) => Plan::Number(min_max(name == "max_of", a, b)),
                _ => {
                    return Err(Error::Unsupported(format!(
                        "{name}() of non-constant scalars is not supported yet"
                    )))
                }
            },
            "vector" => Plan::ToVector(Box::new(arg(0)?)),
            "scalar" => vector_fn(VectorFn::Scalar, arg(0)?, vec![]),
            "sort" => vector_fn(VectorFn::Sort, arg(0)?, vec![]),
            "sort_desc" => vector_fn(VectorFn::SortDesc, arg(0)?, vec![]),
            "sort_by_label" => vector_fn(VectorFn::SortByLabel, arg(0)?, rest(1)?),
            "sort_by_label_desc" => vector_fn(VectorFn::SortByLabelDesc, arg(0)?, rest(1)?),
            "absent" => {
                let input = arg(0)?;
                let labels = promflow_plan::semantics::absent_labels(&input)
                    .iter()
                    .map(|l| (l.name.to_string(), l.value.to_string()))
                    .collect();
                Plan::VectorFunction {
                    func: VectorFn::Absent,
                    input: Box::new(input),
                    args: vec![],
                    labels,
                    origin,
                }
            }
            "histogram_quantile" => vector_fn(VectorFn::HistogramQuantile, arg(1)?, vec![arg(0)?]),
            "histogram_quantiles" => vector_fn(VectorFn::HistogramQuantiles, arg(0)?, rest(1)?),
            "histogram_fraction" => vector_fn(VectorFn::HistogramFraction, arg(2)?, vec![arg(0)?, arg(1)?]),
            "histogram_count" => vector_fn(VectorFn::HistogramCount, arg(0)?, vec![]),
            "histogram_sum" => vector_fn(VectorFn::HistogramSum, arg(0)?, vec![]),
            "histogram_avg" => vector_fn(VectorFn::HistogramAvg, arg(0)?, vec![]),
            "histogram_stddev" => vector_fn(VectorFn::HistogramStddev, arg(0)?, vec![]),
            "histogram_stdvar" => vector_fn(VectorFn::HistogramStdvar, arg(0)?, vec![]),
            "label_replace" => {
                let dst = valid_label_name(string_arg(args[1])?, "destination", name)?;
                let replacement = string_arg(args[2])?;
                let src = string_arg(args[3])?;
                let regex = string_arg(args[4])?;
                // Prometheus names the expression, not what is wrong with it
                promflow_storage::re2::compile_anchored(&regex).map_err(|_| {
                    Error::Invalid(format!("invalid regular expression in label_replace(): {regex}"))
                })?;
                Plan::Relabel {
                    rule: Relabel::Replace { dst, replacement, src, regex },
                    input: Box::new(arg(0)?),
                }
            }
            "label_join" => {
                let dst = valid_label_name(string_arg(args[1])?, "destination", name)?;
                let separator = string_arg(args[2])?;
                let src = args[3..]
                    .iter()
                    .map(|e| valid_label_name(string_arg(e)?, "source", name))
                    .collect::<Result<Vec<_>, _>>()?;
                Plan::Relabel { rule: Relabel::Join { dst, separator, src }, input: Box::new(arg(0)?) }
            }
            "info" => {
                let input = arg(0)?;
                // the checker guarantees a selector without a metric name
                let data_matchers = match args.get(1).map(|e| unparen(e)) {
                    Some(Expr::Selector(vs)) => Some(matchers_of(vs)?),
                    _ => None,
                };
                let shift = first_selection_shift(&input, &[]).unwrap_or_default();
                Plan::Info { input: Box::new(input), data_matchers, shift }
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "function {other}() is not supported yet by promflow"
                )))
            }
        })
    }
}

/// Rejects `anchored`/`smoothed` on a function that cannot take them, with Prometheus's
/// message.
fn check_extended_args(c: &Call) -> Result<(), Error> {
    for arg in &c.args {
        let Expr::Matrix(m) = arg else { continue };
        let (modifier, safe) = if m.vs.anchored {
            ("anchored", ANCHORED_SAFE)
        } else if m.vs.smoothed {
            ("smoothed", SMOOTHED_SAFE)
        } else {
            continue;
        };
        if !safe.contains(&c.func.name) {
            return Err(Error::Unsupported(format!(
                "{modifier} modifier can only be used with: {} - not with {}",
                safe.join(", "),
                c.func.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use super::*;
    use crate::compile;

    fn opts(step_secs: u64, range_secs: u64) -> CompileOptions {
        CompileOptions {
            step: StdDuration::from_secs(step_secs),
            range: StdDuration::from_secs(range_secs),
            ..Default::default()
        }
    }

    /// The first node of the plan (depth first) that `f` picks a number from.
    fn find(plan: &Plan, f: &dyn Fn(&Plan) -> Option<i64>) -> Option<i64> {
        f(plan).or_else(|| plan.children().into_iter().find_map(|c| find(c, f)))
    }

    fn range_ms(q: &str, o: &CompileOptions) -> i64 {
        let plan = compile(q, o).unwrap_or_else(|e| panic!("{q}: {e}"));
        let f = |p: &Plan| match p {
            Plan::Window { range_ms, .. } | Plan::SubWindow { range_ms, .. } => Some(*range_ms),
            _ => None,
        };
        find(&plan, &f).unwrap_or_else(|| panic!("{q}: no window in {plan}"))
    }

    fn offset_ms(q: &str, o: &CompileOptions) -> i64 {
        let plan = compile(q, o).unwrap_or_else(|e| panic!("{q}: {e}"));
        let f = |p: &Plan| match p {
            Plan::Select { shift, .. } | Plan::Window { shift, .. } | Plan::SubWindow { shift, .. } => {
                Some(shift.offset_ms)
            }
            _ => None,
        };
        find(&plan, &f).unwrap()
    }

    #[test]
    fn folds_duration_expressions() {
        let instant = CompileOptions::default();
        for q in [
            "foo[26m+4m]",
            "foo[1800]",
            "foo[60*30]",
            "foo[2m*(10+5)]",
            "foo[1h30m % 1h]",
            "foo[(9m30s+30s)*3]",
        ] {
            assert_eq!(range_ms(q, &instant), 1_800_000, "{q}");
        }
        let o = opts(5, 10);
        assert_eq!(range_ms("foo[step()+1]", &o), 6_000);
        assert_eq!(range_ms("foo[min_of(step()+1, 1h)]", &o), 6_000);
        assert_eq!(range_ms("foo[max_of(min_of(step()+1,1h),1ms)]", &o), 6_000);
        assert_eq!(range_ms("foo[range()]", &o), 10_000);
        // fractions of a millisecond are truncated, as in Prometheus
        assert_eq!(range_ms("foo[step()/3]", &opts(10, 0)), 3_333);
        assert_eq!(range_ms("sum_over_time(foo[29s+1s:5s+5s])", &instant), 30_000);
        let Plan::WindowFunction { input, .. } =
            compile("sum_over_time(foo[29s+1s:5s+5s])", &instant).unwrap()
        else {
            panic!("not a window function")
        };
        assert!(matches!(*input, Plan::SubWindow { step_ms: 10_000, .. }));

        assert_eq!(offset_ms("foo offset STEP()", &o), 5_000);
        assert_eq!(offset_ms("foo offset (STEP()/10)", &o), 500);
        assert_eq!(offset_ms("foo offset -(20*7s)", &o), -140_000);
        assert_eq!(offset_ms("foo offset range()", &instant), 0);
        // a literal or a signed form ends the offset; the rest applies to the selector
        let plan = compile("foo offset -step()*2", &o).unwrap();
        let Plan::ScalarOp { op: BinOp::Mul, lhs, rhs, .. } = plan else { panic!("{plan}") };
        assert!(matches!(*lhs, Plan::Select { shift: TimeShift { offset_ms: -5_000, .. }, .. }));
        assert_eq!(*rhs, Plan::Number(2.0));
    }

    #[test]
    fn duration_errors_are_positioned() {
        let err = |q: &str, o: &CompileOptions| compile(q, o).unwrap_err().to_string();
        let instant = CompileOptions::default();
        assert_eq!(err("foo[step()]", &instant), "4:10: duration must be greater than 0");
        assert_eq!(err("foo[5m-step()]", &opts(300, 0)), "4:13: duration must be greater than 0");
        assert_eq!(err("foo[1m/(step())]", &instant), "4:14: division by zero");
        assert_eq!(err("foo[1m:step()]", &instant), "7:13: duration must be greater than 0");
    }

    #[test]
    fn query_values() {
        let o = opts(10, 30);
        assert_eq!(compile("step()", &o).unwrap(), Plan::Number(10.0));
        assert_eq!(
            compile("step()", &CompileOptions { range: StdDuration::ZERO, ..o.clone() }).unwrap(),
            Plan::Number(0.0)
        );
        assert_eq!(compile("range()", &o).unwrap(), Plan::Number(30.0));
        assert_eq!(compile("min_of(step(), 2)", &o).unwrap(), Plan::Number(2.0));
        assert_eq!(compile("max_of(step(), 2)", &o).unwrap(), Plan::Number(10.0));
        assert_eq!(compile("start()", &o).unwrap(), Plan::QueryTime(TimeAnchor::Start));
        assert_eq!(compile("end()", &CompileOptions::default()).unwrap(), Plan::QueryTime(TimeAnchor::End));
    }

    #[test]
    fn extended_selectors() {
        let err = |q: &str| match compile(q, &CompileOptions::default()) {
            Err(Error::Unsupported(m)) => m,
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(
            err("deriv(foo[3m] smoothed)"),
            "smoothed modifier can only be used with: delta, increase, rate - not with deriv"
        );
        assert_eq!(
            err("predict_linear(foo[3m] anchored, 4)"),
            "anchored modifier can only be used with: changes, delta, increase, rate, resets - not with predict_linear"
        );
        let edges = |q: &str| {
            let plan = compile(q, &CompileOptions::default()).unwrap();
            let f = |p: &Plan| match p {
                Plan::Select { edges, .. } | Plan::Window { edges, .. } => Some(*edges as i64),
                _ => None,
            };
            find(&plan, &f).unwrap()
        };
        assert_eq!(edges("increase(foo[1m] anchored)"), Edges::Anchored as i64);
        assert_eq!(edges("rate(foo[1m] smoothed)"), Edges::Smoothed as i64);
        assert_eq!(edges("foo smoothed"), Edges::Smoothed as i64);
        assert_eq!(edges("foo anchored"), Edges::Plain as i64);
    }

    #[test]
    fn info_reads_at_the_first_selection() {
        let plan = compile("info(foo offset 5m, {data=~\".+\"})", &CompileOptions::default()).unwrap();
        let Plan::Info { data_matchers: Some(ms), shift, .. } = plan else { panic!("{plan}") };
        assert_eq!(ms.len(), 1);
        assert_eq!(shift.offset_ms, 300_000);
    }

    #[test]
    fn origins_point_at_arguments() {
        let plan =
            compile("sum(\n  quantile_over_time((0.5), foo[5m]))", &CompileOptions::default()).unwrap();
        let Plan::Aggregate { origin, input, .. } = plan else { panic!() };
        assert_eq!(origin.expr, Some(SourcePos { line: 1, col: 1 }));
        let Plan::WindowFunction { origin, .. } = *input else { panic!() };
        assert_eq!(origin.expr, Some(SourcePos { line: 2, col: 3 }));
        assert_eq!(origin.arg(0), Some(SourcePos { line: 2, col: 23 }));
        assert_eq!(origin.arg(1), Some(SourcePos { line: 2, col: 29 }));
    }

    #[test]
    fn vector_matching() {
        let join = |q: &str| match compile(q, &CompileOptions::default()).unwrap() {
            Plan::Join { key, .. } => key,
            other => panic!("{q}: {other}"),
        };
        let k = join("a + on(b) group_left(c) d");
        assert_eq!(
            (k.grouping, k.card),
            (Grouping::By(vec!["b".into()]), PlanCard::ManyToOne(vec!["c".into()]))
        );
        let k = join("a / ignoring(b) group_right d");
        assert_eq!((k.grouping, k.card), (Grouping::Without(vec!["b".into()]), PlanCard::OneToMany(vec![])));
        let k = join("a - fill_left(1) fill_right(2) d");
        assert_eq!((k.fill_many, k.fill_one), (Some(1.0), Some(2.0)));
        assert_eq!(join("a or on() b").card, PlanCard::ManyToMany);
        assert_eq!(join("a == b").grouping, Grouping::Without(vec![]));
        assert!(matches!(compile("+foo", &CompileOptions::default()).unwrap(), Plan::Select { .. }));
    }
}
