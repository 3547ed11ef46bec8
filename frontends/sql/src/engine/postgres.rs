//! Where DataFusion's SQL and PostgreSQL's differ in what a client can see, the statement is
//! rewritten before planning, or a function replaced, so the answer is PostgreSQL's:
//! casts of doubles to integers round (`rint`) rather than truncate, a double cast to text
//! is written as PostgreSQL writes it, `round` follows PostgreSQL's overloads, `ORDER BY`
//! positions may name expressions, and unnamed columns are named as PostgreSQL names them.

use std::ops::ControlFlow;
use std::sync::Arc;

use super::udf::{self, Function as Udf};
use crate::exec::ExecError;
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, IntervalMonthDayNanoArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Float64Type, Int32Type, Int64Type, IntervalMonthDayNano,
    IntervalMonthDayNanoType, IntervalUnit, TimeUnit, TimestampMillisecondType,
};
use datafusion::arrow::error::ArrowError;
use datafusion::common::{exec_err, plan_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use sqlparser::ast::{
    self, CastKind, Expr, Function, FunctionArguments, Ident, ObjectName, ObjectNamePart, OrderByKind, Query,
    SelectItem, SetExpr, Statement, Value,
};

/// The functions that replace DataFusion's or implement the rewrites.
pub(super) fn functions() -> Vec<ScalarUDF> {
    let one = || Signature::any(1, Volatility::Immutable);
    let exact = |types| Signature::exact(types, Volatility::Immutable);
    vec![
        ScalarUDF::from(Rounder::new(Rounding::Round)),
        ScalarUDF::from(Rounder::new(Rounding::Trunc)),
        ScalarUDF::from(Rounder::new(Rounding::Floor)),
        ScalarUDF::from(Rounder::new(Rounding::Ceil)),
        ScalarUDF::from(AtTimeZone::new()),
        Udf::udf(
            INTERVAL_MUL,
            exact(vec![DataType::Interval(IntervalUnit::MonthDayNano), DataType::Float64]),
            Some(DataType::Interval(IntervalUnit::MonthDayNano)),
            interval_mul,
        ),
        Udf::udf(RINT, one(), None, rint),
        Udf::udf(FLOAT8_TEXT, one(), Some(DataType::Utf8), |a| udf::text(&a[0])),
        Udf::udf(
            DIVISOR,
            Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Any(1),
                    datafusion::logical_expr::TypeSignature::Any(2),
                ],
                Volatility::Immutable,
            ),
            None,
            divisor,
        ),
        Udf::udf("sign", exact(vec![DataType::Float64]), Some(DataType::Float64), sign),
        Udf::udf(
            "log",
            Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Float64]),
                    datafusion::logical_expr::TypeSignature::Exact(vec![
                        DataType::Float64,
                        DataType::Float64,
                    ]),
                ],
                Volatility::Immutable,
            ),
            Some(DataType::Float64),
            log,
        ),
    ]
}

/// `f` of every value of `array` (doubles): the C library's function where PostgreSQL calls
/// it and DataFusion computes otherwise, differing in the last digit.
fn c_math(array: &ArrayRef, f: fn(f64) -> f64) -> ArrayRef {
    Arc::new(array.as_primitive::<Float64Type>().unary::<_, Float64Type>(f))
}

/// `log(x)`, PostgreSQL's base-10 logarithm (C's `log10`, where DataFusion divides natural
/// logarithms), and `log(b, x)`.
fn log(args: &[ArrayRef]) -> Result<ArrayRef> {
    match args {
        [x] => Ok(c_math(x, f64::log10)),
        [b, x] => {
            let (b, x) = (b.as_primitive::<Float64Type>(), x.as_primitive::<Float64Type>());
            let out: datafusion::arrow::array::Float64Array =
                b.iter().zip(x.iter()).map(|(b, x)| Some(x?.ln() / b?.ln())).collect();
            Ok(Arc::new(out))
        }
        _ => exec_err!("log takes one or two arguments"),
    }
}

/// `sign(x)`: -1, 0 or 1 (Rust's `signum` answers 1 for zero).
fn sign(args: &[ArrayRef]) -> Result<ArrayRef> {
    Ok(Arc::new(args[0].as_primitive::<Float64Type>().unary::<_, Float64Type>(|v| {
        if v > 0.0 {
            1.0
        } else if v < 0.0 {
            -1.0
        } else {
            v
        }
    })))
}

/// A statement rewritten for DataFusion, and the names PostgreSQL gives its columns (where
/// the select list has no `*`).
pub(super) struct Rewritten {
    /// The statement's text.
    pub sql: String,
    /// The statement's text with every unnamed item of its select list named (`AS "?column?
    /// 1"`, …), for DataFusion, which refuses a select list whose expressions it names alike
    /// (`power(2, 10), 2 ^ 10`; `count(*), count(*)`) where PostgreSQL takes it: the names
    /// the client sees are [`Rewritten::names`] either way. `None` when there is nothing to
    /// name.
    pub named: Option<String>,
    /// The output columns' names, when they are known from the select list.
    pub names: Option<Vec<String>>,
}

/// `sql` rewritten (see the module's documentation); unchanged when it does not parse, so
/// DataFusion reports the error. Refused (why) when it uses what the engine answers
/// differently from PostgreSQL and cannot be rewritten: `EXCEPT ALL` and `INTERSECT ALL`
/// after a first query that selects `*`. Rejected as PostgreSQL rejects it when it does
/// ([`super::rejected`]).
pub(super) fn rewrite(sql: &str) -> Result<Rewritten, ExecError> {
    let Ok(mut statements) = crate::compile::parse(sql) else {
        return Ok(Rewritten { sql: sql.to_string(), named: None, names: None });
    };
    super::rejected::check(&statements)?;
    struct Clauses;
    impl ast::VisitorMut for Clauses {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &mut ast::TableFactor) -> ControlFlow<()> {
            super::series::series_of_expressions(t);
            name_function_column(t);
            ControlFlow::Continue(())
        }
        fn pre_visit_select(&mut self, select: &mut ast::Select) -> ControlFlow<()> {
            super::series::series_in_select_list(select);
            qualify_using_columns(select);
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            fetch_as_limit(query);
            decimal_columns(&mut query.body);
            numbered_set_operations(&mut query.body);
            ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(&mut statements, &mut Clauses);
    // what is left of them has a `*` in its first query, of a width unknown here
    if let Some(op) = statements.iter().find_map(counted_set_operation) {
        return Err(ExecError::Catalog(format!(
            "{op} ALL is not supported where its first query selects *: name the columns"
        )));
    }
    let names = match statements.as_slice() {
        [Statement::Query(q)] => column_names(q),
        _ => None,
    };
    let _ = ast::visit_expressions_mut(&mut statements, |e| {
        cast(e);
        mod_as_operator(e);
        rounded_numeric(e);
        // before the divisor is wrapped: an exponent beside an expression is a double
        decimals_beside_expressions(e);
        checked_divisor(e);
        fine_time_literal(e);
        date_trunc_of_date(e);
        like_any(e);
        distinct_from_in_parentheses(e);
        to_char_pattern(e);
        extract_numeric(e);
        date_part_fraction(e);
        at_time_zone(e);
        interval_literal(e);
        date_plus_interval(e);
        super::series::interval_step_of_call(e);
        text_operands(e);
        super::datetime::time_difference(e);
        interval_times(e);
        super::datetime::make_interval_positional(e);
        ControlFlow::<()>::Continue(())
    });
    if let Some(why) = answered_otherwise(&statements) {
        return Err(ExecError::Catalog(why));
    }
    if let [Statement::Query(query)] = statements.as_mut_slice() {
        order_by_expressions(query);
    }
    let text =
        |statements: &[Statement]| statements.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    let sql = text(&statements);
    let named = match statements.as_mut_slice() {
        [Statement::Query(query)] => name_unnamed(query),
        _ => false,
    };
    let named = named.then(|| text(&statements));
    Ok(Rewritten { sql, named, names })
}

/// Names every unnamed expression of `query`'s select list (its first, for a set operation)
/// `"?column? <position>"`; whether there was one.
fn name_unnamed(query: &mut Query) -> bool {
    let mut body = query.body.as_mut();
    loop {
        match body {
            SetExpr::SetOperation { left, .. } => body = left,
            SetExpr::Query(q) => body = q.body.as_mut(),
            _ => break,
        }
    }
    let SetExpr::Select(select) = body else { return false };
    let mut named = false;
    for (i, item) in select.projection.iter_mut().enumerate() {
        if let SelectItem::UnnamedExpr(e) = item {
            // a column keeps its own name
            if !matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                let alias = ast::Ident::with_quote('"', format!("?column? {}", i + 1));
                *item = SelectItem::ExprWithAlias { expr: e.clone(), alias };
                named = true;
            }
        }
    }
    named
}

