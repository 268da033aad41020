//! Secure group communication and end-to-end group credentials (seeds/001 clauses 5.4 and 5.1).
//!
//! - A group command ([`seal_command`]): the gateway signs the command with its own P-256 key (ES256, the
//!   JWS header names the group in `grp`), then encrypts the JWS under the group key (`dir` or AES key
//!   wrap, `kid` = group key ID, `cty` "JOSE"). A member holding the group key decrypts and verifies the
//!   gateway's signature ([`open_command`]); a holder of another group's key cannot decrypt, and a member
//!   of two groups cannot re-send one group's command to the other (the signed `grp` would not match).
//!   The same object protects a fan-out over multicast, where (D)TLS cannot (seeds/004 6.1.2.2.3).
//! - A group credential for one member ([`seal_credential`]): the M2M server encrypts the group key (as a
//!   JWK) under a key only that member holds (AES key wrap with the key it shares with the member, or
//!   ECDH-ES+A128KW to the member's P-256 key), with `aud` = the member's ID. The gateway relaying it
//!   cannot read it. Under ECDH-ES anyone knowing the member's public key could make such an object, so
//!   the server then signs it first (nested JWS, `cty` "JOSE") and the member requires that signature.
//!
//! Replay of an old command within the group key's life is not prevented here: put a timestamp or a
//! sequence number in the command if the application needs it.

use crate::e2e::jose::{
    self, ContentEnc, DecryptionKey, HeaderParams, Recipient, SigningKey, SymmetricKey,
    VerifyingKey,
};
use crate::e2e::jose::{EcKeyPair, EcPublicKey};
use chrono::{DateTime, Utc};
use m2m_core::{M2mError, ResponseStatusCode as Rsc};
use serde_json::Value;
use zeroize::Zeroizing;

/// JWS header parameter naming the group a command is for (its group key ID).
pub const GROUP_PARAM: &str = "grp";
/// JWE header parameter naming the member a credential is for (RFC 7519 `aud`).
pub const AUDIENCE_PARAM: &str = "aud";
/// `cty` of a sealed group credential: a JWK.
pub const CTY_JWK: &str = "jwk+json";
/// Credential header parameter naming the group the key is for.
pub const CREDENTIAL_GROUP_PARAM: &str = "gid";
/// Credential header parameter with its version (an integer, see [`CredentialInfo::version`]).
pub const VERSION_PARAM: &str = "ver";
/// Credential header parameter with its issue time (RFC 7519 NumericDate: whole seconds).
pub const ISSUED_PARAM: &str = "iat";

/// What a sealed group credential says about itself, inside its protected part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialInfo {
    /// The group the key is for: the `<group>` address, as the issuer names it.
    pub group: String,
    /// Strictly increasing per group over the issuer's life, restarts included: a newer credential
    /// has a higher version (the issuer derives it from its clock in microseconds).
    pub version: u64,
    /// When it was issued (sealed as whole seconds).
    pub issued: DateTime<Utc>,
}

/// An opened group credential: the group key and what the credential says about itself.
#[derive(Debug)]
pub struct OpenedCredential {
    pub key: SymmetricKey,
    pub info: CredentialInfo,
}

/// How the group key protects a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKeyMgmt {
    /// The group key is the content key (its length fixes `enc`: 16/24/32 bytes, A128/192/256GCM).
    Dir,
    /// The group key wraps a fresh content key (A128KW/A192KW/A256KW by its length), A128GCM content.
    KeyWrap,
}

fn refused(why: impl Into<String>) -> M2mError {
    M2mError::new(Rsc::OriginatorNotAuthenticated, why)
}

fn dir_enc(key: &SymmetricKey) -> Result<ContentEnc, M2mError> {
    ContentEnc::ALL
        .into_iter()
        .find(|e| e.key_len() == key.secret().len())
        .ok_or_else(|| M2mError::bad_request("a dir group key has 16, 24 or 32 bytes"))
}

/// The gateway signs `command` and encrypts it for the members of the group of `group_key`.
pub fn seal_command(
    command: &[u8],
    gateway: &EcKeyPair,
    group_key: &SymmetricKey,
    mgmt: GroupKeyMgmt,
) -> Result<String, M2mError> {
    seal_signed(
        command,
        gateway,
        HeaderParams::new(),
        group_key,
        mgmt,
        "group command",
    )
}

