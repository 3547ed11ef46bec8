//! `promflow test rules` gives promtool 2.42's verdict on every unit-test file in
//! `tests/rules-unit/` (each file's name says whether it should pass or fail).

use crate::common;

use std::path::Path;
use std::process::Command;

fn exit_code(cmd: &mut Command) -> i32 {
    cmd.output().expect("run the unit tests").status.code().unwrap_or(-1)
}

#[test]
fn unit_test_files_get_promtools_verdicts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules-unit");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "expected at least 20 unit-test files, found {}", files.len());
    let promtool = common::peer("promtool");
    let mut wrong = Vec::new();
    for f in &files {
        let want = if f.contains("-pass-") { 0 } else { 1 };
        let ours = exit_code(
            Command::new(env!("CARGO_BIN_EXE_promflow")).args(["test", "rules", f]).current_dir(&dir),
        );
        let theirs = promtool
            .as_ref()
            .map(|p| exit_code(Command::new(p).args(["test", "rules", f]).current_dir(&dir)));
        if ours != want || theirs.is_some_and(|t| t != want) {
            wrong.push(format!("{f}: expected {want}, promflow {ours}, promtool {theirs:?}"));
        }
    }
    assert!(wrong.is_empty(), "verdicts differ:\n{}", wrong.join("\n"));
}

/// promflow's and promtool's (stdout, stderr) for a unit-test file of `tests/rules-unit/`.
fn outputs(bin: &Path, file: &str) -> (String, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules-unit");
    let out = Command::new(bin).args(["test", "rules", file]).current_dir(&dir).output().unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A failed test is reported as promtool 2.42 reports it, byte for byte on both streams
/// (scripts and CI logs read them): the eval time as `1m`, samples as `labels 3E-01`, `nil`
/// and `[]` for nothing. A YAML error's message is promflow's own, and a value that differs only
/// in its last bits gets one more line that says so.
#[test]
fn failures_are_reported_like_promtool() {
    let promflow = Path::new(env!("CARGO_BIN_EXE_promflow"));
    let (stdout, stderr) = outputs(promflow, "03-fail-wrong-annotation.yml");
    assert!(stdout.starts_with("Unit Testing:  03-fail-wrong-annotation.yml"), "{stdout}");
    assert!(
        stderr.contains("  FAILED:") && stderr.contains("alertname: InstanceDown, time: 8m, "),
        "{stderr}"
    );
    assert!(stderr.contains("summary=\"Instance a:9100 down\""), "{stderr}");
    let (_, stderr) = outputs(promflow, "05-fail-recording-value.yml");
    assert!(!stderr.contains("last bits"), "a real difference is not called one of last bits: {stderr}");

    // a value that differs only in its last bits is pointed at as such
    let (_, stderr) = outputs(promflow, "23-fail-last-bits.yml");
    let note =
        stderr.lines().find(|l| l.contains("differ only in their last bits")).unwrap_or_default().to_string();
    assert!(note.contains("docs/promql-compat.md"), "{stderr}");

    let Some(promtool) = common::peer("promtool") else { return };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules-unit");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-fail-") && !n.contains("unknown-field"))
        .collect();
    files.sort();
    for f in &files {
        let (out, err) = outputs(promflow, f);
        let err = err.replace(&format!("{note}\n"), "");
        assert_eq!((out, err), outputs(&promtool, f), "{f}: promflow's output against promtool's");
    }
}
