//! The hub's lowering (on the controller): a plan of the shapes the hub holds becomes
//! [`HubNode`]s, shared between views by plan; anything else is [`unsupported`] here and
//! becomes a dataflow view.

use promflow_storage::Matcher;

use super::{constant, constants, window_time, LeafTime};
use crate::series::{Keep, ReadBack, SeriesFn};
use promflow_plan::semantics::selects_one_metric;
use promflow_plan::Error;
use promflow_plan::{AggOp, BinOp, Edges, Grouping, MapFn, Plan, ValueKind, VectorFn, WindowFn};

/// A node of a hub view, as the controller lowers it and the first worker builds it. Inputs
/// are nodes with smaller ids.
#[derive(Clone, Debug)]
pub(crate) enum HubNode {
    /// The per-series function of the samples fed to this node (its id is a leaf's), each
    /// sample counting `offset` milliseconds after its timestamp.
    Leaf { func: SeriesFn, keep: Keep, offset: i64 },
    /// A value function of each element (the metric name is dropped).
    Map { input: usize, func: MapFn, args: Vec<f64> },
    /// An operation between each element and a constant.
    ScalarOp { input: usize, op: BinOp, scalar: f64, scalar_left: bool, return_bool: bool },
    /// An aggregation by groups with a constant parameter.
    Aggregate { input: usize, op: AggOp, grouping: Grouping, param: f64 },
}

/// A hub node as the controller knows it.
struct Known {
    /// Its plan, to share it.
    plan: Plan,
    id: usize,
    /// How many views use it.
    refs: usize,
    /// Whether its elements keep distinct label sets when their metric names go (they all
    /// have one name, or none).
    distinct: bool,
}

/// The hub's nodes as the controller knows them.
#[derive(Default)]
pub(crate) struct HubPlans {
    nodes: Vec<Known>,
}

/// What lowering a view for the hub decided.
pub(crate) struct HubLowered {
    /// The node whose content is the view.
    pub(crate) root: usize,
    /// The nodes to build, in id order.
    pub(crate) new: Vec<(usize, HubNode)>,
    /// Every node the view uses (new or shared), each once.
    pub(crate) used: Vec<usize>,
    /// The new leaves and their selections.
    pub(crate) new_leaves: Vec<(usize, Vec<Matcher>)>,
}

fn unsupported(what: &str) -> Error {
    Error::Unsupported(format!("{what} in the hub"))
}

impl HubPlans {
    /// How many nodes the hub holds.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Lowers `plan` into hub nodes, sharing those that exist; `next_id` numbers new nodes.
    /// [`Error::Unsupported`] when the hub does not hold the plan (nothing is registered).
    pub(crate) fn lower(
        &mut self,
        plan: &Plan,
        lookback: i64,
        read_back: Option<&(ReadBack, i64)>,
        next_id: &mut dyn FnMut() -> usize,
    ) -> Result<HubLowered, Error> {
        let mut l = HubLowering {
            plans: self,
            lookback,
            read_back,
            new: Vec::new(),
            used: Vec::new(),
            leaves: Vec::new(),
        };
        let (root, _) = l.lower(plan, next_id)?;
        let (new, mut used, new_leaves) = (l.new, l.used, l.leaves);
        used.sort_unstable();
        used.dedup();
        let mut built = Vec::with_capacity(new.len());
        for (plan, id, node, distinct) in new {
            self.nodes.push(Known { plan, id, refs: 0, distinct });
            built.push((id, node));
        }
        for known in self.nodes.iter_mut() {
            if used.binary_search(&known.id).is_ok() {
                known.refs += 1;
            }
        }
        Ok(HubLowered { root, new: built, used, new_leaves })
    }

    /// A view that used `used` is gone: returns the nodes no view uses any more, which are
    /// forgotten.
    pub(crate) fn release(&mut self, used: &[usize]) -> Vec<usize> {
        let mut gone = Vec::new();
        self.nodes.retain_mut(|known| {
            if used.contains(&known.id) {
                known.refs -= 1;
                if known.refs == 0 {
                    gone.push(known.id);
                    return false;
                }
            }
            true
        });
        gone
    }
}

struct HubLowering<'a> {
    plans: &'a HubPlans,
    lookback: i64,
    read_back: Option<&'a (ReadBack, i64)>,
    /// The nodes to build: plan, id, node, and whether its elements stay distinct without
    /// their names.
    new: Vec<(Plan, usize, HubNode, bool)>,
    used: Vec<usize>,
    leaves: Vec<(usize, Vec<Matcher>)>,
}

