//! End-to-end: `--web.config.file` (basic authentication and TLS) holds on every path of the
//! HTTP server and on the PostgreSQL listener, side by side with Prometheus where it has the
//! same setting; settings promflow cannot honour stop it at start-up; `--web.cors.origin`,
//! `--web.max-connections` and `--web.read-timeout` are honoured. Clients are the real ones:
//! curl, promtool, psql and a websocket client.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

pub(crate) const USER: &str = "alice";
pub(crate) const PASSWORD: &str = "correct horse";

/// A web configuration with one bcrypt user (cost 4: the tests run many verifications).
pub(crate) fn users_yaml() -> String {
    format!("basic_auth_users:\n  {USER}: {}\n", bcrypt_hash(PASSWORD))
}

fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

/// Starts promflow with `extra` flags and waits for its log to say it is ready (the HTTP
/// readiness probe needs credentials or TLS here). Panics if it exits.
fn start(dir: &Path, extra: &[&str]) -> Server {
    start_on(dir, free_port(), extra)
}

/// [`start`] on a given port (for a configuration that names it).
fn start_on(dir: &Path, port: u16, extra: &[&str]) -> Server {
    let cfg = dir.join("prometheus.yml");
    if !cfg.exists() {
        std::fs::write(&cfg, "").unwrap();
    }
    let mut s = spawn_promflow(dir, &cfg, port, extra);
    s.wait_logged_ready();
    s
}

/// `curl` with `args`; returns the HTTP status (0 when no answer) and the body.
pub(crate) fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Every kind of path the server has, with the method it takes: all must be guarded.
const PATHS: &[(&str, &str)] = &[
    ("GET", "/api/v1/query?query=up"),
    ("POST", "/api/v1/query_range"),
    ("GET", "/api/v1/status/config"),
    ("POST", "/api/v1/write"),
    ("POST", "/api/v1/read"),
    ("POST", "/api/v1/sql"),
    ("POST", "/api/v1/admin/tsdb/delete_series?match[]=up"),
    ("GET", "/federate?match[]=up"),
    ("GET", "/metrics"),
    ("GET", "/-/healthy"),
    ("GET", "/-/ready"),
    ("POST", "/-/reload"),
    ("POST", "/-/quit"),
    ("GET", "/"),
    ("GET", "/graph"),
    ("PUT", "/metrics/job/x"),
    ("OPTIONS", "/api/v1/query"),
    ("GET", "/no/such/path"),
];

