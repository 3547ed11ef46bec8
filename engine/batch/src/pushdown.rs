//! Aggregations evaluated where the series are. Each of a cluster's nodes aggregates the
//! series it holds ([`evaluate_partial`]), and the node that was asked combines the parts
//! ([`AggregatePushdown`]): what crosses the network is one value per group and step, not
//! every sample of every series.
//!
//! Only aggregations whose parts combine exactly are pushed down: `sum`, `avg`, `min`, `max`,
//! `count` and `group`, over an input that works on each series alone (selections, window
//! and value functions, subqueries over such inputs, arithmetic and comparisons with
//! constants). Over disjoint sets of series, the parts of such an aggregation combine to the
//! aggregation over their union; keeping the sets disjoint is the pushdown's job, not the
//! executor's.

use std::collections::HashMap;

use promflow_kernels::{aggregate_values, kahan_sum, SumFold};
use promflow_plan::{AggOp, Annotations, Error, Level, Plan, QueryOptions, SourcePos};
use promflow_storage::{Labels, Querier};

use crate::{Ctx, StepSeries};

/// The steps an aggregation is evaluated at (a query's, or a subquery's inner steps), and the
/// query's own first and last step, which `@ start()` and `@ end()` mean also inside a
/// subquery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steps {
    /// First step, in milliseconds.
    pub start: i64,
    /// Last step (inclusive), in milliseconds.
    pub end: i64,
    /// Step width in milliseconds.
    pub step: i64,
    /// The query's first step.
    pub query_start: i64,
    /// The query's last step.
    pub query_end: i64,
}

/// One group of a partial aggregation.
#[derive(Clone, Debug, PartialEq)]
pub struct PartialGroup {
    /// The group's labels.
    pub labels: Labels,
    /// With delayed name removal: a member's metric name was to be removed.
    pub drop_name: bool,
    /// At each step, what the part contributes: the sum of the members' values (`sum`,
    /// `avg`), their minimum or maximum, their count (`count`), or 1 (`group`).
    pub values: Vec<f64>,
    /// At each step, how many members had a value there (none: the part has no value).
    pub counts: Vec<u64>,
    /// For `sum` and `avg`, at each step, the compensation of the members' Kahan sum: what
    /// `values` lost to rounding (`1e100 + 2 - 1e100` keeps the 2 here), so that the parts
    /// combine as one sum over every member would. Empty otherwise, or from a node that
    /// sends none (each taken as 0).
    pub compensations: Vec<f64>,
}

/// An aggregation's part over some of the series, with the annotations its input raised.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartialAggregate {
    /// The groups that have a value at some step.
    pub groups: Vec<PartialGroup>,
    /// Level, message and position of each annotation ([`Annotations::entries`]).
    pub annotations: Vec<(Level, String, Option<SourcePos>)>,
}

/// Where the executor gets the parts of an aggregation it need not evaluate itself: a
/// cluster's nodes.
pub trait AggregatePushdown: Send + Sync {
    /// The parts of `aggregate` ([`pushable`]) at `steps` over all the series there are, each
    /// series in exactly one part; `None` when they cannot be had (a node failed, a series is
    /// held in versions that differ), and the executor evaluates the aggregation itself,
    /// which then reports what went wrong as it does without a pushdown.
    /// `names_may_collide`: the input removes metric names, so two series whose labels
    /// differ only in their name become one, which is an error the parts cannot see when
    /// the two series are in different parts: the pushdown must then make sure no two such
    /// series are.
    fn partials(
        &self,
        aggregate: &Plan,
        steps: Steps,
        names_may_collide: bool,
    ) -> Option<Vec<PartialAggregate>>;
}

/// Whether `plan` is an aggregation the executor asks an [`AggregatePushdown`] for: one whose
/// parts combine, over an input that treats each series alone, written in a query's text
/// (its position is how another node finds it in the same text).
pub fn pushable(plan: &Plan) -> bool {
    match plan {
        Plan::Aggregate { op, param: None, input, origin, .. } => {
            matches!(op, AggOp::Sum | AggOp::Avg | AggOp::Min | AggOp::Max | AggOp::Count | AggOp::Group)
                && origin.expr.is_some()
                && per_series(input)
        }
        _ => false,
    }
}

/// Whether each series of `plan`'s value depends on one input series alone, and the labels
/// of two different input series stay different (metric names aside).
fn per_series(plan: &Plan) -> bool {
    match plan {
        Plan::Select { .. } | Plan::Window { .. } => true,
        Plan::SubWindow { input, .. } => per_series(input),
        Plan::WindowFunction { input, args, .. } | Plan::Map { input, args, .. } => {
            per_series(input) && args.iter().all(constant)
        }
        Plan::ScalarOp { lhs, rhs, .. } => {
            (per_series(lhs) && constant(rhs)) || (constant(lhs) && per_series(rhs))
        }
        _ => false,
    }
}

/// Whether `plan` is the same on every node: a number, a string or the time.
fn constant(plan: &Plan) -> bool {
    match plan {
        Plan::Number(_) | Plan::Str(_) | Plan::Time | Plan::QueryTime(_) => true,
        Plan::ScalarOp { lhs, rhs, .. } => constant(lhs) && constant(rhs),
        _ => false,
    }
}

/// Whether the input of the pushable `aggregate` may remove metric names (without delayed
/// name removal, every function and arithmetic does; a bare selection does not).
pub(crate) fn names_may_collide(aggregate: &Plan, opts: &QueryOptions) -> bool {
    match aggregate {
        Plan::Aggregate { input, .. } => {
            !opts.delayed_name_removal && !matches!(**input, Plan::Select { .. } | Plan::Window { .. })
        }
        _ => false,
    }
}

