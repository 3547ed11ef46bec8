//! Go's number formatting, where Prometheus's output depends on it (annotation texts' `%g`,
//! label values it writes with `labels.FormatOpenMetricsFloat`), and Go's string escapes.

/// Formats like Go's `%g` (`prec` None: shortest representation; Some(p): `%.pg`), which
/// Prometheus uses for numbers inside annotation texts.
pub fn format_g(v: f64, prec: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    // scientific form gives the significant digits and the decimal exponent
    let sci = match prec {
        None => format!("{v:e}"),
        Some(p) => format!("{v:.*e}", p.max(1) - 1),
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let neg = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let nd = digits.len() as i32;
    let eprec = match prec {
        None => 6,
        Some(p) => {
            let p = p.max(1) as i32;
            // Go: a precision beyond the digits is cut when the number has no fraction digits
            if p > nd && nd > exp {
                nd
            } else {
                p
            }
        }
    };
    let sign = if neg { "-" } else { "" };
    if exp < -4 || exp >= eprec {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    } else if exp < 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
    } else {
        let int_len = (exp + 1) as usize;
        if digits.len() <= int_len {
            format!("{sign}{digits}{}", "0".repeat(int_len - digits.len()))
        } else {
            format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
        }
    }
}

/// Formats like Go's `strconv.FormatFloat(v, 'E', -1, 64)` (`3E-01`, `6.666666666666666E-01`,
/// `+Inf`), as promtool prints the samples of a failed expression test.
pub fn format_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let sci = format!("{v:E}");
    let (mantissa, exp) = sci.split_once('E').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    format!("{mantissa}E{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// Formats like Prometheus's `labels.FormatOpenMetricsFloat`: Go's shortest `%g` with `.0`
/// appended when the result has neither a `.` nor an exponent, `0.0` for both zeros. Used for
/// the `le` and `quantile` label values Prometheus 3 normalises and writes.
pub fn format_openmetrics_float(f: f64) -> String {
    if f == 0.0 {
        return "0.0".to_string();
    }
    let s = format_g(f, None);
    if f.is_finite() && !s.contains(['.', 'e']) {
        s + ".0"
    } else {
        s
    }
}

/// Decodes the escapes of a Go double- or single-quoted string's body (`\n`, `\t`, `\x41`,
/// `\101`, `\u00e9`, …), as PromQL strings and Go templates write them. Escapes that produce
/// bytes (`\xff`, `\377`) are taken as bytes; invalid UTF-8 is replaced.
pub fn unescape(body: &str) -> String {
    if !body.contains('\\') {
        return body.to_string();
    }
    String::from_utf8_lossy(&unescape_bytes(body)).into_owned()
}

/// [`unescape`] keeping the bytes as Go does: `\x` and octal escapes may leave a string
/// that is not UTF-8.
pub fn unescape_bytes(body: &str) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    let mut buf = [0u8; 4];
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some(e) = chars.next() else { break };
        let (digits, radix, is_byte) = match e {
            'a' => (0, 0, b'\x07'),
            'b' => (0, 0, b'\x08'),
            'f' => (0, 0, b'\x0c'),
            'n' => (0, 0, b'\n'),
            'r' => (0, 0, b'\r'),
            't' => (0, 0, b'\t'),
            'v' => (0, 0, b'\x0b'),
            '0'..='7' => (2, 8, e as u8 - b'0'),
            'x' => (2, 16, 0),
            'u' => (4, 16, 0),
            'U' => (8, 16, 0),
            other => {
                out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                continue;
            }
        };
        if radix == 0 {
            out.push(is_byte);
            continue;
        }
        let mut v = if radix == 8 { is_byte as u32 } else { 0 };
        for _ in 0..digits {
            if let Some(d) = chars.peek().and_then(|c| c.to_digit(radix)) {
                v = v * radix + d;
                chars.next();
            }
        }
        if matches!(e, 'u' | 'U') {
            out.extend_from_slice(char::from_u32(v).unwrap_or('\u{fffd}').encode_utf8(&mut buf).as_bytes());
        } else {
            out.push(v as u8);
        }
    }
    out
}

