//! End-to-End Security of Primitives (TS-0004 clause 7.6.2, TS-0003 clause 8.4) between real processes:
//! the IN-CSE is the ESPrim Target with provisioned pairwiseESPrimKeys; an AE at the MN-CSE (TLS-PSK)
//! protects its requests with `m2m request --esprim-to`, and the MN forwards the outer NOTIFYs over its
//! certificate association without being able to read them.
//!
//! Attacks tried through an evil relay (a small HTTP forwarder in front of the IN that records every
//! byte and can tamper): a flipped ciphertext byte and a swapped `kid` (4115), a replayed object (4113),
//! expired rands (4114 receiver rand, 4113 originator rand, with a 3 s rand lifetime from the config),
//! an inner From that is not the key's entity (4116), an unknown key ID (4112), an enc the Target does
//! not offer (4111), a body that is no JWE (5210), a forgery carrying a genuine object's IV (4115, and
//! the genuine object is still accepted afterwards), an inner request addressed to another CSE (a
//! protected 4000). The relay's bytes and the MN's log never contain the
//! inner plaintext.

mod common;

use common::*;
use m2m_core::security_info::ReceiverEsprimRandObject;
use m2m_security::credentials::Secret;
use m2m_security::e2e::esprim::EsprimSession;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The AE: its AE-ID, its TLS-PSK row at the MN, its pairwiseESPrimKey with the IN.
const AE: &str = "Sesp1";
const KPSA_ID: &str = "esp1@mn.m2m.example.com";
const KPSA: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const KID: &str = "esp1-pairwise";
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// Another AE's pairwiseESPrimKey at the IN.
const KID2: &str = "esp2-pairwise";
const KEY2: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
/// What the inner requests carry; no intermediate may ever see it.
const MARKER: &str = "MARKER-inner-plaintext-4f1c";

/// `[esprim]` of the IN: both keys, A128GCM and A256GCM only, the given rand lifetime.
fn esprim_section(lifetime: u64) -> String {
    format!(
        "[esprim]\nrand_lifetime_seconds = {lifetime}\nalgorithms = [10, 12]\n\n\
         [[esprim.keys]]\nkid = \"{KID}\"\nentity = \"{AE}\"\nkey = \"{KEY}\"\n\n\
         [[esprim.keys]]\nkid = \"{KID2}\"\nentity = \"Sesp2\"\nkey = \"{KEY2}\"\n\n"
    )
}

/// The IN's container `box`, whose ACP lets the AE create and retrieve.
fn prepare_box(in_url: &str) {
    let acp = create_acp(
        in_url,
        "/cse-in",
        "CAdmin",
        "acpEsp",
        vec![acr(&[AE], OP_CREATE | OP_RETRIEVE)],
        vec![acr(&["CAdmin"], OP_ALL)],
    );
    create_cnt(
        in_url,
        "/cse-in",
        "CAdmin",
        json!({"rn": "box", "acpi": [acp]}),
    );
}

/// `m2m request` protected for the IN with `kid`, printing JSON.
fn esprim_request(url: &str, kid: &str, psk: bool, args: &[&str]) -> Value {
    let mut all = vec![
        "request",
        "--url",
        url,
        "--from",
        AE,
        "--json",
        "--esprim-to",
        "/id-in",
        "--esprim-key-id",
        kid,
        "--esprim-key-env",
        "ESPRIM_KEY",
    ];
    if psk {
        all.extend_from_slice(&["--psk-identity", KPSA_ID, "--psk-key-env", "KPSA"]);
    }
    all.extend_from_slice(args);
    let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(&all)
        .env("ESPRIM_KEY", KEY)
        .env("KPSA", KPSA)
        .stdin(Stdio::null())
        .output()
        .expect("run m2m request");
    let v = json_stdout(&out);
    let want = if v["rsc"].as_u64().is_some_and(|c| c < 4000) {
        0
    } else {
        1
    };
    assert_eq!(out.status.code(), Some(want), "exit code for {v}");
    v
}

fn create_marker(url: &str, kid: &str, psk: bool) -> Value {
    let body = json!({"m2m:cin": {"con": MARKER}}).to_string();
    esprim_request(
        url,
        kid,
        psk,
        &[
            "-X",
            "create",
            "--to",
            "/id-in/cse-in/box",
            "--ty",
            "4",
            "--body",
            &body,
        ],
    )
}

