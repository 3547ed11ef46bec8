//! Live result streams: `GET /api/v1/subscribe` upgrades to a websocket on which a client
//! subscribes to queries and receives each result, then its changes as they happen, without
//! polling. The messages are documented in docs/api.md.
//!
//! A subscription is a watch on a view in the rules' dataflow
//! ([`promflow_incremental::live::LiveViews::subscribe`]): it starts from history and shares
//! what the rules' views and other subscriptions arrange. The dataflow's watch thread hands
//! each change to the connection through a bounded queue; the connection's task turns it
//! into JSON and writes it. A query the dataflow does not maintain (yet) is evaluated in batch
//! every `--subscribe.batch-interval` instead, and its result diffed. A consumer that lets the
//! queue fill, or takes longer than [`SEND_TIMEOUT`] to take one message, is told and
//! disconnected: nothing is buffered without bound.
//!
//! In a cluster with a dataflow computation, a subscription's view is on the computation
//! ([`LiveViews::subscribe_everywhere`]: every node installs it) while the computation is
//! formed, and evaluated in batch while it is not; the connection looks every second whether
//! the computation under a subscription failed or formed, and switches. It keeps such a
//! subscription's result as the client has it, so that a new source's first message, its
//! whole result, reaches the client as the change from what it has.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::SinkExt;
use promflow_incremental::live::{LiveViews, ViewChange, WatchFn};
use promflow_incremental::{Operand, Value as ViewValue};
use promflow_plan::format::{format_timestamp, write_value};
use promflow_plan::{Plan, QueryOptions, QueryResult};
use promflow_rules::ElementChange;
use promflow_storage::Labels;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::api::write_labels;
use crate::AppState;

/// Changes queued for one connection before its consumer counts as slow.
const QUEUE: usize = 1024;

/// How long writing one message may take before the consumer counts as slow.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many queued messages go out in one write.
const WRITE_BATCH: usize = 256;

/// How often the server says it is alive on an otherwise quiet connection.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// How often a connection looks whether the cluster's computation under its subscriptions
/// failed or formed ([`Connection::follow_computation`]).
const FOLLOW_COMPUTATION: Duration = Duration::from_secs(1);

/// The close code for a consumer disconnected for being slow (RFC 6455: policy violation).
const CLOSE_SLOW: u16 = 1008;

/// What subscriptions may hold: how many, and how many samples their queries read.
#[derive(Clone, Copy, Debug)]
pub struct SubscriptionLimits {
    /// `--subscribe.max-per-connection`.
    pub per_connection: usize,
    /// `--subscribe.max-total`.
    pub total: usize,
    /// `--subscribe.max-samples-per-connection`.
    pub samples_per_connection: usize,
    /// `--subscribe.max-samples-total`.
    pub samples_total: usize,
}

/// The limits on subscriptions, and what is subscribed now.
pub struct Subscriptions {
    /// The sample budgets, per connection and in total.
    pub limits: SubscriptionLimits,
    /// Samples the live subscriptions' queries read when subscribed, over every connection
    /// (`promflow_subscription_samples`): what their views hold, within `limits`.
    pub samples: AtomicUsize,
    /// Live subscriptions over every connection (`promflow_subscriptions`).
    pub live: AtomicUsize,
    /// Connections closed because their consumer was slow
    /// (`promflow_subscription_slow_consumers_total`).
    pub slow_consumers: AtomicU64,
    /// `--subscribe.batch-interval`: how often a query the dataflow does not maintain is
    /// evaluated in batch for its subscriptions.
    pub batch_interval: Duration,
}

impl Subscriptions {
    /// No subscription yet, within these limits; queries the dataflow does not maintain are
    /// evaluated every `batch_interval`.
    pub fn new(limits: SubscriptionLimits, batch_interval: Duration) -> Self {
        Subscriptions {
            limits,
            samples: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            slow_consumers: AtomicU64::new(0),
            batch_interval,
        }
    }

    /// Takes a place among `limits.total`; false when there is none left.
    fn take_place(&self) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limits.total).then_some(n + 1))
            .is_ok()
    }

    fn free_place(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// Takes `n` samples of the total budget; false when they do not fit.
    fn reserve_samples(&self, n: usize) -> bool {
        self.samples
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|&h| h <= self.limits.samples_total)
            })
            .is_ok()
    }

    fn release_samples(&self, n: usize) {
        self.samples.fetch_sub(n, Ordering::AcqRel);
    }
}

/// `GET /api/v1/subscribe`.
pub(crate) async fn subscribe(State(state): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| Connection::new(state).run(socket))
}

