//! `scrape_configs`: scrape protocols, and one job's settings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};
use serde::{Serialize, Serializer};

use super::global::GlobalConfig;
use super::paths::join_dir;
use super::{is_zero_f64, is_zero_u64};
use crate::relabel::{NameValidationScheme, RelabelConfig};
use crate::yaml::Validate;

// ---------------------------------------------------------------------------------------------
// Scrape protocols

/// A scrape protocol for content negotiation (`scrape_protocols`,
/// `fallback_scrape_protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScrapeProtocol {
    /// `PrometheusProto`: delimited protobuf `MetricFamily` messages.
    PrometheusProto,
    /// `PrometheusText0.0.4`: the classic text format.
    PrometheusText0_0_4,
    /// `PrometheusText1.0.0`: text format with UTF-8 names.
    PrometheusText1_0_0,
    /// `OpenMetricsText0.0.1`.
    OpenMetricsText0_0_1,
    /// `OpenMetricsText1.0.0`.
    OpenMetricsText1_0_0,
}

impl ScrapeProtocol {
    /// Every protocol, in the order Prometheus lists them.
    pub const ALL: [ScrapeProtocol; 5] = [
        ScrapeProtocol::PrometheusProto,
        ScrapeProtocol::PrometheusText0_0_4,
        ScrapeProtocol::PrometheusText1_0_0,
        ScrapeProtocol::OpenMetricsText0_0_1,
        ScrapeProtocol::OpenMetricsText1_0_0,
    ];

    /// Prometheus's default negotiation order.
    pub const DEFAULT: [ScrapeProtocol; 4] = [
        ScrapeProtocol::OpenMetricsText1_0_0,
        ScrapeProtocol::OpenMetricsText0_0_1,
        ScrapeProtocol::PrometheusText1_0_0,
        ScrapeProtocol::PrometheusText0_0_4,
    ];

    /// The order used when native histograms are scraped (protobuf first).
    pub const PROTO_FIRST: [ScrapeProtocol; 5] = [
        ScrapeProtocol::PrometheusProto,
        ScrapeProtocol::OpenMetricsText1_0_0,
        ScrapeProtocol::OpenMetricsText0_0_1,
        ScrapeProtocol::PrometheusText1_0_0,
        ScrapeProtocol::PrometheusText0_0_4,
    ];

    /// The configuration spelling (`OpenMetricsText1.0.0`).
    pub fn as_str(self) -> &'static str {
        match self {
            ScrapeProtocol::PrometheusProto => "PrometheusProto",
            ScrapeProtocol::PrometheusText0_0_4 => "PrometheusText0.0.4",
            ScrapeProtocol::PrometheusText1_0_0 => "PrometheusText1.0.0",
            ScrapeProtocol::OpenMetricsText0_0_1 => "OpenMetricsText0.0.1",
            ScrapeProtocol::OpenMetricsText1_0_0 => "OpenMetricsText1.0.0",
        }
    }

    /// The media type with parameters offered in `Accept`.
    pub fn header(self) -> &'static str {
        match self {
            ScrapeProtocol::PrometheusProto => {
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
            }
            ScrapeProtocol::PrometheusText0_0_4 => "text/plain;version=0.0.4",
            ScrapeProtocol::PrometheusText1_0_0 => "text/plain;version=1.0.0",
            ScrapeProtocol::OpenMetricsText0_0_1 => "application/openmetrics-text;version=0.0.1",
            ScrapeProtocol::OpenMetricsText1_0_0 => "application/openmetrics-text;version=1.0.0",
        }
    }

    /// Parses the configuration spelling (case-sensitive, as in Prometheus).
    pub fn parse(s: &str) -> Option<ScrapeProtocol> {
        ScrapeProtocol::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl Serialize for ScrapeProtocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ScrapeProtocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ScrapeProtocol::parse(&s).ok_or_else(|| {
            let mut all: Vec<&str> = ScrapeProtocol::ALL.iter().map(|p| p.as_str()).collect();
            all.sort_unstable();
            de::Error::custom(format!("unknown scrape protocol {s}, supported: [{}]", all.join(" ")))
        })
    }
}

