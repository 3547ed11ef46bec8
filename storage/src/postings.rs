//! The inverted index shared by the head and the blocks: label name → value → sorted series
//! ids, and the evaluation of label matchers against it.
//!
//! Values are kept sorted per name so that a regex with a literal prefix (`api_.*`) scans only
//! the values that share the prefix, and a regex that is an alternation of literals
//! (`GET|POST`) looks each literal up instead of testing every value.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::codec::{put_uvarint, Cursor};
use crate::{MatchOp, Matcher};

/// How a matcher's value set can be found without testing every value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FastPath {
    /// The matcher accepts exactly these values.
    Set(Vec<String>),
    /// The matcher accepts every value that starts with this prefix.
    Prefix(String),
    /// Each value has to be tested.
    Scan,
}

/// Characters that make a regex more than a literal.
fn is_meta(c: char) -> bool {
    matches!(c, '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$')
}

/// Analyses a matcher for [`FastPath`]s. Only plainly literal shapes are recognised; anything
/// else (escapes included) is scanned, which is always correct.
pub(crate) fn fast_path(m: &Matcher) -> FastPath {
    match m.op {
        MatchOp::Equal => return FastPath::Set(vec![m.value.clone()]),
        MatchOp::Regex => {}
        _ => return FastPath::Scan,
    }
    let mut src = m.value.as_str();
    if let Some(inner) = src.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
        if !inner.contains(['(', ')']) {
            src = inner;
        }
    }
    if let Some(prefix) = src.strip_suffix(".*") {
        if !prefix.chars().any(is_meta) {
            return FastPath::Prefix(prefix.to_string());
        }
    }
    let alternatives: Vec<&str> = src.split('|').collect();
    if alternatives.iter().all(|a| !a.chars().any(is_meta)) {
        let mut set: Vec<String> = alternatives.into_iter().map(str::to_string).collect();
        set.sort_unstable();
        set.dedup();
        return FastPath::Set(set);
    }
    FastPath::Scan
}

/// Keeps the elements of sorted `acc` that are also in sorted `other`.
pub(crate) fn intersect<Id: Copy + Ord>(acc: &mut Vec<Id>, other: &[Id]) {
    let mut rest = other;
    acc.retain(|r| {
        let i = rest.partition_point(|x| x < r);
        rest = &rest[i..];
        rest.first() == Some(r)
    });
}

/// A set of series refs to test every id of the index against: a bit per ref between the
/// smallest and the largest (refs are handed out in order, so the refs removed together lie
/// close), or a sorted list when they are spread too thin for that.
pub(crate) enum RefSet {
    /// Bit `r - first` is set for each ref `r`.
    Bits { first: u64, bits: fixedbitset::FixedBitSet },
    /// The refs, sorted.
    Sorted(Vec<u64>),
}

impl RefSet {
    /// The set of `refs` (sorted, without repeats).
    pub(crate) fn new(refs: &[u64]) -> RefSet {
        let (Some(&first), Some(&last)) = (refs.first(), refs.last()) else {
            return RefSet::Sorted(Vec::new());
        };
        let span = (last - first).saturating_add(1);
        // at most 8 bytes a ref, as the list would take
        if span / 64 > refs.len() as u64 {
            return RefSet::Sorted(refs.to_vec());
        }
        let mut bits = fixedbitset::FixedBitSet::with_capacity(span as usize);
        for &r in refs {
            bits.insert((r - first) as usize);
        }
        RefSet::Bits { first, bits }
    }

    /// Whether `r` is in the set.
    pub(crate) fn contains(&self, r: u64) -> bool {
        match self {
            RefSet::Bits { first, bits } => r.checked_sub(*first).is_some_and(|i| bits.contains(i as usize)),
            RefSet::Sorted(refs) => refs.binary_search(&r).is_ok(),
        }
    }
}

