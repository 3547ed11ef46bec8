//! Native histograms in the relational engine: the `histogram` column of a metric's table,
//! PromQL's functions of a histogram as SQL functions, and the sum and mean of a group's
//! histograms for `sum` and `avg`.
//!
//! Inside DataFusion a histogram is a struct of its exact parts (count, sum, schema, zero
//! bucket, each side's bucket indexes and counts, custom bounds), so that the functions read
//! it back bit for bit and the engine's own operators (`CASE`, `coalesce`, `IS NULL`,
//! `count`, joins) carry it as any value. A client sees it as `jsonb`: the object
//! Prometheus's query API writes (`count`, `sum`, `buckets`).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int32Builder, ListArray, ListBuilder, StructArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type, Int32Type};
use datafusion::common::{exec_err, plan_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{
    Accumulator, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use promflow_plan::VectorFn;
use promflow_storage::native_histogram::CounterResetHint;
use promflow_storage::FloatHistogram;

/// The struct's fields, in order.
fn fields() -> Fields {
    let list = |item: DataType| DataType::List(Arc::new(Field::new_list_field(item, true)));
    Fields::from(vec![
        Field::new("count", DataType::Float64, false),
        Field::new("sum", DataType::Float64, false),
        Field::new("schema", DataType::Int32, false),
        Field::new("zero_threshold", DataType::Float64, false),
        Field::new("zero_count", DataType::Float64, false),
        Field::new("positive_index", list(DataType::Int32), false),
        Field::new("positive_count", list(DataType::Float64), false),
        Field::new("negative_index", list(DataType::Int32), false),
        Field::new("negative_count", list(DataType::Float64), false),
        Field::new("custom_bounds", list(DataType::Float64), false),
    ])
}

/// The type of a histogram in the engine.
pub(crate) fn data_type() -> DataType {
    DataType::Struct(fields())
}

/// Whether `t` is the type of a histogram.
pub(crate) fn is_histogram(t: &DataType) -> bool {
    matches!(t, DataType::Struct(f) if *f == fields())
}

/// The histograms as a column, `None` for `NULL`.
pub(crate) fn array<'h>(hists: impl IntoIterator<Item = Option<&'h FloatHistogram>>) -> ArrayRef {
    let mut floats: [Float64Builder; 4] = Default::default();
    let mut schema = Int32Builder::new();
    let mut index: [ListBuilder<Int32Builder>; 2] = Default::default();
    let mut counts: [ListBuilder<Float64Builder>; 3] = Default::default();
    let mut valid = Vec::new();
    for h in hists {
        valid.push(h.is_some());
        let h = h.map_or_else(|| std::borrow::Cow::Owned(empty()), std::borrow::Cow::Borrowed);
        for (b, v) in floats.iter_mut().zip([h.count, h.sum, h.zero_threshold, h.zero_count]) {
            b.append_value(v);
        }
        schema.append_value(h.schema);
        for (side, buckets) in [h.positive_buckets(), h.negative_buckets()].into_iter().enumerate() {
            index[side].values().append_slice(&buckets.iter().map(|b| b.0).collect::<Vec<_>>());
            index[side].append(true);
            counts[side].values().append_slice(&buckets.iter().map(|b| b.1).collect::<Vec<_>>());
            counts[side].append(true);
        }
        counts[2].values().append_slice(h.custom_bounds());
        counts[2].append(true);
    }
    let [count, sum, zero_threshold, zero_count] = floats.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [positive_index, negative_index] = index.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [positive_count, negative_count, custom_bounds] =
        counts.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let columns = vec![
        count,
        sum,
        Arc::new(schema.finish()),
        zero_threshold,
        zero_count,
        positive_index,
        positive_count,
        negative_index,
        negative_count,
        custom_bounds,
    ];
    Arc::new(StructArray::new(fields(), columns, Some(NullBuffer::from(valid))))
}

/// A histogram of no observation: what a `NULL` row's parts hold.
fn empty() -> FloatHistogram {
    FloatHistogram::from_buckets(
        CounterResetHint::Unknown,
        0,
        0.0,
        0.0,
        0.0,
        0.0,
        Vec::new(),
        Vec::new(),
        Vec::new(),
    )
    .unwrap_or_else(|_| unreachable!("schema 0 without custom bounds is valid"))
}

/// The histogram of row `row` of a histogram column (`None` for `NULL`, or parts that make
/// no histogram).
pub(crate) fn get(column: &StructArray, row: usize) -> Option<FloatHistogram> {
    if column.is_null(row) {
        return None;
    }
    let float = |i: usize| Some(column.column(i).as_primitive_opt::<Float64Type>()?.value(row));
    let list = |i: usize| column.column(i).as_list_opt::<i32>().map(|l: &ListArray| l.value(row));
    let buckets = |i: usize| -> Option<Vec<(i32, f64)>> {
        let (index, counts) = (list(i)?, list(i + 1)?);
        let (index, counts) =
            (index.as_primitive_opt::<Int32Type>()?, counts.as_primitive_opt::<Float64Type>()?);
        (index.len() == counts.len())
            .then(|| index.values().iter().copied().zip(counts.values().iter().copied()).collect())
    };
    let bounds = list(9)?;
    FloatHistogram::from_buckets(
        CounterResetHint::Unknown,
        column.column(2).as_primitive_opt::<Int32Type>()?.value(row),
        float(3)?,
        float(4)?,
        float(0)?,
        float(1)?,
        buckets(5)?,
        buckets(7)?,
        bounds.as_primitive_opt::<Float64Type>()?.values().to_vec(),
    )
    .ok()
}

/// A histogram as a one-row column's value.
fn scalar(h: Option<&FloatHistogram>) -> ScalarValue {
    let column = array([h]);
    ScalarValue::Struct(Arc::new(column.as_struct().clone()))
}

/// PromQL's functions of one histogram, each a SQL function of the same name and arguments.
pub(super) fn functions() -> Vec<ScalarUDF> {
    let statistic = |name: &'static str, func: VectorFn| Function { name, params: 0, func };
    [
        statistic("histogram_count", VectorFn::HistogramCount),
        statistic("histogram_sum", VectorFn::HistogramSum),
        statistic("histogram_avg", VectorFn::HistogramAvg),
        statistic("histogram_stddev", VectorFn::HistogramStddev),
        statistic("histogram_stdvar", VectorFn::HistogramStdvar),
        Function { name: "histogram_quantile", params: 1, func: VectorFn::HistogramQuantile },
        Function { name: "histogram_fraction", params: 2, func: VectorFn::HistogramFraction },
    ]
    .into_iter()
    .map(ScalarUDF::from)
    .collect()
}

/// `name(params…, histogram)`: a number of the histogram, `NULL` for a `NULL` argument.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Function {
    name: &'static str,
    /// How many numbers come before the histogram.
    params: usize,
    func: VectorFn,
}

