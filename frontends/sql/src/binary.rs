//! PostgreSQL's binary format of the types promflow holds as PostgreSQL's text of them
//! (`numeric`, `date`, `interval`, one-dimensional arrays), both ways: results a client asks
//! for in binary (asyncpg always does; psycopg's binary cursors; JDBC after a statement is
//! prepared), and parameters it sends in binary.
//!
//! The text is the canonical form of these values in a row ([`crate::rows::Cell::Text`]), so
//! the binary form is computed from it exactly: a numeric's digits, a date's day, an
//! interval's months, days and microseconds are all in the text, with nothing rounded.

use chrono::{Datelike, NaiveDate};

use crate::compile::ColumnKind;

/// Why a value has no binary form.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// The text is not of its type (which the engine never writes).
    #[error("\"{text}\" is not a {kind} value")]
    NotOfType {
        /// The text, its first 64 characters.
        text: String,
        /// The type's name.
        kind: &'static str,
    },
    /// An array of more than one dimension, which promflow types `text[]` and sends in text
    /// format only.
    #[error("an array of more than one dimension is sent in text format only: ask for text results")]
    Dimensions,
}

fn not_of(kind: &'static str, text: &str) -> BinaryError {
    BinaryError::NotOfType { text: text.chars().take(64).collect(), kind }
}

/// Day 0 of PostgreSQL's binary dates and timestamps.
fn postgres_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date")
}

/// The binary form of `text`, a value of type `kind` written as PostgreSQL writes it; `None`
/// for the kinds that are not held as text.
pub fn encode(kind: ColumnKind, text: &str) -> Option<Result<Vec<u8>, BinaryError>> {
    Some(match kind {
        ColumnKind::Numeric => numeric(text),
        ColumnKind::Date => date(text),
        ColumnKind::Interval => interval(text),
        ColumnKind::TextArray => array(text, ArrayElement::Text),
        ColumnKind::IntegerArray => array(text, ArrayElement::Int8),
        ColumnKind::DoubleArray => array(text, ArrayElement::Float8),
        // `jsonb`: its version (1), then its text
        ColumnKind::Json => Ok([&[1u8][..], text.as_bytes()].concat()),
        _ => return None,
    })
}

/// A `numeric`: its digits in base 10,000 around the decimal point, with the number of
/// decimals the text shows (`dscale`), so that `1.50` stays `1.50`.
fn numeric(text: &str) -> Result<Vec<u8>, BinaryError> {
    const NAN: u16 = 0xC000;
    const POSITIVE_INFINITY: u16 = 0xD000;
    const NEGATIVE_INFINITY: u16 = 0xF000;
    let special =
        |sign: u16| [0u16.to_be_bytes(), 0u16.to_be_bytes(), sign.to_be_bytes(), 0u16.to_be_bytes()].concat();
    let trimmed = text.trim();
    match trimmed {
        "NaN" => return Ok(special(NAN)),
        "Infinity" => return Ok(special(POSITIVE_INFINITY)),
        "-Infinity" => return Ok(special(NEGATIVE_INFINITY)),
        _ => {}
    }
    let Some(PlainDecimal { negative, whole, fraction }) = plain_decimal(trimmed) else {
        return Err(not_of("numeric", text));
    };
    let dscale = u16::try_from(fraction.len()).map_err(|_| not_of("numeric", text))?;
    let whole = whole.trim_start_matches('0');
    // the whole part padded on the left and the fraction on the right to groups of four
    // digits, so that the groups split at the decimal point
    let whole_padding = (4 - whole.len() % 4) % 4;
    let fraction_padding = (4 - fraction.len() % 4) % 4;
    let digits: Vec<u8> = std::iter::repeat_n(b'0', whole_padding)
        .chain(whole.bytes())
        .chain(fraction.bytes())
        .chain(std::iter::repeat_n(b'0', fraction_padding))
        .map(|b| b - b'0')
        .collect();
    let mut groups: Vec<i16> =
        digits.chunks(4).map(|g| g.iter().fold(0i16, |n, &d| n * 10 + i16::from(d))).collect();
    let mut weight = ((whole.len() + whole_padding) / 4) as i32 - 1;
    // PostgreSQL stores neither leading nor trailing zero groups
    let leading = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..leading);
    weight -= leading as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let (weight, sign) = if groups.is_empty() { (0, 0) } else { (weight, if negative { 0x4000 } else { 0 }) };
    let ndigits = i16::try_from(groups.len()).map_err(|_| not_of("numeric", text))?;
    let weight = i16::try_from(weight).map_err(|_| not_of("numeric", text))?;
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&u16::to_be_bytes(sign));
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

