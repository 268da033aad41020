//! The request parameters of TS-0004 clause 7.3.2.1 over HTTP (TS-0009 headers and query): an
//! expired Request or Result Expiration Timestamp is 4008 and changes nothing, an Operation
//! Execution Time delays the operation (never runs it early), non-blocking Response Types are
//! refused with their codes instead of being served as blocking, Filter Criteria in a CREATE, a
//! Resource Type on a RETRIEVE and a Result Content the operation does not allow are 4000, and
//! every response carries its Originating Timestamp.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn headers<'a>(extra: &[(&'a str, &'a str)], ri: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("X-M2M-Origin", "CAdmin"),
        ("X-M2M-RI", ri),
        ("X-M2M-RVI", "3"),
        ("Accept", "application/json"),
    ];
    h.extend_from_slice(extra);
    h
}

fn create_cin(base: &str, extra: &[(&str, &str)], query: &str, con: &str) -> Resp {
    let mut h = headers(extra, "cin-req");
    h.push(("Content-Type", "application/json;ty=4"));
    raw(
        "POST",
        base,
        &format!("/cse-in/params/state{query}"),
        &h,
        json!({ "m2m:cin": { "con": con } }).to_string().as_bytes(),
    )
}

fn instances(base: &str) -> u64 {
    let (rsc, body) = retrieve(base, "/cse-in/params/state", "CAdmin");
    assert_eq!(rsc, 2000, "{body}");
    body["m2m:cnt"]["cni"].as_u64().unwrap_or(0)
}

/// A CSE with the AE `params` and its container `state`; the AE's ID.
fn params() -> (CseProcess, String) {
    let cse = CseProcess::start_in();
    let (rsc, body) = create(
        cse.url(),
        "/cse-in",
        "CAdmin",
        2,
        json!({ "m2m:ae": { "rn": "params", "api": "Nparams", "rr": false, "srv": ["3"] } }),
    );
    assert_eq!(rsc, 2001, "{body}");
    let aei = body["m2m:ae"]["aei"].as_str().unwrap().to_owned();
    create_cnt(cse.url(), "/cse-in/params", &aei, json!({ "rn": "state" }));
    (cse, aei)
}

