//! The `prometheus.yml` model: [`Config`] and its sections, loading and validation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use promflow_storage::Labels;
use serde::de::{self, Deserialize, Deserializer};
use serde::{Serialize, Serializer};
use serde_saphyr::Spanned;

use crate::relabel::{NameValidationScheme, RelabelConfig};
use crate::yaml::{convert_error, Validate};
use crate::{Error, UntypedConfig};

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

fn validate_scrape_protocols(sps: &[ScrapeProtocol]) -> Result<(), String> {
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
const ESCAPING_SCHEMES: [&str; 4] = ["allow-utf-8", "underscores", "dots", "values"];

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

fn zero_duration() -> Duration {
    Duration::ZERO
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

fn is_zero_duration(d: &Duration) -> bool {
    d.is_zero()
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ---------------------------------------------------------------------------------------------
// global

config_struct! {
    /// `global`: defaults for the other sections and settings for the whole server.
    pub struct GlobalConfig {
        /// Default scrape interval (default 1m).
        #[serde(default = "zero_duration", with = "crate::duration::serde_duration")]
        pub scrape_interval: Duration = Duration::from_secs(60),
        /// Default scrape timeout (default 10s, capped at the scrape interval).
        #[serde(default = "zero_duration", with = "crate::duration::serde_duration")]
        pub scrape_timeout: Duration = Duration::from_secs(10),
        /// Default negotiation order; empty means "choose per scrape config".
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
        pub scrape_protocols: Vec<ScrapeProtocol> = Vec::new(),
        /// Default rule evaluation interval (default 1m).
        #[serde(default = "zero_duration", with = "crate::duration::serde_duration")]
        pub evaluation_interval: Duration = Duration::from_secs(60),
        /// Default offset of rule evaluation timestamps into the past.
        #[serde(with = "crate::duration::serde_duration")]
        pub rule_query_offset: Duration = Duration::ZERO,
        /// File PromQL queries are logged to.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub query_log_file: Option<String> = None,
        /// File scrape failures are logged to.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub scrape_failure_log_file: Option<String> = None,
        /// Labels added to series and alerts sent to external systems. `${VAR}`/`$VAR` in the
        /// values are replaced from the environment when loading (`$$` is a literal `$`).
        #[serde(with = "crate::yaml::labels_serde", skip_serializing_if = "Labels::is_empty")]
        pub external_labels: Labels = Labels::new(),
        /// Default uncompressed body size limit in bytes (0 = none).
        #[serde(with = "crate::duration::serde_size", skip_serializing_if = "is_zero_u64")]
        pub body_size_limit: u64 = 0,
        /// Default limit on samples per scrape (0 = none).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub sample_limit: u64 = 0,
        /// Default limit on targets per scrape config (0 = none).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub target_limit: u64 = 0,
        /// Default limit on labels per sample (0 = none).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub label_limit: u64 = 0,
        /// Default limit on label name length (0 = none).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub label_name_length_limit: u64 = 0,
        /// Default limit on label value length (0 = none).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub label_value_length_limit: u64 = 0,
        /// Default number of dropped targets kept for the UI (0 = all).
        #[serde(skip_serializing_if = "is_zero_u64")]
        pub keep_dropped_targets: u64 = 0,
        /// `utf8` (default) or `legacy` label and metric name validation.
        pub metric_name_validation_scheme: NameValidationScheme = NameValidationScheme::Utf8,
        /// Default escaping scheme requested from targets (`allow-utf-8`, `underscores`,
        /// `dots`, `values`); empty = derived from the validation scheme.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "String::is_empty")]
        pub metric_name_escaping_scheme: String = String::new(),
        /// Whether native histograms are scraped (default false).
        pub scrape_native_histograms: bool = false,
        /// Whether classic histograms are converted to native histograms with custom buckets.
        pub convert_classic_histograms_to_nhcb: bool = false,
        /// Whether classic histograms are also kept when native ones are scraped.
        pub always_scrape_classic_histograms: bool = false,
        /// Whether `scrape_timeout_seconds`, `scrape_sample_limit` and `scrape_body_size_bytes`
        /// are recorded.
        pub extra_scrape_metrics: bool = false,
    }
}

impl Validate for GlobalConfig {
    fn validate(&mut self) -> Result<(), String> {
        for l in &self.external_labels {
            if !self.metric_name_validation_scheme.is_valid_label_name(&l.name) {
                return Err(format!("{:?} is not a valid label name", l.name));
            }
        }
        if self.scrape_interval.is_zero() {
            self.scrape_interval = Duration::from_secs(60);
        }
        if self.scrape_timeout > self.scrape_interval {
            return Err("global scrape timeout greater than scrape interval".into());
        }
        if self.scrape_timeout.is_zero() {
            self.scrape_timeout = Duration::from_secs(10).min(self.scrape_interval);
        }
        if self.evaluation_interval.is_zero() {
            self.evaluation_interval = Duration::from_secs(60);
        }
        if !self.scrape_protocols.is_empty() {
            validate_scrape_protocols(&self.scrape_protocols)
                .map_err(|e| format!("{e} for global config"))?;
        }
        if !self.metric_name_escaping_scheme.is_empty()
            && !ESCAPING_SCHEMES.contains(&self.metric_name_escaping_scheme.as_str())
        {
            return Err(format!(
                "unknown global name escaping method specified, must be one of 'allow-utf-8', 'underscores', 'dots', or 'values', got {:?}",
                self.metric_name_escaping_scheme
            ));
        }
        Ok(())
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
fn check_static_targets(static_configs: &[crate::sd::StaticConfig]) -> Result<(), String> {
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

    fn resolve_paths(&mut self, dir: &Path) {
        self.resolve_sd_paths(dir);
        self.resolve_http_paths(dir);
        if let Some(f) = &mut self.scrape_failure_log_file {
            *f = join_dir(dir, f);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// alerting

config_struct! {
    @sd true;
    /// One `alerting.alertmanagers` entry.
    pub struct AlertmanagerConfig {
        /// `http` (default) or `https`.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub scheme: String = "http".to_string(),
        /// Path prefix in front of `/api/v2/alerts`.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "String::is_empty")]
        pub path_prefix: String = String::new(),
        /// Timeout for sending alerts (default 10s).
        #[serde(with = "crate::duration::serde_duration")]
        pub timeout: Duration = Duration::from_secs(10),
        /// Alertmanager API version; only `v2` is supported (as in Prometheus 3).
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub api_version: String = "v2".to_string(),
        /// Relabelling of discovered Alertmanagers.
        #[serde(deserialize_with = "crate::yaml::validated_vec", skip_serializing_if = "Vec::is_empty")]
        pub relabel_configs: Vec<RelabelConfig> = Vec::new(),
        /// Relabelling of alerts sent to these Alertmanagers.
        #[serde(deserialize_with = "crate::yaml::validated_vec", skip_serializing_if = "Vec::is_empty")]
        pub alert_relabel_configs: Vec<RelabelConfig> = Vec::new(),
        /// AWS SigV4 signing (accepted, not interpreted).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub sigv4: Option<UntypedConfig> = None,
    }
}

impl Validate for AlertmanagerConfig {
    fn validate(&mut self) -> Result<(), String> {
        if self.api_version != "v2" {
            return Err(format!(
                "expected Alertmanager api version to be one of [v2] but got {}",
                self.api_version
            ));
        }
        self.check_http_client()?;
        let auth = self.basic_auth.is_some() || self.authorization.is_some() || self.oauth2.is_some();
        if auth && self.sigv4.is_some() {
            return Err("at most one of basic_auth, authorization, oauth2, & sigv4 must be configured".into());
        }
        if self.relabel_configs.is_empty() {
            check_static_targets(&self.static_configs)?;
        }
        Ok(())
    }
}

config_struct! {
    /// `alerting`: where alerts go.
    pub struct AlertingConfig {
        /// Relabelling applied to every alert before it is sent (after external labels).
        #[serde(deserialize_with = "crate::yaml::validated_vec", skip_serializing_if = "Vec::is_empty")]
        pub alert_relabel_configs: Vec<RelabelConfig> = Vec::new(),
        /// Alertmanagers to send alerts to.
        #[serde(deserialize_with = "crate::yaml::validated_vec", skip_serializing_if = "Vec::is_empty")]
        pub alertmanagers: Vec<AlertmanagerConfig> = Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// remote_write / remote_read

config_struct! {
    /// `queue_config` of a remote write endpoint.
    pub struct QueueConfig {
        /// Samples buffered per shard (default 10000).
        pub capacity: i64 = 10_000,
        /// Maximum shards (default 50).
        pub max_shards: i64 = 50,
        /// Minimum shards (default 1).
        pub min_shards: i64 = 1,
        /// Maximum samples per request (default 2000).
        pub max_samples_per_send: i64 = 2000,
        /// Maximum time a sample waits in the buffer (default 5s).
        #[serde(with = "crate::duration::serde_duration")]
        pub batch_send_deadline: Duration = Duration::from_secs(5),
        /// Initial retry backoff (default 30ms).
        #[serde(with = "crate::duration::serde_duration")]
        pub min_backoff: Duration = Duration::from_millis(30),
        /// Maximum retry backoff (default 5s).
        #[serde(with = "crate::duration::serde_duration")]
        pub max_backoff: Duration = Duration::from_secs(5),
        /// Retry on HTTP 429.
        #[serde(rename = "retry_on_http_429")]
        pub retry_on_http_429: bool = false,
        /// Samples older than this are dropped (0 = never).
        #[serde(with = "crate::duration::serde_duration", skip_serializing_if = "is_zero_duration")]
        pub sample_age_limit: Duration = Duration::ZERO,
    }
}

impl QueueConfig {
    fn check(&self) -> Result<(), String> {
        if self.max_shards <= 0 {
            return Err("remote write queue max_shards must be positive".into());
        }
        if self.min_shards <= 0 {
            return Err("remote write queue min_shards must be positive".into());
        }
        if self.min_shards > self.max_shards {
            return Err("remote write queue min_shards must not be greater than max_shards".into());
        }
        if self.max_samples_per_send <= 0 {
            return Err("remote write queue max_samples_per_send must be positive".into());
        }
        if self.capacity <= 0 {
            return Err("remote write queue capacity must be positive".into());
        }
        if self.max_backoff < self.min_backoff {
            return Err("remote write queue max_backoff must not be less than min_backoff".into());
        }
        Ok(())
    }
}

config_struct! {
    /// `metadata_config` of a remote write endpoint.
    pub struct MetadataConfig {
        /// Send metric metadata (default true).
        pub send: bool = true,
        /// How often (default 1m).
        #[serde(with = "crate::duration::serde_duration")]
        pub send_interval: Duration = Duration::from_secs(60),
        /// Maximum metadata entries per request (default 2000).
        pub max_samples_per_send: i64 = 2000,
    }
}

/// Headers remote write/read refuse (lower case).
const REMOTE_RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "content-encoding",
    "content-type",
    "content-length",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "accept-encoding",
    "x-prometheus-remote-write-version",
    "x-prometheus-remote-read-version",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

fn validate_remote_headers(headers: &BTreeMap<String, String>) -> Result<(), String> {
    for h in headers.keys() {
        let lower = h.to_lowercase();
        if lower == "authorization" {
            return Err("authorization header must be changed via the basic_auth, authorization, oauth2, sigv4, azuread or google_iam parameter".into());
        }
        if REMOTE_RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!("{h} is a reserved header. It must not be changed"));
        }
    }
    Ok(())
}

config_struct! {
    @http false;
    /// One `remote_write` endpoint.
    pub struct RemoteWriteConfig {
        /// The endpoint URL (required; its password is redacted when rendered).
        #[serde(deserialize_with = "crate::yaml::nullable", serialize_with = "crate::yaml::ser_url")]
        pub url: String = String::new(),
        /// Request timeout (default 30s).
        #[serde(with = "crate::duration::serde_duration")]
        pub remote_timeout: Duration = Duration::from_secs(30),
        /// Extra request headers.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "BTreeMap::is_empty")]
        pub headers: BTreeMap<String, String> = BTreeMap::new(),
        /// Relabelling of series before they are sent (after external labels).
        #[serde(deserialize_with = "crate::yaml::validated_vec", skip_serializing_if = "Vec::is_empty")]
        pub write_relabel_configs: Vec<RelabelConfig> = Vec::new(),
        /// A name unique among remote write endpoints (empty = derived from a hash).
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "String::is_empty")]
        pub name: String = String::new(),
        /// Send exemplars.
        pub send_exemplars: bool = false,
        /// Send native histograms.
        pub send_native_histograms: bool = false,
        /// Spread requests over the DNS records of the host.
        #[serde(skip_serializing_if = "is_false")]
        pub round_robin_dns: bool = false,
        /// `prometheus.WriteRequest` (remote write 1.0, default) or
        /// `io.prometheus.write.v2.Request` (2.0).
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub protobuf_message: String = "prometheus.WriteRequest".to_string(),
        /// Log failed remote write 2.0 requests.
        #[serde(skip_serializing_if = "is_false")]
        pub failed_request_logging: bool = false,
        /// Queue tuning.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub queue_config: QueueConfig = QueueConfig::default(),
        /// Metadata sending.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub metadata_config: MetadataConfig = MetadataConfig::default(),
        /// AWS SigV4 signing (accepted, not interpreted).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub sigv4: Option<UntypedConfig> = None,
        /// Azure AD authentication (accepted, not interpreted).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub azuread: Option<UntypedConfig> = None,
        /// Google IAM authentication (accepted, not interpreted).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub google_iam: Option<UntypedConfig> = None,
    }
}

impl Validate for RemoteWriteConfig {
    fn validate(&mut self) -> Result<(), String> {
        if self.url.is_empty() {
            return Err("url for remote_write is empty".into());
        }
        validate_remote_headers(&self.headers)?;
        if self.protobuf_message.is_empty() {
            self.protobuf_message = "prometheus.WriteRequest".into();
        }
        if !["prometheus.WriteRequest", "io.prometheus.write.v2.Request"]
            .contains(&self.protobuf_message.as_str())
        {
            return Err(format!(
                "invalid protobuf_message value: unknown remote write protobuf message {}, supported: prometheus.WriteRequest, io.prometheus.write.v2.Request",
                self.protobuf_message
            ));
        }
        self.check_http_client()?;
        self.queue_config.check()?;
        let mut auth = Vec::new();
        for (set, name) in [
            (self.basic_auth.is_some(), "basic_auth"),
            (self.authorization.is_some(), "authorization"),
            (self.oauth2.is_some(), "oauth2"),
            (self.sigv4.is_some(), "sigv4"),
            (self.azuread.is_some(), "azuread"),
            (self.google_iam.is_some(), "google_iam"),
        ] {
            if set {
                auth.push(name);
            }
        }
        if auth.len() > 1 {
            return Err(format!(
                "at most one of basic_auth, authorization, oauth2, sigv4, azuread or google_iam must be configured. Currently configured: [{}]",
                auth.join(" ")
            ));
        }
        Ok(())
    }
}

config_struct! {
    @http true;
    /// One `remote_read` endpoint.
    pub struct RemoteReadConfig {
        /// The endpoint URL (required; its password is redacted when rendered).
        #[serde(deserialize_with = "crate::yaml::nullable", serialize_with = "crate::yaml::ser_url")]
        pub url: String = String::new(),
        /// Request timeout (default 1m).
        #[serde(with = "crate::duration::serde_duration")]
        pub remote_timeout: Duration = Duration::from_secs(60),
        /// Maximum size of a streamed response frame (default 50e6 bytes).
        pub chunked_read_limit: u64 = 50_000_000,
        /// Extra request headers.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "BTreeMap::is_empty")]
        pub headers: BTreeMap<String, String> = BTreeMap::new(),
        /// Also read recent data (normally served locally).
        pub read_recent: bool = false,
        /// A name unique among remote read endpoints.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "String::is_empty")]
        pub name: String = String::new(),
        /// Equality matchers a query must contain to be sent here.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "BTreeMap::is_empty")]
        pub required_matchers: BTreeMap<String, String> = BTreeMap::new(),
        /// Add the external labels as matchers (default true).
        pub filter_external_labels: bool = true,
    }
}

impl Validate for RemoteReadConfig {
    fn validate(&mut self) -> Result<(), String> {
        if self.url.is_empty() {
            return Err("url for remote_read is empty".into());
        }
        validate_remote_headers(&self.headers)?;
        self.check_http_client()
    }
}

// ---------------------------------------------------------------------------------------------
// storage, tracing, otlp, runtime

config_struct! {
    /// `storage.tsdb.chunk_encoding`.
    pub struct ChunkEncodingConfig {
        /// `xor`, `xor2` or empty.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "String::is_empty")]
        pub floats: String = String::new(),
    }
}

config_struct! {
    /// `storage.tsdb.retention`.
    pub struct TsdbRetentionConfig {
        /// How long to keep samples (0 = use the command-line flag).
        #[serde(with = "crate::duration::serde_duration", skip_serializing_if = "is_zero_duration")]
        pub time: Duration = Duration::ZERO,
        /// Maximum bytes of blocks (0 = no limit).
        #[serde(with = "crate::duration::serde_size", skip_serializing_if = "is_zero_u64")]
        pub size: u64 = 0,
        /// Maximum percentage of the disk (0 = no limit).
        #[serde(skip_serializing_if = "is_zero_f64")]
        pub percentage: f64 = 0.0,
    }
}

config_struct! {
    /// `storage.tsdb`: reloadable storage settings.
    pub struct TsdbConfig {
        /// How far back out-of-order samples are accepted (0 = not at all).
        #[serde(with = "crate::duration::serde_duration", skip_serializing_if = "is_zero_duration")]
        pub out_of_order_time_window: Duration = Duration::ZERO,
        /// Fraction of stale series in the head that triggers a compaction.
        #[serde(skip_serializing_if = "is_zero_f64")]
        pub stale_series_compaction_threshold: f64 = 0.0,
        /// Chunk encoding overrides.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub chunk_encoding: ChunkEncodingConfig = ChunkEncodingConfig::default(),
        /// Retention.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub retention: TsdbRetentionConfig = TsdbRetentionConfig::default(),
    }
}

impl Validate for TsdbConfig {
    fn validate(&mut self) -> Result<(), String> {
        if !(0.0..=100.0).contains(&self.retention.percentage) {
            return Err(format!(
                "'storage.tsdb.retention.percentage' must be in the range [0, 100], got {}",
                self.retention.percentage
            ));
        }
        match self.chunk_encoding.floats.as_str() {
            "" | "xor" | "xor2" => Ok(()),
            other => Err(format!(
                "'storage.tsdb.chunk_encoding.floats' must be 'xor' or 'xor2', or the field must be omitted entirely, got {other:?}"
            )),
        }
    }
}

config_struct! {
    /// `storage.exemplars`.
    pub struct ExemplarsConfig {
        /// Size of the exemplar ring buffer (default 100000; 0 or less disables it).
        pub max_exemplars: i64 = 100_000,
    }
}

config_struct! {
    /// `storage`: reloadable storage settings.
    pub struct StorageConfig {
        /// TSDB settings.
        #[serde(deserialize_with = "crate::yaml::validated")]
        pub tsdb: TsdbConfig = TsdbConfig::default(),
        /// Exemplar storage.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub exemplars: ExemplarsConfig = ExemplarsConfig::default(),
    }
}

config_struct! {
    /// `tracing`: OpenTelemetry trace export.
    pub struct TracingConfig {
        /// `grpc` (default) or `http`.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub client_type: String = "grpc".to_string(),
        /// Collector endpoint (required).
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub endpoint: String = String::new(),
        /// Fraction of traces sampled.
        #[serde(skip_serializing_if = "is_zero_f64")]
        pub sampling_fraction: f64 = 0.0,
        /// Disable TLS.
        pub insecure: bool = false,
        /// TLS settings.
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub tls_config: crate::http::TlsConfig = Default::default(),
        /// Extra headers.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "BTreeMap::is_empty")]
        pub headers: BTreeMap<String, String> = BTreeMap::new(),
        /// `gzip` or empty.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "String::is_empty")]
        pub compression: String = String::new(),
        /// Export timeout.
        #[serde(with = "crate::duration::serde_duration", skip_serializing_if = "is_zero_duration")]
        pub timeout: Duration = Duration::ZERO,
    }
}

impl Validate for TracingConfig {
    fn validate(&mut self) -> Result<(), String> {
        if self.client_type != "http" && self.client_type != "grpc" {
            return Err(format!(
                "expected tracing client type to be to be http or grpc, but got {}",
                self.client_type
            ));
        }
        for h in self.headers.keys() {
            let lower = h.to_lowercase();
            if lower == "authorization" {
                return Err("custom authorization header configuration is not yet supported".into());
            }
            if REMOTE_RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(format!("{h} is a reserved header. It must not be changed"));
            }
        }
        if self.endpoint.is_empty() {
            return Err("tracing endpoint must be set".into());
        }
        if !self.compression.is_empty() && self.compression != "gzip" {
            return Err(format!(
                "invalid compression type {} provided, valid options: gzip",
                self.compression
            ));
        }
        self.tls_config.check()
    }
}

config_struct! {
    /// `otlp`: translation settings of the OTLP receiver.
    pub struct OtlpConfig {
        /// Resource attributes promoted to labels.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
        pub promote_resource_attributes: Vec<String> = Vec::new(),
        /// Promote every resource attribute (except the ignored ones).
        #[serde(skip_serializing_if = "is_false")]
        pub promote_all_resource_attributes: bool = false,
        /// Attributes not promoted when promoting all.
        #[serde(deserialize_with = "crate::yaml::nullable", skip_serializing_if = "Vec::is_empty")]
        pub ignore_resource_attributes: Vec<String> = Vec::new(),
        /// Name translation strategy (default `UnderscoreEscapingWithSuffixes`).
        #[serde(deserialize_with = "crate::yaml::nullable")]
        pub translation_strategy: String = "UnderscoreEscapingWithSuffixes".to_string(),
        /// Keep `service.*` attributes on `target_info`.
        pub keep_identifying_resource_attributes: bool = false,
        /// Convert explicit-bucket histograms to NHCB.
        pub convert_histograms_to_nhcb: bool = false,
        /// Promote scope metadata to labels.
        pub promote_scope_metadata: bool = false,
        /// Prefix labels starting with `_` with `key_` (default true).
        pub label_name_underscore_sanitization: bool = true,
        /// Keep repeated underscores in label names (default true).
        pub label_name_preserve_multiple_underscores: bool = true,
    }
}

fn sanitize_attributes(attrs: &mut [String], adjective: &str) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for a in attrs.iter_mut() {
        *a = a.trim().to_string();
        if a.is_empty() {
            return Err(format!("empty {adjective} OTel resource attribute"));
        }
        if !seen.insert(a.clone()) {
            return Err(format!("duplicated {adjective} OTel resource attribute {a:?}"));
        }
    }
    Ok(())
}

impl Validate for OtlpConfig {
    fn validate(&mut self) -> Result<(), String> {
        if self.promote_all_resource_attributes {
            if !self.promote_resource_attributes.is_empty() {
                return Err("'promote_all_resource_attributes' and 'promote_resource_attributes' cannot be configured simultaneously".into());
            }
            sanitize_attributes(&mut self.ignore_resource_attributes, "ignored")
                .map_err(|e| format!("invalid 'ignore_resource_attributes': {e}"))?;
        } else {
            if !self.ignore_resource_attributes.is_empty() {
                return Err("'ignore_resource_attributes' cannot be configured unless 'promote_all_resource_attributes' is true".into());
            }
            sanitize_attributes(&mut self.promote_resource_attributes, "promoted")
                .map_err(|e| format!("invalid 'promote_resource_attributes': {e}"))?;
        }
        match self.translation_strategy.as_str() {
            "" => self.translation_strategy = "UnderscoreEscapingWithSuffixes".into(),
            "UnderscoreEscapingWithSuffixes"
            | "UnderscoreEscapingWithoutSuffixes"
            | "NoUTF8EscapingWithSuffixes"
            | "NoTranslation" => {}
            other => return Err(format!("unsupported OTLP translation strategy {other:?}")),
        }
        Ok(())
    }
}

config_struct! {
    /// `runtime`: Go runtime tuning (accepted; meaningless for promflow).
    pub struct RuntimeConfig {
        /// Go's GOGC.
        pub gogc: i64 = 75,
    }
}

// ---------------------------------------------------------------------------------------------
// The whole file

/// A parsed, validated `prometheus.yml` with every default filled in and every relative path
/// resolved against the directory of the file it came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Config {
    /// `global`.
    pub global: GlobalConfig,
    /// `runtime` (accepted and ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeConfig>,
    /// `alerting`.
    pub alerting: AlertingConfig,
    /// `rule_files`: globs of rule files (resolved paths).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rule_files: Vec<String>,
    /// `scrape_config_files`: globs of files holding more scrape configs (resolved paths).
    /// Their jobs are already appended to `scrape_configs`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scrape_config_files: Vec<String>,
    /// `scrape_configs`, followed by the jobs from `scrape_config_files`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scrape_configs: Vec<ScrapeConfig>,
    /// `storage`.
    pub storage: StorageConfig,
    /// `tracing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
    /// `remote_write`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_write: Vec<RemoteWriteConfig>,
    /// `remote_read`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_read: Vec<RemoteReadConfig>,
    /// `otlp`.
    pub otlp: OtlpConfig,
}

/// The file as read from YAML, before the checks that span sections.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    #[serde(deserialize_with = "crate::yaml::validated")]
    global: GlobalConfig,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    runtime: Option<RuntimeConfig>,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    alerting: AlertingConfig,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    rule_files: Vec<Spanned<String>>,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    scrape_config_files: Vec<Spanned<String>>,
    #[serde(deserialize_with = "crate::yaml::validated_spanned_vec")]
    scrape_configs: Vec<Spanned<ScrapeConfig>>,
    #[serde(deserialize_with = "crate::yaml::nullable")]
    storage: StorageConfig,
    #[serde(deserialize_with = "crate::yaml::validated_opt")]
    tracing: Option<TracingConfig>,
    #[serde(deserialize_with = "crate::yaml::validated_spanned_vec")]
    remote_write: Vec<Spanned<RemoteWriteConfig>>,
    #[serde(deserialize_with = "crate::yaml::validated_spanned_vec")]
    remote_read: Vec<Spanned<RemoteReadConfig>>,
    #[serde(deserialize_with = "crate::yaml::validated")]
    otlp: OtlpConfig,
}

/// A file listed in `scrape_config_files`.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawScrapeConfigs {
    #[serde(deserialize_with = "crate::yaml::validated_spanned_vec")]
    scrape_configs: Vec<Spanned<ScrapeConfig>>,
}

/// A loaded configuration with what the loader has to say about it.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: Config,
    /// Things accepted but not acted upon (unimplemented features, empty environment
    /// variables, …), one sentence each; the caller logs and counts them.
    pub warnings: Vec<String>,
    /// The YAML text as read.
    pub source: String,
}

