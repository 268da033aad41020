//! Credential identifiers and key material (TS-0003 clauses 10.4, 10.5).
//!
//! - [`KpsaId`]: the identifier of a provisioned symmetric key, `Issuer_Relative_KpsaID@Issuer-FQDN` (§10.5).
//!   It is the `psk_identity` of a TLS-PSK handshake (§8.2.2.1).
//! - [`CredentialId`]: `<typeID>-<value>` (§10.4, typeIDs of §12.3.2.1), the form a CSE maps to an AE-ID or
//!   CSE-ID when no entity was configured for a credential (§8.2.1).
//! - [`Secret`]: key material. Zeroed when dropped, compared in constant time, never printed: its `Debug`
//!   shows only the length (DESIGN principle 2).
//! - [`PskEntry`]: one row of a PSK table: entity, KpsaID, Kpsa.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// A KpsaID (TS-0003 §10.5): `Issuer_Relative_KpsaID@Issuer-FQDN`.
///
/// The relative part uses ASCII letters, digits, `.`, `_` and `-`; the issuer keeps it unique. The FQDN is a
/// DNS host name. Two KpsaIDs are equal when their relative parts are equal and their FQDNs are equal
/// ignoring ASCII case (DNS names are case-insensitive); `Display` gives the text as it was parsed.
#[derive(Clone)]
pub struct KpsaId {
    relative: String,
    fqdn: String,
}

impl KpsaId {
    /// The one spelling of this KpsaID among all that are equal to it (the FQDN in lower
    /// case): the key of tables that hold KpsaIDs as text.
    pub fn canonical(&self) -> String {
        format!("{}@{}", self.relative, self.fqdn.to_ascii_lowercase())
    }

    /// Parses `Issuer_Relative_KpsaID@Issuer-FQDN`.
    pub fn parse(s: &str) -> Result<KpsaId, String> {
        let Some((relative, fqdn)) = s.split_once('@') else {
            return Err(format!(
                "KpsaID {s:?} has no '@': expected Issuer_Relative_KpsaID@Issuer-FQDN (TS-0003 10.5)"
            ));
        };
        if relative.is_empty() {
            return Err(format!(
                "KpsaID {s:?}: the issuer-relative part before '@' is empty"
            ));
        }
        if let Some(c) = relative
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "KpsaID {s:?}: the issuer-relative part may hold only letters, digits, '.', '_' and '-', \
                 not {c:?}"
            ));
        }
        crate::certificates::check_fqdn(fqdn)
            .map_err(|e| format!("KpsaID {s:?}: the issuer FQDN {e}"))?;
        Ok(KpsaId {
            relative: relative.to_string(),
            fqdn: fqdn.to_string(),
        })
    }

    /// The issuer-relative part (before `@`).
    pub fn relative(&self) -> &str {
        &self.relative
    }

    /// The issuer's FQDN (after `@`).
    pub fn issuer_fqdn(&self) -> &str {
        &self.fqdn
    }
}

impl fmt::Display for KpsaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.relative, self.fqdn)
    }
}

impl fmt::Debug for KpsaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KpsaId({:?})", self.to_string())
    }
}

impl PartialEq for KpsaId {
    fn eq(&self, other: &Self) -> bool {
        self.relative == other.relative && self.fqdn.eq_ignore_ascii_case(&other.fqdn)
    }
}

impl Eq for KpsaId {}

impl std::hash::Hash for KpsaId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.relative.hash(state);
        self.fqdn.to_ascii_lowercase().hash(state);
    }
}

impl std::str::FromStr for KpsaId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KpsaId::parse(s)
    }
}

impl<'de> Deserialize<'de> for KpsaId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KpsaId::parse(&s).map_err(de::Error::custom)
    }
}

