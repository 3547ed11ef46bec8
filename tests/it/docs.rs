//! The docs and the sources describe the product as it is: no narration of how it was built
//! (work sessions, issue numbers, "the issue") and no paths outside the repository.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !["node_modules", "target", "corpus", "artifacts", ".git"].contains(&name.as_str()) {
                files(&path, out);
            }
        } else if ["rs", "md", "js", "sh", "py", "toml", "yml"]
            .iter()
            .any(|e| name.ends_with(&format!(".{e}")))
        {
            out.push(path);
        }
    }
}

#[test]
fn no_narration_and_no_paths_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for dir in [
        "docs",
        "src",
        "engine",
        "storage",
        "frontends",
        "connectors",
        "benches",
        "fuzz",
        "examples",
        "tests",
    ] {
        files(&root.join(dir), &mut all);
    }
    all.push(root.join("README.md"));
    let narration =
        regex::Regex::new(r"(?i)\bsessions? [0-9]+|\bissues? #?[0-9]+\b|\bthe issue('s)?\b").unwrap();
    let absolute = regex::Regex::new(r"/work/|/root/|/home/[a-z]").unwrap();
    // the PromQL corpus lives beside the repository: code may default to it, docs do not name it
    let beside = regex::Regex::new(r"\.\./shared/").unwrap();
    let this_file = root.join("tests/it/docs.rs");
    let mut found = Vec::new();
    for path in all {
        let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if path == this_file {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for (n, line) in text.lines().enumerate() {
            let outside = absolute.is_match(line) || (relative.ends_with(".md") && beside.is_match(line));
            if narration.is_match(line) || outside {
                found.push(format!("{relative}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} lines narrate or point outside the repository:\n{}",
        found.len(),
        found.join("\n")
    );
}
