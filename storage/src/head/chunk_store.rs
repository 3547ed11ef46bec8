//! Where the head's full chunks live: appended to segment files in the data directory and
//! read back through a memory map, so that two hours of chunks do not sit on the heap.
//!
//! Each chunk is written with a header naming the chunk of its series written before it and
//! the time range it covers, so a series keeps one [`SealedChain`] of 24 bytes however many
//! full chunks it has: where its newest chunk is, its oldest sample time, and counts. Reads
//! walk the chain from the newest chunk back, as far as the time range asked for reaches.
//!
//! The files are a cache of what the WAL holds, not a second copy to trust: the store empties
//! its directory when it opens and the WAL's replay writes the chunks again. Chunk bytes go
//! to the file in writes of about a megabyte; until then they are read from the write
//! buffer. Without a directory (unit tests), or once writing a segment's file has failed
//! (a full disk), a segment keeps its bytes in memory: the head goes on at the heap's cost
//! and the error is logged.
//!
//! A segment file is deleted when every chunk in it is older than what the head keeps: the
//! store remembers each segment's newest sample time, and a head truncation to `mint`
//! removes every chunk whose newest sample is older than `mint`. A chain never reaches a
//! deleted chunk: its count stops the walk at the oldest chunk the head keeps, whose segment
//! holds a sample at least as new as `mint`.

use std::collections::BTreeMap;
use std::fs::File;
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use memmap2::{Mmap, MmapOptions};

use crate::chunk::{ChunkIter, OpenChunk};
use crate::Timestamp;

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
/// Bytes before each chunk in a segment, little endian: the chunk's length (4), the ref of
/// the series' chunk before it (8, zero for none), its oldest and newest timestamps (8 + 8).
const HEADER_BYTES: usize = 28;

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

/// A full chunk read from the store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoredChunk<'a> {
    /// The series' chunk before this one.
    prev: Option<ChunkRef>,
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

    /// Stores `chunk`, full, as the chain's newest.
    pub(crate) fn push(&mut self, store: &mut ChunkStore, chunk: &OpenChunk) {
        if self.chunks == 0 {
            self.min_t = chunk.min_t();
        }
        let at = store.write(chunk.bytes(), chunk.len(), chunk.min_t(), chunk.max_t(), self.newest);
        self.newest = Some(at);
        self.chunks += 1;
        self.samples += chunk.len() as u32;
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
    /// [`SEGMENT_BYTES`] of the file mapped, of which the first `flushed` are written;
    /// `None` for a segment kept in memory.
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
    fn chunk(&self, offset: usize) -> Option<(&[u8], &[u8])> {
        let (data, at): (&[u8], usize) = match &self.map {
            Some(map) if offset < self.flushed => (&map[..self.flushed], offset),
            _ => (&self.pending, offset.checked_sub(self.flushed)?),
        };
        let header = data.get(at..at + HEADER_BYTES)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("four bytes")) as usize;
        Some((header, data.get(at + HEADER_BYTES..at + HEADER_BYTES + len)?))
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
}

impl ChunkStore {
    /// A store writing its segments to `dir`, which it creates or empties: what an earlier
    /// process left there is a cache of the WAL that its replay rebuilds.
    pub(crate) fn open(dir: PathBuf) -> std::io::Result<Self> {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&dir)?;
        Ok(ChunkStore { dir: Some(dir), segments: BTreeMap::new(), current: None, next: 0 })
    }

    /// Stores the bytes of a full chunk of `samples` samples from `min_t` to `max_t`, which
    /// follows `prev` in its series.
    pub(crate) fn write(
        &mut self,
        bytes: &[u8],
        samples: usize,
        min_t: Timestamp,
        max_t: Timestamp,
        prev: Option<ChunkRef>,
    ) -> ChunkRef {
        let need = HEADER_BYTES + bytes.len();
        let number = match self.current {
            Some(n) if self.segments.get(&n).is_some_and(|s| s.len() + need <= SEGMENT_BYTES) => n,
            _ => self.start_segment(),
        };
        let segment = self.segments.get_mut(&number).expect("the current segment exists");
        let offset = segment.len();
        segment.pending.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        segment.pending.extend_from_slice(&prev.map_or(0, |p| p.0.get()).to_le_bytes());
        segment.pending.extend_from_slice(&min_t.to_le_bytes());
        segment.pending.extend_from_slice(&max_t.to_le_bytes());
        segment.pending.extend_from_slice(bytes);
        segment.newest = segment.newest.max(max_t);
        if segment.file.is_some() && segment.pending.len() >= WRITE_BYTES {
            segment.flush();
        }
        ChunkRef::new(number, offset, samples)
    }

    /// A chunk this store wrote, or `None` if its segment is gone.
    pub(crate) fn read(&self, at: ChunkRef) -> Option<StoredChunk<'_>> {
        let (header, bytes) = self.segments.get(&at.segment())?.chunk(at.offset())?;
        let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("eight bytes"));
        Some(StoredChunk {
            prev: ChunkRef::from_word(word(4)),
            min_t: word(12) as Timestamp,
            max_t: word(20) as Timestamp,
            samples: at.samples(),
            bytes,
        })
    }

    /// Deletes the segments whose chunks are all older than `mint`, but the one taking
    /// writes: the head has dropped those chunks.
    pub(crate) fn release_older_than(&mut self, mint: Timestamp) {
        let current = self.current;
        self.segments.retain(|&n, s| {
            let keep = Some(n) == current || s.newest >= mint;
            if !keep {
                if let Some(path) = &s.path {
                    // the map goes with the segment; the file is only a cache
                    if let Err(e) = std::fs::remove_file(path) {
                        tracing::warn!(path = %path.display(), error = %e, "removing a head chunk segment");
                    }
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
        let segment = Segment { file, map, pending: Vec::new(), flushed: 0, newest: Timestamp::MIN, path };
        self.segments.insert(number, segment);
        self.current = Some(number);
        number
    }
}

impl Drop for ChunkStore {
    fn drop(&mut self) {
        // the segments are rebuilt from the WAL on the next start: nothing to keep
        for path in self.segments.values().filter_map(|s| s.path.as_ref()) {
            let _ = std::fs::remove_file(path);
        }
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
            let c = store.write(&bytes, i % 121, min_t, max_t, prev);
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
        drop(store);
        assert_eq!(files(), 0, "nothing is left behind");
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
                c.push(&mut store, &open);
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

    /// A store opened on a directory empties it.
    #[test]
    fn opening_empties_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let chunks = dir.path().join("chunks");
        std::fs::create_dir_all(&chunks).unwrap();
        std::fs::write(chunks.join("00000000"), b"left over").unwrap();
        let _store = ChunkStore::open(chunks.clone()).unwrap();
        assert_eq!(std::fs::read_dir(&chunks).unwrap().count(), 0);
    }

    /// Without a directory the chunks stay in memory.
    #[test]
    fn a_store_without_a_directory_keeps_chunks_in_memory() {
        let mut store = ChunkStore::default();
        let chunks: Vec<_> = (0..1000)
            .map(|i| (store.write(&chunk_bytes(i), 120, 0, i as i64, None), chunk_bytes(i)))
            .collect();
        for (c, bytes) in &chunks {
            assert_eq!(store.read(*c).map(|c| c.bytes), Some(&bytes[..]));
        }
    }
}
