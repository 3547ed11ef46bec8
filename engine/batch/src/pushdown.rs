//! Aggregations evaluated where the series are. Each of a cluster's nodes aggregates the
//! series it holds ([`evaluate_partial`]), and the node that was asked combines the parts
//! ([`AggregatePushdown`]): what crosses the network is one value per group and step (or,
//! for `topk` and `bottomk`, the k members each node ranks highest; for `quantile`,
//! `stddev` and `stdvar`, one value per series and step), not every sample of every series.
//!
//! Only aggregations whose parts combine to the answer of one evaluation over every series
//! are pushed down: `sum`, `avg`, `min`, `max`, `count`, `group` and `count_values`, whose
//! parts combine exactly; `topk` and `bottomk` with a constant k, whose combination the
//! executor declines where ties leave open which members one evaluation would keep
//! ([`combine`]); and `quantile` with a constant φ, `stddev` and `stdvar`, whose answer
//! depends on every member's value, so that each part is its members' values at every step
//! (the input evaluated where the series are), aggregated by the executor as one evaluation
//! does ([`members`]). Their input must work on each series alone (selections, window and value
//! functions, subqueries over such inputs, arithmetic and comparisons with constants). Over
//! disjoint sets of series, the parts of such an aggregation combine to the aggregation over
//! their union; keeping the sets disjoint is the pushdown's job, not the executor's.

use std::collections::HashMap;

use promflow_kernels::{aggregate_values, kahan_sum, rank_count, SumFold};
use promflow_plan::semantics::grouping_key;
use promflow_plan::{AggOp, Annotations, Error, Grouping, Level, Plan, QueryOptions, SourcePos};
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

/// One group of a partial aggregation; for `topk` and `bottomk`, one member the part ranked
/// among its k at some step; for `quantile`, `stddev` and `stdvar`, one member.
#[derive(Clone, Debug, PartialEq)]
pub struct PartialGroup {
    /// The group's labels (with `count_values`' label; a ranked member's own labels).
    pub labels: Labels,
    /// With delayed name removal: a member's metric name was to be removed.
    pub drop_name: bool,
    /// At each step, what the part contributes: the sum of the members' values (`sum`,
    /// `avg`), their minimum or maximum, their count (`count`, `count_values`), 1 (`group`),
    /// or the member's value.
    pub values: Vec<f64>,
    /// At each step, how many members had a value there (none: the part has no value; a
    /// ranked member has 1 where the part ranked it among its k).
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

    /// The parts [`partials`](Self::partials) just gave did not settle the answer (ties at
    /// `topk`'s k-th place): the executor evaluates the aggregation itself.
    fn parts_unused(&self) {}
}

/// Whether `plan` is an aggregation the executor asks an [`AggregatePushdown`] for: one whose
/// parts combine, over an input that treats each series alone, written in a query's text
/// (its position is how another node finds it in the same text).
pub fn pushable(plan: &Plan) -> bool {
    match plan {
        Plan::Aggregate { op, param, input, origin, .. } => {
            let parts_combine = match (op, param.as_deref()) {
                (AggOp::Sum | AggOp::Avg | AggOp::Min | AggOp::Max | AggOp::Count | AggOp::Group, None) => {
                    true
                }
                (AggOp::Topk | AggOp::Bottomk | AggOp::Quantile, Some(param)) => constant(param),
                (AggOp::Stddev | AggOp::Stdvar, None) => true,
                (AggOp::CountValues, Some(label)) => matches!(label, Plan::Str(_)),
                _ => false,
            };
            parts_combine && origin.expr.is_some() && per_series(input)
        }
        _ => false,
    }
}

/// Whether the parts of the aggregation `op` are its members, each with its own labels and
/// values ([`members`]).
pub(crate) fn by_members(op: AggOp) -> bool {
    matches!(op, AggOp::Quantile | AggOp::Stddev | AggOp::Stdvar)
}

