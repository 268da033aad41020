//! Access control over HTTP on real `m2m cse` processes (TS-0003 clause 7.1, TS-0001 clause 9.6.2,
//! TS-0004 clause 7.3.3.15): the ACPs of the target decide, the creator owns what has no ACP, the
//! selfPrivileges govern an ACP and changes of accessControlPolicyIDs, access control contexts,
//! group originators, the subscriber's RETRIEVE privilege, and the AE registration rules.

mod common;

use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "CAdmin";

/// Asserts a success status.
fn ok(r: &Resp, rsc: u16, what: &str) {
    assert_eq!(r.rsc, rsc, "{what}: {:?}", r.body);
}

/// Asserts a refusal with its status and a non-empty m2m:dbg saying why.
fn refused(r: &Resp, rsc: u16, what: &str) {
    assert_eq!(r.rsc, rsc, "{what}: {:?}", r.body);
    assert!(
        r.dbg().is_some_and(|d| !d.trim().is_empty()),
        "{what}: a refusal says why in m2m:dbg: {:?}",
        r.body
    );
}

/// An AE registration with App-ID `api` under `/cse-in`.
fn register(u: &str, from: &str, rn: &str, api: &str) -> Resp {
    create_full(
        u,
        "/cse-in",
        from,
        2,
        json!({ "m2m:ae": { "rn": rn, "api": api, "rr": false, "srv": ["3"] } }),
    )
}

/// Registers and returns the AE-ID.
fn registered(u: &str, from: &str, rn: &str, api: &str) -> String {
    let r = register(u, from, rn, api);
    ok(&r, 2001, &format!("registration of {from} ({api})"));
    r.body["m2m:ae"]["aei"].as_str().expect("aei").to_owned()
}

fn cin(u: &str, to: &str, from: &str, con: &str) -> Resp {
    create_full(u, to, from, 4, json!({ "m2m:cin": { "con": con } }))
}

fn put(u: &str, to: &str, from: &str, body: Value) -> Resp {
    request("PUT", u, to, Some(from), None, Some(&body))
}

fn discovered(u: &str, to: &str, from: &str, query: &str) -> Vec<String> {
    let r = get_with_query_full(u, to, from, &format!("fu=1&{query}"));
    ok(&r, 2000, &format!("discovery {to}?fu=1&{query} by {from}"));
    r.body["m2m:uril"]
        .as_array()
        .unwrap_or_else(|| panic!("no m2m:uril: {:?}", r.body))
        .iter()
        .map(|v| v.as_str().expect("uril entry").to_owned())
        .collect()
}

/// Two door locks, each with a container `state`, a smartphone and another AE.
struct Locks {
    cse: CseProcess,
    lock1: String,
    lock2: String,
    phone: String,
    other: String,
}

fn locks() -> Locks {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let lock1 = registered(&u, "Clock-AE1", "lock1", "Ndoorlock");
    let lock2 = registered(&u, "Clock-AE2", "lock2", "Ndoorlock");
    let phone = registered(&u, "Cphone", "phone", "Nphone");
    let other = registered(&u, "Cother", "other", "Nother");
    assert_eq!(lock1, "Clock-AE1");
    create_cnt(&u, "/cse-in/lock1", &lock1, json!({ "rn": "state" }));
    create_cnt(&u, "/cse-in/lock2", &lock2, json!({ "rn": "state" }));
    Locks {
        cse,
        lock1,
        lock2,
        phone,
        other,
    }
}

/// Each lock puts its container under an ACP of its own: the phone may RETRIEVE and DISCOVER,
/// the lock itself everything; only the lock may change the ACP (selfPrivileges).
fn share_with_phone(l: &Locks) {
    let u = l.cse.url();
    for (ae, lock) in [("lock1", &l.lock1), ("lock2", &l.lock2)] {
        let acp = create_acp(
            u,
            &format!("/cse-in/{ae}"),
            lock,
            "acp",
            vec![
                acr(&[&l.phone], OP_RETRIEVE | OP_DISCOVERY),
                acr(&[lock], OP_ALL),
            ],
            vec![acr(&[lock], OP_ALL)],
        );
        set_acpi(u, &format!("/cse-in/{ae}/state"), lock, "m2m:cnt", &[&acp]);
    }
}

#[test]
fn door_locks_keep_to_their_own_state() {
    let l = locks();
    let u = l.cse.url();
    // A lock writes its own state (it created the container) but not the other lock's.
    ok(
        &cin(u, "/cse-in/lock1/state", &l.lock1, "locked"),
        2001,
        "lock1 writes its own state",
    );
    ok(
        &put(
            u,
            "/cse-in/lock1/state",
            &l.lock1,
            json!({ "m2m:cnt": { "lbl": ["front-door"] } }),
        ),
        2004,
        "lock1 updates its own container",
    );
    refused(
        &cin(u, "/cse-in/lock2/state", &l.lock1, "unlocked"),
        4103,
        "lock1 writes lock2's state",
    );
    refused(
        &put(
            u,
            "/cse-in/lock2/state",
            &l.lock1,
            json!({ "m2m:cnt": { "lbl": ["hacked"] } }),
        ),
        4103,
        "lock1 updates lock2's container",
    );
    refused(
        &retrieve_full(u, "/cse-in/lock2/state", &l.lock1),
        4103,
        "lock1 reads lock2's container",
    );
    refused(
        &request(
            "DELETE",
            u,
            "/cse-in/lock2/state",
            Some(&l.lock1),
            None,
            None,
        ),
        4103,
        "lock1 deletes lock2's container",
    );
    // Before any ACP, the phone sees nothing of the locks.
    refused(
        &retrieve_full(u, "/cse-in/lock1/state/la", &l.phone),
        4103,
        "the phone before the ACP",
    );

    share_with_phone(&l);
    // The locks keep writing through their ACP rule.
    ok(
        &cin(u, "/cse-in/lock1/state", &l.lock1, "open"),
        2001,
        "lock1 after the ACP",
    );
    ok(
        &cin(u, "/cse-in/lock2/state", &l.lock2, "closed"),
        2001,
        "lock2 after the ACP",
    );
    refused(
        &cin(u, "/cse-in/lock2/state", &l.lock1, "unlocked"),
        4103,
        "lock1 still cannot write lock2's state",
    );

    // The phone reads the latest state of both locks and discovers their containers.
    for (ae, want) in [("lock1", "open"), ("lock2", "closed")] {
        let r = retrieve_full(u, &format!("/cse-in/{ae}/state/la"), &l.phone);
        ok(&r, 2000, &format!("the phone reads {ae}/state/la"));
        assert_eq!(r.body["m2m:cin"]["con"], json!(want), "{:?}", r.body);
    }
    let found = discovered(u, "/cse-in", &l.phone, "ty=3");
    for ae in ["lock1", "lock2"] {
        assert!(
            found.iter().any(|f| f.ends_with(&format!("{ae}/state"))),
            "the phone discovers {ae}/state: {found:?}"
        );
    }
    // The phone has neither UPDATE nor CREATE.
    refused(
        &put(
            u,
            "/cse-in/lock1/state",
            &l.phone,
            json!({ "m2m:cnt": { "lbl": ["by-phone"] } }),
        ),
        4103,
        "the phone updates the container",
    );
    refused(
        &cin(u, "/cse-in/lock1/state", &l.phone, "unlock!"),
        4103,
        "the phone writes the state",
    );

    // An AE the ACPs do not name reads nothing, and its discovery leaves the containers out.
    refused(
        &retrieve_full(u, "/cse-in/lock1/state/la", &l.other),
        4103,
        "another AE reads lock1/state/la",
    );
    refused(
        &retrieve_full(u, "/cse-in/lock1/state", &l.other),
        4103,
        "another AE reads lock1/state",
    );
    let found = discovered(u, "/cse-in", &l.other, "ty=3");
    assert!(
        found.iter().all(|f| !f.ends_with("/state")),
        "discovery by another AE is filtered: {found:?}"
    );
    // The admin sees everything.
    let found = discovered(u, "/cse-in", ADMIN, "ty=3");
    assert_eq!(found.len(), 2, "the admin discovers both: {found:?}");
}

