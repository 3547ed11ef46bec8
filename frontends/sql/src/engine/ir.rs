//! The parts of a relational statement the plan IR expresses, run by promflow's executors
//! inside DataFusion's plan: a subquery in `FROM` or a common table expression that is an
//! aggregating query of one metric the IR takes (its selection, windows, aggregation by
//! labels and time buckets: `rate(value) … GROUP BY job`, `date_bin`, `percentile_cont`, …)
//! is compiled to
//! plans and evaluated by the batch executor, as it would be on its own, and DataFusion reads
//! its answer as a table. So PromQL's range functions are SQL aggregates wherever a query of
//! one metric may stand, and DataFusion does the relational rest (joins, window functions,
//! set operations) over what the kernels computed. `EXPLAIN` shows DataFusion's plan, then
//! each IR part's plans.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::MemTable;
use promflow_storage::Querier;
use sqlparser::ast::{self, SetExpr, TableFactor};

use super::tables::external;
use crate::compile::Query;
use crate::exec::Settings;

/// The name of the table function that reads IR part `i`.
fn function_name(i: usize) -> String {
    format!("pg_ir_part_{i}")
}

/// A statement with its IR parts lifted out: its text for DataFusion, the parts, and whether
/// it is an `EXPLAIN`.
pub(super) struct Lifted {
    pub(super) sql: String,
    pub(super) parts: Vec<Arc<Query>>,
    pub(super) explain: bool,
}

/// `sql` with each subquery in `FROM` and each common table expression that lowers to the
/// plan IR replaced by a call of a table function that answers it (function `i` answers
/// part `i`); `sql` as it is when it has none, or does not parse (DataFusion says why).
pub(super) fn lift(sql: &str, now_ms: i64) -> Lifted {
    let unchanged = || Lifted { sql: sql.to_string(), parts: Vec::new(), explain: false };
    let Ok(mut statements) = crate::compile::parse(sql) else { return unchanged() };
    let [statement] = statements.as_mut_slice() else { return unchanged() };
    let parts = extract(statement, now_ms);
    if parts.is_empty() {
        return unchanged();
    }
    let explain = matches!(statement, ast::Statement::Explain { .. });
    Lifted { sql: statement.to_string(), parts: parts.into_iter().map(Arc::new).collect(), explain }
}

/// Replaces the IR parts of `statement` by calls of their table functions; answers the parts.
fn extract(statement: &mut ast::Statement, now_ms: i64) -> Vec<Query> {
    let mut parts = Vec::new();
    let query = match statement {
        ast::Statement::Query(q) => q,
        ast::Statement::Explain { statement, .. } => match statement.as_mut() {
            ast::Statement::Query(q) => q,
            _ => return parts,
        },
        _ => return parts,
    };
    in_query(query, &mut Vec::new(), now_ms, &mut parts);
    parts
}

/// Walks `query`; `ctes` are the names of the common table expressions in scope (a table of
/// that name is no metric).
fn in_query(query: &mut ast::Query, ctes: &mut Vec<String>, now_ms: i64, parts: &mut Vec<Query>) {
    let scoped = ctes.len();
    if let Some(with) = &mut query.with {
        for cte in &mut with.cte_tables {
            if let Some(part) = lowered(&cte.query, ctes, now_ms) {
                *cte.query = reading(parts.len());
                parts.push(part);
            } else {
                in_query(&mut cte.query, ctes, now_ms, parts);
            }
            ctes.push(crate::compile::folded(&cte.alias.name));
        }
    }
    in_body(&mut query.body, ctes, now_ms, parts);
    ctes.truncate(scoped);
}

fn in_body(body: &mut SetExpr, ctes: &mut Vec<String>, now_ms: i64, parts: &mut Vec<Query>) {
    match body {
        SetExpr::Select(select) => {
            for from in &mut select.from {
                in_factor(&mut from.relation, ctes, now_ms, parts);
                for join in &mut from.joins {
                    in_factor(&mut join.relation, ctes, now_ms, parts);
                }
            }
        }
        SetExpr::Query(q) => in_query(q, ctes, now_ms, parts),
        SetExpr::SetOperation { left, right, .. } => {
            in_body(left, ctes, now_ms, parts);
            in_body(right, ctes, now_ms, parts);
        }
        _ => {}
    }
}

