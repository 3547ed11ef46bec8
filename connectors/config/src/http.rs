//! HTTP client settings (`prometheus/common/config.HTTPClientConfig`): authentication, TLS,
//! proxies and extra headers. Prometheus inlines them into scrape configs, remote write/read,
//! Alertmanager configs and several service discoveries; so do we (see
//! `ScrapeConfig::http_client`), and [`HttpClientConfig`] groups them for HTTP client code.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::config::join_dir;
use crate::yaml::{is_set, ser_secret, YamlValue, SECRET};

config_struct! {
    /// `basic_auth`: HTTP basic authentication. At most one of `username`/`username_file`/
    /// `username_ref`, and of `password`/`password_file`/`password_ref`.
    pub struct BasicAuth {
        /// The user name.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "String::is_empty")]
        pub username: String = String::new(),
        /// A file holding the user name.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub username_file: Option<String> = None,
        /// A secret-manager reference for the user name (not supported; kept for fidelity).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub username_ref: Option<String> = None,
        /// The password (secret).
        #[serde(serialize_with = "ser_secret", skip_serializing_if = "Option::is_none")]
        pub password: Option<String> = None,
        /// A file holding the password.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub password_file: Option<String> = None,
        /// A secret-manager reference for the password (not supported; kept for fidelity).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub password_ref: Option<String> = None,
    }
}

config_struct! {
    /// `authorization`: an `Authorization: <type> <credentials>` header.
    pub struct Authorization {
        /// The scheme (default `Bearer`; `Basic` is refused: use `basic_auth`).
        #[serde(rename = "type", deserialize_with = "crate::yaml::nullable")]
        pub type_: String = "Bearer".to_string(),
        /// The credentials (secret).
        #[serde(serialize_with = "ser_secret", skip_serializing_if = "Option::is_none")]
        pub credentials: Option<String> = None,
        /// A file holding the credentials, re-read on every request by Prometheus.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub credentials_file: Option<String> = None,
        /// A secret-manager reference (not supported; kept for fidelity).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub credentials_ref: Option<String> = None,
    }
}

config_struct! {
    /// `oauth2`: OAuth 2.0 client credentials (or JWT bearer) token fetching.
    pub struct OAuth2 {
        /// The client id.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub client_id: String = String::new(),
        /// The client secret (secret).
        #[serde(serialize_with = "ser_secret", skip_serializing_if = "Option::is_none")]
        pub client_secret: Option<String> = None,
        /// A file holding the client secret.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub client_secret_file: Option<String> = None,
        /// A secret-manager reference for the client secret.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub client_secret_ref: Option<String> = None,
        /// Key id for the JWT bearer grant.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub client_certificate_key_id: Option<String> = None,
        /// Private key for the JWT bearer grant (secret).
        #[serde(serialize_with = "ser_secret", skip_serializing_if = "Option::is_none")]
        pub client_certificate_key: Option<String> = None,
        /// A file holding the private key for the JWT bearer grant.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub client_certificate_key_file: Option<String> = None,
        /// A secret-manager reference for the private key.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub client_certificate_key_ref: Option<String> = None,
        /// `client_credentials` (default) or `urn:ietf:params:oauth:grant-type:jwt-bearer`.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub grant_type: Option<String> = None,
        /// RS256 (default), RS384 or RS512, for the JWT bearer grant.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub signature_algorithm: Option<String> = None,
        /// JWT issuer.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub iss: Option<String> = None,
        /// JWT audience.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub audience: Option<String> = None,
        /// Extra JWT claims.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "BTreeMap::is_empty")]
        pub claims: BTreeMap<String, YamlValue> = BTreeMap::new(),
        /// Requested scopes.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
        pub scopes: Vec<String> = Vec::new(),
        /// The token endpoint.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub token_url: String = String::new(),
        /// Extra parameters for the token request.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "BTreeMap::is_empty")]
        pub endpoint_params: BTreeMap<String, String> = BTreeMap::new(),
        /// TLS settings for the token endpoint.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub tls_config: TlsConfig = TlsConfig::default(),
        /// Proxy for the token endpoint (its password is redacted when rendered).
        #[serde(serialize_with = "crate::yaml::ser_opt_url", skip_serializing_if = "Option::is_none")]
        pub proxy_url: Option<String> = None,
        /// Hosts that bypass the proxy.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub no_proxy: Option<String> = None,
        /// Use the proxy from the environment.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        pub proxy_from_environment: bool = false,
        /// Headers sent to the proxy on CONNECT (secrets).
        #[serde(
            deserialize_with = "crate::yaml::nullable",
            serialize_with = "ser_secret_header_map",
            skip_serializing_if = "BTreeMap::is_empty"
        )]
        pub proxy_connect_header: BTreeMap<String, Vec<String>> = BTreeMap::new(),
    }
}

