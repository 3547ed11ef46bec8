//! Live views: query expressions that the incremental executor keeps current, the one service
//! that both its clients use — the rule manager (`--rules.evaluation-mode=event`: a rule reads
//! its view at each evaluation instead of evaluating from scratch) and live result streams
//! (`/api/v1/subscribe`: a subscription is handed each change of its view as it happens).
//!
//! [`LiveViews`] subscribes to storage's append feed when it starts. A rule's view is
//! installed at its first evaluation and starts from history (the querier, over the
//! expression's longest window plus the lookback); from then on the feed keeps it current.
//! Storage may deliver a sample both in that history and in the feed: the per-series
//! operator ignores a sample whose timestamp it already holds, so nothing counts twice.
//!
//! Before each read every batch committed so far is taken from the feed, so a view read at
//! `t` has seen every sample acknowledged before the read. An expression the incremental
//! executor does not maintain is evaluated by the batch executor, as in tick mode.
//!
//! The dataflow's clock follows the wall clock, so a view changes as soon as the data does,
//! but never passes the next evaluation time a group has announced ([`LiveViews::schedule`]):
//! that evaluation can still read its views at exactly its time. After samples arrive the
//! clock is held while more keep coming (for at most [`HOLD_MAX`]): a burst of remote-write
//! requests that carry one round of samples, stamped alike, then enters the dataflow at
//! their own timestamp, one change per series and aggregate, instead of at the arrival time
//! of each request. [`LiveViews::watch`] hands a view's changes to a handler as they
//! happen (event-mode alerts).
//!
//! On a cluster's computation every process must build the same dataflows in the same
//! order, so a client's subscription goes through the computation's sequenced log
//! ([`everywhere`]): every process installs its view at the same place in the log, with a
//! read copy on the process of the client.

mod everywhere;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use promflow_storage::{now_ms, CommittedBatch, Labels, Querier, Wake};

pub use crate::ViewChange;
use crate::{Grain, Incremental, Notify, Subscription, Value, ViewId, READ_WAIT};
pub use everywhere::CompileFn;
use promflow_plan::{Error, Plan};

/// How long a view keeps its past: reads more than this before the newest read are not
/// answered correctly (a rule reads at its group's evaluation time, close to now). A read
/// walks every update a view keeps, so this is kept short.
const KEEP_MS: i64 = 60_000;

/// Windows at least this long are kept by their ends where the function allows
/// ([`Incremental::read_back_from`]): a `[1h]` window of 15 s samples of `rate` keeps at most
/// 40 of its 240, a `[1d]` window 40 of its 5,760. Shorter windows keep every sample, which
/// costs little and spares their frequent read-backs.
const ENDS_FROM_MS: i64 = 3_600_000;

/// How often the clock moves when no sample arrives: for what changes with time alone in
/// the views that follow every sample (alerts' views: lookback and window expiry, `absent`),
/// which a move brings up to date at most this late; `for` timers do not wait for it. Every
/// move costs each of those dataflows a round of progress tracking: with 250 ms, the moves
/// between the bursts of a 15 s scrape interval were half the dataflow workers' CPU in the
/// rules benchmark.
const IDLE_CLOCK: Duration = Duration::from_secs(1);

/// How soon after the last move the clock may move for an event due in the hub's views
/// ([`Incremental::next_event`]: a window's oldest sample leaving it), rather than wait for
/// the idle clock: a subscriber sees such a change at most this late. Views that follow
/// scrapes spread over their interval have an event due nearly always; this bounds their
/// moves to four a second.
const EVENT_CLOCK: Duration = Duration::from_millis(250);

/// How often a clock move also compacts the views ([`Incremental::compact`]): the views that
/// rules read keep [`KEEP_MS`] of past, the others none.
const COMPACT_EVERY: Duration = Duration::from_secs(5);

/// How long the clock stays held after the last samples of a burst arrived (storage wakes the
/// feed thread at each batch).
const FEED_POLL: Duration = Duration::from_millis(5);

/// How long the clock may be held after samples arrive, while more arrive at every poll. It
/// adds to the latency of a change (the budget from remote write to notification is
/// 50 ms); a lone write waits one poll.
const HOLD_MAX: Duration = Duration::from_millis(20);

/// An announced evaluation this far behind the wall clock no longer holds the clock back (a
/// stopped or stuck group), unless a group's first evaluation is under way ([`InstallHold`]).
const LATE_EVALUATION_MS: i64 = 10_000;

/// Handles a view's change at a time (event-mode alerts). Returns when it wants to be called
/// again with no change (a pending alert's `for` running out), if ever.
pub type WatchFn = Box<dyn FnMut(i64, ViewChange) -> Option<i64> + Send>;

/// How long a group's first evaluation waits for the first evaluations at earlier times
/// ([`InstallHold::wait_for_earlier`]). Installing a day of history at 50k series takes
/// about a minute; past this, the earlier group's views installed afterwards are evaluated in
/// batch once, which costs memory, not correctness.
const FIRST_EVALUATION_WAIT: Duration = Duration::from_secs(120);

/// The name of the count of rule evaluations answered by reading a view, and its help.
pub const VIEW_READS: &str = "promflow_rule_view_reads_total";
/// [`VIEW_READS`]' help text.
pub const VIEW_READS_HELP: &str = "Rule evaluations answered by reading their view.";

/// How long an evaluation waits for the watches to catch up with its time
/// ([`LiveViews::settle`]); the dataflow answers within milliseconds unless overloaded.
const SETTLE_WAIT: Duration = Duration::from_secs(1);

struct Watch {
    changes: Subscription,
    /// The view watched, and whether a client (not a rule) watches it.
    view: ViewId,
    reader: Reader,
    /// When the watch began: its first message holds the view's whole content at its start
    /// (this time, or the dataflow's clock if later), which is when the watch learns it, not
    /// when it became true.
    since: i64,
    handler: WatchFn,
    wake_at: Option<i64>,
    /// On a cluster's computation, a client's subscription's token in the sequenced log:
    /// every process gives up its view when the log says so ([`everywhere`]).
    token: Option<u64>,
}

