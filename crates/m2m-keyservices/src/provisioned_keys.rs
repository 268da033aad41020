//! The keys a key service starts with (TS-0003 clauses 8.3.2.1 and 8.8.1): pre-provisioned PSKs (Km at
//! the MAF, Kpm at the MEF) from the configuration and the secure environment, and the storage key of
//! [`crate::at_rest`].

use m2m_security::credentials::Secret;
use m2m_security::secure_environment::{
    check_keystore_options, check_private_file, create_key_file, open_configured_keystore,
    SecureEnvironment, SoftwareKeystore,
};
use std::path::{Path, PathBuf};

/// The shortest pre-provisioned PSK (Km at the MAF, Kpm at the MEF) a key service accepts, in bytes:
/// 128 bits, the strength of the TLS-PSK suites of the oneM2M profiles.
pub(crate) const MIN_PSK_LEN: usize = 16;

/// Bytes of a storage key (AES-256-GCM).
const STORAGE_KEY_LEN: usize = 32;

/// Refuses a pre-provisioned PSK shorter than [`MIN_PSK_LEN`]; `what` names the key (`km ID`).
pub(crate) fn check_psk_len(what: &str, key: &Secret) -> Result<(), String> {
    if key.len() < MIN_PSK_LEN {
        return Err(format!(
            "{what}: the key is shorter than {MIN_PSK_LEN} bytes"
        ));
    }
    Ok(())
}

/// Makes every relative path in `paths` relative to `base` (the configuration file's directory);
/// a key named by its `pkcs11:` URI is no path and stays as it is.
pub(crate) fn resolve_against<'a>(base: &Path, paths: impl IntoIterator<Item = &'a mut PathBuf>) {
    for p in paths {
        if p.is_relative() && !m2m_security::secure_environment::pkcs11::is_key_uri(p) {
            *p = base.join(&*p);
        }
    }
}

/// What a storage key reader does when the key file does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WhenMissing {
    /// An error: the operator must provide the key (MAF).
    Refuse,
    /// Create a fresh random key file, mode 0600 (MEF).
    Create,
}

/// Reads a 32-byte hex storage key from a private (0600) file.
pub(crate) fn read_storage_key(path: &Path, missing: WhenMissing) -> Result<Secret, String> {
    if missing == WhenMissing::Create && !path.exists() {
        create_key_file(path).map_err(|e| e.to_string())?;
        tracing::info!(target: "audit", file = %path.display(), "created storage key file");
    }
    check_private_file(path)?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let key = Secret::from_hex(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if key.len() != STORAGE_KEY_LEN {
        return Err(format!(
            "{}: the storage key must be 32 bytes (64 hex digits)",
            path.display()
        ));
    }
    Ok(key)
}

/// A pre-provisioned PSK row of a key service's configuration: a Km row at the MAF, a Kpm row at the
/// MEF. Keystore PSK entries become rows too (psk_identity = the key ID, entity_id = the holder).
pub(crate) trait PskRow: Clone {
    /// The key's name in messages: `Km`, `Kpm`.
    const KIND: &'static str;
    /// What a keystore entry's entity_id must hold, for the error when it has none.
    const ENTITY: &'static str;
    /// The key ID, the TLS psk_identity.
    fn psk_id(&self) -> &str;
    /// The row of a keystore PSK entry.
    fn from_keystore(entity_id: String, psk_id: String, key: Secret) -> Self;
}

/// Where a key service's keys come from: the keystore and storage-key options of its configuration
/// (the same fields in the MAF and MEF files; serde cannot flatten them under deny_unknown_fields).
pub(crate) struct KeySources<'a> {
    pub service: &'static str,
    pub keystore: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
    pub passphrase_env: Option<&'a str>,
    pub storage_key_file: Option<&'a Path>,
    /// The name of the storage key file option (`storage_key_file`, `storage_key`).
    pub storage_key_option: &'static str,
    /// The keystore secret that may hold the storage key instead of the file.
    pub storage_key_secret: &'static str,
}

/// Opens the key service's PKCS#11 token, if configured, refusing one below `required`.
pub(crate) fn open_token(
    cfg: Option<&m2m_security::secure_environment::pkcs11::TokenConfig>,
    required: Option<m2m_security::secure_environment::SecurityLevel>,
) -> Result<Option<std::sync::Arc<m2m_security::secure_environment::pkcs11::Pkcs11Token>>, String> {
    let Some(cfg) = cfg else {
        return Ok(None);
    };
    let token = m2m_security::secure_environment::pkcs11::Pkcs11Token::open(cfg)
        .map_err(|e| format!("pkcs11: {e}"))?;
    if let Some(required) = required.filter(|r| token.security_level() < *r) {
        return Err(format!(
            "required_level is {required}: the token {} is at level {}",
            cfg.token,
            token.security_level()
        ));
    }
    Ok(Some(std::sync::Arc::new(token)))
}

