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
        json!({ "cod:lock": { "cnd": LOCK_CND, "lock": null } }),
        4000,
        "a null data point",
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
        4102,
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
    // TS-0004 table 7.4.37.1-2: a custom attribute is optional at CREATE (a lock whose state is
    // not known yet); the first UPDATE gives it, and it stays.
    let (rsc, b) = create_flex(
        &cse,
        &ae,
        "/cse-in/app",
        json!({ "cod:lock": { "rn": "unknown", "cnd": LOCK_CND } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert!(
        b["cod:lock"].get("lock").is_none(),
        "no value invented: {b}"
    );
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/app/unknown",
        &ae,
        json!({ "cod:lock": { "lock": true } }),
    );
    assert_eq!((rsc, &b["cod:lock"]["lock"]), (2004, &json!(true)), "{b}");
    let (rsc, _) = update(
        cse.url(),
        "/cse-in/app/unknown",
        &ae,
        json!({ "cod:lock": { "lock": null } }),
    );
    assert_eq!(rsc, 4000, "given, it stays");
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
              "attributes": [{ "name": "open", "type": "boolean", "mandatory": true, "create": "M" },
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
    let (rsc, _) = create_flex(
        &cse,
        &ae,
        "/cse-in/v",
        json!({ "acme:valve": { "cnd": "com.example.moduleclass.valve", "flow": 0.5 } }),
    );
    assert_eq!(rsc, 4000, "the definition makes 'open' mandatory at CREATE");
}

/// `cod:lock` content with the instance settings `extra`.
fn lock(rn: &str, locked: bool, extra: Value) -> Value {
    let mut attrs = json!({ "rn": rn, "cnd": LOCK_CND, "lock": locked });
    for (k, v) in extra.as_object().expect("object") {
        attrs[k] = v.clone();
    }
    json!({ "cod:lock": attrs })
}

fn counters(cse: &CseProcess, ae: &str, path: &str) -> (Value, Value, Value) {
    let (rsc, b) = retrieve(cse.url(), path, ae);
    assert_eq!(rsc, 2000, "{b}");
    let f = &b["cod:lock"];
    (f["cni"].clone(), f["cbs"].clone(), f["st"].clone())
}

#[test]
fn flex_container_instances_record_its_states() {
    let (cse, ae) = setup();
    let u = cse.url().to_owned();
    // Limits need fcied; 0 is no limit; mbs cannot be below the content size.
    for (extra, what) in [
        (json!({"mni": 3}), "mni without fcied"),
        (json!({"mbs": 100}), "mbs without fcied"),
        (json!({"mia": 60}), "mia without fcied"),
        (json!({"fcied": true, "mni": 0}), "mni 0"),
        (json!({"fcied": true, "mbs": 0}), "mbs 0"),
        (json!({"fcied": true, "mia": 0}), "mia 0"),
        (json!({"fcied": true, "mbs": 3}), "mbs below cs (4)"),
        (json!({"fcied": "yes"}), "fcied not a boolean"),
        (json!({"fcied": true, "cni": 5}), "cni is the CSE's"),
    ] {
        let (rsc, b) = create_flex(&cse, &ae, "/cse-in/app", lock("door", true, extra));
        assert_eq!(rsc, 4000, "{what}: {b}");
    }
    // Without fcied there are no records, counters or la.
    let (rsc, b) = create_flex(&cse, &ae, "/cse-in/app", lock("plain", true, json!({})));
    assert_eq!(rsc, 2001, "{b}");
    assert!(b["cod:lock"].get("cni").is_none(), "{b}");
    let (rsc, _) = retrieve(&u, "/cse-in/app/plain/la", &ae);
    assert_eq!(rsc, 4004);

    let (rsc, b) = create_flex(
        &cse,
        &ae,
        "/cse-in/app",
        lock("door", true, json!({"fcied": true, "mni": 3})),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        (&b["cod:lock"]["cni"], &b["cod:lock"]["cbs"]),
        (&json!(1), &json!(4)),
        "{b}"
    );
    // The first record: the state at creation, under the specialization's name.
    let (rsc, la) = retrieve(&u, "/cse-in/app/door/la", &ae);
    assert_eq!(rsc, 2000, "{la}");
    let rec = &la["cod:lock"];
    assert_eq!(
        (
            &rec["ty"],
            &rec["rn"],
            &rec["lock"],
            &rec["st"],
            &rec["org"],
            &rec["cs"]
        ),
        (
            &json!(58),
            &json!("door_0"),
            &json!(true),
            &json!(0),
            &json!(ae),
            &json!(4)
        ),
        "{la}"
    );
    // A change of a custom attribute, a label or a location is recorded; other changes are not.
    let (rsc, b) = update(
        &u,
        "/cse-in/app/door",
        &ae,
        json!({"cod:lock": {"lock": false}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(
        counters(&cse, &ae, "/cse-in/app/door"),
        (json!(2), json!(9), json!(1))
    );
    let (_, la) = retrieve(&u, "/cse-in/app/door/la", &ae);
    assert_eq!(
        (&la["cod:lock"]["lock"], &la["cod:lock"]["rn"]),
        (&json!(false), &json!("door_1"))
    );
    let (_, ol) = retrieve(&u, "/cse-in/app/door/ol", &ae);
    assert_eq!(ol["cod:lock"]["lock"], json!(true));
    update(
        &u,
        "/cse-in/app/door",
        &ae,
        json!({"cod:lock": {"lbl": ["front"]}}),
    );
    update(&u, "/cse-in/app/door", &ae, json!({"cod:lock": {"mni": 3}}));
    update(&u, "/cse-in/app/door", &ae, json!({"cod:lock": {}}));
    assert_eq!(
        counters(&cse, &ae, "/cse-in/app/door"),
        (json!(3), json!(14), json!(4))
    );
    // mni 3: a fourth record pushes the oldest out (lock true: 4 bytes, false: 5).
    update(
        &u,
        "/cse-in/app/door",
        &ae,
        json!({"cod:lock": {"lock": true}}),
    );
    assert_eq!(
        counters(&cse, &ae, "/cse-in/app/door"),
        (json!(3), json!(14), json!(5))
    );
    let (_, ol) = retrieve(&u, "/cse-in/app/door/ol", &ae);
    assert_eq!(ol["cod:lock"]["rn"], json!("door_1"), "door_0 went: {ol}");
    // Lowering mni trims; mbs below cs is refused on UPDATE too.
    let (rsc, b) = update(&u, "/cse-in/app/door", &ae, json!({"cod:lock": {"mni": 1}}));
    assert_eq!((rsc, &b["cod:lock"]["cni"]), (2004, &json!(1)), "{b}");
    let (rsc, b) = update(&u, "/cse-in/app/door", &ae, json!({"cod:lock": {"mbs": 3}}));
    assert_eq!(rsc, 4000, "{b}");

    // Records are the CSE's: not created, not updated by a request; deleting one is counted.
    let (rsc, b) = create(
        &u,
        "/cse-in/app/door",
        &ae,
        58,
        json!({"cod:lock": {"lock": true}}),
    );
    assert_eq!(rsc, 4005, "{b}");
    let (_, la) = retrieve(&u, "/cse-in/app/door/la", &ae);
    let latest = format!(
        "/cse-in/app/door/{}",
        la["cod:lock"]["rn"].as_str().expect("rn")
    );
    let (rsc, b) = update(&u, &latest, &ae, json!({"cod:lock": {"lock": false}}));
    assert_eq!(rsc, 4005, "{b}");
    // Another AE reads no records it may not read the flexContainer for.
    let other = register_ae(&u, "/cse-in", "Cother", "other", &[]);
    let (rsc, _) = retrieve(&u, &latest, &other);
    assert_eq!(rsc, 4103);
    let (rsc, _) = retrieve(&u, "/cse-in/app/door/la", &other);
    assert_eq!(rsc, 4103);

    // fcied false keeps the latest record and makes no more.
    update(&u, "/cse-in/app/door", &ae, json!({"cod:lock": {"mni": 5}}));
    update(
        &u,
        "/cse-in/app/door",
        &ae,
        json!({"cod:lock": {"lock": false}}),
    );
    let (rsc, b) = update(
        &u,
        "/cse-in/app/door",
        &ae,
        json!({"cod:lock": {"fcied": false}}),
    );
    assert_eq!((rsc, &b["cod:lock"]["cni"]), (2004, &json!(1)), "{b}");
    update(
        &u,
        "/cse-in/app/door",
        &ae,
        json!({"cod:lock": {"lock": true}}),
    );
    let (cni, _, _) = counters(&cse, &ae, "/cse-in/app/door");
    assert_eq!(cni, json!(1));
    let (_, la) = retrieve(&u, "/cse-in/app/door/la", &ae);
    assert_eq!(
        la["cod:lock"]["lock"],
        json!(false),
        "no record of the change: {la}"
    );
    // fcied true again records the state afresh.
    let (rsc, b) = update(
        &u,
        "/cse-in/app/door",
        &ae,
        json!({"cod:lock": {"fcied": true}}),
    );
    assert_eq!((rsc, &b["cod:lock"]["cni"]), (2004, &json!(1)), "{b}");
    let (_, la) = retrieve(&u, "/cse-in/app/door/la", &ae);
    assert_eq!(la["cod:lock"]["lock"], json!(true), "{la}");
    // Removing fcied removes the records, counters and limits; limits alone are then refused.
    let (rsc, b) = update(
        &u,
        "/cse-in/app/door",
        &ae,
        json!({"cod:lock": {"fcied": null}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    for k in ["cni", "cbs", "mni", "mbs", "mia"] {
        assert!(b["cod:lock"].get(k).is_none(), "{k} in {b}");
    }
    assert_eq!(retrieve(&u, "/cse-in/app/door/la", &ae).0, 4004);
    let (rsc, b) = update(&u, "/cse-in/app/door", &ae, json!({"cod:lock": {"mni": 3}}));
    assert_eq!(rsc, 4000, "{b}");

    // A child named as the next record would be does not keep the state from being recorded.
    let (rsc, b) = create_flex(
        &cse,
        &ae,
        "/cse-in/app",
        lock("gate", true, json!({"fcied": true})),
    );
    assert_eq!(rsc, 2001, "{b}");
    create_cnt(&u, "/cse-in/app/gate", &ae, json!({"rn": "gate_1"}));
    let (rsc, b) = update(
        &u,
        "/cse-in/app/gate",
        &ae,
        json!({"cod:lock": {"lock": false}}),
    );
    assert_eq!((rsc, &b["cod:lock"]["cni"]), (2004, &json!(2)), "{b}");
    let (_, la) = retrieve(&u, "/cse-in/app/gate/la", &ae);
    assert_eq!(la["cod:lock"]["lock"], json!(false), "{la}");
    // A record is found by its type and deleted like a contentInstance; the count follows.
    let (_, b) = get_with_query(&u, "/cse-in/app/gate", &ae, "fu=1&ty=58");
    let records = b["m2m:uril"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 2, "{b}");
    let record = format!("/{}", records[0].as_str().unwrap_or_default());
    assert_eq!(delete(&u, &record, &ae).0, 2002, "{record}");
    assert_eq!(retrieve(&u, &record, &ae).0, 4004);
    let (_, b) = retrieve(&u, "/cse-in/app/gate", &ae);
    assert_eq!(b["cod:lock"]["cni"], json!(1), "{b}");
    // An age beyond any timestamp limits nothing (and breaks nothing).
    let (rsc, b) = create_flex(
        &cse,
        &ae,
        "/cse-in/app",
        lock("ages", true, json!({"fcied": true, "mia": u64::MAX})),
    );
    assert_eq!((rsc, &b["cod:lock"]["cni"]), (2001, &json!(1)), "{b}");

    // mia: records expire, and the counters follow.
    let (rsc, b) = create_flex(
        &cse,
        &ae,
        "/cse-in/app",
        lock("brief", true, json!({"fcied": true, "mia": 1})),
    );
    assert_eq!(rsc, 2001, "{b}");
    let emptied = poll(WAIT, || {
        let (cni, cbs, _) = counters(&cse, &ae, "/cse-in/app/brief");
        (cni == json!(0) && cbs == json!(0)).then_some(())
    });
    assert!(emptied.is_some(), "the record outlived maxInstanceAge");
}

/// The generic interworking specializations (TS-0004 Annex J, `m2m:gis`/`m2m:gio`) have no
/// containerDefinition of their own: any is accepted, and the CSE keeps the specialization with
/// the resource, so each is represented under its own name whatever cnd it carries, after a
/// restart too, and cannot be updated as another.
#[test]
fn generic_interworking_flex_containers_keep_their_specialization() {
    let (cse, ae) = setup();
    for (body, why) in [
        (
            json!({ "m2m:gis": { "cnd": "anyCND" } }),
            "gisn is mandatory",
        ),
        (
            json!({ "m2m:gis": { "cnd": "anyCND", "gisn": "s", "wrong": 1 } }),
            "an attribute the specialization lacks",
        ),
        (json!({ "m2m:gis": { "gisn": "s" } }), "cnd stays mandatory"),
        (
            json!({ "m2m:gis": { "cnd": "anyCND", "gisn": 7 } }),
            "gisn is a string",
        ),
    ] {
        let (rsc, b) = create_flex(&cse, &ae, "/cse-in/app", body);
        assert_eq!(rsc, 4000, "{why}: {b}");
    }
    let (rsc, b) = create_flex(
        &cse,
        &ae,
        "/cse-in/app",
        json!({ "m2m:gis": { "rn": "gis", "cnd": "sharedCND", "gisn": "heating" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:gis"]["gisn"], json!("heating"), "{b}");
    // The same cnd on an operation instance: still a gio.
    let (rsc, b) = create_flex(
        &cse,
        &ae,
        "/cse-in/app/gis",
        json!({ "m2m:gio": { "rn": "op", "cnd": "sharedCND", "gion": "start",
                              "giip": ["a", "b"], "gios": "idle" } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:gio"]["giip"], json!(["a", "b"]), "{b}");
    // A lock keeps its own cnd, and a generic flexContainer cannot take it (it would pass for
    // a lock in a discovery by cnd).
    let (rsc, b) = create_flex(
        &cse,
        &ae,
        "/cse-in/app",
        json!({ "cod:lock": { "rn": "l", "cnd": "sharedCND", "lock": true } }),
    );
    assert_eq!(rsc, 4000, "a lock's cnd is its own: {b}");
    let (rsc, b) = create_flex(
        &cse,
        &ae,
        "/cse-in/app",
        json!({ "m2m:gis": { "rn": "fake", "cnd": LOCK_CND, "gisn": "x" } }),
    );
    assert_eq!(rsc, 4000, "a gis with a lock's cnd: {b}");
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/app/gis/op",
        &ae,
        json!({ "m2m:gis": { "gisn": "x" } }),
    );
    assert_eq!(
        rsc, 4102,
        "a gio is not updated as a gis (CONTENTS_UNACCEPTABLE): {b}"
    );
    let (rsc, b) = update(
        cse.url(),
        "/cse-in/app/gis/op",
        &ae,
        json!({ "m2m:gio": { "gios": "running" } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(b["m2m:gio"]["gios"], json!("running"), "{b}");
    let cse = cse.restart();
    let (rsc, b) = retrieve(cse.url(), "/cse-in/app/gis/op", &ae);
    assert_eq!(rsc, 2000);
    assert_eq!(
        (b["m2m:gio"]["gion"].clone(), b["m2m:gio"]["cnd"].clone()),
        (json!("start"), json!("sharedCND")),
        "{b}"
    );
    let (rsc, b) = get_with_query(cse.url(), "/cse-in/app", &ae, "rcn=4");
    assert_eq!(rsc, 2000);
    assert_eq!(
        b["m2m:ae"]["m2m:gis"][0]["m2m:gio"][0]["rn"],
        json!("op"),
        "{b}"
    );
    let (rsc, b) = delete(cse.url(), "/cse-in/app/gis", &ae);
    assert_eq!(rsc, 2002, "{b}");
}
