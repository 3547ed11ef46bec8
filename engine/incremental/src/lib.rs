//! The incremental executor: views of the plan IR kept current by a timely/differential
//! dataflow as samples arrive, instead of being recomputed at every evaluation
//! (`docs/dataflow.md`).
//!
//! * [`Incremental::install`] lowers a plan (`lower/`: the dataflow's and the hub's lowerings
//!   side by side, with what each maintains) and builds it on every worker (`render.rs`);
//!   sub-plans an earlier view arranged are shared, not rebuilt.
//! * Samples enter through [`Incremental::append`]: each goes to the leaves (selections and
//!   window functions) whose matchers it satisfies, and nowhere else.
//! * Dataflow time is evaluation time in milliseconds. [`Incremental::advance`] moves the
//!   clock; [`Incremental::tick`] also brings the values that move with time alone up to
//!   date at that time; [`Incremental::read`] waits until every worker is complete through a
//!   time and reads the view's arrangement there.
//! * Workers run on their own threads (`timely::execute`). Commands reach every worker in the
//!   order the controller sends them, so every worker builds the same dataflows; a read
//!   gathers every worker's shard.
//! * [`live`] is the one live-view service over it: rules (in event mode) and subscriptions
//!   are both its clients.
#![warn(missing_docs)]

mod abelian;
pub mod cluster;
mod exchange;
mod hub;
mod installs;
mod keys;
pub mod live;
mod lower;
mod render;
mod series;
mod tap;
mod values;
mod window_samples;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use promflow_storage::{Labels, SeriesId};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Input;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::progress::frontier::{Antichain, AntichainRef};
use timely::synchronization::Sequencer;

pub use exchange::SeriesOwner;
use exchange::SeriesRoute;
use hub::{Hub, HubInput, HubItem, SharedHub};
use installs::Installs;
use keys::{Key, KeyMap, Keys};
use lower::dataflow::{Lowered, Node, Registry};
use lower::hub::{HubNode, HubPlans};
pub use promflow_kernels::native::Operand;
use promflow_plan::Error;
use promflow_plan::Plan;
use promflow_plan::{QueryOptions, QueryResult};
use render::RenderCx;
pub use tap::{ElementChange, Notify, Subscription, ViewChange};
pub use values::{Unboxed, Value};

/// A sample on its way to a leaf: (series key, timestamp, value).
pub(crate) type Row = (Key, i64, Value);

/// A change of one element: ((key, value), time, +1 or −1).
pub(crate) type Update = ((Key, Value), u64, isize);

/// A view's identity, returned by [`Incremental::install`].
pub type ViewId = usize;

/// The times at which a view is read, when it is read only at some: a rule group's
/// evaluation times, `phase_ms + k × period_ms`. A view installed with a grain changes only at
/// those times. Every event between two of them (samples arriving, samples leaving their
/// window, the clock ticking) takes effect at the next one, so the changes of one interval
/// meet in one update per series and group, and the view read at a grain time still equals
/// the batch evaluation there. A read between grain times sees the previous grain time's
/// value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grain {
    period_ms: u64,
    phase_ms: u64,
}

impl Grain {
    /// The grain of times `phase_ms + k × period_ms` (any phase; the period at least 1 ms).
    pub fn new(period_ms: i64, phase_ms: i64) -> Grain {
        let period_ms = period_ms.max(1);
        Grain { period_ms: period_ms as u64, phase_ms: phase_ms.rem_euclid(period_ms) as u64 }
    }

    /// The first time of the grain at or after `t`.
    pub(crate) fn up(&self, t: u64) -> u64 {
        let Some(since) = t.checked_sub(self.phase_ms) else { return self.phase_ms };
        let rem = since % self.period_ms;
        if rem == 0 {
            t
        } else {
            t.saturating_add(self.period_ms - rem)
        }
    }

    /// How far the inputs of a view with this grain follow a clock at `t`: just past the
    /// grain's last time before `t`. Inputs held there until the clock passes the grain's next
    /// time cost no progress tracking meanwhile (a clock move costs every dataflow whose inputs
    /// move a round of it), and a sample sent at that time still takes effect at the grain's
    /// first time at or after `t`, as it would have at `t`.
    pub(crate) fn settled(&self, t: u64) -> u64 {
        t.checked_sub(1).and_then(|before| self.down(before)).map_or(0, |last| last + 1)
    }

    /// The grain's last time at or before `t`, if any.
    pub(crate) fn down(&self, t: u64) -> Option<u64> {
        let since = t.checked_sub(self.phase_ms)?;
        Some(t - since % self.period_ms)
    }

    /// The grain's last time at or before `t`, if any.
    pub fn last_at_or_before(&self, t: i64) -> Option<i64> {
        self.down(u64::try_from(t).ok()?).and_then(|d| i64::try_from(d).ok())
    }

    /// Whether `t` is a time of the grain.
    pub fn contains(&self, t: i64) -> bool {
        t >= 0 && self.up(t as u64) == t as u64
    }
}

/// How many rows of history a view's installation sends to the workers at a time.
const HISTORY_PIECE: usize = 1 << 18;

/// How much time one read of a view's history covers: a `[1d]` window over thousands of
/// series is read an hour at a time, oldest first, never whole.
const HISTORY_SLICE_MS: i64 = 3_600_000;

/// Pieces of history that may wait for the workers at once: the controller reads the next
/// piece while a worker takes one, and history is never piled up in the channel.
const HISTORY_PIECES_QUEUED: usize = 2;

/// How long the controller waits for the workers to take a piece of history before it
/// stops waiting (a worker that failed takes nothing more).
const HISTORY_STALL: Duration = Duration::from_secs(30);

/// The kinds of operator whose output records are counted.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Operator {
    Series,
    Elementwise,
    Aggregate,
    Join,
}

const OPERATOR_NAMES: [&str; 4] = ["series", "elementwise", "aggregate", "join"];

/// What an arrangement holds, for counting the records the arrangements keep
/// (`promflow_dataflow_arranged_records{holds}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holds {
    /// A window function's or a selection's value per series (of a subquery's inner series
    /// too), arranged so that later views can share it.
    Series,
    /// Any other arranged result: a view's root or a shared sub-expression, and its errors.
    View,
    /// In a cluster, a process's read copy of a view ([`Gathered`]).
    Copy,
    /// What differential's operators keep inside: the arranged inputs and outputs of
    /// `reduce`, `join`, `count` and `distinct`.
    Operator,
}

const HOLDS_NAMES: [&str; 4] = ["series", "view", "copy", "operator"];

/// Records out of each kind of operator, summed over views and workers, and the samples the
/// per-series operators hold.
#[derive(Debug)]
pub(crate) struct Counters {
    records: [AtomicU64; 4],
    /// Records the arrangements hold, by [`Holds`].
    arranged: [AtomicI64; 4],
    pub(crate) samples_kept: AtomicI64,
    /// Pieces of history sent to the first worker and not yet moved on by it.
    history_queued: AtomicUsize,
    /// Samples read back from storage by windows kept by their ends.
    pub(crate) read_back: AtomicU64,
    /// The first time events are due at in the hub (`u64::MAX`: none), as the hub left it
    /// ([`Incremental::next_event`]).
    pub(crate) hub_next_event: AtomicU64,
    /// Whether the hub of another process of the cluster holds views
    /// ([`Incremental::next_event`]).
    hubs_elsewhere: AtomicBool,
    /// Batches this process's arrangements have been given, empty ones included
    /// ([`Incremental::progress`]).
    batches: AtomicU64,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            records: Default::default(),
            arranged: Default::default(),
            samples_kept: AtomicI64::new(0),
            history_queued: AtomicUsize::new(0),
            read_back: AtomicU64::new(0),
            hub_next_event: AtomicU64::new(u64::MAX),
            hubs_elsewhere: AtomicBool::new(false),
            batches: AtomicU64::new(0),
        }
    }
}

