//! PostgreSQL's functions that DataFusion does not have, with PostgreSQL's answers and
//! errors: `width_bucket(operand, low, high, count)`, `format(text, …)`, `quote_literal`,
//! `quote_nullable`, `quote_ident`, `regexp_split_to_array`, `pg_size_pretty` and `div`.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Int32Array, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Float64Type, Int64Type};
use datafusion::common::DataFusionError;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

use super::udf::{self, Function};

/// An error PostgreSQL raises with this SQLSTATE; the engine's error mapping answers it as
/// such.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(super) struct PostgresError {
    /// The SQLSTATE.
    pub(super) state: &'static str,
    /// PostgreSQL's words.
    pub(super) message: String,
}

pub(super) fn fail<T>(state: &'static str, message: impl Into<String>) -> Result<T> {
    Err(DataFusionError::External(Box::new(PostgresError { state, message: message.into() })))
}

/// The functions of this module.
pub(super) fn functions() -> Vec<ScalarUDF> {
    let bucket_arguments = vec![DataType::Float64, DataType::Float64, DataType::Float64, DataType::Int64];
    vec![
        Function::udf(
            "width_bucket",
            Signature::exact(bucket_arguments, Volatility::Immutable),
            Some(DataType::Int32),
            width_bucket,
        ),
        Function::udf(
            "format",
            Signature::new(TypeSignature::VariadicAny, Volatility::Stable),
            Some(DataType::Utf8),
            format,
        ),
        Function::udf("quote_literal", any(1), Some(DataType::Utf8), |a| quoted(&a[0], quote_literal, None)),
        Function::udf("quote_nullable", any(1), Some(DataType::Utf8), |a| {
            quoted(&a[0], quote_literal, Some("NULL"))
        }),
        Function::udf("quote_ident", any(1), Some(DataType::Utf8), |a| {
            quoted(&a[0], crate::catalog::quote_ident, None)
        }),
        Function::udf(
            "regexp_split_to_array",
            Signature::exact(vec![DataType::Utf8, DataType::Utf8], Volatility::Immutable),
            Some(DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))),
            regexp_split_to_array,
        ),
        Function::udf(
            "pg_size_pretty",
            Signature::exact(vec![DataType::Int64], Volatility::Immutable),
            Some(DataType::Utf8),
            pg_size_pretty,
        ),
        ScalarUDF::from(Div { signature: Signature::user_defined(Volatility::Immutable) }),
    ]
}

/// A signature of `n` arguments of any type.
fn any(n: usize) -> Signature {
    Signature::any(n, Volatility::Immutable)
}

/// Every value of `array` as text ([`udf::text`]), quoted by `quote`; `NULL` as `null` (or
/// stays `NULL`).
fn quoted(array: &ArrayRef, quote: fn(&str) -> String, null: Option<&str>) -> Result<ArrayRef> {
    let texts = udf::text(array)?;
    let out: StringArray =
        texts.as_string::<i32>().iter().map(|v| v.map(quote).or_else(|| null.map(String::from))).collect();
    Ok(Arc::new(out))
}

/// `regexp_split_to_array(text, pattern)`: the text between the pattern's matches.
fn regexp_split_to_array(args: &[ArrayRef]) -> Result<ArrayRef> {
    let (texts, patterns) = (args[0].as_string::<i32>(), args[1].as_string::<i32>());
    let mut out = ListBuilder::new(StringBuilder::new());
    let mut compiled: Option<(String, regex::Regex)> = None;
    for (text, pattern) in texts.iter().zip(patterns.iter()) {
        let (Some(text), Some(pattern)) = (text, pattern) else {
            out.append_null();
            continue;
        };
        if compiled.as_ref().is_none_or(|(p, _)| p != pattern) {
            let re = regex::Regex::new(pattern)
                .or_else(|e| fail("2201B", format!("invalid regular expression: {e}")))?;
            compiled = Some((pattern.to_string(), re));
        }
        let Some((_, re)) = &compiled else { continue };
        for part in re.split(text) {
            out.values().append_value(part);
        }
        out.append(true);
    }
    Ok(Arc::new(out.finish()))
}