/// A sorted list of series refs, each stored as its difference from the one before (the
/// first from 0) in a varint: refs are handed out in order and the series of one label pair
/// tend to be made together, so a ref takes one or two bytes where a plain one takes eight.
/// Refs mostly arrive in ascending order, which appends. Those that do not (a WAL replay
/// creates series in the order of their first samples) wait in a small sorted list beside
/// the bytes, merged into them once they are an eighth of the list: inserts in any order
/// cost a bounded amount of work each, on average.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PostingList {
    bytes: Vec<u8>,
    /// Refs in `bytes`.
    coded: usize,
    /// The largest ref in `bytes`, which the next difference is taken from.
    last: u64,
    /// Refs below `last` not yet in `bytes`, sorted.
    late: Vec<u64>,
}

/// The sorted union of two sorted sequences, each ref once.
fn merged(a: impl Iterator<Item = u64>, b: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(&x), Some(&y)) if x == y => {
            b.next();
            a.next()
        }
        (Some(&x), Some(&y)) if y < x => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

impl PostingList {
    /// The list of `refs`, sorted and without repeats.
    fn from_sorted(refs: impl Iterator<Item = u64>) -> Self {
        let mut list = PostingList::default();
        for r in refs {
            list.append(r);
        }
        list.bytes.shrink_to_fit();
        list
    }

    /// Appends `r`, which is larger than every ref in the bytes. A full buffer grows by a
    /// quarter, not twice over: the lists hold a few refs per series in all, and doubling
    /// would leave a third of that room empty on average.
    fn append(&mut self, r: u64) {
        const MAX_VARINT: usize = 10;
        if self.bytes.capacity() - self.bytes.len() < MAX_VARINT {
            self.bytes.reserve_exact((self.bytes.len() / 4).max(2 * MAX_VARINT));
        }
        put_uvarint(&mut self.bytes, r - self.last);
        self.last = r;
        self.coded += 1;
    }

    /// Adds `r`; a ref the list holds already stays in it once.
    pub(crate) fn insert(&mut self, r: u64) {
        if self.coded == 0 || r > self.last {
            self.append(r);
            return;
        }
        if r == self.last {
            return;
        }
        if let Err(i) = self.late.binary_search(&r) {
            self.late.insert(i, r);
        }
        if self.late.len() > (self.coded / 8).max(32) {
            *self = PostingList::from_sorted(self.iter());
        }
    }

    /// Keeps the refs `keep` accepts, asking it once for each.
    fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        let kept = PostingList::from_sorted(self.iter().filter(|&r| keep(r)));
        if kept.len() != self.len() || !self.late.is_empty() {
            *self = kept;
        }
    }

    /// How many refs the list holds (a ref inserted twice while waiting to be merged counts
    /// twice until then).
    pub(crate) fn len(&self) -> usize {
        self.coded + self.late.len()
    }

    /// Whether the list is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The refs, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut c = Cursor(&self.bytes);
        let mut r = 0u64;
        let coded = std::iter::from_fn(move || {
            r += c.uvarint()?;
            Some(r)
        });
        merged(coded, self.late.iter().copied())
    }
}

/// Label name → value (sorted) → the refs of the series carrying that pair: the head's
/// inverted index. The set of every ref is not kept: the head's series map knows it.
#[derive(Debug, Default)]
pub(crate) struct Postings {
    by_name: HashMap<String, BTreeMap<String, PostingList>>,
}

