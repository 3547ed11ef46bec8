//! Queries, `FROM` lists and joins, set operations, and the select list.

use std::cmp::Ordering;

use sqlparser::ast::{
    self, Expr, JoinConstraint, JoinOperator, SelectItem, SetExpr, SetOperator, SetQuantifier, TableFactor,
    TableWithJoins,
};

use super::aggregate::{grouping, groups};
use super::expr::{argument, eval, expr_name};
use super::{reads_catalog, split, unsupported, Answer, Catalog, Relation, Scope, V};
use crate::exec::ExecError;

pub(super) fn run_query(
    query: &ast::Query,
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<Answer, ExecError> {
    catalog.check_deadline()?;
    let scoped = catalog.ctes.len();
    if let Some(with) = &query.with {
        if with.recursive {
            return Err(unsupported("WITH RECURSIVE"));
        }
        for cte in &with.cte_tables {
            let relation = relation_of(&cte.query, catalog, outer)?;
            let relation = match cte.alias.columns.as_slice() {
                [] => relation,
                names => {
                    Relation { columns: names.iter().map(|c| c.name.value.clone()).collect(), ..relation }
                }
            };
            catalog.ctes.push((cte.alias.name.value.clone(), relation));
        }
    }
    let body = run_body(&query.body, catalog, outer);
    catalog.ctes.truncate(scoped);
    let ((names, mut rows), scopes) = body?;
    if let Some(order_by) = &query.order_by {
        let ast::OrderByKind::Expressions(exprs) = &order_by.kind else {
            return Err(unsupported("ORDER BY ALL"));
        };
        // sort keys: a position, an output column's name, or an expression over the row
        let mut keyed = Vec::with_capacity(rows.len());
        for (i, row) in rows.into_iter().enumerate() {
            let mut keys = Vec::with_capacity(exprs.len());
            for e in exprs {
                let key = match &e.expr {
                    Expr::Value(v) => match &v.value {
                        ast::Value::Number(n, _) => {
                            n.parse::<usize>().ok().and_then(|p| row.get(p.wrapping_sub(1))).cloned()
                        }
                        _ => None,
                    },
                    Expr::Identifier(id) => names.iter().position(|n| *n == id.value).map(|p| row[p].clone()),
                    _ => None,
                };
                let key = match (key, &scopes) {
                    (Some(k), _) => k,
                    (None, Some(scopes)) => {
                        let (columns, empty, source) = &scopes[i];
                        let scope = Scope { columns, empty, row: source, outer, aggregates: &[] };
                        eval(&e.expr, &scope, catalog)?
                    }
                    (None, None) => return Err(unsupported("ORDER BY an expression after UNION")),
                };
                keys.push(key);
            }
            keyed.push((keys, row));
        }
        keyed.sort_by(|(a, _), (b, _)| by_keys(exprs, a, b));
        rows = keyed.into_iter().map(|(_, r)| r).collect();
    }
    if let Some(ast::LimitClause::LimitOffset { limit, offset, .. }) = &query.limit_clause {
        let mut number = |e: &Expr| -> Result<usize, ExecError> {
            let scope = Scope { columns: &[], empty: &[], row: &[], outer: None, aggregates: &[] };
            Ok(eval(e, &scope, catalog)?.number().unwrap_or(0.0).max(0.0) as usize)
        };
        let skip = offset.as_ref().map(|o| number(&o.value)).transpose()?.unwrap_or(0);
        let take = limit.as_ref().map(&mut number).transpose()?.unwrap_or(usize::MAX);
        rows = rows.into_iter().skip(skip).take(take).collect();
    }
    Ok((names, rows))
}

/// A SELECT's source rows, kept for `ORDER BY` expressions: column names, empty aliases,
/// values.
type Sources = Vec<(Vec<(String, String)>, Vec<String>, Vec<V>)>;

fn run_body(
    body: &SetExpr,
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<(Answer, Option<Sources>), ExecError> {
    match body {
        SetExpr::Select(select) => {
            let (answer, sources) = run_select(select, catalog, outer)?;
            Ok((answer, Some(sources)))
        }
        SetExpr::Query(q) => Ok((run_query(q, catalog, outer)?, None)),
        SetExpr::SetOperation { op: SetOperator::Union, set_quantifier, left, right } => {
            let ((names, mut rows), _) = run_body(left, catalog, outer)?;
            let ((_, more), _) = run_body(right, catalog, outer)?;
            rows.extend(more);
            if !matches!(set_quantifier, SetQuantifier::All) {
                let mut seen = Vec::new();
                rows.retain(|r| {
                    let new = !seen.contains(r);
                    if new {
                        seen.push(r.clone());
                    }
                    new
                });
            }
            Ok(((names, rows), None))
        }
        other => Err(unsupported(other)),
    }
}

/// The rows of `FROM`: (alias, column) per column, the aliases of empty catalogs, rows.
type From = (Vec<(String, String)>, Vec<String>, Vec<Vec<V>>);

/// The rows of a subquery or CTE: a single metric's query runs through its plans, anything
/// else in the interpreter.
fn relation_of(
    query: &ast::Query,
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<Relation, ExecError> {
    if catalog.metrics.is_some()
        && !reads_catalog(query)
        && !crate::compile::is_relational(query)
        && !reads_ctes(query, catalog)
    {
        return catalog.metric_rows(&query.to_string());
    }
    let (columns, rows) = run_query(query, catalog, outer)?;
    Ok(Relation { columns, rows })
}

/// A relation's columns under `alias`, as `FROM` reads them.
fn aliased(alias: &str, relation: Relation) -> From {
    (relation.columns.into_iter().map(|c| (alias.to_string(), c)).collect(), Vec::new(), relation.rows)
}

/// Whether a query's `FROM` names a common table expression in scope.
fn reads_ctes(query: &ast::Query, catalog: &Catalog) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else { return true };
    select.from.iter().any(|t| {
        std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)).any(|f| match f {
            TableFactor::Table { name, .. } => catalog.cte(name).is_some(),
            _ => true,
        })
    })
}

