//! Immutable columnar blocks: a time range of samples in files of their own, with their
//! series index and meta file.
//!
//! A block is a directory `promflow/blocks/<ULID>/` holding:
//!
//! * `meta.json`: the block's ULID, time range (`minTime` inclusive, `maxTime` exclusive,
//!   milliseconds), sample and series counts, compaction level and source blocks;
//! * `index`: every series' labels in label order, with its row range (see [`index`]);
//! * `samples`: one row per float sample, sorted by series then time, in zstd-compressed
//!   frames of byte planes (see [`frames`]): timestamps as differences of differences, values
//!   as differences of exact decimal mantissas ([`crate::decimal`]) or as raw bits. Written
//!   by version 2 of the layout (`meta.json`'s `version`).
//!
//! Version 1 blocks, still read, hold their float samples in `samples.parquet` instead: one
//! row per sample, sorted by series then time, with the columns
//!   - `series_id` (UInt32): the series' position in the index,
//!   - `timestamp` (Int64): milliseconds since the Unix epoch,
//!   - `value_decimal_delta_zigzag` (UInt64, nullable) and `value_digits` (UInt8): the value
//!     as a decimal mantissa `m` with `value = m / 10^value_digits` when that is exact,
//!     stored as the zigzag-encoded difference from the series' previous mantissa (the first
//!     one of a series from 0);
//!   - `value_float` (Float64, nullable): the value itself when no mantissa is exact;
//!
//!   zstd-compressed, in pages of at most [`PAGE_ROWS`] rows.
//!
//! A block that has native-histogram samples also holds `histograms.parquet` (see
//! [`histograms`]); its series are in the same index. A block whose samples have start
//! timestamps holds `start_timestamps.parquet` (see [`starts`]).
//!
//! A block may also hold a `tombstones` file: time ranges of series deleted through the admin
//! API (`PFTS`, a version byte, then `uvarint n` and `n × (uvarint series id, varint mint,
//! varint maxt)`, then a crc32c). Reads leave those samples out; merging or cleaning the
//! block drops them for good.
//!
//! A block is written into `<ULID>.tmp/` and renamed into place once complete and synced, so
//! a crash never leaves a half-written block under a real name.

pub(crate) mod frames;
pub(crate) mod histograms;
pub(crate) mod index;
pub(crate) mod starts;

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt32Type, UInt64Type, UInt8Type};
use arrow_array::Array;
use arrow_buffer::ScalarBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
    RowSelection,
};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
use parquet::schema::types::SchemaDescriptor;
use serde::{Deserialize, Serialize};

use crate::codec::unzigzag;
use crate::head::PackedLabels;
use crate::{Error, HistogramSample, HistogramSeries, Labels, Matcher, Sample, Samples, Series, Timestamp};
use frames::{FramesFile, FramesWriter, FRAMES_FILE};
use histograms::{HistogramFile, HistogramWriter};
use index::BlockIndex;
use starts::{StartFile, StartWriter};

/// The block's meta file.
pub(crate) const META_FILE: &str = "meta.json";
/// The block's series index.
pub(crate) const INDEX_FILE: &str = "index";
/// A version 1 block's samples.
pub(crate) const PARQUET_SAMPLES_FILE: &str = "samples.parquet";
/// The block's deleted ranges.
pub(crate) const TOMBSTONES_FILE: &str = "tombstones";
const TOMBSTONES_MAGIC: &[u8; 4] = b"PFTS";
/// Suffix of a block directory being written.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
/// Rows per Parquet data page of a version 1 block's samples.
pub(crate) const PAGE_ROWS: usize = 16 * 1024;
/// Rows a batch of a Parquet reader holds.
const BATCH_ROWS: usize = 64 * 1024;
/// The layout version written into meta files.
const VERSION: u32 = 2;
/// The `format` written into meta files.
const FORMAT: &str = "promflow-frames-v2";

/// Compaction lineage, as in Prometheus's `meta.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Compaction {
    /// 1 for a block cut from the head or backfilled, one more per merge.
    pub(crate) level: u32,
    /// ULIDs of the level-1 blocks whose data this block holds.
    pub(crate) sources: Vec<String>,
    /// How the block came to be, where that matters to the database: [`STALE_SERIES_HINT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) hints: Vec<String>,
}

/// The hint of a block of stale series taken out of the head early: the head still holds
/// the rest of its range, so it does not mark where the head's samples begin.
pub(crate) const STALE_SERIES_HINT: &str = "from-stale-series";

impl BlockMeta {
    /// Whether the block holds stale series taken out of the head early.
    pub(crate) fn holds_stale_series(&self) -> bool {
        self.compaction.hints.iter().any(|h| h == STALE_SERIES_HINT)
    }
}

/// Counts of a block's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BlockStats {
    /// Samples: float rows and histograms.
    pub(crate) num_samples: u64,
    /// Series.
    pub(crate) num_series: u64,
    /// Native-histogram samples (in `histograms.parquet`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) num_histogram_samples: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A block's `meta.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BlockMeta {
    /// The block's id, also its directory name.
    pub(crate) ulid: String,
    /// Oldest timestamp the block may hold (inclusive).
    pub(crate) min_time: Timestamp,
    /// End of the block's range (exclusive).
    pub(crate) max_time: Timestamp,
    /// Contents.
    pub(crate) stats: BlockStats,
    /// Lineage.
    pub(crate) compaction: Compaction,
    /// Layout version; readers refuse versions they do not know.
    pub(crate) version: u32,
    /// The on-disk format's name.
    pub(crate) format: String,
}

/// Crockford's base32 alphabet, as ULIDs use.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new ULID: 48 bits of milliseconds and 80 bits that differ per process and call, so
/// blocks sort by creation time like Prometheus's.
pub(crate) fn new_ulid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let ms = now.as_millis() & ((1 << 48) - 1);
    let seed = (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r = xxhash_rust::xxh64::xxh64(&n.to_le_bytes(), seed) as u128
        | (u128::from(xxhash_rust::xxh64::xxh64(&seed.to_le_bytes(), n) as u16) << 64);
    let v: u128 = (ms << 80) | (r & ((1 << 80) - 1));
    (0..26).rev().map(|i| CROCKFORD[((v >> (i * 5)) & 31) as usize] as char).collect()
}

