//! The TTP credential registry of the MAF (seeds/001 clauses 5.6, 5.7) end to end: the MAF serves on
//! 127.0.0.1:0, a gateway (MN-CSE, certificate) and applications (AEs, TLS-PSK on Km) are clients over
//! real TLS connections; the attacks are tried and must fail.

mod common;

use common::{
    certificate_client, cse_leaf, log_text, logs, maf_config, test_clock, url, write_private, Pki,
};
use m2m_keyservices::maf::{
    Clock, CredentialRequest, CredentialUsage, Delegation, Jwk, KmRow, MafClient, MafConfig,
    MafError, RunningMaf, TtpSection,
};
use m2m_security::certificates::LeafName;
use m2m_security::credentials::Secret;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const SP: &str = "m2m.example.com";
const MAF_FQDN: &str = "maf.keys.example.net";
/// The gateway: an MN-CSE with a CSE-ID certificate, delegated for the AEs registered with it.
const GATEWAY: &str = "mn-cse-123456";
/// The device the gateway acts for.
const DEVICE: &str = "/mn-cse-123456/Csensor1";
const DEVICE_ABS: &str = "//m2m.example.com/mn-cse-123456/Csensor1";
/// The application allowed to verify the device's data, and one that is not.
const APP: &str = "//m2m.example.com/Sapp";
const APP_KM_ID: &str = "app@maf.keys.example.net";
const OTHER_KM_ID: &str = "other@maf.keys.example.net";

/// A CA, the MAF's FQDN certificate and CSE-ID certificates of two gateways.
fn pki() -> Pki {
    let p = Pki::new(
        "TTP test CA",
        Some(SP),
        &[MAF_FQDN.into()],
        &[
            ("maf", LeafName::Fqdn(MAF_FQDN.into())),
            (GATEWAY, cse_leaf(&format!("/{GATEWAY}"), SP)),
            ("mn-cse-999", cse_leaf("/mn-cse-999", SP)),
        ],
    );
    write_private(&p.path("storage.key"), "5a".repeat(32).as_bytes());
    p
}

fn km_of(km_id: &str) -> Secret {
    let byte = if km_id == APP_KM_ID { "11" } else { "22" };
    Secret::from_hex(&byte.repeat(32)).unwrap()
}

fn config(p: &Pki, storage: &Path) -> MafConfig {
    let km = vec![
        KmRow {
            client_id: "/Sapp".into(),
            km_id: APP_KM_ID.into(),
            key: km_of(APP_KM_ID),
        },
        KmRow {
            client_id: "/Sother".into(),
            km_id: OTHER_KM_ID.into(),
            key: km_of(OTHER_KM_ID),
        },
    ];
    MafConfig {
        ttp: TtpSection {
            default_lifetime: 3600,
            max_lifetime: 86_400,
            delegations: vec![Delegation {
                delegate: format!("/{GATEWAY}"),
                subjects: vec![format!("/{GATEWAY}/C*")],
            }],
        },
        ..maf_config(p, MAF_FQDN, SP, km, storage)
    }
}

/// An application AE over TLS-PSK on its Km.
async fn app(maf: &RunningMaf, km_id: &str) -> MafClient {
    MafClient::connect_psk(&url(maf), MAF_FQDN, km_id, &km_of(km_id))
        .await
        .unwrap()
}

/// A gateway over its CSE-ID certificate, registered as a MAF client.
async fn gateway(maf: &RunningMaf, p: &Pki, name: &str) -> MafClient {
    let mut c = certificate_client(maf, MAF_FQDN, p, name).await;
    c.register_client(None).await.unwrap();
    c
}

async fn start(p: &Pki, storage: &Path, clock: Clock) -> RunningMaf {
    RunningMaf::start(config(p, storage), clock).await.unwrap()
}

