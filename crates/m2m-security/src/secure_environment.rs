//! The Secure Environment (seeds/002 clause 6.4.1): the one place that holds every secret of an entity.
//!
//! "A SE may be implemented as an independent HW Security Element or as an integrated SW function." The
//! code above reads credentials only through the [`SecureEnvironment`] trait, so the back end is chosen by
//! configuration and invisible to it (DESIGN principle 2; the SE plug-in of seeds/002 clause 6.4.2):
//!
//! - [`SoftwareKeystore`]: a file encrypted at rest with AES-256-GCM, keyed from a key file or from a
//!   passphrase through Argon2id. The format is described on the type.
//! - [`PlainPskTable`]: PSK rows given in a configuration file (the door-lock demo); the caller checks that
//!   file with [`check_private_file`].
//! - [`pkcs11::Pkcs11Token`]: a PKCS#11 token (an HSM, a smart card, SoftHSM): private keys generated
//!   and used inside it, PSKs held sensitive and handed to OpenSSL for one handshake at a time.
//!
//! Outside this module secrets travel as [`Secret`] (zeroed on drop, `Debug` shows the length only). No error
//! of this module contains key material, a passphrase or the content of a key file.

use crate::credentials::{KpsaId, PskEntry, Secret};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

pub mod pkcs11;

/// Access to the credentials of one entity (seeds/002 clause 6.4.1).
///
/// Lookups return owned copies whose key material is zeroed when dropped.
pub trait SecureEnvironment: Send + Sync {
    /// The PSK whose KpsaID is `kpsa_id` (the TLS `psk_identity` as received), if any.
    fn psk(&self, kpsa_id: &str) -> Option<PskEntry>;
    /// Every PSK held: entity and KpsaID, never the keys.
    fn psk_entries(&self) -> Vec<(Option<String>, KpsaId)>;
    /// A named secret (MAF/MEF keys, private keys: later issues).
    fn secret(&self, name: &str) -> Option<Secret>;
    /// A human-readable name of this environment, for logs.
    fn name(&self) -> &str;
    /// How well this environment keeps its keys (seeds/002 clause 6.4.1).
    fn security_level(&self) -> SecurityLevel {
        SecurityLevel::Software
    }
    /// A sensitive function (seeds/002 clause 6.3.5.1): HMAC-SHA-256 of `info` under the named
    /// secret, a key derived for one purpose (e.g. the secure storage's encryption key). A token
    /// computes it inside, so the secret never leaves it; None when no such secret is held.
    fn derive_key(&self, name: &str, info: &[u8]) -> Option<Secret> {
        use hmac::Mac;
        let secret = self.secret(name)?;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.expose()).ok()?;
        mac.update(info);
        Some(Secret::from_slice(&mac.finalize().into_bytes()))
    }
}

/// The secure environments of a process, opened once and shared by whoever asks them for keys
/// while handshakes run: a TLS listener's psk table, the PSK clients of the process itself.
pub type SharedEnvironments = std::sync::Arc<[Box<dyn SecureEnvironment>]>;

/// A client PSK the first of `environments` holding `identity` hands out at each handshake (for
/// a token: unwrapped for that handshake, zeroed after), never kept by the TLS context.
pub fn psk_source(environments: &SharedEnvironments, identity: &str) -> crate::tls::PskSource {
    let environments = environments.clone();
    let lookup = identity.to_owned();
    crate::tls::PskSource {
        identity: identity.to_owned(),
        key: std::sync::Arc::new(move || {
            environments
                .iter()
                .find_map(|se| se.psk(&lookup))
                .map(|e| Zeroizing::new(e.key.expose().to_vec()))
        }),
    }
}

/// Whether one of `environments` holds a PSK for the KpsaID `identity`, asked without handing
/// the key out.
pub fn holds_psk(environments: &[Box<dyn SecureEnvironment>], identity: &str) -> bool {
    KpsaId::parse(identity).is_ok_and(|id| {
        environments
            .iter()
            .any(|se| se.psk_entries().iter().any(|(_, k)| *k == id))
    })
}

/// The Security Level of a Secure Environment (seeds/002 clause 6.4.1: "Each Secure Environment
/// shall be associated with one certain Security Level depending on the particular
/// implementation of the SE"), from weakest to strongest; configuration can require a minimum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityLevel {
    /// Keys in files (the encrypted keystore, configuration rows), used in process memory.
    Software,
    /// Keys in a PKCS#11 token implemented in software (e.g. SoftHSM): private keys and
    /// derivation keys never enter this process, but the token's own files hold them.
    Token,
    /// Keys in a PKCS#11 token in a hardware slot (an HSM, a smart card): they never leave it.
    Hardware,
}

impl SecurityLevel {
    /// The name configuration and `m2m keys` use.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityLevel::Software => "software",
            SecurityLevel::Token => "token",
            SecurityLevel::Hardware => "hardware",
        }
    }
}

impl fmt::Display for SecurityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Refuses a file that holds secrets when group or others may read or write it (`mode & 0o077 != 0`).
///
/// The error names the file and the `chmod` to run. On non-Unix systems only existence is checked.
pub fn check_private_file(path: &Path) -> Result<(), String> {
    let md = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !md.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = md.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} holds secrets but is accessible by group or others (mode {mode:04o}); \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
    }
    Ok(())
}

