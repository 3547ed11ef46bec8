//! Following the WAL as it is written: the remote-write sender reads committed samples from
//! here, so that a receiver's outage costs nothing but delay.
//!
//! A [`WalTail`] keeps a position (segment, byte offset) and the labels of every series
//! defined before it. It reads whole records only: a record the writer has not finished (its
//! length or checksum do not hold yet) at the end of the newest segment is read again at the
//! next call. A segment that ends in a bad record while a later segment exists is corrupt;
//! the reader counts it and moves on. While a tail lives, the database keeps the segments
//! from its position on when it checkpoints ([`Db::tail_wal`](crate::Db::tail_wal)), up to
//! [`HOLD_MAX_MS`] of samples behind the head's truncation.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::exemplars::Exemplar;
use crate::wal::{self, Decoded, Record, HEADER_LEN};
use crate::{Error, FloatHistogram, Labels};

/// How far behind the head's truncation a tail may hold WAL segments: segments whose samples
/// are all older than that are deleted even if a tail has not read them.
pub const HOLD_MAX_MS: i64 = 24 * 3600 * 1000;

/// A place in the WAL: the segment's sequence number and a byte offset in it that starts a
/// record (or is its end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct WalPosition {
    /// Segment sequence number.
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}

impl std::fmt::Display for WalPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

impl std::str::FromStr for WalPosition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (seg, off) = s.trim().split_once(':').ok_or_else(|| format!("not a WAL position: {s:?}"))?;
        let num = |x: &str| x.parse::<u64>().map_err(|e| format!("not a WAL position: {s:?}: {e}"));
        Ok(WalPosition { segment: num(seg)?, offset: num(off)? })
    }
}

/// Where a sample is in the WAL: the position of its record and its index in the record.
/// Ordered as the WAL is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct SampleAt {
    /// The record's position.
    pub record: WalPosition,
    /// The sample's index in the record.
    pub index: u32,
}

impl std::fmt::Display for SampleAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.record, self.index)
    }
}

impl std::str::FromStr for SampleAt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (record, index) =
            s.trim().rsplit_once(':').ok_or_else(|| format!("not a WAL sample position: {s:?}"))?;
        let index = index.parse().map_err(|e| format!("not a WAL sample position: {s:?}: {e}"))?;
        Ok(SampleAt { record: record.parse()?, index })
    }
}

/// A committed sample read from the WAL: series ref, timestamp, value, and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct TailSample {
    /// The series' ref; [`WalTail::labels`] names it.
    pub series: u64,
    /// Milliseconds since the epoch.
    pub t: i64,
    /// What was written.
    pub value: TailValue,
    /// Its place in the WAL.
    pub at: SampleAt,
}

/// What a [`TailSample`] holds.
#[derive(Clone, Debug, PartialEq)]
pub enum TailValue {
    /// A float sample (staleness markers included).
    Float(f64),
    /// A native-histogram sample.
    Histogram(Arc<FloatHistogram>),
    /// An exemplar of the series (its own time is the sample's `t`).
    Exemplar(Arc<Exemplar>),
}

/// What a [`WalTail`] has met so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct TailStats {
    /// Records read, by kind: series, samples, tombstones.
    pub records: [u64; 3],
    /// Records that could not be decoded, and corrupt segment tails stepped over.
    pub corruptions: u64,
    /// Segments deleted before the tail read them.
    pub segments_missed: u64,
}

/// Reads the WAL from a position on, as it grows.
#[derive(Debug)]
pub struct WalTail {
    dir: PathBuf,
    pos: WalPosition,
    file: Option<File>,
    series: HashMap<u64, Labels>,
    /// The segment the tail reads, shared with the database's checkpoints.
    hold: Arc<AtomicU64>,
    stats: TailStats,
}

/// What one record read from a segment at an offset gave.
enum Step {
    /// A record, and the offset after it.
    Record(Decoded, u64),
    /// The segment has no more whole records (yet).
    End,
    /// The bytes at the offset are not a sound record.
    Bad,
}