#[test]
fn protected_create_and_retrieve_through_the_mn() {
    let pki = Pki::temp();
    let in_cse = CseProcess::start_temp(&format!(
        "{}{}{IN_ADMITS_MN_CREDENTIALS}",
        in_tls_config(&pki),
        esprim_section(300)
    ));
    let mn_extra =
        format!("[[security.psk]]\nentity = \"{AE}\"\nkpsa_id = \"{KPSA_ID}\"\nkey = \"{KPSA}\"\n");
    let mn = CseProcess::start_temp(&format!(
        "{}\n{mn_extra}",
        mn_config(in_cse.https_url(), &pki)
    ));
    wait_registered(&in_cse, &mn);
    prepare_box(in_cse.url());
    // The AE registers at the MN over its own association: the MN records its S-stem at the IN,
    // which then takes the MN's word for it.
    let registered = TlsClient::psk(KPSA_ID, KPSA)
        .request(
            mn.https_url(),
            "POST",
            "/cse-mn",
            Some(AE),
            Some(2),
            Some(&json!({"m2m:ae": {"rn": "esp1", "api": "Nesp", "rr": false, "srv": ["3"]}})),
        )
        .unwrap();
    assert_eq!(registered.rsc, 2001, "{:?}", registered.body);

    let created = create_marker(mn.https_url(), KID, true);
    assert_eq!(created["rsc"], 2001, "{created}");
    assert_eq!(created["pc"]["m2m:cin"]["con"], MARKER);
    let ri = created["pc"]["m2m:cin"]["ri"].as_str().expect("ri");
    let (rsc, stored) = retrieve(in_cse.url(), &format!("/{ri}"), "CAdmin");
    assert_eq!(
        (rsc, &stored["m2m:cin"]["con"]),
        (2000, &json!(MARKER)),
        "stored at the IN"
    );
    let got = esprim_request(mn.https_url(), KID, true, &["--to", "/id-in/cse-in/box/la"]);
    assert_eq!(got["rsc"], 2000, "{got}");
    assert_eq!(got["pc"]["m2m:cin"]["con"], MARKER);
    // The inner request gets the real access decision: the ACP grants no DELETE.
    let del = esprim_request(
        mn.https_url(),
        KID,
        true,
        &["-X", "delete", "--to", "/id-in/cse-in/box"],
    );
    assert_eq!(del["rsc"], 4103, "{del}");
    // A key the IN does not know: the outer NOTIFY is refused, the inner request never runs.
    let unknown = esprim_request(
        mn.https_url(),
        "nobody-pairwise",
        true,
        &["--to", "/id-in/cse-in/box/la"],
    );
    assert_eq!(unknown["rsc"], 4112, "{unknown}");

    assert!(
        !mn.stderr().contains(MARKER),
        "the MN logged the inner plaintext"
    );
    assert!(in_cse.logged("ESPrim inner request processed"));
}

// ---------------------------------------------------------------------------------------------
// An Originator in the test (the project's library), for objects m2m request would never send
// ---------------------------------------------------------------------------------------------

fn rand_of(url: &str) -> ReceiverEsprimRandObject {
    let (rsc, body) = notify(url, "/cse-in", AE, json!({"m2m:seci": {"sit": 3}}));
    assert_eq!(rsc, 2000, "rand request: {body}");
    assert_eq!(body["m2m:seci"]["sit"], 4);
    serde_json::from_value(body["m2m:seci"]["ero"].clone()).expect("receiverESPrimRandObject")
}

/// A session with the IN's rand; the originator rand lives `orig_secs`.
fn session(url: &str, kid: &str, key: &str, orig_secs: i64) -> EsprimSession {
    let rand = rand_of(url);
    let key = Secret::from_hex(key).unwrap();
    let life = chrono::Duration::seconds(orig_secs);
    EsprimSession::start(kid, &key, &rand, chrono::Utc::now(), life, None).expect("session")
}

fn inner_retrieve(from: &str) -> Vec<u8> {
    json!({"op": 2, "to": "/id-in/cse-in/box/la", "fr": from, "rqi": "inner-1", "rvi": "3"})
        .to_string()
        .into_bytes()
}

fn send_epo(url: &str, epo: &str) -> Resp {
    let body = json!({"m2m:seci": {"sit": 5, "epo": epo}});
    request("POST", url, "/cse-in", Some(AE), None, Some(&body))
}

fn assert_refused(r: &Resp, rsc: u16, what: &str) {
    assert_eq!(r.rsc, rsc, "{what}: {:?}", r.body);
    assert!(
        r.body.get("m2m:seci").is_none(),
        "{what}: no protected answer"
    );
}

