//! OpenMetrics `_created` lines read as start timestamps: a counter's, histogram's or
//! summary's `<family>_created{…} <seconds>` gives the samples of that family with the same
//! labels (`le` and `quantile` aside) their start timestamp, and is not kept as a series of
//! its own, as Prometheus reads them with `st-storage` or `created-timestamp-zero-ingestion`.

use std::collections::HashMap;

use promflow_storage::Labels;

use super::{Exposition, MetricType};

/// The suffixes of a family's samples, the bare family name (a summary's quantiles) last.
const SUFFIXES: [&str; 5] = ["_total", "_bucket", "_count", "_sum", ""];

/// A sample's labels without its name, `le` and `quantile`: what its `_created` line shares.
fn identity(labels: &Labels) -> Vec<(&str, &str)> {
    labels
        .iter()
        .filter(|l| !matches!(l.name.as_str(), "__name__" | "le" | "quantile"))
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect()
}

/// Moves the `_created` samples of the exposition's counter, histogram and summary families
/// onto the start timestamps of their samples.
pub fn apply(expo: &mut Exposition) {
    if !expo.samples.iter().any(|s| s.labels.metric_name().ends_with("_created")) {
        return;
    }
    let families: HashMap<&str, MetricType> = expo
        .metadata
        .iter()
        .filter(|m| {
            matches!(m.metric_type, MetricType::Counter | MetricType::Histogram | MetricType::Summary)
        })
        .map(|m| (m.family.as_str(), m.metric_type))
        .collect();
    // (family, labels) → the start timestamp in milliseconds
    let mut starts: HashMap<(String, Vec<(String, String)>), i64> = HashMap::new();
    let mut created = vec![false; expo.samples.len()];
    for (i, s) in expo.samples.iter().enumerate() {
        let Some(family) = s.labels.metric_name().strip_suffix("_created") else { continue };
        if !families.contains_key(family) || !s.value.is_finite() {
            continue;
        }
        let key = identity(&s.labels).into_iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        // seconds, as OpenMetrics writes them, to milliseconds
        starts.insert((family.to_string(), key), (s.value * 1000.0) as i64);
        created[i] = true;
    }
    let mut i = 0;
    expo.samples.retain(|_| {
        i += 1;
        !created[i - 1]
    });
    let start_of = |labels: &Labels| -> Option<i64> {
        let name = labels.metric_name();
        let key: Vec<(String, String)> =
            identity(labels).into_iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        SUFFIXES.iter().find_map(|suffix| {
            let family = name.strip_suffix(suffix)?;
            starts.get(&(family.to_string(), key.clone())).copied()
        })
    };
    for s in &mut expo.samples {
        if let Some(st) = start_of(&s.labels) {
            s.start_ms = Some(st);
        }
    }
    for h in &mut expo.histograms {
        if let Some(st) = start_of(&h.labels) {
            h.start_ms = Some(st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Format};
    use super::*;

    #[test]
    fn created_lines_become_their_familys_start_timestamps() {
        let body = b"# TYPE rpc counter\nrpc_total{code=\"200\"} 5\nrpc_created{code=\"200\"} 1700000000.5\n\
# TYPE lat histogram\nlat_bucket{le=\"1\"} 1\nlat_bucket{le=\"+Inf\"} 2\nlat_count 2\nlat_sum 3\nlat_created 1700000001\n\
# TYPE temp gauge\ntemp 20\n# TYPE other_created gauge\nother_created 7\n# EOF\n";
        let mut expo = parse(body, Format::OpenMetrics).unwrap();
        apply(&mut expo);
        let start =
            |name: &str| expo.samples.iter().find(|s| s.labels.metric_name() == name).map(|s| s.start_ms);
        assert_eq!(start("rpc_total"), Some(Some(1_700_000_000_500)));
        assert_eq!(start("lat_bucket"), Some(Some(1_700_000_001_000)));
        assert_eq!(start("lat_sum"), Some(Some(1_700_000_001_000)));
        assert_eq!(start("temp"), Some(None));
        assert_eq!(start("rpc_created"), None, "the created line is not a series");
        assert_eq!(start("other_created"), Some(None), "a gauge named _created is a series");
    }
}
