//! promflow-config: `prometheus.yml`, read the way Prometheus 3 reads it.
//!
//! * [`Config::load_file`] / [`Config::parse`] parse YAML (YAML 1.1 booleans such as `yes`,
//!   merge keys, duplicate keys rejected), reject unknown fields and invalid values with
//!   `file:line:column: message` errors that name the field path, apply Prometheus's defaults
//!   and inheritance (`global` → scrape configs), resolve relative paths against the config
//!   file's directory, and return warnings for what is accepted but not implemented.
//! * [`relabel::process`] applies relabel rules with Prometheus's exact semantics.
//! * [`parse_duration`]/[`format_duration`] and [`parse_size`]/[`format_size`] handle
//!   Prometheus's duration and size syntax.
//! * [`Config::to_redacted_yaml`] renders the configuration as `/api/v1/status/config` does.
//!
//! # Compatibility notes
//!
//! * Relabel regexes are anchored as `^(?s:<regex>)$`, as Prometheus 3's
//!   `model/relabel.NewRegexp` does (2.x used `^(?:<regex>)$`), and translated from Go's RE2
//!   dialect by [`promflow_storage::re2::compile_anchored`].
//! * Error messages use Prometheus's wording where it has one, prefixed with
//!   `file:line:column:` and the path of the section (`scrape_configs[2].relabel_configs[0]`).
//! * Service discoveries other than static, file, HTTP, DNS, Consul and Kubernetes are accepted
//!   as [`UntypedConfig`] (any mapping). Which ones produce "not implemented yet" warnings is
//!   decided by [`Features`] (default: static, file and HTTP are implemented).
//! * A legacy `bearer_token`/`bearer_token_file` is folded into `authorization`, as
//!   Prometheus does; consumers only need to look at `basic_auth`, `authorization` and
//!   `oauth2`.
//! * `scrape_config_files` are loaded and their jobs appended to `scrape_configs`.
#![warn(missing_docs)]

#[macro_use]
mod macros;

mod client;
pub mod cluster_secret;
mod config;
pub mod duration;
mod error;
pub mod http;
mod md5;
pub mod relabel;
pub mod rules;
pub mod sd;
pub mod web;
mod yaml;

pub use config::{
    clean_path, glob, AlertingConfig, AlertmanagerConfig, ChunkEncodingConfig, Config, ExemplarsConfig,
    Features, GlobalConfig, LoadOptions, LoadedConfig, MetadataConfig, OtlpConfig, QueueConfig,
    RemoteReadConfig, RemoteWriteConfig, RuntimeConfig, ScrapeConfig, ScrapeProtocol, StorageConfig,
    TracingConfig, TsdbConfig, TsdbRetentionConfig,
};
pub use duration::{format_duration, format_size, parse_duration, parse_size};
pub use error::Error;
pub use http::{Authorization, BasicAuth, HttpClientConfig, HttpHeader, OAuth2, TlsConfig, TlsVersion};
pub use relabel::{Action, NameValidationScheme, RelabelConfig};
pub use sd::{
    ConsulSdConfig, DnsSdConfig, FileSdConfig, HttpSdConfig, KubernetesAttachMetadata, KubernetesNamespaces,
    KubernetesSdConfig, KubernetesSelector, StaticConfig,
};
pub use yaml::{UntypedConfig, YamlValue};

/// Expands `pattern` (a `*`, `?` or `[…]` glob in the last path component only, as
/// Prometheus allows: file SD, rule files) into existing files, sorted ([`glob`]); a pattern
/// without a glob is returned as it is, whether or not the file exists, so that a missing
/// file is reported by whoever reads it.
pub fn expand_glob(pattern: &str) -> Vec<String> {
    if !pattern.contains(['*', '?', '[']) {
        return vec![pattern.to_string()];
    }
    glob(pattern).unwrap_or_default()
}
