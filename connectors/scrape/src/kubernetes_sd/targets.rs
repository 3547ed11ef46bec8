//! Target groups from the stores, one role at a time, with Prometheus's labels: what each
//! role reads and which `__meta_kubernetes_*` labels it sets is documented in
//! docs/configuration.md ("Kubernetes discovery").

use promflow_config::KubernetesSdConfig;
use promflow_storage::Labels;

use super::objects::{Container, EndpointPort, Meta, Node, ObjectReference, Pod, Service};
use super::Stores;

const P: &str = "__meta_kubernetes_";

/// Label pairs in the order they are set; a later pair of the same name wins.
type Pairs = Vec<(String, String)>;

/// One target: its address and its own labels (which win over the group's).
struct Target {
    address: String,
    labels: Pairs,
}

/// What the scrape pool takes: one group per target, the group's labels merged in.
fn flatten(group: &Pairs, targets: Vec<Target>, out: &mut Vec<(Vec<String>, Labels)>) {
    for t in targets {
        let labels = Labels::from_pairs(group.iter().cloned().chain(t.labels));
        out.push((vec![t.address], labels));
    }
}

/// Every target of `cfg`'s role, from `stores`.
pub(crate) fn groups(cfg: &KubernetesSdConfig, stores: &Stores) -> Vec<(Vec<String>, Labels)> {
    let cx = Cx { cfg, stores };
    let mut out = Vec::new();
    match cfg.role.as_str() {
        "node" => {
            for node in all(&stores.nodes) {
                if let Some((group, targets)) = node_group(&node) {
                    flatten(&group, targets, &mut out);
                }
            }
        }
        "pod" => {
            for pod in all(&stores.pods) {
                if let Some((group, targets)) = cx.pod_group(&pod) {
                    flatten(&group, targets, &mut out);
                }
            }
        }
        "service" => {
            for svc in all(&stores.services) {
                let (group, targets) = cx.service_group(&svc);
                flatten(&group, targets, &mut out);
            }
        }
        "endpoints" => {
            for eps in all(&stores.endpoints) {
                let (group, targets) = cx.endpoints_group(&eps);
                flatten(&group, targets, &mut out);
            }
        }
        "endpointslice" => {
            for slice in all(&stores.slices) {
                let (group, targets) = cx.slice_group(&slice);
                flatten(&group, targets, &mut out);
            }
        }
        _ => {
            for ing in all(&stores.ingresses) {
                let (group, targets) = cx.ingress_group(&ing);
                flatten(&group, targets, &mut out);
            }
        }
    }
    out
}

/// Every object of a store the role uses.
fn all<T: super::objects::Object>(s: &Option<std::sync::Arc<super::watch::Store<T>>>) -> Vec<T> {
    s.as_ref().map(|s| s.all()).unwrap_or_default()
}

