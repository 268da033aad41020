//! The MAF configuration file (TOML).

use crate::provisioned_keys::{
    check_psk_len, read_storage_key, resolve_against, KeySources, PskRow, WhenMissing,
};
use m2m_security::credentials::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One Km row: the MAF client (AE-ID or CSE-ID) that holds the master credential Km, identified by KmID.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct KmRow {
    /// The AE-ID or CSE-ID of the MAF client (SP-relative `/id-in/Cae`, `/Sae`, or absolute `//sp/...`).
    pub client_id: String,
    /// KmID: `relative@MAF-FQDN` (TS-0003 clause 10.6); the TLS psk_identity.
    pub km_id: String,
    /// Km, hex.
    pub key: Secret,
}

impl std::fmt::Debug for KmRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmRow")
            .field("client_id", &self.client_id)
            .field("km_id", &self.km_id)
            .finish_non_exhaustive()
    }
}

/// The MEF this MAF is an enrolment target of (remote provisioning of Km, TS-0003 clauses 8.3 and
/// 8.8.3.1). The MAF reaches it with its own FQDN certificate (`certificate`, `private_key`,
/// `trusted_ca`), so those must be configured too.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct MefSection {
    /// e.g. `https://mef.keys.example.net:8443` (or `host:port`).
    pub url: String,
    /// The MEF-FQDN: the suffix of its KeIDs (`hex(RelativeKeID)@MEF-FQDN`), its SNI and the name its
    /// certificate must carry.
    pub fqdn: String,
    /// How long a handshake waits for the MEF, milliseconds.
    #[serde(default = "default_mef_timeout")]
    pub timeout_ms: u64,
}

fn default_mef_timeout() -> u64 {
    2_000
}

/// The MAF configuration.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct MafConfig {
    /// The MAF-FQDN, e.g. `maf.keys.example.net`: the `@` part of every KcID.
    pub fqdn: String,
    /// The SP domain whose AE-IDs and CSE-IDs the MAF serves (certificate identities, relative IDs).
    pub sp_fqdn: String,
    /// The SP's IN-CSE-ID: CSE-ID certificates are named `<in>.<sp>` and `<cse>.<in>.<sp>`
    /// (TS-0001 clause 6.5.1.1).
    #[serde(default = "default_in_cse_id")]
    pub in_cse_id: String,
    /// Socket address to listen on, e.g. `0.0.0.0:8443` or `127.0.0.1:0`.
    pub listen: String,
    /// The MAF's FQDN certificate chain (PEM, leaf first; `m2m pki issue --kind maf`) and private key.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Root(s) of trust for client certificates.
    pub trusted_ca: Option<PathBuf>,
    /// Revocation lists of the trusted CAs (PEM, `m2m pki revoke`), checked at every certificate
    /// handshake (TS-0003 clause 8.1.2.2).
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// Km rows for TLS-PSK clients.
    #[serde(default)]
    pub km: Vec<KmRow>,
    /// Directory of the SQLite database `maf.sqlite`.
    pub storage: PathBuf,
    /// File holding the 32-byte AES-256-GCM storage key in hex; must be mode 0600. Exactly one of this
    /// and the keystore secret [`MAF_STORAGE_KEY_SECRET`] is the storage key.
    #[serde(default)]
    pub storage_key_file: Option<PathBuf>,
    /// The software secure environment (`m2m keys init`): Km as PSK entries (psk_identity = KmID,
    /// entity (`m2m keys add-psk --entity`) = the client's AE-ID/CSE-ID), and optionally the storage key as the secret
    /// [`MAF_STORAGE_KEY_SECRET`]. Opened with exactly one of `key_file` and `passphrase_env`.
    #[serde(default)]
    pub keystore: Option<PathBuf>,
    /// The key file of `keystore` (32 bytes, mode 0600).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name of the environment variable holding the passphrase of `keystore`.
    #[serde(default)]
    pub passphrase_env: Option<String>,
    /// Lifetime of a key registration without expirationTime, seconds.
    #[serde(default = "default_key_lifetime")]
    pub default_key_lifetime: u64,
    /// Lifetime of a client registration without expirationTime, seconds.
    #[serde(default = "default_client_lifetime")]
    pub default_client_lifetime: u64,
    /// Longest lifetime granted, seconds (longer requests are shortened).
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: u64,
    /// Period of the sweep that purges expired registrations, seconds.
    #[serde(default = "default_sweep")]
    pub sweep_interval: u64,
    /// TLS handshake timeout, seconds: the form of earlier versions, still read. It sets
    /// `[limits] handshake_timeout_ms` (giving both with different values is an error).
    #[serde(default)]
    pub handshake_timeout: Option<u64>,
    /// The listener's limits (m2m-transport): connection cap, handshake timeout and per-source
    /// handshakes, header-read and idle timeouts, shutdown grace. Every field has a default.
    #[serde(default)]
    pub limits: m2m_transport::Limits,
    /// Remote-provisioned Km: clients whose psk_identity is a KeID of this MEF (see [`MefSection`]).
    #[serde(default)]
    pub mef: Option<MefSection>,
    /// The trusted third party's credential registry (see [`TtpSection`]).
    #[serde(default)]
    pub ttp: TtpSection,
    /// A PKCS#11 token holding Km (PSK entries `kpsa:<KmID>` bound to the client's AE-ID/CSE-ID,
    /// `m2m keys token add-psk --kpsa-id KmID --entity ID`), looked up after the `[[km]]` rows,
    /// and the secret [`MAF_STORAGE_KEY_SECRET`] the storage key is derived from inside it.
    #[serde(default)]
    pub pkcs11: Option<m2m_security::secure_environment::pkcs11::TokenConfig>,
    /// The lowest Security Level (seeds/002 clause 6.4.1) the MAF's keys may be kept at:
    /// above "software" it refuses `[[km]]` rows, the keystore and a storage key file.
    #[serde(default)]
    pub required_level: Option<m2m_security::secure_environment::SecurityLevel>,
}

