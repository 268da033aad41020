//! MAF and MEF keys held in the software secure environment (a `SoftwareKeystore` file): Km, Kpm and the
//! storage keys come from the keystore only; a wrong keystore key stops the service at start; no key
//! reaches the logs.

mod common;

use common::log_text_lowercase as log_text;
use common::{logs, write_private};
use m2m_keyservices::maf::server::system_clock as clock;
use m2m_keyservices::maf::{MafClient, MafConfig, RunningMaf};
use m2m_keyservices::mef::{EnrolmentRequest, Mef, MefClient, MefConfig};
use m2m_security::credentials::{KpsaId, PskEntry, Secret};
use m2m_security::secure_environment::{create_key_file, KdfParams, KeySource, SoftwareKeystore};
use std::path::Path;

const SP: &str = "m2m.example.com";
const MAF_FQDN: &str = "maf.keys.example.net";
const MEF_FQDN: &str = "mef.keys.example.net";
const KM_ID: &str = "ae9@maf.keys.example.net";
const KM_HEX: &str = "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc";
const MAF_STORAGE_HEX: &str = "5151515151515151a2a2a2a2a2a2a2a2b3b3b3b3b3b3b3b3c4c4c4c4c4c4c4c4";
const KPM_ID: &str = "0A0B0C0D0E0F00112233445566778899@mef.keys.example.net";
const KPM_HEX: &str = "7e7e7e7e0d0d0d0d9a9a9a9a1b1b1b1b2c2c2c2c3d3d3d3d4e4e4e4e5f5f5f5f";
const MEF_STORAGE_HEX: &str = "e1e2e3e4e5e6e7e8f1f2f3f4f5f6f7f8a1a2a3a4a5a6a7a8b1b2b3b4b5b6b7b8";
const ENROLEE: &str = "/id-asn9";

fn assert_no_key_in_logs() {
    let logs = log_text();
    for h in [KM_HEX, MAF_STORAGE_HEX, KPM_HEX, MEF_STORAGE_HEX] {
        assert!(!logs.contains(h), "key material in the logs");
        assert!(!logs.contains(&h[..16]), "key material in the logs");
    }
}

// ----- set-up --------------------------------------------------------------------------------------

/// A keystore at `dir/name.keystore`, opened by the key file `dir/name.key`, holding one PSK and one
/// secret.
fn make_keystore(dir: &Path, name: &str, psk: (&str, &str, &str), secret: (&str, &str)) {
    let key_file = dir.join(format!("{name}.key"));
    create_key_file(&key_file).unwrap();
    let mut ks = SoftwareKeystore::create(
        dir.join(format!("{name}.keystore")),
        KeySource::KeyFile(key_file),
    )
    .unwrap();
    ks.add_psk(PskEntry {
        entity_id: Some(psk.0.into()),
        kpsa_id: KpsaId::parse(psk.1).unwrap(),
        key: Secret::from_hex(psk.2).unwrap(),
    })
    .unwrap();
    ks.set_secret(secret.0, Secret::from_hex(secret.1).unwrap())
        .unwrap();
    ks.save().unwrap();
}

/// A MAF configuration file without [[km]] rows nor storage_key_file: every key is in the keystore.
fn maf_config_text(key_file: &str) -> String {
    format!(
        "fqdn = \"{MAF_FQDN}\"\nsp_fqdn = \"{SP}\"\nlisten = \"127.0.0.1:0\"\nstorage = \"maf-data\"\n\
         keystore = \"maf.keystore\"\nkey_file = \"{key_file}\"\n"
    )
}

fn maf_config(dir: &Path, text: &str) -> MafConfig {
    let path = dir.join("maf.toml");
    write_private(&path, text.as_bytes());
    MafConfig::from_file(&path).unwrap()
}

fn mef_config_text(key_file: &str) -> String {
    format!(
        "fqdn = \"{MEF_FQDN}\"\nsp_fqdn = \"{SP}\"\nlisten = \"127.0.0.1:0\"\nstorage = \"enrolments.json\"\n\
         keystore = \"mef.keystore\"\nkey_file = \"{key_file}\"\n\n[[targets]]\nid = \"{MAF_FQDN}\"\nsuids = [11]\n"
    )
}