/// Evaluates the part of the pushable `aggregate` over what `querier` holds, at `steps`, with
/// `opts`' lookback, limits and features. Native histograms are refused (an `Unsupported`
/// error): their parts do not travel.
pub fn evaluate_partial(
    aggregate: &Plan,
    querier: &dyn Querier,
    opts: &QueryOptions,
    steps: Steps,
) -> Result<PartialAggregate, Error> {
    let Plan::Aggregate { op, grouping, input, .. } = aggregate else {
        return Err(Error::Plan("a partial aggregation needs an aggregation".into()));
    };
    if !pushable(aggregate) {
        return Err(Error::Unsupported("this aggregation is not evaluated in parts".into()));
    }
    let opts = QueryOptions { start: steps.start, end: steps.end, step: steps.step, ..opts.clone() };
    let mut ctx = Ctx {
        querier,
        steps: opts.steps(),
        opts,
        samples_loaded: 0,
        samples_read: 0,
        query_start: steps.query_start,
        query_end: steps.query_end,
        annotations: Annotations::default(),
        histogram_stats: false,
        needs_buckets: false,
        pushdown: None,
    };
    let n = ctx.steps.len();
    let input = ctx.eval_vector(input)?;
    if input.iter().any(|s| s.hists.iter().any(Option::is_some)) {
        return Err(Error::Unsupported("native histograms are not aggregated in parts".into()));
    }
    let (labels_of, members) = ctx.groups(&input, grouping)?;
    let mut groups = Vec::with_capacity(members.len());
    let mut buf = Vec::new();
    for (labels, m) in labels_of.into_iter().zip(members) {
        ctx.check_deadline()?;
        let mut values = Vec::with_capacity(n);
        let mut counts = Vec::with_capacity(n);
        let mut compensations = Vec::new();
        for step in 0..n {
            buf.clear();
            buf.extend(m.iter().filter_map(|&i| input[i].values[step]));
            counts.push(buf.len() as u64);
            values.push(match op {
                AggOp::Sum | AggOp::Avg => {
                    let mut fold = SumFold::default();
                    buf.iter().for_each(|&v| fold.push(v));
                    let (sum, c) = fold.parts();
                    if *op == AggOp::Avg && !sum.is_finite() && buf.iter().all(|v| v.is_finite()) {
                        // the members' mean can be finite where their sum is not: one process
                        // then averages incrementally, which a sum sent as a part cannot undo
                        return Err(Error::Unsupported("an average's part overflows".into()));
                    }
                    compensations.push(c);
                    sum
                }
                _ if buf.is_empty() => 0.0,
                AggOp::Count => buf.len() as f64,
                AggOp::Group => 1.0,
                _ => aggregate_values(*op, &mut buf, f64::NAN),
            });
        }
        if counts.iter().any(|&c| c > 0) {
            let drop_name = m.iter().any(|&i| input[i].drop_name);
            groups.push(PartialGroup { labels, drop_name, values, counts, compensations });
        }
    }
    Ok(PartialAggregate { groups, annotations: ctx.annotations.entries() })
}

/// The aggregation `op` over `n` steps from its parts, each series in one of them, groups
/// ordered by their labels; the parts' annotations go to `annotations`.
pub(crate) fn combine(
    op: AggOp,
    parts: Vec<PartialAggregate>,
    n: usize,
    annotations: &mut Annotations,
) -> Vec<StepSeries> {
    let mut by_labels: HashMap<Labels, (bool, Vec<PartialGroup>)> = HashMap::new();
    for part in parts {
        for (level, message, pos) in part.annotations {
            annotations.add(level, message, pos);
        }
        for g in part.groups {
            let entry = by_labels.entry(g.labels.clone()).or_default();
            entry.0 |= g.drop_name;
            entry.1.push(g);
        }
    }
    let mut out: Vec<StepSeries> = by_labels
        .into_iter()
        .map(|(labels, (drop_name, groups))| {
            let mut buf = Vec::with_capacity(groups.len());
            let values = (0..n)
                .map(|step| {
                    buf.clear();
                    let mut count = 0u64;
                    for g in &groups {
                        let (v, c) = (g.values.get(step).copied(), g.counts.get(step).copied().unwrap_or(0));
                        if let (Some(v), true) = (v, c > 0) {
                            buf.push(SumFold::from_parts(
                                v,
                                g.compensations.get(step).copied().unwrap_or(0.0),
                            ));
                            count += c;
                        }
                    }
                    (count > 0).then(|| combined(op, &buf, count))
                })
                .collect();
            StepSeries { labels, values, hists: Vec::new(), drop_name }
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

/// One step's value of `op` from its parts at that step (each a value and, for `sum` and
/// `avg`, its compensation), `count` members in all.
fn combined(op: AggOp, parts: &[SumFold], count: u64) -> f64 {
    let sum = || {
        let mut all = SumFold::default();
        parts.iter().for_each(|p| all.merge(*p));
        all.value()
    };
    let values = || parts.iter().map(|p| p.parts().0);
    match op {
        AggOp::Sum => sum(),
        AggOp::Avg => {
            let total = sum();
            if total.is_finite() || values().any(|v| !v.is_finite()) {
                total / count as f64
            } else {
                // the sum overflowed where the members' mean does not: as Prometheus
                // switches to an incremental mean, add each part's share of the mean
                kahan_sum(values().map(|v| v / count as f64))
            }
        }
        AggOp::Count => count as f64,
        AggOp::Group => 1.0,
        _ => aggregate_values(op, &mut values().collect::<Vec<_>>(), f64::NAN),
    }
}
