//! The extended query protocol's parameters: a statement's `$n` placeholders replaced by the
//! bound values, written as SQL literals, before the text is compiled like any other.
//!
//! Substituting text rather than typing parameters through the compiler keeps one path from
//! text to plan: a bound `$1` means exactly what the same literal written in place means.

use std::ops::ControlFlow;

use postgres_types::Type;
use sqlparser::ast;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::Error;

/// A bound parameter's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// SQL `NULL`.
    Null,
    /// A number, written as a numeric literal.
    Number(f64),
    /// Anything else, written as a string literal (timestamps as RFC 3339).
    Text(String),
    /// An array (a parameter of an array type), written as `ARRAY[…]` of its elements.
    Array(Vec<Param>),
}

impl Param {
    /// The value as a SQL literal.
    fn literal(&self) -> String {
        match self {
            Param::Null => "NULL".into(),
            // in parentheses when negative: `10-$1` must not become `10--5`, a comment
            Param::Number(v) if v.is_finite() && *v < 0.0 => format!("({v})"),
            Param::Number(v) if v.is_finite() => format!("{v}"),
            // PostgreSQL spells these as strings cast to a number
            Param::Number(v) => format!("'{v}'"),
            Param::Text(s) => format!("'{}'", s.replace('\'', "''")),
            Param::Array(items) => {
                format!("ARRAY[{}]", items.iter().map(Param::literal).collect::<Vec<_>>().join(", "))
            }
        }
    }
}

/// The elements of a one-dimensional array in PostgreSQL's text form (`{a,"b c",NULL}`;
/// `None` for an element that is `NULL`), or `None` when the text is not one.
pub fn array_elements(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Some(out);
    }
    let mut chars = inner.chars().peekable();
    let skip_spaces = |chars: &mut std::iter::Peekable<std::str::Chars>| {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    };
    loop {
        skip_spaces(&mut chars);
        match chars.peek() {
            Some('"') => {
                chars.next();
                let mut item = String::new();
                loop {
                    match chars.next()? {
                        '\\' => item.push(chars.next()?),
                        '"' => break,
                        c => item.push(c),
                    }
                }
                out.push(Some(item));
            }
            // a nested array: more than one dimension
            Some('{') => return None,
            _ => {
                let (mut item, mut escaped) = (String::new(), false);
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    chars.next();
                    if c == '\\' {
                        item.push(chars.next()?);
                        escaped = true;
                    } else {
                        item.push(c);
                    }
                }
                let item = item.trim();
                // an empty element is malformed; an unquoted, unescaped NULL is NULL
                if item.is_empty() {
                    return None;
                }
                out.push((escaped || !item.eq_ignore_ascii_case("NULL")).then(|| item.to_string()));
            }
        }
        skip_spaces(&mut chars);
        match chars.next() {
            Some(',') => {}
            None => return Some(out),
            Some(_) => return None,
        }
    }
}

/// A `$n` placeholder of a statement.
struct Placeholder {
    /// Its number.
    n: usize,
    /// Where it lies (byte offsets).
    range: std::ops::Range<usize>,
    /// Whether it is the array of `ANY (…)`, `SOME (…)` or `ALL (…)`.
    array: bool,
}

