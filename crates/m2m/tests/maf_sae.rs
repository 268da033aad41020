//! MAF-based security association establishment (TS-0003 clause 8.2.2.3), with the MAF and the
//! CSEs as separate processes: an AE registers a connection key Kc at the MAF for the IN-CSE, then
//! opens a TLS-PSK association with that CSE using `hex(KcID)@MAF-FQDN` and Kc; the CSE fetches
//! Kc from the MAF. A CSE that is not the key's target, a de-registered key and a MAF that is down
//! open nothing.

mod common;

use common::{
    assert_no_secret, register_phone_ae, registered_km_client, start_maf_process, unhex,
    CseProcess, Pki, ServiceProcess, TlsClient,
};
use m2m_keyservices::maf::MafClient;
use m2m_security::credentials::Secret;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

const SP: &str = "m2m.example.com";
const MAF_FQDN: &str = "maf.keys.example.net";
const KM_ID: &str = "phone@maf.keys.example.net";
const KM_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Setup {
    pki: Pki,
}

impl Setup {
    /// A CA allowed to certify the SP's CSEs and the MAF's domain, and the certificates.
    fn new() -> Setup {
        let pki = Pki::temp_ca_permitting_dns("keys.example.net");
        pki.issue(&["--kind", "maf", "--id", MAF_FQDN], "maf");
        for id in ["/id-in", "/id-other"] {
            pki.issue(&["--kind", "cse", "--id", id], &id[1..]);
        }
        Setup { pki }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.pki.dir().join(name)
    }

    fn start_maf(&self) -> ServiceProcess {
        start_maf_process(
            &self.pki,
            MAF_FQDN,
            &format!(
                "[[km]]\nclient_id = \"/id-in/Cphone\"\nkm_id = \"{KM_ID}\"\nkey = \"{KM_HEX}\"\n"
            ),
        )
    }

    fn start_cse(&self, cse: &str, maf_url: &str) -> CseProcess {
        self.start_cse_with(cse, maf_url, "")
    }

    fn start_cse_with(&self, cse: &str, maf_url: &str, maf_extra: &str) -> CseProcess {
        CseProcess::start_temp(&format!(
            "[cse]\ncse_id = \"/{cse}\"\n[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\ntrusted_ca = \"{}\"\n[maf]\nurl = \"{maf_url}\"\nfqdn = \"{MAF_FQDN}\"\n{maf_extra}",
            self.path(&format!("{cse}.pem")).display(),
            self.path(&format!("{cse}.key")).display(),
            self.pki.ca_pem().display(),
        ))
    }
}