#[test]
fn basic_auth_guards_every_path_as_prometheus_does() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, users_yaml()).unwrap();
    let web_flag = format!("--web.config.file={}", web.display());
    let s = start(
        dir.path(),
        &[
            &web_flag,
            "--web.enable-lifecycle",
            "--web.enable-admin-api",
            "--web.enable-remote-write-receiver",
            "--web.enable-pushgateway",
        ],
    );
    let good = format!("{USER}:{PASSWORD}");
    let wrong = format!("{USER}:wrong");
    let stranger = format!("mallory:{PASSWORD}");
    for &(method, path) in PATHS {
        let url = s.url(path);
        for creds in [None, Some(wrong.as_str()), Some(stranger.as_str())] {
            let mut args = vec!["-X", method, url.as_str()];
            if let Some(c) = creds {
                args.extend(["-u", c]);
            }
            let (code, body) = curl(&args);
            assert_eq!(code, 401, "{method} {path} with {creds:?}: {body}");
        }
    }
    // the challenge, as Prometheus sends it
    let out = Command::new("curl").args(["-s", "-i", &s.url("/api/v1/query?query=up")]).output().unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.contains("www-authenticate: basic"), "{head}");
    // the right password opens the API (not /-/quit: the server is still needed)
    let (code, body) = curl(&["-u", &good, &s.url("/api/v1/query?query=1")]);
    assert_eq!(code, 200, "{body}");
    let (code, _) = curl(&["-u", &good, &s.url("/metrics")]);
    assert_eq!(code, 200);
    // a websocket needs the credentials too
    let ws = |auth: Option<&str>| {
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://127.0.0.1:{}/api/v1/subscribe",
            s.port
        ))
        .unwrap();
        if let Some(a) = auth {
            let v =
                format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, a));
            req.headers_mut().insert("authorization", v.parse().unwrap());
        }
        match tungstenite::connect(req) {
            Ok(_) => 101,
            Err(tungstenite::Error::Http(r)) => r.status().as_u16(),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(ws(None), 401);
    assert_eq!(ws(Some(&wrong)), 401);
    assert_eq!(ws(Some(&good)), 101);

    // Prometheus with the same file answers the same, path for path it has
    let Some(bin) = peer("prometheus") else { return };
    let port = free_port();
    let mut prom = Command::new(bin)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("prom-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(&web_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // `/-/healthy` answers while the TSDB still opens, when queries get 503; wait for ready
    let up = wait_for(Duration::from_secs(60), || {
        (curl(&["-u", &good, &format!("http://127.0.0.1:{port}/-/ready")]).0 == 200).then_some(())
    });
    let answers = |base: &str, creds: &str| curl(&["-u", creds, &format!("{base}/api/v1/query?query=1")]).0;
    let prom_base = format!("http://127.0.0.1:{port}");
    let codes: Vec<(u16, u16)> = if up.is_some() {
        [good.as_str(), wrong.as_str(), stranger.as_str()]
            .iter()
            .map(|c| (answers(&prom_base, c), answers(&s.base, c)))
            .collect()
    } else {
        Vec::new()
    };
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(up.is_some(), "Prometheus did not become ready");
    assert!(
        codes.iter().all(|(p, f)| p == f),
        "promflow and Prometheus answer the same credentials differently: (Prometheus, promflow) {codes:?}"
    );
}

/// A self-signed CA and a certificate it signs for 127.0.0.1, made with openssl.
pub(crate) struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub(crate) fn new(dir: &Path) -> Pki {
        let pki = Pki { dir: dir.to_path_buf() };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=promflow test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        pki.issue("server", "subjectAltName=IP:127.0.0.1,DNS:localhost");
        pki.issue("client", "extendedKeyUsage=clientAuth");
        pki
    }

    /// A key and a certificate `name.crt` signed by the CA.
    fn issue(&self, name: &str, ext: &str) {
        let (key, csr, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        std::fs::write(self.dir.join(format!("{name}.ext")), format!("{ext}\n")).unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &crt,
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl").current_dir(&self.dir).args(args).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

#[test]
fn tls_and_basic_auth_for_curl_promtool_and_psql() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{}", users_yaml()),
    )
    .unwrap();
    let sql_port = free_port();
    let s = start(
        dir.path(),
        &[
            &format!("--web.config.file={}", web.display()),
            &format!("--sql.listen-address=127.0.0.1:{sql_port}"),
        ],
    );
    let https = format!("https://127.0.0.1:{}", s.port);
    let ca = pki.path("ca.crt");
    let good = format!("{USER}:{PASSWORD}");
    let (code, body) = curl(&["--cacert", &ca, "-u", &good, &format!("{https}/api/v1/query?query=1")]);
    assert_eq!(code, 200, "{body}");
    let (code, _) =
        curl(&["--cacert", &ca, "-u", &format!("{USER}:x"), &format!("{https}/api/v1/query?query=1")]);
    assert_eq!(code, 401);
    // plain HTTP gets no answer, and TLS 1.1 is not spoken
    assert_eq!(curl(&["-u", &good, &s.url("/api/v1/query?query=1")]).0, 0);
    assert_eq!(curl(&["--cacert", &ca, "--tls-max", "1.1", "-u", &good, &format!("{https}/-/healthy")]).0, 0);
    // HTTP/2 by ALPN, as Go's server
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_version}", "--http2", "--cacert", &ca, "-u", &good])
        .arg(format!("{https}/-/healthy"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2");

    if let Some(promtool) = peer("promtool") {
        // promtool 2.42 takes credentials in the URL and a CA from Go's SSL_CERT_FILE
        let url = format!("https://{USER}:{}@127.0.0.1:{}", PASSWORD.replace(' ', "%20"), s.port);
        let out = Command::new(promtool)
            .env("SSL_CERT_FILE", &ca)
            .args(["query", "instant", &url, "41+1"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("42"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wrong = format!("https://{USER}:nope@127.0.0.1:{}", s.port);
        let out = Command::new("promtool")
            .env("SSL_CERT_FILE", &ca)
            .args(["query", "instant", &wrong, "1"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "promtool got in with a wrong password");
    }

    // psql: TLS and the same password; no TLS, or a wrong password, is refused
    let psql = |sslmode: &str, password: &str| {
        let out = Command::new("psql")
            .env("PGPASSWORD", password)
            .env("PGSSLROOTCERT", &ca)
            .env("PGCONNECT_TIMEOUT", "10")
            .args([
                &format!("host=127.0.0.1 port={sql_port} user={USER} dbname=promflow sslmode={sslmode}"),
                "-tAc",
                "SELECT 40 + 2",
            ])
            .output()
            .expect("psql");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    if peer("psql").is_some() {
        let (ok, out) = psql("verify-full", PASSWORD);
        assert!(ok && out.trim() == "42", "{out}");
        let (ok, out) = psql("require", "wrong");
        assert!(!ok && out.to_lowercase().contains("password authentication failed"), "{out}");
        let (ok, out) = psql("disable", PASSWORD);
        assert!(!ok && out.contains("TLS"), "{out}");
    }
}

/// Writes `web.yml` in `dir`: the [`Pki`]'s server certificate, client certificates from its
/// CA required, and `more` (users) after it.
pub(crate) fn mutual_tls_web_config(dir: &Path, more: &str) -> PathBuf {
    let web = dir.join("web.yml");
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n";
    std::fs::write(&web, format!("{tls}{more}")).unwrap();
    web
}

#[test]
fn client_certificates_are_required_and_verified_and_certificates_reload() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let web = mutual_tls_web_config(dir.path(), "");
    let s = start(dir.path(), &[&format!("--web.config.file={}", web.display())]);
    let url = format!("https://127.0.0.1:{}/-/healthy", s.port);
    let ca = pki.path("ca.crt");
    assert_eq!(curl(&["--cacert", &ca, &url]).0, 0, "no client certificate");
    let (cert, key) = (pki.path("client.crt"), pki.path("client.key"));
    assert_eq!(curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &url]).0, 200);
    // a certificate from another CA is refused
    let other = tempfile::tempdir().unwrap();
    let stranger = Pki::new(other.path());
    let (scert, skey) = (stranger.path("client.crt"), stranger.path("client.key"));
    assert_eq!(curl(&["--cacert", &ca, "--cert", &scert, "--key", &skey, &url]).0, 0);

    // a new server certificate from another CA is served once written, without a restart
    for f in ["server.crt", "server.key"] {
        std::fs::copy(other.path().join(f), dir.path().join(f)).unwrap();
    }
    let new_ca = stranger.path("ca.crt");
    let reloaded = wait_for(Duration::from_secs(10), || {
        (curl(&["--cacert", &new_ca, "--cert", &cert, "--key", &key, &url]).0 == 200).then_some(())
    });
    assert!(reloaded.is_some(), "the new certificate was not served:\n{}", s.logs());
}

/// Runs `promflow subscribe` with `args` until its first message other than a heartbeat (or
/// its end); returns whether that was a snapshot, and what it printed on both streams.
fn subscribe_first_line(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_promflow"))
        .arg("subscribe")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promflow subscribe");
    let mut stdout = child.stdout.take().unwrap();
    // the first line that is not a heartbeat (a heartbeat may come before a slow snapshot)
    let reader = std::thread::spawn(move || loop {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        let mut open = true;
        while open {
            open = stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false);
            if !open || byte[0] == b'\n' {
                break;
            }
            line.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        if !open || !line.contains("\"heartbeat\"") {
            return line;
        }
    });
    let ended = wait_for(Duration::from_secs(20), || reader.is_finished().then_some(()));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let line = if ended.is_some() { reader.join().unwrap() } else { String::new() };
    (line.contains("\"snapshot\""), format!("{line}\n{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn promflow_subscribe_follows_tls_client_certificates_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    Pki::new(dir.path());
    let web = mutual_tls_web_config(dir.path(), &users_yaml());
    let s = start(dir.path(), &[&format!("--web.config.file={}", web.display())]);
    let https = format!("https://127.0.0.1:{}", s.port);
    // the client settings live in a directory of their own: relative paths are its
    let client = dir.path().join("client");
    std::fs::create_dir(&client).unwrap();
    std::fs::write(client.join("password"), format!("{PASSWORD}\n")).unwrap();
    let settings = |name: &str, text: &str| {
        let path = client.join(name);
        std::fs::write(&path, text).unwrap();
        format!("--http.config.file={}", path.display())
    };
    let tls = "tls_config:\n  ca_file: ../ca.crt\n  cert_file: ../client.crt\n  key_file: ../client.key\n";
    let good =
        settings("good.yml", &format!("basic_auth:\n  username: {USER}\n  password_file: password\n{tls}"));
    let (ok, out) = subscribe_first_line(&[&good, &https, "vector(42)"]);
    assert!(ok && out.contains("42"), "{out}\nserver:\n{}", s.logs());

    let wrong = settings("wrong.yml", &format!("basic_auth:\n  username: {USER}\n  password: nope\n{tls}"));
    let (ok, out) = subscribe_first_line(&[&wrong, &https, "vector(42)"]);
    assert!(!ok && out.contains("401"), "{out}");
    let no_cert = settings(
        "no-cert.yml",
        &format!(
            "basic_auth:\n  username: {USER}\n  password_file: password\ntls_config:\n  ca_file: ../ca.crt\n"
        ),
    );
    let (ok, out) = subscribe_first_line(&[&no_cert, &https, "vector(42)"]);
    assert!(!ok, "{out}");
    // the server's certificate is verified, and names 127.0.0.1 and localhost only
    let (ok, out) = subscribe_first_line(&[&https, "vector(42)"]);
    assert!(!ok && out.contains("certificate"), "{out}");
    let elsewhere = settings(
        "name.yml",
        &format!(
            "basic_auth:\n  username: {USER}\n  password_file: password\n{tls}  server_name: example.org\n"
        ),
    );
    let (ok, out) = subscribe_first_line(&[&elsewhere, &https, "vector(42)"]);
    assert!(!ok && out.contains("certificate"), "{out}");
    // what this client cannot honour stops it before it connects
    let proxy = settings("proxy.yml", "proxy_url: http://127.0.0.1:1\n");
    let (ok, out) = subscribe_first_line(&[&proxy, &https, "vector(42)"]);
    assert!(!ok && out.contains("not supported") && out.contains("proxy_url"), "{out}");
}

#[test]
fn scrapes_honour_tls_config_and_basic_auth() {
    // promflow scrapes itself behind TLS, a client certificate and basic authentication; each
    // job leaves out or changes one setting, and only the complete one is up
    let dir = tempfile::tempdir().unwrap();
    Pki::new(dir.path());
    let web = mutual_tls_web_config(dir.path(), &users_yaml());
    std::fs::write(dir.path().join("password"), PASSWORD).unwrap();
    let port = free_port();
    let job = |name: &str, tls: &str, auth: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    scrape_interval: 1s\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n{auth}    tls_config:\n      ca_file: ca.crt\n{tls}"
        )
    };
    let auth = format!("    basic_auth: {{username: {USER}, password_file: password}}\n");
    let cert = "      cert_file: client.crt\n      key_file: client.key\n";
    let jobs = [
        job("complete", &format!("{cert}      server_name: localhost\n      min_version: TLS13\n"), &auth),
        job("no_password", cert, ""),
        job("no_certificate", "", &auth),
        job("other_name", &format!("{cert}      server_name: example.org\n"), &auth),
    ];
    std::fs::write(dir.path().join("prometheus.yml"), format!("scrape_configs:\n{}", jobs.concat())).unwrap();
    let s = start_on(dir.path(), port, &[&format!("--web.config.file={}", web.display())]);
    let ca = dir.path().join("ca.crt").display().to_string();
    let good = format!("{USER}:{PASSWORD}");
    let up = || {
        let (_, body) = curl(&[
            "--cacert",
            &ca,
            "--cert",
            &dir.path().join("client.crt").display().to_string(),
            "--key",
            &dir.path().join("client.key").display().to_string(),
            "-u",
            &good,
            &format!("https://127.0.0.1:{port}/api/v1/query?query=up"),
        ]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let mut up: Vec<(String, String)> = v["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| {
                        (
                            s["metric"]["job"].as_str().unwrap_or("").to_string(),
                            s["value"][1].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        up.sort();
        up
    };
    let all = wait_for(Duration::from_secs(30), || (up().len() == 4).then_some(()));
    assert!(all.is_some(), "not every job was scraped: {:?}\n{}", up(), s.logs());
    let expected: Vec<(String, String)> =
        [("complete", "1"), ("no_certificate", "0"), ("no_password", "0"), ("other_name", "0")]
            .iter()
            .map(|(j, v)| (j.to_string(), v.to_string()))
            .collect();
    assert_eq!(up(), expected, "{}", s.logs());
}

#[test]
fn client_certificates_must_carry_one_of_the_allowed_sans() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.issue(
        "alice",
        "extendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://example.org/alice,email:alice@example.org",
    );
    pki.issue("bob", "extendedKeyUsage=clientAuth\nsubjectAltName=IP:10.1.2.3");
    pki.issue("carol", "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:carol.example");
    let web = mutual_tls_web_config(
        dir.path(),
        "  client_allowed_sans: ['spiffe://example.org/alice', '10.1.2.3']\n",
    );
    let s = start(dir.path(), &[&format!("--web.config.file={}", web.display())]);
    let url = format!("https://127.0.0.1:{}/-/healthy", s.port);
    let ca = pki.path("ca.crt");
    let with = |name: &str| {
        let (cert, key) = (pki.path(&format!("{name}.crt")), pki.path(&format!("{name}.key")));
        curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &url]).0
    };
    assert_eq!(with("alice"), 200, "a URI SAN that is allowed");
    assert_eq!(with("bob"), 200, "an IP SAN that is allowed");
    assert_eq!(with("carol"), 0, "a DNS SAN that is not");
    assert_eq!(with("client"), 0, "no SAN at all");
    // a certificate that is not required cannot be matched: refused at start-up
    let loose = dir.path().join("loose.yml");
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n  client_allowed_sans: [x]\n";
    std::fs::write(&loose, tls).unwrap();
    let log = refused_start(dir.path(), &[&format!("--web.config.file={}", loose.display())]);
    assert!(log.contains("client_allowed_sans requires"), "{log}");
}

#[test]
fn the_rate_limit_answers_429_beyond_its_burst_and_refills() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, format!("rate_limit:\n  burst: 3\n  interval: 2s\n{}", users_yaml())).unwrap();
    let s = start(dir.path(), &[&format!("--web.config.file={}", web.display())]);
    let good = format!("{USER}:{PASSWORD}");
    let codes: Vec<u16> = (0..5).map(|_| curl(&["-u", &good, &s.url("/-/healthy")]).0).collect();
    assert_eq!(codes, [200, 200, 200, 429, 429]);
    // the limit comes before the credentials: a wrong password beyond it is 429, not 401
    assert_eq!(curl(&["-u", &format!("{USER}:wrong"), &s.url("/-/healthy")]).0, 429);
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(curl(&["-u", &good, &s.url("/-/healthy")]).0, 200, "one token back after the interval");
    assert_eq!(curl(&["-u", &good, &s.url("/-/healthy")]).0, 429);
}

#[test]
fn settings_promflow_cannot_honour_stop_it_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, says) in [
        ("basic_auth_users:\n  alice: not-a-hash\n", "not a bcrypt hash"),
        ("rate_limit:\n  interval: soon\n  burst: 5\n", "soon"),
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n", "missing.crt"),
        ("tls_server_config:\n  cert_file: a.crt\n", "missing key_file"),
        (
            "tls_server_config:\n  min_version: TLS10\n  max_version: TLS11\n  cert_file: a\n  key_file: b\n",
            "TLS 1.2 and 1.3 only",
        ),
        ("http_server_config:\n  headers:\n    Server: promflow\n", "can not be configured"),
        ("no_such_section: {}\n", "no_such_section"),
    ] {
        let web = dir.path().join("web.yml");
        std::fs::write(&web, yaml).unwrap();
        let log = refused_start(dir.path(), &[&format!("--web.config.file={}", web.display())]);
        assert!(log.contains(says), "{yaml}: {log}");
    }
    let log = refused_start(dir.path(), &["--web.config.file=/no/such/web.yml"]);
    assert!(log.contains("/no/such/web.yml"), "{log}");
}

