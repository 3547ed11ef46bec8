//! Statements PostgreSQL rejects that DataFusion would answer, rejected as PostgreSQL rejects
//! them (its SQLSTATE and words): an output column's alias inside an expression of `HAVING`
//! or `ORDER BY`, a double or `numeric` cast to `boolean`, and `date_bin` of months or years.

use std::ops::ControlFlow;

use sqlparser::ast::{self, Expr, Statement};

use super::postgres::{is_column, plain_arguments};
use crate::exec::ExecError;

/// PostgreSQL's error for the first thing in `statements` it rejects.
pub(super) fn check(statements: &[Statement]) -> Result<(), ExecError> {
    let mut found = None;
    let mut fail = |e: ExecError| {
        found = Some(e);
        ControlFlow::Break(())
    };
    for statement in statements {
        let _ = ast::visit_expressions(statement, |e| match rejected_expression(e) {
            Some(e) => fail(e),
            None => ControlFlow::Continue(()),
        });
    }
    if let Some(e) = found {
        return Err(e);
    }
    struct Queries(Option<ExecError>);
    impl ast::Visitor for Queries {
        type Break = ();
        fn pre_visit_query(&mut self, query: &ast::Query) -> ControlFlow<()> {
            match alias_in_expression(query) {
                Some(e) => {
                    self.0 = Some(e);
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            }
        }
    }
    let mut queries = Queries(None);
    for statement in statements {
        let _ = ast::Visit::visit(statement, &mut queries);
    }
    queries.0.map_or(Ok(()), Err)
}

fn sql(state: &'static str, message: impl Into<String>) -> ExecError {
    ExecError::Sql { state, message: message.into() }
}

/// A cast PostgreSQL has not (`value::boolean`, `1.5::boolean`), or `date_bin` by a stride
/// of months or years.
fn rejected_expression(e: &Expr) -> Option<ExecError> {
    match e {
        Expr::Cast { expr, data_type: ast::DataType::Boolean | ast::DataType::Bool, .. } => {
            let from = match expr.as_ref() {
                x if is_column(x, "value") => "double precision",
                Expr::Value(v) if matches!(&v.value, ast::Value::Number(n, _) if n.contains(['.', 'e', 'E'])) => {
                    "numeric"
                }
                _ => return None,
            };
            Some(sql("42846", format!("cannot cast type {from} to boolean")))
        }
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("date_bin") => {
            let text = match *plain_arguments(f)?.first()? {
                Expr::Value(v) => v.value.clone().into_string()?,
                Expr::Interval(i) => match (i.value.as_ref(), &i.leading_field) {
                    (Expr::Value(v), field) => {
                        format!(
                            "{} {}",
                            v.value.clone().into_string()?,
                            field.as_ref().map(ToString::to_string).unwrap_or_default()
                        )
                    }
                    _ => return None,
                },
                _ => return None,
            };
            let text = text.to_ascii_lowercase();
            let calendar =
                ["mon", "year", "yr", "decade", "centur", "millenn"].iter().any(|u| text.contains(u));
            calendar.then(|| {
                sql("0A000", "timestamps cannot be binned into intervals containing months or years")
            })
        }
        _ => None,
    }
}

/// An output column's alias used inside an expression of `HAVING`, or of `ORDER BY` (where
/// PostgreSQL takes an alias only on its own): `HAVING m > 1`, `ORDER BY m * -1` after
/// `max(value) AS m`. PostgreSQL reads such a name as an input column, and there is none.
/// (A name that is also an input column, `ts`, `value` or one the select list or `GROUP BY`
/// reads, is left to the planner.)
fn alias_in_expression(query: &ast::Query) -> Option<ExecError> {
    let ast::SetExpr::Select(select) = query.body.as_ref() else { return None };
    let folded =
        |i: &ast::Ident| if i.quote_style.is_some() { i.value.clone() } else { i.value.to_ascii_lowercase() };
    let aliases: Vec<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            ast::SelectItem::ExprWithAlias { alias, .. } => Some(folded(alias)),
            _ => None,
        })
        .collect();
    if aliases.is_empty() {
        return None;
    }
    // the names the statement reads as columns outside HAVING and ORDER BY
    let mut inputs = vec!["ts".to_string(), "value".to_string()];
    let mut read = |e: &Expr| {
        if let Expr::Identifier(i) = e {
            inputs.push(folded(i));
        }
        ControlFlow::<()>::Continue(())
    };
    for item in &select.projection {
        if let ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } = item {
            let _ = ast::visit_expressions(e, &mut read);
        }
    }
    if let ast::GroupByExpr::Expressions(groups, _) = &select.group_by {
        let _ = ast::visit_expressions(groups, &mut read);
    }
    if let Some(w) = &select.selection {
        let _ = ast::visit_expressions(w, &mut read);
    }
    let misused = |e: &Expr| {
        let mut name = None;
        let _ = ast::visit_expressions(e, |x| match x {
            Expr::Identifier(i) if aliases.contains(&folded(i)) && !inputs.contains(&folded(i)) => {
                name = Some(folded(i));
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        });
        name
    };
    let order_by = match &query.order_by {
        Some(ast::OrderBy { kind: ast::OrderByKind::Expressions(items), .. }) => items.as_slice(),
        _ => &[],
    };
    let ordered = order_by.iter().map(|o| &o.expr).filter(|e| !matches!(e, Expr::Identifier(_)));
    let name = select.having.iter().chain(ordered).find_map(misused)?;
    Some(sql("42703", format!("column \"{name}\" does not exist")))
}
