//! HTTP clients built from Prometheus's inline client settings.

use std::time::Duration;

use promflow_config::HttpClientConfig;

use crate::Error;

/// An HTTP client with a section's settings (`basic_auth`, `authorization`, `bearer_token`,
/// `tls_config`) and `timeout` per request: scrapes and the notifier use it.
pub fn http_client(sc: &HttpClientConfig, timeout: Duration) -> Result<reqwest::Client, Error> {
    let tls = &sc.tls_config;
    let mut material = Tls { insecure: tls.insecure_skip_verify, ..Tls::default() };
    if let Some(ca) = tls.ca_file.as_deref().filter(|s| !s.is_empty()) {
        material.ca_pem =
            Some(std::fs::read(ca).map_err(|e| Error::Client(format!("reading ca_file {ca}: {e}")))?);
    }
    if let (Some(cert), Some(key)) = (tls.cert_file.as_deref(), tls.key_file.as_deref()) {
        if !cert.is_empty() && !key.is_empty() {
            let mut pem =
                std::fs::read(cert).map_err(|e| Error::Client(format!("reading cert_file {cert}: {e}")))?;
            pem.extend(
                std::fs::read(key).map_err(|e| Error::Client(format!("reading key_file {key}: {e}")))?,
            );
            material.identity_pem = Some(pem);
        }
    }
    let mut b = builder(material, timeout)?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = auth_header(sc)? {
        let v = reqwest::header::HeaderValue::from_str(&value)
            .map_err(|e| Error::Client(format!("authorization header: {e}")))?;
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    b = b.default_headers(headers);
    b.build().map_err(|e| Error::Client(e.to_string()))
}

/// TLS material for a client, read from files or given inline (kubeconfig's `*-data`).
#[derive(Default)]
pub(crate) struct Tls {
    /// PEM certificates to trust besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// The client's PEM certificate followed by its key.
    pub identity_pem: Option<Vec<u8>>,
    /// Accept any server certificate.
    pub insecure: bool,
}

/// A client builder with promflow's user agent, `timeout` per request, and `tls`.
pub(crate) fn builder(tls: Tls, timeout: Duration) -> Result<reqwest::ClientBuilder, Error> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("promflow/", env!("CARGO_PKG_VERSION")));
    if tls.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    if let Some(pem) = tls.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::Client(format!("CA certificate: {e}")))?;
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some(pem) = tls.identity_pem {
        let id = reqwest::Identity::from_pem(&pem)
            .map_err(|e| Error::Client(format!("client certificate: {e}")))?;
        b = b.identity(id);
    }
    Ok(b)
}

fn read_secret(inline: &Option<String>, file: &Option<String>) -> Result<String, Error> {
    if let Some(f) = file.as_deref().filter(|f| !f.is_empty()) {
        return std::fs::read_to_string(f)
            .map(|s| s.trim().to_string())
            .map_err(|e| Error::Client(format!("reading {f}: {e}")));
    }
    Ok(inline.clone().unwrap_or_default())
}

fn auth_header(sc: &HttpClientConfig) -> Result<Option<String>, Error> {
    if let Some(ba) = &sc.basic_auth {
        let pw = read_secret(&ba.password, &ba.password_file)?;
        let raw = format!("{}:{}", ba.username, pw);
        return Ok(Some(format!("Basic {}", base64(raw.as_bytes()))));
    }
    if let Some(a) = &sc.authorization {
        let cred = read_secret(&a.credentials, &a.credentials_file)?;
        return Ok(Some(format!("{} {}", a.type_, cred)));
    }
    let token = read_secret(&sc.bearer_token, &sc.bearer_token_file)?;
    Ok((!token.is_empty()).then(|| format!("Bearer {token}")))
}

/// Encodes base64 with the standard alphabet and padding.
pub(crate) fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base64, standard or URL-safe alphabet, padding optional (`=` alone is empty):
/// Pushgateway label values and kubeconfig's inline certificates.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        for raw in [&b""[..], b"f", b"fo", b"foo", b"\xff\xfe/+"] {
            assert_eq!(base64_decode(&base64(raw)).as_deref(), Some(raw));
        }
        assert_eq!(base64_decode("_-8"), Some(vec![0xff, 0xef]));
        assert_eq!(base64_decode("a b"), None);
    }
}
