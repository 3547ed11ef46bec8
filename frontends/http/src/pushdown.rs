//! Aggregations evaluated in parts on a cluster's nodes (`docs/cluster.md`, "Queries read
//! every node").
//!
//! The node a query is asked ([`ClusterPushdown`]) asks every other node, at once, for the
//! part of an aggregation over the series that node holds, and evaluates its own part
//! meanwhile. Each part also lists the series it read, by label hash, with a digest of the
//! samples read. A series held by several nodes (replicas) must count once: when all its
//! copies have the same digest, the first node that holds it keeps it, and the others are
//! asked again with it left out; when they differ (a replica missed samples, the series
//! moved), the node evaluates the aggregation itself over every node's samples merged, as
//! without the pushdown. The same happens when a node fails or answers something it cannot
//! take. Every node serves its parts at [`promflow_remote::partial::PARTIAL_PATH`]
//! ([`partial`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use promflow_batch::{evaluate_partial, AggregatePushdown, PartialAggregate, PartialGroup, Steps};
use promflow_plan::{Level, Origin, Plan, QueryOptions, SourcePos};
use promflow_remote::partial::{self, PartialRequest, PartialResponse};
use promflow_remote::reader::{ask_partials, RemoteReader, RemoteReaders, CLUSTER_HOP_HEADER};
use promflow_storage::{
    HistogramSeries, Labels, Matcher, Querier, Series, StartTimestamps, Timestamp, METRIC_NAME,
};

use crate::AppState;

/// How long a node waits for another's part at most, as for its remote reads.
const PART_TIMEOUT: Duration = Duration::from_secs(30);

/// The most series a request for a part may leave out (8 million: their set takes about
/// 150 MB while the part is evaluated). A node asked to leave out more refuses, and the
/// asking node reads the samples instead.
const MAX_LEFT_OUT: usize = 1 << 23;

/// How many aggregations were evaluated in parts on the cluster's nodes, and how many the
/// asked node evaluated over every node's samples because the parts could not be had.
#[derive(Default)]
pub struct PushdownCounts {
    /// Aggregations combined from the nodes' parts.
    pub in_parts: AtomicU64,
    /// Aggregations evaluated over the merged samples instead.
    pub merged: AtomicU64,
}

/// The digest of an aggregation's plan: how another node, compiling the same query text,
/// finds the same aggregation. The plan's debug form holds its operators, matchers and
/// parameters; the positions in the text are left out, so that a rule's plan, compiled from
/// the expression as written, has the digest of the plan of its one-line form.
fn plan_digest(plan: &Plan) -> u64 {
    fn forget_positions(plan: &mut Plan) {
        match plan {
            Plan::Select { origin, .. }
            | Plan::WindowFunction { origin, .. }
            | Plan::VectorFunction { origin, .. }
            | Plan::Aggregate { origin, .. }
            | Plan::Join { origin, .. } => *origin = Origin::default(),
            _ => {}
        }
        for child in plan.children_mut() {
            forget_positions(child);
        }
    }
    let mut plan = plan.clone();
    forget_positions(&mut plan);
    xxhash_rust::xxh3::xxh3_64(format!("{plan:?}").as_bytes())
}

/// The aggregation in `plan` whose digest is `digest`.
fn find_aggregate(plan: &Plan, digest: u64) -> Option<&Plan> {
    if matches!(plan, Plan::Aggregate { .. }) && plan_digest(plan) == digest {
        return Some(plan);
    }
    plan.children().into_iter().find_map(|c| find_aggregate(c, digest))
}

/// What a part's selections read of one series.
#[derive(Clone, Copy)]
struct SeriesRead {
    digest: u64,
    /// The hash of the series' labels without the metric name (0 when not asked for).
    unnamed: u64,
}

/// A querier over a node's own storage that leaves out the series `exclude` names (by label
/// hash) and keeps, of each series it lets through, the digest of what was read of it.
struct DigestQuerier<'a> {
    inner: &'a dyn Querier,
    exclude: HashSet<u64>,
    /// Whether each series' hash without its metric name is wanted.
    unnamed: bool,
    read: Mutex<HashMap<u64, SeriesRead>>,
    /// A native histogram was read: its samples are not in the digests.
    histograms: std::sync::atomic::AtomicBool,
}

