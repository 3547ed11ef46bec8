//! The database: a head, its WAL, the append feed and the data directory lock.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use crate::head::{AppendResult, Head, SeriesRef, U64Map};
use crate::wal::{self, RefSample, WalWriter};
use crate::{
    is_stale_nan, Appender, CommitStats, CommittedBatch, Error, Labels, Matcher, Querier, Sample, Series,
    Timestamp,
};

/// Name of promflow's folder inside the data directory; nothing outside it is ever written.
const PROMFLOW_DIR: &str = "promflow";
/// The WAL folder inside [`PROMFLOW_DIR`].
const WAL_DIR: &str = "wal";
/// The lock file inside [`PROMFLOW_DIR`].
const LOCK_FILE: &str = "lock";
/// The commit buffer is dropped after a batch bigger than this, not kept for reuse.
const MAX_KEPT_BUFFER: usize = 64 << 20;

/// Options for [`Db::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbOptions {
    /// A WAL segment is cut once the next write would make it larger than this (bytes). A
    /// single commit bigger than this still goes into one segment.
    pub segment_size: u64,
}

impl Default for DbOptions {
    /// 128 MiB segments, as Prometheus.
    fn default() -> Self {
        DbOptions { segment_size: 128 << 20 }
    }
}

/// A snapshot of the database's counters, in the spirit of Prometheus's
/// `/api/v1/status/tsdb`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Series in the head.
    pub num_series: u64,
    /// Samples in the head.
    pub num_samples: u64,
    /// Chunks in the head, open ones included.
    pub num_chunks: u64,
    /// Oldest sample timestamp in the head.
    pub min_time: Option<Timestamp>,
    /// Newest sample timestamp in the head.
    pub max_time: Option<Timestamp>,
    /// Torn or corrupt WAL records found when opening.
    pub wal_corruptions: u64,
    /// Bytes cut off WAL segments when opening.
    pub wal_truncated_bytes: u64,
    /// WAL segment files.
    pub wal_segments: u64,
    /// Samples a commit dropped because a concurrent commit had made them out of order or
    /// duplicate after they were appended (since open).
    pub commit_dropped_samples: u64,
    /// Series per metric name, largest first.
    pub series_count_by_metric: Vec<(String, u64)>,
    /// Distinct values per label name, largest first.
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    /// Series per `name=value` pair, largest first.
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
    /// Distinct label pairs.
    pub num_label_pairs: u64,
}

/// State only committers touch, behind one mutex that also orders commits.
struct Writer {
    wal: WalWriter,
    next_ref: SeriesRef,
    /// Reused encoding buffer.
    buf: Vec<u8>,
}

/// promflow's time series database: the in-memory head, made durable by the WAL.
///
/// Thread-safe: appenders commit from any thread (commits are serialized), queriers read
/// concurrently with each other and block only while a commit applies its samples.
pub struct Db {
    dir: PathBuf,
    head: RwLock<Head>,
    writer: Mutex<Writer>,
    subscribers: Mutex<Vec<Sender<Arc<CommittedBatch>>>>,
    wal_corruptions: u64,
    wal_truncated_bytes: u64,
    commit_dropped: AtomicU64,
    /// Holds the `flock` on `promflow/lock` for the life of the database.
    _lock: File,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("dir", &self.dir).finish_non_exhaustive()
    }
}

// A panic elsewhere must not make the database unusable: poisoned locks are taken as is.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Warns once if `data_dir` looks like a Prometheus TSDB. Reads only.
fn warn_if_prometheus_dir(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else { return };
    let mut found: Vec<String> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == PROMFLOW_DIR || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if name == "wal" || name == "chunks_head" || entry.path().join("meta.json").is_file() {
            found.push(name);
        }
    }
    if !found.is_empty() {
        found.sort();
        tracing::warn!(
            data_dir = %data_dir.display(),
            found = ?found,
            "the data directory holds a Prometheus TSDB; its history is not served by promflow and is left untouched"
        );
    }
}

fn lock_dir(dir: &Path) -> Result<File, Error> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::Io(format!("opening lock file {}", path.display()), e))?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(if err.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked(dir.display().to_string())
        } else {
            Error::Io(format!("locking {}", path.display()), err)
        });
    }
    Ok(file)
}

