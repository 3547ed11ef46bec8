//! From the plan IR to a dataflow, in two halves.
//!
//! * **Lowering** (on the controller): a [`Plan`] becomes a [`Node`] tree. Sub-plans that an
//!   earlier view already arranged become [`Node::Import`]s of that arrangement, so two rules
//!   that share `rate(x[5m])` share its state. Every selection and window function and every
//!   view's root is arranged and registered for later views to share.
//! * **Rendering** (on every worker, in the same order): a [`Node`] tree becomes timely and
//!   differential operators. Selections and window functions are the per-series operator
//!   ([`super::series`]); value functions and scalar operations are maps; `sum`, `count`,
//!   `avg` and `group` are differences counted per group ([`super::abelian`]), the other
//!   aggregations differential `reduce`s; vector matching is a differential `join`, set operators
//!   `semijoin`/`antijoin`. Every value is computed by the batch executor's kernels and
//!   label rules.

use std::sync::Arc;

use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::{AsCollection, VecCollection};
use promflow_storage::{Labels, MatchOp, Matcher};
use timely::dataflow::operators::vec::Map as _;
use timely::dataflow::operators::{Concat, Input, Probe, ToStream};
use timely::dataflow::{ProbeHandle, Scope, Stream};

use super::abelian;
use super::keys::{KeyMap, Keys};
use super::series::{self, Keep, ReadBack, SeriesFn};
use super::{Counters, Grain, Operator, Value, WorkerState};
use promflow_kernels as kernels;
use promflow_kernels::{aggregate_values, combine};
use promflow_plan::semantics::{
    absent_labels, compile_relabel, effective_info_name_matchers, grouping_key, parse_le, relabel_one,
    result_labels, strip_metric_identity, INFO_IDENTIFYING_LABELS,
};
use promflow_plan::Error;
use promflow_plan::ValueKind;
use promflow_plan::{
    AggOp, BinOp, Cardinality, Edges, Grouping, JoinKey, MapFn, Plan, Relabel, TimeAnchor, TimeShift,
    VectorFn, WindowFn,
};

/// A lowered plan: what the workers build for one view.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    /// An arrangement an earlier view built.
    Import(usize),
    /// Arranges the input and registers it under `id`.
    Arrange { id: usize, input: Box<Node> },
    /// The per-series operator over the samples fed to input `leaf`, keeping them as `keep`
    /// says, evaluated when `time` says. With `distinct_names`, the function drops the
    /// metric name of series that may have different ones: two that become one label set
    /// are the batch executor's error. A window function's first argument that changes is
    /// `arg`'s value (a scalar collection).
    Series {
        leaf: usize,
        func: SeriesFn,
        keep: Keep,
        time: LeafTime,
        distinct_names: bool,
        arg: Option<Box<Node>>,
    },
    /// A window function over a subquery: `inner` is sampled at every multiple of `step_ms`
    /// (each element's value there is a sample of its series) and the samples go through the
    /// per-series operator, evaluated when `time` says, with `leaf` an input for the samples
    /// of the steps before the view's start (computed by the batch executor), and `arg` as
    /// in [`Node::Series`].
    Subquery {
        inner: Box<Node>,
        step_ms: i64,
        time: LeafTime,
        leaf: usize,
        func: SeriesFn,
        keep: Keep,
        arg: Option<Box<Node>>,
    },
    /// A value function of each element (the metric name is dropped).
    Map { input: Box<Node>, func: MapFn, args: Vec<f64> },
    /// An operation between each element and a scalar.
    ScalarOp { input: Box<Node>, op: BinOp, scalar: Scalar, scalar_left: bool, return_bool: bool },
    /// `timestamp(v)` of a computed vector: each element's value is the evaluation time.
    Timestamp { input: Box<Node> },
    /// `time()`: one element with no labels whose value is the evaluation time in seconds,
    /// brought up to date at every tick of the clock.
    Now,
    /// `scalar(v)`: one element with no labels, the input's only element's value, or NaN
    /// when it has none or several.
    ScalarOf { input: Box<Node> },
    /// `label_replace`, `label_join`.
    Relabel { input: Box<Node>, rule: Relabel },
    /// An aggregation by groups (`param`: the quantile, `k` of `topk`/`bottomk`/`limitk`, the
    /// ratio of `limit_ratio`).
    Aggregate { input: Box<Node>, op: AggOp, grouping: Grouping, param: Scalar },
    /// One element at all times (`vector(c)`).
    Constant { labels: Labels, value: f64 },
    /// One element with `labels` and value 1 while the input is empty (`absent`,
    /// `absent_over_time`).
    Absent { input: Box<Node>, labels: Labels },
    /// `histogram_quantile(φ, …)`, `histogram_quantiles(…, label, φ…)` or
    /// `histogram_fraction(lower, upper, …)` over classic buckets: the series that differ
    /// only in `le` are one histogram. `histogram_quantiles` gives one element per quantile,
    /// which `quantile_label` names.
    Histogram { input: Box<Node>, func: VectorFn, params: Vec<f64>, quantile_label: Option<String> },
    /// `info(input, {…})`: each element gains the data labels of the newest info series
    /// (`info`: their sample timestamps) with its `instance` and `job`, one per info metric;
    /// elements that are info series themselves (`ignore` matches their name) pass as they
    /// are, and unmatched elements pass only if `keep_unmatched`. With `data_names`, only
    /// those labels are added.
    Info {
        input: Box<Node>,
        info: Box<Node>,
        ignore: Vec<Matcher>,
        data_names: Vec<String>,
        keep_unmatched: bool,
    },
    /// Vector matching.
    Join { lhs: Box<Node>, rhs: Box<Node>, op: BinOp, key: JoinKey, return_bool: bool },
}

/// A scalar operand.
#[derive(Clone, Debug)]
pub(crate) enum Scalar {
    /// The same value at all times.
    Constant(f64),
    /// A collection of at most one element with no labels whose value changes with time
    /// (`time()`, `scalar(v)`, operations between them).
    Varying(Box<Node>),
}

impl Scalar {
    /// The scalar as a collection: `vector(s)`.
    fn into_node(self) -> Node {
        match self {
            Scalar::Constant(value) => Node::Constant { labels: Labels::new(), value },
            Scalar::Varying(node) => *node,
        }
    }
}

impl Node {
    /// Calls `f` on this node and every node below it.
    pub(crate) fn walk(&self, f: &mut impl FnMut(&Node)) {
        f(self);
        match self {
            Node::Import(_) | Node::Series { arg: None, .. } | Node::Constant { .. } | Node::Now => {}
            Node::Series { arg: Some(arg), .. } => arg.walk(f),
            Node::Subquery { inner, arg, .. } => {
                inner.walk(f);
                if let Some(arg) = arg {
                    arg.walk(f);
                }
            }
            Node::ScalarOp { input, scalar, .. } | Node::Aggregate { input, param: scalar, .. } => {
                input.walk(f);
                if let Scalar::Varying(node) = scalar {
                    node.walk(f);
                }
            }
            Node::Arrange { input, .. }
            | Node::Map { input, .. }
            | Node::ScalarOf { input }
            | Node::Timestamp { input }
            | Node::Relabel { input, .. }
            | Node::Absent { input, .. }
            | Node::Histogram { input, .. } => input.walk(f),
            Node::Join { lhs, rhs, .. } | Node::Info { input: lhs, info: rhs, .. } => {
                lhs.walk(f);
                rhs.walk(f);
            }
        }
    }
}

/// The controller's record of what has been built: arranged sub-plans and the leaves that
/// samples are fed to.
#[derive(Default)]
pub(crate) struct Registry {
    /// Arranged sub-plans, with the lookback and grain they were lowered with, and their ids.
    arranged: Vec<(Plan, i64, Option<Grain>, usize)>,
    /// Leaf inputs and the selection whose samples they take.
    pub(crate) leaves: Vec<(usize, Vec<Matcher>)>,
    /// Storage to read samples back from, and from which window length operators keep only
    /// a window's ends ([`Keep::Ends`]).
    pub(crate) read_back: Option<(ReadBack, i64)>,
    /// The next arrangement's id: ids are never reused, since a dropped view's arrangements
    /// leave gaps.
    next: usize,
    /// Changes whenever `leaves` does, so that routes worked out before are redone.
    pub(crate) leaves_version: u64,
}

