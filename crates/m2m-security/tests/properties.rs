//! Property tests of m2m-security's parsers of network input: JOSE compact objects and their headers
//! (TS-0003 clauses 8.4.3.2, 8.5.3), the identity of a certificate (TS-0003 clause 8.2.2.2), and the
//! access-control rules (TS-0003 clause 7.1.3: originator matching, privileges from JSON).
//!
//! What every property asserts: no input panics; a refusal maps to a 4xxx status, never a local failure
//! (5xxx); the algorithm allow-lists and the SP boundary hold whatever the input says; 64 KiB inputs are
//! handled in bounded time. Case counts are fixed so the whole file runs in seconds in a debug build.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use m2m_core::{CseId, EntityId, Home, SpId};
use m2m_security::access_control::originator::{entry_matches, EntryMatch};
use m2m_security::access_control::{
    decide, AccessOperation, AccessRequest, Location, NoGroups, Privileges,
};
use m2m_security::association::Proof;
use m2m_security::certificates::{
    check_fqdn, generate_key, identity_of, CertIdentity, CseNaming, KeyType,
};
use m2m_security::credentials::Secret;
use m2m_security::e2e::jose::{
    self, ContentEnc, DecryptionKey, EcKeyPair, EcPublicKey, HeaderParams, JoseError,
    JoseErrorKind, Recipient, SigningKey, SymmetricKey, VerifyingKey,
};
use m2m_security::registration_rules::{AppRule, Registration};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509Builder, X509};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------------------
// Shared helpers

/// A fixed number of cases, and no regression files: a failure found here becomes a named unit test of
/// its exact input next to the code it fixes.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

/// Upper bound for one call on a 64 KiB input in a debug build on a loaded 2-core machine: far above
/// what a linear algorithm needs, far below what a quadratic one takes.
const SLOW: Duration = Duration::from_secs(2);

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert!(took < SLOW, "{what} took {took:?}");
    out
}

/// Short identifier-like text, printable ASCII, and any Unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9._~-]{0,10}", "[ -~]{0,16}", ".{0,12}",]
}

/// JSON values whose object keys come mostly from `keys` and whose strings mostly from `words`.
fn json_value(
    keys: &'static [&'static str],
    words: &'static [&'static str],
) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0u64..70).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(words).prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    let key = prop_oneof![3 => select(keys).prop_map(str::to_owned), 1 => text()];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------------------
// JOSE (TS-0003 clauses 8.4.3.2, 8.5.3)

struct Keys {
    hmac: SymmetricKey,
    direct: [SymmetricKey; 3],
    wrap: [SymmetricKey; 3],
    ec: EcKeyPair,
    ec_public: EcPublicKey,
    /// Another P-256 public key, in JWK form, for `epk` headers that are on the curve.
    other_public_jwk: Value,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let sym =
        |kid: &str, len: usize| SymmetricKey::new(kid, Secret::new((1..=len as u8).collect()));
    let ec = EcKeyPair::generate("e1").expect("P-256 key");
    let ec_public = ec.public_key();
    let other = EcKeyPair::generate("other")
        .expect("P-256 key")
        .public_key();
    Keys {
        hmac: sym("k1", 32),
        direct: [sym("d16", 16), sym("d24", 24), sym("d32", 32)],
        wrap: [sym("w16", 16), sym("w24", 24), sym("w32", 32)],
        ec,
        ec_public,
        other_public_jwk: serde_json::from_str(&other.to_jwk()).expect("a JWK is JSON"),
    }
});

/// A refusal of a received object: a kind that maps to a 4xxx (bad input, or a failed integrity check),
/// never a local failure.
fn check_refusal(e: &JoseError, what: &str) {
    assert_ne!(e.kind, JoseErrorKind::Crypto, "{what}: {e}");
    let m2m = e.to_m2m("object");
    assert!(
        (4000..5000).contains(&m2m.rsc.code()),
        "{what}: {e} -> {}",
        m2m.rsc
    );
}

const HEADER_KEYS: &[&str] = &[
    "alg", "enc", "kid", "zip", "crit", "b64", "jwk", "jku", "x5u", "x5c", "x5t", "epk", "apu",
    "apv", "typ", "cty", "iv", "tag", "p2s", "p2c", "kty", "crv", "x", "y", "d", "k",
];
const HEADER_WORDS: &[&str] = &[
    "HS256",
    "HS384",
    "HS512",
    "ES256",
    "ES384",
    "RS256",
    "PS256",
    "EdDSA",
    "none",
    "None",
    "NONE",
    "dir",
    "A128KW",
    "A192KW",
    "A256KW",
    "ECDH-ES+A128KW",
    "ECDH-ES",
    "ECDH-ES+A256KW",
    "RSA-OAEP",
    "A128GCMKW",
    "PBES2-HS256+A128KW",
    "A128GCM",
    "A192GCM",
    "A256GCM",
    "A128CBC-HS256",
    "DEF",
    "EC",
    "P-256",
    "P-384",
    "oct",
    "k1",
    "d16",
    "d24",
    "d32",
    "w16",
    "w24",
    "w32",
    "e1",
    "JWT",
    "AAAA",
    "",
];

/// The algorithm names a header may carry, each allowed for exactly one key type, and others.
fn alg() -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(
        0.95,
        prop_oneof![
            6 => select(&HEADER_WORDS[..21]).prop_map(Value::from),
            1 => json_value(HEADER_KEYS, HEADER_WORDS),
        ],
    )
}

