//! Prometheus's float histogram chunks (`EncFloatHistogram`), which streamed remote-read
//! answers carry for native histograms, and the reading of its integer histogram chunks
//! (`EncHistogram`), which Prometheus streams for the histograms instrumentation sends.
//!
//! A chunk holds samples of one bucket layout:
//!
//! * 3 bytes: the number of samples (big endian) and a flags byte whose top two bits are the
//!   counter-reset header (unknown, reset, no reset, gauge);
//! * the layout: the zero threshold (one byte for a power of two between 2^-243 and 2^10, 0
//!   for none, else 255 and 64 raw bits), the schema, the positive and negative spans (a
//!   count, then each span's length and offset) and, for custom buckets, their bounds;
//! * sample 0: timestamp, then count, zero count, sum and every bucket as 64 raw bits;
//! * later samples: timestamp delta-of-delta, then each field XOR-ed with its previous value,
//!   as float chunks do. A stale marker writes no buckets.
//!
//! The integers are Prometheus's variable-width bit fields. Every sample in a chunk after the
//! first reads back as "no counter reset" (or as a gauge), so a chunk is cut at every
//! counter reset, as well as at a change of layout, after a stale marker, and at
//! [`MAX_SAMPLES_PER_CHUNK`] samples. Prometheus widens a chunk's layout to take new buckets
//! instead of cutting; both are valid chunks and read back as the same samples.

use crate::chunk::{
    fits_signed, from_bucket, xor_read, xor_write, BitReader, BitWriter, MAX_SAMPLES_PER_CHUNK,
};
use crate::native_histogram::{CounterResetHint, Span, CUSTOM_BUCKETS_SCHEMA};
use crate::{is_stale_nan, FloatHistogram, HistogramSample, Timestamp, STALE_NAN_BITS};

/// One encoded chunk and the timestamps of its first and last samples.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedChunk {
    /// The first sample's timestamp.
    pub min_t: Timestamp,
    /// The last sample's timestamp.
    pub max_t: Timestamp,
    /// The chunk's bytes.
    pub data: Vec<u8>,
}

/// The counter-reset header's values (the flags byte's top two bits).
const HEADER_UNKNOWN: u8 = 0b0000_0000;
const HEADER_RESET: u8 = 0b1000_0000;
const HEADER_NO_RESET: u8 = 0b0100_0000;
const HEADER_GAUGE: u8 = 0b1100_0000;
const HEADER_MASK: u8 = 0b1100_0000;

/// Bytes before the layout.
const HEADER_LEN: usize = 3;

/// The layout every sample of a chunk shares.
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    schema: i32,
    zero_threshold: f64,
    positive: Vec<Span>,
    negative: Vec<Span>,
    custom_bounds: Vec<f64>,
}

impl Layout {
    fn of(h: &FloatHistogram) -> (Layout, Vec<f64>) {
        let (positive, mut counts) = h.positive_spans();
        let (negative, negative_counts) = h.negative_spans();
        counts.extend(negative_counts);
        let layout = Layout {
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            positive,
            negative,
            custom_bounds: h.custom_bounds().to_vec(),
        };
        (layout, counts)
    }

    /// A stale marker's layout: nothing.
    fn empty() -> Layout {
        Layout { schema: 0, zero_threshold: 0.0, positive: vec![], negative: vec![], custom_bounds: vec![] }
    }

    fn write(&self, w: &mut BitWriter) {
        write_zero_threshold(w, self.zero_threshold);
        write_varbit_int(w, i64::from(self.schema));
        for spans in [&self.positive, &self.negative] {
            write_varbit_uint(w, spans.len() as u64);
            for s in spans {
                write_varbit_uint(w, u64::from(s.length));
                write_varbit_int(w, i64::from(s.offset));
            }
        }
        if self.schema == CUSTOM_BUCKETS_SCHEMA {
            write_varbit_uint(w, self.custom_bounds.len() as u64);
            for &b in &self.custom_bounds {
                write_custom_bound(w, b);
            }
        }
    }

