//! The end-to-end security library (m2m_security::e2e): every success path and the attacks it must stop.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use m2m_core::security_info::{EsprimProtocolAndAlgId, SecurityInfo};
use m2m_core::ResponseStatusCode as Rsc;
use m2m_security::credentials::{reveals, Secret};
use m2m_security::e2e::esdata::{self, BoundAttributes, Protection, ReaderKeys};
use m2m_security::e2e::esprim::{EsprimReceiver, EsprimSession, PairwiseKey};
use m2m_security::e2e::group_message::{self, GroupKeyMgmt, MemberKey, MemberUnwrapKey};
use m2m_security::e2e::jose::{
    self, ContentEnc, DecryptionKey, EcKeyPair, EcPublicKey, HeaderParams, JoseErrorKind,
    Recipient, SigningKey, SymmetricKey, VerifyingKey,
};
use serde_json::{json, Value};
use std::collections::HashMap;

fn none() -> HeaderParams {
    HeaderParams::new()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Replaces a compact object's protected header (keeping the rest), as an attacker would.
fn with_header(token: &str, header: &Value) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[0] = b64(header);
    parts.join(".")
}

/// Flips one bit of part `i` of a compact object.
fn flip(token: &str, i: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut raw = URL_SAFE_NO_PAD.decode(&parts[i]).unwrap();
    raw[0] ^= 1;
    parts[i] = URL_SAFE_NO_PAD.encode(raw);
    parts.join(".")
}

fn header_of(token: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap()
}

// ------------------------------------------------------------------------------------------------ jose

#[test]
fn jws_sign_verify_hs256_es256_compact_and_json() {
    let hk = SymmetricKey::generate("hk", 32);
    let ek = EcKeyPair::generate("ek").unwrap();
    let epub = ek.public_key();
    for (s, v) in [
        (SigningKey::Hmac(&hk), VerifyingKey::Hmac(&hk)),
        (SigningKey::Ec(&ek), VerifyingKey::Ec(&epub)),
    ] {
        let t = jose::sign_compact(b"open the door", s, &none()).unwrap();
        assert_eq!(header_of(&t)["alg"], s.alg().name());
        assert_eq!(header_of(&t)["kid"], s.kid());
        assert_eq!(
            &*jose::verify_compact(&t, v).unwrap().payload,
            b"open the door"
        );
        let j = jose::sign_json(b"json form", s, &none()).unwrap();
        assert_eq!(&*jose::verify_json(&j, v).unwrap().payload, b"json form");
        // Altered payload or signature.
        for bad in [flip(&t, 1), flip(&t, 2)] {
            let e = jose::verify_compact(&bad, v).unwrap_err();
            assert_eq!(e.kind, JoseErrorKind::Integrity, "{e}");
        }
    }
    // HS256 keys shorter than the hash are refused (RFC 7518 3.2).
    let short = SymmetricKey::new("s", Secret::new(vec![1; 8]));
    assert_eq!(
        jose::sign_compact(b"x", SigningKey::Hmac(&short), &none())
            .unwrap_err()
            .kind,
        JoseErrorKind::WrongKey
    );
}

#[test]
fn attacker_cannot_pick_none_or_switch_the_algorithm() {
    let hk = SymmetricKey::generate("k1", 32);
    let t = jose::sign_compact(b"cmd", SigningKey::Hmac(&hk), &none()).unwrap();
    // alg none with an empty signature.
    let parts: Vec<&str> = t.split('.').collect();
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "k1"})),
        parts[1]
    );
    let e = jose::verify_compact(&unsigned, VerifyingKey::Hmac(&hk)).unwrap_err();
    assert_eq!(e.kind, JoseErrorKind::Unsupported, "{e}");
    assert!(e.reason.contains("none"), "{e}");
    // HS384 / HS512 (a "stronger" alg the key was never meant for) and a missing alg.
    for h in [
        json!({"alg": "HS512", "kid": "k1"}),
        json!({"kid": "k1"}),
        json!({"alg": "HS256", "kid": "k1", "crit": ["exp"]}),
        json!({"alg": "HS256", "kid": "k1", "b64": false, "crit": ["b64"]}),
    ] {
        let e = jose::verify_compact(&with_header(&t, &h), VerifyingKey::Hmac(&hk)).unwrap_err();
        assert_eq!(e.kind, JoseErrorKind::Unsupported, "{h}: {e}");
    }
    // Key confusion: an HS256 token "signed" with the public key's JWK text is refused by an EC verifier.
    let ek = EcKeyPair::generate("k1").unwrap();
    let pub_as_secret = SymmetricKey::new(
        "k1",
        Secret::from_slice(ek.public_key().to_jwk().as_bytes()),
    );
    let forged = jose::sign_compact(b"cmd", SigningKey::Hmac(&pub_as_secret), &none()).unwrap();
    let e = jose::verify_compact(&forged, VerifyingKey::Ec(&ek.public_key())).unwrap_err();
    assert_eq!(e.kind, JoseErrorKind::Unsupported);
    // Another key ID.
    let other = SymmetricKey::new("k2", hk.secret().clone());
    assert_eq!(
        jose::verify_compact(&t, VerifyingKey::Hmac(&other))
            .unwrap_err()
            .kind,
        JoseErrorKind::WrongKey
    );
    // A header the caller may not set.
    let mut h = none();
    h.insert("alg".into(), "none".into());
    assert!(jose::sign_compact(b"x", SigningKey::Hmac(&hk), &h).is_err());
}

