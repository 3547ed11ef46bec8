//! `--web.config.file`: TLS and basic authentication for promflow's listeners, read as
//! Prometheus's exporter toolkit reads it.
//!
//! [`WebConfig::parse`] reads the file and checks it as the toolkit does (bcrypt hashes,
//! certificate and key in pairs, a client CA only with a client-auth policy, the five
//! configurable headers). [`WebGuard`] is what the listeners use at run time: it re-reads the
//! file and the certificate files when they change (checked at most once a second), verifies
//! basic-auth credentials with a cache that a wrong password cannot poison, and hands out the
//! TLS settings in force. A setting promflow cannot honour is an error when the file is read,
//! never a warning: a security setting is honoured or the server does not start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::cluster_secret::ClusterSecret;
use crate::config::join_dir;
use crate::Error;

config_struct! {
    /// `tls_server_config`: TLS for the listeners.
    pub struct TlsServerConfig {
        /// Server certificate (chain), inline PEM.
        pub cert: String = String::new(),
        /// Server key, inline PEM (secret).
        pub key: String = String::new(),
        /// Server certificate (chain) file.
        pub cert_file: String = String::new(),
        /// Server key file.
        pub key_file: String = String::new(),
        /// `NoClientCert` (default), `RequestClientCert`, `RequireAnyClientCert`,
        /// `VerifyClientCertIfGiven` or `RequireAndVerifyClientCert`.
        pub client_auth_type: String = String::new(),
        /// CA certificates that verify client certificates, inline PEM.
        pub client_ca: String = String::new(),
        /// CA certificates that verify client certificates, a file.
        pub client_ca_file: String = String::new(),
        /// Subject alternative names a verified client certificate must have one of.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub client_allowed_sans: Vec<String> = Vec::new(),
        /// TLS 1.2 cipher suites, by Go's names (TLS 1.3's are not configurable, as in Go).
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub cipher_suites: Vec<String> = Vec::new(),
        /// Key exchange groups in order of preference, by Go's names.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub curve_preferences: Vec<String> = Vec::new(),
        /// Oldest TLS version (`TLS12` by default).
        pub min_version: String = String::new(),
        /// Newest TLS version (`TLS13` by default).
        pub max_version: String = String::new(),
        /// Choose the cipher suite by the server's order, not the client's.
        pub prefer_server_cipher_suites: bool = true,
    }
}

config_struct! {
    /// `http_server_config`.
    pub struct HttpServerConfig {
        /// Serve HTTP/2 (over TLS by ALPN, and in clear text by prior knowledge).
        pub http2: bool = true,
        /// Headers set on every response (only the five the toolkit allows).
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub headers: BTreeMap<String, String> = BTreeMap::new(),
    }
}

config_struct! {
    /// The web configuration file.
    pub struct WebConfig {
        /// TLS; absent or empty serves plain HTTP.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub tls_server_config: TlsServerConfig = TlsServerConfig::default(),
        /// HTTP settings.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub http_server_config: HttpServerConfig = HttpServerConfig::default(),
        /// User name → bcrypt hash of the password; empty lets everyone in.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub basic_auth_users: BTreeMap<String, String> = BTreeMap::new(),
        /// A limit on the rate of requests, over all clients.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub rate_limit: RateLimitConfig = RateLimitConfig::default(),
    }
}

config_struct! {
    /// `rate_limit`: a token bucket over every request of every listener, as the toolkit's
    /// (Go's `rate.Limiter`): `burst` requests at once, one more every `interval`; a request
    /// beyond gets 429 before its credentials are checked. Off while `interval` is 0.
    pub struct RateLimitConfig {
        /// Requests allowed at once (the bucket's size); 0 with an interval refuses all.
        pub burst: u32 = 0,
        /// Time between two requests at the sustained rate.
        #[serde(with = "crate::duration::serde_duration")]
        pub interval: Duration = Duration::ZERO,
    }
}