    fn read(r: &mut BitReader<'_>) -> Option<Layout> {
        let zero_threshold = read_zero_threshold(r)?;
        let schema = i32::try_from(read_varbit_int(r)?).ok()?;
        let mut sides = [Vec::new(), Vec::new()];
        for spans in &mut sides {
            let n = read_varbit_uint(r)?;
            for _ in 0..n.min(u64::from(u16::MAX)) {
                let length = u32::try_from(read_varbit_uint(r)?).ok()?;
                let offset = i32::try_from(read_varbit_int(r)?).ok()?;
                spans.push(Span { offset, length });
            }
        }
        let mut custom_bounds = Vec::new();
        if schema == CUSTOM_BUCKETS_SCHEMA {
            let n = read_varbit_uint(r)?;
            for _ in 0..n.min(u64::from(u16::MAX)) {
                custom_bounds.push(read_custom_bound(r)?);
            }
        }
        let [positive, negative] = sides;
        Some(Layout { schema, zero_threshold, positive, negative, custom_bounds })
    }

    fn buckets(&self) -> usize {
        self.positive.iter().chain(&self.negative).map(|s| s.length as usize).sum()
    }

    /// A sample of this layout: a staleness marker when the sum is one (its buckets are not
    /// written), else the histogram of these counts (positive buckets first).
    fn histogram(&self, count: f64, zero_count: f64, sum: f64, counts: &[f64]) -> Option<FloatHistogram> {
        if sum.to_bits() == STALE_NAN_BITS {
            return Some(stale_marker());
        }
        let split = self.positive.iter().map(|s| s.length as usize).sum::<usize>();
        FloatHistogram::from_spans(
            self.schema,
            self.zero_threshold,
            zero_count,
            count,
            sum,
            (&self.positive, counts.get(..split)?),
            (&self.negative, counts.get(split..)?),
            self.custom_bounds.clone(),
        )
        .ok()
    }
}

/// A field's previous value and XOR window, as [`crate::chunk`]'s values keep theirs.
#[derive(Clone, Copy)]
struct Xor {
    bits: u64,
    leading: u8,
    trailing: u8,
}

impl Xor {
    fn first(v: f64) -> Xor {
        Xor { bits: v.to_bits(), leading: 0xff, trailing: 0 }
    }

    fn write(&mut self, w: &mut BitWriter, v: f64) {
        xor_write(w, v.to_bits(), self.bits, &mut self.leading, &mut self.trailing);
        self.bits = v.to_bits();
    }
}

/// The chunk being written.
struct Open {
    w: BitWriter,
    layout: Layout,
    num: u16,
    min_t: Timestamp,
    t: Timestamp,
    delta: i64,
    /// Count, zero count, sum, then each bucket.
    fields: Vec<Xor>,
    gauge: bool,
    stale: bool,
}

impl Open {
    fn new(header: u8, t: Timestamp, h: &FloatHistogram, stale: bool) -> Open {
        let mut w = BitWriter::default();
        w.write_bits(0, 16);
        w.write_bits(u64::from(header), 8);
        let (layout, counts) = if stale { (Layout::empty(), Vec::new()) } else { Layout::of(h) };
        layout.write(&mut w);
        write_varbit_int(&mut w, t);
        let (count, zero_count) = if stale { (0.0, 0.0) } else { (h.count, h.zero_count) };
        let mut fields = vec![Xor::first(count), Xor::first(zero_count), Xor::first(h.sum)];
        fields.extend(counts.iter().map(|&c| Xor::first(c)));
        for f in &fields {
            w.write_bits(f.bits, 64);
        }
        let gauge = h.hint == CounterResetHint::Gauge;
        Open { w, layout, num: 1, min_t: t, t, delta: 0, fields, gauge, stale }
    }

