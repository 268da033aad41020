//! JOSE for the end-to-end features (TS-0003 clauses 8.4.3.2, 8.5.3): typed keys, JWS and JWE with strict
//! algorithm allow-lists, on `josekit` 0.10 over the workspace's OpenSSL.
//!
//! The algorithm is never taken from the message: it follows from the key the caller supplies
//! (an HMAC key verifies only HS256, a P-256 public key only ES256; a direct key decrypts only `dir`, a
//! key-wrap key only AxxxKW of its own length, a P-256 private key only ECDH-ES+A128KW). A header that
//! names anything else, `none` included, is refused before any cryptography runs. `crit`, `b64`, `zip` and
//! header-embedded keys (`jwk`, `jku`, `x5u`, `x5c`) are refused too.

use crate::credentials::Secret;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use josekit::jwe::alg::ecdh_es::{EcdhEsJweDecrypter, EcdhEsJweEncrypter};
use josekit::jwe::{JweContext, JweHeader};
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair as JoseEcKeyPair};
use josekit::jwk::{Jwk, KeyPair};
use josekit::jws::alg::ecdsa::{EcdsaJwsSigner, EcdsaJwsVerifier};
use josekit::jws::{JwsContext, JwsHeader};
use m2m_core::{M2mError, ResponseStatusCode};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::LazyLock;
use zeroize::Zeroizing;

/// Extra protected-header parameters (JSON object members) a caller adds to a JWS or JWE.
pub type HeaderParams = Map<String, Value>;

/// Parameters the library sets or refuses itself; a caller may not pass them in [`HeaderParams`].
const RESERVED: [&str; 13] = [
    "alg", "enc", "kid", "zip", "crit", "b64", "jwk", "jku", "x5u", "x5c", "epk", "apu", "apv",
];

/// Parameters that must not appear in a received header: each would let the sender change how the
/// object is processed (compression, unencoded payload, critical extensions, or a key of its own choosing).
const REFUSED_IN_HEADER: [&str; 7] = ["zip", "crit", "b64", "jwk", "jku", "x5u", "x5c"];

/// Why a JOSE operation failed. The reason never contains key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoseError {
    /// What kind of failure, so each end-to-end feature can map it to its own status code.
    pub kind: JoseErrorKind,
    /// A short, secret-free reason.
    pub reason: String,
}

/// The kinds of [`JoseError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoseErrorKind {
    /// Not a compact/JSON serialization, bad base64url, a header that is not a JSON object.
    Malformed,
    /// An algorithm, `enc` or header parameter outside the allow-list.
    Unsupported,
    /// The key does not fit the object (other `kid`, wrong length, wrong curve).
    WrongKey,
    /// Signature, MAC or authentication tag check failed: the object was altered or forged.
    Integrity,
    /// Encryption or signing failed locally.
    Crypto,
}

impl JoseError {
    fn new(kind: JoseErrorKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }

    /// The generic oneM2M mapping (ESPrim has its own, see `esprim`): bad input 4000, a failed integrity
    /// check 4106 ORIGINATOR_NOT_AUTHENTICATED (the data's origin is not proven), local failures 5000.
    pub fn to_m2m(&self, what: &str) -> M2mError {
        let rsc = match self.kind {
            JoseErrorKind::Malformed | JoseErrorKind::Unsupported | JoseErrorKind::WrongKey => {
                ResponseStatusCode::BadRequest
            }
            JoseErrorKind::Integrity => ResponseStatusCode::OriginatorNotAuthenticated,
            JoseErrorKind::Crypto => ResponseStatusCode::InternalServerError,
        };
        M2mError::new(rsc, format!("{what}: {}", self.reason))
    }
}

impl fmt::Display for JoseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.reason)
    }
}

impl std::error::Error for JoseError {}

fn malformed(r: impl Into<String>) -> JoseError {
    JoseError::new(JoseErrorKind::Malformed, r)
}
fn unsupported(r: impl Into<String>) -> JoseError {
    JoseError::new(JoseErrorKind::Unsupported, r)
}
fn wrong_key(r: impl Into<String>) -> JoseError {
    JoseError::new(JoseErrorKind::WrongKey, r)
}
fn crypto(r: impl Into<String>) -> JoseError {
    JoseError::new(JoseErrorKind::Crypto, r)
}

// ---------------------------------------------------------------------------------------------------------
// Keys

/// A symmetric key and its key ID (`kid`): an HS256 key, a `dir` content key or an AES key-wrap key.
///
/// `Debug` shows the kid and the length only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymmetricKey {
    kid: String,
    key: Secret,
}