#[test]
fn jwe_every_key_management_and_enc_round_trips() {
    let ek = EcKeyPair::generate("member").unwrap();
    let epub = ek.public_key();
    for enc in ContentEnc::ALL {
        let dir = SymmetricKey::generate("dir", enc.key_len());
        let kw128 = SymmetricKey::generate("kw", 16);
        let kw256 = SymmetricKey::generate("kw", 32);
        let cases: [(Recipient, DecryptionKey, &str); 4] = [
            (Recipient::Direct(&dir), DecryptionKey::Direct(&dir), "dir"),
            (
                Recipient::KeyWrap(&kw128),
                DecryptionKey::KeyWrap(&kw128),
                "A128KW",
            ),
            (
                Recipient::KeyWrap(&kw256),
                DecryptionKey::KeyWrap(&kw256),
                "A256KW",
            ),
            (
                Recipient::EcdhEs(&epub),
                DecryptionKey::EcdhEs(&ek),
                "ECDH-ES+A128KW",
            ),
        ];
        for (to, dk, alg) in cases {
            let t = jose::encrypt_compact(b"secret state", to, enc, &none()).unwrap();
            let h = header_of(&t);
            assert_eq!(
                (h["alg"].as_str(), h["enc"].as_str()),
                (Some(alg), Some(enc.name()))
            );
            let o = jose::decrypt_compact(&t, dk, &ContentEnc::ALL).unwrap();
            assert_eq!(&*o.payload, b"secret state");
            for i in [0, 2, 3, 4] {
                let e = jose::decrypt_compact(&flip(&t, i), dk, &ContentEnc::ALL);
                assert!(e.is_err(), "{alg} {}: part {i} altered", enc.name());
            }
        }
    }
}

#[test]
fn jwe_downgrades_are_refused() {
    let kw = SymmetricKey::generate("k", 16);
    let t =
        jose::encrypt_compact(b"x", Recipient::KeyWrap(&kw), ContentEnc::A256Gcm, &none()).unwrap();
    // The reader allows only A256GCM: an A128GCM object is refused before decryption.
    let t128 =
        jose::encrypt_compact(b"x", Recipient::KeyWrap(&kw), ContentEnc::A128Gcm, &none()).unwrap();
    let e = jose::decrypt_compact(&t128, DecryptionKey::KeyWrap(&kw), &[ContentEnc::A256Gcm])
        .unwrap_err();
    assert_eq!(e.kind, JoseErrorKind::Unsupported);
    // alg dir with the wrap key as content key, CBC-HMAC, zip and an embedded key are refused.
    let mut h = header_of(&t);
    for (k, v) in [
        ("alg", json!("dir")),
        ("enc", json!("A128CBC-HS256")),
        ("zip", json!("DEF")),
        ("jwk", json!({"kty": "oct", "k": "AAAA"})),
        ("alg", json!("none")),
    ] {
        let saved = h.clone();
        h[k] = v.clone();
        let e = jose::decrypt_compact(
            &with_header(&t, &h),
            DecryptionKey::KeyWrap(&kw),
            &ContentEnc::ALL,
        )
        .unwrap_err();
        assert_eq!(e.kind, JoseErrorKind::Unsupported, "{k}={v}: {e}");
        h = saved;
    }
    // A dir key whose length does not fit enc.
    let d = SymmetricKey::generate("d", 16);
    assert!(
        jose::encrypt_compact(b"x", Recipient::Direct(&d), ContentEnc::A256Gcm, &none()).is_err()
    );
    // Garbage.
    for g in ["", "a.b", "a.b.c.d.e", "!!.x.y.z.w"] {
        let e =
            jose::decrypt_compact(g, DecryptionKey::KeyWrap(&kw), &ContentEnc::ALL).unwrap_err();
        assert_eq!(e.kind, JoseErrorKind::Malformed, "{g:?}");
    }
}

#[test]
fn jwe_encrypted_keys_of_the_wrong_size_are_refused() {
    // Found by the property tests: josekit's AES key unwrap panicked on an encrypted key of fewer
    // than 8 bytes, and its ECDH-ES+A128KW on an empty one.
    let w16 = SymmetricKey::new("w16", Secret::new((1..=16).collect()));
    let exact = "eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4R0NNIiwia2lkIjoidzE2In0.AA...";
    let e =
        jose::decrypt_compact(exact, DecryptionKey::KeyWrap(&w16), &ContentEnc::ALL).unwrap_err();
    assert_eq!(e.kind, JoseErrorKind::Malformed, "{e}");
    let ek = EcKeyPair::generate("e1").unwrap();
    let epub = ek.public_key();
    let kw256 = SymmetricKey::generate("w32", 32);
    for enc in ContentEnc::ALL {
        let cases: [(Recipient, DecryptionKey); 3] = [
            (Recipient::KeyWrap(&w16), DecryptionKey::KeyWrap(&w16)),
            (Recipient::KeyWrap(&kw256), DecryptionKey::KeyWrap(&kw256)),
            (Recipient::EcdhEs(&epub), DecryptionKey::EcdhEs(&ek)),
        ];
        for (to, dk) in cases {
            let t = jose::encrypt_compact(b"x", to, enc, &none()).unwrap();
            let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
            assert_eq!(
                URL_SAFE_NO_PAD.decode(&parts[1]).unwrap().len(),
                enc.key_len() + 8
            );
            for len in [0, 1, 7, 8, 16, enc.key_len() + 7, enc.key_len() + 9, 64] {
                parts[1] = URL_SAFE_NO_PAD.encode(vec![0xa5; len]);
                let e = jose::decrypt_compact(&parts.join("."), dk, &ContentEnc::ALL).unwrap_err();
                assert_eq!(
                    e.kind,
                    JoseErrorKind::Malformed,
                    "{} {len}: {e}",
                    enc.name()
                );
            }
        }
    }
}

