//! Arithmetic that fails where PostgreSQL's does: `+`, `-` and `*` of integers and doubles,
//! `exp` and `power`. Arrow's kernels wrap integers around (`bigint` `9223372036854775807 +
//! 1` is negative) and let doubles run to infinity or zero, where PostgreSQL raises
//! `numeric_value_out_of_range` (22003). The operators are rewritten, once their operands'
//! types are known, to functions that compute with Arrow's checked kernels and then look
//! for a double that overflowed or underflowed.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::arrow::error::ArrowError;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};

use super::missing::fail;
use super::udf::{self, Function};

/// SQLSTATE `numeric_value_out_of_range`.
const OUT_OF_RANGE: &str = "22003";
/// SQLSTATE `invalid_argument_for_power_function`.
const INVALID_POWER: &str = "2201F";

/// PostgreSQL's `exp` and `power`, replacing DataFusion's. (The checked operators are not
/// called by name: the [`rewrite`] plans them.)
pub(super) fn functions() -> Vec<ScalarUDF> {
    let doubles = |n| Signature::exact(vec![DataType::Float64; n], Volatility::Immutable);
    vec![
        Function::udf("exp", doubles(1), Some(DataType::Float64), exp),
        Function::udf("power", doubles(2), Some(DataType::Float64), power).with_aliases(["pow"]),
    ]
}

/// The rewrite of the operators to their checked functions, for the session's analyzer.
pub(super) fn rewrite() -> Arc<CheckedArithmetic> {
    Arc::new(CheckedArithmetic { functions: OPERATORS.map(|op| Arc::new(ScalarUDF::from(Checked::new(op)))) })
}

/// The operators that are checked.
const OPERATORS: [Operator; 3] = [Operator::Plus, Operator::Minus, Operator::Multiply];

/// Rewrites `a + b`, `a - b` and `a * b` of integers and doubles to [`Checked`] calls.
#[derive(Debug)]
pub(super) struct CheckedArithmetic {
    functions: [Arc<ScalarUDF>; 3],
}

impl FunctionRewrite for CheckedArithmetic {
    fn name(&self) -> &str {
        "postgresql_checked_arithmetic"
    }

    fn rewrite(&self, expr: Expr, schema: &DFSchema, _: &ConfigOptions) -> Result<Transformed<Expr>> {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else {
            return Ok(Transformed::no(expr));
        };
        let Some(i) = OPERATORS.iter().position(|o| o == op) else { return Ok(Transformed::no(expr)) };
        let (Ok(l), Ok(r)) = (left.get_type(schema), right.get_type(schema)) else {
            return Ok(Transformed::no(expr));
        };
        if !(checked_type(&l) && checked_type(&r)) {
            return Ok(Transformed::no(expr));
        }
        // an integer literal is an `integer` in PostgreSQL where it fits one: beside another
        // or an `integer`, the sum is an `integer` and overflows as one (DataFusion's literals
        // are all `bigint`)
        let small = |x: &Expr| match x {
            Expr::Literal(ScalarValue::Int64(Some(v)), _) => i32::try_from(*v).ok(),
            _ => None,
        };
        let both_small = small(left).is_some() && small(right).is_some();
        let narrowed = |x: &Expr, other: &DataType| match small(x) {
            Some(v) if both_small || *other == DataType::Int32 => {
                Expr::Literal(ScalarValue::Int32(Some(v)), None)
            }
            _ => x.clone(),
        };
        let args = vec![narrowed(left, &r), narrowed(right, &l)];
        Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::clone(&self.functions[i]),
            args,
        ))))
    }
}

/// Whether `a ∘ b` of this type is checked: the integers and doubles PostgreSQL checks.
fn checked_type(t: &DataType) -> bool {
    matches!(t, DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::Float32 | DataType::Float64)
}

/// `a ∘ b` of one of the [`OPERATORS`], failing where PostgreSQL's does.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Checked {
    op: Operator,
    name: &'static str,
    signature: Signature,
}

impl Checked {
    fn new(op: Operator) -> Checked {
        let name = match op {
            Operator::Plus => "pg_checked_add",
            Operator::Minus => "pg_checked_sub",
            _ => "pg_checked_mul",
        };
        Checked { op, name, signature: Signature::user_defined(Volatility::Immutable) }
    }
}

