//! Blocks: one file of a real block (its first byte chooses which: `meta.json`, `index`,
//! `samples` or `tombstones`) replaced by the rest of the input, then the data
//! directory opened and every series read. A damaged block must be skipped or fail its
//! query, never panic.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use promflow_storage::{Db, DbOptions, Labels, MatchOp, Matcher, Querier};

const FILES: [&str; 4] = ["meta.json", "index", "samples", "tombstones"];

/// A block of three series written once, with a tombstone, kept for every run to copy.
fn pristine() -> &'static Path {
    static BLOCK: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, block) = BLOCK.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let opts = DbOptions { compaction_interval: None, ..DbOptions::default() };
        let db = Db::open(dir.path(), opts).expect("a database");
        let mut app = db.appender();
        for (i, job) in ["a", "b", "c"].iter().enumerate() {
            let labels = Labels::from_pairs([("__name__", "up"), ("job", job)]);
            for t in 0..200 {
                app.append(&labels, 1_000_000 + t * 15_000, (t as f64) * 0.5 + i as f64).expect("a sample");
            }
        }
        app.commit().expect("the commit");
        let job_b = [Matcher::new(MatchOp::Equal, "job", "b").expect("a matcher")];
        db.delete_series(&job_b, 1_000_000, 1_300_000).expect("a tombstone");
        let root = db.snapshot("seed", false).expect("a snapshot");
        db.close().expect("closed");
        let blocks = root.join("promflow/blocks");
        let block = std::fs::read_dir(&blocks).expect("the blocks").flatten().next().expect("a block").path();
        (dir, block)
    });
    block
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, content)) = data.split_first() else { return };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let block = dir.path().join("promflow/blocks").join(pristine().file_name().expect("a name"));
    std::fs::create_dir_all(&block).expect("the block directory");
    for entry in std::fs::read_dir(pristine()).expect("the pristine block").flatten() {
        std::fs::copy(entry.path(), block.join(entry.file_name())).expect("a copy");
    }
    std::fs::write(block.join(FILES[which as usize % FILES.len()]), content).expect("the fuzzed file");
    let opts = DbOptions { compaction_interval: None, ..DbOptions::default() };
    if let Ok(db) = Db::open(dir.path(), opts) {
        let all = [Matcher::new(MatchOp::Regex, "__name__", ".+").expect("a matcher")];
        let _ = db.select(&all, i64::MIN, i64::MAX);
        let _ = db.label_values("job", &[], i64::MIN, i64::MAX);
        let _ = db.close();
    }
});
