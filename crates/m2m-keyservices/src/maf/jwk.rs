//! JSON Web Keys (RFC 7517; RFC 7518 clause 6) of the TTP's E2E credentials (seeds/001 clauses 5.6,
//! 5.7): a symmetric `oct` key or an EC P-256 public key, checked small and strict.
//!
//! The checks are the TTP's own (no JOSE library): only the members listed below, base64url without
//! padding in its canonical form, key sizes that fit the `alg` when one is named, an EC point that
//! lies on P-256, and never a private member (`d`): a device's private key never leaves the device.
//!
//! | kty | members | alg (optional) |
//! |---|---|---|
//! | `oct` | `kty`, `k` (16 to 64 bytes), `alg`, `kid`, `use` | HS256/384/512 (integrity), A128/192/256KW, A128/192/256GCM, `dir` (confidentiality) |
//! | `EC` | `kty`, `crv` = `P-256`, `x`, `y` (32 bytes each), `alg`, `kid`, `use` = `sig` | ES256 |

use super::ttp::CredentialUsage;
use m2m_security::credentials::Secret;
use rand::RngCore;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

/// The kinds of key the TTP keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// A symmetric key (`kty` = `oct`).
    Oct,
    /// An EC P-256 public key (`kty` = `EC`, `crv` = `P-256`), for signatures.
    EcP256,
}

/// A checked JWK. Its JSON text is held as a [`Secret`] (for `oct` it is the key itself), so it is
/// zeroed on drop and `Debug` shows only the key type.
#[derive(Clone, PartialEq, Eq)]
pub struct Jwk {
    kty: KeyType,
    json: Secret,
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk")
            .field("kty", &self.kty)
            .finish_non_exhaustive()
    }
}

/// Symmetric key sizes in bytes.
const OCT_MIN: usize = 16;
const OCT_MAX: usize = 64;
/// Bytes of a P-256 coordinate.
const P256_COORD: usize = 32;
const KID_MAX: usize = 256;

impl Jwk {
    /// Checks a JWK for a credential of `usage`. The reason never quotes the key.
    pub fn from_value(v: &Value, usage: CredentialUsage) -> Result<Jwk, &'static str> {
        let m = v.as_object().ok_or("jwk must be a JSON object")?;
        let kty = match m.get("kty").and_then(Value::as_str) {
            Some("oct") => check_oct(m, usage)?,
            Some("EC") => check_ec(m, usage)?,
            Some(_) => return Err("jwk kty must be oct or EC"),
            None => return Err("jwk lacks kty"),
        };
        check_common(m)?;
        let text = Zeroizing::new(serde_json::to_vec(v).map_err(|_| "jwk is not JSON")?);
        Ok(Jwk {
            kty,
            json: Secret::from_slice(&text),
        })
    }

    /// Parses stored or received JSON text and checks it as [`Jwk::from_value`] does.
    pub fn from_json(text: &[u8], usage: CredentialUsage) -> Result<Jwk, &'static str> {
        let v: Value = serde_json::from_slice(text).map_err(|_| "jwk is not JSON")?;
        Self::from_value(&v, usage)
    }

    /// A fresh random 256-bit symmetric key (the TTP generates it when the registrant sends none).
    pub fn generate_oct() -> Jwk {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::thread_rng().fill_bytes(&mut k[..]);
        let text =
            Zeroizing::new(json!({ "kty": "oct", "k": b64url(&k[..]).as_str() }).to_string());
        Jwk {
            kty: KeyType::Oct,
            json: Secret::from_slice(text.as_bytes()),
        }
    }

    pub fn kty(&self) -> KeyType {
        self.kty
    }

    /// The JSON text (the key itself for `oct`: keep the borrow short, never log it).
    pub fn json(&self) -> &Secret {
        &self.json
    }

    /// The JWK as a JSON value, members in the order they were registered.
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(self.json.expose()).unwrap_or(Value::Null)
    }
}

