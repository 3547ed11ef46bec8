//! The database: a head, its WAL, the blocks on disk, the append feed and the data
//! directory lock.
//!
//! Time flows through it like this: samples are appended to the WAL and the head; once the
//! head spans more than one and a half block durations, its oldest aligned block range is
//! written as a block ([`crate::block`]), the head drops those samples, and a WAL checkpoint
//! lets the segments that held them go. Blocks are merged into larger ones as time passes
//! and deleted by retention. Queries read the head and every overlapping block and merge
//! them, so a sample is visible exactly once wherever it lives.
//!
//! * `mod.rs`: the database itself, opening it (WAL replay, blocks), the append feed, stats,
//!   admin operations;
//! * `append.rs`: the appender, and the bounds a sample is admitted under;
//! * `compact.rs`: head cuts, block merges, retention, and the compaction thread;
//! * `query.rs`: the querier over the head and the blocks.

mod append;
mod compact;
mod lookup_cache;
mod metrics;
mod query;

use crate::exemplars::ExemplarStore;
use append::OpenAppends;
use compact::spawn_compactor;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::block::{Block, BlockMeta, BlockWriter, TMP_SUFFIX};
use crate::head::{refusal, AppendResult, Head, PackedLabels, SeriesRef, U64Map};
use crate::wal::{self, WalWriter};
use crate::{CommittedBatch, Error, Labels, Matcher, Timestamp};

/// Name of promflow's folder inside the data directory; nothing outside it is ever written.
pub(crate) const PROMFLOW_DIR: &str = "promflow";
/// The WAL folder inside [`PROMFLOW_DIR`].
const WAL_DIR: &str = "wal";
/// The snapshots folder inside [`PROMFLOW_DIR`].
const SNAPSHOTS_DIR: &str = "snapshots";
/// The blocks folder inside [`PROMFLOW_DIR`].
pub(crate) const BLOCKS_DIR: &str = "blocks";
/// The head's full chunks inside [`PROMFLOW_DIR`]: a cache of the WAL, emptied at start.
const HEAD_CHUNKS_DIR: &str = "head_chunks";
/// The lock file inside [`PROMFLOW_DIR`].
const LOCK_FILE: &str = "lock";
/// Series whose samples are read from the head (or merged from blocks) per lock hold while
/// a block is written.
const SERIES_PER_BATCH: usize = 2048;
/// Two hours, Prometheus's block duration.
const DEFAULT_BLOCK_DURATION: i64 = 2 * 3600 * 1000;
/// The commit buffer is dropped after a batch bigger than this, not kept for reuse.
const MAX_KEPT_BUFFER: usize = 64 << 20;

/// Called after a batch is sent to a subscriber ([`Db::subscribe_waking`]); it must be quick
/// (it runs in the committing thread, under the subscribers' lock).
pub type Wake = Box<dyn Fn() + Send + Sync>;

/// A subscriber to the append feed, and what wakes it.
type Subscriber = (Sender<Arc<CommittedBatch>>, Option<Wake>);

/// Options for [`Db::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbOptions {
    /// A WAL segment is cut once the next write would make it larger than this (bytes). A
    /// single commit bigger than this still goes into one segment.
    pub segment_size: u64,
    /// The time range of a block cut from the head (milliseconds). Samples more than half of
    /// it older than the head's newest sample are refused as out of bounds, as in Prometheus.
    pub block_duration: i64,
    /// Blocks whose end lies more than this before the newest block's end are deleted
    /// (milliseconds; `None` keeps everything).
    pub retention_time: Option<i64>,
    /// While blocks and WAL together take more bytes than this, the oldest block is deleted.
    pub retention_size: Option<u64>,
    /// How often a background thread cuts blocks, merges them and applies retention; `None`
    /// leaves that to explicit [`Db::compact`] calls.
    pub compaction_interval: Option<Duration>,
    /// Samples older than their series' newest (or than the out-of-bounds limit) are still
    /// taken when they are at most this much older than the head's newest sample
    /// (milliseconds; 0 refuses them, as Prometheus's `out_of_order_time_window` default).
    pub out_of_order_window: i64,
    /// Compaction never makes a block longer than this (milliseconds); merged ranges are
    /// three times the previous one from `block_duration` up.
    pub max_block_duration: i64,
    /// How long a head cut waits for open appenders that staged samples in the range it
    /// writes; an appender open longer has those samples refused at commit.
    pub cut_waits_for_appenders: Duration,
    /// Samples more than this ahead of the server's clock are refused (milliseconds; `None`
    /// takes any). A sample far in the future would make every present one out of bounds
    /// until the clock caught up with it.
    pub future_limit: Option<i64>,
    /// Exemplars kept in memory over all series (`storage.exemplars.max_exemplars` with
    /// `--enable-feature=exemplar-storage`); 0 keeps none and writes none to the WAL.
    pub max_exemplars: usize,
    /// Whether samples keep the start timestamps appenders give them
    /// ([`Appender::set_start_timestamp`], `--enable-feature=st-storage`); when not, they
    /// are dropped and nothing is written for them.
    pub start_timestamps: bool,
}

