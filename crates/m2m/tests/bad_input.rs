//! Bad input over HTTP to a real `m2m cse`: every case is answered with its oneM2M status code, the
//! HTTP status of TS-0009 clause 6.6, and a non-empty `m2m:dbg`; none of them harms the server.

mod common;

use common::*;
use serde_json::json;

const ORIGIN: &str = "Cbad";
const ADMIN: &str = "CAdmin";
const MAX_BODY: usize = 2048;

/// One bad request and what it must be answered with.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Acceptable X-M2M-RSC values (the first is the preferred one).
    rsc: &'static [u16],
    /// Acceptable HTTP statuses.
    http: &'static [u16],
}

/// Standard headers: origin, RI, RVI 3, and a JSON content type with `ty` when given.
fn std_headers(ty: Option<&str>, with_body: bool) -> Vec<(String, String)> {
    let mut h = vec![
        ("X-M2M-Origin".to_owned(), ORIGIN.to_owned()),
        ("X-M2M-RI".to_owned(), rqi()),
        ("X-M2M-RVI".to_owned(), "3".to_owned()),
    ];
    match ty {
        Some(ty) => h.push((
            "Content-Type".to_owned(),
            format!("application/json;ty={ty}"),
        )),
        None if with_body => h.push(("Content-Type".to_owned(), "application/json".to_owned())),
        None => {}
    }
    h
}

fn without(mut h: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    h.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    h
}

fn with(mut h: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    h.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    h.push((name.to_owned(), value.to_owned()));
    h
}

fn create_case(
    name: &'static str,
    path: &str,
    ty: &str,
    body: serde_json::Value,
    rsc: &'static [u16],
    http: &'static [u16],
) -> Case {
    Case {
        name,
        method: "POST",
        path: path.to_owned(),
        headers: std_headers(Some(ty), true),
        body: body.to_string().into_bytes(),
        rsc,
        http,
    }
}

fn update_case(
    name: &'static str,
    path: &str,
    body: serde_json::Value,
    rsc: &'static [u16],
    http: &'static [u16],
) -> Case {
    Case {
        name,
        method: "PUT",
        path: path.to_owned(),
        headers: std_headers(None, true),
        body: body.to_string().into_bytes(),
        rsc,
        http,
    }
}

fn get_case(name: &'static str, path: &str, rsc: &'static [u16], http: &'static [u16]) -> Case {
    Case {
        name,
        method: "GET",
        path: path.to_owned(),
        headers: std_headers(None, false),
        body: Vec::new(),
        rsc,
        http,
    }
}