/// Errors of the software keystore. None carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A keystore or key file is open to group or others (see [`check_private_file`]).
    #[error("{0}")]
    Permissions(String),
    /// The file does not start with the keystore header.
    #[error("{}: not a keystore (no M2MKS1 header)", path.display())]
    NotAKeystore { path: PathBuf },
    /// The header names a version or KDF this build does not know, or out-of-range KDF parameters.
    #[error("{}: unsupported keystore: {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
    /// Opened with a key file when it was created with a passphrase, or the reverse.
    #[error("{}: this keystore is protected by {expected}; open it with that", path.display())]
    WrongKeySource {
        path: PathBuf,
        expected: &'static str,
    },
    /// Authentication of the ciphertext failed.
    #[error("{}: keystore cannot be decrypted: wrong key or corrupted file", path.display())]
    Decrypt { path: PathBuf },
    /// The decrypted document is not a keystore document.
    #[error("{}: keystore content is malformed: {detail}", path.display())]
    Malformed { path: PathBuf, detail: String },
    /// A key file does not hold a 32-byte key.
    #[error("key file {}: {detail}", path.display())]
    KeyFile { path: PathBuf, detail: String },
    /// The file to create exists already.
    #[error("{} exists already; refusing to overwrite it", path.display())]
    Exists { path: PathBuf },
    /// A PSK with this KpsaID is already held.
    #[error("a PSK with KpsaID {0} is already in the keystore")]
    DuplicatePsk(String),
    /// An argument was refused (empty passphrase, empty key, bad secret name, KDF parameters).
    #[error("{0}")]
    Invalid(String),
}

/// Where the 32-byte master key of a [`SoftwareKeystore`] comes from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A file of exactly 32 bytes, or of 64 hex digits (white space around them ignored), mode 0600.
    KeyFile(PathBuf),
    /// A passphrase, stretched with Argon2id and the salt stored in the keystore header.
    Passphrase(Secret),
}

/// Argon2id cost parameters (stored in the keystore header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Parallelism.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// The argon2 crate's defaults (OWASP): 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        KdfParams {
            m_cost_kib: argon2::Params::DEFAULT_M_COST,
            t_cost: argon2::Params::DEFAULT_T_COST,
            p_cost: argon2::Params::DEFAULT_P_COST,
        }
    }
}

/// Upper bounds accepted from a header, so a crafted file cannot make `open` allocate without limit.
const MAX_M_COST_KIB: u32 = 1 << 20; // 1 GiB
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 64;

const MAGIC: &[u8; 6] = b"M2MKS1";
const FORMAT_VERSION: u8 = 1;
const KDF_RAW: u8 = 0;
const KDF_ARGON2ID: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// magic 6 + version 1 + kdf 1 + m/t/p 3x4 + salt 16 + nonce 12.
const HEADER_LEN: usize = 6 + 1 + 1 + 12 + SALT_LEN + NONCE_LEN;

#[derive(Clone, Copy)]
enum Kdf {
    Raw,
    Argon2id {
        params: KdfParams,
        salt: [u8; SALT_LEN],
    },
}

/// A software secure environment: PSKs and named secrets in one file, encrypted at rest.
///
/// File layout (all integers big-endian):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 6 | magic `M2MKS1` |
/// | 6 | 1 | format version, 1 |
/// | 7 | 1 | KDF: 0 = raw 32-byte key from a key file, 1 = Argon2id (v0x13) of a passphrase |
/// | 8 | 4 | Argon2 memory cost in KiB (0 for a key file) |
/// | 12 | 4 | Argon2 iterations (0 for a key file) |
/// | 16 | 4 | Argon2 parallelism (0 for a key file) |
/// | 20 | 16 | Argon2 salt (zeros for a key file) |
/// | 36 | 12 | AES-GCM nonce, fresh and random on every write |
/// | 48 | n+16 | AES-256-GCM ciphertext and tag; the associated data is the whole 48-byte header |
///
/// The plaintext is JSON: `{"format":1,"psk":[{"entity_id":..,"kpsa_id":..,"key":"<hex>"}],
/// "secrets":{"<name>":"<hex>"}}`. The file is written atomically (temporary file of mode 0600, fsync,
/// rename) and refused on open when group or others may access it.
pub struct SoftwareKeystore {
    path: PathBuf,
    name: String,
    kdf: Kdf,
    master: Zeroizing<[u8; 32]>,
    psk: Vec<PskEntry>,
    secrets: BTreeMap<String, Secret>,
}

impl SoftwareKeystore {
    /// Creates a new, empty keystore file at `path` (which must not exist), with the default KDF parameters.
    pub fn create(path: impl AsRef<Path>, source: KeySource) -> Result<Self, KeystoreError> {
        Self::create_with_kdf(path, source, KdfParams::default())
    }

    /// As [`create`](Self::create), with chosen Argon2id parameters (used only with a passphrase).
    pub fn create_with_kdf(
        path: impl AsRef<Path>,
        source: KeySource,
        params: KdfParams,
    ) -> Result<Self, KeystoreError> {
        let path = path.as_ref().to_path_buf();
        if path.exists() {
            return Err(KeystoreError::Exists { path });
        }
        let (kdf, master) = match &source {
            KeySource::KeyFile(kf) => (Kdf::Raw, read_key_file(kf)?),
            KeySource::Passphrase(p) => {
                let mut salt = [0u8; SALT_LEN];
                rand::rngs::OsRng.fill_bytes(&mut salt);
                let master = derive_key(p, &salt, params)?;
                (Kdf::Argon2id { params, salt }, master)
            }
        };
        let ks = SoftwareKeystore {
            name: format!("software keystore {}", path.display()),
            path,
            kdf,
            master,
            psk: Vec::new(),
            secrets: BTreeMap::new(),
        };
        ks.save()?;
        Ok(ks)
    }

