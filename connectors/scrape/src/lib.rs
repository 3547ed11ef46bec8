//! Scraping: the exposition-format parsers, file-based service discovery, and the scrape
//! manager that runs one loop per target and appends what it scrapes to storage.
#![warn(missing_docs)]

pub mod client;
pub mod consul_sd;
pub mod dns_sd;
pub mod exposition;
pub mod file_sd;
pub mod http_sd;
pub mod kubernetes_sd;
mod manager;
pub mod push;

pub use manager::{CopySink, ScrapeManager, ScrapedSamples, StartTimestampOptions, TargetFilter, TargetInfo};

/// Errors of the scrape manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP client for a scrape config could not be built (TLS files, auth headers).
    #[error("scrape client: {0}")]
    Client(String),
    /// A `scrape_failure_log_file` could not be opened.
    #[error("opening the scrape failure log {path}: {source}")]
    FailureLog {
        /// The configured path.
        path: String,
        /// Why it could not be opened.
        source: std::io::Error,
    },
    /// A lock was poisoned by a panic elsewhere.
    #[error("scrape manager state is poisoned")]
    Poisoned,
}