/// The TTP credential registry (seeds/001 clauses 5.6, 5.7; [`crate::maf::ttp`]).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TtpSection {
    /// Lifetime of a credential registered without expirationTime, seconds.
    #[serde(default = "default_credential_lifetime")]
    pub default_lifetime: u64,
    /// Longest credential lifetime granted, seconds (longer requests are shortened).
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: u64,
    /// Who may register credentials on behalf of whom; a client may always register for itself.
    #[serde(default)]
    pub delegations: Vec<Delegation>,
}

impl Default for TtpSection {
    fn default() -> Self {
        TtpSection {
            default_lifetime: default_credential_lifetime(),
            max_lifetime: default_max_lifetime(),
            delegations: Vec::new(),
        }
    }
}

/// One delegation: the MAF client `delegate` (a gateway: MN-CSE, or an AE acting for devices) may
/// register E2E credentials for every subject that one of `subjects` matches.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Delegation {
    /// The delegate's CSE-ID or AE-ID (SP-relative or absolute).
    pub delegate: String,
    /// Subject AE-IDs/CSE-IDs (SP-relative or absolute); `*` matches any characters within one
    /// segment, as in accessControlOriginators (`/mn-cse-123456/C*`: every AE registered there).
    pub subjects: Vec<String>,
}

/// The keystore secret that holds the MAF storage key (32 bytes).
pub const MAF_STORAGE_KEY_SECRET: &str = "maf-storage-key";

/// The keys a MAF starts with: every Km (configuration rows first, then the keystore), the token
/// (its Km are looked up at each handshake) and the storage key.
pub struct MafKeys {
    pub km: Vec<KmRow>,
    pub token: Option<std::sync::Arc<m2m_security::secure_environment::pkcs11::Pkcs11Token>>,
    pub storage_key: Secret,
}

