//! Subscriptions and notifications on a real `m2m cse` (TS-0004 clauses 7.3.8, 7.4.8 and 7.5.1),
//! received by a real HTTP server.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

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

fn subscribe(s: &Setup, target: &str, sub: Value) -> Value {
    let (rsc, b) = create(s.cse.url(), target, &s.ae, 23, json!({ "m2m:sub": sub }));
    assert_eq!(rsc, 2001, "subscription on {target}: {b}");
    b["m2m:sub"].clone()
}

fn is_event(r: &Received) -> bool {
    r.net().is_some()
}

#[test]
fn creation_sends_a_verification_request() {
    let s = setup();
    let sub = subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "s", "nu": [s.rx.url()], "enc": { "net": [3] } }),
    );
    let v = s.rx.wait_for(Received::is_verification, WAIT);
    assert_eq!(v.method, "POST");
    let sur = v.sur().unwrap_or_default();
    assert!(
        sur.ends_with(sub["ri"].as_str().expect("sub ri")),
        "the verification names the subscription ({}): {:?}",
        sub["ri"],
        v.body
    );
    assert_eq!(
        v.sgn()["cr"],
        json!(s.ae),
        "the verification names the creator: {:?}",
        v.body
    );
    assert!(
        v.headers.contains_key("x-m2m-origin") && v.headers.contains_key("x-m2m-ri"),
        "a notification is a oneM2M request: {:?}",
        v.headers
    );
    assert_eq!(
        sub["nct"],
        json!(1),
        "nct defaults to all attributes: {sub}"
    );
    assert_eq!(s.rx.count(is_event), 0, "no event before anything happened");
}

#[test]
fn a_refusing_or_unreachable_target_fails_the_subscription() {
    let s = setup();
    s.rx.answer_with(4103);
    let r = create_full(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        23,
        json!({ "m2m:sub": { "rn": "refused", "nu": [s.rx.url()] } }),
    );
    assert_eq!(r.rsc, 5204, "a target refusing verification: {:?}", r.body);
    assert!(r.dbg().is_some_and(|d| !d.is_empty()), "{:?}", r.body);
    assert_eq!(s.rx.count(Received::is_verification), 1);
    let (rsc, b) = retrieve(s.cse.url(), "/cse-in/app/c/refused", &s.ae);
    assert_eq!(rsc, 4004, "no subscription was created: {b}");

    let dead = format!("http://127.0.0.1:{}/nothing", unused_port());
    let r = create_full(
        s.cse.url(),
        "/cse-in/app/c",
        &s.ae,
        23,
        json!({ "m2m:sub": { "rn": "dead", "nu": [dead] } }),
    );
    assert_eq!(r.rsc, 5204, "an unreachable target: {:?}", r.body);
}

#[test]
fn child_creation_notifies_with_the_instance() {
    let s = setup();
    let u = s.cse.url();
    let sub = subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "s", "nu": [s.rx.url()], "enc": { "net": [3] } }),
    );
    let cin = create_cin(u, "/cse-in/app/c", &s.ae, "hello");
    let n = s.rx.wait_for(|r| r.net() == Some(3), WAIT);
    assert_eq!(n.rep()["m2m:cin"]["con"], json!("hello"), "{:?}", n.body);
    assert_eq!(n.rep()["m2m:cin"]["ri"], json!(cin), "{:?}", n.body);
    assert!(
        n.sur()
            .is_some_and(|x| x.ends_with(sub["ri"].as_str().unwrap_or("?"))),
        "sur names the subscription: {:?}",
        n.body
    );
    // Updating the container is not selected by net=[3].
    let (rsc, _) = update(
        u,
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": ["x"] } }),
    );
    assert_eq!(rsc, 2004);
    create_cin(u, "/cse-in/app/c", &s.ae, "second");
    let all = s.rx.wait_for_n(2, is_event, WAIT);
    assert!(
        all.iter().all(|r| r.net() == Some(3)),
        "only creations are notified: {all:#?}"
    );
    let cons: Vec<&Value> = all.iter().map(|r| &r.rep()["m2m:cin"]["con"]).collect();
    assert_eq!(
        cons,
        vec![&json!("hello"), &json!("second")],
        "notifications arrive in order"
    );
}