/// `EXCEPT` or `INTERSECT` when `statement` has one with `ALL` in any of its queries.
fn counted_set_operation(statement: &Statement) -> Option<&'static str> {
    struct Finder(Option<&'static str>);
    fn body(set: &SetExpr, found: &mut Option<&'static str>) {
        if let SetExpr::SetOperation { op, set_quantifier, left, right } = set {
            if matches!(set_quantifier, ast::SetQuantifier::All) {
                match op {
                    ast::SetOperator::Except => *found = Some("EXCEPT"),
                    ast::SetOperator::Intersect => *found = Some("INTERSECT"),
                    _ => {}
                }
            }
            body(left, found);
            body(right, found);
        }
    }
    impl ast::Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            body(&query.body, &mut self.0);
            ControlFlow::Continue(())
        }
    }
    let mut finder = Finder(None);
    let _ = ast::Visit::visit(statement, &mut finder);
    finder.0
}

/// `a EXCEPT ALL b` and `a INTERSECT ALL b`, which DataFusion answers without counting
/// duplicates, as the set operation without `ALL` over rows numbered within each group of
/// equal rows: `a`'s k-th copy of a row survives `EXCEPT` when `b` has fewer than k copies,
/// and `INTERSECT` when `b` has k or more, which is PostgreSQL's multiset answer. The columns
/// keep the first query's names. A first query that selects `*` is left alone (its width is
/// not known before planning).
fn numbered_set_operations(body: &mut SetExpr) {
    let SetExpr::SetOperation { op, set_quantifier, left, right } = body else { return };
    numbered_set_operations(left);
    numbered_set_operations(right);
    let (ast::SetOperator::Except | ast::SetOperator::Intersect, ast::SetQuantifier::All) =
        (&*op, &*set_quantifier)
    else {
        return;
    };
    let Some(names) = body_column_names(left) else { return };
    let quoted = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let columns: Vec<String> = (1..=names.len()).map(|i| quoted(&format!("?c{i}"))).collect();
    let columns = columns.join(", ");
    let numbered = |side: &SetExpr, alias: &str| {
        format!(
            "SELECT {columns}, row_number() OVER (PARTITION BY {columns}) AS \"?k\" FROM ({side}) AS \"{alias}\"({columns})"
        )
    };
    let outputs: Vec<String> =
        names.iter().enumerate().map(|(i, name)| format!("\"?c{}\" AS {}", i + 1, quoted(name))).collect();
    let sql = format!(
        "SELECT {} FROM ({} {op} {}) AS \"?numbered\"",
        outputs.join(", "),
        numbered(left, "?left"),
        numbered(right, "?right"),
    );
    if let Ok(mut parsed) = crate::compile::parse(&sql) {
        if let Some(Statement::Query(q)) = parsed.pop() {
            *body = *q.body;
        }
    }
}

/// `FETCH FIRST n ROWS ONLY` → `LIMIT n`, which DataFusion plans (`WITH TIES` and `PERCENT`
/// stay, and are refused).
fn fetch_as_limit(query: &mut Query) {
    let Some(ast::Fetch { with_ties: false, percent: false, .. }) = &query.fetch else { return };
    let Some(fetch) = query.fetch.take() else { return };
    // `FETCH FIRST ROW ONLY` is one row
    let limit = fetch.quantity.unwrap_or_else(|| Expr::value(ast::Value::Number("1".into(), false)));
    match &mut query.limit_clause {
        Some(ast::LimitClause::LimitOffset { limit: slot @ None, .. }) => *slot = Some(limit),
        None => {
            query.limit_clause =
                Some(ast::LimitClause::LimitOffset { limit: Some(limit), offset: None, limit_by: Vec::new() })
        }
        // both a LIMIT and a FETCH: PostgreSQL rejects it, and so does DataFusion
        Some(_) => query.fetch = Some(ast::Fetch { with_ties: false, percent: false, quantity: Some(limit) }),
    }
}

/// `generate_series(…) AS g`: PostgreSQL names a one-column function's column after the
/// alias, DataFusion keeps the function's own name (`value`). `promql(…)`, of many columns,
/// keeps its columns' names.
fn name_function_column(t: &mut ast::TableFactor) {
    let ast::TableFactor::Table { name, args: Some(_), alias: Some(alias), .. } = t else { return };
    let one_column = name.0.last().and_then(|part| part.as_ident()).is_some_and(|function| {
        ["generate_series", "range"].contains(&function.value.to_ascii_lowercase().as_str())
    });
    if one_column && alias.columns.is_empty() {
        alias.columns.push(ast::TableAliasColumnDef::from_name(alias.name.value.clone()));
    }
}

/// `a / b` → `a / pg_divisor(b, a)`: PostgreSQL fails a division of doubles by zero as it
/// fails one of integers, where Arrow answers infinity or NaN, but not a division of `NULL`
/// (`sum(value) / count(*)` over no rows is `NULL`). The dividend is repeated (the planner
/// evaluates a repeated expression once) unless it holds a subquery or a volatile function;
/// then a zero divisor fails whatever the dividend.
fn checked_divisor(e: &mut Expr) {
    let Expr::BinaryOp { left, op: ast::BinaryOperator::Divide | ast::BinaryOperator::Modulo, right } = e
    else {
        return;
    };
    let divisor = std::mem::replace(right.as_mut(), Expr::value(Value::Null));
    let repeatable = ast::visit_expressions(left.as_ref(), |x| match x {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::In { target: ast::InTarget::Subquery(_), .. } => {
            ControlFlow::Break(())
        }
        Expr::Function(f)
            if ["random", "nextval", "clock_timestamp", "uuid"]
                .iter()
                .any(|v| f.name.to_string().eq_ignore_ascii_case(v)) =>
        {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_continue();
    **right = if repeatable { call(DIVISOR, [divisor, (**left).clone()]) } else { call(DIVISOR, [divisor]) };
}

/// `mod(a, b)` → `(a % b)`: PostgreSQL's `mod` is its `%`, of integers and of `numeric` (the
/// remainder with the dividend's sign and the larger scale of the two), which DataFusion's
/// operator computes, its divisor checked ([`checked_divisor`]).
fn mod_as_operator(e: &mut Expr) {
    let Expr::Function(f) = e else { return };
    if !f.name.to_string().eq_ignore_ascii_case("mod") {
        return;
    }
    let Some([a, b]) = plain_arguments(f).and_then(|v| <[&Expr; 2]>::try_from(v).ok()) else { return };
    let nested = |x: &Expr| Box::new(Expr::Nested(Box::new(x.clone())));
    let mut remainder = Expr::BinaryOp { left: nested(a), op: ast::BinaryOperator::Modulo, right: nested(b) };
    checked_divisor(&mut remainder);
    *e = Expr::Nested(Box::new(remainder));
}

/// `sql` with each number compared with `ts` read as seconds since the epoch
/// (`to_timestamp(n)`), as the plan IR reads `ts` bounds: promflow's extension, for a
/// statement the IR took that the relational engine answers (PostgreSQL compares no
/// `timestamptz` with a number); `sql` as it is when it does not parse.
pub(crate) fn epoch_seconds_as_times(sql: &str) -> String {
    let Ok(mut statements) = crate::compile::parse(sql) else { return sql.to_string() };
    let seconds = |x: &mut Expr| {
        let is_number = |e: &Expr| matches!(e, Expr::Value(v) if matches!(v.value, Value::Number(..)));
        let number = match &*x {
            Expr::UnaryOp { op: ast::UnaryOperator::Minus, expr } => is_number(expr),
            e => is_number(e),
        };
        if number {
            let inner = std::mem::replace(x, Expr::value(Value::Null));
            *x = call("to_timestamp", [inner]);
        }
    };
    let _ = ast::visit_expressions_mut(&mut statements, |e| {
        compared_with_ts(e, seconds);
        ControlFlow::<()>::Continue(())
    });
    statements.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Calls `f` on what `e` compares `ts` with: the other side of a comparison, a `BETWEEN`'s
/// bounds.
fn compared_with_ts(e: &mut Expr, mut f: impl FnMut(&mut Expr)) {
    let is_ts = |x: &Expr| is_column(x, "ts");
    match e {
        Expr::BinaryOp {
            left,
            op:
                ast::BinaryOperator::Lt
                | ast::BinaryOperator::LtEq
                | ast::BinaryOperator::Gt
                | ast::BinaryOperator::GtEq
                | ast::BinaryOperator::Eq
                | ast::BinaryOperator::NotEq,
            right,
        } => {
            if is_ts(left) {
                f(right);
            } else if is_ts(right) {
                f(left);
            }
        }
        Expr::Between { expr, low, high, .. } if is_ts(expr) => {
            f(low);
            f(high);
        }
        _ => {}
    }
}

/// A string compared with `ts` that is finer than a millisecond (`ts < '… 21:21:00.3121'`)
/// as a `timestamptz`: DataFusion would cast it to the column's milliseconds, rounding it
/// down, where PostgreSQL compares microseconds. (Typed, the comparison is in the finer
/// unit.)
fn fine_time_literal(e: &mut Expr) {
    compared_with_ts(e, |x: &mut Expr| {
        let Expr::Value(v) = x else { return };
        let Value::SingleQuotedString(text) = &v.value else { return };
        let fraction = text.split_once('.').map_or("", |(_, f)| f);
        let digits: String = fraction.chars().take_while(char::is_ascii_digit).collect();
        if digits.get(3..).is_some_and(|finer| finer.contains(|c| c != '0')) {
            let inner = std::mem::replace(x, Expr::value(Value::Null));
            *x = Expr::Cast {
                kind: CastKind::DoubleColon,
                expr: Box::new(inner),
                data_type: ast::DataType::Timestamp(None, ast::TimezoneInfo::Tz),
                format: None,
            };
        }
    });
}

/// `date_trunc(unit, d)` of a `date` (`DATE '…'`, `x::date`) as of `d::timestamptz`: PostgreSQL
/// truncates the `timestamptz` the date converts to, and answers one (DataFusion: a
/// timestamp without time zone).
fn date_trunc_of_date(e: &mut Expr) {
    let Expr::Function(f) = e else { return };
    if !f.name.to_string().eq_ignore_ascii_case("date_trunc") {
        return;
    }
    let FunctionArguments::List(list) = &mut f.args else { return };
    let Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x))) = list.args.get_mut(1) else { return };
    let is_date = match x {
        Expr::TypedString(t) => matches!(t.data_type, ast::DataType::Date),
        Expr::Cast { data_type: ast::DataType::Date, .. } => true,
        _ => false,
    };
    if is_date {
        let inner = std::mem::replace(x, Expr::value(Value::Null));
        *x = Expr::Cast {
            kind: CastKind::DoubleColon,
            expr: Box::new(Expr::Nested(Box::new(inner))),
            data_type: ast::DataType::Timestamp(None, ast::TimezoneInfo::Tz),
            format: None,
        };
    }
}

/// `x [NOT] LIKE ANY (ARRAY[p, q])` (and `ILIKE`) → `(x [NOT] LIKE p OR x [NOT] LIKE q)`,
/// which DataFusion plans; an array that is no literal is left to DataFusion's error.
fn like_any(e: &mut Expr) {
    let (Expr::Like { any: any @ true, pattern, .. } | Expr::ILike { any: any @ true, pattern, .. }) = e
    else {
        return;
    };
    let mut list = pattern.as_ref();
    while let Expr::Nested(inner) = list {
        list = inner;
    }
    let Expr::Array(ast::Array { elem, .. }) = list else { return };
    let patterns = elem.clone();
    *any = false;
    let one = |p: Expr| {
        let mut single = e.clone();
        if let Expr::Like { pattern, .. } | Expr::ILike { pattern, .. } = &mut single {
            **pattern = p;
        }
        single
    };
    let alternatives = patterns.into_iter().map(one).reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: ast::BinaryOperator::Or,
        right: Box::new(b),
    });
    // no pattern matches nothing
    *e = Expr::Nested(Box::new(alternatives.unwrap_or(Expr::value(Value::Boolean(false)))));
}

