//! Remote-provisioned Km (TS-0003 clauses 8.3, 8.8.3.1), in-process: an enrolee enrols at the MEF on
//! Kpm, derives Km = kdf::km(Ke, MAF-FQDN) and authenticates to the MAF with psk_identity = its KeID;
//! the MAF fetches that Km from the MEF over its own certificate association (SUID 11) and binds
//! the enrolee ID the MEF returns.

mod common;

use common::log_text_lowercase as log_text;
use common::{cse_leaf, logs, maf_config, test_clock, write_private};
use m2m_keyservices::maf::{
    server::system_clock, Clock, MafClient, MafConfig, MefSection, RunningMaf,
};
use m2m_keyservices::mef::{EnrolmentRequest, Mef, MefClient, MefConfig};
use m2m_security::certificates::LeafName;
use m2m_security::credentials::Secret;
use m2m_security::kdf;
use std::path::PathBuf;

const SP: &str = "m2m.example.com";
const MEF: &str = "mef.keys.example.net";
const MAF: &str = "maf.keys.example.net";
const KPM_ID: &str = "00112233445566778899AABBCCDDEEFF@mef.keys.example.net";
const KPM_HEX: &str = "5a1f0c9e7d3b2a4f6e8d0c1b2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f";
const ENROLEE: &str = "/id-in/Cphone";

/// The test PKI (a CA, the MEF's and the MAF's FQDN certificates) and the two services' set-up.
struct Pki(common::Pki);

impl Pki {
    fn new() -> Pki {
        logs();
        let pki = common::Pki::new(
            "test CA",
            None,
            &[],
            &[
                ("mef", LeafName::Fqdn(MEF.into())),
                ("maf", LeafName::Fqdn(MAF.into())),
                ("in", cse_leaf("/id-in", SP)),
            ],
        );
        write_private(&pki.path("storage.key"), "5a".repeat(32).as_bytes());
        Pki(pki)
    }