/// The AE's side: Km association with the MAF, client registration, Kc for the target.
async fn register_kc(maf_url: &str, target: &str) -> (MafClient, String, String, Secret) {
    let km = Secret::from_hex(KM_HEX).unwrap();
    let mut maf = registered_km_client(maf_url, MAF_FQDN, KM_ID, &km).await;
    let reg = maf
        .register_key(12, &[target], None)
        .await
        .expect("key registration");
    // TLS-PSK uses the first half of the distributed key (TS-0003 clause 8.8.1).
    let kc = reg.key.expose();
    let half = hex::encode(&kc[..kc.len() / 2]);
    (maf, reg.key_id.clone(), half, reg.key.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ae_associates_with_the_in_cse_through_the_maf() {
    let setup = Setup::new();
    let mut maf_proc = setup.start_maf();
    let maf_url = maf_proc.url().to_owned();
    let cse = setup.start_cse("id-in", &maf_url);
    let other = setup.start_cse("id-other", &maf_url);

    let (mut maf, key_id, kc_half, kc) = register_kc(&maf_url, &format!("//{SP}/id-in")).await;
    assert!(key_id.ends_with(&format!("@{MAF_FQDN}")), "{key_id}");
    let phone = TlsClient::psk(&key_id, &kc_half);

    // The IN-CSE fetches Kc from the MAF; the AE-ID bound is the key's source.
    let r = tokio::task::block_in_place(|| register_phone_ae(&phone, &cse))
        .expect("TLS-PSK association with a MAF key");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert_eq!(r.body["m2m:ae"]["aei"], json!("Cphone"), "{:?}", r.body);
    // The Credential-ID is formed from the KmID the MAF names for the source (TS-0003 clause
    // 8.2.2.3), not from the KcID the client offered.
    let established = association_line(&cse, &key_id);
    assert!(
        established.contains(&format!("11-{KM_ID} -> //{SP}/id-in/Cphone")),
        "{established}"
    );
    assert!(
        !established.contains(&format!("12-{key_id}")),
        "{established}"
    );

    // A CSE that is not among the key's targets cannot retrieve it: no association.
    let r = tokio::task::block_in_place(|| register_phone_ae(&phone, &other));
    assert!(
        r.is_err(),
        "a CSE outside targetIDs must not associate: {r:?}"
    );
    // For that reason, not any handshake failure: the MAF refused the key to that CSE.
    assert!(
        other.logged("MAF answered 403: the requester is not a target of this key"),
        "{}",
        other.stderr()
    );

    // A wrong key under the right identity fails the handshake.
    let wrong = TlsClient::psk(&key_id, &"00".repeat(16));
    assert!(tokio::task::block_in_place(|| register_phone_ae(&wrong, &cse)).is_err());
    assert!(
        cse.logged("association refused") && cse.logged("bad record mac"),
        "the CSE had the key and the handshake failed on it:\n{}",
        cse.stderr()
    );

    // After de-registration the same Kc opens nothing.
    let relative = key_id.split('@').next().unwrap().to_owned();
    maf.deregister_key(&relative)
        .await
        .expect("key de-registration");
    let r = tokio::task::block_in_place(|| register_phone_ae(&phone, &cse));
    assert!(r.is_err(), "a de-registered key must not associate: {r:?}");
    assert!(
        cse.logged("MAF answered 404: no such key"),
        "{}",
        cse.stderr()
    );

    // With the MAF down, MAF handshakes fail and the CSE keeps serving. The key the MAF just
    // refused is not even asked for again (the negative cache: a ClientHello naming the MAF makes
    // no MAF connection for an identifier refused moments ago).
    let _ = maf_proc.kill();
    let _ = maf_proc.wait();
    let r = tokio::task::block_in_place(|| register_phone_ae(&phone, &cse));
    assert!(r.is_err(), "no MAF, no association: {r:?}");
    assert!(!cse.logged("MAF: connect"), "{}", cse.stderr());
    let (rsc, _) = tokio::task::block_in_place(|| common::retrieve(cse.url(), "/cse-in", "CAdmin"));
    assert_eq!(rsc, 2000, "the CSE still serves");
    // Neither CSE nor the MAF logged Kc (either half) or Km.
    let logs = [cse.stderr(), other.stderr(), maf_proc.stderr()];
    let half = kc.expose()[..kc.len() / 2].to_vec();
    assert_no_secret(&logs, &[kc.expose().to_vec(), half, unhex(KM_HEX)]);
}

/// The CSE's "association established" audit line of the TLS-PSK association opened with the MAF
/// key `key_id` (the acceptor names the listener and the association, the CSE's PSK lookup the
/// psk_identity just before).
fn association_line(cse: &CseProcess, key_id: &str) -> String {
    assert!(cse.logged("association established"), "{}", cse.stderr());
    let log = cse.stderr();
    let established: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("association established") && l.contains("\"cse-tls\""))
        .collect();
    assert_eq!(established.len(), 1, "one association, one line: {log}");
    assert!(
        !log.contains(&format!("12-{key_id}")),
        "the KcID is no Credential-ID of the association: {log}"
    );
    established[0].to_owned()
}

/// A source that registered at the MAF with its AE-ID certificate has no KmID: the CSE forms the
/// Credential-ID from the source's identity as a certificate association does (typeID 33, the
/// AE-ID in FQDN form), never from the KcID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_sources_maf_key_association_is_named_by_its_identity() {
    let setup = Setup::new();
    let (cert, key) = setup.pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let maf_proc = setup.start_maf();
    let maf_url = maf_proc.url().to_owned();
    let cse = setup.start_cse("id-in", &maf_url);
    let mut maf =
        MafClient::connect_certificate(&maf_url, MAF_FQDN, &cert, &key, &setup.pki.ca_pem())
            .await
            .expect("certificate association with the MAF");
    maf.register_client(None)
        .await
        .expect("client registration");
    let kc = maf
        .register_key(12, &[&format!("//{SP}/id-in")], None)
        .await
        .expect("key registration");
    // What the MAF answers the target: no sourceKmID for a certificate source.
    let mut target = MafClient::connect_certificate(
        &maf_url,
        MAF_FQDN,
        &setup.path("id-in.pem"),
        &setup.path("id-in.key"),
        &setup.pki.ca_pem(),
    )
    .await
    .expect("the IN-CSE's association with the MAF");
    let retrieved = target
        .retrieve_key(&kc.key_id)
        .await
        .expect("retrieval by the target");
    assert_eq!(retrieved.source_km_id, None);
    let phone = TlsClient::psk(
        &kc.key_id,
        &hex::encode(&kc.key.expose()[..kc.key.len() / 2]),
    );
    let r = tokio::task::block_in_place(|| register_phone_ae(&phone, &cse))
        .expect("TLS-PSK association with a MAF key");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let established = association_line(&cse, &kc.key_id);
    assert!(
        established.contains(&format!("33-Cphone.id-in.{SP} -> //{SP}/id-in/Cphone")),
        "{established}"
    );
    assert!(!established.contains("11-"), "{established}");
}

