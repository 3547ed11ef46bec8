//! Go-compatible literals. PromQL takes its number syntax and string escapes from Go
//! (`strconv`) and its durations from Prometheus's duration type; users see the results in
//! values, in canonical query text and in error messages, so they must match. (Go's float
//! formatting lives in `promflow_plan::format` and `promflow_storage::gofmt`, Prometheus's
//! durations in `promflow_config`.)

/// Parses a number token as Prometheus does: as a Go integer literal (hex, octal with a
/// leading zero, underscores), else as a Go float. The error is Go's `strconv` message.
pub(crate) fn parse_number(s: &str) -> Result<f64, String> {
    if let Some(i) = parse_int(s) {
        return Ok(i as f64);
    }
    parse_float(s).map_err(|why| format!("strconv.ParseFloat: parsing {}: {why}", quote(s)))
}

/// `strconv.ParseInt(s, 0, 64)` for an unsigned token; `None` for any error.
fn parse_int(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let (base, digits) = match (b.first(), b.get(1).map(u8::to_ascii_lowercase)) {
        (Some(b'0'), Some(b'x')) if b.len() >= 3 => (16, &s[2..]),
        (Some(b'0'), Some(b'b')) if b.len() >= 3 => (2, &s[2..]),
        (Some(b'0'), Some(b'o')) if b.len() >= 3 => (8, &s[2..]),
        (Some(b'0'), _) => (8, &s[1..]),
        _ => (10, s),
    };
    if s.contains('_') && !underscores_ok(s) {
        return None;
    }
    let mut n: u64 = 0;
    for c in digits.chars().filter(|&c| c != '_') {
        let d = c.to_digit(base)? as u64;
        n = n.checked_mul(base as u64)?.checked_add(d)?;
    }
    i64::try_from(n).ok()
}

/// Go's rule for digit separators: each `_` sits between digits (or after a base prefix).
fn underscores_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let (mut i, mut saw, hex) = if b.len() >= 2 && b[0] == b'0' && matches!(b[1] | 0x20, b'b' | b'o' | b'x') {
        (2, b'0', b[1] | 0x20 == b'x')
    } else {
        (0, b'^', false)
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// `strconv.ParseFloat(s, 64)` for the decimal forms the lexer can produce.
fn parse_float(s: &str) -> Result<f64, &'static str> {
    match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => return Ok(f64::INFINITY),
        "-inf" | "-infinity" => return Ok(f64::NEG_INFINITY),
        "nan" => return Ok(f64::NAN),
        _ => {}
    }
    let digits_only =
        |t: &str| t.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'));
    // hex floats need a `p` exponent, which the lexer never lets through
    if s.len() > 1 && s.as_bytes()[1] | 0x20 == b'x' || (s.contains('_') && !underscores_ok(s)) {
        return Err("invalid syntax");
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    if !digits_only(&plain) {
        return Err("invalid syntax");
    }
    match plain.parse::<f64>() {
        Ok(v) if v.is_infinite() => Err("value out of range"),
        Ok(v) => Ok(v),
        Err(_) => Err("invalid syntax"),
    }
}

/// A Prometheus duration literal (`1h30m`) in nanoseconds, with Prometheus's errors.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    promflow_config::parse_duration(s).map(|d| d.as_nanos() as i64).map_err(|e| e.to_string())
}

/// Prometheus's text of a duration of `ns` nanoseconds, negative ones included (`-1m30s`).
pub(crate) fn format_duration(ns: i64) -> String {
    let text = promflow_config::format_duration(std::time::Duration::from_nanos(ns.unsigned_abs()));
    if ns < 0 && text != "0s" {
        format!("-{text}")
    } else {
        text
    }
}

/// Whether Go's `unicode.IsPrint` holds, close enough for quoting: controls, separators
/// other than the ASCII space and invisible format characters are escaped.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}'
        | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{e000}'..='\u{f8ff}')
}

