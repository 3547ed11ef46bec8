//! End-to-end: promflow scrapes itself, a real node_exporter and a broken target.

use crate::common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A target that answers every request with an HTML page (not an exposition format).
fn garbage_target() -> u16 {
    let l = listener();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in l.incoming().flatten().take(200) {
            let mut buf = [0u8; 2048];
            let _ = conn.read(&mut buf);
            let body = "<html><body>not metrics {{{</body></html>";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{}",
                body.len(),
                body
            );
        }
    });
    port
}

fn target_health(s: &Server, job: &str) -> Option<(String, String)> {
    let (_, v) = s.get_json("/api/v1/targets");
    let t = v["data"]["activeTargets"].as_array()?.iter().find(|t| t["scrapePool"] == job)?.clone();
    let health = t["health"].as_str()?.to_string();
    (health != "unknown").then(|| (health, t["lastError"].as_str().unwrap_or("").to_string()))
}

#[test]
fn scrapes_self_node_exporter_and_marks_garbage_down() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let garbage = garbage_target();
    let node = peer("prometheus-node-exporter").map(|bin| {
        let p = free_port();
        let child = Command::new(bin)
            .arg(format!("--web.listen-address=127.0.0.1:{p}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (p, child)
    });
    let mut config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n  - job_name: garbage\n    static_configs:\n      - targets: ['127.0.0.1:{garbage}']\n        labels: {{team: x}}\n"
    );
    if let Some((p, _)) = &node {
        config.push_str(&format!(
            "  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{p}']\n"
        ));
    }
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, &config).unwrap();
    let s = start_promflow_with(dir.path(), &cfg, port, &[]);

    let self_h = wait_for(Duration::from_secs(15), || target_health(&s, "self")).expect("self scraped");
    assert_eq!(self_h.0, "up", "{self_h:?}");
    let g = wait_for(Duration::from_secs(15), || target_health(&s, "garbage")).expect("garbage scraped");
    assert_eq!(g.0, "down");
    assert!(!g.1.is_empty(), "a down target reports its error");

    // `up` reflects both, with target labels
    let up = wait_for(Duration::from_secs(10), || {
        let (_, v) = s.get_json("/api/v1/query?query=up");
        let r = result(&v).clone();
        (r.len() >= 2).then_some(r)
    })
    .unwrap();
    let garbage_up = up.iter().find(|x| x["metric"]["job"] == "garbage").unwrap();
    assert_eq!(garbage_up["value"][1], "0");
    assert_eq!(garbage_up["metric"]["team"], "x");
    let self_up = up.iter().find(|x| x["metric"]["job"] == "self").unwrap();
    assert_eq!(self_up["value"][1], "1");
    assert_eq!(self_up["metric"]["instance"], format!("127.0.0.1:{port}"));

    // self-scraped series and report series are queryable
    let (_, v) = s.get_json("/api/v1/query?query=prometheus_tsdb_head_series%7Bjob%3D%22self%22%7D");
    assert_eq!(result(&v).len(), 1, "{v}");
    let (_, v) = s.get_json("/api/v1/query?query=scrape_samples_scraped%7Bjob%3D%22self%22%7D");
    let n: f64 = result(&v)[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(n > 10.0, "{n}");

    if let Some((_, mut child)) = node {
        let h = wait_for(Duration::from_secs(15), || target_health(&s, "node")).expect("node scraped");
        assert_eq!(h.0, "up", "{h:?}");
        let (_, v) = s.get_json("/api/v1/query?query=node_cpu_seconds_total");
        assert!(!result(&v).is_empty(), "node_exporter's counters are stored");
        let (_, v) = s.get_json("/api/v1/metadata?metric=node_cpu_seconds_total");
        assert_eq!(v["data"]["node_cpu_seconds_total"][0]["type"], "counter", "{v}");
        let _ = child.kill();
        let _ = child.wait();
        // the target is down now, and its series go stale: `node_cpu_seconds_total` vanishes
        let gone = wait_for(Duration::from_secs(15), || {
            let (_, v) = s.get_json("/api/v1/query?query=node_cpu_seconds_total");
            result(&v).is_empty().then_some(())
        });
        assert!(gone.is_some(), "series of a failed target are marked stale");
    }
}

