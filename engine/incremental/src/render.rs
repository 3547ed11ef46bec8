//! Rendering (on every worker, in the same order): a lowered [`Node`] tree
//! ([`crate::lower::dataflow`]) becomes timely and differential operators. Selections and
//! window functions are the per-series operator ([`super::series`]); value functions and
//! scalar operations are maps; `sum`, `count`, `avg` and `group` are differences counted per
//! group ([`super::abelian`]), the other aggregations differential `reduce`s; vector matching
//! is a differential `join`, set operators `semijoin`/`antijoin`. Every value is computed by
//! the kernels and the plan IR's label rules.

use std::sync::Arc;

use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::{AsCollection, VecCollection};
use promflow_storage::{Labels, Matcher};
use timely::dataflow::operators::vec::Map as _;
use timely::dataflow::operators::{Concat, Input, Probe, ToStream};
use timely::dataflow::{ProbeHandle, Scope, Stream};

use super::abelian;
use super::keys::{Key, KeyMap, Keys};
use super::series::{self, Keep, SeriesFn};
use super::values::{self, Value};
use super::{Counters, Grain, Holds, LeakOnUnwind, Operator, WorkerState};
use crate::lower::dataflow::{Node, Scalar};
use crate::lower::LeafTime;
use promflow_kernels as kernels;
use promflow_plan::semantics::{
    compile_relabel, grouping_key, parse_le, relabel_one, result_labels, strip_metric_identity,
    INFO_IDENTIFYING_LABELS,
};
use promflow_plan::{AggOp, BinOp, Cardinality, Grouping, JoinKey, VectorFn};

/// An element of a vector: (label-set key, value).
type Element = (Key, Value);

/// A collection of (key, value) updates at evaluation times.
pub(crate) type Coll<'s> = VecCollection<'s, u64, (Key, Value), isize>;

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
/// root's records as a collection. Returns the root's arrangement when it is arranged,
/// for read copies built in the same dataflow.
pub(crate) fn render_view<'s>(
    scope: Scope<'s, u64>,
    node: &Node,
    cx: &mut RenderCx<'_, 's>,
) -> Option<ArrangedView<'s>> {
    match node {
        Node::Arrange { id, input } => {
            let (updates, errors) = arrange(scope, *id, input, cx);
            Some(ArrangedView { id: *id, updates, errors })
        }
        node => {
            drop(render(scope, node, cx));
            None
        }
    }
}

/// The arrangement at a view's root, as its dataflow builds it: its id, and its updates' and
/// its errors' arrangements.
pub(crate) struct ArrangedView<'s> {
    pub(crate) id: usize,
    pub(crate) updates: Arranged<'s, super::Trace>,
    pub(crate) errors: Option<Arranged<'s, super::Trace>>,
}

/// Arranges `input`'s collection and registers it under `id`, with the probe that tells
/// reads how far it is complete and the tap that subscriptions register with; and the
/// errors of what it reads, when some can fail.
fn arrange<'s>(
    scope: Scope<'s, u64>,
    id: usize,
    input: &Node,
    cx: &mut RenderCx<'_, 's>,
) -> (Arranged<'s, super::Trace>, Option<Arranged<'s, super::Trace>>) {
    let mark = cx.errors.len();
    let c = render(scope, input, cx);
    let errors = cx.errors[mark..].split_first().map(|(first, rest)| {
        // what can fail below: read with the arrangement, and imported with it
        let errors = rest.iter().fold(first.clone(), |all, e| all.concat(e.clone()));
        cx.state.arranging(scope.worker(), Holds::View);
        let errors = super::exchange::arrange_by_key(errors, "ArrangeViewErrors");
        errors.stream.clone().probe_with(&cx.probe);
        cx.state.errors.insert(id, errors.trace.clone());
        errors
    });
    let per_series = matches!(input, Node::Series { .. } | Node::Subquery { .. });
    let holds = if per_series { Holds::Series } else { Holds::View };
    cx.state.arranging(scope.worker(), holds);
    let arranged = if per_series {
        super::exchange::arrange_in_place(c, "ArrangeSeries")
    } else {
        super::exchange::arrange_by_key(c, "ArrangeView")
    };
    arranged.stream.clone().probe_with(&cx.probe);
    let tap = super::tap::tap(arranged.stream.clone(), arranged.trace.clone());
    cx.state.taps.insert(id, tap);
    cx.state.traces.insert(id, (arranged.trace.clone(), cx.probe.clone()));
    (arranged, errors)
}

