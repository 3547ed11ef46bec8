//! Label sets as numbers: the dataflow moves `u64` keys, and this table turns them back into
//! labels where an operator needs them (grouping, joins, name removal) and at reads.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

use promflow_storage::Labels;

/// A hasher for keys: numbers handed out in sequence, which need spreading over a table's
/// buckets but no protection from chosen input (SipHash's cost showed in every operator's
/// per-change lookups).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits, which the table uses, depend on every input bit
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A map from keys (or other numbers).
pub(crate) type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// A set of keys.
pub(crate) type KeySet = HashSet<u64, BuildHasherDefault<KeyHasher>>;

/// Each label set is stored once, shared by its entry in `ids` and in `labels`, and handed
/// out shared ([`Keys::shared`]) to the subscriptions that deliver it.
#[derive(Default)]
struct Table {
    ids: HashMap<Arc<Labels>, u64>,
    labels: Vec<Arc<Labels>>,
}

/// A table of label sets shared by the controller and every worker. Keys are never freed: a
/// label set keeps its number for the executor's life, so that every worker and every view
/// agree on it.
#[derive(Clone, Default)]
pub(crate) struct Keys(Arc<RwLock<Table>>);

impl Keys {
    /// The key of `labels`, assigning the next number to a new label set.
    pub(crate) fn intern(&self, labels: Labels) -> u64 {
        if let Some(&k) = self.0.read().unwrap_or_else(|e| e.into_inner()).ids.get(&labels) {
            return k;
        }
        let mut t = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&k) = t.ids.get(&labels) {
            return k;
        }
        let k = t.labels.len() as u64;
        let labels = Arc::new(labels);
        t.labels.push(Arc::clone(&labels));
        t.ids.insert(labels, k);
        k
    }

    /// The key of `labels`, if they have one.
    pub(crate) fn find(&self, labels: &Labels) -> Option<u64> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).ids.get(labels).copied()
    }

    /// The label set of `key` (empty for a key never assigned).
    pub(crate) fn labels(&self, key: u64) -> Labels {
        Arc::unwrap_or_clone(self.shared(key))
    }

    /// The label set of `key`, shared rather than copied (empty for a key never assigned):
    /// what a subscription hands out for every element that changed.
    pub(crate) fn shared(&self, key: u64) -> Arc<Labels> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).labels.get(key as usize).cloned().unwrap_or_default()
    }

    /// `key` rewritten by `f`, through a cache that the calling operator keeps, so that a
    /// series' labels are looked up and rewritten once, not at every change of its value.
    pub(crate) fn rewrite(
        &self,
        cache: &mut KeyMap<u64, u64>,
        key: u64,
        f: impl FnOnce(Labels) -> Labels,
    ) -> u64 {
        if let Some(&k) = cache.get(&key) {
            return k;
        }
        let k = self.intern(f(self.labels(key)));
        cache.insert(key, k);
        k
    }

    /// How many label sets the table holds.
    pub(crate) fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).labels.len()
    }
}
