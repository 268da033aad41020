//! Role-based access control (TS-0003 clause 7.4; TS-0004 clauses 7.4.40, 7.4.41) on a real
//! `m2m cse`: an Authorization Authority assigns a role in a `<role>` (this CSE its Role
//! Repository), an accessControlPolicy names the role, and a request naming the role (`rids`)
//! is granted what the policy grants the role, to the role's holder only, while the role is
//! valid and was issued by an authority the CSE trusts. A `<token>` (this CSE its Token
//! Repository) holds a signed token that a request names by Token-ID (`tids`); a token's roles
//! count like a `<role>`'s.

mod common;

use common::*;
use serde_json::{json, Value};

const NURSE: &str = "nurse@roles.hospital.example.com";
const DOCTOR: &str = "doctor@roles.hospital.example.com";
const DAS_NAME: &str = "das.m2m.example.com";
/// The Authorization Authority's own TLS-PSK row: it issues roles over its association only.
const AUTHORITY_KPSA_ID: &str = "authority@in.provider.com";
const AUTHORITY_KEY: &str = "00112233445566778899aabbccddeeff";

/// A CSE with a TLS listener, the authority's PSK row, and `extra`.
fn cse_with_authority(extra: &str) -> CseProcess {
    CseProcess::start_temp(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\n\n[security]\n\n         [[security.psk]]\nentity = \"Cauthority\"\nkpsa_id = \"{AUTHORITY_KPSA_ID}\"\nkey = \"{AUTHORITY_KEY}\"\n\n         [[security.role_issuers]]\nid = \"Cauthority\"\ndomain = \"roles.hospital.example.com\"\n\n{extra}"
    ))
}

/// A CREATE by the authority over its own association: status and body.
fn as_authority(cse: &CseProcess, ty: u16, body: Value) -> (u16, Value) {
    let client = TlsClient::psk(AUTHORITY_KPSA_ID, AUTHORITY_KEY);
    let r = client
        .request(
            cse.https_url(),
            "POST",
            "/cse-in",
            Some("Cauthority"),
            Some(ty),
            Some(&body),
        )
        .expect("the authority's association");
    (r.rsc, r.body)
}

fn stamp(offset_seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(offset_seconds))
        .format("%Y%m%dT%H%M%S")
        .to_string()
}

fn role(rn: &str, rlid: &str, issuer: &str, holder: &str, from: i64, to: i64) -> Value {
    json!({ "m2m:rol": { "rn": rn, "rlid": rlid, "tkis": issuer, "tkhd": holder,
        "tknb": stamp(from), "tkna": stamp(to) } })
}

/// `GET path?query` as `from`: the status code.
fn get_as(cse: &CseProcess, path: &str, from: &str, query: &str) -> u16 {
    get_with_query(cse.url(), path, from, query).0
}

/// The ward's notes, readable by whoever holds the nurse role; everything for the admin.
fn ward(cse: &CseProcess) -> String {
    let base = cse.url();
    for (ae, rn) in [
        ("Cnurse", "nurse"),
        ("Cother", "other"),
        ("Crogue", "rogue"),
    ] {
        register_ae(base, "/cse-in", ae, rn, &[]);
    }
    let (rsc, b) = as_authority(
        cse,
        2,
        json!({"m2m:ae": {"rn": "authority", "api": "Nauthority", "rr": false, "srv": ["3"]}}),
    );
    assert_eq!(rsc, 2001, "{b}");
    let acp = create_acp(
        base,
        "/cse-in",
        "CAdmin",
        "ward-acp",
        vec![
            acr(&[NURSE], OP_RETRIEVE | OP_DISCOVERY),
            acr(&["CAdmin"], OP_ALL),
        ],
        vec![acr(&["CAdmin"], OP_ALL)],
    );
    let (rsc, b) = create(
        base,
        "/cse-in",
        "CAdmin",
        3,
        json!({"m2m:cnt": {"rn": "ward", "acpi": [acp]}}),
    );
    assert_eq!(rsc, 2001, "{b}");
    create_cin(base, "/cse-in/ward", "CAdmin", "patient 7: stable");
    acp
}

