//! PostgreSQL's `sum` and `avg` of doubles, to the last digit. PostgreSQL adds a group's
//! values one after another in the order its rows come (`float8pl`, `float8_accum`), and a
//! window frame whose start moves is aggregated again from its first row: doubles have no
//! exact inverse of an addition. DataFusion's own sum adds a batch in several lanes at once
//! and a sliding frame subtracts the rows that leave it, which round otherwise. For every
//! other input type (integers, decimals, `DISTINCT`) these are DataFusion's aggregates,
//! but for native histograms, which add up as PromQL's `sum` and `avg` add them.

use std::collections::VecDeque;
use std::sync::Arc;

use super::histograms;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, UInt64Type};
use datafusion::common::{exec_err, plan_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, GroupsAccumulator, ReversedUDAF, SetMonotonicity, Signature,
    TypeSignature,
};

/// `sum` and `avg`, replacing DataFusion's under their names.
pub(super) fn aggregates() -> Vec<AggregateUDF> {
    [
        (datafusion::functions_aggregate::sum::sum_udaf(), false),
        (datafusion::functions_aggregate::average::avg_udaf(), true),
    ]
    .into_iter()
    .map(|(inner, average)| {
        // DataFusion's signature, or one histogram (which `coerce_types` takes)
        let mut types = match &inner.signature().type_signature {
            TypeSignature::OneOf(types) => types.clone(),
            other => vec![other.clone()],
        };
        types.push(TypeSignature::UserDefined);
        let signature = Signature::one_of(types, inner.signature().volatility);
        AggregateUDF::from(InOrder { inner, average, signature })
    })
    .collect()
}

/// DataFusion's aggregate `inner`, but over doubles PostgreSQL's.
#[derive(Debug, PartialEq, Eq, Hash)]
struct InOrder {
    inner: Arc<AggregateUDF>,
    /// `avg` rather than `sum`.
    average: bool,
    /// `inner`'s, and histograms.
    signature: Signature,
}

impl InOrder {
    /// Whether the aggregate is of native histograms.
    fn of_histograms(args: &AccumulatorArgs) -> bool {
        !args.is_distinct && args.expr_fields.first().is_some_and(|f| histograms::is_histogram(f.data_type()))
    }

    /// Whether the aggregate of `args` is PostgreSQL's addition of doubles here.
    fn ours(&self, args: &AccumulatorArgs) -> bool {
        !args.is_distinct && args.expr_fields.first().is_some_and(|f| f.data_type() == &DataType::Float64)
    }
}

impl AggregateUDFImpl for InOrder {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [t] if histograms::is_histogram(t) => Ok(args.to_vec()),
            _ => plan_err!("{} takes numbers, intervals or native histograms", self.name()),
        }
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [t] if histograms::is_histogram(t) => Ok(t.clone()),
            _ => self.inner.return_type(args),
        }
    }
    fn return_field(&self, args: &[FieldRef]) -> Result<FieldRef> {
        match args {
            [f] if histograms::is_histogram(f.data_type()) => {
                Ok(Arc::new(Field::new(self.name(), f.data_type().clone(), true)))
            }
            _ => self.inner.return_field(args),
        }
    }
    fn is_nullable(&self) -> bool {
        self.inner.is_nullable()
    }
    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        if histograms::is_histogram(data_type) {
            return ScalarValue::try_from(data_type);
        }
        self.inner.default_value(data_type)
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.inner().order_sensitivity()
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }
    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.inner().set_monotonicity(data_type)
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        if !args.is_distinct
            && args.input_fields.first().is_some_and(|f| histograms::is_histogram(f.data_type()))
        {
            return Ok(histograms::state_fields(args.name));
        }
        let doubles = !args.is_distinct
            && args.input_fields.first().is_some_and(|f| f.data_type() == &DataType::Float64);
        if !doubles {
            return self.inner.state_fields(args);
        }
        let field = |part: &str, t| Arc::new(Field::new(format!("{}[{part}]", args.name), t, true));
        Ok(vec![field("count", DataType::UInt64), field("sum", DataType::Float64)])
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if InOrder::of_histograms(&args) {
            return Ok(Box::new(histograms::Group::new(self.average)));
        }
        if self.ours(&args) {
            return Ok(Box::new(Running { average: self.average, n: 0, sum: 0.0 }));
        }
        self.inner.inner().accumulator(args)
    }
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if InOrder::of_histograms(&args) {
            return Ok(Box::new(histograms::Group::new(self.average)));
        }
        if self.ours(&args) {
            return Ok(Box::new(Frame { average: self.average, values: VecDeque::new() }));
        }
        self.inner.inner().create_sliding_accumulator(args)
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !self.ours(&args)
            && !InOrder::of_histograms(&args)
            && self.inner.inner().groups_accumulator_supported(args)
    }
    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        self.inner.inner().create_groups_accumulator(args)
    }
}

/// The answer of `n` values that add up to `sum`: `NULL` over none.
fn answer(average: bool, n: u64, sum: f64) -> ScalarValue {
    ScalarValue::Float64((n > 0).then(|| if average { sum / n as f64 } else { sum }))
}

/// A group's count and running sum.
#[derive(Debug)]
struct Running {
    average: bool,
    n: u64,
    sum: f64,
}

impl Accumulator for Running {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for v in values[0].as_primitive::<Float64Type>().iter().flatten() {
            self.sum += v;
            self.n += 1;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (n, sum) = (states[0].as_primitive::<UInt64Type>(), states[1].as_primitive::<Float64Type>());
        for i in 0..n.len() {
            if n.is_valid(i) && n.value(i) > 0 {
                self.sum += sum.value(i);
                self.n += n.value(i);
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::UInt64(Some(self.n)), ScalarValue::Float64(Some(self.sum))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(answer(self.average, self.n, self.sum))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

/// A window frame's values, in order, summed from the first at every evaluation.
#[derive(Debug)]
struct Frame {
    average: bool,
    values: VecDeque<f64>,
}

impl Accumulator for Frame {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.values.extend(values[0].as_primitive::<Float64Type>().iter().flatten());
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        // the rows that leave a frame are its first
        for _ in values[0].as_primitive::<Float64Type>().iter().flatten() {
            self.values.pop_front();
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, _states: &[ArrayRef]) -> Result<()> {
        // a window's frames are aggregated whole, never from partial states
        exec_err!(
            "a window frame's {} is not merged from partial states",
            if self.average { "avg" } else { "sum" }
        )
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let sum = self.values.iter().fold(0.0, |s, v| s + v);
        Ok(vec![ScalarValue::UInt64(Some(self.values.len() as u64)), ScalarValue::Float64(Some(sum))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let sum = self.values.iter().fold(0.0, |s, v| s + v);
        Ok(answer(self.average, self.values.len() as u64, sum))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.capacity() * std::mem::size_of::<f64>()
    }
}
