//! Reading from `remote_read` endpoints in queries: [`RemoteReaders`] holds the configured
//! endpoints, and [`Fanout`] is the querier a query runs on — promflow's own storage merged
//! with what the endpoints answer, as Prometheus's fanout storage does.
//!
//! Per endpoint and selection: a query is sent only if it has every `required_matchers`
//! pair as an equality matcher; without `read_recent`, only the part of the range older than
//! the oldest local sample is asked for (nothing when the range is all local); the external
//! labels are added as equality matchers the query lacks, and taken off the answer's series
//! (`filter_external_labels`, default on). Series with the same labels from several places
//! are merged, local samples winning at equal timestamps. Answers are asked for as streamed
//! chunks first (XOR chunks of floats; integer and float histogram chunks of native
//! histograms), samples second. An endpoint that fails does not
//! fail the query: its error becomes a warning of the answer, as in Prometheus.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use promflow_config::cluster_secret::{ClusterSecret, CLUSTER_AUTH_HEADER};
use promflow_config::{Config, RemoteReadConfig};
use promflow_storage::{
    HistogramSample, HistogramSeries, Labels, MatchOp, Matcher, Querier, Samples, Series, Timestamp,
};

use crate::chunks::{read_frames, FLOAT_HISTOGRAM, HISTOGRAM, XOR};
use crate::partial::{PartialRequest, PartialResponse, PARTIAL_PATH};
use crate::read::{LabelMatcher, MatcherType, Query, ReadRequest, ReadResponse, ResponseType};
use crate::Error;

/// One `remote_read` endpoint.
pub struct RemoteReader {
    config: RemoteReadConfig,
    client: reqwest::Client,
    external: Labels,
    /// For a cluster's other node: its address, and the peers passed over lately.
    peer: Option<(String, Arc<SilentPeers>)>,
}

/// How long reads and lookups pass over a cluster peer that let one of them wait out its
/// whole timeout: a peer cut off without a word would otherwise cost every query, and
/// every batch rule evaluation, the timeout.
const SILENT_PASS_OVER: Duration = Duration::from_secs(30);

/// The cluster peers that lately let a read or a lookup wait out its timeout, by address,
/// with when.
#[derive(Default)]
struct SilentPeers(Mutex<HashMap<String, Instant>>);

impl SilentPeers {
    /// Whether `peer` is passed over now: it let a request time out less than
    /// [`SILENT_PASS_OVER`] ago.
    fn passed_over(&self, peer: &str) -> bool {
        let silent = self.0.lock().unwrap_or_else(|e| e.into_inner());
        silent.get(peer).is_some_and(|at| at.elapsed() < SILENT_PASS_OVER)
    }

    /// Takes note of how `peer` answered: `timed_out`, or otherwise (an answer, or an
    /// error that came at once, which costs no wait).
    fn note(&self, peer: &str, timed_out: bool) {
        let mut silent = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if timed_out {
            silent.insert(peer.to_string(), Instant::now());
        } else if !silent.is_empty() {
            silent.remove(peer);
        }
    }
}

/// Why a passed-over peer was not asked, for warnings and logs.
fn passed_over_message() -> String {
    format!("not asked: it let a request wait out its timeout less than {}s ago", SILENT_PASS_OVER.as_secs())
}

impl RemoteReader {
    /// The endpoint's name (its URL when unnamed).
    pub fn name(&self) -> &str {
        if self.config.name.is_empty() {
            &self.config.url
        } else {
            &self.config.name
        }
    }

    /// Whether this endpoint is a cluster peer passed over now ([`SILENT_PASS_OVER`]).
    fn passed_over(&self) -> bool {
        self.peer.as_ref().is_some_and(|(peer, silent)| silent.passed_over(peer))
    }

    /// Takes note of a request's outcome for the cluster peer this endpoint is, if it is one.
    fn note(&self, timed_out: bool) {
        if let Some((peer, silent)) = &self.peer {
            silent.note(peer, timed_out);
        }
    }

    /// An error of a request to the endpoint, noted ([`RemoteReader::note`]) and in words.
    fn failed(&self, e: reqwest::Error) -> String {
        self.note(e.is_timeout());
        e.to_string()
    }

    /// Asks this endpoint, a cluster peer, for an aggregation's part (`request`), waiting at
    /// most `timeout`; marked as a hop by the peer's headers, as its reads are.
    async fn partial(&self, request: &PartialRequest, timeout: Duration) -> Result<PartialResponse, String> {
        let Some((peer, _)) = &self.peer else {
            return Err(format!("{} is not a cluster peer", self.name()));
        };
        if self.passed_over() {
            return Err(format!("cluster peer {peer}: {}", passed_over_message()));
        }
        // a peer's endpoint is its remote read path on its scheme and address
        let base = self.config.url.strip_suffix(PEER_READ_PATH).unwrap_or(&self.config.url);
        let post =
            self.client.post(format!("{base}{PARTIAL_PATH}")).timeout(timeout).body(request.encode_body());
        let (_, body) = self.post_protobuf(post).await.map_err(|e| format!("cluster peer {peer}: {e}"))?;
        PartialResponse::decode_body(&body).map_err(|e| format!("cluster peer {peer}: {e}"))
    }

