//! The GBA key derivations (3GPP TS 33.220): Ks = CK || IK (clause 4.5.2), the B-TID that names it,
//! and the NAF-specific key Ks_NAF of GBA_ME (Annex B): the generic key derivation function of
//! Annex B.2 with FC = 0x01 and P0 = "gba-me", P1 = RAND, P2 = IMPI, P3 = NAF_Id.
//!
//! Character strings enter the derivation as Annex B.2.1.2 says: normalised to NFKC, then encoded
//! in UTF-8 (the same [`crate::kdf::normalize_id`] as oneM2M's derivations).

use crate::kdf::normalize_id;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

/// The bootstrapped key Ks = CK || IK.
pub struct Ks(Zeroizing<[u8; 32]>);

impl Ks {
    pub fn new(ck: &[u8; 16], ik: &[u8; 16]) -> Ks {
        let mut k = Zeroizing::new([0u8; 32]);
        k[..16].copy_from_slice(ck);
        k[16..].copy_from_slice(ik);
        Ks(k)
    }

    /// A Ks read back from where it was kept (the BSF's store, a UE's cache).
    pub fn from_bytes(ks: &[u8; 32]) -> Ks {
        Ks(Zeroizing::new(*ks))
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Ks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ks(redacted)")
    }
}

/// The Ua security protocol identifier of a NAF_Id (TS 33.220 Annex H.3) for TLS up to 1.2 with
/// a shared key (TS 33.222): the organisation octet 0x01 (3GPP), 0x00, 0x01 and the TLS cipher
/// suite negotiated, as two octets.
pub fn ua_tls_psk(cipher_suite: u16) -> [u8; 5] {
    let [hi, lo] = cipher_suite.to_be_bytes();
    [0x01, 0x00, 0x01, hi, lo]
}

/// The same for TLS 1.3 with a shared key (TS 33.222 clause 5.4.0.2): one identifier for every
/// suite.
pub fn ua_tls13_psk() -> [u8; 5] {
    [0x01, 0x00, 0x00, 0x00, 0x07]
}

/// NAF_Id = the NAF's FQDN || its Ua security protocol identifier (clause 4.5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NafId {
    pub fqdn: String,
    pub ua_protocol: [u8; 5],
}

impl NafId {
    /// The octets of P3: the FQDN as a character string, then the five protocol octets.
    pub fn octets(&self) -> Vec<u8> {
        let mut out = normalize_id(&self.fqdn).into_bytes();
        out.extend_from_slice(&self.ua_protocol);
        out
    }
}

/// The generic key derivation function of Annex B.2: HMAC-SHA-256(key, S), S = FC || P0 || L0 ||
/// P1 || L1 || ..., each Li the length of Pi in two octets, most significant first; `None` when
/// a parameter is longer than two octets can say.
pub fn kdf(key: &[u8], fc: u8, params: &[&[u8]]) -> Option<Zeroizing<[u8; 32]>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&[fc]);
    for p in params {
        mac.update(p);
        let len = u16::try_from(p.len()).ok()?;
        mac.update(&len.to_be_bytes());
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    Some(out)
}

/// Ks_NAF of GBA_ME (Annex B.3): KDF(Ks, 0x01, "gba-me", RAND, IMPI, NAF_Id); `None` for an
/// IMPI or NAF FQDN longer than 65535 octets.
pub fn ks_naf(ks: &Ks, rand: &[u8; 16], impi: &str, naf: &NafId) -> Option<Zeroizing<[u8; 32]>> {
    let impi = normalize_id(impi);
    let naf = naf.octets();
    kdf(ks.expose(), 0x01, &[b"gba-me", rand, impi.as_bytes(), &naf])
}

/// The Bootstrapping Transaction Identifier (clause 4.5.2): base64(RAND) "@" the BSF's domain
/// name, in the NAI form of RFC 4282.
pub fn b_tid(rand: &[u8; 16], bsf_domain: &str) -> String {
    format!(
        "{}@{}",
        base64::engine::general_purpose::STANDARD.encode(rand),
        bsf_domain
    )
}