#[test]
fn keys_import_export_and_never_print() {
    let k = SymmetricKey::generate("oct-1", 16);
    assert!(!reveals(&format!("{k:?}"), k.secret().expose()));
    let back = SymmetricKey::from_jwk(&k.to_jwk()).unwrap();
    assert_eq!(back, k);
    let ek = EcKeyPair::generate("ec-1").unwrap();
    let jwk: Value = serde_json::from_str(&ek.to_jwk()).unwrap();
    let d = jwk["d"].as_str().unwrap().to_string();
    assert!(!format!("{ek:?}").contains(&d));
    let again = EcKeyPair::from_jwk(&ek.to_jwk()).unwrap();
    assert_eq!(again.kid(), "ec-1");
    // A signature by the reloaded pair verifies with the original public key.
    let t = jose::sign_compact(b"m", SigningKey::Ec(&again), &none()).unwrap();
    jose::verify_compact(&t, VerifyingKey::Ec(&ek.public_key())).unwrap();
    let p = EcPublicKey::from_jwk(&ek.public_key().to_jwk()).unwrap();
    assert_eq!(p.kid(), "ec-1");
    assert!(!ek.public_key().to_jwk().contains("\"d\""));
    assert!(
        EcPublicKey::from_jwk(&ek.to_jwk()).is_err(),
        "a private JWK is not a public key"
    );
    assert!(EcKeyPair::from_jwk(&ek.public_key().to_jwk()).is_err());
    // A point off the curve.
    let mut off = serde_json::from_str::<Value>(&ek.public_key().to_jwk()).unwrap();
    off["y"] = off["x"].clone();
    assert!(EcPublicKey::from_jwk(&off.to_string()).is_err());
    assert!(SymmetricKey::from_jwk("{\"kty\":\"EC\"}").is_err());
    assert!(SymmetricKey::from_jwk("not json").is_err());
}

// ------------------------------------------------------------------------------------------------ ESPrim

const KID: &str = "13-lock1@in.provider.com";
const AE: &str = "CAE123456789012-Lock";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn pairwise() -> (Secret, HashMap<String, PairwiseKey>) {
    let k = Secret::new((0u8..32).collect());
    let mut m = HashMap::new();
    m.insert(
        KID.to_string(),
        PairwiseKey {
            key: k.clone(),
            entity: AE.into(),
            expires: None,
        },
    );
    (k, m)
}

fn inner_request(from: &str) -> Vec<u8> {
    json!({"op": 2, "to": "/in-cse/cse-mn/lock1", "fr": from, "rqi": "r1", "rvi": "3"})
        .to_string()
        .into_bytes()
}

/// A receiver that issued one rand, and an originator session started on it.
fn esprim_pair() -> (EsprimReceiver, EsprimSession, HashMap<String, PairwiseKey>) {
    let (k, keys) = pairwise();
    let mut rx = EsprimReceiver::default();
    let ero = rx.issue_rand(t0(), Duration::minutes(10));
    // The rand travels as securityInfo sit 4.
    let si = SecurityInfo::from_content(&SecurityInfo::rand_response(ero).to_content()).unwrap();
    let s =
        EsprimSession::start(KID, &k, &si.ero.unwrap(), t0(), Duration::minutes(5), None).unwrap();
    (rx, s, keys)
}

#[test]
fn esprim_request_and_response_round_trip() {
    let (mut rx, mut s, keys) = esprim_pair();
    let now = t0() + Duration::seconds(1);
    let jwe = s.protect_request(&inner_request(AE), now).unwrap();
    let h = header_of(&jwe);
    assert_eq!(h["alg"], "dir");
    assert_eq!(h["enc"], "A256GCM", "the strongest common option");
    assert_eq!(h["kid"], KID);
    assert_eq!(h["cty"], "json");
    assert_eq!(h["ori"], s.id().ori.as_str());
    assert_eq!(h["rri"], s.id().rri.as_str());
    assert_eq!(
        h["oro"]["esri"],
        s.id().ori.as_str(),
        "first object carries the originator rand"
    );
    assert_eq!(jwe.split('.').nth(1), Some(""), "dir: empty encrypted key");
    // Outer NOTIFY content.
    let outer = SecurityInfo::esprim_object(jwe.clone()).to_content();
    let epo = SecurityInfo::from_content(&outer).unwrap().epo.unwrap();
    let got = rx.unprotect_request(&keys, &epo, now).unwrap();
    assert_eq!(got.from, AE);
    assert_eq!(got.primitive["to"], "/in-cse/cse-mn/lock1");
    let rsp = json!({"rsc": 2000, "rqi": "r1", "pc": {"m2m:cin": {"con": "locked"}}}).to_string();
    let back = rx
        .protect_response(&got.session, rsp.as_bytes(), now)
        .unwrap();
    assert!(header_of(&back).get("oro").is_none());
    let r = s.unprotect_response(&back, now).unwrap();
    assert_eq!(r["pc"]["m2m:cin"]["con"], "locked");
    // After an answer the originator sends only ori, and the receiver finds the recorded rand.
    let second = s.protect_request(&inner_request(AE), now).unwrap();
    assert!(header_of(&second).get("oro").is_none());
    rx.unprotect_request(&keys, &second, now).unwrap();
    // The receiver's answer replayed to the originator is refused too.
    let e = s.unprotect_response(&back, now).unwrap_err();
    assert_eq!(e.rsc, Rsc::EsprimUnknownOrigRandId);
}

#[test]
fn esprim_replay_is_refused() {
    let (mut rx, s, keys) = esprim_pair();
    let now = t0() + Duration::seconds(1);
    let jwe = s.protect_request(&inner_request(AE), now).unwrap();
    rx.unprotect_request(&keys, &jwe, now).unwrap();
    let e = rx
        .unprotect_request(&keys, &jwe, now + Duration::seconds(2))
        .unwrap_err();
    assert_eq!(e.rsc, Rsc::EsprimUnknownOrigRandId, "{e}");
    assert!(e.dbg.contains("replay"), "{e}");
    // A fresh object of the same session still passes.
    rx.unprotect_request(
        &keys,
        &s.protect_request(&inner_request(AE), now).unwrap(),
        now,
    )
    .unwrap();
}

