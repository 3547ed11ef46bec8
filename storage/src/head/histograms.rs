//! A head series' native-histogram samples, compressed much as Prometheus compresses them in
//! its histogram chunks: samples that share a bucket layout (schema, zero threshold,
//! custom bounds and the set of buckets that count something) form a chunk whose first
//! sample is written whole and each later one as a header and its fields (count, zero count,
//! sum, then the buckets) against the previous sample's. The header is one varint holding the
//! change of the time delta from the previous one (zero at a steady scrape interval, so the
//! header of a steady sample is one byte), the sample's hint and the form its counts are
//! written in ([`Form`]):
//!
//! * when both samples' counts are whole numbers (below 2^53), as a counter's are, the count
//!   and the zero count as their differences from the previous ones (zigzag varints) and the
//!   sum as an XOR; then the buckets' differences, either each a zigzag varint (a bucket that
//!   gained a few observations takes one byte) or, when none went down and it is smaller,
//!   bit-packed: one byte giving the width of the largest, then every difference in that many
//!   bits (a bucket that gained up to 15 observations takes half a byte);
//! * otherwise every field as the XOR of its bits with the previous sample's.
//!
//! An XOR is written in bytes: `0` for no change, else a header byte `1 + 8·lead + trail`
//! (its leading and trailing zero bytes) followed by the bytes between them.

use std::sync::Arc;

use crate::chunk::{BitReader, BitWriter};
use crate::codec::{put_uvarint, put_varint, unzigzag, zigzag, Cursor};
use crate::native_histogram::hint_byte;
use crate::native_histogram::{exact_integer, hint_of_byte};
use crate::{FloatHistogram, HistogramSample, Timestamp};

/// Samples per chunk at most: reads decode whole chunks, truncation drops whole chunks.
const MAX_CHUNK_SAMPLES: u32 = 120;

/// How a sample's counts are written (the low two bits of its header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// Every field as an XOR with the previous sample's.
    Xor = 0,
    /// Whole counts as differences, each a zigzag varint; the sum as an XOR.
    Varints = 1,
    /// Whole counts as differences: the count and zero count as zigzag varints, the sum as
    /// an XOR, the buckets' differences (none negative) bit-packed at one width.
    Packed = 2,
}

impl Form {
    fn of_bits(bits: u64) -> Option<Form> {
        match bits {
            0 => Some(Form::Xor),
            1 => Some(Form::Varints),
            2 => Some(Form::Packed),
            _ => None,
        }
    }
}

/// The position of the first bucket in [`fields`].
const FIRST_BUCKET: usize = 3;

/// A time delta this far from the previous one starts a chunk: the header's shifted zigzag
/// stays far from overflowing (2^40 ms is 35 years).
const MAX_DELTA_CHANGE: i64 = 1 << 40;

/// The position of the sum in [`fields`]: written as an XOR in both forms.
const SUM_FIELD: usize = 2;

/// A run of samples with one bucket layout.
#[derive(Debug)]
struct Chunk {
    min_t: Timestamp,
    max_t: Timestamp,
    len: u32,
    /// The time between the last two samples (0 with one), which the next header's delta
    /// change is from.
    last_delta: i64,
    bytes: Vec<u8>,
}

/// A sample's header: its time delta's change, its hint and its counts' form.
fn header(delta_change: i64, hint: u8, form: Form) -> u64 {
    zigzag(delta_change) << 4 | u64::from(hint) << 2 | form as u64
}

/// A header's parts ([`header`]).
fn header_parts(h: u64) -> Option<(i64, u8, Form)> {
    Some((unzigzag(h >> 4), ((h >> 2) & 3) as u8, Form::of_bits(h & 3)?))
}

/// The form of a sample whose counts and the previous sample's are whole, given its buckets'
/// differences: packed when none is negative and packing takes fewer bytes than varints.
fn whole_form(bucket_diffs: &[i64]) -> Form {
    if bucket_diffs.iter().any(|d| *d < 0) {
        return Form::Varints;
    }
    let varints: usize = bucket_diffs.iter().map(|d| crate::codec::uvarint_len((*d as u64) << 1)).sum();
    if packed_len(bucket_diffs.len(), packed_width(bucket_diffs)) < varints {
        Form::Packed
    } else {
        Form::Varints
    }
}

/// The bits the largest of `diffs` (none negative) takes.
fn packed_width(diffs: &[i64]) -> u32 {
    64 - diffs.iter().fold(0u64, |m, d| m | *d as u64).leading_zeros()
}

