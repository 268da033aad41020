//! CSE registration and retargeting between a real IN-CSE and a real MN-CSE (TS-0001 clauses
//! 10.2.2.4 and 10.2.x retargeting, TS-0004 clause 7.3.2.6). The CSEs talk over mutual TLS with
//! certificates made by `m2m pki` (TS-0003 clause 8.2.2.2); their AEs and the admin use each
//! CSE's loopback plain listener.

mod common;

use common::*;
use serde_json::json;

const ADMIN: &str = "CAdmin";

#[test]
fn mn_registers_with_the_in() {
    let (in_cse, mn, pki) = start_in_mn_tls();
    let (rsc, b) = retrieve(in_cse.url(), "/cse-in/id-mn", ADMIN);
    assert_eq!(rsc, 2000, "{b}");
    let csr = &b["m2m:csr"];
    assert_eq!(csr["ty"], json!(16), "{b}");
    assert_eq!(csr["csi"], json!("/id-mn"), "{b}");
    assert_eq!(csr["cst"], json!(2), "an MN-CSE: {b}");
    assert_eq!(
        csr["poa"],
        json!([mn.https_url()]),
        "the MN's pointOfAccess is its TLS listener: {b}"
    );
    assert!(
        csr["cb"].as_str().is_some_and(|c| c.ends_with("cse-mn")),
        "cseBase: {b}"
    );

    let (rsc, b) = retrieve(mn.url(), "/cse-mn/id-in", ADMIN);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:csr"]["csi"], json!("/id-in"), "{b}");
    assert_eq!(b["m2m:csr"]["cst"], json!(1), "an IN-CSE: {b}");
    assert_eq!(
        b["m2m:csr"]["poa"],
        json!([in_cse.https_url()]),
        "the IN's pointOfAccess is the registrar URL (https): {b}"
    );

    // The registration came over a security association bound to the MN's CSE-ID.
    let log = in_cse.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("association established") && l.contains("/id-mn")),
        "the IN logs the MN's certificate association:\n{log}"
    );

    // The remoteCSE is found by discovery too.
    let (rsc, b) = get_with_query(in_cse.url(), "/cse-in", ADMIN, "fu=1&ty=16");
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:uril"].as_array().map(Vec::len), Some(1), "{b}");

    // A second registration of the same CSE-ID is refused, even over the MN's own association.
    let (pem, key) = pki.cse_cert("id-mn");
    let as_mn = TlsClient::certificate(&pki.ca_pem(), &pem, &key, IN_SERVER_NAME);
    let csr = json!({ "m2m:csr": { "csi": "/id-mn", "cb": "/id-mn/cse-mn", "cst": 2, "rr": true, "poa": ["http://127.0.0.1:1"], "srv": ["3"] } });
    let r = as_mn
        .request(
            in_cse.https_url(),
            "POST",
            "/cse-in",
            Some("/id-mn"),
            Some(16),
            Some(&csr),
        )
        .expect("a request over the MN's association");
    assert!(
        r.rsc == 4105 || r.rsc == 4117,
        "re-creating the remoteCSE of a registered CSE: {:?}",
        r.body
    );
    // Without a security association a CSE-ID originator is refused (TS-0003 clause 7.2.1).
    let r = create_full(in_cse.url(), "/cse-in", "/id-mn", 16, csr);
    assert_eq!(
        r.rsc, 4107,
        "a CSE registering over the plain listener: {:?}",
        r.body
    );

    // Another CSE, over its own certificate, registering with attributes that are not a
    // registration: 4000, nothing made.
    let (pem2, key2) = pki.issue(&["--kind", "cse", "--id", "/id-mn2"], "id-mn2");
    let as_mn2 = TlsClient::certificate(&pki.ca_pem(), &pem2, &key2, IN_SERVER_NAME);
    let base =
        json!({ "csi": "/id-mn2", "cb": "/id-mn2/cse-mn2", "cst": 2, "rr": true, "srv": ["3"] });
    for (what, change) in [
        ("no csi", json!({ "csi": null })),
        ("a cseType that is none", json!({ "cst": 9 })),
        ("requestReachability as text", json!({ "rr": "yes" })),
        (
            "a pointOfAccess that is no list",
            json!({ "poa": "http://127.0.0.1:1" }),
        ),
    ] {
        let mut attrs = base.clone();
        for (k, v) in change.as_object().expect("object") {
            if v.is_null() {
                attrs.as_object_mut().expect("object").remove(k);
            } else {
                attrs[k] = v.clone();
            }
        }
        let r = as_mn2
            .request(
                in_cse.https_url(),
                "POST",
                "/cse-in",
                Some("/id-mn2"),
                Some(16),
                Some(&json!({ "m2m:csr": attrs })),
            )
            .expect("a request over mn2's association");
        assert_eq!(r.rsc, 4000, "{what}: {:?}", r.body);
    }
    assert_eq!(retrieve(in_cse.url(), "/cse-in/id-mn2", ADMIN).0, 4004);

    // The registration is the admin's to end: an AE neither reads nor removes it.
    let nosy = register_ae(in_cse.url(), "/cse-in", "Cnosy", "nosy", &[]);
    assert_eq!(retrieve(in_cse.url(), "/cse-in/id-mn", &nosy).0, 4103);
    assert_eq!(delete(in_cse.url(), "/cse-in/id-mn", &nosy).0, 4103);
    assert_eq!(delete(in_cse.url(), "/cse-in/id-mn", ADMIN).0, 2002);
    let (_, b) = get_with_query(in_cse.url(), "/cse-in", ADMIN, "fu=1&ty=16");
    assert_eq!(b["m2m:uril"], json!([]), "{b}");
}

