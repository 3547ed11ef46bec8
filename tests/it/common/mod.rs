//! Shared helpers of the end-to-end tests: start the real `promflow` binary (and real peers)
//! on 127.0.0.1 with bounded waits, push remote-write payloads, query the HTTP API.
#![allow(dead_code)]

pub mod postgres;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use promflow_remote::{Label, Sample, TimeSeries, WriteRequest};
use serde_json::Value;

/// Ports this test process has handed out, released ([`free_port`]) or held ([`listener`]):
/// a port released by one helper was once bound again at once by another, so that a "closed"
/// target and a live one of the same test shared an address.
static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A listener on 127.0.0.1 at a port this test process never handed out before.
pub fn listener() -> TcpListener {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return l;
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests), never one this
/// test process handed out before: two servers of one test asked for ports in a row and were
/// once given the same one.
pub fn free_port() -> u16 {
    listener().local_addr().unwrap().port()
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

/// A running server process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let r = client().get(self.url(path)).send().unwrap();
        let code = r.status().as_u16();
        let text = r.text().unwrap();
        (code, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
    }

    pub fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let r = client().post(self.url(path)).form(form).send().unwrap();
        let code = r.status().as_u16();
        let text = r.text().unwrap();
        (code, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
    }

    pub fn get_text(&self, path: &str) -> (u16, String) {
        let r = client().get(self.url(path)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to 30 s for the log to say the server is ready: for a server whose
    /// readiness endpoint needs credentials or TLS. Panics if it exits or does not start.
    pub fn wait_logged_ready(&mut self) {
        let ready = wait_for(Duration::from_secs(30), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("promflow exited ({status}):\n{}", self.logs());
            }
            self.logs().contains("server is ready").then_some(())
        });
        assert!(ready.is_some(), "promflow did not start:\n{}", self.logs());
    }

    /// Waits up to 30 s for `path` to answer 2xx (the server's readiness endpoint).
    pub fn wait_ready(&mut self, path: &str) {
        let url = self.url(path);
        let ok = wait_for(Duration::from_secs(30), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited early ({status}):\n{}", self.logs());
            }
            client().get(&url).send().ok().filter(|r| r.status().is_success()).map(|_| ())
        });
        assert!(ok.is_some(), "server did not become ready:\n{}", self.logs());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts promflow with `config` (YAML text) in `dir`, on a free port, with `extra` flags.
pub fn start_promflow(dir: &Path, config: &str, extra: &[&str]) -> Server {
    let cfg = dir.join("prometheus.yml");
    if !cfg.exists() || !config.is_empty() {
        std::fs::write(&cfg, config).unwrap();
    }
    start_promflow_with(dir, &cfg, free_port(), extra)
}

pub fn start_promflow_with(dir: &Path, cfg: &Path, port: u16, extra: &[&str]) -> Server {
    let mut s = spawn_promflow(dir, cfg, port, extra);
    s.wait_ready("/-/ready");
    s
}

/// Starts promflow as [`start_promflow_with`] does, without waiting for it to be ready.
pub fn spawn_promflow(dir: &Path, cfg: &Path, port: u16, extra: &[&str]) -> Server {
    let log = dir.join(format!("promflow-{port}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_promflow"))
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start promflow");
    Server { child, port, base: format!("http://127.0.0.1:{port}"), log }
}

/// Whether a peer binary exists; outside CI a missing peer skips the test with a message,
/// in CI (CI=true) it is a failure because `.ci/run` installs every peer.
pub fn peer(bin: &str) -> Option<PathBuf> {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return Some(p);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("peer {bin} is not installed; .ci/run installs it from Debian's packages");
    }
    eprintln!("SKIP: {bin} is not installed (apt-get install the Debian package to run this test)");
    None
}

