//! Interoperability of m2m_security::e2e with an independent JOSE implementation, Python jwcrypto 1.6
//! (tests/jose_interop.py): jwcrypto verifies and decrypts this project's JWS/JWE for every algorithm, an
//! ESPrim object and an ESData object; this project verifies and decrypts jwcrypto's, including an ESPrim
//! object whose sessionESPrimKey Python derived on its own (HMAC-SHA256 of TS-0003 10.3.8.2) and an
//! ESData object with Python's creation time (`esct`).
//!
//! Without python3 + jwcrypto the test is skipped with a loud message, except with CI=true, where it fails
//! (.ci/run installs jwcrypto).

use chrono::{Duration, Utc};
use m2m_security::credentials::Secret;
use m2m_security::e2e::esdata::{self, BoundAttributes, Protection, ReaderKeys};
use m2m_security::e2e::esprim::{EsprimReceiver, EsprimSession, PairwiseKey};
use m2m_security::e2e::jose::{
    self, ContentEnc, DecryptionKey, EcKeyPair, HeaderParams, Recipient, SigningKey, SymmetricKey,
    VerifyingKey,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jose_interop.py");

fn have_jwcrypto() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import jwcrypto"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("python3 with jwcrypto is not installed, and CI=true: .ci/run must install it");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!!!! SKIPPED: python3 + jwcrypto are not installed (pip install jwcrypto); the JOSE \
             interoperability test needs them. In CI it is mandatory. !!!!!!!!!!\n"
        );
    }
    ok
}

fn run_python(input: &Value) -> Value {
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "jose_interop.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python prints JSON")
}

