//! promflow's HTTP server: Prometheus's HTTP API v1, the lifecycle endpoints, the
//! remote-write receiver, promflow's own metrics and the web UI, on axum.
#![warn(missing_docs)]

mod api;
mod federate;
mod gzip;
mod metrics;
pub mod params;
mod push;
mod pushdown;
mod query_log;
mod query_pool;
mod remote_read;
mod serve;
pub mod sql;
mod subscribe;
mod ui;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub use api::router;
pub use metrics::HttpMetrics;
pub use pushdown::{PushdownCounts, RulePushdown};
pub use query_log::{LoggedQuery, QueryLog, QueryOrigin, QueryTimings};
pub use query_pool::QueryPool;
pub use serve::{serve, Listeners};
pub use subscribe::{compile_shared, SubscriptionLimits, Subscriptions};

/// Errors of the HTTP server itself (binding, serving).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("listen on {0}: {1}")]
    Bind(String, #[source] std::io::Error),
    /// Serving failed.
    #[error("serve: {0}")]
    Serve(#[source] std::io::Error),
}

/// An API error with Prometheus's `errorType` and HTTP status.
#[derive(Debug)]
pub struct ApiError {
    /// `bad_data`, `execution`, `timeout`, `canceled`, `internal`, `unavailable`, `not_found`.
    pub error_type: &'static str,
    /// The message.
    pub message: String,
    /// The HTTP status.
    pub status: StatusCode,
}

impl ApiError {
    /// A 400 `bad_data` error.
    pub fn bad_data(message: String) -> Self {
        ApiError { error_type: "bad_data", message, status: StatusCode::BAD_REQUEST }
    }

    /// A 422 `execution` error.
    pub fn execution(message: String) -> Self {
        ApiError { error_type: "execution", message, status: StatusCode::UNPROCESSABLE_ENTITY }
    }

    /// A 500 `internal` error.
    pub fn internal(message: String) -> Self {
        ApiError { error_type: "internal", message, status: StatusCode::INTERNAL_SERVER_ERROR }
    }

    /// A `canceled` error, with the status Prometheus gives it (499: the client went away).
    pub fn canceled(message: String) -> Self {
        ApiError {
            error_type: "canceled",
            message,
            status: StatusCode::from_u16(499).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        }
    }

    /// A 503 `timeout` error.
    pub fn timeout(message: String) -> Self {
        ApiError { error_type: "timeout", message, status: StatusCode::SERVICE_UNAVAILABLE }
    }
}

/// The one map from the engine's errors to the API's, for every endpoint that evaluates a
/// plan (PromQL and SQL alike): a plan the executor refuses is the query's fault (400), too
/// many samples is `execution` (422) as in Prometheus, storage failing is the server's (500).
impl From<promflow_plan::Error> for ApiError {
    fn from(e: promflow_plan::Error) -> Self {
        use promflow_plan::Error as E;
        match e {
            E::Timeout(_) => ApiError::timeout(e.to_string()),
            E::Canceled => ApiError::canceled(e.to_string()),
            E::Storage(_) => ApiError::internal(e.to_string()),
            E::Plan(m) => ApiError::bad_data(format!("invalid parameter \"query\": {m}")),
            E::Execution(_) | E::TooManySamples(_) | E::Unsupported(_) => ApiError::execution(e.to_string()),
        }
    }
}

/// How much of an error message an answer carries: messages quote queries and series, and
/// must not grow with them.
const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = promflow_storage::shorten::shortened(&self.message, MAX_ERROR_MESSAGE_BYTES);
        let body = serde_json::json!({"status": "error", "errorType": self.error_type, "error": message});
        (self.status, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string())
            .into_response()
    }
}

/// How queries are run: Prometheus's `--query.*` flags.
#[derive(Clone, Debug)]
pub struct QuerySettings {
    /// `--query.lookback-delta`.
    pub lookback_delta: Duration,
    /// `--query.timeout`.
    pub timeout: Duration,
    /// `--query.max-samples`.
    pub max_samples: usize,
    /// `--enable-feature=promql-delayed-name-removal`.
    pub delayed_name_removal: bool,
    /// `--enable-feature=use-start-timestamps`.
    pub use_start_timestamps: bool,
    /// Lowering options (default subquery step).
    pub compile: promflow_promql::CompileOptions,
}

/// What the server reports about itself: configuration, flags, reload state.
pub struct ServerStatus {
    /// The version promflow claims for API clients (a Prometheus 3.x version, semver).
    pub version: String,
    /// The configuration currently in force, as YAML.
    pub config_yaml: RwLock<String>,
    /// Every flag and its value, as `/api/v1/status/flags` lists them.
    pub flags: Vec<(String, String)>,
    /// Whether the last configuration (re)load succeeded.
    pub reload_ok: AtomicBool,
    /// When the last successful (re)load happened, in Unix seconds.
    pub last_reload_seconds: AtomicI64,
    /// Configuration fields accepted but not implemented yet, by the last successful load.
    pub unimplemented_fields: AtomicI64,
    /// Process start, in Unix seconds.
    pub start_seconds: i64,
    /// Whether start-up has finished (WAL replayed, scraping started).
    pub ready: AtomicBool,
    /// The retention setting, as text, for runtimeinfo.
    pub storage_retention: String,
    /// `global.external_labels` of the running configuration (federation appends them).
    pub external_labels: RwLock<promflow_storage::Labels>,
}