#[test]
fn esprim_errors_have_their_codes() {
    let (mut rx, s, keys) = esprim_pair();
    let now = t0() + Duration::seconds(1);
    let jwe = s.protect_request(&inner_request(AE), now).unwrap();
    let h = header_of(&jwe);
    let code = |rx: &mut EsprimReceiver, obj: &str, at| {
        rx.unprotect_request(&keys, obj, at).unwrap_err().rsc
    };

    // 4112: unknown key ID.
    let mut x = h.clone();
    x["kid"] = json!("13-other@in.provider.com");
    assert_eq!(
        code(&mut rx, &with_header(&jwe, &x), now),
        Rsc::EsprimUnknownKeyId
    );
    // 4114: unknown receiver rand.
    let mut x = h.clone();
    x["rri"] = json!("ru0000000000000000");
    assert_eq!(
        code(&mut rx, &with_header(&jwe, &x), now),
        Rsc::EsprimUnknownRecvRandId
    );
    // 4113: unknown originator rand (no oro, never recorded).
    let mut x = h.clone();
    x.as_object_mut().unwrap().remove("oro");
    assert_eq!(
        code(&mut rx, &with_header(&jwe, &x), now),
        Rsc::EsprimUnknownOrigRandId
    );
    // 4111: another alg, a CBC enc, an XML inner primitive, or zip.
    for (k, v) in [
        ("alg", json!("A128KW")),
        ("enc", json!("A128CBC-HS256")),
        ("cty", json!("xml")),
    ] {
        let mut x = h.clone();
        x[k] = v;
        assert_eq!(
            code(&mut rx, &with_header(&jwe, &x), now),
            Rsc::EsprimUnsupportedOption,
            "{k}"
        );
    }
    let mut x = h.clone();
    x["zip"] = json!("DEF");
    assert_eq!(
        code(&mut rx, &with_header(&jwe, &x), now),
        Rsc::EsprimUnsupportedOption
    );
    // 4115: altered ciphertext, tag, IV, or header (the header is the AAD).
    for i in [2, 3, 4] {
        assert_eq!(
            code(&mut rx, &flip(&jwe, i), now),
            Rsc::EsprimBadMac,
            "part {i}"
        );
    }
    let mut x = h.clone();
    x["cty"] = json!("json");
    x["extra"] = json!(1);
    assert_eq!(
        code(&mut rx, &with_header(&jwe, &x), now),
        Rsc::EsprimBadMac
    );
    // 5210: not a JWE at all.
    assert_eq!(code(&mut rx, "not-a-jwe", now), Rsc::EsprimDecryptionError);
    assert_eq!(code(&mut rx, "%%.x.y.z.w", now), Rsc::EsprimDecryptionError);
    // 4116: the inner From is another AE than the key's.
    let forged = s
        .protect_request(&inner_request("CAE-intruder"), now)
        .unwrap();
    assert_eq!(code(&mut rx, &forged, now), Rsc::EsprimImpersonationError);
    // The genuine object still works after all that: the forgeries changed no state before
    // failing, and the impersonating object, authentic to the session, carried another IV.
    rx.unprotect_request(&keys, &jwe, now).unwrap();
}

#[test]
fn esprim_expiry_bounds_every_session() {
    let (mut rx, s, keys) = esprim_pair();
    // The originator rand expires after 5 minutes (its lifetime), the receiver rand after 10.
    let late = t0() + Duration::minutes(6);
    assert_eq!(
        s.protect_request(&inner_request(AE), late).unwrap_err().rsc,
        Rsc::EsprimUnknownOrigRandId
    );
    let jwe = s.protect_request(&inner_request(AE), t0()).unwrap();
    assert_eq!(
        rx.unprotect_request(&keys, &jwe, late).unwrap_err().rsc,
        Rsc::EsprimUnknownOrigRandId
    );
    assert_eq!(
        rx.unprotect_request(&keys, &jwe, t0() + Duration::minutes(11))
            .unwrap_err()
            .rsc,
        Rsc::EsprimUnknownRecvRandId
    );
    // An expired pairwise key is an unknown key.
    let (_, mut keys2) = pairwise();
    keys2.get_mut(KID).unwrap().expires = Some(t0());
    let (mut rx2, s2, _) = esprim_pair();
    let j2 = s2.protect_request(&inner_request(AE), t0()).unwrap();
    assert_eq!(
        rx2.unprotect_request(&keys2, &j2, t0() + Duration::seconds(1))
            .unwrap_err()
            .rsc,
        Rsc::EsprimUnknownKeyId
    );
    // Sessions and their replay caches are dropped once expired.
    let (mut rx3, s3, keys3) = esprim_pair();
    rx3.unprotect_request(
        &keys3,
        &s3.protect_request(&inner_request(AE), t0()).unwrap(),
        t0(),
    )
    .unwrap();
    assert_eq!(rx3.session_count(), 1);
    rx3.purge(t0() + Duration::minutes(6));
    assert_eq!(rx3.session_count(), 0);
}

#[test]
fn esprim_originator_rand_may_not_outlive_the_receiver_rand() {
    let (k, keys) = pairwise();
    let mut rx = EsprimReceiver::new(vec![EsprimProtocolAndAlgId::JweA128Gcm]);
    let ero = rx.issue_rand(t0(), Duration::minutes(1));
    let s = EsprimSession::start(KID, &k, &ero, t0(), Duration::minutes(5), None).unwrap();
    assert_eq!(
        s.expires(),
        t0() + Duration::minutes(1),
        "capped at the receiver's expiry"
    );
    let jwe = s.protect_request(&inner_request(AE), t0()).unwrap();
    assert_eq!(header_of(&jwe)["enc"], "A128GCM");
    rx.unprotect_request(&keys, &jwe, t0()).unwrap();
    // A hand-made oro that outlives the receiver rand is refused (4113).
    let mut h = header_of(&jwe);
    h["oro"]["esrx"] = json!("20990101T000000");
    assert_eq!(
        rx.unprotect_request(&keys, &with_header(&jwe, &h), t0())
            .unwrap_err()
            .rsc,
        Rsc::EsprimUnknownOrigRandId
    );
}