    fn append(&mut self, t: Timestamp, h: &FloatHistogram, stale: bool, counts: &[f64]) {
        let delta = t.wrapping_sub(self.t);
        write_varbit_int(&mut self.w, delta.wrapping_sub(self.delta));
        let (count, zero_count) = if stale { (0.0, 0.0) } else { (h.count, h.zero_count) };
        self.fields[0].write(&mut self.w, count);
        self.fields[1].write(&mut self.w, zero_count);
        self.fields[2].write(&mut self.w, h.sum);
        if !stale {
            for (f, &c) in self.fields[3..].iter_mut().zip(counts) {
                f.write(&mut self.w, c);
            }
        }
        self.t = t;
        self.delta = delta;
        self.num += 1;
        self.stale |= stale;
    }

    fn finish(mut self) -> EncodedChunk {
        self.w.buf_mut()[..2].copy_from_slice(&self.num.to_be_bytes());
        EncodedChunk { min_t: self.min_t, max_t: self.t, data: self.w.into_bytes() }
    }
}

/// Encodes a series' histogram samples (in time order) as Prometheus's float histogram
/// chunks.
pub fn encode_float_histogram_chunks(samples: &[HistogramSample]) -> Vec<EncodedChunk> {
    let mut out = Vec::new();
    let mut open: Option<Open> = None;
    let mut previous: Option<&FloatHistogram> = None;
    for s in samples {
        let h = &*s.h;
        let stale = is_stale_nan(h.sum);
        let gauge = h.hint == CounterResetHint::Gauge;
        let reset = !gauge && !stale && previous.is_some_and(|p| !is_stale_nan(p.sum) && h.detect_reset(p));
        if let Some(o) = open.as_mut() {
            let (layout, counts) = if stale { (o.layout.clone(), Vec::new()) } else { Layout::of(h) };
            let fits = (o.num as usize) < MAX_SAMPLES_PER_CHUNK
                && o.gauge == gauge
                && !reset
                && (stale || (!o.stale && layout == o.layout));
            if fits {
                o.append(s.t, h, stale, &counts);
                previous = Some(h);
                continue;
            }
        }
        if let Some(o) = open.take() {
            out.push(o.finish());
        }
        let header = match h.hint {
            _ if gauge => HEADER_GAUGE,
            _ if reset => HEADER_RESET,
            CounterResetHint::CounterReset => HEADER_RESET,
            CounterResetHint::NotCounterReset => HEADER_NO_RESET,
            _ if previous.is_some() => HEADER_NO_RESET,
            _ => HEADER_UNKNOWN,
        };
        open = Some(Open::new(header, s.t, h, stale));
        previous = Some(h);
    }
    out.extend(open.map(Open::finish));
    out
}

/// Decodes a float histogram chunk; `None` when it is torn or malformed. Its samples' hints
/// are read as Prometheus reads them (see `hints`).
pub fn decode_float_histogram_chunk(data: &[u8]) -> Option<Vec<HistogramSample>> {
    let (&[n0, n1, flags], rest) = data.split_first_chunk::<HEADER_LEN>()?;
    let num = u16::from_be_bytes([n0, n1]);
    let mut r = BitReader::new(rest);
    let layout = Layout::read(&mut r)?;
    let buckets = layout.buckets();
    if buckets > rest.len() * 8 {
        return None;
    }
    let (first_hint, later_hint) = hints(flags);
    let mut out = Vec::with_capacity(usize::from(num));
    let (mut t, mut delta) = (0i64, 0i64);
    let mut fields: Vec<Xor> = Vec::new();
    for i in 0..num {
        if i == 0 {
            t = read_varbit_int(&mut r)?;
            for _ in 0..3 + buckets {
                fields.push(Xor::first(f64::from_bits(r.read_bits(64)?)));
            }
        } else {
            delta = delta.wrapping_add(read_varbit_int(&mut r)?);
            t = t.wrapping_add(delta);
            for f in &mut fields[..3] {
                xor_read(&mut r, &mut f.bits, &mut f.leading, &mut f.trailing)?;
            }
            if f64::from_bits(fields[2].bits).to_bits() != STALE_NAN_BITS {
                for f in &mut fields[3..] {
                    xor_read(&mut r, &mut f.bits, &mut f.leading, &mut f.trailing)?;
                }
            }
        }
        let value = |k: usize| f64::from_bits(fields[k].bits);
        let counts: Vec<f64> = fields[3..].iter().map(|f| f64::from_bits(f.bits)).collect();
        let mut h = layout.histogram(value(0), value(1), value(2), &counts)?;
        h.hint = if i == 0 { first_hint } else { later_hint };
        out.push(HistogramSample { t, h: std::sync::Arc::new(h) });
    }
    Some(out)
}