impl ServerStatus {
    /// The running configuration's external labels.
    pub fn external_labels(&self) -> promflow_storage::Labels {
        self.external_labels.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Records a successful (re)load's external labels.
    pub fn set_external_labels(&self, labels: promflow_storage::Labels) {
        if let Ok(mut l) = self.external_labels.write() {
            *l = labels;
        }
    }

    /// Records the outcome of a (re)load.
    pub fn record_reload(&self, ok: bool, yaml: Option<String>, unimplemented: usize) {
        self.reload_ok.store(ok, Ordering::SeqCst);
        if ok {
            self.last_reload_seconds.store(chrono::Utc::now().timestamp(), Ordering::SeqCst);
            self.unimplemented_fields.store(unimplemented as i64, Ordering::SeqCst);
            if let Some(y) = yaml {
                if let Ok(mut c) = self.config_yaml.write() {
                    *c = y;
                }
            }
        }
    }
}

/// A function that re-reads and applies the configuration; `Err` keeps the running one.
pub type ReloadFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Everything the handlers share.
pub struct AppState {
    /// Storage: querier, appender, stats.
    pub db: Arc<promflow_storage::Db>,
    /// The scrape manager, for targets and metadata.
    pub scrape: Arc<promflow_scrape::ScrapeManager>,
    /// The rule manager, for `/api/v1/rules` and `/api/v1/alerts`.
    pub rules: Arc<promflow_rules::Manager>,
    /// The live views subscriptions are served from (shared with the rule manager); `None`
    /// when every query runs in batch (delayed name removal).
    pub live: Option<Arc<promflow_incremental::live::LiveViews>>,
    /// The notifier, for `/api/v1/alertmanagers` and its counters.
    pub notifier: Arc<promflow_notifier::Notifier>,
    /// The remote-write queues, for their `prometheus_remote_storage_*` metrics.
    pub remote_write: Arc<promflow_remote::RemoteWriter>,
    /// The `remote_read` endpoints queries also read from.
    pub remote_read: Arc<promflow_remote::reader::RemoteReaders>,
    /// In a cluster, where remote write stores each series (`None`: here).
    pub cluster_writes: Option<Arc<promflow_remote::forward::ClusterWrites>>,
    /// In a cluster with `--cluster.dataflow-peer`, its dataflow computation.
    pub dataflow: Option<Arc<promflow_incremental::cluster::Formation>>,
    /// Query settings.
    pub query: QuerySettings,
    /// Server status.
    pub status: Arc<ServerStatus>,
    /// Configuration reload (SIGHUP and `/-/reload` call the same function).
    pub reload: ReloadFn,
    /// `--web.enable-lifecycle`.
    pub lifecycle_enabled: bool,
    /// `--web.enable-admin-api`.
    pub admin_enabled: bool,
    /// `--web.enable-remote-write-receiver`.
    pub remote_write_enabled: bool,
    /// `--enable-feature=created-timestamp-zero-ingestion`: remote write stores a zero sample
    /// at each sample's start timestamp.
    pub start_zero_samples: bool,
    /// The OTLP receiver, when `--web.enable-otlp-receiver` is given.
    pub otlp: Option<Arc<promflow_otlp::Receiver>>,
    /// The Pushgateway API's groups, with `--web.enable-pushgateway`.
    pub push: Option<Arc<promflow_scrape::push::PushGateway>>,
    /// `--storage.remote.read-sample-limit`: samples one remote read may return (0: no limit).
    pub remote_read_sample_limit: i64,
    /// Set to true by `/-/quit` (and by signals) to stop the server.
    pub quit: tokio::sync::watch::Sender<bool>,
    /// Request counters.
    pub http_metrics: HttpMetrics,
    /// Live result streams' limits and counts (`/api/v1/subscribe`).
    pub subscriptions: Subscriptions,
    /// `--web.config.file`: basic authentication and response headers for every path.
    pub web: Arc<promflow_config::web::WebGuard>,
    /// `--web.read-timeout`: how long a request's body may take to arrive.
    pub read_timeout: Duration,
    /// `--web.cors.origin`, fully anchored; `None` for `.*` (any origin, answered `*`).
    pub cors_origin: Option<regex::Regex>,
    /// `--query.max-concurrency`: PromQL and SQL queries of the HTTP API run in these slots;
    /// the others wait, within their timeout.
    pub query_slots: Arc<tokio::sync::Semaphore>,
    /// How many slots `query_slots` has.
    pub query_concurrency: usize,
    /// The threads queries, series lookups and SQL statements are evaluated on, below
    /// ingest's priority (`--query.niceness`).
    pub query_pool: Arc<QueryPool>,
    /// `global.query_log_file`, reopened at every configuration load.
    pub query_log: Arc<QueryLog>,
    /// `--web.page-title`: the web UI's pages' title.
    pub page_title: String,
}

/// The address of the client a request came from, set by [`serve`] on every request.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::SocketAddr);
