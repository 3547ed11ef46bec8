//! The incremental executor, first slice (`docs/dataflow.md`, step 1): instant selections kept
//! current as samples arrive, and `sum`/`count by` over them, maintained by a
//! timely/differential dataflow instead of being recomputed at every evaluation.
//!
//! * A view's samples enter one input. A stateful timely operator, keyed by series, holds each
//!   series' current sample and an expiry wheel: a sample counts from the later of its own
//!   timestamp and its arrival, until the next sample of its series replaces it or the
//!   lookback runs out, whichever is first. Only these changes (−old, +new) enter
//!   differential; a retraction waits in the wheel (with a capability for its time) and is
//!   emitted when the frontier reaches it, never ahead into differential's batcher.
//! * `sum`/`count by` is a differential `reduce` over the groups' current values.
//! * Dataflow time is evaluation time in milliseconds. [`Incremental::advance`] moves every
//!   view's input to a time; [`Incremental::read`] waits until a view is complete through a
//!   time and reads its arrangement at that time.
//! * Workers run on their own threads (`timely::execute`); commands reach every worker in
//!   the order the controller sends them, and each read gathers every worker's shard.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::TraceReader;
use differential_dataflow::AsCollection;
use promflow_storage::{is_stale_nan, Labels, Matcher};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{Capability, Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::progress::frontier::{Antichain, AntichainRef};

/// An `f64` ordered by `total_cmp`, as differential needs ordered data.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Value(f64);

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Value {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// What a view aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggKind {
    /// `sum by (…)`.
    Sum,
    /// `count by (…)`.
    Count,
}

/// A view: the series matching `matchers`, as an instant selection with `lookback_ms`,
/// optionally aggregated by the labels `by`.
#[derive(Clone, Debug)]
pub struct ViewSpec {
    /// The selection.
    pub matchers: Vec<Matcher>,
    /// How long a sample stays visible (`--query.lookback-delta`).
    pub lookback_ms: i64,
    /// The aggregation, with its grouping labels.
    pub aggregate: Option<(AggKind, Vec<String>)>,
}

/// A sample row of a view: (series id, group id, timestamp, value).
type Row = (u64, u64, i64, f64);

/// A view's rows as (output key, value), the answer to a read.
type Rows = Vec<(u64, f64)>;

/// A read waiting for its view to be complete: (view, time, where the answer goes).
type PendingRead = (u64, u64, Sender<Rows>);

/// Retractions due at a time: the capability to send them, and (series, sample time).
type Due = (Capability<u64>, Vec<(u64, i64)>);

/// Records that left each operator of a view, summed over workers
/// (`promflow_dataflow_records_total`).
#[derive(Debug, Default)]
pub struct OperatorCounters {
    /// Out of the per-series latest-sample operator: one per sample that starts or stops
    /// counting.
    pub latest: AtomicU64,
    /// Out of the aggregation: one per group whose value changes (twice: −old, +new).
    pub aggregate: AtomicU64,
}

enum Command {
    Install { id: u64, kind: Option<AggKind>, lookback_ms: i64, counters: Arc<OperatorCounters> },
    Rows { id: u64, rows: Arc<Vec<Row>> },
    Advance(u64),
    Compact(u64),
    Read { id: u64, t: u64, reply: Sender<Rows> },
    Shutdown,
}

/// A view's identities: the series and groups its rows name.
struct ViewState {
    spec: ViewSpec,
    /// Output key → labels: series labels (no aggregation) or group labels.
    keys: Vec<Labels>,
    key_ids: HashMap<Labels, u64>,
}

impl ViewState {
    fn key(&mut self, labels: Labels) -> u64 {
        if let Some(&k) = self.key_ids.get(&labels) {
            return k;
        }
        let k = self.keys.len() as u64;
        self.keys.push(labels.clone());
        self.key_ids.insert(labels, k);
        k
    }
}

/// The incremental executor: views maintained by timely workers.
pub struct Incremental {
    senders: Mutex<Vec<Sender<Command>>>,
    threads: Vec<std::thread::Thread>,
    guards: Mutex<Option<timely::communication::WorkerGuards<()>>>,
    views: Mutex<HashMap<u64, ViewState>>,
    series: Mutex<HashMap<Labels, u64>>,
    counters: Mutex<Vec<Arc<OperatorCounters>>>,
    workers: usize,
}

impl Incremental {
    /// Starts `workers` timely worker threads.
    pub fn start(workers: usize) -> Result<Incremental, String> {
        let workers = workers.max(1);
        let (mut senders, mut receivers) = (Vec::new(), Vec::new());
        for _ in 0..workers {
            let (tx, rx) = channel::<Command>();
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let (thread_tx, thread_rx) = channel::<(usize, std::thread::Thread)>();
        let thread_tx = Mutex::new(thread_tx);
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let rx = receivers.lock().ok().and_then(|mut r| r[worker.index()].take());
            if let Ok(tx) = thread_tx.lock() {
                let _ = tx.send((worker.index(), std::thread::current()));
            }
            if let Some(rx) = rx {
                run_worker(worker, rx);
            }
        })?;
        let mut threads: Vec<Option<std::thread::Thread>> = vec![None; workers];
        for _ in 0..workers {
            let (i, t) =
                thread_rx.recv_timeout(Duration::from_secs(10)).map_err(|e| format!("worker start: {e}"))?;
            threads[i] = Some(t);
        }
        Ok(Incremental {
            senders: Mutex::new(senders),
            threads: threads.into_iter().flatten().collect(),
            guards: Mutex::new(Some(guards)),
            views: Mutex::new(HashMap::new()),
            series: Mutex::new(HashMap::new()),
            counters: Mutex::new(Vec::new()),
            workers,
        })
    }

    fn broadcast(&self, make: impl Fn() -> Command) {
        if let Ok(senders) = self.senders.lock() {
            for tx in senders.iter() {
                let _ = tx.send(make());
            }
        }
        for t in &self.threads {
            t.unpark();
        }
    }

    /// Installs a view; returns its id.
    pub fn install(&self, spec: ViewSpec) -> u64 {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let id = views.len() as u64;
        let (kind, lookback_ms) = (spec.aggregate.as_ref().map(|a| a.0), spec.lookback_ms);
        views.insert(id, ViewState { spec, keys: Vec::new(), key_ids: HashMap::new() });
        let counters = Arc::new(OperatorCounters::default());
        self.counters.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::clone(&counters));
        self.broadcast(|| Command::Install { id, kind, lookback_ms, counters: Arc::clone(&counters) });
        id
    }

    /// Records out of each kind of operator so far, over all views and workers:
    /// (`latest sample`, `aggregate`).
    pub fn records_total(&self) -> [(&'static str, u64); 2] {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let sum = |f: fn(&OperatorCounters) -> &AtomicU64| {
            counters.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
        };
        [("latest sample", sum(|c| &c.latest)), ("aggregate", sum(|c| &c.aggregate))]
    }

    /// Hands appended samples to every view they match. Samples of one call must not be
    /// older than those of earlier calls for the same series (storage's append order).
    pub fn append(&self, samples: &[(Labels, i64, f64)]) {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let mut series_ids = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut per_view: BTreeMap<u64, Vec<Row>> = BTreeMap::new();
        for (labels, t, v) in samples {
            let next = series_ids.len() as u64;
            let sid = *series_ids.entry(labels.clone()).or_insert(next);
            for (&id, view) in views.iter_mut() {
                if !view.spec.matchers.iter().all(|m| m.matches_labels(labels)) {
                    continue;
                }
                let key = match &view.spec.aggregate {
                    None => view.key(labels.clone()),
                    Some((_, by)) => {
                        let l = Labels::from_pairs(by.iter().map(|n| (n.as_str(), labels.get(n))));
                        view.key(l)
                    }
                };
                per_view.entry(id).or_default().push((sid, key, *t, *v));
            }
        }
        drop(series_ids);
        drop(views);
        for (id, rows) in per_view {
            let rows = Arc::new(rows);
            // the first worker feeds; the exchange sends each series to its owner
            if let Ok(senders) = self.senders.lock() {
                let _ = senders[0].send(Command::Rows { id, rows });
            }
        }
        if let Some(t) = self.threads.first() {
            t.unpark();
        }
    }

    /// Moves every view's time to `t`: samples appended from now on count from `t` at the
    /// earliest, and reads at times before `t` can complete.
    pub fn advance(&self, t: i64) {
        let t = t.max(0) as u64;
        self.broadcast(|| Command::Advance(t));
    }

    /// Lets the views forget history before `t`: reads at earlier times are no longer
    /// answered correctly. Without it a view keeps every change it ever made.
    pub fn compact(&self, t: i64) {
        let t = t.max(0) as u64;
        self.broadcast(|| Command::Compact(t));
    }

    /// The view's value at `t` (waits until every worker has processed through `t`; the
    /// caller must have advanced to a time after `t`).
    pub fn read(&self, id: u64, t: i64) -> Vec<(Labels, f64)> {
        let (tx, rx) = channel();
        let t = t.max(0) as u64;
        self.broadcast(|| Command::Read { id, t, reply: tx.clone() });
        let mut out: BTreeMap<u64, f64> = BTreeMap::new();
        for _ in 0..self.workers {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(part) => out.extend(part),
                Err(_) => break,
            }
        }
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        let Some(view) = views.get(&id) else { return Vec::new() };
        let mut rows: Vec<(Labels, f64)> =
            out.into_iter().filter_map(|(k, v)| view.keys.get(k as usize).map(|l| (l.clone(), v))).collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }

    /// Stops the workers and waits for them.
    pub fn shutdown(&self) {
        self.broadcast(|| Command::Shutdown);
        if let Some(g) = self.guards.lock().unwrap_or_else(|e| e.into_inner()).take() {
            for r in g.join() {
                if let Err(e) = r {
                    tracing::error!(error = %e, "dataflow worker failed");
                }
            }
        }
    }
}

