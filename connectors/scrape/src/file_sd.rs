//! File-based service discovery: JSON or YAML files of target groups, with `*` globs in the
//! file name, re-read on every refresh.

use std::collections::BTreeMap;

use promflow_storage::Labels;
use serde::Deserialize;

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
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
                    for g in groups {
                        let mut labels = Labels::from_pairs(g.labels);
                        labels.set("__meta_filepath", &file);
                        out.push((g.targets, labels));
                    }
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
