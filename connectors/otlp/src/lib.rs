//! The OTLP metrics receiver (`POST /api/v1/otlp/v1/metrics`): OpenTelemetry's
//! `ExportMetricsServiceRequest`, in protobuf or JSON, gzip-compressed or not, translated as
//! Prometheus 3 translates it ([`translate`]) and stored in one commit.
//!
//! A request is stored whole or not at all: a metric that cannot be translated (delta
//! temporality without the feature flag that allows it, a name that escapes to nothing, a
//! histogram whose count disagrees with its buckets) fails the request, naming the metric,
//! and so does a sample storage refuses (out of order, too old). With
//! `--enable-feature=otlp-deltatocumulative`, delta temporality is added up into cumulative
//! series first ([`cumulative`]).
#![warn(missing_docs)]

pub mod cumulative;
pub mod names;
pub mod translate;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex, RwLock};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use promflow_config::Config;
use promflow_storage::{Appender, Db, FloatHistogram, Labels};
use prost::Message;

pub use translate::{Batch, Deltas, Promotion, Translation};

/// The largest request body, compressed or not, as Prometheus reads it (32 MiB).
pub const BODY_LIMIT: usize = 32 << 20;

/// Why a request was not stored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is neither `application/x-protobuf` nor `application/json`.
    #[error("unsupported content type: {0}, supported: [application/json, application/x-protobuf]")]
    ContentType(String),
    /// A content encoding other than `gzip`.
    #[error("unsupported compression: {0}. Only \"gzip\" or no compression supported")]
    Encoding(String),
    /// The body, once decompressed, is larger than [`BODY_LIMIT`].
    #[error("request body is larger than {BODY_LIMIT} bytes")]
    TooLarge,
    /// The body does not decode.
    #[error("decoding the OTLP request: {0}")]
    Decode(String),
    /// A metric could not be translated.
    #[error("{0}")]
    Translation(String),
    /// Storage refused a sample: the sender's data (out of order, out of bounds).
    #[error("{0}")]
    Sample(promflow_storage::Error),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(promflow_storage::Error),
    /// In a cluster, a node that owns some of the series refused them: the sender's data.
    #[error("{0}")]
    Refused(String),
    /// In a cluster, too few nodes could store the series: the sender retries (503).
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    /// Whether the sender must change the request (400), as opposed to a failure here (500)
    /// or in the cluster (503).
    pub fn is_senders(&self) -> bool {
        !matches!(self, Error::Storage(_) | Error::Unavailable(_))
    }
}

/// The wire format of a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON).
    Json,
}

impl Format {
    /// The format of a `Content-Type`, which must be exactly one of the two media types, as
    /// Prometheus requires.
    pub fn from_content_type(ct: Option<&str>) -> Result<Format, Error> {
        match ct.unwrap_or("") {
            "application/x-protobuf" => Ok(Format::Protobuf),
            "application/json" => Ok(Format::Json),
            other => Err(Error::ContentType(other.to_string())),
        }
    }
}

/// Decodes a request body: `encoding` is the `Content-Encoding` (`gzip` or none).
pub fn decode(
    body: &[u8],
    format: Format,
    encoding: Option<&str>,
) -> Result<ExportMetricsServiceRequest, Error> {
    let inflated;
    let raw: &[u8] = match encoding.unwrap_or("") {
        "" | "identity" => body,
        e if e.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(BODY_LIMIT as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Error::Decode(e.to_string()))?;
            inflated = out;
            &inflated
        }
        e => return Err(Error::Encoding(e.to_string())),
    };
    if raw.len() > BODY_LIMIT {
        return Err(Error::TooLarge);
    }
    match format {
        Format::Protobuf => {
            ExportMetricsServiceRequest::decode(raw).map_err(|e| Error::Decode(e.to_string()))
        }
        Format::Json => serde_json::from_slice(raw).map_err(|e| Error::Decode(e.to_string())),
    }
}

/// What one request stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Float samples.
    pub samples: usize,
    /// Native histograms.
    pub histograms: usize,
}

/// The receiver: the translation settings in force (replaced at every configuration load)
/// and the storage it writes to.
pub struct Receiver {
    translation: RwLock<Translation>,
    deltas: Deltas,
    lookback_ms: i64,
    zero_samples: bool,
    /// The delta streams' totals, with [`Deltas::Accumulated`]. Held from a request's
    /// conversion to its commit: requests of deltas are stored one at a time, in the order
    /// their totals were computed.
    streams: Mutex<cumulative::Streams>,
}

impl Receiver {
    /// A receiver for `config`; `deltas`, `lookback_ms` and `zero_samples` (a zero sample at
    /// each sample's start timestamp, `created-timestamp-zero-ingestion`) come from the flags.
    pub fn new(config: &Config, deltas: Deltas, lookback_ms: i64, zero_samples: bool) -> Receiver {
        Receiver {
            translation: RwLock::new(translation(config, deltas, lookback_ms)),
            deltas,
            lookback_ms,
            zero_samples,
            streams: Mutex::default(),
        }
    }

    /// Takes the `otlp` section of a newly loaded configuration.
    pub fn apply(&self, config: &Config) {
        if let Ok(mut t) = self.translation.write() {
            *t = translation(config, self.deltas, self.lookback_ms);
        }
    }

