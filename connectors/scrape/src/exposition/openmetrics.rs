//! OpenMetrics 1.0 text, parsed as strictly as Prometheus's `OpenMetricsParser`:
//!
//! * exactly one space between tokens, none at the start or end of a line, no blank lines;
//! * the only comments are `# HELP`, `# TYPE`, `# UNIT` and the final `# EOF` (optionally
//!   followed by one `\n`), after which nothing may follow; a body without `# EOF` is an error;
//! * no blanks inside braces; labels are separated by single commas (a trailing one is allowed);
//! * timestamps are float seconds (converted to milliseconds, truncating toward zero);
//! * a sample may end in an exemplar, ` # {labels} value [timestamp]`, kept with the sample;
//! * `_created`, `_gcount`, `_info`, ... samples are kept as ordinary series, as Prometheus does
//!   without its start-timestamp features.

use std::borrow::Cow;

use super::common::{
    canonical, decode_quoted, is_metric_name_start, parse_float, unescape, Cursor, Escapes, MetadataSet,
    SeriesScratch,
};
use super::{Exposition, MetricType, ParseError, ParsedExemplar, ParsedSample};

/// Parses an OpenMetrics body.
pub(super) fn parse(body: &[u8]) -> Result<Exposition, ParseError> {
    let mut samples = Vec::with_capacity(body.len() / 64);
    let metadata = parse_each(body, &mut |s| samples.push(s))?;
    Ok(Exposition { samples, metadata, histograms: Vec::new() })
}

/// Parses an OpenMetrics body, handing each sample to `sink` as it is read; returns the
/// metadata. On error, `sink` has seen the samples before the bad line.
pub(super) fn parse_each(
    body: &[u8],
    sink: &mut dyn FnMut(ParsedSample),
) -> Result<Vec<super::MetricMetadata>, ParseError> {
    let mut p = Parser {
        c: Cursor::new(body),
        mtype: MetricType::Unknown,
        meta: MetadataSet::default(),
        sink,
        scratch: SeriesScratch::default(),
        exemplar_labels: Vec::new(),
        exemplar: None,
    };
    loop {
        let pos = p.c.pos;
        match p.c.peek() {
            None => return Err(p.missing_eof()),
            Some(b'#') => {
                if p.hash_line()? {
                    break;
                }
            }
            Some(c) if c == b'{' || is_metric_name_start(c) => p.sample_line()?,
            Some(b'\n') => return Err(p.c.error_at(pos, "blank lines are not allowed in OpenMetrics")),
            Some(b' ' | b'\t') => {
                return Err(p.c.error_at(pos, "lines must not start with whitespace in OpenMetrics"))
            }
            Some(_) => {
                return Err(p.c.unexpected(pos, "expected a metric name, '{' or '#' at the start of a line"))
            }
        }
    }
    Ok(p.meta.into_vec())
}

#[derive(Clone, Copy)]
enum Meta {
    Help,
    Type,
    Unit,
}

struct Parser<'a, 's> {
    c: Cursor<'a>,
    /// The type of the most recent `# TYPE` line (Prometheus never resets it).
    mtype: MetricType,
    meta: MetadataSet,
    sink: &'s mut dyn FnMut(ParsedSample),
    scratch: SeriesScratch<'a>,
    /// The labels of the exemplar being read.
    exemplar_labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The exemplar of the sample line being read.
    exemplar: Option<ParsedExemplar>,
}

