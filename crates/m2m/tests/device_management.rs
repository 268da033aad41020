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
    // A node without its nodeID, or with one that is no string, or claiming a link the CSE
    // keeps: 4000, nothing made.
    for (what, nod) in [
        ("no nodeID", json!({ "rn": "bad" })),
        ("a number for nodeID", json!({ "rn": "bad", "ni": 7 })),
        (
            "a string for hael",
            json!({ "rn": "bad", "ni": "urn:sn:bad", "hael": "Clock4" }),
        ),
    ] {
        let (rsc, b) = create(cse.url(), "/cse-in", ADMIN, 14, json!({ "m2m:nod": nod }));
        assert_eq!(rsc, 4000, "{what}: {b}");
    }
    assert_eq!(retrieve(cse.url(), "/cse-in/bad", ADMIN).0, 4004);
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

/// A syntactically valid JWE (compact serialization) standing for a secret protected for the
/// device: the CSE cannot open it and need not.
fn jwe(tag: &str) -> String {
    let header = b64url(br#"{"alg":"ECDH-ES","enc":"A256GCM","kid":"device-1"}"#);
    format!(
        "{header}..{}.{}.{}",
        b64url(b"twelve-bytes"),
        b64url(tag.as_bytes()),
        b64url(b"sixteen-byte-tag")
    )
}

fn mgmt_obj(cse: &CseProcess, parent: &str, root: &str, body: Value) -> (u16, Value) {
    create(cse.url(), parent, ADMIN, 13, json!({ root: body }))
}

/// Device configuration (TS-0022 specializations): dataCollection's schedules and the rule
/// between its measurement schedule and interval; SIM and mobileNetwork values; discovery.
#[test]
fn device_configuration_objects_follow_their_rules() {
    let cse = CseProcess::start_in();
    node(&cse, "gw");
    let (rsc, b) = mgmt_obj(
        &cse,
        "/cse-in/gw",
        "dcfg:datc",
        json!({ "mgd": 1021, "rn": "datc", "cntp": "cse-in/gw/data" }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["dcfg:datc"]["mgd"], json!(1021), "{b}");
    let upd = |body: Value| {
        update(
            cse.url(),
            "/cse-in/gw/datc",
            ADMIN,
            json!({ "dcfg:datc": body }),
        )
    };
    for (bad, why) in [
        (json!({ "rpsc": 10000 }), "not a list"),
        (json!({ "rpsc": [10] }), "not scheduleEntries"),
        (json!({ "rpsc": [{ "sce": ["10 * * * *"] }] }), "5 fields"),
        (
            json!({ "mesc": [{ "sce": "10 * * * * * *" }] }),
            "sce not a list",
        ),
        (json!({ "cntp": null }), "mandatory"),
    ] {
        assert_eq!(upd(bad).0, 4000, "{why}");
    }
    // As many entries as a <schedule> holds (64), not more.
    let many = vec![json!({ "sce": ["10 * * * * * *"] }); 65];
    assert_eq!(upd(json!({ "rpsc": many })).0, 4000, "65 schedule entries");
    let (rsc, b) = upd(json!({ "rpsc": [{ "sce": ["10 * * * * * *"] }] }));
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(
        b["dcfg:datc"]["rpsc"],
        json!([{ "sce": ["10 * * * * * *"] }])
    );
    let (rsc, b) = upd(json!({ "mesc": [{ "sce": ["0 */5 * * * * *"] }] }));
    assert_eq!(rsc, 2004, "{b}");
    // A measurement schedule or an interval, not both: judged on the resource as it would be.
    assert_eq!(upd(json!({ "meil": 10000 })).0, 4000);
    let (rsc, b) = upd(json!({ "mesc": null, "meil": 10000 }));
    assert_eq!(rsc, 2004, "{b}");
    assert!(b["dcfg:datc"].get("mesc").is_none(), "{b}");
    assert_eq!(b["dcfg:datc"]["meil"], json!(10000));
    // SIM and mobileNetwork.
    let (rsc, b) = mgmt_obj(
        &cse,
        "/cse-in/gw",
        "dcfg:sim",
        json!({ "mgd": 1030, "rn": "sim", "icid": "8944500102198304826", "sity": 2, "sist": 1 }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        mgmt_obj(
            &cse,
            "/cse-in/gw",
            "dcfg:sim",
            json!({ "mgd": 1030, "sity": 9, "icid": "1" })
        )
        .0,
        4000
    );
    assert_eq!(
        mgmt_obj(
            &cse,
            "/cse-in/gw",
            "dcfg:sim",
            json!({ "mgd": 1030, "sity": 1 })
        )
        .0,
        4000,
        "icid is mandatory"
    );
    let (rsc, b) = mgmt_obj(
        &cse,
        "/cse-in/gw",
        "dcfg:mnwk",
        json!({ "mgd": 1031, "rn": "mnwk", "cnb": 7, "rss": -70, "ipad": [{ "ip4": "192.168.1.10" }] }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["dcfg:mnwk"]["rss"], json!(-70));
    assert_eq!(
        mgmt_obj(
            &cse,
            "/cse-in/gw",
            "dcfg:mnwk",
            json!({ "mgd": 1031, "cnb": 7, "ipad": [{ "ip4": "not an address" }] })
        )
        .0,
        4000
    );
    assert_eq!(
        mgmt_obj(
            &cse,
            "/cse-in/gw",
            "dcfg:mnwk",
            json!({ "mgd": 1030, "cnb": 7 })
        )
        .0,
        4000,
        "mgd of another specialization"
    );
    // Discovery of mgmtObjs finds them all; a RETRIEVE shows each under its own name.
    let (_, b) = get_with_query(cse.url(), "/cse-in/gw", ADMIN, "fu=1&ty=13");
    assert_eq!(b["m2m:uril"].as_array().map(Vec::len), Some(3), "{b}");
    let (rsc, b) = retrieve(cse.url(), "/cse-in/gw/mnwk", ADMIN);
    assert_eq!(rsc, 2000);
    assert_eq!(b["dcfg:mnwk"]["cnb"], json!(7), "{b}");
}

/// A secret in a device configuration object (a WiFi password or key, a credential's secret or
/// token, a certificate file with its private key) is accepted only protected for the device, as
/// a JWE: never in the clear, and a refusal does not echo it.
#[test]
fn secrets_in_device_configuration_are_accepted_only_protected() {
    let cse = CseProcess::start_in();
    node(&cse, "gw");
    let plain = "correct horse battery staple";
    let refused = |root: &str, body: Value, why: &str| {
        let (rsc, b) = mgmt_obj(&cse, "/cse-in/gw", root, body);
        assert_eq!(rsc, 4000, "{why}: {b}");
        assert!(
            b["m2m:dbg"]
                .as_str()
                .is_some_and(|d| d.contains("protected for its target")),
            "{why}: refused for being in the clear: {b}"
        );
        assert!(
            !b.to_string().contains(plain),
            "{why}: the refusal echoes the secret: {b}"
        );
    };
    // WiFi: Enterprise user and password; the password in the clear is refused.
    refused(
        "dcfg:wific",
        json!({ "mgd": 1028, "ssid": "home", "scan": false, "wcrds": { "enct": 8, "unm": "lock", "pwd": plain } }),
        "a password in the clear",
    );
    let (rsc, b) = mgmt_obj(
        &cse,
        "/cse-in/gw",
        "dcfg:wific",
        json!({ "mgd": 1028, "rn": "wifi", "ssid": "home", "scan": false, "wcrds": { "enct": 8, "unm": "lock", "pwd": jwe("pwd") } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["dcfg:wific"]["wcrds"]["pwd"], json!(jwe("pwd")), "{b}");
    assert_eq!(b["dcfg:wific"]["ud"], json!(false), "{b}");
    // Each credential with its encryption type only.
    for (wcrds, why) in [
        (
            json!({ "enct": 2, "unm": "lock", "pwd": jwe("p") }),
            "a user name with WEP",
        ),
        (
            json!({ "enct": 4, "wepk": jwe("k") }),
            "a WEP key with WPA2",
        ),
        (
            json!({ "enct": 8, "wpap": jwe("k") }),
            "a passphrase with Enterprise",
        ),
        (json!({ "enct": 9 }), "no such type"),
        (json!({ "unm": "lock" }), "no type"),
    ] {
        let (rsc, b) = update(
            cse.url(),
            "/cse-in/gw/wifi",
            ADMIN,
            json!({ "dcfg:wific": { "wcrds": wcrds } }),
        );
        assert_eq!(rsc, 4000, "{why}: {b}");
    }
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/gw/wifi",
        ADMIN,
        json!({ "dcfg:wific": { "wcrds": { "enct": 3, "wpap": plain } } }),
    );
    assert_eq!(rsc, 4000, "{b}");
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/gw/wifi",
        ADMIN,
        json!({ "dcfg:wific": { "wcrds": { "enct": 2, "wepk": jwe("wep") } } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    // credentials: secret and token protected; an UPDATE in the clear leaves the stored one.
    refused(
        "dcfg:crds",
        json!({ "mgd": 1029, "pur": "mqtt", "crid": "lock-1", "crse": plain }),
        "a secret in the clear",
    );
    refused(
        "dcfg:crds",
        json!({ "mgd": 1029, "crid": "lock-1", "crtk": plain }),
        "a token in the clear",
    );
    let (rsc, b) = mgmt_obj(
        &cse,
        "/cse-in/gw",
        "dcfg:crds",
        json!({ "mgd": 1029, "rn": "crds", "pur": "mqtt", "crid": "lock-1", "crse": jwe("s"), "crtk": jwe("t") }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, _) = update(
        cse.url(),
        "/cse-in/gw/crds",
        ADMIN,
        json!({ "dcfg:crds": { "crse": plain } }),
    );
    assert_eq!(rsc, 4000);
    let (_, b) = retrieve(cse.url(), "/cse-in/gw/crds", ADMIN);
    assert_eq!(b["dcfg:crds"]["crse"], json!(jwe("s")), "{b}");
    // myCertFileCred: a certificate file is public; one that could hold its private key (any
    // format but certificate-only ones) is protected; certificates are checked to be ones.
    let pki = Pki::temp();
    let pem = std::fs::read_to_string(pki.ca_pem()).unwrap();
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let nycfc = |mcff: &str, mcfc: &str| {
        mgmt_obj(
            &cse,
            "/cse-in/gw",
            "dcfg:nycfc",
            json!({ "mgd": 1023, "suids": [42], "mcff": mcff, "mcfc": mcfc }),
        )
    };
    for (mcff, mcfc) in [
        ("application/x-pem-file", pem.as_str()),
        ("application/pkix-cert", der_b64.as_str()),
        ("Application/PKIX-Cert; charset=binary", der_b64.as_str()),
    ] {
        let (rsc, b) = nycfc(mcff, mcfc);
        assert_eq!(rsc, 2001, "{mcff}: {b}");
    }
    assert_eq!(
        mgmt_obj(
            &cse,
            "/cse-in/gw",
            "dcfg:nycfc",
            json!({ "mgd": 1023, "suids": [99], "mcff": "application/pkix-cert", "mcfc": der_b64 })
        )
        .0,
        4000,
        "no such SUID"
    );
    assert_eq!(
        nycfc("application/pkix-cert", "c2VjcmV0S2V5").0,
        4000,
        "not a certificate"
    );
    for mcff in [
        "application/pkcs12",
        "application/pkcs12; x=y",
        " application/pkcs8",
        "application/octet-stream",
        "pkcs12",
    ] {
        refused(
            "dcfg:nycfc",
            json!({ "mgd": 1023, "suids": [41], "mcff": mcff, "mcfc": plain }),
            mcff,
        );
    }
    refused(
        "dcfg:nycfc",
        json!({ "mgd": 1023, "suids": [41], "mcff": "application/x-pem-file", "mcfc": format!("{pem}-----BEGIN EC PRIVATE KEY-----\n{plain}\n-----END EC PRIVATE KEY-----") }),
        "a PEM private key beside the certificate",
    );
    let (rsc, b) = nycfc("application/pkcs12", &jwe("p12"));
    assert_eq!(rsc, 2001, "{b}");
    // A request kept for later (non-blocking, an action's primitive) holds no clear secret either.
    let nb = raw(
        "POST",
        cse.url(),
        "/cse-in/gw?rt=1",
        &[
            ("X-M2M-Origin", ADMIN),
            ("X-M2M-RI", "nb-secret"),
            ("X-M2M-RVI", "3"),
            ("Content-Type", "application/json;ty=13"),
        ],
        json!({ "dcfg:crds": { "mgd": 1029, "crse": plain } })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(nb.rsc, 4000, "{:?}", nb.body);
    // Nothing in the clear anywhere the CSE keeps or says.
    let everything = format!(
        "{}{}",
        cse.stderr(),
        std::fs::read_dir(cse.data_dir())
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect::<String>()
    );
    assert!(!everything.contains(plain));
    // Device configuration is under access control like any mgmtObj.
    let ae = register_ae(cse.url(), "/cse-in", "Cnosy", "nosy", &[]);
    assert_eq!(retrieve(cse.url(), "/cse-in/gw/wifi", &ae).0, 4103);
}

/// A SHA-256 fingerprint as `openssl x509 -fingerprint -sha256` prints it.
const FP: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

/// The security specializations of TS-0003 clause 8.3.9.9 (registration, authenticationProfile,
/// trustAnchorCred, MAFClientRegCfg, MEFClientRegCfg): each one's lifecycle and discovery by
/// `mgd`, the profile's rules per SUID (clause 8.3.9.9.2), a trust anchor's fingerprint and
/// https URI, a symmetric key only protected for the device; and only the administrator writes
/// them, whatever a policy grants.
#[test]
fn security_configuration_objects_are_the_administrators() {
    let cse = CseProcess::start_in();
    node(&cse, "lock-node");
    let parent = "/cse-in/lock-node";
    let objects = [
        (
            "dcfg:reg",
            1020,
            json!({ "rn": "reg", "rcsi": "/id-in", "rpoa": ["https://in.example.com:8443"], "apid": "Ndoorlock", "aupl": "cse-in/lock-node/autp" }),
            json!({ "rpoa": ["https://in2.example.com"] }),
        ),
        (
            "dcfg:autp",
            1022,
            json!({ "rn": "autp", "suid": 12, "tlscs": [0x00AE, 0xC0A8], "symki": "lock@in.provider.com" }),
            json!({ "symkv": jwe("kpsa") }),
        ),
        (
            "dcfg:tac",
            1024,
            json!({ "rn": "tac", "cfp": FP, "uri": "https://pki.example.com/ca2.pem" }),
            json!({ "cfp": FP.replace(':', "").to_lowercase() }),
        ),
        (
            "dcfg:mafrc",
            1025,
            json!({ "rn": "mafrc", "fqdn": "maf.keys.example.net", "adfq": "operator.example.com", "htpp": 8443 }),
            json!({ "copp": 5684 }),
        ),
        (
            "dcfg:mefrc",
            1026,
            json!({ "rn": "mefrc", "fqdn": "mef.keys.example.net", "adfq": "operator.example.com", "wspp": 443 }),
            json!({ "htpp": 8446 }),
        ),
    ];
    for (root, mgd, body, change) in &objects {
        let (rsc, b) = mgmt_obj(&cse, parent, root, {
            let mut body = body.clone();
            body["mgd"] = json!(mgd);
            body
        });
        assert_eq!(rsc, 2001, "{root}: {b}");
        assert_eq!(b[root]["ty"], json!(13), "{b}");
        let rn = body["rn"].as_str().unwrap();
        let path = format!("{parent}/{rn}");
        let (rsc, b) = retrieve(cse.url(), &path, ADMIN);
        assert_eq!((rsc, b[root]["mgd"].clone()), (2000, json!(mgd)), "{b}");
        let (rsc, b) = update(cse.url(), &path, ADMIN, json!({ *root: change }));
        assert_eq!(rsc, 2004, "{root}: {b}");
        for (k, v) in change.as_object().unwrap() {
            assert_eq!(&b[root][k], v, "{root}.{k}: {b}");
        }
        let (_, b) = get_with_query(cse.url(), "/cse-in", ADMIN, &format!("fu=1&mgd={mgd}"));
        assert_eq!(
            b["m2m:uril"].as_array().map(Vec::len),
            Some(1),
            "discovery by mgd {mgd}: {b}"
        );
    }
    // The key value is never in the clear, and never shown.
    let (_, b) = retrieve(cse.url(), &format!("{parent}/autp"), ADMIN);
    assert_eq!(b["dcfg:autp"]["symkv"], json!(jwe("kpsa")), "{b}");

    // Bad input, each with its reason.
    for (root, body, why, attr) in [
        (
            "dcfg:tac",
            json!({ "mgd": 1024, "cfp": "abcd", "uri": "https://x.example.com/ca.pem" }),
            "cfp not a SHA-256 fingerprint",
            "cfp",
        ),
        (
            "dcfg:tac",
            json!({ "mgd": 1024, "cfp": FP, "uri": "http://x.example.com/ca.pem" }),
            "uri not https",
            "uri",
        ),
        (
            "dcfg:tac",
            json!({ "mgd": 1024, "uri": "https://x.example.com/ca.pem" }),
            "cfp mandatory",
            "cfp",
        ),
        (
            "dcfg:autp",
            json!({ "mgd": 1022, "suid": 12, "symki": "k@x.example.com" }),
            "SUID 12 without tlscs",
            "tlscs",
        ),
        (
            "dcfg:autp",
            json!({ "mgd": 1022, "suid": 12, "tlscs": [0xC02B], "symki": "k@x.example.com" }),
            "no mandatory PSK suite",
            "tlscs",
        ),
        (
            "dcfg:autp",
            json!({ "mgd": 1022, "suid": 12, "tlscs": [0x00AE] }),
            "SUID 12 without symki",
            "symki",
        ),
        (
            "dcfg:autp",
            json!({ "mgd": 1022, "suid": 22, "tlscs": [0x00AE] }),
            "SUID 22 without krd",
            "krd",
        ),
        (
            "dcfg:autp",
            json!({ "mgd": 1022, "suid": 42, "tlscs": [0xC023] }),
            "SUID 42 without mcfp",
            "mcfp",
        ),
        (
            "dcfg:autp",
            json!({ "mgd": 1022, "suid": 42, "tlscs": [0x00AE], "mcfp": FP }),
            "SUID 42 with a PSK suite only",
            "tlscs",
        ),
        (
            "dcfg:autp",
            json!({ "mgd": 1022, "suid": 12, "tlscs": [0x00AE], "symki": "k", "symkv": "00112233445566778899aabbccddeeff" }),
            "symkv in the clear",
            "symkv",
        ),
        (
            "dcfg:autp",
            json!({ "mgd": 1022, "suid": 99 }),
            "no such SUID",
            "suid",
        ),
        (
            "dcfg:mefrc",
            json!({ "mgd": 1026, "fqdn": "mef.example.net" }),
            "adfq mandatory",
            "adfq",
        ),
        (
            "dcfg:mafrc",
            json!({ "mgd": 1025, "fqdn": "maf.example.net", "adfq": "op.example.com", "htpp": 0 }),
            "port 0",
            "htpp",
        ),
        (
            "dcfg:reg",
            json!({ "mgd": 1020, "rpoa": ["https://in.example.com"] }),
            "rcsi mandatory",
            "rcsi",
        ),
        (
            "dcfg:reg",
            json!({ "mgd": 1020, "rcsi": "/id-in", "rpoa": [] }),
            "rpoa empty",
            "rpoa",
        ),
    ] {
        let (rsc, b) = mgmt_obj(&cse, parent, root, body);
        assert_eq!(rsc, 4000, "{why}: {b}");
        let reason = b["m2m:dbg"].as_str().unwrap_or_default();
        assert!(reason.contains(&format!("'{attr}'")), "{why}: {reason}");
    }
    // An UPDATE is held to the same rules as the resource it makes.
    let (rsc, b) = update(
        cse.url(),
        &format!("{parent}/autp"),
        ADMIN,
        json!({ "dcfg:autp": { "symki": null } }),
    );
    assert_eq!(rsc, 4000, "SUID 12 loses its symki: {b}");
    let (rsc, b) = update(
        cse.url(),
        &format!("{parent}/tac"),
        ADMIN,
        json!({ "dcfg:tac": { "uri": "ftp://pki.example.com/ca.pem" } }),
    );
    assert_eq!(rsc, 4000, "{b}");

    // The device, with a policy granting it everything on its node and objects, still does not
    // write them: neither create, nor update; it reads them.
    register_ae(cse.url(), "/cse-in", "Clock1", "lock1", &[]);
    let acp = create_acp(
        cse.url(),
        "/cse-in",
        ADMIN,
        "lockAll",
        vec![acr(&["Clock1"], OP_ALL), acr(&[ADMIN], OP_ALL)],
        vec![acr(&[ADMIN], OP_ALL)],
    );
    set_acpi(cse.url(), parent, ADMIN, "m2m:nod", &[acp.as_str()]);
    for (root, mgd, body, change) in &objects {
        let rn = body["rn"].as_str().unwrap();
        let path = format!("{parent}/{rn}");
        set_acpi(cse.url(), &path, ADMIN, root, &[acp.as_str()]);
        assert_eq!(retrieve(cse.url(), &path, "Clock1").0, 2000, "{root}");
        let (rsc, b) = update(cse.url(), &path, "Clock1", json!({ *root: change }));
        assert_eq!(rsc, 4103, "{root} updated by the device: {b}");
        let mut mine = body.clone();
        mine["mgd"] = json!(mgd);
        mine["rn"] = json!(format!("{rn}-mine"));
        let (rsc, b) = create(cse.url(), parent, "Clock1", 13, json!({ *root: mine }));
        assert_eq!(rsc, 4103, "{root} created by the device: {b}");
        assert!(
            b["m2m:dbg"]
                .as_str()
                .unwrap_or_default()
                .contains("only the administrator"),
            "{b}"
        );
    }
    // Nor delete them, one by one or with their node: taking a trust anchor away is choosing
    // whom the device trusts. The administrator deletes each; then the node is the policy's.
    for (_, _, body, _) in &objects {
        let path = format!("{parent}/{}", body["rn"].as_str().unwrap());
        assert_eq!(delete(cse.url(), &path, "Clock1").0, 4103, "{path}");
        assert_eq!(retrieve(cse.url(), &path, ADMIN).0, 2000, "{path}");
    }
    assert_eq!(
        delete(cse.url(), parent, "Clock1").0,
        4103,
        "the node with them"
    );
    assert!(
        cse.logged("only the administrator deletes security configuration"),
        "{}",
        cse.stderr()
    );
    for (_, _, body, _) in &objects {
        let path = format!("{parent}/{}", body["rn"].as_str().unwrap());
        assert_eq!(delete(cse.url(), &path, ADMIN).0, 2002, "{path}");
        assert_eq!(retrieve(cse.url(), &path, ADMIN).0, 4004, "{path}");
    }
    assert_eq!(
        delete(cse.url(), parent, "Clock1").0,
        2002,
        "the policy grants it"
    );
}