#[test]
fn response_headers_cors_connection_cap_and_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: default-src 'self'\n",
    )
    .unwrap();
    let s = start(
        dir.path(),
        &[
            &format!("--web.config.file={}", web.display()),
            "--web.cors.origin=https://grafana\\.example\\.com",
            "--web.max-connections=4",
            "--web.read-timeout=2s",
        ],
    );
    let head = |args: &[&str]| {
        let out = Command::new("curl").args(["-s", "-i", "-m", "10"]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_lowercase()
    };
    let h = head(&[&s.url("/api/v1/query?query=1")]);
    assert!(
        h.contains("x-frame-options: deny") && h.contains("content-security-policy: default-src 'self'"),
        "{h}"
    );
    let h = head(&["-H", "Origin: https://grafana.example.com", &s.url("/api/v1/query?query=1")]);
    assert!(h.contains("access-control-allow-origin: https://grafana.example.com"), "{h}");
    let h = head(&["-H", "Origin: https://evil.example.com", &s.url("/api/v1/query?query=1")]);
    assert!(!h.contains("access-control-allow-origin"), "{h}");

    // four idle connections hold every slot: a fifth request waits until one goes
    let mut idle: Vec<TcpStream> =
        (0..4).map(|_| TcpStream::connect(("127.0.0.1", s.port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (code, _) = curl(&["-m", "1", &s.url("/-/healthy")]);
    assert_eq!(code, 0, "a fifth connection was served while four were open");
    // the read timeout closes the idle ones: the server ends them within a bounded time
    let mut buf = [0u8; 64];
    let closed = idle.iter_mut().all(|c| {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.read(&mut buf).is_ok()
    });
    assert!(closed, "idle connections were not closed");
    let served = wait_for(Duration::from_secs(10), || {
        (curl(&["-m", "2", &s.url("/-/healthy")]).0 == 200).then_some(())
    });
    assert!(served.is_some(), "the server did not serve after the idle connections went");
    // a slow request body is cut off by the same timeout
    let mut slow = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(slow, "POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nquery=").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
}
