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

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::SinkExt;
use promflow_incremental::live::ViewChange;
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

/// What a subscription's source says, by the subscription's number on its connection.
enum Event {
    /// Its result changed at a time (the first: its whole result).
    Change(u64, i64, ViewChange),
    /// A batch evaluation failed (the subscription goes on).
    Failed(u64, String),
}

/// A view installed (or not) in the background: (subscription, its watch or why not, the
/// samples reserved for it in the total budget).
type Installed = (u64, Result<u64, Refusal>, usize);

/// Why a subscription has no view.
enum Refusal {
    /// The dataflow does not maintain the query (or is off): it is evaluated in batch.
    NotMaintained,
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
    View(u64),
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
    /// Its query, until its view is installed (for evaluations in batch if it is not).
    plan: Option<Plan>,
    /// A PromQL query's text, which a cluster's nodes compile to evaluate its aggregations
    /// in parts when it is evaluated in batch.
    promql: Option<String>,
    /// Ended by the client while its view was being installed.
    cancelled: bool,
    /// Samples its query read when subscribed, held in the budgets while it lives.
    samples: usize,
}

struct Connection {
    state: Arc<AppState>,
    /// Subscriptions by their number on this connection.
    subs: HashMap<u64, Sub>,
    /// Samples this connection's subscriptions hold (their `samples`).
    samples: usize,
    next: u64,
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
            events: mpsc::channel(QUEUE),
            installed: mpsc::unbounded_channel(),
            overflow: Arc::new(Notify::new()),
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
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
                Some((n, result, samples)) = self.installed.1.recv() => {
                    let reply = self.on_installed(n, result, samples);
                    send_all(&mut socket, reply.into_iter().collect()).await
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
            Event::Change(n, t, change) => self.change(n, t, change),
            Event::Failed(n, why) => self.subs.get(&n).map(|s| error_message(&s.id, "execution", &why)),
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
        let promql = (!sql).then(|| query.to_string());
        let sub = Sub {
            id,
            source: Source::Installing,
            plan: Some(plan.clone()),
            promql,
            cancelled: false,
            samples: 0,
        };
        self.subs.insert(n, sub);
        let limits = self.state.subscriptions.limits;
        let budget =
            self.state.query.max_samples.min(limits.samples_per_connection.saturating_sub(self.samples)).min(
                limits.samples_total.saturating_sub(self.state.subscriptions.samples.load(Ordering::Acquire)),
            );
        // installing a view reads its history: off the connection's task
        let (state, queue) = (Arc::clone(&self.state), self.queue());
        let done = self.installed.0.clone();
        tokio::task::spawn_blocking(move || {
            let samples = match samples_read(&state, &plan, budget) {
                Ok(read) if state.subscriptions.reserve_samples(read) => read,
                Ok(read) => {
                    let why = format!(
                        "the query reads {read} samples, more than the server's subscriptions have left \
                         (--subscribe.max-samples-total)"
                    );
                    let _ = done.send((n, Err(Refusal::Limit(why)), 0));
                    return;
                }
                Err(why) => {
                    let _ = done.send((n, Err(Refusal::Limit(why)), 0));
                    return;
                }
            };
            let handler = Box::new(move |t: i64, change: ViewChange| -> Option<i64> {
                queue(Event::Change(n, t, change));
                None
            });
            let result = match state.live.as_deref() {
                None => Err(Refusal::NotMaintained),
                Some(views) => views.subscribe(&plan, handler).map_err(|e| match e {
                    promflow_plan::Error::Unsupported(_) => Refusal::NotMaintained,
                    e => Refusal::Failed(e.to_string()),
                }),
            };
            let _ = done.send((n, result, samples));
        });
        Vec::new()
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
    fn evaluate_in_batch(&self, n: u64, plan: Plan, promql: Option<String>) -> tokio::task::AbortHandle {
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
                        queue(Event::Failed(n, e.to_string()));
                        continue;
                    }
                    Err(_) => return,
                };
                let change = match &last {
                    None => ViewChange::Whole(rows.iter().map(|(l, v)| (Arc::clone(l), v.clone())).collect()),
                    Some(before) => ViewChange::Elements(differences(before, &rows)),
                };
                last = Some(rows);
                queue(Event::Change(n, t, change));
            }
        })
        .abort_handle()
    }

    /// A view was installed for subscription `n` (or could not be); `samples` were reserved
    /// for it in the total budget.
    fn on_installed(&mut self, n: u64, result: Result<u64, Refusal>, samples: usize) -> Option<String> {
        let Some(cancelled) = self.subs.get(&n).map(|s| s.cancelled) else {
            self.state.subscriptions.release_samples(samples);
            return None;
        };
        let limit = self.state.subscriptions.limits.samples_per_connection;
        let over = self.samples.saturating_add(samples) > limit;
        if cancelled || over || matches!(result, Err(Refusal::Failed(_) | Refusal::Limit(_))) {
            self.state.subscriptions.release_samples(samples);
        }
        match result {
            Ok(watch) if cancelled => {
                self.subs.remove(&n);
                self.end_watches(vec![watch]);
            }
            Err(_) if cancelled => {
                self.subs.remove(&n);
            }
            Ok(_) | Err(Refusal::NotMaintained) if over => {
                // another subscription of the connection took the budget meanwhile
                if let Ok(watch) = result {
                    self.end_watches(vec![watch]);
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
                let sub = self.subs.get_mut(&n)?;
                (sub.source, sub.plan, sub.promql, sub.samples) = (Source::View(watch), None, None, samples);
            }
            Err(Refusal::NotMaintained) => {
                self.samples += samples;
                let sub = self.subs.get_mut(&n)?;
                let (plan, promql) = (sub.plan.take()?, sub.promql.take());
                let batch = self.evaluate_in_batch(n, plan, promql);
                let sub = self.subs.get_mut(&n)?;
                (sub.source, sub.samples) = (Source::Batch(batch), samples);
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
            Source::View(watch) => {
                let watch = *watch;
                self.subs.remove(&n);
                self.release(held);
                self.end_watches(vec![watch]);
            }
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

    /// The message for a change of subscription `n` at `t`, if it says anything.
    fn change(&self, n: u64, t: i64, change: ViewChange) -> Option<String> {
        let sub = self.subs.get(&n).filter(|s| !s.cancelled)?;
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

    /// Ends watches off the connection's task: ending one may drop its view's dataflow.
    fn end_watches(&self, watches: Vec<u64>) {
        end_watches(&self.state, watches);
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
        self.end_watches(watches);
        // installations under way end their watches as they report
        let (state, mut installed) = (self.state, self.installed.1);
        drop(self.installed.0);
        tokio::spawn(async move {
            while let Some((_, result, samples)) = installed.recv().await {
                state.subscriptions.release_samples(samples);
                end_watches(&state, result.ok().into_iter().collect());
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
fn end_watches(state: &Arc<AppState>, watches: Vec<u64>) {
    if watches.is_empty() {
        return;
    }
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        if let Some(views) = state.live.as_deref() {
            for w in watches {
                views.unwatch(w);
            }
        }
    });
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