impl SymmetricKey {
    /// Wraps a key.
    pub fn new(kid: impl Into<String>, key: Secret) -> Self {
        Self {
            kid: kid.into(),
            key,
        }
    }

    /// A fresh random key of `len` bytes from the operating system's generator.
    pub fn generate(kid: impl Into<String>, len: usize) -> Self {
        use rand::RngCore;
        let mut k = Zeroizing::new(vec![0u8; len]);
        rand::rngs::OsRng.fill_bytes(&mut k);
        Self::new(kid, Secret::from_slice(&k))
    }

    /// The key ID.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key bytes.
    pub fn secret(&self) -> &Secret {
        &self.key
    }

    /// The key as a JWK `{"kty":"oct","kid":..,"k":..}` (RFC 7517). The text is secret: it is zeroed on drop.
    pub fn to_jwk(&self) -> Zeroizing<String> {
        let mut m = Map::new();
        m.insert("kty".into(), "oct".into());
        m.insert("kid".into(), self.kid.clone().into());
        m.insert("k".into(), URL_SAFE_NO_PAD.encode(self.key.expose()).into());
        Zeroizing::new(Value::Object(m).to_string())
    }

    /// Reads an `oct` JWK with a `kid`.
    pub fn from_jwk(jwk: &str) -> Result<Self, JoseError> {
        let m: Map<String, Value> =
            serde_json::from_str(jwk).map_err(|_| malformed("the JWK is not a JSON object"))?;
        if m.get("kty").and_then(Value::as_str) != Some("oct") {
            return Err(wrong_key("the JWK is not a symmetric (oct) key"));
        }
        let kid = m
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("the JWK has no kid"))?;
        let k = m
            .get("k")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("the JWK has no k"))?;
        let bytes = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(k)
                .map_err(|_| malformed("the JWK's k is not base64url"))?,
        );
        if bytes.is_empty() {
            return Err(wrong_key("the JWK's key is empty"));
        }
        Ok(Self::new(kid, Secret::from_slice(&bytes)))
    }
}

/// A P-256 key pair (ES256 signing, ECDH-ES key agreement) and its key ID.
///
/// Use one pair for signing and another for key agreement: the types allow both, key separation is the
/// caller's duty. `Debug` shows the kid only.
#[derive(Clone)]
pub struct EcKeyPair {
    kid: String,
    pair: JoseEcKeyPair,
    // Built once: turning a JWK into an OpenSSL key costs far more than the signature itself.
    signer: EcdsaJwsSigner,
    decrypter: EcdhEsJweDecrypter,
}

impl fmt::Debug for EcKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EcKeyPair(P-256, kid {:?})", self.kid)
    }
}

impl EcKeyPair {
    /// A fresh P-256 key pair.
    pub fn generate(kid: impl Into<String>) -> Result<Self, JoseError> {
        let pair = JoseEcKeyPair::generate(EcCurve::P256)
            .map_err(|_| crypto("P-256 key generation failed"))?;
        Self::from_pair(kid.into(), pair)
    }

    fn from_pair(kid: String, pair: JoseEcKeyPair) -> Result<Self, JoseError> {
        let private = pair.to_jwk_private_key();
        let bad = |_| wrong_key("the key pair is not a usable P-256 key");
        let signer = josekit::jws::ES256.signer_from_jwk(&private).map_err(bad)?;
        let decrypter = josekit::jwe::ECDH_ES_A128KW
            .decrypter_from_jwk(&private)
            .map_err(bad)?;
        Ok(Self {
            kid,
            pair,
            signer,
            decrypter,
        })
    }

    /// Reads a private P-256 JWK (`kty` EC, `crv` P-256, `x`, `y`, `d`, `kid`).
    pub fn from_jwk(jwk: &str) -> Result<Self, JoseError> {
        let jwk = parse_ec_jwk(jwk)?;
        if jwk.parameter("d").is_none() {
            return Err(wrong_key(
                "the JWK is a public key; a private key (d) is needed",
            ));
        }
        let kid = jwk_kid(&jwk)?;
        let pair = JoseEcKeyPair::from_jwk(&jwk)
            .map_err(|_| wrong_key("the JWK is not a valid P-256 private key"))?;
        Self::from_pair(kid, pair)
    }

    /// The private key as a JWK with its kid; the text is secret and zeroed on drop.
    pub fn to_jwk(&self) -> Zeroizing<String> {
        let mut jwk = self.pair.to_jwk_key_pair();
        jwk.set_key_id(self.kid.clone());
        Zeroizing::new(jwk.to_string())
    }

