//! Notification policies of `<subscription>` on a real `m2m cse` (TS-0004 clauses 7.4.8,
//! 7.5.1.2.2, 7.5.1.2.19; TS-0001 clause 10.2.10.7 and table 9.6.8-4): batchNotify by number
//! and by duration, latestNotify, notificationEventCat, notificationStatsEnable, the originator
//! of the event (eeno), blocking updates, and the checks of criteria and content types.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A CSE, an AE `app` (From `Csub`) with container `c`, and a receiver.
struct Setup {
    cse: CseProcess,
    ae: String,
    rx: Receiver,
}

fn setup() -> Setup {
    let cse = CseProcess::start_in();
    let ae = register_ae(cse.url(), "/cse-in", "Csub", "app", &[]);
    create_cnt(cse.url(), "/cse-in/app", &ae, json!({ "rn": "c" }));
    Setup {
        cse,
        ae,
        rx: Receiver::start(),
    }
}

fn subscribe(s: &Setup, sub: Value) -> Value {
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        23,
        json!({ "m2m:sub": sub }),
    );
    assert_eq!(rsc, 2001, "subscription: {b}");
    b["m2m:sub"].clone()
}

fn label(s: &Setup, lbl: &str) {
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": [lbl] } }),
    );
    assert_eq!(rsc, 2004, "{b}");
}

fn is_batch(r: &Received) -> bool {
    r.body.get("m2m:agn").is_some()
}

fn is_event(r: &Received) -> bool {
    r.net().is_some()
}

