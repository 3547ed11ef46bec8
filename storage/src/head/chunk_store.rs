//! Where the head's full chunks live: appended to segment files in the data directory and
//! read back through a memory map, so that two hours of chunks do not sit on the heap.
//!
//! Each chunk is written with a header naming its series, the chunk of its series written
//! before it and the time range it covers, so a series keeps one [`SealedChain`] of 24 bytes
//! however many full chunks it has: where its newest chunk is, its oldest sample time, and
//! counts. Reads walk the chain from the newest chunk back, as far as the time range asked
//! for reaches.
//!
//! The files outlive the process: a store opened on a directory maps the segments an earlier
//! process left there, checks each chunk's checksum, and remembers each series' newest chunk,
//! so that the WAL's replay can take a series' chain back ([`SealedChain::recover`]) and skip
//! the samples it holds instead of encoding them again. A segment's valid part ends at its
//! first chunk that is cut short or fails its checksum (the end of what a killed process had
//! written). When a deletion writes a series' chunks anew, a chunk of length zero marks that
//! the chunks before it are no longer the series'. Chunk bytes go to the file in writes of
//! about a megabyte; until then they are read from the write buffer, and a `kill -9` loses
//! them: the replay writes those chunks again from the WAL. Without a directory (unit
//! tests), or once writing a segment's file has failed (a full disk), a segment keeps its
//! bytes in memory: the head goes on at the heap's cost and the error is logged.
//!
//! A segment file is deleted when every chunk in it is older than what the head keeps: the
//! store remembers each segment's newest sample time, and a head truncation to `mint`
//! removes every chunk whose newest sample is older than `mint`. A chain never reaches a
//! deleted chunk: its count stops the walk at the oldest chunk the head keeps, whose segment
//! holds a sample at least as new as `mint`. A chain taken back after a restart may point at
//! a deleted segment: the chunks there were older than the newest block when it went, so the
//! recovered chain ends before them.

use std::collections::BTreeMap;
use std::fs::File;
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;

use memmap2::{Mmap, MmapOptions};

use super::U64Map;
use crate::chunk::{ChunkIter, OpenChunk};
use crate::{Sample, Timestamp};

/// Bits of a [`ChunkRef`] holding the offset in the segment: segments of 128 MiB.
const OFFSET_BITS: u32 = 27;
/// Bits of a [`ChunkRef`] holding the chunk's sample count (at most 120).
const COUNT_BITS: u32 = 8;
/// Bits of a [`ChunkRef`] holding the segment number; the bit above them is always set, so
/// that a ref is never zero and `Option<ChunkRef>` takes no more room than a ref.
const SEGMENT_BITS: u32 = 64 - 1 - OFFSET_BITS - COUNT_BITS;
/// The size of a segment file.
const SEGMENT_BYTES: usize = 1 << OFFSET_BITS;
/// Chunk bytes gathered before one write to the segment's file.
const WRITE_BYTES: usize = 1 << 20;
/// The first bytes of a segment file: the format's name and version. A file without them
/// (another format, or one cut before them) is deleted when the store opens.
const SEGMENT_MAGIC: [u8; 8] = *b"PFHCHK\x00\x01";
/// Bytes before each chunk in a segment, little endian: the chunk's length (4), the ref of
/// the series' chunk before it (8, zero for none), its oldest and newest timestamps (8 + 8),
/// its series' ref (8), its sample count (4), and the CRC-32C (4) of those fields and the
/// chunk's bytes.
const HEADER_BYTES: usize = 44;

/// Where a full chunk is: its segment, its offset there and its sample count, in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkRef(NonZeroU64);

impl ChunkRef {
    fn new(segment: u32, offset: usize, samples: usize) -> Self {
        debug_assert!(offset < SEGMENT_BYTES && samples < 1 << COUNT_BITS);
        let segment = u64::from(segment) & ((1 << SEGMENT_BITS) - 1);
        let word = (1 << 63)
            | (segment << (OFFSET_BITS + COUNT_BITS))
            | ((samples as u64) << OFFSET_BITS)
            | offset as u64;
        ChunkRef(NonZeroU64::new(word).expect("the top bit is set"))
    }

    /// The ref a header holds, `None` for zero.
    fn from_word(word: u64) -> Option<Self> {
        NonZeroU64::new(word).map(ChunkRef)
    }

    fn segment(self) -> u32 {
        ((self.0.get() >> (OFFSET_BITS + COUNT_BITS)) & ((1 << SEGMENT_BITS) - 1)) as u32
    }

    fn offset(self) -> usize {
        (self.0.get() & ((1 << OFFSET_BITS) - 1)) as usize
    }

    /// The chunk's sample count, known without reading it.
    fn samples(self) -> usize {
        ((self.0.get() >> OFFSET_BITS) & ((1 << COUNT_BITS) - 1)) as usize
    }
}

