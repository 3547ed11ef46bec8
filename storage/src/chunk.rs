//! Gorilla-style compressed chunks of float samples, in two codings of the values:
//!
//! * **XOR**: Prometheus's XOR chunks, byte for byte (`tests/it/remote_read.rs` compares
//!   streamed remote-read answers with Prometheus 2.42's): each value XOR-ed with the one
//!   before. [`encode_xor_chunk`] and [`decode_xor_chunk`] make and read these.
//! * **Decimal**: the head's own chunks, where a series' values are decimal numbers (what
//!   exporters write: CPU seconds in 0.01 steps, byte counts, integer counters). Each value is
//!   an integer mantissa at the chunk's decimal places (see [`crate::decimal`]), written as its
//!   difference from the one before in a variable-width field. On node_exporter-like values
//!   this takes from a third of XOR's bytes (CPU seconds) to nine tenths (large integers that
//!   move by a lot); a head holds an open chunk per series, so its bytes count a million
//!   times.
//!
//! Layout of a chunk's bytes:
//!
//! * header, 2 bytes: for XOR, the number of samples, big endian; for decimal, a byte with
//!   the top bit set and the first sample's decimal places in the low four bits, then the
//!   number of samples (head chunks hold at most [`MAX_SAMPLES_PER_CHUNK`], so a head XOR
//!   chunk's first byte is 0);
//! * sample 0: timestamp as a zigzag varint, value as 64 raw bits (XOR) or as a difference
//!   from 0 (decimal);
//! * sample 1: timestamp delta (wrapping `u64`) as a varint, value coded;
//! * sample n ≥ 2: delta-of-delta in a variable-width bucket, value coded.
//!
//! A decimal value is its mantissa's difference from the one before, zigzagged, as one of:
//!
//! * `0`: no difference;
//! * `10` and the difference in the width the last `110` set (the chunk's current width);
//! * `110`, a new width in 6 bits (64 as 0), and the difference in that width: written when
//!   the difference does not fit the current width, or leaves more than 7 of its bits unused
//!   (what the new width's 7 more bits of prefix cost);
//! * `111`, an escape, then `0` and the value's 64 raw bits (a value no mantissa at the
//!   chunk's places reproduces: NaN, the staleness marker, a full-precision float), or `1`,
//!   4 bits of new decimal places, and the value coded at those places (the previous mantissa
//!   is scaled to them first; the code is not another escape).
//!
//! Like XOR's window of meaningful bits, the current width follows what a series' values do,
//! at 2 bits of prefix a value.
//!
//! Every varint and bit field is written into one MSB-first bit stream. Deltas use wrapping
//! arithmetic, so any increasing sequence of `i64` timestamps (even `i64::MIN` followed by
//! `i64::MAX`) round-trips exactly; values round-trip bit for bit, so NaN payloads (the
//! staleness marker among them), `-0.0` and infinities survive unchanged.
//!
//! Decoding never panics: a malformed chunk simply ends its iteration early.

use crate::codec::{unzigzag, zigzag, Cursor};
use crate::decimal;
use crate::{Sample, Timestamp};

/// At most this many samples go into one chunk, as in Prometheus.
pub(crate) const MAX_SAMPLES_PER_CHUNK: usize = 120;

/// Bytes before the first sample: the sample count.
const HEADER_LEN: usize = 2;

/// Bytes one sample can add at most: a 64-bit delta of delta behind its 4-bit prefix, and a
/// value XOR with its 13-bit window header and 64 bits (or a first sample's varint and raw
/// value), plus the partial byte before them.
const MAX_SAMPLE_BYTES: usize = 20;

/// A head chunk is full once it takes this many bytes, or holds [`MAX_SAMPLES_PER_CHUNK`]
/// samples. Every head series keeps its open chunk on the heap and its full ones in files,
/// so this bounds the heap a series' samples take: with room for one more sample, a chunk's
/// buffer fits glibc's 96-byte allocation. (About 30 samples of a moving gauge; a counter
/// that moves in steps fills 120 first.)
pub(crate) const MAX_CHUNK_BYTES: usize = 64;

/// A new chunk's room: the header and the first two samples at their largest (glibc gives a
/// 32-byte request the same 48-byte chunk).
const FIRST_CAPACITY: usize = HEADER_LEN + 2 * MAX_SAMPLE_BYTES;

/// Samples a chunk holds before its size per sample is taken as a guide (the second sample
/// carries a whole time delta, which would skew a guess from fewer).
const SAMPLES_TO_GUESS: usize = 16;