    /// The key ID.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half.
    pub fn public_key(&self) -> EcPublicKey {
        let mut jwk = self.pair.to_jwk_public_key();
        jwk.set_key_id(self.kid.clone());
        EcPublicKey::from_parsed(self.kid.clone(), jwk).expect("our own public key is valid")
    }
}

/// A P-256 public key (ES256 verification, ECDH-ES encryption to its holder) and its key ID.
#[derive(Clone, Debug)]
pub struct EcPublicKey {
    kid: String,
    jwk: Jwk,
    verifier: EcdsaJwsVerifier,
    encrypter: EcdhEsJweEncrypter,
}

impl EcPublicKey {
    /// Reads a public P-256 JWK with a `kid`; a private member `d` is refused (it would be a leak).
    pub fn from_jwk(jwk: &str) -> Result<Self, JoseError> {
        let jwk = parse_ec_jwk(jwk)?;
        if jwk.parameter("d").is_some() {
            return Err(wrong_key(
                "the JWK holds a private key (d); pass the public key only",
            ));
        }
        let kid = jwk_kid(&jwk)?;
        Self::from_parsed(kid, jwk)
    }

    fn from_parsed(kid: String, jwk: Jwk) -> Result<Self, JoseError> {
        // Fails for a point off the curve: josekit builds the key through OpenSSL, which checks it.
        let bad = |_| wrong_key("the JWK is not a valid P-256 public key");
        let verifier = josekit::jws::ES256.verifier_from_jwk(&jwk).map_err(bad)?;
        let encrypter = josekit::jwe::ECDH_ES_A128KW
            .encrypter_from_jwk(&jwk)
            .map_err(bad)?;
        Ok(Self {
            kid,
            jwk,
            verifier,
            encrypter,
        })
    }

    /// The public key as a JWK with its kid.
    pub fn to_jwk(&self) -> String {
        self.jwk.to_string()
    }

    /// The key ID.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

fn parse_ec_jwk(text: &str) -> Result<Jwk, JoseError> {
    let jwk = Jwk::from_bytes(text.as_bytes()).map_err(|_| malformed("the JWK is not valid"))?;
    if jwk.key_type() != "EC" || jwk.curve() != Some("P-256") {
        return Err(wrong_key("the JWK is not a P-256 (EC) key"));
    }
    Ok(jwk)
}

fn jwk_kid(jwk: &Jwk) -> Result<String, JoseError> {
    jwk.key_id()
        .map(str::to_string)
        .ok_or_else(|| malformed("the JWK has no kid"))
}

// ---------------------------------------------------------------------------------------------------------
// JWS

/// The JWS algorithms of this project (TS-0003 table 8.5.3.3-2 subset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwsAlg {
    /// HMAC-SHA-256; keys of at least 32 bytes (RFC 7518 clause 3.2).
    Hs256,
    /// ECDSA P-256 SHA-256.
    Es256,
}

impl JwsAlg {
    /// The `alg` header value.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Es256 => "ES256",
        }
    }
}

/// The key that signs; it fixes the algorithm.
#[derive(Clone, Copy, Debug)]
pub enum SigningKey<'a> {
    /// HS256.
    Hmac(&'a SymmetricKey),
    /// ES256.
    Ec(&'a EcKeyPair),
}

/// The key that verifies; it fixes the one algorithm accepted.
#[derive(Clone, Copy, Debug)]
pub enum VerifyingKey<'a> {
    /// HS256 only.
    Hmac(&'a SymmetricKey),
    /// ES256 only.
    Ec(&'a EcPublicKey),
}

impl SigningKey<'_> {
    /// The algorithm this key signs with.
    pub fn alg(&self) -> JwsAlg {
        match self {
            Self::Hmac(_) => JwsAlg::Hs256,
            Self::Ec(_) => JwsAlg::Es256,
        }
    }

    /// The key ID put into the header.
    pub fn kid(&self) -> &str {
        match self {
            Self::Hmac(k) => k.kid(),
            Self::Ec(k) => k.kid(),
        }
    }

    fn signer(&self) -> Result<Box<dyn josekit::jws::JwsSigner>, JoseError> {
        match self {
            Self::Hmac(k) => josekit::jws::HS256
                .signer_from_bytes(k.secret().expose())
                .map(|s| Box::new(s) as Box<dyn josekit::jws::JwsSigner>)
                .map_err(|_| wrong_key("HS256 needs a key of at least 32 bytes")),
            Self::Ec(k) => Ok(Box::new(k.signer.clone())),
        }
    }
}

impl VerifyingKey<'_> {
    /// The one algorithm this key accepts.
    pub fn alg(&self) -> JwsAlg {
        match self {
            Self::Hmac(_) => JwsAlg::Hs256,
            Self::Ec(_) => JwsAlg::Es256,
        }
    }

    /// The key ID a header must carry.
    pub fn kid(&self) -> &str {
        match self {
            Self::Hmac(k) => k.kid(),
            Self::Ec(k) => k.kid(),
        }
    }

    fn verifier(&self) -> Result<Box<dyn josekit::jws::JwsVerifier>, JoseError> {
        match self {
            Self::Hmac(k) => josekit::jws::HS256
                .verifier_from_bytes(k.secret().expose())
                .map(|s| Box::new(s) as Box<dyn josekit::jws::JwsVerifier>)
                .map_err(|_| wrong_key("HS256 needs a key of at least 32 bytes")),
            Self::Ec(k) => Ok(Box::new(k.verifier.clone())),
        }
    }
}