/// Decodes an integer histogram chunk (Prometheus's `EncHistogram`) into float histograms,
/// as PromQL reads them; `None` when it is torn or malformed. The first sample's counts are
/// written whole (its buckets as differences from the bucket before, as the wire writes
/// them), later ones as delta-of-deltas of those, the sum as an XOR.
pub fn decode_integer_histogram_chunk(data: &[u8]) -> Option<Vec<HistogramSample>> {
    let (&[n0, n1, flags], rest) = data.split_first_chunk::<HEADER_LEN>()?;
    let num = u16::from_be_bytes([n0, n1]);
    let mut r = BitReader::new(rest);
    let layout = Layout::read(&mut r)?;
    // every bucket takes a bit at least: a layout of more is malformed, and is not allocated
    if layout.buckets() > rest.len() * 8 {
        return None;
    }
    let (first_hint, later_hint) = hints(flags);
    let positive = layout.positive.iter().map(|s| s.length as usize).sum::<usize>();
    // each bucket as the wire writes it (its difference from the bucket before), and that
    // value's change from the previous sample
    let mut buckets = vec![0i64; layout.buckets()];
    let mut bucket_deltas = vec![0i64; buckets.len()];
    let (mut t, mut t_delta) = (0i64, 0i64);
    let (mut count, mut count_delta, mut zero, mut zero_delta) = (0i64, 0i64, 0i64, 0i64);
    let mut sum = Xor::first(0.0);
    let mut out = Vec::with_capacity(usize::from(num));
    for i in 0..num {
        if i == 0 {
            t = read_varbit_int(&mut r)?;
            count = read_varbit_uint(&mut r)? as i64;
            zero = read_varbit_uint(&mut r)? as i64;
            sum = Xor::first(f64::from_bits(r.read_bits(64)?));
            for b in &mut buckets {
                *b = read_varbit_int(&mut r)?;
            }
        } else {
            t_delta = t_delta.wrapping_add(read_varbit_int(&mut r)?);
            t = t.wrapping_add(t_delta);
            count_delta = count_delta.wrapping_add(read_varbit_int(&mut r)?);
            count = count.wrapping_add(count_delta);
            zero_delta = zero_delta.wrapping_add(read_varbit_int(&mut r)?);
            zero = zero.wrapping_add(zero_delta);
            xor_read(&mut r, &mut sum.bits, &mut sum.leading, &mut sum.trailing)?;
            if sum.bits != STALE_NAN_BITS {
                for (b, d) in buckets.iter_mut().zip(&mut bucket_deltas) {
                    *d = d.wrapping_add(read_varbit_int(&mut r)?);
                    *b = b.wrapping_add(*d);
                }
            }
        }
        // the buckets' counts: running sums of their differences, on each side
        let absolute = |side: &[i64]| -> Vec<f64> {
            side.iter()
                .scan(0i64, |c, d| {
                    *c = c.wrapping_add(*d);
                    Some(*c as f64)
                })
                .collect()
        };
        let mut counts = absolute(&buckets[..positive]);
        counts.extend(absolute(&buckets[positive..]));
        let mut h =
            layout.histogram(count as u64 as f64, zero as u64 as f64, f64::from_bits(sum.bits), &counts)?;
        h.hint = if i == 0 { first_hint } else { later_hint };
        out.push(HistogramSample { t, h: std::sync::Arc::new(h) });
    }
    Some(out)
}