/// `pg_size_pretty(bytes)`: bytes below 10 kB, else kB, MB, GB, TB or PB, each unit
/// rounded half away from zero, as PostgreSQL writes sizes.
fn pg_size_pretty(args: &[ArrayRef]) -> Result<ArrayRef> {
    let out: StringArray =
        args[0].as_primitive::<Int64Type>().iter().map(|v| v.map(crate::catalog::size_text)).collect();
    Ok(Arc::new(out))
}

/// `div(y, x)`: the integer quotient of `y / x`, rounded towards zero, as a `numeric` of
/// scale 0; of integers or `numeric` values (PostgreSQL has no `div` of doubles).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Div {
    signature: Signature,
}

impl ScalarUDFImpl for Div {
    fn name(&self) -> &str {
        "div"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let scale = args
            .iter()
            .map(|t| match t {
                DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Ok(0),
                DataType::Decimal128(_, s) => Ok(*s),
                other => fail("42883", format!("function div({other}) does not exist")),
            })
            .try_fold(0i8, |m, s| s.map(|s| m.max(s)))?;
        Ok(vec![DataType::Decimal128(38, scale); args.len()])
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Decimal128(38, 0))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (y, x) = (arrays[0].as_primitive::<Decimal128Type>(), arrays[1].as_primitive::<Decimal128Type>());
        let mut out = Vec::with_capacity(y.len());
        for (y, x) in y.iter().zip(x.iter()) {
            out.push(match (y, x) {
                (Some(_), Some(0)) => return fail("22012", "division by zero"),
                // of one scale: the quotient of the unscaled values is the quotient
                (Some(y), Some(x)) => Some(y / x),
                _ => None,
            });
        }
        let quotient = out.into_iter().collect::<Decimal128Array>().with_precision_and_scale(38, 0)?;
        udf::answer(&args.args, Arc::new(quotient))
    }
}

/// `width_bucket(operand, low, high, count)`: the bucket of `count` equal buckets over
/// `[low, high)` that holds `operand`, 0 below them and `count + 1` above, as PostgreSQL's
/// `width_bucket(float8, float8, float8, int)`.
fn width_bucket(args: &[ArrayRef]) -> Result<ArrayRef> {
    let [operand, low, high] = [0, 1, 2].map(|i| args[i].as_primitive::<Float64Type>());
    let count = args[3].as_primitive::<Int64Type>();
    let mut out = Vec::with_capacity(operand.len());
    for i in 0..operand.len() {
        if [operand.is_null(i), low.is_null(i), high.is_null(i), count.is_null(i)].contains(&true) {
            out.push(None);
            continue;
        }
        out.push(Some(bucket(operand.value(i), low.value(i), high.value(i), count.value(i))?));
    }
    Ok(Arc::new(out.into_iter().collect::<Int32Array>()))
}

/// One [`width_bucket`] answer, with PostgreSQL's checks (SQLSTATE 2201G).
fn bucket(operand: f64, low: f64, high: f64, count: i64) -> Result<i32> {
    const INVALID: &str = "2201G";
    if count <= 0 || count > i64::from(i32::MAX) {
        return fail(INVALID, "count must be greater than zero");
    }
    if operand.is_nan() || low.is_nan() || high.is_nan() {
        return fail(INVALID, "operand, lower bound, and upper bound cannot be NaN");
    }
    if !low.is_finite() || !high.is_finite() {
        return fail(INVALID, "lower and upper bounds must be finite");
    }
    if low == high {
        return fail(INVALID, "lower bound cannot equal upper bound");
    }
    let count = count as f64;
    // buckets run from low towards high, whichever is larger
    let (below, above, fraction) = if low < high {
        (operand < low, operand >= high, (operand - low) / (high - low))
    } else {
        (operand > low, operand <= high, (low - operand) / (low - high))
    };
    let n = if below {
        0.0
    } else if above {
        count + 1.0
    } else {
        // rounding may put an operand just under the top into bucket count + 1
        (fraction * count).floor().min(count - 1.0) + 1.0
    };
    if n > f64::from(i32::MAX) {
        return fail("22003", "integer out of range");
    }
    Ok(n as i32)
}