#[test]
fn esprim_a_recorded_originator_rand_cannot_be_replaced() {
    let (mut rx, s, keys) = esprim_pair();
    let now = t0() + Duration::seconds(1);
    rx.unprotect_request(
        &keys,
        &s.protect_request(&inner_request(AE), now).unwrap(),
        now,
    )
    .unwrap();
    // A later object names the recorded ori with another rand value (e.g. one the attacker
    // chose): refused before anything is derived from it.
    let jwe = s.protect_request(&inner_request(AE), now).unwrap();
    let mut h = header_of(&jwe);
    let recorded = h["oro"]["esrv"].as_str().unwrap().to_owned();
    let other = if recorded.starts_with('0') { "1" } else { "0" }.to_owned() + &recorded[1..];
    h["oro"]["esrv"] = json!(other);
    let e = rx
        .unprotect_request(&keys, &with_header(&jwe, &h), now)
        .unwrap_err();
    assert_eq!(e.rsc, Rsc::EsprimUnknownOrigRandId, "{e}");
    assert!(e.dbg.contains("different rand"), "{e}");
    // The genuine object of the session still passes.
    rx.unprotect_request(&keys, &jwe, now).unwrap();
}

#[test]
fn esprim_a_session_is_used_up_at_its_cap() {
    let (rx, s, keys) = esprim_pair();
    let mut rx = rx.with_session_cap(3);
    let now = t0() + Duration::seconds(1);
    for _ in 0..3 {
        let jwe = s.protect_request(&inner_request(AE), now).unwrap();
        rx.unprotect_request(&keys, &jwe, now).unwrap();
    }
    let jwe = s.protect_request(&inner_request(AE), now).unwrap();
    let e = rx.unprotect_request(&keys, &jwe, now).unwrap_err();
    assert_eq!(e.rsc, Rsc::EsprimUnknownOrigRandId, "{e}");
    assert!(e.dbg.contains("used up"), "{e}");
    // A new session (fresh originator rand) with the same key works.
    let ero = rx.issue_rand(now, Duration::minutes(10));
    let (k, _) = pairwise();
    let fresh = EsprimSession::start(KID, &k, &ero, now, Duration::minutes(5), None).unwrap();
    let jwe = fresh.protect_request(&inner_request(AE), now).unwrap();
    rx.unprotect_request(&keys, &jwe, now).unwrap();
}

// ------------------------------------------------------------------------------------------------ ESData

/// The writer's creation time of the ESData tests (with microseconds, which `esct` keeps).
fn written() -> DateTime<Utc> {
    Utc.timestamp_micros(1_748_779_200_123_456).unwrap()
}

fn attrs() -> BoundAttributes {
    BoundAttributes {
        to: "/in-cse/cse-mn/lock1/state".into(),
        cr: "CAE123456789012-Lock".into(),
        cnf: esdata::content_info("application/json", 0),
    }
}

#[test]
fn esdata_every_class_and_key_round_trips() {
    let hk = SymmetricKey::generate("14-sign", 32);
    let ck = SymmetricKey::generate("14-enc", 16);
    let ek = EcKeyPair::generate("44-sign").unwrap();
    let rk = EcKeyPair::generate("44-enc").unwrap();
    let (ep, rp) = (ek.public_key(), rk.public_key());
    let data = br#"{"locked":true}"#;
    let a = attrs();
    assert_eq!(a.cnf, "application/json:0:1");
    let cases: Vec<(Protection, ReaderKeys)> = vec![
        (
            Protection::Sign(SigningKey::Hmac(&hk)),
            ReaderKeys {
                verify: Some(VerifyingKey::Hmac(&hk)),
                decrypt: None,
            },
        ),
        (
            Protection::Sign(SigningKey::Ec(&ek)),
            ReaderKeys {
                verify: Some(VerifyingKey::Ec(&ep)),
                decrypt: None,
            },
        ),
        (
            Protection::Encrypt(Recipient::Direct(&ck), ContentEnc::A128Gcm),
            ReaderKeys {
                verify: None,
                decrypt: Some(DecryptionKey::Direct(&ck)),
            },
        ),
        (
            Protection::Encrypt(Recipient::KeyWrap(&ck), ContentEnc::A256Gcm),
            ReaderKeys {
                verify: None,
                decrypt: Some(DecryptionKey::KeyWrap(&ck)),
            },
        ),
        (
            Protection::Encrypt(Recipient::EcdhEs(&rp), ContentEnc::A128Gcm),
            ReaderKeys {
                verify: None,
                decrypt: Some(DecryptionKey::EcdhEs(&rk)),
            },
        ),
        (
            Protection::SignThenEncrypt(
                SigningKey::Ec(&ek),
                Recipient::EcdhEs(&rp),
                ContentEnc::A128Gcm,
            ),
            ReaderKeys {
                verify: Some(VerifyingKey::Ec(&ep)),
                decrypt: Some(DecryptionKey::EcdhEs(&rk)),
            },
        ),
        (
            Protection::SignThenEncrypt(
                SigningKey::Hmac(&hk),
                Recipient::KeyWrap(&ck),
                ContentEnc::A128Gcm,
            ),
            ReaderKeys {
                verify: Some(VerifyingKey::Hmac(&hk)),
                decrypt: Some(DecryptionKey::KeyWrap(&ck)),
            },
        ),
    ];
    for (i, (p, r)) in cases.into_iter().enumerate() {
        let stored = esdata::protect(data, &a, written(), p).unwrap();
        let opened = esdata::open(&stored, &a, r).unwrap();
        assert_eq!(&*opened.content, data, "case {i}");
        assert_eq!(opened.created, written(), "case {i}");
        // The hosting CSE changes the content.
        let n = stored.split('.').count();
        let e = esdata::open(&flip(&stored, n - 2), &a, r).unwrap_err();
        assert_eq!(e.rsc, Rsc::OriginatorNotAuthenticated, "case {i}: {e}");
        // ... or moves it to another container, or changes its creator or contentInfo.
        for b in [
            BoundAttributes {
                to: "/in-cse/cse-mn/lock2/state".into(),
                ..a.clone()
            },
            BoundAttributes {
                cr: "CAE-other".into(),
                ..a.clone()
            },
            BoundAttributes {
                cnf: "text/plain:0:1".into(),
                ..a.clone()
            },
        ] {
            let e = esdata::open(&stored, &b, r).unwrap_err();
            assert_eq!(e.rsc, Rsc::OriginatorNotAuthenticated, "case {i}: {e}");
            assert!(e.dbg.contains("changed"), "{e}");
        }
        // ... or rewrites the header's binding (for JWE the header is the AAD; for JWS it is signed).
        let mut h = header_of(&stored);
        h["esda"]["to"] = json!("/elsewhere");
        assert!(esdata::open(
            &with_header(&stored, &h),
            &BoundAttributes {
                to: "/elsewhere".into(),
                ..a.clone()
            },
            r
        )
        .is_err());
    }
}