/// What a subscription's source says, by the subscription's number on its connection and the
/// source's number: a subscription on a cluster's computation changes sources as the
/// computation fails and forms again, and what the source before said last is left out.
enum Event {
    /// Its result changed at a time (the first: its whole result).
    Change(u64, u64, i64, ViewChange),
    /// A batch evaluation failed (the subscription goes on).
    Failed(u64, u64, String),
}

/// A view installed (or not) in the background: (subscription, the source's number, its
/// watch or why not, the samples reserved for it in the total budget).
type Installed = (u64, u64, Result<Watched, Refusal>, usize);

/// A watch on a view, with the views it is on: one server's, or a cluster's computation's,
/// which changes as the computation forms again.
struct Watched {
    views: Arc<LiveViews>,
    id: u64,
}

/// Why a subscription has no view.
enum Refusal {
    /// The dataflow does not maintain the query (or is off): it is evaluated in batch.
    NotMaintained,
    /// The cluster's computation is not formed, or did not install the view in time: the
    /// query is evaluated in batch until it does.
    NoComputation,
    /// Installing the view failed.
    Failed(String),
    /// The query reads more samples than the budgets leave.
    Limit(String),
}

/// Where a subscription's changes come from.
enum Source {
    /// Its view is being installed.
    Installing,
    /// A watch on its view.
    View(Watched),
    /// Evaluations in batch on a timer, diffed: the dataflow does not maintain the query.
    Batch(tokio::task::AbortHandle),
}