/// `format(template, …)`: `%s` (an argument's text, `NULL` as nothing), `%I` (quoted as an
/// identifier where PostgreSQL would), `%L` (quoted as a literal, `NULL` unquoted) and `%%`.
fn format(args: &[ArrayRef]) -> Result<ArrayRef> {
    let texts: Vec<ArrayRef> = args.iter().map(udf::text).collect::<Result<_>>()?;
    let texts: Vec<&StringArray> = texts.iter().map(|a| a.as_string::<i32>()).collect();
    let rows = texts.first().map_or(0, |t| t.len());
    let mut out = Vec::with_capacity(rows);
    for row in 0..rows {
        if texts[0].is_null(row) {
            out.push(None);
            continue;
        }
        let values: Vec<Option<&str>> =
            texts[1..].iter().map(|t| (!t.is_null(row)).then(|| t.value(row))).collect();
        out.push(Some(format_row(texts[0].value(row), &values)?));
    }
    Ok(Arc::new(out.into_iter().collect::<StringArray>()))
}

/// One [`format`] answer.
fn format_row(template: &str, values: &[Option<&str>]) -> Result<String> {
    const INVALID: &str = "22023";
    let mut out = String::with_capacity(template.len());
    let mut next = values.iter();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let kind = match chars.next() {
            Some('%') => {
                out.push('%');
                continue;
            }
            Some(kind @ ('s' | 'I' | 'L')) => kind,
            Some(other) => return fail(INVALID, format!("unrecognized format() type specifier \"{other}\"")),
            None => return fail(INVALID, "unterminated format() type specifier"),
        };
        let Some(value) = next.next() else {
            return fail(INVALID, "too few arguments for format()");
        };
        match (kind, value) {
            ('s', v) => out.push_str(v.unwrap_or("")),
            ('I', None) => return fail("22004", "null values cannot be formatted as an SQL identifier"),
            ('I', Some(v)) => out.push_str(&crate::catalog::quote_ident(v)),
            (_, None) => out.push_str("NULL"),
            (_, Some(v)) => out.push_str(&quote_literal(v)),
        }
    }
    Ok(out)
}

/// `text` as PostgreSQL's `quote_literal` writes it: in single quotes, `'` doubled, and with
/// an `E` prefix and doubled backslashes when it has any.
fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_bucket_answers_postgresql_s_buckets_and_refuses_its_errors() {
        assert_eq!(bucket(5.35, 0.024, 10.06, 5).unwrap(), 3);
        assert_eq!(bucket(-1.0, 0.0, 30.0, 3).unwrap(), 0);
        assert_eq!(bucket(30.0, 0.0, 30.0, 3).unwrap(), 4);
        assert_eq!(bucket(29.999999, 0.0, 30.0, 3).unwrap(), 3);
        // a descending range counts from low
        assert_eq!(bucket(5.35, 10.06, 0.024, 5).unwrap(), 3);
        assert!(bucket(1.0, 0.0, 0.0, 3).is_err());
        assert!(bucket(1.0, 0.0, 1.0, 0).is_err());
    }

    #[test]
    fn format_quotes_as_postgresql_does() {
        let f = |t: &str, v: &[Option<&str>]| format_row(t, v).unwrap();
        assert_eq!(f("%s-%s", &[Some("a"), None]), "a-");
        assert_eq!(f("%I.%I", &[Some("job"), Some("Job Name")]), "job.\"Job Name\"");
        assert_eq!(f("%L %L %%", &[Some("it's"), None]), "'it''s' NULL %");
        assert_eq!(f("%L", &[Some("a\\b")]), "E'a\\\\b'");
        assert!(format_row("%s %s", &[Some("a")]).is_err());
        assert!(format_row("%x", &[Some("a")]).is_err());
    }
}