impl Counters {
    /// Counts `n` records out of an operator of kind `op`.
    pub(crate) fn count(&self, op: Operator, n: usize) {
        self.records[op as usize].fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One worker's part of a read: (key, value, count) triples.
type Shard = Vec<(Key, Value, isize)>;

/// A worker's answer to a read: its shard of the content, and the keys of the errors that
/// hold.
type ReadReply = (Shard, Vec<Key>);

pub(crate) type Trace = TraceAgent<ValSpine<Key, Value, u64, isize>>;

enum Command {
    Install {
        /// The installation's number ([`Installs`]).
        install: usize,
        node: Node,
        grain: Option<Grain>,
        /// Where its subqueries start sampling (the steps before come with the history).
        sample_from: u64,
        /// In a cluster, the processes that get a read copy of the arrangement at its root,
        /// built in the same dataflow ([`Gathered`]).
        copy_to: Vec<usize>,
    },
    /// Drops an installation's dataflow and the handles of what it built.
    Drop {
        install: usize,
        arrangements: Vec<usize>,
        leaves: Vec<usize>,
    },
    Rows {
        leaf: usize,
        rows: Arc<Vec<Row>>,
        /// A piece of a view's history, counted in [`Counters`]' `history_queued`.
        history: bool,
    },
    Advance {
        t: u64,
        tick: bool,
    },
    /// Compacts the arrangements that reads have read to `read`, the others to `other`.
    Compact {
        read: u64,
        other: u64,
    },
    Read {
        arrangement: usize,
        t: u64,
        /// The worker's shard of the content, and the keys of the errors that hold.
        reply: Sender<ReadReply>,
    },
    Subscribe {
        id: u64,
        target: Tapped,
        from: u64,
        tx: Sender<tap::TimedShard>,
        complete: Arc<[AtomicU64]>,
        wake: Option<tap::Notify>,
    },
    Unsubscribe(u64),
    /// In a cluster, copies an arrangement that a view reads to the first worker of each of
    /// the processes `to`, so that each of them reads the whole view ([`Gathered`]).
    Gather {
        arrangement: usize,
        to: Vec<usize>,
    },
    /// Takes hub nodes whose home is the hub on worker `home` (a process's first worker):
    /// built there, their leaves' home remembered by every process's first worker.
    HubInstall {
        home: u64,
        nodes: Vec<(usize, HubNode)>,
    },
    /// Drops hub nodes.
    HubDrop(Vec<usize>),
    /// In a cluster, adds an entry to the sequenced log ([`Incremental::propose`]); sent to
    /// the process's first worker alone.
    Propose(Vec<u8>),
    Shutdown,
}

/// What a subscription follows.
#[derive(Clone, Copy)]
enum Tapped {
    /// An arrangement's tap, on every worker.
    Arrangement(usize),
    /// A hub node, on the process's first worker alone (the node's home).
    Hub(usize),
}

/// What the controller knows: the registry of arranged sub-plans and leaves, each series'
/// key and the leaves it feeds, and the clock.
struct Controller {
    registry: Registry,
    /// Which installation built each arrangement, and which are still needed.
    installs: Installs,
    /// The arrangement each live view reads, and the grain it changes at.
    views: HashMap<ViewId, (usize, Option<Grain>)>,
    /// The hubs' nodes ([`hub`]), by their home (a process's first worker): a view's nodes
    /// are shared with the views of the same home alone.
    hubs: BTreeMap<u64, HubPlans>,
    /// Each live hub view's home, node, and every node it uses.
    hub_views: HashMap<ViewId, HubView>,
    next_view: ViewId,
    /// Per series: its key and the leaves whose matchers it satisfies, worked out when the
    /// registry's leaves were at version `routes_for`.
    routes: HashMap<Labels, (Key, Vec<usize>)>,
    /// The same for the append feed's series, by their storage id ([`Incremental::append_by_id`]).
    id_routes: KeyMap<SeriesId, (Key, Vec<usize>)>,
    /// Storage's count of series removals when `id_routes` was started.
    id_routes_removals: u64,
    routes_for: u64,
    clock: u64,
    ticked: Option<u64>,
    /// In a cluster, which processes have a read copy of each arrangement views read.
    gathered: Option<Copies>,
    /// The steps of the live views' subqueries, with how many installations use each: the
    /// clock ticks at every multiple of each, so that what the subqueries sample is up to
    /// date there.
    subquery_steps: BTreeMap<u64, usize>,
}

impl Controller {
    /// Nodes the hubs of every process hold.
    fn hub_nodes(&self) -> usize {
        self.hubs.values().map(HubPlans::len).sum()
    }

    /// Whether the hub of a process other than this one (whose first worker is `home`)
    /// holds nodes.
    fn hubs_elsewhere(&self, home: u64) -> bool {
        self.hubs.iter().any(|(&at, plans)| at != home && plans.len() > 0)
    }
}

/// A view in a hub.
struct HubView {
    /// The first worker of the process whose hub holds it.
    home: u64,
    /// The node whose content is the view.
    root: usize,
    /// Every node it uses.
    used: Vec<usize>,
}

/// In a cluster, the processes among `readers` (every process: `None`) that need a read copy
/// of `arrangement` and have none (another view of the same arrangement may have given some
/// of them one already), now counted as having one.
fn copies_wanted(c: &mut Controller, arrangement: usize, readers: Option<&BTreeSet<usize>>) -> Vec<usize> {
    let Some(copies) = c.gathered.as_mut() else { return Vec::new() };
    let wanted = readers.cloned().unwrap_or_else(|| (0..copies.processes).collect());
    let has = copies.readers.entry(arrangement).or_default();
    let to = wanted.difference(has).copied().collect();
    has.extend(&wanted);
    to
}

/// Whether this process has a read copy of `arrangement` (always, in one process).
fn read_here(c: &Controller, arrangement: usize) -> bool {
    c.gathered
        .as_ref()
        .is_none_or(|copies| copies.readers.get(&arrangement).is_some_and(|r| r.contains(&copies.process)))
}

/// In a cluster, the processes that read each view: a read copy of its arrangement is
/// built on those ([`Gathered`]), and only those can read it.
struct Copies {
    /// This process's place in the computation.
    process: usize,
    /// How many processes the computation has.
    processes: usize,
    /// By arrangement, the processes with a read copy of it.
    readers: HashMap<usize, BTreeSet<usize>>,
}

/// How long [`Incremental::read`] waits for the workers to complete the time read.
pub const READ_WAIT: Duration = Duration::from_secs(30);

/// Held rows that are worth waking the workers for before the next command: a remote-write
/// request's worth (a scrape's few hundred wait for the clock).
const FLUSH_ROWS: usize = 1_000;

/// At most this many steps of one subquery are ticked in one clock move (a longer jump
/// leaves the earlier steps' time-moving values as they were).
const MAX_STEP_TICKS: u64 = 10_000;

/// The workers' command channels, and the rows appended since the last command.
///
/// Appended rows wait here for the next command (a clock move, at most the idle clock's
/// period later in the server), and go to the workers just before it: they would wait in the
/// operators anyway, since nothing is computed until the clock moves. The workers then wake
/// once per burst of appends, not once per append: each wake-up schedules every dataflow
/// with new input. Once [`FLUSH_ROWS`] are held they go at once: the workers queue them while
/// the clock is held for the rest of the burst, instead of after it moves.
struct Outbox {
    senders: Vec<Sender<Command>>,
    held: BTreeMap<usize, Vec<Row>>,
}

impl Outbox {
    /// Sends the held rows to the first worker (the exchange sends each series to its
    /// owner).
    fn flush(&mut self) {
        for (leaf, rows) in std::mem::take(&mut self.held) {
            let _ = self.senders[0].send(Command::Rows { leaf, rows: Arc::new(rows), history: false });
        }
    }
}

/// Sends a view's history to the first worker, piece by piece, waiting while
/// [`HISTORY_PIECES_QUEUED`] pieces are still to be taken.
struct HistorySender<'a> {
    senders: &'a [Sender<Command>],
    incremental: &'a Incremental,
    /// The worker took nothing for [`HISTORY_STALL`]: the rest goes without waiting.
    stalled: bool,
}

impl HistorySender<'_> {
    fn send(&mut self, leaf: usize, rows: Vec<Row>) {
        let queued = &self.incremental.counters.history_queued;
        let mut since = Instant::now();
        let mut waiting = queued.load(Ordering::Acquire);
        while !self.stalled && waiting >= HISTORY_PIECES_QUEUED {
            if let Some(t) = self.incremental.threads.first() {
                t.unpark();
            }
            std::thread::sleep(Duration::from_millis(1));
            let now = queued.load(Ordering::Acquire);
            if now < waiting {
                since = Instant::now();
            } else if since.elapsed() > HISTORY_STALL {
                tracing::warn!(stalled = ?HISTORY_STALL, "the dataflow worker takes no history; sending the rest at once");
                self.stalled = true;
            }
            waiting = now;
        }
        queued.fetch_add(1, Ordering::AcqRel);
        let _ = self.senders[0].send(Command::Rows { leaf, rows: Arc::new(rows), history: true });
    }
}

/// The incremental executor: views maintained by timely workers.
pub struct Incremental {
    outbox: Mutex<Outbox>,
    threads: Vec<std::thread::Thread>,
    guards: Mutex<Option<timely::communication::WorkerGuards<()>>>,
    controller: Mutex<Controller>,
    keys: Keys,
    counters: Arc<Counters>,
    lookback_ms: i64,
    workers: usize,
    next_subscription: AtomicU64,
    /// In a cluster, the entries of the sequenced log, until [`Incremental::sequenced`] takes
    /// them.
    sequenced: Mutex<Option<Receiver<Vec<u8>>>>,
    /// In a cluster, this process's place, and how it proposes entries to the log: to its
    /// first worker, on a channel of their own, so that a proposal does not wait for the
    /// locks a view's installation holds while it reads history.
    log: Option<(usize, Mutex<Sender<Command>>)>,
    /// Whether this process can no longer keep in step with the others of its computation
    /// (a view's history failed to load after every process built the view): it counts as
    /// lost ([`Incremental::lost`]).
    broken: AtomicBool,
}

/// A worker's end of a cluster's sequenced log ([`Incremental::propose`]): every worker of
/// every process builds the log's dataflow; the first worker of each process passes the
/// entries on.
struct LogEnd {
    /// Where the first worker of a process sends each entry, in the log's order.
    forward: Option<Sender<Vec<u8>>>,
}

impl Incremental {
    /// Starts `workers` timely worker threads; instant selections look back `lookback_ms`
    /// (`--query.lookback-delta`).
    pub fn start(workers: usize, lookback_ms: i64) -> Result<Incremental, String> {
        let workers = workers.max(1);
        let (builders, others) = timely::CommunicationConfig::Process(workers).try_build()?;
        Incremental::start_with((builders, others), (workers, 0, 1), SeriesRoute::Hashed, lookback_ms)
    }

    /// Starts this process's `workers` of one computation across processes, over `sockets`
    /// ([`cluster::connect`]: one connected socket for each other process, by its place in
    /// the list, `None` at this process's place `index`).
    ///
    /// Each process's controller drives its own workers: the processes must install the
    /// same views in the same order; each appends the series it stores, and a series'
    /// samples meet on a worker of the process `owner` names for its key (so a series
    /// appended by two processes meets on one worker, where its second copy is a duplicate;
    /// every process must be given the same `owner`); a read sees the whole view (its copy
    /// on the first worker of each process that reads it,
    /// [`Incremental::install_from_read_on`]).
    pub fn start_in_cluster(
        workers: usize,
        sockets: Vec<Option<std::net::TcpStream>>,
        index: usize,
        owner: SeriesOwner,
        lookback_ms: i64,
    ) -> Result<Incremental, String> {
        use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
        use timely::communication::allocator::ProcessBuilder;
        use timely::communication::{AllocatorBuilder, Hooks};
        let (workers, processes) = (workers.max(1), sockets.len());
        if index >= processes || sockets[index].is_some() {
            return Err(format!("process {index} is not a place without a socket among {processes}"));
        }
        let mut hooks = Hooks::default();
        hooks.refill.limit = Some(SPARE_NETWORK_BUFFERS);
        let local = ProcessBuilder::new_typed_vector(workers, hooks.refill.clone(), hooks.spill.clone());
        let (builders, comms) = initialize_networking_from_sockets(local, sockets, index, workers, hooks)
            .map_err(|e| format!("starting the dataflow's connections: {e}"))?;
        let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
        Incremental::start_with(
            (builders, Box::new(comms)),
            (workers, index * workers, processes),
            SeriesRoute::Placed { owner, width: workers },
            lookback_ms,
        )
    }