fn jwk(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn jwcrypto_and_this_project_accept_each_others_objects() {
    if !have_jwcrypto() {
        return;
    }
    let none = HeaderParams::new();
    let hs = SymmetricKey::generate("hs", 32);
    let ec_sign = EcKeyPair::generate("ec-sign").unwrap();
    let ec_enc = EcKeyPair::generate("ec-enc").unwrap();
    let kw128 = SymmetricKey::generate("kw128", 16);
    let kw256 = SymmetricKey::generate("kw256", 32);
    let dirs: Vec<(ContentEnc, SymmetricKey)> = ContentEnc::ALL
        .into_iter()
        .map(|e| {
            (
                e,
                SymmetricKey::generate(format!("dir{}", e.key_len() * 8), e.key_len()),
            )
        })
        .collect();
    let mut keys = json!({
        "hs": jwk(&hs.to_jwk()), "ec-sign": jwk(&ec_sign.to_jwk()), "ec-enc": jwk(&ec_enc.to_jwk()),
        "kw128": jwk(&kw128.to_jwk()), "kw256": jwk(&kw256.to_jwk()),
    });
    for (_, k) in &dirs {
        keys[k.kid()] = jwk(&k.to_jwk());
    }

    // This project's objects, for jwcrypto to check.
    let mut check = vec![
        json!({"name": "HS256", "kind": "jws", "key": "hs",
               "token": jose::sign_compact(b"HS256 payload", SigningKey::Hmac(&hs), &none).unwrap()}),
        json!({"name": "HS256-json", "kind": "jws", "key": "hs",
               "token": jose::sign_json(b"HS256 payload", SigningKey::Hmac(&hs), &none).unwrap()}),
        json!({"name": "ES256", "kind": "jws", "key": "ec-sign",
               "token": jose::sign_compact(b"ES256 payload", SigningKey::Ec(&ec_sign), &none).unwrap()}),
        json!({"name": "A128KW", "kind": "jwe", "key": "kw128",
               "token": jose::encrypt_compact(b"A128KW payload", Recipient::KeyWrap(&kw128), ContentEnc::A128Gcm, &none).unwrap()}),
        json!({"name": "A256KW", "kind": "jwe", "key": "kw256",
               "token": jose::encrypt_compact(b"A256KW payload", Recipient::KeyWrap(&kw256), ContentEnc::A192Gcm, &none).unwrap()}),
        json!({"name": "ECDH-ES+A128KW", "kind": "jwe", "key": "ec-enc",
               "token": jose::encrypt_compact(b"ECDH payload", Recipient::EcdhEs(&ec_enc.public_key()), ContentEnc::A256Gcm, &none).unwrap()}),
    ];
    for (enc, k) in &dirs {
        check.push(json!({"name": format!("dir-{}", enc.name()), "kind": "jwe", "key": k.kid(),
            "token": jose::encrypt_compact(b"dir payload", Recipient::Direct(k), *enc, &none).unwrap()}));
    }
    // An ESPrim object: jwcrypto decrypts it with the content key (first 16 bytes of sessionESPrimKey).
    let pairwise = Secret::new((0x40u8..0x60).collect());
    let mut rx = EsprimReceiver::default();
    let now = Utc::now();
    let ero = rx.issue_rand(now, Duration::minutes(10));
    let session = EsprimSession::start(
        "13-ae1@in.example.com",
        &pairwise,
        &ero,
        now,
        Duration::minutes(5),
        Some(m2m_core::security_info::EsprimProtocolAndAlgId::JweA128Gcm),
    )
    .unwrap();
    let inner = json!({"op": 2, "to": "/in-cse/x", "fr": "CAE1", "rqi": "1"}).to_string();
    let esprim_obj = session.protect_request(inner.as_bytes(), now).unwrap();
    let rv: [u8; 16] = hex::decode(&ero.esrv).unwrap().try_into().unwrap();
    let hdr: Value =
        serde_json::from_slice(&jose::decode_part(esprim_obj.split('.').next().unwrap()).unwrap())
            .unwrap();
    let ov: [u8; 16] = hex::decode(hdr["oro"]["esrv"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sk = m2m_security::kdf::session_esprim_key(&pairwise, &rv, &ov);
    let cek = SymmetricKey::new(
        "13-ae1@in.example.com",
        Secret::from_slice(&sk.expose()[..16]),
    );
    keys["esprim-cek"] = jwk(&cek.to_jwk());
    check.push(json!({"name": "esprim", "kind": "jwe", "key": "esprim-cek", "token": esprim_obj}));
    // An ESData object: ES256 then ECDH-ES, bound to the resource.
    let attrs = BoundAttributes {
        to: "/in-cse/cse-mn/lock1/state".into(),
        cr: "CAE1".into(),
        cnf: esdata::content_info("application/json", 0),
    };
    let written = Utc::now();
    let esd = esdata::protect(
        br#"{"locked":true}"#,
        &attrs,
        written,
        Protection::SignThenEncrypt(
            SigningKey::Ec(&ec_sign),
            Recipient::EcdhEs(&ec_enc.public_key()),
            ContentEnc::A128Gcm,
        ),
    )
    .unwrap();
    check.push(json!({"name": "esdata", "kind": "nested", "key": "ec-enc", "vkey": "ec-sign", "token": esd}));

    let out = run_python(&json!({
        "keys": keys,
        "check": check,
        "esprim": {"pairwise_hex": hex::encode(pairwise.expose()), "kid": "13-ae1@in.example.com",
                   "ero": serde_json::to_value(&ero).unwrap(),
                   "inner": json!({"op": 1, "to": "/in-cse/x", "fr": "CAE1", "rqi": "py"}).to_string()},
        "esdata": {"sign_key": "ec-sign", "enc_key": "ec-enc",
                   "attrs": serde_json::to_value(&attrs).unwrap(), "content": "{\"locked\":false}"},
    }));

    // jwcrypto's verdicts on ours.
    let checked = &out["checked"];
    for item in &check {
        let name = item["name"].as_str().unwrap();
        assert!(
            checked[name]["payload"].is_string(),
            "jwcrypto did not open {name}: {out}"
        );
    }
    assert_eq!(checked["HS256"]["payload"], "HS256 payload");
    assert_eq!(checked["ES256"]["header"]["alg"], "ES256");
    assert_eq!(checked["ECDH-ES+A128KW"]["payload"], "ECDH payload");
    assert_eq!(checked["esprim"]["payload"], inner.as_str());
    assert_eq!(
        checked["esprim"]["header"]["ori"],
        session.id().ori.as_str()
    );
    assert_eq!(checked["esdata"]["payload"], "{\"locked\":true}");
    assert_eq!(
        checked["esdata"]["header"]["inner"]["esda"]["to"],
        attrs.to.as_str()
    );
    // jwcrypto sees the creation time in both protected headers, in microseconds.
    for layer in ["inner", "outer"] {
        assert_eq!(
            checked["esdata"]["header"][layer]["esct"],
            json!(written.timestamp_micros()),
            "{layer}"
        );
    }

    // Ours on jwcrypto's.
    let made = &out["made"];
    let tok = |n: &str| {
        made[n]
            .as_str()
            .unwrap_or_else(|| panic!("python made no {n}"))
            .to_string()
    };
    let v = |t: &str, k: VerifyingKey| jose::verify_compact(t, k).unwrap().payload.to_vec();
    assert_eq!(
        v(&tok("jws-HS256"), VerifyingKey::Hmac(&hs)),
        b"from jwcrypto HS256"
    );
    assert_eq!(
        v(&tok("jws-ES256"), VerifyingKey::Ec(&ec_sign.public_key())),
        b"from jwcrypto ES256"
    );
    let d = |t: &str, k: DecryptionKey| {
        jose::decrypt_compact(t, k, &ContentEnc::ALL)
            .unwrap()
            .payload
            .to_vec()
    };
    for (enc, k) in &dirs {
        assert_eq!(
            d(
                &tok(&format!("jwe-dir-{}", enc.name())),
                DecryptionKey::Direct(k)
            ),
            b"from jwcrypto dir"
        );
    }
    assert_eq!(
        d(&tok("jwe-A128KW"), DecryptionKey::KeyWrap(&kw128)),
        b"from jwcrypto A128KW"
    );
    assert_eq!(
        d(&tok("jwe-A256KW"), DecryptionKey::KeyWrap(&kw256)),
        b"from jwcrypto A256KW"
    );
    assert_eq!(
        d(&tok("jwe-ECDH-ES+A128KW"), DecryptionKey::EcdhEs(&ec_enc)),
        b"from jwcrypto ECDH-ES"
    );
    // Python's ESPrim object, with Python's own sessionESPrimKey, through the Receiver.
    let mut keys_table = HashMap::new();
    keys_table.insert(
        "13-ae1@in.example.com".to_string(),
        PairwiseKey {
            key: pairwise.clone(),
            entity: "CAE1".into(),
            expires: None,
        },
    );
    let got = rx
        .unprotect_request(&keys_table, &tok("esprim"), Utc::now())
        .unwrap();
    assert_eq!(got.primitive["rqi"], "py");
    assert_eq!(got.session.ori, "oupython0001");
    // Python's ESData object through the reader, and the binding still holds.
    let ep = ec_sign.public_key();
    let reader = ReaderKeys {
        verify: Some(VerifyingKey::Ec(&ep)),
        decrypt: Some(DecryptionKey::EcdhEs(&ec_enc)),
    };
    let opened = esdata::open(&tok("esdata"), &attrs, reader).unwrap();
    assert_eq!(&*opened.content, br#"{"locked":false}"#);
    // Python stamped it with its own clock (esct, microseconds): close to ours.
    let made_at = out["esdata_esct"].as_i64().expect("python's esct");
    assert_eq!(opened.created.timestamp_micros(), made_at);
    assert!((Utc::now() - opened.created).num_seconds().abs() < 60);
    let moved = BoundAttributes {
        to: "/in-cse/cse-mn/lock2/state".into(),
        ..attrs.clone()
    };
    assert!(esdata::open(&tok("esdata"), &moved, reader).is_err());
}
