//! The PKCS#11 secure environment against a real token (SoftHSM2, Debian package `softhsm2`):
//! keys generated or stored in the token cannot be read out of it, PSKs and extractable secrets
//! come out for one use, HMAC runs inside, and what the token holds is listed without values.
//!
//! One token for the whole file: a PKCS#11 module is initialized once per process, with the
//! SOFTHSM2_CONF of that moment.

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use m2m_security::credentials::{KpsaId, PskEntry, Secret};
use m2m_security::secure_environment::pkcs11::{KeyKind, Pkcs11Error, Pkcs11Token, TokenConfig};
use m2m_security::secure_environment::{SecureEnvironment, SecurityLevel};
use std::path::PathBuf;

mod softhsm;
use softhsm::{own_session, token, PIN};

/// What a third party reading CKA_VALUE through its own session gets: never the value.
fn read_value_directly(class: ObjectClass, label: &str) -> Option<Vec<u8>> {
    let session = own_session();
    let _ = session.login(UserType::User, Some(&AuthPin::from(PIN.to_string())));
    let handle = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
        .into_iter()
        .next()
        .expect("the key is in the token");
    match session.get_attributes(handle, &[AttributeType::Value]) {
        Ok(attrs) => attrs.into_iter().find_map(|a| match a {
            Attribute::Value(v) => Some(v),
            _ => None,
        }),
        Err(_) => None,
    }
}

#[test]
fn a_generated_private_key_signs_and_never_comes_out() {
    let Some(cfg) = token() else { return };
    let token = Pkcs11Token::open(cfg).unwrap();
    assert_eq!(
        token.security_level(),
        SecurityLevel::Token,
        "SoftHSM is no hardware slot"
    );
    let public = token.generate_ec_key("gen-key").unwrap();
    assert_eq!(public.bits(), 256);
    assert_eq!(
        token
            .public_key("gen-key")
            .unwrap()
            .public_key_to_der()
            .unwrap(),
        public.public_key_to_der().unwrap()
    );
    assert!(matches!(
        token.generate_ec_key("gen-key"),
        Err(Pkcs11Error::Exists(_))
    ));
    assert_eq!(
        read_value_directly(ObjectClass::PRIVATE_KEY, "gen-key"),
        None,
        "CKA_VALUE of a private key is refused"
    );
    let listed = token.list().unwrap();
    let private = listed
        .iter()
        .find(|k| k.label == "gen-key" && k.kind == KeyKind::EcPrivate)
        .unwrap();
    assert!(
        private.sensitive && !private.extractable && private.generated_in_token,
        "{private:?}"
    );
    assert_eq!(
        token.private_key_uri("gen-key"),
        "pkcs11:token=m2m-test;object=gen-key;type=private"
    );
    assert_eq!(
        token.destroy("gen-key").unwrap(),
        2,
        "both halves of the pair"
    );
    assert!(!token.has_private_key("gen-key").unwrap());
}

#[test]
fn a_psk_in_the_token_comes_out_for_a_handshake_only() {
    let Some(cfg) = token() else { return };
    let token = Pkcs11Token::open(cfg).unwrap();
    let key = Secret::from_hex("00112233445566778899aabbccddeeff0123456789").unwrap();
    let entry = PskEntry {
        entity_id: Some("/id-in/Clock-AE1".into()),
        kpsa_id: KpsaId::parse("lock1@psk.example.com").unwrap(),
        key,
    };
    token.import_psk(&entry).unwrap();
    assert!(matches!(
        token.import_psk(&entry),
        Err(Pkcs11Error::Exists(_))
    ));
    // Found under any spelling of the KpsaID the handshake may send (the FQDN has no case).
    let found = token.psk("lock1@PSK.Example.COM").expect("the PSK");
    assert_eq!(found.key.expose(), entry.key.expose());
    assert_eq!(found.entity_id.as_deref(), Some("/id-in/Clock-AE1"));
    assert!(token.psk("other@psk.example.com").is_none());
    assert!(token
        .psk_entries()
        .contains(&(Some("/id-in/Clock-AE1".into()), entry.kpsa_id.clone())));
    // Nobody reads it out of the token directly.
    assert_eq!(
        read_value_directly(ObjectClass::SECRET_KEY, "kpsa:lock1@psk.example.com"),
        None
    );
    let info = token
        .list()
        .unwrap()
        .into_iter()
        .find(|k| k.kind == KeyKind::Psk)
        .unwrap();
    assert!(info.sensitive, "{info:?}");
    // No wrapping key is left behind by the hand-outs.
    assert!(
        token.list().unwrap().iter().all(|k| !k.label.is_empty()),
        "only labelled keys remain"
    );
    assert_eq!(token.destroy("kpsa:lock1@psk.example.com").unwrap(), 1);
    assert!(token.psk("lock1@psk.example.com").is_none());
    // A new key under the same KpsaID is the one handed out, never the one it replaced.
    let renewed = PskEntry {
        key: Secret::from_hex("ffeeddccbbaa99887766554433221100").unwrap(),
        ..entry
    };
    token.import_psk(&renewed).unwrap();
    assert_eq!(
        token.psk("lock1@psk.example.com").unwrap().key.expose(),
        renewed.key.expose()
    );
    token.destroy("kpsa:lock1@psk.example.com").unwrap();
}

