//! `sum`, `count`, `avg` and `group` as *differences*: each element contributes its value and
//! a count of one, and [`aggregate`] accumulates the contributions per group in place. A
//! change costs one update of its group's total however large the group is, where a
//! differential `reduce` replays the whole group and a differential `count` arranges every
//! contribution.
//!
//! Floats do not cancel exactly under −old, +new, so the sum is kept as a double-double (the
//! rounded sum and its error, by TwoSum): adding and retracting values of any magnitude leaves
//! the result as accurate as a compensated sum over the group. Non-finite values are counted
//! apart, because `∞ − ∞` and `NaN − NaN` would poison a running sum for good. A group whose
//! count falls to zero is forgotten, with whatever residue its sum kept.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;

use super::exchange::KeyExchange;
use super::keys::{Key, KeyMap};
use super::values::{self, Value};
use super::Counters;
use promflow_plan::AggOp;

/// One group's accumulated contributions.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct SumCount {
    /// The finite values' sum, rounded, and the rounding error.
    sum: f64,
    err: f64,
    /// The same sum scaled by 2⁻⁵¹², for a mean of values whose sum overflows.
    scaled: f64,
    scaled_err: f64,
    /// How many values.
    count: i64,
    /// How many of them were NaN, +∞ and −∞.
    nan: i64,
    pos_inf: i64,
    neg_inf: i64,
}

/// 2⁻⁵¹², exact as a multiplier.
const SCALE: f64 = 7.458340731200207e-155;

/// Knuth's TwoSum: `a + b` rounded, and the exact error of that rounding.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// Two double-doubles added, renormalised.
fn add(a: f64, a_err: f64, b: f64, b_err: f64) -> (f64, f64) {
    let (s, e) = two_sum(a, b);
    if !s.is_finite() {
        return (s, 0.0);
    }
    two_sum(s, e + a_err + b_err)
}

impl SumCount {
    /// One value's contribution.
    fn of(v: f64) -> SumCount {
        let mut c = SumCount { count: 1, ..Default::default() };
        if v.is_nan() {
            c.nan = 1;
        } else if v == f64::INFINITY {
            c.pos_inf = 1;
        } else if v == f64::NEG_INFINITY {
            c.neg_inf = 1;
        } else {
            c.sum = v;
            c.scaled = v * SCALE;
        }
        c
    }

    /// The mean of the group's values (Prometheus's `avg`, which does not overflow where
    /// the sum would).
    fn mean(&self) -> f64 {
        let sum = self.sum();
        if sum.is_finite() || self.nan > 0 || self.pos_inf > 0 || self.neg_inf > 0 {
            return sum / self.count as f64;
        }
        (self.scaled + self.scaled_err) / self.count as f64 / SCALE
    }

    /// The sum of the group's values, as IEEE addition would give it.
    fn sum(&self) -> f64 {
        if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            f64::NAN
        } else if self.pos_inf > 0 {
            f64::INFINITY
        } else if self.neg_inf > 0 {
            f64::NEG_INFINITY
        } else if !self.sum.is_finite() {
            // the finite values' sum overflowed (its error term is NaN then); a group that
            // overflowed once stays so, which only values near f64::MAX can bring about
            self.sum
        } else {
            self.sum + self.err
        }
    }

    /// Adds another group's contributions.
    fn plus_equals(&mut self, rhs: &Self) {
        (self.sum, self.err) = add(self.sum, self.err, rhs.sum, rhs.err);
        (self.scaled, self.scaled_err) = add(self.scaled, self.scaled_err, rhs.scaled, rhs.scaled_err);
        self.count += rhs.count;
        self.nan += rhs.nan;
        self.pos_inf += rhs.pos_inf;
        self.neg_inf += rhs.neg_inf;
    }

    /// The contributions `n` times over (−1: their retraction).
    fn multiply(mut self, n: isize) -> SumCount {
        let n = n as i64;
        self.sum *= n as f64;
        self.err *= n as f64;
        self.scaled *= n as f64;
        self.scaled_err *= n as f64;
        self.count *= n;
        self.nan *= n;
        self.pos_inf *= n;
        self.neg_inf *= n;
        self
    }

    /// The aggregation's result for the group, `None` when the group is empty.
    fn result(&self, op: AggOp) -> Option<f64> {
        match op {
            _ if self.count <= 0 => None,
            AggOp::Count => Some(self.count as f64),
            AggOp::Group => Some(1.0),
            AggOp::Avg => Some(self.mean()),
            _ => Some(self.sum()),
        }
    }
}