impl Default for DbOptions {
    /// 128 MiB segments and two-hour blocks as Prometheus, no retention, compaction checked
    /// every minute.
    fn default() -> Self {
        DbOptions {
            segment_size: 128 << 20,
            block_duration: DEFAULT_BLOCK_DURATION,
            retention_time: None,
            retention_size: None,
            compaction_interval: Some(Duration::from_secs(60)),
            out_of_order_window: 0,
            max_block_duration: 31 * 24 * 3600 * 1000,
            cut_waits_for_appenders: Duration::from_secs(30),
            future_limit: None,
            max_exemplars: 0,
            start_timestamps: false,
        }
    }
}

impl BlockInfo {
    pub(crate) fn new(m: &BlockMeta, size_bytes: u64) -> Self {
        BlockInfo {
            ulid: m.ulid.clone(),
            min_time: m.min_time,
            max_time: m.max_time,
            num_samples: m.stats.num_samples,
            num_series: m.stats.num_series,
            level: m.compaction.level,
            from_stale_series: m.holds_stale_series(),
            size_bytes,
        }
    }
}

/// What one [`Db::compact`] call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Blocks cut from the head.
    pub head_blocks: usize,
    /// Blocks written by merging others.
    pub merged_blocks: usize,
    /// Blocks deleted by retention.
    pub deleted_blocks: usize,
    /// WAL segments deleted after checkpoints.
    pub wal_segments_deleted: usize,
    /// Stale series taken out of the head into blocks before their range was cut
    /// ([`Db::set_stale_series_compaction_threshold`]).
    pub stale_series_removed: usize,
}

/// One block as [`Db::blocks`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// The block's ULID.
    pub ulid: String,
    /// First timestamp the block covers (inclusive, ms).
    pub min_time: Timestamp,
    /// End of the block's range (exclusive, ms).
    pub max_time: Timestamp,
    /// Samples in the block.
    pub num_samples: u64,
    /// Series in the block.
    pub num_series: u64,
    /// Compaction level (1 for blocks cut from the head or backfilled).
    pub level: u32,
    /// Whether the block holds stale series taken out of the head before the head cut its
    /// range ([`Db::set_stale_series_compaction_threshold`]).
    pub from_stale_series: bool,
    /// Bytes on disk.
    pub size_bytes: u64,
}

/// A snapshot of the database's counters, in the spirit of Prometheus's
/// `/api/v1/status/tsdb`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Series in the head.
    pub num_series: u64,
    /// Series in the head whose newest sample is a staleness marker.
    pub num_stale_series: u64,
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
    /// WAL samples that opening found in the head's chunk files, which an earlier process
    /// left, and so did not encode again.
    pub samples_from_chunk_files: u64,
    /// Bytes cut off WAL segments when opening.
    pub wal_truncated_bytes: u64,
    /// WAL segment files.
    pub wal_segments: u64,
    /// Samples a commit refused, and reported to its caller as [`Error::Refused`], because a
    /// concurrent commit had made them out of order or duplicate after they were appended
    /// (since open).
    pub commit_refused_samples: u64,
    /// Series per metric name, largest first.
    pub series_count_by_metric: Vec<(String, u64)>,
    /// Distinct values per label name, largest first.
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    /// Bytes of the distinct values of each label name, largest first.
    pub memory_in_bytes_by_label_name: Vec<(String, u64)>,
    /// Series per `name=value` pair, largest first.
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
    /// Distinct label pairs.
    pub num_label_pairs: u64,
    /// Blocks on disk.
    pub num_blocks: u64,
    /// Bytes of the blocks on disk.
    pub blocks_bytes: u64,
    /// Bytes of the WAL (segments and checkpoint).
    pub wal_bytes: u64,
    /// Samples refused because they were older than the head accepts, or further ahead of the
    /// clock than the future limit (since open).
    pub out_of_bounds_samples: u64,
    /// Blocks in the data directory that could not be read and are not served.
    pub unreadable_blocks: u64,
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
    blocks_dir: PathBuf,
    opts: DbOptions,
    head: RwLock<Head>,
    /// The exemplars of the head's series.
    exemplars: ExemplarStore,
    /// Open blocks, sorted by `min_time`.
    blocks: RwLock<Vec<Arc<Block>>>,
    /// Appends older than this are refused as out of bounds: the newest block's end, or half
    /// a block before the head's newest sample, whichever is later.
    min_valid: AtomicI64,
    /// The newest block's end: the head takes no in-order samples before it.
    floor: AtomicI64,
    /// The head's newest sample (`i64::MIN` while empty).
    head_max: AtomicI64,
    /// The out-of-order window in force (ms); starts as the option, changes on reload.
    ooo_window: AtomicI64,
    /// The stale-series compaction threshold in force, as `f64` bits (0: off).
    stale_threshold: AtomicU64,
    /// While a head block range is being written, its end: out-of-order samples before it
    /// are refused until the head is truncated (`i64::MIN` otherwise).
    ooo_floor: AtomicI64,
    out_of_bounds: AtomicU64,
    /// Serialises compactions (the background thread and explicit calls).
    compacting: Mutex<()>,
    /// The background compaction thread: woken when the head has a block range to cut, and
    /// joined by [`Db::close`] so that it holds the database no more.
    compactor: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set by [`Db::close`]: the compaction thread stops.
    closing: std::sync::atomic::AtomicBool,
    writer: Mutex<Writer>,
    subscribers: Mutex<Vec<Subscriber>>,
    /// The segments the live WAL tails read: checkpoints keep them ([`Db::tail_wal`]).
    wal_holds: Mutex<Vec<std::sync::Weak<AtomicU64>>>,
    wal_corruptions: u64,
    wal_truncated_bytes: u64,
    commit_refused: AtomicU64,
    /// Blocks in the data directory that could not be opened, by name: skipped, not served.
    unreadable_blocks: Mutex<BTreeSet<String>>,
    /// The oldest sample each open appender has staged: a head cut waits for those older than
    /// the range it writes ([`Db::wait_for_appends_below`]).
    open_appends: Mutex<OpenAppends>,
    /// Notified when an open appender commits, rolls back or is dropped.
    appends_closed: std::sync::Condvar,
    /// What storage counts as it runs, for `/metrics`.
    counters: metrics::Counters,
    /// Series lookups' answers over whole blocks.
    lookups: lookup_cache::LookupCache,
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

