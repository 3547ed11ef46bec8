//! SQL text through the front end (not only sqlparser): the nesting bounds, parsing and
//! compilation to promflow's statements, and the standing form subscriptions use.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = promflow_sql::compile(text, 1_700_000_000_000);
        let _ = promflow_sql::standing(text);
    }
});