#[test]
fn accessing_policies_needs_self_privileges() {
    let l = locks();
    let u = l.cse.url();
    // Without an ACP, only the creator sets accessControlPolicyIDs.
    let acp = create_acp(
        u,
        "/cse-in/lock1",
        &l.lock1,
        "acp",
        vec![acr(&[&l.phone], OP_RETRIEVE), acr(&[&l.lock1], OP_ALL)],
        vec![acr(&[&l.lock1], OP_ALL)],
    );
    refused(
        &put(
            u,
            "/cse-in/lock1/state",
            &l.phone,
            json!({ "m2m:cnt": { "acpi": [acp] } }),
        ),
        4103,
        "acpi set by someone other than the creator",
    );
    // acpi must name accessControlPolicy resources of this CSE.
    for bogus in ["acpNowhere", "/cse-in/lock1/state", "/id-other/acp1"] {
        refused(
            &put(
                u,
                "/cse-in/lock1/state",
                &l.lock1,
                json!({ "m2m:cnt": { "acpi": [bogus] } }),
            ),
            4000,
            "acpi naming something that is not a local ACP",
        );
    }
    set_acpi(u, "/cse-in/lock1/state", &l.lock1, "m2m:cnt", &[&acp]);

    // acpi must be the only attribute of its UPDATE.
    refused(
        &put(
            u,
            "/cse-in/lock1/state",
            &l.lock1,
            json!({ "m2m:cnt": { "acpi": [acp], "lbl": ["x"] } }),
        ),
        4000,
        "acpi updated together with lbl",
    );
    // Changing acpi needs UPDATE in the selfPrivileges of the current ACPs, not in privileges:
    // the phone is not in pvs; give it UPDATE in pv to make the point.
    let (rsc, b) = update(
        u,
        "/cse-in/lock1/acp",
        &l.lock1,
        json!({ "m2m:acp": { "pv": { "acr": [
            acr(&[&l.phone], OP_RETRIEVE | OP_UPDATE),
            acr(&[&l.lock1], OP_ALL),
        ] } } }),
    );
    assert_eq!(rsc, 2004, "the lock changes its ACP: {b}");
    ok(
        &put(
            u,
            "/cse-in/lock1/state",
            &l.phone,
            json!({ "m2m:cnt": { "lbl": ["by-phone"] } }),
        ),
        2004,
        "UPDATE in pv lets the phone update other attributes",
    );
    refused(
        &put(
            u,
            "/cse-in/lock1/state",
            &l.phone,
            json!({ "m2m:cnt": { "acpi": [] } }),
        ),
        4103,
        "acpi updated by an originator not in the current ACP's selfPrivileges",
    );
    refused(
        &put(
            u,
            "/cse-in/lock1/state",
            &l.other,
            json!({ "m2m:cnt": { "acpi": [] } }),
        ),
        4103,
        "acpi updated by a stranger to the ACP",
    );
    let (rsc, b) = retrieve(u, "/cse-in/lock1/state", &l.lock1);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:cnt"]["acpi"], json!([acp]), "acpi unchanged: {b}");

    // The ACP itself is governed by its selfPrivileges: the phone, in pv only, cannot see it.
    refused(
        &retrieve_full(u, "/cse-in/lock1/acp", &l.phone),
        4103,
        "the phone retrieves the ACP",
    );
    refused(
        &retrieve_full(u, "/cse-in/lock1/acp", &l.lock2),
        4103,
        "lock2 retrieves lock1's ACP",
    );
    refused(
        &put(
            u,
            "/cse-in/lock1/acp",
            &l.phone,
            json!({ "m2m:acp": { "pv": { "acr": [acr(&[&l.phone], OP_ALL)] } } }),
        ),
        4103,
        "the phone grants itself everything",
    );
    let (rsc, b) = retrieve(u, "/cse-in/lock1/acp", &l.lock1);
    assert_eq!(rsc, 2000, "the lock retrieves its ACP: {b}");
    assert_eq!(
        b["m2m:acp"]["pvs"]["acr"][0]["acor"],
        json!([l.lock1]),
        "{b}"
    );
    ok(
        &retrieve_full(u, "/cse-in/lock1/acp", ADMIN),
        2000,
        "the admin retrieves the ACP",
    );

    // The lock removes the ACP from its container again.
    set_acpi(u, "/cse-in/lock1/state", &l.lock1, "m2m:cnt", &[]);
    refused(
        &retrieve_full(u, "/cse-in/lock1/state", &l.phone),
        4103,
        "without acpi only the creator has access again",
    );

    // Rules that are not rules: 4000, and the ACP stays as it was.
    for (what, pv) in [
        (
            "operations beyond the six bits",
            json!({ "acr": [acr(&[&l.phone], 64)] }),
        ),
        ("no operations", json!({ "acr": [{ "acor": [l.phone] }] })),
        (
            "operations as text",
            json!({ "acr": [{ "acor": [l.phone], "acop": "all" }] }),
        ),
        (
            "an originator that is no ID",
            json!({ "acr": [{ "acor": [7], "acop": 2 }] }),
        ),
    ] {
        refused(
            &put(
                u,
                "/cse-in/lock1/acp",
                &l.lock1,
                json!({ "m2m:acp": { "pv": pv } }),
            ),
            4000,
            what,
        );
    }
    let (_, b) = retrieve(u, "/cse-in/lock1/acp", &l.lock1);
    assert_eq!(
        b["m2m:acp"]["pv"]["acr"][0]["acop"],
        json!(OP_RETRIEVE | OP_UPDATE),
        "{b}"
    );
    // Deleting the ACP is a selfPrivilege too; then it is gone.
    refused(
        &request("DELETE", u, "/cse-in/lock1/acp", Some(&l.phone), None, None),
        4103,
        "the phone deletes the lock's ACP",
    );
    assert_eq!(delete(u, "/cse-in/lock1/acp", &l.lock1).0, 2002);
    assert_eq!(retrieve(u, "/cse-in/lock1/acp", &l.lock1).0, 4004);
}