/// The fields of the header before each chunk in a segment ([`HEADER_BYTES`]), the one
/// place that knows their layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ChunkHeader {
    /// Bytes of the chunk after the header.
    len: u32,
    /// The series' chunk before this one.
    prev: Option<ChunkRef>,
    /// Oldest timestamp.
    min_t: Timestamp,
    /// Newest timestamp.
    max_t: Timestamp,
    /// The series' ref.
    series: u64,
    /// Samples in the chunk.
    samples: u32,
}

impl ChunkHeader {
    /// Where the checksum is in a header; it covers the bytes before it and the chunk's.
    const CRC_AT: usize = HEADER_BYTES - 4;

    /// The header of `bytes`, checksum included.
    fn encode(&self, bytes: &[u8]) -> [u8; HEADER_BYTES] {
        let mut header = [0u8; HEADER_BYTES];
        header[..4].copy_from_slice(&self.len.to_le_bytes());
        header[4..12].copy_from_slice(&self.prev.map_or(0, |p| p.0.get()).to_le_bytes());
        header[12..20].copy_from_slice(&self.min_t.to_le_bytes());
        header[20..28].copy_from_slice(&self.max_t.to_le_bytes());
        header[28..36].copy_from_slice(&self.series.to_le_bytes());
        header[36..40].copy_from_slice(&self.samples.to_le_bytes());
        let crc = Self::checksum(&header, bytes);
        header[Self::CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        header
    }

    /// The fields `header` holds; [`ChunkHeader::checksum_holds`] says whether to trust them.
    fn decode(header: &[u8; HEADER_BYTES]) -> Self {
        let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("eight bytes"));
        let half = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("four bytes"));
        ChunkHeader {
            len: half(0),
            prev: ChunkRef::from_word(word(4)),
            min_t: word(12) as Timestamp,
            max_t: word(20) as Timestamp,
            series: word(28),
            samples: half(36),
        }
    }

    /// Whether `header`'s checksum is that of its fields and the chunk's `bytes`.
    fn checksum_holds(header: &[u8; HEADER_BYTES], bytes: &[u8]) -> bool {
        header[Self::CRC_AT..] == Self::checksum(header, bytes).to_le_bytes()
    }

    /// The CRC-32C of the header's fields and the chunk's bytes.
    fn checksum(header: &[u8; HEADER_BYTES], bytes: &[u8]) -> u32 {
        crc32c::crc32c_append(crc32c::crc32c(&header[..Self::CRC_AT]), bytes)
    }
}

/// A full chunk read from the store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoredChunk<'a> {
    /// The series' chunk before this one.
    prev: Option<ChunkRef>,
    /// The series' ref.
    series: u64,
    /// Oldest timestamp.
    pub(crate) min_t: Timestamp,
    /// Newest timestamp.
    pub(crate) max_t: Timestamp,
    /// Samples in the chunk.
    pub(crate) samples: usize,
    /// The chunk's encoded bytes.
    pub(crate) bytes: &'a [u8],
}

impl<'a> StoredChunk<'a> {
    /// The chunk's samples.
    pub(crate) fn iter(&self) -> ChunkIter<'a> {
        ChunkIter::new(self.bytes)
    }
}

/// A head series' full chunks: the newest one's place in the store (each names the one
/// before it), the oldest sample the head keeps of them, and how many there are.
///
/// A truncation leaves the oldest chunk it keeps as it is, with samples older than the
/// truncation time in it: `min_t` is the first sample it keeps, and reads skip those before.
#[derive(Debug, Default)]
pub(crate) struct SealedChain {
    newest: Option<ChunkRef>,
    min_t: Timestamp,
    samples: u32,
    chunks: u32,
}

impl SealedChain {
    /// Full chunks in the chain.
    pub(crate) fn chunks(&self) -> u32 {
        self.chunks
    }

    /// Samples the head keeps of the chain.
    pub(crate) fn samples(&self) -> usize {
        self.samples as usize
    }

    /// The oldest sample the head keeps of the chain, if it has one.
    pub(crate) fn min_t(&self) -> Option<Timestamp> {
        (self.chunks > 0).then_some(self.min_t)
    }

    /// Stores `chunk`, full, as the newest of series `series`' chain.
    pub(crate) fn push(&mut self, store: &mut ChunkStore, chunk: &OpenChunk, series: u64) {
        if self.chunks == 0 {
            self.min_t = chunk.min_t();
        }
        let at = store.write(chunk.bytes(), chunk.len(), (chunk.min_t(), chunk.max_t()), self.newest, series);
        self.newest = Some(at);
        self.chunks += 1;
        self.samples += chunk.len() as u32;
    }