    /// Sends `post`, a snappy-compressed protobuf body, with the endpoint's headers, and
    /// notes how it went: the answer's content type and body, or why there is none (an
    /// answer other than 2xx quotes the start of its body).
    async fn post_protobuf(
        &self,
        mut post: reqwest::RequestBuilder,
    ) -> Result<(Option<String>, impl std::ops::Deref<Target = [u8]>), String> {
        post = post.header("Content-Type", "application/x-protobuf").header("Content-Encoding", "snappy");
        for (k, v) in &self.config.headers {
            post = post.header(k, v);
        }
        let resp = post.send().await.map_err(|e| self.failed(e))?;
        let status = resp.status();
        let content_type =
            resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
        let body = resp.bytes().await.map_err(|e| self.failed(e))?;
        self.note(false);
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(256)]).trim().to_string();
            return Err(format!("{status}: {text}"));
        }
        Ok((content_type, body))
    }

    /// Whether a selection with `matchers` over `mint..=maxt` goes to this endpoint, and
    /// over which range: `None` when it does not.
    fn range_for(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        oldest_local: Option<Timestamp>,
    ) -> Option<(Timestamp, Timestamp)> {
        let has_required = self.config.required_matchers.iter().all(|(name, value)| {
            matchers.iter().any(|m| m.op == MatchOp::Equal && m.name == *name && m.value == *value)
        });
        if !has_required {
            return None;
        }
        match oldest_local {
            Some(oldest) if !self.config.read_recent => (mint < oldest).then(|| (mint, maxt.min(oldest))),
            _ => Some((mint, maxt)),
        }
    }

    /// The series the endpoint has for `matchers` in `mint..=maxt`, external labels taken off:
    /// their float samples and their native histograms.
    async fn read(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Answer, String> {
        let mut wire: Vec<LabelMatcher> = matchers.iter().map(to_wire).collect();
        let mut added = Vec::new();
        if self.config.filter_external_labels {
            for l in &self.external {
                if !matchers.iter().any(|m| m.name == l.name) {
                    wire.push(LabelMatcher {
                        r#type: MatcherType::Eq as i32,
                        name: l.name.to_string(),
                        value: l.value.to_string(),
                    });
                    added.push(l.name.clone());
                }
            }
        }
        let query = Query { start_timestamp_ms: mint, end_timestamp_ms: maxt, matchers: wire, hints: None };
        let accepted = vec![ResponseType::StreamedXorChunks as i32, ResponseType::Samples as i32];
        let request = ReadRequest { queries: vec![query], accepted_response_types: accepted };
        let post = self
            .client
            .post(&self.config.url)
            .header("X-Prometheus-Remote-Read-Version", "0.1.0")
            .body(request.encode_body());
        let (content_type, body) = self.post_protobuf(post).await?;
        let streamed = content_type.is_some_and(|ct| ct.starts_with("application/x-streamed-protobuf"));
        let label_set = |labels: Vec<crate::Label>| {
            let mut labels = Labels::from_pairs(labels.into_iter().map(|l| (l.name, l.value)));
            for name in &added {
                labels.remove(name);
            }
            labels
        };
        let mut out: Vec<SeriesRead> = Vec::new();
        let in_range = |t: &i64| (mint..=maxt).contains(t);
        if streamed {
            // whole chunks come back: samples outside the range are dropped, and a series
            // split over frames is joined again
            for frame in read_frames(&body, self.config.chunked_read_limit).map_err(|e| e.to_string())? {
                for s in frame.chunked_series {
                    let labels = label_set(s.labels);
                    let (mut floats, mut hists) = (Vec::new(), Vec::new());
                    for c in &s.chunks {
                        let torn = || format!("a torn or malformed chunk of encoding {}", c.r#type);
                        match c.r#type {
                            XOR => {
                                let decoded = promflow_storage::decode_xor_chunk(&c.data).ok_or_else(torn)?;
                                floats.extend(decoded.into_iter().filter(|(t, _)| in_range(t)));
                            }
                            HISTOGRAM | FLOAT_HISTOGRAM => {
                                let decoded = if c.r#type == HISTOGRAM {
                                    promflow_storage::decode_integer_histogram_chunk(&c.data)
                                } else {
                                    promflow_storage::decode_float_histogram_chunk(&c.data)
                                };
                                hists
                                    .extend(decoded.ok_or_else(torn)?.into_iter().filter(|h| in_range(&h.t)));
                            }
                            other => return Err(format!("chunk encoding {other} is not supported")),
                        }
                    }
                    match out.last_mut() {
                        Some((last, f, h)) if *last == labels => {
                            f.extend(floats);
                            h.extend(hists);
                        }
                        _ => out.push((labels, floats, hists)),
                    }
                }
            }
        } else {
            let answer = ReadResponse::decode_body(&body).map_err(|e| e.to_string())?;
            for ts in answer.results.into_iter().flat_map(|r| r.timeseries) {
                let floats = ts.samples.iter().map(|s| (s.timestamp, s.value)).collect();
                let hists = ts
                    .histograms
                    .iter()
                    .map(|h| {
                        let decoded = h.to_float_histogram().map_err(|e| e.to_string())?;
                        Ok(HistogramSample { t: h.timestamp, h: Arc::new(decoded) })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                out.push((label_set(ts.labels), floats, hists));
            }
        }
        let mut answer = Answer::default();
        for (labels, floats, hists) in out {
            if !hists.is_empty() {
                answer.hists.push(HistogramSeries { labels: labels.clone(), samples: hists });
            }
            if !floats.is_empty() {
                let (t, v): (Vec<i64>, Vec<f64>) = floats.into_iter().unzip();
                answer.floats.push(Series { labels, samples: Samples::new(t, v) });
            }
        }
        Ok(answer)
    }
}

fn to_wire(m: &Matcher) -> LabelMatcher {
    let ty = match m.op {
        MatchOp::Equal => MatcherType::Eq,
        MatchOp::NotEqual => MatcherType::Neq,
        MatchOp::Regex => MatcherType::Re,
        MatchOp::NotRegex => MatcherType::Nre,
    };
    LabelMatcher { r#type: ty as i32, name: m.name.clone(), value: m.value.clone() }
}

/// The configured `remote_read` endpoints, and a cluster's other nodes; replaced as a whole
/// on reload.
pub struct RemoteReaders {
    readers: RwLock<Vec<Arc<RemoteReader>>>,
    /// The other nodes of a cluster (`host:port`), read as endpoints of their own.
    peers: RwLock<Vec<String>>,
    /// The client label lookups reach the peers with ([`RemoteReaders::ask_peers`]).
    peer_client: reqwest::Client,
    /// How the peers are reached: their scheme, TLS settings and the cluster's secret.
    peer_access: PeerAccess,
    /// How long a read or a lookup waits for a peer ([`PEER_TIMEOUT`]).
    peer_timeout: Duration,
    /// The peers reads and lookups pass over now.
    silent: Arc<SilentPeers>,
    /// How many nodes store each series (`--cluster.replication-factor`): while fewer peers
    /// than that fail a read, every series has a copy on a node that answered.
    replication: usize,
}

/// How long a query or a lookup ([`RemoteReaders::ask_peers`]) waits for a cluster peer's
/// answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// The header on the lookups a cluster node sends its peers ([`RemoteReaders::ask_peers`]):
/// a node answers such a request from its own storage, without asking its peers in turn.
pub const CLUSTER_HOP_HEADER: &str = "promflow-cluster-hop";

/// The path a cluster's nodes read each other's storage at (remote read).
const PEER_READ_PATH: &str = "/api/v1/read";

/// How a node reaches the other nodes of its cluster: over plain HTTP, or over HTTPS with
/// `tls` (the peers' certificates verified by its CA, this node's own certificate presented
/// to them); with the cluster's secret, every request carries the token that proves it
/// ([`ClusterSecret::http_token`]).
#[derive(Clone, Default)]
pub struct PeerAccess {
    token: Option<String>,
    tls: Option<promflow_config::TlsConfig>,
}

impl PeerAccess {
    /// Access with the cluster's `secret`, over TLS with `tls` when given. Fails when the TLS
    /// settings cannot be used (a file that cannot be read, a key that does not parse).
    pub fn new(
        secret: Option<&ClusterSecret>,
        tls: Option<promflow_config::TlsConfig>,
    ) -> Result<PeerAccess, Error> {
        let access = PeerAccess { token: secret.map(ClusterSecret::http_token), tls };
        access.client()?;
        Ok(access)
    }

    /// The address of `path_and_query` on `peer` (`host:port`).
    pub fn url(&self, peer: &str, path_and_query: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{peer}{path_and_query}")
    }

    /// A client for the peers: every request carries the token, and speaks TLS with the
    /// settings when there are some.
    pub(crate) fn client(&self) -> Result<reqwest::Client, Error> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(mut v) =
            self.token.as_deref().and_then(|t| reqwest::header::HeaderValue::from_str(t).ok())
        {
            // kept out of debug output
            v.set_sensitive(true);
            headers.insert(CLUSTER_AUTH_HEADER, v);
        }
        let tls = self.tls.clone().unwrap_or_default();
        let builder = promflow_scrape::client::builder(&tls, PEER_TIMEOUT)
            .map_err(|e| Error::Client("the cluster's peers".into(), e.to_string()))?;
        builder
            .default_headers(headers)
            .build()
            .map_err(|e| Error::Client("the cluster's peers".into(), e.to_string()))
    }
}

impl Default for RemoteReaders {
    fn default() -> Self {
        RemoteReaders {
            readers: RwLock::default(),
            peers: RwLock::default(),
            peer_client: reqwest::Client::default(),
            peer_access: PeerAccess::default(),
            peer_timeout: PEER_TIMEOUT,
            silent: Arc::default(),
            replication: 1,
        }
    }
}

impl RemoteReaders {
    /// No endpoints.
    pub fn new() -> RemoteReaders {
        RemoteReaders::default()
    }

    /// Also reads the other nodes of a cluster (`host:port` of their HTTP listeners): every
    /// query reads their storage through remote read, recent data included, and merges what
    /// they hold with what this node holds, reaching them as `access` says. Each series is
    /// stored on `replication` nodes.
    pub fn with_cluster_peers(
        peers: Vec<String>,
        access: &PeerAccess,
        replication: usize,
    ) -> Result<RemoteReaders, Error> {
        Ok(RemoteReaders {
            peers: RwLock::new(peers),
            peer_client: access.client()?,
            peer_access: access.clone(),
            replication: replication.max(1),
            ..RemoteReaders::default()
        })
    }

    /// Whether an answer that `failed` of the cluster's peers left out may lack data: some
    /// series may have had every copy on them. With fewer failed peers than the nodes each
    /// series is stored on, a copy of every series was read from a node that answered.
    pub fn may_lack_data(&self, failed: usize) -> bool {
        failed >= self.replication
    }

    /// How many nodes store each series (`--cluster.replication-factor`; 1 without a
    /// cluster).
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// Replaces the other nodes of the cluster; the next [`RemoteReaders::apply`] makes
    /// queries read them.
    pub fn set_cluster_peers(&self, peers: Vec<String>) {
        if let Ok(mut p) = self.peers.write() {
            *p = peers;
        }
    }

    /// The other nodes of the cluster now in force.
    fn cluster_peers(&self) -> Vec<String> {
        self.peers.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Takes `cfg`'s `remote_read` endpoints (with its external labels). A client that cannot
    /// be built (a TLS file) refuses the whole set, leaving the old one.
    pub fn apply(&self, cfg: &Config) -> Result<(), Error> {
        let external = cfg.global.external_labels.clone();
        let peers = self.cluster_peers();
        let access = &self.peer_access;
        let token = access.token.iter().map(|t| (CLUSTER_AUTH_HEADER.to_string(), t.clone()));
        let peers = peers.iter().map(|p| {
            let config = RemoteReadConfig {
                url: access.url(p, PEER_READ_PATH),
                name: format!("cluster peer {p}"),
                read_recent: true,
                remote_timeout: self.peer_timeout,
                // answered from the peer's own storage, not read on from its peers in turn
                headers: token.clone().chain([(CLUSTER_HOP_HEADER.to_string(), "1".to_string())]).collect(),
                tls_config: access.tls.clone().unwrap_or_default(),
                ..RemoteReadConfig::default()
            };
            (config, Some((p.clone(), Arc::clone(&self.silent))))
        });
        let mut fresh = Vec::new();
        for (rr, peer) in cfg.remote_read.iter().map(|rr| (rr.clone(), None)).chain(peers) {
            let client = promflow_scrape::client::http_client(&rr.http_client(), rr.remote_timeout)
                .map_err(|e| Error::Client(format!("remote_read {}", rr.url), e.to_string()))?;
            fresh.push(Arc::new(RemoteReader { config: rr, client, external: external.clone(), peer }));
        }
        if let Ok(mut r) = self.readers.write() {
            *r = fresh;
        }
        Ok(())
    }

    /// The endpoints now in force.
    pub fn current(&self) -> Vec<Arc<RemoteReader>> {
        self.readers.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// The endpoints in force when all are cluster peers (none is a configured
    /// `remote_read` endpoint, whose series no peer aggregates): what a query's aggregations
    /// are asked of in parts ([`ask_partials`]). `None` otherwise.
    pub fn cluster_peers_only(&self) -> Option<Vec<Arc<RemoteReader>>> {
        let current = self.current();
        current.iter().all(|r| r.peer.is_some()).then_some(current)
    }

    /// Whether this node has cluster peers.
    pub fn has_cluster_peers(&self) -> bool {
        self.peers.read().is_ok_and(|p| !p.is_empty())
    }

    /// GETs `path_and_query` from every other node of the cluster at once, marked as a hop
    /// ([`CLUSTER_HOP_HEADER`]), and returns each answer's body, or why there is none (a
    /// peer passed over is not asked, [`SILENT_PASS_OVER`]).
    pub async fn ask_peers(&self, path_and_query: &str) -> Vec<Result<String, String>> {
        let client = &self.peer_client;
        let asks: Vec<_> = self
            .cluster_peers()
            .into_iter()
            .map(|peer| {
                let request = client
                    .get(self.peer_access.url(&peer, path_and_query))
                    .header(CLUSTER_HOP_HEADER, "1")
                    .timeout(self.peer_timeout);
                let silent = Arc::clone(&self.silent);
                tokio::spawn(async move {
                    if silent.passed_over(&peer) {
                        return Err(format!("cluster peer {peer}: {}", passed_over_message()));
                    }
                    let answer = request.send().await.and_then(|r| r.error_for_status());
                    let body = match answer {
                        Ok(r) => r.text().await,
                        Err(e) => Err(e),
                    };
                    silent.note(&peer, body.as_ref().is_err_and(reqwest::Error::is_timeout));
                    body.map_err(|e| format!("cluster peer {peer}: {e}"))
                })
            })
            .collect();
        let mut out = Vec::with_capacity(asks.len());
        for ask in asks {
            out.push(ask.await.unwrap_or_else(|e| Err(format!("asking a cluster peer: {e}"))));
        }
        out
    }

    /// The `data` of every other node's answer to the API request `path_and_query`
    /// ([`ask_peers`](Self::ask_peers)), or why there is none.
    pub async fn ask_peers_data(&self, path_and_query: &str) -> Vec<Result<serde_json::Value, String>> {
        let answers = self.ask_peers(path_and_query).await;
        answers
            .into_iter()
            .map(|answer| {
                let mut answer: serde_json::Value =
                    serde_json::from_str(&answer?).map_err(|e| format!("a cluster peer's answer: {e}"))?;
                Ok(answer["data"].take())
            })
            .collect()
    }

    /// `values` with every other node's answer to the list lookup `path_and_query` (label
    /// names or values, each node answering from its own storage) merged in, sorted and
    /// unique; and why each peer that failed has no part in them.
    pub async fn merge_peers_lists(
        &self,
        path_and_query: &str,
        mut values: Vec<String>,
    ) -> (Vec<String>, Vec<String>) {
        let mut failed = Vec::new();
        for data in self.ask_peers_data(path_and_query).await {
            let theirs = data.and_then(|data| {
                serde_json::from_value::<Vec<String>>(data)
                    .map_err(|e| format!("a cluster peer's lookup answer is not a list: {e}"))
            });
            match theirs {
                Ok(theirs) => values.extend(theirs),
                Err(e) => failed.push(e),
            }
        }
        values.sort();
        values.dedup();
        (values, failed)
    }
}

/// One series as an answer brings it: its labels, float samples and histograms.
type SeriesRead = (Labels, Vec<(i64, f64)>, Vec<HistogramSample>);

/// What an endpoint answers a selection: its float series and its histogram series.
#[derive(Default)]
struct Answer {
    floats: Vec<Series>,
    hists: Vec<HistogramSeries>,
}

/// The part of a selection's answer not asked for yet: the other kind of its series.
enum Leftover {
    Floats(Vec<Series>),
    Hists(Vec<HistogramSeries>),
}

/// A querier over local storage and remote read endpoints, for one query. Its methods block
/// on the endpoints' answers: call them off the async runtime's worker threads (from
/// `spawn_blocking`).
pub struct Fanout<'a> {
    local: &'a dyn Querier,
    remotes: Vec<Arc<RemoteReader>>,
    oldest_local: Option<Timestamp>,
    runtime: tokio::runtime::Handle,
    /// The endpoints' errors, each with the cluster peer it is about, if one.
    warnings: Mutex<Vec<(Option<String>, String)>>,
    /// How many nodes store each series ([`RemoteReaders::may_lack_data`]).
    replication: usize,
    /// The part of a selection's answers not yet taken, by selection: one request answers
    /// both the selection's floats and its histograms, which the executor asks for apart.
    pending: Mutex<HashMap<String, Leftover>>,
    /// Over a cluster, its nodes, asked label lookups (remote read has none) as a hop.
    cluster: Option<&'a RemoteReaders>,
}

impl<'a> Fanout<'a> {
    /// Local storage (holding samples from `oldest_local` on) and `remotes`, whose requests
    /// run on `runtime`.
    pub fn new(
        local: &'a dyn Querier,
        oldest_local: Option<Timestamp>,
        remotes: Vec<Arc<RemoteReader>>,
        runtime: tokio::runtime::Handle,
    ) -> Fanout<'a> {
        Fanout {
            local,
            remotes,
            oldest_local,
            runtime,
            warnings: Mutex::new(Vec::new()),
            replication: 1,
            pending: Mutex::new(HashMap::new()),
            cluster: None,
        }
    }

    /// Storage `db` and the endpoints `readers` have in force now, whose requests run on
    /// `runtime`.
    pub fn over(
        db: &'a promflow_storage::Db,
        readers: &RemoteReaders,
        runtime: tokio::runtime::Handle,
    ) -> Fanout<'a> {
        Fanout {
            replication: readers.replication,
            ..Fanout::new(db, db.oldest_sample_time(), readers.current(), runtime)
        }
    }

    /// Local storage `db` and the other nodes of the cluster among `readers`, without the
    /// configured `remote_read` endpoints: what one server's own storage answers (federation,
    /// remote read served to others).
    pub fn over_cluster(
        db: &'a promflow_storage::Db,
        readers: &'a RemoteReaders,
        runtime: tokio::runtime::Handle,
    ) -> Fanout<'a> {
        let peers = readers.current().into_iter().filter(|r| r.peer.is_some()).collect();
        Fanout {
            replication: readers.replication,
            cluster: Some(readers),
            ..Fanout::new(db, db.oldest_sample_time(), peers, runtime)
        }
    }

    /// `values` with the other cluster nodes' answers to the label lookup `path` (under
    /// `/api/v1/`, with `matchers` and the range added) merged in, each node answering from
    /// its own storage; without a cluster, `values`. A node that fails is a warning.
    fn with_cluster_lookup(
        &self,
        path: &str,
        matchers: &[Matcher],
        (mint, maxt): (Timestamp, Timestamp),
        values: Vec<String>,
    ) -> Vec<String> {
        let Some(readers) = self.cluster else { return values };
        let Ok(mut url) = reqwest::Url::parse(&format!("http://peer/api/v1/{path}")) else { return values };
        {
            let mut query = url.query_pairs_mut();
            if !matchers.is_empty() {
                let selector: Vec<String> = matchers.iter().map(Matcher::to_string).collect();
                query.append_pair("match[]", &format!("{{{}}}", selector.join(",")));
            }
            // the API's own defaults stand for the ends of time
            if mint > Timestamp::MIN / 2 {
                query.append_pair("start", &format!("{:.3}", mint as f64 / 1000.0));
            }
            if maxt < Timestamp::MAX / 2 {
                query.append_pair("end", &format!("{:.3}", maxt as f64 / 1000.0));
            }
        }
        let path_and_query = format!("{}?{}", url.path(), url.query().unwrap_or(""));
        let (values, failed) = self.runtime.block_on(readers.merge_peers_lists(&path_and_query, values));
        let mut warnings = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        warnings.extend(failed.into_iter().map(|e| (None, e)));
        values
    }

    /// Adds a line about endpoint `r` to the answer's `warnings`.
    fn warn(&self, r: &RemoteReader, line: String) {
        let peer = r.peer.as_ref().map(|(peer, _)| peer.clone());
        self.warnings.lock().unwrap_or_else(|e| e.into_inner()).push((peer, line));
    }

    /// The endpoints' errors so far, one line each, for the answer's `warnings`. The cluster
    /// peers' are left out while fewer of them failed than the nodes each series is stored
    /// on: every series was read from a copy on a node that answered.
    pub fn warnings(&self) -> Vec<String> {
        let warnings = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        let failed: HashSet<&String> = warnings.iter().filter_map(|(peer, _)| peer.as_ref()).collect();
        let complete = failed.len() < self.replication;
        warnings
            .iter()
            .filter(|(peer, _)| !(complete && peer.is_some()))
            .map(|(_, line)| line.clone())
            .collect()
    }

    /// What the endpoints that take this selection answer of one kind: the leftover of an
    /// earlier call for the other kind, when `mine` finds it is of this kind, else fetched
    /// now, the other kind (`split`) kept as the selection's leftover for its call.
    fn remote_part<T: Default>(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        mine: impl Fn(Leftover) -> Option<T>,
        split: impl Fn(Answer) -> (T, Leftover),
    ) -> T {
        if self.remotes.is_empty() {
            return T::default();
        }
        let key = format!("{mint} {maxt} {matchers:?}");
        let left = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        // a leftover of the other kind means this kind was taken already: fetched again
        if let Some(part) = left.and_then(mine) {
            return part;
        }
        let (part, other) = split(self.remote_select(matchers, mint, maxt));
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(key, other);
        part
    }

    /// What the endpoints that take this selection answer.
    fn remote_select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Answer {
        let mut out = Answer::default();
        // every endpoint at once: a query waits for the slowest, not for their sum
        let reads = self.remotes.iter().filter_map(|r| {
            let (from, to) = r.range_for(matchers, mint, maxt, self.oldest_local)?;
            if r.passed_over() {
                // in the answer's warnings, not logged at every query: its timeout was
                self.warn(r, format!("remote_read {}: {}", r.name(), passed_over_message()));
                return None;
            }
            Some(async move { (r, r.read(matchers, from, to).await) })
        });
        for (r, answer) in self.runtime.block_on(futures_util::future::join_all(reads)) {
            match answer {
                Ok(answer) => {
                    out.floats.extend(answer.floats);
                    out.hists.extend(answer.hists);
                }
                Err(e) => {
                    tracing::warn!(endpoint = %r.name(), error = %e, "remote read failed; answering without it");
                    self.warn(r, format!("remote_read {}: {e}", r.name()));
                }
            }
        }
        out
    }
}

