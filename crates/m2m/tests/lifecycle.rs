//! Resource lifecycle over HTTP on a real `m2m cse`: AE registration, container and
//! contentInstance, addressing forms, result content, ACP, CSEBase protection.

mod common;

use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "CAdmin";

fn ae_body(rn: &str, api: &str) -> Value {
    json!({ "m2m:ae": { "rn": rn, "api": api, "rr": false, "srv": ["3"] } })
}

#[test]
fn ae_registration_assigns_and_checks_ae_ids() {
    let cse = CseProcess::start_in();
    let u = cse.url();

    // From "C": the CSE assigns a C-type AE-ID.
    let (rsc, b) = create(u, "/cse-in", "C", 2, ae_body("ae-c", "Nc"));
    assert_eq!(rsc, 2001, "register with From C: {b}");
    let aei = b["m2m:ae"]["aei"].as_str().expect("aei");
    assert!(
        aei.starts_with('C') && aei.len() > 1,
        "From C must get an assigned C... AE-ID, got {aei}"
    );
    assert_eq!(
        b["m2m:ae"]["ri"],
        json!(aei),
        "ri of an AE is its AE-ID stem"
    );

    // From "S": an S-type AE-ID.
    let (rsc, b) = create(u, "/cse-in", "S", 2, ae_body("ae-s", "Ns"));
    assert_eq!(rsc, 2001, "register with From S: {b}");
    let aei = b["m2m:ae"]["aei"].as_str().expect("aei");
    assert!(
        aei.starts_with('S') && aei.len() > 1,
        "From S must get an assigned S... AE-ID, got {aei}"
    );

    // From "Cmyapp": the AE-ID is the one asked for.
    let (rsc, b) = create(u, "/cse-in", "Cmyapp", 2, ae_body("ae-my", "Rmyapp"));
    assert_eq!(rsc, 2001, "register with From Cmyapp: {b}");
    assert_eq!(b["m2m:ae"]["aei"], json!("Cmyapp"), "{b}");

    // The same AE-ID again (other resource name): ORIGINATOR_HAS_ALREADY_REGISTERED.
    let r = create_full(u, "/cse-in", "Cmyapp", 2, ae_body("ae-my2", "Rmyapp"));
    assert_eq!(r.rsc, 4117, "second registration of Cmyapp: {:?}", r.body);
    assert!(
        r.dbg().is_some_and(|d| !d.is_empty()),
        "4117 needs an m2m:dbg: {:?}",
        r.body
    );

    // Absent From: an AE-ID is assigned (TS-0001 clause 10.2.2.2, case "AE-ID not provided").
    let r = request(
        "POST",
        u,
        "/cse-in",
        None,
        Some(2),
        Some(&ae_body("ae-none", "Nnone")),
    );
    assert_eq!(r.rsc, 2001, "register without From: {:?}", r.body);
    let aei = r.body["m2m:ae"]["aei"].as_str().expect("aei");
    assert!(
        aei.starts_with('C') || aei.starts_with('S'),
        "registration without From must get an assigned AE-ID, got {aei}"
    );

    // Empty From header: same as absent.
    let (rsc, b) = create(u, "/cse-in", "", 2, ae_body("ae-empty", "Nempty"));
    assert_eq!(rsc, 2001, "register with an empty From: {b}");
    let aei = b["m2m:ae"]["aei"].as_str().expect("aei");
    assert!(
        aei.starts_with('C') || aei.starts_with('S'),
        "registration with an empty From must get an assigned AE-ID, got {aei}"
    );

    // App-ID not starting with R or N: BAD_REQUEST.
    let r = create_full(u, "/cse-in", "C", 2, ae_body("ae-bad", "Xapp"));
    assert_eq!(r.rsc, 4000, "App-ID 'Xapp': {:?}", r.body);
    assert_eq!(r.status, 400);

    // The registered AE is retrievable under its name and by its AE-ID.
    let (rsc, b) = retrieve(u, "/cse-in/ae-my", "Cmyapp");
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:ae"]["api"], json!("Rmyapp"));
    let (rsc, b) = retrieve(u, "/Cmyapp", "Cmyapp");
    assert_eq!(rsc, 2000, "retrieve the AE by its resourceID: {b}");
    assert_eq!(b["m2m:ae"]["rn"], json!("ae-my"));
}

