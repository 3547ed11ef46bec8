//! Type checking of a parsed expression, with Prometheus's messages and positions (its
//! `checkAST`). Children are checked before their parent, so the first error reported is
//! the one Prometheus reports first.

use super::ast::*;
use super::literals::quote;
use super::parse::PResult;
use super::ParseError;

/// Checks `e` (and records what Prometheus records while checking: set operators match
/// many-to-many, operations with a scalar side have no vector matching, `info()`'s label
/// selector may match everything).
pub(crate) fn check(input: &str, e: &mut Expr) -> PResult<ValueType> {
    Checker { input }.check(e)
}

struct Checker<'a> {
    input: &'a str,
}

fn error(pos: Pos, msg: impl Into<String>) -> ParseError {
    ParseError { pos, msg: msg.into() }
}

impl Checker<'_> {
    fn check(&self, e: &mut Expr) -> PResult<ValueType> {
        let ty = e.value_type();
        let start = e.span().start;
        match e {
            Expr::Aggregate(a) => {
                self.expect_type(&mut a.expr, ValueType::Vector, "aggregation expression")?;
                let param_type = match a.op {
                    AggregateOp::CountValues => Some(ValueType::String),
                    op if op.has_param() => Some(ValueType::Scalar),
                    _ => None,
                };
                if let (Some(want), Some(param)) = (param_type, a.param.as_mut()) {
                    self.expect_type(param, want, "aggregation parameter")?;
                }
            }
            Expr::Binary(b) => self.check_binary(b)?,
            Expr::Call(c) => self.check_call(c)?,
            Expr::Paren(inner, _) => {
                self.check(inner)?;
            }
            Expr::Unary { expr, .. } => {
                let t = self.check(expr)?;
                if t != ValueType::Scalar && t != ValueType::Vector {
                    return Err(error(
                        start,
                        format!(
                            "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                            quote(t.documented())
                        ),
                    ));
                }
            }
            Expr::Subquery(s) => {
                let t = self.check(&mut s.expr)?;
                if t != ValueType::Vector {
                    return Err(error(
                        start,
                        format!("subquery is only allowed on instant vector, got {} instead", t.name()),
                    ));
                }
            }
            Expr::Matrix(m) => check_selector(&m.vs)?,
            Expr::Selector(vs) => check_selector(vs)?,
            Expr::Number(_) | Expr::String(..) => {}
        }
        Ok(ty)
    }

    fn expect_type(&self, e: &mut Expr, want: ValueType, context: &str) -> PResult<()> {
        let t = self.check(e)?;
        if t != want {
            return Err(error(
                e.span().start,
                format!("expected type {} in {context}, got {}", want.documented(), t.documented()),
            ));
        }
        Ok(())
    }

    fn check_binary(&self, b: &mut BinaryExpr) -> PResult<()> {
        let lt = self.check(&mut b.lhs)?;
        let rt = self.check(&mut b.rhs)?;
        // the operator's position: the first non-space after the left operand
        let bytes = self.input.as_bytes();
        let mut op_pos = b.lhs.span().end;
        while bytes.get(op_pos).is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
            op_pos += 1;
        }
        let start = b.lhs.span().start;
        if b.return_bool && !b.op.is_comparison() {
            return Err(error(op_pos, "bool modifier can only be used on comparison operators"));
        }
        if b.op.is_comparison() && !b.return_bool && lt == ValueType::Scalar && rt == ValueType::Scalar {
            return Err(error(op_pos, "comparisons between scalars must use BOOL modifier"));
        }
        let Some(vm) = b.matching.as_mut() else { return Ok(()) };
        if b.op.is_set() && vm.card == Cardinality::OneToOne {
            vm.card = Cardinality::ManyToMany;
        }
        if vm.on {
            if let Some(l) = vm.labels.iter().find(|l| vm.include.contains(l)) {
                return Err(error(
                    op_pos,
                    format!("label {} must not occur in ON and GROUP clause at once", quote(l)),
                ));
            }
        }
        for (t, side) in [(lt, &b.lhs), (rt, &b.rhs)] {
            if t != ValueType::Scalar && t != ValueType::Vector {
                return Err(error(
                    side.span().start,
                    "binary expression must contain only scalar and instant vector types",
                ));
            }
        }
        let fills = vm.fill_lhs.is_some() || vm.fill_rhs.is_some();
        if lt != ValueType::Vector || rt != ValueType::Vector {
            if !vm.labels.is_empty() {
                return Err(error(start, "vector matching only allowed between instant vectors"));
            }
            if fills {
                return Err(error(start, "filling in missing series only allowed between instant vectors"));
            }
            b.matching = None;
        } else if b.op.is_set() {
            if matches!(vm.card, Cardinality::OneToMany | Cardinality::ManyToOne) {
                return Err(error(
                    start,
                    format!("no grouping allowed for {} operation", quote(b.op.as_str())),
                ));
            }
            if fills {
                return Err(error(start, "filling in missing series not allowed for set operators"));
            }
        }
        if (lt == ValueType::Scalar || rt == ValueType::Scalar) && b.op.is_set() {
            return Err(error(
                start,
                format!("set operator {} not allowed in binary scalar expression", quote(b.op.as_str())),
            ));
        }
        Ok(())
    }

    fn check_call(&self, c: &mut Call) -> PResult<()> {
        let f = c.func;
        let (nargs, got, name) = (f.arg_types.len(), c.args.len(), quote(f.name));
        let count_error = if f.variadic == 0 {
            (nargs != got).then(|| format!("expected {nargs} argument(s) in call to {name}, got {got}"))
        } else if nargs - 1 > got {
            Some(format!("expected at least {} argument(s) in call to {name}, got {got}", nargs - 1))
        } else if f.variadic > 0 && nargs - 1 + (f.variadic as usize) < got {
            Some(format!(
                "expected at most {} argument(s) in call to {name}, got {got}",
                nargs - 1 + f.variadic as usize
            ))
        } else {
            None
        };
        if let Some(msg) = count_error {
            return Err(error(c.span.start, msg));
        }
        if f.name == "info" && got > 1 {
            let arg = &mut c.args[1];
            let t = arg.value_type();
            if t != ValueType::Vector {
                return Err(error(
                    c.span.start,
                    format!(
                        "expected type instant vector in call to function {name}, got {}",
                        t.documented()
                    ),
                ));
            }
            let pos = arg.span().start;
            match arg {
                Expr::Selector(vs) if vs.name.is_some() => {
                    return Err(error(pos, "expected label selectors only, got vector selector instead"))
                }
                Expr::Selector(vs) => vs.bypass_empty_check = true,
                _ => return Err(error(pos, "expected label selectors only")),
            }
        }
        for (i, arg) in c.args.iter_mut().enumerate() {
            let want = match f.arg_types.get(i) {
                Some(t) => *t,
                None if f.variadic == 0 => break,
                None => f.arg_types[nargs - 1],
            };
            let t = self.check(arg)?;
            if t != want {
                return Err(error(
                    arg.span().start,
                    format!(
                        "expected type {} in call to function {name}, got {}",
                        want.documented(),
                        t.documented()
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn check_selector(vs: &VectorSelector) -> PResult<()> {
    if let Some(name) = &vs.name {
        if let Some(m) = vs.matchers.iter().find(|m| m.name == promflow_storage::METRIC_NAME) {
            return Err(error(
                vs.span.start,
                format!("metric name must not be set twice: {} or {}", quote(name), quote(&m.value)),
            ));
        }
        return Ok(());
    }
    if !vs.bypass_empty_check && vs.matchers.iter().all(|m| m.matches_empty()) {
        return Err(error(vs.span.start, "vector selector must contain at least one non-empty matcher"));
    }
    Ok(())
}
