//! Freshness of stored end-to-end objects (project decision: TS-0003 clause 8.5.3 gives ESData, and
//! seeds/001 clause 5.1 gives group credentials, no time or version). A writer puts its time (and a
//! credential's issuer a version) inside the protected part; a reader checks the time against its
//! own clock and remembers the newest it accepted per scope, so a stored object re-posted later (a
//! replay by anyone who may write the container) is refused.

use chrono::{DateTime, Duration, Utc};
use m2m_core::{M2mError, ResponseStatusCode as Rsc};
use std::fmt::Display;

/// How far ahead of the reader's clock an object's time may be. Beyond it the writer's clock is
/// wrong; accepting such a time would make a reader that remembers the newest refuse everything
/// the writer sends until its clock catches up.
pub const MAX_CLOCK_AHEAD: Duration = Duration::minutes(5);

/// Microseconds since the Unix epoch: the unit of the times and versions these objects carry.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The time of a microsecond count; `None` outside chrono's range.
pub fn from_micros(us: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
}

fn stale(what: &str, why: String) -> M2mError {
    M2mError::new(Rsc::OriginatorNotAuthenticated, format!("{what}: {why}"))
}

/// Refuses a time more than [`MAX_CLOCK_AHEAD`] ahead of `now` and, with `max_age`, one older
/// than `max_age`. `what` starts the reason ("ESData content rejected").
pub fn check_age(
    what: &str,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    max_age: Option<Duration>,
) -> Result<(), M2mError> {
    if at - now > MAX_CLOCK_AHEAD {
        return Err(stale(
            what,
            format!(
                "it is dated {}, ahead of this reader's clock ({}) by more than {} s",
                m2m_core::time::format(at),
                m2m_core::time::format(now),
                MAX_CLOCK_AHEAD.num_seconds()
            ),
        ));
    }
    match max_age {
        Some(max) if now - at > max => Err(stale(
            what,
            format!(
                "it is dated {}, older than the maximum age of {} s",
                m2m_core::time::format(at),
                max.num_seconds()
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses `value` unless it is strictly newer than `newest`, the newest already accepted in
/// the same scope (`scope` names it in the reason: "from Cgw in /id-mn/cse-mn/gw/sensor1").
pub fn check_newer<T: Ord + Display>(
    what: &str,
    value: T,
    newest: Option<T>,
    scope: &str,
) -> Result<(), M2mError> {
    match newest {
        Some(n) if value <= n => Err(stale(
            what,
            format!(
                "replayed or out of order: {value} is not newer than {n}, already accepted {scope}"
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ages_and_clock_skew() {
        let now = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap();
        let hour = Some(Duration::hours(1));
        assert!(check_age("x", now - Duration::minutes(59), now, hour).is_ok());
        let e = check_age("x", now - Duration::minutes(61), now, hour).unwrap_err();
        assert_eq!(e.rsc, Rsc::OriginatorNotAuthenticated);
        assert!(
            e.dbg.contains("older than the maximum age of 3600 s"),
            "{e}"
        );
        // Without a maximum age any past time passes; the future never beyond the skew.
        assert!(check_age("x", now - Duration::days(400), now, None).is_ok());
        assert!(check_age("x", now + Duration::minutes(4), now, None).is_ok());
        let e = check_age("x", now + Duration::minutes(6), now, hour).unwrap_err();
        assert!(e.dbg.contains("ahead of this reader's clock"), "{e}");
    }

    #[test]
    fn only_strictly_newer_values_pass() {
        assert!(check_newer("x", 5u64, None, "in g").is_ok());
        assert!(check_newer("x", 6u64, Some(5), "in g").is_ok());
        for old in [5u64, 4, 0] {
            let e = check_newer("x", old, Some(5), "in g").unwrap_err();
            assert!(e.dbg.contains("replayed or out of order"), "{e}");
            assert!(e.dbg.contains("in g"), "{e}");
        }
    }

    #[test]
    fn micros_round_trip() {
        let t = Utc.timestamp_micros(1_718_000_000_123_456).unwrap();
        assert_eq!(micros(t), 1_718_000_000_123_456);
        assert_eq!(from_micros(micros(t)), Some(t));
        assert_eq!(from_micros(i64::MAX), None);
    }
}
