//! The hub: many views as data in one operator.
//!
//! A view rendered as a differential dataflow of its own costs every worker a round of
//! progress tracking at each clock move, and every change it makes goes through
//! arrangements (`docs/dataflow.md`, "where a round of the subscribe benchmark goes"). For
//! a thousand clients' standing queries over ten thousand series that fixed cost is most of
//! a round. The common shapes of a dashboard's query — a selection or a window function of
//! one, arithmetic and comparisons with constants, value functions, and aggregations with
//! constant parameters over those — need neither joins nor retractions through
//! arrangements, so the hub keeps them as data in a single operator on the first worker:
//!
//! * a **leaf** (a selection or window function) is the per-series operator's logic
//!   ([`SeriesOp`]), fed the samples of its selection, its output a map from series to value;
//! * an **upper node** (elementwise function, aggregation) turns its input's changes into its
//!   own; an aggregation keeps each group's members and output, and recomputes a group that a
//!   change touches with the batch executor's kernels;
//! * no node keeps a copy of its content: a new subscription's first message, or a new node
//!   over an existing input, computes it from the leaves' values (a leaf's per-series state
//!   holds the value it last emitted) and the aggregations' outputs. A round then costs no
//!   map updates for contents that nobody reads;
//! * nodes are shared between views by plan, as arrangements are, and live while a view uses
//!   them.
//!
//! On a cluster's computation every process's first worker has a hub. A view's nodes are
//! built in the hub of one process, its *home*: the process its subscribers are on. Every
//! process knows every leaf's home, and its first worker sends the samples of a leaf's
//! selection that it appends, and the history it stores, to the home's hub through the
//! hub's exchange; ticks go to every process's hub. A view's home therefore sees every
//! series of the cluster, and a round costs one dataflow's progress tracking however many
//! views the hubs hold. Each process installs a view when it takes its entry of the log,
//! so another process's rows for a leaf may reach the home before the home has built it:
//! they wait there until it has. After dropping a leaf, each process sends its home a
//! fence down the same channel as its rows; rows for a dropped leaf are let go, and once
//! every process's fence has come, none can follow and the leaf is forgotten.
//!
//! Events are processed time by time once the clock has passed them, exactly when the
//! per-series operator would process them, so a hub view changes at the same times and to
//! the same values as the dataflow view of the same plan; subscriptions receive each time's
//! changes as a tap sends them. Plans the hub does not hold (joins, subqueries, `@`,
//! changing scalars, …) are views of their own in the dataflow, which is also where rules'
//! views stay (they are read at times; the hub only streams).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::Operator as _;
use timely::dataflow::operators::Input;
use timely::dataflow::InputHandle;

use super::exchange::KeyExchange;
use super::keys::{IdSet, Key, KeyMap, Keys};
use super::render::without_name;
use super::series::SeriesOp;
use super::tap::Subscriber;
use super::values::{self, Value};
use super::{Counters, Operator, Row, Shard};
use crate::lower::hub::HubNode;
use promflow_plan::semantics::grouping_key;
use promflow_plan::{AggOp, BinOp, Grouping, MapFn};

/// What the hub's input carries, each item for the hub on worker `to` (the first worker of
/// a process): samples for a leaf, or a tick of the clock.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum HubItem {
    /// Samples of `leaf`'s selection, as the controller sent them: one item per batch, not
    /// one per sample, so the leaf is looked up once.
    Rows { to: u64, leaf: usize, rows: Arc<Vec<Row>> },
    /// The clock ticked at the message's time.
    Tick { to: u64 },
    /// The sending process has dropped `leaves`: no rows for them follow from it.
    Dropped { to: u64, leaves: Vec<usize> },
}

impl HubItem {
    /// The worker whose hub takes the item.
    fn to(&self) -> u64 {
        match self {
            HubItem::Rows { to, .. } | HubItem::Tick { to } | HubItem::Dropped { to, .. } => *to,
        }
    }
}

/// The hub's input handle on a worker.
pub(crate) type HubInput = InputHandle<u64, CapacityContainerBuilder<Vec<HubItem>>>;

// ---- the operator (the first worker) ----

/// One element's change at a time: its key, old value and new value (`None`: absent).
type Change = (Key, Option<Value>, Option<Value>);

/// A built node: how it computes.
struct NodeState {
    kind: NodeKind,
    /// For an elementwise node that drops the metric name: each input key's output key.
    names: KeyMap<Key, Key>,
}

