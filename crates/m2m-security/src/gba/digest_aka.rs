//! HTTP Digest AKA (RFC 3310, AKAv1-MD5), the Ub bootstrapping of GBA (3GPP TS 33.220 clause
//! 4.5.2, TS 24.109 clause 4): the BSF's challenge carries RAND and AUTN in the nonce, the UE's
//! password is RES, and the digest is RFC 2617's with qop "auth-int" (the hash of the entity body
//! in A2). A resynchronisation sends AUTS in the `auts` parameter with an empty password.
//!
//! Pure logic: the header values in and out, the digests. RES is a secret: it is never part of a
//! header, only of the digest.

use base64::Engine;
use openssl::hash::{hash, MessageDigest};
use std::collections::BTreeMap;

/// The digest algorithm of GBA's Ub.
pub const ALGORITHM: &str = "AKAv1-MD5";
/// The quality of protection TS 24.109 asks for.
pub const QOP: &str = "auth-int";

fn md5_hex(parts: &[&[u8]]) -> String {
    let joined = parts.join(&b':');
    hex::encode(hash(MessageDigest::md5(), &joined).expect("MD5 is available in OpenSSL"))
}

/// The nonce of a challenge: base64(RAND || AUTN || server data) (RFC 3310 clause 3.2).
pub fn nonce(rand: &[u8; 16], autn: &[u8; 16], server_data: &[u8]) -> String {
    let mut raw = Vec::with_capacity(32 + server_data.len());
    raw.extend_from_slice(rand);
    raw.extend_from_slice(autn);
    raw.extend_from_slice(server_data);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// RAND and AUTN from a nonce; `None` when it is not base64 or too short.
pub fn rand_autn(nonce: &str) -> Option<([u8; 16], [u8; 16])> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(nonce)
        .ok()?;
    if raw.len() < 32 {
        return None;
    }
    Some((raw[..16].try_into().ok()?, raw[16..32].try_into().ok()?))
}

/// What a request digest covers.
#[derive(Clone, Debug)]
pub struct Exchange<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    pub nonce: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub nc: &'a str,
    pub cnonce: &'a str,
    /// The entity body (its hash enters A2 under auth-int).
    pub body: &'a [u8],
}

/// The request-digest of RFC 2617 clause 3.2.2.1 with qop auth-int: the UE's `response` (with
/// `password` = RES), or what the BSF expects.
pub fn response(x: &Exchange<'_>, password: &[u8]) -> String {
    let ha1 = md5_hex(&[x.username.as_bytes(), x.realm.as_bytes(), password]);
    let body = md5_hex(&[x.body]);
    let ha2 = md5_hex(&[x.method.as_bytes(), x.uri.as_bytes(), body.as_bytes()]);
    md5_hex(&[
        ha1.as_bytes(),
        x.nonce.as_bytes(),
        x.nc.as_bytes(),
        x.cnonce.as_bytes(),
        QOP.as_bytes(),
        ha2.as_bytes(),
    ])
}

/// The BSF's `rspauth` of Authentication-Info (RFC 2617 clause 3.2.3): A2 without the method,
/// over the response body, proving the BSF knew RES too.
pub fn rspauth(x: &Exchange<'_>, password: &[u8], response_body: &[u8]) -> String {
    let ha1 = md5_hex(&[x.username.as_bytes(), x.realm.as_bytes(), password]);
    let body = md5_hex(&[response_body]);
    let ha2 = md5_hex(&[b"", x.uri.as_bytes(), body.as_bytes()]);
    md5_hex(&[
        ha1.as_bytes(),
        x.nonce.as_bytes(),
        x.nc.as_bytes(),
        x.cnonce.as_bytes(),
        QOP.as_bytes(),
        ha2.as_bytes(),
    ])
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHeader(pub &'static str);

/// The parameters of a `Digest` header value (WWW-Authenticate, Authorization,
/// Authentication-Info): `name=token` or `name="quoted"`, comma-separated, names lower-cased.
pub fn parse(value: &str) -> Result<BTreeMap<String, String>, BadHeader> {
    let rest = value.trim();
    let rest = match rest.split_once(char::is_whitespace) {
        Some((scheme, r)) if scheme.eq_ignore_ascii_case("digest") => r,
        _ if !rest.contains('=') || rest.to_ascii_lowercase().starts_with("digest") => {
            return Err(BadHeader("not a Digest header"))
        }
        // Authentication-Info has no scheme.
        _ => rest,
    };
    let mut out = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            break;
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(BadHeader("a parameter without a value"));
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => val.push(chars.next().ok_or(BadHeader("an unterminated value"))?),
                    Some('"') => break,
                    Some(c) => val.push(c),
                    None => return Err(BadHeader("an unterminated value")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        if out.insert(name.to_ascii_lowercase(), val).is_some() {
            return Err(BadHeader("a parameter given twice"));
        }
        if out.len() > 32 {
            return Err(BadHeader("too many parameters"));
        }
    }
    Ok(out)
}

/// A quoted parameter value (backslash before `"` and `\`).
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_rfc_2617_auth_int_with_res_as_password() {
        let rand = [0x23u8; 16];
        let autn = [0x55u8; 16];
        let n = nonce(&rand, &autn, b"bsf");
        assert_eq!(rand_autn(&n), Some((rand, autn)));
        let x = Exchange {
            username: "001010000000001@ims.mnc001.mcc001.3gppnetwork.org",
            realm: "bsf.example.net",
            nonce: &n,
            method: "GET",
            uri: "/",
            nc: "00000001",
            cnonce: "0a4f113b",
            body: b"",
        };
        let res = hex::decode("a54211d5e3ba50bf").unwrap();
        // RFC 2617 with qop auth-int, by hand: MD5 of the colon-joined parts.
        let md5 = |s: &[u8]| hex::encode(openssl::hash::hash(MessageDigest::md5(), s).unwrap());
        let mut a1 = format!("{}:{}:", x.username, x.realm).into_bytes();
        a1.extend_from_slice(&res);
        let ha2 = md5(format!("GET:/:{}", md5(b"")).as_bytes());
        let want = md5(format!("{}:{}:00000001:0a4f113b:auth-int:{ha2}", md5(&a1), n).as_bytes());
        assert_eq!(response(&x, &res), want);
        assert_ne!(response(&x, &[0; 8]), want, "another RES, another digest");
        let rsp = rspauth(&x, &res, b"<BootstrappingInfo/>");
        assert_ne!(rsp, want);
        assert_eq!(rsp.len(), 32);
    }

    #[test]
    fn headers_read_as_rfc_2617_writes_them() {
        let h = r#"Digest realm="bsf.example.net", nonce="a2V5",algorithm=AKAv1-MD5,  qop="auth-int", opaque="x\"y""#;
        let p = parse(h).unwrap();
        assert_eq!(p["realm"], "bsf.example.net");
        assert_eq!(p["algorithm"], ALGORITHM);
        assert_eq!(p["qop"], QOP);
        assert_eq!(p["opaque"], "x\"y");
        assert_eq!(
            parse(&format!("Digest a={}", quote("q\"\\"))).unwrap()["a"],
            "q\"\\"
        );
        let info = parse(r#"rspauth="abc", cnonce="c", nc=00000001, qop=auth-int"#).unwrap();
        assert_eq!(info["rspauth"], "abc");
        for bad in [
            "Basic abc",
            "Digest realm",
            r#"Digest realm="open"#,
            "Digest a=1, a=2",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(rand_autn("not base64!"), None);
        assert_eq!(rand_autn("YWJj"), None, "too short");
    }
}
