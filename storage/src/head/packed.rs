//! A head series' labels, packed into one allocation.
//!
//! The head holds a label set for each of its series, so their size is most of what a series
//! costs beyond its samples: a [`Labels`] is a vector of 48-byte pairs behind a shared
//! header. Packed, the set is its names and values in one boxed slice. Comparing a request's
//! labels with a packed set reads one run of bytes, so a lookup also follows one pointer
//! fewer. The head turns a packed set back into [`Labels`] where it hands series out (query
//! answers, blocks, checkpoints). The incremental executor's table of label sets, which
//! holds every series a view selects and every label set a view computes, keeps them in the
//! same form, through the same table of interned strings.
//!
//! Label names, metric names and the values of `job` and `instance` repeat across many
//! series and come from a bounded set (the instrumented code and the scrape configuration,
//! not the data), so each is kept once, process-wide ([`interned`]), and a packed set holds
//! its number: a node_exporter series of five labels packs into about 25 bytes rather than
//! 80. Other values (a pod's name, a path) are packed in place, as is every string once the
//! table is full.
//!
//! Two forms of a set's bytes exist. The *plain* form ([`pack`]: each name and value as a
//! varint length and its bytes) is what a request's labels are packed into to be hashed and
//! looked up ([`index_hash`]); a [`PackedLabels`] holds the *stored* form, where each field
//! is a varint `len << 1` and its bytes, or `number << 1 | 1` for an interned string. Both
//! read as the same pairs, and the stored form hashes as the plain one.

use std::cmp::Ordering;

use crate::codec::{put_str, put_uvarint, Cursor};
use crate::Labels;

/// The process-wide table of interned strings: read without a lock, added to under one.
mod interned {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    /// Strings the table holds at most.
    const CAPACITY: usize = 1 << 16;
    /// Bytes of strings the table holds at most.
    const MAX_BYTES: usize = 4 << 20;
    /// The longest string the table takes.
    const MAX_LEN: usize = 256;

    /// The strings by number, each set once and never changed; the slots are zeroed static
    /// memory, resident only once written.
    static STRINGS: [OnceLock<&'static str>; CAPACITY] = [const { OnceLock::new() }; CAPACITY];

    /// Numbers by string, and the bytes held, for adding.
    static NUMBERS: Mutex<Option<(HashMap<&'static str, u32>, usize)>> = Mutex::new(None);

    /// The string numbered `n`, if there is one.
    pub(super) fn get(n: u64) -> Option<&'static str> {
        STRINGS.get(usize::try_from(n).ok()?)?.get().copied()
    }

    /// A way to number strings, holding the table's lock while it lives: a label set takes
    /// it once for all its strings.
    pub(super) struct Numberer(std::sync::MutexGuard<'static, Option<(HashMap<&'static str, u32>, usize)>>);

    /// Takes the table's lock.
    pub(super) fn numberer() -> Numberer {
        Numberer(NUMBERS.lock().unwrap_or_else(|e| e.into_inner()))
    }

    impl Numberer {
        /// The number of `s`, interning it if the table has room (the string is then kept
        /// for the life of the process: the table is bounded, in strings and in bytes). A
        /// string that is not `essential` (a job's or an instance's name, which churn with
        /// the targets) takes only the first half of the table, so that label and metric
        /// names always find room.
        pub(super) fn number(&mut self, s: &str, essential: bool) -> Option<u32> {
            let (numbers, bytes) = self.0.get_or_insert_with(Default::default);
            if let Some(&n) = numbers.get(s) {
                return Some(n);
            }
            let room = if essential { CAPACITY } else { CAPACITY / 2 };
            if numbers.len() >= room || *bytes + s.len() > MAX_BYTES || s.len() > MAX_LEN {
                if numbers.len() >= CAPACITY || *bytes + s.len() > MAX_BYTES {
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        tracing::warn!(
                            strings = numbers.len(),
                            bytes = *bytes,
                            "the table of interned label strings is full; new ones are kept with each series"
                        )
                    });
                }
                return None;
            }
            let n = numbers.len() as u32;
            // nothing below allocates after the slot is set, so a number is never left
            // without its string or the other way round
            numbers.reserve(1);
            let kept: &'static str = Box::leak(s.into());
            if STRINGS[n as usize].set(kept).is_err() {
                return None;
            }
            numbers.insert(kept, n);
            *bytes += s.len();
            Some(n)
        }
    }
}

