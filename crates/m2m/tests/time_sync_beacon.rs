//! `<timeSyncBeacon>` (Release 4, ty 60) over HTTP on a real `m2m cse`: periodic beacons to a
//! verified target, beacons on a requester's loss of synchronization, and what a beacon may say.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn create_tsb(u: &str, parent: &str, from: &str, attrs: Value) -> (u16, Value) {
    create(u, parent, from, 60, json!({ "m2m:tsb": attrs }))
}

fn beacons(rx: &Receiver) -> Vec<Received> {
    rx.all()
        .into_iter()
        .filter(|r| r.body.get("m2m:tsbn").is_some())
        .collect()
}

#[test]
fn periodic_beacons_tell_the_time_to_verified_targets() {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let rx = Receiver::start();
    let ae = register_ae(&u, "/cse-in", "Cclock", "clock", &[rx.url()]);

    let (rsc, b) = create_tsb(
        &u,
        "/cse-in/clock",
        &ae,
        json!({"rn": "tick", "bcnc": 1, "bcni": "PT1.0S", "bcnu": [rx.url()]}),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        b["m2m:tsb"]["bcni"],
        json!("PT1.0S"),
        "kept as written: {b}"
    );
    let ri = b["m2m:tsb"]["ri"].as_str().expect("ri").to_owned();
    let beacon = rx.wait_for(|r| r.body.get("m2m:tsbn").is_some(), WAIT);
    assert_eq!(
        beacon.body["m2m:tsbn"]["tbr"],
        json!(ri),
        "{:?}",
        beacon.body
    );
    let ctm = beacon.body["m2m:tsbn"]["ctm"].as_str().expect("ctm");
    assert!(
        ctm.len() >= 15 && ctm.as_bytes()[8] == b'T',
        "a oneM2M timestamp: {ctm}"
    );
    assert_eq!(
        beacon.headers.get("x-m2m-origin").map(String::as_str),
        Some("/id-in")
    );
    rx.wait_for_n(2, |r| r.body.get("m2m:tsbn").is_some(), WAIT);
    // It reads back, and its interval is changed by its owner.
    let (rsc, b) = retrieve(&u, "/cse-in/clock/tick", &ae);
    assert_eq!(
        (rsc, &b["m2m:tsb"]["bcnu"]),
        (2000, &json!([rx.url()])),
        "{b}"
    );
    let slower = json!({ "m2m:tsb": { "bcni": "PT2S" } });
    let (rsc, b) = update(&u, "/cse-in/clock/tick", &ae, slower);
    assert_eq!((rsc, &b["m2m:tsb"]["bcni"]), (2004, &json!("PT2S")), "{b}");
    // The beacons follow: two seconds apart by the CSE's own clock (the first one after the
    // UPDATE may still be of the old period).
    let seen = beacons(&rx).len();
    let later = rx.wait_for_n(seen + 3, |r| r.body.get("m2m:tsbn").is_some(), WAIT);
    let at = |r: &Received| {
        let ctm = r.body["m2m:tsbn"]["ctm"].as_str().expect("ctm");
        chrono::NaiveDateTime::parse_from_str(ctm, "%Y%m%dT%H%M%S,%f").expect("a timestamp")
    };
    let gap = at(&later[seen + 2]) - at(&later[seen + 1]);
    assert!(
        gap >= chrono::Duration::milliseconds(1_800),
        "beacons {gap} apart after bcni became PT2S"
    );

    // Deleting it stops the beacons.
    let (rsc, _) = delete(&u, "/cse-in/clock/tick", &ae);
    assert_eq!(rsc, 2002);
    std::thread::sleep(Duration::from_millis(300));
    let after = beacons(&rx).len();
    std::thread::sleep(Duration::from_millis(2_200));
    assert_eq!(beacons(&rx).len(), after, "beacons after the deletion");

    // Defaults: a periodic beacon every hour, a loss of synchronization threshold of 10 s.
    let (rsc, b) = create_tsb(
        &u,
        "/cse-in/clock",
        &ae,
        json!({"rn": "hourly", "bcnc": 1, "bcnu": [rx.url()]}),
    );
    assert_eq!((rsc, &b["m2m:tsb"]["bcni"]), (2001, &json!("PT1H")), "{b}");
    assert!(b["m2m:tsb"].get("bcnt").is_none(), "{b}");
    let (rsc, b) = create_tsb(
        &u,
        "/cse-in/clock",
        &ae,
        json!({"rn": "drift", "bcnc": 2, "bcnr": ae, "bcnu": [rx.url()]}),
    );
    assert_eq!((rsc, &b["m2m:tsb"]["bcnt"]), (2001, &json!(10_000)), "{b}");
    assert!(b["m2m:tsb"].get("bcni").is_none(), "{b}");
    // An UPDATE to the other criterion drops the settings of the first.
    let (rsc, b) = update(
        &u,
        "/cse-in/clock/hourly",
        &ae,
        json!({"m2m:tsb": {"bcnc": 2}}),
    );
    assert_eq!(
        rsc, 4000,
        "loss of synchronization without a requester: {b}"
    );

    // What a beacon may not say.
    for (attrs, what) in [
        (json!({"bcnc": 1, "bcnu": []}), "no targets"),
        (json!({"bcnc": 1}), "no bcnu"),
        (json!({"bcnu": [rx.url()]}), "no bcnc"),
        (json!({"bcnc": 3, "bcnu": [rx.url()]}), "bcnc 3"),
        (
            json!({"bcnc": 2, "bcni": "PT10S", "bcnr": ae, "bcnu": [rx.url()]}),
            "bcni with loss of synchronization",
        ),
        (
            json!({"bcnc": 1, "bcnt": "PT10S", "bcnu": [rx.url()]}),
            "bcnt with periodic",
        ),
        (
            json!({"bcnc": 1, "bcnr": ae, "bcnu": [rx.url()]}),
            "bcnr with periodic",
        ),
        (
            json!({"bcnc": 2, "bcnu": [rx.url()]}),
            "loss of synchronization without bcnr",
        ),
        (
            json!({"bcnc": 2, "bcnr": "someone", "bcnu": [rx.url()]}),
            "bcnr that is no entity",
        ),
        (
            json!({"bcnc": 1, "bcni": "PT0.1S", "bcnu": [rx.url()]}),
            "bcni under 1 s",
        ),
        (
            json!({"bcnc": 1, "bcni": "soon", "bcnu": [rx.url()]}),
            "bcni no duration",
        ),
        (
            json!({"bcnc": 2, "bcnt": "PT0.5S", "bcnr": ae, "bcnu": [rx.url()]}),
            "bcnt under 1 s",
        ),
        (
            json!({"bcnc": 2, "bcnr": ae, "bcnu": [rx.url()]}),
            "a second loss of synchronization beacon for one requester",
        ),
    ] {
        let (rsc, b) = create_tsb(&u, "/cse-in/clock", &ae, attrs);
        assert_eq!(rsc, 4000, "{what}: {b}");
    }
    let (rsc, b) = update(
        &u,
        "/cse-in/clock/drift",
        &ae,
        json!({"m2m:tsb": {"bcnr": "Cother"}}),
    );
    assert_eq!(rsc, 4000, "bcnr in an UPDATE: {b}");
    // Another entity's requests are not watched for anyone but the admin.
    let other = register_ae(&u, "/cse-in", "Cwatched", "watched", &[]);
    let (rsc, b) = create_tsb(
        &u,
        "/cse-in/clock",
        &ae,
        json!({"bcnc": 2, "bcnr": other, "bcnu": [rx.url()]}),
    );
    assert_eq!(rsc, 4103, "watching another: {b}");
    // In any of its ID forms: another is another, oneself is oneself.
    for form in [
        format!("/id-in/{other}"),
        format!("//m2m.example.com/id-in/{other}"),
    ] {
        let (rsc, b) = create_tsb(
            &u,
            "/cse-in/clock",
            &ae,
            json!({"bcnc": 2, "bcnr": form, "bcnu": [rx.url()]}),
        );
        assert_eq!(rsc, 4103, "watching another as {form}: {b}");
    }
    // Oneself in the SP-relative form is oneself: refused only as a second beacon for it.
    let (rsc, b) = create_tsb(
        &u,
        "/cse-in/clock",
        &ae,
        json!({"bcnc": 2, "bcnr": format!("/id-in/{ae}"), "bcnu": [rx.url()]}),
    );
    assert_eq!(rsc, 4000, "oneself, already watched: {b}");
    let (rsc, b) = create_tsb(
        &u,
        "/cse-in",
        "CAdmin",
        json!({"rn": "admins", "bcnc": 2, "bcnr": other, "bcnu": [rx.url()]}),
    );
    assert_eq!(rsc, 2001, "the admin may: {b}");
    // Targets: named twice counts once, at most 8.
    let (rsc, b) = create_tsb(
        &u,
        "/cse-in/clock",
        &ae,
        json!({"rn": "twice", "bcnc": 1, "bcnu": [rx.url(), rx.url()]}),
    );
    assert_eq!(
        (rsc, &b["m2m:tsb"]["bcnu"]),
        (2001, &json!([rx.url()])),
        "{b}"
    );
    let nine: Vec<String> = (0..9).map(|i| format!("{}/t{i}", rx.url())).collect();
    let (rsc, b) = create_tsb(&u, "/cse-in/clock", &ae, json!({"bcnc": 1, "bcnu": nine}));
    assert_eq!(rsc, 4000, "nine targets: {b}");
    // At most 16 beacons of one originator (hourly, drift and twice are 3 of them).
    for i in 0..13 {
        let (rsc, b) = create_tsb(
            &u,
            "/cse-in/clock",
            &ae,
            json!({"rn": format!("n{i}"), "bcnc": 1, "bcnu": [rx.url()]}),
        );
        assert_eq!(rsc, 2001, "beacon {i}: {b}");
    }
    let (rsc, b) = create_tsb(
        &u,
        "/cse-in/clock",
        &ae,
        json!({"bcnc": 1, "bcnu": [rx.url()]}),
    );
    assert_eq!(rsc, 5207, "a 17th: {b}");
    let (rsc, b) = create(
        &u,
        "/cse-in/clock/drift",
        &ae,
        60,
        json!({"m2m:tsb": {"bcnc": 1, "bcnu": [rx.url()]}}),
    );
    assert_eq!(rsc, 4108, "under a beacon: {b}");
}

