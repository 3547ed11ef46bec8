//! Lexing helpers, number parsing and sample assembly shared by the text and OpenMetrics parsers.

use std::borrow::Cow;
use std::collections::HashMap;

use promflow_storage::{Labels, METRIC_NAME};

use super::{MetricMetadata, MetricType, ParseError, Place};

/// A byte cursor over the whole body. Positions are byte offsets; line numbers are computed
/// only when an error is reported.
pub(super) struct Cursor<'a> {
    pub b: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b, pos: 0 }
    }

    pub fn eof(&self) -> bool {
        self.pos >= self.b.len()
    }

    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    pub fn peek_at(&self, off: usize) -> Option<u8> {
        self.b.get(self.pos + off).copied()
    }

    pub fn starts_with(&self, s: &[u8]) -> bool {
        self.b.get(self.pos..).is_some_and(|rest| rest.starts_with(s))
    }

    /// Skips spaces and tabs; returns how many bytes were skipped.
    pub fn skip_blanks(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Reads `[a-zA-Z_:][a-zA-Z0-9_:]*` (a legacy metric name) if one starts here.
    pub fn legacy_metric_name(&mut self) -> Option<&'a str> {
        self.ident(is_metric_name_start, is_metric_name_char)
    }

    /// Reads `[a-zA-Z_][a-zA-Z0-9_]*` (a legacy label name) if one starts here.
    pub fn legacy_label_name(&mut self) -> Option<&'a str> {
        self.ident(is_label_name_start, is_label_name_char)
    }

    fn ident(&mut self, start: fn(u8) -> bool, rest: fn(u8) -> bool) -> Option<&'a str> {
        let b = self.b;
        let begin = self.pos;
        if !self.peek().is_some_and(start) {
            return None;
        }
        self.pos += 1;
        while self.peek().is_some_and(rest) {
            self.pos += 1;
        }
        // Only ASCII bytes were accepted, so this cannot fail.
        std::str::from_utf8(&b[begin..self.pos]).ok()
    }

    /// Reads a double-quoted string (`"(\\.|[^\\"])*"`) starting at the cursor and returns its raw
    /// (still escaped) contents. A backslash may escape any byte but a newline; a raw newline is
    /// allowed inside only when `allow_newline` is set. On failure the cursor does not move.
    pub fn quoted(&mut self, allow_newline: bool) -> Option<&'a [u8]> {
        let b = self.b;
        if self.peek() != Some(b'"') {
            return None;
        }
        let mut i = self.pos + 1;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    let inner = &b[self.pos + 1..i];
                    self.pos = i + 1;
                    return Some(inner);
                }
                b'\\' => match b.get(i + 1) {
                    Some(b'\n') | None => return None,
                    Some(_) => i += 2,
                },
                b'\n' if !allow_newline => return None,
                _ => i += 1,
            }
        }
        None
    }

    /// Advances to the next `\n` (or the end) and returns the bytes skipped.
    pub fn rest_of_line(&mut self) -> &'a [u8] {
        let b = self.b;
        let start = self.pos;
        let end = memchr(b'\n', &b[start..]).map_or(b.len(), |i| start + i);
        self.pos = end;
        &b[start..end]
    }

    /// Advances while `pred` holds and returns the bytes skipped.
    pub fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let b = self.b;
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        &b[start..self.pos]
    }

    /// A short, printable description of what is at `pos`, for error messages.
    pub fn describe(&self, pos: usize) -> String {
        match self.b.get(pos) {
            None => "end of input".to_string(),
            Some(b'\n') => "newline".to_string(),
            Some(_) => {
                let rest = &self.b[pos..];
                let mut end = 1;
                while end < rest.len() && end < 16 && !matches!(rest[end], b' ' | b'\t' | b'\n') {
                    end += 1;
                }
                format!("{:?}", String::from_utf8_lossy(&rest[..end]))
            }
        }
    }

    /// An error located at byte `pos`.
    /// Reads a label name inside braces, quoted (UTF-8) or legacy, returning it and whether
    /// it was quoted; `None` when the braces close instead (the cursor is then past `}`).
    pub fn label_name(&mut self, allow_newline: bool) -> Result<Option<(Cow<'a, str>, bool)>, ParseError> {
        let npos = self.pos;
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                Ok(None)
            }
            Some(b'"') => match self.quoted(allow_newline) {
                Some(raw) => decode_quoted(raw)
                    .map(|n| Some((n, true)))
                    .ok_or_else(|| self.error_at(npos, "quoted name is not valid UTF-8")),
                None => Err(self.unexpected(npos, "unterminated quoted name")),
            },
            _ => match self.legacy_label_name() {
                Some(n) => Ok(Some((Cow::Borrowed(n), false))),
                None => Err(self.unexpected(npos, "expected label name or '}'")),
            },
        }
    }

    pub fn error_at(&self, pos: usize, message: impl Into<String>) -> ParseError {
        ParseError { place: Place::Line(line_of(self.b, pos)), message: message.into() }
    }

    /// "`expected`, got `<what is at pos>`".
    pub fn unexpected(&self, pos: usize, expected: &str) -> ParseError {
        self.error_at(pos, format!("{expected}, got {}", self.describe(pos)))
    }
}

