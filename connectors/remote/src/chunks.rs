//! Streamed remote-read answers (`STREAMED_XOR_CHUNKS`): `prometheus.ChunkedReadResponse`
//! frames, each a uvarint length, a big-endian CRC-32C of the message and the message, whose
//! series carry their samples as Prometheus's XOR chunks (storage's chunk encoding, which is
//! Prometheus's byte for byte) and their native histograms as its float histogram chunks.

use prost::Message;

use crate::{Error, Label};

/// The content type of a streamed answer.
pub const STREAMED_CONTENT_TYPE: &str =
    "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

/// Samples per chunk, as Prometheus cuts its head chunks.
pub const SAMPLES_PER_CHUNK: usize = 120;

/// `prometheus.ChunkedReadResponse`: one frame.
#[derive(Clone, PartialEq, Message)]
pub struct ChunkedReadResponse {
    /// Series (a series may continue in the next frame with the same labels).
    #[prost(message, repeated, tag = "1")]
    pub chunked_series: Vec<ChunkedSeries>,
    /// The query of the request the series answer.
    #[prost(int64, tag = "2")]
    pub query_index: i64,
}

/// `prometheus.ChunkedSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct ChunkedSeries {
    /// The series' labels, sorted.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Its chunks, in time order.
    #[prost(message, repeated, tag = "2")]
    pub chunks: Vec<Chunk>,
}

/// `prometheus.Chunk`.
#[derive(Clone, PartialEq, Message)]
pub struct Chunk {
    /// First sample's timestamp (ms).
    #[prost(int64, tag = "1")]
    pub min_time_ms: i64,
    /// Last sample's timestamp (ms).
    #[prost(int64, tag = "2")]
    pub max_time_ms: i64,
    /// `XOR` (1) for float samples, `FLOAT_HISTOGRAM` (3) for native histograms
    /// (`HISTOGRAM`, 2, is Prometheus's integer histogram chunk).
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    /// The encoded chunk.
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

/// `prometheus.Chunk.Encoding.XOR`.
pub const XOR: i32 = 1;

/// `prometheus.Chunk.Encoding.HISTOGRAM`: Prometheus's integer histogram chunks.
pub const HISTOGRAM: i32 = 2;

/// `prometheus.Chunk.Encoding.FLOAT_HISTOGRAM`.
pub const FLOAT_HISTOGRAM: i32 = 3;

/// Appends one frame holding `msg` to `out`.
pub fn write_frame(out: &mut Vec<u8>, msg: &ChunkedReadResponse) {
    let body = msg.encode_to_vec();
    put_uvarint(out, body.len() as u64);
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
}

/// The frames of a streamed answer; a torn frame, a bad checksum or a frame longer than
/// `max_frame` bytes is an error.
pub fn read_frames(mut body: &[u8], max_frame: u64) -> Result<Vec<ChunkedReadResponse>, Error> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (len, used) = uvarint(body).ok_or(Error::Malformed("torn frame length"))?;
        if len > max_frame {
            return Err(Error::Malformed("frame longer than chunked_read_limit"));
        }
        let rest = &body[used..];
        let len = usize::try_from(len).map_err(|_| Error::Malformed("frame too long"))?;
        if rest.len() < 4 + len {
            return Err(Error::Malformed("torn frame"));
        }
        let (crc, msg) = (&rest[..4], &rest[4..4 + len]);
        if crc32c::crc32c(msg).to_be_bytes() != crc {
            return Err(Error::Malformed("frame checksum mismatch"));
        }
        out.push(
            ChunkedReadResponse::decode(msg).map_err(|_| Error::Malformed("not a ChunkedReadResponse"))?,
        );
        body = &rest[4 + len..];
    }
    Ok(out)
}

fn put_uvarint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push(x as u8 | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// A uvarint and the bytes it took.
fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((x, i + 1));
        }
    }
    None
}

/// The chunks of one series' samples, [`SAMPLES_PER_CHUNK`] per chunk.
pub fn chunks_of(samples: &[(i64, f64)]) -> Vec<Chunk> {
    samples
        .chunks(SAMPLES_PER_CHUNK)
        .map(|c| Chunk {
            min_time_ms: c[0].0,
            max_time_ms: c[c.len() - 1].0,
            r#type: XOR,
            data: promflow_storage::encode_xor_chunk(c.iter().copied()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_checksums_are_checked() {
        let series = ChunkedSeries {
            labels: vec![Label { name: "__name__".into(), value: "x".into() }],
            chunks: chunks_of(&(0..250).map(|i| (i * 15_000, i as f64)).collect::<Vec<_>>()),
        };
        assert_eq!(series.chunks.len(), 3);
        let mut body = Vec::new();
        write_frame(&mut body, &ChunkedReadResponse { chunked_series: vec![series.clone()], query_index: 0 });
        write_frame(&mut body, &ChunkedReadResponse { chunked_series: vec![], query_index: 1 });
        let frames = read_frames(&body, u64::MAX).unwrap();
        assert!(read_frames(&body, 10).is_err(), "a frame over the limit");
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].chunked_series[0], series);
        assert_eq!(frames[1].query_index, 1);
        let last = body.len() - 1;
        body[last] ^= 1;
        assert!(read_frames(&body, u64::MAX).is_err());
    }
}
