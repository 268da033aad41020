//! Direct dynamic authorization (TS-0003 clause 7.3.2.2), every party its own process: `m2m das`
//! decides from its policy file, an IN-CSE consults it over mutual TLS when no access control
//! policy grants a request on a resource linked (`daci`) to an enabled
//! `<dynamicAuthorizationConsultation>`. The DAS grants one request and refuses others, its grant
//! is kept for its lifetime and then asked for again, and whatever cannot be decided is refused:
//! a DAS the CSE is not configured to trust, a DAS that is down, a client that is no CSE.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const DAS_NAME: &str = "das.m2m.example.com";

struct Setup {
    pki: Pki,
    das: ServiceProcess,
    cse: CseProcess,
}

fn setup() -> Setup {
    let pki = Pki::temp();
    pki.issue(&["--kind", "das", "--id", DAS_NAME], "das");
    let das = ServiceProcess::start(
        "das",
        pki.dir(),
        r#"listen = "127.0.0.1:0"
certificate = "das.pem"
private_key = "das.key"
trusted_ca = "ca/ca.pem"
sp_fqdn = "m2m.example.com"
hosting_cses = ["/id-in"]

[[rules]]
originators = ["/id-in/Cguest"]
targets = ["/id-in/cse-in/owner/door*"]
operations = ["retrieve"]
lifetime_seconds = 600

[[rules]]
originators = ["/id-in/Cvisitor*"]
targets = ["/id-in/cse-in/owner/door*"]
operations = ["retrieve"]
lifetime_seconds = 1
"#,
    );
    let cse = CseProcess::start_temp(&format!(
        "{}\n[dynamic_authorization]\nrefusal_cache_seconds = 0\n\n[[dynamic_authorization.servers]]\nurl = \"{}\"\nserver_name = \"{DAS_NAME}\"\n",
        in_tls_config(&pki),
        das.url()
    ));
    Setup { pki, das, cse }
}

fn ri(v: &Value) -> String {
    v.as_object()
        .and_then(|o| o.values().next())
        .and_then(|r| r["ri"].as_str())
        .unwrap_or_else(|| panic!("no ri in {v}"))
        .to_owned()
}

/// How many decisions the DAS logged with `what` ("granted", "refused").
fn das_decisions(s: &Setup, what: &str) -> usize {
    s.das
        .stderr()
        .lines()
        .filter(|l| l.contains(&format!("dynamic authorization {what}")))
        .count()
}

/// The owner's door container (a contentInstance in it) linked to a consultation of the DAS, and
/// the consultation's ri.
fn door(s: &Setup) -> String {
    let base = s.cse.url();
    register_ae(base, "/cse-in", "Cowner", "owner", &[]);
    let (rsc, dac) = create(
        base,
        "/cse-in",
        "CAdmin",
        34,
        json!({"m2m:dac": {"rn": "dac", "dae": true, "dap": [s.das.url()]}}),
    );
    assert_eq!(rsc, 2001, "{dac}");
    let dac_ri = ri(&dac);
    let (rsc, cnt) = create(
        base,
        "/cse-in/owner",
        "Cowner",
        3,
        json!({"m2m:cnt": {"rn": "door", "daci": [dac_ri]}}),
    );
    assert_eq!(rsc, 2001, "{cnt}");
    create_cin(base, "/cse-in/owner/door", "Cowner", "locked");
    dac_ri
}

#[test]
fn the_das_grants_one_request_refuses_others_and_its_grant_is_kept_for_its_lifetime() {
    let s = setup();
    let base = s.cse.url();
    door(&s);
    for ae in ["Cguest", "Cstranger", "Cvisitor1"] {
        register_ae(base, "/cse-in", ae, &ae[1..], &[]);
    }
    // No policy grants the guest anything: the DAS does, for RETRIEVE.
    let (rsc, body) = retrieve(base, "/cse-in/owner/door/la", "Cguest");
    assert_eq!(rsc, 2000, "{body}\n{}", s.cse.stderr());
    assert_eq!(body["m2m:cin"]["con"], json!("locked"));
    assert_eq!(das_decisions(&s, "granted"), 1);
    // Kept for its lifetime: the next retrieves ask nobody.
    for _ in 0..3 {
        assert_eq!(retrieve(base, "/cse-in/owner/door", "Cguest").0, 2000);
    }
    assert_eq!(das_decisions(&s, "granted"), 1, "{}", s.das.stderr());
    // What the rule does not grant: another operation, another originator.
    let (rsc, _) = update(
        base,
        "/cse-in/owner/door",
        "Cguest",
        json!({"m2m:cnt": {"lbl": ["open"]}}),
    );
    assert_eq!(rsc, 4103);
    let (rsc, _) = delete(base, "/cse-in/owner/door", "Cguest");
    assert_eq!(rsc, 4103);
    let (rsc, _) = retrieve(base, "/cse-in/owner/door/la", "Cstranger");
    assert_eq!(rsc, 4103);
    assert!(das_decisions(&s, "refused") >= 3, "{}", s.das.stderr());
    // A one-second grant: asked for again once it has run out.
    assert_eq!(retrieve(base, "/cse-in/owner/door", "Cvisitor1").0, 2000);
    let before = das_decisions(&s, "granted");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(retrieve(base, "/cse-in/owner/door", "Cvisitor1").0, 2000);
    assert_eq!(
        das_decisions(&s, "granted"),
        before + 1,
        "{}",
        s.das.stderr()
    );
    // The CSE's audit trail names every decision.
    let log = s.cse.stderr();
    assert!(log.contains("dynamic authorization granted"), "{log}");
    assert!(log.contains("dynamic authorization refused"), "{log}");
}

