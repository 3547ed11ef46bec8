//! Delta temporality added up into cumulative series (`--enable-feature=otlp-deltatocumulative`),
//! as the OpenTelemetry Collector's `deltatocumulative` processor, which Prometheus 3 runs
//! for that flag, does it.
//!
//! A stream is one translated series. Its first delta sample starts it: the running total
//! is that sample and the stream's start is the sample's start timestamp. A later sample
//! adds to the total and takes the stream's start. A sample is dropped (the request still
//! succeeds, as in the processor) when it is no later than the stream's newest, or when its
//! start is before the stream's: another writer's older stream. A staleness marker ends its
//! stream. A stream that has seen no sample for five minutes (the processor's `max_stale`)
//! is forgotten, and so is every stream at a restart: the next sample starts over, which
//! reads as a counter reset.
//!
//! The conversion works on the translated samples, not on OTLP's points. An explicit
//! histogram's `_bucket`, `_count` and `_sum` series each add up on their own; native
//! histograms (exponential, or custom buckets) add as PromQL adds them, at the coarser
//! schema. Two histograms that cannot be added (other custom bounds) start the stream over
//! from the newer one, as the processor does for other explicit bounds.
//!
//! The totals are computed against a copy of the streams' state, which is kept only once
//! the request's samples are stored: a request that fails leaves no trace, and its retry
//! is not taken for a repeat.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use promflow_storage::{is_stale_nan, FloatHistogram, Labels};

use crate::translate::Batch;

/// How long a stream is kept without a sample (the processor's default `max_stale`).
const MAX_STALE: Duration = Duration::from_secs(5 * 60);

/// The most streams kept; the samples of a new stream past them are dropped, and counted.
pub const MAX_STREAMS: usize = 1 << 20;

/// The running totals of the delta streams seen.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    streams: HashMap<Labels, Stream>,
    /// When streams without a sample for [`MAX_STALE`] were last looked for.
    swept: Option<Instant>,
}

/// One stream's total so far.
#[derive(Clone, Debug)]
struct Stream {
    /// Its first sample's start timestamp (ms; 0 when it had none).
    start: i64,
    /// Its newest sample's timestamp (ms).
    last: i64,
    total: Total,
    /// When it last had a sample.
    seen: Instant,
}

#[derive(Clone, Debug)]
enum Total {
    Float(f64),
    Histogram(FloatHistogram),
}

/// The streams a request changes, to keep once it is stored: `None` ends a stream.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    changed: HashMap<Labels, Option<Stream>>,
    /// Samples dropped: out of order, of an older stream, or of a stream past [`MAX_STREAMS`].
    pub(crate) dropped: usize,
    /// Streams the request starts.
    started: usize,
}

/// One delta sample, float or histogram.
enum Delta<'a> {
    Float(f64),
    Histogram(&'a FloatHistogram),
}