#[test]
fn container_create_retrieve_update_delete() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Ccnt", "app", &[]);

    let (rsc, b) = create(
        u,
        "/cse-in/app",
        &ae,
        3,
        json!({ "m2m:cnt": { "rn": "data", "mni": 10, "lbl": ["a", "b"] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let cnt = &b["m2m:cnt"];
    for attr in ["ri", "pi", "ct", "lt", "et", "st", "cni", "cbs"] {
        assert!(
            cnt.get(attr).is_some(),
            "created container lacks '{attr}': {b}"
        );
    }
    assert_eq!(cnt["ty"], json!(3));
    assert_eq!(cnt["cni"], json!(0));
    assert_eq!(cnt["cr"], Value::Null, "cr only when asked for: {b}");

    let (rsc, b) = retrieve(u, "/cse-in/app/data", &ae);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:cnt"]["mni"], json!(10));
    assert_eq!(b["m2m:cnt"]["lbl"], json!(["a", "b"]));
    let st0 = b["m2m:cnt"]["st"].as_u64().expect("st");

    let (rsc, b) = update(
        u,
        "/cse-in/app/data",
        &ae,
        json!({ "m2m:cnt": { "mni": 5 } }),
    );
    assert_eq!(rsc, 2004, "update mni: {b}");
    assert_eq!(b["m2m:cnt"]["mni"], json!(5), "{b}");
    let (_, b) = retrieve(u, "/cse-in/app/data", &ae);
    assert_eq!(b["m2m:cnt"]["mni"], json!(5), "update persisted: {b}");
    assert!(
        b["m2m:cnt"]["st"].as_u64().expect("st") > st0,
        "stateTag grows on update: {b}"
    );

    // Response headers of TS-0009 clause 6.4: X-M2M-RI echoed, X-M2M-RVI present.
    let r = retrieve_full(u, "/cse-in/app/data", &ae);
    assert!(
        r.header("x-m2m-ri")
            .is_some_and(|ri| ri.starts_with("test-")),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-m2m-rvi"), Some("3"), "{:?}", r.headers);
    assert!(
        r.header("content-type").is_some_and(|c| c.contains("json")),
        "{:?}",
        r.headers
    );

    let (rsc, b) = delete(u, "/cse-in/app/data", &ae);
    assert_eq!(rsc, 2002, "{b}");
    assert_eq!(
        b,
        Value::Null,
        "DELETE without rcn returns nothing (TS-0004 7.3.3.x): {b}"
    );
    let (rsc, b) = retrieve(u, "/cse-in/app/data", &ae);
    assert_eq!(rsc, 4004, "deleted container: {b}");
}

#[test]
fn content_instances_latest_oldest_and_limits() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Ccin", "app", &[]);
    create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "c", "mni": 3 }));

    let mut ris = Vec::new();
    for i in 0..5 {
        ris.push(create_cin(u, "/cse-in/app/c", &ae, &format!("v{i}")));
    }
    let (_, b) = retrieve(u, "/cse-in/app/c", &ae);
    assert_eq!(b["m2m:cnt"]["cni"], json!(3), "cni stays at mni: {b}");
    assert_eq!(b["m2m:cnt"]["cbs"], json!(6), "cbs of v2,v3,v4: {b}");

    let (rsc, b) = retrieve(u, "/cse-in/app/c/la", &ae);
    assert_eq!(rsc, 2000, "la: {b}");
    assert_eq!(b["m2m:cin"]["con"], json!("v4"), "la is the newest: {b}");
    let (rsc, b) = retrieve(u, "/cse-in/app/c/ol", &ae);
    assert_eq!(rsc, 2000, "ol: {b}");
    assert_eq!(
        b["m2m:cin"]["con"],
        json!("v2"),
        "ol is the oldest kept: {b}"
    );
    for dropped in &ris[..2] {
        let (rsc, b) = retrieve(u, &format!("/{dropped}"), &ae);
        assert_eq!(rsc, 4004, "instance {dropped} was dropped by mni: {b}");
    }
    for kept in &ris[2..] {
        let (rsc, b) = retrieve(u, &format!("/{kept}"), &ae);
        assert_eq!(rsc, 2000, "instance {kept} is kept: {b}");
        assert_eq!(b["m2m:cin"]["cs"], json!(2), "contentSize: {b}");
    }

    // Lowering mni drops the oldest at once.
    let (rsc, b) = update(u, "/cse-in/app/c", &ae, json!({ "m2m:cnt": { "mni": 1 } }));
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(b["m2m:cnt"]["cni"], json!(1), "cni after lowering mni: {b}");
    let (_, b) = retrieve(u, "/cse-in/app/c/ol", &ae);
    assert_eq!(b["m2m:cin"]["con"], json!("v4"), "{b}");

    // A contentInstance cannot be updated.
    let r = request(
        "PUT",
        u,
        &format!("/{}", ris[4]),
        Some(&ae),
        None,
        Some(&json!({ "m2m:cin": { "con": "changed" } })),
    );
    assert_eq!(r.rsc, 4005, "update of a contentInstance: {:?}", r.body);
    assert_eq!(r.status, 405);

    // maxByteSize: content bigger than mbs is refused.
    create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "small", "mbs": 10 }));
    create_cin(u, "/cse-in/app/small", &ae, "0123456789");
    let r = create_full(
        u,
        "/cse-in/app/small",
        &ae,
        4,
        json!({ "m2m:cin": { "con": "0123456789A" } }),
    );
    assert_eq!(r.rsc, 5207, "content over mbs: {:?}", r.body);
    assert!(r.dbg().is_some_and(|d| !d.is_empty()), "{:?}", r.body);
    let (_, b) = retrieve(u, "/cse-in/app/small", &ae);
    assert_eq!(b["m2m:cnt"]["cni"], json!(1), "{b}");

    // la / ol of an empty container: NOT_FOUND.
    create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "empty" }));
    let (rsc, b) = retrieve(u, "/cse-in/app/empty/la", &ae);
    assert_eq!(rsc, 4004, "la of an empty container: {b}");
}