    /// The chain an earlier process left in the store's files for series `series`, from
    /// `floor` on (what is older is in blocks), with the newest time it holds; `None` if it
    /// left none, if a deletion wrote the series' chunks anew after its last full one, or
    /// if a chunk of the chain is missing from a segment that is there or names another
    /// series (a damaged file: the WAL's replay then writes the series' chunks again).
    /// A chain reaching a deleted segment ends there: the chunks in it were older than the
    /// newest block when it went.
    pub(crate) fn recover(store: &ChunkStore, series: u64, floor: Timestamp) -> Option<(Self, Timestamp)> {
        let tip = *store.recovered.get(&series)?;
        let mut newest_t = None;
        let mut chain = SealedChain { newest: Some(tip), min_t: Timestamp::MIN, samples: 0, chunks: 0 };
        let mut next = Some(tip);
        while let Some(at) = next {
            let Some(c) = store.read(at) else {
                if store.segments.contains_key(&at.segment()) {
                    return None;
                }
                break;
            };
            if c.series != series || c.bytes.is_empty() {
                return None;
            }
            newest_t.get_or_insert(c.max_t);
            if c.max_t < floor {
                break;
            }
            chain.chunks += 1;
            chain.samples += c.samples as u32;
            chain.min_t = c.min_t;
            // a series' chunks are written in order: a link forward is damage (and a cycle)
            next = c.prev;
            if next.is_some_and(|p| (p.segment(), p.offset()) >= (at.segment(), at.offset())) {
                return None;
            }
        }
        chain.truncate(store, floor);
        Some((chain, newest_t?)).filter(|(chain, _)| chain.chunks > 0)
    }

    /// The chain's newest sample, if it has one.
    pub(crate) fn newest_sample(&self, store: &ChunkStore) -> Option<Sample> {
        let c = store.read(self.newest.filter(|_| self.chunks > 0)?)?;
        c.iter().last()
    }

    /// The chain's chunks, newest first, that hold a sample at `mint` or later: with each,
    /// the oldest sample time the head keeps of it. A chunk whose segment is gone (which a
    /// chain's count rules out) ends the walk.
    pub(crate) fn newest_first<'a>(
        &self,
        store: &'a ChunkStore,
        mint: Timestamp,
    ) -> impl Iterator<Item = (Timestamp, StoredChunk<'a>)> + 'a {
        let mut next = self.newest;
        let (floor, mut left) = (self.min_t, self.chunks);
        std::iter::from_fn(move || {
            let c = store.read(next.filter(|_| left > 0)?)?;
            if c.max_t < mint {
                return None;
            }
            left -= 1;
            next = c.prev;
            Some((if left == 0 { c.min_t.max(floor) } else { c.min_t }, c))
        })
    }

    /// Drops the samples older than `mint`; returns (samples, chunks) dropped. The oldest
    /// chunk kept is decoded to find its first sample at `mint` or later.
    pub(crate) fn truncate(&mut self, store: &ChunkStore, mint: Timestamp) -> (u64, u64) {
        if self.chunks == 0 || self.min_t >= mint {
            return (0, 0);
        }
        let (mut chunks, mut samples, mut oldest) = (0u32, 0u32, None);
        for (_, c) in self.newest_first(store, mint) {
            chunks += 1;
            samples += c.samples as u32;
            oldest = Some(c);
        }
        // the oldest chunk kept starts at `mint` or later, or is cut through
        let mut min_t = oldest.map_or(mint, |c| c.min_t);
        if let Some(c) = oldest.filter(|c| c.min_t < mint) {
            let mut kept = c.iter().filter(|s| s.t >= mint).peekable();
            min_t = kept.peek().map_or(mint, |s| s.t);
            samples = samples - c.samples as u32 + kept.count() as u32;
        }
        let dropped = (u64::from(self.samples - samples), u64::from(self.chunks - chunks));
        *self = if chunks == 0 {
            SealedChain::default()
        } else {
            SealedChain { newest: self.newest, min_t, samples, chunks }
        };
        dropped
    }

    /// Cross-checks the counts against the chunks in the store (tests).
    #[cfg(test)]
    pub(crate) fn recount(&self, store: &ChunkStore) -> (u64, u64) {
        let mut samples = 0;
        let mut chunks = 0;
        for (from, c) in self.newest_first(store, Timestamp::MIN) {
            samples += c.iter().filter(|s| s.t >= from).count() as u64;
            chunks += 1;
        }
        (samples, chunks)
    }
}