    /// Translates and stores a decoded request in one commit.
    pub fn write(&self, db: &Arc<Db>, req: &ExportMetricsServiceRequest) -> Result<Written, Error> {
        self.write_with(req, |batch| self.store(db, batch))
    }

    /// Translates a decoded request and has `store` store the translated samples: in a
    /// cluster, on the nodes that own each series. Deltas' running totals move on only once
    /// `store` succeeds.
    pub fn write_with(
        &self,
        req: &ExportMetricsServiceRequest,
        store: impl FnOnce(&Batch) -> Result<Written, Error>,
    ) -> Result<Written, Error> {
        let mut batch = {
            let t =
                self.translation.read().map_err(|_| Error::Translation("receiver state poisoned".into()))?;
            translate::translate(req, &t).map_err(Error::Translation)?
        };
        if batch.empty_metrics > 0 {
            tracing::warn!(metrics = batch.empty_metrics, "OTLP: metrics without data points dropped");
        }
        if batch.deltas.is_empty() {
            return store(&batch);
        }
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let pending = streams.accumulate(&mut batch, now);
        if pending.dropped > 0 {
            tracing::debug!(
                samples = pending.dropped,
                "OTLP: delta samples dropped: out of order, of an older stream, or past the streams kept"
            );
        }
        let written = store(&batch)?;
        streams.keep(pending, now);
        Ok(written)
    }

    /// Appends and commits a translated batch.
    fn store(&self, db: &Arc<Db>, batch: &Batch) -> Result<Written, Error> {
        let mut app = db.appender();
        match append(batch, self.zero_samples, app.as_mut()) {
            Ok(written) => app.commit().map(|_| written).map_err(storage_error),
            Err(e) => {
                app.rollback();
                Err(e)
            }
        }
    }
}

fn storage_error(e: promflow_storage::Error) -> Error {
    if e.is_sample_error() {
        Error::Sample(e)
    } else {
        Error::Storage(e)
    }
}

/// Appends a batch: each series' samples in time order, a second sample of a series at
/// the same time dropped (the first wins, as at Prometheus's commit), with their start
/// timestamps. With `zero_samples`, a zero sample (an empty histogram for a histogram) goes
/// at each start timestamp before its sample, unless the request has a sample there (a
/// delta's start is the previous delta's time); one refused (out of order once stored: the
/// start does not move) is left out.
fn append(batch: &Batch, zero_samples: bool, app: &mut dyn Appender) -> Result<Written, Error> {
    let histogram_at: HashMap<(&Labels, i64), &FloatHistogram> =
        batch.histograms.iter().map(|(l, t, h)| ((l, *t), h)).collect();
    let zeros = batch.starts.iter().filter(|(_, t, st)| zero_samples && st < t);
    // (labels, time, the value or `None` for a zero sample); stable sorts keep a sent
    // sample before a zero sample at the same time
    let mut floats: Vec<(&Labels, i64, Option<f64>)> =
        batch.floats.iter().map(|(l, t, v)| (l, *t, Some(*v))).collect();
    let mut histograms: Vec<(&Labels, i64, &FloatHistogram, bool)> =
        batch.histograms.iter().map(|(l, t, h)| (l, *t, h, false)).collect();
    for (labels, t, start) in zeros {
        match histogram_at.get(&(labels, *t)) {
            Some(h) => histograms.push((labels, *start, h, true)),
            None => floats.push((labels, *start, None)),
        }
    }
    floats.sort_by_key(|f| f.1);
    histograms.sort_by_key(|h| h.1);
    let mut seen: HashSet<(&Labels, i64)> = HashSet::new();
    let mut written = Written::default();
    for (labels, t, v) in floats {
        if !seen.insert((labels, t)) {
            continue;
        }
        match v {
            Some(v) => {
                app.append(labels, t, v).map_err(storage_error)?;
                written.samples += 1;
            }
            None => {
                let _ = app.append(labels, t, 0.0);
            }
        }
    }
    for (labels, t, h, zero) in histograms {
        if !seen.insert((labels, t)) {
            continue;
        }
        if zero {
            let _ = app.append_histogram(labels, t, FloatHistogram::empty_like(h));
        } else {
            app.append_histogram(labels, t, h.clone()).map_err(storage_error)?;
            written.histograms += 1;
        }
    }
    for (labels, t, start) in &batch.starts {
        app.set_start_timestamp(labels, *t, *start).map_err(storage_error)?;
    }
    // an exemplar storage refuses does not fail the request, as in Prometheus
    for (labels, e) in &batch.exemplars {
        if let Err(err) = app.append_exemplar(labels, e.clone()) {
            tracing::debug!(error = %err, series = %labels, "OTLP: exemplar refused");
        }
    }
    Ok(written)
}

fn translation(config: &Config, deltas: Deltas, lookback_ms: i64) -> Translation {
    let o = &config.otlp;
    Translation {
        namer: names::Namer::new(o),
        promotion: if o.promote_all_resource_attributes {
            Promotion::AllBut(o.ignore_resource_attributes.clone())
        } else {
            Promotion::Listed(o.promote_resource_attributes.clone())
        },
        keep_identifying: o.keep_identifying_resource_attributes,
        histograms_to_custom_buckets: o.convert_histograms_to_nhcb,
        scope_labels: o.promote_scope_metadata,
        deltas,
        lookback_ms,
    }
}
