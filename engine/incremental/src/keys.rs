//! Label sets as numbers: the dataflow moves `u64` keys, and this table turns them back into
//! labels where an operator needs them (grouping, joins, name removal) and at reads.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use promflow_storage::{Labels, PackedLabels};

/// A hasher for keys and other numbers, which need spreading over a table's buckets but no
/// protection from chosen input (SipHash's cost showed in every operator's per-change
/// lookups).
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

/// A label set as the dataflow moves it: the key [`Keys`] gives it. Within a process a key is
/// just its number. Between the processes of a cluster, the executor's own channels
/// ([`crate::exchange::KeyExchange`]) carry a key's labels the first time they send it to a
/// worker and the number alone after (differential's channels carry them every time); the
/// receiving process enters the labels in its own table ([`Keys::serve_thread`]), so that a
/// key computed in one process can be read as labels in another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key(pub(crate) u64);

std::thread_local! {
    /// The table a worker thread's keys are read from when they are sent to another process,
    /// and entered in when they arrive from one: timely serializes and deserializes what
    /// crosses processes on the worker threads that send and receive it.
    static THREAD_KEYS: std::cell::RefCell<Option<Keys>> = const { std::cell::RefCell::new(None) };

    /// While a channel writes a message for another process: the keys whose labels it has
    /// carried to that receiver before. Without it (a channel that does not keep count), every
    /// key is sent with its labels.
    static SENDING: std::cell::RefCell<Option<Carried>> = const { std::cell::RefCell::new(None) };

    /// On a receiving worker: keys that another process numbers differently from this one
    /// (one of the two tables holds another label set at that hash), to this process's
    /// numbers. Empty but for 64-bit hash collisions.
    static RENUMBERED: std::cell::RefCell<KeyMap<u64, u64>> = std::cell::RefCell::new(KeyMap::default());
}

/// What one channel to one worker of another process has sent: the keys whose labels it has
/// carried, and those the message being written carries for the first time.
///
/// timely writes a message twice (once to measure it, once into the send buffer), so writing
/// must not change what the next write sends: keys carried for the first time are added to
/// `carried` only once the message is written ([`Carried::written`]).
#[derive(Default)]
pub(crate) struct Carried {
    carried: IdSet,
    fresh: Vec<u64>,
}

impl Carried {
    /// Runs `write` (a push of one message down the channel whose record this is) with this
    /// record in force, and adds the keys it carried the labels of.
    pub(crate) fn written<R>(&mut self, write: impl FnOnce() -> R) -> R {
        let outer = SENDING.with(|s| s.replace(Some(std::mem::take(self))));
        let result = write();
        if let Some(mut done) = SENDING.with(|s| s.replace(outer)) {
            done.carried.extend(done.fresh.drain(..));
            *self = done;
        }
        result
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let labelled = SENDING.with(|sending| match sending.borrow_mut().as_mut() {
            None => true,
            Some(c) if c.carried.contains(&self.0) => false,
            Some(c) => {
                c.fresh.push(self.0);
                true
            }
        });
        if !labelled {
            return (self.0, None::<Vec<(&str, &str)>>).serialize(s);
        }
        THREAD_KEYS.with(|k| {
            let keys = k.borrow();
            // the pairs are read from the table in place, under its read lock; a key the
            // table does not hold travels as its number, which the receiver keeps
            let table = keys.as_ref().map(|keys| keys.read());
            let pairs: Option<Vec<(&str, &str)>> =
                table.as_ref().and_then(|t| t.labels.get(&self.0)).map(|packed| packed.iter().collect());
            (self.0, pairs).serialize(s)
        })
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let (sent, pairs): (u64, Option<Vec<(String, String)>>) = serde::Deserialize::deserialize(d)?;
        let Some(pairs) = pairs else {
            let here = RENUMBERED.with(|r| {
                let r = r.borrow();
                if r.is_empty() {
                    sent
                } else {
                    r.get(&sent).copied().unwrap_or(sent)
                }
            });
            return Ok(Key(here));
        };
        let interned =
            THREAD_KEYS.with(|k| k.borrow().as_ref().map(|keys| keys.intern(Labels::from_pairs(pairs))));
        let Some(here) = interned else { return Ok(Key(sent)) };
        if here.0 != sent {
            RENUMBERED.with(|r| r.borrow_mut().insert(sent, here.0));
        }
        Ok(here)
    }
}