fn check_oct(m: &Map<String, Value>, usage: CredentialUsage) -> Result<KeyType, &'static str> {
    only_members(m, &["kty", "k", "alg", "kid", "use"])?;
    let k = b64url_member(m, "k")?;
    if !(OCT_MIN..=OCT_MAX).contains(&k.len()) {
        return Err("jwk k must be 16 to 64 bytes");
    }
    let use_ok = match (usage, m.get("use").map(Value::as_str)) {
        (_, None) => true,
        (CredentialUsage::EsdataIntegrity, Some(Some(u))) => u == "sig",
        (CredentialUsage::EsdataConfidentiality, Some(Some(u))) => u == "enc",
        (CredentialUsage::Esprim, Some(Some(u))) => u == "sig" || u == "enc",
        (_, Some(None)) => false,
    };
    if !use_ok {
        return Err("jwk use does not fit the credential's usage");
    }
    if let Some(alg) = m.get("alg") {
        let alg = alg.as_str().ok_or("jwk alg must be a string")?;
        let (sizes, integrity) = oct_alg(alg).ok_or("jwk alg is not one for an oct key")?;
        let fits = match usage {
            CredentialUsage::EsdataIntegrity => integrity,
            CredentialUsage::EsdataConfidentiality => !integrity,
            CredentialUsage::Esprim => true,
        };
        if !fits {
            return Err("jwk alg does not fit the credential's usage");
        }
        if !sizes.contains(&k.len()) {
            return Err("jwk k has the wrong size for its alg");
        }
    }
    Ok(KeyType::Oct)
}

/// The key sizes an `oct` algorithm takes, and whether it is a MAC (integrity) algorithm.
fn oct_alg(alg: &str) -> Option<(std::ops::RangeInclusive<usize>, bool)> {
    Some(match alg {
        // RFC 7518 clause 3.2: a key at least as long as the hash output.
        "HS256" => (32..=OCT_MAX, true),
        "HS384" => (48..=OCT_MAX, true),
        "HS512" => (64..=OCT_MAX, true),
        "A128KW" | "A128GCM" => (16..=16, false),
        "A192KW" | "A192GCM" => (24..=24, false),
        "A256KW" | "A256GCM" => (32..=32, false),
        "dir" => (OCT_MIN..=OCT_MAX, false),
        _ => return None,
    })
}

fn check_ec(m: &Map<String, Value>, usage: CredentialUsage) -> Result<KeyType, &'static str> {
    if m.contains_key("d") {
        return Err(
            "a public-key credential must not carry the private key d: it never leaves the device",
        );
    }
    only_members(m, &["kty", "crv", "x", "y", "alg", "kid", "use"])?;
    if usage == CredentialUsage::EsdataConfidentiality {
        return Err("an EC public key cannot decrypt: confidentiality credentials are oct keys");
    }
    if m.get("crv").and_then(Value::as_str) != Some("P-256") {
        return Err("jwk crv must be P-256");
    }
    if m.get("alg").is_some_and(|a| a.as_str() != Some("ES256")) {
        return Err("jwk alg of an EC P-256 key must be ES256");
    }
    if m.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return Err("jwk use of an EC public key must be sig");
    }
    let x = b64url_member(m, "x")?;
    let y = b64url_member(m, "y")?;
    if x.len() != P256_COORD || y.len() != P256_COORD {
        return Err("jwk x and y must be 32 bytes each");
    }
    on_p256(&x, &y)?;
    Ok(KeyType::EcP256)
}

/// The point (x, y) must lie on P-256 (an invalid point is a classic attack on ECDH/ECDSA peers).
fn on_p256(x: &[u8], y: &[u8]) -> Result<(), &'static str> {
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    let bad = |_| "jwk x, y is not a point of P-256";
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(bad)?;
    let x = BigNum::from_slice(x).map_err(bad)?;
    let y = BigNum::from_slice(y).map_err(bad)?;
    let key = EcKey::from_public_key_affine_coordinates(&group, &x, &y).map_err(bad)?;
    key.check_key().map_err(bad)
}

fn check_common(m: &Map<String, Value>) -> Result<(), &'static str> {
    if let Some(kid) = m.get("kid") {
        match kid.as_str() {
            Some(k) if !k.is_empty() && k.len() <= KID_MAX => {}
            _ => return Err("jwk kid must be a string of 1 to 256 characters"),
        }
    }
    Ok(())
}

fn only_members(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), &'static str> {
    if m.keys().all(|k| allowed.contains(&k.as_str())) {
        Ok(())
    } else {
        Err("jwk has a member the TTP does not accept for its kty")
    }
}

fn b64url_member(m: &Map<String, Value>, name: &str) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    let s = m
        .get(name)
        .and_then(Value::as_str)
        .ok_or("jwk lacks a key member (k, or x and y)")?;
    b64url_decode(s).ok_or("jwk key members must be base64url without padding")
}

/// base64url without padding (RFC 7515 clause 2), canonical only (no stray bits): the same key has
/// one text, so a stored JWK compares equal to the one registered.
pub fn b64url_decode(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    if s.is_empty()
        || s.len() % 4 == 1
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let mut std = Zeroizing::new(s.replace('-', "+").replace('_', "/"));
    while !std.len().is_multiple_of(4) {
        std.push('=');
    }
    let bytes = Zeroizing::new(openssl::base64::decode_block(&std).ok()?);
    (b64url(&bytes).as_str() == s).then_some(bytes)
}