#[test]
fn esdata_reader_refuses_a_stripped_layer() {
    let hk = SymmetricKey::generate("s", 32);
    let ck = SymmetricKey::generate("c", 16);
    let a = attrs();
    let signed =
        esdata::protect(b"x", &a, written(), Protection::Sign(SigningKey::Hmac(&hk))).unwrap();
    let need_both = ReaderKeys {
        verify: Some(VerifyingKey::Hmac(&hk)),
        decrypt: Some(DecryptionKey::KeyWrap(&ck)),
    };
    assert_eq!(
        esdata::open(&signed, &a, need_both).unwrap_err().rsc,
        Rsc::OriginatorNotAuthenticated
    );
    let enc_only = esdata::protect(
        b"x",
        &a,
        written(),
        Protection::Encrypt(Recipient::KeyWrap(&ck), ContentEnc::A128Gcm),
    )
    .unwrap();
    assert_eq!(
        esdata::open(&enc_only, &a, need_both).unwrap_err().rsc,
        Rsc::OriginatorNotAuthenticated
    );
    // Plain content where protection is required.
    assert_eq!(
        esdata::open("{\"locked\":true}", &a, need_both)
            .unwrap_err()
            .rsc,
        Rsc::BadRequest
    );
    // A signature by another key.
    let other = SymmetricKey::generate("s", 32);
    let forged = esdata::protect(
        b"x",
        &a,
        written(),
        Protection::Sign(SigningKey::Hmac(&other)),
    )
    .unwrap();
    let r = ReaderKeys {
        verify: Some(VerifyingKey::Hmac(&hk)),
        decrypt: None,
    };
    assert_eq!(
        esdata::open(&forged, &a, r).unwrap_err().rsc,
        Rsc::OriginatorNotAuthenticated
    );
}

#[test]
fn esdata_creation_time_is_protected_and_required() {
    let hk = SymmetricKey::generate("s", 32);
    let ck = SymmetricKey::generate("c", 16);
    let a = attrs();
    let signed = ReaderKeys {
        verify: Some(VerifyingKey::Hmac(&hk)),
        decrypt: None,
    };
    let encrypted = ReaderKeys {
        verify: None,
        decrypt: Some(DecryptionKey::KeyWrap(&ck)),
    };
    let both = ReaderKeys {
        verify: Some(VerifyingKey::Hmac(&hk)),
        decrypt: Some(DecryptionKey::KeyWrap(&ck)),
    };
    let later = written() + Duration::hours(1);
    let jws =
        esdata::protect(b"x", &a, written(), Protection::Sign(SigningKey::Hmac(&hk))).unwrap();
    let jwe = esdata::protect(
        b"x",
        &a,
        written(),
        Protection::Encrypt(Recipient::KeyWrap(&ck), ContentEnc::A128Gcm),
    )
    .unwrap();
    // The time is in the protected header, in microseconds.
    for token in [&jws, &jwe] {
        assert_eq!(header_of(token)["esct"], json!(1_748_779_200_123_456i64));
    }
    // A CSE (or anyone) making an old reading look new: the signature / the tag covers esct.
    for (token, keys) in [(&jws, signed), (&jwe, encrypted)] {
        let mut h = header_of(token);
        h["esct"] = json!(later.timestamp_micros());
        let e = esdata::open(&with_header(token, &h), &a, keys).unwrap_err();
        assert_eq!(e.rsc, Rsc::OriginatorNotAuthenticated, "{e}");
    }
    // Nested: a holder of the encryption key re-wraps the signed reading under a later time.
    let nested = esdata::protect(
        b"x",
        &a,
        written(),
        Protection::SignThenEncrypt(
            SigningKey::Hmac(&hk),
            Recipient::KeyWrap(&ck),
            ContentEnc::A128Gcm,
        ),
    )
    .unwrap();
    let inner =
        jose::decrypt_compact(&nested, DecryptionKey::KeyWrap(&ck), &ContentEnc::ALL).unwrap();
    let mut outer = HeaderParams::new();
    outer.insert("cty".into(), "JOSE".into());
    outer.insert("esda".into(), serde_json::to_value(&a).unwrap());
    outer.insert("esct".into(), later.timestamp_micros().into());
    let rewrapped = jose::encrypt_compact(
        &inner.payload,
        Recipient::KeyWrap(&ck),
        ContentEnc::A128Gcm,
        &outer,
    )
    .unwrap();
    let e = esdata::open(&rewrapped, &a, both).unwrap_err();
    assert!(e.dbg.contains("creation times"), "{e}");
    assert_eq!(esdata::open(&nested, &a, both).unwrap().created, written());

    // Content in the format before esct (binding only) is refused with the reason, in every class.
    let mut old = HeaderParams::new();
    old.insert("esda".into(), serde_json::to_value(&a).unwrap());
    let old_jws = jose::sign_compact(b"x", SigningKey::Hmac(&hk), &old).unwrap();
    let old_jwe =
        jose::encrypt_compact(b"x", Recipient::KeyWrap(&ck), ContentEnc::A128Gcm, &old).unwrap();
    for (token, keys) in [(&old_jws, signed), (&old_jwe, encrypted)] {
        let e = esdata::open(token, &a, keys).unwrap_err();
        assert_eq!(e.rsc, Rsc::OriginatorNotAuthenticated, "{e}");
        assert!(e.dbg.contains("no creation time (esct)"), "{e}");
    }
    // A time that is not an integer count of microseconds.
    let mut odd = old.clone();
    odd.insert("esct".into(), "20250601T120000".into());
    let odd_jws = jose::sign_compact(b"x", SigningKey::Hmac(&hk), &odd).unwrap();
    let e = esdata::open(&odd_jws, &a, signed).unwrap_err();
    assert!(e.dbg.contains("not microseconds"), "{e}");
}