/// An owner AE with a container `c` under the ACP `acp`, and a guest AE the rules are about.
struct Guest {
    cse: CseProcess,
    owner: String,
    guest: String,
}

fn guest() -> Guest {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let owner = registered(&u, "Cowner", "owner", "Nowner");
    let guest = registered(&u, "Cguest", "guest", "Nguest");
    create_cnt(&u, "/cse-in/owner", &owner, json!({ "rn": "c" }));
    create_cin(&u, "/cse-in/owner/c", &owner, "v");
    let acp = create_acp(
        &u,
        "/cse-in/owner",
        &owner,
        "acp",
        vec![acr(&[&owner], OP_ALL)],
        vec![acr(&[&owner], OP_ALL)],
    );
    set_acpi(&u, "/cse-in/owner/c", &owner, "m2m:cnt", &[&acp]);
    Guest { cse, owner, guest }
}

impl Guest {
    /// Replaces the ACP's privileges with the owner's rule and `rule` for the guest.
    fn grant(&self, rule: Value) {
        let (rsc, b) = update(
            self.cse.url(),
            "/cse-in/owner/acp",
            &self.owner,
            json!({ "m2m:acp": { "pv": { "acr": [acr(&[&self.owner], OP_ALL), rule] } } }),
        );
        assert_eq!(rsc, 2004, "ACP update: {b}");
    }

    fn read(&self) -> Resp {
        retrieve_full(self.cse.url(), "/cse-in/owner/c/la", &self.guest)
    }
}

#[test]
fn access_control_contexts() {
    let g = guest();
    let rule = |acco: Value| json!({ "acor": [g.guest], "acop": OP_RETRIEVE, "acco": acco });

    // Time window (7-field UTC cron: sec min hour day month weekday year).
    g.grant(rule(json!([{ "actw": ["* * * * * * *"] }])));
    ok(&g.read(), 2000, "inside the time window");
    g.grant(rule(json!([{ "actw": ["* * * * * * 2001"] }])));
    refused(&g.read(), 4103, "outside the time window (2001)");

    // IP addresses: the socket address of the request (127.0.0.1), never a header.
    g.grant(rule(json!([{ "acip": { "ipv4": ["127.0.0.1"] } }])));
    ok(&g.read(), 2000, "from 127.0.0.1");
    g.grant(rule(json!([{ "acip": { "ipv4": ["10.0.0.0/8"] } }])));
    refused(&g.read(), 4103, "from outside 10.0.0.0/8");
    let r = raw(
        "GET",
        g.cse.url(),
        "/cse-in/owner/c/la",
        &[
            ("X-M2M-Origin", &g.guest),
            ("X-M2M-RI", &rqi()),
            ("X-M2M-RVI", "3"),
            ("X-Forwarded-For", "10.1.2.3"),
            ("X-Real-IP", "10.1.2.3"),
        ],
        &[],
    );
    refused(&r, 4103, "a forwarding header does not change the address");

    // Contexts are ORed: one matching entry is enough.
    g.grant(rule(json!([
        { "actw": ["* * * * * * 2001"] },
        { "acip": { "ipv4": ["127.0.0.0/8"] } },
    ])));
    ok(&g.read(), 2000, "one of two contexts matches");

    // Authentication required: there are no security associations yet.
    g.grant(json!({ "acor": [g.guest], "acop": OP_RETRIEVE, "acaf": true }));
    refused(&g.read(), 4103, "acaf without a security association");
    g.grant(json!({ "acor": [g.guest], "acop": OP_RETRIEVE, "acaf": false }));
    ok(&g.read(), 2000, "acaf false");
}

#[test]
fn group_as_originator() {
    let g = guest();
    let u = g.cse.url();
    let outsider = registered(u, "Coutsider", "outsider", "Noutsider");
    // The admin creates the group (it may retrieve the member AE for validation).
    let r = create_full(
        u,
        "/cse-in/owner",
        ADMIN,
        9,
        json!({ "m2m:grp": { "rn": "friends", "mt": 2, "mnm": 10, "mid": [g.guest] } }),
    );
    ok(&r, 2001, "group of AEs");
    assert_eq!(r.body["m2m:grp"]["cnm"], json!(1), "{:?}", r.body);
    let grp = r.body["m2m:grp"]["ri"].as_str().expect("grp ri").to_owned();

    g.grant(acr(&[&grp], OP_RETRIEVE));
    ok(&g.read(), 2000, "a member of the group");
    refused(
        &retrieve_full(u, "/cse-in/owner/c/la", &outsider),
        4103,
        "not a member of the group",
    );
    let (rsc, b) = delete(u, "/cse-in/owner/friends", ADMIN);
    assert_eq!(rsc, 2002, "{b}");
    refused(&g.read(), 4103, "the member after the group is deleted");
}

#[test]
fn subscribing_needs_retrieve() {
    let g = guest();
    let u = g.cse.url();
    let rx = Receiver::start();
    let sub = json!({ "m2m:sub": { "rn": "s", "nu": [rx.url()], "enc": { "net": [3] } } });
    // CREATE of subscriptions only (acod chty [23]), no RETRIEVE.
    g.grant(json!({
        "acor": [g.guest], "acop": OP_CREATE, "acod": [{ "chty": [23] }],
    }));
    refused(
        &create_full(u, "/cse-in/owner/c", &g.guest, 23, sub.clone()),
        4101,
        "subscription without RETRIEVE",
    );
    // The object details restrict CREATE to subscriptions.
    refused(
        &cin(u, "/cse-in/owner/c", &g.guest, "x"),
        4103,
        "a contentInstance is not in chty",
    );
    g.grant(json!({
        "acor": [g.guest], "acop": OP_CREATE | OP_RETRIEVE, "acod": [{ "chty": [23] }],
    }));
    ok(
        &create_full(u, "/cse-in/owner/c", &g.guest, 23, sub),
        2001,
        "subscription with CREATE and RETRIEVE",
    );
    rx.wait_for(Received::is_verification, WAIT);
    create_cin(u, "/cse-in/owner/c", &g.owner, "event");
    let n = rx.wait_for(|r| r.net() == Some(3), WAIT);
    assert_eq!(n.rep()["m2m:cin"]["con"], json!("event"), "{:?}", n.body);
}

