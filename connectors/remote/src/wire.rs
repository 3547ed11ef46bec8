//! A `WriteRequest` decoder that borrows every label from the decompressed body.
//!
//! Remote write sends each series' full label set with every sample, so decoding into owned
//! strings (as generated protobuf code does) costs two allocations per label per sample,
//! most of a receiver's time at 100k series. This reader walks the protobuf wire format
//! directly and hands out `&str`s into the body; the storage looks known series up by them
//! without allocating (see `Appender::append_ref`).

use prost::Message;

use crate::{Error, Histogram};

/// A label's name and value as sent.
pub type LabelPair<'a> = (&'a str, &'a str);

/// A decoded `WriteRequest` whose label names and values borrow from the request body.
#[derive(Debug, Default)]
pub struct RequestView<'a> {
    /// Every series' label pairs, in wire order, one series after another.
    pairs: Vec<LabelPair<'a>>,
    /// Every series' samples as (timestamp, value), one series after another.
    samples: Vec<(i64, f64)>,
    /// The samples' start timestamps (remote write 2.0; 0 where none), aligned with
    /// `samples`; empty for a 1.0 request, which has none.
    starts: Vec<i64>,
    /// Every series' native histograms, one series after another.
    histograms: Vec<Histogram>,
    /// Every series' exemplars, one series after another.
    exemplars: Vec<WireExemplar<'a>>,
    /// Per series: the end of its pairs, of its samples, of its histograms and of its
    /// exemplars.
    ends: Vec<[u32; 4]>,
}

/// An exemplar as sent, its labels borrowed from the request body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WireExemplar<'a> {
    /// Its label pairs (a trace ID, typically), as sent.
    pub labels: Vec<LabelPair<'a>>,
    /// The observed value.
    pub value: f64,
    /// When it was observed (ms).
    pub timestamp: i64,
}

/// One series of a request: what [`RequestView::series`] yields.
#[derive(Clone, Copy, Debug)]
pub struct SeriesView<'v, 'a> {
    /// Its label pairs, as sent: not yet sorted or checked.
    pub labels: &'v [LabelPair<'a>],
    /// Its float samples as (timestamp, value).
    pub samples: &'v [(i64, f64)],
    /// Their start timestamps (remote write 2.0's `start_timestamp`; 0 where none), or
    /// nothing for a 1.0 request.
    pub starts: &'v [i64],
    /// Its native histograms.
    pub histograms: &'v [Histogram],
    /// Its exemplars.
    pub exemplars: &'v [WireExemplar<'a>],
}