/// An HTTP service discovery endpoint answering whatever `answer` holds: (status, body).
fn sd_server(answer: std::sync::Arc<std::sync::Mutex<(u16, String)>>) -> u16 {
    let l = listener();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in l.incoming().flatten().take(500) {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let (code, body) = answer.lock().unwrap().clone();
            let _ = write!(
                conn,
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            );
        }
    });
    port
}

#[test]
fn http_sd_targets_follow_the_endpoint_and_survive_its_failures() {
    let dir = tempfile::tempdir().unwrap();
    let answer = std::sync::Arc::new(std::sync::Mutex::new((200, "[]".to_string())));
    let sd = sd_server(answer.clone());
    let config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: sd\n    http_sd_configs:\n      - url: http://127.0.0.1:{sd}/targets\n        refresh_interval: 1s\n    relabel_configs:\n      - {{source_labels: [__meta_url], regex: '.*/targets', target_label: from_sd, replacement: yes}}\n"
    );
    let s = start_promflow(dir.path(), &config, &[]);
    let me = format!("127.0.0.1:{}", s.port);
    *answer.lock().unwrap() = (200, format!("[{{\"targets\": [\"{me}\"], \"labels\": {{\"env\": \"a\"}}}}]"));
    let up = wait_for(Duration::from_secs(20), || {
        let (_, v) =
            s.get_json("/api/v1/query?query=up%7Bjob%3D%22sd%22%2Cenv%3D%22a%22%2Cfrom_sd%3D%22yes%22%7D");
        (result(&v).first()?["value"][1] == "1").then_some(())
    });
    assert!(up.is_some(), "the discovered target is scraped with its group's labels and __meta_url");
    let (_, v) = s.get_json("/api/v1/targets");
    let t = &v["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["scrapePool"] == "sd")
        .unwrap()
        .clone();
    assert_eq!(t["discoveredLabels"]["__meta_url"], format!("http://127.0.0.1:{sd}/targets"));
    // a failing endpoint keeps the targets it gave last
    *answer.lock().unwrap() = (500, "oops".to_string());
    let failed = wait_for(Duration::from_secs(10), || {
        let (_, text) = s.get_text("/metrics");
        text.lines()
            .any(|l| l.starts_with("prometheus_sd_http_failures_total ") && !l.ends_with(" 0"))
            .then_some(())
    });
    assert!(failed.is_some());
    assert_eq!(target_health(&s, "sd").map(|h| h.0), Some("up".to_string()));
    // an empty list removes them
    *answer.lock().unwrap() = (200, "[]".to_string());
    let gone = wait_for(Duration::from_secs(10), || {
        let (_, v) = s.get_json("/api/v1/targets");
        let any = v["data"]["activeTargets"].as_array()?.iter().any(|t| t["scrapePool"] == "sd");
        (!any).then_some(())
    });
    assert!(gone.is_some(), "the targets go when the endpoint lists none");
}

