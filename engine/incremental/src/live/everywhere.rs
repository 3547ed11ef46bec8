//! Clients' subscriptions on a cluster's computation.
//!
//! The processes of a computation must build the same dataflows in the same order, and a
//! client subscribes on one node at a time of its choosing. So a subscription is an entry of
//! the computation's sequenced log ([`Incremental::propose`]): its process proposes it, and
//! every process, the proposer included, takes the log's entries in the log's order on one
//! thread and installs the view of each (from its own storage's history, as the rules' views
//! are installed when the computation forms), with a read copy on the subscriber's process
//! alone. That process then watches the copy. When the subscription ends, its process
//! proposes its release, and every process gives the view up at that place in the log.
//!
//! Every process compiles the subscription's query itself, from the text in the entry
//! ([`CompileFn`]): the nodes of a computation run the same build, so they compile it alike.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use promflow_plan::{Error, Plan};
use serde::{Deserialize, Serialize};

use super::{Asker, LiveViews, Reader, WatchFn};
use crate::ViewId;

/// Compiles a subscription's query, as the entry of the log carries it (the text and what
/// the subscriber's node compiled it with), to its plan.
pub type CompileFn = Arc<dyn Fn(&str) -> Result<Plan, String> + Send + Sync>;

/// How long a subscriber waits for its entry to come through the log and its view to be
/// installed; past it, the subscription is evaluated in batch, and the view, once installed,
/// is released again.
const LOG_WAIT: Duration = Duration::from_secs(30);

/// How often a subscriber waiting for its entry looks whether the computation failed.
const LOOK: Duration = Duration::from_millis(100);

/// An entry of the sequenced log.
#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    /// A client's subscription on the process `origin`: every process installs its view from
    /// history at `at`, with a read copy on `origin`.
    Subscribe { origin: usize, token: u64, query: String, at: i64 },
    /// The subscription `token` of the process `origin` ended: every process gives its view
    /// up.
    Release { origin: usize, token: u64 },
}

/// A subscription proposed on this process and not yet taken from the log.
struct Pending {
    handler: WatchFn,
    /// Where the watch's id, or why there is none, goes.
    reply: SyncSender<Result<u64, Error>>,
}

/// The clients' subscriptions in the sequenced log, as this process knows them.
#[derive(Default)]
pub(super) struct Subscriptions {
    /// How the queries are compiled: set when the log is served.
    compile: Option<CompileFn>,
    next_token: u64,
    /// This process's subscriptions proposed and not yet taken from the log, by token.
    pending: HashMap<u64, Pending>,
    /// This process's subscriptions taken from the log whose subscriber stopped waiting
    /// while their views were installed: their watches end as soon as they start.
    abandoned: HashSet<u64>,
    /// The view of every live subscription in the log, by its process and token.
    views: HashMap<(usize, u64), ViewId>,
}

