//! oneM2M key derivations (TS-0003 clause 10.3; group keys from seeds/001 clause 8.2.1, NOTE 5).
//!
//! Pure functions, no I/O. Every keyed step is HMAC-SHA-256 (IETF RFC 2104) computed with the RustCrypto
//! `hmac` 0.12 + `sha2` 0.10 crates; `||` is plain concatenation, with no length prefixes or separators.
//! Derived keys come back as [`Secret`], which is zeroed on drop and never printed.
//!
//! | function | key | formula | clause |
//! | --- | --- | --- | --- |
//! | [`km`] | Ke | `HMAC(Ke, KM_LABEL \|\| MAF-ID)` | TS-0003 §10.3.2 |
//! | [`kpsa`] | Ke | `HMAC(Ke, KPSA_LABEL \|\| Enrolee-B-ID)` | §10.3.3 |
//! | [`usage_constrained`] | Ke | `HMAC(Ke, USAGE_CONSTRAINED_LABEL \|\| SUID \|\| Enrolment-Target-ID)` | §10.3.7 |
//! | [`ksx`] | Kpsaxi | `HMAC(Kpsaxi, GROUP_LABEL \|\| Enrolee-Ax-ID \|\| Rand)` | seeds/001 §8.2.1 NOTE 5 |
//! | [`esprim_maf_pairwise`] | Kc | `HMAC(Kc, ESPRIM_MAF_LABEL)` | §8.4.2 A, C.6a.4 (label: project decision) |
//! | [`session_esprim_key`] | pairwiseESPrimKey | `HMAC(K, receiverRand \|\| originatorRand \|\| SESSION_ESPRIM_LABEL)` | §10.3.8.2 |
//! | [`e2e_master`], [`e2e_keys`] | Salt, Kpsa | `HMAC(Salt, Kpsa)`, then T(1)..T(4) | §10.3.6 |
//! | [`export_split`] | - | 48 exported bytes into a key and a 16-byte relative ID | §10.3.1, 10.3.4, 10.3.5 |
//!
//! Encoding decisions (the spec leaves some open; each is fixed in one place here):
//!
//! - Identifiers (MAF-ID, Enrolee-B-ID, Enrolment-Target-ID, Enrolee-Ax-ID) are Unicode NFKC-normalized and
//!   then UTF-8 encoded ([`normalize_id`]), as §10.3.2/10.3.3/10.3.7 and NOTE 5 require. Labels are the ASCII
//!   text of the spec without quotes or terminator.
//! - SUID (§10.3.7 gives no encoding): the ASCII decimal text of the number, no sign, no leading zeros, e.g.
//!   SUID 12 is the two octets `"12"` ([`suid_octets`]). Because SUIDs in use are two digits (10-45) the
//!   concatenation with the target ID stays unambiguous. This is a project decision, not the spec's.
//! - Rand of the group key (NOTE 5 gives no length): [`GROUP_RAND_LEN`] = 16 raw random bytes made by the
//!   IN-CSE ([`new_group_rand`]), hashed as raw bytes; on the wire they travel as hex. KsxId = KpsaxiId.
//! - The ESPrim rand objects of §10.3.8.2 are taken as their 16-byte `esrv` values (INFERRED: the spec says
//!   "receiverESPrimRandObject" without a byte encoding).
//! - Exporter split (§10.3.1): the 48 exported bytes are read as a big-endian number, so the "16 most
//!   significant bytes" (RelativeKeID / KcID) are the first 16 and the "32 least significant bytes" (Ke / Kc)
//!   are the last 32.
//! - `hexBinary(...)` of §10.3.4/10.3.5 is the canonical xs:hexBinary form: UPPERCASE hex digits
//!   ([`ke_id_string`], [`kc_id_string`]). [`parse_hex_key_id`] accepts either case when reading one back.
//! - MAF ESPrim Framework (§8.4.2 step A and C.6a.4): "pairwiseESPrimKey from Kc and a reserved string", a
//!   string TS-0003 never defines. This project's reserved string is [`ESPRIM_MAF_LABEL`], used like the
//!   labels of §10.3: pairwiseESPrimKey = HMAC-SHA-256(Kc, label), the whole 32-byte Kc as the key. A
//!   project decision: another implementation must be told the label to interoperate.
//! - E2E (§10.3.6): "HMAC-Hash" is HMAC-SHA-256 here; the Salt is not specified, so it is a parameter. The
//!   Source ESF End-Point-B-ID that §10.3.6.1 lists as an input appears in no formula and is not used. The
//!   expansion follows the clause literally: `T(i) = HMAC(Ke2e_master, T(i-1) || label_i || i)` with a
//!   different label per step (this is RFC 5869's HKDF-Expand shape, with the info changing each round).
//!
//! Caveat: `hmac` 0.12 does not wipe its internal (key-derived) state when it drops; the outputs and every
//! intermediate `T(i)` are wiped.

