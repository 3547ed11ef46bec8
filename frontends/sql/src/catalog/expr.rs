//! Expressions: operators, casts, regular expressions and `LIKE`, and the functions
//! clients call (`version()`, `pg_get_expr`, …).

use sqlparser::ast::{
    self, BinaryOperator, CastKind, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Spanned,
    UnaryOperator,
};

use super::query::run_query;
use super::{
    at, split, type_named, unsupported, version, Catalog, Scope, INFORMATION_SCHEMA, PG_CATALOG, PG_TOAST,
    ROLE, TYPES, V,
};
use crate::exec::ExecError;

/// The name PostgreSQL gives an unnamed select item.
pub(super) fn expr_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(id) => id.value.clone(),
        Expr::CompoundIdentifier(ids) => ids.last().map_or_else(String::new, |i| i.value.clone()),
        Expr::Function(f) => split(&f.name).1,
        Expr::Cast { expr, .. } | Expr::Nested(expr) | Expr::Collate { expr, .. } => expr_name(expr),
        Expr::Case { .. } => "case".into(),
        _ => "?column?".into(),
    }
}

pub(super) fn argument(a: &FunctionArg, scope: &Scope, catalog: &mut Catalog) -> Result<V, ExecError> {
    match a {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
        | FunctionArg::Named { arg: FunctionArgExpr::Expr(e), .. } => eval(e, scope, catalog),
        other => Err(unsupported(other)),
    }
}

/// Matches `pattern` (a PostgreSQL regular expression) anywhere in `text`.
fn regex_search(text: &V, pattern: &V, case_blind: bool) -> Result<V, ExecError> {
    let (Some(t), Some(p)) = (text.to_text(), pattern.to_text()) else { return Ok(V::Null) };
    let re = regex::RegexBuilder::new(&p)
        .case_insensitive(case_blind)
        .build()
        .map_err(|e| ExecError::Catalog(format!("invalid regular expression: {e}")))?;
    Ok(V::Bool(re.is_match(&t)))
}

