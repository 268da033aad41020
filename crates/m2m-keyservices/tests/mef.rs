//! MEF end to end: in-process servers on 127.0.0.1:0, a test PKI, enrolees on Kpm, targets on certificates.

mod common;

use common::{cse_leaf, log_text_lowercase, logs, write_private};
use m2m_keyservices::mef::client::TargetRef;
use m2m_keyservices::mef::{ClientError, EnrolmentRequest, Mef, MefClient, MefConfig, RunningMef};
use m2m_security::certificates::LeafName;
use m2m_security::credentials::Secret;
use m2m_security::kdf;
use std::path::PathBuf;

const MEF: &str = "mef.keys.example.net";
const MAF: &str = "maf.keys.example.net";
const SP: &str = "m2m.example.com";
const KPM_ID: &str = "00112233445566778899AABBCCDDEEFF@mef.keys.example.net";
const KPM_HEX: &str = "5a1f0c9e7d3b2a4f6e8d0c1b2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f";
const ENROLEE: &str = "/id-asn";

/// The test PKI (a CA, the MEF's and the MAF's FQDN certificates, CSE-ID certificates of an IN-CSE
/// and an MN-CSE) and the MEF's set-up.
struct Pki(common::Pki);

impl Pki {
    fn new() -> Pki {
        logs();
        Pki(common::Pki::new(
            "MEF test CA",
            None,
            &[],
            &[
                ("mef", LeafName::Fqdn(MEF.into())),
                ("maf", LeafName::Fqdn(MAF.into())),
                ("in", cse_leaf("/id-in", SP)),
                ("mn", cse_leaf("/id-mn", SP)),
            ],
        ))
    }

