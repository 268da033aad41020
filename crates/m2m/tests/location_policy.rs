//! `<locationPolicy>` (TS-0004 clause 7.4.10) over HTTP on a real `m2m cse`: the policy and its
//! location container, the checks of its attributes, device-based geofence events as a device
//! reports its positions, who may read and write them, and the container going with the policy.

mod common;

use common::*;
use serde_json::{json, Value};

/// A square around (10, 50) to (11, 51), GeoJSON, left open as many clients send it.
fn area() -> Value {
    json!({"type": "Polygon", "coordinates": [[[10.0, 50.0], [11.0, 50.0], [11.0, 51.0], [10.0, 51.0]]]})
}
fn inside() -> Value {
    json!({"type": "Point", "coordinates": [10.5, 50.5]})
}
fn outside() -> Value {
    json!({"type": "Point", "coordinates": [12.0, 52.0]})
}

struct Setup {
    cse: CseProcess,
    ae: String,
}

fn setup() -> Setup {
    let cse = CseProcess::start_in();
    let ae = register_ae(cse.url(), "/cse-in", "Cdevice", "device", &[]);
    Setup { cse, ae }
}

fn create_lcp(s: &Setup, attrs: Value) -> (u16, Value) {
    create(
        s.cse.url(),
        "/cse-in/device",
        &s.ae,
        10,
        json!({ "m2m:lcp": attrs }),
    )
}

/// Reports a position and returns what `la` of the location container shows right after.
fn report(s: &Setup, container: &str, position: Value) -> Value {
    let (rsc, b) = create(
        s.cse.url(),
        container,
        &s.ae,
        4,
        json!({"m2m:cin": {"con": position}}),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, la) = retrieve(s.cse.url(), &format!("{container}/la"), &s.ae);
    assert_eq!(rsc, 2000, "{la}");
    la["m2m:cin"]["con"].clone()
}

#[test]
fn a_policy_comes_with_its_location_container() {
    let s = setup();
    let u = s.cse.url().to_owned();
    let (rsc, b) = create_lcp(&s, json!({"rn": "where", "los": 2, "lon": "positions"}));
    assert_eq!(rsc, 2001, "{b}");
    let lcp = &b["m2m:lcp"];
    assert_eq!(lcp["lost"], "", "{b}");
    let loi = lcp["loi"].as_str().expect("loi").to_owned();
    let (rsc, cnt) = retrieve(&u, "/cse-in/device/positions", &s.ae);
    assert_eq!(rsc, 2000, "{cnt}");
    assert_eq!(cnt["m2m:cnt"]["ri"], loi.as_str());
    assert_eq!(
        cnt["m2m:cnt"]["li"], lcp["ri"],
        "the container points back at its policy"
    );

    // Without lon the container is named after the policy.
    let (rsc, b) = create_lcp(&s, json!({"rn": "other", "los": 2}));
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, _) = retrieve(&u, "/cse-in/device/other-location", &s.ae);
    assert_eq!(rsc, 2000);

    // Nobody else reads the positions or reports them.
    let stranger = register_ae(&u, "/cse-in", "Cstranger", "stranger", &[]);
    let (rsc, _) = retrieve(&u, "/cse-in/device/positions", &stranger);
    assert_eq!(rsc, 4103);
    let (rsc, _) = create(
        &u,
        "/cse-in/device/positions",
        &stranger,
        4,
        json!({"m2m:cin": {"con": outside()}}),
    );
    assert_eq!(rsc, 4103);
    let (rsc, _) = retrieve(&u, "/cse-in/device/where", &stranger);
    assert_eq!(rsc, 4103);

    // li and loi are the CSE's.
    let (rsc, b) = update(
        &u,
        "/cse-in/device/where",
        &s.ae,
        json!({"m2m:lcp": {"loi": "/x"}}),
    );
    assert_eq!(rsc, 4000, "{b}");
    let (rsc, b) = update(
        &u,
        "/cse-in/device/positions",
        &s.ae,
        json!({"m2m:cnt": {"li": "/x"}}),
    );
    assert_eq!(rsc, 4000, "{b}");

    // Deleting the policy deletes its container and the positions in it.
    report(&s, "/cse-in/device/positions", inside());
    let (rsc, _) = delete(&u, "/cse-in/device/where", &s.ae);
    assert_eq!(rsc, 2002);
    let gone = poll(WAIT, || {
        (retrieve(&u, "/cse-in/device/positions", &s.ae).0 == 4004).then_some(())
    });
    assert!(gone.is_some(), "the location container outlived its policy");
}

