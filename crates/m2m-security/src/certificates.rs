//! Certificates in the TS-0003 profile (TS-0003 clause 10.1.1) and the oneM2M identity a certificate carries
//! (TS-0003 clause 8.2.2.2).
//!
//! Three things live here, all without I/O:
//! - [`check_profile`]: is a certificate in the common profile (clauses 10.1.1.1 and 10.1.1.3)? The TLS layer
//!   calls it for every certificate of a peer's chain, so a chain of P-256/SHA-256 certificates is all it accepts.
//! - [`identity_of`]: which AE-ID, CSE-ID or FQDN does an (already verified) certificate name?
//! - issuing: [`make_ca`] and [`issue`], used by `m2m pki` and by tests that need certificates.
//!
//! # The subjectAltName encodings (kept in one place: [`ae_id_uri`], [`CseNaming::dns_name`], [`identity_of`])
//! TS-0003 names the content of the subjectAltName but not always its GeneralName type, and TS-0001 defines no
//! URI scheme for oneM2M IDs. This project decides:
//!
//! | flavour (TS-0003 clause) | SAN type | value | identity |
//! |---|---|---|---|
//! | AE-ID certificate (10.1.1.5) | uniformResourceIdentifier | `onem2m:` + Absolute-AE-ID, e.g. `onem2m://m2m.example.com/id-in/Cphone`, `onem2m://m2m.example.com/Sdoorlock` | the AE |
//! | CSE-ID certificate (10.1.1.7) | dNSName | the CSE's public domain name: `id-in.m2m.example.com` for the IN-CSE, `id-mn.id-in.m2m.example.com` for any other | the CSE |
//! | FQDN certificate, MAF/MEF (10.1.1.6) | dNSName | the FQDN, e.g. `maf.keys.example.net`, `maf.m2m.example.com` | [`CertIdentity::Fqdn`] |
//!
//! - The Absolute-AE-ID (`//SP-FQDN/SP-relative-AE-ID`) is an RFC 3986 hier-part (TS-0001 table 7.2-1), so the
//!   "full URI representation" is a scheme plus that hier-part; the scheme is [`AE_ID_URI_SCHEME`]. The URI's
//!   host is the SP-FQDN, which the issuing CA's URI nameConstraints must permit (10.1.1.5).
//! - The CSE's "public domain name representation" follows TS-0001 clause 6.5.1.1: the IN-CSE is
//!   `<IN-CSE-ID>.<SP-FQDN>`, every MN- and ASN-CSE a sub-domain of it, `<CSE-ID>.<IN-CSE-ID>.<SP-FQDN>`
//!   ([`CseNaming`]). So an FQDN certificate elsewhere in the SP's domain (`maf.m2m.example.com`,
//!   `www.m2m.example.com`) never reads as a CSE: only the IN's own name and the names directly under it do.
//! - One case rule: DNS compares names without case, CSE-IDs are compared exactly; so a CSE-ID is certified
//!   only in lower case, and a dNSName that would name a CSE with an upper-case letter refuses the whole
//!   certificate (it would otherwise name a second, phantom CSE). A CSE-ID with upper-case letters cannot
//!   use a CSE-ID certificate ([`CseNaming::dns_name`] refuses it).
//! - Identities come back typed ([`EntityId`]), in absolute form, the SP checked.
//! - Wildcards (`*`) anywhere in a URI or dNSName SAN make the whole certificate unusable (10.1.1.5-10.1.1.7).

use m2m_core::{CseId, EntityId, Home, SpId};
use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509Ref, X509};
use std::fmt;

/// The URI scheme of AE-ID subjectAltNames (a project decision, see the module documentation).
pub const AE_ID_URI_SCHEME: &str = "onem2m";

/// The oneM2M identity a certificate names (TS-0003 clause 8.2.2.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CertIdentity {
    /// An AE-ID certificate or a CSE-ID certificate: the entity, normalized.
    Entity(EntityId),
    /// The FQDN of an FQDN certificate (MAF, MEF), lower case.
    Fqdn(String),
}

impl CertIdentity {
    /// The entity an AE-ID or CSE-ID certificate names.
    pub fn entity(&self) -> Option<&EntityId> {
        match self {
            CertIdentity::Entity(e) => Some(e),
            CertIdentity::Fqdn(_) => None,
        }
    }
}

impl fmt::Display for CertIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertIdentity::Entity(e) if e.is_cse() => write!(f, "CSE-ID {e}"),
            CertIdentity::Entity(e) => write!(f, "AE-ID {e}"),
            CertIdentity::Fqdn(n) => write!(f, "FQDN {n}"),
        }
    }
}

/// How CSE-IDs are written in certificates: the public domain names of TS-0001 clause 6.5.1.1, in
/// the SP `sp` whose IN-CSE is `in_cse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CseNaming {
    pub sp: SpId,
    /// `None`: an SP whose IN-CSE-ID has no DNS form; then no certificate names a CSE.
    pub in_cse: Option<CseId>,
}

impl CseNaming {
    /// The naming of `sp` (an FQDN) with IN-CSE `in_cse` (`/id-in`).
    pub fn new(sp: &str, in_cse: &str) -> Result<CseNaming, String> {
        let sp = SpId::parse(sp).map_err(|e| e.dbg)?;
        check_fqdn(sp.fqdn())?;
        let in_cse = CseId::parse(in_cse).map_err(|e| e.dbg)?;
        cse_label(&in_cse)?;
        Ok(CseNaming {
            sp,
            in_cse: Some(in_cse),
        })
    }

    /// The naming of an SP where certificates name AEs and FQDNs only.
    pub fn without_cses(sp: &str) -> Result<CseNaming, String> {
        let sp = SpId::parse(sp).map_err(|e| e.dbg)?;
        check_fqdn(sp.fqdn())?;
        Ok(CseNaming { sp, in_cse: None })
    }

    /// `<in>.<sp>` for the IN-CSE, `<cse>.<in>.<sp>` for any other CSE; a CSE-ID that is not a
    /// lower-case DNS label has no name.
    pub fn dns_name(&self, cse: &CseId) -> Result<String, String> {
        let in_cse = self
            .in_cse
            .as_ref()
            .ok_or("this SP's IN-CSE-ID has no DNS form: no CSE has a certificate name")?;
        let in_label = cse_label(in_cse)?;
        if cse == in_cse {
            return Ok(format!("{in_label}.{}", self.sp.fqdn()));
        }
        Ok(format!("{}.{in_label}.{}", cse_label(cse)?, self.sp.fqdn()))
    }

