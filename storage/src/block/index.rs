//! A block's series index: every series' labels, where its rows are in the samples file, and
//! the postings that find series by label, read in place from the mapped file.
//!
//! File layout (`index`, version 3), little endian, varints as in the WAL:
//!
//! ```text
//! "PFIX" | u8 version (3)
//! symbols         #symbols × (uvarint length, bytes)            sorted, unique
//! series          #series × (
//!                     uvarint first row (the first series of a group), or first row -
//!                         the previous series' first row (the others)
//!                     | uvarint min_t - base | uvarint top - max_t
//!                     | uvarint shared | uvarint #new
//!                     | #new × (uvarint name symbol, uvarint value symbol) )
//! postings        #pairs × (uvarint #ids | #ids × uvarint id - previous id)
//! symbol table    #symbols × offset of the symbol
//! series table    ⌈#series / 16⌉ × offset of the group's first series
//! pair table      #pairs × (u32 name symbol | u32 value symbol | offset of its postings)
//! trailer         u64 symbol table offset | u64 #symbols | u64 series table offset
//!                 | u64 #series | u64 pair table offset | u64 #pairs | u64 total rows
//!                 | u64 offset width | i64 base | i64 top
//! u32 crc32c of everything before it
//! ```
//!
//! Offsets in the tables are from the start of the file, `u32` where the sections before the
//! tables are under 4 GiB and `u64` otherwise (the offset width says which). `base` is the
//! smallest `min_t` and `top` the largest `max_t`, so that the time span of a series with
//! samples across the block takes two bytes. A series' rows run from its first row to the
//! next series' (the last one's to the total).
//!
//! Series are written in groups of [`SERIES_GROUP`]: the series table points at each
//! group's first series, and every other series of a group is written against the one
//! before it, as the number of label pairs it shares with it (`shared`, from the first) and
//! the pairs after those. Series in label order share most of their labels with the one
//! before (the same name, instance and job), so an entry takes a few bytes; reading a
//! series decodes its group up to it.
//!
//! Series are stored in label order; a series' id is its position, and its rows are
//! consecutive in the samples file. Symbols are numbered in string order, so comparing
//! symbol numbers compares the strings: the pair table is sorted by (name, value) and a
//! label name's values are a run of it.
//!
//! Opening a block reads the file once to check it whole (its checksum, that its sections
//! tile the file, the order of symbols, series and pairs, every symbol and series number in
//! range) and then maps it. A query reads the pages of the series and postings it needs; the
//! block keeps no memory of its own beyond its list of label names. Holding an index in
//! memory cost about 90 bytes a series a block even with labels as symbol numbers, and every
//! block a series has samples in holds it again: at a million series, each 2-hour block of
//! retention added about 90 MB.
//!
//! Version 2 (each series' labels first, then its first row, its number of rows, `min_t -
//! base` and `max_t - min_t`; no `top`) is read in place. Version 1 (symbols and series
//! without first rows, offset tables or postings, read whole into memory) is rewritten as
//! version 3 when its block is opened.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;

use memmap2::Mmap;

use crate::codec::{open_sealed, put_str, put_uvarint, seal, sealed_header, Cursor};
use crate::head::PackedLabels;
use crate::postings::{fast_path, select_ids, selection_cost, FastPath};
use crate::{Labels, Matcher, Timestamp};

const MAGIC: &[u8; 4] = b"PFIX";
const VERSION: u8 = 3;
/// The version whose series entries each hold their labels whole, first, and their number of
/// rows, with an offset each in the series table.
const VERSION_ROWS_AFTER_LABELS: u8 = 2;
/// The version whose index was held in memory, rewritten on open.
const VERSION_IN_MEMORY: u8 = 1;
/// Bytes of `"PFIX"` and the version.
const HEADER_BYTES: usize = 5;
/// Bytes of a pair table entry before its offset: the name and value symbols.
const PAIR_SYMBOL_BYTES: usize = 8;
/// Series in a group of a version 3 file: one offset in the series table, and one series
/// written whole, for this many. Reading a series decodes half a group on average.
const SERIES_GROUP: usize = 16;

/// Bytes of the trailer of a file of `version`.
fn trailer_bytes(version: u8) -> usize {
    if grouped(version) {
        10 * 8
    } else {
        9 * 8
    }
}

/// Where a series' rows are in the samples file, and the time span they cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SeriesSpan {
    /// Its first row.
    pub(crate) first_row: u64,
    /// Its number of rows.
    pub(crate) rows: u64,
    /// Its oldest sample.
    pub(crate) min_t: Timestamp,
    /// Its newest sample.
    pub(crate) max_t: Timestamp,
}

impl SeriesSpan {
    /// Its rows in the block's samples file.
    pub(crate) fn row_range(&self) -> std::ops::Range<u64> {
        self.first_row..self.first_row + self.rows
    }
}

/// A table of fixed-size entries: where its first entry is, how many there are, and the
/// bytes of each.
#[derive(Clone, Copy, Debug)]
struct Table {
    at: usize,
    len: usize,
    entry: usize,
}

impl Table {
    /// The offset just past the table.
    fn end(self) -> usize {
        self.at + self.len * self.entry
    }
}

/// The checked shape of an index file.
#[derive(Debug)]
struct Layout {
    symbols: Table,
    /// The series table: an offset a series (version 2) or a group (version 3).
    series: Table,
    series_count: usize,
    pairs: Table,
    total_rows: u64,
    /// The smallest `min_t`: the series' oldest times are stored as differences from it.
    base: Timestamp,
    /// The largest `max_t`: the series' newest times are stored as differences to it (in
    /// version 3).
    top: Timestamp,
    /// The file's version: 3, or 2.
    version: u8,
    /// Each label name with its run of the pair table, in name order.
    names: Vec<(Box<str>, Range<usize>)>,
}

/// An index file's bytes: the file mapped, or a copy in memory where the file on disk is not
/// the checked one (a version 1 file that could not be rewritten).
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(map) => map,
            Bytes::Owned(data) => data,
        }
    }
}

/// A block's index, read in place.
pub(crate) struct BlockIndex {
    bytes: Bytes,
    layout: Layout,
}

impl std::fmt::Debug for BlockIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockIndex").field("series", &self.layout.series_count).finish_non_exhaustive()
    }
}

/// Serialises an index for series given in label order as (labels, rows, min_t, max_t).
pub(crate) fn encode(series: &[(PackedLabels, u64, Timestamp, Timestamp)]) -> Vec<u8> {
    encode_version(series, VERSION)
}