fn from_factor(f: &TableFactor, catalog: &mut Catalog, outer: Option<&Scope>) -> Result<From, ExecError> {
    if let Some((alias, metric)) = catalog.metric_table(f) {
        // the table's rows, with the conjuncts of WHERE that are its own
        let own = catalog.own.iter().find(|(a, _)| *a == alias).map(|(_, c)| c.clone()).unwrap_or_default();
        let mut sql = format!("SELECT * FROM \"{}\"", metric.replace('"', "\"\""));
        if !own.is_empty() {
            let own: Vec<String> = own.iter().map(|e| e.to_string()).collect();
            sql = format!("{sql} WHERE {}", own.join(" AND "));
        }
        return Ok(aliased(&alias, catalog.metric_rows(&sql)?));
    }
    match f {
        TableFactor::Table { name, alias, args: None, .. } if catalog.cte(name).is_some() => {
            let relation = catalog.cte(name).cloned().unwrap_or(Relation { columns: vec![], rows: vec![] });
            Ok(aliased(&alias.as_ref().map_or_else(|| split(name).1, |a| a.name.value.clone()), relation))
        }
        TableFactor::Table { name, alias, args: None, .. } => {
            let (schema, table) = split(name);
            let relation = catalog.relation(schema.as_deref(), &table)?;
            let alias = alias.as_ref().map_or(table, |a| a.name.value.clone());
            let empty = if relation.columns.is_empty() { vec![alias.clone()] } else { Vec::new() };
            Ok((relation.columns.into_iter().map(|c| (alias.clone(), c)).collect(), empty, relation.rows))
        }
        TableFactor::Table { name, alias, args: Some(args), .. } => {
            let (_, function) = split(name);
            let scope = Scope { columns: &[], empty: &[], row: &[], outer, aggregates: &[] };
            let values: Vec<V> =
                args.args.iter().map(|a| argument(a, &scope, catalog)).collect::<Result<_, _>>()?;
            let rows = match (function.as_str(), values.as_slice()) {
                ("unnest", [V::Array(items)]) => items.iter().map(|v| vec![v.clone()]).collect(),
                ("unnest", [V::Null]) => Vec::new(),
                // a table is its own only ancestor: promflow has no partitions
                ("pg_partition_ancestors", [oid]) => vec![vec![oid.clone()]],
                // integers, as JDBC numbers the key columns it may join (`generate_series(1, 32)`)
                ("generate_series", [V::Int(low), V::Int(high)]) if high - low < 10_000 => {
                    (*low..=*high).map(|n| vec![V::Int(n)]).collect()
                }
                _ => return Err(unsupported(format!("the table function {function}"))),
            };
            let table = alias.as_ref().map_or(function.clone(), |a| a.name.value.clone());
            // `unnest(x) AS y`, `generate_series(…) AS pos(n)`: the alias (or its column list)
            // names the column
            let named = alias.as_ref().and_then(|a| a.columns.first()).map(|c| c.name.value.clone());
            let column = match function.as_str() {
                "unnest" | "generate_series" => named.unwrap_or_else(|| table.clone()),
                _ => "relid".to_string(),
            };
            let alias = table;
            Ok((vec![(alias, column)], Vec::new(), rows))
        }
        TableFactor::Derived { subquery, alias, .. } => {
            let Relation { columns: names, rows } = relation_of(subquery, catalog, outer)?;
            let alias = alias.as_ref().map_or(String::new(), |a| a.name.value.clone());
            Ok((names.into_iter().map(|n| (alias.clone(), n)).collect(), Vec::new(), rows))
        }
        other => Err(unsupported(other)),
    }
}