    /// A count that moves whenever this process's arrangements move on (their frontiers
    /// advance, a batch of updates or an empty one): the computation makes progress, however
    /// far behind the clock it is. In a cluster a stalled process holds every frontier back,
    /// so the count stops on every process.
    pub fn progress(&self) -> u64 {
        self.counters.batches.load(Ordering::Relaxed)
    }

    /// Whether the computation has failed: a worker has stopped without being told to (or
    /// was parked as it stopped, [`cluster::stop_thread_on_connection_loss`]). In a cluster
    /// this is how the loss of another process shows (timely fails every worker whose
    /// connections break).
    pub fn lost(&self) -> bool {
        if self.broken.load(Ordering::Relaxed) {
            return true;
        }
        let guards = self.guards.lock().unwrap_or_else(|e| e.into_inner());
        guards
            .as_ref()
            .is_some_and(|g| g.guards().iter().any(|h| h.is_finished() || cluster::parked(h.thread().id())))
    }

    /// Starts `workers` worker threads here over the communication `builders` (and what
    /// keeps their connections), the first of them worker `first` of a computation that spans
    /// `processes` processes, keeping each series' samples on the worker `route` names.
    fn start_with(
        (builders, others): (Vec<timely::communication::AllocatorBuilder>, Box<dyn std::any::Any + Send>),
        (workers, first, processes): (usize, usize, usize),
        route: SeriesRoute,
        lookback_ms: i64,
    ) -> Result<Incremental, String> {
        let (mut senders, mut receivers) = (Vec::new(), Vec::new());
        for _ in 0..workers {
            let (tx, rx) = channel::<Command>();
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let (thread_tx, thread_rx) = channel::<(usize, std::thread::Thread)>();
        let thread_tx = Mutex::new(thread_tx);
        let keys = Keys::default();
        let counters = Arc::new(Counters::default());
        let (wkeys, wcounters) = (keys.clone(), Arc::clone(&counters));
        let in_cluster = processes > 1;
        let (log_tx, log_rx) = channel::<Vec<u8>>();
        let log_tx = Mutex::new(Some(log_tx));
        let mut config = timely::WorkerConfig::default();
        let merging: differential_dataflow::trace::ExertionLogic = Arc::new(consolidation_due);
        config.set("differential/default_exert_logic".to_string(), merging);
        let guards = timely::execute::execute_from(builders, others, config, move |worker| {
            let here = worker.index() - first;
            let rx = receivers.lock().ok().and_then(|mut r| r[here].take());
            if let Ok(tx) = thread_tx.lock() {
                let _ = tx.send((here, std::thread::current()));
            }
            wkeys.serve_thread();
            let log = in_cluster.then(|| LogEnd {
                forward: if here == 0 { log_tx.lock().ok().and_then(|mut t| t.take()) } else { None },
            });
            if let Some(rx) = rx {
                let shared = (wkeys.clone(), Arc::clone(&wcounters));
                run_worker(worker, rx, shared, workers, route.clone(), log);
            }
        })?;
        let mut threads: Vec<Option<std::thread::Thread>> = vec![None; workers];
        for _ in 0..workers {
            let (i, t) =
                thread_rx.recv_timeout(Duration::from_secs(10)).map_err(|e| format!("worker start: {e}"))?;
            threads[i] = Some(t);
        }
        let log = in_cluster.then(|| (first / workers, Mutex::new(senders[0].clone())));
        Ok(Incremental {
            outbox: Mutex::new(Outbox { senders, held: BTreeMap::new() }),
            threads: threads.into_iter().flatten().collect(),
            guards: Mutex::new(Some(guards)),
            controller: Mutex::new(Controller {
                registry: Registry::default(),
                installs: Installs::default(),
                views: HashMap::new(),
                hubs: BTreeMap::new(),
                hub_views: HashMap::new(),
                next_view: 0,
                routes: HashMap::new(),
                id_routes: KeyMap::default(),
                id_routes_removals: 0,
                routes_for: 0,
                clock: 0,
                ticked: None,
                gathered: (processes > 1).then(|| Copies {
                    process: first / workers,
                    processes,
                    readers: HashMap::new(),
                }),
                subquery_steps: BTreeMap::new(),
            }),
            keys,
            counters,
            lookback_ms,
            workers,
            next_subscription: AtomicU64::new(0),
            sequenced: Mutex::new(in_cluster.then_some(log_rx)),
            log,
            broken: AtomicBool::new(false),
        })
    }

    /// In a cluster, adds `entry` to the computation's sequenced log: every process receives
    /// every entry of the log ([`Incremental::sequenced`]), whichever process proposed it, in
    /// one order. The processes of a computation must build the same dataflows in the same
    /// order, so what any of them installs after the computation formed goes through the log.
    /// [`Error::Unsupported`] in one process.
    pub fn propose(&self, entry: Vec<u8>) -> Result<(), Error> {
        let Some((_, first_worker)) = &self.log else {
            return Err(Error::Unsupported("a sequenced log in one process".into()));
        };
        first_worker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Command::Propose(entry))
            .map_err(|_| Error::Execution("the dataflow's computation failed".into()))?;
        if let Some(t) = self.threads.first() {
            t.unpark();
        }
        Ok(())
    }