impl<'a> RequestView<'a> {
    /// Parses a decompressed `WriteRequest`. Fields other than labels, float samples, native
    /// histograms and exemplars (metadata) are skipped, as unknown fields are.
    pub fn parse(raw: &'a [u8]) -> Result<Self, Error> {
        let mut view = RequestView::default();
        let mut r = Reader(raw);
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (1, LEN) => view.parse_series(r.bytes()?)?,
                (1, _) => return Err(Error::Malformed("WriteRequest.timeseries: wrong wire type")),
                _ => r.skip(wire)?,
            }
        }
        Ok(view)
    }

    /// Parses a decompressed remote write 2.0 `io.prometheus.write.v2.Request`: labels are
    /// references into the request's symbol table. Samples' and histograms' start timestamps
    /// are read; metadata is skipped.
    pub fn parse_v2(raw: &'a [u8]) -> Result<Self, Error> {
        // the symbols may come after the series on the wire: collect them first
        let mut symbols: Vec<&'a str> = Vec::new();
        let mut r = Reader(raw);
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (4, LEN) => symbols.push(utf8(r.bytes()?)?),
                (4, _) => return Err(Error::Malformed("Request.symbols: wrong wire type")),
                _ => r.skip(wire)?,
            }
        }
        let mut view = RequestView::default();
        let mut r = Reader(raw);
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (5, LEN) => view.parse_series_v2(r.bytes()?, &symbols)?,
                (5, _) => return Err(Error::Malformed("Request.timeseries: wrong wire type")),
                _ => r.skip(wire)?,
            }
        }
        Ok(view)
    }

    fn parse_series_v2(&mut self, raw: &'a [u8], symbols: &[&'a str]) -> Result<(), Error> {
        let mut refs: Vec<u64> = Vec::new();
        let mut r = Reader(raw);
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (1, LEN | VARINT) => r.varints_into(wire, &mut refs)?,
                (2, LEN) => self.push_sample(parse_sample(r.bytes()?)?),
                (3, LEN) => self.histograms.push(parse_histogram(r.bytes()?)?),
                (4, LEN) => self.exemplars.push(parse_exemplar_v2(r.bytes()?, symbols)?),
                (1..=4, _) => return Err(Error::Malformed("TimeSeries: wrong wire type")),
                _ => r.skip(wire)?,
            }
        }
        self.pairs.extend(resolve(
            &refs,
            symbols,
            [
                "TimeSeries.labels_refs: an odd number of references",
                "TimeSeries.labels_refs: a reference past the symbol table",
            ],
        )?);
        self.end_series()
    }

    /// Adds a remote write 2.0 sample of the series being read: (timestamp, value), start
    /// timestamp.
    fn push_sample(&mut self, (sample, start): ((i64, f64), i64)) {
        self.samples.push(sample);
        self.starts.push(start);
    }

    /// Closes the series whose pairs, samples, histograms and exemplars were pushed last.
    fn end_series(&mut self) -> Result<(), Error> {
        let end = |n: usize| u32::try_from(n).map_err(|_| Error::Malformed("request too large"));
        self.ends.push([
            end(self.pairs.len())?,
            end(self.samples.len())?,
            end(self.histograms.len())?,
            end(self.exemplars.len())?,
        ]);
        Ok(())
    }

    fn parse_series(&mut self, raw: &'a [u8]) -> Result<(), Error> {
        let mut r = Reader(raw);
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (1, LEN) => self.pairs.push(parse_label(r.bytes()?)?),
                (2, LEN) => self.samples.push(parse_sample(r.bytes()?)?.0),
                (3, LEN) => self.exemplars.push(parse_exemplar(r.bytes()?)?),
                (4, LEN) => self.histograms.push(parse_histogram(r.bytes()?)?),
                (1..=4, _) => return Err(Error::Malformed("TimeSeries: wrong wire type")),
                _ => r.skip(wire)?,
            }
        }
        self.end_series()
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the request has no series.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The request of the series whose index (in wire order) `keep` takes.
    pub fn subset(&self, keep: impl Fn(usize) -> bool) -> RequestView<'a> {
        let mut out = RequestView::default();
        for (_, series) in self.series().enumerate().filter(|(i, _)| keep(*i)) {
            out.pairs.extend_from_slice(series.labels);
            out.samples.extend_from_slice(series.samples);
            out.starts.extend_from_slice(series.starts);
            out.histograms.extend_from_slice(series.histograms);
            out.exemplars.extend_from_slice(series.exemplars);
            let end = |n: usize| n as u32;
            out.ends.push([
                end(out.pairs.len()),
                end(out.samples.len()),
                end(out.histograms.len()),
                end(out.exemplars.len()),
            ]);
        }
        // a 1.0 request has no start timestamps; a 2.0 one has one per sample
        if out.starts.len() != out.samples.len() {
            out.starts.clear();
        }
        out
    }

    /// The request as a remote write 1.0 `WriteRequest` (start timestamps, which 1.0 cannot
    /// carry, are left out).
    pub fn to_write_request(&self) -> crate::WriteRequest {
        let label = |&(name, value): &LabelPair<'_>| crate::Label { name: name.into(), value: value.into() };
        let timeseries = self
            .series()
            .map(|s| crate::TimeSeries {
                labels: s.labels.iter().map(label).collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|&(timestamp, value)| crate::Sample { value, timestamp })
                    .collect(),
                exemplars: s
                    .exemplars
                    .iter()
                    .map(|e| crate::Exemplar {
                        labels: e.labels.iter().map(label).collect(),
                        value: e.value,
                        timestamp: e.timestamp,
                    })
                    .collect(),
                histograms: s.histograms.to_vec(),
            })
            .collect();
        crate::WriteRequest { timeseries, metadata: Vec::new() }
    }

    /// The request as a remote write 2.0 request, start timestamps included.
    pub fn to_write_request_v2(&self) -> crate::WriteRequestV2 {
        let mut v2 = crate::WriteRequestV2::from_v1(&self.to_write_request());
        for (ts, series) in v2.timeseries.iter_mut().zip(self.series()) {
            for (sample, &start) in ts.samples.iter_mut().zip(series.starts) {
                sample.start_timestamp = start;
            }
        }
        v2
    }

    /// Adds a series built by the caller rather than parsed: what another receiver (OTLP)
    /// hands to the cluster's placement. Its `starts` are one per sample, or none.
    pub fn push_series(&mut self, series: SeriesView<'_, 'a>) -> Result<(), Error> {
        if !series.starts.is_empty() && series.starts.len() != series.samples.len() {
            return Err(Error::Malformed("a series' start timestamps do not match its samples"));
        }
        self.pairs.extend_from_slice(series.labels);
        let before = self.samples.len();
        self.samples.extend_from_slice(series.samples);
        if !series.starts.is_empty() || !self.starts.is_empty() {
            // the starts stay aligned with the samples: zeros for a series that has none
            self.starts.resize(before, 0);
            self.starts.extend_from_slice(series.starts);
            self.starts.resize(self.samples.len(), 0);
        }
        self.histograms.extend_from_slice(series.histograms);
        self.exemplars.extend_from_slice(series.exemplars);
        self.end_series()
    }

    /// Each series in wire order.
    pub fn series(&self) -> impl Iterator<Item = SeriesView<'_, 'a>> + '_ {
        let mut start = [0usize; 4];
        self.ends.iter().map(move |end| {
            let end = end.map(|e| e as usize);
            let out = SeriesView {
                labels: &self.pairs[start[0]..end[0]],
                samples: &self.samples[start[1]..end[1]],
                starts: self.starts.get(start[1]..end[1]).unwrap_or(&[]),
                histograms: &self.histograms[start[2]..end[2]],
                exemplars: &self.exemplars[start[3]..end[3]],
            };
            start = end;
            out
        })
    }
}