#[test]
fn attacks_at_an_intermediate_are_refused() {
    let in_cse = CseProcess::start_temp(&esprim_section(3));
    prepare_box(in_cse.url());
    // Outer NOTIFYs without an association come from an AE registered at the IN.
    register_ae(in_cse.url(), "/cse-in", AE, "esp1", &[]);
    let relay = Relay::start(in_cse.url());

    // Honest: the relay forwards the exchange but sees neither the request nor the response content.
    let created = create_marker(&relay.url, KID, false);
    assert_eq!(created["rsc"], 2001, "{created}");
    let seen = relay.seen();
    assert!(
        seen.contains("\"sit\":5") && seen.contains("\"epo\""),
        "{seen}"
    );
    assert!(!seen.contains(MARKER), "the relay saw the inner plaintext");
    assert!(
        !seen.contains("m2m:cin"),
        "the relay saw the inner primitive"
    );

    // Replay: the recorded ESPrim NOTIFY sent again.
    let (_, epo) = relay
        .last_esprim
        .lock()
        .unwrap()
        .clone()
        .expect("a recorded object");
    let replay = send_epo(in_cse.url(), &epo);
    assert_refused(&replay, 4113, "replayed ESPrim object");
    assert!(
        replay.dbg().unwrap_or("").contains("replay"),
        "{:?}",
        replay.body
    );

    // Tampering in transit.
    relay.set(Tamper::FlipCiphertext);
    assert_eq!(
        create_marker(&relay.url, KID, false)["rsc"],
        4115,
        "flipped ciphertext byte"
    );
    relay.set(Tamper::Kid(KID2));
    assert_eq!(
        create_marker(&relay.url, KID, false)["rsc"],
        4115,
        "kid swapped to another key"
    );
    relay.set(Tamper::Kid("forged-pairwise"));
    assert_eq!(
        create_marker(&relay.url, KID, false)["rsc"],
        4112,
        "kid swapped to an unknown key"
    );
    relay.set(Tamper::Nothing);

    // An inner From that is not the key's entity.
    let s = session(in_cse.url(), KID, KEY, 60);
    let jwe = s
        .protect_request(&inner_retrieve("Sesp2"), chrono::Utc::now())
        .unwrap();
    assert_refused(
        &send_epo(in_cse.url(), &jwe),
        4116,
        "inner From of another AE",
    );

    // An enc the Target did not offer (A192GCM), and an object that is no JWE.
    let s = session(in_cse.url(), KID, KEY, 60);
    let jwe = s
        .protect_request(&inner_retrieve(AE), chrono::Utc::now())
        .unwrap();
    let other_enc = with_header(&jwe, "enc", json!("A192GCM"));
    assert_refused(&send_epo(in_cse.url(), &other_enc), 4111, "enc A192GCM");
    assert_refused(&send_epo(in_cse.url(), "not.a.jwe"), 5210, "not a JWE");
    // A forgery of the same object (same header and IV, one ciphertext byte changed) reaches the
    // tag check and fails it: it must not mark the IV as seen, or a forger could have the genuine
    // object refused as a replay.
    assert_refused(
        &send_epo(in_cse.url(), &flip_ciphertext(&jwe)),
        4115,
        "forged object with the genuine IV",
    );
    // The untouched object still works: the refusals changed nothing.
    let ok = send_epo(in_cse.url(), &jwe);
    assert_eq!(ok.rsc, 2000, "{:?}", ok.body);
    assert_eq!(ok.body["m2m:seci"]["sit"], 5);

    // An inner request for another CSE: the Target never forwards it (the protection would end
    // here), and says so inside the protected answer.
    let mut s = session(in_cse.url(), KID, KEY, 60);
    let elsewhere =
        json!({"op": 2, "to": "/id-mn/cse-mn/box", "fr": AE, "rqi": "inner-2", "rvi": "3"});
    let jwe = s
        .protect_request(elsewhere.to_string().as_bytes(), chrono::Utc::now())
        .unwrap();
    let outer = send_epo(in_cse.url(), &jwe);
    assert_eq!(outer.rsc, 2000, "{:?}", outer.body);
    let epo = outer.body["m2m:seci"]["epo"]
        .as_str()
        .expect("protected answer");
    let inner = s.unprotect_response(epo, chrono::Utc::now()).unwrap();
    assert_eq!(inner["rsc"], 4000, "{inner}");
    assert!(
        inner
            .to_string()
            .contains("must address a resource of its Target CSE"),
        "{inner}"
    );

    // Expiry (rand lifetime 3 s at the IN): an originator rand of 1 s, then the receiver rand.
    let short = session(in_cse.url(), KID, KEY, 1);
    let long = session(in_cse.url(), KID, KEY, 60);
    let a = short
        .protect_request(&inner_retrieve(AE), chrono::Utc::now())
        .unwrap();
    let b = long
        .protect_request(&inner_retrieve(AE), chrono::Utc::now())
        .unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    assert_refused(&send_epo(in_cse.url(), &a), 4113, "expired originator rand");
    std::thread::sleep(Duration::from_millis(2000));
    assert_refused(&send_epo(in_cse.url(), &b), 4114, "expired receiver rand");

    assert!(!in_cse.stderr().contains(KEY), "a key reached the log");
}
