//! Go templates as alerting rules' annotations use them: parsed, then expanded.
#![no_main]

use promflow_template::{AlertData, Template};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = Template::parse("fuzz", text) {
            let alert = AlertData {
                labels: [("instance".to_string(), "a:9100".to_string())].into_iter().collect(),
                value: 1.5,
                ..AlertData::default()
            };
            let _ = t.expand(&alert, 1_700_000_000.0, None);
        }
    }
});
