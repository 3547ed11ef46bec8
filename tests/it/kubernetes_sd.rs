//! End-to-end: Kubernetes service discovery against a small API server that serves the
//! answers in `tests/kubernetes/` as lists and watch streams, changes them while promflow
//! watches, compacts its history (410 Gone) and fails a list.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// What the API server holds: objects per resource (by their plural), the history of
/// changes watches follow, and the faults the test asks for.
#[derive(Default)]
struct ApiState {
    version: u64,
    objects: BTreeMap<String, Vec<Value>>,
    /// (resource version, plural, event type, object)
    history: Vec<(u64, String, String, Value)>,
    /// Watches from before this version are answered 410; open ones get an ERROR event.
    compacted: u64,
    /// Lists to answer with a 500.
    fail_lists: u32,
    /// Request targets, in order.
    requests: Vec<String>,
}

struct ApiServer {
    state: Arc<(Mutex<ApiState>, Condvar)>,
    port: u16,
}

/// The list kind and API version of a resource.
fn list_kind(plural: &str) -> (&'static str, &'static str) {
    match plural {
        "pods" => ("PodList", "v1"),
        "nodes" => ("NodeList", "v1"),
        "services" => ("ServiceList", "v1"),
        "endpoints" => ("EndpointsList", "v1"),
        "namespaces" => ("NamespaceList", "v1"),
        "endpointslices" => ("EndpointSliceList", "discovery.k8s.io/v1"),
        "ingresses" => ("IngressList", "networking.k8s.io/v1"),
        _ => ("List", "v1"),
    }
}

/// Whether `o` is in `namespace` (any when `None`) and has every `k=v` of `selector`.
fn selected(o: &Value, namespace: Option<&str>, selector: &str) -> bool {
    let meta = &o["metadata"];
    if namespace.is_some_and(|ns| meta["namespace"] != ns) {
        return false;
    }
    selector.split(',').filter(|s| !s.is_empty()).all(|term| match term.split_once('=') {
        Some((k, v)) => meta["labels"][k] == v,
        None => true,
    })
}

fn status(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
        .to_string()
}