#[test]
fn a_target_that_refuses_gets_no_beacons() {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let ae = register_ae(&u, "/cse-in", "Cclock", "clock", &[]);
    // Someone else's address: verified first, and it says no.
    let victim = Receiver::start();
    victim.answer_with(4103);
    let (rsc, b) = create_tsb(
        &u,
        "/cse-in/clock",
        &ae,
        json!({"rn": "spam", "bcnc": 1, "bcni": "PT1S", "bcnu": [victim.url()]}),
    );
    assert_eq!(rsc, 5204, "{b}");
    assert_eq!(retrieve(&u, "/cse-in/clock/spam", &ae).0, 4004);
    let asked = victim.all();
    assert_eq!(asked.len(), 1, "only the verification: {asked:?}");
    assert_eq!(asked[0].sgn()["vrq"], json!(true));
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(beacons(&victim).is_empty());
    // An UPDATE adding such a target is refused the same way, and the beacon keeps its own.
    let own = Receiver::start();
    let (rsc, b) = create_tsb(
        &u,
        "/cse-in/clock",
        &ae,
        json!({"rn": "mine", "bcnc": 1, "bcni": "PT1S", "bcnu": [own.url()]}),
    );
    assert_eq!(rsc, 2001, "a target that accepts the verification: {b}");
    let (rsc, b) = update(
        &u,
        "/cse-in/clock/mine",
        &ae,
        json!({"m2m:tsb": {"bcnu": [own.url(), victim.url()]}}),
    );
    assert_eq!(rsc, 5204, "{b}");
    own.wait_for(|r| r.body.get("m2m:tsbn").is_some(), WAIT);
    assert!(beacons(&victim).is_empty());
}