/// The rate limit in force: Go's `rate.Limiter` with `Allow`, a bucket of `burst` tokens that
/// starts full and gains one every `interval`.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    interval: Duration,
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// The limiter of `config`, `None` when it is off.
    pub fn new(config: &RateLimitConfig) -> Option<RateLimiter> {
        (!config.interval.is_zero()).then(|| RateLimiter {
            burst: f64::from(config.burst),
            interval: config.interval,
            bucket: Mutex::new((f64::from(config.burst), Instant::now())),
        })
    }

    /// Whether one more request may pass now; takes its token if so.
    pub fn allow(&self) -> bool {
        let mut bucket = lock(&self.bucket);
        let now = Instant::now();
        let gained = now.duration_since(bucket.1).as_secs_f64() / self.interval.as_secs_f64();
        *bucket = ((bucket.0 + gained).min(self.burst), now);
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Headers `http_server_config.headers` may set, with the values the toolkit allows (`None`:
/// any value).
const CONFIGURABLE_HEADERS: [(&str, Option<&[&str]>); 5] = [
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

/// How a TLS listener treats client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// None asked for.
    None,
    /// Asked for, not verified.
    Request,
    /// Required, not verified.
    RequireAny,
    /// Verified when given.
    VerifyIfGiven,
    /// Required and verified.
    RequireAndVerify,
}

impl ClientAuth {
    fn parse(s: &str) -> Result<ClientAuth, String> {
        Ok(match s {
            "" | "NoClientCert" => ClientAuth::None,
            "RequestClientCert" => ClientAuth::Request,
            "RequireAnyClientCert" => ClientAuth::RequireAny,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
            _ => return Err(format!("Invalid ClientAuth: {s}")),
        })
    }

    fn verifies(self) -> bool {
        matches!(self, ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify)
    }
}

impl WebConfig {
    /// Parses and checks a web configuration file's text; `file` names it in errors and
    /// relative paths are resolved against its directory.
    pub fn parse(text: &str, file: &str) -> Result<WebConfig, Error> {
        let mut cfg: WebConfig =
            crate::config::parse_yaml::<Option<WebConfig>>(text, file)?.unwrap_or_default();
        let fail = |m: String| Error::config(file, None, None, m);
        let dir = crate::config::base_dir(file);
        let tls = &mut cfg.tls_server_config;
        for p in [&mut tls.cert_file, &mut tls.key_file, &mut tls.client_ca_file] {
            if !p.is_empty() {
                *p = join_dir(&dir, p);
            }
        }
        for (user, hash) in &cfg.basic_auth_users {
            hash.parse::<bcrypt::HashParts>()
                .map_err(|e| fail(format!("basic_auth_users: user {user:?}: not a bcrypt hash: {e}")))?;
        }
        for (name, value) in &cfg.http_server_config.headers {
            let Some((_, allowed)) = CONFIGURABLE_HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(name))
            else {
                return Err(fail(format!("HTTP header {name:?} can not be configured")));
            };
            if let Some(allowed) = allowed {
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(value)) {
                    return Err(fail(format!(
                        "invalid value for {name}. Expected one of: {allowed:?}, but got: {value:?}"
                    )));
                }
            }
        }
        if cfg.tls_enabled() {
            // the TLS settings are built once here so that every error shows at start-up
            tls_settings(&cfg.tls_server_config).map_err(fail)?;
        }
        Ok(cfg)
    }

    /// Reads and checks the web configuration file at `path`.
    pub fn load(path: &Path) -> Result<WebConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        WebConfig::parse(&text, &path.display().to_string())
    }

    /// The TLS settings with which a cluster's node reaches the others, which serve TLS as it
    /// does (`None` when it does not): their certificates verified by the CA that verifies
    /// clients here (`client_ca`, `client_ca_file`) besides the public roots, this node's own
    /// certificate and key presented as its client certificate.
    pub fn peer_tls(&self) -> Option<crate::http::TlsConfig> {
        let t = &self.tls_server_config;
        let given = |s: &String| (!s.is_empty()).then(|| s.clone());
        self.tls_enabled().then(|| crate::http::TlsConfig {
            ca: given(&t.client_ca),
            ca_file: given(&t.client_ca_file),
            cert: given(&t.cert),
            key: given(&t.key),
            cert_file: given(&t.cert_file),
            key_file: given(&t.key_file),
            ..Default::default()
        })
    }

    /// Whether the listeners serve TLS: any TLS setting is given (the toolkit's rule).
    pub fn tls_enabled(&self) -> bool {
        let t = &self.tls_server_config;
        [&t.cert, &t.key, &t.cert_file, &t.key_file, &t.client_ca, &t.client_ca_file, &t.client_auth_type]
            .iter()
            .any(|s| !s.is_empty())
    }
}

