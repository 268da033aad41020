//! End-to-End Security of Data, ESData (TS-0003 clause 8.5.3): content an AE signs and/or encrypts before
//! storing it in a `<contentInstance>`, kept opaque by the hosting CSE, checked by the reader.
//!
//! The three security classes of table 8.5.3.1-1 in their JOSE compact form (m2m:contentSecurity 1, media
//! type `application/jose`): Signature only (JWS), Encryption only (JWE), Nested Sign-then-Encrypt (a JWS
//! inside a JWE, `cty` "JOSE"). Keys: HS256 / ES256 for JWS; `dir`, A128KW/A192KW/A256KW or
//! ECDH-ES+A128KW with A128GCM/A192GCM/A256GCM for JWE.
//!
//! Binding (project decision; TS-0003 names the goal, not a format): every protected header carries
//! `esda` = {`to`: the address of the container the instance is created in, `cr`: the creator's AE-ID,
//! `cnf`: the contentInfo}. The JWS signature and the JWE tag (the protected header is the JWE's AAD)
//! cover it, and the reader compares it with the resource it read the content from, so a CSE that moves
//! the content to another container, changes its creator or its contentInfo is detected like one that
//! changes the content.
//!
//! The reader states what it requires by the keys it passes: with a verifying key the content must be
//! signed, with a decryption key it must be encrypted. A stored value with less protection than required
//! is refused, so a CSE cannot strip a layer.
//!
//! Freshness (project decision; TS-0003 gives ESData none): every protected header also carries
//! `esct`, the writer's creation time in microseconds since the Unix epoch (an integer). [`open`]
//! returns it; the reader checks it against its clock and the newest it opened from the same creator
//! in the same container ([`crate::e2e::freshness`]), so an old reading re-posted is not taken for
//! the latest. Content without `esct` (written before this rule) is refused: it cannot be told from
//! a replay.

use crate::e2e::freshness;
use crate::e2e::jose::{
    self, ContentEnc, DecryptionKey, HeaderParams, Recipient, SigningKey, VerifyingKey,
};
use chrono::{DateTime, Utc};
use m2m_core::{M2mError, ResponseStatusCode as Rsc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

/// The protected-header parameter that binds the content to its resource.
pub const ESDA_PARAM: &str = "esda";
/// The protected-header parameter with the writer's creation time (microseconds since the epoch).
pub const CREATED_PARAM: &str = "esct";
/// `cty` of a JWE whose plaintext is a JWS (RFC 7515 clause 4.1.10).
pub const CTY_NESTED: &str = "JOSE";
/// m2m:contentSecurity 1: JWE and/or JWS in Compact Serialization (TS-0004 table 6.3.4.2.38-1).
pub const CONTENT_SECURITY_COMPACT: u8 = 1;

/// The resource attributes the content is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundAttributes {
    /// The address of the parent `<container>` the `<contentInstance>` is created under.
    pub to: String,
    /// creator (`cr`): the AE-ID of the writer.
    pub cr: String,
    /// contentInfo (`cnf`), e.g. `application/json:0:1`.
    pub cnf: String,
}

/// contentInfo for ESData content: `media:encoding:1` (TS-0004 m2m:contentInfo).
pub fn content_info(media: &str, encoding: u8) -> String {
    format!("{media}:{encoding}:{CONTENT_SECURITY_COMPACT}")
}

/// How the writer protects the content.
#[derive(Clone, Copy, Debug)]
pub enum Protection<'a> {
    /// Signature only (integrity and origin).
    Sign(SigningKey<'a>),
    /// Encryption only (confidentiality; integrity against anyone without the key).
    Encrypt(Recipient<'a>, ContentEnc),
    /// Nested sign-then-encrypt.
    SignThenEncrypt(SigningKey<'a>, Recipient<'a>, ContentEnc),
}

/// What the reader requires, and the keys to check it with.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReaderKeys<'a> {
    /// Required signature, verified with this key.
    pub verify: Option<VerifyingKey<'a>>,
    /// Required encryption, decrypted with this key.
    pub decrypt: Option<DecryptionKey<'a>>,
}

/// Opened content and the time its writer made it.
#[derive(Debug)]
pub struct OpenedData {
    /// The content; zeroed on drop.
    pub content: Zeroizing<Vec<u8>>,
    /// The writer's creation time (`esct`), as signed or (encryption only) authenticated.
    pub created: DateTime<Utc>,
}

fn binding(attrs: &BoundAttributes, created: DateTime<Utc>) -> HeaderParams {
    let mut h = HeaderParams::new();
    h.insert(
        ESDA_PARAM.into(),
        serde_json::to_value(attrs).expect("attributes serialize"),
    );
    h.insert(CREATED_PARAM.into(), freshness::micros(created).into());
    h
}

