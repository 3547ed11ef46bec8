//! The remote-write sender: every `remote_write` endpoint of the configuration gets a queue
//! that follows promflow's own WAL ([`promflow_storage::wal_tail`]) and sends what it reads
//! with remote write 1.0.
//!
//! A queue's reader thread reads committed samples in WAL order, names each series (external
//! labels the series lacks, then `write_relabel_configs`), and hands them to shards by series,
//! so one series' samples are sent in order. A shard sends a batch when it holds
//! `max_samples_per_send` samples or its oldest has waited `batch_send_deadline`. A send that
//! fails with 5xx, 429 or a network error is retried with a doubling backoff (from
//! `min_backoff` to `max_backoff`) until it succeeds: meanwhile the shards' queues fill
//! (`capacity` samples each) and the reader stops reading, so an outage holds the queue's
//! place in the WAL instead of samples in memory. Other 4xx answers drop the batch
//! (`prometheus_remote_storage_samples_failed_total`, logged with the answer).
//!
//! The place up to which everything has been sent is saved in
//! `<data>/promflow/remote/<queue>/position` (at most once a second), and a restarted queue
//! resumes there: samples written while promflow or the receiver was down are sent, and the
//! storage keeps the WAL segments a queue has not read (`docs/configuration.md`).

mod metrics;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promflow_config::{relabel, Config, RemoteWriteConfig};
use promflow_storage::wal_tail::{SampleAt, TailValue, WalPosition, WalTail};
use promflow_storage::{Db, Labels};
use tokio::sync::mpsc;

use crate::{encode, encode_v2, Label, Message1or2, Sample, TimeSeries, WriteRequest, WriteRequestV2};
use metrics::{DropReason, QueueLabels, QueueMetrics};

/// How often a reader that has caught up with the WAL looks again.
const POLL: Duration = Duration::from_millis(50);

/// How often the reader saves the places (shards save after each send).
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// How often the shard count is reconsidered.
const RESHARD_EVERY: Duration = Duration::from_secs(10);

/// How long a stopping queue waits for the requests under way to be answered (their batches
/// then count as sent); what was not sent is read again from the saved position.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The remote-write queues of the running configuration.
pub struct RemoteWriter {
    db: Arc<Db>,
    runtime: tokio::runtime::Handle,
    queues: Mutex<Vec<Queue>>,
    /// Where metric metadata comes from (`metadata_config`): the scrape targets.
    scrape: Option<Arc<promflow_scrape::ScrapeManager>>,
}

