//! The MEF configuration file (TOML).

use crate::provisioned_keys::{check_psk_len, resolve_against, KeySources, PskRow};
use m2m_security::credentials::Secret;
use m2m_security::secure_environment::check_private_file;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The default configuration, printed by `m2m mef --print-default-config`: every field with a
/// comment (the layout of `m2m_core::config_text`; a field missing here fails
/// `the_default_config_shows_every_field`).
pub const DEFAULT_CONFIG: &str = r##"# m2m mef: the M2M Enrolment Function (TS-0003 clause 8.3, remote security provisioning), `m2m mef --config FILE`.
# Relative paths are relative to this file's directory. A "# key = value" line or a "# [[rows]]"
# block is an optional example: remove the "# " of its lines to use it.
# With [[kpm]] rows this file holds keys: it must then be mode 0600 (chmod 600 FILE), else the MEF refuses it.

# The MEF-FQDN: the suffix of every KeID (hexBinary(RelativeKeID)@fqdn) and the name in its certificate.
fqdn = "mef.keys.example.net"
# The M2M Service Provider domain, to read CSE-IDs/AE-IDs from target certificates.
sp_fqdn = "m2m.example.com"
# The SP's IN-CSE-ID: CSE-ID certificates are named "<in>.<sp>" and "<cse>.<in>.<sp>" (TS-0001 clause 6.5.1.1).
in_cse_id = "/id-in"
# Address to listen on (HTTPS); port 0 picks a free port.
listen = "0.0.0.0:8443"
# The MEF's FQDN certificate chain, PEM, leaf first (`m2m pki issue --ca ca --kind mef --id
# mef.keys.example.net --out mef` writes mef.pem and mef.key).
certificate = "mef.pem"
# Its private key (PEM, mode 0600).
private_key = "mef.key"
# Root of trust for enrolees and enrolment targets presenting certificates (`m2m pki ca --out ca`).
trusted_ca = "ca/ca.pem"
# Its revocation list (`m2m pki revoke --ca ca CERT` writes ca/crl.pem): read again whenever it changes,
# checked at every certificate handshake. Leave it out for no status check.
# crl = "ca/crl.pem"
# Who may revoke enrolments (`m2m mef revoke`), as their certificates name them; absent: nobody.
# admins = ["/id-in"]
# The enrolments (Ke, AES-256-GCM encrypted under the storage key), kept 0600 in a 0700 directory of its own.
storage = "mef-data/enrolments.json"
# The storage key file (32 bytes hex, mode 0600; created when missing). Leave it out when the keystore
# below holds the secret "mef-storage-key" (exactly one source; `m2m keys add-secret --keystore ..
# --key-file .. --name mef-storage-key --generate` writes it).
storage_key = "mef-storage.key"
# Keys held in the software secure environment (`m2m keys init --keystore mef.keystore --key-file
# mef-keystore.key`, then `m2m keys add-psk --kpsa-id KpmID --entity ENROLEE-ID`): its Kpm are looked
# up after the [[kpm]] rows, and its secret "mef-storage-key" (32 bytes) may replace storage_key.
# keystore = "mef.keystore"
# The keystore's key file (32 bytes, mode 0600) ...
# key_file = "mef-keystore.key"
# ... or the environment variable holding its passphrase (exactly one of the two).
# passphrase_env = "M2M_MEF_KEYSTORE_PASSPHRASE"
# The lowest Security Level the MEF's keys may be kept at: "software", "token" (a PKCS#11 token) or
# "hardware" (a token in a hardware slot). Above "software" the MEF refuses [[kpm]] rows, the keystore
# and storage_key: every key in [pkcs11] below.
# required_level = "software"
# How long an enrolment (Ke and every key derived from it) stays valid, in seconds.
lifetime_seconds = 86400

