//! <group> and its <fanOutPoint> on a real `m2m cse` (TS-0001 clause 10.2.7, TS-0004 clause 7.4.13).

mod common;

use common::*;
use serde_json::{json, Value};

/// A CSE with AE `app` and containers c1 and c2.
fn setup() -> (CseProcess, String) {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Cgrp", "app", &[]);
    create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "c1" }));
    create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "c2" }));
    (cse, ae)
}

fn create_group(u: &str, ae: &str, grp: Value) -> Resp {
    create_full(u, "/cse-in/app", ae, 9, json!({ "m2m:grp": grp }))
}

/// The member responses of an `m2m:agr`.
fn rsps(b: &Value) -> Vec<Value> {
    b["m2m:agr"]["m2m:rsp"]
        .as_array()
        .unwrap_or_else(|| panic!("no m2m:agr/m2m:rsp in {b}"))
        .clone()
}

#[test]
fn fan_out_retrieve_and_create() {
    let (cse, ae) = setup();
    let u = cse.url();
    let r = create_group(
        u,
        &ae,
        json!({ "rn": "g", "mt": 3, "mnm": 10, "mid": ["cse-in/app/c1", "cse-in/app/c2"] }),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let g = &r.body["m2m:grp"];
    assert_eq!(g["cnm"], json!(2), "{g}");
    assert_eq!(g["mtv"], json!(true), "memberTypeValidated: {g}");

    // RETRIEVE through the fanOutPoint: one response per member.
    let (rsc, b) = retrieve(u, "/cse-in/app/g/fopt", &ae);
    assert_eq!(rsc, 2000, "{b}");
    let list = rsps(&b);
    assert_eq!(list.len(), 2, "{b}");
    let mut rns: Vec<&str> = list
        .iter()
        .map(|r| {
            assert_eq!(r["rsc"], json!(2000), "member answer: {r}");
            r["pc"]["m2m:cnt"]["rn"].as_str().unwrap_or("?")
        })
        .collect();
    rns.sort();
    assert_eq!(rns, vec!["c1", "c2"], "{b}");
    // CREATE through the fanOutPoint: a contentInstance in each member.
    let (rsc, b) = create(
        u,
        "/cse-in/app/g/fopt",
        &ae,
        4,
        json!({ "m2m:cin": { "con": "both" } }),
    );
    assert_eq!(rsc, 2000, "the aggregated answer of a fan-out: {b}");
    let list = rsps(&b);
    assert_eq!(list.len(), 2, "{b}");
    assert!(
        list.iter().all(|r| r["rsc"] == json!(2001)),
        "every member created its instance: {b}"
    );
    for c in ["c1", "c2"] {
        let (_, b) = retrieve(u, &format!("/cse-in/app/{c}"), &ae);
        assert_eq!(b["m2m:cnt"]["cni"], json!(1), "{c}: {b}");
    }

    // fopt with a path below the members: the latest instance of each.
    let (rsc, b) = retrieve(u, "/cse-in/app/g/fopt/la", &ae);
    assert_eq!(rsc, 2000, "{b}");
    let list = rsps(&b);
    assert_eq!(list.len(), 2, "{b}");
    for r in &list {
        assert_eq!(r["rsc"], json!(2000), "{r}");
        assert_eq!(r["pc"]["m2m:cin"]["con"], json!("both"), "{r}");
    }

    // UPDATE through the fanOutPoint.
    let r = request(
        "PUT",
        u,
        "/cse-in/app/g/fopt",
        Some(&ae),
        None,
        Some(&json!({ "m2m:cnt": { "lbl": ["grouped"] } })),
    );
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    assert!(
        rsps(&r.body).iter().all(|x| x["rsc"] == json!(2004)),
        "{:?}",
        r.body
    );
    let (_, b) = retrieve(u, "/cse-in/app/c2", &ae);
    assert_eq!(b["m2m:cnt"]["lbl"], json!(["grouped"]), "{b}");
}

#[test]
fn members_that_do_not_exist_or_have_the_wrong_type() {
    let (cse, ae) = setup();
    let u = cse.url();
    // A member that does not exist is dropped.
    let r = create_group(
        u,
        &ae,
        json!({ "rn": "g1", "mt": 3, "mnm": 10, "mid": ["cse-in/app/c1", "cse-in/app/nothing"] }),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert_eq!(r.body["m2m:grp"]["cnm"], json!(1), "{:?}", r.body);
    assert_eq!(
        r.body["m2m:grp"]["mid"],
        json!(["cse-in/app/c1"]),
        "{:?}",
        r.body
    );

    // A member of the wrong type, consistencyStrategy default (ABANDON_MEMBER): dropped.
    let r = create_group(
        u,
        &ae,
        json!({ "rn": "g2", "mt": 3, "mnm": 10, "mid": ["cse-in/app/c1", "cse-in/app"] }),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert_eq!(r.body["m2m:grp"]["cnm"], json!(1), "{:?}", r.body);

    // csy=2 (ABANDON_GROUP): the group is refused.
    let r = create_group(
        u,
        &ae,
        json!({ "rn": "g3", "mt": 3, "mnm": 10, "csy": 2, "mid": ["cse-in/app/c1", "cse-in/app"] }),
    );
    assert_eq!(r.rsc, 4110, "{:?}", r.body);
    assert!(r.dbg().is_some_and(|d| !d.is_empty()), "{:?}", r.body);
    let (rsc, _) = retrieve(u, "/cse-in/app/g3", &ae);
    assert_eq!(rsc, 4004, "no group was created");

    // csy=3 (SET_MIXED): both members kept, memberType becomes mixed.
    let r = create_group(
        u,
        &ae,
        json!({ "rn": "g4", "mt": 3, "mnm": 10, "csy": 3, "mid": ["cse-in/app/c1", "cse-in/app"] }),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert_eq!(r.body["m2m:grp"]["cnm"], json!(2), "{:?}", r.body);
    assert_eq!(r.body["m2m:grp"]["mt"], json!(0), "{:?}", r.body);

    // maxNrOfMembers exceeded.
    let r = create_group(
        u,
        &ae,
        json!({ "rn": "g5", "mt": 3, "mnm": 1, "mid": ["cse-in/app/c1", "cse-in/app/c2"] }),
    );
    assert_eq!(r.rsc, 6010, "{:?}", r.body);
    assert!(r.dbg().is_some_and(|d| !d.is_empty()), "{:?}", r.body);

    // Members given by resourceID.
    let (_, b) = retrieve(u, "/cse-in/app/c2", &ae);
    let c2 = b["m2m:cnt"]["ri"].as_str().expect("ri").to_owned();
    let r = create_group(
        u,
        &ae,
        json!({ "rn": "g6", "mt": 3, "mnm": 10, "mid": [c2] }),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let (rsc, b) = retrieve(u, "/cse-in/app/g6/fopt", &ae);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(rsps(&b)[0]["pc"]["m2m:cnt"]["rn"], json!("c2"), "{b}");
}

#[test]
fn group_with_a_member_on_a_remote_cse() {
    let (in_cse, mn, _pki) = start_in_mn_tls();
    let ae_in = register_ae(in_cse.url(), "/cse-in", "Cgin", "app", &[]);
    create_cnt(
        in_cse.url(),
        "/cse-in/app",
        &ae_in,
        json!({ "rn": "local" }),
    );
    let ae_mn = register_ae(mn.url(), "/cse-mn", "Cgmn", "dev", &[]);
    // The group host retrieves the remote member (validation) and creates in it (fan-out) on
    // behalf of the group's creator, known on the MN by its SP-relative AE-ID.
    let acp = create_acp(
        mn.url(),
        "/cse-mn/dev",
        &ae_mn,
        "forin",
        vec![
            acr(&[&format!("/id-in/{ae_in}")], OP_RETRIEVE | OP_CREATE),
            acr(&[&ae_mn], OP_ALL),
        ],
        vec![acr(&[&ae_mn], OP_ALL)],
    );
    create_cnt(
        mn.url(),
        "/cse-mn/dev",
        &ae_mn,
        json!({ "rn": "remote", "acpi": [acp] }),
    );

    let r = create_full(
        in_cse.url(),
        "/cse-in/app",
        &ae_in,
        9,
        json!({ "m2m:grp": {
            "rn": "g", "mt": 3, "mnm": 10,
            "mid": ["cse-in/app/local", "/id-mn/cse-mn/dev/remote"],
        }}),
    );
    assert_eq!(r.rsc, 2001, "group with a remote member: {:?}", r.body);
    assert_eq!(
        r.body["m2m:grp"]["cnm"],
        json!(2),
        "the remote member is validated through the MN: {:?}",
        r.body
    );
    let (rsc, b) = create(
        in_cse.url(),
        "/cse-in/app/g/fopt",
        &ae_in,
        4,
        json!({ "m2m:cin": { "con": "everywhere" } }),
    );
    assert_eq!(rsc, 2000, "{b}");
    assert!(
        rsps(&b).iter().all(|x| x["rsc"] == json!(2001)),
        "both members created: {b}"
    );
    let (rsc, b) = retrieve(mn.url(), "/cse-mn/dev/remote/la", &ae_mn);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:cin"]["con"], json!("everywhere"), "{b}");
}

#[test]
fn member_responses_name_their_member() {
    let (cse, ae) = setup();
    let u = cse.url();
    let r = create_group(
        u,
        &ae,
        json!({ "rn": "g", "mt": 3, "mnm": 10, "mid": ["cse-in/app/c1", "cse-in/app/c2"] }),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let (rsc, b) = retrieve(u, "/cse-in/app/g/fopt", &ae);
    assert_eq!(rsc, 2000, "{b}");
    let mut frs: Vec<String> = rsps(&b)
        .iter()
        .map(|r| r["fr"].as_str().unwrap_or("<none>").to_owned())
        .collect();
    frs.sort();
    assert_eq!(
        frs,
        vec!["cse-in/app/c1", "cse-in/app/c2"],
        "TS-0004 clause 7.4.14.2.5: the group-hosting CSE sets each member's resource ID into \
         the From parameter of that member's response: {b}"
    );
}

/// A DELETE through the fanOutPoint deletes the members; those that answered DELETED leave
/// memberIDs (TS-0004 clause 7.4.14.2.4), a member that refused stays, and a reference to a
/// virtual resource stays too.
#[test]
fn members_deleted_through_the_group_leave_it() {
    let (cse, ae) = setup();
    let u = cse.url();
    let owner = register_ae(u, "/cse-in", "Cowner", "owned", &[]);
    // Readable by the group's creator, not deletable.
    let acp = create_acp(
        u,
        "/cse-in/owned",
        &owner,
        "look",
        vec![
            acr(&[ae.as_str()], OP_RETRIEVE),
            acr(&[owner.as_str()], OP_ALL),
        ],
        vec![acr(&[owner.as_str()], OP_ALL)],
    );
    create_cnt(
        u,
        "/cse-in/owned",
        &owner,
        json!({ "rn": "theirs", "acpi": [acp] }),
    );
    let r = create_group(
        u,
        &ae,
        json!({ "rn": "g", "mt": 0, "mnm": 10,
                "mid": ["cse-in/app/c1", "cse-in/app/c2", "cse-in/owned/theirs"] }),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert_eq!(r.body["m2m:grp"]["cnm"], json!(3), "{:?}", r.body);
    let (rsc, b) = delete(u, "/cse-in/app/g/fopt", &ae);
    assert_eq!(rsc, 2000, "{b}");
    let codes: Vec<u64> = rsps(&b).iter().filter_map(|r| r["rsc"].as_u64()).collect();
    assert_eq!(codes.iter().filter(|c| **c == 2002).count(), 2, "{b}");
    let (_, g) = retrieve(u, "/cse-in/app/g", &ae);
    assert_eq!(g["m2m:grp"]["mid"], json!(["cse-in/owned/theirs"]), "{g}");
    assert_eq!(g["m2m:grp"]["cnm"], json!(1), "{g}");
}

/// A member deleted directly (not through the group), in whatever form memberIDs names it, or
/// with the subtree it is in, leaves every group that lists it; the groups count it no more,
/// after a restart too. A member that is not deleted stays.
#[test]
fn members_deleted_directly_leave_every_group() {
    let (cse, ae) = setup();
    let u = cse.url().to_owned();
    create_cnt(&u, "/cse-in/app", &ae, json!({ "rn": "c3" }));
    create_cnt(&u, "/cse-in/app/c3", &ae, json!({ "rn": "inner" }));
    let (_, c2) = retrieve(&u, "/cse-in/app/c2", &ae);
    let c2_ri = c2["m2m:cnt"]["ri"].as_str().unwrap().to_owned();
    let members = json!([
        "cse-in/app/c1",
        c2_ri,
        "/id-in/cse-in/app/c3/inner",
        "cse-in/app/c3"
    ]);
    for rn in ["g1", "g2"] {
        let r = create_group(
            &u,
            &ae,
            json!({ "rn": rn, "mt": 3, "mnm": 10, "mid": members }),
        );
        assert_eq!(r.rsc, 2001, "{:?}", r.body);
    }
    let mid = |g: &str| -> (Value, Value) {
        let (_, b) = retrieve(&u, &format!("/cse-in/app/{g}"), &ae);
        (b["m2m:grp"]["mid"].clone(), b["m2m:grp"]["cnm"].clone())
    };
    // By its resourceID in memberIDs, deleted by its structured name.
    let (rsc, _) = delete(&u, "/cse-in/app/c2", &ae);
    assert_eq!(rsc, 2002);
    for g in ["g1", "g2"] {
        let left = poll(WAIT, || {
            let (m, n) = mid(g);
            (n == json!(3)).then_some(m)
        })
        .unwrap_or_else(|| panic!("{g} still lists c2: {:?}", mid(g)));
        assert_eq!(
            left,
            json!([
                "cse-in/app/c1",
                "/id-in/cse-in/app/c3/inner",
                "cse-in/app/c3"
            ]),
            "{g}"
        );
    }
    // A subtree: c3 and its inner container both leave.
    let cse = cse.restart();
    let u = cse.url().to_owned();
    let (rsc, _) = delete(&u, "/cse-in/app/c3", &ae);
    assert_eq!(rsc, 2002);
    let mid = |g: &str| -> (Value, Value) {
        let (_, b) = retrieve(&u, &format!("/cse-in/app/{g}"), &ae);
        (b["m2m:grp"]["mid"].clone(), b["m2m:grp"]["cnm"].clone())
    };
    let left = poll(WAIT, || {
        let (m, n) = mid("g1");
        (n == json!(1)).then_some(m)
    })
    .unwrap_or_else(|| panic!("g1 after the subtree went: {:?}", mid("g1")));
    assert_eq!(left, json!(["cse-in/app/c1"]));
    // A container of the same name made again is not a member again.
    create_cnt(&u, "/cse-in/app", &ae, json!({ "rn": "c3" }));
    assert_eq!(mid("g2").1, json!(1));
}

/// Groups of groups fan out through `fopt/fopt/...` paths; a group that is its own member, or
/// groups that are each other's, would fan out without end (and twice as wide at each level).
/// Three levels are made; a path that asks for a fourth is refused (4000) before any member is
/// asked.
#[test]
fn groups_that_contain_themselves_fan_out_a_bounded_number_of_levels() {
    let (cse, ae) = setup();
    let u = cse.url();
    for rn in ["a", "b"] {
        let r = create_group(u, &ae, json!({ "rn": rn, "mt": 9, "mnm": 10, "mid": [] }));
        assert_eq!(r.rsc, 2001, "{:?}", r.body);
    }
    // a and b each list both: a request through k fan-out points would make 2^k requests.
    for rn in ["a", "b"] {
        let (rsc, b) = update(
            u,
            &format!("/cse-in/app/{rn}"),
            &ae,
            json!({ "m2m:grp": { "mid": ["cse-in/app/a", "cse-in/app/b"] } }),
        );
        assert_eq!(rsc, 2004, "{b}");
    }
    let started = std::time::Instant::now();
    let path = format!("/cse-in/app/a{}", "/fopt".repeat(12));
    let (rsc, b) = retrieve(u, &path, &ae);
    assert_eq!(rsc, 4000, "{b}");
    assert!(
        b.to_string()
            .contains("groups fan out 3 levels deep at most"),
        "{b}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "bounded"
    );
    // A semanticFanOutPoint at the end is a level too: three fopt and an sfop are four.
    let (rsc, b) = retrieve(u, "/cse-in/app/a/fopt/fopt/fopt/sfop", &ae);
    assert_eq!(rsc, 4000, "{b}");
    assert!(
        b.to_string()
            .contains("groups fan out 3 levels deep at most"),
        "{b}"
    );
    // Three levels of aggregation: the deepest members, a and b themselves, 2^3 of them.
    let (rsc, b) = retrieve(u, "/cse-in/app/a/fopt/fopt/fopt", &ae);
    assert_eq!(rsc, 2000, "{b}");
    let leaves: Vec<Value> = rsps(&b)
        .iter()
        .flat_map(|l2| rsps(&l2["pc"]))
        .flat_map(|l3| rsps(&l3["pc"]))
        .collect();
    assert_eq!(leaves.len(), 8, "{b}");
    assert!(
        leaves
            .iter()
            .all(|l| l["rsc"] == json!(2000) && l["pc"]["m2m:grp"]["ty"] == json!(9)),
        "{b}"
    );
}

/// The same through two CSEs: groups on the IN list groups on the MN and these list the IN's, so
/// each hop would start a fan-out anew on the other CSE (a request arriving over Mcc holds no
/// depth of its own). Two bounds hold: the MN may not speak for an AE registered with the IN (so
/// the way back is refused, 4106), and the request's path bounds the levels on every CSE (each
/// level consumes one `fopt` of it; a To naming more fan-out points than the levels allowed is
/// refused before any member is asked).
#[test]
fn groups_that_list_each_other_across_two_cses_fan_out_a_bounded_number_of_levels() {
    let (in_cse, mn, _pki) = start_in_mn_tls();
    let ae_in = register_ae(in_cse.url(), "/cse-in", "Cloopin", "app", &[]);
    let ae_mn = register_ae(mn.url(), "/cse-mn", "Cloopmn", "dev", &[]);
    // Each side lets the other's AE read its groups (validation and fan-out).
    let acp_in = create_acp(
        in_cse.url(),
        "/cse-in/app",
        &ae_in,
        "formn",
        vec![
            acr(&[&format!("/id-mn/{ae_mn}")], OP_RETRIEVE),
            acr(&[&ae_in], OP_ALL),
        ],
        vec![acr(&[&ae_in], OP_ALL)],
    );
    let acp_mn = create_acp(
        mn.url(),
        "/cse-mn/dev",
        &ae_mn,
        "forin",
        vec![
            acr(&[&format!("/id-in/{ae_in}")], OP_RETRIEVE),
            acr(&[&ae_mn], OP_ALL),
        ],
        vec![acr(&[&ae_mn], OP_ALL)],
    );
    for rn in ["a1", "a2"] {
        let r = create_full(
            in_cse.url(),
            "/cse-in/app",
            &ae_in,
            9,
            json!({ "m2m:grp": { "rn": rn, "mt": 9, "mnm": 10, "mid": [], "acpi": [acp_in] } }),
        );
        assert_eq!(r.rsc, 2001, "{:?}", r.body);
    }
    for rn in ["b1", "b2"] {
        let r = create_full(
            mn.url(),
            "/cse-mn/dev",
            &ae_mn,
            9,
            json!({ "m2m:grp": {
                "rn": rn, "mt": 9, "mnm": 10, "acpi": [acp_mn],
                "mid": ["/id-in/cse-in/app/a1", "/id-in/cse-in/app/a2"],
            }}),
        );
        assert_eq!(r.rsc, 2001, "{:?}", r.body);
        assert_eq!(r.body["m2m:grp"]["cnm"], json!(2), "{:?}", r.body);
    }
    for rn in ["a1", "a2"] {
        let (rsc, b) = update(
            in_cse.url(),
            &format!("/cse-in/app/{rn}"),
            &ae_in,
            json!({ "m2m:grp": { "mid": ["/id-mn/cse-mn/dev/b1", "/id-mn/cse-mn/dev/b2"] } }),
        );
        assert_eq!(rsc, 2004, "{b}");
    }
    // One level on the IN (b1, b2 on the MN), one on the MN (a1, a2 back on the IN): the IN
    // refuses the MN's requests as its own AE, and nothing goes further.
    let (rsc, b) = retrieve(in_cse.url(), "/cse-in/app/a1/fopt/fopt/fopt", &ae_in);
    assert_eq!(rsc, 2000, "{b}");
    let first = rsps(&b);
    assert_eq!(first.len(), 2, "{b}");
    assert!(first.iter().all(|l| l["rsc"] == json!(2000)), "{b}");
    let second: Vec<Value> = first.iter().flat_map(|l| rsps(&l["pc"])).collect();
    assert_eq!(second.len(), 4, "{b}");
    assert!(second.iter().all(|l| l["rsc"] == json!(4106)), "{b}");
    // Twelve fan-out points would be 2^12 requests between the two CSEs: refused, at once, on
    // either CSE and wherever the path is sent.
    let deep = "/fopt".repeat(12);
    for (cse, path) in [
        (&in_cse, format!("/cse-in/app/a1{deep}")),
        (&mn, format!("/cse-mn/dev/b1{deep}")),
        (&in_cse, format!("/~/id-mn/cse-mn/dev/b1{deep}")),
        (&in_cse, "/cse-in/app/a1/fopt/fopt/fopt/fopt/la".to_owned()),
    ] {
        let who = if std::ptr::eq(cse, &mn) {
            &ae_mn
        } else {
            &ae_in
        };
        let started = std::time::Instant::now();
        let (rsc, b) = retrieve(cse.url(), &path, who);
        assert_eq!(rsc, 4000, "{path}: {b}");
        assert!(
            b.to_string().contains("fan out 3 levels deep at most"),
            "{path}: {b}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{path}: refused before any member is asked"
        );
    }
}

/// Who may use a fanOutPoint: the group's membersAccessControlPolicyIDs, and without them the
/// group's own policies (TS-0001 clauses 10.2.7.6 to 10.2.7.10). Access to every member is not
/// access to the group: a stranger learns neither its members nor their answers, whatever the
/// operation and whichever form of its AE-ID it writes.
#[test]
fn a_fan_out_is_decided_by_the_group_before_any_member() {
    let (cse, ae) = setup();
    let u = cse.url();
    let stranger = register_ae(u, "/cse-in", "Cstranger", "stranger", &[]);
    // The stranger may do anything to the members themselves.
    let acp = create_acp(
        u,
        "/cse-in/app",
        &ae,
        "members",
        vec![acr(&[&ae], 63), acr(&[&stranger], 63)],
        vec![acr(&[&ae], 63)],
    );
    for c in ["c1", "c2"] {
        set_acpi(u, &format!("/cse-in/app/{c}"), &ae, "m2m:cnt", &[&acp]);
    }
    let r = create_group(
        u,
        &ae,
        json!({ "rn": "g", "mt": 3, "mnm": 10, "mid": ["cse-in/app/c1", "cse-in/app/c2"] }),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let cin = json!({ "m2m:cin": { "con": "x" } });
    for from in [
        stranger.as_str(),
        "/id-in/Cstranger",
        "//m2m.example.com/id-in/Cstranger",
    ] {
        let (rsc, b) = retrieve(u, "/cse-in/app/g/fopt", from);
        assert_eq!(rsc, 4103, "{from}: {b}");
        assert!(b.get("m2m:agr").is_none(), "no member answers: {b}");
        let (rsc, b) = retrieve(u, "/cse-in/app/g/fopt/la", from);
        assert_eq!(rsc, 4103, "{from}: {b}");
        let (rsc, b) = create(u, "/cse-in/app/g/fopt", from, 4, cin.clone());
        assert_eq!(rsc, 4103, "{from}: {b}");
        let (rsc, b) = update(
            u,
            "/cse-in/app/g/fopt",
            from,
            json!({ "m2m:cnt": { "lbl": ["x"] } }),
        );
        assert_eq!(rsc, 4103, "{from}: {b}");
        assert_eq!(delete(u, "/cse-in/app/g/fopt", from).0, 4103, "{from}");
    }
    let (_, b) = retrieve(u, "/cse-in/app/c1", &ae);
    assert_eq!(b["m2m:cnt"]["cni"], json!(0), "nothing created: {b}");
    assert!(b["m2m:cnt"].get("lbl").is_none(), "nothing updated: {b}");
    // The group's own policy lets the stranger retrieve through it (no macp).
    let grp_acp = create_acp(
        u,
        "/cse-in/app",
        &ae,
        "readers",
        vec![acr(&[&ae], 63), acr(&[&stranger], 2)],
        vec![acr(&[&ae], 63)],
    );
    set_acpi(u, "/cse-in/app/g", &ae, "m2m:grp", &[&grp_acp]);
    let (rsc, b) = retrieve(u, "/cse-in/app/g/fopt", &stranger);
    assert_eq!((rsc, rsps(&b).len()), (2000, 2), "{b}");
    let (rsc, b) = create(u, "/cse-in/app/g/fopt", &stranger, 4, cin.clone());
    assert_eq!(rsc, 4103, "RETRIEVE only: {b}");
    // membersAccessControlPolicyIDs, once set, decide instead (here: CREATE too).
    let (rsc, b) = update(
        u,
        "/cse-in/app/g",
        &ae,
        json!({ "m2m:grp": { "macp": [acp] } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    let (rsc, b) = create(u, "/cse-in/app/g/fopt", &stranger, 4, cin);
    assert_eq!(rsc, 2000, "{b}");
    assert!(rsps(&b).iter().all(|r| r["rsc"] == json!(2001)), "{b}");
}

/// Groups that all list each other: depth bounds the levels, and a budget shared by the levels
/// bounds the member requests of one fan-out (22 groups three levels deep would be 22^3), so one
/// GET cannot make the CSE do ten thousand times its work. What the budget stops answers 5207.
#[test]
fn one_fan_out_makes_a_bounded_number_of_member_requests() {
    let (cse, ae) = setup();
    let u = cse.url();
    let names: Vec<String> = (0..22).map(|i| format!("g{i}")).collect();
    for rn in &names {
        let r = create_group(u, &ae, json!({ "rn": rn, "mt": 9, "mnm": 100, "mid": [] }));
        assert_eq!(r.rsc, 2001, "{:?}", r.body);
    }
    let all: Vec<String> = names.iter().map(|n| format!("cse-in/app/{n}")).collect();
    for rn in &names {
        let (rsc, b) = update(
            u,
            &format!("/cse-in/app/{rn}"),
            &ae,
            json!({ "m2m:grp": { "mid": all } }),
        );
        assert_eq!(rsc, 2004, "{b}");
    }
    let (rsc, b) = retrieve(u, "/cse-in/app/g0/fopt/fopt/fopt", &ae);
    assert_eq!(rsc, 2000, "{b}");
    // Every member request made is one member response somewhere in the aggregate tree.
    fn walk(agr: &Value, asked: &mut usize, stopped: &mut usize) {
        for rsp in agr["m2m:agr"]["m2m:rsp"].as_array().into_iter().flatten() {
            *asked += 1;
            if rsp["rsc"] == json!(5207) {
                *stopped += 1;
            }
            walk(&rsp["pc"], asked, stopped);
        }
    }
    let (mut asked, mut stopped) = (0, 0);
    walk(&b, &mut asked, &mut stopped);
    assert!(stopped > 0, "the budget stopped part of the fan-out");
    assert!(asked <= 10_000, "{asked} member requests");
    assert!(
        asked > 22 + 22 * 22,
        "the budget is spent, not refused up front: {asked}"
    );
    // The CSE still answers.
    assert_eq!(retrieve(u, "/cse-in/app/g1", &ae).0, 2000);
}