/// One endpoint's queue: its configuration and the thread that runs it.
struct Queue {
    config: RemoteWriteConfig,
    external: Labels,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a queue's reader thread and shards share with the manager.
struct Shared {
    /// `remote_name`: the configured name, or a hash of the URL.
    name: String,
    /// The URL, the `url` label of the queue's metrics.
    url_label: String,
    stop: AtomicBool,
    metrics: QueueMetrics,
    samples_read: AtomicU64,
    /// Samples the receiver took (`samples_total` counts every attempt, as Prometheus's).
    sent_ok: AtomicU64,
    /// The receiver refused remote write 2.0: the queue sends 1.0.
    v1_only: AtomicBool,
}

impl RemoteWriter {
    /// A sender with no queues; [`RemoteWriter::apply`] starts them. With `scrape`, queues
    /// also send the scrape targets' metric metadata (`metadata_config`).
    pub fn new(
        db: Arc<Db>,
        runtime: tokio::runtime::Handle,
        scrape: Option<Arc<promflow_scrape::ScrapeManager>>,
    ) -> Arc<RemoteWriter> {
        Arc::new(RemoteWriter { db, runtime, queues: Mutex::new(Vec::new()), scrape })
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Vec<Queue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the queues those of `cfg`: an endpoint whose settings (and the external labels)
    /// are unchanged keeps running; the others stop, saving their place, and start again
    /// from it with the new settings.
    pub fn apply(&self, cfg: &Config) -> Result<(), crate::Error> {
        let external = cfg.global.external_labels.clone();
        // build every client first: a bad one changes nothing
        let mut wanted = Vec::new();
        for rw in &cfg.remote_write {
            for (set, what) in [
                (rw.oauth2.is_some(), "oauth2: not implemented, requests go without it"),
                (
                    rw.sigv4.is_some() || rw.azuread.is_some() || rw.google_iam.is_some(),
                    "sigv4/azuread/google_iam: not implemented, requests go unsigned",
                ),
            ] {
                if set {
                    tracing::warn!(url = %rw.url, "remote_write {what}");
                }
            }
            let timeout = rw.remote_timeout.max(Duration::from_millis(1));
            let client = promflow_scrape::client::http_client(&rw.http_client(), timeout)
                .map_err(|e| crate::Error::Client(format!("remote_write {}", rw.url), e.to_string()))?;
            wanted.push((rw.clone(), client));
        }
        let mut queues = self.queues();
        let mut kept = Vec::new();
        for mut q in queues.drain(..) {
            let same = wanted.iter().position(|(rw, _)| *rw == q.config && external == q.external);
            match same {
                Some(i) => {
                    wanted.remove(i);
                    kept.push(q);
                }
                None => q.stop(),
            }
        }
        for (rw, client) in wanted {
            kept.push(self.start(rw, external.clone(), client));
        }
        *queues = kept;
        Ok(())
    }

    fn start(&self, config: RemoteWriteConfig, external: Labels, client: reqwest::Client) -> Queue {
        let name = if config.name.is_empty() {
            format!("{:06x}", Labels::from_pairs([("url", config.url.as_str())]).stable_hash() & 0xff_ffff)
        } else {
            config.name.clone()
        };
        let shared = Arc::new(Shared {
            url_label: config.url.clone(),
            name,
            stop: AtomicBool::new(false),
            metrics: QueueMetrics::default(),
            samples_read: AtomicU64::new(0),
            sent_ok: AtomicU64::new(0),
            v1_only: AtomicBool::new(false),
        });
        let dir = self.db.dir().join("remote").join(dir_name(&shared.name));
        let reader = Reader {
            config: config.clone(),
            external: external.clone(),
            shared: Arc::clone(&shared),
            client,
            runtime: self.runtime.clone(),
            position_file: dir.join("position"),
            series: HashMap::new(),
        };
        let meta = &config.metadata_config;
        if let (true, Some(scrape)) = (meta.send, &self.scrape) {
            let endpoint = Endpoint {
                client: reader.client.clone(),
                config: config.clone(),
                shared: Arc::clone(&shared),
            };
            self.runtime.spawn(send_metadata(endpoint, Arc::clone(scrape)));
        }
        let db = Arc::clone(&self.db);
        let thread = std::thread::Builder::new()
            .name(format!("remote-write-{}", shared.name))
            .spawn(move || reader.run(&db))
            .map_err(|e| tracing::error!(error = %e, "could not start a remote-write queue"))
            .ok();
        tracing::info!(remote_name = %shared.name, url = %config.url, "remote write queue started");
        Queue { config, external, shared, thread }
    }

    /// Writes the metrics of every queue.
    pub fn write_metrics(&self, w: &mut promflow_storage::MetricsWriter) {
        let queues = self.queues();
        let samples_in =
            queues.iter().map(|q| q.shared.samples_read.load(Ordering::Relaxed)).max().unwrap_or(0);
        let highest = self.db.newest_sample_time().unwrap_or(0);
        let rows: Vec<_> = queues
            .iter()
            .map(|q| {
                let labels = QueueLabels {
                    name: &q.shared.name,
                    url: &q.shared.url_label,
                    config: &q.config.queue_config,
                };
                (labels, &q.shared.metrics)
            })
            .collect();
        metrics::write(w, samples_in, highest, &rows);
    }

    /// Stops every queue, each saving the place up to which it has sent.
    pub fn stop(&self) {
        for mut q in self.queues().drain(..) {
            q.stop();
        }
    }
}

impl Queue {
    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        tracing::info!(remote_name = %self.shared.name, "remote write queue stopped");
    }
}

/// A file-system-safe directory name for a queue.
fn dir_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// A series as it is sent: its labels after external labels and relabelling.
type Series = Arc<Vec<Label>>;

/// Samples on their way to one request.
struct Batch {
    /// Numbers batches in the order the reader opened them ([`Unsent`]).
    id: u64,
    samples: Vec<(Series, i64, TailValue)>,
    opened: Instant,
}

/// Per shard, the batches opened and not yet sent (or dropped), oldest first, with where
/// each one's first sample is in the WAL. A shard sends in order, so everything before its
/// oldest unsent batch has been sent: that is the shard's place, saved after every send.
#[derive(Default)]
struct Unsent {
    shards: Vec<VecDeque<(u64, SampleAt)>>,
    /// How far the reader has read: the place of a shard with nothing unsent.
    read: SampleAt,
    /// What was saved last.
    saved: Option<Resume>,
    /// The furthest place a resumed queue resumed from: until the reader is past it, the old
    /// places stay (a shard that skipped what it had sent has nothing unsent, yet its old
    /// place is ahead).
    resumed_to: Option<SampleAt>,
    file: PathBuf,
}

impl Unsent {
    fn is_empty(&self) -> bool {
        self.shards.iter().all(VecDeque::is_empty)
    }