    /// In a cluster, the entries of the sequenced log ([`Incremental::propose`]), in the log's
    /// order; the channel disconnects when the computation fails. Taken once: `None` after
    /// the first call, and in one process.
    pub fn sequenced(&self) -> Option<Receiver<Vec<u8>>> {
        self.sequenced.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// In a cluster, this process's place in the computation.
    pub fn process(&self) -> Option<usize> {
        self.log.as_ref().map(|(process, _)| *process)
    }

    /// In a cluster, gives the processes `readers` a read copy of `view` where they have
    /// none ([`Incremental::install_from_read_on`]): a view installed before for other
    /// readers, which another reader now shares.
    pub fn read_on(&self, view: ViewId, readers: &BTreeSet<usize>) {
        let mut c = self.controller();
        let Some(&(arrangement, _)) = c.views.get(&view) else { return };
        let to = copies_wanted(&mut c, arrangement, Some(readers));
        if !to.is_empty() {
            self.broadcast(|| Command::Gather { arrangement, to: to.clone() });
        }
    }

    /// Lets the views installed from now on keep windows of at least `ends_from_ms` by their
    /// ends (for the functions that read only those: `rate`, `increase`, `count_over_time`,
    /// …), reading the samples in between back from `querier` as the windows move. `querier`
    /// must see every sample appended to the executor by the time it is appended (storage
    /// commits a batch before its append feed delivers it).
    pub fn read_back_from(&self, querier: Arc<dyn promflow_storage::Querier>, ends_from_ms: i64) {
        self.controller().registry.read_back = Some((series::ReadBack(querier), ends_from_ms));
    }

    fn controller(&self) -> std::sync::MutexGuard<'_, Controller> {
        self.controller.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends every worker a command, after the held rows.
    fn broadcast(&self, make: impl Fn() -> Command) {
        {
            let mut outbox = self.outbox();
            outbox.flush();
            for tx in outbox.senders.iter() {
                let _ = tx.send(make());
            }
        }
        for t in &self.threads {
            t.unpark();
        }
    }

    /// Installs a view of `plan` (an instant-vector expression). Sub-plans that an installed
    /// view already maintains are shared. Fails, changing nothing, when the plan uses what
    /// the incremental executor does not maintain (the error names it).
    pub fn install(&self, plan: &Plan) -> Result<ViewId, Error> {
        let mut c = self.controller();
        let lowered = c.registry.lower_view(plan, self.lookback_ms, None)?;
        let sample_from = c.clock;
        Ok(self.build(&mut c, lowered, sample_from, None))
    }

    /// Builds a lowered view; its subqueries sample their inner values from `sample_from` on.
    /// In a cluster, the processes `readers` (every process: `None`) get a read copy of it.
    fn build(
        &self,
        c: &mut Controller,
        lowered: Lowered,
        sample_from: u64,
        readers: Option<&BTreeSet<usize>>,
    ) -> ViewId {
        let to = copies_wanted(c, lowered.arrangement, readers);
        // a copy of the arrangement this install builds at its root is built in its
        // dataflow; one of an arrangement built before, in a dataflow of its own
        let mut copy_to = Vec::new();
        if let Some(node) = lowered.node {
            let install = c.installs.add(&node);
            for step in c.installs.subquery_steps(install) {
                *c.subquery_steps.entry(step).or_default() += 1;
            }
            let grain = lowered.grain;
            if matches!(&node, Node::Arrange { id, .. } if *id == lowered.arrangement) {
                copy_to = to.clone();
            }
            self.broadcast(|| Command::Install {
                install,
                node: node.clone(),
                grain,
                sample_from,
                copy_to: copy_to.clone(),
            });
        }
        c.installs.read_by_view(lowered.arrangement);
        if !to.is_empty() && copy_to.is_empty() {
            self.broadcast(|| Command::Gather { arrangement: lowered.arrangement, to: to.clone() });
        }
        let view = c.next_view;
        c.next_view += 1;
        c.views.insert(view, (lowered.arrangement, lowered.grain));
        view
    }

    /// Ends a view: every dataflow that only it needed is dropped on every worker, with the
    /// arrangements, leaves and samples it kept; what other views share stays. The view's
    /// subscriptions must have ended ([`Incremental::unsubscribe`]).
    pub fn uninstall(&self, view: ViewId) {
        let mut c = self.controller();
        if let Some(HubView { home, used, .. }) = c.hub_views.remove(&view) {
            let gone = c.hubs.get_mut(&home).map_or_else(Vec::new, |hub| hub.release(&used));
            if !gone.is_empty() {
                c.registry.forget(&[], &gone);
                self.broadcast(|| Command::HubDrop(gone.clone()));
            }
            self.note_hubs_elsewhere(&c);
            return;
        }
        let Some((arrangement, _)) = c.views.remove(&view) else { return };
        for (install, built) in c.installs.release(arrangement) {
            c.registry.forget(&built.arrangements, &built.leaves);
            for step in &built.subquery_steps {
                if let Some(n) = c.subquery_steps.get_mut(step) {
                    *n -= 1;
                    if *n == 0 {
                        c.subquery_steps.remove(step);
                    }
                }
            }
            if let Some(copies) = c.gathered.as_mut() {
                for a in &built.arrangements {
                    copies.readers.remove(a);
                }
            }
            self.broadcast(|| Command::Drop {
                install,
                arrangements: built.arrangements.clone(),
                leaves: built.leaves.clone(),
            });
        }
    }

    /// How many views are installed.
    pub fn views(&self) -> usize {
        let c = self.controller();
        c.views.len() + c.hub_views.len()
    }

    /// Installs a view of `plan` that starts from history: the leaves it adds are first fed
    /// what `querier` holds from the plan's longest window plus the lookback before `now` on
    /// (everything committed, even after `now`), then follow [`Incremental::append`]. Leaves it shares with earlier views already hold
    /// their history. The caller must append, after this call, exactly the samples committed
    /// after `querier`'s snapshot: no gap, and no sample twice. The history counts from the
    /// clock at the earliest, so a read before the clock does not see it. With a `grain`, the view
    /// changes only at the grain's times (it shares only with views of the same grain).
    /// In a cluster, every process can read it.
    pub fn install_from(
        &self,
        plan: &Plan,
        querier: &dyn promflow_storage::Querier,
        now: i64,
        grain: Option<Grain>,
    ) -> Result<ViewId, Error> {
        self.install_from_read_on(plan, querier, now, grain, None)
    }

    /// [`Incremental::install_from`], with, in a cluster, a read copy of the view only on the
    /// processes `readers` (every process: `None`): a copy holds the whole view, so one on
    /// each process multiplies its memory by the number of processes. Elsewhere a read or a
    /// subscription fails with [`Error::Unsupported`].
    pub fn install_from_read_on(
        &self,
        plan: &Plan,
        querier: &dyn promflow_storage::Querier,
        now: i64,
        grain: Option<Grain>,
        readers: Option<&BTreeSet<usize>>,
    ) -> Result<ViewId, Error> {
        let mut c = self.controller();
        let lowered = c.registry.lower_view(plan, self.lookback_ms, grain)?;
        let from = now - plan.max_window_ms() - self.lookback_ms;
        let (mut leaves, pinned) = (lowered.new_leaves.clone(), lowered.pinned.clone());
        // subqueries sample from `now` (or the clock, if later): what the leaves' history
        // makes of the inner values before it would start at the history's start
        let (subqueries, start) = (lowered.subqueries.clone(), c.clock.max(now.max(0) as u64));
        let view = self.build(&mut c, lowered, start, readers);
        if leaves.is_empty() && subqueries.is_empty() {
            return Ok(view);
        }
        let loaded = (|| {
            let mut outbox = self.outbox();
            outbox.flush();
            let mut history = HistorySender { senders: &outbox.senders, incremental: self, stalled: false };
            // a pinned leaf (`@ t`) sees the samples of one span, however long ago, and no later
            for (leaf, lo, hi) in pinned {
                let Some(i) = leaves.iter().position(|(l, _)| *l == leaf) else { continue };
                let (_, matchers) = leaves.swap_remove(i);
                let floats = querier.select(&matchers, lo.saturating_add(1), hi)?;
                let hists = querier.select_histograms(&matchers, lo.saturating_add(1), hi)?;
                self.rows_in_pieces(floats, hists, &mut |rows| history.send(leaf, rows));
            }
            self.send_history(&mut history, &leaves, querier, (from, now))?;
            // a subquery samples its inner values from the view's start on; the steps before
            // it that its windows still reach are the batch executor's values there
            for sub in subqueries {
                let step = sub.step_ms.max(1);
                let (after, upto) = sub.before(start as i64);
                let first = after.div_euclid(step) * step + step;
                let last = upto.div_euclid(step) * step;
                if first > last {
                    continue;
                }
                let opts = QueryOptions {
                    start: first,
                    end: last,
                    step,
                    lookback_ms: self.lookback_ms,
                    range_query: true,
                    ..QueryOptions::instant(first)
                };
                let evaluation = promflow_batch::evaluate(&sub.inner, querier, &opts)?;
                let floats = match evaluation.result {
                    QueryResult::Matrix(series) => series,
                    _ => Vec::new(),
                };
                self.rows_in_pieces(floats, evaluation.histograms, &mut |rows| history.send(sub.leaf, rows));
            }
            Ok::<(), Error>(())
        })();
        if let Some(t) = self.threads.first() {
            t.unpark();
        }
        match loaded {
            Ok(()) => Ok(view),
            Err(e) if c.gathered.is_some() => {
                // every process built the view and keeps it: this one cannot take it back
                // alone, and its share of the history is missing. It leaves the computation,
                // which forms again and installs every view afresh
                tracing::error!(error = %e, "a view's history could not be read; leaving the cluster's dataflow");
                self.broken.store(true, Ordering::Relaxed);
                Err(e)
            }
            Err(e) => {
                drop(c);
                self.uninstall(view);
                Err(e)
            }
        }
    }

    /// Sends `leaves` what `querier` holds of their selections from `from` on (everything
    /// committed, even after `now`): oldest first, a slice at a time, so that each series'
    /// samples reach its operator in time order and only a slice's samples are in memory at
    /// once.
    fn send_history(
        &self,
        history: &mut HistorySender<'_>,
        leaves: &[(usize, Vec<promflow_storage::Matcher>)],
        querier: &dyn promflow_storage::Querier,
        (from, now): (i64, i64),
    ) -> Result<(), Error> {
        let mut lo = from;
        loop {
            let last = lo.saturating_add(HISTORY_SLICE_MS) > now;
            let hi = if last { i64::MAX } else { lo + HISTORY_SLICE_MS - 1 };
            for (leaf, matchers) in leaves {
                let floats = querier.select(matchers, lo, hi)?;
                let hists = querier.select_histograms(matchers, lo, hi)?;
                self.rows_in_pieces(floats, hists, &mut |rows| history.send(*leaf, rows));
            }
            if last {
                return Ok(());
            }
            lo = hi + 1;
        }
    }

    /// The rows of `floats` and `hists`, series by series (each series' floats, then its
    /// histograms), handed to `emit` in pieces of about [`HISTORY_PIECE`] rows, each series'
    /// samples freed as they are turned into rows.
    fn rows_in_pieces(
        &self,
        floats: Vec<promflow_storage::Series>,
        hists: Vec<promflow_storage::HistogramSeries>,
        emit: &mut dyn FnMut(Vec<Row>),
    ) {
        let mut rows = Vec::new();
        let float_rows = floats.into_iter().map(|s| {
            let key = self.keys.intern(s.labels);
            s.samples.iter().map(|x| (key, x.t, Value::float(x.v))).collect::<Vec<_>>()
        });
        let hist_rows = hists.into_iter().map(|s| {
            let key = self.keys.intern(s.labels);
            s.samples.into_iter().map(|x| (key, x.t, Value::histogram(x.h))).collect::<Vec<_>>()
        });
        for series in float_rows.chain(hist_rows) {
            rows.extend(series);
            if rows.len() >= HISTORY_PIECE {
                emit(std::mem::take(&mut rows));
            }
        }
        if !rows.is_empty() {
            emit(rows);
        }
    }

    /// Installs a view of `plan` in the hub ([`hub`]: many views as data in one operator,
    /// for clients' standing queries), sharing the hub's nodes that other views built. With
    /// `history` (a querier and `now`), the leaves it adds start from history as
    /// [`Incremental::install_from`]'s do, with the same duty for the caller; without, they
    /// start empty. A hub view is subscribed to, not read. [`Error::Unsupported`] when the
    /// hub does not hold the plan: [`Incremental::install_from`] makes it a dataflow.
    ///
    /// On a cluster's computation every process installs the view, in the order of the
    /// sequenced log, and `reader` names the process its subscribers are on, whose hub holds
    /// it (every process sends it the samples it appends and, with `history`, the history
    /// it stores); in one process it is `None`.
    pub fn install_hub(
        &self,
        plan: &Plan,
        history: Option<(&dyn promflow_storage::Querier, i64)>,
        reader: Option<usize>,
    ) -> Result<ViewId, Error> {
        let mut c = self.controller();
        let home = match (&c.gathered, reader) {
            (None, _) => 0,
            (Some(_), Some(process)) => (process * self.workers) as u64,
            (Some(_), None) => {
                return Err(Error::Unsupported("a hub view without its reader's process".into()))
            }
        };
        let Controller { registry, hubs, .. } = &mut *c;
        let read_back = registry.read_back.clone();
        let hub = hubs.entry(home).or_default();
        let lowered = hub.lower(plan, self.lookback_ms, read_back.as_ref(), &mut || registry.take_id())?;
        registry.add_leaves(&lowered.new_leaves);
        if !lowered.new.is_empty() {
            self.broadcast(|| Command::HubInstall { home, nodes: lowered.new.clone() });
        }
        let view = c.next_view;
        c.next_view += 1;
        c.hub_views.insert(view, HubView { home, root: lowered.root, used: lowered.used });
        self.note_hubs_elsewhere(&c);
        let Some((querier, now)) = history.filter(|_| !lowered.new_leaves.is_empty()) else {
            return Ok(view);
        };
        let from = now - plan.max_window_ms() - self.lookback_ms;
        let mut outbox = self.outbox();
        outbox.flush();
        let mut history = HistorySender { senders: &outbox.senders, incremental: self, stalled: false };
        self.send_history(&mut history, &lowered.new_leaves, querier, (from, now))?;
        if let Some(t) = self.threads.first() {
            t.unpark();
        }
        Ok(view)
    }

    /// The first time an event is due at in the hub's views: a window's oldest sample leaves
    /// it, or a sample stamped ahead of the clock takes effect. Until the clock passes it,
    /// their subscribers do not see the change.
    ///
    /// On a cluster's computation, a hub on another process completes a time once this
    /// process's clock has passed it too, and when its events are due is known there alone:
    /// while another process's hub holds views, an event is taken to be due now, so this
    /// process's clock moves as often as for events of its own.
    pub fn next_event(&self) -> Option<i64> {
        if self.counters.hubs_elsewhere.load(Ordering::Relaxed) {
            return Some(i64::MIN);
        }
        let t = self.counters.hub_next_event.load(Ordering::Relaxed);
        (t != u64::MAX).then_some(t as i64)
    }

    /// Notes whether another process's hub holds views ([`Incremental::next_event`]), after
    /// the hubs changed.
    fn note_hubs_elsewhere(&self, c: &Controller) {
        let home = c.gathered.as_ref().map_or(0, |g| (g.process * self.workers) as u64);
        self.counters.hubs_elsewhere.store(c.hubs_elsewhere(home), Ordering::Relaxed);
    }

    /// Records out of each kind of operator so far, over all views and workers
    /// (`promflow_dataflow_records_total{operator}`).
    pub fn records_total(&self) -> Vec<(&'static str, u64)> {
        OPERATOR_NAMES
            .iter()
            .zip(&self.counters.records)
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Records the views' arrangements hold, sorted into batches or waiting in their
    /// batchers, over all workers of this process, by what they hold ([`Holds`]:
    /// `promflow_dataflow_arranged_records{holds}`). Batches not yet merged each keep their
    /// updates, so a value that changed since the last merge counts more than once.
    pub fn arranged_records(&self) -> Vec<(&'static str, i64)> {
        HOLDS_NAMES
            .iter()
            .zip(&self.counters.arranged)
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Samples the per-series operators hold, over all views and workers
    /// (`promflow_dataflow_samples_kept`): the dataflow state that grows with windows.
    pub fn samples_kept(&self) -> i64 {
        self.counters.samples_kept.load(Ordering::Relaxed)
    }

    /// Arrangements that views registered: one per distinct selection, window function and
    /// view, in the dataflow or as a node of the hub, which keeps its content as an
    /// arrangement does (`promflow_dataflow_arrangements`).
    pub fn arrangements(&self) -> usize {
        let c = self.controller();
        c.registry.arrangements() + c.hub_nodes()
    }

    /// Nodes the hub holds for clients' views ([`hub`]; on a cluster's computation, those of
    /// every process's hub, as every process knows them): `promflow_dataflow_hub_nodes`.
    pub fn hub_nodes(&self) -> usize {
        self.controller().hub_nodes()
    }

    /// Distinct label sets the executor has numbered (series and derived series).
    pub fn label_sets(&self) -> usize {
        self.keys.len()
    }

    /// Hands appended samples to the leaves they match; samples no view selects go nowhere.
    /// A series' samples must come in time order across calls (storage's append order).
    pub fn append<V: Clone + Into<Value>>(&self, samples: &[(Labels, i64, V)]) {
        self.append_from(samples.iter().map(|(l, t, v)| (l, *t, v.clone().into())));
    }

    /// [`Incremental::append`] over borrowed samples.
    pub fn append_from<'a>(&self, samples: impl IntoIterator<Item = (&'a Labels, i64, Value)>) {
        let mut c = self.controller();
        self.check_routes(&mut c);
        // no view reads samples: nothing to route, and no route worth remembering (a view
        // installed later reads what it needs from storage)
        if c.registry.leaves.is_empty() {
            return;
        }
        let mut per_leaf: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
        let Controller { registry, routes, .. } = &mut *c;
        for (labels, t, v) in samples {
            let (key, to) = match routes.get(labels) {
                Some(r) => r,
                None => routes.entry(labels.clone()).or_insert(self.route(registry, labels)),
            };
            for leaf in to {
                per_leaf.entry(*leaf).or_default().push((*key, t, v.clone()));
            }
        }
        drop(c);
        self.feed(per_leaf);
    }

    /// [`Incremental::append_from`] over storage's append feed, whose samples name their series
    /// by storage id: a series is found by its id, not by hashing its labels (which was most
    /// of the feed thread's time), and `labels_of` is asked for the labels of a series only
    /// when it is first seen. `removals` is storage's count of series removals: when it has
    /// grown, the routes are forgotten, so that those of removed series do not pile up.
    pub fn append_by_id(
        &self,
        samples: impl IntoIterator<Item = (SeriesId, i64, Value)>,
        removals: u64,
        labels_of: impl Fn(SeriesId) -> Option<Arc<Labels>>,
    ) {
        let mut c = self.controller();
        self.check_routes(&mut c);
        // as in `append_from`: without views, there is nothing to route
        if c.registry.leaves.is_empty() {
            return;
        }
        if c.id_routes_removals != removals {
            c.id_routes = KeyMap::default();
            c.id_routes_removals = removals;
        }
        let mut per_leaf: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
        let Controller { registry, id_routes, .. } = &mut *c;
        for (id, t, v) in samples {
            let (key, to) = match id_routes.get(&id) {
                Some(r) => r,
                None => {
                    // gone already: its samples were older than a head cut
                    let Some(labels) = labels_of(id) else { continue };
                    id_routes.entry(id).or_insert(self.route(registry, &labels))
                }
            };
            for leaf in to {
                per_leaf.entry(*leaf).or_default().push((*key, t, v.clone()));
            }
        }
        drop(c);
        self.feed(per_leaf);
    }

    /// Samples read back from storage so far by windows kept by their ends
    /// (`promflow_dataflow_read_back_samples_total`).
    pub fn read_back_samples(&self) -> u64 {
        self.counters.read_back.load(Ordering::Relaxed)
    }

    /// Forgets the routes when views have added or dropped leaves since they were worked out.
    fn check_routes(&self, c: &mut Controller) {
        let version = c.registry.leaves_version;
        if c.routes_for != version {
            c.routes.clear();
            c.id_routes.clear();
            c.routes_for = version;
        }
    }

    /// Where the samples of `labels` go: the series' key (`Key(u64::MAX)` when no leaf takes it)
    /// and the leaves whose selections it matches.
    fn route(&self, registry: &Registry, labels: &Labels) -> (Key, Vec<usize>) {
        let to: Vec<usize> = registry
            .leaves
            .iter()
            .filter(|(_, ms)| ms.iter().all(|m| m.matches_labels(labels)))
            .map(|(leaf, _)| *leaf)
            .collect();
        let key = if to.is_empty() { Key(u64::MAX) } else { self.keys.intern(labels.clone()) };
        (key, to)
    }

    /// Holds each leaf's rows for the workers until the next command, or sends them when they are
    /// many ([`Outbox`]).
    fn feed(&self, per_leaf: BTreeMap<usize, Vec<Row>>) {
        let mut outbox = self.outbox();
        for (leaf, rows) in per_leaf {
            outbox.held.entry(leaf).or_default().extend(rows);
        }
        if outbox.held.values().map(Vec::len).sum::<usize>() >= FLUSH_ROWS {
            outbox.flush();
            drop(outbox);
            for t in &self.threads {
                t.unpark();
            }
        }
    }

    fn advance_to(&self, c: &mut Controller, t: u64, tick: bool) {
        if t < c.clock || (t == c.clock && !tick) {
            return;
        }
        // the subqueries' steps on the way (and at `t`, unless this move ticks there)
        let mut steps = BTreeSet::new();
        for &step in c.subquery_steps.keys() {
            let first = c.clock.div_ceil(step).saturating_mul(step);
            let first = first.max(t.saturating_sub(step.saturating_mul(MAX_STEP_TICKS)));
            let mut b = first;
            while b < t || (b == t && !tick) {
                if b != c.clock || c.ticked != Some(b) {
                    steps.insert(b);
                }
                b = b.saturating_add(step);
            }
        }
        for b in steps {
            c.clock = b;
            c.ticked = Some(b);
            self.broadcast(|| Command::Advance { t: b, tick: true });
        }
        if t == c.clock && !tick {
            return;
        }
        c.clock = t;
        if tick {
            c.ticked = Some(t);
        }
        self.broadcast(|| Command::Advance { t, tick });
    }

    /// The clock: samples appended now count from this time at the earliest.
    pub fn clock(&self) -> i64 {
        self.controller().clock as i64
    }

    /// Moves the clock to `t`: samples appended from now on count from `t` at the earliest,
    /// and reads at times before `t` can complete.
    pub fn advance(&self, t: i64) {
        let mut c = self.controller();
        self.advance_to(&mut c, t.max(0) as u64, false);
    }

    /// Moves the clock to `t` and brings the values that move with time alone (`rate`'s
    /// extrapolation, `predict_linear`) up to date at `t`. The server ticks at every group
    /// evaluation time; a read ticks at its own time when the clock has not passed it.
    pub fn tick(&self, t: i64) {
        let mut c = self.controller();
        self.advance_to(&mut c, t.max(0) as u64, true);
    }

    /// Lets the views forget history before `t`: reads at earlier times are no longer
    /// answered correctly. Arrangements no read has read (views only subscribed to, and what
    /// views compute on the way) forget everything before the clock: nothing reads their past.
    /// Without it a view keeps every change it ever made.
    pub fn compact(&self, t: i64) {
        let read = t.max(0) as u64;
        let other = self.controller().clock.saturating_sub(1).max(read);
        self.broadcast(|| Command::Compact { read, other });
    }

    /// Lets time `t` complete: when the clock has not passed `t`, it ticks at `t` and moves
    /// just past it.
    pub fn complete(&self, t: i64) {
        let mut c = self.controller();
        self.complete_at(&mut c, t.max(0) as u64);
    }

    fn complete_at(&self, c: &mut Controller, t: u64) {
        if c.clock <= t {
            if c.ticked != Some(t) {
                self.advance_to(c, t, true);
            }
            self.advance_to(c, t + 1, false);
        }
    }

    /// The view's value at `t`. Completes `t` ([`Incremental::complete`]), then waits until
    /// every worker is complete through `t`. A view with a grain is read at the grain's last
    /// time at or before `t` (empty before its first).
    pub fn read(&self, view: ViewId, t: i64) -> Result<Vec<(Labels, Value)>, Error> {
        self.read_within(view, t, READ_WAIT)
    }

    /// [`Incremental::read`], waiting at most `wait` for the workers to complete `t`
    /// ([`Error::Timeout`] when they do not).
    pub fn read_within(&self, view: ViewId, t: i64, wait: Duration) -> Result<Vec<(Labels, Value)>, Error> {
        let t = t.max(0) as u64;
        let (arrangement, t) = {
            let mut c = self.controller();
            let Some(&(arrangement, grain)) = c.views.get(&view) else {
                if c.hub_views.contains_key(&view) {
                    return Err(Error::Plan(format!(
                        "view {view} is in the hub: it is subscribed to, not read"
                    )));
                }
                return Err(Error::Plan(format!("no view {view}")));
            };
            if !read_here(&c, arrangement) {
                // its workers hold their share only
                return Err(Error::Unsupported(format!("view {view} is read on other processes")));
            }
            self.complete_at(&mut c, t);
            match grain {
                None => (arrangement, t),
                Some(g) => match g.down(t) {
                    Some(at) => (arrangement, at),
                    None => return Ok(Vec::new()),
                },
            }
        };
        let (tx, rx) = channel();
        self.broadcast(|| Command::Read { arrangement, t, reply: tx.clone() });
        // a worker that fails drops its copy: a failed computation answers at once
        drop(tx);
        let mut parts = Vec::with_capacity(self.workers);
        let deadline = Instant::now() + wait;
        for _ in 0..self.workers {
            let left = deadline.saturating_duration_since(Instant::now());
            let (part, errors) = rx.recv_timeout(left).map_err(|e| match e {
                RecvTimeoutError::Timeout => Error::Timeout("a read of the dataflow"),
                RecvTimeoutError::Disconnected => {
                    Error::Execution("the dataflow's computation failed".into())
                }
            })?;
            if let Some(&error) = errors.first() {
                // the batch executor's words for what made the evaluation fail
                return Err(Error::Execution(self.keys.labels(error).get(render::ERROR_LABEL).to_string()));
            }
            parts.push(part);
        }
        let mut out: BTreeMap<Key, Value> = BTreeMap::new();
        for (key, value, count) in parts.into_iter().flatten() {
            if count != 1 || out.insert(key, value).is_some() {
                // the batch executor's words for two series that ended up with one label set
                return Err(Error::Execution("vector cannot contain metrics with the same labelset".into()));
            }
        }
        let mut rows: Vec<(Labels, Value)> = out.into_iter().map(|(k, v)| (self.keys.labels(k), v)).collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rows)
    }

