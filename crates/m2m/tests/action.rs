//! `<action>` and `<dependency>` (Release 4) on a real `m2m cse` over HTTP: an UPDATE of the
//! subject that meets the criteria runs the action's primitive as its creator, once or every
//! time, only when its dependencies are met, never with more rights than its creator has now.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A CSE and an AE `app` (From `Cact`) with containers `sensor`, `alarm` and `gate`.
struct Setup {
    cse: CseProcess,
    ae: String,
}

fn setup() -> Setup {
    let cse = CseProcess::start_in();
    let ae = register_ae(cse.url(), "/cse-in", "Cact", "app", &[]);
    for c in ["sensor", "alarm", "gate"] {
        create_cnt(cse.url(), "/cse-in/app", &ae, json!({ "rn": c }));
    }
    Setup { cse, ae }
}

/// An action on `sensor`: when its maxNrOfInstances exceeds 10, label `alarm`.
fn alarm_action(s: &Setup, rn: &str, evm: u64, extra: Value) -> (u16, Value) {
    let mut a = json!({
        "rn": rn,
        "evc": { "optr": 3, "sbjt": "mni", "thld": 10 },
        "evm": evm,
        "orc": "cse-in/app/alarm",
        "apv": { "op": 3, "fr": s.ae, "pc": { "m2m:cnt": { "lbl": [rn] } } },
    });
    a.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    create(
        s.cse.url(),
        "/cse-in/app/sensor",
        &s.ae,
        65,
        json!({ "m2m:actr": a }),
    )
}

fn set_mni(s: &Setup, cnt: &str, mni: u64) {
    let (rsc, b) = update(
        s.cse.url(),
        &format!("/cse-in/app/{cnt}"),
        &s.ae,
        json!({ "m2m:cnt": { "mni": mni } }),
    );
    assert_eq!(rsc, 2004, "{b}");
}

fn alarm_labels(s: &Setup) -> Value {
    retrieve(s.cse.url(), "/cse-in/app/alarm", &s.ae).1["m2m:cnt"]["lbl"].clone()
}

/// Another AE, `Cowner`, with a container `door` its own: the AE-ID.
fn owner_with_door(s: &Setup) -> String {
    let owner = register_ae(s.cse.url(), "/cse-in", "Cowner", "owner", &[]);
    create_cnt(
        s.cse.url(),
        "/cse-in/owner",
        &owner,
        json!({ "rn": "door" }),
    );
    owner
}

fn action(s: &Setup, rn: &str) -> Value {
    let (rsc, b) = retrieve(s.cse.url(), &format!("/cse-in/app/sensor/{rn}"), &s.ae);
    assert_eq!(rsc, 2000, "{b}");
    b["m2m:actr"].clone()
}

#[test]
fn an_action_runs_once_when_its_subject_meets_the_criteria() {
    let s = setup();
    let (rsc, b) = alarm_action(&s, "once", 1, json!({}));
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:actr"]["ty"], json!(65));
    set_mni(&s, "sensor", 5);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(alarm_labels(&s), Value::Null, "5 is not above 10");
    set_mni(&s, "sensor", 20);
    let air = poll(WAIT, || {
        let a = action(&s, "once");
        a.get("air").cloned()
    })
    .expect("the action ran");
    assert_eq!(air["rsc"], json!(2004), "{air}");
    assert_eq!(air["pc"]["m2m:cnt"]["lbl"], json!(["once"]), "{air}");
    assert_eq!(alarm_labels(&s), json!(["once"]));
    assert_eq!(action(&s, "once")["evm"], json!(0), "once, then off");
    // Off: another qualifying update does nothing.
    update(
        s.cse.url(),
        "/cse-in/app/alarm",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": ["reset"] } }),
    );
    set_mni(&s, "sensor", 30);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(alarm_labels(&s), json!(["reset"]));
}