impl ApiServer {
    fn start() -> ApiServer {
        let mut st = ApiState { version: 5000, ..Default::default() };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubernetes");
        for plural in ["pods", "nodes", "services", "endpoints", "endpointslices", "ingresses"] {
            let text = std::fs::read_to_string(dir.join(format!("{plural}.json"))).unwrap();
            let list: Value = serde_json::from_str(&text).unwrap();
            st.objects.insert(plural.into(), list["items"].as_array().unwrap().clone());
        }
        let l = listener();
        let port = l.local_addr().unwrap().port();
        let state = Arc::new((Mutex::new(st), Condvar::new()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten().take(5000) {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = Self::answer(conn, &state);
                });
            }
        });
        ApiServer { state, port }
    }

    fn answer(mut conn: TcpStream, state: &(Mutex<ApiState>, Condvar)) -> std::io::Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" {
                break;
            }
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let params: BTreeMap<String, String> =
            form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let param = |k: &str| params.get(k).cloned().unwrap_or_default();
        // /api/v1[/namespaces/<ns>]/<plural> and /apis/<group>/<version>[/namespaces/<ns>]/<plural>
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let rest = if parts.first() == Some(&"api") {
            &parts[2.min(parts.len())..]
        } else {
            &parts[3.min(parts.len())..]
        };
        let (namespace, plural) = match rest {
            ["namespaces", ns, plural] => (Some(ns.to_string()), plural.to_string()),
            [plural] => (None, plural.to_string()),
            _ => (None, String::new()),
        };
        let (lock, cvar) = state;
        let mut st = lock.lock().unwrap();
        st.requests.push(target.clone());
        let json_answer = |conn: &mut TcpStream, code: u16, body: String| {
            write!(
                conn,
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        if !st.objects.contains_key(&plural) {
            drop(st);
            return json_answer(
                &mut conn,
                404,
                status(404, "NotFound", "the server could not find the requested resource"),
            );
        }
        let selector = param("labelSelector");
        if param("watch") != "1" && param("watch") != "true" {
            if st.fail_lists > 0 {
                st.fail_lists -= 1;
                drop(st);
                return json_answer(
                    &mut conn,
                    500,
                    status(500, "InternalError", "etcdserver: request timed out"),
                );
            }
            let items: Vec<Value> = st.objects[&plural]
                .iter()
                .filter(|o| selected(o, namespace.as_deref(), &selector))
                .cloned()
                .collect();
            let (kind, api_version) = list_kind(&plural);
            let body = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": st.version.to_string()}, "items": items});
            drop(st);
            return json_answer(&mut conn, 200, body.to_string());
        }
        let from: u64 = param("resourceVersion").parse().unwrap_or(0);
        if from < st.compacted {
            let message = format!("too old resource version: {from} ({})", st.compacted);
            drop(st);
            return json_answer(&mut conn, 410, status(410, "Expired", &message));
        }
        let compacted_at_start = st.compacted;
        let seconds: u64 = param("timeoutSeconds").parse().unwrap_or(60);
        let deadline = Instant::now() + Duration::from_secs(seconds.min(60));
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )?;
        let chunk = |conn: &mut TcpStream, line: String| -> std::io::Result<()> {
            let line = line + "\n";
            write!(conn, "{:x}\r\n{line}\r\n", line.len())?;
            conn.flush()
        };
        let mut sent = from;
        loop {
            if st.compacted > compacted_at_start {
                let message = format!("too old resource version: {sent} ({})", st.compacted);
                let event = json!({"type": "ERROR", "object": serde_json::from_str::<Value>(&status(410, "Expired", &message)).unwrap()});
                drop(st);
                chunk(&mut conn, event.to_string())?;
                break;
            }
            let events: Vec<Value> = st
                .history
                .iter()
                .filter(|(v, p, _, o)| {
                    *v > sent && *p == plural && selected(o, namespace.as_deref(), &selector)
                })
                .map(|(_, _, ty, o)| json!({"type": ty, "object": o}))
                .collect();
            sent = st.version;
            drop(st);
            for e in events {
                chunk(&mut conn, e.to_string())?;
            }
            if Instant::now() > deadline {
                break;
            }
            st = cvar.wait_timeout(lock.lock().unwrap(), Duration::from_millis(500)).unwrap().0;
        }
        write!(conn, "0\r\n\r\n")
    }

    /// Applies a change the way the API server does: a new resource version on the object,
    /// the object replaced (or removed), the event recorded for watches.
    fn change(&self, plural: &str, event: &str, mut object: Value) {
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().unwrap();
        st.version += 1;
        object["metadata"]["resourceVersion"] = json!(st.version.to_string());
        let (kind, api_version) = list_kind(plural);
        object["kind"] = json!(kind.trim_end_matches("List"));
        object["apiVersion"] = json!(api_version);
        let key = |o: &Value| (o["metadata"]["namespace"].clone(), o["metadata"]["name"].clone());
        let list = st.objects.get_mut(plural).unwrap();
        list.retain(|o| key(o) != key(&object));
        if event != "DELETED" {
            list.push(object.clone());
        }
        let version = st.version;
        st.history.push((version, plural.into(), event.into(), object));
        cvar.notify_all();
    }

    fn object(&self, plural: &str, name: &str) -> Value {
        let st = self.state.0.lock().unwrap();
        st.objects[plural].iter().find(|o| o["metadata"]["name"] == name).cloned().unwrap()
    }

    fn with<T>(&self, f: impl FnOnce(&mut ApiState) -> T) -> T {
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().unwrap();
        let out = f(&mut st);
        cvar.notify_all();
        out
    }
}

/// The discovered labels of every target of `job`, active or dropped, sorted by address.
fn discovered(s: &Server, job: &str) -> Vec<Value> {
    let (_, v) = s.get_json("/api/v1/targets");
    let mut out: Vec<Value> = ["activeTargets", "droppedTargets"]
        .iter()
        .flat_map(|k| v["data"][k].as_array().cloned().unwrap_or_default())
        .map(|t| t["discoveredLabels"].clone())
        .filter(|d| d["job"] == job)
        .collect();
    out.sort_by_key(|d| (d["__address__"].as_str().unwrap_or("").to_string(), d.to_string()));
    out
}

/// The one target of `job` at `address`.
fn target_at(s: &Server, job: &str, address: &str) -> Value {
    let all = discovered(s, job);
    let at: Vec<&Value> = all.iter().filter(|d| d["__address__"] == address).collect();
    assert_eq!(at.len(), 1, "one target of {job} at {address}: {all:#?}");
    at[0].clone()
}