/// A TLS protocol version for `min_version`/`max_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// `TLS10`
    Tls10,
    /// `TLS11`
    Tls11,
    /// `TLS12`
    Tls12,
    /// `TLS13`
    Tls13,
}

impl TlsVersion {
    /// The configuration spelling (`TLS12`).
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls10 => "TLS10",
            TlsVersion::Tls11 => "TLS11",
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        }
    }
}

impl Serialize for TlsVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "TLS10" => TlsVersion::Tls10,
            "TLS11" => TlsVersion::Tls11,
            "TLS12" => TlsVersion::Tls12,
            "TLS13" => TlsVersion::Tls13,
            _ => return Err(de::Error::custom(format!("unknown TLS version: {s}"))),
        })
    }
}

config_struct! {
    /// `tls_config`: TLS client settings.
    pub struct TlsConfig {
        /// CA certificate(s), inline PEM.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub ca: Option<String> = None,
        /// Client certificate, inline PEM.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub cert: Option<String> = None,
        /// Client key, inline PEM (secret).
        #[serde(serialize_with = "ser_secret", skip_serializing_if = "Option::is_none")]
        pub key: Option<String> = None,
        /// CA certificate file.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub ca_file: Option<String> = None,
        /// Client certificate file.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub cert_file: Option<String> = None,
        /// Client key file.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub key_file: Option<String> = None,
        /// Secret-manager reference for the CA.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub ca_ref: Option<String> = None,
        /// Secret-manager reference for the certificate.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub cert_ref: Option<String> = None,
        /// Secret-manager reference for the key.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub key_ref: Option<String> = None,
        /// Server name for SNI and certificate verification.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub server_name: Option<String> = None,
        /// Skip server certificate verification.
        pub insecure_skip_verify: bool = false,
        /// Minimum TLS version.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub min_version: Option<TlsVersion> = None,
        /// Maximum TLS version.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub max_version: Option<TlsVersion> = None,
    }
}

config_struct! {
    /// One `http_headers` entry: values sent as the header, from plain strings, secrets and
    /// files.
    pub struct HttpHeader {
        /// Plain values.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
        pub values: Vec<String> = Vec::new(),
        /// Secret values.
        #[serde(
            deserialize_with = "crate::yaml::nullable",
            serialize_with = "ser_secret_list",
            skip_serializing_if = "Vec::is_empty"
        )]
        pub secrets: Vec<String> = Vec::new(),
        /// Files whose (trimmed) contents are values.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
        pub files: Vec<String> = Vec::new(),
    }
}

config_struct! {
    @http true;
    /// Prometheus's HTTP client settings as one value (the fields other sections inline).
    pub struct HttpClientConfig {}
}

fn ser_secret_list<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|_| SECRET))
}

pub(crate) fn ser_secret_header_map<S: Serializer>(
    m: &BTreeMap<String, Vec<String>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        map.serialize_entry(k, &v.iter().map(|_| SECRET).collect::<Vec<_>>())?;
    }
    map.end()
}

