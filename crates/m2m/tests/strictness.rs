//! Requests held to the letter of TS-0004 / TS-0009 on a real `m2m cse` over HTTP: addresses,
//! release versions, App-IDs, attribute lists, what cannot be updated, group member lists,
//! notification targets that cannot be reached, and what the CSEBase says it supports.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut h = vec![
        ("X-M2M-Origin", "CAdmin"),
        ("X-M2M-RI", "strict"),
        ("Accept", "application/json"),
    ];
    h.extend_from_slice(headers);
    if !headers.iter().any(|(k, _)| *k == "X-M2M-RVI") {
        h.push(("X-M2M-RVI", "3"));
    }
    raw("GET", base, path, &h, b"")
}

#[test]
fn addresses_and_release_versions() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    for path in [
        "/cse-in/",
        "/~/id-in/cse-in/",
        "/_/m2m.example.com/id-in/cse-in/",
    ] {
        let r = get(u, path, &[]);
        assert_eq!(
            r.rsc, 4000,
            "{path}: a trailing '/' names no resource: {:?}",
            r.body
        );
    }
    for path in [
        "/cse-in",
        "/~/id-in/cse-in",
        "/_/m2m.example.com/id-in/cse-in",
    ] {
        assert_eq!(get(u, path, &[]).rsc, 2000, "{path}");
    }
    // An SP-relative or absolute ID in the CSE-relative form: no To maps to these paths
    // (TS-0009 6.2.2.1: /~/ and /_/), refused rather than guessed at.
    for path in [
        "//id-in",
        "//id-in/cse-in",
        "///m2m.example.com/id-in",
        "/%2Fid-in",
    ] {
        let r = get(u, path, &[]);
        assert_eq!(r.rsc, 4000, "{path}: {:?}", r.body);
    }
    let r = get(u, "/cse-in", &[("X-M2M-RVI", "1")]);
    assert_eq!(
        r.rsc, 4001,
        "Release 1 had no release version parameter: {:?}",
        r.body
    );
    let r = get(u, "/cse-in", &[("X-M2M-RVI", "4")]);
    assert_eq!(r.rsc, 2000);
    let cb = &r.body["m2m:cb"];
    assert_eq!(cb["srv"], json!(["2a", "3", "4"]), "{cb}");
    let srt: Vec<u64> = cb["srt"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    for ty in [15, 23, 29, 30, 48] {
        assert!(
            srt.contains(&ty),
            "supportedResourceType lists {ty}: {srt:?}"
        );
    }
    // UPDATE of the CSEBase: 4005 whatever the content says.
    let (rsc, _) = update(
        u,
        "/cse-in",
        "CAdmin",
        json!({ "m2m:cse": { "lbl": ["x"] } }),
    );
    assert_eq!(rsc, 4005);
}

#[test]
fn app_ids_serializations_and_attribute_lists() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let register = |rvi: &str, api: &str, extra: Value| {
        let mut ae =
            json!({ "rn": format!("a{}", api.len()), "api": api, "rr": false, "srv": ["4"] });
        ae.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let body = json!({ "m2m:ae": ae }).to_string();
        raw(
            "POST",
            u,
            "/cse-in",
            &[
                ("X-M2M-Origin", "C"),
                ("X-M2M-RI", "reg"),
                ("X-M2M-RVI", rvi),
                ("Content-Type", "application/json;ty=2"),
            ],
            body.as_bytes(),
        )
    };
    assert_eq!(
        register("4", "racme", json!({})).rsc,
        4000,
        "lower-case r in Release 4"
    );
    assert_eq!(
        register("3", "racme", json!({})).rsc,
        2001,
        "lower-case r before Release 4"
    );
    let r = register(
        "4",
        "Nacme-serial",
        json!({ "csz": ["application/cbor", "application/json"] }),
    );
    assert_eq!(r.rsc, 2001, "media types as serializations: {:?}", r.body);
    let aei = r.body["m2m:ae"]["aei"].as_str().unwrap().to_owned();
    // An attribute list naming what the type does not have; an attribute list on a DELETE.
    let r = get(u, "/cse-in?atrl=mni", &[]);
    assert_eq!(r.rsc, 4000, "mni is no CSEBase attribute: {:?}", r.body);
    let r = get(u, "/cse-in?atrl=rn+ty", &[]);
    assert_eq!(r.rsc, 2000);
    assert_eq!(
        r.body["m2m:cb"].as_object().map(|o| o.len()),
        Some(2),
        "{:?}",
        r.body
    );
    let r = raw(
        "DELETE",
        u,
        &format!("/cse-in/{}?atrl=rn", "a12"),
        &[
            ("X-M2M-Origin", &aei),
            ("X-M2M-RI", "d"),
            ("X-M2M-RVI", "3"),
        ],
        b"",
    );
    assert_eq!(r.rsc, 4000, "no attribute list on a DELETE: {:?}", r.body);
}