// ------------------------------------------------------------------------------------------------ groups

#[test]
fn group_command_members_only_and_signed_by_the_gateway() {
    let gw = EcKeyPair::generate("gw-sign").unwrap();
    let gw_pub = gw.public_key();
    let meters = SymmetricKey::generate("grp-meters", 16);
    let lights = SymmetricKey::generate("grp-lights", 16);
    for mgmt in [GroupKeyMgmt::KeyWrap, GroupKeyMgmt::Dir] {
        let cmd = group_message::seal_command(b"report now", &gw, &meters, mgmt).unwrap();
        assert_eq!(header_of(&cmd)["kid"], "grp-meters");
        assert_eq!(
            &*group_message::open_command(&cmd, &meters, mgmt, &gw_pub).unwrap(),
            b"report now"
        );
        // A member of another group cannot read it.
        let other = SymmetricKey::new("grp-meters", lights.secret().clone());
        assert!(group_message::open_command(&cmd, &other, mgmt, &gw_pub).is_err());
        assert!(group_message::open_command(&cmd, &lights, mgmt, &gw_pub).is_err());
        // Altered in transit.
        for i in [2, 3, 4] {
            assert!(group_message::open_command(&flip(&cmd, i), &meters, mgmt, &gw_pub).is_err());
        }
        // A member (it holds the group key) forging a command with its own key pair.
        let rogue = EcKeyPair::generate("gw-sign").unwrap();
        let forged = group_message::seal_command(b"unlock all", &rogue, &meters, mgmt).unwrap();
        let e = group_message::open_command(&forged, &meters, mgmt, &gw_pub).unwrap_err();
        assert_eq!(e.rsc, Rsc::OriginatorNotAuthenticated, "{e}");
    }
    // A member of both groups re-encrypts a meters command for the lights group: the signed grp differs.
    let cmd = group_message::seal_command(b"off", &gw, &meters, GroupKeyMgmt::KeyWrap).unwrap();
    let inner =
        jose::decrypt_compact(&cmd, DecryptionKey::KeyWrap(&meters), &ContentEnc::ALL).unwrap();
    let mut h = HeaderParams::new();
    h.insert("cty".into(), "JOSE".into());
    let moved = jose::encrypt_compact(
        &inner.payload,
        Recipient::KeyWrap(&lights),
        ContentEnc::A128Gcm,
        &h,
    )
    .unwrap();
    let e =
        group_message::open_command(&moved, &lights, GroupKeyMgmt::KeyWrap, &gw_pub).unwrap_err();
    assert!(e.dbg.contains("another group"), "{e}");
}

#[test]
fn group_credential_sealed_for_one_member() {
    let group = SymmetricKey::generate("grp-meters", 16);
    let shared = SymmetricKey::generate("kpsa-meter1", 16);
    let info = cred_info(1_748_779_200_000_001);
    let sealed =
        group_message::seal_credential(&group, "CMeter1", &info, MemberKey::Shared(&shared))
            .unwrap();
    assert!(!sealed.contains(&URL_SAFE_NO_PAD.encode(group.secret().expose())));
    // Decoded, no part carries the group key: the JWK is inside the ciphertext, which is not
    // JSON without the member key.
    let parts: Vec<&str> = sealed.split('.').collect();
    assert_eq!(parts.len(), 5, "a JWE compact serialization");
    let key = group.secret().expose();
    for (i, part) in parts.iter().enumerate() {
        let raw = URL_SAFE_NO_PAD.decode(part).unwrap();
        assert!(!raw.windows(key.len()).any(|w| w == key), "part {i}");
        assert!(!reveals(&String::from_utf8_lossy(&raw), key), "part {i}");
    }
    let ciphertext = URL_SAFE_NO_PAD.decode(parts[3]).unwrap();
    assert!(serde_json::from_slice::<Value>(&ciphertext).is_err());
    let got = group_message::open_credential(&sealed, "CMeter1", MemberUnwrapKey::Shared(&shared))
        .unwrap();
    assert_eq!(got.key, group);
    assert_eq!(got.info, info);
    // The relaying gateway has its own key with that member's kid, not the member's key.
    let gateway = SymmetricKey::new(
        "kpsa-meter1",
        SymmetricKey::generate("x", 16).secret().clone(),
    );
    assert!(
        group_message::open_credential(&sealed, "CMeter1", MemberUnwrapKey::Shared(&gateway))
            .is_err()
    );
    // Another member holding the same key material is not the audience.
    assert!(
        group_message::open_credential(&sealed, "CMeter2", MemberUnwrapKey::Shared(&shared))
            .is_err()
    );

    // P-256 members: ECDH-ES, signed by the server.
    let server = EcKeyPair::generate("in-cse-sign").unwrap();
    let member = EcKeyPair::generate("meter1-enc").unwrap();
    let sealed = group_message::seal_credential(
        &group,
        "CMeter1",
        &info,
        MemberKey::Ec(&member.public_key(), SigningKey::Ec(&server)),
    )
    .unwrap();
    let sp = server.public_key();
    let got = group_message::open_credential(
        &sealed,
        "CMeter1",
        MemberUnwrapKey::Ec(&member, VerifyingKey::Ec(&sp)),
    )
    .unwrap();
    assert_eq!(got.key, group);
    assert_eq!(got.info, info);
    // Anyone can encrypt to the member's public key; without the server's signature it is refused.
    let rogue = EcKeyPair::generate("in-cse-sign").unwrap();
    let fake = group_message::seal_credential(
        &SymmetricKey::generate("grp-meters", 16),
        "CMeter1",
        &info,
        MemberKey::Ec(&member.public_key(), SigningKey::Ec(&rogue)),
    )
    .unwrap();
    assert!(group_message::open_credential(
        &fake,
        "CMeter1",
        MemberUnwrapKey::Ec(&member, VerifyingKey::Ec(&sp))
    )
    .is_err());
    let other = EcKeyPair::generate("meter1-enc").unwrap();
    assert!(group_message::open_credential(
        &sealed,
        "CMeter1",
        MemberUnwrapKey::Ec(&other, VerifyingKey::Ec(&sp))
    )
    .is_err());
}