/// Headers Prometheus refuses in `http_headers` (canonical spelling).
const RESERVED_HEADERS: &[&str] = &[
    "Authorization",
    "Host",
    "Content-Encoding",
    "Content-Length",
    "Content-Type",
    "User-Agent",
    "Connection",
    "Keep-Alive",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Www-Authenticate",
    "Accept-Encoding",
    "X-Prometheus-Remote-Write-Version",
    "X-Prometheus-Remote-Read-Version",
    "X-Prometheus-Scrape-Timeout-Seconds",
    "X-Amz-Date",
    "X-Amz-Security-Token",
    "X-Amz-Content-Sha256",
];

/// Go's `http.CanonicalHeaderKey`.
pub(crate) fn canonical_header_key(k: &str) -> String {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !k.chars().all(token) {
        return k.to_string();
    }
    let mut upper = true;
    k.chars()
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            out
        })
        .collect()
}

fn clean(s: &mut Option<String>) {
    if s.as_deref() == Some("") {
        *s = None;
    }
}

fn count(flags: &[bool]) -> usize {
    flags.iter().filter(|b| **b).count()
}

impl TlsConfig {
    /// Prometheus's `TLSConfig.Validate`.
    pub(crate) fn check(&mut self) -> Result<(), String> {
        for f in [
            &mut self.ca,
            &mut self.cert,
            &mut self.key,
            &mut self.ca_file,
            &mut self.cert_file,
            &mut self.key_file,
            &mut self.ca_ref,
            &mut self.cert_ref,
            &mut self.key_ref,
            &mut self.server_name,
        ] {
            clean(f);
        }
        if count(&[self.ca.is_some(), self.ca_file.is_some(), self.ca_ref.is_some()]) > 1 {
            return Err("at most one of ca, ca_file & ca_ref must be configured".into());
        }
        if count(&[self.cert.is_some(), self.cert_file.is_some(), self.cert_ref.is_some()]) > 1 {
            return Err("at most one of cert, cert_file & cert_ref must be configured".into());
        }
        if count(&[self.key.is_some(), self.key_file.is_some(), self.key_ref.is_some()]) > 1 {
            return Err("at most one of key and key_file must be configured".into());
        }
        let cert = self.cert.is_some() || self.cert_file.is_some() || self.cert_ref.is_some();
        let key = self.key.is_some() || self.key_file.is_some() || self.key_ref.is_some();
        if cert && !key {
            return Err(
                "exactly one of key or key_file must be configured when a client certificate is configured"
                    .into(),
            );
        }
        if key && !cert {
            return Err(
                "exactly one of cert or cert_file must be configured when a client key is configured".into(),
            );
        }
        Ok(())
    }

    fn resolve_paths(&mut self, dir: &Path) {
        for f in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file].into_iter().flatten() {
            *f = join_dir(dir, f);
        }
    }
}

fn check_proxy(
    proxy_url: &Option<String>,
    no_proxy: &Option<String>,
    from_env: bool,
    connect_header: &BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    if !connect_header.is_empty() && !from_env && !is_set(proxy_url) {
        return Err(
            "if proxy_connect_header is configured, proxy_url or proxy_from_environment must also be configured".into()
        );
    }
    if from_env && is_set(proxy_url) {
        return Err("if proxy_from_environment is configured, proxy_url must not be configured".into());
    }
    if from_env && is_set(no_proxy) {
        return Err("if proxy_from_environment is configured, no_proxy must not be configured".into());
    }
    if !is_set(proxy_url) && is_set(no_proxy) {
        return Err("if no_proxy is configured, proxy_url must also be configured".into());
    }
    Ok(())
}

