//! The two pairwiseESPrimKey sources besides provisioning (TS-0003 clause 8.4.2 A), between real
//! processes: a MAF (`m2m maf`), the IN-CSE as ESPrim Target with `[esprim] maf_keys` and `escertke`, and
//! an MN-CSE registered with it over mutual TLS, through which AEs on TLS-PSK send with `m2m request`.
//!
//! MAF ESPrim Framework (C.6a): success through the MN with `--esprim-maf`; a Kc registered for another
//! target, a SAEF key (SUID 32) used as a kid, an expired Kc (also once cached at the Target): 4112; an
//! inner From other than the Kc's source: 4116; an ESPrim key (SUID 33) opens no TLS-PSK association.
//!
//! ESCertKE (clause 8.7, sit 6): success through the MN with `--esprim-cert`; an originator certificate
//! from another CA: 4106; an inner From other than the certificate's identity: 4116; a replayed Message
//! 3: refused (4000 with nothing pending, 4106 against a new exchange); a recording relay that carries
//! the whole exchange never holds the key. The Target's limits (one pending exchange, a 2 s timeout):
//! a second originator waits (5000), a new Message 1 replaces the pending one, a stale one is dropped.
//! The per-peer limit: one peer sending Message 1s under many originator IDs fills its own share
//! (5000) while an AE behind another peer (the MN) still completes ESCertKE.

mod common;

use base64::Engine;
use common::*;
use m2m_security::credentials::Secret;
use m2m_security::e2e::escertke::Initiator;
use m2m_security::e2e::esprim::EsprimSession;
use m2m_security::kdf;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

const MAF_FQDN: &str = "maf.sec.m2m.example.com";
/// The MAF client of the MAF tests: its Km row names it `/Sesm1`, which the Target binds Kc to.
const MAF_AE: &str = "Sesm1";
const KM_ID: &str = "esm1@maf.sec.m2m.example.com";
const KM: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// The certificate AE of the ESCertKE tests (AE-ID /Sesc1 in its certificate).
const CERT_AE: &str = "Sesc1";
/// Both AEs' TLS-PSK key at the MN.
const KPSA: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const MARKER: &str = "MARKER-esprim-keys-7d2e";
/// The AE registered at the IN whose outer NOTIFYs carry the in-test ESPrim objects.
const OUTER: &str = "Couter";

struct Setup {
    pki: Pki,
    /// Held for the test's length: the MAF stops when the set-up is dropped.
    maf: ServiceProcess,
    maf_url: String,
    in_cse: CseProcess,
    mn: CseProcess,
}

/// `m2m maf` with the Km of the MAF client: the process and its URL.
fn start_maf(pki: &Pki) -> (ServiceProcess, String) {
    pki.issue(&["--kind", "maf", "--id", MAF_FQDN], "maf");
    let maf = start_maf_process(
        pki,
        MAF_FQDN,
        &format!("[[km]]\nclient_id = \"/{MAF_AE}\"\nkm_id = \"{KM_ID}\"\nkey = \"{KM}\"\n"),
    );
    let url = maf.url().to_owned();
    (maf, url)
}

impl Setup {
    fn start() -> Setup {
        Setup::start_with("")
    }

