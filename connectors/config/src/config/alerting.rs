//! `alerting`: Alertmanagers and alert relabelling.

use std::time::Duration;

use super::scrape::check_static_targets;
use crate::relabel::RelabelConfig;
use crate::yaml::Validate;
use crate::UntypedConfig;

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