fn io(what: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Io(what(), e)
}

fn pq(what: &'static str) -> impl FnOnce(parquet::errors::ParquetError) -> Error {
    move |e| Error::Io(what.to_string(), std::io::Error::other(e))
}

/// A version 1 block's samples file's Arrow schema.
pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt32, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("value_decimal_delta_zigzag", DataType::UInt64, true),
        Field::new("value_digits", DataType::UInt8, false),
        Field::new("value_float", DataType::Float64, true),
    ]))
}

/// Writes one block from series handed over in label order.
pub(crate) struct BlockWriter {
    tmp: PathBuf,
    dir: PathBuf,
    ulid: String,
    level: u32,
    sources: Vec<String>,
    /// The compaction hints `meta.json` will carry.
    hints: Vec<String>,
    frames: FramesWriter,
    /// (labels, rows, min_t, max_t) per series written, the labels packed: a cut of a million
    /// series holds them all until the index is written.
    series: Vec<(PackedLabels, u64, Timestamp, Timestamp)>,
    /// The series being added, collected to be cut into frames.
    buffer: Vec<Sample>,
    samples: u64,
    histograms: HistogramWriter,
    starts: StartWriter,
}

impl BlockWriter {
    /// Starts a block in `blocks_dir/<new ULID>.tmp/`. `sources` empty means the block is its
    /// own source (level 1).
    pub(crate) fn create(blocks_dir: &Path, level: u32, sources: Vec<String>) -> Result<Self, Error> {
        let ulid = new_ulid();
        let dir = blocks_dir.join(&ulid);
        let tmp = blocks_dir.join(format!("{ulid}{TMP_SUFFIX}"));
        std::fs::create_dir_all(&tmp)
            .map_err(io(|| format!("creating block directory {}", tmp.display())))?;
        let frames = FramesWriter::create(&tmp.join(FRAMES_FILE))?;
        let sources = if sources.is_empty() { vec![ulid.clone()] } else { sources };
        Ok(BlockWriter {
            tmp,
            dir,
            ulid,
            level,
            sources,
            hints: Vec::new(),
            frames,
            series: Vec::new(),
            buffer: Vec::new(),
            samples: 0,
            histograms: HistogramWriter::new(),
            starts: StartWriter::default(),
        })
    }

    /// Marks the block with a compaction hint (such as [`STALE_SERIES_HINT`]).
    pub(crate) fn add_hint(&mut self, hint: &str) {
        self.hints.push(hint.to_string());
    }

    /// Adds a series after every series added so far in label order, with its float samples,
    /// its histograms and the start-timestamp runs of both, each in time order. A series
    /// without samples is skipped.
    pub(crate) fn add(
        &mut self,
        labels: Arc<Labels>,
        samples: impl Iterator<Item = Sample> + Clone,
        hists: &[HistogramSample],
        starts: &[crate::StartRun],
    ) -> Result<(), Error> {
        let firsts = [samples.clone().next().map(|s| s.t), hists.first().map(|h| h.t)];
        let lasts = [samples.clone().last().map(|s| s.t), hists.last().map(|h| h.t)];
        let (Some(first_t), Some(last_t)) =
            (firsts.into_iter().flatten().min(), lasts.into_iter().flatten().max())
        else {
            return Ok(());
        };
        let packed = PackedLabels::new(&labels);
        if self.series.last().is_some_and(|(prev, ..)| prev.cmp_labels(&packed).is_ge()) {
            return Err(Error::InvalidLabels(format!("block series out of order at {labels}")));
        }
        let id = u32::try_from(self.series.len())
            .map_err(|_| Error::InvalidLabels("too many series in one block".into()))?;
        self.buffer.clear();
        self.buffer.extend(samples);
        self.frames.add(&self.buffer)?;
        let n = self.buffer.len() as u64;
        self.samples += n;
        self.histograms.add(&self.tmp, id, hists)?;
        self.starts.add(&self.tmp, id, starts)?;
        self.series.push((packed, n, first_t, last_t));
        Ok(())
    }

    /// Completes the block: writes the index and meta file, syncs, and renames the directory
    /// into place. The block covers `range` (`[min, max)`), or the span of its samples when
    /// `range` is `None`. Returns `None` (and leaves nothing behind) for a block without
    /// series.
    pub(crate) fn finish(
        mut self,
        range: Option<(Timestamp, Timestamp)>,
    ) -> Result<Option<BlockMeta>, Error> {
        if self.series.is_empty() {
            self.abort();
            return Ok(None);
        }
        let num_histogram_samples = self.histograms.samples;
        std::mem::replace(&mut self.histograms, HistogramWriter::new()).finish()?;
        std::mem::take(&mut self.starts).finish()?;
        self.frames.finish()?;
        let (min, max) = range.unwrap_or_else(|| {
            let min = self.series.iter().map(|s| s.2).min().unwrap_or(0);
            let max = self.series.iter().map(|s| s.3).max().unwrap_or(0);
            (min, max.saturating_add(1))
        });
        let meta = BlockMeta {
            ulid: self.ulid.clone(),
            min_time: min,
            max_time: max,
            stats: BlockStats {
                num_samples: self.samples + num_histogram_samples,
                num_series: self.series.len() as u64,
                num_histogram_samples,
            },
            compaction: Compaction {
                level: self.level,
                sources: std::mem::take(&mut self.sources),
                hints: std::mem::take(&mut self.hints),
            },
            version: VERSION,
            format: FORMAT.to_string(),
        };
        write_synced(&self.tmp.join(INDEX_FILE), &index::encode(&self.series))?;
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::Io("encoding meta.json".into(), std::io::Error::other(e)))?;
        write_synced(&self.tmp.join(META_FILE), &json)?;
        std::fs::rename(&self.tmp, &self.dir)
            .map_err(io(|| format!("renaming {} into place", self.tmp.display())))?;
        sync_dir(self.dir.parent().unwrap_or(Path::new(".")));
        Ok(Some(meta))
    }

    /// Removes the partly written block.
    pub(crate) fn abort(self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Opens the Parquet file `name` of the block in `dir` that only some blocks have
/// (histograms, start timestamps), reading its footer once with the schema `expected` picks
/// from the footer's columns, rather than the Arrow schema embedded in it (as for the samples
/// file); `None` when the block has none.
fn open_optional(
    dir: &Path,
    name: &str,
    expected: impl FnOnce(&SchemaDescriptor) -> SchemaRef,
) -> Result<Option<(File, ArrowReaderMetadata)>, Error> {
    let path = dir.join(name);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io(format!("opening {}", path.display()), e)),
    };
    let footer = |e: parquet::errors::ParquetError| {
        Error::Io(format!("reading the footer of {}", path.display()), std::io::Error::other(e))
    };
    let parquet = ParquetMetaDataReader::new().parse_and_finish(&file).map_err(footer)?;
    let options = ArrowReaderOptions::new().with_schema(expected(parquet.file_metadata().schema_descr()));
    let metadata = ArrowReaderMetadata::try_new(Arc::new(parquet), options).map_err(footer)?;
    Ok(Some((file, metadata)))
}