#[test]
fn retargeting_in_to_mn_and_mn_to_in() {
    let (in_cse, mn, pki) = start_in_mn_tls();
    let ae_mn = register_ae(mn.url(), "/cse-mn", "Cdevice", "dev", &[]);
    create_cnt(mn.url(), "/cse-mn/dev", &ae_mn, json!({ "rn": "data" }));
    let ae_in = register_ae(in_cse.url(), "/cse-in", "Ccloud", "cloud", &[]);
    create_cnt(
        in_cse.url(),
        "/cse-in/cloud",
        &ae_in,
        json!({ "rn": "cmds" }),
    );

    // Access rights across the CSEs: each side grants the other side's AE, known there by its
    // SP-relative AE-ID, through an ACP on its container.
    let mn_acp = create_acp(
        mn.url(),
        "/cse-mn/dev",
        &ae_mn,
        "forcloud",
        vec![
            acr(
                &[&format!("/id-in/{ae_in}")],
                OP_CREATE | OP_RETRIEVE | OP_DISCOVERY,
            ),
            acr(&[&ae_mn], OP_ALL),
        ],
        vec![acr(&[&ae_mn], OP_ALL)],
    );
    set_acpi(mn.url(), "/cse-mn/dev/data", &ae_mn, "m2m:cnt", &[&mn_acp]);
    let in_acp = create_acp(
        in_cse.url(),
        "/cse-in/cloud",
        &ae_in,
        "fordevice",
        vec![
            acr(&[&format!("/id-mn/{ae_mn}")], OP_CREATE | OP_RETRIEVE),
            acr(&[&ae_in], OP_ALL),
        ],
        vec![acr(&[&ae_in], OP_ALL)],
    );
    set_acpi(
        in_cse.url(),
        "/cse-in/cloud/cmds",
        &ae_in,
        "m2m:cnt",
        &[&in_acp],
    );
    // Without them, the other side's AE is refused.
    let r = retrieve_full(in_cse.url(), "/~/id-mn/cse-mn/dev", &ae_in);
    assert_eq!(
        r.rsc, 4103,
        "the MN's AE resource is not shared: {:?}",
        r.body
    );
    assert!(r.dbg().is_some_and(|d| !d.is_empty()), "{:?}", r.body);

    // IN -> MN: an AE of the IN reaches resources on the MN through the IN.
    for path in [
        "/~/id-mn/cse-mn/dev/data",
        "/_/m2m.example.com/id-mn/cse-mn/dev/data",
    ] {
        let (rsc, b) = retrieve(in_cse.url(), path, &ae_in);
        assert_eq!(rsc, 2000, "retrieve {path} via the IN: {b}");
        assert_eq!(b["m2m:cnt"]["rn"], json!("data"), "{b}");
    }
    let (rsc, b) = create(
        in_cse.url(),
        "/~/id-mn/cse-mn/dev/data",
        &ae_in,
        4,
        json!({ "m2m:cin": { "con": "from-cloud", "cr": null } }),
    );
    assert_eq!(rsc, 2001, "create on the MN via the IN: {b}");
    let (rsc, b) = retrieve(mn.url(), "/cse-mn/dev/data/la", &ae_mn);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:cin"]["con"], json!("from-cloud"), "{b}");
    assert_eq!(
        b["m2m:cin"]["cr"],
        json!(format!("/id-in/{ae_in}")),
        "outside its CSE an AE is known by its SP-relative AE-ID: {b}"
    );
    // Unstructured address on the MN, through the IN.
    let ri = b["m2m:cin"]["ri"].as_str().expect("ri").to_owned();
    let (rsc, b) = retrieve(in_cse.url(), &format!("/~/id-mn/{ri}"), &ae_in);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:cin"]["con"], json!("from-cloud"), "{b}");

    // Discovery on the MN through the IN: the filter criteria travel with the request.
    let (rsc, b) = get_with_query(in_cse.url(), "/~/id-mn/cse-mn", &ae_in, "fu=1&ty=3");
    assert_eq!(rsc, 2000, "discovery on the MN via the IN: {b}");
    let found = b["m2m:uril"].as_array().cloned().unwrap_or_default();
    assert_eq!(found.len(), 1, "the MN's one container: {b}");
    assert!(
        found[0].as_str().is_some_and(|s| s.ends_with("dev/data")),
        "{b}"
    );

    // MN -> IN: an AE of the MN reaches resources on the IN through the MN.
    let (rsc, b) = retrieve(mn.url(), "/~/id-in/cse-in/cloud/cmds", &ae_mn);
    assert_eq!(rsc, 2000, "retrieve on the IN via the MN: {b}");
    assert_eq!(b["m2m:cnt"]["rn"], json!("cmds"), "{b}");
    let (rsc, b) = create(
        mn.url(),
        "/~/id-in/cse-in/cloud/cmds",
        &ae_mn,
        4,
        json!({ "m2m:cin": { "con": "from-device", "cr": null } }),
    );
    assert_eq!(rsc, 2001, "create on the IN via the MN: {b}");
    let (_, b) = retrieve(in_cse.url(), "/cse-in/cloud/cmds/la", &ae_in);
    assert_eq!(b["m2m:cin"]["con"], json!("from-device"), "{b}");
    assert_eq!(b["m2m:cin"]["cr"], json!(format!("/id-mn/{ae_mn}")), "{b}");
    // The IN's CSEBase itself, from the MN side: the IN decides, and its answer comes back
    // through the MN. A CSEBase without accessControlPolicyIDs may be retrieved only by the
    // entities registered with that CSE: the MN itself, not an AE registered with the MN.
    let r = retrieve_full(mn.url(), "/~/id-in/cse-in", &ae_mn);
    assert_eq!(r.rsc, 4103, "{:?}", r.body);
    assert!(r.dbg().is_some_and(|d| !d.is_empty()), "{:?}", r.body);
    let (pem, key) = pki.cse_cert("id-mn");
    let r = TlsClient::certificate(&pki.ca_pem(), &pem, &key, IN_SERVER_NAME)
        .request(
            in_cse.https_url(),
            "GET",
            "/cse-in",
            Some("/id-mn"),
            None,
            None,
        )
        .expect("a request over the MN's association");
    assert_eq!(
        r.rsc, 2000,
        "the registered MN retrieves the IN's CSEBase over its association: {:?}",
        r.body
    );
    assert_eq!(r.body["m2m:cb"]["csi"], json!("/id-in"), "{:?}", r.body);
    let (rsc, b) = retrieve(mn.url(), "/~/id-in/cse-in", ADMIN);
    assert_eq!(rsc, 4103, "nor is the MN's admin the IN's: {b}");
    // Errors of the remote CSE come back unchanged.
    let (rsc, b) = retrieve(mn.url(), "/~/id-in/cse-in/cloud/nothing", &ae_mn);
    assert_eq!(rsc, 4004, "{b}");
}

#[test]
fn notification_from_the_mn_to_an_ae_on_the_in() {
    let (in_cse, mn, _pki) = start_in_mn_tls();
    let rx = Receiver::start();
    let listener = register_ae(in_cse.url(), "/cse-in", "Cxyz", "listener", &[rx.url()]);
    let ae_mn = register_ae(mn.url(), "/cse-mn", "Csensor", "sensor", &[]);
    create_cnt(mn.url(), "/cse-mn/sensor", &ae_mn, json!({ "rn": "temp" }));

    let nu = format!("/id-in/{listener}");
    let (rsc, b) = create(
        mn.url(),
        "/cse-mn/sensor/temp",
        &ae_mn,
        23,
        json!({ "m2m:sub": { "rn": "s", "nu": [nu], "enc": { "net": [3] } } }),
    );
    assert_eq!(rsc, 2001, "subscription with an AE-ID on the IN as nu: {b}");
    let v = rx.wait_for(Received::is_verification, WAIT);
    assert!(
        v.sur().is_some_and(|s| s.starts_with("/id-mn/")),
        "verification from the MN: {:?}",
        v.body
    );
    create_cin(mn.url(), "/cse-mn/sensor/temp", &ae_mn, "21.5");
    let n = rx.wait_for(|r| r.net() == Some(3), WAIT);
    assert_eq!(n.rep()["m2m:cin"]["con"], json!("21.5"), "{:?}", n.body);
}

