//! Start timestamps: for a sample of a counter, a histogram or a summary, the time its count
//! began (the counter's creation or last reset), as OpenTelemetry's `StartTimeUnixNano`, a
//! protobuf exposition's `created_timestamp`, an OpenMetrics `_created` line and remote write
//! 2.0's `start_timestamp` give it. A delta sample's start timestamp is the start of the
//! interval it counts. PromQL reads them to see resets that no drop in value shows.
//!
//! Storage keeps them beside the samples, not in the chunks, so that series without start
//! timestamps pay nothing: a series' start timestamps are runs, each a span of consecutive
//! samples that share one start timestamp. A cumulative counter takes one run per reset; a
//! delta series one run per sample.

use crate::{Labels, Timestamp};

/// The samples of one series with timestamps in `from..=to` have start timestamp `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartRun {
    /// The first sample's timestamp (ms).
    pub from: Timestamp,
    /// The last sample's timestamp (ms).
    pub to: Timestamp,
    /// The start timestamp of every sample in the run (ms, never 0).
    pub start: Timestamp,
}

/// A series' start timestamps within a queried range: runs in time order that do not
/// overlap. A sample of the series whose timestamp no run covers has none.
#[derive(Clone, Debug, PartialEq)]
pub struct StartTimestamps {
    /// The series' identity.
    pub labels: Labels,
    /// The runs, clamped to the queried range.
    pub runs: Vec<StartRun>,
}

/// The start timestamp of each sample time in `ts` (ascending) under `runs` (time order),
/// 0 where it has none: the shape the query kernels read, aligned with a value column.
pub fn aligned_starts(runs: &[StartRun], ts: impl IntoIterator<Item = Timestamp>) -> Vec<Timestamp> {
    let mut i = 0;
    ts.into_iter()
        .map(|t| {
            while i < runs.len() && runs[i].to < t {
                i += 1;
            }
            match runs.get(i) {
                Some(r) if r.from <= t => r.start,
                _ => 0,
            }
        })
        .collect()
}

/// One series' runs as the head keeps them, in time order, not overlapping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StartRuns(Vec<StartRun>);

impl StartRuns {
    /// Records that the sample at `t` has start timestamp `start` (0: none). `prev` is the
    /// series' newest sample time before that sample was stored: the last run grows only
    /// over a sample that directly follows it, so a sample without a start timestamp in
    /// between is never covered.
    pub(crate) fn record(&mut self, prev: Option<Timestamp>, t: Timestamp, start: Timestamp) {
        if start == 0 {
            self.clear(t);
            return;
        }
        match self.0.last_mut() {
            Some(last) if last.to < t => {
                if last.start == start && prev == Some(last.to) {
                    last.to = t;
                } else {
                    self.0.push(StartRun { from: t, to: t, start });
                }
            }
            None => self.0.push(StartRun { from: t, to: t, start }),
            Some(_) => {
                // out of order: inside a run, or in a gap between runs
                let i = self.0.partition_point(|r| r.to < t);
                match self.0[i] {
                    r if r.from <= t && r.start == start => {}
                    r if r.from <= t => {
                        let pieces = split_out(r, t).chain([StartRun { from: t, to: t, start }]);
                        let mut pieces: Vec<StartRun> = pieces.collect();
                        pieces.sort_by_key(|p| p.from);
                        self.0.splice(i..=i, pieces);
                    }
                    _ => self.0.insert(i, StartRun { from: t, to: t, start }),
                }
            }
        }
    }

    /// Whether a run covers `t`.
    pub(crate) fn covers(&self, t: Timestamp) -> bool {
        let i = self.0.partition_point(|r| r.to < t);
        self.0.get(i).is_some_and(|r| r.from <= t)
    }

    /// Takes `t` out of the run that covers it, if any.
    fn clear(&mut self, t: Timestamp) {
        let i = self.0.partition_point(|r| r.to < t);
        if let Some(&r) = self.0.get(i).filter(|r| r.from <= t) {
            let pieces: Vec<StartRun> = split_out(r, t).collect();
            self.0.splice(i..=i, pieces);
        }
    }

    /// Drops what lies in `mint..=maxt`; returns whether no run is left.
    pub(crate) fn delete_range(&mut self, mint: Timestamp, maxt: Timestamp) -> bool {
        let mut kept = Vec::with_capacity(self.0.len());
        for r in self.0.drain(..) {
            if r.to < mint || r.from > maxt {
                kept.push(r);
                continue;
            }
            if r.from < mint {
                kept.push(StartRun { to: mint - 1, ..r });
            }
            if r.to > maxt {
                kept.push(StartRun { from: maxt + 1, ..r });
            }
        }
        self.0 = kept;
        self.0.is_empty()
    }

