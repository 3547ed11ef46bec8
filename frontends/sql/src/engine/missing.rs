//! PostgreSQL's functions that DataFusion does not have, with PostgreSQL's answers and
//! errors: `width_bucket(operand, low, high, count)` and `format(text, …)`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::DataFusionError;
use datafusion::error::Result;
use datafusion::logical_expr::{ScalarUDF, Signature, TypeSignature, Volatility};

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
    ]
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
