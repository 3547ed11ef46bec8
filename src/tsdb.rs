//! `promflow tsdb …`: offline tools on a data directory, with promtool's arguments.
//!
//! `promflow tsdb create-blocks-from openmetrics <input file> [<output directory>]` reads an
//! OpenMetrics file whose samples all carry timestamps and writes blocks that
//! `promflow --storage.tsdb.path <output directory>` serves (a running promflow picks them up
//! at its next compaction check, within a minute). As promtool does, it aligns blocks to the
//! block duration, reads the file once per block range, and stops at the first sample a
//! series cannot take (out of order or duplicate).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use promflow_scrape::exposition::{parse_openmetrics_each, ParsedSample};
use promflow_storage::backfill::BlockBuilder;
use promflow_storage::{BlockInfo, Labels};

/// Two hours, the block duration promtool uses unless a larger one is asked for.
const DEFAULT_BLOCK_MS: i64 = 2 * 3600 * 1000;

#[derive(Parser, Debug)]
#[command(name = "promflow tsdb", about = "Run tsdb commands.")]
struct TsdbArgs {
    #[command(subcommand)]
    command: TsdbCommand,
}

#[derive(Subcommand, Debug)]
enum TsdbCommand {
    /// Create blocks of data for new recording rules or from an input file.
    #[command(name = "create-blocks-from")]
    CreateBlocksFrom {
        /// Print human readable values.
        #[arg(short = 'r', long = "human-readable", global = true)]
        human_readable: bool,
        /// Do not print created blocks.
        #[arg(short = 'q', long = "quiet", global = true)]
        quiet: bool,
        #[command(subcommand)]
        source: BlockSource,
    },
}

#[derive(Subcommand, Debug)]
enum BlockSource {
    /// Import samples from OpenMetrics input and produce TSDB blocks.
    #[command(name = "openmetrics")]
    OpenMetrics {
        /// Maximum duration created blocks may span. Anything less than 2h is ignored.
        #[arg(long = "max-block-duration", value_parser = duration)]
        max_block_duration: Option<Duration>,
        /// Label to add to every sample, as name=value (repeatable).
        #[arg(long = "label", value_parser = label_pair)]
        labels: Vec<(String, String)>,
        /// OpenMetrics file to read samples from.
        input: PathBuf,
        /// Output directory for generated blocks.
        #[arg(default_value = "data/")]
        output: PathBuf,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    promflow_config::parse_duration(s).map_err(|e| e.to_string())
}

fn label_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(format!("expected name=value, got {s:?}")),
    }
}

/// Runs `promflow tsdb <args>` (`args` starts after `tsdb`) and returns the exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let parsed = match TsdbArgs::try_parse_from(std::iter::once("promflow tsdb".into()).chain(args)) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    let TsdbCommand::CreateBlocksFrom { human_readable, quiet, source } = parsed.command;
    let BlockSource::OpenMetrics { max_block_duration, labels, input, output } = source;
    let max_ms = max_block_duration.map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64);
    let result = std::fs::read(&input)
        .map_err(|e| format!("read input file {}: {e}", input.display()))
        .and_then(|data| backfill(&data, &output, block_duration(max_ms), &labels, human_readable, quiet));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// promtool's choice of block duration: 2h, or the largest of 2h × 3^k (k ≤ 9) not above a
/// larger requested maximum.
fn block_duration(max_ms: i64) -> i64 {
    if max_ms <= DEFAULT_BLOCK_MS {
        return DEFAULT_BLOCK_MS;
    }
    let ranges: Vec<i64> = (0..10).map(|k| DEFAULT_BLOCK_MS * 3i64.pow(k)).collect();
    ranges.iter().copied().take_while(|&r| r <= max_ms).last().unwrap_or(DEFAULT_BLOCK_MS)
}

