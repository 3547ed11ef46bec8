//! Append-only files of JSON lines that an operator configures (`global.query_log_file`,
//! `scrape_failure_log_file`): reopened at every configuration load, so a log rotated away is
//! written anew after a reload, as Prometheus's are.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

/// One configured log file, or none. Lines from concurrent writers never interleave.
#[derive(Default)]
pub struct JsonLog {
    file: Mutex<Option<File>>,
    failures: std::sync::atomic::AtomicU64,
}

impl JsonLog {
    /// A log appending to `path` (created if needed).
    pub fn open(path: &str) -> std::io::Result<JsonLog> {
        let log = JsonLog::default();
        log.apply(Some(path))?;
        Ok(log)
    }

    /// Opens `path` for appending (created if needed), or closes the log for `None`. An error
    /// leaves the previous file in place.
    pub fn apply(&self, path: Option<&str>) -> std::io::Result<()> {
        let file = match path {
            Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = file;
        Ok(())
    }

    /// Whether a file is open.
    pub fn enabled(&self) -> bool {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Appends `line` and a newline in one write; a failed write is reported in promflow's
    /// own log, never to whoever caused the line.
    pub fn write(&self, line: &serde_json::Value) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = file.as_mut() else { return };
        let mut text = line.to_string();
        text.push('\n');
        if let Err(e) = f.write_all(text.as_bytes()) {
            self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %e, "writing a log file failed");
        }
    }

    /// Lines that could not be written.
    pub fn failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `ms` (Unix milliseconds) as RFC 3339 in UTC with milliseconds, the time format of
/// Prometheus's JSON logs.
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_and_a_reopen_follows_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let p = path.to_str().unwrap();
        let log = JsonLog::open(p).unwrap();
        log.write(&serde_json::json!({"a": 1}));
        std::fs::rename(&path, dir.path().join("old.json")).unwrap();
        log.apply(Some(p)).unwrap();
        log.write(&serde_json::json!({"b": "x\ny"}));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"b\":\"x\\ny\"}\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("old.json")).unwrap(), "{\"a\":1}\n");
        log.apply(None).unwrap();
        assert!(!log.enabled());
    }
}
