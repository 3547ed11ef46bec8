//! A block's float samples in frames of byte planes (`samples`, block version 2).
//!
//! The rows (one per sample, sorted by series then time, numbered as the index's series spans
//! number them) are cut into frames of at most [`FRAME_ROWS`] rows, each compressed with zstd
//! on its own, so that a read decompresses only the frames of the series it wants. Within a
//! frame, every series' rows form a *piece* (a series longer than a frame is cut into pieces
//! in consecutive frames), encoded without reference to anything outside it:
//!
//! * its timestamps as the first one, the first difference, and then the differences of
//!   differences (`dod`), zigzag-encoded: a target scraped at a steady interval has `dod` 0
//!   or a few milliseconds of jitter;
//! * its values, when at most a quarter of them lack an exact decimal mantissa at the
//!   piece's digit count ([`crate::decimal`]), as the zigzag-encoded differences of those
//!   mantissas (the first from 0), the others (NaN, staleness markers, ±Inf, full-precision
//!   odd values) as *exceptions*: a row number and the value's bits; otherwise every value
//!   as its raw bits.
//!
//! Each of the three streams (dods, mantissa differences, raw bits) is laid out across all of
//! a frame's pieces as byte planes: the lowest byte of every entry, then the next byte of
//! every entry, and so on for as many bytes as the frame's widest entry needs (none for
//! dods when every series' interval is steady). The planes of high bytes are mostly zero,
//! which zstd compresses to almost nothing, and decoding is a few shifts per entry over
//! contiguous bytes, with no branch per sample.
//!
//! A stream's planes are as wide as all but its widest one entry in 200 need; those few
//! entries (a counter's reset, a series' first mantissa, a missed scrape) are *escapes*:
//! their low bytes stay in the planes and the bits above go to a list in the frame's
//! header. Each byte they would add to the planes is a lone non-zero byte in a plane of
//! zeros, a literal and a match for zstd; as an escape it is a few bytes once.
//!
//! A frame is stored as zstd frames back to back: one for its header, then one for each
//! plane, so that zstd's entropy coder fits each plane's own distribution of bytes. They
//! decompress, in one call, into the decompressed frame below.
//!
//! File layout (integers little-endian; varints as [`crate::codec`] writes them):
//!
//! ```text
//! "PFSF" 0x02                              header
//! frame*                                    back to back, each a run of zstd frames
//! directory                                 "PFSD" 0x02, uvarint frames, per frame
//!                                           (uvarint offset, uvarint compressed length,
//!                                           uvarint rows), crc32c
//! u64 directory length, "PFSF"              trailer
//! ```
//!
//! A decompressed frame:
//!
//! ```text
//! uvarint pieces, varint base_t,
//! per piece: uvarint rows, u8 kind (digit count 0..=15, or 255 for raw bits),
//!            varint t0 - base_t, [varint first difference, if rows ≥ 2],
//!            [uvarint exceptions, uvarint row gaps (first from -1) … if decimal]
//! u8 dod width, u8 mantissa width
//! dod escapes, mantissa escapes: uvarint count, per escape (uvarint gap from the previous
//!            entry's index, the first from -1; uvarint bits above the width)
//! dod planes       (dod width × Σ max(rows − 2, 0) bytes)
//! mantissa planes  (mantissa width × Σ rows of decimal pieces)
//! raw planes       (8 × (Σ rows of raw pieces + Σ exceptions)), in piece order
//! ```
//!
//! Version 1 files (the same without escapes) are still read.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{corrupt, io};
use crate::codec::{put_uvarint, put_varint, seal, sealed_header, unzigzag, zigzag, Cursor};
use crate::{Error, Sample, Timestamp};

/// The samples file of a version-2 block.
pub(crate) const FRAMES_FILE: &str = "samples";
const MAGIC: &[u8; 4] = b"PFSF";
const DIRECTORY_MAGIC: &[u8; 4] = b"PFSD";
/// The version this writer makes: frames whose streams have escapes.
const VERSION: u8 = 2;
/// The version without escapes, still read.
const VERSION_WITHOUT_ESCAPES: u8 = 1;
/// At most one entry in this many of a stream is an escape: a frame's planes are as wide as
/// all but its widest few entries need.
const ESCAPE_ONE_IN: usize = 200;
/// Rows per frame: large enough that zstd finds the planes' repetitions, small enough that
/// a read of one short series decompresses little besides it.
pub(crate) const FRAME_ROWS: usize = 32 * 1024;
/// The kind of a piece whose values are stored as raw bits.
const RAW: u8 = 255;
/// zstd's fastest strategy, with matches of at least [`ZSTD_MIN_MATCH`] bytes: on planes of
/// mostly uniform bytes, short matches cost more than the literals they replace, and runs
/// of zero are long. On the planes of exporter-like series this takes 0.6 % off their
/// bytes at level 3, and comes within 0.1 % of level 19 at a hundredth of its time.
const ZSTD_LEVEL: i32 = 1;
/// See [`ZSTD_LEVEL`].
const ZSTD_MIN_MATCH: u32 = 7;

/// Bytes needed for the largest of `values` (0 when all are 0).
fn width(values: &[u64]) -> u8 {
    let all = values.iter().fold(0u64, |acc, &v| acc | v);
    (64 - all.leading_zeros()).div_ceil(8) as u8
}

/// The width of the planes of `values` and its escapes: the fewest bytes that leave at most
/// one entry in [`ESCAPE_ONE_IN`] wider, and those entries as (index, the bits above the
/// width).
///
/// A counter's reset, a series' first mantissa (a difference from 0) or a missed scrape is
/// one entry in hundreds that needs several bytes more than the rest; as planes, each of
/// those extra bytes is a lone non-zero byte in a plane of zeros, which costs zstd a literal
/// and a match, while an escape costs its few bytes once.
fn width_and_escapes(values: &[u64]) -> (u8, Vec<(usize, u64)>) {
    let mut of_width = [0usize; 9];
    for &v in values {
        of_width[usize::from(width(&[v]))] += 1;
    }
    let allowed = values.len() / ESCAPE_ONE_IN;
    // narrowed while the entries wider than the planes stay within the allowance
    let (mut width, mut wider) = (8u8, 0usize);
    while width > 0 && wider + of_width[usize::from(width)] <= allowed {
        wider += of_width[usize::from(width)];
        width -= 1;
    }
    let escapes = if width == 8 {
        Vec::new()
    } else {
        let shift = 8 * u32::from(width);
        values.iter().enumerate().filter(|(_, &v)| v >> shift != 0).map(|(i, &v)| (i, v >> shift)).collect()
    };
    (width, escapes)
}

