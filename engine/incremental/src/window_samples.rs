//! The float samples a series operator keeps for one series, sized to the window.
//!
//! A view keeps these for every series it selects, so their room is most of a view's memory
//! (at a million series with the node-exporter mixin's rules, tens of millions of samples).
//! A `Vec` grown by doubling held up to twice a window's samples, and the dropped prefix
//! another third on top: about 2.1 slots a sample for a one-hour window. Here the room grows
//! by an eighth at a time, and the dropped prefix is reclaimed when the room is full, so a
//! window of `n` samples holds about `1.125 n` slots once it is full. A window that shrinks
//! (most often the tail of a window kept by its ends, which drains between read-backs) gives
//! room back once it holds more than a quarter over its samples and the ones that just left.

use std::collections::VecDeque;

/// Timestamps and values side by side, in time order; those from `head` on are visible, the
/// ones before it were evicted and are dropped in bulk when their room is wanted.
#[derive(Default)]
pub(crate) struct WindowSamples {
    t: Vec<i64>,
    v: Vec<f64>,
    head: u32,
}

/// The least room a window grows by: small windows (an instant selection, a few samples)
/// would otherwise move their samples at nearly every arrival.
const MIN_GROWTH: usize = 4;

impl WindowSamples {
    /// The visible samples' timestamps.
    pub(crate) fn ts(&self) -> &[i64] {
        &self.t[self.head as usize..]
    }

    /// The visible samples' values.
    pub(crate) fn vs(&self) -> &[f64] {
        &self.v[self.head as usize..]
    }

    /// How many samples are visible.
    pub(crate) fn len(&self) -> usize {
        self.t.len() - self.head as usize
    }

    /// Whether no sample is visible.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every sample; the room stays for the samples that follow.
    pub(crate) fn clear(&mut self) {
        self.t.clear();
        self.v.clear();
        self.head = 0;
    }

    /// Keeps `(t, v)` alone, in room for one sample: an instant selection's newest sample.
    pub(crate) fn set_only(&mut self, t: i64, v: f64) {
        self.clear();
        self.t.reserve_exact(1);
        self.v.reserve_exact(1);
        self.t.push(t);
        self.v.push(v);
    }

    /// Adds a sample after the visible ones.
    pub(crate) fn push(&mut self, t: i64, v: f64) {
        self.make_room();
        self.t.push(t);
        self.v.push(v);
    }

    /// Adds a sample before the visible sample at `i` (or after them all at `len()`).
    pub(crate) fn insert(&mut self, i: usize, t: i64, v: f64) {
        // room first: reclaiming the dropped prefix moves the visible samples, not their order
        self.make_room();
        let at = self.head as usize + i;
        self.t.insert(at, t);
        self.v.insert(at, v);
    }

    /// Puts `(t, v)` in the place of the visible samples `from..to` (before `from`, when the
    /// range is empty).
    pub(crate) fn replace(&mut self, from: usize, to: usize, t: i64, v: f64) {
        if from == to {
            return self.insert(from, t, v);
        }
        let (from, to) = (self.head as usize + from, self.head as usize + to);
        self.t[from] = t;
        self.v[from] = v;
        self.t.drain(from + 1..to);
        self.v.drain(from + 1..to);
    }

    /// Evicts the visible samples at or before `cutoff`; returns how many left.
    pub(crate) fn evict_through(&mut self, cutoff: i64) -> usize {
        let gone = self.ts().partition_point(|&x| x <= cutoff);
        self.head += gone as u32;
        if self.is_empty() {
            self.clear();
        }
        let visible = self.len();
        if gone > 0 && self.t.capacity() > visible + visible / 4 + MIN_GROWTH + gone {
            // the window shrank (a gap, the end of a history, a tail kept by its ends that
            // drains until its next read-back): give the room back. What just left counts as
            // room still wanted, so that a window fed in batches (a round of many samples in,
            // as many out) does not shrink and regrow every round; a steady window, whose
            // room is at most a quarter over its samples, less a slot, just after it grew,
            // never shrinks.
            self.reclaim();
            self.t.shrink_to(visible + visible / 8);
            self.v.shrink_to(visible + visible / 8);
        }
        gone
    }