#[test]
fn mn_restart_registers_again() {
    let (in_cse, mn, _pki) = start_in_mn_tls();
    let ae_mn = register_ae(mn.url(), "/cse-mn", "Cdev", "dev", &[]);
    // The IN's admin is not the MN's: on the MN it is the SP-relative `/id-in/CAdmin`, which the
    // AE lets retrieve it.
    let acp = create_acp(
        mn.url(),
        "/cse-mn/dev",
        &ae_mn,
        "acp",
        vec![acr(&["/id-in/CAdmin"], OP_RETRIEVE), acr(&[&ae_mn], OP_ALL)],
        vec![acr(&[&ae_mn], OP_ALL)],
    );
    set_acpi(mn.url(), "/cse-mn/dev", &ae_mn, "m2m:ae", &[&acp]);
    let old_url = mn.https_url().to_owned();
    let mn = mn.restart();
    assert_ne!(
        mn.https_url(),
        old_url,
        "the restarted MN listens on a new port"
    );
    // The IN learns the new pointOfAccess.
    let updated = poll(WAIT, || {
        let (rsc, b) = retrieve(in_cse.url(), "/cse-in/id-mn", ADMIN);
        (rsc == 2000 && b["m2m:csr"]["poa"] == json!([mn.https_url()])).then_some(())
    });
    assert!(
        updated.is_some(),
        "after a restart the MN updates its remoteCSE on the IN\nMN stderr:\n{}",
        mn.stderr()
    );
    let (rsc, b) = retrieve(in_cse.url(), "/~/id-mn/cse-mn/dev", ADMIN);
    assert_eq!(rsc, 2000, "retargeting to the restarted MN: {b}");
    assert_eq!(b["m2m:ae"]["aei"], json!(ae_mn), "{b}");
    let (rsc, b) = retrieve(mn.url(), "/cse-mn/id-in", ADMIN);
    assert_eq!(rsc, 2000, "{b}");
    let log = mn.stderr();
    assert!(
        log.contains("registered with the registrar CSE"),
        "the restarted MN reports its registration:\n{log}"
    );
    assert!(
        !log.contains("registration failed"),
        "re-registration without errors:\n{log}"
    );
}

#[test]
fn requests_to_an_unknown_cse() {
    let (in_cse, mn, _pki) = start_in_mn_tls();
    for (who, url) in [("IN", in_cse.url()), ("MN", mn.url())] {
        // TS-0004 clause 7.3.2.6: the IN finds no match and answers NOT_FOUND; the MN asks its
        // registrar, whose answer it relays.
        let r = retrieve_full(url, "/~/id-nowhere/cse-x", ADMIN);
        assert_eq!(
            r.rsc, 4004,
            "{who}: a request for an unknown CSE: {:?}",
            r.body
        );
        assert!(r.dbg().is_some_and(|d| !d.is_empty()), "{:?}", r.body);
    }
    // Another service provider is not reachable from an IN without peers.
    let r = retrieve_full(in_cse.url(), "/_/other.example.net/id-in/cse-in", ADMIN);
    assert_eq!(r.rsc, 4004, "a request for another SP: {:?}", r.body);
    // A registered CSE that went away: TARGET_NOT_REACHABLE.
    drop(mn);
    let r = retrieve_full(in_cse.url(), "/~/id-mn/cse-mn", ADMIN);
    assert_eq!(r.rsc, 5103, "the MN is down: {:?}", r.body);
}

/// The IN reaches a registree CSE at the poa it registered, an address that any certificate of
/// the same root of trust could answer on: only a certificate naming that CSE-ID is accepted
/// (TS-0003 clause 10.1.1.7), so a registree cannot point the IN at another CSE (or an AE) and
/// have it receive requests meant for the registree.
#[test]
fn retargeting_accepts_only_the_registree_certificate() {
    let pki = Pki::temp();
    pki.issue(&["--kind", "cse", "--id", "/id-evil"], "id-evil");
    let in_cse = CseProcess::start_temp(&in_tls_config(&pki));
    let evil = CseProcess::start_temp(&format!(
        "[cse]\ncse_id = \"/id-evil\"\nresource_name = \"cse-evil\"\n\n{}",
        tls_section(&pki, "id-evil")
    ));
    // The MN registers, but with a pointOfAccess where /id-evil listens.
    let mn = CseProcess::start_temp(&format!(
        "{}\n[http]\npublic_url = \"{}\"\n",
        mn_config(in_cse.https_url(), &pki),
        evil.https_url()
    ));
    wait_registered(&in_cse, &mn);
    let r = retrieve_full(in_cse.url(), "/~/id-mn/cse-mn", ADMIN);
    assert_eq!(r.rsc, 5103, "{:?}", r.body);
    let dbg = r.dbg().unwrap_or_default();
    assert!(
        dbg.contains("TLS handshake failed") && dbg.contains("certificate verify failed"),
        "the IN must refuse /id-evil's certificate at /id-mn's poa: {dbg}\nIN:\n{}\nEVIL:\n{}",
        in_cse.stderr(),
        evil.stderr()
    );
}

