//! A view's values, floats and native histograms, and what the operators do with them: the
//! batch executor's rules for each kind, through the same kernels, so that a view over
//! histograms gives what an evaluation gives.

use std::marker::PhantomData;
use std::sync::Arc;

use promflow_kernels as kernels;
use promflow_kernels::native::Operand;
use promflow_plan::{AggOp, BinOp, MapFn, VectorFn};
use promflow_storage::{FloatHistogram, Labels};

/// A view's value: a float or a native histogram, in the 8 bytes of an `f64`.
///
/// Views hold values in bulk (every row, arrangement update and emitted value), and almost
/// all of them are floats: a two-variant enum would be 16 bytes and cost float-only views
/// their memory and copying time. A histogram is therefore held NaN-boxed: a float whose top
/// 14 bits are all set (a negative NaN with the two top mantissa bits set, which no float
/// operation yields) carries in its low 50 bits the address of an `Arc<FloatHistogram>`'s
/// value, shifted right by its alignment. A float with that bit pattern is stored as the
/// canonical NaN: PromQL tells NaNs apart only by the staleness marker, which is positive.
///
/// Ordered (floats first, each kind by `total_cmp`) and equal by bits, as differential
/// needs: a NaN retraction must cancel the NaN it retracts.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(from = "Unboxed", into = "Unboxed")]
pub struct Value {
    bits: u64,
    /// Makes the value `Send`, `Sync` and dropped as the `Arc` it may hold.
    _holds: PhantomData<Arc<FloatHistogram>>,
}

/// A [`Value`] taken apart, owning its histogram's handle.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Unboxed {
    /// A float.
    Float(f64),
    /// A native histogram.
    Histogram(Arc<FloatHistogram>),
}

/// The bits that mark a boxed histogram: sign, exponent and the two top mantissa bits set.
const BOXED: u64 = 0xFFFC_0000_0000_0000;
/// The bits of a boxed histogram that hold its address.
const ADDRESS: u64 = !BOXED;
/// A histogram's address is a multiple of its alignment (8), so its low bits are not stored:
/// 50 bits hold 53-bit addresses, more than Linux hands out without an explicit hint.
const ALIGN_BITS: u32 = 3;

impl Value {
    /// A float value. A NaN with the histogram mark becomes the canonical NaN.
    pub fn float(v: f64) -> Value {
        let bits = v.to_bits();
        let bits = if bits & BOXED == BOXED { f64::NAN.to_bits() } else { bits };
        Value { bits, _holds: PhantomData }
    }

    /// A histogram value, holding `h`'s reference.
    pub fn histogram(h: Arc<FloatHistogram>) -> Value {
        let address = Arc::into_raw(h).expose_provenance() as u64;
        assert!(
            address & ((1 << ALIGN_BITS) - 1) == 0 && (address >> ALIGN_BITS) & BOXED == 0,
            "a histogram's address {address:#x} does not fit a boxed value"
        );
        Value { bits: BOXED | (address >> ALIGN_BITS), _holds: PhantomData }
    }

    /// The boxed histogram's address, if the value holds one.
    fn boxed(&self) -> Option<*const FloatHistogram> {
        (self.bits & BOXED == BOXED)
            .then_some(std::ptr::with_exposed_provenance(((self.bits & ADDRESS) << ALIGN_BITS) as usize))
    }

    /// The float, if the value is one.
    pub fn as_float(&self) -> Option<f64> {
        (self.bits & BOXED != BOXED).then(|| f64::from_bits(self.bits))
    }

    /// The histogram, if the value is one.
    pub fn as_histogram(&self) -> Option<&FloatHistogram> {
        // SAFETY: a boxed address comes from `Arc::into_raw` in `Value::histogram`, and the
        // value holds that reference until it is dropped, so the histogram lives as long as
        // `self` is borrowed.
        self.boxed().map(|p| unsafe { &*p })
    }

    /// The histogram's shared handle, if the value is one.
    pub fn shared_histogram(&self) -> Option<Arc<FloatHistogram>> {
        self.boxed().map(|p| {
            // SAFETY: as in `as_histogram`; the count taken here is the returned `Arc`'s.
            unsafe {
                Arc::increment_strong_count(p);
                Arc::from_raw(p)
            }
        })
    }

    /// The value taken apart, its reference moved to the [`Unboxed::Histogram`].
    pub fn unbox(self) -> Unboxed {
        let this = std::mem::ManuallyDrop::new(self);
        match this.boxed() {
            // SAFETY: the reference `Value::histogram` took is handed over: `this` is not
            // dropped.
            Some(p) => Unboxed::Histogram(unsafe { Arc::from_raw(p) }),
            None => Unboxed::Float(f64::from_bits(this.bits)),
        }
    }

    /// A scalar's value: the float (a scalar is never a histogram; NaN if it were).
    pub(crate) fn scalar(&self) -> f64 {
        self.as_float().unwrap_or(f64::NAN)
    }