impl Function {
    fn signature() -> &'static Signature {
        static SIGNATURE: std::sync::OnceLock<Signature> = std::sync::OnceLock::new();
        SIGNATURE.get_or_init(|| Signature::user_defined(Volatility::Immutable))
    }

    fn of(&self, params: &[f64], h: &FloatHistogram) -> f64 {
        use promflow_kernels::native;
        match self.func {
            VectorFn::HistogramQuantile => native::histogram_quantile(params[0], h).0,
            VectorFn::HistogramFraction => native::histogram_fraction(params[0], params[1], h).0,
            func => native::statistic(func, h).unwrap_or(f64::NAN),
        }
    }
}

impl ScalarUDFImpl for Function {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        Function::signature()
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let numbers = match self.params {
            0 => "",
            1 => "a number and ",
            _ => "two numbers and ",
        };
        let takes =
            || plan_err!("{} takes {numbers}a native histogram (a table's histogram column)", self.name);
        let Some((last, params)) = args.split_last() else { return takes() };
        if params.len() != self.params || !is_histogram(last) {
            return takes();
        }
        if !params.iter().all(|t| t.is_numeric() || t.is_null()) {
            return takes();
        }
        Ok(params.iter().map(|_| DataType::Float64).chain([data_type()]).collect())
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = args.args.iter().map(|a| a.to_array(rows)).collect::<Result<_>>()?;
        let Some((hists, params)) = arrays.split_last() else {
            return exec_err!("{}: no argument", self.name);
        };
        let hists = hists.as_struct();
        let params: Vec<&Float64Array> = params.iter().map(|p| p.as_primitive::<Float64Type>()).collect();
        let mut out = Float64Builder::with_capacity(rows);
        let mut values = Vec::with_capacity(params.len());
        for row in 0..rows {
            values.clear();
            values.extend(params.iter().filter(|p| p.is_valid(row)).map(|p| p.value(row)));
            match get(hists, row) {
                Some(h) if values.len() == params.len() => out.append_value(self.of(&values, &h)),
                _ => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// The state field of a group's histograms: the histograms themselves.
pub(super) fn state_fields(name: &str) -> Vec<FieldRef> {
    let list = DataType::List(Arc::new(Field::new_list_field(data_type(), true)));
    vec![Arc::new(Field::new(format!("{name}[histograms]"), list, true))]
}

/// `sum` or `avg` of a group's histograms, as PromQL's `sum` and `avg` add them (custom
/// buckets of different bounds on the bounds they share; exponential buckets at the coarsest
/// schema). The histograms are kept until the answer: an addition cannot be taken back when
/// a window frame moves on, and a mean is not the mean of partial means.
#[derive(Debug, Default)]
pub(super) struct Group {
    /// `avg` rather than `sum`.
    pub(super) average: bool,
    hists: std::collections::VecDeque<FloatHistogram>,
}

impl Group {
    /// The accumulator of `avg` (`true`) or `sum`.
    pub(super) fn new(average: bool) -> Group {
        Group { average, hists: Default::default() }
    }

    fn take(&mut self, column: &ArrayRef) {
        let column = column.as_struct();
        self.hists.extend((0..column.len()).filter_map(|row| get(column, row)));
    }
}

impl Accumulator for Group {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.take(&values[0]);
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        // the rows that leave a frame are its first
        for _ in (0..values[0].len()).filter(|&row| values[0].is_valid(row)) {
            self.hists.pop_front();
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for row in (0..lists.len()).filter(|&row| lists.is_valid(row)) {
            self.take(&lists.value(row));
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = ListArray::new(
            Arc::new(Field::new_list_field(data_type(), true)),
            datafusion::arrow::buffer::OffsetBuffer::from_lengths([self.hists.len()]),
            array(self.hists.iter().map(Some)),
            None,
        );
        Ok(vec![ScalarValue::List(Arc::new(list))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.hists.is_empty() {
            return Ok(scalar(None));
        }
        use promflow_kernels::native::{histogram_mean, histogram_sum};
        let each = self.hists.iter();
        let total = if self.average { histogram_mean(each) } else { histogram_sum(each) };
        match total {
            Ok((h, _)) => Ok(scalar(Some(&h))),
            Err(_) => exec_err!(
                "{} of native histograms with exponential and custom buckets: they have no common buckets",
                if self.average { "avg" } else { "sum" }
            ),
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .hists
                .iter()
                .map(|h| {
                    std::mem::size_of::<FloatHistogram>()
                        + 12 * (h.positive_buckets().len() + h.negative_buckets().len())
                        + 8 * h.custom_bounds().len()
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_column_gives_back_each_histogram_bit_for_bit() {
        let exponential = FloatHistogram::from_buckets(
            CounterResetHint::Unknown,
            1,
            0.001,
            2.0,
            9.5,
            -3.25,
            vec![(-2, 1.0), (3, 4.5)],
            vec![(0, 2.0)],
            Vec::new(),
        )
        .unwrap();
        let custom =
            FloatHistogram::from_classic(&[(0.5, 1.0), (2.0, 3.0), (f64::INFINITY, 4.0)], None, 6.0).unwrap();
        let column = array([Some(&exponential), None, Some(&custom)]);
        assert!(is_histogram(column.data_type()));
        let column = column.as_struct();
        assert_eq!(get(column, 0), Some(exponential));
        assert_eq!(get(column, 1), None);
        assert_eq!(get(column, 2), Some(custom));
    }
}
