//! What the executor's tests share: series held in memory behind the `Querier` trait.
#![allow(dead_code)]

use promflow_storage::{
    HistogramSeries, Labels, Matcher, Querier, Samples, Series, StartTimestamps, Timestamp,
};

/// Series in memory, in any order: `select` sorts what it returns by labels, as the
/// [`Querier`] contract asks.
pub struct Memory(pub Vec<Series>);

impl Querier for Memory {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Series>, promflow_storage::Error> {
        let mut selected: Vec<Series> = self
            .0
            .iter()
            .filter(|s| matchers.iter().all(|m| m.matches(s.labels.get(&m.name))))
            .filter_map(|s| {
                let (t, v): (Vec<i64>, Vec<f64>) =
                    s.samples.iter().filter(|x| x.t >= mint && x.t <= maxt).map(|x| (x.t, x.v)).unzip();
                (!t.is_empty()).then(|| Series { labels: s.labels.clone(), samples: Samples::new(t, v) })
            })
            .collect();
        selected.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(selected)
    }

    fn select_histograms(
        &self,
        _: &[Matcher],
        _: Timestamp,
        _: Timestamp,
    ) -> Result<Vec<HistogramSeries>, promflow_storage::Error> {
        Ok(Vec::new())
    }

    fn select_start_timestamps(
        &self,
        _: &[Matcher],
        _: Timestamp,
        _: Timestamp,
    ) -> Result<Vec<StartTimestamps>, promflow_storage::Error> {
        Ok(Vec::new())
    }

    fn series(
        &self,
        _: &[Matcher],
        _: Timestamp,
        _: Timestamp,
    ) -> Result<Vec<Labels>, promflow_storage::Error> {
        let mut labels: Vec<Labels> = self.0.iter().map(|s| s.labels.clone()).collect();
        labels.sort();
        Ok(labels)
    }

    fn label_names(
        &self,
        _: &[Matcher],
        _: Timestamp,
        _: Timestamp,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        Ok(Vec::new())
    }

    fn label_values(
        &self,
        _: &str,
        _: &[Matcher],
        _: Timestamp,
        _: Timestamp,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        Ok(Vec::new())
    }
}