impl Registry {
    /// How many arrangements views have registered.
    pub(crate) fn arrangements(&self) -> usize {
        self.arranged.len()
    }

    /// Lowers a view's plan; returns the tree to build (`None` when an identical view exists),
    /// the arrangement the view reads, and the leaves it adds (which start empty). Nothing is
    /// registered when the plan is not supported.
    pub(crate) fn lower_view(
        &mut self,
        plan: &Plan,
        lookback: i64,
        grain: Option<Grain>,
    ) -> Result<Lowered, Error> {
        let mut l = Lowering {
            reg: self,
            lookback,
            grain,
            new: Vec::new(),
            leaves: Vec::new(),
            pinned: Vec::new(),
            subqueries: Vec::new(),
        };
        let node = l.lower(plan)?;
        let (node, id) = match node {
            Node::Import(id) => (None, id),
            node @ Node::Arrange { id, .. } => (Some(node), id),
            node => {
                let id = l.next_id();
                l.new.push((plan.clone(), lookback, grain, id));
                (Some(Node::Arrange { id, input: Box::new(node) }), id)
            }
        };
        let (new, leaves, pinned, subqueries) = (l.new, l.leaves, l.pinned, l.subqueries);
        self.next += new.len();
        self.arranged.extend(new);
        self.add_leaves(&leaves);
        Ok(Lowered { node, arrangement: id, new_leaves: leaves, grain, pinned, subqueries })
    }
}

impl Registry {
    /// A new id for what is not an arrangement of the dataflow (a node of the hub).
    pub(crate) fn take_id(&mut self) -> usize {
        self.next += 1;
        self.next - 1
    }

    /// Registers leaves that samples are fed to.
    pub(crate) fn add_leaves(&mut self, leaves: &[(usize, Vec<Matcher>)]) {
        if !leaves.is_empty() {
            self.leaves.extend(leaves.iter().cloned());
            self.leaves_version += 1;
        }
    }

    /// Forgets arrangements and leaves whose dataflow was dropped: later views build them
    /// anew, and samples no longer go to the leaves.
    pub(crate) fn forget(&mut self, arrangements: &[usize], leaves: &[usize]) {
        self.arranged.retain(|(_, _, _, id)| !arrangements.contains(id));
        if !leaves.is_empty() {
            self.leaves.retain(|(id, _)| !leaves.contains(id));
            self.leaves_version += 1;
        }
    }
}

/// What [`Registry::lower_view`] decided.
pub(crate) struct Lowered {
    /// The tree to build (`None` when an identical view exists).
    pub(crate) node: Option<Node>,
    /// The arrangement the view reads.
    pub(crate) arrangement: usize,
    /// The leaves it adds, with their selections and how far back they see (their window
    /// or the lookback).
    pub(crate) new_leaves: Vec<(usize, Vec<Matcher>)>,
    /// The grain its new operators change at.
    pub(crate) grain: Option<Grain>,
    /// The new leaves evaluated at a fixed time (`@`), with the span of sample times they
    /// see, `(from, to]`: their history, wherever it lies.
    pub(crate) pinned: Vec<(usize, i64, i64)>,
    /// The new subqueries: their history leaf and what fills it.
    pub(crate) subqueries: Vec<SubqueryHistory>,
}

/// What a subquery's window needs from before its view starts: the inner plan's values at
/// the steps within its reach, which the batch executor computes.
#[derive(Clone, Debug)]
pub(crate) struct SubqueryHistory {
    /// The leaf the values are fed to.
    pub(crate) leaf: usize,
    /// The inner plan.
    pub(crate) inner: Plan,
    /// The subquery's resolution.
    pub(crate) step_ms: i64,
    /// Its range.
    pub(crate) range_ms: i64,
    /// When its window is evaluated.
    pub(crate) time: LeafTime,
}

impl SubqueryHistory {
    /// The span of steps, `(from, to]`, that the windows evaluated from `start` on see
    /// before `start`.
    pub(crate) fn before(&self, start: i64) -> (i64, i64) {
        match self.time {
            LeafTime::Shifted(offset) => (start - self.range_ms - offset, start - 1),
            LeafTime::Pinned(t) => (t - self.range_ms, t.min(start - 1)),
        }
    }
}

struct Lowering<'r> {
    reg: &'r Registry,
    lookback: i64,
    grain: Option<Grain>,
    new: Vec<(Plan, i64, Option<Grain>, usize)>,
    leaves: Vec<(usize, Vec<Matcher>)>,
    pinned: Vec<(usize, i64, i64)>,
    subqueries: Vec<SubqueryHistory>,
}

fn unsupported(what: impl std::fmt::Display) -> Error {
    Error::Unsupported(what.to_string())
}

/// The value of a scalar plan that does not depend on time or data.
pub(super) fn constant(plan: &Plan) -> Option<f64> {
    match plan {
        Plan::Number(n) => Some(*n),
        Plan::ScalarOp { op, lhs, rhs, .. } => Some(kernels::binary(*op, constant(lhs)?, constant(rhs)?)),
        Plan::Map { func: MapFn::Negate, input, .. } => constant(input).map(|v| -v),
        _ => None,
    }
}

/// The values of scalar arguments that must be constants ([`Error::Unsupported`] otherwise).
pub(super) fn constants(args: &[Plan]) -> Result<Vec<f64>, Error> {
    args.iter()
        .map(|a| constant(a).ok_or_else(|| unsupported("a scalar argument that is not a constant")))
        .collect()
}

/// When a selection or window is evaluated, relative to the view's evaluation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeafTime {
    /// At each evaluation, over the samples counted this many milliseconds after their
    /// timestamps (a positive `offset`, or none): the same as evaluating that much earlier.
    Shifted(i64),
    /// At this fixed time whatever the evaluation's (`@ t`, its offset taken off): samples
    /// after it are ignored, and nothing expires as the clock moves.
    Pinned(i64),
}

impl LeafTime {
    /// How a shift is maintained; `None` for negative offsets and `@ start()`/`@ end()`,
    /// which read samples after the evaluation or a query range a view does not have.
    pub(super) fn of(shift: &TimeShift) -> Option<LeafTime> {
        match shift.at {
            TimeAnchor::Step if shift.offset_ms >= 0 => Some(LeafTime::Shifted(shift.offset_ms)),
            TimeAnchor::Fixed(t) => Some(LeafTime::Pinned(t.saturating_sub(shift.offset_ms))),
            _ => None,
        }
    }
}

/// Why a shifted selection is not maintained.
const NOT_SHIFTED: &str =
    "@ start(), @ end(), a negative offset, or an offset under a function of the samples' times";

/// When a window function over a window or subquery shifted by `shift` is evaluated: a
/// shifted window is the window over samples counted `offset` later, except for what reads
/// the samples' times against the evaluation's.
pub(super) fn window_time(func: WindowFn, shift: &TimeShift) -> Result<LeafTime, Error> {
    LeafTime::of(shift)
        .filter(|t| !matches!(t, LeafTime::Shifted(o) if *o > 0 && reads_sample_times(func)))
        .ok_or_else(|| unsupported(NOT_SHIFTED))
}

/// Why a smoothed selection is not maintained: its value at an evaluation interpolates
/// towards the first sample after it, which a view has not seen yet.
const NOT_CAUSAL: &str = "smoothed edges, which read samples after the evaluation time";

/// Window functions whose value depends on the samples' times against the evaluation time
/// (not only on their order and spacing): shifting the samples would change them.
fn reads_sample_times(func: WindowFn) -> bool {
    matches!(
        func,
        WindowFn::PredictLinear
            | WindowFn::TsOfMinOverTime
            | WindowFn::TsOfMaxOverTime
            | WindowFn::TsOfLastOverTime
            | WindowFn::TsOfFirstOverTime
    )
}