/// The TLS settings of a listener, built from `tls_server_config`.
fn tls_settings(t: &TlsServerConfig) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = tls_versions(&t.min_version, &t.max_version)?;
    let (certs, key) = server_identity(t)?;
    let client_auth = ClientAuth::parse(&t.client_auth_type)?;
    let client_ca = match (t.client_ca.as_str(), t.client_ca_file.as_str()) {
        ("", "") => None,
        (pem, "") => Some(pem_certs(pem.as_bytes(), "client_ca")?),
        ("", file) => Some(pem_certs(&read(file)?, file)?),
        _ => return Err("at most one of client_ca and client_ca_file must be configured".into()),
    };
    if client_ca.is_some() && client_auth == ClientAuth::None {
        return Err("Client CA's have been configured without a Client Auth Policy".into());
    }
    if client_auth.verifies() && client_ca.is_none() {
        return Err(format!("client_auth_type {} needs client_ca_file or client_ca", t.client_auth_type));
    }
    let certificate_required = matches!(client_auth, ClientAuth::RequireAny | ClientAuth::RequireAndVerify);
    if !t.client_allowed_sans.is_empty() && !certificate_required {
        return Err("client_allowed_sans requires client_auth_type to be one of RequireAnyClientCert or \
                    RequireAndVerifyClientCert"
            .into());
    }
    let mut provider = (*provider).clone();
    if !t.cipher_suites.is_empty() {
        let wanted = t.cipher_suites.iter().map(|c| cipher_suite(c)).collect::<Result<Vec<_>, _>>()?;
        let mut suites: Vec<rustls::SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        // the configured order, for prefer_server_cipher_suites
        for w in wanted.into_iter().flatten() {
            if let Some(s) = provider.cipher_suites.iter().find(|s| s.suite() == w) {
                suites.push(*s);
            }
        }
        let tls12_only = !versions.iter().any(|v| v == &&rustls::version::TLS13);
        if tls12_only && !suites.iter().any(|s| s.version() == &rustls::version::TLS12) {
            return Err(format!(
                "cipher_suites: none of {:?} is available (promflow offers the ECDHE AES-GCM and \
                 ChaCha20-Poly1305 suites for TLS 1.2)",
                t.cipher_suites
            ));
        }
        provider.cipher_suites = suites;
    }
    if !t.curve_preferences.is_empty() {
        let mut groups = Vec::new();
        for c in &t.curve_preferences {
            let name = curve(c)?;
            if let Some(g) = name.and_then(|n| provider.kx_groups.iter().find(|g| g.name() == n)) {
                groups.push(*g);
            }
        }
        if groups.is_empty() {
            return Err(format!("curve_preferences: none of {:?} is available", t.curve_preferences));
        }
        provider.kx_groups = groups;
    }
    let provider = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match (client_auth, client_ca) {
        (ClientAuth::None, _) => None,
        (ClientAuth::Request | ClientAuth::RequireAny, _) => Some(Arc::new(AnyClientCert {
            mandatory: client_auth == ClientAuth::RequireAny,
            provider: Arc::clone(&provider),
        })),
        (_, Some(cas)) => {
            let mut roots = RootCertStore::empty();
            for c in cas {
                roots.add(c).map_err(|e| format!("client CA: {e}"))?;
            }
            let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let b = if client_auth == ClientAuth::VerifyIfGiven { b.allow_unauthenticated() } else { b };
            Some(b.build().map_err(|e| format!("client CA: {e}"))?)
        }
        (_, None) => unreachable!("checked above"),
    };
    let verifier = match verifier {
        Some(inner) if !t.client_allowed_sans.is_empty() => {
            Some(Arc::new(AllowedSans { inner, allowed: t.client_allowed_sans.clone() })
                as Arc<dyn ClientCertVerifier>)
        }
        v => v,
    };
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(certs, key).map_err(|e| format!("certificate and key do not match: {e}"))?;
    config.ignore_client_order = t.prefer_server_cipher_suites;
    Ok(Arc::new(config))
}

