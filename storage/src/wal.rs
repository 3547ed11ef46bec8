//! The segmented write-ahead log in `<data_dir>/promflow/wal/`.
//!
//! Segments are files named by an 8-digit zero-padded sequence number (`00000001`, …). A
//! segment is cut (fsynced, then a new one started) when the next write would push it past
//! the configured size; a record never spans two segments, and one commit is one
//! `write(2)` of all its records, so a crash leaves at most one torn record at the tail.
//!
//! Record framing (little endian):
//!
//! ```text
//! u32 payload length | u32 crc32c(type byte ‖ payload) | u8 type | payload
//! ```
//!
//! The type byte names both the kind of record and its encoding version, so new kinds
//! (tombstones, checkpoint markers, …) or new encodings of old kinds get new type codes and
//! old readers skip what they do not know. Type 0 is never written, so a zero-filled tail is
//! detected as corruption. Current types:
//!
//! * [`REC_SERIES_V1`]: repeated `u64 ref | uvarint n | n × (uvarint len, name, uvarint len,
//!   value)`;
//! * [`REC_SAMPLES_V2`]: repeated `varint ref delta | varint t delta | uvarint value`, each
//!   delta from the entry before in the record (the first from 0), and the value as
//!   `zigzag(m) << 3 | (d + 1)` for a decimal mantissa `m` at `d ≤ 6` places that gives it
//!   back bit for bit (see [`crate::decimal`]), or `0` followed by its 64 raw bits, little
//!   endian. Remote write and scrapes commit series side by side with one timestamp, so an
//!   entry takes about 6 bytes where version 1 took 24;
//! * [`REC_SAMPLES_V1`] (read, no longer written): repeated `u64 ref | i64 t | u64 value
//!   bits`;
//! * [`REC_TOMBSTONES_V1`]: repeated `u64 ref | i64 mint | i64 maxt`: the series' samples in
//!   `mint..=maxt` written before this record are deleted;
//! * [`REC_HISTOGRAMS_V1`], [`REC_EXEMPLARS_V1`] and [`REC_START_TIMESTAMPS_V1`], described
//!   at their type codes.
//!
//! Replay reads every segment in order. A torn or corrupt record (short header, length past
//! the end of the file, checksum mismatch) truncates that segment at the last good record;
//! later segments are still read. Corruption is logged and counted, never fatal.
//!
//! Checkpoints. When the head is cut into a block and truncated at time `T`, older segments
//! hold only samples that are now in a block, but later segments still refer to series
//! defined in them. A checkpoint `checkpoint.NNNNNNNN` (a file framed like a segment) holds
//! series records for every series still in the head, written when segment `N` is started.
//! Then every segment before `N` whose samples are all older than `T` is deleted (oldest
//! first, stopping at the first that is still needed), and older checkpoints with them.
//! Replay reads the newest checkpoint first, then the segments left. Samples older than `T`
//! that a kept segment still holds are skipped by the caller, which knows `T` from the
//! blocks on disk.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::codec::{put_str, put_uvarint, put_varint, unzigzag, zigzag, Cursor};
use crate::exemplars::Exemplar;
use crate::{Error, FloatHistogram, Labels};

/// Series record, version 1.
pub(crate) const REC_SERIES_V1: u8 = 1;
/// Samples record, version 1: fixed 24-byte entries (read, no longer written).
pub(crate) const REC_SAMPLES_V1: u8 = 2;
/// Samples record, version 2: entries as differences and decimal mantissas.
pub(crate) const REC_SAMPLES_V2: u8 = 7;
/// Tombstones record, version 1: deleted time ranges of series.
pub(crate) const REC_TOMBSTONES_V1: u8 = 3;
/// Native-histogram samples record, version 1: (series ref `u64`, timestamp `i64`, the
/// histogram in [`FloatHistogram::encode`]'s form) per entry.
pub(crate) const REC_HISTOGRAMS_V1: u8 = 4;
/// Exemplars record, version 1: (series ref `u64`, timestamp `i64`, value bits `u64`, the
/// labels as in a series record) per entry.
pub(crate) const REC_EXEMPLARS_V1: u8 = 5;
/// Start timestamps record, version 1: (series ref `uvarint`, timestamp `varint`, timestamp
/// minus start timestamp `varint`) per entry, written before the samples of its batch; a
/// start timestamp of 0 takes one away (see [`crate::start`]).
pub(crate) const REC_START_TIMESTAMPS_V1: u8 = 6;
/// Series removed record, version 1: the refs of series taken out of the head with all their
/// samples (they are in a block), as varint differences. The refs are never used again.
pub(crate) const REC_SERIES_REMOVED_V1: u8 = 8;

/// Length + checksum + type.
pub(crate) const HEADER_LEN: usize = 9;
/// Bytes of one entry in a version 1 samples record or a tombstones record.
const SAMPLE_LEN: usize = 24;
/// Most decimal places a version 2 samples record tries for a value: exporters' values have
/// few, and each place tried costs a division on the append path.
const WAL_MAX_DIGITS: u8 = 4;
/// Low bits of a version 2 samples record's value that hold its places plus one (0: raw);
/// they could name up to 6 places.
const DIGITS_BITS: u32 = 3;
/// Records are split before their payload grows past this, keeping lengths far below
/// `u32::MAX` and replay buffers modest.
const MAX_PAYLOAD: usize = 32 << 20;

