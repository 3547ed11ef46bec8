//! A block's series index: every series' labels and where its rows are in the samples file.
//!
//! File layout (`index`), little endian, varints as in the WAL:
//!
//! ```text
//! "PFIX" | u8 version (1)
//! uvarint #symbols | #symbols × string            (sorted, unique)
//! uvarint #series  | #series × (
//!     uvarint #labels | #labels × (uvarint name symbol, uvarint value symbol)
//!     uvarint rows | varint min_t | uvarint max_t - min_t )
//! u32 crc32c of everything before it
//! ```
//!
//! Series are stored in label order; a series' id is its position, and its rows are
//! consecutive in the samples file, right after the previous series' rows. Opening a block
//! reads the whole index into memory and builds the label postings from it.
//!
//! In memory a series' labels stay as the file has them, symbol ids in one byte string for
//! the whole block (a few dozen bytes a series), and are turned into [`Labels`] only for
//! the series a query answers with. Unpacked sets would take nearly five times that: at a
//! million series, a block's index would hold more memory than the head's series.

use std::borrow::Cow;

use crate::codec::{open_sealed, put_str, put_uvarint, put_varint, seal, sealed_header, Cursor};
use crate::head::PackedLabels;
use crate::postings::Postings;
use crate::{Labels, Matcher, Timestamp};

const MAGIC: &[u8; 4] = b"PFIX";
const VERSION: u8 = 1;

/// One series of a block.
#[derive(Debug)]
pub(crate) struct IndexSeries {
    /// Where its labels start in [`BlockIndex::labels`].
    labels_at: u32,
    /// Its first row in the samples file.
    pub(crate) first_row: u64,
    /// Its number of rows.
    pub(crate) rows: u64,
    /// Its oldest sample.
    pub(crate) min_t: Timestamp,
    /// Its newest sample.
    pub(crate) max_t: Timestamp,
}

/// The in-memory form of a block's index.
#[derive(Debug, Default)]
pub(crate) struct BlockIndex {
    /// Series by id.
    pub(crate) series: Vec<IndexSeries>,
    /// The strings the labels name, sorted.
    symbols: Vec<Box<str>>,
    /// Each series' labels: their count, then each name's and value's symbol, as uvarints.
    labels: Vec<u8>,
    postings: Postings<u32>,
}

/// Serialises an index for series given in label order as (labels, rows, min_t, max_t).
pub(crate) fn encode(series: &[(PackedLabels, u64, Timestamp, Timestamp)]) -> Vec<u8> {
    let mut symbols: Vec<&str> =
        series.iter().flat_map(|(ls, ..)| ls.iter().flat_map(|(n, v)| [n, v])).collect();
    symbols.sort_unstable();
    symbols.dedup();
    let sym = |s: &str| symbols.binary_search(&s).unwrap_or(0) as u64;
    let mut out = sealed_header(MAGIC, VERSION);
    put_uvarint(&mut out, symbols.len() as u64);
    for s in &symbols {
        put_str(&mut out, s);
    }
    put_uvarint(&mut out, series.len() as u64);
    for (labels, rows, min_t, max_t) in series {
        put_uvarint(&mut out, labels.iter().count() as u64);
        for (name, value) in labels.iter() {
            put_uvarint(&mut out, sym(name));
            put_uvarint(&mut out, sym(value));
        }
        put_uvarint(&mut out, *rows);
        put_varint(&mut out, *min_t);
        put_uvarint(&mut out, max_t.abs_diff(*min_t));
    }
    seal(&mut out);
    out
}