/// Response Type noResponse (5) through a retargeting MN-CSE: the MN forwards the request to the
/// IN as a blocking one over their TLS association and answers its originator with a bare 204;
/// the IN carries it out, or refuses it, and nothing of either comes back.
#[test]
fn no_response_requests_are_forwarded_blocking_and_answered_with_nothing() {
    let (in_cse, mn, _pki) = start_in_mn_tls();
    let ae_mn = register_ae(mn.url(), "/cse-mn", "Cdevice", "dev", &[]);
    let stranger = register_ae(mn.url(), "/cse-mn", "Cstranger", "stranger", &[]);
    let ae_in = register_ae(in_cse.url(), "/cse-in", "Ccloud", "cloud", &[]);
    create_cnt(
        in_cse.url(),
        "/cse-in/cloud",
        &ae_in,
        json!({ "rn": "cmds" }),
    );
    let acp = create_acp(
        in_cse.url(),
        "/cse-in/cloud",
        &ae_in,
        "fordevice",
        vec![
            acr(&[&format!("/id-mn/{ae_mn}")], OP_CREATE),
            acr(&[&ae_in], OP_ALL),
        ],
        vec![acr(&[&ae_in], OP_ALL)],
    );
    set_acpi(
        in_cse.url(),
        "/cse-in/cloud/cmds",
        &ae_in,
        "m2m:cnt",
        &[&acp],
    );
    let quiet = |from: &str, con: &str| {
        raw(
            "POST",
            mn.url(),
            "/~/id-in/cse-in/cloud/cmds?rt=5",
            &[
                ("X-M2M-Origin", from),
                ("X-M2M-RI", "quiet-1"),
                ("X-M2M-RVI", "3"),
                ("Content-Type", "application/json;ty=4"),
            ],
            json!({ "m2m:cin": { "con": con, "cr": null } })
                .to_string()
                .as_bytes(),
        )
    };
    for (from, con) in [(&ae_mn, "granted"), (&stranger, "refused")] {
        let r = quiet(from, con);
        assert_eq!(
            (r.status, r.rsc, r.body.clone()),
            (204, 0, serde_json::Value::Null),
            "{from}"
        );
        assert!(r.header("x-m2m-ri").is_none(), "{:?}", r.headers);
    }
    // Done before the 204 (forwarded blocking), by the granted device only.
    let (rsc, b) = get_with_query(in_cse.url(), "/cse-in/cloud/cmds", &ae_in, "fu=1&ty=4");
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:uril"].as_array().map(Vec::len), Some(1), "{b}");
    let (_, b) = retrieve(in_cse.url(), "/cse-in/cloud/cmds/la", &ae_in);
    assert_eq!(b["m2m:cin"]["con"], json!("granted"), "{b}");
    assert_eq!(b["m2m:cin"]["cr"], json!(format!("/id-mn/{ae_mn}")), "{b}");
}

/// S-stems are unique in the SP (TS-0001 clause 10.2.2.2, TS-0004 clause 7.4.5.2.1): an AE
/// registering at the MN with an S-stem has the IN record it as an `<AEAnnc>` first; a stem
/// registered at the IN is refused at the MN (4117), and the IN's own AEs cannot take one the
/// MN announced. After the AE deregisters the record says INACTIVE and stays, so the AE
/// registers at the MN again; an MN cut off from the IN registers no S-stem (5103) but C-stems.
#[test]
fn an_mn_registers_an_s_stem_only_once_the_in_recorded_it() {
    let (in_cse, mut mn, _pki) = start_in_mn_tls();
    let ae = |rn: &str| json!({"m2m:ae": {"rn": rn, "api": "Nmeter", "rr": false, "srv": ["3"]}});
    register_ae(in_cse.url(), "/cse-in", "Sphone", "phone", &[]);
    for from in [
        "Sphone",
        "/Sphone",
        "/id-mn/Sphone",
        "//m2m.example.com/Sphone",
    ] {
        let (rsc, b) = create(mn.url(), "/cse-mn", from, 2, ae("phone"));
        assert_eq!(rsc, 4117, "{from}: {b}");
    }
    let meter = register_ae(mn.url(), "/cse-mn", "Smeter", "meter", &[]);
    assert_eq!(meter, "Smeter");
    let (rsc, b) = retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:aeA"]["lnk"], json!("/id-mn/Smeter"), "{b}");
    assert_eq!(b["m2m:aeA"]["lbl"], json!(["Credential-ID:"]), "{b}");
    for from in ["Smeter", "/Smeter", "//m2m.example.com/Smeter"] {
        let (rsc, b) = create(in_cse.url(), "/cse-in", from, 2, ae("squat"));
        assert_eq!(rsc, 4117, "at the IN as {from}: {b}");
    }
    // The admin finds the record by type; an AE of the IN neither finds nor reads it.
    let (_, b) = get_with_query(in_cse.url(), "/cse-in", ADMIN, "fu=1&ty=10002");
    assert_eq!(b["m2m:uril"], json!(["cse-in/id-mn/Smeter"]), "{b}");
    let nosy = register_ae(in_cse.url(), "/cse-in", "Cnosy", "nosy", &[]);
    let (_, b) = get_with_query(in_cse.url(), "/cse-in", &nosy, "fu=1&ty=10002");
    assert_eq!(b["m2m:uril"], json!([]), "{b}");
    assert_eq!(
        retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", &nosy).0,
        4103
    );
    // The MN relays for its AE at the IN (the IN's CSEBase is the registrees' to read).
    let (rsc, b) = retrieve(mn.url(), "/id-in/cse-in", "Smeter");
    assert_ne!(rsc, 4106, "{b}");
    assert_eq!(delete(mn.url(), "/cse-mn/meter", "Smeter").0, 2002);
    let inactive = poll(WAIT, || {
        let (_, b) = retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN);
        (b["m2m:aeA"]["lnk"] == json!("INACTIVE")).then_some(())
    });
    assert!(inactive.is_some(), "the IN was told the AE deregistered");
    register_ae(mn.url(), "/cse-mn", "Smeter", "meter", &[]);
    let (_, b) = retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN);
    assert_eq!(b["m2m:aeA"]["lnk"], json!("/id-mn/Smeter"), "{b}");
    // Without the IN: no S-stem, C-stems as before.
    drop(in_cse);
    let (rsc, b) = create(mn.url(), "/cse-mn", "Snew", 2, ae("new"));
    assert_eq!(rsc, 5103, "{b}");
    register_ae(mn.url(), "/cse-mn", "Cnew", "new", &[]);
    assert!(mn.is_running());
}