/// One segment: a file of chunks, or a buffer of them in memory.
#[derive(Debug)]
struct Segment {
    /// The file, while the segment takes writes and they succeed.
    file: Option<File>,
    /// The file mapped ([`SEGMENT_BYTES`] of it while it takes writes, its length once an
    /// earlier process left it), of which the first `flushed` bytes are chunks; `None` for
    /// a segment kept in memory.
    map: Option<Mmap>,
    /// Bytes `flushed..` of the segment, not written to the file (yet).
    pending: Vec<u8>,
    /// Bytes written to the file.
    flushed: usize,
    /// The newest sample time of any chunk in the segment.
    newest: Timestamp,
    path: Option<PathBuf>,
}

impl Segment {
    fn len(&self) -> usize {
        self.flushed + self.pending.len()
    }

    /// Writes the buffered bytes to the file; on failure keeps them, and all that follow,
    /// in memory.
    fn flush(&mut self) {
        let Some(file) = &self.file else { return };
        match file.write_all_at(&self.pending, self.flushed as u64) {
            Ok(()) => {
                self.flushed += self.pending.len();
                self.pending.clear();
            }
            Err(e) => {
                tracing::error!(path = ?self.path, error = %e, "writing head chunks failed; keeping them in memory");
                self.file = None;
            }
        }
    }

    /// The header and bytes of the chunk at `offset`, or `None` if the offset is not a
    /// chunk's.
    fn chunk(&self, offset: usize) -> Option<(&[u8; HEADER_BYTES], &[u8])> {
        let (data, at): (&[u8], usize) = match &self.map {
            Some(map) if offset < self.flushed => (&map[..self.flushed], offset),
            _ => (&self.pending, offset.checked_sub(self.flushed)?),
        };
        chunk_at(data, at)
    }
}

/// The head's full chunks, in segments numbered from 0.
#[derive(Debug, Default)]
pub(crate) struct ChunkStore {
    /// Where segment files go; `None` keeps every segment in memory.
    dir: Option<PathBuf>,
    segments: BTreeMap<u32, Segment>,
    /// The segment taking writes, once there is one.
    current: Option<u32>,
    next: u32,
    /// Each series' newest chunk in the segments an earlier process left, until the WAL's
    /// replay is done with them ([`ChunkStore::forget_recovered`]).
    recovered: U64Map<ChunkRef>,
    /// The highest series ref those segments name.
    max_series: u64,
}

