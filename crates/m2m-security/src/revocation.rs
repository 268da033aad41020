//! Certificate status verification with certificate revocation lists (TS-0003 clause 8.1.2.2,
//! IETF RFC 5280 clause 5).
//!
//! A [`RevocationList`] is a PEM file of one or more CRLs (`m2m pki revoke` writes one per CA).
//! It is consulted at every certificate handshake: the file's identity (inode, size, modification
//! time) is compared with the one loaded, and a changed file is read again, so a revocation takes
//! effect at the next handshake without a restart. Writers replace the file by rename, so a reader
//! never sees half of it.
//!
//! Every CRL must be signed by a trusted CA whose subject is its issuer, and carry a nextUpdate. The
//! check fails closed: a certificate whose issuer has a CRL in the file is refused when that CRL has
//! expired, and every certificate is refused while the file is missing or unreadable (a deleted
//! list must not quietly re-admit revoked peers). A certificate whose issuer has no CRL in the file
//! is not checked.

use crate::watched_file::WatchedFile;
use openssl::asn1::Asn1Time;
use openssl::x509::{CrlStatus, X509Crl, X509CrlRef, X509NameRef, X509Ref, X509};
use std::path::Path;
use std::sync::Arc;

/// What a certificate's status check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertStatus {
    /// Not revoked by the CRL of its issuer (or its issuer has none in the file).
    Good,
    /// Listed as revoked by its issuer's CRL.
    Revoked,
    /// The status cannot be decided (list missing, unreadable, or expired): the certificate is refused.
    Undecided(String),
}

/// One or more CRLs from a file, each verified against the trusted CAs, re-read when the file changes.
pub struct RevocationList {
    trusted: Vec<X509>,
    file: WatchedFile<Vec<X509Crl>>,
}

impl std::fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationList")
            .field("path", &self.file.path())
            .finish_non_exhaustive()
    }
}

impl RevocationList {
    /// Opens `path`, verified against the CAs of the PEM file `trusted_ca`. An unusable list is an
    /// error here (start-up), and a refusal of every certificate later (a list broken at run time).
    pub fn open(path: &Path, trusted_ca: &Path) -> Result<Self, String> {
        let pem = std::fs::read(trusted_ca)
            .map_err(|e| format!("trusted CA {}: {e}", trusted_ca.display()))?;
        let trusted = X509::stack_from_pem(&pem)
            .map_err(|e| format!("trusted CA {}: {e}", trusted_ca.display()))?;
        // A CRL names its CA by subject only: two trusted CAs of one name could not be told apart
        // (one's list checked with the other's key, its certificates never found revoked).
        for (i, ca) in trusted.iter().enumerate() {
            if trusted[..i]
                .iter()
                .any(|other| same_name(other.subject_name(), ca.subject_name()))
            {
                return Err(format!(
                    "trusted CA {}: two CAs share one subject name; give each its own (m2m pki ca --name)",
                    trusted_ca.display()
                ));
            }
        }
        let list = Self {
            trusted,
            file: WatchedFile::new(path),
        };
        list.current()
            .map_err(|e| format!("CRL {}: {e}", path.display()))?;
        Ok(list)
    }

    /// The list a configuration names: `crl` verified against `trusted_ca`, shared by every
    /// listener and client of the process (one file watch, one cache); none without `crl`.
    pub fn open_configured(
        crl: Option<&Path>,
        trusted_ca: Option<&Path>,
    ) -> Result<Option<Arc<RevocationList>>, String> {
        let Some(crl) = crl else {
            return Ok(None);
        };
        let ca = trusted_ca.ok_or("crl needs trusted_ca")?;
        Self::open(crl, ca).map(|l| Some(Arc::new(l)))
    }

    /// The file this list is read from.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The status of `cert` (any certificate of a peer's chain) under the list as it is now.
    pub fn check(&self, cert: &X509Ref) -> CertStatus {
        let crls = match self.current() {
            Ok(c) => c,
            Err(e) => return CertStatus::Undecided(e),
        };
        let Some(crl) = crls
            .iter()
            .find(|c| same_name(c.issuer_name(), cert.issuer_name()))
        else {
            return CertStatus::Good;
        };
        match crl.next_update() {
            Some(next) if Asn1Time::days_from_now(0).is_ok_and(|now| *next >= now) => {}
            _ => return CertStatus::Undecided("the issuer's CRL has expired".into()),
        }
        match crl.get_by_serial(cert.serial_number()) {
            CrlStatus::Revoked(_) => CertStatus::Revoked,
            CrlStatus::NotRevoked | CrlStatus::RemoveFromCrl(_) => CertStatus::Good,
        }
    }