/// [`encode`] in `version` (3, or in tests 2).
fn encode_version(series: &[(PackedLabels, u64, Timestamp, Timestamp)], version: u8) -> Vec<u8> {
    let unique: HashSet<&str> =
        series.iter().flat_map(|(ls, ..)| ls.iter().flat_map(|(n, v)| [n, v])).collect();
    let mut symbols: Vec<&str> = unique.into_iter().collect();
    symbols.sort_unstable();
    let number: HashMap<&str, u32> = symbols.iter().enumerate().map(|(i, s)| (*s, i as u32)).collect();
    let sym = |s: &str| number.get(s).copied().unwrap_or(0);
    let mut out = sealed_header(MAGIC, version);
    let mut symbol_offsets = Vec::with_capacity(symbols.len());
    for s in &symbols {
        symbol_offsets.push(out.len() as u64);
        put_str(&mut out, s);
    }
    let mut series_offsets = Vec::with_capacity(series.len());
    let base = series.iter().map(|s| s.2).min().unwrap_or(0);
    let top = series.iter().map(|s| s.3).max().unwrap_or(0);
    let mut postings: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
    let (mut first_row, mut previous_first_row) = (0u64, 0u64);
    let (mut pairs, mut previous) = (Vec::new(), Vec::new());
    for (id, (labels, rows, min_t, max_t)) in series.iter().enumerate() {
        pairs.clear();
        pairs.extend(labels.iter().map(|(name, value)| (sym(name), sym(value))));
        for &pair in &pairs {
            postings.entry(pair).or_default().push(id as u32);
        }
        if !grouped(version) {
            series_offsets.push(out.len() as u64);
            put_pairs(&mut out, &pairs);
            put_uvarint(&mut out, first_row);
            put_uvarint(&mut out, *rows);
            put_uvarint(&mut out, min_t.abs_diff(base));
            put_uvarint(&mut out, max_t.abs_diff(*min_t));
        } else {
            let first_of_group = id.is_multiple_of(SERIES_GROUP);
            if first_of_group {
                series_offsets.push(out.len() as u64);
                previous.clear();
            }
            put_uvarint(&mut out, if first_of_group { first_row } else { first_row - previous_first_row });
            put_uvarint(&mut out, min_t.abs_diff(base));
            put_uvarint(&mut out, top.abs_diff(*max_t));
            let shared = previous.iter().zip(&pairs).take_while(|(a, b)| a == b).count();
            put_uvarint(&mut out, shared as u64);
            put_pairs(&mut out, &pairs[shared..]);
        }
        std::mem::swap(&mut previous, &mut pairs);
        previous_first_row = first_row;
        first_row += rows;
    }
    let mut pairs: Vec<((u32, u32), Vec<u32>)> = postings.into_iter().collect();
    pairs.sort_unstable_by_key(|(pair, _)| *pair);
    let mut pair_offsets = Vec::with_capacity(pairs.len());
    for (_, ids) in &pairs {
        pair_offsets.push(out.len() as u64);
        put_uvarint(&mut out, ids.len() as u64);
        let mut previous = 0;
        for &id in ids {
            put_uvarint(&mut out, (id - previous) as u64);
            previous = id;
        }
    }
    let width = if u32::try_from(out.len()).is_ok() { 4 } else { 8 };
    let put_offset = |out: &mut Vec<u8>, offset: u64| out.extend_from_slice(&offset.to_le_bytes()[..width]);
    let mut trailer = Vec::with_capacity(trailer_bytes(version));
    for (offsets, count) in [(&symbol_offsets, symbols.len()), (&series_offsets, series.len())] {
        trailer.extend([out.len() as u64, count as u64]);
        for &offset in offsets {
            put_offset(&mut out, offset);
        }
    }
    trailer.extend([out.len() as u64, pairs.len() as u64, first_row, width as u64, base as u64]);
    if grouped(version) {
        trailer.push(top as u64);
    }
    for (((name, value), _), offset) in pairs.iter().zip(pair_offsets) {
        out.extend_from_slice(&name.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
        put_offset(&mut out, offset);
    }
    for n in trailer {
        out.extend_from_slice(&n.to_le_bytes());
    }
    seal(&mut out);
    out
}

/// A little-endian `u64` at `at`.
fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    data.get(at..at.checked_add(8)?)?.try_into().ok().map(u64::from_le_bytes)
}

/// A little-endian `u32` at `at`.
fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at.checked_add(4)?)?.try_into().ok().map(u32::from_le_bytes)
}

/// A little-endian offset of `width` bytes (4 or 8) at `at`.
fn read_offset(data: &[u8], at: usize, width: usize) -> Option<usize> {
    let n = if width == 4 { u64::from(u32_at(data, at)?) } else { u64_at(data, at)? };
    usize::try_from(n).ok()
}

/// Where entry `i` of `table` starts.
fn entry_at(table: Table, i: usize) -> Option<usize> {
    (i < table.len).then(|| table.at.checked_add(i.checked_mul(table.entry)?)).flatten()
}

/// The offset that entry `i` of an offset table holds.
fn offset_at(data: &[u8], table: Table, i: usize) -> Option<usize> {
    read_offset(data, entry_at(table, i)?, table.entry)
}

/// Entry `i` of the pair table: (name symbol, value symbol, offset of its postings).
fn pair_at(data: &[u8], table: Table, i: usize) -> Option<(u32, u32, usize)> {
    let at = entry_at(table, i)?;
    let offset = read_offset(data, at + PAIR_SYMBOL_BYTES, table.entry - PAIR_SYMBOL_BYTES)?;
    Some((u32_at(data, at)?, u32_at(data, at + 4)?, offset))
}

/// The first index of `range` for which `below` is false, where it is true of a prefix of
/// the range and false of the rest ([`slice::partition_point`] over entries read in place).
fn partition_point(range: Range<usize>, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (range.start, range.end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A cursor from `at` to the end of `data`.
fn cursor_at(data: &[u8], at: usize) -> Option<Cursor<'_>> {
    Some(Cursor(data.get(at..)?))
}

/// The position of `c`, a cursor made by [`cursor_at`] over `data`.
fn position(data: &[u8], c: &Cursor<'_>) -> usize {
    data.len() - c.remaining()
}

/// A length-prefixed string.
fn read_str<'a>(c: &mut Cursor<'a>) -> Option<&'a str> {
    std::str::from_utf8(read_bytes(c)?).ok()
}

/// Reads a length-prefixed run of bytes.
fn read_bytes<'a>(c: &mut Cursor<'a>) -> Option<&'a [u8]> {
    let len = usize::try_from(c.uvarint()?).ok()?;
    c.take(len)
}

/// How `labels` orders against the label set of `encoded` pairs of name and value: as
/// [`Labels`]' `Ord` does (pair by pair, name before value, bytewise, a prefix first).
fn cmp_encoded<'e>(labels: &Labels, mut encoded: impl Iterator<Item = (&'e [u8], &'e [u8])>) -> Ordering {
    for l in labels.iter() {
        let Some((name, value)) = encoded.next() else {
            return Ordering::Greater;
        };
        let order = l.name.as_bytes().cmp(name).then_with(|| l.value.as_bytes().cmp(value));
        if order.is_ne() {
            return order;
        }
    }
    if encoded.next().is_some() {
        Ordering::Less
    } else {
        Ordering::Equal
    }
}

/// Reads a series' label symbols into `pairs`.
fn read_pairs(c: &mut Cursor<'_>, pairs: &mut Vec<(u64, u64)>) -> Option<()> {
    pairs.clear();
    let n = c.uvarint()?;
    for _ in 0..n {
        pairs.push((c.uvarint()?, c.uvarint()?));
    }
    Some(())
}

/// Whether a file of `version` writes its series in groups (version 3).
fn grouped(version: u8) -> bool {
    version != VERSION_ROWS_AFTER_LABELS
}

/// Appends label pairs as their number and then (name symbol, value symbol) each.
fn put_pairs(out: &mut Vec<u8>, pairs: &[(u32, u32)]) {
    put_uvarint(out, pairs.len() as u64);
    for &(name, value) in pairs {
        put_uvarint(out, name.into());
        put_uvarint(out, value.into());
    }
}

