//! Label sets as numbers: the dataflow moves `u64` keys, and this table turns them back into
//! labels where an operator needs them (grouping, joins, name removal) and at reads.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use promflow_storage::Labels;

#[derive(Default)]
struct Table {
    ids: HashMap<Labels, u64>,
    labels: Vec<Labels>,
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
        t.labels.push(labels.clone());
        t.ids.insert(labels, k);
        k
    }

    /// The label set of `key` (empty for a key never assigned).
    pub(crate) fn labels(&self, key: u64) -> Labels {
        self.0.read().unwrap_or_else(|e| e.into_inner()).labels.get(key as usize).cloned().unwrap_or_default()
    }

    /// `key` rewritten by `f`, through a cache that the calling operator keeps, so that a
    /// series' labels are looked up and rewritten once, not at every change of its value.
    pub(crate) fn rewrite(
        &self,
        cache: &mut HashMap<u64, u64>,
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
