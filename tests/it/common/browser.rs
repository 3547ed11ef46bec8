//! A headless Chromium session driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`): what the browser tests (`tests/it/ui.rs`) and the UI benchmark
//! (`benches/ui.rs`) share. Included by path (`#[path]`) next to `common`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{client, free_port, peer, wait_for};

/// WebDriver's key for an element reference in its answers.
pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a page may take to show what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A headless Chromium session through chromedriver, both ended when dropped.
pub struct Browser {
    http: reqwest::blocking::Client,
    session: String,
    driver: Child,
}

impl Browser {
    /// `None` (the test skips) where Chromium is not installed outside CI.
    pub fn start() -> Option<Browser> {
        Browser::start_on(None)
    }

    /// Like [`Browser::start`], the driver and the browser it starts kept to `cpu` when one
    /// is given (`taskset`, inherited by the browser's processes): a benchmark keeps the
    /// browser off the server's CPU.
    pub fn start_on(cpu: Option<usize>) -> Option<Browser> {
        let driver_bin = peer("chromedriver")?;
        let chromium = peer("chromium")?;
        let port = free_port();
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(driver_bin);
                c
            }
            None => Command::new(driver_bin),
        };
        let driver = command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = client();
        let base = format!("http://127.0.0.1:{port}");
        let ready = wait_for(PATIENCE, || {
            let v: Value =
                serde_json::from_slice(&http.get(format!("{base}/status")).send().ok()?.bytes().ok()?)
                    .ok()?;
            v["value"]["ready"].as_bool().filter(|r| *r)
        });
        let mut browser = Browser { http, session: base.clone(), driver };
        assert!(ready.is_some(), "chromedriver did not become ready on port {port}");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
        }}});
        let v = browser.call("POST", "", capabilities);
        let id = v["sessionId"].as_str().expect("a WebDriver session id").to_string();
        browser.session = format!("{base}/session/{id}");
        Some(browser)
    }

    /// A WebDriver command on the session (the new-session command when `path` is empty).
    pub fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = if path.is_empty() {
            format!("{}/session", self.session)
        } else {
            format!("{}{path}", self.session)
        };
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).header("Content-Type", "application/json").body(body.to_string()),
        };
        let bytes = request.send().and_then(|r| r.bytes()).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        if v["value"]["error"].is_string() {
            panic!("{method} {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({"url": url}));
    }

    /// The elements `css` selects now.
    pub fn all(&self, css: &str) -> Vec<String> {
        let v = self.call("POST", "/elements", json!({"using": "css selector", "value": css}));
        v.as_array().unwrap().iter().map(|e| e[ELEMENT].as_str().unwrap().to_string()).collect()
    }

    /// Waits for the first element `css` selects.
    pub fn find(&self, css: &str) -> String {
        wait_for(PATIENCE, || self.all(css).into_iter().next())
            .unwrap_or_else(|| self.fail(&format!("no {css}")))
    }

    pub fn click(&self, element: &str) {
        self.call("POST", &format!("/element/{element}/click"), json!({}));
    }

    /// Moves the mouse to `(x, y)` pixels from the centre of `element`.
    pub fn hover(&self, element: &str, x: i64, y: i64) {
        let origin = json!({ ELEMENT: element });
        let moved = json!({"type": "pointerMove", "origin": origin, "x": x, "y": y, "duration": 0});
        let pointer = json!({"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": [moved]});
        self.call("POST", "/actions", json!({ "actions": [pointer] }));
    }

    pub fn type_into(&self, element: &str, text: &str) {
        self.call("POST", &format!("/element/{element}/value"), json!({"text": text}));
    }

    pub fn script(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": script, "args": []}))
    }

    /// Presses `keys` one after the other on whatever has the focus (WebDriver's codes for
    /// the special keys: `\u{E004}` Tab, `\u{E007}` Enter, `\u{E014}` →, `\u{E015}` ↓).
    pub fn press(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| [json!({"type": "keyDown", "value": c}), json!({"type": "keyUp", "value": c})])
            .collect();
        self.call(
            "POST",
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        );
    }

    /// Presses Tab until the element `css` selects has the focus (fails after 30 presses).
    pub fn tab_to(&self, css: &str) {
        for _ in 0..30 {
            if self.script(&format!("return document.activeElement.matches({css:?});")).as_bool()
                == Some(true)
            {
                return;
            }
            self.press("\u{E004}");
        }
        self.fail(&format!("Tab never reached {css}"));
    }

    /// Sets the window's size in CSS pixels.
    pub fn resize(&self, width: u32, height: u32) {
        self.call("POST", "/window/rect", json!({"width": width, "height": height}));
    }

    /// Runs `script` as WebDriver's asynchronous script: it ends by calling its last
    /// argument (`arguments[arguments.length - 1]`) with the answer.
    pub fn script_async(&self, script: &str, args: Value) -> Value {
        self.call("POST", "/execute/async", json!({"script": script, "args": args}))
    }

    /// The text of everything `css` selects, once `done` holds for it (fails after a while).
    /// Read in one script call: a live page replaces its elements as changes arrive, so
    /// elements found by one command may be gone by the next.
    pub fn wait_texts(&self, css: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let mut last = Vec::new();
        let found = wait_for(PATIENCE, || {
            let texts = self.call(
                "POST",
                "/execute/sync",
                json!({"script": "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText);", "args": [css]}),
            );
            last = texts.as_array()?.iter().map(|t| t.as_str().unwrap_or("").to_string()).collect();
            done(&last).then(|| last.clone())
        });
        found.unwrap_or_else(|| self.fail(&format!("{css} never as expected; last seen {last:?}")))
    }

    /// Saves a screenshot as `target/ui-screenshots/<name>.png`; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call("GET", "/screenshot", Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Fails the test with what the page shows, and a screenshot of it.
    pub fn fail(&self, why: &str) -> ! {
        let path = self.screenshot("failure");
        let body = self.script("return document.body.innerText;");
        panic!("{why}\npage text: {body}\nscreenshot: {}", path.display());
    }

    /// How many of the first canvas's pixels are drawn (not transparent).
    pub fn drawn_pixels(&self) -> u64 {
        let v = self.script(
            "const c = document.querySelector('.chart canvas'); if (!c) return 0; \
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
             let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;",
        );
        v.as_u64().unwrap_or(0)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.session).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
