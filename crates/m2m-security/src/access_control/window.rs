//! Time windows in the extended crontab format (`m2m:scheduleEntry`, TS-0004 clause 7.4.9.1, table
//! 7.4.9.1-4), used by accessControlWindow (TS-0003 clause 7.1.3, table 7.1.3-3).
//!
//! An entry has 7 fields separated by white space, matched against a UTC time:
//!
//! | field | range |
//! |---|---|
//! | second | 0-59 |
//! | minute | 0-59 |
//! | hour | 0-23 |
//! | day of the month | 1-31 |
//! | month | 1-12 |
//! | day of the week | 0-6, 0 = Sunday (7 is accepted as Sunday too) |
//! | year | 1970-9999 |
//!
//! Each field is `*`, or a comma separated list of elements; an element is a number `a`, a range `a-b`, or a
//! range or `*` followed by a step: `a-b/n`, `*/n`.
//!
//! Decisions where TS-0004 is silent (all of them narrow, never widen, a window):
//! - A time matches when every field matches (AND). The classic Vixie-cron rule "day of the month OR day of
//!   the week when both are restricted" is not applied.
//! - A range must not wrap (`a <= b`); a step must be at least 1; `a/n` without a range is rejected.
//! - Any malformed entry is an error; the caller makes such a window match nothing.

use chrono::{DateTime, Datelike, Timelike, Utc};
use std::fmt;
use std::str::FromStr;

/// One parsed `m2m:scheduleEntry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    fields: [Field; 7],
}

/// A set of allowed values of one field, as the list of its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    elements: Vec<Element>,
}

/// `lo..=hi` every `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Element {
    lo: u32,
    hi: u32,
    step: u32,
}

/// Why a schedule entry could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError(pub String);

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScheduleError {}

const NAMES: [&str; 7] = [
    "second",
    "minute",
    "hour",
    "day of the month",
    "month",
    "day of the week",
    "year",
];
/// Inclusive value ranges of the 7 fields; day of the week allows 7 (= Sunday).
const RANGES: [(u32, u32); 7] = [
    (0, 59),
    (0, 59),
    (0, 23),
    (1, 31),
    (1, 12),
    (0, 7),
    (1970, 9999),
];

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

impl Schedule {
    /// Parse a 7-field entry such as `"* 0-5 2,6,10 * * * *"`.
    pub fn parse(s: &str) -> Result<Schedule, ScheduleError> {
        let parts: Vec<&str> = s.split_ascii_whitespace().collect();
        if parts.len() != 7 {
            return Err(ScheduleError(format!(
                "a schedule entry has 7 fields, found {}",
                parts.len()
            )));
        }
        let mut fields = Vec::with_capacity(7);
        for (i, part) in parts.iter().enumerate() {
            let field = parse_field(part, RANGES[i])
                .map_err(|e| ScheduleError(format!("{} field '{}': {}", NAMES[i], part, e)))?;
            fields.push(field);
        }
        let fields: [Field; 7] = fields
            .try_into()
            .map_err(|_| ScheduleError("internal: field count".into()))?;
        Ok(Schedule { fields })
    }