#[test]
fn update_notifies_whole_resource_or_modified_attributes() {
    let s = setup();
    let u = s.cse.url();
    let rx2 = Receiver::start();
    // Default eventNotificationCriteria: update of the resource; nct=1 (all attributes).
    subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "all", "nu": [s.rx.url()] }),
    );
    // nct=2: modified attributes only.
    subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "mod", "nu": [rx2.url()], "nct": 2, "enc": { "net": [1] } }),
    );
    let (rsc, b) = update(
        u,
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": ["changed"], "mni": 9 } }),
    );
    assert_eq!(rsc, 2004, "{b}");

    let n = s.rx.wait_for(is_event, WAIT);
    assert_eq!(n.net(), Some(1), "update event: {:?}", n.body);
    let cnt = &n.rep()["m2m:cnt"];
    assert_eq!(cnt["lbl"], json!(["changed"]), "{:?}", n.body);
    assert_eq!(
        cnt["rn"],
        json!("c"),
        "nct=1 carries all attributes: {:?}",
        n.body
    );

    let n = rx2.wait_for(is_event, WAIT);
    assert_eq!(n.net(), Some(1), "{:?}", n.body);
    let m = n.rep()["m2m:cnt"].as_object().cloned().unwrap_or_default();
    assert_eq!(m.get("lbl"), Some(&json!(["changed"])), "{:?}", n.body);
    assert_eq!(m.get("mni"), Some(&json!(9)), "{:?}", n.body);
    assert!(
        !m.contains_key("rn") && !m.contains_key("ct"),
        "nct=2 carries only the modified attributes: {:?}",
        n.body
    );
    // A child creation does not trigger update subscriptions.
    create_cin(u, "/cse-in/app/c", &s.ae, "x");
    let (rsc, _) = update(
        u,
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "mni": 8 } }),
    );
    assert_eq!(rsc, 2004);
    let events = s.rx.wait_for_n(2, is_event, WAIT);
    assert!(
        events.iter().all(|e| e.net() == Some(1)),
        "only updates: {events:#?}"
    );
}

#[test]
fn deletion_notifies_and_tells_the_subscriber() {
    let s = setup();
    let u = s.cse.url();
    let su = Receiver::start();
    let sub = subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "s", "nu": [s.rx.url()], "enc": { "net": [2] }, "su": su.url() }),
    );
    let (rsc, b) = delete(u, "/cse-in/app/c", &s.ae);
    assert_eq!(rsc, 2002, "{b}");
    let n = s.rx.wait_for(is_event, WAIT);
    assert_eq!(n.net(), Some(2), "delete event: {:?}", n.body);
    assert_eq!(n.rep()["m2m:cnt"]["rn"], json!("c"), "{:?}", n.body);
    let d = su.wait_for(|r| r.sgn().get("sud").is_some(), WAIT);
    assert_eq!(d.sgn()["sud"], json!(true), "{:?}", d.body);
    assert!(
        d.sur()
            .is_some_and(|x| x.ends_with(sub["ri"].as_str().unwrap_or("?"))),
        "subscriptionDeletion names the subscription: {:?}",
        d.body
    );
    let (rsc, _) = retrieve(u, &format!("/{}", sub["ri"].as_str().unwrap_or("")), &s.ae);
    assert_eq!(rsc, 4004, "the subscription went with its resource");
}