/// The oneM2M status code of a refusal.
fn rsc<T: std::fmt::Debug>(r: Result<T, MafError>) -> (u16, String) {
    let e = r.expect_err("expected a refusal");
    (e.rsc.expect("a oneM2M status code"), e.reason)
}

fn b64url(bytes: &[u8]) -> String {
    m2m_keyservices::maf::jwk::b64url(bytes).to_string()
}

/// A device's EC P-256 key pair as JWKs: (public, private).
fn device_ec_jwk() -> (Value, Value) {
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::{EcGroup, EcKey};
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let key = EcKey::generate(&group).unwrap();
    let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
    let mut ctx = BigNumContext::new().unwrap();
    key.public_key()
        .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
        .unwrap();
    let public = json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "sensor1-sig",
        "x": b64url(&x.to_vec_padded(32).unwrap()),
        "y": b64url(&y.to_vec_padded(32).unwrap()),
    });
    let mut private = public.clone();
    private["d"] = json!(b64url(&key.private_key().to_vec_padded(32).unwrap()));
    (public, private)
}

fn oct_jwk(byte: u8, alg: &str) -> Value {
    json!({ "kty": "oct", "k": b64url(&[byte; 32]), "alg": alg })
}

fn request<'a>(
    jwk: Option<&'a Jwk>,
    usage: CredentialUsage,
    requesters: &'a [&'a str],
) -> CredentialRequest<'a> {
    CredentialRequest {
        subject_id: DEVICE,
        usage,
        jwk,
        requester_ids: requesters,
        expiration_time: None,
    }
}

// ----- tests ---------------------------------------------------------------------------------------

/// Clause 5.7 flow: the gateway registers the device's integrity (EC public) and confidentiality
/// (oct) credentials; the authorized application retrieves both by ID and gets the same JWKs.
#[tokio::test]
async fn gateway_registers_for_its_device_and_the_authorized_app_gets_the_same_jwk() {
    logs();
    let p = pki();
    let (clock, _) = test_clock();
    let maf = start(&p, &p.path("store"), clock).await;
    let mut gw = gateway(&maf, &p, GATEWAY).await;

    let (public, _) = device_ec_jwk();
    let sig = Jwk::from_value(&public, CredentialUsage::EsdataIntegrity).unwrap();
    let reg = gw
        .register_credential(&request(
            Some(&sig),
            CredentialUsage::EsdataIntegrity,
            &["/Sapp"],
        ))
        .await
        .unwrap();
    assert!(reg.credential_id.ends_with("@maf.keys.example.net"));
    assert_eq!(reg.subject_id, DEVICE_ABS);
    assert_eq!(reg.registrant_id, format!("//{SP}/{GATEWAY}"));
    assert_eq!(reg.requester_ids, vec![APP.to_string()]);
    assert!(reg.jwk.is_none(), "a registered key is not echoed");

    let enc_value = oct_jwk(0x42, "A256GCM");
    let enc = Jwk::from_value(&enc_value, CredentialUsage::EsdataConfidentiality).unwrap();
    let reg_enc = gw
        .register_credential(&request(
            Some(&enc),
            CredentialUsage::EsdataConfidentiality,
            &[APP],
        ))
        .await
        .unwrap();
    assert_ne!(reg_enc.credential_id, reg.credential_id);

    let mut app = app(&maf, APP_KM_ID).await;
    let got = app.retrieve_credential(&reg.credential_id).await.unwrap();
    assert_eq!(got.jwk.unwrap().to_value(), public);
    assert_eq!(got.subject_id, DEVICE_ABS);
    assert_eq!(got.usage, CredentialUsage::EsdataIntegrity);
    assert!(
        got.requester_ids.is_empty(),
        "requesters are the registrant's business"
    );
    let relative = reg_enc.credential_id.split('@').next().unwrap();
    let got = app.retrieve_credential(relative).await.unwrap();
    assert_eq!(got.jwk.unwrap().to_value(), enc_value);

    // Clause 5.6 step 5, the alternative: the gateway asks the TTP for a key.
    let generated = gw
        .register_credential(&request(None, CredentialUsage::Esprim, &[APP]))
        .await
        .unwrap();
    let key = generated.jwk.expect("the TTP returns the key it generated");
    assert_eq!(key.kty(), m2m_keyservices::maf::KeyType::Oct);
    let got = app
        .retrieve_credential(&generated.credential_id)
        .await
        .unwrap();
    assert_eq!(got.jwk.unwrap(), key);

    let logs = log_text();
    assert!(logs.contains("TTP credential registered"));
    assert!(logs.contains("TTP credential retrieval granted"));
    assert!(!logs.contains(enc_value["k"].as_str().unwrap()));
    let generated_k = key.to_value()["k"].as_str().unwrap().to_owned();
    assert!(!logs.contains(&generated_k));
}