/// The bytes `n` differences packed at `width` bits take, with the width's byte.
fn packed_len(n: usize, width: u32) -> usize {
    1 + (n * width as usize).div_ceil(8)
}

/// A series' histogram samples, oldest first (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct HistogramSamples {
    chunks: Vec<Chunk>,
    /// The newest sample: the base of the next one's XORs.
    last: Option<HistogramSample>,
}

impl HistogramSamples {
    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// How many samples there are.
    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len as usize).sum()
    }

    /// The oldest sample's time.
    pub(crate) fn first_t(&self) -> Option<Timestamp> {
        self.chunks.first().map(|c| c.min_t)
    }

    /// Appends a sample newer than every one held.
    pub(crate) fn push(&mut self, s: HistogramSample) {
        let continues = match (&self.last, self.chunks.last()) {
            (Some(prev), Some(chunk)) => {
                chunk.len < MAX_CHUNK_SAMPLES
                    && same_layout(&prev.h, &s.h)
                    && (s.t - prev.t - chunk.last_delta).abs() < MAX_DELTA_CHANGE
            }
            _ => false,
        };
        if continues {
            let (Some(prev), Some(chunk)) = (&self.last, self.chunks.last_mut()) else { unreachable!() };
            let before = chunk.bytes.len();
            let delta = s.t - prev.t;
            let whole = whole_counts(&s.h) && whole_counts(&prev.h);
            // exact: both are whole numbers below 2^53 (the sum, which is not, is an XOR)
            let diffs: Vec<i64> = if whole {
                let diff = |(i, (now, before)): (usize, (f64, f64))| {
                    if i == SUM_FIELD {
                        0
                    } else {
                        now as i64 - before as i64
                    }
                };
                fields(&s.h).zip(fields(&prev.h)).enumerate().map(diff).collect()
            } else {
                Vec::new()
            };
            let form = if whole { whole_form(&diffs[FIRST_BUCKET..]) } else { Form::Xor };
            put_uvarint(&mut chunk.bytes, header(delta - chunk.last_delta, hint_byte(s.h.hint), form));
            chunk.last_delta = delta;
            for (i, (now, before)) in fields(&s.h).zip(fields(&prev.h)).enumerate() {
                match form {
                    Form::Packed if i >= FIRST_BUCKET => break,
                    Form::Varints | Form::Packed if i != SUM_FIELD => put_varint(&mut chunk.bytes, diffs[i]),
                    _ => put_xor(&mut chunk.bytes, now.to_bits() ^ before.to_bits()),
                }
            }
            if form == Form::Packed {
                let buckets = &diffs[FIRST_BUCKET..];
                let width = packed_width(buckets);
                chunk.bytes.push(width as u8);
                let mut w = BitWriter::default();
                for d in buckets {
                    w.write_bits(*d as u64, width);
                }
                chunk.bytes.extend_from_slice(&w.into_bytes());
            }
            chunk.max_t = s.t;
            chunk.len += 1;
            // the chunk's room for the rest, once, sized by this sample: growing by doubling
            // left the heap fragmented by the buffers it moved (37.7 KB a series where the
            // chunks hold 18.8 KB, against 26.4 KB reserved once)
            if chunk.len == 2 {
                let per = chunk.bytes.len() - before;
                chunk.bytes.reserve_exact(per * (MAX_CHUNK_SAMPLES as usize - 2) * 5 / 4);
            }
            // a full chunk is written no more: give back what it did not use
            if chunk.len == MAX_CHUNK_SAMPLES {
                chunk.bytes.shrink_to_fit();
            }
        } else {
            // a chunk is written no more once the next begins: give back what its growth
            // reserved
            if let Some(done) = self.chunks.last_mut() {
                done.bytes.shrink_to_fit();
            }
            let mut bytes = Vec::new();
            s.h.encode(&mut bytes);
            self.chunks.push(Chunk { min_t: s.t, max_t: s.t, len: 1, last_delta: 0, bytes });
        }
        self.last = Some(s);
    }

    /// The samples in `mint..=maxt`, decoded.
    pub(crate) fn range(&self, mint: Timestamp, maxt: Timestamp) -> Vec<HistogramSample> {
        let mut out = Vec::new();
        for c in self.chunks.iter().filter(|c| c.max_t >= mint && c.min_t <= maxt) {
            out.extend(decode(c).into_iter().filter(|s| s.t >= mint && s.t <= maxt));
        }
        out
    }

    /// Whether a sample lies in `mint..=maxt`: from the chunks' time ranges alone, unless
    /// the range falls between two samples inside one chunk.
    pub(crate) fn any_in(&self, mint: Timestamp, maxt: Timestamp) -> bool {
        self.chunks.iter().filter(|c| c.max_t >= mint && c.min_t <= maxt).any(|c| {
            (mint <= c.min_t || maxt >= c.max_t) || decode(c).iter().any(|s| s.t >= mint && s.t <= maxt)
        })
    }

    /// Every sample, decoded.
    fn all(&self) -> Vec<HistogramSample> {
        self.range(Timestamp::MIN, Timestamp::MAX)
    }

    /// The samples again, written anew (after an insertion or a removal).
    fn rebuild(samples: Vec<HistogramSample>) -> HistogramSamples {
        let mut out = HistogramSamples::default();
        for s in samples {
            out.push(s);
        }
        out
    }

    /// Inserts a sample older than the newest (out of order); the caller has refused a
    /// second one at the same time.
    pub(crate) fn insert(&mut self, s: HistogramSample) {
        let mut all = self.all();
        let i = all.partition_point(|x| x.t < s.t);
        all.insert(i, s);
        *self = HistogramSamples::rebuild(all);
    }

    /// Keeps the samples whose time satisfies `keep`; returns how many went.
    pub(crate) fn retain(&mut self, keep: impl Fn(Timestamp) -> bool) -> u64 {
        let before = self.len();
        let kept: Vec<HistogramSample> = self.all().into_iter().filter(|s| keep(s.t)).collect();
        if kept.len() == before {
            return 0;
        }
        *self = HistogramSamples::rebuild(kept);
        (before - self.len()) as u64
    }
}