    fn p(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    fn config_text(&self, lifetime: u64) -> String {
        let crl = self.p("crl.pem");
        let crl = if crl.exists() {
            format!("crl = {:?}\n", crl.display().to_string())
        } else {
            String::new()
        };
        format!(
            r#"{crl}
fqdn = "{MEF}"
sp_fqdn = "{SP}"
listen = "127.0.0.1:0"
certificate = "{cert}"
private_key = "{key}"
trusted_ca = "{ca}"
storage = "{storage}"
storage_key = "{storage_key}"
lifetime_seconds = {lifetime}
admins = ["/id-in"]

[[kpm]]
enrolee_id = "{ENROLEE}"
kpm_id = "{KPM_ID}"
key = "{KPM_HEX}"

[[targets]]
id = "{MAF}"
suids = [11]

[[targets]]
id = "/id-in"
suids = [12, 13]

[[targets]]
id = "/id-mn"
suids = [12]
"#,
            cert = self.p("mef.pem").display(),
            key = self.p("mef.key").display(),
            ca = self.p("ca.pem").display(),
            storage = self.p("enrolments.json").display(),
            storage_key = self.p("storage.key").display(),
        )
    }

    fn config(&self, lifetime: u64) -> MefConfig {
        let path = self.p("mef.toml");
        write_private(&path, self.config_text(lifetime).as_bytes());
        MefConfig::load(&path).unwrap()
    }

    async fn start(&self, lifetime: u64) -> (String, RunningMef) {
        let mef = Mef::new(self.config(lifetime)).unwrap();
        let running = mef.start().await.unwrap();
        (running.addr.to_string(), running)
    }

    async fn target(&self, addr: &str, name: &str) -> MefClient {
        MefClient::connect_certificate(
            addr,
            MEF,
            &self.p(&format!("{name}.pem")),
            &self.p(&format!("{name}.key")),
            &self.p("ca.pem"),
        )
        .await
        .unwrap()
    }
}

fn kpm() -> Secret {
    Secret::from_hex(KPM_HEX).unwrap()
}

fn request() -> EnrolmentRequest {
    EnrolmentRequest {
        indications: vec!["MAF".into()],
        maf_id: Some(MAF.into()),
        targets: vec![TargetRef {
            id: "/id-in".into(),
            suid: 12,
        }],
    }
}

async fn enrol(addr: &str) -> m2m_keyservices::mef::EnrolResult {
    let mut c = MefClient::connect_psk(addr, MEF, KPM_ID, &kpm())
        .await
        .unwrap();
    c.enrol(&request()).await.unwrap()
}

#[tokio::test]
async fn enrolee_enrols_and_targets_fetch_the_same_keys() {
    let pki = Pki::new();
    let (addr, _task) = pki.start(3600).await;
    let e = enrol(&addr).await;
    assert_eq!(e.enrolee_id, ENROLEE);
    assert_eq!(e.lifetime, 3600);
    assert!(e.ke_id.ends_with(&format!("@{MEF}")));
    let (rel, fqdn) = kdf::parse_hex_key_id(&e.ke_id).unwrap();
    assert_eq!(fqdn, MEF);
    assert_eq!(kdf::ke_id_string(&rel, MEF), e.ke_id);
    assert_eq!(e.ke.len(), 32);

    // The IN-CSE fetches Kpsa (SUID 12) and it equals what the enrolee derives locally.
    let mut in_cse = pki.target(&addr, "in").await;
    let got = in_cse
        .fetch_credentials(&e.ke_id, 12, Some("/id-in"))
        .await
        .unwrap();
    assert_eq!(got.status, "SUCCESS");
    assert_eq!(got.enrolee_id, ENROLEE);
    assert!(got.lifetime > 3500 && got.lifetime <= 3600);
    assert_eq!(got.credential, kdf::kpsa(&e.ke, "/id-in"));

    // The MAF fetches Km (SUID 11), with no From header.
    let mut maf = pki.target(&addr, "maf").await;
    let got = maf.fetch_credentials(&e.ke_id, 11, None).await.unwrap();
    assert_eq!(got.credential, kdf::km(&e.ke, MAF));
    // Two requests on the same connection work.
    let again = maf.fetch_credentials(&e.ke_id, 11, None).await.unwrap();
    assert_eq!(again.credential, got.credential);
}

#[tokio::test]
async fn refusals_403_and_404() {
    let pki = Pki::new();
    let (addr, _task) = pki.start(3600).await;
    let e = enrol(&addr).await;

    // A CSE configured for SUID 12 but not named by the enrolment.
    let mut mn = pki.target(&addr, "mn").await;
    let err = mn.fetch_credentials(&e.ke_id, 12, None).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");

    // The IN-CSE asking for a SUID it is not configured for.
    let mut in_cse = pki.target(&addr, "in").await;
    let err = in_cse
        .fetch_credentials(&e.ke_id, 11, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");

    // A From that is not the certificate identity.
    let err = in_cse
        .fetch_credentials(&e.ke_id, 12, Some("/id-mn"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");

    // Unknown KeID.
    let unknown = format!("{}@{MEF}", "AB".repeat(16));
    let err = in_cse
        .fetch_credentials(&unknown, 12, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");

    // An enrolee on Kpm is no enrolment target.
    let mut enrolee = MefClient::connect_psk(&addr, MEF, KPM_ID, &kpm())
        .await
        .unwrap();
    let err = enrolee
        .fetch_credentials(&e.ke_id, 12, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");

    // Naming a target the configuration does not allow is a bad request.
    let err = enrolee
        .enrol(&EnrolmentRequest {
            indications: vec!["RemoteMgmt".into()],
            maf_id: None,
            targets: vec![TargetRef {
                id: "/id-other".into(),
                suid: 12,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    let err = enrolee
        .enrol(&EnrolmentRequest {
            indications: vec!["MAF".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
}

#[tokio::test]
async fn certificate_enrolee_and_usage_constrained_key() {
    let pki = Pki::new();
    let (addr, _task) = pki.start(3600).await;
    // The MN-CSE enrols with its certificate (TS-0003 8.3.2.2) naming the IN-CSE for SUIDs 12 and 13.
    let mut mn = pki.target(&addr, "mn").await;
    let e = mn
        .enrol(&EnrolmentRequest {
            indications: vec!["RemoteMgmt".into()],
            maf_id: None,
            targets: vec![
                TargetRef {
                    id: "/id-in".into(),
                    suid: 12,
                },
                TargetRef {
                    id: "/id-in".into(),
                    suid: 13,
                },
            ],
        })
        .await
        .unwrap();
    assert_eq!(e.enrolee_id, "/id-mn");
    assert_eq!(mn.bootstrap_key().1, e.ke_id);
    let mut in_cse = pki.target(&addr, "in").await;
    let k12 = in_cse.fetch_credentials(&e.ke_id, 12, None).await.unwrap();
    assert_eq!(k12.enrolee_id, "/id-mn");
    assert_eq!(k12.credential, kdf::kpsa(&e.ke, "/id-in"));
    let k13 = in_cse.fetch_credentials(&e.ke_id, 13, None).await.unwrap();
    assert_eq!(k13.credential, kdf::usage_constrained(&e.ke, 13, "/id-in"));
    assert_ne!(k12.credential, k13.credential);
    // No MAF was named: the MAF gets 403.
    let mut maf = pki.target(&addr, "maf").await;
    let err = maf.fetch_credentials(&e.ke_id, 11, None).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
}

/// A revoked target certificate (TS-0003 clause 8.1.2.2) gets no association with the MEF, and so
/// no key; the other targets of the same CA keep theirs.
#[tokio::test]
async fn a_revoked_target_certificate_gets_no_association() {
    let pki = Pki::new();
    pki.0.write_crl(&["mn"]);
    let (addr, _task) = pki.start(3600).await;
    let e = enrol(&addr).await;
    let refused = MefClient::connect_certificate(
        &addr,
        MEF,
        &pki.p("mn.pem"),
        &pki.p("mn.key"),
        &pki.p("ca.pem"),
    )
    .await;
    assert!(refused.is_err(), "the revoked MN-CSE associated");
    let mut in_cse = pki.target(&addr, "in").await;
    let k12 = in_cse.fetch_credentials(&e.ke_id, 12, None).await.unwrap();
    assert_eq!(k12.enrolee_id, ENROLEE);
    assert!(
        log_text_lowercase().contains("certificate revoked"),
        "the audit line names the reason"
    );
}

/// Revocation (`POST /mef/revocation`) is for the configured administrators' certificates only:
/// not for an enrolee on its Kpm, nor for another target; a revoked KeID is unknown to every
/// target from then on, and the store no longer holds its Ke.
#[tokio::test]
async fn only_an_administrator_revokes_and_a_revoked_enrolment_is_gone() {
    use m2m_keyservices::mef::store::Revocation;
    let pki = Pki::new();
    let (addr, _task) = pki.start(3600).await;
    let e = enrol(&addr).await;
    let mut enrolee = MefClient::connect_psk(&addr, MEF, KPM_ID, &kpm())
        .await
        .unwrap();
    let err = enrolee
        .revoke(&Revocation::KeId(e.ke_id.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let mut mn = pki.target(&addr, "mn").await;
    let err = mn
        .revoke(&Revocation::KeId(e.ke_id.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let mut admin = pki.target(&addr, "in").await;
    assert_eq!(
        admin
            .fetch_credentials(&e.ke_id, 12, None)
            .await
            .unwrap()
            .enrolee_id,
        ENROLEE
    );
    let err = admin
        .revoke(&Revocation::KeId(format!("{}@{MEF}", "AB".repeat(16))))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    let gone = admin
        .revoke(&Revocation::Enrolee(ENROLEE.into()))
        .await
        .unwrap();
    assert_eq!(gone, vec![e.ke_id.clone()]);
    let err = admin
        .fetch_credentials(&e.ke_id, 12, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    let stored = std::fs::read_to_string(pki.p("enrolments.json")).unwrap();
    assert!(
        !stored.contains(&e.ke_id),
        "the revoked enrolment is still stored"
    );
}

#[tokio::test]
async fn expired_enrolment_is_404() {
    let pki = Pki::new();
    let (addr, _task) = pki.start(1).await;
    let e = enrol(&addr).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let mut in_cse = pki.target(&addr, "in").await;
    let err = in_cse
        .fetch_credentials(&e.ke_id, 12, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}

#[tokio::test]
async fn restart_keeps_enrolments_encrypted_at_rest() {
    let pki = Pki::new();
    let (addr, running) = pki.start(3600).await;
    let e = enrol(&addr).await;
    running.shutdown().await;

    let stored = std::fs::read_to_string(pki.p("enrolments.json")).unwrap();
    assert!(stored.contains(&e.ke_id));
    let ke_hex = hex::encode(e.ke.expose());
    assert!(!stored.to_lowercase().contains(&ke_hex));
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(pki.p("enrolments.json"))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode & 0o077, 0);

    let (addr2, _task2) = pki.start(3600).await;
    assert_ne!(addr, addr2);
    let mut in_cse = pki.target(&addr2, "in").await;
    let got = in_cse.fetch_credentials(&e.ke_id, 12, None).await.unwrap();
    assert_eq!(got.credential, kdf::kpsa(&e.ke, "/id-in"));

    // A different storage key cannot open the file.
    std::fs::remove_file(pki.p("storage.key")).unwrap();
    let err = Mef::new(pki.config(3600)).err().expect("must fail");
    assert!(err.contains("does not open"), "{err}");
}

#[tokio::test]
async fn wrong_kpm_fails_the_handshake() {
    let pki = Pki::new();
    let (addr, _task) = pki.start(3600).await;
    let wrong = Secret::from_hex(&"11".repeat(32)).unwrap();
    let err = MefClient::connect_psk(&addr, MEF, KPM_ID, &wrong)
        .await
        .err()
        .expect("wrong Kpm must fail");
    assert!(matches!(err, ClientError::Connect(_)), "{err}");
    let unknown = format!("{}@{MEF}", "CD".repeat(16));
    let err = MefClient::connect_psk(&addr, MEF, &unknown, &kpm()).await;
    assert!(matches!(err, Err(ClientError::Connect(_))));
}

#[test]
fn config_with_kpm_must_be_private() {
    let pki = Pki::new();
    let path = pki.p("open.toml");
    std::fs::write(&path, pki.config_text(60)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let err = MefConfig::load(&path).unwrap_err();
    assert!(err.contains("chmod 600"), "{err}");
    // The default configuration parses.
    MefConfig::from_toml_str(m2m_keyservices::mef::DEFAULT_CONFIG).unwrap();
}

#[tokio::test]
async fn logs_carry_ids_never_keys() {
    let pki = Pki::new();
    let (addr, _task) = pki.start(3600).await;
    let e = enrol(&addr).await;
    let mut in_cse = pki.target(&addr, "in").await;
    let kpsa = in_cse
        .fetch_credentials(&e.ke_id, 12, None)
        .await
        .unwrap()
        .credential;
    let mut maf = pki.target(&addr, "maf").await;
    let km = maf
        .fetch_credentials(&e.ke_id, 11, None)
        .await
        .unwrap()
        .credential;
    let mut mn = pki.target(&addr, "mn").await;
    let _ = mn.fetch_credentials(&e.ke_id, 12, None).await;
    let _ = MefClient::connect_psk(
        &addr,
        MEF,
        KPM_ID,
        &Secret::from_hex(&"22".repeat(32)).unwrap(),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let logs = log_text_lowercase();
    assert!(logs.contains("enrolment created"), "{logs}");
    assert!(logs.contains("credential delivered"), "{logs}");
    assert!(logs.contains("credential fetch refused"), "{logs}");
    assert!(logs.contains(&e.ke_id.to_lowercase()), "{logs}");
    for secret in [kpm(), e.ke.clone(), kpsa, km] {
        let h = hex::encode(secret.expose());
        assert!(!logs.contains(&h), "key material in the logs");
        assert!(!logs.contains(&h[..16]), "key material in the logs");
    }
}