impl Drop for Incremental {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A view's handles on one worker.
struct WorkerView {
    input: InputHandle<u64, timely::container::CapacityContainerBuilder<Vec<Row>>>,
    probe: ProbeHandle<u64>,
    trace: differential_dataflow::operators::arrange::TraceAgent<
        differential_dataflow::trace::implementations::ValSpine<u64, Value, u64, isize>,
    >,
}

fn run_worker(worker: &mut timely::worker::Worker, rx: Receiver<Command>) {
    let mut views: HashMap<u64, WorkerView> = HashMap::new();
    let mut time: u64 = 0;
    let mut reads: Vec<PendingRead> = Vec::new();
    loop {
        loop {
            match rx.try_recv() {
                Ok(Command::Install { id, kind, lookback_ms, counters }) => {
                    let view = install(worker, kind, lookback_ms.max(1) as u64, time, counters);
                    views.insert(id, view);
                }
                Ok(Command::Rows { id, rows }) => {
                    if let Some(v) = views.get_mut(&id) {
                        for r in rows.iter() {
                            v.input.send(*r);
                        }
                    }
                }
                Ok(Command::Advance(t)) => {
                    time = time.max(t);
                    for v in views.values_mut() {
                        if *v.input.time() < time {
                            v.input.advance_to(time);
                        }
                    }
                }
                Ok(Command::Compact(t)) => {
                    let frontier = [t];
                    for v in views.values_mut() {
                        v.trace.set_logical_compaction(AntichainRef::new(&frontier));
                        v.trace.set_physical_compaction(AntichainRef::new(&frontier));
                    }
                }
                Ok(Command::Read { id, t, reply }) => reads.push((id, t, reply)),
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => break,
            }
        }
        reads.retain_mut(|(id, t, reply)| {
            let Some(v) = views.get_mut(id) else {
                let _ = reply.send(Vec::new());
                return false;
            };
            if v.probe.less_equal(t) {
                return true;
            }
            let _ = reply.send(read_at(&mut v.trace, *t));
            false
        });
        worker.step_or_park(Some(Duration::from_millis(20)));
    }
}

/// The accumulated (key, value) pairs of a trace at time `t`.
fn read_at(
    trace: &mut differential_dataflow::operators::arrange::TraceAgent<
        differential_dataflow::trace::implementations::ValSpine<u64, Value, u64, isize>,
    >,
    t: u64,
) -> Vec<(u64, f64)> {
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
            if n > 0 {
                out.push((*cur.key(&storage), cur.val(&storage).0));
            }
            cur.step_val(&storage);
        }
        cur.step_key(&storage);
    }
    out
}