/// Go's `time.Duration.String` for nanoseconds (`1h30m0s`, `59.999s`, `250ms`, `1.5µs`), as
/// promtool prints durations and the `toDuration` template function returns them.
pub fn format_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let trim = |v: f64| format!("{v:.9}").trim_end_matches('0').trim_end_matches('.').to_string();
    let u = ns.unsigned_abs();
    let body = if u < 1_000_000_000 {
        let (unit, div) = match u {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        format!("{}{unit}", trim(u as f64 / div as f64))
    } else {
        let (h, m) = (u / 3_600_000_000_000, (u / 60_000_000_000) % 60);
        let s = trim((u % 60_000_000_000) as f64 / 1e9);
        match (h, m) {
            (0, 0) => format!("{s}s"),
            (0, m) => format!("{m}m{s}s"),
            (h, m) => format!("{h}h{m}m{s}s"),
        }
    };
    if ns < 0 {
        format!("-{body}")
    } else {
        body
    }
}

/// [`format_duration`] of milliseconds.
pub fn format_duration_ms(ms: i64) -> String {
    format_duration(ms.saturating_mul(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e_formatting() {
        assert_eq!(format_e(0.3), "3E-01");
        assert_eq!(format_e(2.0 / 3.0), "6.666666666666666E-01");
        assert_eq!(format_e(1.0), "1E+00");
        assert_eq!(format_e(0.0), "0E+00");
        assert_eq!(format_e(-1234.5), "-1.2345E+03");
        assert_eq!(format_e(1e300), "1E+300");
        assert_eq!(format_e(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn g_formatting() {
        assert_eq!(format_g(1.1, None), "1.1");
        assert_eq!(format_g(-0.5, None), "-0.5");
        assert_eq!(format_g(1.0, None), "1");
        assert_eq!(format_g(123456.0, None), "123456");
        assert_eq!(format_g(1e6, None), "1e+06");
        assert_eq!(format_g(1.5e-5, None), "1.5e-05");
        assert_eq!(format_g(0.0001, None), "0.0001");
        assert_eq!(format_g(f64::NAN, None), "NaN");
        assert_eq!(format_g(100.0, Some(2)), "1e+02");
        assert_eq!(format_g(10.0, Some(2)), "10");
        assert_eq!(format_g(1.0, Some(2)), "1");
        assert_eq!(format_g(0.123, Some(2)), "0.12");
    }

    #[test]
    fn openmetrics_floats() {
        assert_eq!(format_openmetrics_float(1.0), "1.0");
        assert_eq!(format_openmetrics_float(-0.0), "0.0");
        assert_eq!(format_openmetrics_float(1e6), "1e+06");
        assert_eq!(format_openmetrics_float(0.25), "0.25");
        assert_eq!(format_openmetrics_float(f64::INFINITY), "+Inf");
    }

    #[test]
    fn unescapes_go_strings() {
        assert_eq!(unescape(r"a\tb\n"), "a\tb\n");
        assert_eq!(unescape(r"\x41\101\u00e9\U0001F600"), "AAé😀");
        assert_eq!(unescape(r#"q\"uote"#), "q\"uote");
        assert_eq!(unescape("plain"), "plain");
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(format_duration_ms(7_200_000), "2h0m0s");
        assert_eq!(format_duration_ms(7_199_999), "1h59m59.999s");
        assert_eq!(format_duration_ms(61_500), "1m1.5s");
        assert_eq!(format_duration_ms(250), "250ms");
        assert_eq!(format_duration_ms(0), "0s");
        assert_eq!(format_duration_ms(480_000), "8m0s");
        assert_eq!(format_duration_ms(1_500), "1.5s");
        assert_eq!(format_duration_ms(3_723_000), "1h2m3s");
        assert_eq!(format_duration(5_400_000_000_000), "1h30m0s");
        assert_eq!(format_duration(1_500_000), "1.5ms");
    }
}
