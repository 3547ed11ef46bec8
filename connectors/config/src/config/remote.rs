//! `remote_write` and `remote_read`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{is_false, is_zero_duration};
use crate::relabel::RelabelConfig;
use crate::yaml::Validate;
use crate::UntypedConfig;

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
pub(super) const REMOTE_RESERVED_HEADERS: &[&str] = &[
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