#[test]
fn expiration_counter_deletes_the_subscription() {
    let s = setup();
    let u = s.cse.url();
    let sub = subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "s", "nu": [s.rx.url()], "enc": { "net": [3] }, "exc": 2 }),
    );
    let sub_path = format!("/{}", sub["ri"].as_str().expect("ri"));
    create_cin(u, "/cse-in/app/c", &s.ae, "1");
    s.rx.wait_for(is_event, WAIT);
    // The counter may be decremented after the triggering request was answered.
    let counted = poll(WAIT, || {
        let (rsc, b) = retrieve(u, &sub_path, &s.ae);
        assert_eq!(rsc, 2000, "alive after 1 of 2 notifications: {b}");
        (b["m2m:sub"]["exc"] == json!(1)).then_some(())
    });
    assert!(counted.is_some(), "exc counts down from 2 to 1");
    create_cin(u, "/cse-in/app/c", &s.ae, "2");
    let gone = poll(WAIT, || {
        let (rsc, _) = retrieve(u, &sub_path, &s.ae);
        (rsc == 4004).then_some(())
    });
    assert!(
        gone.is_some(),
        "exc=2: the subscription is deleted after 2 notifications"
    );
    create_cin(u, "/cse-in/app/c", &s.ae, "3");
    let events = s.rx.wait_for_n(2, is_event, WAIT);
    assert_eq!(events.len(), 2, "{events:#?}");
    // The third instance must not be notified; give a stray notification a moment to show up.
    assert!(
        s.rx.try_wait_for(
            |r| r.rep()["m2m:cin"]["con"] == json!("3"),
            Duration::from_millis(300)
        )
        .is_none(),
        "no notification after the subscription expired: {:#?}",
        s.rx.all()
    );
}

#[test]
fn notifications_to_an_ae_id_are_relayed_to_its_point_of_access() {
    let s = setup();
    let u = s.cse.url();
    let listener_rx = Receiver::start();
    let listener = register_ae(u, "/cse-in", "Clistener", "listener", &[listener_rx.url()]);
    // Subscribed by another AE with the listener's AE-ID as notificationURI.
    subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "s", "nu": [listener], "enc": { "net": [3] } }),
    );
    let v = listener_rx.wait_for(Received::is_verification, WAIT);
    assert_eq!(v.method, "POST", "{v:?}");
    assert_eq!(v.headers.get("x-m2m-rvi").map(String::as_str), Some("3"));
    create_cin(u, "/cse-in/app/c", &s.ae, "relayed");
    let n = listener_rx.wait_for(is_event, WAIT);
    assert_eq!(n.net(), Some(3));
    assert_eq!(n.rep()["m2m:cin"]["con"], json!("relayed"), "{:?}", n.body);

    // The SP-relative AE-ID works as well.
    let sp = format!("/id-in/{listener}");
    subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "s2", "nu": [sp], "enc": { "net": [1] } }),
    );
    let (rsc, _) = update(
        u,
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": ["y"] } }),
    );
    assert_eq!(rsc, 2004);
    let n = listener_rx.wait_for(|r| r.net() == Some(1), WAIT);
    assert_eq!(n.rep()["m2m:cnt"]["lbl"], json!(["y"]), "{:?}", n.body);

    // An AE of Release 2 gets primitives of its release (X-M2M-RVI 2), not 3.
    let old_rx = Receiver::start();
    let (rsc, b) = create(
        u,
        "/cse-in",
        "Cold",
        2,
        json!({ "m2m:ae": { "rn": "old", "api": "Nold", "rr": true, "srv": ["2"],
                            "poa": [old_rx.url()] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let old = b["m2m:ae"]["aei"].as_str().unwrap().to_owned();
    subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "s4", "nu": [old], "enc": { "net": [3] } }),
    );
    let v = old_rx.wait_for(Received::is_verification, WAIT);
    assert_eq!(
        v.headers.get("x-m2m-rvi").map(String::as_str),
        Some("2"),
        "{v:?}"
    );

    // An AE-ID without a reachable pointOfAccess fails verification.
    let mute = register_ae(u, "/cse-in", "Cmute", "mute", &[]);
    let r = create_full(
        u,
        "/cse-in/app/c",
        &s.ae,
        23,
        json!({ "m2m:sub": { "rn": "s3", "nu": [mute] } }),
    );
    assert_eq!(r.rsc, 5204, "an AE without poa as nu: {:?}", r.body);
}