fn enc() -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            6 => select(vec!["A128GCM", "A192GCM", "A256GCM", "A128CBC-HS256", "A256CBC-HS512", "none"])
                .prop_map(Value::from),
            1 => json_value(HEADER_KEYS, HEADER_WORDS),
        ],
    )
}

fn kid() -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(
        0.95,
        prop_oneof![
            6 => select(vec!["k1", "d16", "d24", "d32", "w16", "w24", "w32", "e1", "K1", "k1 ", ""])
                .prop_map(Value::from),
            1 => json_value(HEADER_KEYS, HEADER_WORDS),
        ],
    )
}

/// An `epk` as an attacker sends it: our own public key, another key, the points swapped (off the
/// curve), or anything.
fn epk() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(()).prop_map(|_| KEYS.other_public_jwk.clone()),
        Just(()).prop_map(|_| serde_json::from_str(&KEYS.ec_public.to_jwk()).expect("JSON")),
        Just(()).prop_map(|_| {
            let mut k = KEYS.other_public_jwk.clone();
            let (x, y) = (k["x"].clone(), k["y"].clone());
            k["x"] = y;
            k["y"] = x;
            k
        }),
        (
            select(vec!["EC", "OKP", "RSA", "oct"]),
            select(vec!["P-256", "P-384", "X25519", ""]),
            prop::collection::vec(any::<u8>(), 0..40),
            prop::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(
                |(kty, crv, x, y)| json!({"kty": kty, "crv": crv, "x": b64(&x), "y": b64(&y)})
            ),
        json_value(HEADER_KEYS, HEADER_WORDS),
    ]
    .boxed()
}

/// A protected header: `alg`, `enc`, `kid` mostly of the right kind, and any other parameters.
fn header() -> BoxedStrategy<Map<String, Value>> {
    (
        alg(),
        enc(),
        kid(),
        prop::option::weighted(0.2, epk()),
        prop::collection::vec(
            (
                prop_oneof![3 => select(HEADER_KEYS).prop_map(str::to_owned), 1 => text()],
                json_value(HEADER_KEYS, HEADER_WORDS),
            ),
            0..3,
        ),
    )
        .prop_map(|(alg, enc, kid, epk, extra)| {
            let mut m = Map::new();
            for (k, v) in extra {
                m.insert(k, v);
            }
            for (k, v) in [("alg", alg), ("enc", enc), ("kid", kid), ("epk", epk)] {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            m
        })
        .boxed()
}

/// A header as [`header`] makes it, or half the time one whose `alg` and `kid` (and `enc`, when given)
/// are those a key expects, so that the checks after them run too.
fn header_near(
    alg: &'static str,
    kid: impl Strategy<Value = &'static str>,
    encs: Option<Vec<&'static str>>,
) -> impl Strategy<Value = Map<String, Value>> {
    let enc = match encs {
        Some(e) => select(e).prop_map(Some).boxed(),
        None => Just(None).boxed(),
    };
    (header(), any::<bool>(), kid, enc).prop_map(move |(mut h, near, kid, enc)| {
        if near {
            h.insert("alg".into(), alg.into());
            h.insert("kid".into(), kid.into());
            if let Some(enc) = enc {
                h.insert("enc".into(), enc.into());
            }
        }
        h
    })
}

/// One part of a compact serialization: base64url of anything, a header, or text that is not base64url.
fn part() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..48).prop_map(|b| b64(&b)),
        3 => header().prop_map(|h| b64(Value::Object(h).to_string().as_bytes())),
        1 => "[A-Za-z0-9_=+/-]{0,20}",
        1 => text(),
        1 => Just(String::new()),
    ]
    .boxed()
}

/// Compact-looking text: 1 to 7 parts joined by dots.
fn compact() -> impl Strategy<Value = String> {
    prop::collection::vec(part(), 1..8).prop_map(|p| p.join("."))
}

/// A compact object of the right number of parts whose header passes the checks for `key`: the
/// cryptography behind them then runs on the rest, which is anything, often of the right sizes.
fn jwe_for(alg: &'static str, kid: &'static str) -> BoxedStrategy<String> {
    let sized = |n: usize| {
        prop_oneof![
            1 => part(),
            2 => prop::collection::vec(any::<u8>(), n).prop_map(|b| b64(&b)),
        ]
        .boxed()
    };
    (0..3usize, prop::option::weighted(0.8, epk()))
        .prop_flat_map(move |(i, epk)| {
            let enc = ContentEnc::ALL[i];
            (
                Just((enc, epk)),
                sized(enc.key_len() + 8),
                sized(12),
                part(),
                sized(16),
            )
        })
        .prop_map(move |((enc, epk), ek, iv, ct, tag)| {
            let mut h = json!({"alg": alg, "enc": enc.name(), "kid": kid});
            if let Some(epk) = epk {
                h["epk"] = epk;
            }
            format!("{}.{ek}.{iv}.{ct}.{tag}", b64(h.to_string().as_bytes()))
        })
        .boxed()
}

fn verifying_keys() -> Vec<(&'static str, VerifyingKey<'static>)> {
    vec![
        ("HS256", VerifyingKey::Hmac(&KEYS.hmac)),
        ("ES256", VerifyingKey::Ec(&KEYS.ec_public)),
    ]
}