    /// Each shard's place: its oldest unsent sample, or where the reader is.
    fn places(&self) -> Vec<SampleAt> {
        self.shards.iter().map(|q| q.front().map_or(self.read, |(_, at)| *at)).collect()
    }

    /// Saves the places if they moved.
    fn save(&mut self) {
        if self.resumed_to.is_some_and(|to| self.read < to) {
            return;
        }
        let places = Resume(self.places());
        if self.saved.as_ref() == Some(&places) {
            return;
        }
        match write_atomically(&self.file, &places.encode()) {
            Ok(()) => self.saved = Some(places),
            Err(e) => {
                tracing::warn!(file = %self.file.display(), error = %e, "remote write: could not save the queue's position")
            }
        }
    }
}

/// Where a queue goes on from: per shard (series ref modulo their count), the first sample
/// it has not sent. Saved as the shard count, then one `segment:offset:index` per line.
#[derive(Clone, Debug, PartialEq)]
struct Resume(Vec<SampleAt>);

impl Resume {
    /// Where the WAL must be read from.
    fn from(&self) -> WalPosition {
        self.0.iter().min().map_or_else(WalPosition::default, |at| at.record)
    }

    /// Whether the sample at `at` of series `r` was sent before the save.
    fn sent(&self, r: u64, at: SampleAt) -> bool {
        let n = self.0.len().max(1) as u64;
        self.0.get((r % n) as usize).is_some_and(|first_unsent| at < *first_unsent)
    }

    fn encode(&self) -> String {
        let mut out = format!("{}\n", self.0.len());
        for at in &self.0 {
            out.push_str(&format!("{at}\n"));
        }
        out
    }