/// Builds `node` in `scope`.
pub(crate) fn render<'s>(scope: Scope<'s, u64>, node: &Node, cx: &mut RenderCx<'_, 's>) -> Coll<'s> {
    match node {
        Node::Import(id) => {
            if let Some(errors) = cx.state.errors.get_mut(id) {
                cx.errors.push(errors.import(scope).as_collection(|k: &Key, v: &Value| (*k, v.clone())));
            }
            let (trace, _) = cx.state.traces.get_mut(id).expect("imported arrangements are registered first");
            trace.import(scope).as_collection(|k: &Key, v: &Value| (*k, v.clone()))
        }
        Node::Arrange { id, input } => {
            arrange(scope, *id, input, cx).0.as_collection(|k: &Key, v: &Value| (*k, v.clone()))
        }
        Node::Series { leaf, func, keep, time, distinct_names, arg } => {
            let mut input = timely::dataflow::InputHandle::new();
            let rows = scope.input_from(&mut input);
            cx.state.leaves.insert(*leaf, (LeakOnUnwind::new(input), cx.grain));
            cx.new_leaves.push(*leaf);
            let out = per_series(scope, rows, (*time, func, keep, arg.as_deref()), cx);
            if *distinct_names {
                let error = Labels::from_pairs([(
                    ERROR_LABEL,
                    "vector cannot contain metrics with the same labelset",
                )]);
                let error = cx.keys.intern(error);
                let duplicates =
                    out.clone().map(|(k, _): Element| k).count().filter(|(_, n): &(Key, isize)| *n > 1);
                cx.errors.push(duplicates.map(move |_| error).distinct().map(|e| (e, Value::float(0.0))));
            }
            out
        }
        Node::Subquery { inner, step_ms, time, leaf, func, keep, arg } => {
            let mut input = timely::dataflow::InputHandle::new();
            let history = scope.input_from(&mut input);
            cx.state.leaves.insert(*leaf, (LeakOnUnwind::new(input), cx.grain));
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
            render(scope, input, cx).flat_map(move |(k, v): (Key, Value)| {
                let value = values::map(func, &v, &args)?;
                counters.count(Operator::Elementwise, 1);
                Some((keys.rewrite(&mut names, k, without_name), value))
            })
        }
        Node::ScalarOp { input, op, scalar, scalar_left, return_bool } => {
            let (op, left, as_bool, keys) = (*op, *scalar_left, *return_bool, cx.keys.clone());
            // comparisons and trims keep the metric name, as in the batch executor
            let drop_name = !(op.is_comparison() || op.is_trim()) || as_bool;
            let mut names = KeyMap::default();
            let counters = Arc::clone(&cx.counters);
            // one element with the scalar's value: arithmetic and `bool` give the result,
            // a filtering comparison keeps the element's value
            let mut element = move |k: Key, v: Value, s: f64| {
                let value = values::with_scalar(op, v, s, left, as_bool)?;
                let k = if drop_name { keys.rewrite(&mut names, k, without_name) } else { k };
                counters.count(Operator::Elementwise, 1);
                Some((k, value))
            };
            let elements = render(scope, input, cx);
            match scalar {
                Scalar::Constant(s) => {
                    let s = *s;
                    elements.flat_map(move |(k, v): (Key, Value)| element(k, v, s))
                }
                Scalar::Varying(node) => {
                    // every element meets the scalar's value: when it changes, all of them do
                    let scalar = render(scope, node, cx).map(|(_, s): (Key, Value)| ((), s));
                    elements.map(|kv: (Key, Value)| ((), kv)).join(scalar).flat_map(
                        move |((), ((k, v), s)): ((), ((Key, Value), Value))| element(k, v, s.scalar()),
                    )
                }
            }
        }
        Node::Now => now_collection(scope, cx.clock.clone(), cx.grain, &cx.keys),
        Node::Timestamp { input } => {
            let (keys, mut names) = (cx.keys.clone(), KeyMap::default());
            let elements = render(scope, input, cx).map(|(k, _): (Key, Value)| (k, ()));
            with_param(scope, elements, &Scalar::Varying(Box::new(Node::Now)), cx)
                .map(move |(k, ((), now))| (keys.rewrite(&mut names, k, without_name), now))
        }
        Node::ScalarOf { input } => {
            // of floats alone: a histogram element is no scalar's value, as in Prometheus
            let present = render(scope, input, cx)
                .flat_map(|(_, v): (Key, Value)| v.as_float().map(|x| ((), Value::float(x))));
            let only =
                present.clone().reduce(|_, vals: &[(&Value, isize)], out: &mut Vec<(Value, isize)>| {
                    let value = match vals {
                        [(v, 1)] => (*v).clone(),
                        _ => Value::float(f64::NAN),
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
            render(scope, input, cx).map(move |(k, v): (Key, Value)| {
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
            let elements = render(scope, input, cx).map(|(s, v): (Key, Value)| (s, (s, v)));
            let out = with_param(scope, elements, param, cx).flat_map(
                move |(_, ((s, v), r)): (Key, (Element, Value))| {
                    let at = *hashes
                        .entry(s)
                        .or_insert_with(|| keys.labels(s).prometheus_hash() as f64 / u64::MAX as f64);
                    let r = r.scalar().clamp(-1.0, 1.0);
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
            let members = render(scope, input, cx).map(move |(s, v): (Key, Value)| {
                (keys.rewrite(&mut groups, s, |l| grouping_key(&l, &g)), (s, v))
            });
            let keys = cx.keys.clone();
            let out = with_param(scope, members, param, cx).reduce(
                move |_group, vals: &[(&(Element, Value), isize)], out: &mut Vec<((Key, Value), isize)>| {
                    let Some(((_, k), _)) = vals.first() else { return };
                    let present = vals
                        .iter()
                        .filter(|(_, m)| *m > 0)
                        .map(|(((s, v), _), _)| (keys.labels(*s), *s, v.clone()));
                    for element in values::choose(op, k.scalar(), present) {
                        out.push((element, 1));
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
                    let Some(((_, param), _)) = vals.first() else { return };
                    let param = param.scalar();
                    let mut xs: Vec<&Value> = Vec::with_capacity(vals.len());
                    for ((v, _), m) in vals {
                        for _ in 0..(*m).max(0) {
                            xs.push(v);
                        }
                    }
                    if let Some(value) = values::aggregate(op, &xs, param) {
                        out.push((value, 1));
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
        Node::HistogramStatistic { input, func } => {
            let (func, keys) = (*func, cx.keys.clone());
            let mut names = KeyMap::default();
            let counters = Arc::clone(&cx.counters);
            render(scope, input, cx).flat_map(move |(k, v): (Key, Value)| {
                let x = kernels::native::statistic(func, v.as_histogram()?)?;
                counters.count(Operator::Elementwise, 1);
                Some((keys.rewrite(&mut names, k, without_name), Value::float(x)))
            })
        }
        Node::Histogram { input, func, params, quantile_label } => {
            let (func, keys) = (*func, cx.keys.clone());
            let (params, quantiles) = (params.clone(), params.clone());
            let mut buckets_of = KeyMap::default();
            let elements = render(scope, input, cx);
            // a native histogram is its own answer, one per quantile
            let native_params = params.clone();
            let natives = elements.clone().flat_map(move |(k, v): (Key, Value)| {
                let answers = v
                    .as_histogram()
                    .map_or_else(Vec::new, |h| values::native_quantiles(func, &native_params, h));
                answers.into_iter().enumerate().map(move |(i, x)| (k, (i as u32, Value::float(x))))
            });
            let out = elements
                .flat_map(move |(k, count): (Key, Value)| {
                    // the buckets of classic histograms are floats
                    let count = Value::float(count.as_float()?);
                    // the histogram a bucket belongs to (its labels without `le`), and its bound
                    let (histogram, le) = *buckets_of.entry(k).or_insert_with(|| {
                        let mut l = keys.labels(k);
                        let le = parse_le(l.get("le")).ok();
                        l.remove("le");
                        (keys.intern(l), le)
                    });
                    le.map(|le| (histogram, (Value::float(le), count)))
                })
                .reduce(
                    move |_h, vals: &[(&(Value, Value), isize)], out: &mut Vec<((u32, Value), isize)>| {
                        // buckets with one bound written differently (`0.2`, `2e-1`) and the same
                        // count are one value with a multiplicity; the kernel adds them up
                        let mut buckets: Vec<(f64, f64)> = vals
                            .iter()
                            .flat_map(|((le, c), m)| {
                                std::iter::repeat_n((le.scalar(), c.scalar()), (*m).max(0) as usize)
                            })
                            .collect();
                        if buckets.is_empty() {
                            return;
                        }
                        if func == VectorFn::HistogramFraction {
                            let v = kernels::bucket_fraction(params[0], params[1], &mut buckets);
                            out.push(((0, Value::float(v)), 1));
                            return;
                        }
                        // one value per quantile: the first for histogram_quantile
                        let count = if func == VectorFn::HistogramQuantiles { params.len() } else { 1 };
                        for (i, &q) in params.iter().take(count).enumerate() {
                            out.push((
                                (i as u32, Value::float(kernels::bucket_quantile(q, &mut buckets).value)),
                                1,
                            ));
                        }
                    },
                );
            // the result's labels: without the name, and with the quantile's label if asked;
            // two histograms that this makes one label set are the batch executor's error
            let (keys, mut labelled) = (cx.keys.clone(), KeyMap::<(Key, u32), Key>::default());
            let quantile_label = quantile_label.clone();
            // a native histogram and classic buckets of the same labels: neither has an
            // answer (the batch executor warns of the mix)
            let native_keys = natives.clone().map(|(k, _)| k).distinct();
            let classic_keys = out.clone().map(|(k, _)| k).distinct();
            let out = out.antijoin(native_keys).concat(natives.antijoin(classic_keys)).map(
                move |(k, (i, v)): (Key, (u32, Value))| {
                    let k = *labelled.entry((k, i)).or_insert_with(|| {
                        let mut l = keys.labels(k);
                        if let Some(label) = &quantile_label {
                            let q = quantiles[i as usize];
                            l.set(label, &promflow_storage::gofmt::format_openmetrics_float(q));
                        }
                        keys.intern(without_name(l))
                    });
                    (k, v)
                },
            );
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
            .flat_map(|((_, v), t, diff): ((Key, Value), u64, isize)| {
                (diff > 0).then_some(Some((t, v.scalar())))
            })
            .broadcast();
        ticks = ticks.concat(values);
    }
    let (keys, counters) = (cx.keys.clone(), Arc::clone(&cx.counters));
    let route = cx.state.series_route.clone();
    series::render(rows, route, ticks, func.clone(), keep.clone(), pinned, cx.grain, keys, counters)
        .as_collection()
}

/// Each keyed record paired with a parameter's value: the constant's, or the changing
/// scalar's (a join on the unit key: when it changes, every record does, as each evaluation
/// recomputes them in Prometheus).
fn with_param<'s, D>(
    scope: Scope<'s, u64>,
    c: VecCollection<'s, u64, (Key, D), isize>,
    param: &Scalar,
    cx: &mut RenderCx<'_, 's>,
) -> VecCollection<'s, u64, (Key, (D, Value)), isize>
where
    D: timely::ExchangeData + Clone + Ord + std::fmt::Debug,
{
    match param {
        Scalar::Constant(p) => {
            let p = Value::float(*p);
            c.map(move |(k, d)| (k, (d, p.clone())))
        }
        Scalar::Varying(node) => {
            let p = render(scope, node, cx).map(|(_, p): (Key, Value)| ((), p));
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
                        session.give(((key, Value::float(old)), at, -1isize));
                    }
                    session.give(((key, Value::float(value)), at, 1isize));
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
    let data = if scope.index() == 0 { vec![((key, Value::float(value)), 0u64, 1isize)] } else { Vec::new() };
    let held_by_clock = clock.clone().flat_map(|_tick| std::iter::empty::<((Key, Value), u64, isize)>());
    data.to_stream(scope).concat(held_by_clock).as_collection()
}

/// Each element keyed by its match signature (`on`/`ignoring` labels).
fn by_signature<'s>(
    c: Coll<'s>,
    g: &Grouping,
    keys: &Keys,
) -> VecCollection<'s, u64, (Key, (Key, Value)), isize> {
    let (g, keys) = (g.clone(), keys.clone());
    let mut sigs = KeyMap::default();
    c.map(move |(k, v): (Key, Value)| (keys.rewrite(&mut sigs, k, |l| grouping_key(&l, &g)), (k, v)))
}

/// Each element under its group's key instead of its own.
fn by_group<'s>(c: Coll<'s>, g: &Grouping, keys: &Keys) -> Coll<'s> {
    let (g, keys) = (g.clone(), keys.clone());
    let mut groups = KeyMap::default();
    c.map(move |(k, v): (Key, Value)| (keys.rewrite(&mut groups, k, |l| grouping_key(&l, &g)), v))
}

/// What `info()` makes of an element: its new label set and value, or an error's key.
type InfoOutcome = Result<(Key, Value), Key>;

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
    let signature = |keys: &Keys, k: Key| {
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
    // an info series holds floats: one with a histogram is the batch executor's error
    let k5 = keys.clone();
    let not_info = info.clone().flat_map(move |(k, v): Element| {
        v.as_histogram()?;
        let message = format!("this should be an info metric, with float samples: {}", k5.labels(k));
        Some((k5.intern(Labels::from_pairs([(ERROR_LABEL, message)])), Value::float(0.0)))
    });
    let mut info_sigs = KeyMap::default();
    let info = info.flat_map(move |(k, ts): Element| {
        (*info_sigs.entry(k).or_insert_with(|| signature(&k3, k))).map(|sig| (sig, (k, ts)))
    });
    let with_sig = matching.clone().flat_map(|(sig, kv)| sig.map(|s| (s, kv)));
    let data_names = data_names.to_vec();
    let matched = with_sig
        .join(info.clone())
        .map(|(_sig, ((bk, bv), info)): (Key, (Element, Element))| (bk, (bv, info)))
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
                    Some((t, _)) if *t > ts.scalar() => {}
                    Some((t, existing)) if *t == ts.scalar() => {
                        let at = (t * 1000.0).round() as i64;
                        out.push(error(format!(
                            "found duplicate series for info metric: existing {existing} @ {at}, new {il} @ {at}"
                        )));
                        return;
                    }
                    _ => {
                        newest.insert(name, (ts.scalar(), il));
                    }
                }
            }
            let mut added = Labels::new();
            for (_, (_, il)) in newest {
                for l in il.iter().filter(|l| l.name != METRIC_NAME) {
                    if !data_names.is_empty() && !data_names.iter().any(|n| *n == l.name) {
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
            out.push((Ok((k4.intern(labels), bv.clone())), 1));
        });
    let errors = matched
        .clone()
        .flat_map(|(_, outcome)| outcome.err().map(|error| (error, Value::float(0.0))))
        .concat(not_info);
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
    many: &VecCollection<'s, u64, (Key, Element), isize>,
    one: &VecCollection<'s, u64, (Key, Element), isize>,
    swapped: bool,
    one_to_one: bool,
    keys: &Keys,
) -> Coll<'s> {
    let side = if swapped { "left" } else { "right" };
    let duplicates = |c: &VecCollection<'s, u64, (Key, Element), isize>, message: ErrorMessage| {
        let keys = keys.clone();
        c.clone().map(|(sig, (k, _))| (sig, k)).reduce(
            move |&sig, members: &[(&Key, isize)], out: &mut Vec<(Key, isize)>| {
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
        |c: &VecCollection<'s, u64, (Key, Element), isize>| c.clone().map(|(sig, _)| sig).distinct();
    let mut errors = duplicates(one, one_message).semijoin(present(many));
    if one_to_one {
        let many_message = Box::new(|_: &Labels, _: &[Labels]| {
            "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                .to_string()
        });
        errors = errors.concat(duplicates(many, many_message).semijoin(present(one)));
    }
    errors.map(|(_, error)| error).distinct().map(|error| (error, Value::float(0.0)))
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
    let strip_name = !(op.is_comparison() || op.is_trim()) || return_bool;
    // the operands in the operator's order: the many side is the right one under group_right
    let ordered = move |mv: Value, ov: Value| if swapped { (ov, mv) } else { (mv, ov) };
    let (many, one) = (by_signature(many, &g, keys), by_signature(one, &g, keys));
    let errors = matching_errors(&many, &one, swapped, one_to_one, keys);
    let (keys2, include2) = (keys.clone(), include.clone());
    let mut labelled: KeyMap<(Key, Key), Key> = KeyMap::default();
    let mut out = many.clone().join(one.clone()).flat_map(
        move |(_sig, ((mk, mv), (ok, ov))): (Key, (Element, Element))| {
            let (lv, rv) = ordered(mv, ov);
            let value = values::combine(op, &lv, &rv, return_bool)?;
            let k = *labelled.entry((mk, ok)).or_insert_with(|| {
                let (m, o) = (keys2.labels(mk), keys2.labels(ok));
                keys2.intern(result_labels(&m, &o, &g, one_to_one, &include2, strip_name))
            });
            Some((k, value))
        },
    );
    if let Some(fill) = key.fill_one {
        // a many-side element alone in its match group: the fill stands in for the one side,
        // whose labels it has none of
        let (keys, g) = (keys.clone(), key.grouping.clone());
        let mut labelled: KeyMap<Key, Key> = KeyMap::default();
        let alone = many.clone().antijoin(one.clone().map(|(sig, _)| sig).distinct());
        out = out.concat(alone.flat_map(move |(_sig, (mk, mv)): (Key, Element)| {
            let (lv, rv) = ordered(mv, Value::float(fill));
            let value = values::combine(op, &lv, &rv, return_bool)?;
            let k = *labelled.entry(mk).or_insert_with(|| {
                let m = keys.labels(mk);
                keys.intern(result_labels(&m, &Labels::new(), &g, one_to_one, &include, strip_name))
            });
            Some((k, value))
        }));
    }
    if let Some(fill) = key.fill_many {
        // a one-side element alone in its match group: labelled with the group's labels
        let alone = one.antijoin(many.map(|(sig, _)| sig).distinct());
        out = out.concat(alone.flat_map(move |(sig, (_ok, ov)): (Key, Element)| {
            let (lv, rv) = ordered(Value::float(fill), ov);
            values::combine(op, &lv, &rv, return_bool).map(|value| (sig, value))
        }));
    }
    (out, errors)
}