fn mef_config(dir: &Path, text: &str) -> MefConfig {
    let path = dir.join("mef.toml");
    std::fs::write(&path, text).unwrap();
    MefConfig::load(&path).unwrap()
}

// ----- MAF -----------------------------------------------------------------------------------------

#[tokio::test]
async fn maf_serves_a_client_on_a_km_held_only_in_the_keystore() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    make_keystore(
        dir.path(),
        "maf",
        ("/Sae9", KM_ID, KM_HEX),
        ("maf-storage-key", MAF_STORAGE_HEX),
    );
    let cfg = maf_config(dir.path(), &maf_config_text("maf.key"));
    assert!(cfg.km.is_empty() && cfg.storage_key_file.is_none());
    let maf = RunningMaf::start(cfg, clock()).await.unwrap();

    let mut client = MafClient::connect_psk(
        &format!("https://{}", maf.addr),
        MAF_FQDN,
        KM_ID,
        &Secret::from_hex(KM_HEX).unwrap(),
    )
    .await
    .unwrap();
    let reg = client.register_client(None).await.unwrap();
    assert_eq!(reg.client_id, "//m2m.example.com/Sae9");

    // Another Km is refused.
    assert!(MafClient::connect_psk(
        &format!("https://{}", maf.addr),
        MAF_FQDN,
        KM_ID,
        &Secret::from_hex(&"11".repeat(32)).unwrap(),
    )
    .await
    .is_err());

    // The store is encrypted under the keystore's storage key: a restart on the same keystore reads it.
    drop(client);
    maf.shutdown().await;
    let cfg = maf_config(dir.path(), &maf_config_text("maf.key"));
    let _again = RunningMaf::start(cfg, clock()).await.unwrap();
    assert!(log_text().contains("maf keys loaded"));
    assert_no_key_in_logs();
}

#[tokio::test]
async fn maf_config_rows_come_before_the_keystore() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    make_keystore(
        dir.path(),
        "maf",
        ("/Sae9", KM_ID, KM_HEX),
        ("maf-storage-key", MAF_STORAGE_HEX),
    );
    // A row with the same KmID but another client and key wins.
    let text = format!(
        "{}\n[[km]]\nclient_id = \"/Srow\"\nkm_id = \"{KM_ID}\"\nkey = \"{}\"\n",
        maf_config_text("maf.key"),
        "24".repeat(32)
    );
    let cfg = maf_config(dir.path(), &text);
    let keys = cfg.load_keys().unwrap();
    assert_eq!(keys.km.len(), 1);
    assert_eq!(keys.km[0].client_id, "/Srow");
    assert_eq!(keys.km[0].key, Secret::from_hex(&"24".repeat(32)).unwrap());
    assert!(!format!("{keys:?}").contains("2424"));
}

#[tokio::test]
async fn maf_with_a_wrong_keystore_key_file_fails_at_start() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    make_keystore(
        dir.path(),
        "maf",
        ("/Sae9", KM_ID, KM_HEX),
        ("maf-storage-key", MAF_STORAGE_HEX),
    );
    create_key_file(&dir.path().join("other.key")).unwrap();
    let cfg = maf_config(dir.path(), &maf_config_text("other.key"));
    let err = RunningMaf::start(cfg, clock())
        .await
        .err()
        .expect("refused");
    assert!(err.contains("maf.keystore"), "{err}");
    assert!(err.contains("wrong key"), "{err}");
    // A missing key file names the file.
    let cfg = maf_config(dir.path(), &maf_config_text("missing.key"));
    let err = RunningMaf::start(cfg, clock())
        .await
        .err()
        .expect("refused");
    assert!(err.contains("missing.key"), "{err}");
}

