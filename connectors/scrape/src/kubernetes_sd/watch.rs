//! Keeps a local copy of one kind of object: list it, then watch from the list's resource
//! version, applying each added, modified and deleted object; re-list when the server says
//! the version is gone (410). A failure keeps the copy as it was (and so the targets).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{watch, Notify};

use super::connection::Connection;
use super::objects::Object;

/// A kind of object and where the API serves it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resource {
    /// The API group path: `/api/v1` or `/apis/<group>/<version>`.
    pub api: &'static str,
    /// The plural resource name in URLs.
    pub plural: &'static str,
    /// Whether it lives in namespaces (nodes and namespaces do not).
    pub namespaced: bool,
    /// The role its events count under in Prometheus's metrics (none for objects read only
    /// for metadata).
    pub role: Option<Role>,
}

/// The `role` label of `prometheus_sd_kubernetes_events_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Endpoints,
    EndpointSlice,
    Node,
    Pod,
    Service,
    Ingress,
}

impl Role {
    const ALL: [Role; 6] =
        [Role::Endpoints, Role::EndpointSlice, Role::Node, Role::Pod, Role::Service, Role::Ingress];

    fn name(self) -> &'static str {
        match self {
            Role::Endpoints => "endpoints",
            Role::EndpointSlice => "endpointslice",
            Role::Node => "node",
            Role::Pod => "pod",
            Role::Service => "service",
            Role::Ingress => "ingress",
        }
    }
}

/// Kubernetes discovery's counters: events per role and kind, and failed requests.
#[derive(Default)]
pub struct Counters {
    /// Per [`Role::ALL`] index: add, update, delete.
    events: [[AtomicU64; 3]; 6],
    failures: AtomicU64,
}

const ADD: usize = 0;
const UPDATE: usize = 1;
const DELETE: usize = 2;