/// A sample addressed by series ref, as the WAL stores it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RefSample {
    /// Series ref.
    pub(crate) r: u64,
    /// Timestamp.
    pub(crate) t: i64,
    /// Value.
    pub(crate) v: f64,
}

/// A decoded record.
#[derive(Debug)]
pub(crate) enum Record {
    /// New series and their refs.
    Series(Vec<(u64, Labels)>),
    /// Samples of known series.
    Samples(Vec<RefSample>),
    /// Deleted ranges: (series ref, mint, maxt), inclusive.
    Tombstones(Vec<(u64, i64, i64)>),
    /// Native-histogram samples of known series: (series ref, timestamp, histogram).
    Histograms(Vec<(u64, i64, FloatHistogram)>),
    /// Exemplars of known series: (series ref, exemplar).
    Exemplars(Vec<(u64, Exemplar)>),
    /// Start timestamps of samples of known series: (series ref, timestamp, start timestamp).
    StartTimestamps(Vec<(u64, i64, i64)>),
    /// Series taken out of the head with everything they held, which is in a block.
    SeriesRemoved(Vec<u64>),
}

/// The file name of segment `seq`.
pub(crate) fn segment_name(seq: u64) -> String {
    format!("{seq:08}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    if name.len() < 8 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// Prefix of checkpoint files.
pub(crate) const CHECKPOINT_PREFIX: &str = "checkpoint.";

/// The newest checkpoint in `dir` and any older ones, by sequence number.
pub(crate) fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let ctx = || format!("listing WAL directory {}", dir.display());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::Io(ctx(), e))? {
        let entry = entry.map_err(|e| Error::Io(ctx(), e))?;
        let name = entry.file_name();
        let Some(seq) =
            name.to_str().and_then(|n| n.strip_prefix(CHECKPOINT_PREFIX)).and_then(parse_segment_name)
        else {
            continue;
        };
        out.push((seq, entry.path()));
    }
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out)
}

/// Segments in `dir`, sorted by sequence number.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let ctx = || format!("listing WAL directory {}", dir.display());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::Io(ctx(), e))? {
        let entry = entry.map_err(|e| Error::Io(ctx(), e))?;
        let name = entry.file_name();
        let Some(seq) = name.to_str().and_then(parse_segment_name) else { continue };
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            out.push((seq, entry.path()));
        }
    }
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out)
}

// ---- encoding ----

/// Appends framed records of one type to a buffer, splitting at [`MAX_PAYLOAD`].
struct RecordEncoder<'a> {
    out: &'a mut Vec<u8>,
    typ: u8,
    /// Offset of the open record's header, if one is open.
    start: Option<usize>,
}

impl<'a> RecordEncoder<'a> {
    fn new(out: &'a mut Vec<u8>, typ: u8) -> Self {
        RecordEncoder { out, typ, start: None }
    }

    /// The buffer to write the next entry into, opening or splitting a record as needed.
    fn entry(&mut self) -> &mut Vec<u8> {
        self.entry_opening().0
    }

    /// [`Self::entry`], and whether the entry starts a record (entries written as
    /// differences start again from 0 there).
    fn entry_opening(&mut self) -> (&mut Vec<u8>, bool) {
        if let Some(start) = self.start {
            if self.out.len() - start - HEADER_LEN >= MAX_PAYLOAD {
                self.finish_record();
            }
        }
        let opens = self.start.is_none();
        if opens {
            self.start = Some(self.out.len());
            self.out.extend_from_slice(&[0; HEADER_LEN]);
        }
        (self.out, opens)
    }