/// A label name part from a Kubernetes key: every character outside `[a-zA-Z0-9_]` becomes `_`.
fn sanitize(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn push(out: &mut Pairs, name: impl Into<String>, value: impl Into<String>) {
    out.push((name.into(), value.into()));
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// `host:port`, with IPv6 hosts in brackets.
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `<kind>_label_*`, `<kind>_labelpresent_*`, `<kind>_annotation_*` and
/// `<kind>_annotationpresent_*` of an object's metadata.
fn labels_and_annotations(out: &mut Pairs, kind: &str, m: &Meta) {
    for (what, map) in [("label", &m.labels), ("annotation", &m.annotations)] {
        for (k, v) in map {
            let k = sanitize(k);
            push(out, format!("{P}{kind}_{what}_{k}"), v.as_str());
            push(out, format!("{P}{kind}_{what}present_{k}"), "true");
        }
    }
}

/// `<kind>_name` and the label and annotation labels of an object.
fn object_meta(out: &mut Pairs, kind: &str, m: &Meta) {
    push(out, format!("{P}{kind}_name"), m.name.as_str());
    labels_and_annotations(out, kind, m);
}

/// The node-role group of a node: `None` when it has no address to scrape.
fn node_group(node: &Node) -> Option<(Pairs, Vec<Target>)> {
    const PRIORITY: [&str; 6] =
        ["InternalIP", "InternalDNS", "ExternalIP", "ExternalDNS", "LegacyHostIP", "Hostname"];
    let addresses = &node.status.addresses;
    let Some(address) =
        PRIORITY.iter().find_map(|ty| addresses.iter().find(|a| a.type_ == *ty)).map(|a| a.address.clone())
    else {
        tracing::warn!(node = %node.metadata.name, "kubernetes_sd: node has no address to scrape");
        return None;
    };
    let mut group = Pairs::new();
    object_meta(&mut group, "node", &node.metadata);
    push(&mut group, format!("{P}node_provider_id"), node.spec.provider_id.as_str());
    for c in &node.status.conditions {
        push(
            &mut group,
            format!("{P}node_condition_{}", sanitize(&c.type_.to_lowercase())),
            c.status.to_lowercase(),
        );
    }
    let mut labels = Pairs::new();
    push(&mut labels, "instance", node.metadata.name.as_str());
    let mut seen = Vec::new();
    for a in addresses {
        if !seen.contains(&&a.type_) {
            seen.push(&a.type_);
            push(&mut labels, format!("{P}node_address_{}", sanitize(&a.type_)), a.address.as_str());
        }
    }
    let address = join_host_port(&address, node.status.daemon_endpoints.kubelet_endpoint.port);
    Some((group, vec![Target { address, labels }]))
}

/// A container's labels as a target: name, image, whether it is an init container.
fn container_labels(out: &mut Pairs, c: &Container, init: bool) {
    push(out, format!("{P}pod_container_name"), c.name.as_str());
    push(out, format!("{P}pod_container_image"), c.image.as_str());
    push(out, format!("{P}pod_container_init"), bool_str(init));
}

/// A pod's containers, then its init containers, each with whether it is one.
fn containers(pod: &Pod) -> impl Iterator<Item = (&Container, bool)> {
    pod.spec.containers.iter().map(|c| (c, false)).chain(pod.spec.init_containers.iter().map(|c| (c, true)))
}

/// The port labels of a container port.
fn container_port_labels(out: &mut Pairs, name: &str, number: i32, protocol: &str) {
    push(out, format!("{P}pod_container_port_name"), name);
    push(out, format!("{P}pod_container_port_number"), number.to_string());
    push(out, format!("{P}pod_container_port_protocol"), protocol);
}

/// The context groups are built in: the configuration (what to attach) and the stores.
struct Cx<'a> {
    cfg: &'a KubernetesSdConfig,
    stores: &'a Stores,
}

impl Cx<'_> {
    /// `namespace_label_*` and friends of `namespace`, with `attach_metadata.namespace`.
    fn namespace_meta(&self, out: &mut Pairs, namespace: &str) {
        if let Some(ns) = self.stores.namespaces.as_ref().and_then(|s| s.get("", namespace)) {
            labels_and_annotations(out, "namespace", &ns.metadata);
        }
    }

    /// The node's metadata block, with `attach_metadata.node`.
    fn node_meta(&self, out: &mut Pairs, node: &str) {
        if node.is_empty() {
            return;
        }
        if let Some(n) = self.stores.nodes.as_ref().and_then(|s| s.get("", node)) {
            object_meta(out, "node", &n.metadata);
        }
    }

    /// The labels a pod gives its targets in every role: name, labels, annotations, IPs,
    /// readiness, phase, node, uid and controller (and its deployment, job or cronjob when
    /// attached). Not the namespace, which the group has.
    fn pod_labels(&self, pod: &Pod) -> Pairs {
        let mut out = Pairs::new();
        let (m, st) = (&pod.metadata, &pod.status);
        object_meta(&mut out, "pod", m);
        push(&mut out, format!("{P}pod_ip"), st.pod_ip.as_str());
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.to_lowercase());
        push(&mut out, format!("{P}pod_ready"), ready.unwrap_or_else(|| "unknown".into()));
        push(&mut out, format!("{P}pod_phase"), st.phase.as_str());
        push(&mut out, format!("{P}pod_node_name"), pod.spec.node_name.as_str());
        push(&mut out, format!("{P}pod_host_ip"), st.host_ip.as_str());
        push(&mut out, format!("{P}pod_uid"), m.uid.as_str());
        if let Some(c) = m.controller() {
            push(&mut out, format!("{P}pod_controller_kind"), c.kind.as_str());
            push(&mut out, format!("{P}pod_controller_name"), c.name.as_str());
            let attach = &self.cfg.attach_metadata;
            let owner_of = |store: &Option<std::sync::Arc<super::watch::Store<super::objects::Owned>>>| {
                let owned = store.as_ref()?.get(&m.namespace, &c.name)?;
                owned.metadata.controller().map(|o| (o.kind.clone(), o.name.clone()))
            };
            if attach.deployment && c.kind == "ReplicaSet" {
                if let Some((kind, name)) = owner_of(&self.stores.replicasets) {
                    if kind == "Deployment" {
                        push(&mut out, format!("{P}pod_deployment_name"), name);
                    }
                }
            }
            if attach.job && c.kind == "Job" {
                push(&mut out, format!("{P}pod_job_name"), c.name.as_str());
            }
            if attach.cronjob && c.kind == "Job" {
                if let Some((kind, name)) = owner_of(&self.stores.jobs) {
                    if kind == "CronJob" {
                        push(&mut out, format!("{P}pod_cronjob_name"), name);
                    }
                }
            }
        }
        out
    }

    /// The pod-role group: a target per container port, and one without a port per
    /// container that declares none. `None` for a pod without an IP (not yet scheduled or
    /// gone), or whose node the node selector left out.
    fn pod_group(&self, pod: &Pod) -> Option<(Pairs, Vec<Target>)> {
        let ip = pod.status.pod_ip.as_str();
        if ip.is_empty() {
            return None;
        }
        let node = pod.spec.node_name.as_str();
        if self.cfg.attach_metadata.node
            && self.stores.nodes.as_ref().is_some_and(|s| s.get("", node).is_none())
        {
            return None;
        }
        let mut group = Pairs::new();
        push(&mut group, format!("{P}namespace"), pod.metadata.namespace.as_str());
        group.extend(self.pod_labels(pod));
        if self.cfg.attach_metadata.node {
            self.node_meta(&mut group, node);
        }
        self.namespace_meta(&mut group, &pod.metadata.namespace);
        let mut targets = Vec::new();
        for (c, init) in containers(pod) {
            let statuses =
                if init { &pod.status.init_container_statuses } else { &pod.status.container_statuses };
            let id =
                statuses.iter().find(|s| s.name == c.name).map(|s| s.container_id.as_str()).unwrap_or("");
            let mut labels = Pairs::new();
            container_labels(&mut labels, c, init);
            push(&mut labels, format!("{P}pod_container_id"), id);
            if c.ports.is_empty() {
                targets.push(Target { address: ip.to_string(), labels });
                continue;
            }
            for p in &c.ports {
                let mut labels = labels.clone();
                container_port_labels(&mut labels, &p.name, p.container_port, &p.protocol);
                targets.push(Target { address: join_host_port(ip, p.container_port), labels });
            }
        }
        Some((group, targets))
    }

    /// A service's group labels as the service and endpoints roles share them: namespace,
    /// name, labels, annotations.
    fn service_labels(&self, svc: &Service) -> Pairs {
        let mut out = Pairs::new();
        push(&mut out, format!("{P}namespace"), svc.metadata.namespace.as_str());
        object_meta(&mut out, "service", &svc.metadata);
        out
    }

    /// The service-role group: a target `<name>.<namespace>.svc:<port>` per port.
    fn service_group(&self, svc: &Service) -> (Pairs, Vec<Target>) {
        let mut group = self.service_labels(svc);
        self.namespace_meta(&mut group, &svc.metadata.namespace);
        let spec = &svc.spec;
        let host = format!("{}.{}.svc", svc.metadata.name, svc.metadata.namespace);
        let targets = spec
            .ports
            .iter()
            .map(|p| {
                let mut labels = Pairs::new();
                push(&mut labels, format!("{P}service_port_name"), p.name.as_str());
                push(&mut labels, format!("{P}service_port_number"), p.port.to_string());
                push(&mut labels, format!("{P}service_port_protocol"), p.protocol.as_str());
                push(&mut labels, format!("{P}service_type"), spec.type_.as_str());
                if spec.type_ == "ExternalName" {
                    push(&mut labels, format!("{P}service_external_name"), spec.external_name.as_str());
                } else {
                    push(&mut labels, format!("{P}service_cluster_ip"), spec.cluster_ip.as_str());
                }
                if spec.type_ == "LoadBalancer" {
                    push(&mut labels, format!("{P}service_loadbalancer_ip"), spec.load_balancer_ip.as_str());
                }
                Target { address: join_host_port(&host, p.port), labels }
            })
            .collect();
        (group, targets)
    }

    /// The group labels of an endpoints object or slice: namespace, the service's labels
    /// when it is known, the object's own metadata block.
    fn endpoints_group_labels(&self, kind: &str, m: &Meta, service: &str) -> (Pairs, Option<Service>) {
        let mut group = Pairs::new();
        push(&mut group, format!("{P}namespace"), m.namespace.as_str());
        let svc = self.stores.services.as_ref().and_then(|s| s.get(&m.namespace, service));
        if let Some(svc) = &svc {
            group.extend(self.service_labels(svc));
        }
        object_meta(&mut group, kind, m);
        (group, svc)
    }

    /// The pod an endpoint refers to, if it is a known pod.
    fn referenced_pod(&self, target: Option<&ObjectReference>, namespace: &str) -> Option<Pod> {
        let r = target.filter(|r| r.kind == "Pod")?;
        let ns = if r.namespace.is_empty() { namespace } else { &r.namespace };
        self.stores.pods.as_ref()?.get(ns, &r.name)
    }

    /// Adds the labels of the pod behind an endpoint on `port`: the pod's, and the first
    /// matching port's container's (the last container with a match wins). `protocol`
    /// overrides the container port's protocol when given (the endpoints role).
    fn pod_port_labels(&self, out: &mut Pairs, pod: &Pod, port: i32, protocol: Option<&str>) {
        out.extend(self.pod_labels(pod));
        for (c, init) in containers(pod) {
            if let Some(p) = c.ports.iter().find(|p| p.container_port == port) {
                container_labels(out, c, init);
                container_port_labels(out, &p.name, p.container_port, protocol.unwrap_or(&p.protocol));
            }
        }
    }

    /// Targets for the container ports of the pods behind endpoints that the endpoints do
    /// not list: so a pod's other ports (a metrics port) can be scraped too.
    fn unlisted_pod_ports(&self, seen: &[(Pod, Vec<i32>)]) -> Vec<Target> {
        let mut targets = Vec::new();
        for (pod, ports) in seen {
            if pod.status.pod_ip.is_empty() {
                continue;
            }
            for (c, init) in containers(pod) {
                for p in c.ports.iter().filter(|p| !ports.contains(&p.container_port)) {
                    let mut labels = self.pod_labels(pod);
                    container_labels(&mut labels, c, init);
                    container_port_labels(&mut labels, &p.name, p.container_port, &p.protocol);
                    targets.push(Target {
                        address: join_host_port(&pod.status.pod_ip, p.container_port),
                        labels,
                    });
                }
            }
        }
        targets
    }

    /// Records that `pod` was seen behind an endpoint on `port`.
    fn saw(seen: &mut Vec<(Pod, Vec<i32>)>, pod: Pod, port: i32) {
        match seen
            .iter_mut()
            .find(|(p, _)| p.metadata.uid == pod.metadata.uid && p.metadata.name == pod.metadata.name)
        {
            Some((_, ports)) => ports.push(port),
            None => seen.push((pod, vec![port])),
        }
    }

    /// The endpoints-role group: a target per address and port, ready addresses first.
    fn endpoints_group(&self, eps: &super::objects::Endpoints) -> (Pairs, Vec<Target>) {
        let m = &eps.metadata;
        let (mut group, _) = self.endpoints_group_labels("endpoints", m, &m.name);
        self.namespace_meta(&mut group, &m.namespace);
        let mut targets = Vec::new();
        let mut seen = Vec::new();
        for subset in &eps.subsets {
            for port in &subset.ports {
                let number = port.port.unwrap_or(0);
                let ready = subset.addresses.iter().map(|a| (a, true));
                for (addr, ready) in ready.chain(subset.not_ready_addresses.iter().map(|a| (a, false))) {
                    let mut labels = Pairs::new();
                    push(&mut labels, format!("{P}endpoint_port_name"), port.name.as_deref().unwrap_or(""));
                    push(
                        &mut labels,
                        format!("{P}endpoint_port_protocol"),
                        port.protocol.as_deref().unwrap_or(""),
                    );
                    push(&mut labels, format!("{P}endpoint_ready"), bool_str(ready));
                    target_ref_labels(&mut labels, "endpoint", addr.target_ref.as_ref());
                    if let Some(node) = &addr.node_name {
                        push(&mut labels, format!("{P}endpoint_node_name"), node.as_str());
                    }
                    if !addr.hostname.is_empty() {
                        push(&mut labels, format!("{P}endpoint_hostname"), addr.hostname.as_str());
                    }
                    if self.cfg.attach_metadata.node {
                        self.node_meta(
                            &mut labels,
                            &endpoint_node(addr.node_name.as_deref(), addr.target_ref.as_ref()),
                        );
                    }
                    if let Some(pod) = self.referenced_pod(addr.target_ref.as_ref(), &m.namespace) {
                        self.pod_port_labels(&mut labels, &pod, number, port.protocol.as_deref());
                        Self::saw(&mut seen, pod, number);
                    }
                    targets.push(Target { address: join_host_port(&addr.ip, number), labels });
                }
            }
        }
        targets.extend(self.unlisted_pod_ports(&seen));
        (group, targets)
    }

    /// The endpointslice-role group: a target per endpoint, port and address.
    fn slice_group(&self, slice: &super::objects::EndpointSlice) -> (Pairs, Vec<Target>) {
        let m = &slice.metadata;
        let service = m.labels.get("kubernetes.io/service-name").map(String::as_str).unwrap_or("");
        let (mut group, svc) = self.endpoints_group_labels("endpointslice", m, service);
        push(&mut group, format!("{P}endpointslice_address_type"), slice.address_type.as_str());
        self.namespace_meta(&mut group, &m.namespace);
        // a dual-stack service has a slice per family: only its primary family's is scraped
        if let Some(spec) = svc.as_ref().map(|s| &s.spec) {
            let dual = matches!(spec.ip_family_policy.as_str(), "PreferDualStack" | "RequireDualStack");
            if dual && spec.ip_families.first().is_some_and(|f| *f != slice.address_type) {
                return (group, Vec::new());
            }
        }
        let mut targets = Vec::new();
        let mut seen = Vec::new();
        for ep in &slice.endpoints {
            for port in &slice.ports {
                for addr in &ep.addresses {
                    let mut labels = Pairs::new();
                    slice_port_labels(&mut labels, port);
                    let c = &ep.conditions;
                    for (name, v) in
                        [("ready", c.ready), ("serving", c.serving), ("terminating", c.terminating)]
                    {
                        if let Some(v) = v {
                            push(
                                &mut labels,
                                format!("{P}endpointslice_endpoint_conditions_{name}"),
                                bool_str(v),
                            );
                        }
                    }
                    let optional =
                        [("hostname", &ep.hostname), ("node_name", &ep.node_name), ("zone", &ep.zone)];
                    for (name, v) in optional {
                        if let Some(v) = v {
                            push(&mut labels, format!("{P}endpointslice_endpoint_{name}"), v.as_str());
                        }
                    }
                    target_ref_labels(&mut labels, "endpointslice", ep.target_ref.as_ref());
                    for (k, v) in &ep.deprecated_topology {
                        let k = sanitize(k);
                        push(&mut labels, format!("{P}endpointslice_endpoint_topology_{k}"), v.as_str());
                        push(&mut labels, format!("{P}endpointslice_endpoint_topology_present_{k}"), "true");
                    }
                    if self.cfg.attach_metadata.node {
                        self.node_meta(
                            &mut labels,
                            &endpoint_node(ep.node_name.as_deref(), ep.target_ref.as_ref()),
                        );
                    }
                    if let (Some(number), Some(pod)) =
                        (port.port, self.referenced_pod(ep.target_ref.as_ref(), &m.namespace))
                    {
                        self.pod_port_labels(&mut labels, &pod, number, None);
                        Self::saw(&mut seen, pod, number);
                    }
                    let address = match port.port {
                        Some(n) => join_host_port(addr, n),
                        None => addr.clone(),
                    };
                    targets.push(Target { address, labels });
                }
            }
        }
        targets.extend(self.unlisted_pod_ports(&seen));
        (group, targets)
    }

    /// The ingress-role group: a target per rule and path, addressed by the rule's host.
    fn ingress_group(&self, ing: &super::objects::Ingress) -> (Pairs, Vec<Target>) {
        let m = &ing.metadata;
        let mut group = Pairs::new();
        push(&mut group, format!("{P}namespace"), m.namespace.as_str());
        object_meta(&mut group, "ingress", m);
        if let Some(class) = &ing.spec.ingress_class_name {
            push(&mut group, format!("{P}ingress_class_name"), class.as_str());
        }
        self.namespace_meta(&mut group, &m.namespace);
        let tls_hosts: Vec<&str> =
            ing.spec.tls.iter().flat_map(|t| t.hosts.iter().map(String::as_str)).collect();
        let mut targets = Vec::new();
        for rule in &ing.spec.rules {
            let https = tls_hosts.iter().any(|pattern| host_matches(pattern, &rule.host));
            let paths: Vec<&str> = match &rule.http {
                None => vec!["/"],
                Some(h) => {
                    h.paths.iter().map(|p| if p.path.is_empty() { "/" } else { p.path.as_str() }).collect()
                }
            };
            for path in paths {
                let mut labels = Pairs::new();
                push(&mut labels, format!("{P}ingress_scheme"), if https { "https" } else { "http" });
                push(&mut labels, format!("{P}ingress_host"), rule.host.as_str());
                push(&mut labels, format!("{P}ingress_path"), path);
                targets.push(Target { address: rule.host.clone(), labels });
            }
        }
        (group, targets)
    }
}