impl Lowering<'_> {
    fn next_id(&self) -> usize {
        self.reg.next + self.new.len()
    }

    fn find(&self, plan: &Plan) -> Option<usize> {
        self.reg
            .arranged
            .iter()
            .chain(&self.new)
            .find(|(p, lb, g, _)| *lb == self.lookback && *g == self.grain && p == plan)
            .map(|&(_, _, _, id)| id)
    }

    /// Registers `plan` as arranged, built by `node`.
    fn arrange(&mut self, plan: &Plan, make: impl FnOnce(usize) -> Node) -> Node {
        let id = self.next_id();
        self.new.push((plan.clone(), self.lookback, self.grain, id));
        Node::Arrange { id, input: Box::new(make(id)) }
    }

    /// A leaf fed the samples of `matchers`, computing `func` per series, each sample
    /// counting `offset_ms` after its timestamp; arranged as `plan`.
    fn series(&mut self, plan: &Plan, matchers: &[Matcher], func: SeriesFn, time: LeafTime) -> Node {
        self.series_with(plan, matchers, func, time, None)
    }

    /// [`Lowering::series`] with a window function's first argument that changes.
    fn series_with(
        &mut self,
        plan: &Plan,
        matchers: &[Matcher],
        func: SeriesFn,
        time: LeafTime,
        arg: Option<Box<Node>>,
    ) -> Node {
        let leaf = self.next_id();
        self.leaves.push((leaf, matchers.to_vec()));
        if let LeafTime::Pinned(t) = time {
            // its history is what it sees at its time, however long ago
            self.pinned.push((leaf, t.saturating_sub(func.span()), t));
        }
        // reading a window back from storage follows the window's moving start: not for a
        // shift or a pinned window
        let read_back = if time == LeafTime::Shifted(0) { self.reg.read_back.as_ref() } else { None };
        let keep = Keep::choose(&func, matchers, read_back);
        // only a selection that does not fix the name can give two series one label set
        // when the name goes (a check that costs an arrangement of the result)
        let distinct_names = func.drops_name()
            && !matchers.iter().any(|m| m.name == promflow_storage::METRIC_NAME && m.op == MatchOp::Equal);
        self.arrange(plan, |leaf| Node::Series { leaf, func, keep, time, distinct_names, arg })
    }

    /// A window function's arguments: constants, or a first one that changes (its value
    /// stands as NaN until the scalar's first).
    fn window_args(&mut self, args: &[Plan]) -> Result<(Vec<f64>, Option<Box<Node>>), Error> {
        if let Ok(constants) = constants(args) {
            return Ok((constants, None));
        }
        let Some((first, rest)) = args.split_first() else { return Ok((Vec::new(), None)) };
        let mut values = vec![f64::NAN];
        values.extend(constants(rest)?);
        match self.lower_scalar(first)? {
            Scalar::Constant(c) => {
                Ok((vec![c].into_iter().chain(values.into_iter().skip(1)).collect(), None))
            }
            Scalar::Varying(node) => Ok((values, Some(node))),
        }
    }

    /// `absent_over_time(w)`: 1 while no series has a sample in the window, the absence of
    /// `present_over_time` over the same window.
    fn absent_over_time(&mut self, window: &Plan) -> Result<Node, Error> {
        let present = Plan::WindowFunction {
            func: WindowFn::PresentOverTime,
            input: Box::new(window.clone()),
            args: Vec::new(),
            origin: Default::default(),
        };
        let labels = absent_labels(window);
        Ok(Node::Absent { input: Box::new(self.lower(&present)?), labels })
    }

    /// A scalar operand: a constant, or a collection of one element with no labels.
    fn lower_scalar(&mut self, plan: &Plan) -> Result<Scalar, Error> {
        if let Some(value) = constant(plan) {
            return Ok(Scalar::Constant(value));
        }
        let node = match plan {
            Plan::Time => Node::Now,
            Plan::VectorFunction { func: VectorFn::Scalar, input, .. } => {
                Node::ScalarOf { input: Box::new(self.lower(input)?) }
            }
            // between two scalars: the left one is a one-element vector with no labels
            Plan::ScalarOp { op, lhs, rhs, return_bool } => Node::ScalarOp {
                input: Box::new(self.lower_scalar(lhs)?.into_node()),
                op: *op,
                scalar: self.lower_scalar(rhs)?,
                scalar_left: false,
                return_bool: *return_bool,
            },
            Plan::Map { func: MapFn::Negate, input, .. } => Node::Map {
                input: Box::new(self.lower_scalar(input)?.into_node()),
                func: MapFn::Negate,
                args: Vec::new(),
            },
            other => {
                let line = other.to_string();
                return Err(unsupported(format!(
                    "the scalar {}",
                    line.lines().next().unwrap_or_default().trim()
                )));
            }
        };
        Ok(Scalar::Varying(Box::new(node)))
    }

    fn lower(&mut self, plan: &Plan) -> Result<Node, Error> {
        if let Some(id) = self.find(plan) {
            return Ok(Node::Import(id));
        }
        Ok(match plan {
            Plan::Select { matchers, shift, edges: Edges::Plain } => {
                let time = LeafTime::of(shift).ok_or_else(|| unsupported(NOT_SHIFTED))?;
                self.series(
                    plan,
                    matchers,
                    SeriesFn::Last { lookback: self.lookback, timestamp: false, keep_name: false },
                    time,
                )
            }
            // the samples' own timestamps: not under an offset, which moves them
            Plan::Map { func: MapFn::Timestamp, input, .. } if matches!(&**input, Plan::Select { shift, edges: Edges::Plain, .. } if matches!(LeafTime::of(shift), Some(LeafTime::Shifted(0) | LeafTime::Pinned(_)))) =>
            {
                let Plan::Select { matchers, shift, .. } = &**input else { unreachable!() };
                let time = LeafTime::of(shift).ok_or_else(|| unsupported(NOT_SHIFTED))?;
                self.series(
                    plan,
                    matchers,
                    SeriesFn::Last { lookback: self.lookback, timestamp: true, keep_name: false },
                    time,
                )
            }
            Plan::Select { edges: Edges::Smoothed, .. } => return Err(unsupported(NOT_CAUSAL)),
            Plan::WindowFunction { func, input, args, .. } if matches!(&**input, Plan::SubWindow { .. }) => {
                let Plan::SubWindow { input: inner, range_ms, step_ms, shift } = &**input else {
                    unreachable!()
                };
                let time = window_time(*func, shift)?;
                // a step sampled before an `@` time inside would need the samples after it
                if let Some(inner_pin) = inner.latest_pinned_ms() {
                    if !matches!(time, LeafTime::Pinned(p) if inner_pin <= p - range_ms) {
                        return Err(unsupported(
                            "an @ inside a subquery, whose steps before it would read later samples",
                        ));
                    }
                }
                if *func == WindowFn::AbsentOverTime {
                    return self.absent_over_time(input);
                }
                // the inner values must be exact at every step, not at the grain's times
                let grain = self.grain.take();
                let inner_node = self.lower(inner);
                self.grain = grain;
                let inner_node = Box::new(inner_node?);
                // lowered after the inner expression, as they are rendered
                let (args, arg) = self.window_args(args)?;
                let step_ms = (*step_ms).max(1);
                let leaf = self.next_id();
                self.subqueries.push(SubqueryHistory {
                    leaf,
                    inner: (**inner).clone(),
                    step_ms,
                    range_ms: *range_ms,
                    time,
                });
                let func = SeriesFn::Window { func: *func, range: *range_ms, args };
                let keep = Keep::choose(&func, &[], None);
                self.arrange(plan, |leaf| Node::Subquery {
                    inner: inner_node,
                    step_ms,
                    time,
                    leaf,
                    func,
                    keep,
                    arg,
                })
            }
            Plan::WindowFunction { input, .. }
                if matches!(&**input, Plan::Window { edges: Edges::Smoothed, .. }) =>
            {
                return Err(unsupported(NOT_CAUSAL))
            }
            Plan::WindowFunction {
                func:
                    func @ (WindowFn::Rate
                    | WindowFn::Increase
                    | WindowFn::Delta
                    | WindowFn::Changes
                    | WindowFn::Resets),
                input,
                ..
            } if matches!(&**input, Plan::Window { edges: Edges::Anchored, .. }) => {
                let Plan::Window { matchers, range_ms, shift, .. } = &**input else { unreachable!() };
                let time = LeafTime::of(shift).ok_or_else(|| unsupported(NOT_SHIFTED))?;
                let anchored = SeriesFn::Anchored { func: *func, range: *range_ms, lookback: self.lookback };
                self.series(plan, matchers, anchored, time)
            }
            Plan::WindowFunction { func, input, args, .. } => {
                let Plan::Window { matchers, range_ms, shift, edges: Edges::Plain } = &**input else {
                    return Err(unsupported(format!("{func:?} over an anchored window")));
                };
                let time = window_time(*func, shift)?;
                if *func == WindowFn::AbsentOverTime {
                    return self.absent_over_time(input);
                }
                let (args, arg) = self.window_args(args)?;
                let func = SeriesFn::Window { func: *func, range: *range_ms, args };
                self.series_with(plan, matchers, func, time, arg)
            }
            Plan::Map { func, input, args } if input.kind() == promflow_plan::ValueKind::Instant => {
                if *func == MapFn::Timestamp {
                    return Ok(Node::Timestamp { input: Box::new(self.lower(input)?) });
                }
                Node::Map { input: Box::new(self.lower(input)?), func: *func, args: constants(args)? }
            }
            Plan::ScalarOp { op, lhs, rhs, return_bool } => {
                let (input, scalar, scalar_left) = match (lhs.kind(), rhs.kind()) {
                    (ValueKind::Scalar, ValueKind::Instant) => (rhs, lhs, true),
                    (ValueKind::Instant, ValueKind::Scalar) => (lhs, rhs, false),
                    _ => return Err(unsupported("scalar expressions")),
                };
                let input = Box::new(self.lower(input)?);
                let scalar = self.lower_scalar(scalar)?;
                Node::ScalarOp { input, op: *op, scalar, scalar_left, return_bool: *return_bool }
            }
            Plan::Relabel { rule, input } => {
                compile_relabel(rule)?;
                Node::Relabel { input: Box::new(self.lower(input)?), rule: rule.clone() }
            }
            Plan::Aggregate { op, grouping, param, input, .. } => {
                // lowered in the order they are rendered: an arrangement before its imports
                let input = Box::new(self.lower(input)?);
                let param = match (op, param) {
                    (AggOp::Sum | AggOp::Avg | AggOp::Min | AggOp::Max | AggOp::Count, None)
                    | (AggOp::Group | AggOp::Stddev | AggOp::Stdvar, None) => Scalar::Constant(0.0),
                    (
                        AggOp::Quantile | AggOp::Topk | AggOp::Bottomk | AggOp::Limitk | AggOp::LimitRatio,
                        Some(p),
                    ) => {
                        match self.lower_scalar(p)? {
                            // Prometheus fails every evaluation, with or without elements
                            Scalar::Constant(k) if k.is_nan() && *op == AggOp::LimitRatio => {
                                return Err(Error::Execution("Ratio value is NaN".into()))
                            }
                            Scalar::Constant(k) if k.is_nan() && *op != AggOp::Quantile => {
                                return Err(Error::Execution("Parameter value is NaN".into()))
                            }
                            param => param,
                        }
                    }
                    _ => return Err(unsupported(format!("the {op:?} aggregation"))),
                };
                Node::Aggregate { input, op: *op, grouping: grouping.clone(), param }
            }
            Plan::Join { op, lhs, rhs, key, return_bool } => {
                let (lhs, rhs) = (Box::new(self.lower(lhs)?), Box::new(self.lower(rhs)?));
                Node::Join { lhs, rhs, op: *op, key: key.clone(), return_bool: *return_bool }
            }
            // a view has no order: sorting leaves it as it is
            Plan::VectorFunction {
                func: VectorFn::Sort | VectorFn::SortDesc | VectorFn::SortByLabel | VectorFn::SortByLabelDesc,
                input,
                ..
            } => self.lower(input)?,
            Plan::ToVector(scalar) => self.lower_scalar(scalar)?.into_node(),
            Plan::Info { input: info_input, data_matchers, shift } => {
                let time = LeafTime::of(shift).ok_or_else(|| unsupported(NOT_SHIFTED))?;
                // lowered in the order they are rendered: an arrangement before its imports
                let input = Box::new(self.lower(info_input)?);
                let (names, data): (Vec<Matcher>, Vec<Matcher>) = data_matchers
                    .iter()
                    .flatten()
                    .cloned()
                    .partition(|m| m.name == promflow_storage::METRIC_NAME);
                // the info series, by the batch executor's rules, with their samples' times
                let mut matchers = data.clone();
                matchers.extend(effective_info_name_matchers(&names, !names.is_empty()));
                let selection = Plan::Info {
                    input: Box::new(Plan::Number(0.0)), // a key no query plan has, to share it
                    data_matchers: Some(matchers.clone()),
                    shift: *shift,
                };
                let info = match self.find(&selection) {
                    Some(id) => Node::Import(id),
                    None => {
                        let last =
                            SeriesFn::Last { lookback: self.lookback, timestamp: true, keep_name: true };
                        self.series(&selection, &matchers, last, time)
                    }
                };
                Node::Info {
                    input,
                    info: Box::new(info),
                    ignore: effective_info_name_matchers(&names, data_matchers.is_some()),
                    data_names: data.iter().map(|m| m.name.clone()).collect(),
                    keep_unmatched: data.iter().all(|m| m.matches("")),
                }
            }
            Plan::VectorFunction { func: VectorFn::Absent, input, labels, .. } => Node::Absent {
                input: Box::new(self.lower(input)?),
                labels: Labels::from_pairs(labels.iter().cloned()),
            },
            Plan::VectorFunction {
                func: func @ (VectorFn::HistogramQuantile | VectorFn::HistogramFraction),
                input,
                args,
                ..
            } => Node::Histogram {
                input: Box::new(self.lower(input)?),
                func: *func,
                params: constants(args)?,
                quantile_label: None,
            },
            Plan::VectorFunction { func: VectorFn::HistogramQuantiles, input, args, .. } => {
                let Some((Plan::Str(label), quantiles)) = args.split_first() else {
                    return Err(Error::Plan("histogram_quantiles needs a label name".into()));
                };
                Node::Histogram {
                    input: Box::new(self.lower(input)?),
                    func: VectorFn::HistogramQuantiles,
                    params: constants(quantiles)?,
                    quantile_label: Some(label.clone()),
                }
            }
            other => {
                let line = other.to_string();
                return Err(unsupported(line.lines().next().unwrap_or_default().trim()));
            }
        })
    }
}

