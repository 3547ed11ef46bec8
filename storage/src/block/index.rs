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

use std::borrow::Cow;
use std::sync::Arc;

use crate::codec::{open_sealed, put_str, put_uvarint, put_varint, seal, sealed_header};
use crate::postings::Postings;
use crate::{Labels, Matcher, Timestamp};

const MAGIC: &[u8; 4] = b"PFIX";
const VERSION: u8 = 1;

/// One series of a block.
#[derive(Debug)]
pub(crate) struct IndexSeries {
    /// The series' labels.
    pub(crate) labels: Arc<Labels>,
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
    postings: Postings<u32>,
}

/// Serialises an index for series given in label order as (labels, rows, min_t, max_t).
pub(crate) fn encode(series: &[(Arc<Labels>, u64, Timestamp, Timestamp)]) -> Vec<u8> {
    let mut symbols: Vec<&str> = series
        .iter()
        .flat_map(|(ls, ..)| ls.iter().flat_map(|l| [l.name.as_str(), l.value.as_str()]))
        .collect();
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
        put_uvarint(&mut out, labels.len() as u64);
        for l in labels.iter() {
            put_uvarint(&mut out, sym(&l.name));
            put_uvarint(&mut out, sym(&l.value));
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
    let mut index = BlockIndex { series: Vec::with_capacity(n), postings: Postings::default() };
    let mut next_row = 0u64;
    for id in 0..n as u32 {
        let nl = usize::try_from(c.uvarint()?).ok()?;
        if nl > c.remaining() {
            return None;
        }
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(nl);
        for _ in 0..nl {
            let name = symbols.get(usize::try_from(c.uvarint()?).ok()?)?;
            let value = symbols.get(usize::try_from(c.uvarint()?).ok()?)?;
            pairs.push((name, value));
        }
        let rows = c.uvarint()?;
        let min_t = c.varint()?;
        let max_t = min_t.checked_add_unsigned(c.uvarint()?)?;
        index.postings.insert(id, pairs.iter().copied());
        index.series.push(IndexSeries {
            labels: Arc::new(Labels::from_pairs(pairs)),
            first_row: next_row,
            rows,
            min_t,
            max_t,
        });
        next_row = next_row.checked_add(rows)?;
    }
    c.is_empty().then_some(index)
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
            self.series.get(id as usize).map(|s| Cow::Borrowed(s.labels.get(name)))
        });
        ids.retain(|&id| self.series.get(id as usize).is_some_and(|s| s.max_t >= mint && s.min_t <= maxt));
        ids
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
        let a = Arc::new(Labels::from_pairs([("__name__", "up"), ("job", "a")]));
        let b = Arc::new(Labels::from_pairs([("__name__", "up"), ("job", "b")]));
        let data = encode(&[(a.clone(), 3, -5, 10), (b.clone(), 2, 100, 100)]);
        let idx = decode(&data).unwrap();
        assert_eq!(idx.series.len(), 2);
        assert_eq!(*idx.series[1].labels, *b);
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