impl Streams {
    /// Replaces the delta samples of `batch` (those of its `deltas` series) by their
    /// streams' totals, and their start timestamps by their streams' starts; drops the
    /// samples the processor drops. The streams themselves are unchanged until
    /// [`Streams::keep`].
    pub(crate) fn accumulate(&self, batch: &mut Batch, now: Instant) -> Pending {
        let mut pending = Pending::default();
        if batch.deltas.is_empty() {
            return pending;
        }
        let deltas = std::mem::take(&mut batch.deltas);
        let starts: HashMap<(&Labels, i64), i64> = batch
            .starts
            .iter()
            .filter(|(l, ..)| deltas.contains(l))
            .map(|(l, t, start)| ((l, *t), *start))
            .collect();
        // each series' samples in time order: floats, then histograms (a series is one or
        // the other in a well-formed request; a mix starts the stream over at each change)
        let mut order: Vec<(bool, usize)> = (0..batch.floats.len())
            .filter(|&i| deltas.contains(&batch.floats[i].0))
            .map(|i| (false, i))
            .chain(
                (0..batch.histograms.len())
                    .filter(|&i| deltas.contains(&batch.histograms[i].0))
                    .map(|i| (true, i)),
            )
            .collect();
        let key = |&(hist, i): &(bool, usize)| {
            if hist {
                (&batch.histograms[i].0, batch.histograms[i].1)
            } else {
                (&batch.floats[i].0, batch.floats[i].1)
            }
        };
        order.sort_by(|a, b| key(a).cmp(&key(b)));
        // what each kept sample becomes: (is a histogram, index, total, and the stream's
        // start when the sample came with a start timestamp, 0 otherwise)
        let mut totals: Vec<(bool, usize, Total, i64)> = Vec::with_capacity(order.len());
        for (hist, i) in order {
            let (labels, t) = key(&(hist, i));
            let delta =
                if hist { Delta::Histogram(&batch.histograms[i].2) } else { Delta::Float(batch.floats[i].2) };
            let start = starts.get(&(labels, t)).copied().unwrap_or(0);
            if !pending.changed.contains_key(labels) {
                pending.changed.insert(labels.clone(), self.streams.get(labels).cloned());
            }
            let full = self.streams.len() + pending.started >= MAX_STREAMS;
            let Some(state) = pending.changed.get_mut(labels) else { continue };
            if let Delta::Float(v) = delta {
                if is_stale_nan(v) {
                    // the stream ends; the marker is stored as it is
                    *state = None;
                    totals.push((hist, i, Total::Float(v), start));
                    continue;
                }
            }
            let next = match state.take() {
                None if full => {
                    pending.dropped += 1;
                    continue;
                }
                None => {
                    pending.started += 1;
                    Stream { start, last: t, total: delta.to_total(), seen: now }
                }
                Some(s) if t <= s.last || (start != 0 && start < s.start) => {
                    pending.dropped += 1;
                    *state = Some(s);
                    continue;
                }
                Some(s) => match s.total.plus(&delta) {
                    Some(total) => Stream { start: s.start, last: t, total, seen: now },
                    // not addable (other bounds, or a float after a histogram): start over
                    None => Stream { start, last: t, total: delta.to_total(), seen: now },
                },
            };
            totals.push((hist, i, next.total.clone(), if start != 0 { next.start } else { 0 }));
            *state = Some(next);
        }
        rebuild(batch, &deltas, totals);
        pending
    }

    /// Keeps the streams a stored request changed, and forgets those without a sample for
    /// [`MAX_STALE`] (looked for once a minute).
    pub(crate) fn keep(&mut self, pending: Pending, now: Instant) {
        for (labels, stream) in pending.changed {
            match stream {
                Some(s) => {
                    self.streams.insert(labels, s);
                }
                None => {
                    self.streams.remove(&labels);
                }
            }
        }
        if self.swept.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60)) {
            self.streams.retain(|_, s| now.duration_since(s.seen) < MAX_STALE);
            self.swept = Some(now);
        }
    }

    /// How many streams are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.streams.len()
    }
}

impl Delta<'_> {
    fn to_total(&self) -> Total {
        match self {
            Delta::Float(v) => Total::Float(*v),
            Delta::Histogram(h) => Total::Histogram((*h).clone()),
        }
    }
}

impl Total {
    /// The total with `delta` added; `None` when they do not add up.
    fn plus(&self, delta: &Delta<'_>) -> Option<Total> {
        match (self, delta) {
            (Total::Float(total), Delta::Float(v)) => Some(Total::Float(total + v)),
            (Total::Histogram(total), Delta::Histogram(h)) => {
                total.add(h).ok().map(|(sum, _)| Total::Histogram(sum))
            }
            _ => None,
        }
    }
}