/// `a IS [NOT] DISTINCT FROM b` in parentheses: DataFusion's parser binds `AND` after it
/// tighter than PostgreSQL's.
fn distinct_from_in_parentheses(e: &mut Expr) {
    if matches!(e, Expr::IsDistinctFrom(..) | Expr::IsNotDistinctFrom(..)) {
        let inner = std::mem::replace(e, Expr::value(Value::Null));
        *e = Expr::Nested(Box::new(inner));
    }
}

/// Whether `x` is a numeric literal with a fraction or an exponent (`numeric` in PostgreSQL,
/// a decimal in DataFusion), and its scale as written.
fn decimal_literal(x: &Expr) -> Option<usize> {
    let Expr::Value(v) = x else { return None };
    let Value::Number(n, _) = &v.value else { return None };
    if n.contains(['e', 'E']) {
        // an exponent's scale is not as written: counts as one of its own
        return Some(usize::MAX);
    }
    n.split_once('.').map(|(_, fraction)| fraction.len())
}

/// `x` as `x::double precision`.
fn as_double(x: &mut Expr) {
    let inner = std::mem::replace(x, Expr::value(Value::Null));
    *x = Expr::Cast {
        kind: CastKind::DoubleColon,
        expr: Box::new(inner),
        data_type: ast::DataType::DoublePrecision,
        format: None,
    };
}

/// The columns of a set operation's queries and of `VALUES` rows where DataFusion would give
/// numeric literals one decimal type that PostgreSQL does not: beside an expression that is
/// not a literal (PostgreSQL: `double precision` beside `value`), or beside literals of
/// another scale (PostgreSQL's `numeric` keeps each value's scale, `1.5` and `2.25`, where
/// a decimal column has one, `1.50`). There the literals become `double precision`, which
/// prints as PostgreSQL prints them.
fn decimal_columns(body: &mut SetExpr) {
    // a `*` hides how many columns come before the next item: nothing is lined up then
    fn starred(body: &SetExpr) -> bool {
        match body {
            SetExpr::SetOperation { left, right, .. } => starred(left) || starred(right),
            SetExpr::Query(q) => starred(&q.body),
            SetExpr::Select(select) => select
                .projection
                .iter()
                .any(|item| matches!(item, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..))),
            _ => false,
        }
    }
    if starred(body) {
        return;
    }
    fn rows<'a>(body: &'a mut SetExpr, out: &mut Vec<Vec<&'a mut Expr>>) {
        match body {
            SetExpr::SetOperation { left, right, .. } => {
                rows(left, out);
                rows(right, out);
            }
            SetExpr::Query(q) => rows(&mut q.body, out),
            SetExpr::Select(select) => out.push(
                select
                    .projection
                    .iter_mut()
                    .filter_map(|item| match item {
                        SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. } => Some(x),
                        _ => None,
                    })
                    .collect(),
            ),
            SetExpr::Values(values) => out.extend(values.rows.iter_mut().map(|r| r.iter_mut().collect())),
            _ => {}
        }
    }
    let mut all = Vec::new();
    rows(body, &mut all);
    if all.len() < 2 {
        return;
    }
    let width = all.iter().map(Vec::len).max().unwrap_or(0);
    for column in 0..width {
        let cells: Vec<&Expr> = all.iter().filter_map(|r| r.get(column).map(|x| &**x)).collect();
        let scales: std::collections::HashSet<usize> =
            cells.iter().filter_map(|x| decimal_literal(x)).collect();
        let other = cells.iter().any(|x| decimal_literal(x).is_none() && !matches!(x, Expr::Value(_)));
        if !scales.is_empty() && (scales.len() > 1 || other) {
            for row in &mut all {
                if let Some(x) = row.get_mut(column) {
                    if decimal_literal(x).is_some() {
                        as_double(x);
                    }
                }
            }
        }
    }
}