/// `LIKE`: `%` any run, `_` one character.
fn like(text: &V, pattern: &V, case_blind: bool) -> Result<V, ExecError> {
    let (Some(t), Some(p)) = (text.to_text(), pattern.to_text()) else { return Ok(V::Null) };
    let mut re = String::from("^");
    for c in p.chars() {
        match c {
            '%' => re.push_str(".*"),
            '_' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex_search(&V::Text(t), &V::Text(re), case_blind)
}

pub(super) fn compare(op: &BinaryOperator, a: &V, b: &V) -> Option<V> {
    let o = a.compare(b);
    let result = match op {
        BinaryOperator::Eq => o.map(|o| o.is_eq()),
        BinaryOperator::NotEq => o.map(|o| o.is_ne()),
        BinaryOperator::Lt => o.map(|o| o.is_lt()),
        BinaryOperator::LtEq => o.map(|o| o.is_le()),
        BinaryOperator::Gt => o.map(|o| o.is_gt()),
        BinaryOperator::GtEq => o.map(|o| o.is_ge()),
        _ => return None,
    };
    Some(result.map_or(V::Null, V::Bool))
}

pub(super) fn eval(e: &Expr, scope: &Scope, catalog: &mut Catalog) -> Result<V, ExecError> {
    if let Some((_, v)) = scope.aggregates.iter().find(|(call, _)| call == e) {
        return Ok(v.clone());
    }
    Ok(match e {
        Expr::Identifier(id) => scope.lookup(None, &id.value).map_err(|e| at(e, id.span))?,
        Expr::CompoundIdentifier(ids) => match ids.as_slice() {
            [.., q, c] => scope.lookup(Some(&q.value), &c.value).map_err(|e| at(e, q.span))?,
            [c] => scope.lookup(None, &c.value).map_err(|e| at(e, c.span))?,
            [] => V::Null,
        },
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n
                .parse::<i64>()
                .map(V::Int)
                .or_else(|_| n.parse::<f64>().map(V::Float))
                .map_err(|_| unsupported(n))?,
            ast::Value::SingleQuotedString(s) | ast::Value::EscapedStringLiteral(s) => V::text(s.clone()),
            ast::Value::Boolean(b) => V::Bool(*b),
            ast::Value::Null => V::Null,
            other => return Err(unsupported(other)),
        },
        Expr::Nested(e) | Expr::Collate { expr: e, .. } => eval(e, scope, catalog)?,
        Expr::UnaryOp { op: UnaryOperator::Not, expr } => match eval(expr, scope, catalog)? {
            V::Null => V::Null,
            v => V::Bool(!v.truth()),
        },
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match eval(expr, scope, catalog)? {
            V::Int(i) => V::Int(-i),
            v => v.number().map_or(V::Null, |f| V::Float(-f)),
        },
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            let l = eval(left, scope, catalog)?;
            if l != V::Null && !l.truth() {
                return Ok(V::Bool(false));
            }
            let r = eval(right, scope, catalog)?;
            match (l, r) {
                (_, r) if r != V::Null && !r.truth() => V::Bool(false),
                (V::Null, _) | (_, V::Null) => V::Null,
                _ => V::Bool(true),
            }
        }
        Expr::BinaryOp { left, op: BinaryOperator::Or, right } => {
            let l = eval(left, scope, catalog)?;
            if l.truth() {
                return Ok(V::Bool(true));
            }
            let r = eval(right, scope, catalog)?;
            match (l, r) {
                (_, r) if r.truth() => V::Bool(true),
                (V::Null, _) | (_, V::Null) => V::Null,
                _ => V::Bool(false),
            }
        }
        Expr::BinaryOp { left, op, right } => {
            let (l, r) = (eval(left, scope, catalog)?, eval(right, scope, catalog)?);
            if let Some(v) = compare(op, &l, &r) {
                return Ok(v);
            }
            let custom = match op {
                BinaryOperator::PGCustomBinaryOperator(parts) => parts.last().map(String::as_str),
                _ => None,
            };
            match (op, custom) {
                (BinaryOperator::PGRegexMatch, _) | (_, Some("~")) => regex_search(&l, &r, false)?,
                (BinaryOperator::PGRegexIMatch, _) | (_, Some("~*")) => regex_search(&l, &r, true)?,
                (BinaryOperator::PGRegexNotMatch, _) | (_, Some("!~")) => {
                    match regex_search(&l, &r, false)? {
                        V::Bool(b) => V::Bool(!b),
                        v => v,
                    }
                }
                (BinaryOperator::PGRegexNotIMatch, _) | (_, Some("!~*")) => match regex_search(&l, &r, true)?
                {
                    V::Bool(b) => V::Bool(!b),
                    v => v,
                },
                (BinaryOperator::StringConcat, _) => match (l, r) {
                    (V::Array(mut a), V::Array(b)) => {
                        a.extend(b);
                        V::Array(a)
                    }
                    (V::Array(a), V::Null) | (V::Null, V::Array(a)) => V::Array(a),
                    (l, r) => match (l.to_text(), r.to_text()) {
                        (Some(a), Some(b)) => V::Text(a + &b),
                        _ => V::Null,
                    },
                },
                (BinaryOperator::Plus | BinaryOperator::Minus, _) => match (l, r) {
                    (V::Int(a), V::Int(b)) => V::Int(if *op == BinaryOperator::Plus { a + b } else { a - b }),
                    (l, r) => match (l.number(), r.number()) {
                        (Some(a), Some(b)) => {
                            V::Float(if *op == BinaryOperator::Plus { a + b } else { a - b })
                        }
                        _ => V::Null,
                    },
                },
                (BinaryOperator::Multiply | BinaryOperator::Divide | BinaryOperator::Modulo, _) => {
                    // IEEE arithmetic, as PromQL's and the aggregates' (a division by zero
                    // is ±Inf or NaN)
                    match (l.number(), r.number()) {
                        (Some(a), Some(b)) => V::Float(match op {
                            BinaryOperator::Multiply => a * b,
                            BinaryOperator::Divide => a / b,
                            _ => a % b,
                        }),
                        _ => V::Null,
                    }
                }
                _ => return Err(unsupported(format!("the operator {op}"))),
            }
        }
        Expr::Like { negated, expr, pattern, .. } | Expr::ILike { negated, expr, pattern, .. } => {
            let blind = matches!(e, Expr::ILike { .. });
            match like(&eval(expr, scope, catalog)?, &eval(pattern, scope, catalog)?, blind)? {
                V::Bool(b) => V::Bool(b != *negated),
                v => v,
            }
        }
        Expr::IsNull(e) => V::Bool(eval(e, scope, catalog)? == V::Null),
        Expr::IsNotNull(e) => V::Bool(eval(e, scope, catalog)? != V::Null),
        Expr::IsTrue(e) => V::Bool(eval(e, scope, catalog)?.truth()),
        Expr::IsFalse(e) => V::Bool(eval(e, scope, catalog)? == V::Bool(false)),
        Expr::In { expr, target: ast::InTarget::List(list), negated, .. } => {
            let v = eval(expr, scope, catalog)?;
            let mut found = false;
            for item in list {
                found |= v.compare(&eval(item, scope, catalog)?).is_some_and(|o| o.is_eq());
            }
            if v == V::Null {
                V::Null
            } else {
                V::Bool(found != *negated)
            }
        }
        Expr::In { expr, target: ast::InTarget::Subquery(subquery), negated, .. } => {
            let v = eval(expr, scope, catalog)?;
            let (_, rows) = run_query(subquery, catalog, Some(scope))?;
            let found = rows.iter().any(|r| r.first().and_then(|x| v.compare(x)).is_some_and(|o| o.is_eq()));
            V::Bool(found != *negated)
        }
        Expr::Between { expr, negated, low, high } => {
            let v = eval(expr, scope, catalog)?;
            let (lo, hi) = (eval(low, scope, catalog)?, eval(high, scope, catalog)?);
            match (v.compare(&lo), v.compare(&hi)) {
                (Some(a), Some(b)) => V::Bool((a.is_ge() && b.is_le()) != *negated),
                _ => V::Null,
            }
        }
        Expr::Case { operand, conditions, else_result, .. } => {
            let operand = operand.as_ref().map(|o| eval(o, scope, catalog)).transpose()?;
            for w in conditions {
                let hit = match &operand {
                    Some(o) => o.compare(&eval(&w.condition, scope, catalog)?).is_some_and(|x| x.is_eq()),
                    None => eval(&w.condition, scope, catalog)?.truth(),
                };
                if hit {
                    return eval(&w.result, scope, catalog);
                }
            }
            match else_result {
                Some(e) => eval(e, scope, catalog)?,
                None => V::Null,
            }
        }
        Expr::Cast { kind: CastKind::DoubleColon | CastKind::Cast, expr, data_type, .. } => {
            let v = eval(expr, scope, catalog)?;
            cast(v, data_type, catalog)?
        }
        Expr::Subquery(q) => {
            let (_, rows) = run_query(q, catalog, Some(scope))?;
            rows.into_iter().next().and_then(|r| r.into_iter().next()).unwrap_or(V::Null)
        }
        Expr::Exists { subquery, negated } => {
            let (_, rows) = run_query(subquery, catalog, Some(scope))?;
            V::Bool(rows.is_empty() == *negated)
        }
        Expr::AnyOp { left, compare_op, right, .. } => {
            let l = eval(left, scope, catalog)?;
            let V::Array(items) = eval(right, scope, catalog)? else { return Ok(V::Null) };
            V::Bool(items.iter().any(|x| compare(compare_op, &l, x).is_some_and(|v| v.truth())))
        }
        Expr::Array(array) => {
            V::Array(array.elem.iter().map(|x| eval(x, scope, catalog)).collect::<Result<_, _>>()?)
        }
        Expr::Function(f) => function(f, scope, catalog)?,
        other => return Err(unsupported(other)),
    })
}