#[test]
fn time_parameters_response_types_and_result_contents() {
    let (cse, _) = params();
    let base = cse.url();

    // Expired timestamps, absolute or relative: 4008, nothing created.
    for (header, value) in [
        ("X-M2M-RET", "20200101T000000"),
        ("X-M2M-RET", "-1000"),
        ("X-M2M-RST", "20200101T000000"),
    ] {
        let r = create_cin(base, &[(header, value)], "", "late");
        assert_eq!(r.rsc, 4008, "{header}: {value}: {:?}", r.body);
        assert!(r.header("X-M2M-OT").is_some(), "an error too has its OT");
    }
    assert_eq!(instances(base), 0, "no expired request created anything");
    let r = create_cin(base, &[("X-M2M-RET", "20991231T000000")], "", "in time");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let r = create_cin(base, &[("X-M2M-RET", "10000")], "", "in time too");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let r = create_cin(base, &[("X-M2M-RET", "next week")], "", "x");
    assert_eq!(r.rsc, 4000, "{:?}", r.body);

    // An Operation Execution Time 1.5 s ahead: the instance is created then, not before.
    let started = Instant::now();
    let r = create_cin(base, &[("X-M2M-OET", "1500")], "", "delayed");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "executed after {:?}",
        started.elapsed()
    );
    let r = create_cin(base, &[("X-M2M-OET", "600000")], "", "too far");
    assert_eq!(r.rsc, 5001, "ten minutes ahead: {:?}", r.body);
    let r = create_cin(
        base,
        &[("X-M2M-OET", "2000"), ("X-M2M-RST", "500")],
        "",
        "result would expire first",
    );
    assert_eq!(r.rsc, 4000, "contradicting parameters: {:?}", r.body);
    let r = create_cin(
        base,
        &[("X-M2M-RET", "20000"), ("X-M2M-RST", "10000")],
        "",
        "result expires before the request",
    );
    assert_eq!(r.rsc, 4000, "RST not later than RET: {:?}", r.body);
    let r = create_cin(
        base,
        &[("X-M2M-OET", "PT2S"), ("X-M2M-RET", "PT1S")],
        "",
        "request would expire first",
    );
    assert_eq!(
        r.rsc, 4000,
        "durations read, then contradicting: {:?}",
        r.body
    );
    // A duration as Operation Execution Time.
    let started = Instant::now();
    let r = create_cin(base, &[("X-M2M-OET", "PT0.5S")], "", "by duration");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Vendor Information comes back as it went.
    let r = create_cin(base, &[("X-M2M-VSI", "vendor-42")], "", "vsi");
    assert_eq!(r.header("x-m2m-vsi"), Some("vendor-42"), "{:?}", r.headers);
    // So does the Result Expiration Timestamp (response primitive, TS-0004 table 7.2.1.2-1).
    let r = create_cin(base, &[("X-M2M-RST", "60000")], "", "rst");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert_eq!(r.header("x-m2m-rst"), Some("60000"), "{:?}", r.headers);
    assert_eq!(instances(base), 6);

    // Response Type: flexBlocking answered blocking (non-blocking and noResponse:
    // tests/non_blocking.rs); not a response type: 4000.
    for (rt, want) in [("4", 2001), ("3", 2001), ("6", 4000), ("99", 4000)] {
        let r = create_cin(base, &[], &format!("?rt={rt}"), "rt");
        assert_eq!(r.rsc, want, "rt={rt}: {:?}", r.body);
    }

    // Filter Criteria in a CREATE; Result Content values outside TS-0001 table 8.1.2-1.
    let r = create_cin(base, &[], "?lbl=a", "fc");
    assert_eq!(r.rsc, 4000, "{:?}", r.body);
    let r = create_cin(base, &[], "?rcn=4", "rcn");
    assert_eq!(r.rsc, 4000, "{:?}", r.body);
    let h = headers(&[], "get");
    for (query, want) in [("?rcn=0", 4000), ("?rcn=2", 4000), ("?rcn=1", 2000)] {
        let r = raw(
            "GET",
            base,
            &format!("/cse-in/params/state{query}"),
            &h,
            b"",
        );
        assert_eq!(r.rsc, want, "RETRIEVE {query}: {:?}", r.body);
        let ot = r
            .header("X-M2M-OT")
            .unwrap_or_else(|| panic!("X-M2M-OT: {query}: {:?}", r.headers));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        assert!(
            ot.len() >= 15 && digits(&ot[..8]) && &ot[8..9] == "T" && digits(&ot[9..15]),
            "an absolute timestamp: {ot}"
        );
    }
    // Parameters TS-0004 table 7.2.1.1-1 does not permit: a Resource Type on a RETRIEVE.
    let mut h = headers(&[], "get-ty");
    h.push(("Content-Type", "application/json;ty=3"));
    let r = raw("GET", base, "/cse-in/params/state", &h, b"");
    assert_eq!(r.rsc, 4000, "ty on a RETRIEVE: {:?}", r.body);
    // rcn 9 on a CREATE: what the CSE set, not what was sent.
    let r = create_cin(base, &[], "?rcn=9", "modified");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let set = r.body["m2m:cin"].as_object().expect("m2m:cin");
    assert!(set.contains_key("ri") && set.contains_key("ct"), "{set:?}");
    assert!(
        !set.contains_key("con"),
        "the content was sent as is: {set:?}"
    );
}

/// Parameters this CSE does not support are refused (TS-0004 clause 7.3.2.1: NOT_IMPLEMENTED),
/// never served as if they were absent: a client asking for Delivery Aggregation, or presenting
/// tokens or roles, learns that they were not applied.
#[test]
fn unsupported_parameters_are_refused_not_ignored() {
    let (cse, _) = params();
    let base = cse.url();
    for query in ["?da=true", "?tqi=true", "?asi=true", "?auri=true"] {
        let r = create_cin(base, &[], query, "x");
        assert_eq!(r.rsc, 5001, "{query}: {:?}", r.body);
    }
    // Role and token IDs are read (role-based access control): one that is not
    // issuerRelativeID@issuerID is bad input, and so are too many.
    let nine = ["r@roles.example.com"; 9].join("+");
    for query in [
        "?tids=tok1".to_owned(),
        "?ltids=9lt".to_owned(),
        format!("?ltids={}", ["l"; 9].join("+")),
        "?rids=role1".to_owned(),
        "?rids=role1@Roles.Example.com".to_owned(),
        "?rids=r%2Fx@roles.example.com".to_owned(),
        format!("?rids={nine}"),
        format!("?tids={nine}"),
    ] {
        let r = create_cin(base, &[], &query, "x");
        assert_eq!(r.rsc, 4000, "{query}: {:?}", r.body);
    }
    assert_eq!(instances(base), 0, "nothing was created");
}

