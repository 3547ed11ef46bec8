//! Values as decimal-scaled integers where that is lossless: how both a block's value column
//! and the head's chunks store what exporters write.
//!
//! Exporters mostly produce values with few significant decimal digits (CPU seconds in 0.01
//! steps, byte counts, integer counters). Such a value `v` is stored as an integer mantissa
//! `m` and a digit count `d` with `v == m / 10^d` **bit for bit**; the mantissas of a series
//! then differ by small integers, which pack into a few bits (Parquet's
//! `DELTA_BINARY_PACKED` in a block, variable-width fields in a head chunk). Values that no
//! mantissa reproduces exactly (full-precision floats, NaN, ±Inf, staleness markers, `-0`)
//! are stored as raw `f64`. Reading computes `m as f64 / 10^d`, the correctly rounded
//! quotient, which is exactly `v` again.

/// Most decimal places tried; 10^15 and every mantissa below 2^53 are exact doubles.
pub(crate) const MAX_DIGITS: u8 = 15;

const POW10: [f64; MAX_DIGITS as usize + 1] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/// Mantissas must be exact doubles for the quotient to be correctly rounded.
const MAX_MANTISSA: f64 = 9_007_199_254_740_992.0;

/// The value a mantissa and digit count stand for.
pub(crate) fn decode(mantissa: i64, digits: u8) -> f64 {
    let m = mantissa as f64;
    match POW10.get(digits as usize) {
        Some(&p) if digits > 0 => m / p,
        _ => m,
    }
}

/// The mantissa of `v` at `digits` decimal places, if it reproduces `v` bit for bit.
pub(crate) fn mantissa(v: f64, digits: u8) -> Option<i64> {
    let p = *POW10.get(digits as usize)?;
    if !v.is_finite() {
        return None;
    }
    let m = (v * p).round();
    if m.abs() >= MAX_MANTISSA {
        return None;
    }
    let m = m as i64;
    (decode(m, digits).to_bits() == v.to_bits()).then_some(m)
}

/// The fewest decimal places that represent `v` exactly, if any do.
pub(crate) fn digits_of(v: f64) -> Option<u8> {
    fewest_places(v, 0..=MAX_DIGITS).map(|(digits, _)| digits)
}

/// The fewest decimal places among `places` that represent `v` exactly, with the mantissa
/// there, if any do.
pub(crate) fn fewest_places(v: f64, places: std::ops::RangeInclusive<u8>) -> Option<(u8, i64)> {
    if !v.is_finite() {
        return None;
    }
    places.into_iter().find_map(|d| mantissa(v, d).map(|m| (d, m)))
}

/// `10^digits`, the divisor of a mantissa at `digits` places (exact for every place count
/// up to [`MAX_DIGITS`]).
pub(crate) fn pow10(digits: u8) -> f64 {
    POW10[usize::from(digits.min(MAX_DIGITS))]
}

/// `10^digits` as an integer, to rescale a mantissa to more digits.
pub(crate) fn pow10_int(digits: u8) -> i64 {
    10i64.pow(u32::from(digits.min(MAX_DIGITS)))
}

/// The digit count for a series: the smallest that covers at least 95% of its values that
/// have one, so that one odd value does not widen every mantissa (it goes to the float
/// column instead).
pub(crate) fn series_digits(values: impl Iterator<Item = f64>) -> u8 {
    let mut counts = [0usize; MAX_DIGITS as usize + 1];
    let mut total = 0usize;
    for v in values {
        if let Some(d) = digits_of(v) {
            counts[d as usize] += 1;
            total += 1;
        }
    }
    let need = total - total / 20;
    let mut seen = 0;
    for (d, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= need {
            return d as u8;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_values_round_trip_bit_for_bit() {
        for v in [0.0, 1.0, 0.01, 123.45, 1e15, -7.5, 0.1, 0.3, 12345.678901, 4096.0 * 1e9] {
            let d = digits_of(v).unwrap_or_else(|| panic!("{v} has no digits"));
            assert_eq!(decode(mantissa(v, d).unwrap(), d).to_bits(), v.to_bits(), "{v}");
        }
        assert_eq!(digits_of(0.01), Some(2));
        assert_eq!(digits_of(42.0), Some(0));
    }

    #[test]
    fn other_values_have_no_mantissa() {
        for v in [0.1 + 0.2, f64::NAN, f64::INFINITY, -0.0, 1.0 / 3.0, 1e300, crate::stale_nan()] {
            assert_eq!(digits_of(v), None, "{v}");
        }
    }

    #[test]
    fn one_odd_value_does_not_widen_the_series() {
        let mut values: Vec<f64> = (0..100).map(|i| i as f64 * 0.5).collect();
        values.push(0.123456789);
        assert_eq!(series_digits(values.iter().copied()), 1);
    }
}