    fn finish_record(&mut self) {
        let Some(start) = self.start.take() else { return };
        let payload_len = self.out.len() - start - HEADER_LEN;
        self.out[start + 8] = self.typ;
        let crc = crc32c::crc32c(&self.out[start + 8..]);
        self.out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        self.out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

impl Drop for RecordEncoder<'_> {
    fn drop(&mut self) {
        self.finish_record();
    }
}

/// Appends series records for `series` to `out` (nothing when empty).
pub(crate) fn encode_series<L: std::borrow::Borrow<Labels>>(
    out: &mut Vec<u8>,
    series: impl IntoIterator<Item = (u64, L)>,
) {
    let mut enc = RecordEncoder::new(out, REC_SERIES_V1);
    for (r, ls) in series {
        let buf = enc.entry();
        buf.extend_from_slice(&r.to_le_bytes());
        put_labels(buf, ls.borrow());
    }
}

fn put_labels(buf: &mut Vec<u8>, ls: &Labels) {
    put_uvarint(buf, ls.len() as u64);
    for l in ls {
        put_str(buf, &l.name);
        put_str(buf, &l.value);
    }
}

/// Appends exemplar records for `exemplars` (series ref, exemplar) to `out` (nothing when
/// empty).
pub(crate) fn encode_exemplars<'e>(
    out: &mut Vec<u8>,
    exemplars: impl IntoIterator<Item = (u64, &'e Exemplar)>,
) {
    let mut enc = RecordEncoder::new(out, REC_EXEMPLARS_V1);
    for (r, e) in exemplars {
        let buf = enc.entry();
        buf.extend_from_slice(&r.to_le_bytes());
        buf.extend_from_slice(&e.t.to_le_bytes());
        buf.extend_from_slice(&e.value.to_bits().to_le_bytes());
        put_labels(buf, &e.labels);
    }
}

/// Appends start-timestamp records for `starts` (series ref, timestamp, start timestamp) to
/// `out` (nothing when empty).
pub(crate) fn encode_start_timestamps(out: &mut Vec<u8>, starts: impl IntoIterator<Item = (u64, i64, i64)>) {
    let mut enc = RecordEncoder::new(out, REC_START_TIMESTAMPS_V1);
    for (r, t, start) in starts {
        let buf = enc.entry();
        put_uvarint(buf, r);
        put_varint(buf, t);
        put_varint(buf, t.wrapping_sub(start));
    }
}

fn decode_start_timestamps(payload: &[u8]) -> Option<Vec<(u64, i64, i64)>> {
    let mut c = Cursor(payload);
    let mut out = Vec::new();
    while !c.is_empty() {
        let (r, t) = (c.uvarint()?, c.varint()?);
        out.push((r, t, t.wrapping_sub(c.varint()?)));
    }
    Some(out)
}

/// Appends samples records (version 2) for `samples` to `out` (nothing when empty).
pub(crate) fn encode_samples(out: &mut Vec<u8>, samples: impl IntoIterator<Item = RefSample>) {
    let mut enc = RecordEncoder::new(out, REC_SAMPLES_V2);
    let (mut r, mut t) = (0u64, 0i64);
    // the places of the last decimal value: a batch's neighbours are mostly one family's
    let mut digits = 0;
    for s in samples {
        let (buf, opens) = enc.entry_opening();
        if opens {
            (r, t) = (0, 0);
        }
        put_varint(buf, s.r.wrapping_sub(r) as i64);
        put_varint(buf, s.t.wrapping_sub(t));
        (r, t) = (s.r, s.t);
        let found = crate::decimal::mantissa(s.v, digits)
            .map(|m| (digits, m))
            .or_else(|| crate::decimal::fewest_places(s.v, 0..=WAL_MAX_DIGITS));
        match found {
            Some((d, m)) => {
                digits = d;
                put_uvarint(buf, zigzag(m) << DIGITS_BITS | u64::from(d + 1));
            }
            None => {
                buf.push(0);
                buf.extend_from_slice(&s.v.to_bits().to_le_bytes());
            }
        }
    }
}

fn decode_samples_v2(payload: &[u8]) -> Option<Vec<RefSample>> {
    let mut c = Cursor(payload);
    // entries take about six bytes; the vector grows if they take fewer
    let mut out = Vec::with_capacity(payload.len() / 6);
    let (mut r, mut t) = (0u64, 0i64);
    while !c.is_empty() {
        r = r.wrapping_add(c.varint()? as u64);
        t = t.wrapping_add(c.varint()?);
        let v = match c.uvarint()? {
            0 => f64::from_bits(c.u64()?),
            x => {
                let m = unzigzag(x >> DIGITS_BITS);
                crate::decimal::decode(m, (x & ((1 << DIGITS_BITS) - 1)).checked_sub(1)? as u8)
            }
        };
        out.push(RefSample { r, t, v });
    }
    Some(out)
}

/// Appends histogram records for `samples` (series ref, timestamp, histogram) to `out`
/// (nothing when empty).
pub(crate) fn encode_histograms<'h>(
    out: &mut Vec<u8>,
    samples: impl IntoIterator<Item = (u64, i64, &'h FloatHistogram)>,
) {
    let mut enc = RecordEncoder::new(out, REC_HISTOGRAMS_V1);
    for (r, t, h) in samples {
        let buf = enc.entry();
        buf.extend_from_slice(&r.to_le_bytes());
        buf.extend_from_slice(&t.to_le_bytes());
        h.encode(buf);
    }
}

// ---- decoding ----

fn decode_histograms(payload: &[u8]) -> Option<Vec<(u64, i64, FloatHistogram)>> {
    let mut c = Cursor(payload);
    let mut out = Vec::new();
    while !c.is_empty() {
        let r = c.u64()?;
        let t = c.u64()? as i64;
        out.push((r, t, FloatHistogram::decode(&mut c)?));
    }
    Some(out)
}

fn decode_series(payload: &[u8]) -> Option<Vec<(u64, Labels)>> {
    let mut c = Cursor(payload);
    let mut out = Vec::new();
    while !c.is_empty() {
        let r = c.u64()?;
        out.push((r, labels(&mut c)?));
    }
    Some(out)
}

fn labels(c: &mut Cursor<'_>) -> Option<Labels> {
    let n = c.uvarint()?;
    // each label takes at least two bytes: bound the count before allocating
    if n > c.remaining() as u64 / 2 {
        return None;
    }
    let mut pairs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        pairs.push((c.string()?, c.string()?));
    }
    Some(Labels::from_pairs(pairs))
}

fn decode_exemplars(payload: &[u8]) -> Option<Vec<(u64, Exemplar)>> {
    let mut c = Cursor(payload);
    let mut out = Vec::new();
    while !c.is_empty() {
        let r = c.u64()?;
        let t = c.u64()? as i64;
        let value = f64::from_bits(c.u64()?);
        out.push((r, Exemplar { labels: labels(&mut c)?, value, t }));
    }
    Some(out)
}

/// Appends a tombstones record (nothing when empty).
pub(crate) fn encode_tombstones(out: &mut Vec<u8>, stones: impl IntoIterator<Item = (u64, i64, i64)>) {
    let mut enc = RecordEncoder::new(out, REC_TOMBSTONES_V1);
    for (r, mint, maxt) in stones {
        let buf = enc.entry();
        buf.extend_from_slice(&r.to_le_bytes());
        buf.extend_from_slice(&mint.to_le_bytes());
        buf.extend_from_slice(&maxt.to_le_bytes());
    }
}