/// An S-stem AE registering at an MN-CSE over a security association is admitted by the IN-CSE's
/// registration rules as well (TS-0001 clause 10.2.2.2 step 006b), with the Credential-ID it
/// registered with: real TLS-PSK to the MN, the announcement over mutual TLS to the IN. The IN
/// admits no credential at first (4126 to the AE, nothing recorded); once its admin adds a
/// `<serviceSubscribedAppRule>` for the meter's credential and App-ID, the meter registers, and
/// another App-ID over the same credential still does not.
#[test]
fn the_in_cse_rules_judge_an_s_stem_registered_at_an_mn() {
    const KEY: &str = "00112233445566778899aabbccddeeff";
    let pki = Pki::temp();
    let in_cse = CseProcess::start_temp(&in_tls_config(&pki));
    let mn = CseProcess::start_temp(&format!(
        "{}\n[[registration.rules]]\naai = [\"*\"]\naae = [\"C*\", \"S*\"]\n\
         [[registration.rules]]\napci = [\"12-*\"]\naai = [\"*\"]\naae = [\"S*\"]\n\
         [[security.psk]]\nkpsa_id = \"meter@in.example.com\"\nkey = \"{KEY}\"\n\
         [[security.psk]]\nentity = \"Sbound\"\nkpsa_id = \"bound@in.example.com\"\nkey = \"{KEY}\"\n",
        mn_config(in_cse.https_url(), &pki)
    ));
    wait_registered(&in_cse, &mn);
    let meter = TlsClient::psk("meter@in.example.com", KEY);
    let register = |stem: &str, api: &str| {
        meter
            .request(
                mn.https_url(),
                "POST",
                "/cse-mn",
                Some(stem),
                Some(2),
                Some(&json!({"m2m:ae": {"rn": stem, "api": api, "rr": false, "srv": ["3"]}})),
            )
            .unwrap()
    };
    let r = register("Smeter", "Nmeter");
    assert_eq!(
        r.rsc, 4126,
        "the IN's rules admit no credential yet: {:?}",
        r.body
    );
    assert_eq!(
        retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN).0,
        4004
    );
    assert_eq!(retrieve(mn.url(), "/cse-mn/Smeter", ADMIN).0, 4004);
    let (rsc, b) = create(
        in_cse.url(),
        "/cse-in",
        ADMIN,
        19,
        json!({"m2m:asar": {"rn": "meters", "apci": ["12-meter@*", "12-bound@*"], "aai": ["Nmeter"], "aae": ["S*"]}}),
    );
    assert_eq!(rsc, 2001, "{b}");
    let r = register("Smeter", "Nmeter");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let (_, b) = retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN);
    assert_eq!(
        b["m2m:aeA"]["lbl"],
        json!(["Credential-ID:12-meter@in.example.com"]),
        "{b}"
    );
    let r = register("Sother", "Nother");
    assert_eq!(r.rsc, 4126, "another App-ID: {:?}", r.body);
    assert_eq!(
        retrieve(in_cse.url(), "/cse-in/id-mn/Sother", ADMIN).0,
        4004
    );
    // Registered again with an App-ID the rules do not admit: judged again (an UPDATE of the
    // record at the IN), refused, and the record keeps its App-ID.
    let r = meter
        .request(
            mn.https_url(),
            "DELETE",
            "/cse-mn/Smeter",
            Some("Smeter"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(r.rsc, 2002, "{:?}", r.body);
    let r = register("Smeter", "Nother");
    assert_eq!(
        r.rsc, 4126,
        "re-registered with another App-ID: {:?}",
        r.body
    );
    let (_, b) = retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN);
    assert_eq!(b["m2m:aeA"]["api"], json!("Nmeter"), "{b}");
    // An AE over a PSK row bound to it: the IN learns that credential, also when the MN
    // announces it again after registering with the IN again (a restart).
    let bound = TlsClient::psk("bound@in.example.com", KEY);
    let r = bound
        .request(
            mn.https_url(),
            "POST",
            "/cse-mn",
            Some("Sbound"),
            Some(2),
            Some(&json!({"m2m:ae": {"rn": "bound", "api": "Nmeter", "rr": false, "srv": ["3"]}})),
        )
        .unwrap();
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let record = || retrieve(in_cse.url(), "/cse-in/id-mn/Sbound", ADMIN).1;
    let first = record();
    let with_credential = json!(["Credential-ID:12-bound@in.example.com"]);
    assert_eq!(first["m2m:aeA"]["lbl"], with_credential, "{first}");
    let mn = mn.restart();
    let announced_again = poll(WAIT, || {
        let now = record();
        (now["m2m:aeA"]["lt"] != first["m2m:aeA"]["lt"]).then_some(now)
    });
    let again = announced_again.unwrap_or_else(|| panic!("not announced again:\n{}", mn.stderr()));
    assert_eq!(again["m2m:aeA"]["lbl"], with_credential, "{again}");
}

/// Rules saying which CSEs a gateway may have below it (`[[registration.descendants]]`) judge
/// the lists the IN-CSE kept before they were set: restarted with rules that do not let the MN
/// list the second MN, the IN-CSE keeps no such descendant and routes nothing there (4004), where
/// it reached the second MN through the MN before.
#[test]
fn descendant_rules_judge_the_lists_kept_before_a_restart() {
    let (in_cse, mn, mn2, _pki) = start_three_tiers();
    let valve = register_ae(mn2.url(), "/cse-mn2", "Cvalve", "valve", &[]);
    let owner = register_ae(in_cse.url(), "/cse-in", "Cowner", "owner", &[]);
    let acp = create_acp(
        mn2.url(),
        "/cse-mn2/valve",
        &valve,
        "acp",
        vec![acr(&[&valve], 63), acr(&["/id-in/Cowner"], OP_RETRIEVE)],
        vec![acr(&[&valve], 63)],
    );
    create_cnt(
        mn2.url(),
        "/cse-mn2/valve",
        &valve,
        json!({ "rn": "state", "acpi": [acp] }),
    );
    let to = "/~/id-mn2/cse-mn2/valve/state";
    let (rsc, b) = retrieve(in_cse.url(), to, &owner);
    assert_eq!(rsc, 2000, "before the rules: {b}\nMN:\n{}", mn.stderr());
    let config = std::fs::read_to_string(in_cse.config_path()).unwrap();
    std::fs::write(
        in_cse.config_path(),
        format!(
            "{config}\n[[registration.descendants]]\nregistree = \"/id-mn\"\ncses = [\"/id-lock-*\"]\n"
        ),
    )
    .unwrap();
    let in_cse = in_cse.restart();
    let (rsc, csr) = retrieve(in_cse.url(), "/cse-in/id-mn", ADMIN);
    assert_eq!(rsc, 2000, "{csr}\nIN:\n{}", in_cse.stderr());
    assert_eq!(csr["m2m:csr"]["dcse"], json!([]), "{csr}");
    for to in [to, "/_/m2m.example.com/id-mn2/cse-mn2/valve/state"] {
        let (rsc, b) = retrieve(in_cse.url(), to, &owner);
        assert_eq!(rsc, 4004, "{to}: {b}");
    }
    assert!(
        in_cse.logged("descendant CSEs dropped"),
        "audited:\n{}",
        in_cse.stderr()
    );
}