    fn p(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    async fn start_mef(&self) -> String {
        let text = format!(
            r#"
fqdn = "{MEF}"
sp_fqdn = "{SP}"
listen = "127.0.0.1:0"
certificate = "{cert}"
private_key = "{key}"
trusted_ca = "{ca}"
storage = "{storage}"
storage_key = "{storage_key}"
lifetime_seconds = 3600

[[kpm]]
enrolee_id = "{ENROLEE}"
kpm_id = "{KPM_ID}"
key = "{KPM_HEX}"

[[targets]]
id = "{MAF}"
suids = [11]
"#,
            cert = self.p("mef.pem").display(),
            key = self.p("mef.key").display(),
            ca = self.p("ca.pem").display(),
            storage = self.p("enrolments.json").display(),
            storage_key = self.p("mef-storage.key").display(),
        );
        let path = self.p("mef.toml");
        write_private(&path, text.as_bytes());
        let mef = Mef::new(MefConfig::load(&path).unwrap()).unwrap();
        let running = mef.start().await.unwrap();
        let addr = running.addr.to_string();
        // The listener lives as long as the test's runtime.
        std::mem::forget(running);
        addr
    }

    async fn start_maf(&self, mef_addr: &str) -> RunningMaf {
        self.start_maf_with(mef_addr, system_clock()).await
    }

    async fn start_maf_with(&self, mef_addr: &str, clock: Clock) -> RunningMaf {
        let cfg = MafConfig {
            mef: Some(MefSection {
                url: format!("https://{mef_addr}"),
                fqdn: MEF.into(),
                timeout_ms: 3000,
            }),
            ..maf_config(&self.0, MAF, SP, vec![], &self.p("maf-data"))
        };
        RunningMaf::start(cfg, clock).await.unwrap()
    }
}

async fn enrol(mef_addr: &str, maf_id: Option<&str>) -> (Secret, String) {
    let kpm = Secret::from_hex(KPM_HEX).unwrap();
    let mut c = MefClient::connect_psk(mef_addr, MEF, KPM_ID, &kpm)
        .await
        .unwrap();
    let e = c
        .enrol(&EnrolmentRequest {
            indications: vec![if maf_id.is_some() {
                "MAF"
            } else {
                "RemoteMgmt"
            }
            .into()],
            maf_id: maf_id.map(str::to_owned),
            targets: vec![],
        })
        .await
        .unwrap();
    assert_eq!(e.enrolee_id, ENROLEE);
    (e.ke, e.ke_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolee_authenticates_to_the_maf_with_a_remote_provisioned_km() {
    let pki = Pki::new();
    let mef_addr = pki.start_mef().await;
    let maf = pki.start_maf(&mef_addr).await;
    let maf_url = format!("https://{}", maf.addr);

    let (ke, ke_id) = enrol(&mef_addr, Some(MAF)).await;
    let km = kdf::km(&ke, MAF);
    let mut client = MafClient::connect_psk(&maf_url, MAF, &ke_id, &km)
        .await
        .expect("Km association with the MAF through the MEF");
    let reg = client.register_client(None).await.unwrap();
    assert_eq!(reg.client_id, format!("//{SP}{ENROLEE}"));
    let key = client
        .register_key(12, &["/id-in"], None)
        .await
        .expect("key registration by the enrolee");
    assert_eq!(key.target_ids, vec![format!("//{SP}/id-in")]);
    // The target learns the source's KmID: for a remote-provisioned Km, its KeID.
    let mut in_cse = common::certificate_client(&maf, MAF, &pki.0, "in").await;
    let got = in_cse
        .retrieve_key(&key.key_id)
        .await
        .expect("retrieval by the target");
    assert_eq!(got.source_km_id.as_deref(), Some(ke_id.as_str()));

    // A wrong Km under the right KeID: the MAF fetched the right one, the handshake fails.
    let wrong = Secret::from_hex(&"00".repeat(32)).unwrap();
    assert!(MafClient::connect_psk(&maf_url, MAF, &ke_id, &wrong)
        .await
        .is_err());
    // Km for another MAF-ID.
    let other = kdf::km(&ke, "other.keys.example.net");
    assert!(MafClient::connect_psk(&maf_url, MAF, &ke_id, &other)
        .await
        .is_err());
    // The acceptor's audit line names the listener.
    assert!(log_text().contains("association refused listener=\"maf\" peer="));
    assert!(log_text().contains("reason=decryption failed or bad record mac"));
    // An unknown KeID.
    let unknown = format!("{}@{MEF}", "AB".repeat(16));
    assert!(MafClient::connect_psk(&maf_url, MAF, &unknown, &km)
        .await
        .is_err());
    assert_audited(&unknown, "mef answered 404: unknown or expired keid");
    // An enrolment that names no MAF: the MEF refuses the MAF its Km.
    let (ke2, ke_id2) = enrol(&mef_addr, None).await;
    assert!(
        MafClient::connect_psk(&maf_url, MAF, &ke_id2, &kdf::km(&ke2, MAF))
            .await
            .is_err()
    );
    assert_audited(
        &ke_id2,
        "mef answered 403: the enrolment does not name this target for suid 11",
    );

    let logs = log_text();
    assert!(logs.contains(&ke_id.to_lowercase()));
    for secret in [km.to_hex(), ke.to_hex()] {
        assert!(
            !logs.contains(&secret.as_str().to_lowercase()),
            "a key was logged"
        );
    }
}

/// A oneM2M timestamp `secs` from now on the MAF's clock (`offset` ahead of the system's).
fn ts(secs: i64, offset: &std::sync::atomic::AtomicI64) -> String {
    let t =
        chrono::Utc::now().timestamp() + offset.load(std::sync::atomic::Ordering::SeqCst) + secs;
    m2m_keyservices::maf::server::format_time(t)
}

fn secs(timestamp: &str) -> i64 {
    m2m_core::time::parse(timestamp).unwrap().timestamp()
}

/// A client registration over a remote-provisioned Km is capped at the lifetime the MEF reports
/// for the enrolment (3600 s here), at registration and update; so are its keys; once the
/// enrolment has ended (the MAF's clock moved on), the association serves nothing and the key is
/// gone for its target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_on_a_remote_provisioned_km_ends_with_the_enrolment() {
    let pki = Pki::new();
    let mef_addr = pki.start_mef().await;
    let (clock, offset) = test_clock();
    let maf = pki.start_maf_with(&mef_addr, clock).await;
    let maf_url = format!("https://{}", maf.addr);
    let enrolled = chrono::Utc::now().timestamp();
    let (ke, ke_id) = enrol(&mef_addr, Some(MAF)).await;
    let mut client = MafClient::connect_psk(&maf_url, MAF, &ke_id, &kdf::km(&ke, MAF))
        .await
        .unwrap();
    let ends = |t: &str| {
        let t = secs(t);
        assert!(
            (enrolled + 3600 - 60..=enrolled + 3600 + 5).contains(&t),
            "{t} is not the enrolment's end {}",
            enrolled + 3600
        );
    };
    // The default client lifetime (a day) and an update asking for ten days: both end with it.
    let reg = client.register_client(None).await.unwrap();
    ends(&reg.expiration_time);
    let reg = client
        .update_client(&reg.reg_id, Some(&ts(10 * 86_400, &offset)))
        .await
        .unwrap();
    ends(&reg.expiration_time);
    let key = client
        .register_key(12, &["/id-in"], Some(&ts(20_000, &offset)))
        .await
        .unwrap();
    ends(&key.expiration_time);
    let mut in_cse = common::certificate_client(&maf, MAF, &pki.0, "in").await;
    ends(
        &in_cse
            .retrieve_key(&key.key_id)
            .await
            .unwrap()
            .expiration_time,
    );

    offset.fetch_add(3601, std::sync::atomic::Ordering::SeqCst);
    let ended = (
        Some(403),
        "the enrolment this association was authenticated with has ended".to_string(),
    );
    let e = client
        .register_key_value(13, &["/id-in"], &Secret::new(vec![5; 32]), None)
        .await
        .unwrap_err();
    assert_eq!((e.status, e.reason), ended.clone());
    let e = client.update_client(&reg.reg_id, None).await.unwrap_err();
    assert_eq!((e.status, e.reason), ended);
    let e = in_cse.retrieve_key(&key.key_id).await.unwrap_err();
    assert_eq!((e.status, e.reason.as_str()), (Some(404), "no such key"));
}

#[tokio::test]
async fn on_a_current_thread_runtime_the_fallback_refuses() {
    let pki = Pki::new();
    let mef_addr = pki.start_mef().await;
    let maf = pki.start_maf(&mef_addr).await;
    let (ke, ke_id) = enrol(&mef_addr, Some(MAF)).await;
    let km = kdf::km(&ke, MAF);
    assert!(
        MafClient::connect_psk(&format!("https://{}", maf.addr), MAF, &ke_id, &km)
            .await
            .is_err()
    );
    assert_audited(
        &ke_id,
        "fetching a key during a handshake needs a multi-thread runtime",
    );
}

/// The MAF's audit line for a remote-provisioned Km it could not get names the KeID and why.
fn assert_audited(ke_id: &str, reason: &str) {
    let logs = log_text();
    let wanted = format!(
        "remote-provisioned km not available psk_identity=\"{}\" reason={reason}",
        ke_id.to_lowercase()
    );
    assert!(
        logs.contains(&wanted),
        "no audit line {wanted:?} in:\n{logs}"
    );
}

#[test]
fn mef_section_needs_the_maf_certificate() {
    let base = "fqdn = \"maf.keys.example.net\"\nsp_fqdn = \"m2m.example.com\"\nlisten = \"127.0.0.1:0\"\nstorage = \"d\"\nstorage_key_file = \"k\"\n";
    let err = MafConfig::from_toml_str(&format!(
        "{base}[mef]\nurl = \"https://mef.keys.example.net:8443\"\nfqdn = \"mef.keys.example.net\"\n"
    ))
    .unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    let ok = MafConfig::from_toml_str(&format!(
        "{base}certificate = \"c\"\nprivate_key = \"p\"\ntrusted_ca = \"t\"\n[mef]\nurl = \"https://mef.keys.example.net:8443\"\nfqdn = \"mef.keys.example.net\"\n"
    ))
    .unwrap();
    assert_eq!(ok.mef.unwrap().timeout_ms, 2000);
}
