//! PostgreSQL's ordered-set aggregates, `… WITHIN GROUP (ORDER BY x)`, with PostgreSQL's
//! answers: `percentile_cont(φ)` interpolating as PostgreSQL does (`lo + φ' · (hi − lo)`,
//! where DataFusion's own differs in the last digit), and `percentile_disc(φ)` and `mode()`,
//! which DataFusion lacks. Each collects its group's values, sorts them and picks.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::common::{plan_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Signature, Volatility,
};

use super::missing::fail;

/// Which ordered-set aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    /// `percentile_cont(φ)`: interpolated between the two nearest values (numbers only).
    Cont,
    /// `percentile_disc(φ)`: the first value at or past the fraction φ of the ordering.
    Disc,
    /// `mode()`: the most frequent value, the first in the ordering among equals.
    Mode,
}

/// The aggregates of this module.
pub(super) fn aggregates() -> Vec<AggregateUDF> {
    [Kind::Cont, Kind::Disc, Kind::Mode]
        .into_iter()
        .map(|kind| {
            AggregateUDF::from(Ordered { kind, signature: Signature::user_defined(Volatility::Immutable) })
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Ordered {
    kind: Kind,
    signature: Signature,
}

impl AggregateUDFImpl for Ordered {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Cont => "percentile_cont",
            Kind::Disc => "percentile_disc",
            Kind::Mode => "mode",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    /// `WITHIN GROUP (ORDER BY x)` makes `x` the first argument, then the fraction.
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        match (self.kind, args) {
            (Kind::Cont, [x, f]) if x.is_numeric() || x.is_null() => {
                Ok(vec![DataType::Float64, fraction(f, name)?])
            }
            (Kind::Disc, [x, f]) => Ok(vec![x.clone(), fraction(f, name)?]),
            (Kind::Mode, [x]) => Ok(vec![x.clone()]),
            (Kind::Cont, [x, _]) => plan_err!("Invalid function '{name}' of {x}: it interpolates numbers"),
            _ => plan_err!("Invalid function '{name}': write {name}(…) WITHIN GROUP (ORDER BY …)"),
        }
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(match (self.kind, args.first()) {
            (Kind::Cont, _) | (_, None | Some(DataType::Null)) => DataType::Float64,
            (_, Some(t)) => t.clone(),
        })
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = Field::new_list_field(args.input_fields[0].data_type().clone(), true);
        Ok(vec![Arc::new(Field::new(format!("{}[values]", args.name), DataType::List(Arc::new(item)), true))])
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let fraction = match args.exprs.get(1) {
            None => 0.0,
            // a constant: its value over no rows
            Some(e) => match e.evaluate(&RecordBatch::new_empty(Arc::new(Schema::empty()))) {
                Ok(ColumnarValue::Scalar(ScalarValue::Float64(Some(f)))) if (0.0..=1.0).contains(&f) => f,
                Ok(ColumnarValue::Scalar(ScalarValue::Float64(Some(f)))) => {
                    return fail("22003", format!("percentile value {f} is not between 0 and 1"))
                }
                _ => return plan_err!("{}'s fraction must be a constant", self.name()),
            },
        };
        let descending = args.order_bys.first().is_some_and(|o| o.options.descending);
        let data_type = args.expr_fields[0].data_type().clone();
        Ok(Box::new(Values { kind: self.kind, fraction, descending, data_type, values: Vec::new() }))
    }
    fn supports_within_group_clause(&self) -> bool {
        true
    }
}

/// A fraction's type: a number, taken as a double.
fn fraction(t: &DataType, name: &str) -> Result<DataType> {
    if t.is_numeric() || t.is_null() {
        Ok(DataType::Float64)
    } else {
        plan_err!("Invalid function '{name}': the fraction is a number, not {t}")
    }
}

/// A group's values, until the aggregate picks from them.
#[derive(Debug)]
struct Values {
    kind: Kind,
    fraction: f64,
    descending: bool,
    data_type: DataType,
    values: Vec<ScalarValue>,
}

impl Accumulator for Values {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let array = &values[0];
        for i in 0..array.len() {
            if array.is_valid(i) {
                self.values.push(ScalarValue::try_from_array(array, i)?);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for list in lists.iter().flatten() {
            self.update_batch(&[list])?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = ScalarValue::new_list_nullable(&self.values, &self.data_type);
        Ok(vec![ScalarValue::List(list)])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let out_type = if self.kind == Kind::Cont { DataType::Float64 } else { self.data_type.clone() };
        if self.values.is_empty() {
            return ScalarValue::try_from(&out_type);
        }
        let descending = self.descending;
        self.values.sort_by(|a, b| {
            let order = a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
            if descending {
                order.reverse()
            } else {
                order
            }
        });
        let n = self.values.len();
        Ok(match self.kind {
            Kind::Cont => {
                // PostgreSQL: lo + (hi - lo) * proportion, at φ·(n − 1) of the ordering
                let at = self.fraction * (n - 1) as f64;
                let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
                let value = |i: usize| match &self.values[i] {
                    ScalarValue::Float64(Some(v)) => *v,
                    _ => f64::NAN,
                };
                let (lo_v, hi_v) = (value(lo), value(hi));
                ScalarValue::Float64(Some(if lo == hi {
                    lo_v
                } else {
                    lo_v + (at - lo as f64) * (hi_v - lo_v)
                }))
            }
            Kind::Disc => {
                // the first value whose position reaches the fraction
                let at = (self.fraction * n as f64).ceil() as usize;
                self.values[at.saturating_sub(1).min(n - 1)].clone()
            }
            Kind::Mode => {
                let (mut best, mut best_run, mut run) = (0, 0, 0);
                for i in 0..n {
                    run = if i > 0 && self.values[i] == self.values[i - 1] { run + 1 } else { 1 };
                    if run > best_run {
                        (best, best_run) = (i, run);
                    }
                }
                self.values[best].clone()
            }
        })
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.iter().map(ScalarValue::size).sum::<usize>()
    }
}
