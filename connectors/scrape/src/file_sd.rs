//! File-based service discovery: JSON or YAML files of target groups, with `*` globs in the
//! file name, re-read on every refresh.

use std::collections::BTreeMap;

use promflow_storage::Labels;
use serde::Deserialize;

/// A target group as file and HTTP discovery read it: `{"targets": [...], "labels": {...}}`.
#[derive(Deserialize)]
pub(crate) struct Group {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl Group {
    /// The group's targets and labels, with `meta` (the discovery's `__meta_*` label) set to
    /// `value`.
    pub(crate) fn labelled(self, meta: &str, value: &str) -> (Vec<String>, Labels) {
        let mut labels = Labels::from_pairs(self.labels);
        labels.set(meta, value);
        (self.targets, labels)
    }
}

/// Reads every file matching `patterns`; a file that cannot be read or parsed is skipped
/// with a warning (Prometheus keeps the last good targets of such a file; promflow drops
/// them until the file is fixed — see docs/configuration.md).
pub fn read_groups(patterns: &[String]) -> Vec<(Vec<String>, Labels)> {
    let mut out = Vec::new();
    for p in patterns {
        for file in promflow_config::expand_glob(p) {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(file = %file, error = %e, "file_sd: cannot read file");
                    continue;
                }
            };
            let parsed: Result<Vec<Group>, String> = if file.ends_with(".json") {
                serde_json::from_str(&text).map_err(|e| e.to_string())
            } else {
                serde_saphyr::from_str(&text).map_err(|e| e.to_string())
            };
            match parsed {
                Ok(groups) => {
                    out.extend(groups.into_iter().map(|g| g.labelled("__meta_filepath", &file)));
                }
                Err(e) => tracing::warn!(file = %file, error = %e, "file_sd: cannot parse file"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_and_yaml_with_glob() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), r#"[{"targets":["h:1"],"labels":{"env":"prod"}}]"#)
            .unwrap();
        std::fs::write(dir.path().join("b.yml"), "- targets: ['h:2']\n").unwrap();
        let groups = read_groups(&[
            format!("{}/*.json", dir.path().display()),
            format!("{}/b.yml", dir.path().display()),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, vec!["h:1"]);
        assert_eq!(groups[0].1.get("env"), "prod");
        assert_eq!(groups[1].0, vec!["h:2"]);
    }
}