/// Whether the value of label `name` is interned, and if so whether it is essential (see
/// [`interned::Numberer::number`]): a metric name is, a value the scrape configuration sets
/// (`job`, `instance`) is not.
fn interns_value(name: &str) -> Option<bool> {
    match name {
        "__name__" => Some(true),
        "job" | "instance" => Some(false),
        _ => None,
    }
}

/// A label set packed into one boxed byte string, in the stored form (see the module's
/// documentation): for each label in name order, its name and then its value. Two sets are
/// equal when their pairs are: a string packed in place for one may be interned for the
/// other (a job's name that became a metric's name in between).
#[derive(Debug, Clone)]
pub struct PackedLabels(Box<[u8]>);

impl PartialEq for PackedLabels {
    fn eq(&self, other: &Self) -> bool {
        self.raw().eq(other.raw())
    }
}

impl Eq for PackedLabels {}

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

/// The hash the head's index finds a series by: xxh3 of its labels' plain packed form, one
/// pass over contiguous bytes. It lives only in memory (nothing stores it), so it may change
/// between versions; [`Labels::stable_hash`] is the one that must not.
pub(crate) fn index_hash(packed: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(packed)
}

impl PackedLabels {
    /// Packs `labels`.
    pub fn new(labels: &Labels) -> Self {
        let mut numberer = interned::numberer();
        let mut out = Vec::with_capacity(labels.iter().map(|l| l.name.len() + l.value.len() + 2).sum());
        let mut field = |s: &str, intern: Option<bool>| match intern
            .and_then(|essential| numberer.number(s, essential))
        {
            Some(n) => put_uvarint(&mut out, u64::from(n) << 1 | 1),
            None => {
                put_uvarint(&mut out, (s.len() as u64) << 1);
                out.extend_from_slice(s.as_bytes());
            }
        };
        for l in labels.iter() {
            field(&l.name, Some(true));
            field(&l.value, interns_value(&l.name));
        }
        // a copy of exactly its size: shrinking the buffer in place would leave its tail as
        // a fragment beside every series' labels
        PackedLabels(Box::from(out.as_slice()))
    }

    /// The [index hash](index_hash) of `labels`.
    pub(crate) fn index_hash_of(labels: &Labels) -> u64 {
        let mut plain = Vec::new();
        pack_labels(labels, &mut plain);
        index_hash(&plain)
    }

    /// The `(name, value)` pairs as bytes, in name order.
    fn raw(&self) -> RawPairs<'_> {
        self.view().raw()
    }

    /// The `(name, value)` pairs, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        TextPairs(Cursor(&self.0))
    }

    /// The value of `name`, or "" when the label is absent.
    pub fn get(&self, name: &str) -> &str {
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
    pub fn to_labels(&self) -> Labels {
        Labels::from_sorted_pairs(self.iter())
    }

    /// Whether this is the packed form of `labels`.
    pub fn eq_labels(&self, labels: &Labels) -> bool {
        self.view().eq_labels(labels)
    }

    /// The packed bytes, borrowed: reading them from their owner is a step of its own in a
    /// lookup of many series ([`crate::head::Head::lookup_many`]).
    pub(crate) fn view(&self) -> PackedRef<'_> {
        PackedRef(&self.0)
    }

    /// The set's [index hash](index_hash): that of its plain form, hashed as it is read.
    pub(crate) fn index_hash(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut len = Vec::with_capacity(10);
        for (n, v) in self.raw() {
            for field in [n, v] {
                len.clear();
                put_uvarint(&mut len, field.len() as u64);
                hasher.update(&len);
                hasher.update(field);
            }
        }
        hasher.digest()
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

impl<'a> PackedRef<'a> {
    /// The `(name, value)` pairs as bytes, in name order.
    fn raw(self) -> RawPairs<'a> {
        RawPairs(Cursor(self.0))
    }

    /// Whether these are the packed labels of `labels`.
    pub(crate) fn eq_labels(self, labels: &Labels) -> bool {
        self.raw().eq(labels.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes())))
    }

    /// Whether these read as the plain form `packed` (a label set [`pack`]ed) does.
    pub(crate) fn is(self, packed: &[u8]) -> bool {
        let mut plain = Cursor(packed);
        let mut fields = self.raw().flat_map(|(n, v)| [n, v]);
        loop {
            match (fields.next(), plain.uvarint()) {
                (None, None) => return true,
                (Some(field), Some(len)) => {
                    if usize::try_from(len).ok() != Some(field.len())
                        || plain.take(field.len()) != Some(field)
                    {
                        return false;
                    }
                }
                _ => return false,
            }
        }
    }
}