/// A verified or decrypted object: its payload and its protected header.
#[derive(Debug)]
pub struct Opened {
    /// The payload (JWS) or plaintext (JWE); zeroed on drop since it may be a secret.
    pub payload: Zeroizing<Vec<u8>>,
    /// The protected header, as sent.
    pub header: HeaderParams,
}

static JWS_CONTEXT: LazyLock<JwsContext> = LazyLock::new(JwsContext::new);

fn jws_header(key: &SigningKey<'_>, extra: &HeaderParams) -> Result<JwsHeader, JoseError> {
    check_extra(extra)?;
    let mut h = JwsHeader::new();
    for (k, v) in extra {
        h.set_claim(k, Some(v.clone()))
            .map_err(|_| unsupported(format!("header parameter {k:?} has a bad value")))?;
    }
    h.set_algorithm(key.alg().name());
    h.set_key_id(key.kid());
    Ok(h)
}

/// Signs `payload` into a JWS Compact Serialization (RFC 7515 clause 7.1). `kid` is the key's.
pub fn sign_compact(
    payload: &[u8],
    key: SigningKey<'_>,
    extra: &HeaderParams,
) -> Result<String, JoseError> {
    let header = jws_header(&key, extra)?;
    JWS_CONTEXT
        .serialize_compact(payload, &header, &*key.signer()?)
        .map_err(|_| crypto("JWS signing failed"))
}

/// Signs `payload` into a flattened JWS JSON Serialization (RFC 7515 clause 7.2.2).
pub fn sign_json(
    payload: &[u8],
    key: SigningKey<'_>,
    extra: &HeaderParams,
) -> Result<String, JoseError> {
    check_extra(extra)?;
    let mut set = josekit::jws::JwsHeaderSet::new();
    for (k, v) in extra {
        set.set_claim(k, Some(v.clone()), true)
            .map_err(|_| unsupported(format!("header parameter {k:?} has a bad value")))?;
    }
    set.set_algorithm(key.alg().name(), true);
    set.set_key_id(key.kid(), true);
    JWS_CONTEXT
        .serialize_flattened_json(payload, &set, &*key.signer()?)
        .map_err(|_| crypto("JWS signing failed"))
}

/// Verifies a JWS Compact Serialization with `key`; only the key's algorithm and kid are accepted.
pub fn verify_compact(token: &str, key: VerifyingKey<'_>) -> Result<Opened, JoseError> {
    let parts = split_compact(token, 3, "JWS")?;
    let header = decode_header(parts[0])?;
    check_jws_header(&header, &key)?;
    let (payload, _) = JWS_CONTEXT
        .deserialize_compact(token, &*key.verifier()?)
        .map_err(|_| integrity("the JWS signature does not verify"))?;
    Ok(Opened {
        payload: Zeroizing::new(payload),
        header,
    })
}

/// Verifies a flattened or general JWS JSON Serialization with `key`, under the same rules.
pub fn verify_json(token: &str, key: VerifyingKey<'_>) -> Result<Opened, JoseError> {
    let v: Map<String, Value> =
        serde_json::from_str(token).map_err(|_| malformed("the JWS is not a JSON object"))?;
    if v.contains_key("header") || v.contains_key("signatures") {
        // Unprotected headers and multiple signatures widen what an attacker controls; not needed here.
        return Err(unsupported(
            "only the flattened JWS JSON form with a protected header is accepted",
        ));
    }
    let protected = v
        .get("protected")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("the JWS has no protected header"))?;
    let header = decode_header(protected)?;
    check_jws_header(&header, &key)?;
    let (payload, _) = JWS_CONTEXT
        .deserialize_json(token, &*key.verifier()?)
        .map_err(|_| integrity("the JWS signature does not verify"))?;
    Ok(Opened {
        payload: Zeroizing::new(payload),
        header,
    })
}

