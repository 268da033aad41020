//! The MEF configuration file (TOML).

use m2m_security::credentials::Secret;
use m2m_security::secure_environment::check_private_file;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The default configuration, printed by `m2m mef --print-default-config`.
pub const DEFAULT_CONFIG: &str = r#"# m2m-mef: M2M Enrolment Function (TS-0003 clause 8.3, remote security provisioning).
# This file holds Kpm keys: it must be mode 0600 (chmod 600 FILE) when it has [[kpm]] rows.

# FQDN of this MEF: the suffix of every KeID (hexBinary(RelativeKeID)@fqdn) and the name in its certificate.
fqdn = "mef.keys.example.net"
# The M2M Service Provider domain, to read CSE-IDs/AE-IDs from target certificates.
sp_fqdn = "m2m.example.com"
listen = "0.0.0.0:8443"

# FQDN certificate of the MEF (`m2m pki issue --kind mef --id mef.keys.example.net`), its key (mode 0600),
# and the root of trust for enrolees and enrolment targets presenting certificates.
certificate = "mef.crt.pem"
private_key = "mef.key.pem"
trusted_ca = "ca.crt.pem"

# Enrolments (Ke, AES-256-GCM encrypted under the storage key) and the storage key file (32 bytes hex,
# mode 0600; created when missing).
storage = "mef-enrolments.json"
storage_key = "mef-storage.key"

# How long an enrolment (Ke and every key derived from it) stays valid, in seconds.
lifetime_seconds = 86400

# Pre-provisioned symmetric enrolee keys (TS-0003 8.3.2.1): TLS-PSK with psk_identity = kpm_id, psk = key.
# [[kpm]]
# enrolee_id = "/id-asn"
# kpm_id = "0123456789ABCDEF0123456789ABCDEF@mef.keys.example.net"
# key = "<64 hex digits>"

# Enrolment targets allowed to fetch credentials, and for which SUIDs (11 = Km for a MAF,
# 12 = Kpsa for a CSE/AE, others = usage-constrained keys).
# [[targets]]
# id = "maf.keys.example.net"
# suids = [11]
# [[targets]]
# id = "/id-in"
# suids = [12]
"#;

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
    #[serde(default = "default_listen")]
    pub listen: String,
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub trusted_ca: Option<PathBuf>,
    pub storage: PathBuf,
    pub storage_key: PathBuf,
    #[serde(default = "default_lifetime")]
    pub lifetime_seconds: u64,
    #[serde(default)]
    pub kpm: Vec<KpmRow>,
    #[serde(default)]
    pub targets: Vec<TargetRow>,
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
        let c: MefConfig = toml::from_str(text).map_err(|e| format!("MEF configuration: {e}"))?;
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
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for p in [&mut c.certificate, &mut c.private_key, &mut c.trusted_ca]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
        fix(&mut c.storage);
        fix(&mut c.storage_key);
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        m2m_security::certificates::check_fqdn(&self.fqdn).map_err(|e| format!("fqdn: {e}"))?;
        if self.lifetime_seconds == 0 {
            return Err("lifetime_seconds must be at least 1".into());
        }
        for k in &self.kpm {
            let Some((rel, fqdn)) = k.kpm_id.split_once('@').filter(|(r, _)| !r.is_empty()) else {
                return Err(format!("kpm_id {:?} is not relative@MEF-FQDN", k.kpm_id));
            };
            let _ = rel;
            if !fqdn.eq_ignore_ascii_case(&self.fqdn) {
                return Err(format!(
                    "kpm_id {:?} names another MEF than {}",
                    k.kpm_id, self.fqdn
                ));
            }
            if k.key.len() < 16 {
                return Err(format!(
                    "kpm {:?}: the key is shorter than 16 bytes",
                    k.kpm_id
                ));
            }
        }
        Ok(())
    }

    /// Whether `target` is configured for `suid`.
    pub fn target_allows(&self, target: &str, suid: u32) -> bool {
        self.targets
            .iter()
            .any(|t| same_id(&t.id, target) && t.suids.contains(&suid))
    }
}

/// Identifiers compare exactly, except FQDNs (containing no '/') which compare case-insensitively.
pub fn same_id(a: &str, b: &str) -> bool {
    if a.contains('/') || b.contains('/') {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}
