//! The notifier: sends alerts to Alertmanager's API v2 as Prometheus's notifier does.
//!
//! * Alerts get the external labels they lack, then `alerting.alert_relabel_configs`; an
//!   alert a rule drops is not sent.
//! * They wait in a queue of at most 10,000 (the oldest are dropped, and counted, when it is
//!   full) and go out in batches of at most 256, each batch as one JSON array
//!   `POST <scheme>://<address><path_prefix>/api/v2/alerts` to every discovered Alertmanager,
//!   in parallel, with the entry's own `alert_relabel_configs` applied first.
//! * Alertmanagers come from `static_configs` and `file_sd_configs` (re-read for every batch),
//!   labelled `__address__`, `__scheme__` and `__alerts_path__` and put through the entry's
//!   `relabel_configs`, as in Prometheus.
//! * A failed send is retried twice (after 100 ms and 400 ms) within the entry's `timeout`,
//!   then counted as an error; the rules resend firing alerts anyway.
#![warn(missing_docs)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use promflow_config::relabel::process;
use promflow_config::{AlertmanagerConfig, Config, RelabelConfig};
use promflow_storage::Labels;

/// Most alerts waiting to be sent.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Most alerts in one request.
pub const MAX_BATCH: usize = 256;
/// Waits before the second and third attempt of a failed send.
const RETRY_BACKOFF: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];

/// An alert as Alertmanager receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Its labels (`alertname` included).
    pub labels: Labels,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (ms).
    pub starts_at_ms: i64,
    /// When it was resolved, or until when it is valid unless resent (ms).
    pub ends_at_ms: i64,
    /// A link to the expression in the web UI.
    pub generator_url: String,
}

/// Errors applying a configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP client of an `alertmanagers` entry could not be built.
    #[error("alertmanager client: {0}")]
    Client(String),
}

struct AlertmanagerSet {
    cfg: AlertmanagerConfig,
    client: reqwest::Client,
}

impl AlertmanagerSet {
    /// The Alertmanagers' alert URLs, and the targets relabelling dropped.
    fn discover(&self) -> (Vec<String>, Vec<String>) {
        let mut groups: Vec<(Vec<String>, Labels)> =
            self.cfg.static_configs.iter().map(|s| (s.targets.clone(), s.labels.clone())).collect();
        for f in &self.cfg.file_sd_configs {
            groups.extend(promflow_scrape::file_sd::read_groups(&f.files));
        }
        let prefix = self.cfg.path_prefix.trim_matches('/');
        let alerts_path =
            if prefix.is_empty() { "/api/v2/alerts".to_string() } else { format!("/{prefix}/api/v2/alerts") };
        let (mut active, mut dropped) = (Vec::new(), Vec::new());
        for (targets, labels) in groups {
            for t in targets {
                let mut l = labels.clone();
                l.set("__address__", &t);
                l.set("__scheme__", &self.cfg.scheme);
                l.set("__alerts_path__", &alerts_path);
                match process(&l, &self.cfg.relabel_configs).filter(|l| !l.get("__address__").is_empty()) {
                    Some(l) => active.push(format!(
                        "{}://{}{}",
                        l.get("__scheme__"),
                        l.get("__address__"),
                        l.get("__alerts_path__")
                    )),
                    None => dropped.push(format!("{}://{t}{alerts_path}", self.cfg.scheme)),
                }
            }
        }
        (active, dropped)
    }
}

struct Settings {
    sets: Vec<AlertmanagerSet>,
    external_labels: Labels,
    relabel: Vec<RelabelConfig>,
}

/// Counters for `/metrics` (Prometheus's `prometheus_notifications_*`).
#[derive(Debug, Default)]
pub struct NotifierStats {
    /// Alerts sent, per Alertmanager attempt that succeeded.
    pub sent: AtomicU64,
    /// Alerts in batches that failed after retries.
    pub errors: AtomicU64,
    /// Alerts dropped because the queue was full or relabelling dropped them.
    pub dropped: AtomicU64,
}

/// Sends alerts to Alertmanagers in the background; see the crate documentation.
pub struct Notifier {
    settings: RwLock<Arc<Settings>>,
    queue: Mutex<VecDeque<Alert>>,
    wake: tokio::sync::Notify,
    stopping: AtomicBool,
    /// Counters.
    pub stats: NotifierStats,
}

impl Notifier {
    /// A notifier with no Alertmanagers, its sender running on `handle`.
    pub fn new(handle: &tokio::runtime::Handle) -> Arc<Self> {
        let n = Arc::new(Notifier {
            settings: RwLock::new(Arc::new(Settings {
                sets: Vec::new(),
                external_labels: Labels::new(),
                relabel: Vec::new(),
            })),
            queue: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
            stats: NotifierStats::default(),
        });
        handle.spawn(run(Arc::clone(&n)));
        n
    }

    /// Takes `alerting` and `global.external_labels` from a (re)loaded configuration.
    pub fn apply(&self, config: &Config) -> Result<(), Error> {
        let mut sets = Vec::new();
        for cfg in &config.alerting.alertmanagers {
            let client = promflow_scrape::client::http_client(&cfg.http_client(), cfg.timeout)
                .map_err(|e| Error::Client(e.to_string()))?;
            sets.push(AlertmanagerSet { cfg: cfg.clone(), client });
        }
        let settings = Settings {
            sets,
            external_labels: config.global.external_labels.clone(),
            relabel: config.alerting.alert_relabel_configs.clone(),
        };
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
        Ok(())
    }