#[test]
fn maf_storage_key_has_exactly_one_source() {
    let dir = tempfile::tempdir().unwrap();
    make_keystore(
        dir.path(),
        "maf",
        ("/Sae9", KM_ID, KM_HEX),
        ("maf-storage-key", MAF_STORAGE_HEX),
    );
    write_private(&dir.path().join("storage.key"), "ab".repeat(32).as_bytes());
    // Both the file and the keystore secret: refused.
    let text = format!(
        "{}storage_key_file = \"storage.key\"\n",
        maf_config_text("maf.key")
    );
    let err = maf_config(dir.path(), &text).load_keys().unwrap_err();
    assert!(err.contains("two storage keys"), "{err}");
    assert!(err.contains("maf-storage-key"), "{err}");
    // Neither: refused when parsing.
    let err = MafConfig::from_toml_str(&format!(
        "fqdn = \"{MAF_FQDN}\"\nsp_fqdn = \"{SP}\"\nlisten = \"127.0.0.1:0\"\nstorage = \"d\"\n"
    ))
    .unwrap_err();
    assert!(err.contains("no storage key"), "{err}");
    // A keystore without the secret and no file: refused when the keys are loaded.
    make_keystore(
        dir.path(),
        "bare",
        ("/Sae9", KM_ID, KM_HEX),
        ("other", "00"),
    );
    let text = maf_config_text("bare.key").replace("maf.keystore", "bare.keystore");
    let err = maf_config(dir.path(), &text).load_keys().unwrap_err();
    assert!(err.contains("no storage key"), "{err}");
    // key_file and passphrase_env together, or a key_file without keystore: refused.
    let text = format!("{}passphrase_env = \"X\"\n", maf_config_text("maf.key"));
    assert!(MafConfig::from_toml_str(&text)
        .unwrap_err()
        .contains("exactly one of key_file and passphrase_env"));
    let text = "fqdn = \"maf.keys.example.net\"\nsp_fqdn = \"m2m.example.com\"\nlisten = \"x\"\nstorage = \"d\"\nstorage_key_file = \"k\"\nkey_file = \"k\"\n";
    assert!(MafConfig::from_toml_str(text)
        .unwrap_err()
        .contains("need keystore"));
}

#[test]
fn default_configs_show_the_keystore_options_commented_out() {
    for text in [
        m2m_keyservices::maf::DEFAULT_CONFIG,
        m2m_keyservices::mef::DEFAULT_CONFIG,
    ] {
        for option in ["# keystore = ", "# key_file = ", "# passphrase_env = "] {
            assert!(text.contains(option), "{option}");
        }
    }
    assert!(m2m_keyservices::maf::DEFAULT_CONFIG.contains("maf-storage-key"));
    assert!(m2m_keyservices::mef::DEFAULT_CONFIG.contains("mef-storage-key"));
    MafConfig::from_toml_str(m2m_keyservices::maf::DEFAULT_CONFIG).unwrap();
    MefConfig::from_toml_str(m2m_keyservices::mef::DEFAULT_CONFIG).unwrap();
}

// ----- MEF -----------------------------------------------------------------------------------------

#[tokio::test]
async fn mef_enrols_on_a_kpm_held_only_in_the_keystore() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    make_keystore(
        dir.path(),
        "mef",
        (ENROLEE, KPM_ID, KPM_HEX),
        ("mef-storage-key", MEF_STORAGE_HEX),
    );
    let cfg = mef_config(dir.path(), &mef_config_text("mef.key"));
    assert!(cfg.kpm.is_empty() && cfg.storage_key.is_none());
    let mef = Mef::new(cfg).unwrap();
    let running = mef.start().await.unwrap();
    let addr = running.addr;

    let mut c = MefClient::connect_psk(
        &addr.to_string(),
        MEF_FQDN,
        KPM_ID,
        &Secret::from_hex(KPM_HEX).unwrap(),
    )
    .await
    .unwrap();
    let e = c
        .enrol(&EnrolmentRequest {
            indications: vec!["MAF".into()],
            maf_id: Some(MAF_FQDN.into()),
            targets: vec![],
        })
        .await
        .unwrap();
    assert_eq!(e.enrolee_id, ENROLEE);
    assert_eq!(e.ke.len(), 32);
    // No storage key file was created: the key is the keystore's.
    assert!(!dir.path().join("mef-storage.key").exists());
    assert!(dir.path().join("enrolments.json").exists());
    let ke_hex = hex::encode(e.ke.expose());
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!log_text().contains(&ke_hex[..16]));
    assert_no_key_in_logs();
}