#[test]
fn dns_sd_finds_srv_a_aaaa_and_mx_targets_from_a_real_dns_server() {
    let Some(dnsmasq) = peer("dnsmasq") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (port, dns_port) = (free_port(), free_port());
    let mut dns = Command::new(dnsmasq)
        .args([
            "-d",
            "-k",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
        ])
        .arg(format!("--port={dns_port}"))
        .arg(format!("--srv-host=_prom._tcp.example.test,localhost,{port}"))
        .arg("--host-record=self.example.test,127.0.0.1")
        .arg("--host-record=v6.example.test,::1")
        .arg("--mx-host=mail.example.test,localhost,10")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: dns-srv\n    dns_sd_configs: [{{names: [_prom._tcp.example.test], refresh_interval: 1s}}]\n    relabel_configs:\n      - {{source_labels: [__meta_dns_srv_record_target], target_label: srv_target}}\n  - job_name: dns-a\n    dns_sd_configs: [{{names: [self.example.test, v6.example.test], type: A, port: {port}, refresh_interval: 1s}}]\n  - job_name: dns-aaaa\n    dns_sd_configs: [{{names: [v6.example.test], type: AAAA, port: {port}, refresh_interval: 1s}}]\n  - job_name: dns-mx\n    dns_sd_configs: [{{names: [mail.example.test], type: MX, port: {port}, refresh_interval: 1s}}]\n"
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let s = start_promflow_with(
        dir.path(),
        &cfg,
        port,
        &[&format!("--discovery.dns-server=127.0.0.1:{dns_port}")],
    );
    let up = |q: &str| {
        let (_, v) = s.get_json(&format!(
            "/api/v1/query?query={}",
            form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
        ));
        result(&v).first().and_then(|r| r["value"][1].as_str().map(String::from))
    };
    let found = wait_for(Duration::from_secs(20), || {
        let srv = up("up{job=\"dns-srv\",srv_target=\"localhost.\"}")? == "1";
        (srv && up("up{job=\"dns-a\"}")? == "1" && up("up{job=\"dns-mx\"}")? == "1").then_some(())
    });
    assert!(found.is_some(), "the SRV and A targets are scraped: {:?}", s.get_json("/api/v1/targets").1);
    let failures = || {
        let (_, text) = s.get_text("/metrics");
        let line =
            text.lines().find(|l| l.starts_with("prometheus_sd_dns_lookup_failures_total "))?.to_string();
        line.rsplit(' ').next()?.parse::<f64>().ok()
    };
    let before = failures().unwrap();
    let _ = dns.kill();
    let _ = dns.wait();
    let (_, v) = s.get_json("/api/v1/targets");
    let targets = v["data"]["activeTargets"].as_array().unwrap().clone();
    let of = |job: &str| targets.iter().filter(|t| t["scrapePool"] == job).cloned().collect::<Vec<_>>();
    assert_eq!(of("dns-srv")[0]["discoveredLabels"]["__address__"], format!("localhost:{port}"));
    assert_eq!(of("dns-srv")[0]["discoveredLabels"]["__meta_dns_srv_record_port"], port.to_string());
    // dnsmasq refuses the A question for a name it has only an AAAA record for: that name
    // fails, and the other name of the entry is found all the same
    assert_eq!(of("dns-a").len(), 1, "v6.example.test has no A record");
    assert_eq!(of("dns-a")[0]["discoveredLabels"]["__meta_dns_name"], "self.example.test");
    assert_eq!(of("dns-aaaa")[0]["discoveredLabels"]["__address__"], format!("[::1]:{port}"));
    assert_eq!(of("dns-mx")[0]["discoveredLabels"]["__address__"], format!("localhost:{port}"));
    assert_eq!(of("dns-mx")[0]["discoveredLabels"]["__meta_dns_mx_record_target"], "localhost.");
    // the server is gone: lookups fail, and the targets stay
    let failed = wait_for(Duration::from_secs(30), || (failures()? > before + 2.0).then_some(()));
    assert!(failed.is_some(), "lookups of a server that is gone fail");
    assert_eq!(target_health(&s, "dns-a").map(|h| h.0), Some("up".to_string()));
}

/// A Consul agent's HTTP API, as far as discovery reads it: `/v1/catalog/services` (with
/// blocking queries on `X-Consul-Index`) and `/v1/health/service/<name>`, answering with
/// bodies shaped as Consul's documented answers.
struct ConsulServer {
    /// (index, service → tags, service → health entries as JSON, fail the next catalog call)
    state: std::sync::Arc<(std::sync::Mutex<ConsulState>, std::sync::Condvar)>,
    port: u16,
}