# A pre-provisioned symmetric enrolee key (TS-0003 clause 8.3.2.1): TLS-PSK with psk_identity = kpm_id, psk = key.
# [[kpm]]
# enrolee_id = "/id-asn"  # the enrolee's identity (CSE-ID, AE-ID or other Enrolee ID) this key authenticates
# kpm_id = "0123456789ABCDEF0123456789ABCDEF@mef.keys.example.net"  # KpmID, relative@MEF-FQDN: the TLS psk_identity
# key = "<64 hex digits>"  # Kpm in hex: fresh random bytes (openssl rand -hex 32), never a published example

# GBA-authenticated enrolment (TS-0003 clause 8.3.2.3 with the BSF apart from the MEF): an enrolee with a
# USIM presents its B-TID as psk_identity; the MEF, a NAF of this BSF, fetches Ks_NAF over Zn with its
# certificate and the enrolee is the AE-ID the subscriber record names (read against in_cse_id).
# [gba]
# zn_url = "https://bsf.operator.example.net:8444"  # the BSF's Zn URL
# bsf_fqdn = "bsf.operator.example.net"  # its domain: its certificate's name, the B-TIDs' suffix
# timeout_ms = 2000  # how long a handshake waits for the BSF

# An enrolment target allowed to fetch credentials, and for which SUIDs (11 = Km for a MAF,
# 12 = Kpsa for a CSE/AE, others = usage-constrained keys).
# [[targets]]
# id = "maf.keys.example.net"  # CSE-ID (/id-in), AE-ID, or FQDN (a MAF), as its certificate names it
# suids = [11]  # the SUIDs it may fetch
# [[targets]]
# id = "/id-in"
# suids = [12]

# A PKCS#11 token (an HSM, a smart card, SoftHSM): Kpm as its PSK entries (`m2m keys token ...
# add-psk --kpsa-id KpmID --entity ENROLEE-ID`, looked up at each handshake after the [[kpm]] rows),
# and, without storage_key and keystore, the storage key derived inside it from its secret
# "mef-storage-key" (`m2m keys token ... generate-secret --name mef-storage-key`).
# [pkcs11]
# module = "/usr/lib/softhsm/libsofthsm2.so"  # the token vendor's PKCS#11 library
# token = "m2m"  # the token's label
# pin_file = "mef-token.pin"  # a file (mode 0600) holding the user PIN

# The listener (the transport layer shared with the CSE and the MAF); these are the defaults.
[limits]
# Connections open at once; more are closed as they arrive.
max_connections = 16384
# A connection must start and finish its TLS handshake within this time.
handshake_timeout_ms = 10000
# TLS handshakes in flight per source address (silent connections do not count).
max_handshakes_per_source = 16
# A request head must arrive complete within this time of its first byte.
header_read_timeout_ms = 10000
# A connection with no traffic for this long is closed.
idle_timeout_ms = 120000
# On shutdown, requests in progress get this long to finish.
shutdown_grace_ms = 5000
"##;

/// One pre-provisioned Kpm.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpmRow {
    /// The enrolee's identity (CSE-ID, AE-ID or other Enrolee ID) this key authenticates.
    pub enrolee_id: String,
    /// KpmID, `relative@MEF-FQDN`: the TLS psk_identity.
    pub kpm_id: String,
    /// The Kpm (hex).
    pub key: Secret,
}

/// An enrolment target and the SUIDs it may fetch.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRow {
    /// CSE-ID (`/id-in`), AE-ID, or FQDN (MAF) as its certificate names it.
    pub id: String,
    pub suids: Vec<u32>,
}

