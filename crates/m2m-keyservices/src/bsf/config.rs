//! The BSF configuration file (TOML).

use crate::provisioned_keys::resolve_against;
use m2m_security::certificates::{CertIdentity, CseNaming};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The default configuration, printed by `m2m bsf --print-default-config`.
pub const DEFAULT_CONFIG: &str = r##"# m2m bsf: a Bootstrapping Server Function of 3GPP GBA (TS 33.220), `m2m bsf --config FILE`.
# Relative paths are relative to this file's directory. A "# key = value" line or a "# [[rows]]"
# block is an optional example: remove the "# " of its lines to use it.

# The BSF's domain name: the suffix of every B-TID (base64(RAND)@fqdn), the digest realm, and the
# name its certificate carries on Zn.
fqdn = "bsf.operator.example.net"
# The M2M Service Provider domain and its IN-CSE-ID, to read CSE-IDs from NAF certificates
# (a CSE's NAF FQDN is its public domain name "<in>.<sp>" or "<cse>.<in>.<sp>", TS-0001 6.5.1.1).
sp_fqdn = "m2m.example.com"
in_cse_id = "/id-in"
# Ub (the devices' bootstrapping, HTTP Digest AKA, TS 24.109): plain HTTP, as 3GPP runs it; AKA
# authenticates both ends and rspauth protects the answer. Port 0 picks a free port.
ub_listen = "0.0.0.0:8080"
# Zn (NAFs fetch Ks_NAF, TS 33.220 4.5.3): mutual TLS, only for the NAFs below.
zn_listen = "0.0.0.0:8444"
# The BSF's FQDN certificate chain (PEM, leaf first; `m2m pki issue --ca ca --kind mef --id
# bsf.operator.example.net --out bsf` writes bsf.pem and bsf.key) and its key (mode 0600).
certificate = "bsf.pem"
private_key = "bsf.key"
# Root of trust for NAF certificates.
trusted_ca = "ca/ca.pem"
# Its revocation list, read again whenever it changes; leave it out for no status check.
# crl = "ca/crl.pem"
# The subscriber store and the bootstrapped keys (K, OPc and Ks encrypted with AES-256-GCM under
# the storage key): a directory of its own, 0700.
storage = "bsf-data"
# The storage key file (32 bytes hex, mode 0600; created when missing).
storage_key = "bsf-storage.key"
# How long a bootstrapped key Ks (and its B-TID) stays valid, in seconds.
lifetime_seconds = 86400
# How long a device has to answer a challenge, in seconds.
challenge_seconds = 60

# A NAF allowed to fetch NAF-specific keys over Zn: a CSE by its CSE-ID, or an M2M Enrolment
# Function or other service by the FQDN its certificate names. It gets keys for its own FQDN only.
# [[nafs]]
# id = "/id-in"
# [[nafs]]
# id = "mef.keys.example.net"

# The listeners (the transport layer shared with the CSE, the MAF and the MEF); these are the defaults.
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

/// A NAF the BSF serves on Zn.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NafRow {
    /// A CSE-ID (`/id-in`) or an FQDN, as the NAF's certificate names it.
    pub id: String,
}

/// The whole BSF configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BsfConfig {
    pub fqdn: String,
    #[serde(default = "default_sp")]
    pub sp_fqdn: String,
    #[serde(default = "default_in")]
    pub in_cse_id: String,
    #[serde(default = "default_ub")]
    pub ub_listen: String,
    #[serde(default = "default_zn")]
    pub zn_listen: String,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub trusted_ca: PathBuf,
    #[serde(default)]
    pub crl: Option<PathBuf>,
    #[serde(default = "default_storage")]
    pub storage: PathBuf,
    #[serde(default = "default_storage_key")]
    pub storage_key: PathBuf,
    #[serde(default = "default_lifetime")]
    pub lifetime_seconds: u64,
    #[serde(default = "default_challenge")]
    pub challenge_seconds: u64,
    #[serde(default)]
    pub nafs: Vec<NafRow>,
    #[serde(default)]
    pub limits: m2m_transport::Limits,
}

fn default_sp() -> String {
    "m2m.example.com".into()
}
fn default_in() -> String {
    "/id-in".into()
}
fn default_ub() -> String {
    "0.0.0.0:8080".into()
}
fn default_zn() -> String {
    "0.0.0.0:8444".into()
}
fn default_storage() -> PathBuf {
    "bsf-data".into()
}
fn default_storage_key() -> PathBuf {
    "bsf-storage.key".into()
}
fn default_lifetime() -> u64 {
    86_400
}
fn default_challenge() -> u64 {
    60
}