/// A member decrypts a group command with its group key and verifies the gateway's signature.
pub fn open_command(
    sealed: &str,
    group_key: &SymmetricKey,
    mgmt: GroupKeyMgmt,
    gateway: &EcPublicKey,
) -> Result<Zeroizing<Vec<u8>>, M2mError> {
    let jws = open_sealed(sealed, group_key, mgmt, "group command")?;
    Ok(verify_for_group(&jws, group_key, gateway, "group command")?.payload)
}

/// Signs `payload` (ES256, protected header `header` plus `grp` = the group key ID), then encrypts
/// the JWS under `group_key` (`cty` "JOSE"): the sealed objects of group commands and of a
/// multicast fan-out ([`super::multicast`]).
pub(crate) fn seal_signed(
    payload: &[u8],
    signer: &EcKeyPair,
    mut header: HeaderParams,
    group_key: &SymmetricKey,
    mgmt: GroupKeyMgmt,
    what: &str,
) -> Result<String, M2mError> {
    let fail = |e: jose::JoseError| e.to_m2m(&format!("{what} not sealed"));
    header.insert(GROUP_PARAM.into(), group_key.kid().into());
    let jws = jose::sign_compact(payload, SigningKey::Ec(signer), &header).map_err(fail)?;
    let mut outer = HeaderParams::new();
    outer.insert("cty".into(), "JOSE".into());
    let (to, enc) = match mgmt {
        GroupKeyMgmt::Dir => (Recipient::Direct(group_key), dir_enc(group_key)?),
        GroupKeyMgmt::KeyWrap => (Recipient::KeyWrap(group_key), ContentEnc::A128Gcm),
    };
    jose::encrypt_compact(jws.as_bytes(), to, enc, &outer).map_err(fail)
}

/// Decrypts an object of [`seal_signed`] with the group key: the nested JWS, not yet verified.
pub(crate) fn open_sealed(
    sealed: &str,
    group_key: &SymmetricKey,
    mgmt: GroupKeyMgmt,
    what: &str,
) -> Result<String, M2mError> {
    let fail = |e: jose::JoseError| e.to_m2m(&format!("{what} rejected"));
    let dk = match mgmt {
        GroupKeyMgmt::Dir => DecryptionKey::Direct(group_key),
        GroupKeyMgmt::KeyWrap => DecryptionKey::KeyWrap(group_key),
    };
    let opened = jose::decrypt_compact(sealed, dk, &ContentEnc::ALL).map_err(fail)?;
    if opened.header.get("cty").and_then(Value::as_str) != Some("JOSE") {
        return Err(refused(format!("{what} rejected: it is not signed")));
    }
    String::from_utf8(opened.payload.to_vec())
        .map_err(|_| M2mError::bad_request(format!("{what} rejected: the nested JWS is not text")))
}

/// Verifies a nested JWS of [`open_sealed`] with the signer's key, and that it names the group
/// of `group_key` (an object for one group is not accepted in another).
pub(crate) fn verify_for_group(
    jws: &str,
    group_key: &SymmetricKey,
    signer: &EcPublicKey,
    what: &str,
) -> Result<jose::Opened, M2mError> {
    let verified = jose::verify_compact(jws, VerifyingKey::Ec(signer))
        .map_err(|e| e.to_m2m(&format!("{what} rejected")))?;
    if verified.header.get(GROUP_PARAM).and_then(Value::as_str) != Some(group_key.kid()) {
        return Err(refused(format!(
            "{what} rejected: it was signed for another group"
        )));
    }
    Ok(verified)
}

/// The key a group credential is sealed under: one only the member (and the server) holds.
#[derive(Clone, Copy, Debug)]
pub enum MemberKey<'a> {
    /// AES key wrap with the key the server shares with the member (e.g. its Kpsa-derived key).
    Shared(&'a SymmetricKey),
    /// ECDH-ES+A128KW to the member's P-256 key; the server must sign (see the module doc).
    Ec(&'a EcPublicKey, SigningKey<'a>),
}

/// The member's side of [`MemberKey`].
#[derive(Clone, Copy, Debug)]
pub enum MemberUnwrapKey<'a> {
    /// The shared key.
    Shared(&'a SymmetricKey),
    /// The member's P-256 private key and the server's verifying key.
    Ec(&'a EcKeyPair, VerifyingKey<'a>),
}