#[test]
fn a_custodian_holds_the_creators_rights() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let owner = registered(u, "Cowner", "owner", "Nowner");
    let keeper = registered(u, "Ckeeper", "keeper", "Nkeeper");
    let third = registered(u, "Cthird", "third", "Nthird");
    refused(
        &create_full(
            u,
            "/cse-in/owner",
            &owner,
            3,
            json!({"m2m:cnt": {"rn": "c", "cstn": "someone"}}),
        ),
        4000,
        "a custodian that is no AE or CSE",
    );
    let r = create_full(
        u,
        "/cse-in/owner",
        &owner,
        3,
        json!({"m2m:cnt": {"rn": "c", "cstn": keeper}}),
    );
    ok(&r, 2001, "a container handed to a custodian");
    assert_eq!(r.body["m2m:cnt"]["cstn"], json!(keeper), "{:?}", r.body);
    // The custodian has every right the creator would have; the creator none left.
    ok(
        &retrieve_full(u, "/cse-in/owner/c", &keeper),
        2000,
        "the custodian retrieves",
    );
    ok(
        &cin(u, "/cse-in/owner/c", &keeper, "x"),
        2001,
        "the custodian writes an instance",
    );
    ok(
        &retrieve_full(u, "/cse-in/owner/c/la", &keeper),
        2000,
        "and reads it",
    );
    refused(
        &retrieve_full(u, "/cse-in/owner/c", &owner),
        4103,
        "the creator retrieves",
    );
    refused(
        &retrieve_full(u, "/cse-in/owner/c/la", &owner),
        4103,
        "the creator reads an instance",
    );
    refused(
        &retrieve_full(u, "/cse-in/owner/c", &third),
        4103,
        "a third AE retrieves",
    );
    refused(
        &put(
            u,
            "/cse-in/owner/c",
            &third,
            json!({"m2m:cnt": {"cstn": third}}),
        ),
        4103,
        "a third AE makes itself the custodian",
    );
    // Handing back: the custodian names the creator, in another ID form.
    ok(
        &put(
            u,
            "/cse-in/owner/c",
            &keeper,
            json!({"m2m:cnt": {"cstn": format!("/id-in/{owner}")}}),
        ),
        2004,
        "the custodian hands the container back",
    );
    ok(
        &retrieve_full(u, "/cse-in/owner/c", &owner),
        2000,
        "the named AE retrieves",
    );
    refused(
        &retrieve_full(u, "/cse-in/owner/c", &keeper),
        4103,
        "the former custodian retrieves",
    );
    // Without a custodian the creator holds the rights again.
    ok(
        &put(
            u,
            "/cse-in/owner/c",
            &owner,
            json!({"m2m:cnt": {"cstn": null, "lbl": ["mine"]}}),
        ),
        2004,
        "the custodian removed",
    );
    ok(
        &retrieve_full(u, "/cse-in/owner/c", &owner),
        2000,
        "the creator retrieves",
    );
    refused(
        &retrieve_full(u, "/cse-in/owner/c", &keeper),
        4103,
        "the former custodian retrieves",
    );

    // Under policies, naming a custodian takes their selfPrivileges, as changing them does:
    // UPDATE rights alone do not plant one for later.
    let acp = create_acp(
        u,
        "/cse-in/owner",
        &owner,
        "editors",
        vec![acr(&[&third], OP_UPDATE | OP_RETRIEVE)],
        vec![acr(&[&owner], OP_ALL)],
    );
    let r = create_full(
        u,
        "/cse-in/owner",
        &owner,
        3,
        json!({"m2m:cnt": {"rn": "shared", "acpi": [acp]}}),
    );
    ok(&r, 2001, "a container under policies");
    ok(
        &put(
            u,
            "/cse-in/owner/shared",
            &third,
            json!({"m2m:cnt": {"lbl": ["x"]}}),
        ),
        2004,
        "an editor updates",
    );
    refused(
        &put(
            u,
            "/cse-in/owner/shared",
            &third,
            json!({"m2m:cnt": {"cstn": third}}),
        ),
        4103,
        "an editor names itself custodian",
    );
    ok(
        &put(
            u,
            "/cse-in/owner/shared",
            &owner,
            json!({"m2m:cnt": {"cstn": keeper}}),
        ),
        2004,
        "the policies' owner names one",
    );
}

