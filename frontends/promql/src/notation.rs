//! The series notation of PromQL test scripts and promtool's rule unit tests:
//! `name{label="value"}` descriptions and expanding value lists (`1+2x3`, `_x2`, `stale`),
//! and the start-timestamp offsets of a test script's `name{…}@st` lines.

use promflow_storage::native_histogram::{CounterResetHint, FloatHistogram, Span};
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

/// One slot of a series: a value, a staleness marker, a native histogram, or nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    /// A float sample.
    Value(f64),
    /// A staleness marker (`stale`).
    Stale,
    /// A native histogram (`{{…}}`).
    Histogram(std::sync::Arc<FloatHistogram>),
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
            out.extend(histograms(item)?.into_iter().map(|h| Slot::Histogram(h.into())));
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

/// A signed duration at the start of `s` (`-30s`, `+1m`, `59999ms`, `0`) in milliseconds,
/// and the rest of `s`.
fn duration_prefix(s: &str) -> Option<(i64, &str)> {
    let (sign, body) = match s.as_bytes().first()? {
        b'-' => (-1, &s[1..]),
        b'+' => (1, &s[1..]),
        _ => (1, s),
    };
    // digits and unit letters; `x` (a repeat count) ends it
    let len = body.find(|c: char| !(c.is_ascii_digit() || "smhdwy".contains(c))).unwrap_or(body.len());
    let text = &body[..len];
    let ms = match text {
        "" => return None,
        "0" => 0,
        _ => i64::try_from(promflow_config::parse_duration(text).ok()?.as_millis()).ok()?,
    };
    Some((sign * ms, &body[len..]))
}

/// Expands the items of a test script's `@st` line: each slot's start timestamp as an offset
/// in milliseconds from the sample's own timestamp, `None` for `_`. Items are `_`, `_xN`,
/// `D`, `DxN` (N+1 times D) and `D+ExN` or `D-ExN` (D, then E added or subtracted N times),
/// with D and E signed durations; `None` for an item that is not valid notation.
pub fn start_offsets(text: &str) -> Option<Vec<Option<i64>>> {
    let mut out = Vec::new();
    for item in text.split_whitespace() {
        if item == "_" {
            out.push(None);
            continue;
        }
        if let Some(k) = item.strip_prefix("_x") {
            out.extend(std::iter::repeat_n(None, k.parse().ok()?));
            continue;
        }
        let (base, rest) = duration_prefix(item)?;
        let (step, count) = match rest.as_bytes().first() {
            None => (0, 0),
            Some(b'x') => (0, rest[1..].parse().ok()?),
            Some(b'+' | b'-') => {
                let (step, rest) = duration_prefix(rest)?;
                (step, rest.strip_prefix('x')?.parse().ok()?)
            }
            Some(_) => return None,
        };
        out.extend((0..=count).map(|i: i64| Some(base + i * step)));
    }
    Some(out)
}

/// The histograms of one value item: `{{…}}`, `{{…}}xK` (K+1 times the same), or
/// `{{A}}+{{B}}xK` and `{{A}}-{{B}}xK` (A, then B added or subtracted K times); `None` for
/// an item that is not valid notation.
pub fn histograms(item: &str) -> Option<Vec<FloatHistogram>> {
    let rest = item.strip_prefix("{{")?;
    let (first, rest) = rest.split_once("}}")?;
    let first = histogram(first)?;
    if rest.is_empty() {
        return Some(vec![first]);
    }
    if let Some(k) = rest.strip_prefix('x') {
        return Some(vec![first; k.parse::<usize>().ok()? + 1]);
    }
    let (sign, rest) = match rest.as_bytes().first()? {
        b'+' => (1.0, &rest[1..]),
        b'-' => (-1.0, &rest[1..]),
        _ => return None,
    };
    let (step, k) = rest.strip_prefix("{{")?.split_once("}}x")?;
    let (step, k) = (histogram(step)?, k.parse::<usize>().ok()?);
    let mut out = Vec::with_capacity(k + 1);
    let mut current = first;
    for _ in 0..k {
        let next = if sign > 0.0 { current.add(&step) } else { current.sub(&step) }.ok()?.0;
        out.push(std::mem::replace(&mut current, next));
    }
    out.push(current);
    Some(out)
}

