//! `generate_series` and `range` of any bounds, bounded. DataFusion's table function
//! `generate_series` takes constants only, where PostgreSQL's takes any expression (gap
//! filling between a table's first and last minute); such a call in `FROM` is rewritten as
//! the unnested array of DataFusion's scalar `generate_series`. That scalar builds each
//! series whole, so it is wrapped: a call whose series would pass the answer's row limit is
//! refused before anything is allocated.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Int64Type, IntervalMonthDayNanoType, TimeUnit, TimestampNanosecondType,
};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use sqlparser::ast::{self, Expr};

use super::missing::fail;
use crate::catalog::MAX_ROWS;

/// DataFusion's `generate_series` and `range` scalars, each refusing a series longer than
/// the answer may be.
pub(super) fn functions() -> Vec<ScalarUDF> {
    use datafusion::functions_nested::range;
    [range::gen_series_udf(), range::range_udf()]
        .into_iter()
        .map(|inner| ScalarUDF::from(Bounded { inner }))
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.inner.return_type(args)
    }
    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(args)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = args.args.iter().map(|a| a.to_array(rows)).collect::<Result<_>>()?;
        let mut total: u128 = 0;
        for i in 0..rows {
            total = total.saturating_add(length(&arrays, i)?);
            if total > MAX_ROWS as u128 {
                return fail(
                    "54000",
                    format!(
                        "{} would make more than {MAX_ROWS} values: narrow its bounds or widen its step",
                        self.name()
                    ),
                );
            }
        }
        self.inner.invoke_with_args(args)
    }
}

/// At most how many values the series of row `i` of `args` (`stop`, `start, stop` or
/// `start, stop, step`) has; 0 when an argument is NULL.
fn length(args: &[ArrayRef], i: usize) -> Result<u128> {
    if args.iter().any(|a| a.is_null(i)) {
        return Ok(0);
    }
    let span_and_step = |start: i128, stop: i128, step: i128| -> u128 {
        if step == 0 || (stop - start).signum() * step.signum() < 0 {
            // DataFusion refuses a zero step; a step away from the bound makes nothing
            0
        } else {
            (stop - start).unsigned_abs() / step.unsigned_abs() + 1
        }
    };
    match args {
        [stop] if stop.data_type() == &DataType::Int64 => {
            Ok(span_and_step(0, i128::from(stop.as_primitive::<Int64Type>().value(i)), 1))
        }
        [start, stop, step @ ..] if start.data_type() == &DataType::Int64 => {
            let step = step.first().map_or(1, |s| s.as_primitive::<Int64Type>().value(i));
            let [start, stop] = [start, stop].map(|a| i128::from(a.as_primitive::<Int64Type>().value(i)));
            Ok(span_and_step(start, stop, i128::from(step)))
        }
        [start, stop, step] => {
            // times or dates by an interval: the span in nanoseconds over the step's shortest
            // length (months of 28 days, days of 23 hours)
            let [start, stop] = [start, stop].map(|a| nanoseconds(a, i));
            let (Some(start), Some(stop)) = (start?, stop?) else { return Ok(0) };
            let step = step.as_primitive::<IntervalMonthDayNanoType>().value(i);
            let fields = [i128::from(step.months), i128::from(step.days), i128::from(step.nanoseconds)];
            if fields.iter().any(|f| *f > 0) && fields.iter().any(|f| *f < 0) {
                return fail("0A000", "generate_series of times takes a step whose fields have one sign");
            }
            const HOUR: i128 = 3_600_000_000_000;
            let shortest = fields[0] * 28 * 24 * HOUR + fields[1] * 23 * HOUR + fields[2];
            Ok(span_and_step(start, stop, shortest))
        }
        _ => Ok(0),
    }
}