/// The storage key a token derives from its secret `secret` (HMAC-SHA-256 inside the token).
pub(crate) fn token_storage_key(
    token: &m2m_security::secure_environment::pkcs11::Pkcs11Token,
    secret: &str,
) -> Result<Secret, String> {
    token
        .derive_key(secret, format!("oneM2M {secret} v1").as_bytes())
        .ok_or_else(|| {
            format!(
                "pkcs11: the token holds no secret {secret} (m2m keys token ... generate-secret --name {secret})"
            )
        })
}

/// The keys loaded from [`KeySources`]: every PSK row, and the storage key when the keystore holds
/// it (`None`: it is in the storage key file).
pub(crate) struct LoadedKeys<R> {
    pub rows: Vec<R>,
    pub held_storage_key: Option<Secret>,
}

impl KeySources<'_> {
    /// Checks the options without opening anything: a valid keystore triple and a storage key source.
    pub(crate) fn check(&self) -> Result<(), String> {
        check_keystore_options(self.keystore, self.key_file, self.passphrase_env)?;
        if self.storage_key_file.is_none() && self.keystore.is_none() {
            return Err(format!(
                "no storage key: set {}, or keystore holding the secret {}",
                self.storage_key_option, self.storage_key_secret
            ));
        }
        Ok(())
    }

    /// Opens the keystore (if configured) and collects `rows`, then the keystore's PSK entries whose
    /// key ID no row has (each checked by `check_rows`), and the storage key if the keystore holds it.
    pub(crate) fn load<R: PskRow>(
        &self,
        rows: &[R],
        check_rows: impl Fn(&[R]) -> Result<(), String>,
    ) -> Result<LoadedKeys<R>, String> {
        let ks = open_configured_keystore(self.keystore, self.key_file, self.passphrase_env)?;
        let held_storage_key = self.held_storage_key(ks.as_ref())?;
        let mut rows = rows.to_vec();
        if let Some(ks) = &ks {
            let extra = keystore_rows(ks, &rows)?;
            check_rows(&extra).map_err(|e| format!("keystore {}: {e}", ks.path().display()))?;
            tracing::info!(
                target: "audit",
                keystore = %ks.path().display(),
                kind = R::KIND,
                config_rows = rows.len(),
                keystore_rows = extra.len(),
                storage_key = if self.storage_key_file.is_some() { "file" } else { "keystore" },
                "{} keys loaded", self.service
            );
            rows.extend(extra);
        }
        Ok(LoadedKeys {
            rows,
            held_storage_key,
        })
    }

    /// The storage key held by the keystore, from exactly one of the file and the keystore secret:
    /// `None` when the file is the source.
    fn held_storage_key(&self, ks: Option<&SoftwareKeystore>) -> Result<Option<Secret>, String> {
        let (option, secret) = (self.storage_key_option, self.storage_key_secret);
        let ks_path = || {
            ks.map(|k| k.path().display().to_string())
                .unwrap_or_default()
        };
        match (self.storage_key_file, ks.and_then(|k| k.secret(secret))) {
            (Some(p), Some(_)) => Err(format!(
                "two storage keys: {option} = {} and the secret {secret} of keystore {}; keep exactly one",
                p.display(),
                ks_path()
            )),
            (None, Some(key)) if key.len() != STORAGE_KEY_LEN => Err(format!(
                "keystore {}: the secret {secret} must be 32 bytes",
                ks_path()
            )),
            (None, Some(key)) => Ok(Some(key)),
            (Some(_), None) => Ok(None),
            (None, None) => Err(match ks {
                Some(k) => format!(
                    "no storage key: set {option}, or store the secret {secret} in keystore {}",
                    k.path().display()
                ),
                None => format!("no storage key: set {option} (or keystore with the secret {secret})"),
            }),
        }
    }
}

/// The keystore's PSK entries whose key ID none of `rows` has; an entry without entity_id is refused.
fn keystore_rows<R: PskRow>(ks: &SoftwareKeystore, rows: &[R]) -> Result<Vec<R>, String> {
    let mut extra = Vec::new();
    for (_, id) in ks.psk_entries() {
        let id = id.to_string();
        if rows.iter().any(|r| r.psk_id() == id) {
            continue;
        }
        let Some(entry) = ks.psk(&id) else { continue };
        let entity_id = entry.entity_id.clone().ok_or_else(|| {
            format!(
                "keystore {}: {} {id} has no entity_id ({}: `m2m keys add-psk --entity`)",
                ks.path().display(),
                R::KIND,
                R::ENTITY
            )
        })?;
        extra.push(R::from_keystore(entity_id, id, entry.key.clone()));
    }
    Ok(extra)
}