#[test]
fn group_members_listed_twice_are_listed_once() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Cgrp", "g", &[]);
    let a = create_cnt(u, "/cse-in/g", &ae, json!({ "rn": "a" }));
    let b = create_cnt(u, "/cse-in/g", &ae, json!({ "rn": "b" }));
    let (rsc, body) = create(
        u,
        "/cse-in/g",
        &ae,
        9,
        json!({ "m2m:grp": { "rn": "grp", "mnm": 10, "mid": [a, b, a] } }),
    );
    assert_eq!(rsc, 2001, "{body}");
    assert_eq!(body["m2m:grp"]["mid"], json!([a, b]), "{body}");
    assert_eq!(body["m2m:grp"]["cnm"], json!(2), "{body}");
    let (rsc, body) = update(
        u,
        "/cse-in/g/grp",
        &ae,
        json!({ "m2m:grp": { "mid": [b, a, b, b] } }),
    );
    assert_eq!(rsc, 2004, "{body}");
    assert_eq!(body["m2m:grp"]["mid"], json!([b, a]), "{body}");
    assert_eq!(body["m2m:grp"]["cnm"], json!(2), "{body}");
    // A member that does not exist is still refused.
    let (rsc, _) = update(
        u,
        "/cse-in/g/grp",
        &ae,
        json!({ "m2m:grp": { "mid": [a, "cse-in/g/none"] } }),
    );
    assert_eq!(rsc, 4110);
}

