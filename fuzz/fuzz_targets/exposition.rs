//! A scrape's body in the text format and in OpenMetrics.
#![no_main]

use promflow_scrape::exposition::{parse, Format};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = parse(data, Format::Text);
    let _ = parse(data, Format::OpenMetrics);
});