use crate::credentials::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroize;

/// §10.3.2 label (Ke to Km).
pub const KM_LABEL: &str = "oneM2M Enrolment Key to Master Credential derivation";
/// §10.3.3 label (Ke to Kpsa).
pub const KPSA_LABEL: &str = "oneM2M Enrolment Key to Provisioned Secure Connection Key derivation";
/// §10.3.7 label (Ke to a usage-constrained key).
pub const USAGE_CONSTRAINED_LABEL: &str =
    "oneM2M Enrolment Key to Usage-Constrained Symmetric Key derivation";
/// seeds/001 NOTE 5 label (Kpsaxi to Ksx).
pub const GROUP_LABEL: &str = "oneM2M Group Secure Connection Key derivation";
/// The "reserved string" of the MAF ESPrim Framework (§8.4.2 A, C.6a.4; Kc to pairwiseESPrimKey).
/// TS-0003 does not define it: a project decision (see the module doc).
pub const ESPRIM_MAF_LABEL: &str = "oneM2M ESPrim pairwise key derivation";
/// §10.3.8.2 label (pairwiseESPrimKey to sessionESPrimKey).
pub const SESSION_ESPRIM_LABEL: &str = "oneM2M HMAC-SHA256 sessionESPrimKey derivation algorithm";
/// §10.3.6.2 labels of T(1)..T(4), in order (counters 0x01..0x04).
pub const E2E_LABELS: [&str; 4] = [
    "E2E Message Authentication Key",
    "E2E Message Confidentiality Key",
    "E2E Attribute Authenticity Key",
    "E2E Attribute Confidentiality Key",
];
/// §10.3.1 exporter label for Ke / RelativeKeID (MEF bootstrap).
pub const BOOTSTRAP_EXPORTER_LABEL: &str = "EXPORTER-oneM2M-Bootstrap";
/// §10.3.1 exporter label for Kc / KcID (MAF).
pub const CONNECTION_EXPORTER_LABEL: &str = "EXPORTER-oneM2M-Connection";
/// §10.3.1 exporter label for pairwiseE2EKey / pairwiseE2EKeyID (ESCertKE).
pub const ESCERTKE_EXPORTER_LABEL: &str = "EXPORTER-oneM2M-ESCertKE";
/// §10.3.1: every oneM2M exporter asks for 48 bytes.
pub const EXPORT_LEN: usize = 48;
/// The relative ID part of an export (the 16 most significant bytes).
pub const RELATIVE_ID_LEN: usize = 16;
/// Length of the group key's Rand (project decision, see the module doc).
pub const GROUP_RAND_LEN: usize = 16;
/// Length of an ESPrim rand value (esrv, 128 bits).
pub const ESPRIM_RAND_LEN: usize = 16;

/// An identifier as the KDFs hash it: Unicode NFKC, then UTF-8 (RFC 3629).
pub fn normalize_id(id: &str) -> String {
    id.nfkc().collect()
}

/// NFKC without a copy for ASCII identifiers (NFKC leaves ASCII unchanged): the group key derives one key
/// per member, so this is on the hot path of a million-member group.
fn nfkc(id: &str) -> std::borrow::Cow<'_, str> {
    if id.is_ascii() {
        std::borrow::Cow::Borrowed(id)
    } else {
        std::borrow::Cow::Owned(normalize_id(id))
    }
}

/// The octets of a SUID in §10.3.7: its ASCII decimal text (project decision, see the module doc).
pub fn suid_octets(suid: u32) -> String {
    suid.to_string()
}

/// HMAC-SHA-256 of the concatenation of `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Secret {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    let mut out = mac.finalize().into_bytes();
    let s = Secret::from_slice(&out);
    out.as_mut_slice().zeroize();
    s
}

