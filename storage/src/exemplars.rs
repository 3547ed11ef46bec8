//! Exemplars: a sample's link to a trace (`{trace_id="…"} 0.43 @t`), kept in a bounded
//! in-memory store beside the head, as Prometheus keeps them with
//! `--enable-feature=exemplar-storage`.
//!
//! The store holds at most `capacity` exemplars over all series (`storage.exemplars
//! .max_exemplars`); the oldest one goes when a new one comes. A series' exemplars are in
//! time order: one older than the series' newest is refused, one equal to it is dropped.
//! Exemplars are written to the WAL with their batch's samples and read back at start-up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::{Labels, Matcher, Timestamp};

/// The longest label set an exemplar may carry, in characters of names and values
/// together (OpenMetrics's limit).
pub const MAX_LABELS_LENGTH: usize = 128;

/// One exemplar.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    /// Its labels, typically `trace_id` (and `span_id`).
    pub labels: Labels,
    /// The observed value.
    pub value: f64,
    /// When it was observed (ms).
    pub t: Timestamp,
}

/// Why an exemplar was not kept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExemplarError {
    /// Older than the newest exemplar of its series.
    #[error("out of order exemplar")]
    OutOfOrder,
    /// Labels longer than [`MAX_LABELS_LENGTH`] characters.
    #[error("exemplar label set is longer than {MAX_LABELS_LENGTH} characters")]
    LabelsTooLong,
}

impl Exemplar {
    /// Refuses labels longer than OpenMetrics allows.
    pub fn check(&self) -> Result<(), ExemplarError> {
        let length: usize =
            self.labels.iter().map(|l| l.name.chars().count() + l.value.chars().count()).sum();
        if length > MAX_LABELS_LENGTH {
            return Err(ExemplarError::LabelsTooLong);
        }
        Ok(())
    }
}

/// The exemplars of one series, as a query answers them.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesExemplars {
    /// The series.
    pub series: Labels,
    /// Its exemplars in the range asked for, oldest first.
    pub exemplars: Vec<Exemplar>,
}

#[derive(Default)]
struct Ring {
    capacity: usize,
    /// Oldest first.
    entries: VecDeque<(Arc<Labels>, Exemplar)>,
    /// Per series: how many entries it has, and its newest exemplar.
    newest: HashMap<Arc<Labels>, (usize, Exemplar)>,
}

impl Ring {
    fn evict_to(&mut self, len: usize) {
        while self.entries.len() > len {
            let Some((series, _)) = self.entries.pop_front() else { break };
            if let Some(n) = self.newest.get_mut(&series) {
                n.0 -= 1;
                if n.0 == 0 {
                    self.newest.remove(&series);
                }
            }
        }
    }
}

/// The bounded store of exemplars (see the module's documentation).
#[derive(Default)]
pub struct ExemplarStore {
    ring: Mutex<Ring>,
}

impl ExemplarStore {
    /// A store of at most `capacity` exemplars (0 keeps none).
    pub fn new(capacity: usize) -> ExemplarStore {
        let ring = Ring { capacity, ..Ring::default() };
        ExemplarStore { ring: Mutex::new(ring) }
    }

    /// How many exemplars the store keeps at most.
    pub fn capacity(&self) -> usize {
        self.ring.lock().map(|r| r.capacity).unwrap_or(0)
    }

    /// Keeps at most `capacity` exemplars from now on, dropping the oldest beyond it.
    pub fn resize(&self, capacity: usize) {
        if let Ok(mut r) = self.ring.lock() {
            r.capacity = capacity;
            r.evict_to(capacity);
        }
    }

    /// Whether `e` would be kept for `series`: `Ok(false)` for a repeat of the series'
    /// newest exemplar, an error for an older one.
    pub fn admits(&self, series: &Labels, e: &Exemplar) -> Result<bool, ExemplarError> {
        e.check()?;
        let Ok(r) = self.ring.lock() else { return Ok(false) };
        if r.capacity == 0 {
            return Ok(false);
        }
        Ok(match r.newest.get(series) {
            Some((_, newest)) if newest == e => false,
            Some((_, newest)) if e.t < newest.t => return Err(ExemplarError::OutOfOrder),
            _ => true,
        })
    }

