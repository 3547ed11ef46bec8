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
}

impl Param {
    /// The value as a SQL literal.
    fn literal(&self) -> String {
        match self {
            Param::Null => "NULL".into(),
            Param::Number(v) if v.is_finite() => format!("{v}"),
            // PostgreSQL spells these as strings cast to a number
            Param::Number(v) => format!("'{v}'"),
            Param::Text(s) => format!("'{}'", s.replace('\'', "''")),
        }
    }
}

/// The `$n` placeholders of `sql`: each one's number and where it lies (byte offsets).
fn placeholders(sql: &str) -> Result<Vec<(usize, std::ops::Range<usize>)>, Error> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| Error::Parse(e.to_string()))?;
    let offsets = Offsets::new(sql);
    let mut out = Vec::new();
    for t in tokens {
        let Token::Placeholder(p) = &t.token else { continue };
        let n = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()).filter(|n| *n > 0);
        let Some(n) = n else {
            return Err(Error::Invalid {
                message: format!("parameter {p}: parameters are written $1, $2, …"),
                line: t.span.start.line,
                column: t.span.start.column,
            });
        };
        out.push((n, offsets.of(t.span.start)..offsets.of(t.span.end)));
    }
    Ok(out)
}

/// How many parameters `sql` takes: its highest `$n`.
pub fn count(sql: &str) -> Result<usize, Error> {
    Ok(placeholders(sql)?.iter().map(|(n, _)| *n).max().unwrap_or(0))
}

/// `sql` with every `$n` replaced by `params[n - 1]`.
pub fn substitute(sql: &str, params: &[Param]) -> Result<String, Error> {
    let mut out = String::with_capacity(sql.len());
    let mut from = 0;
    for (n, range) in placeholders(sql)? {
        let Some(p) = params.get(n - 1) else {
            return Err(Error::Parse(format!("there is no parameter ${n}: {} bound", params.len())));
        };
        out.push_str(&sql[from..range.start]);
        out.push_str(&p.literal());
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
    fn placeholders_in_strings_are_text_and_missing_values_are_errors() {
        assert_eq!(count("SELECT '$1' FROM m").unwrap(), 0);
        assert_eq!(count("SELECT 'é', $1 FROM m WHERE a = 'ü$2'").unwrap(), 1);
        assert_eq!(substitute("SELECT 'é', $1", &[Param::Text("ü".into())]).unwrap(), "SELECT 'é', 'ü'");
        assert!(substitute("SELECT $2", &[Param::Null]).is_err());
    }
}
