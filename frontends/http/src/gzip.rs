//! gzip for answers held whole in memory, with one compressor kept per thread.
//!
//! Most API answers (a series lookup, an instant query, label values) are a few kilobytes
//! built in one string. Setting up a deflate compressor for each of them cost more than
//! compressing them: its tables are allocated and zeroed per answer, and the streaming
//! body wrapper around it runs for a body that is already whole. This layer compresses such
//! an answer in one call with the calling thread's compressor, reset between answers, and
//! sends it with its length. Answers that are streamed, or larger than [`WHOLE_MAX`], are
//! left to tower-http's compression layer outside this one, which sees the
//! `Content-Encoding` set here and leaves compressed answers alone.

use std::cell::RefCell;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use flate2::{Compress, Compression, FlushCompress, Status};
use tower_http::compression::predicate::{DefaultPredicate, Predicate};

/// The largest answer compressed in one call on the async worker: 20 µs of deflate at its
/// fastest level for 64 KiB of series labels. Larger answers are compressed as they stream, a part at a time.
const WHOLE_MAX: u64 = 64 * 1024;

thread_local! {
    /// This thread's compressor: about 300 KiB of tables, set up once, reset per answer.
    static COMPRESSOR: RefCell<Option<Compress>> = const { RefCell::new(None) };
}

/// Middleware: gzips an answer whose body is whole and at most [`WHOLE_MAX`] bytes when the
/// client accepts gzip, under the same conditions as tower-http's default (not an image,
/// gRPC or an event stream, over 32 bytes, not compressed already, not a range).
pub(crate) async fn gzip_whole_answers(request: Request, next: Next) -> Response {
    let wants_gzip = accepts_gzip(request.headers());
    let response = next.run(request).await;
    let whole = response.body().size_hint().exact().is_some_and(|n| n <= WHOLE_MAX);
    if !wants_gzip
        || !whole
        || response.headers().contains_key(header::CONTENT_ENCODING)
        || response.headers().contains_key(header::CONTENT_RANGE)
        || !DefaultPredicate::new().should_compress(&response)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // the body's size is exact, so it is in memory and collecting it does not wait
    let plain = match axum::body::to_bytes(body, WHOLE_MAX as usize).await {
        Ok(plain) => plain,
        Err(e) => {
            tracing::warn!(error = %e, "an answer's body failed before it was compressed");
            return Response::builder()
                .status(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                .body(Body::empty())
                .unwrap_or_default();
        }
    };
    let Some(packed) = gzip(&plain) else {
        return Response::from_parts(parts, Body::from(plain));
    };
    let headers = &mut parts.headers;
    if !headers.get_all(header::VARY).iter().any(names_accept_encoding) {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    headers.remove(header::ACCEPT_RANGES);
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    Response::from_parts(parts, Body::from(packed))
}

/// Whether a `Vary` value already names `Accept-Encoding`.
fn names_accept_encoding(vary: &HeaderValue) -> bool {
    vary.to_str().is_ok_and(|v| v.split(',').any(|name| name.trim().eq_ignore_ascii_case("accept-encoding")))
}

/// `data` as one gzip member at deflate's fastest level, by this thread's compressor;
/// `None` if the compressor fails (it does not on a whole input it was reset for).
fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        let compressor = slot.get_or_insert_with(|| Compress::new_gzip(Compression::fast(), 15));
        compressor.reset();
        // JSON answers shrink to a fifth or less; the vector grows when one does not
        let mut out = Vec::with_capacity(data.len() / 4 + 64);
        loop {
            let consumed = usize::try_from(compressor.total_in()).ok()?;
            match compressor.compress_vec(data.get(consumed..)?, &mut out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => return Some(out),
                Ok(Status::Ok | Status::BufError) => out.reserve(out.capacity().max(64)),
                Err(e) => {
                    tracing::warn!(error = %e, "gzip of an answer failed; sending it uncompressed");
                    return None;
                }
            }
        }
    })
}

/// Whether `headers` accept a gzip answer, as tower-http's compression layer decides it with
/// gzip its only encoding: a `gzip` or `x-gzip` entry whose q-value is above zero and not
/// below `identity`'s; entries with an unreadable q-value are ignored.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip_q = None::<u16>;
    let mut identity_q = None::<u16>;
    for entry in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = entry.splitn(2, ';');
        let coding = parts.next().unwrap_or_default().trim();
        let Some(q) = parts.next().map_or(Some(1000), |q| q_value(q.trim())) else { continue };
        let best = if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            &mut gzip_q
        } else if coding.eq_ignore_ascii_case("identity") {
            &mut identity_q
        } else {
            continue;
        };
        *best = (*best).max(Some(q));
    }
    gzip_q.is_some_and(|g| g > 0 && identity_q.is_none_or(|i| g >= i))
}

/// A q-value (`q=0.5`) in thousandths, as RFC 9110 writes it: `0` or `1`, then up to three
/// decimals, at most `1.000`.
fn q_value(text: &str) -> Option<u16> {
    let number = text.strip_prefix("q=").or_else(|| text.strip_prefix("Q="))?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u16 = match whole {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths =
        fraction.bytes().zip([100, 10, 1]).map(|(d, scale)| u16::from(d - b'0') * scale).sum::<u16>();
    Some(whole + thousandths).filter(|q| *q <= 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&headers)
    }

    #[test]
    fn accept_encoding_is_read_as_tower_http_reads_it() {
        assert!(accept(&["gzip"]));
        assert!(accept(&["deflate, GZIP"]));
        assert!(accept(&["br", "x-gzip;q=0.5"]));
        assert!(accept(&["gzip;q=0.5, identity;q=0.5"]));
        assert!(!accept(&[]));
        assert!(!accept(&["br, deflate"]));
        assert!(!accept(&["gzip;q=0"]));
        assert!(!accept(&["gzip;q=0.000"]));
        assert!(!accept(&["gzip;q=0.4, identity"]));
        // an unreadable q-value drops the entry
        assert!(!accept(&["gzip;q=2"]));
        assert!(!accept(&["gzip;q=0.1234"]));
        assert!(!accept(&["gzip;level=1"]));
        // `*` is not read as gzip
        assert!(!accept(&["*"]));
    }

    #[test]
    fn q_values_in_thousandths() {
        assert_eq!(q_value("q=1"), Some(1000));
        assert_eq!(q_value("Q=1.000"), Some(1000));
        assert_eq!(q_value("q=0.5"), Some(500));
        assert_eq!(q_value("q=0.05"), Some(50));
        assert_eq!(q_value("q=0."), Some(0));
        assert_eq!(q_value("q=1.001"), None);
        assert_eq!(q_value("q=.5"), None);
        assert_eq!(q_value("q=0.5x"), None);
    }

    #[test]
    fn the_reused_compressor_writes_whole_gzip_members() {
        use std::io::Read;
        let texts = [
            "{\"status\":\"success\",\"data\":[]}".to_string(),
            "{\"__name__\":\"node_load1\",\"instance\":\"host-1\"},".repeat(300),
            String::new(),
        ];
        for _ in 0..2 {
            for text in &texts {
                let packed = gzip(text.as_bytes()).unwrap();
                let mut back = String::new();
                flate2::read::GzDecoder::new(&packed[..]).read_to_string(&mut back).unwrap();
                assert_eq!(&back, text);
            }
        }
        // compressed for real, not stored
        assert!(gzip(texts[1].as_bytes()).unwrap().len() < texts[1].len() / 10);
    }
}