/// base64url without padding.
pub fn b64url(bytes: &[u8]) -> Zeroizing<String> {
    let std = Zeroizing::new(openssl::base64::encode_block(bytes));
    Zeroizing::new(
        std.trim_end_matches('=')
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use CredentialUsage::*;

    /// A P-256 public key made with openssl, as JWK coordinates.
    fn ec_point() -> (String, String) {
        use openssl::bn::{BigNum, BigNumContext};
        use openssl::ec::{EcGroup, EcKey};
        let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        let mut ctx = BigNumContext::new().unwrap();
        key.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        let pad = |b: BigNum| b.to_vec_padded(32).unwrap();
        (b64url(&pad(x)).to_string(), b64url(&pad(y)).to_string())
    }

    #[test]
    fn base64url_is_strict_and_round_trips() {
        for bytes in [&b"a"[..], b"ab", b"abc", &[0xfb, 0xff, 0xfe]] {
            let text = b64url(bytes);
            assert_eq!(&b64url_decode(&text).unwrap()[..], bytes);
        }
        assert_eq!(b64url(&[0xfb, 0xff]).as_str(), "-_8");
        assert!(b64url_decode("YQ==").is_none(), "padding");
        assert!(b64url_decode("YR").is_none(), "stray bits");
        assert!(b64url_decode("Y+8").is_none(), "standard alphabet");
        assert!(b64url_decode("Y").is_none());
        assert!(b64url_decode("").is_none());
    }

    #[test]
    fn oct_keys_are_checked_against_usage_and_alg() {
        let k32 = b64url(&[7u8; 32]).to_string();
        let ok = json!({"kty": "oct", "k": k32, "alg": "HS256", "kid": "dev1"});
        let jwk = Jwk::from_value(&ok, EsdataIntegrity).unwrap();
        assert_eq!(jwk.kty(), KeyType::Oct);
        assert_eq!(jwk.to_value(), ok);
        assert!(!format!("{jwk:?}").contains(&k32));
        assert!(Jwk::from_value(&ok, EsdataConfidentiality).is_err());
        let gcm = json!({"kty": "oct", "k": k32, "alg": "A256GCM", "use": "enc"});
        assert!(Jwk::from_value(&gcm, EsdataConfidentiality).is_ok());
        assert!(Jwk::from_value(&gcm, Esprim).is_ok());
        let short = json!({"kty": "oct", "k": b64url(&[7u8; 16]).as_str(), "alg": "HS256"});
        assert_eq!(
            Jwk::from_value(&short, Esprim).unwrap_err(),
            "jwk k has the wrong size for its alg"
        );
        let tiny = json!({"kty": "oct", "k": b64url(&[7u8; 8]).as_str()});
        assert!(Jwk::from_value(&tiny, Esprim).is_err());
        let extra = json!({"kty": "oct", "k": k32, "x5u": "http://x"});
        assert!(Jwk::from_value(&extra, Esprim).is_err());
        assert!(Jwk::from_value(&json!({"kty": "RSA"}), Esprim).is_err());
        assert!(Jwk::from_value(&json!("oct"), Esprim).is_err());
        let generated = Jwk::generate_oct();
        assert!(Jwk::from_json(generated.json().expose(), EsdataConfidentiality).is_ok());
    }

    #[test]
    fn ec_public_keys_must_be_p256_points_without_d() {
        let (x, y) = ec_point();
        let public = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "alg": "ES256"});
        assert_eq!(
            Jwk::from_value(&public, EsdataIntegrity).unwrap().kty(),
            KeyType::EcP256
        );
        let mut private = public.clone();
        private["d"] = json!(b64url(&[1u8; 32]).as_str());
        let why = Jwk::from_value(&private, Esprim).unwrap_err();
        assert!(why.contains("private key d"), "{why}");
        assert!(Jwk::from_value(&public, EsdataConfidentiality).is_err());
        let mut off_curve = public.clone();
        off_curve["y"] = json!(b64url(&[1u8; 32]).as_str());
        assert_eq!(
            Jwk::from_value(&off_curve, Esprim).unwrap_err(),
            "jwk x, y is not a point of P-256"
        );
        let mut p384 = public.clone();
        p384["crv"] = json!("P-384");
        assert!(Jwk::from_value(&p384, Esprim).is_err());
    }
}