/// An application that is not a requester learns nothing: the same 4004 as for an unknown ID.
#[tokio::test]
async fn an_unauthorized_app_is_refused_like_an_unknown_id() {
    logs();
    let p = pki();
    let (clock, _) = test_clock();
    let maf = start(&p, &p.path("store"), clock).await;
    let mut gw = gateway(&maf, &p, GATEWAY).await;
    let value = oct_jwk(0x17, "HS256");
    let jwk = Jwk::from_value(&value, CredentialUsage::EsdataIntegrity).unwrap();
    let reg = gw
        .register_credential(&request(
            Some(&jwk),
            CredentialUsage::EsdataIntegrity,
            &[APP],
        ))
        .await
        .unwrap();
    let mut other = app(&maf, OTHER_KM_ID).await;
    let refused = rsc(other.retrieve_credential(&reg.credential_id).await);
    let unknown = rsc(other
        .retrieve_credential("00000000000000000000000000000000@maf.keys.example.net")
        .await);
    assert_eq!(refused, (4004, "no such credential".to_string()));
    assert_eq!(refused, unknown);
    // Another gateway that is not a requester fares no better.
    let mut gw2 = gateway(&maf, &p, "mn-cse-999").await;
    assert_eq!(
        rsc(gw2.retrieve_credential(&reg.credential_id).await).0,
        4004
    );
    let logs = log_text();
    assert!(logs.contains("not an authorized requester"), "{logs}");
    assert!(!logs.contains(value["k"].as_str().unwrap()));
}

/// Delegation is authorized by configuration: a gateway registers only for the subjects listed
/// for it (or itself), and only as a registered MAF client.
#[tokio::test]
async fn registering_for_a_subject_without_delegation_is_refused() {
    logs();
    let p = pki();
    let (clock, _) = test_clock();
    let maf = start(&p, &p.path("store"), clock).await;
    let jwk = Jwk::from_value(&oct_jwk(1, "HS256"), CredentialUsage::Esprim).unwrap();
    let mut gw2 = gateway(&maf, &p, "mn-cse-999").await;
    let (code, reason) = rsc(gw2
        .register_credential(&request(Some(&jwk), CredentialUsage::Esprim, &[APP]))
        .await);
    assert_eq!(code, 4103);
    assert_eq!(
        reason,
        "not delegated to register credentials for this subject"
    );
    let mut gw = gateway(&maf, &p, GATEWAY).await;
    let mut elsewhere = request(Some(&jwk), CredentialUsage::Esprim, &[APP]);
    elsewhere.subject_id = "/mn-cse-999/Csensor9";
    assert_eq!(rsc(gw.register_credential(&elsewhere).await).0, 4103);
    elsewhere.subject_id = "/Sapp";
    assert_eq!(rsc(gw.register_credential(&elsewhere).await).0, 4103);
    // For itself a client needs no delegation ...
    let mut own = request(Some(&jwk), CredentialUsage::Esprim, &[APP]);
    own.subject_id = "/mn-cse-999";
    gw2.register_credential(&own).await.unwrap();
    // ... but it must be a registered MAF client.
    let mut app = app(&maf, APP_KM_ID).await;
    own.subject_id = "/Sapp";
    let (code, reason) = rsc(app.register_credential(&own).await);
    assert_eq!(
        (code, reason.as_str()),
        (4103, "not a registered MAF client")
    );
    app.register_client(None).await.unwrap();
    app.register_credential(&own).await.unwrap();
    assert!(log_text().contains("TTP credential registration refused"));
}