    /// Whether the UTC time `t` falls into the schedule.
    pub fn matches(&self, t: &DateTime<Utc>) -> bool {
        let year = match u32::try_from(t.year()) {
            Ok(y) => y,
            Err(_) => return false,
        };
        let dow = t.weekday().num_days_from_sunday();
        // chrono reports a leap second as second 59 with nanoseconds >= 1e9.
        let values = [
            t.second(),
            t.minute(),
            t.hour(),
            t.day(),
            t.month(),
            dow,
            year,
        ];
        for (i, (field, v)) in self.fields.iter().zip(values).enumerate() {
            let ok = if i == 5 {
                field.matches(v) || (v == 0 && field.matches(7))
            } else {
                field.matches(v)
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

impl Field {
    // `u32::is_multiple_of` is newer than the workspace's rust-version (1.80).
    #[allow(clippy::manual_is_multiple_of)]
    fn matches(&self, v: u32) -> bool {
        self.elements
            .iter()
            .any(|e| v >= e.lo && v <= e.hi && (v - e.lo) % e.step == 0)
    }
}

fn parse_field(s: &str, (min, max): (u32, u32)) -> Result<Field, String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    let mut elements = Vec::new();
    for item in s.split(',') {
        if item.is_empty() {
            return Err("empty list element".into());
        }
        let (range, step) = match item.split_once('/') {
            Some((r, st)) => {
                let step = number(st)?;
                if step == 0 {
                    return Err("step 0".into());
                }
                (r, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(format!("range {a}-{b} is reversed"));
            }
            (a, b)
        } else {
            if step.is_some() {
                return Err("a step needs a range or '*'".into());
            }
            let a = number(range)?;
            (a, a)
        };
        if lo < min || hi > max {
            return Err(format!("outside {min}-{max}"));
        }
        elements.push(Element {
            lo,
            hi,
            step: step.unwrap_or(1),
        });
    }
    Ok(Field { elements })
}

/// A decimal number of at most 4 digits (every field fits), digits only.
fn number(s: &str) -> Result<u32, String> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a number"));
    }
    s.parse::<u32>()
        .map_err(|_| format!("'{s}' is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn matching_table() {
        // 2024-06-03 is a Monday; 2024-06-02 a Sunday.
        let cases: &[(&str, DateTime<Utc>, bool)] = &[
            ("* * * * * * *", t(2024, 6, 3, 12, 0, 0), true),
            // Window 02:00:00-02:05:59 every day: its edges.
            ("* 0-5 2 * * * *", t(2024, 6, 3, 1, 59, 59), false),
            ("* 0-5 2 * * * *", t(2024, 6, 3, 2, 0, 0), true),
            ("* 0-5 2 * * * *", t(2024, 6, 3, 2, 5, 59), true),
            ("* 0-5 2 * * * *", t(2024, 6, 3, 2, 6, 0), false),
            // TS-0004 example 1.
            ("* 0-5 2,6,10 * * * *", t(2024, 6, 3, 6, 3, 0), true),
            ("* 0-5 2,6,10 * * * *", t(2024, 6, 3, 7, 3, 0), false),
            // Office hours 08:00:00-17:59:59, Monday to Friday.
            ("* * 8-17 * * 1-5 *", t(2024, 6, 3, 7, 59, 59), false),
            ("* * 8-17 * * 1-5 *", t(2024, 6, 3, 8, 0, 0), true),
            ("* * 8-17 * * 1-5 *", t(2024, 6, 3, 17, 59, 59), true),
            ("* * 8-17 * * 1-5 *", t(2024, 6, 3, 18, 0, 0), false),
            ("* * 8-17 * * 1-5 *", t(2024, 6, 2, 12, 0, 0), false), // Sunday
            ("* * 8-17 * * 1-5 *", t(2024, 6, 8, 12, 0, 0), false), // Saturday
            ("* * 8-17 * * 1-5 *", t(2024, 6, 7, 12, 0, 0), true),  // Friday
            // Sunday as 0 and as 7.
            ("* * * * * 0 *", t(2024, 6, 2, 0, 0, 0), true),
            ("* * * * * 7 *", t(2024, 6, 2, 0, 0, 0), true),
            ("* * * * * 7 *", t(2024, 6, 3, 0, 0, 0), false),
            ("* * * * * 6-7 *", t(2024, 6, 2, 0, 0, 0), true),
            // Steps: every other hour (TS-0004 example 3), every 15 s, a stepped range.
            ("* * 0-23/2 * * * *", t(2024, 6, 3, 4, 30, 0), true),
            ("* * 0-23/2 * * * *", t(2024, 6, 3, 5, 30, 0), false),
            ("*/15 * * * * * *", t(2024, 6, 3, 5, 30, 45), true),
            ("*/15 * * * * * *", t(2024, 6, 3, 5, 30, 46), false),
            ("* 10-50/20 * * * * *", t(2024, 6, 3, 5, 30, 0), true),
            ("* 10-50/20 * * * * *", t(2024, 6, 3, 5, 50, 0), true),
            ("* 10-50/20 * * * * *", t(2024, 6, 3, 5, 40, 0), false),
            ("* 10-50/20 * * * * *", t(2024, 6, 3, 5, 0, 0), false),
            // Day of the month AND day of the week (no Vixie OR).
            ("* * * 3 * 0 *", t(2024, 6, 3, 0, 0, 0), false),
            ("* * * 3 * 1 *", t(2024, 6, 3, 0, 0, 0), true),
            // Month and year.
            ("* * * * 6 * 2024", t(2024, 6, 3, 0, 0, 0), true),
            ("* * * * 6 * 2025", t(2024, 6, 3, 0, 0, 0), false),
            ("* * * * 1-5,7-12 * *", t(2024, 6, 3, 0, 0, 0), false),
            // A single second.
            ("30 15 10 1 1 * 2030", t(2030, 1, 1, 10, 15, 30), true),
            ("30 15 10 1 1 * 2030", t(2030, 1, 1, 10, 15, 31), false),
            // Extra white space is fine.
            ("  *\t* *  * * * *  ", t(2024, 6, 3, 0, 0, 0), true),
        ];
        for (entry, time, want) in cases {
            let s = Schedule::parse(entry).unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!(s.matches(time), *want, "{entry} at {time}");
        }
    }

    #[test]
    fn years_outside_the_range_never_match() {
        let s = Schedule::parse("* * * * * * *").unwrap();
        assert!(!s.matches(&t(1969, 12, 31, 23, 59, 59)));
        assert!(s.matches(&t(1970, 1, 1, 0, 0, 0)));
    }

    #[test]
    fn malformed_entries() {
        let bad = [
            "",
            "* * * * * *",
            "* * * * * * * *",
            "60 * * * * * *",
            "* 60 * * * * *",
            "* * 24 * * * *",
            "* * * 0 * * *",
            "* * * 32 * * *",
            "* * * * 0 * *",
            "* * * * 13 * *",
            "* * * * * 8 *",
            "* * * * * * 1969",
            "* * * * * * 10000",
            "* * * * * * 99999999999",
            "5-1 * * * * * *",
            "*/0 * * * * * *",
            "1/2 * * * * * *",
            "a * * * * * *",
            "-1 * * * * * *",
            "+1 * * * * * *",
            "1, * * * * * *",
            ",1 * * * * * *",
            "1-2-3 * * * * * *",
            "*/2/3 * * * * * *",
            "** * * * * * *",
            "1-* * * * * * *",
            "MON * * * * * *",
            "* * * * * MON *",
            "٣ * * * * * *",
        ];
        for b in bad {
            assert!(Schedule::parse(b).is_err(), "{b:?} should be rejected");
        }
    }
}
