//! promflow's PromQL parser: the language Prometheus 3 accepts with its experimental
//! features on (duration expressions, `anchored`/`smoothed`, fill modifiers, `info()`,
//! `limitk`/`limit_ratio`, experimental functions), with Prometheus's error messages and
//! canonical printing.

pub mod ast;
mod check;
pub mod functions;
mod lexer;
mod literals;
mod parse;
pub mod printer;

pub use ast::*;
pub use printer::prettify;

/// The Go-quoted bytes (`"a\xc5z"`) of a string literal token whose escapes leave it not
/// UTF-8, which Go keeps as it is and promflow's strings cannot; `None` for one that is UTF-8.
pub(crate) fn non_utf8_literal(token: &str) -> Option<String> {
    let bytes = literals::unquote_bytes(token);
    std::str::from_utf8(&bytes).is_err().then(|| literals::quote_bytes(&bytes))
}

/// A syntax or type error at a byte offset of the query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset Prometheus reports the error at.
    pub pos: Pos,
    /// The message, without position.
    pub msg: String,
}

impl ParseError {
    /// Prometheus's form of the error for `query`: `LINE:COL: parse error: MESSAGE`, with
    /// byte-based columns.
    pub fn render(&self, query: &str) -> String {
        let position = if query.is_empty() {
            "unknown position".to_string()
        } else if self.pos > query.len() {
            "invalid position".to_string()
        } else {
            let before = &query.as_bytes()[..self.pos];
            let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
            let col = match before.iter().rposition(|&b| b == b'\n') {
                Some(nl) => self.pos - nl,
                None => self.pos + 1,
            };
            format!("{line}:{col}")
        };
        format!("{position}: parse error: {}", self.msg)
    }
}

/// Parses and type-checks a PromQL expression.
pub fn parse(query: &str) -> Result<Expr, ParseError> {
    let mut expr = parse::Parser::new(query).parse_query()?;
    check::check(query, &mut expr)?;
    Ok(expr)
}

#[cfg(test)]
mod tests;
