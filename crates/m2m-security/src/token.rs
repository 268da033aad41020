//! Tokens for token-based access control (TS-0003 clauses 7.3.2.4 to 7.3.2.6): the claim set of
//! m2m:tokenClaimSet as a JSON Web Token (clause 7.3.2.6.2, table 7.3.2.6.2-1), signed by its
//! issuer with ES256 as a JWS Compact Serialization (the ESData signature-only class), and the
//! checks a Hosting CSE makes before using one (clause 7.3.2.5).
//!
//! | claim set | JWT claim |
//! |---|---|
//! | version | `tkvr` |
//! | tokenID | `jti` |
//! | holder | `azp` |
//! | issuer | `iss` |
//! | notBefore / notAfter | `nbf` / `exp` (NumericDate) |
//! | tokenName | `tknm` |
//! | audience | `aud` (a list of CSE-IDs) |
//! | permissions | `tkps` (m2m:tokenPermissions: `{"pm": [{"ris": [...], "pv": {...}, "rids": [...]}]}`) |
//! | extension | `tkex` |
//!
//! The token is unsigned JSON to nobody: a Hosting CSE accepts only tokens whose header names
//! the kid of a configured issuer key, whose signature verifies with it (ES256 only; `none` or any
//! other algorithm is refused), and whose `iss` is that issuer.

use crate::e2e::jose::{self, EcKeyPair, EcPublicKey, HeaderParams, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The token version this project writes.
pub const VERSION: &str = "1";

/// A token's claim set (m2m:tokenClaimSet) in its JWT form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenClaims {
    #[serde(rename = "tkvr")]
    pub version: String,
    /// tokenID: `relative@issuer-fqdn` (TS-0004 table 6.3.3-1, m2m:tokenID).
    #[serde(rename = "jti")]
    pub token_id: String,
    /// holder: the AE-ID or CSE-ID the token is for.
    #[serde(rename = "azp")]
    pub holder: String,
    #[serde(rename = "iss")]
    pub issuer: String,
    /// notBefore, Unix seconds.
    #[serde(rename = "nbf")]
    pub not_before: i64,
    /// notAfter, Unix seconds.
    #[serde(rename = "exp")]
    pub not_after: i64,
    #[serde(rename = "tknm", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Hosting CSEs that may use it (CSE-IDs); empty: any.
    #[serde(rename = "aud", default, skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
    #[serde(rename = "tkps", default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
    #[serde(rename = "tkex", default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
}

/// m2m:tokenPermissions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Permissions {
    #[serde(rename = "pm", default)]
    pub permissions: Vec<Permission>,
}

/// m2m:tokenPermission: privileges on some resources, or roles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Permission {
    /// resourceIDs: the resources the privileges apply to.
    #[serde(rename = "ris", default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// privileges: an m2m:setOfAcrs.
    #[serde(rename = "pv", default, skip_serializing_if = "Option::is_none")]
    pub privileges: Option<Value>,
    /// roleIDs: roles the token assigns to its holder (TS-0003 clause 7.3.2.5 step 3).
    #[serde(rename = "rids", default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// Why a token is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWS compact serialization")]
    Malformed,
    #[error("no configured issuer has the key the token names")]
    UnknownIssuerKey,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the claim set is not a oneM2M token")]
    BadClaims,
    #[error("the issuer is not the one of the key")]
    WrongIssuer,
    #[error("not valid yet")]
    NotYetValid,
    #[error("expired")]
    Expired,
}

/// An issuer a Hosting CSE trusts: its identity (`iss`) and its token-signing key.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub id: String,
    pub key: EcPublicKey,
}

/// Signs `claims` with the issuer's key: a compact JWS with `typ` JWT (TS-0003 7.3.2.6.2).
pub fn issue(claims: &TokenClaims, key: &EcKeyPair) -> Result<String, String> {
    let payload = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
    let mut header = HeaderParams::new();
    header.insert("typ".into(), Value::String("JWT".into()));
    jose::sign_compact(&payload, SigningKey::Ec(key), &header).map_err(|e| e.reason)
}

