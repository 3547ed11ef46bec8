//! Remote read: a request body as the server decodes it (snappy, then the protobuf
//! `ReadRequest`, whose matchers become storage matchers, regular expressions included), and
//! an answer as the client decodes it (a `ReadResponse`, or a stream of chunked frames whose
//! XOR chunks are decoded).
#![no_main]

use promflow_remote::chunks::read_frames;
use promflow_remote::decompress;
use promflow_remote::read::{MatcherType, ReadRequest, ReadResponse};
use promflow_storage::{MatchOp, Matcher};

fn request(body: &[u8]) {
    let Ok(req) = ReadRequest::decode_body(body) else { return };
    for query in &req.queries {
        for m in &query.matchers {
            let op = match MatcherType::try_from(m.r#type) {
                Ok(MatcherType::Eq) => MatchOp::Equal,
                Ok(MatcherType::Neq) => MatchOp::NotEqual,
                Ok(MatcherType::Re) => MatchOp::Regex,
                Ok(MatcherType::Nre) => MatchOp::NotRegex,
                Err(_) => continue,
            };
            if let Ok(matcher) = Matcher::new(op, &m.name, &m.value) {
                let _ = matcher.matches(&m.value);
            }
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    request(data);
    if let Ok(raw) = decompress(data) {
        request(&raw);
    }
    let _ = ReadResponse::decode_body(data);
    if let Ok(frames) = read_frames(data, 1 << 20) {
        for frame in frames {
            for series in frame.chunked_series {
                for chunk in series.chunks {
                    let _ = promflow_storage::decode_xor_chunk(&chunk.data);
                }
            }
        }
    }
});