    fn current(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Queues `alerts` for sending (after external labels and relabelling).
    pub fn send(&self, alerts: Vec<Alert>) {
        let settings = self.current();
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for mut a in alerts {
            a.labels.add_missing(&settings.external_labels);
            match process(&a.labels, &settings.relabel) {
                Some(l) if !l.is_empty() => a.labels = l,
                _ => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            if queue.len() >= QUEUE_CAPACITY {
                queue.pop_front();
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue.push_back(a);
        }
        drop(queue);
        self.wake.notify_one();
    }

    /// Alerts waiting to be sent.
    pub fn queue_length(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Writes the notifier's metrics, under Prometheus's names.
    pub fn write_metrics(&self, w: &mut promflow_storage::MetricsWriter) {
        let n = &self.stats;
        w.counter(
            "prometheus_notifications_sent_total",
            "Total number of alerts sent.",
            n.sent.load(Ordering::Relaxed),
        );
        w.counter(
            "prometheus_notifications_errors_total",
            "Total number of sent alerts affected by errors.",
            n.errors.load(Ordering::Relaxed),
        );
        w.counter(
            "prometheus_notifications_dropped_total",
            "Total number of alerts dropped due to errors when sending to Alertmanager.",
            n.dropped.load(Ordering::Relaxed),
        );
        w.gauge(
            "prometheus_notifications_queue_length",
            "The number of alert notifications in the queue.",
            self.queue_length(),
        );
        w.gauge(
            "prometheus_notifications_queue_capacity",
            "The capacity of the alert notifications queue.",
            QUEUE_CAPACITY,
        );
        w.gauge(
            "prometheus_notifications_alertmanagers_discovered",
            "The number of alertmanagers discovered and active.",
            self.alertmanagers().0.len(),
        );
    }

    /// The alert URLs of the discovered Alertmanagers, and of those relabelling dropped.
    pub fn alertmanagers(&self) -> (Vec<String>, Vec<String>) {
        let (mut active, mut dropped) = (Vec::new(), Vec::new());
        for set in &self.current().sets {
            let (a, d) = set.discover();
            active.extend(a);
            dropped.extend(d);
        }
        (active, dropped)
    }

    /// Sends what is queued, then stops the sender.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn next_batch(&self) -> Vec<Alert> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = queue.len().min(MAX_BATCH);
        queue.drain(..n).collect()
    }
}

async fn run(n: Arc<Notifier>) {
    loop {
        n.wake.notified().await;
        loop {
            let batch = n.next_batch();
            if batch.is_empty() {
                break;
            }
            send_batch(&n, &batch).await;
        }
        if n.stopping.load(Ordering::SeqCst) {
            return;
        }
    }
}

async fn send_batch(n: &Notifier, batch: &[Alert]) {
    let settings = n.current();
    let mut sends = Vec::new();
    for set in &settings.sets {
        let alerts: Vec<serde_json::Value> = batch
            .iter()
            .filter_map(|a| {
                let labels = process(&a.labels, &set.cfg.alert_relabel_configs).filter(|l| !l.is_empty())?;
                Some(alert_json(a, &labels))
            })
            .collect();
        if alerts.is_empty() {
            continue;
        }
        // what this entry's relabelling kept is what it sends
        let count = alerts.len() as u64;
        let body = serde_json::Value::Array(alerts).to_string();
        for url in set.discover().0 {
            let (client, body, timeout) = (set.client.clone(), body.clone(), set.cfg.timeout);
            sends.push(tokio::spawn(async move {
                (post_with_retries(&client, &url, body, timeout).await, url, count)
            }));
        }
    }
    for s in sends {
        match s.await {
            Ok((Ok(()), _, count)) => {
                n.stats.sent.fetch_add(count, Ordering::Relaxed);
            }
            Ok((Err(e), url, count)) => {
                n.stats.errors.fetch_add(count, Ordering::Relaxed);
                tracing::error!(alertmanager = %url, count, error = %e, "error sending alerts");
            }
            Err(e) => tracing::error!(error = %e, "alert sender task failed"),
        }
    }
}

/// One POST, retried after the backoffs while the entry's timeout allows.
async fn post_with_retries(
    client: &reqwest::Client,
    url: &str,
    body: String,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut attempt = 0;
    loop {
        let result = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| {
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("bad response status {}", r.status()))
                }
            });
        match result {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt >= RETRY_BACKOFF.len()
                    || tokio::time::Instant::now() + RETRY_BACKOFF[attempt] >= deadline =>
            {
                return Err(e)
            }
            Err(e) => {
                tracing::debug!(alertmanager = %url, error = %e, attempt, "retrying alert send");
                tokio::time::sleep(RETRY_BACKOFF[attempt]).await;
                attempt += 1;
            }
        }
    }
}

/// Alertmanager's `postableAlert`.
fn alert_json(a: &Alert, labels: &Labels) -> serde_json::Value {
    let map = |pairs: Vec<(String, String)>| {
        serde_json::Value::Object(pairs.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect())
    };
    serde_json::json!({
        "labels": map(labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect()),
        "annotations": map(a.annotations.clone().into_iter().collect()),
        "startsAt": rfc3339(a.starts_at_ms),
        "endsAt": rfc3339(a.ends_at_ms),
        "generatorURL": a.generator_url,
    })
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_alertmanagers_postable_alert() {
        let a = Alert {
            labels: Labels::from_pairs([("alertname", "A"), ("job", "x")]),
            annotations: [("summary".to_string(), "s".to_string())].into(),
            starts_at_ms: 1_700_000_000_123,
            ends_at_ms: 1_700_000_240_123,
            generator_url: "http://h/graph?g0.expr=up&g0.tab=1".into(),
        };
        let v = alert_json(&a, &a.labels);
        assert_eq!(v["labels"]["alertname"], "A");
        assert_eq!(v["startsAt"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["endsAt"], "2023-11-14T22:17:20.123Z");
        assert_eq!(v["annotations"]["summary"], "s");
    }
}