    /// The CSE a dNSName names: `Ok(None)` for a name that is no CSE's (an FQDN certificate);
    /// `Err` for a name in the CSE namespace that no CSE-ID can have (upper case).
    pub fn cse_of(&self, dns: &str) -> Result<Option<CseId>, String> {
        let Some(in_cse) = &self.in_cse else {
            return Ok(None);
        };
        let dns = dns.trim_end_matches('.');
        let lower = dns.to_ascii_lowercase();
        let in_name = self.dns_name(in_cse)?;
        let label = if lower == in_name {
            Some(&dns[..in_cse.bare().len()])
        } else {
            lower
                .strip_suffix(&in_name)
                .and_then(|l| l.strip_suffix('.'))
                .filter(|l| !l.is_empty() && !l.contains('.'))
                .map(|l| &dns[..l.len()])
        };
        let Some(label) = label else {
            return Ok(None);
        };
        if label.bytes().any(|b| b.is_ascii_uppercase()) || check_dns_label(dns, label).is_err() {
            return Err(format!(
                "dNSName '{dns}' names a CSE, but not in the canonical lower-case form of a CSE-ID"
            ));
        }
        CseId::parse(label).map(Some).map_err(|e| e.dbg)
    }

    /// The entity of a CSE-ID in this SP.
    pub fn entity(&self, cse: CseId) -> EntityId {
        EntityId::cse(self.sp.clone(), cse)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Identifier syntax (TS-0001 table 7.2-1; RFC 1035 for names)
// ---------------------------------------------------------------------------------------------------------

/// CSE-IDs and AE-ID-Stems use m2m-core's identifier alphabet (RFC 3986 unreserved characters).
fn check_unreserved(kind: &str, s: &str) -> Result<(), String> {
    m2m_core::id::check_segment(kind, s).map_err(|e| e.dbg)
}

/// Checks an FQDN and returns it in lower case: at least two dot-separated labels of 1..=63
/// letters, digits and hyphens, none starting or ending with a hyphen, 253 characters at most,
/// no wildcard, no trailing dot. The one rule for certificate names and the issuer part of
/// KpsaIDs, KmIDs and MAF key identifiers (TS-0003 clauses 10.1.1.4, 10.5, 10.6).
pub fn check_fqdn(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.contains('*') {
        return Err(format!("{name:?} is a wildcard name"));
    }
    if name.len() > 253 {
        return Err(format!("is {} characters long (at most 253)", name.len()));
    }
    for label in name.split('.') {
        check_dns_label(name, label)?;
    }
    if !name.contains('.') {
        return Err(format!(
            "{name:?} is not a fully qualified domain name (one label only)"
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// A DNS label of `name`: 1..=63 letters, digits or hyphens, not starting or ending with a hyphen.
fn check_dns_label(name: &str, label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(format!("{name:?} has an empty label"));
    }
    if label.len() > 63 {
        return Err(format!("{name:?} has a label longer than 63 characters"));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!(
            "{name:?} is not a DNS name: {c:?} is not a letter, digit or '-'"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "{name:?} is not a DNS name: label {label:?} starts or ends with '-'"
        ));
    }
    Ok(())
}

/// A CSE-ID that must also be a lower-case DNS label; returns it without the slash.
fn cse_label(cse_id: &CseId) -> Result<&str, String> {
    let bare = cse_id.bare();
    if check_dns_label(bare, bare).is_err() || bare.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "CSE-ID '{cse_id}' cannot be a DNS label (lower-case letters, digits and inner '-' only, at most 63)"
        ));
    }
    Ok(bare)
}

/// Checks an SP-relative AE-ID: `/S<stem>` or `/<CSE-ID>/C<stem>` (TS-0001 table 7.2-1).
pub fn check_sp_relative_ae_id(ae_id: &str) -> Result<(), String> {
    let rest = ae_id
        .strip_prefix('/')
        .filter(|r| !r.starts_with('/'))
        .ok_or_else(|| format!("AE-ID '{ae_id}' is not SP-relative"))?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [stem] if stem.starts_with('S') && stem.len() > 1 => check_unreserved("AE-ID-Stem", stem),
        [cse, stem] if stem.starts_with('C') && stem.len() > 1 => {
            check_unreserved("CSE-ID", cse)?;
            check_unreserved("AE-ID-Stem", stem)
        }
        _ => Err(format!(
            "AE-ID '{ae_id}' is neither /S<stem> nor /<CSE-ID>/C<stem>"
        )),
    }
}

/// The AE-ID subjectAltName URI: `onem2m://<sp>/<SP-relative AE-ID>` (TS-0003 clause 10.1.1.5).
pub fn ae_id_uri(sp_fqdn: &str, ae_id: &str) -> Result<String, String> {
    let sp = check_fqdn(sp_fqdn)?;
    check_sp_relative_ae_id(ae_id)?;
    Ok(format!("{AE_ID_URI_SCHEME}://{sp}{ae_id}"))
}

/// Reads an AE-ID out of a URI SAN. `Ok(None)`: not an AE-ID URI at all (another scheme).
fn ae_id_from_uri(uri: &str, sp: &SpId) -> Result<Option<EntityId>, String> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case(AE_ID_URI_SCHEME) {
        return Ok(None);
    }
    let hier = rest
        .strip_prefix("//")
        .ok_or_else(|| format!("URI '{uri}' has no authority"))?;
    if hier.contains(['?', '#', '@', '%']) {
        return Err(format!(
            "URI '{uri}' carries a query, fragment, user or escape"
        ));
    }
    let (host, path) = hier
        .find('/')
        .map(|i| hier.split_at(i))
        .ok_or_else(|| format!("URI '{uri}' names no AE"))?;
    // Without a host the URI names no SP.
    if host.is_empty() {
        return Err(format!("URI '{uri}' names no SP"));
    }
    if !host.eq_ignore_ascii_case(sp.fqdn()) {
        return Err(format!("URI '{uri}' belongs to SP '{host}', not '{sp}'"));
    }
    check_sp_relative_ae_id(path)?;
    let entity = EntityId::parse(path, &Home::sp(sp.clone())).map_err(|e| e.dbg)?;
    if !entity.is_ae() {
        return Err(format!("URI '{uri}' names no AE"));
    }
    Ok(Some(entity))
}

