//! Group Authentication Solution 1 (seeds/001 clause 8.2.1) between real processes over real TLS:
//! the IN-CSE C and the MN-CSE B (group agent) are `m2m cse` processes; B registers with C over
//! TLS-PSK (Kpsami, the outer association); members reach B over TLS-PSK (Kpsaxm, the inner
//! association) with `m2m request` or this file's own openssl client, get Rand through B, derive
//! Ksx and open TLS-PSK at C with (KsxId, Ksx).
//!
//! Attacks tried: a member without an inner association, a stale Rand, Kpsaxi used directly at C,
//! rounds asked for by an AE, a non-agent CSE or over no association, members of another agent's
//! group. The Ksx that opens C is also computed by Python (hmac + unicodedata NFKC); a missing
//! `python3` skips that part loudly except in CI (`CI=true`).

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

/// Kpsami (B <-> C) and its identity.
const KPSAMI_ID: &str = "mn-outer@in.m2m.example.com";
const KPSAMI: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// A member: AE-ID, its inner row at B (KpsaxmId, Kpsaxm), its row at C (KpsaxiId, Kpsaxi).
struct Member {
    id: &'static str,
    kpsaxm_id: &'static str,
    kpsaxm: &'static str,
    kpsaxi_id: &'static str,
    kpsaxi: &'static str,
}

const METER1: Member = Member {
    id: "Smeter1",
    kpsaxm_id: "meter1-inner@mn.m2m.example.com",
    kpsaxm: "11111111111111111111111111111111",
    kpsaxi_id: "meter1@in.m2m.example.com",
    kpsaxi: "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
};
const METER2: Member = Member {
    id: "Smeter2",
    kpsaxm_id: "meter2-inner@mn.m2m.example.com",
    kpsaxm: "22222222222222222222222222222222",
    kpsaxi_id: "meter2@in.m2m.example.com",
    kpsaxi: "a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2",
};
/// In the group of another agent (/id-mn2) at C, though B (wrongly) lists it as its member.
const METER3: Member = Member {
    id: "Smeter3",
    kpsaxm_id: "meter3-inner@mn.m2m.example.com",
    kpsaxm: "33333333333333333333333333333333",
    kpsaxi_id: "meter3@in.m2m.example.com",
    kpsaxi: "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3",
};
/// An AE of C (not a member) and a CSE with a PSK at C that is no agent.
const OTHER_AE: (&str, &str, &str) = (
    "Sother",
    "other@in.m2m.example.com",
    "44444444444444444444444444444444",
);
const ASN: (&str, &str, &str) = (
    "/id-asn",
    "asn@in.m2m.example.com",
    "55555555555555555555555555555555",
);
/// A Kpsa a stranger AE (no member) holds at B.
const STRANGER: (&str, &str, &str) = (
    "Sstranger",
    "stranger@mn.m2m.example.com",
    "66666666666666666666666666666666",
);

fn row(entity: &str, kpsa_id: &str, key: &str) -> String {
    format!("[[security.psk]]\nentity = \"{entity}\"\nkpsa_id = \"{kpsa_id}\"\nkey = \"{key}\"\n")
}

/// C: PSK rows for B, the members, an AE and a CSE; agents /id-mn (meter1, meter2) and /id-mn2 (meter3).
fn in_config() -> String {
    let mut c = format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\n\n[group_authentication]\nkey_lifetime_seconds = 600\n\n\
         [[group_authentication.agents]]\nagent = \"/id-mn\"\nmembers = [\"{}\", \"{}\"]\n\n\
         [[group_authentication.agents]]\nagent = \"/id-mn2\"\nmembers = [\"{}\"]\n\n",
        METER1.kpsaxi_id, METER2.kpsaxi_id, METER3.kpsaxi_id
    );
    c += &row("/id-mn", KPSAMI_ID, KPSAMI);
    for m in [&METER1, &METER2, &METER3] {
        c += &row(m.id, m.kpsaxi_id, m.kpsaxi);
    }
    c += &row(OTHER_AE.0, OTHER_AE.1, OTHER_AE.2);
    c += &row(ASN.0, ASN.1, ASN.2);
    c
}

/// B: registers with C over TLS-PSK (Kpsami); group agent for meter1, meter2 and meter3.
fn mn_config(in_https: &str) -> String {
    let mut c = format!(
        "[cse]\nrole = \"MN\"\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\nsp_id = \"//m2m.example.com\"\n\n\
         [registrar]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\nurl = \"{in_https}\"\npsk_identity = \"{KPSAMI_ID}\"\n\n\
         [tls]\nlisten = \"127.0.0.1:0\"\n\n[group_agent]\nmembers = [\"{}\", \"{}\", \"{}\"]\n\n",
        METER1.id, METER2.id, METER3.id
    );
    c += &row("/id-in", KPSAMI_ID, KPSAMI);
    for m in [&METER1, &METER2, &METER3] {
        c += &row(m.id, m.kpsaxm_id, m.kpsaxm);
    }
    c += &row(STRANGER.0, STRANGER.1, STRANGER.2);
    c
}

