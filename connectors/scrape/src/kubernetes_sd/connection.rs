//! How discovery reaches the Kubernetes API server: an explicit `api_server` with the SD
//! config's own HTTP client settings, a kubeconfig file, or the in-cluster service account.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use promflow_config::KubernetesSdConfig;
use serde::Deserialize;

use crate::client::{base64_decode, builder};
use crate::Error;
use base64::Engine as _;
use promflow_config::TlsConfig;

/// Where a pod's service account files are mounted.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A client for one API server.
pub(crate) struct Connection {
    /// `scheme://host[:port][/prefix]`, without a trailing slash.
    base: String,
    client: reqwest::Client,
    /// A bearer token read before every request (service-account tokens are rotated).
    token_file: Option<PathBuf>,
    /// A fixed `Authorization` value from a kubeconfig user.
    authorization: Option<String>,
    /// The namespace promflow runs in, when it runs in a cluster.
    pub own_namespace: Option<String>,
}

impl Connection {
    /// The connection `cfg` describes.
    pub fn new(cfg: &KubernetesSdConfig) -> Result<Connection, Error> {
        // the request timeout is set per request: watches are long-lived
        let timeout = Duration::from_secs(3600);
        if let Some(url) = cfg.api_server.as_deref().filter(|u| !u.is_empty()) {
            let client = crate::client::http_client(&cfg.http_client(), timeout)?;
            return Ok(Connection::plain(url, client));
        }
        if let Some(file) = cfg.kubeconfig_file.as_deref().filter(|f| !f.is_empty()) {
            return kubeconfig(Path::new(file), timeout);
        }
        in_cluster(Path::new(SERVICE_ACCOUNT), timeout)
    }

    fn plain(base: &str, client: reqwest::Client) -> Connection {
        let base = base.trim_end_matches('/').to_string();
        Connection { base, client, token_file: None, authorization: None, own_namespace: None }
    }