/// The `$n` placeholders of `sql`.
fn placeholders(sql: &str) -> Result<Vec<Placeholder>, Error> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| Error::Parse(e.to_string()))?;
    let offsets = Offsets::new(sql);
    let mut out = Vec::new();
    let mut before: Vec<&Token> = Vec::new();
    for t in &tokens {
        if !matches!(t.token, Token::Whitespace(_)) {
            before.push(&t.token);
        }
        let Token::Placeholder(p) = &t.token else { continue };
        let n = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()).filter(|n| *n > 0);
        let Some(n) = n else {
            return Err(Error::Invalid {
                message: format!("parameter {p}: parameters are written $1, $2, …"),
                line: t.span.start.line,
                column: t.span.start.column,
            });
        };
        // `<operator> ANY|SOME|ALL ( $n )`: not `SELECT ALL ($1)`
        let array = matches!(
            before.as_slice(),
            [.., operator, Token::Word(w), Token::LParen, Token::Placeholder(_)]
                if ["ANY", "SOME", "ALL"].iter().any(|k| w.value.eq_ignore_ascii_case(k))
                    && w.quote_style.is_none()
                    && matches!(operator, Token::Eq | Token::Neq | Token::Lt | Token::Gt | Token::LtEq | Token::GtEq | Token::DoubleEq)
        );
        out.push(Placeholder { n, range: offsets.of(t.span.start)..offsets.of(t.span.end), array });
    }
    Ok(out)
}

/// The types of a statement's parameters where the statement says them, as PostgreSQL
/// infers them for a client that leaves them unnamed (asyncpg, which then sends each value
/// in that type's binary form): a cast (`$1::numeric`, `CAST($1 AS date)`), a comparison
/// (also `BETWEEN` and `IN`) with a metric's `ts` (`timestamptz`) or `value` (`double
/// precision`) column, `LIMIT` and `OFFSET` (`bigint`). Every other parameter is `None`, of a type left to its text.
pub fn inferred_types(statements: &[ast::Statement], count: usize) -> Vec<Option<Type>> {
    let mut inference = Inference { types: vec![None; count] };
    for statement in statements {
        let _ = ast::Visit::visit(statement, &mut inference);
    }
    inference.types
}

struct Inference {
    types: Vec<Option<Type>>,
}

impl Inference {
    /// Gives `e` type `t` when it is a placeholder whose type is not known yet.
    fn infer(&mut self, e: &ast::Expr, t: Option<Type>) {
        let ast::Expr::Value(v) = e else { return };
        let ast::Value::Placeholder(p) = &v.value else { return };
        let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else { return };
        if let Some(slot) = n.checked_sub(1).and_then(|i| self.types.get_mut(i)) {
            if slot.is_none() {
                *slot = t;
            }
        }
    }
}

/// The type of a metric table's column that an expression names, for the columns whose
/// type does not depend on the table (labels are `text`, but so are names of other tables).
fn column_type(e: &ast::Expr) -> Option<Type> {
    match crate::compile::column_named(e)? {
        "ts" => Some(Type::TIMESTAMPTZ),
        "value" => Some(Type::FLOAT8),
        _ => None,
    }
}

/// The wire type of a SQL type name, for the types promflow reads parameters of.
fn wire_type(t: &ast::DataType) -> Option<Type> {
    use ast::DataType as D;
    Some(match t {
        D::Numeric(_) | D::Decimal(_) | D::Dec(_) => Type::NUMERIC,
        D::SmallInt(_) | D::Int2(_) => Type::INT2,
        D::Int(_) | D::Integer(_) | D::Int4(_) => Type::INT4,
        D::BigInt(_) | D::Int8(_) => Type::INT8,
        D::Real | D::Float4 => Type::FLOAT4,
        D::Float8 | D::Double(_) | D::DoublePrecision | D::Float(_) => Type::FLOAT8,
        D::Text | D::Varchar(_) | D::CharacterVarying(_) | D::String(_) => Type::TEXT,
        D::Bool | D::Boolean => Type::BOOL,
        D::Date => Type::DATE,
        D::Interval { .. } => Type::INTERVAL,
        D::Timestamp(_, ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz) => Type::TIMESTAMPTZ,
        D::Timestamp(_, _) => Type::TIMESTAMP,
        D::JSON => Type::JSON,
        D::JSONB => Type::JSONB,
        D::Array(ast::ArrayElemTypeDef::SquareBracket(element, _)) => match wire_type(element)? {
            Type::TEXT => Type::TEXT_ARRAY,
            Type::INT2 => Type::INT2_ARRAY,
            Type::INT4 => Type::INT4_ARRAY,
            Type::INT8 => Type::INT8_ARRAY,
            Type::FLOAT4 => Type::FLOAT4_ARRAY,
            Type::FLOAT8 => Type::FLOAT8_ARRAY,
            Type::NUMERIC => Type::NUMERIC_ARRAY,
            Type::BOOL => Type::BOOL_ARRAY,
            _ => return None,
        },
        _ => return None,
    })
}

