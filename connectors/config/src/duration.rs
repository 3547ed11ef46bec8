//! Prometheus durations (`1h30m`, `5m`, `100ms`, `0`) and sizes (`512MB`).
//!
//! Durations follow `prometheus/common/model.ParseDuration`: a sequence of `<digits><unit>`
//! with units `y w d h m s ms`, each at most once and in that (decreasing) order, or the bare
//! string `0`. A year is 365 days and a week 7 days. There is no `ns`/`us` and no fraction.
//!
//! Sizes follow `alecthomas/units.ParseBase2Bytes`, which Prometheus uses for `body_size_limit`
//! and `storage.tsdb.retention.size`: units `B KB MB GB TB PB EB` (or `KiB MiB …`), all powers
//! of 1024, optionally fractional (`1.5GB`) and chained (`1GB512MB`); a unit is required except
//! for the bare string `0`.

use std::time::Duration;

use crate::Error;

const MS: u128 = 1;
const SEC: u128 = 1000 * MS;
const MIN: u128 = 60 * SEC;
const HOUR: u128 = 60 * MIN;
const DAY: u128 = 24 * HOUR;
const WEEK: u128 = 7 * DAY;
const YEAR: u128 = 365 * DAY;

/// Go's `time.Duration` is an int64 of nanoseconds; Prometheus rejects anything longer.
const MAX_NANOS: u128 = (1u128 << 63) - 1;

fn unit(u: &str) -> Option<(usize, u128)> {
    Some(match u {
        "y" => (1, YEAR),
        "w" => (2, WEEK),
        "d" => (3, DAY),
        "h" => (4, HOUR),
        "m" => (5, MIN),
        "s" => (6, SEC),
        "ms" => (7, MS),
        _ => return None,
    })
}

/// Parses a Prometheus duration such as `1h30m`, `5m`, `90s`, `100ms`, `1d`, `1w`, `1y` or `0`.
///
/// Units must appear in decreasing order, each at most once (`1m1h` and `1s1s` are errors), as
/// in Prometheus. Errors use Prometheus's wording (`not a valid duration string: "5x"`).
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    match s {
        "0" => return Ok(Duration::ZERO),
        "" => return Err(Error::InvalidDuration("empty duration string".into())),
        _ => {}
    }
    let invalid = || Error::InvalidDuration(format!("not a valid duration string: {s:?}"));
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_ms: u128 = 0;
    let mut last_pos = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(invalid());
        }
        // u64 as in Go's strconv.ParseUint; longer digit strings are out of range
        let v: u64 = s[start..i].parse().map_err(|_| invalid())?;
        let ustart = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == ustart {
            return Err(invalid());
        }
        let u = &s[ustart..i];
        let (pos, mult) =
            unit(u).ok_or_else(|| Error::InvalidDuration(format!("unknown unit {u:?} in duration {s:?}")))?;
        if pos <= last_pos {
            return Err(invalid());
        }
        last_pos = pos;
        total_ms += v as u128 * mult;
        if total_ms * 1_000_000 > MAX_NANOS {
            return Err(Error::InvalidDuration("duration out of range".into()));
        }
    }
    let secs = (total_ms / 1000) as u64;
    let nanos = ((total_ms % 1000) * 1_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way Prometheus prints one: `1m`, `1h30m`, `15s`, `100ms`, `0s`.
///
/// Years and weeks are only used when they divide the duration exactly (`90d`, not `12w6d`);
/// anything below a millisecond is dropped, as in Prometheus.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (name, mult, exact) in [
        ("y", YEAR, true),
        ("w", WEEK, true),
        ("d", DAY, false),
        ("h", HOUR, false),
        ("m", MIN, false),
        ("s", SEC, false),
        ("ms", MS, false),
    ] {
        if exact && !ms.is_multiple_of(mult) {
            continue;
        }
        let v = ms / mult;
        if v > 0 {
            out.push_str(&v.to_string());
            out.push_str(name);
            ms -= v * mult;
        }
    }
    out
}

fn size_unit(u: &str) -> Option<f64> {
    let k = 1024f64;
    Some(match u {
        "B" => 1.0,
        "KB" | "KiB" => k,
        "MB" | "MiB" => k * k,
        "GB" | "GiB" => k * k * k,
        "TB" | "TiB" => k * k * k * k,
        "PB" | "PiB" => k * k * k * k * k,
        "EB" | "EiB" => k * k * k * k * k * k,
        _ => return None,
    })
}