/// The type both operands are computed in: a double if either is one, else the wider integer.
fn common_type(args: &[DataType]) -> Result<DataType> {
    let widest = args.iter().max_by_key(|t| match t {
        DataType::Float32 | DataType::Float64 => 4,
        DataType::Int64 => 3,
        DataType::Int32 => 2,
        _ => 1,
    });
    Ok(match widest {
        Some(DataType::Float32 | DataType::Float64) => DataType::Float64,
        Some(t) if checked_type(t) => t.clone(),
        _ => return Err(DataFusionError::Plan(format!("no checked arithmetic of {args:?}"))),
    })
}

impl ScalarUDFImpl for Checked {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let common = common_type(args)?;
        Ok(vec![common; args.len()])
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        common_type(args)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (a, b) = (&arrays[0], &arrays[1]);
        let out = match self.op {
            Operator::Plus => numeric::add(a, b),
            Operator::Minus => numeric::sub(a, b),
            _ => numeric::mul(a, b),
        };
        let out = match out {
            Ok(out) => out,
            Err(ArrowError::ArithmeticOverflow(_)) => {
                let what = if *a.data_type() == DataType::Int64 { "bigint" } else { "integer" };
                return fail(OUT_OF_RANGE, format!("{what} out of range"));
            }
            Err(e) => return Err(e.into()),
        };
        if *out.data_type() == DataType::Float64 {
            let [a, b, c] = [a, b, &out].map(|x| x.as_primitive::<Float64Type>());
            for i in 0..c.len() {
                if c.is_valid(i) {
                    let (x, y, z) = (a.value(i), b.value(i), c.value(i));
                    out_of_range(
                        z,
                        x.is_infinite() || y.is_infinite(),
                        self.op == Operator::Multiply && x != 0.0 && y != 0.0,
                    )?;
                }
            }
        }
        udf::answer(&args.args, out)
    }
}

/// Fails as PostgreSQL does when a double `result` overflowed (is infinite from finite
/// operands) or underflowed (is zero where `nonzero` says it cannot be).
fn out_of_range(result: f64, infinite_operand: bool, nonzero: bool) -> Result<()> {
    if result.is_infinite() && !infinite_operand {
        return fail(OUT_OF_RANGE, "value out of range: overflow");
    }
    if result == 0.0 && nonzero {
        return fail(OUT_OF_RANGE, "value out of range: underflow");
    }
    Ok(())
}

/// `exp(x)`, failing on overflow and underflow as PostgreSQL's.
fn exp(args: &[ArrayRef]) -> Result<ArrayRef> {
    let x = args[0].as_primitive::<Float64Type>();
    let out: Float64Array = x
        .iter()
        .map(|v| {
            let Some(v) = v else { return Ok(None) };
            let e = v.exp();
            if v.is_finite() {
                out_of_range(e, false, true)?;
            }
            Ok(Some(e))
        })
        .collect::<Result<_>>()?;
    Ok(Arc::new(out))
}

/// `power(a, b)`, with PostgreSQL's errors: zero to a negative power, a negative number to a
/// fraction (2201F), overflow and underflow (22003).
fn power(args: &[ArrayRef]) -> Result<ArrayRef> {
    let (a, b) = (args[0].as_primitive::<Float64Type>(), args[1].as_primitive::<Float64Type>());
    let out: Float64Array = a
        .iter()
        .zip(b.iter())
        .map(|(a, b)| {
            let (Some(a), Some(b)) = (a, b) else { return Ok(None) };
            if a.is_nan() {
                return Ok(Some(if b == 0.0 { 1.0 } else { f64::NAN }));
            }
            if b.is_nan() {
                return Ok(Some(if a == 1.0 { 1.0 } else { f64::NAN }));
            }
            if a == 0.0 && b < 0.0 {
                return fail(INVALID_POWER, "zero raised to a negative power is undefined");
            }
            if a < 0.0 && b.floor() != b {
                return fail(
                    INVALID_POWER,
                    "a negative number raised to a non-integer power yields a complex result",
                );
            }
            let p = a.powf(b);
            if a.is_finite() && b.is_finite() {
                out_of_range(p, false, a != 0.0)?;
            }
            Ok(Some(p))
        })
        .collect::<Result<_>>()?;
    Ok(Arc::new(out))
}