/// The 1-based line holding byte `pos`. The end of a body that ends in `\n` counts as its last
/// line, so that "missing # EOF" points at the last line rather than past it.
pub(super) fn line_of(b: &[u8], pos: usize) -> usize {
    let pos = pos.min(b.len());
    let mut line = 1 + b[..pos].iter().filter(|&&c| c == b'\n').count();
    if pos == b.len() && pos > 0 && b[pos - 1] == b'\n' {
        line -= 1;
    }
    line
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == needle)
}

pub(super) fn is_metric_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

pub(super) fn is_metric_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn is_label_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_label_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Which escapes a string honours.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Escapes {
    /// `\\`, `\"` and `\n` (label values, quoted names, OpenMetrics HELP).
    LabelValue,
    /// `\\` and `\n` only (text-format HELP).
    Help,
}

/// Undoes escapes left to right, like Go's `strings.Replacer`: an unknown escape such as `\t`
/// is kept verbatim. Borrows when there is nothing to replace.
pub(super) fn unescape(s: &str, escapes: Escapes) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    if !bytes.contains(&b'\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let rep = match bytes.get(i + 1) {
                Some(b'\\') => Some('\\'),
                Some(b'n') => Some('\n'),
                Some(b'"') if escapes == Escapes::LabelValue => Some('"'),
                _ => None,
            };
            if let Some(r) = rep {
                // `i` and `i + 2` sit next to ASCII bytes, so both are char boundaries.
                out.push_str(&s[last..i]);
                out.push(r);
                i += 2;
                last = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

/// Validates UTF-8 and undoes label-value escapes.
pub(super) fn decode_quoted(raw: &[u8]) -> Option<Cow<'_, str>> {
    std::str::from_utf8(raw).ok().map(|s| unescape(s, Escapes::LabelValue))
}

/// Parses a number the way Prometheus's parsers do: Go's `strconv.ParseFloat` on decimal syntax
/// (`NaN`, `Inf`, `+Inf`, `-Infinity`, ... case-insensitively; no sign on NaN), with hex floats and
/// digit underscores refused, and magnitudes beyond `f64` an error rather than infinity.
pub(super) fn parse_float(s: &[u8]) -> Result<f64, String> {
    if s.iter().any(|c| matches!(c, b'p' | b'P' | b'_')) {
        return Err(format!("unsupported character in float {:?}", String::from_utf8_lossy(s)));
    }
    go_parse_float(s).ok_or_else(|| {
        let shown = String::from_utf8_lossy(s);
        if is_decimal_syntax(s) {
            format!("float value {shown:?} out of range")
        } else if s.ends_with(b"\r") {
            format!("invalid float syntax {shown:?} (lines must end with \\n, not \\r\\n)")
        } else {
            format!("invalid float syntax {shown:?}")
        }
    })
}

/// Go's `ParseFloat` for decimal and special syntax; `None` on syntax or range errors.
pub(super) fn go_parse_float(s: &[u8]) -> Option<f64> {
    if let Some(v) = special_float(s) {
        return Some(v);
    }
    if !is_decimal_syntax(s) {
        return None;
    }
    let v: f64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    if v.is_infinite() {
        return None; // Go reports ErrRange
    }
    Some(v)
}