/// Samples of a WAL record whose series replay reads ahead at a time ([`Head::prefetch`]).
/// Small enough that what they touch (a few pages each) stays in the caches and the TLB
/// until they are appended; a whole record's 2,000 series touch more pages than the TLB
/// holds.
const REPLAY_PREFETCH: usize = 256;

/// Refs in a page of [`HeldByRef`].
const HELD_PAGE: u64 = 64;

/// What the replay knows of a series whose full chunks it took back from the chunk files:
/// their oldest and newest times, and the series' newest sample replayed so far. Most of
/// such a series' WAL samples are ones its chunks hold, which only move its newest sample
/// on: kept here, in ref order, rather than in the series itself, checking them touches a
/// few bytes a series in the order WAL records list refs instead of each series' memory.
/// The series is handed its newest sample before anything else reads it.
#[derive(Clone, Copy, Debug)]
struct Held {
    oldest: Timestamp,
    newest: Timestamp,
    /// The newest sample replayed: time ([`Timestamp::MIN`] for none) and value bits.
    last: (Timestamp, u64),
}

impl Held {
    fn last(&self) -> Option<(Timestamp, u64)> {
        (self.last.0 != Timestamp::MIN).then_some(self.last)
    }
}

/// [`Held`] by series ref, in pages of consecutive refs.
#[derive(Default)]
struct HeldByRef {
    pages: U64Map<Box<[Option<Held>; HELD_PAGE as usize]>>,
}

impl HeldByRef {
    fn get(&self, r: SeriesRef) -> Option<&Held> {
        self.pages.get(&(r / HELD_PAGE)).and_then(|p| p[(r % HELD_PAGE) as usize].as_ref())
    }

    fn get_mut(&mut self, r: SeriesRef) -> Option<&mut Held> {
        self.pages.get_mut(&(r / HELD_PAGE)).and_then(|p| p[(r % HELD_PAGE) as usize].as_mut())
    }

    fn insert(&mut self, r: SeriesRef, held: Held) {
        self.pages.entry(r / HELD_PAGE).or_insert_with(|| Box::new([None; HELD_PAGE as usize]))
            [(r % HELD_PAGE) as usize] = Some(held);
    }

    fn remove(&mut self, r: SeriesRef) -> Option<Held> {
        self.pages.get_mut(&(r / HELD_PAGE)).and_then(|p| p[(r % HELD_PAGE) as usize].take())
    }

    /// The refs held, and what is known of each.
    fn iter(&self) -> impl Iterator<Item = (SeriesRef, Held)> + '_ {
        self.pages.iter().flat_map(|(&n, page)| {
            page.iter().enumerate().filter_map(move |(i, h)| h.map(|h| (n * HELD_PAGE + i as u64, h)))
        })
    }
}

/// What the WAL's replay keeps beside the head while it reads.
#[derive(Default)]
struct Replay {
    /// Series records of series without a sample yet: series are added to the head on their
    /// first sample, so series whose samples were all lost (a torn tail) do not linger
    /// without data.
    pending: U64Map<Labels>,
    /// A WAL ref whose labels already live under another ref (duplicate series records).
    alias: U64Map<SeriesRef>,
    /// Series whose full chunks were taken back from the chunk files, until a sample past
    /// them is replayed.
    held: HeldByRef,
    /// Where the blocks end: what is older is not taken back into the head.
    blocks_end: Timestamp,
    /// Samples the recovered chunks held.
    in_chunks: u64,
}

impl Replay {
    /// The head's ref for the WAL's ref `r` of a series the head has.
    fn existing(&self, head: &Head, r: SeriesRef) -> Option<SeriesRef> {
        if head.get(r).is_some() {
            Some(r)
        } else {
            self.alias.get(&r).copied()
        }
    }