fn in_factor(factor: &mut TableFactor, ctes: &mut Vec<String>, now_ms: i64, parts: &mut Vec<Query>) {
    match factor {
        // a LATERAL subquery reads the tables before it: not a query of one metric alone
        TableFactor::Derived { lateral: false, subquery, alias, .. } => {
            if let Some(part) = lowered(subquery, ctes, now_ms) {
                let alias = alias.take();
                *factor = call(parts.len());
                if let TableFactor::Table { alias: call_alias, .. } = factor {
                    *call_alias = alias;
                }
                parts.push(part);
            } else {
                in_query(subquery, ctes, now_ms, parts);
            }
        }
        TableFactor::NestedJoin { table_with_joins, .. } => {
            in_factor(&mut table_with_joins.relation, ctes, now_ms, parts);
            for join in &mut table_with_joins.joins {
                in_factor(&mut join.relation, ctes, now_ms, parts);
            }
        }
        _ => {}
    }
}

/// `query` as an aggregating query of one metric the plan IR takes, unless it reads a common
/// table expression in scope, a catalog, or anything but one table. A query of rows is left
/// to DataFusion's scans, which also take the predicates of the statement around it.
fn lowered(query: &ast::Query, ctes: &[String], now_ms: i64) -> Option<Query> {
    if crate::catalog::reads_catalog_tables(query) || crate::compile::is_relational(query) {
        return None;
    }
    let mut reads_cte = false;
    let _ = ast::visit_relations(query, |name| {
        let last = name.0.last().and_then(|p| p.as_ident()).map(crate::compile::folded);
        reads_cte |= last.is_some_and(|n| ctes.contains(&n));
        ControlFlow::<()>::Continue(())
    });
    if reads_cte {
        return None;
    }
    let mut query = crate::compile::lower_query(query, now_ms).ok().filter(|q| q.grouped)?;
    crate::compile::run_once(&mut query);
    Some(query)
}

/// `SELECT * FROM pg_ir_part_i()`: what stands for IR part `i` in a `WITH`.
fn reading(i: usize) -> ast::Query {
    let sql = format!("SELECT * FROM {}()", function_name(i));
    match crate::compile::parse(&sql).ok().and_then(|mut s| s.pop()) {
        Some(ast::Statement::Query(q)) => *q,
        _ => unreachable!("{sql} parses as a query"),
    }
}

/// The call `pg_ir_part_i()`: what stands for IR part `i` in a `FROM`.
fn call(i: usize) -> TableFactor {
    match *reading(i).body {
        SetExpr::Select(mut select) => select.from.swap_remove(0).relation,
        _ => unreachable!("a SELECT … FROM is a select"),
    }
}

/// Registers the table functions that answer `parts` on `ctx`: each evaluates its part with
/// the batch executor, within the statement's deadline, and holds its answer in the
/// statement's row budget.
pub(super) fn register(
    ctx: &datafusion::prelude::SessionContext,
    parts: &[Arc<Query>],
    querier: &Arc<dyn Querier>,
    settings: &Settings,
    deadline: Instant,
    budget: &Arc<AtomicUsize>,
) {
    for (i, part) in parts.iter().enumerate() {
        let part = IrPart {
            query: Arc::clone(part),
            querier: Arc::clone(querier),
            settings: settings.clone(),
            deadline,
            budget: Arc::clone(budget),
        };
        ctx.register_udtf(&function_name(i), Arc::new(part));
    }
}

/// Each IR part's plans, as `EXPLAIN` shows them after DataFusion's: a row per part's
/// aggregate (its first plan; the time buckets' others differ only in their ranges).
pub(super) fn explained(parts: &[Arc<Query>]) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for (i, query) in parts.iter().enumerate() {
        for part in &query.parts {
            let plan = part.segments.first().map(|s| s.0.to_string()).unwrap_or_default();
            rows.push((format!("promflow plan IR ({}(), {})", function_name(i), part.name), plan));
        }
    }
    rows
}

/// One IR part as a table function.
struct IrPart {
    query: Arc<Query>,
    querier: Arc<dyn Querier>,
    settings: Settings,
    deadline: Instant,
    budget: Arc<AtomicUsize>,
}

impl std::fmt::Debug for IrPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IrPart({})", self.query.table)
    }
}

impl TableFunctionImpl for IrPart {
    fn call_with_args(&self, _args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>, DataFusionError> {
        let rows = crate::exec::run(&self.query, self.querier.as_ref(), &self.settings, self.deadline)
            .map_err(external)?;
        let batch = rows.to_record_batch(super::tables::UTC)?;
        let bytes = batch.get_array_memory_size();
        if self.budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(bytes)).is_err() {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the statement's tables would take more than {} MiB of rows (a query of \"{}\": {} MiB): bound ts",
                super::MEMORY_LIMIT >> 20,
                self.query.table,
                bytes >> 20
            )));
        }
        Ok(Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?))
    }
}
