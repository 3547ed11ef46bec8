//! A scrape's body in the text format, in OpenMetrics and in protobuf, with every histogram
//! option on (native histograms, classic ones kept and converted to custom buckets).
#![no_main]

use promflow_scrape::exposition::{parse, parse_with, Format, HistogramOptions};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let all = HistogramOptions { native: true, keep_classic: true, classic_to_custom_buckets: true };
    let _ = parse(data, Format::Text);
    let _ = parse_with(data, Format::OpenMetrics, &all);
    let _ = parse_with(data, Format::Protobuf, &all);
});