/// The claims of `token` if an issuer of `issuers` signed it and it is valid at `now` (Unix
/// seconds). Holder, audience, revocation and permissions are the Hosting CSE's to check.
pub fn verify(token: &str, issuers: &[Issuer], now: i64) -> Result<TokenClaims, TokenError> {
    let parts = jose::split_compact(token, 3, "JWS").map_err(|_| TokenError::Malformed)?;
    let header = jose::decode_header(parts[0]).map_err(|_| TokenError::Malformed)?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(TokenError::UnknownIssuerKey)?;
    let issuer = issuers
        .iter()
        .find(|i| i.key.kid() == kid)
        .ok_or(TokenError::UnknownIssuerKey)?;
    let opened = jose::verify_compact(token, VerifyingKey::Ec(&issuer.key))
        .map_err(|_| TokenError::BadSignature)?;
    let claims: TokenClaims =
        serde_json::from_slice(&opened.payload).map_err(|_| TokenError::BadClaims)?;
    if claims.issuer != issuer.id {
        return Err(TokenError::WrongIssuer);
    }
    if now < claims.not_before {
        return Err(TokenError::NotYetValid);
    }
    if now > claims.not_after {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// The revoked token IDs of a file (one per line, `#` comments), read again whenever the file
/// changes. A missing or unreadable file revokes every token (fails closed): deleting the list
/// must not re-admit a revoked token.
pub struct RevokedTokens {
    file: crate::watched_file::WatchedFile<std::collections::HashSet<String>>,
}

impl RevokedTokens {
    /// The list at `path`; a list that cannot be read now is an error (start-up).
    pub fn open(path: &std::path::Path) -> Result<RevokedTokens, String> {
        let list = RevokedTokens {
            file: crate::watched_file::WatchedFile::new(path),
        };
        list.is_revoked("")
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(list)
    }

    /// Whether `token_id` is revoked; `Err` when the list cannot be read (refuse the token).
    pub fn is_revoked(&self, token_id: &str) -> Result<bool, String> {
        let ids = self.file.current(|path| {
            let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
            Ok(text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect())
        })?;
        Ok(ids.contains(token_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base64url_json(part: &str) -> Option<Value> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn claims(now: i64) -> TokenClaims {
        TokenClaims {
            version: VERSION.into(),
            token_id: "t1@das.m2m.example.com".into(),
            holder: "/id-in/Cguest".into(),
            issuer: "das.m2m.example.com".into(),
            not_before: now - 10,
            not_after: now + 60,
            name: None,
            audience: vec!["/id-in".into()],
            permissions: Some(Permissions {
                permissions: vec![Permission {
                    resources: vec!["/id-in/cse-in/door".into()],
                    privileges: Some(
                        serde_json::json!({"acr": [{"acor": ["/id-in/Cguest"], "acop": 2}]}),
                    ),
                    roles: vec![],
                }],
            }),
            extension: None,
        }
    }

    fn issuer(pair: &EcKeyPair, id: &str) -> Issuer {
        Issuer {
            id: id.into(),
            key: pair.public_key(),
        }
    }

    #[test]
    fn a_signed_token_verifies_and_reads_back() {
        let pair = EcKeyPair::generate("das-tokens").unwrap();
        let now = 1_000_000;
        let token = issue(&claims(now), &pair).unwrap();
        let issuers = [issuer(&pair, "das.m2m.example.com")];
        assert_eq!(verify(&token, &issuers, now).unwrap(), claims(now));
        // The JWT claim names of TS-0003 table 7.3.2.6.2-1.
        let payload: Value = base64url_json(token.split('.').nth(1).unwrap()).unwrap();
        for claim in ["tkvr", "jti", "azp", "iss", "nbf", "exp", "aud", "tkps"] {
            assert!(payload.get(claim).is_some(), "{claim} in {payload}");
        }
        let header: Value = base64url_json(token.split('.').next().unwrap()).unwrap();
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["alg"], "ES256");
    }

    #[test]
    fn forged_foreign_expired_and_early_tokens_are_refused() {
        let pair = EcKeyPair::generate("das-tokens").unwrap();
        let other = EcKeyPair::generate("das-tokens").unwrap();
        let now = 1_000_000;
        let issuers = [issuer(&pair, "das.m2m.example.com")];
        let token = issue(&claims(now), &pair).unwrap();
        // Another key with the same kid.
        let forged = issue(&claims(now), &other).unwrap();
        assert_eq!(
            verify(&forged, &issuers, now),
            Err(TokenError::BadSignature)
        );
        // A payload changed after signing.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut c = claims(now);
        c.holder = "/id-in/Cmallory".into();
        use base64::Engine;
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(
            verify(&parts.join("."), &issuers, now),
            Err(TokenError::BadSignature)
        );
        // Unsigned (alg none).
        let none = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(br#"{"alg":"none","typ":"JWT","kid":"das-tokens"}"#),
            parts[1]
        );
        assert!(verify(&none, &issuers, now).is_err());
        // A key of an issuer claiming to be another.
        let wrong = [issuer(&pair, "other-das.m2m.example.com")];
        assert_eq!(verify(&token, &wrong, now), Err(TokenError::WrongIssuer));
        // No key with that kid.
        let unknown = [issuer(
            &EcKeyPair::generate("k2").unwrap(),
            "das.m2m.example.com",
        )];
        assert_eq!(
            verify(&token, &unknown, now),
            Err(TokenError::UnknownIssuerKey)
        );
        assert_eq!(verify(&token, &issuers, now + 61), Err(TokenError::Expired));
        assert_eq!(
            verify(&token, &issuers, now - 11),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(verify("a.b", &issuers, now), Err(TokenError::Malformed));
    }
}
