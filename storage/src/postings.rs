//! The inverted index shared by the head and the blocks: label name → value → sorted series
//! ids, and the evaluation of label matchers against it.
//!
//! Values are kept sorted per name so that a regex with a literal prefix (`api_.*`) scans only
//! the values that share the prefix, and a regex that is an alternation of literals
//! (`GET|POST`) looks each literal up instead of testing every value.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

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

/// Label name → value (sorted) → sorted ids of the series carrying that pair. The set of
/// every id is not kept: its owner (the head's series, a block's series count) knows it.
#[derive(Debug)]
pub(crate) struct Postings<Id> {
    by_name: HashMap<String, BTreeMap<String, Vec<Id>>>,
}

impl<Id> Default for Postings<Id> {
    fn default() -> Self {
        Postings { by_name: HashMap::new() }
    }
}

/// Inserts `id` into a sorted list; ids mostly grow, so this is usually a push. A full list
/// grows by a quarter, not twice over: the lists hold a few ids per series in all, and
/// doubling would leave a third of that room empty on average.
fn insert_sorted<Id: Copy + Ord>(list: &mut Vec<Id>, id: Id) {
    if list.len() == list.capacity() {
        list.reserve_exact((list.len() / 4).max(4));
    }
    match list.last() {
        Some(&last) if last >= id => {
            if let Err(i) = list.binary_search(&id) {
                list.insert(i, id);
            }
        }
        _ => list.push(id),
    }
}

impl<Id: Copy + Ord> Postings<Id> {
    /// Indexes series `id` under each `(name, value)` pair.
    pub(crate) fn insert<'a>(&mut self, id: Id, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (name, value) in pairs {
            let values = match self.by_name.get_mut(name) {
                Some(v) => v,
                None => self.by_name.entry(name.to_string()).or_default(),
            };
            match values.get_mut(value) {
                Some(list) => insert_sorted(list, id),
                None => {
                    values.insert(value.to_string(), vec![id]);
                }
            }
        }
    }

    /// Removes every id that `gone` names from the index, dropping pairs left without series.
    /// It is asked once for each id of each pair: it should answer from memory that stays in
    /// the caches ([`RefSet`]).
    pub(crate) fn remove_where(&mut self, gone: impl Fn(Id) -> bool) {
        self.by_name.retain(|_, values| {
            values.retain(|_, list| {
                list.retain(|&id| !gone(id));
                !list.is_empty()
            });
            !values.is_empty()
        });
    }

    /// The values of `name` with their ids.
    pub(crate) fn values(&self, name: &str) -> Option<&BTreeMap<String, Vec<Id>>> {
        self.by_name.get(name)
    }

    /// Every label name with its values.
    pub(crate) fn names(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, Vec<Id>>)> {
        self.by_name.iter()
    }

    /// The ids whose `m.name` value satisfies `m`, which must not match the empty string.
    fn matching_values(&self, m: &Matcher) -> Cow<'_, [Id]> {
        let Some(values) = self.by_name.get(&m.name) else { return Cow::Borrowed(&[]) };
        let mut lists: Vec<&Vec<Id>> = match fast_path(m) {
            FastPath::Set(set) => {
                if let [one] = set.as_slice() {
                    return values.get(one).map_or(Cow::Borrowed(&[]), |l| Cow::Borrowed(l.as_slice()));
                }
                set.iter().filter_map(|v| values.get(v)).collect()
            }
            FastPath::Prefix(p) => values
                .range::<str, _>((std::ops::Bound::Included(p.as_str()), std::ops::Bound::Unbounded))
                .take_while(|(v, _)| v.starts_with(&p))
                .map(|(_, l)| l)
                .collect(),
            FastPath::Scan => values.iter().filter(|(v, _)| m.matches(v)).map(|(_, l)| l).collect(),
        };
        if lists.len() == 1 {
            return Cow::Borrowed(lists.pop().map_or(&[][..], |l| l.as_slice()));
        }
        // a series has one value per label, so these lists are disjoint: no dedup
        let mut u: Vec<Id> = lists.into_iter().flatten().copied().collect();
        u.sort_unstable();
        Cow::Owned(u)
    }

    /// Sorted ids of the series that satisfy every matcher ([`select_ids`]).
    pub(crate) fn select<'s>(
        &'s self,
        matchers: &[Matcher],
        all: impl FnOnce() -> Vec<Id>,
        value_of: impl Fn(Id, &str) -> Option<Cow<'s, str>>,
    ) -> Vec<Id> {
        select_ids(matchers, |m| self.matching_values(m), all, value_of)
    }
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
    let mut out: Vec<Id> = match lists.split_first() {
        None => all(),
        Some((first, rest)) => {
            let mut acc = first.to_vec();
            for l in rest {
                if acc.is_empty() {
                    break;
                }
                intersect(&mut acc, l);
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

    #[test]
    fn select_agrees_with_testing_every_series() {
        let series: Vec<Vec<(&str, &str)>> = vec![
            vec![("__name__", "up"), ("a", "api_x")],
            vec![("__name__", "up"), ("a", "api_y")],
            vec![("__name__", "up"), ("a", "b")],
            vec![("__name__", "up")],
            vec![("__name__", "down"), ("a", "GET")],
        ];
        let mut p: Postings<u32> = Postings::default();
        for (i, s) in series.iter().enumerate() {
            p.insert(i as u32, s.iter().copied());
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
                || (0..series.len() as u32).collect(),
                |id, name| {
                    series[id as usize].iter().find(|(n, _)| *n == name).map(|(_, v)| Cow::Borrowed(*v))
                },
            );
            let want: Vec<u32> = (0..series.len() as u32)
                .filter(|&i| {
                    matcher.matches(series[i as usize].iter().find(|(n, _)| *n == "a").map_or("", |(_, v)| v))
                })
                .collect();
            assert_eq!(got, want, "{matcher}");
        }
        p.remove_where(|id| id == 0 || id == 4);
        assert_eq!(p.values("__name__").unwrap().get("up").unwrap(), &[1, 2, 3]);
        assert!(p.values("__name__").unwrap().get("down").is_none());
        assert!(p.values("a").unwrap().get("api_x").is_none());
        assert!(p.values("a").unwrap().get("GET").is_none());
    }
}