/// Reads the part of a version 2 series entry after its labels, whose times are from `base`.
fn read_span_after_labels(c: &mut Cursor<'_>, base: Timestamp) -> Option<SeriesSpan> {
    let (first_row, rows) = (c.uvarint()?, c.uvarint()?);
    let min_t = base.checked_add_unsigned(c.uvarint()?)?;
    let max_t = min_t.checked_add_unsigned(c.uvarint()?)?;
    Some(SeriesSpan { first_row, rows, min_t, max_t })
}

/// A series' entry, decoded: where its rows start, its time span and its label pairs as
/// symbol numbers.
#[derive(Clone, Debug, Default)]
struct Entry {
    first_row: u64,
    min_t: Timestamp,
    max_t: Timestamp,
    pairs: Vec<(u64, u64)>,
}

/// A place in a version 3 file's series: `c` is at the entry of series `next`, and `entry`
/// holds the series before it when that is of the same group (`None`: nowhere yet).
struct Walk<'a> {
    c: Cursor<'a>,
    next: Option<usize>,
    entry: Entry,
}

/// Reads a version 3 series entry over `entry`, which holds the series before it in its
/// group (anything, for the first of a group), with times from `base` and to `top`.
fn read_entry(
    c: &mut Cursor<'_>,
    first_of_group: bool,
    base: Timestamp,
    top: Timestamp,
    entry: &mut Entry,
) -> Option<()> {
    let row = c.uvarint()?;
    entry.first_row = if first_of_group { row } else { entry.first_row.checked_add(row)? };
    entry.min_t = base.checked_add_unsigned(c.uvarint()?)?;
    entry.max_t = top.checked_sub_unsigned(c.uvarint()?)?;
    let shared = usize::try_from(c.uvarint()?).ok()?;
    if shared > entry.pairs.len() || (first_of_group && shared > 0) {
        return None;
    }
    entry.pairs.truncate(shared);
    let n = usize::try_from(c.uvarint()?).ok().filter(|&n| n <= c.remaining())?;
    for _ in 0..n {
        entry.pairs.push((c.uvarint()?, c.uvarint()?));
    }
    Some(())
}

/// Reads a postings list into `ids`.
fn read_postings(c: &mut Cursor<'_>, ids: &mut Vec<u32>) -> Option<()> {
    let n = c.uvarint()?;
    if usize::try_from(n).ok()? > c.remaining() {
        return None;
    }
    ids.reserve(n as usize);
    let mut id = 0u32;
    for i in 0..n {
        let delta = u32::try_from(c.uvarint()?).ok()?;
        if i > 0 && delta == 0 {
            return None;
        }
        id = id.checked_add(delta)?;
        ids.push(id);
    }
    Some(())
}

/// A 64-bit mark of "series `id` has the pair (`name`, `value`)": summed over every
/// series' labels and over every postings list, the sums agree when the postings list each
/// series under exactly its pairs (splitmix64's finaliser, chained over the three numbers).
fn pair_mark(id: u32, name: u64, value: u64) -> u64 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    mix(mix(mix(u64::from(id).wrapping_add(0x9e37_79b9_7f4a_7c15)) ^ name) ^ value)
}

/// Checks a whole version 3 or 2 index file and reads its layout; `None` when it is
/// truncated, corrupt or of another version.
fn check(data: &[u8]) -> Option<Layout> {
    let version = *data.get(HEADER_BYTES - 1)?;
    if version != VERSION && version != VERSION_ROWS_AFTER_LABELS {
        return None;
    }
    open_sealed(data, MAGIC, version)?;
    let body = data.len() - 4;
    let trailer = trailer_bytes(version);
    let mut t = cursor_at(data, body.checked_sub(trailer)?)?;
    let mut places = [0usize; 6];
    for place in &mut places {
        *place = usize::try_from(t.u64()?).ok()?;
    }
    let (total_rows, width, base) = (t.u64()?, usize::try_from(t.u64()?).ok()?, t.u64()? as i64);
    let top = if grouped(version) { t.u64()? as i64 } else { 0 };
    if width != 4 && width != 8 {
        return None;
    }
    let table = |at: usize, len: usize, entry: usize| -> Option<Table> {
        len.checked_mul(entry)?.checked_add(at)?;
        Some(Table { at, len, entry })
    };
    let symbols = table(places[0], places[1], width)?;
    // a version 3 series table has an offset a group
    let series_count = places[3];
    let offsets = if grouped(version) { series_count.div_ceil(SERIES_GROUP) } else { series_count };
    let series = table(places[2], offsets, width)?;
    let pairs = table(places[4], places[5], PAIR_SYMBOL_BYTES + width)?;
    // the tables follow one another up to the trailer
    if symbols.end() != series.at
        || series.end() != pairs.at
        || pairs.end() != body - trailer
        || u32::try_from(series_count).is_err()
        || u32::try_from(symbols.len).is_err()
        || symbols.at < HEADER_BYTES
    {
        return None;
    }
    // each section's entries tile it: symbols, then series, then postings, then the tables
    let mut at = HEADER_BYTES;
    let mut previous: Option<&str> = None;
    for i in 0..symbols.len {
        if offset_at(data, symbols, i)? != at {
            return None;
        }
        let mut c = cursor_at(data, at)?;
        let s = read_str(&mut c)?;
        if previous.is_some_and(|p| p >= s) {
            return None;
        }
        previous = Some(s);
        at = position(data, &c);
    }
    // "" sorts first: a symbol table that has it starts with a zero length
    let empty_symbol = (symbols.len > 0 && data.get(HEADER_BYTES) == Some(&0)).then_some(0u64);
    let (mut previous_pairs, mut entry) = (Vec::new(), Entry::default());
    let (mut next_row, mut series_marks) = (0u64, 0u64);
    for i in 0..series_count {
        let first_of_group = i.is_multiple_of(SERIES_GROUP);
        let offset = if grouped(version) { first_of_group.then_some(i / SERIES_GROUP) } else { Some(i) };
        if offset.is_some_and(|k| offset_at(data, series, k) != Some(at)) {
            return None;
        }
        let mut c = cursor_at(data, at)?;
        if grouped(version) {
            read_entry(&mut c, first_of_group, base, top, &mut entry)?;
            // rows run to the next series' first row: the first rows start at 0 and ascend
            // within the file, and each span's times are in order
            let first_row = entry.first_row;
            let misplaced = (i == 0 && first_row != 0) || first_row < next_row || first_row > total_rows;
            if misplaced || entry.min_t > entry.max_t {
                return None;
            }
            next_row = first_row;
        } else {
            read_pairs(&mut c, &mut entry.pairs)?;
            let span = read_span_after_labels(&mut c, base)?;
            if span.first_row != next_row {
                return None;
            }
            next_row = next_row.checked_add(span.rows)?;
        }
        let pairs_of = &entry.pairs;
        let names_ascend = pairs_of.windows(2).all(|w| w[0].0 < w[1].0);
        let in_range = pairs_of.iter().all(|&(n, v)| n < symbols.len as u64 && v < symbols.len as u64);
        // what `labels` turns back into a label set without sorting it again, in label order
        if !names_ascend || !in_range || pairs_of.iter().any(|p| Some(p.1) == empty_symbol) {
            return None;
        }
        if i > 0 && previous_pairs >= *pairs_of {
            return None;
        }
        for &(name, value) in pairs_of {
            series_marks = series_marks.wrapping_add(pair_mark(i as u32, name, value));
        }
        previous_pairs.clone_from(pairs_of);
        at = position(data, &c);
    }
    // in version 3 the last series' rows run to the total
    let rows_end = if grouped(version) && series_count > 0 { total_rows } else { next_row };
    if rows_end != total_rows {
        return None;
    }
    let mut names: Vec<(Box<str>, Range<usize>)> = Vec::new();
    let (mut previous, mut ids, mut postings_marks) = (None, Vec::new(), 0u64);
    for i in 0..pairs.len {
        let (name, value, offset) = pair_at(data, pairs, i)?;
        let (out_of_order, out_of_range) = (previous >= Some((name, value)), value as usize >= symbols.len);
        if offset != at || out_of_order || out_of_range || Some(u64::from(value)) == empty_symbol {
            return None;
        }
        let same_name = previous.is_some_and(|(n, _)| n == name);
        previous = Some((name, value));
        let mut c = cursor_at(data, at)?;
        ids.clear();
        read_postings(&mut c, &mut ids)?;
        if ids.is_empty() || ids.last().is_some_and(|&id| id as usize >= series_count) {
            return None;
        }
        for &id in &ids {
            postings_marks = postings_marks.wrapping_add(pair_mark(id, name.into(), value.into()));
        }
        at = position(data, &c);
        match names.last_mut() {
            Some((_, run)) if same_name => run.end = i + 1,
            _ => {
                let at = offset_at(data, symbols, name as usize)?;
                names.push((read_str(&mut cursor_at(data, at)?)?.into(), i..i + 1));
            }
        }
    }
    (at == symbols.at && postings_marks == series_marks).then_some(Layout {
        symbols,
        series_count,
        series,
        pairs,
        total_rows,
        base,
        top,
        version,
        names,
    })
}