#[test]
fn a_continuous_action_waits_for_its_dependency() {
    let s = setup();
    let (rsc, b) = alarm_action(&s, "cont", 3, json!({}));
    assert_eq!(rsc, 2001, "{b}");
    // The gate must have maxNrOfInstances 100 (a necessary dependency).
    let (rsc, d) = create(
        s.cse.url(),
        "/cse-in/app/sensor/cont",
        &s.ae,
        66,
        json!({ "m2m:depr": { "rn": "gate-set", "sfc": false, "evc": { "optr": 1, "sbjt": "mni", "thld": 100 }, "rri": "cse-in/app/gate" } }),
    );
    assert_eq!(rsc, 2001, "{d}");
    let dep = d["m2m:depr"]["ri"].as_str().unwrap().to_owned();
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/sensor/cont",
        &s.ae,
        json!({ "m2m:actr": { "dep": [dep] } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    set_mni(&s, "sensor", 20);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(alarm_labels(&s), Value::Null, "the dependency is not met");
    set_mni(&s, "gate", 100);
    set_mni(&s, "sensor", 21);
    assert!(
        poll(WAIT, || (alarm_labels(&s) == json!(["cont"])).then_some(())).is_some(),
        "ran once the dependency was met"
    );
    // Continuous: it runs again at the next qualifying update.
    update(
        s.cse.url(),
        "/cse-in/app/alarm",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": ["reset"] } }),
    );
    set_mni(&s, "sensor", 22);
    assert!(poll(WAIT, || (alarm_labels(&s) == json!(["cont"])).then_some(())).is_some());
    assert_eq!(action(&s, "cont")["evm"], json!(3));
    // The dependency reads back and is changed like any resource of its owner.
    let path = "/cse-in/app/sensor/cont/gate-set";
    let (rsc, b) = retrieve(s.cse.url(), path, &s.ae);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(
        (b["m2m:depr"]["rri"].clone(), b["m2m:depr"]["sfc"].clone()),
        (json!("cse-in/app/gate"), json!(false)),
        "{b}"
    );
    let (rsc, b) = update(
        s.cse.url(),
        path,
        &s.ae,
        json!({ "m2m:depr": { "sfc": true } }),
    );
    assert_eq!(
        (rsc, b["m2m:depr"]["sfc"].clone()),
        (2004, json!(true)),
        "{b}"
    );
    // A deleted dependency stays listed and is not met: the action is held (deleting a
    // dependency never lifts the action's precondition), and it can still be updated.
    let (rsc, b) = delete(s.cse.url(), "/cse-in/app/sensor/cont/gate-set", &s.ae);
    assert_eq!(rsc, 2002, "{b}");
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/sensor/cont",
        &s.ae,
        json!({ "m2m:actr": { "lbl": ["held"] } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(action(&s, "cont")["dep"], json!([dep]));
    update(
        s.cse.url(),
        "/cse-in/app/alarm",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": ["reset"] } }),
    );
    set_mni(&s, "sensor", 23);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        alarm_labels(&s),
        json!(["reset"]),
        "held by the missing dependency"
    );
    // A dependency added by name must exist.
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/sensor/cont",
        &s.ae,
        json!({ "m2m:actr": { "dep": [dep, "cse-in/app/sensor/cont/nothing"] } }),
    );
    assert_eq!(rsc, 4000);
}

/// A periodic action without `ecp` gets the CSE's period (10 s): it is accepted, shows no `ecp`,
/// and runs at most once in that period.
#[test]
fn a_periodic_action_without_a_period_gets_the_default() {
    let s = setup();
    let (rsc, b) = alarm_action(&s, "p", 2, json!({}));
    assert_eq!(rsc, 2001, "{b}");
    set_mni(&s, "sensor", 20);
    assert!(poll(WAIT, || (alarm_labels(&s) == json!(["p"])).then_some(())).is_some());
    update(
        s.cse.url(),
        "/cse-in/app/alarm",
        &s.ae,
        json!({ "m2m:cnt": { "lbl": ["reset"] } }),
    );
    set_mni(&s, "sensor", 21);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(alarm_labels(&s), json!(["reset"]), "not twice in 10 s");
    // An action switched to periodic by an UPDATE is accepted as well.
    let (rsc, b) = alarm_action(&s, "q", 1, json!({}));
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/sensor/q",
        &s.ae,
        json!({ "m2m:actr": { "evm": 2 } }),
    );
    assert_eq!(rsc, 2004, "{b}");
}

#[test]
fn an_action_never_has_more_rights_than_its_creator() {
    let s = setup();
    let owner = owner_with_door(&s);
    // A recipient the creator cannot reach: refused at creation.
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/app/sensor",
        &s.ae,
        65,
        json!({ "m2m:actr": { "evc": { "optr": 3, "sbjt": "mni", "thld": 10 }, "evm": 3,
                "orc": "cse-in/owner/door",
                "apv": { "op": 3, "fr": s.ae, "pc": { "m2m:cnt": { "lbl": ["open"] } } } } }),
    );
    assert_eq!(rsc, 4000, "the creator cannot even read the door");
    // The primitive may not speak for anyone else.
    let (rsc, _) = alarm_action(
        &s,
        "posing",
        3,
        json!({ "apv": { "op": 3, "fr": owner, "pc": { "m2m:cnt": { "lbl": ["x"] } } } }),
    );
    assert_eq!(rsc, 4000, "apv.fr is not the creator");
    // The owner lets the app read and update the door, the app makes an action on it, then the
    // owner takes the update right back: the action runs and is refused.
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/owner",
        &owner,
        1,
        json!({ "m2m:acp": { "rn": "acp", "pv": { "acr": [
            { "acor": [owner.as_str()], "acop": 63 }, { "acor": [s.ae.as_str()], "acop": 6 }
        ] }, "pvs": { "acr": [{ "acor": [owner.as_str()], "acop": 63 }] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/owner/door",
        &owner,
        json!({ "m2m:cnt": { "acpi": ["cse-in/owner/acp"] } }),
    );
    assert_eq!(rsc, 2004);
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/sensor",
        &s.ae,
        65,
        json!({ "m2m:actr": { "rn": "opener", "evc": { "optr": 3, "sbjt": "mni", "thld": 10 }, "evm": 3,
                "orc": "cse-in/owner/door",
                "apv": { "op": 3, "fr": s.ae, "pc": { "m2m:cnt": { "lbl": ["open"] } } } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/owner/acp",
        &owner,
        json!({ "m2m:acp": { "pv": { "acr": [
            { "acor": [owner.as_str()], "acop": 63 }, { "acor": [s.ae.as_str()], "acop": 2 }
        ] } } }),
    );
    assert_eq!(rsc, 2004);
    set_mni(&s, "sensor", 50);
    let air = poll(WAIT, || action(&s, "opener").get("air").cloned()).expect("ran");
    assert_eq!(air["rsc"], json!(4103), "{air}");
    let (_, door) = retrieve(s.cse.url(), "/cse-in/owner/door", &owner);
    assert!(
        door["m2m:cnt"].get("lbl").is_none(),
        "the door is untouched: {door}"
    );
}

#[test]
fn bad_input_gets_its_status_code() {
    let s = setup();
    assert_eq!(
        alarm_action(&s, "p", 2, json!({ "ecp": 10 })).0,
        4000,
        "a period of 10 ms"
    );
    assert_eq!(
        alarm_action(&s, "p", 2, json!({ "ecp": "soon" })).0,
        4000,
        "a period that is no duration"
    );
    assert_eq!(
        alarm_action(&s, "e", 1, json!({ "ecp": {} })).0,
        4000,
        "ecp with once"
    );
    for ecp in [json!(0), json!(-1), json!(1.5), json!("PT2S"), json!("2")] {
        assert_eq!(
            alarm_action(&s, "c", 3, json!({ "ecp": ecp })).0,
            4000,
            "a continuous evaluation's ecp {ecp} is no number of runs"
        );
    }
    // Ordering operators compare numbers or strings; a list, a boolean or an object is no
    // threshold for them, whatever the attribute.
    for optr in 3..=6 {
        for thld in [json!(["x"]), json!(true), json!({ "a": 1 })] {
            let (rsc, b) = alarm_action(
                &s,
                "o",
                1,
                json!({ "evc": { "optr": optr, "sbjt": "lbl", "thld": thld } }),
            );
            assert_eq!(rsc, 4000, "optr {optr} with {thld}: {b}");
        }
    }
    let (rsc, b) = alarm_action(
        &s,
        "o",
        1,
        json!({ "evc": { "optr": 1, "sbjt": "lbl", "thld": ["x"] } }),
    );
    assert_eq!(rsc, 2001, "equality takes a list: {b}");
    // The action keeps its primitive: a device configuration secret in it must be protected.
    let (rsc, b) = alarm_action(
        &s,
        "leak",
        1,
        json!({ "apv": { "op": 3, "fr": s.ae, "pc": { "dcfg:crds": { "crse": "hunter2-secret" } } } }),
    );
    assert_eq!(rsc, 4000, "{b}");
    assert!(!b.to_string().contains("hunter2"), "{b}");
    assert_eq!(delete(s.cse.url(), "/cse-in/app/sensor/o", &s.ae).0, 2002);
    assert_eq!(
        alarm_action(
            &s,
            "n",
            1,
            json!({ "evc": { "optr": 3, "sbjt": "nothing", "thld": 1 } })
        )
        .0,
        4000,
        "the subject has no such attribute"
    );
    assert_eq!(
        alarm_action(
            &s,
            "o",
            1,
            json!({ "evc": { "optr": 9, "sbjt": "mni", "thld": 1 } })
        )
        .0,
        4000,
        "operator 9"
    );
    assert_eq!(
        alarm_action(&s, "d", 1, json!({ "dep": ["cse-in/app/gate"] })).0,
        4000,
        "dep not a child dependency"
    );
    assert_eq!(
        alarm_action(&s, "r", 1, json!({ "air": {} })).0,
        4000,
        "air is the CSE's"
    );
    assert_eq!(
        alarm_action(
            &s,
            "nt",
            1,
            json!({ "apv": { "op": 5, "fr": s.ae, "pc": { "m2m:sgn": {} } } })
        )
        .0,
        4000,
        "no NOTIFY in the CSE's name"
    );
    assert_eq!(
        alarm_action(&s, "s", 1, json!({ "sri": "cse-in/app/none" })).0,
        4000,
        "no such subject"
    );
    let (rsc, _) = alarm_action(&s, "ok", 1, json!({}));
    assert_eq!(rsc, 2001);
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/sensor/ok",
        &s.ae,
        json!({ "m2m:actr": { "orc": null } }),
    );
    assert_eq!(rsc, 4000, "orc is mandatory");
    // A dependency lives under an action only, and refers to an attribute that exists.
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/app",
        &s.ae,
        66,
        json!({ "m2m:depr": { "sfc": true, "evc": { "optr": 1, "sbjt": "mni", "thld": 1 }, "rri": "cse-in/app/gate" } }),
    );
    assert_eq!(rsc, 4108);
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/app/sensor/ok",
        &s.ae,
        66,
        json!({ "m2m:depr": { "sfc": true, "evc": { "optr": 1, "sbjt": "nothing", "thld": 1 }, "rri": "cse-in/app/gate" } }),
    );
    assert_eq!(rsc, 4000);
    // A dependency on what the originator cannot read would reveal it.
    let owner = register_ae(s.cse.url(), "/cse-in", "Csecret", "secret", &[]);
    create_cnt(
        s.cse.url(),
        "/cse-in/secret",
        &owner,
        json!({ "rn": "vault" }),
    );
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/app/sensor/ok",
        &s.ae,
        66,
        json!({ "m2m:depr": { "sfc": true, "evc": { "optr": 3, "sbjt": "cni", "thld": 0 }, "rri": "cse-in/secret/vault" } }),
    );
    assert_eq!(rsc, 4000, "the vault is not the app's to read");
    // Discovery finds it; another AE does not see it.
    let (_, b) = get_with_query(s.cse.url(), "/cse-in/app", &s.ae, "fu=1&ty=65");
    assert_eq!(b["m2m:uril"].as_array().map(Vec::len), Some(1), "{b}");
    let other = register_ae(s.cse.url(), "/cse-in", "Cother", "other", &[]);
    let (rsc, _) = retrieve(s.cse.url(), "/cse-in/app/sensor/ok", &other);
    assert_eq!(rsc, 4103);
}

#[test]
fn new_instances_change_the_subject_too() {
    let s = setup();
    // When the sensor holds more than one instance, label the alarm.
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/sensor",
        &s.ae,
        65,
        json!({ "m2m:actr": { "rn": "count", "evc": { "optr": 3, "sbjt": "cni", "thld": 1 }, "evm": 1,
                "orc": "cse-in/app/alarm",
                "apv": { "op": 3, "fr": s.ae, "pc": { "m2m:cnt": { "lbl": ["two"] } } } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    create_cin(s.cse.url(), "/cse-in/app/sensor", &s.ae, "1");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        alarm_labels(&s),
        Value::Null,
        "one instance is not more than one"
    );
    create_cin(s.cse.url(), "/cse-in/app/sensor", &s.ae, "2");
    assert!(poll(WAIT, || (alarm_labels(&s) == json!(["two"])).then_some(())).is_some());
    // A threshold of another kind than the counter: 4000.
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/app/sensor",
        &s.ae,
        65,
        json!({ "m2m:actr": { "evc": { "optr": 3, "sbjt": "cni", "thld": "many" }, "evm": 1,
                "orc": "cse-in/app/alarm",
                "apv": { "op": 3, "fr": s.ae, "pc": { "m2m:cnt": { "lbl": ["x"] } } } } }),
    );
    assert_eq!(rsc, 4000);
}

/// An action tells nothing of a subject its creator may not read: a subject that does not
/// exist, one that exists without the attribute, and one that has it all get the same answer.
#[test]
fn an_action_reveals_nothing_of_an_unreadable_subject() {
    let s = setup();
    let owner = register_ae(s.cse.url(), "/cse-in", "Csecret", "secret", &[]);
    create_cnt(
        s.cse.url(),
        "/cse-in/secret",
        &owner,
        json!({ "rn": "vault" }),
    );
    let mut answers = Vec::new();
    for (sri, sbjt) in [
        ("cse-in/secret/vault", "mni"),
        ("cse-in/secret/vault", "nothing"),
        ("cse-in/secret/none", "mni"),
    ] {
        let (rsc, b) = alarm_action(
            &s,
            "probe",
            1,
            json!({ "sri": sri, "evc": { "optr": 3, "sbjt": sbjt, "thld": 10 } }),
        );
        assert_eq!(rsc, 4000, "{sri} {sbjt}: {b}");
        answers.push(b.to_string());
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "the answers differ: {answers:?}"
    );
}

#[test]
fn a_periodic_action_runs_at_most_once_a_period() {
    let s = setup();
    // Each run writes an instance into the alarm container: its count is the count of runs.
    let (rsc, b) = alarm_action(
        &s,
        "ring",
        2,
        json!({ "ecp": 1500, "apv": { "op": 1, "fr": s.ae, "ty": 4, "pc": { "m2m:cin": { "con": "ring" } } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:actr"]["ecp"], json!(1500));
    let runs = || retrieve(s.cse.url(), "/cse-in/app/alarm", &s.ae).1["m2m:cnt"]["cni"].clone();
    // Three events meeting the criteria within one period: one run.
    for mni in [20, 30, 40] {
        set_mni(&s, "sensor", mni);
    }
    let first = poll(WAIT, || (runs() == json!(1)).then_some(()));
    assert!(first.is_some(), "the first event of the period ran it");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(runs(), json!(1), "the others of the period did not");
    // An event not meeting them runs nothing; one after the period does.
    set_mni(&s, "sensor", 5);
    std::thread::sleep(Duration::from_millis(1_300));
    assert_eq!(runs(), json!(1));
    set_mni(&s, "sensor", 60);
    let second = poll(WAIT, || (runs() == json!(2)).then_some(()));
    assert!(second.is_some(), "the next period ran it again");
}

/// A continuous action with `ecp` runs that many times and then turns itself off.
#[test]
fn a_continuous_action_runs_its_number_of_times_then_stops() {
    let s = setup();
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/sensor",
        &s.ae,
        65,
        json!({ "m2m:actr": { "rn": "twice", "evc": { "optr": 3, "sbjt": "cni", "thld": 0 },
                "evm": 3, "ecp": 2, "orc": "cse-in/app/alarm",
                "apv": { "op": 3, "fr": s.ae, "pc": { "m2m:cnt": { "lbl": ["ran"] } } } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let clear = || {
        let (rsc, b) = update(
            s.cse.url(),
            "/cse-in/app/alarm",
            &s.ae,
            json!({ "m2m:cnt": { "lbl": null } }),
        );
        assert_eq!(rsc, 2004, "{b}");
    };
    for n in 1..=2 {
        create_cin(s.cse.url(), "/cse-in/app/sensor", &s.ae, "x");
        assert!(
            poll(WAIT, || (alarm_labels(&s) == json!(["ran"])).then_some(())).is_some(),
            "run {n}"
        );
        clear();
    }
    assert!(
        poll(WAIT, || (action(&s, "twice")["evm"] == json!(0))
            .then_some(()))
        .is_some(),
        "off after its last run"
    );
    create_cin(s.cse.url(), "/cse-in/app/sensor", &s.ae, "x");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(alarm_labels(&s), Value::Null, "a third run");
}

/// The parent is a subject like any other: an AE that may only write into a container (a
/// mailbox) cannot leave an action there to test its attributes (no `sri`), and an action whose
/// creator loses the right to read its subject stops running (whether it runs would tell).
#[test]
fn an_action_on_its_parent_needs_its_creator_to_read_it() {
    let s = setup();
    let writer = register_ae(s.cse.url(), "/cse-in", "Cwriter", "writer", &[]);
    create_cnt(
        s.cse.url(),
        "/cse-in/writer",
        &writer,
        json!({ "rn": "sink" }),
    );
    let acp = create_acp(
        s.cse.url(),
        "/cse-in/app",
        &s.ae,
        "mailbox",
        vec![acr(&[&s.ae], 63), acr(&[&writer], 1)],
        vec![acr(&[&s.ae], 63)],
    );
    set_acpi(s.cse.url(), "/cse-in/app/sensor", &s.ae, "m2m:cnt", &[&acp]);
    let probe = |sbjt: &str| {
        create(
            s.cse.url(),
            "/cse-in/app/sensor",
            &writer,
            65,
            json!({ "m2m:actr": { "evc": { "optr": 3, "sbjt": sbjt, "thld": 1 }, "evm": 3,
                    "orc": "cse-in/writer/sink",
                    "apv": { "op": 1, "fr": writer, "ty": 4, "pc": { "m2m:cin": { "con": "1" } } } } }),
        )
    };
    let (rsc, a) = probe("mni");
    let (rsc2, b) = probe("nothing");
    assert_eq!((rsc, rsc2), (4000, 4000), "{a} {b}");
    assert_eq!(a, b, "the same answer whether the attribute exists or not");
    // A reader of the sensor leaves an action on it: it runs while the reader may read the
    // sensor, and not after the sensor's owner takes that right back.
    let reader = register_ae(s.cse.url(), "/cse-in", "Creader", "reader", &[]);
    create_cnt(
        s.cse.url(),
        "/cse-in/reader",
        &reader,
        json!({ "rn": "log" }),
    );
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/app/mailbox",
        &s.ae,
        json!({ "m2m:acp": { "pv": { "acr": [
            { "acor": [s.ae.as_str()], "acop": 63 }, { "acor": [reader.as_str()], "acop": 3 }
        ] } } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/sensor",
        &reader,
        65,
        json!({ "m2m:actr": { "rn": "watch", "evc": { "optr": 3, "sbjt": "mni", "thld": 10 }, "evm": 3,
                "orc": "cse-in/reader/log",
                "apv": { "op": 1, "fr": reader, "ty": 4, "pc": { "m2m:cin": { "con": "big" } } } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    set_mni(&s, "sensor", 20);
    let cni = |s: &Setup| {
        retrieve(s.cse.url(), "/cse-in/reader/log", &reader).1["m2m:cnt"]["cni"].clone()
    };
    assert_eq!(poll(WAIT, || (cni(&s) == json!(1)).then_some(())), Some(()));
    // The owner takes the right to read back: the criteria are met again, nothing runs.
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/app/mailbox",
        &s.ae,
        json!({ "m2m:acp": { "pv": { "acr": [
            { "acor": [s.ae.as_str()], "acop": 63 }, { "acor": [reader.as_str()], "acop": 1 }
        ] } } }),
    );
    assert_eq!(rsc, 2004);
    set_mni(&s, "sensor", 30);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cni(&s), json!(1), "no second run");
}

/// What an action does is done as its creator vouched for by the CSE, never as an authenticated
/// originator nor as the admin: a rule that requires authentication (`acaf`) does not count
/// for it, and an action the admin leaves has no more rights than its ACPs give the admin.
#[test]
fn an_action_runs_with_no_more_proof_than_its_creator_had() {
    let s = setup();
    let owner = owner_with_door(&s);
    // The app may read the door, and update it only over an authenticated association.
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/owner",
        &owner,
        1,
        json!({ "m2m:acp": { "rn": "acp", "pv": { "acr": [
            { "acor": [owner.as_str()], "acop": 63 },
            { "acor": [s.ae.as_str()], "acop": 2 },
            { "acor": [s.ae.as_str()], "acop": 4, "acaf": true }
        ] }, "pvs": { "acr": [{ "acor": [owner.as_str()], "acop": 63 }] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    set_acpi(
        s.cse.url(),
        "/cse-in/owner/door",
        &owner,
        "m2m:cnt",
        &["cse-in/owner/acp"],
    );
    // The app's From is believed on this listener, not authenticated: it cannot update.
    let open = json!({ "m2m:cnt": { "lbl": ["open"] } });
    assert_eq!(
        update(s.cse.url(), "/cse-in/owner/door", &s.ae, open.clone()).0,
        4103
    );
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/sensor",
        &s.ae,
        65,
        json!({ "m2m:actr": { "rn": "opener", "evc": { "optr": 3, "sbjt": "mni", "thld": 10 }, "evm": 3,
                "orc": "cse-in/owner/door", "apv": { "op": 3, "fr": s.ae, "pc": open } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    set_mni(&s, "sensor", 20);
    let air = poll(WAIT, || action(&s, "opener").get("air").cloned()).expect("ran");
    assert_eq!(air["rsc"], json!(4103), "{air}");
    // The admin's action: it may read its subject (an ACP says so), but the door's ACP does
    // not name the admin.
    let admin_reads = create_acp(
        s.cse.url(),
        "/cse-in/app",
        &s.ae,
        "adminreads",
        vec![acr(&[&s.ae], 63), acr(&["CAdmin"], 2)],
        vec![acr(&[&s.ae], 63)],
    );
    set_acpi(
        s.cse.url(),
        "/cse-in/app/sensor",
        &s.ae,
        "m2m:cnt",
        &[&admin_reads],
    );
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/app/sensor",
        "CAdmin",
        65,
        json!({ "m2m:actr": { "rn": "admins", "evc": { "optr": 3, "sbjt": "mni", "thld": 10 }, "evm": 3,
                "orc": "cse-in/owner/door",
                "apv": { "op": 3, "fr": "CAdmin", "pc": { "m2m:cnt": { "lbl": ["admin"] } } } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    set_mni(&s, "sensor", 30);
    let air = poll(WAIT, || {
        let (_, b) = retrieve(s.cse.url(), "/cse-in/app/sensor/admins", "CAdmin");
        b["m2m:actr"].get("air").cloned()
    })
    .expect("ran");
    assert_eq!(air["rsc"], json!(4103), "{air}");
    let (_, door) = retrieve(s.cse.url(), "/cse-in/owner/door", &owner);
    assert!(
        door["m2m:cnt"].get("lbl").is_none(),
        "the door is untouched: {door}"
    );
}