/// The device's private key never leaves it: a public-key credential carrying `d` is refused, and
/// so are keys that do not fit their usage.
#[tokio::test]
async fn a_device_private_key_is_refused() {
    logs();
    let p = pki();
    let (clock, _) = test_clock();
    let storage = p.path("store");
    let maf = start(&p, &storage, clock).await;
    let (public, private) = device_ec_jwk();
    // The client-side check refuses it before anything is sent ...
    assert!(Jwk::from_value(&private, CredentialUsage::EsdataIntegrity).is_err());
    // ... and the TTP refuses it from a gateway that sends it anyway.
    let _registered = gateway(&maf, &p, GATEWAY).await;
    let mut raw = RawClient::connect_gateway(&maf, &p).await;
    let body = json!({"subjectID": DEVICE, "usage": "esdata-integrity", "jwk": private, "requesterIDs": [APP]});
    let (status, v) = raw.send("POST", &body.to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(v["rsc"], json!(4000));
    let reason = v["error"].as_str().unwrap();
    assert!(reason.contains("private key d"), "{reason}");
    assert!(!v.to_string().contains(private["d"].as_str().unwrap()));
    let body = json!({"subjectID": DEVICE, "usage": "esdata-confidentiality", "jwk": public, "requesterIDs": [APP]});
    let (_, v) = raw.send("POST", &body.to_string()).await;
    assert_eq!(v["rsc"], json!(4000), "{v}");
    let db = rusqlite::Connection::open(storage.join("maf.sqlite")).unwrap();
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM e2e_credentials", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
    assert!(!log_text().contains(private["d"].as_str().unwrap()));
}

/// Credentials expire (the requested time is capped by `[ttp] max_lifetime`) and are then gone.
#[tokio::test]
async fn an_expired_credential_is_gone() {
    logs();
    let p = pki();
    let (clock, offset) = test_clock();
    let maf = start(&p, &p.path("store"), clock).await;
    let mut gw = gateway(&maf, &p, GATEWAY).await;
    let jwk = Jwk::from_value(&oct_jwk(3, "HS256"), CredentialUsage::Esprim).unwrap();
    let now = chrono::Utc::now().timestamp();
    let in_a_year = chrono::DateTime::from_timestamp(now + 365 * 86_400, 0)
        .unwrap()
        .format("%Y%m%dT%H%M%S")
        .to_string();
    let mut req = request(Some(&jwk), CredentialUsage::Esprim, &[APP]);
    req.expiration_time = Some(&in_a_year);
    let reg = gw.register_credential(&req).await.unwrap();
    let granted = m2m_core::time::parse(&reg.expiration_time)
        .unwrap()
        .timestamp();
    assert!(granted <= now + 86_400 + 5, "capped at max_lifetime");
    let mut app = app(&maf, APP_KM_ID).await;
    app.retrieve_credential(&reg.credential_id).await.unwrap();
    offset.fetch_add(86_401, Ordering::SeqCst);
    assert_eq!(
        rsc(app.retrieve_credential(&reg.credential_id).await).0,
        4004
    );
    assert_eq!(
        rsc(gw.deregister_credential(&reg.credential_id).await).0,
        4004
    );
    assert!(log_text().contains("TTP credential expired and purged"));
}

/// Credentials survive a MAF restart, encrypted at rest; a row edited in the file to add a
/// requester no longer opens.
#[tokio::test]
async fn credentials_persist_encrypted_and_sealed_to_their_registration() {
    logs();
    let p = pki();
    let storage = p.path("store");
    let (clock, _) = test_clock();
    let maf = start(&p, &storage, Arc::clone(&clock)).await;
    let mut gw = gateway(&maf, &p, GATEWAY).await;
    let value = oct_jwk(0xa7, "A256GCM");
    let jwk = Jwk::from_value(&value, CredentialUsage::EsdataConfidentiality).unwrap();
    let reg = gw
        .register_credential(&request(
            Some(&jwk),
            CredentialUsage::EsdataConfidentiality,
            &[APP],
        ))
        .await
        .unwrap();
    drop(gw);
    maf.shutdown().await;

    // Nothing of the key in any file of the store (database, WAL), neither raw nor base64url.
    let k = value["k"].as_str().unwrap();
    for entry in std::fs::read_dir(&storage).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(32).any(|w| w == [0xa7u8; 32]));
        assert!(!bytes.windows(k.len()).any(|w| w == k.as_bytes()));
    }

    let maf = start(&p, &storage, Arc::clone(&clock)).await;
    let mut app = app(&maf, APP_KM_ID).await;
    let got = app.retrieve_credential(&reg.credential_id).await.unwrap();
    assert_eq!(got.jwk.unwrap().to_value(), value);

    // Tampering with the store: add /Sother to the requesters behind the MAF's back.
    let db = rusqlite::Connection::open(storage.join("maf.sqlite")).unwrap();
    db.execute(
        "UPDATE e2e_credentials SET requesters = ?1",
        [json!([APP, "//m2m.example.com/Sother"]).to_string()],
    )
    .unwrap();
    let mut other = self::app(&maf, OTHER_KM_ID).await;
    let e = other
        .retrieve_credential(&reg.credential_id)
        .await
        .unwrap_err();
    assert_eq!(e.status, Some(500), "{e}");
    assert!(!e.reason.contains(k));
    assert!(log_text().contains("does not decrypt"));
}