/// Km = HMAC-SHA-256(Ke, "oneM2M Enrolment Key to Master Credential derivation" || MAF-ID) (§10.3.2).
pub fn km(ke: &Secret, maf_id: &str) -> Secret {
    let id = normalize_id(maf_id);
    hmac_sha256(ke.expose(), &[KM_LABEL.as_bytes(), id.as_bytes()])
}

/// Kpsa = HMAC-SHA-256(Ke, "oneM2M Enrolment Key to Provisioned Secure Connection Key derivation" ||
/// Enrolee-B-ID) (§10.3.3). Enrolee-B-ID is Enrolee B's CSE-ID or AE-ID.
pub fn kpsa(ke: &Secret, enrolee_b_id: &str) -> Secret {
    let id = normalize_id(enrolee_b_id);
    hmac_sha256(ke.expose(), &[KPSA_LABEL.as_bytes(), id.as_bytes()])
}

/// The label of [`rotated_kpsa`].
pub const ROTATED_KPSA_LABEL: &str = "oneM2M Kpsa rotation";

/// A Kpsa rotated by the Security Administration (project derivation, docs/SECURITY.md):
/// HMAC-SHA-256(Krot, label || 0x00 || new KpsaID || 0x00 || the entity's AE-ID or CSE-ID),
/// identifiers NFKC-normalized. Krot is the rotation key the administrator and the CSE share;
/// someone holding only the old Kpsa learns nothing of the new one.
pub fn rotated_kpsa(krot: &Secret, kpsa_id: &str, entity: &str) -> Secret {
    hmac_sha256(krot.expose(), &[&rotated_kpsa_input(kpsa_id, entity)])
}

/// What [`rotated_kpsa`] MACs under Krot: label || 0x00 || KpsaID || 0x00 || entity (NFKC), for a
/// secure environment that computes the HMAC where Krot is (a token: `derive_key`).
pub fn rotated_kpsa_input(kpsa_id: &str, entity: &str) -> Vec<u8> {
    let (id, entity) = (normalize_id(kpsa_id), normalize_id(entity));
    [
        ROTATED_KPSA_LABEL.as_bytes(),
        &[0],
        id.as_bytes(),
        &[0],
        entity.as_bytes(),
    ]
    .concat()
}

/// HMAC-SHA-256(Ke, "oneM2M Enrolment Key to Usage-Constrained Symmetric Key derivation" || SUID ||
/// Enrolment-Target-ID) (§10.3.7).
///
/// The SUID is hashed as its decimal text (`12` is `"12"`): a project decision, as the spec gives no
/// encoding ([`suid_octets`]). The target ID is the FQDN form of the Absolute CSE-ID or AE-ID when the target
/// is a CSE or an AE; it is NFKC-normalized here.
pub fn usage_constrained(ke: &Secret, suid: u32, target_id: &str) -> Secret {
    let s = suid_octets(suid);
    let id = normalize_id(target_id);
    hmac_sha256(
        ke.expose(),
        &[
            USAGE_CONSTRAINED_LABEL.as_bytes(),
            s.as_bytes(),
            id.as_bytes(),
        ],
    )
}

/// Ksx = HMAC-SHA-256(Kpsaxi, "oneM2M Group Secure Connection Key derivation" || Enrolee-Ax-ID || Rand)
/// (seeds/001 clause 8.2.1, NOTE 5). Rand is hashed as raw bytes ([`GROUP_RAND_LEN`] from
/// [`new_group_rand`] in this project); the key's identifier KsxId is KpsaxiId.
pub fn ksx(kpsaxi: &Secret, enrolee_ax_id: &str, rand: &[u8]) -> Secret {
    let id = nfkc(enrolee_ax_id);
    hmac_sha256(
        kpsaxi.expose(),
        &[GROUP_LABEL.as_bytes(), id.as_bytes(), rand],
    )
}

/// A fresh group-key Rand: [`GROUP_RAND_LEN`] bytes from the operating system's generator.
pub fn new_group_rand() -> [u8; GROUP_RAND_LEN] {
    use rand::RngCore;
    let mut r = [0u8; GROUP_RAND_LEN];
    rand::rngs::OsRng.fill_bytes(&mut r);
    r
}

/// pairwiseESPrimKey = HMAC-SHA-256(Kc, "oneM2M ESPrim pairwise key derivation") for a Kc the MAF
/// distributed with SUID 33 (§8.4.2 A and C.6a.4; the label is this project's, see the module doc). The
/// pairwiseESPrimKeyID is the Key Identifier `hexBinary(KcID)@MAF-FQDN` itself.
pub fn esprim_maf_pairwise(kc: &Secret) -> Secret {
    hmac_sha256(kc.expose(), &[ESPRIM_MAF_LABEL.as_bytes()])
}