impl std::fmt::Debug for MafKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MafKeys")
            .field("km", &self.km)
            .finish_non_exhaustive()
    }
}

fn default_key_lifetime() -> u64 {
    3600
}
fn default_client_lifetime() -> u64 {
    86_400
}
fn default_max_lifetime() -> u64 {
    30 * 86_400
}
fn default_credential_lifetime() -> u64 {
    86_400
}
fn default_sweep() -> u64 {
    60
}

/// The configuration printed by `m2m maf --print-default-config`: every field with a comment (the
/// layout of `m2m_core::config_text`; a field missing here fails `the_default_config_shows_every_field`).
pub const DEFAULT_CONFIG: &str = r##"# m2m maf: the M2M Authentication Function (TS-0003 clause 8.8), `m2m maf --config FILE`.
# Relative paths are relative to this file's directory. A "# key = value" line or a "# [table]" /
# "# [[rows]]" block is an optional example: remove the "# " of its lines to use it.
# This file holds Km keys: it must be mode 0600 (chmod 600 FILE), else the MAF refuses it.

# The MAF-FQDN: the "@" part of every KcID and KmID, and the name in the MAF's certificate.
fqdn = "maf.keys.example.net"
# The SP domain whose AE-IDs and CSE-IDs the MAF serves (certificate identities, relative IDs).
sp_fqdn = "m2m.example.com"
# The SP's IN-CSE-ID: CSE-ID certificates are named "<in>.<sp>" and "<cse>.<in>.<sp>" (TS-0001 clause 6.5.1.1).
in_cse_id = "/id-in"
# Address to listen on (HTTPS with TLS-PSK on Km, or certificates); port 0 picks a free port.
listen = "0.0.0.0:8443"
# The MAF's FQDN certificate chain, PEM, leaf first (`m2m pki issue --ca ca --kind maf --id
# maf.keys.example.net --out maf` writes maf.pem and maf.key).
certificate = "maf.pem"
# Its private key (PEM, mode 0600).
private_key = "maf.key"
# Root of trust for client certificates (AE-ID and CSE-ID certificates): `m2m pki ca --out ca`.
trusted_ca = "ca/ca.pem"
# Its revocation list (`m2m pki revoke --ca ca CERT` writes ca/crl.pem): read again whenever it changes,
# checked at every certificate handshake. Leave it out for no status check.
# crl = "ca/crl.pem"
# Directory of the SQLite database maf.sqlite (the registered keys, encrypted under the storage key).
storage = "maf-data"
# The storage key: 32 random bytes in hex, in a file of mode 0600 (e.g. `openssl rand -hex 32 >
# maf-storage.key; chmod 600 maf-storage.key`). Leave it out when the keystore below holds the secret
# "maf-storage-key" (exactly one source; `m2m keys add-secret --keystore .. --key-file .. --name
# maf-storage-key --generate` writes it).
storage_key_file = "maf-storage.key"
# Keys held in the software secure environment (`m2m keys init --keystore maf.keystore --key-file
# maf-keystore.key`, then `m2m keys add-psk --kpsa-id KmID --entity AE-ID|CSE-ID`): its Km are looked
# up after the [[km]] rows, and its secret "maf-storage-key" (32 bytes) may replace storage_key_file.
# keystore = "maf.keystore"
# The keystore's key file (32 bytes, mode 0600) ...
# key_file = "maf-keystore.key"
# ... or the environment variable holding its passphrase (exactly one of the two).
# passphrase_env = "M2M_MAF_KEYSTORE_PASSPHRASE"
# The lowest Security Level the MAF's keys may be kept at: "software", "token" (a PKCS#11 token) or
# "hardware" (a token in a hardware slot). Above "software" the MAF refuses [[km]] rows, the keystore
# and storage_key_file: every key in [pkcs11] below.
# required_level = "software"
# Lifetime of a key registration without expirationTime, in seconds.
default_key_lifetime = 3600
# Lifetime of a client registration without expirationTime, in seconds.
default_client_lifetime = 86400
# Longest lifetime granted, in seconds (longer requests are shortened).
max_lifetime = 2592000
# Period of the sweep that purges expired registrations, in seconds.
sweep_interval = 60
# The earlier form of [limits] handshake_timeout_ms, in seconds (read if given; prefer [limits]).
# handshake_timeout = 10