    /// Opens and decrypts an existing keystore file.
    pub fn open(path: impl AsRef<Path>, source: KeySource) -> Result<Self, KeystoreError> {
        let path = path.as_ref().to_path_buf();
        check_private_file(&path).map_err(KeystoreError::Permissions)?;
        let bytes = fs::read(&path).map_err(|source| KeystoreError::Io {
            path: path.clone(),
            source,
        })?;
        if bytes.len() < HEADER_LEN + TAG_LEN || &bytes[..6] != MAGIC {
            return Err(KeystoreError::NotAKeystore { path });
        }
        let header = &bytes[..HEADER_LEN];
        let unsupported = |what: String| KeystoreError::Unsupported {
            path: path.clone(),
            what,
        };
        if header[6] != FORMAT_VERSION {
            return Err(unsupported(format!("format version {}", header[6])));
        }
        let u32_at =
            |o: usize| u32::from_be_bytes([header[o], header[o + 1], header[o + 2], header[o + 3]]);
        let params = KdfParams {
            m_cost_kib: u32_at(8),
            t_cost: u32_at(12),
            p_cost: u32_at(16),
        };
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&header[20..20 + SALT_LEN]);
        let kdf = match header[7] {
            KDF_RAW => {
                if params
                    != (KdfParams {
                        m_cost_kib: 0,
                        t_cost: 0,
                        p_cost: 0,
                    })
                    || salt != [0; SALT_LEN]
                {
                    return Err(unsupported("KDF parameters given for a raw key".into()));
                }
                Kdf::Raw
            }
            KDF_ARGON2ID => {
                if params.m_cost_kib > MAX_M_COST_KIB
                    || params.t_cost > MAX_T_COST
                    || params.p_cost > MAX_P_COST
                {
                    return Err(unsupported(format!(
                        "Argon2id parameters out of range (m={} KiB, t={}, p={})",
                        params.m_cost_kib, params.t_cost, params.p_cost
                    )));
                }
                if let Err(e) =
                    argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
                {
                    return Err(unsupported(format!("Argon2id parameters: {e}")));
                }
                Kdf::Argon2id { params, salt }
            }
            k => return Err(unsupported(format!("KDF {k}"))),
        };
        let master = match (&kdf, &source) {
            (Kdf::Raw, KeySource::KeyFile(kf)) => read_key_file(kf)?,
            (Kdf::Argon2id { params, salt }, KeySource::Passphrase(p)) => {
                derive_key(p, salt, *params)?
            }
            (Kdf::Raw, KeySource::Passphrase(_)) => {
                return Err(KeystoreError::WrongKeySource {
                    path,
                    expected: "a key file",
                })
            }
            (Kdf::Argon2id { .. }, KeySource::KeyFile(_)) => {
                return Err(KeystoreError::WrongKeySource {
                    path,
                    expected: "a passphrase",
                })
            }
        };
        let cipher = Aes256Gcm::new_from_slice(&master[..]).expect("32-byte key");
        let nonce = Nonce::from_slice(&header[36..36 + NONCE_LEN]);
        let mut buf: Zeroizing<Vec<u8>> = Zeroizing::new(bytes[HEADER_LEN..].to_vec());
        cipher
            .decrypt_in_place(nonce, header, &mut *buf)
            .map_err(|_| KeystoreError::Decrypt { path: path.clone() })?;
        let doc: DocIn = serde_json::from_slice(&buf).map_err(|e| KeystoreError::Malformed {
            path: path.clone(),
            // Only the position: serde's message could quote a value.
            detail: format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        })?;
        if doc.format != 1 {
            return Err(unsupported(format!("document format {}", doc.format)));
        }
        let mut ks = SoftwareKeystore {
            name: format!("software keystore {}", path.display()),
            path,
            kdf,
            master,
            psk: Vec::new(),
            secrets: doc.secrets,
        };
        for e in doc.psk {
            ks.add_psk(e).map_err(|e| KeystoreError::Malformed {
                path: ks.path.clone(),
                detail: e.to_string(),
            })?;
        }
        Ok(ks)
    }

    /// Adds a PSK (in memory; [`save`](Self::save) writes it). Refuses a KpsaID already held or an empty key.
    pub fn add_psk(&mut self, entry: PskEntry) -> Result<(), KeystoreError> {
        if entry.key.is_empty() {
            return Err(KeystoreError::Invalid(format!(
                "the key of {} is empty",
                entry.kpsa_id
            )));
        }
        if let Some(id) = &entry.entity_id {
            check_entity_id(id).map_err(KeystoreError::Invalid)?;
        }
        if self.psk.iter().any(|e| e.kpsa_id == entry.kpsa_id) {
            return Err(KeystoreError::DuplicatePsk(entry.kpsa_id.to_string()));
        }
        self.psk.push(entry);
        Ok(())
    }

    /// Removes the PSK of `kpsa_id`; true when there was one.
    pub fn remove_psk(&mut self, kpsa_id: &KpsaId) -> bool {
        let before = self.psk.len();
        self.psk.retain(|e| e.kpsa_id != *kpsa_id);
        self.psk.len() != before
    }

    /// Sets (adds or replaces) a named secret. Names: letters, digits, `.`, `_`, `-`, `:`, `/`.
    pub fn set_secret(&mut self, name: &str, secret: Secret) -> Result<(), KeystoreError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'))
        {
            return Err(KeystoreError::Invalid(format!(
                "secret name {name:?}: use letters, digits, '.', '_', '-', ':' and '/'"
            )));
        }
        self.secrets.insert(name.to_string(), secret);
        Ok(())
    }

    /// Removes a named secret; true when there was one.
    pub fn remove_secret(&mut self, name: &str) -> bool {
        self.secrets.remove(name).is_some()
    }

    /// The names of the secrets held (not their values).
    pub fn secret_names(&self) -> Vec<String> {
        self.secrets.keys().cloned().collect()
    }

    /// The keystore file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the master key comes from a passphrase, false for a key file.
    pub fn is_passphrase_protected(&self) -> bool {
        matches!(self.kdf, Kdf::Argon2id { .. })
    }

    /// Encrypts and writes the keystore: a fresh random nonce, a temporary file of mode 0600 in the same
    /// directory, fsync, rename over the keystore, fsync of the directory.
    pub fn save(&self) -> Result<(), KeystoreError> {
        let mut header = [0u8; HEADER_LEN];
        header[..6].copy_from_slice(MAGIC);
        header[6] = FORMAT_VERSION;
        if let Kdf::Argon2id { params, salt } = &self.kdf {
            header[7] = KDF_ARGON2ID;
            header[8..12].copy_from_slice(&params.m_cost_kib.to_be_bytes());
            header[12..16].copy_from_slice(&params.t_cost.to_be_bytes());
            header[16..20].copy_from_slice(&params.p_cost.to_be_bytes());
            header[20..36].copy_from_slice(salt);
        } else {
            header[7] = KDF_RAW;
        }
        rand::rngs::OsRng.fill_bytes(&mut header[36..48]);

        let doc = DocOut {
            format: 1,
            psk: self
                .psk
                .iter()
                .map(|e| PskOut {
                    entity_id: e.entity_id.as_deref(),
                    kpsa_id: &e.kpsa_id,
                    key: HexOut(&e.key),
                })
                .collect(),
            secrets: self
                .secrets
                .iter()
                .map(|(k, v)| (k.as_str(), HexOut(v)))
                .collect(),
        };
        let mut w = ZeroizingWriter(Zeroizing::new(Vec::with_capacity(1024)));
        serde_json::to_writer(&mut w, &doc).map_err(|e| KeystoreError::Invalid(e.to_string()))?;
        w.reserve(TAG_LEN);
        let mut buf = w.0;
        let cipher = Aes256Gcm::new_from_slice(&self.master[..]).expect("32-byte key");
        cipher
            .encrypt_in_place(Nonce::from_slice(&header[36..48]), &header, &mut *buf)
            .map_err(|_| KeystoreError::Invalid("encryption failed".into()))?;
        write_atomically(&self.path, &[&header, &buf])
    }
}

