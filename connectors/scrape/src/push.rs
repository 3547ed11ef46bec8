//! The Pushgateway API: batch jobs push their metrics to `/metrics/job/<job>{/<label>/<value>}`
//! and promflow keeps them as a Pushgateway would, in groups named by those labels.
//!
//! Decision (`docs/configuration.md`, "Pushed metrics"): pushed groups are not exposed for a
//! scrape but *ingested as if scraped*: every group's samples are appended at once when they
//! are pushed, and again every `global.scrape_interval`, with the grouping labels (and
//! `instance=""`) as a Pushgateway scraped with `honor_labels: true` gives them, plus each
//! group's `push_time_seconds` and `push_failure_time_seconds`. So a pushed value stays
//! current in queries as it does behind a Pushgateway (a value appended once would vanish
//! from instant queries after the lookback), without a scrape job to configure. Replaced or
//! deleted series get staleness markers. Groups live in memory, as in a Pushgateway without
//! `--persistence.file`: after a restart they are gone, the samples already ingested are not.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use promflow_config::relabel::is_legacy_label_name;
use promflow_storage::{now_ms, stale_nan, Db, Labels};

use crate::exposition::{self, Format, MetricType};

/// Why a push or delete is refused (each is a 400 with this text, as the Pushgateway's).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The path does not name a group.
    #[error("{0}")]
    BadGroup(String),
    /// The body does not parse, or its samples are not valid.
    #[error("pushed metrics are invalid or inconsistent with existing metrics: {0}")]
    BadBody(String),
}

/// One group: its families, each a list of samples (labels as ingested), and its push times.
#[derive(Clone, Debug, Default)]
struct Group {
    families: BTreeMap<String, Vec<(Labels, f64)>>,
    push_time: f64,
    failure_time: f64,
}

/// The pushed groups, keyed by their grouping labels.
pub struct PushGateway {
    db: Arc<Db>,
    groups: Mutex<BTreeMap<Labels, Group>>,
    interval_ms: AtomicU64,
    stopped: AtomicBool,
}

impl PushGateway {
    /// An empty gateway whose groups are appended to `db` every `interval` (the configuration's
    /// `global.scrape_interval`; [`PushGateway::set_interval`] changes it).
    pub fn start(db: Arc<Db>, interval: Duration, runtime: &tokio::runtime::Handle) -> Arc<PushGateway> {
        let gw = Arc::new(PushGateway {
            db,
            groups: Mutex::new(BTreeMap::new()),
            interval_ms: AtomicU64::new(interval.as_millis().max(1) as u64),
            stopped: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&gw);
        runtime.spawn(async move {
            loop {
                let wait = match weak.upgrade() {
                    Some(gw) if !gw.stopped.load(Ordering::Acquire) => gw.interval_ms.load(Ordering::Relaxed),
                    _ => return,
                };
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let Some(gw) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || gw.append_all()).await;
            }
        });
        gw
    }