/// maxInstanceAge: a new instance expires at most mia after its creation, and lowering mia brings
/// the instances already held forward.
#[test]
fn max_instance_age_caps_expirations_on_create_and_on_update() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Cmia", "app", &[]);
    create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "aged", "mia": 3600 }));
    let ri = create_cin(u, "/cse-in/app/aged", &ae, "v0");
    let lifetime = |b: &Value| {
        let at = |name: &str| {
            let text = b["m2m:cin"][name].as_str().expect(name);
            m2m_core::time::parse(text).expect("a oneM2M time")
        };
        (at("et") - at("ct")).num_seconds()
    };
    let (_, b) = retrieve(u, &format!("/{ri}"), &ae);
    assert!(lifetime(&b) <= 3600, "et capped by mia on CREATE: {b}");

    let (rsc, b) = update(
        u,
        "/cse-in/app/aged",
        &ae,
        json!({ "m2m:cnt": { "mia": 60 } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    let (_, b) = retrieve(u, &format!("/{ri}"), &ae);
    assert!(
        lifetime(&b) <= 60,
        "lowering mia caps the held instance: {b}"
    );
    let (_, b) = retrieve(
        u,
        &format!("/{}", create_cin(u, "/cse-in/app/aged", &ae, "v1")),
        &ae,
    );
    assert!(lifetime(&b) <= 60, "and the next one: {b}");
}

#[test]
fn addressing_forms_and_unstructured_ids() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Caddr", "app", &[]);
    let cnt = create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "c" }));

    let paths = [
        "/cse-in/app/c".to_owned(),
        "/~/id-in/cse-in/app/c".to_owned(),
        "/_/m2m.example.com/id-in/cse-in/app/c".to_owned(),
        format!("/{cnt}"),
        format!("/~/id-in/{cnt}"),
        format!("/_/m2m.example.com/id-in/{cnt}"),
    ];
    for p in &paths {
        let (rsc, b) = retrieve(u, p, &ae);
        assert_eq!(rsc, 2000, "retrieve via {p}: {b}");
        assert_eq!(b["m2m:cnt"]["ri"], json!(cnt), "retrieve via {p}: {b}");
    }
    // The CSEBase itself in the three forms.
    for p in [
        "/cse-in",
        "/~/id-in/cse-in",
        "/_/m2m.example.com/id-in/cse-in",
    ] {
        let (rsc, b) = retrieve(u, p, &ae);
        assert_eq!(rsc, 2000, "retrieve CSEBase via {p}: {b}");
        assert_eq!(b["m2m:cb"]["csi"], json!("/id-in"), "{b}");
        assert_eq!(b["m2m:cb"]["ty"], json!(5), "{b}");
    }
    // Create through the SP-relative and absolute forms.
    let (rsc, b) = create(
        u,
        "/~/id-in/cse-in/app/c",
        &ae,
        4,
        json!({ "m2m:cin": { "con": "sp" } }),
    );
    assert_eq!(rsc, 2001, "create via SP-relative: {b}");
    let (rsc, b) = create(
        u,
        &format!("/_/m2m.example.com/id-in/{cnt}"),
        &ae,
        4,
        json!({ "m2m:cin": { "con": "abs" } }),
    );
    assert_eq!(rsc, 2001, "create via absolute unstructured: {b}");
    let (_, b) = retrieve(u, &format!("/~/id-in/{cnt}/la"), &ae);
    assert_eq!(
        b["m2m:cin"]["con"],
        json!("abs"),
        "la via unstructured: {b}"
    );
}

