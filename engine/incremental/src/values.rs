//! A view's values, floats and native histograms, and what the operators do with them: the
//! batch executor's rules for each kind, through the same kernels, so that a view over
//! histograms gives what an evaluation gives.

use std::sync::Arc;

use promflow_kernels as kernels;
use promflow_kernels::native::Operand;
use promflow_plan::{AggOp, BinOp, MapFn, VectorFn};
use promflow_storage::{FloatHistogram, Labels};

/// A view's value: a float or a native histogram. Ordered (floats first, each kind by
/// `total_cmp`) and equal by bits, as differential needs: a NaN retraction must cancel the
/// NaN it retracts.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Value {
    /// A float.
    Float(f64),
    /// A native histogram.
    Histogram(Arc<FloatHistogram>),
}

impl Value {
    /// The float, if the value is one.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::Histogram(_) => None,
        }
    }

    /// The histogram, if the value is one.
    pub fn as_histogram(&self) -> Option<&Arc<FloatHistogram>> {
        match self {
            Value::Float(_) => None,
            Value::Histogram(h) => Some(h),
        }
    }

    /// A scalar's value: the float (a scalar is never a histogram; NaN if it were).
    pub(crate) fn scalar(&self) -> f64 {
        self.as_float().unwrap_or(f64::NAN)
    }

    /// The value as an operand of the kernels' operators over floats and histograms.
    pub(crate) fn operand(&self) -> Operand<'_> {
        match self {
            Value::Float(v) => Operand::Float(*v),
            Value::Histogram(h) => Operand::Histogram(h),
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<Arc<FloatHistogram>> for Value {
    fn from(h: Arc<FloatHistogram>) -> Self {
        Value::Histogram(h)
    }
}

impl PartialEq for Value {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Histogram(a), Value::Histogram(b)) => Arc::ptr_eq(a, b) || a.total_cmp(b).is_eq(),
            _ => false,
        }
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Value {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering::{Greater, Less};
        match (self, o) {
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Histogram(a), Value::Histogram(b)) => a.total_cmp(b),
            (Value::Float(_), Value::Histogram(_)) => Less,
            (Value::Histogram(_), Value::Float(_)) => Greater,
        }
    }
}

/// A value function of a value with constant arguments (`None`: no element): of a float, the
/// kernel's; a histogram is negated bucket by bucket, and left out by every other function, as
/// Prometheus's functions of floats leave it out. `clamp` with min > max yields nothing.
pub(crate) fn map(func: MapFn, v: &Value, args: &[f64]) -> Option<Value> {
    if func == MapFn::Clamp && args.get(1) < args.first() {
        return None;
    }
    match v {
        Value::Float(x) => Some(Value::Float(kernels::map(func, *x, args, 0))),
        Value::Histogram(h) if func == MapFn::Negate => {
            let mut h = (**h).clone();
            h.scale(-1.0);
            Some(Value::Histogram(Arc::new(h)))
        }
        Value::Histogram(_) => None,
    }
}

/// `l op r` (`None`: no element), as the batch executor combines a pair: floats by the
/// kernel (a filtering comparison keeps `l`), anything with a histogram by the histogram
/// kernel (scaled, added, compared; no element where the kinds do not combine).
pub(crate) fn combine(op: BinOp, l: &Value, r: &Value, return_bool: bool) -> Option<Value> {
    match (l, r) {
        (Value::Float(a), Value::Float(b)) => kernels::combine(op, *a, *b, return_bool).map(Value::Float),
        _ => match kernels::native::binary(op, l.operand(), r.operand(), &mut Vec::new()) {
            None => None,
            Some((_, keep)) if return_bool => Some(Value::Float(if keep { 1.0 } else { 0.0 })),
            Some((result, keep)) => result.filter(|_| keep).map(|h| Value::Histogram(Arc::new(h))),
        },
    }
}

/// `op` of a group's values (`param`: the aggregation's parameter), in the order given: of
/// floats alone the kernel's aggregate; with histograms among them, as Prometheus aggregates
/// those (`sum` and `avg` add them, nothing for a mix; `count` and `group` count them; the
/// others leave them out).
pub(crate) fn aggregate(op: AggOp, values: &[&Value], param: f64) -> Option<Value> {
    let mut floats: Vec<f64> = values.iter().filter_map(|v| v.as_float()).collect();
    let hists: Vec<&FloatHistogram> = values.iter().filter_map(|v| v.as_histogram().map(|h| &**h)).collect();
    if hists.is_empty() {
        return (!floats.is_empty()).then(|| Value::Float(kernels::aggregate_values(op, &mut floats, param)));
    }
    match kernels::native::aggregate(op, &mut floats, &hists, param, &mut Vec::new()) {
        (Some(f), _) => Some(Value::Float(f)),
        (None, Some(h)) => Some(Value::Histogram(Arc::new(h))),
        (None, None) => None,
    }
}

/// An operation between an element's value `v` and a scalar (on the left when
/// `scalar_left`): arithmetic and `bool` give the result, a filtering comparison keeps the
/// element's value; `None`: no element.
pub(crate) fn with_scalar(
    op: BinOp,
    v: Value,
    scalar: f64,
    scalar_left: bool,
    return_bool: bool,
) -> Option<Value> {
    let s = Value::Float(scalar);
    let (a, b) = if scalar_left { (&s, &v) } else { (&v, &s) };
    let value = combine(op, a, b, return_bool)?;
    Some(if op.is_comparison() && !return_bool { v } else { value })
}

/// `topk`, `bottomk` or `limitk` (`k`) of a group's members (labels, key, value), chosen as
/// the batch executor chooses: in label order, so that ties go the same way; `topk` and
/// `bottomk` rank floats and leave histograms out, `limitk` keeps them.
pub(crate) fn choose(
    op: AggOp,
    k: f64,
    members: impl Iterator<Item = (Labels, u64, Value)>,
) -> Vec<(u64, Value)> {
    let k = if k >= 1.0 { k.min(1e9) as usize } else { 0 };
    let mut present: Vec<(Labels, u64, Value)> =
        members.filter(|m| op == AggOp::Limitk || m.2.as_float().is_some()).collect();
    present.sort_by(|a, b| a.0.cmp(&b.0));
    let candidates: Vec<(usize, f64)> = present.iter().enumerate().map(|(i, p)| (i, p.2.scalar())).collect();
    let chosen = match op {
        AggOp::Limitk => (0..k.min(candidates.len())).collect(),
        _ => kernels::heap_select(&candidates, k, op == AggOp::Topk),
    };
    chosen.into_iter().map(|i| (present[i].1, present[i].2.clone())).collect()
}

/// `histogram_quantile` (the first of `params`), `histogram_quantiles` (each of them) or
/// `histogram_fraction` (between the first two) of a native histogram.
pub(crate) fn native_quantiles(func: VectorFn, params: &[f64], h: &FloatHistogram) -> Vec<f64> {
    match func {
        VectorFn::HistogramFraction => {
            vec![kernels::native::histogram_fraction(params[0], params[1], h).0]
        }
        VectorFn::HistogramQuantiles => {
            params.iter().map(|&q| kernels::native::histogram_quantile(q, h).0).collect()
        }
        _ => vec![kernels::native::histogram_quantile(params[0], h).0],
    }
}
