//! The `prometheus.yml` model: [`Config`] and its sections, loading and validation.
//!
//! One file per section: `global.rs`, `scrape.rs`, `alerting.rs`, `remote.rs`, `storage.rs`
//! (storage, tracing, OTLP, runtime); paths and globs in `paths.rs`; the whole file and its
//! loading here.

mod alerting;
mod global;
mod paths;
mod remote;
mod scrape;
mod storage;

pub use alerting::{AlertingConfig, AlertmanagerConfig};
pub use global::GlobalConfig;
use paths::valid_glob_path;
pub(crate) use paths::{base_dir, join_dir};
pub use paths::{clean_path, glob};
pub use remote::{MetadataConfig, QueueConfig, RemoteReadConfig, RemoteWriteConfig};
pub use scrape::{ScrapeConfig, ScrapeProtocol};
pub use storage::{
    ChunkEncodingConfig, ExemplarsConfig, OtlpConfig, RuntimeConfig, StorageConfig, TracingConfig,
    TsdbConfig, TsdbRetentionConfig,
};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use promflow_storage::Labels;
use serde::Serialize;
use serde_saphyr::Spanned;

use crate::relabel::{NameValidationScheme, RelabelConfig};
use crate::yaml::{convert_error, Validate};
use crate::Error;

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
    /// `global.query_log_file` is written.
    pub query_log: bool,
    /// `scrape_failure_log_file` (global or per job) is written.
    pub scrape_failure_log: bool,
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
            query_log: false,
            scrape_failure_log: false,
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
    /// `--enable-feature=native-histograms`, as in Prometheus 3: the global
    /// `scrape_native_histograms` is on, so every job that does not say otherwise scrapes
    /// native histograms.
    pub native_histograms: bool,
    /// `--enable-feature=st-storage` or `created-timestamp-zero-ingestion`, as in Prometheus:
    /// the default `scrape_protocols` offer the protobuf format first, the one that carries
    /// created timestamps most cheaply.
    pub proto_first: bool,
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
        cfg.global.scrape_native_histograms |= opts.native_histograms;
        if opts.proto_first && cfg.global.scrape_protocols.is_empty() {
            cfg.global.scrape_protocols = ScrapeProtocol::PROTO_FIRST.to_vec();
        }
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
        if self.global.query_log_file.is_some() && !f.query_log {
            out.push("global.query_log_file: not implemented yet; queries are not logged".into());
        }
        if !f.scrape_failure_log {
            for sc in self.scrape_configs.iter().filter(|sc| sc.scrape_failure_log_file.is_some()) {
                out.push(format!(
                    "scrape_configs[job={:?}].scrape_failure_log_file: not implemented yet; scrape failures show in the targets' lastError and promflow's log only",
                    sc.job_name
                ));
            }
        }
        if !self.rule_files.is_empty() && !f.rules {
            out.push(
                "rule_files: not implemented yet; recording and alerting rules are not evaluated".into(),
            );
        }
        for sc in &self.scrape_configs {
            // scrape settings the scrape loop does not honour yet
            let unhonoured: [(&str, bool); 7] = [
                ("oauth2", sc.oauth2.is_some()),
                ("proxy_url", sc.proxy_url.is_some()),
                ("proxy_from_environment", sc.proxy_from_environment),
                ("follow_redirects", !sc.follow_redirects),
                ("keep_dropped_targets", sc.keep_dropped_targets != 0),
                ("track_timestamps_staleness", sc.track_timestamps_staleness),
                ("enable_compression", !sc.enable_compression),
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
        // out_of_order_time_window and stale_series_compaction_threshold are implemented; the
        // rest of storage.tsdb is not
        let implemented = TsdbConfig {
            out_of_order_time_window: self.storage.tsdb.out_of_order_time_window,
            stale_series_compaction_threshold: self.storage.tsdb.stale_series_compaction_threshold,
            ..TsdbConfig::default()
        };
        if self.storage.tsdb != implemented && !f.tsdb {
            out.push(
                "storage.tsdb: only out_of_order_time_window and stale_series_compaction_threshold are implemented; the other settings are ignored"
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
