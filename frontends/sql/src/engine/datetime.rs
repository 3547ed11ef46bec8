//! PostgreSQL's interval functions that DataFusion lacks, with PostgreSQL's arithmetic:
//! `age` (the symbolic difference of two times, in years, months and days), `make_interval`
//! (positional or named arguments), and `justify_hours`, `justify_days` and
//! `justify_interval` (24-hour days and 30-day months), and `make_timestamptz`; and the time
//! arithmetic PostgreSQL has and DataFusion answers otherwise: a time minus a time is an
//! `interval` (DataFusion: a duration, which nothing else takes). Times are taken in UTC, the session's `TimeZone`.

use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, IntervalMonthDayNanoArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use sqlparser::ast::{self, Expr};

use super::missing::fail;
use super::udf::Function;

const INTERVAL: DataType = DataType::Interval(IntervalUnit::MonthDayNano);
const NANOS_PER_MICRO: i64 = 1_000;
const NANOS_PER_DAY: i64 = 86_400_000_000_000;
/// PostgreSQL's month, in `justify_days` and `justify_interval`.
const DAYS_PER_MONTH: i32 = 30;

/// `make_interval`'s parameters, in order; each defaults to zero.
const MAKE_INTERVAL_PARAMETERS: [&str; 7] = ["years", "months", "weeks", "days", "hours", "mins", "secs"];

/// The functions of this module.
pub(super) fn functions() -> Vec<ScalarUDF> {
    let mut make = vec![DataType::Int64; 6];
    make.push(DataType::Float64);
    let mut make_time = vec![DataType::Int64; 5];
    make_time.push(DataType::Float64);
    vec![
        Function::udf(
            "age",
            Signature::one_of(vec![TypeSignature::Any(1), TypeSignature::Any(2)], Volatility::Stable),
            Some(INTERVAL),
            age,
        ),
        Function::udf(
            MAKE_INTERVAL,
            Signature::exact(make, Volatility::Immutable),
            Some(INTERVAL),
            make_interval,
        ),
        Function::udf(
            DATE_PART,
            Signature::any(2, Volatility::Immutable),
            Some(DataType::Float64),
            date_part,
        ),
        Function::udf(TO_CHAR, Signature::any(2, Volatility::Immutable), Some(DataType::Utf8), to_char),
        Function::udf("justify_hours", one_interval(), Some(INTERVAL), |a| justify(a, justify_hours)),
        Function::udf("justify_days", one_interval(), Some(INTERVAL), |a| justify(a, justify_days)),
        Function::udf("justify_interval", one_interval(), Some(INTERVAL), |a| justify(a, justify_interval)),
        ScalarUDF::from(TimeDifference { signature: Signature::user_defined(Volatility::Immutable) }),
        Function::udf(
            "make_timestamptz",
            Signature::exact(make_time, Volatility::Immutable),
            Some(DataType::Timestamp(TimeUnit::Microsecond, Some(super::tables::UTC.into()))),
            make_timestamptz,
        ),
    ]
}

/// The name `a - b` of two times is written as ([`TimeDifference`]).
pub(super) const TIME_DIFFERENCE: &str = "pg_time_difference";

/// `a - b` of two expressions that are times (`max(ts) - min(ts)`, `now() - ts`) as
/// [`TIME_DIFFERENCE`]: PostgreSQL's difference is an `interval`, which multiplies, divides
/// and justifies, where DataFusion's is a duration, which nothing takes. A time is what
/// [`is_time`] says is one.
pub(super) fn time_difference(e: &mut Expr) {
    let Expr::BinaryOp { left, op: ast::BinaryOperator::Minus, right } = e else { return };
    if is_time(left) && is_time(right) {
        *e = super::postgres::call(TIME_DIFFERENCE, [(**left).clone(), (**right).clone()]);
    }
}