/// Numeric literals among the values of `coalesce`, `greatest`, `least`, `nullif` or a
/// `CASE`'s results, beside an expression that is not a literal, as `double precision`.
/// PostgreSQL resolves `numeric` beside `double precision` (the tables' `value`) to `double
/// precision`; DataFusion resolves it to a decimal, which prints `22.250000000000000` where
/// PostgreSQL prints `22.25`. Literals alone keep their `numeric`.
fn decimals_beside_expressions(e: &mut Expr) {
    let literal = |x: &Expr| {
        matches!(x, Expr::Value(_))
            || matches!(x, Expr::UnaryOp { expr, .. } if matches!(**expr, Expr::Value(_)))
    };
    let double_if_decimal = |x: &mut Expr| {
        if decimal_literal(x).is_some() {
            as_double(x);
        }
    };
    match e {
        Expr::Function(f)
            if ["coalesce", "greatest", "least", "nullif"]
                .iter()
                .any(|n| f.name.to_string().eq_ignore_ascii_case(n)) =>
        {
            let FunctionArguments::List(list) = &mut f.args else { return };
            let mut values: Vec<&mut Expr> = list
                .args
                .iter_mut()
                .filter_map(|a| match a {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => Some(x),
                    _ => None,
                })
                .collect();
            if values.iter().any(|x| !literal(x)) {
                values.iter_mut().for_each(|x| double_if_decimal(x));
            }
        }
        // `sum(value) / 1e9`: DataFusion reads an exponent as a decimal of negative scale and
        // turns it into a double inexactly (999999999.9999999); PostgreSQL's is exact
        Expr::BinaryOp {
            left,
            op:
                ast::BinaryOperator::Plus
                | ast::BinaryOperator::Minus
                | ast::BinaryOperator::Multiply
                | ast::BinaryOperator::Divide
                | ast::BinaryOperator::Modulo,
            right,
        } => {
            let exponent = |x: &Expr| decimal_literal(x) == Some(usize::MAX);
            // read from its text: a cast of the decimal would be the inexact one
            let exact_double = |x: &mut Expr| {
                if let Expr::Value(v) = x {
                    if let Value::Number(n, _) = &v.value {
                        let text = n.clone();
                        *x = Expr::value(Value::SingleQuotedString(text));
                        as_double(x);
                    }
                }
            };
            if exponent(left) && !literal(right) {
                exact_double(left);
            } else if exponent(right) && !literal(left) {
                exact_double(right);
            }
        }
        Expr::Case { conditions, else_result, .. } => {
            let mut values: Vec<&mut Expr> = conditions.iter_mut().map(|c| &mut c.result).collect();
            if let Some(e) = else_result {
                values.push(e);
            }
            if values.iter().any(|x| !literal(x)) {
                values.iter_mut().for_each(|x| double_if_decimal(x));
            }
        }
        _ => {}
    }
}

/// A zone as the `Tz` parser reads it: an offset's sign turned, because PostgreSQL reads a
/// numeric zone as POSIX does (`+02:00` is west of UTC) and the parser as ISO 8601 does.
fn posix_zone(zone: &str) -> String {
    let zone = zone.trim();
    match zone.as_bytes().first() {
        Some(b'+') => format!("-{}", &zone[1..]),
        Some(b'-') => format!("+{}", &zone[1..]),
        _ => zone.to_string(),
    }
}

/// The function PostgreSQL's `AT TIME ZONE` is written as ([`AtTimeZone`]).
const AT_TIME_ZONE: &str = "pg_at_time_zone";

/// `t AT TIME ZONE z` as [`AtTimeZone`]: DataFusion's keeps the instant and labels it with
/// the zone, where PostgreSQL answers the wall-clock time there.
fn at_time_zone(e: &mut Expr) {
    if let Expr::AtTimeZone { timestamp, time_zone } = e {
        *e = call(AT_TIME_ZONE, [(**timestamp).clone(), (**time_zone).clone()]);
    }
}

/// The function an interval times a number is written as ([`interval_mul`]).
const INTERVAL_MUL: &str = "pg_interval_mul";

/// `DATE '…' ± INTERVAL '…'` with the date as a `timestamp`: PostgreSQL's sum is a
/// timestamp (`2024-02-29 00:00:00`, and an hour before a date is the day before), where
/// DataFusion's is a date.
fn date_plus_interval(e: &mut Expr) {
    let Expr::BinaryOp { left, op: ast::BinaryOperator::Plus | ast::BinaryOperator::Minus, right } = e else {
        return;
    };
    let date = |x: &Expr| match x {
        Expr::TypedString(t) => t.data_type == ast::DataType::Date,
        Expr::Cast { data_type: ast::DataType::Date, .. } => true,
        _ => false,
    };
    let interval = |x: &Expr| {
        matches!(x, Expr::Interval(_) | Expr::Cast { data_type: ast::DataType::Interval { .. }, .. })
    };
    let as_timestamp = |x: &mut Box<Expr>| {
        let inner = std::mem::replace(x.as_mut(), Expr::value(Value::Null));
        **x = Expr::Cast {
            kind: CastKind::Cast,
            expr: Box::new(inner),
            data_type: ast::DataType::Timestamp(None, ast::TimezoneInfo::None),
            format: None,
        };
    };
    if date(left) && interval(right) {
        as_timestamp(left);
    } else if interval(left) && date(right) {
        as_timestamp(right);
    }
}

/// `INTERVAL '…' * n` (or `n * INTERVAL '…'`) as [`interval_mul`], and `INTERVAL '…' / n` as
/// the product by `1 / n`: DataFusion neither multiplies nor divides intervals.
fn interval_times(e: &mut Expr) {
    if let Expr::BinaryOp { left, op: ast::BinaryOperator::Divide, right } = e {
        if is_interval(left) {
            let one = Expr::value(Value::SingleQuotedString("1".into()));
            let mut one = one;
            as_double(&mut one);
            let reciprocal = Expr::BinaryOp {
                left: Box::new(one),
                op: ast::BinaryOperator::Divide,
                right: Box::new(std::mem::replace(right.as_mut(), Expr::value(Value::Null))),
            };
            *e = call(INTERVAL_MUL, [(**left).clone(), Expr::Nested(Box::new(reciprocal))]);
        }
        return;
    }
    let Expr::BinaryOp { left, op: ast::BinaryOperator::Multiply, right } = e else { return };
    let (interval, factor) = match (is_interval(left), is_interval(right)) {
        (true, false) => ((**left).clone(), (**right).clone()),
        (false, true) => ((**right).clone(), (**left).clone()),
        _ => return,
    };
    *e = call(INTERVAL_MUL, [interval, factor]);
}

/// Whether `e` is an interval by its form: an interval literal or cast, a product already
/// rewritten (`INTERVAL '1 hour' * 2 * 3`), a difference of two times (`max(ts) - min(ts)`),
/// or what the interval functions answer.
fn is_interval(e: &Expr) -> bool {
    match e {
        Expr::Interval(_) | Expr::Cast { data_type: ast::DataType::Interval { .. }, .. } => true,
        Expr::Nested(inner) => is_interval(inner),
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            [
                INTERVAL_MUL,
                super::datetime::TIME_DIFFERENCE,
                "age",
                "justify_hours",
                "justify_days",
                "justify_interval",
            ]
            .contains(&name.as_str())
        }
        _ => false,
    }
}

/// PostgreSQL's `interval * float8`: each field scaled, a month's fraction carried into days
/// (30 a month) and a day's into time (24 hours a day), to the microsecond.
fn interval_mul(args: &[ArrayRef]) -> Result<ArrayRef> {
    let spans = args[0].as_primitive::<IntervalMonthDayNanoType>();
    let factors = args[1].as_primitive::<Float64Type>();
    let out: IntervalMonthDayNanoArray = spans
        .iter()
        .zip(factors.iter())
        .map(|(span, factor)| {
            let (Some(span), Some(f)) = (span, factor) else { return Ok(None) };
            // as PostgreSQL, a product past the interval's range is an error, not a wrap
            let out_of_range = || super::missing::fail("22008", "interval out of range");
            let (months, days) = (f64::from(span.months) * f, f64::from(span.days) * f);
            let limit = f64::from(i32::MAX);
            if !f.is_finite() || months.abs() > limit || days.abs() > limit {
                return out_of_range();
            }
            let month = months as i32;
            let mut day = days as i64;
            // to the microsecond, as PostgreSQL rounds its remainders
            let round = |x: f64| (x * 1e6).round_ties_even() / 1e6;
            let month_days = round((months - f64::from(month)) * 30.0);
            let mut seconds = round((days - day as f64 + month_days - month_days.trunc()) * 86_400.0);
            if seconds.abs() >= 86_400.0 {
                day += (seconds / 86_400.0) as i64;
                seconds -= (seconds / 86_400.0).trunc() * 86_400.0;
            }
            day += month_days as i64;
            let micros = (span.nanoseconds as f64 / 1000.0 * f + seconds * 1e6).round_ties_even();
            match i32::try_from(day) {
                Ok(day) if micros.abs() < 9.2e15 => {
                    Ok(Some(IntervalMonthDayNano::new(month, day, micros as i64 * 1000)))
                }
                _ => out_of_range(),
            }
        })
        .collect::<Result<_>>()?;
    Ok(Arc::new(out))
}

/// PostgreSQL's `AT TIME ZONE`: a `timestamptz` becomes the `timestamp` (no zone) a clock
/// in the zone shows at that instant; a `timestamp` becomes the `timestamptz` of the instant
/// a clock in the zone shows it (the later one, standard time, where clocks go back). Zones
/// are IANA names (`Europe/Paris`) or offsets, which PostgreSQL reads as POSIX does:
/// `'+02:00'` is two hours west of UTC.
#[derive(Debug, PartialEq, Eq, Hash)]
struct AtTimeZone {
    signature: Signature,
}