    /// The head's ref for the WAL's ref `r`, creating the series on its first sample (and
    /// taking back its full chunks, if the chunk files hold them).
    fn target(&mut self, head: &mut Head, r: SeriesRef) -> Option<SeriesRef> {
        if let Some(found) = self.existing(head, r) {
            return Some(found);
        }
        let labels = self.pending.remove(&r)?;
        let got = head.create(r, &labels, PackedLabels::index_hash_of(&labels));
        match got {
            Some(g) if g != r => {
                self.alias.insert(r, g);
            }
            Some(_) => {
                if let Some((oldest, newest)) = head.recover_chunks(r, self.blocks_end) {
                    self.held.insert(r, Held { oldest, newest, last: (Timestamp::MIN, 0) });
                }
            }
            None => {}
        }
        got
    }

    /// Replays a float sample of the head's series `r`: skipped if its recovered chunks hold
    /// it, else appended, or stored as out of order if it was taken so when written.
    fn sample(&mut self, head: &mut Head, r: SeriesRef, t: Timestamp, v: f64) -> AppendResult {
        let bits = v.to_bits();
        if let Some(held) = self.held.get_mut(r) {
            if t <= held.newest {
                return match refusal(held.last(), t, bits) {
                    None if t >= held.oldest => {
                        held.last = (t, bits);
                        // counted apart from the samples stored
                        self.in_chunks += 1;
                        AppendResult::Ignored
                    }
                    // the newest when written, but older than the recovered chunks (which
                    // begin at the blocks' end, or after a deletion): kept out of order, as
                    // the chunks cannot take it
                    None => {
                        held.last = (t, bits);
                        head.insert_ooo(r, t, v)
                    }
                    Some(AppendResult::OutOfOrder) => head.insert_ooo(r, t, v),
                    Some(refused) => refused,
                };
            }
            // past the chunks: the series takes its newest sample and goes on as any other
            self.hand_over(head, r);
            self.held.remove(r);
        }
        match head.append(r, t, v) {
            // it was taken within the out-of-order window when written
            AppendResult::OutOfOrder => head.insert_ooo(r, t, v),
            other => other,
        }
    }

    /// Gives held series `r` its newest sample replayed, before something reads it.
    fn hand_over(&self, head: &mut Head, r: SeriesRef) {
        if let Some(last) = self.held.get(r).and_then(Held::last) {
            head.set_replayed_newest(r, last);
        }
    }

    /// Takes series `r`'s newest sample back from the series after something other than a
    /// float sample its chunks hold moved it on (a histogram sample).
    fn take_back(&mut self, head: &Head, r: SeriesRef) {
        if let (Some(held), Some(last)) = (self.held.get_mut(r), head.get(r).and_then(|s| s.last())) {
            held.last = last;
        }
    }
}

/// Rebuilds the head from the WAL, skipping samples older than `replay_from` (they are in
/// blocks) and taking back the full chunks the chunk files hold from `blocks_end` (where
/// the blocks end) on; returns the next free series ref and the samples those chunks held.
fn replay_into(
    head: &mut Head,
    exemplars: &ExemplarStore,
    wal_dir: &Path,
    replay_from: Timestamp,
    blocks_end: Timestamp,
) -> Result<(wal::ReplayOutcome, SeriesRef, u64), Error> {
    let started = Instant::now();
    let mut replay = Replay { blocks_end, ..Replay::default() };
    // refs the chunk files name are not given to new series, even if the WAL forgot them
    let mut max_ref: SeriesRef = head.max_recovered_series();
    let (mut samples, mut unknown, mut rejected) = (0u64, 0u64, 0u64);
    let mut count = |appended: Option<AppendResult>| match appended {
        Some(AppendResult::Appended) => samples += 1,
        Some(AppendResult::Ignored) => {}
        None | Some(AppendResult::UnknownSeries) => unknown += 1,
        Some(AppendResult::OutOfOrder | AppendResult::Duplicate) => rejected += 1,
    };
    let outcome = wal::replay(wal_dir, |rec| match rec {
        wal::Record::Tombstones(list) => {
            for (r, mint, maxt) in list {
                // a deletion took what the series had when it was written: samples up to
                // its newest then, which is its newest replayed so far. Chunks taken back
                // also hold samples appended after it, which it must not take.
                let Some(t) = replay.existing(head, r) else { continue };
                replay.hand_over(head, t);
                match head.get(t).and_then(|s| s.last()) {
                    Some((newest, _)) if mint <= newest => head.delete_range(t, mint, maxt.min(newest)),
                    _ => {}
                }
            }
        }
        wal::Record::SeriesRemoved(list) => {
            // their samples are in a block; the refs are not used again
            let mut refs = Vec::with_capacity(list.len());
            for r in list {
                replay.pending.remove(&r);
                let r = replay.alias.remove(&r).unwrap_or(r);
                replay.held.remove(r);
                refs.push(r);
            }
            head.remove_series(refs);
        }
        wal::Record::Series(list) => {
            for (r, labels) in list {
                max_ref = max_ref.max(r);
                if head.get(r).is_none() && !replay.alias.contains_key(&r) {
                    replay.pending.insert(r, labels);
                }
            }
        }
        wal::Record::Samples(list) => {
            for batch in list.chunks(REPLAY_PREFETCH) {
                // the series whose recovered chunks hold their samples are not read
                head.prefetch(batch.iter().map(|s| s.r).filter(|&r| replay.held.get(r).is_none()));
                for s in batch.iter().filter(|s| s.t >= replay_from) {
                    let appended = replay.target(head, s.r).map(|r| replay.sample(head, r, s.t, s.v));
                    count(appended);
                }
            }
        }
        wal::Record::StartTimestamps(list) => {
            // written before the samples of their batch, as they were applied
            for (r, t, start) in list.into_iter().filter(|s| s.1 >= replay_from) {
                if let Some(r) = replay.target(head, r) {
                    replay.hand_over(head, r);
                    head.record_start(r, t, start);
                }
            }
        }
        wal::Record::Exemplars(list) => {
            for (r, e) in list.into_iter().filter(|(_, e)| e.t >= replay_from) {
                if let Some(series) = replay.existing(head, r).and_then(|t| head.get(t)) {
                    exemplars.add(&Arc::new(series.labels.to_labels()), e);
                }
            }
        }
        wal::Record::Histograms(list) => {
            for (r, t, h) in list.into_iter().filter(|s| s.1 >= replay_from) {
                let (bits, h) = (h.fingerprint(), Arc::new(h));
                let appended = replay.target(head, r).map(|r| {
                    replay.hand_over(head, r);
                    let appended = match head.append_histogram(r, t, Arc::clone(&h), bits) {
                        // out of order when written, or after floats of its batch
                        AppendResult::OutOfOrder => head.insert_ooo_histogram(r, t, h, bits),
                        other => other,
                    };
                    replay.take_back(head, r);
                    appended
                });
                count(appended);
            }
        }
    })?;
    for (r, held) in replay.held.iter() {
        if let Some(last) = held.last() {
            head.set_replayed_newest(r, last);
        }
        head.settle_recovered(r, held.newest);
    }
    head.forget_recovered();
    if unknown > 0 {
        tracing::warn!(
            samples = unknown,
            "WAL samples of unknown series skipped (a series taken out of the head into a block early, or one whose series record was lost)"
        );
    }
    if rejected > 0 {
        tracing::warn!(samples = rejected, "out-of-order or duplicate WAL samples skipped");
    }
    tracing::info!(
        segments = outcome.segments,
        series = head.num_series(),
        samples,
        samples_in_recovered_chunks = replay.in_chunks,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "WAL replayed"
    );
    Ok((outcome, max_ref + 1, replay.in_chunks))
}