/// Appends a stream's escapes: their number, then per escape the gap from the previous
/// index (the first from -1) and the bits above the planes' width.
fn put_escapes(out: &mut Vec<u8>, escapes: &[(usize, u64)]) {
    put_uvarint(out, escapes.len() as u64);
    let mut last = -1i64;
    for &(i, high) in escapes {
        put_uvarint(out, (i as i64 - last) as u64);
        put_uvarint(out, high);
        last = i as i64;
    }
}

/// Reads a stream of `len` entries' escapes for planes `width` bytes wide: `None` unless
/// their indexes ascend within the stream and each one's bits are non-zero and fit above
/// the width.
fn get_escapes(c: &mut Cursor<'_>, len: usize, width: u8) -> Option<Vec<(usize, u64)>> {
    let n = usize::try_from(c.uvarint()?).ok().filter(|&n| n <= len && n <= c.remaining())?;
    if n > 0 && width >= 8 {
        return None;
    }
    let mut escapes = Vec::with_capacity(n);
    let mut at = -1i64;
    for _ in 0..n {
        let gap = i64::try_from(c.uvarint()?).ok().filter(|&g| g > 0)?;
        at = at.checked_add(gap).filter(|&i| i < len as i64)?;
        let high = c.uvarint()?;
        if high == 0 || high.leading_zeros() < 8 * u32::from(width) {
            return None;
        }
        escapes.push((at as usize, high));
    }
    Some(escapes)
}

/// The escapes (ascending) of the entries among `range` of a stream.
fn escapes_in(escapes: &[(usize, u64)], range: Range<usize>) -> &[(usize, u64)] {
    let first = escapes.partition_point(|&(i, _)| i < range.start);
    let end = escapes.partition_point(|&(i, _)| i < range.end);
    &escapes[first..end.max(first)]
}

/// Puts back the bits above the planes' `width` of the escaped entries among `range` of a
/// stream, whose low bytes `entries` holds.
fn patch_escapes(escapes: &[(usize, u64)], range: Range<usize>, width: u8, entries: &mut [u64]) {
    for &(i, high) in escapes_in(escapes, range.clone()) {
        entries[i - range.start] |= high << (8 * u32::from(width));
    }
}

/// Appends `values` as `width` byte planes (the bytes of each value below `width`).
fn put_planes(out: &mut Vec<u8>, values: &[u64], width: u8) {
    for plane in 0..u32::from(width) {
        out.extend(values.iter().map(|&v| (v >> (8 * plane)) as u8));
    }
}

/// Reads entries `range` of a stream of `len` entries stored as `width` byte planes at the
/// start of `planes`, into `out` (cleared first).
fn get_planes(planes: &[u8], len: usize, width: u8, range: Range<usize>, out: &mut Vec<u64>) {
    out.clear();
    out.resize(range.len(), 0);
    for plane in 0..usize::from(width) {
        let bytes = &planes[plane * len + range.start..plane * len + range.end];
        let shift = 8 * plane as u32;
        for (o, &b) in out.iter_mut().zip(bytes) {
            *o |= u64::from(b) << shift;
        }
    }
}

/// One series' rows in the frame being written.
struct PieceHead {
    rows: usize,
    kind: u8,
    t0: Timestamp,
    first_difference: i64,
    exceptions: Vec<usize>,
}

/// Writes a samples file frame by frame.
pub(crate) struct FramesWriter {
    out: BufWriter<File>,
    written: u64,
    /// (offset, compressed length, rows) per frame written.
    directory: Vec<(u64, u64, u64)>,
    pieces: Vec<PieceHead>,
    rows: usize,
    dods: Vec<u64>,
    mantissas: Vec<u64>,
    raw: Vec<u64>,
    /// The exact mantissa of each value of the piece being added, if it has one.
    exact: Vec<Option<i64>>,
    frame: Vec<u8>,
    compressor: zstd::bulk::Compressor<'static>,
    compressed: Vec<u8>,
    /// The version it writes: [`VERSION`], or in tests the one before.
    version: u8,
}

impl FramesWriter {
    /// Starts the samples file at `path`.
    pub(crate) fn create(path: &Path) -> Result<Self, Error> {
        Self::create_version(path, VERSION)
    }