impl Postings {
    /// Indexes series `r` under each `(name, value)` pair.
    pub(crate) fn insert<'a>(&mut self, r: u64, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (name, value) in pairs {
            let values = match self.by_name.get_mut(name) {
                Some(v) => v,
                None => self.by_name.entry(name.to_string()).or_default(),
            };
            match values.get_mut(value) {
                Some(list) => list.insert(r),
                None => {
                    values.insert(value.to_string(), PostingList::from_sorted(std::iter::once(r)));
                }
            }
        }
    }

    /// Removes every ref that `gone` names from the index, dropping pairs left without
    /// series. It is asked once for each ref of each pair: it should answer from memory that
    /// stays in the caches ([`RefSet`]).
    pub(crate) fn remove_where(&mut self, gone: impl Fn(u64) -> bool) {
        self.by_name.retain(|_, values| {
            values.retain(|_, list| {
                list.retain(|r| !gone(r));
                !list.is_empty()
            });
            !values.is_empty()
        });
    }

    /// The values of `name` with their refs.
    pub(crate) fn values(&self, name: &str) -> Option<&BTreeMap<String, PostingList>> {
        self.by_name.get(name)
    }

    /// An upper bound of the refs [`Postings::select`] reads for `matchers`
    /// ([`selection_cost`]).
    pub(crate) fn selection_cost(&self, matchers: &[Matcher]) -> Option<usize> {
        selection_cost(matchers, |name, value| {
            self.by_name.get(name).and_then(|values| values.get(value)).map_or(0, PostingList::len)
        })
    }

    /// Every label name with its values.
    pub(crate) fn names(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, PostingList>)> {
        self.by_name.iter()
    }

    /// The sorted refs whose `m.name` value satisfies `m`, which must not match "".
    fn matching_values(&self, m: &Matcher) -> Vec<u64> {
        let Some(values) = self.by_name.get(&m.name) else { return Vec::new() };
        let lists: Vec<&PostingList> = match fast_path(m) {
            FastPath::Set(set) => set.iter().filter_map(|v| values.get(v)).collect(),
            FastPath::Prefix(p) => values
                .range::<str, _>((std::ops::Bound::Included(p.as_str()), std::ops::Bound::Unbounded))
                .take_while(|(v, _)| v.starts_with(&p))
                .map(|(_, l)| l)
                .collect(),
            FastPath::Scan => values.iter().filter(|(v, _)| m.matches(v)).map(|(_, l)| l).collect(),
        };
        let mut refs: Vec<u64> = Vec::with_capacity(lists.iter().map(|l| l.len()).sum());
        for list in &lists {
            refs.extend(list.iter());
        }
        // a series has one value per label, so these lists are disjoint: no dedup
        if lists.len() > 1 {
            refs.sort_unstable();
        }
        refs
    }

    /// Sorted refs of the series that satisfy every matcher ([`select_ids`]).
    pub(crate) fn select<'s>(
        &'s self,
        matchers: &[Matcher],
        all: impl FnOnce() -> Vec<u64>,
        value_of: impl Fn(u64, &str) -> Option<Cow<'s, str>>,
    ) -> Vec<u64> {
        select_ids(matchers, |m| Cow::Owned(self.matching_values(m)), all, value_of)
    }
}

/// An upper bound of the ids [`select_ids`] reads for `matchers`, from `list_len(name, value)`,
/// the length of one postings list: the lists of the matchers the index answers, added, and
/// the shortest of them once more for the candidates tested against the other matchers and
/// the series then read. `None` when a matcher would have the index test its values one by
/// one (a regex other than a set of literals, a negation that does not match "") or no
/// matcher narrows the selection (every series).
pub(crate) fn selection_cost(
    matchers: &[Matcher],
    mut list_len: impl FnMut(&str, &str) -> usize,
) -> Option<usize> {
    let mut total = 0usize;
    let mut shortest: Option<usize> = None;
    for m in matchers.iter().filter(|m| !m.matches_empty()) {
        let FastPath::Set(values) = fast_path(m) else { return None };
        let len = values.iter().fold(0usize, |sum, v| sum.saturating_add(list_len(&m.name, v)));
        total = total.saturating_add(len);
        shortest = Some(shortest.map_or(len, |s| s.min(len)));
    }
    Some(total.saturating_add(shortest?))
}