/// A reader of the rows `ranges` (ascending, apart) of a Parquet file, `None` when there are
/// none. It opens only the row groups that hold some of them: the Parquet reader sets up a
/// decompressor for every column of every row group it opens (two zstd contexts, hundreds of
/// kilobytes), whether it reads a row of it or skips them all, which made a handful of series
/// out of a block of twenty row groups cost more than their rows.
pub(crate) fn rows_reader(
    file: File,
    metadata: &ArrowReaderMetadata,
    ranges: impl Iterator<Item = Range<usize>>,
) -> Result<Option<ParquetRecordBatchReader>, parquet::errors::ParquetError> {
    let groups: Vec<usize> =
        metadata.metadata().row_groups().iter().map(|g| usize::try_from(g.num_rows()).unwrap_or(0)).collect();
    // the row groups opened, and the ranges renumbered as rows of those groups alone
    let mut opened: Vec<usize> = Vec::new();
    let mut kept: Vec<Range<usize>> = Vec::new();
    let (mut group, mut group_start, mut opened_rows) = (0usize, 0usize, 0usize);
    for range in ranges.filter(|r| !r.is_empty()) {
        let mut at = range.start;
        while at < range.end {
            while group < groups.len() && group_start + groups[group] <= at {
                group_start += groups[group];
                group += 1;
            }
            let Some(&rows) = groups.get(group) else { break };
            if opened.last() != Some(&group) {
                opened.push(group);
                opened_rows += rows;
            }
            let end = range.end.min(group_start + rows);
            let base = opened_rows - rows;
            kept.push(base + (at - group_start)..base + (end - group_start));
            at = end;
        }
    }
    if kept.is_empty() {
        return Ok(None);
    }
    let selection = RowSelection::from_consecutive_ranges(kept.into_iter(), opened_rows);
    ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata.clone())
        .with_row_groups(opened)
        .with_row_selection(selection)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map(Some)
}

/// Opens a version 1 block's `samples.parquet` and reads its footer with the page index.
fn open_parquet_samples(dir: &Path) -> Result<SamplesFile, Error> {
    let path = dir.join(PARQUET_SAMPLES_FILE);
    let file = File::open(&path).map_err(io(|| format!("opening {}", path.display())))?;
    // The reader is given the schema it expects rather than the one embedded in the
    // footer: a damaged footer then fails the block instead of reaching arrow-ipc's
    // schema decoder (which panics on some malformed input) or the typed column casts.
    let options =
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional).with_schema(schema());
    let metadata =
        ArrowReaderMetadata::load(&file, options).map_err(pq("reading a block's Parquet footer"))?;
    Ok(SamplesFile::Parquet { metadata, file })
}

/// Completes and syncs an optional Parquet file's writer, if it was started.
fn finish_optional(writer: Option<ArrowWriter<File>>, what: &'static str) -> Result<(), Error> {
    if let Some(writer) = writer {
        let file = writer.into_inner().map_err(pq(what))?;
        file.sync_all().map_err(io(|| what.to_string()))?;
    }
    Ok(())
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut f = File::create(path).map_err(io(|| format!("creating {}", path.display())))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io(|| format!("writing {}", path.display())))
}

/// Syncs a directory so renames and new names in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not fsync directory");
    }
}

/// A deleted time range of one series: (series id, mint, maxt), inclusive.
pub(crate) type Tombstone = (u32, Timestamp, Timestamp);

fn encode_tombstones(stones: &[Tombstone]) -> Vec<u8> {
    use crate::codec::{put_uvarint, put_varint, seal, sealed_header};
    let mut out = sealed_header(TOMBSTONES_MAGIC, 1);
    put_uvarint(&mut out, stones.len() as u64);
    for &(id, mint, maxt) in stones {
        put_uvarint(&mut out, u64::from(id));
        put_varint(&mut out, mint);
        put_varint(&mut out, maxt);
    }
    seal(&mut out);
    out
}

fn decode_tombstones(data: &[u8]) -> Option<Vec<Tombstone>> {
    let mut c = crate::codec::open_sealed(data, TOMBSTONES_MAGIC, 1)?;
    let n = usize::try_from(c.uvarint()?).ok()?;
    if n > c.remaining() {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((u32::try_from(c.uvarint()?).ok()?, c.varint()?, c.varint()?));
    }
    c.is_empty().then_some(out)
}

/// An open, immutable block.
pub(crate) struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    index: BlockIndex,
    /// The float samples.
    samples: SamplesFile,
    size_bytes: u64,
    /// Deleted ranges, sorted by series id.
    tombstones: std::sync::RwLock<Vec<Tombstone>>,
    /// The native-histogram samples, if the block has any.
    histograms: Option<HistogramFile>,
    /// The start timestamps, if the block has any.
    starts: Option<StartFile>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block").field("dir", &self.dir).field("meta", &self.meta).finish_non_exhaustive()
    }
}

/// Bytes of the files directly in `dir`.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}

/// The error of a block's file (or directory) at `path` whose contents are not what the
/// writer makes.
fn corrupt(path: &Path, what: &str) -> Error {
    Error::Io(
        format!("reading block {}", path.display()),
        std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()),
    )
}

