//! A head series' labels, packed into one allocation.
//!
//! The head holds a label set for each of its series, so their size is most of what a series
//! costs beyond its samples: a [`Labels`] is a vector of 48-byte pairs behind a shared
//! header. Packed, the set is the bytes of its names and values, each behind a length, in
//! one boxed slice: about 90 bytes for a node_exporter series of five labels, against
//! nearly 300. Comparing a request's labels with a packed set reads one run of bytes, so a
//! lookup also follows one pointer fewer. The head turns a packed set back into [`Labels`]
//! where it hands series out (query answers, blocks, checkpoints).

use std::cmp::Ordering;

use crate::codec::{put_str, Cursor};
use crate::Labels;

/// A label set packed into one boxed byte string: for each label in name order, its name and
/// then its value, each as a varint length followed by its bytes (UTF-8, as they came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackedLabels(Box<[u8]>);

/// Appends the packed form of `pairs` (in name order, names unique: a label set's) to `out`.
pub(crate) fn pack<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>, out: &mut Vec<u8>) {
    for (n, v) in pairs {
        put_str(out, n);
        put_str(out, v);
    }
}

/// Appends the packed form of `labels` to `out`.
pub(crate) fn pack_labels(labels: &Labels, out: &mut Vec<u8>) {
    pack(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())), out);
}

/// The hash the head's index finds a series by: xxh3 of its packed labels, one pass over
/// contiguous bytes. It lives only in memory (nothing stores it), so it may change between
/// versions; [`Labels::stable_hash`] is the one that must not.
pub(crate) fn index_hash(packed: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(packed)
}

impl PackedLabels {
    /// Packs `labels`.
    pub(crate) fn new(labels: &Labels) -> Self {
        let len: usize = labels.iter().map(|l| l.name.len() + l.value.len() + 2).sum();
        let mut out = Vec::with_capacity(len);
        pack_labels(labels, &mut out);
        PackedLabels(out.into_boxed_slice())
    }

    /// The [index hash](index_hash) of `labels`.
    pub(crate) fn index_hash_of(labels: &Labels) -> u64 {
        Self::new(labels).index_hash()
    }

    /// The `(name, value)` pairs as bytes, in name order.
    fn raw(&self) -> RawPairs<'_> {
        RawPairs(Cursor(&self.0))
    }

    /// The `(name, value)` pairs, in name order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.raw().map(|(n, v)| (text(n), text(v)))
    }

    /// The value of `name`, or "" when the label is absent.
    pub(crate) fn get(&self, name: &str) -> &str {
        let wanted = name.as_bytes();
        for (n, v) in self.iter() {
            match n.as_bytes().cmp(wanted) {
                Ordering::Less => {}
                Ordering::Equal => return v,
                Ordering::Greater => break,
            }
        }
        ""
    }

    /// The label set, unpacked.
    pub(crate) fn to_labels(&self) -> Labels {
        Labels::from_sorted_pairs(self.iter())
    }

    /// Whether this is the packed form of `labels`.
    pub(crate) fn eq_labels(&self, labels: &Labels) -> bool {
        self.view().eq_labels(labels)
    }

    /// The packed bytes, borrowed: reading them from their owner is a step of its own in a
    /// lookup of many series ([`crate::head::Head::lookup_many`]).
    pub(crate) fn view(&self) -> PackedRef<'_> {
        PackedRef(&self.0)
    }

    /// The set's [index hash](index_hash).
    pub(crate) fn index_hash(&self) -> u64 {
        index_hash(&self.0)
    }

    /// The order of the unpacked sets ([`Labels`]' `Ord`: pair by pair, names before values,
    /// bytewise, a prefix first).
    pub(crate) fn cmp_labels(&self, other: &PackedLabels) -> Ordering {
        self.raw().cmp(other.raw())
    }
}

/// A [`PackedLabels`]' bytes, borrowed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PackedRef<'a>(&'a [u8]);

impl PackedRef<'_> {
    /// Whether these are the packed labels of `labels`.
    pub(crate) fn eq_labels(self, labels: &Labels) -> bool {
        RawPairs(Cursor(self.0)).eq(labels.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes())))
    }

    /// Whether these are the bytes `packed` (a label set [`pack`]ed).
    pub(crate) fn is(self, packed: &[u8]) -> bool {
        self.0 == packed
    }
}

/// Bytes packed from a `str`, so never invalid: an empty string stands in rather than a panic.
fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

/// The pairs of a [`PackedLabels`] as byte slices.
struct RawPairs<'a>(Cursor<'a>);

impl<'a> RawPairs<'a> {
    /// The next length-prefixed field.
    fn field(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.0.uvarint()?).ok()?;
        self.0.take(len)
    }
}

impl<'a> Iterator for RawPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        Some((self.field()?, self.field()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LabelsRef;

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn unpacks_to_the_same_set_and_answers_as_it_does() {
        let long = "v".repeat(300);
        let sets = [
            ls(&[]),
            ls(&[("__name__", "up")]),
            ls(&[
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", "0"),
                ("instance", "h:9100"),
                ("mode", "idle"),
            ]),
            ls(&[("__name__", "x"), ("long", &long), ("ünï", "cödé")]),
        ];
        for l in &sets {
            let p = PackedLabels::new(l);
            assert_eq!(&p.to_labels(), l);
            assert!(p.eq_labels(l));
            let mut packed = Vec::new();
            pack(l.iter().map(|x| (x.name.as_str(), x.value.as_str())), &mut packed);
            assert!(p.view().is(&packed));
            assert_eq!(p.index_hash(), index_hash(&packed));
            for label in l {
                assert_eq!(p.get(&label.name), label.value.as_str());
            }
            assert_eq!(p.get("absent"), "");
            assert_eq!(p.get("zzz"), "");
            let mut pairs: Vec<(&str, &str)> =
                l.iter().map(|x| (x.name.as_str(), x.value.as_str())).collect();
            let mut from_ref = Vec::new();
            pack(LabelsRef::normalize(&mut pairs).pairs(), &mut from_ref);
            assert_eq!(from_ref, packed);
        }
    }

    #[test]
    fn equality_and_order_are_those_of_the_unpacked_sets() {
        let sets = [
            ls(&[]),
            ls(&[("a", "1")]),
            ls(&[("a", "1"), ("b", "2")]),
            ls(&[("a", "10")]),
            ls(&[("a", "2")]),
            ls(&[("ab", "1")]),
            ls(&[("b", "")]),
            ls(&[("b", "0")]),
        ];
        for x in &sets {
            for y in &sets {
                let (px, py) = (PackedLabels::new(x), PackedLabels::new(y));
                assert_eq!(px.cmp_labels(&py), x.cmp(y), "{x} against {y}");
                assert_eq!(px.eq_labels(y), x == y, "{x} against {y}");
            }
        }
    }
}