impl ChunkStore {
    /// A store writing its segments to `dir`, which it creates if needed. The segments an
    /// earlier process left there are mapped, their valid chunks indexed by series; files
    /// that hold no valid chunk are deleted.
    pub(crate) fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let number = path
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| n.len() == 8)
                .and_then(|n| n.parse().ok());
            match number {
                Some(n) => {
                    found.insert(n, path);
                }
                None => {
                    tracing::warn!(path = %path.display(), "leaving a file that is no head chunk segment")
                }
            }
        }
        let mut store = ChunkStore { dir: Some(dir), ..ChunkStore::default() };
        // in number order, so that a series' newest chunk is the last one seen
        for (number, path) in found {
            match store.recover_segment(number, &path) {
                Ok(true) => {}
                Ok(false) => remove_segment_file(&path),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "reading a head chunk segment failed; its chunks are written again from the WAL");
                    remove_segment_file(&path);
                }
            }
        }
        store.next = store.segments.keys().next_back().map_or(0, |n| n + 1);
        Ok(store)
    }

    /// Maps segment `number`'s file at `path` and indexes its valid chunks; returns whether
    /// it has any.
    fn recover_segment(&mut self, number: u32, path: &Path) -> std::io::Result<bool> {
        let file = File::open(path)?;
        let len = file.metadata()?.len() as usize;
        if len <= SEGMENT_MAGIC.len() || len > SEGMENT_BYTES {
            return Ok(false);
        }
        // SAFETY: as in `create_mapped`: the file is this store's own, in the locked data
        // directory, and nothing writes or truncates it again.
        let map = unsafe { MmapOptions::new().len(len).map(&file)? };
        if map[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
            return Ok(false);
        }
        let mut at = SEGMENT_MAGIC.len();
        let mut newest = Timestamp::MIN;
        while let Some((header, bytes)) = chunk_at(&map, at) {
            if !ChunkHeader::checksum_holds(header, bytes) {
                break;
            }
            let header = ChunkHeader::decode(header);
            let samples = header.samples as usize;
            if samples >= 1 << COUNT_BITS {
                break;
            }
            if !bytes.is_empty() {
                newest = newest.max(header.max_t);
            }
            self.recovered.insert(header.series, ChunkRef::new(number, at, samples));
            self.max_series = self.max_series.max(header.series);
            at += HEADER_BYTES + bytes.len();
        }
        if at == SEGMENT_MAGIC.len() {
            return Ok(false);
        }
        let path = Some(path.to_path_buf());
        let segment = Segment { file: None, map: Some(map), pending: Vec::new(), flushed: at, newest, path };
        self.segments.insert(number, segment);
        Ok(true)
    }

    /// The highest series ref the segments an earlier process left name: refs up to it
    /// are not to be given to new series, whose chains those chunks would pass for.
    pub(crate) fn max_recovered_series(&self) -> u64 {
        self.max_series
    }

    /// Frees the index of the chains an earlier process left, once the WAL's replay has
    /// taken back those it wants.
    pub(crate) fn forget_recovered(&mut self) {
        self.recovered = U64Map::default();
    }

    /// Stores the bytes of a full chunk of series `series` holding `samples` samples in
    /// `times` (oldest, newest), which follows `prev` in its series.
    pub(crate) fn write(
        &mut self,
        bytes: &[u8],
        samples: usize,
        (min_t, max_t): (Timestamp, Timestamp),
        prev: Option<ChunkRef>,
        series: u64,
    ) -> ChunkRef {
        let need = HEADER_BYTES + bytes.len();
        let number = match self.current {
            Some(n) if self.segments.get(&n).is_some_and(|s| s.len() + need <= SEGMENT_BYTES) => n,
            _ => self.start_segment(),
        };
        let segment = self.segments.get_mut(&number).expect("the current segment exists");
        let offset = segment.len();
        let header =
            ChunkHeader { len: bytes.len() as u32, prev, min_t, max_t, series, samples: samples as u32 };
        segment.pending.extend_from_slice(&header.encode(bytes));
        segment.pending.extend_from_slice(bytes);
        if !bytes.is_empty() {
            segment.newest = segment.newest.max(max_t);
        }
        if segment.file.is_some() && segment.pending.len() >= WRITE_BYTES {
            segment.flush();
        }
        ChunkRef::new(number, offset, samples)
    }

    /// Marks that series `series`' chunks written before are no longer its own: a deletion
    /// is writing them anew.
    pub(crate) fn write_reset(&mut self, series: u64) {
        self.write(&[], 0, (Timestamp::MIN, Timestamp::MIN), None, series);
    }

    /// A chunk this store wrote, or `None` if its segment is gone.
    pub(crate) fn read(&self, at: ChunkRef) -> Option<StoredChunk<'_>> {
        let (header, bytes) = self.segments.get(&at.segment())?.chunk(at.offset())?;
        let ChunkHeader { prev, min_t, max_t, series, .. } = ChunkHeader::decode(header);
        // the ref's count is the header's: it was taken from there or written with it
        Some(StoredChunk { prev, series, min_t, max_t, samples: at.samples(), bytes })
    }

    /// Deletes the segments whose chunks are all older than `mint`, but the one taking
    /// writes: the head has dropped those chunks.
    pub(crate) fn release_older_than(&mut self, mint: Timestamp) {
        let current = self.current;
        self.segments.retain(|&n, s| {
            let keep = Some(n) == current || s.newest >= mint;
            if !keep {
                // the map goes with the segment
                if let Some(path) = &s.path {
                    remove_segment_file(path);
                }
            }
            keep
        });
    }

    /// Finishes the current segment and starts the next; returns its number.
    fn start_segment(&mut self) -> u32 {
        if let Some(done) = self.current.and_then(|n| self.segments.get_mut(&n)) {
            done.flush();
            done.file = None;
            done.pending.shrink_to_fit();
        }
        let number = self.next;
        // numbers wrap long after the segments they named are gone (2^28 of 128 MiB each)
        self.next = (self.next + 1) % (1 << SEGMENT_BITS);
        let path = self.dir.as_ref().map(|d| d.join(format!("{number:08}")));
        let (file, map) = match path.as_ref().map(|p| create_mapped(p)).transpose() {
            Ok(Some((file, map))) => (Some(file), Some(map)),
            Ok(None) => (None, None),
            Err(e) => {
                tracing::error!(path = ?path, error = %e, "creating a head chunk segment failed; keeping it in memory");
                (None, None)
            }
        };
        if let Some(dir) = self.dir.as_ref().filter(|_| file.is_some()) {
            // a segment missing after a power loss must be one a truncation deleted: a chain
            // taken back ends at it ([`SealedChain::recover`])
            if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not fsync the head chunk directory");
            }
        }
        let pending = SEGMENT_MAGIC.to_vec();
        let segment = Segment { file, map, pending, flushed: 0, newest: Timestamp::MIN, path };
        self.segments.insert(number, segment);
        self.current = Some(number);
        number
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // what the write buffer holds goes to the file, for the next start to map back
        self.flush();
    }
}

/// The header and bytes of the chunk at `at` in `data`, if they are all there.
fn chunk_at(data: &[u8], at: usize) -> Option<(&[u8; HEADER_BYTES], &[u8])> {
    let header: &[u8; HEADER_BYTES] = data.get(at..at.checked_add(HEADER_BYTES)?)?.try_into().ok()?;
    let len = ChunkHeader::decode(header).len as usize;
    Some((header, data.get(at + HEADER_BYTES..(at + HEADER_BYTES).checked_add(len)?)?))
}