/// The server's clock in milliseconds since the epoch: the time every component stamps
/// samples, evaluations and deadlines with.
pub fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| Timestamp::try_from(d.as_millis()).unwrap_or(Timestamp::MAX))
}

/// The oldest timestamp the head accepts, given the newest block's end and the head's range.
fn min_valid(floor: Timestamp, head: Option<(Timestamp, Timestamp)>, block_duration: i64) -> Timestamp {
    match head {
        Some((_, max)) => floor.max(max.saturating_sub(block_duration / 2)),
        None => floor,
    }
}

/// Opens every block in `dir`: removes leftovers of interrupted writes, skips (and reports)
/// unreadable blocks, and deletes blocks whose data a later merge already holds. Returns the
/// blocks and the names of the unreadable ones.
fn open_blocks(dir: &Path) -> Result<(Vec<Arc<Block>>, BTreeSet<String>), Error> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut unreadable = BTreeSet::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io(format!("listing {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if name.ends_with(TMP_SUFFIX) {
            tracing::info!(dir = %path.display(), "removing a block left half-written by a crash");
            let _ = std::fs::remove_dir_all(&path);
            continue;
        }
        match Block::open(&path) {
            Ok(b) => blocks.push(b),
            Err(e) => {
                tracing::error!(block = %path.display(), error = %e, "skipping unreadable block");
                unreadable.insert(name);
            }
        }
    }
    // a crash between writing a merged block and deleting its parts leaves both
    let merged: Vec<(u32, BTreeSet<String>)> = blocks
        .iter()
        .map(|b| (b.meta().compaction.level, b.meta().compaction.sources.iter().cloned().collect()))
        .collect();
    blocks.retain(|b| {
        let mine: BTreeSet<String> = b.meta().compaction.sources.iter().cloned().collect();
        let superseded = merged.iter().any(|(level, other)| {
            *level > b.meta().compaction.level && mine.is_subset(other) && *other != mine
        });
        if superseded {
            tracing::info!(block = %b.meta().ulid, "deleting a block already merged into another");
            let _ = std::fs::remove_dir_all(b.dir());
        }
        !superseded
    });
    blocks.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
    if !blocks.is_empty() {
        tracing::info!(blocks = blocks.len(), "opened blocks");
    }
    Ok((blocks.into_iter().map(Arc::new).collect(), unreadable))
}

/// Writes the samples of a head in `mint..maxt` into a new block covering that range (or the
/// span of its samples when `maxt` is `Timestamp::MAX`). `head` gives read access (a lock
/// guard for the live head) and is called once per batch of series, so appenders are never
/// held up for long.
pub(crate) fn write_head_block<G: std::ops::Deref<Target = Head>>(
    blocks_dir: &Path,
    head: impl Fn() -> G,
    mint: Timestamp,
    maxt: Timestamp,
) -> Result<Option<BlockMeta>, Error> {
    let refs = head().refs_in_range(mint, maxt.saturating_sub(1));
    write_series_block(blocks_dir, head, &refs, mint, maxt, None)
}

