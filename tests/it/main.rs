//! The end-to-end tests: the real `promflow` binary, started on 127.0.0.1 with its real peers,
//! one module per feature (`common` starts servers and peers and talks to them). One test
//! binary links once for all of them.

mod common;
#[path = "../promql_script/mod.rs"]
mod promql_script;

mod alerting;
mod api;
mod cluster;
mod cluster_corpus;
mod differential;
mod docs;
mod durability;
mod federation;
mod kubernetes_sd;
mod layering;
mod otlp;
mod push;
mod reload;
mod remote_read;
mod remote_write_out;
mod rules;
mod rules_unit;
mod scrape;
mod sql;
mod sql_postgres;
mod start_timestamps;
mod storage;
mod subscribe;
mod templates;
mod trust;
mod ui;
mod web_security;