fn decryption_keys() -> Vec<(&'static str, DecryptionKey<'static>)> {
    let mut out = vec![("ECDH-ES", DecryptionKey::EcdhEs(&KEYS.ec))];
    for k in &KEYS.direct {
        out.push(("dir", DecryptionKey::Direct(k)));
    }
    for k in &KEYS.wrap {
        out.push(("AxxxKW", DecryptionKey::KeyWrap(k)));
    }
    out
}

/// `enc` allow-lists a caller passes.
fn allowed() -> impl Strategy<Value = Vec<ContentEnc>> {
    prop::sample::subsequence(ContentEnc::ALL.to_vec(), 0..=3)
}

/// The header parameters a received object may never carry.
const REFUSED: [&str; 7] = ["zip", "crit", "b64", "jwk", "jku", "x5u", "x5c"];

fn hs256(key: &[u8], input: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any length");
    mac.update(input.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// AES-GCM with the key's own size, as `dir` uses it: (ciphertext, tag).
fn gcm_seal(key: &[u8], iv: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut buf = plaintext.to_vec();
    let tag = match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .expect("16 bytes")
            .encrypt_in_place_detached(iv.into(), aad, &mut buf),
        24 => {
            aes_gcm::AesGcm::<aes_gcm::aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(key)
                .expect("24 bytes")
                .encrypt_in_place_detached(iv.into(), aad, &mut buf)
        }
        _ => aes_gcm::Aes256Gcm::new_from_slice(key)
            .expect("32 bytes")
            .encrypt_in_place_detached(iv.into(), aad, &mut buf),
    }
    .expect("AES-GCM seals");
    (buf, tag.to_vec())
}

proptest! {
    #![proptest_config(config(384))]

    /// Any compact-looking text, verified with either key: refused as malformed, unsupported, for another
    /// key, or forged; never a panic or a local failure.
    #[test]
    fn jws_refuses_any_text_cleanly(token in compact(), json_form in json_value(&["protected", "payload", "signature", "header", "signatures"], HEADER_WORDS)) {
        for (name, key) in verifying_keys() {
            if let Err(e) = jose::verify_compact(&token, key) {
                check_refusal(&e, name);
            }
            if let Err(e) = jose::verify_json(&json_form.to_string(), key) {
                check_refusal(&e, name);
            }
        }
    }

    /// Any compact-looking text, decrypted with any key and any `enc` allow-list: refused cleanly.
    #[test]
    fn jwe_refuses_any_text_cleanly(token in compact(), allowed in allowed()) {
        for (name, key) in decryption_keys() {
            if let Err(e) = jose::decrypt_compact(&token, key, &allowed) {
                check_refusal(&e, name);
            }
        }
    }

    /// Five parts whose header passes the allow-lists (so josekit's key unwrapping and ECDH run on
    /// attacker-chosen encrypted keys, IVs, tags and `epk`s): refused cleanly.
    #[test]
    fn jwe_refuses_bad_bodies_behind_good_headers(
        ecdh in jwe_for("ECDH-ES+A128KW", "e1"),
        kw128 in jwe_for("A128KW", "w16"),
        kw256 in jwe_for("A256KW", "w32"),
        dir in jwe_for("dir", "d16"),
    ) {
        let cases = [
            (ecdh, DecryptionKey::EcdhEs(&KEYS.ec)),
            (kw128, DecryptionKey::KeyWrap(&KEYS.wrap[0])),
            (kw256, DecryptionKey::KeyWrap(&KEYS.wrap[2])),
            (dir, DecryptionKey::Direct(&KEYS.direct[0])),
        ];
        for (token, key) in cases {
            match jose::decrypt_compact(&token, key, &ContentEnc::ALL) {
                Ok(_) => prop_assert!(false, "random parts decrypted: {token}"),
                Err(e) => check_refusal(&e, &token),
            }
        }
    }

    /// A correctly MACed JWS with any header: accepted only with alg HS256, this key's kid and no refused
    /// parameter; any other alg is refused as unsupported before the MAC is looked at. An ES256 key never
    /// accepts it, not even when the MAC key is the ES256 public key (key confusion).
    #[test]
    fn jws_alg_allow_list_holds_for_any_header(h in header_near("HS256", Just("k1"), None), payload in prop::collection::vec(any::<u8>(), 0..32)) {
        let header_b64 = b64(Value::Object(h.clone()).to_string().as_bytes());
        let input = format!("{header_b64}.{}", b64(&payload));
        let good = format!("{input}.{}", b64(&hs256(KEYS.hmac.secret().expose(), &input)));
        let confused = format!("{input}.{}", b64(&hs256(KEYS.ec_public.to_jwk().as_bytes(), &input)));
        let refused = REFUSED.iter().any(|p| h.contains_key(*p));
        let alg_ok = h.get("alg") == Some(&json!("HS256"));
        match jose::verify_compact(&good, VerifyingKey::Hmac(&KEYS.hmac)) {
            Ok(opened) => {
                prop_assert!(alg_ok && !refused && h.get("kid") == Some(&json!("k1")), "accepted {h:?}");
                prop_assert_eq!(&opened.payload[..], &payload[..]);
                prop_assert!(opened.header.keys().eq(h.keys()));
            }
            Err(e) => {
                check_refusal(&e, "HS256");
                if !alg_ok || refused {
                    prop_assert_eq!(e.kind, JoseErrorKind::Unsupported, "{:?}: {}", h, e);
                }
            }
        }
        for token in [&good, &confused] {
            match jose::verify_compact(token, VerifyingKey::Ec(&KEYS.ec_public)) {
                Ok(_) => prop_assert!(false, "an ES256 key accepted an HMAC: {h:?}"),
                Err(e) => {
                    check_refusal(&e, "ES256");
                    if h.get("alg") != Some(&json!("ES256")) || refused {
                        prop_assert_eq!(e.kind, JoseErrorKind::Unsupported, "{:?}: {}", h, e);
                    }
                }
            }
        }
    }

    /// A correctly sealed `dir` JWE with any header: opened only with alg dir, an allowed enc of the
    /// key's size, the key's kid and no refused parameter; any other alg or enc is refused as unsupported.
    #[test]
    fn jwe_alg_and_enc_allow_lists_hold_for_any_header(
        (size, h) in (0..3usize).prop_flat_map(|size| {
            let kid = ["d16", "d24", "d32"][size];
            (Just(size), header_near("dir", Just(kid), Some(vec![ContentEnc::ALL[size].name()])))
        }),
        allowed in allowed(),
        plaintext in prop::collection::vec(any::<u8>(), 0..32),
        iv in any::<[u8; 12]>(),
    ) {
        let key = &KEYS.direct[size];
        let header_b64 = b64(Value::Object(h.clone()).to_string().as_bytes());
        let (ct, tag) = gcm_seal(key.secret().expose(), &iv, header_b64.as_bytes(), &plaintext);
        let token = format!("{header_b64}..{}.{}.{}", b64(&iv), b64(&ct), b64(&tag));
        let refused = REFUSED.iter().any(|p| h.contains_key(*p));
        let alg_ok = h.get("alg") == Some(&json!("dir"));
        let enc = h.get("enc").and_then(Value::as_str).and_then(ContentEnc::from_name);
        let enc_ok = enc.is_some_and(|e| allowed.contains(&e));
        match jose::decrypt_compact(&token, DecryptionKey::Direct(key), &allowed) {
            Ok(opened) => {
                prop_assert!(alg_ok && enc_ok && !refused, "opened {h:?}");
                prop_assert_eq!(enc.map(ContentEnc::key_len), Some(key.secret().len()));
                prop_assert_eq!(h.get("kid").and_then(Value::as_str), Some(key.kid()));
                prop_assert_eq!(&opened.payload[..], &plaintext[..]);
            }
            Err(e) => {
                check_refusal(&e, "dir");
                if !alg_ok || !enc_ok || refused {
                    prop_assert_eq!(e.kind, JoseErrorKind::Unsupported, "{:?}: {}", h, e);
                }
            }
        }
        // Another key type on the same object refuses it, whatever the header says.
        for other in [DecryptionKey::KeyWrap(&KEYS.wrap[size]), DecryptionKey::EcdhEs(&KEYS.ec)] {
            match jose::decrypt_compact(&token, other, &allowed) {
                Ok(_) => prop_assert!(false, "a {:?} key opened a dir object: {:?}", other.alg(), h),
                Err(e) => check_refusal(&e, "other key"),
            }
        }
    }

    /// Any JWK text: a key, or a clean refusal.
    #[test]
    fn jwk_parsing_is_total(v in prop_oneof![
        json_value(HEADER_KEYS, HEADER_WORDS),
        epk(),
        epk().prop_map(|mut k| { if let Some(o) = k.as_object_mut() { o.insert("kid".into(), "x".into()); } k }),
    ], raw in text()) {
        for t in [v.to_string(), raw] {
            if let Err(e) = SymmetricKey::from_jwk(&t) { check_refusal(&e, "oct JWK") }
            if let Err(e) = EcPublicKey::from_jwk(&t) { check_refusal(&e, "EC public JWK") }
            if let Err(e) = EcKeyPair::from_jwk(&t) { check_refusal(&e, "EC private JWK") }
        }
    }
}

/// Header parameters a caller may add (none of the library's own).
fn extra_params() -> impl Strategy<Value = HeaderParams> {
    prop::collection::vec(
        (
            prop_oneof![
                select(vec!["typ", "cty", "seq", "ts", "x-m2m"]).prop_map(str::to_owned),
                "[a-z]{1,6}"
            ],
            prop_oneof![
                text().prop_map(Value::String),
                (0u64..1000).prop_map(Value::from)
            ],
        ),
        0..3,
    )
    .prop_map(|kv| {
        kv.into_iter()
            .filter(|(k, _)| {
                ![
                    "alg", "enc", "kid", "zip", "crit", "b64", "jwk", "jku", "x5u", "x5c", "epk",
                    "apu", "apv",
                ]
                .contains(&k.as_str())
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(config(96))]

    /// What the library signs or encrypts, with any payload and extra parameters, it opens again.
    #[test]
    fn jose_round_trips(payload in prop::collection::vec(any::<u8>(), 0..200), extra in extra_params(), i in 0..3usize) {
        let signers = [
            (SigningKey::Hmac(&KEYS.hmac), VerifyingKey::Hmac(&KEYS.hmac)),
            (SigningKey::Ec(&KEYS.ec), VerifyingKey::Ec(&KEYS.ec_public)),
        ];
        for (s, v) in signers {
            // A caller's parameter of a registered name and the wrong type is refused before signing.
            let Ok(token) = jose::sign_compact(&payload, s, &extra) else { continue };
            let opened = jose::verify_compact(&token, v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&opened.payload[..], &payload[..]);
            for (k, val) in &extra {
                prop_assert_eq!(opened.header.get(k), Some(val));
            }
        }
        let enc = ContentEnc::ALL[i];
        let recipients = [
            (Recipient::Direct(&KEYS.direct[i]), DecryptionKey::Direct(&KEYS.direct[i])),
            (Recipient::KeyWrap(&KEYS.wrap[i]), DecryptionKey::KeyWrap(&KEYS.wrap[i])),
            (Recipient::EcdhEs(&KEYS.ec_public), DecryptionKey::EcdhEs(&KEYS.ec)),
        ];
        for (to, key) in recipients {
            let Ok(token) = jose::encrypt_compact(&payload, to, enc, &extra) else { continue };
            let opened = jose::decrypt_compact(&token, key, &[enc]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&opened.payload[..], &payload[..]);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Certificate identities (TS-0003 clause 8.2.2.2)

const SP: &str = "m2m.example.com";

static CERT_KEY: LazyLock<PKey<Private>> =
    LazyLock::new(|| generate_key(KeyType::P256).expect("P-256 key"));

/// A self-signed certificate with exactly these subjectAltNames (any text, as a CA could write it),
/// read back from DER as a peer's certificate is.
fn cert_with(dns: &[String], uris: &[String], ips: &[&str]) -> X509 {
    let mut b = X509Builder::new().expect("builder");
    b.set_version(2).expect("v3");
    b.set_pubkey(&*CERT_KEY).expect("key");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("notBefore");
    b.set_not_after(&Asn1Time::days_from_now(1).expect("time"))
        .expect("notAfter");
    if !(dns.is_empty() && uris.is_empty() && ips.is_empty()) {
        let mut san = SubjectAlternativeName::new();
        for d in dns {
            san.dns(d);
        }
        for u in uris {
            san.uri(u);
        }
        for ip in ips {
            san.ip(ip);
        }
        let ext = san.build(&b.x509v3_context(None, None)).expect("SAN");
        b.append_extension(ext).expect("SAN");
    }
    b.sign(&CERT_KEY, MessageDigest::sha256()).expect("sign");
    let der = b.build().to_der().expect("DER");
    X509::from_der(&der).expect("our own DER parses")
}

/// dNSNames near the SP's domain (CSE-IDs, FQDNs, tricks) and anything.
fn dns_name() -> impl Strategy<Value = String> {
    let label = prop_oneof![
        4 => "[a-z0-9][a-z0-9-]{0,6}[a-z0-9]",
        1 => "[A-Za-z0-9_-]{0,6}",
        1 => ".{1,4}",
    ];
    let domain = select(vec![
        "m2m.example.com",
        "id-in.m2m.example.com",
        "ID-IN.m2m.example.com",
        "M2M.Example.COM",
        "m2m.example.com.",
        "evilm2m.example.com",
        "m2m.example.com.evil.org",
        "example.com",
        "keys.example.net",
        "",
    ]);
    prop_oneof![
        4 => (label.clone(), domain.clone()).prop_map(|(l, d)| format!("{l}.{d}")),
        2 => (label.clone(), label, domain).prop_map(|(a, b, d)| format!("{a}.{b}.{d}")),
        1 => select(vec!["*.m2m.example.com", "id-*.m2m.example.com", "*"]).prop_map(str::to_owned),
        1 => Just("localhost".to_owned()),
        1 => text(),
    ]
}

/// AE-ID URIs of this SP, of others, malformed, with wildcards, and anything.
fn uri() -> impl Strategy<Value = String> {
    let scheme = select(vec!["onem2m", "ONEM2M", "oneM2M", "https", "urn"]);
    let host = select(vec![
        "m2m.example.com",
        "M2M.EXAMPLE.COM",
        "other.example.org",
        "m2m.example.com.",
        "m2m.example.com:80",
        "user@m2m.example.com",
        "evilm2m.example.com",
        "",
    ]);
    let path = prop_oneof![
        "/S[A-Za-z0-9]{1,6}",
        "/[a-z-]{1,6}/C[A-Za-z0-9]{1,6}",
        "/[A-Za-z0-9/._~*%?#@-]{0,12}",
        select(vec![
            "/Sx*",
            "/id-in/C*",
            "//Sx",
            "/id-in/Cx/y",
            "/C",
            "/S",
            ""
        ])
        .prop_map(str::to_owned),
    ];
    let ae_id = prop_oneof![
        "/S[A-Za-z0-9._~-]{1,6}",
        "/[a-z0-9-]{1,6}/C[A-Za-z0-9._~-]{1,6}"
    ];
    prop_oneof![
        3 => (select(vec!["m2m.example.com", "M2M.Example.com"]), ae_id)
            .prop_map(|(h, p)| format!("onem2m://{h}{p}")),
        3 => (scheme, select(vec!["://", ":/", ":"]), host, path)
            .prop_map(|(s, sep, h, p)| format!("{s}{sep}{h}{p}")),
        1 => text(),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Any subjectAltNames: the identity is an AE-ID or CSE-ID of this SP that a SAN names exactly, an
    /// FQDN that a dNSName names, or a refusal; a wildcard in any dNSName or URI refuses the certificate.
    #[test]
    fn identity_stays_inside_the_sp(
        dns in prop::collection::vec(dns_name(), 0..4),
        uris in prop::collection::vec(uri(), 0..3),
        ips in prop::collection::vec(select(vec!["127.0.0.1", "::1", "192.0.2.7"]), 0..2),
        sp in prop_oneof![12 => Just(SP.to_owned()), 1 => Just("M2M.example.com.".to_owned()), 1 => Just(".".to_owned()), 1 => Just(String::new()), 2 => text()],
    ) {
        let cert = cert_with(&dns, &uris, &ips);
        // An SP that is no FQDN has no naming: nothing to read identities against.
        let Ok(naming) = CseNaming::new(&sp, "/id-in") else { return Ok(()) };
        let result = identity_of(&cert, &naming);
        if dns.iter().chain(&uris).any(|n| n.contains('*')) {
            prop_assert!(result.is_err(), "wildcard accepted: {result:?}");
        }
        let sp_norm = naming.sp.fqdn().to_owned();
        match result {
            Ok(CertIdentity::Entity(e)) if e.is_ae() => {
                prop_assert_eq!(e.sp(), &naming.sp);
                let id = e.sp_relative();
                let named = uris.iter().any(|u| {
                    u.split_once("://").is_some_and(|(scheme, rest)| {
                        scheme.eq_ignore_ascii_case("onem2m")
                            && rest.to_ascii_lowercase().starts_with(&format!("{sp_norm}/"))
                            && EntityId::parse(&rest[sp_norm.len()..], &Home::sp(naming.sp.clone())).ok().as_ref() == Some(&e)
                    })
                });
                prop_assert!(named, "AE-ID {id} is named by no URI of {sp_norm}: {uris:?}");
                prop_assert!(m2m_security::certificates::check_sp_relative_ae_id(&id).is_ok());
            }
            Ok(CertIdentity::Entity(e)) => {
                let cse = e.cse_id().expect("a CSE");
                let label = cse.bare();
                prop_assert!(!label.is_empty() && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
                let name = naming.dns_name(cse).expect("a CSE read from a name has one");
                // Named exactly by a dNSName (the CSE's own label in lower case; the rest any case).
                let named = dns.iter().any(|d| {
                    let d = d.trim_end_matches('.');
                    d.eq_ignore_ascii_case(&name) && d.starts_with(label)
                });
                prop_assert!(named, "CSE {e} is named by no dNSName: {dns:?}");
            }
            Ok(CertIdentity::Fqdn(f)) => {
                let named = dns.iter().any(|d| check_fqdn(d.trim_end_matches('.')).as_deref() == Ok(f.as_str()));
                prop_assert!(named, "FQDN {f} is named by no dNSName: {dns:?}");
                // A CSE's public domain name is never an FQDN.
                prop_assert!(matches!(naming.cse_of(&f), Ok(None)), "{f}");
            }
            Err(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Access control: originator matching and privileges (TS-0003 clause 7.1.3)

/// The reference meaning of a `*` pattern: dynamic programming over all prefixes, obviously correct and
/// slow, for short inputs only.
fn glob_reference(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // m[j]: the pattern so far matches text[..j].
    let mut m = vec![false; t.len() + 1];
    m[0] = true;
    for &c in &p {
        let mut next = vec![false; t.len() + 1];
        for j in 0..=t.len() {
            next[j] = if c == '*' {
                m[j] || (j > 0 && next[j - 1])
            } else {
                j > 0 && m[j - 1] && t[j - 1] == c
            };
        }
        m = next;
    }
    m[t.len()]
}

fn host() -> Home {
    Home::cse(
        SpId::parse(SP).expect("SP"),
        CseId::parse("/id-in").expect("CSE-ID"),
    )
}

/// Applies the registration rules' glob: the one public door to it without ID syntax around it.
fn app_id_glob(pattern: &str, text: &str) -> bool {
    let rule = AppRule {
        apci: None,
        aai: vec![pattern.to_owned()],
        aae: vec!["*".into()],
    };
    rule.admits(&Registration {
        credential_id: None,
        app_id: text,
        ae_id_stem: "C",
    })
}

const ACP_KEYS: &[&str] = &[
    "acr", "acor", "acop", "acco", "acaf", "acod", "actw", "acip", "aclr", "ipv4", "ipv6", "accr",
    "accc", "ty", "spty", "chty", "aca",
];
const ACP_WORDS: &[&str] = &[
    "all",
    "Cae1",
    "/id-in/Cae1",
    "//m2m.example.com/id-in/Cae1",
    "/id-in/C*",
    "C*",
    "*",
    "/id-mn",
    "m2m.example.com",
    "//m2m.example.com",
    "admin",
    "* * * * * * *",
    "0-59 * * * * * *",
    "* * * * * * 2000-2001",
    "10.0.0.0/8",
    "127.0.0.1",
    "::1/128",
    "0.0.0.0/0",
    "::/0",
    "DE",
];

proptest! {
    #![proptest_config(config(1024))]

    /// The glob of originator entries and registration rules means what a `*` pattern means.
    #[test]
    fn glob_matches_its_reference(
        pattern in "[ab*]{0,8}|[a-c*]{0,12}|.{0,6}",
        text in "[ab]{0,10}|[a-c*]{0,12}|.{0,6}",
    ) {
        let want = glob_reference(&pattern, &text);
        prop_assert_eq!(app_id_glob(&pattern, &text), want);
        // The same inside one segment of an SP-relative CSE-ID: `/pattern` against `/text` (kinds
        // apart: an `S` in front makes both an S-stem AE).
        let id_chars = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-._~*".contains(c));
        let same_kind = pattern.starts_with('S') == text.starts_with('S');
        if !pattern.is_empty() && id_chars(&pattern) && same_kind {
            let h = host();
            if let Ok(originator) = EntityId::parse(&format!("/{text}"), &h) {
                let got = entry_matches(&format!("/{pattern}"), &originator, &h, &NoGroups);
                prop_assert_eq!(got == EntryMatch::Yes, want, "/{} ~ /{}", pattern, text);
            }
        }
    }

    /// Any ID text: an entity whose segments are non-empty, without `*`, `/` or white space, that reads
    /// back as itself from each of its forms; or a refusal.
    #[test]
    fn entity_ids_are_total(id in prop_oneof![
        "(/{0,3}[A-Za-z0-9.*-]{0,5}){0,4}",
        "(C|S|/S|/[a-z]{1,3}/C)[A-Za-z0-9._~-]{0,6}",
        text(),
    ]) {
        let h = host();
        if let Ok(e) = EntityId::parse(&id, &h) {
            prop_assert!((2..=3).contains(&e.segments().len()));
            prop_assert!(e.segments().iter().all(|s| !s.is_empty() && !s.contains(['*', '/'])));
            prop_assert!(!e.absolute().chars().any(|c| c.is_whitespace() || c.is_control()));
            for form in [e.absolute(), e.as_seen_from(&h), e.shortest_from(&h)] {
                let back = EntityId::parse(&form, &h).ok();
                prop_assert_eq!(back.as_ref(), Some(&e), "{}", form);
            }
        }
    }
}

fn access_request<'a>(
    originator: &'a EntityId,
    op: AccessOperation,
    authenticated: bool,
    child: Option<u16>,
) -> AccessRequest<'a> {
    AccessRequest {
        originator,
        proof: if authenticated {
            Proof::Authenticated
        } else {
            Proof::Vouched
        },
        operation: op,
        ip: Some("10.1.2.3".parse().expect("IP")),
        time: chrono::Utc::now(),
        location: Some(Location {
            lat: 48.0,
            lon: 11.0,
        }),
        target_type: 3,
        child_type: child,
        attributes: None,
        roles: &[],
    }
}

const OPERATIONS: [AccessOperation; 6] = [
    AccessOperation::Create,
    AccessOperation::Retrieve,
    AccessOperation::Update,
    AccessOperation::Delete,
    AccessOperation::Notify,
    AccessOperation::Discovery,
];

/// Privileges-shaped JSON: an `acr` list of rule-like objects, or anything.
fn privileges_json() -> impl Strategy<Value = Value> {
    let entry = prop_oneof![
        4 => select(&ACP_WORDS[..10]).prop_map(Value::from),
        1 => select(ACP_WORDS).prop_map(Value::from),
        1 => json_value(ACP_KEYS, ACP_WORDS),
    ];
    // acco elements: well-formed contexts of each kind, and anything.
    let context = prop_oneof![
        select(&ACP_WORDS[11..14]).prop_map(|w| json!({"actw": [w]})),
        select(&ACP_WORDS[14..19]).prop_map(|c| json!({"acip": {"ipv4": [c], "ipv6": ["::1"]}})),
        (-90.0..90.0f64, -180.0..180.0f64, 0.0..1e7f64)
            .prop_map(|(a, o, r)| json!({"aclr": {"accr": [a, o, r]}})),
        Just(json!({"aclr": {"accc": ["DE"]}})),
        json_value(ACP_KEYS, ACP_WORDS),
    ];
    let detail = prop_oneof![
        prop::collection::vec(select(vec![2u16, 3, 4, 23]), 0..3)
            .prop_map(|c| json!({"ty": 3, "chty": c})),
        json_value(ACP_KEYS, ACP_WORDS),
    ];
    let rule = (
        prop::option::weighted(0.95, prop::collection::vec(entry, 0..3).prop_map(Value::Array)),
        prop::option::weighted(0.95, prop_oneof![6 => (0u64..128).prop_map(Value::from), 1 => json_value(ACP_KEYS, ACP_WORDS)]),
        prop::option::weighted(0.25, prop_oneof![3 => prop::collection::vec(context, 0..3).prop_map(Value::Array), 1 => json_value(ACP_KEYS, ACP_WORDS)]),
        prop::option::weighted(0.2, prop_oneof![3 => any::<bool>().prop_map(Value::Bool), 1 => json_value(ACP_KEYS, ACP_WORDS)]),
        prop::option::weighted(0.2, prop_oneof![3 => prop::collection::vec(detail, 0..3).prop_map(Value::Array), 1 => json_value(ACP_KEYS, ACP_WORDS)]),
        prop::option::weighted(0.05, (text(), json_value(ACP_KEYS, ACP_WORDS))),
    )
        .prop_map(|(acor, acop, acco, acaf, acod, other)| {
            let mut m = Map::new();
            for (k, v) in [("acor", acor), ("acop", acop), ("acco", acco), ("acaf", acaf), ("acod", acod)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            if let Some((k, v)) = other {
                m.insert(k, v);
            }
            Value::Object(m)
        });
    prop_oneof![
        4 => prop::collection::vec(prop_oneof![6 => rule, 1 => json_value(ACP_KEYS, ACP_WORDS)], 0..4)
            .prop_map(|rules| json!({ "acr": rules })),
        1 => json_value(ACP_KEYS, ACP_WORDS),
    ]
}

proptest! {
    #![proptest_config(config(768))]

    /// Any JSON: privileges (errors only for a top level that is not an object or an `acr` that is not a
    /// list), and a decision over them for any request that permits only by a rule that was understood,
    /// that names the operation, and whose `acaf` the request satisfies.
    #[test]
    fn privileges_fail_closed(
        v in privileges_json(),
        originator in prop_oneof![4 => select(&ACP_WORDS[..10]).prop_map(str::to_owned), 1 => text()],
        op in select(OPERATIONS.to_vec()),
        authenticated in any::<bool>(),
        child in prop::option::of(select(vec![2u16, 3, 4, 23])),
    ) {
        let parsed = Privileges::from_json(&v);
        let shape_ok = v.is_object() && v.get("acr").is_none_or(Value::is_array);
        prop_assert_eq!(parsed.is_ok(), shape_ok, "{}", v);
        let Ok(p) = parsed else { return Ok(()) };
        let _ = p.problems();
        let Ok(originator) = EntityId::parse(&originator, &host()) else { return Ok(()) };
        let req = access_request(&originator, op, authenticated, child);
        let d = decide(&[("acp1", &p)], &req, &host(), &NoGroups);
        if d.permit {
            let n: usize = d.reason
                .strip_prefix("permitted by rule ")
                .and_then(|r| r.strip_suffix(" of acp1"))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| TestCaseError::fail(format!("reason: {}", d.reason)))?;
            let rule = &p.rules[n - 1];
            prop_assert!(rule.defect.is_none(), "{:?}", rule);
            prop_assert!(rule.operations & op.bit() != 0, "{:?}", rule);
            prop_assert!(!rule.originators.is_empty());
            prop_assert!(authenticated || !rule.auth_flag);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Adversarial sizes

#[test]
fn matching_takes_bounded_time_on_64_kib_inputs() {
    const N: usize = 64 * 1024;
    let a = "a".repeat(N);
    let half = "a".repeat(N / 2);
    let patterns = [
        format!("*{half}b"),
        format!("{}b", "*a".repeat(N / 4)),
        format!("*{}*b", "a*".repeat(N / 4)),
        format!("{half}*{half}b"),
        "*".repeat(N),
    ];
    for p in &patterns {
        timed("registration rule glob", || app_id_glob(p, &a));
        let h = host();
        // Originators are at most 512 characters (identity::MAX_ID_LEN); the entries are not.
        let originator = EntityId::parse(&format!("/{}", &a[..500]), &h).expect("originator");
        timed("originator entry", || {
            entry_matches(&format!("/{p}"), &originator, &h, &NoGroups)
        });
        let acp = Privileges::from_json(&json!({"acr": [
            {"acor": [format!("/{p}"), format!("//{p}/{p}/{p}"), p], "acop": 63},
        ]}))
        .expect("privileges");
        timed("decide", || {
            decide(
                &[("acp1", &acp)],
                &access_request(&originator, AccessOperation::Retrieve, true, None),
                &h,
                &NoGroups,
            )
        });
    }
    let big_json = [
        format!("{}{}", "[".repeat(N / 2), "]".repeat(N / 2)),
        format!("{{\"acr\":[{}{{}}]}}", "{},".repeat(N / 3)),
        format!(
            "{{\"acr\":[{{\"acor\":[{}\"x\"],\"acop\":63}}]}}",
            "\"C*a*a*a*\",".repeat(N / 12)
        ),
    ];
    for text in &big_json {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let _ = timed("privileges", || {
            Privileges::from_json(&v).map(|p| p.problems().len())
        });
    }
    let long_token = format!("{}.{}.{}", "A".repeat(N), "B".repeat(N), "C".repeat(N));
    timed("JWS", || {
        jose::verify_compact(&long_token, VerifyingKey::Hmac(&KEYS.hmac)).err()
    });
    let long_jwe = format!(
        "{}....",
        b64(
            json!({"alg": "dir", "enc": "A128GCM", "kid": "d16", "p": a})
                .to_string()
                .as_bytes()
        )
    );
    timed("JWE", || {
        jose::decrypt_compact(
            &long_jwe,
            DecryptionKey::Direct(&KEYS.direct[0]),
            &ContentEnc::ALL,
        )
        .err()
    });
    let dots = ".".repeat(N);
    timed("JWE dots", || {
        jose::decrypt_compact(&dots, DecryptionKey::EcdhEs(&KEYS.ec), &ContentEnc::ALL).err()
    });
    let names: Vec<String> = (0..64)
        .map(|i| format!("{}{i}.{SP}", "a".repeat(60)))
        .collect();
    let cert = cert_with(
        &names,
        &[format!("onem2m://{SP}/S{}", "x".repeat(N / 2))],
        &[],
    );
    let naming = CseNaming::new(SP, "/id-in").expect("naming");
    timed("identity_of", || identity_of(&cert, &naming).err());
}