/// The cases that hold with the request handling as it is.
fn protocol_cases() -> Vec<Case> {
    let app = "/cse-in/app";
    let cnt = "/cse-in/app/c";
    vec![
        Case {
            name: "malformed JSON",
            body: br#"{"m2m:cnt": {"rn": "x""#.to_vec(),
            ..create_case("", app, "3", json!({}), &[4000], &[400])
        },
        create_case(
            "missing mandatory attribute (AE without api)",
            "/cse-in",
            "2",
            json!({ "m2m:ae": { "rn": "noapi", "rr": false, "srv": ["3"] } }),
            &[4000],
            &[400],
        ),
        Case {
            name: "body larger than max_body_bytes",
            body: json!({ "m2m:cin": { "con": "x".repeat(MAX_BODY * 2) } })
                .to_string()
                .into_bytes(),
            ..create_case("", cnt, "4", json!({}), &[4000], &[400])
        },
        create_case(
            "unknown resource type ty=777",
            app,
            "777",
            json!({ "m2m:cnt": {} }),
            &[4000],
            &[400],
        ),
        create_case(
            "resource type not implemented ty=12",
            app,
            "12",
            json!({ "m2m:mgc": {} }),
            &[5001],
            &[501],
        ),
        create_case(
            "an AEContactList is never created by a request ty=43",
            "/cse-in",
            "43",
            json!({ "m2m:aecl": {} }),
            &[4005],
            &[405],
        ),
        create_case(
            "nor its per-CSE entries ty=44",
            "/cse-in",
            "44",
            json!({ "m2m:aeclp": {} }),
            &[4005],
            &[405],
        ),
        create_case(
            "flexContainer specialization unknown",
            app,
            "28",
            json!({ "m2m:fcnt": { "cnd": "org.example.none" } }),
            &[4125],
            &[501],
        ),
        create_case(
            "resource type that is not a number",
            app,
            "abc",
            json!({ "m2m:cnt": {} }),
            &[4000],
            &[400],
        ),
        get_case(
            "address with a space",
            "/cse-in/a%20b",
            &[4000, 4004],
            &[400, 404],
        ),
        get_case("empty absolute address", "/_/", &[4000, 4004], &[400, 404]),
        get_case(
            "absolute address without CSE",
            "/_/m2m.example.com",
            &[4000, 4004],
            &[400, 404],
        ),
        get_case("non-existent resource", "/cse-in/nothing", &[4004], &[404]),
        get_case(
            "non-existent unstructured resourceID",
            "/cnt000000000000",
            &[4004],
            &[404],
        ),
        get_case(
            "la of a resource that is no container",
            "/cse-in/app/la",
            &[4004],
            &[404],
        ),
        Case {
            name: "missing X-M2M-RI",
            headers: without(std_headers(None, false), "X-M2M-RI"),
            ..get_case("", app, &[4000], &[400])
        },
        Case {
            name: "missing X-M2M-Origin on a retrieve",
            headers: without(std_headers(None, false), "X-M2M-Origin"),
            ..get_case("", app, &[4000], &[400])
        },
        Case {
            name: "originator with a space",
            headers: with(std_headers(None, false), "X-M2M-Origin", "C bad"),
            ..get_case("", app, &[4000], &[400])
        },
        Case {
            name: "a content type this CSE does not read",
            headers: with(
                std_headers(Some("3"), true),
                "Content-Type",
                "text/plain;ty=3",
            ),
            body: b"cnt x".to_vec(),
            ..create_case("", app, "3", json!({}), &[4015], &[415])
        },
        Case {
            name: "body without content type",
            headers: without(std_headers(Some("3"), true), "Content-Type"),
            ..create_case(
                "",
                app,
                "3",
                json!({ "m2m:cnt": {} }),
                &[4015, 4000],
                &[415, 400],
            )
        },
        create_case(
            "name conflict",
            app,
            "3",
            json!({ "m2m:cnt": { "rn": "c" } }),
            &[4105],
            &[409],
        ),
        create_case(
            "invalid child type (contentInstance under an AE)",
            app,
            "4",
            json!({ "m2m:cin": { "con": "x" } }),
            &[4108],
            &[403],
        ),
        create_case(
            "invalid child type (AE under a container)",
            cnt,
            "2",
            json!({ "m2m:ae": { "api": "Nx", "rr": false, "srv": ["3"] } }),
            &[4108],
            &[403],
        ),
        create_case(
            "wrong root element (m2m:ae with ty=3)",
            app,
            "3",
            json!({ "m2m:ae": { "rn": "wrong" } }),
            &[4000],
            &[400],
        ),
        create_case(
            "two root elements",
            app,
            "3",
            json!({ "m2m:cnt": {}, "m2m:ae": {} }),
            &[4000],
            &[400],
        ),
        create_case(
            "content that is no object",
            app,
            "3",
            json!(["m2m:cnt"]),
            &[4000],
            &[400],
        ),
        create_case(
            "expirationTime in the past",
            app,
            "3",
            json!({ "m2m:cnt": { "rn": "old", "et": "20000101T000000" } }),
            &[4000],
            &[400],
        ),
        create_case(
            "expirationTime that is no timestamp",
            app,
            "3",
            json!({ "m2m:cnt": { "rn": "bad-et", "et": "tomorrow" } }),
            &[4000],
            &[400],
        ),
        Case {
            name: "unsupported release version",
            headers: with(std_headers(None, false), "X-M2M-RVI", "99"),
            ..get_case("", app, &[4001], &[501, 400])
        },
        Case {
            name: "PATCH method",
            method: "PATCH",
            ..update_case(
                "",
                cnt,
                json!({ "m2m:cnt": { "lbl": ["x"] } }),
                &[4005],
                &[405],
            )
        },
        get_case(
            "rcn not valid for a retrieve (rcn=9)",
            &format!("{app}?rcn=9"),
            &[4000],
            &[400],
        ),
        get_case(
            "unknown query parameter",
            &format!("{app}?bogus=1"),
            &[4000],
            &[400],
        ),
        get_case(
            "bad filter value (lim=-1)",
            &format!("{app}?fu=1&lim=-1"),
            &[4000],
            &[400],
        ),
        Case {
            name: "CREATE without content",
            body: Vec::new(),
            ..create_case("", app, "3", json!({}), &[4000], &[400])
        },
        update_case(
            "update of a contentInstance",
            "/cse-in/app/c/la",
            json!({ "m2m:cin": { "con": "y" } }),
            &[4005],
            &[405],
        ),
        // An UPDATE without content is malformed whatever it targets, even a type that is
        // never updated (TS-0004 table 7.2.1.1-1: Content is mandatory).
        Case {
            name: "UPDATE without content of a container",
            body: Vec::new(),
            ..update_case("", cnt, json!({}), &[4000], &[400])
        },
        Case {
            name: "UPDATE without content of a contentInstance",
            body: Vec::new(),
            ..update_case("", "/cse-in/app/c/la", json!({}), &[4000], &[400])
        },
        Case {
            name: "UPDATE without content of the CSEBase, by the admin",
            body: Vec::new(),
            headers: with(std_headers(None, true), "X-M2M-Origin", ADMIN),
            ..update_case("", "/cse-in", json!({}), &[4000], &[400])
        },
        // Even the admin, who may do everything, cannot delete the CSEBase.
        Case {
            name: "delete of the CSEBase",
            method: "DELETE",
            headers: with(std_headers(None, false), "X-M2M-Origin", ADMIN),
            ..get_case("", "/cse-in", &[4005], &[405])
        },
        // A registered AE has no privileges on a CSEBase without accessControlPolicyIDs other
        // than RETRIEVE.
        Case {
            name: "delete of the CSEBase by an AE",
            method: "DELETE",
            ..get_case("", "/cse-in", &[4103], &[403])
        },
        create_case(
            "App-ID not starting with R or N",
            "/cse-in",
            "2",
            json!({ "m2m:ae": { "rn": "x", "api": "app", "rr": false, "srv": ["3"] } }),
            &[4000],
            &[400],
        ),
    ]
}