impl<'a> DigestQuerier<'a> {
    fn new(inner: &'a dyn Querier, exclude: &[u64], unnamed: bool) -> DigestQuerier<'a> {
        DigestQuerier {
            inner,
            exclude: exclude.iter().copied().collect(),
            unnamed,
            read: Mutex::default(),
            histograms: Default::default(),
        }
    }

    /// The label hash of the series `labels` when it is let through.
    fn kept(&self, labels: &Labels) -> Option<u64> {
        let hash = labels.prometheus_hash();
        (!self.exclude.contains(&hash)).then_some(hash)
    }

    /// Takes note of `bytes` read of the series `labels`, whose label hash is `hash`.
    fn note(&self, hash: u64, labels: &Labels, bytes: &[u8]) {
        let digest = xxhash_rust::xxh3::xxh3_64(bytes);
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let entry = read.entry(hash).or_insert_with(|| {
            let unnamed = if self.unnamed {
                let mut unnamed = labels.clone();
                unnamed.retain(|l| l.name != METRIC_NAME);
                unnamed.prometheus_hash()
            } else {
                0
            };
            SeriesRead { digest: 0, unnamed }
        });
        // the selections of one query read a series in the same order on every node
        entry.digest = entry.digest.rotate_left(7) ^ digest;
    }

    /// The series read: label hashes, digests and (when wanted) hashes without the name, in
    /// hash order.
    fn series(&self) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(u64, SeriesRead)> = read.iter().map(|(h, r)| (*h, *r)).collect();
        all.sort_unstable_by_key(|(h, _)| *h);
        let hashes = all.iter().map(|(h, _)| *h).collect();
        let digests = all.iter().map(|(_, r)| r.digest).collect();
        let unnamed = if self.unnamed { all.iter().map(|(_, r)| r.unnamed).collect() } else { Vec::new() };
        (hashes, digests, unnamed)
    }
}

