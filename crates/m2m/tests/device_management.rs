//! `<node>` and `<mgmtObj>` (TS-0004 clauses 7.4.15, 7.4.18 and Annex D) on a real `m2m cse` over
//! HTTP: the node links kept as AEs come, move and go; the specializations with their own
//! attributes and names; executable attributes; access control and discovery of both.

mod common;

use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "CAdmin";

/// The policy letting the locks (`Clock*`) read the nodes that carry it.
fn locks_may_read(cse: &CseProcess) -> String {
    create_acp(
        cse.url(),
        "/cse-in",
        ADMIN,
        "locksRead",
        vec![acr(&["Clock*"], OP_RETRIEVE), acr(&[ADMIN], OP_ALL)],
        vec![acr(&[ADMIN], OP_ALL)],
    )
}

fn node(cse: &CseProcess, rn: &str) -> String {
    node_with(cse, rn, json!([]))
}

fn node_with(cse: &CseProcess, rn: &str, acpi: Value) -> String {
    let mut nod = json!({ "rn": rn, "ni": format!("urn:sn:{rn}") });
    if acpi != json!([]) {
        nod["acpi"] = acpi;
    }
    let (rsc, b) = create(cse.url(), "/cse-in", ADMIN, 14, json!({ "m2m:nod": nod }));
    assert_eq!(rsc, 2001, "{b}");
    b["m2m:nod"]["ri"].as_str().unwrap().to_owned()
}

fn hael(cse: &CseProcess, rn: &str) -> Value {
    let (rsc, b) = retrieve(cse.url(), &format!("/cse-in/{rn}"), ADMIN);
    assert_eq!(rsc, 2000, "{b}");
    b["m2m:nod"]["hael"].clone()
}

fn register_on(cse: &CseProcess, from: &str, rn: &str, nl: &str) -> (u16, Value) {
    create(
        cse.url(),
        "/cse-in",
        from,
        2,
        json!({ "m2m:ae": { "rn": rn, "api": "Nlock", "rr": false, "srv": ["3"], "nl": nl } }),
    )
}