#[test]
fn result_content_on_create_retrieve_update() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Crcn", "app", &[]);

    // rcn=0: nothing.
    let r = request(
        "POST",
        u,
        "/cse-in/app?rcn=0",
        Some(&ae),
        Some(3),
        Some(&json!({ "m2m:cnt": { "rn": "c0" } })),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert_eq!(r.body, Value::Null, "rcn=0 returns no content");
    assert!(
        r.header("content-location").is_some(),
        "a CREATE answer carries Content-Location: {:?}",
        r.headers
    );
    // rcn=1: attributes.
    let r = request(
        "POST",
        u,
        "/cse-in/app?rcn=1",
        Some(&ae),
        Some(3),
        Some(&json!({ "m2m:cnt": { "rn": "c1" } })),
    );
    assert_eq!(r.rsc, 2001);
    assert_eq!(r.body["m2m:cnt"]["rn"], json!("c1"), "rcn=1: {:?}", r.body);
    // rcn=2: hierarchical address.
    let r = request(
        "POST",
        u,
        "/cse-in/app?rcn=2",
        Some(&ae),
        Some(3),
        Some(&json!({ "m2m:cnt": { "rn": "c2" } })),
    );
    assert_eq!(r.rsc, 2001);
    let uri = r.body["m2m:uri"].as_str().unwrap_or_default();
    assert!(uri.ends_with("app/c2"), "rcn=2 m2m:uri: {:?}", r.body);
    // rcn=3: hierarchical address and attributes.
    let r = request(
        "POST",
        u,
        "/cse-in/app?rcn=3",
        Some(&ae),
        Some(3),
        Some(&json!({ "m2m:cnt": { "rn": "c3" } })),
    );
    assert_eq!(r.rsc, 2001);
    let rce = &r.body["m2m:rce"];
    assert!(
        rce["uri"].as_str().unwrap_or_default().ends_with("app/c3"),
        "rcn=3 uri: {:?}",
        r.body
    );
    assert!(
        rce.get("m2m:cnt").or(rce.get("cnt")).is_some(),
        "rcn=3 carries the resource: {:?}",
        r.body
    );

    create_cin(u, "/cse-in/app/c1", &ae, "x");
    create_cin(u, "/cse-in/app/c1", &ae, "y");
    create_cnt(u, "/cse-in/app/c1", &ae, json!({ "rn": "sub" }));

    // rcn=4: attributes and child resources.
    let (rsc, b) = get_with_query(u, "/cse-in/app/c1", &ae, "rcn=4");
    assert_eq!(rsc, 2000, "{b}");
    let cnt = &b["m2m:cnt"];
    assert_eq!(cnt["rn"], json!("c1"), "rcn=4 has the attributes: {b}");
    assert_eq!(
        cnt["m2m:cin"].as_array().map(Vec::len),
        Some(2),
        "rcn=4 has the 2 instances: {b}"
    );
    assert_eq!(
        cnt["m2m:cnt"].as_array().map(Vec::len),
        Some(1),
        "rcn=4 has the child container: {b}"
    );
    // rcn=5: attributes and child references.
    let (rsc, b) = get_with_query(u, "/cse-in/app/c1", &ae, "rcn=5");
    assert_eq!(rsc, 2000, "{b}");
    let ch = b["m2m:cnt"]["ch"].as_array().cloned().unwrap_or_default();
    assert_eq!(ch.len(), 3, "rcn=5 child references: {b}");
    assert!(
        ch.iter()
            .any(|c| c["nm"] == json!("sub") && c["typ"] == json!(3)),
        "rcn=5 references name the child container: {b}"
    );
    assert_eq!(b["m2m:cnt"]["rn"], json!("c1"), "{b}");
    // rcn=6: child references only.
    let (rsc, b) = get_with_query(u, "/cse-in/app/c1", &ae, "rcn=6");
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(
        b["m2m:rrl"]["rrf"].as_array().map(Vec::len),
        Some(3),
        "rcn=6: {b}"
    );
    assert!(b.get("m2m:cnt").is_none(), "rcn=6 has no attributes: {b}");
    // References follow drt outside discovery too (m2m:childResourceRef): structured names by
    // default, resourceIDs with drt=2, for 5 and 6 alike.
    for rrf in b["m2m:rrl"]["rrf"].as_array().unwrap() {
        let val = rrf["val"].as_str().unwrap();
        assert!(val.starts_with("cse-in/app/c1/"), "{rrf}");
        let (rsc, child) = retrieve(u, &format!("/{val}"), &ae);
        assert_eq!(rsc, 2000, "{child}");
    }
    for rcn in ["5", "6"] {
        let (_, b) = get_with_query(u, "/cse-in/app/c1", &ae, &format!("rcn={rcn}&drt=2"));
        let refs = if rcn == "5" {
            b["m2m:cnt"]["ch"].clone()
        } else {
            b["m2m:rrl"]["rrf"].clone()
        };
        let refs = refs.as_array().cloned().unwrap_or_default();
        assert_eq!(refs.len(), 3, "{b}");
        for r in refs {
            let val = r["val"].as_str().unwrap();
            assert!(!val.contains('/'), "rcn={rcn} drt=2: {r}");
            let (rsc, child) = retrieve(u, &format!("/{val}"), &ae);
            assert_eq!(
                (
                    rsc,
                    &child.as_object().unwrap().values().next().unwrap()["ri"]
                ),
                (2000, &json!(val)),
                "{child}"
            );
        }
    }

    // rcn=9 on update (TS-0004 7.2.1.2): what the CSE changed besides what was asked (lt, st),
    // not the requested values, nor what did not change.
    let r = request(
        "PUT",
        u,
        "/cse-in/app/c1?rcn=9",
        Some(&ae),
        None,
        Some(&json!({ "m2m:cnt": { "lbl": ["x"] } })),
    );
    assert_eq!(r.rsc, 2004, "{:?}", r.body);
    let m = r.body["m2m:cnt"].as_object().cloned().unwrap_or_default();
    let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["lt", "st"], "rcn=9: {:?}", r.body);

    // DELETE answers as a RETRIEVE with its rcn would have, read before the deletion
    // (TS-0004 table 7.5.2-2, D/1,4,5,6,8); no rcn: nothing.
    for (name, rcn) in [("d6", "6"), ("d1", "1"), ("d0", "")] {
        create_cnt(u, "/cse-in/app", &ae, json!({ "rn": name }));
        let cin = create_cin(u, &format!("/cse-in/app/{name}"), &ae, "v");
        let query = if rcn.is_empty() {
            String::new()
        } else {
            format!("?rcn={rcn}")
        };
        let (_, shown) = get_with_query(u, &format!("/cse-in/app/{name}"), &ae, "rcn=6");
        let r = request(
            "DELETE",
            u,
            &format!("/cse-in/app/{name}{query}"),
            Some(&ae),
            None,
            None,
        );
        assert_eq!(r.rsc, 2002, "{:?}", r.body);
        match rcn {
            "6" => {
                let rrf = &r.body["m2m:rrl"]["rrf"];
                assert_eq!(rrf.as_array().map(Vec::len), Some(1), "{:?}", r.body);
                assert_eq!(rrf[0]["typ"], 4, "{:?}", r.body);
                assert_eq!(r.body, shown, "what a RETRIEVE with rcn=6 showed");
            }
            "1" => assert_eq!(r.body["m2m:cnt"]["rn"], name, "{:?}", r.body),
            _ => assert_eq!(r.body, Value::Null, "{:?}", r.body),
        }
        let (gone, _) = retrieve(u, &format!("/{cin}"), &ae);
        assert_eq!(gone, 4004, "{name}: the instance went with its container");
    }
}

