//! `<flexContainer>` on a real `m2m cse` over HTTP (TS-0004 clause 7.4.37): specializations
//! represented under their own names, their custom attributes checked, contentSize and stateTag
//! kept, subscriptions and discovery as for any resource, and specializations added by the
//! operator's definition files.

mod common;

use common::*;
use serde_json::{json, Value};

const LOCK_CND: &str = "org.onem2m.common.moduleclass.lock";

fn setup() -> (CseProcess, String) {
    let cse = CseProcess::start_in();
    let ae = register_ae(cse.url(), "/cse-in", "Cflex", "app", &[]);
    (cse, ae)
}

fn create_flex(cse: &CseProcess, ae: &str, parent: &str, body: Value) -> (u16, Value) {
    create(cse.url(), parent, ae, 28, body)
}

#[test]
fn a_lock_module_class_lives_as_a_flex_container() {
    let (cse, ae) = setup();
    let (rsc, b) = create_flex(
        &cse,
        &ae,
        "/cse-in/app",
        json!({ "cod:lock": { "rn": "front", "cnd": LOCK_CND, "lock": true } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let f = &b["cod:lock"];
    assert_eq!(
        (f["ty"].clone(), f["st"].clone(), f["cs"].clone()),
        (json!(28), json!(0), json!(4)),
        "{b}"
    );
    let (rsc, b) = retrieve(cse.url(), "/cse-in/app/front", &ae);
    assert_eq!(rsc, 2000);
    assert_eq!(
        b["cod:lock"]["lock"],
        json!(true),
        "represented under its specialization: {b}"
    );
    // A subscriber hears updates under the same name.
    let rx = Receiver::start();
    let (rsc, _) = create(
        cse.url(),
        "/cse-in/app/front",
        &ae,
        23,
        json!({ "m2m:sub": { "nu": [rx.url()], "nct": 2 } }),
    );
    assert_eq!(rsc, 2001);
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/app/front",
        &ae,
        json!({ "cod:lock": { "lock": false } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(
        (b["cod:lock"]["st"].clone(), b["cod:lock"]["cs"].clone()),
        (json!(1), json!(5)),
        "{b}"
    );
    let n = rx.wait_for(|r| r.net() == Some(1), WAIT);
    assert_eq!(
        n.rep(),
        &json!({ "cod:lock": { "lock": false } }),
        "{:?}",
        n.body
    );
    // Children: containers and other flexContainers; discovery by type; others see nothing.
    create_cnt(cse.url(), "/cse-in/app/front", &ae, json!({ "rn": "log" }));
    let (rsc, b) = create_flex(
        &cse,
        &ae,
        "/cse-in/app/front",
        json!({ "cod:bat": { "rn": "battery", "cnd": "org.onem2m.common.moduleclass.battery", "lvl": 87 } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (_, b) = get_with_query(cse.url(), "/cse-in/app", &ae, "fu=1&ty=28");
    assert_eq!(b["m2m:uril"].as_array().map(Vec::len), Some(2), "{b}");
    let (_, b) = get_with_query(cse.url(), "/cse-in/app/front", &ae, "rcn=4");
    assert_eq!(
        b["cod:lock"]["cod:bat"][0]["lvl"],
        json!(87),
        "children under their names: {b}"
    );
    let other = register_ae(cse.url(), "/cse-in", "Cother", "other", &[]);
    let (rsc, _) = retrieve(cse.url(), "/cse-in/app/front", &other);
    assert_eq!(rsc, 4103);
}

#[test]
fn specializations_and_their_attributes_are_checked() {
    let (cse, ae) = setup();
    let bad = |body: Value, want: u16, what: &str| {
        let (rsc, b) = create_flex(&cse, &ae, "/cse-in/app", body);
        assert_eq!(rsc, want, "{what}: {b}");
    };
    bad(
        json!({ "cod:unknown": { "cnd": "org.example.unknown" } }),
        4125,
        "unknown specialization",
    );
    bad(
        json!({ "wrong": { "cnd": LOCK_CND, "lock": true } }),
        4000,
        "not domain:name",
    );
    bad(
        json!({ "cod:lock": { "cnd": "org.onem2m.common.moduleclass.battery", "lock": true } }),
        4000,
        "another cnd",
    );
    bad(json!({ "cod:lock": { "lock": true } }), 4000, "no cnd");
    bad(
        json!({ "cod:lock": { "cnd": LOCK_CND } }),
        4000,
        "mandatory lock missing",
    );
    bad(
        json!({ "cod:lock": { "cnd": LOCK_CND, "lock": "yes" } }),
        4000,
        "lock not a boolean",
    );
    bad(
        json!({ "cod:lock": { "cnd": LOCK_CND, "lock": true, "colour": "red" } }),
        4000,
        "unknown attribute",
    );
    bad(
        json!({ "cod:lock": { "cnd": LOCK_CND, "lock": true, "cs": 3 } }),
        4000,
        "cs is the CSE's",
    );
    bad(
        json!({ "cod:lock": { "cnd": LOCK_CND, "lock": true }, "m2m:cnt": {} }),
        4000,
        "two roots",
    );
    let (rsc, _) = create_flex(
        &cse,
        &ae,
        "/cse-in/app",
        json!({ "cod:lock": { "rn": "l", "cnd": LOCK_CND, "lock": true } }),
    );
    assert_eq!(rsc, 2001);
    let upd = |body: Value| update(cse.url(), "/cse-in/app/l", &ae, body).0;
    assert_eq!(
        upd(json!({ "cod:lock": { "cnd": LOCK_CND } })),
        4000,
        "cnd cannot change"
    );
    assert_eq!(
        upd(json!({ "cod:binSh": { "state": true } })),
        4000,
        "another specialization"
    );
    assert_eq!(
        upd(json!({ "cod:lock": { "lock": null } })),
        4000,
        "a mandatory attribute stays"
    );
    assert_eq!(
        upd(json!({ "cod:lock": { "lock": 1 } })),
        4000,
        "not a boolean"
    );
    assert_eq!(
        upd(json!({ "cod:lock": { "lbl": ["door"] } })),
        2004,
        "a common attribute"
    );
    create_cnt(cse.url(), "/cse-in/app", &ae, json!({ "rn": "c" }));
    let cin = create_cin(cse.url(), "/cse-in/app/c", &ae, "x");
    let (rsc, _) = create_flex(
        &cse,
        &ae,
        &format!("/{cin}"),
        json!({ "cod:lock": { "cnd": LOCK_CND, "lock": true } }),
    );
    assert!(rsc == 4108 || rsc == 4004, "not under an instance: {rsc}");
}

#[test]
fn an_operator_adds_specializations_by_definition_file() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("valves.json");
    std::fs::write(
        &defs,
        r#"[{ "key": "acme:valve", "cnd": "com.example.moduleclass.valve",
              "attributes": [{ "name": "open", "type": "boolean", "mandatory": true },
                             { "name": "flow", "type": "float" }] }]"#,
    )
    .unwrap();
    let cse = CseProcess::start_temp(&format!(
        "[flex_container]\nspecializations = [{:?}]\n",
        defs.display().to_string()
    ));
    let ae = register_ae(cse.url(), "/cse-in", "Cvalve", "v", &[]);
    let (rsc, b) = create_flex(
        &cse,
        &ae,
        "/cse-in/v",
        json!({ "acme:valve": { "rn": "main", "cnd": "com.example.moduleclass.valve", "open": false, "flow": 0.5 } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["acme:valve"]["cs"], json!(8), "false + 0.5: {b}");
    let (rsc, _) = create_flex(
        &cse,
        &ae,
        "/cse-in/v",
        json!({ "acme:valve": { "cnd": "com.example.moduleclass.valve", "open": false, "flow": "fast" } }),
    );
    assert_eq!(rsc, 4000);
}