/// The whole MEF configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MefConfig {
    pub fqdn: String,
    #[serde(default = "default_sp")]
    pub sp_fqdn: String,
    /// The SP's IN-CSE-ID: CSE-ID certificates are named `<in>.<sp>` and `<cse>.<in>.<sp>`
    /// (TS-0001 clause 6.5.1.1).
    #[serde(default = "crate::maf::config::default_in_cse_id")]
    pub in_cse_id: String,
    #[serde(default = "default_listen")]
    pub listen: String,
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub trusted_ca: Option<PathBuf>,
    /// Revocation lists of the trusted CAs (PEM, `m2m pki revoke`), checked at every certificate
    /// handshake (TS-0003 clause 8.1.2.2).
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// The identities (as their certificates name them: CSE-IDs, AE-IDs, FQDNs) allowed to revoke
    /// enrolments (`POST /mef/revocation`); empty: nobody.
    #[serde(default)]
    pub admins: Vec<String>,
    pub storage: PathBuf,
    /// The storage key file (created when missing); exactly one of this and the keystore secret
    /// [`MEF_STORAGE_KEY_SECRET`] is the storage key.
    #[serde(default)]
    pub storage_key: Option<PathBuf>,
    /// The software secure environment: Kpm as PSK entries (psk_identity = KpmID, entity_id = the
    /// enrolee ID) and optionally the secret [`MEF_STORAGE_KEY_SECRET`]. Opened with exactly one of
    /// `key_file` and `passphrase_env`.
    #[serde(default)]
    pub keystore: Option<PathBuf>,
    /// The key file of `keystore` (32 bytes, mode 0600).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name of the environment variable holding the passphrase of `keystore`.
    #[serde(default)]
    pub passphrase_env: Option<String>,
    #[serde(default = "default_lifetime")]
    pub lifetime_seconds: u64,
    #[serde(default)]
    pub kpm: Vec<KpmRow>,
    #[serde(default)]
    pub targets: Vec<TargetRow>,
    /// GBA-authenticated enrolment: the BSF whose B-TIDs enrolees may present (the MEF is its
    /// NAF, with its FQDN and certificate); absent: none.
    #[serde(default)]
    pub gba: Option<GbaRow>,
    /// The listener's limits (m2m-transport): connection cap, handshake timeout and per-source
    /// handshakes, header-read and idle timeouts, shutdown grace. Every field has a default.
    #[serde(default)]
    pub limits: m2m_transport::Limits,
    /// A PKCS#11 token holding Kpm (PSK entries `kpsa:<KpmID>` bound to the enrolee's ID,
    /// `m2m keys token add-psk --kpsa-id KpmID --entity ID`), looked up after the `[[kpm]]`
    /// rows, and the secret [`MEF_STORAGE_KEY_SECRET`] the storage key is derived from inside it.
    #[serde(default)]
    pub pkcs11: Option<m2m_security::secure_environment::pkcs11::TokenConfig>,
    /// The lowest Security Level (seeds/002 clause 6.4.1) the MEF's keys may be kept at: above
    /// "software" it refuses `[[kpm]]` rows, the keystore and a storage key file.
    #[serde(default)]
    pub required_level: Option<m2m_security::secure_environment::SecurityLevel>,
}

/// The BSF of a GBA-authenticated enrolment.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GbaRow {
    /// Its Zn URL (`https://host:port`).
    pub zn_url: String,
    /// Its domain: its certificate's name and the suffix of its B-TIDs.
    pub bsf_fqdn: String,
    /// How long a handshake waits for the BSF.
    #[serde(default = "default_gba_timeout")]
    pub timeout_ms: u64,
}

fn default_gba_timeout() -> u64 {
    2_000
}

impl PskRow for KpmRow {
    const KIND: &'static str = "Kpm";
    const ENTITY: &'static str = "the enrolee ID";
    fn psk_id(&self) -> &str {
        &self.kpm_id
    }
    fn from_keystore(enrolee_id: String, kpm_id: String, key: Secret) -> Self {
        KpmRow {
            enrolee_id,
            kpm_id,
            key,
        }
    }
}

/// The keystore secret that holds the MEF storage key (32 bytes).
pub const MEF_STORAGE_KEY_SECRET: &str = "mef-storage-key";