fn cast(v: V, data_type: &DataType, catalog: &mut Catalog) -> Result<V, ExecError> {
    let name = match data_type {
        DataType::Custom(name, _) => split(name).1,
        DataType::Text | DataType::Varchar(_) | DataType::String(_) => "text".into(),
        DataType::Int(_) | DataType::Integer(_) | DataType::BigInt(_) | DataType::SmallInt(_) => {
            "int8".into()
        }
        DataType::Boolean | DataType::Bool => "bool".into(),
        other => other.to_string().to_ascii_lowercase(),
    };
    Ok(match name.as_str() {
        _ if v == V::Null => V::Null,
        "text" | "name" | "char" | "bpchar" => V::Text(v.to_text().unwrap_or_default()),
        "oid" | "int8" | "int4" | "int2" | "regproc" => v.number().map_or(V::Null, |n| V::Int(n as i64)),
        "bool" => V::Bool(v.truth()),
        "regclass" => match v {
            V::Text(text) => {
                let name = relation_name(&text);
                let oid = catalog.tables(false)?.iter().find(|t| t.name == name).map(|t| t.oid);
                match oid {
                    Some(oid) => V::Class(oid, name),
                    None => return Err(ExecError::NoTable(name)),
                }
            }
            v => catalog.table_name(&v)?,
        },
        "regtype" => {
            if let V::Text(name) = &v {
                return type_named(name).map(V::Int).ok_or_else(|| ExecError::Sql {
                    state: "42704",
                    message: format!("type \"{name}\" does not exist"),
                });
            }
            let oid = v.number().unwrap_or(0.0) as i64;
            TYPES.iter().find(|t| t.0 == oid).map_or(V::Int(oid), |t| V::text(t.2))
        }
        "regnamespace" => {
            let oid = v.number().unwrap_or(0.0) as i64;
            V::text(match oid {
                PG_CATALOG => "pg_catalog",
                INFORMATION_SCHEMA => "information_schema",
                PG_TOAST => "pg_toast",
                _ => "public",
            })
        }
        _ => v,
    })
}