impl AtTimeZone {
    fn new() -> Self {
        AtTimeZone { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for AtTimeZone {
    fn name(&self) -> &str {
        AT_TIME_ZONE
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [DataType::Timestamp(_, zone), z]
                if z.is_null() || matches!(z, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8) =>
            {
                Ok(vec![DataType::Timestamp(TimeUnit::Millisecond, zone.clone()), DataType::Utf8])
            }
            _ => plan_err!("AT TIME ZONE takes a timestamp and a time zone's name"),
        }
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(match args.first() {
            // a timestamptz gives a timestamp, a timestamp a timestamptz (in UTC)
            Some(DataType::Timestamp(_, Some(_))) => DataType::Timestamp(TimeUnit::Millisecond, None),
            _ => DataType::Timestamp(TimeUnit::Millisecond, Some(super::tables::UTC.into())),
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use chrono::{Offset, TimeZone};
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let times = arrays[0].as_primitive::<TimestampMillisecondType>();
        let zones = arrays[1].as_string::<i32>();
        let aware = matches!(arrays[0].data_type(), DataType::Timestamp(_, Some(_)));
        let mut out = Vec::with_capacity(times.len());
        for i in 0..times.len() {
            if times.is_null(i) || zones.is_null(i) {
                out.push(None);
                continue;
            }
            let zone: Tz = match posix_zone(zones.value(i)).parse() {
                Ok(zone) => zone,
                Err(_) => return exec_err!("time zone \"{}\" not recognized", zones.value(i)),
            };
            let ms = times.value(i);
            let shifted = if aware {
                let Some(instant) = chrono::DateTime::from_timestamp_millis(ms) else {
                    return exec_err!("timestamp out of range");
                };
                let offset = zone.offset_from_utc_datetime(&instant.naive_utc()).fix().local_minus_utc();
                ms.saturating_add(i64::from(offset) * 1000)
            } else {
                let Some(local) = chrono::DateTime::from_timestamp_millis(ms).map(|t| t.naive_utc()) else {
                    return exec_err!("timestamp out of range");
                };
                // an hour that clocks go back over is read as standard time, the later instant
                match zone.from_local_datetime(&local).latest() {
                    Some(instant) => instant.timestamp_millis(),
                    // a time that clocks skip: as PostgreSQL, the offset from before the skip
                    None => {
                        let before = local - chrono::Duration::hours(1);
                        let offset = zone
                            .offset_from_local_datetime(&before)
                            .earliest()
                            .map(|o| o.fix().local_minus_utc());
                        ms.saturating_sub(i64::from(offset.unwrap_or(0)) * 1000)
                    }
                }
            };
            out.push(Some(shifted));
        }
        let array = TimestampMillisecondArray::from(out);
        let array: ArrayRef =
            if aware { Arc::new(array) } else { Arc::new(array.with_timezone(super::tables::UTC)) };
        udf::answer(&args.args, array)
    }
}

/// `EXTRACT(field FROM t)` as PostgreSQL answers it, a `numeric`: of scale 6 for `epoch` and
/// `second` (microseconds), 3 for `milliseconds`, 0 for the other fields. DataFusion's is a
/// double (`540` where PostgreSQL writes `540.000000`); `date_part` stays a double in both.
fn extract_numeric(e: &mut Expr) {
    let Expr::Extract { field, expr, .. } = e else { return };
    let name = field.to_string().to_ascii_lowercase();
    let scale = match name.as_str() {
        "epoch" | "second" | "seconds" => 6,
        "millisecond" | "milliseconds" => 3,
        _ => 0,
    };
    let function =
        if super::datetime::sub_second_field(&name) { super::datetime::DATE_PART } else { "date_part" };
    let part = call(function, [Expr::value(Value::SingleQuotedString(name)), (**expr).clone()]);
    *e = Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(part),
        data_type: ast::DataType::Decimal(ast::ExactNumberInfo::PrecisionAndScale(38, scale)),
        format: None,
    };
}

/// `date_part('second', t)` (and the other [`super::datetime::sub_second_field`]s) as
/// [`super::datetime::DATE_PART`], which keeps the fraction of a second.
fn date_part_fraction(e: &mut Expr) {
    let Expr::Function(f) = e else { return };
    if !f.name.to_string().eq_ignore_ascii_case("date_part") {
        return;
    }
    let FunctionArguments::List(list) = &f.args else { return };
    let Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(Expr::Value(v)))) = list.args.first()
    else {
        return;
    };
    let Value::SingleQuotedString(field) = &v.value else { return };
    if super::datetime::sub_second_field(&field.to_ascii_lowercase()) {
        f.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(super::datetime::DATE_PART))]);
    }
}

/// `to_char(…)` as [`super::datetime::TO_CHAR`], PostgreSQL's templates.
fn to_char_pattern(e: &mut Expr) {
    let Expr::Function(f) = e else { return };
    if f.name.to_string().eq_ignore_ascii_case("to_char") {
        f.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(super::datetime::TO_CHAR))]);
    }
}

/// The arguments of a call when all are plain expressions (no names, no `*`).
pub(super) fn plain_arguments(f: &Function) -> Option<Vec<&Expr>> {
    let FunctionArguments::List(list) = &f.args else { return None };
    list.args
        .iter()
        .map(|a| match a {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => Some(x),
            _ => None,
        })
        .collect()
}

/// Whether `e` is the column `name` of any table (`ts`, `c.ts`).
pub(super) fn is_column(e: &Expr, name: &str) -> bool {
    match e {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case(name),
        Expr::CompoundIdentifier(parts) => parts.last().is_some_and(|i| i.value.eq_ignore_ascii_case(name)),
        _ => false,
    }
}
/// A call of the function `name` with `args`.
pub(super) fn call(name: &str, args: impl IntoIterator<Item = Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(a)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// `x::int` → `pg_rint(x)::int` (PostgreSQL rounds a double to the nearest integer, halves
/// to even, where Arrow truncates); `x::text` → `pg_float8_text(x)` (PostgreSQL writes
/// `20`, Arrow `20.0`).
fn cast(e: &mut Expr) {
    let Expr::Cast { kind: CastKind::Cast | CastKind::DoubleColon, expr, data_type, .. } = e else { return };
    use ast::DataType as T;
    match data_type {
        T::Int(_)
        | T::Integer(_)
        | T::BigInt(_)
        | T::SmallInt(_)
        | T::Int2(_)
        | T::Int4(_)
        | T::Int8(_)
        | T::Int16
        | T::Int32
        | T::Int64 => {
            let inner = std::mem::replace(expr.as_mut(), Expr::value(Value::Null));
            **expr = call(RINT, [inner]);
        }
        T::Text => {
            let inner = std::mem::replace(expr.as_mut(), Expr::value(Value::Null));
            *e = call(FLOAT8_TEXT, [inner]);
        }
        // a number written in the statement is `numeric` already, with the scale it is
        // written with (`1.50`), where DataFusion's cast to unconstrained `numeric` gives
        // every value ten decimals
        T::Numeric(ast::ExactNumberInfo::None) | T::Decimal(ast::ExactNumberInfo::None) => {
            if let Some(literal) = numeric_literal(expr) {
                *e = literal;
            }
        }
        // a number with an exponent beyond a decimal's 38 digits (`1e308::float8`), which
        // DataFusion reads as a decimal first, is read as the double it is cast to
        T::DoublePrecision | T::Float8 | T::Float64 | T::Double(_) => {
            if let Expr::Value(v) = expr.as_mut() {
                if let Value::Number(n, _) = &v.value {
                    if n.contains(['e', 'E']) {
                        v.value = Value::SingleQuotedString(n.clone());
                    }
                }
            }
        }
        T::Interval { .. } => {
            if let Expr::Value(v) = expr.as_mut() {
                if let Value::SingleQuotedString(text) = &mut v.value {
                    *text = interval_clock(text);
                }
            }
        }
        _ => {}
    }
}

/// The operands that `||` beside a string literal, `concat`, `concat_ws` and `format` turn
/// into text, written as PostgreSQL writes them (`pg_float8_text`: a double's shortest
/// digits, a timestamp's `2026-11-25 17:48:00+00`) where DataFusion's implicit cast writes
/// Arrow's (`20.0`, `2026-11-25T17:48:00Z`). Literals are left as they are.
fn text_operands(e: &mut Expr) {
    let literal = |x: &Expr| matches!(x, Expr::Value(_));
    let as_text = |x: &mut Expr| {
        if !literal(x) {
            let inner = std::mem::replace(x, Expr::value(Value::Null));
            *x = call(FLOAT8_TEXT, [inner]);
        }
    };
    let string = |x: &Expr| matches!(x, Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_)));
    match e {
        Expr::BinaryOp { left, op: ast::BinaryOperator::StringConcat, right } => {
            if string(left) {
                as_text(right);
            } else if string(right) {
                as_text(left);
            }
        }
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            // `concat_ws`'s separator and `format`'s template are text already
            let skip = match name.as_str() {
                "concat" => 0,
                "concat_ws" | "format" => 1,
                _ => return,
            };
            if let FunctionArguments::List(list) = &mut f.args {
                for arg in list.args.iter_mut().skip(skip) {
                    if let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) = arg {
                        as_text(x);
                    }
                }
            }
        }
        _ => {}
    }
}

