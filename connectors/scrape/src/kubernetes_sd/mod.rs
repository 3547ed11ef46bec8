//! Kubernetes service discovery (`kubernetes_sd_configs`): targets from the API server's
//! pods, services, endpoints, endpoint slices, nodes or ingresses, with Prometheus's
//! `__meta_kubernetes_*` labels so that existing relabelling rules work unchanged.
//!
//! Each role lists and then watches the kinds of object it reads (see [`watch`]) into local
//! stores; after every change (settled for [`SETTLE`]) the role's target groups are built
//! again from the stores (see [`targets`]) and handed to the scrape pool, which starts and
//! stops only the targets that changed. Nothing is published before every store has
//! listed once, and a failing list or watch keeps the last objects, and so the targets.

mod connection;
mod objects;
mod targets;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use promflow_config::KubernetesSdConfig;
use promflow_storage::Labels;
use tokio::sync::Notify;

use objects::{EndpointSlice, Endpoints, Ingress, Namespace, Node, Object, Owned, Pod, Service};
pub use watch::Counters;
use watch::{Resource, Role, Store, Watch};

/// How long discovery lets a burst of events settle before it rebuilds the targets.
const SETTLE: Duration = Duration::from_millis(100);

const PODS: Resource = Resource { api: "/api/v1", plural: "pods", namespaced: true, role: Some(Role::Pod) };
const NODES: Resource =
    Resource { api: "/api/v1", plural: "nodes", namespaced: false, role: Some(Role::Node) };
const SERVICES: Resource =
    Resource { api: "/api/v1", plural: "services", namespaced: true, role: Some(Role::Service) };
const ENDPOINTS: Resource =
    Resource { api: "/api/v1", plural: "endpoints", namespaced: true, role: Some(Role::Endpoints) };
const ENDPOINT_SLICES: Resource = Resource {
    api: "/apis/discovery.k8s.io/v1",
    plural: "endpointslices",
    namespaced: true,
    role: Some(Role::EndpointSlice),
};
const INGRESSES: Resource = Resource {
    api: "/apis/networking.k8s.io/v1",
    plural: "ingresses",
    namespaced: true,
    role: Some(Role::Ingress),
};
const NAMESPACES: Resource = Resource { api: "/api/v1", plural: "namespaces", namespaced: false, role: None };
const REPLICA_SETS: Resource =
    Resource { api: "/apis/apps/v1", plural: "replicasets", namespaced: true, role: None };
const JOBS: Resource = Resource { api: "/apis/batch/v1", plural: "jobs", namespaced: true, role: None };

/// The stores one discovery reads; a role leaves the kinds it does not need at `None`.
#[derive(Default)]
pub(crate) struct Stores {
    pub pods: Option<Arc<Store<Pod>>>,
    pub nodes: Option<Arc<Store<Node>>>,
    pub services: Option<Arc<Store<Service>>>,
    pub endpoints: Option<Arc<Store<Endpoints>>>,
    pub slices: Option<Arc<Store<EndpointSlice>>>,
    pub ingresses: Option<Arc<Store<Ingress>>>,
    pub namespaces: Option<Arc<Store<Namespace>>>,
    pub replicasets: Option<Arc<Store<Owned>>>,
    pub jobs: Option<Arc<Store<Owned>>>,
}

impl Stores {
    fn synced(&self) -> bool {
        fn s<T: Object>(st: &Option<Arc<Store<T>>>) -> bool {
            st.as_ref().is_none_or(|s| s.synced())
        }
        s(&self.pods)
            && s(&self.nodes)
            && s(&self.services)
            && s(&self.endpoints)
            && s(&self.slices)
            && s(&self.ingresses)
            && s(&self.namespaces)
            && s(&self.replicasets)
            && s(&self.jobs)
    }
}

/// The same watches, counting no events.
fn uncounted(mut watches: Vec<Watch>) -> Vec<Watch> {
    for w in &mut watches {
        w.resource.role = None;
    }
    watches
}