/// `<kind>_address_target_kind` and `…_name` of an endpoint's `targetRef`.
fn target_ref_labels(out: &mut Pairs, kind: &str, r: Option<&ObjectReference>) {
    if let Some(r) = r {
        push(out, format!("{P}{kind}_address_target_kind"), r.kind.as_str());
        push(out, format!("{P}{kind}_address_target_name"), r.name.as_str());
    }
}

/// The node an endpoint runs on: its `nodeName`, or the node it refers to.
fn endpoint_node(node_name: Option<&str>, r: Option<&ObjectReference>) -> String {
    match (node_name, r) {
        (_, Some(r)) if r.kind == "Node" => r.name.clone(),
        (Some(n), _) => n.to_string(),
        _ => String::new(),
    }
}

/// The labels of an endpoint slice's port, for the fields it has.
fn slice_port_labels(out: &mut Pairs, port: &EndpointPort) {
    let fields = [
        ("port_name", port.name.clone()),
        ("port_protocol", port.protocol.clone()),
        ("port", port.port.map(|p| p.to_string())),
        ("port_app_protocol", port.app_protocol.clone()),
    ];
    for (name, v) in fields {
        if let Some(v) = v {
            push(out, format!("{P}endpointslice_{name}"), v);
        }
    }
}

/// Whether a TLS host pattern covers `host`: equal, or `*.rest` against a host with one
/// more label in front of the same `rest`.
fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == host {
        return true;
    }
    let (Some(("*", rest)), Some((_, host_rest))) = (pattern.split_once('.'), host.split_once('.')) else {
        return false;
    };
    rest == host_rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_and_tls_hosts() {
        assert_eq!(sanitize("app.kubernetes.io/name"), "app_kubernetes_io_name");
        assert_eq!(sanitize("Ünï-x"), "_n__x");
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "a.b.example.com"));
        assert!(host_matches("example.com", "example.com"));
        assert!(!host_matches("a.*.com", "a.b.com"));
    }
}