/// The samples' time span, checking that every sample has a timestamp.
fn time_span(data: &[u8]) -> Result<(i64, i64), String> {
    let (mut mint, mut maxt) = (i64::MAX, i64::MIN);
    let mut missing: Option<Labels> = None;
    parse_openmetrics_each(data, &mut |s| match s.timestamp_ms {
        Some(t) => {
            mint = mint.min(t);
            maxt = maxt.max(t);
        }
        None => {
            missing.get_or_insert(s.labels);
        }
    })
    .map_err(|e| format!("getting min and max timestamp: next: {e}"))?;
    if let Some(labels) = missing {
        return Err(format!(
            "getting min and max timestamp: expected timestamp for series {labels}, got none"
        ));
    }
    if maxt == i64::MIN {
        return Ok((0, 0));
    }
    Ok((mint, maxt))
}

fn backfill(
    data: &[u8],
    output: &Path,
    block_ms: i64,
    extra: &[(String, String)],
    human: bool,
    quiet: bool,
) -> Result<(), String> {
    let (mint, maxt) = time_span(data)?;
    std::fs::create_dir_all(output)
        .map_err(|e| format!("create output directory {}: {e}", output.display()))?;
    // Go's integer division truncates toward zero; so does Rust's
    let mut t = block_ms * (mint / block_ms);
    let mut printed_header = false;
    let mut next_sample = i64::MAX;
    while t <= maxt {
        let upper = t.saturating_add(block_ms);
        if next_sample != i64::MAX && next_sample >= upper {
            // nothing in this range: skip a pass over the file
            t = upper;
            continue;
        }
        next_sample = i64::MAX;
        let mut builder = BlockBuilder::new();
        let mut failed: Option<String> = None;
        let parsed = parse_openmetrics_each(data, &mut |s: ParsedSample| {
            let Some(ts) = s.timestamp_ms else { return };
            if failed.is_some() || ts < t {
                return;
            }
            if ts >= upper {
                next_sample = next_sample.min(ts);
                return;
            }
            let labels = if extra.is_empty() {
                s.labels
            } else {
                let mut l = s.labels;
                for (n, v) in extra {
                    l.set(n, v);
                }
                l
            };
            if let Err(e) = builder.append(&labels, ts, s.value) {
                failed = Some(format!("block creation: add sample: {e}"));
            }
        });
        parsed.map_err(|e| format!("block creation: parse: {e}"))?;
        if let Some(e) = failed {
            return Err(e);
        }
        let block = builder.write(output).map_err(|e| format!("block creation: flushing block: {e}"))?;
        if let (Some(b), false) = (block, quiet) {
            print_block(&b, !printed_header, human);
            printed_header = true;
        }
        t = upper;
    }
    Ok(())
}

/// Prints a block as promtool's table row (`NUM CHUNKS` has no meaning in promflow's blocks).
fn print_block(b: &BlockInfo, header: bool, human: bool) {
    let mut out = std::io::stdout().lock();
    if header {
        let _ = writeln!(
            out,
            "{:<28}{:<15}{:<15}{:<13}{:<13}{:<13}{:<13}SIZE",
            "BLOCK ULID", "MIN TIME", "MAX TIME", "DURATION", "NUM SAMPLES", "NUM CHUNKS", "NUM SERIES"
        );
    }
    let time = |ms: i64| {
        if human {
            chrono::DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |d| d.to_rfc3339())
        } else {
            ms.to_string()
        }
    };
    let size = if human { human_bytes(b.size_bytes) } else { b.size_bytes.to_string() };
    let _ = writeln!(
        out,
        "{:<28}{:<15}{:<15}{:<13}{:<13}{:<13}{:<13}{}",
        b.ulid,
        time(b.min_time),
        time(b.max_time),
        promflow_storage::gofmt::format_duration_ms(b.max_time - b.min_time),
        b.num_samples,
        "-",
        b.num_series,
        size
    );
}

/// Bytes in binary units, as promtool's human-readable sizes.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_durations_follow_promtool() {
        assert_eq!(block_duration(0), DEFAULT_BLOCK_MS);
        assert_eq!(block_duration(DEFAULT_BLOCK_MS * 5), DEFAULT_BLOCK_MS * 3);
        assert_eq!(block_duration(DEFAULT_BLOCK_MS * 9), DEFAULT_BLOCK_MS * 9);
    }
}
