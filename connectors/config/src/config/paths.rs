//! Paths in configuration files: Go's `filepath.Clean`, `JoinDir` and `Glob`.

use std::path::{Path, PathBuf};

use crate::Error;

/// `patRulePath`: `^[^*]*(\*[^/]*)?$` (a `*` only in the last path element).
pub(super) fn valid_glob_path(p: &str) -> bool {
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
}
