//! A scalar function of the engine written once as a function of its arguments' arrays: the
//! shape of every PostgreSQL function promflow adds to DataFusion's.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampMicrosecondType};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature};

/// The body of a [`Function`]: its answer over its arguments' arrays, all of one length.
pub(super) type Body = fn(&[ArrayRef]) -> Result<ArrayRef>;

/// A scalar function: its name, signature, return type and [`Body`]. Two are the same
/// function when their names, signatures and return types are (a body is no value to compare).
#[derive(Debug)]
pub(super) struct Function {
    name: &'static str,
    signature: Signature,
    /// The answer's type; `None` for the first argument's.
    returns: Option<DataType>,
    body: Body,
}

impl Function {
    /// The function as DataFusion registers it.
    pub(super) fn udf(
        name: &'static str,
        signature: Signature,
        returns: Option<DataType>,
        body: Body,
    ) -> ScalarUDF {
        ScalarUDF::from(Function { name, signature, returns, body })
    }
}

impl PartialEq for Function {
    fn eq(&self, other: &Self) -> bool {
        (self.name, &self.signature, &self.returns) == (other.name, &other.signature, &other.returns)
    }
}

impl Eq for Function {}

impl std::hash::Hash for Function {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.name, &self.signature, &self.returns).hash(state);
    }
}

impl ScalarUDFImpl for Function {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone().or_else(|| args.first().cloned()).unwrap_or(DataType::Null))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        answer(&args.args, (self.body)(&arrays)?)
    }
}

/// The answer of a function over `args`: a scalar when every argument is one.
pub(super) fn answer(args: &[ColumnarValue], out: ArrayRef) -> Result<ColumnarValue> {
    if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

/// Values as PostgreSQL writes them as text: a double as PostgreSQL writes `float8`,
/// anything else as Arrow casts it.
pub(super) fn text(array: &ArrayRef) -> Result<ArrayRef> {
    match array.data_type() {
        DataType::Float64 => {
            let doubles = array.as_primitive::<Float64Type>();
            let texts: StringArray = doubles.iter().map(|v| v.map(crate::rows::float8_text)).collect();
            Ok(Arc::new(texts))
        }
        DataType::Timestamp(_, zone) => {
            let micros = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, zone.clone()))?;
            let zoned = zone.is_some();
            let texts: StringArray = micros
                .as_primitive::<TimestampMicrosecondType>()
                .iter()
                .map(|v| v.map(|us| timestamp_text(us, zoned)))
                .collect();
            Ok(Arc::new(texts))
        }
        _ => Ok(cast(array, &DataType::Utf8)?),
    }
}

/// A timestamp (microseconds since the epoch) as PostgreSQL writes it in UTC, the session's
/// zone: `2026-11-25 17:48:00`, the fraction only when there is one and without trailing
/// zeros, and `+00` after a `timestamptz`.
fn timestamp_text(micros: i64, zoned: bool) -> String {
    let (seconds, fraction) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let Some(at) = chrono::DateTime::from_timestamp(seconds, 0) else { return micros.to_string() };
    let fraction = if fraction == 0 {
        String::new()
    } else {
        format!(".{fraction:06}").trim_end_matches('0').to_string()
    };
    format!("{}{fraction}{}", at.format("%Y-%m-%d %H:%M:%S"), if zoned { "+00" } else { "" })
}
