//! `<timeSeries>` and `<timeSeriesInstance>` on a real `m2m cse` over HTTP (TS-0004 clauses
//! 7.4.38, 7.4.39, 7.5.1.2.9; TS-0001 clause 10.2.4.29): lifecycle, limits, one instance per
//! dataGenerationTime, the update rules of the monitoring attributes, missing data detection and
//! its notifications to a missingData subscription.

mod common;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn ts_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%S,%6f").to_string()
}

/// A CSE and an AE `app` (From `Cts`).
fn setup() -> (CseProcess, String) {
    let cse = CseProcess::start_in();
    let ae = register_ae(cse.url(), "/cse-in", "Cts", "app", &[]);
    (cse, ae)
}

fn create_ts(cse: &CseProcess, ae: &str, attrs: Value) -> (u16, Value) {
    create(cse.url(), "/cse-in/app", ae, 29, json!({ "m2m:ts": attrs }))
}

fn add_tsi(cse: &CseProcess, ae: &str, ts: &str, dgt: Value, con: &str) -> (u16, Value) {
    create(
        cse.url(),
        &format!("/cse-in/app/{ts}"),
        ae,
        30,
        json!({ "m2m:tsi": { "dgt": dgt, "con": con } }),
    )
}

#[test]
fn instances_are_counted_limited_and_unique_per_generation_time() {
    let (cse, ae) = setup();
    let (rsc, b) = create_ts(
        &cse,
        &ae,
        json!({ "rn": "temp", "mni": 3, "cnf": "text/plain:0" }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let ts = &b["m2m:ts"];
    assert_eq!(
        (ts["ty"].clone(), ts["cni"].clone(), ts["cbs"].clone()),
        (json!(29), json!(0), json!(0)),
        "{b}"
    );
    assert!(ts.get("st").is_none(), "a timeSeries has no stateTag: {b}");
    assert_eq!(
        ts["mdd"],
        json!(false),
        "missingDataDetect false when not set: {b}"
    );
    let t0 = Utc::now();
    for (i, con) in ["aValue", "bValue", "cValue", "dValue"].iter().enumerate() {
        let dgt = ts_time(t0 + chrono::Duration::seconds(i as i64));
        let (rsc, b) = add_tsi(&cse, &ae, "temp", json!(dgt), con);
        assert_eq!(rsc, 2001, "{b}");
        assert_eq!(b["m2m:tsi"]["cs"], json!(6), "{b}");
        assert_eq!(b["m2m:tsi"]["dgt"], json!(dgt), "{b}");
        assert_eq!(b["m2m:tsi"]["ty"], json!(30), "{b}");
    }
    let (_, b) = retrieve(cse.url(), "/cse-in/app/temp", &ae);
    assert_eq!(
        (b["m2m:ts"]["cni"].clone(), b["m2m:ts"]["cbs"].clone()),
        (json!(3), json!(18)),
        "{b}"
    );
    let (_, la) = retrieve(cse.url(), "/cse-in/app/temp/la", &ae);
    let (_, ol) = retrieve(cse.url(), "/cse-in/app/temp/ol", &ae);
    assert_eq!(la["m2m:tsi"]["con"], json!("dValue"), "{la}");
    assert_eq!(
        ol["m2m:tsi"]["con"],
        json!("bValue"),
        "the oldest went: {ol}"
    );
    // The same dataGenerationTime again: 4105, whatever the content.
    let (rsc, _) = add_tsi(
        &cse,
        &ae,
        "temp",
        json!(ts_time(t0 + chrono::Duration::seconds(3))),
        "again",
    );
    assert_eq!(rsc, 4105);
    // No dataGenerationTime, or not a time: 4000; relative milliseconds are made absolute.
    let (rsc, _) = create(
        cse.url(),
        "/cse-in/app/temp",
        &ae,
        30,
        json!({ "m2m:tsi": { "con": "x" } }),
    );
    assert_eq!(rsc, 4000);
    let (rsc, _) = add_tsi(&cse, &ae, "temp", json!("yesterday"), "x");
    assert_eq!(rsc, 4000);
    let (rsc, b) = add_tsi(&cse, &ae, "temp", json!(-60_000), "relative");
    assert_eq!(rsc, 2001, "{b}");
    let dgt = b["m2m:tsi"]["dgt"].as_str().unwrap_or_default().to_owned();
    assert!(dgt.len() >= 15 && dgt.contains('T'), "absolute: {b}");
    // Never updated; a container-like size limit answers 5207.
    let ri = b["m2m:tsi"]["ri"].as_str().unwrap().to_owned();
    let (rsc, _) = update(
        cse.url(),
        &format!("/{ri}"),
        &ae,
        json!({ "m2m:tsi": { "con": "y" } }),
    );
    assert_eq!(rsc, 4005);
    let (rsc, _) = update(
        cse.url(),
        "/cse-in/app/temp",
        &ae,
        json!({ "m2m:ts": { "mbs": 10 } }),
    );
    assert_eq!(rsc, 2004);
    let (rsc, _) = add_tsi(
        &cse,
        &ae,
        "temp",
        json!(ts_time(t0 + chrono::Duration::seconds(60))),
        "elevenbytes",
    );
    assert_eq!(rsc, 5207);
    // mni lowered: the oldest go.
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/app/temp",
        &ae,
        json!({ "m2m:ts": { "mni": 1 } }),
    );
    assert_eq!(rsc, 2004);
    assert_eq!(b["m2m:ts"]["cni"], json!(1), "{b}");
    // A timeSeries holds no timeSeries, and no contentInstance.
    let (rsc, _) = create(
        cse.url(),
        "/cse-in/app/temp",
        &ae,
        29,
        json!({ "m2m:ts": {} }),
    );
    assert_eq!(rsc, 4108);
    let (rsc, _) = create(
        cse.url(),
        "/cse-in/app/temp",
        &ae,
        4,
        json!({ "m2m:cin": { "con": "x" } }),
    );
    assert_eq!(rsc, 4108);
    // Only its creator sees it (no acpi); discovery finds it for the creator.
    let other = register_ae(cse.url(), "/cse-in", "Cother", "other", &[]);
    let (rsc, _) = retrieve(cse.url(), "/cse-in/app/temp", &other);
    assert_eq!(rsc, 4103);
    let (rsc, _) = retrieve(cse.url(), "/cse-in/app/temp/la", &other);
    assert_eq!(rsc, 4103);
    let (_, b) = get_with_query(cse.url(), "/cse-in", &ae, "fu=1&ty=29");
    assert_eq!(b["m2m:uril"].as_array().map(Vec::len), Some(1), "{b}");
    // The instance left is found by its type, deleted by its creator (not by another AE), and
    // the count follows.
    let (_, b) = get_with_query(cse.url(), "/cse-in/app/temp", &ae, "fu=1&ty=30");
    let found = b["m2m:uril"].as_array().cloned().unwrap_or_default();
    assert_eq!(found.len(), 1, "{b}");
    let tsi = format!("/{}", found[0].as_str().unwrap_or_default());
    let (_, b) = get_with_query(cse.url(), "/cse-in", &other, "fu=1&ty=30");
    assert_eq!(b["m2m:uril"], json!([]), "{b}");
    assert_eq!(delete(cse.url(), &tsi, &other).0, 4103);
    assert_eq!(delete(cse.url(), &tsi, &ae).0, 2002);
    let (_, b) = retrieve(cse.url(), "/cse-in/app/temp", &ae);
    assert_eq!(
        (b["m2m:ts"]["cni"].clone(), b["m2m:ts"]["cbs"].clone()),
        (json!(0), json!(0)),
        "{b}"
    );
    let (rsc, _) = delete(cse.url(), "/cse-in/app/temp", &ae);
    assert_eq!(rsc, 2002);
}

#[test]
fn the_monitoring_attributes_follow_the_update_rules() {
    let (cse, ae) = setup();
    let bad = |attrs: Value, what: &str| {
        let (rsc, b) = create_ts(&cse, &ae, attrs);
        assert_eq!(rsc, 4000, "{what}: {b}");
    };
    bad(json!({ "pei": 1000, "peid": 501 }), "peid above pei/2");
    bad(json!({ "pei": 1000, "mdd": true }), "mdd without mdt");
    bad(
        json!({ "pei": 1000, "peid": 500, "mdd": true, "mdt": 500 }),
        "mdt not above peid",
    );
    bad(json!({ "cnf": "wrong" }), "cnf malformed");
    let (rsc, b) = create_ts(
        &cse,
        &ae,
        json!({ "rn": "m", "pei": 10000, "mdd": true, "mdt": 5001, "mdn": 10 }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let ts = &b["m2m:ts"];
    assert_eq!(ts["peid"], json!(5000), "the CSE's default delta: {b}");
    assert_eq!(ts["mdc"], json!(0), "{b}");
    assert!(ts.get("mdlt").is_none(), "{b}");
    let upd = |attrs: Value| update(cse.url(), "/cse-in/app/m", &ae, json!({ "m2m:ts": attrs }));
    for attrs in [
        json!({ "pei": 2000 }),
        json!({ "peid": 10 }),
        json!({ "mdn": 5 }),
        json!({ "mdn": null }),
        json!({ "mdt": 6000 }),
    ] {
        assert_eq!(
            upd(attrs.clone()).0,
            4000,
            "{attrs} while missingDataDetect is true"
        );
    }
    for attrs in [
        json!({ "mdd": false, "pei": 2000 }),
        json!({ "mdd": false, "mdt": 3 }),
    ] {
        assert_eq!(
            upd(attrs.clone()).0,
            4000,
            "{attrs}: mdd together with them"
        );
    }
    for attrs in [
        json!({ "mdc": 1 }),
        json!({ "mdlt": [] }),
        json!({ "cnf": "text/plain:0" }),
        json!({ "cni": 1 }),
    ] {
        assert_eq!(upd(attrs.clone()).0, 4000, "{attrs} is the CSE's");
    }
    assert_eq!(upd(json!({ "mdd": true })).0, 2004);
    assert_eq!(upd(json!({ "mdd": false })).0, 2004);
    let (rsc, b) = upd(json!({ "pei": 1000 }));
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(
        b["m2m:ts"]["peid"],
        json!(500),
        "a new interval, a new default delta: {b}"
    );
    assert_eq!(upd(json!({ "pei": 2000, "peid": 2000 })).0, 4000);
    let (rsc, b) = upd(json!({ "mdn": null }));
    assert_eq!(rsc, 2004, "{b}");
    assert!(b["m2m:ts"].get("mdn").is_none(), "{b}");
}

#[test]
fn a_missing_data_point_is_listed_at_its_detection_time_and_reported() {
    let (cse, ae) = setup();
    // One point every 600 ms, +/- 150 ms; judged 300 ms after it was expected.
    let (rsc, b) = create_ts(
        &cse,
        &ae,
        json!({ "rn": "m", "pei": 600, "peid": 150, "mdd": true, "mdt": 300, "mdn": 5 }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let rx = Receiver::start();
    let (rsc, b) = create(
        cse.url(),
        "/cse-in/app/m",
        &ae,
        23,
        json!({ "m2m:sub": { "rn": "md", "nu": [rx.url()], "enc": { "net": [8], "md": { "num": 2, "dur": "PT30S" } } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        b["m2m:sub"]["nct"],
        json!(5),
        "timeSeries notification by default: {b}"
    );
    // The first instance starts the monitoring; the second and third come on time (the third
    // within the delta), the fourth and fifth never.
    // Whole milliseconds: the unit of periodicInterval.
    let t0 = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
    for (ms, con) in [(0, "a"), (600, "b"), (1300, "c")] {
        let (rsc, b) = add_tsi(&cse, &ae, "m", json!(ts_time(at(ms))), con);
        assert_eq!(rsc, 2001, "{b}");
    }
    // Before the first missing point's detection time (2100 ms), nothing is missing; the look
    // is skipped when this machine is too slow to take it in time.
    if let Ok(wait) = (at(1900) - Utc::now()).to_std() {
        std::thread::sleep(wait);
        let (_, b) = retrieve(cse.url(), "/cse-in/app/m", &ae);
        if Utc::now() < at(2050) {
            assert_eq!(b["m2m:ts"]["mdc"], json!(0), "nothing missing yet: {b}");
        }
    }
    let n = rx.wait_for(|r| r.net() == Some(8), Duration::from_secs(5));
    let tsn = &n.rep()["m2m:tsn"];
    let expected = [ts_time(at(1800)), ts_time(at(2400))];
    assert_eq!(
        tsn["mdlt"],
        json!(expected),
        "the expected times of the two missing points: {tsn}"
    );
    assert_eq!(tsn["mdc"], json!(2), "{tsn}");
    let (_, b) = retrieve(cse.url(), "/cse-in/app/m", &ae);
    let mdlt = b["m2m:ts"]["mdlt"].as_array().cloned().unwrap_or_default();
    assert!(mdlt.len() >= 2 && mdlt[0] == json!(expected[0]), "{b}");
    // Each further point within the window is reported, with what is new since.
    let n = rx.wait_for(
        |r| r.net() == Some(8) && r.rep()["m2m:tsn"]["mdc"] == json!(3),
        Duration::from_secs(5),
    );
    assert_eq!(n.rep()["m2m:tsn"]["mdlt"], json!([ts_time(at(3000))]));
    // missingDataDetect false stops the monitoring and keeps the list.
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/app/m",
        &ae,
        json!({ "m2m:ts": { "mdd": false } }),
    );
    assert_eq!(rsc, 2004);
    let kept = b["m2m:ts"]["mdlt"].clone();
    std::thread::sleep(Duration::from_millis(1300));
    let (_, b) = retrieve(cse.url(), "/cse-in/app/m", &ae);
    assert_eq!(b["m2m:ts"]["mdlt"], kept, "stopped, kept: {b}");
    let count = b["m2m:ts"]["mdc"].as_u64().unwrap_or(0);
    assert!((3..=5).contains(&count), "capped by missingDataMaxNr: {b}");
    // true again starts afresh.
    let (_, b) = update(
        cse.url(),
        "/cse-in/app/m",
        &ae,
        json!({ "m2m:ts": { "mdd": true } }),
    );
    assert_eq!(b["m2m:ts"]["mdc"], json!(0), "{b}");
    assert!(b["m2m:ts"].get("mdlt").is_none(), "{b}");
}

#[test]
fn missing_data_subscriptions_need_a_time_series_and_their_condition() {
    let (cse, ae) = setup();
    let (rsc, _) = create_ts(&cse, &ae, json!({ "rn": "m" }));
    assert_eq!(rsc, 2001);
    create_cnt(cse.url(), "/cse-in/app", &ae, json!({ "rn": "c" }));
    let rx = Receiver::start();
    let sub = |to: &str, enc: Value| {
        create(
            cse.url(),
            to,
            &ae,
            23,
            json!({ "m2m:sub": { "nu": [rx.url()], "enc": enc } }),
        )
        .0
    };
    let md = json!({ "num": 2, "dur": "PT10S" });
    assert_eq!(
        sub("/cse-in/app/c", json!({ "net": [8], "md": md })),
        4000,
        "a container"
    );
    assert_eq!(
        sub("/cse-in/app/m", json!({ "net": [8] })),
        4000,
        "net 8 without md"
    );
    for bad_md in [
        json!({ "num": -5, "dur": "PT10S" }),
        json!({ "num": 5 }),
        json!({ "dur": "PT10S" }),
        json!({ "num": 5, "dur": "10" }),
    ] {
        assert_eq!(
            sub("/cse-in/app/m", json!({ "net": [8], "md": bad_md })),
            4000,
            "{bad_md}"
        );
    }
    assert_eq!(sub("/cse-in/app/m", json!({ "net": [8], "md": md })), 2001);
    assert_eq!(
        sub("/cse-in/app/m", json!({ "net": [3] })),
        2001,
        "new instances, as usual"
    );
}