    fn decode(text: &str) -> Result<Resume, String> {
        let mut lines = text.lines();
        let n: usize = lines.next().unwrap_or("").trim().parse().map_err(|e| format!("shard count: {e}"))?;
        let places: Vec<SampleAt> = lines.map(str::parse).collect::<Result<_, _>>()?;
        if places.len() != n || n == 0 {
            return Err(format!("{n} shards, {} places", places.len()));
        }
        Ok(Resume(places))
    }
}

/// A queue's reader: the WAL tail, the shards, and the series it has named.
struct Reader {
    config: RemoteWriteConfig,
    external: Labels,
    shared: Arc<Shared>,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    position_file: PathBuf,
    /// Series ref → its labels as sent, or `None` when relabelling drops it.
    series: HashMap<u64, Option<Series>>,
}

/// The reader's side of one shard.
struct ShardInput {
    tx: mpsc::Sender<Batch>,
    pending: Option<Batch>,
}

impl Reader {
    fn run(mut self, db: &Db) {
        let resume = read_resume(&self.position_file);
        let mut tail = loop {
            match db.tail_wal(resume.as_ref().map(Resume::from)) {
                Ok(t) => break t,
                Err(e) => {
                    tracing::error!(remote_name = %self.shared.name, error = %e, "remote write: cannot read the WAL; retrying");
                    if self.sleep(Duration::from_secs(5)) {
                        return;
                    }
                }
            }
        };
        tracing::info!(remote_name = %self.shared.name, position = %tail.position(), resumed = resume.is_some(), "remote write queue reads the WAL");
        let qc = self.config.queue_config.clone();
        let per_send = qc.max_samples_per_send.max(1) as usize;
        let (min_shards, max_shards) = (qc.min_shards.max(1) as usize, qc.max_shards.max(1) as usize);
        let first = resume.as_ref().map_or(min_shards, |r| r.0.len().clamp(min_shards, max_shards));
        let read_to = |tail: &WalTail| SampleAt { record: tail.position(), index: 0 };
        let unsent = Arc::new(Mutex::new(Unsent {
            read: read_to(&tail),
            saved: resume.clone(),
            resumed_to: resume.as_ref().and_then(|r| r.0.iter().max().copied()),
            file: self.position_file.clone(),
            ..Unsent::default()
        }));
        let mut shards = self.start_shards(first, &unsent);
        let mut next_batch = 0u64;
        let (mut saved_at, mut resharded_at) = (Instant::now(), Instant::now());
        // a new queue's place is saved at once: a restart before its first send must not
        // begin again at the WAL's end, past what was written meanwhile
        lock(&unsent).save();
        let (mut read_since, mut sent_since) = (0u64, self.shared.sent_ok.load(Ordering::Relaxed));
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            let samples = match tail.read(per_send) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(remote_name = %self.shared.name, error = %e, "remote write: reading the WAL failed; retrying");
                    Vec::new()
                }
            };
            self.note_tail(&tail);
            let caught_up = samples.is_empty();
            read_since += samples.len() as u64;
            self.shared.samples_read.fetch_add(samples.len() as u64, Ordering::Relaxed);
            for s in samples {
                // sent before the restart this queue resumes from
                if resume.as_ref().is_some_and(|r| r.sent(s.series, s.at)) {
                    continue;
                }
                // histograms and exemplars go only where the endpoint asks for them
                let wanted = match s.value {
                    TailValue::Float(_) => true,
                    TailValue::Histogram(_) => self.config.send_native_histograms,
                    TailValue::Exemplar(_) => self.config.send_exemplars,
                };
                if !wanted {
                    continue;
                }
                let Some(series) = self.name_series(&tail, s.series) else { continue };
                let n = shards.len();
                let i = (s.series % n as u64) as usize;
                let shard = &mut shards[i];
                let batch = shard.pending.get_or_insert_with(|| {
                    let id = next_batch;
                    next_batch += 1;
                    lock(&unsent).shards[i].push_back((id, s.at));
                    Batch { id, samples: Vec::with_capacity(per_send), opened: Instant::now() }
                });
                batch.samples.push((series, s.t, s.value));
                self.shared.metrics.samples_pending.fetch_add(1, Ordering::Relaxed);
                if batch.samples.len() >= per_send && !self.flush(shard) {
                    break;
                }
            }
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            lock(&unsent).read = read_to(&tail);
            for shard in shards.iter_mut() {
                let due =
                    shard.pending.as_ref().is_some_and(|b| b.opened.elapsed() >= qc.batch_send_deadline);
                if due {
                    self.flush(shard);
                }
            }
            // shards save after each send; this moves the place of shards with nothing to send
            if saved_at.elapsed() >= SAVE_EVERY {
                saved_at = Instant::now();
                lock(&unsent).save();
            }
            if resharded_at.elapsed() >= RESHARD_EVERY {
                // series gone from the head (the tail forgot them at a checkpoint) go too
                if self.series.len() > tail.series_count() {
                    self.series.retain(|r, _| tail.labels(*r).is_some());
                }
                let secs = resharded_at.elapsed().as_secs_f64();
                resharded_at = Instant::now();
                let sent = self.shared.sent_ok.load(Ordering::Relaxed);
                let desired = self.desired_shards(
                    read_since as f64 / secs,
                    (sent - sent_since) as f64 / secs,
                    shards.len(),
                );
                (read_since, sent_since) = (0, sent);
                self.shared.metrics.shards_desired.store(desired as u64, Ordering::Relaxed);
                if desired != shards.len() {
                    tracing::info!(remote_name = %self.shared.name, from = shards.len(), to = desired, "remote write: resharding");
                    for shard in shards.iter_mut() {
                        self.flush(shard);
                    }
                    shards.clear();
                    // series move between shards: every place is the read position again
                    if !self.wait_sent(&unsent, None) {
                        break;
                    }
                    shards = self.start_shards(desired, &unsent);
                    lock(&unsent).save();
                }
            }
            if caught_up && self.sleep(POLL) {
                break;
            }
        }
        // stopping: let the requests under way finish, then keep the place of what was sent
        drop(shards);
        self.wait_sent(&unsent, Some(Instant::now() + STOP_GRACE));
        lock(&unsent).save();
    }

    /// Publishes the tail's counters.
    fn note_tail(&self, tail: &WalTail) {
        let (m, st) = (&self.shared.metrics, tail.stats());
        for (i, n) in st.records.iter().enumerate() {
            m.records[i].store(*n, Ordering::Relaxed);
        }
        m.corruptions.store(st.corruptions, Ordering::Relaxed);
        m.segments_missed.store(st.segments_missed, Ordering::Relaxed);
        m.current_segment.store(tail.position().segment, Ordering::Relaxed);
    }

    /// The labels a series is sent with (the external labels it lacks, then
    /// `write_relabel_configs`), or `None` (counted) when it is dropped or unknown.
    fn name_series(&mut self, tail: &WalTail, r: u64) -> Option<Series> {
        let metrics = &self.shared.metrics;
        if let Some(named) = self.series.get(&r) {
            if named.is_none() {
                metrics.dropped(DropReason::Relabel, 1);
            }
            return named.clone();
        }
        let Some(labels) = tail.labels(r) else {
            metrics.dropped(DropReason::UnknownSeries, 1);
            return None;
        };
        let mut labels = labels.clone();
        labels.add_missing(&self.external);
        let named = relabel::process(&labels, &self.config.write_relabel_configs).map(|l| {
            Arc::new(
                l.iter()
                    .map(|l| Label { name: l.name.to_string(), value: l.value.to_string() })
                    .collect::<Vec<_>>(),
            )
        });
        if named.is_none() {
            metrics.dropped(DropReason::Relabel, 1);
        }
        self.series.insert(r, named.clone());
        named
    }

    /// Hands a shard its pending batch, waiting while its queue is full; `false` when the
    /// queue is stopping.
    fn flush(&self, shard: &mut ShardInput) -> bool {
        let Some(batch) = shard.pending.take() else { return true };
        let batch = match shard.tx.try_send(batch) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Full(b)) => b,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        };
        self.shared.metrics.enqueue_retries.fetch_add(1, Ordering::Relaxed);
        let mut batch = batch;
        // the shard is behind (a slow or absent receiver): wait, and so stop reading the WAL
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                shard.pending = Some(batch);
                return false;
            }
            match shard.tx.try_send(batch) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(b)) => {
                    batch = b;
                    std::thread::sleep(POLL);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
    }

    fn start_shards(&self, n: usize, unsent: &Arc<Mutex<Unsent>>) -> Vec<ShardInput> {
        let qc = &self.config.queue_config;
        // a shard holds `capacity` samples: that many batches of `max_samples_per_send` wait
        let depth = (qc.capacity.max(1) / qc.max_samples_per_send.max(1)).max(1) as usize;
        self.shared.metrics.shards.store(n as u64, Ordering::Relaxed);
        lock(unsent).shards = vec![VecDeque::new(); n];
        (0..n)
            .map(|shard| {
                let (tx, rx) = mpsc::channel(depth);
                let endpoint = Endpoint {
                    client: self.client.clone(),
                    config: self.config.clone(),
                    shared: Arc::clone(&self.shared),
                };
                let sender = Sender { endpoint, unsent: Arc::clone(unsent), shard };
                self.runtime.spawn(sender.run(rx));
                ShardInput { tx, pending: None }
            })
            .collect()
    }

    /// The shards that keep up with `rate_in` samples a second, given that `rate_out` went
    /// out with `current` shards: grows when the queue falls behind while sends succeed,
    /// shrinks when it is idle.
    fn desired_shards(&self, rate_in: f64, rate_out: f64, current: usize) -> usize {
        let qc = &self.config.queue_config;
        let (min, max) = (qc.min_shards.max(1) as usize, qc.max_shards.max(1) as usize);
        let pending = self.shared.metrics.samples_pending.load(Ordering::Relaxed).max(0) as f64;
        let failing = self.shared.metrics.samples_retried.load(Ordering::Relaxed) > 0 && rate_out == 0.0;
        let desired = if failing {
            current
        } else if pending > (qc.capacity as f64) * current as f64 / 2.0 && rate_out < rate_in {
            current * 2
        } else if pending < qc.max_samples_per_send as f64 && rate_in * 2.0 < rate_out {
            current / 2
        } else {
            current
        };
        desired.clamp(min, max)
    }

    /// Waits until every batch handed out is done, or until `deadline`; `false` when it
    /// stopped waiting before.
    fn wait_sent(&self, unsent: &Mutex<Unsent>, deadline: Option<Instant>) -> bool {
        loop {
            if lock(unsent).is_empty() {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d)
                || (deadline.is_none() && self.shared.stop.load(Ordering::Acquire))
            {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sleeps up to `d`; `true` when the queue is stopping.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.shared.stop.load(Ordering::Acquire) {
                return true;
            }
            std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
        }
        self.shared.stop.load(Ordering::Acquire)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_resume(file: &Path) -> Option<Resume> {
    let text = std::fs::read_to_string(file).ok()?;
    match Resume::decode(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "remote write: ignoring an unreadable queue position; starting at the WAL's end");
            None
        }
    }
}