/// Whether the python3 on PATH (the one `.ci/install-peers` installs into) has the PyPI
/// package `module`; outside CI a missing one skips the test with a message, in CI it is a
/// failure.
pub fn python_has(module: &str) -> bool {
    let has =
        Command::new("python3").args(["-c", &format!("import {module}")]).status().is_ok_and(|s| s.success());
    if !has {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{module} is not installed; .ci/install-peers installs it from PyPI");
        }
        eprintln!("SKIP: {module} is not installed (python3 -m pip install {module} to run this test)");
    }
    has
}

/// The JSON objects of a JSON-lines file (a query or scrape failure log); none while it does
/// not exist.
pub fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// `s` escaped for a URL's query string.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Starts Debian's Prometheus with the remote-write receiver on a free port.
pub fn start_prometheus(dir: &Path, config: &str) -> Option<Server> {
    start_prometheus_on(dir, config, free_port())
}

/// [`start_prometheus`] on `port` (a restart keeps its address and `dir/prom-data`).
pub fn start_prometheus_on(dir: &Path, config: &str, port: u16) -> Option<Server> {
    start_prometheus_with(dir, config, port, &[])
}

/// [`start_prometheus_on`] with more flags (`--enable-feature=…`).
pub fn start_prometheus_with(dir: &Path, config: &str, port: u16, flags: &[&str]) -> Option<Server> {
    let bin = peer("prometheus")?;
    let cfg = dir.join("prom.yml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.join(format!("prometheus-{port}-{}.log", now_ms()));
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("prom-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .args(flags)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start prometheus");
    let mut s = Server { child, port, base: format!("http://127.0.0.1:{port}"), log };
    s.wait_ready("/-/ready");
    Some(s)
}

/// A series for a remote-write request.
pub fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    let mut labels: Vec<Label> =
        labels.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    TimeSeries {
        exemplars: Vec::new(),
        labels,
        samples: samples.iter().map(|&(t, v)| Sample { timestamp: t, value: v }).collect(),
        histograms: Vec::new(),
    }
}

/// A series of counter native histograms, one at each `(time, n)`: `n` observations in the
/// zero bucket and in each of three positive buckets (schema 0), summing to `3n`.
pub fn histogram_series(labels: &[(&str, &str)], points: impl IntoIterator<Item = (i64, f64)>) -> TimeSeries {
    use promflow_remote::{BucketSpan, Histogram};
    let mut ts = series(labels, &[]);
    ts.histograms = points
        .into_iter()
        .map(|(t, n)| Histogram {
            count_float: Some(4.0 * n),
            sum: 3.0 * n,
            schema: 0,
            zero_threshold: 0.001,
            zero_count_float: Some(n),
            positive_spans: vec![BucketSpan { offset: 0, length: 3 }],
            positive_counts: vec![n, n, n],
            timestamp: t,
            ..Histogram::default()
        })
        .collect();
    ts
}

/// Sends a remote-write request; returns the HTTP status and body.
pub fn remote_write(server: &Server, ts: Vec<TimeSeries>) -> (u16, String) {
    try_remote_write(&client(), &server.base, ts).unwrap()
}

