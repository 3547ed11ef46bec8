//! `convert_classic_histograms_to_nhcb`: each classic histogram of an exposition (a family
//! typed `histogram`, its `_bucket`, `_count` and `_sum` series with the same other labels)
//! becomes one native histogram with custom buckets, named after the family.
//!
//! As in Prometheus, the classic series go unless they are asked for
//! (`always_scrape_classic_histograms`), a histogram that is already native is left alone,
//! and a classic histogram that cannot be converted (buckets that are not cumulative, a
//! count that disagrees with the `+Inf` bucket) stays as its classic series.

use std::collections::{HashMap, HashSet};

use promflow_storage::native_histogram::FloatHistogram;
use promflow_storage::{Labels, METRIC_NAME};

use super::common::go_parse_float;
use super::{Exposition, MetricType, ParsedExemplar, ParsedHistogram};

/// The series of one classic histogram, as they are collected.
#[derive(Default)]
struct Classic {
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: f64,
    timestamp_ms: Option<i64>,
    /// Its series' start timestamp.
    start_ms: Option<i64>,
    /// Its buckets' exemplars.
    exemplars: Vec<ParsedExemplar>,
    /// Indexes of its samples in the exposition.
    samples: Vec<usize>,
}

/// Replaces the classic histograms of `exposition` by native ones with custom buckets.
pub(super) fn convert(exposition: &mut Exposition, keep_classic: bool) {
    let families: HashSet<&str> = exposition
        .metadata
        .iter()
        .filter(|m| m.metric_type == MetricType::Histogram)
        .map(|m| m.family.as_str())
        .collect();
    if families.is_empty() {
        return;
    }
    let native: HashSet<&Labels> = exposition.histograms.iter().map(|h| &h.labels).collect();
    let mut order: Vec<Labels> = Vec::new();
    let mut classics: HashMap<Labels, Classic> = HashMap::new();
    for (i, s) in exposition.samples.iter().enumerate() {
        let name = s.labels.metric_name();
        let Some((family, part)) = ["_bucket", "_count", "_sum"]
            .into_iter()
            .find_map(|suffix| name.strip_suffix(suffix).map(|f| (f, suffix)))
        else {
            continue;
        };
        if !families.contains(family) {
            continue;
        }
        let mut key = s.labels.clone();
        key.set(METRIC_NAME, family);
        let le = if part == "_bucket" {
            match go_parse_float(s.labels.get("le").as_bytes()) {
                Some(le) => Some(le),
                None => continue,
            }
        } else {
            None
        };
        key.remove("le");
        if native.contains(&key) {
            continue;
        }
        let classic = classics.entry(key).or_insert_with_key(|k| {
            order.push(k.clone());
            Classic::default()
        });
        match (part, le) {
            ("_bucket", Some(le)) => classic.buckets.push((le, s.value)),
            ("_count", _) => classic.count = Some(s.value),
            _ => classic.sum = s.value,
        }
        classic.timestamp_ms = classic.timestamp_ms.or(s.timestamp_ms);
        classic.start_ms = classic.start_ms.or(s.start_ms);
        classic.exemplars.extend(s.exemplar.clone());
        classic.samples.push(i);
    }
    let mut converted: HashSet<usize> = HashSet::new();
    for labels in order {
        let Some(classic) = classics.remove(&labels) else { continue };
        // a `_count` or `_sum` without buckets is not a histogram to convert
        if classic.buckets.is_empty() {
            continue;
        }
        let Ok(histogram) = FloatHistogram::from_classic(&classic.buckets, classic.count, classic.sum) else {
            continue;
        };
        let (timestamp_ms, start_ms, exemplars) = (classic.timestamp_ms, classic.start_ms, classic.exemplars);
        exposition.histograms.push(ParsedHistogram { labels, timestamp_ms, start_ms, histogram, exemplars });
        converted.extend(classic.samples);
    }
    if !keep_classic && !converted.is_empty() {
        let mut i = 0;
        exposition.samples.retain(|_| {
            i += 1;
            !converted.contains(&(i - 1))
        });
    }
}