#[test]
fn hmac_runs_inside_the_token_with_keys_that_never_leave_it() {
    let Some(cfg) = token() else { return };
    let token = Pkcs11Token::open(cfg).unwrap();
    let value = Secret::from_slice(&[0x42; 32]);
    token.import_secret("master", &value, false).unwrap();
    let mac = token.hmac_sha256("master", b"message").unwrap();
    use hmac::{Hmac, Mac};
    let mut software = Hmac::<sha2::Sha256>::new_from_slice(&[0x42; 32]).unwrap();
    software.update(b"message");
    assert_eq!(
        mac.as_slice(),
        software.finalize().into_bytes().as_slice(),
        "the token computes the HMAC the standard defines"
    );
    assert!(
        token.secret("master").is_none(),
        "an unextractable secret is not handed out"
    );
    assert_eq!(
        read_value_directly(ObjectClass::SECRET_KEY, "secret:master"),
        None
    );
    // A generated one is usable and unknown to everyone.
    token.generate_secret("generated").unwrap();
    assert_ne!(token.hmac_sha256("generated", b"message").unwrap(), mac);
    assert!(token.secret("generated").is_none());
    // An extractable secret comes out as stored.
    token.import_secret("shared", &value, true).unwrap();
    assert_eq!(token.secret("shared").unwrap().expose(), value.expose());
    assert!(matches!(
        token.hmac_sha256("absent", b"x"),
        Err(Pkcs11Error::NotFound(_))
    ));
}

#[test]
fn errors_name_the_token_and_never_the_pin() {
    let Some(cfg) = token() else { return };
    let missing = TokenConfig {
        token: "no-such-token".into(),
        ..cfg.clone()
    };
    let e = Pkcs11Token::open(&missing).unwrap_err();
    assert!(matches!(e, Pkcs11Error::NoToken(_)), "{e}");
    let e1 = e;
    let open_pin = cfg.pin_file.with_file_name("open-pin");
    std::fs::write(&open_pin, PIN).unwrap();
    let e = Pkcs11Token::open(&TokenConfig {
        pin_file: open_pin,
        ..cfg.clone()
    })
    .unwrap_err();
    assert!(
        matches!(e, Pkcs11Error::PinFile(_)),
        "a PIN file others may read is refused: {e}"
    );
    let e2 = e;
    let no_module = TokenConfig {
        module: PathBuf::from("/nonexistent/libpkcs11.so"),
        ..cfg.clone()
    };
    let e3 = Pkcs11Token::open(&no_module).unwrap_err();
    assert!(matches!(e3, Pkcs11Error::Module { .. }), "{e3}");
    // A PIN file that is no text: refused without repeating what it holds.
    let bad_pin = cfg.pin_file.with_file_name("bad-pin");
    std::fs::write(&bad_pin, [PIN.as_bytes(), &[0xff, 0xfe]].concat()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad_pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e4 = Pkcs11Token::open(&TokenConfig {
        pin_file: bad_pin,
        ..cfg.clone()
    })
    .unwrap_err();
    assert!(matches!(e4, Pkcs11Error::PinFile(_)), "{e4}");
    for e in [e1, e2, e3, e4] {
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains(PIN), "{text}");
        }
    }
}