    /// Every change of the view from `from` on (from the clock, if it is later), one message
    /// per time once the time is complete; the first message holds the view's whole content at
    /// the start, even when it is empty. `wake` is woken after messages are sent. The
    /// subscription lasts until [`Incremental::unsubscribe`], or until its view is dropped.
    pub fn subscribe(&self, view: ViewId, from: i64, wake: Option<Notify>) -> Result<Subscription, Error> {
        // the clock cannot move before every worker has the subscription: no update after its
        // start has left a tap yet
        let c = self.controller();
        let from = (from.max(0) as u64).max(c.clock);
        let id = self.next_subscription.fetch_add(1, Ordering::Relaxed);
        // the hub is on the first worker alone
        let (target, workers) = match (c.hub_views.get(&view), c.views.get(&view)) {
            (Some(hub), _)
                if c.gathered.as_ref().is_none_or(|g| hub.home == (g.process * self.workers) as u64) =>
            {
                (Tapped::Hub(hub.root), 1)
            }
            (Some(_), _) => {
                return Err(Error::Unsupported(format!("view {view} is read on another process")))
            }
            (None, Some(&(arrangement, _))) if read_here(&c, arrangement) => {
                (Tapped::Arrangement(arrangement), self.workers)
            }
            (None, Some(_)) => {
                return Err(Error::Unsupported(format!("view {view} is read on other processes")));
            }
            (None, None) => return Err(Error::Plan(format!("no view {view}"))),
        };
        let (sub, tx, complete) = Subscription::new(id, from, workers, self.keys.clone());
        self.broadcast(|| Command::Subscribe {
            id,
            target,
            from,
            tx: tx.clone(),
            complete: Arc::clone(&complete),
            wake: wake.clone(),
        });
        drop(c);
        Ok(sub)
    }

