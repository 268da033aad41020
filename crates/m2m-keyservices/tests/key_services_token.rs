//! The MAF and the MEF with their keys in a PKCS#11 token (SoftHSM2, issue 18): Km and Kpm looked
//! up in the token at each handshake, the storage keys derived inside it, and `required_level`
//! refusing keys kept in software ("the MAF refuses to run its master keys in the software back
//! end when told to").
//!
//! One token for the whole file: a PKCS#11 module is initialized once per process, with the
//! SOFTHSM2_CONF of that moment.

mod common;

use common::{logs, write_private};
use m2m_keyservices::maf::server::system_clock as clock;
use m2m_keyservices::maf::{MafClient, MafConfig, RunningMaf};
use m2m_keyservices::mef::{EnrolmentRequest, Mef, MefClient, MefConfig};
use m2m_security::credentials::{KpsaId, PskEntry, Secret};
use m2m_security::secure_environment::pkcs11::{Pkcs11Token, TokenConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "maf-test";
const PIN: &str = "2718-maf";
const SP: &str = "m2m.example.com";
const MAF_FQDN: &str = "maf.keys.example.net";
const KM_ID: &str = "ae7@maf.keys.example.net";
const KM_HEX: &str = "a1a2a3a4b1b2b3b4c1c2c3c4d1d2d3d4e1e2e3e4f1f2f3f40102030411121314";
const MEF_FQDN: &str = "mef.keys.example.net";
const KPM_ID: &str = "0A0B0C0D0E0F00112233445566778877@mef.keys.example.net";
const KPM_HEX: &str = "9d9d9d9d8c8c8c8c7b7b7b7b6a6a6a6a59595959484848483737373726262626";
const ENROLEE: &str = "/id-asn7";

/// The token (directory, PIN file), with Km of `/Sae7` and the MAF's storage secret in it; None
/// when SoftHSM is missing outside CI.
fn token() -> Option<&'static (tempfile::TempDir, TokenConfig)> {
    static TOKEN_CFG: OnceLock<Option<(tempfile::TempDir, TokenConfig)>> = OnceLock::new();
    TOKEN_CFG
        .get_or_init(|| {
            if !Path::new(MODULE).exists() {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("SoftHSM2 is not installed, and CI=true: .ci/run must install softhsm2");
                }
                eprintln!("\n!!!!!!!!!! SKIPPED: SoftHSM2 (softhsm2) is not installed; the MAF's PKCS#11 tests need it. In CI it is mandatory. !!!!!!!!!!\n");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let tokens = dir.path().join("tokens");
            std::fs::create_dir(&tokens).unwrap();
            let conf = dir.path().join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                    tokens.display()
                ),
            )
            .unwrap();
            // Before any test loads the module (they all come through here first).
            std::env::set_var("SOFTHSM2_CONF", &conf);
            let out = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", TOKEN, "--pin", PIN])
                .args(["--so-pin", "so-2718"])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .expect("softhsm2-util");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let pin_file = dir.path().join("pin");
            write_private(&pin_file, PIN.as_bytes());
            let cfg = TokenConfig {
                module: MODULE.into(),
                token: TOKEN.into(),
                pin_file,
            };
            let token = Pkcs11Token::open(&cfg).unwrap();
            token
                .import_psk(&PskEntry {
                    entity_id: Some("/Sae7".into()),
                    kpsa_id: KpsaId::parse(KM_ID).unwrap(),
                    key: Secret::from_hex(KM_HEX).unwrap(),
                })
                .unwrap();
            token.generate_secret("maf-storage-key").unwrap();
            token
                .import_psk(&PskEntry {
                    entity_id: Some(ENROLEE.into()),
                    kpsa_id: KpsaId::parse(KPM_ID).unwrap(),
                    key: Secret::from_hex(KPM_HEX).unwrap(),
                })
                .unwrap();
            token.generate_secret("mef-storage-key").unwrap();
            Some((dir, cfg))
        })
        .as_ref()
}

/// A MAF configuration with every key in the token (`extra` appended to its top level).
fn config(dir: &Path, token: &TokenConfig, extra: &str) -> Result<MafConfig, String> {
    let text = format!(
        "fqdn = \"{MAF_FQDN}\"\nsp_fqdn = \"{SP}\"\nlisten = \"127.0.0.1:0\"\nstorage = \"maf-data\"\n\
         {extra}\n[pkcs11]\nmodule = {:?}\ntoken = {:?}\npin_file = {:?}\n",
        token.module.display().to_string(),
        token.token,
        token.pin_file.display().to_string(),
    );
    let path = dir.join("maf.toml");
    write_private(&path, text.as_bytes());
    MafConfig::from_file(&path)
}

