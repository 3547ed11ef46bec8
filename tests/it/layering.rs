//! The architecture's dependency rules, checked from `cargo metadata`: the engine depends on
//! neither query-language parser nor on HTTP; storage depends on no other promflow crate.

use std::collections::{HashMap, HashSet};
use std::process::Command;

use serde_json::Value;

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every package name reachable from `root` through normal (non-dev) dependencies.
fn closure(meta: &Value, root: &str) -> HashSet<String> {
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let deps = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()))
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (n["id"].as_str().unwrap(), deps)
        })
        .collect();
    let start = names.iter().find(|(_, n)| **n == root).map(|(id, _)| *id).expect("package exists");
    let mut seen = HashSet::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        for d in nodes.get(id).into_iter().flatten() {
            if seen.insert(names[d].to_string()) {
                stack.push(d);
            }
        }
    }
    seen
}

#[test]
fn engine_knows_no_query_language_and_no_http() {
    let deps = closure(&metadata(), "promflow-engine");
    for forbidden in
        ["promql-parser", "sqlparser", "axum", "hyper", "promflow-promql", "promflow-sql", "promflow-http"]
    {
        assert!(!deps.contains(forbidden), "promflow-engine must not depend on {forbidden}");
    }
}

#[test]
fn storage_is_the_bottom_layer() {
    let deps = closure(&metadata(), "promflow-storage");
    for d in &deps {
        assert!(!d.starts_with("promflow"), "promflow-storage must not depend on {d}");
    }
    assert!(!deps.contains("promql-parser"));
}