/// The hints a chunk's samples read back with, from its flags byte, as Prometheus reads its
/// chunks: every sample of a gauge chunk is a gauge; in a counter chunk the first sample is
/// "unknown", whatever the header says (the chunk before may be gone, or a backfilled or
/// out-of-order chunk may have come between, so a reset or its absence is not trusted
/// across chunks), and the others are "no counter reset". A reset hint would make PromQL
/// warn of conflicting resets wherever a window holds it beside a later sample of its chunk.
fn hints(flags: u8) -> (CounterResetHint, CounterResetHint) {
    if flags & HEADER_MASK == HEADER_GAUGE {
        (CounterResetHint::Gauge, CounterResetHint::Gauge)
    } else {
        (CounterResetHint::Unknown, CounterResetHint::NotCounterReset)
    }
}

/// A histogram staleness marker as a chunk holds it: the marker as its sum, nothing else.
fn stale_marker() -> FloatHistogram {
    let mut h = FloatHistogram::default();
    h.sum = f64::from_bits(STALE_NAN_BITS);
    h
}

/// Prometheus's variable-width signed bit field: a unary prefix of up to 8 ones says how many
/// bits follow (0, 3, 6, 9, 12, 18, 25, 56 or 64); the range of an n-bit field is
/// `-(2^(n-1) - 1) ..= 2^(n-1)`.
fn write_varbit_int(w: &mut BitWriter, v: i64) {
    const WIDTHS: [(u64, u32, u32); 7] = [
        (0b10, 2, 3),
        (0b110, 3, 6),
        (0b1110, 4, 9),
        (0b11110, 5, 12),
        (0b111110, 6, 18),
        (0b1111110, 7, 25),
        (0b11111110, 8, 56),
    ];
    if v == 0 {
        w.write_bit(false);
        return;
    }
    match WIDTHS.iter().find(|(_, _, n)| fits_signed(v, *n)) {
        Some(&(prefix, len, n)) => {
            w.write_bits(prefix, len);
            w.write_bits(v as u64 & ((1u64 << n) - 1), n);
        }
        None => {
            w.write_bits(0b1111_1111, 8);
            w.write_bits(v as u64, 64);
        }
    }
}

fn read_varbit_int(r: &mut BitReader<'_>) -> Option<i64> {
    let n = match read_prefix(r)? {
        0 => return Some(0),
        1 => 3,
        2 => 6,
        3 => 9,
        4 => 12,
        5 => 18,
        6 => 25,
        7 => 56,
        _ => return Some(r.read_bits(64)? as i64),
    };
    let bits = r.read_bits(n)?;
    Some(from_bucket(bits, n))
}

/// The unsigned variant: the same prefixes, an n-bit field holds `0 ..= 2^n - 1`.
fn write_varbit_uint(w: &mut BitWriter, v: u64) {
    const WIDTHS: [u32; 7] = [3, 6, 9, 12, 18, 25, 56];
    if v == 0 {
        w.write_bit(false);
        return;
    }
    match WIDTHS.iter().position(|&n| v < 1u64 << n) {
        Some(k) => {
            let len = k as u32 + 2;
            w.write_bits(((1u64 << len) - 1) ^ 1, len);
            w.write_bits(v, WIDTHS[k]);
        }
        None => {
            w.write_bits(0b1111_1111, 8);
            w.write_bits(v, 64);
        }
    }
}

fn read_varbit_uint(r: &mut BitReader<'_>) -> Option<u64> {
    let n = match read_prefix(r)? {
        0 => return Some(0),
        k @ 1..=7 => [3, 6, 9, 12, 18, 25, 56][k as usize - 1],
        _ => 64,
    };
    r.read_bits(n)
}

/// The number of ones before the first zero, at most 8 (then no zero follows).
fn read_prefix(r: &mut BitReader<'_>) -> Option<u32> {
    let mut ones = 0;
    while ones < 8 && r.read_bit()? {
        ones += 1;
    }
    Some(ones)
}

fn write_zero_threshold(w: &mut BitWriter, threshold: f64) {
    if threshold == 0.0 {
        w.write_bits(0, 8);
        return;
    }
    let (frac, exp) = frexp(threshold);
    if frac != 0.5 || !(-242..=11).contains(&exp) {
        w.write_bits(255, 8);
        w.write_bits(threshold.to_bits(), 64);
    } else {
        w.write_bits((exp + 243) as u64, 8);
    }
}

