//! oneM2M timestamps: ISO 8601 basic format `YYYYMMDDTHHMMSS[,ffffff]` in UTC (TS-0004 m2m:timestamp).

use crate::error::{M2mError, M2mResult};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};

/// Formats a time as a oneM2M timestamp with microseconds, which keeps lexical order equal to time order.
/// Written out by hand: every resource write formats two or three timestamps, and a format string
/// would be parsed again on every call.
pub fn format(t: DateTime<Utc>) -> String {
    use std::fmt::Write;
    let micros = t.nanosecond() % 1_000_000_000 / 1_000;
    let mut out = String::with_capacity(22);
    let _ = write!(
        out,
        "{:04}{:02}{:02}T{:02}{:02}{:02},{:06}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        // A leap second (nanoseconds past 10^9) shows as second 60, as chrono's %S does.
        t.second() + u32::from(t.nanosecond() >= 1_000_000_000),
        micros
    );
    out
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
        let nanos: u32 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
        t += chrono::Duration::nanoseconds(nanos as i64);
    }
    Ok(t)
}

/// Compares two timestamps written by clients and by this CSE, which may differ in precision.
pub fn normalize(s: &str) -> M2mResult<String> {
    parse(s).map(format)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