    /// Makes room for one more sample when there is none: reclaims the evicted prefix when
    /// it is an eighth of the window or more, else grows the room by an eighth. A full
    /// window of `n` samples thus moves its samples once every `n / 8` arrivals, 8 moves a
    /// sample.
    fn make_room(&mut self) {
        if self.t.len() < self.t.capacity() {
            return;
        }
        let visible = self.len();
        if self.head > 0 && self.head as usize >= visible / 8 {
            return self.reclaim();
        }
        let more = (visible / 8).max(MIN_GROWTH);
        self.t.reserve_exact(more);
        self.v.reserve_exact(more);
    }

    /// Drops the evicted prefix.
    fn reclaim(&mut self) {
        self.t.drain(..self.head as usize);
        self.v.drain(..self.head as usize);
        self.head = 0;
    }

    /// How many samples the room holds, evicted ones included (for tests).
    #[cfg(test)]
    fn room(&self) -> usize {
        self.t.capacity().max(self.v.capacity())
    }
}

/// A vector that most series leave empty (the counter resets in a window, its native
/// histograms): a thin pointer while empty, allocated on the first element and freed when
/// emptied, so that a series without any pays 8 bytes rather than an empty `Vec`'s 24.
#[allow(clippy::box_collection)] // the box is the point: a thin pointer in every state
pub(crate) struct RareVec<T>(Option<Box<Vec<T>>>);

impl<T> Default for RareVec<T> {
    fn default() -> Self {
        RareVec(None)
    }
}

impl<T> std::ops::Deref for RareVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl<T> RareVec<T> {
    /// Adds an element before the one at `i`.
    pub(crate) fn insert(&mut self, i: usize, x: T) {
        self.0.get_or_insert_default().insert(i, x);
    }

    /// Drops the first `n` elements.
    pub(crate) fn drop_first(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        match self.0.as_mut() {
            Some(v) if n < v.len() => {
                v.drain(..n);
            }
            _ => self.0 = None,
        }
    }

    /// Drops every element, and the room they took.
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }

    /// Keeps `x` alone, in the room the elements took (an instant selection's newest
    /// histogram, replaced at every sample).
    pub(crate) fn set_only(&mut self, x: T) {
        let v = self.0.get_or_insert_default();
        v.clear();
        v.push(x);
    }
}

/// A queue that most series leave empty (the counter resets in a window): a thin pointer
/// while empty, like [`RareVec`], and dropped from the front in constant time, as a window
/// with many resets (`rate` over a gauge) drops one at most of its samples' evictions.
#[allow(clippy::box_collection)] // the box is the point: a thin pointer in every state
pub(crate) struct RareDeque<T>(Option<Box<VecDeque<T>>>);

impl<T> Default for RareDeque<T> {
    fn default() -> Self {
        RareDeque(None)
    }
}

impl<T> RareDeque<T> {
    /// Adds an element at the back.
    pub(crate) fn push(&mut self, x: T) {
        self.0.get_or_insert_default().push_back(x);
    }

    /// Drops the elements at the front while `gone` holds for them.
    pub(crate) fn drop_front_while(&mut self, gone: impl Fn(&T) -> bool) {
        let Some(q) = self.0.as_mut() else { return };
        while q.front().is_some_and(&gone) {
            q.pop_front();
        }
        if q.is_empty() {
            self.0 = None;
        }
    }

