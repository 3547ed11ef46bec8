//! PostgreSQL's variance and standard deviation of doubles, with PostgreSQL's answers to the
//! last digit. PostgreSQL accumulates a group's count, sum and sum of squared differences by
//! Youngs and Cramer's update, and merges partial states by Chan's formula; DataFusion's own
//! aggregates update the mean instead (Welford), which rounds otherwise. The state and the
//! arithmetic here are PostgreSQL's, in its order.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{plan_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility};

/// Which second moment, and whether its square root is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Kind {
    /// The sample's (divided by n − 1) rather than the population's (by n).
    sample: bool,
    /// The standard deviation rather than the variance.
    root: bool,
}

/// The aggregates of this module, under PostgreSQL's names (`variance` and `stddev` are the
/// sample's).
pub(super) fn aggregates() -> Vec<AggregateUDF> {
    [
        ("var_samp", &["variance"][..], Kind { sample: true, root: false }),
        ("var_pop", &[], Kind { sample: false, root: false }),
        ("stddev_samp", &["stddev"], Kind { sample: true, root: true }),
        ("stddev_pop", &[], Kind { sample: false, root: true }),
    ]
    .into_iter()
    .map(|(name, aliases, kind)| {
        AggregateUDF::from(Moment {
            name,
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        })
    })
    .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Moment {
    name: &'static str,
    aliases: Vec<String>,
    kind: Kind,
    signature: Signature,
}

impl AggregateUDFImpl for Moment {
    fn name(&self) -> &str {
        self.name
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [x] if x.is_numeric() || x.is_null() => Ok(vec![DataType::Float64]),
            [x] => plan_err!("function {}({x}) does not exist", self.name),
            _ => plan_err!("function {} takes one argument", self.name),
        }
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(["n", "sx", "sxx"]
            .into_iter()
            .map(|part| Arc::new(Field::new(format!("{}[{part}]", args.name), DataType::Float64, true)))
            .collect())
    }
    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Moments { kind: self.kind, n: 0.0, sx: 0.0, sxx: 0.0 }))
    }
}

/// A group's state, as PostgreSQL's `float8_accum` keeps it.
#[derive(Debug)]
struct Moments {
    kind: Kind,
    /// How many values.
    n: f64,
    /// Their sum.
    sx: f64,
    /// The sum of their squared differences from their mean.
    sxx: f64,
}

impl Moments {
    /// One more value (`float8_accum`).
    fn add(&mut self, value: f64) {
        let before = self.n;
        self.n += 1.0;
        self.sx += value;
        if before > 0.0 {
            let d = value * self.n - self.sx;
            self.sxx += d * d / (self.n * before);
        } else if !value.is_finite() {
            // an infinite or NaN first value has no finite spread
            self.sxx = f64::NAN;
        }
    }

    /// Another group's state (`float8_combine`).
    fn merge(&mut self, n: f64, sx: f64, sxx: f64) {
        if n == 0.0 {
            return;
        }
        if self.n == 0.0 {
            (self.n, self.sx, self.sxx) = (n, sx, sxx);
            return;
        }
        let total = self.n + n;
        let d = self.sx / self.n - sx / n;
        self.sxx += sxx + self.n * n * d * d / total;
        self.sx += sx;
        self.n = total;
    }
}

impl Accumulator for Moments {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for value in values[0].as_primitive::<Float64Type>().iter().flatten() {
            self.add(value);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [n, sx, sxx] = [0, 1, 2].map(|i| states[i].as_primitive::<Float64Type>());
        for i in 0..n.len() {
            self.merge(n.value(i), sx.value(i), sxx.value(i));
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok([self.n, self.sx, self.sxx].map(|v| ScalarValue::Float64(Some(v))).to_vec())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let divisor = if self.kind.sample { self.n - 1.0 } else { self.n };
        if divisor <= 0.0 {
            return Ok(ScalarValue::Float64(None));
        }
        let variance = self.sxx / divisor;
        Ok(ScalarValue::Float64(Some(if self.kind.root { variance.sqrt() } else { variance })))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}