impl SecureEnvironment for SoftwareKeystore {
    fn psk(&self, kpsa_id: &str) -> Option<PskEntry> {
        let id = KpsaId::parse(kpsa_id).ok()?;
        self.psk.iter().find(|e| e.kpsa_id == id).cloned()
    }
    fn psk_entries(&self) -> Vec<(Option<String>, KpsaId)> {
        self.psk
            .iter()
            .map(|e| (e.entity_id.clone(), e.kpsa_id.clone()))
            .collect()
    }
    fn secret(&self, name: &str) -> Option<Secret> {
        self.secrets.get(name).cloned()
    }
    fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for SoftwareKeystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kdf = match &self.kdf {
            Kdf::Raw => "key file".to_string(),
            Kdf::Argon2id { params, .. } => format!(
                "argon2id m={}KiB t={} p={}",
                params.m_cost_kib, params.t_cost, params.p_cost
            ),
        };
        f.debug_struct("SoftwareKeystore")
            .field("path", &self.path)
            .field("kdf", &kdf)
            .field("psk", &self.psk_entries())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// PSK rows from configuration, held in memory (the door-lock demo's psk-lookup-table, seeds/000 Table
/// 7.1.2-2). The configuration file holding them must be private: check it with [`check_private_file`]
/// (done by [`from_toml_file`](Self::from_toml_file)).
#[derive(Clone, Debug)]
pub struct PlainPskTable {
    name: String,
    entries: Vec<PskEntry>,
}

#[derive(Deserialize)]
struct PskTableDoc {
    #[serde(default)]
    psk: Vec<PskEntry>,
}

impl PlainPskTable {
    /// A table of the given rows; refuses a repeated KpsaID or an empty key.
    pub fn new(name: impl Into<String>, entries: Vec<PskEntry>) -> Result<Self, String> {
        for (i, e) in entries.iter().enumerate() {
            if e.key.is_empty() {
                return Err(format!("PSK {}: the key is empty", e.kpsa_id));
            }
            if let Some(id) = &e.entity_id {
                check_entity_id(id)?;
            }
            if entries[..i].iter().any(|o| o.kpsa_id == e.kpsa_id) {
                return Err(format!("PSK {} appears twice", e.kpsa_id));
            }
        }
        Ok(PlainPskTable {
            name: name.into(),
            entries,
        })
    }