/// A group's contributions: its floats' totals, and its native histograms, which are few
/// (a histogram sum is recomputed from them at each change, as the batch executor adds them:
/// histograms do not cancel under −old, +new).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Totals {
    floats: SumCount,
    /// Each histogram's multiplicity.
    hists: BTreeMap<Value, i64>,
}

impl Totals {
    /// Adds `value`'s contribution `n` times (−1: its retraction).
    fn add(&mut self, value: Value, n: isize) {
        match value.as_float() {
            Some(v) => self.floats.plus_equals(&SumCount::of(v).multiply(n)),
            None => self.add_histogram(value, n as i64),
        }
    }

    /// Adds `n` to the multiplicity of the histogram `h`, forgetting it at zero.
    fn add_histogram(&mut self, h: Value, n: i64) {
        match self.hists.entry(h) {
            Entry::Occupied(mut m) => {
                *m.get_mut() += n;
                if *m.get() == 0 {
                    m.remove();
                }
            }
            Entry::Vacant(m) => drop(m.insert(n)),
        }
    }

    /// Adds the contributions of `other` (some elements' changes at one time).
    fn merge(&mut self, other: Totals) {
        self.floats.plus_equals(&other.floats);
        for (h, n) in other.hists {
            self.add_histogram(h, n);
        }
    }

    /// Whether no contribution is left.
    fn is_empty(&self) -> bool {
        self.floats.count == 0 && self.hists.is_empty()
    }

    /// Whether the contributions change nothing (an element's retraction and the same value
    /// again): nothing to send.
    fn changes_nothing(&self) -> bool {
        self.floats == SumCount::default() && self.hists.is_empty()
    }

    /// The aggregation's result for the group, `None` when the group is empty or its
    /// contributions do not combine (a `sum` or `avg` of floats and histograms, as in
    /// Prometheus).
    fn result(&self, op: AggOp) -> Option<Value> {
        if self.hists.is_empty() {
            return self.floats.result(op).map(Value::float);
        }
        let members: Vec<&Value> =
            self.hists.iter().flat_map(|(h, m)| std::iter::repeat_n(h, (*m).max(0) as usize)).collect();
        match op {
            AggOp::Count => Some(Value::float((self.floats.count + members.len() as i64) as f64)),
            AggOp::Group => Some(Value::float(1.0)),
            _ if self.floats.count > 0 => None,
            _ => values::aggregate(op, &members, 0.0),
        }
    }
}

/// The changes of some elements of a group at one time, combined: (group, their totals).
type Contribution = (Key, Totals);