impl HttpClientConfig {
    /// Prometheus's `HTTPClientConfig.Validate`: checks the combinations, defaults the
    /// authorization type to `Bearer`, and turns a legacy `bearer_token(_file)` into
    /// `authorization`.
    pub(crate) fn normalize(&mut self) -> Result<(), String> {
        clean(&mut self.bearer_token);
        clean(&mut self.bearer_token_file);
        clean(&mut self.proxy_url);
        clean(&mut self.no_proxy);
        let bt = self.bearer_token.is_some();
        let btf = self.bearer_token_file.is_some();
        if bt && btf {
            return Err("at most one of bearer_token & bearer_token_file must be configured".into());
        }
        if (self.basic_auth.is_some() || self.oauth2.is_some()) && (bt || btf) {
            return Err(
                "at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured"
                    .into(),
            );
        }
        if let Some(b) = &mut self.basic_auth {
            for f in [
                &mut b.username_file,
                &mut b.username_ref,
                &mut b.password,
                &mut b.password_file,
                &mut b.password_ref,
            ] {
                clean(f);
            }
            if count(&[!b.username.is_empty(), b.username_file.is_some(), b.username_ref.is_some()]) > 1 {
                return Err(
                    "at most one of basic_auth username, username_file & username_ref must be configured"
                        .into(),
                );
            }
            if count(&[b.password.is_some(), b.password_file.is_some(), b.password_ref.is_some()]) > 1 {
                return Err(
                    "at most one of basic_auth password, password_file & password_ref must be configured"
                        .into(),
                );
            }
        }
        if let Some(a) = &mut self.authorization {
            if bt || btf {
                return Err("authorization is not compatible with bearer_token & bearer_token_file".into());
            }
            for f in [&mut a.credentials, &mut a.credentials_file, &mut a.credentials_ref] {
                clean(f);
            }
            if count(&[a.credentials.is_some(), a.credentials_file.is_some(), a.credentials_ref.is_some()])
                > 1
            {
                return Err(
                    "at most one of authorization credentials & credentials_file must be configured".into()
                );
            }
            a.type_ = a.type_.trim().to_string();
            if a.type_.is_empty() {
                a.type_ = "Bearer".into();
            }
            if a.type_.eq_ignore_ascii_case("basic") {
                return Err(r#"authorization type cannot be set to "basic", use "basic_auth" instead"#.into());
            }
            if self.basic_auth.is_some() || self.oauth2.is_some() {
                return Err("at most one of basic_auth, oauth2 & authorization must be configured".into());
            }
        } else if let Some(t) = self.bearer_token.take() {
            self.authorization = Some(Authorization { credentials: Some(t), ..Authorization::default() });
        } else if let Some(f) = self.bearer_token_file.take() {
            self.authorization =
                Some(Authorization { credentials_file: Some(f), ..Authorization::default() });
        }
        if let Some(o) = &mut self.oauth2 {
            if self.basic_auth.is_some() {
                return Err("at most one of basic_auth, oauth2 & authorization must be configured".into());
            }
            if o.client_id.is_empty() {
                return Err("oauth2 client_id must be configured".into());
            }
            if o.token_url.is_empty() {
                return Err("oauth2 token_url must be configured".into());
            }
            for f in [
                &mut o.client_secret,
                &mut o.client_secret_file,
                &mut o.client_secret_ref,
                &mut o.client_certificate_key,
                &mut o.client_certificate_key_file,
                &mut o.client_certificate_key_ref,
            ] {
                clean(f);
            }
            if o.grant_type.as_deref() == Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
                if count(&[
                    o.client_certificate_key.is_some(),
                    o.client_certificate_key_file.is_some(),
                    o.client_certificate_key_ref.is_some(),
                ]) > 1
                {
                    return Err("at most one of oauth2 client_certificate_key, client_certificate_key_file & client_certificate_key_ref must be configured using grant-type=urn:ietf:params:oauth:grant-type:jwt-bearer".into());
                }
                if let Some(alg) = o.signature_algorithm.as_deref().filter(|a| !a.is_empty()) {
                    if !["RS256", "RS384", "RS512"].contains(&alg) {
                        return Err("valid signature algorithms are RS256, RS384 and RS512".into());
                    }
                }
            } else if count(&[
                o.client_secret.is_some(),
                o.client_secret_file.is_some(),
                o.client_secret_ref.is_some(),
            ]) > 1
            {
                return Err("at most one of oauth2 client_secret, client_secret_file & client_secret_ref must be configured using grant-type=client_credentials".into());
            }
            o.tls_config.check()?;
            check_proxy(&o.proxy_url, &o.no_proxy, o.proxy_from_environment, &o.proxy_connect_header)?;
        }
        check_proxy(
            &self.proxy_url,
            &self.no_proxy,
            self.proxy_from_environment,
            &self.proxy_connect_header,
        )?;
        for name in self.http_headers.keys() {
            let canon = canonical_header_key(name);
            if RESERVED_HEADERS.contains(&canon.as_str()) {
                return Err(format!("setting header {canon:?} is not allowed"));
            }
        }
        self.tls_config.check()
    }