    /// Starts the samples file at `path` in `version`.
    fn create_version(path: &Path, version: u8) -> Result<Self, Error> {
        let file = File::create(path).map_err(io(|| format!("creating {}", path.display())))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(MAGIC)
            .and_then(|()| out.write_all(&[version]))
            .map_err(io(|| format!("writing {}", path.display())))?;
        let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL)
            .map_err(io(|| "starting a zstd compressor".to_string()))?;
        // a checksum in every frame: a damaged frame fails its read instead of decoding into
        // other values
        compressor.include_checksum(true).map_err(io(|| "starting a zstd compressor".to_string()))?;
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::MinMatch(ZSTD_MIN_MATCH))
            .map_err(io(|| "starting a zstd compressor".to_string()))?;
        Ok(FramesWriter {
            out,
            written: 5,
            directory: Vec::new(),
            pieces: Vec::new(),
            rows: 0,
            dods: Vec::new(),
            mantissas: Vec::new(),
            raw: Vec::new(),
            exact: Vec::new(),
            frame: Vec::new(),
            compressor,
            compressed: Vec::new(),
            version,
        })
    }

    /// Appends a series' samples (in time order) after the rows written so far, cut into
    /// pieces at frame boundaries.
    pub(crate) fn add(&mut self, samples: &[Sample]) -> Result<(), Error> {
        let mut rest = samples;
        while !rest.is_empty() {
            let take = rest.len().min(FRAME_ROWS - self.rows);
            let (piece, after) = rest.split_at(take);
            self.add_piece(piece);
            rest = after;
            if self.rows == FRAME_ROWS {
                self.flush_frame()?;
            }
        }
        Ok(())
    }

    fn add_piece(&mut self, piece: &[Sample]) {
        let (first, second) = (piece[0].t, piece.get(1).map_or(0, |s| s.t));
        let mut prev_t = second;
        let mut prev_delta = second.wrapping_sub(first);
        for s in piece.iter().skip(2) {
            let delta = s.t.wrapping_sub(prev_t);
            self.dods.push(zigzag(delta.wrapping_sub(prev_delta)));
            (prev_t, prev_delta) = (s.t, delta);
        }
        let digits = crate::decimal::series_digits(piece.iter().map(|s| s.v));
        let exact = &mut self.exact;
        exact.clear();
        exact.extend(piece.iter().map(|s| crate::decimal::mantissa(s.v, digits)));
        let mut head = PieceHead {
            rows: piece.len(),
            kind: RAW,
            t0: first,
            first_difference: second.wrapping_sub(first),
            exceptions: Vec::new(),
        };
        if exact.iter().flatten().count() * 4 >= piece.len() * 3 {
            head.kind = digits;
            let mut prev = 0i64;
            for (row, (s, &mantissa)) in piece.iter().zip(exact.iter()).enumerate() {
                match mantissa {
                    Some(m) => {
                        // mantissas are below 2^53 in magnitude: the difference cannot overflow
                        self.mantissas.push(zigzag(m - prev));
                        prev = m;
                    }
                    None => {
                        self.mantissas.push(0);
                        head.exceptions.push(row);
                        self.raw.push(s.v.to_bits());
                    }
                }
            }
        } else {
            self.raw.extend(piece.iter().map(|s| s.v.to_bits()));
        }
        self.rows += piece.len();
        self.pieces.push(head);
    }

    fn flush_frame(&mut self) -> Result<(), Error> {
        if self.pieces.is_empty() {
            return Ok(());
        }
        let frame = &mut self.frame;
        frame.clear();
        put_uvarint(frame, self.pieces.len() as u64);
        let base = self.pieces[0].t0;
        put_varint(frame, base);
        for p in &self.pieces {
            put_uvarint(frame, p.rows as u64);
            frame.push(p.kind);
            put_varint(frame, p.t0.wrapping_sub(base));
            if p.rows >= 2 {
                put_varint(frame, p.first_difference);
            }
            if p.kind != RAW {
                put_uvarint(frame, p.exceptions.len() as u64);
                let mut last = -1i64;
                for &row in &p.exceptions {
                    put_uvarint(frame, (row as i64 - last) as u64);
                    last = row as i64;
                }
            }
        }
        let (dod_width, mantissa_width) = if self.version == VERSION_WITHOUT_ESCAPES {
            let widths = (width(&self.dods), width(&self.mantissas));
            frame.extend([widths.0, widths.1]);
            widths
        } else {
            let (dod_width, dod_escapes) = width_and_escapes(&self.dods);
            let (mantissa_width, mantissa_escapes) = width_and_escapes(&self.mantissas);
            frame.extend([dod_width, mantissa_width]);
            put_escapes(frame, &dod_escapes);
            put_escapes(frame, &mantissa_escapes);
            (dod_width, mantissa_width)
        };
        let mut sections = vec![frame.len()];
        for (stream, width) in [(&self.dods, dod_width), (&self.mantissas, mantissa_width), (&self.raw, 8)] {
            let start = frame.len();
            put_planes(frame, stream, width);
            sections.extend((1..=usize::from(width)).map(|plane| start + plane * stream.len()));
        }
        // The header and every plane are zstd frames of their own, back to back. zstd codes
        // a block's literals with one Huffman table, and the 128 KiB blocks of one frame
        // straddle planes: a uniform low byte beside a high byte that is mostly small, coded
        // together at the entropy of their mixture (about 6 % more bytes on exporter-like
        // values). A reader decompresses the concatenated frames in one call, as zstd allows,
        // into the same bytes one frame would give.
        let mut len = 0u64;
        let mut at = 0;
        for end in sections {
            if end == at {
                continue;
            }
            self.compressed.clear();
            self.compressed.reserve(zstd::zstd_safe::compress_bound(end - at));
            self.compressor
                .compress_to_buffer(&frame[at..end], &mut self.compressed)
                .map_err(io(|| "compressing a frame of samples".to_string()))?;
            self.out.write_all(&self.compressed).map_err(io(|| "writing a frame of samples".to_string()))?;
            len += self.compressed.len() as u64;
            at = end;
        }
        self.directory.push((self.written, len, self.rows as u64));
        self.written += len;
        self.pieces.clear();
        self.dods.clear();
        self.mantissas.clear();
        self.raw.clear();
        self.rows = 0;
        Ok(())
    }

    /// Writes the last frame, the directory and the trailer, and syncs the file.
    pub(crate) fn finish(mut self) -> Result<(), Error> {
        self.flush_frame()?;
        let what = || "writing a samples file's directory".to_string();
        self.out.write_all(&directory_and_trailer(&self.directory, self.version)).map_err(io(what))?;
        let file = self.out.into_inner().map_err(|e| Error::Io(what(), e.into_error()))?;
        file.sync_all().map_err(io(|| "syncing a block's samples file".to_string()))
    }
}

/// What a read decodes: the series' samples one after another in one pair of columns (one
/// allocation a read, which the allocator hands out again read after read, rather than a
/// pair a series), and where each series' samples are.
#[derive(Default)]
pub(crate) struct Decoded {
    /// Timestamps.
    pub(crate) t: Vec<Timestamp>,
    /// Values.
    pub(crate) v: Vec<f64>,
    /// The rows of `t` and `v` of each series read, in the order asked.
    pub(crate) ranges: Vec<Range<usize>>,
}

/// One frame in a samples file's directory.
#[derive(Clone, Copy, Debug)]
struct FrameEntry {
    offset: u64,
    len: u64,
    first_row: u64,
    rows: u64,
}

impl FrameEntry {
    /// Whether row `row` of the file is in this frame.
    fn holds(&self, row: u64) -> bool {
        (self.first_row..self.first_row + self.rows).contains(&row)
    }
}