impl HubLowering<'_> {
    /// Lowers `plan`; returns its node and whether its elements keep distinct label sets when
    /// their metric names go (they all have one name, or none).
    fn lower(&mut self, plan: &Plan, next_id: &mut dyn FnMut() -> usize) -> Result<(usize, bool), Error> {
        let known = self.plans.nodes.iter().map(|k| (&k.plan, k.id, k.distinct));
        let found =
            known.chain(self.new.iter().map(|(p, id, _, d)| (p, *id, *d))).find(|(p, _, _)| *p == plan);
        if let Some((_, id, distinct)) = found {
            self.used.push(id);
            return Ok((id, distinct));
        }
        let (node, distinct) = match plan {
            Plan::Select { matchers, shift, edges: Edges::Plain, .. } => {
                let Some(LeafTime::Shifted(offset)) = LeafTime::of(shift) else {
                    return Err(unsupported("a pinned or negative time shift"));
                };
                let func = SeriesFn::Last { lookback: self.lookback, timestamp: false, keep_name: false };
                let distinct = selects_one_metric(matchers);
                return Ok((self.leaf(plan, matchers, func, offset, distinct, next_id), distinct));
            }
            Plan::WindowFunction { func, input, args, .. } => {
                let Plan::Window { matchers, range_ms, shift, edges } = &**input else {
                    return Err(unsupported("a subquery"));
                };
                let (series_fn, offset) = match (edges, window_time(*func, shift)?) {
                    (_, LeafTime::Pinned(_)) => return Err(unsupported("@")),
                    (_, _) if *func == WindowFn::AbsentOverTime => {
                        return Err(unsupported("absent_over_time"))
                    }
                    (Edges::Plain, LeafTime::Shifted(offset)) => {
                        (SeriesFn::Window { func: *func, range: *range_ms, args: constants(args)? }, offset)
                    }
                    (Edges::Anchored, LeafTime::Shifted(offset)) if func.takes_anchored() => (
                        SeriesFn::Anchored { func: *func, range: *range_ms, lookback: self.lookback },
                        offset,
                    ),
                    _ => return Err(unsupported("this window")),
                };
                let drops = series_fn.drops_name();
                if drops && !selects_one_metric(matchers) {
                    // two series of different metrics could become one label set: the
                    // dataflow's check holds that error
                    return Err(unsupported("a function over series of several metrics"));
                }
                let distinct = drops || selects_one_metric(matchers);
                return Ok((self.leaf(plan, matchers, series_fn, offset, distinct, next_id), distinct));
            }
            Plan::Map { func: MapFn::StartTimestamp, .. } => {
                return Err(unsupported("start timestamps"));
            }
            Plan::Map { func, input, args }
                if input.kind() == ValueKind::Instant && *func != MapFn::Timestamp =>
            {
                let (input, distinct) = self.lower(input, next_id)?;
                if !distinct {
                    return Err(unsupported("a function over series of several metrics"));
                }
                (HubNode::Map { input, func: *func, args: constants(args)? }, true)
            }
            Plan::ScalarOp { op, lhs, rhs, return_bool } => {
                let (input, scalar, scalar_left) = match (lhs.kind(), rhs.kind()) {
                    (ValueKind::Scalar, ValueKind::Instant) => (rhs, lhs, true),
                    (ValueKind::Instant, ValueKind::Scalar) => (lhs, rhs, false),
                    _ => return Err(unsupported("scalar expressions")),
                };
                let scalar = constant(scalar).ok_or_else(|| unsupported("a scalar that changes"))?;
                let (input, distinct) = self.lower(input, next_id)?;
                // comparisons and trims keep the metric name
                let keeps_name = (op.is_comparison() || op.is_trim()) && !*return_bool;
                if !keeps_name && !distinct {
                    return Err(unsupported("arithmetic over series of several metrics"));
                }
                let node =
                    HubNode::ScalarOp { input, op: *op, scalar, scalar_left, return_bool: *return_bool };
                (node, distinct || !keeps_name)
            }
            Plan::Aggregate { op, grouping, param, input, .. } => {
                let param = match (op, param) {
                    (AggOp::Sum | AggOp::Avg | AggOp::Min | AggOp::Max | AggOp::Count, None)
                    | (AggOp::Group | AggOp::Stddev | AggOp::Stdvar, None) => 0.0,
                    (AggOp::Quantile | AggOp::Topk | AggOp::Bottomk | AggOp::Limitk, Some(p)) => {
                        let k = constant(p).ok_or_else(|| unsupported("a parameter that changes"))?;
                        if k.is_nan() && *op != AggOp::Quantile {
                            // the dataflow fails the installation with Prometheus's message
                            return Err(unsupported("a NaN parameter"));
                        }
                        k
                    }
                    _ => return Err(unsupported("this aggregation")),
                };
                let (input, distinct) = self.lower(input, next_id)?;
                let keeps_input = matches!(op, AggOp::Topk | AggOp::Bottomk | AggOp::Limitk);
                let by_name = matches!(grouping, Grouping::By(names) if names.iter().any(|n| n == promflow_storage::METRIC_NAME));
                let distinct = if keeps_input { distinct } else { !by_name };
                (HubNode::Aggregate { input, op: *op, grouping: grouping.clone(), param }, distinct)
            }
            // a view has no order: sorting leaves it as it is
            Plan::VectorFunction {
                func: VectorFn::Sort | VectorFn::SortDesc | VectorFn::SortByLabel | VectorFn::SortByLabelDesc,
                input,
                ..
            } => return self.lower(input, next_id),
            _ => return Err(unsupported("this expression")),
        };
        let id = next_id();
        self.used.push(id);
        self.new.push((plan.clone(), id, node, distinct));
        Ok((id, distinct))
    }

    /// A leaf computing `func` over `matchers`' series, registered as `plan`.
    fn leaf(
        &mut self,
        plan: &Plan,
        matchers: &[Matcher],
        func: SeriesFn,
        offset: i64,
        distinct: bool,
        next_id: &mut dyn FnMut() -> usize,
    ) -> usize {
        // reading a window back from storage follows the window's moving start: not shifted
        let read_back = if offset == 0 { self.read_back } else { None };
        let keep = Keep::choose(&func, matchers, read_back);
        let id = next_id();
        self.used.push(id);
        self.leaves.push((id, matchers.to_vec()));
        self.new.push((plan.clone(), id, HubNode::Leaf { func, keep, offset }, distinct));
        id
    }
}