/// An operation delayed by its Operation Execution Time is decided on again when it runs: a
/// DELETE granted for a resource acts on nothing that took its name during the wait, and a
/// grant revoked during the wait no longer holds.
#[test]
fn a_delayed_operation_is_decided_again_when_it_runs() {
    let (cse, owner) = params();
    let base = cse.url().to_owned();
    let other = register_ae(&base, "/cse-in", "Cother", "other", &[]);
    // The owner lets the other AE create and delete in its container.
    let acp = create_acp(
        &base,
        "/cse-in/params",
        &owner,
        "share",
        vec![
            acr(&[&owner], OP_ALL),
            acr(&[&other], OP_CREATE | OP_DELETE | OP_RETRIEVE),
        ],
        vec![acr(&[&owner], OP_ALL)],
    );
    set_acpi(&base, "/cse-in/params/state", &owner, "m2m:cnt", &[&acp]);
    let delayed_delete = |who: &str, path: &str| {
        let (base, who, path) = (base.clone(), who.to_owned(), path.to_owned());
        std::thread::spawn(move || {
            raw(
                "DELETE",
                &base,
                &path,
                &[
                    ("X-M2M-Origin", &who),
                    ("X-M2M-RI", "late-delete"),
                    ("X-M2M-RVI", "3"),
                    ("X-M2M-OET", "2500"),
                ],
                b"",
            )
        })
    };

    // The other AE's instance, deleted late; meanwhile the owner deletes it and makes another
    // resource under the same name, which the late DELETE must not touch.
    let (rsc, b) = create(
        &base,
        "/cse-in/params/state",
        &other,
        3,
        json!({ "m2m:cnt": { "rn": "x", "acpi": [acp] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let late = delayed_delete(&other, "/cse-in/params/state/x");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(delete(&base, "/cse-in/params/state/x", &owner).0, 2002);
    let (rsc, b) = create(
        &base,
        "/cse-in/params/state",
        &owner,
        3,
        json!({ "m2m:cnt": { "rn": "x", "acpi": [] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, _) = create(
        &base,
        "/cse-in/params/state/x",
        &owner,
        4,
        json!({ "m2m:cin": { "con": "the owner's" } }),
    );
    assert_eq!(rsc, 2001);
    let r = late.join().unwrap();
    assert_eq!(r.rsc, 4103, "decided on the new resource: {:?}", r.body);
    let (rsc, b) = retrieve(&base, "/cse-in/params/state/x/la", &owner);
    assert_eq!(rsc, 2000, "the owner's resource and its child survive: {b}");

    // A grant revoked during the wait.
    let (rsc, b) = create(
        &base,
        "/cse-in/params/state",
        &other,
        3,
        json!({ "m2m:cnt": { "rn": "y" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create(
        &base,
        "/cse-in/params/state/y",
        &other,
        3,
        json!({ "m2m:cnt": { "rn": "z", "acpi": [acp] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let late = delayed_delete(&other, "/cse-in/params/state/y/z");
    std::thread::sleep(Duration::from_millis(500));
    let (rsc, b) = update(
        &base,
        "/cse-in/params/share",
        &owner,
        json!({ "m2m:acp": { "pv": { "acr": [acr(&[&owner], OP_ALL)] } } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    let r = late.join().unwrap();
    assert_eq!(r.rsc, 4103, "the revoked grant: {:?}", r.body);
    assert_eq!(retrieve(&base, "/cse-in/params/state/y/z", &owner).0, 2000);
}