/// `… a JOIN b USING (ts) WHERE ts > …`: the joined column named in `WHERE` without a table
/// is the first table's, as it is in PostgreSQL for an inner or left join (the two tables'
/// values are equal, or the right's missing); DataFusion finds the name ambiguous there.
/// Subqueries of the condition keep their own names.
fn qualify_using_columns(select: &mut ast::Select) {
    let Some(selection) = select.selection.as_mut() else { return };
    let mut qualified: Vec<(String, Ident)> = Vec::new();
    for from in &select.from {
        let ast::TableFactor::Table { name, alias, .. } = &from.relation else { continue };
        let Some(first) =
            alias.as_ref().map(|a| a.name.clone()).or_else(|| name.0.last()?.as_ident().cloned())
        else {
            continue;
        };
        for join in &from.joins {
            use ast::JoinOperator as J;
            let (J::Join(ast::JoinConstraint::Using(columns))
            | J::Inner(ast::JoinConstraint::Using(columns))
            | J::Left(ast::JoinConstraint::Using(columns))
            | J::LeftOuter(ast::JoinConstraint::Using(columns))) = &join.join_operator
            else {
                continue;
            };
            for column in columns {
                if let Some(id) = column.0.last().and_then(|p| p.as_ident()) {
                    qualified.push((id.value.clone(), first.clone()));
                }
            }
        }
    }
    if qualified.is_empty() {
        return;
    }
    struct Qualify<'a> {
        columns: &'a [(String, Ident)],
        depth: usize,
    }
    impl ast::VisitorMut for Qualify<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if self.depth == 0 {
                if let Expr::Identifier(id) = e {
                    if let Some((_, table)) = self.columns.iter().find(|(c, _)| *c == id.value) {
                        *e = Expr::CompoundIdentifier(vec![table.clone(), id.clone()]);
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(selection, &mut Qualify { columns: &qualified, depth: 0 });
}

/// `INTERVAL '…'` with PostgreSQL's clock notation spelled in units ([`interval_clock`]).
fn interval_literal(e: &mut Expr) {
    let Expr::Interval(interval) = e else { return };
    if let Expr::Value(v) = interval.value.as_mut() {
        if let Value::SingleQuotedString(text) = &mut v.value {
            *text = interval_clock(text);
        }
    }
}

/// Why the statement is refused, when it casts to what the engine holds otherwise than
/// PostgreSQL: an expression cast to `numeric` without a precision (PostgreSQL keeps each
/// value's own decimals, `1.75` and `8206154752`, where the engine's decimal column has ten
/// for every value), unless it is rounded (`round(value::numeric, 2)`, the usual way); and
/// `real` (PostgreSQL writes a `float4`'s shortest digits, the engine a double's).
fn answered_otherwise(statements: &[Statement]) -> Option<String> {
    let refusal = |e: &Expr| {
        if let Some(why) = numeric_power(e) {
            return Some(why);
        }
        let Expr::Cast { data_type, expr, .. } = e else { return None };
        use ast::DataType as T;
        match data_type {
            // a string literal that is no number is PostgreSQL's error (22P02) in the engine
            T::Numeric(ast::ExactNumberInfo::None) | T::Decimal(ast::ExactNumberInfo::None)
                if !matches!(expr.as_ref(), Expr::Value(_)) && numeric_literal(expr).is_none() =>
            {
                Some(format!(
                    "{e} is not supported: a cast to numeric without a precision keeps each value's decimals in PostgreSQL; round it (round({expr}::numeric, 2)) or give the precision ({expr}::numeric(20, 6))"
                ))
            }
            T::Real | T::Float4 => Some(format!("{e} is not supported: real is held as double precision; cast to float8")),
            _ => None,
        }
    };
    statements.iter().find_map(|statement| {
        let mut why = None;
        let _ = ast::visit_expressions(statement, |e| match refusal(e) {
            Some(found) => {
                why = Some(found);
                ControlFlow::Break(())
            }
            None => ControlFlow::Continue(()),
        });
        why
    })
}

/// Why `a ^ b` (or `power(a, b)`) is refused, when PostgreSQL computes it in `numeric`: both
/// operands are numbers or `numeric` casts and one has decimals (`2 ^ 0.5`, `2.0 ^ 10`).
/// PostgreSQL's `numeric` power has its own precision (`1.4142135623730950`,
/// `1024.0000000000000000`) where the engine's is a double's.
fn numeric_power(e: &Expr) -> Option<String> {
    let (a, b) = match e {
        Expr::BinaryOp { left, op: ast::BinaryOperator::PGExp, right } => (left.as_ref(), right.as_ref()),
        Expr::Function(f) if ["power", "pow"].iter().any(|n| f.name.to_string().eq_ignore_ascii_case(n)) => {
            let [a, b] = <[&Expr; 2]>::try_from(plain_arguments(f)?).ok()?;
            (a, b)
        }
        _ => return None,
    };
    // whether an operand is a number (`Some`), and one with decimals (`Some(true)`)
    let decimals = |x: &Expr| match x {
        Expr::Cast { data_type: ast::DataType::Numeric(_) | ast::DataType::Decimal(_), .. } => Some(true),
        _ => numeric_literal(x).map(|n| n.to_string().contains('.')),
    };
    match (decimals(a), decimals(b)) {
        (Some(x), Some(y)) if x || y => Some(format!(
            "{e} is not supported: a power of numeric values has PostgreSQL's numeric precision; cast an operand to float8"
        )),
        _ => None,
    }
}

/// `round(x::numeric, n)` (and `trunc`, `floor`, `ceil`): the cast with the engine's own
/// precision written out, since the function sets the decimals the answer shows.
fn rounded_numeric(e: &mut Expr) {
    let Expr::Function(f) = e else { return };
    let name = f.name.to_string().to_ascii_lowercase();
    if !matches!(name.as_str(), "round" | "trunc" | "floor" | "ceil" | "ceiling") {
        return;
    }
    let FunctionArguments::List(list) = &mut f.args else { return };
    let Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(Expr::Cast { data_type, .. }))) =
        list.args.first_mut()
    else {
        return;
    };
    if matches!(
        data_type,
        ast::DataType::Numeric(ast::ExactNumberInfo::None)
            | ast::DataType::Decimal(ast::ExactNumberInfo::None)
    ) {
        *data_type = ast::DataType::Numeric(ast::ExactNumberInfo::PrecisionAndScale(38, 10));
    }
}

/// `x` as a numeric literal, when it is one (`1.50`, `-1.50`, `(-1.50)`) or a string
/// literal of one (`'1.50'`).
fn numeric_literal(x: &Expr) -> Option<Expr> {
    match x {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) if !n.contains(['e', 'E']) => Some(x.clone()),
            Value::SingleQuotedString(t) => {
                let decimal = crate::binary::plain_decimal(t.trim())?;
                let number = Expr::value(Value::Number(decimal.unsigned(), false));
                Some(if decimal.negative {
                    Expr::Nested(Box::new(Expr::UnaryOp {
                        op: ast::UnaryOperator::Minus,
                        expr: Box::new(number),
                    }))
                } else {
                    number
                })
            }
            _ => None,
        },
        Expr::Nested(inner) => numeric_literal(inner),
        Expr::UnaryOp { op: ast::UnaryOperator::Minus, expr } if matches!(expr.as_ref(), Expr::Value(_)) => {
            numeric_literal(expr).map(|_| Expr::Nested(Box::new(x.clone())))
        }
        _ => None,
    }
}