#[test]
fn what_cannot_be_decided_is_refused() {
    let mut s = setup();
    let base = s.cse.url();
    let dac = door(&s);
    for ae in ["Cguest", "Cmallory", "Cvisitor2"] {
        register_ae(base, "/cse-in", ae, &ae[1..], &[]);
    }
    // A consultation naming a server the CSE was not told to trust is not consulted.
    let (rsc, rogue) = create(
        base,
        "/cse-in/owner",
        "Cowner",
        34,
        json!({"m2m:dac": {"rn": "rogue", "dae": true, "dap": ["https://127.0.0.1:9/das"]}}),
    );
    assert_eq!(rsc, 2001, "{rogue}");
    let (rsc, _) = create(
        base,
        "/cse-in/owner",
        "Cowner",
        3,
        json!({"m2m:cnt": {"rn": "gate", "daci": [ri(&rogue)]}}),
    );
    assert_eq!(rsc, 2001);
    assert_eq!(retrieve(base, "/cse-in/owner/gate", "Cguest").0, 4103);
    assert!(s.cse.logged("not among [dynamic_authorization] servers"));
    // A disabled consultation is not consulted.
    let (rsc, _) = update(
        base,
        &format!("/cse-in/{}", "dac"),
        "CAdmin",
        json!({"m2m:dac": {"dae": false}}),
    );
    assert_eq!(rsc, 2004);
    let before = das_decisions(&s, "granted");
    assert_eq!(retrieve(base, "/cse-in/owner/door", "Cguest").0, 4103);
    assert_eq!(das_decisions(&s, "granted"), before);
    let (rsc, _) = update(
        base,
        "/cse-in/dac",
        "CAdmin",
        json!({"m2m:dac": {"dae": true}}),
    );
    assert_eq!(rsc, 2004);

    // Linking a resource to a consultation takes the rights to change who may access it: an
    // originator allowed to UPDATE but without selfPrivileges cannot.
    let (rsc, acp) = create(
        base,
        "/cse-in/owner",
        "Cowner",
        1,
        json!({"m2m:acp": {"rn": "window-acp",
            "pv": {"acr": [{"acor": ["Cmallory"], "acop": 4}, {"acor": ["Cowner"], "acop": 63}]},
            "pvs": {"acr": [{"acor": ["Cowner"], "acop": 63}]}}}),
    );
    assert_eq!(rsc, 2001, "{acp}");
    let (rsc, _) = create(
        base,
        "/cse-in/owner",
        "Cowner",
        3,
        json!({"m2m:cnt": {"rn": "window", "acpi": [ri(&acp)]}}),
    );
    assert_eq!(rsc, 2001);
    let (rsc, _) = update(
        base,
        "/cse-in/owner/window",
        "Cmallory",
        json!({"m2m:cnt": {"lbl": ["ajar"]}}),
    );
    assert_eq!(rsc, 2004, "the ACP grants Mallory UPDATE");
    let (rsc, _) = update(
        base,
        "/cse-in/owner/window",
        "Cmallory",
        json!({"m2m:cnt": {"daci": [dac]}}),
    );
    assert_eq!(rsc, 4103, "daci changed without selfPrivileges");

    // Only a CSE consults the DAS: an AE certificate gets no answer.
    let (pem, key) = s.pki.issue(
        &["--kind", "ae", "--id", "Cguest", "--cse", "/id-in"],
        "guest",
    );
    let client = TlsClient::certificate(&s.pki.ca_pem(), &pem, &key, DAS_NAME);
    let ask = json!({"m2m:seci": {"sit": 1, "dreq": {"or": "/id-in/Cguest", "op": 2,
        "trid": "/id-in/cse-in/owner/door"}}});
    let r = client.request(
        s.das.url(),
        "POST",
        "/",
        Some("/id-in/Cguest"),
        None,
        Some(&ask),
    );
    assert!(
        r.as_ref()
            .map_or(true, |r| r.body.get("m2m:seci").is_none()),
        "an AE consulted the DAS: {r:?}"
    );

    // The DAS down: refused, not granted.
    s.das.kill().unwrap();
    s.das.wait().unwrap();
    assert_eq!(retrieve(base, "/cse-in/owner/door", "Cvisitor2").0, 4103);
    assert!(
        poll(WAIT, || s
            .cse
            .logged("no answer from the server")
            .then_some(()))
        .is_some(),
        "{}",
        s.cse.stderr()
    );
}