impl serde::Serialize for KpsaId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A Credential-ID (TS-0003 §10.4): `<typeID>-<value>`, typeID from sec:credIDTypeID (§12.3.2.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CredentialId {
    type_id: u8,
    value: String,
}

impl CredentialId {
    /// typeID 10: KpmID (MEF).
    pub const TYPE_KPM_ID: u8 = 10;
    /// typeID 11: KmID (MAF).
    pub const TYPE_KM_ID: u8 = 11;
    /// typeID 12: KpsaID or KcID (SAEF).
    pub const TYPE_KPSA_ID: u8 = 12;
    /// typeID 13: pairwiseESPrimKeyID.
    pub const TYPE_PAIRWISE_ESPRIM_KEY_ID: u8 = 13;
    /// typeID 99, this project's (sec:credIDTypeID has none): the group key of a multicast
    /// fan-out, named in the audit lines of the requests it carried.
    pub const TYPE_MULTICAST_GROUP_KEY_ID: u8 = 99;
    /// typeID 97, this project's: a GBA subscriber by its IMPI. The KpsaID of a GBA key is the
    /// B-TID (TS-0003 clause 8.3.2.3), which changes at every bootstrapping and holds characters
    /// a Credential-ID value may not ('+', '/', '='); the subscriber's USIM is the lasting
    /// credential, so registration rules name it.
    pub const TYPE_GBA_IMPI: u8 = 97;
    /// typeID 98, this project's: the entity an MQTT server let publish on its request topic
    /// (TS-0010 clause 7.2), named by its AE-ID-Stem or CSE-ID, in the audit lines of its requests.
    pub const TYPE_MQTT_TOPIC: u8 = 98;

    /// A Credential-ID from its parts; the value may use letters, digits, `.`, `_`, `-` and `@`.
    pub fn new(type_id: u8, value: &str) -> Result<CredentialId, String> {
        if type_id > 99 {
            return Err(format!(
                "Credential-ID typeID {type_id} has more than two digits"
            ));
        }
        if value.is_empty() {
            return Err("Credential-ID value is empty".into());
        }
        if let Some(c) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
        {
            return Err(format!(
                "Credential-ID value {value:?} may hold only letters, digits, '.', '_', '-' and '@', not {c:?}"
            ));
        }
        Ok(CredentialId {
            type_id,
            value: value.to_string(),
        })
    }

    /// Parses `<typeID>-<value>` (a typeID of two digits).
    pub fn parse(s: &str) -> Result<CredentialId, String> {
        let Some((t, v)) = s.split_once('-') else {
            return Err(format!(
                "Credential-ID {s:?} has no '-': expected <typeID>-<value> (TS-0003 10.4)"
            ));
        };
        if t.len() != 2 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "Credential-ID {s:?}: the typeID {t:?} is not two digits"
            ));
        }
        let type_id = t.parse::<u8>().map_err(|e| e.to_string())?;
        CredentialId::new(type_id, v)
    }

    /// The Credential-ID of a KpsaID: `12-<KpsaID>`.
    pub fn for_kpsa(kpsa_id: &KpsaId) -> CredentialId {
        CredentialId {
            type_id: Self::TYPE_KPSA_ID,
            value: kpsa_id.to_string(),
        }
    }

    /// The typeID.
    pub fn type_id(&self) -> u8 {
        self.type_id
    }

    /// The value after `<typeID>-`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}-{}", self.type_id, self.value)
    }
}

/// Key material: zeroed on drop, compared in constant time, and never printed (its `Debug` shows only the
/// length). It deliberately implements neither `Display` nor `Serialize`; it deserializes from a hex string
/// so a configuration can carry it.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps bytes (they are zeroed when the `Secret` drops).
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    /// Copies bytes into a new `Secret`.
    pub fn from_slice(bytes: &[u8]) -> Secret {
        Secret(Zeroizing::new(bytes.to_vec()))
    }

    /// Decodes hex (surrounding white space ignored). The error never repeats the input.
    pub fn from_hex(hex_str: &str) -> Result<Secret, String> {
        let t = hex_str.trim();
        if t.is_empty() {
            return Err("the key is empty".into());
        }
        if !t.len().is_multiple_of(2) {
            return Err(format!(
                "the key is not hex: {} digits, an even number is needed",
                t.len()
            ));
        }
        let mut out = Zeroizing::new(vec![0u8; t.len() / 2]);
        hex::decode_to_slice(t, &mut out[..])
            .map_err(|_| "the key is not hex: only 0-9, a-f and A-F are allowed".to_string())?;
        Ok(Secret(out))
    }

    /// The key bytes. Keep the borrow short and never log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The hex form, itself zeroed on drop (for writing into the secure environment's own storage).
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.0[..]))
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether `text` shows the start of `secret` in one of the usual renderings: hex (either case), a
/// decimal byte list as `Debug` prints `[u8]`, or base64 (standard or URL-safe). The first bytes
/// suffice, so a truncated leak is caught too. For the tests that check logs, error texts and
/// `Debug` output never carry key material.
pub fn reveals(text: &str, secret: &[u8]) -> bool {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    use base64::Engine;
    if secret.is_empty() {
        return false;
    }
    let hex_head = hex::encode(&secret[..secret.len().min(8)]);
    let decimal_head = secret[..secret.len().min(6)]
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    // Whole 3-byte groups encode the same wherever the encoding of the full secret is cut.
    let groups = secret.len().min(12) / 3 * 3;
    let b64_head = if groups == 0 {
        secret
    } else {
        &secret[..groups]
    };
    text.to_ascii_lowercase().contains(&hex_head)
        || text.contains(&decimal_head)
        || text.contains(&STANDARD_NO_PAD.encode(b64_head))
        || text.contains(&URL_SAFE_NO_PAD.encode(b64_head))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl PartialEq for Secret {
    /// Constant time in the content (the lengths are not secret).
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0[..].ct_eq(&other.0[..]))
    }
}