/// The counts a sample writes as XORs, in a fixed order: count, zero count, sum, then the
/// positive and negative buckets.
fn fields(h: &FloatHistogram) -> impl Iterator<Item = f64> + '_ {
    [h.count, h.zero_count, h.sum]
        .into_iter()
        .chain(h.positive_buckets().iter().map(|b| b.1))
        .chain(h.negative_buckets().iter().map(|b| b.1))
}

/// Whether a histogram's counts (all its fields but the sum) are exactly integers, which
/// round-trip through their differences ([`exact_integer`]).
fn whole_counts(h: &FloatHistogram) -> bool {
    fields(h).enumerate().all(|(i, v)| i == SUM_FIELD || exact_integer(v).is_some())
}

/// Whether two histograms have the same buckets (so one's counts can be written against
/// the other's).
fn same_layout(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    let indexes =
        |x: &[(i32, f64)], y: &[(i32, f64)]| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.0 == q.0);
    a.schema == b.schema
        && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
        && a.custom_bounds() == b.custom_bounds()
        && indexes(a.positive_buckets(), b.positive_buckets())
        && indexes(a.negative_buckets(), b.negative_buckets())
}

fn put_xor(out: &mut Vec<u8>, xor: u64) {
    if xor == 0 {
        out.push(0);
        return;
    }
    let lead = (xor.leading_zeros() / 8) as usize;
    let trail = (xor.trailing_zeros() / 8) as usize;
    out.push((1 + 8 * lead + trail) as u8);
    out.extend_from_slice(&xor.to_be_bytes()[lead..8 - trail]);
}

fn get_xor(c: &mut Cursor<'_>) -> Option<u64> {
    let header = c.take(1)?[0] as usize;
    if header == 0 {
        return Some(0);
    }
    let (lead, trail) = ((header - 1) / 8, (header - 1) % 8);
    if lead + trail >= 8 {
        return None;
    }
    let mut bytes = [0u8; 8];
    bytes[lead..8 - trail].copy_from_slice(c.take(8 - lead - trail)?);
    Some(u64::from_be_bytes(bytes))
}

/// A chunk's samples. A chunk is written here and read here only: one that does not decode
/// is a bug, and yields what decoded before it.
fn decode(c: &Chunk) -> Vec<HistogramSample> {
    let mut out = Vec::with_capacity(c.len as usize);
    let mut cur = Cursor(&c.bytes);
    let Some(first) = FloatHistogram::decode(&mut cur) else {
        debug_assert!(false, "an undecodable histogram chunk");
        return out;
    };
    let mut prev = HistogramSample { t: c.min_t, h: Arc::new(first) };
    out.push(prev.clone());
    let mut delta = 0;
    for _ in 1..c.len {
        let Some(next) = decode_next(&mut cur, &prev, &mut delta) else {
            debug_assert!(false, "an undecodable histogram chunk");
            break;
        };
        out.push(next.clone());
        prev = next;
    }
    out
}

