//! The client side of Prometheus's HTTP client settings: the file that promtool's
//! `--http.config.file` names, the headers a request carries, and the TLS settings a
//! connection uses. A setting a client cannot honour is an error, never ignored.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::http::{HttpClientConfig, TlsConfig};
use crate::web::{pem_certs, read, tls_versions};
use crate::Error;

impl HttpClientConfig {
    /// Reads an HTTP client settings file (promtool's `--http.config.file`: `basic_auth`,
    /// `authorization`, `tls_config`, `http_headers`, … at the top level), checks it as
    /// Prometheus does and resolves its relative paths against the file's directory.
    pub fn load(path: &Path) -> Result<HttpClientConfig, Error> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        let mut cfg: HttpClientConfig =
            crate::config::parse_yaml::<Option<HttpClientConfig>>(&text, &file)?.unwrap_or_default();
        cfg.normalize().map_err(|m| Error::config(&file, None, None, m))?;
        cfg.tls_config.check().map_err(|m| Error::config(&file, None, None, m))?;
        cfg.resolve_paths(&crate::config::base_dir(&file));
        Ok(cfg)
    }

    /// The settings a client that connects directly with these credentials and TLS cannot
    /// honour (OAuth 2.0, proxies, secret-manager references), by their configuration names.
    /// A command refuses to start while any is set.
    pub fn unsupported_by_direct_client(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.oauth2.is_some() {
            out.push("oauth2");
        }
        if self.proxy_url.is_some() || self.proxy_from_environment || !self.proxy_connect_header.is_empty() {
            out.push("proxy_url/proxy_from_environment/proxy_connect_header");
        }
        let refs = [
            self.basic_auth.as_ref().is_some_and(|b| b.username_ref.is_some() || b.password_ref.is_some()),
            self.authorization.as_ref().is_some_and(|a| a.credentials_ref.is_some()),
            self.tls_config.ca_ref.is_some()
                || self.tls_config.cert_ref.is_some()
                || self.tls_config.key_ref.is_some(),
        ];
        if refs.iter().any(|r| *r) {
            out.push("*_ref (secret manager)");
        }
        out
    }

    /// The headers every request carries: `Authorization` from `basic_auth`, `authorization`
    /// or a legacy bearer token (files read now), then `http_headers` (values, secrets, and the
    /// trimmed contents of files), in that order.
    pub fn request_headers(&self) -> Result<Vec<(String, String)>, Error> {
        use base64::Engine as _;
        let mut out = Vec::new();
        if let Some(b) = &self.basic_auth {
            let user = secret(Some(&b.username).filter(|u| !u.is_empty()), b.username_file.as_ref())?;
            let password = secret(b.password.as_ref(), b.password_file.as_ref())?;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            out.push(("Authorization".to_string(), format!("Basic {token}")));
        } else if let Some(a) = &self.authorization {
            let credentials = secret(a.credentials.as_ref(), a.credentials_file.as_ref())?;
            out.push(("Authorization".to_string(), format!("{} {credentials}", a.type_)));
        } else if self.bearer_token.is_some() || self.bearer_token_file.is_some() {
            let token = secret(self.bearer_token.as_ref(), self.bearer_token_file.as_ref())?;
            out.push(("Authorization".to_string(), format!("Bearer {token}")));
        }
        for (name, header) in &self.http_headers {
            for value in header.values.iter().chain(&header.secrets) {
                out.push((name.clone(), value.clone()));
            }
            for file in &header.files {
                out.push((name.clone(), secret(None, Some(file))?));
            }
        }
        Ok(out)
    }
}

/// A secret given inline or in a file (trimmed, as Prometheus reads secret files).
fn secret(inline: Option<&String>, file: Option<&String>) -> Result<String, Error> {
    match file.filter(|f| !f.is_empty()) {
        Some(f) => std::fs::read_to_string(f)
            .map(|s| s.trim().to_string())
            .map_err(|source| Error::Io { path: f.into(), source }),
        None => Ok(inline.cloned().unwrap_or_default()),
    }
}