pub(crate) fn read(file: &str) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|e| format!("reading {file}: {e}"))
}

pub(crate) fn pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no certificate found"));
    }
    Ok(certs)
}

fn server_identity(
    t: &TlsServerConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    if !t.cert.is_empty() && !t.cert_file.is_empty() {
        return Err("at most one of cert and cert_file must be configured".into());
    }
    if !t.key.is_empty() && !t.key_file.is_empty() {
        return Err("at most one of key and key_file must be configured".into());
    }
    if t.cert.is_empty() && t.cert_file.is_empty() {
        return Err("missing cert_file".into());
    }
    if t.key.is_empty() && t.key_file.is_empty() {
        return Err("missing key_file".into());
    }
    let cert = match (t.cert.as_str(), t.cert_file.as_str()) {
        ("", "") => return Err("missing cert_file".into()),
        (pem, "") => pem_certs(pem.as_bytes(), "cert")?,
        (_, file) => pem_certs(&read(file)?, file)?,
    };
    let key = match (t.key.as_str(), t.key_file.as_str()) {
        ("", "") => return Err("missing key_file".into()),
        (pem, "") => PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("key: {e}"))?,
        (_, file) => PrivateKeyDer::from_pem_slice(&read(file)?).map_err(|e| format!("{file}: {e}"))?,
    };
    Ok((cert, key))
}

/// The protocol versions between `min` and `max`. rustls speaks TLS 1.2 and 1.3 only: a
/// minimum of TLS 1.0 or 1.1 allows what it always allowed, a maximum below 1.2 is refused.
pub(crate) fn tls_versions(
    min: &str,
    max: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let rank = |s: &str, default: u8| -> Result<u8, String> {
        Ok(match s {
            "" => default,
            "TLS10" => 10,
            "TLS11" => 11,
            "TLS12" => 12,
            "TLS13" => 13,
            _ => return Err(format!("unknown TLS version: {s}")),
        })
    };
    let (lo, hi) = (rank(min, 12)?, rank(max, 13)?);
    if hi < lo {
        return Err(format!("max_version {max} is older than min_version {min}"));
    }
    if hi < 12 {
        return Err(format!("max_version {max}: promflow speaks TLS 1.2 and 1.3 only"));
    }
    Ok([(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (lo..=hi).contains(v))
        .map(|(_, p)| p)
        .collect())
}

/// The rustls suite for one of Go's cipher suite names: `Some` when promflow offers it,
/// `None` for a suite Go knows but rustls does not implement (CBC, RSA key exchange, 3DES),
/// an error for a name Go does not know.
fn cipher_suite(name: &str) -> Result<Option<rustls::CipherSuite>, String> {
    use rustls::CipherSuite as C;
    Ok(Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_RSA_WITH_RC4_128_SHA"
        | "TLS_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA256"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384"
        | "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256" => return Ok(None),
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            return Err(format!("cipher_suites: {name} is a TLS 1.3 suite, which is not configurable"))
        }
        _ => return Err(format!("cipher_suites: unknown cipher: {name}")),
    }))
}

/// The rustls group for one of Go's curve names; `None` for one rustls lacks (P-521).
fn curve(name: &str) -> Result<Option<rustls::NamedGroup>, String> {
    use rustls::NamedGroup as G;
    Ok(Some(match name {
        "CurveP256" => G::secp256r1,
        "CurveP384" => G::secp384r1,
        "X25519" => G::X25519,
        "CurveP521" => return Ok(None),
        _ => return Err(format!("curve_preferences: unknown curve: {name}")),
    }))
}

