//! The answers of series lookups over whole blocks, kept for the next lookup that asks the
//! same.
//!
//! A dashboard asks the same lookups each time it loads (Grafana's variables, the series of
//! a panel's legend) over a range that covers the same blocks until the next one is cut. A
//! block never changes but for its tombstones, so the series its index yields for a set of
//! matchers over its whole range stay the answer until the block goes or a deletion adds to
//! its tombstones. The cache keeps, for a lookup's matchers and the blocks it covers whole,
//! the merged sorted label sets of those blocks; the head's part and the blocks a range cuts
//! through are read each time. Thanos and Mimir keep the same kind of cache for the
//! postings and series of their immutable blocks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::block::Block;
use crate::labels::{Labels, MatchOp, Matcher};

/// The bytes of label sets the cache holds at most, counted as [`LabelSetsWeight`] does.
const CAPACITY_BYTES: u64 = 16 << 20;
/// The largest answer kept, in the same bytes: a lookup of more costs enough on its own
/// that keeping it would push out many small ones that dashboards repeat.
const LARGEST_KEPT_BYTES: u64 = CAPACITY_BYTES / 16;
/// What a label set costs beyond its strings' bytes (its vector and each label's two
/// strings' headers), a rough figure for weighing entries.
const LABEL_SET_OVERHEAD: u64 = 24;
const LABEL_OVERHEAD: u64 = 48;

/// The identity of a lookup over whole blocks: its matchers as written, and each block's id
/// with its count of tombstones (a deletion adds to them, which makes a new key).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    matchers: Vec<(String, MatchOp, String)>,
    blocks: Vec<(String, usize)>,
}

/// Weighs an entry by its label sets' bytes.
#[derive(Clone)]
struct LabelSetsWeight;

impl Weighter<Key, Arc<[Labels]>> for LabelSetsWeight {
    fn weight(&self, _key: &Key, sets: &Arc<[Labels]>) -> u64 {
        weigh(sets)
    }
}

fn weigh(sets: &[Labels]) -> u64 {
    sets.iter()
        .map(|set| {
            LABEL_SET_OVERHEAD
                + set
                    .iter()
                    .map(|label| LABEL_OVERHEAD + (label.name.len() + label.value.len()) as u64)
                    .sum::<u64>()
        })
        .sum::<u64>()
        .max(1)
}

/// Series lookups' answers over whole blocks, bounded by their bytes.
pub(super) struct LookupCache {
    cache: Cache<Key, Arc<[Labels]>, LabelSetsWeight>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl LookupCache {
    pub(super) fn new() -> LookupCache {
        // the item estimate only sizes the table up front
        LookupCache {
            cache: Cache::with_weighter(1024, CAPACITY_BYTES, LabelSetsWeight),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The label sets (sorted, unique) of the series matching `matchers` in `blocks`, each
    /// covered whole by the lookup: from the cache, or from `read` and then kept when small
    /// enough.
    pub(super) fn series(
        &self,
        matchers: &[Matcher],
        blocks: &[Arc<Block>],
        read: impl FnOnce() -> Vec<Labels>,
    ) -> Arc<[Labels]> {
        let key = Key {
            matchers: matchers.iter().map(|m| (m.name.clone(), m.op, m.value.clone())).collect(),
            blocks: blocks.iter().map(|b| (b.meta().ulid.clone(), b.tombstone_count())).collect(),
        };
        if let Some(sets) = self.cache.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return sets;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let sets: Arc<[Labels]> = read().into();
        if weigh(&sets) <= LARGEST_KEPT_BYTES {
            self.cache.insert(key, Arc::clone(&sets));
        }
        sets
    }

    /// Lookups answered from the cache, and those read from the blocks, since the start.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// The bytes of label sets held, as weighed.
    pub(super) fn bytes(&self) -> u64 {
        self.cache.weight()
    }
}