fn special_float(s: &[u8]) -> Option<f64> {
    let (sign, body) = match s.first() {
        Some(b'+') => (1.0, &s[1..]),
        Some(b'-') => (-1.0, &s[1..]),
        _ => (1.0, s),
    };
    if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        return Some(sign * f64::INFINITY);
    }
    if body.len() == s.len() && body.eq_ignore_ascii_case(b"nan") {
        return Some(f64::NAN);
    }
    None
}

/// `[+-]? (D+ (. D*)? | . D+) ([eE] [+-]? D+)?`
fn is_decimal_syntax(s: &[u8]) -> bool {
    let mut i = 0;
    if matches!(s.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_digits = s[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = s[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return false;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = s[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits == 0 {
            return false;
        }
        i += exp_digits;
    }
    i == s.len()
}

/// Prometheus 3 rewrites the `le` label of classic histograms and the `quantile` label of
/// summaries to canonical float text (`le="1"` becomes `le="1.0"`). The type is the one of the
/// most recent `# TYPE` line, exactly as Prometheus's parsers track it; values that do not parse
/// as a float are left alone.
pub(super) fn normalize_label_value<'v>(mtype: MetricType, name: &str, value: Cow<'v, str>) -> Cow<'v, str> {
    let applies = (mtype == MetricType::Histogram && name == "le")
        || (mtype == MetricType::Summary && name == "quantile");
    if !applies {
        return value;
    }
    match go_parse_float(value.as_bytes()) {
        Some(f) => {
            let s = promflow_storage::gofmt::format_openmetrics_float(f);
            if s == value {
                value
            } else {
                Cow::Owned(s)
            }
        }
        None => value,
    }
}

/// The metric name and label pairs of one sample line while it is being parsed.
#[derive(Default)]
pub(super) struct SeriesScratch<'a> {
    pub name: Option<Cow<'a, str>>,
    pub labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> SeriesScratch<'a> {
    pub fn reset(&mut self) {
        self.name = None;
        self.labels.clear();
    }

    /// Validates the series (non-empty names, no duplicate label names), normalises `le` /
    /// `quantile` and builds the label set. Errors are messages without a line.
    pub fn finish(&mut self, mtype: MetricType) -> Result<Labels, String> {
        let name = match self.name.take() {
            Some(n) if !n.is_empty() => n,
            Some(_) => return Err("metric name is empty".to_string()),
            None => return Err("metric name not set".to_string()),
        };
        for (i, (n, _)) in self.labels.iter().enumerate() {
            if n.is_empty() {
                return Err("label name is empty".to_string());
            }
            if n == METRIC_NAME || self.labels[..i].iter().any(|(m, _)| m == n) {
                return Err(format!("duplicate label name {n:?}"));
            }
        }
        let pairs =
            std::iter::once((Cow::Borrowed(METRIC_NAME), name)).chain(self.labels.drain(..).map(|(n, v)| {
                let v = normalize_label_value(mtype, &n, v);
                (n, v)
            }));
        Ok(Labels::from_pairs(pairs))
    }
}

/// Collects HELP / TYPE / UNIT lines into one [`MetricMetadata`] per family, in order of first
/// appearance; a later line for the same family overrides the earlier value.
#[derive(Default)]
pub(super) struct MetadataSet {
    list: Vec<MetricMetadata>,
    index: HashMap<String, usize>,
}

impl MetadataSet {
    pub fn entry(&mut self, family: &str) -> &mut MetricMetadata {
        let i = match self.index.get(family) {
            Some(&i) => i,
            None => {
                self.list.push(MetricMetadata {
                    family: family.to_string(),
                    metric_type: MetricType::Unknown,
                    help: String::new(),
                    unit: String::new(),
                });
                self.index.insert(family.to_string(), self.list.len() - 1);
                self.list.len() - 1
            }
        };
        &mut self.list[i]
    }

    pub fn into_vec(self) -> Vec<MetricMetadata> {
        self.list
    }
}

/// Canonical NaN for parsed values: scraped NaNs must never look like a staleness marker.
pub(super) fn canonical(v: f64) -> f64 {
    if v.is_nan() {
        f64::NAN
    } else {
        v
    }
}
