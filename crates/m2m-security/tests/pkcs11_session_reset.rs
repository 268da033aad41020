//! A token's session lost under a running process (the token reset, removed and put back, the
//! HSM restarted) is opened again and logged in again at the next use: the CSE keeps its keys
//! without a restart. The process is logged out of the token from the side (its sessions lose
//! their login and private session objects, as at a reset); HMAC inside the token, PSK hand-out
//! (under the new session's wrapping key) and the listing go on with the same results.
//!
//! A test binary of its own: logging the process out would cut the other PKCS#11 tests'
//! sessions too.

use m2m_security::credentials::{KpsaId, PskEntry, Secret};
use m2m_security::secure_environment::pkcs11::{Pkcs11Error, Pkcs11Token};
use m2m_security::secure_environment::SecureEnvironment;

mod softhsm;
use softhsm::{own_session, token};

const KPSA_ID: &str = "reset@in.m2m.example.com";

/// Logs this process out of the token from a session of its own (C_Logout ends the login of
/// every session of the application, and the private session objects with it): what a token
/// reset does to a running process.
fn reset_sessions() {
    own_session().logout().unwrap();
}

#[test]
fn a_lost_session_is_opened_again_and_the_keys_keep_working() {
    let Some(cfg) = token() else { return };
    let token = Pkcs11Token::open(cfg).unwrap();
    token.generate_secret("reset-hmac").unwrap();
    token
        .import_psk(&PskEntry {
            entity_id: Some("Creset".into()),
            kpsa_id: KpsaId::parse(KPSA_ID).unwrap(),
            key: Secret::from_slice(&[0x42; 16]),
        })
        .unwrap();
    let mac = token.hmac_sha256("reset-hmac", b"door").unwrap();
    let listed = token.list().unwrap();
    assert_eq!(token.psk(KPSA_ID).unwrap().key.expose(), &[0x42; 16]);

    reset_sessions();
    assert_eq!(token.hmac_sha256("reset-hmac", b"door").unwrap(), mac);
    reset_sessions();
    // The PSK found before: its handle and the wrapping key of the old session are gone.
    assert_eq!(token.psk(KPSA_ID).unwrap().key.expose(), &[0x42; 16]);
    reset_sessions();
    assert_eq!(token.list().unwrap(), listed);
    reset_sessions();
    assert_eq!(
        token.derive_key("reset-hmac", b"door").unwrap().expose(),
        &mac
    );

    // A session that cannot be opened again (the PIN file gone): a clear error, no panic, and
    // no key.
    let moved = cfg.pin_file.with_extension("moved");
    std::fs::rename(&cfg.pin_file, &moved).unwrap();
    reset_sessions();
    let e = token.hmac_sha256("reset-hmac", b"door").unwrap_err();
    assert!(matches!(e, Pkcs11Error::PinFile(_)), "{e}");
    assert!(token.psk(KPSA_ID).is_none());
    std::fs::rename(&moved, &cfg.pin_file).unwrap();
    // Attempts that failed are a second apart: the next one finds the PIN file back.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(token.hmac_sha256("reset-hmac", b"door").unwrap(), mac);

    // A PIN the token refuses: refused again (not logged in with again: the token counts
    // failures) until the PIN file changes.
    let right = std::fs::read(&cfg.pin_file).unwrap();
    softhsm::write_private(&cfg.pin_file, "0000-wrong");
    reset_sessions();
    for _ in 0..3 {
        let e = token.hmac_sha256("reset-hmac", b"door").unwrap_err();
        assert!(matches!(e, Pkcs11Error::WrongPin(_)), "{e}");
        assert!(!e.to_string().contains("0000-wrong"), "{e}");
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&cfg.pin_file, right).unwrap();
    assert_eq!(token.hmac_sha256("reset-hmac", b"door").unwrap(), mac);
}
