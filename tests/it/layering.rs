//! The architecture's dependency rules, checked from `cargo metadata`: the engine's crates are
//! layered and know neither query language nor HTTP; the plan IR, the kernels and the batch
//! executor need no dataflow runtime; the front ends reach the engine through the plan IR;
//! storage depends on no other promflow crate.

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

/// The engine's crates, lowest first: each may depend only on crates before it in this list
/// (and on storage), never on a front end, a connector or HTTP.
const ENGINE_LAYERS: [&str; 6] = [
    "promflow-plan",
    "promflow-kernels",
    "promflow-template",
    "promflow-batch",
    "promflow-incremental",
    "promflow-rules",
];

#[test]
fn each_engine_crate_depends_only_on_lower_layers_and_knows_no_query_language_and_no_http() {
    let meta = metadata();
    for (i, krate) in ENGINE_LAYERS.iter().enumerate() {
        let deps = closure(&meta, krate);
        for d in deps.iter().filter(|d| d.starts_with("promflow")) {
            assert!(
                d == "promflow-storage" || ENGINE_LAYERS[..i].contains(&d.as_str()),
                "{krate} must not depend on {d}: only on storage and the engine crates below it"
            );
        }
        for forbidden in ["promql-parser", "sqlparser", "axum", "hyper"] {
            assert!(!deps.contains(forbidden), "{krate} must not depend on {forbidden}");
        }
    }
}

#[test]
fn the_plan_ir_the_kernels_and_the_batch_executor_run_without_a_dataflow_or_an_async_runtime() {
    let meta = metadata();
    for krate in ["promflow-plan", "promflow-kernels", "promflow-batch"] {
        let deps = closure(&meta, krate);
        for forbidden in ["timely", "differential-dataflow", "tokio"] {
            assert!(!deps.contains(forbidden), "{krate} must not depend on {forbidden}");
        }
    }
}

#[test]
fn the_front_ends_compile_to_the_plan_ir_without_the_incremental_executor() {
    let meta = metadata();
    for krate in ["promflow-promql", "promflow-sql"] {
        let deps = closure(&meta, krate);
        assert!(deps.contains("promflow-plan"), "{krate} compiles to the plan IR");
        for forbidden in ["timely", "differential-dataflow", "promflow-incremental", "promflow-rules"] {
            assert!(!deps.contains(forbidden), "{krate} must not depend on {forbidden}");
        }
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
