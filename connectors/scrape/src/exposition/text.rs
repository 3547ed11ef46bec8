//! The Prometheus text format 0.0.4 / 1.0.0, parsed as leniently as Prometheus's `PromParser`:
//!
//! * tokens may be separated by any run of spaces and tabs, and lines may start or end with
//!   them; blank lines are skipped;
//! * `# HELP` and `# TYPE` lines are metadata (after `#` and at least one blank); every other
//!   line starting with `#` is a comment; a TYPE need not precede its samples;
//! * inside braces, blanks may surround every token, a trailing comma is allowed, and (as in
//!   Prometheus) the comma between two labels may even be left out;
//! * names are legacy (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or double-quoted UTF-8; a quoted string
//!   standing alone inside the braces is the metric name: `{"my.metric", "a.b"="c"}`;
//! * the value is Go float syntax, the optional timestamp integer milliseconds (a leading `-` is
//!   accepted, as the format's documentation allows, although Prometheus's lexer refuses it);
//! * like Prometheus, a `\r` before the `\n` is not tolerated (it ends up in the value or
//!   timestamp token and fails to parse).

use std::borrow::Cow;

use super::common::{
    canonical, decode_quoted, is_metric_name_start, parse_float, unescape, Cursor, Escapes, MetadataSet,
    SeriesScratch,
};
use super::{Exposition, MetricType, ParseError, ParsedSample};

/// Parses a text-format body.
pub(super) fn parse(body: &[u8]) -> Result<Exposition, ParseError> {
    let mut p = Parser {
        c: Cursor::new(body),
        mtype: MetricType::Unknown,
        meta: MetadataSet::default(),
        samples: Vec::with_capacity(body.len() / 64),
        scratch: SeriesScratch::default(),
    };
    loop {
        p.c.skip_blanks();
        match p.c.peek() {
            None => break,
            Some(b'\n') => p.c.pos += 1,
            Some(b'#') => p.comment_line()?,
            Some(c) if c == b'{' || is_metric_name_start(c) => p.sample_line()?,
            Some(_) => {
                return Err(p
                    .c
                    .unexpected(p.c.pos, "expected a metric name, '{' or '#' at the start of a line"))
            }
        }
    }
    Ok(Exposition { samples: p.samples, metadata: p.meta.into_vec(), histograms: Vec::new() })
}

#[derive(Clone, Copy)]
enum Meta {
    Help,
    Type,
}

struct Parser<'a> {
    c: Cursor<'a>,
    /// The type of the most recent `# TYPE` line (Prometheus never resets it).
    mtype: MetricType,
    meta: MetadataSet,
    samples: Vec<ParsedSample>,
    scratch: SeriesScratch<'a>,
}

