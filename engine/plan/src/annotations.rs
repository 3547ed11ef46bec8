//! Warnings and infos a query collects while it runs: Prometheus's annotations, returned next
//! to a successful result (`warnings` and `infos` in the HTTP API).
//!
//! Texts and formatting follow Prometheus's `util/annotations`: `PromQL warning: …` or
//! `PromQL info: …`, then ` (line:col)` pointing at the sub-expression that caused it. Two
//! annotations with the same text (position aside) are one; the later position is kept.

use crate::SourcePos;

/// How serious an annotation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The result may be wrong (Prometheus's `warnings`).
    Warning,
    /// The result is right but the query is probably not what was meant (`infos`).
    Info,
}

/// Extra figures that `histogram_quantile`'s monotonicity info accumulates over the samples it
/// fixed, as Prometheus merges them.
#[derive(Clone, Copy, Debug)]
struct Monotonicity {
    min_ts: i64,
    max_ts: i64,
    min_bucket: f64,
    max_bucket: f64,
    max_diff: f64,
    count: u64,
}

#[derive(Clone, Debug)]
struct Annotation {
    level: Level,
    message: String,
    pos: Option<SourcePos>,
    monotonicity: Option<Monotonicity>,
}

impl Annotation {
    fn text(&self) -> String {
        let level = match self.level {
            Level::Warning => "warning",
            Level::Info => "info",
        };
        let mut out = format!("PromQL {level}: {}", self.message);
        if let Some(m) = self.monotonicity {
            out.push_str(&format!(
                ", from buckets {} to {}, with a max diff of {}, over {} samples from {} to {}",
                promflow_storage::gofmt::format_g(m.min_bucket, None),
                promflow_storage::gofmt::format_g(m.max_bucket, None),
                promflow_storage::gofmt::format_g(m.max_diff, Some(2)),
                m.count,
                rfc3339_seconds(m.min_ts),
                rfc3339_seconds(m.max_ts),
            ));
        }
        if let Some(p) = self.pos {
            out.push_str(&format!(" ({}:{})", p.line, p.col));
        }
        out
    }
}

/// The annotations of one query, in the order they were first raised.
#[derive(Clone, Debug, Default)]
pub struct Annotations {
    items: Vec<Annotation>,
}

impl Annotations {
    /// Adds an annotation; one with the same level and message replaces the earlier one's
    /// position.
    pub fn add(&mut self, level: Level, message: String, pos: Option<SourcePos>) {
        match self.items.iter_mut().find(|a| a.level == level && a.message == message) {
            Some(a) => a.pos = pos,
            None => self.items.push(Annotation { level, message, pos, monotonicity: None }),
        }
    }

    /// Adds Prometheus's "needed to be fixed for monotonicity" info for one histogram sample at
    /// `ts` whose buckets `min_bucket`..`max_bucket` were raised by up to `max_diff`; repeated
    /// infos for the same metric merge into one that covers them all.
    pub fn add_monotonicity_fix(
        &mut self,
        metric_name: &str,
        pos: Option<SourcePos>,
        ts: i64,
        (min_bucket, max_bucket, max_diff): (f64, f64, f64),
    ) {
        let mut message = "input to histogram_quantile needed to be fixed for monotonicity (see \
                           https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)"
            .to_string();
        if !metric_name.is_empty() {
            message.push_str(&format!(" for metric name {metric_name:?}"));
        }
        let new = Monotonicity { min_ts: ts, max_ts: ts, min_bucket, max_bucket, max_diff, count: 1 };
        match self.items.iter_mut().find(|a| a.level == Level::Info && a.message == message) {
            Some(a) => {
                a.pos = pos;
                let m = a.monotonicity.get_or_insert(new);
                m.min_ts = m.min_ts.min(ts);
                m.max_ts = m.max_ts.max(ts);
                m.min_bucket = m.min_bucket.min(min_bucket);
                m.max_bucket = m.max_bucket.max(max_bucket);
                m.max_diff = m.max_diff.max(max_diff);
                m.count += 1;
            }
            None => self.items.push(Annotation { level: Level::Info, message, pos, monotonicity: Some(new) }),
        }
    }

    /// Adds all of `other`'s annotations.
    pub fn merge(&mut self, other: Annotations) {
        for a in other.items {
            match a.monotonicity {
                Some(_) => {
                    if let Some(existing) = self.items.iter_mut().find(|b| b.message == a.message) {
                        *existing = a;
                    } else {
                        self.items.push(a);
                    }
                }
                None => self.add(a.level, a.message, a.pos),
            }
        }
    }

    /// The texts of the annotations of `level`. With a `limit`, at most that many, then a line
    /// saying how many were left out, as Prometheus's HTTP API does (it keeps 10 of each).
    pub fn texts(&self, level: Level, limit: Option<usize>) -> Vec<String> {
        let all = self.items.iter().filter(|a| a.level == level);
        let mut out: Vec<String> =
            all.clone().take(limit.unwrap_or(usize::MAX)).map(Annotation::text).collect();
        let omitted = all.count() - out.len();
        if omitted > 0 {
            let kind = if level == Level::Warning { "warning" } else { "info" };
            out.push(format!("{omitted} more {kind} annotations omitted"));
        }
        out
    }

    /// Each annotation's level, message (without the `PromQL …:` prefix and the position)
    /// and position, in the order they were raised: what another process needs to raise
    /// them again ([`Annotations::add`]).
    pub fn entries(&self) -> Vec<(Level, String, Option<SourcePos>)> {
        self.items.iter().map(|a| (a.level, a.message.clone(), a.pos)).collect()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A millisecond timestamp as RFC 3339 in UTC, to the second (Go's `time.RFC3339`).
fn rfc3339_seconds(ms: i64) -> String {
    // Go's time.Unix(ms/1000, 0) truncates toward zero
    let s = ms / 1000;
    let (y, m, d) = crate::format::civil_from_days(s.div_euclid(86_400));
    let rem = s.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonicity_infos_merge() {
        let mut a = Annotations::default();
        a.add_monotonicity_fix("m", None, 60_000, (0.1, 1.0, 2.0));
        a.add_monotonicity_fix("m", None, 120_000, (0.5, 5.0, 3.0));
        let t = a.texts(Level::Info, None);
        assert_eq!(t.len(), 1);
        assert!(
            t[0].ends_with(
                "for metric name \"m\", from buckets 0.1 to 5, with a max diff of 3, over 2 samples \
             from 1970-01-01T00:01:00Z to 1970-01-01T00:02:00Z"
            ),
            "{}",
            t[0]
        );
    }

    #[test]
    fn same_message_is_one_annotation() {
        let mut a = Annotations::default();
        a.add(Level::Info, "x".into(), Some(SourcePos { line: 1, col: 3 }));
        a.add(Level::Info, "x".into(), Some(SourcePos { line: 1, col: 9 }));
        a.add(Level::Warning, "y".into(), None);
        assert_eq!(a.texts(Level::Info, None), vec!["PromQL info: x (1:9)"]);
        assert_eq!(a.texts(Level::Warning, None), vec!["PromQL warning: y"]);
    }
}
