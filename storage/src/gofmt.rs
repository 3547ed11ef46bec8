//! Number formatting as Go prints it, where Prometheus's output depends on it: annotation
//! texts (`%g`) and label values it writes (`labels.FormatOpenMetricsFloat`).

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