#[test]
fn a_node_lists_the_aes_that_name_it() {
    let cse = CseProcess::start_in();
    let acp = locks_may_read(&cse);
    let n1 = node_with(&cse, "gateway", json!([acp]));
    let n2 = node_with(&cse, "spare", json!([acp]));
    assert_eq!(hael(&cse, "gateway"), Value::Null);
    // By resourceID or structured name.
    let (rsc, b) = register_on(&cse, "Clock1", "lock1", &n1);
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = register_on(&cse, "Clock2", "lock2", "cse-in/gateway");
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(hael(&cse, "gateway"), json!(["Clock1", "Clock2"]));
    // Moving a lock to the other node.
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/lock1",
        "Clock1",
        json!({ "m2m:ae": { "nl": n2 } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(hael(&cse, "gateway"), json!(["Clock2"]));
    assert_eq!(hael(&cse, "spare"), json!(["Clock1"]));
    // Deregistering: the last AE gone, the attribute goes.
    assert_eq!(delete(cse.url(), "/cse-in/lock1", "Clock1").0, 2002);
    assert_eq!(hael(&cse, "spare"), Value::Null);
    // Deleting a node: its AEs no longer name it.
    assert_eq!(delete(cse.url(), "/cse-in/gateway", ADMIN).0, 2002);
    let (_, ae) = retrieve(cse.url(), "/cse-in/lock2", "Clock2");
    assert!(ae["m2m:ae"].get("nl").is_none(), "{ae}");
    // An nl must name a node here that the AE may read; the answer is the same whether the
    // node exists or not, and nothing is listed.
    let private = node(&cse, "private");
    for nl in [
        "cse-in/nothing",
        "cse-in/lock2",
        "cse-in/private",
        private.as_str(),
    ] {
        let (rsc, b) = register_on(&cse, "Clock3", "lock3", nl);
        assert_eq!(rsc, 4103, "{nl}: {b}");
    }
    assert_eq!(hael(&cse, "private"), Value::Null);
    // A node pre-listing an AE does not list it twice.
    let (rsc, b) = create(
        cse.url(),
        "/cse-in",
        ADMIN,
        14,
        json!({ "m2m:nod": { "rn": "pre", "ni": "urn:sn:pre", "hael": ["Clock4"], "acpi": [acp] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(register_on(&cse, "Clock4", "lock4", "cse-in/pre").0, 2001);
    assert_eq!(hael(&cse, "pre"), json!(["Clock4"]));
}

#[test]
fn mgmt_objects_take_their_specializations_attributes() {
    let cse = CseProcess::start_in();
    node(&cse, "gw");
    let mgo = |root: &str, attrs: Value| {
        create(cse.url(), "/cse-in/gw", ADMIN, 13, json!({ root: attrs }))
    };
    let (rsc, b) = mgo(
        "m2m:bat",
        json!({ "rn": "bat", "mgd": 1006, "btl": 23, "bts": 5 }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:bat"]["ty"], json!(13));
    let (rsc, b) = mgo(
        "m2m:fwr",
        json!({ "rn": "fwr", "mgd": 1001, "vr": "1.0", "fwn": "lockfw", "url": "https://fw.example.com/1.0", "ud": false }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:fwr"]["uds"], json!({ "sus": 0 }), "{b}");
    let (rsc, b) = mgo("m2m:rbo", json!({ "rn": "rbo", "mgd": 1009 }));
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        (b["m2m:rbo"]["rbo"].clone(), b["m2m:rbo"]["far"].clone()),
        (json!(true), json!(true)),
        "always true (TS-0004 Annex D.10): {b}"
    );
    // Bad input.
    for (root, attrs, why) in [
        (
            "m2m:bat",
            json!({ "mgd": 1006, "btl": 23, "bts": 99 }),
            "bts 1-7",
        ),
        (
            "m2m:bat",
            json!({ "mgd": 1006, "btl": 123, "bts": 1 }),
            "btl 0-100",
        ),
        (
            "m2m:bat",
            json!({ "mgd": 1006, "btl": 23 }),
            "bts mandatory",
        ),
        (
            "m2m:bat",
            json!({ "mgd": 1003, "btl": 23, "bts": 1 }),
            "mgd of another root",
        ),
        ("m2m:bat", json!({ "btl": 23, "bts": 1 }), "no mgd"),
        (
            "m2m:bat",
            json!({ "mgd": 1006, "btl": 1, "bts": 1, "vr": "x" }),
            "firmware's attribute",
        ),
        ("m2m:cmp", json!({ "mgd": 1011 }), "CMDH not hosted"),
        ("m2m:xyz", json!({ "mgd": 1006 }), "no such root"),
        (
            "m2m:swr",
            json!({ "mgd": 1002, "vr": "1", "swn": "s", "url": "u", "in": true }),
            "in is not for CREATE",
        ),
    ] {
        let (rsc, b) = mgo(root, attrs);
        assert_eq!(rsc, 4000, "{why}: {b}");
    }
    // Only under a node.
    let (rsc, _) = create(
        cse.url(),
        "/cse-in",
        ADMIN,
        13,
        json!({ "m2m:bat": { "mgd": 1006, "btl": 1, "bts": 1 } }),
    );
    assert_eq!(rsc, 4108);
    // An UPDATE keeps the specialization's rules and name.
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/gw/bat",
        ADMIN,
        json!({ "m2m:bat": { "btl": 7 } }),
    );
    assert_eq!((rsc, b["m2m:bat"]["btl"].clone()), (2004, json!(7)), "{b}");
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/gw/bat",
        ADMIN,
        json!({ "m2m:mem": { "mma": 1 } }),
    );
    assert_eq!(rsc, 4102, "another specialization's root: {b}");
    for (body, why) in [
        (json!({ "m2m:bat": { "mgd": 1003 } }), "mgd is create-only"),
        (json!({ "m2m:bat": { "bts": 0 } }), "bts 1-7"),
    ] {
        assert_eq!(
            update(cse.url(), "/cse-in/gw/bat", ADMIN, body).0,
            4000,
            "{why}"
        );
    }
    // Asking the device to act: the status shows the request under way; both of a pair: 4000.
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/gw/fwr",
        ADMIN,
        json!({ "m2m:fwr": { "ud": true } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(b["m2m:fwr"]["uds"], json!({ "acn": "ud", "sus": 3 }), "{b}");
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/gw/rbo",
        ADMIN,
        json!({ "m2m:rbo": { "rbo": false } }),
    );
    assert_eq!(
        (rsc, b["m2m:rbo"]["rbo"].clone()),
        (2004, json!(true)),
        "{b}"
    );
    assert_eq!(
        update(
            cse.url(),
            "/cse-in/gw/rbo",
            ADMIN,
            json!({ "m2m:rbo": { "rbo": true, "far": true } })
        )
        .0,
        4000
    );
    // Discovery and rcn 8 group them under their own names.
    let (_, b) = get_with_query(cse.url(), "/cse-in/gw", ADMIN, "fu=1&ty=13");
    assert_eq!(b["m2m:uril"].as_array().map(Vec::len), Some(3), "{b}");
    let (_, b) = get_with_query(cse.url(), "/cse-in/gw", ADMIN, "rcn=8");
    assert_eq!(
        b["m2m:nod"]["m2m:bat"].as_array().map(Vec::len),
        Some(1),
        "{b}"
    );
    assert_eq!(
        b["m2m:nod"]["m2m:fwr"].as_array().map(Vec::len),
        Some(1),
        "{b}"
    );
}

/// A node and its mgmtObjs are the admin's unless a policy says otherwise: an AE, even one the
/// node lists, neither reads nor changes them, and cannot make one.
#[test]
fn device_management_is_under_access_control() {
    let cse = CseProcess::start_in();
    node(&cse, "gw");
    let (rsc, b) = create(
        cse.url(),
        "/cse-in/gw",
        ADMIN,
        13,
        json!({ "m2m:rbo": { "rn": "rbo", "mgd": 1009 } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        register_on(&cse, "Clock1", "lock1", "").0,
        4000,
        "an empty nl"
    );
    register_ae(cse.url(), "/cse-in", "Clock1", "lock1", &[]);
    for path in ["/cse-in/gw", "/cse-in/gw/rbo"] {
        assert_eq!(retrieve(cse.url(), path, "Clock1").0, 4103, "{path}");
        assert_eq!(delete(cse.url(), path, "Clock1").0, 4103, "{path}");
    }
    assert_eq!(
        update(
            cse.url(),
            "/cse-in/gw/rbo",
            "Clock1",
            json!({ "m2m:rbo": { "rbo": true } })
        )
        .0,
        4103
    );
    let (rsc, _) = create(
        cse.url(),
        "/cse-in",
        "Clock1",
        14,
        json!({ "m2m:nod": { "ni": "urn:sn:mine" } }),
    );
    assert_eq!(rsc, 4103, "a node under the CSEBase is the operator's");
    let (_, b) = get_with_query(cse.url(), "/cse-in", "Clock1", "fu=1&ty=14");
    assert_eq!(b["m2m:uril"], json!([]), "{b}");
    // With a policy the managed entity reads its reboot object and reports.
    let acp = create_acp(
        cse.url(),
        "/cse-in",
        ADMIN,
        "device",
        vec![acr(&["Clock1"], OP_RETRIEVE | OP_UPDATE)],
        vec![acr(&[ADMIN], OP_ALL)],
    );
    set_acpi(
        cse.url(),
        "/cse-in/gw/rbo",
        ADMIN,
        "m2m:rbo",
        &[acp.as_str()],
    );
    assert_eq!(retrieve(cse.url(), "/cse-in/gw/rbo", "Clock1").0, 2000);
    assert_eq!(retrieve(cse.url(), "/cse-in/gw", "Clock1").0, 4103);
}