/// Why a connection ends.
enum End {
    /// The client closed it, or the socket failed.
    Closed,
    /// The consumer fell behind.
    Slow(&'static str),
}

/// One subscription on a connection.
struct Sub {
    /// The client's id for it, as the client sent it.
    id: Value,
    source: Source,
    /// The number of its source now: events of other sources are left out.
    current: u64,
    /// Its query, for evaluations in batch when it has no view.
    plan: Plan,
    /// A PromQL query's text, which a cluster's nodes compile to evaluate its aggregations
    /// in parts when it is evaluated in batch.
    promql: Option<String>,
    /// The query as the nodes of a cluster's computation compile it ([`shared_query`]).
    shared: String,
    /// Ended by the client while its view was being installed.
    cancelled: bool,
    /// Samples its query read when subscribed, held in the budgets while it lives.
    samples: usize,
    /// On a cluster's computation, the result as the client has it, once it has its snapshot:
    /// a new source's first message (its whole result) is sent as the change from it.
    result: Option<HashMap<Arc<Labels>, ViewValue>>,
    /// On a cluster, whether it is evaluated in batch only until the computation installs
    /// its view: the computation was not formed, or failed under it.
    awaits_view: bool,
    /// The source being installed on the cluster's computation meanwhile: its view.
    moving: Option<u64>,
}

struct Connection {
    state: Arc<AppState>,
    /// Subscriptions by their number on this connection.
    subs: HashMap<u64, Sub>,
    /// Samples this connection's subscriptions hold (their `samples`).
    samples: usize,
    next: u64,
    /// The number of the next source of a subscription.
    next_source: u64,
    events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    /// Views installed (or not) in the background.
    installed: (mpsc::UnboundedSender<Installed>, mpsc::UnboundedReceiver<Installed>),
    /// Woken when a change found the queue full.
    overflow: Arc<Notify>,
}

impl Connection {
    fn new(state: Arc<AppState>) -> Self {
        Connection {
            state,
            subs: HashMap::new(),
            samples: 0,
            next: 0,
            next_source: 0,
            events: mpsc::channel(QUEUE),
            installed: mpsc::unbounded_channel(),
            overflow: Arc::new(Notify::new()),
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        let mut follow = tokio::time::interval(FOLLOW_COMPUTATION);
        follow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let end = loop {
            let step = tokio::select! {
                message = socket.recv() => match message {
                    Some(Ok(Message::Text(text))) => {
                        let replies = self.request(text.as_str());
                        send_all(&mut socket, replies).await
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let reply = error_message(&Value::Null, "bad_data", "messages are JSON text");
                        send_all(&mut socket, vec![reply]).await
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Err(End::Closed),
                    Some(Ok(_)) => Ok(()),
                },
                Some(event) = self.events.1.recv() => {
                    // what else is queued goes out in the same write: a clock move changes
                    // many of a connection's subscriptions at once
                    let mut messages = Vec::new();
                    let mut next = Some(event);
                    while let Some(event) = next {
                        messages.extend(self.on_event(event));
                        next = if messages.len() < WRITE_BATCH { self.events.1.try_recv().ok() } else { None };
                    }
                    send_all(&mut socket, messages).await
                }
                Some((n, source, result, samples)) = self.installed.1.recv() => {
                    let reply = self.on_installed(n, source, result, samples);
                    send_all(&mut socket, reply.into_iter().collect()).await
                }
                _ = follow.tick(), if self.state.dataflow.is_some() => {
                    self.follow_computation();
                    Ok(())
                }
                _ = self.overflow.notified() => Err(End::Slow("more changes queued than the connection takes")),
                _ = heartbeat.tick() => {
                    let beat = json!({"type": "heartbeat", "time": now_seconds()}).to_string();
                    send_all(&mut socket, vec![beat]).await
                }
            };
            if let Err(end) = step {
                break end;
            }
        };
        if let End::Slow(why) = end {
            self.state.subscriptions.slow_consumers.fetch_add(1, Ordering::Relaxed);
            tracing::info!(why, "disconnecting a slow subscriber");
            let told = error_message(&Value::Null, "slow_consumer", why);
            let close = async {
                socket.send(Message::Text(told.into())).await?;
                let frame = CloseFrame { code: CLOSE_SLOW, reason: "slow consumer".into() };
                socket.send(Message::Close(Some(frame))).await
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
        }
        self.close();
    }

    /// The message for a subscription's event, if it says anything.
    fn on_event(&mut self, event: Event) -> Option<String> {
        match event {
            Event::Change(n, source, t, change) => self.change(n, source, t, change),
            Event::Failed(n, source, why) => {
                let sub = self.subs.get(&n).filter(|s| s.current == source)?;
                Some(error_message(&sub.id, "execution", &why))
            }
        }
    }

    /// Handles a client's message; returns the replies.
    fn request(&mut self, text: &str) -> Vec<String> {
        let request: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => return vec![error_message(&Value::Null, "bad_data", "a message must be a JSON object")],
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        if !(id.is_string() || id.is_number()) {
            return vec![error_message(&id, "bad_data", "\"id\" must be a string or a number")];
        }
        if request.get("unsubscribe").and_then(Value::as_bool) == Some(true) {
            return self.unsubscribe(&id);
        }
        let Some(query) = request.get("query").and_then(Value::as_str) else {
            return vec![error_message(&id, "bad_data", "\"query\" must be a string")];
        };
        let sql = match request.get("lang").map(|l| l.as_str()) {
            None | Some(Some("promql")) => false,
            Some(Some("sql")) => true,
            Some(_) => return vec![error_message(&id, "bad_data", "\"lang\" must be \"promql\" or \"sql\"")],
        };
        if self.subs.values().any(|s| s.id == id) {
            return vec![error_message(
                &id,
                "bad_data",
                "this connection already has a subscription with this id",
            )];
        }
        if self.subs.len() >= self.state.subscriptions.limits.per_connection {
            let why = format!(
                "at most {} subscriptions per connection (--subscribe.max-per-connection)",
                self.state.subscriptions.limits.per_connection
            );
            return vec![error_message(&id, "limit", &why)];
        }
        // a SQL subscription is its standing query's plan: one element per group
        let compiled = if sql {
            promflow_sql::standing(query).map_err(|e| ("bad_data", e.to_string()))
        } else {
            promflow_promql::compile(query, &self.state.query.compile).map_err(|e| match e {
                promflow_promql::Error::Parse(m) => ("bad_data", m),
                e => ("execution", e.to_string()),
            })
        };
        let plan = match compiled {
            Ok(p) => p,
            Err((kind, why)) => return vec![error_message(&id, kind, &why)],
        };
        if plan.kind() != promflow_plan::ValueKind::Instant {
            let why = "a subscription's query must return an instant vector";
            return vec![error_message(&id, "bad_data", why)];
        }
        if !self.state.subscriptions.take_place() {
            let why = format!(
                "the server holds its limit of {} subscriptions (--subscribe.max-total)",
                self.state.subscriptions.limits.total
            );
            return vec![error_message(&id, "limit", &why)];
        }
        let n = self.next;
        self.next += 1;
        let source = self.new_source();
        let shared = shared_query(query, sql, &self.state.query.compile);
        let sub = Sub {
            id,
            source: Source::Installing,
            current: source,
            plan: plan.clone(),
            promql: (!sql).then(|| query.to_string()),
            shared: shared.clone(),
            cancelled: false,
            samples: 0,
            result: None,
            awaits_view: false,
            moving: None,
        };
        self.subs.insert(n, sub);
        let limits = self.state.subscriptions.limits;
        let budget =
            self.state.query.max_samples.min(limits.samples_per_connection.saturating_sub(self.samples)).min(
                limits.samples_total.saturating_sub(self.state.subscriptions.samples.load(Ordering::Acquire)),
            );
        // installing a view reads its history: off the connection's task
        let (state, handler) = (Arc::clone(&self.state), changes_to(self.queue(), n, source));
        let done = self.installed.0.clone();
        tokio::task::spawn_blocking(move || {
            let samples = match samples_read(&state, &plan, budget) {
                Ok(read) if state.subscriptions.reserve_samples(read) => read,
                Ok(read) => {
                    let why = format!(
                        "the query reads {read} samples, more than the server's subscriptions have left \
                         (--subscribe.max-samples-total)"
                    );
                    let _ = done.send((n, source, Err(Refusal::Limit(why)), 0));
                    return;
                }
                Err(why) => {
                    let _ = done.send((n, source, Err(Refusal::Limit(why)), 0));
                    return;
                }
            };
            let result = match (state.live.as_ref(), &state.dataflow) {
                (Some(views), _) => views
                    .subscribe(&plan, handler)
                    .map(|id| Watched { views: Arc::clone(views), id })
                    .map_err(|e| match e {
                        promflow_plan::Error::Unsupported(_) => Refusal::NotMaintained,
                        e => Refusal::Failed(e.to_string()),
                    }),
                (None, Some(formation)) => match formation.current() {
                    Some(views) => watch_everywhere(views, &plan, &shared, handler),
                    None => Err(Refusal::NoComputation),
                },
                (None, None) => Err(Refusal::NotMaintained),
            };
            let _ = done.send((n, source, result, samples));
        });
        Vec::new()
    }

    /// A new number for a subscription's source.
    fn new_source(&mut self) -> u64 {
        self.next_source += 1;
        self.next_source
    }

    /// On a cluster's computation, every second: a subscription whose view the computation
    /// lost (it failed, a node is gone) is evaluated in batch from now on, and one evaluated in
    /// batch for want of the computation gets its view installed once the computation is
    /// formed. The client sees the change of source as one more change of the result.
    fn follow_computation(&mut self) {
        let formed = self.state.dataflow.as_ref().and_then(|f| f.current()).filter(|v| !v.lost());
        let (mut lost, mut to_move) = (Vec::new(), Vec::new());
        for (n, sub) in &self.subs {
            match &sub.source {
                Source::View(w) if formed.as_ref().is_none_or(|f| !Arc::ptr_eq(f, &w.views)) => lost.push(*n),
                Source::Batch(_) if sub.awaits_view && sub.moving.is_none() && formed.is_some() => {
                    to_move.push(*n)
                }
                _ => {}
            }
        }
        let mut ended = Vec::new();
        for n in lost {
            if let Some(Source::View(w)) = self.switch_to_batch(n) {
                ended.push(w);
            }
            if let Some(sub) = self.subs.get_mut(&n) {
                sub.awaits_view = true;
            }
        }
        end_watches(ended);
        let Some(views) = formed else { return };
        let mut moves = Vec::with_capacity(to_move.len());
        for n in to_move {
            let source = self.new_source();
            let handler = changes_to(self.queue(), n, source);
            let Some(sub) = self.subs.get_mut(&n) else { continue };
            sub.moving = Some(source);
            moves.push((n, source, sub.plan.clone(), sub.shared.clone(), handler));
        }
        if moves.is_empty() {
            return;
        }
        // one after another on one thread: each waits for its place in the computation's log
        // (up to the install's timeout), and the log installs one view at a time anyway, so a
        // thread each would only hold more of the blocking pool
        let done = self.installed.0.clone();
        tokio::task::spawn_blocking(move || {
            for (n, source, plan, shared, handler) in moves {
                let result = watch_everywhere(Arc::clone(&views), &plan, &shared, handler);
                if done.send((n, source, result, 0)).is_err() {
                    // nobody takes the answers any more: the rest are not installed
                    break;
                }
            }
        });
    }

    /// Makes evaluations in batch subscription `n`'s source from now on; returns the source
    /// they replace.
    fn switch_to_batch(&mut self, n: u64) -> Option<Source> {
        let source = self.new_source();
        let sub = self.subs.get(&n)?;
        let batch = self.evaluate_in_batch(n, source, sub.plan.clone(), sub.promql.clone());
        let sub = self.subs.get_mut(&n)?;
        sub.current = source;
        Some(std::mem::replace(&mut sub.source, Source::Batch(batch)))
    }

    /// Queues an event for the connection; a full queue makes the consumer slow.
    fn queue(&self) -> impl Fn(Event) + Send + Sync + 'static {
        let (events, overflow) = (self.events.0.clone(), Arc::clone(&self.overflow));
        move |event| {
            if events.try_send(event).is_err() {
                overflow.notify_one();
            }
        }
    }

    /// Evaluates subscription `n`'s query in batch every `--subscribe.batch-interval`, and
    /// queues its result, then each change of it.
    fn evaluate_in_batch(
        &self,
        n: u64,
        source: u64,
        plan: Plan,
        promql: Option<String>,
    ) -> tokio::task::AbortHandle {
        let (state, queue) = (Arc::clone(&self.state), self.queue());
        let every = state.subscriptions.batch_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last: Option<HashMap<Arc<Labels>, ViewValue>> = None;
            loop {
                tick.tick().await;
                let t = chrono::Utc::now().timestamp_millis();
                let (state, plan, text) = (Arc::clone(&state), plan.clone(), promql.clone());
                let pool = Arc::clone(&state.query_pool);
                let runtime = tokio::runtime::Handle::current();
                let evaluated = pool
                    .spawn(move || {
                        let q = &state.query;
                        let opts = QueryOptions {
                            lookback_ms: q.lookback_delta.as_millis() as i64,
                            max_samples: q.max_samples,
                            deadline: Some(std::time::Instant::now() + q.timeout),
                            delayed_name_removal: q.delayed_name_removal,
                            use_start_timestamps: q.use_start_timestamps,
                            ..QueryOptions::instant(t)
                        };
                        // what a query reads: remote_read endpoints and cluster peers too,
                        // a PromQL query's aggregations in parts on the nodes
                        let template = text
                            .as_deref()
                            .map(|text| crate::pushdown::part_template(text, &q.compile, &opts));
                        crate::pushdown::evaluate_over_cluster(&state, &plan, &opts, template, runtime)
                    })
                    .await;
                let rows: HashMap<Arc<Labels>, ViewValue> = match evaluated {
                    Ok(Ok(ev)) => {
                        let floats = match ev.result {
                            QueryResult::Vector(v) => v,
                            _ => Vec::new(),
                        };
                        let floats = floats.into_iter().map(|(l, _, v)| (Arc::new(l), ViewValue::float(v)));
                        let hists = ev.histograms.into_iter().filter_map(|s| {
                            let h = s.samples.into_iter().next()?.h;
                            Some((Arc::new(s.labels), ViewValue::histogram(h)))
                        });
                        floats.chain(hists).collect()
                    }
                    Ok(Err(e)) => {
                        queue(Event::Failed(n, source, e.to_string()));
                        continue;
                    }
                    Err(_) => return,
                };
                let change = match &last {
                    None => ViewChange::Whole(rows.iter().map(|(l, v)| (Arc::clone(l), v.clone())).collect()),
                    Some(before) => ViewChange::Elements(differences(before, &rows)),
                };
                last = Some(rows);
                queue(Event::Change(n, source, t, change));
            }
        })
        .abort_handle()
    }