impl Counters {
    fn event(&self, role: Option<Role>, kind: usize) {
        if let Some(i) = Role::ALL.iter().position(|r| Some(*r) == role) {
            self.events[i][kind].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes `prometheus_sd_kubernetes_events_total` and `…_failures_total`.
    pub fn write_metrics(&self, w: &mut promflow_storage::MetricsWriter) {
        let mut events = w.family(
            "prometheus_sd_kubernetes_events_total",
            promflow_storage::MetricKind::Counter,
            "The number of Kubernetes events handled.",
        );
        for (role, counts) in Role::ALL.iter().zip(&self.events) {
            for (kind, n) in ["add", "update", "delete"].iter().zip(counts) {
                events.sample(&[("event", kind), ("role", role.name())], n.load(Ordering::Relaxed));
            }
        }
        w.counter(
            "prometheus_sd_kubernetes_failures_total",
            "The number of failed WATCH/LIST requests.",
            self.failures.load(Ordering::Relaxed),
        );
    }
}

/// The local copy of one kind of object, keyed by namespace and name.
pub(crate) struct Store<T> {
    state: Mutex<StoreState<T>>,
}

/// The objects by namespace and name, and whether the first list has arrived.
struct StoreState<T> {
    objects: BTreeMap<(String, String), T>,
    synced: bool,
}

impl<T: Object> Store<T> {
    pub fn new() -> Arc<Store<T>> {
        Arc::new(Store { state: Mutex::new(StoreState { objects: BTreeMap::new(), synced: false }) })
    }

    /// Whether the first list has arrived.
    pub fn synced(&self) -> bool {
        self.state.lock().map(|s| s.synced).unwrap_or(false)
    }

    /// A copy of every object.
    pub fn all(&self) -> Vec<T> {
        self.state.lock().map(|s| s.objects.values().cloned().collect()).unwrap_or_default()
    }

    /// The object `namespace`/`name`, if known.
    pub fn get(&self, namespace: &str, name: &str) -> Option<T> {
        let state = self.state.lock().ok()?;
        state.objects.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    fn key(o: &T) -> (String, String) {
        (o.meta().namespace.clone(), o.meta().name.clone())
    }

    /// Replaces the objects of `namespace` (all when `None`) by a fresh list, counting what
    /// changed as events.
    fn replace(&self, namespace: Option<&str>, items: Vec<T>, role: Option<Role>, counters: &Counters) {
        let Ok(mut state) = self.state.lock() else { return };
        let mut fresh: BTreeMap<(String, String), T> =
            items.into_iter().map(|o| (Self::key(&o), o)).collect();
        let mine = |k: &(String, String)| namespace.is_none_or(|ns| k.0 == ns);
        let old: Vec<(String, String)> = state.objects.keys().filter(|k| mine(k)).cloned().collect();
        for k in old {
            let before = state.objects.remove(&k);
            match (before, fresh.get(&k)) {
                (Some(b), Some(n)) if b.meta().resource_version != n.meta().resource_version => {
                    counters.event(role, UPDATE)
                }
                (Some(_), None) => counters.event(role, DELETE),
                _ => {}
            }
            if let Some(n) = fresh.remove(&k) {
                state.objects.insert(k, n);
            }
        }
        for (k, n) in fresh {
            counters.event(role, ADD);
            state.objects.insert(k, n);
        }
        state.synced = true;
    }

    fn apply(&self, kind: &str, object: T, role: Option<Role>, counters: &Counters) {
        let Ok(mut state) = self.state.lock() else { return };
        let key = Self::key(&object);
        if kind == "DELETED" {
            state.objects.remove(&key);
            counters.event(role, DELETE);
        } else if state.objects.insert(key, object).is_some() {
            counters.event(role, UPDATE);
        } else {
            counters.event(role, ADD);
        }
    }
}

/// One list-and-watch: a resource, in one namespace or all, with the selectors of its role.
pub(crate) struct Watch {
    pub resource: Resource,
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

impl Watch {
    fn path(&self) -> String {
        match (&self.namespace, self.resource.namespaced) {
            (Some(ns), true) => format!("{}/namespaces/{ns}/{}", self.resource.api, self.resource.plural),
            _ => format!("{}/{}", self.resource.api, self.resource.plural),
        }
    }

    fn selectors(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(l) = self.label_selector.as_deref().filter(|s| !s.is_empty()) {
            q.push(("labelSelector", l.to_string()));
        }
        if let Some(f) = self.field_selector.as_deref().filter(|s| !s.is_empty()) {
            q.push(("fieldSelector", f.to_string()));
        }
        q
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(default)]
    resource_version: String,
    #[serde(default, rename = "continue")]
    continue_: String,
}

#[derive(Deserialize)]
struct List<T> {
    metadata: ListMeta,
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    type_: String,
    object: serde_json::Value,
}

/// A `Status` object: what an `ERROR` event carries.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Status {
    code: u16,
    reason: String,
    message: String,
}

/// How long a request may take; a watch asks the server to end it after `WATCH_SECONDS`.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);
const WATCH_SECONDS: u64 = 300;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a watch ended.
enum End {
    /// The server closed it (its timeout): watch again from the last version seen.
    Closed,
    /// The version is too old: list again.
    Gone,
}

/// Lists and watches `w` into `store` until `stop`, telling `changed` after every change.
pub(crate) async fn run<T: Object>(
    conn: Arc<Connection>,
    w: Watch,
    store: Arc<Store<T>>,
    changed: Arc<Notify>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    'list: loop {
        let listed = tokio::select! {
            r = list::<T>(&conn, &w) => r,
            _ = stop.changed() => return,
        };
        let mut version = match listed {
            Ok((items, version)) => {
                store.replace(
                    w.namespace.as_deref().filter(|_| w.resource.namespaced),
                    items,
                    w.resource.role,
                    &counters,
                );
                changed.notify_one();
                backoff = BACKOFF_MIN;
                version
            }
            Err(e) => {
                if !back_off("list", &e, &w, &mut backoff, &counters, &mut stop).await {
                    return;
                }
                continue 'list;
            }
        };
        loop {
            let watched = tokio::select! {
                r = watch_once(&conn, &w, &mut version, &store, &changed, &counters) => r,
                _ = stop.changed() => return,
            };
            match watched {
                Ok(End::Closed) => backoff = BACKOFF_MIN,
                Ok(End::Gone) => continue 'list,
                Err(e) => {
                    if !back_off("watch", &e, &w, &mut backoff, &counters, &mut stop).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Counts and logs a failed list or watch, then waits `backoff` (and doubles it); false
/// when stopped meanwhile.
async fn back_off(
    what: &str,
    error: &str,
    w: &Watch,
    backoff: &mut Duration,
    counters: &Counters,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    counters.failures.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(path = %w.path(), error = %error, "kubernetes_sd: {what} failed; keeping the last targets");
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = stop.changed() => return false,
    }
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    true
}

/// Every object of `w` (following `continue` tokens) and the list's resource version.
async fn list<T: Object>(conn: &Connection, w: &Watch) -> Result<(Vec<T>, String), String> {
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let mut query = w.selectors();
        query.push(("limit", "500".into()));
        if !token.is_empty() {
            query.push(("continue", token.clone()));
        }
        let resp = conn.get(&w.path(), &query, LIST_TIMEOUT).send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {}", status_message(&body)));
        }
        let page: List<T> = serde_json::from_slice(&body).map_err(|e| format!("decoding the list: {e}"))?;
        items.extend(page.items);
        if page.metadata.continue_.is_empty() {
            return Ok((items, page.metadata.resource_version));
        }
        token = page.metadata.continue_;
    }
}

/// One watch request from `version`, applying its events to `store` as they arrive and
/// moving `version` along.
async fn watch_once<T: Object>(
    conn: &Connection,
    w: &Watch,
    version: &mut String,
    store: &Store<T>,
    changed: &Notify,
    counters: &Counters,
) -> Result<End, String> {
    let mut query = w.selectors();
    query.extend([
        ("watch", "1".to_string()),
        ("allowWatchBookmarks", "true".to_string()),
        ("resourceVersion", version.clone()),
        ("timeoutSeconds", WATCH_SECONDS.to_string()),
    ]);
    let timeout = Duration::from_secs(WATCH_SECONDS + 60);
    let mut resp = conn.get(&w.path(), &query, timeout).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if status == reqwest::StatusCode::GONE {
        return Ok(End::Gone);
    }
    if !status.is_success() {
        let body = resp.bytes().await.unwrap_or_default();
        return Err(format!("{status}: {}", status_message(&body)));
    }
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let event: Event =
                serde_json::from_slice(&line).map_err(|e| format!("decoding a watch event: {e}"))?;
            let object_version = event.object.pointer("/metadata/resourceVersion").and_then(|v| v.as_str());
            match event.type_.as_str() {
                "ADDED" | "MODIFIED" | "DELETED" => {
                    let object: T = serde_json::from_value(event.object.clone())
                        .map_err(|e| format!("decoding a watched object: {e}"))?;
                    let v = object.meta().resource_version.clone();
                    store.apply(&event.type_, object, w.resource.role, counters);
                    changed.notify_one();
                    *version = v;
                }
                "BOOKMARK" => {
                    if let Some(v) = object_version {
                        *version = v.to_string();
                    }
                }
                "ERROR" => {
                    let s: Status = serde_json::from_value(event.object).unwrap_or_default();
                    if s.code == 410 {
                        return Ok(End::Gone);
                    }
                    return Err(format!("watch error {} {}: {}", s.code, s.reason, s.message));
                }
                other => return Err(format!("unknown watch event type {other:?}")),
            }
        }
    }
    Ok(End::Closed)
}

/// The message of a `Status` body, or the body itself.
fn status_message(body: &[u8]) -> String {
    match serde_json::from_slice::<Status>(body) {
        Ok(s) if !s.message.is_empty() => s.message,
        _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}