    /// The runs overlapping `mint..=maxt`, clamped to it.
    pub(crate) fn in_range(&self, mint: Timestamp, maxt: Timestamp) -> Vec<StartRun> {
        let i = self.0.partition_point(|r| r.to < mint);
        self.0[i..]
            .iter()
            .take_while(|r| r.from <= maxt)
            .map(|r| StartRun { from: r.from.max(mint), to: r.to.min(maxt), ..*r })
            .collect()
    }
}

impl From<Vec<StartRun>> for StartRuns {
    /// Runs in time order that do not overlap.
    fn from(runs: Vec<StartRun>) -> Self {
        StartRuns(runs)
    }
}

impl From<StartRuns> for Vec<StartRun> {
    fn from(runs: StartRuns) -> Self {
        runs.0
    }
}

/// The parts of `r` on either side of `t` (which it covers).
fn split_out(r: StartRun, t: Timestamp) -> impl Iterator<Item = StartRun> {
    // lazily: `t - 1` and `t + 1` exist only where a part does
    let before = (r.from < t).then(|| StartRun { to: t - 1, ..r });
    let after = (r.to > t).then(|| StartRun { from: t + 1, ..r });
    before.into_iter().chain(after)
}

/// Merges the runs of one series read from several sources (blocks, the head) into one list
/// in time order; where sources overlap, the later source wins.
pub(crate) fn merge_runs(parts: Vec<Vec<StartRun>>) -> Vec<StartRun> {
    let mut parts: Vec<Vec<StartRun>> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    match parts.len() {
        0 => Vec::new(),
        1 => parts.pop().unwrap_or_default(),
        _ => {
            let mut merged = StartRuns::default();
            for run in parts.into_iter().flatten() {
                merged.delete_range(run.from, run.to);
                let i = merged.0.partition_point(|r| r.to < run.from);
                merged.0.insert(i, run);
            }
            merged.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(from: i64, to: i64, start: i64) -> StartRun {
        StartRun { from, to, start }
    }

    #[test]
    fn a_counter_keeps_one_run_per_reset() {
        let mut runs = StartRuns::default();
        let mut prev = None;
        for (t, st) in [(10, 5), (20, 5), (30, 5), (40, 35), (50, 35)] {
            runs.record(prev, t, st);
            prev = Some(t);
        }
        assert_eq!(runs.0, vec![run(10, 30, 5), run(40, 50, 35)]);
        assert_eq!(aligned_starts(&runs.0, [10, 30, 40, 50, 60]), vec![5, 5, 35, 35, 0]);
    }

    #[test]
    fn a_sample_without_a_start_breaks_the_run() {
        let mut runs = StartRuns::default();
        runs.record(None, 10, 5);
        // the sample at 20 has none: the one at 30 does not extend the run over it
        runs.record(Some(20), 30, 5);
        assert_eq!(aligned_starts(&runs.0, [10, 20, 30]), vec![5, 0, 5]);
    }

    #[test]
    fn out_of_order_samples_split_runs() {
        let mut runs = StartRuns::default();
        let mut prev = None;
        for t in [10, 20, 30, 40] {
            runs.record(prev, t, 1);
            prev = Some(t);
        }
        runs.record(Some(40), 25, 7);
        runs.record(Some(40), 35, 0);
        runs.record(Some(40), 5, 2);
        assert_eq!(aligned_starts(&runs.0, [5, 10, 20, 25, 30, 35, 40]), vec![2, 1, 1, 7, 1, 0, 1]);
        assert!(runs.covers(25) && !runs.covers(35));
    }

    #[test]
    fn runs_at_the_ends_of_time_do_not_overflow() {
        let mut runs = StartRuns::default();
        runs.record(None, i64::MAX - 1, 5);
        runs.record(Some(i64::MAX - 1), i64::MAX, 5);
        runs.record(Some(i64::MAX), i64::MAX, 0);
        runs.record(Some(i64::MAX), i64::MIN, 7);
        runs.record(Some(i64::MAX), i64::MIN, 0);
        assert_eq!(runs.0, vec![run(i64::MAX - 1, i64::MAX - 1, 5)]);
    }

    #[test]
    fn ranges_clamp_and_delete() {
        let mut runs = StartRuns(vec![run(10, 30, 5), run(40, 50, 35)]);
        assert_eq!(runs.in_range(20, 45), vec![run(20, 30, 5), run(40, 45, 35)]);
        assert!(!runs.delete_range(25, 45));
        assert_eq!(runs.0, vec![run(10, 24, 5), run(46, 50, 35)]);
        assert!(runs.delete_range(0, 100));
    }

    #[test]
    fn merging_sources_keeps_time_order() {
        let merged = merge_runs(vec![vec![run(40, 50, 2)], vec![], vec![run(10, 30, 1), run(45, 45, 9)]]);
        assert_eq!(merged, vec![run(10, 30, 1), run(40, 44, 2), run(45, 45, 9), run(46, 50, 2)]);
    }
}