fn integrity(r: &str) -> JoseError {
    JoseError::new(JoseErrorKind::Integrity, r)
}

fn check_jws_header(header: &HeaderParams, key: &VerifyingKey<'_>) -> Result<(), JoseError> {
    check_received(header)?;
    let alg = header.get("alg").and_then(Value::as_str);
    if alg != Some(key.alg().name()) {
        return Err(unsupported(format!(
            "JWS alg {} is not accepted with this key (only {})",
            show(alg),
            key.alg().name()
        )));
    }
    check_kid(header, key.kid())
}

// ---------------------------------------------------------------------------------------------------------
// JWE

/// Content encryption (`enc`, TS-0003 table 8.5.3.2-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentEnc {
    /// AES-128-GCM.
    A128Gcm,
    /// AES-192-GCM.
    A192Gcm,
    /// AES-256-GCM.
    A256Gcm,
}

impl ContentEnc {
    /// All of them.
    pub const ALL: [Self; 3] = [Self::A128Gcm, Self::A192Gcm, Self::A256Gcm];

    /// The `enc` header value.
    pub const fn name(self) -> &'static str {
        match self {
            Self::A128Gcm => "A128GCM",
            Self::A192Gcm => "A192GCM",
            Self::A256Gcm => "A256GCM",
        }
    }

    /// The content key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Self::A128Gcm => 16,
            Self::A192Gcm => 24,
            Self::A256Gcm => 32,
        }
    }

    /// The value named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// Key management (`alg`, TS-0003 table 8.5.3.2-3 subset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMgmt {
    /// Direct encryption: the key is the content key.
    Dir,
    /// AES key wrap, 128-bit key.
    A128Kw,
    /// AES key wrap, 192-bit key.
    A192Kw,
    /// AES key wrap, 256-bit key.
    A256Kw,
    /// ECDH-ES (P-256) with AES-128 key wrap.
    EcdhEsA128Kw,
}

impl KeyMgmt {
    /// The `alg` header value.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Dir => "dir",
            Self::A128Kw => "A128KW",
            Self::A192Kw => "A192KW",
            Self::A256Kw => "A256KW",
            Self::EcdhEsA128Kw => "ECDH-ES+A128KW",
        }
    }

    fn key_wrap_for(len: usize) -> Result<Self, JoseError> {
        match len {
            16 => Ok(Self::A128Kw),
            24 => Ok(Self::A192Kw),
            32 => Ok(Self::A256Kw),
            n => Err(wrong_key(format!(
                "an AES key-wrap key has 16, 24 or 32 bytes, not {n}"
            ))),
        }
    }
}