#[test]
fn deleting_a_container_removes_its_instances() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Cdel", "app", &[]);
    create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "c" }));
    let cins: Vec<String> = (0..3)
        .map(|i| create_cin(u, "/cse-in/app/c", &ae, &i.to_string()))
        .collect();
    let (rsc, b) = delete(u, "/cse-in/app/c", &ae);
    assert_eq!(rsc, 2002, "{b}");
    for ri in &cins {
        let (rsc, b) = retrieve(u, &format!("/{ri}"), &ae);
        assert_eq!(rsc, 4004, "instance {ri} of a deleted container: {b}");
    }
    // Deleting the AE removes its subtree too.
    create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "c2" }));
    let (rsc, _) = delete(u, "/cse-in/app", &ae);
    assert_eq!(rsc, 2002);
    let (rsc, b) = retrieve(u, "/cse-in/app/c2", ADMIN);
    assert_eq!(rsc, 4004, "{b}");
}

#[test]
fn access_control_policy_create_and_retrieve() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let acp = json!({ "m2m:acp": {
        "rn": "acp1",
        "pv": { "acr": [ { "acor": ["Cabc", "all"], "acop": 63 } ] },
        "pvs": { "acr": [ { "acor": [ADMIN], "acop": 63 } ] },
    }});
    let (rsc, b) = create(u, "/cse-in", ADMIN, 1, acp);
    assert_eq!(rsc, 2001, "ACP create: {b}");
    let ri = b["m2m:acp"]["ri"].as_str().expect("acp ri").to_owned();
    let (rsc, b) = retrieve(u, "/cse-in/acp1", ADMIN);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:acp"]["ri"], json!(ri));
    assert_eq!(b["m2m:acp"]["ty"], json!(1));
    assert_eq!(
        b["m2m:acp"]["pv"]["acr"][0]["acop"],
        json!(63),
        "pv kept: {b}"
    );
    assert_eq!(
        b["m2m:acp"]["pv"]["acr"][0]["acor"],
        json!(["Cabc", "all"]),
        "{b}"
    );
    assert_eq!(
        b["m2m:acp"]["pvs"]["acr"][0]["acor"],
        json!([ADMIN]),
        "pvs kept: {b}"
    );
}

#[test]
fn cse_base_cannot_be_deleted() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    for p in ["/cse-in", "/~/id-in/cse-in", "/id-in"] {
        let r = request("DELETE", u, p, Some(ADMIN), None, None);
        assert_eq!(r.rsc, 4005, "DELETE {p}: {:?}", r.body);
        assert_eq!(r.status, 405, "DELETE {p}");
        assert!(r.dbg().is_some_and(|d| !d.is_empty()), "{:?}", r.body);
    }
    let (rsc, _) = retrieve(u, "/cse-in", ADMIN);
    assert_eq!(rsc, 2000, "the CSEBase is still there");
}

/// The CSEBase "shall not be updated via API" (TS-0004 clause 7.4.3.2.3): 4005 for the admin,
/// whatever the attribute; an AE, which may not write it at all, is refused first (4103); and
/// nothing changes.
#[test]
fn the_cse_base_is_not_updated_through_the_api() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Capp", "app", &[]);
    let (_, before) = retrieve(u, "/cse-in", ADMIN);
    for (from, status, rsc) in [(ADMIN, 405, 4005), (ae.as_str(), 403, 4103)] {
        for body in [
            json!({ "m2m:cb": { "lbl": ["site:berlin"] } }),
            json!({ "m2m:cb": { "csi": "/id-other" } }),
            json!({ "m2m:cb": { "poa": ["http://elsewhere.example.com"] } }),
        ] {
            let r = request("PUT", u, "/cse-in", Some(from), None, Some(&body));
            assert_eq!(
                (r.status, r.rsc),
                (status, rsc),
                "{from} {body}: {:?}",
                r.body
            );
        }
    }
    let (_, after) = retrieve(u, "/cse-in", ADMIN);
    assert_eq!(after["m2m:cb"]["lt"], before["m2m:cb"]["lt"], "{after}");
    assert!(after["m2m:cb"].get("lbl").is_none(), "{after}");
}

