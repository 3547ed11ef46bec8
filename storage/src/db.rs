//! The database: a head, its WAL, the blocks on disk, the append feed and the data
//! directory lock.
//!
//! Time flows through it like this: samples are appended to the WAL and the head; once the
//! head spans more than one and a half block durations, its oldest aligned block range is
//! written as a block ([`crate::block`]), the head drops those samples, and a WAL checkpoint
//! lets the segments that held them go. Blocks are merged into larger ones as time passes
//! and deleted by retention. Queries read the head and every overlapping block and merge
//! them, so a sample is visible exactly once wherever it lives.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use crate::block::{Block, BlockMeta, BlockWriter, TMP_SUFFIX};
use crate::head::{AppendResult, Head, SeriesRef, U64Map};
use crate::wal::{self, RefSample, WalWriter};
use crate::{
    is_stale_nan, Appender, CommitStats, CommittedBatch, Error, Labels, LabelsRef, Matcher, Querier, Sample,
    Samples, Series, Timestamp,
};

/// Name of promflow's folder inside the data directory; nothing outside it is ever written.
pub(crate) const PROMFLOW_DIR: &str = "promflow";
/// The WAL folder inside [`PROMFLOW_DIR`].
const WAL_DIR: &str = "wal";
/// The snapshots folder inside [`PROMFLOW_DIR`].
const SNAPSHOTS_DIR: &str = "snapshots";
/// The blocks folder inside [`PROMFLOW_DIR`].
pub(crate) const BLOCKS_DIR: &str = "blocks";
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
    /// Bytes on disk.
    pub size_bytes: u64,
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
    /// Samples a commit refused, and reported to its caller as [`Error::Refused`], because a
    /// concurrent commit had made them out of order or duplicate after they were appended
    /// (since open).
    pub commit_refused_samples: u64,
    /// Series per metric name, largest first.
    pub series_count_by_metric: Vec<(String, u64)>,
    /// Distinct values per label name, largest first.
    pub label_value_count_by_label_name: Vec<(String, u64)>,
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