/// Whom a JWE is for; the variant and the key length fix `alg`.
#[derive(Clone, Copy, Debug)]
pub enum Recipient<'a> {
    /// `dir`: the key is the content key (its length must match `enc`).
    Direct(&'a SymmetricKey),
    /// A128KW / A192KW / A256KW by the key's length.
    KeyWrap(&'a SymmetricKey),
    /// ECDH-ES+A128KW to the holder of the P-256 private key.
    EcdhEs(&'a EcPublicKey),
}

/// The key that decrypts; it fixes the one `alg` accepted.
#[derive(Clone, Copy, Debug)]
pub enum DecryptionKey<'a> {
    /// `dir` only.
    Direct(&'a SymmetricKey),
    /// AxxxKW of the key's length only.
    KeyWrap(&'a SymmetricKey),
    /// ECDH-ES+A128KW only.
    EcdhEs(&'a EcKeyPair),
}

impl Recipient<'_> {
    /// The key management this recipient key implies.
    pub fn alg(&self) -> Result<KeyMgmt, JoseError> {
        match self {
            Self::Direct(_) => Ok(KeyMgmt::Dir),
            Self::KeyWrap(k) => KeyMgmt::key_wrap_for(k.secret().len()),
            Self::EcdhEs(_) => Ok(KeyMgmt::EcdhEsA128Kw),
        }
    }

    fn kid(&self) -> &str {
        match self {
            Self::Direct(k) | Self::KeyWrap(k) => k.kid(),
            Self::EcdhEs(k) => k.kid(),
        }
    }

    fn encrypter(&self) -> Result<Box<dyn josekit::jwe::JweEncrypter>, JoseError> {
        let bad = |_| wrong_key("the key does not fit its key management algorithm");
        Ok(match (self, self.alg()?) {
            (Self::Direct(k), _) => Box::new(
                josekit::jwe::Dir
                    .encrypter_from_bytes(k.secret().expose())
                    .map_err(bad)?,
            ),
            (Self::KeyWrap(k), alg) => Box::new(
                aeskw(alg)
                    .encrypter_from_bytes(k.secret().expose())
                    .map_err(bad)?,
            ),
            (Self::EcdhEs(k), _) => Box::new(k.encrypter.clone()),
        })
    }
}

impl DecryptionKey<'_> {
    /// The one key management algorithm accepted.
    pub fn alg(&self) -> Result<KeyMgmt, JoseError> {
        match self {
            Self::Direct(_) => Ok(KeyMgmt::Dir),
            Self::KeyWrap(k) => KeyMgmt::key_wrap_for(k.secret().len()),
            Self::EcdhEs(_) => Ok(KeyMgmt::EcdhEsA128Kw),
        }
    }

    /// The key ID a header must carry.
    pub fn kid(&self) -> &str {
        match self {
            Self::Direct(k) | Self::KeyWrap(k) => k.kid(),
            Self::EcdhEs(k) => k.kid(),
        }
    }

    fn decrypter(&self) -> Result<Box<dyn josekit::jwe::JweDecrypter>, JoseError> {
        let bad = |_| wrong_key("the key does not fit its key management algorithm");
        Ok(match (self, self.alg()?) {
            (Self::Direct(k), _) => Box::new(
                josekit::jwe::Dir
                    .decrypter_from_bytes(k.secret().expose())
                    .map_err(bad)?,
            ),
            (Self::KeyWrap(k), alg) => Box::new(
                aeskw(alg)
                    .decrypter_from_bytes(k.secret().expose())
                    .map_err(bad)?,
            ),
            (Self::EcdhEs(k), _) => Box::new(k.decrypter.clone()),
        })
    }
}

fn aeskw(alg: KeyMgmt) -> josekit::jwe::alg::aeskw::AeskwJweAlgorithm {
    match alg {
        KeyMgmt::A192Kw => josekit::jwe::A192KW,
        KeyMgmt::A256Kw => josekit::jwe::A256KW,
        _ => josekit::jwe::A128KW,
    }
}

/// A JWE context that knows only AES-GCM and no compression, so `zip` and the CBC-HMAC suites are
/// refused even if a check above were missed.
static JWE_CONTEXT: LazyLock<JweContext> = LazyLock::new(|| {
    let mut c = JweContext::new();
    c.remove_compression("DEF");
    for enc in ["A128CBC-HS256", "A192CBC-HS384", "A256CBC-HS512"] {
        c.remove_content_encryption(enc);
    }
    c
});

/// Encrypts `plaintext` into a JWE Compact Serialization (RFC 7516 clause 7.1) for `to`, with a fresh
/// random IV (and content key, unless `dir`).
pub fn encrypt_compact(
    plaintext: &[u8],
    to: Recipient<'_>,
    enc: ContentEnc,
    extra: &HeaderParams,
) -> Result<String, JoseError> {
    check_extra(extra)?;
    // dir: gcm() refuses a key whose length does not fit enc; the others: encrypter() via alg().
    if let Recipient::Direct(k) = to {
        return dir_encrypt(plaintext, k, enc, extra);
    }
    let mut h = JweHeader::new();
    for (k, v) in extra {
        h.set_claim(k, Some(v.clone()))
            .map_err(|_| unsupported(format!("header parameter {k:?} has a bad value")))?;
    }
    h.set_content_encryption(enc.name());
    h.set_key_id(to.kid());
    JWE_CONTEXT
        .serialize_compact(plaintext, &h, &*to.encrypter()?)
        .map_err(|_| crypto("JWE encryption failed"))
}

/// Decrypts a JWE Compact Serialization with `key`. Only the key's `alg`, its `kid`, and an `enc` in
/// `allowed` are accepted; a wrong tag or altered header fails with [`JoseErrorKind::Integrity`].
pub fn decrypt_compact(
    token: &str,
    key: DecryptionKey<'_>,
    allowed: &[ContentEnc],
) -> Result<Opened, JoseError> {
    let parts = split_compact(token, 5, "JWE")?;
    let header = decode_header(parts[0])?;
    let enc = check_jwe_header(&header, &key, allowed)?;
    if let DecryptionKey::Direct(k) = key {
        return dir_decrypt(&parts, k, enc).map(|payload| Opened { payload, header });
    }
    // The wrapped content key is the content key plus 8 bytes (RFC 3394 clause 2.2.1). Checked here
    // because josekit's AES key unwrap panics on fewer than 8 bytes (`len - 8`), and its
    // ECDH-ES+A128KW on an empty encrypted key part (`unreachable!`).
    if decode_part(parts[1])?.len() != enc.key_len() + 8 {
        return Err(malformed(format!(
            "the encrypted key of {} {} has {} bytes",
            key.alg()?.name(),
            enc.name(),
            enc.key_len() + 8
        )));
    }
    let (plaintext, _) = JWE_CONTEXT
        .deserialize_compact(token, &*key.decrypter()?)
        .map_err(|_| integrity("the JWE does not decrypt (altered, or for another key)"))?;
    Ok(Opened {
        payload: Zeroizing::new(plaintext),
        header,
    })
}

/// The header checks of [`decrypt_compact`]: the key's alg, an allowed enc, the key's kid.
fn check_jwe_header(
    header: &HeaderParams,
    key: &DecryptionKey<'_>,
    allowed: &[ContentEnc],
) -> Result<ContentEnc, JoseError> {
    check_received(header)?;
    let alg = header.get("alg").and_then(Value::as_str);
    let expected = key.alg()?.name();
    if alg != Some(expected) {
        return Err(unsupported(format!(
            "JWE alg {} is not accepted with this key (only {expected})",
            show(alg)
        )));
    }
    let enc = header.get("enc").and_then(Value::as_str);
    let enc = enc
        .and_then(ContentEnc::from_name)
        .filter(|e| allowed.contains(e))
        .ok_or_else(|| unsupported(format!("JWE enc {} is not accepted", show(enc))))?;
    check_kid(header, key.kid())?;
    Ok(enc)
}

// `dir` + AES-GCM is done here with RustCrypto `aes-gcm` (already in the workspace) instead of josekit:
// josekit's OpenSSL 3 path fetches the cipher by name on every call (locks and string compares), which
// was most of an ESPrim round trip. The format is RFC 7516 clause 5.1 with an empty encrypted key; the
// jwcrypto interoperability test checks it both ways for A128GCM, A192GCM and A256GCM.

const GCM_IV_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;

fn dir_encrypt(
    plaintext: &[u8],
    key: &SymmetricKey,
    enc: ContentEnc,
    extra: &HeaderParams,
) -> Result<String, JoseError> {
    let mut h = extra.clone();
    h.insert("alg".into(), KeyMgmt::Dir.name().into());
    h.insert("enc".into(), enc.name().into());
    h.insert("kid".into(), key.kid().into());
    let header_b64 = URL_SAFE_NO_PAD.encode(Value::Object(h).to_string());
    let iv: [u8; GCM_IV_LEN] = {
        use rand::RngCore;
        let mut iv = [0u8; GCM_IV_LEN];
        rand::rngs::OsRng.fill_bytes(&mut iv);
        iv
    };
    let mut buf = plaintext.to_vec();
    let tag = gcm(key, enc, |c| {
        c.encrypt(&iv, header_b64.as_bytes(), &mut buf)
            .map(|t| t.to_vec())
    })?
    .map_err(|_| crypto("AES-GCM encryption failed"))?;
    Ok(format!(
        "{header_b64}..{}.{}.{}",
        URL_SAFE_NO_PAD.encode(iv),
        URL_SAFE_NO_PAD.encode(&buf),
        URL_SAFE_NO_PAD.encode(tag)
    ))
}

fn dir_decrypt(
    parts: &[&str],
    key: &SymmetricKey,
    enc: ContentEnc,
) -> Result<Zeroizing<Vec<u8>>, JoseError> {
    if !parts[1].is_empty() {
        return Err(malformed("alg dir carries no encrypted key"));
    }
    let iv = decode_part(parts[2])?;
    let tag = decode_part(parts[4])?;
    if iv.len() != GCM_IV_LEN || tag.len() != GCM_TAG_LEN {
        return Err(malformed("AES-GCM needs a 96-bit IV and a 128-bit tag"));
    }
    let mut buf = Zeroizing::new(decode_part(parts[3])?);
    gcm(key, enc, |c| {
        c.decrypt(&iv, parts[0].as_bytes(), &mut buf, &tag)
    })?
    .map_err(|_| integrity("the JWE does not decrypt (altered, or for another key)"))?;
    Ok(buf)
}

/// One AES-GCM key size, behind a common interface.
trait Gcm {
    fn encrypt(&self, iv: &[u8], aad: &[u8], buf: &mut Vec<u8>) -> Result<[u8; 16], ()>;
    fn decrypt(&self, iv: &[u8], aad: &[u8], buf: &mut Vec<u8>, tag: &[u8]) -> Result<(), ()>;
}

impl<C: aes_gcm::aead::AeadInPlace> Gcm for C {
    fn encrypt(&self, iv: &[u8], aad: &[u8], buf: &mut Vec<u8>) -> Result<[u8; 16], ()> {
        let t = self
            .encrypt_in_place_detached(iv.into(), aad, buf)
            .map_err(|_| ())?;
        let mut out = [0u8; 16];
        out.copy_from_slice(&t);
        Ok(out)
    }
    fn decrypt(&self, iv: &[u8], aad: &[u8], buf: &mut Vec<u8>, tag: &[u8]) -> Result<(), ()> {
        self.decrypt_in_place_detached(iv.into(), aad, buf, tag.into())
            .map_err(|_| ())
    }
}

/// Runs `f` with the AES-GCM of `enc` keyed by `key` (whose length must fit `enc`).
fn gcm<T>(
    key: &SymmetricKey,
    enc: ContentEnc,
    f: impl FnOnce(&dyn Gcm) -> T,
) -> Result<T, JoseError> {
    use aes_gcm::aead::KeyInit;
    let k = key.secret().expose();
    if k.len() != enc.key_len() {
        return Err(wrong_key(format!(
            "dir with {} needs a {}-byte key",
            enc.name(),
            enc.key_len()
        )));
    }
    let bad = |_| wrong_key("bad AES key length");
    Ok(match enc {
        ContentEnc::A128Gcm => f(&aes_gcm::Aes128Gcm::new_from_slice(k).map_err(bad)?),
        ContentEnc::A192Gcm => f(&aes_gcm::AesGcm::<
            aes_gcm::aes::Aes192,
            aes_gcm::aead::consts::U12,
        >::new_from_slice(k)
        .map_err(bad)?),
        ContentEnc::A256Gcm => f(&aes_gcm::Aes256Gcm::new_from_slice(k).map_err(bad)?),
    })
}

// ---------------------------------------------------------------------------------------------------------
// Shared parsing

/// Splits a compact serialization into its `n` parts.
pub fn split_compact<'t>(token: &'t str, n: usize, what: &str) -> Result<Vec<&'t str>, JoseError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != n {
        return Err(malformed(format!(
            "a {what} compact serialization has {n} parts, this has {}",
            parts.len()
        )));
    }
    Ok(parts)
}

