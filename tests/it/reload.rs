//! End-to-end: configuration reload by SIGHUP and `/-/reload`; a broken file is refused and
//! the running configuration keeps working.

use crate::common;

use std::time::Duration;

use common::*;

fn reload_ok(s: &Server) -> Option<String> {
    let (_, m) = s.get_text("/metrics");
    m.lines().find(|l| l.starts_with("prometheus_config_last_reload_successful ")).map(|l| l.to_string())
}

#[test]
fn broken_config_is_refused_and_old_one_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let good = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 500ms\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, &good).unwrap();
    let s = start_promflow_with(dir.path(), &cfg, port, &["--web.enable-lifecycle"]);
    assert_eq!(reload_ok(&s).unwrap(), "prometheus_config_last_reload_successful 1");

    // unknown field: refused over HTTP with the reason
    std::fs::write(&cfg, good.replace("scrape_interval: 1s", "scrape_intervall: 1s")).unwrap();
    let r = client().post(s.url("/-/reload")).send().unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let body = r.text().unwrap();
    assert!(body.contains("scrape_intervall"), "{body}");
    assert_eq!(reload_ok(&s).unwrap(), "prometheus_config_last_reload_successful 0");
    // the old config still scrapes
    let up = wait_for(Duration::from_secs(10), || {
        let (_, v) = s.get_json("/api/v1/query?query=up%7Bjob%3D%22self%22%7D");
        result(&v).first().map(|x| x["value"][1].clone())
    });
    assert_eq!(up.unwrap(), "1");

    // SIGHUP with a good config that adds a job
    std::fs::write(&cfg, good.replace("job_name: self", "job_name: myself")).unwrap();
    s.signal("HUP");
    let reloaded = wait_for(Duration::from_secs(10), || {
        (reload_ok(&s).as_deref() == Some("prometheus_config_last_reload_successful 1")).then_some(())
    });
    assert!(reloaded.is_some(), "{}", s.logs());
    let (_, v) = s.get_json("/api/v1/status/config");
    assert!(v["data"]["yaml"].as_str().unwrap().contains("myself"), "{v}");
    // the removed job's target wrote staleness markers: its `up` is gone at once
    let gone = wait_for(Duration::from_secs(10), || {
        let (_, v) = s.get_json("/api/v1/query?query=up%7Bjob%3D%22self%22%7D");
        result(&v).is_empty().then_some(())
    });
    assert!(gone.is_some(), "series of a removed target are marked stale");

    // lifecycle GET is refused
    assert_eq!(client().get(s.url("/-/reload")).send().unwrap().status().as_u16(), 405);
}

#[test]
fn invalid_config_at_start_is_an_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1s\nscrape_configz: []\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promflow"))
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scrape_configz") && err.contains("bad.yml"), "{err}");
}

#[test]
fn route_prefix_moves_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, "").unwrap();
    let log = dir.path().join("log");
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_promflow"))
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.external-url=http://example.test:9090/prom/")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut s = Server { child, port, base: format!("http://127.0.0.1:{port}"), log };
    let ready = wait_for(Duration::from_secs(20), || {
        client().get(s.url("/prom/-/ready")).send().ok().filter(|r| r.status().is_success())
    });
    assert!(ready.is_some(), "{}", s.logs());
    let (code, v) = s.get_json("/prom/api/v1/query?query=1");
    assert_eq!(code, 200, "{v}");
    assert_eq!(s.get_text("/api/v1/query?query=1").0, 404);
    s.kill9();
}

#[test]
fn flags_like_prometheus() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promflow")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for f in [
        "--config.file",
        "--storage.tsdb.path",
        "--web.listen-address",
        "--query.lookback-delta",
        "--enable-feature",
    ] {
        assert!(help.contains(f), "{f} missing from --help");
    }
    for sub in ["promflow check config", "promflow test rules", "promflow tsdb", "promflow subscribe"] {
        assert!(help.contains(sub), "{sub} missing from --help");
    }
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_promflow")).args(args).output().unwrap()
    };
    let out = run(&["help"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout) == help, "promflow help");
    let out = run(&["test", "rules", "--help"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("usage: promflow test rules"));
    // the layout scripts parse, as Prometheus prints it (checked against Debian's 2.42)
    let out = run(&["--version"]);
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = regex::Regex::new(r"^(\S+), version (\S+) \(branch: (\S+), revision: (\S+)\)$").unwrap();
    let layout = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        let keys: Vec<String> =
            lines[1..].iter().filter_map(|l| l.split_once(':')).map(|(k, _)| k.trim().to_string()).collect();
        (
            first.is_match(lines[0]),
            keys.contains(&"build user".into()),
            keys.contains(&"build date".into()),
            keys.contains(&"platform".into()),
        )
    };
    assert_eq!(layout(&version), (true, true, true, true), "{version}");
    assert!(version.starts_with(&format!("promflow, version {} ", env!("CARGO_PKG_VERSION"))), "{version}");
    if let Some(prometheus) = common::peer("prometheus") {
        let theirs = std::process::Command::new(prometheus).arg("--version").output().unwrap();
        // Prometheus 2.42 prints it on stderr
        let theirs =
            String::from_utf8_lossy(if theirs.stdout.is_empty() { &theirs.stderr } else { &theirs.stdout })
                .into_owned();
        assert_eq!(layout(&theirs), layout(&version), "Prometheus: {theirs}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promflow"))
        .arg("--web.enable-lifecycle=maybe")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promflow"))
        .arg("--storage.tsdb.retentionn=1d")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("retentionn"));
}
