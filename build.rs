//! Build information for `promflow --version`, in Prometheus's layout: the git branch and
//! revision when the source is a git checkout, the build date, and the compiler's version.

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

fn main() {
    for (key, value) in [
        ("PROMFLOW_BUILD_REVISION", output("git", &["rev-parse", "HEAD"])),
        ("PROMFLOW_BUILD_BRANCH", output("git", &["rev-parse", "--abbrev-ref", "HEAD"])),
        ("PROMFLOW_BUILD_DATE", output("date", &["-u", "+%Y%m%d-%H:%M:%S"])),
        ("PROMFLOW_BUILD_USER", std::env::var("USER").ok()),
        (
            "PROMFLOW_RUSTC_VERSION",
            output(&std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()), &["--version"])
                .map(|v| v.trim_start_matches("rustc ").to_string()),
        ),
    ] {
        if let Some(v) = value {
            println!("cargo:rustc-env={key}={v}");
        }
    }
    // a new commit changes the revision; nothing else needs a rebuild of this information
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=build.rs");
}