/// A request of `from` with an Originating Timestamp `ot`.
fn request_at(u: &str, from: &str, ot: &str) {
    let r = raw(
        "GET",
        u,
        "/cse-in",
        &[
            ("X-M2M-Origin", from),
            ("X-M2M-RI", "drift"),
            ("X-M2M-RVI", "3"),
            ("X-M2M-OT", ot),
        ],
        b"",
    );
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
}

#[test]
fn loss_of_synchronization_brings_a_beacon() {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let rx = Receiver::start();
    let ae = register_ae(&u, "/cse-in", "Cslow", "slow", &[rx.url()]);
    let other = register_ae(&u, "/cse-in", "Cother", "other", &[]);
    let (rsc, b) = create_tsb(
        &u,
        "/cse-in/slow",
        &ae,
        json!({"rn": "sync", "bcnc": 2, "bcnt": "PT1S", "bcnr": ae, "bcnu": [rx.url()]}),
    );
    assert_eq!(rsc, 2001, "{b}");
    let ri = b["m2m:tsb"]["ri"].as_str().expect("ri").to_owned();
    let now = |offset_s: i64| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
            + offset_s;
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{t}"), "+%Y%m%dT%H%M%S"])
            .output()
            .expect("date");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    // In step, or another entity out of step: nothing.
    request_at(&u, &ae, &now(0));
    request_at(&u, &other, &now(-3600));
    std::thread::sleep(Duration::from_millis(500));
    assert!(beacons(&rx).is_empty(), "{:?}", rx.all());
    // The requester an hour behind: a beacon.
    request_at(&u, &ae, &now(-3600));
    let beacon = rx.wait_for(|r| r.body.get("m2m:tsbn").is_some(), WAIT);
    assert_eq!(beacon.body["m2m:tsbn"]["tbr"], json!(ri));
    // At most one per threshold, then again.
    request_at(&u, &ae, &now(-3600));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(beacons(&rx).len(), 1);
    std::thread::sleep(Duration::from_millis(1_000));
    request_at(&u, &ae, &now(3600));
    rx.wait_for_n(2, |r| r.body.get("m2m:tsbn").is_some(), WAIT);
    // Gone with the resource.
    assert_eq!(delete(&u, "/cse-in/slow/sync", &ae).0, 2002);
    std::thread::sleep(Duration::from_millis(1_100));
    request_at(&u, &ae, &now(-3600));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(beacons(&rx).len(), 2);
}

/// The per-originator limit holds under concurrent creations: each is counted at its check.
#[test]
fn concurrent_creations_keep_to_the_limit() {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let rx = Receiver::start();
    let ae = register_ae(&u, "/cse-in", "Crush", "rush", &[rx.url()]);
    let threads: Vec<_> = (0..24)
        .map(|i| {
            let (u, ae, target) = (u.clone(), ae.clone(), rx.url().to_owned());
            std::thread::spawn(move || {
                create_tsb(
                    &u,
                    "/cse-in/rush",
                    &ae,
                    json!({"rn": format!("b{i}"), "bcnc": 1, "bcnu": [target]}),
                )
                .0
            })
        })
        .collect();
    let codes: Vec<u16> = threads
        .into_iter()
        .map(|t| t.join().expect("creator"))
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == 2001).count(),
        16,
        "{codes:?}"
    );
    assert!(codes.iter().all(|c| *c == 2001 || *c == 5207), "{codes:?}");
}