/// Rebuilds the head from the WAL; returns the next free series ref.
fn replay_into(head: &mut Head, wal_dir: &Path) -> Result<(wal::ReplayOutcome, SeriesRef), Error> {
    let started = Instant::now();
    // series are added to the head on their first sample, so series whose samples were all
    // lost (torn tail) do not linger without data
    let mut pending: U64Map<Labels> = U64Map::default();
    // a WAL ref whose labels already live under another ref (duplicate series records)
    let mut alias: U64Map<SeriesRef> = U64Map::default();
    let mut max_ref: SeriesRef = 0;
    let (mut samples, mut unknown, mut rejected) = (0u64, 0u64, 0u64);
    let outcome = wal::replay(wal_dir, |rec| match rec {
        wal::Record::Series(list) => {
            for (r, labels) in list {
                max_ref = max_ref.max(r);
                if head.get(r).is_none() && !alias.contains_key(&r) {
                    pending.insert(r, labels);
                }
            }
        }
        wal::Record::Samples(list) => {
            for s in list {
                let target = if head.get(s.r).is_some() {
                    Some(s.r)
                } else if let Some(&a) = alias.get(&s.r) {
                    Some(a)
                } else if let Some(labels) = pending.remove(&s.r) {
                    let hash = labels.stable_hash();
                    let got = head.create(s.r, Arc::new(labels), hash);
                    if let Some(g) = got.filter(|g| *g != s.r) {
                        alias.insert(s.r, g);
                    }
                    got
                } else {
                    None
                };
                match target.map(|r| head.append(r, s.t, s.v)) {
                    Some(AppendResult::Appended) => samples += 1,
                    Some(AppendResult::Ignored) => {}
                    None | Some(AppendResult::UnknownSeries) => unknown += 1,
                    Some(AppendResult::OutOfOrder | AppendResult::Duplicate) => rejected += 1,
                }
            }
        }
    })?;
    if unknown > 0 {
        tracing::warn!(
            samples = unknown,
            "WAL samples of unknown series skipped (their series record was lost)"
        );
    }
    if rejected > 0 {
        tracing::warn!(samples = rejected, "out-of-order or duplicate WAL samples skipped");
    }
    tracing::info!(
        segments = outcome.segments,
        series = head.num_series(),
        samples,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "WAL replayed"
    );
    Ok((outcome, max_ref + 1))
}

impl Db {
    /// Opens (creating if needed) the database in `<data_dir>/promflow/`, locks it against
    /// other processes and replays its WAL. Corrupt WAL tails are truncated and counted, not
    /// fatal. Nothing outside `<data_dir>/promflow/` is modified.
    pub fn open(data_dir: &Path, opts: DbOptions) -> Result<Arc<Db>, Error> {
        warn_if_prometheus_dir(data_dir);
        let dir = data_dir.join(PROMFLOW_DIR);
        let wal_dir = dir.join(WAL_DIR);
        std::fs::create_dir_all(&wal_dir)
            .map_err(|e| Error::Io(format!("creating {}", wal_dir.display()), e))?;
        let lock_file = lock_dir(&dir)?;
        let mut head = Head::default();
        let (outcome, next_ref) = replay_into(&mut head, &wal_dir)?;
        let wal = WalWriter::open(&wal_dir, opts.segment_size, &outcome)?;
        Ok(Arc::new(Db {
            dir,
            head: RwLock::new(head),
            writer: Mutex::new(Writer { wal, next_ref, buf: Vec::new() }),
            subscribers: Mutex::new(Vec::new()),
            wal_corruptions: outcome.corruptions,
            wal_truncated_bytes: outcome.truncated_bytes,
            commit_dropped: AtomicU64::new(0),
            _lock: lock_file,
        }))
    }

    /// The `promflow/` folder this database lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty batch of appends.
    pub fn appender(self: &Arc<Self>) -> Box<dyn Appender> {
        Box::new(DbAppender {
            db: Arc::clone(self),
            series: Vec::new(),
            by_hash: U64Map::default(),
            collided: Vec::new(),
            samples: Vec::new(),
        })
    }

    /// Subscribes to the append feed: every batch committed from now on, in commit order
    /// (batches that stored no sample are not sent). The channel is unbounded; a subscriber
    /// is dropped once its receiver is.
    pub fn subscribe(&self) -> Receiver<Arc<CommittedBatch>> {
        let (tx, rx) = channel();
        lock(&self.subscribers).push(tx);
        rx
    }