    /// The elements, front to back.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.0.iter().flat_map(|q| q.iter())
    }

    /// Drops every element, and the room they took.
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rare_queue_drops_from_the_front_and_is_freed_when_emptied() {
        assert_eq!(std::mem::size_of::<RareDeque<(i64, f64)>>(), 8);
        let mut q = RareDeque::default();
        (1..=3).for_each(|t| q.push((t, t as f64)));
        q.drop_front_while(|r| r.0 <= 2);
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), vec![(3, 3.0)]);
        q.drop_front_while(|r| r.0 <= 3);
        assert!(q.0.is_none() && q.iter().next().is_none());
    }

    #[test]
    fn a_rare_vector_is_a_thin_pointer_freed_when_emptied() {
        assert_eq!(std::mem::size_of::<RareVec<(i64, f64)>>(), 8);
        let mut r = RareVec::default();
        r.set_only((2, 2.0));
        r.insert(0, (1, 1.0));
        r.insert(2, (3, 3.0));
        assert_eq!(&r[..], &[(1, 1.0), (2, 2.0), (3, 3.0)]);
        r.drop_first(2);
        assert_eq!(&r[..], &[(3, 3.0)]);
        r.drop_first(1);
        assert!(r.is_empty() && r.0.is_none());
    }

    /// A window of `n` samples fed one sample in and one out, as a steady stream does.
    fn steady(n: usize, rounds: usize) -> WindowSamples {
        let mut w = WindowSamples::default();
        for t in 0..(n + rounds) as i64 {
            w.push(t, t as f64);
            w.evict_through(t - n as i64);
        }
        w
    }

    #[test]
    fn a_full_window_holds_little_more_room_than_its_samples() {
        for n in [1, 5, 20, 240, 5_760] {
            let w = steady(n, 3 * n + 10);
            assert_eq!(w.len(), n);
            assert_eq!(w.ts().first(), Some(&(3 * n as i64 + 10)));
            // an eighth for growth, and what was evicted when the room last grew
            assert!(w.room() <= n + n / 5 + MIN_GROWTH + 1, "{n} samples in {} slots", w.room());
        }
    }

    #[test]
    fn inserts_and_replacements_keep_time_order_across_reclaims() {
        let mut w = steady(16, 5);
        let first = w.ts()[0];
        w.insert(3, first + 2, -1.0);
        assert!(w.ts().windows(2).all(|p| p[0] <= p[1]));
        assert_eq!(w.vs()[3], -1.0);
        w.replace(1, 4, first + 1, -2.0);
        assert_eq!(w.len(), 15);
        assert_eq!(&w.ts()[..3], &[first, first + 1, first + 3]);
        assert_eq!(&w.vs()[..2], &[first as f64, -2.0]);
        w.replace(0, 0, first - 1, -3.0);
        assert_eq!(w.ts()[0], first - 1);
    }

    /// A tail kept by its ends fills at a read-back and then only drains, one sample a round,
    /// until its next read-back: its room follows it down, a few moves a tail.
    #[test]
    fn a_draining_tail_gives_its_room_back_as_it_drains() {
        let mut w = WindowSamples::default();
        (0..40).for_each(|t| w.push(t, t as f64));
        let (mut room, mut moves) = (w.room(), 0);
        for t in 0..40 {
            w.evict_through(t);
            let visible = w.len();
            assert!(
                w.room() <= visible + visible / 4 + MIN_GROWTH + 1,
                "{visible} samples in {} slots",
                w.room()
            );
            moves += usize::from(w.room() != room);
            room = w.room();
        }
        // an emptied tail keeps the least room it grows by, for its next read-back
        assert!(room <= MIN_GROWTH, "an emptied tail in {room} slots");
        assert!(moves <= 8, "{moves} moves to drain 40 samples");
    }

    /// A window fed in batches, two thirds of its samples in and out each round, keeps its room
    /// from round to round rather than shrinking and growing again.
    #[test]
    fn a_window_fed_in_batches_keeps_its_room() {
        let (n, batch) = (12_i64, 8_i64);
        let mut w = WindowSamples::default();
        let mut rooms = Vec::new();
        for round in 0..20 {
            (0..batch).for_each(|i| {
                w.push(round * batch + i, 0.0);
                rooms.push(w.room());
            });
            w.evict_through(round * batch + batch - 1 - n);
            rooms.push(w.room());
        }
        assert_eq!(w.len(), n as usize);
        let settled = &rooms[rooms.len() / 2..];
        assert!(settled.iter().all(|&r| r == settled[0]), "room after each push and eviction: {rooms:?}");
    }

    #[test]
    fn a_shrunken_window_gives_its_room_back() {
        let mut w = steady(1_000, 0);
        w.evict_through(w.ts()[990]);
        assert_eq!(w.len(), 9);
        assert!(w.room() < 20, "{} slots for 9 samples", w.room());
        w.evict_through(i64::MAX);
        assert!(w.is_empty());
    }
}