    /// A view was installed as source `source` of subscription `n` (or could not be);
    /// `samples` were reserved for it in the total budget.
    fn on_installed(
        &mut self,
        n: u64,
        source: u64,
        result: Result<Watched, Refusal>,
        samples: usize,
    ) -> Option<String> {
        let Some(sub) = self.subs.get_mut(&n) else {
            // unsubscribed while a view was installed for it in place of its batch evaluations
            self.state.subscriptions.release_samples(samples);
            end_watches(result.into_iter().collect());
            return None;
        };
        if sub.moving == Some(source) {
            sub.moving = None;
            match result {
                Ok(watch) => {
                    if let Source::Batch(batch) = &sub.source {
                        batch.abort();
                    }
                    (sub.source, sub.current) = (Source::View(watch), source);
                }
                Err(refusal) => {
                    // evaluated in batch still, and tried again while the computation is
                    // formed; unless the view spoke before it failed (its watch ended at
                    // once), and the batch evaluations stopped for it
                    sub.awaits_view = !matches!(refusal, Refusal::NotMaintained);
                    if sub.current == source {
                        self.switch_to_batch(n);
                    }
                }
            }
            return None;
        }
        let cancelled = sub.cancelled;
        let limit = self.state.subscriptions.limits.samples_per_connection;
        let over = self.samples.saturating_add(samples) > limit;
        if cancelled || over || matches!(result, Err(Refusal::Failed(_) | Refusal::Limit(_))) {
            self.state.subscriptions.release_samples(samples);
        }
        match result {
            Ok(watch) if cancelled => {
                self.subs.remove(&n);
                end_watches(vec![watch]);
            }
            Err(_) if cancelled => {
                self.subs.remove(&n);
            }
            Ok(_) | Err(Refusal::NotMaintained | Refusal::NoComputation) if over => {
                // another subscription of the connection took the budget meanwhile
                if let Ok(watch) = result {
                    end_watches(vec![watch]);
                }
                let sub = self.subs.remove(&n)?;
                self.state.subscriptions.free_place();
                let why = format!(
                    "the query reads {samples} samples, more than this connection's subscriptions have left \
                     (--subscribe.max-samples-per-connection={limit})"
                );
                return Some(error_message(&sub.id, "limit", &why));
            }
            Ok(watch) => {
                self.samples += samples;
                (sub.source, sub.samples) = (Source::View(watch), samples);
            }
            Err(refusal @ (Refusal::NotMaintained | Refusal::NoComputation)) => {
                self.samples += samples;
                sub.samples = samples;
                sub.awaits_view = matches!(refusal, Refusal::NoComputation);
                self.switch_to_batch(n);
            }
            Err(Refusal::Failed(why)) => {
                let sub = self.subs.remove(&n)?;
                self.state.subscriptions.free_place();
                return Some(error_message(&sub.id, "execution", &why));
            }
            Err(Refusal::Limit(why)) => {
                let sub = self.subs.remove(&n)?;
                self.state.subscriptions.free_place();
                return Some(error_message(&sub.id, "limit", &why));
            }
        }
        None
    }