/// The sample after `prev`, whose time was `delta` after the one before it (updated).
fn decode_next(c: &mut Cursor<'_>, prev: &HistogramSample, delta: &mut i64) -> Option<HistogramSample> {
    let (change, hint, form) = header_parts(c.uvarint()?)?;
    *delta = delta.checked_add(change)?;
    let t = prev.t.checked_add(*delta)?;
    let hint = hint_of_byte(hint)?;
    let mut values: Vec<f64> = Vec::with_capacity(FIRST_BUCKET + prev.h.positive_buckets().len());
    for (i, v) in fields(&prev.h).enumerate() {
        values.push(match form {
            Form::Packed if i >= FIRST_BUCKET => break,
            Form::Varints | Form::Packed if i != SUM_FIELD => (v as i64).checked_add(c.varint()?)? as f64,
            _ => f64::from_bits(v.to_bits() ^ get_xor(c)?),
        });
    }
    if form == Form::Packed {
        let width = u32::from(c.take(1)?[0]);
        if width > 64 {
            return None;
        }
        let n = prev.h.positive_buckets().len() + prev.h.negative_buckets().len();
        let mut bits = BitReader::new(c.take(packed_len(n, width) - 1)?);
        for v in fields(&prev.h).skip(FIRST_BUCKET) {
            values.push((v as i64).checked_add(i64::try_from(bits.read_bits(width)?).ok()?)? as f64);
        }
    }
    let mut values = values.into_iter();
    let mut next = || values.next();
    let (count, zero_count, sum) = (next()?, next()?, next()?);
    let positive: Option<Vec<(i32, f64)>> =
        prev.h.positive_buckets().iter().map(|b| next().map(|v| (b.0, v))).collect();
    let negative: Option<Vec<(i32, f64)>> =
        prev.h.negative_buckets().iter().map(|b| next().map(|v| (b.0, v))).collect();
    let h = FloatHistogram::from_parts(
        hint,
        prev.h.schema,
        prev.h.zero_threshold,
        zero_count,
        count,
        sum,
        positive?,
        negative?,
        prev.h.custom_bounds().to_vec(),
    )?;
    Some(HistogramSample { t, h: Arc::new(h) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native_histogram::{CounterResetHint, Span};

    fn h(count: f64, buckets: &[f64], offset: i32) -> Arc<FloatHistogram> {
        let spans = [Span { offset, length: buckets.len() as u32 }];
        let mut h = FloatHistogram::from_spans(
            3,
            1e-128,
            1.0,
            count,
            count * 0.7,
            (&spans, buckets),
            (&[], &[]),
            vec![],
        )
        .unwrap();
        h.hint = CounterResetHint::NotCounterReset;
        Arc::new(h)
    }

    /// Every form round-trips: packed at widths 0 to 50, varints where a bucket went down,
    /// XORs where a count is not whole; and small increments are packed at half a byte.
    #[test]
    fn every_form_round_trips_and_small_increments_pack() {
        let mut store = HistogramSamples::default();
        let mut want = Vec::new();
        let mut buckets = vec![1.0; 24];
        let mut seed = 3u64;
        for k in 1..=240i64 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            for (b, c) in buckets.iter_mut().enumerate() {
                *c += match k % 60 {
                    // nothing new: width 0
                    0 => 0.0,
                    // one bucket goes down (a bucket that was reset alone): varints
                    1 if b == 3 => -1.0,
                    // large increments: wide packing
                    2 => (1u64 << (b * 2 + 2)) as f64,
                    _ => ((seed >> (b + 5)) % 13) as f64,
                };
            }
            let mut x = (*h(buckets.iter().sum::<f64>() + 1.0, &buckets, -7)).clone();
            if k == 100 {
                x.count += 0.25;
            }
            // sums no integer holds, between whole counts
            match k {
                150 => x.sum = f64::MAX,
                151 => x.sum = -f64::INFINITY,
                152 => x.sum = f64::NAN,
                _ => {}
            }
            let s = HistogramSample { t: 15_000 * k, h: Arc::new(x) };
            want.push(s.clone());
            store.push(s);
        }
        let got = store.range(i64::MIN, i64::MAX);
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.t, b.t);
            assert_eq!(a.h.fingerprint(), b.h.fingerprint(), "at {}", a.t);
        }
        // a sample of increments below 16 in 24 buckets: header, count (2), zero count, the
        // sum's XOR (at most 9), width and 12 bytes of buckets
        let (mut small, mut first) = (HistogramSamples::default(), Vec::new());
        let mut buckets = vec![1.0; 24];
        for k in 1..=100i64 {
            buckets.iter_mut().enumerate().for_each(|(b, c)| *c += ((k + b as i64) % 16) as f64);
            let x = h(buckets.iter().sum::<f64>() + 1.0, &buckets, 0);
            if k == 1 {
                x.encode(&mut first);
            }
            small.push(HistogramSample { t: 15_000 * k, h: x });
        }
        let bytes: usize = small.chunks.iter().map(|c| c.bytes.len()).sum();
        assert!(bytes <= first.len() + 99 * (1 + 2 + 1 + 9 + 1 + 12), "{bytes} bytes for 100 samples");
    }

    #[test]
    fn samples_come_back_bit_for_bit_and_stable_ones_take_little_room() {
        let mut store = HistogramSamples::default();
        let mut want = Vec::new();
        for k in 1..=300i64 {
            // a layout change at 150 (a new bucket), NaN and infinite sums too
            let buckets: Vec<f64> = (0..20).map(|b| (k * (b + 1)) as f64).collect();
            let mut x =
                (*h(buckets.iter().sum::<f64>() + 1.0, &buckets, if k < 150 { 2 } else { 1 })).clone();
            if k == 7 {
                x.sum = f64::NAN;
            }
            // counts that are not whole numbers: written as XORs, and so is the next sample
            if k == 9 {
                x.count += 0.5;
            }
            let s = HistogramSample { t: 1000 * k + k % 3, h: Arc::new(x) };
            want.push(s.clone());
            store.push(s);
        }
        let got = store.range(i64::MIN, i64::MAX);
        assert_eq!(got.len(), 300);
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.t, b.t);
            assert_eq!(a.h.fingerprint(), b.h.fingerprint());
        }
        let bytes: usize = store.chunks.iter().map(|c| c.bytes.len()).sum();
        assert!(bytes < 300 * 40, "{bytes} bytes for 300 samples of 20 buckets");
        // a steady interval: the header is one byte
        let (mut steady, mut first) = (HistogramSamples::default(), Vec::new());
        for k in 1..=100i64 {
            let buckets: Vec<f64> = (0..4).map(|b| (k * (b + 1)) as f64).collect();
            let x = h(buckets.iter().sum::<f64>() + 1.0, &buckets, 0);
            if k == 1 {
                x.encode(&mut first);
            }
            steady.push(HistogramSample { t: 15_000 * k, h: x });
        }
        let bytes: usize = steady.chunks.iter().map(|c| c.bytes.len()).sum();
        // header, count, zero count and four buckets a byte each, the sum's XOR at most nine
        assert!(bytes <= first.len() + 99 * (1 + 2 + 4 + 9), "{bytes} bytes for 100 samples");
        // timestamps far apart start chunks, and come back
        let mut far = HistogramSamples::default();
        for t in [0, 1, i64::MAX / 2, i64::MAX / 2 + 7, i64::MAX / 2 + 9] {
            far.push(HistogramSample { t, h: h(2.0, &[1.0], 0) });
        }
        let ts: Vec<i64> = far.range(i64::MIN, i64::MAX).iter().map(|s| s.t).collect();
        assert_eq!(ts, [0, 1, i64::MAX / 2, i64::MAX / 2 + 7, i64::MAX / 2 + 9]);
        assert_eq!(store.range(5000, 7001).iter().map(|s| s.t).collect::<Vec<_>>(), [5002, 6000, 7001]);
        assert!(store.any_in(5000, 5002) && store.any_in(0, 1001) && store.any_in(300_000, i64::MAX));
        assert!(!store.any_in(5003, 5999), "between two samples of one chunk");
        assert!(!store.any_in(400_000, 500_000));

        // out of order, and removal
        store.insert(HistogramSample { t: 1500, h: h(2.0, &[1.0], 0) });
        assert_eq!(store.range(1000, 2002).iter().map(|s| s.t).collect::<Vec<_>>(), [1001, 1500, 2002]);
        assert_eq!(store.retain(|t| t >= 100_000), 100);
        assert_eq!(store.first_t(), Some(100_001));
        assert_eq!(store.len(), 201);
        assert_eq!(store.retain(|t| t >= 100_000), 0);
    }
}