# A client authenticating with TLS-PSK on Km (psk_identity = KmID).
# [[km]]
# client_id = "/id-in/Cae1"  # the MAF client's AE-ID or CSE-ID (SP-relative or absolute)
# km_id = "ae1@maf.keys.example.net"  # KmID, relative@MAF-FQDN (TS-0003 clause 10.6): the TLS psk_identity
# key = "<64 hex digits>"  # Km in hex: fresh random bytes (openssl rand -hex 32), never a published example

# The trusted third party (seeds/001 clauses 5.6, 5.7): a registry of E2E credentials under
# /maf/e2e-credentials. A registered MAF client registers a credential (a JWK: oct, or an EC P-256
# public key) for itself, or for a subject a delegation below lists; only the registrant and the
# requesters it names retrieve it.
[ttp]
# Lifetime of a credential registered without expirationTime, in seconds.
default_lifetime = 86400
# Longest credential lifetime granted, in seconds (longer requests are shortened).
max_lifetime = 2592000

# A gateway may register credentials for its devices.
# [[ttp.delegations]]
# delegate = "/mn-cse-123456"  # the delegate's CSE-ID or AE-ID (SP-relative or absolute)
# subjects = ["/mn-cse-123456/C*"]  # the subjects' AE-IDs/CSE-IDs; `*` matches within one ID segment

# Remote-provisioned Km (TS-0003 clause 8.3): an enrolee of this MEF authenticates with
# psk_identity = its KeID (hex@MEF-FQDN) and psk = Km = HMAC-SHA256(Ke, label || MAF-FQDN); the MAF
# fetches that Km from the MEF (fetchCredentials, SUID 11) with its own certificate (needs certificate,
# private_key and trusted_ca above).
# [mef]
# url = "https://mef.keys.example.net:8443"  # the MEF's URL (or host:port)
# fqdn = "mef.keys.example.net"  # the MEF-FQDN: the suffix of its KeIDs, its SNI, the name its certificate carries
# timeout_ms = 2000  # how long a handshake waits for the MEF, in milliseconds

# A PKCS#11 token (an HSM, a smart card, SoftHSM): Km as its PSK entries (`m2m keys token ...
# add-psk --kpsa-id KmID --entity AE-ID|CSE-ID`, looked up at each handshake after the [[km]] rows),
# and, without storage_key_file and keystore, the storage key derived inside it from its secret
# "maf-storage-key" (`m2m keys token ... generate-secret --name maf-storage-key`).
# [pkcs11]
# module = "/usr/lib/softhsm/libsofthsm2.so"  # the token vendor's PKCS#11 library
# token = "m2m"  # the token's label
# pin_file = "maf-token.pin"  # a file (mode 0600) holding the user PIN

# The listener (the transport layer shared with the CSE and the MEF); these are the defaults.
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