/// Delta-of-delta buckets: (prefix bits, prefix length, payload width). The last bucket holds
/// any `i64` so that wrapping deltas always fit.
const DOD_BUCKETS: [(u64, u32, u32); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

/// The ones that start an escape in a decimal chunk's value code; fewer ones are followed by
/// a zero.
const DECIMAL_ESCAPE_ONES: u32 = 3;

/// Unused bits of the current width worth a new width: the new width's prefix and length
/// take 7 more bits than the current width's prefix.
const DECIMAL_WIDTH_SLACK: u32 = 7;

/// The top bit of a decimal chunk's first byte.
const DECIMAL_FLAG: u8 = 0x80;

/// An MSB-first bit stream writer.
#[derive(Debug, Default)]
pub(crate) struct BitWriter {
    buf: Vec<u8>,
    /// Unused low bits of the last byte of `buf`.
    free: u32,
}

impl BitWriter {
    pub(crate) fn write_bit(&mut self, bit: bool) {
        self.write_bits(bit as u64, 1);
    }

    /// The bytes written so far, to patch a header in.
    pub(crate) fn buf_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// The bytes written.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Writes the low `n` (≤ 64) bits of `v`, most significant first.
    pub(crate) fn write_bits(&mut self, v: u64, mut n: u32) {
        while n > 0 {
            if self.free == 0 {
                self.buf.push(0);
                self.free = 8;
            }
            let take = n.min(self.free);
            let shift = n - take;
            let bits = ((v >> shift) & ((1u64 << take) - 1)) as u8;
            if let Some(last) = self.buf.last_mut() {
                *last |= bits << (self.free - take);
            }
            self.free -= take;
            n -= take;
        }
    }

    fn write_uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.write_bits((v as u8 | 0x80) as u64, 8);
            v >>= 7;
        }
        self.write_bits(v, 8);
    }
}

/// An MSB-first bit stream reader; every read returns `None` past the end.
#[derive(Clone, Debug)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the start of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    pub(crate) fn read_bit(&mut self) -> Option<bool> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(bit == 1)
    }

    /// The next `n` (≤ 64) bits. They span at most 9 bytes from the current one, so one
    /// big-endian load of 16 bytes holds them all: shifted left past the bits already read,
    /// then right to keep the top `n`. (Decoding is the hot loop of every query, and a loop
    /// per byte cost it a branch and a shift per byte.)
    pub(crate) fn read_bits(&mut self, n: u32) -> Option<u64> {
        debug_assert!(n <= 64);
        let end = self.pos + n as usize;
        if end > self.data.len() * 8 {
            return None;
        }
        if n == 0 {
            return Some(0);
        }
        let first = self.pos / 8;
        let window = match self.data.get(first..first + 16) {
            Some(bytes) => u128::from_be_bytes(bytes.try_into().ok()?),
            // near the end: the bytes that are left, zero-padded
            None => {
                let mut bytes = [0u8; 16];
                let left = &self.data[first..];
                bytes[..left.len()].copy_from_slice(left);
                u128::from_be_bytes(bytes)
            }
        };
        let out = (window << (self.pos % 8)) >> (128 - n);
        self.pos = end;
        Some(out as u64)
    }

    fn read_uvarint(&mut self) -> Option<u64> {
        let mut out: u64 = 0;
        for i in 0..10 {
            let b = self.read_bits(8)?;
            out |= (b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(out);
            }
        }
        None
    }
}

/// Whether `v` fits in an `n`-bit two's complement field.
/// Whether a delta-of-delta goes into an `n`-bit bucket: Prometheus's range,
/// `-(2^(n-1) - 1) ..= 2^(n-1)` (one more positive value than two's complement has, one less
/// negative), which the chunks must share to be Prometheus's bytes.
pub(crate) fn fits_signed(v: i64, n: u32) -> bool {
    let lim = 1i64 << (n - 1);
    -(lim - 1) <= v && v <= lim
}

/// The delta-of-delta an `n`-bit bucket holds (the inverse of [`fits_signed`]'s range).
pub(crate) fn from_bucket(v: u64, n: u32) -> i64 {
    if v > 1 << (n - 1) {
        v as i64 - (1i64 << n)
    } else {
        v as i64
    }
}

/// Writes the bits of a value `new` XOR-ed with the previous value `old`: a zero bit when
/// they are equal, else the meaningful bits, in the window of leading and trailing zeros of
/// the last explicitly sized XOR (`leading == 0xff`: none yet) when they fit in it, else in a
/// new window, which the caller keeps.
pub(crate) fn xor_write(
    w: &mut BitWriter,
    new: u64,
    old: u64,
    window_leading: &mut u8,
    window_trailing: &mut u8,
) {
    let xor = new ^ old;
    if xor == 0 {
        w.write_bit(false);
        return;
    }
    w.write_bit(true);
    // 5 bits hold the leading count, so cap it at 31
    let leading = xor.leading_zeros().min(31) as u8;
    let trailing = xor.trailing_zeros() as u8;
    if *window_leading != 0xff && leading >= *window_leading && trailing >= *window_trailing {
        // the meaningful bits fit in the previous window: reuse it
        w.write_bit(false);
        let sig = 64 - *window_leading as u32 - *window_trailing as u32;
        w.write_bits(xor >> *window_trailing, sig);
    } else {
        w.write_bit(true);
        let sig = 64 - leading as u32 - trailing as u32;
        w.write_bits(leading as u64, 5);
        // sig is 1..=64; 64 is stored as 0 in 6 bits
        w.write_bits((sig & 63) as u64, 6);
        w.write_bits(xor >> trailing, sig);
        *window_leading = leading;
        *window_trailing = trailing;
    }
}