/// A decimal number written plainly: a sign, digits, and digits after a point.
pub(crate) struct PlainDecimal<'a> {
    /// Whether it has a minus sign.
    pub negative: bool,
    /// The digits before the point (perhaps none).
    pub whole: &'a str,
    /// The digits after it (perhaps none).
    pub fraction: &'a str,
}

impl PlainDecimal<'_> {
    /// The number without its sign, as written (`1.50`).
    #[cfg_attr(not(feature = "engine"), allow(dead_code))]
    pub fn unsigned(&self) -> String {
        if self.fraction.is_empty() {
            self.whole.to_string()
        } else {
            format!("{}.{}", self.whole, self.fraction)
        }
    }
}

/// `text` as a plain decimal (`-12.50`, `+3`, `.5`), or `None` (an exponent, letters, no
/// digits).
pub(crate) fn plain_decimal(text: &str) -> Option<PlainDecimal<'_>> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let plain = !(whole.is_empty() && fraction.is_empty()) && digits(whole) && digits(fraction);
    plain.then_some(PlainDecimal { negative, whole, fraction })
}

/// A `date`: days since 2000-01-01.
fn date(text: &str) -> Result<Vec<u8>, BinaryError> {
    let day = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| not_of("date", text))?;
    let days = i32::try_from((day - postgres_epoch()).num_days()).map_err(|_| not_of("date", text))?;
    Ok(days.to_be_bytes().to_vec())
}

/// An interval's three fields, as PostgreSQL keeps them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Interval {
    months: i32,
    days: i32,
    microseconds: i64,
}

/// An `interval`: microseconds, days, months.
fn interval(text: &str) -> Result<Vec<u8>, BinaryError> {
    let v = parse_interval(text).ok_or_else(|| not_of("interval", text))?;
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&v.microseconds.to_be_bytes());
    out.extend_from_slice(&v.days.to_be_bytes());
    out.extend_from_slice(&v.months.to_be_bytes());
    Ok(out)
}

/// An interval in PostgreSQL's output style `postgres` (`1 year 2 mons -3 days +04:05:06.5`,
/// `-00:00:01.25`), read exactly: no field goes through a float.
fn parse_interval(text: &str) -> Option<Interval> {
    let mut v = Interval::default();
    let mut words = text.split_whitespace().peekable();
    while let Some(word) = words.next() {
        if word.contains(':') {
            v.microseconds = v.microseconds.checked_add(time_of_day(word)?)?;
            continue;
        }
        let n: i64 = word.parse().ok()?;
        let unit = words.next()?;
        match unit.trim_end_matches('s') {
            "year" => v.months = v.months.checked_add(i32::try_from(n.checked_mul(12)?).ok()?)?,
            "mon" | "month" => v.months = v.months.checked_add(i32::try_from(n).ok()?)?,
            "day" => v.days = v.days.checked_add(i32::try_from(n).ok()?)?,
            _ => return None,
        }
    }
    Some(v)
}

/// `[+-]HH:MM:SS[.ffffff]` in microseconds.
fn time_of_day(word: &str) -> Option<i64> {
    let (negative, rest) = match word.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, word.strip_prefix('+').unwrap_or(word)),
    };
    let mut fields = rest.split(':');
    let hours: i64 = fields.next()?.parse().ok()?;
    let minutes: i64 = fields.next()?.parse().ok()?;
    let seconds = fields.next()?;
    if fields.next().is_some() {
        return None;
    }
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let micros: i64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<6}").parse().ok()? };
    let total = hours
        .checked_mul(3_600_000_000)?
        .checked_add(minutes.checked_mul(60_000_000)?)?
        .checked_add(whole.checked_mul(1_000_000)?)?
        .checked_add(micros)?;
    Some(if negative { -total } else { total })
}

/// The element types of the arrays promflow answers.
#[derive(Clone, Copy)]
enum ArrayElement {
    Text,
    Int8,
    Float8,
}

impl ArrayElement {
    fn oid(self) -> u32 {
        match self {
            ArrayElement::Text => 25,
            ArrayElement::Int8 => 20,
            ArrayElement::Float8 => 701,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ArrayElement::Text => "text[]",
            ArrayElement::Int8 => "bigint[]",
            ArrayElement::Float8 => "double precision[]",
        }
    }