/// A block's float samples, in the layout of its version.
enum SamplesFile {
    /// Version 1: `samples.parquet`.
    Parquet {
        /// The footer, read once.
        metadata: ArrowReaderMetadata,
        /// Open for the block's life: a merge deletes a block's directory while queries that
        /// took the block before may still read it ([`Block::parquet_file`]).
        file: File,
    },
    /// Version 2: `samples`.
    Frames(FramesFile),
}

/// The deleted time ranges of one series in a block, each inclusive.
struct Deleted(Vec<(Timestamp, Timestamp)>);

impl Deleted {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a sample at `t` is deleted.
    fn covers(&self, t: Timestamp) -> bool {
        self.0.iter().any(|&(a, b)| t >= a && t <= b)
    }

    /// Whether every time in `mint..=maxt` is deleted.
    fn covers_all(&self, mint: Timestamp, maxt: Timestamp) -> bool {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let mut next = mint;
        for (a, b) in sorted {
            if a > next {
                return false;
            }
            if b >= maxt {
                return true;
            }
            next = next.max(b.saturating_add(1));
        }
        next > maxt
    }
}

/// A series of a block a selection matches ([`Block::listed`]).
pub(crate) struct Listed {
    /// Its id in the block.
    pub(crate) id: u32,
    /// Its labels.
    pub(crate) labels: Labels,
    /// Its float samples in the block, in whatever time range.
    pub(crate) rows: u64,
}

/// Reads a block's series one after another (ascending ids read each frame once), appending
/// each one's samples to the caller's columns: see [`Block::series_reader`].
pub(crate) struct SeriesReader<'a> {
    block: &'a Block,
    cursor: frames::FramesCursor<'a>,
    /// The block's tombstones when the reader was made.
    stones: Vec<Tombstone>,
}

impl SeriesReader<'_> {
    /// Appends to `t` and `v` the samples in `mint..=maxt` of series `id`, in time order,
    /// without deleted ones.
    pub(crate) fn read(
        &mut self,
        id: u32,
        mint: Timestamp,
        maxt: Timestamp,
        t: &mut Vec<Timestamp>,
        v: &mut Vec<f64>,
    ) -> Result<(), Error> {
        let Some(span) = self.block.index.span(id) else { return Ok(()) };
        let start = t.len();
        self.cursor.read_span(span.row_range(), mint, maxt, t, v)?;
        let gone = self.block.deleted(&self.stones, id);
        if !gone.is_empty() {
            let mut kept = start;
            for row in start..t.len() {
                if !gone.covers(t[row]) {
                    (t[kept], v[kept]) = (t[row], v[row]);
                    kept += 1;
                }
            }
            t.truncate(kept);
            v.truncate(kept);
        }
        Ok(())
    }
}