/// Reads what [`xor_write`] wrote into `value` (the previous value's bits), keeping the
/// window it describes; `None` past the end, for a window that does not fit in 64 bits, or
/// for a reuse of the window before any (`leading == 0xff`).
#[inline]
pub(crate) fn xor_read(
    r: &mut BitReader<'_>,
    value: &mut u64,
    window_leading: &mut u8,
    window_trailing: &mut u8,
) -> Option<()> {
    if !r.read_bit()? {
        return Some(());
    }
    if r.read_bit()? {
        let leading = r.read_bits(5)? as u8;
        // 64 significant bits are stored as 0
        let sig = match r.read_bits(6)? as u8 {
            0 => 64,
            s => s,
        };
        *window_trailing = 64u8.checked_sub(leading)?.checked_sub(sig)?;
        *window_leading = leading;
    } else if *window_leading == 0xff {
        return None;
    }
    // leading ≤ 31, so at least one significant bit and a shift below 64
    let sig = 64 - u32::from(*window_leading) - u32::from(*window_trailing);
    *value ^= r.read_bits(sig)? << *window_trailing;
    Some(())
}

/// Encodes samples (in time order; at most `u16::MAX`, the rest is left out) as one chunk,
/// byte for byte a Prometheus XOR chunk: what streamed remote read answers carry.
pub fn encode_xor_chunk(samples: impl IntoIterator<Item = (Timestamp, f64)>) -> Vec<u8> {
    let mut c = OpenChunk::xor();
    for (t, v) in samples.into_iter().take(usize::from(u16::MAX)) {
        c.append(t, v);
    }
    c.buf
}

/// Decodes a Prometheus XOR chunk; `None` when it is torn or malformed.
pub fn decode_xor_chunk(data: &[u8]) -> Option<Vec<(Timestamp, f64)>> {
    if data.len() < HEADER_LEN {
        return None;
    }
    let out: Vec<(Timestamp, f64)> = ChunkIter::xor(data).map(|s| (s.t, s.v)).collect();
    (out.len() == xor_sample_count(data)).then_some(out)
}

/// How an open chunk writes its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    /// No sample yet: the first decides. `xor` when the chunk before found too few decimal
    /// values to be worth trying.
    Unset { xor: bool },
    /// Each value XOR-ed with the one before, in the window of leading and trailing zeros of
    /// the last explicitly sized XOR (`leading == 0xff`: none yet).
    Xor { leading: u8, trailing: u8 },
    /// Decimal mantissas at `digits` places, their differences in `width` bits (0: none
    /// yet); `escapes` counts the values written raw.
    Decimal { digits: u8, width: u8, escapes: u8 },
}

#[derive(Debug)]
pub(crate) struct OpenChunk {
    /// The bytes written.
    buf: Vec<u8>,
    /// Unused low bits of the last byte of `buf`. (Kept here rather than in a [`BitWriter`],
    /// whose padding would take 8 bytes of every head series: an append lends both to one.)
    free: u8,
    num: u16,
    /// The newest timestamp. (The oldest is read from the bytes, where the first sample
    /// starts: a head series holds an open chunk, so each field counts a million times.)
    t: Timestamp,
    delta: u64,
    /// The newest value's bits (XOR), or the newest mantissa (decimal).
    v: u64,
    coding: Coding,
}

impl Default for OpenChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenChunk {
    /// An empty head chunk: decimal when its first value is a decimal number, else XOR.
    pub(crate) fn new() -> Self {
        Self::with_capacity(FIRST_CAPACITY, Coding::Unset { xor: false })
    }

    /// An empty XOR chunk: Prometheus's bytes.
    fn xor() -> Self {
        Self::with_capacity(FIRST_CAPACITY, Coding::Xor { leading: 0xff, trailing: 0 })
    }

