//! Where the head's full chunks live: appended to segment files in the data directory and
//! read back through a memory map, so that two hours of chunks do not sit on the heap. A
//! series keeps 24 bytes per full chunk: where it is, and its time range.
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
//! removes every chunk whose newest sample is older than `mint`.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use memmap2::{Mmap, MmapOptions};

use crate::Timestamp;

/// Bits of a [`ChunkRef`] holding the offset in the segment: segments of 128 MiB.
const OFFSET_BITS: u32 = 27;
/// Bits of a [`ChunkRef`] holding the chunk's sample count (at most 120).
const COUNT_BITS: u32 = 8;
/// The size of a segment file.
const SEGMENT_BYTES: usize = 1 << OFFSET_BITS;
/// Chunk bytes gathered before one write to the segment's file.
const WRITE_BYTES: usize = 1 << 20;
/// Bytes before each chunk in a segment: its length, little endian.
const LEN_BYTES: usize = 4;

/// Where a full chunk is: its segment, its offset there and its sample count, in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkRef(u64);

impl ChunkRef {
    fn new(segment: u32, offset: usize, samples: usize) -> Self {
        debug_assert!(offset < SEGMENT_BYTES && samples < 1 << COUNT_BITS);
        ChunkRef(
            (u64::from(segment) << (OFFSET_BITS + COUNT_BITS))
                | ((samples as u64) << OFFSET_BITS)
                | offset as u64,
        )
    }

    fn segment(self) -> u32 {
        (self.0 >> (OFFSET_BITS + COUNT_BITS)) as u32
    }

    fn offset(self) -> usize {
        (self.0 & ((1 << OFFSET_BITS) - 1)) as usize
    }

    /// The chunk's sample count, known without reading it.
    fn samples(self) -> usize {
        ((self.0 >> OFFSET_BITS) & ((1 << COUNT_BITS) - 1)) as usize
    }
}

/// A full chunk of a head series: where its bytes are and the time range they cover.
#[derive(Debug)]
pub(crate) struct SealedChunk {
    at: ChunkRef,
    min_t: Timestamp,
    max_t: Timestamp,
}

impl SealedChunk {
    /// Oldest timestamp.
    pub(crate) fn min_t(&self) -> Timestamp {
        self.min_t
    }

    /// Newest timestamp.
    pub(crate) fn max_t(&self) -> Timestamp {
        self.max_t
    }

    /// Samples in the chunk.
    pub(crate) fn len(&self) -> usize {
        self.at.samples()
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

    /// The bytes of the chunk at `offset`, or nothing if the offset is not a chunk's.
    fn chunk(&self, offset: usize) -> &[u8] {
        let (data, at): (&[u8], usize) = match &self.map {
            Some(map) if offset < self.flushed => (&map[..self.flushed], offset),
            _ => match offset.checked_sub(self.flushed) {
                Some(at) => (&self.pending, at),
                None => return &[],
            },
        };
        let Some(len) = data.get(at..at + LEN_BYTES) else { return &[] };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        data.get(at + LEN_BYTES..at + LEN_BYTES + len).unwrap_or(&[])
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

    /// Stores the bytes of a full chunk of `samples` samples from `min_t` to `max_t`.
    pub(crate) fn write(
        &mut self,
        bytes: &[u8],
        samples: usize,
        min_t: Timestamp,
        max_t: Timestamp,
    ) -> SealedChunk {
        let need = LEN_BYTES + bytes.len();
        let number = match self.current {
            Some(n) if self.segments.get(&n).is_some_and(|s| s.len() + need <= SEGMENT_BYTES) => n,
            _ => self.start_segment(),
        };
        let segment = self.segments.get_mut(&number).expect("the current segment exists");
        let offset = segment.len();
        segment.pending.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        segment.pending.extend_from_slice(bytes);
        segment.newest = segment.newest.max(max_t);
        if segment.file.is_some() && segment.pending.len() >= WRITE_BYTES {
            segment.flush();
        }
        SealedChunk { at: ChunkRef::new(number, offset, samples), min_t, max_t }
    }

    /// Stores a full chunk's bytes ([`write`](Self::write)).
    pub(crate) fn seal(&mut self, chunk: &crate::chunk::OpenChunk) -> SealedChunk {
        self.write(chunk.bytes(), chunk.len(), chunk.min_t(), chunk.max_t())
    }

    /// The bytes of a chunk this store wrote (empty if its segment is gone).
    pub(crate) fn read(&self, chunk: &SealedChunk) -> &[u8] {
        self.segments.get(&chunk.at.segment()).map_or(&[], |s| s.chunk(chunk.at.offset()))
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
        self.next += 1;
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

    /// Chunks written across many flushes and two segments read back as written, from the
    /// file and from the write buffer alike, and a released segment's file is gone.
    #[test]
    fn chunks_read_back_from_files_and_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ChunkStore::open(dir.path().join("chunks")).unwrap();
        let mut written = Vec::new();
        let mut total = 0;
        let mut i = 0;
        while total < SEGMENT_BYTES + WRITE_BYTES * 3 {
            let bytes = chunk_bytes(i);
            total += bytes.len() + LEN_BYTES;
            let c = store.write(&bytes, i % 121, i as i64, i as i64 + 10);
            assert_eq!(c.len(), i % 121);
            written.push((c, bytes));
            i += 1;
        }
        assert_eq!(store.segments.len(), 2);
        for (c, bytes) in &written {
            assert_eq!(store.read(c), &bytes[..]);
        }
        let files = || std::fs::read_dir(dir.path().join("chunks")).unwrap().count();
        assert_eq!(files(), 2);
        let first_newest = store.segments[&0].newest;
        store.release_older_than(first_newest + 1);
        assert_eq!(files(), 1);
        assert!(store.read(&written[0].0).is_empty(), "a released chunk reads as nothing");
        let (last, bytes) = written.last().unwrap();
        assert_eq!(store.read(last), &bytes[..]);
        // the segment taking writes stays, however old
        store.release_older_than(Timestamp::MAX);
        assert_eq!(store.read(last), &bytes[..]);
        drop(store);
        assert_eq!(files(), 0, "nothing is left behind");
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
        let chunks: Vec<_> =
            (0..1000).map(|i| (store.write(&chunk_bytes(i), 120, 0, i as i64), chunk_bytes(i))).collect();
        for (c, bytes) in &chunks {
            assert_eq!(store.read(c), &bytes[..]);
        }
    }
}