/// [`write_head_block`] for the series `refs` (sorted by labels) only, with a compaction
/// `hint` in its `meta.json`; series without samples in the range are left out. Labels are
/// unpacked a batch at a time: a million series' sets at once would take hundreds of
/// megabytes that the allocator keeps after the cut.
pub(crate) fn write_series_block<G: std::ops::Deref<Target = Head>>(
    blocks_dir: &Path,
    head: impl Fn() -> G,
    refs: &[SeriesRef],
    mint: Timestamp,
    maxt: Timestamp,
    hint: Option<&str>,
) -> Result<Option<BlockMeta>, Error> {
    let last = maxt.saturating_sub(1);
    let mut writer = BlockWriter::create(blocks_dir, 1, Vec::new())?;
    if let Some(hint) = hint {
        writer.add_hint(hint);
    }
    let (mut samples, mut hists) = (Vec::new(), Vec::new());
    for batch in refs.chunks(SERIES_PER_BATCH) {
        let h = head();
        for &r in batch {
            samples.clear();
            hists.clear();
            h.samples_of(r, mint, last, &mut samples);
            h.histograms_of(r, mint, last, &mut hists);
            if samples.is_empty() && hists.is_empty() {
                continue;
            }
            let Some(labels) = h.labels_of(r) else { continue };
            let starts = h.starts_of(r, mint, last);
            if let Err(e) = writer.add(Arc::new(labels), samples.iter().copied(), &hists, &starts) {
                drop(h);
                writer.abort();
                return Err(e);
            }
        }
    }
    writer.finish((maxt != Timestamp::MAX).then_some((mint, maxt)))
}

impl Db {
    /// Opens (creating if needed) the database in `<data_dir>/promflow/`, locks it against
    /// other processes and replays its WAL. Corrupt WAL tails are truncated and counted, not
    /// fatal. Nothing outside `<data_dir>/promflow/` is modified.
    pub fn open(data_dir: &Path, opts: DbOptions) -> Result<Arc<Db>, Error> {
        warn_if_prometheus_dir(data_dir);
        let dir = data_dir.join(PROMFLOW_DIR);
        let wal_dir = dir.join(WAL_DIR);
        let blocks_dir = dir.join(BLOCKS_DIR);
        for d in [&wal_dir, &blocks_dir] {
            std::fs::create_dir_all(d).map_err(|e| Error::Io(format!("creating {}", d.display()), e))?;
        }
        let lock_file = lock_dir(&dir)?;
        let (blocks, unreadable) = open_blocks(&blocks_dir)?;
        // a block of stale series taken out early ends where the head still has samples
        let floor = blocks
            .iter()
            .filter(|b| !b.meta().holds_stale_series())
            .map(|b| b.meta().max_time)
            .max()
            .unwrap_or(Timestamp::MIN);
        let chunks_dir = dir.join(HEAD_CHUNKS_DIR);
        let mut head = Head::with_chunk_dir(chunks_dir.clone())
            .map_err(|e| Error::Io(format!("opening {}", chunks_dir.display()), e))?;
        // with an out-of-order window, samples older than the newest block may have arrived
        // after it was cut and be only in the WAL: replay them (merges drop the duplicates)
        let replay_from =
            if opts.out_of_order_window > 0 { floor.saturating_sub(opts.out_of_order_window) } else { floor };
        let replay_started = Instant::now();
        let exemplars = ExemplarStore::new(opts.max_exemplars);
        let (outcome, next_ref, from_chunk_files) =
            replay_into(&mut head, &exemplars, &wal_dir, replay_from, floor)?;
        let counters =
            metrics::Counters::new(replay_started.elapsed(), head.num_series() as u64, from_chunk_files);
        let wal = WalWriter::open(&wal_dir, opts.segment_size, &outcome)?;
        let min_valid = min_valid(floor, head.time_range(), opts.block_duration);
        let head_max = head.time_range().map_or(Timestamp::MIN, |r| r.1);
        let interval = opts.compaction_interval;
        let ooo_window = opts.out_of_order_window;
        let db = Arc::new(Db {
            dir,
            blocks_dir,
            opts,
            blocks: RwLock::new(blocks),
            min_valid: AtomicI64::new(min_valid),
            floor: AtomicI64::new(floor),
            head_max: AtomicI64::new(head_max),
            ooo_floor: AtomicI64::new(Timestamp::MIN),
            ooo_window: AtomicI64::new(ooo_window),
            stale_threshold: AtomicU64::new(0),
            out_of_bounds: AtomicU64::new(0),
            compacting: Mutex::new(()),
            compactor: Mutex::new(None),
            closing: std::sync::atomic::AtomicBool::new(false),
            head: RwLock::new(head),
            exemplars,
            writer: Mutex::new(Writer { wal, next_ref, buf: Vec::new() }),
            subscribers: Mutex::new(Vec::new()),
            wal_holds: Mutex::new(Vec::new()),
            wal_corruptions: outcome.corruptions,
            wal_truncated_bytes: outcome.truncated_bytes,
            commit_refused: AtomicU64::new(0),
            unreadable_blocks: Mutex::new(unreadable),
            open_appends: Mutex::new(OpenAppends::default()),
            appends_closed: std::sync::Condvar::new(),
            counters,
            lookups: lookup_cache::LookupCache::new(),
            _lock: lock_file,
        });
        if let Some(every) = interval {
            spawn_compactor(Arc::downgrade(&db), every);
        }
        Ok(db)
    }