/// Which oneM2M identity a certificate names (TS-0003 clause 8.2.2.2, encodings in the module documentation).
///
/// The caller has already verified the chain and [`check_profile`]; this only reads the subjectAltName:
/// - a wildcard in any URI or dNSName SAN refuses the certificate;
/// - URI SANs of scheme [`AE_ID_URI_SCHEME`] must name an AE-ID in the SP's domain, else it is refused;
/// - a dNSName that is the public domain name of a CSE ([`CseNaming::cse_of`]) names that CSE; one in the
///   CSE namespace that no CSE-ID can have (upper case) refuses the certificate;
/// - exactly one AE-ID or CSE-ID (repeats of the same one allowed) is the identity; two different ones are
///   ambiguous and refused; other SANs (host names, IP addresses) are then ignored;
/// - with none, the first dNSName is the FQDN of an FQDN certificate; with no dNSName either, it is refused.
pub fn identity_of(cert: &X509Ref, naming: &CseNaming) -> Result<CertIdentity, String> {
    let sans = cert
        .subject_alt_names()
        .ok_or_else(|| "certificate has no subjectAltName".to_owned())?;
    let mut found: Vec<EntityId> = Vec::new();
    let mut first_dns: Option<String> = None;
    for gn in &sans {
        if let Some(uri) = gn.uri() {
            if uri.contains('*') {
                return Err(format!("wildcard in subjectAltName URI '{uri}'"));
            }
            if let Some(ae) = ae_id_from_uri(uri, &naming.sp)? {
                found.push(ae);
            }
        } else if let Some(dns) = gn.dnsname() {
            if dns.contains('*') {
                return Err(format!("wildcard in subjectAltName dNSName '{dns}'"));
            }
            match naming.cse_of(dns)? {
                Some(cse) => found.push(naming.entity(cse)),
                // Names that are no FQDN (`localhost`) may serve TLS host checks; they name nobody.
                None if first_dns.is_none() => {
                    first_dns = check_fqdn(dns.trim_end_matches('.')).ok();
                }
                None => {}
            }
        }
    }
    found.dedup();
    match found.as_slice() {
        [one] => Ok(CertIdentity::Entity(one.clone())),
        [] => first_dns
            .map(CertIdentity::Fqdn)
            .ok_or_else(|| "subjectAltName names no AE-ID, CSE-ID or FQDN".to_owned()),
        many => Err(format!(
            "subjectAltName names several oneM2M identities: {}",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The SP-FQDN a certificate of this project's profile belongs to: the host of an `onem2m://` AE-ID URI,
/// else what follows the first label of the first dNSName (`id-mn.m2m.example.com` -> `m2m.example.com`).
/// Lets an entity name peers of its own SP without being told the SP again.
pub fn sp_of(cert: &X509Ref) -> Option<String> {
    let sans = cert.subject_alt_names()?;
    let prefix = format!("{AE_ID_URI_SCHEME}://");
    let from_uri = sans.iter().find_map(|gn| {
        let rest = gn.uri()?.strip_prefix(prefix.as_str())?;
        rest.split_once('/')
            .map(|(host, _)| host.to_ascii_lowercase())
    });
    from_uri.or_else(|| {
        sans.iter().find_map(|gn| {
            let (_, rest) = gn.dnsname()?.split_once('.')?;
            Some(rest.trim_end_matches('.').to_ascii_lowercase())
        })
    })
}

// ---------------------------------------------------------------------------------------------------------
// Profile check (TS-0003 clauses 10.1.1.1 and 10.1.1.3)
// ---------------------------------------------------------------------------------------------------------

/// Checks one certificate against the common profile (TS-0003 clauses 10.1.1.1 and 10.1.1.3): X.509 v3,
/// id-ecPublicKey on secp256r1 (P-256) with an uncompressed point, signed with ecdsa-with-SHA256, keyUsage
/// present with digitalSignature. Call it for every certificate of a chain: each certificate's own P-256 key
/// then guarantees that the certificates below it are signed with ECDSA on P-256.
pub fn check_profile(cert: &X509Ref) -> Result<(), String> {
    if cert.version() != 2 {
        return Err(format!(
            "certificate is X.509 v{}, not v3",
            cert.version() + 1
        ));
    }
    let key = cert
        .public_key()
        .map_err(|e| format!("unreadable public key: {e}"))?;
    if key.id() != Id::EC {
        return Err(format!(
            "public key is {}, not id-ecPublicKey on P-256",
            key_type_name(&key)
        ));
    }
    let ec = key
        .ec_key()
        .map_err(|e| format!("unreadable EC key: {e}"))?;
    if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
        return Err(format!(
            "public key is {}, not id-ecPublicKey on P-256",
            key_type_name(&key)
        ));
    }
    let der = cert
        .to_der()
        .map_err(|e| format!("certificate cannot be encoded: {e}"))?;
    match spki_point(&der) {
        Some(p) if p.len() == 65 && p[0] == 0x04 => {}
        Some(_) => return Err("public key point is not in uncompressed form".to_owned()),
        None => return Err("cannot locate the subjectPublicKeyInfo".to_owned()),
    }
    let sig = cert.signature_algorithm().object().nid();
    if sig != Nid::ECDSA_WITH_SHA256 {
        let name = sig
            .long_name()
            .map(str::to_owned)
            .unwrap_or_else(|_| cert.signature_algorithm().object().to_string());
        return Err(format!("signature is {name}, not ecdsa-with-SHA256"));
    }
    match cert.key_usage() {
        None => Err("keyUsage extension is missing".to_owned()),
        Some(ku) if !ku.contains(openssl::x509::X509KeyUsage::DIGITAL_SIGNATURE) => {
            Err("keyUsage lacks digitalSignature".to_owned())
        }
        Some(_) => Ok(()),
    }
}

/// A short description of a key: `EC P-256`, `EC secp384r1`, `RSA 2048`.
pub fn key_type_name<T: openssl::pkey::HasPublic>(key: &PKeyRef<T>) -> String {
    match key.id() {
        Id::EC => match key.ec_key().ok().and_then(|k| k.group().curve_name()) {
            Some(Nid::X9_62_PRIME256V1) => "EC P-256".to_owned(),
            Some(n) => format!("EC {}", n.short_name().unwrap_or("unknown curve")),
            None => "EC (explicit curve)".to_owned(),
        },
        Id::RSA => format!("RSA {}", key.bits()),
        other => format!("key type {}", other.as_raw()),
    }
}

/// Minimal DER reader: one TLV at the start of `der` -> (tag, content, rest).
fn der_tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Whether a certificate (DER) says it is a CA: its basicConstraints extension (RFC 5280 clause
/// 4.2.1.9, OID 2.5.29.19) with cA TRUE, read from the DER itself; anything unreadable is not.
pub fn is_ca_certificate(cert_der: &[u8]) -> bool {
    basic_constraints_ca(cert_der).unwrap_or(false)
}

fn basic_constraints_ca(cert_der: &[u8]) -> Option<bool> {
    const BASIC_CONSTRAINTS: [u8; 3] = [0x55, 0x1d, 0x13];
    let (0x30, cert, _) = der_tlv(cert_der)? else {
        return None;
    };
    let (0x30, mut tbs, _) = der_tlv(cert)? else {
        return None;
    };
    let (tag, _, rest) = der_tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    for _ in 0..6 {
        tbs = der_tlv(tbs)?.2;
    }
    while !tbs.is_empty() {
        let (tag, content, rest) = der_tlv(tbs)?;
        tbs = rest;
        if tag != 0xa3 {
            continue;
        }
        let (0x30, mut extensions, _) = der_tlv(content)? else {
            return None;
        };
        while !extensions.is_empty() {
            let (0x30, extension, more) = der_tlv(extensions)? else {
                return None;
            };
            extensions = more;
            let (0x06, oid, rest) = der_tlv(extension)? else {
                return None;
            };
            if oid != BASIC_CONSTRAINTS {
                continue;
            }
            // critical BOOLEAN (optional), then the extnValue OCTET STRING.
            let (tag, content, rest) = der_tlv(rest)?;
            let value = match tag {
                0x01 => match der_tlv(rest)? {
                    (0x04, v, _) => v,
                    _ => return None,
                },
                0x04 => content,
                _ => return None,
            };
            let (0x30, constraints, _) = der_tlv(value)? else {
                return None;
            };
            return Some(match der_tlv(constraints) {
                Some((0x01, flag, _)) => flag == [0xff],
                _ => false,
            });
        }
        return Some(false);
    }
    Some(false)
}

/// The public key bytes (BIT STRING content without the unused-bits octet) of a certificate's SPKI.
fn spki_point(cert_der: &[u8]) -> Option<&[u8]> {
    let (0x30, cert, _) = der_tlv(cert_der)? else {
        return None;
    };
    let (0x30, mut tbs, _) = der_tlv(cert)? else {
        return None;
    };
    // [0] version (optional), serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    let (tag, _, rest) = der_tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    for _ in 0..5 {
        tbs = der_tlv(tbs)?.2;
    }
    let (0x30, spki, _) = der_tlv(tbs)? else {
        return None;
    };
    let (0x30, _, rest) = der_tlv(spki)? else {
        return None;
    };
    let (0x03, bits, _) = der_tlv(rest)? else {
        return None;
    };
    match bits.split_first() {
        Some((0, point)) => Some(point),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Issuing (openssl's X509Builder: the same stack as the TLS layer, and URI nameConstraints are possible)
// ---------------------------------------------------------------------------------------------------------

/// Key types for new keys. Only [`KeyType::P256`] is in the profile; the others exist to make
/// non-profile certificates for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    P256,
    P384,
    Rsa2048,
}

/// Generates a new private key.
pub fn generate_key(kind: KeyType) -> Result<PKey<Private>, String> {
    let e = |e: openssl::error::ErrorStack| format!("key generation failed: {e}");
    match kind {
        KeyType::P256 | KeyType::P384 => {
            let nid = if kind == KeyType::P256 {
                Nid::X9_62_PRIME256V1
            } else {
                Nid::SECP384R1
            };
            let group = EcGroup::from_curve_name(nid).map_err(e)?;
            PKey::from_ec_key(EcKey::generate(&group).map_err(e)?).map_err(e)
        }
        KeyType::Rsa2048 => PKey::from_rsa(Rsa::generate(2048).map_err(e)?).map_err(e),
    }
}

/// The validity period of a new certificate, as Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// From five minutes ago (clock skew) for `days` days.
    pub fn days_from_now(days: u32) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let not_before = now - 300;
        Self {
            not_before,
            not_after: not_before + i64::from(days) * 86_400,
        }
    }
}

/// What the leaf certificate names, in the encodings of this module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafName {
    /// SP-relative AE-ID (`/id-in/Cphone`, `/Sdoorlock`) in the SP domain `sp`.
    Ae { ae_id: String, sp: String },
    /// A CSE, named as `naming` writes it (`id-mn.id-in.m2m.example.com`).
    Cse { cse_id: CseId, naming: CseNaming },
    /// FQDN of a MAF or MEF.
    Fqdn(String),
}

fn ossl(what: &'static str) -> impl Fn(openssl::error::ErrorStack) -> String {
    move |e| format!("{what}: {e}")
}

fn random_serial() -> Result<openssl::asn1::Asn1Integer, String> {
    let mut bn = BigNum::new().map_err(ossl("serial"))?;
    // 127 random bits, top bit forced: a positive 16-byte serial.
    bn.rand(127, MsbOption::ONE, false)
        .map_err(ossl("serial"))?;
    bn.to_asn1_integer().map_err(ossl("serial"))
}

/// One DER tag-length-value (definite length, short or long form).
pub(crate) fn encode_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// DER of a NameConstraints extension value with permitted subtrees only (RFC 5280 clause 4.2.1.10).
/// `uris` are URI host constraints (GeneralName tag [6]), `dns` are dNSName constraints (tag [2]).
fn name_constraints_der(uris: &[String], dns: &[String]) -> Vec<u8> {
    let tlv = encode_tlv;
    let mut subtrees = Vec::new();
    for u in uris {
        subtrees.extend(tlv(0x30, &tlv(0x86, u.as_bytes())));
    }
    for d in dns {
        subtrees.extend(tlv(0x30, &tlv(0x82, d.as_bytes())));
    }
    tlv(0x30, &tlv(0xa0, &subtrees))
}

fn set_validity(b: &mut X509Builder, v: Validity) -> Result<(), String> {
    if v.not_after <= v.not_before {
        return Err("notAfter must be later than notBefore".to_owned());
    }
    let t = |s: i64| Asn1Time::from_unix(s as _).map_err(ossl("validity"));
    let (nb, na) = (t(v.not_before)?, t(v.not_after)?);
    b.set_not_before(&nb).map_err(ossl("validity"))?;
    b.set_not_after(&na).map_err(ossl("validity"))
}

/// Makes a self-signed root CA certificate: basicConstraints CA:TRUE, pathlen 0 (chains stay short,
/// TS-0003 clause 10.1.1.3), keyUsage keyCertSign, cRLSign, digitalSignature (10.1.1.1), signed with SHA-256.
///
/// With `sp_fqdn`, it carries critical nameConstraints permitting the URI host `sp_fqdn` (the host of every
/// AE-ID URI, TS-0003 clause 10.1.1.5) and the DNS subtree `sp_fqdn` (every CSE-ID name); `extra_dns` adds
/// DNS subtrees (e.g. the domain of a MAF or MEF outside the SP domain, or `localhost` for test set-ups).
pub fn make_ca(
    name: &str,
    key: &PKeyRef<Private>,
    validity: Validity,
    sp_fqdn: Option<&str>,
    extra_dns: &[String],
) -> Result<X509, String> {
    let mut nb = X509NameBuilder::new().map_err(ossl("name"))?;
    nb.append_entry_by_nid(Nid::COMMONNAME, name)
        .map_err(ossl("CA name"))?;
    let subject = nb.build();
    let mut b = X509Builder::new().map_err(ossl("builder"))?;
    b.set_version(2).map_err(ossl("version"))?;
    let serial = random_serial()?;
    b.set_serial_number(&serial).map_err(ossl("serial"))?;
    b.set_subject_name(&subject).map_err(ossl("subject"))?;
    b.set_issuer_name(&subject).map_err(ossl("issuer"))?;
    b.set_pubkey(key).map_err(ossl("public key"))?;
    set_validity(&mut b, validity)?;
    let bc = BasicConstraints::new()
        .critical()
        .ca()
        .pathlen(0)
        .build()
        .map_err(ossl("basicConstraints"))?;
    b.append_extension(bc).map_err(ossl("basicConstraints"))?;
    let ku = KeyUsage::new()
        .critical()
        .key_cert_sign()
        .crl_sign()
        .digital_signature()
        .build()
        .map_err(ossl("keyUsage"))?;
    b.append_extension(ku).map_err(ossl("keyUsage"))?;
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .map_err(ossl("subjectKeyIdentifier"))?;
    b.append_extension(ski)
        .map_err(ossl("subjectKeyIdentifier"))?;
    let mut dns: Vec<String> = Vec::new();
    let mut uris: Vec<String> = Vec::new();
    if let Some(sp) = sp_fqdn {
        let sp = check_fqdn(sp)?;
        uris.push(sp.clone());
        dns.push(sp);
    }
    for d in extra_dns {
        dns.push(if d == "localhost" {
            d.clone()
        } else {
            check_fqdn(d)?
        });
    }
    if !dns.is_empty() {
        let oid = Asn1Object::from_str("2.5.29.30").map_err(ossl("nameConstraints"))?;
        let value = Asn1OctetString::new_from_bytes(&name_constraints_der(&uris, &dns))
            .map_err(ossl("nameConstraints"))?;
        let nc = openssl::x509::X509Extension::new_from_der(&oid, true, &value)
            .map_err(ossl("nameConstraints"))?;
        b.append_extension(nc).map_err(ossl("nameConstraints"))?;
    }
    b.sign(key, MessageDigest::sha256())
        .map_err(ossl("signing"))?;
    Ok(b.build())
}

/// Issues a leaf certificate for `name` with the public half of `key`, signed by the CA with SHA-256:
/// basicConstraints CA:FALSE, keyUsage digitalSignature (critical), extendedKeyUsage serverAuth+clientAuth,
/// subjectAltName per the module documentation plus `extra_dns` dNSNames (host names for TLS server
/// name checks; they must not name another CSE), commonName = the oneM2M identity.
pub fn issue<T: openssl::pkey::HasPublic>(
    name: &LeafName,
    key: &PKeyRef<T>,
    ca_cert: &X509Ref,
    ca_key: &PKeyRef<Private>,
    validity: Validity,
    extra_dns: &[String],
) -> Result<X509, String> {
    build_leaf(
        name,
        key,
        ca_cert,
        ca_key,
        validity,
        extra_dns,
        MessageDigest::sha256(),
        true,
    )
}

#[allow(clippy::too_many_arguments)]
fn build_leaf<T: openssl::pkey::HasPublic>(
    name: &LeafName,
    key: &PKeyRef<T>,
    ca_cert: &X509Ref,
    ca_key: &PKeyRef<Private>,
    validity: Validity,
    extra_dns: &[String],
    digest: MessageDigest,
    with_key_usage: bool,
) -> Result<X509, String> {
    let (cn, san_uri, mut san_dns) = match name {
        LeafName::Ae { ae_id, sp } => (ae_id.clone(), Some(ae_id_uri(sp, ae_id)?), vec![]),
        LeafName::Cse { cse_id, naming } => {
            (cse_id.to_string(), None, vec![naming.dns_name(cse_id)?])
        }
        LeafName::Fqdn(f) => {
            let f = check_fqdn(f)?;
            (f.clone(), None, vec![f])
        }
    };
    for d in extra_dns {
        let d = if d == "localhost" {
            d.clone()
        } else {
            check_fqdn(d)?
        };
        if !san_dns.contains(&d) {
            san_dns.push(d);
        }
    }
    let mut nb = X509NameBuilder::new().map_err(ossl("name"))?;
    nb.append_entry_by_nid(Nid::COMMONNAME, &cn)
        .map_err(ossl("subject name"))?;
    let mut b = X509Builder::new().map_err(ossl("builder"))?;
    b.set_version(2).map_err(ossl("version"))?;
    let serial = random_serial()?;
    b.set_serial_number(&serial).map_err(ossl("serial"))?;
    b.set_subject_name(&nb.build()).map_err(ossl("subject"))?;
    b.set_issuer_name(ca_cert.subject_name())
        .map_err(ossl("issuer"))?;
    b.set_pubkey(key).map_err(ossl("public key"))?;
    set_validity(&mut b, validity)?;
    let bc = BasicConstraints::new()
        .critical()
        .build()
        .map_err(ossl("basicConstraints"))?;
    b.append_extension(bc).map_err(ossl("basicConstraints"))?;
    if with_key_usage {
        let ku = KeyUsage::new()
            .critical()
            .digital_signature()
            .build()
            .map_err(ossl("keyUsage"))?;
        b.append_extension(ku).map_err(ossl("keyUsage"))?;
    }
    let eku = ExtendedKeyUsage::new()
        .server_auth()
        .client_auth()
        .build()
        .map_err(ossl("extendedKeyUsage"))?;
    b.append_extension(eku).map_err(ossl("extendedKeyUsage"))?;
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(Some(ca_cert), None))
        .map_err(ossl("subjectKeyIdentifier"))?;
    b.append_extension(ski)
        .map_err(ossl("subjectKeyIdentifier"))?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(ca_cert), None))
        .map_err(ossl("authorityKeyIdentifier"))?;
    b.append_extension(aki)
        .map_err(ossl("authorityKeyIdentifier"))?;
    let mut san = SubjectAlternativeName::new();
    if let Some(u) = &san_uri {
        san.uri(u);
    }
    for d in &san_dns {
        san.dns(d);
    }
    let san = san
        .build(&b.x509v3_context(Some(ca_cert), None))
        .map_err(ossl("subjectAltName"))?;
    b.append_extension(san).map_err(ossl("subjectAltName"))?;
    b.sign(ca_key, digest).map_err(ossl("signing"))?;
    Ok(b.build())
}