/// sessionESPrimKey = HMAC-SHA256(pairwiseESPrimKey, receiverESPrimRandObject || originatorESPrimRandObject
/// || "oneM2M HMAC-SHA256 sessionESPrimKey derivation algorithm") (§10.3.8.2, esprimKeyGenAlgID 1), with
/// each rand object taken as its 16-byte esrv value.
pub fn session_esprim_key(
    pairwise: &Secret,
    receiver_rand: &[u8; ESPRIM_RAND_LEN],
    originator_rand: &[u8; ESPRIM_RAND_LEN],
) -> Secret {
    hmac_sha256(
        pairwise.expose(),
        &[
            receiver_rand,
            originator_rand,
            SESSION_ESPRIM_LABEL.as_bytes(),
        ],
    )
}

/// Ke2e_master = HMAC-SHA-256(Salt, Kpsa) (§10.3.6.1; the extract step of RFC 5869). The Salt is not
/// specified by TS-0003, so the caller supplies it. For Source-generated credentials pass the Source's random
/// value instead of Kpsa (§10.3.6.1 NOTE).
pub fn e2e_master(salt: &[u8], kpsa: &Secret) -> Secret {
    hmac_sha256(salt, &[kpsa.expose()])
}

/// The four end-to-end keys of table 10.3.6.2-1.
#[derive(Debug, PartialEq, Eq)]
pub struct E2eKeys {
    /// Ke2e_msg_auth = T(1).
    pub msg_auth: Secret,
    /// Ke2e_msg_conf = T(2).
    pub msg_conf: Secret,
    /// Ke2e_att_auth = T(3).
    pub att_auth: Secret,
    /// Ke2e_att_conf = T(4).
    pub att_conf: Secret,
}

/// The expansion of §10.3.6.2: T(0) empty, `T(i) = HMAC-SHA-256(Ke2e_master, T(i-1) || E2E_LABELS[i-1] ||
/// i)` for i = 1..4 (one counter octet).
pub fn e2e_keys(master: &Secret) -> E2eKeys {
    let mut prev = Secret::new(Vec::new());
    let mut t: Vec<Secret> = Vec::with_capacity(4);
    for (i, label) in E2E_LABELS.iter().enumerate() {
        let counter = [u8::try_from(i + 1).expect("four labels")];
        let next = hmac_sha256(
            master.expose(),
            &[prev.expose(), label.as_bytes(), &counter],
        );
        t.push(next.clone());
        prev = next;
    }
    let mut t = t.into_iter();
    let mut next = || t.next().expect("four keys");
    E2eKeys {
        msg_auth: next(),
        msg_conf: next(),
        att_auth: next(),
        att_conf: next(),
    }
}

/// Splits 48 bytes of TLS exporter output (§10.3.1): the key (Ke, Kc or pairwiseE2EKey) is the 32 least
/// significant bytes, i.e. the last 32; the relative ID (RelativeKeID, KcID or pairwiseE2EKeyID) is the 16
/// most significant bytes, i.e. the first 16. The labels are [`BOOTSTRAP_EXPORTER_LABEL`],
/// [`CONNECTION_EXPORTER_LABEL`] and [`ESCERTKE_EXPORTER_LABEL`], always with no context.
pub fn export_split(exported: &[u8; EXPORT_LEN]) -> (Secret, [u8; RELATIVE_ID_LEN]) {
    let key = Secret::from_slice(&exported[RELATIVE_ID_LEN..]);
    let mut rel = [0u8; RELATIVE_ID_LEN];
    rel.copy_from_slice(&exported[..RELATIVE_ID_LEN]);
    (key, rel)
}