/// How long a read waits on a cluster's computation that a read found behind, before its
/// rule is evaluated in batch: a rule group then waits that long once per evaluation, not
/// [`READ_WAIT`] per rule.
const BEHIND_WAIT: Duration = Duration::from_secs(2);

/// How a cluster's computation keeps up with the reads of its views.
#[derive(Default)]
struct Pace {
    /// [`Incremental::progress`] when last seen, and when it was first seen at that count.
    seen: Option<(u64, Instant)>,
    /// The latest evaluation time a read found the computation behind at (it timed out
    /// while the computation moved on); cleared by a read answered in time.
    behind_at: Option<i64>,
}

impl Pace {
    /// How long the computation has been at `progress`, this count seen now.
    fn still_for(&mut self, progress: u64) -> Duration {
        match self.seen {
            Some((seen, since)) if seen == progress => since.elapsed(),
            _ => {
                self.seen = Some((progress, Instant::now()));
                Duration::ZERO
            }
        }
    }
}

/// Rule views over one storage, fed by its append feed.
pub struct LiveViews {
    inc: Incremental,
    feed: Mutex<Receiver<Arc<CommittedBatch>>>,
    querier: Arc<dyn Querier>,
    /// Whether views may no longer be installed ([`LiveViews::close`]).
    closed: AtomicBool,
    /// Reads answered from a view ([`LiveViews::read`]).
    reads: AtomicU64,
    /// Whether a read on a cluster's computation went unanswered: the computation is
    /// treated as lost, and reads go to batch at once.
    unanswered: AtomicBool,
    /// How a cluster's computation keeps up with the reads.
    pace: Mutex<Pace>,
    views: Mutex<Vec<SeenExpression>>,
    /// Views [`LiveViews::prepare`] installed when the clock had already passed the time they
    /// are first read at: their history counts from the clock, so that first read is
    /// evaluated in batch.
    late: Mutex<HashSet<ViewId>>,
    /// Announced evaluation times, with how many groups announced each.
    scheduled: Mutex<BTreeMap<i64, usize>>,
    /// Groups' first evaluations under way ([`InstallHold`]).
    first_evaluations: FirstEvaluations,
    watches: Mutex<HashMap<u64, Watch>>,
    next_watch: Mutex<u64>,
    clock_state: Mutex<ClockState>,
    /// Whether the clock follows the wall clock (the server) or only the reads (tests that
    /// evaluate at chosen times).
    wall_clock: bool,
    /// The thread that runs watches, woken by their subscriptions.
    watch_thread: OnceLock<Thread>,
    /// The watches whose subscriptions have messages since the watch thread last looked: it
    /// looks at those only, not at every watch each time one of a thousand has a message.
    ready: Arc<Mutex<Vec<u64>>>,
    /// On a cluster's computation, the clients' subscriptions in the sequenced log.
    everywhere: Mutex<everywhere::Subscriptions>,
}

/// An expression seen, with the grain it is read at, its view, and who reads it.
struct SeenExpression {
    plan: Plan,
    grain: Option<Grain>,
    /// `Err`: not maintained (why), evaluated in batch.
    view: Result<ViewId, String>,
    /// Whether a rule reads it: rules' views last as long as the server.
    rules: bool,
    /// Clients subscribed to it: a view no rule reads goes with its last client.
    clients: usize,
    /// Whether the view is in the hub (a client's; streamed, not read).
    hub: bool,
    /// On a cluster's computation, the processes that read the view (`None`: every process,
    /// or one process); a view in a hub is read on its hub's process alone.
    readers: Option<BTreeSet<usize>>,
}

/// Who reads a view.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reader {
    Rule,
    Client,
}

/// Who asks for a view ([`LiveViews::view_of`]), and where it is read.
#[derive(Clone, Copy)]
struct Asker<'a> {
    reader: Reader,
    /// On a cluster's computation, the processes that read it (every process: `None`).
    readers: Option<&'a BTreeSet<usize>>,
    /// Whether the cluster's sequenced log asks for it: every process installs it at the same
    /// place in the log, so a computation closed to other installs takes it.
    logged: bool,
}

impl Asker<'_> {
    fn here(reader: Reader) -> Self {
        Asker { reader, readers: None, logged: false }
    }
}

/// A group's first evaluation under way ([`LiveViews::prepare`]): until it is dropped, no
/// announced evaluation counts as late. Drop it once the evaluation has read its views.
///
/// A group installs its views from history at its first evaluation, then reads them at that
/// evaluation's time; over a day of history at 50k series the installs take most of a
/// minute. Its announced evaluation must hold the clock all that while: were it dropped as
/// late, every view installed after the clock passed it would start from the clock and be
/// evaluated in batch that once, reading its whole window for every series at once, and a
/// read at a time the clock had passed by more than [`KEEP_MS`] would find the view
/// compacted past it.
#[must_use = "the clock waits for the evaluation only while this is held"]
pub struct InstallHold<'a> {
    under_way: &'a FirstEvaluations,
    t: i64,
}