/// The table a `regclass` literal names (`up`, `public.up`, `"Mixed_Case"`): its last part,
/// folded to lower case unless quoted, as PostgreSQL reads identifiers.
fn relation_name(text: &str) -> String {
    let (mut parts, mut part, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, text.trim().chars().peekable());
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                part.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut part)),
            c if quoted => part.push(c),
            c => part.extend(c.to_lowercase()),
        }
    }
    parts.push(part);
    parts.pop().unwrap_or_default()
}

pub(super) fn function(f: &ast::Function, scope: &Scope, catalog: &mut Catalog) -> Result<V, ExecError> {
    let (_, name) = split(&f.name);
    let args: Vec<V> = match &f.args {
        FunctionArguments::None => Vec::new(),
        FunctionArguments::List(list) => {
            list.args.iter().map(|a| argument(a, scope, catalog)).collect::<Result<_, _>>()?
        }
        FunctionArguments::Subquery(q) if name == "array" => {
            let (_, rows) = run_query(q, catalog, Some(scope))?;
            return Ok(V::Array(rows.into_iter().filter_map(|r| r.into_iter().next()).collect()));
        }
        FunctionArguments::Subquery(_) => return Err(unsupported(format!("{name}(SELECT …)"))),
    };
    let first = args.first().cloned().unwrap_or(V::Null);
    Ok(match name.as_str() {
        "version" => V::text(version()),
        "current_schema" => V::text("public"),
        "current_schemas" => V::Array(vec![V::text("pg_catalog"), V::text("public")]),
        "current_database" => V::text("promflow"),
        "current_user" | "session_user" | "user" | "pg_get_userbyid" => V::text(ROLE),
        "pg_table_is_visible"
        | "pg_type_is_visible"
        | "has_table_privilege"
        | "has_schema_privilege"
        | "has_database_privilege" => V::Bool(true),
        "pg_relation_is_publishable" | "pg_is_in_recovery" => V::Bool(false),
        "pg_encoding_to_char" => V::text("UTF8"),
        "pg_get_expr"
        | "pg_get_constraintdef"
        | "pg_get_indexdef"
        | "pg_get_viewdef"
        | "obj_description"
        | "col_description"
        | "shobj_description"
        | "pg_get_statisticsobjdef_columns" => V::Null,
        // sizes are storage's, not a table's: unknown
        "pg_table_size" | "pg_relation_size" | "pg_total_relation_size" | "pg_database_size" => V::Null,
        // the default tablespaces have no directory of their own
        "pg_tablespace_location" => V::text(""),
        "to_regtype" => first.to_text().and_then(|name| type_named(&name)).map_or(V::Null, V::Int),
        "pg_size_pretty" => first.number().map_or(V::Null, |n| V::Text(size_text(n as i64))),
        "format_type" => {
            let oid = first.number().unwrap_or(0.0) as i64;
            TYPES.iter().find(|t| t.0 == oid).map_or(V::Null, |t| V::text(t.2))
        }
        "array_to_string" => match (&first, args.get(1)) {
            (V::Array(items), Some(sep)) => {
                let sep = sep.to_text().unwrap_or_default();
                V::Text(items.iter().filter_map(V::to_text).collect::<Vec<_>>().join(&sep))
            }
            _ => V::Null,
        },
        "coalesce" => args.into_iter().find(|v| *v != V::Null).unwrap_or(V::Null),
        "nullif" => match args.get(1) {
            Some(other) if first.compare(other) == Some(std::cmp::Ordering::Equal) => V::Null,
            _ => first,
        },
        "lower" => first.to_text().map_or(V::Null, |s| V::Text(s.to_lowercase())),
        "upper" => first.to_text().map_or(V::Null, |s| V::Text(s.to_uppercase())),
        "quote_ident" => first.to_text().map_or(V::Null, |s| V::Text(quote_ident(&s))),
        "current_setting" => match first.to_text() {
            Some(name) => match super::setting(&name) {
                Some((_, value)) => V::Text(value),
                None => {
                    return Err(ExecError::Sql {
                        state: "42704",
                        message: format!("unrecognized configuration parameter \"{name}\""),
                    })
                }
            },
            None => V::Null,
        },
        other => return Err(at(unsupported(format!("the function {other}()")), f.name.span())),
    })
}

