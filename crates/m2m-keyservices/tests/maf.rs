//! The MAF end to end: server in-process on 127.0.0.1:0, clients over real TLS connections.

mod common;

use common::log_text_lowercase as log_text;
use common::{certificate_client, cse_leaf, logs, maf_config, test_clock, url, write_private, Pki};
use m2m_keyservices::maf::{KmRow, MafClient, MafConfig, RunningMaf};
use m2m_security::certificates::{generate_key, issue, make_ca, KeyType, LeafName, Validity};
use m2m_security::credentials::Secret;
use m2m_security::kdf;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

const SP: &str = "m2m.example.com";
const MAF_FQDN: &str = "maf.keys.example.net";
const KM_ID: &str = "ae1@maf.keys.example.net";
const KM_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const IN_CSE: &str = "//m2m.example.com/id-in";

/// A CA, the MAF's FQDN certificate and CSE-ID certificates of the IN-CSE and another CSE.
fn pki() -> Pki {
    let p = Pki::new(
        "MAF test CA",
        Some(SP),
        &[MAF_FQDN.into()],
        &[
            ("maf", LeafName::Fqdn(MAF_FQDN.into())),
            ("in", cse_leaf("/id-in", SP)),
            ("other", cse_leaf("/id-other", SP)),
        ],
    );
    write_private(&p.path("storage.key"), hex_of(&[0x5au8; 32]).as_bytes());
    p
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn config(p: &Pki, storage: &Path) -> MafConfig {
    let km = vec![
        KmRow {
            client_id: "/Sae1".into(),
            km_id: KM_ID.into(),
            key: Secret::from_hex(KM_HEX).unwrap(),
        },
        KmRow {
            client_id: "/Sae2".into(),
            km_id: "ae2@maf.keys.example.net".into(),
            key: Secret::from_hex(&"42".repeat(32)).unwrap(),
        },
    ];
    maf_config(p, MAF_FQDN, SP, km, storage)
}

async fn ae(maf: &RunningMaf) -> MafClient {
    MafClient::connect_psk(
        &url(maf),
        MAF_FQDN,
        KM_ID,
        &Secret::from_hex(KM_HEX).unwrap(),
    )
    .await
    .unwrap()
}

async fn cse(maf: &RunningMaf, p: &Pki, name: &str) -> MafClient {
    certificate_client(maf, MAF_FQDN, p, name).await
}

fn status<T: std::fmt::Debug>(r: Result<T, m2m_keyservices::maf::MafError>) -> u16 {
    r.expect_err("expected a refusal")
        .status
        .expect("an HTTP status")
}

fn ts(secs_from_now: i64, offset: &AtomicI64) -> String {
    let t = chrono::Utc::now().timestamp() + offset.load(Ordering::SeqCst) + secs_from_now;
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y%m%dT%H%M%S")
        .to_string()
}

// ----- tests ---------------------------------------------------------------------------------------

#[tokio::test]
async fn ae_registers_kc_for_in_cse_which_retrieves_it() {
    logs();
    let p = pki();
    let storage = p.path("store");
    let (clock, _) = test_clock();
    let maf = RunningMaf::start(config(&p, &storage), clock)
        .await
        .unwrap();

    let mut ae = ae(&maf).await;
    // Not yet a registered client: no key registration.
    assert_eq!(status(ae.register_key(12, &[IN_CSE], None).await), 403);
    let reg = ae.register_client(None).await.unwrap();
    assert_eq!(reg.client_id, "//m2m.example.com/Sae1");
    assert!(reg.reg_id.starts_with("mcr-"));

    // SAEF takes exactly one target; unknown SUIDs and malformed targets are refused.
    assert_eq!(
        status(ae.register_key(12, &[IN_CSE, "/id-mn"], None).await),
        400
    );
    assert_eq!(status(ae.register_key(99, &[IN_CSE], None).await), 400);
    assert_eq!(status(ae.register_key(12, &["id-in"], None).await), 400);

    let (local_kc, local_kc_id) = ae.connection_key();
    // SP-relative target IDs are normalised to absolute form.
    let key = ae.register_key(12, &["/id-in"], None).await.unwrap();
    assert_eq!(key.key.len(), 32);
    assert_eq!(key.key, local_kc);
    assert_eq!(key.relative_id, local_kc_id);
    assert_eq!(key.relative_id.len(), 32);
    assert_eq!(key.key_id, format!("{local_kc_id}@{MAF_FQDN}"));
    // The Key Identifier is the documented uppercase hexBinary form of kdf::kc_id_string.
    let (kc_id_bytes, fqdn) = kdf::parse_hex_key_id(&key.key_id).unwrap();
    assert_eq!(key.key_id, kdf::kc_id_string(&kc_id_bytes, &fqdn));
    assert_eq!(key.relative_id, kdf::hex_binary(&kc_id_bytes));
    assert_eq!(key.target_ids, vec![IN_CSE.to_string()]);
    // One Kc per connection.
    assert_eq!(status(ae.register_key(12, &[IN_CSE], None).await), 409);

    // The IN-CSE (certificate /id-in) retrieves the same Kc.
    let mut in_cse = cse(&maf, &p, "in").await;
    let got = in_cse.retrieve_key(&key.key_id).await.unwrap();
    assert_eq!(got.key, key.key);
    assert_eq!(got.source_id, "//m2m.example.com/Sae1");
    assert_eq!(got.suid, 12);
    assert_eq!(got.source_km_id.as_deref(), Some(KM_ID));
    // hexBinary has no case: the lowercase form names the same key.
    let lower = in_cse
        .retrieve_key(&key.key_id.to_lowercase())
        .await
        .unwrap();
    assert_eq!(lower.key, key.key);

    // Another CSE, the source itself and another AE are no targets.
    let mut other = cse(&maf, &p, "other").await;
    assert_eq!(status(other.retrieve_key(&key.relative_id).await), 403);
    assert_eq!(status(ae.retrieve_key(&key.relative_id).await), 403);
    assert_eq!(status(in_cse.retrieve_key("00112233").await), 404);

    // Only the source updates or de-registers.
    assert_eq!(status(in_cse.deregister_key(&key.relative_id).await), 403);
    assert_eq!(
        status(
            other
                .update_key(&key.relative_id, Some(&["/id-other"]), None)
                .await
        ),
        403
    );
    let (_, targets) = ae
        .update_key(
            &key.relative_id,
            Some(&["//m2m.example.com/id-other"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(targets, vec!["//m2m.example.com/id-other".to_string()]);
    assert_eq!(status(in_cse.retrieve_key(&key.relative_id).await), 403);
    assert_eq!(
        other.retrieve_key(&key.relative_id).await.unwrap().key,
        key.key
    );

    ae.deregister_key(&key.key_id).await.unwrap();
    assert_eq!(status(other.retrieve_key(&key.relative_id).await), 404);
    assert_eq!(status(ae.deregister_key(&key.relative_id).await), 404);

    // Client registration update: only by that client, with a new expiration time.
    assert_eq!(status(in_cse.update_client(&reg.reg_id, None).await), 403);
    let later = ae.update_client(&reg.reg_id, None).await.unwrap();
    assert_eq!(later.reg_id, reg.reg_id);
    assert!(
        later.expiration_time >= reg.expiration_time,
        "{later:?} vs {reg:?}"
    );
    assert_eq!(status(ae.update_client("mcr-unknown", None).await), 404);

    // Client de-registration: only by that client; afterwards no key registration.
    assert_eq!(status(in_cse.deregister_client(&reg.reg_id).await), 403);
    ae.deregister_client(&reg.reg_id).await.unwrap();
    let mut ae_again = self::ae(&maf).await;
    assert_eq!(
        status(ae_again.register_key(12, &[IN_CSE], None).await),
        403
    );

    // Audit lines exist and name IDs only: never Kc, Km or the storage key.
    let text = log_text();
    assert!(text.contains("maf key registered"));
    assert!(text.contains("maf key retrieval granted"));
    assert!(text.contains("maf key retrieval refused"));
    assert!(text.contains("maf key de-registered"));
    assert!(!text.contains(&hex_of(key.key.expose())));
    assert!(!text.contains(KM_HEX));
    assert!(!text.contains(&hex_of(&[0x5au8; 32])));
}

/// The Key Retrieval answer names the KmID the source's client registration was made (or last
/// updated) over, whichever association the key itself came over; a source registered over its
/// certificate has none (TS-0003 clause 8.2.2.3: the target forms the Credential-ID from it).
#[tokio::test]
async fn the_retrieval_names_the_kmid_of_the_sources_client_registration() {
    logs();
    let p = pki();
    let (clock, _) = test_clock();
    const SECOND_KM_ID: &str = "ae1-second@maf.keys.example.net";
    let second_km = Secret::from_hex(&"43".repeat(32)).unwrap();
    let mut cfg = config(&p, &p.path("store"));
    cfg.km.push(KmRow {
        client_id: "/Sae1".into(),
        km_id: SECOND_KM_ID.into(),
        key: second_km.clone(),
    });
    let maf = RunningMaf::start(cfg, clock).await.unwrap();

    let mut first = ae(&maf).await;
    let reg = first.register_client(None).await.unwrap();
    let key = first.register_key(12, &[IN_CSE], None).await.unwrap();
    let mut in_cse = cse(&maf, &p, "in").await;
    let got = in_cse.retrieve_key(&key.key_id).await.unwrap();
    assert_eq!(got.source_km_id.as_deref(), Some(KM_ID));

    // The client updates its registration over its other Km: the registration, and so every key
    // under it, now lives under that KmID.
    let mut second = MafClient::connect_psk(&url(&maf), MAF_FQDN, SECOND_KM_ID, &second_km)
        .await
        .unwrap();
    second.update_client(&reg.reg_id, None).await.unwrap();
    let got = in_cse.retrieve_key(&key.key_id).await.unwrap();
    assert_eq!(got.source_km_id.as_deref(), Some(SECOND_KM_ID));

    // A source registered over its CSE-ID certificate: no KmID.
    in_cse.register_client(None).await.unwrap();
    let value = Secret::new(vec![0x77; 32]);
    let cse_key = in_cse
        .register_key_value(12, &["/id-other"], &value, None)
        .await
        .unwrap();
    let mut other = cse(&maf, &p, "other").await;
    let got = other.retrieve_key(&cse_key.key_id).await.unwrap();
    assert_eq!(got.source_id, IN_CSE);
    assert_eq!(got.source_km_id, None);
}

#[tokio::test]
async fn client_chosen_key_value() {
    logs();
    let p = pki();
    let (clock, _) = test_clock();
    let maf = RunningMaf::start(config(&p, &p.path("store")), clock)
        .await
        .unwrap();
    let mut ae = ae(&maf).await;
    ae.register_client(None).await.unwrap();
    let value = Secret::new(vec![0xc3; 32]);
    let key = ae
        .register_key_value(13, &[IN_CSE], &value, None)
        .await
        .unwrap();
    assert_ne!(key.relative_id, ae.connection_key().1);
    let mut in_cse = cse(&maf, &p, "in").await;
    assert_eq!(
        in_cse.retrieve_key(&key.relative_id).await.unwrap().key,
        value
    );
    // Too short a key is refused.
    assert_eq!(
        status(
            ae.register_key_value(13, &[IN_CSE], &Secret::new(vec![1; 8]), None)
                .await
        ),
        400
    );
    assert!(!log_text().contains(&hex_of(value.expose())));
}

#[tokio::test]
async fn expired_keys_and_clients_are_gone() {
    logs();
    let p = pki();
    let (clock, offset) = test_clock();
    let maf = RunningMaf::start(config(&p, &p.path("store")), clock)
        .await
        .unwrap();
    let mut ae = ae(&maf).await;
    ae.register_client(Some(&ts(100, &offset))).await.unwrap();
    assert_eq!(
        status(ae.register_key(12, &[IN_CSE], Some(&ts(-5, &offset))).await),
        400
    );
    let key = ae
        .register_key(12, &[IN_CSE], Some(&ts(10, &offset)))
        .await
        .unwrap();
    let mut in_cse = cse(&maf, &p, "in").await;
    assert_eq!(
        in_cse.retrieve_key(&key.relative_id).await.unwrap().key,
        key.key
    );
    offset.fetch_add(11, Ordering::SeqCst);
    assert_eq!(status(in_cse.retrieve_key(&key.relative_id).await), 404);
    // The client registration expires too.
    offset.fetch_add(100, Ordering::SeqCst);
    let mut ae2 = self::ae(&maf).await;
    assert_eq!(status(ae2.register_key(12, &[IN_CSE], None).await), 403);
}

#[tokio::test]
async fn keys_survive_a_restart() {
    logs();
    let p = pki();
    let storage = p.path("store");
    let (clock, _) = test_clock();
    let maf = RunningMaf::start(config(&p, &storage), Arc::clone(&clock))
        .await
        .unwrap();
    let mut ae = ae(&maf).await;
    ae.register_client(None).await.unwrap();
    let key = ae.register_key(12, &[IN_CSE], None).await.unwrap();
    drop(ae);
    maf.shutdown().await;

    let maf = RunningMaf::start(config(&p, &storage), clock)
        .await
        .unwrap();
    let mut in_cse = cse(&maf, &p, "in").await;
    let got = in_cse.retrieve_key(&key.key_id).await.unwrap();
    assert_eq!(got.key, key.key);
    // The value is not in the database file in clear.
    let db = std::fs::read(storage.join("maf.sqlite")).unwrap();
    assert!(!db.windows(32).any(|w| w == key.key.expose()));
}

/// Adding oneself to a key's targets in the database file does not hand out the key: the value is
/// bound to its whole registration.
#[tokio::test]
async fn a_key_row_edited_on_disk_does_not_decrypt() {
    logs();
    let p = pki();
    let storage = p.path("store");
    let (clock, _) = test_clock();
    let maf = RunningMaf::start(config(&p, &storage), clock)
        .await
        .unwrap();
    let mut ae = ae(&maf).await;
    ae.register_client(None).await.unwrap();
    let key = ae.register_key(12, &[IN_CSE], None).await.unwrap();
    let db = rusqlite::Connection::open(storage.join("maf.sqlite")).unwrap();
    db.execute(
        "UPDATE keys SET targets = ?1",
        [serde_json::json!([IN_CSE, "//m2m.example.com/id-other"]).to_string()],
    )
    .unwrap();
    let mut other = cse(&maf, &p, "other").await;
    let e = other.retrieve_key(&key.relative_id).await.unwrap_err();
    assert_eq!(e.status, Some(500), "{e}");
    assert!(!e.reason.contains(&hex_of(key.key.expose())));
    // Not for the rightful target either: the row as a whole is no longer the MAF's.
    let mut in_cse = cse(&maf, &p, "in").await;
    assert_eq!(status(in_cse.retrieve_key(&key.relative_id).await), 500);
    assert!(log_text().contains(&format!(
        "key {} does not decrypt",
        key.relative_id.to_lowercase()
    )));
}

/// A store whose key rows were sealed the old way (bound to their ID only) is refused at start.
#[tokio::test]
async fn a_store_with_key_rows_of_the_old_format_is_refused() {
    logs();
    let p = pki();
    let storage = p.path("store");
    let (clock, _) = test_clock();
    let maf = RunningMaf::start(config(&p, &storage), Arc::clone(&clock))
        .await
        .unwrap();
    let mut ae = ae(&maf).await;
    ae.register_client(None).await.unwrap();
    ae.register_key(12, &[IN_CSE], None).await.unwrap();
    drop(ae);
    maf.shutdown().await;
    let db = rusqlite::Connection::open(storage.join("maf.sqlite")).unwrap();
    db.execute_batch("PRAGMA user_version = 0").unwrap();
    drop(db);
    let err = RunningMaf::start(config(&p, &storage), Arc::clone(&clock))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("earlier MAF"), "{err}");
    assert!(err.contains("DELETE FROM keys"), "{err}");
    // Once the operator deleted them, the MAF starts.
    let db = rusqlite::Connection::open(storage.join("maf.sqlite")).unwrap();
    db.execute_batch("DELETE FROM keys").unwrap();
    drop(db);
    RunningMaf::start(config(&p, &storage), clock)
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_km_and_untrusted_certificates_are_refused() {
    logs();
    let p = pki();
    let (clock, _) = test_clock();
    let maf = RunningMaf::start(config(&p, &p.path("store")), clock)
        .await
        .unwrap();
    // A real Kc registered for the IN-CSE: what a rogue certificate for /id-in would be after.
    let mut ae = ae(&maf).await;
    ae.register_client(None).await.unwrap();
    let key = ae.register_key(12, &[IN_CSE], None).await.unwrap();
    let wrong = Secret::from_hex(&"99".repeat(32)).unwrap();
    assert!(MafClient::connect_psk(&url(&maf), MAF_FQDN, KM_ID, &wrong)
        .await
        .is_err());
    assert!(
        MafClient::connect_psk(&url(&maf), MAF_FQDN, "nobody@maf.keys.example.net", &wrong)
            .await
            .is_err()
    );
    // A certificate from another CA, for the same CSE-ID, is refused.
    let rogue_key = generate_key(KeyType::P256).unwrap();
    let v = Validity::days_from_now(1);
    let rogue_ca = make_ca("rogue", &rogue_key, v, Some(SP), &[]).unwrap();
    let leaf_key = generate_key(KeyType::P256).unwrap();
    let leaf = issue(
        &LeafName::Cse {
            cse_id: m2m_core::CseId::parse("/id-in").unwrap(),
            naming: m2m_security::certificates::CseNaming::new(SP, "/id-in").unwrap(),
        },
        &leaf_key,
        &rogue_ca,
        &rogue_key,
        v,
        &[],
    )
    .unwrap();
    std::fs::write(p.path("rogue.pem"), leaf.to_pem().unwrap()).unwrap();
    write_private(
        &p.path("rogue.key"),
        &leaf_key.private_key_to_pem_pkcs8().unwrap(),
    );
    let rogue = MafClient::connect_certificate(
        &url(&maf),
        MAF_FQDN,
        &p.path("rogue.pem"),
        &p.path("rogue.key"),
        &p.path("ca.pem"),
    )
    .await;
    match rogue {
        Err(e) => assert!(e.status.is_none(), "{e}"),
        // TLS 1.2: the server's refusal may surface at the first request, as a transport
        // failure (no HTTP answer), not as a refusal the MAF reasoned about.
        Ok(mut c) => {
            let e = c.retrieve_key(&key.key_id).await.unwrap_err();
            assert!(e.status.is_none(), "{e}");
        }
    }
    // The rightful IN-CSE still gets it.
    let mut in_cse = cse(&maf, &p, "in").await;
    assert_eq!(in_cse.retrieve_key(&key.key_id).await.unwrap().key, key.key);
    // A second PSK client registers under its own identity.
    let mut ae2 = MafClient::connect_psk(
        &url(&maf),
        MAF_FQDN,
        "ae2@maf.keys.example.net",
        &Secret::from_hex(&"42".repeat(32)).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        ae2.register_client(None).await.unwrap().client_id,
        "//m2m.example.com/Sae2"
    );
}

/// A revoked client certificate (TS-0003 clause 8.1.2.2, the CA's CRL in `crl`) gets no
/// association with the MAF; the other certificates of the same CA keep theirs.
#[tokio::test]
async fn a_revoked_certificate_gets_no_association() {
    logs();
    let p = pki();
    p.write_crl(&["other"]);
    let (clock, _) = test_clock();
    let maf = RunningMaf::start(config(&p, &p.path("store")), clock)
        .await
        .unwrap();
    let mut ae = ae(&maf).await;
    ae.register_client(None).await.unwrap();
    let key = ae.register_key(12, &[IN_CSE], None).await.unwrap();
    let revoked = MafClient::connect_certificate(
        &url(&maf),
        MAF_FQDN,
        &p.path("other.pem"),
        &p.path("other.key"),
        &p.path("ca.pem"),
    )
    .await;
    match revoked {
        Err(e) => assert!(e.status.is_none(), "{e}"),
        // TLS 1.2: the refusal may surface at the first request, as a transport failure.
        Ok(mut c) => {
            let e = c.register_client(None).await.unwrap_err();
            assert!(e.status.is_none(), "{e}");
        }
    }
    let mut in_cse = cse(&maf, &p, "in").await;
    assert_eq!(in_cse.retrieve_key(&key.key_id).await.unwrap().key, key.key);
    assert!(log_text().contains("certificate revoked"));
}

#[test]
fn config_file_must_be_private_and_parses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maf.toml");
    std::fs::write(&path, m2m_keyservices::maf::DEFAULT_CONFIG).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(MafConfig::from_file(&path)
            .unwrap_err()
            .contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let cfg = MafConfig::from_file(&path).unwrap();
    assert_eq!(cfg.fqdn, MAF_FQDN);
    // The default configuration activates no Km and no delegation: both are examples to fill in.
    assert!(cfg.km.is_empty());
    assert!(cfg.ttp.delegations.is_empty());
    assert_eq!(cfg.storage, dir.path().join("maf-data"));
    assert!(!format!("{cfg:?}").contains("00112233"));
    // The storage key file must be private too.
    let storage_key_file = cfg.storage_key_file.clone().unwrap();
    write_private(&storage_key_file, "ab".repeat(32).as_bytes());
    assert_eq!(cfg.load_keys().unwrap().storage_key.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&storage_key_file, std::fs::Permissions::from_mode(0o640))
            .unwrap();
        assert!(cfg.load_keys().is_err());
    }
}

#[test]
fn a_km_shorter_than_16_bytes_is_refused() {
    let base = "fqdn = \"maf.keys.example.net\"\nsp_fqdn = \"m2m.example.com\"\nlisten = \"127.0.0.1:0\"\nstorage = \"d\"\nstorage_key_file = \"k\"\n[[km]]\nclient_id = \"/Sae1\"\nkm_id = \"ae1@maf.keys.example.net\"\n";
    let err =
        MafConfig::from_toml_str(&format!("{base}key = \"{}\"\n", "ab".repeat(15))).unwrap_err();
    assert!(err.contains("shorter than 16 bytes"), "{err}");
    assert!(!err.contains(&"ab".repeat(15)), "{err}");
    MafConfig::from_toml_str(&format!("{base}key = \"{}\"\n", "ab".repeat(16))).unwrap();
}

#[tokio::test]
async fn a_readable_tls_private_key_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let p = pki();
    let (clock, _) = test_clock();
    std::fs::set_permissions(p.path("maf.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = RunningMaf::start(config(&p, &p.path("store")), clock)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("maf.key"), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn the_sweep_purges_expired_keys() {
    logs();
    let p = pki();
    let storage = p.path("store");
    let (clock, offset) = test_clock();
    let mut cfg = config(&p, &storage);
    cfg.sweep_interval = 1;
    let maf = RunningMaf::start(cfg, clock).await.unwrap();
    let mut ae = ae(&maf).await;
    ae.register_client(None).await.unwrap();
    ae.register_key(12, &[IN_CSE], Some(&ts(10, &offset)))
        .await
        .unwrap();
    let count = || {
        let db = rusqlite::Connection::open(storage.join("maf.sqlite")).unwrap();
        db.query_row("SELECT COUNT(*) FROM keys", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    assert_eq!(count(), 1);
    offset.fetch_add(11, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(count(), 0);
}

// ----- lifetimes: no key outlives its client registration ------------------------------------------

/// A refusal's status and reason.
fn refusal<T: std::fmt::Debug>(r: Result<T, m2m_keyservices::maf::MafError>) -> (u16, String) {
    let e = r.expect_err("expected a refusal");
    (e.status.expect("an HTTP status"), e.reason)
}

fn no_such_key() -> (u16, String) {
    (404, "no such key".into())
}

/// Key Registration and Key Registration Update stop at the client registration's expiry;
/// shortening the client registration shortens its keys, lengthening it does not lengthen them.
#[tokio::test]
async fn key_expiry_never_exceeds_the_clients() {
    logs();
    let p = pki();
    let (clock, offset) = test_clock();
    let maf = RunningMaf::start(config(&p, &p.path("store")), clock)
        .await
        .unwrap();
    let mut ae = ae(&maf).await;
    let t1000 = ts(1000, &offset);
    let reg = ae.register_client(Some(&t1000)).await.unwrap();
    // A [[km]] row carries no lifetime of its own: the time asked for is granted.
    assert_eq!(reg.expiration_time, t1000);

    // Asked for longer than the client lives, or the default (3600 s): both end with it.
    let kc = ae
        .register_key(12, &[IN_CSE], Some(&ts(5000, &offset)))
        .await
        .unwrap();
    assert_eq!(kc.expiration_time, t1000);
    let chosen = ae
        .register_key_value(13, &[IN_CSE], &Secret::new(vec![7; 32]), None)
        .await
        .unwrap();
    assert_eq!(chosen.expiration_time, t1000);
    // Shorter than the client: as asked; an update asking for more stops at the client's expiry.
    let t100 = ts(100, &offset);
    let short = ae
        .register_key_value(13, &[IN_CSE], &Secret::new(vec![8; 32]), Some(&t100))
        .await
        .unwrap();
    assert_eq!(short.expiration_time, t100);
    let (extended, _) = ae
        .update_key(&short.relative_id, None, Some(&ts(9000, &offset)))
        .await
        .unwrap();
    assert_eq!(extended, t1000);
    let mut in_cse = cse(&maf, &p, "in").await;
    assert_eq!(
        in_cse
            .retrieve_key(&kc.relative_id)
            .await
            .unwrap()
            .expiration_time,
        t1000
    );

    // The client registration shortened: every key of it with it, as the target sees them.
    let t300 = ts(300, &offset);
    let shorter = ae.update_client(&reg.reg_id, Some(&t300)).await.unwrap();
    assert_eq!(shorter.expiration_time, t300);
    for id in [&kc.relative_id, &chosen.relative_id, &short.relative_id] {
        let got = in_cse.retrieve_key(id).await.unwrap();
        assert_eq!(got.expiration_time, t300, "key {id}");
    }
    // Lengthened again: the keys keep their shorter life.
    ae.update_client(&reg.reg_id, Some(&ts(2000, &offset)))
        .await
        .unwrap();
    assert_eq!(
        in_cse
            .retrieve_key(&kc.relative_id)
            .await
            .unwrap()
            .expiration_time,
        t300
    );
    offset.fetch_add(301, Ordering::SeqCst);
    assert_eq!(
        refusal(in_cse.retrieve_key(&kc.relative_id).await),
        no_such_key()
    );
    assert!(log_text().contains("keys_shortened=3"));
}

/// A key belongs to the client registration it was registered under: once that has expired the
/// key is gone — no extension, no retrieval — even while the key's own expiry is later and the
/// client holds another, live registration.
#[tokio::test]
async fn an_expired_client_cannot_extend_its_key() {
    logs();
    let p = pki();
    let storage = p.path("store");
    let (clock, offset) = test_clock();
    let maf = RunningMaf::start(config(&p, &storage), clock)
        .await
        .unwrap();
    let mut ae = ae(&maf).await;
    let first = ae.register_client(Some(&ts(1000, &offset))).await.unwrap();
    let key = ae.register_key(12, &[IN_CSE], None).await.unwrap();
    // A second, longer registration of the same client does not carry the key along.
    let second = ae.register_client(Some(&ts(2000, &offset))).await.unwrap();
    let mut in_cse = cse(&maf, &p, "in").await;
    in_cse.retrieve_key(&key.relative_id).await.unwrap();
    // The first registration expires at +50 while the key's own expiry stays +1000 (as an earlier
    // MAF left such rows): the client's expiry is checked when the key is read, not by the sweep
    // (an hour away here).
    let db = rusqlite::Connection::open(storage.join("maf.sqlite")).unwrap();
    let until = chrono::Utc::now().timestamp() + offset.load(Ordering::SeqCst) + 50;
    db.execute(
        "UPDATE clients SET expires = ?1 WHERE reg_id = ?2",
        rusqlite::params![until, first.reg_id],
    )
    .unwrap();
    offset.fetch_add(51, Ordering::SeqCst);

    assert_eq!(
        refusal(
            ae.update_key(&key.relative_id, None, Some(&ts(1500, &offset)))
                .await
        ),
        no_such_key()
    );
    assert_eq!(
        refusal(in_cse.retrieve_key(&key.relative_id).await),
        no_such_key()
    );
    assert_eq!(
        refusal(ae.update_client(&first.reg_id, None).await),
        (404, "no such client registration".into())
    );
    assert!(log_text().contains("maf key purged: its client registration has expired"));
    // The client still registers keys under its live registration, and those end with it.
    let mut again = self::ae(&maf).await;
    let k2 = again
        .register_key(12, &[IN_CSE], Some(&ts(5000, &offset)))
        .await
        .unwrap();
    assert_eq!(k2.expiration_time, second.expiration_time);
}

/// De-registering a client removes its keys at once (not at the next sweep); another client's keys
/// stay.
#[tokio::test]
async fn a_deregistered_clients_keys_are_gone_at_once() {
    logs();
    let p = pki();
    let storage = p.path("store");
    let (clock, _) = test_clock();
    let maf = RunningMaf::start(config(&p, &storage), clock)
        .await
        .unwrap();
    let mut ae = ae(&maf).await;
    let reg = ae.register_client(None).await.unwrap();
    let kc = ae.register_key(12, &[IN_CSE], None).await.unwrap();
    let chosen = ae
        .register_key_value(13, &[IN_CSE], &Secret::new(vec![9; 32]), None)
        .await
        .unwrap();
    let mut ae2 = MafClient::connect_psk(
        &url(&maf),
        MAF_FQDN,
        "ae2@maf.keys.example.net",
        &Secret::from_hex(&"42".repeat(32)).unwrap(),
    )
    .await
    .unwrap();
    ae2.register_client(None).await.unwrap();
    let other = ae2.register_key(12, &[IN_CSE], None).await.unwrap();
    let mut in_cse = cse(&maf, &p, "in").await;
    for id in [&kc.relative_id, &chosen.relative_id, &other.relative_id] {
        in_cse.retrieve_key(id).await.unwrap();
    }

    ae.deregister_client(&reg.reg_id).await.unwrap();
    let rows = |source: &str| {
        let db = rusqlite::Connection::open(storage.join("maf.sqlite")).unwrap();
        db.query_row(
            "SELECT COUNT(*) FROM keys WHERE source_id = ?1",
            [source],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    assert_eq!(rows("//m2m.example.com/Sae1"), 0, "deleted with the client");
    for id in [&kc.relative_id, &chosen.relative_id] {
        assert_eq!(refusal(in_cse.retrieve_key(id).await), no_such_key());
    }
    assert_eq!(
        refusal(ae.update_key(&kc.relative_id, None, None).await),
        no_such_key()
    );
    assert_eq!(
        in_cse.retrieve_key(&other.relative_id).await.unwrap().key,
        other.key
    );
    assert_eq!(rows("//m2m.example.com/Sae2"), 1);
    assert!(log_text().contains("maf client de-registered with its keys and credentials"));
}

/// maf.sqlite and its -wal/-shm are 0600 in a 0700 directory: created so, tightened when left
/// readable, refused when writable by others.
#[tokio::test]
async fn the_store_files_are_private() {
    use m2m_security::data_files::mode_of;
    use std::os::unix::fs::PermissionsExt;
    logs();
    let p = pki();
    let storage = p.path("data/maf");
    let (clock, _) = test_clock();
    let files = ["maf.sqlite", "maf.sqlite-wal", "maf.sqlite-shm"].map(|f| storage.join(f));
    {
        let maf = RunningMaf::start(config(&p, &storage), Arc::clone(&clock))
            .await
            .unwrap();
        let mut ae = ae(&maf).await;
        ae.register_client(None).await.unwrap();
        ae.register_key(12, &[IN_CSE], None).await.unwrap();
        assert_eq!(mode_of(&p.path("data")).unwrap(), 0o700);
        assert_eq!(mode_of(&storage).unwrap(), 0o700);
        for f in &files {
            assert_eq!(mode_of(f).unwrap(), 0o600, "{}", f.display());
        }
    }
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set(&storage, 0o755);
    set(&files[0], 0o644);
    let maf = RunningMaf::start(config(&p, &storage), Arc::clone(&clock))
        .await
        .unwrap();
    assert_eq!(mode_of(&storage).unwrap(), 0o700);
    assert_eq!(mode_of(&files[0]).unwrap(), 0o600);
    assert!(log_text().contains("was accessible by group or others (mode 0644); set to 0600"));
    drop(maf);
    set(&files[0], 0o664);
    let err = RunningMaf::start(config(&p, &storage), clock)
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains("maf.sqlite is writable by group or others"),
        "{err}"
    );
    assert!(err.contains("chmod 600"), "{err}");
}