/// An element of a vector: (label-set key, value).
type Element = (u64, Value);

/// A collection of (key, value) updates at evaluation times.
pub(crate) type Coll<'s> = VecCollection<'s, u64, (u64, Value), isize>;

/// What rendering one view's dataflow needs on a worker.
pub(crate) struct RenderCx<'a, 's> {
    pub(crate) state: &'a mut WorkerState,
    pub(crate) clock: Stream<'s, u64, Vec<series::Tick>>,
    pub(crate) probe: ProbeHandle<u64>,
    pub(crate) keys: Keys,
    pub(crate) counters: Arc<Counters>,
    /// Leaf inputs created by this view, to be advanced to the worker's time.
    pub(crate) new_leaves: Vec<usize>,
    /// The grain the view changes at, if any.
    pub(crate) grain: Option<Grain>,
    /// Where subqueries start sampling: the clock, or the time a view from history starts at.
    pub(crate) start: u64,
    /// The errors of what has been rendered so far (each an element keyed by
    /// `{__error__="<message>"}` while it holds), which the enclosing arrangements keep.
    pub(crate) errors: Vec<Coll<'s>>,
}

/// The label an error element's only label is named by.
pub(crate) const ERROR_LABEL: &str = "__error__";

/// The labels without the metric's identity (`__name__`), as functions and arithmetic leave
/// them.
pub(crate) fn without_name(mut l: promflow_storage::Labels) -> promflow_storage::Labels {
    strip_metric_identity(&mut l);
    l
}