fn push_escaped(out: &mut String, c: char, quote: char) {
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        // U+FFFD stands for bytes that were not UTF-8 (see `unquote`); escaped, it parses back
        c if is_print(c) && c != '\u{fffd}' => out.push(c),
        c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

/// Go's `strconv.Quote` (and `%q` of a string).
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_escaped(&mut out, c, '"');
    }
    out.push('"');
    out
}

/// Go's `%q` of a string that may not be UTF-8: the bytes that are not written `\xNN`.
pub(crate) fn quote_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() + 2);
    out.push('"');
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped(&mut out, c, '"');
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of a rune.
pub(crate) fn quote_rune(c: char) -> String {
    let mut out = String::from("'");
    push_escaped(&mut out, c, '\'');
    out.push('\'');
    out
}

/// Go's `%#U` of a rune: `U+0063 'c'`.
pub(crate) fn sharp_u(c: char) -> String {
    if is_print(c) {
        format!("U+{:04X} '{c}'", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// The bytes a string token (quotes included, validated by the lexer) stands for, as Go
/// keeps them: they need not be UTF-8.
pub(crate) fn unquote_bytes(token: &str) -> Vec<u8> {
    let body = &token[1..token.len() - 1];
    if token.starts_with('`') {
        return body.as_bytes().to_vec();
    }
    promflow_storage::gofmt::unescape_bytes(body)
}

/// Decodes a string token (quotes included) that the lexer has already validated.
pub(crate) fn unquote(token: &str) -> String {
    // the quotes are ASCII and the lexer guarantees both are there
    let body = &token[1..token.len() - 1];
    if token.starts_with('`') {
        return body.to_string();
    }
    promflow_storage::gofmt::unescape(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_go() {
        assert_eq!(parse_number("0x1F"), Ok(31.0));
        assert_eq!(parse_number("010"), Ok(8.0));
        assert_eq!(parse_number("09"), Ok(9.0));
        assert_eq!(parse_number("1_000"), Ok(1000.0));
        assert_eq!(parse_number("1e3"), Ok(1000.0));
        assert_eq!(parse_number(".5"), Ok(0.5));
        assert_eq!(parse_number("2."), Ok(2.0));
        assert!(parse_number("inF").unwrap().is_infinite());
        assert!(parse_number("NaN").unwrap().is_nan());
        assert_eq!(
            parse_number("1e400"),
            Err("strconv.ParseFloat: parsing \"1e400\": value out of range".into())
        );
    }

    #[test]
    fn durations_follow_prometheus() {
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("5m1h"), Err("not a valid duration string: \"5m1h\"".into()));
        assert_eq!(parse_duration("5y1hs"), Err("unknown unit \"hs\" in duration \"5y1hs\"".into()));
        assert_eq!(format_duration(5_400_000_000_000), "1h30m");
        assert_eq!(format_duration(90 * 86_400_000_000_000), "90d");
        assert_eq!(format_duration(14 * 86_400_000_000_000), "2w");
        assert_eq!(format_duration(1_500_000_000), "1s500ms");
        assert_eq!(format_duration(-60_000_000_000), "-1m");
        assert_eq!(format_duration(0), "0s");
    }

    #[test]
    fn formatting_follows_go() {
        assert_eq!(quote("a\"b\\\n\u{7}é"), "\"a\\\"b\\\\\\n\\aé\"");
        assert_eq!(quote_rune('\''), "'\\''");
        assert_eq!(quote(&unquote(r#""a\xc5z""#)), r#""a\ufffdz""#);
        assert_eq!(quote_bytes(&unquote_bytes(r#""a\xc5z\n""#)), r#""a\xc5z\n""#);
        assert_eq!(sharp_u('c'), "U+0063 'c'");
    }

    #[test]
    fn unquotes_go_escapes() {
        assert_eq!(unquote(r#""a\tb\x41\101\u00e9""#), "a\tbAAé");
        assert_eq!(unquote(r"'it\'s'"), "it's");
        assert_eq!(unquote(r"`raw\n`"), r"raw\n");
        assert_eq!(unquote(r#""\xc3\xa9""#), "é");
    }
}