impl Querier for DigestQuerier<'_> {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Series>, promflow_storage::Error> {
        let mut all = self.inner.select(matchers, mint, maxt)?;
        let mut bytes = Vec::new();
        all.retain(|s| {
            let Some(hash) = self.kept(&s.labels) else { return false };
            bytes.clear();
            let view = s.samples.view();
            bytes.extend(view.t.iter().flat_map(|t| t.to_le_bytes()));
            bytes.extend(view.v.iter().flat_map(|v| v.to_bits().to_le_bytes()));
            self.note(hash, &s.labels, &bytes);
            true
        });
        Ok(all)
    }

    fn select_histograms(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<HistogramSeries>, promflow_storage::Error> {
        let mut all = self.inner.select_histograms(matchers, mint, maxt)?;
        all.retain(|s| self.kept(&s.labels).is_some());
        if all.iter().any(|s| !s.samples.is_empty()) {
            self.histograms.store(true, Ordering::Relaxed);
        }
        Ok(all)
    }

    fn has_histograms(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<bool, promflow_storage::Error> {
        self.inner.has_histograms(matchers, mint, maxt)
    }

    fn select_start_timestamps(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<StartTimestamps>, promflow_storage::Error> {
        let mut all = self.inner.select_start_timestamps(matchers, mint, maxt)?;
        let mut bytes = Vec::new();
        all.retain(|s| {
            let Some(hash) = self.kept(&s.labels) else { return false };
            bytes.clear();
            bytes.extend(s.runs.iter().flat_map(|r| [r.from, r.to, r.start]).flat_map(|t| t.to_le_bytes()));
            self.note(hash, &s.labels, &bytes);
            true
        });
        Ok(all)
    }

    fn series(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<Labels>, promflow_storage::Error> {
        self.inner.series(matchers, mint, maxt)
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        self.inner.label_names(matchers, mint, maxt)
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, promflow_storage::Error> {
        self.inner.label_values(name, matchers, mint, maxt)
    }
}

/// One node's part and the series it read.
struct Part {
    aggregate: PartialAggregate,
    series: Vec<u64>,
    digests: Vec<u64>,
    unnamed: Vec<u64>,
}

/// Evaluates the part of `aggregate` over `local` without the series `exclude` names, listing
/// the series' hashes without their names when `unnamed`.
fn local_part(
    aggregate: &Plan,
    local: &dyn Querier,
    opts: &QueryOptions,
    steps: Steps,
    (exclude, unnamed): (&[u64], bool),
) -> Result<Part, String> {
    let querier = DigestQuerier::new(local, exclude, unnamed);
    let part = evaluate_partial(aggregate, &querier, opts, steps).map_err(|e| e.to_string())?;
    if querier.histograms.load(Ordering::Relaxed) {
        return Err("native histograms are not aggregated in parts".into());
    }
    let (series, digests, unnamed) = querier.series();
    Ok(Part { aggregate: part, series, digests, unnamed })
}

impl Part {
    /// A part as a node answered it, with the hashes without names when `unnamed`.
    fn from_wire(answer: PartialResponse, unnamed: bool) -> Result<Part, String> {
        let n = answer.series.len();
        if answer.digests.len() != n || (unnamed && answer.unnamed.len() != n) {
            return Err("an answer's series and digests differ in number".into());
        }
        let groups = answer
            .groups
            .into_iter()
            .map(|g| PartialGroup {
                labels: Labels::from_pairs(g.labels.into_iter().map(|l| (l.name, l.value))),
                drop_name: g.drop_name,
                values: g.values,
                counts: g.counts,
                compensations: g.compensations,
            })
            .collect();
        let annotations = answer
            .annotations
            .into_iter()
            .map(|a| {
                let level = if a.warning { Level::Warning } else { Level::Info };
                (level, a.message, (a.line > 0).then_some(SourcePos { line: a.line, col: a.col }))
            })
            .collect();
        Ok(Part {
            aggregate: PartialAggregate { groups, annotations },
            series: answer.series,
            digests: answer.digests,
            unnamed: answer.unnamed,
        })
    }

    /// The part as a node answers it.
    fn into_wire(self) -> PartialResponse {
        PartialResponse {
            groups: self
                .aggregate
                .groups
                .into_iter()
                .map(|g| partial::PartialGroup {
                    labels: g
                        .labels
                        .iter()
                        .map(|l| promflow_remote::read::label(&l.name, &l.value))
                        .collect(),
                    drop_name: g.drop_name,
                    values: g.values,
                    counts: g.counts,
                    compensations: g.compensations,
                })
                .collect(),
            annotations: self
                .aggregate
                .annotations
                .into_iter()
                .map(|(level, message, pos)| partial::Annotation {
                    warning: level == Level::Warning,
                    message,
                    line: pos.map_or(0, |p| p.line),
                    col: pos.map_or(0, |p| p.col),
                })
                .collect(),
            series: self.series,
            digests: self.digests,
            unnamed: self.unnamed,
        }
    }
}

/// The aggregations of one query, evaluated in parts on the cluster's nodes.
struct ClusterPushdown<'a> {
    /// The node's own storage.
    local: &'a dyn Querier,
    /// The other nodes, when the query reads no other `remote_read` endpoint.
    peers: Option<Vec<Arc<RemoteReader>>>,
    /// Where the requests to them run.
    runtime: tokio::runtime::Handle,
    /// The query's options (limits, deadline, features).
    opts: QueryOptions,
    /// The request every part is asked with, before its aggregation and steps are filled in.
    template: PartialRequest,
    /// Where the outcome is counted.
    counts: &'a PushdownCounts,
    /// The cluster's readers: how many of the nodes may fail before a series has no copy
    /// left ([`RemoteReaders::may_lack_data`]).
    readers: &'a RemoteReaders,
}

impl ClusterPushdown<'_> {
    /// How long a part may take: the query's time left, at most [`PART_TIMEOUT`].
    fn timeout(&self) -> Duration {
        let left = self.opts.deadline.map_or(PART_TIMEOUT, |d| d.saturating_duration_since(Instant::now()));
        left.min(PART_TIMEOUT)
    }

    /// Every node's part, the asked node's first, or why not.
    fn parts(
        &self,
        aggregate: &Plan,
        steps: Steps,
        names_may_collide: bool,
    ) -> Result<Vec<PartialAggregate>, String> {
        let peers = self.peers.as_deref().ok_or("a remote_read endpoint is read too")?;
        let request = PartialRequest {
            aggregate: plan_digest(aggregate),
            start_ms: steps.start,
            end_ms: steps.end,
            step_ms: steps.step,
            query_start_ms: steps.query_start,
            query_end_ms: steps.query_end,
            timeout_ms: self.timeout().as_millis() as i64,
            unnamed: names_may_collide,
            ..self.template.clone()
        };
        let asks = (0..peers.len()).map(|p| (p, request.clone())).collect();
        let pending = ask_partials(peers, asks, self.timeout(), &self.runtime);
        let local = local_part(aggregate, self.local, &self.opts, steps, (&[], names_may_collide));
        let answers = pending.wait();
        // the asked node first: it never leaves anything out, so it is never asked again;
        // each other part with the peer it came from
        let mut parts = vec![local?];
        let mut from = vec![usize::MAX];
        let mut failed = 0;
        for (peer, answer) in answers {
            match answer {
                Ok(answer) => {
                    parts.push(Part::from_wire(answer, names_may_collide)?);
                    from.push(peer);
                }
                // every series it holds has a copy on a node that answered: counted there
                Err(e) if !self.readers.may_lack_data(failed + 1) => {
                    tracing::debug!(error = %e, "a node's part left out: its series' copies count elsewhere");
                    failed += 1;
                }
                Err(e) => return Err(e),
            }
        }
        // each series counts in the first part that holds it, when every copy is the same
        let mut first: HashMap<u64, u64> = HashMap::new();
        let mut unnamed: HashMap<u64, u64> = HashMap::new();
        let mut leave_out: Vec<Vec<u64>> = vec![Vec::new(); parts.len()];
        let mut keeps_some = vec![false; parts.len()];
        for (k, part) in parts.iter().enumerate() {
            for (i, (&series, &digest)) in part.series.iter().zip(&part.digests).enumerate() {
                match first.get(&series) {
                    Some(&d) if d == digest => leave_out[k].push(series),
                    Some(_) => return Err("a series' copies differ".into()),
                    None => {
                        first.insert(series, digest);
                        keeps_some[k] = true;
                        let bare = part.unnamed.get(i).copied();
                        if bare.is_some_and(|b| unnamed.insert(b, series).is_some_and(|s| s != series)) {
                            return Err("two series differ only in their names".into());
                        }
                    }
                }
            }
        }
        // a part that holds copies counted elsewhere is asked again without them; by peer,
        // the index of its part and what it was asked to leave out
        let mut again: Vec<(usize, PartialRequest)> = Vec::new();
        let mut exclusions: HashMap<usize, (usize, HashSet<u64>)> = HashMap::new();
        for (k, exclude) in leave_out.into_iter().enumerate() {
            if keeps_some[k] && !exclude.is_empty() {
                exclusions.insert(from[k], (k, exclude.iter().copied().collect()));
                again.push((from[k], PartialRequest { exclude, ..request.clone() }));
            }
        }
        let answers = if again.is_empty() {
            Vec::new()
        } else {
            ask_partials(peers, again, self.timeout(), &self.runtime).wait()
        };
        let mut out = Vec::with_capacity(parts.len());
        let mut redone: HashMap<usize, Part> = HashMap::new();
        for (p, answer) in answers {
            let part = Part::from_wire(answer?, names_may_collide)?;
            let Some((k, left_out)) = exclusions.remove(&p) else {
                return Err("a part came from a node not asked for it".into());
            };
            // between the two asks, samples or series may have arrived: the second part must
            // read what the first read, less what it left out, or copies could count twice
            let before = &parts[k];
            let expected: Vec<(u64, u64)> = before
                .series
                .iter()
                .zip(&before.digests)
                .filter(|(s, _)| !left_out.contains(s))
                .map(|(s, d)| (*s, *d))
                .collect();
            let got: Vec<(u64, u64)> =
                part.series.iter().copied().zip(part.digests.iter().copied()).collect();
            if got != expected {
                return Err("a node's series changed between its two parts".into());
            }
            redone.insert(k, part);
        }
        for (k, part) in parts.into_iter().enumerate() {
            if !keeps_some[k] {
                continue;
            }
            match redone.remove(&k) {
                Some(again) => out.push(again.aggregate),
                None => out.push(part.aggregate),
            }
        }
        Ok(out)
    }
}

impl AggregatePushdown for ClusterPushdown<'_> {
    fn partials(
        &self,
        aggregate: &Plan,
        steps: Steps,
        names_may_collide: bool,
    ) -> Option<Vec<PartialAggregate>> {
        match self.parts(aggregate, steps, names_may_collide) {
            Ok(parts) => {
                self.counts.in_parts.fetch_add(1, Ordering::Relaxed);
                Some(parts)
            }
            Err(why) => {
                tracing::debug!(reason = %why, "aggregation evaluated over every node's samples");
                self.counts.merged.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn parts_unused(&self) {
        tracing::debug!(
            "ties among the parts' ranked members: aggregation evaluated over every node's samples"
        );
        self.counts.in_parts.fetch_sub(1, Ordering::Relaxed);
        self.counts.merged.fetch_add(1, Ordering::Relaxed);
    }
}

/// The request an aggregation's parts of the query `text`, compiled with `compile` and
/// evaluated with `opts`, are asked with, before its aggregation and steps are filled in.
pub(crate) fn part_template(
    text: &str,
    compile: &promflow_promql::CompileOptions,
    opts: &QueryOptions,
) -> PartialRequest {
    PartialRequest {
        query: text.to_string(),
        lookback_ms: opts.lookback_ms,
        compile_step_ms: compile.step.as_millis() as i64,
        compile_range_ms: compile.range.as_millis() as i64,
        delayed_name_removal: opts.delayed_name_removal,
        use_start_timestamps: opts.use_start_timestamps,
        ..Default::default()
    }
}

/// Evaluates `plan` over this node's storage and what the `remote_read` endpoints and the
/// cluster's other nodes hold, as a query does; in a cluster, with `template` (the query's
/// text, [`part_template`]), its aggregations in parts on the nodes where it can. The
/// endpoints' errors are the answer's warnings. Blocks on the endpoints: call it on the
/// query pool.
pub(crate) fn evaluate_over_cluster(
    state: &AppState,
    plan: &Plan,
    opts: &QueryOptions,
    template: Option<PartialRequest>,
    runtime: tokio::runtime::Handle,
) -> Result<promflow_plan::Evaluation, promflow_plan::Error> {
    let pushdown =
        template.filter(|_| state.remote_read.has_cluster_peers()).map(|template| ClusterPushdown {
            local: state.db.as_ref(),
            peers: state.remote_read.cluster_peers_only(),
            runtime: runtime.clone(),
            opts: opts.clone(),
            template,
            counts: &state.http_metrics.pushdown,
            readers: &state.remote_read,
        });
    let storage = crate::api::query::fanout(state, runtime);
    let pushdown = pushdown.as_ref().map(|p| p as &dyn AggregatePushdown);
    let mut res = promflow_batch::evaluate_with(plan, &storage, opts, pushdown);
    if let Ok(r) = &mut res {
        for w in storage.warnings() {
            r.annotations.add(Level::Warning, w, None);
        }
    }
    res
}

/// The aggregations of the rules a cluster node evaluates in batch, in parts on the nodes.
pub struct RulePushdown {
    db: Arc<promflow_storage::Db>,
    readers: Arc<RemoteReaders>,
    runtime: tokio::runtime::Handle,
    counts: Arc<PushdownCounts>,
}

impl RulePushdown {
    /// Over this node's storage `db` and the cluster's other nodes among `readers`, asked on
    /// `runtime`; the outcomes counted in `counts` (the node's API queries' counts).
    pub fn new(
        db: Arc<promflow_storage::Db>,
        readers: Arc<RemoteReaders>,
        runtime: tokio::runtime::Handle,
        counts: Arc<PushdownCounts>,
    ) -> RulePushdown {
        RulePushdown { db, readers, runtime, counts }
    }
}

impl promflow_rules::PushdownFor for RulePushdown {
    fn pushdown(&self, text: &str, opts: &QueryOptions) -> Option<Box<dyn AggregatePushdown + '_>> {
        if !self.readers.has_cluster_peers() {
            return None;
        }
        // a rule's expression has no step() and range() of a range query
        let template = part_template(text, &promflow_promql::CompileOptions::default(), opts);
        Some(Box::new(ClusterPushdown {
            local: self.db.as_ref(),
            peers: self.readers.cluster_peers_only(),
            runtime: self.runtime.clone(),
            opts: opts.clone(),
            template,
            counts: &self.counts,
            readers: &self.readers,
        }))
    }
}

/// Why a node refuses to evaluate a part.
fn refuse(status: StatusCode, why: String) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// Serves `POST /api/v1/cluster/partial` to the cluster's other nodes (requests marked as a
/// hop): the part of an aggregation over this node's own storage, evaluated in a query slot
/// that is free when the request arrives.
pub(crate) async fn partial(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if !headers.contains_key(CLUSTER_HOP_HEADER) {
        return refuse(StatusCode::BAD_REQUEST, "partial aggregations are asked by a cluster's nodes".into());
    }
    let request = match PartialRequest::decode_body(&body) {
        Ok(r) if r.exclude.len() > MAX_LEFT_OUT => {
            return refuse(StatusCode::BAD_REQUEST, format!("more than {MAX_LEFT_OUT} series to leave out"))
        }
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64).min(state.query.timeout);
    let deadline = Instant::now() + timeout;
    // a free query slot now, or none: the asking node holds a slot of its own while it waits,
    // and two nodes whose slots are all taken by queries waiting for each other's parts
    // would wait out their timeouts; refused, the asking node reads the samples instead
    let Ok(slot) = Arc::clone(&state.query_slots).try_acquire_owned() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "every query slot is taken".into());
    };
    let pool = Arc::clone(&state.query_pool);
    let answer = pool
        .spawn(move || {
            let _slot = slot;
            evaluate_part(&state, request, deadline)
        })
        .await;
    match answer {
        Ok(Ok(part)) => ([(header::CONTENT_TYPE, "application/x-protobuf")], part.into_wire().encode_body())
            .into_response(),
        Ok(Err((status, why))) => refuse(status, why),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The part `request` asks for, over this node's storage.
fn evaluate_part(
    state: &AppState,
    request: PartialRequest,
    deadline: Instant,
) -> Result<Part, (StatusCode, String)> {
    let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
    let compile = promflow_promql::CompileOptions {
        step: ms(request.compile_step_ms),
        range: ms(request.compile_range_ms),
        ..state.query.compile.clone()
    };
    let unprocessable = |why: String| (StatusCode::UNPROCESSABLE_ENTITY, why);
    let plan =
        promflow_promql::compile(&request.query, &compile).map_err(|e| unprocessable(e.to_string()))?;
    let aggregate = find_aggregate(&plan, request.aggregate)
        .ok_or_else(|| unprocessable("the query has no such aggregation here".into()))?;
    if request.step_ms <= 0 || request.end_ms < request.start_ms {
        return Err((StatusCode::BAD_REQUEST, "steps out of order".into()));
    }
    // a value per step and group: as many steps as samples may be loaded at most, as for a
    // subquery's
    if (request.end_ms as i128 - request.start_ms as i128) / request.step_ms as i128
        >= state.query.max_samples as i128
    {
        return Err((StatusCode::BAD_REQUEST, "too many steps".into()));
    }
    let opts = QueryOptions {
        start: request.start_ms,
        end: request.end_ms,
        step: request.step_ms,
        lookback_ms: request.lookback_ms,
        max_samples: state.query.max_samples,
        deadline: Some(deadline),
        delayed_name_removal: request.delayed_name_removal,
        range_query: false,
        use_start_timestamps: request.use_start_timestamps,
        canceled: None,
    };
    let steps = Steps {
        start: request.start_ms,
        end: request.end_ms,
        step: request.step_ms,
        query_start: request.query_start_ms,
        query_end: request.query_end_ms,
    };
    local_part(aggregate, state.db.as_ref(), &opts, steps, (&request.exclude, request.unnamed))
        .map_err(unprocessable)
}