/// Counts the records out of an operator that cannot count them itself (an added operator
/// per use: the operators on the common paths count their own).
fn counted<'s>(c: Coll<'s>, counters: &Arc<Counters>, op: Operator) -> Coll<'s> {
    let counters = Arc::clone(counters);
    c.inspect_batch(move |_, xs| counters.count(op, xs.len()))
}

/// Builds a view's tree in `scope`: its root is arranged for reads, and nothing reads the
/// root's records as a collection.
pub(crate) fn render_view<'s>(scope: Scope<'s, u64>, node: &Node, cx: &mut RenderCx<'_, 's>) {
    match node {
        Node::Arrange { id, input } => drop(arrange(scope, *id, input, cx)),
        node => drop(render(scope, node, cx)),
    }
}

/// Arranges `input`'s collection and registers it under `id`, with the probe that tells
/// reads how far it is complete and the tap that subscriptions register with.
fn arrange<'s>(
    scope: Scope<'s, u64>,
    id: usize,
    input: &Node,
    cx: &mut RenderCx<'_, 's>,
) -> Arranged<'s, super::Trace> {
    let mark = cx.errors.len();
    let c = render(scope, input, cx);
    if let Some((first, rest)) = cx.errors[mark..].split_first() {
        // what can fail below: read with the arrangement, and imported with it
        let errors = rest.iter().fold(first.clone(), |all, e| all.concat(e.clone())).arrange_by_key();
        errors.stream.clone().probe_with(&cx.probe);
        cx.state.errors.insert(id, errors.trace);
    }
    let arranged = c.arrange_by_key();
    arranged.stream.clone().probe_with(&cx.probe);
    let tap = super::tap::tap(arranged.stream.clone(), arranged.trace.clone());
    cx.state.taps.insert(id, tap);
    cx.state.traces.insert(id, (arranged.trace.clone(), cx.probe.clone()));
    arranged
}