fn cred_info(version: u64) -> group_message::CredentialInfo {
    group_message::CredentialInfo {
        group: "/id-mn/cse-mn/gw/grpA".into(),
        version,
        issued: Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap(),
    }
}

#[test]
fn group_credential_version_and_time_are_sealed() {
    let group = SymmetricKey::generate("grp-meters", 16);
    let shared = SymmetricKey::generate("kpsa-meter1", 16);
    let info = cred_info(1_748_779_200_000_001);
    let sealed =
        group_message::seal_credential(&group, "CMeter1", &info, MemberKey::Shared(&shared))
            .unwrap();
    let h = header_of(&sealed);
    assert_eq!(h["gid"], "/id-mn/cse-mn/gw/grpA");
    assert_eq!(h["ver"], json!(1_748_779_200_000_001u64));
    assert_eq!(h["iat"], json!(1_748_779_200i64));
    // Raising the version (or changing the group or time) of a real credential breaks the tag.
    for (param, value) in [
        ("ver", json!(1_748_779_200_000_999u64)),
        ("gid", json!("/id-mn/cse-mn/gw/grpB")),
        ("iat", json!(1_900_000_000i64)),
    ] {
        let mut t = h.clone();
        t[param] = value;
        let e = group_message::open_credential(
            &with_header(&sealed, &t),
            "CMeter1",
            MemberUnwrapKey::Shared(&shared),
        )
        .unwrap_err();
        assert_eq!(e.rsc, Rsc::OriginatorNotAuthenticated, "{param}: {e}");
    }
    // A credential of the format before versions is refused with the reason.
    let mut old = HeaderParams::new();
    old.insert("aud".into(), "CMeter1".into());
    old.insert("cty".into(), "jwk+json".into());
    let old_sealed = jose::encrypt_compact(
        group.to_jwk().as_bytes(),
        Recipient::KeyWrap(&shared),
        ContentEnc::A128Gcm,
        &old,
    )
    .unwrap();
    let e =
        group_message::open_credential(&old_sealed, "CMeter1", MemberUnwrapKey::Shared(&shared))
            .unwrap_err();
    assert!(e.dbg.contains("no group, version and issue time"), "{e}");
    // Half of it, or a version that is no integer, is refused too.
    let mut half = old.clone();
    half.insert("gid".into(), "/id-mn/cse-mn/gw/grpA".into());
    half.insert("ver".into(), "2".into());
    half.insert("iat".into(), 1_748_779_200i64.into());
    let half_sealed = jose::encrypt_compact(
        group.to_jwk().as_bytes(),
        Recipient::KeyWrap(&shared),
        ContentEnc::A128Gcm,
        &half,
    )
    .unwrap();
    let e =
        group_message::open_credential(&half_sealed, "CMeter1", MemberUnwrapKey::Shared(&shared))
            .unwrap_err();
    assert!(e.dbg.contains("missing or not of its type"), "{e}");

    // ECDH-ES: anyone can re-encrypt the server's signed credential to the member under a
    // higher version in the encryption layer; the signed version counts and they must agree.
    let server = EcKeyPair::generate("in-cse-sign").unwrap();
    let sp = server.public_key();
    let member = EcKeyPair::generate("meter1-enc").unwrap();
    let sealed = group_message::seal_credential(
        &group,
        "CMeter1",
        &info,
        MemberKey::Ec(&member.public_key(), SigningKey::Ec(&server)),
    )
    .unwrap();
    let unwrap = MemberUnwrapKey::Ec(&member, VerifyingKey::Ec(&sp));
    let inner =
        jose::decrypt_compact(&sealed, DecryptionKey::EcdhEs(&member), &ContentEnc::ALL).unwrap();
    let mut outer = header_of(&sealed).as_object().unwrap().clone();
    for k in ["alg", "enc", "kid", "epk"] {
        outer.remove(k);
    }
    outer.insert("ver".into(), json!(1_748_779_200_000_999u64));
    let rewrapped = jose::encrypt_compact(
        &inner.payload,
        Recipient::EcdhEs(&member.public_key()),
        ContentEnc::A128Gcm,
        &outer,
    )
    .unwrap();
    let e = group_message::open_credential(&rewrapped, "CMeter1", unwrap).unwrap_err();
    assert!(e.dbg.contains("encryption layer"), "{e}");
    assert_eq!(
        group_message::open_credential(&sealed, "CMeter1", unwrap)
            .unwrap()
            .info,
        info
    );
}