/// Appends a series removed record for `refs` (nothing when empty).
pub(crate) fn encode_series_removed(out: &mut Vec<u8>, refs: impl IntoIterator<Item = u64>) {
    let mut enc = RecordEncoder::new(out, REC_SERIES_REMOVED_V1);
    let mut prev = 0u64;
    for r in refs {
        let (buf, opens) = enc.entry_opening();
        if opens {
            prev = 0;
        }
        put_varint(buf, r.wrapping_sub(prev) as i64);
        prev = r;
    }
}

fn decode_series_removed(payload: &[u8]) -> Option<Vec<u64>> {
    let mut c = Cursor(payload);
    let (mut out, mut prev) = (Vec::new(), 0u64);
    while !c.is_empty() {
        prev = prev.wrapping_add(c.varint()? as u64);
        out.push(prev);
    }
    Some(out)
}

/// The three little-endian `u64`s of each fixed-size entry (samples and tombstones records).
fn triples(payload: &[u8]) -> Option<Vec<[u64; 3]>> {
    let entries = payload.chunks_exact(SAMPLE_LEN);
    if !entries.remainder().is_empty() {
        return None;
    }
    entries
        .map(|e| {
            let mut c = Cursor(e);
            Some([c.u64()?, c.u64()?, c.u64()?])
        })
        .collect()
}

fn decode_tombstones(payload: &[u8]) -> Option<Vec<(u64, i64, i64)>> {
    Some(triples(payload)?.into_iter().map(|[r, a, b]| (r, a as i64, b as i64)).collect())
}

fn decode_samples(payload: &[u8]) -> Option<Vec<RefSample>> {
    Some(
        triples(payload)?
            .into_iter()
            .map(|[r, t, v]| RefSample { r, t: t as i64, v: f64::from_bits(v) })
            .collect(),
    )
}

/// What a record with a sound checksum decodes to.
pub(crate) enum Decoded {
    Record(Record),
    /// A type this reader does not know (a newer writer's): framing is intact, so it is
    /// stepped over.
    Unknown,
    /// A known type whose payload does not decode.
    Bad,
}

/// Decodes the payload of a record of type `typ` found at `offset` in `path` (named in the
/// warnings).
pub(crate) fn decode_record(typ: u8, payload: &[u8], path: &Path, offset: u64) -> Decoded {
    let rec = match typ {
        REC_SERIES_V1 => decode_series(payload).map(Record::Series),
        REC_SAMPLES_V1 => decode_samples(payload).map(Record::Samples),
        REC_SAMPLES_V2 => decode_samples_v2(payload).map(Record::Samples),
        REC_TOMBSTONES_V1 => decode_tombstones(payload).map(Record::Tombstones),
        REC_HISTOGRAMS_V1 => decode_histograms(payload).map(Record::Histograms),
        REC_EXEMPLARS_V1 => decode_exemplars(payload).map(Record::Exemplars),
        REC_START_TIMESTAMPS_V1 => decode_start_timestamps(payload).map(Record::StartTimestamps),
        REC_SERIES_REMOVED_V1 => decode_series_removed(payload).map(Record::SeriesRemoved),
        0 => None,
        other => {
            tracing::warn!(segment = %path.display(), offset, record_type = other, "skipping WAL record of unknown type");
            return Decoded::Unknown;
        }
    };
    match rec {
        Some(rec) => Decoded::Record(rec),
        None => {
            tracing::warn!(segment = %path.display(), offset, record_type = typ, "skipping undecodable WAL record with a valid checksum");
            Decoded::Bad
        }
    }
}

/// Whether a record's checksum matches its type and payload.
pub(crate) fn checksum_ok(crc: u32, typ: u8, payload: &[u8]) -> bool {
    crc32c::crc32c_append(crc32c::crc32c(&[typ]), payload) == crc
}

/// A record header: payload length, checksum, type.
pub(crate) fn parse_header(header: &[u8; HEADER_LEN]) -> (u64, u32, u8) {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    (len, crc, header[8])
}

// ---- replay ----

/// What replay found.
#[derive(Debug, Default)]
pub(crate) struct ReplayOutcome {
    /// Torn or corrupt records found (each truncation or undecodable record counts once).
    pub(crate) corruptions: u64,
    /// Bytes cut off segment tails.
    pub(crate) truncated_bytes: u64,
    /// Segment files read.
    pub(crate) segments: u64,
    /// The last segment: sequence number, length after replay, and whether it can be
    /// appended to (its tail is known good).
    pub(crate) last: Option<(u64, u64, bool)>,
    /// Every segment's sequence number with its newest sample's timestamp (`i64::MIN` when
    /// it has no samples).
    pub(crate) segment_max_t: Vec<(u64, i64)>,
}

/// Reads every segment in `dir` in order, handing each decodable record to `apply`, and
/// truncates torn or corrupt tails.
pub(crate) fn replay(dir: &Path, mut apply: impl FnMut(Record)) -> Result<ReplayOutcome, Error> {
    let mut out = ReplayOutcome::default();
    if let Some((_, path)) = list_checkpoints(dir)?.pop() {
        let mut ignored = ReplayOutcome::default();
        replay_segment(&path, &mut apply, &mut ignored)?;
        out.corruptions += ignored.corruptions;
    }
    let segments = list_segments(dir)?;
    let mut prev: Option<u64> = None;
    for (seq, path) in segments {
        if let Some(p) = prev {
            if seq != p + 1 {
                tracing::warn!(after = p, next = seq, "WAL segments are not contiguous; reading on");
            }
        }
        prev = Some(seq);
        let mut max_t = i64::MIN;
        let mut track = |rec: Record| {
            if let Record::Samples(list) = &rec {
                max_t = list.iter().fold(max_t, |m, s| m.max(s.t));
            }
            apply(rec)
        };
        let (len, appendable) = replay_segment(&path, &mut track, &mut out)?;
        out.segment_max_t.push((seq, max_t));
        out.segments += 1;
        out.last = Some((seq, len, appendable));
    }
    Ok(out)
}

