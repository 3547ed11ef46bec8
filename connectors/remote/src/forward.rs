//! Writes in a cluster: a node that receives a request stores each series on the nodes that
//! own it, itself included when it is one, and answers only once every copy is stored (remote
//! write and OTLP); a pushed group goes to the one node that keeps it ([`ClusterWrites::relay`]).
//!
//! Each series goes to the first `replication` nodes of its ranking (the cluster's placement,
//! by a hash of its labels). A node that cannot be reached (a connection error, a timeout, a
//! 5xx or any answer but 400) is replaced, for its series, by the next node of each series'
//! ranking, so that a write with a node down still lands on `replication` nodes, and the
//! writes of the next 30 s pass it over from the start; queries read every node and find
//! the series wherever it went. A peer's 400 is the sender's to fix,
//! and is passed on. The copies go to the peers marked as a hop ([`CLUSTER_HOP_HEADER`]): a node
//! stores a hop's series itself, without forwarding them again.
//!
//! Of a series' copies, one is the primary: the one on the first node of its ranking it is
//! sent to, or when that node fails to take it, on the next node sent the series. The others
//! are replicas ([`Role`]; a replica's hop header says [`REPLICA_HOP`]). A cluster's one
//! dataflow computation takes each series from the node with the primary.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use promflow_scrape::ScrapedSamples;
use promflow_storage::{Labels, LabelsRef, MetricKind, MetricsWriter};
use prost::Message;

use crate::reader::{PeerAccess, CLUSTER_HOP_HEADER};
use crate::{Appended, Error, RequestView, Sample, TimeSeries, WriteRequest};

/// A cluster's placement of series: every node, best first, for a hash of a series' labels.
pub type Ranking = Arc<dyn Fn(u64) -> Vec<usize> + Send + Sync>;

/// The value of [`CLUSTER_HOP_HEADER`] on a copy that is a replica ([`Role::Replica`]).
pub const REPLICA_HOP: &str = "replica";

/// What a node's copy of a series is to the cluster's dataflow computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The copy that feeds the series to the cluster's computation: on the first node of the
    /// series' ranking it is sent to, or the next if that node fails to take it.
    Primary,
    /// Another copy, stored but not fed to the computation.
    Replica,
}

impl Role {
    /// The role a copy sent with `hop` (the value of [`CLUSTER_HOP_HEADER`]) has.
    pub fn of_hop(hop: &str) -> Role {
        if hop == REPLICA_HOP {
            Role::Replica
        } else {
            Role::Primary
        }
    }

    fn hop(self) -> &'static str {
        match self {
            Role::Primary => "1",
            Role::Replica => REPLICA_HOP,
        }
    }
}

/// How long a copy waits for a peer's answer before that peer counts as down for it.
const COPY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long writes pass over a peer that took no copy (it did not answer, or failed): its
/// series go to the next nodes of their rankings from the start, so that a peer cut off
/// without a word costs one write [`COPY_TIMEOUT`], not every write (a rule group's
/// evaluation writes once per rule).
const PASS_OVER: Duration = Duration::from_secs(30);

/// The nodes of a cluster and how series are placed on them, as one consistent whole: a
/// write uses one placement from start to end, even when the peer list is reloaded meanwhile.
pub struct Placement {
    /// Every node's `host:port`.
    pub peers: Vec<String>,
    /// This node's place in `peers`.
    pub me: usize,
    /// Every node of `peers`, best first, for a series' hash.
    pub rank: Ranking,
}

