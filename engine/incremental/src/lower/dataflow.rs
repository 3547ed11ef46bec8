//! The dataflow's lowering (on the controller): a [`Plan`] becomes a [`Node`] tree. Sub-plans
//! that an earlier view already arranged become [`Node::Import`]s of that arrangement, so two
//! rules that share `rate(x[5m])` share its state. Every selection and window function and
//! every view's root is arranged and registered for later views to share.

use promflow_storage::{Labels, Matcher};

use super::{constant, constants, unsupported, window_time, LeafTime, NOT_CAUSAL, NOT_SHIFTED};
use crate::series::{Keep, ReadBack, SeriesFn};
use crate::Grain;
use promflow_plan::semantics::{
    absent_labels, compile_relabel, effective_info_name_matchers, selects_one_metric,
};
use promflow_plan::{
    AggOp, BinOp, Edges, Error, Grouping, JoinKey, MapFn, Plan, Relabel, ValueKind, VectorFn, WindowFn,
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
    /// `histogram_count`, `histogram_sum`, `histogram_avg`, `histogram_stddev` or
    /// `histogram_stdvar` of each native-histogram element (floats give nothing; the metric
    /// name is dropped).
    HistogramStatistic { input: Box<Node>, func: VectorFn },
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
            | Node::Histogram { input, .. }
            | Node::HistogramStatistic { input, .. } => input.walk(f),
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
        let distinct_names = func.drops_name() && !selects_one_metric(matchers);
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
        // present exactly where `present_over_time` is, but keeping the metric name: two
        // series of different metrics are not one label set here, as the batch executor
        // (which never computes their presence as a vector) does not make them
        let present = Plan::WindowFunction {
            func: WindowFn::LastOverTime,
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
            Plan::Select { matchers, shift, edges: Edges::Plain, .. } => {
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
            Plan::WindowFunction { func, input, .. }
                if func.takes_anchored()
                    && matches!(&**input, Plan::Window { edges: Edges::Anchored, .. }) =>
            {
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
            Plan::Map { func: MapFn::StartTimestamp, .. } => return Err(unsupported("start timestamps")),
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
            Plan::Join { op, lhs, rhs, key, return_bool, .. } => {
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
            Plan::VectorFunction {
                func:
                    func @ (VectorFn::HistogramCount
                    | VectorFn::HistogramSum
                    | VectorFn::HistogramAvg
                    | VectorFn::HistogramStddev
                    | VectorFn::HistogramStdvar),
                input,
                ..
            } => Node::HistogramStatistic { input: Box::new(self.lower(input)?), func: *func },
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