    /// Gives back what subscription `sub` held of the budgets.
    fn release(&mut self, samples: usize) {
        self.samples -= samples;
        self.state.subscriptions.release_samples(samples);
    }

    fn unsubscribe(&mut self, id: &Value) -> Vec<String> {
        let Some((&n, _)) = self.subs.iter().find(|(_, s)| s.id == *id) else {
            return vec![error_message(id, "bad_data", "no subscription with this id")];
        };
        let reply = json!({"id": id, "type": "unsubscribed"}).to_string();
        let Some(sub) = self.subs.get_mut(&n) else { return vec![reply] };
        self.state.subscriptions.free_place();
        let held = sub.samples;
        match &sub.source {
            Source::View(_) => {
                let sub = self.subs.remove(&n);
                self.release(held);
                if let Some(Sub { source: Source::View(watch), .. }) = sub {
                    end_watches(vec![watch]);
                }
            }
            // a view installed for it meanwhile is ended when the installation reports
            Source::Batch(batch) => {
                batch.abort();
                self.subs.remove(&n);
                self.release(held);
            }
            // still installing: ended when the installation reports
            Source::Installing => {
                sub.cancelled = true;
                sub.id = Value::Null;
            }
        }
        vec![reply]
    }

    /// The message for a change of subscription `n` from its source `source` at `t`, if it
    /// says anything.
    fn change(&mut self, n: u64, source: u64, t: i64, change: ViewChange) -> Option<String> {
        let cluster = self.state.dataflow.is_some();
        let sub = self.subs.get_mut(&n).filter(|s| !s.cancelled)?;
        if sub.moving == Some(source) && sub.current != source {
            // the view installed in place of the batch evaluations speaks before its
            // installation reports: it is the source from now on
            if let Source::Batch(batch) = &sub.source {
                batch.abort();
            }
            sub.current = source;
        }
        if sub.current != source {
            return None;
        }
        let change = match (change, sub.result.as_mut()) {
            // a new source's whole result, once the client has its snapshot: what changed
            (ViewChange::Whole(rows), Some(result)) => {
                let now: HashMap<Arc<Labels>, ViewValue> = rows.into_iter().collect();
                let changes = differences(result, &now);
                *result = now;
                ViewChange::Elements(changes)
            }
            (ViewChange::Whole(rows), None) if cluster => {
                sub.result = Some(rows.iter().map(|(l, v)| (Arc::clone(l), v.clone())).collect());
                ViewChange::Whole(rows)
            }
            (ViewChange::Elements(mut changes), Some(result)) => {
                for c in &mut changes {
                    c.was_present = match &c.value {
                        Some(v) => result.insert(Arc::clone(&c.labels), v.clone()).is_some(),
                        None => result.remove(&c.labels).is_some(),
                    };
                }
                ViewChange::Elements(changes)
            }
            (change, _) => change,
        };
        let time = format_timestamp(t);
        let mut out = String::with_capacity(128);
        let _ = write!(out, "{{\"id\":{},", sub.id);
        match change {
            ViewChange::Whole(mut rows) => {
                rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let _ = write!(out, "\"type\":\"snapshot\",\"time\":{time},\"result\":[");
                for (i, (labels, value)) in rows.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_sample(&mut out, labels, &time, value);
                }
                out.push_str("]}");
            }
            ViewChange::Elements(mut changes) => {
                changes.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
                let (mut added, mut changed, mut removed) = (String::new(), String::new(), String::new());
                for c in changes {
                    match (c.was_present, c.value) {
                        (true, Some(v)) => {
                            separate(&mut changed);
                            write_sample(&mut changed, &c.labels, &time, &v);
                        }
                        (false, Some(v)) => {
                            separate(&mut added);
                            write_sample(&mut added, &c.labels, &time, &v);
                        }
                        (true, None) => {
                            separate(&mut removed);
                            removed.push_str("{\"metric\":");
                            write_labels(&mut removed, &c.labels);
                            removed.push('}');
                        }
                        (false, None) => {}
                    }
                }
                if added.is_empty() && changed.is_empty() && removed.is_empty() {
                    return None;
                }
                let _ = write!(
                    out,
                    "\"type\":\"change\",\"time\":{time},\"added\":[{added}],\"changed\":[{changed}],\"removed\":[{removed}]}}"
                );
            }
        }
        Some(out)
    }