#[test]
fn a_role_grants_what_the_policy_grants_the_role_to_its_holder_only() {
    let cse = cse_with_authority("");
    let _ = ward(&cse);
    let base = cse.url();
    let la = "/cse-in/ward/la";
    // No role named, or a role nobody assigned: refused.
    assert_eq!(get_as(&cse, la, "Cnurse", ""), 4103);
    assert_eq!(get_as(&cse, la, "Cnurse", &format!("rids={NURSE}")), 4103);
    assert!(cse.logged("role refused"), "{}", cse.stderr());

    // The administrator assigns it to Cnurse.
    let (rsc, b) = create(
        base,
        "/cse-in",
        "CAdmin",
        31,
        role("r1", NURSE, "CAdmin", "Cnurse", -60, 3600),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:rol"]["ty"], json!(31), "{b}");
    // The role reads back as assigned, for its issuer; another AE does not read it.
    let (rsc, b) = retrieve(base, "/cse-in/r1", "CAdmin");
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(
        (b["m2m:rol"]["rlid"].clone(), b["m2m:rol"]["tkhd"].clone()),
        (json!(NURSE), json!("Cnurse")),
        "{b}"
    );
    assert_eq!(retrieve(base, "/cse-in/r1", "Crogue").0, 4103);
    assert_eq!(get_as(&cse, la, "Cnurse", &format!("rids={NURSE}")), 2000);
    // Discovery finds what the role may see, and only with the role.
    let found = |query: &str| {
        let (rsc, b) = get_with_query(base, "/cse-in", "Cnurse", query);
        assert_eq!(rsc, 2000, "{b}");
        b["m2m:uril"].as_array().map(Vec::len).unwrap_or(0)
    };
    assert_eq!(found(&format!("fu=1&ty=4&rids={NURSE}")), 1);
    assert_eq!(found("fu=1&ty=4"), 0);
    // Any spelling of the holder's ID; the role still has to be named.
    assert_eq!(
        get_as(&cse, la, "/id-in/Cnurse", &format!("rids={NURSE}")),
        2000
    );
    assert_eq!(get_as(&cse, la, "Cnurse", ""), 4103);
    // Only what the policy grants the role, and only to its holder.
    let (rsc, _) = create(
        base,
        "/cse-in/ward",
        "Cnurse",
        4,
        json!({"m2m:cin": {"con": "x"}}),
    );
    assert_eq!(rsc, 4103, "the role reads, it does not write");
    assert_eq!(get_as(&cse, la, "Cother", &format!("rids={NURSE}")), 4103);
    assert_eq!(get_as(&cse, la, "Cnurse", &format!("rids={DOCTOR}")), 4103);

    // A configured role issuer assigns one too, over its own association only, and roles of
    // its namespace only.
    let (rsc, b) = create(
        base,
        "/cse-in",
        "Cauthority",
        31,
        role("r2", DOCTOR, "Cauthority", "Cother", -60, 3600),
    );
    assert_eq!(rsc, 4103, "a vouched claim is no issuer: {b}");
    let (rsc, b) = as_authority(
        &cse,
        31,
        role(
            "r2x",
            "admin@roles.other.example.com",
            "Cauthority",
            "Cother",
            -60,
            3600,
        ),
    );
    assert_eq!(rsc, 4000, "another authority's namespace: {b}");
    assert!(
        b["m2m:dbg"].as_str().unwrap_or("").contains("namespace"),
        "{b}"
    );
    let (rsc, b) = as_authority(
        &cse,
        31,
        role("r2", DOCTOR, "Cauthority", "Cother", -60, 3600),
    );
    assert_eq!(rsc, 2001, "{b}");
    let doctors = create_acp(
        base,
        "/cse-in",
        "CAdmin",
        "doctors",
        vec![acr(&[DOCTOR], OP_RETRIEVE)],
        vec![acr(&["CAdmin"], OP_ALL)],
    );
    set_acpi(
        base,
        "/cse-in/ward",
        "CAdmin",
        "m2m:cnt",
        &[doctors.as_str()],
    );
    assert_eq!(get_as(&cse, la, "Cother", &format!("rids={DOCTOR}")), 2000);
    // An entity that is no role issuer keeps no role here; an issuer cannot issue in another's
    // name.
    let (rsc, b) = create(
        base,
        "/cse-in",
        "Crogue",
        31,
        role("r3", DOCTOR, "Crogue", "Crogue", -60, 3600),
    );
    assert_eq!(rsc, 4103, "{b}");
    assert_eq!(get_as(&cse, la, "Crogue", &format!("rids={DOCTOR}")), 4103);
    let (rsc, b) = as_authority(&cse, 31, role("r4", DOCTOR, "CAdmin", "Crogue", -60, 3600));
    assert_eq!(rsc, 4000, "issued in another's name: {b}");
    assert!(
        b["m2m:dbg"]
            .as_str()
            .unwrap_or("")
            .contains("created by its issuer"),
        "{b}"
    );

    // Valid only between notBefore and notAfter.
    for (rn, from, to) in [("early", 600, 3600), ("late", -3600, -60)] {
        let ae = format!("C{rn}");
        register_ae(base, "/cse-in", &ae, rn, &[]);
        let (rsc, b) = create(
            base,
            "/cse-in",
            "CAdmin",
            31,
            role(&format!("role-{rn}"), NURSE, "CAdmin", &ae, from, to),
        );
        assert_eq!(rsc, 2001, "{b}");
        assert_eq!(
            get_as(&cse, la, &ae, &format!("rids={NURSE}")),
            4103,
            "{rn}"
        );
    }
    // Set back to the nurses' policy: deleting the role takes the access away.
    set_acpi(base, "/cse-in/ward", "CAdmin", "m2m:cnt", &[]);
    assert_eq!(delete(base, "/cse-in/r1", "CAdmin").0, 2002);

    // Bad input, with its reason.
    for (body, attr) in [
        (role("b1", "nurse", "CAdmin", "Cnurse", -60, 60), "rlid"),
        (
            role("b2", "nurse@Roles.Example.com", "CAdmin", "Cnurse", -60, 60),
            "rlid",
        ),
        (role("b3", NURSE, "CAdmin", "not an id", -60, 60), "tkhd"),
        (role("b4", NURSE, "CAdmin", "Cnurse", 60, -60), "tknb"),
        (
            json!({"m2m:rol": {"rlid": NURSE, "tkis": "CAdmin", "tkhd": "Cnurse", "tknb": stamp(0)}}),
            "tkna",
        ),
    ] {
        let (rsc, b) = create(base, "/cse-in", "CAdmin", 31, body);
        assert_eq!(rsc, 4000, "{attr}: {b}");
        assert!(
            b["m2m:dbg"].as_str().unwrap_or("").contains(attr),
            "{attr}: {b}"
        );
    }
    // Only the role's link to its token may change.
    let (rsc, b) = create(
        base,
        "/cse-in",
        "CAdmin",
        31,
        role("r5", NURSE, "CAdmin", "Cnurse", -60, 3600),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = update(
        base,
        "/cse-in/r5",
        "CAdmin",
        json!({"m2m:rol": {"tkhd": "Cother"}}),
    );
    assert_eq!(rsc, 4000, "{b}");
    let (rsc, b) = update(
        base,
        "/cse-in/r5",
        "CAdmin",
        json!({"m2m:rol": {"rltl": "/id-in/cse-in/tk1"}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    // Only under the CSEBase.
    let (rsc, _) = create(
        base,
        "/cse-in/ward",
        "CAdmin",
        31,
        role("r6", NURSE, "CAdmin", "Cnurse", -60, 60),
    );
    assert_eq!(rsc, 4108);
}

/// A token held in a `<token>` and named by Token-ID: its permissions and its roles count like
/// the token itself would, for its holder, until it is revoked.
#[test]
fn a_stored_token_named_by_its_id_grants_its_roles() {
    let pki = Pki::temp();
    pki.issue(&["--kind", "das", "--id", DAS_NAME], "das");
    let dir = pki.dir();
    token_issuer_key(dir);
    let das = dir.join("das.toml");
    write_private(
        &das,
        &format!(
            "listen = \"127.0.0.1:0\"\ncertificate = \"das.pem\"\nprivate_key = \"das.key\"\n\
             trusted_ca = \"ca/ca.pem\"\nsp_fqdn = \"m2m.example.com\"\n\
             issuer = \"{DAS_NAME}\"\ntoken_key = \"das-tokens.jwk\"\n"
        ),
    );
    let revoked = dir.join("revoked-tokens.txt");
    std::fs::write(&revoked, "").unwrap();
    let cse = cse_with_authority(&format!(
        "[dynamic_authorization]\nrevoked_tokens = {:?}\n\n[[dynamic_authorization.token_issuers]]\nid = \"{DAS_NAME}\"\npublic_key = {:?}\n",
        revoked.display().to_string(),
        dir.join("das-tokens.pub.jwk").display().to_string()
    ));
    let ward_acp = ward(&cse);
    let base = cse.url();
    let la = "/cse-in/ward/la";
    let issue = |holder: &str, extra: &[&str]| -> (String, String) {
        let mut args = vec![
            "das",
            "token",
            "--config",
            das.to_str().unwrap(),
            "--holder",
            holder,
            "--audience",
            "/id-in",
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
    // A token's roles are of its issuer's namespace: the ward names the DAS's nurse role too.
    let das_nurse = format!("nurse@{DAS_NAME}");
    let acp = create_acp(
        base,
        "/cse-in",
        "CAdmin",
        "das-nurses",
        vec![acr(&[das_nurse.as_str()], OP_RETRIEVE)],
        vec![acr(&["CAdmin"], OP_ALL)],
    );
    set_acpi(base, "/cse-in/ward", "CAdmin", "m2m:cnt", &[acp.as_str()]);
    let (token, tkid) = issue("/id-in/Cnurse", &["--role", &das_nurse]);
    let (rsc, b) = create(
        base,
        "/cse-in",
        "CAdmin",
        32,
        json!({"m2m:tk": {"rn": "tk1", "tkid": tkid, "tkob": token}}),
    );
    assert_eq!(rsc, 2001, "{b}");
    // The claims, read from the verified token.
    let tk = &b["m2m:tk"];
    assert_eq!(tk["tkhd"], json!("/id-in/Cnurse"), "{b}");
    assert_eq!(tk["tkis"], json!(DAS_NAME), "{b}");
    assert_eq!(tk["tkau"], json!(["/id-in"]), "{b}");
    assert_eq!(tk["tkps"]["pm"][0]["rids"], json!([das_nurse]), "{b}");
    // The stored token is the admin's: another AE neither reads nor deletes it.
    assert_eq!(retrieve(base, "/cse-in/tk1", "CAdmin").0, 2000);
    assert_eq!(retrieve(base, "/cse-in/tk1", "Cother").0, 4103);
    assert_eq!(delete(base, "/cse-in/tk1", "Cother").0, 4103);

    assert_eq!(get_as(&cse, la, "Cnurse", ""), 4103);
    assert_eq!(get_as(&cse, la, "Cnurse", &format!("tids={tkid}")), 2000);
    assert!(
        cse.logged("access granted by a token's roles"),
        "{}",
        cse.stderr()
    );
    // Its holder only; an unknown Token-ID refuses the request.
    assert_eq!(get_as(&cse, la, "Cother", &format!("tids={tkid}")), 4103);
    assert_eq!(
        get_as(&cse, la, "Cnurse", "tids=nothing@das.m2m.example.com"),
        4103
    );
    // A token naming another role grants nothing here, nor one naming a role of another
    // authority's namespace, even one the ward's policies name.
    set_acpi(
        base,
        "/cse-in/ward",
        "CAdmin",
        "m2m:cnt",
        &[acp.as_str(), ward_acp.as_str()],
    );
    let (foreign_role, foreign_role_id) = issue("/id-in/Cnurse", &["--role", NURSE]);
    let (rsc, _) = create(
        base,
        "/cse-in",
        "CAdmin",
        32,
        json!({"m2m:tk": {"tkid": foreign_role_id, "tkob": foreign_role}}),
    );
    assert_eq!(rsc, 2001);
    assert_eq!(
        get_as(&cse, la, "Cnurse", &format!("tids={foreign_role_id}")),
        4103
    );
    let (other, other_id) = issue("/id-in/Cnurse", &["--role", DOCTOR]);
    let (rsc, _) = create(
        base,
        "/cse-in",
        "CAdmin",
        32,
        json!({"m2m:tk": {"tkid": other_id, "tkob": other}}),
    );
    assert_eq!(rsc, 2001);
    assert_eq!(
        get_as(&cse, la, "Cnurse", &format!("tids={other_id}")),
        4103
    );

    // What the CSE does not keep: a tampered token, another token's ID, claims that differ.
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let (foreign, foreign_id) = issue("/id-in/Cother", &["--role", NURSE]);
    for (body, attr) in [
        (json!({"tkid": tkid, "tkob": tampered}), "tkob"),
        (
            json!({"tkid": "x@das.m2m.example.com", "tkob": token}),
            "tkid",
        ),
        (json!({"tkid": "not-an-id", "tkob": token}), "tkid"),
        (
            json!({"tkid": foreign_id, "tkob": foreign, "tkhd": "/id-in/Cnurse"}),
            "tkhd",
        ),
        (json!({"tkid": tkid, "tkob": "a.b.c"}), "tkob"),
        (json!({"tkid": tkid, "tkob": token}), "kept here already"),
    ] {
        let (rsc, b) = create(base, "/cse-in", "CAdmin", 32, json!({ "m2m:tk": body }));
        assert_eq!(rsc, 4000, "{attr}: {b}");
        assert!(
            b["m2m:dbg"].as_str().unwrap_or("").contains(attr),
            "{attr}: {b}"
        );
    }
    // Revoked: the stored token opens nothing any more.
    let out = m2m_command(&[
        "das",
        "revoke-token",
        "--list",
        revoked.to_str().unwrap(),
        &tkid,
    ]);
    assert!(out.status.success(), "{out:?}");
    let refused = poll(WAIT, || {
        (get_as(&cse, la, "Cnurse", &format!("tids={tkid}")) == 4103).then_some(())
    });
    assert!(refused.is_some(), "the revoked token still opens the ward");
    // No token in the audit trail.
    assert!(!cse.stderr().contains(&token));
}

/// Without a token issuer the CSE keeps no token.
#[test]
fn no_token_is_kept_without_an_issuer() {
    let cse = CseProcess::start_in();
    let (rsc, b) = create(
        cse.url(),
        "/cse-in",
        "CAdmin",
        32,
        json!({"m2m:tk": {"tkid": "t1@das.m2m.example.com", "tkob": "a.b.c"}}),
    );
    assert_eq!(rsc, 4000, "{b}");
}

/// An `<action>` runs its request inside the CSE, whoever made it: it issues no role and deletes
/// no security configuration object, even one the administrator made (whoever may change an
/// action would otherwise act as its maker).
#[test]
fn an_action_issues_no_role_and_deletes_no_trust_anchor() {
    let cse = cse_with_authority("");
    let base = cse.url();
    register_ae(base, "/cse-in", "Cnurse", "nurse", &[]);
    create_cnt(base, "/cse-in", "CAdmin", json!({"rn": "trigger"}));
    let (rsc, b) = create(
        base,
        "/cse-in",
        "CAdmin",
        14,
        json!({"m2m:nod": {"rn": "node", "ni": "n1"}}),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create(
        base,
        "/cse-in/node",
        "CAdmin",
        13,
        json!({"dcfg:tac": {"rn": "ta", "mgd": 1024,
            "cfp": "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89",
            "uri": "https://pki.example.com/ca.pem"}}),
    );
    assert_eq!(rsc, 2001, "{b}");
    let action = |rn: &str, apv: Value| {
        let (rsc, b) = create(
            base,
            "/cse-in/trigger",
            "CAdmin",
            65,
            json!({"m2m:actr": {"rn": rn, "evc": {"optr": 3, "sbjt": "mni", "thld": 10},
                "evm": 1, "orc": apv["to"], "apv": apv}}),
        );
        assert_eq!(rsc, 2001, "{b}");
    };
    action(
        "issue",
        json!({"op": 1, "fr": "CAdmin", "to": "cse-in", "ty": 31,
            "pc": role("by-action", NURSE, "CAdmin", "Cnurse", -60, 3600)}),
    );
    action(
        "untrust",
        json!({"op": 4, "fr": "CAdmin", "to": "cse-in/node/ta"}),
    );
    let (rsc, b) = update(
        base,
        "/cse-in/trigger",
        "CAdmin",
        json!({"m2m:cnt": {"mni": 20}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(
        retrieve(base, "/cse-in/by-action", "CAdmin").0,
        4004,
        "no role made"
    );
    assert_eq!(
        retrieve(base, "/cse-in/node/ta", "CAdmin").0,
        2000,
        "the anchor stays"
    );
    // Both ran, and were refused (the actionResult of each).
    for rn in ["issue", "untrust"] {
        let (_, b) = retrieve(base, &format!("/cse-in/trigger/{rn}"), "CAdmin");
        assert_eq!(b["m2m:actr"]["air"]["rsc"], json!(4103), "{rn}: {b}");
    }
}