fn read_zero_threshold(r: &mut BitReader<'_>) -> Option<f64> {
    Some(match r.read_bits(8)? {
        0 => 0.0,
        255 => f64::from_bits(r.read_bits(64)?),
        b => 0.5 * 2f64.powi(b as i32 - 243),
    })
}

/// `x = frac × 2^exp` with `frac` in `[0.5, 1)` (Go's `math.Frexp`), for finite non-zero `x`.
fn frexp(x: f64) -> (f64, i32) {
    if !x.is_finite() || x == 0.0 {
        return (x, 0);
    }
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // subnormal: scale into the normal range first
        let (f, e) = frexp(x * 2f64.powi(64));
        return (f, e - 64);
    }
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, biased - 1022)
}

/// A custom bucket bound: a multiple of 1/1000 in `[0, 33554.43]` as its thousandths plus one
/// in a varbit field, else a zero bit and the 64 raw bits.
fn write_custom_bound(w: &mut BitWriter, b: f64) {
    let thousandths = b * 1000.0;
    let whole = (thousandths.round() / 1000.0) == b;
    if !(0.0..=33_554_430.0).contains(&thousandths) || !whole {
        w.write_bit(false);
        w.write_bits(b.to_bits(), 64);
        return;
    }
    write_varbit_uint(w, thousandths.round() as u64 + 1);
}