fn counter(s: &Server, series: &str) -> f64 {
    let (_, text) = s.get_text("/metrics");
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

#[test]
fn kubernetes_sd_roles_labels_and_watches() {
    let api = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // promflow's own pod points at this promflow, so that a discovered pod is scraped
    let mut me = api.object("pods", "promflow-0");
    me["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(port);
    api.change("pods", "MODIFIED", me);
    let server = format!("http://127.0.0.1:{}", api.port);
    let sd = |role: &str, extra: &str| {
        format!("    kubernetes_sd_configs: [{{role: {role}, api_server: '{server}'{extra}}}]\n    relabel_configs:\n      - {{source_labels: [__address__], regex: '127\\.0\\.0\\.1:[0-9]+', action: keep}}\n")
    };
    let config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: pod\n{}  - job_name: node\n{}  - job_name: service\n{}  - job_name: endpoints\n{}  - job_name: slices\n{}  - job_name: ingress\n{}  - job_name: in-cluster\n    kubernetes_sd_configs: [{{role: pod}}]\n",
        sd("pod", ""),
        sd("node", ""),
        sd("service", ", namespaces: {names: [shop, monitoring]}, selectors: [{role: service, label: 'app.kubernetes.io/part-of=shop'}]"),
        sd("endpoints", ""),
        sd("endpointslice", ", attach_metadata: {node: true}"),
        sd("ingress", ""),
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let s = start_promflow_with(dir.path(), &cfg, port, &[]);

    // pod role: promflow's own pod is scraped
    let up = wait_for(Duration::from_secs(20), || {
        let (_, v) = s.get_json("/api/v1/query?query=up%7Bjob%3D%22pod%22%7D");
        (result(&v).first()?["value"][1] == "1").then_some(())
    });
    assert!(up.is_some(), "the discovered pod is scraped: {:#?}", discovered(&s, "pod"));
    // a target per container port, a portless one per container without ports, init
    // containers too; the pending pod without an IP has none
    let addresses: Vec<String> =
        discovered(&s, "pod").iter().map(|d| d["__address__"].as_str().unwrap().to_string()).collect();
    let want = ["10.244.1.17", "10.244.1.17:8080", "10.244.1.17:9000", "10.244.1.17:9100", "10.244.2.9:8080"];
    let mut want: Vec<String> = want.iter().map(|a| a.to_string()).collect();
    want.extend([format!("127.0.0.1:{port}"), "10.244.2.9:9100".into()]);
    want.sort();
    assert_eq!(addresses, want);
    let app = target_at(&s, "pod", "10.244.1.17:9100");
    let m = |k: &str| format!("__meta_kubernetes_{k}");
    for (k, v) in [
        ("namespace", "shop"),
        ("pod_name", "web-7d9c8-abcde"),
        ("pod_ip", "10.244.1.17"),
        ("pod_ready", "true"),
        ("pod_phase", "Running"),
        ("pod_node_name", "node-a"),
        ("pod_host_ip", "10.0.0.11"),
        ("pod_uid", "5f1c2a9e-1111-4c3b-9e1a-0a1b2c3d4e5f"),
        ("pod_controller_kind", "ReplicaSet"),
        ("pod_controller_name", "web-7d9c8"),
        ("pod_label_app_kubernetes_io_name", "web"),
        ("pod_labelpresent_app_kubernetes_io_name", "true"),
        ("pod_annotation_prometheus_io_scrape", "true"),
        ("pod_annotationpresent_prometheus_io_port", "true"),
        ("pod_container_name", "app"),
        ("pod_container_image", "example/web:3.1"),
        ("pod_container_id", "containerd://bb22"),
        ("pod_container_init", "false"),
        ("pod_container_port_name", "metrics"),
        ("pod_container_port_number", "9100"),
        ("pod_container_port_protocol", "TCP"),
    ] {
        assert_eq!(app[m(k)], v, "{k} in {app:#?}");
    }
    let init = target_at(&s, "pod", "10.244.1.17:9000");
    assert_eq!(init[m("pod_container_init")], "true");
    assert_eq!(init[m("pod_container_id")], "containerd://aa11");
    let logger = target_at(&s, "pod", "10.244.1.17");
    assert_eq!(logger[m("pod_container_name")], "logger");
    assert!(logger.get(m("pod_container_port_number")).is_none());
    assert_eq!(target_at(&s, "pod", "10.244.2.9:8080")[m("pod_ready")], "false");

    // node role: the InternalIP on the kubelet port, IPv6 in brackets, instance = node name
    let a = target_at(&s, "node", "10.0.0.11:10250");
    assert_eq!(a["instance"], "node-a");
    assert_eq!(a[m("node_name")], "node-a");
    assert_eq!(a[m("node_provider_id")], "aws:///eu-1a/i-0123456789");
    assert_eq!(a[m("node_address_ExternalIP")], "203.0.113.5");
    assert_eq!(a[m("node_address_Hostname")], "node-a");
    assert_eq!(a[m("node_label_topology_kubernetes_io_zone")], "eu-1a");
    assert_eq!(a[m("node_annotationpresent_node_alpha_kubernetes_io_ttl")], "true");
    assert_eq!(a[m("node_condition_ready")], "true");
    assert_eq!(a[m("node_condition_memorypressure")], "false");
    assert_eq!(target_at(&s, "node", "[fd00::12]:10250")[m("node_condition_ready")], "unknown");

    // service role, in two namespaces, with a label selector: the cache service lacks the label
    let services: Vec<String> =
        discovered(&s, "service").iter().map(|d| d["__address__"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        services,
        ["billing-db.shop.svc:5432", "promflow.monitoring.svc:9090", "web.shop.svc:80", "web.shop.svc:9100"]
    );
    let web = target_at(&s, "service", "web.shop.svc:9100");
    for (k, v) in [
        ("namespace", "shop"),
        ("service_name", "web"),
        ("service_port_name", "metrics"),
        ("service_port_number", "9100"),
        ("service_port_protocol", "TCP"),
        ("service_type", "LoadBalancer"),
        ("service_cluster_ip", "10.96.12.34"),
        ("service_loadbalancer_ip", "198.51.100.7"),
        ("service_annotation_team", "a"),
        ("service_label_app_kubernetes_io_part_of", "shop"),
    ] {
        assert_eq!(web[m(k)], v, "{k} in {web:#?}");
    }
    let db = target_at(&s, "service", "billing-db.shop.svc:5432");
    assert_eq!(db[m("service_external_name")], "db.example.org");
    assert!(db.get(m("service_cluster_ip")).is_none());
    let requests = api.with(|st| st.requests.clone());
    let selector = "labelSelector=app.kubernetes.io%2Fpart-of%3Dshop";
    for ns in ["shop", "monitoring"] {
        let path = format!("/api/v1/namespaces/{ns}/services?");
        assert!(
            requests.iter().any(|r| r.starts_with(&path) && r.contains(selector) && r.contains("watch=1")),
            "services of {ns} watched with the selector: {requests:#?}"
        );
    }

    // endpoints role: ready and not-ready addresses with their pods' labels, the service's
    // labels, and the pods' other container ports as extra targets
    let ready = target_at(&s, "endpoints", "10.244.1.17:8080");
    for (k, v) in [
        ("endpoints_name", "web"),
        ("endpoints_label_app_kubernetes_io_name", "web"),
        ("endpoint_ready", "true"),
        ("endpoint_port_name", "http"),
        ("endpoint_port_protocol", "TCP"),
        ("endpoint_node_name", "node-a"),
        ("endpoint_address_target_kind", "Pod"),
        ("endpoint_address_target_name", "web-7d9c8-abcde"),
        ("service_name", "web"),
        ("service_annotation_team", "a"),
        ("pod_name", "web-7d9c8-abcde"),
        ("pod_container_name", "app"),
        ("pod_container_port_name", "http"),
    ] {
        assert_eq!(ready[m(k)], v, "{k} in {ready:#?}");
    }
    let not_ready = target_at(&s, "endpoints", "10.244.2.9:8080");
    assert_eq!(not_ready[m("endpoint_ready")], "false");
    assert_eq!(not_ready[m("endpoint_hostname")], "web-1");
    let extra = target_at(&s, "endpoints", "10.244.1.17:9100");
    assert_eq!(extra[m("pod_container_port_name")], "metrics");
    assert!(extra.get(m("endpoint_ready")).is_none(), "{extra:#?}");
    let n = discovered(&s, "endpoints").len();
    assert_eq!(n, 5, "2 endpoints + the unlisted ports: 9100 of each pod, the init container's 9000");

    // endpointslice role, with the node's metadata attached
    let serving = target_at(&s, "slices", "10.244.2.9:8080");
    for (k, v) in [
        ("endpointslice_name", "web-x7k2p"),
        ("endpointslice_address_type", "IPv4"),
        ("endpointslice_port", "8080"),
        ("endpointslice_port_app_protocol", "http"),
        ("endpointslice_endpoint_conditions_ready", "false"),
        ("endpointslice_endpoint_conditions_serving", "true"),
        ("endpointslice_endpoint_conditions_terminating", "true"),
        ("endpointslice_endpoint_zone", "eu-1b"),
        ("endpointslice_endpoint_hostname", "web-1"),
        ("node_name", "node-b"),
        ("node_label_topology_kubernetes_io_zone", "eu-1b"),
        ("service_name", "web"),
        ("pod_name", "web-7d9c8-fghij"),
    ] {
        assert_eq!(serving[m(k)], v, "{k} in {serving:#?}");
    }

    // ingress role: a target per rule and path, https where a TLS host covers the rule
    let ingress: Vec<(String, String, String)> = discovered(&s, "ingress")
        .iter()
        .map(|d| {
            let g = |k: &str| d[m(k)].as_str().unwrap_or("").to_string();
            (g("ingress_host"), g("ingress_path"), g("ingress_scheme"))
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("status.example.org", "/", "http"),
        ("www.shop.example.com", "/", "https"),
        ("www.shop.example.com", "/api", "https"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    let mut got = ingress.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(target_at(&s, "ingress", "status.example.org")[m("ingress_class_name")], "nginx");

    // without api_server and outside a cluster, the discovery logs why and finds nothing
    assert!(discovered(&s, "in-cluster").is_empty());
    assert!(s.logs().contains("KUBERNETES_SERVICE_HOST"), "the in-cluster error is logged");

    // watches: an added pod appears, a changed label follows, a deleted pod goes
    let mut added = api.object("pods", "web-7d9c8-fghij");
    added["metadata"]["name"] = json!("web-7d9c8-klmno");
    added["metadata"]["uid"] = json!("0c5f6e43-aaaa-4b91-9e70-607182930415");
    added["status"]["podIP"] = json!("10.244.3.4");
    api.change("pods", "ADDED", added.clone());
    let shown = wait_for(Duration::from_secs(10), || {
        discovered(&s, "pod").iter().any(|d| d["__address__"] == "10.244.3.4:8080").then_some(())
    });
    assert!(shown.is_some(), "an added pod becomes a target");
    let mut relabelled = api.object("pods", "web-7d9c8-abcde");
    relabelled["metadata"]["labels"]["track"] = json!("canary");
    api.change("pods", "MODIFIED", relabelled);
    let changed = wait_for(Duration::from_secs(10), || {
        (target_at(&s, "pod", "10.244.1.17:8080")[m("pod_label_track")] == "canary").then_some(())
    });
    assert!(changed.is_some(), "a modified pod's labels follow");
    api.change("pods", "DELETED", added);
    let gone = wait_for(Duration::from_secs(10), || {
        (!discovered(&s, "pod").iter().any(|d| d["__address__"] == "10.244.3.4:8080")).then_some(())
    });
    assert!(gone.is_some(), "a deleted pod's targets go");
    assert!(counter(&s, "prometheus_sd_kubernetes_events_total{event=\"add\",role=\"pod\"}") >= 5.0);
    assert!(counter(&s, "prometheus_sd_kubernetes_events_total{event=\"delete\",role=\"pod\"}") >= 1.0);

    // the server compacts its history: open watches get a 410 ERROR event, the next list
    // fails once; the targets stay, the failure is counted, and after the re-list a change
    // made meanwhile shows
    let lists = |st: &ApiState| {
        st.requests.iter().filter(|r| r.starts_with("/api/v1/pods?") && !r.contains("watch=")).count()
    };
    let lists_before = api.with(|st| lists(st));
    let failures_before = counter(&s, "prometheus_sd_kubernetes_failures_total");
    api.with(|st| {
        st.fail_lists = 1;
        st.compacted = st.version + 1;
    });
    let mut moved = api.object("pods", "web-7d9c8-fghij");
    moved["status"]["podIP"] = json!("10.244.2.10");
    api.change("pods", "MODIFIED", moved);
    let relisted = wait_for(Duration::from_secs(15), || {
        discovered(&s, "pod").iter().any(|d| d["__address__"] == "10.244.2.10:8080").then_some(())
    });
    assert!(relisted.is_some(), "after the 410 and a failed list, a re-list brings the change");
    assert!(api.with(|st| lists(st)) >= lists_before + 2, "one failed and one good re-list");
    assert!(counter(&s, "prometheus_sd_kubernetes_failures_total") > failures_before);
    assert_eq!(target_at(&s, "pod", "10.244.1.17:8080")[m("pod_label_track")], "canary");
    assert!(s.logs().contains("etcdserver: request timed out"), "the failed list's answer is logged");
}