/// [`remote_write`] to the server at `base` over `http`: the client's error when the server
/// did not answer.
pub fn try_remote_write(
    http: &reqwest::blocking::Client,
    base: &str,
    ts: Vec<TimeSeries>,
) -> reqwest::Result<(u16, String)> {
    let body = promflow_remote::encode(&WriteRequest { timeseries: ts, metadata: vec![] });
    let r = http
        .post(format!("{base}/api/v1/write"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()?;
    Ok((r.status().as_u16(), r.text().unwrap_or_default()))
}

/// The value of the unlabelled metric `name` on `server`'s `/metrics`.
pub fn metric(server: &Server, name: &str) -> f64 {
    let (_, text) = server.get_text("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// The `data.result` array of an API answer.
pub fn result(v: &Value) -> &Vec<Value> {
    v["data"]["result"].as_array().unwrap_or_else(|| panic!("no result array in {v}"))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A query answer as series key → [(timestamp text, value)], for comparing two servers.
pub fn canonical(v: &Value) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut out = BTreeMap::new();
    let data = &v["data"];
    let items: Vec<Value> = match data["resultType"].as_str() {
        Some("vector") | Some("matrix") => data["result"].as_array().cloned().unwrap_or_default(),
        Some("scalar") => vec![serde_json::json!({"metric": {}, "value": data["result"]})],
        _ => vec![],
    };
    for item in items {
        let key = item["metric"].to_string();
        // a native histogram: its count, sum and every bucket, each as a point of its own
        let hists: Vec<Value> = match (item.get("histogram"), item.get("histograms")) {
            (Some(h), _) => vec![h.clone()],
            (_, Some(hs)) => hs.as_array().cloned().unwrap_or_default(),
            _ => vec![],
        };
        for p in hists {
            let (t, h) = (p[0].to_string(), &p[1]);
            let number = |v: &Value| v.as_str().unwrap_or("").parse::<f64>().unwrap_or(f64::NAN);
            let entry = out.entry(format!("{key} histogram")).or_insert_with(Vec::new);
            entry.push((format!("{t} count"), number(&h["count"])));
            entry.push((format!("{t} sum"), number(&h["sum"])));
            for b in h["buckets"].as_array().into_iter().flatten() {
                entry.push((format!("{t} bucket {} {} {}", b[0], b[1], b[2]), number(&b[3])));
            }
        }
        if item.get("value").is_none() && item.get("values").is_none() {
            continue;
        }
        let mut points = Vec::new();
        let vals: Vec<Value> = match item.get("values") {
            Some(v) => v.as_array().cloned().unwrap_or_default(),
            None => vec![item["value"].clone()],
        };
        for p in vals {
            points.push((p[0].to_string(), p[1].as_str().unwrap_or("").parse::<f64>().unwrap_or(f64::NAN)));
        }
        out.insert(key, points);
    }
    out
}

/// Whether two canonical answers agree: the same series and timestamps, values equal within
/// 1e-9 relative (NaN equals NaN).
pub fn same(
    a: &BTreeMap<String, Vec<(String, f64)>>,
    b: &BTreeMap<String, Vec<(String, f64)>>,
) -> Result<(), String> {
    if a.keys().collect::<Vec<_>>() != b.keys().collect::<Vec<_>>() {
        return Err(format!("series differ:\n promflow: {:?}\n prometheus: {:?}", a.keys(), b.keys()));
    }
    for (k, pa) in a {
        let pb = &b[k];
        if pa.len() != pb.len() {
            let ta: Vec<&String> = pa.iter().map(|p| &p.0).collect();
            let tb: Vec<&String> = pb.iter().map(|p| &p.0).collect();
            return Err(format!("{k}: {} points vs {}: {ta:?} vs {tb:?}", pa.len(), pb.len()));
        }
        for ((ta, va), (tb, vb)) in pa.iter().zip(pb) {
            let close = (va.is_nan() && vb.is_nan())
                || va == vb
                || ((va - vb).abs() <= 1e-9 * va.abs().max(vb.abs()));
            if ta != tb || !close {
                return Err(format!("{k}: ({ta}, {va}) vs ({tb}, {vb})"));
            }
        }
    }
    Ok(())
}

/// Resident memory of process `pid` in KiB, from `/proc` (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The median of `v` (the upper one of an even count); `v` must not be empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A receiver that records every POST body and fails the first `fail_first` requests with
/// 500: an Alertmanager stand-in (Alertmanager cannot be made to fail on demand), and a
/// remote-write receiver that keeps what Prometheus and VictoriaMetrics drop (metadata).
pub struct Capture {
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    /// Each request as its request line, a newline, and its body.
    pub bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Each request's body as sent (binary protocols: remote write).
    pub raw: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    /// When each request arrived.
    pub arrived: std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
}

pub fn start_capture(fail_first: usize) -> Capture {
    use std::io::{BufReader, Read, Write};
    let listener = listener();
    let port = listener.local_addr().unwrap().port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let arrived = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let raw = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (seen, when, kept) =
        (std::sync::Arc::clone(&bodies), std::sync::Arc::clone(&arrived), std::sync::Arc::clone(&raw));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (seen, when, kept) =
                (std::sync::Arc::clone(&seen), std::sync::Arc::clone(&when), std::sync::Arc::clone(&kept));
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let Some((request_line, headers)) = read_request_head(&mut reader) else { return };
                    let len = header(&headers, "content-length").parse().unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    when.lock().unwrap().push(std::time::Instant::now());
                    let n = {
                        let mut b = seen.lock().unwrap();
                        b.push(format!("{request_line}\n{}", String::from_utf8_lossy(&body)));
                        b.len()
                    };
                    kept.lock().unwrap().push(body);
                    let reply: &[u8] = if n <= fail_first {
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    };
                    if stream.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Capture { port, bodies, raw, arrived }
}

/// An HTTP request's line and headers (names lower-cased), or `None` at the end of the
/// connection.
fn read_request_head(reader: &mut impl std::io::BufRead) -> Option<(String, Vec<(String, String)>)> {
    let (mut request, mut headers, mut line) = (String::new(), Vec::new(), String::new());
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some((request, headers));
        }
        if request.is_empty() {
            request = line.trim().to_string();
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
}

/// A header's value ("" when absent).
fn header<'h>(headers: &'h [(String, String)], name: &str) -> &'h str {
    headers.iter().find(|h| h.0 == name).map_or("", |h| h.1.as_str())
}

/// A scrape target on 127.0.0.1: every GET is answered with `answer(request line, Accept
/// header)`, a content type and a body. Returns the port.
pub fn serve_http(answer: impl Fn(&str, &str) -> (String, Vec<u8>) + Send + Sync + 'static) -> u16 {
    use std::io::{BufReader, Write};
    let listener = listener();
    let port = listener.local_addr().unwrap().port();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let answer = std::sync::Arc::clone(&answer);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let Some((request, headers)) = read_request_head(&mut reader) else { return };
                    let (content_type, body) =
                        answer(&request, &header(&headers, "accept").to_ascii_lowercase());
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Runs promflow with `extra` flags expecting it to refuse to start; returns its log.
pub fn refused_start(dir: &Path, extra: &[&str]) -> String {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_promflow"))
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promflow");
    let out = wait_child(out, Duration::from_secs(20));
    assert!(!out.status.success(), "promflow started with {extra:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits up to `limit` for `child` to end (killing it past that), with its output.
pub fn wait_child(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let done = wait_for(limit, || child.try_wait().ok().flatten());
    if done.is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().unwrap()
}

/// A websocket client of `/api/v1/subscribe` with bounded reads.
pub struct Subscriber {
    /// The websocket, for reads of one's own (read timeout 20 s).
    pub socket: tungstenite::WebSocket<std::net::TcpStream>,
}

impl Subscriber {
    /// Connects to `server`'s `/api/v1/subscribe`.
    pub fn connect(server: &Server) -> Subscriber {
        let stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let url = format!("ws://127.0.0.1:{}/api/v1/subscribe", server.port);
        let (socket, _) = tungstenite::client(url, stream).expect("websocket handshake");
        Subscriber { socket }
    }

    /// Sends a message.
    pub fn send(&mut self, message: Value) {
        self.socket.send(tungstenite::Message::Text(message.to_string().into())).unwrap();
    }

    /// The next message that is not a heartbeat.
    pub fn next(&mut self) -> Value {
        loop {
            match self.socket.read().expect("a message within 20 s") {
                tungstenite::Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] != "heartbeat" {
                        return v;
                    }
                }
                tungstenite::Message::Close(f) => panic!("closed by the server: {f:?}"),
                _ => {}
            }
        }
    }
}