    /// An empty chunk with room for `bytes` bytes.
    fn with_capacity(bytes: usize, coding: Coding) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(HEADER_LEN));
        buf.extend_from_slice(&[0; HEADER_LEN]);
        OpenChunk { buf, free: 0, num: 0, t: 0, delta: 0, v: 0, coding }
    }

    /// An empty chunk to follow this one, with room for as many bytes as this one took (at
    /// most a full chunk's): a series' chunks are much alike, so the next one is allocated
    /// once. It tries the decimal
    /// coding again unless more than a quarter of this one's values had to be written raw.
    pub(crate) fn successor(&self) -> Self {
        let xor = match self.coding {
            Coding::Decimal { escapes, .. } => usize::from(escapes) > self.len() / 4,
            _ => false,
        };
        Self::with_capacity(self.buf.len().min(MAX_CHUNK_BYTES) + MAX_SAMPLE_BYTES, Coding::Unset { xor })
    }

    /// Samples in the chunk.
    pub(crate) fn len(&self) -> usize {
        self.num as usize
    }

    /// Whether the chunk holds no sample.
    pub(crate) fn is_empty(&self) -> bool {
        self.num == 0
    }

    /// Whether the chunk has reached [`MAX_SAMPLES_PER_CHUNK`] or [`MAX_CHUNK_BYTES`].
    pub(crate) fn is_full(&self) -> bool {
        self.len() >= MAX_SAMPLES_PER_CHUNK || self.buf.len() >= MAX_CHUNK_BYTES
    }

    /// Oldest timestamp (meaningless when empty).
    pub(crate) fn min_t(&self) -> Timestamp {
        // the first timestamp is a varint right after the header, on a byte boundary
        self.buf.get(HEADER_LEN..).and_then(|first| Cursor(first).uvarint()).map_or(0, unzigzag)
    }

    /// Newest timestamp (meaningless when empty).
    pub(crate) fn max_t(&self) -> Timestamp {
        self.t
    }

    /// Appends a sample. The caller guarantees `t` is greater than the last timestamp and
    /// that the chunk is not full; a violation corrupts nothing but the timestamps read back.
    pub(crate) fn append(&mut self, t: Timestamp, v: f64) {
        self.make_room();
        let mut w = BitWriter { buf: std::mem::take(&mut self.buf), free: u32::from(self.free) };
        if let Coding::Unset { xor } = self.coding {
            self.coding = match decimal::digits_of(v).filter(|_| !xor) {
                Some(digits) => {
                    w.buf[0] = DECIMAL_FLAG | digits;
                    Coding::Decimal { digits, width: 0, escapes: 0 }
                }
                None => Coding::Xor { leading: 0xff, trailing: 0 },
            };
        }
        match self.num {
            0 => w.write_uvarint(zigzag(t)),
            1 => {
                let delta = t.wrapping_sub(self.t) as u64;
                w.write_uvarint(delta);
                self.delta = delta;
            }
            _ => {
                let delta = t.wrapping_sub(self.t) as u64;
                let dod = (delta as i64).wrapping_sub(self.delta as i64);
                if dod == 0 {
                    w.write_bit(false);
                } else if let Some(&(prefix, plen, width)) =
                    DOD_BUCKETS.iter().find(|(_, _, width)| fits_signed(dod, *width))
                {
                    w.write_bits(prefix, plen);
                    w.write_bits(dod as u64, width);
                } else {
                    w.write_bits(0b1111, 4);
                    w.write_bits(dod as u64, 64);
                }
                self.delta = delta;
            }
        }
        self.write_value(&mut w, v);
        self.t = t;
        self.num = self.num.saturating_add(1);
        match self.coding {
            // head chunks hold at most MAX_SAMPLES_PER_CHUNK samples, well below 256
            Coding::Decimal { .. } => w.buf[1] = self.num.min(u16::from(u8::MAX)) as u8,
            _ => w.buf[..HEADER_LEN].copy_from_slice(&self.num.to_be_bytes()),
        }
        // a bit writer leaves fewer than 8 bits of a byte free
        (self.buf, self.free) = (w.buf, w.free as u8);
    }

    /// Makes room for one more sample. The buffer grows once to what the whole chunk will
    /// likely take, judging by the samples so far, rather than doubling: a head whose series
    /// fill their chunks in step would otherwise leave each series' outgrown buffers of every
    /// size behind, which the allocator cannot merge, as they lie between live ones (half a
    /// kilobyte a series at two hours of samples).
    fn make_room(&mut self) {
        let (len, room) = (self.buf.len(), self.buf.capacity() - self.buf.len());
        if room >= MAX_SAMPLE_BYTES {
            return;
        }
        let n = self.num as usize;
        let guess = if n < SAMPLES_TO_GUESS {
            len
        } else {
            // bytes per sample after the first (whose whole value would skew the guess)
            let first_end = HEADER_LEN + crate::codec::uvarint_len(zigzag(self.min_t())) + 8;
            let samples_left = if n < MAX_SAMPLES_PER_CHUNK { MAX_SAMPLES_PER_CHUNK - n } else { n };
            // a sixteenth more than the samples so far take on average
            len.saturating_sub(first_end) * samples_left * 17 / (16 * (n - 1)) + MAX_SAMPLE_BYTES
        };
        // a head chunk is full at MAX_CHUNK_BYTES, whatever its samples would take (a chunk
        // past that is no head chunk: it grows by its guess)
        let more =
            if len < MAX_CHUNK_BYTES { guess.min(MAX_CHUNK_BYTES + MAX_SAMPLE_BYTES - len) } else { guess };
        self.buf.reserve_exact(more.max(MAX_SAMPLE_BYTES));
    }

    fn write_value(&mut self, w: &mut BitWriter, v: f64) {
        let vb = v.to_bits();
        match &mut self.coding {
            Coding::Xor { leading, trailing } => {
                if self.num == 0 {
                    w.write_bits(vb, 64);
                } else {
                    xor_write(w, vb, self.v, leading, trailing);
                }
                self.v = vb;
            }
            Coding::Decimal { digits, width, escapes } => {
                let last = self.v as i64;
                if let Some(m) = decimal::mantissa(v, *digits) {
                    write_mantissa_delta(w, m.wrapping_sub(last), width);
                    self.v = m as u64;
                } else if let Some((wider, m, scaled)) = widen(v, *digits, last) {
                    w.write_bits(u64::MAX, DECIMAL_ESCAPE_ONES);
                    w.write_bit(true);
                    w.write_bits(u64::from(wider), 4);
                    write_mantissa_delta(w, m.wrapping_sub(scaled), width);
                    *digits = wider;
                    self.v = m as u64;
                } else {
                    // the newest mantissa stays what the next value's difference is from
                    w.write_bits(u64::MAX, DECIMAL_ESCAPE_ONES);
                    w.write_bit(false);
                    w.write_bits(vb, 64);
                    *escapes = escapes.saturating_add(1);
                }
            }
            Coding::Unset { .. } => unreachable!("the first append sets the coding"),
        }
    }

    /// The encoded bytes so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Decodes the samples.
    pub(crate) fn iter(&self) -> ChunkIter<'_> {
        ChunkIter::new(self.bytes())
    }
}