/// `op` (`sum`, `count`, `avg` or `group`) of `elements`, keyed by their group: one state per
/// group on the worker that owns it, changed in place by each element's change once its time
/// is complete, and a change of the group's result (−old, +new) at that time.
///
/// Each worker first combines the changes it makes to a group at a time into one record
/// (their totals), which crosses to the group's owner: a change of an element's value would
/// otherwise send two (its retraction and its new value), one pair per element of the group.
pub(crate) fn aggregate<'s>(
    elements: VecCollection<'s, u64, (Key, Value), isize>,
    op: AggOp,
    counters: Arc<Counters>,
) -> VecCollection<'s, u64, (Key, Value), isize> {
    let owner = KeyExchange::new(|u: &(Key, Totals, u64)| u.0 .0);
    elements
        .inner
        .unary_frontier(Pipeline, "abelian combine", move |_cap, _info| {
            let mut pending: BTreeMap<u64, (Capability<u64>, KeyMap<Key, Totals>)> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    for batch in data {
                        for ((group, v), t, diff) in batch.iter() {
                            let (_, groups) =
                                pending.entry(*t).or_insert_with(|| (cap.delayed(t, 0), KeyMap::default()));
                            groups.entry(*group).or_default().add(v.clone(), *diff);
                        }
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (t, (cap, groups)) = entry.remove_entry();
                    let mut session = output.session(&cap);
                    for (group, totals) in groups {
                        if !totals.changes_nothing() {
                            session.give((group, totals, t));
                        }
                    }
                }
            }
        })
        .unary_frontier(owner, "abelian", move |_cap, _info| {
            let mut pending: BTreeMap<u64, (Capability<u64>, Vec<Contribution>)> = BTreeMap::new();
            let mut totals: KeyMap<Key, Totals> = KeyMap::default();
            let mut before: KeyMap<Key, Option<Value>> = KeyMap::default();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    for batch in data {
                        for (group, delta, t) in batch.iter() {
                            pending
                                .entry(*t)
                                .or_insert_with(|| (cap.delayed(t, 0), Vec::new()))
                                .1
                                .push((*group, delta.clone()));
                        }
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (t, (cap, changes)) = entry.remove_entry();
                    for (group, delta) in changes {
                        let total = totals.entry(group).or_default();
                        before.entry(group).or_insert_with(|| total.result(op));
                        total.merge(delta);
                    }
                    let mut session = output.session(&cap);
                    for (group, old) in before.drain() {
                        let new = totals.get(&group).and_then(|total| total.result(op));
                        if totals.get(&group).is_some_and(Totals::is_empty) {
                            totals.remove(&group);
                        }
                        if old == new {
                            continue;
                        }
                        counters.count(
                            super::Operator::Aggregate,
                            usize::from(old.is_some()) + usize::from(new.is_some()),
                        );
                        if let Some(old) = old {
                            session.give(((group, old), t, -1isize));
                        }
                        if let Some(new) = new {
                            session.give(((group, new), t, 1isize));
                        }
                    }
                }
            }
        })
        .as_collection()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(vals: &[(f64, isize)]) -> SumCount {
        let mut acc = SumCount::default();
        for &(v, d) in vals {
            acc.plus_equals(&SumCount::of(v).multiply(d));
        }
        acc
    }

    impl SumCount {
        /// Whether nothing is left of any contribution.
        fn is_zero(&self) -> bool {
            self.count == 0
                && self.nan == 0
                && self.pos_inf == 0
                && self.neg_inf == 0
                && self.sum == 0.0
                && self.err == 0.0
                && self.scaled == 0.0
                && self.scaled_err == 0.0
        }
    }

    #[test]
    fn changes_combined_in_parts_add_up_as_one_by_one() {
        let changes =
            [(1e20, 1), (1.0, 1), (0.1, 1), (1e20, -1), (f64::NAN, 1), (2.5, -1), (f64::NAN, -1), (0.7, 1)];
        let mut one_by_one = Totals::default();
        for &(v, d) in &changes {
            one_by_one.add(Value::float(v), d);
        }
        let (mut even, mut odd) = (Totals::default(), Totals::default());
        for (i, &(v, d)) in changes.iter().enumerate() {
            if i % 2 == 0 { &mut even } else { &mut odd }.add(Value::float(v), d);
        }
        let mut combined = Totals::default();
        combined.merge(even);
        combined.merge(odd);
        for op in [AggOp::Count, AggOp::Group] {
            assert_eq!(combined.result(op), one_by_one.result(op), "{op:?}");
        }
        // both within the rounding of a compensated sum of what is left: 1 + 0.1 − 2.5 + 0.7
        for op in [AggOp::Sum, AggOp::Avg] {
            let value = |t: &Totals| t.result(op).and_then(|v| v.as_float()).unwrap();
            let (a, b) = (value(&combined), value(&one_by_one));
            assert!((a - b).abs() <= 2.0 * f64::EPSILON * a.abs(), "{op:?}: {a} against {b}");
        }
        assert_eq!(combined.floats.count, 2);
    }

    #[test]
    fn retractions_cancel_exactly_and_keep_precision() {
        let c = total(&[(1e20, 1), (1.0, 1), (1e20, -1)]);
        assert_eq!((c.sum(), c.count), (1.0, 1));
        let c = total(&[(0.1, 1), (0.2, 1), (0.1, -1), (0.2, -1)]);
        assert!(c.is_zero(), "{c:?}");
        let c = total(&[(f64::NAN, 1), (2.0, 1), (f64::NAN, -1)]);
        assert_eq!((c.sum(), c.count), (2.0, 1));
        let c = total(&[(f64::INFINITY, 1), (f64::NEG_INFINITY, 1)]);
        assert!(c.sum().is_nan());
        // the sum overflows, the mean does not
        let c = total(&[(f64::MAX, 1), (f64::MAX / 2.0, 1)]);
        assert_eq!(c.sum(), f64::INFINITY);
        assert_eq!(c.mean(), f64::MAX * 0.75);
    }
}
