//! The Upper Tester interface of conformance testing (TS-0019): a test system drives the CSE
//! under test through `POST /__ut__` with an `X-M2M-UTCMD` header, and reads the answer in
//! `X-M2M-UTRSP`. Off by default; `http.upper_tester = true` serves it on the plain listener only
//! when that listener is on loopback and trusted (every local process is the admin there anyway),
//! so it never widens what a remote peer can do.
//!
//! Commands (case-insensitive):
//! - `Status`: `RUNNING`.
//! - `GetConfig <key>`: `cse.type` (IN, MN, ASN), `cse.cseID`, `cse.resourceName`, `cse.spID`,
//!   `cse.security.enableDynamicAuthorization` (false: not implemented here).
//! - `enableShortResourceExpiration <s>` (1 to 60): `<request>` resources live `<s>` seconds
//!   unless the request asks otherwise (instead of 60); answers `<check interval>,<max expiration>` in
//!   seconds (expired resources are swept every second, whatever the command says).
//!   `disableShortResourceExpiration` restores the default.
//! - `enableShortRequestExpiration <s>` (1 to 10): a poll of a `<pollingChannel>` and a request
//!   waiting in one wait `<s>` seconds when they name no Request Expiration Timestamp (instead of
//!   10);
//!   `disableShortRequestExpiration` restores the default.
//! - `testCaseStart <name>`, `testCaseEnd <name>`: a log line.
//!
//! Anything else, or a command without its argument, is answered 400 with `X-M2M-RSC: 4000`.

use crate::cse::Cse;

/// The request path of the interface.
pub const PATH: &str = "/__ut__";

/// The longest `<request>` lifetime a command may set: the default it shortens (60 s).
const MAX_REQUEST_LIFETIME_SECS: u64 = 60;

/// The longest poll or delivery wait a command may set: the default it shortens (10 s), so that
/// no command makes a sender wait longer than it would anyway.
const MAX_POLL_WAIT_SECS: u64 = 10;

/// Whether an HTTP Host names this machine's loopback (`localhost`, `127.x.x.x`, `[::1]`, with
/// or without a port): a page a browser loaded from elsewhere that rebinds its own name to
/// 127.0.0.1 still sends its own name, and does not get the interface.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A refused command: its reason, for `X-M2M-UTRSP`.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub String);

/// Runs one command line; the answer (possibly empty) goes to `X-M2M-UTRSP`.
pub fn run(cse: &Cse, line: &str) -> Result<String, Refused> {
    let (cmd, arg) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
    let arg = arg.trim();
    let overrides = &cse.testing;
    match cmd.to_ascii_lowercase().as_str() {
        "status" => Ok("RUNNING".into()),
        "getconfig" => config_value(cse, arg),
        "enableshortresourceexpiration" => {
            let s = seconds(arg, MAX_REQUEST_LIFETIME_SECS)?;
            overrides.shorten_request_lifetime(s);
            tracing::info!(target: "audit", seconds = s, "upper tester: <request> lifetime shortened");
            Ok(format!("1,{}", cse.cfg.limits.max_expiration_secs))
        }
        "disableshortresourceexpiration" => {
            overrides.shorten_request_lifetime(0);
            Ok(String::new())
        }
        "enableshortrequestexpiration" => {
            let s = seconds(arg, MAX_POLL_WAIT_SECS)?;
            overrides.shorten_poll_wait(s);
            tracing::info!(target: "audit", seconds = s, "upper tester: polling waits shortened");
            Ok(s.to_string())
        }
        "disableshortrequestexpiration" => {
            overrides.shorten_poll_wait(0);
            Ok(String::new())
        }
        "testcasestart" | "testcaseend" => {
            tracing::info!(command = cmd, case = arg, "upper tester");
            Ok(String::new())
        }
        _ => Err(Refused("unknown upper tester command".into())),
    }
}

/// A whole number of seconds, 1 to `max` (fractions are rounded up: a test asking for 2.5 s
/// waits 3, never 0).
fn seconds(arg: &str, max: u64) -> Result<u64, Refused> {
    let refused = || Refused(format!("expects a number of seconds, 1 to {max}"));
    let v: f64 = arg.parse().map_err(|_| refused())?;
    if !v.is_finite() || v <= 0.0 || v > max as f64 {
        return Err(refused());
    }
    Ok(v.ceil() as u64)
}

fn config_value(cse: &Cse, key: &str) -> Result<String, Refused> {
    let id = &cse.id;
    Ok(match key {
        "cse.type" => format!("{:?}", id.role),
        "cse.cseID" => id.cse_id.sp_relative(),
        "cse.resourceName" => id.rn.clone(),
        "cse.spID" => id.sp_id.to_string().trim_start_matches('/').to_owned(),
        "cse.security.enableDynamicAuthorization" => "false".into(),
        _ => return Err(Refused("unknown configuration key".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "localhost.evil",
            "",
            "[::2]:80",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn seconds_are_bounded_and_rounded_up() {
        assert_eq!(seconds("2", 10), Ok(2));
        assert_eq!(seconds("2.5", 10), Ok(3));
        assert_eq!(seconds("0.1", 10), Ok(1));
        assert_eq!(seconds("10", 10), Ok(10));
        for bad in ["", "0", "-1", "x", "NaN", "inf", "10.5", "11", "1e9"] {
            assert!(seconds(bad, 10).is_err(), "{bad}");
        }
    }
}
