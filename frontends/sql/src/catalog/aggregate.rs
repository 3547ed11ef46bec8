//! Grouping and the aggregate functions the interpreter computes over a group's rows.

use std::cmp::Ordering;

use sqlparser::ast::{self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem};

use super::expr::eval;
use super::{split, unsupported, Catalog, Scope, V};
use crate::exec::ExecError;

/// The aggregate functions the interpreter computes over a group's rows.
const AGGREGATES: [&str; 8] = ["count", "sum", "avg", "min", "max", "array_agg", "bool_and", "bool_or"];

fn is_aggregate_call(e: &Expr) -> bool {
    matches!(e, Expr::Function(f) if f.over.is_none() && AGGREGATES.contains(&split(&f.name).1.as_str()))
}

/// Every aggregate call in `e` (not inside another).
fn aggregate_calls<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        e if is_aggregate_call(e) && !out.contains(&e) => out.push(e),
        e if is_aggregate_call(e) => {}
        Expr::BinaryOp { left, right, .. } => {
            aggregate_calls(left, out);
            aggregate_calls(right, out);
        }
        Expr::Nested(x) | Expr::UnaryOp { expr: x, .. } | Expr::Cast { expr: x, .. } => {
            aggregate_calls(x, out)
        }
        Expr::Function(f) => {
            if let FunctionArguments::List(list) = &f.args {
                for a in &list.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) = a {
                        aggregate_calls(x, out);
                    }
                }
            }
        }
        _ => {}
    }
}

/// A grouped `SELECT`'s `GROUP BY` expressions and the aggregate calls of its select list
/// and `HAVING`.
type Grouped<'s> = (Vec<Expr>, Vec<&'s Expr>);

/// The `GROUP BY` expressions of a grouped `SELECT` (positions and output names stand for
/// the select list's expressions) and its aggregate calls, or `None` when it neither groups
/// nor aggregates.
pub(super) fn grouping(select: &ast::Select) -> Result<Option<Grouped<'_>>, ExecError> {
    let ast::GroupByExpr::Expressions(exprs, modifiers) = &select.group_by else {
        return Err(unsupported("GROUP BY ALL"));
    };
    if !modifiers.is_empty() {
        return Err(unsupported("GROUP BY modifiers"));
    }
    let mut calls = Vec::new();
    for item in &select.projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            aggregate_calls(e, &mut calls);
        }
    }
    if let Some(h) = &select.having {
        aggregate_calls(h, &mut calls);
    }
    if exprs.is_empty() && calls.is_empty() {
        return Ok(None);
    }
    let item_expr = |i: usize| match select.projection.get(i) {
        Some(SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) => Some(e.clone()),
        _ => None,
    };
    let keys = exprs
        .iter()
        .map(|e| match e {
            Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => {
                    n.parse::<usize>().ok().and_then(|p| item_expr(p.wrapping_sub(1))).ok_or_else(|| {
                        ExecError::Catalog(format!("GROUP BY position {n} is not in the select list"))
                    })
                }
                _ => Ok(e.clone()),
            },
            Expr::Identifier(id) => Ok(select
                .projection
                .iter()
                .find_map(|item| match item {
                    SelectItem::ExprWithAlias { expr, alias } if alias.value == id.value => {
                        Some(expr.clone())
                    }
                    _ => None,
                })
                .unwrap_or_else(|| e.clone())),
            e => Ok(e.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((keys, calls)))
}

/// Whether `e` reads columns only through the `GROUP BY` expressions and aggregate calls.
fn grouped_ok(e: &Expr, keys: &[Expr]) -> bool {
    if keys.contains(e) || is_aggregate_call(e) {
        return true;
    }
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => false,
        Expr::BinaryOp { left, right, .. } => grouped_ok(left, keys) && grouped_ok(right, keys),
        Expr::Nested(x) | Expr::UnaryOp { expr: x, .. } | Expr::Cast { expr: x, .. } => grouped_ok(x, keys),
        Expr::Function(f) => match &f.args {
            FunctionArguments::List(list) => list.args.iter().all(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => grouped_ok(x, keys),
                _ => true,
            }),
            _ => true,
        },
        _ => true,
    }
}

/// A group of a grouped `SELECT`: its first row and its aggregate calls' values.
pub(super) type Group = (Vec<V>, Vec<(Expr, V)>);