#[test]
fn the_originator_itself_as_target_needs_no_verification() {
    let s = setup();
    let u = s.cse.url();
    // An AE with a poa subscribes with its own AE-ID as nu.
    let own_rx = Receiver::start();
    let me = register_ae(u, "/cse-in", "Cself", "self", &[own_rx.url()]);
    // The owner of the container lets it subscribe: CREATE of subscriptions, and RETRIEVE.
    let acp = create_acp(
        u,
        "/cse-in/app",
        &s.ae,
        "subscribers",
        vec![
            json!({ "acor": [me], "acop": OP_CREATE | OP_RETRIEVE, "acod": [{ "chty": [23] }] }),
            acr(&[&s.ae], OP_ALL),
        ],
        vec![acr(&[&s.ae], OP_ALL)],
    );
    set_acpi(u, "/cse-in/app/c", &s.ae, "m2m:cnt", &[&acp]);
    let (rsc, b) = create(
        u,
        "/cse-in/app/c",
        &me,
        23,
        json!({ "m2m:sub": { "rn": "own", "nu": [me.clone()], "enc": { "net": [3] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    create_cin(u, "/cse-in/app/c", &s.ae, "to-self");
    let n = own_rx.wait_for(is_event, WAIT);
    assert_eq!(n.rep()["m2m:cin"]["con"], json!("to-self"));
    assert_eq!(
        own_rx.count(Received::is_verification),
        0,
        "TS-0004 7.3.8.2.x: no verification when nu is the originator: {:#?}",
        own_rx.all()
    );
}

/// eventNotificationCriteria beyond the event type: `atr` selects updates of those attributes,
/// `chty` children of those types; and the subscription features this CSE does not act on are
/// refused with 5001 when created or updated, instead of being stored and never honoured.
#[test]
fn attribute_and_child_type_criteria_and_unsupported_features_refused() {
    let s = setup();
    let u = s.cse.url();
    let rx2 = Receiver::start();
    subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "lbl-only", "nu": [s.rx.url()], "enc": { "net": [1], "atr": ["lbl"] } }),
    );
    subscribe(
        &s,
        "/cse-in/app",
        json!({ "rn": "sub-cnt", "nu": [rx2.url()], "enc": { "net": [3], "chty": [3] } }),
    );
    let (rsc, _) = update(
        u,
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "mni": 5 } }),
    );
    assert_eq!(rsc, 2004);
    let (rsc, _) = update(
        u,
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": ["a"] } }),
    );
    assert_eq!(rsc, 2004);
    let n = s.rx.wait_for(is_event, WAIT);
    assert_eq!(n.rep()["m2m:cnt"]["lbl"], json!(["a"]), "{:?}", n.body);
    // A <subscription> and a <container> created under the AE: only the container is told.
    let (rsc, b) = create(
        u,
        "/cse-in/app",
        &s.ae,
        23,
        json!({ "m2m:sub": { "rn": "other", "nu": [s.ae.clone()] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    create_cnt(u, "/cse-in/app", &s.ae, json!({ "rn": "c2" }));
    let n = rx2.wait_for(is_event, WAIT);
    assert_eq!(n.rep()["m2m:cnt"]["rn"], json!("c2"), "{:?}", n.body);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.rx.count(is_event), 1, "the mni update told nobody");
    assert_eq!(
        rx2.count(is_event),
        1,
        "the subscription's creation told nobody"
    );

    for (rn, extra) in [
        ("nsp", json!({ "nsp": 1 })),
        ("net5", json!({ "enc": { "net": [5] } })),
        ("net6", json!({ "enc": { "net": [6] }, "nct": 4 })),
    ] {
        let mut body = json!({ "rn": rn, "nu": [s.rx.url()] });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (rsc, b) = create(u, "/cse-in/app/c", &s.ae, 23, json!({ "m2m:sub": body }));
        assert_eq!(rsc, 5001, "{rn}: {b}");
        let (rsc, b) = update(
            u,
            "/cse-in/app/c/lbl-only",
            &s.ae,
            json!({ "m2m:sub": extra }),
        );
        assert_eq!(rsc, 5001, "update with {rn}: {b}");
    }
    let (rsc, b) = create(
        u,
        "/cse-in/app/c",
        &s.ae,
        23,
        json!({ "m2m:sub": { "rn": "plain-ln", "nu": [s.rx.url()], "ln": false } }),
    );
    assert_eq!(
        rsc, 2001,
        "latestNotify false asks for nothing unsupported: {b}"
    );
}

/// The conditions of eventNotificationCriteria on the resource an event concerns (TS-0001 table
/// 9.6.8-3): the child for a child's creation, the subscribed-to resource for an update.
#[test]
fn event_conditions_select_by_the_resource() {
    let s = setup();
    let u = s.cse.url();
    let rx_big = Receiver::start();
    let rx_or = Receiver::start();
    // Children of 5 bytes or more only.
    subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "big", "nu": [rx_big.url()], "enc": { "net": [3], "sza": 5 } }),
    );
    // Updates while the stateTag is below 3 only.
    subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "early", "nu": [s.rx.url()], "enc": { "net": [1], "sts": 3 } }),
    );
    // Children under 3 bytes or of 10 and more (fo=2: OR).
    subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "edges", "nu": [rx_or.url()], "enc": { "net": [3], "szb": 3, "sza": 10, "fo": 2 } }),
    );
    for con in ["ab", "abcdef", "abcdefghijkl"] {
        create_cin(u, "/cse-in/app/c", &s.ae, con);
    }
    let cons = |rx: &Receiver, n: usize| -> Vec<String> {
        let mut got: Vec<String> = rx
            .wait_for_n(n, is_event, WAIT)
            .iter()
            .map(|r| r.rep()["m2m:cin"]["con"].as_str().unwrap_or("").to_owned())
            .collect();
        got.sort();
        got
    };
    assert_eq!(cons(&rx_big, 2), ["abcdef", "abcdefghijkl"]);
    assert_eq!(cons(&rx_or, 2), ["ab", "abcdefghijkl"]);
    // The container's stateTag went 0 -> 3 with the instances: an update now (st 4) is not told;
    // a fresh container's are, while its stateTag is below 3.
    update(
        u,
        "/cse-in/app/c",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": ["late"] } }),
    );
    create_cnt(u, "/cse-in/app", &s.ae, json!({ "rn": "fresh" }));
    subscribe(
        &s,
        "/cse-in/app/fresh",
        json!({ "rn": "early", "nu": [s.rx.url()], "enc": { "net": [1], "sts": 3 } }),
    );
    for i in 0..4 {
        update(
            u,
            "/cse-in/app/fresh",
            &s.ae,
            json!({ "m2m:cnt": { "lbl": [format!("l{i}")] } }),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let told: Vec<Value> =
        s.rx.all()
            .iter()
            .filter(|r| is_event(r))
            .map(|r| r.rep()["m2m:cnt"]["st"].clone())
            .collect();
    assert_eq!(told, [json!(1), json!(2)], "stateTags below 3 only");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx_big.count(is_event), 2);
    assert_eq!(rx_or.count(is_event), 2);
    // A condition that is no timestamp is refused when the subscription is made.
    let (rsc, b) = create(
        u,
        "/cse-in/app/c",
        &s.ae,
        23,
        json!({ "m2m:sub": { "nu": [s.rx.url()], "enc": { "crb": "soon" } } }),
    );
    assert_eq!(rsc, 4000, "{b}");
}