impl Eq for Secret {}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HexVisitor;
        impl Visitor<'_> for HexVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key as a hex string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Secret::from_hex(v).map_err(E::custom)
            }
            fn visit_string<E: de::Error>(self, mut v: String) -> Result<Secret, E> {
                let r = Secret::from_hex(&v).map_err(E::custom);
                v.zeroize();
                r
            }
        }
        d.deserialize_str(HexVisitor)
    }
}

/// One row of a PSK table (seeds/000 Table 7.1.2-2): which entity holds the key, its KpsaID, the Kpsa.
///
/// Deserializes from `{ entity_id = "...", kpsa_id = "...", key = "<hex>" }`; `Debug` shows no key bytes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PskEntry {
    /// The AE-ID or CSE-ID bound to this credential, when configured; otherwise the CSE maps the
    /// Credential-ID `12-<KpsaID>` (TS-0003 §8.2.2.1).
    #[serde(default)]
    pub entity_id: Option<String>,
    /// The KpsaID: the TLS `psk_identity`.
    pub kpsa_id: KpsaId,
    /// The Kpsa: the TLS `psk`.
    pub key: Secret,
}

impl PskEntry {
    /// The Credential-ID of this entry (`12-<KpsaID>`).
    pub fn credential_id(&self) -> CredentialId {
        CredentialId::for_kpsa(&self.kpsa_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reveals_finds_every_usual_rendering() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        use base64::Engine;
        let key: Vec<u8> = (0xf0..=0xff).collect();
        let shown = [
            hex::encode(&key),
            hex::encode_upper(&key[..8]),
            format!("{:?}", &key[..]),
            format!("{:?}", &key[..6]),
            STANDARD.encode(&key),
            URL_SAFE_NO_PAD.encode(&key),
            format!("key={}", &URL_SAFE_NO_PAD.encode(&key)[..16]),
        ];
        for text in &shown {
            assert!(reveals(text, &key), "{text}");
        }
        let secret = Secret::from_slice(&key);
        for text in [
            format!("{secret:?}"),
            "Secret(16 bytes)".into(),
            String::new(),
        ] {
            assert!(!reveals(&text, &key), "{text}");
        }
        assert!(!reveals("anything", &[]));
    }

    #[test]
    fn door_lock_kpsa_ids_parse() {
        for s in [
            "AE123456789012-Lock@in.provider.com",
            "AE123456789015-Lock@in.provider.com",
        ] {
            let k = KpsaId::parse(s).unwrap();
            assert_eq!(k.to_string(), s);
            assert_eq!(k.issuer_fqdn(), "in.provider.com");
        }
        let k = KpsaId::parse("AE123456789012-Lock@in.provider.com").unwrap();
        assert_eq!(k.relative(), "AE123456789012-Lock");
        assert_eq!(
            k,
            KpsaId::parse("AE123456789012-Lock@IN.Provider.com").unwrap()
        );
        assert_ne!(
            k,
            KpsaId::parse("ae123456789012-lock@in.provider.com").unwrap()
        );
        assert_ne!(
            k,
            KpsaId::parse("AE123456789015-Lock@in.provider.com").unwrap()
        );
        assert!(KpsaId::parse("a.b_c-d@x.example").is_ok());
    }

    #[test]
    fn bad_kpsa_ids_are_refused_with_reasons() {
        let cases = [
            ("no-at-sign", "no '@'"),
            ("@in.provider.com", "empty"),
            ("a b@in.provider.com", "' '"),
            ("a@b@in.provider.com", "'@'"),
            ("a@", "is empty"),
            ("a@in..com", "empty label"),
            ("a@in.provider.com.", "empty label"),
            ("a@-in.provider.com", "starts or ends with '-'"),
            ("a@in_x.com", "'_'"),
            ("Lock/1@in.provider.com", "'/'"),
            ("a@localhost", "one label only"),
            ("a@*.provider.com", "wildcard"),
        ];
        for (s, why) in cases {
            let e = KpsaId::parse(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
        let long = format!("a@{}.com", "x".repeat(64));
        assert!(KpsaId::parse(&long).unwrap_err().contains("63"));
        let long = format!("a@{}", ["abc"; 70].join("."));
        assert!(KpsaId::parse(&long).unwrap_err().contains("253"));
    }

    #[test]
    fn credential_ids() {
        let k = KpsaId::parse("AE123456789012-Lock@in.provider.com").unwrap();
        let c = CredentialId::for_kpsa(&k);
        assert_eq!(c.to_string(), "12-AE123456789012-Lock@in.provider.com");
        assert_eq!(CredentialId::parse(&c.to_string()).unwrap(), c);
        let c = CredentialId::parse("10-thiskey@mymef.com").unwrap();
        assert_eq!((c.type_id(), c.value()), (10, "thiskey@mymef.com"));
        assert_eq!(
            CredentialId::parse("00-test@onem2m.com")
                .unwrap()
                .to_string(),
            "00-test@onem2m.com"
        );
        assert!(CredentialId::parse("1-x").is_err());
        assert!(CredentialId::parse("12").is_err());
        assert!(CredentialId::parse("12-").is_err());
        assert!(CredentialId::parse("12-a b").is_err());
        assert!(CredentialId::new(100, "x").is_err());
    }

    #[test]
    fn secret_hex_eq_and_debug() {
        let s = Secret::from_hex("1a2b3c4d5e6f7a8b").unwrap();
        assert_eq!(
            s.expose(),
            &[0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f, 0x7a, 0x8b]
        );
        assert_eq!(s.len(), 8);
        assert_eq!(*s.to_hex(), "1a2b3c4d5e6f7a8b");
        assert_eq!(s, Secret::from_hex(" 1A2B3C4D5E6F7A8B\n").unwrap());
        assert_ne!(s, Secret::from_hex("12345678abcdefab").unwrap());
        assert_ne!(s, Secret::from_hex("1a2b").unwrap());
        assert_eq!(format!("{s:?}"), "Secret(8 bytes)");
        assert!(Secret::from_hex("").is_err());
        for bad in ["abc", "zz", "1a2b3c4d5e6f7a8g"] {
            let e = Secret::from_hex(bad).unwrap_err();
            assert!(!e.contains(bad), "{e}");
        }
    }

    #[test]
    fn psk_entry_debug_and_deserialize_hide_the_key() {
        let e: PskEntry = serde_json::from_str(
            r#"{"entity_id":"Clock-AE1","kpsa_id":"AE123456789012-Lock@in.provider.com","key":"1a2b3c4d5e6f7a8b"}"#,
        )
        .unwrap();
        assert_eq!(e.entity_id.as_deref(), Some("Clock-AE1"));
        assert_eq!(
            e.credential_id().to_string(),
            "12-AE123456789012-Lock@in.provider.com"
        );
        let d = format!("{e:?} {e:#?}");
        assert!(
            !d.contains("1a2b3c4d5e6f7a8b") && !d.contains("26, 43"),
            "{d}"
        );
        assert!(d.contains("Secret(8 bytes)"));
        let err = serde_json::from_str::<PskEntry>(
            r#"{"kpsa_id":"AE1@in.provider.com","key":"1a2b3c4d5e6f7a8x"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("1a2b3c4d5e6f7a8x"), "{err}");
    }
}