/// Builds `node` in `scope`.
pub(crate) fn render<'s>(scope: Scope<'s, u64>, node: &Node, cx: &mut RenderCx<'_, 's>) -> Coll<'s> {
    match node {
        Node::Import(id) => {
            if let Some(errors) = cx.state.errors.get_mut(id) {
                cx.errors.push(errors.import(scope).as_collection(|k: &u64, v: &Value| (*k, *v)));
            }
            let (trace, _) = cx.state.traces.get_mut(id).expect("imported arrangements are registered first");
            trace.import(scope).as_collection(|k: &u64, v: &Value| (*k, *v))
        }
        Node::Arrange { id, input } => {
            arrange(scope, *id, input, cx).as_collection(|k: &u64, v: &Value| (*k, *v))
        }
        Node::Series { leaf, func, keep, time, distinct_names, arg } => {
            let mut input = timely::dataflow::InputHandle::new();
            let rows = scope.input_from(&mut input);
            cx.state.leaves.insert(*leaf, (input, cx.grain));
            cx.new_leaves.push(*leaf);
            let out = per_series(scope, rows, (*time, func, keep, arg.as_deref()), cx);
            if *distinct_names {
                let error = Labels::from_pairs([(
                    ERROR_LABEL,
                    "vector cannot contain metrics with the same labelset",
                )]);
                let error = cx.keys.intern(error);
                let duplicates =
                    out.clone().map(|(k, _): Element| k).count().filter(|(_, n): &(u64, isize)| *n > 1);
                cx.errors.push(duplicates.map(move |_| error).distinct().map(|e| (e, Value(0.0))));
            }
            out
        }
        Node::Subquery { inner, step_ms, time, leaf, func, keep, arg } => {
            let mut input = timely::dataflow::InputHandle::new();
            let history = scope.input_from(&mut input);
            cx.state.leaves.insert(*leaf, (input, cx.grain));
            cx.new_leaves.push(*leaf);
            // the inner values exactly at the steps, whatever the view's grain
            let grain = cx.grain.take();
            let inner = render(scope, inner, cx);
            cx.grain = grain;
            let until = match *time {
                LeafTime::Pinned(t) => Some(t.max(0) as u64),
                LeafTime::Shifted(_) => None,
            };
            let rows = series::sample(inner.inner, *step_ms as u64, cx.start, until).concat(history);
            per_series(scope, rows, (*time, func, keep, arg.as_deref()), cx)
        }
        Node::Map { input, func, args } => {
            let (func, args, keys) = (*func, args.clone(), cx.keys.clone());
            let mut names = KeyMap::default();
            let counters = Arc::clone(&cx.counters);
            render(scope, input, cx).flat_map(move |(k, v): (u64, Value)| {
                // clamp with min > max yields nothing, as in Prometheus
                if func == MapFn::Clamp && args.get(1) < args.first() {
                    return None;
                }
                counters.count(Operator::Elementwise, 1);
                Some((keys.rewrite(&mut names, k, without_name), Value(kernels::map(func, v.0, &args, 0))))
            })
        }
        Node::ScalarOp { input, op, scalar, scalar_left, return_bool } => {
            let (op, left, as_bool, keys) = (*op, *scalar_left, *return_bool, cx.keys.clone());
            let drop_name = !op.is_comparison() || as_bool;
            let mut names = KeyMap::default();
            let counters = Arc::clone(&cx.counters);
            // one element with the scalar's value: arithmetic and `bool` give the result,
            // a filtering comparison keeps the element's value
            let mut element = move |k: u64, v: f64, s: f64| {
                let (a, b) = if left { (s, v) } else { (v, s) };
                let value =
                    combine(op, a, b, as_bool).map(|r| if op.is_comparison() && !as_bool { v } else { r })?;
                let k = if drop_name { keys.rewrite(&mut names, k, without_name) } else { k };
                counters.count(Operator::Elementwise, 1);
                Some((k, Value(value)))
            };
            let elements = render(scope, input, cx);
            match scalar {
                Scalar::Constant(s) => {
                    let s = *s;
                    elements.flat_map(move |(k, v): (u64, Value)| element(k, v.0, s))
                }
                Scalar::Varying(node) => {
                    // every element meets the scalar's value: when it changes, all of them do
                    let scalar = render(scope, node, cx).map(|(_, s): (u64, Value)| ((), s));
                    elements
                        .map(|kv: (u64, Value)| ((), kv))
                        .join(scalar)
                        .flat_map(move |((), ((k, v), s)): ((), ((u64, Value), Value))| element(k, v.0, s.0))
                }
            }
        }
        Node::Now => now_collection(scope, cx.clock.clone(), cx.grain, &cx.keys),
        Node::Timestamp { input } => {
            let (keys, mut names) = (cx.keys.clone(), KeyMap::default());
            let elements = render(scope, input, cx).map(|(k, _): (u64, Value)| (k, ()));
            with_param(scope, elements, &Scalar::Varying(Box::new(Node::Now)), cx)
                .map(move |(k, ((), now))| (keys.rewrite(&mut names, k, without_name), now))
        }
        Node::ScalarOf { input } => {
            let present = render(scope, input, cx).map(|(_, v): (u64, Value)| ((), v));
            let only =
                present.clone().reduce(|_, vals: &[(&Value, isize)], out: &mut Vec<(Value, isize)>| {
                    let value = match vals {
                        [(v, 1)] => **v,
                        _ => Value(f64::NAN),
                    };
                    out.push((value, 1));
                });
            let none = constant_collection(scope, &cx.clock, &Labels::new(), f64::NAN, &cx.keys)
                .map(|kv| ((), kv))
                .antijoin(present.map(|_| ()).distinct())
                .map(|(_, kv)| kv);
            let key = cx.keys.intern(Labels::new());
            only.map(move |((), v)| (key, v)).concat(none)
        }
        Node::Relabel { input, rule } => {
            let (rule, keys) = (rule.clone(), cx.keys.clone());
            let re = compile_relabel(&rule).ok().flatten();
            let mut names = KeyMap::default();
            let counters = Arc::clone(&cx.counters);
            render(scope, input, cx).map(move |(k, v): (u64, Value)| {
                let k = keys.rewrite(&mut names, k, |mut l| {
                    relabel_one(&rule, re.as_ref(), &mut l);
                    l
                });
                counters.count(Operator::Elementwise, 1);
                (k, v)
            })
        }
        Node::Aggregate {
            input,
            op: op @ (AggOp::Sum | AggOp::Count | AggOp::Avg | AggOp::Group),
            grouping,
            ..
        } => {
            // O(1) per change: the group's sum and count accumulate as differences
            let grouped = by_group(render(scope, input, cx), grouping, &cx.keys);
            abelian::aggregate(grouped, *op, Arc::clone(&cx.counters))
        }
        Node::Aggregate { input, op: AggOp::LimitRatio, param, .. } => {
            // a series is kept by where its label hash falls in [0, 1), as in the batch executor
            let keys = cx.keys.clone();
            let mut hashes = KeyMap::default();
            let elements = render(scope, input, cx).map(|(s, v): (u64, Value)| (s, (s, v)));
            let out = with_param(scope, elements, param, cx).flat_map(
                move |(_, ((s, v), r)): (u64, (Element, Value))| {
                    let at = *hashes
                        .entry(s)
                        .or_insert_with(|| keys.labels(s).prometheus_hash() as f64 / u64::MAX as f64);
                    let r = r.0.clamp(-1.0, 1.0);
                    ((r >= 0.0 && at < r) || (r < 0.0 && at >= 1.0 + r)).then_some((s, v))
                },
            );
            counted(out, &cx.counters, Operator::Aggregate)
        }
        Node::Aggregate {
            input,
            op: op @ (AggOp::Topk | AggOp::Bottomk | AggOp::Limitk),
            grouping,
            param,
        } => {
            // each group's k greatest (smallest, first) elements, chosen as the batch executor
            // chooses
            let op = *op;
            let (g, keys) = (grouping.clone(), cx.keys.clone());
            let mut groups = KeyMap::default();
            let members = render(scope, input, cx).map(move |(s, v): (u64, Value)| {
                (keys.rewrite(&mut groups, s, |l| grouping_key(&l, &g)), (s, v))
            });
            let keys = cx.keys.clone();
            let out = with_param(scope, members, param, cx).reduce(
                move |_group, vals: &[(&(Element, Value), isize)], out: &mut Vec<((u64, Value), isize)>| {
                    let Some((&(_, k), _)) = vals.first() else { return };
                    let k = if k.0 >= 1.0 { k.0.min(1e9) as usize } else { 0 };
                    // in label order, as the batch executor's series come: ties go the same way
                    let mut present: Vec<(Labels, u64, f64)> = vals
                        .iter()
                        .filter(|(_, m)| *m > 0)
                        .map(|(((s, v), _), _)| (keys.labels(*s), *s, v.0))
                        .collect();
                    present.sort_by(|a, b| a.0.cmp(&b.0));
                    let candidates: Vec<(usize, f64)> =
                        present.iter().enumerate().map(|(i, p)| (i, p.2)).collect();
                    let chosen = match op {
                        AggOp::Limitk => (0..k.min(candidates.len())).collect(),
                        _ => kernels::heap_select(&candidates, k, op == AggOp::Topk),
                    };
                    for i in chosen {
                        out.push(((present[i].1, Value(present[i].2)), 1));
                    }
                },
            );
            counted(out.map(|(_, element)| element), &cx.counters, Operator::Aggregate)
        }
        Node::Aggregate { input, op, grouping, param } => {
            let op = *op;
            let grouped = by_group(render(scope, input, cx), grouping, &cx.keys);
            let out = with_param(scope, grouped, param, cx).reduce(
                move |_group, vals: &[(&(Value, Value), isize)], out: &mut Vec<(Value, isize)>| {
                    let Some((&(_, param), _)) = vals.first() else { return };
                    let mut xs: Vec<f64> = Vec::with_capacity(vals.len());
                    for ((v, _), m) in vals {
                        for _ in 0..(*m).max(0) {
                            xs.push(v.0);
                        }
                    }
                    if !xs.is_empty() {
                        out.push((Value(aggregate_values(op, &mut xs, param.0)), 1));
                    }
                },
            );
            counted(out, &cx.counters, Operator::Aggregate)
        }
        Node::Constant { labels, value } => constant_collection(scope, &cx.clock, labels, *value, &cx.keys),
        Node::Absent { input, labels } => {
            let present = render(scope, input, cx).map(|_| ()).distinct();
            let one = constant_collection(scope, &cx.clock, labels, 1.0, &cx.keys).map(|kv| ((), kv));
            counted(one.antijoin(present).map(|(_, kv)| kv), &cx.counters, Operator::Join)
        }
        Node::Histogram { input, func, params, quantile_label } => {
            let (func, keys) = (*func, cx.keys.clone());
            let (params, quantiles) = (params.clone(), params.clone());
            let mut buckets_of = KeyMap::default();
            let out = render(scope, input, cx)
                .flat_map(move |(k, count): (u64, Value)| {
                    // the histogram a bucket belongs to (its labels without `le`), and its bound
                    let (histogram, le) = *buckets_of.entry(k).or_insert_with(|| {
                        let mut l = keys.labels(k);
                        let le = parse_le(l.get("le")).ok();
                        l.remove("le");
                        (keys.intern(l), le)
                    });
                    le.map(|le| (histogram, (Value(le), count)))
                })
                .reduce(
                    move |_h, vals: &[(&(Value, Value), isize)], out: &mut Vec<((u32, Value), isize)>| {
                        // buckets with one bound written differently (`0.2`, `2e-1`) and the same
                        // count are one value with a multiplicity; the kernel adds them up
                        let mut buckets: Vec<(f64, f64)> = vals
                            .iter()
                            .flat_map(|((le, c), m)| std::iter::repeat_n((le.0, c.0), (*m).max(0) as usize))
                            .collect();
                        if buckets.is_empty() {
                            return;
                        }
                        if func == VectorFn::HistogramFraction {
                            let v = kernels::bucket_fraction(params[0], params[1], &mut buckets);
                            out.push(((0, Value(v)), 1));
                            return;
                        }
                        // one value per quantile: the first for histogram_quantile
                        let count = if func == VectorFn::HistogramQuantiles { params.len() } else { 1 };
                        for (i, &q) in params.iter().take(count).enumerate() {
                            out.push(((i as u32, Value(kernels::bucket_quantile(q, &mut buckets).value)), 1));
                        }
                    },
                );
            // the result's labels: without the name, and with the quantile's label if asked;
            // two histograms that this makes one label set are the batch executor's error
            let (keys, mut labelled) = (cx.keys.clone(), KeyMap::<(u64, u32), u64>::default());
            let quantile_label = quantile_label.clone();
            let out = out.map(move |(k, (i, v)): (u64, (u32, Value))| {
                let k = *labelled.entry((k, i)).or_insert_with(|| {
                    let mut l = keys.labels(k);
                    if let Some(label) = &quantile_label {
                        let q = quantiles[i as usize];
                        l.set(label, &promflow_storage::gofmt::format_openmetrics_float(q));
                    }
                    keys.intern(without_name(l))
                });
                (k, v)
            });
            counted(out, &cx.counters, Operator::Aggregate)
        }
        Node::Info { input, info, ignore, data_names, keep_unmatched } => {
            let base = render(scope, input, cx);
            let info = render(scope, info, cx);
            let (out, errors) = info_labels(base, info, ignore, data_names, *keep_unmatched, &cx.keys);
            cx.errors.push(errors);
            counted(out, &cx.counters, Operator::Join)
        }
        Node::Join { lhs, rhs, op, key, return_bool } => {
            let l = render(scope, lhs, cx);
            let r = render(scope, rhs, cx);
            let out = if op.is_set() {
                set_operation(l, r, *op, &key.grouping, &cx.keys)
            } else {
                let (out, errors) = join(l, r, *op, key, *return_bool, &cx.keys);
                cx.errors.push(errors);
                out
            };
            counted(out, &cx.counters, Operator::Join)
        }
    }
}

