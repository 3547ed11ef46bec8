//! Subscriptions to views, without a dataflow each.
//!
//! Every arrangement a view builds gets a *tap*: an operator on the arrangement's stream of
//! batches that hands each completed time's updates to the subscriptions registered with it
//! on its worker. A subscription is a registration, not a dataflow of its own: a thousand
//! subscriptions cost a thousand entries in lists, not a thousand dataflows for every worker
//! to schedule and track progress in at every clock move (which, in the subscribe
//! benchmark, was most of the latency).
//!
//! A subscription starts at a time no earlier than the clock, so no update after its start
//! has yet left any tap. Each worker's tap sends its shard of the view at the start once that
//! time is complete on the worker (read from the arrangement), then its shard of every later
//! time's change. [`Subscription`] merges the workers' messages, time by time, once every
//! worker has completed the time, and turns each time's updates into element changes. Label
//! sets stay keys until then: an element whose value changed is a retraction and an
//! addition, and is looked up once, off the worker.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

use differential_dataflow::trace::{Cursor, Navigable, SpanOf, TraceReader};
use promflow_storage::Labels;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator as _;
use timely::dataflow::Stream;
use timely::progress::frontier::AntichainRef;

use super::keys::{Key, Keys};
use super::{read_at, Shard, Trace, Value};

/// A worker's shard of a view's updates at one time.
pub(crate) type TimedShard = (u64, Shard);

/// A change of one element of a view.
#[derive(Clone, Debug, PartialEq)]
pub struct ElementChange {
    /// The element's labels, shared with the executor's table of label sets.
    pub labels: Arc<Labels>,
    /// Whether the element was in the view before this change: with `value`, it tells an
    /// element that came from one that changed, so a client need not keep the view's
    /// series to tell them apart.
    pub was_present: bool,
    /// Its new value, or `None` when it left.
    pub value: Option<Value>,
}

/// What a subscription delivers at one time.
#[derive(Debug, PartialEq)]
pub enum ViewChange {
    /// The view's whole content (the first message).
    Whole(Vec<(Arc<Labels>, Value)>),
    /// The elements that changed (in no meaningful order), with their new values, or `None`
    /// for those that left (none when a rule's watch asked to be called at a time).
    Elements(Vec<ElementChange>),
}

/// One worker's end of a subscription, registered with a tap.
pub(crate) struct Subscriber {
    pub(crate) id: u64,
    /// The subscription's start: the first message is the view's content at this time.
    from: u64,
    /// Whether this worker's shard of the content at `from` went.
    started: bool,
    tx: Sender<TimedShard>,
    /// Every worker's progress; this worker stores its own.
    complete: Arc<[AtomicU64]>,
    worker: usize,
    /// Woken after messages are sent.
    wake: Option<Notify>,
}

impl Subscriber {
    /// Worker `worker`'s end of subscription `id`, starting at `from`.
    pub(crate) fn new(
        (id, from): (u64, u64),
        tx: Sender<TimedShard>,
        complete: Arc<[AtomicU64]>,
        worker: usize,
        wake: Option<Notify>,
    ) -> Self {
        Subscriber { id, from, started: false, tx, complete, worker, wake }
    }

    /// The subscription's start.
    pub(crate) fn from(&self) -> u64 {
        self.from
    }

    /// Whether its first message went.
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// Sends the first message, the content at the start; returns whether it went.
    pub(crate) fn start(&mut self, content: impl FnOnce() -> Shard) -> bool {
        self.started = true;
        self.tx.send((self.from, content())).is_ok()
    }

    /// Sends the updates at `t`; returns whether they went.
    pub(crate) fn send(&self, t: u64, updates: Shard) -> bool {
        self.tx.send((t, updates)).is_ok()
    }

    /// Stores that this worker has sent every update before `complete`; returns whether
    /// that moved its progress (once started).
    pub(crate) fn progress(&self, complete: u64) -> bool {
        self.started && self.complete[self.worker].swap(complete, Ordering::AcqRel) < complete
    }

    /// Wakes whom the subscriptions `woken` wake: each woken thread is told of them all
    /// under one lock and unparked once, after the last. Woken one by one, a thread on the same
    /// CPU preempted the sender at the first and looked at one subscription per wake-up.
    pub(crate) fn wake_all<'a>(woken: impl IntoIterator<Item = &'a Subscriber>) {
        let mut threads: Vec<(&Notify, Vec<u64>)> = Vec::new();
        for n in woken.into_iter().filter_map(|s| s.wake.as_ref()) {
            match threads.iter_mut().find(|(t, _)| Arc::ptr_eq(&t.ready, &n.ready)) {
                Some((_, tags)) => tags.push(n.tag),
                None => threads.push((n, vec![n.tag])),
            }
        }
        for (n, tags) in threads {
            n.ready.lock().unwrap_or_else(|e| e.into_inner()).extend(tags);
            n.thread.unpark();
        }
    }
}

