//! Consul service discovery (`consul_sd_configs`): the services of Consul's catalog, each
//! healthy or not instance a target with Prometheus's `__meta_consul_*` labels.
//!
//! One round asks `/v1/catalog/services` as a blocking query (it returns when the catalog
//! changes, or after `refresh_interval` at the latest), keeps the services that `services`
//! names (all when empty) and that carry every tag of `tags`, and reads each one's instances
//! from `/v1/health/service/<name>`. So a registration or deregistration shows at once, and a
//! change of health or address within `refresh_interval`. A failed round keeps the last
//! targets.

use std::collections::BTreeMap;
use std::time::Duration;

use promflow_config::ConsulSdConfig;
use promflow_storage::Labels;
use serde::Deserialize;

/// What one round found, and the catalog index to wait on next.
pub struct Round {
    /// The target groups: one per instance.
    pub groups: Vec<(Vec<String>, Labels)>,
    /// `X-Consul-Index` of the catalog answer.
    pub index: u64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Node {
    node: String,
    address: String,
    datacenter: String,
    tagged_addresses: BTreeMap<String, String>,
    meta: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Service {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    tags: Vec<String>,
    address: String,
    port: u16,
    meta: BTreeMap<String, String>,
    namespace: String,
    partition: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Check {
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    #[serde(default)]
    node: Node,
    #[serde(default)]
    service: Service,
    #[serde(default)]
    checks: Vec<Check>,
}

/// One round against the server, waiting on the catalog from `index` (0: at once).
pub async fn round(client: &reqwest::Client, cfg: &ConsulSdConfig, index: u64) -> Result<Round, String> {
    let wait = cfg.refresh_interval.max(Duration::from_secs(1));
    let mut query = common_query(cfg);
    query.push(("index".into(), index.to_string()));
    query.push(("wait".into(), format!("{}ms", wait.as_millis())));
    for (k, v) in &cfg.node_meta {
        query.push(("node-meta".into(), format!("{k}:{v}")));
    }
    if let Some(f) = cfg.filter.as_deref().filter(|f| !f.is_empty()) {
        query.push(("filter".into(), f.to_string()));
    }
    // the blocking query may take the whole wait: the request's own timeout comes after it
    let resp = get(client, cfg, "/v1/catalog/services", &query, wait + Duration::from_secs(10)).await?;
    let new_index =
        resp.headers().get("X-Consul-Index").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(0);
    let services: BTreeMap<String, Vec<String>> = json(resp).await?;
    let mut groups = Vec::new();
    for (name, tags) in &services {
        let named = cfg.services.is_empty() || cfg.services.contains(name);
        if !named || !cfg.tags.iter().all(|t| tags.contains(t)) {
            continue;
        }
        groups.extend(instances(client, cfg, name).await?);
    }
    Ok(Round { groups, index: new_index })
}

/// The query parameters every request carries.
fn common_query(cfg: &ConsulSdConfig) -> Vec<(String, String)> {
    let mut q = Vec::new();
    if cfg.allow_stale {
        q.push(("stale".into(), String::new()));
    }
    for (name, value) in [("dc", &cfg.datacenter), ("ns", &cfg.namespace), ("partition", &cfg.partition)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            q.push((name.into(), v.to_string()));
        }
    }
    q
}

async fn get(
    client: &reqwest::Client,
    cfg: &ConsulSdConfig,
    path: &str,
    query: &[(String, String)],
    timeout: Duration,
) -> Result<reqwest::Response, String> {
    let prefix = cfg.path_prefix.as_deref().unwrap_or("").trim_end_matches('/');
    let url = format!("{}://{}{prefix}{path}", cfg.scheme, cfg.server);
    let mut req = client.get(&url).query(query).timeout(timeout);
    if let Some(token) = cfg.token.as_deref().filter(|t| !t.is_empty()) {
        req = req.header("X-Consul-Token", token);
    }
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("{url}: HTTP status {status}: {}", body.trim()));
    }
    Ok(resp)
}

async fn json<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, String> {
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| format!("unexpected answer from Consul: {e}"))
}