    /// Ends a subscription on every worker: its channel disconnects once every worker has let
    /// it go.
    pub fn unsubscribe(&self, sub: &Subscription) {
        self.broadcast(|| Command::Unsubscribe(sub.id));
    }

    /// Stops the workers and waits for them.
    pub fn shutdown(&self) {
        self.broadcast(|| Command::Shutdown);
        let Some(guards) = self.guards.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        if self.controller().gathered.is_none() {
            // one process: the workers stop once they have dropped their dataflows, which
            // takes as long as freeing what the views hold
            for e in guards.join().into_iter().filter_map(Result::err) {
                tracing::error!(error = %e, "dataflow worker failed");
            }
            return;
        }
        // in a cluster, a worker's connections close only once the other processes' workers
        // stop too: the wait is bounded, and the threads are left behind past it
        let (tx, rx) = channel();
        let joining = std::thread::Builder::new().name("dataflow-shutdown".into()).spawn(move || {
            let _ = tx.send(guards.join());
        });
        if joining.is_err() {
            return;
        }
        match rx.recv_timeout(SHUTDOWN_WAIT) {
            Ok(results) => {
                for e in results.into_iter().filter_map(Result::err) {
                    tracing::error!(error = %e, "dataflow worker failed");
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(waited = ?SHUTDOWN_WAIT, "the dataflow workers did not stop; leaving them")
            }
            // the computation had failed: its connection threads panicked, which the join
            // passes on
            Err(RecvTimeoutError::Disconnected) => {}
        }
    }
}

impl Drop for Incremental {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The emptied buffers (1 MiB each, or larger after a larger message) each of a cluster
/// process's connections keeps for the next messages it sends or reads, beyond the one it
/// takes back when its current buffer fills: none. timely keeps every buffer a burst
/// needed unless told a number; with the rules as views on a 3-node cluster, one node held
/// 103 MB of them a minute after the load that filled them, 5 KB per series it owned
/// (`docs/decisions/2026-11-29-network-buffers-kept.md`).
const SPARE_NETWORK_BUFFERS: usize = 0;

/// How long [`Incremental::shutdown`] waits for the workers to stop.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// The longest a worker parks with nothing to do.
const PARK_MAX: Duration = Duration::from_millis(100);

type LeafInput = InputHandle<u64, CapacityContainerBuilder<Vec<Row>>>;
type ClockInput = InputHandle<u64, CapacityContainerBuilder<Vec<series::Tick>>>;

/// One worker's handles: every registered arrangement (with the probe of the dataflow that
/// builds it), the leaf inputs, and each installation's clock input and dataflow.
pub(crate) struct WorkerState {
    traces: HashMap<usize, (Trace, ProbeHandle<u64>)>,
    /// The errors of the arrangements whose sub-expressions can fail (a join's matching):
    /// elements keyed by `{__error__="<message>"}` while the error holds.
    errors: HashMap<usize, Trace>,
    /// Each arrangement's tap, which subscriptions register with.
    taps: HashMap<usize, tap::Subscribers>,
    leaves: HashMap<usize, (LeakOnUnwind<LeafInput>, Option<Grain>)>,
    clocks: HashMap<usize, (LeakOnUnwind<ClockInput>, Option<Grain>)>,
    /// Each installation's dataflow, by the installation's number.
    dataflows: HashMap<usize, usize>,
    /// In a cluster, the read copies of the arrangements this process reads, by arrangement.
    gathered: HashMap<usize, Gathered>,
    /// In a cluster, the dataflows that copy each arrangement to its readers, whether this
    /// process is one of them or not.
    copies: HashMap<usize, Vec<usize>>,
    /// How many workers each process has.
    width: usize,
    /// Which worker keeps each series' samples.
    pub(crate) series_route: SeriesRoute,
    /// What this worker's arrangement operators hold, by operator id; those not here are
    /// differential's operators' own ([`Holds::Operator`]).
    holds: Rc<RefCell<HashMap<usize, Holds>>>,
}

/// A dataflow input that a worker unwinding from a failed computation leaks rather than
/// drops. Dropping an input closes it, which sends what it holds to the other workers; once
/// a lost connection has poisoned timely's queues, that send panics again, and a panic while
/// unwinding aborts the whole server, its storage and ingest included. What leaks is one
/// batch an input, once per failed computation. Every input a worker holds (the leaves, the
/// clocks, the hub's) is held in one.
pub(crate) struct LeakOnUnwind<T>(Option<T>);

impl<T> LeakOnUnwind<T> {
    /// Holds `input`.
    pub(crate) fn new(input: T) -> Self {
        LeakOnUnwind(Some(input))
    }
}

impl<T> std::ops::Deref for LeakOnUnwind<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("taken only when dropped")
    }
}

impl<T> std::ops::DerefMut for LeakOnUnwind<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("taken only when dropped")
    }
}

impl<T> Drop for LeakOnUnwind<T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::mem::forget(self.0.take());
        }
    }
}

impl WorkerState {
    /// Notes that the next operator `worker` builds is an arrangement holding `holds`: call
    /// it right before building the arrangement.
    pub(crate) fn arranging(&self, worker: &timely::worker::Worker, holds: Holds) {
        self.holds.borrow_mut().insert(worker.peek_identifier(), holds);
    }
}