impl TlsConfig {
    /// The rustls settings of a client connection: the system-independent Mozilla roots plus
    /// `ca`/`ca_file`, the client certificate, the TLS versions, `insecure_skip_verify`, and
    /// `server_name` as the name the server's certificate must carry.
    pub fn client_settings(&self) -> Result<Arc<ClientConfig>, Error> {
        let fail = |message: String| Error::ClientTls { message };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = tls_versions(
            self.min_version.map(|v| v.as_str()).unwrap_or(""),
            self.max_version.map(|v| v.as_str()).unwrap_or(""),
        )
        .map_err(fail)?;
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let ca = match (self.ca.as_deref(), self.ca_file.as_deref()) {
            (Some(pem), _) => Some(pem_certs(pem.as_bytes(), "ca").map_err(fail)?),
            (None, Some(file)) => Some(pem_certs(&read(file).map_err(fail)?, file).map_err(fail)?),
            (None, None) => None,
        };
        for cert in ca.into_iter().flatten() {
            roots.add(cert).map_err(|e| fail(format!("ca: {e}")))?;
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = Arc::new(Verifier {
            webpki: verifier,
            provider: provider.clone(),
            insecure: self.insecure_skip_verify,
            server_name: match self.server_name.as_deref() {
                Some(name) => Some(
                    ServerName::try_from(name.to_string())
                        .map_err(|e| fail(format!("server_name {name:?}: {e}")))?,
                ),
                None => None,
            },
        });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| fail(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let cert = match (self.cert.as_deref(), self.cert_file.as_deref()) {
            (Some(pem), _) => Some(pem_certs(pem.as_bytes(), "cert").map_err(fail)?),
            (None, Some(file)) => Some(pem_certs(&read(file).map_err(fail)?, file).map_err(fail)?),
            (None, None) => None,
        };
        let key = match (self.key.as_deref(), self.key_file.as_deref()) {
            (Some(pem), _) => {
                Some(PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| fail(format!("key: {e}")))?)
            }
            (None, Some(file)) => Some(
                PrivateKeyDer::from_pem_slice(&read(file).map_err(fail)?)
                    .map_err(|e| fail(format!("{file}: {e}")))?,
            ),
            (None, None) => None,
        };
        let config = match (cert, key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(cert, key)
                .map_err(|e| fail(format!("client certificate: {e}")))?,
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// Verifies a server's certificate as Go's client does with a `tls.Config`: against the
/// roots for `server_name` when it is set (else the name connected to), or not at all under
/// `insecure_skip_verify`. Handshake signatures are always checked.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    insecure: bool,
    server_name: Option<ServerName<'static>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let name = self.server_name.as_ref().unwrap_or(server_name);
        self.webpki.verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<HttpClientConfig, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("http.yml");
        std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
        std::fs::write(&path, text).unwrap();
        let cfg = HttpClientConfig::load(&path)?;
        // the files are read while the directory exists
        cfg.request_headers().map(|_| cfg)
    }

    #[test]
    fn basic_auth_reads_the_password_file_next_to_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
        let path = dir.path().join("http.yml");
        std::fs::write(&path, "basic_auth:\n  username: alice\n  password_file: password\n").unwrap();
        let cfg = HttpClientConfig::load(&path).unwrap();
        // base64("alice:s3cret")
        assert_eq!(
            cfg.request_headers().unwrap(),
            [("Authorization".into(), "Basic YWxpY2U6czNjcmV0".into())]
        );
    }

    #[test]
    fn bearer_tokens_and_headers() {
        let cfg = load("bearer_token: abc\nhttp_headers:\n  X-Scope-OrgID:\n    values: [a, b]\n").unwrap();
        assert_eq!(
            cfg.request_headers().unwrap(),
            [
                ("Authorization".into(), "Bearer abc".into()),
                ("X-Scope-OrgID".into(), "a".into()),
                ("X-Scope-OrgID".into(), "b".into())
            ]
        );
        let cfg = load("authorization:\n  type: Token\n  credentials: xyz\n").unwrap();
        assert_eq!(cfg.request_headers().unwrap(), [("Authorization".into(), "Token xyz".into())]);
    }

    #[test]
    fn invalid_and_unsupported_settings_are_named() {
        assert!(load("basic_auth: {username: a}\nbearer_token: b\n").is_err());
        assert!(load("no_such_setting: 1\n").is_err());
        let cfg = load("proxy_url: http://proxy:3128\n").unwrap();
        assert_eq!(
            cfg.unsupported_by_direct_client(),
            ["proxy_url/proxy_from_environment/proxy_connect_header"]
        );
        let cfg = load("oauth2: {client_id: a, token_url: 'http://t'}\n").unwrap();
        assert_eq!(cfg.unsupported_by_direct_client(), ["oauth2"]);
        assert!(load("tls_config: {insecure_skip_verify: true}\n")
            .unwrap()
            .unsupported_by_direct_client()
            .is_empty());
    }

    #[test]
    fn tls_settings_are_built_or_refused() {
        let insecure = load("tls_config: {insecure_skip_verify: true, min_version: TLS13}\n").unwrap();
        insecure.tls_config.client_settings().unwrap();
        let missing = load("tls_config: {ca_file: nowhere.pem}\n").unwrap();
        assert!(missing.tls_config.client_settings().is_err());
        let not_pem = TlsConfig { ca: Some("not a certificate".into()), ..TlsConfig::default() };
        assert!(not_pem.client_settings().is_err());
    }
}