    /// An element's binary form.
    fn encode(self, item: &str) -> Option<Vec<u8>> {
        Some(match self {
            ArrayElement::Text => item.as_bytes().to_vec(),
            ArrayElement::Int8 => item.trim().parse::<i64>().ok()?.to_be_bytes().to_vec(),
            ArrayElement::Float8 => float8(item.trim())?.to_be_bytes().to_vec(),
        })
    }
}

/// A `double precision` in PostgreSQL's text (`Infinity`, `-Infinity`, `NaN` spelled so).
fn float8(text: &str) -> Option<f64> {
    match text {
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        t => t.parse().ok().filter(|v: &f64| v.is_finite()),
    }
}

/// A one-dimensional array: its dimension (none when empty), whether it has a `NULL`, its
/// element type, then each element with its length (−1 for `NULL`).
fn array(text: &str, element: ArrayElement) -> Result<Vec<u8>, BinaryError> {
    if text.trim_start().strip_prefix('{').is_some_and(|inner| inner.trim_start().starts_with('{')) {
        return Err(BinaryError::Dimensions);
    }
    let items = crate::bind::array_elements(text).ok_or_else(|| not_of(element.name(), text))?;
    let has_null = items.iter().any(Option::is_none);
    let dimensions: i32 = if items.is_empty() { 0 } else { 1 };
    let mut out = Vec::with_capacity(20 + 12 * items.len());
    out.extend_from_slice(&dimensions.to_be_bytes());
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&element.oid().to_be_bytes());
    if dimensions == 1 {
        let len = i32::try_from(items.len()).map_err(|_| not_of(element.name(), text))?;
        out.extend_from_slice(&len.to_be_bytes());
        // arrays are numbered from 1
        out.extend_from_slice(&1i32.to_be_bytes());
    }
    for item in &items {
        match item {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(item) => {
                let bytes = element.encode(item).ok_or_else(|| not_of(element.name(), text))?;
                let len = i32::try_from(bytes.len()).map_err(|_| not_of(element.name(), text))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&bytes);
            }
        }
    }
    Ok(out)
}

/// A parameter of type `numeric` sent in binary, as the text of a number SQL reads exactly.
pub fn numeric_text(bytes: &[u8]) -> Option<String> {
    let field = |i: usize| bytes.get(2 * i..2 * i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let ndigits = usize::from(field(0)?);
    let weight = i32::from(field(1)? as i16);
    let sign = field(2)?;
    let dscale = usize::from(field(3)?);
    if bytes.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        0 | 0x4000 => {}
        _ => return None,
    }
    let groups: Vec<u16> = (0..ndigits).map(|i| field(4 + i)).collect::<Option<_>>()?;
    if groups.iter().any(|&g| g > 9999) {
        return None;
    }
    // the digits of groups weight … 0 are the whole part; the rest, the fraction
    let group = |w: i32| -> u16 {
        let i = weight - w;
        if (0..ndigits as i32).contains(&i) {
            groups[i as usize]
        } else {
            0
        }
    };
    let mut whole = String::new();
    for w in (0..=weight.max(0)).rev() {
        whole.push_str(&format!("{:04}", group(w)));
    }
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let mut fraction = String::new();
    let mut w = -1;
    while fraction.len() < dscale {
        fraction.push_str(&format!("{:04}", group(w)));
        w -= 1;
    }
    fraction.truncate(dscale);
    let sign = if sign == 0x4000 && groups.iter().any(|&g| g != 0) { "-" } else { "" };
    Some(if dscale == 0 { format!("{sign}{whole}") } else { format!("{sign}{whole}.{fraction}") })
}

/// A parameter of type `date` sent in binary, as `YYYY-MM-DD`.
pub fn date_text(bytes: &[u8]) -> Option<String> {
    let days = i32::from_be_bytes(bytes.try_into().ok()?);
    let day = postgres_epoch().checked_add_signed(chrono::Duration::days(i64::from(days)))?;
    Some(format!("{:04}-{:02}-{:02}", day.year(), day.month(), day.day()))
}

/// A parameter of type `interval` sent in binary, as an interval literal PostgreSQL reads
/// back to the same three fields.
pub fn interval_text(bytes: &[u8]) -> Option<String> {
    if bytes.len() != 16 {
        return None;
    }
    let microseconds = i64::from_be_bytes(bytes[0..8].try_into().ok()?);
    let days = i32::from_be_bytes(bytes[8..12].try_into().ok()?);
    let months = i32::from_be_bytes(bytes[12..16].try_into().ok()?);
    Some(format!("{months} months {days} days {microseconds} microseconds"))
}