/// An open samples file: its directory, read once, and the file, read frame by frame.
pub(crate) struct FramesFile {
    path: std::path::PathBuf,
    /// Open for the block's life: a merge deletes a block's directory while queries that
    /// took the block before may still read it.
    file: File,
    frames: Vec<FrameEntry>,
    rows: u64,
    /// The version its directory gives (whether its frames have escapes).
    version: u8,
}

/// A piece's header, as a reader finds it.
struct Piece {
    first_row: u64,
    rows: usize,
    kind: u8,
    t0: Timestamp,
    first_difference: i64,
    exceptions: Range<usize>,
    /// Where its entries start in the dod, mantissa and raw streams.
    dod_at: usize,
    mantissa_at: usize,
    raw_at: usize,
}

/// The frame a [`FramesCursor`] is in: decompressed, its pieces parsed.
struct LoadedFrame {
    entry: FrameEntry,
    pieces: Vec<Piece>,
    layout: Layout,
    /// Where the planes start in the frame's bytes.
    planes_at: usize,
}

/// Reads series after series of a samples file, keeping the frame it is in: series asked in
/// row order decompress each frame once, and their samples go wherever the caller appends
/// them (a query's joined columns, with no copy of each block's part between).
pub(crate) struct FramesCursor<'a> {
    file: &'a FramesFile,
    decompressor: zstd::bulk::Decompressor<'static>,
    compressed: Vec<u8>,
    /// The loaded frame's bytes, and what was parsed of them.
    bytes: Vec<u8>,
    loaded: Option<LoadedFrame>,
    /// Scratch entries of one piece's stream, reused piece after piece.
    entries: Vec<u64>,
}

impl FramesFile {
    /// Opens the samples file at `path` and reads its directory.
    pub(crate) fn open(path: &Path) -> Result<FramesFile, Error> {
        let file = File::open(path).map_err(io(|| format!("opening {}", path.display())))?;
        let size = file.metadata().map_err(io(|| format!("reading {}", path.display())))?.len();
        let bad = |what: &str| corrupt(path, what);
        let mut trailer = [0u8; 12];
        if size < 5 + 12 {
            return Err(bad("samples file too short"));
        }
        file.read_exact_at(&mut trailer, size - 12).map_err(io(|| format!("reading {}", path.display())))?;
        if &trailer[8..] != MAGIC {
            return Err(bad("samples file without its trailer"));
        }
        let dir_len = u64::from_le_bytes(trailer[..8].try_into().unwrap_or_default());
        let dir_at = size.checked_sub(12).and_then(|end| end.checked_sub(dir_len)).filter(|&at| at >= 5);
        let Some(dir_at) = dir_at else { return Err(bad("samples file directory out of bounds")) };
        let mut raw = vec![0u8; dir_len as usize];
        file.read_exact_at(&mut raw, dir_at).map_err(io(|| format!("reading {}", path.display())))?;
        let (frames, version) =
            decode_directory(&raw, dir_at).ok_or_else(|| bad("bad samples file directory"))?;
        let rows = frames.last().map_or(0, |f| f.first_row + f.rows);
        Ok(FramesFile { path: path.to_path_buf(), file, frames, rows, version })
    }

    /// Rows in the file.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// A cursor at the file's start.
    pub(crate) fn cursor(&self) -> Result<FramesCursor<'_>, Error> {
        Ok(FramesCursor {
            file: self,
            decompressor: zstd::bulk::Decompressor::new()
                .map_err(io(|| "starting a zstd decompressor".to_string()))?,
            compressed: Vec::new(),
            bytes: Vec::new(),
            loaded: None,
            entries: Vec::new(),
        })
    }

    /// The samples in `mint..=maxt` of the series at row ranges `spans` (ascending, apart).
    pub(crate) fn read(
        &self,
        spans: &[Range<u64>],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Decoded, Error> {
        // every row of the spans: what a read of the blocks' whole range fills; a read of
        // less gives back what it does not fill, below
        let rows: u64 = spans.iter().map(|s| s.end.saturating_sub(s.start)).sum();
        if rows > self.rows {
            return Err(corrupt(&self.path, "series rows beyond the samples file"));
        }
        let mut out = Decoded {
            t: Vec::with_capacity(rows as usize),
            v: Vec::with_capacity(rows as usize),
            ranges: Vec::with_capacity(spans.len()),
        };
        let mut cursor = self.cursor()?;
        for span in spans {
            let start = out.t.len();
            cursor.read_span(span.clone(), mint, maxt, &mut out.t, &mut out.v)?;
            out.ranges.push(start..out.t.len());
        }
        if out.t.capacity() > 2 * out.t.len() {
            out.t.shrink_to_fit();
            out.v.shrink_to_fit();
        }
        Ok(out)
    }
}