/// Row `i` of a time or date array in nanoseconds since the epoch.
fn nanoseconds(array: &ArrayRef, i: usize) -> Result<Option<i128>> {
    Ok(match array.data_type() {
        DataType::Date32 => {
            Some(i128::from(array.as_primitive::<Date32Type>().value(i)) * 86_400_000_000_000)
        }
        DataType::Timestamp(..) => {
            let one = cast(&array.slice(i, 1), &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
            let one = one.as_primitive::<TimestampNanosecondType>();
            one.is_valid(0).then(|| i128::from(one.value(0)))
        }
        _ => None,
    })
}

/// `FROM generate_series(a, b, step) AS g` whose bounds are not all constants → `FROM
/// (SELECT unnest(generate_series(a, b, step)) AS g) AS g`: the same rows, named as
/// PostgreSQL names them, from the scalar DataFusion plans with any arguments.
pub(super) fn series_of_expressions(t: &mut ast::TableFactor) {
    let ast::TableFactor::Table { name, args: Some(args), alias, with_ordinality: false, .. } = t else {
        return;
    };
    if !name.to_string().eq_ignore_ascii_case("generate_series") {
        return;
    }
    interval_step(&mut args.args);
    let constant = |a: &ast::FunctionArg| match a {
        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => is_constant(e),
        _ => false,
    };
    if args.args.iter().all(constant) {
        return;
    }
    let column = alias
        .as_ref()
        .map(|a| a.columns.first().map_or(&a.name, |c| &c.name).value.clone())
        .unwrap_or_else(|| "generate_series".into());
    let arguments: Vec<String> = args.args.iter().map(ToString::to_string).collect();
    // an alias prints its own `AS`
    let alias = alias.as_ref().map_or_else(|| "AS generate_series".into(), ToString::to_string);
    // a function in FROM may read the FROM items before it, as a LATERAL subquery may, but
    // DataFusion does not decorrelate an unnested array of them: left to be refused
    let reads_columns = args.args.iter().any(|a| {
        // a subquery's own columns are its own
        let mut outer = a.clone();
        let _ = ast::visit_expressions_mut(&mut outer, |e| {
            if matches!(e, Expr::Subquery(_) | Expr::Exists { .. }) {
                *e = Expr::value(ast::Value::Null);
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        let columns = ast::visit_expressions(&outer, |e| match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => std::ops::ControlFlow::Break(()),
            _ => std::ops::ControlFlow::Continue(()),
        });
        columns.is_break()
    });
    if reads_columns {
        return;
    }
    let sql = format!(
        "SELECT * FROM (SELECT unnest(generate_series({})) AS \"{}\") {alias}",
        arguments.join(", "),
        column.replace('"', "\"\"")
    );
    let Ok(mut parsed) = crate::compile::parse(&sql) else { return };
    let Some(ast::Statement::Query(query)) = parsed.pop() else { return };
    let ast::SetExpr::Select(select) = *query.body else { return };
    if let Some(from) = select.from.into_iter().next() {
        *t = from.relation;
    }
}

/// `generate_series(a, b, '5 minutes')`: a step written as an untyped string (not a number)
/// is an interval, as PostgreSQL resolves it beside times, written in units DataFusion reads.
fn interval_step(args: &mut [ast::FunctionArg]) {
    let Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(step))) = args.get_mut(2) else { return };
    let Expr::Value(v) = step else { return };
    let ast::Value::SingleQuotedString(text) = &v.value else { return };
    if text.trim().parse::<f64>().is_ok() {
        return;
    }
    let text = super::postgres::interval_clock(text);
    *step = Expr::Interval(ast::Interval {
        value: Box::new(Expr::value(ast::Value::SingleQuotedString(text))),
        leading_field: None,
        leading_precision: None,
        last_field: None,
        fractional_seconds_precision: None,
    });
}

/// [`interval_step`] of a call `generate_series(…)` in an expression.
pub(super) fn interval_step_of_call(e: &mut Expr) {
    let Expr::Function(f) = e else { return };
    if !f.name.to_string().eq_ignore_ascii_case("generate_series") {
        return;
    }
    if let ast::FunctionArguments::List(list) = &mut f.args {
        interval_step(&mut list.args);
    }
}

/// `SELECT generate_series(…) [AS x], …`: a set-returning function in the select list is one
/// row per value, as in PostgreSQL (DataFusion's scalar is one array): `unnest` of it.
pub(super) fn series_in_select_list(select: &mut ast::Select) {
    for item in &mut select.projection {
        let (ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. }) = item else {
            continue;
        };
        let Expr::Function(f) = e else { continue };
        if !f.name.to_string().eq_ignore_ascii_case("generate_series") {
            continue;
        }
        // PostgreSQL names the column after the function
        if matches!(item, ast::SelectItem::UnnamedExpr(_)) {
            let ast::SelectItem::UnnamedExpr(e) =
                std::mem::replace(item, ast::SelectItem::Wildcard(Default::default()))
            else {
                unreachable!("an unnamed expression")
            };
            *item = ast::SelectItem::ExprWithAlias {
                expr: super::postgres::call("unnest", [e]),
                alias: ast::Ident::with_quote('"', "generate_series"),
            };
        } else if let ast::SelectItem::ExprWithAlias { expr, .. } = item {
            let inner = std::mem::replace(expr, Expr::value(ast::Value::Null));
            *expr = super::postgres::call("unnest", [inner]);
        }
    }
}

/// Whether `e` is a literal (DataFusion's table function takes those).
fn is_constant(e: &Expr) -> bool {
    match e {
        Expr::Value(_) | Expr::TypedString { .. } | Expr::Interval(_) => true,
        Expr::UnaryOp { expr, .. } | Expr::Nested(expr) | Expr::Cast { expr, .. } => is_constant(expr),
        _ => false,
    }
}