fn from_joins(t: &TableWithJoins, catalog: &mut Catalog, outer: Option<&Scope>) -> Result<From, ExecError> {
    let (mut columns, mut empty, mut rows) = from_factor(&t.relation, catalog, outer)?;
    for join in &t.joins {
        let (right_columns, right_empty, right_rows) = from_factor(&join.relation, catalog, outer)?;
        let (constraint, left_outer) = match &join.join_operator {
            JoinOperator::Join(c) | JoinOperator::Inner(c) | JoinOperator::CrossJoin(c) => (c, false),
            JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (c, true),
            other => return Err(unsupported(format!("{other:?}"))),
        };
        columns.extend(right_columns.iter().cloned());
        empty.extend(right_empty);
        let mut joined = Vec::new();
        let mut pairs = 0usize;
        for left in &rows {
            let mut matched = false;
            for right in &right_rows {
                pairs += 1;
                if pairs.is_multiple_of(4096) {
                    catalog.check(joined.len(), columns.len())?;
                }
                let row: Vec<V> = left.iter().chain(right).cloned().collect();
                let keep = match constraint {
                    JoinConstraint::On(e) => {
                        let scope =
                            Scope { columns: &columns, empty: &empty, row: &row, outer, aggregates: &[] };
                        eval(e, &scope, catalog)?.truth()
                    }
                    JoinConstraint::None => true,
                    other => return Err(unsupported(format!("{other:?}"))),
                };
                if keep {
                    matched = true;
                    joined.push(row);
                }
            }
            if left_outer && !matched {
                joined.push(left.iter().cloned().chain(right_columns.iter().map(|_| V::Null)).collect());
            }
        }
        rows = joined;
    }
    Ok((columns, empty, rows))
}