enum NodeKind {
    Leaf {
        op: SeriesOp,
        offset: i64,
    },
    Map {
        input: usize,
        func: MapFn,
        args: Vec<f64>,
    },
    ScalarOp {
        input: usize,
        op: BinOp,
        scalar: f64,
        scalar_left: bool,
        return_bool: bool,
    },
    Aggregate {
        input: usize,
        op: AggOp,
        grouping: Grouping,
        param: f64,
        /// Each input element's group.
        group_of: KeyMap<Key, Key>,
        /// Each group's members and their values.
        members: KeyMap<Key, KeyMap<Key, Value>>,
        /// Each group's output elements.
        output: KeyMap<Key, Vec<(Key, Value)>>,
    },
}

impl NodeKind {
    fn input(&self) -> Option<usize> {
        match self {
            NodeKind::Leaf { .. } => None,
            NodeKind::Map { input, .. }
            | NodeKind::ScalarOp { input, .. }
            | NodeKind::Aggregate { input, .. } => Some(*input),
        }
    }

    /// An elementwise node's value of an input element's value (`None`: filtered out).
    fn value(&self, v: Value) -> Option<Value> {
        match self {
            NodeKind::Map { func, args, .. } => values::map(*func, &v, args),
            &NodeKind::ScalarOp { op, scalar, scalar_left, return_bool, .. } => {
                values::with_scalar(op, v, scalar, scalar_left, return_bool)
            }
            NodeKind::Leaf { .. } | NodeKind::Aggregate { .. } => Some(v),
        }
    }

    /// Whether an elementwise node drops the metric name.
    fn drops_name(&self) -> bool {
        match self {
            NodeKind::Map { .. } => true,
            NodeKind::ScalarOp { op, return_bool, .. } => {
                !(op.is_comparison() || op.is_trim()) || *return_bool
            }
            NodeKind::Leaf { .. } | NodeKind::Aggregate { .. } => false,
        }
    }
}

/// The hub on a worker: its nodes by id (inputs before their readers), and the
/// subscriptions to each.
pub(crate) struct Hub {
    /// This worker's index in the computation.
    here: u64,
    /// The nodes whose home is this worker.
    nodes: BTreeMap<usize, NodeState>,
    /// The home (a worker's index) of every leaf in any process's hub.
    homes: HashMap<usize, u64>,
    /// How many processes the computation has: the fences a dropped leaf waits for.
    processes: usize,
    /// The input's frontier at the operator's last run: rows that waited for their leaf
    /// count from it.
    complete: u64,
    /// Rows that came for leaves of this hub not built yet, by leaf.
    waiting: HashMap<usize, Vec<Arc<Vec<Row>>>>,
    /// Leaves of this hub dropped, whose rows from some process may still come.
    dropped: HashSet<usize>,
    /// Fences received, by leaf (until every process's has come and the leaf is dropped).
    fences: HashMap<usize, usize>,
    subscribers: HashMap<usize, Vec<Subscriber>>,
    /// Each subscription's node, by the subscription's id.
    subscribed: HashMap<u64, usize>,
    keys: Keys,
    counters: Arc<Counters>,
}

/// The hub shared between its operator and the worker's command loop.
pub(crate) type SharedHub = Rc<RefCell<Hub>>;

impl Hub {
    /// Builds the hub's operator in a dataflow of its own on `worker`; returns the hub and
    /// its input, whose items go to the hub they name.
    pub(crate) fn build(
        worker: &mut timely::worker::Worker,
        width: usize,
        keys: Keys,
        counters: Arc<Counters>,
    ) -> (SharedHub, HubInput) {
        let hub: SharedHub = Rc::new(RefCell::new(Hub {
            here: worker.index() as u64,
            nodes: BTreeMap::new(),
            homes: HashMap::new(),
            processes: worker.peers() / width.max(1),
            complete: 0,
            waiting: HashMap::new(),
            dropped: HashSet::new(),
            fences: HashMap::new(),
            subscribers: HashMap::new(),
            subscribed: HashMap::new(),
            keys,
            counters,
        }));
        let mut input = HubInput::new();
        let inner = Rc::clone(&hub);
        worker.dataflow::<u64, _, _>(|scope| {
            let route = KeyExchange::new(|item: &HubItem| item.to());
            scope.input_from(&mut input).sink(route, "Hub", move |(items, frontier)| {
                let complete = frontier.frontier().iter().min().copied().unwrap_or(u64::MAX);
                let mut hub = inner.borrow_mut();
                hub.complete = complete;
                items.for_each_stamp(|cap, data| {
                    let Some(&now) = cap.least() else { return };
                    for item in data.flat_map(|batch| batch.drain(..)) {
                        hub.push(now, complete, item);
                    }
                });
                hub.run(complete);
            });
        });
        (hub, input)
    }