    /// Ends every subscription of the connection.
    fn close(mut self) {
        let mut watches = Vec::new();
        for (_, sub) in self.subs.drain() {
            if !sub.cancelled {
                self.state.subscriptions.free_place();
            }
            self.state.subscriptions.release_samples(sub.samples);
            match sub.source {
                Source::View(watch) => watches.push(watch),
                Source::Batch(batch) => batch.abort(),
                Source::Installing => {}
            }
        }
        end_watches(watches);
        // installations under way end their watches as they report
        let (state, mut installed) = (self.state, self.installed.1);
        drop(self.installed.0);
        tokio::spawn(async move {
            while let Some((_, _, result, samples)) = installed.recv().await {
                state.subscriptions.release_samples(samples);
                end_watches(result.ok().into_iter().collect());
            }
        });
    }
}

/// The samples `plan` reads when evaluated now: what a view of it holds once it has read its
/// history. An error, for the client, when that is more than `budget`.
fn samples_read(state: &AppState, plan: &Plan, budget: usize) -> Result<usize, String> {
    let q = &state.query;
    let opts = QueryOptions {
        lookback_ms: q.lookback_delta.as_millis() as i64,
        max_samples: budget,
        deadline: Some(std::time::Instant::now() + q.timeout),
        delayed_name_removal: q.delayed_name_removal,
        use_start_timestamps: q.use_start_timestamps,
        ..QueryOptions::instant(chrono::Utc::now().timestamp_millis())
    };
    match promflow_batch::evaluate(plan, state.db.as_ref(), &opts) {
        Ok(ev) => Ok(ev.samples),
        Err(promflow_plan::Error::TooManySamples(_)) => Err(format!(
            "the query reads more than the {budget} samples this subscription may hold \
             (--query.max-samples, --subscribe.max-samples-per-connection, --subscribe.max-samples-total)"
        )),
        // the installation itself reports what is wrong with the query
        Err(_) => Ok(0),
    }
}

