//! Service discovery configurations with a typed form: static, file, HTTP, DNS, Consul and
//! Kubernetes. Every other `*_sd_configs` list is accepted as [`crate::UntypedConfig`].

use std::collections::BTreeMap;
use std::time::Duration;

use promflow_storage::Labels;

use crate::yaml::Validate;

config_struct! {
    /// One `static_configs` entry (also the shape of a file SD group).
    pub struct StaticConfig {
        /// `host:port` addresses (become `__address__`).
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub targets: Vec<String> = Vec::new(),
        /// Labels for every target of the group.
        #[serde(with = "crate::yaml::labels_serde", skip_serializing_if = "Labels::is_empty")]
        pub labels: Labels = Labels::new(),
    }
}

/// `patFileSDName`: `^[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)$`.
fn valid_file_sd_name(name: &str) -> bool {
    let Some(dot) = name.rfind('.') else { return false };
    if !["json", "yml", "yaml", "JSON", "YML", "YAML"].contains(&&name[dot + 1..]) {
        return false;
    }
    let stem = &name[..dot];
    match stem.find('*') {
        None => true,
        Some(i) => !stem[i + 1..].contains(['*', '/']),
    }
}

config_struct! {
    /// One `file_sd_configs` entry.
    pub struct FileSdConfig {
        /// Files or globs (`*` only in the last path element) of `.json`, `.yml` or `.yaml`
        /// files; relative paths are resolved against the config file's directory.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub files: Vec<String> = Vec::new(),
        /// How often to re-read the files (default 5m), on top of watching them.
        #[serde(with = "crate::duration::serde_duration")]
        pub refresh_interval: Duration = Duration::from_secs(300),
    }
}

impl Validate for FileSdConfig {
    fn validate(&mut self) -> Result<(), String> {
        if self.files.is_empty() {
            return Err("file service discovery config must contain at least one path name".into());
        }
        if let Some(bad) = self.files.iter().find(|f| !valid_file_sd_name(f)) {
            return Err(format!("path name {bad:?} is not valid for file discovery"));
        }
        Ok(())
    }
}

config_struct! {
    @http true;
    /// One `http_sd_configs` entry.
    pub struct HttpSdConfig {
        /// The endpoint returning `[{targets, labels}]` JSON (its password is redacted when
        /// rendered).
        #[serde(deserialize_with = "crate::yaml::nullable", serialize_with = "crate::yaml::ser_url")]
        pub url: String = String::new(),
        /// How often to fetch (default 1m).
        #[serde(with = "crate::duration::serde_duration")]
        pub refresh_interval: Duration = Duration::from_secs(60),
    }
}

/// Splits `scheme://host...` into (scheme, host) the way the checks here need.
pub(crate) fn url_scheme_host(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..host_end];
    let host = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    Some((scheme, host))
}

impl Validate for HttpSdConfig {
    fn validate(&mut self) -> Result<(), String> {
        if self.url.is_empty() {
            return Err("URL is missing".into());
        }
        let (scheme, host) = url_scheme_host(&self.url).unwrap_or(("", ""));
        if scheme != "http" && scheme != "https" {
            return Err("URL scheme must be 'http' or 'https'".into());
        }
        if host.is_empty() {
            return Err("host is missing in URL".into());
        }
        self.check_http_client()
    }
}

config_struct! {
    /// One `dns_sd_configs` entry.
    pub struct DnsSdConfig {
        /// Names to query.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub names: Vec<String> = Vec::new(),
        /// How often to re-query (default 30s).
        #[serde(with = "crate::duration::serde_duration")]
        pub refresh_interval: Duration = Duration::from_secs(30),
        /// Record type: `SRV` (default), `A`, `AAAA`, `MX` or `NS`.
        #[serde(rename = "type", deserialize_with = "crate::yaml::nullable")]
        pub type_: String = "SRV".to_string(),
        /// Port for non-SRV records.
        #[serde(skip_serializing_if = "crate::sd::is_zero_port")]
        pub port: u16 = 0,
    }
}

pub(crate) fn is_zero_port(p: &u16) -> bool {
    *p == 0
}