/// hexBinary: the canonical (uppercase) xs:hexBinary text of bytes.
pub fn hex_binary(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

/// KeID = hexBinary(RelativeKeID)@MEF-FQDN (§10.3.4), uppercase hex.
pub fn ke_id_string(relative: &[u8; RELATIVE_ID_LEN], mef_fqdn: &str) -> String {
    format!("{}@{mef_fqdn}", hex_binary(relative))
}

/// Key Identifier = hexBinary(KcID)@MAF-FQDN (§10.3.5), uppercase hex.
pub fn kc_id_string(relative: &[u8; RELATIVE_ID_LEN], maf_fqdn: &str) -> String {
    format!("{}@{maf_fqdn}", hex_binary(relative))
}

/// Reads a KeID or MAF Key Identifier back: 32 hex digits (either case) `@` FQDN.
pub fn parse_hex_key_id(s: &str) -> Result<([u8; RELATIVE_ID_LEN], String), String> {
    let Some((rel, fqdn)) = s.split_once('@') else {
        return Err(format!(
            "key ID {s:?} has no '@': expected HEX@FQDN (TS-0003 10.3.4/10.3.5)"
        ));
    };
    let mut out = [0u8; RELATIVE_ID_LEN];
    hex::decode_to_slice(rel, &mut out).map_err(|_| {
        format!("key ID {s:?}: the part before '@' is not {RELATIVE_ID_LEN} bytes of hex")
    })?;
    if fqdn.is_empty() {
        return Err(format!("key ID {s:?}: the FQDN after '@' is empty"));
    }
    Ok((out, fqdn.to_string()))
}

#[cfg(test)]
mod tests {
    //! Expected values were computed independently with Python 3 (`hmac`, `hashlib.sha256`,
    //! `unicodedata.normalize('NFKC', ...)`); crates/m2m/tests/kdf_crosscheck.rs repeats that at test time.
    use super::*;

    fn hx(s: &str) -> Secret {
        Secret::from_hex(s).unwrap()
    }

    fn ke() -> Secret {
        Secret::new((0u8..32).collect())
    }

    #[test]
    fn hmac_primitive_is_rfc4231() {
        // RFC 4231 test case 2.
        let k = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            *k.to_hex(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn km_vectors() {
        assert_eq!(
            km(&ke(), "maf.example.com"),
            hx("3055bf32dd9c95586aaffa2ae2e165dfeffd0803566e16bdd343171457da8a5e")
        );
        let abc = hx("61c09a442919553e19c8f07c3b92ec12ff981df94cff4534141833a53b0a5a3c");
        assert_eq!(km(&ke(), "ABC"), abc);
        assert_eq!(km(&ke(), "ＡＢＣ"), abc, "full-width letters fold to ASCII");
        assert_ne!(km(&ke(), "abc"), abc);
        assert_eq!(km(&ke(), "x").len(), 32);
    }

    #[test]
    fn kpsa_vectors() {
        assert_eq!(
            kpsa(&ke(), "CAE123456789012"),
            hx("c1996abeee57b6ce9e39eab0a8916f0de0f6da8a4fec352aa5c771ec9b5c0379")
        );
        let fi = hx("647ef2af42cadb400db93276a8dd6769abe0739cbc27d994113bde038ac7740b");
        assert_eq!(kpsa(&ke(), "Cafile"), fi);
        assert_eq!(
            kpsa(&ke(), "Ca\u{fb01}le"),
            fi,
            "the ligature fi is two letters"
        );
        assert_ne!(km(&ke(), "Cafile"), fi, "labels separate the derivations");
    }

    #[test]
    fn usage_constrained_vectors() {
        assert_eq!(suid_octets(12), "12");
        assert_eq!(
            usage_constrained(&ke(), 12, "cae01.mn-cse.in.provider.com"),
            hx("380195fd5a0eb0612452ddc340318a3dec74a42c6c0c808ddb524d6ed4e83078")
        );
        let e = hx("571dfc9b1bee6a5fd4c305c22af318a7197bd9579233866ccae63147ab4800a2");
        assert_eq!(usage_constrained(&ke(), 13, "caf\u{e9}.example.com"), e);
        assert_eq!(
            usage_constrained(&ke(), 13, "cafe\u{301}.example.com"),
            e,
            "composed and decomposed accents give one key"
        );
        assert_ne!(usage_constrained(&ke(), 12, "caf\u{e9}.example.com"), e);
    }

    #[test]
    fn ksx_vectors() {
        let rand: Vec<u8> = (0xa0..0xb0).collect();
        assert_eq!(
            ksx(&hx("1a2b3c4d5e6f7a8b"), "AE123456789012-Lock", &rand),
            hx("b97c1d7841db2c84ff6c4f989c2ef5e5c6b4719bdd810393cdb4c528d346ab52")
        );
        assert_eq!(
            ksx(&hx("1a2b3c4d5e6f7a8b"), "ＡE123456789012-Lock", &rand),
            ksx(&hx("1a2b3c4d5e6f7a8b"), "AE123456789012-Lock", &rand)
        );
        let (a, b) = (new_group_rand(), new_group_rand());
        assert_ne!(a, b);
        assert_eq!(a.len(), GROUP_RAND_LEN);
    }

    #[test]
    fn session_esprim_vectors() {
        let p = Secret::new((0x20..0x40).collect());
        let r: [u8; 16] = core::array::from_fn(|i| i as u8);
        let o: [u8; 16] = core::array::from_fn(|i| 0xf0 + i as u8);
        assert_eq!(
            session_esprim_key(&p, &r, &o),
            hx("c8f01e899ed99689a37098a5e3a41d9fa7486a5177b11d0f5656a100093738ed")
        );
        assert_ne!(
            session_esprim_key(&p, &o, &r),
            session_esprim_key(&p, &r, &o),
            "the order of the rands matters"
        );
    }

    #[test]
    fn esprim_maf_vector() {
        assert_eq!(
            esprim_maf_pairwise(&ke()),
            hx("17b2fbcd4c16c1951b3fc064e672b67c40477c21a92c7f3b211ef6ab0090b909")
        );
        assert_ne!(esprim_maf_pairwise(&ke()), ke());
    }

    #[test]
    fn e2e_vectors() {
        // RFC 5869 test case 1 inputs: the extract step gives that test's PRK.
        let salt: Vec<u8> = (0..13).collect();
        let m = e2e_master(&salt, &Secret::new(vec![0x0b; 22]));
        assert_eq!(
            m,
            hx("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let k = e2e_keys(&m);
        assert_eq!(
            k.msg_auth,
            hx("5dec990f89ba77b75ba2835fed14d2c64def30a0a3d0e42c8a2a5a5dd94effff")
        );
        assert_eq!(
            k.msg_conf,
            hx("dad970217769bba40e5516393e7d6e7e86aafa5eb8e42952d245fa9aeb0bccd8")
        );
        assert_eq!(
            k.att_auth,
            hx("248258cd1a9318879d07e9eb9539b959b21b890450969e380ed6b649515b2c9e")
        );
        assert_eq!(
            k.att_conf,
            hx("665fe20b6fa51a06f23a198a69b6735951ea812a3719ae104dae6fee69ddcf20")
        );
        let dbg = format!("{k:?}");
        for key in [&k.msg_auth, &k.msg_conf, &k.att_auth, &k.att_conf] {
            assert!(!crate::credentials::reveals(&dbg, key.expose()), "{dbg}");
        }
    }

    #[test]
    fn export_split_and_ids() {
        let x: [u8; 48] = core::array::from_fn(|i| i as u8);
        let (key, rel) = export_split(&x);
        assert_eq!(rel, core::array::from_fn(|i| i as u8));
        assert_eq!(key.expose(), &x[16..]);
        assert_eq!(key.len(), 32);
        assert_eq!(
            ke_id_string(&rel, "mef.example.com"),
            "000102030405060708090A0B0C0D0E0F@mef.example.com"
        );
        let rel2 = [0xab; 16];
        let id = kc_id_string(&rel2, "maf.example.com");
        assert_eq!(id, format!("{}@maf.example.com", "AB".repeat(16)));
        assert_eq!(
            parse_hex_key_id(&id).unwrap(),
            (rel2, "maf.example.com".into())
        );
        assert_eq!(
            parse_hex_key_id(&id.to_lowercase()).unwrap().0,
            rel2,
            "lowercase hex is read too"
        );
        assert!(parse_hex_key_id("abcd@maf.example.com").is_err());
        assert!(parse_hex_key_id(&"AB".repeat(16)).is_err());
        assert!(parse_hex_key_id(&format!("{}@", "AB".repeat(16))).is_err());
        // The ID part fits the KpsaID grammar (§10.5), so a KcID works as a TLS psk_identity.
        assert!(crate::credentials::KpsaId::parse(&id).is_ok());
    }

    #[test]
    fn nfkc_examples() {
        assert_eq!(normalize_id("ＡＢＣ"), "ABC");
        assert_eq!(normalize_id("\u{fb01}"), "fi");
        assert_eq!(normalize_id("e\u{301}"), "\u{e9}");
        assert_eq!(normalize_id("CAE01"), "CAE01");
    }
}