impl InstallHold<'_> {
    /// Waits, for at most [`FIRST_EVALUATION_WAIT`], until no first evaluation at an earlier
    /// time is under way. Call it after installing and before reading: a read completes its
    /// time, and a group whose first evaluation is earlier but installs after that read
    /// would find the clock past its time, and evaluate the views it installs then in batch.
    /// Groups that start together install in turns, so without the wait the order of their
    /// reads is the order their installs happen to finish in. Call it holding no lock that a
    /// watch's handler takes: the earlier group's evaluation runs the watches.
    pub fn wait_for_earlier(&self) {
        let deadline = Instant::now() + FIRST_EVALUATION_WAIT;
        let mut times = self.under_way.times.lock().unwrap_or_else(|e| e.into_inner());
        while times.keys().next().is_some_and(|earliest| *earliest < self.t) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    at = self.t,
                    "a rule group's first evaluation stopped waiting for an earlier one"
                );
                return;
            }
            times = self.under_way.done.wait_timeout(times, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl Drop for InstallHold<'_> {
    fn drop(&mut self) {
        let mut times = self.under_way.times.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = times.get_mut(&self.t) {
            *n -= 1;
            if *n == 0 {
                times.remove(&self.t);
            }
        }
        self.under_way.done.notify_all();
    }
}

/// The times of the groups' first evaluations under way, with how many groups evaluate at
/// each ([`InstallHold`]).
#[derive(Default)]
struct FirstEvaluations {
    times: Mutex<BTreeMap<i64, usize>>,
    /// Signalled when one ends.
    done: Condvar,
}