/// Whether `psk_identity` is a B-TID of the BSF `bsf_domain`: base64 of a 16-octet RAND, "@",
/// the domain (in any letter case). Identities of other kinds under the BSF's domain are not
/// told apart by form: a NAF keeps that domain for B-TIDs (the CSE checks it at start).
pub fn is_b_tid_of(psk_identity: &str, bsf_domain: &str) -> bool {
    let Some((rand, domain)) = psk_identity.rsplit_once('@') else {
        return false;
    };
    domain.eq_ignore_ascii_case(bsf_domain)
        && rand.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(rand)
            .is_ok_and(|r| r.len() == 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gba::milenage::Milenage;

    /// Runs `script` with `stdin` in python3; `None` (loudly) when there is none, outside CI.
    fn python(script: &str, stdin: &str) -> Option<String> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "python3 is missing, and CI=true"
            );
            eprintln!("\n!!!!!!!!!! SKIPPED: python3 is not installed; the GBA cross-check needs it !!!!!!!!!!\n");
            return None;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "python3 failed");
        Some(String::from_utf8(out.stdout).unwrap())
    }

    /// Ks_NAF computed here and by Python's hmac/hashlib/unicodedata (not this code), for
    /// identities NFKC changes (a full-width letter, a ligature, a composed accent).
    #[test]
    fn ks_naf_matches_an_independent_computation() {
        let m = Milenage::new(
            hex::decode("465b5ce8b199b49faa5f0a2ee238a6bc")
                .unwrap()
                .try_into()
                .unwrap(),
            hex::decode("cd63cb71954a9f4e48a5994e37a02baf")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        let rand: [u8; 16] = hex::decode("23553cbe9637a89d218ae64dae47bf35")
            .unwrap()
            .try_into()
            .unwrap();
        let o = m.f2345(&rand);
        let ks = Ks::new(&o.ck, &o.ik);
        let cases = [
            (
                "001010000000001@ims.mnc001.mcc001.3gppnetwork.org",
                "cse.m2m.example.com",
                0x00AE_u16,
            ),
            ("ｌock１@ims.example.org", "ﬁle.m2m.example.com", 0xC0A8),
            (
                "cafe\u{301}@ims.example.org",
                "mef.keys.example.net",
                0x00AE,
            ),
        ];
        let script = r#"
import hashlib, hmac, json, sys, unicodedata
out = []
for c in json.loads(sys.stdin.read()):
    ks = bytes.fromhex(c["ks"])
    def s(x): return unicodedata.normalize("NFKC", x).encode("utf-8")
    naf = s(c["fqdn"]) + bytes([1, 0, 1, c["cs"] >> 8, c["cs"] & 0xff])
    params = [b"gba-me", bytes.fromhex(c["rand"]), s(c["impi"]), naf]
    msg = b"\x01" + b"".join(p + len(p).to_bytes(2, "big") for p in params)
    out.append(hmac.new(ks, msg, hashlib.sha256).hexdigest())
print(json.dumps(out))
"#;
        let input: Vec<serde_json::Value> = cases
            .iter()
            .map(|(impi, fqdn, cs)| {
                serde_json::json!({"ks": hex::encode(ks.expose()), "rand": hex::encode(rand),
                                   "impi": impi, "fqdn": fqdn, "cs": cs})
            })
            .collect();
        let Some(python) = python(script, &serde_json::Value::Array(input).to_string()) else {
            return;
        };
        let theirs: Vec<String> = serde_json::from_str(&python).unwrap();
        for ((impi, fqdn, cs), want) in cases.iter().zip(theirs) {
            let naf = NafId {
                fqdn: fqdn.to_string(),
                ua_protocol: ua_tls_psk(*cs),
            };
            assert_eq!(
                hex::encode(*ks_naf(&ks, &rand, impi, &naf).unwrap()),
                want,
                "{impi} {fqdn}"
            );
        }
        // NFKC matters: the full-width IMPI derives what its normal form derives.
        let naf = NafId {
            fqdn: "cse.m2m.example.com".into(),
            ua_protocol: ua_tls_psk(0x00AE),
        };
        let k = |impi: &str| *ks_naf(&ks, &rand, impi, &naf).unwrap();
        assert_eq!(k("ｌock１@ims.example.org"), k("lock1@ims.example.org"));
        assert_ne!(k("lock1@ims.example.org"), k("lock2@ims.example.org"));
        assert!(ks_naf(&ks, &rand, &"a".repeat(70_000), &naf).is_none());
        let tls13 = NafId {
            fqdn: "cse.m2m.example.com".into(),
            ua_protocol: ua_tls13_psk(),
        };
        assert_ne!(
            *ks_naf(&ks, &rand, "lock1@ims.example.org", &tls13).unwrap(),
            k("lock1@ims.example.org")
        );
    }

    #[test]
    fn the_b_tid_names_the_rand_at_the_bsf() {
        let rand: [u8; 16] = hex::decode("23553cbe9637a89d218ae64dae47bf35")
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(
            b_tid(&rand, "bsf.example.net"),
            "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.net"
        );
        assert_eq!(format!("{:?}", Ks::new(&[7; 16], &[9; 16])), "Ks(redacted)");
    }
}
