//! oneM2M timestamps: ISO 8601 basic format `YYYYMMDDTHHMMSS[,ffffff]` in UTC (TS-0004 m2m:timestamp).

use crate::error::{M2mError, M2mResult};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};

/// Formats a time as a oneM2M timestamp with microseconds, which keeps lexical order equal to time order.
/// Written out digit by digit: every resource write formats several timestamps, and `write!`
/// with widths costs ten times as much (a callgrind profile of contentInstance CREATEs).
pub fn format(t: DateTime<Utc>) -> String {
    // A leap second (nanoseconds past 10^9) shows as second 60, as chrono's %S does.
    let second = t.second() + u32::from(t.nanosecond() >= 1_000_000_000);
    let micros = t.nanosecond() % 1_000_000_000 / 1_000;
    let Ok(year @ 0..=9999) = u32::try_from(t.year()) else {
        // Years of five digits or before year 0: the general formatter's sign and width.
        return format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02},{:06}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            second,
            micros
        );
    };
    let mut out = String::with_capacity(22);
    push_digits(&mut out, year, 4);
    push_digits(&mut out, t.month(), 2);
    push_digits(&mut out, t.day(), 2);
    out.push('T');
    push_digits(&mut out, t.hour(), 2);
    push_digits(&mut out, t.minute(), 2);
    push_digits(&mut out, second, 2);
    out.push(',');
    push_digits(&mut out, micros, 6);
    out
}

/// The last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for p in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(p) % 10) as u8));
    }
}

/// Parses `YYYYMMDDTHHMMSS` with an optional `,ffffff` or `.ffffff` fraction and optional `Z`.
pub fn parse(s: &str) -> M2mResult<DateTime<Utc>> {
    let s = s.trim_end_matches('Z');
    let (main, frac) = match s.find([',', '.']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let bad =
        || M2mError::bad_request(format!("'{s}' is not a oneM2M timestamp (YYYYMMDDTHHMMSS)"));
    let b = main.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
    };
    if b.len() != 15 || b[8] != b'T' {
        return Err(bad());
    }
    let field = |r| digits(r).ok_or_else(bad);
    let (year, month, day) = (field(0..4)?, field(4..6)?, field(6..8)?);
    let (hour, minute, second) = (field(9..11)?, field(11..13)?, field(13..15)?);
    let date = NaiveDate::from_ymd_opt(year as i32, month, day).ok_or_else(bad)?;
    // Second 60 is a leap second, as chrono's %S reads it.
    let time = match second {
        60 => NaiveTime::from_hms_nano_opt(hour, minute, 59, 1_000_000_000),
        _ => NaiveTime::from_hms_opt(hour, minute, second),
    }
    .ok_or_else(bad)?;
    let mut t = NaiveDateTime::new(date, time).and_utc();
    if let Some(frac) = frac {
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // Digits checked above: at most nine, read as nanoseconds (padded on the right).
        let nanos = frac
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(9)
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        t += chrono::Duration::nanoseconds(nanos as i64);
    }
    Ok(t)
}

/// Compares two timestamps written by clients and by this CSE, which may differ in precision.
pub fn normalize(s: &str) -> M2mResult<String> {
    parse(s).map(format)
}