impl FramesCursor<'_> {
    /// Appends to `t` and `v` the samples in `mint..=maxt` of the series at rows `span`.
    pub(crate) fn read_span(
        &mut self,
        span: Range<u64>,
        mint: Timestamp,
        maxt: Timestamp,
        t: &mut Vec<Timestamp>,
        v: &mut Vec<f64>,
    ) -> Result<(), Error> {
        let path = &self.file.path;
        if span.end > self.file.rows {
            return Err(corrupt(path, "series rows beyond the samples file"));
        }
        let mut row = span.start;
        while row < span.end {
            self.seek(row)?;
            let Some(frame) = &self.loaded else { return Err(corrupt(path, "malformed frame of samples")) };
            // pieces are cut where series end: one that does not start at the series' next
            // row, or crosses its end, is not what the index says
            let k = frame.pieces.partition_point(|p| p.first_row < row);
            let piece = frame.pieces.get(k).filter(|p| p.first_row == row);
            let Some(piece) = piece.filter(|p| p.first_row + p.rows as u64 <= span.end) else {
                return Err(corrupt(path, "malformed frame of samples"));
            };
            // a series' pieces follow one another in time: none after one that starts
            // past the range is wanted
            if piece.t0 > maxt {
                break;
            }
            let planes = &self.bytes[frame.planes_at..];
            decode_piece(planes, &self.bytes, &frame.layout, piece, mint, maxt, t, v, &mut self.entries)
                .map_err(|what| corrupt(path, what))?;
            row += piece.rows as u64;
        }
        Ok(())
    }

    /// Loads the frame holding row `row`, unless it is the one loaded.
    fn seek(&mut self, row: u64) -> Result<(), Error> {
        if self.loaded.as_ref().is_some_and(|f| f.entry.holds(row)) {
            return Ok(());
        }
        self.loaded = None;
        let (file, path) = (self.file, &self.file.path);
        let index = file.frames.partition_point(|f| f.first_row + f.rows <= row);
        let Some(&entry) = file.frames.get(index) else {
            return Err(corrupt(path, "series rows beyond the samples file"));
        };
        let len = usize::try_from(entry.len).map_err(|_| corrupt(path, "frame too long"))?;
        self.compressed.resize(len, 0);
        file.file
            .read_exact_at(&mut self.compressed, entry.offset)
            .map_err(io(|| format!("reading {}", path.display())))?;
        // a frame's rows take at most 8 bytes in each of the three streams, plus their
        // headers: anything longer is not a frame this writer made
        let bound = (entry.rows as usize).saturating_mul(48).saturating_add(64);
        self.bytes.clear();
        self.bytes.reserve(bound);
        self.decompressor
            .decompress_to_buffer(self.compressed.as_slice(), &mut self.bytes)
            .map_err(|_| corrupt(path, "a frame does not decompress"))?;
        let bad = || corrupt(path, "malformed frame of samples");
        let mut c = Cursor(&self.bytes);
        let (pieces, layout) = parse_frame(&mut c, &entry, file.version).ok_or_else(bad)?;
        let planes_at = self.bytes.len() - c.0.len();
        let planes = layout.dods * usize::from(layout.dod_width)
            + layout.mantissas * usize::from(layout.mantissa_width)
            + layout.raw * 8;
        if self.bytes.len() - planes_at != planes {
            return Err(bad());
        }
        self.loaded = Some(LoadedFrame { entry, pieces, layout, planes_at });
        Ok(())
    }
}

/// Appends to `ts` and `vs` the samples in `mint..=maxt` of `piece`, whose frame is `frame`
/// with its planes at `planes` (checked against `layout`); `entries` is scratch.
#[allow(clippy::too_many_arguments)]
fn decode_piece(
    planes: &[u8],
    frame: &[u8],
    layout: &Layout,
    piece: &Piece,
    mint: Timestamp,
    maxt: Timestamp,
    ts: &mut Vec<Timestamp>,
    vs: &mut Vec<f64>,
    entries: &mut Vec<u64>,
) -> Result<(), &'static str> {
    let (dod_width, mantissa_width) = (layout.dod_width, layout.mantissa_width);
    let (dod_planes, rest) = planes.split_at(layout.dods * usize::from(dod_width));
    let (mantissa_planes, raw_planes) = rest.split_at(layout.mantissas * usize::from(mantissa_width));
    // every timestamp of the piece, then the rows out of range cut off
    let start = ts.len();
    ts.push(piece.t0);
    // whether the timestamps are in order, found as they are decoded rather than by another
    // pass over them
    let mut ordered = true;
    if piece.rows >= 2 {
        let (first, delta) = (piece.t0.wrapping_add(piece.first_difference), piece.first_difference);
        ts.push(first);
        let n = piece.rows - 2;
        let dods = piece.dod_at..piece.dod_at + n;
        if dod_width == 0 && escapes_in(&layout.dod_escapes, dods.clone()).is_empty() {
            // steps of one difference: in order when it is not negative and the last does
            // not wrap around
            let last = delta.checked_mul(n as i64).and_then(|d| first.checked_add(d));
            ordered = delta >= 0 && first >= piece.t0 && last.is_some();
            ts.extend((1..=n as i64).map(|i| first.wrapping_add(delta.wrapping_mul(i))));
        } else {
            get_planes(dod_planes, layout.dods, dod_width, dods.clone(), entries);
            patch_escapes(&layout.dod_escapes, dods, dod_width, entries);
            let (mut t, mut delta) = (first, delta);
            ordered = first >= piece.t0;
            ts.extend(entries.iter().map(|&dod| {
                delta = delta.wrapping_add(unzigzag(dod));
                let next = t.wrapping_add(delta);
                ordered &= next >= t;
                t = next;
                t
            }));
        }
    }
    if !ordered {
        return Err("timestamps of a series out of order");
    }
    let times = &ts[start..];
    let lo = times.partition_point(|&t| t < mint);
    let hi = times.partition_point(|&t| t <= maxt).max(lo);
    if lo > 0 {
        ts.copy_within(start + lo..start + hi, start);
    }
    ts.truncate(start + hi - lo);
    if lo == hi {
        return Ok(());
    }
    let v_start = vs.len();
    if piece.kind == RAW {
        get_planes(raw_planes, layout.raw, 8, piece.raw_at + lo..piece.raw_at + hi, entries);
        vs.extend(entries.iter().map(|&bits| f64::from_bits(bits)));
    } else {
        let mantissas = piece.mantissa_at..piece.mantissa_at + hi;
        get_planes(mantissa_planes, layout.mantissas, mantissa_width, mantissas.clone(), entries);
        patch_escapes(&layout.mantissa_escapes, mantissas, mantissa_width, entries);
        let mut m = 0i64;
        for d in entries.iter_mut() {
            m = m.wrapping_add(unzigzag(*d));
            *d = m as u64;
        }
        decimal_values(&entries[lo..hi], piece.kind, vs);
        for (k, row) in exception_rows(frame, &piece.exceptions).enumerate() {
            if (lo..hi).contains(&row) {
                let bits = raw_planes_get(raw_planes, layout.raw, piece.raw_at + k);
                vs[v_start + row - lo] = f64::from_bits(bits);
            }
        }
    }
    Ok(())
}

/// One entry of a raw stream of `len` entries.
fn raw_planes_get(planes: &[u8], len: usize, i: usize) -> u64 {
    (0..8).fold(0u64, |acc, plane| acc | u64::from(planes[plane * len + i]) << (8 * plane))
}