/// Whom a subscription's messages wake: a thread, told which of the subscriptions it reads
/// has messages (`tag`), so that it looks at those and not at every one it has.
#[derive(Clone)]
pub struct Notify {
    thread: Thread,
    ready: Arc<Mutex<Vec<u64>>>,
    tag: u64,
}

impl Notify {
    /// Wakes `thread`, after adding `tag` to `ready`.
    pub fn new(thread: Thread, ready: Arc<Mutex<Vec<u64>>>, tag: u64) -> Self {
        Notify { thread, ready, tag }
    }
}

/// The subscriptions registered with one arrangement's tap on one worker.
pub(crate) type Subscribers = Rc<RefCell<Vec<Subscriber>>>;

/// Puts a tap on an arrangement's stream of batches (`trace` is its trace, read for each
/// subscription's first message); returns the list that subscriptions register with.
pub(crate) fn tap(stream: Stream<'_, u64, Vec<SpanOf<Trace>>>, mut trace: Trace) -> Subscribers {
    let subscribers: Subscribers = Rc::default();
    let registered = Rc::clone(&subscribers);
    // updates of times not yet complete on this worker
    let mut pending: BTreeMap<u64, Shard> = BTreeMap::new();
    stream.sink(Pipeline, "Tap", move |(input, frontier)| {
        let complete = frontier.frontier().iter().min().copied().unwrap_or(u64::MAX);
        let mut subscribers = registered.borrow_mut();
        if subscribers.is_empty() {
            // what completes while nobody listens is before any later subscription's start
            input.for_each(|_, _| {});
            pending.clear();
        } else {
            input.for_each(|_, spans| {
                for span in spans.iter() {
                    let Some(batch) = span.inner.as_ref() else { continue };
                    let mut cursor = batch.cursor();
                    while cursor.key_valid(batch) {
                        let key = *cursor.key(batch);
                        while cursor.val_valid(batch) {
                            let value = cursor.val(batch);
                            cursor.map_times(batch, |t, d| {
                                pending.entry(*t).or_default().push((key, value.clone(), *d))
                            });
                            cursor.step_val(batch);
                        }
                        cursor.step_key(batch);
                    }
                }
            });
            send(&mut subscribers, &mut pending, complete, &mut trace);
        }
        // this handle holds back no compaction that a later subscription's first read needs:
        // each starts at the clock or later
        if let Some(t) = complete.checked_sub(1).filter(|t| *t < u64::MAX - 1) {
            let frontier = [t];
            trace.set_logical_compaction(AntichainRef::new(&frontier));
            trace.set_physical_compaction(AntichainRef::new(&frontier));
        }
    });
    subscribers
}

/// Sends each subscription its first message once its start is `complete` (the content at
/// its start, read from `trace`), then the updates of each time before `complete` after its
/// start; stores the worker's progress and wakes whom it sent to or whose progress moved
/// (with several workers, the last to complete a time may have nothing to send for it).
fn send(
    subscribers: &mut [Subscriber],
    pending: &mut BTreeMap<u64, Shard>,
    complete: u64,
    trace: &mut Trace,
) {
    let mut sent = vec![false; subscribers.len()];
    for (s, sent) in subscribers.iter_mut().zip(sent.iter_mut()) {
        if !s.started() && s.from() < complete {
            let from = s.from();
            *sent |= s.start(|| read_at(trace, from));
        }
    }
    while let Some(entry) = pending.first_entry() {
        if *entry.key() >= complete {
            break;
        }
        let (t, updates) = entry.remove_entry();
        for (s, sent) in subscribers.iter().zip(sent.iter_mut()) {
            if s.started() && s.from() < t {
                *sent |= s.send(t, updates.clone());
            }
        }
    }
    let woken = subscribers.iter().zip(sent).filter(|(s, sent)| s.progress(complete) || *sent);
    Subscriber::wake_all(woken.map(|(s, _)| s));
}

/// A view's changes as they complete ([`super::Incremental::subscribe`]): the view's content
/// at the subscription's start, then one change per time with a change, in time order.
pub struct Subscription {
    changes: Receiver<TimedShard>,
    pub(crate) id: u64,
    /// Per worker: every change at a time before this one has been sent.
    complete: Arc<[AtomicU64]>,
    /// The subscription's start: its first message is the view's content then.
    from: u64,
    /// Workers' shards of times not yet complete on every worker (the start's always there,
    /// so that it is delivered even when the view is empty).
    pending: BTreeMap<u64, Shard>,
    /// Every worker dropped its end: the view's dataflow is gone, or the subscription ended.
    disconnected: bool,
    keys: Keys,
}