/// Puts the totals in place of the delta samples of `deltas` series, with their streams'
/// start timestamps; the delta samples without a total (dropped) go, with theirs.
fn rebuild(batch: &mut Batch, deltas: &HashSet<Labels>, totals: Vec<(bool, usize, Total, i64)>) {
    let mut floats: Vec<Option<f64>> = vec![None; batch.floats.len()];
    let mut hists: Vec<Option<FloatHistogram>> = vec![None; batch.histograms.len()];
    batch.starts.retain(|(labels, ..)| !deltas.contains(labels));
    for (hist, i, total, start) in totals {
        let (labels, t) = if hist {
            (&batch.histograms[i].0, batch.histograms[i].1)
        } else {
            (&batch.floats[i].0, batch.floats[i].1)
        };
        if start != 0 {
            batch.starts.push((labels.clone(), t, start));
        }
        match total {
            Total::Float(v) if !hist => floats[i] = Some(v),
            Total::Histogram(h) if hist => hists[i] = Some(h),
            // a total is of its sample's kind
            _ => {}
        }
    }
    let mut kept = floats.into_iter();
    batch.floats.retain_mut(|(labels, _, v)| match kept.next().flatten() {
        Some(total) => {
            *v = total;
            true
        }
        None => !deltas.contains(labels),
    });
    let mut kept = hists.into_iter();
    batch.histograms.retain_mut(|(labels, _, h)| match kept.next().flatten() {
        Some(total) => {
            *h = total;
            true
        }
        None => !deltas.contains(labels),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use promflow_storage::stale_nan;

    fn labels(name: &str) -> Labels {
        Labels::from_pairs([("__name__", name)])
    }

    /// A batch of delta float samples `(t, v, start)` of series `name`.
    fn floats(name: &str, samples: &[(i64, f64, i64)]) -> Batch {
        let mut batch = Batch::default();
        for &(t, v, start) in samples {
            batch.floats.push((labels(name), t, v));
            if start != 0 {
                batch.starts.push((labels(name), t, start));
            }
        }
        batch.deltas.insert(labels(name));
        batch
    }

    fn values(batch: &Batch) -> Vec<(i64, f64)> {
        batch.floats.iter().map(|(_, t, v)| (*t, *v)).collect()
    }

    #[test]
    fn deltas_add_up_across_requests_once_stored() {
        let mut streams = Streams::default();
        let now = Instant::now();
        let mut first = floats("c", &[(2000, 3.0, 1000), (1000, 5.0, 500)]);
        let pending = streams.accumulate(&mut first, now);
        // totals in time order, samples where they were
        assert_eq!(values(&first), [(2000, 8.0), (1000, 5.0)]);
        // every total starts where the stream did
        assert!(first.starts.iter().all(|s| s.2 == 500), "{:?}", first.starts);
        // not stored: the next request counts from nothing again
        let mut retried = floats("c", &[(1000, 5.0, 500)]);
        let _ = streams.accumulate(&mut retried, now);
        assert_eq!(values(&retried), [(1000, 5.0)]);
        streams.keep(pending, now);
        // stored: the next adds on, an old or repeated sample and an older stream's go
        let mut next = floats("c", &[(3000, 1.0, 2000), (2000, 9.0, 1000), (4000, 1.0, 100)]);
        let pending = streams.accumulate(&mut next, now);
        assert_eq!(values(&next), [(3000, 9.0)]);
        assert_eq!(pending.dropped, 2);
        assert_eq!(next.starts, [(labels("c"), 3000, 500)]);
        streams.keep(pending, now);
        // a staleness marker ends the stream
        let mut ended = floats("c", &[(5000, stale_nan(), 0), (6000, 2.0, 5500)]);
        streams.keep(streams.accumulate(&mut ended, now), now);
        assert!(is_stale_nan(ended.floats[0].2));
        assert_eq!(ended.floats[1].2, 2.0, "counted from nothing again");
        // forgotten after five minutes without a sample
        streams.keep(Pending::default(), now + MAX_STALE + Duration::from_secs(61));
        assert_eq!(streams.len(), 0);
    }

    #[test]
    fn histograms_add_as_promql_adds_them_and_others_pass_through() {
        use promflow_storage::native_histogram::CounterResetHint;
        let h = |schema: i32, n: f64| {
            FloatHistogram::from_buckets(
                CounterResetHint::Unknown,
                schema,
                0.0,
                0.0,
                2.0 * n,
                n,
                vec![(1, n), (2, n)],
                Vec::new(),
                Vec::new(),
            )
            .unwrap()
        };
        let mut streams = Streams::default();
        let now = Instant::now();
        let mut batch = Batch::default();
        batch.histograms.push((labels("h"), 1000, h(1, 1.0)));
        batch.histograms.push((labels("h"), 2000, h(0, 2.0)));
        batch.floats.push((labels("cumulative"), 2000, 7.0));
        batch.deltas.insert(labels("h"));
        streams.keep(streams.accumulate(&mut batch, now), now);
        assert_eq!(batch.floats, [(labels("cumulative"), 2000, 7.0)]);
        let total = &batch.histograms[1].2;
        assert_eq!((total.count, total.sum, total.schema), (6.0, 3.0, 0), "added at the coarser schema");
    }
}
