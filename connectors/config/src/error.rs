//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong loading a configuration or using its pieces.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is invalid: bad YAML, an unknown field, a wrong type, or a value
    /// Prometheus would reject. Displays as `file:line:column: message` (the position is left
    /// out when it is not known).
    #[error("{}", display_config(file, *line, *column, message))]
    Config {
        /// The file the problem is in, as given to the loader.
        file: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What is wrong; it names the offending field or value.
        message: String,
    },
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A string is not a Prometheus duration.
    #[error("{0}")]
    InvalidDuration(String),
    /// A string is not a Prometheus size.
    #[error("{0}")]
    InvalidSize(String),
    /// A relabel rule is invalid (bad action, regex, or missing field).
    #[error("{0}")]
    InvalidRelabel(String),
    /// A cluster's secret file (`--cluster.secret-file`) holds no usable secret.
    #[error("{}: {message}", path.display())]
    ClusterSecret {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        message: String,
    },
    /// A client's `tls_config` cannot be used: a certificate or key that does not parse, a
    /// version rustls does not speak, a bad `server_name`.
    #[error("tls_config: {message}")]
    ClientTls {
        /// What is wrong.
        message: String,
    },
}

fn display_config(file: &str, line: Option<usize>, column: Option<usize>, message: &str) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}: {message}"),
        (Some(l), None) => format!("{file}:{l}: {message}"),
        _ => format!("{file}: {message}"),
    }
}

impl Error {
    pub(crate) fn config(
        file: &str,
        line: Option<usize>,
        column: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        Error::Config { file: file.to_string(), line, column, message: message.into() }
    }
}