/// Decodes a base64url protected header into its JSON object.
pub fn decode_header(b64: &str) -> Result<HeaderParams, JoseError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| malformed("the protected header is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| malformed("the protected header is not a JSON object"))
}

/// Decodes a base64url part (IV, tag, ...).
pub fn decode_part(b64: &str) -> Result<Vec<u8>, JoseError> {
    URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| malformed("a part is not base64url"))
}

fn check_extra(extra: &HeaderParams) -> Result<(), JoseError> {
    match extra.keys().find(|k| RESERVED.contains(&k.as_str())) {
        Some(k) => Err(unsupported(format!(
            "header parameter {k:?} is set by the library, not the caller"
        ))),
        None => Ok(()),
    }
}

fn check_received(header: &HeaderParams) -> Result<(), JoseError> {
    match header
        .keys()
        .find(|k| REFUSED_IN_HEADER.contains(&k.as_str()))
    {
        Some(k) => Err(unsupported(format!(
            "header parameter {k:?} is not accepted"
        ))),
        None => Ok(()),
    }
}

fn check_kid(header: &HeaderParams, kid: &str) -> Result<(), JoseError> {
    match header.get("kid").and_then(Value::as_str) {
        Some(k) if k == kid => Ok(()),
        other => Err(wrong_key(format!(
            "the object is for key {}, not {kid:?}",
            show(other)
        ))),
    }
}

/// A header value for an error text: quoted, cut short, or "none".
fn show(v: Option<&str>) -> String {
    match v {
        Some(s) => format!("{:?}", s.chars().take(40).collect::<String>()),
        None => "(none)".into(),
    }
}