/// Sends each request of `asks` to its cluster peer (an index into `peers`) at once on
/// `runtime`, waiting at most `timeout` for each; the answers are had from
/// [`PendingPartials::wait`].
pub fn ask_partials(
    peers: &[Arc<RemoteReader>],
    asks: Vec<(usize, PartialRequest)>,
    timeout: Duration,
    runtime: &tokio::runtime::Handle,
) -> PendingPartials {
    let asks = asks
        .into_iter()
        .filter_map(|(peer, request)| {
            let reader = Arc::clone(peers.get(peer)?);
            Some((peer, runtime.spawn(async move { reader.partial(&request, timeout).await })))
        })
        .collect();
    PendingPartials { runtime: runtime.clone(), asks }
}

/// Partial aggregations asked of cluster peers ([`ask_partials`]).
pub struct PendingPartials {
    runtime: tokio::runtime::Handle,
    asks: Vec<(usize, tokio::task::JoinHandle<Result<PartialResponse, String>>)>,
}

impl PendingPartials {
    /// Each peer's answer, by its index, once all have answered or failed. Blocks: call it off
    /// the async runtime's worker threads.
    pub fn wait(self) -> Vec<(usize, Result<PartialResponse, String>)> {
        let asks = self.asks;
        self.runtime.block_on(async move {
            let mut out = Vec::with_capacity(asks.len());
            for (peer, ask) in asks {
                out.push((peer, ask.await.unwrap_or_else(|e| Err(format!("asking a cluster peer: {e}")))));
            }
            out
        })
    }
}