fn run_select(
    select: &ast::Select,
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<(Answer, Sources), ExecError> {
    // a metric table's own WHERE conjuncts are applied where its rows are read, and not again
    let conditions: Vec<&Expr> = select.selection.as_ref().map(crate::compile::conjuncts).unwrap_or_default();
    let mut consumed = vec![false; conditions.len()];
    let mut own = Vec::new();
    if let Some(now) = catalog.metrics.as_ref().map(|m| m.now) {
        // not the right side of a LEFT JOIN: WHERE filters its NULLs after the join, which a
        // condition applied before it would turn into unmatched rows
        let factors = select.from.iter().flat_map(|t| {
            let inner = t
                .joins
                .iter()
                .filter(|j| !matches!(j.join_operator, JoinOperator::Left(_) | JoinOperator::LeftOuter(_)));
            std::iter::once(&t.relation).chain(inner.map(|j| &j.relation))
        });
        for (alias, _) in factors.filter_map(|f| catalog.metric_table(f)) {
            let mut mine = Vec::new();
            for (c, done) in conditions.iter().zip(consumed.iter_mut()) {
                if let Some(p) = crate::compile::own_predicate(c, &alias, now) {
                    mine.push(p);
                    *done = true;
                }
            }
            own.push((alias, mine));
        }
    }
    let outer_own = std::mem::replace(&mut catalog.own, own);
    // FROM: the cross product of its items (one row of no columns without FROM)
    let from = read_from(select, catalog, outer);
    catalog.own = outer_own;
    let (columns, empty, rows) = from?;
    let mut kept = Vec::new();
    for row in rows {
        let scope = Scope { columns: &columns, empty: &empty, row: &row, outer, aggregates: &[] };
        let mut keep = true;
        for (c, _) in conditions.iter().zip(&consumed).filter(|(_, done)| !**done) {
            if !eval(c, &scope, catalog)?.truth() {
                keep = false;
                break;
            }
        }
        if keep {
            kept.push(row);
        }
    }
    project(select, columns, empty, kept, catalog, outer)
}

/// The rows of a `SELECT`'s `FROM`: the cross product of its items (one row of no columns
/// without `FROM`).
fn read_from(select: &ast::Select, catalog: &mut Catalog, outer: Option<&Scope>) -> Result<From, ExecError> {
    let (mut columns, mut empty, mut rows) = (Vec::new(), Vec::new(), vec![Vec::new()]);
    let items = select.from.iter().map(|t| from_joins(t, catalog, outer)).collect::<Result<Vec<_>, _>>()?;
    // a product with an empty catalog (JDBC's keys join pg_constraint) is empty, however
    // large the others'
    let nothing = items.iter().any(|(_, _, r)| r.is_empty());
    for (c, e, r) in items {
        if nothing {
            columns.extend(c);
            empty.extend(e);
            continue;
        }
        catalog.check(rows.len().saturating_mul(r.len()), columns.len() + c.len())?;
        rows = rows
            .iter()
            .flat_map(|left: &Vec<V>| r.iter().map(move |right| [left.clone(), right.clone()].concat()))
            .collect();
        columns.extend(c);
        empty.extend(e);
    }
    if nothing {
        rows.clear();
    }
    Ok((columns, empty, rows))
}

/// The select list over the kept rows (and `DISTINCT`).
fn project(
    select: &ast::Select,
    columns: Vec<(String, String)>,
    empty: Vec<String>,
    kept: Vec<Vec<V>>,
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<(Answer, Sources), ExecError> {
    let mut names = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::UnnamedExpr(e) => names.push(expr_name(e)),
            SelectItem::ExprWithAlias { alias, .. } => names.push(alias.value.clone()),
            SelectItem::Wildcard(_) => names.extend(columns.iter().map(|(_, c)| c.clone())),
            other => return Err(unsupported(other)),
        }
    }
    // each output row's source: a kept row, or with grouping a group's first row and its
    // aggregates' values
    let units = match grouping(select)? {
        None => {
            if select.having.is_some() {
                return Err(unsupported("HAVING without GROUP BY or an aggregate"));
            }
            kept.into_iter().map(|row| (row, Vec::new())).collect()
        }
        Some((keys, calls)) => groups(select, &keys, &calls, (&columns, &empty), kept, catalog, outer)?,
    };
    // `row_number() OVER (…)` items, numbered over every output row before any is built
    let mut numbered: Vec<Option<Vec<V>>> = Vec::with_capacity(select.projection.len());
    for item in &select.projection {
        let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = item else {
            numbered.push(None);
            continue;
        };
        numbered.push(match row_number_window(e) {
            Some(window) => Some(row_numbers(window, &units, (&columns, &empty), catalog, outer)?),
            None => None,
        });
    }
    let mut out = Vec::with_capacity(units.len());
    let mut sources = Vec::with_capacity(units.len());
    for (u, (row, aggregates)) in units.into_iter().enumerate() {
        let scope = Scope { columns: &columns, empty: &empty, row: &row, outer, aggregates: &aggregates };
        let mut values = Vec::with_capacity(names.len());
        for (item, numbers) in select.projection.iter().zip(&numbered) {
            match (item, numbers) {
                (_, Some(numbers)) => values.push(numbers[u].clone()),
                (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }, None) => {
                    values.push(eval(e, &scope, catalog)?)
                }
                _ => values.extend(row.iter().cloned()),
            }
        }
        out.push(values);
        sources.push((columns.clone(), empty.clone(), row));
    }
    if select.distinct.is_some() {
        let mut seen: Vec<Vec<V>> = Vec::new();
        let mut i = 0;
        out.retain(|r| {
            let new = !seen.contains(r);
            if new {
                seen.push(r.clone());
            } else {
                sources.remove(i);
            }
            i += usize::from(new);
            new
        });
    }
    Ok(((names, out), sources))
}