/// The labels of the container updates an aggregated notification carries, in order.
fn batch_labels(r: &Received) -> Vec<String> {
    r.body["m2m:agn"]["m2m:sgn"]
        .as_array()
        .unwrap_or_else(|| panic!("not an aggregated notification: {:?}", r.body))
        .iter()
        .map(|sgn| {
            sgn["nev"]["rep"]["m2m:cnt"]["lbl"][0]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}

#[test]
fn batch_notify_by_number_sends_one_aggregated_notification_in_order() {
    let s = setup();
    let sub = subscribe(
        &s,
        json!({ "rn": "b", "nu": [s.rx.url()], "bn": { "num": 3 } }),
    );
    assert_eq!(sub["bn"]["num"], json!(3), "{sub}");
    assert_eq!(
        sub["bn"]["dur"],
        json!(60_000),
        "the default duration is set, in milliseconds: {sub}"
    );
    for l in ["l1", "l2"] {
        label(&s, l);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.rx.count(|r| is_batch(r) || is_event(r)),
        0,
        "held until the third"
    );
    label(&s, "l3");
    let batch = s.rx.wait_for(is_batch, WAIT);
    assert_eq!(batch_labels(&batch), ["l1", "l2", "l3"]);
    for sgn in batch.body["m2m:agn"]["m2m:sgn"].as_array().unwrap() {
        assert!(
            sgn["sur"]
                .as_str()
                .unwrap_or("")
                .ends_with(sub["ri"].as_str().unwrap()),
            "{sgn}"
        );
    }
    // The next three make the next batch; no single notification in between.
    for l in ["l4", "l5", "l6"] {
        label(&s, l);
    }
    let batches = s.rx.wait_for_n(2, is_batch, WAIT);
    assert_eq!(batch_labels(&batches[1]), ["l4", "l5", "l6"]);
    assert_eq!(s.rx.count(is_event), 0, "nothing outside the batches");
}

#[test]
fn batch_notify_by_duration_and_what_a_deleted_subscription_held() {
    let s = setup();
    subscribe(
        &s,
        json!({ "rn": "d", "nu": [s.rx.url()], "bn": { "dur": "PT1S" } }),
    );
    let started = Instant::now();
    for l in ["a", "b", "c"] {
        label(&s, l);
    }
    let batch = s.rx.wait_for(is_batch, WAIT);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "sent when the duration ran out, not before"
    );
    assert_eq!(batch_labels(&batch), ["a", "b", "c"]);

    // Held notifications go out when the subscription is deleted, before the deletion notice.
    let rx2 = Receiver::start();
    subscribe(
        &s,
        json!({ "rn": "held", "nu": [rx2.url()], "su": rx2.url(), "bn": { "num": 10, "dur": "PT60S" } }),
    );
    label(&s, "z");
    let (rsc, _) = delete(s.cse.url(), "/cse-in/app/c/held", &s.ae);
    assert_eq!(rsc, 2002);
    assert_eq!(
        rx2.count(|r| r.sgn().get("sud").is_some()),
        1,
        "the DELETE answered after its deletion notice was delivered"
    );
    let got = rx2.wait_for_n(2, |r| is_batch(r) || r.sgn().get("sud").is_some(), WAIT);
    assert!(is_batch(&got[0]), "the held batch first: {got:#?}");
    assert_eq!(batch_labels(&got[0]), ["z"]);
    assert_eq!(got[1].sgn()["sud"], json!(true), "{got:#?}");
}

#[test]
fn latest_notify_sends_only_the_newest_with_event_category_latest() {
    let s = setup();
    subscribe(
        &s,
        json!({ "rn": "ln", "nu": [s.rx.url()], "ln": true, "bn": { "num": 3 } }),
    );
    for l in ["x", "y", "z"] {
        label(&s, l);
    }
    let batch = s.rx.wait_for(is_batch, WAIT);
    assert_eq!(batch_labels(&batch), ["z"], "only the latest");
    assert_eq!(batch.headers.get("x-m2m-ec").map(String::as_str), Some("4"));
    // notificationEventCat without latestNotify: the category given.
    let rx2 = Receiver::start();
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        23,
        json!({ "m2m:sub": { "rn": "nec", "nu": [rx2.url()], "nec": 2 } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    label(&s, "w");
    let n = rx2.wait_for(is_event, WAIT);
    assert_eq!(n.headers.get("x-m2m-ec").map(String::as_str), Some("2"));
}

#[test]
fn notification_statistics_count_per_target_and_reset_when_enabled_again() {
    let s = setup();
    let sub = subscribe(&s, json!({ "rn": "st", "nu": [s.rx.url()], "nse": true }));
    assert_eq!(sub["nse"], json!(true));
    assert!(
        sub.get("nsi").is_none(),
        "no statistics before the first event: {sub}"
    );
    label(&s, "one");
    s.rx.wait_for(is_event, WAIT);
    let nsi = poll(WAIT, || {
        let (_, b) = retrieve(s.cse.url(), "/cse-in/app/c/st", &s.ae);
        let nsi = b["m2m:sub"]["nsi"].clone();
        (nsi[0]["rsr"] == json!(1)).then_some(nsi)
    })
    .expect("statistics after one notification");
    assert_eq!(
        nsi,
        json!([{ "tg": s.rx.url(), "rqs": 1, "rsr": 1, "noec": 1 }]),
        "the verification is not counted"
    );
    // nsi is the CSE's: an UPDATE may not set it.
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/c/st",
        &s.ae,
        json!({ "m2m:sub": { "nsi": [] } }),
    );
    assert_eq!(rsc, 4000);
    // false keeps them (and stops counting); true again starts anew; null removes both.
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/c/st",
        &s.ae,
        json!({ "m2m:sub": { "nse": false } }),
    );
    assert_eq!(rsc, 2004);
    assert_eq!(b["m2m:sub"]["nsi"], nsi, "{b}");
    let (_, b) = update(
        s.cse.url(),
        "/cse-in/app/c/st",
        &s.ae,
        json!({ "m2m:sub": { "nse": true } }),
    );
    assert!(b["m2m:sub"].get("nsi").is_none(), "reset: {b}");
    let (_, b) = update(
        s.cse.url(),
        "/cse-in/app/c/st",
        &s.ae,
        json!({ "m2m:sub": { "nse": null } }),
    );
    assert!(
        b["m2m:sub"].get("nse").is_none() && b["m2m:sub"].get("nsi").is_none(),
        "{b}"
    );
}

#[test]
fn eeno_names_the_originator_of_the_event_when_there_is_no_creator() {
    let s = setup();
    subscribe(&s, json!({ "rn": "e", "nu": [s.rx.url()], "eeno": true }));
    label(&s, "by-csub");
    let n = s.rx.wait_for(is_event, WAIT);
    assert_eq!(n.sgn()["cr"], json!(s.ae), "{:?}", n.body);
    // With a creator, the creator.
    let rx2 = Receiver::start();
    subscribe(
        &s,
        json!({ "rn": "e2", "nu": [rx2.url()], "eeno": true, "cr": null }),
    );
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/c",
        "CAdmin",
        json!({ "m2m:cnt": { "lbl": ["admin"] } }),
    );
    assert_eq!(rsc, 2004);
    let n = rx2.wait_for(is_event, WAIT);
    assert_eq!(
        n.sgn()["cr"],
        json!(s.ae),
        "the subscription's creator: {:?}",
        n.body
    );
    let n = s.rx.wait_for(
        |r| is_event(r) && r.rep()["m2m:cnt"]["lbl"] == json!(["admin"]),
        WAIT,
    );
    assert_eq!(
        n.sgn()["cr"],
        json!("CAdmin"),
        "the admin updated: {:?}",
        n.body
    );
}