/// `RequestClientCert`/`RequireAnyClientCert`: a client certificate is asked for (and, for
/// the second, required) but not checked against any CA; its handshake signature still is.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: a client certificate, once `inner` accepts it, must carry one of
/// `allowed` among its subject alternative names (DNS names, email addresses, IP addresses
/// and URIs, compared as strings, as the exporter toolkit does).
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let sans = subject_alt_names(end_entity).map_err(rejected)?;
        if sans.iter().any(|san| self.allowed.contains(san)) {
            Ok(verified)
        } else {
            // the reason reaches the log of the failed handshake, not the client
            Err(rejected(format!("could not find allowed SANs in client cert, found: {sans:?}")))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client certificate refused for `why`.
fn rejected(why: String) -> rustls::Error {
    let why = rustls::OtherError(Arc::new(std::io::Error::other(why)));
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(why))
}

/// A certificate's subject alternative names as Go writes them: DNS names, email addresses,
/// IP addresses (`192.0.2.1`, `2001:db8::1`) and URIs.
fn subject_alt_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_cert::der::asn1::ObjectIdentifier;
    use x509_cert::der::Decode;
    const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let cert =
        x509_cert::Certificate::from_der(cert.as_ref()).map_err(|e| format!("client certificate: {e}"))?;
    let mut out = Vec::new();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id != SUBJECT_ALT_NAME {
            continue;
        }
        let names = SubjectAltName::from_der(ext.extn_value.as_bytes())
            .map_err(|e| format!("client certificate's subjectAltName: {e}"))?;
        for name in names.0 {
            match name {
                GeneralName::DnsName(s)
                | GeneralName::Rfc822Name(s)
                | GeneralName::UniformResourceIdentifier(s) => out.push(s.to_string()),
                GeneralName::IpAddress(ip) => {
                    let bytes = ip.as_bytes();
                    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
                        out.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
                        out.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// What a listener enforces, built from one reading of the web configuration.
pub struct WebSettings {
    /// The configuration as read.
    pub config: WebConfig,
    /// TLS, when configured.
    pub tls: Option<Arc<ServerConfig>>,
}

/// A successful verification, kept so that a client's next request costs no bcrypt run.
/// Keyed by a digest of user, stored hash and password together: an entry proves only that
/// this password matched this hash, so neither a wrong password nor a changed hash can reuse it.
type CacheKey = [u8; 32];

/// Verified credentials kept at most; beyond, the cache starts afresh.
const CACHE_ENTRIES: usize = 1024;

/// The bcrypt hash an unknown user's password is checked against, so that a missing user
/// costs as much time as a wrong password (no user enumeration by timing); made once, at
/// bcrypt's default cost.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("promflow", bcrypt::DEFAULT_COST).unwrap_or_default())
}

/// The web configuration in force: re-read when its file or a certificate file changes.
pub struct WebGuard {
    path: Option<PathBuf>,
    state: Mutex<GuardState>,
    verified: Mutex<std::collections::HashSet<CacheKey>>,
    /// One bcrypt run at a time: a flood of wrong passwords costs one core, not all.
    bcrypt: Mutex<()>,
    /// `rate_limit` as read at start-up (the toolkit builds it once, when it starts serving).
    rate: Option<RateLimiter>,
    /// The cluster's secret, whose holders (the other nodes) are let in
    /// ([`WebGuard::admits_node`]).
    nodes: Option<ClusterSecret>,
}

struct GuardState {
    current: Result<Arc<WebSettings>, String>,
    stamps: Vec<Option<(SystemTime, u64)>>,
    checked: Instant,
}

/// How often the files are checked for changes.
const RECHECK: Duration = Duration::from_secs(1);

/// The outcome of checking a request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// Let in.
    Granted,
    /// Missing or wrong credentials: 401 with `WWW-Authenticate: Basic`.
    Denied,
    /// The web configuration cannot be read: 500 (fail closed, as the toolkit does).
    Broken(String),
}

impl WebGuard {
    /// A guard for `--web.config.file` (`None`: everything open, plain HTTP). Errors when the
    /// file is invalid, so the server refuses to start.
    pub fn open(path: Option<&Path>) -> Result<WebGuard, Error> {
        let settings = match path {
            Some(p) => settings(&WebConfig::load(p)?)
                .map_err(|m| Error::config(&p.display().to_string(), None, None, m))?,
            None => WebSettings { config: WebConfig::default(), tls: None },
        };
        let stamps = path.map(|p| file_stamps(p, &settings.config)).unwrap_or_default();
        let rate = RateLimiter::new(&settings.config.rate_limit);
        if let Some(r) = &rate {
            tracing::info!(burst = r.burst, interval = ?r.interval, "request rate limit is on");
        }
        Ok(WebGuard {
            rate,
            path: path.map(Path::to_path_buf),
            state: Mutex::new(GuardState {
                current: Ok(Arc::new(settings)),
                stamps,
                checked: Instant::now(),
            }),
            verified: Mutex::new(Default::default()),
            bcrypt: Mutex::new(()),
            nodes: None,
        })
    }

    /// Lets in the requests of the nodes holding `secret` (a cluster's, read from
    /// `--cluster.secret-file`).
    pub fn admitting_nodes(mut self, secret: ClusterSecret) -> WebGuard {
        self.nodes = Some(secret);
        self
    }

    /// Whether the nodes of a cluster prove its secret to this one.
    pub fn authenticates_nodes(&self) -> bool {
        self.nodes.is_some()
    }

    /// Whether `token`, a request's [`CLUSTER_AUTH_HEADER`](crate::cluster_secret::CLUSTER_AUTH_HEADER),
    /// proves that a node of this one's cluster sent it (never without a cluster secret).
    pub fn admits_node(&self, token: &[u8]) -> bool {
        self.nodes.as_ref().is_some_and(|s| s.admits(token))
    }

    /// The settings in force, re-read first when a file changed; an error while the file is
    /// invalid.
    pub fn current(&self) -> Result<Arc<WebSettings>, String> {
        let Some(path) = &self.path else {
            return lock(&self.state).current.clone();
        };
        let mut st = lock(&self.state);
        if st.checked.elapsed() >= RECHECK {
            st.checked = Instant::now();
            let stamps = match &st.current {
                Ok(s) => file_stamps(path, &s.config),
                Err(_) => vec![stamp(path)],
            };
            if stamps != st.stamps {
                st.stamps = stamps;
                st.current =
                    WebConfig::load(path).map_err(|e| e.to_string()).and_then(|c| settings(&c).map(Arc::new));
                match &st.current {
                    Ok(_) => tracing::info!(file = %path.display(), "web configuration reloaded"),
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "web configuration is invalid; requests are refused until it is fixed")
                    }
                }
                if let Ok(s) = &st.current {
                    st.stamps = file_stamps(path, &s.config);
                }
            }
        }
        st.current.clone()
    }

    /// Whether `rate_limit` lets one more request in now (always, without one).
    pub fn allow_request(&self) -> bool {
        self.rate.as_ref().is_none_or(RateLimiter::allow)
    }

    /// Whether basic authentication is required at all.
    pub fn requires_auth(&self) -> bool {
        self.current().map_or(true, |s| !s.config.basic_auth_users.is_empty())
    }

    /// Checks `user`/`password` against `basic_auth_users` (`None`: no credentials given).
    /// Runs bcrypt (tens of milliseconds): call it off the async runtime's threads.
    pub fn check(&self, credentials: Option<(&str, &str)>) -> Access {
        let settings = match self.current() {
            Ok(s) => s,
            Err(e) => return Access::Broken(e),
        };
        let users = &settings.config.basic_auth_users;
        if users.is_empty() {
            return Access::Granted;
        }
        let Some((user, password)) = credentials else { return Access::Denied };
        let (hash, known) = match users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (dummy_hash(), false),
        };
        let key: CacheKey = {
            let mut d = Sha256::new();
            for part in [user, hash, password] {
                d.update((part.len() as u64).to_le_bytes());
                d.update(part.as_bytes());
            }
            d.finalize().into()
        };
        if known && lock(&self.verified).contains(&key) {
            return Access::Granted;
        }
        let ok = {
            let _one = lock(&self.bcrypt);
            bcrypt::verify(password, hash).unwrap_or(false)
        };
        if ok && known {
            let mut v = lock(&self.verified);
            if v.len() >= CACHE_ENTRIES {
                v.clear();
            }
            v.insert(key);
            Access::Granted
        } else {
            Access::Denied
        }
    }
}