/// C and B as processes, B registered with C over the outer TLS-PSK association.
fn deployment() -> (CseProcess, CseProcess) {
    let c = CseProcess::start_temp(&in_config());
    let b = CseProcess::start_temp(&mn_config(c.https_url()));
    wait_registered(&c, &b);
    (c, b)
}

/// Ksx computed with the project's KDF (the member's side of the test).
fn ksx(m: &Member, eid: &str, rand_hex: &str) -> String {
    let kpsaxi = m2m_security::credentials::Secret::from_hex(m.kpsaxi).unwrap();
    hex::encode(m2m_security::kdf::ksx(&kpsaxi, eid, &hex::decode(rand_hex).unwrap()).expose())
}

/// A member asks B for key material over its inner association (this file's openssl client).
fn ask_agent(b: &CseProcess, m: &Member) -> Resp {
    TlsClient::psk(m.kpsaxm_id, m.kpsaxm)
        .request(
            b.https_url(),
            "POST",
            "/cse-mn",
            Some(m.id),
            None,
            Some(&json!({"m2m:gakReq": {}})),
        )
        .expect("inner association with B")
}

/// A retrieve of the member's own AE at C over TLS-PSK with (identity, key): the handshake's fate.
fn at_c(c: &CseProcess, identity: &str, key_hex: &str, from: &str) -> Result<Resp, String> {
    TlsClient::psk(identity, key_hex).request(
        c.https_url(),
        "GET",
        "/cse-in/meter1",
        Some(from),
        None,
        None,
    )
}

/// A round sent straight to C by whoever holds (identity, key).
fn round_at_c(c: &CseProcess, identity: &str, key_hex: &str, from: &str, mid: &[&str]) -> Resp {
    TlsClient::psk(identity, key_hex)
        .request(
            c.https_url(),
            "POST",
            "/cse-in",
            Some(from),
            None,
            Some(&json!({"m2m:gaRound": {"mid": mid}})),
        )
        .expect("association with C")
}

fn material(r: &Resp) -> Value {
    assert_eq!(r.rsc, 2000, "key material: {:?}", r.body);
    r.body["m2m:gaKey"].clone()
}

/// `m2m request` as a member: Rand through B, Ksx, then the request to C.
fn member_request(
    c: &CseProcess,
    b: &CseProcess,
    m: &Member,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "request",
        "--url",
        c.https_url(),
        "--from",
        m.id,
        "--json",
        "--group-agent-url",
        b.https_url(),
        "--group-agent-to",
        "cse-mn",
        "--kpsaxm-id",
        m.kpsaxm_id,
        "--kpsaxm-env",
        "KPSAXM",
        "--kpsaxi-env",
        "KPSAXI",
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(&args)
        .env("KPSAXM", m.kpsaxm)
        .env("KPSAXI", m.kpsaxi)
        .stdin(Stdio::null())
        .output()
        .expect("run m2m request")
}

