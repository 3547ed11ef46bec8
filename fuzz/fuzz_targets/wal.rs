//! WAL records: the bytes as the only segment of a data directory that a database opens
//! (replay cuts a torn or corrupt tail; it must never panic).
#![no_main]

use promflow_storage::{Db, DbOptions};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let wal = dir.path().join("promflow/wal");
    std::fs::create_dir_all(&wal).expect("the WAL directory");
    std::fs::write(wal.join("00000000"), data).expect("the segment");
    let opts = DbOptions { compaction_interval: None, ..DbOptions::default() };
    if let Ok(db) = Db::open(dir.path(), opts) {
        let _ = db.close();
    }
});