/// Replays one segment; returns its good length and whether its tail is sound.
fn replay_segment(
    path: &Path,
    apply: &mut impl FnMut(Record),
    out: &mut ReplayOutcome,
) -> Result<(u64, bool), Error> {
    let ctx = |what: &str| format!("{what} WAL segment {}", path.display());
    let file =
        OpenOptions::new().read(true).write(true).open(path).map_err(|e| Error::Io(ctx("opening"), e))?;
    let file_len = file.metadata().map_err(|e| Error::Io(ctx("reading metadata of"), e))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let mut offset: u64 = 0;
    let mut payload = Vec::new();
    let mut header = [0u8; HEADER_LEN];
    let bad: &str = loop {
        if offset == file_len {
            return Ok((offset, true));
        }
        if file_len - offset < HEADER_LEN as u64 {
            break "short record header";
        }
        reader.read_exact(&mut header).map_err(|e| Error::Io(ctx("reading"), e))?;
        let (len, crc, typ) = parse_header(&header);
        if len > file_len - offset - HEADER_LEN as u64 {
            break "record length past the end of the segment";
        }
        payload.resize(len as usize, 0);
        reader.read_exact(&mut payload).map_err(|e| Error::Io(ctx("reading"), e))?;
        if !checksum_ok(crc, typ, &payload) {
            break "checksum mismatch";
        }
        match decode_record(typ, &payload, path, offset) {
            Decoded::Record(rec) => apply(rec),
            Decoded::Unknown => {}
            Decoded::Bad => out.corruptions += 1,
        }
        offset += HEADER_LEN as u64 + len;
    };
    let dropped = file_len - offset;
    out.corruptions += 1;
    out.truncated_bytes += dropped;
    tracing::warn!(
        segment = %path.display(),
        offset,
        dropped_bytes = dropped,
        reason = bad,
        "torn or corrupt WAL record: truncating the segment at the last good record"
    );
    drop(reader);
    match file.set_len(offset).and_then(|()| file.sync_all()) {
        Ok(()) => Ok((offset, true)),
        Err(e) => {
            tracing::warn!(segment = %path.display(), error = %e, "could not truncate WAL segment; it will not be appended to");
            Ok((offset, false))
        }
    }
}

// ---- writing ----

/// Appends records to the newest segment, cutting segments at the size limit.
#[derive(Debug)]
pub(crate) struct WalWriter {
    dir: PathBuf,
    segment_size: u64,
    seq: u64,
    file: File,
    /// Bytes of the current segment known to hold whole records.
    size: u64,
    /// Every segment in the directory, oldest first, with its newest sample's timestamp.
    segments: Vec<(u64, i64)>,
    /// The current segment may hold a partial record (a failed write that could not be
    /// undone): the next write goes to a fresh segment.
    broken: bool,
}