pub(super) fn validate_scrape_protocols(sps: &[ScrapeProtocol]) -> Result<(), String> {
    if sps.is_empty() {
        return Err("scrape_protocols cannot be empty".into());
    }
    let mut seen = BTreeSet::new();
    for p in sps {
        if !seen.insert(*p) {
            let names: Vec<&str> = sps.iter().map(|p| p.as_str()).collect();
            return Err(format!("duplicated protocol in scrape_protocols, got [{}]", names.join(" ")));
        }
    }
    Ok(())
}

/// Metric name escaping schemes (`metric_name_escaping_scheme`).
pub(super) const ESCAPING_SCHEMES: [&str; 4] = ["allow-utf-8", "underscores", "dots", "values"];

fn de_opt_scheme<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NameValidationScheme>, D::Error> {
    let s = Option::<String>::deserialize(d)?.unwrap_or_default();
    match s.as_str() {
        "" => Ok(None),
        "utf8" => Ok(Some(NameValidationScheme::Utf8)),
        "legacy" => Ok(Some(NameValidationScheme::Legacy)),
        _ => Err(de::Error::custom(format!(
            "unknown scrape config name validation method specified, must be either '', 'legacy' or 'utf8', got {s}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// scrape_configs

config_struct! {
    @sd true;
    /// One `scrape_configs` entry: a job.
    ///
    /// After loading, every value inherited from `global` is filled in: `scrape_interval`,
    /// `scrape_timeout`, the limits, `scrape_protocols`, the histogram switches and the name
    /// validation/escaping schemes.
    pub struct ScrapeConfig {
        /// The job name (the default `job` label); unique across the configuration.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub job_name: String = String::new(),
        /// Keep the scraped `job`/`instance`/… labels on conflict instead of renaming them to
        /// `exported_*`.
        pub honor_labels: bool = false,
        /// Use the timestamps the target exposes (default true).
        pub honor_timestamps: bool = true,
        /// Track staleness of series with explicit timestamps.
        pub track_timestamps_staleness: bool = false,
        /// URL query parameters for every scrape.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "BTreeMap::is_empty")]
        pub params: BTreeMap<String, Vec<String>> = BTreeMap::new(),
        /// How often to scrape (0 in code = inherit from `global`).
        #[serde(with = "crate::duration::serde_duration")]
        pub scrape_interval: Duration = Duration::ZERO,
        /// Scrape timeout (0 in code = inherit from `global`, capped at the interval).
        #[serde(with = "crate::duration::serde_duration")]
        pub scrape_timeout: Duration = Duration::ZERO,
        /// Negotiation order (filled from `global` or the defaults when loading).
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
        pub scrape_protocols: Vec<ScrapeProtocol> = Vec::new(),
        /// The format assumed when a target's Content-Type is missing or unknown.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub fallback_scrape_protocol: Option<ScrapeProtocol> = None,
        /// Scrape native histograms (`Some` after loading).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub scrape_native_histograms: Option<bool> = None,
        /// Keep classic histograms alongside native ones (`Some` after loading).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub always_scrape_classic_histograms: Option<bool> = None,
        /// Convert classic histograms to NHCB (`Some` after loading).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub convert_classic_histograms_to_nhcb: Option<bool> = None,
        /// File scrape failures are logged to.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub scrape_failure_log_file: Option<String> = None,
        /// HTTP path to scrape (default `/metrics`).
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub metrics_path: String = "/metrics".to_string(),
        /// `http` (default) or `https`.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub scheme: String = "http".to_string(),
        /// Ask targets for gzip (default true).
        pub enable_compression: bool = true,
        /// Uncompressed body size limit in bytes (0 = none; inherits `global`).
        #[serde(with = "crate::duration::serde_size", skip_serializing_if = "is_zero_u64")]
        pub body_size_limit: u64 = 0,
        /// Samples per scrape after metric relabelling (0 = none; inherits `global`).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub sample_limit: u64 = 0,
        /// Targets after target relabelling (0 = none; inherits `global`).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub target_limit: u64 = 0,
        /// Labels per sample (0 = none; inherits `global`).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub label_limit: u64 = 0,
        /// Label name length (0 = none; inherits `global`).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub label_name_length_limit: u64 = 0,
        /// Label value length (0 = none; inherits `global`).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub label_value_length_limit: u64 = 0,
        /// Native histogram bucket limit (0 = none).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub native_histogram_bucket_limit: u64 = 0,
        /// Native histogram minimum bucket growth factor (0 = none).
        #[serde(skip_serializing_if = "is_zero_f64")]
        pub native_histogram_min_bucket_factor: f64 = 0.0,
        /// Dropped targets kept for the UI (0 = all; inherits `global`).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub keep_dropped_targets: u64 = 0,
        /// Name validation for this job (`Some` after loading).
        #[serde(deserialize_with = "de_opt_scheme", skip_serializing_if = "Option::is_none")]
        pub metric_name_validation_scheme: Option<NameValidationScheme> = None,
        /// Escaping requested from targets (filled in when loading).
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "String::is_empty")]
        pub metric_name_escaping_scheme: String = String::new(),
        /// Record the extra scrape metrics (`Some` after loading).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub extra_scrape_metrics: Option<bool> = None,
        /// Target relabelling.
        #[serde(deserialize_with = "crate::yaml::validated_vec", skip_serializing_if = "Vec::is_empty")]
        pub relabel_configs: Vec<RelabelConfig> = Vec::new(),
        /// Relabelling of scraped series.
        #[serde(deserialize_with = "crate::yaml::validated_vec", skip_serializing_if = "Vec::is_empty")]
        pub metric_relabel_configs: Vec<RelabelConfig> = Vec::new(),
    }
}

/// Prometheus's `CheckTargetAddress`, applied to static targets when a job has no target
/// relabelling.
pub(super) fn check_static_targets(static_configs: &[crate::sd::StaticConfig]) -> Result<(), String> {
    for sc in static_configs {
        if let Some(t) = sc.targets.iter().find(|t| t.contains('/')) {
            return Err(format!("{t:?} is not a valid hostname"));
        }
    }
    Ok(())
}

impl Validate for ScrapeConfig {
    fn validate(&mut self) -> Result<(), String> {
        if self.job_name.is_empty() {
            return Err("job_name is empty".into());
        }
        let job = self.job_name.clone();
        self.check_http_client().map_err(|e| format!("{e} (scrape config with job name {job:?})"))?;
        if self.relabel_configs.is_empty() {
            check_static_targets(&self.static_configs)?;
        }
        if self.scheme != "http" && self.scheme != "https" {
            return Err(format!(
                "invalid scheme {:?} for scrape config with job name {job:?}: must be \"http\" or \"https\"",
                self.scheme
            ));
        }
        Ok(())
    }
}

impl ScrapeConfig {
    /// Fills in everything inherited from `global` and runs the checks that need it
    /// (Prometheus's `ScrapeConfig.Validate`).
    pub(crate) fn apply_global(&mut self, g: &GlobalConfig) -> Result<(), String> {
        let job = self.job_name.clone();
        if self.scrape_interval.is_zero() {
            self.scrape_interval = g.scrape_interval;
        }
        if self.scrape_timeout > self.scrape_interval {
            return Err(format!(
                "scrape timeout greater than scrape interval for scrape config with job name {job:?}"
            ));
        }
        if self.scrape_timeout.is_zero() {
            self.scrape_timeout = g.scrape_timeout.min(self.scrape_interval);
        }
        for (mine, global) in [
            (&mut self.body_size_limit, g.body_size_limit),
            (&mut self.sample_limit, g.sample_limit),
            (&mut self.target_limit, g.target_limit),
            (&mut self.label_limit, g.label_limit),
            (&mut self.label_name_length_limit, g.label_name_length_limit),
            (&mut self.label_value_length_limit, g.label_value_length_limit),
            (&mut self.keep_dropped_targets, g.keep_dropped_targets),
        ] {
            if *mine == 0 {
                *mine = global;
            }
        }
        if self.scrape_failure_log_file.is_none() {
            self.scrape_failure_log_file = g.scrape_failure_log_file.clone();
        }
        let native = *self.scrape_native_histograms.get_or_insert(g.scrape_native_histograms);
        self.extra_scrape_metrics.get_or_insert(g.extra_scrape_metrics);
        if self.scrape_protocols.is_empty() {
            self.scrape_protocols = if !g.scrape_protocols.is_empty() {
                g.scrape_protocols.clone()
            } else if native {
                ScrapeProtocol::PROTO_FIRST.to_vec()
            } else {
                ScrapeProtocol::DEFAULT.to_vec()
            };
        }
        validate_scrape_protocols(&self.scrape_protocols)
            .map_err(|e| format!("{e} for scrape config with job name {job:?}"))?;

        let local_unset = self.metric_name_validation_scheme.is_none();
        let scheme = *self.metric_name_validation_scheme.get_or_insert(g.metric_name_validation_scheme);
        let global_escaping = if g.metric_name_escaping_scheme.is_empty() {
            match g.metric_name_validation_scheme {
                NameValidationScheme::Legacy => "underscores",
                NameValidationScheme::Utf8 => "allow-utf-8",
            }
        } else {
            g.metric_name_escaping_scheme.as_str()
        };
        if self.metric_name_escaping_scheme.is_empty() {
            self.metric_name_escaping_scheme = if local_unset {
                global_escaping.to_string()
            } else if scheme == NameValidationScheme::Legacy {
                "underscores".to_string()
            } else {
                "allow-utf-8".to_string()
            };
        }
        match self.metric_name_escaping_scheme.as_str() {
            "allow-utf-8" if scheme != NameValidationScheme::Utf8 => {
                return Err("utf8 metric names requested but validation scheme is not set to UTF8".into());
            }
            s if ESCAPING_SCHEMES.contains(&s) => {}
            s => {
                return Err(format!(
                    "unknown scrape config name escaping method specified, must be one of 'allow-utf-8', 'underscores', 'dots', or 'values', got {s:?}"
                ));
            }
        }
        self.convert_classic_histograms_to_nhcb.get_or_insert(g.convert_classic_histograms_to_nhcb);
        self.always_scrape_classic_histograms.get_or_insert(g.always_scrape_classic_histograms);
        for rc in self.relabel_configs.iter_mut().chain(self.metric_relabel_configs.iter_mut()) {
            rc.name_validation_scheme = scheme;
            rc.validate().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Whether native histograms are scraped (after loading).
    pub fn scrape_native_histograms_enabled(&self) -> bool {
        self.scrape_native_histograms.unwrap_or(false)
    }

    /// The name validation scheme in effect (after loading).
    pub fn name_validation_scheme(&self) -> NameValidationScheme {
        self.metric_name_validation_scheme.unwrap_or_default()
    }

    /// The `Accept` header Prometheus sends for this job, e.g.
    /// `application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,…,*/*;q=0.2`.
    pub fn accept_header(&self) -> String {
        let escaping = if self.metric_name_escaping_scheme.is_empty() {
            "allow-utf-8"
        } else {
            self.metric_name_escaping_scheme.as_str()
        };
        let protocols: &[ScrapeProtocol] =
            if self.scrape_protocols.is_empty() { &ScrapeProtocol::DEFAULT } else { &self.scrape_protocols };
        let mut weight = ScrapeProtocol::ALL.len() + 1;
        let mut parts = Vec::new();
        for p in protocols {
            let mut v = p.header().to_string();
            if matches!(p, ScrapeProtocol::PrometheusText1_0_0 | ScrapeProtocol::OpenMetricsText1_0_0) {
                v.push_str(";escaping=");
                v.push_str(escaping);
            }
            v.push_str(&format!(";q=0.{weight}"));
            parts.push(v);
            weight = weight.saturating_sub(1);
        }
        parts.push(format!("*/*;q=0.{weight}"));
        parts.join(",")
    }

    pub(super) fn resolve_paths(&mut self, dir: &Path) {
        self.resolve_sd_paths(dir);
        self.resolve_http_paths(dir);
        if let Some(f) = &mut self.scrape_failure_log_file {
            *f = join_dir(dir, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_matches_prometheus() {
        let sc = ScrapeConfig {
            scrape_protocols: ScrapeProtocol::DEFAULT.to_vec(),
            metric_name_escaping_scheme: "allow-utf-8".into(),
            ..Default::default()
        };
        assert_eq!(
            sc.accept_header(),
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        );
    }
}