/// Sorted ids of the series that satisfy every matcher, from an inverted index that answers
/// `matching(m)` (the sorted ids whose `m.name` value satisfies `m`, for matchers that do not
/// match the empty string), given their labels through `value_of(id, name)` for matchers the
/// index cannot answer (those accepting ""), and every id, sorted, through `all` when no
/// matcher narrows the set.
pub(crate) fn select_ids<'l, 'v, Id: Copy + Ord + 'l>(
    matchers: &[Matcher],
    mut matching: impl FnMut(&Matcher) -> Cow<'l, [Id]>,
    all: impl FnOnce() -> Vec<Id>,
    value_of: impl Fn(Id, &str) -> Option<Cow<'v, str>>,
) -> Vec<Id> {
    let mut lists: Vec<Cow<'l, [Id]>> = Vec::new();
    let mut filters: Vec<&Matcher> = Vec::new();
    for m in matchers {
        if m.matches_empty() {
            // also matches series without the label: cannot come from the index alone
            filters.push(m);
            continue;
        }
        let list = matching(m);
        if list.is_empty() {
            return Vec::new();
        }
        lists.push(list);
    }
    lists.sort_by_key(|l| l.len());
    let mut lists = lists.into_iter();
    let mut out: Vec<Id> = match lists.next() {
        None => all(),
        Some(first) => {
            let mut acc = first.into_owned();
            for l in lists {
                if acc.is_empty() {
                    break;
                }
                intersect(&mut acc, &l);
            }
            acc
        }
    };
    if !filters.is_empty() {
        out.retain(|&id| filters.iter().all(|m| m.matches(value_of(id, &m.name).as_deref().unwrap_or(""))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(op: MatchOp, v: &str) -> Matcher {
        Matcher::new(op, "a", v).unwrap()
    }

    #[test]
    fn fast_paths_recognise_only_literal_shapes() {
        assert_eq!(
            fast_path(&m(MatchOp::Regex, "GET|POST")),
            FastPath::Set(vec!["GET".into(), "POST".into()])
        );
        assert_eq!(fast_path(&m(MatchOp::Regex, "(x|y)")), FastPath::Set(vec!["x".into(), "y".into()]));
        assert_eq!(fast_path(&m(MatchOp::Regex, "api_.*")), FastPath::Prefix("api_".into()));
        assert_eq!(fast_path(&m(MatchOp::Regex, "a.c")), FastPath::Scan);
        assert_eq!(fast_path(&m(MatchOp::Regex, "a\\.c|d")), FastPath::Scan);
        assert_eq!(fast_path(&m(MatchOp::Regex, "(a|b).*")), FastPath::Scan);
        assert_eq!(fast_path(&m(MatchOp::NotRegex, "a|b")), FastPath::Scan);
    }

    #[test]
    fn a_ref_set_holds_its_refs_and_no_others_dense_or_sparse() {
        let dense: Vec<u64> = (1000..3000).filter(|r| r % 3 != 0).collect();
        let sparse = vec![0, 7, 1 << 40, u64::MAX];
        for refs in [dense, sparse, vec![5], vec![]] {
            let set = RefSet::new(&refs);
            let probes =
                refs.iter().flat_map(|&r| [r.wrapping_sub(1), r, r.wrapping_add(1)]).chain([0, 999, 3001]);
            for r in probes {
                assert_eq!(set.contains(r), refs.binary_search(&r).is_ok(), "{r}");
            }
        }
        assert!(matches!(RefSet::new(&[0, 7, 1 << 40]), RefSet::Sorted(_)));
        assert!(matches!(RefSet::new(&[3, 9, 70]), RefSet::Bits { .. }));
    }

    /// A list holds its refs in order whatever order they come in, once each, and refs that
    /// come in no order at all are merged into its bytes on the way.
    #[test]
    fn a_posting_list_keeps_its_refs_sorted_and_once() {
        let mut list = PostingList::default();
        // a permutation of 0..10_000 in steps of 7 (coprime), the first half in order
        let refs: Vec<u64> =
            (0..5_000).chain((0..10_000).map(|i| (i * 7) % 10_000).filter(|&r| r >= 5_000)).collect();
        for (i, &r) in refs.iter().enumerate() {
            list.insert(r);
            assert!(list.late.len() <= (list.coded / 8).max(32) + 1, "{i}");
        }
        assert_eq!(list.len(), 10_000);
        assert!(list.iter().eq(0..10_000));

        let mut list = PostingList::default();
        let mut want = std::collections::BTreeSet::new();
        let asked = std::cell::Cell::new(0);
        for r in [5u64, 6, 900, 900, 7, 0, u64::MAX, 1 << 40, 3, 6] {
            list.insert(r);
            want.insert(r);
            assert_eq!(list.iter().collect::<Vec<_>>(), want.iter().copied().collect::<Vec<_>>());
        }
        list.retain(|r| {
            asked.set(asked.get() + 1);
            r % 2 == 1
        });
        assert_eq!(asked.get(), want.len());
        assert_eq!(list.iter().collect::<Vec<_>>(), [3, 5, 7, u64::MAX]);
        list.retain(|_| false);
        assert!(list.is_empty() && list.iter().next().is_none());
        // refs made together take a byte each
        let dense = PostingList::from_sorted(1_000_000..1_001_000);
        assert!(dense.bytes.len() < 1_010, "{}", dense.bytes.len());
    }

    #[test]
    fn select_agrees_with_testing_every_series() {
        let series: Vec<Vec<(&str, &str)>> = vec![
            vec![("__name__", "up"), ("a", "api_x")],
            vec![("__name__", "up"), ("a", "api_y")],
            vec![("__name__", "up"), ("a", "b")],
            vec![("__name__", "up")],
            vec![("__name__", "down"), ("a", "GET")],
        ];
        let mut p = Postings::default();
        for (i, s) in series.iter().enumerate() {
            p.insert(i as u64, s.iter().copied());
        }
        let cases = [
            (MatchOp::Regex, "api_.*"),
            (MatchOp::Regex, "api_x|b"),
            (MatchOp::Regex, ".*"),
            (MatchOp::Regex, "GET|nope"),
            (MatchOp::NotRegex, "api_.*"),
            (MatchOp::NotEqual, "b"),
            (MatchOp::Equal, ""),
            (MatchOp::Regex, "a.*|"),
        ];
        for (op, v) in cases {
            let matcher = m(op, v);
            let got = p.select(
                std::slice::from_ref(&matcher),
                || (0..series.len() as u64).collect(),
                |id, name| {
                    series[id as usize].iter().find(|(n, _)| *n == name).map(|(_, v)| Cow::Borrowed(*v))
                },
            );
            let want: Vec<u64> = (0..series.len() as u64)
                .filter(|&i| {
                    matcher.matches(series[i as usize].iter().find(|(n, _)| *n == "a").map_or("", |(_, v)| v))
                })
                .collect();
            assert_eq!(got, want, "{matcher}");
        }
        // the cost of a selection: its lists' lengths and the shortest once more, or unknown
        let cost = |ms: &[(&str, MatchOp, &str)]| {
            let ms: Vec<Matcher> = ms.iter().map(|(n, op, v)| Matcher::new(*op, *n, *v).unwrap()).collect();
            p.selection_cost(&ms)
        };
        assert_eq!(cost(&[("a", MatchOp::Equal, "b")]), Some(2));
        assert_eq!(
            cost(&[("__name__", MatchOp::Equal, "up"), ("a", MatchOp::Regex, "api_x|b")]),
            Some(4 + 2 + 2)
        );
        assert_eq!(cost(&[("__name__", MatchOp::Equal, "up"), ("a", MatchOp::NotEqual, "b")]), Some(4 + 4));
        assert_eq!(cost(&[("a", MatchOp::Equal, "nope")]), Some(0));
        assert_eq!(cost(&[("a", MatchOp::Regex, "api_.*")]), None);
        assert_eq!(cost(&[("__name__", MatchOp::Equal, "up"), ("a", MatchOp::Regex, "a.c")]), None);
        assert_eq!(cost(&[("a", MatchOp::NotEqual, "b")]), None);
        assert_eq!(cost(&[]), None);
        p.remove_where(|id| id == 0 || id == 4);
        assert_eq!(p.values("__name__").unwrap().get("up").unwrap().iter().collect::<Vec<_>>(), [1, 2, 3]);
        assert!(p.values("__name__").unwrap().get("down").is_none());
        assert!(p.values("a").unwrap().get("api_x").is_none());
        assert!(p.values("a").unwrap().get("GET").is_none());
    }
}