/// Ends `watches` on a blocking thread: ending one may drop its view's dataflow, which waits
/// for the dataflow's lock.
fn end_watches(watches: Vec<Watched>) {
    if watches.is_empty() {
        return;
    }
    tokio::task::spawn_blocking(move || {
        for w in watches {
            w.views.unwatch(w.id);
        }
    });
}

/// A handler that queues subscription `n`'s changes from its source `source`.
fn changes_to(queue: impl Fn(Event) + Send + Sync + 'static, n: u64, source: u64) -> WatchFn {
    Box::new(move |t: i64, change: ViewChange| -> Option<i64> {
        queue(Event::Change(n, source, t, change));
        None
    })
}

/// A watch on the view of `plan` (`shared` as [`shared_query`] gives it) on the cluster's
/// computation `views`: every node installs it.
fn watch_everywhere(
    views: Arc<LiveViews>,
    plan: &Plan,
    shared: &str,
    handler: WatchFn,
) -> Result<Watched, Refusal> {
    match views.subscribe_everywhere(plan, shared, handler) {
        Ok(id) => Ok(Watched { views, id }),
        Err(promflow_plan::Error::Unsupported(_)) => Err(Refusal::NotMaintained),
        Err(_) if views.lost() => Err(Refusal::NoComputation),
        Err(e @ promflow_plan::Error::Timeout(_)) => {
            tracing::warn!(error = %e, "a subscription is evaluated in batch until the cluster's dataflow installs its view");
            Err(Refusal::NoComputation)
        }
        Err(e) => Err(Refusal::Failed(e.to_string())),
    }
}