/// The cases of attribute validation against the resource schemas (TS-0004 clause 7.3.3.x:
/// wrong types, unknown and read-only attributes are BAD_REQUEST).
fn schema_cases() -> Vec<Case> {
    let app = "/cse-in/app";
    let cnt = "/cse-in/app/c";
    vec![
        create_case(
            "wrong attribute type (mni \"x\")",
            app,
            "3",
            json!({ "m2m:cnt": { "rn": "t1", "mni": "x" } }),
            &[4000],
            &[400],
        ),
        create_case(
            "wrong attribute type (lbl a string)",
            app,
            "3",
            json!({ "m2m:cnt": { "rn": "t2", "lbl": "one" } }),
            &[4000],
            &[400],
        ),
        create_case(
            "unknown attribute",
            app,
            "3",
            json!({ "m2m:cnt": { "rn": "t3", "bogus": 1 } }),
            &[4000],
            &[400],
        ),
        create_case(
            "read-only attribute on create (cni)",
            app,
            "3",
            json!({ "m2m:cnt": { "rn": "t4", "cni": 5 } }),
            &[4000],
            &[400],
        ),
        update_case(
            "read-only attribute in update (ri)",
            cnt,
            json!({ "m2m:cnt": { "ri": "cnt123" } }),
            &[4000],
            &[400],
        ),
        update_case(
            "read-only attribute in update (ct)",
            cnt,
            json!({ "m2m:cnt": { "ct": "20200101T000000" } }),
            &[4000],
            &[400],
        ),
        update_case(
            "wrong attribute type in update (mni \"x\")",
            cnt,
            json!({ "m2m:cnt": { "mni": "x" } }),
            &[4000],
            &[400],
        ),
        update_case(
            "unknown attribute in update",
            cnt,
            json!({ "m2m:cnt": { "bogus": true } }),
            &[4000],
            &[400],
        ),
    ]
}

fn start() -> CseProcess {
    let cse = CseProcess::start_temp(&format!("[http]\nmax_body_bytes = {MAX_BODY}\n"));
    let u = cse.url();
    register_ae(u, "/cse-in", ORIGIN, "app", &[]);
    create_cnt(u, "/cse-in/app", ORIGIN, json!({ "rn": "c" }));
    create_cin(u, "/cse-in/app/c", ORIGIN, "v");
    cse
}