/// One histogram's fields, the text between `{{` and `}}`: `schema:0 sum:5 count:4
/// z_bucket:1 z_bucket_w:0.001 buckets:[1 2 1] offset:1 n_buckets:[…] n_offset:…
/// custom_values:[…] counter_reset_hint:gauge`, each optional (an empty histogram is `{{}}`).
pub fn histogram(text: &str) -> Option<FloatHistogram> {
    let (mut schema, mut sum, mut count, mut zero_count, mut zero_threshold) = (0, 0.0, 0.0, 0.0, 0.0);
    let (mut positive, mut negative, mut custom) = (Vec::new(), Vec::new(), Vec::new());
    let (mut offset, mut negative_offset, mut hint) = (0, 0, CounterResetHint::Unknown);
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once(':')?;
        let (value, after) = match after.strip_prefix('[') {
            Some(list) => {
                let (list, after) = list.split_once(']')?;
                (list, after)
            }
            None => after.split_once(char::is_whitespace).unwrap_or((after, "")),
        };
        let numbers = || value.split_whitespace().map(number).collect::<Option<Vec<f64>>>();
        match key.trim() {
            "schema" => schema = value.parse().ok()?,
            "sum" => sum = number(value)?,
            "count" => count = number(value)?,
            "z_bucket" => zero_count = number(value)?,
            "z_bucket_w" => zero_threshold = number(value)?,
            "offset" => offset = value.parse().ok()?,
            "n_offset" => negative_offset = value.parse().ok()?,
            "buckets" => positive = numbers()?,
            "n_buckets" => negative = numbers()?,
            "custom_values" => custom = numbers()?,
            "counter_reset_hint" => {
                hint = match value {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::CounterReset,
                    "not_reset" => CounterResetHint::NotCounterReset,
                    "gauge" => CounterResetHint::Gauge,
                    _ => return None,
                }
            }
            _ => return None,
        }
        rest = after.trim_start();
    }
    let span = |offset: i32, buckets: &[f64]| [Span { offset, length: buckets.len() as u32 }];
    let (positive_spans, negative_spans) = (span(offset, &positive), span(negative_offset, &negative));
    let mut h = FloatHistogram::from_spans(
        schema,
        zero_threshold,
        zero_count,
        count,
        sum,
        (&positive_spans, &positive),
        (&negative_spans, &negative),
        custom,
    )
    .ok()?;
    h.hint = hint;
    Some(h)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_read_with_every_field() {
        let h = histogram("schema:1 sum:-0.3 count:3.1 z_bucket:7.1 z_bucket_w:0.05 buckets:[5.1 10 7] offset:-3 n_buckets:[4.1 5] n_offset:-5 counter_reset_hint:gauge").unwrap();
        assert_eq!((h.schema, h.sum, h.count, h.zero_count, h.zero_threshold), (1, -0.3, 3.1, 7.1, 0.05));
        assert_eq!(h.positive_buckets(), &[(-3, 5.1), (-2, 10.0), (-1, 7.0)]);
        assert_eq!(h.negative_buckets(), &[(-5, 4.1), (-4, 5.0)]);
        assert_eq!(h.hint, CounterResetHint::Gauge);
        let custom = histogram("schema:-53 sum:1 count:1 custom_values:[5 10] buckets:[1]").unwrap();
        assert!(custom.uses_custom_buckets());
        assert_eq!(custom.custom_bounds(), &[5.0, 10.0]);
        assert_eq!(histogram(""), Some(FloatHistogram::default()));
        assert_eq!(histogram("schema:0 colour:3"), None);
        assert_eq!(histogram("buckets:[1 2"), None);
    }

    #[test]
    fn start_offsets_expand_like_values_in_durations() {
        let s = 1000;
        assert_eq!(
            start_offsets("_ -30s-1mx2 +1m 0 -0ms 59999msx1 _x2"),
            Some(vec![
                None,
                Some(-30 * s),
                Some(-90 * s),
                Some(-150 * s),
                Some(60 * s),
                Some(0),
                Some(0),
                Some(59_999),
                Some(59_999),
                None,
                None
            ])
        );
        assert_eq!(start_offsets("1ms+1msx1"), Some(vec![Some(1), Some(2)]));
        assert_eq!(start_offsets("1q"), None);
        assert_eq!(start_offsets("-1m+"), None);
    }

    #[test]
    fn histogram_series_expand_by_repetition_and_by_steps() {
        assert_eq!(histograms("{{schema:0 sum:10 count:10}}x2").unwrap().len(), 3);
        let up =
            histograms("{{schema:0 count:1 sum:1 buckets:[1] offset:1}}+{{count:2 sum:3 buckets:[2]}}x2")
                .unwrap();
        let counts: Vec<f64> = up.iter().map(|h| h.count).collect();
        assert_eq!(counts, [1.0, 3.0, 5.0]);
        // the step's bucket 0 and the start's bucket 1 are both kept
        assert_eq!(up[2].positive_buckets(), &[(0, 4.0), (1, 1.0)]);
        let down = histograms("{{count:5 sum:5}}-{{count:1 sum:1}}x3").unwrap();
        assert_eq!(down.last().unwrap().count, 2.0);
        assert_eq!(histograms("{{count:1}}*{{count:1}}x2"), None);
        assert_eq!(expand("1 {{count:1}}x2 _").unwrap().len(), 5);
    }
}