/// Where the MEF storage key comes from.
pub enum StorageKey {
    /// A key file (created when missing).
    File(PathBuf),
    /// The keystore secret [`MEF_STORAGE_KEY_SECRET`].
    Held(Secret),
}

/// The keys a MEF starts with: every Kpm (configuration rows first, then the keystore) and the storage
/// key.
pub struct MefKeys {
    pub kpm: Vec<KpmRow>,
    /// The token (its Kpm are looked up at each handshake).
    pub token: Option<std::sync::Arc<m2m_security::secure_environment::pkcs11::Pkcs11Token>>,
    pub storage_key: StorageKey,
}

fn default_sp() -> String {
    "m2m.example.com".into()
}
fn default_listen() -> String {
    "0.0.0.0:8443".into()
}
fn default_lifetime() -> u64 {
    86_400
}

impl MefConfig {
    /// Parses TOML text; relative paths stay relative (see [`MefConfig::load`]).
    pub fn from_toml_str(text: &str) -> Result<MefConfig, String> {
        let c: MefConfig = toml::from_str(text).map_err(|e| {
            // Names the line, never quotes it: the line may hold a key.
            format!(
                "MEF configuration: {}",
                m2m_core::config_text::toml_error(&e, text)
            )
        })?;
        c.check()?;
        Ok(c)
    }

    /// Loads a file: paths are resolved against its directory; with `[[kpm]]` rows the file must be
    /// private (mode 0600).
    pub fn load(path: &Path) -> Result<MefConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut c = Self::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if !c.kpm.is_empty() {
            check_private_file(path)?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        resolve_against(
            base,
            [
                &mut c.certificate,
                &mut c.private_key,
                &mut c.trusted_ca,
                &mut c.crl,
                &mut c.storage_key,
                &mut c.keystore,
                &mut c.key_file,
            ]
            .into_iter()
            .flatten()
            .chain([&mut c.storage])
            .chain(c.pkcs11.as_mut().map(|t| &mut t.pin_file)),
        );
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        m2m_security::certificates::check_fqdn(&self.fqdn).map_err(|e| format!("fqdn: {e}"))?;
        if self.lifetime_seconds == 0 {
            return Err("lifetime_seconds must be at least 1".into());
        }
        if self.pkcs11.is_none() || self.keystore.is_some() || self.storage_key.is_some() {
            self.key_sources().check()?;
        }
        self.check_key_level()?;
        self.limits.check()?;
        if let Some(g) = &self.gba {
            if self.certificate.is_none() || self.private_key.is_none() || self.trusted_ca.is_none()
            {
                return Err("[gba] needs certificate, private_key and trusted_ca (the MEF authenticates to the BSF with them)".into());
            }
            m2m_security::certificates::check_fqdn(&g.bsf_fqdn)
                .map_err(|e| format!("gba.bsf_fqdn: {e}"))?;
            if g.bsf_fqdn.eq_ignore_ascii_case(&self.fqdn) {
                return Err(
                    "gba.bsf_fqdn must differ from fqdn: each names its own key identifiers".into(),
                );
            }
        }
        self.check_kpm_rows(&self.kpm)
    }

    /// `required_level` above software: every key in the token.
    fn check_key_level(&self) -> Result<(), String> {
        use m2m_security::secure_environment::SecurityLevel;
        let Some(required) = self.required_level.filter(|l| *l > SecurityLevel::Software) else {
            return Ok(());
        };
        let below = [
            ("[[kpm]] rows", !self.kpm.is_empty()),
            ("the keystore", self.keystore.is_some()),
            ("storage_key", self.storage_key.is_some()),
            ("a MEF without [pkcs11]", self.pkcs11.is_none()),
        ];
        match below.iter().find(|(_, given)| *given) {
            Some((what, _)) => Err(format!(
                "required_level is {required}, but {what} keeps keys at level software"
            )),
            None => Ok(()),
        }
    }