    /// Adds `e` to `series`' exemplars if [`ExemplarStore::admits`] it; returns whether it
    /// was added.
    pub fn add(&self, series: &Arc<Labels>, e: Exemplar) -> bool {
        if !matches!(self.admits(series, &e), Ok(true)) {
            return false;
        }
        let Ok(mut r) = self.ring.lock() else { return false };
        let capacity = r.capacity;
        r.evict_to(capacity.saturating_sub(1));
        let entry = r.newest.entry(Arc::clone(series)).or_insert((0, e.clone()));
        entry.0 += 1;
        entry.1 = e.clone();
        r.entries.push_back((Arc::clone(series), e));
        true
    }

    /// The exemplars in `mint..=maxt` of the series matching any of the matcher sets, by
    /// series in label order.
    pub fn select(
        &self,
        matcher_sets: &[Vec<Matcher>],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Vec<SeriesExemplars> {
        let Ok(r) = self.ring.lock() else { return Vec::new() };
        let mut by_series: HashMap<&Arc<Labels>, Vec<Exemplar>> = HashMap::new();
        let mut matches: HashMap<&Arc<Labels>, bool> = HashMap::new();
        for (series, e) in &r.entries {
            if e.t < mint || e.t > maxt {
                continue;
            }
            let wanted = *matches.entry(series).or_insert_with(|| {
                matcher_sets.iter().any(|set| set.iter().all(|m| m.matches(series.get(&m.name))))
            });
            if wanted {
                by_series.entry(series).or_default().push(e.clone());
            }
        }
        let mut out: Vec<SeriesExemplars> = by_series
            .into_iter()
            .map(|(series, mut exemplars)| {
                exemplars.sort_by_key(|e| e.t);
                SeriesExemplars { series: (**series).clone(), exemplars }
            })
            .collect();
        out.sort_by(|a, b| a.series.cmp(&b.series));
        out
    }

    /// How many exemplars the store holds now.
    pub fn len(&self) -> usize {
        self.ring.lock().map(|r| r.entries.len()).unwrap_or(0)
    }

    /// Whether the store holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MatchOp;

    fn ex(trace: &str, value: f64, t: i64) -> Exemplar {
        Exemplar { labels: Labels::from_pairs([("trace_id", trace)]), value, t }
    }

    #[test]
    fn a_bounded_ring_in_time_order_per_series() {
        let store = ExemplarStore::new(3);
        let a = Arc::new(Labels::from_pairs([("__name__", "a")]));
        let b = Arc::new(Labels::from_pairs([("__name__", "b")]));
        assert!(store.add(&a, ex("1", 1.0, 10)));
        assert!(!store.add(&a, ex("1", 1.0, 10)), "a repeat is dropped");
        assert_eq!(store.admits(&a, &ex("0", 1.0, 5)), Err(ExemplarError::OutOfOrder));
        assert!(store.add(&a, ex("2", 2.0, 20)));
        assert!(store.add(&b, ex("3", 3.0, 15)));
        assert!(store.add(&b, ex("4", 4.0, 30)));
        // the oldest (a's first) went
        assert_eq!(store.len(), 3);
        let all = vec![vec![Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap()]];
        let got = store.select(&all, 0, 100);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].exemplars, vec![ex("2", 2.0, 20)]);
        assert_eq!(got[1].exemplars, vec![ex("3", 3.0, 15), ex("4", 4.0, 30)]);
        let only_b = vec![vec![Matcher::new(MatchOp::Equal, "__name__", "b").unwrap()]];
        assert_eq!(store.select(&only_b, 20, 100)[0].exemplars, vec![ex("4", 4.0, 30)]);
        store.resize(1);
        assert_eq!(store.len(), 1);
        store.resize(0);
        assert!(!store.add(&a, ex("5", 5.0, 50)), "a store of no capacity keeps nothing");
        let long = Exemplar {
            labels: Labels::from_pairs([("trace_id", "x".repeat(130).as_str())]),
            value: 1.0,
            t: 1,
        };
        assert_eq!(long.check(), Err(ExemplarError::LabelsTooLong));
    }
}