/// Builds one view's dataflow on this worker.
fn install(
    worker: &mut timely::worker::Worker,
    kind: Option<AggKind>,
    lookback: u64,
    time: u64,
    counters: Arc<OperatorCounters>,
) -> WorkerView {
    let mut input = InputHandle::new();
    let probe = ProbeHandle::new();
    let trace = worker.dataflow::<u64, _, _>(|scope| {
        let latest = scope
            .input_from(&mut input)
            .unary_frontier(Exchange::new(|r: &Row| r.0), "latest sample", move |_cap, _info| {
                // per series: (sample time, value, output key) of the sample that counts now
                let mut current: HashMap<u64, (i64, f64, u64)> = HashMap::new();
                // contributions until their lookback runs out: (series, sample time) → (key, value)
                let mut live: HashMap<(u64, i64), (u64, f64)> = HashMap::new();
                let mut wheel: BTreeMap<u64, Due> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, data| {
                        let Some(&now) = cap.least() else { return };
                        for batch in data {
                            for &(series, key, t, v) in batch.iter() {
                                let expiry = (t.max(0) as u64).saturating_add(lookback);
                                let start = (t.max(0) as u64).max(now);
                                if current.get(&series).is_some_and(|&(ct, _, _)| t <= ct) {
                                    continue; // not newer than what counts: a duplicate or out of order
                                }
                                // the sample that counted so far stops where this one starts,
                                // unless its lookback runs out first (the wheel retracts it then)
                                if let Some((ct, _, _)) = current.remove(&series) {
                                    let old_expiry = (ct.max(0) as u64).saturating_add(lookback);
                                    if start < old_expiry {
                                        if let Some((okey, ov)) = live.remove(&(series, ct)) {
                                            let c = cap.delayed(&start, 0);
                                            output.session(&c).give((
                                                (okey, series, Value(ov)),
                                                start,
                                                -1isize,
                                            ));
                                        }
                                    }
                                }
                                if is_stale_nan(v) || expiry <= start {
                                    continue;
                                }
                                current.insert(series, (t, v, key));
                                live.insert((series, t), (key, v));
                                let c = cap.delayed(&start, 0);
                                output.session(&c).give(((key, series, Value(v)), start, 1isize));
                                wheel
                                    .entry(expiry)
                                    .or_insert_with(|| (cap.delayed(&expiry, 0), Vec::new()))
                                    .1
                                    .push((series, t));
                            }
                        }
                    });
                    // retract the samples whose lookback ran out before the frontier
                    while let Some((&at, _)) = wheel.iter().next() {
                        if frontier.less_equal(&at) {
                            break;
                        }
                        let Some((c, due)) = wheel.remove(&at) else { break };
                        let mut session = output.session(&c);
                        for (series, t) in due {
                            if let Some((key, v)) = live.remove(&(series, t)) {
                                session.give(((key, series, Value(v)), at, -1isize));
                                if current.get(&series).is_some_and(|&(ct, _, _)| ct == t) {
                                    current.remove(&series);
                                }
                            }
                        }
                    }
                }
            })
            .container::<Vec<_>>()
            .as_collection();
        let c = Arc::clone(&counters);
        let latest = latest.inspect_batch(move |_, xs| {
            c.latest.fetch_add(xs.len() as u64, Ordering::Relaxed);
        });
        let arranged = match kind {
            None => {
                latest.map(|(series_key, _series, v): (u64, u64, Value)| (series_key, v)).arrange_by_key()
            }
            Some(k) => latest
                .map(|(group, _series, v): (u64, u64, Value)| (group, v))
                .reduce(move |_group, vals: &[(&Value, isize)], out: &mut Vec<(Value, isize)>| {
                    let n: isize = vals.iter().map(|(_, m)| *m).sum();
                    if n <= 0 {
                        return;
                    }
                    let v = match k {
                        AggKind::Count => n as f64,
                        AggKind::Sum => vals.iter().map(|(v, m)| v.0 * *m as f64).sum(),
                    };
                    out.push((Value(v), 1));
                })
                .inspect_batch(move |_, xs| {
                    counters.aggregate.fetch_add(xs.len() as u64, Ordering::Relaxed);
                })
                .arrange_by_key(),
        };
        arranged.stream.probe_with(&probe);
        arranged.trace
    });
    input.advance_to(time);
    WorkerView { input, probe, trace }
}
