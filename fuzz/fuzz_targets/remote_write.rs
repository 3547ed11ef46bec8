//! A remote-write body: snappy and zstd decompression, then 1.0 and 2.0 message decoding,
//! and the decoded series appended to a real database as the receiver does.
#![no_main]

use std::sync::OnceLock;

use promflow_remote::{append_request, decompress, decompress_zstd, RequestView};
use promflow_storage::{Db, DbOptions};

fn db() -> &'static std::sync::Arc<Db> {
    static DB: OnceLock<(tempfile::TempDir, std::sync::Arc<Db>)> = OnceLock::new();
    let (_, db) = DB.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let opts = DbOptions { compaction_interval: None, ..DbOptions::default() };
        let db = Db::open(dir.path(), opts).expect("a database");
        (dir, db)
    });
    db
}

fn decode(raw: &[u8]) {
    for view in [RequestView::parse(raw), RequestView::parse_v2(raw)].into_iter().flatten() {
        let mut app = db().appender();
        match append_request(&view, false, app.as_mut()) {
            Ok(_) => {
                let _ = app.commit();
            }
            Err(_) => app.rollback(),
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    decode(data);
    if let Ok(raw) = decompress(data) {
        decode(&raw);
    }
    if let Ok(raw) = decompress_zstd(data) {
        decode(&raw);
    }
});