/// An interval's text with PostgreSQL's clock notation (`1 day 02:03:04.5`, `-00:05`) spelled
/// in units, which DataFusion reads (`1 day 2 hours 3 minutes 4.5 seconds`).
pub(super) fn interval_clock(text: &str) -> String {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|word| {
            let (sign, clock) = match word.strip_prefix('-') {
                Some(rest) => ("-", rest),
                None => ("", word.strip_prefix('+').unwrap_or(word)),
            };
            let fields: Vec<&str> = clock.split(':').collect();
            let number = |f: &str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            if fields.len() < 2 || fields.len() > 3 || !fields.iter().all(|f| number(f)) {
                return word.to_string();
            }
            let mut parts =
                vec![format!("{sign}{} hours", fields[0]), format!("{sign}{} minutes", fields[1])];
            if let Some(seconds) = fields.get(2) {
                parts.push(format!("{sign}{seconds} seconds"));
            }
            parts.join(" ")
        })
        .collect();
    words.join(" ")
}

/// Each `ORDER BY <position>` of a `SELECT` written as the expression (or alias) at that
/// position: DataFusion refuses a position that names an expression over the grouping
/// columns (`SELECT upper(job) … GROUP BY job ORDER BY 1`), which PostgreSQL takes.
fn order_by_expressions(query: &mut Query) {
    let SetExpr::Select(select) = query.body.as_ref() else { return };
    let Some(order_by) = query.order_by.as_mut() else { return };
    let OrderByKind::Expressions(items) = &mut order_by.kind else { return };
    for item in items {
        let Expr::Value(v) = &item.expr else { continue };
        let Value::Number(n, _) = &v.value else { continue };
        let Some(selected) = n.parse::<usize>().ok().and_then(|i| select.projection.get(i.wrapping_sub(1)))
        else {
            continue;
        };
        match selected {
            SelectItem::UnnamedExpr(e) => item.expr = e.clone(),
            SelectItem::ExprWithAlias { alias, .. } => item.expr = Expr::Identifier(alias.clone()),
            _ => {}
        }
    }
}

/// The names PostgreSQL gives the columns of `query`: an alias, a column's name, a
/// function's, the type of a cast literal, `case`, or `?column?`. `None` with a `*`.
fn column_names(query: &Query) -> Option<Vec<String>> {
    body_column_names(&query.body)
}

/// [`column_names`] of a query's body.
fn body_column_names(mut body: &SetExpr) -> Option<Vec<String>> {
    // a set operation's columns are named by its first query
    loop {
        match body {
            SetExpr::SetOperation { left, .. } => body = left,
            SetExpr::Query(q) => body = q.body.as_ref(),
            _ => break,
        }
    }
    let SetExpr::Select(select) = body else { return None };
    select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
            SelectItem::UnnamedExpr(e) => Some(expression_name(e)),
            _ => None,
        })
        .collect()
}

/// The name PostgreSQL gives an unnamed select item.
fn expression_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(id) => id.value.clone(),
        Expr::CompoundIdentifier(parts) => {
            parts.last().map_or_else(|| "?column?".into(), |p| p.value.clone())
        }
        Expr::Function(f) => {
            f.name.0.last().and_then(|p| p.as_ident()).map_or_else(|| "?column?".into(), |i| i.value.clone())
        }
        Expr::Cast { expr, data_type, .. } => match expr.as_ref() {
            Expr::Value(_) => type_name(data_type),
            inner => expression_name(inner),
        },
        Expr::Nested(inner) => expression_name(inner),
        Expr::Case { .. } => "case".into(),
        Expr::Extract { .. } => "extract".into(),
        Expr::Substring { .. } => "substring".into(),
        Expr::Trim { .. } => "btrim".into(),
        Expr::Position { .. } => "position".into(),
        Expr::Exists { .. } => "exists".into(),
        Expr::Array(_) => "array".into(),
        Expr::Interval(_) => "interval".into(),
        Expr::TypedString(t) => type_name(&t.data_type),
        _ => "?column?".into(),
    }
}

/// PostgreSQL's internal name of a type, which names a cast literal's column.
fn type_name(t: &ast::DataType) -> String {
    use ast::DataType as T;
    match t {
        T::Int(_) | T::Integer(_) | T::Int4(_) => "int4".into(),
        T::BigInt(_) | T::Int8(_) => "int8".into(),
        T::SmallInt(_) | T::Int2(_) => "int2".into(),
        T::Double(_) | T::DoublePrecision | T::Float8 => "float8".into(),
        T::Real | T::Float4 => "float4".into(),
        T::Boolean | T::Bool => "bool".into(),
        T::Timestamp(_, ast::TimezoneInfo::Tz | ast::TimezoneInfo::WithTimeZone) => "timestamptz".into(),
        T::Timestamp(..) => "timestamp".into(),
        other => other.to_string().to_lowercase(),
    }
}

/// The name of [`rint`].
const RINT: &str = "pg_rint";
/// The name of [`divisor`].
const DIVISOR: &str = "pg_divisor";
/// The name of the function that writes a value as PostgreSQL's text ([`udf::text`]).
const FLOAT8_TEXT: &str = "pg_float8_text";

/// `pg_rint`: the nearest integer of a double, halves to even (`rint`), and of an exact
/// decimal, halves away from zero, as PostgreSQL's casts to integer types round; other values
/// as they are. Only the rewrite of casts calls it.
fn rint(args: &[ArrayRef]) -> Result<ArrayRef> {
    let array = &args[0];
    Ok(match array.data_type() {
        DataType::Float64 => {
            Arc::new(array.as_primitive::<Float64Type>().unary::<_, Float64Type>(f64::round_ties_even))
        }
        // of a negative scale (`3e9`), a whole number already
        DataType::Decimal128(p, s) if *s > 0 => {
            let scale = 10i128.pow(u32::from(*s as u8));
            let rounded: Decimal128Array = array
                .as_primitive::<Decimal128Type>()
                .unary::<_, Decimal128Type>(|v| round_decimal(v, scale) * scale);
            Arc::new(rounded.with_precision_and_scale(*p, *s)?)
        }
        _ => Arc::clone(array),
    })
}

/// `pg_divisor`: a divisor as it is, failing when it is a zero number. Only the rewrite of
/// divisions calls it.
fn divisor(args: &[ArrayRef]) -> Result<ArrayRef> {
    let array = &args[0];
    // a row whose dividend is NULL divides nothing
    let divides = |i: usize| args.get(1).is_none_or(|dividend| dividend.is_valid(i));
    fn zero_at<T: datafusion::arrow::datatypes::ArrowPrimitiveType>(
        array: &ArrayRef,
        zero: T::Native,
        divides: impl Fn(usize) -> bool,
    ) -> bool
    where
        T::Native: PartialEq,
    {
        array.as_primitive::<T>().iter().enumerate().any(|(i, v)| v == Some(zero) && divides(i))
    }
    let zero = match array.data_type() {
        DataType::Float64 => zero_at::<Float64Type>(array, 0.0, divides),
        DataType::Decimal128(..) => zero_at::<Decimal128Type>(array, 0, divides),
        DataType::Int64 => zero_at::<Int64Type>(array, 0, divides),
        DataType::Int32 => zero_at::<Int32Type>(array, 0, divides),
        _ => false,
    };
    if zero {
        return exec_err!("Divide by zero error");
    }
    Ok(Arc::clone(array))
}

/// `v / scale` rounded to the nearest integer, halves away from zero.
fn round_decimal(v: i128, scale: i128) -> i128 {
    let (q, r) = (v / scale, v % scale);
    // r.abs() * 2 >= scale, without doubling near i128's end
    if r.abs() >= scale - r.abs() {
        q + v.signum()
    } else {
        q
    }
}

/// How one of PostgreSQL's rounding functions takes a number to a whole one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Rounding {
    /// `round`: to the nearest; a double's halves to even, a `numeric`'s away from zero.
    Round,
    /// `trunc`: toward zero.
    Trunc,
    /// `floor`: down.
    Floor,
    /// `ceil` (`ceiling`): up.
    Ceil,
}

impl Rounding {
    /// `v / down` taken to a whole number this way.
    fn whole(self, v: i128, down: i128) -> i128 {
        let (q, r) = (v / down, v % down);
        match self {
            Rounding::Round => round_decimal(v, down),
            Rounding::Trunc => q,
            Rounding::Floor if r < 0 => q - 1,
            Rounding::Ceil if r > 0 => q + 1,
            Rounding::Floor | Rounding::Ceil => q,
        }
    }

    fn double(self, v: f64) -> f64 {
        match self {
            Rounding::Round => v.round_ties_even(),
            Rounding::Trunc => v.trunc(),
            Rounding::Floor => v.floor(),
            Rounding::Ceil => v.ceil(),
        }
    }
}