impl WalTail {
    /// Opens a tail of the WAL in `dir` at `from`, or at the end of what is written when
    /// `from` is `None` (or before the oldest segment left, which then counts as missed). The
    /// labels of the series defined before the position are read first (from the newest
    /// checkpoint and the segments before it).
    pub(crate) fn open(
        dir: &Path,
        from: Option<WalPosition>,
        hold: Arc<AtomicU64>,
    ) -> Result<WalTail, Error> {
        let mut tail = WalTail {
            dir: dir.to_path_buf(),
            pos: WalPosition::default(),
            file: None,
            series: HashMap::new(),
            hold,
            stats: TailStats::default(),
        };
        if let Some((_, path)) = wal::list_checkpoints(dir)?.pop() {
            tail.read_series_of(&path, u64::MAX)?;
        }
        let segments = wal::list_segments(dir)?;
        let first = segments.first().map_or(0, |(seq, _)| *seq);
        let last = segments.last().map_or(0, |(seq, _)| *seq);
        let start = match from {
            Some(p) if p.segment >= first => p,
            Some(p) => {
                tail.stats.segments_missed += first.saturating_sub(p.segment);
                WalPosition { segment: first, offset: 0 }
            }
            None => WalPosition { segment: last, offset: u64::MAX },
        };
        for (seq, path) in &segments {
            if *seq > start.segment {
                break;
            }
            let upto = if *seq == start.segment { start.offset } else { u64::MAX };
            let end = tail.read_series_of(path, upto)?;
            if *seq == start.segment {
                tail.pos = WalPosition { segment: *seq, offset: end };
            }
        }
        if tail.pos.segment != start.segment {
            tail.pos = WalPosition { segment: start.segment, offset: 0 };
        }
        tail.hold.store(tail.pos.segment, Ordering::Release);
        Ok(tail)
    }

    /// Reads the series records of the segment or checkpoint at `path` that end at or before
    /// `upto`; returns the offset where reading stopped.
    fn read_series_of(&mut self, path: &Path, upto: u64) -> Result<u64, Error> {
        let file =
            File::open(path).map_err(|e| Error::Io(format!("opening WAL file {}", path.display()), e))?;
        let mut offset = 0;
        while offset < upto {
            match read_record(&file, path, offset, upto)? {
                Step::Record(Decoded::Record(Record::Series(list)), next) => {
                    self.stats.records[0] += 1;
                    self.series.extend(list);
                    offset = next;
                }
                Step::Record(_, next) => offset = next,
                Step::End | Step::Bad => break,
            }
        }
        Ok(offset)
    }

    /// The position after the last record read.
    pub fn position(&self) -> WalPosition {
        self.pos
    }

    /// The labels of the series `r`, if its series record has been read.
    pub fn labels(&self, r: u64) -> Option<&Labels> {
        self.series.get(&r)
    }

    /// How many series the tail knows (those of the newest checkpoint it read, and later).
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// What the tail has met so far.
    pub fn stats(&self) -> TailStats {
        self.stats
    }