/// A 1.0 `Exemplar`: labels, value, timestamp.
fn parse_exemplar(raw: &[u8]) -> Result<WireExemplar<'_>, Error> {
    let mut e = WireExemplar::default();
    let mut r = Reader(raw);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, LEN) => e.labels.push(parse_label(r.bytes()?)?),
            (2, I64) => e.value = f64::from_bits(r.fixed64()?),
            (3, VARINT) => e.timestamp = r.varint()? as i64,
            (1..=3, _) => return Err(Error::Malformed("Exemplar: wrong wire type")),
            _ => r.skip(wire)?,
        }
    }
    Ok(e)
}

/// A 2.0 `Exemplar`: label references into the symbol table, value, timestamp.
fn parse_exemplar_v2<'a>(raw: &'a [u8], symbols: &[&'a str]) -> Result<WireExemplar<'a>, Error> {
    let mut e = WireExemplar::default();
    let mut refs: Vec<u64> = Vec::new();
    let mut r = Reader(raw);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, LEN | VARINT) => r.varints_into(wire, &mut refs)?,
            (2, I64) => e.value = f64::from_bits(r.fixed64()?),
            (3, VARINT) => e.timestamp = r.varint()? as i64,
            (1..=3, _) => return Err(Error::Malformed("Exemplar: wrong wire type")),
            _ => r.skip(wire)?,
        }
    }
    e.labels = resolve(
        &refs,
        symbols,
        [
            "Exemplar.labels_refs: an odd number of references",
            "Exemplar.labels_refs: a reference past the symbol table",
        ],
    )?;
    Ok(e)
}