#[test]
fn create_with_rcn_3_wraps_the_resource_in_its_namespace() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Crce", "app", &[]);
    let r = request(
        "POST",
        u,
        "/cse-in/app?rcn=3",
        Some(&ae),
        Some(3),
        Some(&json!({ "m2m:cnt": { "rn": "c3" } })),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert_eq!(
        r.body["m2m:rce"]["m2m:cnt"]["rn"],
        json!("c3"),
        "TS-0004 table 6.3.5.25-1 (m2m:resourceWrapper): the resource element is \
         m2m:<resourceType>, i.e. m2m:cnt: {:?}",
        r.body
    );
}

/// disableRetrieval (TS-0001 table 9.6.6-3, TS-0004 clause 7.4.7.2.2-4): while TRUE, instances
/// are written but not read or deleted, by address, `la`, `ol` or a child listing, whoever asks
/// (the admin too); set back to FALSE, every instance written meanwhile is gone.
#[test]
fn disable_retrieval_hides_instances_and_clears_them_when_lifted() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let (rsc, b) = create(u, "/cse-in", "C", 2, ae_body("meter", "Nmeter"));
    assert_eq!(rsc, 2001, "{b}");
    let aei = b["m2m:ae"]["aei"].as_str().unwrap().to_owned();
    let (rsc, b) = create(
        u,
        "/cse-in/meter",
        &aei,
        3,
        json!({ "m2m:cnt": { "rn": "readings", "disr": true } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:cnt"]["disr"], json!(true));
    let (rsc, b) = create(
        u,
        "/cse-in/meter/readings",
        &aei,
        4,
        json!({ "m2m:cin": { "rn": "r1", "con": "42 kWh" } }),
    );
    assert_eq!(rsc, 2001, "writing stays allowed: {b}");
    for who in [aei.as_str(), ADMIN] {
        for path in [
            "/cse-in/meter/readings/r1",
            "/cse-in/meter/readings/la",
            "/cse-in/meter/readings/ol",
        ] {
            let (rsc, b) = retrieve(u, path, who);
            assert_eq!(rsc, 4005, "RETRIEVE {path} as {who}: {b}");
            assert!(b.to_string().find("42 kWh").is_none(), "{b}");
            let (rsc, b) = delete(u, path, who);
            assert_eq!(rsc, 4005, "DELETE {path} as {who}: {b}");
        }
    }
    // The container itself stays readable; its counters say one instance is held; its child
    // listings, with or without content, leave the instance out.
    let (rsc, b) = retrieve(u, "/cse-in/meter/readings", &aei);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:cnt"]["cni"], json!(1), "{b}");
    for rcn in [4, 5, 6, 8] {
        let (rsc, b) = get_with_query(u, "/cse-in/meter/readings", &aei, &format!("rcn={rcn}"));
        assert_eq!(rsc, 2000, "rcn={rcn}: {b}");
        let text = b.to_string();
        assert!(
            !text.contains("42 kWh") && !text.contains("m2m:cin") && !text.contains("readings/r1"),
            "rcn={rcn}: {b}"
        );
    }

    // Lifted: the instance is gone, new ones are readable.
    let (rsc, b) = update(
        u,
        "/cse-in/meter/readings",
        &aei,
        json!({ "m2m:cnt": { "disr": false } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(b["m2m:cnt"]["cni"], json!(0), "{b}");
    assert_eq!(b["m2m:cnt"]["cbs"], json!(0), "{b}");
    let (rsc, b) = retrieve(u, "/cse-in/meter/readings/r1", &aei);
    assert_eq!(rsc, 4004, "{b}");
    let (rsc, _) = retrieve(u, "/cse-in/meter/readings/la", &aei);
    assert_eq!(rsc, 4004, "no instance left");
    let (rsc, b) = create(
        u,
        "/cse-in/meter/readings",
        &aei,
        4,
        json!({ "m2m:cin": { "con": "43 kWh" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = retrieve(u, "/cse-in/meter/readings/la", &aei);
    assert_eq!((rsc, b["m2m:cin"]["con"].clone()), (2000, json!("43 kWh")));
    // FALSE to FALSE deletes nothing.
    let (rsc, b) = update(
        u,
        "/cse-in/meter/readings",
        &aei,
        json!({ "m2m:cnt": { "disr": false } }),
    );
    assert_eq!((rsc, b["m2m:cnt"]["cni"].clone()), (2004, json!(1)), "{b}");
}

/// The CSEBase's currentTime (`ctm`) is the CSE's clock at each RETRIEVE, also alone with `atrl`.
#[test]
fn the_cse_base_tells_its_current_time() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let (rsc, first) = retrieve(u, "/cse-in", ADMIN);
    assert_eq!(rsc, 2000, "{first}");
    let t1 = first["m2m:cb"]["ctm"].as_str().expect("ctm").to_owned();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (rsc, b) = get_with_query(u, "/cse-in", ADMIN, "atrl=ctm");
    assert_eq!(rsc, 2000, "{b}");
    let t2 = b["m2m:cb"]["ctm"].as_str().expect("ctm").to_owned();
    assert!(t2 > t1, "sampled at each RETRIEVE: {t1} then {t2}");
    assert_eq!(b["m2m:cb"].as_object().unwrap().len(), 1, "{b}");
    assert_eq!(&t1[..4], &chrono::Utc::now().format("%Y").to_string()[..]);
}

#[test]
fn a_content_instance_is_deleted_after_its_deletion_count_of_retrievals() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Cdcnt", "dcnt", &[]);
    create_cnt(u, "/cse-in/dcnt", &ae, json!({ "rn": "box" }));
    let rx = Receiver::start();
    let (rsc, b) = create(
        u,
        "/cse-in/dcnt/box",
        &ae,
        23,
        json!({ "m2m:sub": { "rn": "watch", "nu": [rx.url()], "enc": { "net": [4] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    for (dcnt, what) in [
        (json!(0), "zero"),
        (json!(-1), "negative"),
        (json!("3"), "text"),
    ] {
        let (rsc, b) = create(
            u,
            "/cse-in/dcnt/box",
            &ae,
            4,
            json!({ "m2m:cin": { "con": "x", "dcnt": dcnt } }),
        );
        assert_eq!(rsc, 4000, "dcnt {what}: {b}");
    }
    let dgt = "20261201T120000";
    let (rsc, b) = create(
        u,
        "/cse-in/dcnt/box",
        &ae,
        4,
        json!({ "m2m:cin": { "rn": "once", "con": "secret", "dcnt": 3, "dgt": dgt } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        (&b["m2m:cin"]["dcnt"], &b["m2m:cin"]["dgt"]),
        (&json!(3), &json!(dgt))
    );
    // Each retrieval shows the count before it: 3, 2 (through la), 1; then the instance is gone.
    let (rsc, b) = retrieve(u, "/cse-in/dcnt/box/once", &ae);
    assert_eq!((rsc, &b["m2m:cin"]["dcnt"]), (2000, &json!(3)), "{b}");
    let (rsc, b) = retrieve(u, "/cse-in/dcnt/box/la", &ae);
    assert_eq!((rsc, &b["m2m:cin"]["dcnt"]), (2000, &json!(2)), "{b}");
    // A retrieval that is refused does not count.
    let other = register_ae(u, "/cse-in", "Cother", "other", &[]);
    let (rsc, _) = retrieve(u, "/cse-in/dcnt/box/once", &other);
    assert_eq!(rsc, 4103);
    // A listing of the container shows the instance without its content, and takes nothing.
    let (rsc, b) = get_with_query(u, "/cse-in/dcnt/box", &ae, "rcn=4");
    assert_eq!(rsc, 2000, "{b}");
    let listed = b["m2m:cnt"]["m2m:cin"][0].clone();
    assert_eq!(
        (&listed["rn"], &listed["dcnt"]),
        (&json!("once"), &json!(1)),
        "{b}"
    );
    assert!(listed.get("con").is_none(), "the content stays unread: {b}");
    let (rsc, b) = get_with_query(u, "/cse-in/dcnt/box/once", &ae, "rcn=4");
    assert_eq!(
        (rsc, &b["m2m:cin"]["dcnt"]),
        (2000, &json!(1)),
        "a child listing counts too: {b}"
    );
    let (rsc, _) = retrieve(u, "/cse-in/dcnt/box/once", &ae);
    assert_eq!(rsc, 4004, "deleted after its third retrieval");
    // Its deletion is a deletion like any other: the container counts it and subscribers hear.
    let (_, b) = retrieve(u, "/cse-in/dcnt/box", &ae);
    assert_eq!(b["m2m:cnt"]["cni"], json!(0), "{b}");
    rx.wait_for(|r| r.net() == Some(4), WAIT);
    // Concurrent readers take one retrieval each: of 8 readers of a count of 5, 5 succeed.
    let (rsc, b) = create(
        u,
        "/cse-in/dcnt/box",
        &ae,
        4,
        json!({ "m2m:cin": { "rn": "five", "con": "x", "dcnt": 5 } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (u, ae) = (u.to_owned(), ae.clone());
            std::thread::spawn(move || retrieve(&u, "/cse-in/dcnt/box/five", &ae))
        })
        .collect();
    let mut shown: Vec<u64> = readers
        .into_iter()
        .map(|t| t.join().expect("reader"))
        .filter(|(rsc, _)| *rsc == 2000)
        .map(|(_, b)| b["m2m:cin"]["dcnt"].as_u64().expect("dcnt"))
        .collect();
    shown.sort_unstable();
    assert_eq!(shown.len(), 5, "{shown:?}");
}

/// A child expires with its parent at the latest (TS-0004 clauses 7.3.3.3, 7.3.3.4).
#[test]
fn a_child_never_outlives_its_parent() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Cexp", "exp", &[]);
    let at = |hours: i64| {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("+{hours} hours"), "+%Y%m%dT%H%M%S"])
            .output()
            .expect("date");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let (in_one, in_two, in_three) = (at(1), at(2), at(3));
    let (rsc, b) = create(
        u,
        "/cse-in/exp",
        &ae,
        3,
        json!({ "m2m:cnt": { "rn": "c", "et": in_one } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let parent_et = b["m2m:cnt"]["et"].clone();
    // Asked later, or left to the default (ten years here): the parent's.
    let (rsc, b) = create(
        u,
        "/cse-in/exp/c",
        &ae,
        4,
        json!({ "m2m:cin": { "con": "x", "et": in_two } }),
    );
    assert_eq!((rsc, &b["m2m:cin"]["et"]), (2001, &parent_et), "{b}");
    let (rsc, b) = create(
        u,
        "/cse-in/exp/c",
        &ae,
        3,
        json!({ "m2m:cnt": { "rn": "inner" } }),
    );
    assert_eq!((rsc, &b["m2m:cnt"]["et"]), (2001, &parent_et), "{b}");
    // The parent cannot then expire before them; later, it can.
    let in_half = {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", "+30 minutes", "+%Y%m%dT%H%M%S"])
            .output()
            .expect("date");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let (rsc, b) = update(
        u,
        "/cse-in/exp/c",
        &ae,
        json!({ "m2m:cnt": { "et": in_half } }),
    );
    assert_eq!(rsc, 4000, "a child expires later: {b}");
    let (rsc, b) = update(
        u,
        "/cse-in/exp/c",
        &ae,
        json!({ "m2m:cnt": { "et": in_three } }),
    );
    assert_eq!(rsc, 2004, "later is fine: {b}");
    // Without children that outlive it, earlier is fine too.
    let (rsc, _) = delete(u, "/cse-in/exp/c/inner", &ae);
    assert_eq!(rsc, 2002);
    let (rsc, _) = delete(u, "/cse-in/exp/c/la", &ae);
    assert_eq!(rsc, 2002);
    let (rsc, b) = update(
        u,
        "/cse-in/exp/c",
        &ae,
        json!({ "m2m:cnt": { "et": in_half } }),
    );
    assert_eq!(rsc, 2004, "{b}");
}

/// An expirationTime beyond the CSE's maximum (`limits.max_expiration_secs`) is brought back to
/// it at CREATE and at UPDATE, and the answer shows the value set (TS-0001 clause 10.1.1.1 c);
/// an earlier one is kept as asked.
#[test]
fn an_expiration_time_beyond_the_maximum_is_brought_back() {
    let cse = CseProcess::start_temp("[limits]\nmax_expiration_secs = 3600\n");
    let u = cse.url();
    let latest = || chrono::Utc::now() + chrono::Duration::seconds(3600);
    let et_of = |b: &Value| {
        let et = b["m2m:cnt"]["et"].as_str().expect("et").to_owned();
        chrono::NaiveDateTime::parse_from_str(&et, "%Y%m%dT%H%M%S")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(&et, "%Y%m%dT%H%M%S,%f"))
            .expect("m2m:timestamp")
            .and_utc()
    };
    let (rsc, b) = create(
        u,
        "/cse-in",
        ADMIN,
        3,
        json!({ "m2m:cnt": { "rn": "far", "et": "88881231T235959" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert!(et_of(&b) <= latest(), "{b}");
    // The default (10 years) is bounded as well.
    let (rsc, b) = create(
        u,
        "/cse-in",
        ADMIN,
        3,
        json!({ "m2m:cnt": { "rn": "dflt" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert!(et_of(&b) <= latest(), "{b}");
    let (rsc, b) = update(
        u,
        "/cse-in/far",
        ADMIN,
        json!({ "m2m:cnt": { "et": "99991231T235959" } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert!(et_of(&b) <= latest(), "{b}");
    let (_, stored) = retrieve(u, "/cse-in/far", ADMIN);
    assert!(et_of(&stored) <= latest(), "{stored}");
    let soon = chrono::Utc::now() + chrono::Duration::seconds(600);
    let asked = soon.format("%Y%m%dT%H%M%S").to_string();
    let (rsc, b) = update(
        u,
        "/cse-in/far",
        ADMIN,
        json!({ "m2m:cnt": { "et": asked } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert!(
        (et_of(&b) - soon).num_seconds().abs() <= 1,
        "kept as asked: {b}"
    );
}

/// SIGTERM (what systemd, Docker and Kubernetes send to stop a service) shuts the CSE down
/// gracefully, as Ctrl-C does: it says so and exits 0; what it stored is there at the next start.
#[test]
fn sigterm_stops_the_cse_gracefully() {
    let mut cse = CseProcess::start_in();
    let ae = register_ae(cse.url(), "/cse-in", "Ckept", "kept", &[]);
    let status = cse
        .terminate()
        .expect("the CSE ended within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}\n{}", cse.stderr());
    assert!(cse.logged("shutting down"), "{}", cse.stderr());
    let cse = cse.restart();
    assert_eq!(retrieve(cse.url(), "/cse-in/kept", &ae).0, 2000);
}
