//! Translation of Go RE2 regex syntax, as Prometheus users write it, to the `regex` crate.
//!
//! Prometheus 3.x anchors every label regex fully and lets `.` match newlines; Go's `\d`,
//! `\w`, `\s` are ASCII-only while the `regex` crate's are Unicode; and RE2 supports
//! `\Q…\E` literal spans. Everything else the two dialects share.

use crate::Error;

/// Compiles `src` as Prometheus does for `=~`: `^(?s:src)$` with RE2's ASCII classes.
pub fn compile_anchored(src: &str) -> Result<regex::Regex, Error> {
    let translated = translate(src);
    regex::Regex::new(&format!("^(?s:{translated})$"))
        .map_err(|e| Error::InvalidRegex(src.to_string(), first_line(&e.to_string())))
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().trim_start_matches("error: ").to_string()
}

/// Rewrites the RE2-only constructs into `regex` crate syntax.
pub fn translate(src: &str) -> String {
    let mut out = String::with_capacity(src.len() + 8);
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str("[0-9]"),
            Some('D') => out.push_str("[^0-9]"),
            Some('w') => out.push_str("[0-9A-Za-z_]"),
            Some('W') => out.push_str("[^0-9A-Za-z_]"),
            Some('s') => out.push_str("[\\t\\n\\f\\r ]"),
            Some('S') => out.push_str("[^\\t\\n\\f\\r ]"),
            Some('Q') => {
                // literal until \E or the end
                let mut lit = String::new();
                while let Some(c) = chars.next() {
                    if c == '\\' && chars.peek() == Some(&'E') {
                        chars.next();
                        break;
                    }
                    lit.push(c);
                }
                out.push_str(&regex::escape(&lit));
            }
            Some(d @ '0'..='7') => {
                // RE2 octal escape \123
                let mut oct = String::from(d);
                while oct.len() < 3 {
                    match chars.peek() {
                        Some(c @ '0'..='7') => {
                            oct.push(*c);
                            chars.next();
                        }
                        _ => break,
                    }
                }
                let code = u32::from_str_radix(&oct, 8).unwrap_or(0);
                out.push_str(&format!("\\x{{{code:x}}}"));
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchored_and_dotall() {
        let r = compile_anchored("a.c").unwrap();
        assert!(r.is_match("a\nc"));
        assert!(!r.is_match("xabc"));
    }

    #[test]
    fn ascii_classes_and_quote() {
        let r = compile_anchored(r"\d+").unwrap();
        assert!(r.is_match("123"));
        assert!(!r.is_match("١٢٣"));
        let q = compile_anchored(r"\Qa.b\E").unwrap();
        assert!(q.is_match("a.b"));
        assert!(!q.is_match("axb"));
    }

    #[test]
    fn bad_regex_is_error() {
        assert!(compile_anchored("(").is_err());
    }
}