impl Validate for DnsSdConfig {
    fn validate(&mut self) -> Result<(), String> {
        if self.names.is_empty() {
            return Err("DNS-SD config must contain at least one SRV record name".into());
        }
        match self.type_.to_uppercase().as_str() {
            "SRV" => Ok(()),
            "A" | "AAAA" | "MX" | "NS" if self.port == 0 => {
                Err("a port is required in DNS-SD configs for all record types except SRV".into())
            }
            "A" | "AAAA" | "MX" | "NS" => Ok(()),
            _ => Err(format!("invalid DNS-SD records type {}", self.type_)),
        }
    }
}

config_struct! {
    @http true;
    /// One `consul_sd_configs` entry.
    pub struct ConsulSdConfig {
        /// Consul address (default `localhost:8500`).
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub server: String = "localhost:8500".to_string(),
        /// API path prefix.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub path_prefix: Option<String> = None,
        /// ACL token (secret).
        #[serde(serialize_with = "crate::yaml::ser_secret", skip_serializing_if = "Option::is_none")]
        pub token: Option<String> = None,
        /// Datacenter.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub datacenter: Option<String> = None,
        /// Namespace (Consul Enterprise).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub namespace: Option<String> = None,
        /// Admin partition (Consul Enterprise).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub partition: Option<String> = None,
        /// Separator joining tags in `__meta_consul_tags` (default `,`).
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub tag_separator: String = ",".to_string(),
        /// `http` (default) or `https`.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub scheme: String = "http".to_string(),
        /// Deprecated basic-auth user name.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub username: Option<String> = None,
        /// Deprecated basic-auth password (secret).
        #[serde(serialize_with = "crate::yaml::ser_secret", skip_serializing_if = "Option::is_none")]
        pub password: Option<String> = None,
        /// Allow stale reads (default true).
        pub allow_stale: bool = true,
        /// How often to refresh (default 30s).
        #[serde(with = "crate::duration::serde_duration")]
        pub refresh_interval: Duration = Duration::from_secs(30),
        /// Services to watch (all when empty).
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
        pub services: Vec<String> = Vec::new(),
        /// Tags every instance must have.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
        pub tags: Vec<String> = Vec::new(),
        /// Node metadata filter.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "BTreeMap::is_empty")]
        pub node_meta: BTreeMap<String, String> = BTreeMap::new(),
        /// Catalog API filter expression.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub filter: Option<String> = None,
        /// Health API filter expression.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub health_filter: Option<String> = None,
    }
}

impl Validate for ConsulSdConfig {
    fn validate(&mut self) -> Result<(), String> {
        if self.server.trim().is_empty() {
            return Err("consul SD configuration requires a server address".into());
        }
        let user = self.username.as_deref().unwrap_or("");
        let pass = self.password.as_deref().unwrap_or("");
        if !user.is_empty() || !pass.is_empty() {
            if self.basic_auth.is_some() {
                return Err("at most one of consul SD configuration username and password and basic auth can be configured"
                    .into());
            }
            self.basic_auth = Some(crate::http::BasicAuth {
                username: user.to_string(),
                password: (!pass.is_empty()).then(|| pass.to_string()),
                ..Default::default()
            });
        }
        if crate::yaml::is_set(&self.token) && (self.authorization.is_some() || self.oauth2.is_some()) {
            return Err("at most one of consul SD token, authorization, or oauth2 can be configured".into());
        }
        self.check_http_client()
    }
}

config_struct! {
    /// `namespaces` of a Kubernetes SD config.
    pub struct KubernetesNamespaces {
        /// Include the namespace Prometheus runs in.
        pub own_namespace: bool = false,
        /// Namespaces to watch (all when empty).
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub names: Vec<String> = Vec::new(),
    }
}

config_struct! {
    /// One `selectors` entry of a Kubernetes SD config.
    pub struct KubernetesSelector {
        /// The role the selector applies to.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub role: String = String::new(),
        /// Label selector.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub label: Option<String> = None,
        /// Field selector.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub field: Option<String> = None,
    }
}