    /// The CRLs as the file holds them now, read again if it changed since the last look.
    fn current(&self) -> Result<Arc<Vec<X509Crl>>, String> {
        self.file.current(|path| self.read(path))
    }

    fn read(&self, path: &Path) -> Result<Vec<X509Crl>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let crls = parse_pem_crls(&text)?;
        if crls.is_empty() {
            return Err("no CRL in the file".into());
        }
        for (i, crl) in crls.iter().enumerate() {
            if crls[..i]
                .iter()
                .any(|other| same_name(other.issuer_name(), crl.issuer_name()))
            {
                return Err("two CRLs of one CA".into());
            }
            let issuer = self
                .trusted
                .iter()
                .find(|ca| same_name(ca.subject_name(), crl.issuer_name()))
                .ok_or("a CRL's issuer is not a trusted CA")?;
            let key = issuer.public_key().map_err(|e| e.to_string())?;
            if !crl.verify(&key).unwrap_or(false) {
                return Err("a CRL's signature does not verify with its issuer's key".into());
            }
            if crl.next_update().is_none() {
                return Err("a CRL has no nextUpdate".into());
            }
        }
        Ok(crls)
    }
}

/// The CRLs of a PEM text, in order.
pub fn parse_pem_crls(text: &str) -> Result<Vec<X509Crl>, String> {
    const BEGIN: &str = "-----BEGIN X509 CRL-----";
    const END: &str = "-----END X509 CRL-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let end = rest[start..]
            .find(END)
            .ok_or("a CRL's PEM block is not terminated")?
            + start
            + END.len();
        let crl = X509Crl::from_pem(&rest.as_bytes()[start..end]).map_err(|e| e.to_string())?;
        out.push(crl);
        rest = &rest[end..];
    }
    Ok(out)
}

fn same_name(a: &X509NameRef, b: &X509NameRef) -> bool {
    matches!((a.to_der(), b.to_der()), (Ok(x), Ok(y)) if x == y)
}

/// One revoked certificate: its serial number (big-endian magnitude) and when it was revoked (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    pub serial: Vec<u8>,
    pub revoked_at: i64,
}

/// What [`make_crl`] signs.
#[derive(Debug, Clone)]
pub struct CrlContent<'a> {
    /// The revoked certificates; the list may be empty (a CRL that revokes nothing yet).
    pub revoked: &'a [RevokedEntry],
    /// The cRLNumber, increasing with every CRL the CA issues (RFC 5280 clause 5.2.3).
    pub number: u64,
    pub this_update: i64,
    pub next_update: i64,
}

/// A version 2 CRL of `ca` in the RFC 5280 clause 5 profile, signed with ECDSA and SHA-256 like
/// the certificates (TS-0003 clause 10.1.1): authorityKeyIdentifier (the CA's subjectKeyIdentifier)
/// and cRLNumber.
pub fn make_crl(
    ca: &X509Ref,
    ca_key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    content: &CrlContent<'_>,
) -> Result<X509Crl, String> {
    use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString};
    use openssl::bn::BigNum;
    use openssl::x509::{X509CrlBuilder, X509Extension, X509RevokedBuilder};
    let ossl = |what: &'static str| move |e: openssl::error::ErrorStack| format!("{what}: {e}");
    let time =
        |t: i64| -> Result<Asn1Time, String> { Asn1Time::from_unix(t).map_err(ossl("time")) };
    let mut b = X509CrlBuilder::new().map_err(ossl("CRL"))?;
    b.set_issuer_name(ca.subject_name())
        .map_err(ossl("issuer"))?;
    b.set_last_update(time(content.this_update)?.as_ref())
        .map_err(ossl("thisUpdate"))?;
    b.set_next_update(time(content.next_update)?.as_ref())
        .map_err(ossl("nextUpdate"))?;
    let ski = ca
        .subject_key_id()
        .ok_or("the CA certificate has no subjectKeyIdentifier")?;
    // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }
    let tlv = crate::certificates::encode_tlv;
    let aki = tlv(0x30, &tlv(0x80, ski.as_slice()));
    let ext = |oid: &str, der: &[u8]| -> Result<X509Extension, String> {
        let oid = Asn1Object::from_str(oid).map_err(ossl("extension"))?;
        let value = Asn1OctetString::new_from_bytes(der).map_err(ossl("extension"))?;
        X509Extension::new_from_der(&oid, false, &value).map_err(ossl("extension"))
    };
    b.append_extension(ext("2.5.29.35", &aki)?)
        .map_err(ossl("authorityKeyIdentifier"))?;
    let number = BigNum::from_slice(&content.number.to_be_bytes())
        .and_then(openssl::x509::extension::CrlNumber::new)
        .and_then(|n| n.build())
        .map_err(ossl("cRLNumber"))?;
    b.append_extension(number).map_err(ossl("cRLNumber"))?;
    for r in content.revoked {
        let serial = BigNum::from_slice(&r.serial)
            .and_then(|n| Asn1Integer::from_bn(&n))
            .map_err(ossl("serial"))?;
        let mut e = X509RevokedBuilder::new().map_err(ossl("revoked"))?;
        e.set_serial_number(&serial).map_err(ossl("serial"))?;
        e.set_revocation_date(time(r.revoked_at)?.as_ref())
            .map_err(ossl("revocationDate"))?;
        b.add_revoked(e.build()).map_err(ossl("revoked"))?;
    }
    b.sort().map_err(ossl("sort"))?;
    b.sign(ca_key, openssl::hash::MessageDigest::sha256())
        .map_err(ossl("signature"))?;
    b.build().map_err(ossl("CRL"))
}