impl MafConfig {
    /// Parses TOML; paths are taken as written.
    pub fn from_toml_str(text: &str) -> Result<MafConfig, String> {
        let cfg: MafConfig = toml::from_str(text).map_err(|e| {
            // Names the line, never quotes it: the line may hold a key.
            format!(
                "MAF configuration: {}",
                m2m_core::config_text::toml_error(&e, text)
            )
        })?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Reads a configuration file; it holds Km keys, so it must be private (mode 0600). Relative paths in
    /// it are relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<MafConfig, String> {
        m2m_security::secure_environment::check_private_file(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut cfg = Self::from_toml_str(&text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        resolve_against(
            base,
            [
                &mut cfg.certificate,
                &mut cfg.private_key,
                &mut cfg.trusted_ca,
                &mut cfg.crl,
                &mut cfg.storage_key_file,
                &mut cfg.keystore,
                &mut cfg.key_file,
            ]
            .into_iter()
            .flatten()
            .chain([&mut cfg.storage])
            .chain(cfg.pkcs11.as_mut().map(|t| &mut t.pin_file)),
        );
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        m2m_security::certificates::check_fqdn(&self.fqdn).map_err(|e| format!("fqdn: {e}"))?;
        m2m_security::certificates::check_fqdn(&self.sp_fqdn)
            .map_err(|e| format!("sp_fqdn: {e}"))?;
        if self.pkcs11.is_none() || self.keystore.is_some() || self.storage_key_file.is_some() {
            self.key_sources().check()?;
        }
        if self.default_key_lifetime == 0
            || self.default_client_lifetime == 0
            || self.ttp.default_lifetime == 0
        {
            return Err("lifetimes must be positive".into());
        }
        crate::maf::ttp::Delegations::from_config(&self.ttp.delegations, &self.sp_fqdn)
            .map_err(|e| format!("ttp.delegations: {e}"))?;
        self.listener_limits()?.check()?;
        self.check_key_level()?;
        self.check_km_rows(&self.km)
    }

    /// `required_level` above software: every key in the token.
    fn check_key_level(&self) -> Result<(), String> {
        use m2m_security::secure_environment::SecurityLevel;
        let Some(required) = self.required_level.filter(|l| *l > SecurityLevel::Software) else {
            return Ok(());
        };
        let below = [
            ("[[km]] rows", !self.km.is_empty()),
            ("the keystore", self.keystore.is_some()),
            ("storage_key_file", self.storage_key_file.is_some()),
            ("a MAF without [pkcs11]", self.pkcs11.is_none()),
        ];
        match below.iter().find(|(_, given)| *given) {
            Some((what, _)) => Err(format!(
                "required_level is {required}, but {what} keeps keys at level software"
            )),
            None => Ok(()),
        }
    }

    /// The listener's limits: `[limits]`, with the handshake timeout of the earlier
    /// `handshake_timeout` (seconds) when only that is given.
    pub fn listener_limits(&self) -> Result<m2m_transport::Limits, String> {
        let mut limits = self.limits.clone();
        let Some(seconds) = self.handshake_timeout else {
            return Ok(limits);
        };
        let ms = seconds.saturating_mul(1000);
        let default = m2m_transport::Limits::default().handshake_timeout_ms;
        if limits.handshake_timeout_ms != default && limits.handshake_timeout_ms != ms {
            return Err(format!(
                "handshake_timeout = {seconds} (seconds, the earlier form) and [limits] handshake_timeout_ms = {} disagree: keep only [limits] handshake_timeout_ms",
                limits.handshake_timeout_ms
            ));
        }
        limits.handshake_timeout_ms = ms;
        Ok(limits)
    }

    /// Checks Km rows (from the file or the keystore) against the rest of the configuration.
    fn check_km_rows(&self, rows: &[KmRow]) -> Result<(), String> {
        for row in rows {
            check_psk_len(&format!("km {}", row.km_id), &row.key)?;
            if crate::maf::absolute_id(&row.client_id, &self.sp_fqdn).is_none() {
                return Err(format!(
                    "km {}: client_id '{}' is no SP-relative or absolute AE-ID/CSE-ID",
                    row.km_id, row.client_id
                ));
            }
        }
        if let Some(mef) = &self.mef {
            m2m_security::certificates::check_fqdn(&mef.fqdn)
                .map_err(|e| format!("mef.fqdn: {e}"))?;
            if self.certificate.is_none() || self.private_key.is_none() || self.trusted_ca.is_none()
            {
                return Err(
                    "[mef] needs certificate, private_key and trusted_ca (the MAF's own certificate association with the MEF)"
                        .into(),
                );
            }
            if rows
                .iter()
                .any(|r| r.km_id.ends_with(&format!("@{}", mef.fqdn)))
            {
                return Err(format!(
                    "a km_id ends with @{}: those identities belong to the MEF's KeIDs",
                    mef.fqdn
                ));
            }
        }
        Ok(())
    }

    /// Where the MAF's keys come from (the keystore and storage key options).
    fn key_sources(&self) -> KeySources<'_> {
        KeySources {
            service: "MAF",
            keystore: self.keystore.as_deref(),
            key_file: self.key_file.as_deref(),
            passphrase_env: self.passphrase_env.as_deref(),
            storage_key_file: self.storage_key_file.as_deref(),
            storage_key_option: "storage_key_file",
            storage_key_secret: MAF_STORAGE_KEY_SECRET,
        }
    }

    /// Opens the keystore (if configured) and collects the keys the MAF starts with: the `[[km]]` rows,
    /// then the keystore's PSK entries whose KmID no row has (entity_id = the MAF client ID), and the
    /// storage key from exactly one source.
    pub fn load_keys(&self) -> Result<MafKeys, String> {
        let token = crate::provisioned_keys::open_token(self.pkcs11.as_ref(), self.required_level)?;
        let sources = self.key_sources();
        let loaded =
            if token.is_some() && self.keystore.is_none() && self.storage_key_file.is_none() {
                // Everything in the token: the rows only, the storage key derived inside it.
                self.check_km_rows(&self.km)?;
                crate::provisioned_keys::LoadedKeys {
                    rows: self.km.clone(),
                    held_storage_key: None,
                }
            } else {
                sources.load(&self.km, |rows| self.check_km_rows(rows))?
            };
        let storage_key = match (loaded.held_storage_key, &self.storage_key_file, &token) {
            (Some(k), _, _) => k,
            (None, Some(file), _) => read_storage_key(file, WhenMissing::Refuse)?,
            (None, None, Some(token)) => {
                crate::provisioned_keys::token_storage_key(token, MAF_STORAGE_KEY_SECRET)?
            }
            (None, None, None) => return Err("no storage key".into()),
        };
        Ok(MafKeys {
            km: loaded.rows,
            token,
            storage_key,
        })
    }
}

impl PskRow for KmRow {
    const KIND: &'static str = "Km";
    const ENTITY: &'static str = "the MAF client's AE-ID or CSE-ID";
    fn psk_id(&self) -> &str {
        &self.km_id
    }
    fn from_keystore(client_id: String, km_id: String, key: Secret) -> Self {
        KmRow {
            client_id,
            km_id,
            key,
        }
    }
}

/// The IN-CSE-ID of the embedded configurations.
pub fn default_in_cse_id() -> String {
    "/id-in".into()
}

impl MafConfig {
    /// How this SP's certificates name CSEs.
    pub fn naming(&self) -> Result<m2m_security::certificates::CseNaming, String> {
        m2m_security::certificates::CseNaming::new(&self.sp_fqdn, &self.in_cse_id)
            .map_err(|e| format!("sp_fqdn / in_cse_id: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_core::config_text::{each_uncommented, field_names, has_path, problems};

    const PLACEHOLDER: &str = "<64 hex digits>";

    /// A malformed configuration is refused by its line, never quoting it (it may hold a key).
    #[test]
    fn a_configuration_error_does_not_quote_a_key() {
        let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde";
        for text in [
            format!("{BASE}[[km]]\nclient_id = \"/id-in/Cx\"\nkm_id = \"x@maf.keys.example.net\"\nkey = \"{key}\"\n"),
            format!("{BASE}[[km]]\nclient_id = \"/id-in/Cx\"\nkey = {key}\n"),
        ] {
            let e = MafConfig::from_toml_str(&text).unwrap_err();
            assert!(!e.contains("0123456789abcdef"), "{e}");
        }
    }

    #[test]
    fn the_default_config_shows_every_field() {
        let fields: &[(&str, &[&str])] = &[
            ("", field_names::<MafConfig>()),
            ("km", field_names::<KmRow>()),
            ("ttp", field_names::<TtpSection>()),
            ("ttp.delegations", field_names::<Delegation>()),
            ("mef", field_names::<MefSection>()),
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
        let printed = MafConfig::from_toml_str(DEFAULT_CONFIG).unwrap();
        let required = "fqdn = \"maf.keys.example.net\"\nsp_fqdn = \"m2m.example.com\"\n\
                        listen = \"0.0.0.0:8443\"\nstorage = \"maf-data\"\nstorage_key_file = \"k\"\n";
        let defaults = MafConfig::from_toml_str(required).unwrap();
        assert_eq!(
            (
                &printed.in_cse_id,
                printed.default_key_lifetime,
                printed.default_client_lifetime,
                printed.max_lifetime,
                printed.sweep_interval,
                printed.handshake_timeout,
                printed.ttp.default_lifetime,
                printed.ttp.max_lifetime,
            ),
            (
                &defaults.in_cse_id,
                defaults.default_key_lifetime,
                defaults.default_client_lifetime,
                defaults.max_lifetime,
                defaults.sweep_interval,
                defaults.handshake_timeout,
                defaults.ttp.default_lifetime,
                defaults.ttp.max_lifetime,
            )
        );
        assert!(printed.km.is_empty() && printed.mef.is_none() && printed.keystore.is_none());
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
                "keystore",
                "key_file",
                "passphrase_env",
                "required_level",
                "handshake_timeout",
                "km",
                "ttp.delegations",
                "mef",
                "pkcs11"
            ]
        );
        for (path, text) in all {
            if path == "km" {
                let e = MafConfig::from_toml_str(&text).unwrap_err();
                assert!(e.contains("the key is not hex"), "{e}");
            }
            let text = text.replace(PLACEHOLDER, &"5a".repeat(32));
            MafConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{path}: {e}\n{text}"));
            assert!(has_path(&text, &path), "{path}");
        }
    }

    const BASE: &str = "fqdn = \"maf.keys.example.net\"\nsp_fqdn = \"m2m.example.com\"\nlisten = \"127.0.0.1:0\"\nstorage = \"maf-data\"\nstorage_key_file = \"maf-storage.key\"\n";

    fn limits(extra: &str) -> Result<m2m_transport::Limits, String> {
        MafConfig::from_toml_str(&format!("{BASE}{extra}"))?.listener_limits()
    }

    #[test]
    fn the_listener_limits_come_from_limits_and_the_earlier_handshake_timeout() {
        assert_eq!(limits("").unwrap(), m2m_transport::Limits::default());
        let l = limits("[limits]\nmax_connections = 7\nmax_handshakes_per_source = 2\n").unwrap();
        assert_eq!((l.max_connections, l.max_handshakes_per_source), (7, 2));
        // The earlier form, in seconds, still sets the handshake timeout.
        assert_eq!(
            limits("handshake_timeout = 3\n")
                .unwrap()
                .handshake_timeout_ms,
            3000
        );
        // Both forms agreeing is fine; disagreeing names both.
        assert_eq!(
            limits("handshake_timeout = 3\n[limits]\nhandshake_timeout_ms = 3000\n")
                .unwrap()
                .handshake_timeout_ms,
            3000
        );
        let e =
            limits("handshake_timeout = 3\n[limits]\nhandshake_timeout_ms = 500\n").unwrap_err();
        assert!(
            e.contains("handshake_timeout") && e.contains("handshake_timeout_ms"),
            "{e}"
        );
        // A limit that would refuse every connection, and an unknown one, are refused.
        let e = limits("[limits]\nmax_connections = 0\n").unwrap_err();
        assert!(e.contains("limits.max_connections"), "{e}");
        let e = limits("handshake_timeout = 0\n").unwrap_err();
        assert!(e.contains("limits.handshake_timeout_ms"), "{e}");
        let e = limits("[limits]\nmax_conections = 5\n").unwrap_err();
        assert!(e.contains("max_conections"), "{e}");
    }
}