/// De-registering the client (not the key) ends its keys at once: the IN-CSE's retrieval finds no
/// key and the handshake on it fails, where it succeeded a moment before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deregistered_clients_key_opens_no_association() {
    let setup = Setup::new();
    let maf_proc = setup.start_maf();
    let maf_url = maf_proc.url().to_owned();
    let cse = setup.start_cse("id-in", &maf_url);
    let km = Secret::from_hex(KM_HEX).unwrap();
    let mut maf = MafClient::connect_psk(&maf_url, MAF_FQDN, KM_ID, &km)
        .await
        .expect("Km association with the MAF");
    let reg = maf
        .register_client(None)
        .await
        .expect("client registration");
    let kc = maf
        .register_key(12, &[&format!("//{SP}/id-in")], None)
        .await
        .expect("key registration");
    let phone = TlsClient::psk(
        &kc.key_id,
        &hex::encode(&kc.key.expose()[..kc.key.len() / 2]),
    );
    let r = tokio::task::block_in_place(|| register_phone_ae(&phone, &cse))
        .expect("association before the de-registration");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert!(
        !cse.stderr().contains("MAF answered 404"),
        "{}",
        cse.stderr()
    );

    maf.deregister_client(&reg.reg_id)
        .await
        .expect("client de-registration");
    let r = tokio::task::block_in_place(|| register_phone_ae(&phone, &cse));
    assert!(
        r.is_err(),
        "a de-registered client's key must not associate: {r:?}"
    );
    assert!(
        cse.logged("MAF answered 404: no such key"),
        "{}",
        cse.stderr()
    );
    let maf_log = maf_proc.stderr();
    assert!(
        maf_log.contains("MAF client de-registered with its keys and credentials"),
        "{maf_log}"
    );
    // Nor may the client bring the key back: it no longer exists for its source either.
    let relative = kc.key_id.split('@').next().unwrap();
    let e = maf.update_key(relative, None, None).await.unwrap_err();
    assert_eq!((e.status, e.reason.as_str()), (Some(404), "no such key"));
}

/// `m2m request` does the whole client side in one call: Km association with the MAF, client
/// and key registration for the target CSE, then TLS-PSK with the CSE.
#[test]
fn m2m_request_associates_through_the_maf_in_one_call() {
    let setup = Setup::new();
    let mut maf_proc = setup.start_maf();
    let maf_url = maf_proc.url().to_owned();
    let cse = setup.start_cse("id-in", &maf_url);
    let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args([
            "request",
            "--url",
            cse.https_url(),
            "-X",
            "create",
            "--to",
            "cse-in",
            "--from",
            "C",
            "--ty",
            "2",
            "--json",
        ])
        .args([
            "--body",
            r#"{"m2m:ae":{"rn":"phone","api":"Nphone","rr":false,"srv":["3"]}}"#,
        ])
        .args([
            "--maf-url",
            &maf_url,
            "--maf-fqdn",
            MAF_FQDN,
            "--km-id",
            KM_ID,
            "--km-env",
            "TEST_KM",
        ])
        .args(["--target-cse", &format!("//{SP}/id-in")])
        .env("TEST_KM", KM_HEX)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "m2m request failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rsp: serde_json::Value = serde_json::from_str(stdout.trim()).expect("--json output");
    assert_eq!(rsp["rsc"], json!(2001), "{rsp}");
    assert_eq!(rsp["pc"]["m2m:ae"]["aei"], json!("Cphone"), "{rsp}");
    // A wrong Km: no association with the MAF, a transport failure (exit 2).
    let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args([
            "request",
            "--url",
            cse.https_url(),
            "--to",
            "cse-in/phone",
            "--from",
            "Cphone",
        ])
        .args([
            "--maf-url",
            &maf_url,
            "--maf-fqdn",
            MAF_FQDN,
            "--km-id",
            KM_ID,
            "--km-env",
            "TEST_KM",
        ])
        .args(["--target-cse", &format!("//{SP}/id-in")])
        .env("TEST_KM", "11".repeat(32))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a wrong Km must fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = maf_proc.kill();
    let _ = maf_proc.wait();
}