    /// The `[[psk]]` rows (`entity_id`, `kpsa_id`, `key` in hex) of a TOML text; other keys are ignored, so
    /// an entity's whole configuration may be given. Errors carry a line number, never a value.
    pub fn from_toml_str(name: impl Into<String>, text: &str) -> Result<Self, String> {
        let doc: PskTableDoc = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(l) => format!("line {l}: {}", e.message()),
                None => e.message().to_string(),
            }
        })?;
        PlainPskTable::new(name, doc.psk)
    }

    /// [`from_toml_str`](Self::from_toml_str) of a file, after [`check_private_file`].
    pub fn from_toml_file(path: &Path) -> Result<Self, String> {
        check_private_file(path)?;
        let text = Zeroizing::new(
            fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        PlainPskTable::from_toml_str(format!("PSK table {}", path.display()), &text)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl SecureEnvironment for PlainPskTable {
    fn psk(&self, kpsa_id: &str) -> Option<PskEntry> {
        let id = KpsaId::parse(kpsa_id).ok()?;
        self.entries.iter().find(|e| e.kpsa_id == id).cloned()
    }
    fn psk_entries(&self) -> Vec<(Option<String>, KpsaId)> {
        self.entries
            .iter()
            .map(|e| (e.entity_id.clone(), e.kpsa_id.clone()))
            .collect()
    }
    fn secret(&self, _name: &str) -> Option<Secret> {
        None
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// Checks the three configuration options that name a software keystore together: none, or
/// `keystore` with exactly one of `key_file` and `passphrase_env` (a non-empty variable name).
pub fn check_keystore_options(
    keystore: Option<&Path>,
    key_file: Option<&Path>,
    passphrase_env: Option<&str>,
) -> Result<(), String> {
    match (keystore, key_file, passphrase_env) {
        (None, None, None) => Ok(()),
        (None, _, _) => Err("key_file and passphrase_env need keystore".into()),
        (Some(_), Some(_), Some(_)) => {
            Err("keystore: give exactly one of key_file and passphrase_env, not both".into())
        }
        (Some(_), None, None) => {
            Err("keystore: give exactly one of key_file and passphrase_env".into())
        }
        (Some(_), _, Some("")) => Err("passphrase_env: empty name".into()),
        _ => Ok(()),
    }
}

/// Opens the software keystore the configuration names, if any (options checked with
/// [`check_keystore_options`]). The passphrase is read as bytes (`var_os`), so a non-UTF-8
/// passphrase works; an unset or empty variable is refused. Errors name files and variables,
/// never secrets.
pub fn open_configured_keystore(
    keystore: Option<&Path>,
    key_file: Option<&Path>,
    passphrase_env: Option<&str>,
) -> Result<Option<SoftwareKeystore>, String> {
    check_keystore_options(keystore, key_file, passphrase_env)?;
    let Some(path) = keystore else {
        return Ok(None);
    };
    let source = match (key_file, passphrase_env) {
        (Some(k), _) => KeySource::KeyFile(k.to_path_buf()),
        (None, Some(var)) => KeySource::Passphrase(passphrase_from_env(path, var)?),
        (None, None) => unreachable!("check_keystore_options refuses a keystore without a key"),
    };
    SoftwareKeystore::open(path, source)
        .map(Some)
        .map_err(|e| format!("keystore: {e}"))
}

/// The passphrase of `keystore` from the environment variable `var`, as bytes.
fn passphrase_from_env(keystore: &Path, var: &str) -> Result<Secret, String> {
    let value = std::env::var_os(var).ok_or_else(|| {
        format!(
            "keystore {}: passphrase_env {var} is not set",
            keystore.display()
        )
    })?;
    let value = Zeroizing::new(value.into_encoded_bytes());
    if value.is_empty() {
        return Err(format!(
            "keystore {}: passphrase_env {var} is empty",
            keystore.display()
        ));
    }
    Ok(Secret::from_slice(&value))
}

/// Creates a new key file of 32 random bytes, written as 64 hex digits and a newline, mode 0600. Refuses
/// to overwrite an existing file.
pub fn create_key_file(path: &Path) -> Result<(), KeystoreError> {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut key[..]);
    let mut text = Zeroizing::new(hex::encode(&key[..]));
    text.push('\n');
    write_private(path, text.as_bytes())
}

/// Creates `path` (which must not exist) with mode 0600 from the start, so the secret in `bytes` is
/// never readable by others, not even for a moment, and writes `bytes` into it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    let io_err = |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = private_options().open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            KeystoreError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            io_err(e)
        }
    })?;
    f.write_all(bytes).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    Ok(())
}

/// Replaces `path` (or creates it) atomically with `bytes`: a temporary file of mode 0600 beside
/// it, fsync, rename over `path`, fsync of the directory. A crash leaves the old or the new
/// content, never a mix.
pub fn replace_private(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    write_atomically(path, &[bytes])
}

/// An entity bound to a credential: an AE-ID or CSE-ID, non-empty, printable ASCII without white space.
fn check_entity_id(id: &str) -> Result<(), String> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "entity {id:?} is not an AE-ID or CSE-ID (non-empty, no spaces)"
        ));
    }
    Ok(())
}

fn read_key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    check_private_file(path).map_err(KeystoreError::Permissions)?;
    let bytes = Zeroizing::new(fs::read(path).map_err(|source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    })?);
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() == 32 {
        key.copy_from_slice(&bytes);
        return Ok(key);
    }
    let trimmed = bytes.trim_ascii();
    if trimmed.len() == 64 && hex::decode_to_slice(trimmed, &mut key[..]).is_ok() {
        return Ok(key);
    }
    Err(KeystoreError::KeyFile {
        path: path.to_path_buf(),
        detail: format!(
            "must hold exactly 32 bytes or 64 hex digits, found {} bytes",
            bytes.len()
        ),
    })
}

fn derive_key(
    passphrase: &Secret,
    salt: &[u8; SALT_LEN],
    p: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    if passphrase.is_empty() {
        return Err(KeystoreError::Invalid("the passphrase is empty".into()));
    }
    let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32)).map_err(|e| {
        KeystoreError::Invalid(format!(
            "Argon2id parameters m={} KiB t={} p={}: {e}",
            p.m_cost_kib, p.t_cost, p.p_cost
        ))
    })?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.expose(), salt, &mut key[..])
        .map_err(|e| KeystoreError::Invalid(format!("Argon2id: {e}")))?;
    Ok(key)
}

fn private_options() -> fs::OpenOptions {
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

fn write_atomically(path: &Path, parts: &[&[u8]]) -> Result<(), KeystoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| KeystoreError::Invalid(format!("{} is not a file path", path.display())))?;
    let mut suffix = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        hex::encode(suffix)
    ));
    let result = (|| -> io::Result<()> {
        let mut f = private_options().open(&tmp)?;
        for p in parts {
            f.write_all(p)?;
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        #[cfg(unix)]
        fs::File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        KeystoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// A `Write` into a zeroed-on-drop buffer that never leaves a copy behind when it grows.
struct ZeroizingWriter(Zeroizing<Vec<u8>>);

impl ZeroizingWriter {
    fn reserve(&mut self, more: usize) {
        let need = self.0.len() + more;
        if need > self.0.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(need.max(2 * self.0.capacity())));
            bigger.extend_from_slice(&self.0);
            // The old buffer is zeroed as it drops.
            self.0 = bigger;
        }
    }
}

impl Write for ZeroizingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.reserve(buf.len());
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocIn {
    format: u32,
    #[serde(default)]
    psk: Vec<PskEntry>,
    #[serde(default)]
    secrets: BTreeMap<String, Secret>,
}

#[derive(Serialize)]
struct DocOut<'a> {
    format: u32,
    psk: Vec<PskOut<'a>>,
    secrets: BTreeMap<&'a str, HexOut<'a>>,
}