fn write_atomically(file: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}

/// Where and how a queue sends: shards and the metadata task share it.
struct Endpoint {
    client: reqwest::Client,
    config: RemoteWriteConfig,
    shared: Arc<Shared>,
}

/// One shard's sending task.
struct Sender {
    endpoint: Endpoint,
    unsent: Arc<Mutex<Unsent>>,
    shard: usize,
}

impl std::ops::Deref for Sender {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// How a send ended.
enum Outcome {
    Sent,
    /// Worth retrying (5xx, 429, a network error), with the receiver's `Retry-After`.
    Retry(String, Option<Duration>),
    /// Not worth retrying: the batch is dropped.
    Failed(String),
    /// The receiver takes only remote write 1.0: send again as 1.0 at once.
    Older,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Batch>) {
        while let Some(batch) = rx.recv().await {
            let n = batch.samples.len() as u64;
            let newest = batch.samples.iter().map(|s| s.1).max().unwrap_or(0);
            let req = to_request(&batch.samples);
            let mut bodies: [Option<Vec<u8>>; 2] = [None, None];
            let qc = &self.config.queue_config;
            let mut backoff = qc.min_backoff;
            let m = &self.shared.metrics;
            loop {
                if self.shared.stop.load(Ordering::Acquire) {
                    // unsent: its samples are read again from the saved position
                    return;
                }
                let message = self.message();
                let body = bodies[message as usize]
                    .get_or_insert_with(|| match message {
                        Message1or2::V1 => encode(&req),
                        Message1or2::V2 => encode_v2(&WriteRequestV2::from_v1(&req)),
                    })
                    .clone();
                m.samples_total.fetch_add(n, Ordering::Relaxed);
                m.bytes_total.fetch_add(body.len() as u64, Ordering::Relaxed);
                let started = Instant::now();
                let outcome = self.send(message, body, n).await;
                m.observe_duration(started.elapsed().as_secs_f64());
                match outcome {
                    Outcome::Sent => {
                        self.shared.sent_ok.fetch_add(n, Ordering::Relaxed);
                        m.highest_sent_ms.fetch_max(newest, Ordering::Relaxed);
                        break;
                    }
                    Outcome::Failed(why) => {
                        m.samples_failed.fetch_add(n, Ordering::Relaxed);
                        tracing::error!(remote_name = %self.shared.name, url = %self.config.url, samples = n, error = %why, "remote write: non-recoverable error; the batch is dropped");
                        break;
                    }
                    Outcome::Older => continue,
                    Outcome::Retry(why, after) => {
                        m.samples_retried.fetch_add(n, Ordering::Relaxed);
                        tracing::warn!(remote_name = %self.shared.name, url = %self.config.url, samples = n, error = %why, retry_in = ?backoff, "remote write: recoverable error; retrying");
                        let wait = after.unwrap_or(backoff).min(qc.max_backoff.max(qc.min_backoff));
                        self.pause(wait).await;
                        backoff = (backoff * 2).min(qc.max_backoff);
                    }
                }
            }
            m.samples_pending.fetch_sub(n as i64, Ordering::Relaxed);
            let mut unsent = lock(&self.unsent);
            if let Some(queue) = unsent.shards.get_mut(self.shard) {
                if queue.front().is_some_and(|(id, _)| *id == batch.id) {
                    queue.pop_front();
                }
            }
            // at once: a restart must not send it again (Prometheus refuses a whole request
            // that repeats a sample older than the series' newest)
            unsent.save();
        }
    }
}

