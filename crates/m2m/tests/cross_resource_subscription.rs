//! `<crossResourceSubscription>` on a real `m2m cse` over HTTP (TS-0004 clauses 7.4.58,
//! 7.5.1.2.18, 7.5.1.2.20): the subscriptions it makes and joins, its time windows across two
//! containers, the evaluation modes, its deletion and what it takes with it, and the rights of
//! its originator.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A CSE, an AE `app` (From `Ccrs`) with containers `c1`, `c2`, `c3`, and a receiver.
struct Setup {
    cse: CseProcess,
    ae: String,
    rx: Receiver,
}

fn setup() -> Setup {
    let cse = CseProcess::start_in();
    let ae = register_ae(cse.url(), "/cse-in", "Ccrs", "app", &[]);
    for c in ["c1", "c2", "c3"] {
        create_cnt(cse.url(), "/cse-in/app", &ae, json!({ "rn": c }));
    }
    Setup {
        cse,
        ae,
        rx: Receiver::start(),
    }
}

fn crs(s: &Setup, attrs: Value) -> (u16, Value) {
    create(
        s.cse.url(),
        "/cse-in/app",
        &s.ae,
        48,
        json!({ "m2m:crs": attrs }),
    )
}

fn two_containers(s: &Setup, rn: &str, twt: u64, tws: &str) -> Value {
    let (rsc, b) = crs(
        s,
        json!({ "rn": rn, "nu": [s.rx.url()], "twt": twt, "tws": tws,
                "rrat": ["cse-in/app/c1", "cse-in/app/c2"], "encs": { "enc": [{ "net": [3] }] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    b["m2m:crs"].clone()
}

fn is_cross(r: &Received) -> bool {
    r.sgn().get("sur").is_some() && r.sgn().get("nev").is_none() && !r.is_verification()
}

/// The resourceIDs of the subscriptions under a container.
fn subscriptions_of(s: &Setup, cnt: &str) -> Vec<String> {
    subscriptions_seen_by(s, cnt, &s.ae)
}

/// The same, as `from` finds them.
fn subscriptions_seen_by(s: &Setup, cnt: &str, from: &str) -> Vec<String> {
    let (rsc, b) = get_with_query(s.cse.url(), cnt, from, "fu=1&ty=23");
    assert_eq!(rsc, 2000, "{b}");
    b["m2m:uril"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn events_on_both_containers_within_one_sliding_window_notify_once() {
    let s = setup();
    let c = two_containers(&s, "both", 2, "PT1.5S");
    let rrats = c["rrats"].as_array().cloned().unwrap_or_default();
    assert_eq!(rrats.len(), 2, "one subscription per regular target: {c}");
    for (i, cnt) in ["/cse-in/app/c1", "/cse-in/app/c2"].iter().enumerate() {
        let subs = subscriptions_of(&s, cnt);
        assert_eq!(subs.len(), 1, "{cnt}: {subs:?}");
        let (_, sub) = retrieve(s.cse.url(), &format!("/{}", subs[0]), &s.ae);
        let me = format!("/id-in/{}", c["ri"].as_str().unwrap());
        assert_eq!(sub["m2m:sub"]["nu"], json!([me]), "{sub}");
        assert_eq!(sub["m2m:sub"]["acrs"], json!([me]), "{sub}");
        assert_eq!(
            rrats[i],
            json!(format!("/id-in/{}", sub["m2m:sub"]["ri"].as_str().unwrap())),
            "the SP-relative resourceID of the subscription made on target {i}"
        );
        let (_, by_rrats) = retrieve(
            s.cse.url(),
            &format!("/~{}", rrats[i].as_str().unwrap()),
            &s.ae,
        );
        assert_eq!(
            by_rrats["m2m:sub"]["ri"], sub["m2m:sub"]["ri"],
            "an rrats entry addresses its subscription"
        );
    }
    // One target only: the window ends without a notification.
    create_cin(s.cse.url(), "/cse-in/app/c1", &s.ae, "one");
    assert!(
        s.rx.try_wait_for(is_cross, Duration::from_millis(2500))
            .is_none(),
        "one of two targets is no cross-resource event"
    );
    // Both within one window: one notification naming the crossResourceSubscription.
    create_cin(s.cse.url(), "/cse-in/app/c1", &s.ae, "a");
    create_cin(s.cse.url(), "/cse-in/app/c2", &s.ae, "b");
    let n = s.rx.wait_for(is_cross, WAIT);
    assert_eq!(
        n.sgn()["sur"],
        json!(format!("/id-in/{}", c["ri"].as_str().unwrap())),
        "{:?}",
        n.body
    );
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(s.rx.count(is_cross), 1, "once per window");
}

#[test]
fn periodic_windows_and_evaluation_modes() {
    let s = setup();
    // allEventsMissing on a periodic window: every quiet window notifies.
    let (rsc, b) = crs(
        &s,
        json!({ "rn": "quiet", "nu": [s.rx.url()], "twt": 1, "tws": "PT0.5S", "eem": 4, "exc": 2,
                "rrat": ["cse-in/app/c1"], "encs": { "enc": [{ "net": [3] }] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    s.rx.wait_for_n(2, is_cross, WAIT);
    // expirationCounter 2: gone after its second notification.
    let gone = poll(WAIT, || {
        (retrieve(s.cse.url(), "/cse-in/app/quiet", &s.ae).0 == 4004).then_some(())
    });
    assert!(gone.is_some(), "counted down to deletion");
    // Its subscription goes right after it (a deletion by the expiration counter answers no
    // request that could wait for it).
    let released = poll(WAIT, || {
        subscriptions_of(&s, "/cse-in/app/c1")
            .is_empty()
            .then_some(())
    });
    assert!(released.is_some(), "its subscription went with it");
    // Missing events cannot be judged on a sliding window.
    for eem in [3, 4] {
        let (rsc, _) = crs(
            &s,
            json!({ "nu": [s.rx.url()], "twt": 2, "tws": "PT1S", "eem": eem,
                    "rrat": ["cse-in/app/c1"], "encs": { "enc": [{ "net": [3] }] } }),
        );
        assert_eq!(rsc, 4000, "eem {eem} sliding");
    }
    let c = two_containers(&s, "p", 1, "PT1S");
    let path = format!("/cse-in/app/{}", c["rn"].as_str().unwrap());
    let (rsc, _) = update(
        s.cse.url(),
        &path,
        &s.ae,
        json!({ "m2m:crs": { "twt": 2, "eem": 3 } }),
    );
    assert_eq!(rsc, 4000, "the UPDATE would make it sliding with eem 3");
    let (rsc, _) = update(
        s.cse.url(),
        &path,
        &s.ae,
        json!({ "m2m:crs": { "tws": "PT2S" } }),
    );
    assert_eq!(rsc, 2004);
}

#[test]
fn subscription_targets_are_joined_and_left() {
    let s = setup();
    let rx2 = Receiver::start();
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/c3",
        &s.ae,
        23,
        json!({ "m2m:sub": { "rn": "s3", "nu": [rx2.url()], "enc": { "net": [3] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = crs(
        &s,
        json!({ "rn": "joined", "nu": [s.rx.url()], "su": s.rx.url(), "twt": 2, "tws": "PT1S",
                "srat": ["cse-in/app/c3/s3"] }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let me = format!("/id-in/{}", b["m2m:crs"]["ri"].as_str().unwrap());
    let (_, sub) = retrieve(s.cse.url(), "/cse-in/app/c3/s3", &s.ae);
    assert_eq!(
        sub["m2m:sub"]["nu"],
        json!([rx2.url(), me.as_str()]),
        "{sub}"
    );
    assert_eq!(sub["m2m:sub"]["acrs"], json!([me.as_str()]), "{sub}");
    // Its one target notifies: the window is complete.
    create_cin(s.cse.url(), "/cse-in/app/c3", &s.ae, "x");
    s.rx.wait_for(is_cross, WAIT);
    rx2.wait_for(|r| r.net() == Some(3), WAIT);
    // Deleted: it leaves the subscription as it found it, and its subscriber is told, before
    // the DELETE is answered (as for a subscription, TS-0004 clause 7.5.1.2.20).
    let (rsc, _) = delete(s.cse.url(), "/cse-in/app/joined", &s.ae);
    assert_eq!(rsc, 2002);
    assert_eq!(
        s.rx.count(|r| r.sgn()["sud"] == json!(true)),
        1,
        "the deletion notification came after the answer"
    );
    let sud = s.rx.wait_for(|r| r.sgn()["sud"] == json!(true), WAIT);
    assert_eq!(sud.sur(), Some(me.as_str()));
    // Left before the DELETE was answered (TS-0004 clause 7.4.58.2.4): read at once.
    let (_, left) = retrieve(s.cse.url(), "/cse-in/app/c3/s3", &s.ae);
    assert_eq!(left["m2m:sub"]["nu"], json!([rx2.url()]), "{left}");
    assert!(left["m2m:sub"].get("acrs").is_none(), "{left}");
    // Joined again, then dropped from the subscription's associatedCrossResourceSub by an UPDATE:
    // the crossResourceSubscription relied on it and is gone when the UPDATE is answered.
    let (rsc, b) = crs(
        &s,
        json!({ "rn": "joined2", "nu": [s.rx.url()], "su": s.rx.url(), "twt": 2, "tws": "PT1S",
                "srat": ["cse-in/app/c3/s3"] }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let ri2 = b["m2m:crs"]["ri"].as_str().unwrap().to_owned();
    let me2 = format!("/id-in/{ri2}");
    // The same crossResourceSubscription written in other ID forms is no drop: it stays.
    for form in [ri2.clone(), format!("//m2m.example.com/id-in/{ri2}")] {
        let (rsc, b) = update(
            s.cse.url(),
            "/cse-in/app/c3/s3",
            &s.ae,
            json!({ "m2m:sub": { "acrs": [form] } }),
        );
        assert_eq!(rsc, 2004, "{form}: {b}");
        let (rsc, b) = retrieve(s.cse.url(), "/cse-in/app/joined2", &s.ae);
        assert_eq!(rsc, 2000, "{form}: {b}");
    }
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/c3/s3",
        &s.ae,
        json!({ "m2m:sub": { "acrs": [] } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(
        s.rx.count(|r| r.sgn()["sud"] == json!(true) && r.sur() == Some(me2.as_str())),
        1,
        "its subscriber was told before the UPDATE was answered"
    );
    let (rsc, b) = retrieve(s.cse.url(), "/cse-in/app/joined2", &s.ae);
    assert_eq!(rsc, 4004, "read at once: {b}");
    // A subscription target that is no subscription: 4000, nothing left behind.
    let (rsc, _) = crs(
        &s,
        json!({ "nu": [s.rx.url()], "twt": 2, "tws": "PT1S", "srat": ["cse-in/app/c2"] }),
    );
    assert_eq!(rsc, 4000);
}

#[test]
fn a_failed_target_undoes_the_others_and_deleting_a_subscription_deletes_the_whole() {
    let s = setup();
    let (rsc, b) = crs(
        &s,
        json!({ "nu": [s.rx.url()], "twt": 2, "tws": "PT1S",
                "rrat": ["cse-in/app/c1", "cse-in/app/nothing"], "encs": { "enc": [{ "net": [3] }] } }),
    );
    assert_eq!(rsc, 5221, "CROSS_RESOURCE_OPERATION_FAILURE: {b}");
    assert!(
        subscriptions_of(&s, "/cse-in/app/c1").is_empty(),
        "c1's subscription undone"
    );
    // Another AE may not subscribe to the containers: a crossResourceSubscription gives it no
    // more than it has.
    let other = register_ae(s.cse.url(), "/cse-in", "Cother", "other", &[]);
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/other",
        &other,
        48,
        json!({ "m2m:crs": { "nu": [other.as_str()], "twt": 2, "tws": "PT1S",
                "rrat": ["cse-in/app/c1"], "encs": { "enc": [{ "net": [3] }] } } }),
    );
    assert_eq!(rsc, 5221, "the originator's own rights decide");
    assert!(subscriptions_of(&s, "/cse-in/app/c1").is_empty());
    // One of its subscriptions deleted: the crossResourceSubscription and the other go.
    let c = two_containers(&s, "whole", 2, "PT1S");
    let sub1 = subscriptions_of(&s, "/cse-in/app/c1");
    let (rsc, _) = delete(s.cse.url(), &format!("/{}", sub1[0]), &s.ae);
    assert_eq!(rsc, 2002);
    // Both gone before the DELETE was answered: read at once.
    assert_eq!(
        retrieve(s.cse.url(), "/cse-in/app/whole", &s.ae).0,
        4004,
        "{c}"
    );
    assert!(subscriptions_of(&s, "/cse-in/app/c2").is_empty(), "{c}");
}

#[test]
fn bad_input_gets_4000() {
    let s = setup();
    let nu = json!([s.rx.url()]);
    let enc = json!({ "enc": [{ "net": [3] }] });
    for (what, attrs) in [
        ("no target", json!({ "nu": nu, "twt": 1, "tws": "PT1S" })),
        (
            "rrat without encs",
            json!({ "nu": nu, "twt": 1, "tws": "PT1S", "rrat": ["cse-in/app/c1"] }),
        ),
        (
            "three criteria for two targets",
            json!({ "nu": nu, "twt": 1, "tws": "PT1S", "rrat": ["cse-in/app/c1", "cse-in/app/c2"], "encs": { "enc": [{ "net": [3] }, { "net": [3] }, { "net": [3] }] } }),
        ),
        (
            "empty criteria set",
            json!({ "nu": nu, "twt": 1, "tws": "PT1S", "rrat": ["cse-in/app/c1"], "encs": {} }),
        ),
        (
            "no nu",
            json!({ "twt": 1, "tws": "PT1S", "rrat": ["cse-in/app/c1"], "encs": enc }),
        ),
        (
            "no twt",
            json!({ "nu": nu, "tws": "PT1S", "rrat": ["cse-in/app/c1"], "encs": enc }),
        ),
        (
            "twt 99",
            json!({ "nu": nu, "twt": 99, "tws": "PT1S", "rrat": ["cse-in/app/c1"], "encs": enc }),
        ),
        (
            "no tws",
            json!({ "nu": nu, "twt": 1, "rrat": ["cse-in/app/c1"], "encs": enc }),
        ),
        (
            "unknown attribute",
            json!({ "nu": nu, "twt": 1, "tws": "PT1S", "rrat2": ["cse-in/app/c1"], "encs": enc }),
        ),
    ] {
        assert_eq!(crs(&s, attrs).0, 4000, "{what}");
    }
    let c = two_containers(&s, "x", 1, "PT5S");
    let path = format!("/cse-in/app/{}", c["rn"].as_str().unwrap());
    for attrs in [
        json!({ "rrat": ["cse-in/app/c3"] }),
        json!({ "srat": [] }),
        json!({ "rrats": [] }),
        json!({ "encs": null }),
        json!({ "nec": 2 }),
        json!({ "nsi": [] }),
    ] {
        assert_eq!(
            update(
                s.cse.url(),
                &path,
                &s.ae,
                json!({ "m2m:crs": attrs.clone() })
            )
            .0,
            4000,
            "{attrs}"
        );
    }
}

#[test]
fn a_subscription_that_names_a_cross_resource_subscription_cannot_end_it() {
    let s = setup();
    let c = two_containers(&s, "victim", 2, "PT1S");
    let me = format!("/id-in/{}", c["ri"].as_str().unwrap());
    // Another AE, on its own container, names the victim as subscriber and as associated
    // crossResourceSubscription, then deletes its subscription.
    let other = register_ae(s.cse.url(), "/cse-in", "Cother", "other", &[]);
    create_cnt(
        s.cse.url(),
        "/cse-in/other",
        &other,
        json!({ "rn": "mine" }),
    );
    // An associatedCrossResourceSub entry is also a notificationURI (verified): not only.
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/other/mine",
        &other,
        23,
        json!({ "m2m:sub": { "rn": "s", "nu": [other.as_str()], "su": "cse-in/app/victim", "acrs": [me] } }),
    );
    assert_eq!(rsc, 4000, "{b}");
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/other/mine",
        &other,
        23,
        json!({ "m2m:sub": { "rn": "s", "nu": [other.as_str(), me.as_str()], "su": "cse-in/app/victim", "acrs": [me] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, _) = delete(s.cse.url(), "/cse-in/other/mine/s", &other);
    assert_eq!(rsc, 2002);
    std::thread::sleep(Duration::from_millis(500));
    let (rsc, _) = retrieve(s.cse.url(), "/cse-in/app/victim", &s.ae);
    assert_eq!(rsc, 2000, "the victim lives on");
}

/// associatedCrossResourceSub gets a deletion notice when the subscription goes (TS-0004 clause
/// 7.5.1.2.4): an entry that is not also a verified notificationURI would let a subscriber make
/// the CSE send requests anywhere. Refused at CREATE and as the result of an UPDATE, for a URL
/// and for an ID; the unverified target hears nothing.
#[test]
fn associated_cross_resource_subs_go_only_where_notifications_may() {
    let s = setup();
    let bystander = Receiver::start();
    create_cnt(s.cse.url(), "/cse-in/app", &s.ae, json!({ "rn": "w" }));
    for acrs in [
        json!([bystander.url()]),
        json!(["/id-in/cse-in"]),
        json!(["Cother"]),
    ] {
        let (rsc, b) = create(
            s.cse.url(),
            "/cse-in/app/w",
            &s.ae,
            23,
            json!({ "m2m:sub": { "nu": [s.rx.url()], "acrs": acrs } }),
        );
        assert_eq!(rsc, 4000, "{acrs}: {b}");
    }
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/w",
        &s.ae,
        23,
        json!({ "m2m:sub": { "rn": "s", "nu": [s.rx.url()] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/w/s",
        &s.ae,
        json!({ "m2m:sub": { "acrs": [bystander.url()] } }),
    );
    assert_eq!(rsc, 4000, "{b}");
    // Both, then the notificationURI dropped alone: the result would break the rule.
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/w/s",
        &s.ae,
        json!({ "m2m:sub": { "nu": [s.rx.url(), bystander.url()], "acrs": [bystander.url()] } }),
    );
    assert_eq!(rsc, 2004, "verified like any notificationURI: {b}");
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/w/s",
        &s.ae,
        json!({ "m2m:sub": { "nu": [s.rx.url()] } }),
    );
    assert_eq!(rsc, 4000, "{b}");
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/w/s",
        &s.ae,
        json!({ "m2m:sub": { "nu": [s.rx.url()], "acrs": null } }),
    );
    assert_eq!(rsc, 2004);
    // Dropped from acrs (verified when it came): told once, as TS-0004 clause 7.5.1.2.4 says.
    bystander.wait_for(|r| r.sgn()["sud"] == json!(true), WAIT);
    let (rsc, _) = delete(s.cse.url(), "/cse-in/app/w/s", &s.ae);
    assert_eq!(rsc, 2002);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        bystander.count(|r| r.sgn()["sud"] == json!(true)),
        1,
        "no second notice to a target it no longer names"
    );
}

/// Events and deletions of a crossResourceSubscription's subscriptions come from the CSE
/// hosting them. Nobody else, whatever ID it claims (its own AE-ID, another AE's, this CSE's,
/// another CSE's, in every form), makes a window fire or deletes it by a forged NOTIFY.
#[test]
fn forged_notifications_neither_fire_a_window_nor_delete_it() {
    let s = setup();
    let c = two_containers(&s, "forged", 2, "PT1S");
    let me = "/cse-in/app/forged";
    // Each subscription as `rrats` names it (SP-relative, as a real notification's `sur`),
    // absolute and CSE-relative.
    let subs: Vec<String> = c["rrats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .flat_map(|id| {
            let ri = id.rsplit('/').next().unwrap_or_default().to_owned();
            [format!("//m2m.example.com{id}"), ri, id]
        })
        .collect();
    let other = register_ae(s.cse.url(), "/cse-in", "Cforger", "forger", &[]);
    let forgers = [
        s.ae.clone(),
        other,
        "/id-in".to_owned(),
        "//m2m.example.com/id-in".to_owned(),
        "/id-mn".to_owned(),
        "CAdmin".to_owned(),
    ];
    for from in &forgers {
        for sur in &subs {
            for extra in [json!({}), json!({ "sud": true })] {
                let mut sgn = json!({ "sur": sur, "nev": { "net": 3, "rep": {} } });
                sgn.as_object_mut()
                    .unwrap()
                    .extend(extra.as_object().unwrap().clone());
                let (rsc, b) = notify(s.cse.url(), me, from, json!({ "m2m:sgn": sgn }));
                // Refused as a forgery (4000), for want of the NOTIFY privilege (4103), as an ID
                // the originator cannot hold (4106), or as a CSE-ID outside a security
                // association (4107): never carried out, never a crash.
                assert!(
                    matches!(rsc, 4000 | 4103 | 4106 | 4107),
                    "from {from}, {sgn}: {rsc} {b}"
                );
            }
        }
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(s.rx.count(is_cross), 0, "no window fired on forged events");
    let (rsc, b) = retrieve(s.cse.url(), me, &s.ae);
    assert_eq!(rsc, 2000, "the crossResourceSubscription lives on: {b}");
    // The real events still count.
    create_cin(s.cse.url(), "/cse-in/app/c1", &s.ae, "a");
    create_cin(s.cse.url(), "/cse-in/app/c2", &s.ae, "b");
    s.rx.wait_for(is_cross, WAIT);
}

/// A notificationURI added by an UPDATE is verified as at creation: a target that refuses the
/// verification is not added (5204 SUBSCRIPTION_VERIFICATION_INITIATION_FAILED).
#[test]
fn a_notification_target_added_by_update_is_verified() {
    let s = setup();
    two_containers(&s, "moved", 2, "PT1S");
    let refusing = Receiver::start();
    refusing.answer_with(4103);
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/moved",
        &s.ae,
        json!({ "m2m:crs": { "nu": [s.rx.url(), refusing.url()] } }),
    );
    assert_eq!(rsc, 5204, "{b}");
    let (_, now) = retrieve(s.cse.url(), "/cse-in/app/moved", &s.ae);
    assert_eq!(now["m2m:crs"]["nu"], json!([s.rx.url()]), "{now}");
}

/// A crossResourceSubscription deleted with its parent (here the subscriber's <AE>, by its
/// deregistration) releases its targets as its own DELETE does: the subscriptions it made on
/// another AE's containers go, and no window fires any more.
#[test]
fn one_deleted_with_its_parent_releases_its_targets() {
    let s = setup();
    let watcher = register_ae(s.cse.url(), "/cse-in", "Cwatcher", "watcher", &[]);
    let acp = create_acp(
        s.cse.url(),
        "/cse-in/app",
        &s.ae,
        "watch",
        vec![acr(&[s.ae.as_str(), watcher.as_str()], OP_ALL)],
        vec![acr(&[s.ae.as_str()], OP_ALL)],
    );
    for c in ["/cse-in/app/c1", "/cse-in/app/c2"] {
        set_acpi(s.cse.url(), c, &s.ae, "m2m:cnt", &[acp.as_str()]);
    }
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/watcher",
        &watcher,
        48,
        json!({ "m2m:crs": { "rn": "w", "nu": [s.rx.url()], "twt": 2, "tws": "PT1S",
                "rrat": ["cse-in/app/c1", "cse-in/app/c2"], "encs": { "enc": [{ "net": [3] }] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    for c in ["/cse-in/app/c1", "/cse-in/app/c2"] {
        assert_eq!(subscriptions_seen_by(&s, c, "CAdmin").len(), 1, "{c}");
    }
    let (rsc, b) = delete(s.cse.url(), "/cse-in/watcher", &watcher);
    assert_eq!(rsc, 2002, "{b}");
    for c in ["/cse-in/app/c1", "/cse-in/app/c2"] {
        let gone = poll(Duration::from_secs(5), || {
            subscriptions_seen_by(&s, c, "CAdmin")
                .is_empty()
                .then_some(())
        });
        assert!(
            gone.is_some(),
            "{c} keeps the subscription of a deleted crossResourceSubscription"
        );
    }
    create_cin(s.cse.url(), "/cse-in/app/c1", &s.ae, "a");
    create_cin(s.cse.url(), "/cse-in/app/c2", &s.ae, "b");
    assert!(
        s.rx.try_wait_for(is_cross, Duration::from_millis(2000))
            .is_none(),
        "a deleted crossResourceSubscription notified"
    );
}