impl LiveViews {
    /// On a cluster's computation: takes the entries of its sequenced log from now on, on a
    /// thread of their own, compiling the clients' queries with `compile`. Call it once the
    /// views the computation was formed with are installed. Fails in one process.
    pub fn serve_subscriptions(self: &Arc<Self>, compile: CompileFn) -> Result<(), String> {
        let log = self.inc.sequenced().ok_or("no sequenced log: not a cluster's computation")?;
        self.everywhere().compile = Some(compile);
        let views: Weak<LiveViews> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("cluster-subscriptions".into())
            .spawn(move || loop {
                match log.recv_timeout(Duration::from_secs(1)) {
                    Ok(entry) => {
                        let Some(v) = views.upgrade() else { return };
                        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.apply(&entry)));
                        if applied.is_err() {
                            // the other processes go on with the log: this one cannot keep in
                            // step, and leaves the computation, which forms again
                            tracing::error!("taking an entry of the cluster's sequenced log failed; leaving the cluster's dataflow");
                            v.unanswered.store(true, std::sync::atomic::Ordering::Relaxed);
                            return;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) if views.strong_count() > 0 => {}
                    Err(_) => {
                        // the computation failed: nothing more comes through the log
                        if let Some(v) = views.upgrade() {
                            v.everywhere().pending.clear();
                        }
                        return;
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| format!("starting the cluster's subscriptions: {e}"))
    }

    /// A client's standing query on a cluster's computation: [`LiveViews::subscribe`], with
    /// the view installed by every process (`plan` is `query` compiled, which every process
    /// compiles again with the [`CompileFn`]) and read here. [`Error::Unsupported`] when the
    /// incremental executor does not maintain it, [`Error::Timeout`] when its view was not
    /// installed in time (the computation is busy or failed).
    pub fn subscribe_everywhere(&self, plan: &Plan, query: &str, handler: WatchFn) -> Result<u64, Error> {
        let Some(origin) = self.inc.process() else {
            // a cluster of one node has no log: its views are the rules', fixed when it formed
            return Err(Error::Unsupported("a cluster's computation of one process".into()));
        };
        if plan.reads_time() {
            return Err(Error::Unsupported("time() in a subscription".into()));
        }
        let (reply, answer) = sync_channel(1);
        let token = {
            let mut everywhere = self.everywhere();
            if everywhere.compile.is_none() {
                return Err(Error::Unsupported("a computation that serves no subscriptions".into()));
            }
            everywhere.next_token += 1;
            let token = everywhere.next_token;
            everywhere.pending.insert(token, Pending { handler, reply });
            token
        };
        let entry = Entry::Subscribe { origin, token, query: query.to_string(), at: self.now() };
        if let Err(e) = self.propose(&entry) {
            self.everywhere().pending.remove(&token);
            return Err(e);
        }
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            match answer.recv_timeout(LOOK) {
                Ok(result) => return result,
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline && !self.lost() => {}
                // the computation failed: nothing more comes through the log
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Execution("the dataflow's computation failed".into()));
                }
                Err(RecvTimeoutError::Timeout) => {
                    let mut everywhere = self.everywhere();
                    // under the lock the answer is sent under: it is here, or it is not sent
                    // yet and its watch ends as it starts; or the entry has not come through
                    // the log, and its view is released when it does
                    if everywhere.pending.remove(&token).is_none() {
                        if let Ok(result) = answer.try_recv() {
                            return result;
                        }
                        everywhere.abandoned.insert(token);
                    }
                    return Err(Error::Timeout("a subscription's view on the cluster's dataflow"));
                }
            }
        }
    }

    /// Proposes the release of this process's subscription `token`: every process gives its
    /// view up at that place in the log. Nothing to do when the computation failed.
    pub(super) fn propose_release(&self, token: u64) {
        let Some(origin) = self.inc.process() else { return };
        if let Err(e) = self.propose(&Entry::Release { origin, token }) {
            tracing::debug!(error = %e, "releasing a subscription's view on the cluster's dataflow");
        }
    }

    fn propose(&self, entry: &Entry) -> Result<(), Error> {
        let bytes = serde_json::to_vec(entry).map_err(|e| Error::Execution(e.to_string()))?;
        self.inc.propose(bytes)
    }

    fn everywhere(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        self.everywhere.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one entry of the log: every process does the same with it, in the same order.
    fn apply(&self, bytes: &[u8]) {
        let entry: Entry = match serde_json::from_slice(bytes) {
            Ok(e) => e,
            Err(e) => {
                // every process built by the same code reads every entry
                tracing::error!(error = %e, "an entry of the cluster's sequenced log that cannot be read");
                return;
            }
        };
        let here = self.inc.process();
        match entry {
            Entry::Subscribe { origin, token, query, at } => {
                let compile = self.everywhere().compile.clone();
                let plan = match compile.map(|compile| compile(&query)) {
                    Some(Ok(plan)) if plan.reads_time() => {
                        Err(Error::Unsupported("time() in a subscription".into()))
                    }
                    Some(Ok(plan)) => Ok(plan),
                    Some(Err(e)) => Err(Error::Plan(e)),
                    None => Err(Error::Unsupported("a computation that serves no subscriptions".into())),
                };
                let readers = BTreeSet::from([origin]);
                let asker = Asker { reader: Reader::Client, readers: Some(&readers), logged: true };
                let view = plan.and_then(|plan| self.view_of(&plan, at, None, asker)).map(|(view, _)| view);
                if let Ok(view) = view {
                    self.everywhere().views.insert((origin, token), view);
                }
                if here != Some(origin) {
                    return;
                }
                let pending = self.everywhere().pending.remove(&token);
                let (watch, reply) = match (view, pending) {
                    // a failed watch gives its view up itself
                    (Ok(view), Some(p)) => {
                        (self.watch_view(view, self.now(), p.handler, Reader::Client, Some(token)), p.reply)
                    }
                    (Err(e), Some(p)) => {
                        // it may have failed here alone (its history): every process lets it go
                        self.propose_release(token);
                        (Err(e), p.reply)
                    }
                    // the subscriber stopped waiting before the entry came through
                    (_, None) => return self.propose_release(token),
                };
                let mut everywhere = self.everywhere();
                if everywhere.abandoned.remove(&token) {
                    drop(everywhere);
                    if let Ok(id) = watch {
                        self.unwatch(id);
                    }
                } else if let Err(std::sync::mpsc::SendError(Ok(id))) = reply.send(watch) {
                    drop(everywhere);
                    self.unwatch(id);
                }
            }
            Entry::Release { origin, token } => {
                let view = self.everywhere().views.remove(&(origin, token));
                if let Some(view) = view {
                    self.release(view, Reader::Client);
                }
            }
        }
    }
}
