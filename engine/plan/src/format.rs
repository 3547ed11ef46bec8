//! Number and time formatting as Prometheus's API prints them.

/// Formats a sample value like Go's `strconv.FormatFloat(v, 'f', -1, 64)`, with Prometheus's
/// spellings of the special values: `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

/// [`format_value`] appended to `out`, for writers of many values (the subscriptions' changes).
pub fn write_value(out: &mut String, v: f64) {
    use std::fmt::Write as _;
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        // Rust's shortest round-trip form never uses an exponent for `{}`, like Go's 'f', -1.
        let _ = write!(out, "{v}");
    }
}

/// Writes a native histogram as Prometheus's API does: count, sum, and the buckets that count
/// something as `[boundary rule, lower, upper, count]`, the rule 0 for `(lower, upper]`, 1 for
/// `[lower, upper)`, 2 for `(lower, upper)` and 3 for `[lower, upper]`.
pub fn write_histogram(out: &mut String, h: &promflow_storage::FloatHistogram) {
    use std::fmt::Write as _;
    let _ = write!(out, "{{\"count\":\"{}\",\"sum\":\"{}\"", format_value(h.count), format_value(h.sum));
    let buckets = h.buckets();
    if !buckets.is_empty() {
        out.push_str(",\"buckets\":[");
        for (i, b) in buckets.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let rule = match (b.lower_inclusive, b.upper_inclusive) {
                (false, true) => 0,
                (true, false) => 1,
                (false, false) => 2,
                (true, true) => 3,
            };
            let _ = write!(
                out,
                "[{rule},\"{}\",\"{}\",\"{}\"]",
                format_value(b.lower),
                format_value(b.upper),
                format_value(b.count)
            );
        }
        out.push(']');
    }
    out.push('}');
}

/// Formats a millisecond timestamp as seconds with at most three decimals and no trailing
/// zeros (`1700000000`, `1700000000.5`), as a JSON number.
pub fn format_timestamp(ms: i64) -> String {
    let neg = ms < 0;
    let abs = ms.unsigned_abs();
    let (secs, frac) = (abs / 1000, abs % 1000);
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push_str(&secs.to_string());
    if frac != 0 {
        let f = format!("{frac:03}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out
}

/// The civil date (year, month, day) of a day counted from 1970-01-01, by Howard Hinnant's
/// calendar algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_like_go() {
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(1e-7), "0.0000001");
        assert_eq!(format_value(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_value(-0.0), "-0");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(2.0), "2");
    }

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(1_700_000_000_000), "1700000000");
        assert_eq!(format_timestamp(1_700_000_000_500), "1700000000.5");
        assert_eq!(format_timestamp(1_795_333_714_928), "1795333714.928");
        assert_eq!(format_timestamp(-1_500), "-1.5");
    }
}
