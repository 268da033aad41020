//! oneM2M timestamps: ISO 8601 basic format `YYYYMMDDTHHMMSS[,ffffff]` in UTC (TS-0004 m2m:timestamp).

use crate::error::{M2mError, M2mResult};
use chrono::{DateTime, NaiveDateTime, Utc};

/// Formats a time as a oneM2M timestamp with microseconds, which keeps lexical order equal to time order.
pub fn format(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%S,%6f").to_string()
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
    let naive = NaiveDateTime::parse_from_str(main, "%Y%m%dT%H%M%S").map_err(|_| bad())?;
    let mut t = naive.and_utc();
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
    }
}