#[derive(Default)]
struct ConsulState {
    index: u64,
    services: std::collections::BTreeMap<String, (Vec<String>, String)>,
    fail_next: bool,
    blocked_calls: u64,
}

impl ConsulServer {
    fn start() -> ConsulServer {
        let l = listener();
        let port = l.local_addr().unwrap().port();
        let state = std::sync::Arc::new((
            std::sync::Mutex::new(ConsulState { index: 1, ..Default::default() }),
            std::sync::Condvar::new(),
        ));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten().take(2000) {
                let state = shared.clone();
                std::thread::spawn(move || Self::answer(conn, &state));
            }
        });
        ConsulServer { state, port }
    }

    fn answer(mut conn: std::net::TcpStream, state: &(std::sync::Mutex<ConsulState>, std::sync::Condvar)) {
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).unwrap_or(0);
        let request = String::from_utf8_lossy(&buf[..n]).to_string();
        let target = request.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let param =
            |k: &str| query.split('&').find_map(|p| p.strip_prefix(&format!("{k}="))).map(str::to_string);
        let (lock, cvar) = state;
        let mut st = lock.lock().unwrap();
        let (code, body) = if path == "/v1/catalog/services" {
            // a blocking query waits for the index to move past the one it names
            if let Some(i) = param("index").and_then(|i| i.parse::<u64>().ok()).filter(|i| *i == st.index) {
                st.blocked_calls += 1;
                let wait =
                    param("wait").and_then(|w| w.trim_end_matches("ms").parse::<u64>().ok()).unwrap_or(1000);
                st = cvar.wait_timeout_while(st, Duration::from_millis(wait), |s| s.index == i).unwrap().0;
            }
            if std::mem::take(&mut st.fail_next) {
                (500, "rpc error: No cluster leader".to_string())
            } else {
                let map: Vec<String> =
                    st.services.iter().map(|(k, (tags, _))| format!("{k:?}: {tags:?}")).collect();
                (200, format!("{{{}}}", map.join(", ")))
            }
        } else if let Some(name) = path.strip_prefix("/v1/health/service/") {
            (200, st.services.get(name).map_or("[]".to_string(), |(_, entries)| entries.clone()))
        } else {
            (404, "not found".to_string())
        };
        let index = st.index;
        drop(st);
        let _ = write!(
            conn,
            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nX-Consul-Index: {index}\r\nX-Consul-Knownleader: true\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    /// Registers (or replaces) `service` with one instance at `address:port`.
    fn register(&self, service: &str, tags: &[&str], address: &str, port: u16) {
        let entry = format!(
            r#"[{{"Node": {{"ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": "node-1", "Address": "{address}", "Datacenter": "dc1", "TaggedAddresses": {{"lan": "{address}", "wan": "198.18.0.1"}}, "Meta": {{"instance_type": "t2.medium"}}}},
               "Service": {{"ID": "{service}-1", "Service": "{service}", "Tags": {tags:?}, "Address": "", "Meta": {{"version": "1.0"}}, "Port": {port}, "Namespace": ""}},
               "Checks": [{{"Node": "node-1", "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing", "ServiceID": ""}}]}}]"#
        );
        self.change(|st| {
            st.services.insert(service.to_string(), (tags.iter().map(|t| t.to_string()).collect(), entry));
        });
    }

    fn change(&self, f: impl FnOnce(&mut ConsulState)) {
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().unwrap();
        f(&mut st);
        st.index += 1;
        cvar.notify_all();
    }
}