/// Verifies `leaf` against the single trust anchor `ca` with OpenSSL's path validation (signature, name
/// constraints, basicConstraints). `check_time = false` skips the validity periods (to check certificates
/// made expired or not yet valid on purpose).
pub fn verify_with_ca(leaf: &X509Ref, ca: &X509Ref, check_time: bool) -> Result<(), String> {
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::verify::X509VerifyFlags;
    use openssl::x509::X509StoreContext;
    let mut sb = X509StoreBuilder::new().map_err(ossl("store"))?;
    sb.add_cert(ca.to_owned()).map_err(ossl("store"))?;
    if !check_time {
        sb.set_flags(X509VerifyFlags::NO_CHECK_TIME)
            .map_err(ossl("store"))?;
    }
    let store = sb.build();
    let chain = Stack::new().map_err(ossl("store"))?;
    let mut ctx = X509StoreContext::new().map_err(ossl("store"))?;
    let (ok, err) = ctx
        .init(&store, leaf, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error()))
        })
        .map_err(ossl("verification"))?;
    if ok {
        Ok(())
    } else {
        Err(format!("certificate does not verify: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: &str = "m2m.example.com";

    fn ca() -> (X509, PKey<Private>) {
        let key = generate_key(KeyType::P256).unwrap();
        let ca = make_ca(
            "m2m.example.com root CA",
            &key,
            Validity::days_from_now(10),
            Some(SP),
            &["keys.example.net".to_owned()],
        )
        .unwrap();
        (ca, key)
    }

    fn leaf(name: LeafName, kt: KeyType, extra: &[&str]) -> X509 {
        let (ca, ca_key) = ca();
        let key = generate_key(kt).unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        issue(
            &name,
            &key,
            &ca,
            &ca_key,
            Validity::days_from_now(1),
            &extra,
        )
        .unwrap()
    }

    fn ae(id: &str) -> LeafName {
        LeafName::Ae {
            ae_id: id.into(),
            sp: SP.into(),
        }
    }

    fn cse(id: &str) -> LeafName {
        LeafName::Cse {
            cse_id: CseId::parse(id).unwrap(),
            naming: naming(),
        }
    }

    fn naming() -> CseNaming {
        CseNaming::new(SP, "/id-in").unwrap()
    }

    fn ent(id: &str) -> CertIdentity {
        CertIdentity::Entity(EntityId::parse(id, &Home::sp(SpId::parse(SP).unwrap())).unwrap())
    }

    /// A self-signed certificate with arbitrary SANs (for names `issue` would refuse to write).
    fn raw_cert(uris: &[&str], dns: &[&str], digest: MessageDigest) -> X509 {
        let key = generate_key(KeyType::P256).unwrap();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_pubkey(&key).unwrap();
        set_validity(&mut b, Validity::days_from_now(1)).unwrap();
        b.append_extension(KeyUsage::new().digital_signature().build().unwrap())
            .unwrap();
        if !(uris.is_empty() && dns.is_empty()) {
            let mut san = SubjectAlternativeName::new();
            for u in uris {
                san.uri(u);
            }
            for d in dns {
                san.dns(d);
            }
            let ext = san.build(&b.x509v3_context(None, None)).unwrap();
            b.append_extension(ext).unwrap();
        }
        b.sign(&key, digest).unwrap();
        b.build()
    }

    #[test]
    fn basic_constraints_are_read_from_the_der() {
        let (ca_cert, _) = ca();
        assert!(is_ca_certificate(&ca_cert.to_der().unwrap()));
        let leaf = raw_cert(&[], &["x.m2m.example.com"], MessageDigest::sha256());
        assert!(!is_ca_certificate(&leaf.to_der().unwrap()));
        for junk in [&[][..], &[0x30, 0x00][..], &[0x30, 0x82, 0xff][..]] {
            assert!(!is_ca_certificate(junk));
        }
    }

    #[test]
    fn ae_certificate_names_its_ae_id() {
        let c = leaf(ae("/id-in/Cphone"), KeyType::P256, &[]);
        check_profile(&c).unwrap();
        let id = identity_of(&c, &naming()).unwrap();
        assert_eq!(id, ent("/id-in/Cphone"));
        assert_eq!(
            id.entity().unwrap().absolute(),
            "//m2m.example.com/id-in/Cphone"
        );
        let s = leaf(ae("/Sdoorlock"), KeyType::P256, &[]);
        assert_eq!(
            identity_of(&s, &CseNaming::new("M2M.Example.COM", "/id-in").unwrap()).unwrap(),
            ent("/Sdoorlock")
        );
        let sans = c.subject_alt_names().unwrap();
        assert_eq!(
            sans.iter().next().unwrap().uri(),
            Some("onem2m://m2m.example.com/id-in/Cphone")
        );
    }

    #[test]
    fn cse_certificate_names_its_cse_id() {
        let c = leaf(cse("/id-mn"), KeyType::P256, &["localhost"]);
        check_profile(&c).unwrap();
        assert_eq!(identity_of(&c, &naming()).unwrap(), ent("/id-mn"));
        let sans = c.subject_alt_names().unwrap();
        assert_eq!(
            sans.iter().next().unwrap().dnsname(),
            Some("id-mn.id-in.m2m.example.com")
        );
        // The IN-CSE is named directly under the SP.
        let c = leaf(cse("/id-in"), KeyType::P256, &[]);
        assert_eq!(identity_of(&c, &naming()).unwrap(), ent("/id-in"));
    }

    #[test]
    fn maf_certificate_names_its_fqdn() {
        let c = leaf(
            LeafName::Fqdn("maf.keys.example.net".into()),
            KeyType::P256,
            &[],
        );
        check_profile(&c).unwrap();
        assert_eq!(
            identity_of(&c, &naming()).unwrap(),
            CertIdentity::Fqdn("maf.keys.example.net".into())
        );
        // A MEF deeper in the SP domain is an FQDN too, not a CSE.
        let c = leaf(
            LeafName::Fqdn("mef.sec.m2m.example.com".into()),
            KeyType::P256,
            &[],
        );
        assert_eq!(
            identity_of(&c, &naming()).unwrap(),
            CertIdentity::Fqdn("mef.sec.m2m.example.com".into())
        );
    }

    #[test]
    fn issued_certificates_verify_and_name_constraints_hold() {
        let (ca, ca_key) = ca();
        check_profile(&ca).unwrap();
        let key = generate_key(KeyType::P256).unwrap();
        for name in [
            ae("/id-in/Cphone"),
            cse("/id-mn"),
            LeafName::Fqdn("maf.keys.example.net".into()),
        ] {
            let c = issue(&name, &key, &ca, &ca_key, Validity::days_from_now(1), &[]).unwrap();
            verify_with_ca(&c, &ca, true).unwrap();
        }
        // Outside the CA's nameConstraints: an AE of another SP, a CSE of another SP.
        for name in [
            LeafName::Ae {
                ae_id: "/Sx".into(),
                sp: "other.example.org".into(),
            },
            LeafName::Cse {
                cse_id: CseId::parse("/id-mn").unwrap(),
                naming: CseNaming::new("other.example.org", "/id-in").unwrap(),
            },
        ] {
            let c = issue(&name, &key, &ca, &ca_key, Validity::days_from_now(1), &[]).unwrap();
            let err = verify_with_ca(&c, &ca, true).unwrap_err();
            assert!(err.contains("subtree"), "{err}");
        }
    }

    #[test]
    fn expired_certificate_fails_time_check_only() {
        let (ca, ca_key) = ca();
        let key = generate_key(KeyType::P256).unwrap();
        let v = Validity {
            not_before: 1_600_000_000,
            not_after: 1_600_086_400,
        };
        let c = issue(&cse("/id-mn"), &key, &ca, &ca_key, v, &[]).unwrap();
        assert!(verify_with_ca(&c, &ca, true)
            .unwrap_err()
            .contains("expired"));
        verify_with_ca(&c, &ca, false).unwrap();
    }

    #[test]
    fn p384_key_refused() {
        let c = leaf(cse("/id-mn"), KeyType::P384, &[]);
        let err = check_profile(&c).unwrap_err();
        assert!(err.contains("secp384r1"), "{err}");
    }

    #[test]
    fn rsa_key_refused() {
        let c = leaf(cse("/id-mn"), KeyType::Rsa2048, &[]);
        let err = check_profile(&c).unwrap_err();
        assert!(err.contains("RSA"), "{err}");
    }

    #[test]
    fn other_hash_and_missing_key_usage_refused() {
        let c = raw_cert(&[], &["id-mn.m2m.example.com"], MessageDigest::sha384());
        assert!(check_profile(&c).unwrap_err().contains("ecdsa-with-SHA384"));
        let (ca, ca_key) = ca();
        let key = generate_key(KeyType::P256).unwrap();
        let c = build_leaf(
            &cse("/id-mn"),
            &key,
            &ca,
            &ca_key,
            Validity::days_from_now(1),
            &[],
            MessageDigest::sha256(),
            false,
        )
        .unwrap();
        assert!(check_profile(&c).unwrap_err().contains("keyUsage"));
    }

    fn hex_bytes(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn compressed_point_refused() {
        use openssl::ec::PointConversionForm;
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = EcKey::generate(&group).unwrap();
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        let point = ec
            .public_key()
            .to_bytes(&group, PointConversionForm::COMPRESSED, &mut ctx)
            .unwrap();
        // SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 } with a 33-byte compressed point.
        let mut spki = hex_bytes("3039301306072a8648ce3d020106082a8648ce3d030107032200");
        spki.extend(point);
        let key = PKey::public_key_from_der(&spki).unwrap();
        let (ca, ca_key) = ca();
        let c = issue(
            &cse("/id-mn"),
            &key,
            &ca,
            &ca_key,
            Validity::days_from_now(1),
            &[],
        )
        .unwrap();
        // OpenSSL keeps the compressed form it decoded when it encodes the certificate.
        let der = c.to_der().unwrap();
        assert_eq!(spki_point(&der).unwrap().len(), 33);
        assert!(check_profile(&c).unwrap_err().contains("uncompressed"));
    }

    #[test]
    fn wildcards_refused() {
        let c = raw_cert(&[], &["*.m2m.example.com"], MessageDigest::sha256());
        assert!(identity_of(&c, &naming()).unwrap_err().contains("wildcard"));
        let c = raw_cert(
            &["onem2m://m2m.example.com/id-in/C*"],
            &[],
            MessageDigest::sha256(),
        );
        assert!(identity_of(&c, &naming()).unwrap_err().contains("wildcard"));
        // A wildcard next to a good name still spoils the certificate.
        let c = raw_cert(
            &[],
            &["id-mn.id-in.m2m.example.com", "*.example.net"],
            MessageDigest::sha256(),
        );
        assert!(identity_of(&c, &naming()).unwrap_err().contains("wildcard"));
    }

    #[test]
    fn no_san_refused() {
        let c = raw_cert(&[], &[], MessageDigest::sha256());
        assert!(identity_of(&c, &naming())
            .unwrap_err()
            .contains("no subjectAltName"));
        let c = raw_cert(&["https://m2m.example.com/x"], &[], MessageDigest::sha256());
        assert!(identity_of(&c, &naming()).unwrap_err().contains("names no"));
    }

    #[test]
    fn wrong_sp_domain_refused() {
        let c = raw_cert(
            &["onem2m://other.example.org/id-in/Cphone"],
            &[],
            MessageDigest::sha256(),
        );
        let err = identity_of(&c, &naming()).unwrap_err();
        assert!(err.contains("other.example.org"), "{err}");
        // A CSE name of another SP is no CSE-ID here (at most an FQDN, which a CSE does not accept as a CSE).
        let c = raw_cert(
            &[],
            &["id-mn.id-in.other.example.org"],
            MessageDigest::sha256(),
        );
        assert!(!matches!(
            identity_of(&c, &naming()),
            Ok(CertIdentity::Entity(_))
        ));
        // Suffix tricks: "evilm2m.example.com" is not under "m2m.example.com".
        let c = raw_cert(
            &[],
            &[
                "id-mn.id-in.evilm2m.example.com",
                "id-mn.xid-in.m2m.example.com",
            ],
            MessageDigest::sha256(),
        );
        assert!(!matches!(
            identity_of(&c, &naming()),
            Ok(CertIdentity::Entity(_))
        ));
    }

    #[test]
    fn malformed_ae_uris_refused() {
        for uri in [
            "onem2m://m2m.example.com/id-in/Xphone",
            "onem2m://m2m.example.com/id-in",
            "onem2m://m2m.example.com/Cphone",
            "onem2m://m2m.example.com/id-in/Cphone?x=1",
            "onem2m://m2m.example.com/id-in/C%41",
            "onem2m://user@m2m.example.com/Sx",
            "onem2m:/m2m.example.com/Sx",
            "onem2m://m2m.example.com//Sx",
        ] {
            let c = raw_cert(&[uri], &[], MessageDigest::sha256());
            assert!(identity_of(&c, &naming()).is_err(), "{uri} accepted");
        }
    }

    #[test]
    fn a_uri_without_host_names_nobody() {
        // Found by the property tests: with no SP given, `onem2m:///Sx` named an AE.
        let c = raw_cert(&["onem2m:///Sx"], &[], MessageDigest::sha256());
        for naming in [naming(), CseNaming::without_cses(SP).unwrap()] {
            assert!(
                identity_of(&c, &naming)
                    .unwrap_err()
                    .contains("names no SP"),
                "{naming:?}"
            );
        }
        // Where no CSE can be named, an FQDN certificate still names its FQDN.
        let c = raw_cert(&[], &["id-in.m2m.example.com"], MessageDigest::sha256());
        assert_eq!(
            identity_of(&c, &CseNaming::without_cses(SP).unwrap()).unwrap(),
            CertIdentity::Fqdn("id-in.m2m.example.com".into())
        );
    }

    #[test]
    fn two_identities_are_ambiguous() {
        let c = raw_cert(
            &["onem2m://m2m.example.com/Sx"],
            &["id-mn.id-in.m2m.example.com"],
            MessageDigest::sha256(),
        );
        assert!(identity_of(&c, &naming()).unwrap_err().contains("several"));
        let c = raw_cert(
            &[],
            &[
                "id-mn.id-in.m2m.example.com",
                "id-mn2.id-in.m2m.example.com",
            ],
            MessageDigest::sha256(),
        );
        assert!(identity_of(&c, &naming()).unwrap_err().contains("several"));
    }

    #[test]
    fn encodings_check_their_input() {
        let n = naming();
        let id = |s: &str| CseId::parse(s).unwrap();
        assert_eq!(
            n.dns_name(&id("/id-mn")).unwrap(),
            "id-mn.id-in.m2m.example.com"
        );
        assert_eq!(n.dns_name(&id("/id-in")).unwrap(), "id-in.m2m.example.com");
        assert!(n.dns_name(&id("/id_mn")).is_err());
        assert!(
            n.dns_name(&id("/ID-MN")).is_err(),
            "upper case has no DNS form"
        );
        assert!(CseNaming::new("*.example.com", "/id-in").is_err());
        assert!(CseNaming::new(SP, "/ID-IN").is_err());
        assert_eq!(
            ae_id_uri(SP, "/id-in/Cphone").unwrap(),
            "onem2m://m2m.example.com/id-in/Cphone"
        );
        assert!(ae_id_uri(SP, "Cphone").is_err());
        assert!(ae_id_uri(SP, "/id-in/Sphone").is_err());
        assert!(check_fqdn("localhost").is_err());
    }

    #[test]
    fn name_constraints_der_long_form() {
        let long = vec!["a".repeat(60) + ".example.com"; 3];
        let der = name_constraints_der(&long, &long);
        let (tag, content, rest) = der_tlv(&der).unwrap();
        assert_eq!((tag, rest.len()), (0x30, 0));
        let (tag, subtrees, _) = der_tlv(content).unwrap();
        assert_eq!(tag, 0xa0);
        let mut n = 0;
        let mut s = subtrees;
        while !s.is_empty() {
            s = der_tlv(s).unwrap().2;
            n += 1;
        }
        assert_eq!(n, 6);
    }
}

#[cfg(test)]
mod phantom_tests {
    use super::*;

    fn raw(dns: &[&str]) -> X509 {
        let key = generate_key(KeyType::P256).unwrap();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_pubkey(&key).unwrap();
        set_validity(&mut b, Validity::days_from_now(1)).unwrap();
        let mut san = SubjectAlternativeName::new();
        for d in dns {
            san.dns(d);
        }
        let ext = san.build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(ext).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    /// Every dNSName either names exactly the CSE whose public domain name it is, or no CSE at all;
    /// one that would name a CSE in another letter case refuses the certificate.
    #[test]
    fn no_dns_name_becomes_a_phantom_cse() {
        let naming = CseNaming::new("m2m.example.com", "/id-in").unwrap();
        let cse = |id: &str| {
            Ok(CertIdentity::Entity(EntityId::cse(
                naming.sp.clone(),
                CseId::parse(id).unwrap(),
            )))
        };
        let fqdn = |f: &str| Ok(CertIdentity::Fqdn(f.into()));
        let cases: Vec<(&str, Result<CertIdentity, ()>)> = vec![
            ("id-in.m2m.example.com", cse("/id-in")),
            ("id-in.m2m.example.com.", cse("/id-in")),
            ("id-mn.id-in.m2m.example.com", cse("/id-mn")),
            ("id-mn.ID-IN.M2M.example.com", cse("/id-mn")),
            // FQDN certificates elsewhere in the SP's domain name no CSE.
            ("maf.m2m.example.com", fqdn("maf.m2m.example.com")),
            ("www.m2m.example.com", fqdn("www.m2m.example.com")),
            ("id-mn.m2m.example.com", fqdn("id-mn.m2m.example.com")),
            (
                "a.id-mn.id-in.m2m.example.com",
                fqdn("a.id-mn.id-in.m2m.example.com"),
            ),
            ("id-in.example.com", fqdn("id-in.example.com")),
            // Another letter case would be another CSE-ID: refused.
            ("ID-MN.id-in.m2m.example.com", Err(())),
            ("Id-mn.id-in.m2m.example.com", Err(())),
            ("ID-IN.m2m.example.com", Err(())),
        ];
        for (dns, want) in cases {
            let got = identity_of(&raw(&[dns]), &naming).map_err(|_| ());
            assert_eq!(got, want.map_err(|_| ()), "{dns}");
        }
    }
}