/// A parameter array sent in binary: its elements' binary forms (`None` for `NULL`), when it
/// has at most one dimension.
pub fn array_items(bytes: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let int = |at: usize| bytes.get(at..at + 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let dimensions = int(0)?;
    let mut at = 12;
    let len = match dimensions {
        0 => 0,
        1 => {
            at += 8;
            usize::try_from(int(12)?).ok()?
        }
        _ => return None,
    };
    let mut items = Vec::with_capacity(len.min(bytes.len() / 4));
    for _ in 0..len {
        let item_len = int(at)?;
        at += 4;
        if item_len < 0 {
            items.push(None);
        } else {
            let end = at.checked_add(usize::try_from(item_len).ok()?)?;
            items.push(Some(bytes.get(at..end)?));
            at = end;
        }
    }
    (at == bytes.len()).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_round_trip(text: &str) -> String {
        numeric_text(&numeric(text).unwrap()).unwrap()
    }

    #[test]
    fn numerics_are_base_ten_thousand_groups_around_the_point() {
        // 12345.678: groups 1, 2345 . 6780, weight 1, two decimals shown as three
        assert_eq!(
            numeric("12345.678").unwrap(),
            [3i16, 1, 0, 3, 1, 2345, 6780].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<_>>()
        );
        // -0.0001: one group at weight -1
        assert_eq!(
            numeric("-0.0001").unwrap(),
            [1i16, -1, 0x4000, 4, 1].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<_>>()
        );
        // zero keeps its decimals and no sign
        assert_eq!(
            numeric("-0.00").unwrap(),
            [0i16, 0, 0, 2].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<_>>()
        );
        // trailing zero groups are not stored
        assert_eq!(
            numeric("100000000").unwrap(),
            [1i16, 2, 0, 0, 1].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<_>>()
        );
        for text in
            ["0", "1.50", "-12.345", "99999999999999999999999999999999999.999", "0.00001", "NaN", "-Infinity"]
        {
            assert_eq!(numeric_round_trip(text), text);
        }
        assert!(numeric("1e5").is_err());
        assert!(numeric("").is_err());
    }

    #[test]
    fn dates_count_days_from_2000() {
        assert_eq!(date("2000-01-02").unwrap(), 1i32.to_be_bytes());
        assert_eq!(date("1999-12-31").unwrap(), (-1i32).to_be_bytes());
        assert_eq!(date_text(&date("2026-11-25").unwrap()).unwrap(), "2026-11-25");
    }

    #[test]
    fn intervals_are_read_exactly_in_postgresql_style() {
        let v = |months, days, microseconds| Some(Interval { months, days, microseconds });
        assert_eq!(parse_interval("1 year 2 mons 3 days 04:05:06.5"), v(14, 3, 14_706_500_000));
        assert_eq!(parse_interval("-1 days +02:00:00"), v(0, -1, 7_200_000_000));
        assert_eq!(parse_interval("-00:00:01.000001"), v(0, 0, -1_000_001));
        assert_eq!(parse_interval("00:00:00"), v(0, 0, 0));
        assert_eq!(parse_interval("-2 years -1 mon"), v(-25, 0, 0));
        assert_eq!(parse_interval("3 fortnights"), None);
        assert_eq!(parse_interval("00:00:00.1234567"), None);
    }

    #[test]
    fn arrays_carry_their_dimension_nulls_and_element_type() {
        let bytes = array("{1,NULL,-3}", ArrayElement::Int8).unwrap();
        let items = array_items(&bytes).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0], Some(&1i64.to_be_bytes()[..]));
        assert_eq!(items[1], None);
        assert_eq!(&bytes[4..12], &[0, 0, 0, 1, 0, 0, 0, 20]);
        let empty = array("{}", ArrayElement::Text).unwrap();
        assert_eq!(empty, [0i32, 0, 25].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<_>>());
        assert!(array_items(&empty).unwrap().is_empty());
        let text = array(r#"{a,"b c","NULL"}"#, ArrayElement::Text).unwrap();
        assert_eq!(array_items(&text).unwrap()[2], Some(&b"NULL"[..]));
        assert!(array("{1.5,Infinity}", ArrayElement::Float8).is_ok());
        assert!(matches!(array("{x}", ArrayElement::Int8), Err(BinaryError::NotOfType { .. })));
        assert!(matches!(array("{{1,2},{3,4}}", ArrayElement::Text), Err(BinaryError::Dimensions)));
        assert!(array_items(&bytes[..bytes.len() - 1]).is_none());
    }
}