#[derive(Serialize)]
struct PskOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    entity_id: Option<&'a str>,
    kpsa_id: &'a KpsaId,
    key: HexOut<'a>,
}

/// Serializes a secret as hex straight into the (zeroizing) output, without an intermediate string.
struct HexOut<'a>(&'a Secret);

impl Serialize for HexOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Hex<'b>(&'b [u8]);
        impl fmt::Display for Hex<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
        s.collect_str(&Hex(self.0.expose()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const LOCK1: &str = "AE123456789012-Lock@in.provider.com";
    const LOCK2: &str = "AE123456789015-Lock@in.provider.com";
    const KEY1: &str = "1a2b3c4d5e6f7a8b";
    const KEY2: &str = "12345678abcdefab";

    /// Small Argon2id costs so the tests stay fast in debug builds.
    const FAST: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn entry(entity: Option<&str>, kpsa: &str, key: &str) -> PskEntry {
        PskEntry {
            entity_id: entity.map(str::to_string),
            kpsa_id: KpsaId::parse(kpsa).unwrap(),
            key: Secret::from_hex(key).unwrap(),
        }
    }

    fn door_lock_rows() -> Vec<PskEntry> {
        vec![
            entry(Some("Clock-AE1"), LOCK1, KEY1),
            entry(Some("Cllock-AE2"), LOCK2, KEY2),
        ]
    }

    fn key_file(dir: &Path) -> PathBuf {
        let p = dir.join("master.key");
        create_key_file(&p).unwrap();
        p
    }

    fn pass(s: &str) -> KeySource {
        KeySource::Passphrase(Secret::from_slice(s.as_bytes()))
    }

    fn assert_door_locks(se: &dyn SecureEnvironment) {
        let e = se.psk(LOCK1).unwrap();
        assert_eq!(e.entity_id.as_deref(), Some("Clock-AE1"));
        assert_eq!(e.key.expose(), hex::decode(KEY1).unwrap());
        let e = se.psk(LOCK2).unwrap();
        assert_eq!(e.entity_id.as_deref(), Some("Cllock-AE2"));
        assert_eq!(e.key.expose(), hex::decode(KEY2).unwrap());
        // DNS names compare without case; the relative part exactly.
        assert!(se.psk("AE123456789012-Lock@IN.PROVIDER.COM").is_some());
        assert!(se.psk("ae123456789012-lock@in.provider.com").is_none());
        assert!(se.psk("AE1-Unknown@in.provider.com").is_none());
        assert!(se.psk("not a kpsa id").is_none());
        let ids: Vec<String> = se
            .psk_entries()
            .iter()
            .map(|(_, k)| k.to_string())
            .collect();
        assert_eq!(ids, [LOCK1, LOCK2]);
    }

    #[test]
    fn round_trip_with_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let kf = key_file(dir.path());
        let path = dir.path().join("cse.keystore");
        let mut ks = SoftwareKeystore::create(&path, KeySource::KeyFile(kf.clone())).unwrap();
        assert!(!ks.is_passphrase_protected());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        for e in door_lock_rows() {
            ks.add_psk(e).unwrap();
        }
        ks.set_secret("maf/kpm", Secret::from_hex("00ff00ff").unwrap())
            .unwrap();
        ks.save().unwrap();
        let first = fs::read(&path).unwrap();
        ks.save().unwrap();
        let second = fs::read(&path).unwrap();
        assert_ne!(first[36..48], second[36..48], "a fresh nonce per write");
        assert_eq!(&first[..6], b"M2MKS1");
        let hay = String::from_utf8_lossy(&second);
        assert!(
            !hay.contains(KEY1) && !hay.contains(LOCK1),
            "encrypted at rest"
        );

        let mut ks = SoftwareKeystore::open(&path, KeySource::KeyFile(kf.clone())).unwrap();
        assert_door_locks(&ks);
        assert_eq!(ks.secret("maf/kpm").unwrap().expose(), [0, 255, 0, 255]);
        assert!(ks.secret("nope").is_none());
        assert!(ks.name().contains("cse.keystore"));
        // Duplicates are refused; remove then save then reopen.
        let dup = ks
            .add_psk(entry(None, LOCK1, "aa"))
            .unwrap_err()
            .to_string();
        assert!(dup.contains("already") && !dup.contains("aa"), "{dup}");
        assert!(ks.remove_psk(&KpsaId::parse(LOCK1).unwrap()));
        assert!(!ks.remove_psk(&KpsaId::parse(LOCK1).unwrap()));
        ks.save().unwrap();
        let ks = SoftwareKeystore::open(&path, KeySource::KeyFile(kf)).unwrap();
        assert!(ks.psk(LOCK1).is_none());
        assert!(ks.psk(LOCK2).is_some());
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn round_trip_with_passphrase_and_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ae.keystore");
        let mut ks = SoftwareKeystore::create_with_kdf(&path, pass("correct horse"), FAST).unwrap();
        assert!(ks.is_passphrase_protected());
        for e in door_lock_rows() {
            ks.add_psk(e).unwrap();
        }
        ks.save().unwrap();
        let ks = SoftwareKeystore::open(&path, pass("correct horse")).unwrap();
        assert_door_locks(&ks);
        let e = SoftwareKeystore::open(&path, pass("correct horsf")).unwrap_err();
        assert!(matches!(e, KeystoreError::Decrypt { .. }));
        assert!(e
            .to_string()
            .contains("keystore cannot be decrypted: wrong key or corrupted file"));
        assert!(!e.to_string().contains("horse"));
        let e = SoftwareKeystore::open(&path, pass("")).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        // The wrong kind of key source is named.
        let kf = key_file(dir.path());
        let e = SoftwareKeystore::open(&path, KeySource::KeyFile(kf)).unwrap_err();
        assert!(e.to_string().contains("protected by a passphrase"), "{e}");
        // The default parameters are stored in the header.
        let p2 = dir.path().join("default.keystore");
        SoftwareKeystore::create(&p2, pass("x")).unwrap();
        let b = fs::read(&p2).unwrap();
        assert_eq!(b[7], KDF_ARGON2ID);
        assert_eq!(u32::from_be_bytes(b[8..12].try_into().unwrap()), 19 * 1024);
        SoftwareKeystore::open(&p2, pass("x")).unwrap();
    }

    #[test]
    fn wrong_key_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let kf = key_file(dir.path());
        let path = dir.path().join("k");
        SoftwareKeystore::create(&path, KeySource::KeyFile(kf)).unwrap();
        let other = dir.path().join("other.key");
        fs::write(&other, [7u8; 32]).unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).unwrap();
        let e = SoftwareKeystore::open(&path, KeySource::KeyFile(other.clone())).unwrap_err();
        assert!(matches!(e, KeystoreError::Decrypt { .. }), "{e}");
        let e = SoftwareKeystore::open(&path, pass("x")).unwrap_err();
        assert!(e.to_string().contains("protected by a key file"), "{e}");
        // A malformed key file names the file and the expected content, never the content.
        fs::write(&other, b"secretsecret-not-a-key").unwrap();
        let e = SoftwareKeystore::open(&path, KeySource::KeyFile(other))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("other.key") && e.contains("64 hex digits") && !e.contains("secretsecret"),
            "{e}"
        );
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let kf = key_file(dir.path());
        let path = dir.path().join("ks");
        let mut ks = SoftwareKeystore::create(&path, KeySource::KeyFile(kf.clone())).unwrap();
        ks.add_psk(door_lock_rows().remove(0)).unwrap();
        ks.save().unwrap();
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= bit;
                fs::write(&path, &bad).unwrap();
                let r = SoftwareKeystore::open(&path, KeySource::KeyFile(kf.clone()));
                assert!(r.is_err(), "byte {i} bit {bit:#x} not detected");
            }
        }
        // Truncated and empty files too.
        for len in [0, 5, HEADER_LEN, good.len() - 1] {
            fs::write(&path, &good[..len]).unwrap();
            assert!(SoftwareKeystore::open(&path, KeySource::KeyFile(kf.clone())).is_err());
        }
        // One flipped ciphertext byte in a passphrase keystore gives the decryption error.
        let p2 = dir.path().join("pp");
        SoftwareKeystore::create_with_kdf(&p2, pass("pw"), FAST).unwrap();
        let mut bad = fs::read(&p2).unwrap();
        bad[HEADER_LEN + 3] ^= 0x10;
        fs::write(&p2, &bad).unwrap();
        let e = SoftwareKeystore::open(&p2, pass("pw")).unwrap_err();
        assert!(matches!(e, KeystoreError::Decrypt { .. }), "{e}");
        // Absurd KDF costs in a crafted header are refused before any allocation.
        let mut bad = fs::read(&p2).unwrap();
        bad[8] = 0xff;
        fs::write(&p2, &bad).unwrap();
        let e = SoftwareKeystore::open(&p2, pass("pw")).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn group_or_world_access_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let kf = key_file(dir.path());
        let path = dir.path().join("ks");
        SoftwareKeystore::create(&path, KeySource::KeyFile(kf.clone())).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = SoftwareKeystore::open(&path, KeySource::KeyFile(kf.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("chmod 600 {}", path.display())) && e.contains("0644"),
            "{e}"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&kf, fs::Permissions::from_mode(0o660)).unwrap();
        let e = SoftwareKeystore::open(&path, KeySource::KeyFile(kf.clone()))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("chmod 600 {}", kf.display())), "{e}");
        fs::set_permissions(&kf, fs::Permissions::from_mode(0o400)).unwrap();
        SoftwareKeystore::open(&path, KeySource::KeyFile(kf)).unwrap();
        assert!(check_private_file(dir.path()).is_err());
        assert!(check_private_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn write_private_creates_0600_and_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.pem");
        write_private(&p, b"first").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let e = write_private(&p, b"second").unwrap_err().to_string();
        assert!(e.contains("exists already"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"first");
    }

    #[test]
    fn key_file_forms() {
        let dir = tempfile::tempdir().unwrap();
        let kf = key_file(dir.path());
        let text = fs::read_to_string(&kf).unwrap();
        assert_eq!(text.len(), 65);
        assert!(create_key_file(&kf)
            .unwrap_err()
            .to_string()
            .contains("exists already"));
        assert_eq!(
            fs::metadata(&kf).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let a = read_key_file(&kf).unwrap();
        assert_eq!(hex::encode(&a[..]), text.trim());
        let raw = dir.path().join("raw.key");
        fs::write(&raw, [0x20u8; 32]).unwrap(); // 32 raw bytes, even if they look like spaces
        fs::set_permissions(&raw, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(*read_key_file(&raw).unwrap(), [0x20u8; 32]);
        fs::write(&raw, [1u8; 31]).unwrap();
        assert!(read_key_file(&raw).is_err());
        fs::write(&raw, "zz".repeat(32)).unwrap();
        assert!(read_key_file(&raw).is_err());
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let kf = key_file(dir.path());
        let master_hex = fs::read_to_string(&kf).unwrap().trim().to_string();
        let path = dir.path().join("ks");
        let mut ks = SoftwareKeystore::create(&path, KeySource::KeyFile(kf.clone())).unwrap();
        for e in door_lock_rows() {
            ks.add_psk(e).unwrap();
        }
        ks.set_secret("maf", Secret::from_hex(KEY1).unwrap())
            .unwrap();
        let psk = ks.psk(LOCK1).unwrap();
        let table = PlainPskTable::new("t", door_lock_rows()).unwrap();
        let pp = pass("hunter2hunter2");
        let texts = [
            format!("{ks:?}"),
            format!("{ks:#?}"),
            format!("{psk:?}"),
            format!("{:?}", psk.key),
            format!("{table:?}"),
            format!("{pp:?}"),
            format!("{:?}", KeySource::KeyFile(kf)),
        ];
        let keys = [hex::decode(KEY1).unwrap(), hex::decode(KEY2).unwrap()];
        let master = hex::decode(&master_hex).unwrap();
        for t in &texts {
            for key in keys.iter().chain([&master]) {
                assert!(!crate::credentials::reveals(t, key), "{t}");
            }
            assert!(!t.contains("hunter2"), "{t}");
        }
        assert!(
            texts[0].contains(LOCK1) && texts[0].contains("maf"),
            "{}",
            texts[0]
        );
        assert_eq!(texts[3], "Secret(8 bytes)");
    }

    #[test]
    fn plain_psk_table_from_toml() {
        let toml = format!(
            r#"
            [cse]
            id = "mn-cse-123456"

            [[psk]]
            entity_id = "Clock-AE1"
            kpsa_id = "{LOCK1}"
            key = "{KEY1}"

            [[psk]]
            entity_id = "Cllock-AE2"
            kpsa_id = "{LOCK2}"
            key = "{KEY2}"
            "#
        );
        let t = PlainPskTable::from_toml_str("demo", &toml).unwrap();
        assert_door_locks(&t);
        assert_eq!(t.name(), "demo");
        assert!(t.secret("anything").is_none());

        let bad_key = toml.replace(KEY2, "12345678abcdefaZ");
        let e = PlainPskTable::from_toml_str("demo", &bad_key).unwrap_err();
        assert!(
            e.contains("line 13") && e.contains("not hex") && !e.contains("12345678"),
            "{e}"
        );
        let dup = toml.replace(LOCK2, LOCK1);
        assert!(PlainPskTable::from_toml_str("demo", &dup)
            .unwrap_err()
            .contains("twice"));
        let bad_id = toml.replace(LOCK2, "Lock2");
        assert!(PlainPskTable::from_toml_str("demo", &bad_id)
            .unwrap_err()
            .contains("no '@'"));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mn-cse.toml");
        fs::write(&p, &toml).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let e = PlainPskTable::from_toml_file(&p).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_door_locks(&PlainPskTable::from_toml_file(&p).unwrap());
    }

    #[test]
    fn keystore_options_need_exactly_one_key_source() {
        let (ks, kf) = (Some(Path::new("a.keystore")), Some(Path::new("a.key")));
        let check = check_keystore_options;
        assert!(check(None, None, None).is_ok());
        assert!(check(ks, kf, None).is_ok());
        assert!(check(ks, None, Some("VAR")).is_ok());
        assert!(check(None, kf, None).unwrap_err().contains("need keystore"));
        assert!(check(None, None, Some("VAR"))
            .unwrap_err()
            .contains("need keystore"));
        assert!(check(ks, kf, Some("VAR")).unwrap_err().contains("not both"));
        assert!(check(ks, None, None).unwrap_err().contains("exactly one"));
        assert!(check(ks, None, Some(""))
            .unwrap_err()
            .contains("empty name"));
        assert!(open_configured_keystore(None, None, None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn configured_keystore_opens_with_key_file_or_non_utf8_passphrase() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let kf = key_file(dir.path());
        let by_file = dir.path().join("file.keystore");
        SoftwareKeystore::create(&by_file, KeySource::KeyFile(kf.clone())).unwrap();
        let opened = open_configured_keystore(Some(&by_file), Some(&kf), None).unwrap();
        assert_eq!(opened.unwrap().path(), by_file);

        // A passphrase is bytes: one that is not UTF-8 opens the keystore it created.
        let passphrase: &[u8] = b"p\xe4ssw\xf6rd";
        let by_pass = dir.path().join("pass.keystore");
        let source = KeySource::Passphrase(Secret::from_slice(passphrase));
        SoftwareKeystore::create_with_kdf(&by_pass, source, FAST).unwrap();
        let var = "M2M_SE_TEST_NON_UTF8_PASSPHRASE";
        let unset = open_configured_keystore(Some(&by_pass), None, Some(var)).unwrap_err();
        assert!(unset.contains(&format!("{var} is not set")), "{unset}");
        std::env::set_var(var, std::ffi::OsStr::from_bytes(passphrase));
        let opened = open_configured_keystore(Some(&by_pass), None, Some(var));
        std::env::set_var(var, "");
        let empty = open_configured_keystore(Some(&by_pass), None, Some(var)).unwrap_err();
        std::env::remove_var(var);
        assert!(opened.unwrap().unwrap().is_passphrase_protected());
        assert!(empty.contains("is empty"), "{empty}");
    }

    #[test]
    fn usable_as_a_shared_trait_object() {
        fn share(se: std::sync::Arc<dyn SecureEnvironment>) -> usize {
            std::thread::spawn(move || se.psk_entries().len())
                .join()
                .unwrap()
        }
        assert_eq!(
            share(std::sync::Arc::new(
                PlainPskTable::new("t", door_lock_rows()).unwrap()
            )),
            2
        );
    }
}