/// When an arrangement merges its batches beyond what new batches pay for (differential's
/// exertion logic, asked whenever the arrangement's operator runs): `layers` are the spine's
/// levels, largest first, as (level, batches, records). Differential merges a batch into
/// larger ones only as later batches bring work, so the retractions and insertions of
/// several rounds wait side by side in unmerged batches (about 20 records a value in the
/// window functions' arrangements of 101 rules). A merge in progress is finished; once the
/// batches below the largest hold more than half as many records as it does, all of them
/// are merged into it at once (an effort of the largest level's size rolls every level
/// below up into it), so a merge copies a few records for each that came in since the last
/// (about four at most). That merge runs in one activation, as differential's own do when a
/// large batch arrives.
fn consolidation_due(layers: &[(usize, usize, usize)]) -> Option<usize> {
    let mut occupied = layers.iter().filter(|(_, batches, _)| *batches > 0);
    let &(top_level, top_batches, top_records) = occupied.next()?;
    if top_batches > 1 {
        return Some(top_records.max(1));
    }
    let mut below = 0;
    for &(_, batches, records) in occupied {
        if batches > 1 {
            return Some(records.max(1));
        }
        below += records;
    }
    (below > top_records / 2).then(|| 1usize << top_level.min(usize::BITS as usize - 2))
}

/// Counts the records this worker's arrangements hold, by what they hold, from
/// differential's `differential/arrange` log: batches as they are made, merged and dropped,
/// and the updates waiting in the arrangements' batchers. Registered before any dataflow is
/// built, since an arrangement takes its logger when it is built.
fn count_arranged(
    worker: &timely::worker::Worker,
    holds: Rc<RefCell<HashMap<usize, Holds>>>,
    counters: Arc<Counters>,
) {
    use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
    let Some(mut registry) = worker.log_register() else { return };
    registry.insert::<DifferentialEventBuilder, _>("differential/arrange", move |_, events| {
        let Some(events) = events else { return };
        let holds = holds.borrow();
        for (_, event) in events.drain(..) {
            let (operator, change) = match event {
                DifferentialEvent::Batch(b) => {
                    counters.batches.fetch_add(1, Ordering::Relaxed);
                    (b.operator, b.length as i64)
                }
                DifferentialEvent::Merge(m) => match m.complete {
                    Some(merged) => (m.operator, merged as i64 - m.length1 as i64 - m.length2 as i64),
                    None => continue,
                },
                DifferentialEvent::Drop(d) => (d.operator, -(d.length as i64)),
                DifferentialEvent::Batcher(b) => (b.operator, b.records_diff as i64),
                DifferentialEvent::MergeShortfall(_) | DifferentialEvent::TraceShare(_) => continue,
            };
            let kind = holds.get(&operator).copied().unwrap_or(Holds::Operator);
            counters.arranged[kind as usize].fetch_add(change, Ordering::Relaxed);
        }
    });
}

/// In a cluster, a copy of an arrangement on the first worker of each process that reads it
/// (the other workers' copies are empty): a read or a subscription there sees the whole
/// view, not the share its own workers hold. Built in the dataflow of the view that builds
/// the arrangement, or, for an arrangement an earlier view built, by a dataflow of its own
/// that imports it (every dataflow costs every worker its progress tracking, which in a
/// cluster is exchanged with every other process).
struct Gathered {
    trace: Trace,
    errors: Option<Trace>,
    probe: ProbeHandle<u64>,
    tap: tap::Subscribers,
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    rx: Receiver<Command>,
    (keys, counters): (Keys, Arc<Counters>),
    workers_here: usize,
    series_route: SeriesRoute,
    log: Option<LogEnd>,
) {
    let width = workers_here.max(1);
    let first = worker.index() / width * width;
    let mut state = WorkerState {
        traces: HashMap::new(),
        errors: HashMap::new(),
        taps: HashMap::new(),
        leaves: HashMap::new(),
        clocks: HashMap::new(),
        dataflows: HashMap::new(),
        gathered: HashMap::new(),
        copies: HashMap::new(),
        width,
        series_route,
        holds: Rc::default(),
    };
    count_arranged(worker, Rc::clone(&state.holds), Arc::clone(&counters));
    // every worker builds the hub's dataflow (workers build the same dataflows in the same
    // order); only the first one's is fed
    let (hub, hub_input): (SharedHub, HubInput) =
        Hub::build(worker, width, keys.clone(), Arc::clone(&counters));
    let mut hub_input = LeakOnUnwind::new(hub_input);
    // in a cluster, the sequenced log comes next on every worker; its clock is the time since
    // the worker started, and the processes start together once they are all connected
    let mut log = log.map(|end| {
        let sequencer = Sequencer::<Vec<u8>>::new(worker, Instant::now());
        (LeakOnUnwind::new(sequencer), end.forward)
    });
    let mut time: u64 = 0;
    let mut reads: Vec<(usize, u64, Sender<ReadReply>)> = Vec::new();
    // the arrangement each subscription taps, by the subscription's id
    let mut subscriptions: HashMap<u64, usize> = HashMap::new();
    // the arrangements reads have read, which keep the past that compaction leaves them
    let mut read_arrangements: HashSet<usize> = HashSet::new();
    loop {
        // what the last step let through the log
        if let Some((sequencer, forward)) = log.as_mut() {
            let sequencer: &mut Sequencer<Vec<u8>> = sequencer;
            for entry in sequencer.by_ref() {
                if let Some(tx) = forward {
                    let _ = tx.send(entry);
                }
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Command::Install { install: number, node, grain, sample_from, copy_to }) => {
                    let times = (time, sample_from);
                    let view = (&node, grain, copy_to.as_slice());
                    install(worker, &mut state, number, view, times, (&keys, &counters))
                }
                Ok(Command::Drop { install, arrangements, leaves }) => {
                    for a in &arrangements {
                        state.gathered.remove(a);
                        for dataflow in state.copies.remove(a).unwrap_or_default() {
                            worker.drop_dataflow(dataflow);
                        }
                    }
                    for a in &arrangements {
                        state.traces.remove(a);
                        state.errors.remove(a);
                        state.taps.remove(a);
                        read_arrangements.remove(a);
                    }
                    for l in &leaves {
                        state.leaves.remove(l);
                    }
                    state.clocks.remove(&install);
                    if let Some(dataflow) = state.dataflows.remove(&install) {
                        worker.drop_dataflow(dataflow);
                    }
                }
                Ok(Command::Rows { leaf, rows, history }) => {
                    if let Some((input, _)) = state.leaves.get_mut(&leaf) {
                        for r in rows.iter() {
                            input.send(r.clone());
                        }
                    } else if let Some(to) = hub.borrow().home_of(leaf) {
                        hub_input.send(HubItem::Rows { to, leaf, rows: Arc::clone(&rows) });
                    }
                    // a piece of history moves on before the next: held once, not piled up
                    if history {
                        drop(rows);
                        worker.step();
                        counters.history_queued.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                Ok(Command::Advance { t, tick }) => {
                    time = time.max(t);
                    if *hub_input.time() < time {
                        hub_input.advance_to(time);
                    }
                    // from the first worker to every process's hub, as ticks reach every
                    // process's dataflows
                    if tick && worker.index() == first {
                        for process in 0..worker.peers() / state.width {
                            hub_input.send(HubItem::Tick { to: (process * state.width) as u64 });
                        }
                    }
                    for (input, grain) in state.leaves.values_mut() {
                        let to = follow(*grain, time);
                        if *input.time() < to {
                            input.advance_to(to);
                        }
                    }
                    for (clock, grain) in state.clocks.values_mut() {
                        let to = follow(*grain, time);
                        if *clock.time() < to {
                            clock.advance_to(to);
                        }
                        if tick {
                            clock.send(None);
                        }
                    }
                }
                Ok(Command::Compact { read, other }) => {
                    let traces = state.traces.iter_mut().map(|(id, (trace, _))| (id, trace));
                    let gathered = state.gathered.iter_mut().flat_map(|(id, g)| {
                        std::iter::once((id, &mut g.trace)).chain(g.errors.as_mut().map(|e| (id, e)))
                    });
                    for (id, trace) in traces.chain(state.errors.iter_mut()).chain(gathered) {
                        let frontier = [if read_arrangements.contains(id) { read } else { other }];
                        trace.set_logical_compaction(AntichainRef::new(&frontier));
                        // never past what the trace holds (a worker behind the clock, busy
                        // with history): a read reads it through its upper
                        let mut upper = Antichain::new();
                        trace.read_upper(&mut upper);
                        let physical = upper.elements().first().map_or(frontier[0], |u| frontier[0].min(*u));
                        trace.set_physical_compaction(AntichainRef::new(&[physical]));
                    }
                }
                Ok(Command::Read { arrangement, t, reply }) => {
                    read_arrangements.insert(arrangement);
                    reads.push((arrangement, t, reply))
                }
                Ok(Command::Subscribe { id, target, from, tx, complete, wake }) => match target {
                    Tapped::Arrangement(arrangement) => {
                        let gathered = state.gathered.get(&arrangement).map(|g| &g.tap);
                        if let Some(tap) = gathered.or_else(|| state.taps.get(&arrangement)) {
                            // the subscription counts this process's workers only
                            let worker = worker.index() - first;
                            let subscriber = tap::Subscriber::new((id, from), tx, complete, worker, wake);
                            tap.borrow_mut().push(subscriber);
                            subscriptions.insert(id, arrangement);
                        }
                    }
                    Tapped::Hub(node) if worker.index() == first => {
                        let subscriber = tap::Subscriber::new((id, from), tx, complete, 0, wake);
                        hub.borrow_mut().subscribe(node, subscriber);
                    }
                    Tapped::Hub(_) => {}
                },
                Ok(Command::HubInstall { home, nodes }) if worker.index() == first => {
                    hub.borrow_mut().install(home, nodes)
                }
                Ok(Command::HubInstall { .. }) => {}
                Ok(Command::HubDrop(nodes)) => {
                    // down the channel its rows took: the home forgets a leaf once every
                    // process's fence has come
                    let fences = hub.borrow_mut().drop_nodes(&nodes);
                    for (to, leaves) in fences {
                        hub_input.send(HubItem::Dropped { to, leaves });
                    }
                }
                Ok(Command::Gather { arrangement, to }) => gather(worker, &mut state, arrangement, &to),
                Ok(Command::Propose(entry)) => {
                    if let Some((sequencer, _)) = log.as_mut() {
                        sequencer.push(entry);
                    }
                }
                Ok(Command::Unsubscribe(id)) => {
                    hub.borrow_mut().unsubscribe(id);
                    let tap = subscriptions
                        .remove(&id)
                        .and_then(|a| state.gathered.get(&a).map(|g| &g.tap).or_else(|| state.taps.get(&a)));
                    if let Some(tap) = tap {
                        tap.borrow_mut().retain(|s| s.id != id);
                    }
                }
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => break,
            }
        }
        reads.retain_mut(|(id, t, reply)| {
            let (trace, probe, errors) = match state.gathered.get_mut(id) {
                Some(g) => (&mut g.trace, &g.probe, g.errors.as_mut()),
                None => match state.traces.get_mut(id) {
                    Some((trace, probe)) => (trace, &*probe, state.errors.get_mut(id)),
                    None => {
                        let _ = reply.send((Vec::new(), Vec::new()));
                        return false;
                    }
                },
            };
            if probe.less_equal(t) {
                return true;
            }
            let content = read_at(trace, *t);
            let errors = errors.map_or_else(Vec::new, |errors| {
                read_at(errors, *t).into_iter().filter(|e| e.2 > 0).map(|e| e.0).collect()
            });
            let _ = reply.send((content, errors));
            false
        });
        // commands unpark the worker, and timely unparks it for messages between workers; the
        // deadline only bounds a lost wake-up (every wake-up steps every dataflow)
        worker.step_or_park(Some(PARK_MAX));
    }
}

/// How far the inputs of a view with `grain` follow a clock at `t` ([`Grain::settled`]).
fn follow(grain: Option<Grain>, t: u64) -> u64 {
    grain.map_or(t, |g| g.settled(t))
}

/// Builds the read copies of `arrangement` ([`Gathered`]) on the processes `to`: its
/// updates, and its errors', sent to the first worker of each and arranged there as they
/// come. Every worker builds the dataflow; a worker of another process keeps no copy.
fn gather(worker: &mut timely::worker::Worker, state: &mut WorkerState, arrangement: usize, to: &[usize]) {
    let Some((trace, _)) = state.traces.get_mut(&arrangement) else { return };
    let mut trace = trace.clone();
    let mut errors = state.errors.get(&arrangement).cloned();
    let here = to.contains(&(worker.index() / state.width));
    let dataflow = worker.next_dataflow_index();
    let worker_state = &*state;
    let copy = worker.dataflow::<u64, _, _>(|scope| {
        let updates = updates_of(trace.import(scope));
        let errors = errors.as_mut().map(|e| updates_of(e.import(scope)));
        copies_of(updates, errors, to, worker_state)
    });
    state.copies.entry(arrangement).or_default().push(dataflow);
    if here {
        state.gathered.insert(arrangement, copy);
    }
}

/// The updates of `arranged`, as a stream.
fn updates_of<'s>(
    arranged: differential_dataflow::operators::arrange::Arranged<'s, Trace>,
) -> timely::dataflow::Stream<'s, u64, Vec<Update>> {
    arranged.as_collection(|k: &Key, v: &Value| (*k, v.clone())).inner
}