/// The entries, cRLNumber and nextUpdate of a CRL (to extend it with the next revocation).
pub fn crl_entries(crl: &X509CrlRef) -> Vec<RevokedEntry> {
    let epoch = Asn1Time::from_unix(0).ok();
    crl.get_revoked()
        .map(|stack| {
            stack
                .iter()
                .map(|r| RevokedEntry {
                    serial: r
                        .serial_number()
                        .to_bn()
                        .map(|n| n.to_vec())
                        .unwrap_or_default(),
                    revoked_at: epoch
                        .as_ref()
                        .and_then(|e| e.diff(r.revocation_date()).ok())
                        .map(|d| i64::from(d.days) * 86_400 + i64::from(d.secs))
                        .unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The cRLNumber of a CRL, 0 when it has none.
pub fn crl_number(crl: &X509CrlRef) -> u64 {
    crl.extension::<openssl::x509::extension::CrlNumber>()
        .ok()
        .flatten()
        .and_then(|(_, n)| n.to_bn().ok())
        .and_then(|n| n.to_dec_str().ok()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::{generate_key, issue, make_ca, KeyType, LeafName, Validity};
    use openssl::pkey::{PKey, Private};
    use std::path::PathBuf;

    struct Ca {
        cert: X509,
        key: PKey<Private>,
    }

    fn ca(name: &str) -> Ca {
        let key = generate_key(KeyType::P256).unwrap();
        let cert = make_ca(name, &key, Validity::days_from_now(10), None, &[]).unwrap();
        Ca { cert, key }
    }

    fn leaf(ca: &Ca, ae: &str) -> X509 {
        let key = generate_key(KeyType::P256).unwrap();
        let name = LeafName::Ae {
            ae_id: format!("/id-in/{ae}"),
            sp: "m2m.example.com".into(),
        };
        issue(
            &name,
            &key,
            &ca.cert,
            &ca.key,
            Validity::days_from_now(1),
            &[],
        )
        .unwrap()
    }

    fn serial(cert: &X509) -> Vec<u8> {
        cert.serial_number().to_bn().unwrap().to_vec()
    }

    fn crl(ca: &Ca, revoked: &[&X509], next_update_in: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        let entries: Vec<RevokedEntry> = revoked
            .iter()
            .map(|c| RevokedEntry {
                serial: serial(c),
                revoked_at: now - 5,
            })
            .collect();
        let content = CrlContent {
            revoked: &entries,
            number: 7,
            this_update: now - 10,
            next_update: now + next_update_in,
        };
        let crl = make_crl(&ca.cert, &ca.key, &content).unwrap();
        String::from_utf8(crl.to_pem().unwrap()).unwrap()
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new(cas: &[&Ca]) -> Files {
            let dir = tempfile::tempdir().unwrap();
            let mut pem = Vec::new();
            for ca in cas {
                pem.extend(ca.cert.to_pem().unwrap());
            }
            std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
            Files { dir }
        }
        fn crl_path(&self) -> PathBuf {
            self.dir.path().join("crl.pem")
        }
        /// Replaces the list the way `m2m pki` does: a new file renamed over the old one.
        fn put(&self, text: &str) {
            let tmp = self.dir.path().join("tmp.pem");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(tmp, self.crl_path()).unwrap();
        }
        fn open(&self) -> Result<RevocationList, String> {
            RevocationList::open(&self.crl_path(), &self.dir.path().join("ca.pem"))
        }
    }

    #[test]
    fn a_listed_serial_is_revoked_and_only_under_its_issuer() {
        let (a, b) = (ca("CA a"), ca("CA b"));
        let (phone, lock) = (leaf(&a, "Cphone"), leaf(&a, "Clock"));
        let other = leaf(&b, "Cother");
        let files = Files::new(&[&a, &b]);
        files.put(&crl(&a, &[&phone], 3600));
        let list = files.open().unwrap();
        assert_eq!(list.check(&phone), CertStatus::Revoked);
        assert_eq!(list.check(&lock), CertStatus::Good);
        // b has no list in the file: its certificates are not checked.
        assert_eq!(list.check(&other), CertStatus::Good);
        // The same serial under another issuer is another certificate.
        let mut crls = crl(&a, &[&phone], 3600);
        crls.push_str(&crl(&b, &[&phone], 3600));
        files.put(&crls);
        assert_eq!(list.check(&other), CertStatus::Good);
        assert_eq!(list.check(&lock), CertStatus::Good);
        assert_eq!(list.check(&phone), CertStatus::Revoked);
    }

    #[test]
    fn a_replaced_file_is_read_again_at_the_next_check() {
        let a = ca("CA a");
        let (phone, lock) = (leaf(&a, "Cphone"), leaf(&a, "Clock"));
        let files = Files::new(&[&a]);
        files.put(&crl(&a, &[], 3600));
        let list = files.open().unwrap();
        assert_eq!(list.check(&phone), CertStatus::Good);
        files.put(&crl(&a, &[&phone], 3600));
        assert_eq!(list.check(&phone), CertStatus::Revoked);
        files.put(&crl(&a, &[&phone, &lock], 3600));
        assert_eq!(list.check(&lock), CertStatus::Revoked);
    }

    #[test]
    fn an_unusable_list_refuses_every_certificate() {
        let (a, b) = (ca("CA a"), ca("CA b"));
        let phone = leaf(&a, "Cphone");
        let files = Files::new(&[&a]);
        files.put(&crl(&a, &[], 3600));
        let list = files.open().unwrap();
        let undecided = |s: CertStatus| matches!(s, CertStatus::Undecided(_));
        // Expired: past nextUpdate.
        files.put(&crl(&a, &[], -60));
        assert!(undecided(list.check(&phone)));
        // Signed by a CA that is not trusted (its issuer name is b's).
        files.put(&crl(&b, &[], 3600));
        assert!(undecided(list.check(&phone)));
        // Forged: a's name, b's signature.
        let forged = Ca {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        files.put(&crl(&forged, &[], 3600));
        assert!(undecided(list.check(&phone)));
        // Truncated, garbage, empty, deleted.
        let good = crl(&a, &[], 3600);
        for text in [&good[..good.len() / 2], "garbage", ""] {
            files.put(text);
            assert!(undecided(list.check(&phone)), "{text:?}");
        }
        std::fs::remove_file(files.crl_path()).unwrap();
        assert!(undecided(list.check(&phone)));
        // Usable again once a good list is back.
        files.put(&good);
        assert_eq!(list.check(&phone), CertStatus::Good);
    }

    #[test]
    fn an_unusable_list_at_start_up_is_an_error() {
        let (a, b) = (ca("CA a"), ca("CA b"));
        let files = Files::new(&[&a]);
        assert!(files.open().is_err(), "missing");
        files.put(&crl(&b, &[], 3600));
        let e = files.open().unwrap_err();
        assert!(e.contains("not a trusted CA"), "{e}");
        files.put(&crl(&a, &[], -60));
        assert!(files.open().is_ok(), "expired: opens, refuses at the check");
    }

    #[test]
    fn entries_and_number_survive_a_round_trip() {
        let a = ca("CA a");
        let phone = leaf(&a, "Cphone");
        let text = crl(&a, &[&phone], 3600);
        let parsed = parse_pem_crls(&text).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(crl_number(&parsed[0]), 7);
        let entries = crl_entries(&parsed[0]);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].serial, serial(&phone));
        let now = chrono::Utc::now().timestamp();
        assert!(
            (now - 7..=now).contains(&entries[0].revoked_at),
            "{entries:?}"
        );
    }
}
