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

#[test]
fn failures_are_reported_like_promtool() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules-unit");
    let out = Command::new(env!("CARGO_BIN_EXE_promflow"))
        .args(["test", "rules", "03-fail-wrong-annotation.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("Unit Testing:  03-fail-wrong-annotation.yml"), "{stdout}");
    assert!(
        stderr.contains("  FAILED:") && stderr.contains("alertname: InstanceDown, time: 8m0s"),
        "{stderr}"
    );
    assert!(stderr.contains("summary=\"Instance a:9100 down\""), "{stderr}");

    // a value that differs only in its last bits is pointed at as such
    let out = Command::new(env!("CARGO_BIN_EXE_promflow"))
        .args(["test", "rules", "23-fail-last-bits.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("differ only in their last bits") && stderr.contains("docs/promql-compat.md"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_promflow"))
        .args(["test", "rules", "05-fail-recording-value.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("last bits"),
        "a real difference is not called one of last bits"
    );
}