/// Protects `content`, made at `created`, for storage as the `con` of a contentInstance whose
/// attributes are `attrs`.
pub fn protect(
    content: &[u8],
    attrs: &BoundAttributes,
    created: DateTime<Utc>,
    how: Protection<'_>,
) -> Result<String, M2mError> {
    let h = binding(attrs, created);
    let fail = |e: jose::JoseError| e.to_m2m("ESData protection failed");
    match how {
        Protection::Sign(k) => jose::sign_compact(content, k, &h).map_err(fail),
        Protection::Encrypt(to, enc) => jose::encrypt_compact(content, to, enc, &h).map_err(fail),
        Protection::SignThenEncrypt(k, to, enc) => {
            let jws = jose::sign_compact(content, k, &h).map_err(fail)?;
            let mut outer = h;
            outer.insert("cty".into(), CTY_NESTED.into());
            jose::encrypt_compact(jws.as_bytes(), to, enc, &outer).map_err(fail)
        }
    }
}

/// Checks and opens stored ESData content read from a resource with attributes `attrs`. The
/// caller checks the returned creation time ([`crate::e2e::freshness`]).
pub fn open(
    stored: &str,
    attrs: &BoundAttributes,
    keys: ReaderKeys<'_>,
) -> Result<OpenedData, M2mError> {
    let fail = |e: jose::JoseError| e.to_m2m("ESData content rejected");
    let parts = stored.split('.').count();
    // With a nested JWS, the time of the encryption layer, which the signed one must repeat.
    let mut outer_created = None;
    let signed_part: Zeroizing<Vec<u8>> = match (parts, keys.decrypt) {
        (5, Some(dk)) => {
            let opened = jose::decrypt_compact(stored, dk, &ContentEnc::ALL).map_err(fail)?;
            check_binding(&opened.header, attrs)?;
            let created = creation_time(&opened.header)?;
            let nested = opened.header.get("cty").and_then(Value::as_str) == Some(CTY_NESTED);
            match (nested, keys.verify) {
                (false, None) => {
                    return Ok(OpenedData {
                        content: opened.payload,
                        created,
                    })
                }
                (false, Some(_)) => return Err(refused("the content is encrypted but not signed")),
                (true, None) => {
                    return Err(refused(
                        "the content is signed: a verification key is needed to read it",
                    ))
                }
                (true, Some(_)) => {
                    outer_created = Some(created);
                    opened.payload
                }
            }
        }
        (5, None) => {
            return Err(M2mError::bad_request(
                "the content is encrypted and no decryption key was given",
            ))
        }
        (3, Some(_)) => return Err(refused("the content is not encrypted")),
        (3, None) => Zeroizing::new(stored.as_bytes().to_vec()),
        _ => {
            return Err(M2mError::bad_request(
                "the content is not a JWS or JWE compact serialization",
            ))
        }
    };
    let vk = keys
        .verify
        .ok_or_else(|| M2mError::bad_request("no key given to check the content with"))?;
    let jws = std::str::from_utf8(&signed_part)
        .map_err(|_| M2mError::bad_request("the nested JWS is not text"))?;
    let opened = jose::verify_compact(jws, vk).map_err(fail)?;
    check_binding(&opened.header, attrs)?;
    let created = creation_time(&opened.header)?;
    // Anyone holding the encryption key could re-wrap the signed content under another time.
    if outer_created.is_some_and(|t| t != created) {
        return Err(refused(
            "the creation times of the encryption and the signature differ",
        ));
    }
    Ok(OpenedData {
        content: opened.payload,
        created,
    })
}

/// The `esct` of a protected header; absent (content written before freshness) is refused.
fn creation_time(header: &HeaderParams) -> Result<DateTime<Utc>, M2mError> {
    match header.get(CREATED_PARAM) {
        None => Err(refused(
            "the content carries no creation time (esct), so a replay cannot be told from new \
             data: the writer must protect it again",
        )),
        Some(v) => v
            .as_i64()
            .and_then(freshness::from_micros)
            .ok_or_else(|| refused("its creation time (esct) is not microseconds since the epoch")),
    }
}

fn refused(why: &str) -> M2mError {
    M2mError::new(
        Rsc::OriginatorNotAuthenticated,
        format!("ESData content rejected: {why}"),
    )
}

fn check_binding(header: &HeaderParams, attrs: &BoundAttributes) -> Result<(), M2mError> {
    let bound: Option<BoundAttributes> = header
        .get(ESDA_PARAM)
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    match bound {
        Some(b) if &b == attrs => Ok(()),
        Some(b) => Err(refused(&mismatch(&b, attrs))),
        None => Err(refused("the content carries no resource binding (esda)")),
    }
}

/// Names the attribute that differs (the values are not secret: the CSE shows them to any reader).
fn mismatch(bound: &BoundAttributes, seen: &BoundAttributes) -> String {
    let which = if bound.to != seen.to {
        format!("it was written to {:?}, not {:?}", bound.to, seen.to)
    } else if bound.cr != seen.cr {
        format!("its creator is {:?}, not {:?}", bound.cr, seen.cr)
    } else {
        format!("its contentInfo is {:?}, not {:?}", bound.cnf, seen.cnf)
    };
    format!("the resource's attributes were changed: {which}")
}
