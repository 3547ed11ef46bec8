//! HTTP service discovery (`http_sd_configs`): a URL answering a JSON list of target groups
//! (`[{"targets": [...], "labels": {...}}]`), fetched every `refresh_interval`. Each group
//! gets `__meta_url`. As in Prometheus, a failed fetch (network, status other than 200, a
//! body that is not such a list) keeps the targets of the last good one.

use promflow_config::HttpSdConfig;
use promflow_storage::Labels;

use crate::file_sd::Group;

/// Fetches the target groups of one `http_sd_configs` entry.
pub async fn fetch(
    client: &reqwest::Client,
    cfg: &HttpSdConfig,
) -> Result<Vec<(Vec<String>, Labels)>, String> {
    let resp = client
        .get(&cfg.url)
        .header("X-Prometheus-Refresh-Interval-Seconds", cfg.refresh_interval.as_secs().to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("server returned HTTP status {}", resp.status()));
    }
    let json =
        resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err("unsupported content type; expected application/json".into());
    }
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    let groups: Vec<Group> = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok(groups.into_iter().map(|g| g.labelled("__meta_url", &cfg.url)).collect())
}