    /// Follows the WAL from `from` on (or from its end), for a consumer that must see every
    /// committed sample in commit order even after an outage of its own (the remote-write
    /// sender). While the tail lives, checkpoints keep the segments it has not finished, up
    /// to [`HOLD_MAX_MS`](crate::wal_tail::HOLD_MAX_MS) of samples behind the head.
    pub fn tail_wal(
        &self,
        from: Option<crate::wal_tail::WalPosition>,
    ) -> Result<crate::wal_tail::WalTail, Error> {
        let hold = Arc::new(AtomicU64::new(0));
        // registered before the tail reads, so no checkpoint deletes what it is opening
        lock(&self.wal_holds).push(Arc::downgrade(&hold));
        crate::wal_tail::WalTail::open(&self.dir.join(WAL_DIR), from, hold)
    }

    /// The newest sample's timestamp the head has taken, if any.
    pub fn newest_sample_time(&self) -> Option<Timestamp> {
        Some(self.head_max.load(Ordering::Relaxed)).filter(|t| *t != Timestamp::MIN)
    }

    /// The oldest sample time local storage holds: the oldest block's start, else the head's
    /// oldest sample; `None` when empty. Remote read skips what is newer unless asked for
    /// recent data.
    pub fn oldest_sample_time(&self) -> Option<Timestamp> {
        let oldest_block = read(&self.blocks).first().map(|b| b.meta().min_time);
        oldest_block.or_else(|| read(&self.head).min_time())
    }

    /// The `promflow/` folder this database lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The labels of the head's series `id`, while the head holds it.
    pub(crate) fn series_labels(&self, id: crate::SeriesId) -> Option<Labels> {
        read(&self.head).get(id).map(|s| s.labels.to_labels())
    }

    /// Subscribes to the append feed: every batch committed from now on, in commit order
    /// (batches that stored no sample are not sent). The channel is unbounded; a subscriber
    /// is dropped once its receiver is.
    pub fn subscribe(&self) -> Receiver<Arc<CommittedBatch>> {
        self.add_subscriber(None)
    }

    /// [`Db::subscribe`], calling `wake` after each batch is sent: the subscriber can wait for
    /// batches without polling its channel.
    pub fn subscribe_waking(&self, wake: Wake) -> Receiver<Arc<CommittedBatch>> {
        self.add_subscriber(Some(wake))
    }

    fn add_subscriber(&self, wake: Option<Wake>) -> Receiver<Arc<CommittedBatch>> {
        let (tx, rx) = channel();
        lock(&self.subscribers).push((tx, wake));
        rx
    }

    /// Counters, with the `top_limit` largest entries of each label statistic.
    pub fn stats(&self, top_limit: usize) -> DbStats {
        let h = read(&self.head).stats(top_limit);
        let wal_segments = lock(&self.writer).wal.segments();
        DbStats {
            num_series: h.num_series,
            num_stale_series: h.num_stale_series,
            num_samples: h.num_samples,
            num_chunks: h.num_chunks,
            min_time: h.min_time,
            max_time: h.max_time,
            wal_corruptions: self.wal_corruptions,
            samples_from_chunk_files: self.counters.samples_from_chunk_files,
            wal_truncated_bytes: self.wal_truncated_bytes,
            wal_segments,
            commit_refused_samples: self.commit_refused.load(Ordering::Relaxed),
            series_count_by_metric: h.series_count_by_metric,
            label_value_count_by_label_name: h.label_value_count_by_label_name,
            memory_in_bytes_by_label_name: h.memory_in_bytes_by_label_name,
            series_count_by_label_value_pair: h.series_count_by_label_value_pair,
            num_label_pairs: h.num_label_pairs,
            num_blocks: read(&self.blocks).len() as u64,
            blocks_bytes: read(&self.blocks).iter().map(|b| b.size_bytes()).sum(),
            wal_bytes: lock(&self.writer).wal.size_bytes(),
            out_of_bounds_samples: self.out_of_bounds.load(Ordering::Relaxed),
            unreadable_blocks: lock(&self.unreadable_blocks).len() as u64,
        }
    }

    /// Sets the fraction of the head's series that, once stale (their newest sample a
    /// staleness marker), are written to blocks and taken out of the head at the next
    /// compaction round, before their range is cut (Prometheus's
    /// `stale_series_compaction_threshold`). 0 turns that off; values are clamped to 0..=1.
    pub fn set_stale_series_compaction_threshold(&self, fraction: f64) {
        let fraction = if fraction.is_nan() { 0.0 } else { fraction.clamp(0.0, 1.0) };
        self.stale_threshold.store(fraction.to_bits(), Ordering::Relaxed);
    }