/// Sends every case; returns the descriptions of the cases that were not answered as required.
fn run(cse: &CseProcess, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let headers: Vec<(&str, &str)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = match try_raw(c.method, cse.url(), &c.path, &headers, &c.body) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: transport error {e}", c.name));
                continue;
            }
        };
        let mut why = Vec::new();
        if !c.rsc.contains(&r.rsc) {
            why.push(format!("X-M2M-RSC {} (expected {:?})", r.rsc, c.rsc));
        }
        if !c.http.contains(&r.status) {
            why.push(format!("HTTP {} (expected {:?})", r.status, c.http));
        }
        if r.dbg().is_none_or(|d| d.trim().is_empty()) {
            why.push("no non-empty m2m:dbg".to_owned());
        }
        let sent_ri = c
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("X-M2M-RI"))
            .map(|(_, v)| v.as_str());
        if let Some(ri) = sent_ri {
            if r.header("x-m2m-ri") != Some(ri) {
                why.push(format!(
                    "X-M2M-RI {:?} not echoed (sent {ri})",
                    r.header("x-m2m-ri")
                ));
            }
        }
        if !why.is_empty() {
            failures.push(format!("{}: {} — body {}", c.name, why.join("; "), r.body));
        }
    }
    failures
}

/// Whether the CSE still runs and answers, and the bad requests left the tree unchanged.
fn still_serving(cse: &mut CseProcess) -> Result<(), String> {
    if !cse.is_running() {
        return Err(format!("the CSE process died:\n{}", cse.stderr()));
    }
    let (rsc, b) = retrieve(cse.url(), "/cse-in", ORIGIN);
    if rsc != 2000 {
        return Err(format!("the CSEBase answers {rsc}: {b}"));
    }
    let (rsc, b) = retrieve(cse.url(), "/cse-in/app/c", ORIGIN);
    if rsc != 2000 || b["m2m:cnt"]["cni"] != json!(1) {
        return Err(format!("the container changed: {rsc} {b}"));
    }
    let r = create_full(
        cse.url(),
        "/cse-in/app/c",
        ORIGIN,
        4,
        json!({ "m2m:cin": { "con": "still-working" } }),
    );
    if r.rsc != 2001 {
        return Err(format!(
            "creating a contentInstance afterwards: {} {}",
            r.rsc, r.body
        ));
    }
    Ok(())
}

fn check(what: &str, failures: Vec<String>, serving: Result<(), String>) {
    let mut msg = String::new();
    if !failures.is_empty() {
        msg.push_str(&format!(
            "{} {what} were not answered as required:\n  {}\n",
            failures.len(),
            failures.join("\n  ")
        ));
    }
    if let Err(e) = serving {
        msg.push_str(&format!("after the {what}: {e}\n"));
    }
    assert!(msg.is_empty(), "{msg}");
}

#[test]
fn bad_requests_get_their_status_codes() {
    let mut cse = start();
    let failures = run(&cse, &protocol_cases());
    let serving = still_serving(&mut cse);
    check("bad inputs", failures, serving);
}

#[test]
fn attribute_validation_against_the_schemas() {
    let mut cse = start();
    let failures = run(&cse, &schema_cases());
    let serving = still_serving(&mut cse);
    check("bad attributes", failures, serving);
}

#[test]
fn garbage_on_the_socket_does_not_harm_the_server() {
    use std::io::{Read, Write};
    let mut cse = start();
    let addr = cse.url().trim_start_matches("http://").to_owned();
    for junk in [
        &b"\x00\x01\x02\x03garbage\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /cse-in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /cse-in HTTP/1.1\r\n",
    ] {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(500)));
            let _ = s.write_all(junk);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    }
    // A body that is valid JSON but deeply nested.
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let ri = rqi();
    let _ = try_raw(
        "POST",
        cse.url(),
        "/cse-in/app",
        &[
            ("X-M2M-Origin", ORIGIN),
            ("X-M2M-RI", &ri),
            ("Content-Type", "application/json;ty=3"),
        ],
        deep.as_bytes(),
    );
    check("garbage inputs", Vec::new(), still_serving(&mut cse));
}