/// Update and de-registration are the registrant's: a requester gets 4103, a stranger 4004.
#[tokio::test]
async fn only_the_registrant_updates_and_deletes() {
    logs();
    let p = pki();
    let (clock, _) = test_clock();
    let maf = start(&p, &p.path("store"), clock).await;
    let mut gw = gateway(&maf, &p, GATEWAY).await;
    let jwk = Jwk::from_value(&oct_jwk(9, "HS256"), CredentialUsage::EsdataIntegrity).unwrap();
    let reg = gw
        .register_credential(&request(
            Some(&jwk),
            CredentialUsage::EsdataIntegrity,
            &[APP],
        ))
        .await
        .unwrap();
    let id = reg.credential_id.as_str();
    let mut app = app(&maf, APP_KM_ID).await;
    let mut other = self::app(&maf, OTHER_KM_ID).await;
    let (code, reason) = rsc(app
        .update_credential(id, Some(&["/Sapp", "/Sother"]), None)
        .await);
    assert_eq!(
        (code, reason.as_str()),
        (4103, "only the registrant may change this credential")
    );
    assert_eq!(rsc(app.deregister_credential(id).await).0, 4103);
    assert_eq!(
        rsc(other.update_credential(id, Some(&["/Sother"]), None).await).0,
        4004
    );
    assert_eq!(rsc(other.deregister_credential(id).await).0, 4004);
    assert_eq!(rsc(other.retrieve_credential(id).await).0, 4004);

    // The registrant re-targets: now /Sother may retrieve it, with the same key.
    let updated = gw
        .update_credential(id, Some(&["/Sother"]), None)
        .await
        .unwrap();
    assert_eq!(updated.requester_ids, vec!["//m2m.example.com/Sother"]);
    assert_eq!(
        other.retrieve_credential(id).await.unwrap().jwk.unwrap(),
        jwk
    );
    assert_eq!(rsc(app.retrieve_credential(id).await).0, 4004);
    gw.deregister_credential(id).await.unwrap();
    assert_eq!(rsc(other.retrieve_credential(id).await).0, 4004);
    assert_eq!(rsc(gw.retrieve_credential(id).await).0, 4004);
    let logs = log_text();
    assert!(logs.contains("TTP credential update refused"));
    assert!(logs.contains("TTP credential de-registered"));
}