/// `bytes` as PostgreSQL's `pg_size_pretty` writes them: below 10 kB in bytes, else in kB,
/// MB, GB, TB or PB, each unit rounded half away from zero.
pub(crate) fn size_text(bytes: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    const LIMIT_HALVES: i64 = 2 * LIMIT - 1;
    if bytes.abs() < LIMIT {
        return format!("{bytes} bytes");
    }
    // one more bit than the unit's is kept, to round by
    let half_rounded = |x: i64| (x + x.signum()) / 2;
    let mut halves = bytes >> 9;
    for unit in ["kB", "MB", "GB", "TB"] {
        if halves.abs() < LIMIT_HALVES {
            return format!("{} {unit}", half_rounded(halves));
        }
        halves >>= 10;
    }
    format!("{} PB", half_rounded(halves))
}

/// An identifier quoted as PostgreSQL quotes it when it needs to be: unless it is lower case
/// letters, digits and `_` (not first a digit) and no keyword PostgreSQL reserves in any way
/// (`user`, `between`; `postgres_keywords.txt`).
pub(crate) fn quote_ident(s: &str) -> String {
    static KEYWORDS: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    let keywords = KEYWORDS.get_or_init(|| {
        include_str!("postgres_keywords.txt").lines().filter(|l| !l.starts_with('#')).collect()
    });
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !keywords.contains(s);
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_where_postgresql_quotes_them() {
        assert_eq!(quote_ident("idle"), "idle");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("between"), "\"between\"");
        assert_eq!(quote_ident("name"), "name");
        assert_eq!(quote_ident("Job"), "\"Job\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn sizes_are_written_as_postgresql_writes_them() {
        assert_eq!(size_text(10239), "10239 bytes");
        assert_eq!(size_text(10240), "10 kB");
        assert_eq!(size_text(-10240), "-10 kB");
        assert_eq!(size_text(8_206_154_752), "7826 MB");
        assert_eq!(size_text(1_099_511_627_776), "1024 GB");
        assert_eq!(size_text(i64::MAX), "8192 PB");
    }
}