#[test]
fn consul_sd_follows_the_catalog_with_blocking_queries() {
    let consul = ConsulServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    consul.register("web", &["prod", "v1"], "127.0.0.1", port);
    consul.register("batch", &["dev"], "127.0.0.1", 1);
    let config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: consul\n    consul_sd_configs: [{{server: '127.0.0.1:{}', tags: [prod], refresh_interval: 30s}}]\n    relabel_configs:\n      - {{source_labels: [__meta_consul_service], target_label: service}}\n",
        consul.port
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let s = start_promflow_with(dir.path(), &cfg, port, &[]);
    let targets = || {
        let (_, v) = s.get_json("/api/v1/targets");
        v["data"]["activeTargets"].as_array().cloned().unwrap_or_default()
    };
    let up = wait_for(Duration::from_secs(20), || {
        let (_, v) = s.get_json("/api/v1/query?query=up%7Bjob%3D%22consul%22%2Cservice%3D%22web%22%7D");
        (result(&v).first()?["value"][1] == "1").then_some(())
    });
    assert!(up.is_some(), "the tagged service's instance is scraped: {:?}", targets());
    let t = targets();
    assert_eq!(t.len(), 1, "the service without the tag is left out");
    let d = &t[0]["discoveredLabels"];
    assert_eq!(d["__address__"], format!("127.0.0.1:{port}"));
    assert_eq!(d["__meta_consul_tags"], ",prod,v1,");
    assert_eq!(d["__meta_consul_health"], "passing");
    assert_eq!(d["__meta_consul_dc"], "dc1");
    assert_eq!(d["__meta_consul_metadata_instance_type"], "t2.medium");
    assert_eq!(d["__meta_consul_service_metadata_version"], "1.0");
    assert_eq!(d["__meta_consul_tagged_address_wan"], "198.18.0.1");

    // a registration shows while discovery waits on the catalog (refresh_interval is 30 s)
    let waited = wait_for(Duration::from_secs(10), || {
        (consul.state.0.lock().unwrap().blocked_calls > 0).then_some(())
    });
    assert!(waited.is_some(), "discovery waits on the catalog's index");
    consul.register("db", &["prod"], "127.0.0.2", 9104);
    let shown = wait_for(Duration::from_secs(10), || (targets().len() == 2).then_some(()));
    assert!(shown.is_some(), "the new service is a target before the refresh interval");
    consul.change(|st| {
        st.services.remove("db");
    });
    let gone = wait_for(Duration::from_secs(10), || (targets().len() == 1).then_some(()));
    assert!(gone.is_some(), "a deregistered service's targets go");

    // Consul failing: the targets stay, the failures are counted
    consul.change(|st| st.fail_next = true);
    let failed = wait_for(Duration::from_secs(10), || {
        let (_, text) = s.get_text("/metrics");
        text.lines()
            .any(|l| l.starts_with("prometheus_sd_consul_rpc_failures_total ") && !l.ends_with(" 0"))
            .then_some(())
    });
    assert!(failed.is_some());
    assert_eq!(targets().len(), 1);
}