impl std::fmt::Debug for WebGuard {
    /// The file only: the users' hashes and the keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebGuard").field("path", &self.path).finish_non_exhaustive()
    }
}

fn settings(config: &WebConfig) -> Result<WebSettings, String> {
    let tls = if config.tls_enabled() { Some(tls_settings(&config.tls_server_config)?) } else { None };
    Ok(WebSettings { config: config.clone(), tls })
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Modification time and size of the web configuration and the files it names.
fn file_stamps(path: &Path, config: &WebConfig) -> Vec<Option<(SystemTime, u64)>> {
    let t = &config.tls_server_config;
    std::iter::once(path.to_path_buf())
        .chain(
            [&t.cert_file, &t.key_file, &t.client_ca_file]
                .into_iter()
                .filter(|f| !f.is_empty())
                .map(PathBuf::from),
        )
        .map(|p| stamp(&p))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_it_cannot_honour() {
        for (yaml, want) in [
            ("rate_limit: {interval: often, burst: 10}", "often"),
            ("basic_auth_users: {alice: plain}", "not a bcrypt hash"),
            ("http_server_config: {headers: {Server: x}}", "can not be configured"),
            ("http_server_config: {headers: {X-Frame-Options: allow}}", "Expected one of"),
            ("tls_server_config: {cert_file: a.pem}", "missing key_file"),
            ("tls_server_config: {client_auth_type: Sometimes}", "missing cert_file"),
            ("unknown_field: 1", "unknown_field"),
        ] {
            let err = WebConfig::parse(yaml, "web.yml").unwrap_err().to_string();
            assert!(err.contains(want), "{yaml}: {err}");
        }
        assert!(tls_versions("TLS10", "TLS11").unwrap_err().contains("TLS 1.2 and 1.3 only"));
        assert_eq!(tls_versions("TLS10", "").unwrap().len(), 2);
        assert_eq!(tls_versions("TLS13", "").unwrap().len(), 1);
        assert!(cipher_suite("TLS_FOO").is_err());
        assert_eq!(cipher_suite("TLS_RSA_WITH_AES_128_CBC_SHA").unwrap(), None);
    }

    #[test]
    fn the_rate_limiter_is_a_bucket_that_starts_full() {
        let off = RateLimitConfig::default();
        assert!(RateLimiter::new(&off).is_none(), "no interval, no limit");
        let limiter =
            RateLimiter::new(&RateLimitConfig { burst: 2, interval: Duration::from_millis(200) }).unwrap();
        assert_eq!([limiter.allow(), limiter.allow(), limiter.allow()], [true, true, false]);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!([limiter.allow(), limiter.allow()], [true, false]);
        // as Go's rate.Limiter: a burst of 0 lets nothing through
        let none =
            RateLimiter::new(&RateLimitConfig { burst: 0, interval: Duration::from_millis(1) }).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!none.allow());
    }

    #[test]
    fn verifies_bcrypt_users_and_caches_only_successes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&path, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
        let guard = WebGuard::open(Some(&path)).unwrap();
        assert_eq!(guard.check(Some(("alice", "s3cret"))), Access::Granted);
        assert_eq!(guard.check(Some(("alice", "s3cret"))), Access::Granted);
        assert_eq!(guard.check(Some(("alice", "wrong"))), Access::Denied);
        assert_eq!(guard.check(Some(("bob", "s3cret"))), Access::Denied);
        assert_eq!(guard.check(None), Access::Denied);
        assert_eq!(lock(&guard.verified).len(), 1);
    }
}