impl ast::Visitor for Inference {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &ast::Expr) -> ControlFlow<()> {
        match e {
            ast::Expr::Cast { expr, data_type, .. } => self.infer(expr, wire_type(data_type)),
            // only comparisons: `ts + $1` takes an interval
            ast::Expr::BinaryOp {
                left,
                op:
                    ast::BinaryOperator::Eq
                    | ast::BinaryOperator::NotEq
                    | ast::BinaryOperator::Lt
                    | ast::BinaryOperator::LtEq
                    | ast::BinaryOperator::Gt
                    | ast::BinaryOperator::GtEq,
                right,
            } => {
                self.infer(right, column_type(left));
                self.infer(left, column_type(right));
            }
            ast::Expr::Between { expr, low, high, .. } => {
                let t = column_type(expr);
                self.infer(low, t.clone());
                self.infer(high, t);
            }
            ast::Expr::In { expr, target: ast::InTarget::List(list), .. } => {
                let t = column_type(expr);
                for item in list {
                    self.infer(item, t.clone());
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &ast::Query) -> ControlFlow<()> {
        if let Some(ast::LimitClause::LimitOffset { limit, offset, .. }) = &q.limit_clause {
            if let Some(limit) = limit {
                self.infer(limit, Some(Type::INT8));
            }
            if let Some(offset) = offset {
                self.infer(&offset.value, Some(Type::INT8));
            }
        }
        ControlFlow::Continue(())
    }
}

/// How many parameters `sql` takes: its highest `$n`.
pub fn count(sql: &str) -> Result<usize, Error> {
    Ok(placeholders(sql)?.iter().map(|p| p.n).max().unwrap_or(0))
}

/// `sql` with every `$n` replaced by `params[n - 1]`.
pub fn substitute(sql: &str, params: &[Param]) -> Result<String, Error> {
    let mut out = String::with_capacity(sql.len());
    let mut from = 0;
    for Placeholder { n, range, array } in placeholders(sql)? {
        let Some(p) = params.get(n - 1) else {
            return Err(Error::Parse(format!("there is no parameter ${n}: {} bound", params.len())));
        };
        out.push_str(&sql[from..range.start]);
        // text of no declared type where an array stands (`= ANY ($1)`, psycopg's lists of
        // strings) is an array in PostgreSQL's text form, as PostgreSQL would infer
        let items = match (array, p) {
            (true, Param::Text(text)) => array_elements(text),
            _ => None,
        };
        match items {
            Some(items) => {
                let items = items.into_iter().map(|i| i.map_or(Param::Null, Param::Text)).collect();
                out.push_str(&Param::Array(items).literal());
            }
            None => out.push_str(&p.literal()),
        }
        from = range.end;
    }
    out.push_str(&sql[from..]);
    Ok(out)
}

/// Byte offsets of the tokenizer's locations (1-based lines and character columns).
struct Offsets<'a> {
    text: &'a str,
    /// The byte offset of each line's start.
    lines: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(text: &'a str) -> Offsets<'a> {
        let lines = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Offsets { text, lines }
    }

    fn of(&self, at: Location) -> usize {
        let Some(&start) = self.lines.get((at.line as usize).saturating_sub(1)) else {
            return self.text.len();
        };
        let line = &self.text[start..];
        let column = (at.column as usize).saturating_sub(1);
        start + line.char_indices().nth(column).map_or(line.len(), |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_types_are_inferred_where_the_statement_says_them() {
        let sql = "SELECT job FROM m WHERE ts >= $1 AND t.value < $2 AND $3::numeric > 0 \
                   AND job = $4 AND CAST($5 AS int8[]) IS NOT NULL AND ts + $6 > now() \
                   AND value BETWEEN $7 AND 1 LIMIT $8 OFFSET $9";
        let statements = crate::parse(sql).unwrap();
        assert_eq!(
            inferred_types(&statements, 10),
            vec![
                Some(Type::TIMESTAMPTZ),
                Some(Type::FLOAT8),
                Some(Type::NUMERIC),
                None,
                Some(Type::INT8_ARRAY),
                None,
                Some(Type::FLOAT8),
                Some(Type::INT8),
                Some(Type::INT8),
                None,
            ]
        );
    }

    #[test]
    fn placeholders_become_literals_and_the_rest_is_kept() {
        let sql = "SELECT job,\n  max(value) FROM m WHERE job = $2 AND ts > $1 -- é $3\nGROUP BY job";
        assert_eq!(count(sql).unwrap(), 2);
        let bound = substitute(sql, &[Param::Number(1.5e9), Param::Text("it's".into())]).unwrap();
        assert_eq!(
            bound,
            "SELECT job,\n  max(value) FROM m WHERE job = 'it''s' AND ts > 1500000000 -- é $3\nGROUP BY job"
        );
        assert_eq!(substitute("SELECT $1", &[Param::Null]).unwrap(), "SELECT NULL");
        assert_eq!(substitute("SELECT $1", &[Param::Number(f64::NAN)]).unwrap(), "SELECT 'NaN'");
    }

    #[test]
    fn arrays_in_postgresqls_text_form_become_array_literals() {
        let items = array_elements(r#"{a, "b c","x\"y",NULL, "NULL"}"#).unwrap();
        assert_eq!(
            items,
            [Some("a"), Some("b c"), Some("x\"y"), None, Some("NULL")].map(|i| i.map(String::from)).to_vec()
        );
        assert_eq!(array_elements("{}"), Some(Vec::new()));
        assert_eq!(array_elements("{{1,2},{3,4}}"), None);
        assert_eq!(array_elements("a,b"), None);
        assert_eq!(array_elements(r"{a\,b,c}"), Some(vec![Some("a,b".into()), Some("c".into())]));
        assert_eq!(array_elements("{a,,b}"), None);
        assert_eq!(
            substitute("SELECT ALL ($1)", &[Param::Text("{a}".into())]).unwrap(),
            "SELECT ALL ('{a}')"
        );
        assert_eq!(substitute("SELECT 10-$1", &[Param::Number(-5.0)]).unwrap(), "SELECT 10-(-5)");
        let array = Param::Array(vec![Param::Text("it's".into()), Param::Null, Param::Number(2.0)]);
        assert_eq!(substitute("SELECT $1", &[array]).unwrap(), "SELECT ARRAY['it''s', NULL, 2]");
        // untyped text where an array stands is one; elsewhere it is text
        let list = Param::Text("{a,b}".into());
        assert_eq!(
            substitute("SELECT $1 WHERE x = ANY ($1) OR x <> all($1)", &[list]).unwrap(),
            "SELECT '{a,b}' WHERE x = ANY (ARRAY['a', 'b']) OR x <> all(ARRAY['a', 'b'])"
        );
    }

    #[test]
    fn placeholders_in_strings_are_text_and_missing_values_are_errors() {
        assert_eq!(count("SELECT '$1' FROM m").unwrap(), 0);
        assert_eq!(count("SELECT 'é', $1 FROM m WHERE a = 'ü$2'").unwrap(), 1);
        assert_eq!(substitute("SELECT 'é', $1", &[Param::Text("ü".into())]).unwrap(), "SELECT 'é', 'ü'");
        assert!(substitute("SELECT $2", &[Param::Null]).is_err());
    }
}