fn read_custom_bound(r: &mut BitReader<'_>) -> Option<f64> {
    Some(match read_varbit_uint(r)? {
        0 => f64::from_bits(r.read_bits(64)?),
        n => (n - 1) as f64 / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn exponential(hint: CounterResetHint, scale: f64, positive: &[(i32, f64)]) -> FloatHistogram {
        let positive: Vec<(i32, f64)> = positive.iter().map(|&(i, c)| (i, c * scale)).collect();
        let count = positive.iter().map(|b| b.1).sum::<f64>() + 2.0 * scale;
        let mut h = FloatHistogram::from_buckets(
            hint,
            1,
            2f64.powi(-128),
            2.0 * scale,
            count,
            3.25 * scale,
            positive,
            vec![(-2, 1.0 * scale)],
            vec![],
        )
        .unwrap();
        h.count += scale;
        h
    }

    fn samples(hs: Vec<FloatHistogram>) -> Vec<HistogramSample> {
        let mut t = 1_700_000_000_000;
        hs.into_iter()
            .enumerate()
            .map(|(i, h)| {
                t += [15_000, 15_000, 14_999, 16_321, 1][i % 5];
                HistogramSample { t, h: Arc::new(h) }
            })
            .collect()
    }

    fn round_trip(input: &[HistogramSample]) -> Vec<EncodedChunk> {
        let chunks = encode_float_histogram_chunks(input);
        let mut back = Vec::new();
        for c in &chunks {
            let decoded = decode_float_histogram_chunk(&c.data).expect("a chunk decodes");
            assert_eq!((decoded[0].t, decoded[decoded.len() - 1].t), (c.min_t, c.max_t));
            back.extend(decoded);
        }
        assert_eq!(back.len(), input.len());
        for (a, b) in back.iter().zip(input) {
            assert_eq!(a.t, b.t);
            let (mut got, mut want) = ((*a.h).clone(), (*b.h).clone());
            // a chunk tells only its first sample's hint; the others read as no reset
            got.hint = CounterResetHint::Unknown;
            want.hint = CounterResetHint::Unknown;
            assert!(got.total_cmp(&want).is_eq(), "{got:?} != {want:?}");
        }
        chunks
    }

    #[test]
    fn a_steady_counter_is_one_chunk_per_120_samples() {
        let hs = (0..250)
            .map(|i| exponential(CounterResetHint::Unknown, 1.0 + i as f64, &[(0, 1.0), (1, 3.0), (5, 0.5)]))
            .collect();
        let chunks = round_trip(&samples(hs));
        assert_eq!(chunks.len(), 3);
        let headers: Vec<u8> = chunks.iter().map(|c| c.data[2] & HEADER_MASK).collect();
        assert_eq!(headers, [HEADER_UNKNOWN, HEADER_NO_RESET, HEADER_NO_RESET]);
        // after the first two samples, each costs a few bits per field: well under 64 bits
        assert!(chunks[0].data.len() < 120 * 8 * 8 / 2, "{} bytes", chunks[0].data.len());
    }

    #[test]
    fn resets_layout_changes_stale_markers_and_gauges_cut_chunks() {
        let u = CounterResetHint::Unknown;
        let hs = vec![
            exponential(u, 1.0, &[(0, 1.0)]),
            exponential(u, 2.0, &[(0, 1.0)]),
            // a new bucket: a new layout
            exponential(u, 2.0, &[(0, 1.0), (3, 1.0)]),
            // a reset, detected
            exponential(u, 1.0, &[(0, 1.0), (3, 1.0)]),
            stale_marker(),
            stale_marker(),
            exponential(CounterResetHint::CounterReset, 1.0, &[(0, 1.0)]),
            exponential(CounterResetHint::Gauge, 1.0, &[(0, 1.0)]),
            exponential(CounterResetHint::Gauge, 0.5, &[(0, 1.0)]),
            FloatHistogram::from_buckets(
                u,
                CUSTOM_BUCKETS_SCHEMA,
                0.0,
                0.0,
                3.0,
                1.5,
                vec![(0, 1.0), (2, 2.0)],
                vec![],
                vec![0.25, 1.0, 33_554.43, 1e9],
            )
            .unwrap(),
        ];
        let chunks = round_trip(&samples(hs));
        let headers: Vec<u8> = chunks.iter().map(|c| c.data[2] & HEADER_MASK).collect();
        assert_eq!(
            headers,
            [HEADER_UNKNOWN, HEADER_NO_RESET, HEADER_RESET, HEADER_RESET, HEADER_GAUGE, HEADER_RESET],
            "the stale markers ride in the reset's chunk; custom buckets after exponential ones are a reset"
        );
    }

    #[test]
    fn varbit_fields_round_trip_at_their_edges() {
        let mut ints = vec![0i64, 1, -1, i64::MIN, i64::MAX];
        let mut uints = vec![0u64, u64::MAX];
        for n in [3u32, 6, 9, 12, 18, 25, 56] {
            let lim = 1i64 << (n - 1);
            ints.extend([lim, lim + 1, -(lim - 1), -lim]);
            uints.extend([(1u64 << n) - 1, 1u64 << n]);
        }
        let mut w = BitWriter::default();
        for &v in &ints {
            write_varbit_int(&mut w, v);
        }
        for &v in &uints {
            write_varbit_uint(&mut w, v);
        }
        let bytes = w.into_bytes();
        let mut r = BitReader::new(&bytes);
        for &v in &ints {
            assert_eq!(read_varbit_int(&mut r), Some(v));
        }
        for &v in &uints {
            assert_eq!(read_varbit_uint(&mut r), Some(v));
        }
    }

    #[test]
    fn zero_thresholds_use_the_short_form_for_powers_of_two() {
        for (threshold, bytes) in
            [(0.0, 1), (2f64.powi(-128), 1), (2f64.powi(10), 1), (1e-128, 9), (2f64.powi(11), 9)]
        {
            let mut w = BitWriter::default();
            write_zero_threshold(&mut w, threshold);
            let b = w.into_bytes();
            assert_eq!(b.len(), bytes, "{threshold}");
            assert_eq!(read_zero_threshold(&mut BitReader::new(&b)), Some(threshold));
        }
    }

    #[test]
    fn torn_chunks_decode_to_nothing() {
        let hs =
            (0..10).map(|i| exponential(CounterResetHint::Unknown, 1.0 + i as f64, &[(0, 1.0)])).collect();
        let chunk = &encode_float_histogram_chunks(&samples(hs))[0].data;
        for len in 0..chunk.len() - 1 {
            assert_eq!(decode_float_histogram_chunk(&chunk[..len]), None, "{len} bytes");
        }
    }
}