/// The per-series operator over `rows`, evaluated when `time` says, at the view's grain,
/// with a window function's first argument from `arg` when it changes.
fn per_series<'s>(
    scope: Scope<'s, u64>,
    mut rows: Stream<'s, u64, Vec<super::Row>>,
    (time, func, keep, arg): (LeafTime, &SeriesFn, &Keep, Option<&Node>),
    cx: &mut RenderCx<'_, 's>,
) -> Coll<'s> {
    let pinned = match time {
        LeafTime::Shifted(0) => None,
        LeafTime::Shifted(offset) => {
            rows = rows.map(move |(k, t, v): super::Row| (k, t.saturating_add(offset), v));
            None
        }
        LeafTime::Pinned(t) => Some(t),
    };
    // the clock's ticks are the operator's second input as they are (no operator more)
    let mut ticks = cx.clock.clone();
    if let Some(arg) = arg {
        // every worker's operator needs the argument's values, each from its time on
        use timely::dataflow::operators::vec::Broadcast;
        let values = render(scope, arg, cx)
            .inner
            .flat_map(|((_, v), t, diff): ((u64, Value), u64, isize)| (diff > 0).then_some(Some((t, v.0))))
            .broadcast();
        ticks = ticks.concat(values);
    }
    let (keys, counters) = (cx.keys.clone(), Arc::clone(&cx.counters));
    series::render(rows, ticks, func.clone(), keep.clone(), pinned, cx.grain, keys, counters).as_collection()
}

/// Each keyed record paired with a parameter's value: the constant's, or the changing
/// scalar's (a join on the unit key: when it changes, every record does, as each evaluation
/// recomputes them in Prometheus).
fn with_param<'s, D>(
    scope: Scope<'s, u64>,
    c: VecCollection<'s, u64, (u64, D), isize>,
    param: &Scalar,
    cx: &mut RenderCx<'_, 's>,
) -> VecCollection<'s, u64, (u64, (D, Value)), isize>
where
    D: timely::ExchangeData + Clone + Ord + std::fmt::Debug,
{
    match param {
        Scalar::Constant(p) => {
            let p = Value(*p);
            c.map(move |(k, d)| (k, (d, p)))
        }
        Scalar::Varying(node) => {
            let p = render(scope, node, cx).map(|(_, p): (u64, Value)| ((), p));
            c.map(|(k, d)| ((), (k, d))).join(p).map(|((), ((k, d), p))| (k, (d, p)))
        }
    }
}

/// `time()`: one element with no labels whose value is the time of the clock's last tick (at
/// the grain's next time), built by the first worker only.
fn now_collection<'s>(
    scope: Scope<'s, u64>,
    clock: Stream<'s, u64, Vec<series::Tick>>,
    grain: Option<Grain>,
    keys: &Keys,
) -> Coll<'s> {
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::generic::operator::Operator as _;
    let (key, first) = (keys.intern(Labels::new()), scope.index() == 0);
    let mut last: Option<f64> = None;
    clock
        .unary(Pipeline, "now", move |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, _ticks| {
                    let Some(&now) = cap.least() else { return };
                    let at = grain.map_or(now, |g| g.up(now));
                    let value = at as f64 / 1000.0;
                    if !first || last == Some(value) {
                        return;
                    }
                    let cap = cap.delayed(&at, 0);
                    let mut session = output.session(&cap);
                    if let Some(old) = last.replace(value) {
                        session.give(((key, Value(old)), at, -1isize));
                    }
                    session.give(((key, Value(value)), at, 1isize));
                });
            }
        })
        .as_collection()
}

/// One element, present from time 0 on, built by the first worker only. Its frontier follows
/// the clock, as every other leaf's does: a stream made of the element alone would be complete
/// for ever after the first step, the operators downstream would retire, and a subscription
/// registered after that would never be sent its first message.
fn constant_collection<'s>(
    scope: Scope<'s, u64>,
    clock: &Stream<'s, u64, Vec<series::Tick>>,
    labels: &Labels,
    value: f64,
    keys: &Keys,
) -> Coll<'s> {
    let key = keys.intern(labels.clone());
    let data = if scope.index() == 0 { vec![((key, Value(value)), 0u64, 1isize)] } else { Vec::new() };
    let held_by_clock = clock.clone().flat_map(|_tick| std::iter::empty::<((u64, Value), u64, isize)>());
    data.to_stream(scope).concat(held_by_clock).as_collection()
}

/// Each element keyed by its match signature (`on`/`ignoring` labels).
fn by_signature<'s>(
    c: Coll<'s>,
    g: &Grouping,
    keys: &Keys,
) -> VecCollection<'s, u64, (u64, (u64, Value)), isize> {
    let (g, keys) = (g.clone(), keys.clone());
    let mut sigs = KeyMap::default();
    c.map(move |(k, v): (u64, Value)| (keys.rewrite(&mut sigs, k, |l| grouping_key(&l, &g)), (k, v)))
}

/// Each element under its group's key instead of its own.
fn by_group<'s>(c: Coll<'s>, g: &Grouping, keys: &Keys) -> Coll<'s> {
    let (g, keys) = (g.clone(), keys.clone());
    let mut groups = KeyMap::default();
    c.map(move |(k, v): (u64, Value)| (keys.rewrite(&mut groups, k, |l| grouping_key(&l, &g)), v))
}

/// What `info()` makes of an element: its new label set and value, or an error's key.
type InfoOutcome = Result<(u64, Value), u64>;

/// `info()`: see [`Node::Info`]. An element matches the info series with its `instance` and
/// `job` (not when it has neither); of each info metric the newest series counts. Two as
/// new, and info metrics that give one label different values, are the batch executor's
/// errors (returned with the result).
fn info_labels<'s>(
    base: Coll<'s>,
    info: Coll<'s>,
    ignore: &[Matcher],
    data_names: &[String],
    keep_unmatched: bool,
    keys: &Keys,
) -> (Coll<'s>, Coll<'s>) {
    use promflow_storage::METRIC_NAME;
    // the identifying labels of a label set, none when it has neither
    let signature = |keys: &Keys, k: u64| {
        let l = keys.labels(k);
        let sig = Labels::from_pairs(
            INFO_IDENTIFYING_LABELS.iter().map(|id| (id.to_string(), l.get(id).to_string())),
        );
        (!sig.is_empty()).then(|| keys.intern(sig))
    };
    let (k1, k2, k3, k4) = (keys.clone(), keys.clone(), keys.clone(), keys.clone());
    let ignore = ignore.to_vec();
    let mut is_info = KeyMap::default();
    let base = base.map(move |(k, v): Element| {
        let own = *is_info.entry(k).or_insert_with(|| {
            let l = k1.labels(k);
            ignore.iter().all(|m| m.matches(l.get(METRIC_NAME)))
        });
        (own, (k, v))
    });
    let passing = base.clone().filter(|(own, _)| *own).map(|(_, kv)| kv);
    let mut sigs = KeyMap::default();
    let matching = base
        .filter(|(own, _)| !*own)
        .map(move |(_, (k, v))| (*sigs.entry(k).or_insert_with(|| signature(&k2, k)), (k, v)));
    let mut info_sigs = KeyMap::default();
    let info = info.flat_map(move |(k, ts): Element| {
        (*info_sigs.entry(k).or_insert_with(|| signature(&k3, k))).map(|sig| (sig, (k, ts)))
    });
    let with_sig = matching.clone().flat_map(|(sig, kv)| sig.map(|s| (s, kv)));
    let data_names = data_names.to_vec();
    let matched = with_sig
        .join(info.clone())
        .map(|(_sig, ((bk, bv), info)): (u64, (Element, Element))| (bk, (bv, info)))
        .reduce(move |&bk, infos: &[(&(Value, Element), isize)], out: &mut Vec<(InfoOutcome, isize)>| {
            let Some(((bv, _), _)) = infos.first() else { return };
            let mut labels = k4.labels(bk);
            let error = |message: String| (Err(k4.intern(Labels::from_pairs([(ERROR_LABEL, message)]))), 1);
            // per info metric, its newest series; two as new are the batch executor's error
            let mut newest: std::collections::BTreeMap<String, (f64, Labels)> = Default::default();
            for ((_, (ik, ts)), _) in infos {
                let il = k4.labels(*ik);
                let name = il.get(METRIC_NAME).to_string();
                match newest.get(&name) {
                    Some((t, _)) if *t > ts.0 => {}
                    Some((t, existing)) if *t == ts.0 => {
                        let at = (t * 1000.0).round() as i64;
                        out.push(error(format!(
                            "found duplicate series for info metric: existing {existing} @ {at}, new {il} @ {at}"
                        )));
                        return;
                    }
                    _ => {
                        newest.insert(name, (ts.0, il));
                    }
                }
            }
            let mut added = Labels::new();
            for (_, (_, il)) in newest {
                for l in il.iter().filter(|l| l.name != METRIC_NAME) {
                    if !data_names.is_empty() && !data_names.contains(&l.name) {
                        continue;
                    }
                    let existing = added.get(&l.name);
                    if !existing.is_empty() && existing != l.value {
                        out.push(error(format!("conflicting label: {}", l.name)));
                        return;
                    }
                    if !labels.contains(&l.name) {
                        added.set(&l.name, &l.value);
                    }
                }
            }
            for l in added.iter() {
                labels.set(&l.name, &l.value);
            }
            out.push((Ok((k4.intern(labels), *bv)), 1));
        });
    let errors = matched.clone().flat_map(|(_, outcome)| outcome.err().map(|error| (error, Value(0.0))));
    let matched = matched.flat_map(|(_, outcome)| outcome.ok());
    let mut out = passing.concat(matched);
    if keep_unmatched {
        let info_sigs = info.map(|(sig, _)| sig).distinct();
        let (alone, no_sig) = (matching.clone().flat_map(|(sig, kv)| sig.map(|s| (s, kv))), matching);
        out = out
            .concat(alone.antijoin(info_sigs).map(|(_, kv)| kv))
            .concat(no_sig.flat_map(|(sig, kv)| sig.is_none().then_some(kv)));
    }
    (out, errors)
}