/// Retargeting follows descendantCSEs (TS-0001 clause 10.2.2.4): an AE of the IN-CSE reaches a
/// resource on a CSE registered two levels down, through the MN whose list (as the IN keeps it)
/// names that CSE; a CSE nobody lists is 4004 at the IN. A request the registrar sends down for
/// a CSE the MN does not reach is answered there (4004), never sent back up: the route climbs,
/// then descends, and never turns back.
#[test]
fn retargeting_follows_descendant_cses() {
    let (in_cse, mn, mn2, pki) = start_three_tiers();
    let valve = register_ae(mn2.url(), "/cse-mn2", "Cvalve", "valve", &[]);
    let owner = register_ae(in_cse.url(), "/cse-in", "Cowner", "owner", &[]);
    let acp = create_acp(
        mn2.url(),
        "/cse-mn2/valve",
        &valve,
        "acp",
        vec![acr(&[&valve], 63), acr(&["/id-in/Cowner"], OP_RETRIEVE)],
        vec![acr(&[&valve], 63)],
    );
    create_cnt(
        mn2.url(),
        "/cse-mn2/valve",
        &valve,
        json!({ "rn": "state", "acpi": [acp] }),
    );
    for to in [
        "/~/id-mn2/cse-mn2/valve/state",
        "/_/m2m.example.com/id-mn2/cse-mn2/valve/state",
    ] {
        let (rsc, b) = retrieve(in_cse.url(), to, &owner);
        assert_eq!(
            rsc,
            2000,
            "{to}: {b}\nMN:\n{}\nMN2:\n{}",
            mn.stderr(),
            mn2.stderr()
        );
        assert_eq!(b["m2m:cnt"]["rn"], json!("state"), "{b}");
    }
    // The policy on mn2 decides: another AE of the IN is not in it.
    let other = register_ae(in_cse.url(), "/cse-in", "Cother", "other", &[]);
    let (rsc, b) = retrieve(in_cse.url(), "/~/id-mn2/cse-mn2/valve/state", &other);
    assert_eq!(rsc, 4103, "{b}");
    let (rsc, b) = retrieve(in_cse.url(), "/~/id-nowhere/cse-x", &owner);
    assert_eq!(rsc, 4004, "{b}");
    // As the IN, over its certificate: the MN does not send back up what came from above.
    let (chain, key) = pki.cse_cert("id-in");
    let as_in = TlsClient::certificate(&pki.ca_pem(), &chain, &key, "id-mn.id-in.m2m.example.com");
    let r = as_in
        .request(
            mn.https_url(),
            "GET",
            "/~/id-nowhere/cse-x",
            Some("/id-in/Cowner"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(r.rsc, 4004, "{:?}", r.body);
    assert!(
        mn.logged("not retargeted: the request would go back to the CSE it came from"),
        "{}",
        mn.stderr()
    );
    // What is below the MN still goes down.
    let r = as_in
        .request(
            mn.https_url(),
            "GET",
            "/~/id-mn2/cse-mn2/valve/state",
            Some("/id-in/Cowner"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
}

/// The admin deleting the IN-CSE's record of an S-stem registered two levels down frees the
/// stem along the whole way: the MN's copy goes too (the IN tells the MN, over the TLS that
/// proves it), so the CSE below no longer speaks for the stem at the MN. Nobody else removes the
/// MN's copy: not the CSE below it, nor anyone over the MN's plain listener.
#[test]
fn deleting_the_in_record_removes_the_copy_below() {
    let (in_cse, mn, mn2, pki) = start_three_tiers();
    let ae = json!({"m2m:ae": {"rn": "meter", "api": "Nmeter", "rr": false, "srv": ["3"]}});
    let (rsc, b) = create(mn2.url(), "/cse-mn2", "Smeter", 2, ae.clone());
    assert_eq!(rsc, 2001, "{b}\nMN:\n{}", mn.stderr());
    let copy = "/cse-mn/id-mn2/Smeter";
    assert_eq!(retrieve(mn.url(), copy, ADMIN).0, 2000);
    let (chain, key) = pki.cse_cert("id-mn2");
    let below = TlsClient::certificate(&pki.ca_pem(), &chain, &key, "id-mn.id-in.m2m.example.com");
    for from in ["/id-mn2", "/id-in", "/Smeter"] {
        let r = below
            .request(mn.https_url(), "DELETE", copy, Some(from), None, None)
            .unwrap();
        assert!(
            matches!(r.rsc, 4103 | 4106),
            "the CSE below as {from}: {} {:?}",
            r.rsc,
            r.body
        );
    }
    let (rsc, b) = delete(mn.url(), copy, "/id-in");
    assert!(
        matches!(rsc, 4103 | 4106 | 4107),
        "/id-in over the plain listener: {rsc} {b}"
    );
    assert_eq!(
        retrieve(mn.url(), copy, ADMIN).0,
        2000,
        "the copy is still there"
    );
    // The admin deletes the IN's record: the copy goes.
    let (rsc, b) = delete(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN);
    assert_eq!(rsc, 2002, "{b}");
    let gone = poll(WAIT, || {
        (retrieve(mn.url(), copy, ADMIN).0 == 4004).then_some(())
    });
    assert!(
        gone.is_some(),
        "MN:\n{}\nIN:\n{}",
        mn.stderr(),
        in_cse.stderr()
    );
    assert!(
        in_cse.logged("announcement copy below removed"),
        "{}",
        in_cse.stderr()
    );
    // The stem is free along the way: the IN's own AE takes it, and the CSE below no longer
    // speaks for it at the MN.
    let (rsc, b) = create(in_cse.url(), "/cse-in", "Smeter", 2, ae);
    assert_eq!(rsc, 2001, "{b}");
    let r = below
        .request(
            mn.https_url(),
            "GET",
            "/cse-mn",
            Some("/Smeter"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(r.rsc, 4106, "{:?}", r.body);
}

/// An S-stem AE registered two levels below the IN-CSE (at a CSE registered with an MN-CSE) is
/// recorded at the IN-CSE too (TS-0001 clause 10.2.2.2): its CSE sends the announcement to the
/// IN-CSE's CSEBase through the MN, the IN keeps it under the MN's `<remoteCSE>` (the MN's
/// descendantCSEs name the announcing CSE), and the MN keeps a copy under its registree's. The
/// AE then reaches the IN through both CSEs, and nobody registers its stem at either.
#[test]
fn an_s_stem_two_levels_down_is_recorded_at_the_in_cse() {
    let (in_cse, mn, mn2, _pki) = start_three_tiers();
    let ae = |rn: &str| json!({"m2m:ae": {"rn": rn, "api": "Nmeter", "rr": false, "srv": ["3"]}});
    let (rsc, b) = create(mn2.url(), "/cse-mn2", "Smeter", 2, ae("meter"));
    assert_eq!(
        rsc,
        2001,
        "{b}\nMN:\n{}\nIN:\n{}",
        mn.stderr(),
        in_cse.stderr()
    );
    let (rsc, b) = retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:aeA"]["lnk"], json!("/id-mn2/Smeter"), "{b}");
    let (rsc, b) = retrieve(mn.url(), "/cse-mn/id-mn2/Smeter", ADMIN);
    assert_eq!(rsc, 2000, "the MN keeps a copy under its registree: {b}");
    // Nobody registers the stem at the MN or at the IN, in any form.
    for (url, cb) in [(mn.url(), "/cse-mn"), (in_cse.url(), "/cse-in")] {
        for from in ["Smeter", "/Smeter", "//m2m.example.com/Smeter"] {
            let (rsc, b) = create(url, cb, from, 2, ae("squat"));
            assert_eq!(rsc, 4117, "{cb} as {from}: {b}");
        }
    }
    // The AE reaches a resource at the IN that its policy opens to it, through both CSEs.
    let owner = register_ae(in_cse.url(), "/cse-in", "Cowner", "owner", &[]);
    let acp = create_acp(
        in_cse.url(),
        "/cse-in/owner",
        &owner,
        "acp",
        vec![acr(&[&owner], 63), acr(&["/Smeter"], OP_RETRIEVE)],
        vec![acr(&[&owner], 63)],
    );
    create_cnt(
        in_cse.url(),
        "/cse-in/owner",
        &owner,
        json!({"rn": "c", "acpi": [acp]}),
    );
    let (rsc, b) = retrieve(mn2.url(), "/~/id-in/cse-in/owner/c", "Smeter");
    assert_eq!(
        rsc,
        2000,
        "{b}\nMN:\n{}\nIN:\n{}",
        mn.stderr(),
        in_cse.stderr()
    );
    // Another AE of mn2 that registered no S-stem is not taken for it.
    let other = register_ae(mn2.url(), "/cse-mn2", "Cother", "other", &[]);
    let (rsc, b) = retrieve(mn2.url(), "/~/id-in/cse-in/owner/c", &other);
    assert_eq!(rsc, 4103, "{b}");
    // Deregistered at mn2: the IN's record says so.
    assert_eq!(delete(mn2.url(), "/cse-mn2/meter", "Smeter").0, 2002);
    let inactive = poll(WAIT, || {
        let (_, b) = retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN);
        (b["m2m:aeA"]["lnk"] == json!("INACTIVE")).then_some(())
    });
    assert!(inactive.is_some(), "MN2:\n{}", mn2.stderr());
    // And registers again at mn2.
    let (rsc, b) = create(mn2.url(), "/cse-mn2", "Smeter", 2, ae("meter"));
    assert_eq!(rsc, 2001, "{b}");
    let (_, b) = retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN);
    assert_eq!(b["m2m:aeA"]["lnk"], json!("/id-mn2/Smeter"), "{b}");
}

/// What a rogue registree of the MN (played by a client with a CSE certificate of the SP) can
/// do with S-stems announced below the MN and with the routes down: nothing. It cannot speak for
/// an S-AE of another registree (4106), cannot have the IN record a stem in another CSE's name
/// (the MN does not relay it: 4106, nothing recorded), and a pointOfAccess that is the IN's own
/// address does not turn a request for a CSE it lists into one bouncing between the IN and the
/// MN (the peer at that address must prove to be the registree: 5103, answered at once), nor
/// is a request it sends for a CSE it lists sent back down to it (4004).
#[test]
fn a_rogue_registree_gets_no_stem_and_no_loop() {
    let (in_cse, mn, mn2, pki) = start_three_tiers();
    let ae = json!({"m2m:ae": {"rn": "meter", "api": "Nmeter", "rr": false, "srv": ["3"]}});
    let (rsc, b) = create(mn2.url(), "/cse-mn2", "Smeter", 2, ae);
    assert_eq!(rsc, 2001, "{b}\nMN:\n{}", mn.stderr());
    pki.issue(&["--kind", "cse", "--id", "/id-mn3"], "id-mn3");
    let (chain, key) = pki.cse_cert("id-mn3");
    let rogue = TlsClient::certificate(&pki.ca_pem(), &chain, &key, "id-mn.id-in.m2m.example.com");
    let send =
        |method: &str, to: &str, from: &str, ty: Option<u16>, body: Option<&serde_json::Value>| {
            rogue
                .request(mn.https_url(), method, to, Some(from), ty, body)
                .unwrap_or_else(|e| panic!("{method} {to}: {e}"))
        };
    let r = send(
        "POST",
        "/cse-mn",
        "/id-mn3",
        Some(16),
        Some(
            &json!({"m2m:csr": {"csi": "/id-mn3", "cb": "/id-mn3/cse-mn3", "rr": true,
            "poa": [in_cse.https_url()], "srv": ["3"], "cst": 2, "dcse": ["/id-z"]}}),
        ),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    // Another registree's S-AE.
    for from in ["Smeter", "/id-mn3/Smeter", "/id-mn2/Smeter"] {
        let r = send("GET", "/~/id-in/cse-in", from, None, None);
        assert_eq!(r.rsc, 4106, "as {from}: {:?}", r.body);
    }
    // An announcement in another CSE's name, or of another registree's stem.
    for to in [
        "/~/id-in/id-in",
        "/~/id-in",
        "/_/m2m.example.com/id-in/id-in",
    ] {
        for lnk in ["/id-mn2/Sfoo", "/id-mn2/Smeter", "/id-mn/Sfoo"] {
            let r = send(
                "POST",
                to,
                lnk,
                Some(10002),
                Some(&json!({"m2m:aeA": {"lnk": lnk, "api": "Nfoo", "lbl": ["Credential-ID:"]}})),
            );
            assert_eq!(r.rsc, 4106, "{to} {lnk}: {:?}", r.body);
        }
    }
    assert_eq!(retrieve(in_cse.url(), "/cse-in/id-mn/Sfoo", ADMIN).0, 4004);
    let (_, b) = retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN);
    assert_eq!(b["m2m:aeA"]["lnk"], json!("/id-mn2/Smeter"), "{b}");
    // A route down to the rogue, whose address is the IN's.
    let listed = poll(WAIT, || {
        let (_, csr) = retrieve(in_cse.url(), "/cse-in/id-mn", ADMIN);
        csr["m2m:csr"]["dcse"]
            .as_array()
            .is_some_and(|d| d.contains(&json!("/id-z")))
            .then_some(())
    });
    assert!(listed.is_some(), "MN:\n{}", mn.stderr());
    let started = std::time::Instant::now();
    // From the rogue itself: not sent back down to where it came from.
    let r = send("GET", "/~/id-z/cse-z", "/id-mn3", None, None);
    assert_eq!(r.rsc, 4004, "{:?}", r.body);
    // From the IN: down to the MN, then to the rogue's address, where the IN answers.
    let (rsc, b) = retrieve(in_cse.url(), "/~/id-z/cse-z", ADMIN);
    assert_eq!(rsc, 5103, "{b}");
    // Well within the CSEs' 3 s wait for an answer: refused at once, not timed out.
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2000),
        "answered at once, not after bouncing"
    );
    // Once the S-AE has deregistered, its record stays with the CSE that announced it: the
    // rogue cannot re-activate it as its own, neither with the MN's copy (it is mn2's) nor
    // without (the IN remembers the announcing CSE), nor dress another UPDATE as an
    // announcement.
    assert_eq!(delete(mn2.url(), "/cse-mn2/meter", "Smeter").0, 2002);
    let inactive = poll(WAIT, || {
        let (_, b) = retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN);
        (b["m2m:aeA"]["lnk"] == json!("INACTIVE")).then_some(())
    });
    assert!(inactive.is_some(), "MN2:\n{}", mn2.stderr());
    let follows = poll(WAIT, || {
        let (_, copy) = retrieve(mn.url(), "/cse-mn/id-mn2/Smeter", ADMIN);
        (copy["m2m:aeA"]["lnk"] == json!("INACTIVE")).then_some(())
    });
    assert!(follows.is_some(), "the MN's copy follows:\n{}", mn.stderr());
    let take = json!({"m2m:aeA": {"lnk": "/id-mn3/Smeter", "lbl": ["Credential-ID:"]}});
    let r = send(
        "PUT",
        "/~/id-in/Smeter",
        "/id-mn3/Smeter",
        None,
        Some(&take),
    );
    assert_eq!(r.rsc, 4106, "with the MN's copy: {:?}", r.body);
    assert_eq!(delete(mn.url(), "/cse-mn/id-mn2/Smeter", ADMIN).0, 2002);
    let r = send(
        "PUT",
        "/~/id-in/Smeter",
        "/id-mn3/Smeter",
        None,
        Some(&take),
    );
    assert_eq!(r.rsc, 4117, "without it: {:?}", r.body);
    let r = send(
        "PUT",
        "/~/id-in/cse-in",
        "/id-mn3/Sfoo",
        None,
        Some(&json!({"m2m:aeA": {"lnk": "/id-mn3/Sfoo"}})),
    );
    assert_eq!(r.rsc, 4106, "an UPDATE of something else: {:?}", r.body);
    let (_, b) = retrieve(in_cse.url(), "/cse-in/id-mn/Smeter", ADMIN);
    assert_eq!(b["m2m:aeA"]["lnk"], json!("INACTIVE"), "{b}");
    // mn2 registers it again, and the MN keeps its copy anew.
    let ae = json!({"m2m:ae": {"rn": "meter", "api": "Nmeter", "rr": false, "srv": ["3"]}});
    let (rsc, b) = create(mn2.url(), "/cse-mn2", "Smeter", 2, ae);
    assert_eq!(rsc, 2001, "{b}\nMN:\n{}", mn.stderr());
    let (_, copy) = retrieve(mn.url(), "/cse-mn/id-mn2/Smeter", ADMIN);
    assert_eq!(copy["m2m:aeA"]["lnk"], json!("/id-mn2/Smeter"), "{copy}");
}

/// Nothing a registree creates under the CSE-ID of a CSE keeps that CSE from registering: its
/// `<remoteCSE>` gets a free name, and it registers again (after a restart) and publishes its
/// descendants by resourceID.
#[test]
fn a_name_taken_first_keeps_no_cse_from_registering() {
    for squat in ["ntp", "ae"] {
        let pki = Pki::temp();
        let in_cse = CseProcess::start_temp(&in_tls_config(&pki));
        let u = in_cse.url();
        let squatter = register_ae(u, "/cse-in", "Csquatter", "squatter", &[]);
        let (rsc, b) = match squat {
            "ntp" => create(
                u,
                "/cse-in",
                &squatter,
                26,
                json!({ "m2m:ntp": { "rn": "id-mn", "acn": 1, "plbl": "mine" } }),
            ),
            _ => create(
                u,
                "/cse-in",
                "Cnamed",
                2,
                json!({ "m2m:ae": { "rn": "id-mn", "api": "Nnamed", "rr": false, "srv": ["3"] } }),
            ),
        };
        assert_eq!(rsc, 2001, "{squat} named id-mn: {b}");
        let mn = CseProcess::start_temp(&mn_config(in_cse.https_url(), &pki));
        let registered = |mn: &CseProcess| {
            poll(WAIT, || {
                let (rsc, b) = retrieve(u, "/id-mn", ADMIN);
                (rsc == 2000 && b["m2m:csr"]["poa"] == json!([mn.https_url()])).then_some(b)
            })
        };
        let csr = registered(&mn).unwrap_or_else(|| {
            panic!(
                "{squat}: the MN did not register\nIN:\n{}\nMN:\n{}",
                in_cse.stderr(),
                mn.stderr()
            )
        });
        let rn = csr["m2m:csr"]["rn"].as_str().unwrap_or_default().to_owned();
        assert!(rn.starts_with("id-mn-"), "{squat}: a free name: {csr}");
        let (rsc, b) = retrieve(u, &format!("/cse-in/{rn}"), ADMIN);
        assert_eq!((rsc, &b["m2m:csr"]["csi"]), (2000, &json!("/id-mn")), "{b}");
        let (rsc, b) = retrieve(u, "/cse-in/id-mn", ADMIN);
        assert_eq!(rsc, 2000, "{b}");
        assert!(
            b.get("m2m:csr").is_none(),
            "{squat}: the squatter's resource stays its own: {b}"
        );
        // Retargeting reaches the MN through its record.
        let dev = register_ae(mn.url(), "/cse-mn", "Cdev", "dev", &[]);
        let acp = create_acp(
            mn.url(),
            "/cse-mn/dev",
            &dev,
            "acp",
            vec![acr(&["/id-in/CAdmin"], OP_RETRIEVE), acr(&[&dev], OP_ALL)],
            vec![acr(&[&dev], OP_ALL)],
        );
        set_acpi(mn.url(), "/cse-mn/dev", &dev, "m2m:ae", &[&acp]);
        let (rsc, b) = retrieve(u, "/~/id-mn/cse-mn/dev", ADMIN);
        assert_eq!(rsc, 2000, "{squat}: retargeting: {b}");
        // A restart registers again (an UPDATE of the record, by its resourceID).
        let mn = mn.restart();
        assert!(
            registered(&mn).is_some(),
            "{squat}: the restarted MN updates its record\nMN:\n{}",
            mn.stderr()
        );
        assert!(
            !mn.stderr().contains("registration failed"),
            "{}",
            mn.stderr()
        );
    }
}