/// Where a cluster's series are stored, and how copies reach the other nodes.
pub struct ClusterWrites {
    placement: std::sync::RwLock<Arc<Placement>>,
    /// How many nodes store each series.
    replication: usize,
    /// How the peers are reached, and the client that reaches them.
    access: PeerAccess,
    client: reqwest::Client,
    /// Bytes of replicas of this node's own samples ([`ClusterWrites::send_replicas`]) on
    /// their way.
    replica_bytes_in_flight: AtomicUsize,
    /// Samples a replica node stored, failed to store, or was never sent (counted once for
    /// each replica node).
    replicas_sent: AtomicU64,
    replicas_failed: AtomicU64,
    replicas_dropped: AtomicU64,
    /// The peers that lately took no copy, by address, with when ([`PASS_OVER`]).
    failed: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How many bytes of replicas ([`ClusterWrites::send_replicas`]) may be on their way at
/// once: beyond, a scrape's are dropped (and counted), so that a slow or unreachable peer
/// cannot pile up a node's memory.
const MAX_REPLICA_BYTES: usize = 64 << 20;

impl ClusterWrites {
    /// Stores each series on `replication` of the nodes `placement` names, reaching them as
    /// `access` says.
    pub fn new(
        placement: Placement,
        replication: usize,
        access: &PeerAccess,
    ) -> Result<ClusterWrites, Error> {
        Ok(ClusterWrites {
            placement: std::sync::RwLock::new(Arc::new(placement)),
            replication: replication.max(1),
            access: access.clone(),
            client: access.client()?,
            replica_bytes_in_flight: AtomicUsize::new(0),
            replicas_sent: AtomicU64::new(0),
            replicas_failed: AtomicU64::new(0),
            replicas_dropped: AtomicU64::new(0),
            failed: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The nodes of `peers` that took no copy within [`PASS_OVER`].
    fn passed_over(&self, peers: &[String]) -> BTreeSet<usize> {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        (0..peers.len())
            .filter(|&n| failed.get(&peers[n]).is_some_and(|at| at.elapsed() < PASS_OVER))
            .collect()
    }

    /// Notes whether `peer` took a copy.
    fn note_answer(&self, peer: &str, took: bool) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if took {
            failed.remove(peer);
        } else {
            failed.insert(peer.to_string(), std::time::Instant::now());
        }
    }

    /// Sends replicas of `stored`, which this node has stored as their primary (a scrape's
    /// samples, [`promflow_scrape::ScrapeManager::set_copies`]), to the first
    /// `replication − 1` other nodes of each series' ranking, passing over the peers that
    /// lately took no copy as [`ClusterWrites::write`] does. The bodies are encoded on the
    /// calling thread (a scrape's blocking thread) and sent on `runtime` without waiting.
    /// Nobody waits for these copies: a copy a node does not take goes to the next node of
    /// the series' ranking (so a series keeps its replicas while a node is down), and one
    /// that no node takes, or that a node refuses, is counted, not retried.
    pub fn send_replicas(self: &Arc<Self>, stored: ScrapedSamples, runtime: &tokio::runtime::Handle) {
        if self.replication < 2 || stored.is_empty() {
            return;
        }
        let copies = self.replication - 1;
        let samples = (stored.floats.len() + stored.histograms.len()) as u64;
        let raw = request_of(stored).encode_to_vec();
        let placement = self.placement();
        let first = RequestView::parse(&raw).map(|req| {
            // per series: the other nodes, best first
            let rankings: Vec<Vec<usize>> = req
                .series()
                .map(|s| {
                    (placement.rank)(series_hash(s.labels))
                        .into_iter()
                        .filter(|&n| n != placement.me)
                        .collect()
                })
                .collect();
            let passed_over = self.passed_over(&placement.peers);
            let mut owed: BTreeMap<(usize, Role), Vec<usize>> = BTreeMap::new();
            for (i, ranking) in rankings.iter().enumerate() {
                for node in first_nodes(ranking, copies, &passed_over) {
                    owed.entry((node, Role::Replica)).or_default().push(i);
                }
            }
            let bodies = encode_owed(&req, &owed);
            (rankings, passed_over, owed, bodies)
        });
        let (rankings, passed_over, owed, bodies) = match first {
            Ok(first) => first,
            Err(e) => {
                tracing::error!(error = %e, "encoding replicas of this node's samples");
                self.replicas_dropped.fetch_add(samples * copies as u64, Ordering::Relaxed);
                return;
            }
        };
        let bytes = raw.len() + bodies.iter().map(|(_, _, b)| b.len()).sum::<usize>();
        if self.replica_bytes_in_flight.fetch_add(bytes, Ordering::Relaxed) + bytes > MAX_REPLICA_BYTES {
            self.replica_bytes_in_flight.fetch_sub(bytes, Ordering::Relaxed);
            self.replicas_dropped.fetch_add(samples * copies as u64, Ordering::Relaxed);
            return;
        }
        let this = Arc::clone(self);
        runtime.spawn(async move {
            let (mut owed, mut bodies) = (owed, bodies);
            // the nodes a series' copy went to after the first ones failed; the first ones
            // are found again from its ranking (only a failure pays for this)
            let mut retried: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            // a series carries one sample here: the series owed are the samples
            let (mut sent, mut failed) = (0u64, 0u64);
            loop {
                let mut down = Vec::new();
                for (node, answer) in this.send_bodies(&placement.peers, bodies).await {
                    let owed_here = owed.get(&(node, Role::Replica)).map_or(0, Vec::len) as u64;
                    this.note_answer(&placement.peers[node], !matches!(answer, Err(Copy::Down(_))));
                    match answer {
                        Ok(()) => sent += owed_here,
                        Err(Copy::Refused(e)) => {
                            tracing::debug!(peer = %placement.peers[node], error = %e, "a peer refused replicas");
                            failed += owed_here;
                        }
                        Err(Copy::Down(e)) => {
                            tracing::debug!(peer = %placement.peers[node], error = %e, "a peer took no replicas: the next node takes them");
                            down.push(node);
                        }
                    }
                }
                // what a node that is down was owed goes to the next node of each series'
                // ranking that was neither sent it nor passed over
                let mut next: BTreeMap<(usize, Role), Vec<usize>> = BTreeMap::new();
                for node in down {
                    for &i in owed.get(&(node, Role::Replica)).into_iter().flatten() {
                        let first = first_nodes(&rankings[i], copies, &passed_over);
                        let again = retried.entry(i).or_default();
                        let untried = rankings[i].iter().copied().find(|n| {
                            !first.contains(n) && !passed_over.contains(n) && !again.contains(n)
                        });
                        match untried {
                            Some(n) => {
                                again.push(n);
                                next.entry((n, Role::Replica)).or_default().push(i);
                            }
                            None => failed += 1,
                        }
                    }
                }
                if next.is_empty() {
                    break;
                }
                bodies = match RequestView::parse(&raw) {
                    Ok(req) => encode_owed(&req, &next),
                    // it parsed before the first send
                    Err(_) => break,
                };
                owed = next;
            }
            this.replicas_sent.fetch_add(sent, Ordering::Relaxed);
            this.replicas_failed.fetch_add(failed, Ordering::Relaxed);
            this.replica_bytes_in_flight.fetch_sub(bytes, Ordering::Relaxed);
        });
    }

    /// Writes the counts of replicas of this node's own samples: stored by a peer, failed,
    /// dropped.
    pub fn write_metrics(&self, w: &mut MetricsWriter) {
        let counts = [
            ("sent", &self.replicas_sent),
            ("failed", &self.replicas_failed),
            ("dropped", &self.replicas_dropped),
        ];
        let mut family = w.family(
            "promflow_cluster_replica_samples_total",
            MetricKind::Counter,
            "Replicas of this node's own samples (its scrapes') for other nodes, one for each replica node, by outcome.",
        );
        for (outcome, n) in counts {
            family.sample(&[("outcome", outcome)], n.load(Ordering::Relaxed));
        }
    }

    /// Places the writes from now on by `placement` (a reloaded peer list).
    pub fn set_placement(&self, placement: Placement) {
        if let Ok(mut p) = self.placement.write() {
            *p = Arc::new(placement);
        }
    }

    /// The placement in force.
    fn placement(&self) -> Arc<Placement> {
        self.placement.read().map(|p| Arc::clone(&p)).unwrap_or_else(|e| Arc::clone(&e.into_inner()))
    }

    /// Stores `req`: the series this node holds through `local` (which appends and commits
    /// them, as primaries or replicas), the others as copies sent to their nodes on
    /// `runtime`. Blocks until every
    /// series is on `replication` nodes; fails with [`Error::Unavailable`] when too few
    /// nodes answer, and with the peer's refusal when a peer refuses a copy (400). A failed
    /// request may leave some series stored: this node's share and the copies that were,
    /// which the sender's retry stores again without harm (a sample at a timestamp a
    /// series holds is a duplicate).
    pub fn write(
        &self,
        req: &RequestView<'_>,
        runtime: &tokio::runtime::Handle,
        mut local: impl FnMut(&RequestView<'_>, Role) -> Result<Appended, Error>,
    ) -> Result<Appended, Error> {
        let placement = self.placement();
        let Placement { peers, me, rank } = &*placement;
        let me = *me;
        let rankings: Vec<Vec<usize>> = req.series().map(|s| rank(series_hash(s.labels))).collect();
        // per series: the nodes that hold it, and those it is being sent to
        let mut stored: Vec<Vec<usize>> = vec![Vec::new(); rankings.len()];
        // peers that lately took no copy are passed over, unless a series would have too few
        // nodes without them
        let passed_over = self.passed_over(peers);
        let mut sending: Vec<Vec<usize>> =
            rankings.iter().map(|r| first_nodes(r, self.replication, &passed_over)).collect();
        let mut down: BTreeSet<usize> = BTreeSet::new();
        // per series: the node that holds, or is being sent, its primary copy
        let mut primary: Vec<Option<usize>> = vec![None; rankings.len()];
        loop {
            // a series without a primary (its first copy, or one whose primary's node failed)
            // gets it on the first node of its ranking it is being sent to
            for (p, nodes) in primary.iter_mut().zip(&sending) {
                if p.is_none() {
                    *p = nodes.first().copied();
                }
            }
            let role = |i: usize, node: usize| role_of(primary[i], node);
            // this node's share first: a series it cannot store fails the request before any copy
            for wanted in [Role::Primary, Role::Replica] {
                let mine: BTreeSet<usize> = (0..sending.len())
                    .filter(|&i| sending[i].contains(&me) && role(i, me) == wanted)
                    .collect();
                if !mine.is_empty() {
                    local(&req.subset(|i| mine.contains(&i)), wanted)?;
                }
            }
            for (nodes, held) in sending.iter_mut().zip(stored.iter_mut()) {
                if nodes.contains(&me) {
                    nodes.retain(|&n| n != me);
                    held.push(me);
                }
            }
            let mut owed: BTreeMap<(usize, Role), Vec<usize>> = BTreeMap::new();
            for (i, nodes) in sending.iter().enumerate() {
                for &n in nodes {
                    owed.entry((n, role(i, n))).or_default().push(i);
                }
            }
            if owed.is_empty() {
                // what the request holds, counted once however many copies it has
                return Ok(count(req));
            }
            for (node, answer) in runtime.block_on(self.send(peers, req, &owed)) {
                self.note_answer(&peers[node], !matches!(answer, Err(Copy::Down(_))));
                match answer {
                    Ok(()) => {
                        for ((_, _), series) in owed.range((node, Role::Primary)..=(node, Role::Replica)) {
                            for &i in series {
                                stored[i].push(node);
                            }
                        }
                    }
                    Err(Copy::Refused(e)) => return Err(e),
                    Err(Copy::Down(e)) => {
                        tracing::warn!(peer = %peers[node], error = %e, "a cluster peer took no copy: the next node takes it");
                        down.insert(node);
                        // its primaries go to the next nodes that are sent the series
                        for p in primary.iter_mut().filter(|p| **p == Some(node)) {
                            *p = None;
                        }
                    }
                }
            }
            // a series short of copies goes to the next nodes of its ranking
            for (i, ranking) in rankings.iter().enumerate() {
                let need = self.replication.saturating_sub(stored[i].len());
                sending[i] = ranking
                    .iter()
                    .copied()
                    .filter(|n| !down.contains(n) && !stored[i].contains(n))
                    .take(need)
                    .collect();
                if sending[i].len() < need {
                    return Err(Error::Unavailable(format!(
                        "fewer than {} cluster nodes can store a series; not answering: {}",
                        self.replication,
                        down.iter().map(|&d| peers[d].as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
    }

    /// The peer that alone holds what hashes to `hash` (a pushed group, kept in one node's
    /// memory): the first node of its ranking; `None` when that is this node.
    pub fn sole_owner(&self, hash: u64) -> Option<String> {
        let p = self.placement();
        let owner = (p.rank)(hash).first().copied().unwrap_or(p.me);
        (owner != p.me).then(|| p.peers[owner].clone())
    }

    /// Sends a request to `peer` marked as a hop, so that the peer handles it itself, and
    /// gives back its answer: the status and the body. Fails when the peer does not answer
    /// within the copies' timeout.
    pub async fn relay(
        &self,
        peer: &str,
        method: &str,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut request = self
            .client
            .request(method, self.access.url(peer, path_and_query))
            .header(CLUSTER_HOP_HEADER, "1")
            .timeout(COPY_TIMEOUT)
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        let answer = request.send().await.map_err(|e| e.to_string())?;
        let status = answer.status().as_u16();
        let body = answer.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, body.to_vec()))
    }

    /// Sends each node in `owed` the series it is owed, all at once; each node's answer.
    async fn send(
        &self,
        peers: &[String],
        req: &RequestView<'_>,
        owed: &BTreeMap<(usize, Role), Vec<usize>>,
    ) -> Vec<(usize, Result<(), Copy>)> {
        self.send_bodies(peers, encode_owed(req, owed)).await
    }

    /// Sends each body to its node with its role, all at once; each node's answer (a node
    /// with several bodies answers once: its first failure, else success).
    async fn send_bodies(
        &self,
        peers: &[String],
        bodies: Vec<(usize, Role, Vec<u8>)>,
    ) -> Vec<(usize, Result<(), Copy>)> {
        let mut asks = Vec::new();
        for (node, role, body) in bodies {
            let request = self
                .client
                .post(self.access.url(&peers[node], "/api/v1/write"))
                .header("Content-Type", COPY_CONTENT_TYPE)
                .header("Content-Encoding", "snappy")
                .header("X-Prometheus-Remote-Write-Version", "2.0.0")
                .header(CLUSTER_HOP_HEADER, role.hop())
                .timeout(COPY_TIMEOUT)
                .body(body);
            asks.push((node, tokio::spawn(request.send())));
        }
        let mut out: Vec<(usize, Result<(), Copy>)> = Vec::new();
        for (node, ask) in asks {
            let answer = match ask.await {
                Ok(Ok(r)) if r.status().is_success() => Ok(()),
                // only a 400 is about the samples; any other answer is the peer's state
                // (a 404 from a receiver turned off, a 413, a 5xx)
                Ok(Ok(r)) if r.status() == reqwest::StatusCode::BAD_REQUEST => {
                    let text = r.text().await.unwrap_or_default();
                    Err(Copy::Refused(Error::Peer(format!("{}: {}", peers[node], text.trim()))))
                }
                Ok(Ok(r)) => Err(Copy::Down(format!("answered {}", r.status()))),
                Ok(Err(e)) => Err(Copy::Down(e.to_string())),
                Err(e) => Err(Copy::Down(e.to_string())),
            };
            // a node with several bodies answers once: its first failure, else success
            match out.iter_mut().find(|(n, _)| *n == node) {
                Some((_, first @ Ok(()))) => *first = answer,
                Some(_) => {}
                None => out.push((node, answer)),
            }
        }
        out
    }
}

/// An [`Appender`](promflow_storage::Appender) whose batch is stored on the nodes that own
/// each series, as a remote-write request sent to this node is ([`ClusterWrites::write`]):
/// a cluster's rules write their recorded series and alerts through it, so that each output
/// series has its R copies where it hashes, not one on every node that evaluates the rule.
///
/// Every node evaluates every rule at the same timestamps, so an owner is usually sent the
/// same sample by each node; the first is stored and the identical others are ignored. A
/// sample that differs from the one already stored (a node evaluated over data another had
/// not seen yet) is not an error either: the first stored stays, as for a series whose
/// owners each evaluated their own value. Unlike storage's own appenders, this one checks
/// samples only when it commits; `commit` fails only when too few nodes can store the batch.
pub struct PlacedAppender {
    writes: Arc<ClusterWrites>,
    db: Arc<promflow_storage::Db>,
    runtime: tokio::runtime::Handle,
    batch: ScrapedSamples,
}

impl PlacedAppender {
    /// A batch to store through `writes`, this node's share in `db`, the copies sent on
    /// `runtime`.
    pub fn new(
        writes: Arc<ClusterWrites>,
        db: Arc<promflow_storage::Db>,
        runtime: tokio::runtime::Handle,
    ) -> PlacedAppender {
        PlacedAppender { writes, db, runtime, batch: ScrapedSamples::default() }
    }

    /// Stores the batch: this node's share in its storage, the rest on the other owners.
    fn place(&self, batch: ScrapedSamples) -> Result<(), Error> {
        let raw = request_of(batch).encode_to_vec();
        let req = RequestView::parse(&raw)?;
        let db = &self.db;
        let write =
            || self.writes.write(&req, &self.runtime, |part, role| store_keeping_first(db, part, role));
        // a copy waits on the runtime: from one of its threads (a reload that marks removed
        // rules' series stale) the wait happens on a thread of its own
        let result = if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(write)
                    .join()
                    .unwrap_or_else(|_| Err(Error::Unavailable("placing a rule's output panicked".into())))
            })
        } else {
            write()
        };
        match result {
            Ok(_) => Ok(()),
            // a peer that holds other values at these timestamps refuses the copy whole
            Err(Error::Peer(e)) => {
                tracing::debug!(error = %e, "a cluster peer kept the samples it holds of a rule's output");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl promflow_storage::Appender for PlacedAppender {
    fn append(&mut self, labels: &Labels, t: i64, v: f64) -> Result<(), promflow_storage::Error> {
        self.batch.floats.push((labels.clone(), t, v));
        Ok(())
    }

    fn prepare_refs(
        &mut self,
        series: &[promflow_storage::LabelsRef<'_>],
    ) -> Vec<Option<promflow_storage::Prepared>> {
        vec![None; series.len()]
    }

    fn append_prepared(
        &mut self,
        _: promflow_storage::Prepared,
        _: i64,
        _: f64,
    ) -> Result<(), promflow_storage::Error> {
        Err(promflow_storage::Error::NotPrepared)
    }

    fn append_histogram(
        &mut self,
        labels: &Labels,
        t: i64,
        h: promflow_storage::FloatHistogram,
    ) -> Result<(), promflow_storage::Error> {
        self.batch.histograms.push((labels.clone(), t, h));
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<promflow_storage::CommitStats, promflow_storage::Error> {
        let batch = std::mem::take(&mut self.batch);
        let samples = batch.floats.len() + batch.histograms.len();
        if samples == 0 {
            return Ok(promflow_storage::CommitStats::default());
        }
        self.place(batch).map_err(|e| promflow_storage::Error::Unplaced(e.to_string()))?;
        Ok(promflow_storage::CommitStats { samples, new_series: 0 })
    }

    fn rollback(self: Box<Self>) {}
}

/// Stores `part` of a placed batch ([`PlacedAppender`]) here, as `role`: a sample that
/// conflicts with what the node holds (another node's copy of the same output came first)
/// is left out, the rest stored.
fn store_keeping_first(
    db: &Arc<promflow_storage::Db>,
    part: &RequestView<'_>,
    role: Role,
) -> Result<Appended, Error> {
    let mut app = db.appender();
    if role == Role::Replica {
        app.mark_replica();
    }
    let kept = |appended: Result<(), promflow_storage::Error>| match appended {
        Err(e) if e.is_sample_error() => {
            tracing::debug!(error = %e, "a rule's output sample is held already");
            Ok(())
        }
        other => other,
    };
    for series in part.series() {
        let labels = Labels::from_pairs(series.labels.iter().copied());
        for &(t, v) in series.samples {
            kept(app.append(&labels, t, v))?;
        }
        for h in series.histograms {
            kept(app.append_histogram(&labels, h.timestamp, h.to_float_histogram()?))?;
        }
    }
    match app.commit() {
        Ok(_) => Ok(count(part)),
        Err(e) => kept(Err(e)).map(|()| count(part)).map_err(Error::Storage),
    }
}

/// A write request of `stored`: a time series for each sample, in the order stored.
fn request_of(stored: ScrapedSamples) -> WriteRequest {
    let series = |labels: &Labels| TimeSeries {
        labels: labels.iter().map(|l| crate::read::label(&l.name, &l.value)).collect(),
        ..TimeSeries::default()
    };
    let floats = stored.floats.iter().map(|(labels, t, v)| TimeSeries {
        samples: vec![Sample { value: *v, timestamp: *t }],
        ..series(labels)
    });
    let histograms = stored.histograms.iter().map(|(labels, t, h)| TimeSeries {
        histograms: vec![crate::Histogram::from_float_histogram(*t, h)],
        ..series(labels)
    });
    WriteRequest { timeseries: floats.chain(histograms).collect(), metadata: Vec::new() }
}

/// The bodies that carry each node in `owed` the series of `req` it is owed, with their node
/// and role.
fn encode_owed(
    req: &RequestView<'_>,
    owed: &BTreeMap<(usize, Role), Vec<usize>>,
) -> Vec<(usize, Role, Vec<u8>)> {
    let mut out = Vec::new();
    for (&(node, role), series) in owed {
        out.extend(copies(req, series).into_iter().map(|body| (node, role, body)));
    }
    out
}

/// The role of `node`'s copy of a series whose primary copy is on `primary`.
fn role_of(primary: Option<usize>, node: usize) -> Role {
    if primary == Some(node) {
        Role::Primary
    } else {
        Role::Replica
    }
}

/// The `copies` nodes of `ranking` (nodes, best first) a series' copies go to: the first
/// ones not `passed_over`, or, when too few are, the first ones (a series is not left with
/// fewer copies for a peer that merely failed lately).
fn first_nodes(ranking: &[usize], copies: usize, passed_over: &BTreeSet<usize>) -> Vec<usize> {
    let up: Vec<usize> = ranking.iter().copied().filter(|n| !passed_over.contains(n)).take(copies).collect();
    if up.len() == copies.min(ranking.len()) {
        up
    } else {
        ranking.iter().copied().take(copies).collect()
    }
}

/// Copies travel as remote write 2.0, which carries the samples' start timestamps.
const COPY_CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

/// The largest body a copy is sent in: the receiving handler takes up to 2 MiB, and a
/// zstd request re-encoded with snappy can grow past what it was.
const MAX_COPY_BYTES: usize = 1 << 20;

/// The bodies that carry `series` of `req` to a peer: one, or halves of the series until
/// each body is under [`MAX_COPY_BYTES`].
fn copies(req: &RequestView<'_>, series: &[usize]) -> Vec<Vec<u8>> {
    let wanted: BTreeSet<usize> = series.iter().copied().collect();
    let body = crate::encode_v2(&req.subset(|i| wanted.contains(&i)).to_write_request_v2());
    if body.len() <= MAX_COPY_BYTES || series.len() < 2 {
        return vec![body];
    }
    let (a, b) = series.split_at(series.len() / 2);
    let mut out = copies(req, a);
    out.extend(copies(req, b));
    out
}

/// The samples, histograms and exemplars `req` holds.
fn count(req: &RequestView<'_>) -> Appended {
    Appended {
        samples: req.series().map(|s| s.samples.len()).sum(),
        histograms: req.series().map(|s| s.histograms.len()).sum(),
        exemplars: req.series().map(|s| s.exemplars.len()).sum(),
    }
}

/// Why a copy was not stored.
enum Copy {
    /// The peer refused the samples (4xx): the sender must fix them.
    Refused(Error),
    /// The peer did not answer, or failed (5xx): another node takes the copy.
    Down(String),
}

/// A hash of a series' labels as sent, the same on every node: Prometheus's hash of the
/// label set they make (pairs with empty values dropped, sorted by name, the last of a
/// duplicated name kept). It is the key the cluster's dataflow computation gives the series,
/// so the computation keeps a series' samples on a worker of the node that places its
/// primary copy by this hash.
pub fn series_hash(labels: &[(&str, &str)]) -> u64 {
    if let Some(normalized) = LabelsRef::from_normalized(labels) {
        return normalized.prometheus_hash();
    }
    let mut pairs = labels.to_vec();
    LabelsRef::normalize(&mut pairs).prometheus_hash()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Label, Sample, TimeSeries, WriteRequest};

    /// A peer on loopback that answers every request with `status` (`204 No Content`) and
    /// tells, for each, the value of its hop header.
    fn recording_peer(status: &'static str) -> (String, std::sync::mpsc::Receiver<String>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let (mut hop, mut length) = (String::new(), 0usize);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix(&format!("{CLUSTER_HOP_HEADER}:")) {
                        hop = v.trim().to_string();
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let _ = tx.send(hop);
                let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = reader.get_mut().write_all(answer.as_bytes());
            }
        });
        (address, rx)
    }

    /// An encoded write request of one series `a` with one sample.
    fn one_sample_request() -> Vec<u8> {
        let ts = TimeSeries {
            labels: vec![Label { name: "__name__".into(), value: "a".into() }],
            samples: vec![Sample { value: 1.0, timestamp: 1 }],
            ..TimeSeries::default()
        };
        prost::Message::encode_to_vec(&WriteRequest { timeseries: vec![ts], metadata: vec![] })
    }

    /// When the node that was to hold a series' primary copy is down, the next node sent the
    /// series holds the primary, even when an earlier node of the ranking holds a replica:
    /// every series has a copy that feeds the cluster's dataflow.
    #[test]
    fn a_failed_primary_passes_to_the_next_copy() {
        let (live, hops) = recording_peer("204 No Content");
        // ranked: the refusing node 1 first, this node 0 second, node 2 last
        let placement = Placement {
            peers: vec!["127.0.0.1:9".into(), "127.0.0.1:1".into(), live],
            me: 0,
            rank: Arc::new(|_| vec![1, 0, 2]),
        };
        let writes = ClusterWrites::new(placement, 2, &PeerAccess::default()).unwrap();
        let raw = one_sample_request();
        let req = RequestView::parse(&raw).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut here = Vec::new();
        let written = writes.write(&req, runtime.handle(), |part, role| {
            here.push(role);
            Ok(count(part))
        });
        assert_eq!(written.unwrap().samples, 1);
        assert_eq!(here, vec![Role::Replica], "this node, second in the ranking, holds a replica");
        let hop = hops.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(Role::of_hop(&hop), Role::Primary, "node 2 took the failed node's primary");
    }

    /// A peer that took no copy is passed over by the next writes: they do not wait for it
    /// again.
    #[test]
    fn a_failing_peer_is_passed_over() {
        let (failing, asked) = recording_peer("503 Service Unavailable");
        // ranked: the failing node 1 first, this node 0 next
        let placement =
            Placement { peers: vec!["127.0.0.1:9".into(), failing], me: 0, rank: Arc::new(|_| vec![1, 0]) };
        let writes = ClusterWrites::new(placement, 1, &PeerAccess::default()).unwrap();
        let raw = one_sample_request();
        let req = RequestView::parse(&raw).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut here = 0;
        for _ in 0..3 {
            let written = writes.write(&req, runtime.handle(), |part, _| {
                here += 1;
                Ok(count(part))
            });
            assert_eq!(written.unwrap().samples, 1);
        }
        assert_eq!(here, 3, "this node, next in the ranking, stored every write");
        assert!(asked.recv_timeout(std::time::Duration::from_secs(10)).is_ok());
        assert!(asked.try_recv().is_err(), "the failing peer was asked again");
    }

    /// A placed batch whose sample conflicts with one the owner holds (another node's copy
    /// of the same rule output came first) keeps the stored sample and stores the rest.
    #[test]
    fn a_placed_batch_keeps_what_its_owner_holds() {
        use promflow_storage::{Appender as _, MatchOp, Matcher, Querier as _};
        let dir = tempfile::tempdir().unwrap();
        let db = promflow_storage::Db::open(dir.path(), Default::default()).unwrap();
        let labels = |name: &str| Labels::from_pairs([("__name__", name)]);
        let mut first = db.appender();
        first.append(&labels("out"), 1_000, 1.0).unwrap();
        first.commit().unwrap();
        // a cluster of this node alone: it owns every series
        let placement = Placement { peers: vec!["127.0.0.1:9".into()], me: 0, rank: Arc::new(|_| vec![0]) };
        let writes = Arc::new(ClusterWrites::new(placement, 1, &PeerAccess::default()).unwrap());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut placed = Box::new(PlacedAppender::new(writes, Arc::clone(&db), runtime.handle().clone()));
        placed.append(&labels("out"), 1_000, 2.0).unwrap();
        placed.append(&labels("other"), 1_000, 3.0).unwrap();
        assert_eq!(placed.commit().unwrap().samples, 2);
        let value = |name: &str| {
            let m = [Matcher::new(MatchOp::Equal, "__name__", name).unwrap()];
            db.select(&m, 0, 2_000)
                .unwrap()
                .iter()
                .flat_map(|s| s.samples.iter().map(|s| s.v).collect::<Vec<f64>>())
                .collect::<Vec<f64>>()
        };
        assert_eq!(value("out"), vec![1.0], "the stored sample stays");
        assert_eq!(value("other"), vec![3.0]);
    }

    /// A subset re-encoded for a peer holds exactly the chosen series, samples and all.
    #[test]
    fn a_subset_travels_whole() {
        let ts = |name: &str, t: i64| TimeSeries {
            labels: vec![Label { name: "__name__".into(), value: name.into() }],
            samples: vec![Sample { value: t as f64, timestamp: t }, Sample { value: 1.5, timestamp: t + 1 }],
            ..TimeSeries::default()
        };
        let req = WriteRequest { timeseries: vec![ts("a", 1), ts("b", 2), ts("c", 3)], metadata: vec![] };
        let raw = prost::Message::encode_to_vec(&req);
        let view = RequestView::parse(&raw).unwrap();
        let part = view.subset(|i| i != 1).to_write_request();
        assert_eq!(part.timeseries, vec![ts("a", 1), ts("c", 3)]);
    }

    /// A copy travels as remote write 2.0 with its samples' start timestamps, series built
    /// by a caller (OTLP) included, a series without any reading as zeros.
    #[test]
    fn a_copy_carries_start_timestamps() {
        let mut view = RequestView::default();
        let series = |labels, samples, starts| crate::SeriesView {
            labels,
            samples,
            starts,
            histograms: &[],
            exemplars: &[],
        };
        view.push_series(series(&[("__name__", "a")], &[(10, 1.0)], &[])).unwrap();
        view.push_series(series(&[("__name__", "b")], &[(20, 2.0), (30, 3.0)], &[5, 6])).unwrap();
        view.push_series(series(&[("__name__", "c")], &[(40, 4.0)], &[])).unwrap();
        assert!(view.push_series(series(&[("__name__", "d")], &[(1, 1.0)], &[1, 2])).is_err());
        let raw = prost::Message::encode_to_vec(&view.subset(|_| true).to_write_request_v2());
        let back = RequestView::parse_v2(&raw).unwrap();
        let samples: Vec<Vec<(i64, f64)>> = back.series().map(|s| s.samples.to_vec()).collect();
        let starts: Vec<Vec<i64>> = back.series().map(|s| s.starts.to_vec()).collect();
        assert_eq!(samples, vec![vec![(10, 1.0)], vec![(20, 2.0), (30, 3.0)], vec![(40, 4.0)]]);
        assert_eq!(starts, vec![vec![0], vec![5, 6], vec![0]]);
    }

    /// A series hashes alike whatever the order of its labels, and without its empty ones,
    /// as the label set it makes does: the dataflow's key of the series.
    #[test]
    fn a_series_hash_ignores_label_order_and_empty_labels() {
        let a = series_hash(&[("__name__", "x"), ("job", "a"), ("zone", "")]);
        let b = series_hash(&[("job", "a"), ("__name__", "x")]);
        assert_eq!(a, b);
        assert_ne!(a, series_hash(&[("__name__", "x"), ("job", "b")]));
        let set = Labels::from_pairs([("job", "a"), ("__name__", "x")]);
        assert_eq!(a, set.prometheus_hash(), "the key the dataflow gives the series");
    }
}