/// A map from keys (or other numbers).
pub(crate) type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// A set of keys.
pub(crate) type KeySet = HashSet<Key, BuildHasherDefault<KeyHasher>>;

/// A set of other numbers (subscriptions' ids).
pub(crate) type IdSet = HashSet<u64, BuildHasherDefault<KeyHasher>>;

/// Every label set the executor has seen, by key, packed as storage packs a series' labels
/// (names, metric names, jobs and instances as numbers in one process-wide table, other
/// values in place, one allocation a set): the table holds a label set for every series a
/// view selects and every one a view computes, and a [`Labels`] is 48 bytes a pair behind a
/// vector's header.
#[derive(Default)]
struct Table {
    labels: KeyMap<u64, PackedLabels>,
}

impl Table {
    /// Where `labels` is or would go: the key of their hash, or, when a different label set
    /// holds that key, the first key after it that holds `labels` or nothing.
    fn slot(&self, labels: &Labels) -> (u64, bool) {
        let mut key = labels.prometheus_hash();
        loop {
            match self.labels.get(&key) {
                None => return (key, false),
                Some(held) if held.eq_labels(labels) => return (key, true),
                Some(_) => key = key.wrapping_add(1),
            }
        }
    }
}

/// A table of label sets shared by the controller and every worker. A label set's key is the
/// hash of its labels, so that a key means the same labels wherever it is computed (in every
/// worker, and in every process of a cluster); two label sets with one hash, which a 64-bit
/// hash makes improbable, are told apart by giving the later one the next free key. Keys are
/// never freed: a label set keeps its key for the executor's life.
#[derive(Clone, Default)]
pub(crate) struct Keys(Arc<RwLock<Table>>);

impl Keys {
    /// Makes this the table the calling thread's keys are read from when sent to another
    /// process and entered in when received from one (each worker thread, at its start).
    pub(crate) fn serve_thread(&self) {
        THREAD_KEYS.with(|k| *k.borrow_mut() = Some(self.clone()));
    }

    /// The key of `labels`, entering them in the table when new.
    pub(crate) fn intern(&self, labels: Labels) -> Key {
        if let (k, true) = self.read().slot(&labels) {
            return Key(k);
        }
        // packed before the write lock: packing takes storage's table of interned strings,
        // which new head series take too, and readers of this table should not wait on it
        let packed = PackedLabels::new(&labels);
        let mut t = self.0.write().unwrap_or_else(|e| e.into_inner());
        let (k, held) = t.slot(&labels);
        if !held {
            if k != labels.prometheus_hash() {
                tracing::warn!(labels = %labels, "two label sets share a hash: the later one takes the next free key");
            }
            t.labels.insert(k, packed);
        }
        Key(k)
    }

    /// The key of `labels`, if they have one.
    pub(crate) fn find(&self, labels: &Labels) -> Option<Key> {
        match self.read().slot(labels) {
            (k, true) => Some(Key(k)),
            _ => None,
        }
    }

    /// The label set of `key`, unpacked (empty for a key never assigned).
    pub(crate) fn labels(&self, key: Key) -> Labels {
        self.read().labels.get(&key.0).map(PackedLabels::to_labels).unwrap_or_default()
    }

    /// The label set of `key` behind a shared pointer, as a subscription hands it out with
    /// every element that changed (empty for a key never assigned).
    pub(crate) fn shared(&self, key: Key) -> Arc<Labels> {
        Arc::new(self.labels(key))
    }

    /// The table, for reading.
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// `key` rewritten by `f`, through a cache that the calling operator keeps, so that a
    /// series' labels are looked up and rewritten once, not at every change of its value.
    pub(crate) fn rewrite(
        &self,
        cache: &mut KeyMap<Key, Key>,
        key: Key,
        f: impl FnOnce(Labels) -> Labels,
    ) -> Key {
        if let Some(&k) = cache.get(&key) {
            return k;
        }
        let k = self.intern(f(self.labels(key)));
        cache.insert(key, k);
        k
    }