/// The instances of one service, each a group with its labels.
async fn instances(
    client: &reqwest::Client,
    cfg: &ConsulSdConfig,
    name: &str,
) -> Result<Vec<(Vec<String>, Labels)>, String> {
    let mut query = common_query(cfg);
    for t in &cfg.tags {
        query.push(("tag".into(), t.clone()));
    }
    if let Some(f) = cfg.health_filter.as_deref().filter(|f| !f.is_empty()) {
        query.push(("filter".into(), f.to_string()));
    }
    let path = format!("/v1/health/service/{}", path_escape(name));
    let resp = get(client, cfg, &path, &query, cfg.refresh_interval.max(Duration::from_secs(10))).await?;
    let entries: Vec<Entry> = json(resp).await?;
    Ok(entries.iter().map(|e| (vec![address(e)], labels(e, &cfg.tag_separator))).collect())
}

/// The service's address and port, or the node's address when the service has none.
fn address(e: &Entry) -> String {
    let host = if e.service.address.is_empty() { &e.node.address } else { &e.service.address };
    if host.contains(':') {
        format!("[{host}]:{}", e.service.port)
    } else {
        format!("{host}:{}", e.service.port)
    }
}

fn labels(e: &Entry, separator: &str) -> Labels {
    let mut l = Labels::new();
    let mut set = |name: &str, value: &str| l.set(name, value);
    set("__meta_consul_node", &e.node.node);
    set("__meta_consul_address", &e.node.address);
    set("__meta_consul_dc", &e.node.datacenter);
    set("__meta_consul_health", health(&e.checks));
    set("__meta_consul_service", &e.service.service);
    set("__meta_consul_service_address", &e.service.address);
    set("__meta_consul_service_id", &e.service.id);
    set("__meta_consul_service_port", &e.service.port.to_string());
    set("__meta_consul_namespace", &e.service.namespace);
    set("__meta_consul_partition", &e.service.partition);
    // the separator on both ends, so that a relabelling regex can match ",tag,"
    let tags = if e.service.tags.is_empty() {
        String::new()
    } else {
        format!("{separator}{}{separator}", e.service.tags.join(separator))
    };
    set("__meta_consul_tags", &tags);
    for (prefix, map) in [
        ("__meta_consul_metadata_", &e.node.meta),
        ("__meta_consul_service_metadata_", &e.service.meta),
        ("__meta_consul_tagged_address_", &e.node.tagged_addresses),
    ] {
        for (k, v) in map {
            set(&format!("{prefix}{}", sanitize(k)), v);
        }
    }
    l
}

/// Consul's aggregated status of an instance's checks: the worst of them.
fn health(checks: &[Check]) -> &'static str {
    let has = |s: &str| checks.iter().any(|c| c.status == s);
    if has("maintenance") {
        "maintenance"
    } else if has("critical") {
        "critical"
    } else if has("warning") {
        "warning"
    } else {
        "passing"
    }
}

/// A label name from any string: characters other than letters, digits and `_` become `_`.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn path_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_labelled_as_prometheus_labels_it() {
        let e: Entry = serde_json::from_str(
            r#"{"Node":{"ID":"x","Node":"n1","Address":"10.0.0.1","Datacenter":"dc1","TaggedAddresses":{"lan":"10.0.0.1","wan":"1.2.3.4"},"Meta":{"rack-id":"r1"}},
                "Service":{"ID":"web-1","Service":"web","Tags":["a","b"],"Address":"","Meta":{"version":"2"},"Port":8080},
                "Checks":[{"Status":"passing"},{"Status":"warning"}]}"#,
        )
        .unwrap();
        assert_eq!(address(&e), "10.0.0.1:8080");
        let l = labels(&e, ",");
        assert_eq!(l.get("__meta_consul_tags"), ",a,b,");
        assert_eq!(l.get("__meta_consul_health"), "warning");
        assert_eq!(l.get("__meta_consul_metadata_rack_id"), "r1");
        assert_eq!(l.get("__meta_consul_tagged_address_wan"), "1.2.3.4");
        assert_eq!(l.get("__meta_consul_service_metadata_version"), "2");
        assert!(!l.contains("__meta_consul_partition"), "an empty value is no label");
    }
}
