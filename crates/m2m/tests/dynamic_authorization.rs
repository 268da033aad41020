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
targets = ["/id-in/cse-in/owner/door/**"]
operations = ["retrieve"]
lifetime_seconds = 600

[[rules]]
originators = ["/id-in/Chelper"]
targets = ["/id-in/cse-in/owner/door/**"]
operations = ["create", "update"]
lifetime_seconds = 600

[[rules]]
originators = ["/id-in/Cvisitor*"]
targets = ["/id-in/cse-in/owner/door/**"]
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
    for ae in ["Cguest", "Cstranger", "Cvisitor1", "Chelper"] {
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
    // A grant of UPDATE and CREATE changes data, never who may access: acpi and daci stay the
    // owner's, and no subscription or ACP comes from a dynamic grant.
    let (rsc, _) = update(
        base,
        "/cse-in/owner/door",
        "Chelper",
        json!({"m2m:cnt": {"lbl": ["helped"]}}),
    );
    assert_eq!(rsc, 2004);
    assert_eq!(
        create(
            base,
            "/cse-in/owner/door",
            "Chelper",
            4,
            json!({"m2m:cin": {"con": "x"}})
        )
        .0,
        2001
    );
    let (rsc, acp) = create(
        base,
        "/cse-in/helper",
        "Chelper",
        1,
        json!({"m2m:acp": {"pv": {"acr": [{"acor": ["Chelper"], "acop": 63}]},
            "pvs": {"acr": [{"acor": ["Chelper"], "acop": 63}]}}}),
    );
    assert_eq!(rsc, 2001, "{acp}");
    for attr in [
        json!({"acpi": [ri(&acp)]}),
        json!({"daci": []}),
        json!({"cstn": "Chelper"}),
    ] {
        let (rsc, _) = update(
            base,
            "/cse-in/owner/door",
            "Chelper",
            json!({ "m2m:cnt": attr }),
        );
        assert_eq!(rsc, 4103, "{attr}");
    }
    for (ty, body) in [
        (23, json!({"m2m:sub": {"nu": ["Chelper"]}})),
        (
            1,
            json!({"m2m:acp": {"pv": {"acr": []}, "pvs": {"acr": [{"acor": ["Chelper"], "acop": 63}]}}}),
        ),
    ] {
        assert_eq!(
            create(base, "/cse-in/owner/door", "Chelper", ty, body).0,
            4103,
            "ty {ty}"
        );
    }
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
    // A grant goes with its holder's registration: the guest leaves, an AE registers its AE-ID
    // anew, and the CSE asks the DAS again instead of serving the newcomer the old grant.
    assert_eq!(delete(base, "/cse-in/guest", "Cguest").0, 2002);
    register_ae(base, "/cse-in", "Cguest", "guest", &[]);
    let before = das_decisions(&s, "granted");
    assert_eq!(retrieve(base, "/cse-in/owner/door", "Cguest").0, 2000);
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
    // The consultation is its owner's: a stranger neither reads, changes nor deletes it.
    assert_eq!(retrieve(base, "/cse-in/owner/rogue", "Cowner").0, 2000);
    let dae_off = json!({"m2m:dac": {"dae": false}});
    assert_eq!(retrieve(base, "/cse-in/owner/rogue", "Cmallory").0, 4103);
    assert_eq!(
        update(base, "/cse-in/owner/rogue", "Cmallory", dae_off).0,
        4103
    );
    assert_eq!(delete(base, "/cse-in/owner/rogue", "Cmallory").0, 4103);
    // Bad input: 4000, nothing made.
    let das = "https://127.0.0.1:9/das";
    for (what, dac) in [
        ("no dae", json!({"rn": "bad", "dap": [das]})),
        (
            "dae as text",
            json!({"rn": "bad", "dae": "yes", "dap": [das]}),
        ),
        (
            "dap not a list",
            json!({"rn": "bad", "dae": true, "dap": das}),
        ),
        (
            "dal not a time",
            json!({"rn": "bad", "dae": true, "dap": [das], "dal": "soon"}),
        ),
    ] {
        let (rsc, b) = create(
            base,
            "/cse-in/owner",
            "Cowner",
            34,
            json!({ "m2m:dac": dac }),
        );
        assert_eq!(rsc, 4000, "{what}: {b}");
    }
    assert_eq!(retrieve(base, "/cse-in/owner/bad", "Cowner").0, 4004);
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
    assert!(
        poll(WAIT, || s
            .das
            .stderr()
            .contains("names no CSE")
            .then_some(()))
        .is_some(),
        "the DAS refused the AE's association:\n{}",
        s.das.stderr()
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

/// A oneM2M request with the Tokens parameter in the Authorization header (TS-0009 6.4.19).
fn with_token(
    base: &str,
    method: &str,
    path: &str,
    from: &str,
    token: &str,
    body: Option<&Value>,
) -> u16 {
    let ri = rqi();
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let mut headers = vec![
        ("X-M2M-RI", ri.as_str()),
        ("X-M2M-RVI", "3"),
        ("X-M2M-Origin", from),
        ("Accept", "application/json"),
        ("Authorization", token),
    ];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    raw(method, base, path, &headers, &bytes).rsc
}

/// Token-based access control (TS-0003 clauses 7.3.2.3 to 7.3.2.6): `m2m das token` signs a token
/// (ES256) for a holder, resources and operations; the CSE, trusting that issuer's key, lets the
/// token grant exactly that, to its holder only, until it expires or its ID is revoked, and
/// refuses a token that is tampered with, signed by another key, or meant for another CSE.
#[test]
fn a_token_grants_access_until_it_expires_or_is_revoked() {
    let pki = Pki::temp();
    pki.issue(&["--kind", "das", "--id", DAS_NAME], "das");
    let dir = pki.dir();
    let keygen = |kid: &str, file: &str| {
        let out = m2m_command(&[
            "e2e",
            "keygen",
            "--kty",
            "ec",
            "--kid",
            kid,
            "--out",
            dir.join(file).to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let public = keygen("das-tokens", "das-tokens.jwk");
    std::fs::write(dir.join("das-tokens.pub.jwk"), public.trim()).unwrap();
    keygen("das-tokens", "rogue.jwk");
    let das_toml = |key: &str| {
        let path = dir.join(format!("das-{key}.toml"));
        write_private(
            &path,
            &format!(
                "listen = \"127.0.0.1:0\"\ncertificate = \"das.pem\"\nprivate_key = \"das.key\"\n\
                 trusted_ca = \"ca/ca.pem\"\nsp_fqdn = \"m2m.example.com\"\n\
                 issuer = \"{DAS_NAME}\"\ntoken_key = \"{key}.jwk\"\n"
            ),
        );
        path
    };
    let (das, rogue) = (das_toml("das-tokens"), das_toml("rogue"));
    let revoked = dir.join("revoked-tokens.txt");
    std::fs::write(&revoked, "# revoked token IDs\n").unwrap();
    let cse = CseProcess::start_temp(&format!(
        "[dynamic_authorization]\nrevoked_tokens = {:?}\n\n[[dynamic_authorization.token_issuers]]\nid = \"{DAS_NAME}\"\npublic_key = {:?}\n",
        revoked.display().to_string(),
        dir.join("das-tokens.pub.jwk").display().to_string()
    ));
    let base = cse.url();
    register_ae(base, "/cse-in", "Cowner", "owner", &[]);
    create_cnt(base, "/cse-in/owner", "Cowner", json!({"rn": "door"}));
    create_cin(base, "/cse-in/owner/door", "Cowner", "locked");
    for ae in ["Cguest", "Cstranger"] {
        register_ae(base, "/cse-in", ae, &ae[1..], &[]);
    }
    let issue = |config: &std::path::Path, extra: &[&str]| -> (String, String) {
        let mut args = vec![
            "das",
            "token",
            "--config",
            config.to_str().unwrap(),
            "--holder",
            "/id-in/Cguest",
            "--resource",
            "/id-in/cse-in/owner/door/**",
            "--operation",
            "retrieve",
        ];
        args.extend_from_slice(extra);
        let out = m2m_command(&args);
        assert!(out.status.success(), "{out:?}");
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let id = String::from_utf8(out.stderr)
            .unwrap()
            .trim()
            .trim_start_matches("token ID: ")
            .to_owned();
        (token, id)
    };
    let door = "/cse-in/owner/door/la";
    let (token, token_id) = issue(&das, &["--audience", "/id-in"]);
    assert_eq!(
        retrieve(base, door, "Cguest").0,
        4103,
        "no token, no access"
    );
    assert_eq!(with_token(base, "GET", door, "Cguest", &token, None), 2000);
    assert_eq!(
        with_token(
            base,
            "GET",
            door,
            "Cguest",
            &format!("Bearer {token}"),
            None
        ),
        2000
    );
    // Only what it grants, only to its holder.
    let lbl = json!({"m2m:cnt": {"lbl": ["open"]}});
    assert_eq!(
        with_token(
            base,
            "PUT",
            "/cse-in/owner/door",
            "Cguest",
            &token,
            Some(&lbl)
        ),
        4103
    );
    assert_eq!(
        with_token(base, "GET", door, "Cstranger", &token, None),
        4103
    );
    // Tampered with, signed by another key with the same kid, meant for another CSE.
    let mut tampered: Vec<char> = token.chars().collect();
    let at = token.find('.').unwrap() + 5;
    tampered[at] = if tampered[at] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    assert_eq!(
        with_token(base, "GET", door, "Cguest", &tampered, None),
        4103
    );
    let (forged, _) = issue(&rogue, &["--audience", "/id-in"]);
    assert_eq!(with_token(base, "GET", door, "Cguest", &forged, None), 4103);
    let (elsewhere, _) = issue(&das, &["--audience", "/id-mn"]);
    assert_eq!(
        with_token(base, "GET", door, "Cguest", &elsewhere, None),
        4103
    );
    // A bad token next to a good one refuses the request (TS-0003 7.3.2.3 step 7.1.4).
    assert_eq!(
        with_token(
            base,
            "GET",
            door,
            "Cguest",
            &format!("{token}+{forged}"),
            None
        ),
        4103
    );
    // A token's grant never changes who may access.
    let (updater, _) = issue(
        &das,
        &[
            "--operation",
            "update",
            "--audience",
            "//m2m.example.com/id-in",
        ],
    );
    let body = json!({"m2m:cnt": {"lbl": ["by-token"]}});
    assert_eq!(
        with_token(
            base,
            "PUT",
            "/cse-in/owner/door",
            "Cguest",
            &updater,
            Some(&body)
        ),
        2004
    );
    let body = json!({"m2m:cnt": {"daci": []}});
    assert_eq!(
        with_token(
            base,
            "PUT",
            "/cse-in/owner/door",
            "Cguest",
            &updater,
            Some(&body)
        ),
        4103
    );
    // Another SP's CSE of the same name is not this one.
    let (foreign, _) = issue(&das, &["--audience", "//other.example.com/id-in"]);
    assert_eq!(
        with_token(base, "GET", door, "Cguest", &foreign, None),
        4103
    );
    // Revoked: refused from the next request on.
    let out = m2m_command(&[
        "das",
        "revoke-token",
        "--list",
        revoked.to_str().unwrap(),
        &token_id,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(with_token(base, "GET", door, "Cguest", &token, None), 4103);
    // Expired.
    let (short, _) = issue(&das, &["--lifetime", "1", "--audience", "/id-in"]);
    assert_eq!(with_token(base, "GET", door, "Cguest", &short, None), 2000);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(with_token(base, "GET", door, "Cguest", &short, None), 4103);
    // The audit trail says why, and never holds a token.
    let log = cse.stderr();
    for why in [
        "access granted by token",
        "revoked",
        "expired",
        "held by another entity",
        "audience",
    ] {
        assert!(log.contains(why), "{why}:\n{log}");
    }
    for t in [&token, &short, &forged] {
        let signature = t.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token reached the log");
    }
}

/// A DAS that answers with a token (TS-0003 clause 7.3.2.2 steps 3 to 5): the Hosting CSE checks
/// it (its signature, that the answering server issued it, holder, audience), grants with it,
/// and answers the originator with a local token ID for it (X-M2M-ATI); the originator then names
/// that ID (`ltids`) and is granted without a consultation, until the token is revoked. Nobody
/// else can use the local token ID.
#[test]
fn a_das_answers_with_a_token_the_originator_then_names() {
    let pki = Pki::temp();
    pki.issue(&["--kind", "das", "--id", DAS_NAME], "das");
    let dir = pki.dir();
    token_issuer_key(dir);
    let das = ServiceProcess::start(
        "das",
        dir,
        &format!(
            r#"listen = "127.0.0.1:0"
certificate = "das.pem"
private_key = "das.key"
trusted_ca = "ca/ca.pem"
sp_fqdn = "m2m.example.com"
hosting_cses = ["/id-in"]
issuer = "{DAS_NAME}"
token_key = "das-tokens.jwk"

[[rules]]
originators = ["/id-in/Cguest"]
targets = ["/id-in/cse-in/owner/door/**"]
operations = ["retrieve"]
lifetime_seconds = 600
token = true
"#
        ),
    );
    let revoked = dir.join("revoked-tokens.txt");
    std::fs::write(&revoked, "").unwrap();
    let cse = CseProcess::start_temp(&format!(
        "{}\n[dynamic_authorization]\nrefusal_cache_seconds = 0\nrevoked_tokens = {:?}\n\n\
         [[dynamic_authorization.servers]]\nurl = \"{}\"\nserver_name = \"{DAS_NAME}\"\n\n\
         [[dynamic_authorization.token_issuers]]\nid = \"{DAS_NAME}\"\npublic_key = {:?}\n",
        in_tls_config(&pki),
        revoked.display().to_string(),
        das.url(),
        dir.join("das-tokens.pub.jwk").display().to_string()
    ));
    let s = Setup { pki, das, cse };
    door(&s);
    let base = s.cse.url();
    for ae in ["Cguest", "Cstranger"] {
        register_ae(base, "/cse-in", ae, &ae[1..], &[]);
    }
    let la = "/cse-in/owner/door/la";
    let first = get_with_query_full(base, la, "Cguest", "");
    assert_eq!(first.rsc, 2000, "{:?}", first.body);
    let ati = first
        .header("x-m2m-ati")
        .expect("Assigned Token Identifiers");
    let (lti, tkid) = ati.split_once(':').expect("lti:tkid");
    assert!(tkid.ends_with(&format!("@{DAS_NAME}")), "{ati}");
    assert!(s.das.logged("token issued"), "{}", s.das.stderr());
    // Named again: granted by the kept token, no consultation.
    let consultations = das_decisions(&s, "answered with a token");
    let again = get_with_query_full(base, la, "Cguest", &format!("ltids={lti}"));
    assert_eq!(again.rsc, 2000, "{:?}", again.body);
    assert_eq!(das_decisions(&s, "answered with a token"), consultations);
    // Not for another originator, nor an ID never assigned, nor what the token does not cover.
    assert_eq!(
        get_with_query_full(base, la, "Cstranger", &format!("ltids={lti}")).rsc,
        4103
    );
    assert_eq!(
        get_with_query_full(base, la, "Cguest", "ltids=lt0000000000000000").rsc,
        4103
    );
    let (rsc, _) = create(
        base,
        "/cse-in/owner/door",
        "Cguest",
        4,
        json!({"m2m:cin": {"con": "open"}}),
    );
    assert_eq!(rsc, 4103, "the token grants RETRIEVE only");
    // A malformed local token ID is bad input.
    assert_eq!(
        get_with_query_full(base, la, "Cguest", "ltids=9bad").rsc,
        4000
    );
    // Revoked: the local token ID opens nothing any more.
    let out = m2m_command(&[
        "das",
        "revoke-token",
        "--list",
        revoked.to_str().unwrap(),
        tkid,
    ]);
    assert!(out.status.success(), "{out:?}");
    let refused = poll(WAIT, || {
        (get_with_query_full(base, la, "Cguest", &format!("ltids={lti}")).rsc == 4103).then_some(())
    });
    assert!(refused.is_some(), "the revoked token still opens the door");
}

/// Two token issuers whose keys share a kid: the CSE does not start (a token's kid picks its
/// issuer's key, so one of them would be taken for the other or never verify).
#[test]
fn token_issuers_with_one_kid_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = m2m_command(&[
        "e2e",
        "keygen",
        "--kty",
        "ec",
        "--kid",
        "tokens",
        "--out",
        dir.path().join("a.jwk").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let public = dir.path().join("a.pub.jwk");
    std::fs::write(&public, String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    let storage = dir.path().join("data");
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n\n[dynamic_authorization]\n\n\
         [[dynamic_authorization.token_issuers]]\nid = \"das1.m2m.example.com\"\npublic_key = {:?}\n\n\
         [[dynamic_authorization.token_issuers]]\nid = \"das2.m2m.example.com\"\npublic_key = {:?}\n",
        storage.display().to_string(),
        public.display().to_string(),
        public.display().to_string()
    );
    let (ok, _, stderr) = cse_exit(&config, 0o600);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("two issuer keys have the kid 'tokens'"),
        "{stderr}"
    );
}