/// An AE `gate` with its pointOfAccess at `rx`, holding a blocking-update subscription on the
/// container.
fn blocking_setup() -> (Setup, String) {
    let s = setup();
    let gate = register_ae(s.cse.url(), "/cse-in", "Cgate", "gate", &[s.rx.url()]);
    // The container's owner lets the gate subscribe, and update: the one target of a blocking
    // subscription decides the updates of others.
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app",
        &s.ae,
        1,
        json!({ "m2m:acp": { "rn": "acp", "pv": { "acr": [
            { "acor": [s.ae.as_str()], "acop": 63 }, { "acor": [gate.as_str()], "acop": 7 }
        ] }, "pvs": { "acr": [{ "acor": [s.ae.as_str()], "acop": 63 }] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "acpi": ["cse-in/app/acp"] } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/c",
        &gate,
        23,
        json!({ "m2m:sub": { "rn": "block", "nu": [gate.as_str()], "enc": { "net": [7], "atr": ["lbl"] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        b["m2m:sub"]["nct"],
        json!(2),
        "modified attributes by default: {b}"
    );
    (s, gate)
}

#[test]
fn a_blocking_update_waits_for_the_target_and_its_refusal_refuses_the_update() {
    let (s, gate) = blocking_setup();
    label(&s, "allowed");
    let n = s.rx.wait_for(|r| r.net() == Some(7), WAIT);
    assert_eq!(
        n.rep(),
        &json!({ "m2m:cnt": { "lbl": ["allowed"] } }),
        "the update's content"
    );
    let (_, b) = retrieve(s.cse.url(), "/cse-in/app/c", &s.ae);
    assert_eq!(b["m2m:cnt"]["lbl"], json!(["allowed"]));
    // An attribute the subscription does not watch: no notification, no wait.
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "mni": 9 } }),
    );
    assert_eq!(rsc, 2004);
    assert_eq!(s.rx.count(|r| r.net() == Some(7)), 1);
    // The target refuses: the update is refused and nothing changes.
    s.rx.answer_with(4005);
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": ["refused"] } }),
    );
    assert_eq!(rsc, 4127, "OPERATION_DENIED_BY_REMOTE_ENTITY");
    let (_, b) = retrieve(s.cse.url(), "/cse-in/app/c", &s.ae);
    assert_eq!(b["m2m:cnt"]["lbl"], json!(["allowed"]), "unchanged: {b}");
    // The target cannot be reached: 5107, nothing changes.
    s.rx.answer_with(2000);
    let dead = format!("http://127.0.0.1:{}", unused_port());
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/gate",
        &gate,
        json!({ "m2m:ae": { "poa": [dead] } }),
    );
    assert_eq!(rsc, 2004);
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": ["lost"] } }),
    );
    assert_eq!(rsc, 5107, "REMOTE_ENTITY_NOT_REACHABLE");
    let (_, b) = retrieve(s.cse.url(), "/cse-in/app/c", &s.ae);
    assert_eq!(b["m2m:cnt"]["lbl"], json!(["allowed"]), "unchanged: {b}");
}

#[test]
fn blocking_subscriptions_are_one_per_resource_with_one_resource_id_target_and_no_policies() {
    let (s, gate) = blocking_setup();
    let try_sub = |sub: Value| {
        create(
            s.cse.url(),
            "/cse-in/app/c",
            &gate,
            23,
            json!({ "m2m:sub": sub }),
        )
        .0
    };
    assert_eq!(
        try_sub(json!({ "nu": [gate.as_str()], "enc": { "net": [7] } })),
        4124,
        "BLOCKING_SUBSCRIPTION_ALREADY_EXISTS"
    );
    let (rsc, _) = delete(s.cse.url(), "/cse-in/app/c/block", &gate);
    assert_eq!(rsc, 2002);
    for (what, sub) in [
        (
            "two targets",
            json!({ "nu": [gate.as_str(), s.ae.as_str()], "enc": { "net": [7] } }),
        ),
        (
            "a URL target",
            json!({ "nu": [s.rx.url()], "enc": { "net": [7] } }),
        ),
        (
            "with batchNotify",
            json!({ "nu": [gate.as_str()], "enc": { "net": [7] }, "bn": { "num": 2 } }),
        ),
        (
            "with exc",
            json!({ "nu": [gate.as_str()], "enc": { "net": [7] }, "exc": 2 }),
        ),
        (
            "another event type too",
            json!({ "nu": [gate.as_str()], "enc": { "net": [1, 7] }, "nct": 2 }),
        ),
        (
            "a condition other than atr",
            json!({ "nu": [gate.as_str()], "enc": { "net": [7], "chty": [4] } }),
        ),
        (
            "all attributes",
            json!({ "nu": [gate.as_str()], "enc": { "net": [7] }, "nct": 1 }),
        ),
    ] {
        assert_eq!(try_sub(sub), 4000, "{what}");
    }
    // An UPDATE cannot make a subscription blocking.
    let sub = subscribe(&s, json!({ "rn": "plain", "nu": [s.rx.url()] }));
    assert_eq!(
        sub["enc"],
        json!({ "net": [1] }),
        "the default criteria: {sub}"
    );
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/c/plain",
        &s.ae,
        json!({ "m2m:sub": { "enc": { "net": [7] } } }),
    );
    assert_eq!(rsc, 4000);
}