    /// The set-up with further `[esprim]` lines at the IN.
    fn start_with(esprim: &str) -> Setup {
        let pki = Pki::temp();
        pki.issue(&["--kind", "ae", "--id", CERT_AE], "esc1");
        let (maf, maf_url) = start_maf(&pki);
        let in_cse = CseProcess::start_temp(&format!(
            "{}[maf]\nurl = \"{maf_url}\"\nfqdn = \"{MAF_FQDN}\"\n\
             [esprim]\nmaf_keys = true\nescertke = true\nalgorithms = [10, 12]\n{esprim}\
             {IN_ADMITS_MN_CREDENTIALS}",
            in_tls_config(&pki)
        ));
        let rows: String = [MAF_AE, CERT_AE]
            .iter()
            .map(|ae| {
                format!(
                    "[[security.psk]]\nentity = \"{ae}\"\nkpsa_id = \"{}@mn.m2m.example.com\"\nkey = \"{KPSA}\"\n",
                    ae.to_lowercase()
                )
            })
            .collect();
        let mn =
            CseProcess::start_temp(&format!("{}\n{rows}", mn_config(in_cse.https_url(), &pki)));
        wait_registered(&in_cse, &mn);
        let acp = create_acp(
            in_cse.url(),
            "/cse-in",
            "CAdmin",
            "acpKeys",
            vec![acr(&[MAF_AE, CERT_AE], OP_CREATE | OP_RETRIEVE)],
            vec![acr(&["CAdmin"], OP_ALL)],
        );
        create_cnt(
            in_cse.url(),
            "/cse-in",
            "CAdmin",
            json!({"rn": "box", "acpi": [acp]}),
        );
        // The S-AEs register at the MN over their own associations: the MN records their
        // S-stems at the IN, which then takes the MN's word for them.
        for ae in [MAF_AE, CERT_AE] {
            let client = TlsClient::psk(&format!("{}@mn.m2m.example.com", ae.to_lowercase()), KPSA);
            let body = json!({"m2m:ae": {"rn": ae.to_lowercase(), "api": "Nesp", "rr": false, "srv": ["3"]}});
            let r = client
                .request(
                    mn.https_url(),
                    "POST",
                    "/cse-mn",
                    Some(ae),
                    Some(2),
                    Some(&body),
                )
                .unwrap();
            assert_eq!(r.rsc, 2001, "{ae}: {:?}", r.body);
        }
        // The in-test Originators send their outer NOTIFYs on the IN's loopback listener as an AE
        // registered there (an S-AE-ID is unique in the SP: the IN refuses the MN's relaying for
        // one registered at the IN).
        register_ae(in_cse.url(), "/cse-in", OUTER, "outer", &[]);
        Setup {
            pki,
            maf,
            maf_url,
            in_cse,
            mn,
        }
    }

    fn p(&self, name: &str) -> String {
        self.pki.dir().join(name).display().to_string()
    }

    /// `m2m request` as `ae` through the MN (TLS-PSK), protected for /id-in with `key_args`.
    fn request(&self, ae: &str, key_args: &[&str], envs: &[(&str, &str)], op: &[&str]) -> Value {
        let psk_id = format!("{}@mn.m2m.example.com", ae.to_lowercase());
        let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args([
                "request",
                "--url",
                self.mn.https_url(),
                "--from",
                ae,
                "--json",
            ])
            .args(["--psk-identity", &psk_id, "--psk-key-env", "KPSA"])
            .args(["--esprim-to", "/id-in"])
            .args(key_args)
            .args(op)
            .env("KPSA", KPSA)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run m2m request");
        let v = json_stdout(&out);
        let ok = v["rsc"].as_u64().is_some_and(|c| c < 4000);
        assert_eq!(out.status.code(), Some(if ok { 0 } else { 1 }), "{v}");
        v
    }
}

fn create_marker() -> Vec<&'static str> {
    vec![
        "-X",
        "create",
        "--to",
        "/id-in/cse-in/box",
        "--ty",
        "4",
        "--body",
        r#"{"m2m:cin":{"con":"MARKER-esprim-keys-7d2e"}}"#,
    ]
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A Kc registered at the MAF by the Km client with `suid` for `target`, living `secs` seconds.
fn register_kc(maf_url: &str, suid: u32, target: &str, secs: i64) -> (String, Secret) {
    block(async {
        let km = Secret::from_hex(KM).unwrap();
        let mut maf = registered_km_client(maf_url, MAF_FQDN, KM_ID, &km).await;
        let until = m2m_core::time::format(chrono::Utc::now() + chrono::Duration::seconds(secs));
        let reg = maf
            .register_key(suid, &[target], Some(&until))
            .await
            .expect("key registration");
        (reg.key_id.clone(), reg.key.clone())
    })
}