impl WalWriter {
    /// Opens the writer after replay: appends to the last segment when that is sound and has
    /// room, otherwise starts the next one.
    pub(crate) fn open(dir: &Path, segment_size: u64, replayed: &ReplayOutcome) -> Result<Self, Error> {
        let segment_size = segment_size.max(1);
        match replayed.last {
            Some((seq, len, true)) if len < segment_size => {
                let path = dir.join(segment_name(seq));
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::Io(format!("opening WAL segment {}", path.display()), e))?;
                Ok(WalWriter {
                    dir: dir.to_path_buf(),
                    segment_size,
                    seq,
                    file,
                    size: len,
                    segments: replayed.segment_max_t.clone(),
                    broken: false,
                })
            }
            last => {
                let next = last.map_or(1, |(seq, _, _)| seq + 1);
                let (seq, file) = create_segment(dir, next)?;
                let mut segments = replayed.segment_max_t.clone();
                segments.push((seq, i64::MIN));
                Ok(WalWriter {
                    dir: dir.to_path_buf(),
                    segment_size,
                    seq,
                    file,
                    size: 0,
                    segments,
                    broken: false,
                })
            }
        }
    }

    /// The number of the segment being written.
    pub(crate) fn current_segment(&self) -> u64 {
        self.seq
    }

    /// Segment files in the WAL directory.
    pub(crate) fn segments(&self) -> u64 {
        self.segments.len() as u64
    }

    /// Bytes of the WAL directory's segments and checkpoint.
    pub(crate) fn size_bytes(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    }

    /// Writes `buf` (whole records whose newest sample is at `max_t`) with one positioned
    /// write, cutting a segment first if it would overflow.
    pub(crate) fn write(&mut self, buf: &[u8], max_t: i64) -> Result<(), Error> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.broken || (self.size > 0 && self.size + buf.len() as u64 > self.segment_size) {
            self.cut()?;
        }
        match self.file.write_all_at(buf, self.size) {
            Ok(()) => {
                self.size += buf.len() as u64;
                if let Some(last) = self.segments.last_mut().filter(|(seq, _)| *seq == self.seq) {
                    last.1 = last.1.max(max_t);
                }
                Ok(())
            }
            Err(e) => {
                // a partial record would end replay of this segment early and hide every
                // later record in it: cut it off, or abandon the segment if that fails
                if self.file.set_len(self.size).is_err() {
                    self.broken = true;
                }
                Err(Error::Io(format!("writing WAL segment {}", self.path().display()), e))
            }
        }
    }

    /// Flushes the current segment to stable storage.
    pub(crate) fn sync(&self) -> Result<(), Error> {
        self.file
            .sync_all()
            .map_err(|e| Error::Io(format!("syncing WAL segment {}", self.path().display()), e))
    }

    fn path(&self) -> PathBuf {
        self.dir.join(segment_name(self.seq))
    }

    fn cut(&mut self) -> Result<(), Error> {
        if let Err(e) = self.sync() {
            // the records are with the kernel, so they survive a process crash; only power
            // loss durability of this segment is in doubt
            tracing::error!(error = %e, "fsync of WAL segment failed while cutting it");
        }
        let (seq, file) = create_segment(&self.dir, self.seq + 1)?;
        self.seq = seq;
        self.file = file;
        self.size = 0;
        self.segments.push((seq, i64::MIN));
        self.broken = false;
        Ok(())
    }

    /// Starts a new segment, writes a checkpoint of `series` (every series the head still
    /// holds) beside it, and deletes the segments before it whose samples are all older than
    /// `mint` and that come before `keep_from` (the oldest segment a reader still reads) or
    /// whose samples are all older than `give_up` (a reader that far behind loses them), and
    /// older checkpoints. Returns the number of segments deleted.
    pub(crate) fn checkpoint<L: std::borrow::Borrow<Labels>>(
        &mut self,
        series: impl IntoIterator<Item = (u64, L)>,
        mint: i64,
        (keep_from, give_up): (u64, i64),
    ) -> Result<usize, Error> {
        self.cut()?;
        let name = format!("{CHECKPOINT_PREFIX}{}", segment_name(self.seq));
        let tmp = self.dir.join(format!("{name}.tmp"));
        let path = self.dir.join(&name);
        let mut buf = Vec::new();
        encode_series(&mut buf, series);
        let ctx = || format!("writing WAL checkpoint {}", tmp.display());
        std::fs::write(&tmp, &buf).map_err(|e| Error::Io(ctx(), e))?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::Io(ctx(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::Io(ctx(), e))?;
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not fsync the WAL directory");
        }
        for (seq, old) in list_checkpoints(&self.dir)? {
            if seq < self.seq {
                let _ = std::fs::remove_file(old);
            }
        }
        let deletable = self
            .segments
            .iter()
            .take_while(|(seq, max_t)| {
                *seq < self.seq && *max_t < mint && (*seq < keep_from || *max_t < give_up)
            })
            .count();
        for (seq, _) in self.segments.drain(..deletable) {
            let p = self.dir.join(segment_name(seq));
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(segment = %p.display(), error = %e, "could not delete an old WAL segment");
            }
        }
        Ok(deletable)
    }
}