    /// Sets how often the groups are appended.
    pub fn set_interval(&self, interval: Duration) {
        self.interval_ms.store(interval.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// Stops appending.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, BTreeMap<Labels, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many groups are held.
    pub fn len(&self) -> usize {
        self.groups().len()
    }

    /// Whether no group is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a push to the group `path` names (what follows `/metrics/`). `replace_all`
    /// (PUT) replaces the whole group; otherwise (POST) only the families pushed. The body
    /// is the text format; samples may not carry timestamps.
    pub fn push(&self, path: &str, replace_all: bool, body: &[u8]) -> Result<(), PushError> {
        let key = grouping_key(path)?;
        let now = now_ms();
        let pushed = match parse_families(body, &key) {
            Ok(f) => f,
            Err(e) => {
                let failed = self.groups().get_mut(&key).map(|g| {
                    g.failure_time = now as f64 / 1000.0;
                    g.clone()
                });
                if let Some(g) = failed {
                    self.append(now, &[(key, g)], Vec::new());
                }
                return Err(PushError::BadBody(e));
            }
        };
        let mut groups = self.groups();
        let group = groups.entry(key.clone()).or_default();
        let before = group.clone();
        if replace_all {
            group.families = pushed;
        } else {
            group.families.extend(pushed);
        }
        group.push_time = now as f64 / 1000.0;
        let group = group.clone();
        drop(groups);
        let gone = series_of(&key, &before).difference(&series_of(&key, &group)).cloned().collect();
        self.append(now, &[(key, group)], gone);
        Ok(())
    }

    /// Deletes the group `path` names; its series get staleness markers.
    pub fn delete(&self, path: &str) -> Result<(), PushError> {
        let key = grouping_key(path)?;
        if let Some(group) = self.groups().remove(&key) {
            self.append(now_ms(), &[], series_of(&key, &group).into_iter().collect());
        }
        Ok(())
    }

    /// Appends every group at the current time.
    fn append_all(&self) {
        let groups: Vec<(Labels, Group)> =
            self.groups().iter().map(|(k, g)| (k.clone(), g.clone())).collect();
        if !groups.is_empty() {
            self.append(now_ms(), &groups, Vec::new());
        }
    }

    /// Appends `groups`' samples and push times at `t`, and staleness markers for `gone`.
    fn append(&self, t: i64, groups: &[(Labels, Group)], gone: Vec<Labels>) {
        let mut app = self.db.appender();
        for (key, group) in groups {
            for (labels, v) in group.families.values().flatten() {
                if let Err(e) = app.append(labels, t, *v) {
                    tracing::debug!(error = %e, series = %labels, "push: sample not appended");
                }
            }
            for (name, v) in
                [("push_time_seconds", group.push_time), ("push_failure_time_seconds", group.failure_time)]
            {
                let mut l = key.clone();
                l.set(promflow_storage::METRIC_NAME, name);
                let _ = app.append(&l, t, v);
            }
        }
        for l in gone {
            let _ = app.append(&l, t, stale_nan());
        }
        if let Err(e) = app.commit() {
            tracing::warn!(error = %e, "push: appending pushed metrics failed");
        }
    }
}

/// Every series a group appends: its samples and its two push-time series.
fn series_of(key: &Labels, group: &Group) -> BTreeSet<Labels> {
    let mut out: BTreeSet<Labels> = group.families.values().flatten().map(|(l, _)| l.clone()).collect();
    for name in ["push_time_seconds", "push_failure_time_seconds"] {
        let mut l = key.clone();
        l.set(promflow_storage::METRIC_NAME, name);
        out.insert(l);
    }
    out
}

/// The grouping labels of `job/<job>{/<label>/<value>}`: a name or value may be written
/// `<name>@base64/<base64url value>` (`=` alone is the empty value).
pub fn grouping_key(path: &str) -> Result<Labels, PushError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if !parts.len().is_multiple_of(2) || parts.is_empty() {
        return Err(PushError::BadGroup(format!(
            "odd number of path segments in {path:?}: a label without a value"
        )));
    }
    let mut pairs = Vec::new();
    for pair in parts.chunks(2) {
        let (name, value) = match pair[0].strip_suffix("@base64") {
            Some(name) => (
                name,
                crate::client::base64_decode(pair[1]).and_then(|b| String::from_utf8(b).ok()).ok_or_else(
                    || PushError::BadGroup(format!("invalid base64 encoding in label value {:?}", pair[1])),
                )?,
            ),
            None => (pair[0], pair[1].to_string()),
        };
        if !is_legacy_label_name(name) || name.starts_with("__") {
            return Err(PushError::BadGroup(format!("improper label name {name:?}")));
        }
        if pairs.iter().any(|(n, _): &(String, String)| n == name) {
            return Err(PushError::BadGroup(format!("duplicate label name {name:?}")));
        }
        pairs.push((name.to_string(), value));
    }
    if pairs[0].0 != "job" {
        return Err(PushError::BadGroup("the grouping key must start with job".into()));
    }
    if pairs[0].1.is_empty() {
        return Err(PushError::BadGroup("job name is required".into()));
    }
    Ok(Labels::from_pairs(pairs))
}

/// The families of a pushed body, each sample's labels with the grouping labels (which win)
/// and `instance=""` (dropped: an empty value is no label).
fn parse_families(body: &[u8], key: &Labels) -> Result<BTreeMap<String, Vec<(Labels, f64)>>, String> {
    let expo = exposition::parse(body, Format::Text).map_err(|e| e.to_string())?;
    let suffixed: BTreeMap<&str, MetricType> =
        expo.metadata.iter().map(|m| (m.family.as_str(), m.metric_type)).collect();
    let mut families: BTreeMap<String, Vec<(Labels, f64)>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for s in expo.samples {
        let name = s.labels.get(promflow_storage::METRIC_NAME).to_string();
        if s.timestamp_ms.is_some() {
            return Err(format!("pushed metrics must not have timestamps ({name})"));
        }
        let family = family_of(&name, &suffixed);
        let mut labels = s.labels;
        for l in key {
            labels.set(&l.name, &l.value);
        }
        if !seen.insert(labels.clone()) {
            return Err(format!("duplicate series {labels}"));
        }
        families.entry(family).or_default().push((labels, s.value));
    }
    Ok(families)
}

/// The family a sample belongs to: a histogram's or summary's `_bucket`, `_sum` and `_count`
/// belong to the declared family.
fn family_of(name: &str, declared: &BTreeMap<&str, MetricType>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(declared.get(base), Some(MetricType::Histogram | MetricType::Summary)) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_keys_as_the_pushgateway_reads_them() {
        let k = grouping_key("job/backup/instance@base64/aG9zdC8x").unwrap();
        assert_eq!(k, Labels::from_pairs([("job", "backup"), ("instance", "host/1")]));
        assert_eq!(grouping_key("job@base64/Zm9vYmFy").unwrap().get("job"), "foobar");
        assert_eq!(grouping_key("job/a/empty@base64/=").unwrap().len(), 1);
        assert!(grouping_key("job").is_err());
        assert!(grouping_key("instance/x/job/y").is_err());
        assert!(grouping_key("job/a/0bad/x").is_err());
        assert!(grouping_key("job/a/b@base64/!!").is_err());
    }

    #[test]
    fn grouping_labels_win_and_families_keep_their_parts_together() {
        let key = grouping_key("job/j/instance/i").unwrap();
        let body = b"# TYPE d summary\nd_sum 3\nd_count 2\nd{quantile=\"0.5\"} 1\nx{job=\"other\"} 1\n";
        let f = parse_families(body, &key).unwrap();
        assert_eq!(f.keys().collect::<Vec<_>>(), ["d", "x"]);
        assert_eq!(f["d"].len(), 3);
        assert_eq!(f["x"][0].0.get("job"), "j");
        assert!(parse_families(b"x 1 1000\n", &key).unwrap_err().contains("timestamps"));
        assert!(parse_families(b"x{ 1\n", &key).is_err());
    }
}