/// Rebuilds the head from the WAL, skipping samples older than `floor` (they are in blocks);
/// returns the next free series ref.
fn replay_into(
    head: &mut Head,
    wal_dir: &Path,
    floor: Timestamp,
) -> Result<(wal::ReplayOutcome, SeriesRef), Error> {
    let started = Instant::now();
    // series are added to the head on their first sample, so series whose samples were all
    // lost (torn tail) do not linger without data
    let mut pending: U64Map<Labels> = U64Map::default();
    // a WAL ref whose labels already live under another ref (duplicate series records)
    let mut alias: U64Map<SeriesRef> = U64Map::default();
    let mut max_ref: SeriesRef = 0;
    let (mut samples, mut unknown, mut rejected) = (0u64, 0u64, 0u64);
    let outcome = wal::replay(wal_dir, |rec| match rec {
        wal::Record::Tombstones(list) => {
            for (r, mint, maxt) in list {
                let target = if head.get(r).is_some() { Some(r) } else { alias.get(&r).copied() };
                if let Some(t) = target {
                    head.delete_range(t, mint, maxt);
                }
            }
        }
        wal::Record::Series(list) => {
            for (r, labels) in list {
                max_ref = max_ref.max(r);
                if head.get(r).is_none() && !alias.contains_key(&r) {
                    pending.insert(r, labels);
                }
            }
        }
        wal::Record::Samples(list) => {
            for s in list.into_iter().filter(|s| s.t >= floor) {
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
                let appended = target.map(|r| match head.append(r, s.t, s.v) {
                    // it was taken within the out-of-order window when written
                    AppendResult::OutOfOrder => head.insert_ooo(r, s.t, s.v),
                    other => other,
                });
                match appended {
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
    let last = maxt.saturating_sub(1);
    let refs = head().refs_in_range(mint, last);
    let mut writer = BlockWriter::create(blocks_dir, 1, Vec::new())?;
    let mut samples = Vec::new();
    for batch in refs.chunks(SERIES_PER_BATCH) {
        let h = head();
        for (labels, r) in batch {
            samples.clear();
            h.samples_of(*r, mint, last, &mut samples);
            if let Err(e) = writer.add(Arc::clone(labels), samples.iter().copied()) {
                drop(h);
                writer.abort();
                return Err(e);
            }
        }
    }
    writer.finish((maxt != Timestamp::MAX).then_some((mint, maxt)))
}

/// Runs [`Db::compact`] every `every` until the database is dropped.
fn spawn_compactor(db: Weak<Db>, every: Duration) {
    let weak = db.clone();
    let spawned = std::thread::Builder::new().name("promflow-compactor".into()).spawn(move || loop {
        // woken early by a commit that leaves the head with a range to cut, or by `close`
        std::thread::park_timeout(every);
        let Some(db) = weak.upgrade() else { return };
        if db.closing.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = db.compact() {
            tracing::error!(error = %e, "compaction failed; retrying at the next interval");
        }
    });
    match spawned {
        Ok(handle) => {
            if let Some(db) = db.upgrade() {
                *lock(&db.compactor) = Some(handle);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not start the compaction thread; blocks will not be cut")
        }
    }
}

/// Whether a head spanning `min..=max` has a block range to cut: it spans more than one and
/// a half block durations (Prometheus's rule), so the newest half block stays appendable.
fn head_compactable(min: Timestamp, max: Timestamp, block_duration: i64) -> bool {
    max.saturating_sub(min) > (block_duration / 2).saturating_mul(3)
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
        let floor = blocks.iter().map(|b| b.meta().max_time).max().unwrap_or(Timestamp::MIN);
        let mut head = Head::default();
        // with an out-of-order window, samples older than the newest block may have arrived
        // after it was cut and be only in the WAL: replay them (merges drop the duplicates)
        let replay_from =
            if opts.out_of_order_window > 0 { floor.saturating_sub(opts.out_of_order_window) } else { floor };
        let (outcome, next_ref) = replay_into(&mut head, &wal_dir, replay_from)?;
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
            out_of_bounds: AtomicU64::new(0),
            compacting: Mutex::new(()),
            compactor: Mutex::new(None),
            closing: std::sync::atomic::AtomicBool::new(false),
            head: RwLock::new(head),
            writer: Mutex::new(Writer { wal, next_ref, buf: Vec::new() }),
            subscribers: Mutex::new(Vec::new()),
            wal_holds: Mutex::new(Vec::new()),
            wal_corruptions: outcome.corruptions,
            wal_truncated_bytes: outcome.truncated_bytes,
            commit_refused: AtomicU64::new(0),
            unreadable_blocks: Mutex::new(unreadable),
            open_appends: Mutex::new(OpenAppends::default()),
            appends_closed: std::sync::Condvar::new(),
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

    /// A new, empty batch of appends.
    pub fn appender(self: &Arc<Self>) -> Box<dyn Appender> {
        Box::new(DbAppender {
            db: Arc::clone(self),
            series: Vec::new(),
            by_hash: U64Map::default(),
            collided: Vec::new(),
            samples: Vec::new(),
            latest: self.opts.future_limit.map_or(Timestamp::MAX, |l| now_ms().saturating_add(l)),
            open_id: None,
            oldest: Timestamp::MAX,
            admitted: None,
        })
    }

    /// Waits until no open appender holds a staged sample older than `t`, for at most
    /// `limit`; returns whether none does. Called by a head cut once appends older than `t`
    /// are refused, so that a sample accepted before the cut reaches the head before the
    /// range is written (Prometheus waits for overlapping appenders the same way).
    fn wait_for_appends_below(&self, t: Timestamp, limit: Duration) {
        let open = lock(&self.open_appends);
        let (open, waited) = self
            .appends_closed
            .wait_timeout_while(open, limit, |o| o.oldest.values().any(|&oldest| oldest < t))
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if waited.timed_out() {
            // marked under the commit lock, so that a commit either applied before the mark
            // (and the range written next holds its samples) or sees the mark
            drop(open);
            let _commits = lock(&self.writer);
            let mut open = lock(&self.open_appends);
            let late: Vec<u64> = open.oldest.iter().filter(|(_, &o)| o < t).map(|(&id, _)| id).collect();
            tracing::warn!(
                before = t,
                appenders = late.len(),
                "a head cut stopped waiting for open appenders; their samples before the cut will be refused at commit"
            );
            for id in late {
                open.abandoned.insert(id, t);
            }
        }
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
            num_samples: h.num_samples,
            num_chunks: h.num_chunks,
            min_time: h.min_time,
            max_time: h.max_time,
            wal_corruptions: self.wal_corruptions,
            wal_truncated_bytes: self.wal_truncated_bytes,
            wal_segments,
            commit_refused_samples: self.commit_refused.load(Ordering::Relaxed),
            series_count_by_metric: h.series_count_by_metric,
            label_value_count_by_label_name: h.label_value_count_by_label_name,
            series_count_by_label_value_pair: h.series_count_by_label_value_pair,
            num_label_pairs: h.num_label_pairs,
            num_blocks: read(&self.blocks).len() as u64,
            blocks_bytes: read(&self.blocks).iter().map(|b| b.size_bytes()).sum(),
            wal_bytes: lock(&self.writer).wal.size_bytes(),
            out_of_bounds_samples: self.out_of_bounds.load(Ordering::Relaxed),
            unreadable_blocks: lock(&self.unreadable_blocks).len() as u64,
        }
    }

    /// Writes storage's metrics, under Prometheus's TSDB names where it has a twin.
    pub fn write_metrics(&self, w: &mut crate::MetricsWriter) {
        let s = self.stats(0);
        w.gauge("prometheus_tsdb_head_series", "Total number of series in the head block.", s.num_series);
        w.gauge("prometheus_tsdb_head_chunks", "Total number of chunks in the head block.", s.num_chunks);
        w.counter(
            "prometheus_tsdb_head_samples_appended_total",
            "Total number of appended samples.",
            s.num_samples,
        );
        w.gauge(
            "prometheus_tsdb_head_min_time",
            "Minimum time bound of the head block.",
            s.min_time.unwrap_or(0),
        );
        w.gauge(
            "prometheus_tsdb_head_max_time",
            "Maximum timestamp of the head block.",
            s.max_time.unwrap_or(0),
        );
        w.counter(
            "prometheus_tsdb_wal_corruptions_total",
            "Total number of WAL corruptions.",
            s.wal_corruptions,
        );
        w.counter(
            "promflow_wal_truncated_bytes_total",
            "Bytes cut from torn or corrupt WAL tails at start-up.",
            s.wal_truncated_bytes,
        );
        w.gauge("promflow_wal_segments", "Number of WAL segment files.", s.wal_segments);
        w.gauge(
            "promflow_tsdb_unreadable_blocks",
            "Blocks in the data directory that could not be read and are not served.",
            s.unreadable_blocks,
        );
        w.gauge("prometheus_tsdb_blocks_loaded", "Number of currently loaded data blocks", s.num_blocks);
        w.gauge(
            "prometheus_tsdb_storage_blocks_bytes",
            "The number of bytes that are currently used for local storage by all blocks.",
            s.blocks_bytes,
        );
        w.gauge("promflow_wal_bytes", "Bytes of the WAL's segments and checkpoint.", s.wal_bytes);
        w.counter(
            "prometheus_tsdb_out_of_bound_samples_total",
            "Total number of out of bound samples ingestion failed attempts.",
            s.out_of_bounds_samples,
        );
    }

    /// Changes the out-of-order window (Prometheus reloads `out_of_order_time_window` with the
    /// configuration). Replay after a restart uses the window given at open.
    pub fn set_out_of_order_window(&self, ms: i64) {
        self.ooo_window.store(ms.max(0), Ordering::Relaxed);
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

    /// Cuts every complete block range out of the head, merges blocks, and applies
    /// retention. Runs by itself every [`DbOptions::compaction_interval`]; safe to call any
    /// time (calls are serialised).
    pub fn compact(&self) -> Result<CompactionReport, Error> {
        let _running = lock(&self.compacting);
        let mut report = CompactionReport::default();
        self.load_new_blocks();
        while let Some(deleted) = self.compact_head()? {
            report.head_blocks += 1;
            report.wal_segments_deleted += deleted;
        }
        report.merged_blocks = self.merge_blocks()?;
        report.deleted_blocks = self.apply_retention();
        Ok(report)
    }

    /// Writes the head's oldest block range to a block once the head spans more than one and
    /// a half block durations, then truncates the head and checkpoints the WAL. Returns the
    /// number of WAL segments deleted, or `None` when there was nothing to cut.
    fn compact_head(&self) -> Result<Option<usize>, Error> {
        let dur = self.opts.block_duration.max(1);
        let Some((hmin, hmax)) = read(&self.head).time_range() else { return Ok(None) };
        if !head_compactable(hmin, hmax, dur) {
            return Ok(None);
        }
        // a head reaching back to the oldest timestamps cuts its first range from there
        let range_from = |hmin: Timestamp| hmin.div_euclid(dur).checked_mul(dur).unwrap_or(Timestamp::MIN);
        let mut mint = range_from(hmin);
        let mut maxt = mint.saturating_add(dur);
        // in-order appends below `maxt` are already refused (the head spans more than 1.5
        // blocks); out-of-order ones are until the head is truncated. Set under the lock that
        // appenders register their oldest sample with, then wait for the appenders that
        // staged samples in the range: the range is complete and immutable while written.
        {
            let _open = lock(&self.open_appends);
            self.ooo_floor.store(maxt, Ordering::SeqCst);
            self.min_valid.fetch_max(maxt, Ordering::SeqCst);
        }
        self.wait_for_appends_below(maxt, self.opts.cut_waits_for_appenders);
        // what the waited-for appenders committed may lie before the planned range (admitted
        // before other writers moved the bounds on): the cut starts from the head's oldest
        // sample as it is now, so that the truncation below loses none. The range only moves
        // earlier, below the `maxt` every append was held to.
        let now_oldest = read(&self.head).time_range().map_or(hmin, |r| r.0);
        if range_from(now_oldest) < mint {
            mint = range_from(now_oldest);
            maxt = mint.saturating_add(dur);
        }
        let written = write_head_block(&self.blocks_dir, || read(&self.head), mint, maxt);
        let written = written.and_then(|meta| meta.map_or(Ok(()), |m| self.add_block(&m)));
        if let Err(e) = written {
            self.ooo_floor.store(Timestamp::MIN, Ordering::SeqCst);
            return Err(e);
        }
        self.floor.fetch_max(maxt, Ordering::SeqCst);
        self.min_valid.fetch_max(maxt, Ordering::SeqCst);
        let mut w = lock(&self.writer);
        let removed = write(&self.head).truncate(maxt);
        let head = read(&self.head);
        self.ooo_floor.store(Timestamp::MIN, Ordering::SeqCst);
        let keep_from = {
            let mut holds = lock(&self.wal_holds);
            holds.retain(|h| h.strong_count() > 0);
            holds.iter().filter_map(|h| h.upgrade()).map(|h| h.load(Ordering::Acquire)).min()
        };
        let hold = (keep_from.unwrap_or(u64::MAX), maxt.saturating_sub(crate::wal_tail::HOLD_MAX_MS));
        let deleted = w.wal.checkpoint(head.all_series(), maxt, hold)?;
        tracing::info!(
            mint,
            maxt,
            removed_series = removed,
            wal_segments_deleted = deleted,
            "cut a block from the head"
        );
        Ok(Some(deleted))
    }

    /// Opens blocks that appeared in the blocks folder since open (written by
    /// `promflow tsdb create-blocks-from`), as Prometheus picks up backfilled blocks.
    fn load_new_blocks(&self) {
        let Ok(entries) = std::fs::read_dir(&self.blocks_dir) else { return };
        let known: BTreeSet<String> = read(&self.blocks).iter().map(|b| b.meta().ulid.clone()).collect();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TMP_SUFFIX)
                || known.contains(&name)
                || !entry.path().join(crate::block::META_FILE).is_file()
            {
                continue;
            }
            match Block::open(&entry.path()) {
                Ok(b) => {
                    tracing::info!(block = %name, "loaded a block added to the data directory");
                    let mut blocks = write(&self.blocks);
                    blocks.push(Arc::new(b));
                    blocks.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
                }
                Err(e) => {
                    if lock(&self.unreadable_blocks).insert(name.clone()) {
                        tracing::error!(block = %name, error = %e, "skipping unreadable new block");
                    }
                }
            }
        }
    }

    /// Opens a block just written and makes it visible to queries.
    fn add_block(&self, meta: &BlockMeta) -> Result<(), Error> {
        let block = Arc::new(Block::open(&self.blocks_dir.join(&meta.ulid))?);
        let mut blocks = write(&self.blocks);
        blocks.push(block);
        blocks.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
        Ok(())
    }

    /// Removes blocks from the query path and deletes their directories.
    fn delete_blocks(&self, ulids: &BTreeSet<String>) {
        let gone: Vec<Arc<Block>> = {
            let mut blocks = write(&self.blocks);
            let (gone, kept) = blocks.drain(..).partition(|b| ulids.contains(&b.meta().ulid));
            *blocks = kept;
            gone
        };
        for b in gone {
            if let Err(e) = std::fs::remove_dir_all(b.dir()) {
                tracing::warn!(block = %b.dir().display(), error = %e, "could not delete block directory");
            }
        }
    }

    /// Merges overlapping blocks, and blocks that together fill an aligned range three times
    /// larger than theirs (6h, 18h, 54h, … for 2h blocks, up to `max_block_duration`). Returns the number
    /// of blocks written.
    fn merge_blocks(&self) -> Result<usize, Error> {
        let mut written = 0;
        loop {
            let blocks = read(&self.blocks).clone();
            let Some(group) =
                plan_merge(&blocks, self.opts.block_duration.max(1), self.opts.max_block_duration)
            else {
                return Ok(written);
            };
            let level = group.iter().map(|b| b.meta().compaction.level).max().unwrap_or(1) + 1;
            self.merge(&group, level)?;
            written += 1;
        }
    }

    /// Writes one block of compaction `level` holding the data of `group` (without deleted
    /// samples) and deletes the group.
    fn merge(&self, group: &[Arc<Block>], level: u32) -> Result<(), Error> {
        let sources: BTreeSet<String> =
            group.iter().flat_map(|b| b.meta().compaction.sources.iter().cloned()).collect();
        let mint = group.iter().map(|b| b.meta().min_time).min().unwrap_or(0);
        let maxt = group.iter().map(|b| b.meta().max_time).max().unwrap_or(0);
        // every series of the group in label order, with where it lives
        let mut entries: Vec<(Arc<Labels>, usize, u32)> = Vec::new();
        for (bi, b) in group.iter().enumerate() {
            for (id, s) in b.index().series.iter().enumerate() {
                entries.push((Arc::clone(&s.labels), bi, id as u32));
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut writer = BlockWriter::create(&self.blocks_dir, level, sources.into_iter().collect())?;
        let result = (|| {
            let mut start = 0;
            while start < entries.len() {
                let mut end = (start + SERIES_PER_BATCH).min(entries.len());
                while end < entries.len() && entries[end].0 == entries[end - 1].0 {
                    end += 1;
                }
                let chunk = &entries[start..end];
                let mut read_back: Vec<Vec<Samples>> = Vec::with_capacity(group.len());
                let mut positions: Vec<usize> = vec![0; group.len()];
                for (bi, b) in group.iter().enumerate() {
                    let ids: Vec<u32> = chunk.iter().filter(|e| e.1 == bi).map(|e| e.2).collect();
                    read_back.push(b.read(&ids, Timestamp::MIN, Timestamp::MAX)?);
                }
                let mut i = 0;
                while i < chunk.len() {
                    let mut parts: Vec<Samples> = Vec::new();
                    let labels = Arc::clone(&chunk[i].0);
                    while i < chunk.len() && chunk[i].0 == labels {
                        let bi = chunk[i].1;
                        parts.push(std::mem::take(&mut read_back[bi][positions[bi]]));
                        positions[bi] += 1;
                        i += 1;
                    }
                    writer.add(labels, merge_samples(parts).iter())?;
                }
                start = end;
            }
            Ok::<(), Error>(())
        })();
        if let Err(e) = result {
            writer.abort();
            return Err(e);
        }
        if let Some(meta) = writer.finish(Some((mint, maxt)))? {
            self.add_block(&meta)?;
        }
        self.delete_blocks(&group.iter().map(|b| b.meta().ulid.clone()).collect());
        tracing::info!(blocks = group.len(), level, mint, maxt, "merged blocks");
        Ok(())
    }

    /// Deletes whole blocks beyond the retention time (counted back from the newest block's
    /// end) and, oldest first, while blocks and WAL exceed the retention size.
    fn apply_retention(&self) -> usize {
        let blocks = read(&self.blocks).clone();
        let mut doomed: BTreeSet<String> = BTreeSet::new();
        // measured from the newest block's end, but never from the future: blocks ahead of
        // the clock (written before a future limit was set) must not push the present out
        let newest = blocks.iter().map(|b| b.meta().max_time).max().map(|n| n.min(now_ms()));
        if let (Some(keep), Some(newest)) = (self.opts.retention_time, newest) {
            for b in &blocks {
                if newest.saturating_sub(b.meta().max_time) > keep {
                    doomed.insert(b.meta().ulid.clone());
                }
            }
        }
        if let Some(limit) = self.opts.retention_size {
            let mut total: u64 = lock(&self.writer).wal.size_bytes()
                + blocks
                    .iter()
                    .filter(|b| !doomed.contains(&b.meta().ulid))
                    .map(|b| b.size_bytes())
                    .sum::<u64>();
            for b in &blocks {
                if total <= limit {
                    break;
                }
                if doomed.insert(b.meta().ulid.clone()) {
                    total = total.saturating_sub(b.size_bytes());
                }
            }
        }
        if !doomed.is_empty() {
            tracing::info!(blocks = doomed.len(), "deleting blocks beyond retention");
            self.delete_blocks(&doomed);
        }
        doomed.len()
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

/// Which blocks to merge next: a set of overlapping blocks, or else the blocks that fill an
/// aligned range of the next size up, once a newer block shows that range is complete.
fn plan_merge(blocks: &[Arc<Block>], block_duration: i64, max_range: i64) -> Option<Vec<Arc<Block>>> {
    // overlaps first: blocks are sorted by min_time, so a run of overlaps is contiguous
    let mut i = 0;
    while i < blocks.len() {
        let mut end = blocks[i].meta().max_time;
        let mut j = i + 1;
        while j < blocks.len() && blocks[j].meta().min_time < end {
            end = end.max(blocks[j].meta().max_time);
            j += 1;
        }
        if j - i > 1 {
            return Some(blocks[i..j].to_vec());
        }
        i = j;
    }
    let newest = blocks.iter().map(|b| b.meta().max_time).max()?;
    let mut range = block_duration.saturating_mul(3);
    while range <= max_range {
        let mut k = 0;
        while k < blocks.len() {
            let start =
                blocks[k].meta().min_time.div_euclid(range).checked_mul(range).unwrap_or(Timestamp::MIN);
            let stop = start.saturating_add(range);
            let group: Vec<Arc<Block>> =
                blocks[k..].iter().take_while(|b| b.meta().min_time < stop).cloned().collect();
            k += group.len().max(1);
            let fits = group.iter().all(|b| b.meta().max_time <= stop);
            if fits && group.len() > 1 && stop <= newest {
                return Some(group);
            }
        }
        let next = range.saturating_mul(3);
        if next == range {
            break;
        }
        range = next;
    }
    None
}

/// Merges sample lists of one series into time order, keeping the first of equal timestamps.
fn merge_samples(mut parts: Vec<Samples>) -> Samples {
    parts.retain(|p| !p.is_empty());
    match parts.len() {
        0 => Samples::default(),
        1 => parts.pop().unwrap_or_default(),
        _ => {
            let mut all: Vec<Sample> = parts.iter().flat_map(|p| p.iter()).collect();
            all.sort_by_key(|s| s.t);
            all.dedup_by_key(|s| s.t);
            all.into()
        }
    }
}

/// Merges per-source lists of series (each sorted by labels) into one sorted list, joining
/// the samples of series found in several sources.
fn merge_series(mut parts: Vec<Vec<Series>>) -> Vec<Series> {
    parts.retain(|p| !p.is_empty());
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut all: Vec<Series> = parts.concat();
    all.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut out: Vec<Series> = Vec::with_capacity(all.len());
    let mut pending: Vec<Samples> = Vec::new();
    let mut iter = all.into_iter().peekable();
    while let Some(s) = iter.next() {
        pending.push(s.samples);
        if iter.peek().is_some_and(|n| n.labels == s.labels) {
            continue;
        }
        out.push(Series { labels: s.labels, samples: merge_samples(std::mem::take(&mut pending)) });
    }
    out
}

impl Db {
    /// The blocks that may hold samples in `mint..=maxt`.
    fn blocks_in(&self, mint: Timestamp, maxt: Timestamp) -> Vec<Arc<Block>> {
        read(&self.blocks).iter().filter(|b| b.overlaps(mint, maxt)).cloned().collect()
    }
}

impl Querier for Db {
    fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, Error> {
        // the head before the blocks: a cut adds its block before it truncates the head, so a
        // range that moves between the two reads is seen at least once (then merged), never
        // missed
        let head = read(&self.head).select(matchers, mint, maxt);
        let mut parts = Vec::new();
        for b in self.blocks_in(mint, maxt) {
            parts.push(b.select(matchers, mint, maxt)?);
        }
        parts.push(head);
        Ok(merge_series(parts))
    }

    fn series(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Labels>, Error> {
        let mut out = read(&self.head).series_labels(matchers, mint, maxt);
        let blocks = self.blocks_in(mint, maxt);
        if blocks.is_empty() {
            return Ok(out);
        }
        for b in blocks {
            out.extend(b.series_labels(matchers, mint, maxt).into_iter().map(|l| (*l).clone()));
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, Error> {
        let mut out = read(&self.head).label_names(matchers, mint, maxt);
        let blocks = self.blocks_in(mint, maxt);
        if blocks.is_empty() {
            return Ok(out);
        }
        for b in blocks {
            if matchers.is_empty() {
                out.extend(b.index().postings().names().map(|(n, _)| n.clone()));
            } else {
                for ls in b.series_labels(matchers, mint, maxt) {
                    out.extend(ls.iter().map(|l| l.name.clone()));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, Error> {
        let mut out = read(&self.head).label_values(name, matchers, mint, maxt);
        let blocks = self.blocks_in(mint, maxt);
        if blocks.is_empty() {
            return Ok(out);
        }
        for b in blocks {
            if matchers.is_empty() {
                if let Some(values) = b.index().postings().values(name) {
                    out.extend(values.keys().cloned());
                }
            } else {
                for ls in b.series_labels(matchers, mint, maxt) {
                    let v = ls.get(name);
                    if !v.is_empty() {
                        out.push(v.to_string());
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
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
    /// The newest timestamp the appender takes: its creation time plus the future limit.
    latest: Timestamp,
    /// The appender's key in [`Db::open_appends`] once it has staged a sample.
    open_id: Option<u64>,
    /// The oldest staged timestamp (`i64::MAX` before the first).
    oldest: Timestamp,
    /// The loosest bounds any staged sample was admitted under: the commit checks against
    /// these, not against bounds that moved since (other commits, a head cut).
    admitted: Option<Bounds>,
}

/// The oldest staged sample of every open appender, by appender.
#[derive(Default)]
struct OpenAppends {
    next_id: u64,
    oldest: U64Map<Timestamp>,
    /// Appenders a head cut stopped waiting for, with the end of the range it cut: their
    /// samples before it can no longer be stored.
    abandoned: U64Map<Timestamp>,
}

impl DbAppender {
    /// The end of the range a head cut wrote without waiting for this appender, if one did.
    fn abandoned_below(&self) -> Option<Timestamp> {
        self.open_id.and_then(|id| lock(&self.db.open_appends).abandoned.get(&id).copied())
    }
}

impl Drop for DbAppender {
    fn drop(&mut self) {
        if let Some(id) = self.open_id.take() {
            let mut open = lock(&self.db.open_appends);
            open.oldest.remove(&id);
            open.abandoned.remove(&id);
            drop(open);
            self.db.appends_closed.notify_all();
        }
    }
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

/// The time bounds a sample must meet, read once per append.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    /// Older in-order samples are out of bounds.
    min_valid: Timestamp,
    /// The oldest sample the out-of-order window takes (`i64::MAX` without a window).
    ooo_min: Timestamp,
}

impl Bounds {
    /// The bounds that admit what either admits.
    fn loosest(self, other: Bounds) -> Bounds {
        Bounds { min_valid: self.min_valid.min(other.min_valid), ooo_min: self.ooo_min.min(other.ooo_min) }
    }
}

impl Db {
    fn bounds(&self) -> Bounds {
        let window = self.ooo_window.load(Ordering::Relaxed);
        let ooo_min = if window > 0 {
            self.head_max
                .load(Ordering::Relaxed)
                .saturating_sub(window)
                .max(self.ooo_floor.load(Ordering::Relaxed))
                .max(Timestamp::MIN + 1)
        } else {
            Timestamp::MAX
        };
        Bounds { min_valid: self.min_valid.load(Ordering::Relaxed), ooo_min }
    }
}

/// How a sample is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admit {
    /// After the series' newest sample.
    InOrder,
    /// Older than the series' newest, within the out-of-order window.
    OutOfOrder,
    /// Dropped silently (see [`check`]).
    Skip,
}

/// Decides how `(t, v)` is taken given the series' newest sample and the bounds.
fn admit(last: Option<(Timestamp, u64)>, t: Timestamp, v: f64, b: Bounds) -> Result<Admit, Error> {
    let in_window = t >= b.ooo_min;
    if t < b.min_valid && !in_window {
        return Err(Error::OutOfBounds);
    }
    match check(last, t, v) {
        Ok(true) => Ok(Admit::InOrder),
        Ok(false) => Ok(Admit::Skip),
        Err(Error::OutOfOrder) if in_window => Ok(Admit::OutOfOrder),
        Err(e) => Err(e),
    }
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

/// What a batch looks a series up by: owned labels (scrapes, rules) or labels borrowed from
/// a decoded request (remote write), so a known series costs no allocation.
trait SeriesKey {
    fn hash(&self) -> u64;
    fn is(&self, labels: &Labels) -> bool;
    fn to_labels(&self) -> Labels;
}

impl SeriesKey for &Labels {
    fn hash(&self) -> u64 {
        self.stable_hash()
    }
    fn is(&self, labels: &Labels) -> bool {
        **self == *labels
    }
    fn to_labels(&self) -> Labels {
        (*self).clone()
    }
}

impl SeriesKey for LabelsRef<'_> {
    fn hash(&self) -> u64 {
        self.stable_hash()
    }
    fn is(&self, labels: &Labels) -> bool {
        labels.eq_ref(*self)
    }
    fn to_labels(&self) -> Labels {
        LabelsRef::to_labels(self)
    }
}

impl DbAppender {
    /// Index of the series `key` in the batch, adding it (with the head's state) if new.
    fn series_index(&mut self, key: impl SeriesKey) -> Result<u32, Error> {
        let hash = key.hash();
        if let Some(&i) = self.by_hash.get(&hash) {
            if key.is(&self.series[i as usize].labels) {
                return Ok(i);
            }
            if let Some(&j) = self.collided.iter().find(|&&j| key.is(&self.series[j as usize].labels)) {
                return Ok(j);
            }
        }
        let idx = u32::try_from(self.series.len())
            .map_err(|_| Error::InvalidLabels("too many series in one batch".into()))?;
        let entry = {
            let head = read(&self.db.head);
            match head.lookup_by(hash, |l| key.is(l)).and_then(|r| head.get(r).map(|s| (r, s))) {
                Some((r, s)) => {
                    BatchSeries { labels: Arc::clone(&s.labels), hash, sref: Some(r), last: s.last() }
                }
                None => {
                    let labels = key.to_labels();
                    validate(&labels)?;
                    BatchSeries { labels: Arc::new(labels), hash, sref: None, last: None }
                }
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

    /// Stages `(t, v)` for the batch's series `idx`.
    fn append_at(&mut self, idx: u32, t: Timestamp, v: f64, bounds: Bounds) -> Result<(), Error> {
        let s = &mut self.series[idx as usize];
        match admit(s.last, t, v, bounds)? {
            Admit::InOrder => {
                s.last = Some((t, v.to_bits()));
                self.samples.push((idx, t, v));
            }
            Admit::OutOfOrder => {
                // a conflicting value at a timestamp the series has is refused now, not
                // dropped silently at commit
                let stored = s.sref.and_then(|r| read(&self.db.head).value_at(r, t));
                let batched =
                    self.samples.iter().find(|&&(i, bt, _)| i == idx && bt == t).map(|x| x.2.to_bits());
                match stored.or(batched) {
                    Some(bits) if bits != v.to_bits() => return Err(Error::DuplicateTimestamp),
                    Some(_) => {}
                    None => self.samples.push((idx, t, v)),
                }
            }
            Admit::Skip => {}
        }
        Ok(())
    }

    /// The bounds `t` must meet, or the out-of-bounds error (counted). A `t` older than any
    /// staged before is registered in [`Db::open_appends`] under the same lock as the bounds
    /// are read, so a head cut either refuses it or waits for this appender's commit.
    fn bounds_for(&mut self, t: Timestamp) -> Result<Bounds, Error> {
        if t > self.latest {
            self.db.out_of_bounds.fetch_add(1, Ordering::Relaxed);
            let limit_ms = self.db.opts.future_limit.unwrap_or(0);
            return Err(Error::TooFarInFuture { t, limit_ms });
        }
        let db = Arc::clone(&self.db);
        let mut open = (t < self.oldest).then(|| lock(&db.open_appends));
        let bounds = db.bounds();
        if t < bounds.min_valid && t < bounds.ooo_min {
            db.out_of_bounds.fetch_add(1, Ordering::Relaxed);
            return Err(Error::OutOfBounds);
        }
        if let Some(open) = open.as_mut() {
            let id = *self.open_id.get_or_insert_with(|| {
                open.next_id += 1;
                open.next_id
            });
            open.oldest.insert(id, t);
            self.oldest = t;
        }
        self.admitted = Some(self.admitted.map_or(bounds, |a| a.loosest(bounds)));
        Ok(bounds)
    }
}

impl Appender for DbAppender {
    fn append(&mut self, labels: &Labels, t: Timestamp, v: f64) -> Result<(), Error> {
        let bounds = self.bounds_for(t)?;
        let idx = self.series_index(labels)?;
        self.append_at(idx, t, v, bounds)
    }

    fn append_ref(&mut self, labels: LabelsRef<'_>, t: Timestamp, v: f64) -> Result<(), Error> {
        let bounds = self.bounds_for(t)?;
        let idx = self.series_index(labels)?;
        self.append_at(idx, t, v, bounds)
    }

    fn commit(mut self: Box<Self>) -> Result<CommitStats, Error> {
        let db = Arc::clone(&self.db);
        let mut series = std::mem::take(&mut self.series);
        let samples = std::mem::take(&mut self.samples);
        let admitted = self.admitted;
        if samples.is_empty() {
            return Ok(CommitStats::default());
        }
        let mut guard = lock(&db.writer);
        let writer = &mut *guard;
        let abandoned_below = self.abandoned_below();

        // Re-validate against the head as it is now: the commit lock keeps it unchanged
        // until we apply. A concurrent commit may have created our new series or advanced
        // our series' newest sample since `append`. Time bounds are those the samples were
        // admitted under: a head cut waits for this commit ([`Db::wait_for_appends_below`]),
        // and bounds moved by other commits must not turn an accepted sample away.
        let mut refs: Vec<Option<SeriesRef>> = Vec::with_capacity(series.len());
        let mut keep = vec![false; samples.len()];
        let mut refused: Option<(u64, Error)> = None;
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
            let bounds = admitted.unwrap_or_else(|| db.bounds());
            // only when a cut gave up waiting for this appender: a sample in the range it
            // wrote would be lost with the head's truncation
            let cut = abandoned_below.unwrap_or(Timestamp::MIN);
            for (k, &(idx, t, v)) in keep.iter_mut().zip(&samples) {
                let verdict =
                    if t < cut { Err(Error::OutOfBounds) } else { admit(last[idx as usize], t, v, bounds) };
                match verdict {
                    Ok(Admit::InOrder) => {
                        *k = true;
                        last[idx as usize] = Some((t, v.to_bits()));
                    }
                    Ok(Admit::OutOfOrder) => *k = true,
                    Ok(Admit::Skip) => {}
                    Err(e) => match &mut refused {
                        Some((n, _)) => *n += 1,
                        None => refused = Some((1, e)),
                    },
                }
            }
        }
        if let Some((n, e)) = &refused {
            db.commit_refused.fetch_add(*n, Ordering::Relaxed);
            tracing::warn!(samples = n, staged = samples.len(), reason = %e, "samples made unacceptable by a concurrent commit were refused");
        }
        // the rest is committed; the refusal is the caller's to report
        let refusal = |stored: usize| match refused {
            Some((n, reason)) => Err(Error::Refused {
                refused: n,
                staged: samples.len() as u64,
                stored,
                reason: Box::new(reason),
            }),
            None => Ok(()),
        };

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
            return refusal(0).map(|()| CommitStats::default());
        }

        // one write(2) for the whole batch
        writer.buf.clear();
        wal::encode_series(
            &mut writer.buf,
            new_series.iter().map(|&i| (ref_of(i), &*series[i as usize].labels)),
        );
        wal::encode_samples(&mut writer.buf, kept().map(|(idx, t, v)| RefSample { r: ref_of(idx), t, v }));
        let max_t = kept().map(|(_, t, _)| t).max().unwrap_or(Timestamp::MIN);
        let written = writer.wal.write(&writer.buf, max_t);
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
                let res = match head.append(ref_of(idx), t, v) {
                    AppendResult::OutOfOrder => head.insert_ooo(ref_of(idx), t, v),
                    other => other,
                };
                if !matches!(res, AppendResult::Appended | AppendResult::Ignored) {
                    tracing::debug!(result = ?res, "head refused an out-of-order sample of the batch");
                }
            }
            if let Some((min, max)) = head.time_range() {
                db.head_max.fetch_max(max, Ordering::Relaxed);
                // cut now rather than at the compactor's next round: a backfill would pile
                // hours of samples into the head in between
                if head_compactable(min, max, db.opts.block_duration) {
                    if let Some(compactor) = lock(&db.compactor).as_ref() {
                        compactor.thread().unpark();
                    }
                }
            }
            let floor = db.floor.load(Ordering::Relaxed);
            db.min_valid
                .fetch_max(min_valid(floor, head.time_range(), db.opts.block_duration), Ordering::Relaxed);
        }

        let mut subs = lock(&db.subscribers);
        if !subs.is_empty() {
            let batch = Arc::new(CommittedBatch {
                samples: kept()
                    .map(|(idx, t, v)| (Arc::clone(&series[idx as usize].labels), Sample { t, v }))
                    .collect(),
            });
            subs.retain(|(tx, wake)| {
                let sent = tx.send(Arc::clone(&batch)).is_ok();
                if let (true, Some(wake)) = (sent, wake) {
                    wake();
                }
                sent
            });
        }
        drop(subs);
        refusal(num_samples)?;
        Ok(CommitStats { samples: num_samples, new_series: new_series.len() })
    }

    fn rollback(self: Box<Self>) {}
}