/// `scrape_failure_log_file` gets one JSON line per failed scrape (`time`, `level`, `msg`,
/// `target`, as Prometheus's JSON logs), the job's own file overriding the global one; the
/// files are opened again at a reload, so a rotated log is written anew.
#[test]
fn scrape_failures_are_logged_per_job_and_the_log_is_reopened_at_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let garbage = garbage_target();
    let global_log = dir.path().join("failures.log");
    let job_log = dir.path().join("garbage.log");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_failure_log_file: {}\nscrape_configs:\n\
         - job_name: closed\n  static_configs: [{{targets: ['127.0.0.1:{closed}']}}]\n\
         - job_name: garbage\n  scrape_failure_log_file: {}\n  static_configs: [{{targets: ['127.0.0.1:{garbage}']}}]\n",
        global_log.display(),
        job_log.display()
    );
    let pf = start_promflow(dir.path(), &config, &["--web.enable-lifecycle"]);
    let lines = json_lines;
    let first_line = |path: &std::path::Path| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = lines(path).into_iter().next() {
                return l;
            }
            assert!(std::time::Instant::now() < deadline, "nothing logged in {}", path.display());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let closed_line = first_line(&global_log);
    let mut keys: Vec<&str> = closed_line.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["level", "msg", "target", "time"], "{closed_line}");
    assert_eq!(closed_line["level"], "ERROR");
    assert_eq!(closed_line["target"], format!("http://127.0.0.1:{closed}/metrics"));
    assert!(closed_line["time"].as_str().unwrap().ends_with('Z'), "{closed_line}");
    let (_, last_error) = target_health(&pf, "closed").expect("the closed target was scraped");
    assert_eq!(closed_line["msg"], last_error.as_str());

    let garbage_line = first_line(&job_log);
    assert_eq!(garbage_line["target"], format!("http://127.0.0.1:{garbage}/metrics"));
    assert!(
        lines(&global_log).iter().all(|l| l["target"] != garbage_line["target"]),
        "the job's own file replaces the global one"
    );

    std::fs::rename(&global_log, dir.path().join("failures.log.1")).unwrap();
    let reloaded = client().post(pf.url("/-/reload")).send().unwrap();
    assert_eq!(reloaded.status(), 200);
    let after = first_line(&global_log);
    assert_eq!(after["target"], closed_line["target"]);
}

/// `target_limit`, side by side with Prometheus 2.42: a job with more targets than its limit
/// keeps them listed, each down with Prometheus's error and scraped never (no samples but its
/// report series); the counter says so; a reload that raises the limit scrapes them again.
#[test]
fn a_job_over_its_target_limit_fails_every_target_as_prometheus_does() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (garbage_target(), garbage_target());
    let config = |limit: u32| {
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n\
             - job_name: limited\n  target_limit: {limit}\n  static_configs: [{{targets: ['127.0.0.1:{a}', '127.0.0.1:{b}']}}]\n"
        )
    };
    let pf = start_promflow(dir.path(), &config(1), &["--web.enable-lifecycle"]);
    let prometheus_dir = tempfile::tempdir().unwrap();
    let prometheus = start_prometheus(prometheus_dir.path(), &config(1));
    let want = "target_limit exceeded (number of targets: 2, limit: 1)";
    let errors = |s: &Server| {
        wait_for(Duration::from_secs(20), || {
            let (_, v) = s.get_json("/api/v1/targets");
            let targets = v["data"]["activeTargets"].as_array()?.clone();
            let seen: Vec<(String, String)> = targets
                .iter()
                .filter(|t| t["scrapePool"] == "limited" && t["health"] != "unknown")
                .map(|t| {
                    (t["health"].as_str().unwrap().to_string(), t["lastError"].as_str().unwrap().to_string())
                })
                .collect();
            (seen.len() == 2).then_some(seen)
        })
        .expect("both targets reported")
    };
    let down = vec![("down".to_string(), want.to_string()); 2];
    assert_eq!(errors(&pf), down);
    if let Some(prometheus) = &prometheus {
        assert_eq!(errors(prometheus), down, "Prometheus 2.42 reports the same");
    }
    let (_, metrics) = pf.get_text("/metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with("prometheus_target_scrape_pool_exceeded_target_limit_total ")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    // the HTML targets were never fetched: their failure is the limit, not the parse
    let (_, v) = pf.get_json("/api/v1/query?query=up%7Bjob%3D%22limited%22%7D");
    assert_eq!(result(&v).len(), 2, "{v}");
    assert!(result(&v).iter().all(|s| s["value"][1] == "0"), "{v}");

    // raised by a reload, the limit no longer holds: the targets are scraped (and fail to parse)
    std::fs::write(dir.path().join("prometheus.yml"), config(2)).unwrap();
    assert_eq!(client().post(pf.url("/-/reload")).send().unwrap().status(), 200);
    let parsed = wait_for(Duration::from_secs(20), || {
        let seen = errors(&pf);
        seen.iter().all(|(_, e)| !e.starts_with("target_limit")).then_some(seen)
    });
    assert!(parsed.is_some(), "the targets are scraped after the limit is raised");
}