impl BsfConfig {
    /// Parses TOML text; relative paths stay relative (see [`BsfConfig::load`]).
    pub fn from_toml_str(text: &str) -> Result<BsfConfig, String> {
        let c: BsfConfig = toml::from_str(text).map_err(|e| {
            format!(
                "BSF configuration: {}",
                m2m_core::config_text::toml_error(&e, text)
            )
        })?;
        c.check()?;
        Ok(c)
    }

    /// Loads a file; paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<BsfConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut c = Self::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        resolve_against(
            base,
            [
                &mut c.certificate,
                &mut c.private_key,
                &mut c.trusted_ca,
                &mut c.storage,
                &mut c.storage_key,
            ]
            .into_iter()
            .chain(c.crl.as_mut()),
        );
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        m2m_security::certificates::check_fqdn(&self.fqdn).map_err(|e| format!("fqdn: {e}"))?;
        if self.lifetime_seconds == 0 || self.challenge_seconds == 0 {
            return Err("lifetime_seconds and challenge_seconds must be at least 1".into());
        }
        self.limits.check()?;
        let naming = self.naming()?;
        for n in &self.nafs {
            naf_fqdn(&n.id, &naming).map_err(|e| format!("nafs id {:?}: {e}", n.id))?;
        }
        Ok(())
    }

    /// How this SP's certificates name CSEs.
    pub fn naming(&self) -> Result<CseNaming, String> {
        CseNaming::new(&self.sp_fqdn, &self.in_cse_id)
    }

    /// The NAF FQDNs of `nafs` (lower case), checked at load: derived once, at start.
    pub fn naf_fqdns(&self) -> Result<Vec<String>, String> {
        let naming = self.naming()?;
        self.nafs.iter().map(|n| naf_fqdn(&n.id, &naming)).collect()
    }
}

/// The NAF FQDN of a NAF with this certificate identity when it is among `known` (the
/// configuration's [`BsfConfig::naf_fqdns`]); `naming` reads CSE-ID certificates.
pub fn known_naf(identity: &CertIdentity, naming: &CseNaming, known: &[String]) -> Option<String> {
    let fqdn = match identity {
        CertIdentity::Fqdn(f) => f.clone(),
        CertIdentity::Entity(e) => naming.dns_name(e.cse_id()?).ok()?,
    };
    known
        .iter()
        .find(|f| f.eq_ignore_ascii_case(&fqdn))
        .cloned()
}

/// The NAF FQDN of a `nafs` row: a CSE's public domain name, or the FQDN itself (lower case).
fn naf_fqdn(id: &str, naming: &CseNaming) -> Result<String, String> {
    if id.starts_with('/') {
        let cse = m2m_core::CseId::parse(id).map_err(|e| e.dbg)?;
        naming.dns_name(&cse)
    } else {
        m2m_security::certificates::check_fqdn(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_parses_and_its_examples_too() {
        let c = BsfConfig::from_toml_str(DEFAULT_CONFIG).unwrap();
        assert!(c.nafs.is_empty());
        let uncommented = DEFAULT_CONFIG
            .replace("# [[nafs]]", "[[nafs]]")
            .replace("# id = ", "id = ")
            .replace("# crl = ", "crl = ");
        let c = BsfConfig::from_toml_str(&uncommented).unwrap();
        assert_eq!(c.nafs.len(), 2);
        let naming = c.naming().unwrap();
        let known = c.naf_fqdns().unwrap();
        let in_cse = naming.entity(m2m_core::CseId::parse("/id-in").unwrap());
        assert_eq!(
            known_naf(&CertIdentity::Entity(in_cse), &naming, &known).as_deref(),
            Some("id-in.m2m.example.com")
        );
        assert_eq!(
            known_naf(
                &CertIdentity::Fqdn("MEF.keys.example.net".into()),
                &naming,
                &known
            )
            .as_deref(),
            Some("mef.keys.example.net")
        );
        let other = naming.entity(m2m_core::CseId::parse("/id-mn").unwrap());
        assert_eq!(
            known_naf(&CertIdentity::Entity(other), &naming, &known),
            None
        );
        assert!(BsfConfig::from_toml_str(
            &DEFAULT_CONFIG.replace("lifetime_seconds = 86400", "lifetime_seconds = 0")
        )
        .is_err());
    }
}