    /// Counters, with the `top_limit` largest entries of each label statistic.
    pub fn stats(&self, top_limit: usize) -> DbStats {
        let h = read(&self.head).stats(top_limit);
        let wal_segments = lock(&self.writer).wal.segments();
        DbStats {
            num_series: h.num_series,
            num_samples: h.num_samples,
            num_chunks: h.num_chunks,
            min_time: h.min_time,
            max_time: h.max_time,
            wal_corruptions: self.wal_corruptions,
            wal_truncated_bytes: self.wal_truncated_bytes,
            wal_segments,
            commit_dropped_samples: self.commit_dropped.load(Ordering::Relaxed),
            series_count_by_metric: h.series_count_by_metric,
            label_value_count_by_label_name: h.label_value_count_by_label_name,
            series_count_by_label_value_pair: h.series_count_by_label_value_pair,
            num_label_pairs: h.num_label_pairs,
        }
    }

    /// Flushes the WAL to stable storage. The database stays usable; dropping it syncs too.
    pub fn close(&self) -> Result<(), Error> {
        lock(&self.writer).wal.sync()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = lock(&self.writer).wal.sync() {
            tracing::error!(error = %e, "syncing the WAL on shutdown failed");
        }
    }
}

impl Querier for Db {
    fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, Error> {
        Ok(read(&self.head).select(matchers, mint, maxt))
    }