/// The M2M server seals `group_key` for the member `member_id`, as credential `info`.
pub fn seal_credential(
    group_key: &SymmetricKey,
    member_id: &str,
    info: &CredentialInfo,
    to: MemberKey<'_>,
) -> Result<String, M2mError> {
    let fail = |e: jose::JoseError| e.to_m2m("group credential not sealed");
    let mut h = HeaderParams::new();
    h.insert(AUDIENCE_PARAM.into(), member_id.into());
    h.insert(CREDENTIAL_GROUP_PARAM.into(), info.group.as_str().into());
    h.insert(VERSION_PARAM.into(), info.version.into());
    h.insert(ISSUED_PARAM.into(), info.issued.timestamp().into());
    let jwk = group_key.to_jwk();
    match to {
        MemberKey::Shared(k) => {
            h.insert("cty".into(), CTY_JWK.into());
            jose::encrypt_compact(
                jwk.as_bytes(),
                Recipient::KeyWrap(k),
                ContentEnc::A128Gcm,
                &h,
            )
            .map_err(fail)
        }
        MemberKey::Ec(k, server) => {
            let mut inner = h.clone();
            inner.insert("cty".into(), CTY_JWK.into());
            let jws = jose::sign_compact(jwk.as_bytes(), server, &inner).map_err(fail)?;
            h.insert("cty".into(), "JOSE".into());
            jose::encrypt_compact(
                jws.as_bytes(),
                Recipient::EcdhEs(k),
                ContentEnc::A128Gcm,
                &h,
            )
            .map_err(fail)
        }
    }
}

/// The member `member_id` opens a group credential sealed for it. The caller checks the returned
/// version and issue time ([`crate::e2e::freshness`]).
pub fn open_credential(
    sealed: &str,
    member_id: &str,
    key: MemberUnwrapKey<'_>,
) -> Result<OpenedCredential, M2mError> {
    let fail = |e: jose::JoseError| e.to_m2m("group credential rejected");
    let dk = match key {
        MemberUnwrapKey::Shared(k) => DecryptionKey::KeyWrap(k),
        MemberUnwrapKey::Ec(k, _) => DecryptionKey::EcdhEs(k),
    };
    let opened = jose::decrypt_compact(sealed, dk, &ContentEnc::ALL).map_err(fail)?;
    check_audience(&opened.header, member_id)?;
    let (jwk, info) = match key {
        MemberUnwrapKey::Shared(_) => {
            let info = credential_info(&opened.header)?;
            (opened.payload, info)
        }
        MemberUnwrapKey::Ec(_, server) => {
            let jws = std::str::from_utf8(&opened.payload).map_err(|_| {
                refused("group credential rejected: it is not signed by the server")
            })?;
            let verified = jose::verify_compact(jws, server).map_err(fail)?;
            check_audience(&verified.header, member_id)?;
            let info = credential_info(&verified.header)?;
            // Anyone can encrypt to the member: the encryption layer must not claim other values.
            if credential_info(&opened.header).ok().as_ref() != Some(&info) {
                return Err(refused(
                    "group credential rejected: its encryption layer names another group, version or issue time than the server signed",
                ));
            }
            (verified.payload, info)
        }
    };
    let text = std::str::from_utf8(&jwk)
        .map_err(|_| M2mError::bad_request("group credential rejected: not a JWK"))?;
    let key = SymmetricKey::from_jwk(text).map_err(|e| e.to_m2m("group credential rejected"))?;
    Ok(OpenedCredential { key, info })
}

/// The `gid`, `ver` and `iat` of a credential's protected header.
fn credential_info(header: &HeaderParams) -> Result<CredentialInfo, M2mError> {
    let group = header.get(CREDENTIAL_GROUP_PARAM).and_then(Value::as_str);
    let version = header.get(VERSION_PARAM).and_then(Value::as_u64);
    let issued = header.get(ISSUED_PARAM).and_then(Value::as_i64);
    match (group, version, issued) {
        (Some(group), Some(version), Some(iat)) => Ok(CredentialInfo {
            group: group.to_owned(),
            version,
            issued: DateTime::from_timestamp(iat, 0).ok_or_else(|| {
                refused("group credential rejected: its issue time (iat) is out of range")
            })?,
        }),
        (None, None, None) => Err(refused(
            "group credential rejected: it carries no group, version and issue time (gid, ver, \
             iat), so a replayed old one cannot be told from a new one: have the server issue it again",
        )),
        _ => Err(refused(
            "group credential rejected: its group (gid), version (ver) or issue time (iat) is \
             missing or not of its type",
        )),
    }
}

fn check_audience(header: &HeaderParams, member_id: &str) -> Result<(), M2mError> {
    if header.get(AUDIENCE_PARAM).and_then(Value::as_str) == Some(member_id) {
        Ok(())
    } else {
        Err(refused(format!(
            "group credential rejected: it is not addressed to {member_id:?}"
        )))
    }
}
