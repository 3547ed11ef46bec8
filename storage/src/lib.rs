//! promflow's storage: the series model, the in-memory head with compressed chunks, and the
//! write-ahead log that makes every acknowledged sample survive `kill -9`.
//!
//! Everything else in promflow reaches data through three doors defined here:
//!
//! * [`Appender`]: append samples, then commit or roll back as one batch;
//! * [`Querier`]: read series, label names and label values over a time range;
//! * the append feed ([`Db::subscribe`]): every committed batch, in commit order, for the
//!   incremental executor.
//!
//! Storage knows nothing of PromQL. Its files live in a `promflow/` folder inside the data
//! directory; it never touches a file it did not write.

#![warn(missing_docs)]

pub mod backfill;
pub mod exemplars;
pub mod gofmt;
pub mod json_log;
pub mod labels;
pub mod native_histogram;
pub mod re2;
pub mod samples;
pub mod self_metrics;
pub mod shorten;
pub mod start;
pub mod wal_tail;

mod block;
mod chunk;
mod codec;
mod db;
mod decimal;
mod head;
mod histogram_chunk;
mod postings;
mod wal;

pub use chunk::{decode_xor_chunk, encode_xor_chunk};
pub use db::{now_ms, BlockInfo, CompactionReport, Db, DbOptions, DbStats, Wake};
pub use head::PackedLabels;
pub use histogram_chunk::{
    decode_float_histogram_chunk, decode_integer_histogram_chunk, encode_float_histogram_chunks, EncodedChunk,
};
pub use labels::{Label, Labels, LabelsRef, MatchOp, Matcher, SmolStr, METRIC_NAME};
pub use native_histogram::FloatHistogram;
pub use samples::{SampleSlice, Samples};
pub use self_metrics::{Histogram, MetricKind, MetricsWriter, Summary};
pub use start::{aligned_starts, StartRun, StartTimestamps};

use std::sync::Arc;

/// A millisecond Unix timestamp, as Prometheus stores them.
pub type Timestamp = i64;

/// The bit pattern Prometheus writes as a staleness marker: a NaN that no arithmetic produces.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as an `f64`.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is a staleness marker (compares bits: every other NaN is a real value).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One float sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: Timestamp,
    /// The value; may be a staleness marker (see [`is_stale_nan`]).
    pub v: f64,
}

/// A series and its samples within a queried range, in timestamp order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The series' identity.
    pub labels: Labels,
    /// Samples in strictly increasing timestamp order, staleness markers included.
    pub samples: Samples,
}

/// One native-histogram sample.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSample {
    /// Milliseconds since the Unix epoch.
    pub t: Timestamp,
    /// The histogram, shared between the head and the readers that copied it.
    pub h: Arc<FloatHistogram>,
}

/// A series' native-histogram samples within a queried range, in timestamp order. A series
/// may hold float samples at some times and histograms at others: its floats are in the
/// [`Series`] of the same labels.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSeries {
    /// The series' identity.
    pub labels: Labels,
    /// Samples in strictly increasing timestamp order.
    pub samples: Vec<HistogramSample>,
}

/// What a successful commit wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Samples written to the WAL and the head.
    pub samples: usize,
    /// Series created by this commit.
    pub new_series: usize,
}

/// A series' id in storage's head: fixed for the series' life there, and never given to
/// another series while the process runs.
pub type SeriesId = u64;

/// A committed batch as the append feed delivers it. Samples name their series by id, so
/// that a commit hands over no label set: a consumer asks for the labels of a series it has
/// not seen ([`CommittedBatch::labels`]) and remembers what it needs by id.
#[derive(Clone, Debug, Default)]
pub struct CommittedBatch {
    /// The samples of the batch, each with its series' id, in append order.
    pub samples: Vec<(SeriesId, Sample)>,
    /// The native-histogram samples of the batch, each with its series' id.
    pub histograms: Vec<(SeriesId, HistogramSample)>,
    /// The series this batch created, by id (ascending).
    pub created: Vec<(SeriesId, Arc<Labels>)>,
    /// How many times the head had removed series when the batch was committed: a consumer
    /// may forget the series it remembers by id once this grows, as some of them are gone.
    pub removals: u64,
    /// Whether the batch holds copies this node stores for another that feeds them to the
    /// dataflow ([`Appender::mark_replica`]): in a cluster's one computation each series is
    /// appended by one node only.
    pub replica: bool,
    /// Where the labels of series the batch did not create are looked up.
    db: std::sync::Weak<Db>,
}