/// Creates a new segment at `seq` or the first free number after it, and syncs the
/// directory so the new name survives a power loss.
fn create_segment(dir: &Path, mut seq: u64) -> Result<(u64, File), Error> {
    loop {
        let path = dir.join(segment_name(seq));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => {
                if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not fsync the WAL directory");
                }
                return Ok((seq, file));
            }
            // never overwrite a file we did not expect: take the next number
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => seq += 1,
            Err(e) => return Err(Error::Io(format!("creating WAL segment {}", path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn read_all(dir: &Path) -> (Vec<(u64, Labels)>, Vec<RefSample>, ReplayOutcome) {
        let mut series = Vec::new();
        let mut samples = Vec::new();
        let out = replay(dir, |r| match r {
            Record::Series(s) => series.extend(s),
            Record::Samples(s) => samples.extend(s),
            Record::Tombstones(_)
            | Record::Histograms(_)
            | Record::Exemplars(_)
            | Record::StartTimestamps(_)
            | Record::SeriesRemoved(_) => {}
        })
        .unwrap();
        (series, samples, out)
    }

    fn batch(r: u64, t: i64) -> Vec<u8> {
        let mut buf = Vec::new();
        let l = ls(&[("__name__", "m"), ("i", &r.to_string())]);
        encode_series(&mut buf, [(r, &l)]);
        encode_samples(&mut buf, [RefSample { r, t, v: t as f64 }]);
        buf
    }

    #[test]
    fn series_removed_records_round_trip_any_refs_in_any_order() {
        let refs = vec![3, 1, u64::MAX, 0, 1 << 40, 2];
        let mut buf = Vec::new();
        encode_series_removed(&mut buf, refs.iter().copied());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment_name(1)), &buf).unwrap();
        let mut got = Vec::new();
        replay(dir.path(), |r| {
            if let Record::SeriesRemoved(list) = r {
                got.extend(list)
            }
        })
        .unwrap();
        assert_eq!(got, refs);
    }

    #[test]
    fn histogram_records_round_trip() {
        let h = crate::native_histogram::FloatHistogram::from_spans(
            3,
            0.001,
            2.0,
            12.0,
            -4.5,
            (&[crate::native_histogram::Span { offset: -2, length: 2 }], &[3.0, 4.0]),
            (&[crate::native_histogram::Span { offset: 5, length: 1 }], &[3.0]),
            Vec::new(),
        )
        .unwrap();
        let custom = crate::native_histogram::FloatHistogram::from_classic(
            &[(1.0, 2.0), (f64::INFINITY, 5.0)],
            Some(5.0),
            7.0,
        )
        .unwrap();
        let mut buf = Vec::new();
        encode_histograms(&mut buf, [(7, -3, &h), (8, 9, &custom)]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment_name(1)), &buf).unwrap();
        let mut got = Vec::new();
        replay(dir.path(), |r| {
            if let Record::Histograms(list) = r {
                got.extend(list)
            }
        })
        .unwrap();
        assert_eq!(got, vec![(7, -3, h.clone()), (8, 9, custom)]);
        // a truncated entry is not a histogram
        let mut one = Vec::new();
        h.encode(&mut one);
        assert!(decode_histograms(
            &[&7u64.to_le_bytes()[..], &0u64.to_le_bytes(), &one[..one.len() - 1]].concat()
        )
        .is_none());
    }

    #[test]
    fn encode_decode_round_trip() {
        let a = ls(&[("__name__", "up"), ("job", "x")]);
        let b = ls(&[("__name__", "ünïcode"), ("empty_name_ok", "v")]);
        let mut buf = Vec::new();
        encode_series(&mut buf, [(1, &a), (2, &b)]);
        encode_samples(
            &mut buf,
            [RefSample { r: 1, t: i64::MIN, v: crate::stale_nan() }, RefSample { r: 2, t: 5, v: -0.0 }],
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment_name(1)), &buf).unwrap();
        let (series, samples, out) = read_all(dir.path());
        assert_eq!(series, vec![(1, a), (2, b)]);
        assert_eq!(samples.len(), 2);
        assert!(crate::is_stale_nan(samples[0].v));
        assert_eq!(samples[0].t, i64::MIN);
        assert_eq!(samples[1].v.to_bits(), (-0.0f64).to_bits());
        assert_eq!(out.corruptions, 0);
        assert_eq!(out.last, Some((1, buf.len() as u64, true)));
    }

    #[test]
    fn empty_inputs_write_nothing() {
        let mut buf = Vec::new();
        encode_series(&mut buf, std::iter::empty::<(u64, &Labels)>());
        encode_samples(&mut buf, std::iter::empty());
        assert!(buf.is_empty());
    }

    /// A batch past a record's payload limit is split, and the second record's differences
    /// start again from 0.
    #[test]
    fn big_batches_are_split_into_records() {
        let mut buf = Vec::new();
        // raw values: 9 bytes, and a byte for each difference
        let n = MAX_PAYLOAD / 11 + 10;
        let sample = |i: i64| RefSample {
            r: 1 + i as u64 % 3,
            t: i,
            v: f64::from_bits(0x3ff0_0000_0000_0001 + i as u64),
        };
        encode_samples(&mut buf, (0..n as i64).map(sample));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment_name(1)), &buf).unwrap();
        let mut records = 0;
        let mut got = Vec::new();
        replay(dir.path(), |r| {
            records += 1;
            if let Record::Samples(s) = r {
                got.extend(s);
            }
        })
        .unwrap();
        assert_eq!((records, got.len()), (2, n));
        assert!(got.iter().enumerate().all(|(i, s)| *s == sample(i as i64)));
    }

    /// Values of every kind come back bit for bit; a remote-write batch (series side by side,
    /// one timestamp, exporter values) takes at most 7 bytes an entry.
    #[test]
    fn samples_records_round_trip_values_and_stay_small() {
        let values = [
            0.0,
            -0.0,
            1.0,
            0.01,
            81_234.56,
            5e10,
            -3.25,
            0.123456789,
            1.0 / 3.0,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            crate::stale_nan(),
            9_007_199_254_740_991.0,
            1e-4,
            1e-5,
        ];
        let samples: Vec<RefSample> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| RefSample {
                r: [7, 3, u64::MAX, 0][i % 4],
                t: [i64::MIN, 5, i64::MAX, -1][i % 4],
                v,
            })
            .collect();
        let mut buf = Vec::new();
        encode_samples(&mut buf, samples.iter().copied());
        let Decoded::Record(Record::Samples(got)) =
            decode_record(buf[8], &buf[HEADER_LEN..], Path::new("test"), 0)
        else {
            panic!("not a samples record")
        };
        let bits = |s: &[RefSample]| s.iter().map(|s| (s.r, s.t, s.v.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&samples));

        let batch: Vec<RefSample> = (0..2_000u64)
            .map(|i| RefSample { r: 1_000_000 + i, t: 1_790_000_000_000, v: 81_234.56 + i as f64 * 15.01 })
            .collect();
        let mut buf = Vec::new();
        encode_samples(&mut buf, batch.iter().copied());
        assert!(buf.len() <= HEADER_LEN + 7 * batch.len(), "{} bytes", buf.len());
    }

    /// Logs written before samples records took differences still replay.
    #[test]
    fn version_1_samples_records_replay() {
        let mut payload = Vec::new();
        for (r, t, v) in [(1u64, 10i64, 0.5f64), (2, 20, f64::NAN)] {
            payload.extend_from_slice(&r.to_le_bytes());
            payload.extend_from_slice(&t.to_le_bytes());
            payload.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        let mut buf = (payload.len() as u32).to_le_bytes().to_vec();
        buf.extend_from_slice(
            &crc32c::crc32c_append(crc32c::crc32c(&[REC_SAMPLES_V1]), &payload).to_le_bytes(),
        );
        buf.push(REC_SAMPLES_V1);
        buf.extend_from_slice(&payload);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment_name(1)), &buf).unwrap();
        let (_, samples, out) = read_all(dir.path());
        assert_eq!(out.corruptions, 0);
        assert_eq!(samples.iter().map(|s| (s.r, s.t)).collect::<Vec<_>>(), vec![(1, 10), (2, 20)]);
        assert_eq!(samples[0].v, 0.5);
        assert!(samples[1].v.is_nan());
    }

    #[test]
    fn writer_cuts_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path(), 100, &ReplayOutcome::default()).unwrap();
        for i in 1..=10 {
            w.write(&batch(i, i as i64), i as i64).unwrap();
        }
        let segs = list_segments(dir.path()).unwrap();
        assert_eq!(segs.len() as u64, w.segments());
        assert!(segs.len() >= 5, "{segs:?}");
        assert_eq!(segs[0].1.file_name().unwrap(), "00000001");
        let (series, samples, out) = read_all(dir.path());
        assert_eq!(series.len(), 10);
        assert_eq!(samples.iter().map(|s| s.t).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
        assert_eq!(out.corruptions, 0);
    }

    fn write_batches(dir: &Path, n: u64) -> Vec<u64> {
        let mut w = WalWriter::open(dir, 1 << 20, &ReplayOutcome::default()).unwrap();
        let mut ends = Vec::new();
        for i in 1..=n {
            w.write(&batch(i, i as i64), i as i64).unwrap();
            ends.push(w.size);
        }
        w.sync().unwrap();
        ends
    }

    #[test]
    fn torn_tail_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let ends = write_batches(dir.path(), 5);
        let seg = dir.path().join(segment_name(1));
        let full = std::fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(full - 3).unwrap();
        let (series, samples, out) = read_all(dir.path());
        // the last batch is two records: the series record survives, the samples one is torn
        assert_eq!(series.len(), 5);
        assert_eq!(samples.len(), 4);
        assert_eq!(out.corruptions, 1);
        let kept = std::fs::metadata(&seg).unwrap().len();
        assert!(kept > ends[3] && kept < ends[4]);
        assert_eq!(out.truncated_bytes, full - 3 - kept);
        // a second replay finds a clean log
        let (_, samples, out) = read_all(dir.path());
        assert_eq!((samples.len(), out.corruptions), (4, 0));
    }

    #[test]
    fn flipped_byte_and_zero_tail() {
        let dir = tempfile::tempdir().unwrap();
        let ends = write_batches(dir.path(), 5);
        let seg = dir.path().join(segment_name(1));
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = ends[2] as usize + 12;
        bytes[at] ^= 0x40;
        std::fs::write(&seg, &bytes).unwrap();
        let (_, samples, out) = read_all(dir.path());
        assert_eq!(samples.len(), 3);
        assert_eq!(out.corruptions, 1);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), ends[2]);

        // zeros appended after good records (as some filesystems leave after a crash)
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes.extend_from_slice(&[0; 4096]);
        std::fs::write(&seg, &bytes).unwrap();
        let (_, samples, out) = read_all(dir.path());
        assert_eq!((samples.len(), out.corruptions, out.truncated_bytes), (3, 1, 4096));
    }

    #[test]
    fn huge_length_is_corruption_not_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = batch(1, 1);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4, REC_SAMPLES_V1, 9, 9]);
        std::fs::write(dir.path().join(segment_name(1)), &bytes).unwrap();
        let (_, samples, out) = read_all(dir.path());
        assert_eq!((samples.len(), out.corruptions, out.truncated_bytes), (1, 1, 11));
    }

    #[test]
    fn corruption_in_middle_segment_keeps_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path(), 100, &ReplayOutcome::default()).unwrap();
        for i in 1..=6 {
            w.write(&batch(i, i as i64), i as i64).unwrap();
        }
        let segs = list_segments(dir.path()).unwrap();
        assert!(segs.len() >= 3);
        let first = &segs[0].1;
        let len = std::fs::metadata(first).unwrap().len();
        OpenOptions::new().write(true).open(first).unwrap().set_len(len - 1).unwrap();
        let (_, samples, out) = read_all(dir.path());
        assert_eq!(out.corruptions, 1);
        // only the torn samples record of the first segment is lost
        assert_eq!(samples.len(), 5);
        assert!(samples.iter().any(|s| s.t == 6));
    }

    #[test]
    fn unknown_record_types_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        {
            let mut enc = RecordEncoder::new(&mut bytes, 200);
            enc.entry().extend_from_slice(b"from the future");
        }
        bytes.extend_from_slice(&batch(1, 1));
        std::fs::write(dir.path().join(segment_name(1)), &bytes).unwrap();
        let (series, samples, out) = read_all(dir.path());
        assert_eq!((series.len(), samples.len(), out.corruptions), (1, 1, 0));
    }

    #[test]
    fn writer_appends_to_sound_last_segment_and_skips_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        write_batches(dir.path(), 2);
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let (_, _, out) = read_all(dir.path());
        let mut w = WalWriter::open(dir.path(), 1 << 20, &out).unwrap();
        assert_eq!(w.seq, 1);
        w.write(&batch(3, 3), 3).unwrap();
        let (_, samples, out) = read_all(dir.path());
        assert_eq!((samples.len(), out.segments), (3, 1));
    }
}