/// Python's own HMAC-SHA-256 over label || NFKC(id) || Rand, for the cross-check.
fn python_ksx(kpsaxi_hex: &str, id: &str, rand_hex: &str) -> Option<String> {
    if !have_tool("python3", "--version", "the Python cross-check of Ksx") {
        return None;
    }
    let script = "import hmac,hashlib,sys,unicodedata\n\
        k,i,r=sys.argv[1],sys.argv[2],sys.argv[3]\n\
        m=b'oneM2M Group Secure Connection Key derivation'+unicodedata.normalize('NFKC',i).encode('utf-8')+bytes.fromhex(r)\n\
        print(hmac.new(bytes.fromhex(k),m,hashlib.sha256).hexdigest())";
    let out = Command::new("python3")
        .args(["-c", script, kpsaxi_hex, id, rand_hex])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn a_member_gets_rand_through_the_agent_and_c_accepts_it_as_that_member() {
    let (c, b) = deployment();
    // The member registers at C and reads its AE back, each time in one `m2m request`.
    let body = r#"{"m2m:ae":{"rn":"meter1","api":"Nmeter","rr":false,"srv":["3"]}}"#;
    let out = member_request(
        &c,
        &b,
        &METER1,
        &[
            "-X", "create", "--to", "cse-in", "--ty", "2", "--body", body,
        ],
    );
    let v = json_stdout(&out);
    assert_eq!(
        v["rsc"],
        2001,
        "{v}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["pc"]["m2m:ae"]["aei"], METER1.id);
    let out = member_request(&c, &b, &METER1, &["--to", "cse-in/meter1"]);
    let v = json_stdout(&out);
    assert_eq!(v["rsc"], 2000, "{v}");
    assert_eq!(v["pc"]["m2m:ae"]["aei"], METER1.id);

    // The key material B forwards; Ksx from it (project KDF and Python) opens C as meter1.
    let km = material(&ask_agent(&b, &METER1));
    assert_eq!(km["kid"], METER1.kpsaxi_id);
    assert_eq!(km["eid"], METER1.id);
    assert_eq!(km["csi"], "/id-in");
    let rand = km["rand"].as_str().unwrap();
    assert_eq!(rand.len(), 32, "16 bytes of Rand in hex");
    let key = ksx(&METER1, METER1.id, rand);
    let r = at_c(&c, METER1.kpsaxi_id, &key, METER1.id).expect("Ksx opens C");
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    if let Some(py) = python_ksx(METER1.kpsaxi, METER1.id, rand) {
        assert_eq!(py, key, "Python's Ksx");
        assert_eq!(
            at_c(&c, METER1.kpsaxi_id, &py, METER1.id).unwrap().rsc,
            2000
        );
    }
    // The association binds meter1: it cannot speak as another member.
    let r = at_c(&c, METER1.kpsaxi_id, &key, METER2.id).unwrap();
    assert_eq!(r.rsc, 4106, "{:?}", r.body);

    // Each round is audited at both ends, and no key reaches either log.
    assert!(
        c.stderr()
            .contains("group authentication round: Ksx derived"),
        "{}",
        c.stderr()
    );
    assert!(
        b.logged("group authentication round requested"),
        "{}",
        b.stderr()
    );
    // Nor the Rand: audit lines carry none (with Kpsaxi it gives Ksx).
    let logs = [c.stderr(), c.stdout(), b.stderr(), b.stdout()];
    let secrets = [KPSAMI, METER1.kpsaxm, METER1.kpsaxi, &key, rand].map(unhex);
    assert_no_secret(&logs, &secrets);
}

#[test]
fn a_member_without_inner_association_gets_no_key() {
    let (c, b) = deployment();
    // meter1 connects and gets a round; meter2 (a member, never connected to B) knows Rand too,
    // since Rand is no secret, but B did not list it: its Ksx opens nothing.
    let km = material(&ask_agent(&b, &METER1));
    let rand = km["rand"].as_str().unwrap();
    let ksx2 = ksx(&METER2, METER2.id, rand);
    assert!(
        at_c(&c, METER2.kpsaxi_id, &ksx2, METER2.id).is_err(),
        "meter2 has no key at C"
    );
    // The log line reaches the pipe's reader a moment after the round: wait for it.
    assert!(c.logged("Ksx derived"), "a round: {}", c.stderr());
    let derived = c.stderr();
    let line = derived
        .lines()
        .find(|l| l.contains("Ksx derived"))
        .expect("a round");
    assert!(line.contains(r#"["Smeter1"]"#), "{line}");

    // Asking B without the inner TLS-PSK association (B's plain listener) gets nothing.
    let (rsc, body) = notify(b.url(), "/cse-mn", METER2.id, json!({"m2m:gakReq": {}}));
    assert!(matches!(rsc, 4103 | 4106), "{rsc} {body}");
    assert!(body.get("m2m:gaKey").is_none());
    // An AE with an inner association but no member gets nothing either.
    let r = TlsClient::psk(STRANGER.1, STRANGER.2)
        .request(
            b.https_url(),
            "POST",
            "/cse-mn",
            Some(STRANGER.0),
            None,
            Some(&json!({"m2m:gakReq": {}})),
        )
        .unwrap();
    assert_eq!(r.rsc, 4103, "{:?}", r.body);
    // A member cannot ask in another member's name over its own association.
    let r = TlsClient::psk(METER1.kpsaxm_id, METER1.kpsaxm)
        .request(
            b.https_url(),
            "POST",
            "/cse-mn",
            Some(METER2.id),
            None,
            Some(&json!({"m2m:gakReq": {}})),
        )
        .unwrap();
    assert_eq!(r.rsc, 4106, "{:?}", r.body);
}

#[test]
fn a_stale_rand_is_refused_at_c() {
    let (c, b) = deployment();
    let rand1 = material(&ask_agent(&b, &METER1))["rand"]
        .as_str()
        .unwrap()
        .to_owned();
    let old = ksx(&METER1, METER1.id, &rand1);
    assert!(
        at_c(&c, METER1.kpsaxi_id, &old, METER1.id).is_ok(),
        "the current Ksx"
    );
    // meter2 is not in the round: B asks C for a new one, which replaces the previous keys.
    let rand2 = material(&ask_agent(&b, &METER2))["rand"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(rand1, rand2);
    assert!(
        at_c(&c, METER1.kpsaxi_id, &old, METER1.id).is_err(),
        "the Ksx of the previous round"
    );
    let new2 = ksx(&METER2, METER2.id, &rand2);
    assert!(
        at_c(&c, METER2.kpsaxi_id, &new2, METER2.id).is_ok(),
        "the new round's Ksx"
    );
}

#[test]
fn kpsaxi_itself_does_not_open_c() {
    let (c, b) = deployment();
    assert!(
        at_c(&c, METER1.kpsaxi_id, METER1.kpsaxi, METER1.id).is_err(),
        "before any round"
    );
    material(&ask_agent(&b, &METER1));
    assert!(
        at_c(&c, METER1.kpsaxi_id, METER1.kpsaxi, METER1.id).is_err(),
        "during a round"
    );
    // Other PSK rows of C are not affected: the association opens and the request is answered
    // (meter1 never registered in this test, so there is nothing to retrieve).
    let r = at_c(&c, OTHER_AE.1, OTHER_AE.2, OTHER_AE.0).expect("association with C");
    assert_eq!(r.rsc, 4004, "{:?}", r.body);
}

#[test]
fn only_the_agent_gets_a_round_and_only_for_its_members() {
    let (c, b) = deployment();
    // An AE of C, a CSE of C that is no agent: 4103.
    let r = round_at_c(&c, OTHER_AE.1, OTHER_AE.2, OTHER_AE.0, &[METER1.id]);
    assert_eq!(r.rsc, 4103, "{:?}", r.body);
    let r = round_at_c(&c, ASN.1, ASN.2, ASN.0, &[METER1.id]);
    assert_eq!(r.rsc, 4103, "{:?}", r.body);
    // Claiming to be the agent over another association is impersonation.
    let r = round_at_c(&c, OTHER_AE.1, OTHER_AE.2, "/id-mn", &[METER1.id]);
    assert_eq!(r.rsc, 4106, "{:?}", r.body);
    // No association at all.
    let (rsc, _) = notify(
        c.url(),
        "/cse-in",
        "/id-mn",
        json!({"m2m:gaRound": {"mid": [METER1.id]}}),
    );
    assert_eq!(rsc, 4107);
    // The agent itself, for a member of another agent's group (all or nothing).
    let r = round_at_c(&c, KPSAMI_ID, KPSAMI, "/id-mn", &[METER1.id, METER3.id]);
    assert_eq!(r.rsc, 4103, "{:?}", r.body);
    // Through B: meter3 has an inner association and B lists it, but C maps it to /id-mn2.
    let r = ask_agent(&b, &METER3);
    assert_eq!(r.rsc, 4103, "{:?}", r.body);
    // The refusal names no member or group; the reason is in C's audit log.
    assert!(!r.dbg().unwrap_or("").contains("meter3"), "{:?}", r.body);
    assert!(c.logged("not a member of the group"), "{}", c.stderr());
    // Malformed rounds are bad requests, not panics.
    let r = TlsClient::psk(KPSAMI_ID, KPSAMI)
        .request(
            c.https_url(),
            "POST",
            "/cse-in",
            Some("/id-mn"),
            None,
            Some(&json!({"m2m:gaRound": {"mid": "x"}})),
        )
        .unwrap();
    assert_eq!(r.rsc, 4000, "{:?}", r.body);
    let r = round_at_c(&c, KPSAMI_ID, KPSAMI, "/id-mn", &[]);
    assert_eq!(r.rsc, 4000, "{:?}", r.body);
    // The agent for its own member: a round.
    let r = round_at_c(&c, KPSAMI_ID, KPSAMI, "/id-mn", &[METER1.id]);
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    assert_eq!(r.body["m2m:gaRand"]["mbr"][0]["kid"], METER1.kpsaxi_id);
    assert!(
        c.logged("group authentication round refused"),
        "{}",
        c.stderr()
    );
}

#[test]
fn default_config_shows_the_group_authentication_fields() {
    let out = m2m(&["cse", "--print-default-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[group_authentication]"), "{text}");
    assert!(text.contains("key_lifetime_seconds = 3600"), "{text}");
    assert!(text.contains("[group_agent]"), "{text}");
}