/// What the running server implements, for the "not implemented yet" warnings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    /// Service discovery keys whose targets are scraped (`"file_sd_configs"`, …).
    pub service_discoveries: BTreeSet<String>,
    /// `remote_write` endpoints are written to.
    pub remote_write: bool,
    /// `remote_read` endpoints are queried.
    pub remote_read: bool,
    /// Alerts are sent to `alerting.alertmanagers`.
    pub alertmanagers: bool,
    /// `storage.tsdb` is honoured.
    pub tsdb: bool,
    /// `storage.exemplars` is honoured.
    pub exemplars: bool,
    /// `tracing` is honoured.
    pub tracing: bool,
    /// `otlp` is honoured.
    pub otlp: bool,
    /// `rule_files` are evaluated.
    pub rules: bool,
}

impl Default for Features {
    /// Static and file discovery; nothing else.
    fn default() -> Self {
        Features {
            service_discoveries: ["static_configs", "file_sd_configs"]
                .into_iter()
                .map(String::from)
                .collect(),
            remote_write: false,
            remote_read: false,
            alertmanagers: false,
            tsdb: false,
            exemplars: false,
            tracing: false,
            otlp: false,
            rules: false,
        }
    }
}

/// Options for [`Config::parse_with`] and [`Config::load_file_with`].
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// What the server implements (for warnings).
    pub features: Features,
    /// Environment used to expand `external_labels`; `None` reads the process environment.
    pub env: Option<BTreeMap<String, String>>,
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load_file(path: &Path) -> Result<LoadedConfig, Error> {
        Config::load_file_with(path, &LoadOptions::default())
    }

    /// [`Config::load_file`] with options.
    pub fn load_file_with(path: &Path, opts: &LoadOptions) -> Result<LoadedConfig, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            Error::config(&path.display().to_string(), None, None, "the file is not valid UTF-8")
        })?;
        Config::parse_with(&text, &path.display().to_string(), opts)
    }

    /// Parses and validates configuration text. `file_name` is used in error messages, and
    /// relative paths in the configuration are resolved against its directory, as if the
    /// text had been read from that file.
    pub fn parse(text: &str, file_name: &str) -> Result<LoadedConfig, Error> {
        Config::parse_with(text, file_name, &LoadOptions::default())
    }

    /// [`Config::parse`] with options.
    pub fn parse_with(text: &str, file_name: &str, opts: &LoadOptions) -> Result<LoadedConfig, Error> {
        let mut warnings = Vec::new();
        let raw: RawConfig = parse_yaml::<Option<RawConfig>>(text, file_name)?.unwrap_or_default();
        let dir = base_dir(file_name);
        let mut cfg = Config {
            global: raw.global,
            runtime: raw.runtime,
            alerting: raw.alerting,
            rule_files: Vec::new(),
            scrape_config_files: Vec::new(),
            scrape_configs: Vec::new(),
            storage: raw.storage,
            tracing: raw.tracing,
            remote_write: Vec::new(),
            remote_read: Vec::new(),
            otlp: raw.otlp,
        };
        let at = |s: &serde_saphyr::Location, msg: String| located_error(text, file_name, s, msg);

        // external labels: environment expansion
        let env_lookup = |name: &str| -> Option<String> {
            match &opts.env {
                Some(m) => m.get(name).cloned(),
                None => std::env::var(name).ok(),
            }
        };
        let mut expanded = Vec::new();
        for l in &cfg.global.external_labels {
            let v = expand_env(&l.value, &env_lookup, &mut |name| {
                warnings.push(format!(
                    "global.external_labels.{}: environment variable {name:?} is empty or not set; it expands to \"\"",
                    l.name
                ))
            });
            expanded.push((l.name.clone(), v));
        }
        cfg.global.external_labels = Labels::from_pairs(expanded);

        for rf in raw.rule_files {
            if !valid_glob_path(&rf.value) {
                return Err(at(&rf.referenced, format!("invalid rule file path {:?}", rf.value)));
            }
            cfg.rule_files.push(join_dir(&dir, &rf.value));
        }
        for sf in &raw.scrape_config_files {
            if !valid_glob_path(&sf.value) {
                return Err(at(&sf.referenced, format!("invalid scrape config file path {:?}", sf.value)));
            }
            cfg.scrape_config_files.push(join_dir(&dir, &sf.value));
        }

        // scrape configs: inherit from global, unique job names
        let mut jobs: BTreeMap<String, String> = BTreeMap::new();
        for mut sc in raw.scrape_configs {
            sc.value.apply_global(&cfg.global).map_err(|m| at(&sc.referenced, m))?;
            if jobs.insert(sc.value.job_name.clone(), file_name.to_string()).is_some() {
                return Err(at(
                    &sc.referenced,
                    format!("found multiple scrape configs with job name {:?}", sc.value.job_name),
                ));
            }
            sc.value.resolve_paths(&dir);
            cfg.scrape_configs.push(sc.value);
        }
        for pattern in cfg.scrape_config_files.clone() {
            for file in glob(&pattern)? {
                let bytes = std::fs::read(&file)
                    .map_err(|source| Error::Io { path: PathBuf::from(&file), source })?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| Error::config(&file, None, None, "the file is not valid UTF-8"))?;
                let extra: RawScrapeConfigs =
                    parse_yaml::<Option<RawScrapeConfigs>>(&text, &file)?.unwrap_or_default();
                let sub_dir = base_dir(&file);
                for mut sc in extra.scrape_configs {
                    let here = |m: String| located_error(&text, &file, &sc.referenced, m);
                    sc.value.apply_global(&cfg.global).map_err(here)?;
                    if let Some(first) = jobs.get(&sc.value.job_name) {
                        return Err(here(format!(
                            "found multiple scrape configs with job name {:?}, first found in {first}",
                            sc.value.job_name
                        )));
                    }
                    jobs.insert(sc.value.job_name.clone(), file.clone());
                    sc.value.resolve_paths(&sub_dir);
                    cfg.scrape_configs.push(sc.value);
                }
            }
        }

        // relabel rules outside scrape configs follow the global name validation scheme
        let scheme = cfg.global.metric_name_validation_scheme;
        let mut relabels: Vec<&mut RelabelConfig> = cfg.alerting.alert_relabel_configs.iter_mut().collect();
        for am in &mut cfg.alerting.alertmanagers {
            relabels.extend(am.relabel_configs.iter_mut());
            relabels.extend(am.alert_relabel_configs.iter_mut());
        }
        for rc in relabels {
            rc.name_validation_scheme = scheme;
            rc.validate().map_err(|e| Error::config(file_name, None, None, format!("alerting: {e}")))?;
        }
        for am in &mut cfg.alerting.alertmanagers {
            am.resolve_sd_paths(&dir);
            am.resolve_http_paths(&dir);
        }

        let mut names = BTreeSet::new();
        for mut rw in raw.remote_write {
            if !rw.value.name.is_empty() && !names.insert(rw.value.name.clone()) {
                return Err(at(
                    &rw.referenced,
                    format!("found multiple remote write configs with job name {:?}", rw.value.name),
                ));
            }
            for rc in &mut rw.value.write_relabel_configs {
                rc.name_validation_scheme = scheme;
                rc.validate().map_err(|e| at(&rw.referenced, e.to_string()))?;
            }
            rw.value.resolve_http_paths(&dir);
            cfg.remote_write.push(rw.value);
        }
        let mut names = BTreeSet::new();
        for mut rr in raw.remote_read {
            if !rr.value.name.is_empty() && !names.insert(rr.value.name.clone()) {
                return Err(at(
                    &rr.referenced,
                    format!("found multiple remote read configs with job name {:?}", rr.value.name),
                ));
            }
            rr.value.resolve_http_paths(&dir);
            cfg.remote_read.push(rr.value);
        }

        if let Some(t) = &mut cfg.tracing {
            let mut h =
                crate::http::HttpClientConfig { tls_config: t.tls_config.clone(), ..Default::default() };
            h.resolve_paths(&dir);
            t.tls_config = h.tls_config;
        }
        for f in
            [&mut cfg.global.query_log_file, &mut cfg.global.scrape_failure_log_file].into_iter().flatten()
        {
            *f = join_dir(&dir, f);
        }

        if scheme == NameValidationScheme::Legacy
            && matches!(
                cfg.otlp.translation_strategy.as_str(),
                "NoTranslation" | "NoUTF8EscapingWithSuffixes"
            )
        {
            return Err(Error::config(
                file_name,
                None,
                None,
                format!(
                    "OTLP translation strategy {:?} is not allowed when UTF8 is disabled",
                    cfg.otlp.translation_strategy
                ),
            ));
        }

        cfg.collect_warnings(&opts.features, &mut warnings);
        Ok(LoadedConfig { config: cfg, warnings, source: text.to_string() })
    }

    fn collect_warnings(&self, f: &Features, out: &mut Vec<String>) {
        if !self.rule_files.is_empty() && !f.rules {
            out.push(
                "rule_files: not implemented yet; recording and alerting rules are not evaluated".into(),
            );
        }
        for sc in &self.scrape_configs {
            // scrape settings the scrape loop does not honour yet
            let unhonoured: [(&str, bool); 10] = [
                ("oauth2", sc.oauth2.is_some()),
                ("proxy_url", sc.proxy_url.is_some()),
                ("proxy_from_environment", sc.proxy_from_environment),
                ("follow_redirects", !sc.follow_redirects),
                ("target_limit", sc.target_limit != 0),
                ("keep_dropped_targets", sc.keep_dropped_targets != 0),
                ("track_timestamps_staleness", sc.track_timestamps_staleness),
                ("enable_compression", !sc.enable_compression),
                ("scrape_native_histograms", sc.scrape_native_histograms == Some(true)),
                ("native_histogram_bucket_limit", sc.native_histogram_bucket_limit != 0),
            ];
            for (key, set) in unhonoured {
                if set {
                    out.push(format!(
                        "scrape_configs[job={:?}].{key}: not implemented yet; ignored",
                        sc.job_name
                    ));
                }
            }
            for (key, _) in sc.service_discoveries() {
                if !f.service_discoveries.contains(key) {
                    out.push(format!(
                        "scrape_configs[job={:?}].{key}: not implemented yet; targets from it are not scraped",
                        sc.job_name
                    ));
                }
            }
        }
        // Prometheus's stock prometheus.yml has an alertmanager entry with no targets: only
        // warn when some Alertmanager could actually be discovered.
        let has_alertmanagers = self.alerting.alertmanagers.iter().any(|am| {
            am.service_discoveries().iter().any(|(k, _)| {
                *k != "static_configs" || am.static_configs.iter().any(|s| !s.targets.is_empty())
            })
        });
        if has_alertmanagers {
            if f.alertmanagers {
                for (i, am) in self.alerting.alertmanagers.iter().enumerate() {
                    for (key, _) in am.service_discoveries() {
                        if !f.service_discoveries.contains(key) {
                            out.push(format!(
                                "alerting.alertmanagers[{i}].{key}: not implemented yet; Alertmanagers from it are not used"
                            ));
                        }
                    }
                }
            } else {
                out.push(
                    "alerting.alertmanagers: not implemented yet; alerts are not sent to Alertmanager".into(),
                );
            }
        }
        if !self.remote_write.is_empty() && !f.remote_write {
            out.push(format!(
                "remote_write: not implemented yet; nothing is sent to the {} configured endpoint(s)",
                self.remote_write.len()
            ));
        }
        if !self.remote_read.is_empty() && !f.remote_read {
            out.push(format!(
                "remote_read: not implemented yet; the {} configured endpoint(s) are not queried",
                self.remote_read.len()
            ));
        }
        // out_of_order_time_window is implemented; the rest of storage.tsdb is not
        let implemented = TsdbConfig {
            out_of_order_time_window: self.storage.tsdb.out_of_order_time_window,
            ..TsdbConfig::default()
        };
        if self.storage.tsdb != implemented && !f.tsdb {
            out.push(
                "storage.tsdb: only out_of_order_time_window is implemented; the other settings are ignored"
                    .into(),
            );
        }
        if self.storage.exemplars != ExemplarsConfig::default() && !f.exemplars {
            out.push("storage.exemplars: not implemented yet; this setting is ignored".into());
        }
        if self.tracing.is_some() && !f.tracing {
            out.push("tracing: not implemented yet; no traces are exported".into());
        }
        if self.otlp != OtlpConfig::default() && !f.otlp {
            out.push("otlp: not implemented yet; these settings are ignored".into());
        }
        if self.runtime.is_some() {
            out.push("runtime: Go runtime settings do not apply to promflow; ignored".into());
        }
    }

    /// The configuration as YAML with defaults filled in and secrets shown as `<secret>`,
    /// the way Prometheus's `/api/v1/status/config` shows it.
    pub fn to_redacted_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }

    /// Every rule file matched by `rule_files`, in pattern order, each pattern's matches
    /// sorted, without duplicates (what Prometheus's rule manager loads).
    pub fn rule_file_paths(&self) -> Result<Vec<String>, Error> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for pattern in &self.rule_files {
            for f in glob(pattern)? {
                if seen.insert(f.clone()) {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }

    /// The scrape config of `job_name`.
    pub fn scrape_config(&self, job_name: &str) -> Option<&ScrapeConfig> {
        self.scrape_configs.iter().find(|s| s.job_name == job_name)
    }
}

/// An error at a known position, prefixed with the path of the section there.
fn located_error(text: &str, file: &str, loc: &serde_saphyr::Location, msg: String) -> Error {
    if loc.line() == 0 {
        return Error::config(file, None, None, msg);
    }
    let (line, col) = (loc.line() as usize, loc.column() as usize);
    let path = crate::yaml::path_at(text, line, col);
    let msg = if path.is_empty() { msg } else { format!("{path}: {msg}") };
    Error::config(file, Some(line), Some(col), msg)
}

pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T, Error> {
    let opts = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options::<T>(text, opts).map_err(|e| convert_error(&e, text, file))
}

/// `patRulePath`: `^[^*]*(\*[^/]*)?$` (a `*` only in the last path element).
fn valid_glob_path(p: &str) -> bool {
    match p.find('*') {
        None => true,
        Some(i) => !p[i + 1..].contains(['*', '/']),
    }
}

/// The directory of a configuration file, for resolving relative paths.
pub(crate) fn base_dir(file: &str) -> PathBuf {
    match Path::new(file).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Prometheus's `config.JoinDir`: a relative `path` is joined with `dir` and cleaned; empty
/// and absolute paths are returned unchanged.
pub(crate) fn join_dir(dir: &Path, path: &str) -> String {
    if path.is_empty() || Path::new(path).is_absolute() {
        return path.to_string();
    }
    clean_path(&format!("{}/{path}", dir.display()))
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Go's `os.Expand` with Prometheus's mapping: `$$` is `$`, unknown or empty variables
/// expand to "" (reported through `missing`).
pub(crate) fn expand_env(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    missing: &mut dyn FnMut(&str),
) -> String {
    let b = s.as_bytes();
    if !b.contains(&b'$') {
        return s.to_string();
    }
    let special = |c: u8| b"*#$@!?-0123456789".contains(&c);
    let alnum = |c: u8| c == b'_' || c.is_ascii_alphanumeric();
    let mut out = String::new();
    let mut i = 0; // start of pending literal text
    let mut j = 0;
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            out.push_str(&s[i..j]);
            let rest = &b[j + 1..];
            // (name, width): name empty + width > 0 = bad syntax, eaten
            let (name, w): (&str, usize) = if rest[0] == b'{' {
                if rest.len() > 2 && special(rest[1]) && rest[2] == b'}' {
                    (&s[j + 2..j + 3], 3)
                } else {
                    match rest.iter().skip(1).position(|&c| c == b'}') {
                        Some(0) => ("", 2),
                        Some(k) => (&s[j + 2..j + 2 + k], k + 2),
                        None => ("", 1),
                    }
                }
            } else if special(rest[0]) {
                (&s[j + 1..j + 2], 1)
            } else {
                let k = rest.iter().take_while(|&&c| alnum(c)).count();
                (&s[j + 1..j + 1 + k], k)
            };
            if name.is_empty() && w == 0 {
                out.push('$');
            } else if !name.is_empty() {
                if name == "$" {
                    out.push('$');
                } else {
                    match lookup(name) {
                        Some(v) if !v.is_empty() => out.push_str(&v),
                        _ => missing(name),
                    }
                }
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    if i <= s.len() {
        out.push_str(&s[i.min(s.len())..]);
    }
    out
}

/// Go's `filepath.Glob` for the patterns Prometheus accepts in `rule_files` and
/// `scrape_config_files`: `*`, `?` and `[…]` in the last path element. A pattern without
/// wildcards yields the path itself if it exists. Results are sorted.
pub fn glob(pattern: &str) -> Result<Vec<String>, Error> {
    let has_meta = |s: &str| s.contains(['*', '?', '[']);
    if !has_meta(pattern) {
        return Ok(if Path::new(pattern).exists() { vec![pattern.to_string()] } else { Vec::new() });
    }
    let (dir, file_pat) = match pattern.rfind('/') {
        Some(0) => ("/", &pattern[1..]),
        Some(i) => (&pattern[..i], &pattern[i + 1..]),
        None => ("", pattern),
    };
    let re = glob_regex(file_pat)
        .ok_or_else(|| Error::config(pattern, None, None, format!("syntax error in pattern {pattern:?}")))?;
    let read_dir = if dir.is_empty() { "." } else { dir };
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(read_dir) {
        Ok(e) => e,
        Err(_) => return Ok(out),
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if re.is_match(name) {
            out.push(if dir.is_empty() {
                name.to_string()
            } else if dir.ends_with('/') {
                format!("{dir}{name}")
            } else {
                format!("{dir}/{name}")
            });
        }
    }
    out.sort();
    Ok(out)
}

/// Translates a Go `filepath.Match` pattern for one path element into an anchored regex.
fn glob_regex(pat: &str) -> Option<regex::Regex> {
    let mut re = String::from("^");
    let mut chars = pat.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '\\' => re.push_str(&regex::escape(&chars.next()?.to_string())),
            '[' => {
                re.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    re.push('^');
                }
                let mut closed = false;
                let mut first = true;
                while let Some(c) = chars.next() {
                    match c {
                        ']' if !first => {
                            closed = true;
                            break;
                        }
                        '\\' => re.push_str(&regex::escape(&chars.next()?.to_string())),
                        '-' => re.push('-'),
                        c => re.push_str(&regex::escape(&c.to_string())),
                    }
                    first = false;
                }
                if !closed {
                    return None;
                }
                re.push(']');
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("./rules.yml"), "rules.yml");
        assert_eq!(clean_path("/etc/prometheus/../x"), "/etc/x");
        assert_eq!(clean_path("a//b/./c/.."), "a/b");
        assert_eq!(clean_path("../a"), "../a");
        assert_eq!(clean_path("/.."), "/");
        assert_eq!(join_dir(Path::new("."), "rules/*.yml"), "rules/*.yml");
        assert_eq!(join_dir(Path::new("/etc/prom"), "rules/*.yml"), "/etc/prom/rules/*.yml");
        assert_eq!(join_dir(Path::new("/etc/prom"), "/abs.yml"), "/abs.yml");
        assert_eq!(join_dir(Path::new("/etc/prom"), ""), "");
    }

    #[test]
    fn env_expansion() {
        let env: BTreeMap<String, String> =
            [("REGION", "eu-1"), ("EMPTY", "")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let lookup = |n: &str| env.get(n).cloned();
        let run = |s: &str| {
            let mut missing = Vec::new();
            let out = expand_env(s, &lookup, &mut |n| missing.push(n.to_string()));
            (out, missing)
        };
        assert_eq!(run("plain").0, "plain");
        assert_eq!(run("${REGION}").0, "eu-1");
        assert_eq!(run("x-$REGION-y").0, "x-eu-1-y");
        assert_eq!(run("$$REGION").0, "$REGION");
        assert_eq!(run("cost$"), ("cost$".to_string(), vec![]));
        assert_eq!(run("${NOPE}x"), ("x".to_string(), vec!["NOPE".to_string()]));
        assert_eq!(run("$EMPTY").1, vec!["EMPTY".to_string()]);
        assert_eq!(run("a${}b").0, "ab");
        assert_eq!(run("a${b").0, "ab");
        assert_eq!(run("$-x").0, "x");
        assert_eq!(run("100$ %").0, "100$ %");
    }

    #[test]
    fn glob_patterns() {
        let re = glob_regex("*.yml").unwrap();
        assert!(re.is_match("a.yml"));
        assert!(!re.is_match("a.yaml"));
        let re = glob_regex("rules-[0-9]?.y*").unwrap();
        assert!(re.is_match("rules-1a.yaml"));
        assert!(glob_regex("[abc").is_none());
        assert!(valid_glob_path("rules/*.yml"));
        assert!(!valid_glob_path("rules/*/x.yml"));
    }

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