/// One protected inner RETRIEVE of the box from `from` with (kid, key), sent by `outer` straight to
/// the IN's loopback listener; the outer response.
fn protected_retrieve(url: &str, outer: &str, kid: &str, key: &Secret, from: &str) -> Resp {
    let (rsc, body) = notify(url, "/cse-in", outer, json!({"m2m:seci": {"sit": 3}}));
    assert_eq!(rsc, 2000, "rand request: {body}");
    let rand = serde_json::from_value(body["m2m:seci"]["ero"].clone()).unwrap();
    let life = chrono::Duration::seconds(60);
    let s = EsprimSession::start(kid, key, &rand, chrono::Utc::now(), life, None).unwrap();
    let inner = json!({"op": 2, "to": "/id-in/cse-in/box", "fr": from, "rqi": "in-1", "rvi": "3"});
    let jwe = s
        .protect_request(inner.to_string().as_bytes(), chrono::Utc::now())
        .unwrap();
    let body = json!({"m2m:seci": {"sit": 5, "epo": jwe}});
    request("POST", url, "/cse-in", Some(outer), None, Some(&body))
}

#[test]
fn maf_esprim_keys() {
    let s = Setup::start();
    let maf_args = [
        "--esprim-maf",
        "--maf-url",
        &s.maf_url,
        "--maf-fqdn",
        MAF_FQDN,
        "--km-id",
        KM_ID,
        "--km-env",
        "KM",
    ];
    // Success through the MN: the AE registers Kc (SUID 33) for /id-in, the IN fetches it on first use.
    let created = s.request(MAF_AE, &maf_args, &[("KM", KM)], &create_marker());
    assert_eq!(created["rsc"], 2001, "{created}");
    assert_eq!(created["pc"]["m2m:cin"]["con"], MARKER);
    assert!(
        s.in_cse
            .stderr()
            .contains("ESPrim key retrieved from the MAF"),
        "{}",
        s.in_cse.stderr()
    );
    assert!(
        !s.mn.stderr().contains(MARKER),
        "the MN saw the inner plaintext"
    );

    let url = s.in_cse.url();
    // A Kc registered for another target: the MAF does not release it to the IN.
    let (kid, kc_other) = register_kc(&s.maf_url, 33, "/id-other", 300);
    let r = protected_retrieve(
        url,
        OUTER,
        &kid,
        &kdf::esprim_maf_pairwise(&kc_other),
        MAF_AE,
    );
    assert_eq!(r.rsc, 4112, "{:?}", r.body);
    assert!(
        r.dbg().unwrap_or("").contains("not a target"),
        "{:?}",
        r.body
    );

    // A SAEF key (SUID 32) used as an ESPrim kid, and an ESPrim key (SUID 33) as a TLS-PSK identity.
    let (kid, kc) = register_kc(&s.maf_url, 32, "/id-in", 300);
    let r = protected_retrieve(url, OUTER, &kid, &kdf::esprim_maf_pairwise(&kc), MAF_AE);
    assert_eq!(r.rsc, 4112, "{:?}", r.body);
    assert!(r.dbg().unwrap_or("").contains("SUID 32"), "{:?}", r.body);
    let (kid33, kc33) = register_kc(&s.maf_url, 33, "/id-in", 300);
    let half = hex::encode(&kc33.expose()[..kc33.len() / 2]);
    let phone = TlsClient::psk(&kid33, &half);
    let r = phone.request(
        s.in_cse.https_url(),
        "GET",
        "/cse-in",
        Some(MAF_AE),
        None,
        None,
    );
    assert!(r.is_err(), "an ESPrim key opened an association: {r:?}");
    assert!(
        s.in_cse
            .logged("the key is for SUID 33, not for security association establishment"),
        "refused for its SUID:\n{}",
        s.in_cse.stderr()
    );

    // The same SUID 33 key as ESPrim: the right From works, another From is 4116.
    let pairwise = kdf::esprim_maf_pairwise(&kc33);
    let ok = protected_retrieve(url, OUTER, &kid33, &pairwise, MAF_AE);
    assert_eq!(ok.rsc, 2000, "{:?}", ok.body);
    let other = protected_retrieve(url, OUTER, &kid33, &pairwise, "Sother");
    assert_eq!(other.rsc, 4116, "{:?}", other.body);

    // Expired Kc: one never used, and one cached at the IN after a first use.
    let (kid_a, kc_a) = register_kc(&s.maf_url, 33, "/id-in", 2);
    let (kid_b, kc_b) = register_kc(&s.maf_url, 33, "/id-in", 2);
    let pb = kdf::esprim_maf_pairwise(&kc_b);
    assert_eq!(
        protected_retrieve(url, OUTER, &kid_b, &pb, MAF_AE).rsc,
        2000
    );
    std::thread::sleep(Duration::from_millis(2500));
    let pa = kdf::esprim_maf_pairwise(&kc_a);
    let r = protected_retrieve(url, OUTER, &kid_a, &pa, MAF_AE);
    assert_eq!(r.rsc, 4112, "expired, never used: {:?}", r.body);
    let r = protected_retrieve(url, OUTER, &kid_b, &pb, MAF_AE);
    assert_eq!(r.rsc, 4112, "expired, cached: {:?}", r.body);

    // No key in any process's log: the CSEs', and the MAF's, which handled every Kc and Km.
    let logs = [s.in_cse.stderr(), s.mn.stderr(), s.maf.stderr()];
    let keys =
        [&pairwise, &pb, &pa, &kc33, &kc_a, &kc_b, &kc_other, &kc].map(|k| k.expose().to_vec());
    assert_no_secret(&logs, &keys);
    assert_no_secret(&logs, &[unhex(KM)]);
}