/// How an error's message is made of a match group's labels and its members' labels.
type ErrorMessage = Box<dyn Fn(&Labels, &[Labels]) -> String>;

/// The batch executor's errors of vector matching, while they hold: two elements of the
/// "one" side in a match group that the "many" side has (`many-to-many matching not
/// allowed`), and, one-to-one, two of the "many" side in a group the other side has.
fn matching_errors<'s>(
    many: &VecCollection<'s, u64, (u64, Element), isize>,
    one: &VecCollection<'s, u64, (u64, Element), isize>,
    swapped: bool,
    one_to_one: bool,
    keys: &Keys,
) -> Coll<'s> {
    let side = if swapped { "left" } else { "right" };
    let duplicates = |c: &VecCollection<'s, u64, (u64, Element), isize>, message: ErrorMessage| {
        let keys = keys.clone();
        c.clone().map(|(sig, (k, _))| (sig, k)).reduce(
            move |&sig, members: &[(&u64, isize)], out: &mut Vec<(u64, isize)>| {
                if members.iter().map(|(_, n)| *n).sum::<isize>() > 1 {
                    let mut labels: Vec<Labels> = members.iter().map(|(k, _)| keys.labels(**k)).collect();
                    labels.sort();
                    let error = Labels::from_pairs([(ERROR_LABEL, message(&keys.labels(sig), &labels))]);
                    out.push((keys.intern(error), 1));
                }
            },
        )
    };
    let one_message = Box::new(move |sig: &Labels, members: &[Labels]| {
        let members: Vec<String> = members.iter().map(|l| l.to_string()).collect();
        format!(
            "found duplicate series for the match group {sig} on the {side} hand-side of the operation: [{}];many-to-many matching not allowed: matching labels must be unique on one side",
            members.join(", ")
        )
    });
    let present =
        |c: &VecCollection<'s, u64, (u64, Element), isize>| c.clone().map(|(sig, _)| sig).distinct();
    let mut errors = duplicates(one, one_message).semijoin(present(many));
    if one_to_one {
        let many_message = Box::new(|_: &Labels, _: &[Labels]| {
            "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                .to_string()
        });
        errors = errors.concat(duplicates(many, many_message).semijoin(present(one)));
    }
    errors.map(|(_, error)| error).distinct().map(|error| (error, Value(0.0)))
}

/// `and`, `or`, `unless`: the left elements whose signature the right side has (or lacks),
/// and for `or` the right elements whose signature the left side lacks.
fn set_operation<'s>(l: Coll<'s>, r: Coll<'s>, op: BinOp, g: &Grouping, keys: &Keys) -> Coll<'s> {
    let signatures = |c: Coll<'s>| by_signature(c, g, keys).map(|(sig, _)| sig).distinct();
    match op {
        BinOp::And => by_signature(l, g, keys).semijoin(signatures(r)).map(|(_, kv)| kv),
        BinOp::Unless => by_signature(l, g, keys).antijoin(signatures(r)).map(|(_, kv)| kv),
        _ => {
            let right = by_signature(r, g, keys).antijoin(signatures(l.clone())).map(|(_, kv)| kv);
            l.concat(right)
        }
    }
}

/// Arithmetic and comparisons between matched elements, one-to-one or with `group_left` /
/// `group_right`, labelled as the batch executor labels them. With `fill` modifiers an
/// element whose match group the other side lacks is combined with the fill value instead.
/// Also returns its matching errors (see [`matching_errors`]).
fn join<'s>(
    l: Coll<'s>,
    r: Coll<'s>,
    op: BinOp,
    key: &JoinKey,
    return_bool: bool,
    keys: &Keys,
) -> (Coll<'s>, Coll<'s>) {
    let swapped = matches!(key.card, Cardinality::OneToMany(_));
    let include: Vec<String> = match &key.card {
        Cardinality::ManyToOne(l) | Cardinality::OneToMany(l) => l.clone(),
        _ => Vec::new(),
    };
    let one_to_one = matches!(key.card, Cardinality::OneToOne);
    let (many, one) = if swapped { (r, l) } else { (l, r) };
    let g = key.grouping.clone();
    let strip_name = !op.is_comparison() || return_bool;
    // the operands in the operator's order: the many side is the right one under group_right
    let ordered = move |mv: f64, ov: f64| if swapped { (ov, mv) } else { (mv, ov) };
    let (many, one) = (by_signature(many, &g, keys), by_signature(one, &g, keys));
    let errors = matching_errors(&many, &one, swapped, one_to_one, keys);
    let (keys2, include2) = (keys.clone(), include.clone());
    let mut labelled: KeyMap<(u64, u64), u64> = KeyMap::default();
    let mut out = many.clone().join(one.clone()).flat_map(
        move |(_sig, ((mk, mv), (ok, ov))): (u64, (Element, Element))| {
            let (lv, rv) = ordered(mv.0, ov.0);
            let value = combine(op, lv, rv, return_bool)?;
            let k = *labelled.entry((mk, ok)).or_insert_with(|| {
                let (m, o) = (keys2.labels(mk), keys2.labels(ok));
                keys2.intern(result_labels(&m, &o, &g, one_to_one, &include2, strip_name))
            });
            Some((k, Value(value)))
        },
    );
    if let Some(fill) = key.fill_one {
        // a many-side element alone in its match group: the fill stands in for the one side,
        // whose labels it has none of
        let (keys, g) = (keys.clone(), key.grouping.clone());
        let mut labelled: KeyMap<u64, u64> = KeyMap::default();
        let alone = many.clone().antijoin(one.clone().map(|(sig, _)| sig).distinct());
        out = out.concat(alone.flat_map(move |(_sig, (mk, mv)): (u64, Element)| {
            let (lv, rv) = ordered(mv.0, fill);
            let value = combine(op, lv, rv, return_bool)?;
            let k = *labelled.entry(mk).or_insert_with(|| {
                let m = keys.labels(mk);
                keys.intern(result_labels(&m, &Labels::new(), &g, one_to_one, &include, strip_name))
            });
            Some((k, Value(value)))
        }));
    }
    if let Some(fill) = key.fill_many {
        // a one-side element alone in its match group: labelled with the group's labels
        let alone = one.antijoin(many.map(|(sig, _)| sig).distinct());
        out = out.concat(alone.flat_map(move |(sig, (_ok, ov)): (u64, Element)| {
            let (lv, rv) = ordered(fill, ov.0);
            combine(op, lv, rv, return_bool).map(|value| (sig, Value(value)))
        }));
    }
    (out, errors)
}
