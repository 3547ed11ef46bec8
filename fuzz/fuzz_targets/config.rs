//! `prometheus.yml`, rule files (with their expressions and templates checked as the server
//! checks them) and the web configuration, as YAML text.
#![no_main]

use promflow_config::rules::{RuleChecks, RuleFile};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = promflow_config::Config::parse(text, "fuzz.yml");
        let _ = promflow_config::web::WebConfig::parse(text, "web.yml");
        let checks = RuleChecks {
            parse_expr: &|e| {
                promflow_promql::compile(e, &Default::default()).map(drop).map_err(|e| e.to_string())
            },
            parse_sql: &|q| promflow_sql::standing(q).map(drop).map_err(|e| e.to_string()),
            parse_template: &|name, text| promflow_template::check(name, text).map_err(|e| e.to_string()),
        };
        let _ = RuleFile::parse(text, "rules.yml", &checks);
    }
});