#[test]
fn content_types_event_types_and_child_types_must_fit_together() {
    let s = setup();
    let try_sub = |sub: Value| {
        create(
            s.cse.url(),
            "/cse-in/app/c",
            &s.ae,
            23,
            json!({ "m2m:sub": sub }),
        )
        .0
    };
    let nu = json!([s.rx.url()]);
    for (what, sub, want) in [
        (
            "modified attributes of a child creation",
            json!({ "nu": nu, "enc": { "net": [3] }, "nct": 2 }),
            4000,
        ),
        (
            "trigger payload for an update",
            json!({ "nu": nu, "nct": 4 }),
            4000,
        ),
        (
            "time series notification for an update",
            json!({ "nu": nu, "nct": 5 }),
            4000,
        ),
        (
            "event types of different defaults, no nct",
            json!({ "nu": nu, "enc": { "net": [1, 7] } }),
            4000,
        ),
        (
            "a child type a container cannot have",
            json!({ "nu": nu, "enc": { "net": [3], "chty": [2] } }),
            4000,
        ),
        (
            "missing data on a container",
            json!({ "nu": nu, "enc": { "net": [8], "md": { "num": 1, "dur": "PT1S" } } }),
            4000,
        ),
        (
            "net and operationMonitor",
            json!({ "nu": nu, "enc": { "net": [1], "om": [{ "ops": 1 }] } }),
            4000,
        ),
        (
            "a creator other than null",
            json!({ "nu": nu, "cr": "Csomeone" }),
            4000,
        ),
        (
            "ID of a created child",
            json!({ "nu": nu, "enc": { "net": [3] }, "nct": 3 }),
            2001,
        ),
        (
            "modified attributes of an update",
            json!({ "nu": nu, "enc": { "net": [1] }, "nct": 2 }),
            2001,
        ),
    ] {
        assert_eq!(try_sub(sub), want, "{what}");
    }
    // The defaults: update of the resource, all attributes; enc removed brings them back.
    let sub = subscribe(&s, json!({ "rn": "d", "nu": nu, "enc": { "net": [3] } }));
    assert_eq!(
        (sub["enc"].clone(), sub["nct"].clone()),
        (json!({ "net": [3] }), json!(1))
    );
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/c/d",
        &s.ae,
        json!({ "m2m:sub": { "enc": null } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(b["m2m:sub"]["enc"], json!({ "net": [1] }), "{b}");
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/c/d",
        &s.ae,
        json!({ "m2m:sub": { "nct": 2, "enc": { "net": [3] } } }),
    );
    assert_eq!(
        rsc, 4000,
        "the UPDATE leaves a content type that does not fit"
    );
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/c/d",
        &s.ae,
        json!({ "m2m:sub": { "nu": null } }),
    );
    assert_eq!(rsc, 4000, "notificationURI is mandatory");
    // A subscription under a resource that takes none: TARGET_NOT_SUBSCRIBABLE.
    let cin = create_cin(s.cse.url(), "/cse-in/app/c", &s.ae, "v");
    let (rsc, _) = create(
        s.cse.url(),
        &format!("/{cin}"),
        &s.ae,
        23,
        json!({ "m2m:sub": { "nu": nu } }),
    );
    assert_eq!(rsc, 5203);
    // An <accessControlPolicy> is subscribable.
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app",
        &s.ae,
        1,
        json!({ "m2m:acp": { "rn": "p", "pv": { "acr": [] }, "pvs": { "acr": [{ "acor": [s.ae.as_str()], "acop": 63 }] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/p",
        &s.ae,
        23,
        json!({ "m2m:sub": { "nu": nu } }),
    );
    assert_eq!(rsc, 2001, "{b}");
}

#[test]
fn operation_monitors_notify_the_operations_they_name() {
    let s = setup();
    // Updates by this AE; retrievals by anyone.
    subscribe(
        &s,
        json!({ "rn": "upd", "nu": [s.rx.url()], "enc": { "om": [{ "ops": 4, "or": s.ae }] } }),
    );
    let rx2 = Receiver::start();
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        23,
        json!({ "m2m:sub": { "rn": "ret", "nu": [rx2.url()], "enc": { "om": [{ "ops": 2 }] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    // The originator as `org`, the short name of TS-0004 table 8.2.3, kept as given.
    let rx3 = Receiver::start();
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        23,
        json!({ "m2m:sub": { "rn": "org", "nu": [rx3.url()], "enc": { "om": [{ "ops": 4, "org": s.ae }] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        b["m2m:sub"]["enc"]["om"],
        json!([{ "ops": 4, "org": s.ae }]),
        "{b}"
    );
    let is_om = |r: &Received| r.sgn().pointer("/nev/om").is_some();
    // The admin's update matches no originator; the AE's does.
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/c",
        "CAdmin",
        json!({ "m2m:cnt": { "lbl": ["a"] } }),
    );
    assert_eq!(rsc, 2004);
    label(&s, "b");
    let n = s.rx.wait_for(is_om, WAIT);
    assert_eq!(
        n.sgn()["nev"]["om"],
        json!({ "op": 3, "org": s.ae }),
        "{:?}",
        n.body
    );
    let n = rx3.wait_for(is_om, WAIT);
    assert_eq!(n.sgn()["nev"]["om"], json!({ "op": 3, "org": s.ae }));
    // Time for a late wrong notification to arrive before counting.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.rx.count(is_om), 1, "the admin's update was not monitored");
    assert_eq!(rx3.count(is_om), 1, "the admin's update was not monitored");
    assert_eq!(
        rx3.count(|r| r.sgn().pointer("/nev/rep").is_some()),
        0,
        "a monitoring subscription does not also notify every update: {:?}",
        rx3.all().iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    // A retrieval, by whoever.
    let (rsc, _) = retrieve(s.cse.url(), "/cse-in/app/c", &s.ae);
    assert_eq!(rsc, 2000);
    let n = rx2.wait_for(is_om, WAIT);
    assert_eq!(n.sgn()["nev"]["om"]["op"], json!(2), "{:?}", n.body);
    assert_eq!(
        s.rx.count(is_om),
        1,
        "the update monitor ignores retrievals"
    );
    // A monitor with neither operations nor originator, or beside notificationEventType: 4000.
    for enc in [
        json!({ "om": [{}] }),
        json!({ "om": [{ "ops": 2 }], "net": [1] }),
        json!({ "om": [{ "org": s.ae, "or": s.ae }] }),
        json!({ "om": [{ "org": 7 }] }),
    ] {
        let (rsc, _) = create(
            s.cse.url(),
            "/cse-in/app/c",
            &s.ae,
            23,
            json!({ "m2m:sub": { "nu": [s.rx.url()], "enc": enc } }),
        );
        assert_eq!(rsc, 4000, "{enc}");
    }
}

/// A `<schedule>` under a subscription is its notification schedule (TS-0004 clause 7.4.9):
/// outside its entries nothing is notified, inside it is; `nco` belongs to a node's schedule
/// only (4102) and every entry has the 7 fields (4000).
#[test]
fn a_notification_schedule_gates_notifications() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let rx = Receiver::start();
    let ae = register_ae(u, "/cse-in", "Csched", "app", &[]);
    create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "c" }));
    let (rsc, b) = create(
        u,
        "/cse-in/app/c",
        &ae,
        23,
        json!({ "m2m:sub": { "rn": "s", "nu": [rx.url()], "enc": { "net": [3] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let sched = |attrs: Value| create(u, "/cse-in/app/c/s", &ae, 18, json!({ "m2m:sch": attrs }));
    // Never (a year long past): nothing is sent.
    let (rsc, b) = sched(json!({ "se": { "sce": ["* * * * * * 2001"] } }));
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:sch"]["rn"], json!("notificationSchedule"), "{b}");
    assert_eq!(
        sched(json!({ "rn": "other", "se": { "sce": ["* * * * * * *"] } })).0,
        4000,
        "a subscription's schedule is its notificationSchedule"
    );
    assert_eq!(
        sched(json!({ "se": { "sce": ["* * * * * * *"] } })).0,
        4105,
        "one at most"
    );
    create_cin(u, "/cse-in/app/c", &ae, "quiet");
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(rx.count(|r| r.net() == Some(3)), 0, "outside the schedule");
    // Always: sent.
    let (rsc, b) = update(
        u,
        "/cse-in/app/c/s/notificationSchedule",
        &ae,
        json!({ "m2m:sch": { "se": { "sce": ["* * * * * * 2001", "* * * * * * *"] } } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    create_cin(u, "/cse-in/app/c", &ae, "heard");
    let n = rx.wait_for(|r| r.net() == Some(3), WAIT);
    assert_eq!(n.rep()["m2m:cin"]["con"], json!("heard"));
    // The schedule gone: no constraint.
    assert_eq!(
        delete(u, "/cse-in/app/c/s/notificationSchedule", &ae).0,
        2002
    );
    create_cin(u, "/cse-in/app/c", &ae, "again");
    rx.wait_for(|r| r.rep()["m2m:cin"]["con"] == json!("again"), WAIT);
    // Bad input.
    assert_eq!(
        sched(json!({ "se": { "sce": ["* * * * *"] } })).0,
        4000,
        "5 fields"
    );
    assert_eq!(sched(json!({ "se": { "sce": [] } })).0, 4000, "no entry");
    assert_eq!(sched(json!({})).0, 4000, "no scheduleElement");
    assert_eq!(
        sched(json!({ "se": { "sce": ["* * * * * * *"] }, "nco": true })).0,
        4102,
        "networkCoordinated outside a node"
    );
    // An immediate subscription notifies outside its schedule (TS-0004 clause 7.5.1.2.2).
    let urgent_rx = Receiver::start();
    let (rsc, b) = create(
        u,
        "/cse-in/app/c",
        &ae,
        23,
        json!({ "m2m:sub": { "rn": "now", "nu": [urgent_rx.url()], "enc": { "net": [3] }, "nec": 2 } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create(
        u,
        "/cse-in/app/c/now",
        &ae,
        18,
        json!({ "m2m:sch": { "se": { "sce": ["* * * * * * 2001"] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    create_cin(u, "/cse-in/app/c", &ae, "urgent");
    urgent_rx.wait_for(|r| r.rep()["m2m:cin"]["con"] == json!("urgent"), WAIT);
    // The CSEBase has one schedule.
    let cb = |rn: &str| {
        create(
            u,
            "/cse-in",
            "CAdmin",
            18,
            json!({ "m2m:sch": { "rn": rn, "se": { "sce": ["* * * * * * *"] } } }),
        )
        .0
    };
    assert_eq!((cb("reach"), cb("reach2")), (2001, 4000));
    let (rsc, _) = create(
        u,
        "/cse-in/app/c",
        &ae,
        18,
        json!({ "m2m:sch": { "se": { "sce": ["* * * * * * *"] } } }),
    );
    assert_eq!(rsc, 4108, "not under a container");
    let (rsc, b) = create(
        u,
        "/cse-in",
        "CAdmin",
        14,
        json!({ "m2m:nod": { "rn": "n", "ni": "urn:sn:n" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create(
        u,
        "/cse-in/n",
        "CAdmin",
        18,
        json!({ "m2m:sch": { "se": { "sce": ["* 0-5 2 * * * *"] }, "nco": true } }),
    );
    assert_eq!(rsc, 5001, "no Underlying Network to coordinate with: {b}");
    let (rsc, b) = create(
        u,
        "/cse-in/n",
        "CAdmin",
        18,
        json!({ "m2m:sch": { "rn": "s", "se": { "sce": ["* 0-5 2 * * * *"] }, "nco": false } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = update(
        u,
        "/cse-in/n/s",
        "CAdmin",
        json!({ "m2m:sch": { "nco": true } }),
    );
    assert_eq!(rsc, 5001, "{b}");
}

/// pendingNotification (TS-0001 table 9.6.8-2): events missed outside the notification schedule
/// are sent when it allows again: the last one (Event Category "latest"), or all of them.
#[test]
fn missed_notifications_follow_the_pending_notification_policy() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Cpending", "app", &[]);
    create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "c" }));
    let (rx_latest, rx_all) = (Receiver::start(), Receiver::start());
    for (rn, rx, pn) in [("latest", &rx_latest, 1), ("all", &rx_all, 2)] {
        let (rsc, b) = create(
            u,
            "/cse-in/app/c",
            &ae,
            23,
            json!({ "m2m:sub": { "rn": rn, "nu": [rx.url()], "enc": { "net": [3] }, "pn": pn } }),
        );
        assert_eq!(rsc, 2001, "{b}");
        let (rsc, b) = create(
            u,
            &format!("/cse-in/app/c/{rn}"),
            &ae,
            18,
            json!({ "m2m:sch": { "se": { "sce": ["* * * * * * 2001"] } } }),
        );
        assert_eq!(rsc, 2001, "{b}");
    }
    for i in 0..3 {
        create_cin(u, "/cse-in/app/c", &ae, &format!("m{i}"));
    }
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(
        rx_latest.count(|r| r.net() == Some(3)) + rx_all.count(|r| r.net() == Some(3)),
        0
    );
    for rn in ["latest", "all"] {
        let (rsc, b) = update(
            u,
            &format!("/cse-in/app/c/{rn}/notificationSchedule"),
            &ae,
            json!({ "m2m:sch": { "se": { "sce": ["* * * * * * *"] } } }),
        );
        assert_eq!(rsc, 2004, "{b}");
    }
    let all: Vec<Value> = rx_all
        .wait_for_n(3, |r| r.net() == Some(3), WAIT)
        .iter()
        .map(|r| r.rep()["m2m:cin"]["con"].clone())
        .collect();
    assert_eq!(
        all,
        [json!("m0"), json!("m1"), json!("m2")],
        "all, in order"
    );
    let latest = rx_latest.wait_for(|r| r.net() == Some(3), WAIT);
    assert_eq!(latest.rep()["m2m:cin"]["con"], json!("m2"));
    assert_eq!(
        latest.headers.get("x-m2m-ec").map(String::as_str),
        Some("4"),
        "latest"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        rx_latest.count(|r| r.net() == Some(3)),
        1,
        "only the last one"
    );
}

/// The target of a blocking subscription decides every UPDATE of the resource, so it must hold
/// the UPDATE privilege there (TS-0001 clause 10.2.10.2): an AE that may only read and
/// subscribe cannot make itself (nor be made by anyone) the veto of the owner's updates, in any
/// form of its ID, at creation or by an UPDATE of the target.
#[test]
fn only_an_entity_that_may_update_the_resource_blocks_its_updates() {
    let s = setup();
    let reader = register_ae(s.cse.url(), "/cse-in", "Creader", "reader", &[s.rx.url()]);
    let gate = register_ae(s.cse.url(), "/cse-in", "Cgate", "gate", &[s.rx.url()]);
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app",
        &s.ae,
        1,
        json!({ "m2m:acp": { "rn": "acp", "pv": { "acr": [
            { "acor": [s.ae.as_str()], "acop": 63 },
            { "acor": [reader.as_str()], "acop": 3 },
            { "acor": [gate.as_str()], "acop": 7 }
        ] }, "pvs": { "acr": [{ "acor": [s.ae.as_str()], "acop": 63 }] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let acpi = json!({ "m2m:cnt": { "acpi": ["cse-in/app/acp"] } });
    assert_eq!(update(s.cse.url(), "/cse-in/app/c", &s.ae, acpi).0, 2004);
    let blocking =
        |nu: &str| json!({ "m2m:sub": { "rn": "block", "nu": [nu], "enc": { "net": [7] } } });
    for (from, nu) in [
        (reader.as_str(), "Creader"),
        (reader.as_str(), "/id-in/Creader"),
        (reader.as_str(), "//m2m.example.com/id-in/Creader"),
        (reader.as_str(), "cse-in/reader"),
        (reader.as_str(), "/id-in/cse-in/reader"),
        // Nor does the owner make a mere reader the veto of its own updates.
        (s.ae.as_str(), "Creader"),
    ] {
        let (rsc, b) = create(s.cse.url(), "/cse-in/app/c", from, 23, blocking(nu));
        assert_eq!(rsc, 4103, "{from} names {nu}: {b}");
    }
    // A target that is no AE or CSE cannot hold the privilege: 4000.
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        23,
        blocking("cse-in/app"),
    );
    assert_eq!(
        rsc, 2001,
        "the owner's own AE resource names the owner: {b}"
    );
    assert_eq!(delete(s.cse.url(), "/cse-in/app/c/block", &s.ae).0, 2002);
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        23,
        blocking("cse-in/app/c"),
    );
    assert_eq!(rsc, 4000, "a container is no notification target here: {b}");
    // The reader's updates of the container are refused anyway, and nothing blocks them.
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/c",
        &reader,
        json!({ "m2m:cnt": { "lbl": ["mine"] } }),
    );
    assert_eq!(rsc, 4103);
    // An entity that may update: accepted; an UPDATE handing the veto to the reader is refused
    // and the gate stays the target.
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/c",
        &gate,
        23,
        blocking("/id-in/Cgate"),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/c/block",
        &gate,
        json!({ "m2m:sub": { "nu": ["Creader"] } }),
    );
    assert_eq!(rsc, 4103, "{b}");
    let (_, b) = retrieve(s.cse.url(), "/cse-in/app/c/block", &gate);
    assert_eq!(b["m2m:sub"]["nu"], json!(["/id-in/Cgate"]), "{b}");
    // The owner's update reaches the gate, and only the gate.
    label(&s, "seen");
    let n = s.rx.wait_for(|r| r.net() == Some(7), WAIT);
    assert_eq!(n.rep(), &json!({ "m2m:cnt": { "lbl": ["seen"] } }));
    // The owner takes the gate's UPDATE back: its subscription blocks nothing any more and is
    // shown nothing, even when it would refuse.
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/acp",
        &s.ae,
        json!({ "m2m:acp": { "pv": { "acr": [
            { "acor": [s.ae.as_str()], "acop": 63 },
            { "acor": [reader.as_str()], "acop": 3 },
            { "acor": [gate.as_str()], "acop": 3 }
        ] } } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    s.rx.answer_with(4005);
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": ["unseen"] } }),
    );
    assert_eq!(rsc, 2004);
    assert_eq!(
        s.rx.count(|r| r.net() == Some(7)),
        1,
        "the gate was not asked"
    );
}

/// A notification shows nothing its subscriber could not RETRIEVE: a child with policies of its
/// own, or made without any by someone else, is not announced to a subscriber that may read
/// only the parent; a subscriber whose right to read is taken back hears nothing more.
#[test]
fn notifications_show_only_what_the_subscriber_may_read() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let owner = register_ae(u, "/cse-in", "Cowner", "owner", &[]);
    let sub_ae = register_ae(u, "/cse-in", "Csubscriber", "subscriber", &[]);
    let rx = Receiver::start();
    let acp = |acop: u64| {
        json!({ "pv": { "acr": [
            { "acor": [owner.as_str()], "acop": 63 }, { "acor": [sub_ae.as_str()], "acop": acop }
        ] }, "pvs": { "acr": [{ "acor": [owner.as_str()], "acop": 63 }] } })
    };
    let mut shared = acp(3);
    shared["rn"] = json!("shared");
    assert_eq!(
        create(u, "/cse-in/owner", &owner, 1, json!({ "m2m:acp": shared })).0,
        2001
    );
    let mut private = acp(63);
    private["pv"]["acr"].as_array_mut().unwrap().pop();
    private["rn"] = json!("private");
    assert_eq!(
        create(u, "/cse-in/owner", &owner, 1, json!({ "m2m:acp": private })).0,
        2001
    );
    create_cnt(
        u,
        "/cse-in/owner",
        &owner,
        json!({ "rn": "c", "acpi": ["cse-in/owner/shared"] }),
    );
    let (rsc, b) = create(
        u,
        "/cse-in/owner/c",
        &sub_ae,
        23,
        json!({ "m2m:sub": { "rn": "om", "nu": [rx.url()], "enc": { "om": [{ "ops": 2 }] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create(
        u,
        "/cse-in/owner/c",
        &sub_ae,
        23,
        json!({ "m2m:sub": { "rn": "s", "nu": [rx.url()], "enc": { "net": [1, 3, 4] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let monitored = |rx: &Receiver| rx.count(|r| r.sgn().pointer("/nev/om").is_some());
    assert_eq!(retrieve(u, "/cse-in/owner/c", &owner).0, 2000);
    assert_eq!(poll(WAIT, || (monitored(&rx) == 1).then_some(())), Some(()));
    // What the subscriber may read is announced.
    create_cin(u, "/cse-in/owner/c", &owner, "seen");
    create_cnt(
        u,
        "/cse-in/owner/c",
        &owner,
        json!({ "rn": "open", "acpi": ["cse-in/owner/shared"] }),
    );
    // What it may not read is not: a child with the owner's private policy, one without any
    // (only its creator may read it).
    create_cnt(
        u,
        "/cse-in/owner/c",
        &owner,
        json!({ "rn": "hidden", "acpi": ["cse-in/owner/private"] }),
    );
    create_cnt(u, "/cse-in/owner/c", &owner, json!({ "rn": "mine" }));
    assert_eq!(retrieve(u, "/cse-in/owner/c/hidden", &sub_ae).0, 4103);
    assert_eq!(retrieve(u, "/cse-in/owner/c/mine", &sub_ae).0, 4103);
    assert_eq!(delete(u, "/cse-in/owner/c/hidden", &owner).0, 2002);
    // A marker after them: everything before it has arrived when it does.
    create_cnt(
        u,
        "/cse-in/owner/c",
        &owner,
        json!({ "rn": "marker", "acpi": ["cse-in/owner/shared"] }),
    );
    rx.wait_for(|r| r.rep()["m2m:cnt"]["rn"] == json!("marker"), WAIT);
    let names: Vec<String> = rx
        .all()
        .iter()
        .filter(|r| r.net().is_some())
        .map(|r| {
            let rep = r.rep();
            let name = rep["m2m:cin"]["con"]
                .as_str()
                .or(rep["m2m:cnt"]["rn"].as_str());
            format!("{}:{}", r.net().unwrap(), name.unwrap_or("?"))
        })
        .collect();
    assert_eq!(names, ["3:seen", "3:open", "3:marker"], "{names:?}");
    // The owner takes the right to read back: neither updates nor children are told any more.
    let mut revoke = acp(1);
    revoke.as_object_mut().unwrap().remove("pvs");
    let (rsc, b) = update(
        u,
        "/cse-in/owner/shared",
        &owner,
        json!({ "m2m:acp": revoke }),
    );
    assert_eq!(rsc, 2004, "{b}");
    let before = rx.count(|r| r.net().is_some());
    create_cin(u, "/cse-in/owner/c", &owner, "secret");
    let (rsc, _) = update(
        u,
        "/cse-in/owner/c",
        &owner,
        json!({ "m2m:cnt": { "lbl": ["secret"] } }),
    );
    assert_eq!(rsc, 2004);
    assert_eq!(retrieve(u, "/cse-in/owner/c", &owner).0, 2000);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        rx.count(|r| r.net().is_some()),
        before,
        "{:?}",
        rx.all().last().map(|r| r.body.clone())
    );
    assert_eq!(
        monitored(&rx),
        1,
        "who reads the container is not told either"
    );
}
