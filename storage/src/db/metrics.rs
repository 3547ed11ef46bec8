//! Storage's own metrics: what it counts as it runs, and the families `/metrics` shows, under
//! the names of Prometheus's TSDB where a metric means the same (so the Prometheus mixin's
//! storage alerts and panels read promflow's).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{lock, Db};
use crate::self_metrics::{Histogram, MetricKind};

/// Prometheus's buckets for `prometheus_tsdb_compaction_duration_seconds`: 1 s doubling to
/// 512 s.
const COMPACTION_SECONDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Events counted since the database was opened.
pub(super) struct Counters {
    /// Blocks written: head cuts and merges.
    pub(super) compactions: AtomicU64,
    /// Head cuts and merges that failed.
    pub(super) compactions_failed: AtomicU64,
    /// Compaction rounds run (by the background thread, a full head, or a call).
    pub(super) compactions_triggered: AtomicU64,
    /// Merges of overlapping blocks.
    pub(super) vertical_compactions: AtomicU64,
    /// How long each head cut or merge took.
    pub(super) compaction_seconds: Mutex<Histogram>,
    /// Stale-series compactions started, those that failed, and how long each took.
    pub(super) stale_compactions: AtomicU64,
    pub(super) stale_compactions_failed: AtomicU64,
    pub(super) stale_compaction_seconds: Mutex<Histogram>,
    /// Head truncations after a cut, and those that failed (the checkpoint).
    pub(super) head_truncations: AtomicU64,
    pub(super) head_truncations_failed: AtomicU64,
    /// Series created in the head (replayed ones included) and removed by truncations.
    pub(super) series_created: AtomicU64,
    pub(super) series_removed: AtomicU64,
    /// Samples the head took out of order.
    pub(super) out_of_order_appended: AtomicU64,
    /// WAL checkpoints written, and those that failed.
    pub(super) checkpoints: AtomicU64,
    pub(super) checkpoints_failed: AtomicU64,
    /// Commits whose WAL write failed.
    pub(super) wal_writes_failed: AtomicU64,
    /// Compaction rounds that deleted blocks for the retention time, and for the size.
    pub(super) time_retentions: AtomicU64,
    pub(super) size_retentions: AtomicU64,
    /// Changes of the set of blocks served, and blocks found that could not be opened.
    pub(super) reloads: AtomicU64,
    pub(super) reload_failures: AtomicU64,
    /// How long opening took to replay the WAL.
    pub(super) replay: Duration,
    /// WAL samples opening found in the head's chunk files rather than encoding them again.
    pub(super) samples_from_chunk_files: u64,
}

impl Counters {
    pub(super) fn new(replay: Duration, replayed_series: u64, samples_from_chunk_files: u64) -> Counters {
        Counters {
            compactions: AtomicU64::new(0),
            compactions_failed: AtomicU64::new(0),
            compactions_triggered: AtomicU64::new(0),
            vertical_compactions: AtomicU64::new(0),
            compaction_seconds: Mutex::new(Histogram::new(COMPACTION_SECONDS)),
            stale_compactions: AtomicU64::new(0),
            stale_compactions_failed: AtomicU64::new(0),
            stale_compaction_seconds: Mutex::new(Histogram::new(COMPACTION_SECONDS)),
            head_truncations: AtomicU64::new(0),
            head_truncations_failed: AtomicU64::new(0),
            series_created: AtomicU64::new(replayed_series),
            series_removed: AtomicU64::new(0),
            out_of_order_appended: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            checkpoints_failed: AtomicU64::new(0),
            wal_writes_failed: AtomicU64::new(0),
            time_retentions: AtomicU64::new(0),
            size_retentions: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            replay,
            samples_from_chunk_files,
        }
    }