#[test]
fn notification_targets_and_what_they_receive() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let rx = Receiver::start();
    let owner = register_ae(u, "/cse-in", "Cowner", "owner", &[rx.url()]);
    create_cnt(u, "/cse-in/owner", &owner, json!({ "rn": "c" }));
    // The subscriber's own <AE> by its structured address is the subscriber: no verification.
    let (rsc, b) = create(
        u,
        "/cse-in/owner/c",
        &owner,
        23,
        json!({ "m2m:sub": { "rn": "self", "nu": ["cse-in/owner"], "enc": { "net": [3] }, "nct": 3 } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.count(Received::is_verification), 0, "{:#?}", rx.all());
    // ResourceID content: the ID as m2m:uri.
    let cin = create_cin(u, "/cse-in/owner/c", &owner, "v");
    let n = rx.wait_for(|r| r.net() == Some(3), WAIT);
    assert_eq!(
        n.rep(),
        &json!({ "m2m:uri": format!("/id-in/{cin}") }),
        "{:?}",
        n.body
    );
    // An AE that is not request-reachable gets nothing, though it gave a point of access.
    let rx2 = Receiver::start();
    let (rsc, b) = create(
        u,
        "/cse-in",
        "Cquiet",
        2,
        json!({ "m2m:ae": { "rn": "quiet", "api": "Nq", "rr": false, "poa": [rx2.url()], "srv": ["3"] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, _) = create(
        u,
        "/cse-in/owner/c",
        &owner,
        23,
        json!({ "m2m:sub": { "nu": ["Cquiet"], "enc": { "net": [3] } } }),
    );
    assert_eq!(rsc, 5204, "its verification cannot be delivered");
    let (rsc, _) = notify(
        u,
        "/cse-in/quiet",
        "CAdmin",
        json!({ "m2m:sgn": { "sur": "/id-in/x", "nev": { "net": 1 } } }),
    );
    assert_eq!(rsc, 5103);
    assert!(rx2.all().is_empty(), "{:#?}", rx2.all());
}

#[test]
fn access_control_windows_of_past_years_are_stored_and_never_match() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Cwin", "win", &[]);
    let (rsc, b) = create(
        u,
        "/cse-in/win",
        &ae,
        1,
        json!({ "m2m:acp": { "rn": "old", "pv": { "acr": [{ "acor": ["all"], "acop": 2, "acco": [{ "actw": ["* * * * * * 1984"] }] }] },
                "pvs": { "acr": [{ "acor": [ae.as_str()], "acop": 63 }] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, _) = update(
        u,
        "/cse-in/win",
        &ae,
        json!({ "m2m:ae": { "acpi": ["cse-in/win/old"] } }),
    );
    assert_eq!(rsc, 2004);
    let other = register_ae(u, "/cse-in", "Cother", "other", &[]);
    let (rsc, _) = retrieve(u, "/cse-in/win", &other);
    assert_eq!(rsc, 4103, "1984 is over");
}

#[test]
fn discovery_answers_with_uris_or_child_resource_references() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Cdisc", "d", &[]);
    let c = create_cnt(u, "/cse-in/d", &ae, json!({ "rn": "c" }));
    let (rsc, b) = get_with_query(u, "/cse-in/d", &ae, "fu=1&ty=3");
    assert_eq!(rsc, 2000);
    assert_eq!(b, json!({ "m2m:uril": ["cse-in/d/c"] }));
    let (_, b) = get_with_query(u, "/cse-in/d", &ae, "fu=1&ty=3&rcn=11");
    assert_eq!(
        b,
        json!({ "m2m:uril": ["cse-in/d/c"] }),
        "Release 4 discovery result references"
    );
    let (_, b) = get_with_query(u, "/cse-in/d", &ae, "fu=1&ty=3&rcn=6&drt=2");
    assert_eq!(
        b,
        json!({ "m2m:rrl": { "rrf": [{ "nm": "c", "typ": 3, "val": c }] } }),
        "child resource references, unstructured"
    );
    for rcn in [1, 4, 5, 8] {
        let (rsc, _) = get_with_query(u, "/cse-in/d", &ae, &format!("fu=1&ty=3&rcn={rcn}"));
        assert_eq!(rsc, 4000, "rcn {rcn} is no discovery result");
    }
}

/// Labels are xs:tokens (TS-0004 table 6.3.3-1, m2m:labels): no tabs or line breaks, no
/// leading, trailing or double spaces, at CREATE and UPDATE and on every type. A notification
/// to the CSE itself other than a subscription's verification or deletion notice is 4000, as is a
/// POST without a resource type carrying a resource.
#[test]
fn labels_are_tokens_and_the_cse_takes_only_its_notifications() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Ctoken", "app", &[]);
    create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "c" }));
    for bad in [
        "a  double space",
        "tab\there",
        "line\nbreak",
        " leading",
        "trailing ",
        "cr\rhere",
        "",
    ] {
        let (rsc, b) = update(
            u,
            "/cse-in/app/c",
            &ae,
            json!({ "m2m:cnt": { "lbl": [bad] } }),
        );
        assert_eq!(rsc, 4000, "{bad:?}: {b}");
        let (rsc, b) = create(
            u,
            "/cse-in/app",
            &ae,
            3,
            json!({ "m2m:cnt": { "lbl": ["ok", bad] } }),
        );
        assert_eq!(rsc, 4000, "{bad:?}: {b}");
        let (rsc, b) = update(u, "/cse-in/app", &ae, json!({ "m2m:ae": { "lbl": [bad] } }));
        assert_eq!(rsc, 4000, "{bad:?}: {b}");
    }
    let (rsc, b) = update(
        u,
        "/cse-in/app/c",
        &ae,
        json!({ "m2m:cnt": { "lbl": ["key:value", "one space"] } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    // NOTIFY to the CSEBase.
    let event = json!({ "m2m:sgn": { "nev": { "rep": {}, "net": 1 }, "sur": "/id-in/sub1" } });
    assert_eq!(notify(u, "/cse-in", &ae, event).0, 4000);
    let verify = json!({ "m2m:sgn": { "vrq": true, "sur": "/id-in/sub1" } });
    assert_eq!(notify(u, "/cse-in", &ae, verify).0, 2000);
    // POST without ty is a NOTIFY (TS-0009 clause 6.2.1): a resource in it is no notification.
    let r = raw(
        "POST",
        u,
        "/cse-in",
        &[
            ("X-M2M-Origin", ae.as_str()),
            ("X-M2M-RI", "no-ty"),
            ("X-M2M-RVI", "3"),
            ("Content-Type", "application/json"),
        ],
        br#"{"m2m:ae":{"rn":"foo"}}"#,
    );
    assert_eq!(r.rsc, 4000, "{:?}", r.body);
}

/// An UPDATE carrying another type's representation is unacceptable there (4102); a root that
/// names no type is malformed (4000); nothing changes either way.
#[test]
fn an_update_with_another_types_content() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Ctyped", "typed", &[]);
    create_cnt(u, "/cse-in/typed", &ae, json!({ "rn": "c", "mni": 3 }));
    for (body, rsc) in [
        (json!({ "m2m:ae": { "lbl": ["x"] } }), 4102),
        (json!({ "m2m:actr": { "lbl": ["x"] } }), 4102),
        (json!({ "cod:lock": { "lock": true } }), 4102),
        (json!({ "m2m:nothing": { "lbl": ["x"] } }), 4000),
        (json!({ "m2m:cnt": { "lbl": ["x"] }, "m2m:ae": {} }), 4000),
    ] {
        let (got, b) = update(u, "/cse-in/typed/c", &ae, body.clone());
        assert_eq!(got, rsc, "{body}: {b}");
    }
    let (_, b) = retrieve(u, "/cse-in/typed/c", &ae);
    assert!(b["m2m:cnt"].get("lbl").is_none(), "unchanged: {b}");
}

/// announceTo names where a resource would be announced; this CSE announces nothing, so a list
/// of targets is refused (5001) at CREATE and UPDATE rather than stored as a claim that it was.
#[test]
fn announcement_targets_are_refused_not_stored() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Cann", "ann", &[]);
    let r = create_full(
        u,
        "/cse-in/ann",
        &ae,
        3,
        json!({ "m2m:cnt": { "rn": "c", "at": ["/id-mn"], "aa": ["lbl"] } }),
    );
    assert_eq!(r.rsc, 5001, "{:?}", r.body);
    assert_eq!(retrieve(u, "/cse-in/ann/c", &ae).0, 4004, "nothing created");
    create_cnt(u, "/cse-in/ann", &ae, json!({ "rn": "c", "at": [] }));
    let (rsc, b) = update(
        u,
        "/cse-in/ann/c",
        &ae,
        json!({ "m2m:cnt": { "at": ["/id-mn"] } }),
    );
    assert_eq!(rsc, 5001, "{b}");
    let (_, b) = retrieve(u, "/cse-in/ann/c", &ae);
    assert!(
        b["m2m:cnt"]["at"].as_array().is_none_or(Vec::is_empty),
        "no announcement target stored: {b}"
    );
}
