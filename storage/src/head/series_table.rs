//! The head's series by ref, in pages of consecutive refs.
//!
//! Refs are handed out in ascending order, so the series made together share pages and a
//! page is mostly full: a series costs its 8-byte slot. A hash map from ref to series cost
//! 16 bytes an entry in a table whose buckets are a power of two of at least 8/7 of its
//! entries: 35 bytes a series at a million. A page is freed with its last series; until then
//! it keeps all its [`PAGE_SLOTS`] slots, so a series that outlives its page-mates costs up
//! to half a kilobyte.

use super::{MemSeries, SeriesRef, U64Map};

/// Slots per page: small enough that a page left with one series costs half a kilobyte.
const PAGE_SLOTS: usize = 64;

/// A page of consecutive refs.
#[derive(Debug)]
struct Page {
    slots: [Option<Box<MemSeries>>; PAGE_SLOTS],
    /// Slots in use.
    used: usize,
}

/// Where ref `r` lives: its page number and its slot there.
fn place(r: SeriesRef) -> (u64, usize) {
    (r / PAGE_SLOTS as u64, (r % PAGE_SLOTS as u64) as usize)
}

/// Series by ref.
#[derive(Debug, Default)]
pub(crate) struct SeriesTable {
    pages: U64Map<Box<Page>>,
    len: usize,
}

impl SeriesTable {
    /// The series with ref `r`.
    pub(crate) fn get(&self, r: &SeriesRef) -> Option<&MemSeries> {
        let (page, slot) = place(*r);
        self.pages.get(&page)?.slots[slot].as_deref()
    }

    /// The series with ref `r`, to change.
    pub(crate) fn get_mut(&mut self, r: &SeriesRef) -> Option<&mut MemSeries> {
        let (page, slot) = place(*r);
        self.pages.get_mut(&page)?.slots[slot].as_deref_mut()
    }

    /// Whether a series has ref `r`.
    pub(crate) fn contains_key(&self, r: &SeriesRef) -> bool {
        self.get(r).is_some()
    }

    /// Puts `series` under ref `r`, returning the series it replaces.
    pub(crate) fn insert(&mut self, r: SeriesRef, series: Box<MemSeries>) -> Option<Box<MemSeries>> {
        let (page, slot) = place(r);
        let page = self
            .pages
            .entry(page)
            .or_insert_with(|| Box::new(Page { slots: std::array::from_fn(|_| None), used: 0 }));
        let old = page.slots[slot].replace(series);
        if old.is_none() {
            page.used += 1;
            self.len += 1;
        }
        old
    }

    /// Takes the series with ref `r` out, dropping its page if it was the last there.
    pub(crate) fn remove(&mut self, r: &SeriesRef) -> Option<Box<MemSeries>> {
        let (number, slot) = place(*r);
        let page = self.pages.get_mut(&number)?;
        let old = page.slots[slot].take()?;
        page.used -= 1;
        self.len -= 1;
        if page.used == 0 {
            self.pages.remove(&number);
        }
        Some(old)
    }

    /// How many series there are.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every series with its ref, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SeriesRef, &MemSeries)> {
        self.pages.iter().flat_map(|(&page, p)| {
            p.slots
                .iter()
                .enumerate()
                .filter_map(move |(slot, s)| Some((page * PAGE_SLOTS as u64 + slot as u64, s.as_deref()?)))
        })
    }

    /// Every series with its ref, to change, in no particular order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (SeriesRef, &mut MemSeries)> {
        self.pages.iter_mut().flat_map(|(&page, p)| {
            p.slots.iter_mut().enumerate().filter_map(move |(slot, s)| {
                Some((page * PAGE_SLOTS as u64 + slot as u64, s.as_deref_mut()?))
            })
        })
    }

    /// Every ref, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = SeriesRef> + '_ {
        self.iter().map(|(r, _)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::PackedLabels;
    use crate::Labels;

    fn series(name: &str) -> Box<MemSeries> {
        Box::new(MemSeries::new(PackedLabels::new(&Labels::from_pairs([("__name__", name)]))))
    }

    /// The table answers as a map would, and a page goes with its last series.
    #[test]
    fn holds_what_a_map_would_and_drops_empty_pages() {
        let mut table = SeriesTable::default();
        let mut want = std::collections::BTreeMap::new();
        let refs = [0u64, 1, 63, 64, 65, 1000, u64::MAX, u64::MAX - 1, 5, 64];
        for (i, &r) in refs.iter().enumerate() {
            let name = format!("s{i}");
            let replaced = table.insert(r, series(&name)).is_some();
            assert_eq!(replaced, want.insert(r, name).is_some());
        }
        assert_eq!(table.len(), want.len());
        for (r, name) in &want {
            assert_eq!(table.get(r).unwrap().labels.get("__name__"), name);
        }
        assert!(table.get(&2).is_none() && table.get(&999).is_none());
        let mut seen: Vec<u64> = table.keys().collect();
        seen.sort_unstable();
        assert_eq!(seen, want.keys().copied().collect::<Vec<_>>());
        for r in [0u64, 1, 5, 63, 1000] {
            assert!(table.remove(&r).is_some());
            assert!(table.remove(&r).is_none());
        }
        // refs 0..64 are all gone: so is their page
        assert!(!table.pages.contains_key(&0));
        assert_eq!(table.len(), want.len() - 5);
        for (_, s) in table.iter_mut() {
            s.last.0 = 7;
        }
        assert!(table.iter().all(|(_, s)| s.last.0 == 7));
    }
}