    /// A GET of `path` (from the API root, starting with `/`) with `query`, ending after
    /// `timeout`.
    pub fn get(&self, path: &str, query: &[(&str, String)], timeout: Duration) -> reqwest::RequestBuilder {
        let mut req = self.client.get(format!("{}{path}", self.base)).query(query).timeout(timeout);
        if let Some(file) = &self.token_file {
            // an unreadable token is sent as none: the server's 401 says what is wrong
            if let Ok(token) = std::fs::read_to_string(file) {
                req = req.bearer_auth(token.trim());
            }
        } else if let Some(auth) = &self.authorization {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        req
    }
}

/// The in-cluster configuration: the API server from the environment Kubernetes gives every
/// pod, the service account's CA, token and namespace from `dir`.
fn in_cluster(dir: &Path, timeout: Duration) -> Result<Connection, Error> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").unwrap_or_default();
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_default();
    if host.is_empty() || port.is_empty() {
        return Err(Error::Client(
            "unable to load in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined (set api_server or kubeconfig_file outside a cluster)".into(),
        ));
    }
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let ca = dir.join("ca.crt");
    let tls = TlsConfig { ca_file: Some(ca.display().to_string()), ..TlsConfig::default() };
    let client = builder(&tls, timeout)?.build().map_err(|e| Error::Client(e.to_string()))?;
    let mut conn = Connection::plain(&format!("https://{host}:{port}"), client);
    conn.token_file = Some(dir.join("token"));
    conn.own_namespace = std::fs::read_to_string(dir.join("namespace"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    Ok(conn)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", default)]
struct KubeConfig {
    current_context: String,
    clusters: Vec<Named<Cluster>>,
    contexts: Vec<Named<Context>>,
    users: Vec<Named<User>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Named<T: Default> {
    name: String,
    #[serde(alias = "cluster", alias = "context", alias = "user")]
    item: T,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", default)]
struct Cluster {
    server: String,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", default)]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    username: Option<String>,
    password: Option<String>,
    /// Exec and auth-provider plugins are not run; their presence is an error.
    exec: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<BTreeMap<String, serde_json::Value>>,
}

/// The current context of a kubeconfig file: its cluster's server and CA, its user's token,
/// client certificate or basic credentials. Relative paths are relative to the file.
fn kubeconfig(file: &Path, timeout: Duration) -> Result<Connection, Error> {
    let err = |m: String| Error::Client(format!("kubeconfig {}: {m}", file.display()));
    let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
    let kc: KubeConfig = serde_saphyr::from_str(&text).map_err(|e| err(e.to_string()))?;
    let context = match kc.contexts.iter().find(|c| c.name == kc.current_context) {
        Some(c) => &c.item,
        None if kc.current_context.is_empty() && kc.contexts.len() == 1 => &kc.contexts[0].item,
        None => return Err(err(format!("current-context {:?} not found", kc.current_context))),
    };
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .map(|c| &c.item)
        .ok_or_else(|| err(format!("cluster {:?} not found", context.cluster)))?;
    let user = kc.users.iter().find(|u| u.name == context.user).map(|u| &u.item);
    let dir = file.parent().unwrap_or(Path::new("."));
    // inline data wins over a file, as in kubectl
    let material =
        |data: &Option<String>, path: &Option<String>, what: &str| -> Result<Option<String>, Error> {
            let pem = if let Some(d) = data.as_deref().filter(|d| !d.is_empty()) {
                let clean: String = d.chars().filter(|c| !c.is_whitespace()).collect();
                base64_decode(&clean).ok_or_else(|| err(format!("{what}-data is not base64")))?
            } else if let Some(p) = path.as_deref().filter(|p| !p.is_empty()) {
                let p = dir.join(p);
                std::fs::read(&p).map_err(|e| err(format!("reading {}: {e}", p.display())))?
            } else {
                return Ok(None);
            };
            String::from_utf8(pem).map(Some).map_err(|_| err(format!("{what}: not PEM text")))
        };
    let mut tls = TlsConfig {
        ca: material(
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
            "certificate-authority",
        )?,
        insecure_skip_verify: cluster.insecure_skip_tls_verify,
        ..TlsConfig::default()
    };
    let mut conn_auth = None;
    let mut token_file = None;
    if let Some(u) = user {
        if u.exec.is_some() || u.auth_provider.is_some() {
            return Err(err("exec and auth-provider credential plugins are not supported; use a token or a client certificate".into()));
        }
        let cert = material(&u.client_certificate_data, &u.client_certificate, "client-certificate")?;
        let key = material(&u.client_key_data, &u.client_key, "client-key")?;
        if let (Some(cert), Some(key)) = (cert, key) {
            tls.cert = Some(cert);
            tls.key = Some(key);
        }
        if let Some(t) = u.token.as_deref().filter(|t| !t.is_empty()) {
            conn_auth = Some(format!("Bearer {t}"));
        } else if let Some(f) = u.token_file.as_deref().filter(|f| !f.is_empty()) {
            token_file = Some(dir.join(f));
        } else if let Some(name) = u.username.as_deref().filter(|n| !n.is_empty()) {
            let raw = format!("{name}:{}", u.password.as_deref().unwrap_or(""));
            conn_auth = Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)));
        }
    }
    if cluster.server.is_empty() {
        return Err(err(format!("cluster {:?} has no server", context.cluster)));
    }
    let client = builder(&tls, timeout)?.build().map_err(|e| err(e.to_string()))?;
    let mut conn = Connection::plain(&cluster.server, client);
    conn.authorization = conn_auth;
    conn.token_file = token_file;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_current_context_token_and_server() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: c1\n  cluster:\n    server: https://10.0.0.1:6443/\n    insecure-skip-tls-verify: true\n- name: c2\n  cluster:\n    server: https://other\ncontexts:\n- name: prod\n  context: {cluster: c2, user: u2}\n- name: dev\n  context: {cluster: c1, user: u1, namespace: team}\nusers:\n- name: u1\n  user:\n    token: abc\n- name: u2\n  user:\n    username: x\n",
        )
        .unwrap();
        let conn = kubeconfig(&file, Duration::from_secs(1)).unwrap();
        assert_eq!(conn.base, "https://10.0.0.1:6443");
        assert_eq!(conn.authorization.as_deref(), Some("Bearer abc"));
        std::fs::write(&file, "current-context: none\ncontexts: []\n").unwrap();
        let e = kubeconfig(&file, Duration::from_secs(1)).err().unwrap().to_string();
        assert!(e.contains("current-context \"none\" not found"), "{e}");
        std::fs::write(&file, "current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: 'https://h'}}]\nusers: [{name: u, user: {exec: {command: aws}}}]\n").unwrap();
        let e = kubeconfig(&file, Duration::from_secs(1)).err().unwrap().to_string();
        assert!(e.contains("exec and auth-provider"), "{e}");
    }

    #[test]
    fn in_cluster_needs_the_environment() {
        // the variables are not set in tests; the error names them
        if std::env::var("KUBERNETES_SERVICE_HOST").is_err() {
            let e = in_cluster(Path::new("/nonexistent"), Duration::from_secs(1)).err().unwrap().to_string();
            assert!(e.contains("KUBERNETES_SERVICE_HOST"), "{e}");
        }
    }
}