/// Writes a decimal chunk's mantissa difference: one `0` bit for none, else its zigzagged
/// bits in the current `width`, or in a new one that it sets.
fn write_mantissa_delta(w: &mut BitWriter, delta: i64, width: &mut u8) {
    let zz = zigzag(delta);
    if zz == 0 {
        w.write_bit(false);
        return;
    }
    let len = 64 - zz.leading_zeros();
    let current = u32::from(*width);
    if len <= current && current - len <= DECIMAL_WIDTH_SLACK {
        w.write_bits(0b10, 2);
        w.write_bits(zz, current);
    } else {
        w.write_bits(0b110, 3);
        // 64 is stored as 0
        w.write_bits(u64::from(len & 63), 6);
        w.write_bits(zz, len);
        *width = len as u8;
    }
}

/// Reads a decimal value's prefix: the ones before its zero (which it consumes), or
/// [`DECIMAL_ESCAPE_ONES`] for an escape.
#[inline]
fn read_ones(r: &mut BitReader<'_>) -> Option<u32> {
    let mut ones = 0;
    while ones < DECIMAL_ESCAPE_ONES && r.read_bit()? {
        ones += 1;
    }
    Some(ones)
}

/// For a value `v` that no mantissa at `digits` places reproduces: the fewest places above
/// `digits` that do, its mantissa there, and the newest mantissa `last` scaled to them, if
/// there are such places and the scaled mantissa fits.
fn widen(v: f64, digits: u8, last: i64) -> Option<(u8, i64, i64)> {
    let (wider, m) = decimal::fewest_places(v, digits + 1..=decimal::MAX_DIGITS)?;
    let scaled = last.checked_mul(decimal::pow10_int(wider - digits))?;
    // the difference must not wrap, or the reader could not tell it from another
    m.checked_sub(scaled)?;
    Some((wider, m, scaled))
}

/// Samples in an XOR chunk's header.
fn xor_sample_count(data: &[u8]) -> usize {
    match data {
        [a, b, ..] => u16::from_be_bytes([*a, *b]) as usize,
        _ => 0,
    }
}

/// Samples in a head chunk's header, of either coding.
fn sample_count(data: &[u8]) -> usize {
    match data {
        [a, b, ..] if a & DECIMAL_FLAG != 0 => usize::from(*b),
        _ => xor_sample_count(data),
    }
}

/// How a chunk's values are read back.
#[derive(Clone, Copy, Debug)]
enum ValueReader {
    /// XOR: the previous value's bits and the window of its XOR.
    Xor { v: u64, leading: u8, trailing: u8 },
    /// Decimal: the newest mantissa, `10^digits` to divide it by, and the current width of
    /// the differences.
    Decimal { mantissa: i64, digits: u8, divisor: f64, width: u32 },
}

impl ValueReader {
    fn decimal(digits: u8) -> Self {
        ValueReader::Decimal { mantissa: 0, digits, divisor: decimal::pow10(digits), width: 0 }
    }
}

/// Decodes a chunk's samples in order; stops early on malformed data.
#[derive(Clone, Debug)]
pub(crate) struct ChunkIter<'a> {
    r: BitReader<'a>,
    remaining: usize,
    read: usize,
    t: Timestamp,
    delta: u64,
    values: ValueReader,
}