// ---------------------------------------------------------------------------------------------
// ESCertKE
// ---------------------------------------------------------------------------------------------

/// One ESCertKE Message to the IN (through `url`) as `outer`; the response.
fn send_eckm(url: &str, outer: &str, message: &[u8]) -> Resp {
    let body = json!({"m2m:seci": {"sit": 6, "eckm": b64(message)}});
    request("POST", url, "/cse-in", Some(outer), None, Some(&body))
}

fn eckm_of(r: &Resp) -> Vec<u8> {
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    assert_eq!(r.body["m2m:seci"]["sit"], 6, "{:?}", r.body);
    let text = r.body["m2m:seci"]["eckm"].as_str().expect("eckm");
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn client_ctx(pki: &Pki, name: &str) -> openssl::ssl::SslContext {
    m2m_security::tls::client_context(&m2m_security::tls::ClientTlsConfig {
        cipher_suites: m2m_security::tls::CERTIFICATE_SUITES
            .iter()
            .map(|c| c.to_string())
            .collect(),
        certificate_chain: Some(pki.dir().join(format!("{name}.pem"))),
        private_key: Some(pki.dir().join(format!("{name}.key"))),
        trusted_ca: Some(pki.ca_pem()),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn escertke_keys() {
    let s = Setup::start();
    let cert_args = |name: &str| {
        vec![
            "--esprim-cert".to_owned(),
            s.p(&format!("{name}.pem")),
            "--esprim-cert-key".to_owned(),
            s.p(&format!("{name}.key")),
            "--esprim-ca".to_owned(),
            s.pki.ca_pem().display().to_string(),
        ]
    };
    let args = cert_args("esc1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Success through the MN, which relays the sit 6 NOTIFYs it cannot use.
    let created = s.request(CERT_AE, &args, &[], &create_marker());
    assert_eq!(created["rsc"], 2001, "{created}");
    assert_eq!(created["pc"]["m2m:cin"]["con"], MARKER);
    assert!(s.in_cse.logged("ESCertKE completed"));
    assert!(!s.mn.stderr().contains(MARKER));

    // An originator certificate from another CA: the handshake fails at the IN, 4106.
    let other = Pki::temp();
    let (pem, key) = other.issue(&["--kind", "ae", "--id", CERT_AE], "esc1-other");
    let ca = s.pki.ca_pem();
    let foreign = [
        "--esprim-cert",
        pem.to_str().unwrap(),
        "--esprim-cert-key",
        key.to_str().unwrap(),
        "--esprim-ca",
        ca.to_str().unwrap(),
    ];
    let refused = s.request(CERT_AE, &foreign, &[], &create_marker());
    assert_eq!(refused["rsc"], 4106, "{refused}");

    // In-test Initiator through a recording relay in front of the IN.
    let relay = Relay::start(s.in_cse.url());
    let ctx = client_ctx(&s.pki, "esc1");
    let (mut init, m1) = Initiator::start(&ctx, Some(IN_SERVER_NAME)).unwrap();
    let m2 = eckm_of(&send_eckm(&relay.url, OUTER, &m1));
    let m3 = init.respond(&m2).unwrap();
    let m4 = eckm_of(&send_eckm(&relay.url, OUTER, &m3));
    let key = init.finish(&m4).unwrap();
    let kid = key.key_id_text();

    // A replayed Message 3: nothing pending (4000); against a new exchange, a bad handshake (4106).
    let again = send_eckm(&relay.url, OUTER, &m3);
    assert_eq!(again.rsc, 4000, "{:?}", again.body);
    let (_fresh, f1) = Initiator::start(&ctx, Some(IN_SERVER_NAME)).unwrap();
    eckm_of(&send_eckm(&relay.url, OUTER, &f1));
    let again = send_eckm(&relay.url, OUTER, &m3);
    assert_eq!(again.rsc, 4106, "{:?}", again.body);

    // The key is bound to the certificate's identity: the right From works, another is 4116.
    let url = s.in_cse.url();
    let ok = protected_retrieve(url, OUTER, &kid, &key.key, CERT_AE);
    assert_eq!(ok.rsc, 2000, "{:?}", ok.body);
    let r = protected_retrieve(url, OUTER, &kid, &key.key, MAF_AE);
    assert_eq!(r.rsc, 4116, "{:?}", r.body);

    // The relay carried all four messages but holds nothing of the key, in any encoding.
    let seen = relay.seen_bytes();
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.contains("\"sit\":6"), "the relay saw the exchange");
    let raw = key.key.expose();
    assert!(
        !seen.windows(raw.len()).any(|w| w == raw),
        "raw key in the capture"
    );
    assert_no_secret(&[text], &[raw]);
    assert_no_secret(&[s.in_cse.stderr(), s.mn.stderr()], &[raw]);
}

/// The Target's ESCertKE limits (`escertke_max_pending`, `escertke_timeout_seconds`), here 1 and
/// 2 s: a second originator's Message 1 waits its turn (5000); a new Message 1 from the same
/// originator replaces its pending exchange; a pending exchange past its time is dropped.
#[test]
fn escertke_limits() {
    let pki = Pki::temp();
    pki.issue(&["--kind", "ae", "--id", CERT_AE], "esc1");
    let in_cse = CseProcess::start_temp(&format!(
        "{}[esprim]\nescertke = true\nalgorithms = [10, 12]\n\
         escertke_max_pending = 1\nescertke_timeout_seconds = 2\n",
        in_tls_config(&pki)
    ));
    let url = in_cse.url();
    for ae in [CERT_AE, MAF_AE] {
        register_ae(url, "/cse-in", ae, &ae.to_lowercase(), &[]);
    }
    let ctx = client_ctx(&pki, "esc1");
    let start = || Initiator::start(&ctx, Some(IN_SERVER_NAME)).unwrap();

    // One exchange pending: another originator's Message 1 is turned away, not queued.
    let (mut first, m1) = start();
    let m2_first = eckm_of(&send_eckm(url, CERT_AE, &m1));
    let (_, m1_other) = start();
    let full = send_eckm(url, MAF_AE, &m1_other);
    assert_eq!(full.rsc, 5000, "{:?}", full.body);
    assert!(
        full.dbg()
            .unwrap_or("")
            .contains("too many ESCertKE exchanges"),
        "{:?}",
        full.body
    );

    // The same originator starts over: its new exchange replaces the pending one (no 5000) and
    // completes; the replaced exchange's Message 3 then finds nothing pending.
    let (mut second, m1) = start();
    let m2 = eckm_of(&send_eckm(url, CERT_AE, &m1));
    let m3 = second.respond(&m2).unwrap();
    let m4 = eckm_of(&send_eckm(url, CERT_AE, &m3));
    second
        .finish(&m4)
        .expect("the replacing exchange completes");
    let m3_first = first.respond(&m2_first).unwrap();
    let stale = send_eckm(url, CERT_AE, &m3_first);
    assert_eq!(stale.rsc, 4000, "{:?}", stale.body);

    // A pending exchange past escertke_timeout_seconds is dropped: it no longer holds the only
    // place, and its Message 3 comes too late.
    let (mut late, m1) = start();
    let m2_late = eckm_of(&send_eckm(url, CERT_AE, &m1));
    std::thread::sleep(Duration::from_millis(2300));
    eckm_of(&send_eckm(url, MAF_AE, &m1_other));
    let m3_late = late.respond(&m2_late).unwrap();
    let r = send_eckm(url, CERT_AE, &m3_late);
    assert_eq!(r.rsc, 4000, "{:?}", r.body);
    assert!(r.dbg().unwrap_or("").contains("late"), "{:?}", r.body);
}

/// `escertke_max_pending_per_peer`: one peer (here the IN's loopback listener) sends Message 1s
/// under eight originator IDs (the victim's S-AE-ID it cannot use: that AE is registered at the MN). It gets its four places and then 5000, the
/// global limit (6) is not reached, and the certificate AE behind the MN (another peer: the MN's
/// association) completes ESCertKE and its ESPrim request.
#[test]
fn escertke_per_peer_limit() {
    let s = Setup::start_with("escertke_max_pending = 6\nescertke_max_pending_per_peer = 4\n");
    let url = s.in_cse.url();
    // The loopback listener takes a From only of an AE registered there: the flooder registers
    // as many as it likes (but not the victim's S-AE-ID, which is registered at the MN).
    for i in 0..10 {
        register_ae(
            url,
            "/cse-in",
            &format!("Cflood{i}"),
            &format!("flood{i}"),
            &[],
        );
    }
    let ctx = client_ctx(&s.pki, "esc1");
    let mut flood = Vec::new();
    for i in 0..8 {
        let from = format!("Cflood{i}");
        let (init, m1) = Initiator::start(&ctx, Some(IN_SERVER_NAME)).unwrap();
        let r = send_eckm(url, &from, &m1);
        flood.push((from, init, r));
    }
    for (from, _, r) in &flood[..4] {
        assert_eq!(r.rsc, 2000, "{from}: {:?}", r.body);
    }
    for (from, _, r) in &flood[4..] {
        assert_eq!(r.rsc, 5000, "{from}: {:?}", r.body);
        let why = r.dbg().unwrap_or("");
        assert!(why.contains("pending from this peer"), "{from}: {why}");
    }
    // The audit log names the peer (and, as ever, the originator).
    assert!(s.in_cse.logged("pending from this peer"));
    assert!(s.in_cse.logged("address 127.0.0.1"));

    // The AE behind the MN is not shut out.
    let cert_args = [
        "--esprim-cert".to_owned(),
        s.p("esc1.pem"),
        "--esprim-cert-key".to_owned(),
        s.p("esc1.key"),
        "--esprim-ca".to_owned(),
        s.pki.ca_pem().display().to_string(),
    ];
    let args: Vec<&str> = cert_args.iter().map(String::as_str).collect();
    let created = s.request(CERT_AE, &args, &[], &create_marker());
    assert_eq!(created["rsc"], 2001, "{created}");
    assert_eq!(created["pc"]["m2m:cin"]["con"], MARKER);

    // The flooder's own exchanges still complete (its places were kept, not stolen) ...
    let (from, mut init, r) = flood.swap_remove(1);
    let m3 = init.respond(&eckm_of(&r)).unwrap();
    let m4 = eckm_of(&send_eckm(url, &from, &m3));
    init.finish(&m4).expect("the flooder's exchange completes");
    // ... which frees one of its places for a new originator.
    let (_, m1) = Initiator::start(&ctx, Some(IN_SERVER_NAME)).unwrap();
    let r = send_eckm(url, "Cflood9", &m1);
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
}