impl Endpoint {
    /// Sleeps `d`, waking early when the queue stops.
    async fn pause(&self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < until && !self.shared.stop.load(Ordering::Acquire) {
            tokio::time::sleep(POLL.min(until - tokio::time::Instant::now())).await;
        }
    }

    /// The message this queue sends: 2.0 when configured, until a receiver refuses it.
    fn message(&self) -> Message1or2 {
        if self.config.protobuf_message == Message1or2::V2.name()
            && !self.shared.v1_only.load(Ordering::Relaxed)
        {
            Message1or2::V2
        } else {
            Message1or2::V1
        }
    }

    async fn send(&self, message: Message1or2, body: Vec<u8>, n: u64) -> Outcome {
        let (content_type, version) = match message {
            Message1or2::V1 => ("application/x-protobuf", "0.1.0"),
            Message1or2::V2 => ("application/x-protobuf;proto=io.prometheus.write.v2.Request", "2.0.0"),
        };
        let mut req = self
            .client
            .post(&self.config.url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", content_type)
            .header("X-Prometheus-Remote-Write-Version", version);
        for (k, v) in &self.config.headers {
            req = req.header(k, v);
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(e.to_string(), None),
        };
        let status = resp.status();
        if message == Message1or2::V2 && status.as_u16() == 415 {
            // a receiver that knows only 1.0 says so: this queue sends 1.0 from now on
            tracing::warn!(remote_name = %self.shared.name, url = %self.config.url, "remote write: the receiver refuses 2.0 (415); sending 1.0");
            self.shared.v1_only.store(true, Ordering::Relaxed);
            return Outcome::Older;
        }
        if status.is_success() {
            let written = resp.headers().get("X-Prometheus-Remote-Write-Samples-Written");
            let written = written.and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if message == Message1or2::V2 && written.is_none() && n > 0 {
                // a 1.0 receiver that ignores the Content-Type reads a 2.0 body as an empty
                // 1.0 request and answers 2xx having written nothing (Prometheus 2.x does)
                tracing::warn!(remote_name = %self.shared.name, url = %self.config.url, "remote write: the receiver does not say what it wrote, so it does not know 2.0; sending 1.0");
                self.shared.v1_only.store(true, Ordering::Relaxed);
                return Outcome::Older;
            }
            if message == Message1or2::V2 && written.is_some_and(|w| w < n) {
                tracing::warn!(remote_name = %self.shared.name, sent = n, written = ?written, "remote write: the receiver wrote fewer samples than sent");
            }
            return Outcome::Sent;
        }
        let retry_after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let why = format!("server returned HTTP status {status}: {}", text.trim());
        if status.is_server_error() || status.as_u16() == 429 {
            Outcome::Retry(why, retry_after)
        } else {
            Outcome::Failed(why)
        }
    }
}

/// How many times one metadata request is tried before it waits for the next interval.
const METADATA_TRIES: u32 = 3;

/// Sends the scrape targets' metric metadata every `send_interval` while the queue runs, as
/// requests of metadata only (one entry per metric family, at most `max_samples_per_send`
/// a request). Remote write 2.0 carries metadata on its series, which promflow's 2.0
/// requests do not: a queue sending 2.0 sends no metadata.
async fn send_metadata(endpoint: Endpoint, scrape: Arc<promflow_scrape::ScrapeManager>) {
    let mc = &endpoint.config.metadata_config;
    let interval = mc.send_interval.max(Duration::from_secs(1));
    let per_request = usize::try_from(mc.max_samples_per_send).unwrap_or(0).max(1);
    let m = &endpoint.shared.metrics;
    while !endpoint.shared.stop.load(Ordering::Acquire) {
        if endpoint.message() == Message1or2::V1 {
            let families = metadata_of(&scrape);
            for batch in families.chunks(per_request) {
                let body = encode(&WriteRequest { timeseries: Vec::new(), metadata: batch.to_vec() });
                let n = batch.len() as u64;
                let mut backoff = endpoint.config.queue_config.min_backoff;
                for attempt in 1..=METADATA_TRIES {
                    m.metadata_total.fetch_add(n, Ordering::Relaxed);
                    m.metadata_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    match endpoint.send(Message1or2::V1, body.clone(), 0).await {
                        Outcome::Sent | Outcome::Older => break,
                        Outcome::Retry(why, _) if attempt < METADATA_TRIES => {
                            m.metadata_retried.fetch_add(n, Ordering::Relaxed);
                            tracing::warn!(remote_name = %endpoint.shared.name, error = %why, "remote write: sending metadata failed; retrying");
                            endpoint.pause(backoff).await;
                            backoff = (backoff * 2).min(endpoint.config.queue_config.max_backoff);
                        }
                        Outcome::Retry(why, _) | Outcome::Failed(why) => {
                            m.metadata_failed.fetch_add(n, Ordering::Relaxed);
                            tracing::error!(remote_name = %endpoint.shared.name, error = %why, "remote write: metadata not sent");
                            break;
                        }
                    }
                }
            }
        }
        endpoint.pause(interval).await;
    }
}

/// One metadata entry per metric family the scrape targets expose (the first target's wins
/// when they differ), in the wire's form.
fn metadata_of(scrape: &promflow_scrape::ScrapeManager) -> Vec<crate::MetricMetadata> {
    use promflow_scrape::exposition::MetricType as T;
    let mut families: std::collections::BTreeMap<String, crate::MetricMetadata> = Default::default();
    for (_, m) in scrape.metadata() {
        // prometheus.MetricMetadata.MetricType
        let kind = match m.metric_type {
            T::Unknown => 0,
            T::Counter => 1,
            T::Gauge => 2,
            T::Histogram => 3,
            T::GaugeHistogram => 4,
            T::Summary => 5,
            T::Info => 6,
            T::StateSet => 7,
        };
        families.entry(m.family.clone()).or_insert(crate::MetricMetadata {
            r#type: kind,
            metric_family_name: m.family,
            help: m.help,
            unit: m.unit,
        });
    }
    families.into_values().collect()
}

/// A write request of a batch: one time series per distinct series, its samples,
/// histograms and exemplars in order.
fn to_request(samples: &[(Series, i64, TailValue)]) -> WriteRequest {
    let mut index: HashMap<*const Vec<Label>, usize> = HashMap::new();
    let mut timeseries: Vec<TimeSeries> = Vec::new();
    for (series, t, v) in samples {
        let i = *index.entry(Arc::as_ptr(series)).or_insert_with(|| {
            timeseries.push(TimeSeries {
                exemplars: Vec::new(),
                labels: series.as_ref().clone(),
                samples: Vec::new(),
                histograms: Vec::new(),
            });
            timeseries.len() - 1
        });
        let ts = &mut timeseries[i];
        match v {
            TailValue::Float(v) => ts.samples.push(Sample { value: *v, timestamp: *t }),
            TailValue::Histogram(h) => ts.histograms.push(crate::Histogram::from_float_histogram(*t, h)),
            TailValue::Exemplar(e) => ts.exemplars.push(crate::Exemplar {
                labels: e
                    .labels
                    .iter()
                    .map(|l| Label { name: l.name.to_string(), value: l.value.to_string() })
                    .collect(),
                value: e.value,
                timestamp: e.t,
            }),
        }
    }
    WriteRequest { timeseries, metadata: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_queue_skips_per_shard_what_it_had_sent() {
        let at = |offset, index| SampleAt { record: WalPosition { segment: 2, offset }, index };
        let mut unsent =
            Unsent { shards: vec![VecDeque::new(), VecDeque::new()], read: at(500, 0), ..Unsent::default() };
        unsent.shards[1].push_back((7, at(100, 3)));
        unsent.shards[1].push_back((8, at(300, 0)));
        // shard 0 sent everything read; shard 1 still owes from record 100's fourth sample
        let resume = Resume(unsent.places());
        assert_eq!(Resume::decode(&resume.encode()), Ok(resume.clone()));
        assert_eq!(resume.from(), WalPosition { segment: 2, offset: 100 });
        assert!(resume.sent(4, at(100, 5)), "shard 0 sent it");
        assert!(resume.sent(5, at(100, 2)), "before shard 1's place");
        assert!(!resume.sent(5, at(100, 3)));
        assert!(!resume.sent(4, at(500, 0)));
        assert!(Resume::decode("2\n1:0:0\n").is_err());
    }

    #[test]
    fn a_request_groups_a_series_samples() {
        let a: Series = Arc::new(vec![Label { name: "__name__".into(), value: "a".into() }]);
        let b: Series = Arc::new(vec![Label { name: "__name__".into(), value: "b".into() }]);
        let f = TailValue::Float;
        let req = to_request(&[(a.clone(), 1, f(1.0)), (b, 1, f(2.0)), (a, 2, f(3.0))]);
        assert_eq!(req.timeseries.len(), 2);
        assert_eq!(
            req.timeseries[0].samples,
            vec![Sample { value: 1.0, timestamp: 1 }, Sample { value: 3.0, timestamp: 2 }]
        );
    }
}