/// Parses a Prometheus size such as `512MB`, `1GB`, `1.5KiB` or `0` into bytes (base 1024).
pub fn parse_size(s: &str) -> Result<u64, Error> {
    let invalid = || Error::InvalidSize(format!("invalid size {s:?}"));
    let mut rest = s;
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    } else if rest.starts_with('-') {
        return Err(Error::InvalidSize(format!("size must not be negative: {s:?}")));
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        let v: f64 = if num.starts_with('.') {
            format!("0{num}").parse().map_err(|_| invalid())?
        } else {
            num.trim_end_matches('.').parse().map_err(|_| invalid())?
        };
        rest = &rest[num_len..];
        let unit_len = rest.bytes().take_while(|b| !(b.is_ascii_digit() || *b == b'.')).count();
        let u = &rest[..unit_len];
        let mult =
            size_unit(u).ok_or_else(|| Error::InvalidSize(format!("unknown unit {u:?} in size {s:?}")))?;
        total += v * mult;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return Err(Error::InvalidSize(format!("size out of range: {s:?}")));
    }
    Ok(total as u64)
}

/// Formats a byte count the way Prometheus prints sizes: `10MiB`, `1KiB512B`, `0B`.
pub fn format_size(mut n: u64) -> String {
    if n == 0 {
        return "0B".to_string();
    }
    let suffixes = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut parts = Vec::new();
    for s in suffixes {
        if !n.is_multiple_of(1024) {
            parts.push(format!("{}{}", n % 1024, s));
        }
        n /= 1024;
        if n == 0 {
            break;
        }
    }
    parts.reverse();
    parts.concat()
}

/// Serde helpers: durations as Prometheus duration strings.
pub(crate) mod serde_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        // `scrape_interval:` with no value is Go's zero value, i.e. "unset"
        let s = Option::<String>::deserialize(d)?;
        match s {
            None => Ok(Duration::ZERO),
            Some(s) => super::parse_duration(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Serde helpers: sizes in bytes written as Prometheus sizes.
pub(crate) mod serde_size {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_size(*n))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        match s {
            None => Ok(0),
            Some(s) => super::parse_size(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        parse_duration(s).unwrap()
    }

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("0s"), Duration::ZERO);
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("90s"), Duration::from_secs(90));
        assert_eq!(d("100ms"), Duration::from_millis(100));
        assert_eq!(d("1d"), Duration::from_secs(86400));
        assert_eq!(d("1w"), Duration::from_secs(7 * 86400));
        assert_eq!(d("1y"), Duration::from_secs(365 * 86400));
        assert_eq!(
            d("1y2w3d4h5m6s7ms"),
            Duration::from_millis(((((365 + 14 + 3) * 24 + 4) * 60 + 5) * 60 + 6) * 1000 + 7)
        );
        assert_eq!(d("1s500ms"), Duration::from_millis(1500));
    }

    #[test]
    fn rejects_bad_durations() {
        for s in [
            "",
            "5",
            "5x",
            "m",
            "1m1h",
            "1s1s",
            "1.5s",
            "-1s",
            "1ns",
            "1us",
            " 1s",
            "1s ",
            "1h 30m",
            "1S",
            "5mm",
            "99999999999999999999s",
            "300y",
        ] {
            assert!(parse_duration(s).is_err(), "{s:?} should be rejected");
        }
        assert_eq!(parse_duration("5x").unwrap_err().to_string(), "unknown unit \"x\" in duration \"5x\"");
        assert_eq!(parse_duration("1m1h").unwrap_err().to_string(), "not a valid duration string: \"1m1h\"");
    }

    #[test]
    fn formats_like_prometheus() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(15)), "15s");
        assert_eq!(format_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(format_duration(Duration::from_secs(90 * 86400)), "90d");
        assert_eq!(format_duration(Duration::from_secs(14 * 86400)), "2w");
        assert_eq!(format_duration(Duration::from_secs(365 * 86400)), "1y");
        assert_eq!(format_duration(Duration::from_secs(86400 + 1)), "1d1s");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1ms");
    }

    #[test]
    fn round_trips() {
        for s in ["0s", "1m", "1h30m", "15s", "100ms", "1d", "2w", "1y", "1d2h3m4s5ms", "90d", "10y", "1s1ms"]
        {
            assert_eq!(format_duration(d(s)), s);
        }
        for ms in [0u64, 1, 999, 1000, 61_000, 3_600_000, 86_400_000 * 8, 123_456_789_012] {
            let dur = Duration::from_millis(ms);
            assert_eq!(d(&format_duration(dur)), dur, "{ms}ms");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("1GB512MB").unwrap(), (1 << 30) + (512 << 20));
        assert_eq!(parse_size("1.5KB").unwrap(), 1536);
        assert_eq!(parse_size("100B").unwrap(), 100);
        for bad in ["", "10", "10XB", "MB", "-1MB", "1..5KB", "."] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(10 << 20), "10MiB");
        assert_eq!(format_size(1536), "1KiB512B");
        for n in [1u64, 1023, 1024, 1536, 10 << 20, (1 << 30) + 5] {
            assert_eq!(parse_size(&format_size(n)).unwrap(), n);
        }
    }
}