/// What the nodes of a cluster's computation compile a subscription's query from: its text,
/// its language, and the compile options of the node the client subscribed on
/// ([`compile_shared`]).
fn shared_query(query: &str, sql: bool, options: &promflow_promql::CompileOptions) -> String {
    json!({
        "query": query,
        "lang": if sql { "sql" } else { "promql" },
        "default_subquery_step_ms": options.default_subquery_step.as_millis() as u64,
        "step_ms": options.step.as_millis() as u64,
        "range_ms": options.range.as_millis() as u64,
    })
    .to_string()
}

/// Compiles a subscription's query as [`shared_query`] gives it: what each node of a
/// cluster's computation installs the subscription's view from
/// ([`promflow_incremental::live::CompileFn`]).
pub fn compile_shared(shared: &str) -> Result<Plan, String> {
    let v: Value = serde_json::from_str(shared).map_err(|e| format!("a subscription's query: {e}"))?;
    let query = v["query"].as_str().ok_or("a subscription's query without its text")?;
    let millis = |name: &str| Duration::from_millis(v[name].as_u64().unwrap_or(0));
    if v["lang"] == "sql" {
        return promflow_sql::standing(query).map_err(|e| e.to_string());
    }
    let options = promflow_promql::CompileOptions {
        default_subquery_step: millis("default_subquery_step_ms"),
        step: millis("step_ms"),
        range: millis("range_ms"),
    };
    promflow_promql::compile(query, &options).map_err(|e| e.to_string())
}

/// Writes every message in order, then flushes once; a message (or the flush) that takes
/// longer than [`SEND_TIMEOUT`] to be taken makes the consumer slow.
async fn send_all(socket: &mut WebSocket, messages: Vec<String>) -> Result<(), End> {
    if messages.is_empty() {
        return Ok(());
    }
    for m in messages {
        within_send_timeout(socket.feed(Message::Text(m.into()))).await?;
    }
    within_send_timeout(socket.flush()).await
}

async fn within_send_timeout<E>(write: impl std::future::Future<Output = Result<(), E>>) -> Result<(), End> {
    match tokio::time::timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Closed),
        Err(_) => Err(End::Slow("a message took longer than 10s to be taken")),
    }
}

/// The elements that changed from `before` to `after`: new values, and `None` for those that
/// left.
fn differences(
    before: &HashMap<Arc<Labels>, ViewValue>,
    after: &HashMap<Arc<Labels>, ViewValue>,
) -> Vec<ElementChange> {
    let change = |labels: &Arc<Labels>, value| ElementChange {
        labels: Arc::clone(labels),
        was_present: before.contains_key(labels),
        value,
    };
    let mut out: Vec<ElementChange> = after
        .iter()
        .filter(|(l, v)| before.get(*l) != Some(*v))
        .map(|(l, v)| change(l, Some(v.clone())))
        .collect();
    out.extend(before.keys().filter(|l| !after.contains_key(*l)).map(|l| change(l, None)));
    out
}

/// `{"metric": {...}, "value": [time, "value"]}` (`"histogram": [time, {...}]` for a native
/// histogram), as the query API writes a sample.
fn write_sample(out: &mut String, labels: &Labels, time: &str, value: &ViewValue) {
    out.push_str("{\"metric\":");
    write_labels(out, labels);
    match value.operand() {
        Operand::Float(v) => {
            out.push_str(",\"value\":[");
            out.push_str(time);
            out.push_str(",\"");
            write_value(out, v);
            out.push_str("\"]}");
        }
        Operand::Histogram(h) => {
            out.push_str(",\"histogram\":[");
            out.push_str(time);
            out.push(',');
            promflow_plan::format::write_histogram(out, h);
            out.push_str("]}");
        }
    }
}

fn separate(list: &mut String) {
    if !list.is_empty() {
        list.push(',');
    }
}

/// An error about subscription `id` (`null` for the connection), with Prometheus's
/// `errorType` words where they fit.
fn error_message(id: &Value, error_type: &str, error: &str) -> String {
    json!({"id": id, "type": "error", "errorType": error_type, "error": error}).to_string()
}

fn now_seconds() -> Value {
    let ms = chrono::Utc::now().timestamp_millis();
    serde_json::from_str(&format_timestamp(ms)).unwrap_or(Value::Null)
}
