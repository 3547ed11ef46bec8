//! `storage`, `tracing`, `otlp` and `runtime`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::remote::REMOTE_RESERVED_HEADERS;
use super::{is_false, is_zero_duration, is_zero_f64, is_zero_u64};
use crate::yaml::Validate;

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
        if !(0.0..=1.0).contains(&self.stale_series_compaction_threshold) {
            return Err(format!(
                "'storage.tsdb.stale_series_compaction_threshold' must be in the range [0, 1], got {}",
                self.stale_series_compaction_threshold
            ));
        }
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