    fn check_kpm_rows(&self, rows: &[KpmRow]) -> Result<(), String> {
        for k in rows {
            let Some((_, fqdn)) = k.kpm_id.split_once('@').filter(|(r, _)| !r.is_empty()) else {
                return Err(format!("kpm_id {:?} is not relative@MEF-FQDN", k.kpm_id));
            };
            if !fqdn.eq_ignore_ascii_case(&self.fqdn) {
                return Err(format!(
                    "kpm_id {:?} names another MEF than {}",
                    k.kpm_id, self.fqdn
                ));
            }
            check_psk_len(&format!("kpm {:?}", k.kpm_id), &k.key)?;
        }
        Ok(())
    }

    /// Where the MEF's keys come from (the keystore and storage key options).
    fn key_sources(&self) -> KeySources<'_> {
        KeySources {
            service: "MEF",
            keystore: self.keystore.as_deref(),
            key_file: self.key_file.as_deref(),
            passphrase_env: self.passphrase_env.as_deref(),
            storage_key_file: self.storage_key.as_deref(),
            storage_key_option: "storage_key",
            storage_key_secret: MEF_STORAGE_KEY_SECRET,
        }
    }

    /// Opens the keystore (if configured) and collects the keys the MEF starts with: the `[[kpm]]` rows,
    /// then the keystore's PSK entries whose KpmID no row has (entity_id = the enrolee ID), and the
    /// storage key from exactly one source.
    pub fn load_keys(&self) -> Result<MefKeys, String> {
        let token = crate::provisioned_keys::open_token(self.pkcs11.as_ref(), self.required_level)?;
        let (rows, held) =
            if token.is_some() && self.keystore.is_none() && self.storage_key.is_none() {
                // Everything in the token: the rows only, the storage key derived inside it.
                self.check_kpm_rows(&self.kpm)?;
                (self.kpm.clone(), None)
            } else {
                let loaded = self
                    .key_sources()
                    .load(&self.kpm, |rows| self.check_kpm_rows(rows))?;
                (loaded.rows, loaded.held_storage_key)
            };
        let storage_key = match (held, &self.storage_key, &token) {
            (Some(k), _, _) => StorageKey::Held(k),
            (None, Some(file), _) => StorageKey::File(file.clone()),
            (None, None, Some(token)) => StorageKey::Held(
                crate::provisioned_keys::token_storage_key(token, MEF_STORAGE_KEY_SECRET)?,
            ),
            (None, None, None) => return Err("no storage_key".into()),
        };
        Ok(MefKeys {
            kpm: rows,
            token,
            storage_key,
        })
    }

    /// Whether `target` is configured for `suid`.
    pub fn target_allows(&self, target: &str, suid: u32) -> bool {
        self.targets
            .iter()
            .any(|t| self.same_id(&t.id, target) && t.suids.contains(&suid))
    }

    /// Whether two identifiers name the same entity (see [`same_id`]) in this MEF's SP.
    pub fn same_id(&self, a: &str, b: &str) -> bool {
        same_id(a, b, &self.sp_fqdn)
    }
}