/// Label pairs from 2.0's alternating name and value references into the symbol table;
/// `[odd, past]` are the errors for an odd number of references and for one past the table.
fn resolve<'a>(
    refs: &[u64],
    symbols: &[&'a str],
    [odd, past]: [&'static str; 2],
) -> Result<Vec<LabelPair<'a>>, Error> {
    if !refs.len().is_multiple_of(2) {
        return Err(Error::Malformed(odd));
    }
    let symbol =
        |i: u64| symbols.get(usize::try_from(i).unwrap_or(usize::MAX)).copied().ok_or(Error::Malformed(past));
    refs.chunks(2).map(|pair| Ok((symbol(pair[0])?, symbol(pair[1])?))).collect()
}

fn parse_label(raw: &[u8]) -> Result<(&str, &str), Error> {
    let (mut name, mut value) = ("", "");
    let mut r = Reader(raw);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, LEN) => name = utf8(r.bytes()?)?,
            (2, LEN) => value = utf8(r.bytes()?)?,
            (1 | 2, _) => return Err(Error::Malformed("Label: wrong wire type")),
            _ => r.skip(wire)?,
        }
    }
    Ok((name, value))
}

/// A `Sample`: (timestamp, value), start timestamp. Remote write 1.0 has no start timestamp
/// (field 3), so it reads as 0 there.
fn parse_sample(raw: &[u8]) -> Result<((i64, f64), i64), Error> {
    let (mut t, mut v, mut start) = (0i64, 0f64, 0i64);
    let mut r = Reader(raw);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, I64) => v = f64::from_bits(r.fixed64()?),
            // int64 is sent as the two's complement of the value, 10 bytes when negative
            (2, VARINT) => t = r.varint()? as i64,
            (3, VARINT) => start = r.varint()? as i64,
            (1..=3, _) => return Err(Error::Malformed("Sample: wrong wire type")),
            _ => r.skip(wire)?,
        }
    }
    Ok(((t, v), start))
}

fn parse_histogram(raw: &[u8]) -> Result<Histogram, Error> {
    Histogram::decode(raw).map_err(|_| Error::Malformed("Histogram: not a histogram message"))
}