    /// Changes the out-of-order window (Prometheus reloads `out_of_order_time_window` with the
    /// configuration). Replay after a restart uses the window given at open.
    pub fn set_out_of_order_window(&self, ms: i64) {
        self.ooo_window.store(ms.max(0), Ordering::Relaxed);
    }

    /// Keeps at most `n` exemplars from now on (`storage.exemplars.max_exemplars` reloaded);
    /// 0 keeps none.
    pub fn set_max_exemplars(&self, n: usize) {
        self.exemplars.resize(n);
    }

    /// The exemplars in `mint..=maxt` of the series matching any of the matcher sets
    /// (`/api/v1/query_exemplars`), by series in label order.
    pub fn select_exemplars(
        &self,
        matcher_sets: &[Vec<Matcher>],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Vec<crate::exemplars::SeriesExemplars> {
        self.exemplars.select(matcher_sets, mint, maxt)
    }

    /// The exemplars held, and how many may be.
    pub fn exemplar_counts(&self) -> (usize, usize) {
        (self.exemplars.len(), self.exemplars.capacity())
    }

    /// The blocks on disk, oldest first.
    pub fn blocks(&self) -> Vec<BlockInfo> {
        read(&self.blocks).iter().map(|b| BlockInfo::new(b.meta(), b.size_bytes())).collect()
    }

    /// Deletes the samples of the series matching `matchers` in `mint..=maxt`, in the head
    /// (made durable by a WAL tombstones record) and in the blocks (tombstones files until
    /// [`Db::clean_tombstones`] or a merge rewrites them). Returns the series affected.
    pub fn delete_series(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<usize, Error> {
        let mut affected = 0;
        for b in self.blocks_in(mint, maxt) {
            affected += b.delete(matchers, mint, maxt)?;
        }
        let mut w = lock(&self.writer);
        let refs = read(&self.head).matching_refs(matchers, mint, maxt);
        if !refs.is_empty() {
            let Writer { wal, buf, .. } = &mut *w;
            buf.clear();
            wal::encode_tombstones(buf, refs.iter().map(|&r| (r, mint, maxt)));
            wal.write(buf, Timestamp::MIN)?;
            let mut head = write(&self.head);
            for &r in &refs {
                head.delete_range(r, mint, maxt);
            }
        }
        affected += refs.len();
        tracing::info!(series = affected, mint, maxt, "deleted series data");
        Ok(affected)
    }

    /// Rewrites every block that has tombstones without the deleted samples.
    pub fn clean_tombstones(&self) -> Result<usize, Error> {
        let _running = lock(&self.compacting);
        let dirty: Vec<Arc<Block>> =
            read(&self.blocks).iter().filter(|b| b.has_tombstones()).cloned().collect();
        for b in &dirty {
            self.merge(std::slice::from_ref(b), b.meta().compaction.level)?;
        }
        Ok(dirty.len())
    }

    /// Writes a snapshot of the data into `<data dir>/promflow/snapshots/<name>/`: hard links
    /// to every block's files, plus the head as one more block unless `skip_head`. The
    /// snapshot directory is itself a data directory: `promflow --storage.tsdb.path` serves it.
    pub fn snapshot(&self, name: &str, skip_head: bool) -> Result<PathBuf, Error> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Error::InvalidLabels(format!("invalid snapshot name {name:?}")));
        }
        let root = self.dir.join(SNAPSHOTS_DIR).join(name);
        let blocks_dir = root.join(PROMFLOW_DIR).join(BLOCKS_DIR);
        let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
        std::fs::create_dir_all(&blocks_dir).map_err(|e| Error::Io(ctx("creating", &blocks_dir), e))?;
        for b in read(&self.blocks).clone() {
            let to = blocks_dir.join(&b.meta().ulid);
            std::fs::create_dir_all(&to).map_err(|e| Error::Io(ctx("creating", &to), e))?;
            let entries = std::fs::read_dir(b.dir()).map_err(|e| Error::Io(ctx("listing", b.dir()), e))?;
            for entry in entries.flatten() {
                let dst = to.join(entry.file_name());
                std::fs::hard_link(entry.path(), &dst)
                    .or_else(|_| std::fs::copy(entry.path(), &dst).map(|_| ()))
                    .map_err(|e| Error::Io(ctx("linking", &dst), e))?;
            }
        }
        if !skip_head {
            write_head_block(&blocks_dir, || read(&self.head), Timestamp::MIN, Timestamp::MAX)?;
        }
        tracing::info!(snapshot = %root.display(), "snapshot written");
        Ok(root)
    }

    /// Flushes the WAL to stable storage. The database stays usable; dropping it syncs too.
    pub fn close(&self) -> Result<(), Error> {
        // the compaction thread stops and lets go of the database (and its lock file) first
        self.closing.store(true, Ordering::SeqCst);
        let handle = lock(&self.compactor).take();
        if let Some(handle) = handle.filter(|h| h.thread().id() != std::thread::current().id()) {
            handle.thread().unpark();
            if handle.join().is_err() {
                tracing::error!("the compaction thread panicked");
            }
        }
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