/// The read copies of an arrangement's `updates` and its `errors` on the processes `to`
/// ([`Gathered`]), built in the dataflow of the streams; what a process among `to` keeps.
fn copies_of<'s>(
    updates: timely::dataflow::Stream<'s, u64, Vec<Update>>,
    errors: Option<timely::dataflow::Stream<'s, u64, Vec<Update>>>,
    to: &[usize],
    state: &WorkerState,
) -> Gathered {
    use timely::dataflow::operators::Probe as _;
    let leaders: Vec<u64> = to.iter().map(|p| (p * state.width) as u64).collect();
    let probe = ProbeHandle::new();
    let whole = copied_to(updates, leaders.clone(), state);
    whole.stream.clone().probe_with(&probe);
    let errors = errors.map(|errors| {
        let whole = copied_to(errors, leaders, state);
        whole.stream.clone().probe_with(&probe);
        whole.trace
    });
    let tap = tap::tap(whole.stream.clone(), whole.trace.clone());
    Gathered { trace: whole.trace, errors, probe, tap }
}

/// `updates` sent to each of `leaders` and arranged where they arrive.
fn copied_to<'s>(
    updates: timely::dataflow::Stream<'s, u64, Vec<Update>>,
    leaders: Vec<u64>,
    state: &WorkerState,
) -> differential_dataflow::operators::arrange::Arranged<'s, Trace> {
    use differential_dataflow::operators::arrange::arrangement::arrange_core;
    use differential_dataflow::trace::implementations::ValBatcher;
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::generic::operator::Operator as _;
    use timely::dataflow::operators::vec::Map as _;
    let spread = updates
        .flat_map(move |u: Update| leaders.iter().map(move |&l| (l, u.clone())).collect::<Vec<_>>())
        .unary::<CapacityContainerBuilder<Vec<Update>>, _, _, _>(
            exchange::KeyExchange::new(|(leader, _): &(u64, Update)| *leader),
            "Copy",
            |_, _| {
                |input, output| {
                    input.for_each(|time, data| {
                        output.session(&time).give_iterator(data.drain(..).map(|(_, u): (u64, Update)| u))
                    })
                }
            },
        );
    state.arranging(spread.scope().worker(), Holds::Copy);
    arrange_core::<_, _, ValBatcher<Key, Value, u64, isize>, ValSpine<Key, Value, u64, isize>>(
        spread,
        Pipeline,
        "Gather",
        ValBatcher::new,
    )
}

/// Builds one view's dataflow on this worker, as installation `number`, with the read
/// copies of the arrangement at its root on the processes `copy_to`.
fn install(
    worker: &mut timely::worker::Worker,
    state: &mut WorkerState,
    number: usize,
    (node, grain, copy_to): (&Node, Option<Grain>, &[usize]),
    (time, sample_from): (u64, u64),
    (keys, counters): (&Keys, &Arc<Counters>),
) {
    state.dataflows.insert(number, worker.next_dataflow_index());
    let mut clock_input = ClockInput::new();
    let here = copy_to.contains(&(worker.index() / state.width));
    let processes = worker.peers() / state.width.max(1);
    let (new_leaves, gathered) = worker.dataflow::<u64, _, _>(|scope| {
        let mut clock = scope.input_from(&mut clock_input);
        if processes > 1 {
            // on a cluster's computation a process ticks at the times it reads; the series its
            // reads cover are kept on every process's workers, and each must move with time
            // at those ticks too
            use timely::dataflow::operators::vec::Broadcast;
            clock = clock.broadcast();
        }
        let mut cx = RenderCx {
            state: &mut *state,
            clock,
            probe: ProbeHandle::new(),
            keys: keys.clone(),
            counters: Arc::clone(counters),
            new_leaves: Vec::new(),
            grain,
            start: sample_from,
            errors: Vec::new(),
        };
        let root = render::render_view(scope, node, &mut cx);
        let gathered = root.filter(|_| !copy_to.is_empty()).map(|root| {
            let errors = root.errors.map(updates_of);
            (root.id, copies_of(updates_of(root.updates), errors, copy_to, cx.state))
        });
        (cx.new_leaves, gathered)
    });
    if let Some((arrangement, copy)) = gathered.filter(|_| here) {
        state.gathered.insert(arrangement, copy);
    }
    let to = follow(grain, time);
    for leaf in new_leaves {
        if let Some((input, _)) = state.leaves.get_mut(&leaf) {
            input.advance_to(to);
        }
    }
    clock_input.advance_to(to);
    state.clocks.insert(number, (LeakOnUnwind::new(clock_input), grain));
}

/// The accumulated (key, value, count) triples of a trace at time `t`.
fn read_at(trace: &mut Trace, t: u64) -> Shard {
    let mut out = Vec::new();
    // read everything the trace holds (batch bounds need not fall on `t + 1`) and keep the
    // updates at times up to `t`
    let mut upper = Antichain::new();
    trace.read_upper(&mut upper);
    let Some(spans) = trace.spans_through(upper.borrow()) else { return out };
    let (mut cur, storage) = cursor_list(spans.into_iter().filter_map(|b| b.inner).collect());
    while cur.key_valid(&storage) {
        while cur.val_valid(&storage) {
            let mut n = 0isize;
            cur.map_times(&storage, |time, diff| {
                if *time <= t {
                    n += *diff;
                }
            });
            if n != 0 {
                out.push((*cur.key(&storage), cur.val(&storage).clone(), n));
            }
            cur.step_val(&storage);
        }
        cur.step_key(&storage);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::consolidation_due;

    #[test]
    fn a_spine_merges_when_its_smaller_batches_add_up() {
        assert_eq!(consolidation_due(&[]), None, "nothing held");
        assert_eq!(consolidation_due(&[(17, 1, 100_000), (3, 0, 0)]), None, "one batch: merged already");
        assert_eq!(
            consolidation_due(&[(17, 2, 150_000), (3, 1, 8)]),
            Some(150_000),
            "a merge in progress is finished"
        );
        assert_eq!(consolidation_due(&[(17, 1, 100_000), (12, 2, 4_000)]), Some(4_000));
        assert_eq!(
            consolidation_due(&[(17, 1, 100_000), (16, 1, 30_000), (12, 1, 4_000)]),
            None,
            "a third more"
        );
        // past half the largest's records, every level below rolls up into the largest
        assert_eq!(consolidation_due(&[(17, 1, 100_000), (16, 1, 40_000), (15, 1, 20_000)]), Some(1 << 17));
        assert_eq!(consolidation_due(&[(5, 1, 0), (2, 1, 3)]), Some(1 << 5), "an empty largest batch");
    }
}
