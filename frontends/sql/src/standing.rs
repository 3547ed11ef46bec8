//! Standing SQL: a query whose `ts` window slides with `now()`, compiled to the one
//! instant-vector plan that rules evaluate at each evaluation time and that the incremental
//! executor keeps current for websocket subscriptions.
//!
//! ```sql
//! SELECT job, max(value) FROM node_load1
//! WHERE ts > now() - INTERVAL '5 minutes'
//! GROUP BY job HAVING max(value) > 4
//! ```
//!
//! is `max by (job) (max_over_time(node_load1[5m])) and (max by (job)
//! (max_over_time(node_load1[5m])) > 4)`, evaluated at every time: one element per group, its
//! labels the `GROUP BY` labels, its value the aggregate.
//!
//! Decision: a query slides exactly when its plans do not depend on `now()` except through
//! the time they are evaluated at. So the query is compiled at two different times, and it is
//! standing when both compile to the same plans, each evaluated at its `now()`. This reads
//! the meaning off the compiled plans instead of the syntax: `ts >= now() - INTERVAL '1 hour'`
//! and `ts BETWEEN now() - INTERVAL '1 hour' AND now()` slide; an absolute bound, a missing
//! lower bound (the whole history) or an upper bound before `now()` do not.

use promflow_plan::{BinOp, Cardinality, Grouping, JoinKey, Origin, Plan};

use crate::compile::{compile, Query, Statement};
use crate::Error;

/// Two evaluation times far apart, both after any sample a test or a server holds.
const TIMES: [i64; 2] = [4_000_000_000_000, 4_000_000_000_000 + 86_400_000 * 400];

fn refuse(message: impl Into<String>) -> Error {
    Error::NotStanding(message.into())
}

/// Compiles `sql` as a standing query (module docs): one aggregate over a window that ends at
/// `now()` and starts a fixed interval before it, grouped by labels, with `HAVING` conditions
/// as filters. Anything else is [`Error::NotStanding`], saying what a standing query needs.
pub fn standing(sql: &str) -> Result<Plan, Error> {
    let [first, second] = TIMES.map(|now| match compile(sql, now)? {
        Statement::Select(q) => Ok(q),
        Statement::Engine { refused, .. } => Err(refused),
        _ => Err(refuse("a standing query is a SELECT over a metric")),
    });
    let (first, second) = (first?, second?);
    let plan = as_plan(&first, TIMES[0])?;
    if as_plan(&second, TIMES[1])? != plan {
        return Err(refuse(
            "a standing query's ts bounds slide with now(): a lower bound such as ts > now() - INTERVAL '5 minutes', and no upper bound but now()",
        ));
    }
    Ok(plan)
}

/// The plan of `q` evaluated at `now`: its value part, filtered by its `HAVING` parts.
fn as_plan(q: &Query, now: i64) -> Result<Plan, Error> {
    if !q.grouped {
        return Err(refuse(
            "a standing query aggregates the window's samples (count, sum, avg, min, max, rate, …), one row per group",
        ));
    }
    if q.bucket.is_some() {
        return Err(refuse(
            "a standing query has no time buckets (date_bin): its one bucket is the sliding window",
        ));
    }
    if !q.order_by.is_empty() || q.limit.is_some() || q.offset > 0 {
        return Err(refuse("a standing query has no ORDER BY, LIMIT or OFFSET: a live result has no order"));
    }
    let values: Vec<_> = q.parts.iter().filter(|p| !p.filter).collect();
    if values.len() != 1 {
        return Err(refuse(format!(
            "a standing query selects exactly one aggregate, its value (this one selects {})",
            values.len()
        )));
    }
    let at_now = |part: &crate::Part| match part.segments.as_slice() {
        [(plan, eval)] if eval.start == now && eval.end == now => Ok(plan.clone()),
        _ => {
            Err(refuse("a standing query's window ends at now(): give no upper bound on ts, or ts <= now()"))
        }
    };
    let mut plan = at_now(values[0])?;
    for condition in q.parts.iter().filter(|p| p.filter) {
        plan = Plan::Join {
            op: BinOp::And,
            lhs: Box::new(plan),
            rhs: Box::new(at_now(condition)?),
            key: JoinKey {
                grouping: Grouping::Without(vec![]),
                card: Cardinality::ManyToMany,
                fill_many: None,
                fill_one: None,
            },
            return_bool: false,
            origin: Origin::default(),
        };
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promql(q: &str) -> Plan {
        // the SQL/PromQL pairs in tests/it/sql.rs check the aggregates' plans against PromQL's;
        // here only the shape around them matters
        match compile(q, TIMES[0]) {
            Ok(Statement::Select(q)) => q.parts[0].segments[0].0.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_window_relative_to_now_is_one_plan_evaluated_at_every_time() {
        let q = "SELECT job, max(value) FROM m WHERE ts > now() - INTERVAL '5 minutes' GROUP BY job";
        let plan = standing(q).unwrap();
        assert_eq!(plan, promql(q));
        assert!(format!("{plan:?}").contains("range_ms: 300000"), "(now - 5m, now] is 5 minutes: {plan:?}");
        let between = "SELECT sum(value) FROM m WHERE ts BETWEEN now() - INTERVAL '1 hour' AND now()";
        assert!(standing(between).is_ok());
    }

    #[test]
    fn having_filters_the_value() {
        let q = "SELECT job, avg(value) FROM m WHERE ts > now() - INTERVAL '1 minute' GROUP BY job HAVING max(value) > 4";
        let Plan::Join { op: BinOp::And, lhs, rhs, .. } = standing(q).unwrap() else { panic!() };
        assert!(matches!(*lhs, Plan::Join { op: BinOp::Div, .. }), "avg is sum / count");
        assert!(matches!(*rhs, Plan::ScalarOp { op: BinOp::Gt, .. }));
    }

    #[test]
    fn what_does_not_slide_or_is_not_one_value_per_group_is_refused_with_the_reason() {
        for (q, why) in [
            ("SELECT job, value FROM m WHERE ts > now() - INTERVAL '1 minute'", "aggregates"),
            ("SELECT sum(value) FROM m", "slide with now()"),
            ("SELECT sum(value) FROM m WHERE ts > '2026-11-23 10:00:00'", "slide with now()"),
            ("SELECT sum(value) FROM m WHERE ts > now() - INTERVAL '1 hour' AND ts < now() - INTERVAL '5 minutes'", "ends at now()"),
            ("SELECT sum(value), max(value) FROM m WHERE ts > now() - INTERVAL '1 minute'", "exactly one aggregate"),
            ("SELECT job, sum(value) FROM m WHERE ts > now() - INTERVAL '1 minute' GROUP BY job ORDER BY 2", "no ORDER BY"),
            ("SELECT date_bin(INTERVAL '1 minute', ts), sum(value) FROM m WHERE ts > now() - INTERVAL '1 hour' GROUP BY 1", "no time buckets"),
            ("SHOW TABLES", "is a SELECT"),
        ] {
            let e = standing(q).unwrap_err().to_string();
            assert!(e.contains(why), "{q}: {e}");
        }
        assert!(matches!(standing("SELECT sum(value) FROM"), Err(Error::Parse(_))));
    }
}