#[test]
fn rules_limited_to_attributes_grant_those_only() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let owner = registered(u, "Cowner", "owner", "Nowner");
    let reader = registered(u, "Creader", "reader", "Nreader");
    let writer = registered(u, "Cwriter", "writer", "Nwriter");
    let third = registered(u, "Cthird", "third", "Nthird");
    let (rsc, b) = create(
        u,
        "/cse-in/owner",
        &owner,
        1,
        json!({"m2m:acp": {"rn": "some", "pv": {"acr": [
            {"acor": [reader], "acop": OP_RETRIEVE, "aca": ["lbl"]},
            {"acor": [writer], "acop": OP_UPDATE, "aca": ["lbl"]},
            {"acor": [writer], "acop": OP_CREATE, "aca": ["con", "cnf"]},
            {"acor": [third], "acop": OP_DELETE, "aca": ["lbl"]},
        ]}, "pvs": {"acr": [{"acor": [owner], "acop": OP_ALL}]}}}),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:acp"]["pv"]["acr"][0]["aca"], json!(["lbl"]), "{b}");
    let acp = b["m2m:acp"]["ri"].as_str().expect("ri").to_owned();
    create_cnt(
        u,
        "/cse-in/owner",
        &owner,
        json!({"rn": "c", "lbl": ["shared"], "acpi": [acp]}),
    );

    // RETRIEVE: a partial retrieve of the covered attributes, nothing more.
    refused(
        &retrieve_full(u, "/cse-in/owner/c", &reader),
        4103,
        "the whole container",
    );
    let r = get_with_query_full(u, "/cse-in/owner/c", &reader, "atrl=lbl");
    ok(&r, 2000, "its labels");
    assert_eq!(r.body, json!({"m2m:cnt": {"lbl": ["shared"]}}));
    refused(
        &get_with_query_full(u, "/cse-in/owner/c", &reader, "atrl=lbl+cr"),
        4103,
        "labels and creator",
    );
    // Another originator does not share a rule's attributes (not even those of its own rule).
    refused(
        &get_with_query_full(u, "/cse-in/owner/c", &third, "atrl=lbl"),
        4103,
        "another's rule",
    );
    refused(
        &get_with_query_full(u, "/cse-in/owner/c", &writer, "atrl=lbl"),
        4103,
        "another operation's rule",
    );

    // UPDATE: only the covered attributes; the answer shows nothing, the writer holding no
    // RETRIEVE privilege (see `changing_or_removing_is_not_reading`).
    let (rsc, b) = update(
        u,
        "/cse-in/owner/c",
        &writer,
        json!({"m2m:cnt": {"lbl": ["changed"]}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(b, Value::Null, "nothing shown");
    let r = get_with_query_full(u, "/cse-in/owner/c", &reader, "atrl=lbl");
    assert_eq!(r.body, json!({"m2m:cnt": {"lbl": ["changed"]}}), "changed");
    let (rsc, b) = update(
        u,
        "/cse-in/owner/c",
        &writer,
        json!({"m2m:cnt": {"lbl": ["x"], "mni": 3}}),
    );
    assert_eq!(rsc, 4103, "{b}");

    // CREATE: a child whose content is within the rule; the answer shows only those.
    let (rsc, b) = create(
        u,
        "/cse-in/owner/c",
        &writer,
        4,
        json!({"m2m:cin": {"con": "hello", "cnf": "text/plain:0"}}),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(
        b,
        json!({"m2m:cin": {"con": "hello", "cnf": "text/plain:0"}})
    );
    let (rsc, b) = create(
        u,
        "/cse-in/owner/c",
        &writer,
        4,
        json!({"m2m:cin": {"con": "hello", "lbl": ["x"]}}),
    );
    assert_eq!(rsc, 4103, "{b}");

    // DELETE touches every attribute: a rule covering some does not grant it.
    let (rsc, b) = delete(u, "/cse-in/owner/c", &third);
    assert_eq!(rsc, 4103, "a delete by a labels-only rule: {b}");
    ok(
        &retrieve_full(u, "/cse-in/owner/c", "CAdmin"),
        2000,
        "still there",
    );
}

/// The privilege to change or remove a resource is not the privilege to read it: an UPDATE or
/// DELETE answers with the resource (its Result Content) only to an originator that may
/// RETRIEVE it, whatever the Result Content asks, on every kind of target (a resource with its
/// own policies, an instance governed by its container, `la`).
#[test]
fn changing_or_removing_is_not_reading() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let owner = registered(u, "Cowner", "owner", "Nowner");
    let changer = registered(u, "Cchanger", "changer", "Nchanger");
    let remover = registered(u, "Cremover", "remover", "Nremover");
    let reader = registered(u, "Creader", "reader", "Nreader");
    let (rsc, b) = create(
        u,
        "/cse-in/owner",
        &owner,
        1,
        json!({"m2m:acp": {"rn": "p", "pv": {"acr": [
            {"acor": [changer], "acop": OP_UPDATE},
            {"acor": [remover], "acop": OP_DELETE},
            {"acor": [reader], "acop": OP_UPDATE | OP_DELETE | OP_RETRIEVE},
            {"acor": [owner], "acop": OP_ALL},
        ]}, "pvs": {"acr": [{"acor": [owner], "acop": OP_ALL}]}}}),
    );
    assert_eq!(rsc, 2001, "{b}");
    let acp = b["m2m:acp"]["ri"].as_str().expect("ri").to_owned();
    let secret = "kept-from-writers";
    let fresh = |rn: &str| {
        create_cnt(
            u,
            "/cse-in/owner",
            &owner,
            json!({"rn": rn, "lbl": [secret], "acpi": [acp]}),
        );
        for i in 0..2 {
            ok(
                &cin(
                    u,
                    &format!("/cse-in/owner/{rn}"),
                    &owner,
                    &format!("{secret}-{i}"),
                ),
                2001,
                "instance",
            );
        }
    };
    fresh("c");

    // UPDATE with every Result Content that answers with content (1 is the default).
    for rcn in ["", "?rcn=1", "?rcn=9"] {
        let r = put(
            u,
            &format!("/cse-in/owner/c{rcn}"),
            &changer,
            json!({"m2m:cnt": {"mni": 10}}),
        );
        ok(
            &r,
            2004,
            &format!("UPDATE{rcn} by an UPDATE-only originator"),
        );
        assert_eq!(r.body, Value::Null, "UPDATE{rcn}: nothing shown");
    }
    // The change was made.
    let (_, b) = retrieve(u, "/cse-in/owner/c", &owner);
    assert_eq!(b["m2m:cnt"]["mni"], 10, "{b}");
    // With RETRIEVE as well, the answer shows the resource.
    let r = put(
        u,
        "/cse-in/owner/c",
        &reader,
        json!({"m2m:cnt": {"mni": 11}}),
    );
    ok(&r, 2004, "UPDATE by an originator that may read");
    assert_eq!(r.body["m2m:cnt"]["lbl"], json!([secret]), "{:?}", r.body);

    // UPDATE with rcn 9 (what the CSE changed besides): something to show, to a reader only.
    let r = put(
        u,
        "/cse-in/owner/c?rcn=9",
        &reader,
        json!({"m2m:cnt": {"mni": 12}}),
    );
    ok(&r, 2004, "UPDATE rcn=9 by an originator that may read");
    assert!(r.body["m2m:cnt"].is_object(), "{:?}", r.body);

    // DELETE with Result Content, of an instance addressed directly (governed by its
    // container), `la`, `ol`, and the container with its children (rcn 4) and their references
    // (rcn 5, 6): nothing shown to the DELETE-only originator, the resource to the one that may
    // also read, and to the administrator.
    let mut n = 0;
    for (what, rcn) in [
        ("instance", "1"),
        ("la", "1"),
        ("ol", "1"),
        ("", "4"),
        ("", "5"),
        ("", "6"),
    ] {
        for (who, shown) in [
            (&remover, false),
            (&reader, true),
            (&ADMIN.to_owned(), true),
        ] {
            n += 1;
            let rn = format!("d{n}");
            fresh(&rn);
            let path = match what {
                "instance" => {
                    let (_, la) = retrieve(u, &format!("/cse-in/owner/{rn}/la"), &owner);
                    let cin = la["m2m:cin"]["rn"].as_str().expect("rn").to_owned();
                    format!("/cse-in/owner/{rn}/{cin}")
                }
                "" => format!("/cse-in/owner/{rn}"),
                virtual_child => format!("/cse-in/owner/{rn}/{virtual_child}"),
            };
            let r = request(
                "DELETE",
                u,
                &format!("{path}?rcn={rcn}"),
                Some(who),
                None,
                None,
            );
            ok(&r, 2002, &format!("DELETE {path} rcn={rcn} by {who}"));
            if shown {
                // References (rcn 6) name the instances; the others show their content.
                let expected = if rcn == "6" { "cin" } else { secret };
                assert!(
                    r.body.to_string().contains(expected),
                    "DELETE {path} rcn={rcn} by {who}: shown: {:?}",
                    r.body
                );
            } else {
                assert_eq!(
                    r.body,
                    Value::Null,
                    "DELETE {path} rcn={rcn} by {who}: nothing shown"
                );
            }
        }
    }
}

#[test]
fn defaults_without_policies() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    // Not registered: not even the CSEBase; without a security association the impersonation
    // check answers first (TS-0003 clause 7.2.1: an unregistered AE-ID gives 4106).
    refused(
        &retrieve_full(u, "/cse-in", "Cstranger"),
        4106,
        "a stranger retrieves the CSEBase",
    );
    let ae = registered(u, "Cuser", "user", "Nuser");
    let r = retrieve_full(u, "/cse-in", &ae);
    ok(&r, 2000, "a registered AE retrieves the CSEBase");
    assert_eq!(r.body["m2m:cb"]["csi"], json!("/id-in"), "{:?}", r.body);
    // An SP-relative AE-ID (S...) registered here is a registree as well.
    let s_ae = registered(u, "Sdevice", "device", "Ndevice");
    assert_eq!(s_ae, "Sdevice");
    ok(
        &retrieve_full(u, "/cse-in", &s_ae),
        2000,
        "a registered S-AE retrieves the CSEBase",
    );
    refused(
        &create_full(u, "/cse-in", &ae, 3, json!({ "m2m:cnt": { "rn": "top" } })),
        4103,
        "a registered AE creates a container under the CSEBase",
    );
    refused(
        &put(u, "/cse-in", &ae, json!({ "m2m:cb": { "lbl": ["x"] } })),
        4103,
        "a registered AE updates the CSEBase",
    );
    // The AE owns its own <AE> resource and what it creates.
    create_cnt(u, "/cse-in/user", &ae, json!({ "rn": "mine" }));
    ok(
        &retrieve_full(u, "/cse-in/user", &ae),
        2000,
        "the AE retrieves its own resource",
    );
    refused(
        &retrieve_full(u, "/cse-in/user/mine", "Cstranger"),
        4106,
        "a stranger retrieves the AE's container",
    );
    let other = registered(u, "Cneighbour", "neighbour", "Nuser");
    refused(
        &retrieve_full(u, "/cse-in/user", &other),
        4103,
        "another AE retrieves the AE",
    );
    // Child lists are filtered as well: each AE sees only itself under the CSEBase (level 1),
    // and of the descendants (every level) only its own.
    let listed = |from: &str, query: &str| -> Vec<String> {
        let r = get_with_query_full(u, "/cse-in", from, query);
        ok(&r, 2000, &format!("child resource references for {from}"));
        let mut names: Vec<String> = r.body["m2m:rrl"]["rrf"]
            .as_array()
            .unwrap_or_else(|| panic!("no m2m:rrl/rrf: {:?}", r.body))
            .iter()
            .map(|c| c["nm"].as_str().expect("nm").to_owned())
            .collect();
        names.sort();
        names
    };
    let children = |from: &str| listed(from, "rcn=6&lvl=1");
    assert_eq!(children(&other), vec!["neighbour"]);
    assert_eq!(children(&ae), vec!["user"]);
    assert_eq!(children(&s_ae), vec!["device"]);
    // The admin also sees the CSE's own system default notificationTargetPolicy.
    assert_eq!(
        children(ADMIN),
        vec!["defaultNTP", "device", "neighbour", "user"]
    );
    assert_eq!(listed(&other, "rcn=6"), vec!["neighbour"]);
    assert_eq!(listed(&ae, "rcn=6"), vec!["mine", "user"]);

    // The admin can do everything.
    ok(&retrieve_full(u, "/cse-in", ADMIN), 2000, "admin retrieve");
    ok(
        &create_full(
            u,
            "/cse-in",
            ADMIN,
            3,
            json!({ "m2m:cnt": { "rn": "top" } }),
        ),
        2001,
        "admin creates under the CSEBase",
    );
    ok(
        &retrieve_full(u, "/cse-in/user/mine", ADMIN),
        2000,
        "admin retrieves the AE's container",
    );
    ok(
        &put(
            u,
            "/cse-in/user/mine",
            ADMIN,
            json!({ "m2m:cnt": { "lbl": ["admin"] } }),
        ),
        2004,
        "admin updates it",
    );
    ok(
        &cin(u, "/cse-in/user/mine", ADMIN, "by-admin"),
        2001,
        "admin writes in it",
    );
    let (rsc, b) = delete(u, "/cse-in/user/mine", ADMIN);
    assert_eq!(rsc, 2002, "admin deletes it: {b}");
    let (rsc, b) = delete(u, "/cse-in/top", ADMIN);
    assert_eq!(rsc, 2002, "{b}");
}

#[test]
fn registration_rules() {
    let cse = CseProcess::start_temp(
        "[[registration.rules]]\naai = [\"Ndoorlock\"]\naae = [\"Clock*\"]\n",
    );
    let u = cse.url();
    ok(
        &register(u, "Clock-AE1", "lock1", "Ndoorlock"),
        2001,
        "a lock registers",
    );
    refused(
        &register(u, "Clock-AE2", "lock2", "Nother"),
        4126,
        "an App-ID no rule allows",
    );
    refused(
        &register(u, "Cphone", "phone", "Ndoorlock"),
        4126,
        "an AE-ID no rule allows",
    );
    refused(
        &register(u, "Cphone", "phone", "Nphone"),
        4126,
        "the phone before its rule",
    );
    refused(
        &register(u, "Clock-AE3", "lock3", "doorlock"),
        4000,
        "an App-ID not starting with R or N",
    );

    let asar = |rn: &str, aai: &[&str], aae: &[&str]| json!({ "m2m:asar": { "rn": rn, "aai": aai, "aae": aae } });
    // Only the admin manages the rules (an unregistered originator without a security
    // association is stopped by the impersonation check first: 4106).
    refused(
        &create_full(u, "/cse-in", "Clock-AE1", 19, asar("mine", &["*"], &["C*"])),
        4103,
        "a registered AE creates a rule",
    );
    refused(
        &create_full(u, "/cse-in", "Cphone", 19, asar("mine", &["*"], &["C*"])),
        4106,
        "an unregistered originator creates a rule",
    );
    refused(
        &create_full(u, "/cse-in", ADMIN, 19, asar("bad", &["lock"], &["C*"])),
        4000,
        "allowedApp-IDs must start with *, R or N",
    );
    let r = create_full(
        u,
        "/cse-in",
        ADMIN,
        19,
        asar("phones", &["Nphone*"], &["Cphone*"]),
    );
    ok(&r, 2001, "the admin creates a rule");
    assert_eq!(r.body["m2m:asar"]["ty"], json!(19), "{:?}", r.body);
    ok(
        &register(u, "Cphone", "phone", "Nphone"),
        2001,
        "the phone under its rule",
    );
    refused(
        &register(u, "Cphone2", "phone2", "Ndoorlock"),
        4126,
        "neither rule admits a phone AE-ID with the lock App-ID",
    );
    ok(
        &register(u, "Clock-AE2", "lock2", "Ndoorlock"),
        2001,
        "the configured rule still holds",
    );
    // The rule resources survive a restart.
    let cse = cse.restart();
    let u = cse.url();
    ok(
        &register(u, "Cphone3", "phone3", "Nphone"),
        2001,
        "a phone after a restart",
    );
    refused(
        &register(u, "Cother", "other", "Nother"),
        4126,
        "still no rule for others after a restart",
    );
    // The rule is the admin's to read, change and remove; a registered AE may not read it.
    ok(
        &retrieve_full(u, "/cse-in/phones", ADMIN),
        2000,
        "the admin reads the rule",
    );
    refused(
        &retrieve_full(u, "/cse-in/phones", "Cphone3"),
        4103,
        "an AE reads the rule",
    );
    let narrower = json!({ "m2m:asar": { "aae": ["Cphone9*"] } });
    ok(
        &put(u, "/cse-in/phones", ADMIN, narrower),
        2004,
        "the admin narrows the rule",
    );
    refused(
        &register(u, "Cphone4", "phone4", "Nphone"),
        4126,
        "an AE-ID the narrowed rule no longer admits",
    );
    ok(
        &register(u, "Cphone9", "phone9", "Nphone"),
        2001,
        "an AE-ID the narrowed rule admits",
    );
    assert_eq!(delete(u, "/cse-in/phones", ADMIN).0, 2002);
    refused(
        &register(u, "Cphone95", "phone95", "Nphone"),
        4126,
        "no rule for phones once it is deleted",
    );
}

/// The resourceID of a response's resource.
fn ri_of(r: &Resp, root: &str) -> String {
    r.body[root]["ri"]
        .as_str()
        .unwrap_or_else(|| panic!("no {root}/ri: {:?}", r.body))
        .to_owned()
}

/// References that decide access (acpi, acor groups, macp, daci) name the resource they named
/// when written, in whatever ID form they were written: a policy or group made again under a
/// deleted one's name by someone who may create there decides nothing.
#[test]
fn references_keep_to_the_resource_they_named() {
    let g = guest();
    let u = g.cse.url();
    let owner = g.owner.clone();
    let helper = registered(u, "Chelper", "helper", "Nhelper");
    // The helper may create under the owner's AE (a service the owner uses), nothing more.
    let ae_acp = create_acp(
        u,
        "/cse-in/owner",
        &owner,
        "aeacp",
        vec![acr(&[&owner], OP_ALL), acr(&[&helper], OP_CREATE)],
        vec![acr(&[&owner], OP_ALL)],
    );
    set_acpi(u, "/cse-in/owner", &owner, "m2m:ae", &[&ae_acp]);
    let acp = retrieve_full(u, "/cse-in/owner/acp", &owner);
    let acp = ri_of(&acp, "m2m:acp");

    // acpi in every form that names a place is kept as the resourceID it named.
    let guest_acp = create_acp(
        u,
        "/cse-in/owner",
        &owner,
        "guestp",
        vec![acr(&[&g.guest], OP_RETRIEVE)],
        vec![acr(&[&owner], OP_ALL)],
    );
    for form in [
        "cse-in/owner/guestp".to_owned(),
        "-/owner/guestp".to_owned(),
        "/id-in/cse-in/owner/guestp".to_owned(),
        format!("//{SP_FQDN}/id-in/cse-in/owner/guestp"),
        format!("{owner}/guestp"),
        guest_acp.clone(),
    ] {
        let (rsc, b) = update(
            u,
            "/cse-in/owner/c",
            &owner,
            json!({ "m2m:cnt": { "acpi": [form.clone(), acp.clone()] } }),
        );
        assert_eq!(rsc, 2004, "acpi {form}: {b}");
        assert_eq!(b["m2m:cnt"]["acpi"], json!([guest_acp, acp]), "acpi {form}");
        let (_, b) = retrieve(u, "/cse-in/owner/c", &owner);
        assert_eq!(
            b["m2m:cnt"]["acpi"],
            json!([guest_acp, acp]),
            "stored {form}"
        );
    }
    ok(&g.read(), 2000, "the guest under the owner's policy");
    let (rsc, b) = delete(u, "/cse-in/owner/guestp", &owner);
    assert_eq!(rsc, 2002, "{b}");
    refused(&g.read(), 4103, "the guest once the policy is gone");
    // The helper makes a policy of its own under the deleted one's name.
    create_acp(
        u,
        "/cse-in/owner",
        &helper,
        "guestp",
        vec![acr(&[&helper, &g.guest], OP_ALL)],
        vec![acr(&[&helper], OP_ALL)],
    );
    let as_helper = |method: &str| request(method, u, "/cse-in/owner/c", Some(&helper), None, None);
    refused(
        &as_helper("GET"),
        4103,
        "the helper reads through its look-alike policy",
    );
    refused(
        &as_helper("DELETE"),
        4103,
        "the helper deletes through its look-alike policy",
    );
    refused(&g.read(), 4103, "the guest through the look-alike policy");

    // A group in accessControlOriginators, named by its place: kept as the group it named.
    let r = create_full(
        u,
        "/cse-in/owner",
        &owner,
        9,
        json!({ "m2m:grp": { "rn": "friends", "mt": 2, "mnm": 10, "mid": [g.guest] } }),
    );
    ok(&r, 2001, "the owner's group");
    let friends = ri_of(&r, "m2m:grp");
    let (rsc, b) = update(
        u,
        "/cse-in/owner/acp",
        &owner,
        json!({ "m2m:acp": { "pv": { "acr": [
            acr(&[&owner], OP_ALL),
            acr(&["cse-in/owner/friends", "/id-in/Cguest"], OP_RETRIEVE),
        ] } } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(
        b["m2m:acp"]["pv"]["acr"][1]["acor"],
        json!([friends, "/id-in/Cguest"]),
        "the group pinned, an AE-ID as written"
    );
    set_acpi(u, "/cse-in/owner/c", &owner, "m2m:cnt", &[&acp]);
    let (rsc, b) = delete(u, "/cse-in/owner/friends", &owner);
    assert_eq!(rsc, 2002, "{b}");
    let r = create_full(
        u,
        "/cse-in/owner",
        &helper,
        9,
        json!({ "m2m:grp": { "rn": "friends", "mt": 2, "mnm": 10, "mid": [helper] } }),
    );
    ok(&r, 2001, "the helper's look-alike group");
    refused(
        &as_helper("GET"),
        4103,
        "the helper as a member of its look-alike group",
    );
    ok(&g.read(), 2000, "the guest by its AE-ID");

    // A place that holds no resource of the right type is refused, in every attribute.
    for (root, attr, bad) in [
        ("m2m:cnt", "acpi", "cse-in/owner/c"),
        ("m2m:cnt", "acpi", "cse-in/owner/nothing"),
        ("m2m:cnt", "daci", "cse-in/owner/acp"),
        ("m2m:grp", "macp", "cse-in/owner/c"),
    ] {
        let target = if root == "m2m:grp" {
            "/cse-in/owner/friends"
        } else {
            "/cse-in/owner/c"
        };
        let by = if root == "m2m:grp" { &helper } else { &owner };
        refused(
            &put(u, target, by, json!({ root: { attr: [bad] } })),
            4000,
            &format!("{attr} naming {bad}"),
        );
    }
    for bad in ["cse-in/owner/c", "cse-in/owner/nothing", "-/owner/friendz"] {
        refused(
            &put(
                u,
                "/cse-in/owner/acp",
                &owner,
                json!({ "m2m:acp": { "pv": { "acr": [acr(&[bad], OP_RETRIEVE)] } } }),
            ),
            4000,
            &format!("acor naming {bad}"),
        );
    }
    // membersAccessControlPolicyIDs and dynamicAuthorizationConsultationIDs are pinned too.
    let (rsc, b) = update(
        u,
        "/cse-in/owner/friends",
        &helper,
        json!({ "m2m:grp": { "macp": ["cse-in/owner/guestp"] } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    let look_alike = retrieve_full(u, "/cse-in/owner/guestp", &helper);
    assert_eq!(
        b["m2m:grp"]["macp"],
        json!([ri_of(&look_alike, "m2m:acp")]),
        "{b}"
    );
    let (rsc, dac) = create(
        u,
        "/cse-in",
        ADMIN,
        34,
        json!({ "m2m:dac": { "rn": "dac", "dae": false, "dap": ["https://das.example.com"] } }),
    );
    assert_eq!(rsc, 2001, "{dac}");
    let (rsc, b) = create(
        u,
        "/cse-in/owner",
        &owner,
        3,
        json!({ "m2m:cnt": { "rn": "d", "daci": ["/id-in/cse-in/dac"] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:cnt"]["daci"], json!([dac["m2m:dac"]["ri"]]), "{b}");
}

/// A store written before references were pinned (schema version 5) is pinned once at start:
/// a structured acpi entry naming a policy then keeps naming it; one naming nothing decides
/// nothing, whatever is made at its place later.
#[test]
fn references_stored_by_name_are_pinned_at_start() {
    let g = guest();
    let u = g.cse.url().to_owned();
    let owner = g.owner.clone();
    let (_, b) = retrieve(&u, "/cse-in/owner/acp", &owner);
    let acp = b["m2m:acp"]["ri"].as_str().unwrap().to_owned();
    let guest_acp = create_acp(
        &u,
        "/cse-in/owner",
        &owner,
        "guestp",
        vec![acr(&[&g.guest], OP_RETRIEVE)],
        vec![acr(&[&owner], OP_ALL)],
    );
    let (_, b) = retrieve(&u, "/cse-in/owner/c", &owner);
    let c = b["m2m:cnt"]["ri"].as_str().unwrap().to_owned();
    let data = g.cse.data_dir().to_owned();
    let mut cse = g.cse;
    cse.kill9();
    // As an earlier version stored it: names, and no task to pin them.
    let db = rusqlite::Connection::open(data.join("resources.db")).unwrap();
    let doc: String = db
        .query_row("SELECT doc FROM resources WHERE ri = ?1", [&c], |r| {
            r.get(0)
        })
        .unwrap();
    let mut v: Value = serde_json::from_str(&doc).unwrap();
    let by_name = json!(["cse-in/owner/guestp", "cse-in/owner/later", acp]);
    match v.get_mut("acpi") {
        Some(a) => *a = by_name,
        None => {
            let inner = v.as_object_mut().unwrap().values_mut().next().unwrap();
            inner["acpi"] = by_name;
        }
    }
    db.execute(
        "UPDATE resources SET doc = ?1 WHERE ri = ?2",
        rusqlite::params![v.to_string(), c],
    )
    .unwrap();
    db.execute_batch("DROP TABLE upkeep; PRAGMA user_version = 5;")
        .unwrap();
    drop(db);
    let cse = cse.restart();
    let u = cse.url().to_owned();
    let (rsc, b) = retrieve(&u, "/cse-in/owner/c", &owner);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(
        b["m2m:cnt"]["acpi"],
        json!([guest_acp, "cse-in/owner/later", acp]),
        "pinned what it named, kept what names nothing"
    );
    assert!(
        cse.logged("access references written by name pinned"),
        "{}",
        cse.stderr()
    );
    ok(
        &retrieve_full(&u, "/cse-in/owner/c/la", &g.guest),
        2000,
        "the guest through the pinned policy",
    );
    // A policy made later at the place the other entry names decides nothing.
    create_acp(
        &u,
        "/cse-in/owner",
        &owner,
        "later",
        vec![acr(&["Cstranger"], OP_ALL)],
        vec![acr(&[&owner], OP_ALL)],
    );
    let stranger = registered(&u, "Cstranger", "stranger", "Nstranger");
    refused(
        &retrieve_full(&u, "/cse-in/owner/c/la", &stranger),
        4103,
        "a policy at the place of an unpinned name",
    );
    // Once: the next start has nothing to pin.
    let cse = cse.restart();
    assert!(
        !cse.logged("access references written by name pinned"),
        "{}",
        cse.stderr()
    );
}