/// Rewrites a version 1 index as version 3; `None` when it is truncated or corrupt.
fn from_version_1(data: &[u8]) -> Option<Vec<u8>> {
    let mut c = open_sealed(data, MAGIC, VERSION_IN_MEMORY)?;
    let n = usize::try_from(c.uvarint()?).ok()?;
    if n > c.remaining() {
        return None;
    }
    let mut symbols = Vec::with_capacity(n);
    for _ in 0..n {
        symbols.push(read_str(&mut c)?);
    }
    let n = usize::try_from(c.uvarint()?).ok()?;
    if n > c.remaining() || n > u32::MAX as usize {
        return None;
    }
    let mut series = Vec::with_capacity(n);
    let (mut pairs, mut total_rows) = (Vec::new(), 0u64);
    for _ in 0..n {
        read_pairs(&mut c, &mut pairs)?;
        let labels = pairs
            .iter()
            .map(|&(n, v)| {
                Some((*symbols.get(usize::try_from(n).ok()?)?, *symbols.get(usize::try_from(v).ok()?)?))
            })
            .collect::<Option<Vec<_>>>()?;
        // what version 1 required of a label set, so that it reads back as it was
        if !labels.windows(2).all(|w| w[0].0 < w[1].0) || labels.iter().any(|l| l.1.is_empty()) {
            return None;
        }
        let (rows, min_t) = (c.uvarint()?, c.varint()?);
        let max_t = min_t.checked_add_unsigned(c.uvarint()?)?;
        total_rows = total_rows.checked_add(rows)?;
        series.push((PackedLabels::new(&Labels::from_sorted_pairs(labels.into_iter())), rows, min_t, max_t));
    }
    // the order of the series is checked when the rewritten file is read
    c.is_empty().then(|| encode(&series))
}

/// Reads and checks the index file at `path`, then maps it. A version 1 file is rewritten as
/// version 3 first (kept in memory if it cannot be). Corrupt content is an
/// [`InvalidData`](std::io::ErrorKind::InvalidData) error.
pub(crate) fn open(path: &Path) -> std::io::Result<BlockIndex> {
    // what a rewrite that a crash interrupted left
    let _ = std::fs::remove_file(path.with_extension("tmp"));
    let (file, data) = read(path)?;
    if data.get(HEADER_BYTES - 1) != Some(&VERSION_IN_MEMORY) {
        return map_checked(file, data);
    }
    let data = from_version_1(&data).ok_or_else(corrupt)?;
    let layout = check(&data).ok_or_else(corrupt)?;
    match replace(path, &data) {
        Ok(()) => {
            tracing::info!(index = %path.display(), "rewrote a version 1 block index as version 3");
            let (file, data) = read(path)?;
            map_checked(file, data)
        }
        Err(error) => {
            tracing::warn!(index = %path.display(), %error, "could not rewrite a version 1 block index; it is held in memory");
            Ok(BlockIndex { bytes: Bytes::Owned(data), layout })
        }
    }
}

/// The error for an index whose content is wrong.
fn corrupt() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt index")
}

/// The file at `path`, open, and its bytes.
fn read(path: &Path) -> std::io::Result<(std::fs::File, Vec<u8>)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    Ok((file, data))
}

/// Checks `data`, the bytes of `file`, and maps `file`.
fn map_checked(file: std::fs::File, data: Vec<u8>) -> std::io::Result<BlockIndex> {
    let layout = check(&data).ok_or_else(corrupt)?;
    // SAFETY: a map is sound while nothing writes to or truncates its file. A block's files
    // are written before the block is renamed into place and never after, in a data
    // directory this process holds locked; a merge that deletes a block only unlinks its
    // files, which the map keeps readable. The checked bytes and the map come from the same
    // open file. Changing or truncating a block's files from outside while promflow runs is
    // not supported, as for Prometheus's mapped indexes: a read of a truncated page kills
    // the process (SIGBUS), and changed bytes are read unchecked.
    let map = unsafe { Mmap::map(&file)? };
    if map.len() != data.len() {
        return Err(corrupt());
    }
    Ok(BlockIndex { bytes: Bytes::Mapped(map), layout })
}

