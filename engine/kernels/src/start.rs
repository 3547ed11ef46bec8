//! The counter functions over samples with start timestamps (Prometheus's
//! `use-start-timestamps`): a start timestamp after the previous sample is a reset that no
//! drop in value need show, and one inside a window is where the count began, so `rate` and
//! `increase` count from zero there instead of extrapolating.
//!
//! Start timestamps come aligned with the samples, 0 where a sample has none; with none at
//! all every function here answers what its plain counterpart does.

use promflow_storage::SampleSlice;

use crate::WindowBounds;

/// Whether the sample at `t` with start timestamp `st` began a new count after the sample
/// before it (at `prev_t`, with `prev_st`).
pub fn is_reset(prev_st: i64, prev_t: i64, st: i64, t: i64) -> bool {
    // unknown (0), invalid (after the sample), or OpenTelemetry's "unknown start" (equal)
    if st == 0 || st >= t || st < prev_t {
        return false;
    }
    if st > prev_t {
        return true;
    }
    // the start is the previous sample: a delta, or a cumulative series whose previous
    // start was unknown (then it is no reset); an invalid previous start counts as unknown
    prev_st != 0 && prev_st != prev_t && prev_st <= prev_t
}

/// Whether a sample's start timestamp `st` reaches back before the previous sample (at
/// `prev_t`) without being the same count's (`prev_st`): the two samples' counts overlap,
/// which Prometheus warns of.
pub fn overlaps(prev_st: i64, prev_t: i64, st: i64) -> bool {
    st != 0 && st < prev_t && st != prev_st
}

/// What a counter function over a window with start timestamps found besides its value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartNotes {
    /// Some sample's count overlaps the previous one's ([`overlaps`]).
    pub overlap: bool,
}

/// Whether any pair of consecutive samples in `starts`/`ts` overlaps.
pub fn any_overlap(starts: &[i64], ts: impl Iterator<Item = i64>) -> bool {
    let mut pairs = starts.iter().copied().zip(ts);
    let Some(mut prev) = pairs.next() else { return false };
    pairs.any(|(st, t)| {
        let overlap = overlaps(prev.0, prev.1, st);
        prev = (st, t);
        overlap
    })
}

