//! The one writer of promflow's own metrics (`/metrics`) in the text exposition format. Each
//! component owns its metric names and writes its families through a [`MetricsWriter`]
//! (`Db::write_metrics`, the scrape manager's, the rule manager's, …); the HTTP server only
//! puts them together. Label values are escaped here, once, and values are printed as
//! Prometheus's client library prints them.

use std::fmt::Write;

use crate::gofmt::format_g;

/// A family's type, as its `# TYPE` line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (or is reset by a restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets (`_bucket` with `le`), `_sum` and `_count`.
    Histogram,
    /// Quantiles (with `quantile`), `_sum` and `_count`.
    Summary,
}

impl MetricKind {
    fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
        }
    }
}

/// A sample value: integers exactly, floats as Go's `strconv.FormatFloat(v, 'g', -1, 64)`
/// with `+Inf`, `-Inf` and `NaN`.
pub trait MetricValue {
    /// Appends the value's text to `out`.
    fn write_to(&self, out: &mut String);
}

macro_rules! integer_values {
    ($($t:ty),*) => {$(
        impl MetricValue for $t {
            fn write_to(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_values!(u8, u32, u64, usize, i32, i64);

impl MetricValue for f64 {
    fn write_to(&self, out: &mut String) {
        out.push_str(&format_g(*self, None));
    }
}

impl MetricValue for bool {
    fn write_to(&self, out: &mut String) {
        out.push(if *self { '1' } else { '0' });
    }
}

/// Collects metric families in the text exposition format (version 0.0.4).
#[derive(Debug, Default)]
pub struct MetricsWriter {
    out: String,
}

impl MetricsWriter {
    /// An empty exposition.
    pub fn new() -> Self {
        MetricsWriter { out: String::with_capacity(8192) }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Its samples follow through the
    /// returned [`Family`].
    pub fn family<'w>(&'w mut self, name: &'w str, kind: MetricKind, help: &str) -> Family<'w> {
        let _ = writeln!(self.out, "# HELP {name} {}\n# TYPE {name} {}", escape_help(help), kind.name());
        Family { out: &mut self.out, name }
    }

    /// A family of one counter sample without labels.
    pub fn counter(&mut self, name: &str, help: &str, value: impl MetricValue) {
        self.family(name, MetricKind::Counter, help).sample(&[], value);
    }

    /// A family of one gauge sample without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl MetricValue) {
        self.family(name, MetricKind::Gauge, help).sample(&[], value);
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The samples of one family ([`MetricsWriter::family`]).
pub struct Family<'w> {
    out: &'w mut String,
    name: &'w str,
}

impl Family<'_> {
    /// One sample with `labels` (names are written as given, values escaped).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl MetricValue) -> &mut Self {
        self.sample_suffixed("", labels, value)
    }

    /// One sample of the family's name with `suffix` (a histogram's `_bucket`, `_sum`, `_count`).
    pub fn sample_suffixed(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        value: impl MetricValue,
    ) -> &mut Self {
        self.out.push_str(self.name);
        self.out.push_str(suffix);
        for (i, (name, v)) in labels.iter().enumerate() {
            self.out.push(if i == 0 { '{' } else { ',' });
            self.out.push_str(name);
            self.out.push_str("=\"");
            escape_label_value(self.out, v);
            self.out.push('"');
        }
        if !labels.is_empty() {
            self.out.push('}');
        }
        self.out.push(' ');
        value.write_to(self.out);
        self.out.push('\n');
        self
    }
}

/// Observations counted into fixed buckets, written by [`Family::histogram`].
#[derive(Clone, Debug)]
pub struct Histogram {
    /// Each bucket's upper bound, ascending (`+Inf` is implied).
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is the `+Inf` bucket's own.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending upper bounds, without `+Inf`).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    /// Counts one observation.
    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
    }
}

/// Observations whose quantiles are reported over a sliding window (the newest
/// [`Summary::WINDOW`] of the last ten minutes, as Prometheus's client ages its summaries),
/// with the sum and count of all of them; written by [`Family::summary`].
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// (when, value) of the newest observations, oldest first.
    recent: std::collections::VecDeque<(std::time::Instant, f64)>,
    sum: f64,
    count: u64,
}

impl Summary {
    /// The most observations the quantiles are computed from.
    pub const WINDOW: usize = 1024;
    /// How long an observation counts towards the quantiles.
    const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

    /// Counts one observation.
    pub fn observe(&mut self, v: f64) {
        let now = std::time::Instant::now();
        if self.recent.len() == Self::WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back((now, v));
        self.sum += v;
        self.count += 1;
    }

    /// The recent observations (the window's of the last ten minutes), sorted.
    fn recent_sorted(&self) -> Vec<f64> {
        let cutoff = std::time::Instant::now().checked_sub(Self::MAX_AGE);
        let mut values: Vec<f64> =
            self.recent.iter().filter(|(t, _)| cutoff.is_none_or(|c| *t >= c)).map(|(_, v)| *v).collect();
        values.sort_by(f64::total_cmp);
        values
    }
}

/// The `q`-quantile of `sorted` values by nearest rank (NaN without any).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Family<'_> {
    /// A histogram's `_bucket` samples (cumulative, `le` after `labels`), `_sum` and `_count`.
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &Histogram) -> &mut Self {
        let mut cumulative = 0u64;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = h.bounds.get(i).map_or_else(|| "+Inf".to_string(), |b| format_g(*b, None));
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample_suffixed("_bucket", &with_le, cumulative);
        }
        self.sample_suffixed("_sum", labels, h.sum);
        self.sample_suffixed("_count", labels, cumulative)
    }
    /// A summary's quantile samples (`quantile` after `labels`: 0.5, 0.9, 0.99, Prometheus's
    /// objectives), `_sum` and `_count`.
    pub fn summary(&mut self, labels: &[(&str, &str)], s: &Summary) -> &mut Self {
        let sorted = s.recent_sorted();
        for (q, text) in [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99")] {
            let mut with_q = labels.to_vec();
            with_q.push(("quantile", text));
            self.sample(&with_q, quantile(&sorted, q));
        }
        self.sample_suffixed("_sum", labels, s.sum);
        self.sample_suffixed("_count", labels, s.count)
    }
}

/// A label value as the text format quotes it: backslash, double quote and line feed escaped.
pub fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A help text as the text format writes it: backslash and line feed escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut w = MetricsWriter::new();
        w.counter("a_total", "Things.\nMore", 3u64);
        w.family("b", MetricKind::Gauge, "B.")
            .sample(&[("job", "x\"y\\z\nw"), ("i", "1")], 0.5)
            .sample(&[], f64::INFINITY);
        w.gauge("c", "C.", true);
        assert_eq!(
            w.finish(),
            "# HELP a_total Things.\\nMore\n# TYPE a_total counter\na_total 3\n\
             # HELP b B.\n# TYPE b gauge\nb{job=\"x\\\"y\\\\z\\nw\",i=\"1\"} 0.5\nb +Inf\n\
             # HELP c C.\n# TYPE c gauge\nc 1\n"
        );
    }
}