/// Replaces the file at `path` by `data`, atomically.
fn replace(path: &Path, data: &[u8]) -> Result<(), crate::Error> {
    let tmp = path.with_extension("tmp");
    super::write_synced(&tmp, data)?;
    std::fs::rename(&tmp, path).map_err(|e| crate::Error::Io(format!("replacing {}", path.display()), e))?;
    super::sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

impl BlockIndex {
    /// Symbol `i`.
    fn symbol(&self, i: u64) -> Option<&str> {
        std::str::from_utf8(self.symbol_bytes(i)?).ok()
    }

    /// Symbol `i`'s bytes, not checked as UTF-8.
    fn symbol_bytes(&self, i: u64) -> Option<&[u8]> {
        let at = offset_at(&self.bytes, self.layout.symbols, usize::try_from(i).ok()?)?;
        read_bytes(&mut cursor_at(&self.bytes, at)?)
    }

    /// The number of the symbol `s`, when the block has it.
    fn symbol_number(&self, s: &str) -> Option<u32> {
        let i = self.first_symbol_from(s);
        (self.symbol(i as u64)? == s).then_some(i as u32)
    }

    /// The number of the first symbol not below `s`.
    fn first_symbol_from(&self, s: &str) -> usize {
        partition_point(0..self.layout.symbols.len, |i| self.symbol(i as u64).unwrap_or_default() < s)
    }

    /// A cursor at entry `i` of the series table: series `i`'s entry in version 2, group
    /// `i`'s first in version 3.
    fn series_entry(&self, i: usize) -> Option<Cursor<'_>> {
        cursor_at(&self.bytes, offset_at(&self.bytes, self.layout.series, i)?)
    }

    /// Series `id`'s entry, and its number of rows.
    fn entry(&self, id: u32) -> Option<(Entry, u64)> {
        let (base, mut entry) = (self.layout.base, Entry::default());
        if !grouped(self.layout.version) {
            let mut c = self.series_entry(id as usize)?;
            read_pairs(&mut c, &mut entry.pairs)?;
            let span = read_span_after_labels(&mut c, base)?;
            (entry.first_row, entry.min_t, entry.max_t) = (span.first_row, span.min_t, span.max_t);
            return Some((entry, span.rows));
        }
        let mut walk = Walk { c: Cursor(&[]), next: None, entry };
        let rows = self.walk_to(id, &mut walk)?;
        Some((walk.entry, rows))
    }

    /// Moves `walk` to series `id` of a version 3 file, on from where it is when `id` is
    /// ahead of it in the same group, and returns the series' number of rows.
    fn walk_to<'a>(&'a self, id: u32, walk: &mut Walk<'a>) -> Option<u64> {
        let Layout { base, top, total_rows, .. } = self.layout;
        let id = id as usize;
        if id >= self.len() {
            return None;
        }
        let group = id / SERIES_GROUP;
        if walk.next.is_none_or(|next| next == 0 || next > id + 1 || (next - 1) / SERIES_GROUP != group) {
            walk.c = self.series_entry(group)?;
            walk.next = Some(group * SERIES_GROUP);
        }
        while let Some(next) = walk.next.filter(|&next| next <= id) {
            // a series that does not decode leaves the walk to start again at its group
            walk.next = None;
            read_entry(&mut walk.c, next.is_multiple_of(SERIES_GROUP), base, top, &mut walk.entry)?;
            walk.next = Some(next + 1);
        }
        // its rows run to the next series' first row, written whole when it starts a group
        let first_row = walk.entry.first_row;
        let end = if id + 1 == self.len() {
            total_rows
        } else if (id + 1).is_multiple_of(SERIES_GROUP) {
            self.series_entry((id + 1) / SERIES_GROUP)?.uvarint()?
        } else {
            first_row.checked_add(Cursor(walk.c.0).uvarint()?)?
        };
        end.checked_sub(first_row)
    }

    /// Where series `id`'s rows are and the time span they cover.
    pub(crate) fn span(&self, id: u32) -> Option<SeriesSpan> {
        let (Entry { first_row, min_t, max_t, .. }, rows) = self.entry(id)?;
        Some(SeriesSpan { first_row, rows, min_t, max_t })
    }

    /// [`span`](Self::span) of each of `ids`: ids in ascending order decode each group they
    /// fall in once, up to the last of them.
    pub(crate) fn spans(&self, ids: &[u32]) -> Vec<Option<SeriesSpan>> {
        if !grouped(self.layout.version) {
            return ids.iter().map(|&id| self.span(id)).collect();
        }
        let mut walk = Walk { c: Cursor(&[]), next: None, entry: Entry::default() };
        ids.iter()
            .map(|&id| {
                let rows = self.walk_to(id, &mut walk)?;
                let Entry { first_row, min_t, max_t, .. } = walk.entry;
                Some(SeriesSpan { first_row, rows, min_t, max_t })
            })
            .collect()
    }

    /// The `(name, value)` pairs of series `id`, in name order (none for an unknown id).
    fn pairs(&self, id: u32) -> impl Iterator<Item = (&str, &str)> {
        let pairs = self.entry(id).map(|(entry, _)| entry.pairs).unwrap_or_default();
        pairs.into_iter().map_while(|(name, value)| Some((self.symbol(name)?, self.symbol(value)?)))
    }

    /// The label set of a series entry's `pairs` of symbols (up to a symbol that does not
    /// read).
    fn labels_of_pairs(&self, pairs: &[(u64, u64)]) -> Labels {
        Labels::from_sorted_pairs(
            pairs.iter().map_while(|&(name, value)| Some((self.symbol(name)?, self.symbol(value)?))),
        )
    }

    /// The labels of series `id`.
    pub(crate) fn labels(&self, id: u32) -> Labels {
        Labels::from_sorted_pairs(self.pairs(id))
    }

    /// [`labels`](Self::labels) of each of `ids` (ascending): each group they fall in is
    /// decoded once, up to the last of them, where one series after another would decode it
    /// from its start each time.
    pub(crate) fn labels_of(&self, ids: &[u32]) -> Vec<Labels> {
        if !grouped(self.layout.version) {
            return ids.iter().map(|&id| self.labels(id)).collect();
        }
        let mut walk = Walk { c: Cursor(&[]), next: None, entry: Entry::default() };
        ids.iter()
            .map(|&id| match self.walk_to(id, &mut walk) {
                Some(_) => self.labels_of_pairs(&walk.entry.pairs),
                None => Labels::default(),
            })
            .collect()
    }

    /// The union of `sorted` (sorted, unique) and the labels of `ids` (ascending, hence in
    /// label order), sorted and unique. A series `sorted` holds already is compared with it
    /// where it lies encoded and not built: a lookup over many blocks, which find the same
    /// series block after block, builds each label set once.
    pub(crate) fn merge_labels_of(&self, ids: &[u32], sorted: Vec<Labels>) -> Vec<Labels> {
        let mut out = Vec::with_capacity(sorted.len().max(ids.len()));
        let mut known = sorted.into_iter().peekable();
        self.for_each_pairs(ids, |pairs| {
            // bytewise, as `Labels` orders its strings, and without checking them as UTF-8
            let encoded = || {
                pairs
                    .iter()
                    .map_while(|&(name, value)| Some((self.symbol_bytes(name)?, self.symbol_bytes(value)?)))
            };
            loop {
                match known.peek().map(|l| cmp_encoded(l, encoded())) {
                    Some(Ordering::Less) => out.extend(known.next()),
                    Some(Ordering::Equal) => {
                        out.extend(known.next());
                        break;
                    }
                    Some(Ordering::Greater) | None => {
                        out.push(self.labels_of_pairs(pairs));
                        break;
                    }
                }
            }
        });
        out.extend(known);
        out
    }

    /// Calls `f` with the label symbols of each of `ids` (ascending) that decodes, walking
    /// each group once.
    fn for_each_pairs(&self, ids: &[u32], mut f: impl FnMut(&[(u64, u64)])) {
        if !grouped(self.layout.version) {
            for &id in ids {
                if let Some((entry, _)) = self.entry(id) {
                    f(&entry.pairs);
                }
            }
            return;
        }
        let mut walk = Walk { c: Cursor(&[]), next: None, entry: Entry::default() };
        for &id in ids {
            if self.walk_to(id, &mut walk).is_some() {
                f(&walk.entry.pairs);
            }
        }
    }

    /// The distinct symbols `pick` takes from the label symbols of `ids` (ascending),
    /// decoded in order: symbols are numbered in string order, so only the distinct ones
    /// are read as strings, once each.
    fn distinct_symbols(&self, ids: &[u32], mut pick: impl FnMut(&[(u64, u64)], &mut Vec<u64>)) -> Vec<&str> {
        let mut symbols = Vec::new();
        self.for_each_pairs(ids, |pairs| pick(pairs, &mut symbols));
        symbols.sort_unstable();
        symbols.dedup();
        symbols.into_iter().filter_map(|s| self.symbol(s)).collect()
    }

    /// The values of label `name` among series `ids` (ascending), sorted and unique.
    pub(crate) fn values_of(&self, ids: &[u32], name: &str) -> Vec<&str> {
        let Some(name) = self.symbol_number(name).map(u64::from) else {
            return Vec::new();
        };
        self.distinct_symbols(ids, |pairs, out| out.extend(pairs.iter().find(|p| p.0 == name).map(|p| p.1)))
    }

    /// The label names of series `ids` (ascending), sorted and unique.
    pub(crate) fn names_of(&self, ids: &[u32]) -> Vec<&str> {
        self.distinct_symbols(ids, |pairs, out| out.extend(pairs.iter().map(|p| p.0)))
    }

    /// How many series the block has.
    pub(crate) fn len(&self) -> usize {
        self.layout.series_count
    }

    /// Total rows in the samples file.
    pub(crate) fn total_rows(&self) -> u64 {
        self.layout.total_rows
    }

    /// Every label name in the block, in order.
    pub(crate) fn label_names(&self) -> impl Iterator<Item = &str> {
        self.layout.names.iter().map(|(name, _)| &**name)
    }

    /// The run of the pair table that holds `name`'s values.
    fn pairs_of_name(&self, name: &str) -> Range<usize> {
        let names = &self.layout.names;
        names.binary_search_by(|(n, _)| (**n).cmp(name)).map_or(0..0, |i| names[i].1.clone())
    }

    /// The value symbol of pair `i`.
    fn pair_value(&self, i: usize) -> Option<&str> {
        self.symbol(pair_at(&self.bytes, self.layout.pairs, i)?.1 as u64)
    }

    /// Every value of `name` in the block, in order.
    pub(crate) fn label_values(&self, name: &str) -> impl Iterator<Item = &str> {
        self.pairs_of_name(name).filter_map(|i| self.pair_value(i))
    }

    /// The ids of pair `i`.
    fn postings(&self, i: usize, ids: &mut Vec<u32>) {
        if let Some(mut c) =
            pair_at(&self.bytes, self.layout.pairs, i).and_then(|p| cursor_at(&self.bytes, p.2))
        {
            // checked when the index was opened
            let _ = read_postings(&mut c, ids);
        }
    }

    /// The first pair of `run` whose value symbol is not below `value`.
    fn first_pair_from(&self, run: Range<usize>, value: u32) -> usize {
        partition_point(run, |i| pair_at(&self.bytes, self.layout.pairs, i).is_some_and(|p| p.1 < value))
    }

    /// The pair of `run` (one name's) whose value is `value`, if the block has it.
    fn pair_of_value(&self, run: &Range<usize>, value: &str) -> Option<usize> {
        let value = self.symbol_number(value)?;
        let i = self.first_pair_from(run.clone(), value);
        pair_at(&self.bytes, self.layout.pairs, i).filter(|p| run.contains(&i) && p.1 == value).map(|_| i)
    }

    /// The length of the postings list of `name`=`value`, read from its head (0 if the block
    /// has no such pair).
    fn postings_len(&self, name: &str, value: &str) -> usize {
        self.pair_of_value(&self.pairs_of_name(name), value)
            .and_then(|i| pair_at(&self.bytes, self.layout.pairs, i))
            .and_then(|p| cursor_at(&self.bytes, p.2))
            .and_then(|mut c| usize::try_from(c.uvarint()?).ok())
            .unwrap_or(0)
    }

    /// An upper bound of the index entries [`select`](Self::select) reads for `matchers`
    /// ([`selection_cost`]).
    pub(crate) fn selection_cost(&self, matchers: &[Matcher]) -> Option<usize> {
        selection_cost(matchers, |name, value| self.postings_len(name, value))
    }

    /// The sorted ids whose `m.name` value satisfies `m`, which must not match "".
    fn matching_values(&self, m: &Matcher) -> Vec<u32> {
        let run = self.pairs_of_name(&m.name);
        if run.is_empty() {
            return Vec::new();
        }
        let chosen: Vec<usize> = match fast_path(m) {
            FastPath::Set(values) => values.iter().filter_map(|v| self.pair_of_value(&run, v)).collect(),
            FastPath::Prefix(prefix) => {
                let from = self.first_pair_from(run.clone(), self.first_symbol_from(&prefix) as u32);
                (from..run.end)
                    .take_while(|&i| self.pair_value(i).is_some_and(|v| v.starts_with(&prefix)))
                    .collect()
            }
            FastPath::Scan => run.filter(|&i| self.pair_value(i).is_some_and(|v| m.matches(v))).collect(),
        };
        let mut ids = Vec::new();
        for &i in &chosen {
            self.postings(i, &mut ids);
        }
        // a series has one value per label, so these lists are disjoint: no dedup
        if chosen.len() > 1 {
            ids.sort_unstable();
        }
        ids
    }

    /// Ids (ascending, hence in label order) of the series matching every matcher with
    /// samples in `mint..=maxt`.
    pub(crate) fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Vec<u32> {
        if mint > maxt {
            return Vec::new();
        }
        let all = || (0..self.len() as u32).collect();
        let mut ids = select_ids(
            matchers,
            |m| Cow::Owned(self.matching_values(m)),
            all,
            |id, name| {
                let value = self.pairs(id).find(|(n, _)| *n == name).map_or("", |(_, v)| v);
                ((id as usize) < self.len()).then_some(Cow::Borrowed(value))
            },
        );
        // every series' span lies within base..=top (stored in version 3): a range that covers
        // it holds a sample of each, and their entries need not be decoded to see that
        let covers_every_series =
            grouped(self.layout.version) && mint <= self.layout.base && maxt >= self.layout.top;
        if !covers_every_series {
            let spans = self.spans(&ids);
            let mut spans = spans.iter();
            ids.retain(|_| {
                spans.next().copied().flatten().is_some_and(|s| s.max_t >= mint && s.min_t <= maxt)
            });
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::put_varint;

    fn write(dir: &Path, data: &[u8]) -> std::path::PathBuf {
        let path = dir.join("index");
        std::fs::write(&path, data).unwrap();
        path
    }

    fn packed(pairs: &[(&str, &str)]) -> PackedLabels {
        PackedLabels::new(&Labels::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn round_trips_and_rejects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let a = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        let data = encode(&[(PackedLabels::new(&a), 3, -5, 10), (PackedLabels::new(&b), 2, 100, 100)]);
        let idx = open(&write(dir.path(), &data)).unwrap();
        assert!(matches!(idx.bytes, Bytes::Mapped(_)));
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.labels(1), b);
        assert_eq!(idx.labels(0), a);
        assert_eq!(idx.labels(2), Labels::default());
        assert_eq!(idx.span(1), Some(SeriesSpan { first_row: 3, rows: 2, min_t: 100, max_t: 100 }));
        assert_eq!(idx.span(0), Some(SeriesSpan { first_row: 0, rows: 3, min_t: -5, max_t: 10 }));
        assert_eq!(idx.span(2), None);
        let m = Matcher::new(crate::MatchOp::Equal, "job", "b").unwrap();
        assert_eq!(idx.select(std::slice::from_ref(&m), 0, 1000), vec![1]);
        assert_eq!(idx.select(&[m], 0, 99), Vec::<u32>::new());
        // a range covering every series' span (-5..=100) takes them all without their spans
        let up = [Matcher::new(crate::MatchOp::Equal, "__name__", "up").unwrap()];
        assert_eq!(idx.select(&up, -5, 100), vec![0, 1]);
        assert_eq!(idx.select(&up, i64::MIN, i64::MAX), vec![0, 1]);
        assert_eq!(idx.select(&up, -4, 100), vec![0, 1]);
        assert_eq!(idx.select(&up, 11, 100), vec![1]);
        assert_eq!(idx.select(&up, -5, 99), vec![0]);
        assert_eq!(idx.total_rows(), 5);
        assert_eq!(idx.label_names().collect::<Vec<_>>(), ["__name__", "job"]);
        assert_eq!(idx.label_values("job").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(idx.label_values("nope").count(), 0);
        for cut in [0, 3, 5, data.len() / 2, data.len() - 1] {
            assert!(check(&data[..cut]).is_none(), "{cut}");
        }
        for at in [4, 7, data.len() / 2, data.len() - 10] {
            let mut flipped = data.clone();
            flipped[at] ^= 1;
            let err = open(&write(dir.path(), &flipped)).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        }
    }

    /// `data` with byte `at` set to `byte` and the checksum made right again, so that what
    /// reads it gets past the checksum to the checks of the structure.
    fn resealed(data: &[u8], at: usize, byte: u8) -> Vec<u8> {
        let mut body = data[..data.len() - 4].to_vec();
        body[at] = byte;
        seal(&mut body);
        body
    }

    /// A postings list that names a series without that pair is refused, though each list
    /// on its own is well formed.
    #[test]
    fn postings_that_disagree_with_the_series_are_refused() {
        let rows: Vec<_> = ["a", "b"].iter().map(|job| (packed(&[("job", job)]), 1, 0, 0)).collect();
        let data = encode(&rows);
        let layout = check(&data).unwrap();
        let job_a = layout.names.iter().find(|(n, _)| &**n == "job").unwrap().1.start;
        let (_, _, at) = pair_at(&data, layout.pairs, job_a).unwrap();
        // the list is [count 1, id 0]: make it name series 1
        assert_eq!(&data[at..at + 2], [1, 0]);
        assert!(check(&resealed(&data, at + 1, 1)).is_none());
        assert!(check(&resealed(&data, at + 1, 0)).is_some());
    }

    /// Whatever single byte of a valid file is changed, with the checksum made right again,
    /// the file is refused or every read of it answers without panicking.
    #[test]
    fn changed_bytes_behind_a_good_checksum_never_panic() {
        let mut series: Vec<Labels> = (0..40)
            .map(|i| Labels::from_pairs([("__name__", format!("m{}", i % 3)), ("instance", format!("h{i}"))]))
            .collect();
        series.sort();
        let rows: Vec<_> = series.iter().map(|l| (PackedLabels::new(l), 2, 1_000 + 15, 1_000 + 30)).collect();
        let matchers = [
            Matcher::new(crate::MatchOp::Equal, "__name__", "m1").unwrap(),
            Matcher::new(crate::MatchOp::Regex, "instance", "h1.*").unwrap(),
            Matcher::new(crate::MatchOp::NotEqual, "instance", "h3").unwrap(),
        ];
        let mut accepted = 0;
        let (data, version_2) = (encode(&rows), encode_version(&rows, VERSION_ROWS_AFTER_LABELS));
        for (data, at) in
            [&data, &version_2].into_iter().flat_map(|d| (0..d.len() - 4).map(move |at| (d, at)))
        {
            for byte in [0u8, 1, 0x7f, 0x80, 0xff, data[at] ^ 0x04] {
                let changed = resealed(data, at, byte);
                let Some(layout) = check(&changed) else { continue };
                accepted += 1;
                let idx = BlockIndex { bytes: Bytes::Owned(changed), layout };
                for id in 0..idx.len() as u32 + 1 {
                    let _ = (idx.labels(id), idx.span(id));
                }
                for m in &matchers {
                    let _ = idx.select(std::slice::from_ref(m), 0, i64::MAX);
                }
                let _ = idx.label_names().map(|n| idx.label_values(n).count()).sum::<usize>();
            }
        }
        // the unchanged bytes among the variants, and changes that keep the file valid
        assert!(accepted > 0);
    }

    /// Every matcher shape selects what testing each series' labels selects.
    #[test]
    fn select_agrees_with_testing_every_series() {
        let dir = tempfile::tempdir().unwrap();
        let mut series: Vec<Labels> = [
            vec![("__name__", "up"), ("a", "api_x")],
            vec![("__name__", "up"), ("a", "api_y")],
            vec![("__name__", "up"), ("a", "b")],
            vec![("__name__", "up")],
            vec![("__name__", "down"), ("a", "GET")],
            vec![("__name__", "down"), ("a", "api_"), ("z", "1")],
        ]
        .into_iter()
        .map(Labels::from_pairs)
        .collect();
        series.sort();
        let rows: Vec<_> = series.iter().map(|l| (PackedLabels::new(l), 1, 0, 0)).collect();
        let idx = open(&write(dir.path(), &encode(&rows))).unwrap();
        let cases = [
            ("a", crate::MatchOp::Regex, "api_.*"),
            ("a", crate::MatchOp::Regex, "api_x|b"),
            ("a", crate::MatchOp::Regex, ".*"),
            ("a", crate::MatchOp::Regex, "GET|nope"),
            ("a", crate::MatchOp::Regex, "a.i.*"),
            ("a", crate::MatchOp::NotRegex, "api_.*"),
            ("a", crate::MatchOp::NotEqual, "b"),
            ("a", crate::MatchOp::Equal, ""),
            ("a", crate::MatchOp::Regex, "a.*|"),
            ("a", crate::MatchOp::Equal, "zzz"),
            ("z", crate::MatchOp::Equal, "1"),
            ("__name__", crate::MatchOp::Regex, "d.*"),
            ("missing", crate::MatchOp::Equal, "x"),
        ];
        for (name, op, v) in cases {
            let m = Matcher::new(op, name, v).unwrap();
            let want: Vec<u32> =
                (0..series.len() as u32).filter(|&i| m.matches(series[i as usize].get(name))).collect();
            assert_eq!(idx.select(std::slice::from_ref(&m), 0, 0), want, "{m}");
        }
        let two = [
            Matcher::new(crate::MatchOp::Equal, "__name__", "up").unwrap(),
            Matcher::new(crate::MatchOp::Regex, "a", "api.*").unwrap(),
        ];
        assert_eq!(idx.select(&two, 0, 0).len(), 2);
        // the cost bound reads the lists' lengths from the index: up 4, a=b 1, a=GET 1
        let cost = |ms: &[(&str, crate::MatchOp, &str)]| {
            let ms: Vec<Matcher> = ms.iter().map(|(n, op, v)| Matcher::new(*op, *n, *v).unwrap()).collect();
            idx.selection_cost(&ms)
        };
        assert_eq!(cost(&[("__name__", crate::MatchOp::Equal, "up")]), Some(4 + 4));
        assert_eq!(
            cost(&[("__name__", crate::MatchOp::Equal, "up"), ("a", crate::MatchOp::Regex, "b|GET")]),
            Some(4 + 2 + 2)
        );
        assert_eq!(
            cost(&[("a", crate::MatchOp::Equal, "zzz"), ("missing", crate::MatchOp::Equal, "x")]),
            Some(0)
        );
        assert_eq!(cost(&[("__name__", crate::MatchOp::Regex, "d.*")]), None);
    }

    /// A version 2 file reads in place as the version 3 file of the same series does, which
    /// takes fewer bytes: series that share a label with the one before and span the block.
    #[test]
    fn a_version_2_index_reads_as_version_3_in_fewer_bytes() {
        let mut series: Vec<Labels> = (0..300)
            .map(|i| {
                Labels::from_pairs([("__name__", format!("m{}", i % 7)), ("instance", format!("h{}", i / 7))])
            })
            .collect();
        series.sort();
        let start = 1_700_000_000_000i64;
        let rows: Vec<_> = series
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (rows, late_start, early_end) = ((i % 5) as u64 * 120, (i % 3) as i64, (i % 2) as i64);
                (
                    PackedLabels::new(l),
                    rows,
                    start + late_start * 15_000,
                    start + 7_185_000 - early_end * 15_000,
                )
            })
            .collect();
        let (v3, v2) = (encode(&rows), encode_version(&rows, VERSION_ROWS_AFTER_LABELS));
        // 9.7 bytes a series fewer when measured
        assert!(
            v3.len() + 8 * rows.len() <= v2.len(),
            "version 3 {} bytes, version 2 {}",
            v3.len(),
            v2.len()
        );
        let (dir3, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (idx3, idx2) = (open(&write(dir3.path(), &v3)).unwrap(), open(&write(dir2.path(), &v2)).unwrap());
        assert_eq!((idx3.layout.version, idx2.layout.version), (VERSION, VERSION_ROWS_AFTER_LABELS));
        let mut first_row = 0;
        for (id, (labels, n, min_t, max_t)) in rows.iter().enumerate() {
            let want = SeriesSpan { first_row, rows: *n, min_t: *min_t, max_t: *max_t };
            for idx in [&idx3, &idx2] {
                assert_eq!(idx.span(id as u32), Some(want), "series {id}");
                assert_eq!(PackedLabels::new(&idx.labels(id as u32)), *labels);
            }
            first_row += n;
        }
        assert_eq!((idx3.span(300), idx3.total_rows()), (None, first_row));
        // spans walked group by group, whatever order the ids come in
        let ids: Vec<u32> = [0, 1, 2, 15, 16, 17, 31, 32, 33, 250, 299, 300, 298, 5, 5, 15, 14, 290].into();
        let want: Vec<_> = ids.iter().map(|&id| idx3.span(id)).collect();
        assert_eq!((idx3.spans(&ids), idx2.spans(&ids)), (want.clone(), want));
        // and labels the same way (an unknown id has none)
        let want: Vec<Labels> = ids.iter().map(|&id| idx3.labels(id)).collect();
        assert_eq!(want[11], Labels::default());
        assert_eq!((idx3.labels_of(&ids), idx2.labels_of(&ids)), (want.clone(), want));
        // one label's values and the label names of a selection, as their label sets have them
        let picked: Vec<u32> = [0, 1, 2, 15, 16, 17, 31, 32, 33, 250, 298, 299].into();
        let sets = idx3.labels_of(&picked);
        let mut values: Vec<&str> = sets.iter().map(|l| l.get("instance")).collect();
        values.sort_unstable();
        values.dedup();
        assert!(values.len() > 1);
        for idx in [&idx3, &idx2] {
            assert_eq!(idx.values_of(&picked, "instance"), values);
            assert_eq!(idx.names_of(&picked), ["__name__", "instance"]);
            assert_eq!(idx.values_of(&picked, "job"), Vec::<&str>::new());
            assert_eq!((idx.values_of(&[], "instance"), idx.names_of(&[])), (vec![], vec![]));
        }
        // merged into a sorted list: the union, sorted and unique, whether the list's sets
        // come before, between, among or after the block's
        let ids: Vec<u32> = [0, 1, 2, 15, 16, 17, 31, 32, 33, 250, 298, 299].into();
        let mut known: Vec<Labels> = [3, 16, 31, 299].iter().map(|&id| idx3.labels(id)).collect();
        known.extend([
            Labels::default(),
            Labels::from_pairs([("__name__", "a")]),
            Labels::from_pairs([("__name__", "m3"), ("instance", "h10x")]),
            Labels::from_pairs([("zz", "z")]),
        ]);
        known.sort();
        let mut want: Vec<Labels> = known.iter().cloned().chain(idx3.labels_of(&ids)).collect();
        want.sort();
        want.dedup();
        assert_eq!(want.len(), known.len() + ids.len() - 3);
        for idx in [&idx3, &idx2] {
            assert_eq!(idx.merge_labels_of(&ids, known.clone()), want);
            assert_eq!(idx.merge_labels_of(&ids, Vec::new()), idx3.labels_of(&ids));
            assert_eq!(idx.merge_labels_of(&[], known.clone()), known);
        }
        let m = Matcher::new(crate::MatchOp::Regex, "instance", "h1.*").unwrap();
        for (mint, maxt) in [(0, i64::MAX), (start + 7_185_000, i64::MAX), (0, start)] {
            let want: Vec<u32> = (0..rows.len() as u32)
                .filter(|&id| m.matches(series[id as usize].get("instance")))
                .filter(|&id| rows[id as usize].3 >= mint && rows[id as usize].2 <= maxt)
                .collect();
            let m = std::slice::from_ref(&m);
            assert_eq!((idx3.select(m, mint, maxt), idx2.select(m, mint, maxt)), (want.clone(), want));
        }
    }

    /// A version 1 file reads as it did, and is rewritten as version 3 in place.
    #[test]
    fn a_version_1_index_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let symbols = ["__name__", "a", "b", "job", "up"];
        let mut v1 = sealed_header(MAGIC, VERSION_IN_MEMORY);
        put_uvarint(&mut v1, symbols.len() as u64);
        for s in symbols {
            put_str(&mut v1, s);
        }
        put_uvarint(&mut v1, 2);
        for (job, rows, min_t) in [(1u64, 3u64, -5i64), (2, 2, 100)] {
            put_uvarint(&mut v1, 2);
            for n in [0, 4, 3, job] {
                put_uvarint(&mut v1, n);
            }
            put_uvarint(&mut v1, rows);
            put_varint(&mut v1, min_t);
            put_uvarint(&mut v1, 15);
        }
        seal(&mut v1);
        let path = write(dir.path(), &v1);
        let idx = open(&path).unwrap();
        assert!(matches!(idx.bytes, Bytes::Mapped(_)));
        assert_eq!(idx.labels(1), Labels::from_pairs([("__name__", "up"), ("job", "b")]));
        assert_eq!(idx.span(1), Some(SeriesSpan { first_row: 3, rows: 2, min_t: 100, max_t: 115 }));
        assert_eq!(std::fs::read(&path).unwrap()[4], VERSION);
        let want = encode(&[
            (packed(&[("__name__", "up"), ("job", "a")]), 3, -5, 10),
            (packed(&[("__name__", "up"), ("job", "b")]), 2, 100, 115),
        ]);
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }
}