/// rateLimit (TS-0001 clause 10.2.10.x): at most mnn events in each window of tww, the others
/// held for the next windows, in order.
#[test]
fn a_rate_limit_holds_events_for_the_next_windows() {
    let s = setup();
    let u = s.cse.url();
    for (rl, what) in [
        (json!({ "mnn": 0, "tww": "PT2S" }), "no event in a window"),
        (json!({ "mnn": 2, "tww": "PT0.1S" }), "a window under 1 s"),
        (json!({ "mnn": 2 }), "no window"),
    ] {
        let (rsc, b) = create(
            u,
            "/cse-in/app/c",
            &s.ae,
            23,
            json!({ "m2m:sub": { "nu": [s.rx.url()], "enc": { "net": [3] }, "rl": rl } }),
        );
        assert_eq!(rsc, 4000, "{what}: {b}");
    }
    subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "slow", "nu": [s.rx.url()], "enc": { "net": [2, 3] }, "rl": { "mnn": 2, "tww": "PT2S" } }),
    );
    let start = std::time::Instant::now();
    for i in 0..5 {
        create_cin(u, "/cse-in/app/c", &s.ae, &format!("e{i}"));
    }
    let got = |rx: &Receiver| -> Vec<String> {
        rx.all()
            .iter()
            .filter(|r| is_event(r))
            .map(|r| r.rep()["m2m:cin"]["con"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    s.rx.wait_for_n(2, is_event, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(got(&s.rx), ["e0", "e1"], "two in the first window");
    s.rx.wait_for_n(4, is_event, WAIT);
    assert!(
        start.elapsed() >= Duration::from_millis(1_900),
        "the next two waited for the next window"
    );
    s.rx.wait_for_n(5, is_event, WAIT);
    assert!(
        start.elapsed() >= Duration::from_millis(3_900),
        "the last waited for the third window"
    );
    assert_eq!(got(&s.rx), ["e0", "e1", "e2", "e3", "e4"], "in order");
    // A full window holds events, not the subscription's last notice: the subscribed-to
    // container's deletion is told at once.
    std::thread::sleep(Duration::from_millis(2_100));
    for i in 5..8 {
        create_cin(u, "/cse-in/app/c", &s.ae, &format!("e{i}"));
    }
    let deleted_at = std::time::Instant::now();
    let (rsc, _) = delete(u, "/cse-in/app/c", &s.ae);
    assert_eq!(rsc, 2002);
    s.rx.wait_for(|r| r.net() == Some(2), WAIT);
    assert!(
        deleted_at.elapsed() < Duration::from_millis(1_500),
        "not held for the next window"
    );
}

/// preSubscriptionNotify (`psn`): a new subscription to child creations hears of the last
/// instances made before it, oldest first, up to the number asked; hidden instances are not sent.
#[test]
fn a_new_subscription_hears_of_the_instances_before_it() {
    let s = setup();
    let u = s.cse.url();
    for i in 0..5 {
        create_cin(u, "/cse-in/app/c", &s.ae, &format!("before{i}"));
    }
    subscribe(
        &s,
        "/cse-in/app/c",
        json!({ "rn": "late", "nu": [s.rx.url()], "enc": { "net": [3] }, "psn": 3 }),
    );
    let cons = |rx: &Receiver| -> Vec<String> {
        rx.all()
            .iter()
            .filter(|r| is_event(r))
            .map(|r| r.rep()["m2m:cin"]["con"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    s.rx.wait_for_n(3, is_event, WAIT);
    create_cin(u, "/cse-in/app/c", &s.ae, "after");
    s.rx.wait_for_n(4, is_event, WAIT);
    assert_eq!(cons(&s.rx), ["before2", "before3", "before4", "after"]);
    // psn is set at creation only; 0 is no number of events.
    let (rsc, b) = update(
        u,
        "/cse-in/app/c/late",
        &s.ae,
        json!({ "m2m:sub": { "psn": 1 } }),
    );
    assert_eq!(rsc, 4000, "{b}");
    // Instances a RETRIEVE would not show are not sent: retrieval disabled, or counted reads.
    let rx2 = Receiver::start();
    create_cnt(
        u,
        "/cse-in/app",
        &s.ae,
        json!({ "rn": "hidden", "disr": true }),
    );
    create_cin(u, "/cse-in/app/hidden", &s.ae, "secret");
    create_cnt(u, "/cse-in/app", &s.ae, json!({ "rn": "counted" }));
    let (rsc, _) = create(
        u,
        "/cse-in/app/counted",
        &s.ae,
        4,
        json!({ "m2m:cin": { "con": "once", "dcnt": 1 } }),
    );
    assert_eq!(rsc, 2001);
    for target in ["/cse-in/app/hidden", "/cse-in/app/counted"] {
        let (rsc, b) = create(
            u,
            target,
            &s.ae,
            23,
            json!({ "m2m:sub": { "nu": [rx2.url()], "enc": { "net": [3] }, "psn": 5 } }),
        );
        assert_eq!(rsc, 2001, "{b}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(cons(&rx2).is_empty(), "{:?}", cons(&rx2));
}

/// A plain HTTP service (no oneM2M) that answers every request with `status` and a JSON body
/// holding a secret; counts the requests it got.
fn plain_service(status: u16) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/internal/_search", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = conn.set_read_timeout(Some(Duration::from_millis(300)));
            let mut buf = [0u8; 8192];
            let _ = conn.read(&mut buf);
            let body = r#"{"secret":"internal-data-42"}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, hits)
}

/// A NOTIFY relayed to an AE's pointOfAccess, an address the AE chose: whoever sent it learns
/// the status code only, never what answered there nor why it failed.
#[test]
fn a_notify_relayed_to_a_point_of_access_returns_only_its_status() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let (ok_url, hits) = plain_service(200);
    let (refusing_url, _) = plain_service(403);
    let closed = format!("http://127.0.0.1:{}/x", unused_port());
    let ae = register_ae(u, "/cse-in", "Cprober", "prober", &[&ok_url]);
    let sgn = json!({ "m2m:sgn": { "nev": { "rep": {}, "net": 1 } } });
    let (rsc, b) = notify(u, "/cse-in/prober", &ae, sgn.clone());
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "relayed once"
    );
    assert_eq!(rsc, 2000, "{b}");
    assert!(
        !b.to_string().contains("internal-data-42"),
        "the service's answer leaked: {b}"
    );
    for (poa, what) in [
        (refusing_url, "a refusing service"),
        (closed, "a closed port"),
    ] {
        let (rsc, _) = update(
            u,
            "/cse-in/prober",
            &ae,
            json!({ "m2m:ae": { "poa": [poa] } }),
        );
        assert_eq!(rsc, 2004);
        let (rsc, b) = notify(u, "/cse-in/prober", &ae, sgn.clone());
        assert_eq!(rsc, 5103, "{what}: {b}");
        let text = b.to_string();
        assert!(
            text.contains("did not take the notification") && !text.contains("127.0.0.1"),
            "{what}: one fixed text naming no address: {b}"
        );
    }
}

/// A notification target is an entity: a virtual resource (a group's fanOutPoint, which answers
/// for its members without asking them; `la`; a pollingChannel's `pcu`) is refused.
#[test]
fn a_virtual_resource_is_no_notification_target() {
    let s = setup();
    let u = s.cse.url();
    let member_rx = Receiver::start();
    let member = register_ae(u, "/cse-in", "Cmember", "member", &[member_rx.url()]);
    let (rsc, b) = create(
        u,
        "/cse-in/app",
        &s.ae,
        9,
        json!({ "m2m:grp": { "rn": "g", "mt": 2, "mnm": 10, "mid": [member] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create(
        u,
        "/cse-in/app",
        &s.ae,
        15,
        json!({ "m2m:pch": { "rn": "pch" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    for nu in [
        "cse-in/app/g/fopt",
        "/id-in/cse-in/app/g/fopt",
        "cse-in/app/g/fopt/x",
        "cse-in/app/c/la",
        "cse-in/app/pch/pcu",
    ] {
        let r = create_full(
            u,
            "/cse-in/app/c",
            &s.ae,
            23,
            json!({ "m2m:sub": { "nu": [nu], "enc": { "net": [3] } } }),
        );
        assert_eq!(r.rsc, 4000, "nu {nu}: {:?}", r.body);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(member_rx.count(|_| true), 0, "nothing reached the member");
}

/// A pointOfAccess that leads back to the CSE (to the AE itself, to another AE whose
/// pointOfAccess leads back, to a group of such AEs) does not make a NOTIFY go round: it comes
/// back once, is refused as a loop, and the CSE keeps answering.
#[test]
fn a_point_of_access_leading_back_makes_no_loop() {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let a = register_ae(
        &u,
        "/cse-in",
        "Cloopa",
        "loopa",
        &[&format!("{u}/cse-in/loopa")],
    );
    let sgn = json!({ "m2m:sgn": { "nev": { "rep": {}, "net": 1 } } });
    let back = |n: usize| {
        poll(WAIT, || {
            (cse.stderr()
                .matches("came back to the CSE relaying it")
                .count()
                >= n)
                .then_some(())
        })
        .is_some()
    };
    let (rsc, b) = notify(&u, "/cse-in/loopa", &a, sgn.clone());
    assert_eq!(rsc, 5103, "{b}");
    assert!(back(1), "the loop was cut:\n{}", cse.stderr());
    // Two AEs pointing at each other.
    let b_ae = register_ae(
        &u,
        "/cse-in",
        "Cloopb",
        "loopb",
        &[&format!("{u}/cse-in/loopa")],
    );
    let (rsc, _) = update(
        &u,
        "/cse-in/loopa",
        &a,
        json!({ "m2m:ae": { "poa": [format!("{u}/cse-in/loopb")] } }),
    );
    assert_eq!(rsc, 2004);
    let acp = create_acp(
        &u,
        "/cse-in/loopa",
        &a,
        "acp",
        vec![acr(&[&a, &b_ae], OP_ALL)],
        vec![acr(&[&a], OP_ALL)],
    );
    set_acpi(&u, "/cse-in/loopa", &a, "m2m:ae", &[&acp]);
    let (rsc, b) = notify(&u, "/cse-in/loopb", &b_ae, sgn.clone());
    assert_eq!(rsc, 5103, "{b}");
    assert!(back(2), "the ping-pong was cut:\n{}", cse.stderr());
    // A group of AEs whose pointsOfAccess lead to the group's fanOutPoint.
    let (rsc, g) = create(
        &u,
        "/cse-in/loopb",
        &b_ae,
        9,
        json!({ "m2m:grp": { "rn": "g", "mt": 2, "mnm": 10, "mid": [b_ae] } }),
    );
    assert_eq!(rsc, 2001, "{g}");
    let (rsc, _) = update(
        &u,
        "/cse-in/loopb",
        &b_ae,
        json!({ "m2m:ae": { "poa": [format!("{u}/cse-in/loopb/g/fopt")] } }),
    );
    assert_eq!(rsc, 2004);
    let (rsc, b) = notify(&u, "/cse-in/loopb", &b_ae, sgn);
    assert_eq!(rsc, 5103, "{b}");
    assert!(
        back(3),
        "the loop through the group was cut:\n{}",
        cse.stderr()
    );
    assert_eq!(
        retrieve(&u, "/cse-in/loopa", &a).0,
        2000,
        "the CSE still answers"
    );
}