/// Whether `e` is a time by its form: `ts` (of any table), a time literal or cast, `now()`,
/// `date_trunc`/`date_bin`/`make_timestamptz`/`to_timestamp` of anything, and `min`, `max`,
/// `lag`, `lead`, `first_value`, `last_value` of a time.
pub(super) fn is_time(e: &Expr) -> bool {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => super::postgres::is_column(e, "ts"),
        Expr::Nested(inner) => is_time(inner),
        Expr::TypedString(t) => matches!(t.data_type, ast::DataType::Timestamp(..)),
        Expr::Cast { data_type: ast::DataType::Timestamp(..), .. } => true,
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            match name.as_str() {
                "now" | "current_timestamp" | "date_trunc" | "date_bin" | "make_timestamptz"
                | "to_timestamp" => true,
                "min" | "max" | "lag" | "lead" | "first_value" | "last_value" => {
                    super::postgres::plain_arguments(f).and_then(|a| a.first().copied()).is_some_and(is_time)
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// `a - b` of two times, as PostgreSQL's: an interval of whole days (24 hours each) and the
/// rest, both of `a - b`'s sign.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeDifference {
    signature: Signature,
}

impl ScalarUDFImpl for TimeDifference {
    fn name(&self) -> &str {
        TIME_DIFFERENCE
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        Ok(args
            .iter()
            .map(|t| match t {
                DataType::Timestamp(_, zone) => DataType::Timestamp(TimeUnit::Microsecond, zone.clone()),
                other => other.clone(),
            })
            .collect())
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(INTERVAL)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (a, b) = (
            arrays[0].as_primitive::<TimestampMicrosecondType>(),
            arrays[1].as_primitive::<TimestampMicrosecondType>(),
        );
        const MICROS_PER_DAY: i64 = 86_400_000_000;
        let out: IntervalMonthDayNanoArray = a
            .iter()
            .zip(b.iter())
            .map(|(a, b)| {
                let difference = a?.checked_sub(b?)?;
                let days = i32::try_from(difference / MICROS_PER_DAY).ok()?;
                Some(IntervalMonthDayNano::new(0, days, (difference % MICROS_PER_DAY) * NANOS_PER_MICRO))
            })
            .collect();
        super::udf::answer(&args.args, Arc::new(out))
    }
}

/// `make_timestamptz(year, month, day, hour, min, sec)`: that time in UTC, the session's
/// zone; a field out of range is PostgreSQL's 22008.
fn make_timestamptz(args: &[ArrayRef]) -> Result<ArrayRef> {
    let fields: Vec<_> = args[..5].iter().map(|a| a.as_primitive::<Int64Type>()).collect();
    let seconds = args[5].as_primitive::<Float64Type>();
    let mut out = Vec::with_capacity(seconds.len());
    for row in 0..seconds.len() {
        if seconds.is_null(row) || fields.iter().any(|f| f.is_null(row)) {
            out.push(None);
            continue;
        }
        let [year, month, day, hour, minute] = [0, 1, 2, 3, 4].map(|i| fields[i].value(row));
        let second = seconds.value(row);
        let date = i32::try_from(year)
            .ok()
            .and_then(|y| NaiveDate::from_ymd_opt(y, u32::try_from(month).ok()?, u32::try_from(day).ok()?));
        let (Some(date), true, true, true) =
            (date, (0..24).contains(&hour), (0..60).contains(&minute), (0.0..60.0).contains(&second))
        else {
            return fail(
                "22008",
                format!("date field value out of range: {year}-{month:02}-{day:02} {hour:02}:{minute:02}:{second}"),
            );
        };
        let micros = date.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_micros())
            + (hour * 3600 + minute * 60) * 1_000_000
            + (second * 1e6).round() as i64;
        out.push(Some(micros));
    }
    let times =
        datafusion::arrow::array::TimestampMicrosecondArray::from(out).with_timezone(super::tables::UTC);
    Ok(Arc::new(times))
}

/// The name `date_part` (and `EXTRACT`) of a field with fractions of a second is planned as.
pub(super) const DATE_PART: &str = "pg_date_part";

/// The fields [`date_part`] answers: those whose value has a fraction of a second, which
/// DataFusion's `date_part` drops.
pub(super) fn sub_second_field(field: &str) -> bool {
    matches!(
        field,
        "second" | "seconds" | "millisecond" | "milliseconds" | "microsecond" | "microseconds" | "epoch"
    )
}

/// `date_part(field, x)` of a [`sub_second_field`], to the microsecond, as PostgreSQL answers
/// it: of a time, the seconds of its minute (`15.017`), in milliseconds or microseconds, or
/// the seconds since 1970 (`epoch`); of an interval, the seconds of its time of day, or its
/// length in seconds (a year is 365.25 days, a month 30).
fn date_part(args: &[ArrayRef]) -> Result<ArrayRef> {
    let field =
        args[0].as_string_opt::<i32>().filter(|f| !f.is_empty()).map(|f| f.value(0).to_ascii_lowercase());
    let Some(field) = field.filter(|f| sub_second_field(f)) else {
        return fail("22023", "date_part: unknown field");
    };
    let scale = match field.as_str() {
        "millisecond" | "milliseconds" => 1e3,
        "microsecond" | "microseconds" => 1.0,
        _ => 1e6,
    };
    let epoch = field == "epoch";
    let x = &args[1];
    // (microseconds of the time or the interval's time of day, seconds of whole days and months)
    let parts: Vec<Option<(i64, f64)>> = match x.data_type() {
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            let micros = cast(x, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            micros.as_primitive::<TimestampMicrosecondType>().iter().map(|v| v.map(|us| (us, 0.0))).collect()
        }
        DataType::Duration(_) => {
            let micros = cast(x, &DataType::Duration(TimeUnit::Microsecond))?;
            micros
                .as_primitive::<datafusion::arrow::datatypes::DurationMicrosecondType>()
                .iter()
                .map(|v| v.map(|us| (us, 0.0)))
                .collect()
        }
        DataType::Interval(_) => {
            let spans = cast(x, &INTERVAL)?;
            spans
                .as_primitive::<IntervalMonthDayNanoType>()
                .iter()
                .map(|v| {
                    v.map(|v| {
                        let (years, months) = (v.months / 12, v.months % 12);
                        let days = f64::from(years) * 365.25 + f64::from(months) * 30.0 + f64::from(v.days);
                        (v.nanoseconds / NANOS_PER_MICRO, days * 86_400.0)
                    })
                })
                .collect()
        }
        other => return fail("0A000", format!("date_part of {other} is not supported")),
    };
    let interval = matches!(x.data_type(), DataType::Interval(_) | DataType::Duration(_));
    let out: datafusion::arrow::array::Float64Array = parts
        .into_iter()
        .map(|p| {
            p.map(|(micros, whole_days)| {
                if epoch {
                    whole_days + micros as f64 / 1e6
                } else {
                    // an interval's seconds keep its sign; a time's are of its minute
                    let of_minute =
                        if interval { micros % 60_000_000 } else { micros.rem_euclid(60_000_000) };
                    of_minute as f64 / scale
                }
            })
        })
        .collect();
    Ok(Arc::new(out))
}

/// The name `to_char` is planned as ([`to_char`]).
pub(super) const TO_CHAR: &str = "pg_to_char";

/// `to_char(t, template)` of a time or date, as PostgreSQL formats it in UTC, the session's
/// zone: its template patterns (`YYYY`, `MM`, `DD`, `HH24`, `MI`, `SS`, `MS`, `US`, `Month`,
/// `Mon`, `Day`, `Dy` in three cases, `AM`, `Q`, `IW`, `DDD`, …), names blank-padded to nine
/// letters and numbers zero-padded unless `FM` comes before, `"quoted"` and `\`-escaped text
/// as written. A number's template is not supported (0A000).
fn to_char(args: &[ArrayRef]) -> Result<ArrayRef> {
    let (x, templates) = (&args[0], &args[1]);
    if !matches!(x.data_type(), DataType::Timestamp(..) | DataType::Date32 | DataType::Date64) {
        return fail("0A000", format!("to_char of {} is not supported", x.data_type()));
    }
    let micros = cast(x, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let micros = micros.as_primitive::<TimestampMicrosecondType>();
    let templates = cast(templates, &DataType::Utf8)?;
    let templates = templates.as_string::<i32>();
    let out: datafusion::arrow::array::StringArray = (0..micros.len())
        .map(|i| {
            if micros.is_null(i) || templates.is_null(i) {
                return None;
            }
            let us = micros.value(i);
            let at = DateTime::from_timestamp(us.div_euclid(1_000_000), 0)?.naive_utc();
            Some(format_time(templates.value(i), &at, us.rem_euclid(1_000_000)))
        })
        .collect();
    Ok(Arc::new(out))
}

/// `at` (whole seconds, and `micros` beyond them) written by PostgreSQL's `template`.
fn format_time(template: &str, at: &chrono::NaiveDateTime, micros: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    let mut out = String::new();
    let mut rest = template;
    let mut fill = true;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("FM").or_else(|| rest.strip_prefix("fm")) {
            fill = false;
            rest = after;
            continue;
        }
        if c == '"' {
            // quoted text, with `\"` for a quote
            let mut chars = rest[1..].char_indices();
            let mut end = rest.len();
            while let Some((i, q)) = chars.next() {
                match q {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            out.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 2;
                        break;
                    }
                    q => out.push(q),
                }
            }
            rest = &rest[end.min(rest.len())..];
            continue;
        }
        if c == '\\' {
            let mut chars = rest.chars();
            chars.next();
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
            rest = chars.as_str();
            continue;
        }
        let number = |v: i64, width: usize| if fill { format!("{v:0width$}") } else { v.to_string() };
        let name = |full: &str, short: bool, case: u8| {
            let text = if short { &full[..3] } else { full };
            let text = match case {
                b'U' => text.to_uppercase(),
                b'l' => text.to_lowercase(),
                _ => text.to_string(),
            };
            if fill && !short {
                format!("{text:<9}")
            } else {
                text
            }
        };
        // the patterns are at most five letters long
        let upper: String = rest.chars().take(5).collect::<String>().to_ascii_uppercase();
        let hour12 = match at.hour() % 12 {
            0 => 12,
            h => i64::from(h),
        };
        let pm = at.hour() >= 12;
        // (the pattern as written, how long it is, what it writes); longest first
        let cased = |pattern: &str| -> Option<u8> {
            let written = rest.get(..pattern.len())?;
            if written == pattern.to_uppercase() {
                Some(b'U')
            } else if written == pattern.to_lowercase() {
                Some(b'l')
            } else if written == pattern {
                Some(b'C')
            } else {
                None
            }
        };
        let found: Option<(usize, String)> = if let Some(case) = cased("Month") {
            Some((5, name(MONTHS[at.month0() as usize], false, case)))
        } else if let Some(case) = cased("Mon") {
            Some((3, name(MONTHS[at.month0() as usize], true, case)))
        } else if let Some(case) = cased("Day") {
            Some((3, name(DAYS[at.weekday().num_days_from_sunday() as usize], false, case)))
        } else if let Some(case) = cased("Dy") {
            Some((2, name(DAYS[at.weekday().num_days_from_sunday() as usize], true, case)))
        } else if let Some(p) = ["A.M.", "P.M."].iter().find(|p| upper.starts_with(**p)) {
            let text = if pm { "P.M." } else { "A.M." };
            Some((
                p.len(),
                if rest.starts_with(|c: char| c.is_lowercase()) { text.to_lowercase() } else { text.into() },
            ))
        } else if let Some(p) = ["AM", "PM"].iter().find(|p| upper.starts_with(**p)) {
            let text = if pm { "PM" } else { "AM" };
            Some((
                p.len(),
                if rest.starts_with(|c: char| c.is_lowercase()) { text.to_lowercase() } else { text.into() },
            ))
        } else {
            let year = i64::from(at.year());
            let numbers: [(&str, i64, usize); 20] = [
                ("YYYY", year, 4),
                ("YYY", year % 1000, 3),
                ("YY", year % 100, 2),
                ("Y", year % 10, 1),
                ("HH24", i64::from(at.hour()), 2),
                ("HH12", hour12, 2),
                ("HH", hour12, 2),
                ("MI", i64::from(at.minute()), 2),
                ("MS", micros / 1000, 3),
                ("MM", i64::from(at.month()), 2),
                ("SS", i64::from(at.second()), 2),
                ("US", micros, 6),
                ("DDD", i64::from(at.ordinal()), 3),
                ("DD", i64::from(at.day()), 2),
                ("D", i64::from(at.weekday().number_from_sunday()), 1),
                ("IW", i64::from(at.iso_week().week()), 2),
                ("WW", i64::from((at.ordinal() - 1) / 7 + 1), 2),
                ("W", i64::from((at.day() - 1) / 7 + 1), 1),
                ("Q", i64::from(at.month0() / 3 + 1), 1),
                ("J", i64::from(at.date().num_days_from_ce()) + 1_721_425, 1),
            ];
            numbers
                .iter()
                .find(|(p, ..)| upper.starts_with(p))
                .map(|(p, v, width)| (p.len(), number(*v, *width)))
        };
        let found = found.or_else(|| {
            [("TZ", "UTC"), ("OF", "+00")].iter().find(|(p, _)| upper.starts_with(p)).map(|(p, zone)| {
                (
                    p.len(),
                    if rest.starts_with(|c: char| c.is_lowercase()) {
                        zone.to_lowercase()
                    } else {
                        zone.to_string()
                    },
                )
            })
        });
        match found {
            Some((len, text)) => {
                out.push_str(&text);
                rest = &rest[len..];
                fill = true;
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

fn one_interval() -> Signature {
    Signature::exact(vec![INTERVAL], Volatility::Immutable)
}

/// The name `make_interval` is planned as: it takes all seven arguments, by position.
pub(super) const MAKE_INTERVAL: &str = "pg_make_interval";

/// `make_interval(hours => 2)`, `make_interval(1, 2)`: the call with all seven arguments by
/// position, the missing ones zero, as [`make_interval`] takes them. A name it does not know
/// is left for the planner to refuse.
pub(super) fn make_interval_positional(e: &mut Expr) {
    let Expr::Function(f) = e else { return };
    if !f.name.to_string().eq_ignore_ascii_case("make_interval") {
        return;
    }
    let ast::FunctionArguments::List(list) = &f.args else { return };
    let zero = || Expr::value(ast::Value::Number("0".into(), false));
    let mut slots: Vec<Expr> = (0..MAKE_INTERVAL_PARAMETERS.len()).map(|_| zero()).collect();
    for (position, argument) in list.args.iter().enumerate() {
        let (slot, value) = match argument {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(v)) => (Some(position), v),
            ast::FunctionArg::Named { name, arg: ast::FunctionArgExpr::Expr(v), .. }
            | ast::FunctionArg::ExprNamed {
                name: Expr::Identifier(name),
                arg: ast::FunctionArgExpr::Expr(v),
                ..
            } => {
                let name = name.value.to_ascii_lowercase();
                (MAKE_INTERVAL_PARAMETERS.iter().position(|p| *p == name), v)
            }
            _ => return,
        };
        match slot.and_then(|i| slots.get_mut(i)) {
            Some(slot) => *slot = value.clone(),
            None => return,
        }
    }
    *e = super::postgres::call(MAKE_INTERVAL, slots);
}

/// `pg_make_interval(years, months, weeks, days, hours, mins, secs)`: PostgreSQL's
/// `make_interval`, seconds to the microsecond.
fn make_interval(args: &[ArrayRef]) -> Result<ArrayRef> {
    let [years, months, weeks, days, hours, mins] =
        [0, 1, 2, 3, 4, 5].map(|i| args[i].as_primitive::<Int64Type>());
    let secs = args[6].as_primitive::<Float64Type>();
    let mut out = Vec::with_capacity(secs.len());
    for i in 0..secs.len() {
        if [years, months, weeks, days, hours, mins].iter().any(|a| a.is_null(i)) || secs.is_null(i) {
            out.push(None);
            continue;
        }
        let out_of_range = || fail("22008", "interval out of range");
        let month = years
            .value(i)
            .checked_mul(12)
            .and_then(|m| m.checked_add(months.value(i)))
            .and_then(|m| i32::try_from(m).ok());
        let day = weeks
            .value(i)
            .checked_mul(7)
            .and_then(|d| d.checked_add(days.value(i)))
            .and_then(|d| i32::try_from(d).ok());
        let seconds = secs.value(i);
        if !seconds.is_finite() {
            return out_of_range();
        }
        let micros = (seconds * 1e6).round();
        let time = hours
            .value(i)
            .checked_mul(3_600_000_000)
            .and_then(|t| t.checked_add(mins.value(i).checked_mul(60_000_000)?))
            .and_then(|t| if micros.abs() < 9.2e18 { t.checked_add(micros as i64) } else { None })
            .and_then(|t| t.checked_mul(NANOS_PER_MICRO));
        match (month, day, time) {
            (Some(month), Some(day), Some(nanos)) => {
                out.push(Some(IntervalMonthDayNano::new(month, day, nanos)))
            }
            _ => return out_of_range(),
        }
    }
    Ok(Arc::new(out.into_iter().collect::<IntervalMonthDayNanoArray>()))
}

/// `age(a, b)`: PostgreSQL's symbolic difference `a − b`, field by field (years, months,
/// days, time), each negative field borrowing from the next larger one, a month borrowed as
/// the days of the month before the later time's; `age(a)` is `age` from today's midnight.
fn age(args: &[ArrayRef]) -> Result<ArrayRef> {
    let microseconds = DataType::Timestamp(TimeUnit::Microsecond, None);
    // times, dates, or text read as times (PostgreSQL's literals of unknown type)
    if let Some(other) = args.iter().map(|a| a.data_type()).find(|t| {
        !matches!(
            t,
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Utf8 | DataType::Null
        )
    }) {
        return fail("42883", format!("function age({other}) does not exist"));
    }
    let later = cast(&args[0], &microseconds)?;
    let later = later.as_primitive::<TimestampMicrosecondType>();
    let earlier = args.get(1).map(|a| cast(a, &microseconds)).transpose()?;
    let midnight =
        chrono::Utc::now().date_naive().and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_micros());
    let mut out = Vec::with_capacity(later.len());
    for i in 0..later.len() {
        // one argument: the difference of today's midnight and it
        let pair = match &earlier {
            Some(earlier) => {
                let earlier = earlier.as_primitive::<TimestampMicrosecondType>();
                (later.is_valid(i) && earlier.is_valid(i)).then(|| (later.value(i), earlier.value(i)))
            }
            None => later.is_valid(i).then(|| midnight.map(|m| (m, later.value(i)))).flatten(),
        };
        out.push(match pair {
            Some((a, b)) => Some(
                symbolic_difference(a, b).ok_or(()).or_else(|()| fail("22008", "timestamp out of range"))?,
            ),
            None => None,
        });
    }
    Ok(Arc::new(out.into_iter().collect::<IntervalMonthDayNanoArray>()))
}

/// The fields of a time (UTC), as PostgreSQL's `timestamp2tm` gives them.
struct Fields {
    year: i64,
    /// 1 to 12
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    micro: i64,
}

impl Fields {
    fn of(micros: i64) -> Option<Fields> {
        let t = DateTime::from_timestamp_micros(micros)?.naive_utc();
        Some(Fields {
            year: i64::from(t.year()),
            month: i64::from(t.month()),
            day: i64::from(t.day()),
            hour: i64::from(t.hour()),
            minute: i64::from(t.minute()),
            second: i64::from(t.second()),
            micro: i64::from(t.nanosecond() / 1_000),
        })
    }
}

/// The days of `month` (1 to 12) of `year`.
fn days_in_month(year: i64, month: i64) -> i64 {
    let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let first = |y: i64, m: i64| NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, u32::try_from(m).ok()?, 1);
    match (first(year, month), first(next_year, next_month)) {
        (Some(a), Some(b)) => (b - a).num_days(),
        _ => 30,
    }
}

/// [`age`] of two times in microseconds.
fn symbolic_difference(a: i64, b: i64) -> Option<IntervalMonthDayNano> {
    let (t1, t2) = (Fields::of(a)?, Fields::of(b)?);
    let negative = a < b;
    let sign = if negative { -1 } else { 1 };
    // from the smallest field to the largest, each with how many of it make the next
    let mut fields = [
        t1.micro - t2.micro,
        t1.second - t2.second,
        t1.minute - t2.minute,
        t1.hour - t2.hour,
        t1.day - t2.day,
        t1.month - t2.month,
        t1.year - t2.year,
    ]
    .map(|f| sign * f);
    // a month borrowed is the one before the later time's, as PostgreSQL borrows it
    let borrowed = if negative { &t1 } else { &t2 };
    let units = [1_000_000, 60, 60, 24, days_in_month(borrowed.year, borrowed.month), 12];
    for (i, unit) in units.into_iter().enumerate() {
        while fields[i] < 0 {
            fields[i] += unit;
            fields[i + 1] -= 1;
        }
    }
    let [micro, second, minute, hour, day, month, year] = fields;
    let months = i32::try_from(sign * (year * 12 + month)).ok()?;
    let days = i32::try_from(sign * day).ok()?;
    let time = sign * (((hour * 60 + minute) * 60 + second) * 1_000_000 + micro);
    Some(IntervalMonthDayNano::new(months, days, time.checked_mul(NANOS_PER_MICRO)?))
}

/// Each interval of `args[0]` justified by `how`.
fn justify(
    args: &[ArrayRef],
    how: fn(IntervalMonthDayNano) -> Option<IntervalMonthDayNano>,
) -> Result<ArrayRef> {
    let spans = args[0].as_primitive::<IntervalMonthDayNanoType>();
    let mut out = Vec::with_capacity(spans.len());
    for span in spans.iter() {
        out.push(match span {
            Some(span) => Some(how(span).ok_or(()).or_else(|()| fail("22008", "interval out of range"))?),
            None => None,
        });
    }
    Ok(Arc::new(out.into_iter().collect::<IntervalMonthDayNanoArray>()))
}

/// Whole days of the time carried into days, the time keeping the days' sign.
fn justify_hours(span: IntervalMonthDayNano) -> Option<IntervalMonthDayNano> {
    let day = span.days.checked_add(i32::try_from(span.nanoseconds / NANOS_PER_DAY).ok()?)?;
    let (day, time) = signed_alike(day, span.nanoseconds % NANOS_PER_DAY, NANOS_PER_DAY);
    Some(IntervalMonthDayNano::new(span.months, day, time))
}

/// Whole 30-day months of the days carried into months, the days keeping the months' sign.
fn justify_days(span: IntervalMonthDayNano) -> Option<IntervalMonthDayNano> {
    let month = span.months.checked_add(span.days / DAYS_PER_MONTH)?;
    let (month, day) = signed_alike(month, i64::from(span.days % DAYS_PER_MONTH), i64::from(DAYS_PER_MONTH));
    Some(IntervalMonthDayNano::new(month, i32::try_from(day).ok()?, span.nanoseconds))
}

/// Both justifications, every field given one sign.
fn justify_interval(span: IntervalMonthDayNano) -> Option<IntervalMonthDayNano> {
    let (mut month, mut day, time) = (span.months, span.days, span.nanoseconds);
    // days of the time's sign first carried into months, so the carry of hours cannot overflow
    if (day > 0 && time > 0) || (day < 0 && time < 0) {
        month = month.checked_add(day / DAYS_PER_MONTH)?;
        day %= DAYS_PER_MONTH;
    }
    day = day.checked_add(i32::try_from(time / NANOS_PER_DAY).ok()?)?;
    let time = time % NANOS_PER_DAY;
    month = month.checked_add(day / DAYS_PER_MONTH)?;
    day %= DAYS_PER_MONTH;
    // the months' sign over the days and time together
    if month > 0 && (day < 0 || (day == 0 && time < 0)) {
        day += DAYS_PER_MONTH;
        month -= 1;
    } else if month < 0 && (day > 0 || (day == 0 && time > 0)) {
        day -= DAYS_PER_MONTH;
        month += 1;
    }
    let (day, time) = signed_alike(day, time, NANOS_PER_DAY);
    Some(IntervalMonthDayNano::new(month, day, time))
}

/// A larger field and a smaller one (less than one `unit` of the larger) with the smaller
/// given the larger's sign, by lending it one unit of the larger.
fn signed_alike(larger: i32, smaller: i64, unit: i64) -> (i32, i64) {
    if larger > 0 && smaller < 0 {
        (larger - 1, smaller + unit)
    } else if larger < 0 && smaller > 0 {
        (larger + 1, smaller - unit)
    } else {
        (larger, smaller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_micros()
    }

    #[test]
    fn age_borrows_the_month_before_as_postgresql_does() {
        // PostgreSQL: age('2024-03-01', '2024-01-31') = 1 mon 1 day
        let d = symbolic_difference(micros("2024-03-01T00:00:00Z"), micros("2024-01-31T00:00:00Z")).unwrap();
        assert_eq!((d.months, d.days, d.nanoseconds), (1, 1, 0));
        // and the other way round: -1 mons -1 days (borrowing from January's 31)
        let d = symbolic_difference(micros("2024-01-31T00:00:00Z"), micros("2024-03-01T00:00:00Z")).unwrap();
        assert_eq!((d.months, d.days, d.nanoseconds), (-1, -1, 0));
        // 2001-04-10 − 1957-06-13 = 43 years 9 mons 27 days (PostgreSQL's documentation)
        let d = symbolic_difference(micros("2001-04-10T00:00:00Z"), micros("1957-06-13T00:00:00Z")).unwrap();
        assert_eq!((d.months, d.days), (43 * 12 + 9, 27));
    }

    #[test]
    fn justification_follows_postgresql() {
        let hour = 3_600_000_000_000;
        let j = justify_hours(IntervalMonthDayNano::new(0, 0, 27 * hour)).unwrap();
        assert_eq!((j.months, j.days, j.nanoseconds), (0, 1, 3 * hour));
        let j = justify_days(IntervalMonthDayNano::new(0, 35, 0)).unwrap();
        assert_eq!((j.months, j.days), (1, 5));
        // PostgreSQL: justify_interval('1 mon -1 hour') = 29 days 23:00:00
        let j = justify_interval(IntervalMonthDayNano::new(1, 0, -hour)).unwrap();
        assert_eq!((j.months, j.days, j.nanoseconds), (0, 29, 23 * hour));
    }
}