    /// Reads the samples committed after the position, up to about `max` of them (whole
    /// records), moving on through the segments; returns none when nothing new is written.
    pub fn read(&mut self, max: usize) -> Result<Vec<TailSample>, Error> {
        let mut out = Vec::new();
        while out.len() < max {
            if self.file.is_none() {
                let path = self.dir.join(wal::segment_name(self.pos.segment));
                match File::open(&path) {
                    Ok(f) => self.file = Some(f),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if !self.skip_to_next_segment(true)? {
                            break;
                        }
                        continue;
                    }
                    Err(e) => return Err(Error::Io(format!("opening WAL segment {}", path.display()), e)),
                }
            }
            let Some(file) = self.file.as_ref() else { break };
            let path = self.dir.join(wal::segment_name(self.pos.segment));
            match read_record(file, &path, self.pos.offset, u64::MAX)? {
                Step::Record(decoded, next) => {
                    let record = self.pos;
                    self.pos.offset = next;
                    match decoded {
                        Decoded::Record(Record::Series(list)) => {
                            self.stats.records[0] += 1;
                            self.series.extend(list);
                        }
                        Decoded::Record(Record::Samples(list)) => {
                            self.stats.records[1] += 1;
                            out.extend(list.into_iter().enumerate().map(|(i, s)| TailSample {
                                series: s.r,
                                t: s.t,
                                value: TailValue::Float(s.v),
                                at: SampleAt { record, index: i as u32 },
                            }));
                        }
                        Decoded::Record(Record::Histograms(list)) => {
                            self.stats.records[1] += 1;
                            out.extend(list.into_iter().enumerate().map(|(i, (r, t, h))| TailSample {
                                series: r,
                                t,
                                value: TailValue::Histogram(Arc::new(h)),
                                at: SampleAt { record, index: i as u32 },
                            }));
                        }
                        Decoded::Record(Record::Exemplars(list)) => {
                            out.extend(list.into_iter().enumerate().map(|(i, (r, e))| TailSample {
                                series: r,
                                t: e.t,
                                value: TailValue::Exemplar(Arc::new(e)),
                                at: SampleAt { record, index: i as u32 },
                            }));
                        }
                        Decoded::Record(Record::Tombstones(_)) => self.stats.records[2] += 1,
                        // remote write 1.0 carries no start timestamps
                        Decoded::Record(Record::StartTimestamps(_)) => {}
                        // the samples a caller just read may still need the removed series'
                        // labels: they are kept
                        Decoded::Record(Record::SeriesRemoved(_)) => {}
                        Decoded::Unknown => {}
                        Decoded::Bad => self.stats.corruptions += 1,
                    }
                }
                Step::End | Step::Bad => {
                    // the writer finishes a segment before it starts the next: once a later one
                    // exists, whatever this one still holds is all it will hold
                    if !self.later_segment_exists()? {
                        break;
                    }
                    match read_record(file, &path, self.pos.offset, u64::MAX)? {
                        Step::Record(..) => continue,
                        Step::End => {}
                        Step::Bad => {
                            self.stats.corruptions += 1;
                            tracing::warn!(segment = %path.display(), offset = self.pos.offset, "WAL tail: corrupt record before a later segment; moving on");
                        }
                    }
                    if !self.skip_to_next_segment(false)? {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    fn later_segment_exists(&self) -> Result<bool, Error> {
        Ok(wal::list_segments(&self.dir)?.iter().any(|(seq, _)| *seq > self.pos.segment))
    }

    /// Moves to the first segment after the current one; `missing` when the current one was
    /// deleted before it was read. When the next segment has a checkpoint, the series map is
    /// replaced by it (every series still in the head), dropping the series that are gone.
    fn skip_to_next_segment(&mut self, missing: bool) -> Result<bool, Error> {
        let Some((next, _)) =
            wal::list_segments(&self.dir)?.into_iter().find(|(seq, _)| *seq > self.pos.segment)
        else {
            return Ok(false);
        };
        if missing {
            self.stats.segments_missed += next - self.pos.segment;
            tracing::warn!(
                from = self.pos.segment,
                to = next,
                "WAL tail: segments were deleted before they were read"
            );
        }
        let checkpoint = self.dir.join(format!("{}{}", wal::CHECKPOINT_PREFIX, wal::segment_name(next)));
        if checkpoint.is_file() {
            let before = std::mem::take(&mut self.series);
            if self.read_series_of(&checkpoint, u64::MAX).is_err() {
                self.series = before;
            }
        }
        self.pos = WalPosition { segment: next, offset: 0 };
        self.file = None;
        self.hold.store(next, Ordering::Release);
        Ok(true)
    }
}

/// Reads the record at `offset` of `file` if it is whole and ends at or before `upto`.
fn read_record(file: &File, path: &Path, offset: u64, upto: u64) -> Result<Step, Error> {
    let ctx = || format!("reading WAL file {}", path.display());
    let file_len = file.metadata().map_err(|e| Error::Io(ctx(), e))?.len().min(upto);
    if file_len < offset + HEADER_LEN as u64 {
        return Ok(Step::End);
    }
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, offset).map_err(|e| Error::Io(ctx(), e))?;
    let (len, crc, typ) = wal::parse_header(&header);
    let next = offset + HEADER_LEN as u64 + len;
    if next > file_len {
        return Ok(if typ == 0 { Step::Bad } else { Step::End });
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset + HEADER_LEN as u64).map_err(|e| Error::Io(ctx(), e))?;
    if !wal::checksum_ok(crc, typ, &payload) {
        return Ok(Step::Bad);
    }
    Ok(Step::Record(wal::decode_record(typ, &payload, path, offset), next))
}