#[test]
fn what_a_policy_may_say() {
    let s = setup();
    let u = s.cse.url().to_owned();
    let refused = [
        (json!({"rn": "p"}), 4000, "no locationSource"),
        (json!({"rn": "p", "los": 4}), 4000, "locationSource 4"),
        (
            json!({"rn": "p", "los": 2, "lon": "p"}),
            4000,
            "the container named as the policy",
        ),
        (
            json!({"rn": "p", "los": 2, "gta": "wrong"}),
            4000,
            "an area that is no polygon",
        ),
        (
            json!({"rn": "p", "los": 2, "gta": {"type": "Polygon", "coordinates": [[[1, 1], [2, 2]]]}}),
            4000,
            "a ring of two positions",
        ),
        (
            json!({"rn": "p", "los": 2, "gec": 5}),
            4000,
            "geofence criterion 5",
        ),
        (
            json!({"rn": "p", "los": 2, "lit": 3}),
            4000,
            "information type 3",
        ),
        (
            json!({"rn": "p", "los": 2, "lou": ["soon"]}),
            4000,
            "a period that is no duration",
        ),
        (json!({"rn": "p", "los": 2, "loi": "/x"}), 4000, "loi"),
        (json!({"rn": "p", "los": 2, "lost": "ok"}), 4000, "lost"),
        (
            json!({"rn": "p", "los": 1}),
            4000,
            "network-based without target and server",
        ),
        (
            json!({"rn": "p", "los": 1, "lot": "tel:+49", "lor": "https://ls.example"}),
            5001,
            "network-based",
        ),
        (json!({"rn": "p", "los": 3}), 5001, "sharing-based"),
    ];
    for (attrs, code, what) in refused {
        let (rsc, b) = create_lcp(&s, attrs);
        assert_eq!(rsc, code, "{what}: {b}");
    }
    for attr in ["lot", "lor", "aid", "rlkl", "luec"] {
        let value = match attr {
            "rlkl" => json!(true),
            "luec" => json!(0),
            _ => json!("1234"),
        };
        let (rsc, b) = create_lcp(&s, json!({"rn": "p", "los": 2, attr: value}));
        assert_eq!(rsc, 4000, "{attr} on a device-based policy: {b}");
    }
    // Nothing was left behind by the refusals.
    let (rsc, _) = retrieve(&u, "/cse-in/device/p-location", &s.ae);
    assert_eq!(rsc, 4004);

    // The container's name must be free.
    create_cnt(&u, "/cse-in/device", &s.ae, json!({"rn": "taken"}));
    let (rsc, b) = create_lcp(&s, json!({"rn": "p", "los": 2, "lon": "taken"}));
    assert_eq!(rsc, 4105, "{b}");
    let (rsc, _) = retrieve(&u, "/cse-in/device/p", &s.ae);
    assert_eq!(rsc, 4004, "the policy is not created without its container");

    // Parents: the CSEBase and AEs, nothing else.
    let (rsc, b) = create(
        &u,
        "/cse-in/device/taken",
        &s.ae,
        10,
        json!({"m2m:lcp": {"los": 2}}),
    );
    assert_eq!(rsc, 4108, "{b}");
    let (rsc, b) = create(
        &u,
        "/cse-in",
        "CAdmin",
        10,
        json!({"m2m:lcp": {"rn": "site", "los": 2}}),
    );
    assert_eq!(rsc, 2001, "{b}");

    // An UPDATE keeps to the same rules.
    let (rsc, b) = create_lcp(&s, json!({"rn": "p", "los": 2}));
    assert_eq!(rsc, 2001, "{b}");
    for (attrs, what) in [
        (json!({"los": 1}), "locationSource"),
        (json!({"lon": "x"}), "the container's name"),
        (
            json!({"gta": {"type": "Point", "coordinates": [1.0, 2.0]}}),
            "an area that is a point",
        ),
    ] {
        let (rsc, b) = update(&u, "/cse-in/device/p", &s.ae, json!({ "m2m:lcp": attrs }));
        assert_eq!(rsc, 4000, "{what}: {b}");
    }
    let (rsc, b) = update(
        &u,
        "/cse-in/device/p",
        &s.ae,
        json!({"m2m:lcp": {"gta": area(), "gec": 1, "lit": 2}}),
    );
    assert_eq!(rsc, 2004, "{b}");
}

