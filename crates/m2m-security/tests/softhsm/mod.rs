//! The SoftHSM token the PKCS#11 tests of this crate share within one test binary: a PKCS#11
//! module is initialized once per process, with the SOFTHSM2_CONF of that moment.

#![allow(dead_code)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::Session;
use m2m_security::secure_environment::pkcs11::TokenConfig;

/// A session of the test's own on the token (through a context of its own, sharing the
/// process's module): a third party beside the token under test.
pub fn own_session() -> Session {
    let ctx = Pkcs11::new(MODULE).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == TOKEN)
        .unwrap();
    ctx.open_ro_session(slot).unwrap()
}
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const TOKEN: &str = "m2m-test";
pub const PIN: &str = "4711-pin";

/// The token's directory and configuration, made once; None when SoftHSM is missing outside CI.
pub fn token() -> Option<&'static TokenConfig> {
    static TOKEN_CFG: OnceLock<Option<(tempfile::TempDir, TokenConfig)>> = OnceLock::new();
    TOKEN_CFG
        .get_or_init(|| {
            if !Path::new(MODULE).exists() || Command::new("softhsm2-util").arg("-v").output().is_err() {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("SoftHSM2 is not installed, and CI=true: .ci/run must install softhsm2");
                }
                eprintln!("\n!!!!!!!!!! SKIPPED: SoftHSM2 (softhsm2) is not installed; the PKCS#11 tests need it. In CI it is mandatory. !!!!!!!!!!\n");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let tokens = dir.path().join("tokens");
            std::fs::create_dir(&tokens).unwrap();
            let conf = dir.path().join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
            )
            .unwrap();
            // Set before any test loads the module (they all come through here first).
            std::env::set_var("SOFTHSM2_CONF", &conf);
            let out = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", "so-4711"])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let pin_file = dir.path().join("pin");
            write_private(&pin_file, PIN);
            let cfg = TokenConfig { module: MODULE.into(), token: TOKEN.into(), pin_file };
            Some((dir, cfg))
        })
        .as_ref()
        .map(|(_, cfg)| cfg)
}

pub fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{text}").unwrap();
}