#[tokio::test]
async fn mef_with_a_wrong_keystore_key_file_fails_at_start() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    make_keystore(
        dir.path(),
        "mef",
        (ENROLEE, KPM_ID, KPM_HEX),
        ("mef-storage-key", MEF_STORAGE_HEX),
    );
    create_key_file(&dir.path().join("other.key")).unwrap();
    let cfg = mef_config(dir.path(), &mef_config_text("other.key"));
    let err = Mef::new(cfg).err().expect("refused");
    assert!(err.contains("mef.keystore"), "{err}");
    assert!(err.contains("wrong key"), "{err}");
    // Both storage key sources: refused.
    let text = format!("storage_key = \"s.key\"\n{}", mef_config_text("mef.key"));
    let err = Mef::new(mef_config(dir.path(), &text))
        .err()
        .expect("refused");
    assert!(err.contains("two storage keys"), "{err}");
    // A keystore PSK without entity_id is refused (the MEF needs the enrolee ID).
    let key_file = dir.path().join("anon.key");
    create_key_file(&key_file).unwrap();
    let mut ks = SoftwareKeystore::create(
        dir.path().join("anon.keystore"),
        KeySource::KeyFile(key_file),
    )
    .unwrap();
    ks.add_psk(PskEntry {
        entity_id: None,
        kpsa_id: KpsaId::parse(KPM_ID).unwrap(),
        key: Secret::from_hex(KPM_HEX).unwrap(),
    })
    .unwrap();
    ks.set_secret(
        "mef-storage-key",
        Secret::from_hex(MEF_STORAGE_HEX).unwrap(),
    )
    .unwrap();
    ks.save().unwrap();
    let text = mef_config_text("anon.key").replace("mef.keystore", "anon.keystore");
    let err = Mef::new(mef_config(dir.path(), &text))
        .err()
        .expect("refused");
    assert!(err.contains("no entity_id"), "{err}");
    assert_no_key_in_logs();
}

#[tokio::test]
async fn maf_opens_a_passphrase_keystore_from_passphrase_env() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let pass = Secret::from_slice(b"correct horse battery staple");
    let mut ks = SoftwareKeystore::create_with_kdf(
        dir.path().join("maf.keystore"),
        KeySource::Passphrase(pass),
        KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        },
    )
    .unwrap();
    ks.add_psk(PskEntry {
        entity_id: Some("/Sae9".into()),
        kpsa_id: KpsaId::parse(KM_ID).unwrap(),
        key: Secret::from_hex(KM_HEX).unwrap(),
    })
    .unwrap();
    ks.set_secret(
        "maf-storage-key",
        Secret::from_hex(MAF_STORAGE_HEX).unwrap(),
    )
    .unwrap();
    ks.save().unwrap();
    let base = format!(
        "fqdn = \"{MAF_FQDN}\"\nsp_fqdn = \"{SP}\"\nlisten = \"127.0.0.1:0\"\nstorage = \"maf-data\"\n\
         keystore = \"maf.keystore\"\n"
    );
    // An unset variable is named in the error.
    let cfg = maf_config(
        dir.path(),
        &format!("{base}passphrase_env = \"M2M_KSE_TEST_UNSET\"\n"),
    );
    let err = RunningMaf::start(cfg, clock())
        .await
        .err()
        .expect("refused");
    assert!(err.contains("M2M_KSE_TEST_UNSET is not set"), "{err}");
    std::env::set_var("M2M_KSE_TEST_PASSPHRASE", "correct horse battery staple");
    let cfg = maf_config(
        dir.path(),
        &format!("{base}passphrase_env = \"M2M_KSE_TEST_PASSPHRASE\"\n"),
    );
    let keys = cfg.load_keys().unwrap();
    assert_eq!(keys.km.len(), 1);
    assert_eq!(keys.km[0].client_id, "/Sae9");
    assert_eq!(keys.storage_key, Secret::from_hex(MAF_STORAGE_HEX).unwrap());
    assert!(!log_text().contains("correct horse"));
}