    /// The value as an operand of the kernels' operators over floats and histograms, the
    /// form to match on.
    pub fn operand(&self) -> Operand<'_> {
        match self.as_histogram() {
            Some(h) => Operand::Histogram(h),
            None => Operand::Float(f64::from_bits(self.bits)),
        }
    }
}

impl Clone for Value {
    fn clone(&self) -> Self {
        if let Some(p) = self.boxed() {
            // SAFETY: `p` is a live `Arc`'s (see `as_histogram`); the clone holds the count.
            unsafe { Arc::increment_strong_count(p) };
        }
        Value { bits: self.bits, _holds: PhantomData }
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        if let Some(p) = self.boxed() {
            // SAFETY: the value holds one count of `p`'s `Arc`, given back once here.
            unsafe { drop(Arc::from_raw(p)) };
        }
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.operand() {
            Operand::Float(v) => f.debug_tuple("Float").field(&v).finish(),
            Operand::Histogram(h) => f.debug_tuple("Histogram").field(h).finish(),
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::float(v)
    }
}

impl From<Arc<FloatHistogram>> for Value {
    fn from(h: Arc<FloatHistogram>) -> Self {
        Value::histogram(h)
    }
}

impl From<Unboxed> for Value {
    fn from(v: Unboxed) -> Self {
        match v {
            Unboxed::Float(v) => Value::float(v),
            Unboxed::Histogram(h) => Value::histogram(h),
        }
    }
}

impl From<Value> for Unboxed {
    fn from(v: Value) -> Self {
        v.unbox()
    }
}

impl PartialEq for Value {
    fn eq(&self, o: &Self) -> bool {
        self.bits == o.bits
            || match (self.as_histogram(), o.as_histogram()) {
                (Some(a), Some(b)) => a.total_cmp(b).is_eq(),
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
        match (self.operand(), o.operand()) {
            (Operand::Float(a), Operand::Float(b)) => a.total_cmp(&b),
            (Operand::Histogram(a), Operand::Histogram(b)) => a.total_cmp(b),
            (Operand::Float(_), Operand::Histogram(_)) => Less,
            (Operand::Histogram(_), Operand::Float(_)) => Greater,
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
    match v.operand() {
        Operand::Float(x) => Some(Value::float(kernels::map(func, x, args, 0))),
        Operand::Histogram(h) if func == MapFn::Negate => {
            let mut h = h.clone();
            h.scale(-1.0);
            Some(Value::histogram(Arc::new(h)))
        }
        Operand::Histogram(_) => None,
    }
}

/// `l op r` (`None`: no element), as the batch executor combines a pair: floats by the
/// kernel (a filtering comparison keeps `l`), anything with a histogram by the histogram
/// kernel (scaled, added, compared; no element where the kinds do not combine).
pub(crate) fn combine(op: BinOp, l: &Value, r: &Value, return_bool: bool) -> Option<Value> {
    match (l.as_float(), r.as_float()) {
        // a trim takes a histogram: of two floats there is no element
        (Some(a), Some(b)) if !op.is_trim() => kernels::combine(op, a, b, return_bool).map(Value::float),
        _ => match kernels::native::binary(op, l.operand(), r.operand(), &mut Vec::new()) {
            None => None,
            Some((_, keep)) if return_bool => Some(Value::float(if keep { 1.0 } else { 0.0 })),
            Some((result, keep)) => result.filter(|_| keep).map(|h| Value::histogram(Arc::new(h))),
        },
    }
}

/// `op` of a group's values (`param`: the aggregation's parameter), in the order given: of
/// floats alone the kernel's aggregate; with histograms among them, as Prometheus aggregates
/// those (`sum` and `avg` add them, nothing for a mix; `count` and `group` count them; the
/// others leave them out).
pub(crate) fn aggregate(op: AggOp, values: &[&Value], param: f64) -> Option<Value> {
    let mut floats: Vec<f64> = values.iter().filter_map(|v| v.as_float()).collect();
    let hists: Vec<&FloatHistogram> = values.iter().filter_map(|v| v.as_histogram()).collect();
    if hists.is_empty() {
        return (!floats.is_empty()).then(|| Value::float(kernels::aggregate_values(op, &mut floats, param)));
    }
    match kernels::native::aggregate(op, &mut floats, &hists, param, &mut Vec::new()) {
        (Some(f), _) => Some(Value::float(f)),
        (None, Some(h)) => Some(Value::histogram(Arc::new(h))),
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
    let s = Value::float(scalar);
    let (a, b) = if scalar_left { (&s, &v) } else { (&v, &s) };
    let value = combine(op, a, b, return_bool)?;
    Some(if op.is_comparison() && !return_bool { v } else { value })
}

/// `topk`, `bottomk` or `limitk` (`k`) of a group's members (labels, key, value), chosen as
/// the batch executor chooses: in label order, so that ties go the same way; `topk` and
/// `bottomk` rank floats and leave histograms out, `limitk` keeps them.
pub(crate) fn choose<K: Copy>(
    op: AggOp,
    k: f64,
    members: impl Iterator<Item = (Labels, K, Value)>,
) -> Vec<(K, Value)> {
    let k = kernels::rank_count(k);
    let mut present: Vec<(Labels, K, Value)> =
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

#[cfg(test)]
mod tests {
    use super::*;
    use promflow_storage::native_histogram::CounterResetHint;

    fn histogram(sum: f64) -> Arc<FloatHistogram> {
        let h = FloatHistogram::from_buckets(
            CounterResetHint::Unknown,
            0,
            0.25,
            1.0,
            4.0,
            sum,
            vec![(0, 1.0), (2, 2.0)],
            vec![],
            vec![],
        );
        Arc::new(h.unwrap())
    }

    /// The reference the boxed value must order as: the plain two-variant enum.
    fn reference_cmp(a: &Unboxed, b: &Unboxed) -> std::cmp::Ordering {
        use std::cmp::Ordering::{Greater, Less};
        match (a, b) {
            (Unboxed::Float(a), Unboxed::Float(b)) => a.total_cmp(b),
            (Unboxed::Histogram(a), Unboxed::Histogram(b)) => a.total_cmp(b),
            (Unboxed::Float(_), _) => Less,
            (Unboxed::Histogram(_), _) => Greater,
        }
    }

    #[test]
    fn a_value_is_the_size_of_a_float() {
        assert_eq!(std::mem::size_of::<Value>(), 8);
    }

    #[test]
    fn floats_keep_their_bits_except_a_nan_with_the_histogram_mark() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let hardware_nan = f64::from_bits(0xfff8_0000_0000_0000);
        for x in
            [0.0, -0.0, 1.5, -1e300, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, stale, hardware_nan, 5e-324]
        {
            let v = Value::float(x);
            assert_eq!(v.as_float().map(f64::to_bits), Some(x.to_bits()), "{x}");
            assert!(v.as_histogram().is_none());
            assert!(matches!(v.clone().unbox(), Unboxed::Float(y) if y.to_bits() == x.to_bits()));
        }
        let marked = f64::from_bits(BOXED | 0x1234);
        assert_eq!(Value::float(marked).as_float().map(f64::to_bits), Some(f64::NAN.to_bits()));
    }

    #[test]
    fn a_histogram_value_holds_one_reference_per_copy() {
        let h = histogram(3.0);
        let v = Value::histogram(Arc::clone(&h));
        assert_eq!(Arc::strong_count(&h), 2);
        assert_eq!(v.as_histogram().map(|x| x.sum), Some(3.0));
        assert!(v.as_float().is_none());
        let copies: Vec<Value> = (0..5).map(|_| v.clone()).collect();
        assert_eq!(Arc::strong_count(&h), 7);
        drop(copies);
        assert_eq!(Arc::strong_count(&h), 2);
        let shared = v.shared_histogram().unwrap();
        assert!(Arc::ptr_eq(&shared, &h));
        assert_eq!(Arc::strong_count(&h), 3);
        drop(shared);
        match v.unbox() {
            Unboxed::Histogram(back) => {
                assert!(Arc::ptr_eq(&back, &h));
                assert_eq!(Arc::strong_count(&h), 2);
            }
            Unboxed::Float(_) => panic!("a histogram unboxed as a float"),
        }
        assert_eq!(Arc::strong_count(&h), 1);
    }

    #[test]
    fn values_order_and_compare_as_the_plain_enum() {
        let unboxed = [
            Unboxed::Float(f64::NEG_INFINITY),
            Unboxed::Float(-1.0),
            Unboxed::Float(-0.0),
            Unboxed::Float(0.0),
            Unboxed::Float(2.0),
            Unboxed::Float(f64::NAN),
            Unboxed::Float(f64::from_bits(0x7ff0_0000_0000_0002)),
            Unboxed::Histogram(histogram(1.0)),
            Unboxed::Histogram(histogram(2.0)),
            Unboxed::Histogram(histogram(2.0)),
        ];
        let boxed: Vec<Value> = unboxed.iter().cloned().map(Value::from).collect();
        for (a, x) in unboxed.iter().zip(&boxed) {
            for (b, y) in unboxed.iter().zip(&boxed) {
                assert_eq!(x.cmp(y), reference_cmp(a, b), "{x:?} against {y:?}");
                assert_eq!(x == y, reference_cmp(a, b).is_eq(), "{x:?} against {y:?}");
            }
        }
    }

    #[test]
    fn values_serialize_as_the_plain_enum() {
        for v in [Value::float(-2.5), Value::histogram(histogram(7.0))] {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, serde_json::to_string(&v.clone().unbox()).unwrap());
            let back: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(back, v);
        }
    }
}
