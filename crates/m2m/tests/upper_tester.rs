//! The Upper Tester interface of conformance testing (TS-0019, `POST /__ut__`) on a real `m2m cse`:
//! served only when configured, only on a trusted loopback listener; its commands change what a
//! conformance suite needs changed (the lifetime of `<request>` resources, the wait of polls) and
//! nothing else.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn ut(cse: &CseProcess, cmd: &str) -> Resp {
    raw("POST", cse.url(), "/__ut__", &[("X-M2M-UTCMD", cmd)], b"")
}

fn start_with_ut() -> CseProcess {
    CseProcess::start_temp("[http]\noriginators = \"trusted\"\nupper_tester = true\n")
}

#[test]
fn status_and_configuration_are_answered() {
    let cse = start_with_ut();
    let r = ut(&cse, "Status");
    assert_eq!((r.status, r.rsc), (200, 2000), "{:?}", r.body);
    assert_eq!(
        r.headers.get("x-m2m-utrsp").map(String::as_str),
        Some("RUNNING")
    );
    for (key, want) in [
        ("cse.type", "IN"),
        ("cse.cseID", "/id-in"),
        ("cse.resourceName", "cse-in"),
        ("cse.security.enableDynamicAuthorization", "false"),
    ] {
        let r = ut(&cse, &format!("GetConfig {key}"));
        assert_eq!(r.status, 200, "{key}");
        assert_eq!(
            r.headers.get("x-m2m-utrsp").map(String::as_str),
            Some(want),
            "{key}"
        );
    }
    // Commands are case-insensitive; anything unknown, or without its argument, is refused.
    assert_eq!(ut(&cse, "status").status, 200);
    // A page from elsewhere whose name was rebound to 127.0.0.1 sends its own Host: not served.
    let r = raw(
        "POST",
        cse.url(),
        "/__ut__",
        &[("X-M2M-UTCMD", "Status"), ("Host", "evil.example")],
        b"",
    );
    assert!(!r.headers.contains_key("x-m2m-utrsp"), "{:?}", r.body);
    // A command that is not text is refused by the interface, not taken for a oneM2M request.
    // (ureq refuses to send such a header: written by hand.)
    let addr = cse.url().trim_start_matches("http://").to_owned();
    let mut tcp = std::net::TcpStream::connect(&addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut head = b"POST /__ut__ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-M2M-UTCMD: St".to_vec();
    head.extend_from_slice(&[0xE4]);
    head.extend_from_slice(b"tus\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    std::io::Write::write_all(&mut tcp, &head).expect("send");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut tcp, &mut answer);
    let r = parse_http_response(&answer).expect("an HTTP response");
    assert_eq!((r.status, r.rsc), (400, 4000), "{:?}", r.body);
    for bad in [
        "Reset",
        "GetConfig cse.security.secret",
        "enableShortResourceExpiration",
        "enableShortResourceExpiration 0",
        "enableShortRequestExpiration -3",
        "enableShortRequestExpiration 99999",
        "enableShortRequestExpiration 11",
        "enableShortResourceExpiration 61",
    ] {
        let r = ut(&cse, bad);
        assert_eq!((r.status, r.rsc), (400, 4000), "{bad}");
    }
}

/// enableShortResourceExpiration: a `<request>` of a non-blocking request lives that long
/// (instead of 60 s) unless the request says otherwise; disable restores the default.
#[test]
fn short_resource_expiration_shortens_request_resources() {
    let cse = start_with_ut();
    let r = ut(&cse, "enableShortResourceExpiration 2");
    assert_eq!(r.status, 200);
    let answer = r.headers.get("x-m2m-utrsp").cloned().unwrap_or_default();
    assert!(answer.starts_with("1,"), "{answer}");
    let nb = get_with_query_full(cse.url(), "/cse-in", "CAdmin", "rt=1");
    assert_eq!(nb.rsc, 1001, "{:?}", nb.body);
    let req = nb.body["m2m:uri"]
        .as_str()
        .expect("request reference")
        .to_owned();
    let (rsc, b) = retrieve(cse.url(), &format!("/{req}"), "CAdmin");
    assert_eq!(rsc, 2000, "{b}");
    let gone = poll(Duration::from_secs(8), || {
        (retrieve(cse.url(), &format!("/{req}"), "CAdmin").0 == 4004).then_some(())
    });
    assert!(gone.is_some(), "the <request> expired within seconds");
    assert_eq!(ut(&cse, "disableShortResourceExpiration").status, 200);
    let nb = get_with_query_full(cse.url(), "/cse-in", "CAdmin", "rt=1");
    let req = nb.body["m2m:uri"]
        .as_str()
        .expect("request reference")
        .to_owned();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(retrieve(cse.url(), &format!("/{req}"), "CAdmin").0, 2000);
}

/// enableShortRequestExpiration: a long poll without a Request Expiration Timestamp ends (4008)
/// after that many seconds instead of 10.
#[test]
fn short_request_expiration_shortens_polls() {
    let cse = start_with_ut();
    let ae = register_ae(cse.url(), "/cse-in", "Cpoll", "poller", &[]);
    let (rsc, b) = create(
        cse.url(),
        "/cse-in/poller",
        &ae,
        15,
        json!({ "m2m:pch": { "rn": "pch" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(ut(&cse, "enableShortRequestExpiration 1").status, 200);
    let started = Instant::now();
    let (rsc, b) = retrieve(cse.url(), "/cse-in/poller/pch/pcu", &ae);
    assert_eq!(rsc, 4008, "{b}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

/// Off unless configured: `/__ut__` is then an ordinary (unknown) resource, and the CSE does not
/// act on the command.
#[test]
fn without_the_setting_there_is_no_upper_tester() {
    let cse = CseProcess::start_in();
    let r = ut(&cse, "Status");
    assert_ne!(r.status, 200, "{:?}", r.body);
    assert!(!r.headers.contains_key("x-m2m-utrsp"));
    let r = raw(
        "POST",
        cse.url(),
        "/__ut__",
        &[
            ("X-M2M-UTCMD", "enableShortRequestExpiration 1"),
            ("X-M2M-Origin", "CAdmin"),
            ("X-M2M-RI", "ut-1"),
            ("X-M2M-RVI", "3"),
        ],
        b"",
    );
    assert!(!r.headers.contains_key("x-m2m-utrsp"), "{:?}", r.body);
}

/// Only where every local process is the admin anyway: an anonymous listener (or one off
/// loopback) with the interface does not start.
#[test]
fn the_interface_needs_a_trusted_loopback_listener() {
    let (ok, _out, err) = cse_exit(
        "[http]\nlisten = \"127.0.0.1:0\"\noriginators = \"anonymous\"\nupper_tester = true\n",
        0o600,
    );
    assert!(!ok, "{err}");
    assert!(err.contains("upper_tester"), "{err}");
    let (ok, _out, err) = cse_exit(
        "[http]\nlisten = \"0.0.0.0:0\"\nallow_insecure = true\noriginators = \"trusted\"\nupper_tester = true\n",
        0o600,
    );
    assert!(!ok, "{err}");
    assert!(err.contains("upper_tester"), "{err}");
}
