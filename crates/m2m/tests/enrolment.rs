//! Remote provisioning of the MAF credential (TS-0003 clauses 8.3, 8.8.3.1), every function as its
//! own process: a smartphone AE enrols at the MEF on its pre-provisioned Kpm, derives
//! Km = kdf::km(Ke, MAF-FQDN) and authenticates to the MAF with psk_identity = its KeID (the KmID of a
//! remote-provisioned Km in this project); the MAF fetches Km from the MEF (SUID 11) with its own
//! certificate. The AE then registers Kc for the IN-CSE at the MAF and associates with the IN-CSE on
//! it (TS-0003 clause 8.2.2.3). A wrong Km, an unknown KeID and an expired enrolment open nothing.

mod common;

use common::{register_phone_ae, start_maf_process, CseProcess, Pki, ServiceProcess, TlsClient};
use m2m_keyservices::maf::MafClient;
use m2m_keyservices::mef::{EnrolmentRequest, MefClient};
use m2m_security::credentials::Secret;
use m2m_security::kdf;
use serde_json::json;
use std::path::PathBuf;

const SP: &str = "m2m.example.com";
const MEF_FQDN: &str = "mef.keys.example.net";
const MAF_FQDN: &str = "maf.keys.example.net";
const KPM_ID: &str = "0A1B2C3D4E5F60718293A4B5C6D7E8F9@mef.keys.example.net";
const KPM_HEX: &str = "7c2e9d4a1b3f5e6d8c0a2b4f6e8d1c3b5a7f9e0d2c4b6a8f1e3d5c7b9a0f2e4d";
const ENROLEE: &str = "/id-in/Cphone";

struct Setup {
    pki: Pki,
}

impl Setup {
    fn new() -> Setup {
        let pki = Pki::temp_ca_permitting_dns("keys.example.net");
        for (kind, id) in [("mef", MEF_FQDN), ("maf", MAF_FQDN)] {
            pki.issue(&["--kind", kind, "--id", id], kind);
        }
        pki.issue(&["--kind", "cse", "--id", "/id-in"], "id-in");
        Setup { pki }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.pki.dir().join(name)
    }

    /// `m2m mef` with the enrolee's Kpm, serving the MAF (SUID 11): the process and its host:port.
    fn start_mef(&self, lifetime_seconds: u64) -> (ServiceProcess, String) {
        let mef = ServiceProcess::start(
            "mef",
            self.pki.dir(),
            &format!(
                r#"fqdn = "{MEF_FQDN}"
sp_fqdn = "{SP}"
listen = "127.0.0.1:0"
certificate = "{cert}"
private_key = "{key}"
trusted_ca = "{ca}"
storage = "{storage}"
storage_key = "{storage_key}"
lifetime_seconds = {lifetime_seconds}
admins = ["/id-in"]

[[kpm]]
enrolee_id = "{ENROLEE}"
kpm_id = "{KPM_ID}"
key = "{KPM_HEX}"

[[targets]]
id = "{MAF_FQDN}"
suids = [11]

[[targets]]
id = "/id-in"
suids = [12]
"#,
                cert = self.path("mef.pem").display(),
                key = self.path("mef.key").display(),
                ca = self.pki.ca_pem().display(),
                storage = self.path("mef-enrolments.json").display(),
                storage_key = self.path("mef-storage.key").display(),
            ),
        );
        let addr = mef.addr().to_owned();
        (mef, addr)
    }

    /// `m2m maf` fetching remote-provisioned Km from the MEF: the process and its URL.
    fn start_maf(&self, mef_addr: &str) -> (ServiceProcess, String) {
        let maf = start_maf_process(
            &self.pki,
            MAF_FQDN,
            &format!(
                r#"
[mef]
url = "https://{mef_addr}"
fqdn = "{MEF_FQDN}"
timeout_ms = 5000
"#
            ),
        );
        let url = maf.url().to_owned();
        (maf, url)
    }

    fn start_in_cse(&self, maf_url: &str) -> CseProcess {
        CseProcess::start_temp(&format!(
            "[cse]\ncse_id = \"/id-in\"\n[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\ntrusted_ca = \"{}\"\n[maf]\nurl = \"{maf_url}\"\nfqdn = \"{MAF_FQDN}\"\n",
            self.path("id-in.pem").display(),
            self.path("id-in.key").display(),
            self.pki.ca_pem().display(),
        ))
    }
}