/// CSE-IDs and AE-IDs compare in absolute form (`/id-in` of SP `sp_fqdn` is `//sp_fqdn/id-in`, the
/// SP-ID without case); FQDNs (containing no '/') compare case-insensitively; anything else exactly.
pub fn same_id(a: &str, b: &str, sp_fqdn: &str) -> bool {
    if !a.contains('/') && !b.contains('/') {
        return a.eq_ignore_ascii_case(b);
    }
    match (
        crate::maf::absolute_id(a, sp_fqdn),
        crate::maf::absolute_id(b, sp_fqdn),
    ) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_core::config_text::{each_uncommented, field_names, has_path, problems};

    const PLACEHOLDER: &str = "<64 hex digits>";

    #[test]
    fn the_default_config_shows_every_field() {
        let fields: &[(&str, &[&str])] = &[
            ("", field_names::<MefConfig>()),
            ("kpm", field_names::<KpmRow>()),
            ("targets", field_names::<TargetRow>()),
            ("gba", field_names::<GbaRow>()),
            (
                "pkcs11",
                field_names::<m2m_security::secure_environment::pkcs11::TokenConfig>(),
            ),
            ("limits", field_names::<m2m_transport::Limits>()),
        ];
        let p = problems(DEFAULT_CONFIG, fields);
        assert!(p.is_empty(), "{p:#?}");
    }

    /// The default configuration is the defaults where a field has one.
    #[test]
    fn the_default_config_keeps_the_defaults() {
        let printed = MefConfig::from_toml_str(DEFAULT_CONFIG).unwrap();
        let required = "fqdn = \"mef.keys.example.net\"\nstorage = \"s\"\nstorage_key = \"k\"\n";
        let defaults = MefConfig::from_toml_str(required).unwrap();
        assert_eq!(
            (
                &printed.sp_fqdn,
                &printed.in_cse_id,
                &printed.listen,
                printed.lifetime_seconds
            ),
            (
                &defaults.sp_fqdn,
                &defaults.in_cse_id,
                &defaults.listen,
                defaults.lifetime_seconds
            )
        );
        assert!(printed.kpm.is_empty() && printed.targets.is_empty() && printed.keystore.is_none());
    }

    /// Removing the `# ` of one optional block or key (with what it needs) gives a configuration
    /// that parses and has it; the key placeholder as it is does not parse.
    #[test]
    fn each_optional_example_parses_uncommented() {
        let needs: &[(&str, &[&str])] = &[
            ("keystore", &["key_file"]),
            ("key_file", &["keystore"]),
            ("passphrase_env", &["keystore"]),
        ];
        let all = each_uncommented(DEFAULT_CONFIG, needs).unwrap();
        let paths: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "crl",
                "admins",
                "keystore",
                "key_file",
                "passphrase_env",
                "required_level",
                "kpm",
                "gba",
                "targets",
                "targets",
                "pkcs11"
            ]
        );
        for (path, text) in all {
            if path == "kpm" {
                let e = MefConfig::from_toml_str(&text).unwrap_err();
                assert!(e.contains("the key is not hex"), "{e}");
            }
            let text = text.replace(PLACEHOLDER, &"5a".repeat(32));
            MefConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{path}: {e}\n{text}"));
            assert!(has_path(&text, &path), "{path}");
        }
    }

    #[test]
    fn the_listener_limits_have_defaults_and_refuse_zeros() {
        let base =
            "fqdn = \"mef.keys.example.net\"\nstorage = \"e.json\"\nstorage_key = \"s.key\"\n";
        let c = super::MefConfig::from_toml_str(base).unwrap();
        assert_eq!(c.limits, m2m_transport::Limits::default());
        let c = super::MefConfig::from_toml_str(&format!(
            "{base}[limits]\nmax_connections = 3\nhandshake_timeout_ms = 700\n"
        ))
        .unwrap();
        assert_eq!(
            (c.limits.max_connections, c.limits.handshake_timeout_ms),
            (3, 700)
        );
        let e = super::MefConfig::from_toml_str(&format!("{base}[limits]\nidle_timeout_ms = 0\n"))
            .unwrap_err();
        assert!(e.contains("limits.idle_timeout_ms"), "{e}");
    }

    #[test]
    fn ids_compare_in_absolute_form() {
        let sp = "m2m.example.com";
        assert!(same_id("/id-in", "//m2m.example.com/id-in", sp));
        assert!(same_id("//M2M.example.com/id-in/Cae", "/id-in/Cae", sp));
        assert!(!same_id("/id-in", "//other.example.com/id-in", sp));
        assert!(!same_id("/id-in", "/id-mn", sp));
        assert!(same_id("MAF.keys.example.net", "maf.keys.example.net", sp));
        assert!(!same_id(
            "maf.keys.example.net",
            "/maf.keys.example.net",
            sp
        ));
    }
}
