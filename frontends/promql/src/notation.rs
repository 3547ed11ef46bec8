//! The series notation of PromQL test scripts and promtool's rule unit tests:
//! `name{label="value"}` descriptions and expanding value lists (`1+2x3`, `_x2`, `stale`).

use promflow_storage::Labels;

/// A value as the notation writes it: decimal, `0x` hex, `Inf`, `NaN`, with a sign.
pub fn number(s: &str) -> Option<f64> {
    let l = s.to_ascii_lowercase();
    let (sign, rest) = match l.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, l.strip_prefix('+').unwrap_or(&l)),
    };
    match rest {
        "inf" | "infinity" => Some(sign * f64::INFINITY),
        "nan" => Some(f64::NAN),
        _ => {
            if let Some(hex) = rest.strip_prefix("0x") {
                return i64::from_str_radix(hex, 16).ok().map(|v| sign * v as f64);
            }
            rest.parse::<f64>().ok().map(|v| sign * v)
        }
    }
}

/// One slot of a series: a value, a staleness marker, a native histogram (not supported by
/// promflow yet: not loaded, and never matching an expectation), or nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Slot {
    /// A float sample.
    Value(f64),
    /// A staleness marker (`stale`).
    Stale,
    /// A native histogram (`{{…}}`).
    Histogram,
    /// No sample (`_`).
    Empty,
}

/// Splits value items on whitespace, keeping each `{{…}}` histogram (with what follows it,
/// such as `x3` or `+{{…}}x2`) as one item.
fn items(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '{' && chars.peek() == Some(&'{') {
            depth += 1;
        } else if c == '}' && chars.peek() == Some(&'}') && depth > 0 {
            depth -= 1;
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Expands a series' value items (`1+1x3`, `_x2`, `stale`, `{{…}}`, …); `None` for an item
/// that is not valid notation.
pub fn expand(text: &str) -> Option<Vec<Slot>> {
    let mut out = Vec::new();
    for item in items(text) {
        let item = item.as_str();
        if item.contains("{{") {
            // a histogram, or a series of them: `{{…}}xK` or `{{…}}+{{…}}xK` is K+1 slots
            let k = item.rsplit_once("}}x").and_then(|(_, k)| k.parse::<usize>().ok()).unwrap_or(0);
            out.extend(std::iter::repeat_n(Slot::Histogram, k + 1));
            continue;
        }
        if item == "_" {
            out.push(Slot::Empty);
            continue;
        }
        if item == "stale" {
            out.push(Slot::Stale);
            continue;
        }
        if let Some(k) = item.strip_prefix("_x") {
            out.extend(std::iter::repeat_n(Slot::Empty, k.parse().ok()?));
            continue;
        }
        match item.rsplit_once('x') {
            Some((lhs, k)) if !lhs.is_empty() && k.chars().all(|c| c.is_ascii_digit()) && !k.is_empty() => {
                let k: usize = k.parse().ok()?;
                // find the operator of A+B / A-B: a sign not at the start and not an exponent's
                let bytes = lhs.as_bytes();
                let op = (1..bytes.len()).find(|&i| {
                    (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E')
                });
                let (a, b) = match op {
                    Some(i) => {
                        let a = number(&lhs[..i])?;
                        let b = number(&lhs[i + 1..])?;
                        (a, if bytes[i] == b'-' { -b } else { b })
                    }
                    None => (number(lhs)?, 0.0),
                };
                let mut v = a;
                for _ in 0..=k {
                    out.push(Slot::Value(v));
                    v += b;
                }
            }
            _ => out.push(Slot::Value(number(item)?)),
        }
    }
    Some(out)
}

/// Reads a Go-quoted string starting at `s[0] == '"'` or a backquote; returns it and the rest.
pub fn quoted(s: &str) -> Option<(String, &str)> {
    let q = s.chars().next()?;
    let body = &s[q.len_utf8()..];
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && q != '`' {
            escaped = true;
        } else if c == q {
            let text =
                if q == '`' { body[..i].to_string() } else { promflow_storage::gofmt::unescape(&body[..i]) };
            return Some((text, &body[i + c.len_utf8()..]));
        }
    }
    None
}

/// Parses `name{a="b", "c.d"="e"}` (or `{...}` or a bare name) at the start of `s`; returns
/// the labels and the rest of the line.
pub fn series_desc(s: &str) -> Option<(Labels, &str)> {
    let s = s.trim_start();
    // `name@st` (a start-timestamp line) ends the name at the `@`
    let name_end = s.find(|c: char| c == '{' || c == '@' || c.is_whitespace()).unwrap_or(s.len());
    let name = &s[..name_end];
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !name.is_empty() {
        pairs.push(("__name__".into(), name.to_string()));
    }
    let mut rest = &s[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut r = body.trim_start();
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = if r.starts_with('"') {
                quoted(r)?
            } else {
                let end = r.find(|c: char| c == '=' || c == ',' || c == '}' || c.is_whitespace())?;
                (r[..end].to_string(), &r[end..])
            };
            let after = after.trim_start();
            if let Some(v) = after.strip_prefix('=') {
                let (value, after) = quoted(v.trim_start())?;
                pairs.push((label, value));
                r = after.trim_start();
            } else {
                // a lone quoted string is the metric name
                pairs.push(("__name__".into(), label));
                r = after;
            }
            r = r.trim_start();
            if let Some(after) = r.strip_prefix(',') {
                r = after.trim_start();
            }
        }
    }
    Some((Labels::from_pairs(pairs), rest))
}