impl FirstEvaluations {
    fn hold(&self, t: i64) -> InstallHold<'_> {
        *self.times.lock().unwrap_or_else(|e| e.into_inner()).entry(t).or_default() += 1;
        InstallHold { under_way: self, t }
    }

    fn any(&self) -> bool {
        !self.times.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

/// What the clock waits for.
#[derive(Clone)]
struct ClockState {
    /// While the clock is held for appended samples: since when, and when the last arrived
    /// (taken off the feed, before the dataflow takes them, which overlaps the hold).
    held: Option<(Instant, Instant)>,
    /// When the clock last moved.
    moved_at: Instant,
    /// When the clock last compacted the views.
    compacted_at: Instant,
}

impl ClockState {
    /// Samples arrived now.
    fn arrived(&mut self) {
        let now = Instant::now();
        let since = self.held.map_or(now, |(since, _)| since);
        self.held = Some((since, now));
    }

    /// Whether the clock should move now: once no samples arrived for [`FEED_POLL`] (or they
    /// have been held for [`HOLD_MAX`]), else every [`IDLE_CLOCK`], or [`EVENT_CLOCK`] after
    /// the last move once an event is due (`event_in`: how long until one is, if any is).
    fn due(&mut self, event_in: Option<Duration>) -> bool {
        let now = Instant::now();
        let due = match self.held {
            Some((since, last)) => now - last >= FEED_POLL || now - since >= HOLD_MAX,
            None => {
                let idle = now - self.moved_at;
                idle >= IDLE_CLOCK || (event_in == Some(Duration::ZERO) && idle >= EVENT_CLOCK)
            }
        };
        if due {
            self.held = None;
            self.moved_at = now;
        }
        due
    }

    /// How long until the clock may be due with no sample arriving (`event_in` as for
    /// [`ClockState::due`]).
    fn wait(&self, event_in: Option<Duration>) -> Duration {
        match self.held {
            Some((since, last)) => {
                FEED_POLL.saturating_sub(last.elapsed()).min(HOLD_MAX.saturating_sub(since.elapsed()))
            }
            None => {
                let idle = self.moved_at.elapsed();
                let event = event_in.map(|e| e.max(EVENT_CLOCK.saturating_sub(idle)));
                IDLE_CLOCK.saturating_sub(idle).min(event.unwrap_or(Duration::MAX))
            }
        }
    }
}

impl Watch {
    /// Hands the handler every change whose time is complete, time by time.
    fn deliver(&mut self) {
        while let Ok((t, change)) = self.changes.try_next() {
            self.call(t.max(self.since), change);
        }
    }

    /// Hands the handler what changed at `t`, and keeps when it wants to be called again.
    fn call(&mut self, t: i64, change: ViewChange) {
        self.wake_at = (self.handler)(t, change);
    }
}

impl LiveViews {
    /// Starts `workers` dataflow workers over the append feed that `subscribe` returns
    /// (subscribed here, before any view is installed; storage calls the [`Wake`] it is given
    /// after each batch) and `querier` (for history), and the threads that take the feed and
    /// move the clock, and that run watches. With `wall_clock` false the clock moves only with
    /// reads, for tests that evaluate at times of their choosing.
    pub fn start(
        workers: usize,
        lookback_ms: i64,
        subscribe: impl FnOnce(Wake) -> Receiver<Arc<CommittedBatch>>,
        querier: Arc<dyn Querier>,
        wall_clock: bool,
    ) -> Result<Arc<LiveViews>, String> {
        let inc = Incremental::start(workers, lookback_ms)?;
        LiveViews::start_over(inc, subscribe, Arc::clone(&querier), querier, wall_clock)
    }

    /// [`LiveViews::start`] over an executor already started: one process's share of a
    /// cluster's computation ([`crate::cluster::Formation`]). Views read their history from
    /// `history` (in a cluster, this node's storage: every node loads what it stores) and the
    /// samples of long windows back from `read_back` (in a cluster, every node's storage: a
    /// series' window may be kept in a process that does not store it).
    pub fn start_over(
        inc: Incremental,
        subscribe: impl FnOnce(Wake) -> Receiver<Arc<CommittedBatch>>,
        history: Arc<dyn Querier>,
        read_back: Arc<dyn Querier>,
        wall_clock: bool,
    ) -> Result<Arc<LiveViews>, String> {
        let feed_thread: Arc<OnceLock<Thread>> = Arc::default();
        let wake = Arc::clone(&feed_thread);
        let feed = subscribe(Box::new(move || {
            if let Some(t) = wake.get() {
                t.unpark();
            }
        }));
        inc.read_back_from(read_back, ENDS_FROM_MS);
        let views = Arc::new(LiveViews {
            inc,
            feed: Mutex::new(feed),
            querier: history,
            closed: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            unanswered: AtomicBool::new(false),
            pace: Mutex::default(),
            views: Mutex::new(Vec::new()),
            late: Mutex::default(),
            scheduled: Mutex::new(BTreeMap::new()),
            first_evaluations: FirstEvaluations::default(),
            watches: Mutex::new(HashMap::new()),
            next_watch: Mutex::new(0),
            clock_state: Mutex::new(ClockState {
                held: None,
                moved_at: Instant::now(),
                compacted_at: Instant::now(),
            }),
            wall_clock,
            watch_thread: OnceLock::new(),
            ready: Arc::default(),
            everywhere: Mutex::default(),
        });
        // each thread runs its step, then sleeps until woken or until the step wants it back
        let spawn = |name: &str, step: fn(&LiveViews) -> Duration| {
            let weak: Weak<LiveViews> = Arc::downgrade(&views);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    while let Some(v) = weak.upgrade() {
                        let wait = step(&v);
                        drop(v);
                        std::thread::park_timeout(wait);
                    }
                })
                .map(|h| h.thread().clone())
                .map_err(|e| format!("starting {name}: {e}"))
        };
        let feed = spawn("rule-views-feed", |v| {
            v.take_feed();
            v.move_clock()
        })?;
        let _ = feed_thread.set(feed);
        let watch = spawn("rule-views-watch", |v| {
            v.run_ready_watches();
            v.watch_wait()
        })?;
        let _ = views.watch_thread.set(watch);
        Ok(views)
    }

    /// Hands every batch committed so far to the views; the clock is held from each batch's
    /// arrival.
    fn take_feed(&self) {
        let feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        while let Ok(batch) = feed.try_recv() {
            // another node of the cluster feeds these series to the computation
            if batch.replica {
                continue;
            }
            self.clock_state.lock().unwrap_or_else(|e| e.into_inner()).arrived();
            let floats = batch.samples.iter().map(|(id, s)| (*id, s.t, Value::float(s.v)));
            let hists = batch.histograms.iter().map(|(id, h)| (*id, h.t, Value::histogram(Arc::clone(&h.h))));
            self.inc.append_by_id(floats.chain(hists), batch.removals, |id| batch.labels(id));
        }
    }

    /// Moves the clock to now, but not past the next announced evaluation, when it is due
    /// ([`ClockState::due`]); returns how long the feed thread may sleep unless woken.
    fn move_clock(&self) -> Duration {
        if !self.wall_clock {
            return IDLE_CLOCK;
        }
        // an event at `t` is run once the clock has passed it
        let event_in = self
            .inc
            .next_event()
            .map(|t| Duration::from_millis(t.saturating_add(1).saturating_sub(now_ms()).max(0) as u64));
        {
            let mut clock = self.clock_state.lock().unwrap_or_else(|e| e.into_inner());
            if !clock.due(event_in) {
                return clock.wait(event_in);
            }
        }
        let now = now_ms();
        let quiet = !self.first_evaluations.any();
        let mut scheduled = self.scheduled.lock().unwrap_or_else(|e| e.into_inner());
        if quiet {
            scheduled.retain(|t, _| *t >= now - LATE_EVALUATION_MS);
        }
        let target = scheduled.keys().next().map_or(now, |t| now.min(*t));
        drop(scheduled);
        self.inc.advance(target);
        // reads compact too, but views only subscribed to are never read
        let compact = {
            let mut clock = self.clock_state.lock().unwrap_or_else(|e| e.into_inner());
            let due = clock.compacted_at.elapsed() >= COMPACT_EVERY;
            if due {
                clock.compacted_at = Instant::now();
            }
            due
        };
        if compact {
            self.inc.compact(target - KEEP_MS);
        }
        // by then the hub has run what the move made due, and tells its next event
        EVENT_CLOCK
    }

    /// Announces an evaluation at `t`: the clock waits for it.
    pub fn schedule(&self, t: i64) {
        *self.scheduled.lock().unwrap_or_else(|e| e.into_inner()).entry(t).or_default() += 1;
    }

    /// Withdraws an announcement (the evaluation ran, or its group stopped).
    pub fn unschedule(&self, t: i64) {
        let mut scheduled = self.scheduled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = scheduled.get_mut(&t) {
            *n -= 1;
            if *n == 0 {
                scheduled.remove(&t);
            }
        }
    }

    /// The view of `plan` at `grain` for `asker`, installed from history at `t` on first use
    /// (then `fresh`; on a cluster's computation, with a read copy on the asker's readers).
    /// [`Error::Unsupported`] when the incremental executor does not maintain it.
    fn view_of(
        &self,
        plan: &Plan,
        t: i64,
        grain: Option<Grain>,
        asker: Asker<'_>,
    ) -> Result<(ViewId, bool), Error> {
        let Asker { reader, readers, logged } = asker;
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        // a rule reads its views, so never a hub view; a client shares a rule's view first,
        // and a hub view only with clients of the same process
        let same = views
            .iter_mut()
            .filter(|s| s.grain == grain && s.plan == *plan)
            .filter(|s| !s.hub || (reader == Reader::Client && s.readers.as_ref() == readers))
            .min_by_key(|s| s.hub);
        if let Some(seen) = same {
            let view = seen.view.clone().map_err(Error::Unsupported)?;
            // on a cluster's computation every process keeps a view as long as the others
            // do: what holds it is settled when the computation forms and by the log, and a
            // reader of this process alone shares it without holding it
            match reader {
                _ if self.closed.load(Ordering::Relaxed) && !logged => {}
                Reader::Rule => seen.rules = true,
                Reader::Client => seen.clients += 1,
            }
            if let Some(readers) = readers {
                self.inc.read_on(view, readers);
            }
            return Ok((view, false));
        }
        if self.closed.load(Ordering::Relaxed) && !logged {
            // not remembered: the expression may be installed in the next computation
            return Err(Error::Unsupported("a view the cluster's computation was not formed with".into()));
        }
        self.take_feed();
        // everything committed until now, even ahead of `t`: a later delivery of the same
        // samples through the feed is ignored. A client's view is in the hub when the hub
        // holds its plan (on a cluster's computation, the hub of its one reader's process).
        let hub_reader = match readers {
            Some(r) if r.len() == 1 => r.first().copied(),
            _ => None,
        };
        let hub = match reader {
            Reader::Client => {
                match self.inc.install_hub(plan, Some((self.querier.as_ref(), t)), hub_reader) {
                    Ok(view) => Some(view),
                    Err(Error::Unsupported(_)) => None,
                    Err(e) => return Err(e),
                }
            }
            Reader::Rule => None,
        };
        let installed = match hub {
            Some(view) => Ok(view),
            None => self.inc.install_from_read_on(plan, self.querier.as_ref(), t, grain, readers),
        };
        let view = match installed {
            Ok(v) => Ok(v),
            Err(Error::Unsupported(what)) => {
                if reader == Reader::Rule {
                    tracing::info!(%what, "rule expression evaluated in batch, not as a view");
                }
                Err(what)
            }
            Err(e) => return Err(e),
        };
        // a client's expression that is not maintained is not remembered: clients come and go
        if reader == Reader::Rule || view.is_ok() {
            views.push(SeenExpression {
                plan: plan.clone(),
                grain,
                view: view.clone(),
                rules: reader == Reader::Rule,
                clients: usize::from(reader == Reader::Client),
                hub: hub.is_some(),
                readers: readers.cloned(),
            });
        }
        view.map(|v| (v, true)).map_err(Error::Unsupported)
    }

    /// Installs, from history at `t`, the views of `plans` (each with the grain it is read
    /// with) that are not installed yet, before any of them is read at `t`. A group's first
    /// evaluation calls it: a view first needed after an earlier rule's read completed `t`
    /// would start from the clock and be evaluated in batch that once, which over a `[1d]`
    /// window means reading a day of samples for every series at once. No announced
    /// evaluation counts as late until the hold returned is dropped: the caller waits on it
    /// for earlier groups ([`InstallHold::wait_for_earlier`]), reads the views at `t`, then
    /// drops it.
    pub fn prepare<'p>(
        &self,
        plans: impl IntoIterator<Item = (&'p Plan, Option<Grain>)>,
        t: i64,
    ) -> InstallHold<'_> {
        self.prepare_read_on(plans, t, None)
    }

    /// [`LiveViews::prepare`], with, on a cluster's computation, a read copy of each view only
    /// on the processes `readers` (every process: `None`): where its rules are evaluated.
    pub fn prepare_read_on<'p>(
        &self,
        plans: impl IntoIterator<Item = (&'p Plan, Option<Grain>)>,
        t: i64,
        readers: Option<&BTreeSet<usize>>,
    ) -> InstallHold<'_> {
        let hold = self.first_evaluations.hold(t);
        for (plan, grain) in plans {
            let grain = grain.filter(|g| g.contains(t));
            let asker = Asker { readers, ..Asker::here(Reader::Rule) };
            match self.view_of(plan, t, grain, asker) {
                Ok((view, true)) if self.inc.clock() > t => {
                    self.late.lock().unwrap_or_else(|e| e.into_inner()).insert(view);
                }
                Ok(_) | Err(Error::Unsupported(_)) => {}
                Err(e) => tracing::warn!(error = %e, "installing a rule's view"),
            }
        }
        hold
    }

    /// Installs no more views: an expression not seen yet is evaluated in batch. The
    /// processes of a cluster's computation must build the same dataflows in the same order,
    /// so each installs the views it was formed with and no other.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Whether the computation under the views has failed ([`Incremental::lost`]), or, on a
    /// cluster's computation, failed to answer a read.
    pub fn lost(&self) -> bool {
        self.unanswered.load(Ordering::Relaxed) || self.inc.lost()
    }

    /// How many rule evaluations read these views.
    pub fn view_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// `plan`'s value at `t` from its view, or `None` when the incremental executor does not
    /// maintain it, or not at `t` (the caller evaluates it in batch). A view read with a
    /// `grain` (a recording rule's, read only at its group's evaluation times) changes only at
    /// the grain's times.
    pub fn read(
        &self,
        plan: &Plan,
        t: i64,
        grain: Option<Grain>,
    ) -> Option<Result<Vec<(Labels, Value)>, String>> {
        if self.closed.load(Ordering::Relaxed) && self.lost() {
            return None;
        }
        let grain = grain.filter(|g| g.contains(t));
        let (view, fresh) = match self.view_of(plan, t, grain, Asker::here(Reader::Rule)) {
            Ok(v) => v,
            Err(Error::Unsupported(_)) => return None,
            Err(e) => return Some(Err(e.to_string())),
        };
        self.take_feed();
        // a view installed when the clock had passed `t` (an earlier rule of the group read
        // at `t`, the group runs late) holds its history from the clock on: it is evaluated
        // in batch this once
        let late = self.late.lock().unwrap_or_else(|e| e.into_inner()).remove(&view);
        if (fresh || late) && self.inc.clock() > t {
            return None;
        }
        let cluster = self.closed.load(Ordering::Relaxed);
        let mut wait = READ_WAIT;
        if cluster {
            let mut pace = self.pace.lock().unwrap_or_else(|e| e.into_inner());
            match pace.behind_at {
                // a read at this evaluation's time, or a later one, found it behind already
                Some(at) if t <= at => return None,
                Some(_) => wait = BEHIND_WAIT,
                None => {}
            }
            pace.still_for(self.inc.progress());
        }
        let rows = match self.inc.read_within(view, t, wait) {
            // on a cluster's computation, a view this node does not read (its group is
            // evaluated elsewhere)
            Err(Error::Unsupported(_)) => return None,
            // a computation that moves on but has not reached `t`: behind (a burst of
            // samples, history loading), not stalled. The rule is evaluated in batch, and so
            // are the others at `t`; the computation stays
            Err(Error::Timeout(_)) if cluster && !self.stalled() => {
                let mut pace = self.pace.lock().unwrap_or_else(|e| e.into_inner());
                if pace.behind_at.replace(t).is_none() {
                    tracing::warn!(
                        "the cluster's dataflow is behind; reading its views in batch until it catches up"
                    );
                }
                return None;
            }
            // a computation that did not move on at all: a process stopped answering. The
            // rule is evaluated in batch, and the computation is left and formed again
            Err(e @ Error::Timeout(_)) if cluster => {
                if !self.unanswered.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "reading a view of the cluster's dataflow; evaluating in batch");
                }
                return None;
            }
            // the computation failed under the read (its formation sees that and forms it
            // again), or the view's value is an error: the batch executor evaluates the rule
            // and says which. Not a reason to leave a computation that works
            Err(e) if cluster => {
                tracing::debug!(error = %e, "reading a view of the cluster's dataflow failed; evaluating in batch");
                return None;
            }
            Ok(rows) if cluster => {
                if self.pace.lock().unwrap_or_else(|e| e.into_inner()).behind_at.take().is_some() {
                    tracing::info!("the cluster's dataflow caught up; reading its views again");
                }
                Ok(rows)
            }
            read => read.map_err(|e| e.to_string()),
        };
        self.inc.compact(t - KEEP_MS);
        self.reads.fetch_add(1, Ordering::Relaxed);
        Some(rows)
    }

    /// Whether the cluster's computation has not moved on for [`READ_WAIT`]: a process
    /// stopped answering (a paused machine), as a read that waits for it finds.
    fn stalled(&self) -> bool {
        let mut pace = self.pace.lock().unwrap_or_else(|e| e.into_inner());
        pace.still_for(self.inc.progress()) >= READ_WAIT
    }

    /// Calls `handler` with `plan`'s whole result, then with what changed each time it
    /// changes, at the change's time (the first call has the result at the time of the
    /// watch), and again at the time the handler asks for. Returns the watch's id, or `None`
    /// when the incremental executor does not maintain the plan. A rule's watch
    /// (event-mode alerts): its view stays after [`LiveViews::unwatch`].
    pub fn watch(&self, plan: &Plan, handler: WatchFn) -> Option<Result<u64, String>> {
        match self.watch_as(plan, handler, Reader::Rule) {
            Ok(id) => Some(Ok(id)),
            Err(Error::Unsupported(_)) => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }

    /// A client's standing query (a websocket subscription): [`LiveViews::watch`], except
    /// that the view, which starts from history and shares what other views arrange, is
    /// uninstalled when its last client unwatches it and no rule reads it.
    /// [`Error::Unsupported`] names what the incremental executor does not maintain.
    pub fn subscribe(&self, plan: &Plan, handler: WatchFn) -> Result<u64, Error> {
        if plan.reads_time() {
            // a view's `time()` moves at the clock's ticks, which come with the rules'
            // evaluations: a client would see it stand still between them
            return Err(Error::Unsupported("time() in a subscription".into()));
        }
        self.watch_as(plan, handler, Reader::Client)
    }

    fn watch_as(&self, plan: &Plan, handler: WatchFn, reader: Reader) -> Result<u64, Error> {
        let since = self.now();
        let (view, _) = self.view_of(plan, since, None, Asker::here(reader))?;
        self.watch_view(view, since, handler, reader, None)
    }

    /// Now, for the views: the wall clock, or the dataflow's clock in tests that move it.
    fn now(&self) -> i64 {
        if self.wall_clock {
            now_ms()
        } else {
            self.inc.clock()
        }
    }

    /// A watch of `view` from `since` for `reader` (a subscription in the cluster's sequenced
    /// log has its `token`); fails, giving the view up, when it cannot be subscribed to.
    fn watch_view(
        &self,
        view: ViewId,
        since: i64,
        handler: WatchFn,
        reader: Reader,
        token: Option<u64>,
    ) -> Result<u64, Error> {
        let id = {
            let mut next = self.next_watch.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            *next
        };
        let wake = self.watch_thread.get().map(|t| Notify::new(t.clone(), Arc::clone(&self.ready), id));
        let changes = match self.inc.subscribe(view, since, wake) {
            Ok(c) => c,
            Err(e) => {
                self.give_up(view, reader, token);
                return Err(e);
            }
        };
        let watch = Watch { changes, view, reader, since, handler, wake_at: None, token };
        self.watches.lock().unwrap_or_else(|e| e.into_inner()).insert(id, watch);
        Ok(id)
    }

    /// A reader is done with `view`: a client's last reference to a view no rule reads
    /// uninstalls it.
    fn release(&self, view: ViewId, reader: Reader) {
        if reader == Reader::Rule {
            return;
        }
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = views.iter().position(|s| s.view.as_ref().ok() == Some(&view)) else { return };
        let seen = &mut views[i];
        seen.clients = seen.clients.saturating_sub(1);
        if seen.clients == 0 && !seen.rules {
            views.swap_remove(i);
            self.inc.uninstall(view);
        }
    }

    /// Brings every watch up to `t` before a group evaluates at `t`: completes `t` and hands
    /// each watch its changes through `t`. Otherwise an evaluation can see a crossing before
    /// the watch does, and the alert becomes active at the evaluation's time instead of the
    /// crossing sample's.
    pub fn settle(&self, t: i64) {
        if self.watches.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            return;
        }
        self.take_feed();
        self.inc.complete(t);
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let behind = {
                let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
                watches.values().filter(|w| w.changes.complete_before() <= t).count()
            };
            if behind == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(behind, at = t, "alert watches did not catch up before an evaluation");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.run_watches();
    }

    /// After a reload: the views of expressions no rule has any more are uninstalled (unless
    /// a client subscribes to them), and forgotten if evaluated in batch. `kept` says which
    /// expressions the rules have now.
    pub fn retire_rule_views(&self, kept: impl Fn(&Plan) -> bool) {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = 0;
        while i < views.len() {
            let seen = &mut views[i];
            if seen.rules && !kept(&seen.plan) {
                seen.rules = false;
                if seen.clients == 0 {
                    if let Ok(view) = views.swap_remove(i).view {
                        self.inc.uninstall(view);
                    }
                    continue;
                }
            }
            i += 1;
        }
    }

    /// Ends a watch; a client's also gives up its view ([`LiveViews::subscribe`]).
    pub fn unwatch(&self, id: u64) {
        let watch = self.watches.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        if let Some(w) = watch {
            self.inc.unsubscribe(&w.changes);
            self.give_up(w.view, w.reader, w.token);
        }
    }

    /// A reader is done with `view`: here, or, for a subscription in the cluster's sequenced
    /// log (its `token`), on every process when the log says so.
    fn give_up(&self, view: ViewId, reader: Reader, token: Option<u64>) {
        match token {
            Some(token) => self.propose_release(token),
            None => self.release(view, reader),
        }
    }

    /// How long the watch thread may sleep unless a subscription wakes it: until the first
    /// time a watch asked to be called at, or at most [`IDLE_CLOCK`].
    fn watch_wait(&self) -> Duration {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        let first = watches.values().filter_map(|w| w.wake_at).min();
        first.map_or(IDLE_CLOCK, |at| Duration::from_millis((at - now).max(0) as u64).min(IDLE_CLOCK))
    }

    /// Hands each watch its view's changes, time by time, and wakes the ones that asked.
    fn run_watches(&self) {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        for w in watches.values_mut() {
            w.deliver();
        }
        Self::call_due(&mut watches);
    }

    /// [`LiveViews::run_watches`] for the watches whose subscriptions woke the watch thread;
    /// for all of them when none did (the thread's periodic wake: a safety net, once a second).
    fn run_ready_watches(&self) {
        let mut ready = std::mem::take(&mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()));
        if ready.is_empty() {
            return self.run_watches();
        }
        ready.sort_unstable();
        ready.dedup();
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        for id in ready {
            if let Some(w) = watches.get_mut(&id) {
                w.deliver();
            }
        }
        Self::call_due(&mut watches);
    }

    /// Calls the watches whose handlers asked to be called by now.
    fn call_due(watches: &mut HashMap<u64, Watch>) {
        let now = now_ms();
        for w in watches.values_mut() {
            if let Some(at) = w.wake_at.filter(|at| *at <= now) {
                w.call(at, ViewChange::Elements(Vec::new()));
            }
        }
    }

    /// Records out of each kind of dataflow operator so far.
    pub fn records_total(&self) -> Vec<(&'static str, u64)> {
        self.inc.records_total()
    }

    /// Arrangements the views registered.
    pub fn arrangements(&self) -> usize {
        self.inc.arrangements()
    }

    /// Samples the views' per-series operators hold.
    pub fn samples_kept(&self) -> i64 {
        self.inc.samples_kept()
    }

    /// Samples the views' windows kept by their ends read back from storage.
    pub fn read_back_samples(&self) -> u64 {
        self.inc.read_back_samples()
    }

    /// How many rule expressions are maintained as views, and how many in batch.
    pub fn counts(&self) -> (usize, usize) {
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let live = views.iter().filter(|s| s.rules && s.view.is_ok()).count();
        (live, views.iter().filter(|s| s.view.is_err()).count())
    }

    /// Writes the incremental executor's metrics (promflow's own), counting `past_reads` view
    /// reads before these views' (a cluster's earlier computations).
    pub fn write_metrics(&self, w: &mut promflow_storage::MetricsWriter, past_reads: u64) {
        use promflow_storage::MetricKind;
        let mut records = w.family(
            "promflow_dataflow_records_total",
            MetricKind::Counter,
            "Records (value changes) out of the dataflow's operators, by kind of operator.",
        );
        for (operator, n) in self.records_total() {
            records.sample(&[("operator", operator)], n);
        }
        w.gauge(
            "promflow_dataflow_arrangements",
            "Arrangements the views of rules and subscriptions registered (shared sub-expressions count once).",
            self.arrangements(),
        );
        w.gauge(
            "promflow_dataflow_hub_nodes",
            "Nodes of the hub, which holds clients' standing queries of the common shapes as data in one operator (on a cluster's computation, every node's hub).",
            self.inc.hub_nodes(),
        );
        let mut arranged = w.family(
            "promflow_dataflow_arranged_records",
            MetricKind::Gauge,
            "Records the views' arrangements hold (in batches, or waiting in their batchers), by what they hold: window functions' values per series, views' results, a cluster's read copies of views, and differential's operators' own.",
        );
        for (holds, n) in self.inc.arranged_records() {
            arranged.sample(&[("holds", holds)], n);
        }
        w.gauge(
            "promflow_dataflow_samples_kept",
            "Samples the rule views' per-series operators hold: windows' samples, candidates for a window's extreme, and the oldest samples of windows kept by their ends.",
            self.samples_kept(),
        );
        w.counter(
            "promflow_dataflow_read_back_samples_total",
            "Samples read back from storage by the views' long windows, which keep only their oldest and newest samples.",
            self.read_back_samples(),
        );
        let (live, batch) = self.counts();
        w.family(
            "promflow_rule_expressions",
            MetricKind::Gauge,
            "Rule expressions by how they are evaluated.",
        )
        .sample(&[("evaluation", "view")], live)
        .sample(&[("evaluation", "batch")], batch);
        w.counter(VIEW_READS, VIEW_READS_HELP, past_reads + self.reads.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock_moved(ago: Duration) -> ClockState {
        let then = Instant::now() - ago;
        ClockState { held: None, moved_at: then, compacted_at: then }
    }

    /// The time without progress counts from when a count was first seen, and starts over
    /// when the count moves.
    #[test]
    fn pace_counts_the_time_the_computation_stood_still() {
        let mut pace = Pace::default();
        assert_eq!(pace.still_for(5), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(30));
        assert!(pace.still_for(5) >= Duration::from_millis(30));
        assert_eq!(pace.still_for(6), Duration::ZERO);
        assert!(pace.still_for(6) < Duration::from_millis(30));
    }

    /// With nothing held, the clock moves for an event due in the hub once `EVENT_CLOCK` has
    /// passed since the last move, not only every `IDLE_CLOCK`.
    #[test]
    fn clock_moves_for_due_events() {
        let ms = Duration::from_millis;
        // no event: the idle clock alone
        assert!(!clock_moved(ms(300)).due(None));
        assert!(clock_moved(ms(300)).wait(None) > ms(600));
        assert!(clock_moved(IDLE_CLOCK).due(None));
        // an event due now: once EVENT_CLOCK has passed since the last move
        assert!(clock_moved(ms(300)).due(Some(Duration::ZERO)));
        let recent = clock_moved(ms(100));
        assert!(!recent.clone().due(Some(Duration::ZERO)));
        assert!((ms(100)..=ms(150)).contains(&recent.wait(Some(Duration::ZERO))));
        // an event ahead: the clock sleeps until it, or until the idle clock if that is sooner
        let idle = clock_moved(ms(300));
        assert!(!idle.clone().due(Some(ms(400))));
        assert!((ms(350)..=ms(400)).contains(&idle.wait(Some(ms(400)))));
        assert!(idle.wait(Some(ms(5_000))) <= ms(700));
        // samples held: the hold decides, whatever is due
        let mut held = clock_moved(ms(300));
        held.arrived();
        assert!(!held.due(Some(Duration::ZERO)));
        assert!(held.wait(Some(Duration::ZERO)) <= FEED_POLL);
    }

    /// An evaluation announced long ago holds the clock while its group's first evaluation
    /// installs and reads its views; after that it is dropped as late, as a stuck group's is.
    #[test]
    fn an_evaluation_holds_the_clock_while_its_views_install() {
        use promflow_storage::{Db, DbOptions};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
        let views = LiveViews::start(1, 5_000, |wake| db.subscribe_waking(wake), db.clone(), true).unwrap();
        let t = now_ms() - 2 * LATE_EVALUATION_MS;
        views.schedule(t);
        let clock_passes = |within: Duration| {
            let until = Instant::now() + within;
            while Instant::now() < until {
                if views.inc.clock() > t {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        };
        let hold = views.prepare([], t);
        assert!(!clock_passes(3 * IDLE_CLOCK), "the clock passed an evaluation waiting for its views");
        drop(hold);
        assert!(clock_passes(3 * IDLE_CLOCK), "a late evaluation held the clock for good");
    }

    /// Two groups' first evaluations under way at once read in the order of their times: the
    /// later one waits for the earlier, so a view the earlier group installs meanwhile still
    /// starts at its time and is read from the dataflow rather than in batch.
    #[test]
    fn first_evaluations_read_in_the_order_of_their_times() {
        use promflow_storage::{Db, DbOptions};
        let compile = |q: &str| promflow_promql::compile(q, &Default::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
        let views = LiveViews::start(1, 5_000, |wake| db.subscribe_waking(wake), db.clone(), true).unwrap();
        let earlier_t = now_ms() - 2 * LATE_EVALUATION_MS;
        let later_t = earlier_t + 1_000;
        views.schedule(earlier_t);
        views.schedule(later_t);
        let earlier = views.prepare([], earlier_t);
        std::thread::scope(|s| {
            let later = s.spawn(|| {
                let hold = views.prepare([], later_t);
                hold.wait_for_earlier();
                assert!(matches!(views.read(&compile("count(up)"), later_t, None), Some(Ok(_))));
            });
            std::thread::sleep(3 * IDLE_CLOCK);
            assert!(!later.is_finished(), "a later first evaluation did not wait for an earlier one");
            assert!(views.inc.clock() <= earlier_t, "the clock passed an earlier first evaluation");
            let plan = compile("sum(up)");
            drop(views.prepare([(&plan, None)], earlier_t));
            let read = views.read(&plan, earlier_t, None);
            assert!(matches!(read, Some(Ok(_))), "the earlier group's view was late: {read:?}");
            drop(earlier);
            later.join().unwrap();
        });
    }

    /// Copies a node stores for another node of a cluster (replicas) are not fed to its
    /// views: the node with the primary copy feeds the series to the cluster's computation.
    #[test]
    fn replicas_are_not_fed_to_the_views() {
        use promflow_storage::{Db, DbOptions};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions { compaction_interval: None, ..Default::default() }).unwrap();
        let views = LiveViews::start(1, 5_000, |wake| db.subscribe_waking(wake), db.clone(), true).unwrap();
        let plan = promflow_promql::compile("sum(up)", &Default::default()).unwrap();
        let t = now_ms() + 2_000;
        views.schedule(t);
        drop(views.prepare([(&plan, None)], t));
        for (copy, replica) in [("primary", false), ("replica", true)] {
            let mut app = db.appender();
            if replica {
                app.mark_replica();
            }
            let labels = Labels::from_pairs([("__name__", "up".to_string()), ("copy", copy.to_string())]);
            app.append(&labels, t - 1_000, 1.0).unwrap();
            app.commit().unwrap();
        }
        let rows = views.read(&plan, t, None).expect("a view").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1.as_float(), Some(1.0), "a replica was fed to the views");
    }
}