/// The window of `e` when it is `row_number() OVER (…)`, the one window function catalog
/// queries use (JDBC's `getColumns` numbers a table's columns with it).
fn row_number_window(e: &Expr) -> Option<&ast::WindowSpec> {
    let Expr::Function(f) = e else { return None };
    match &f.over {
        Some(ast::WindowType::WindowSpec(spec)) if split(&f.name).1 == "row_number" => Some(spec),
        _ => None,
    }
}

/// `row_number()` of each output row (`units`, in order) within `window`: rows numbered from
/// 1 in the window's order, again in each of its partitions.
fn row_numbers(
    window: &ast::WindowSpec,
    units: &[super::aggregate::Group],
    (columns, empty): (&[(String, String)], &[String]),
    catalog: &mut Catalog,
    outer: Option<&Scope>,
) -> Result<Vec<V>, ExecError> {
    let mut keys = Vec::with_capacity(units.len());
    for (row, aggregates) in units {
        let scope = Scope { columns, empty, row, outer, aggregates };
        let partition =
            window.partition_by.iter().map(|e| eval(e, &scope, catalog)).collect::<Result<Vec<_>, _>>()?;
        let order =
            window.order_by.iter().map(|o| eval(&o.expr, &scope, catalog)).collect::<Result<Vec<_>, _>>()?;
        keys.push((partition, order));
    }
    let mut indexes: Vec<usize> = (0..units.len()).collect();
    let same =
        |a: &[V], b: &[V]| a.iter().zip(b).all(|(x, y)| x == y || x.compare(y) == Some(Ordering::Equal));
    indexes.sort_by(|&a, &b| {
        let (pa, pb) = (&keys[a].0, &keys[b].0);
        let partitions = pa
            .iter()
            .zip(pb)
            .map(|(x, y)| x.compare(y).unwrap_or(Ordering::Equal))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal);
        partitions.then_with(|| by_keys(&window.order_by, &keys[a].1, &keys[b].1))
    });
    let mut numbers = vec![V::Null; units.len()];
    let mut n = 0;
    for (k, &i) in indexes.iter().enumerate() {
        n = if k > 0 && same(&keys[indexes[k - 1]].0, &keys[i].0) { n + 1 } else { 1 };
        numbers[i] = V::Int(n);
    }
    Ok(numbers)
}

/// How rows with sort keys `a` and `b` (one per `ORDER BY` expression of `exprs`) compare:
/// `NULL`s last ascending and first descending, as in PostgreSQL.
pub(super) fn by_keys(exprs: &[ast::OrderByExpr], a: &[V], b: &[V]) -> Ordering {
    exprs
        .iter()
        .zip(a.iter().zip(b))
        .map(|(e, (x, y))| {
            let o = match (x, y) {
                (V::Null, V::Null) => Ordering::Equal,
                (V::Null, _) => Ordering::Greater,
                (_, V::Null) => Ordering::Less,
                _ => x.compare(y).unwrap_or(Ordering::Equal),
            };
            if matches!(e.options.sort, Some(ast::OrderBySort::Desc)) {
                o.reverse()
            } else {
                o
            }
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}