    /// How many label sets the table holds.
    pub(crate) fn len(&self) -> usize {
        self.read().labels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    /// Two tables, as two processes of a cluster hold, give a label set the same key
    /// whatever else each has seen.
    #[test]
    fn a_key_is_the_same_in_every_table() {
        let (a, b) = (Keys::default(), Keys::default());
        let x = labels(&[("__name__", "up"), ("job", "a")]);
        a.intern(labels(&[("job", "other")]));
        assert_eq!(a.intern(x.clone()), b.intern(x.clone()));
        assert_eq!(b.find(&x), Some(Key(x.prometheus_hash())));
        assert_eq!(a.labels(a.find(&x).unwrap()), x);
        assert_eq!(a.labels(Key(12345)), Labels::new(), "a key never assigned");
    }

    /// Label sets come back from the packed table as they went in, whatever their strings:
    /// interned ones (names, a metric name, a job), values packed in place, long and
    /// non-ASCII values; and a key sent to another process's table arrives with its labels.
    #[test]
    fn label_sets_come_back_whole_from_this_table_and_another() {
        let (a, b) = (Keys::default(), Keys::default());
        let long = "x".repeat(300);
        let sets = [
            labels(&[
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", "7"),
                ("instance", "h:9100"),
                ("job", "node"),
            ]),
            labels(&[("path", long.as_str()), ("zone", "ünïcode-☃")]),
            labels(&[("__name__", "up"), ("a", ""), ("job", "z")]),
            Labels::new(),
        ];
        for set in sets {
            let key = a.intern(set.clone());
            assert_eq!(a.labels(key), set);
            assert_eq!(*a.shared(key), set);
            a.serve_thread();
            let sent = serde_json::to_string(&key).unwrap();
            b.serve_thread();
            let received: Key = serde_json::from_str(&sent).unwrap();
            assert_eq!(received, key);
            assert_eq!(b.labels(received), set, "{sent}");
        }
    }

    /// A channel that keeps count sends a key's labels the first time only, both of timely's
    /// writes of that first message included; the receiver reads the later numbers as the
    /// labels it entered.
    #[test]
    fn a_channel_carries_a_keys_labels_once() {
        let (a, b) = (Keys::default(), Keys::default());
        let x = labels(&[("__name__", "up"), ("instance", "h:9100"), ("job", "node")]);
        let key = a.intern(x.clone());
        let mut channel = Carried::default();
        a.serve_thread();
        let (measured, first) =
            channel.written(|| (serde_json::to_string(&key).unwrap(), serde_json::to_string(&key).unwrap()));
        let second = channel.written(|| serde_json::to_string(&key).unwrap());
        assert_eq!(measured, first, "a message is written alike both times");
        assert!(first.contains("h:9100"), "{first}");
        assert_eq!(second, format!("[{},null]", key.0));
        assert!(
            serde_json::to_string(&key).unwrap().contains("h:9100"),
            "a channel that does not keep count"
        );
        b.serve_thread();
        for sent in [&first, &second] {
            let received: Key = serde_json::from_str(sent).unwrap();
            assert_eq!((received, b.labels(received)), (key, x.clone()));
        }
    }

    /// A key the receiving table numbers otherwise (it holds other labels at that hash) is
    /// read as the receiver's number when it comes again without its labels.
    #[test]
    fn a_key_numbered_otherwise_here_is_read_as_this_tables_key() {
        let (a, b) = (Keys::default(), Keys::default());
        let (x, y) = (labels(&[("a", "1")]), labels(&[("b", "2")]));
        let h = x.prometheus_hash();
        b.0.write().unwrap().labels.insert(h, PackedLabels::new(&y));
        let key = a.intern(x.clone());
        let mut channel = Carried::default();
        a.serve_thread();
        let sent: Vec<String> =
            (0..2).map(|_| channel.written(|| serde_json::to_string(&key).unwrap())).collect();
        b.serve_thread();
        for sent in &sent {
            let received: Key = serde_json::from_str(sent).unwrap();
            assert_eq!((received, b.labels(received)), (Key(h.wrapping_add(1)), x.clone()), "{sent}");
        }
    }

    /// A label set whose hash another set holds takes the next free key, and is found there.
    #[test]
    fn a_hash_held_by_other_labels_moves_to_the_next_key() {
        let keys = Keys::default();
        let (x, y) = (labels(&[("a", "1")]), labels(&[("b", "2")]));
        let h = y.prometheus_hash();
        keys.0.write().unwrap().labels.insert(h, PackedLabels::new(&x));
        assert_eq!(keys.intern(y.clone()), Key(h.wrapping_add(1)));
        assert_eq!(keys.find(&y), Some(Key(h.wrapping_add(1))));
        assert_eq!(keys.labels(Key(h)), x);
        assert_eq!(keys.len(), 2);
    }
}
