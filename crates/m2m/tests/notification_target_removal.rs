//! Notification target removal (TS-0004 clauses 7.4.30 to 7.4.33, TS-0001 clause 10.2.10.8) on a
//! real `m2m cse` over HTTP: a notification target DELETEs `<subscription>/ntsr`, and the policy
//! of the subscription's creator, or the operator's default, decides.

mod common;

use common::*;
use serde_json::{json, Value};

/// A CSE; the owner AE `Cowner` (pointOfAccess `owner_rx`) with container `c` and a subscription
/// `c/s` notifying the target AE `Ctarget` (pointOfAccess `target_rx`) and the receiver `other`.
struct Setup {
    cse: CseProcess,
    owner_rx: Receiver,
    _target_rx: Receiver,
    other: Receiver,
}

const OWNER: &str = "Cowner";
const TARGET: &str = "Ctarget";
const SUB: &str = "/cse-in/owner/c/s";

fn setup_with(config: &str) -> Setup {
    let cse = CseProcess::start_temp(config);
    let owner_rx = Receiver::start();
    let target_rx = Receiver::start();
    let other = Receiver::start();
    register_ae(cse.url(), "/cse-in", OWNER, "owner", &[owner_rx.url()]);
    register_ae(cse.url(), "/cse-in", TARGET, "target", &[target_rx.url()]);
    create_cnt(cse.url(), "/cse-in/owner", OWNER, json!({ "rn": "c" }));
    let (rsc, b) = create(
        cse.url(),
        "/cse-in/owner/c",
        OWNER,
        23,
        json!({ "m2m:sub": { "rn": "s", "nu": [TARGET, other.url()] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    Setup {
        cse,
        owner_rx,
        _target_rx: target_rx,
        other,
    }
}

fn setup() -> Setup {
    setup_with("")
}

fn nu(s: &Setup) -> Value {
    let (rsc, b) = retrieve(s.cse.url(), SUB, OWNER);
    assert_eq!(rsc, 2000, "{b}");
    b["m2m:sub"]["nu"].clone()
}

fn leave(s: &Setup, from: &str) -> (u16, Value) {
    delete(s.cse.url(), &format!("{SUB}/ntsr"), from)
}

/// The owner's own default policy with action `acn`; its resource name.
fn owner_default(s: &Setup, acn: u64) -> String {
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in",
        OWNER,
        26,
        json!({ "m2m:ntp": { "rn": "ownerDefault", "acn": acn, "plbl": "Default", "cr": null } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:ntp"]["cr"], json!(OWNER), "{b}");
    "/cse-in/ownerDefault".to_owned()
}

#[test]
fn the_system_default_rejects_and_the_creators_policy_accepts() {
    let s = setup();
    let before = nu(&s);
    // The operator's default (reject unless configured): nobody leaves.
    let (rsc, b) = retrieve(s.cse.url(), "/cse-in/defaultNTP", "CAdmin");
    assert_eq!((rsc, b["m2m:ntp"]["acn"].clone()), (2000, json!(2)), "{b}");
    assert_eq!(leave(&s, TARGET).0, 4103);
    assert_eq!(nu(&s), before);
    // The target is an associatedCrossResourceSub entry too (as a notificationURI may be).
    let (rsc, b) = update(
        s.cse.url(),
        SUB,
        OWNER,
        json!({ "m2m:sub": { "acrs": [TARGET] } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    // The owner's default accepts: the target, in any form of its ID, leaves; the others stay.
    owner_default(&s, 1);
    let (rsc, b) = leave(&s, "/id-in/Ctarget");
    assert_eq!(rsc, 2002, "{b}");
    assert_eq!(nu(&s), json!([s.other.url()]));
    // It left the associatedCrossResourceSub list with it: the owner's next change of the
    // notificationURIs is no contradiction, and the deletion notice will not go there.
    let (_, b) = retrieve(s.cse.url(), SUB, OWNER);
    assert_eq!(b["m2m:sub"]["acrs"], json!([]), "{b}");
    let (rsc, b) = update(
        s.cse.url(),
        SUB,
        OWNER,
        json!({ "m2m:sub": { "nu": [s.other.url()] } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    // No longer a target, and it may not read the subscription: it learns nothing of it.
    assert_eq!(leave(&s, TARGET).0, 4004);
    // Nothing but DELETE on ntsr (asked by its creator, who may read the subscription).
    assert_eq!(retrieve(s.cse.url(), &format!("{SUB}/ntsr"), OWNER).0, 4005);
    assert_eq!(
        update(
            s.cse.url(),
            &format!("{SUB}/ntsr"),
            OWNER,
            json!({ "m2m:sub": {} })
        )
        .0,
        4005
    );
}

/// Only a notification target of the subscription may ask: not the creator, not another AE,
/// not the admin, not a stranger's other default.
#[test]
fn only_a_target_may_leave_and_only_the_creators_default_applies() {
    let s = setup();
    let stranger = register_ae(s.cse.url(), "/cse-in", "Cstranger", "stranger", &[]);
    // The stranger's own "Default" accepts everything: it is not the owner's policy.
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in",
        &stranger,
        26,
        json!({ "m2m:ntp": { "rn": "strangers", "acn": 1, "plbl": "Default" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let strangers_ri = b["m2m:ntp"]["ri"].as_str().unwrap().to_owned();
    assert_eq!(
        leave(&s, TARGET).0,
        4103,
        "the stranger's default is not the owner's"
    );
    // Not a target: refused (4103) for who may read the subscription, unknown (4004) for who may
    // not, and an AE-ID nobody registered is no originator at all (4106).
    for (from, code) in [
        (stranger.as_str(), 4004),
        (OWNER, 4103),
        ("CAdmin", 4103),
        ("/id-in/CAdmin", 4103),
        ("Cnobody", 4106),
    ] {
        let (rsc, b) = leave(&s, from);
        assert_eq!(rsc, code, "{from}: {b}");
    }
    assert_eq!(nu(&s).as_array().map(Vec::len), Some(2));
    // The stranger cannot touch the owner's policy either.
    owner_default(&s, 2);
    assert_eq!(
        delete(s.cse.url(), "/cse-in/ownerDefault", &stranger).0,
        4103
    );
    let loosen = json!({ "m2m:ntp": { "acn": 1 } });
    let (rsc, b) = update(s.cse.url(), "/cse-in/ownerDefault", &stranger, loosen);
    assert_eq!(rsc, 4103, "the stranger loosens the owner's policy: {b}");
    // Nor may the owner's subscription refer to the stranger's policy, which the stranger
    // could loosen at will; the owner's own or the operator's may be referred to, and one that
    // does not exist yet.
    // The stranger's policy is refused in every form of its ID (TS-0001 clause 9.3.1).
    let by_id = |prefix: &str| format!("{prefix}{strangers_ri}");
    for (npi, ntu, code) in [
        ("cse-in/strangers".to_owned(), "Cnobody1", 4000),
        ("/id-in/cse-in/strangers".to_owned(), "Cnobody1", 4000),
        (
            "//m2m.example.com/id-in/cse-in/strangers".to_owned(),
            "Cnobody1",
            4000,
        ),
        (by_id(""), "Cnobody1", 4000),
        (by_id("/id-in/"), "Cnobody1", 4000),
        (by_id("//m2m.example.com/id-in/"), "Cnobody1", 4000),
        ("cse-in/defaultNTP".to_owned(), "Cnobody2", 2001),
        ("cse-in/later".to_owned(), TARGET, 2001),
    ] {
        let (rsc, b) = create(
            s.cse.url(),
            SUB,
            OWNER,
            25,
            json!({ "m2m:ntpr": { "ntu": [ntu], "npi": npi } }),
        );
        assert_eq!(rsc, code, "{npi}: {b}");
    }
    // The stranger makes the policy referred to: it decides nothing for the owner's targets.
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in",
        &stranger,
        26,
        json!({ "m2m:ntp": { "rn": "later", "acn": 1, "plbl": "later" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(leave(&s, TARGET).0, 4103, "the owner's default rejects");
    // Its owner changes it (accept now): the target may leave; then the owner removes it.
    let accept = json!({ "m2m:ntp": { "acn": 1 } });
    let (rsc, b) = update(s.cse.url(), "/cse-in/ownerDefault", OWNER, accept);
    assert_eq!((rsc, b["m2m:ntp"]["acn"].clone()), (2004, json!(1)), "{b}");
    assert_eq!(leave(&s, TARGET).0, 2002);
    assert_eq!(nu(&s).as_array().map(Vec::len), Some(1));
    assert_eq!(delete(s.cse.url(), "/cse-in/ownerDefault", OWNER).0, 2002);
    assert_eq!(retrieve(s.cse.url(), "/cse-in/ownerDefault", OWNER).0, 4004);
    // The system default is the configuration's: the admin neither changes it nor adds one of
    // its own, in any ID form.
    for admin in ["CAdmin", "/id-in/CAdmin", "//m2m.example.com/id-in/CAdmin"] {
        let (rsc, b) = create(
            s.cse.url(),
            "/cse-in",
            admin,
            26,
            json!({ "m2m:ntp": { "rn": "adminsOwn", "acn": 1, "plbl": "Default" } }),
        );
        assert_eq!(rsc, 4000, "{admin}: {b}");
    }
    assert_eq!(retrieve(s.cse.url(), "/cse-in/adminsOwn", "CAdmin").0, 4004);
    assert_eq!(delete(s.cse.url(), "/cse-in/defaultNTP", "CAdmin").0, 4000);
    assert_eq!(
        update(
            s.cse.url(),
            "/cse-in/defaultNTP",
            "CAdmin",
            json!({ "m2m:ntp": { "plbl": "x" } })
        )
        .0,
        4000
    );
}

#[test]
fn seek_and_inform_ask_the_creator() {
    let s = setup();
    let policy = owner_default(&s, 3);
    // Seek authorization: the owner allows.
    let (rsc, b) = leave(&s, TARGET);
    assert_eq!(rsc, 2002, "{b}");
    let asked = s.owner_rx.wait_for(|r| r.sgn().get("tra").is_some(), WAIT);
    assert_eq!(asked.sgn()["tra"], json!(true));
    assert_eq!(asked.sgn()["nt"], json!(TARGET));
    assert!(
        asked.sgn()["sur"]
            .as_str()
            .is_some_and(|s| s.starts_with("/id-in/")),
        "{:?}",
        asked.body
    );
    assert_eq!(nu(&s), json!([s.other.url()]));
    // Put the target back; now the owner refuses.
    let (rsc, b) = update(
        s.cse.url(),
        SUB,
        OWNER,
        json!({ "m2m:sub": { "nu": [TARGET, s.other.url()] } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    s.owner_rx.answer_with(4103);
    assert_eq!(leave(&s, TARGET).0, 4103);
    assert_eq!(nu(&s).as_array().map(Vec::len), Some(2));
    // Inform: the owner is told, the target refused.
    s.owner_rx.answer_with(2000);
    delete(s.cse.url(), &policy, OWNER);
    owner_default(&s, 4);
    assert_eq!(leave(&s, TARGET).0, 4103);
    let told = s.owner_rx.wait_for(|r| r.sgn().get("trr").is_some(), WAIT);
    assert_eq!(told.sgn()["nt"], json!(TARGET));
    assert_eq!(nu(&s).as_array().map(Vec::len), Some(2));
}

/// A reference under the subscription picks the policy for its targets; rules on the time of day
/// decide when it applies.
#[test]
fn references_and_rules_pick_and_bound_the_policy() {
    let s = setup();
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in",
        OWNER,
        26,
        json!({ "m2m:ntp": { "rn": "lenient", "acn": 1, "plbl": "lenient", "rrs": 1 } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create(
        s.cse.url(),
        SUB,
        OWNER,
        25,
        json!({ "m2m:ntpr": { "rn": "ref", "ntu": [TARGET], "npi": "cse-in/lenient" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    // A target has one reference.
    let (rsc, _) = create(
        s.cse.url(),
        SUB,
        OWNER,
        25,
        json!({ "m2m:ntpr": { "ntu": [TARGET] } }),
    );
    assert_eq!(rsc, 4105);
    // Two rule groups combined by AND: one never holds (1999), so the policy does not apply.
    for (rn, tod, drr) in [
        ("now", json!(["* * * * * * *"]), 2),
        ("never", json!(["* * * * * * 1999", "* * * * * * *"]), 1),
    ] {
        let (rsc, b) = create(
            s.cse.url(),
            "/cse-in/lenient",
            OWNER,
            27,
            json!({ "m2m:pdr": { "rn": rn, "dr": { "tod": tod }, "drr": drr } }),
        );
        assert_eq!(rsc, 2001, "{b}");
    }
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/lenient",
        OWNER,
        27,
        json!({ "m2m:pdr": { "dr": {} } }),
    );
    assert_eq!(rsc, 4105, "at most two rule groups");
    assert_eq!(leave(&s, TARGET).0, 4103);
    // The AND group becomes OR: now both groups hold.
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/lenient/never",
        OWNER,
        json!({ "m2m:pdr": { "drr": 2 } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    let (rsc, b) = leave(&s, TARGET);
    assert_eq!(rsc, 2002, "{b}");
    assert_eq!(nu(&s), json!([s.other.url()]));
}

#[test]
fn bad_input_gets_its_status_code() {
    let s = setup();
    for (attrs, why) in [
        (json!({ "plbl": "x" }), "no action"),
        (json!({ "acn": 1 }), "no label"),
        (json!({ "acn": 5, "plbl": "x" }), "no such action"),
        (
            json!({ "acn": 1, "plbl": "x", "rrs": 3 }),
            "no such operator",
        ),
    ] {
        let (rsc, b) = create(
            s.cse.url(),
            "/cse-in",
            OWNER,
            26,
            json!({ "m2m:ntp": attrs }),
        );
        assert_eq!(rsc, 4000, "{why}: {b}");
    }
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in",
        OWNER,
        26,
        json!({ "m2m:ntp": { "rn": "p", "acn": 1, "plbl": "x" } }),
    );
    assert_eq!(rsc, 2001);
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in",
        OWNER,
        26,
        json!({ "m2m:ntp": { "acn": 2, "plbl": "X" } }),
    );
    assert_eq!(rsc, 4000, "one label per creator");
    for acn in [json!(5), json!("accept"), json!(null)] {
        let (rsc, b) = update(
            s.cse.url(),
            "/cse-in/p",
            OWNER,
            json!({ "m2m:ntp": { "acn": acn } }),
        );
        assert_eq!(rsc, 4000, "acn {acn}: {b}");
    }
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/p",
        OWNER,
        27,
        json!({ "m2m:pdr": { "dr": { "tod": ["not a schedule"] } } }),
    );
    assert_eq!(rsc, 4000);
    // Where the types live.
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/owner",
        OWNER,
        26,
        json!({ "m2m:ntp": { "acn": 1, "plbl": "y" } }),
    );
    assert_eq!(rsc, 4108);
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/owner/c",
        OWNER,
        25,
        json!({ "m2m:ntpr": { "ntu": [TARGET] } }),
    );
    assert_eq!(rsc, 4108);
    let (rsc, _) = create(
        s.cse.url(),
        SUB,
        OWNER,
        25,
        json!({ "m2m:ntpr": { "ntu": [] } }),
    );
    assert_eq!(rsc, 4000, "ntu names a target");
    // Discovery finds the owner's policies, not others'.
    let (_, b) = get_with_query(s.cse.url(), "/cse-in", OWNER, "fu=1&ty=26");
    assert_eq!(b["m2m:uril"].as_array().map(Vec::len), Some(1), "{b}");
}

/// The operator's default comes from the configuration.
#[test]
fn the_operator_sets_the_system_default() {
    let s = setup_with("[notifications]\ntarget_removal = \"accept\"\n");
    let (rsc, b) = leave(&s, TARGET);
    assert_eq!(rsc, 2002, "{b}");
    assert_eq!(nu(&s), json!([s.other.url()]));
}

/// On a listener where a From is only a claim (anonymous), nobody removes a target, not even
/// under a policy that accepts: the target's ID, claimed in any form, proves nothing. Over its
/// own security association the same target leaves.
#[test]
fn a_claimed_target_removes_nothing() {
    let pki = Pki::temp();
    let key = "00112233445566778899aabbccddeeff";
    let cse = CseProcess::start_temp(&format!(
        "{}[http]\noriginators = \"anonymous\"\n\
         [[security.psk]]\nentity = \"Cowner\"\nkpsa_id = \"owner@in.example.com\"\nkey = \"{key}\"\n\
         [[security.psk]]\nentity = \"Ctarget\"\nkpsa_id = \"target@in.example.com\"\nkey = \"{key}\"\n",
        common::in_tls_config(&pki)
    ));
    let owner = TlsClient::psk("owner@in.example.com", key);
    let target = TlsClient::psk("target@in.example.com", key);
    let target_rx = Receiver::start();
    let call = |c: &TlsClient,
                method: &str,
                path: &str,
                from: &str,
                ty: Option<u16>,
                body: Option<Value>| {
        c.request(cse.https_url(), method, path, Some(from), ty, body.as_ref())
            .expect("an answer")
    };
    for (c, from, rn, poa) in [
        (&owner, OWNER, "owner", None),
        (&target, TARGET, "target", Some(target_rx.url())),
    ] {
        let ae = json!({ "m2m:ae": { "rn": rn, "api": "Nx", "rr": poa.is_some(), "srv": ["3"],
                          "poa": poa.map(|p| vec![p]).unwrap_or_default() } });
        let r = call(c, "POST", "/cse-in", from, Some(2), Some(ae));
        assert_eq!(r.rsc, 2001, "{:?}", r.body);
    }
    let r = call(
        &owner,
        "POST",
        "/cse-in/owner",
        OWNER,
        Some(3),
        Some(json!({ "m2m:cnt": { "rn": "c" } })),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let r = call(
        &owner,
        "POST",
        "/cse-in/owner/c",
        OWNER,
        Some(23),
        Some(json!({ "m2m:sub": { "rn": "s", "nu": [TARGET] } })),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let r = call(
        &owner,
        "POST",
        "/cse-in",
        OWNER,
        Some(26),
        Some(json!({ "m2m:ntp": { "acn": 1, "plbl": "Default" } })),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    for claimed in [TARGET, "/id-in/Ctarget", "//m2m.example.com/id-in/Ctarget"] {
        let (rsc, b) = delete(cse.url(), &format!("{SUB}/ntsr"), claimed);
        assert!(matches!(rsc, 4004 | 4103 | 4106), "{claimed}: {rsc} {b}");
    }
    let r = call(&owner, "GET", SUB, OWNER, None, None);
    assert_eq!(r.body["m2m:sub"]["nu"], json!([TARGET]), "{:?}", r.body);
    let r = call(
        &target,
        "DELETE",
        &format!("{SUB}/ntsr"),
        TARGET,
        None,
        None,
    );
    assert_eq!(r.rsc, 2002, "{:?}", r.body);
    let r = call(&owner, "GET", SUB, OWNER, None, None);
    assert_eq!(r.body["m2m:sub"]["nu"], json!([]), "{:?}", r.body);
}

/// A crossResourceSubscription's targets leave it the same way (TS-0004 table 7.4.58.1-4: it has
/// an `ntsr` too).
#[test]
fn a_cross_resource_subscription_target_leaves_it_too() {
    let s = setup();
    let u = s.cse.url();
    create_cnt(u, "/cse-in/owner", OWNER, json!({ "rn": "c2" }));
    let (rsc, b) = create(
        u,
        "/cse-in/owner",
        OWNER,
        48,
        json!({ "m2m:crs": { "rn": "x", "nu": [TARGET], "twt": 1, "tws": "PT10S",
                "rrat": ["cse-in/owner/c", "cse-in/owner/c2"], "encs": { "enc": [{ "net": [3] }] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        delete(u, "/cse-in/owner/x/ntsr", TARGET).0,
        4103,
        "the system default rejects"
    );
    owner_default(&s, 1);
    let (rsc, b) = delete(u, "/cse-in/owner/x/ntsr", TARGET);
    assert_eq!(rsc, 2002, "{b}");
    let (_, b) = retrieve(u, "/cse-in/owner/x", OWNER);
    assert_eq!(b["m2m:crs"]["nu"], json!([]), "{b}");
}

/// Review findings: a reference naming the target in another form of its ID still applies, and
/// of two references the strictest wins; who may not read a subscription learns nothing of it
/// through `ntsr`; a policy named like a future AE-ID does not keep that AE from registering; an
/// originator keeps at most 16 policies.
#[test]
fn policies_match_ids_in_any_form_and_hide_what_they_may() {
    let s = setup();
    let u = s.cse.url();
    owner_default(&s, 1);
    let (rsc, b) = create(
        u,
        "/cse-in",
        OWNER,
        26,
        json!({ "m2m:ntp": { "rn": "strict", "acn": 2, "plbl": "strict" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create(
        u,
        SUB,
        OWNER,
        25,
        json!({ "m2m:ntpr": { "ntu": ["/id-in/Ctarget"], "npi": "cse-in/strict" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        leave(&s, TARGET).0,
        4103,
        "the reference in SP-relative form applies"
    );
    // Strangers: the same 4004 as for a subscription that does not exist.
    let stranger = register_ae(u, "/cse-in", "Cstranger", "stranger", &[]);
    for (op, path) in [
        ("GET", format!("{SUB}/ntsr")),
        ("DELETE", format!("{SUB}/ntsr")),
        ("GET", "/cse-in/owner/c/none/ntsr".to_owned()),
    ] {
        let r = request(op, u, &path, Some(&stranger), None, None);
        assert_eq!(r.rsc, 4004, "{op} {path}: {:?}", r.body);
    }
    // A registree's policy named like a future AE-ID.
    let (rsc, b) = create(
        u,
        "/cse-in",
        &stranger,
        26,
        json!({ "m2m:ntp": { "rn": "Cvictim", "acn": 1, "plbl": "x" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create(
        u,
        "/cse-in",
        "Cvictim",
        2,
        json!({ "m2m:ae": { "api": "Nvictim", "rr": false, "srv": ["3"] } }),
    );
    assert_eq!(rsc, 2001, "the victim registers: {b}");
    assert_eq!(b["m2m:ae"]["ri"], json!("Cvictim"), "{b}");
    assert_ne!(b["m2m:ae"]["rn"], json!("Cvictim"), "{b}");
    // At most 16 policies per originator.
    let mut codes = Vec::new();
    for i in 0..20 {
        let (rsc, _) = create(
            u,
            "/cse-in",
            &stranger,
            26,
            json!({ "m2m:ntp": { "acn": 1, "plbl": format!("p{i}") } }),
        );
        codes.push(rsc);
    }
    assert_eq!(
        codes.iter().filter(|c| **c == 2001).count(),
        15,
        "{codes:?}"
    );
    assert!(codes.iter().skip(15).all(|c| *c == 5207), "{codes:?}");
}

/// A target has one reference per subscription whatever form of its ID each names (4105).
#[test]
fn a_target_is_referenced_once_in_any_id_form() {
    let s = setup();
    let u = s.cse.url();
    let (rsc, b) = create(
        u,
        SUB,
        OWNER,
        25,
        json!({ "m2m:ntpr": { "ntu": [TARGET] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    for other in [
        "/id-in/Ctarget",
        "//m2m.example.com/id-in/Ctarget",
        "cse-in/target",
        "/id-in/cse-in/target",
    ] {
        let (rsc, b) = create(u, SUB, OWNER, 25, json!({ "m2m:ntpr": { "ntu": [other] } }));
        assert_eq!(rsc, 4105, "{other}: {b}");
    }
}