    /// Counts one block written (or failed to be) in `took`.
    pub(super) fn compaction(&self, ok: bool, took: Duration) {
        if ok {
            self.compactions.fetch_add(1, Ordering::Relaxed);
            lock(&self.compaction_seconds).observe(took.as_secs_f64());
        } else {
            self.compactions_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Db {
    /// Writes storage's metrics, under Prometheus's TSDB names where it has a twin.
    pub fn write_metrics(&self, w: &mut crate::MetricsWriter) {
        let s = self.stats(0);
        let c = &self.counters;
        let count = |a: &AtomicU64| a.load(Ordering::Relaxed);
        w.gauge("prometheus_tsdb_head_series", "Total number of series in the head block.", s.num_series);
        w.counter(
            "prometheus_tsdb_head_series_created_total",
            "Total number of series created in the head",
            count(&c.series_created),
        );
        w.counter(
            "prometheus_tsdb_head_series_removed_total",
            "Total number of series removed in the head",
            count(&c.series_removed),
        );
        w.gauge(
            "prometheus_tsdb_head_stale_series",
            "Number of stale series in the head block, whose newest sample is a staleness marker.",
            s.num_stale_series,
        );
        w.counter(
            "prometheus_tsdb_stale_series_compactions_triggered_total",
            "Total number of triggered stale series compactions.",
            count(&c.stale_compactions),
        );
        w.counter(
            "prometheus_tsdb_stale_series_compactions_failed_total",
            "Total number of stale series compactions that failed.",
            count(&c.stale_compactions_failed),
        );
        w.gauge("prometheus_tsdb_head_chunks", "Total number of chunks in the head block.", s.num_chunks);
        w.counter(
            "prometheus_tsdb_head_samples_appended_total",
            "Total number of appended samples.",
            s.num_samples,
        );
        w.counter(
            "prometheus_tsdb_head_out_of_order_samples_appended_total",
            "Total number of appended out of order samples.",
            count(&c.out_of_order_appended),
        );
        let (min, max) = (s.min_time.unwrap_or(0), s.max_time.unwrap_or(0));
        w.gauge("prometheus_tsdb_head_min_time", "Minimum time bound of the head block.", min);
        w.gauge("prometheus_tsdb_head_max_time", "Maximum timestamp of the head block.", max);
        w.gauge(
            "prometheus_tsdb_head_min_time_seconds",
            "Minimum time bound of the head block.",
            min as f64 / 1000.0,
        );
        w.gauge(
            "prometheus_tsdb_head_max_time_seconds",
            "Maximum timestamp of the head block.",
            max as f64 / 1000.0,
        );
        let lowest = self.oldest_sample_time().unwrap_or(0);
        w.gauge(
            "prometheus_tsdb_lowest_timestamp",
            "Lowest timestamp value stored in the database. The unit is decided by the library consumer.",
            lowest,
        );
        w.gauge(
            "prometheus_tsdb_lowest_timestamp_seconds",
            "Lowest timestamp value stored in the database.",
            lowest as f64 / 1000.0,
        );
        w.counter(
            "prometheus_tsdb_head_truncations_total",
            "Total number of head truncations attempted.",
            count(&c.head_truncations),
        );
        w.counter(
            "prometheus_tsdb_head_truncations_failed_total",
            "Total number of head truncations that failed.",
            count(&c.head_truncations_failed),
        );
        w.counter(
            "prometheus_tsdb_compactions_total",
            "Total number of compactions that were executed for the partition.",
            count(&c.compactions),
        );
        w.counter(
            "prometheus_tsdb_compactions_failed_total",
            "Total number of compactions that failed for the partition.",
            count(&c.compactions_failed),
        );
        w.counter(
            "prometheus_tsdb_compactions_triggered_total",
            "Total number of triggered compactions for the partition.",
            count(&c.compactions_triggered),
        );
        w.counter(
            "prometheus_tsdb_vertical_compactions_total",
            "Total number of compactions done on overlapping blocks.",
            count(&c.vertical_compactions),
        );
        let seconds = lock(&c.compaction_seconds).clone();
        w.family(
            "prometheus_tsdb_compaction_duration_seconds",
            MetricKind::Histogram,
            "Duration of compaction runs",
        )
        .histogram(&[], &seconds);
        let seconds = lock(&c.stale_compaction_seconds).clone();
        w.family(
            "prometheus_tsdb_stale_series_compaction_duration_seconds",
            MetricKind::Histogram,
            "Duration of stale series compaction runs.",
        )
        .histogram(&[], &seconds);
        w.counter(
            "prometheus_tsdb_checkpoint_creations_total",
            "Total number of checkpoint creations attempted.",
            count(&c.checkpoints),
        );
        w.counter(
            "prometheus_tsdb_checkpoint_creations_failed_total",
            "Total number of checkpoint creations that failed.",
            count(&c.checkpoints_failed),
        );
        w.counter(
            "prometheus_tsdb_wal_truncations_total",
            "Total number of write log truncations attempted.",
            count(&c.checkpoints),
        );
        w.counter(
            "prometheus_tsdb_wal_truncations_failed_total",
            "Total number of write log truncations that failed.",
            count(&c.checkpoints_failed),
        );
        w.counter(
            "prometheus_tsdb_wal_writes_failed_total",
            "Total number of write log writes that failed.",
            count(&c.wal_writes_failed),
        );
        w.gauge(
            "prometheus_tsdb_wal_segment_current",
            "Write log segment index that TSDB is currently writing to.",
            lock(&self.writer).wal.current_segment(),
        );
        w.counter(
            "prometheus_tsdb_wal_corruptions_total",
            "Total number of WAL corruptions.",
            s.wal_corruptions,
        );
        w.gauge(
            "prometheus_tsdb_data_replay_duration_seconds",
            "Time taken to replay the data on disk.",
            c.replay.as_secs_f64(),
        );
        w.gauge(
            "promflow_wal_replay_samples_in_chunk_files",
            "WAL samples the last start found in the head's chunk files, which it maps back, instead of encoding them again.",
            c.samples_from_chunk_files as f64,
        );
        w.counter(
            "prometheus_tsdb_time_retentions_total",
            "The number of times that blocks were deleted because the maximum time limit was exceeded.",
            count(&c.time_retentions),
        );
        w.counter(
            "prometheus_tsdb_size_retentions_total",
            "The number of times that blocks were deleted because the maximum number of bytes was exceeded.",
            count(&c.size_retentions),
        );
        w.gauge(
            "prometheus_tsdb_retention_limit_bytes",
            "Max number of bytes to be retained in the tsdb blocks, configured 0 means disabled",
            self.opts.retention_size.unwrap_or(0),
        );
        w.counter(
            "prometheus_tsdb_reloads_total",
            "Number of times the database reloaded block data from disk.",
            count(&c.reloads),
        );
        w.counter(
            "prometheus_tsdb_reloads_failures_total",
            "Number of times the database failed to reloadBlocks block data from disk.",
            count(&c.reload_failures),
        );
        w.counter(
            "promflow_wal_truncated_bytes_total",
            "Bytes cut from torn or corrupt WAL tails at start-up.",
            s.wal_truncated_bytes,
        );
        w.gauge("promflow_wal_segments", "Number of WAL segment files.", s.wal_segments);
        let (hits, misses) = self.lookups.counts();
        w.counter(
            "promflow_tsdb_lookup_cache_hits_total",
            "Series lookups whose blocks' part was answered from the lookup cache.",
            hits,
        );
        w.counter(
            "promflow_tsdb_lookup_cache_misses_total",
            "Series lookups whose blocks' part was read from the blocks' indexes.",
            misses,
        );
        w.gauge(
            "promflow_tsdb_lookup_cache_bytes",
            "Bytes of label sets the lookup cache holds, as it weighs them.",
            self.lookups.bytes(),
        );
        w.gauge(
            "promflow_tsdb_unreadable_blocks",
            "Blocks in the data directory that could not be read and are not served.",
            s.unreadable_blocks,
        );
        w.gauge("prometheus_tsdb_blocks_loaded", "Number of currently loaded data blocks", s.num_blocks);
        w.gauge(
            "prometheus_tsdb_storage_blocks_bytes",
            "The number of bytes that are currently used for local storage by all blocks.",
            s.blocks_bytes,
        );
        w.gauge("promflow_wal_bytes", "Bytes of the WAL's segments and checkpoint.", s.wal_bytes);
        w.counter(
            "prometheus_tsdb_out_of_bound_samples_total",
            "Total number of out of bound samples ingestion failed attempts.",
            s.out_of_bounds_samples,
        );
    }
}