    /// The home of `leaf`, when it is a leaf of a hub: where its samples go.
    pub(crate) fn home_of(&self, leaf: usize) -> Option<u64> {
        self.homes.get(&leaf).copied()
    }

    /// Takes new nodes of the hub on worker `home`: their leaves' home is remembered, and
    /// when that is this worker, the nodes are built, each upper node from its input's
    /// content.
    pub(crate) fn install(&mut self, home: u64, nodes: Vec<(usize, HubNode)>) {
        for (id, node) in &nodes {
            if let HubNode::Leaf { .. } = node {
                self.homes.insert(*id, home);
            }
        }
        if home != self.here {
            return;
        }
        for (id, node) in nodes {
            let kind = match node {
                HubNode::Leaf { func, keep, offset } => {
                    let op =
                        SeriesOp::new(func, keep, None, None, self.keys.clone(), Arc::clone(&self.counters));
                    NodeKind::Leaf { op, offset }
                }
                HubNode::Map { input, func, args } => NodeKind::Map { input, func, args },
                HubNode::ScalarOp { input, op, scalar, scalar_left, return_bool } => {
                    NodeKind::ScalarOp { input, op, scalar, scalar_left, return_bool }
                }
                HubNode::Aggregate { input, op, grouping, param } => NodeKind::Aggregate {
                    input,
                    op,
                    grouping,
                    param,
                    group_of: KeyMap::default(),
                    members: KeyMap::default(),
                    output: KeyMap::default(),
                },
            };
            let mut state = NodeState { kind, names: KeyMap::default() };
            if let Some(input) = state.kind.input() {
                let start: Vec<Change> = content(&self.nodes, &self.keys, input)
                    .into_iter()
                    .map(|(k, v)| (k, None, Some(v)))
                    .collect();
                state.apply(&start, &self.keys, &self.counters);
            }
            self.nodes.insert(id, state);
            // rows another process sent before this one built the leaf count from now
            for rows in self.waiting.remove(&id).unwrap_or_default() {
                let (now, to) = (self.complete, self.here);
                self.push(now, now, HubItem::Rows { to, leaf: id, rows });
            }
        }
    }

    /// Drops nodes, and the subscriptions to them; returns the fences this process sends
    /// the homes of the leaves among them ([`HubItem::Dropped`]), by home.
    pub(crate) fn drop_nodes(&mut self, ids: &[usize]) -> BTreeMap<u64, Vec<usize>> {
        let mut fences: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for id in ids {
            let built = self.nodes.remove(id).is_some();
            if let Some(home) = self.homes.remove(id) {
                fences.entry(home).or_default().push(*id);
                // at its home, rows may still come from the processes that have not fenced it
                if built && !self.all_fenced(*id) {
                    self.dropped.insert(*id);
                }
            }
            for s in self.subscribers.remove(id).unwrap_or_default() {
                self.subscribed.remove(&s.id);
            }
        }
        fences
    }

    /// Whether every process's fence for `leaf` has come (the count is then forgotten).
    fn all_fenced(&mut self, leaf: usize) -> bool {
        let all = self.fences.get(&leaf).is_some_and(|&n| n >= self.processes);
        if all {
            self.fences.remove(&leaf);
        }
        all
    }

    /// Registers a subscription to node `node`.
    pub(crate) fn subscribe(&mut self, node: usize, subscriber: Subscriber) {
        if self.nodes.contains_key(&node) {
            self.subscribed.insert(subscriber.id, node);
            self.subscribers.entry(node).or_default().push(subscriber);
        }
    }

    /// Ends a subscription, if it is the hub's.
    pub(crate) fn unsubscribe(&mut self, id: u64) {
        if let Some(node) = self.subscribed.remove(&id) {
            if let Some(subs) = self.subscribers.get_mut(&node) {
                subs.retain(|s| s.id != id);
            }
        }
    }