/// With `cache_seconds`, the CSE keeps a retrieved key until its expiration: a second handshake
/// needs no MAF (here: the MAF is gone), which is exactly why the default is no cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_maf_key_outlives_the_maf_only_when_configured() {
    let setup = Setup::new();
    let mut maf_proc = setup.start_maf();
    let maf_url = maf_proc.url().to_owned();
    let cached = setup.start_cse_with("id-in", &maf_url, "cache_seconds = 60\n");
    let (_maf, key_id, kc_half, _) = register_kc(&maf_url, &format!("//{SP}/id-in")).await;
    let phone = TlsClient::psk(&key_id, &kc_half);
    let r = tokio::task::block_in_place(|| register_phone_ae(&phone, &cached))
        .expect("first association");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let _ = maf_proc.kill();
    let _ = maf_proc.wait();
    let again = tokio::task::block_in_place(|| {
        phone.request(
            cached.https_url(),
            "GET",
            "/cse-in/phone",
            Some("Cphone"),
            None,
            None,
        )
    });
    let again = again.expect("the cached key opens a second association without the MAF");
    assert_eq!(again.rsc, 2000, "{:?}", again.body);
}

/// MAF-based SAE over DTLS (the CoAP binding): `m2m request` obtains Kc from the MAF and opens a
/// DTLS-PSK association with `HEX(KcID)@MAF-FQDN` on the CSE's DTLS listener; the CSE fetches
/// the same Kc from the MAF in its PSK callback, as for TLS, and binds the association to the
/// AE the MAF names.
#[test]
fn m2m_request_associates_through_the_maf_over_dtls() {
    let setup = Setup::new();
    let mut maf_proc = setup.start_maf();
    let maf_url = maf_proc.url().to_owned();
    let cse = CseProcess::start_temp(&format!(
        "[cse]\ncse_id = \"/id-in\"\n[tls]\nlisten = \"127.0.0.1:0\"\ndtls_listen = \"127.0.0.1:0\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\ntrusted_ca = \"{}\"\n[maf]\nurl = \"{maf_url}\"\nfqdn = \"{MAF_FQDN}\"\n",
        setup.path("id-in.pem").display(),
        setup.path("id-in.key").display(),
        setup.pki.ca_pem().display(),
    ));
    let coaps = format!("coaps://127.0.0.1:{}", cse.coaps_port());
    let request = |args: &[&str], km: &str| {
        Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args(["request", "--url", &coaps, "--json"])
            .args(args)
            .args(["--maf-url", &maf_url, "--maf-fqdn", MAF_FQDN])
            .args(["--km-id", KM_ID, "--km-env", "TEST_KM"])
            .args(["--target-cse", &format!("//{SP}/id-in")])
            .env("TEST_KM", km)
            .output()
            .unwrap()
    };
    let out = request(
        &[
            "-X",
            "create",
            "--to",
            "cse-in",
            "--from",
            "C",
            "--ty",
            "2",
            "--body",
            r#"{"m2m:ae":{"rn":"phone","api":"Nphone","rr":false,"srv":["3"]}}"#,
        ],
        KM_HEX,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rsp: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(rsp["rsc"], json!(2001), "{rsp}");
    assert_eq!(rsp["pc"]["m2m:ae"]["aei"], json!("Cphone"), "{rsp}");
    assert!(
        cse.logged("cse-dtls"),
        "the association is on the DTLS listener:\n{}",
        cse.stderr()
    );
    let line = cse
        .stderr()
        .lines()
        .find(|l| l.contains("association established") && l.contains("cse-dtls"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains(&format!("@{MAF_FQDN}")) && line.contains("Cphone"),
        "a MAF key's association, bound to Cphone: {line}"
    );
    // A wrong Km: no association with the MAF, so none with the CSE either.
    let out = request(
        &["--to", "cse-in/phone", "--from", "Cphone"],
        &"11".repeat(32),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = maf_proc.kill();
    let _ = maf_proc.wait();
}