impl Block {
    /// Opens the block in `dir`: reads its meta, index and the directory of its samples file
    /// (for a version 1 block, the Parquet footer with its page index).
    pub(crate) fn open(dir: &Path) -> Result<Block, Error> {
        let meta_path = dir.join(META_FILE);
        let raw = std::fs::read(&meta_path).map_err(io(|| format!("reading {}", meta_path.display())))?;
        let meta: BlockMeta =
            serde_json::from_slice(&raw).map_err(|e| corrupt(dir, &format!("bad meta.json: {e}")))?;
        let index_path = dir.join(INDEX_FILE);
        let samples = match meta.version {
            1 => open_parquet_samples(dir)?,
            VERSION => SamplesFile::Frames(FramesFile::open(&dir.join(FRAMES_FILE))?),
            other => return Err(corrupt(dir, &format!("unknown block version {other}"))),
        };
        let index = index::open(&index_path).map_err(io(|| format!("reading {}", index_path.display())))?;
        let rows = match &samples {
            SamplesFile::Parquet { metadata, .. } => metadata.metadata().file_metadata().num_rows() as u64,
            SamplesFile::Frames(frames) => frames.rows(),
        };
        if rows != index.total_rows() {
            return Err(corrupt(dir, "index and samples file disagree on the number of rows"));
        }
        let histograms = HistogramFile::open(dir)?;
        let starts = StartFile::open(dir)?;
        let tombstones = match std::fs::read(dir.join(TOMBSTONES_FILE)) {
            Ok(raw) => decode_tombstones(&raw).unwrap_or_else(|| {
                tracing::error!(block = %dir.display(), "corrupt tombstones file ignored: deleted series show again");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Ok(Block {
            dir: dir.to_path_buf(),
            size_bytes: dir_size(dir),
            meta,
            index,
            samples,
            tombstones: std::sync::RwLock::new(tombstones),
            histograms,
            starts,
        })
    }

    /// A reader of a version 1 block's samples file, with an offset of its own, opened from
    /// the descriptor the block holds (Linux's `/proc/self/fd`), so that it reads even after a
    /// merge has deleted the block's files; by path where `/proc` is missing.
    fn parquet_file(&self, held: &File) -> Result<File, Error> {
        use std::os::unix::io::AsRawFd;
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", held.as_raw_fd()));
        File::open(&by_fd).or_else(|_| {
            let path = self.dir.join(PARQUET_SAMPLES_FILE);
            File::open(&path).map_err(io(|| format!("opening {}", path.display())))
        })
    }

    fn stones(&self) -> std::sync::RwLockReadGuard<'_, Vec<Tombstone>> {
        self.tombstones.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The deleted ranges of series `id`.
    fn deleted(&self, stones: &[Tombstone], id: u32) -> Deleted {
        let start = stones.partition_point(|s| s.0 < id);
        Deleted(stones[start..].iter().take_while(|s| s.0 == id).map(|s| (s.1, s.2)).collect())
    }

    /// Whether the block has deleted ranges.
    pub(crate) fn has_tombstones(&self) -> bool {
        !self.stones().is_empty()
    }

    /// How many deleted ranges the block has: only a deletion adds to them, so the count
    /// tells a cached answer of the block's series from the block as it is now.
    pub(crate) fn tombstone_count(&self) -> usize {
        self.stones().len()
    }

    /// Whether `mint..=maxt` covers the block's whole range, so that a selection over it
    /// finds every series the block holds that the matchers select.
    pub(crate) fn covered_by(&self, mint: Timestamp, maxt: Timestamp) -> bool {
        mint <= self.meta.min_time && maxt >= self.meta.max_time.saturating_sub(1)
    }

    /// Records deleted ranges of the series matching `matchers` in `mint..=maxt`; returns the
    /// number of series affected. The tombstones file is replaced atomically.
    pub(crate) fn delete(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<usize, Error> {
        if !self.overlaps(mint, maxt) {
            return Ok(0);
        }
        let ids = self.index.select(matchers, mint, maxt);
        if ids.is_empty() {
            return Ok(0);
        }
        let mut stones = self.tombstones.write().unwrap_or_else(|e| e.into_inner());
        let mut next = stones.clone();
        next.extend(ids.iter().map(|&id| (id, mint, maxt)));
        next.sort_unstable();
        next.dedup();
        let tmp = self.dir.join(format!("{TOMBSTONES_FILE}{TMP_SUFFIX}"));
        write_synced(&tmp, &encode_tombstones(&next))?;
        std::fs::rename(&tmp, self.dir.join(TOMBSTONES_FILE))
            .map_err(io(|| format!("replacing tombstones of {}", self.dir.display())))?;
        sync_dir(&self.dir);
        *stones = next;
        Ok(ids.len())
    }

    /// The block's meta file contents.
    pub(crate) fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// The block's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The block's series index.
    pub(crate) fn index(&self) -> &BlockIndex {
        &self.index
    }

    /// Whether the block may hold samples in `mint..=maxt`.
    pub(crate) fn overlaps(&self, mint: Timestamp, maxt: Timestamp) -> bool {
        self.meta.min_time <= maxt && self.meta.max_time > mint
    }

    /// The samples in `mint..=maxt` of series `ids` (ascending), each in time order and in
    /// the order of `ids`, without deleted ones; series without samples in range get empty
    /// columns.
    pub(crate) fn read(&self, ids: &[u32], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Samples>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = match &self.samples {
            SamplesFile::Parquet { metadata, file } => self.read_parquet(metadata, file, ids, mint, maxt)?,
            SamplesFile::Frames(frames) => {
                let spans: Vec<Range<u64>> =
                    self.index.spans(ids).into_iter().map(|s| s.map_or(0..0, |s| s.row_range())).collect();
                let frames::Decoded { t, v, ranges } = frames.read(&spans, mint, maxt)?;
                let (t, v) = (ScalarBuffer::from(t), ScalarBuffer::from(v));
                ranges
                    .into_iter()
                    .map(|r| Samples::from_buffers(t.slice(r.start, r.len()), v.slice(r.start, r.len())))
                    .collect()
            }
        };
        let stones = self.stones();
        if !stones.is_empty() {
            for (list, &id) in out.iter_mut().zip(ids) {
                let gone = self.deleted(&stones, id);
                if !gone.is_empty() {
                    *list = std::mem::take(list).filtered(|s| !gone.covers(s.t));
                }
            }
        }
        Ok(out)
    }

    /// Whether [`Block::series_reader`] reads the block: a version 2 block (a version 1
    /// block is read by [`Block::read`] only).
    pub(crate) fn reads_series_by_series(&self) -> bool {
        matches!(self.samples, SamplesFile::Frames(_))
    }

    /// A reader of the block's series one by one into the caller's columns; fails for a
    /// version 1 block (see [`Block::reads_series_by_series`]).
    pub(crate) fn series_reader(&self) -> Result<SeriesReader<'_>, Error> {
        let SamplesFile::Frames(frames) = &self.samples else {
            return Err(corrupt(&self.dir, "a version 1 block is not read series by series"));
        };
        Ok(SeriesReader { block: self, cursor: frames.cursor()?, stones: self.stones().clone() })
    }

    /// [`Block::read`] of a version 1 block, without applying tombstones.
    ///
    /// Each Parquet batch is decoded once into two Arrow buffers, its timestamp column as is
    /// and its values decoded from their encoding; a series' samples are slices of those
    /// buffers (joined only when a series spans two batches). Where less than half of a
    /// batch's rows lie in range, those rows are copied into buffers of their own.
    fn read_parquet(
        &self,
        metadata: &ArrowReaderMetadata,
        file: &File,
        ids: &[u32],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Samples>, Error> {
        let mut pieces: Vec<Vec<Samples>> = (0..ids.len()).map(|_| Vec::new()).collect();
        let ranges = ids.iter().filter_map(|&id| self.index.span(id)).map(|s| {
            let rows = s.row_range();
            rows.start as usize..rows.end as usize
        });
        let Some(reader) = rows_reader(self.parquet_file(file)?, metadata, ranges)
            .map_err(pq("reading a block's samples"))?
        else {
            return Ok(vec![Samples::default(); ids.len()]);
        };
        let mut pos = 0usize; // index into ids of the series being read
        let mut mantissa = 0i64; // running sum of the current series' decimal deltas
        let mut runs: Vec<(usize, Range<usize>)> = Vec::new(); // (pos, rows in range) per batch
        for batch in reader {
            let batch =
                batch.map_err(|e| Error::Io("reading a block's samples".into(), std::io::Error::other(e)))?;
            let sid = batch.column(0).as_primitive::<UInt32Type>().values();
            let ts = batch.column(1).as_primitive::<Int64Type>();
            let dec = batch.column(2).as_primitive::<UInt64Type>();
            let dig = batch.column(3).as_primitive::<UInt8Type>().values();
            let flt = batch.column(4).as_primitive::<Float64Type>().values();
            let (t, deltas) = (ts.values(), dec.values());
            // aligned with the batch's rows; rows out of range hold 0 and are never read
            let mut values: Vec<f64> = Vec::with_capacity(batch.num_rows());
            runs.clear();
            let mut row = 0;
            // one series' rows of the batch at a time: their timestamps ascend, so the rows
            // in range are found by bisection, and a series' decimal deltas are summed in a
            // loop of their own
            while row < batch.num_rows() {
                let id = sid[row];
                let end = row + sid[row..].iter().position(|&s| s != id).unwrap_or(sid.len() - row);
                if ids.get(pos) != Some(&id) {
                    while ids.get(pos).is_some_and(|&want| want < id) {
                        pos += 1;
                        mantissa = 0;
                    }
                    if ids.get(pos) != Some(&id) {
                        return Err(corrupt(&self.dir, "samples file rows do not match the index"));
                    }
                }
                let lo = row + t[row..end].partition_point(|&x| x < mint);
                let hi = (row + t[row..end].partition_point(|&x| x <= maxt)).max(lo);
                values.resize(lo, 0.0);
                let decimal_rows =
                    dec.nulls().map_or(end - row, |n| end - row - n.slice(row, end - row).null_count());
                if decimal_rows == end - row {
                    for &delta in &deltas[row..lo] {
                        mantissa = mantissa.wrapping_add(unzigzag(delta));
                    }
                    for (&delta, &digits) in deltas[lo..hi].iter().zip(&dig[lo..hi]) {
                        mantissa = mantissa.wrapping_add(unzigzag(delta));
                        values.push(crate::decimal::decode(mantissa, digits));
                    }
                    for &delta in &deltas[hi..end] {
                        mantissa = mantissa.wrapping_add(unzigzag(delta));
                    }
                } else if decimal_rows == 0 {
                    values.extend_from_slice(&flt[lo..hi]);
                } else {
                    for r in row..end {
                        let decimal = dec.is_valid(r);
                        if decimal {
                            mantissa = mantissa.wrapping_add(unzigzag(deltas[r]));
                        }
                        if (lo..hi).contains(&r) {
                            values.push(if decimal {
                                crate::decimal::decode(mantissa, dig[r])
                            } else {
                                flt[r]
                            });
                        }
                    }
                }
                if lo < hi {
                    runs.push((pos, lo..hi));
                }
                row = end;
            }
            values.resize(batch.num_rows(), 0.0);
            let in_range: usize = runs.iter().map(|(_, rows)| rows.len()).sum();
            let (t_col, v_col) = if in_range * 2 < batch.num_rows() {
                // most of the batch lies outside the range (an hour read from a day's block):
                // slices would keep all of its columns alive as long as any series read, so
                // the rows in range are copied out and the batch freed
                let (mut t_own, mut v_own) = (Vec::with_capacity(in_range), Vec::with_capacity(in_range));
                for (_, rows) in runs.iter_mut() {
                    let start = t_own.len();
                    t_own.extend_from_slice(&ts.values()[rows.clone()]);
                    v_own.extend_from_slice(&values[rows.clone()]);
                    *rows = start..t_own.len();
                }
                (ScalarBuffer::from(t_own), ScalarBuffer::from(v_own))
            } else {
                (ts.values().clone(), ScalarBuffer::from(values))
            };
            for (p, rows) in runs.drain(..) {
                let len = rows.end - rows.start;
                pieces[p]
                    .push(Samples::from_buffers(t_col.slice(rows.start, len), v_col.slice(rows.start, len)));
            }
        }
        Ok(pieces
            .into_iter()
            .map(|mut p| match p.len() {
                0 | 1 => p.pop().unwrap_or_default(),
                _ => Samples::merge(p),
            })
            .collect())
    }

    /// The histograms in `mint..=maxt` of series `ids` (ascending), one list per id, without
    /// deleted ones.
    pub(crate) fn read_histograms(
        &self,
        ids: &[u32],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Vec<HistogramSample>>, Error> {
        let Some(file) = &self.histograms else { return Ok(vec![Vec::new(); ids.len()]) };
        let mut out = file.read(ids, mint, maxt)?;
        let stones = self.stones();
        if !stones.is_empty() {
            for (list, &id) in out.iter_mut().zip(ids) {
                let gone = self.deleted(&stones, id);
                list.retain(|s| !gone.covers(s.t));
            }
        }
        Ok(out)
    }

    /// The start-timestamp runs in `mint..=maxt` of series `ids` (ascending), one list per
    /// id, without deleted ranges.
    pub(crate) fn read_starts(
        &self,
        ids: &[u32],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Vec<crate::StartRun>>, Error> {
        let Some(file) = &self.starts else { return Ok(vec![Vec::new(); ids.len()]) };
        let mut out = file.read(ids, mint, maxt)?;
        let stones = self.stones();
        if !stones.is_empty() {
            for (list, &id) in out.iter_mut().zip(ids) {
                let mut runs = crate::start::StartRuns::from(std::mem::take(list));
                for &(a, b) in &self.deleted(&stones, id).0 {
                    runs.delete_range(a, b);
                }
                *list = runs.into();
            }
        }
        Ok(out)
    }

    /// Matching series with start timestamps in `mint..=maxt`, sorted by labels.
    pub(crate) fn select_starts(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<crate::StartTimestamps>, Error> {
        if self.starts.is_none() || !self.overlaps(mint, maxt) {
            return Ok(Vec::new());
        }
        let ids = self.index.select(matchers, mint, maxt);
        let runs = self.read_starts(&ids, mint, maxt)?;
        Ok(self
            .with_labels(&ids, runs, |r| r.is_empty())
            .map(|(labels, runs)| crate::StartTimestamps { labels, runs })
            .collect())
    }

    /// Whether a matching series has histogram samples in this block, whose time span meets
    /// `mint..=maxt` (told by the histogram file's series, without reading a sample).
    pub(crate) fn has_histograms(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> bool {
        let Some(file) = &self.histograms else { return false };
        self.overlaps(mint, maxt)
            && self.index.select(matchers, mint, maxt).into_iter().any(|id| file.has(id))
    }

    /// Matching series with their histogram samples in `mint..=maxt`, sorted by labels.
    pub(crate) fn select_histograms(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<HistogramSeries>, Error> {
        if self.histograms.is_none() || !self.overlaps(mint, maxt) {
            return Ok(Vec::new());
        }
        let ids = self.index.select(matchers, mint, maxt);
        let hists = self.read_histograms(&ids, mint, maxt)?;
        Ok(self
            .with_labels(&ids, hists, |h| h.is_empty())
            .map(|(labels, samples)| HistogramSeries { labels, samples })
            .collect())
    }

    /// Matching series with their samples in `mint..=maxt`, sorted by labels.
    pub(crate) fn select(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Series>, Error> {
        if !self.overlaps(mint, maxt) {
            return Ok(Vec::new());
        }
        let ids = self.index.select(matchers, mint, maxt);
        let samples = self.read(&ids, mint, maxt)?;
        Ok(self
            .with_labels(&ids, samples, |s| s.is_empty())
            .map(|(labels, samples)| Series { labels, samples })
            .collect())
    }

    /// The `items` read for series `ids` (ascending, one each) that are not `empty`, each
    /// with its series' labels, in the order of `ids`.
    fn with_labels<T>(
        &self,
        ids: &[u32],
        items: Vec<T>,
        empty: impl Fn(&T) -> bool,
    ) -> impl Iterator<Item = (Labels, T)> {
        let (kept, items): (Vec<u32>, Vec<T>) =
            ids.iter().copied().zip(items).filter(|(_, item)| !empty(item)).unzip();
        self.index.labels_of(&kept).into_iter().zip(items)
    }

    /// Matching series that may have samples in `mint..=maxt` (judged by each series' time
    /// span), in label order, each with its labels and its rows in the block.
    pub(crate) fn listed(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Vec<Listed> {
        if !self.overlaps(mint, maxt) {
            return Vec::new();
        }
        let ids = self.index.select(matchers, mint, maxt);
        let spans = self.index.spans(&ids);
        let labels = self.index.labels_of(&ids);
        ids.into_iter()
            .zip(spans)
            .zip(labels)
            .map(|((id, span), labels)| Listed { id, labels, rows: span.map_or(0, |s| s.rows) })
            .collect()
    }

    /// The series of `listed` (from [`Block::listed`]) with their samples in `mint..=maxt`,
    /// without those that have none there.
    pub(crate) fn read_listed(
        &self,
        listed: &[Listed],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Series>, Error> {
        let ids: Vec<u32> = listed.iter().map(|l| l.id).collect();
        let samples = self.read(&ids, mint, maxt)?;
        Ok(listed
            .iter()
            .zip(samples)
            .filter(|(_, s)| !s.is_empty())
            .map(|(l, samples)| Series { labels: l.labels.clone(), samples })
            .collect())
    }

    /// The union of `sorted` (sorted, unique) and the labels of the matching series with
    /// samples in `mint..=maxt` ([`ids_with_samples`](Self::ids_with_samples)), sorted and
    /// unique, building only the label sets `sorted` does not hold.
    pub(crate) fn merge_series_labels(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        sorted: Vec<Labels>,
    ) -> Vec<Labels> {
        let ids = self.ids_with_samples(matchers, mint, maxt);
        if ids.is_empty() {
            return sorted;
        }
        self.index.merge_labels_of(&ids, sorted)
    }

    /// The values of label `name` among the series [`ids_with_samples`](Self::ids_with_samples)
    /// lists, sorted and unique, read without building their label sets.
    pub(crate) fn series_label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Vec<&str> {
        self.index.values_of(&self.ids_with_samples(matchers, mint, maxt), name)
    }

    /// The label names of the series [`ids_with_samples`](Self::ids_with_samples) lists,
    /// sorted and unique, read without building their label sets.
    pub(crate) fn series_label_names(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Vec<&str> {
        self.index.names_of(&self.ids_with_samples(matchers, mint, maxt))
    }

    /// Ids (ascending) of the matching series with samples in `mint..=maxt` left by the
    /// tombstones, judged by each series' time span.
    fn ids_with_samples(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Vec<u32> {
        if !self.overlaps(mint, maxt) {
            return Vec::new();
        }
        let stones = self.stones();
        self.index
            .select(matchers, mint, maxt)
            .into_iter()
            .filter(|&id| {
                stones.is_empty()
                    || self.index.span(id).is_some_and(|s| {
                        !self.deleted(&stones, id).covers_all(mint.max(s.min_t), maxt.min(s.max_t))
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, RecordBatch};
    use parquet::file::properties::WriterProperties;

    fn ls(job: &str) -> Arc<Labels> {
        Arc::new(Labels::from_pairs([("__name__", "up"), ("job", job)]))
    }

    #[test]
    fn written_blocks_read_back_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = BlockWriter::create(dir.path(), 1, Vec::new()).unwrap();
        let a: Vec<Sample> = (0..1000).map(|i| Sample { t: i * 15_000, v: i as f64 * 0.01 }).collect();
        let b: Vec<Sample> = (0..500)
            .map(|i| Sample {
                t: i * 15_000 + 7,
                v: if i == 250 { crate::stale_nan() } else { (i as f64).sqrt() },
            })
            .collect();
        w.add(ls("a"), a.iter().copied(), &[], &[]).unwrap();
        w.add(ls("b"), b.iter().copied(), &[], &[]).unwrap();
        assert!(w.add(ls("a"), a.iter().copied(), &[], &[]).is_err(), "series must come in label order");
        let meta = w.finish(None).unwrap().unwrap();
        assert_eq!((meta.min_time, meta.max_time), (0, 999 * 15_000 + 1));
        assert_eq!(meta.stats, BlockStats { num_samples: 1500, num_series: 2, num_histogram_samples: 0 });
        let block = Block::open(&dir.path().join(&meta.ulid)).unwrap();
        let all = block.select(&[], i64::MIN, i64::MAX).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].samples.iter().collect::<Vec<_>>(), a);
        let bits = |s: &mut dyn Iterator<Item = Sample>| s.map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&mut all[1].samples.iter()), bits(&mut b.iter().copied()));
        let m = Matcher::new(crate::MatchOp::Equal, "job", "b").unwrap();
        let some = block.select(&[m], 15_000, 30_007).unwrap();
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].samples.len(), 2);
        // a range out of a series whose values are partly decimals (perfect squares' roots)
        // and partly floats: the decimals' running sum carries over the rows before it
        let (lo, hi) = (100 * 15_000 + 7, 300 * 15_000 + 7);
        let cut = block.read(&[0, 1], lo, hi).unwrap();
        assert_eq!(bits(&mut cut[1].iter()), bits(&mut b.iter().copied().filter(|s| s.t >= lo && s.t <= hi)));
        assert_eq!(
            cut[0].iter().collect::<Vec<_>>(),
            a.iter().copied().filter(|s| s.t >= lo && s.t <= hi).collect::<Vec<_>>()
        );
        assert!(!dir.path().join(format!("{}{TMP_SUFFIX}", meta.ulid)).exists());
    }

    /// A version 1 block (`samples.parquet`) as the writer of that version made it, with the
    /// series [`v1_fixture_series`] lists.
    fn v1_fixture() -> Block {
        Block::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/block-v1")).unwrap()
    }

    /// The series of the version 1 fixture, by job: "b" spans two Parquet batches, "c" mixes
    /// decimal values, roots and a staleness marker.
    fn v1_fixture_series() -> Vec<Vec<Sample>> {
        let gen = |n: i64, step: i64, off: i64| -> Vec<Sample> {
            (0..n).map(|i| Sample { t: i * step + off, v: (i + off) as f64 * 0.25 }).collect()
        };
        let a = (0..1000).map(|i| Sample { t: i * 15_000, v: i as f64 * 0.01 }).collect();
        let c = (0..500)
            .map(|i| Sample {
                t: i * 15_000 + 7,
                v: if i == 250 { crate::stale_nan() } else { (i as f64).sqrt() },
            })
            .collect();
        vec![a, gen(BATCH_ROWS as i64 + 500, 1000, 1), c, gen(300, 1000, 2)]
    }

    #[test]
    fn a_version_1_block_reads_back_bit_for_bit_sharing_decoded_batches() {
        let block = v1_fixture();
        assert_eq!(block.meta().version, 1);
        let want = v1_fixture_series();
        let bits = |s: &mut dyn Iterator<Item = Sample>| s.map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>();
        let all = block.read(&[0, 1, 2, 3], i64::MIN, i64::MAX).unwrap();
        for (read, want) in all.iter().zip(&want) {
            assert_eq!(bits(&mut read.iter()), bits(&mut want.iter().copied()));
        }
        // "a" and "d" sit in different batches but each is one slice of its batch's columns
        let in_batch = |s: &Samples| s.view().t.as_ptr();
        assert!(in_batch(&all[0]) != in_batch(&all[3]));
        // a time range cuts every series to a contiguous slice
        let (lo, hi) = (200_000, 400_002);
        let cut = block.read(&[0, 1, 2, 3], lo, hi).unwrap();
        for (read, want) in cut.iter().zip(&want) {
            let want = want.iter().copied().filter(|x| x.t >= lo && x.t <= hi);
            assert_eq!(bits(&mut read.iter()), bits(&mut want.into_iter()));
        }
        // an hour out of "b": its rows are copied out, the batch's columns not kept
        let (lo, hi) = (1_000_000, 1_000_000 + 3_600_000 - 1);
        let hour = block.read(&[1], lo, hi).unwrap();
        let in_hour: Vec<Sample> = want[1].iter().copied().filter(|x| x.t >= lo && x.t <= hi).collect();
        assert_eq!(hour[0].iter().collect::<Vec<_>>(), in_hour);
        assert_eq!(hour[0].held_bytes(), in_hour.len() * 16);
        // only some ids, and an id without samples in range
        let some = block.read(&[1, 3], 60_000_000, i64::MAX).unwrap();
        assert_eq!(some.len(), 2);
        assert!(some[1].is_empty());
        assert_eq!(some[0].len(), BATCH_ROWS + 500 - 60_000);
    }

    #[test]
    fn a_merge_of_a_version_1_block_writes_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let old = v1_fixture();
        let mut w = BlockWriter::create(dir.path(), 2, Vec::new()).unwrap();
        let series = old.select(&[], i64::MIN, i64::MAX).unwrap();
        for s in &series {
            w.add(Arc::new(s.labels.clone()), s.samples.iter(), &[], &[]).unwrap();
        }
        let meta = w.finish(None).unwrap().unwrap();
        assert_eq!((meta.version, meta.format.as_str()), (2, FORMAT));
        let new = Block::open(&dir.path().join(&meta.ulid)).unwrap();
        assert!(dir.path().join(&meta.ulid).join(FRAMES_FILE).is_file());
        let again = new.select(&[], i64::MIN, i64::MAX).unwrap();
        assert_eq!(again.len(), 4);
        for (a, b) in again.iter().zip(&series) {
            assert_eq!(a.labels, b.labels);
            let bits = |s: &Samples| s.iter().map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>();
            assert_eq!(bits(&a.samples), bits(&b.samples));
        }
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of ranges, some of one
    fn a_rows_reader_reads_exactly_its_ranges_out_of_the_row_groups_that_hold_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("row", DataType::Int64, false)]));
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(10)).build();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), schema.clone(), Some(props)).unwrap();
        let rows: Vec<i64> = (0..95).collect();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(rows))]).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let metadata = ArrowReaderMetadata::load(&File::open(&path).unwrap(), Default::default()).unwrap();
        assert_eq!(metadata.metadata().num_row_groups(), 10);
        let read = |ranges: Vec<Range<usize>>| -> Option<Vec<i64>> {
            let reader = rows_reader(File::open(&path).unwrap(), &metadata, ranges.into_iter()).unwrap()?;
            let batches = reader.map(|b| b.unwrap());
            Some(batches.flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect())
        };
        let want = |ranges: &[Range<i64>]| Some(ranges.iter().flat_map(|r| r.clone()).collect::<Vec<_>>());
        // within one group, across groups, skipping groups, the last (short) group, touching
        assert_eq!(read(vec![3..7]), want(&[3..7]));
        assert_eq!(read(vec![8..23, 24..25]), want(&[8..23, 24..25]));
        assert_eq!(read(vec![0..1, 41..42, 90..95]), want(&[0..1, 41..42, 90..95]));
        assert_eq!(read(vec![10..20, 20..30, 55..56]), want(&[10..30, 55..56]));
        assert_eq!(read(vec![0..95]), want(&[0..95]));
        assert_eq!(read(vec![]), None);
        assert_eq!(read(vec![5..5]), None);
    }

    #[test]
    fn ulids_are_sortable_and_distinct() {
        let a = new_ulid();
        let b = new_ulid();
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| CROCKFORD.contains(&(c as u8))));
    }
}