/// PostgreSQL's `round`, `trunc`, `floor` and `ceil` (`ceiling`): of a `double precision`, a
/// double; of a `numeric`, a `numeric` of scale 0, or, for `round(numeric, n)` and
/// `trunc(numeric, n)`, of `n` decimals (a negative `n` rounds to a multiple of 10^-n). There
/// is no `round(double precision, integer)`. DataFusion's keep a `numeric`'s scale (`2.0`
/// for `trunc(2.7)`, where PostgreSQL answers `2`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Rounder {
    rounding: Rounding,
    signature: Signature,
    aliases: Vec<String>,
}

impl Rounder {
    fn new(rounding: Rounding) -> Self {
        let aliases = if rounding == Rounding::Ceil { vec!["ceiling".to_string()] } else { Vec::new() };
        Rounder { rounding, signature: Signature::user_defined(Volatility::Immutable), aliases }
    }

    /// Whether it takes a number of decimals.
    fn takes_decimals(&self) -> bool {
        matches!(self.rounding, Rounding::Round | Rounding::Trunc)
    }
}

/// The most digits of a `numeric` the engine holds.
const NUMERIC_PRECISION: u8 = 38;

impl ScalarUDFImpl for Rounder {
    fn name(&self) -> &str {
        match self.rounding {
            Rounding::Round => "round",
            Rounding::Trunc => "trunc",
            Rounding::Floor => "floor",
            Rounding::Ceil => "ceil",
        }
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        match args {
            [t] if t.is_integer() || t.is_floating() || t.is_null() => Ok(vec![DataType::Float64]),
            [t @ DataType::Decimal128(..)] => Ok(vec![t.clone()]),
            [t, n] if self.takes_decimals() && (n.is_integer() || n.is_null()) => match t {
                DataType::Decimal128(..) => Ok(vec![t.clone(), DataType::Int64]),
                t if t.is_integer() => Ok(vec![DataType::Decimal128(NUMERIC_PRECISION, 0), DataType::Int64]),
                _ => plan_err!("Invalid function '{name}(double precision, integer)'"),
            },
            _ => plan_err!("Invalid function '{name}'"),
        }
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        exec_err!("{}'s type comes from its arguments", self.name())
    }
    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        let t = match (args.arg_fields.first().map(|f| f.data_type()), args.scalar_arguments.get(1)) {
            (Some(DataType::Float64), None) => DataType::Float64,
            (Some(DataType::Decimal128(p, _)), None) => DataType::Decimal128(*p, 0),
            (Some(DataType::Decimal128(..)), Some(Some(ScalarValue::Int64(Some(n)))))
                if (-20..=20).contains(n) =>
            {
                DataType::Decimal128(NUMERIC_PRECISION, (*n).max(0) as i8)
            }
            _ => return plan_err!("{}(numeric, n) takes a constant n from -20 to 20", self.name()),
        };
        Ok(Arc::new(datafusion::arrow::datatypes::Field::new(self.name(), t, true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        let rounding = self.rounding;
        let out: ArrayRef = match (array.data_type(), args.return_type()) {
            (DataType::Float64, _) => {
                Arc::new(array.as_primitive::<Float64Type>().unary::<_, Float64Type>(|v| rounding.double(v)))
            }
            (DataType::Decimal128(_, s), DataType::Decimal128(p, to)) => {
                // `round(x, -n)`: to a multiple of 10^n, of scale 0
                let tens = match args.args.get(1) {
                    Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(n)))) if *n < 0 => {
                        n.unsigned_abs() as u32
                    }
                    _ => 0,
                };
                let (s, to) = (i32::from(*s), i32::from(*to));
                let decimals: &Decimal128Array = array.as_primitive::<Decimal128Type>();
                let overflow = || ArrowError::ComputeError("numeric field overflow".into());
                let rounded: Decimal128Array = if to >= s && tens == 0 {
                    let up = 10i128.pow((to - s) as u32);
                    decimals.try_unary::<_, Decimal128Type, _>(|v| v.checked_mul(up).ok_or_else(overflow))?
                } else {
                    let up = 10i128.pow(tens);
                    match 10i128.checked_pow((s - to) as u32 + tens) {
                        Some(down) => decimals.try_unary::<_, Decimal128Type, _>(|v| {
                            rounding.whole(v, down).checked_mul(up).ok_or_else(overflow)
                        })?,
                        // a unit past every digit a decimal holds: 0, or one unit for the
                        // floor of a negative number and the ceiling of a positive one
                        None => decimals.try_unary::<_, Decimal128Type, _>(|v| {
                            let whole = match rounding {
                                Rounding::Floor if v < 0 => -1,
                                Rounding::Ceil if v > 0 => 1,
                                _ => 0,
                            };
                            (whole as i128).checked_mul(up).ok_or_else(overflow)
                        })?,
                    }
                };
                Arc::new(rounded.with_precision_and_scale(*p, to as i8)?)
            }
            (t, _) => return exec_err!("{} of {t}", self.name()),
        };
        udf::answer(&args.args, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_notation_in_intervals_is_spelled_in_units() {
        assert_eq!(interval_clock("1 day 02:03:04.5"), "1 day 02 hours 03 minutes 04.5 seconds");
        assert_eq!(interval_clock("-00:05"), "-00 hours -05 minutes");
        assert_eq!(interval_clock("-1 days +02:00:00"), "-1 days 02 hours 00 minutes 00 seconds");
        assert_eq!(interval_clock("5 minutes"), "5 minutes");
        assert_eq!(interval_clock("1:2:3:4"), "1:2:3:4");
    }

    #[test]
    fn casts_answered_otherwise_are_refused_unless_rounded() {
        let refused = |sql: &str| rewrite(sql).is_err();
        assert!(refused("SELECT value::numeric FROM m"));
        assert!(refused("SELECT sum(value::numeric) FROM m"));
        assert!(refused("SELECT value::real FROM m"));
        assert!(!refused("SELECT round(avg(value)::numeric, 3), round(value::numeric, 1) FROM m"));
        assert!(!refused("SELECT value::numeric(12, 2), '1.5'::numeric FROM m"));
    }

    #[test]
    fn a_number_cast_to_unconstrained_numeric_keeps_its_written_scale() {
        let rewritten = |sql: &str| rewrite(sql).unwrap().sql;
        assert_eq!(
            rewritten("SELECT '1.50'::numeric, (-1.25)::numeric, 2::numeric(5, 2)"),
            "SELECT 1.50, (-1.25), 2::NUMERIC(5,2)"
        );
        assert_eq!(rewritten("SELECT '-0.5'::numeric, 'x'::numeric"), "SELECT (-0.5), 'x'::NUMERIC");
    }

    #[test]
    fn unnamed_columns_are_named_as_postgresql_names_them() {
        let names = |sql: &str| match crate::compile::parse(sql).unwrap().pop() {
            Some(Statement::Query(q)) => column_names(&q),
            _ => None,
        };
        assert_eq!(
            names("SELECT count(*), c.job, value::int, '1'::int, 1 + 2, CASE WHEN true THEN 1 END, x AS y FROM t c"),
            Some(vec!["count", "job", "value", "int4", "?column?", "case", "y"].into_iter().map(String::from).collect())
        );
        assert_eq!(names("SELECT * FROM t"), None);
    }

    #[test]
    fn casts_to_integers_round_and_casts_to_text_write_doubles_as_postgresql() {
        let sql = rewrite("SELECT value::int, CAST(value AS text) FROM t ORDER BY 1").unwrap().sql;
        assert_eq!(
            sql,
            "SELECT pg_rint(value)::INT, pg_float8_text(value) FROM t ORDER BY pg_rint(value)::INT"
        );
        // the dividend too, so that NULL / 0 is NULL; not one that runs a subquery again
        let sql = rewrite("SELECT a / b FROM t").unwrap().sql;
        assert_eq!(sql, "SELECT a / pg_divisor(b, a) FROM t");
        let sql = rewrite("SELECT (SELECT max(a) FROM t) / b FROM t").unwrap().sql;
        assert_eq!(sql, "SELECT (SELECT max(a) FROM t) / pg_divisor(b) FROM t");
        assert_eq!(round_decimal(25, 10), 3);
        assert_eq!(round_decimal(-25, 10), -3);
        assert_eq!(round_decimal(24, 10), 2);
        assert_eq!(Rounding::Floor.whole(-25, 10), -3);
        assert_eq!(Rounding::Ceil.whole(21, 10), 3);
        assert_eq!(Rounding::Ceil.whole(-29, 10), -2);
        assert_eq!(Rounding::Trunc.whole(-29, 10), -2);
    }
}