/// Deletes a segment's file; a failure is logged (the file is only a cache of the WAL).
fn remove_segment_file(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "removing a head chunk segment");
    }
}

/// A new, empty segment file, and a read-only map of the [`SEGMENT_BYTES`] it grows to.
fn create_mapped(path: &std::path::Path) -> std::io::Result<(File, Mmap)> {
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
    // SAFETY: the file is this store's own, in the data directory the database holds locked,
    // and never truncated. Only its first `flushed` bytes are read through the map: they are
    // written (so inside the file, where pages past its end would fault) and no later write
    // changes them.
    let map = unsafe { MmapOptions::new().len(SEGMENT_BYTES).map(&file)? };
    Ok((file, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_bytes(i: usize) -> Vec<u8> {
        (0..(i % 300) + 3).map(|b| (b ^ i) as u8).collect()
    }

    /// What `read` gives back of a chunk: its bytes, time range, count and predecessor.
    type ReadBack = (Vec<u8>, Timestamp, Timestamp, usize, Option<ChunkRef>);

    fn read_back(store: &ChunkStore, at: ChunkRef) -> Option<ReadBack> {
        store.read(at).map(|c| (c.bytes.to_vec(), c.min_t, c.max_t, c.samples, c.prev))
    }

    /// Chunks written across many flushes and two segments read back as written, from the
    /// file and from the write buffer alike, and a released segment's file is gone.
    #[test]
    fn chunks_read_back_from_files_and_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ChunkStore::open(dir.path().join("chunks")).unwrap();
        let mut written = Vec::new();
        let mut total = 0;
        let mut i = 0;
        let mut prev = None;
        while total < SEGMENT_BYTES + WRITE_BYTES * 3 {
            let bytes = chunk_bytes(i);
            total += bytes.len() + HEADER_BYTES;
            let (min_t, max_t) = (i as i64 - 5, i as i64 + 10);
            let c = store.write(&bytes, i % 121, (min_t, max_t), prev, 7);
            written.push((c, (bytes, min_t, max_t, i % 121, prev)));
            prev = Some(c).filter(|_| i % 3 != 0);
            i += 1;
        }
        assert_eq!(store.segments.len(), 2);
        for (c, want) in &written {
            assert_eq!(read_back(&store, *c).as_ref(), Some(want));
        }
        let files = || std::fs::read_dir(dir.path().join("chunks")).unwrap().count();
        assert_eq!(files(), 2);
        let first_newest = store.segments[&0].newest;
        store.release_older_than(first_newest + 1);
        assert_eq!(files(), 1);
        assert!(store.read(written[0].0).is_none(), "a released chunk reads as nothing");
        let (last, want) = written.last().unwrap();
        assert_eq!(read_back(&store, *last).as_ref(), Some(want));
        // the segment taking writes stays, however old
        store.release_older_than(Timestamp::MAX);
        assert_eq!(read_back(&store, *last).as_ref(), Some(want));
    }

    /// A refs' fields survive packing at their extremes, and a ref is never zero.
    #[test]
    fn refs_pack_their_fields() {
        for (segment, offset, samples) in
            [(0, 0, 0), ((1 << SEGMENT_BITS) - 1, SEGMENT_BYTES - 1, 255), (7, 12345, 120)]
        {
            let r = ChunkRef::new(segment, offset, samples);
            assert_eq!((r.segment(), r.offset(), r.samples()), (segment, offset, samples));
            assert_eq!(ChunkRef::from_word(r.0.get()), Some(r));
        }
        assert_eq!(std::mem::size_of::<Option<ChunkRef>>(), 8);
    }

    /// A header's fields come back as written, at their extremes, and its checksum fails
    /// when a field or a byte of its chunk changes.
    #[test]
    fn headers_read_back_and_check_their_chunk() {
        let prev = Some(ChunkRef::new(3, 99, 120));
        for header in [
            ChunkHeader {
                len: 5,
                prev,
                min_t: Timestamp::MIN,
                max_t: Timestamp::MAX,
                series: u64::MAX,
                samples: 120,
            },
            ChunkHeader { len: 0, prev: None, min_t: -1, max_t: 0, series: 0, samples: 0 },
        ] {
            let bytes = &b"chunk"[..header.len as usize];
            let encoded = header.encode(bytes);
            assert_eq!(ChunkHeader::decode(&encoded), header);
            assert!(ChunkHeader::checksum_holds(&encoded, bytes));
            let mut damaged = encoded;
            damaged[20] ^= 1;
            assert!(!ChunkHeader::checksum_holds(&damaged, bytes), "a changed field fails the check");
            assert!(!ChunkHeader::checksum_holds(&encoded, b"other"), "other chunk bytes fail the check");
        }
    }

    /// A chain of chunks walks back newest first, as far as the time asked for, and a
    /// truncation keeps the chunk it cuts through, reading from its first sample kept.
    #[test]
    fn a_chain_walks_back_and_truncates_through_a_chunk() {
        let mut store = ChunkStore::default();
        let mut chain = SealedChain::default();
        let mut other = SealedChain::default();
        // five chunks of ten samples at t = 0, 10, ..., 490, interleaved with another series
        for k in 0..5 {
            for (c, base) in [(&mut chain, 0), (&mut other, 1)] {
                let mut open = OpenChunk::new();
                for i in 0..10 {
                    let t = (k * 10 + i) * 10 + base;
                    open.append(t, t as f64);
                }
                c.push(&mut store, &open, base as u64);
            }
        }
        assert_eq!((chain.samples(), chain.chunks(), chain.min_t()), (50, 5, Some(0)));
        let starts: Vec<Timestamp> = chain.newest_first(&store, 0).map(|(from, _)| from).collect();
        assert_eq!(starts, [400, 300, 200, 100, 0]);
        let recent: Vec<Timestamp> = chain.newest_first(&store, 285).map(|(from, _)| from).collect();
        assert_eq!(recent, [400, 300, 200], "the walk stops at the first chunk older than asked");
        assert_eq!(chain.truncate(&store, 125), (13, 1));
        assert_eq!((chain.samples(), chain.chunks(), chain.min_t()), (37, 4, Some(130)));
        assert_eq!(chain.recount(&store), (37, 4));
        let starts: Vec<Timestamp> = chain.newest_first(&store, 0).map(|(from, _)| from).collect();
        assert_eq!(starts, [400, 300, 200, 130]);
        assert_eq!(chain.truncate(&store, 125), (0, 0), "a truncation to the same time drops nothing");
        assert_eq!(chain.truncate(&store, 195), (7, 1), "to the first sample of a chunk");
        assert_eq!((chain.samples(), chain.chunks(), chain.min_t()), (30, 3, Some(200)));
        assert_eq!(chain.truncate(&store, 495), (30, 3));
        assert_eq!((chain.samples(), chain.chunks(), chain.min_t()), (0, 0, None));
        assert_eq!(other.recount(&store), (50, 5), "the other series' chain is untouched");
    }

    /// Chains of `series` series, `per` chunks of ten samples each (t = 10 × sample index),
    /// written interleaved as a head seals them.
    fn write_chains(store: &mut ChunkStore, series: u64, per: i64) -> Vec<SealedChain> {
        let mut chains: Vec<SealedChain> = (0..series).map(|_| SealedChain::default()).collect();
        for k in 0..per {
            for (r, chain) in chains.iter_mut().enumerate() {
                let mut open = OpenChunk::new();
                for i in 0..10 {
                    let t = (k * 10 + i) * 10;
                    open.append(t, (t + r as i64) as f64);
                }
                chain.push(store, &open, r as u64);
            }
        }
        chains
    }

    /// The samples a chain holds, oldest first.
    fn samples_of(chain: &SealedChain, store: &ChunkStore) -> Vec<(Timestamp, f64)> {
        let mut chunks: Vec<_> = chain.newest_first(store, Timestamp::MIN).collect();
        chunks.reverse();
        chunks.into_iter().flat_map(|(from, c)| samples_from(c.iter(), from).map(|s| (s.t, s.v))).collect()
    }

    fn samples_from(it: ChunkIter<'_>, from: Timestamp) -> impl Iterator<Item = crate::Sample> + '_ {
        it.skip_while(move |s| s.t < from)
    }

    /// A store opened on the files an earlier one left takes each series' chain back as it
    /// was, from the floor asked for on, and new segments follow the old ones.
    #[test]
    fn chains_are_taken_back_from_the_files_an_earlier_store_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunks");
        let mut store = ChunkStore::open(path.clone()).unwrap();
        let chains = write_chains(&mut store, 50, 6);
        let want: Vec<_> = chains.iter().map(|c| samples_of(c, &store)).collect();
        drop(store);
        let store = ChunkStore::open(path.clone()).unwrap();
        assert_eq!(store.max_recovered_series(), 49);
        for (r, want) in want.iter().enumerate() {
            let (chain, newest) = SealedChain::recover(&store, r as u64, Timestamp::MIN).unwrap();
            assert_eq!((chain.chunks(), chain.samples(), newest), (6, 60, 590));
            assert_eq!(&samples_of(&chain, &store), want, "series {r}");
            // from a floor inside the third chunk: the rest of it and the three after
            let (chain, _) = SealedChain::recover(&store, r as u64, 255).unwrap();
            assert_eq!((chain.chunks(), chain.samples(), chain.min_t()), (4, 34, Some(260)));
            assert_eq!(samples_of(&chain, &store), want[26..]);
        }
        assert!(SealedChain::recover(&store, 50, Timestamp::MIN).is_none(), "a series it never had");
        assert!(SealedChain::recover(&store, 3, 600).is_none(), "all older than the floor");
        let mut store = store;
        let at = store.write(&chunk_bytes(1), 1, (0, 0), None, 1);
        assert_eq!(at.segment(), 1, "a new segment after the one taken back");
    }

    /// A file cut inside a chunk keeps the chunks before the cut: a chain whose newest chunk
    /// was lost is taken back without it. A flipped byte ends the segment's valid part
    /// there, and a chain reaching into what is lost is not taken back at all.
    #[test]
    fn a_cut_or_damaged_file_keeps_the_chains_before_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunks");
        let mut store = ChunkStore::open(path.clone()).unwrap();
        write_chains(&mut store, 4, 5);
        drop(store);
        let file = path.join("00000000");
        let bytes = std::fs::read(&file).unwrap();
        // the last chunk (series 3's fifth) cut in half
        std::fs::write(&file, &bytes[..bytes.len() - 20]).unwrap();
        let store = ChunkStore::open(path.clone()).unwrap();
        let (chain, newest) = SealedChain::recover(&store, 3, Timestamp::MIN).unwrap();
        assert_eq!((chain.chunks(), newest), (4, 390));
        assert_eq!(SealedChain::recover(&store, 2, Timestamp::MIN).unwrap().0.chunks(), 5);
        drop(store);
        // a byte of series 0's third chunk flipped: the chunks from there on are not valid;
        // series 0's newest valid chunk is its second, the others' chains reach the damage
        let mut bytes = std::fs::read(&file).unwrap();
        // chunks go out a round of the four series at a time: the ninth is series 0's third
        let mut at = SEGMENT_MAGIC.len();
        for _ in 0..8 {
            at += HEADER_BYTES + chunk_at(&bytes, at).unwrap().1.len();
        }
        bytes[at + HEADER_BYTES + 2] ^= 0x40;
        std::fs::write(&file, &bytes).unwrap();
        let store = ChunkStore::open(path.clone()).unwrap();
        let (chain, _) = SealedChain::recover(&store, 0, Timestamp::MIN).unwrap();
        assert_eq!(chain.chunks(), 2);
        assert!(store.segments[&0].flushed < bytes.len());
    }

    /// A mark written when a deletion writes a series' chunks anew hides the old chain; the
    /// chain written after it is taken back alone.
    #[test]
    fn a_reset_mark_ends_what_is_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunks");
        let mut store = ChunkStore::open(path.clone()).unwrap();
        write_chains(&mut store, 2, 3);
        store.write_reset(0);
        store.write_reset(1);
        let mut renewed = SealedChain::default();
        let mut open = OpenChunk::new();
        open.append(5, 1.0);
        open.append(6, 2.0);
        renewed.push(&mut store, &open, 1);
        drop(store);
        let store = ChunkStore::open(path).unwrap();
        assert!(SealedChain::recover(&store, 0, Timestamp::MIN).is_none());
        let (chain, newest) = SealedChain::recover(&store, 1, Timestamp::MIN).unwrap();
        assert_eq!((chain.chunks(), chain.samples(), newest), (1, 2, 6));
    }

    /// Files of another format, or without a whole chunk, are deleted; other names stay.
    #[test]
    fn files_without_valid_chunks_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let chunks = dir.path().join("chunks");
        std::fs::create_dir_all(&chunks).unwrap();
        std::fs::write(chunks.join("00000000"), b"left over by an older format").unwrap();
        std::fs::write(chunks.join("00000001"), SEGMENT_MAGIC).unwrap();
        std::fs::write(chunks.join("notes"), b"not ours").unwrap();
        let store = ChunkStore::open(chunks.clone()).unwrap();
        assert!(store.segments.is_empty());
        let left: Vec<_> = std::fs::read_dir(&chunks).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["notes"]);
    }

    /// Without a directory the chunks stay in memory.
    #[test]
    fn a_store_without_a_directory_keeps_chunks_in_memory() {
        let mut store = ChunkStore::default();
        let chunks: Vec<_> = (0..1000)
            .map(|i| (store.write(&chunk_bytes(i), 120, (0, i as i64), None, 1), chunk_bytes(i)))
            .collect();
        for (c, bytes) in &chunks {
            assert_eq!(store.read(*c).map(|c| c.bytes), Some(&bytes[..]));
        }
    }
}