impl<'a> Parser<'a> {
    /// A line starting with `#`; the cursor is on the `#`. Leaves the cursor on the line's `\n`.
    fn comment_line(&mut self) -> Result<(), ParseError> {
        let c = &mut self.c;
        c.pos += 1;
        if c.skip_blanks() == 0 {
            c.rest_of_line();
            return Ok(());
        }
        let kind = if c.starts_with(b"HELP") {
            Meta::Help
        } else if c.starts_with(b"TYPE") {
            Meta::Type
        } else {
            c.rest_of_line();
            return Ok(());
        };
        if !matches!(c.peek_at(4), Some(b' ' | b'\t')) {
            // e.g. "# HELPful remark" or "# TYPE" alone: an ordinary comment.
            c.rest_of_line();
            return Ok(());
        }
        c.pos += 4;
        c.skip_blanks();
        let keyword = match kind {
            Meta::Help => "HELP",
            Meta::Type => "TYPE",
        };
        let npos = c.pos;
        let family: Cow<'a, str> = if let Some(n) = c.legacy_metric_name() {
            Cow::Borrowed(n)
        } else if let Some(raw) = c.quoted(true) {
            decode_quoted(raw).ok_or_else(|| c.error_at(npos, "metric name is not valid UTF-8"))?
        } else {
            return Err(c.unexpected(npos, &format!("expected metric name after {keyword}")));
        };
        // Like Prometheus: the text is the rest of the line minus its first byte (the blank
        // after the name); further blanks, leading or trailing, are part of it.
        let tpos = c.pos + 1;
        let text = c.rest_of_line();
        let text = text.get(1..).unwrap_or_default();
        match kind {
            Meta::Type => {
                let t = match text {
                    b"counter" => MetricType::Counter,
                    b"gauge" => MetricType::Gauge,
                    b"histogram" => MetricType::Histogram,
                    b"summary" => MetricType::Summary,
                    b"untyped" => MetricType::Unknown,
                    _ => {
                        return Err(c.error_at(
                            tpos,
                            format!(
                            "invalid metric type {:?} (want counter, gauge, histogram, summary or untyped)",
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
                    .map_err(|_| c.error_at(tpos, "help text is not valid UTF-8"))?;
                self.meta.entry(&family).help = unescape(s, Escapes::Help).into_owned();
            }
        }
        Ok(())
    }

    /// A sample line; the cursor is on its first byte (a name character or `{`).
    fn sample_line(&mut self) -> Result<(), ParseError> {
        let line_start = self.c.pos;
        self.scratch.reset();
        if let Some(n) = self.c.legacy_metric_name() {
            self.scratch.name = Some(Cow::Borrowed(n));
            self.c.skip_blanks();
        }
        if self.c.peek() == Some(b'{') {
            self.c.pos += 1;
            self.labels()?;
            self.c.skip_blanks();
        }
        if self.scratch.name.is_none() {
            return Err(self.c.error_at(
                line_start,
                "metric name not set (put it before the braces or as a quoted string inside them)",
            ));
        }

        let vpos = self.c.pos;
        let tok = self.c.take_while(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'{'));
        if tok.is_empty() {
            return Err(self.c.unexpected(vpos, "expected value after metric"));
        }
        let value = parse_float(tok).map_err(|m| self.c.error_at(vpos, m))?;

        self.c.skip_blanks();
        let mut timestamp_ms = None;
        if !matches!(self.c.peek(), None | Some(b'\n')) {
            let tpos = self.c.pos;
            if self.c.peek() == Some(b'-') {
                self.c.pos += 1;
            }
            let digits = self.c.take_while(|b| b.is_ascii_digit());
            if digits.is_empty() {
                return Err(self.c.unexpected(tpos, "expected integer timestamp or end of line after value"));
            }
            let raw = &self.c.b[tpos..self.c.pos];
            let ts = std::str::from_utf8(raw).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| {
                self.c.error_at(tpos, format!("timestamp {:?} out of range", String::from_utf8_lossy(raw)))
            })?;
            timestamp_ms = Some(ts);
            self.c.skip_blanks();
            if !matches!(self.c.peek(), None | Some(b'\n')) {
                return Err(self.c.unexpected(self.c.pos, "expected end of line after timestamp"));
            }
        }

        let labels = self.scratch.finish(self.mtype).map_err(|m| self.c.error_at(line_start, m))?;
        self.samples.push(ParsedSample {
            labels,
            timestamp_ms,
            value: canonical(value),
            start_ms: None,
            exemplar: None,
        });
        Ok(())
    }

    /// The inside of `{...}`; the cursor is just past the `{` and ends just past the `}`.
    fn labels(&mut self) -> Result<(), ParseError> {
        loop {
            self.c.skip_blanks();
            let npos = self.c.pos;
            let Some((name, quoted)) = self.c.label_name(true)? else { return Ok(()) };
            self.c.skip_blanks();
            if quoted && matches!(self.c.peek(), Some(b',' | b'}')) {
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
            self.c.skip_blanks();
            let vpos = self.c.pos;
            let Some(raw) = self.c.quoted(true) else {
                return Err(self.c.unexpected(vpos, "expected quoted label value"));
            };
            let value =
                decode_quoted(raw).ok_or_else(|| self.c.error_at(vpos, "label value is not valid UTF-8"))?;
            self.scratch.labels.push((name, value));
            self.c.skip_blanks();
            if self.c.peek() == Some(b',') {
                self.c.pos += 1;
            }
        }
    }
}
