//! HTTP clients built from Prometheus's inline client settings.

use std::time::Duration;

use promflow_config::{HttpClientConfig, TlsConfig};

use crate::Error;

/// An HTTP client with a section's settings (`basic_auth`, `authorization`, a bearer token,
/// `http_headers`, and all of `tls_config`) and `timeout` per request: scrapes, service
/// discoveries, remote write and the notifier use it.
pub fn http_client(sc: &HttpClientConfig, timeout: Duration) -> Result<reqwest::Client, Error> {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in sc.request_headers().map_err(|e| Error::Client(e.to_string()))? {
        let name = reqwest::header::HeaderName::try_from(name.as_str())
            .map_err(|e| Error::Client(format!("header {name:?}: {e}")))?;
        let value = reqwest::header::HeaderValue::from_str(&value)
            .map_err(|e| Error::Client(format!("header {name}: {e}")))?;
        headers.append(name, value);
    }
    builder(&sc.tls_config, timeout)?
        .default_headers(headers)
        .build()
        .map_err(|e| Error::Client(e.to_string()))
}

/// A client builder with promflow's user agent, `timeout` per request, and the TLS settings
/// of `tls` (`promflow_config::TlsConfig::client_settings`).
pub fn builder(tls: &TlsConfig, timeout: Duration) -> Result<reqwest::ClientBuilder, Error> {
    let tls = tls.client_settings().map_err(|e| Error::Client(e.to_string()))?;
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("promflow/", env!("CARGO_PKG_VERSION")))
        .use_preconfigured_tls(rustls::ClientConfig::clone(&tls)))
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
    fn base64_decodes_both_alphabets() {
        assert_eq!(base64_decode("Zg=="), Some(b"f".to_vec()));
        assert_eq!(base64_decode("Zm8"), Some(b"fo".to_vec()));
        assert_eq!(base64_decode("dXNlcjpwYXNz"), Some(b"user:pass".to_vec()));
        assert_eq!(base64_decode("//4v+w=="), Some(b"\xff\xfe/\xfb".to_vec()));
        assert_eq!(base64_decode("_-8"), Some(vec![0xff, 0xef]));
        assert_eq!(base64_decode("a b"), None);
    }
}