/// The factor `rate`, `increase` (`is_counter`) or `delta` scale a window's count by, given
/// the first and last sample times, how many samples there are, the count so far and the
/// first value (for a counter's zero point), and the first sample's start timestamp (0 for
/// none): `None` where a single sample has no start timestamp inside the window to count
/// from. Returns (factor, whether the first sample's value is to be added, the count having
/// begun at its start). Per second is the caller's to divide by.
pub fn extrapolation_factor(
    b: WindowBounds,
    (first_t, last_t): (i64, i64),
    n: usize,
    (count, first): (f64, f64),
    first_start: i64,
    is_counter: bool,
) -> Option<(f64, bool)> {
    let mut to_start = (first_t - b.start) as f64 / 1000.0;
    let mut to_end = (b.end - last_t) as f64 / 1000.0;
    let mut sampled = (last_t - first_t) as f64 / 1000.0;
    let average = if n > 1 { sampled / (n - 1) as f64 } else { 0.0 };
    let threshold = average * 1.1;
    // the window's start is exclusive: a start timestamp on it lies outside
    let from_start = is_counter && first_start != 0 && first_start > b.start && first_start < first_t;
    if from_start {
        to_start = 0.0;
        sampled = (last_t - first_start) as f64 / 1000.0;
    } else if n == 1 {
        return None;
    } else {
        if to_start >= threshold {
            to_start = average / 2.0;
        }
        // a counter is not extrapolated below zero
        if is_counter && count > 0.0 && first >= 0.0 {
            to_start = to_start.min(sampled * (first / count));
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let factor = if sampled != 0.0 { (sampled + to_start + to_end) / sampled } else { 1.0 };
    Some((factor, from_start))
}

/// `rate` (`is_rate`) or `increase` of the float samples of a window with their start
/// timestamps.
pub fn counter_rate(
    samples: SampleSlice<'_>,
    starts: &[i64],
    b: WindowBounds,
    is_rate: bool,
) -> (Option<f64>, StartNotes) {
    let n = samples.len();
    let notes = StartNotes { overlap: any_overlap(starts, samples.t.iter().copied()) };
    if n == 0 {
        return (None, notes);
    }
    let (first, last) = (samples.get(0), samples.get(n - 1));
    let mut count = last.v - first.v;
    for i in 1..n {
        let (prev, cur) = (samples.get(i - 1), samples.get(i));
        if cur.v < prev.v || is_reset(starts[i - 1], prev.t, starts[i], cur.t) {
            count += prev.v;
        }
    }
    let Some((mut factor, from_start)) =
        extrapolation_factor(b, (first.t, last.t), n, (count, first.v), starts[0], true)
    else {
        return (None, notes);
    };
    if from_start {
        count += first.v;
    }
    if is_rate {
        factor /= b.seconds();
    }
    (Some(count * factor), notes)
}

/// `irate` of the last two float samples of a window with their start timestamps.
pub fn instant_rate(samples: SampleSlice<'_>, starts: &[i64]) -> Option<f64> {
    let n = samples.len();
    if n < 2 {
        return None;
    }
    let (prev, last) = (samples.get(n - 2), samples.get(n - 1));
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    let reset = last.v < prev.v || is_reset(starts[n - 2], prev.t, starts[n - 1], last.t);
    let delta = if reset { last.v } else { last.v - prev.v };
    Some(delta / (interval as f64 / 1000.0))
}

/// `resets` of the float samples of a window with their start timestamps.
pub fn resets(samples: SampleSlice<'_>, starts: &[i64]) -> usize {
    (1..samples.len())
        .filter(|&i| {
            let (prev, cur) = (samples.get(i - 1), samples.get(i));
            cur.v < prev.v || is_reset(starts[i - 1], prev.t, starts[i], cur.t)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use promflow_storage::Samples;

    #[test]
    fn resets_as_start_timestamps_show_them() {
        // a delta (start at the previous sample, whose own start was known)
        assert!(is_reset(940, 1000, 1000, 1060));
        // a cumulative series whose start was unknown, then given as the previous sample
        assert!(!is_reset(0, 1000, 1000, 1060));
        assert!(!is_reset(1030, 1000, 1000, 1060), "an invalid previous start counts as unknown");
        // a start after the previous sample; none at or after the sample itself
        assert!(is_reset(990, 1000, 1030, 1060));
        assert!(!is_reset(990, 1000, 1060, 1060) && !is_reset(990, 1000, 1070, 1060));
        assert!(!is_reset(990, 1000, 990, 1060), "the same count");
        assert!(overlaps(880, 1060, 881) && !overlaps(880, 1060, 880) && !overlaps(0, 1060, 1060));
    }

    #[test]
    fn a_start_inside_the_window_replaces_extrapolation_towards_it() {
        // one sample at 240 s of value 3 whose count began at 90 s, window (60 s, 360 s]
        let s = Samples::new(vec![240_000], vec![3.0]);
        let b = WindowBounds { start: 60_000, end: 360_000, eval_time: 360_000 };
        assert_eq!(counter_rate(s.view(), &[90_000], b, false).0, Some(3.0));
        // without it, a single sample gives nothing
        assert_eq!(counter_rate(s.view(), &[0], b, false).0, None);
        assert_eq!(counter_rate(s.view(), &[60_000], b, false).0, None, "the window's start is outside");
    }

    #[test]
    fn deltas_count_every_sample() {
        // five deltas of 60 each minute, each starting at the previous sample
        let t: Vec<i64> = (6..=10).map(|m| m * 60_000).collect();
        let starts: Vec<i64> = t.iter().map(|t| t - 60_000).collect();
        let s = Samples::new(t, vec![60.0; 5]);
        let b = WindowBounds { start: 300_000, end: 600_000, eval_time: 600_000 };
        assert_eq!(counter_rate(s.view(), &starts, b, false).0, Some(300.0));
        assert_eq!(instant_rate(s.view(), &starts), Some(1.0));
        assert_eq!(resets(s.view(), &starts), 4);
    }
}