/// Merges series with equal labels: samples in time order, the first source's sample kept
/// at a timestamp several have.
fn merge(sources: Vec<Series>) -> Vec<Series> {
    let mut by_labels: BTreeMap<Labels, Vec<Samples>> = BTreeMap::new();
    for s in sources {
        by_labels.entry(s.labels).or_default().push(s.samples);
    }
    by_labels
        .into_iter()
        .map(|(labels, parts)| {
            if parts.len() == 1 {
                let samples = parts.into_iter().next().unwrap_or_else(|| Samples::new(vec![], vec![]));
                return Series { labels, samples };
            }
            let mut points: BTreeMap<i64, f64> = BTreeMap::new();
            for p in &parts {
                for s in p.iter() {
                    points.entry(s.t).or_insert(s.v);
                }
            }
            let (t, v): (Vec<i64>, Vec<f64>) = points.into_iter().unzip();
            Series { labels, samples: Samples::new(t, v) }
        })
        .collect()
}

/// Merges histogram series with equal labels as [`merge`] merges float series.
fn merge_histograms(sources: Vec<HistogramSeries>) -> Vec<HistogramSeries> {
    let mut by_labels: BTreeMap<Labels, BTreeMap<i64, HistogramSample>> = BTreeMap::new();
    for s in sources {
        let samples = by_labels.entry(s.labels).or_default();
        for h in s.samples {
            samples.entry(h.t).or_insert(h);
        }
    }
    by_labels
        .into_iter()
        .map(|(labels, samples)| HistogramSeries { labels, samples: samples.into_values().collect() })
        .collect()
}