/// Bad input gets a oneM2M status code and a short reason, never a panic or an echo of the input.
#[tokio::test]
async fn bad_requests_get_clear_errors() {
    logs();
    let p = pki();
    let (clock, _) = test_clock();
    let maf = start(&p, &p.path("store"), clock).await;
    let _registered = gateway(&maf, &p, GATEWAY).await;
    let mut raw = RawClient::connect_gateway(&maf, &p).await;
    let k = b64url(&[5u8; 32]);
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "request body is not JSON"),
        (format!("{{\"jwk\": {{\"k\": \"{k}\"}}, \"subjectID\": 7}}"), "request body has wrong or missing fields"),
        ("{\"unknown\": 1}".into(), "request body has wrong or missing fields"),
        ("{}".into(), "subjectID is missing"),
        (json!({"subjectID": "Csensor1"}).to_string(), "subjectID must be an SP-relative or absolute AE-ID/CSE-ID"),
        (json!({"subjectID": DEVICE, "usage": "anything"}).to_string(), "usage must be esprim, esdata-integrity or esdata-confidentiality"),
        (json!({"subjectID": DEVICE, "usage": "esprim", "requesterIDs": []}).to_string(), "requesterIDs is empty"),
        (json!({"subjectID": DEVICE, "usage": "esprim", "requesterIDs": [APP], "expirationTime": "tomorrow"}).to_string(), "expirationTime is not a oneM2M timestamp"),
        (json!({"subjectID": DEVICE, "usage": "esprim", "requesterIDs": [APP], "jwk": {"kty": "oct", "k": format!("{k}==")}}).to_string(), "jwk key members must be base64url without padding"),
        (json!({"subjectID": DEVICE, "usage": "esprim", "requesterIDs": [APP], "jwk": {"kty": "RSA", "n": k}}).to_string(), "jwk kty must be oct or EC"),
    ];
    for (body, reason) in cases {
        let (status, v) = raw.send("POST", &body).await;
        assert_eq!((status, &v["rsc"]), (400, &json!(4000)), "{body}: {v}");
        assert_eq!(v["error"], json!(reason), "{body}");
        assert!(!v.to_string().contains(&k));
    }
    let (status, v) = raw.send("PATCH", "").await;
    assert_eq!((status, &v["rsc"]), (405, &json!(4005)), "{v}");
    assert!(!log_text().contains(&k));
}

// ----- a raw HTTP/1.1 client over TLS, for bodies the typed client would never send -------------

struct RawClient {
    stream: tokio_openssl::SslStream<tokio::net::TcpStream>,
}

impl RawClient {
    async fn connect_gateway(maf: &RunningMaf, p: &Pki) -> RawClient {
        Self::with(
            maf,
            m2m_security::tls::ClientTlsConfig {
                cipher_suites: m2m_security::tls::CERTIFICATE_SUITES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                certificate_chain: Some(p.path(&format!("{GATEWAY}.pem"))),
                private_key: Some(p.path(&format!("{GATEWAY}.key"))),
                trusted_ca: Some(p.path("ca.pem")),
                ..Default::default()
            },
        )
        .await
    }

    async fn with(maf: &RunningMaf, cfg: m2m_security::tls::ClientTlsConfig) -> RawClient {
        let ctx = m2m_security::tls::client_context(&cfg).unwrap();
        let tcp = tokio::net::TcpStream::connect(maf.addr).await.unwrap();
        let ssl = m2m_security::tls::client_ssl(&ctx, Some(MAF_FQDN)).unwrap();
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
        std::pin::Pin::new(&mut stream).connect().await.unwrap();
        RawClient { stream }
    }