/// Starts the list-and-watch tasks `cfg`'s role needs and returns their stores.
fn start_watches(
    cfg: &KubernetesSdConfig,
    conn: &Arc<connection::Connection>,
    changed: &Arc<Notify>,
    counters: &Arc<Counters>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Stores {
    let mut namespaces: Vec<Option<String>> = cfg.namespaces.names.iter().cloned().map(Some).collect();
    if cfg.namespaces.own_namespace {
        if let Some(own) = &conn.own_namespace {
            namespaces.push(Some(own.clone()));
        }
    }
    namespaces.dedup();
    if namespaces.is_empty() {
        namespaces.push(None);
    }
    let selector = |role: &str| cfg.selectors.iter().find(|s| s.role == role);
    let start = |resource: Resource, selector_role: &str| -> Vec<Watch> {
        let sel = selector(selector_role);
        let spaces = if resource.namespaced { namespaces.clone() } else { vec![None] };
        spaces
            .into_iter()
            .map(|namespace| Watch {
                resource,
                namespace,
                label_selector: sel.and_then(|s| s.label.clone()),
                field_selector: sel.and_then(|s| s.field.clone()),
            })
            .collect()
    };
    fn spawn<T: Object>(
        watches: Vec<Watch>,
        conn: &Arc<connection::Connection>,
        changed: &Arc<Notify>,
        counters: &Arc<Counters>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Option<Arc<Store<T>>> {
        let store = Store::new();
        for w in watches {
            let task = watch::run(
                Arc::clone(conn),
                w,
                Arc::clone(&store),
                Arc::clone(changed),
                Arc::clone(counters),
                stop.clone(),
            );
            tokio::spawn(task);
        }
        Some(store)
    }
    let mut stores = Stores::default();
    let meta = &cfg.attach_metadata;
    let role = cfg.role.as_str();
    let pods = matches!(role, "pod" | "endpoints" | "endpointslice");
    if pods {
        stores.pods = spawn(start(PODS, "pod"), conn, changed, counters, stop);
    }
    // nodes, namespaces, replica sets and jobs read only for metadata count no events
    if role == "node" {
        stores.nodes = spawn(start(NODES, "node"), conn, changed, counters, stop);
    } else if meta.node && pods {
        stores.nodes = spawn(uncounted(start(NODES, "node")), conn, changed, counters, stop);
    }
    if meta.deployment && pods {
        stores.replicasets = spawn(start(REPLICA_SETS, "none"), conn, changed, counters, stop);
    }
    if (meta.job || meta.cronjob) && pods {
        stores.jobs = spawn(start(JOBS, "none"), conn, changed, counters, stop);
    }
    if matches!(role, "service" | "endpoints" | "endpointslice") {
        stores.services = spawn(start(SERVICES, "service"), conn, changed, counters, stop);
    }
    match role {
        "endpoints" => stores.endpoints = spawn(start(ENDPOINTS, "endpoints"), conn, changed, counters, stop),
        "endpointslice" => {
            stores.slices = spawn(start(ENDPOINT_SLICES, "endpointslice"), conn, changed, counters, stop)
        }
        "ingress" => stores.ingresses = spawn(start(INGRESSES, "ingress"), conn, changed, counters, stop),
        _ => {}
    }
    if meta.namespace && role != "node" {
        stores.namespaces = spawn(start(NAMESPACES, "none"), conn, changed, counters, stop);
    }
    stores
}

/// Follows `cfg` until `stop`, handing every new set of target groups (one per target) to
/// `publish`. A configuration that cannot reach a server (no in-cluster environment, an
/// unreadable kubeconfig) is logged and discovers nothing, as in Prometheus.
pub(crate) async fn run(
    cfg: KubernetesSdConfig,
    counters: Arc<Counters>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut publish: impl FnMut(Vec<(Vec<String>, Labels)>),
) {
    let conn = match connection::Connection::new(&cfg) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(role = %cfg.role, error = %e, "kubernetes_sd: cannot reach the API server; this discovery finds nothing");
            return;
        }
    };
    let changed = Arc::new(Notify::new());
    let stores = start_watches(&cfg, &conn, &changed, &counters, &stop);
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(SETTLE) => {}
            _ = stop.changed() => return,
        }
        if stores.synced() {
            publish(targets::groups(&cfg, &stores));
        }
    }
}