/// The exception rows of a piece, from the byte range of its gap list in the frame
/// (validated by [`parse_frame`]).
fn exception_rows<'a>(frame: &'a [u8], range: &Range<usize>) -> impl Iterator<Item = usize> + 'a {
    let mut c = Cursor(&frame[range.clone()]);
    let mut row = -1i64;
    std::iter::from_fn(move || {
        row += c.uvarint()? as i64;
        Some(row as usize)
    })
}

/// Appends the values of `mantissas` (as `i64` bits) at `digits` decimal places to `out`.
///
/// `m as f64` converts one value at a time on x86-64 without AVX-512; a mantissa below 2^51
/// in magnitude is converted instead by adding it to the bits of 2^52 + 2^51 (whose unit in
/// the last place is 1) and subtracting that number again, which is exact and runs on
/// several values at once, as does the division.
fn decimal_values(mantissas: &[u64], digits: u8, out: &mut Vec<f64>) {
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 2^52 + 2^51
    let small = mantissas.iter().fold(0u64, |acc, &m| acc | (m as i64).unsigned_abs()) < 1 << 51;
    let divisor = crate::decimal::pow10(digits);
    let start = out.len();
    if small {
        out.extend(mantissas.iter().map(|&m| f64::from_bits(MAGIC.to_bits().wrapping_add(m)) - MAGIC));
    } else {
        out.extend(mantissas.iter().map(|&m| m as i64 as f64));
    }
    if digits > 0 {
        for o in &mut out[start..] {
            *o /= divisor;
        }
    }
}

/// Sizes of a frame's streams, and the escapes of its dods and mantissas.
struct Layout {
    dods: usize,
    mantissas: usize,
    raw: usize,
    dod_width: u8,
    mantissa_width: u8,
    dod_escapes: Vec<(usize, u64)>,
    mantissa_escapes: Vec<(usize, u64)>,
}

/// A frame's piece headers, stream sizes and escapes (none in a file of `version` 1),
/// checked against the directory's row count; `c` is left at the start of the planes.
fn parse_frame(c: &mut Cursor<'_>, entry: &FrameEntry, version: u8) -> Option<(Vec<Piece>, Layout)> {
    let frame_start = c.0.as_ptr() as usize;
    let n = usize::try_from(c.uvarint()?).ok()?;
    if n as u64 > entry.rows {
        return None;
    }
    let base = c.varint()?;
    let mut pieces = Vec::with_capacity(n);
    let (mut row, mut dods, mut mantissas, mut raw) = (entry.first_row, 0usize, 0usize, 0usize);
    for _ in 0..n {
        let rows = usize::try_from(c.uvarint()?).ok().filter(|&r| r > 0 && r as u64 <= entry.rows)?;
        let kind = *c.take(1)?.first()?;
        if kind != RAW && kind > crate::decimal::MAX_DIGITS {
            return None;
        }
        let t0 = base.wrapping_add(c.varint()?);
        let first_difference = if rows >= 2 { c.varint()? } else { 0 };
        let mut piece = Piece {
            first_row: row,
            rows,
            kind,
            t0,
            first_difference,
            exceptions: 0..0,
            dod_at: dods,
            mantissa_at: mantissas,
            raw_at: raw,
        };
        if kind == RAW {
            raw += rows;
        } else {
            let count = usize::try_from(c.uvarint()?).ok().filter(|&k| k <= rows)?;
            let start = c.0.as_ptr() as usize - frame_start;
            let mut at = -1i64;
            for _ in 0..count {
                let gap = c.uvarint()?;
                at = at.checked_add(i64::try_from(gap).ok().filter(|&g| g > 0)?)?;
                if at >= rows as i64 {
                    return None;
                }
            }
            piece.exceptions = start..c.0.as_ptr() as usize - frame_start;
            mantissas += rows;
            raw += count;
        }
        dods += rows.saturating_sub(2);
        row += rows as u64;
        pieces.push(piece);
    }
    if row != entry.first_row + entry.rows {
        return None;
    }
    let widths = c.take(2)?;
    let (dod_width, mantissa_width) = (widths[0], widths[1]);
    if dod_width > 8 || mantissa_width > 8 {
        return None;
    }
    let (dod_escapes, mantissa_escapes) = if version == VERSION_WITHOUT_ESCAPES {
        (Vec::new(), Vec::new())
    } else {
        (get_escapes(c, dods, dod_width)?, get_escapes(c, mantissas, mantissa_width)?)
    };
    let layout = Layout { dods, mantissas, raw, dod_width, mantissa_width, dod_escapes, mantissa_escapes };
    Some((pieces, layout))
}

/// A samples file's directory and trailer, for frames at (offset, compressed length, rows)
/// in `version`.
fn directory_and_trailer(directory: &[(u64, u64, u64)], version: u8) -> Vec<u8> {
    let mut dir = sealed_header(DIRECTORY_MAGIC, version);
    put_uvarint(&mut dir, directory.len() as u64);
    for &(offset, len, rows) in directory {
        put_uvarint(&mut dir, offset);
        put_uvarint(&mut dir, len);
        put_uvarint(&mut dir, rows);
    }
    seal(&mut dir);
    let dir_len = dir.len() as u64;
    dir.extend_from_slice(&dir_len.to_le_bytes());
    dir.extend_from_slice(MAGIC);
    dir
}