impl<'a> Parser<'a, '_> {
    fn missing_eof(&self) -> ParseError {
        self.c.error_at(self.c.b.len(), "unexpected end of input: OpenMetrics data must end with \"# EOF\"")
    }

    /// A line starting with `#`. Returns true after a valid `# EOF`.
    fn hash_line(&mut self) -> Result<bool, ParseError> {
        let start = self.c.pos;
        const WANT: &str = "expected \"# HELP\", \"# TYPE\", \"# UNIT\" or \"# EOF\" (other comments are not allowed in OpenMetrics)";
        if self.c.peek_at(1) != Some(b' ') {
            return Err(self.c.unexpected(start, WANT));
        }
        self.c.pos += 2;
        let kind = if self.c.starts_with(b"HELP ") {
            Meta::Help
        } else if self.c.starts_with(b"TYPE ") {
            Meta::Type
        } else if self.c.starts_with(b"UNIT ") {
            Meta::Unit
        } else if self.c.starts_with(b"EOF") {
            self.c.pos += 3;
            if self.c.peek() == Some(b'\n') {
                self.c.pos += 1;
            }
            if !self.c.eof() {
                return Err(self.c.error_at(self.c.pos, "unexpected data after # EOF"));
            }
            return Ok(true);
        } else {
            return Err(self.c.unexpected(start, WANT));
        };
        self.c.pos += 5;
        let keyword = match kind {
            Meta::Help => "HELP",
            Meta::Type => "TYPE",
            Meta::Unit => "UNIT",
        };

        let npos = self.c.pos;
        let family: Cow<'a, str> = if let Some(n) = self.c.legacy_metric_name() {
            Cow::Borrowed(n)
        } else if let Some(raw) = self.c.quoted(true) {
            decode_quoted(raw).ok_or_else(|| self.c.error_at(npos, "metric name is not valid UTF-8"))?
        } else {
            return Err(self.c.unexpected(npos, &format!("expected metric name after {keyword}")));
        };
        if self.c.peek() != Some(b' ') {
            return Err(self
                .c
                .unexpected(self.c.pos, &format!("expected a space and text after the {keyword} name")));
        }
        self.c.pos += 1;
        let tpos = self.c.pos;
        let text = self.c.rest_of_line();
        if self.c.eof() {
            return Err(self.missing_eof());
        }
        self.c.pos += 1; // the '\n'

        match kind {
            Meta::Type => {
                let t = match text {
                    b"counter" => MetricType::Counter,
                    b"gauge" => MetricType::Gauge,
                    b"histogram" => MetricType::Histogram,
                    b"gaugehistogram" => MetricType::GaugeHistogram,
                    b"summary" => MetricType::Summary,
                    b"info" => MetricType::Info,
                    b"stateset" => MetricType::StateSet,
                    b"unknown" => MetricType::Unknown,
                    _ => {
                        return Err(self.c.error_at(
                            tpos,
                            format!(
                                "invalid metric type {:?} (want counter, gauge, histogram, gaugehistogram, \
                                 summary, info, stateset or unknown)",
                                String::from_utf8_lossy(text)
                            ),
                        ))
                    }
                };
                self.mtype = t;
                self.meta.entry(&family).metric_type = t;
            }
            Meta::Help => {
                let s = std::str::from_utf8(text)
                    .map_err(|_| self.c.error_at(tpos, "help text is not valid UTF-8"))?;
                self.meta.entry(&family).help = unescape(s, Escapes::LabelValue).into_owned();
            }
            Meta::Unit => {
                let unit = std::str::from_utf8(text)
                    .map_err(|_| self.c.error_at(tpos, "unit is not valid UTF-8"))?;
                if !unit.is_empty() {
                    let ok = family.strip_suffix(unit).is_some_and(|prefix| prefix.ends_with('_'));
                    if !ok {
                        return Err(self
                            .c
                            .error_at(tpos, format!("unit {unit:?} not a suffix of metric {family:?}")));
                    }
                }
                self.meta.entry(&family).unit = unit.to_string();
            }
        }
        Ok(false)
    }

    /// A sample line; the cursor is on its first byte. Ends just past the line's `\n`.
    fn sample_line(&mut self) -> Result<(), ParseError> {
        let line_start = self.c.pos;
        self.scratch.reset();
        if let Some(n) = self.c.legacy_metric_name() {
            self.scratch.name = Some(Cow::Borrowed(n));
        }
        if self.c.peek() == Some(b'{') {
            self.c.pos += 1;
            self.labels(false)?;
        }
        if self.scratch.name.is_none() {
            return Err(self.c.error_at(
                line_start,
                "metric name not set (put it before the braces or as a quoted string inside them)",
            ));
        }

        let (vpos, tok) = self.space_token("expected a single space and a value after the metric")?;
        let value = parse_float(tok).map_err(|m| self.c.error_at(vpos, m))?;

        let mut timestamp_ms = None;
        if !self.end_of_sample()? {
            let (tpos, tok) = self.space_token("expected timestamp or exemplar after value")?;
            let ts = parse_float(tok).map_err(|m| self.c.error_at(tpos, m))?;
            if !ts.is_finite() {
                return Err(self.c.error_at(tpos, format!("invalid timestamp {ts}")));
            }
            timestamp_ms = Some((ts * 1000.0) as i64);
            if !self.end_of_sample()? {
                return Err(self
                    .c
                    .unexpected(self.c.pos, "expected end of line or exemplar after timestamp"));
            }
        }

        let labels = self.scratch.finish(self.mtype).map_err(|m| self.c.error_at(line_start, m))?;
        let exemplar = self.exemplar.take();
        (self.sink)(ParsedSample { labels, timestamp_ms, value: canonical(value), start_ms: None, exemplar });
        Ok(())
    }

    /// After a value or timestamp: consumes `\n` or an exemplar plus its `\n` and returns true;
    /// returns false (cursor unmoved) when something else follows.
    fn end_of_sample(&mut self) -> Result<bool, ParseError> {
        match self.c.peek() {
            None => Err(self.missing_eof()),
            Some(b'\n') => {
                self.c.pos += 1;
                Ok(true)
            }
            Some(b' ') if self.c.starts_with(b" # {") => {
                self.c.pos += 4;
                self.exemplar()?;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// The exemplar after ` # {`, through the end of its line, kept for the sample.
    fn exemplar(&mut self) -> Result<(), ParseError> {
        self.exemplar_labels.clear();
        self.labels(true)?;
        let (vpos, tok) = self.space_token("expected a single space and a value after exemplar labels")?;
        let value = parse_float(tok).map_err(|m| self.c.error_at(vpos, format!("exemplar value: {m}")))?;
        let mut timestamp_ms = None;
        match self.c.peek() {
            None => return Err(self.missing_eof()),
            Some(b'\n') => {}
            Some(_) => {
                let (tpos, tok) = self.space_token("expected exemplar timestamp or end of line")?;
                let ts = parse_float(tok)
                    .map_err(|m| self.c.error_at(tpos, format!("exemplar timestamp: {m}")))?;
                if !ts.is_finite() {
                    return Err(self.c.error_at(tpos, format!("invalid exemplar timestamp {ts}")));
                }
                timestamp_ms = Some((ts * 1000.0) as i64);
                match self.c.peek() {
                    None => return Err(self.missing_eof()),
                    Some(b'\n') => {}
                    Some(_) => {
                        return Err(self
                            .c
                            .unexpected(self.c.pos, "expected end of line after exemplar timestamp"))
                    }
                }
            }
        }
        self.c.pos += 1; // the '\n'
        let labels = promflow_storage::Labels::from_pairs(self.exemplar_labels.drain(..));
        self.exemplar = Some(ParsedExemplar { labels, value: canonical(value), timestamp_ms });
        Ok(())
    }

    /// ` token`: one space, then one or more bytes other than space and `\n`.
    fn space_token(&mut self, expected: &str) -> Result<(usize, &'a [u8]), ParseError> {
        let pos = self.c.pos;
        if self.c.peek() != Some(b' ') {
            return Err(self.c.unexpected(pos, expected));
        }
        self.c.pos += 1;
        let tpos = self.c.pos;
        let tok = self.c.take_while(|b| b != b' ' && b != b'\n');
        if tok.is_empty() {
            return Err(self.c.unexpected(tpos, expected));
        }
        Ok((tpos, tok))
    }

    /// The inside of `{...}` (sample or exemplar labels); the cursor is just past the `{` and
    /// ends just past the `}`.
    fn labels(&mut self, exemplar: bool) -> Result<(), ParseError> {
        loop {
            let npos = self.c.pos;
            let Some((name, quoted)) = self.c.label_name(false)? else { return Ok(()) };
            if quoted && !exemplar && matches!(self.c.peek(), Some(b',' | b'}')) {
                // A lone quoted string is the metric name.
                if self.scratch.name.is_some() {
                    return Err(self.c.error_at(npos, "metric name already set"));
                }
                self.scratch.name = Some(name);
                if self.c.peek() == Some(b',') {
                    self.c.pos += 1;
                }
                continue;
            }
            if self.c.peek() != Some(b'=') {
                return Err(self.c.unexpected(self.c.pos, "expected '=' after label name"));
            }
            self.c.pos += 1;
            let vpos = self.c.pos;
            let Some(raw) = self.c.quoted(false) else {
                return Err(self.c.unexpected(vpos, "expected quoted label value"));
            };
            let value =
                decode_quoted(raw).ok_or_else(|| self.c.error_at(vpos, "label value is not valid UTF-8"))?;
            if exemplar {
                self.exemplar_labels.push((name, value));
            } else {
                self.scratch.labels.push((name, value));
            }
            match self.c.peek() {
                Some(b',') => self.c.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.c.unexpected(self.c.pos, "expected ',' or '}' after label value")),
            }
        }
    }
}