fn utf8(b: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(b).map_err(|_| Error::Malformed("label is not valid UTF-8"))
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// The unread rest of a protobuf message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, Error> {
        let mut v = 0u64;
        for (i, &b) in self.0.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.0 = &self.0[i + 1..];
                return Ok(v);
            }
        }
        Err(Error::Malformed("truncated or overlong varint"))
    }

    /// The next field number and wire type, or `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, u8)>, Error> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        if key >> 3 == 0 {
            return Err(Error::Malformed("field number 0"));
        }
        Ok(Some((key >> 3, (key & 7) as u8)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.0.len() {
            return Err(Error::Malformed("field runs past the end of its message"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| Error::Malformed("length overflows"))?)
    }

    fn fixed64(&mut self) -> Result<u64, Error> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("took 8 bytes")))
    }

    /// A repeated varint field's values: packed (`LEN`, the usual encoding) or one (`VARINT`).
    fn varints_into(&mut self, wire: u8, out: &mut Vec<u64>) -> Result<(), Error> {
        if wire == VARINT {
            out.push(self.varint()?);
            return Ok(());
        }
        let mut packed = Reader(self.bytes()?);
        while !packed.0.is_empty() {
            out.push(packed.varint()?);
        }
        Ok(())
    }

    fn skip(&mut self, wire: u8) -> Result<(), Error> {
        match wire {
            VARINT => self.varint().map(drop),
            I64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            I32 => self.take(4).map(drop),
            _ => Err(Error::Malformed("unsupported wire type (groups are not used by remote write)")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_integer_and_float_histograms_in_1_0_and_2_0() {
        use crate::{BucketSpan, Histogram};
        // an integer histogram: buckets 0 and 1 (1 and 3 observations), deltas 1, +2
        let int = Histogram {
            count_int: Some(6),
            sum: 7.5,
            schema: 1,
            zero_threshold: 0.001,
            zero_count_int: Some(2),
            positive_spans: vec![BucketSpan { offset: 0, length: 2 }],
            positive_deltas: vec![1, 2],
            timestamp: 1000,
            ..Histogram::default()
        };
        let float = Histogram {
            count_float: Some(4.0),
            sum: 1.0,
            schema: -53,
            positive_spans: vec![BucketSpan { offset: 0, length: 2 }],
            positive_counts: vec![1.0, 3.0],
            custom_values: vec![0.5],
            reset_hint: 3,
            timestamp: 2000,
            ..Histogram::default()
        };
        let v1 = crate::WriteRequest {
            timeseries: vec![crate::TimeSeries {
                exemplars: Vec::new(),
                labels: vec![crate::Label { name: "__name__".into(), value: "latency".into() }],
                samples: vec![],
                histograms: vec![int.clone(), float.clone()],
            }],
            metadata: vec![],
        };
        let (raw1, raw2) = (v1.encode_to_vec(), crate::WriteRequestV2::from_v1(&v1).encode_to_vec());
        for view in [RequestView::parse(&raw1).unwrap(), RequestView::parse_v2(&raw2).unwrap()] {
            let hists = view.series().next().unwrap().histograms;
            assert_eq!(hists, &[int.clone(), float.clone()][..]);
        }
        let h = int.to_float_histogram().unwrap();
        assert_eq!((h.count, h.zero_count, h.positive_buckets()), (6.0, 2.0, &[(0, 1.0), (1, 3.0)][..]));
        let g = float.to_float_histogram().unwrap();
        assert_eq!(
            (g.custom_bounds(), g.hint),
            (&[0.5][..], promflow_storage::native_histogram::CounterResetHint::Gauge)
        );
        assert_eq!(Histogram::from_float_histogram(2000, &g).to_float_histogram().unwrap(), g);
        // what Prometheus refuses
        let bad_spans = Histogram { positive_deltas: vec![1], ..int.clone() };
        assert!(bad_spans.to_float_histogram().is_err());
        let negative = Histogram { positive_deltas: vec![1, -2], ..int.clone() };
        assert!(negative.to_float_histogram().is_err());
        let unordered = Histogram { custom_values: vec![2.0, 1.0], ..float.clone() };
        assert!(unordered.to_float_histogram().is_err());
        let far =
            vec![BucketSpan { offset: i32::MAX, length: 1 }, BucketSpan { offset: i32::MAX, length: 1 }];
        let overflowing = Histogram { positive_spans: far, ..int.clone() };
        assert!(overflowing.to_float_histogram().is_err(), "offsets past i32 are refused, not wrapped");
        let bad_schema = Histogram { schema: 9, ..int };
        assert!(bad_schema.to_float_histogram().is_err());
    }

    #[test]
    fn reads_exemplars_in_1_0_and_2_0() {
        let label = |n: &str, v: &str| crate::Label { name: n.into(), value: v.into() };
        let v1 = crate::WriteRequest {
            timeseries: vec![crate::TimeSeries {
                labels: vec![label("__name__", "requests_total")],
                samples: vec![crate::Sample { value: 3.0, timestamp: 1000 }],
                exemplars: vec![crate::Exemplar {
                    labels: vec![label("trace_id", "abc"), label("span_id", "def")],
                    value: 1.5,
                    timestamp: 990,
                }],
                histograms: vec![],
            }],
            metadata: vec![],
        };
        let want = [WireExemplar {
            labels: vec![("trace_id", "abc"), ("span_id", "def")],
            value: 1.5,
            timestamp: 990,
        }];
        let (raw1, raw2) = (v1.encode_to_vec(), crate::WriteRequestV2::from_v1(&v1).encode_to_vec());
        for view in [RequestView::parse(&raw1).unwrap(), RequestView::parse_v2(&raw2).unwrap()] {
            assert_eq!(view.series().next().unwrap().exemplars, &want[..]);
        }
        // an exemplar label past the symbol table is the sender's error
        let mut v2 = crate::WriteRequestV2::from_v1(&v1);
        v2.timeseries[0].exemplars[0].labels_refs[0] = 99;
        assert!(RequestView::parse_v2(&v2.encode_to_vec()).is_err());
    }

    #[test]
    fn reads_remote_write_2_0_through_its_symbol_table() {
        let v1 = crate::WriteRequest {
            timeseries: vec![crate::TimeSeries {
                exemplars: Vec::new(),
                labels: vec![
                    crate::Label { name: "__name__".into(), value: "up".into() },
                    crate::Label { name: "job".into(), value: "up".into() },
                ],
                samples: vec![crate::Sample { value: 1.0, timestamp: 5 }],
                histograms: vec![],
            }],
            metadata: vec![],
        };
        let v2 = crate::WriteRequestV2::from_v1(&v1);
        assert_eq!(v2.symbols, ["", "__name__", "up", "job"], "each string once");
        let raw = v2.encode_to_vec();
        let view = RequestView::parse_v2(&raw).unwrap();
        let series: Vec<_> = view.series().map(|s| (s.labels, s.samples)).collect();
        assert_eq!(series, vec![(&[("__name__", "up"), ("job", "up")][..], &[(5, 1.0)][..])]);
        let mut odd = v2.clone();
        odd.timeseries[0].labels_refs.pop();
        assert!(RequestView::parse_v2(&odd.encode_to_vec()).is_err());
    }

    use super::*;
    use crate::{Label, Sample, TimeSeries, WriteRequest};
    use prost::Message;

    fn request() -> WriteRequest {
        WriteRequest {
            timeseries: vec![
                TimeSeries {
                    exemplars: Vec::new(),
                    labels: vec![
                        Label { name: "__name__".into(), value: "up".into() },
                        Label { name: "job".into(), value: "ü".into() },
                    ],
                    samples: vec![
                        Sample { value: 1.5, timestamp: 1000 },
                        Sample { value: f64::NAN, timestamp: -5 },
                    ],
                    histograms: vec![],
                },
                TimeSeries {
                    exemplars: Vec::new(),
                    labels: vec![Label { name: "a".into(), value: "".into() }],
                    samples: vec![],
                    histograms: vec![],
                },
            ],
            metadata: vec![crate::MetricMetadata {
                r#type: 1,
                metric_family_name: "up".into(),
                help: "h".into(),
                unit: "".into(),
            }],
        }
    }

    #[test]
    fn reads_what_prost_writes() {
        let raw = request().encode_to_vec();
        let view = RequestView::parse(&raw).unwrap();
        let got: Vec<_> = view.series().map(|s| (s.labels.to_vec(), s.samples.to_vec())).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, vec![("__name__", "up"), ("job", "ü")]);
        assert_eq!(got[0].1[0], (1000, 1.5));
        assert_eq!(got[0].1[1].0, -5);
        assert!(got[0].1[1].1.is_nan());
        assert_eq!(got[1], (vec![("a", "")], vec![]));
    }

    #[test]
    fn every_truncation_is_an_error_or_a_prefix() {
        let raw = request().encode_to_vec();
        for cut in 0..raw.len() {
            // never panics; a cut inside a field is an error
            let _ = RequestView::parse(&raw[..cut]);
        }
        assert!(RequestView::parse(&raw[..raw.len() - 1]).is_err());
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        // field 1 as a varint
        assert!(matches!(RequestView::parse(&[0x08, 0x01]), Err(Error::Malformed(_))));
        // invalid UTF-8 in a label name
        let raw = [0x0a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0xff];
        assert!(matches!(RequestView::parse(&raw), Err(Error::Malformed(m)) if m.contains("UTF-8")));
        // a length past the end
        assert!(RequestView::parse(&[0x0a, 0x7f]).is_err());
        // an overlong varint
        assert!(
            RequestView::parse(&[0x0a; 1].iter().chain(&[0xff; 11]).copied().collect::<Vec<_>>()).is_err()
        );
    }
}