#[test]
fn geofence_events_follow_the_reported_positions() {
    let s = setup();
    let u = s.cse.url().to_owned();
    let rx = Receiver::start();
    // One policy per criterion; the device starts inside.
    for (gec, name) in [
        (1, "entering"),
        (2, "leaving"),
        (3, "inside"),
        (4, "outside"),
    ] {
        let (rsc, b) = create_lcp(
            &s,
            json!({"rn": name, "los": 2, "lit": 2, "lou": ["PT1S"], "gta": area(), "gec": gec, "lon": format!("{name}-c")}),
        );
        assert_eq!(rsc, 2001, "{b}");
    }
    let (rsc, b) = create(
        &u,
        "/cse-in/device/leaving-c",
        &s.ae,
        23,
        json!({"m2m:sub": {"rn": "watch", "nu": [rx.url()], "enc": {"net": [3]}}}),
    );
    assert_eq!(rsc, 2001, "{b}");

    let path = |name: &str| format!("/cse-in/device/{name}-c");
    // The moves: in, in, out, out, in. What each criterion reports after each move (None: the
    // position itself is the latest).
    let moves = [inside(), inside(), outside(), outside(), inside()];
    let expected: [(&str, [Option<u64>; 5]); 4] = [
        ("entering", [None, None, None, None, Some(1)]),
        ("leaving", [None, None, Some(2), None, None]),
        ("inside", [Some(3), Some(3), None, None, None]),
        ("outside", [None, None, None, Some(4), None]),
    ];
    for (name, events) in expected {
        for (i, (position, event)) in moves.iter().zip(events).enumerate() {
            let la = report(&s, &path(name), position.clone());
            match event {
                Some(n) => assert_eq!(la, json!(n), "{name}, move {i}"),
                None => assert_eq!(&la, position, "{name}, move {i}: no event"),
            }
        }
    }
    // A position given as text counts too; anything else in the container is no position.
    let la = report(&s, &path("leaving"), json!(outside().to_string()));
    assert_eq!(
        la,
        json!(2),
        "leaving (the last move left it inside), told as text"
    );
    let la = report(&s, &path("entering"), json!("not a position"));
    assert_eq!(la, json!("not a position"));

    // The subscriber to the leaving container heard of the position and, after it, the event.
    let cins = rx.wait_for_n(3, |r| r.rep().get("m2m:cin").is_some(), WAIT);
    let cons: Vec<&Value> = cins.iter().map(|r| &r.rep()["m2m:cin"]["con"]).collect();
    assert!(
        cons.contains(&&json!(2)),
        "the leaving event was notified: {cons:?}"
    );

    // Without a geofence (no gta, or position-fix), positions are only stored.
    let (rsc, b) = create_lcp(
        &s,
        json!({"rn": "plain", "los": 2, "lit": 1, "gta": area(), "gec": 3}),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        report(&s, "/cse-in/device/plain-location", inside()),
        inside()
    );
    // A criterion changed by UPDATE applies to the next position.
    let (rsc, b) = update(
        &u,
        "/cse-in/device/plain",
        &s.ae,
        json!({"m2m:lcp": {"lit": 2}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(
        report(&s, "/cse-in/device/plain-location", inside()),
        json!(3)
    );
}

#[test]
fn the_location_container_follows_its_policy() {
    let s = setup();
    let u = s.cse.url().to_owned();
    let rx = Receiver::start();
    let (rsc, b) = create(
        &u,
        "/cse-in/device",
        &s.ae,
        23,
        json!({"m2m:sub": {"rn": "kids", "nu": [rx.url()], "enc": {"net": [3]}}}),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create_lcp(&s, json!({"rn": "where", "los": 2, "lon": "trail"}));
    assert_eq!(rsc, 2001, "{b}");
    // A container like any: its counters from the start, and its creation heard of.
    let (_, cnt) = retrieve(&u, "/cse-in/device/trail", &s.ae);
    assert_eq!(
        (&cnt["m2m:cnt"]["cni"], &cnt["m2m:cnt"]["st"]),
        (&json!(0), &json!(0)),
        "{cnt}"
    );
    let heard = rx.wait_for(|r| r.rep().get("m2m:cnt").is_some(), WAIT);
    assert_eq!(heard.rep()["m2m:cnt"]["rn"], json!("trail"));

    // Sharing the policy shares the positions; unsharing it unshares them.
    let friend = register_ae(&u, "/cse-in", "Cfriend", "friend", &[]);
    let acp = create_acp(
        &u,
        "/cse-in/device",
        &s.ae,
        "share",
        vec![acr(&[&friend], OP_RETRIEVE), acr(&[&s.ae], OP_ALL)],
        vec![acr(&[&s.ae], OP_ALL)],
    );
    report(&s, "/cse-in/device/trail", inside());
    assert_eq!(retrieve(&u, "/cse-in/device/trail/la", &friend).0, 4103);
    set_acpi(&u, "/cse-in/device/where", &s.ae, "m2m:lcp", &[&acp]);
    assert_eq!(
        retrieve(&u, "/cse-in/device/trail/la", &friend).0,
        2000,
        "shared"
    );
    let (rsc, b) = update(
        &u,
        "/cse-in/device/where",
        &s.ae,
        json!({"m2m:lcp": {"acpi": null}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(
        retrieve(&u, "/cse-in/device/trail/la", &friend).0,
        4103,
        "unshared"
    );
    // Handing the policy to a custodian hands the positions over too.
    let (rsc, b) = update(
        &u,
        "/cse-in/device/where",
        &s.ae,
        json!({"m2m:lcp": {"cstn": friend}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(
        retrieve(&u, "/cse-in/device/trail/la", &friend).0,
        2000,
        "the custodian's"
    );
    assert_eq!(
        retrieve(&u, "/cse-in/device/trail/la", &s.ae).0,
        4103,
        "no longer the creator's"
    );
}