/// A target whose answer the test changes: protobuf to whoever offers it, the text format
/// to the others.
struct SwitchTarget {
    port: u16,
    /// (protobuf body, text body)
    bodies: std::sync::Arc<std::sync::Mutex<(Vec<u8>, String)>>,
}

fn switch_target(protobuf: Vec<u8>, text: &str) -> SwitchTarget {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new((protobuf, text.to_string())));
    let shared = std::sync::Arc::clone(&bodies);
    let port = serve_http(move |_, accept| {
        let b = shared.lock().unwrap();
        if accept.contains("application/vnd.google.protobuf") {
            let ct = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";
            (ct.to_string(), b.0.clone())
        } else {
            ("text/plain; version=0.0.4".to_string(), b.1.clone().into_bytes())
        }
    });
    SwitchTarget { port, bodies }
}

/// A native histogram of schema 3 with twelve buckets from 1 to 2.8, and a classic one.
fn fine_histogram() -> Vec<u8> {
    use promflow_scrape::exposition::protobuf::wire::*;
    let family = |name: &str, h: Histogram| MetricFamily {
        name: Some(name.into()),
        help: None,
        r#type: Some(metric_type::HISTOGRAM),
        metric: vec![Metric { histogram: Some(h), ..Default::default() }],
        unit: None,
    };
    encode_delimited(&[
        family(
            "fine_seconds",
            Histogram {
                sample_count: Some(12),
                sample_sum: Some(20.0),
                schema: Some(3),
                zero_threshold: Some(0.001),
                positive_span: vec![BucketSpan { offset: Some(1), length: Some(12) }],
                positive_delta: [1].into_iter().chain([0; 11]).collect(),
                bucket: vec![Bucket {
                    cumulative_count: Some(12),
                    upper_bound: Some(4.0),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ),
        family(
            "sparse_seconds",
            Histogram {
                sample_count: Some(2),
                sample_sum: Some(1e6),
                schema: Some(0),
                zero_threshold: Some(0.001),
                // two buckets 2^-10 and 2^20: still two at schema -4
                positive_span: vec![
                    BucketSpan { offset: Some(-10), length: Some(1) },
                    BucketSpan { offset: Some(29), length: Some(1) },
                ],
                positive_delta: vec![1, 0],
                ..Default::default()
            },
        ),
    ])
}

fn histogram_buckets(s: &Server, query: &str) -> Option<Vec<Value>> {
    let (_, v) = s.get_json(&format!("/api/v1/query?query={}", urlencode(query)));
    let r = result(&v).first()?.clone();
    r["histogram"][1]["buckets"].as_array().cloned()
}

#[test]
fn native_histogram_scrape_options_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let text = "# TYPE legacy_seconds histogram\nlegacy_seconds_bucket{le=\"0.5\"} 1\nlegacy_seconds_bucket{le=\"1\"} 3\nlegacy_seconds_bucket{le=\"+Inf\"} 4\nlegacy_seconds_sum 2\nlegacy_seconds_count 4\n";
    let t = switch_target(fine_histogram(), text);
    let job = |name: &str, extra: &str| {
        format!(
            "  - job_name: {name}\n{extra}    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            t.port
        )
    };
    let config = [
        "global:\n  scrape_interval: 300ms\n  scrape_timeout: 250ms\nscrape_configs:\n".to_string(),
        // the feature flag turns native histograms on for every job that does not say otherwise
        job("default", ""),
        job("limited", "    native_histogram_bucket_limit: 4\n"),
        job("tight", "    native_histogram_bucket_limit: 1\n"),
        job("factor", "    native_histogram_min_bucket_factor: 1.1\n"),
        job("classic", "    scrape_native_histograms: false\n    scrape_protocols: [PrometheusProto]\n"),
        job("both", "    always_scrape_classic_histograms: true\n"),
        job(
            "nhcb",
            "    scrape_protocols: [PrometheusText0.0.4]\n    convert_classic_histograms_to_nhcb: true\n",
        ),
    ]
    .concat();
    let s = start_promflow(dir.path(), &config, &["--enable-feature=native-histograms"]);
    let buckets = |job: &str, name: &str| {
        wait_for(Duration::from_secs(15), || histogram_buckets(&s, &format!("{name}{{job=\"{job}\"}}")))
            .unwrap_or_else(|| panic!("{name} of job {job} is a native histogram"))
    };

    assert_eq!(buckets("default", "fine_seconds").len(), 12);
    // 12 buckets over the limit of 4: schema 3 → 1, where (1, 2.83] takes 4 buckets
    let limited = buckets("limited", "fine_seconds");
    assert!(limited.len() <= 4, "{limited:?}");
    assert_eq!(limited.last().unwrap()[2], "2.8284271247461903", "{limited:?}");
    // a bucket grows by at least 1.1: schema 2, 6 buckets
    assert_eq!(buckets("factor", "fine_seconds").len(), 6);
    // at most one bucket: impossible for sparse_seconds at any schema, so the scrape fails
    let tight = wait_for(Duration::from_secs(15), || target_health(&s, "tight")).unwrap();
    assert_eq!(tight.0, "down");
    assert!(tight.1.contains("bucket limit"), "{tight:?}");
    // native histograms off for a job that still asks for protobuf: the classic series of
    // the same histogram
    let classic = wait_for(Duration::from_secs(15), || {
        let (_, v) = s.get_json("/api/v1/query?query=fine_seconds_bucket%7Bjob%3D%22classic%22%7D");
        (!result(&v).is_empty()).then(|| result(&v).clone())
    })
    .unwrap();
    assert_eq!(classic.len(), 2, "le=4 and the +Inf bucket: {classic:?}");
    let (_, v) = s.get_json("/api/v1/query?query=fine_seconds%7Bjob%3D%22classic%22%7D");
    assert!(result(&v).is_empty(), "{v}");
    // both kinds, when asked for
    buckets("both", "fine_seconds");
    let (_, v) = s.get_json("/api/v1/query?query=fine_seconds_count%7Bjob%3D%22both%22%7D");
    assert_eq!(result(&v)[0]["value"][1], "12", "{v}");
    // a text target's classic histogram becomes custom buckets, and its series go
    let nhcb = buckets("nhcb", "legacy_seconds");
    assert_eq!(
        nhcb.iter()
            .map(|b| (b[2].as_str().unwrap().to_string(), b[3].as_str().unwrap().to_string()))
            .collect::<Vec<_>>(),
        [("0.5".to_string(), "1".to_string()), ("1".into(), "2".into()), ("+Inf".into(), "1".into())]
    );
    let (_, v) = s.get_json("/api/v1/query?query=legacy_seconds_bucket%7Bjob%3D%22nhcb%22%7D");
    assert!(result(&v).is_empty(), "{v}");

    // the histogram leaves the target: its series goes stale at the next scrape
    t.bodies.lock().unwrap().0 = Vec::new();
    let gone = wait_for(Duration::from_secs(15), || {
        let (_, v) = s.get_json("/api/v1/query?query=fine_seconds%7Bjob%3D%22default%22%7D");
        result(&v).is_empty().then_some(())
    });
    assert!(gone.is_some(), "a histogram series that disappears is marked stale");
    let text = client().get(s.url("/metrics")).send().unwrap().text().unwrap();
    let failed = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("prometheus_target_scrapes_exceeded_native_histogram_bucket_limit_total ")
        })
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(failed.is_some_and(|n| n >= 1.0), "{failed:?}");
}