    /// Takes an input item that arrived at `now`, with the input complete before `complete`.
    fn push(&mut self, now: u64, complete: u64, item: HubItem) {
        match item {
            HubItem::Rows { leaf, rows, .. } => match self.nodes.get_mut(&leaf) {
                Some(NodeState { kind: NodeKind::Leaf { op, offset }, .. }) => {
                    for (s, t, v) in rows.iter() {
                        let straight = op.straight(complete);
                        op.push_sample(now, straight, (*s, t.saturating_add(*offset), v.clone()));
                    }
                }
                Some(_) => {}
                // sent before the process that sent it dropped the leaf
                None if self.dropped.contains(&leaf) => {}
                // sent by a process that installed the leaf before this one did
                None => self.waiting.entry(leaf).or_default().push(rows),
            },
            HubItem::Dropped { leaves, .. } => {
                for leaf in leaves {
                    *self.fences.entry(leaf).or_default() += 1;
                    if self.dropped.contains(&leaf) && self.all_fenced(leaf) {
                        self.dropped.remove(&leaf);
                    }
                }
            }
            HubItem::Tick { .. } => {
                for node in self.nodes.values_mut() {
                    match &mut node.kind {
                        NodeKind::Leaf { op, .. } if op.takes_ticks() => drop(op.push_tick(now, &None)),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Processes every time before `complete` that events are due at, in time order, and
    /// hands each subscription its start and changes.
    fn run(&mut self, complete: u64) {
        let mut woken = IdSet::default();
        // the first time due at or after `complete`, which the clock is told of
        let next = loop {
            let next = self.next_due();
            let Some(at) = next.filter(|&at| at < complete) else { break next };
            // subscriptions that start before `at` see the content before its changes
            self.start(at, &mut woken);
            let changes = self.run_at(at);
            for (node, subs) in &self.subscribers {
                let Some(changed) = changes.get(node).filter(|c| !c.is_empty()) else { continue };
                let shard: Shard = changed
                    .iter()
                    .flat_map(|(k, old, new)| {
                        let k = *k;
                        old.clone()
                            .map(|v| (k, v, -1isize))
                            .into_iter()
                            .chain(new.clone().map(|v| (k, v, 1isize)))
                    })
                    .collect();
                for s in subs.iter().filter(|s| s.started() && s.from() < at) {
                    if s.send(at, shard.clone()) {
                        woken.insert(s.id);
                    }
                }
            }
        };
        self.start(complete, &mut woken);
        let all = self.subscribers.values().flatten();
        Subscriber::wake_all(all.filter(|s| s.progress(complete) || woken.contains(&s.id)));
        self.counters.hub_next_event.store(next.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The first time events are due at in any leaf.
    fn next_due(&self) -> Option<u64> {
        let leaves = self.nodes.values().filter_map(|n| match &n.kind {
            NodeKind::Leaf { op, .. } => op.first_due(),
            _ => None,
        });
        leaves.min()
    }

    /// Sends the subscriptions that start before `before` their first message: their node's
    /// content.
    fn start(&mut self, before: u64, woken: &mut IdSet) {
        let (nodes, keys) = (&self.nodes, &self.keys);
        for (node, subs) in self.subscribers.iter_mut() {
            for s in subs.iter_mut().filter(|s| !s.started() && s.from() < before) {
                if s.start(|| content(nodes, keys, *node).into_iter().map(|(k, v)| (k, v, 1)).collect()) {
                    woken.insert(s.id);
                }
            }
        }
    }

    /// Runs the leaves' events due at `at` and carries their changes up through the nodes;
    /// returns each node's changes.
    fn run_at(&mut self, at: u64) -> KeyMap<usize, Vec<Change>> {
        let mut changes: KeyMap<usize, Vec<Change>> = KeyMap::default();
        let ids: Vec<usize> = self.nodes.keys().copied().collect();
        for id in ids {
            let Some(mut state) = self.nodes.remove(&id) else { continue };
            let out = match &mut state.kind {
                NodeKind::Leaf { op, .. } => {
                    let mut out = Vec::new();
                    if op.first_due() == Some(at) {
                        op.run_first(|k, old, new| out.push((k, old.cloned(), new.cloned())));
                    }
                    out
                }
                kind => match kind.input().and_then(|i| changes.get(&i)) {
                    Some(input) if !input.is_empty() => state.apply(input, &self.keys, &self.counters),
                    _ => Vec::new(),
                },
            };
            if !out.is_empty() {
                changes.insert(id, out);
            }
            self.nodes.insert(id, state);
        }
        changes
    }
}

/// Node `id`'s elements now: its leaves' values carried up through it.
fn content(nodes: &BTreeMap<usize, NodeState>, keys: &Keys, id: usize) -> Vec<(Key, Value)> {
    let Some(node) = nodes.get(&id) else { return Vec::new() };
    match &node.kind {
        NodeKind::Leaf { op, .. } => op.values(),
        NodeKind::Aggregate { output, .. } => output.values().flatten().cloned().collect(),
        kind @ (NodeKind::Map { input, .. } | NodeKind::ScalarOp { input, .. }) => {
            let drops_name = kind.drops_name();
            let key = |k: Key| match node.names.get(&k) {
                Some(renamed) => *renamed,
                None if drops_name => keys.intern(without_name(keys.labels(k))),
                None => k,
            };
            let input = content(nodes, keys, *input);
            input.into_iter().filter_map(|(k, v)| Some((key(k), kind.value(v)?))).collect()
        }
    }
}

impl NodeState {
    /// Applies its input's changes; returns its own.
    fn apply(&mut self, input: &[Change], keys: &Keys, counters: &Counters) -> Vec<Change> {
        let mut out: Vec<Change> = Vec::new();
        let drops_name = self.kind.drops_name();
        match &mut self.kind {
            NodeKind::Leaf { .. } => return out,
            kind @ (NodeKind::Map { .. } | NodeKind::ScalarOp { .. }) => {
                let value = |v: &Option<Value>| kind.value(v.clone()?);
                for (k, old, new) in input {
                    let k = if drops_name { keys.rewrite(&mut self.names, *k, without_name) } else { *k };
                    out.push((k, value(old), value(new)));
                }
                counters.count(Operator::Elementwise, input.len());
            }
            NodeKind::Aggregate { op, grouping, param, group_of, members, output, .. } => {
                let mut dirty: Vec<Key> = Vec::new();
                for (k, _, new) in input {
                    let g = keys.rewrite(group_of, *k, |l| grouping_key(&l, grouping));
                    let group = members.entry(g).or_default();
                    match new {
                        Some(v) => group.insert(*k, v.clone()),
                        None => group.remove(k),
                    };
                    dirty.push(g);
                }
                dirty.sort_unstable();
                dirty.dedup();
                for g in dirty {
                    let now = match members.get(&g) {
                        Some(m) if !m.is_empty() => aggregate(*op, *param, g, m, keys),
                        _ => Vec::new(),
                    };
                    if members.get(&g).is_some_and(|m| m.is_empty()) {
                        members.remove(&g);
                    }
                    let before =
                        if now.is_empty() { output.remove(&g) } else { output.insert(g, now.clone()) };
                    let before = before.unwrap_or_default();
                    for (k, v) in &before {
                        let new = now.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                        out.push((*k, Some(v.clone()), new));
                    }
                    for (k, v) in &now {
                        if !before.iter().any(|(b, _)| b == k) {
                            out.push((*k, None, Some(v.clone())));
                        }
                    }
                }
                counters.count(Operator::Aggregate, out.len());
            }
        }
        // what did not change is not a change
        out.retain(|(_, old, new)| old != new);
        out
    }
}

/// A group's output elements: one keyed by the group for the aggregations of values, the
/// chosen members for `topk`, `bottomk` and `limitk`, chosen as the batch executor chooses.
fn aggregate(
    op: AggOp,
    param: f64,
    group: Key,
    members: &KeyMap<Key, Value>,
    keys: &Keys,
) -> Vec<(Key, Value)> {
    match op {
        AggOp::Topk | AggOp::Bottomk | AggOp::Limitk => {
            values::choose(op, param, members.iter().map(|(s, v)| (keys.labels(*s), *s, v.clone())))
        }
        _ => {
            // in value order, as the dataflow's reduce sees them: the same sum, bit for bit
            // (values equal under `total_cmp` have the same bits, so an unstable sort will do)
            let mut xs: Vec<&Value> = members.values().collect();
            xs.sort_unstable();
            values::aggregate(op, &xs, param).map(|v| (group, v)).into_iter().collect()
        }
    }
}