#[tokio::test]
async fn a_maf_serves_a_km_kept_in_the_token_and_keeps_its_store_under_a_token_key() {
    let Some((_, token)) = token() else { return };
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), token, "required_level = \"token\"").unwrap();
    assert!(cfg.km.is_empty() && cfg.storage_key_file.is_none() && cfg.keystore.is_none());
    let maf = RunningMaf::start(cfg, clock()).await.unwrap();
    let url = format!("https://{}", maf.addr);
    let mut client =
        MafClient::connect_psk(&url, MAF_FQDN, KM_ID, &Secret::from_hex(KM_HEX).unwrap())
            .await
            .unwrap();
    let reg = client.register_client(None).await.unwrap();
    assert_eq!(
        reg.client_id, "//m2m.example.com/Sae7",
        "bound to the entity the token names"
    );
    // Another key under the KmID opens nothing.
    let wrong = Secret::from_hex(&"11".repeat(32)).unwrap();
    assert!(MafClient::connect_psk(&url, MAF_FQDN, KM_ID, &wrong)
        .await
        .is_err());
    // The store opens again after a restart: its key is derived in the token, the same each time.
    drop(client);
    maf.shutdown().await;
    let cfg = config(dir.path(), token, "required_level = \"token\"").unwrap();
    let maf = RunningMaf::start(cfg, clock()).await.unwrap();
    let mut client = MafClient::connect_psk(
        &format!("https://{}", maf.addr),
        MAF_FQDN,
        KM_ID,
        &Secret::from_hex(KM_HEX).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        client.register_client(None).await.unwrap().client_id,
        "//m2m.example.com/Sae7"
    );
    let logged = common::log_text_lowercase();
    assert!(!logged.contains(KM_HEX) && !logged.contains(&PIN.to_lowercase()));
}

#[test]
fn a_required_level_refuses_keys_kept_in_software() {
    let Some((_, token)) = token() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key_file: PathBuf = dir.path().join("maf-storage.key");
    write_private(&key_file, "5a".repeat(32).as_bytes());
    for (extra, what) in [
        (
            "required_level = \"token\"\nstorage_key_file = \"maf-storage.key\"",
            "storage_key_file",
        ),
        (
            "required_level = \"token\"\nkeystore = \"maf.keystore\"\nkey_file = \"k\"",
            "the keystore",
        ),
        (
            "required_level = \"token\"\n[[km]]\nclient_id = \"/Sae1\"\nkm_id = \"ae1@maf.keys.example.net\"\nkey = \"000102030405060708090a0b0c0d0e0f\"",
            "[[km]] rows",
        ),
    ] {
        let e = config(dir.path(), token, extra).unwrap_err();
        assert!(e.contains(what) && e.contains("level software"), "{what}: {e}");
    }
    // SoftHSM is no hardware slot.
    let cfg = config(dir.path(), token, "required_level = \"hardware\"").unwrap();
    let e = cfg.load_keys().unwrap_err();
    assert!(e.contains("is at level token"), "{e}");
}

/// A MEF configuration with every key in the token (`extra` appended to its top level).
fn mef_config(dir: &Path, token: &TokenConfig, extra: &str) -> Result<MefConfig, String> {
    let text = format!(
        "fqdn = \"{MEF_FQDN}\"\nsp_fqdn = \"{SP}\"\nlisten = \"127.0.0.1:0\"\nstorage = \"enrolments.json\"\n\
         {extra}\n[[targets]]\nid = \"{MAF_FQDN}\"\nsuids = [11]\n\n[pkcs11]\nmodule = {:?}\ntoken = {:?}\npin_file = {:?}\n",
        token.module.display().to_string(),
        token.token,
        token.pin_file.display().to_string(),
    );
    let path = dir.join("mef.toml");
    write_private(&path, text.as_bytes());
    MefConfig::load(&path)
}

#[tokio::test]
async fn a_mef_enrols_on_a_kpm_kept_in_the_token() {
    let Some((_, token)) = token() else { return };
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cfg = mef_config(dir.path(), token, "required_level = \"token\"").unwrap();
    assert!(cfg.kpm.is_empty() && cfg.storage_key.is_none() && cfg.keystore.is_none());
    let running = Mef::new(cfg).unwrap().start().await.unwrap();
    let addr = running.addr.to_string();
    let mut c =
        MefClient::connect_psk(&addr, MEF_FQDN, KPM_ID, &Secret::from_hex(KPM_HEX).unwrap())
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
    assert_eq!(e.enrolee_id, ENROLEE, "the enrolee the token's entry names");
    assert_eq!(e.ke.len(), 32);
    assert!(
        !dir.path().join("mef-storage.key").exists(),
        "no key file: the token derives it"
    );
    let wrong = Secret::from_hex(&"22".repeat(32)).unwrap();
    assert!(MefClient::connect_psk(&addr, MEF_FQDN, KPM_ID, &wrong)
        .await
        .is_err());
    for (extra, what) in [
        (
            "required_level = \"token\"\nstorage_key = \"mef-storage.key\"",
            "storage_key",
        ),
        (
            "required_level = \"token\"\nkeystore = \"mef.keystore\"\nkey_file = \"k\"",
            "the keystore",
        ),
    ] {
        let e = mef_config(dir.path(), token, extra).unwrap_err();
        assert!(
            e.contains(what) && e.contains("level software"),
            "{what}: {e}"
        );
    }
}