    /// Joins every relative file path (credentials, certificates, header files) with `dir`.
    pub(crate) fn resolve_paths(&mut self, dir: &Path) {
        if let Some(b) = &mut self.basic_auth {
            for f in [&mut b.username_file, &mut b.password_file].into_iter().flatten() {
                *f = join_dir(dir, f);
            }
        }
        if let Some(a) = &mut self.authorization {
            if let Some(f) = &mut a.credentials_file {
                *f = join_dir(dir, f);
            }
        }
        if let Some(f) = &mut self.bearer_token_file {
            *f = join_dir(dir, f);
        }
        if let Some(o) = &mut self.oauth2 {
            for f in [&mut o.client_secret_file, &mut o.client_certificate_key_file].into_iter().flatten() {
                *f = join_dir(dir, f);
            }
            o.tls_config.resolve_paths(dir);
        }
        for h in self.http_headers.values_mut() {
            for f in &mut h.files {
                *f = join_dir(dir, f);
            }
        }
        self.tls_config.resolve_paths(dir);
    }

    /// Whether any authentication is configured.
    pub fn has_auth(&self) -> bool {
        self.basic_auth.is_some() || self.authorization.is_some() || self.oauth2.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_keys() {
        assert_eq!(
            canonical_header_key("x-prometheus-remote-write-version"),
            "X-Prometheus-Remote-Write-Version"
        );
        assert_eq!(canonical_header_key("aUTHORIZATION"), "Authorization");
        assert_eq!(canonical_header_key("bad key"), "bad key");
    }

    #[test]
    fn bearer_token_becomes_authorization() {
        let mut h = HttpClientConfig { bearer_token: Some("tok".into()), ..Default::default() };
        h.normalize().unwrap();
        let a = h.authorization.unwrap();
        assert_eq!(a.type_, "Bearer");
        assert_eq!(a.credentials.as_deref(), Some("tok"));
        assert!(h.bearer_token.is_none());
    }

    #[test]
    fn conflicting_auth_is_rejected() {
        let mut h = HttpClientConfig {
            basic_auth: Some(BasicAuth::default()),
            authorization: Some(Authorization::default()),
            ..Default::default()
        };
        assert_eq!(
            h.normalize().unwrap_err(),
            "at most one of basic_auth, oauth2 & authorization must be configured"
        );
        let mut h = HttpClientConfig {
            bearer_token: Some("a".into()),
            bearer_token_file: Some("b".into()),
            ..Default::default()
        };
        assert!(h.normalize().is_err());
        let mut h = HttpClientConfig {
            authorization: Some(Authorization { type_: "basic".into(), ..Default::default() }),
            ..Default::default()
        };
        assert!(h.normalize().is_err());
        let mut t = TlsConfig { cert_file: Some("c".into()), ..Default::default() };
        assert!(t.check().is_err());
    }
}