impl Querier for Fanout<'_> {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Series>, promflow_storage::Error> {
        let mut all = self.local.select(matchers, mint, maxt)?;
        let remote = self.remote_part(
            matchers,
            mint,
            maxt,
            |left| match left {
                Leftover::Floats(f) => Some(f),
                Leftover::Hists(_) => None,
            },
            |a| (a.floats, Leftover::Hists(a.hists)),
        );
        if remote.is_empty() {
            return Ok(all);
        }
        all.extend(remote);
        Ok(merge(all))
    }

    /// Local storage's groups when no endpoint is read; otherwise the whole selection (the
    /// endpoints answer a selection whole) as one group.
    fn select_in_groups(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        each: &mut dyn FnMut(Vec<Series>) -> bool,
    ) -> Result<(), promflow_storage::Error> {
        if self.remotes.is_empty() {
            return self.local.select_in_groups(matchers, mint, maxt, each);
        }
        each(self.select(matchers, mint, maxt)?);
        Ok(())
    }

    fn select_histograms(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<HistogramSeries>, promflow_storage::Error> {
        let mut all = self.local.select_histograms(matchers, mint, maxt)?;
        let remote = self.remote_part(
            matchers,
            mint,
            maxt,
            |left| match left {
                Leftover::Hists(h) => Some(h),
                Leftover::Floats(_) => None,
            },
            |a| (a.hists, Leftover::Floats(a.floats)),
        );
        if remote.is_empty() {
            return Ok(all);
        }
        all.extend(remote);
        Ok(merge_histograms(all))
    }

    /// Local only, as label names: remote read has no cheaper question than reading the
    /// histograms, and SQL asks it of every table it opens.
    fn has_histograms(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<bool, promflow_storage::Error> {
        self.local.has_histograms(matchers, mint, maxt)
    }

    /// Local only: remote read carries no start timestamps.
    fn select_start_timestamps(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<promflow_storage::StartTimestamps>, promflow_storage::Error> {
        self.local.select_start_timestamps(matchers, mint, maxt)
    }

    fn series(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Labels>, promflow_storage::Error> {
        let mut all = self.local.series(matchers, mint, maxt)?;
        let remote = self.remote_select(matchers, mint, maxt);
        all.extend(remote.floats.into_iter().map(|s| s.labels));
        all.extend(remote.hists.into_iter().map(|s| s.labels));
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// Local storage's, and over a cluster every node's (asked through the lookup API):
    /// remote read has no label-name request (nor has Prometheus's client), so the
    /// configured `remote_read` endpoints are not asked.
    fn label_names(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        let local = self.local.label_names(matchers, mint, maxt)?;
        Ok(self.with_cluster_lookup("labels", matchers, (mint, maxt), local))
    }

    /// As [`Fanout::label_names`].
    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        let local = self.local.label_values(name, matchers, mint, maxt)?;
        Ok(self.with_cluster_lookup(&format!("label/{name}/values"), matchers, (mint, maxt), local))
    }
}

/// A querier over local storage and the endpoints in force at each call, for a reader that
/// outlives one query (the rule manager): each call reads through a [`Fanout`] of its own,
/// and logs the endpoints' errors, which have no answer to go into. Blocks as [`Fanout`] does.
pub struct StandingFanout {
    local: Arc<promflow_storage::Db>,
    readers: Arc<RemoteReaders>,
    runtime: tokio::runtime::Handle,
    /// Whether it reads the cluster's other nodes only ([`Fanout::over_cluster`]), not the
    /// configured `remote_read` endpoints.
    cluster_only: bool,
    /// By thread (a rule group's): the part of its last selection's answer not taken yet,
    /// kept for its next call. The executor asks a selection's floats and its histograms
    /// in two calls, which one request answers.
    leftovers: Mutex<HashMap<std::thread::ThreadId, (String, Leftover)>>,
}

/// The threads whose leftovers a [`StandingFanout`] keeps at most: beyond (threads that ended
/// with a reload), it forgets them all.
const MAX_LEFTOVERS: usize = 64;

impl StandingFanout {
    /// Reads `local` and the endpoints of `readers`, whose requests run on `runtime`.
    pub fn new(
        local: Arc<promflow_storage::Db>,
        readers: Arc<RemoteReaders>,
        runtime: tokio::runtime::Handle,
    ) -> StandingFanout {
        StandingFanout { local, readers, runtime, cluster_only: false, leftovers: Mutex::new(HashMap::new()) }
    }

    /// Reads `local` and the cluster's other nodes among `readers`, without the configured
    /// `remote_read` endpoints ([`Fanout::over_cluster`]).
    pub fn over_cluster(
        local: Arc<promflow_storage::Db>,
        readers: Arc<RemoteReaders>,
        runtime: tokio::runtime::Handle,
    ) -> StandingFanout {
        StandingFanout { cluster_only: true, ..StandingFanout::new(local, readers, runtime) }
    }

    /// `read` over a fanout of the endpoints now in force, with what this thread's last
    /// call left of its answer.
    fn read<T>(&self, read: impl FnOnce(&Fanout<'_>) -> T) -> T {
        let fanout = if self.cluster_only {
            Fanout::over_cluster(self.local.as_ref(), &self.readers, self.runtime.clone())
        } else {
            Fanout::over(self.local.as_ref(), &self.readers, self.runtime.clone())
        };
        let thread = std::thread::current().id();
        let mut leftovers = self.leftovers.lock().unwrap_or_else(|e| e.into_inner());
        let offered = leftovers.remove(&thread).map(|(key, left)| {
            fanout.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), left);
            key
        });
        drop(leftovers);
        let out = read(&fanout);
        for warning in fanout.warnings() {
            tracing::warn!(%warning, "reading a remote endpoint");
        }
        // the offered leftover, if this call did not take it, is of no use any more; of the
        // rest, one selection's leftover is kept (with several, none rather than one at random)
        let mut pending = fanout.pending.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = offered {
            pending.remove(&key);
        }
        let left = (pending.len() == 1).then(|| pending.into_iter().next()).flatten();
        if let Some(left) = left {
            let mut leftovers = self.leftovers.lock().unwrap_or_else(|e| e.into_inner());
            if leftovers.len() >= MAX_LEFTOVERS {
                leftovers.clear();
            }
            leftovers.insert(thread, left);
        }
        out
    }
}

impl Querier for StandingFanout {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Series>, promflow_storage::Error> {
        self.read(|f| f.select(matchers, mint, maxt))
    }

    fn select_in_groups(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        each: &mut dyn FnMut(Vec<Series>) -> bool,
    ) -> Result<(), promflow_storage::Error> {
        self.read(|f| f.select_in_groups(matchers, mint, maxt, each))
    }

    fn select_histograms(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<HistogramSeries>, promflow_storage::Error> {
        self.read(|f| f.select_histograms(matchers, mint, maxt))
    }

    fn has_histograms(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<bool, promflow_storage::Error> {
        self.read(|f| f.has_histograms(matchers, mint, maxt))
    }

    fn select_start_timestamps(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<promflow_storage::StartTimestamps>, promflow_storage::Error> {
        self.read(|f| f.select_start_timestamps(matchers, mint, maxt))
    }

    fn series(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Labels>, promflow_storage::Error> {
        self.read(|f| f.series(matchers, mint, maxt))
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        self.read(|f| f.label_names(matchers, mint, maxt))
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        self.read(|f| f.label_values(name, matchers, mint, maxt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(read_recent: bool, required: &[(&str, &str)]) -> RemoteReader {
        let config = RemoteReadConfig {
            url: "http://127.0.0.1:1/api/v1/read".into(),
            read_recent,
            required_matchers: required.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        RemoteReader { config, client: reqwest::Client::new(), external: Labels::new(), peer: None }
    }

    #[test]
    fn which_selections_and_ranges_go_remote() {
        let eq = |n: &str, v: &str| Matcher::new(MatchOp::Equal, n, v).unwrap();
        let ms = [eq("__name__", "up"), eq("job", "a")];
        // without read_recent only what is older than local storage, clamped to its start
        let r = reader(false, &[]);
        assert_eq!(r.range_for(&ms, 0, 100, Some(50)), Some((0, 50)));
        assert_eq!(r.range_for(&ms, 60, 100, Some(50)), None);
        assert_eq!(r.range_for(&ms, 0, 100, None), Some((0, 100)), "empty local storage");
        assert_eq!(reader(true, &[]).range_for(&ms, 60, 100, Some(50)), Some((60, 100)));
        // required matchers must be equality matchers of the selection
        assert_eq!(reader(true, &[("job", "a")]).range_for(&ms, 0, 1, None), Some((0, 1)));
        assert_eq!(reader(true, &[("job", "b")]).range_for(&ms, 0, 1, None), None);
        let re = [Matcher::new(MatchOp::Regex, "job", "a").unwrap()];
        assert_eq!(reader(true, &[("job", "a")]).range_for(&re, 0, 1, None), None);
    }

    /// A cluster peer that takes connections and never answers costs one query its
    /// timeout; the reads and lookups after it pass it over at once, with a warning.
    #[test]
    fn a_silent_peer_is_passed_over() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        // holds every connection it takes, answering nothing
        std::thread::spawn(move || silent.incoming().collect::<Vec<_>>());
        let timeout = Duration::from_millis(500);
        let readers = RemoteReaders {
            peer_timeout: timeout,
            ..RemoteReaders::with_cluster_peers(vec![addr], &PeerAccess::default(), 1).unwrap()
        };
        readers.apply(&Config::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = promflow_storage::Db::open(dir.path(), Default::default()).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let up = [Matcher::new(MatchOp::Equal, "__name__", "up").unwrap()];
        let query = || {
            let fanout = Fanout::new(&*db, None, readers.current(), runtime.handle().clone());
            let started = Instant::now();
            fanout.select(&up, 0, 1000).unwrap();
            (started.elapsed(), fanout.warnings())
        };
        let (waited, warnings) = query();
        assert!(waited >= timeout, "answered after {waited:?}: {warnings:?}");
        assert_eq!(warnings.len(), 1);
        assert!(!warnings[0].contains("not asked"), "{warnings:?}");
        let (waited, warnings) = query();
        assert!(waited < timeout / 2, "the silent peer was asked again: {waited:?}");
        assert!(warnings.len() == 1 && warnings[0].contains("not asked"), "{warnings:?}");
        let started = Instant::now();
        let answers = runtime.block_on(readers.ask_peers("/api/v1/labels"));
        assert!(started.elapsed() < timeout / 2, "the silent peer was asked a lookup");
        assert!(matches!(&answers[..], [Err(e)] if e.contains("not asked")), "{answers:?}");
    }

    /// With two copies of every series, one peer that fails leaves the answer complete: no
    /// warning. Two that fail may have held both copies of a series: both are named.
    #[test]
    fn failed_peers_are_warnings_when_copies_may_be_missing() {
        // addresses nothing listens on: every request is refused at once
        let refused = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let dir = tempfile::tempdir().unwrap();
        let db = promflow_storage::Db::open(dir.path(), Default::default()).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let up = [Matcher::new(MatchOp::Equal, "__name__", "up").unwrap()];
        let warnings = |peers: Vec<String>| {
            let readers = RemoteReaders::with_cluster_peers(peers, &PeerAccess::default(), 2).unwrap();
            readers.apply(&Config::default()).unwrap();
            let fanout = Fanout::over(&db, &readers, runtime.handle().clone());
            fanout.select(&up, 0, 1000).unwrap();
            fanout.warnings()
        };
        assert_eq!(warnings(vec![refused()]), Vec::<String>::new());
        let (a, b) = (refused(), refused());
        let named = warnings(vec![a.clone(), b.clone()]);
        assert_eq!(named.len(), 2, "{named:?}");
        assert!(named[0].contains(&a) && named[1].contains(&b), "{named:?}");
    }

    #[test]
    fn merged_series_keep_the_first_sources_sample_at_equal_times() {
        let s = |name: &str, t: Vec<i64>, v: Vec<f64>| Series {
            labels: Labels::from_pairs([("__name__", name)]),
            samples: Samples::new(t, v),
        };
        let merged = merge(vec![
            s("a", vec![10, 20], vec![1.0, 2.0]),
            s("b", vec![5], vec![9.0]),
            s("a", vec![5, 20, 30], vec![0.5, 7.0, 3.0]),
        ]);
        assert_eq!(merged.len(), 2);
        let a: Vec<(i64, f64)> = merged[0].samples.iter().map(|x| (x.t, x.v)).collect();
        assert_eq!(a, vec![(5, 0.5), (10, 1.0), (20, 2.0), (30, 3.0)]);
        assert_eq!(merged[1].samples.len(), 1);
    }
}