/// Parses an index file; `None` when it is truncated, corrupt or of an unknown version.
pub(crate) fn decode(data: &[u8]) -> Option<BlockIndex> {
    let mut c = open_sealed(data, MAGIC, VERSION)?;
    let n = usize::try_from(c.uvarint()?).ok()?;
    if n > c.remaining() {
        return None;
    }
    let mut symbols = Vec::with_capacity(n);
    for _ in 0..n {
        symbols.push(c.string()?);
    }
    let n = usize::try_from(c.uvarint()?).ok()?;
    if n > c.remaining() || n > u32::MAX as usize {
        return None;
    }
    let mut series = Vec::with_capacity(n);
    let mut labels = Vec::new();
    let mut postings = Postings::default();
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut next_row = 0u64;
    for id in 0..n as u32 {
        let labels_at = u32::try_from(labels.len()).ok()?;
        let nl = c.uvarint()?;
        if usize::try_from(nl).ok()? > c.remaining() {
            return None;
        }
        put_uvarint(&mut labels, nl);
        pairs.clear();
        for _ in 0..nl {
            let (name, value) = (c.uvarint()?, c.uvarint()?);
            pairs.push((
                symbols.get(usize::try_from(name).ok()?)?,
                symbols.get(usize::try_from(value).ok()?)?,
            ));
            put_uvarint(&mut labels, name);
            put_uvarint(&mut labels, value);
        }
        // what `labels` turns back into a label set without sorting it again
        if !pairs.windows(2).all(|w| w[0].0 < w[1].0) || pairs.iter().any(|p| p.1.is_empty()) {
            return None;
        }
        let rows = c.uvarint()?;
        let min_t = c.varint()?;
        let max_t = min_t.checked_add_unsigned(c.uvarint()?)?;
        postings.insert(id, pairs.iter().copied());
        series.push(IndexSeries { labels_at, first_row: next_row, rows, min_t, max_t });
        next_row = next_row.checked_add(rows)?;
    }
    labels.shrink_to_fit();
    let symbols = symbols.into_iter().map(String::into_boxed_str).collect();
    c.is_empty().then_some(BlockIndex { series, symbols, labels, postings })
}

impl BlockIndex {
    /// Ids (ascending, hence in label order) of the series matching every matcher with
    /// samples in `mint..=maxt`.
    pub(crate) fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Vec<u32> {
        if mint > maxt {
            return Vec::new();
        }
        let all = || (0..self.series.len() as u32).collect();
        let mut ids = self.postings.select(matchers, all, |id, name| {
            let value = self.pairs(id).find(|(n, _)| *n == name).map_or("", |(_, v)| v);
            ((id as usize) < self.series.len()).then_some(Cow::Borrowed(value))
        });
        ids.retain(|&id| self.series.get(id as usize).is_some_and(|s| s.max_t >= mint && s.min_t <= maxt));
        ids
    }

    /// The `(name, value)` pairs of series `id`, in name order (none for an unknown id).
    fn pairs(&self, id: u32) -> impl Iterator<Item = (&str, &str)> {
        let at = self.series.get(id as usize).map_or(self.labels.len(), |s| s.labels_at as usize);
        let mut c = Cursor(self.labels.get(at..).unwrap_or_default());
        let n = c.uvarint().unwrap_or(0);
        // the ids were checked against the symbols when the index was read
        let symbol = |i: u64| self.symbols.get(i as usize).map_or("", |s| &**s);
        (0..n).map_while(move |_| Some((symbol(c.uvarint()?), symbol(c.uvarint()?))))
    }

    /// The labels of series `id`.
    pub(crate) fn labels(&self, id: u32) -> Labels {
        Labels::from_sorted_pairs(self.pairs(id))
    }

    /// How many series the block has.
    pub(crate) fn len(&self) -> usize {
        self.series.len()
    }

    /// Every label name in the block, with its values.
    pub(crate) fn postings(&self) -> &Postings<u32> {
        &self.postings
    }

    /// Total rows in the samples file.
    pub(crate) fn total_rows(&self) -> u64 {
        self.series.last().map_or(0, |s| s.first_row + s.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_corruption() {
        let a = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        let data = encode(&[(PackedLabels::new(&a), 3, -5, 10), (PackedLabels::new(&b), 2, 100, 100)]);
        let idx = decode(&data).unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.labels(1), b);
        assert_eq!(idx.labels(0), a);
        assert_eq!(idx.labels(2), Labels::default());
        assert_eq!((idx.series[1].first_row, idx.series[1].rows), (3, 2));
        assert_eq!((idx.series[0].min_t, idx.series[0].max_t), (-5, 10));
        let m = Matcher::new(crate::MatchOp::Equal, "job", "b").unwrap();
        assert_eq!(idx.select(&[m], 0, 1000), vec![1]);
        assert_eq!(idx.total_rows(), 5);
        for cut in [0, 3, data.len() / 2, data.len() - 1] {
            assert!(decode(&data[..cut]).is_none());
        }
        let mut flipped = data.clone();
        flipped[7] ^= 1;
        assert!(decode(&flipped).is_none());
    }
}
