//! Request parameters as Prometheus reads them: URL query and form body merged, body first.

use std::time::Duration;

use axum::http::HeaderMap;

use crate::ApiError;

/// The parameters of one API request.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Merges a form-encoded body (when the content type says so) before the URL query, so
    /// that the body wins, as Go's `FormValue` does.
    pub fn new(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut pairs = Vec::new();
        let is_form = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        if let Some(q) = query {
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        Params { pairs }
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, body values first.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// Every pair, URL-encoded as a query string (to pass a request on).
    pub fn to_query(&self) -> String {
        form_urlencoded::Serializer::new(String::new()).extend_pairs(&self.pairs).finish()
    }
}

/// The smallest and largest times Prometheus's API accepts (client_golang sends them).
pub const MIN_TIME_MS: i64 = -9_223_309_901_257_974;
/// See [`MIN_TIME_MS`].
pub const MAX_TIME_MS: i64 = 9_223_309_901_257_974;

/// Parses a time parameter: float Unix seconds (rounded to milliseconds) or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        let (secs, frac) = (f.trunc(), f.fract());
        let ms = (secs * 1000.0 + (frac * 1000.0).round()) as i128;
        if f.is_finite() && (MIN_TIME_MS as i128..=MAX_TIME_MS as i128).contains(&ms) {
            return Ok(ms as i64);
        }
        return Err(format!("cannot parse {s:?} to a valid timestamp"));
    }
    match s {
        "-292273086-05-16T16:47:06Z" => return Ok(MIN_TIME_MS),
        "292277025-08-18T07:12:54.999999999Z" => return Ok(MAX_TIME_MS),
        _ => {}
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
}

/// Parses a duration parameter: float seconds or a Prometheus duration (`5m`, `1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() && f >= 0.0 && f < (i64::MAX / 1000) as f64 {
            return Ok(Duration::from_secs_f64(f));
        }
        return Err(format!("cannot parse {s:?} to a valid duration. It overflows int64"));
    }
    promflow_config::parse_duration(s).map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

/// A required time parameter, or `default` when given and the parameter is absent.
pub fn time_param(p: &Params, name: &str, default: Option<i64>) -> Result<i64, ApiError> {
    match (p.get(name), default) {
        (Some(v), _) if !v.is_empty() => {
            parse_time(v).map_err(|e| ApiError::bad_data(format!("invalid parameter \"{name}\": {e}")))
        }
        (_, Some(d)) => Ok(d),
        (v, None) => Err(ApiError::bad_data(format!(
            "invalid parameter \"{name}\": cannot parse \"{}\" to a valid timestamp",
            v.unwrap_or("")
        ))),
    }
}

/// An optional non-negative `limit` parameter (0 means no limit).
pub fn limit_param(p: &Params) -> Result<usize, ApiError> {
    match p.get("limit") {
        None | Some("") => Ok(0),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| n as usize)
            .ok_or_else(|| ApiError::bad_data("limit must be a positive number".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000.123").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_time("4").unwrap(), 4000);
        assert_eq!(parse_time("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000);
        assert!(parse_time("").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn body_wins() {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::CONTENT_TYPE, "application/x-www-form-urlencoded".parse().unwrap());
        let p = Params::new(Some("query=1&match[]=a"), &h, b"query=2&match[]=b");
        assert_eq!(p.get("query"), Some("2"));
        assert_eq!(p.all("match[]"), vec!["b", "a"]);
    }
}