impl CommittedBatch {
    /// The labels of series `id`: one this batch created, or one storage still holds.
    pub fn labels(&self, id: SeriesId) -> Option<Arc<Labels>> {
        match self.created.binary_search_by_key(&id, |(i, _)| *i) {
            Ok(i) => Some(Arc::clone(&self.created[i].1)),
            Err(_) => self.db.upgrade()?.series_labels(id).map(Arc::new),
        }
    }
}

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An exemplar storage does not keep (out of order, labels too long).
    #[error(transparent)]
    Exemplar(#[from] exemplars::ExemplarError),
    /// A sample older than the newest one of its series (Prometheus's "out of order sample").
    #[error("out of order sample")]
    OutOfOrder,
    /// A sample older than the head accepts: before the newest block's end, or more than half
    /// a block duration before the newest sample (Prometheus's "out of bounds").
    #[error("out of bounds")]
    OutOfBounds,
    /// A timestamp further ahead of the server's clock than `DbOptions::future_limit` allows.
    #[error("sample timestamp {t} is more than {limit_ms} ms ahead of the server's clock")]
    TooFarInFuture {
        /// The sample's timestamp (ms).
        t: Timestamp,
        /// The limit (ms).
        limit_ms: i64,
    },
    /// Same timestamp as the newest sample of the series, different value.
    #[error("duplicate sample for timestamp")]
    DuplicateTimestamp,
    /// A series with no labels, or no metric name, or an empty label name.
    #[error("invalid series labels: {0}")]
    InvalidLabels(String),
    /// A label matcher's regex does not compile.
    #[error("invalid regular expression {0:?}: {1}")]
    InvalidRegex(String, String),
    /// A commit stored `stored` of the batch's `staged` samples and refused the others:
    /// between `append` and `commit` a concurrent commit made them out of order or
    /// duplicate (`reason` is the first refusal).
    #[error("{refused} of {staged} samples refused at commit ({stored} stored): {reason}")]
    Refused {
        /// Samples refused.
        refused: u64,
        /// Samples the batch staged.
        staged: u64,
        /// Samples stored.
        stored: usize,
        /// Why the first refused sample was refused.
        reason: Box<Error>,
    },
    /// The series was removed from the head (its samples were all older than a head cut)
    /// between `append` and `commit`, and its labels were forgotten too; a sender that tries
    /// again creates it anew.
    #[error("series removed from the head while its batch was open")]
    SeriesRemoved,
    /// A [`Prepared`] series that the appender it was given to did not prepare.
    #[error("a series this appender did not prepare")]
    NotPrepared,
    /// An appender that stores its batch on a cluster's nodes could not store it on enough
    /// of them (what failed, as the cluster's writes say it).
    #[error("{0}")]
    Unplaced(String),
    /// The data directory is held by another process.
    #[error("data directory {0} is locked by another process")]
    Locked(String),
    /// An I/O error on the data directory, with what was being done.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

impl Error {
    /// Whether the sender of the samples caused the error (a sample or series it must not
    /// send again as it is), as opposed to a failure of storage itself: remote write answers
    /// the first with 400 and the second with 500, which senders retry.
    pub fn is_sample_error(&self) -> bool {
        matches!(
            self,
            Error::OutOfOrder
                | Error::OutOfBounds
                | Error::TooFarInFuture { .. }
                | Error::DuplicateTimestamp
                | Error::InvalidLabels(_)
        ) || matches!(self, Error::Refused { reason, .. } if reason.is_sample_error())
    }
}

/// A batch of appends that becomes visible and durable together.
///
/// Contract: `append` validates each sample against what is committed (and against earlier
/// appends in the same batch) and reports out-of-order or duplicate samples at once, leaving
/// the batch usable. Nothing is visible to queriers or the append feed before `commit`.
/// `commit` returns only after the batch's WAL records have been handed to the kernel with
/// `write(2)`, so a committed sample survives `kill -9` of promflow (not a power loss: fsync
/// happens when a WAL segment is cut). A sample that became out of order through a concurrent
/// commit between `append` and `commit` is never reordered and never dropped silently: the
/// rest of the batch is committed and `commit` returns [`Error::Refused`]. Time bounds that
/// moved since `append` (the head's newest sample, a head cut) do not refuse a staged sample.
pub trait Appender: Send {
    /// Adds one sample of the series `labels` (which must have a metric name).
    fn append(&mut self, labels: &Labels, t: Timestamp, v: f64) -> Result<(), Error>;
    /// [`append`](Self::append) with labels borrowed from a decoded request: a series the
    /// head already has is found without building [`Labels`].
    fn append_ref(&mut self, labels: LabelsRef<'_>, t: Timestamp, v: f64) -> Result<(), Error> {
        self.append(&labels.to_labels(), t, v)
    }
    /// Looks up the series of a request before any of its samples is appended, under one
    /// hold of the head's lock, so that the lookups overlap in memory rather than wait for one
    /// another. For each series, a [`Prepared`] to append its samples with
    /// ([`append_prepared`](Self::append_prepared)), or `None` for a series to append with
    /// [`append_ref`](Self::append_ref) (one the head does not have, or one repeated in
    /// `series`).
    fn prepare_refs(&mut self, series: &[LabelsRef<'_>]) -> Vec<Option<Prepared>>;
    /// [`append_ref`](Self::append_ref) for a series this appender prepared.
    fn append_prepared(&mut self, series: Prepared, t: Timestamp, v: f64) -> Result<(), Error>;
    /// Adds one native-histogram sample of the series `labels`, under the same order rules
    /// as a float sample: a series' samples, floats and histograms alike, are in time order.
    fn append_histogram(&mut self, labels: &Labels, t: Timestamp, h: FloatHistogram) -> Result<(), Error>;
    /// Adds an exemplar of the series `labels`, committed with the batch (a series that gets
    /// no sample in the batch and is not in storage yet keeps none). An appender that keeps
    /// no exemplars drops it; storage refuses one older than its series' newest.
    fn append_exemplar(&mut self, labels: &Labels, e: exemplars::Exemplar) -> Result<(), Error> {
        let _ = (labels, e);
        Ok(())
    }
    /// Gives the sample of `labels` at `t` appended earlier in this batch its start timestamp
    /// `start` (see [`start`]; 0 means none). An appender that keeps no start timestamps, or
    /// finds no such sample, drops it.
    fn set_start_timestamp(&mut self, labels: &Labels, t: Timestamp, start: Timestamp) -> Result<(), Error> {
        let _ = (labels, t, start);
        Ok(())
    }
    /// Marks the batch as copies that another node feeds to the cluster's dataflow
    /// ([`CommittedBatch::replica`]). An appender without an append feed ignores it.
    fn mark_replica(&mut self) {}
    /// Makes the batch durable, visible to queriers, and sends it to the append feed.
    fn commit(self: Box<Self>) -> Result<CommitStats, Error>;
    /// Discards the batch.
    fn rollback(self: Box<Self>);
}

/// A series an [`Appender`] has looked up ahead of its samples ([`Appender::prepare_refs`]);
/// it means something only to that appender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The appender's own number, so that another appender refuses it.
    pub(crate) batch: u32,
    /// The series' place in the appender's batch.
    pub(crate) index: u32,
}

/// Read access to series over time.
///
/// Contract: a querier sees every batch committed before the call that made it, and samples
/// are returned in timestamp order with each series listed once. Ranges are inclusive on both
/// ends (`mint..=maxt`, milliseconds); the caller narrows them to the semantics it needs.
pub trait Querier: Send + Sync {
    /// Series matching all `matchers` that have samples in `mint..=maxt`, with those samples,
    /// sorted by labels: the executor joins a selection's floats with its histograms and
    /// combines partial aggregates in that order.
    fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, Error>;
    /// [`select`](Self::select)'s series handed to `each` a group at a time, in label order,
    /// each group read after `each` returned for the one before, so that a caller that is done
    /// with a group before the next need not hold every sample of a selection over days at
    /// once. `each` returns false to stop. The default hands over the whole selection as one
    /// group.
    fn select_in_groups(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        each: &mut dyn FnMut(Vec<Series>) -> bool,
    ) -> Result<(), Error> {
        each(self.select(matchers, mint, maxt)?);
        Ok(())
    }
    /// The native-histogram samples in `mint..=maxt` of the series matching all `matchers`
    /// that have some, sorted by labels. (No default: a querier that wraps another and
    /// forgot it would answer every histogram query with nothing.)
    fn select_histograms(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<HistogramSeries>, Error>;
    /// Whether a series matching all `matchers` has native-histogram samples in
    /// `mint..=maxt`. The default reads them; a store answers from what it knows of its
    /// series without decoding a sample.
    fn has_histograms(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<bool, Error> {
        Ok(!self.select_histograms(matchers, mint, maxt)?.is_empty())
    }
    /// The start timestamps in `mint..=maxt` of the series matching all `matchers` that
    /// have some, sorted by labels. (No default, as for histograms.)
    fn select_start_timestamps(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<StartTimestamps>, Error>;
    /// Label sets of the series matching all `matchers` with samples in the range, sorted.
    fn series(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Labels>, Error>;
    /// Sorted label names of matching series (all series when `matchers` is empty).
    fn label_names(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, Error>;
    /// Sorted values of label `name` in matching series (all series when `matchers` is empty).
    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, Error>;
}
