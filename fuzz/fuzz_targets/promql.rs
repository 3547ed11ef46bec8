//! PromQL text through the front end: parse, check and lower to the plan IR.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = promflow_promql::compile(text, &Default::default());
    }
});