/// A samples file's frames and version, from its directory.
fn decode_directory(raw: &[u8], dir_at: u64) -> Option<(Vec<FrameEntry>, u8)> {
    let version = [VERSION, VERSION_WITHOUT_ESCAPES].into_iter().find(|&v| raw.get(4) == Some(&v))?;
    let mut c = crate::codec::open_sealed(raw, DIRECTORY_MAGIC, version)?;
    let n = usize::try_from(c.uvarint()?).ok()?;
    if n > c.remaining() {
        return None;
    }
    let mut frames = Vec::with_capacity(n);
    let (mut next_offset, mut first_row) = (5u64, 0u64);
    for _ in 0..n {
        let (offset, len, rows) = (c.uvarint()?, c.uvarint()?, c.uvarint()?);
        if offset != next_offset || rows == 0 || rows > FRAME_ROWS as u64 {
            return None;
        }
        next_offset = offset.checked_add(len)?;
        frames.push(FrameEntry { offset, len, first_row, rows });
        first_row += rows;
    }
    (c.is_empty() && next_offset == dir_at).then_some((frames, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, series: &[Vec<Sample>]) -> Vec<Range<u64>> {
        let mut w = FramesWriter::create(path).unwrap();
        let mut spans = Vec::new();
        let mut row = 0u64;
        for s in series {
            w.add(s).unwrap();
            spans.push(row..row + s.len() as u64);
            row += s.len() as u64;
        }
        w.finish().unwrap();
        spans
    }

    fn bits(samples: impl Iterator<Item = Sample>) -> Vec<(Timestamp, u64)> {
        samples.map(|s| (s.t, s.v.to_bits())).collect()
    }

    /// The samples of the `i`-th series read.
    fn got(read: &Decoded, i: usize) -> Vec<(Timestamp, u64)> {
        let rows = read.ranges[i].clone();
        read.t[rows.clone()].iter().zip(&read.v[rows]).map(|(&t, v)| (t, v.to_bits())).collect()
    }

    #[test]
    fn every_kind_of_series_reads_back_bit_for_bit_whole_and_in_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FRAMES_FILE);
        let steady: Vec<Sample> = (0..1000).map(|i| Sample { t: i * 15_000, v: i as f64 * 0.01 }).collect();
        let jittered: Vec<Sample> = (0..70_000i64)
            .map(|i| Sample {
                t: 1_700_000_000_000 + i * 15_000 + (i * 7919) % 23,
                v: if i % 500 == 250 { crate::stale_nan() } else { (i * 1_048_576) as f64 },
            })
            .collect();
        let floats: Vec<Sample> =
            (0..3000).map(|i| Sample { t: -5_000 + i * 10, v: (i as f64).sqrt() * -1e300 }).collect();
        let one = vec![Sample { t: 42, v: f64::INFINITY }];
        let two = vec![Sample { t: 1, v: -0.0 }, Sample { t: i64::MAX, v: 1.5 }];
        // mantissas beyond 2^51, converted one at a time
        let big: Vec<Sample> = (0..100).map(|i| Sample { t: i, v: (1u64 << 52) as f64 + i as f64 }).collect();
        let series = vec![steady, jittered, floats, one, two, big];
        let spans = write(&path, &series);
        let file = FramesFile::open(&path).unwrap();
        assert_eq!(file.rows(), series.iter().map(|s| s.len() as u64).sum::<u64>());
        assert!(file.frames.len() >= 3, "the long series spans frames");
        let all = file.read(&spans, i64::MIN, i64::MAX).unwrap();
        for (i, want) in series.iter().enumerate() {
            assert_eq!(got(&all, i), bits(want.iter().copied()));
        }
        // ranges cutting inside frames and pieces, and some series only
        for (lo, hi) in
            [(1_700_000_000_000 + 400_000_000, 1_700_000_000_000 + 700_000_000), (0, 20_000), (43, 43)]
        {
            let picked = [spans[1].clone(), spans[2].clone(), spans[4].clone()];
            let read = file.read(&picked, lo, hi).unwrap();
            for (i, want) in [&series[1], &series[2], &series[4]].iter().enumerate() {
                let want = want.iter().copied().filter(|s| s.t >= lo && s.t <= hi);
                assert_eq!(got(&read, i), bits(want), "range {lo}..={hi}");
            }
            // what the range leaves out of the series is not kept
            assert!(read.t.capacity() <= 2 * read.t.len().max(1), "range {lo}..={hi}");
        }
    }

    /// A pseudo-random number below its argument, the same sequence every run.
    fn below() -> impl FnMut(u64) -> u64 {
        let mut state = 0x5eed_u64;
        move |n: u64| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        }
    }

    /// Series like an exporter's counters: 300 of them, walking by uniform steps of 1 to 4
    /// bytes.
    fn exporter_like() -> Vec<Vec<Sample>> {
        let mut below = below();
        let steps = [50, 300, 2_000, 2_000_000, 1 << 30];
        (0..300)
            .map(|k| {
                let step = steps[k / 60];
                let mut v = below(1000) * step;
                (0..480)
                    .map(|i| {
                        v += below(step + 1);
                        Sample { t: 1_700_000_000_000 + i * 15_000, v: v as f64 }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn each_plane_is_a_zstd_frame_of_its_own_and_files_of_one_frame_a_frame_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FRAMES_FILE);
        let series = exporter_like();
        let spans = write(&path, &series);
        let planes = std::fs::read(&path).unwrap();
        let entries = FramesFile::open(&path).unwrap().frames;

        // the same frames, each compressed as one zstd frame
        let mut whole = planes[..5].to_vec();
        let mut directory = Vec::new();
        for e in &entries {
            let stored = &planes[e.offset as usize..(e.offset + e.len) as usize];
            let mut sections = 0;
            let mut rest = stored;
            while !rest.is_empty() {
                let n = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
                (sections, rest) = (sections + 1, &rest[n..]);
            }
            assert!(sections >= 3, "a header and at least two planes, not {sections} frames");
            let frame = zstd::stream::decode_all(stored).unwrap();
            let one = zstd::bulk::compress(&frame, ZSTD_LEVEL).unwrap();
            directory.push((whole.len() as u64, one.len() as u64, e.rows));
            whole.extend_from_slice(&one);
        }
        whole.extend(directory_and_trailer(&directory, VERSION));
        let whole_path = dir.path().join("one frame a frame");
        std::fs::write(&whole_path, &whole).unwrap();

        let read = FramesFile::open(&path).unwrap().read(&spans, i64::MIN, i64::MAX).unwrap();
        let read_whole = FramesFile::open(&whole_path).unwrap().read(&spans, i64::MIN, i64::MAX).unwrap();
        for (i, want) in series.iter().enumerate() {
            assert_eq!(got(&read, i), bits(want.iter().copied()));
            assert_eq!(got(&read_whole, i), bits(want.iter().copied()));
        }
        // what coding each plane on its own is for
        assert!(
            planes.len() * 100 < whole.len() * 97,
            "planes on their own {} bytes, one frame a frame {}",
            planes.len(),
            whole.len()
        );
    }

    /// Writes `series` in `version` and reads them back whole and in three ranges, checking
    /// every sample; the file's size.
    fn round_trip(path: &Path, series: &[Vec<Sample>], version: u8) -> usize {
        let mut w = FramesWriter::create_version(path, version).unwrap();
        let mut spans = Vec::new();
        for s in series {
            let first = spans.last().map_or(0, |r: &Range<u64>| r.end);
            w.add(s).unwrap();
            spans.push(first..first + s.len() as u64);
        }
        w.finish().unwrap();
        let file = FramesFile::open(path).unwrap();
        assert_eq!(file.version, version);
        let times: Vec<Timestamp> = series.iter().flatten().map(|s| s.t).collect();
        let (lo, hi) = (times.iter().min().copied().unwrap_or(0), times.iter().max().copied().unwrap_or(0));
        for (mint, maxt) in [(i64::MIN, i64::MAX), (lo + (hi - lo) / 3, hi - (hi - lo) / 4), (hi - 1, hi)] {
            let read = file.read(&spans, mint, maxt).unwrap();
            for (i, want) in series.iter().enumerate() {
                let want = want.iter().copied().filter(|s| s.t >= mint && s.t <= maxt);
                assert_eq!(got(&read, i), bits(want), "series {i} in {mint}..={maxt}, version {version}");
            }
        }
        std::fs::metadata(path).unwrap().len() as usize
    }

    #[test]
    fn escaped_resets_first_mantissas_and_missed_scrapes_read_back_and_take_fewer_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FRAMES_FILE);
        // counters of four-byte values growing by under a byte an interval that reset once in
        // 500 samples, with a scrape missed once in 1000 (a dod of a whole interval where
        // every other is 0)
        let mut below = below();
        let series: Vec<Vec<Sample>> = (0..300)
            .map(|k| {
                let mut v = below(1 << 32);
                (0..480)
                    .map(|i| {
                        v = if (i + 7 * k) % 500 == 499 { 0 } else { v + below(100) };
                        let t = 1_700_000_000_000 + 15_000 * (i + (i + 11 * k) / 1000) as i64;
                        Sample { t, v: v as f64 }
                    })
                    .collect()
            })
            .collect();
        let escaped = round_trip(&path, &series, VERSION);
        let frames = FramesFile::open(&path).unwrap();
        let mut cursor = frames.cursor().unwrap();
        cursor.seek(0).unwrap();
        let layout = &cursor.loaded.as_ref().unwrap().layout;
        assert!(!layout.mantissa_escapes.is_empty() && !layout.dod_escapes.is_empty());
        assert_eq!(layout.dod_width, 0, "the missed scrapes are escapes, the steady rest no plane");
        let plain = round_trip(&dir.path().join("version 1"), &series, VERSION_WITHOUT_ESCAPES);
        // 1.9 % fewer when measured
        assert!(escaped * 100 < plain * 99, "with escapes {escaped} bytes, without {plain}");
        // pieces of three rows, a third of whose mantissas are wide (too many to escape), and
        // values that need every byte
        let short: Vec<Vec<Sample>> = (0..500i64)
            .map(|k| (0..3).map(|i| Sample { t: k * 7 + i * i * 1000, v: (k << 40) as f64 * -1.5 }).collect())
            .collect();
        round_trip(&path, &short, VERSION);
        let scattered = |i: i64| ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 12) as f64;
        let wide: Vec<Vec<Sample>> = vec![(0..5000).map(|i| Sample { t: i * i, v: scattered(i) }).collect()];
        round_trip(&path, &wide, VERSION);
    }

    #[test]
    fn width_and_escapes_leave_at_most_one_entry_in_200_wider_than_the_planes() {
        let mut values = vec![3u64; 1000];
        assert_eq!(width_and_escapes(&values), (1, vec![]));
        for (k, v) in [(10, 1 << 20), (20, 1 << 40), (30, 1 << 20), (40, 300), (50, 70_000)] {
            values[k] = v;
        }
        // five entries allowed: all of them escapes, their bits above one byte kept
        let want = vec![(10, 1 << 12), (20, 1 << 32), (30, 1 << 12), (40, 1), (50, 273)];
        assert_eq!(width_and_escapes(&values), (1, want));
        values[60] = 1 << 16;
        // six wider than a byte: the planes take two, and the five wider than that escape
        let want = vec![(10, 1 << 4), (20, 1 << 24), (30, 1 << 4), (50, 1), (60, 1)];
        assert_eq!(width_and_escapes(&values), (2, want));
        assert_eq!(width_and_escapes(&[0; 100]), (0, vec![]));
        assert_eq!(width_and_escapes(&[u64::MAX; 10]), (8, vec![]));
    }

    #[test]
    fn timestamps_out_of_order_fail_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FRAMES_FILE);
        let series = |ts: &[Timestamp]| -> Vec<Sample> { ts.iter().map(|&t| Sample { t, v: 1.0 }).collect() };
        let steady_down = series(&[30, 20, 10, 0]);
        let jittered = series(&[0, 10, 25, 24, 40]);
        let wrapping = series(&[i64::MAX - 20, i64::MAX - 10, i64::MAX, i64::MIN + 9]);
        let equal = series(&[5, 5, 5]);
        for (samples, ordered) in [(steady_down, false), (jittered, false), (wrapping, false), (equal, true)]
        {
            let spans = write(&path, std::slice::from_ref(&samples));
            let read = FramesFile::open(&path).unwrap().read(&spans, i64::MIN, i64::MAX);
            assert_eq!(read.is_ok(), ordered, "{samples:?}");
        }
    }

    #[test]
    fn a_damaged_file_fails_its_read_and_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FRAMES_FILE);
        let series: Vec<Vec<Sample>> = (0..20)
            .map(|k| (0..3000).map(|i| Sample { t: i * 1000 + k, v: (i * k) as f64 * 0.5 }).collect())
            .collect();
        let spans = write(&path, &series);
        let pristine = std::fs::read(&path).unwrap();
        let mut failed = 0;
        for at in (0..pristine.len()).step_by(7) {
            let mut damaged = pristine.clone();
            damaged[at] ^= 0x5a;
            std::fs::write(&path, &damaged).unwrap();
            let read = FramesFile::open(&path).and_then(|f| f.read(&spans, i64::MIN, i64::MAX));
            failed += usize::from(read.is_err());
        }
        assert!(failed > 0);
    }
}