/// Whether the parts of the pushable `aggregate` can be asked for with `opts`: a standard
/// deviation or variance sums its members in the order one evaluation meets them, which
/// [`members`] restores from their labels only when no name was removed from them.
pub(crate) fn parts_wanted(aggregate: &Plan, opts: &QueryOptions) -> bool {
    match aggregate {
        Plan::Aggregate { op: AggOp::Stddev | AggOp::Stdvar, .. } => !names_may_collide(aggregate, opts),
        _ => true,
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
    let Plan::Aggregate { op, grouping, param, input, origin } = aggregate else {
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
    let param = ctx.aggregate_param(*op, param.as_deref())?;
    let input = ctx.eval_vector(input)?;
    if input.iter().any(|s| s.hists.iter().any(Option::is_some)) {
        return Err(Error::Unsupported("native histograms are not aggregated in parts".into()));
    }
    if matches!(op, AggOp::Topk | AggOp::Bottomk) {
        let groups = ranked_part(&ctx, *op == AggOp::Topk, grouping, &param.0, input)?;
        return Ok(PartialAggregate { groups, annotations: ctx.annotations.entries() });
    }
    if by_members(*op) {
        let groups = input
            .into_iter()
            .filter(StepSeries::has_any)
            .map(|s| as_group(s, |v| u64::from(v.is_some())))
            .collect();
        return Ok(PartialAggregate { groups, annotations: ctx.annotations.entries() });
    }
    if *op == AggOp::CountValues {
        // the part is the aggregation over this node's series: its count of each value
        let out = ctx.aggregate_vector(*op, grouping, &param, input, origin)?;
        let groups = out.into_iter().map(|s| as_group(s, |count| count.map_or(0, |c| c as u64))).collect();
        return Ok(PartialAggregate { groups, annotations: ctx.annotations.entries() });
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

/// The series `s` as a part's group: its values, 0 where it has none, and at each step the
/// count `count` gives its value there.
fn as_group(s: StepSeries, count: impl Fn(Option<f64>) -> u64) -> PartialGroup {
    PartialGroup {
        counts: s.values.iter().map(|&v| count(v)).collect(),
        values: s.values.iter().map(|v| v.unwrap_or(0.0)).collect(),
        labels: s.labels,
        drop_name: s.drop_name,
        compensations: Vec::new(),
    }
}

/// The part of `topk` (`top`) or `bottomk` with `k` at each step over `input`: at each step,
/// the k members of each group that rank highest (lowest), and one more where it ties with
/// the k-th, which tells the combination that the part chose between equal members.
fn ranked_part(
    ctx: &Ctx<'_>,
    top: bool,
    grouping: &Grouping,
    k: &[f64],
    input: Vec<StepSeries>,
) -> Result<Vec<PartialGroup>, Error> {
    let n = ctx.steps.len();
    let (_, members) = ctx.groups(&input, grouping)?;
    let mut ranked = vec![vec![false; n]; input.len()];
    let mut present: Vec<(usize, f64)> = Vec::new();
    for (step, &k) in k.iter().enumerate().take(n) {
        ctx.check_deadline()?;
        if k.is_nan() {
            return Err(Error::Execution("Parameter value is NaN".into()));
        }
        let k = rank_count(k);
        for m in &members {
            present.clear();
            present.extend(m.iter().filter_map(|&i| input[i].values[step].map(|v| (i, v))));
            present.sort_by(|a, b| crate::cmp_nan_last(Some(a.1), Some(b.1), top));
            let tied = k > 0 && present.len() > k && same_value(present[k].1, present[k - 1].1);
            for &(i, _) in present.iter().take(k + usize::from(tied)) {
                ranked[i][step] = true;
            }
        }
    }
    Ok(input
        .into_iter()
        .zip(ranked)
        .filter(|(_, ranked)| ranked.contains(&true))
        .map(|(s, ranked)| PartialGroup {
            counts: ranked.iter().map(|&r| u64::from(r)).collect(),
            values: s
                .values
                .iter()
                .zip(&ranked)
                .map(|(v, &r)| if r { v.unwrap_or(f64::NAN) } else { 0.0 })
                .collect(),
            labels: s.labels,
            drop_name: s.drop_name,
            compensations: Vec::new(),
        })
        .collect())
}

/// Whether two values rank alike: equal, or both NaN.
fn same_value(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// The aggregation `op` (grouped by `grouping`, keeping `k[step]` members for `topk` and
/// `bottomk`) over `n` steps from its parts, each series in one of them; the parts'
/// annotations go to `annotations`. `None` when the parts leave the answer open (ties at
/// the k-th place, [`combine_ranked`]): the executor then evaluates the aggregation itself.
pub(crate) fn combine(
    op: AggOp,
    grouping: &Grouping,
    k: &[f64],
    parts: Vec<PartialAggregate>,
    n: usize,
    annotations: &mut Annotations,
) -> Option<Vec<StepSeries>> {
    let (groups, notes) = split(parts);
    let out = match op {
        AggOp::Topk | AggOp::Bottomk => combine_ranked(op == AggOp::Topk, grouping, k, &groups, n)?,
        _ => combine_groups(op, groups, n),
    };
    add_all(annotations, notes);
    Some(out)
}

/// The members of an aggregation [`by_members`] from its parts, over `n` steps, in label
/// order, for the executor to aggregate; the parts' annotations go to `annotations`. `None`
/// when two parts hold a series of the same labels. Label order is the order one evaluation
/// meets them in: storage's queriers select series in label order, and an input that treats
/// each series alone keeps it, as long as no metric name was removed ([`parts_wanted`]).
pub(crate) fn members(
    parts: Vec<PartialAggregate>,
    n: usize,
    annotations: &mut Annotations,
) -> Option<Vec<StepSeries>> {
    let (groups, notes) = split(parts);
    let out = in_label_order(&groups)?
        .into_iter()
        .map(|g| StepSeries {
            labels: g.labels.clone(),
            values: (0..n)
                .map(|step| g.counts.get(step).is_some_and(|&c| c > 0).then(|| g.values.get(step).copied()))
                .map(Option::flatten)
                .collect(),
            hists: Vec::new(),
            drop_name: g.drop_name,
        })
        .collect();
    add_all(annotations, notes);
    Some(out)
}

type Notes = Vec<(Level, String, Option<SourcePos>)>;

/// The parts' groups, and their annotations.
fn split(parts: Vec<PartialAggregate>) -> (Vec<Vec<PartialGroup>>, Notes) {
    let mut notes = Vec::new();
    let mut groups = Vec::with_capacity(parts.len());
    for part in parts {
        notes.extend(part.annotations);
        groups.push(part.groups);
    }
    (groups, notes)
}

fn add_all(annotations: &mut Annotations, notes: Notes) {
    for (level, message, pos) in notes {
        annotations.add(level, message, pos);
    }
}

/// Every group of the parts in label order; `None` when two have the same labels.
fn in_label_order(parts: &[Vec<PartialGroup>]) -> Option<Vec<&PartialGroup>> {
    let mut all: Vec<&PartialGroup> = parts.iter().flatten().collect();
    all.sort_by(|a, b| a.labels.cmp(&b.labels));
    (!all.windows(2).any(|w| w[0].labels == w[1].labels)).then_some(all)
}

/// The groups of an aggregation whose parts combine exactly, from each part's groups, ordered
/// by their labels.
fn combine_groups(op: AggOp, parts: Vec<Vec<PartialGroup>>, n: usize) -> Vec<StepSeries> {
    let mut by_labels: HashMap<Labels, (bool, Vec<PartialGroup>)> = HashMap::new();
    for g in parts.into_iter().flatten() {
        let entry = by_labels.entry(g.labels.clone()).or_default();
        entry.0 |= g.drop_name;
        entry.1.push(g);
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

/// `topk` (`top`) or `bottomk` from the members each part ranked ([`ranked_part`]), in the
/// order one evaluation over every series lists them. That evaluation keeps the members
/// Prometheus's heap keeps, and between equal values the heap's choice depends on every
/// member it met, which the parts do not tell; so the combination is `None` where that
/// choice shows: a value equal to the k-th one just beyond it (where a part chose between
/// members equal to its k-th, the one more it sent is such a value whenever the choice
/// matters), or, in an instant result, which is ordered by value, two kept members with
/// equal values. Elsewhere the k members kept are the only k there are.
fn combine_ranked(
    top: bool,
    grouping: &Grouping,
    k: &[f64],
    parts: &[Vec<PartialGroup>],
    n: usize,
) -> Option<Vec<StepSeries>> {
    // every ranked member in label order, as one evaluation meets them
    let all = in_label_order(parts)?;
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, g) in all.iter().enumerate() {
        let next = members.len();
        let group = *index.entry(grouping_key(&g.labels, grouping)).or_insert(next);
        if group == next {
            members.push(Vec::new());
        }
        members[group].push(i);
    }
    let mut kept = vec![vec![None; n]; all.len()];
    let mut ranked: Vec<(usize, f64)> = Vec::new();
    if k.len() < n {
        return None;
    }
    for (step, &k) in k.iter().enumerate().take(n) {
        if k.is_nan() {
            return None;
        }
        let k = rank_count(k);
        for m in &members {
            ranked.clear();
            ranked.extend(
                m.iter()
                    .filter(|&&i| all[i].counts.get(step).is_some_and(|&c| c > 0))
                    .map(|&i| (i, all[i].values.get(step).copied().unwrap_or(f64::NAN))),
            );
            ranked.sort_by(|a, b| crate::cmp_nan_last(Some(a.1), Some(b.1), top));
            // a part that chose between members equal to its k-th sent one of them more:
            // when its k-th is the k-th of all, that one is next here
            if k > 0 && ranked.get(k).is_some_and(|r| same_value(r.1, ranked[k - 1].1)) {
                return None;
            }
            for &(i, v) in ranked.iter().take(k) {
                kept[i][step] = Some(v);
            }
        }
    }
    let mut out: Vec<StepSeries> = all
        .iter()
        .zip(kept)
        .map(|(g, values)| StepSeries {
            labels: g.labels.clone(),
            values,
            hists: Vec::new(),
            drop_name: g.drop_name,
        })
        .filter(StepSeries::has_any)
        .collect();
    if n == 1 {
        out.sort_by(|a, b| crate::cmp_nan_last(a.values[0], b.values[0], top));
        let value = |s: &StepSeries| s.values[0].unwrap_or(f64::NAN);
        if out.windows(2).any(|w| same_value(value(&w[0]), value(&w[1]))) {
            return None;
        }
    }
    Some(out)
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
        AggOp::Count | AggOp::CountValues => count as f64,
        AggOp::Group => 1.0,
        _ => aggregate_values(op, &mut values().collect::<Vec<_>>(), f64::NAN),
    }
}
