//! `global`: the defaults every other section inherits.

use std::time::Duration;

use promflow_storage::Labels;

use super::scrape::{validate_scrape_protocols, ScrapeProtocol, ESCAPING_SCHEMES};
use super::{is_zero_u64, zero_duration};
use crate::relabel::NameValidationScheme;
use crate::yaml::Validate;

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