impl Subscription {
    pub(crate) fn new(
        id: u64,
        from: u64,
        workers: usize,
        keys: Keys,
    ) -> (Subscription, Sender<TimedShard>, Arc<[AtomicU64]>) {
        let (tx, changes) = std::sync::mpsc::channel();
        let complete: Arc<[AtomicU64]> = (0..workers).map(|_| AtomicU64::new(0)).collect();
        let pending = BTreeMap::from([(from, Vec::new())]);
        let sub = Subscription {
            changes,
            id,
            complete: Arc::clone(&complete),
            from,
            pending,
            disconnected: false,
            keys,
        };
        (sub, tx, complete)
    }

    /// Every change at a time before this one has been sent by every worker (`i64::MAX` once
    /// the view can no longer change).
    pub fn complete_before(&self) -> i64 {
        let min = self.complete.iter().map(|c| c.load(Ordering::Acquire)).min().unwrap_or(0);
        min.min(i64::MAX as u64) as i64
    }

    /// The next change and its time, if every worker has completed the time; `Disconnected`
    /// once none can come (after [`super::Incremental::unsubscribe`], or when the view is
    /// dropped).
    pub fn try_next(&mut self) -> Result<(i64, ViewChange), TryRecvError> {
        // progress first: a worker sends a time's updates before it says the time is complete
        let complete = self.complete_before();
        self.drain();
        match self.pending.first_entry() {
            Some(first) if (*first.key() as i64) < complete => {
                let (t, updates) = first.remove_entry();
                Ok((t.min(i64::MAX as u64) as i64, self.change(t, updates)))
            }
            _ if self.disconnected => Err(TryRecvError::Disconnected),
            _ => Err(TryRecvError::Empty),
        }
    }

    /// [`Subscription::try_next`], waiting up to `timeout` for a change.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<(i64, ViewChange), RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_next() {
                Ok(change) => return Ok(change),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            // a message may come before the progress that completes its time: poll briefly
            match self.changes.recv_timeout(left.min(Duration::from_millis(1))) {
                Ok(shard) => self.keep(shard),
                Err(RecvTimeoutError::Disconnected) => self.disconnected = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Brings `content` (the view's elements as this subscription's messages so far make
    /// them) up to `t`: waits up to `wait` until every worker has completed `t`, then applies
    /// every message through it. A client that follows a view's content uses this; so do the
    /// tests that compare it with the batch executor.
    pub fn follow_through(
        &mut self,
        t: i64,
        content: &mut std::collections::HashMap<Labels, Value>,
        wait: Duration,
    ) -> Result<(), RecvTimeoutError> {
        let deadline = Instant::now() + wait;
        while self.complete_before() <= t {
            if self.disconnected {
                return Err(RecvTimeoutError::Disconnected);
            }
            if Instant::now() > deadline {
                return Err(RecvTimeoutError::Timeout);
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        self.drain();
        while self.pending.first_key_value().is_some_and(|(at, _)| *at as i64 <= t) {
            let Ok((_, change)) = self.try_next() else { break };
            match change {
                ViewChange::Whole(rows) => {
                    *content = rows.into_iter().map(|(l, v)| (Arc::unwrap_or_clone(l), v)).collect()
                }
                ViewChange::Elements(changes) => {
                    for c in changes {
                        match c.value {
                            Some(v) => content.insert(Arc::unwrap_or_clone(c.labels), v),
                            None => content.remove(&*c.labels),
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes every message sent so far.
    fn drain(&mut self) {
        loop {
            match self.changes.try_recv() {
                Ok(shard) => self.keep(shard),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.disconnected = true;
                    return;
                }
            }
        }
    }

    /// Adds a worker's shard to its time's updates.
    fn keep(&mut self, (t, rows): TimedShard) {
        self.pending.entry(t).or_default().extend(rows);
    }

    /// Every worker's updates at `t` as what changed: the whole content at the start, then
    /// each element's new value (a changed element comes as −old and +new, one that left as
    /// −old only).
    fn change(&self, t: u64, mut updates: Shard) -> ViewChange {
        if t == self.from {
            let whole = updates.into_iter().filter(|u| u.2 > 0).map(|(k, v, _)| (self.keys.shared(k), v));
            return ViewChange::Whole(whole.collect());
        }
        // each element's addition sorts after its retraction, and is the one kept; a
        // retraction says the element was there
        updates.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
        let mut elements: Vec<(Key, bool, Option<Value>)> = Vec::with_capacity(updates.len());
        for (key, value, diff) in updates {
            let value = (diff > 0).then_some(value);
            match elements.last_mut() {
                Some(last) if last.0 == key => last.2 = value.or(last.2.take()),
                _ => elements.push((key, diff < 0, value)),
            }
        }
        let change =
            |(k, was_present, value)| ElementChange { labels: self.keys.shared(k), was_present, value };
        ViewChange::Elements(elements.into_iter().map(change).collect())
    }
}