/// Bytes packed from a `str`, so never invalid: an empty string stands in rather than a panic.
fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

/// One field of a [`PackedLabels`]' stored form.
enum Field<'a> {
    /// An interned string.
    Interned(&'static str),
    /// Bytes packed in place.
    InPlace(&'a [u8]),
}

impl<'a> Field<'a> {
    /// Reads the next field at `cursor`.
    fn read(cursor: &mut Cursor<'a>) -> Option<Self> {
        let tag = cursor.uvarint()?;
        if tag & 1 == 1 {
            return interned::get(tag >> 1).map(Field::Interned);
        }
        cursor.take(usize::try_from(tag >> 1).ok()?).map(Field::InPlace)
    }

    fn bytes(self) -> &'a [u8] {
        match self {
            Field::Interned(s) => s.as_bytes(),
            Field::InPlace(b) => b,
        }
    }

    /// The field as text: an interned string is one already, and only bytes in place are
    /// checked (a lookup of thousands of series reads most of its fields from the table).
    fn text(self) -> &'a str {
        match self {
            Field::Interned(s) => s,
            Field::InPlace(b) => text(b),
        }
    }
}

/// The pairs of a [`PackedLabels`]' stored form as byte slices.
struct RawPairs<'a>(Cursor<'a>);

impl<'a> Iterator for RawPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        Some((Field::read(&mut self.0)?.bytes(), Field::read(&mut self.0)?.bytes()))
    }
}

/// The pairs of a [`PackedLabels`]' stored form as text.
struct TextPairs<'a>(Cursor<'a>);

impl<'a> Iterator for TextPairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        Some((Field::read(&mut self.0)?.text(), Field::read(&mut self.0)?.text()))
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
            // a value too long to intern is packed in place, where others are interned
            ls(&[("__name__", "x"), ("instance", "h:9100"), ("job", &long)]),
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

    /// Names, metric names, jobs and instances are interned, other values are not; a set's
    /// stored form is then much smaller than its plain form, and a plain form that differs in
    /// any field, or has a field more or fewer, is not it.
    #[test]
    fn repeated_strings_are_interned_and_compare_as_the_plain_form() {
        let l = ls(&[
            ("__name__", "node_cpu_seconds_total"),
            ("cpu", "0"),
            ("instance", "host-00001:9100"),
            ("job", "node"),
            ("mode", "idle"),
        ]);
        let p = PackedLabels::new(&l);
        let mut plain = Vec::new();
        pack_labels(&l, &mut plain);
        assert_eq!(plain.len(), 82);
        // ten fields: eight interned numbers of a byte or two, "0" and "idle" in place
        assert!(p.0.len() <= 8 * 2 + 2 + 5, "{} bytes", p.0.len());
        assert!(p.view().is(&plain));
        for other in [
            ls(&[
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", "0"),
                ("instance", "host-00001:9100"),
                ("job", "node"),
            ]),
            ls(&[
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", "1"),
                ("instance", "host-00001:9100"),
                ("job", "node"),
                ("mode", "idle"),
            ]),
            ls(&[
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", "0"),
                ("instance", "host-00001:9100"),
                ("job", "node"),
                ("mode", "idle"),
                ("z", "1"),
            ]),
        ] {
            let mut other_plain = Vec::new();
            pack_labels(&other, &mut other_plain);
            assert!(!p.view().is(&other_plain), "{other}");
            assert!(!p.eq_labels(&other), "{other}");
        }
        assert!(!p.view().is(&plain[..plain.len() - 1]), "a plain form cut short is not it");
        // the same set with every string in place (as when the table was full) is equal
        let mut in_place = Vec::new();
        for field in l.iter().flat_map(|x| [x.name.as_str(), x.value.as_str()]) {
            put_uvarint(&mut in_place, (field.len() as u64) << 1);
            in_place.extend_from_slice(field.as_bytes());
        }
        let q = PackedLabels(in_place.into());
        assert_ne!(p.0, q.0);
        assert_eq!(p, q);
        assert_eq!(p.cmp_labels(&q), Ordering::Equal);
        assert_eq!(p.index_hash(), q.index_hash());
        assert_eq!(q.index_hash(), index_hash(&plain));
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