config_struct! {
    /// `attach_metadata` of a Kubernetes SD config.
    pub struct KubernetesAttachMetadata {
        /// Attach node metadata.
        pub node: bool = false,
        /// Attach namespace metadata.
        pub namespace: bool = false,
        /// Attach deployment metadata.
        pub deployment: bool = false,
        /// Attach job metadata.
        pub job: bool = false,
        /// Attach cronjob metadata.
        pub cronjob: bool = false,
    }
}

const KUBERNETES_ROLES: &[&str] = &["pod", "service", "endpoints", "endpointslice", "node", "ingress"];

config_struct! {
    @http true;
    /// One `kubernetes_sd_configs` entry.
    pub struct KubernetesSdConfig {
        /// API server URL (in-cluster config when absent).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub api_server: Option<String> = None,
        /// `pod`, `service`, `endpoints`, `endpointslice`, `node` or `ingress` (required).
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub role: String = String::new(),
        /// A kubeconfig file.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub kubeconfig_file: Option<String> = None,
        /// Namespaces to watch.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub namespaces: KubernetesNamespaces = KubernetesNamespaces::default(),
        /// Label and field selectors.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
        pub selectors: Vec<KubernetesSelector> = Vec::new(),
        /// Extra metadata to attach.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub attach_metadata: KubernetesAttachMetadata = KubernetesAttachMetadata::default(),
    }
}

impl Validate for KubernetesSdConfig {
    fn validate(&mut self) -> Result<(), String> {
        if self.role.is_empty() {
            return Err("role missing (one of: pod, service, endpoints, endpointslice, node, ingress)".into());
        }
        if !KUBERNETES_ROLES.contains(&self.role.as_str()) {
            return Err(format!("unknown Kubernetes SD role {:?}", self.role));
        }
        self.check_http_client()?;
        let api = crate::yaml::is_set(&self.api_server);
        let kubeconfig = crate::yaml::is_set(&self.kubeconfig_file);
        let default_http = {
            let mut d = crate::http::HttpClientConfig::default();
            d.normalize()?;
            self.http_client() == d
        };
        if api && kubeconfig {
            return Err("cannot use 'kubeconfig_file' and 'api_server' simultaneously".into());
        }
        if kubeconfig && !default_http {
            return Err(
                "cannot use a custom HTTP client configuration together with 'kubeconfig_file'".into()
            );
        }
        if !api && !default_http {
            return Err(
                "to use custom HTTP client configuration please provide the 'api_server' URL explicitly"
                    .into(),
            );
        }
        if api && self.namespaces.own_namespace {
            return Err("cannot use 'api_server' and 'namespaces.own_namespace' simultaneously".into());
        }
        if kubeconfig && self.namespaces.own_namespace {
            return Err("cannot use 'kubeconfig_file' and 'namespaces.own_namespace' simultaneously".into());
        }
        let allowed: &[&str] = match self.role.as_str() {
            "pod" => &["pod", "node"],
            "service" => &["service"],
            "endpointslice" => &["pod", "service", "endpointslice"],
            "endpoints" => &["pod", "service", "endpoints"],
            "node" => &["node"],
            _ => &["ingress"],
        };
        let mut seen = Vec::new();
        for s in &self.selectors {
            if seen.contains(&s.role) {
                return Err(format!("duplicated selector role: {}", s.role));
            }
            seen.push(s.role.clone());
            if !allowed.contains(&s.role.as_str()) {
                return Err(format!("{} role supports only {} selectors", self.role, allowed.join(", ")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sd_names() {
        for ok in ["a.json", "dir/*.yml", "/etc/x/targets-*.yaml", "x.YAML", "a/b/c*d.json"] {
            assert!(valid_file_sd_name(ok), "{ok}");
        }
        for bad in ["a.txt", "a", "*/x.json", "a*b*.json", "dir*/x.yml"] {
            assert!(!valid_file_sd_name(bad), "{bad}");
        }
    }

    #[test]
    fn url_parts() {
        assert_eq!(url_scheme_host("http://a:1/x"), Some(("http", "a:1")));
        assert_eq!(url_scheme_host("https://u:p@h/"), Some(("https", "h")));
        assert_eq!(url_scheme_host("http:///x"), Some(("http", "")));
        assert_eq!(url_scheme_host("nope"), None);
    }
}