/// The groups of `rows` by `keys` in the order they first appear (one group of no rows when
/// the select aggregates without `GROUP BY`, as SQL has it), each as its first row and its
/// aggregates' values, those that `HAVING` keeps.
pub(super) fn groups(
    select: &ast::Select,
    keys: &[Expr],
    calls: &[&Expr],
    (columns, empty): (&[(String, String)], &[String]),
    rows: Vec<Vec<V>>,
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<Vec<Group>, ExecError> {
    for item in &select.projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            if !grouped_ok(e, keys) {
                return Err(ExecError::Catalog(format!(
                    "{e} must appear in the GROUP BY clause or be used in an aggregate function"
                )));
            }
        }
    }
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut grouped: Vec<Vec<Vec<V>>> = Vec::new();
    for row in rows {
        let scope = Scope { columns, empty, row: &row, outer, aggregates: &[] };
        let key = keys.iter().map(|k| eval(k, &scope, catalog)).collect::<Result<Vec<_>, _>>()?;
        let at = *index.entry(format!("{key:?}")).or_insert_with(|| {
            grouped.push(Vec::new());
            grouped.len() - 1
        });
        grouped[at].push(row);
    }
    if grouped.is_empty() && keys.is_empty() {
        grouped.push(Vec::new());
    }
    let mut out = Vec::with_capacity(grouped.len());
    for members in grouped {
        let mut values = Vec::with_capacity(calls.len());
        for &call in calls {
            values.push((call.clone(), aggregate(call, &members, (columns, empty), catalog, outer)?));
        }
        let first = members.into_iter().next().unwrap_or_else(|| vec![V::Null; columns.len()]);
        if let Some(h) = &select.having {
            let scope = Scope { columns, empty, row: &first, outer, aggregates: &values };
            if !eval(h, &scope, catalog)?.truth() {
                continue;
            }
        }
        out.push((first, values));
    }
    Ok(out)
}

/// An aggregate call's value over a group's rows (`NULL`s skipped, as in SQL; `NULL` over no
/// values but for `count`).
pub(super) fn aggregate(
    call: &Expr,
    rows: &[Vec<V>],
    (columns, empty): (&[(String, String)], &[String]),
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<V, ExecError> {
    let Expr::Function(f) = call else { return Ok(V::Null) };
    let name = split(&f.name).1;
    let FunctionArguments::List(list) = &f.args else { return Err(unsupported(format!("{name}()"))) };
    if list.duplicate_treatment.is_some() || f.filter.is_some() {
        return Err(unsupported(format!("DISTINCT and FILTER in {name}")));
    }
    let arg = match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if name == "count" => None,
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(x))] => Some(x),
        _ => return Err(unsupported(format!("{name} with these arguments"))),
    };
    let Some(arg) = arg else { return Ok(V::Int(rows.len() as i64)) };
    // `array_agg(x ORDER BY k)`: the values in the order of their keys
    let order: &[ast::OrderByExpr] = list
        .clauses
        .iter()
        .find_map(|c| match c {
            ast::FunctionArgumentClause::OrderBy(exprs) => Some(exprs.as_slice()),
            _ => None,
        })
        .unwrap_or_default();
    let mut keyed = Vec::with_capacity(rows.len());
    for row in rows {
        let scope = Scope { columns, empty, row, outer, aggregates: &[] };
        let keys = order.iter().map(|o| eval(&o.expr, &scope, catalog)).collect::<Result<Vec<_>, _>>()?;
        match eval(arg, &scope, catalog)? {
            // array_agg keeps NULLs, as PostgreSQL's does
            V::Null if name != "array_agg" => {}
            v => keyed.push((keys, v)),
        }
    }
    keyed.sort_by(|(a, _), (b, _)| super::query::by_keys(order, a, b));
    let values: Vec<V> = keyed.into_iter().map(|(_, v)| v).collect();
    let numbers = || values.iter().filter_map(V::number);
    Ok(match name.as_str() {
        "count" => V::Int(values.len() as i64),
        _ if values.is_empty() => V::Null,
        "sum" => V::Float(numbers().sum()),
        "avg" => V::Float(numbers().sum::<f64>() / numbers().count().max(1) as f64),
        "array_agg" => V::Array(values),
        "bool_and" => V::Bool(values.iter().all(V::truth)),
        "bool_or" => V::Bool(values.iter().any(V::truth)),
        "min" | "max" => {
            let pick = if name == "min" { Ordering::Less } else { Ordering::Greater };
            values.iter().skip(1).fold(values[0].clone(), |best, v| {
                if v.compare(&best) == Some(pick) {
                    v.clone()
                } else {
                    best
                }
            })
        }
        _ => V::Null,
    })
}
