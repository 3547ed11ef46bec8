//! The series model: label sets and label matchers.

use std::fmt;

pub use smol_str::SmolStr;

/// The label that holds a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// One label pair. Names and values of up to 23 bytes (nearly all) are held inline, so a
/// label set is one allocation; longer ones are shared by the clones of a set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// Label name.
    pub name: SmolStr,
    /// Label value; never empty in a stored series (an empty value means "absent").
    pub value: SmolStr,
}

/// A set of labels, kept sorted by name with unique names: the identity of a series.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// An empty label set.
    pub fn new() -> Self {
        Labels(Vec::new())
    }

    /// Builds a label set from pairs; sorts them, drops empty values, and keeps the last of
    /// duplicate names.
    pub fn from_pairs<N: Into<SmolStr>, V: Into<SmolStr>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut v: Vec<Label> = pairs
            .into_iter()
            .map(|(n, v)| Label { name: n.into(), value: v.into() })
            .filter(|l| !l.value.is_empty())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        // keep the last occurrence of a duplicated name
        let mut out: Vec<Label> = Vec::with_capacity(v.len());
        for l in v {
            match out.last_mut() {
                Some(last) if last.name == l.name => *last = l,
                _ => out.push(l),
            }
        }
        Labels(out)
    }

    /// Builds a label set from pairs that are already in name order with unique names and
    /// no empty value (another label set's pairs).
    pub(crate) fn from_sorted_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        Labels(pairs.map(|(n, v)| Label { name: n.into(), value: v.into() }).collect())
    }

    /// The value of `name`, or "" when the label is absent.
    pub fn get(&self, name: &str) -> &str {
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) => &self.0[i].value,
            Err(_) => "",
        }
    }

    /// Whether the set has a label `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search_by(|l| l.name.as_str().cmp(name)).is_ok()
    }

    /// Adds each label of `defaults` whose name this set lacks (the external labels a series,
    /// an alert or a remote read answer gains: its own labels win).
    pub fn add_missing(&mut self, defaults: &Labels) {
        for l in defaults {
            if !self.contains(&l.name) {
                self.set(&l.name, &l.value);
            }
        }
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].value = value.into(),
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, Label { name: name.into(), value: value.into() }),
        }
    }

    /// Removes `name` if present.
    pub fn remove(&mut self, name: &str) {
        self.set(name, "");
    }

    /// The metric name, or "".
    pub fn metric_name(&self) -> &str {
        self.get(METRIC_NAME)
    }

    /// Iterates the labels in name order.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps only the labels for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Label) -> bool) {
        self.0.retain(|l| keep(l));
    }

    /// The hash Prometheus's `labels.Hash` gives (xxHash64 of every name and value, each
    /// followed by 0xff), where answers depend on it: `limit_ratio` keeps a series by it.
    pub fn prometheus_hash(&self) -> u64 {
        xxh64_pairs(self.0.iter().map(|l| (l.name.as_str(), l.value.as_str())))
    }

    /// A stable 64-bit hash of the label set (FNV-1a over names and values).
    pub fn stable_hash(&self) -> u64 {
        fnv_pairs(self.0.iter().map(|l| (l.name.as_str(), l.value.as_str())))
    }

    /// Whether this set holds exactly the pairs of `other`.
    pub fn eq_ref(&self, other: LabelsRef<'_>) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(other.0).all(|(l, &(n, v))| l.name == n && l.value == v)
    }
}

/// xxHash64 over names and values, each followed by 0xff: [`Labels::prometheus_hash`].
fn xxh64_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for (name, value) in pairs {
        h.update(name.as_bytes());
        h.update(&[0xff]);
        h.update(value.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

/// FNV-1a over names and values, each followed by 0xff: [`Labels::stable_hash`].
fn fnv_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for (n, v) in pairs {
        for b in n.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// A label set borrowed from someone else's bytes (a decoded request), with the invariants
/// of [`Labels`]: sorted by name, names unique, no empty value. It lets a writer look a
/// series up without allocating; only a new series is turned into [`Labels`].
#[derive(Clone, Copy, Debug)]
pub struct LabelsRef<'a>(&'a [(&'a str, &'a str)]);

impl<'a> LabelsRef<'a> {
    /// Normalizes `pairs` in place as [`Labels::from_pairs`] does (drops empty values, sorts
    /// by name, keeps the last of duplicate names) and borrows the result.
    pub fn normalize<'s: 'a>(pairs: &'a mut Vec<(&'s str, &'s str)>) -> Self {
        pairs.retain(|(_, v)| !v.is_empty());
        if !pairs.windows(2).all(|w| w[0].0 < w[1].0) {
            // stable, so "last duplicate wins" keeps its meaning
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            let mut out = 0;
            for i in 0..pairs.len() {
                if out > 0 && pairs[out - 1].0 == pairs[i].0 {
                    pairs[out - 1] = pairs[i];
                } else {
                    pairs[out] = pairs[i];
                    out += 1;
                }
            }
            pairs.truncate(out);
        }
        LabelsRef(pairs)
    }

    /// Borrows `pairs` when they already hold the invariants, as the pairs a
    /// [`normalize`](Self::normalize) left do: sorted by name, names unique, no empty value.
    pub fn from_normalized(pairs: &'a [(&'a str, &'a str)]) -> Option<Self> {
        let sorted = pairs.windows(2).all(|w| w[0].0 < w[1].0);
        (sorted && pairs.iter().all(|(_, v)| !v.is_empty())).then_some(LabelsRef(pairs))
    }

    /// The value of `name`, or "" when the label is absent.
    pub fn get(&self, name: &str) -> &'a str {
        match self.0.binary_search_by(|(n, _)| (*n).cmp(name)) {
            Ok(i) => self.0[i].1,
            Err(_) => "",
        }
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `(name, value)` pairs, sorted by name.
    pub fn pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0.iter().copied()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same hash as [`Labels::stable_hash`] of the owned set.
    pub fn stable_hash(&self) -> u64 {
        fnv_pairs(self.0.iter().copied())
    }

    /// The same hash as [`Labels::prometheus_hash`] of the owned set.
    pub fn prometheus_hash(&self) -> u64 {
        xxh64_pairs(self.0.iter().copied())
    }

    /// An owned copy.
    pub fn to_labels(&self) -> Labels {
        Labels(self.0.iter().map(|&(n, v)| Label { name: n.into(), value: v.into() }).collect())
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Labels {
    /// Prints `{__name__="up", job="api"}`, as Prometheus's `labels.Labels.String()` does
    /// (its error messages quote label sets this way).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

/// How a matcher compares a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored)
    Regex,
    /// `!~` (fully anchored)
    NotRegex,
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        })
    }
}

/// A label matcher. A missing label matches as the empty string, as in Prometheus.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// The literal value or the regex source as the user wrote it.
    pub value: String,
    re: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.op == o.op && self.value == o.value
    }
}

impl Matcher {
    /// Builds a matcher; a regex is translated from Go's RE2 dialect and fully anchored.
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self, crate::Error> {
        let value = value.into();
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(crate::re2::compile_anchored(&value)?),
            _ => None,
        };
        Ok(Matcher { name: name.into(), op, value, re })
    }

    /// Whether `v` (the label's value, "" when absent) satisfies the matcher.
    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// Whether the matcher accepts the empty string (and so series lacking the label).
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// Whether a set of labels satisfies the matcher.
    pub fn matches_labels(&self, ls: &Labels) -> bool {
        self.matches(ls.get(&self.name))
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op, self.value)
    }
}
