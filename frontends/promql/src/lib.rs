//! The PromQL front end: parses PromQL text with promflow's own parser (the language of
//! Prometheus 3 with its experimental features) and lowers the syntax tree to the engine's
//! plan IR. It evaluates nothing itself.
#![warn(missing_docs)]

use std::time::Duration;

use promflow_plan::Plan;

mod lower;
pub mod notation;
pub mod parser;

pub use lower::lower;
pub use parser::{Expr, ParseError};

/// Errors of the PromQL front end.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not valid PromQL (Prometheus answers `bad_data`).
    #[error("{0}")]
    Parse(String),
    /// Valid PromQL that promflow does not evaluate yet.
    #[error("{0}")]
    Unsupported(String),
    /// Valid syntax with an argument Prometheus refuses when the query runs, such as a bad
    /// regular expression in `label_replace` (Prometheus answers `execution`).
    #[error("{0}")]
    Invalid(String),
}

/// Settings the lowering needs.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Step of a subquery that gives none (Prometheus uses the global evaluation interval).
    pub default_subquery_step: Duration,
    /// The query's step, for `step()`; zero for an instant query.
    pub step: Duration,
    /// The query's end minus its start, for `range()`; zero for an instant query.
    pub range: Duration,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            default_subquery_step: Duration::from_secs(60),
            step: Duration::ZERO,
            range: Duration::ZERO,
        }
    }
}

/// Parses `query`, with errors in Prometheus's `LINE:COL: parse error: …` form.
pub fn parse(query: &str) -> Result<Expr, Error> {
    parser::parse(query).map_err(|e| Error::Parse(e.render(query)))
}

/// Parses and lowers `query` to a plan.
pub fn compile(query: &str, opts: &CompileOptions) -> Result<Plan, Error> {
    let expr = parse(query)?;
    lower::lower_query(&expr, query, opts)
}

/// The matchers of every vector selector in `query` (`/api/v1/query_exemplars` selects the
/// series any of them match), the metric name as a `__name__` matcher.
pub fn selector_matchers(query: &str) -> Result<Vec<Vec<promflow_storage::Matcher>>, Error> {
    fn walk(e: &Expr, out: &mut Vec<Vec<promflow_storage::Matcher>>) -> Result<(), Error> {
        match e {
            Expr::Number(_) | Expr::String(..) => {}
            Expr::Selector(vs) => out.push(lower::matchers_of(vs)?),
            Expr::Matrix(m) => out.push(lower::matchers_of(&m.vs)?),
            Expr::Subquery(s) => walk(&s.expr, out)?,
            Expr::Paren(e, _) | Expr::Unary { expr: e, .. } => walk(e, out)?,
            Expr::Binary(b) => {
                walk(&b.lhs, out)?;
                walk(&b.rhs, out)?;
            }
            Expr::Aggregate(a) => {
                walk(&a.expr, out)?;
                if let Some(p) = &a.param {
                    walk(p, out)?;
                }
            }
            Expr::Call(c) => c.args.iter().try_for_each(|a| walk(a, out))?,
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&parse(query)?, &mut out)?;
    Ok(out)
}

/// `query` on one line in Prometheus's canonical form: what Prometheus prints for a parsed
/// expression (a rule's `query` in `/api/v1/rules`, alert links), whatever the text's layout.
pub fn one_line_query(query: &str) -> Result<String, Error> {
    Ok(parse(query)?.to_string())
}

/// Pretty-prints `query` in Prometheus's canonical form (`/api/v1/format_query`).
pub fn format_query(query: &str) -> Result<String, Error> {
    Ok(parser::prettify(&parse(query)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use promflow_plan::BinOp;

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
        assert_eq!(e, "1:5: parse error: unclosed left parenthesis");
    }

    #[test]
    fn vector_scalar_is_scalar_op() {
        let plan = compile("up * 2 > bool 1", &CompileOptions::default()).unwrap();
        assert!(matches!(plan, Plan::ScalarOp { op: BinOp::Gt, return_bool: true, .. }));
    }
}
