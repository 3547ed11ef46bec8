//! Bundles the web UI (`ui/`: its sources and the npm packages its lock file names) into
//! `OUT_DIR/ui/app.js` and `app.css`, which the server embeds. The packages are installed
//! with `npm ci` into `OUT_DIR` (not the source tree), again only when the lock file changes;
//! esbuild, one of them, bundles and minifies.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // only the binary needs the bundle: the library's own builds and tests need no npm
    if std::env::var_os("CARGO_FEATURE_UI").is_none() {
        return;
    }
    let ui =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("ui");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for input in ["package.json", "package-lock.json", "src"] {
        println!("cargo:rerun-if-changed=ui/{input}");
    }
    let packages = out.join("npm");
    install(&ui, &packages);
    let bundle = out.join("ui");
    let esbuild = packages.join("node_modules/.bin/esbuild");
    run(
        Command::new(&esbuild)
            .current_dir(&ui)
            .env("NODE_PATH", packages.join("node_modules"))
            .args([
                "src/main.js",
                "--bundle",
                "--minify",
                "--target=es2020",
                "--format=iife",
                "--log-level=warning",
            ])
            .arg("--entry-names=app")
            .arg(format!("--outdir={}", bundle.display())),
        "bundling the web UI with esbuild",
    );
}

/// `npm ci` of `ui`'s lock file into `dir`, unless that lock file was installed there already.
fn install(ui: &Path, dir: &Path) {
    let lock = std::fs::read(ui.join("package-lock.json")).expect("ui/package-lock.json is readable");
    // written once an install has succeeded: an interrupted one is done again
    let stamp = dir.join(".installed");
    if std::fs::read(&stamp).ok().as_deref() == Some(&lock[..]) {
        return;
    }
    std::fs::create_dir_all(dir).expect("OUT_DIR is writable");
    let _ = std::fs::remove_file(&stamp);
    std::fs::copy(ui.join("package.json"), dir.join("package.json")).expect("ui/package.json is readable");
    std::fs::write(dir.join("package-lock.json"), &lock).expect("OUT_DIR is writable");
    run(
        Command::new("npm").current_dir(dir).args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]),
        "installing the web UI's npm packages (npm ci)",
    );
    std::fs::write(&stamp, &lock).expect("OUT_DIR is writable");
}

fn run(command: &mut Command, what: &str) {
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{what} failed ({status}); see the output above"),
        Err(e) => panic!(
            "{what}: could not run {:?}: {e}. Building promflow's web UI needs Node.js 18 or later and npm \
             (Debian: apt-get install nodejs npm) and access to the npm registry",
            command.get_program()
        ),
    }
}
