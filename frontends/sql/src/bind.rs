//! The extended query protocol's parameters: a statement's `$n` placeholders replaced by the
//! bound values, written as SQL literals, before the text is compiled like any other.
//!
//! Substituting text rather than typing parameters through the compiler keeps one path from
//! text to plan: a bound `$1` means exactly what the same literal written in place means.

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