    fn series(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Labels>, Error> {
        Ok(read(&self.head).series_labels(matchers, mint, maxt))
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, Error> {
        Ok(read(&self.head).label_names(matchers, mint, maxt))
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, Error> {
        Ok(read(&self.head).label_values(name, matchers, mint, maxt))
    }
}

// ---- appender ----

/// A series touched by a batch.
struct BatchSeries {
    labels: Arc<Labels>,
    /// `labels.stable_hash()`.
    hash: u64,
    /// The head's ref when the series existed at first append.
    sref: Option<SeriesRef>,
    /// Newest sample seen (head or batch): timestamp and value bits.
    last: Option<(Timestamp, u64)>,
}

/// The [`Appender`] of a [`Db`].
struct DbAppender {
    db: Arc<Db>,
    series: Vec<BatchSeries>,
    /// `stable_hash` → index into `series` of the first series with that hash.
    by_hash: U64Map<u32>,
    /// Indices of series whose hash collided with an earlier one's.
    collided: Vec<u32>,
    /// (index into `series`, t, v) in append order.
    samples: Vec<(u32, Timestamp, f64)>,
}

fn validate(labels: &Labels) -> Result<(), Error> {
    if labels.is_empty() {
        return Err(Error::InvalidLabels("empty label set".into()));
    }
    if labels.iter().any(|l| l.name.is_empty() || l.value.is_empty()) {
        return Err(Error::InvalidLabels(format!("empty label name or value in {labels}")));
    }
    Ok(())
}

/// Checks `(t, v)` against the newest sample; `Ok(true)` means store it, `Ok(false)` means
/// drop it silently (identical repeat, or a staleness marker with nothing to mark stale).
fn check(last: Option<(Timestamp, u64)>, t: Timestamp, v: f64) -> Result<bool, Error> {
    match last {
        Some((lt, _)) if t < lt => Err(Error::OutOfOrder),
        Some((lt, lv)) if t == lt => {
            if v.to_bits() == lv {
                Ok(false)
            } else {
                Err(Error::DuplicateTimestamp)
            }
        }
        None if is_stale_nan(v) => Ok(false),
        Some((_, lv)) if is_stale_nan(v) && is_stale_nan(f64::from_bits(lv)) => Ok(false),
        _ => Ok(true),
    }
}

impl DbAppender {
    /// Index of `labels` in the batch, adding it (with the head's state) if new.
    fn series_index(&mut self, labels: &Labels) -> Result<u32, Error> {
        let hash = labels.stable_hash();
        if let Some(&i) = self.by_hash.get(&hash) {
            if *self.series[i as usize].labels == *labels {
                return Ok(i);
            }
            if let Some(&j) = self.collided.iter().find(|&&j| *self.series[j as usize].labels == *labels) {
                return Ok(j);
            }
        }
        validate(labels)?;
        let idx = u32::try_from(self.series.len())
            .map_err(|_| Error::InvalidLabels("too many series in one batch".into()))?;
        let entry = {
            let head = read(&self.db.head);
            match head.lookup(labels, hash).and_then(|r| head.get(r).map(|s| (r, s))) {
                Some((r, s)) => {
                    BatchSeries { labels: Arc::clone(&s.labels), hash, sref: Some(r), last: s.last() }
                }
                None => BatchSeries { labels: Arc::new(labels.clone()), hash, sref: None, last: None },
            }
        };
        self.series.push(entry);
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => self.collided.push(idx),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(idx);
            }
        }
        Ok(idx)
    }
}

impl Appender for DbAppender {
    fn append(&mut self, labels: &Labels, t: Timestamp, v: f64) -> Result<(), Error> {
        let idx = self.series_index(labels)?;
        let s = &mut self.series[idx as usize];
        if check(s.last, t, v)? {
            s.last = Some((t, v.to_bits()));
            self.samples.push((idx, t, v));
        }
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<CommitStats, Error> {
        let DbAppender { db, mut series, samples, .. } = *self;
        if samples.is_empty() {
            return Ok(CommitStats::default());
        }
        let mut guard = lock(&db.writer);
        let writer = &mut *guard;

        // Re-validate against the head as it is now: the commit lock keeps it unchanged
        // until we apply. A concurrent commit may have created our new series or advanced
        // our series' newest sample since `append`.
        let mut refs: Vec<Option<SeriesRef>> = Vec::with_capacity(series.len());
        let mut keep = vec![false; samples.len()];
        let mut dropped = 0u64;
        {
            let head = read(&db.head);
            let mut last: Vec<Option<(Timestamp, u64)>> = Vec::with_capacity(series.len());
            for s in &mut series {
                let found =
                    s.sref.filter(|r| head.get(*r).is_some()).or_else(|| head.lookup(&s.labels, s.hash));
                match found.and_then(|r| head.get(r).map(|m| (r, m))) {
                    Some((r, m)) => {
                        s.labels = Arc::clone(&m.labels);
                        refs.push(Some(r));
                        last.push(m.last());
                    }
                    None => {
                        refs.push(None);
                        last.push(None);
                    }
                }
            }
            for (k, &(idx, t, v)) in keep.iter_mut().zip(&samples) {
                match check(last[idx as usize], t, v) {
                    Ok(true) => {
                        *k = true;
                        last[idx as usize] = Some((t, v.to_bits()));
                    }
                    Ok(false) => {}
                    Err(_) => dropped += 1,
                }
            }
        }
        if dropped > 0 {
            db.commit_dropped.fetch_add(dropped, Ordering::Relaxed);
            tracing::debug!(samples = dropped, "dropped samples made out of order by a concurrent commit");
        }

        // refs for series that are new and got at least one sample
        let mut new_series: Vec<u32> = Vec::new();
        for (&(idx, _, _), _) in samples.iter().zip(&keep).filter(|(_, k)| **k) {
            if refs[idx as usize].is_none() {
                refs[idx as usize] = Some(writer.next_ref);
                writer.next_ref += 1;
                new_series.push(idx);
            }
        }
        let ref_of = |idx: u32| refs[idx as usize].unwrap_or(0);
        let kept = || samples.iter().zip(&keep).filter(|(_, k)| **k).map(|(s, _)| *s);
        let num_samples = kept().count();
        if num_samples == 0 {
            return Ok(CommitStats::default());
        }

        // one write(2) for the whole batch
        writer.buf.clear();
        wal::encode_series(
            &mut writer.buf,
            new_series.iter().map(|&i| (ref_of(i), &*series[i as usize].labels)),
        );
        wal::encode_samples(&mut writer.buf, kept().map(|(idx, t, v)| RefSample { r: ref_of(idx), t, v }));
        let written = writer.wal.write(&writer.buf);
        if writer.buf.capacity() > MAX_KEPT_BUFFER {
            writer.buf = Vec::new();
        }
        written?;

        {
            let mut head = write(&db.head);
            for &i in &new_series {
                let s = &series[i as usize];
                let r = ref_of(i);
                if head.create(r, Arc::clone(&s.labels), s.hash) != Some(r) {
                    // cannot happen: the ref is fresh and the labels were absent under the lock
                    tracing::error!(series = %s.labels, "new series clashed with an existing one");
                }
            }
            for (idx, t, v) in kept() {
                let res = head.append(ref_of(idx), t, v);
                if res != AppendResult::Appended {
                    tracing::error!(result = ?res, "head rejected a validated sample");
                }
            }
        }

        let mut subs = lock(&db.subscribers);
        if !subs.is_empty() {
            let batch = Arc::new(CommittedBatch {
                samples: kept()
                    .map(|(idx, t, v)| (Arc::clone(&series[idx as usize].labels), Sample { t, v }))
                    .collect(),
            });
            subs.retain(|tx| tx.send(Arc::clone(&batch)).is_ok());
        }
        drop(subs);
        Ok(CommitStats { samples: num_samples, new_series: new_series.len() })
    }

    fn rollback(self: Box<Self>) {}
}
