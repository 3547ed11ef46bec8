//! Go `text/template` syntax as alert labels and annotations use it (`{{ $labels.instance }}`,
//! `{{ $value | humanize }}`, `{{ if … }}…{{ end }}`).
//!
//! This is the first part of promflow's template support: [`check`] finds the structural
//! errors Go's parser reports — an action that is never closed, a string or raw string that
//! is never closed inside an action, an `{{ end }}` or `{{ else }}` without its block, a block
//! left open, and unbalanced parentheses — with Go's wording. Function names and arities, and
//! expansion, come with the alert manager that expands templates.

/// The keywords that open a block closed by `{{ end }}`.
const BLOCK_KEYWORDS: [&str; 5] = ["if", "range", "with", "define", "block"];

/// Checks the structure of `text` as Go's template parser would; the error is Go's message
/// with the line, e.g. `1: unclosed action`.
pub fn check(text: &str) -> Result<(), String> {
    let mut open_blocks: Vec<&str> = Vec::new();
    let mut rest = text;
    let mut line = 1;
    while let Some(start) = rest.find("{{") {
        line += rest[..start].matches('\n').count();
        let body_start = start + 2;
        let end = action_end(&rest[body_start..]).map_err(|e| format!("{line}: {e}"))?;
        let body = rest[body_start..body_start + end].trim_start_matches('-').trim_end_matches('-').trim();
        // comments are not actions
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            let word = body.split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("");
            match word {
                w if BLOCK_KEYWORDS.contains(&w) => open_blocks.push(w),
                "end" if open_blocks.pop().is_none() => {
                    return Err(format!("{line}: unexpected {{{{end}}}}"));
                }
                "else" if !matches!(open_blocks.last(), Some(&"if" | &"range" | &"with")) => {
                    return Err(format!("{line}: unexpected {{{{else}}}}"));
                }
                "" => return Err(format!("{line}: missing value for command")),
                _ => {}
            }
        }
        line += rest[start..body_start + end].matches('\n').count();
        rest = &rest[body_start + end + 2..];
    }
    match open_blocks.last() {
        Some(_) => Err(format!("{line}: unexpected EOF")),
        None => Ok(()),
    }
}

/// The offset of the `}}` that closes the action starting at `s`, skipping quoted strings,
/// or the error Go reports.
fn action_end(s: &str) -> Result<usize, &'static str> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut depth = 0i32;
    while i < b.len() {
        match b[i] {
            b'}' if b.get(i + 1) == Some(&b'}') => {
                return if depth > 0 { Err("unclosed left paren") } else { Ok(i) };
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unexpected right paren");
                }
            }
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\n' {
                        return Err(if q == b'"' {
                            "unterminated quoted string"
                        } else {
                            "unterminated character constant"
                        });
                    }
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= b.len() {
                    return Err(if q == b'"' {
                        "unterminated quoted string"
                    } else {
                        "unterminated character constant"
                    });
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
                if i >= b.len() {
                    return Err("unterminated raw quoted string");
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err("unclosed action")
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_what_alert_templates_use() {
        for ok in [
            "plain text",
            "{{ $labels.instance }} is down",
            "{{ $value | humanize }} {{ humanizePercentage 0.5 }}",
            "{{ if gt $value 1.0 }}high{{ else }}low{{ end }}",
            "{{ range query \"up\" }}{{ .Labels.job }}{{ end }}",
            "{{- /* a comment */ -}}",
            "{{ printf \"%s}}\" \"x\" }}",
            "{{ `raw }}` }}",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn reports_go_parse_errors() {
        assert_eq!(check("{{ .Foo "), Err("1: unclosed action".into()));
        assert_eq!(check("a\n{{ if .X }}b"), Err("2: unexpected EOF".into()));
        assert_eq!(check("{{ end }}"), Err("1: unexpected {{end}}".into()));
        assert_eq!(check("{{ else }}"), Err("1: unexpected {{else}}".into()));
        assert_eq!(check("{{ \"abc }}"), Err("1: unterminated quoted string".into()));
        assert_eq!(check("{{ (len .X }}"), Err("1: unclosed left paren".into()));
        assert_eq!(check("{{ }}"), Err("1: missing value for command".into()));
    }
}