/// The AE's enrolment on Kpm: (Ke, KeID).
async fn enrol(mef_addr: &str) -> (Secret, String) {
    let kpm = Secret::from_hex(KPM_HEX).unwrap();
    let mut mef = MefClient::connect_psk(mef_addr, MEF_FQDN, KPM_ID, &kpm)
        .await
        .expect("Kpm association with the MEF");
    let e = mef
        .enrol(&EnrolmentRequest {
            indications: vec!["MAF".into()],
            maf_id: Some(MAF_FQDN.into()),
            targets: vec![],
        })
        .await
        .expect("enrolment");
    assert_eq!(e.enrolee_id, ENROLEE);
    assert!(e.ke_id.ends_with(&format!("@{MEF_FQDN}")), "{}", e.ke_id);
    (e.ke, e.ke_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolee_reaches_the_in_cse_through_mef_and_maf() {
    let setup = Setup::new();
    let (mef_proc, mef_addr) = setup.start_mef(3600);
    let (maf_proc, maf_url) = setup.start_maf(&mef_addr);
    let cse = setup.start_in_cse(&maf_url);

    // Enrolment at the MEF; Km derived locally (TS-0003 clause 10.3.2).
    let (ke, ke_id) = enrol(&mef_addr).await;
    let km = kdf::km(&ke, MAF_FQDN);

    // TLS-PSK with the MAF on (KeID, Km): the MAF fetches Km from the MEF.
    let mut maf = MafClient::connect_psk(&maf_url, MAF_FQDN, &ke_id, &km)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Km association with the MAF: {e}\nMAF:\n{}\nMEF:\n{}",
                maf_proc.stderr(),
                mef_proc.stderr()
            )
        });
    let reg = maf
        .register_client(None)
        .await
        .expect("client registration");
    assert_eq!(reg.client_id, format!("//{SP}{ENROLEE}"));
    let kc = maf
        .register_key(12, &[&format!("//{SP}/id-in")], None)
        .await
        .expect("key registration");
    let kc_half = hex::encode(&kc.key.expose()[..kc.key.len() / 2]);

    // TLS-PSK with the IN-CSE on Kc: the CSE fetches Kc from the MAF and binds the enrolee's AE-ID.
    let phone = TlsClient::psk(&kc.key_id, &kc_half);
    let r = tokio::task::block_in_place(|| register_phone_ae(&phone, &cse))
        .expect("TLS-PSK association with the IN-CSE");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert_eq!(r.body["m2m:ae"]["aei"], json!("Cphone"), "{:?}", r.body);

    // A wrong Km for that KeID fails at the MAF.
    let wrong = kdf::km(&ke, "other.keys.example.net");
    assert!(MafClient::connect_psk(&maf_url, MAF_FQDN, &ke_id, &wrong)
        .await
        .is_err());
    // An unknown KeID fails.
    let unknown = format!("{}@{MEF_FQDN}", "CD".repeat(16));
    assert!(MafClient::connect_psk(&maf_url, MAF_FQDN, &unknown, &km)
        .await
        .is_err());

    let maf_log = maf_proc.stderr();
    assert!(
        maf_log.contains("remote-provisioned Km not available"),
        "audit line on failure:\n{maf_log}"
    );
    for (name, log) in [("MAF", &maf_log), ("MEF", &mef_proc.stderr())] {
        for secret in [km.to_hex(), ke.to_hex()] {
            assert!(
                !log.to_lowercase().contains(&secret.as_str().to_lowercase()),
                "the {name} logged a key"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_enrolment_opens_no_maf_association() {
    let setup = Setup::new();
    let (_mef_proc, mef_addr) = setup.start_mef(4);
    let (maf_proc, maf_url) = setup.start_maf(&mef_addr);

    let (ke, ke_id) = enrol(&mef_addr).await;
    let km = kdf::km(&ke, MAF_FQDN);
    MafClient::connect_psk(&maf_url, MAF_FQDN, &ke_id, &km)
        .await
        .unwrap_or_else(|e| panic!("before expiry: {e}\n{}", maf_proc.stderr()));

    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert!(
        MafClient::connect_psk(&maf_url, MAF_FQDN, &ke_id, &km)
            .await
            .is_err(),
        "an expired enrolment must not authenticate"
    );
}

/// An enrolment revoked at the MEF (`m2m mef revoke`, by an administrator's certificate) ends
/// everything derived from it: its Km opens no MAF association, and the Kc the enrolee registered
/// at the MAF while it held no longer opens an association with the IN-CSE (the MAF asks the MEF
/// again before handing a key out). Only an administrator may revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_enrolment_opens_nothing_any_more() {
    let setup = Setup::new();
    let (mef_proc, mef_addr) = setup.start_mef(3600);
    let (maf_proc, maf_url) = setup.start_maf(&mef_addr);
    let cse = setup.start_in_cse(&maf_url);
    let (ke, ke_id) = enrol(&mef_addr).await;
    let km = kdf::km(&ke, MAF_FQDN);
    let mut maf = MafClient::connect_psk(&maf_url, MAF_FQDN, &ke_id, &km)
        .await
        .expect("Km association before the revocation");
    maf.register_client(None)
        .await
        .expect("client registration");
    let kc = maf
        .register_key(12, &[&format!("//{SP}/id-in")], None)
        .await
        .expect("key registration");
    let kc_half = hex::encode(&kc.key.expose()[..kc.key.len() / 2]);
    // An E2E credential registered at the TTP over the same Km, for the IN-CSE to retrieve.
    let credential = maf
        .register_credential(&m2m_keyservices::maf::CredentialRequest {
            subject_id: &format!("//{SP}{ENROLEE}"),
            usage: m2m_keyservices::maf::ttp::CredentialUsage::Esprim,
            jwk: None,
            requester_ids: &[&format!("//{SP}/id-in")],
            expiration_time: None,
        })
        .await
        .expect("a TTP credential");
    let (in_pem, in_key, ca) = (
        setup.path("id-in.pem"),
        setup.path("id-in.key"),
        setup.pki.ca_pem(),
    );
    let in_cse = || MafClient::connect_certificate(&maf_url, MAF_FQDN, &in_pem, &in_key, &ca);
    let mut requester = in_cse()
        .await
        .expect("the IN-CSE's certificate association");
    requester
        .retrieve_credential(&credential.credential_id)
        .await
        .expect("the credential before the revocation");
    let phone = TlsClient::psk(&kc.key_id, &kc_half);
    let r = tokio::task::block_in_place(|| register_phone_ae(&phone, &cse))
        .expect("the Kc association before the revocation");
    assert_eq!(r.rsc, 2001, "{:?}", r.body);

    let revoke = |cert: &str, which: &[&str]| {
        let mut args = vec![
            "mef".to_owned(),
            "revoke".into(),
            "--url".into(),
            format!("https://{mef_addr}"),
            "--fqdn".into(),
            MEF_FQDN.into(),
            "--certificate".into(),
            setup.path(&format!("{cert}.pem")).display().to_string(),
            "--private-key".into(),
            setup.path(&format!("{cert}.key")).display().to_string(),
            "--trusted-ca".into(),
            setup.pki.ca_pem().display().to_string(),
        ];
        args.extend(which.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tokio::task::block_in_place(|| common::m2m_command(&args))
    };
    // The MAF's certificate is no administrator's.
    let out = revoke("maf", &["--ke-id", &ke_id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an administrator"),
        "{out:?}"
    );
    let out = revoke("id-in", &["--ke-id", &ke_id]);
    assert!(out.status.success(), "{out:?}\n{}", mef_proc.stderr());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("revoked {ke_id}")
    );
    // Nothing left to revoke.
    let out = revoke("id-in", &["--enrolee", ENROLEE]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such enrolment"),
        "{out:?}"
    );

    assert!(
        MafClient::connect_psk(&maf_url, MAF_FQDN, &ke_id, &km)
            .await
            .is_err(),
        "the revoked enrolment's Km opened a MAF association"
    );
    // The association opened before the revocation registers nothing more.
    let late = maf
        .register_key(12, &[&format!("//{SP}/id-in")], None)
        .await;
    assert_eq!(
        late.as_ref().err().and_then(|e| e.status),
        Some(403),
        "a key registered over the revoked enrolment's open association: {late:?}"
    );
    // Asked first: the Kc retrieval below would end the registration, credentials included.
    let mut requester = in_cse()
        .await
        .expect("the IN-CSE's certificate association");
    let gone = requester
        .retrieve_credential(&credential.credential_id)
        .await;
    assert_eq!(
        gone.as_ref().err().and_then(|e| e.status),
        Some(404),
        "the TTP credential of the revoked enrolment: {gone:?}"
    );
    let again = tokio::task::block_in_place(|| register_phone_ae(&phone, &cse));
    assert!(
        again.is_err(),
        "the Kc registered under the revoked enrolment opened an association: {again:?}"
    );
    let maf_log = maf_proc.stderr();
    assert!(
        maf_log.contains("its enrolment no longer holds at the MEF"),
        "{maf_log}"
    );
    assert!(mef_proc.logged("enrolment revoked"));
}

/// The same flow through the CLI in one call: `m2m request --mef-url ... --maf-url ...` enrols on
/// Kpm, derives Km, obtains Kc for the IN-CSE and registers an AE over TLS-PSK.
#[test]
fn m2m_request_enrols_and_connects_in_one_call() {
    let setup = Setup::new();
    let (_mef, mef_addr) = setup.start_mef(3600);
    let (_maf, maf_url) = setup.start_maf(&mef_addr);
    let cse = setup.start_in_cse(&maf_url);
    let mef_url = if mef_addr.starts_with("https://") {
        mef_addr.clone()
    } else {
        format!("https://{mef_addr}")
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_m2m"))
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
            "--mef-url",
            &mef_url,
            "--mef-fqdn",
            MEF_FQDN,
            "--kpm-id",
            KPM_ID,
            "--kpm-env",
            "TEST_KPM",
        ])
        .args([
            "--maf-url",
            &maf_url,
            "--maf-fqdn",
            MAF_FQDN,
            "--target-cse",
            &format!("//{SP}/id-in"),
        ])
        .env("TEST_KPM", KPM_HEX)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "m2m request failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rsp: serde_json::Value = serde_json::from_str(stdout.trim()).expect("--json output");
    assert_eq!(rsp["rsc"], serde_json::json!(2001), "{rsp}");
    assert_eq!(
        rsp["pc"]["m2m:ae"]["aei"],
        serde_json::json!("Cphone"),
        "{rsp}"
    );
}

/// Remote-provisioned Kpsa (TS-0003 clauses 8.3.2.1, 10.3.3): the AE enrols naming the IN-CSE
/// for SUID 12 and associates with KpsaID = KeID and the Kpsa it derives; the CSE fetches the same
/// Kpsa from the MEF with its certificate and binds the enrolee. When the enrolment ends the key
/// opens nothing; a new enrolment gives a new one.
#[test]
fn an_ae_associates_with_a_kpsa_the_mef_provisioned() {
    let setup = Setup::new();
    let (_mef, mef_addr) = setup.start_mef(4);
    let mef_url = format!("https://{mef_addr}");
    let cse = CseProcess::start_temp(&format!(
        "[cse]\ncse_id = \"/id-in\"\n[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = \"{}\"\n\
         private_key = \"{}\"\ntrusted_ca = \"{}\"\n[mef]\nurl = \"{mef_url}\"\nfqdn = \"{MEF_FQDN}\"\n",
        setup.path("id-in.pem").display(),
        setup.path("id-in.key").display(),
        setup.pki.ca_pem().display(),
    ));
    let request = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args([
                "request",
                "--url",
                cse.https_url(),
                "--json",
                "--timeout",
                "5",
            ])
            .args(args)
            .args(["--mef-url", &mef_url, "--mef-fqdn", MEF_FQDN])
            .args([
                "--kpm-id",
                KPM_ID,
                "--kpm-env",
                "TEST_KPM",
                "--kpsa-target",
                "/id-in",
            ])
            .env("TEST_KPM", KPM_HEX)
            .output()
            .unwrap()
    };
    let out = request(&[
        "-X",
        "create",
        "--to",
        "cse-in",
        "--from",
        "Cphone",
        "--ty",
        "2",
        "--body",
        r#"{"m2m:ae":{"rn":"phone","api":"Nphone","rr":false,"srv":["3"]}}"#,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rsp: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "{stdout}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            cse.stderr()
        )
    });
    assert_eq!(rsp["rsc"], json!(2001), "{rsp}\n{}", cse.stderr());
    assert_eq!(rsp["pc"]["m2m:ae"]["aei"], json!("Cphone"), "{rsp}");
    assert!(
        cse.logged(&format!("@{MEF_FQDN} -> //{SP}/id-in/Cphone")),
        "{}",
        cse.stderr()
    );

    // An enrolment of the test's own (Kpsa = HMAC(Ke, label || /id-in) from this side's exporter,
    // TS-0003 clause 10.3.3), used with a TLS client the project did not configure: it opens, until
    // the enrolment ends.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (kpsa_id, kpsa) = rt.block_on(async {
        let kpm = Secret::from_hex(KPM_HEX).unwrap();
        let mef = MefClient::connect_psk(&mef_addr, MEF_FQDN, KPM_ID, &kpm)
            .await
            .unwrap();
        let k = m2m_keyservices::sae::enrol_for_kpsa(mef, "/id-in")
            .await
            .unwrap();
        (k.kpsa_id, k.kpsa)
    });
    let phone = TlsClient::psk(&kpsa_id, &hex::encode(kpsa.expose()));
    let r = phone
        .request(
            cse.https_url(),
            "GET",
            "/cse-in/phone",
            Some("Cphone"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    // The KeID crosses the air in the clear: offered in another letter case with a guessed key,
    // it opens nothing, and the device is not refused for it afterwards.
    let attacker = TlsClient::psk(&kpsa_id.to_ascii_lowercase(), &"5a".repeat(32));
    let r = attacker.request(
        cse.https_url(),
        "GET",
        "/cse-in/phone",
        Some("Cphone"),
        None,
        None,
    );
    assert!(r.is_err(), "{r:?}");
    let r = phone
        .request(
            cse.https_url(),
            "GET",
            "/cse-in/phone",
            Some("Cphone"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    std::thread::sleep(std::time::Duration::from_millis(4500));
    let r = phone.request(
        cse.https_url(),
        "GET",
        "/cse-in/phone",
        Some("Cphone"),
        None,
        None,
    );
    assert!(r.is_err(), "an ended enrolment's Kpsa opens nothing: {r:?}");
    assert!(
        cse.logged("Kpsa from the MEF not available"),
        "{}",
        cse.stderr()
    );
    // A new enrolment: a new KeID and Kpsa, fetched afresh by the CSE.
    let out = request(&["--to", "cse-in/phone", "--from", "Cphone"]);
    let rsp: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(rsp["rsc"], json!(2000), "{rsp}");
}

/// Certificate-based enrolment (TS-0003 clause 8.3.2.2) from `m2m request`: the AE's AE-ID
/// certificate authenticates it to the MEF (the enrolee is the identity it names), then the Kpsa
/// provisioned for the IN-CSE associates it.
#[test]
fn m2m_request_enrols_with_a_certificate() {
    let setup = Setup::new();
    let (cert, key) = setup.pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let (_mef, mef_addr) = setup.start_mef(3600);
    let mef_url = format!("https://{mef_addr}");
    let cse = CseProcess::start_temp(&format!(
        "[cse]\ncse_id = \"/id-in\"\n[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = \"{}\"\n\
         private_key = \"{}\"\ntrusted_ca = \"{}\"\n[mef]\nurl = \"{mef_url}\"\nfqdn = \"{MEF_FQDN}\"\n",
        setup.path("id-in.pem").display(),
        setup.path("id-in.key").display(),
        setup.pki.ca_pem().display(),
    ));
    let enrol = |cert: &std::path::Path, key: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args([
                "request",
                "--url",
                cse.https_url(),
                "--json",
                "--timeout",
                "5",
            ])
            .args([
                "-X", "create", "--to", "cse-in", "--from", "Cphone", "--ty", "2",
            ])
            .args([
                "--body",
                r#"{"m2m:ae":{"rn":"phone","api":"Nphone","rr":false,"srv":["3"]}}"#,
            ])
            .args(["--mef-url", &mef_url, "--mef-fqdn", MEF_FQDN])
            .args(["--kpsa-target", "//m2m.example.com/id-in"])
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("--ca")
            .arg(setup.pki.ca_pem())
            .output()
            .unwrap()
    };
    let out = enrol(&cert, &key);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rsp: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(rsp["rsc"], json!(2001), "{rsp}\n{}", cse.stderr());
    assert_eq!(rsp["pc"]["m2m:ae"]["aei"], json!("Cphone"), "{rsp}");
    // A certificate of another CA enrols nothing.
    let other = Pki::temp();
    let (cert, key) = other.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let out = enrol(&cert, &key);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