impl<'a> ChunkIter<'a> {
    /// Iterates the samples of a head chunk's bytes, of either coding.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        match data.first() {
            Some(&first) if first & DECIMAL_FLAG != 0 => {
                Self::with_values(data, sample_count(data), ValueReader::decimal(first & 0x0f))
            }
            _ => Self::xor(data),
        }
    }

    /// Iterates the samples of XOR chunk bytes, Prometheus's, whatever their first byte.
    fn xor(data: &'a [u8]) -> Self {
        Self::with_values(data, xor_sample_count(data), ValueReader::Xor { v: 0, leading: 0, trailing: 0 })
    }

    fn with_values(data: &'a [u8], remaining: usize, values: ValueReader) -> Self {
        ChunkIter { r: BitReader { data, pos: HEADER_LEN * 8 }, remaining, read: 0, t: 0, delta: 0, values }
    }

    fn decode(&mut self) -> Option<Sample> {
        match self.read {
            0 => self.t = unzigzag(self.r.read_uvarint()?),
            1 => {
                self.delta = self.r.read_uvarint()?;
                self.t = self.t.wrapping_add(self.delta as i64);
            }
            _ => {
                let mut prefix_len = 0;
                while prefix_len < 4 && self.r.read_bit()? {
                    prefix_len += 1;
                }
                let dod = match prefix_len {
                    0 => 0,
                    4 => self.r.read_bits(64)? as i64,
                    n => {
                        let width = DOD_BUCKETS[n - 1].2;
                        from_bucket(self.r.read_bits(width)?, width)
                    }
                };
                self.delta = (self.delta as i64).wrapping_add(dod) as u64;
                self.t = self.t.wrapping_add(self.delta as i64);
            }
        }
        let v = self.read_value()?;
        self.read += 1;
        Some(Sample { t: self.t, v })
    }

    fn read_value(&mut self) -> Option<f64> {
        match &mut self.values {
            ValueReader::Xor { v, leading, trailing } => {
                if self.read == 0 {
                    *v = self.r.read_bits(64)?;
                } else {
                    // the window starts at 0/0: a reuse before any explicit window reads 64
                    // bits of garbage, which only malformed input produces
                    xor_read(&mut self.r, v, leading, trailing)?;
                }
                Some(f64::from_bits(*v))
            }
            ValueReader::Decimal { mantissa, digits, divisor, width } => {
                let mut ones = read_ones(&mut self.r)?;
                if ones == DECIMAL_ESCAPE_ONES {
                    if !self.r.read_bit()? {
                        // written raw; the newest mantissa stays
                        return Some(f64::from_bits(self.r.read_bits(64)?));
                    }
                    let wider = self.r.read_bits(4)? as u8;
                    *mantissa = mantissa.wrapping_mul(decimal::pow10_int(wider.checked_sub(*digits)?));
                    *digits = wider;
                    *divisor = decimal::pow10(wider);
                    ones = read_ones(&mut self.r)?;
                    if ones == DECIMAL_ESCAPE_ONES {
                        return None;
                    }
                }
                if ones == 2 {
                    *width = match self.r.read_bits(6)? as u32 {
                        0 => 64,
                        w => w,
                    };
                }
                if ones > 0 {
                    // a width-reuse before any width (0) reads nothing: only malformed input
                    *mantissa = mantissa.wrapping_add(unzigzag(self.r.read_bits(*width)?));
                }
                Some(*mantissa as f64 / *divisor)
            }
        }
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.read >= self.remaining {
            return None;
        }
        match self.decode() {
            Some(s) => Some(s),
            None => {
                // malformed: end the iteration rather than return garbage forever
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining.saturating_sub(self.read)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::STALE_NAN_BITS;

    /// xorshift64*: a tiny deterministic PRNG for property-style tests.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn bit_fields_of_every_width_read_back_at_every_offset_and_none_past_the_end() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let fields: Vec<(u64, u32)> = (0..5_000)
            .map(|_| {
                let n = rng.below(65) as u32;
                let v = if n == 64 { rng.next() } else { rng.next() & ((1u64 << n) - 1) };
                (v, n)
            })
            .collect();
        let mut w = BitWriter::default();
        for &(v, n) in &fields {
            w.write_bits(v, n);
        }
        let total: usize = fields.iter().map(|&(_, n)| n as usize).sum();
        let mut r = BitReader { data: &w.buf, pos: 0 };
        for &(v, n) in &fields {
            assert_eq!(r.read_bits(n), Some(v), "{n} bits at bit {}", r.pos);
        }
        // what is left of the last byte, and nothing more
        let left = (w.buf.len() * 8 - total) as u32;
        assert_eq!(r.read_bits(left), Some(0));
        assert_eq!(r.read_bits(1), None);
        assert_eq!(r.read_bit(), None);
    }

    fn round_trip(samples: &[(i64, u64)]) {
        let mut c = OpenChunk::new();
        for &(t, v) in samples {
            c.append(t, f64::from_bits(v));
        }
        assert_eq!(c.len(), samples.len());
        let got: Vec<(i64, u64)> = c.iter().map(|s| (s.t, s.v.to_bits())).collect();
        assert_eq!(got, samples, "open chunk");
        assert_eq!(sample_count(c.bytes()), samples.len());
        let got: Vec<(i64, u64)> = ChunkIter::new(c.bytes()).map(|s| (s.t, s.v.to_bits())).collect();
        assert_eq!(got, samples, "chunk bytes");
        if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
            assert_eq!(c.min_t(), first.0);
            assert_eq!(c.max_t(), last.0);
        }
    }

    #[test]
    fn bucket_edges_use_prometheus_ranges_and_round_trip() {
        // 14-bit bucket: -8191..=8192; 17-bit: -65535..=65536; 20-bit: -524287..=524288
        assert!(fits_signed(8192, 14) && !fits_signed(-8192, 14) && fits_signed(-8191, 14));
        assert!(fits_signed(65536, 17) && !fits_signed(-65536, 17));
        for n in [14, 17, 20] {
            for v in [-(1i64 << (n - 1)) + 1, -1, 0, 1, 1i64 << (n - 1)] {
                assert_eq!(from_bucket((v as u64) & ((1 << n) - 1), n), v, "{v} in {n} bits");
            }
        }
        let mut t = 1_000_000i64;
        let mut delta = 20_000i64;
        let mut samples = vec![(t, 1.0)];
        for dod in [0i64, 8192, -8192, 8191, -8191, 65536, -65536, 524288, -524288, 1 << 40] {
            delta += dod;
            t += delta;
            samples.push((t, dod as f64));
        }
        let data = encode_xor_chunk(samples.iter().copied());
        let back = decode_xor_chunk(&data).unwrap();
        assert_eq!(back, samples);
        assert_eq!(decode_xor_chunk(&data[..data.len() - 3]), None, "a torn chunk");
        assert_eq!(decode_xor_chunk(&[0]), None);
    }

    #[test]
    fn empty_chunk_yields_nothing() {
        let c = OpenChunk::new();
        assert!(c.is_empty());
        assert_eq!(c.iter().count(), 0);
    }

    #[test]
    fn regular_scrape_series() {
        let s: Vec<(i64, u64)> =
            (0..120).map(|i| (1_700_000_000_000 + i * 15_000, (i as f64 * 1.5).to_bits())).collect();
        round_trip(&s);
    }

    #[test]
    fn special_values() {
        let vals = [
            STALE_NAN_BITS,
            f64::NAN.to_bits(),
            0x7ff8_dead_beef_0001,
            0xfff0_0000_0000_0001,
            (-0.0f64).to_bits(),
            0.0f64.to_bits(),
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            f64::MIN_POSITIVE.to_bits(),
            1,
            u64::MAX,
            f64::MAX.to_bits(),
            STALE_NAN_BITS,
            STALE_NAN_BITS,
        ];
        let s: Vec<(i64, u64)> = vals.iter().enumerate().map(|(i, &v)| (i as i64 * 1000, v)).collect();
        round_trip(&s);
    }

    #[test]
    fn extreme_timestamps() {
        round_trip(&[(i64::MIN, 1), (i64::MAX, 2)]);
        round_trip(&[(i64::MIN, 1), (i64::MIN + 1, 2), (i64::MAX - 1, 3), (i64::MAX, 4)]);
        round_trip(&[(-5, 1), (0, 1), (1 << 40, 1), ((1 << 40) + 1, 1), (i64::MAX, 0)]);
        round_trip(&[(i64::MAX, 7)]);
    }

    /// A head chunk's buffer ends within a sample of the chunk's size, never past a full
    /// chunk's, and the chunk that follows it, fed alike, is allocated once and never grows.
    /// A chunk past a head chunk's size (a remote-read answer's) grows by its guess.
    #[test]
    fn buffers_are_sized_by_what_the_series_writes() {
        let sample = |k: i64| (1_790_000_000_000 + k * 15_000, (k * 7919 % 1000) as f64 * 1.5);
        let fill = |c: &mut OpenChunk, from: i64| -> usize {
            let mut grown = 0;
            let mut k = from;
            while !c.is_full() {
                let room = c.buf.capacity();
                let (t, v) = sample(k);
                c.append(t, v);
                grown += usize::from(c.buf.capacity() != room);
                k += 1;
            }
            grown
        };
        let mut first = OpenChunk::new();
        let mut k = 0;
        while !first.is_full() {
            let (t, v) = sample(k);
            first.append(t, v);
            assert!(
                first.buf.capacity() <= MAX_CHUNK_BYTES + MAX_SAMPLE_BYTES,
                "{} after {k}",
                first.buf.capacity()
            );
            k += 1;
        }
        let (len, capacity) = (first.bytes().len(), first.buf.capacity());
        assert!(len >= MAX_CHUNK_BYTES, "{len} bytes: the values must take room");
        assert!(first.len() < MAX_SAMPLES_PER_CHUNK, "{} samples", first.len());
        assert!(capacity <= MAX_CHUNK_BYTES + MAX_SAMPLE_BYTES, "{capacity} bytes for {len}");
        let mut next = first.successor();
        assert_eq!(fill(&mut next, 120), 0);
        let mut long = OpenChunk::new();
        let mut grown = 0;
        for k in 0..10_000 {
            let room = long.buf.capacity();
            let (t, v) = sample(k);
            long.append(t, v);
            grown += usize::from(long.buf.capacity() != room);
        }
        assert!(grown < 40, "{grown} reallocations for {} bytes", long.bytes().len());
    }

    /// Samples that take a bit or two each fill a chunk at its sample count.
    #[test]
    fn full_at_max_samples() {
        let mut c = OpenChunk::new();
        for i in 0..MAX_SAMPLES_PER_CHUNK as i64 {
            assert!(!c.is_full());
            c.append(i, 7.0);
        }
        assert!(c.is_full());
        assert!(c.bytes().len() < MAX_CHUNK_BYTES, "{} bytes", c.bytes().len());
    }

    #[test]
    fn property_random_round_trip() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..2000 {
            let n = 1 + rng.below(MAX_SAMPLES_PER_CHUNK as u64) as usize;
            let mut t: i64 = match rng.below(4) {
                0 => i64::MIN,
                1 => rng.next() as i64,
                2 => -(rng.below(1 << 40) as i64),
                _ => 1_700_000_000_000,
            };
            let step_kind = rng.below(4);
            let value_kind = rng.below(5);
            let mut v: u64 = rng.next();
            let mut s = Vec::with_capacity(n);
            for i in 0..n {
                if i > 0 {
                    let step: i64 = match step_kind {
                        0 => 15_000,
                        1 => 15_000 + rng.below(100) as i64 - 50,
                        2 => 1 + rng.below(1 << 21) as i64,
                        _ => ((rng.next() >> rng.below(64)) & i64::MAX as u64) as i64,
                    };
                    let Some(next) = t.checked_add(step.max(1)) else { break };
                    t = next;
                }
                v = match value_kind {
                    0 => v,
                    1 => (rng.below(1000) as f64).to_bits(),
                    2 => rng.next(),
                    3 => v ^ (rng.next() >> rng.below(64) << rng.below(64)),
                    _ => [STALE_NAN_BITS, (-0.0f64).to_bits(), f64::NAN.to_bits(), rng.next()]
                        [rng.below(4) as usize],
                };
                s.push((t, v));
            }
            for mut c in [OpenChunk::new(), OpenChunk::xor()] {
                for &(t, v) in &s {
                    c.append(t, f64::from_bits(v));
                }
                let got: Vec<(i64, u64)> = ChunkIter::new(c.bytes()).map(|s| (s.t, s.v.to_bits())).collect();
                assert_eq!(got, s, "round {round}, {:?}", c.coding);
            }
        }
    }

    /// Decimal values of every kind, and what no mantissa holds, between them: each reads
    /// back bit for bit, whatever the places it widens to or the raw escapes it takes.
    #[test]
    fn decimal_chunks_round_trip_widening_and_escapes() {
        let cases: [&[f64]; 6] = [
            &[0.0, 0.01, 0.02, 1.5, 1234.56, 1234.5678, 0.000001, 1e15, -3.0, 0.0],
            &[5.0, f64::NAN, 6.0, f64::from_bits(STALE_NAN_BITS), 7.25, -0.0, f64::INFINITY, 8.0],
            // a mantissa near the top, then a value that would need it scaled past i64
            &[4.0e15, 0.123456789012345, 4.0e15, 1.0],
            &[0.1 + 0.2, 0.3, 1.0 / 3.0, 2.0, 1e300, 2.5],
            &[9_007_199_254_740_991.0, -9_007_199_254_740_991.0, 0.0, 9_007_199_254_740_991.0],
            &[f64::MIN_POSITIVE, 1.0, 1e-15, 1e-16, 12.0],
        ];
        for values in cases {
            let samples: Vec<(i64, u64)> =
                values.iter().enumerate().map(|(i, v)| (i as i64 * 15_000, v.to_bits())).collect();
            round_trip(&samples);
            let mut c = OpenChunk::new();
            for &(t, v) in &samples {
                c.append(t, f64::from_bits(v));
            }
            let decimal_first = crate::decimal::digits_of(values[0]).is_some();
            assert_eq!(matches!(c.coding, Coding::Decimal { .. }), decimal_first, "{values:?}");
            assert_eq!(c.bytes()[0] & DECIMAL_FLAG != 0, decimal_first);
        }
    }

    /// Exporter-like series, as the benchmarks' workload writes them: the decimal coding
    /// takes half of XOR's bytes or less on decimal fractions, three quarters where integers
    /// move by little, and less than XOR's on large integers that move by a lot and on values
    /// that do not move.
    #[test]
    fn decimal_chunks_are_smaller_than_xor_on_exporter_values() {
        type Step = fn(&mut Rng, f64) -> f64;
        let kinds: [(&str, f64, Step, f64); 6] = [
            ("cpu seconds", 81_234.56, |r, v| ((v * 100.0).round() + r.below(1501) as f64) / 100.0, 0.5),
            ("byte counter", 5e9, |r, v| v + r.below(2_000_001) as f64, 0.9),
            ("gauge of 50 GiB", 5e10, |r, v| v + r.below(1 << 30) as f64 - (1 << 29) as f64, 0.95),
            ("request counter", 1_000.0, |r, v| v + r.below(51) as f64, 0.75),
            ("load average", 1.5, |r, _| r.below(400) as f64 / 100.0, 0.5),
            ("constant", 42.0, |_, v| v, 0.9),
        ];
        let mut rng = Rng(7);
        for (name, first, step, most) in kinds {
            let (mut decimal, mut xor) = (OpenChunk::new(), OpenChunk::xor());
            let mut v = first;
            for i in 0..MAX_SAMPLES_PER_CHUNK as i64 {
                let t = 1_790_000_000_000 + i * 15_000;
                decimal.append(t, v);
                xor.append(t, v);
                v = step(&mut rng, v);
            }
            let (d, x) = (decimal.bytes().len(), xor.bytes().len());
            eprintln!("{name}: {d} bytes against XOR's {x}");
            assert!(d as f64 <= most * x as f64, "{name}: {d} bytes against XOR's {x}");
        }
    }

    /// A chunk that had to write many values raw hands the XOR coding to the next one, which
    /// hands the decimal coding back to try again.
    #[test]
    fn full_precision_series_go_back_to_xor() {
        let mut c = OpenChunk::new();
        c.append(0, 1.0);
        for i in 1..MAX_SAMPLES_PER_CHUNK as i64 {
            c.append(i, i as f64 / 7.0);
        }
        // some sevenths are exact at 15 places, most are not
        assert!(matches!(c.coding, Coding::Decimal { escapes, .. } if usize::from(escapes) > c.len() / 4));
        let mut next = c.successor();
        next.append(1_000, 2.0);
        assert!(matches!(next.coding, Coding::Xor { .. }));
        let mut after = next.successor();
        after.append(2_000, 2.0);
        assert!(matches!(after.coding, Coding::Decimal { digits: 0, .. }));
    }

    #[test]
    fn compresses_regular_data() {
        let mut c = OpenChunk::new();
        for i in 0..120 {
            c.append(1_700_000_000_000 + i * 15_000, 42.0);
        }
        // 120 samples × 16 raw bytes would be 1920; Gorilla needs a few bits per sample
        assert!(c.bytes().len() < 60, "{} bytes", c.bytes().len());
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(12345);
        for _ in 0..5000 {
            let len = rng.below(64) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let n = ChunkIter::new(&data).count();
            assert!(n <= 0xffff);
        }
        // a valid chunk cut short ends early without panicking
        let mut c = OpenChunk::new();
        for i in 0..50 {
            c.append(i * 7, (i * i) as f64);
        }
        let bytes = c.bytes();
        for cut in 0..bytes.len() {
            let got = ChunkIter::new(&bytes[..cut]).count();
            assert!(got <= 50);
        }
    }
}