    /// One request on the kept-alive connection; (HTTP status, JSON body).
    async fn send(&mut self, method: &str, body: &str) -> (u16, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!(
            "{method} /maf/e2e-credentials HTTP/1.1\r\nHost: {MAF_FQDN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the MAF closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            let Some((head, rest)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if rest.len() < len {
                continue;
            }
            let status = head[9..12].parse().unwrap();
            assert!(
                head.to_ascii_lowercase().contains("x-m2m-rsc:"),
                "every TTP answer carries X-M2M-RSC: {head}"
            );
            return (status, serde_json::from_str(&rest[..len]).unwrap());
        }
    }
}

/// The periodic sweep removes expired credentials from the store, not only the lookups.
#[tokio::test]
async fn the_sweep_purges_expired_credentials() {
    logs();
    let p = pki();
    let storage = p.path("store");
    let (clock, offset) = test_clock();
    let mut cfg = config(&p, &storage);
    cfg.sweep_interval = 1;
    let maf = RunningMaf::start(cfg, clock).await.unwrap();
    let mut gw = gateway(&maf, &p, GATEWAY).await;
    gw.register_credential(&request(None, CredentialUsage::Esprim, &[APP]))
        .await
        .unwrap();
    let count = || {
        let db = rusqlite::Connection::open(storage.join("maf.sqlite")).unwrap();
        db.query_row("SELECT COUNT(*) FROM e2e_credentials", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
    };
    assert_eq!(count(), 1);
    offset.fetch_add(3601, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(count(), 0);
}

fn ts(secs_from_now: i64, offset: &std::sync::atomic::AtomicI64) -> String {
    let t = chrono::Utc::now().timestamp() + offset.load(Ordering::SeqCst) + secs_from_now;
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y%m%dT%H%M%S")
        .to_string()
}

/// A credential belongs to the registrant's client registration: it never expires after it
/// (registration, update), is shortened with it, and is gone at once when the client de-registers.
#[tokio::test]
async fn credentials_end_with_the_registrants_client_registration() {
    logs();
    let p = pki();
    let (clock, offset) = test_clock();
    let maf = start(&p, &p.path("store"), clock).await;
    let mut gw = certificate_client(&maf, MAF_FQDN, &p, GATEWAY).await;
    let t600 = ts(600, &offset);
    let client = gw.register_client(Some(&t600)).await.unwrap();
    // The default (3600 s) and an update asking for more both stop at the client's 600 s.
    let reg = gw
        .register_credential(&request(None, CredentialUsage::Esprim, &[APP]))
        .await
        .unwrap();
    assert_eq!(reg.expiration_time, t600);
    let updated = gw
        .update_credential(&reg.credential_id, None, Some(&ts(7200, &offset)))
        .await
        .unwrap();
    assert_eq!(updated.expiration_time, t600);
    let mut app = app(&maf, APP_KM_ID).await;
    assert_eq!(
        app.retrieve_credential(&reg.credential_id)
            .await
            .unwrap()
            .expiration_time,
        t600
    );
    // Shortened with the client registration.
    let t60 = ts(60, &offset);
    gw.update_client(&client.reg_id, Some(&t60)).await.unwrap();
    assert_eq!(
        app.retrieve_credential(&reg.credential_id)
            .await
            .unwrap()
            .expiration_time,
        t60
    );
    // De-registered with the client: the requester gets the answer for an unknown ID.
    gw.deregister_client(&client.reg_id).await.unwrap();
    assert_eq!(
        rsc(app.retrieve_credential(&reg.credential_id).await),
        (4004, "no such credential".into())
    );
    assert!(log_text().contains(&format!("reg={} keys=0 credentials=1", client.reg_id)));
}