/// An xs:duration as this CSE reads it: an ISO 8601 duration (`PT2S`, `PT0.5S`, `P1DT2H`; a year
/// counts 365 days, a month 30) or a non-negative integer of milliseconds. `None` for anything
/// else, and for a value beyond a century.
pub fn parse_duration(v: &serde_json::Value) -> Option<std::time::Duration> {
    const CENTURY: f64 = 100.0 * 365.0 * 86_400.0;
    if let Some(ms) = v.as_u64() {
        return Some(std::time::Duration::from_millis(ms)).filter(|d| d.as_secs_f64() <= CENTURY);
    }
    let rest = v.as_str()?.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, t),
        Some(_) => return None,
        None => (rest, ""),
    };
    let mut secs = 0.0;
    let mut parts = 0;
    for (text, units) in [
        (
            date,
            &[
                ('Y', 365.0 * 86_400.0),
                ('M', 30.0 * 86_400.0),
                ('W', 7.0 * 86_400.0),
                ('D', 86_400.0),
            ][..],
        ),
        (time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)][..]),
    ] {
        let mut rest = text;
        let mut allowed = units;
        while !rest.is_empty() {
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))?;
            let number: f64 = rest[..end].replace(',', ".").parse().ok()?;
            let unit = rest[end..].chars().next()?;
            let at = allowed.iter().position(|(u, _)| *u == unit)?;
            secs += number * allowed[at].1;
            allowed = &allowed[at + 1..];
            rest = &rest[end + unit.len_utf8()..];
            parts += 1;
        }
    }
    (parts > 0 && secs.is_finite() && secs <= CENTURY)
        .then(|| std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_iso_8601_or_milliseconds() {
        use serde_json::json;
        use std::time::Duration;
        let d = |v| parse_duration(&v);
        assert_eq!(d(json!("PT2S")), Some(Duration::from_secs(2)));
        assert_eq!(d(json!("PT0.5S")), Some(Duration::from_millis(500)));
        assert_eq!(d(json!("PT1M30S")), Some(Duration::from_secs(90)));
        assert_eq!(d(json!("P1DT2H")), Some(Duration::from_secs(93_600)));
        assert_eq!(d(json!(1500)), Some(Duration::from_millis(1500)));
        for bad in [
            json!("P"),
            json!("PT"),
            json!("PT2"),
            json!("2S"),
            json!("PT-1S"),
            json!("PT1S1M"),
            json!(-1),
            json!("P999999Y"),
        ] {
            assert_eq!(d(bad.clone()), None, "{bad}");
        }
    }

    #[test]
    fn round_trip_and_precision() {
        let t = parse("20261123T121000").unwrap();
        assert_eq!(format(t), "20261123T121000,000000");
        let t2 = parse("20261123T121000,5").unwrap();
        assert!(t2 > t);
        assert_eq!(format(t2), "20261123T121000,500000");
        assert!(parse("2026-11-23").is_err());
        assert!(parse("20261123T121000,").is_err());
        assert!(parse("20261323T121000").is_err());
        assert!(parse("20260230T121000").is_err());
        assert!(parse("+2026123T121000").is_err());
        assert!(parse("20261123T1210000").is_err());
        assert_eq!(
            format(parse("20261231T235960").unwrap()),
            "20261231T235960,000000"
        );
        assert_eq!(
            format(parse("00010101T000000,000001").unwrap()),
            "00010101T000000,000001"
        );
        assert_eq!(
            format(parse("20261123T121000,123456789").unwrap()),
            "20261123T121000,123456",
            "nanoseconds are cut to microseconds"
        );
    }

    /// The digit-by-digit writer says what chrono's formatter says, over years, days, times of
    /// day and fractions.
    #[test]
    fn format_agrees_with_chrono() {
        use chrono::TimeZone;
        let general = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%S,%6f").to_string();
        let mut t = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        for i in 0..20_000i64 {
            t += chrono::Duration::nanoseconds(3_600_000_123_457 * 7 + i * 987_654_321);
            assert_eq!(format(t), general(t));
        }
        let at = |y, m, d| {
            Utc.with_ymd_and_hms(y, m, d, 4, 5, 6).unwrap() + chrono::Duration::microseconds(7)
        };
        for (y, m, d) in [(0, 1, 1), (9999, 12, 31), (1, 2, 3)] {
            assert_eq!(format(at(y, m, d)), general(at(y, m, d)), "year {y}");
        }
        // Beyond four digits the year is written as it is, without chrono's sign.
        assert_eq!(format(at(10000, 1, 1)), "100000101T040506,000007");
        assert_eq!(format(at(-1, 6, 15)), "-0010615T040506,000007");
    }
}
