//! Enrolments at rest: one JSON file, each Ke sealed with AES-256-GCM under the storage key; the
//! enrolment's metadata (KeID, enrolee, MAF-ID, targets, expiry) is the associated data, so neither can
//! be swapped or edited on disk without the open failing. The file is 0600 in a 0700 directory
//! ([`m2m_security::data_files`]).

use crate::at_rest;
use crate::provisioned_keys::{read_storage_key, WhenMissing};
use aes_gcm::Aes256Gcm;
use m2m_security::credentials::Secret;
use m2m_security::data_files;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An enrolment target named in an enrolment request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    pub id: String,
    pub suid: u32,
}

/// What the MEF knows of one enrolment (Ke included, never printed by `Debug`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrolmentMeta {
    pub ke_id: String,
    pub enrolee_id: String,
    pub indications: Vec<String>,
    pub maf_id: Option<String>,
    pub targets: Vec<TargetRef>,
    /// Seconds since the Unix epoch.
    pub expires: u64,
}

/// Which enrolments a revocation ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// The one enrolment of this KeID.
    KeId(String),
    /// Every enrolment of this enrolee.
    Enrolee(String),
}

/// An enrolment with its Ke.
#[derive(Clone, Debug)]
pub struct Enrolment {
    pub meta: EnrolmentMeta,
    pub ke: Secret,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    meta: EnrolmentMeta,
    nonce: String,
    sealed_ke: String,
}

#[derive(Deserialize, Default)]
struct FileImage {
    enrolments: Vec<Sealed>,
}

/// The file as written: the sealed rows kept in memory, borrowed.
#[derive(Serialize)]
struct FileImageRef<'a> {
    enrolments: Vec<&'a Sealed>,
}

/// One enrolment, open for use and sealed as on disk (sealed once, so that writing the file
/// encrypts nothing but the new row).
struct Row {
    open: Enrolment,
    sealed: Sealed,
}

/// The enrolment store.
pub struct Store {
    path: PathBuf,
    cipher: Aes256Gcm,
    rows: Mutex<BTreeMap<String, Row>>,
}

/// Now, in seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// Opens (or starts) the store at `path` with the key in `key_path` (created when missing).
    /// Expired enrolments are dropped.
    pub fn open(path: &Path, key_path: &Path) -> Result<Store, String> {
        Self::open_with_key(path, &read_storage_key(key_path, WhenMissing::Create)?)
    }

    /// Opens (or starts) the store at `path` with `key` (32 bytes; e.g. from the secure environment).
    pub fn open_with_key(path: &Path, key: &Secret) -> Result<Store, String> {
        let cipher = at_rest::cipher(key)?;
        let store = Store {
            path: path.to_path_buf(),
            cipher,
            rows: Mutex::new(BTreeMap::new()),
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tightened = [
            data_files::private_dir(dir)?,
            data_files::existing_private_file(path)?,
        ];
        for t in tightened.into_iter().flatten() {
            tracing::warn!(target: "audit", "MEF storage: {t}");
        }
        if path.exists() {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let image: FileImage =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let now = now_secs();
            let mut rows = store.rows.lock().expect("store lock");
            for s in image.enrolments {
                if s.meta.expires <= now {
                    continue;
                }
                let ke = store
                    .open_sealed(&s)
                    .map_err(|e| format!("{}: enrolment {}: {e}", path.display(), s.meta.ke_id))?;
                let open = Enrolment {
                    meta: s.meta.clone(),
                    ke,
                };
                rows.insert(s.meta.ke_id.clone(), Row { open, sealed: s });
            }
            drop(rows);
        }
        Ok(store)
    }

    fn seal(&self, e: &Enrolment) -> Result<Sealed, String> {
        let aad = serde_json::to_vec(&e.meta).map_err(|e| e.to_string())?;
        let (nonce, ct) = at_rest::seal(&self.cipher, e.ke.expose(), &aad)?;
        Ok(Sealed {
            meta: e.meta.clone(),
            nonce: hex::encode(nonce),
            sealed_ke: hex::encode(ct),
        })
    }

    fn open_sealed(&self, s: &Sealed) -> Result<Secret, String> {
        let aad = serde_json::to_vec(&s.meta).map_err(|e| e.to_string())?;
        let nonce = hex::decode(&s.nonce).map_err(|_| "bad nonce".to_string())?;
        let ct = hex::decode(&s.sealed_ke).map_err(|_| "bad sealed key".to_string())?;
        let pt = at_rest::open(&self.cipher, &nonce, &ct, &aad)
            .ok_or("the sealed Ke does not open (wrong storage key or edited file)")?;
        Ok(Secret::from_slice(&pt))
    }

    /// Adds (or replaces) an enrolment and writes the file; only the new enrolment is sealed.
    pub fn insert(&self, e: Enrolment) -> Result<(), String> {
        let sealed = self.seal(&e)?;
        let mut rows = self.rows.lock().expect("store lock");
        let now = now_secs();
        rows.retain(|_, r| r.open.meta.expires > now);
        rows.insert(e.meta.ke_id.clone(), Row { open: e, sealed });
        self.save(&rows)
    }

    /// Revokes enrolments (the MEF's administrator): every one that `revoked` selects is removed,
    /// Ke with it, and the file written. Returns the KeIDs revoked, none when nothing matched.
    pub fn revoke(&self, revoked: &Revocation) -> Result<Vec<String>, String> {
        let mut rows = self.rows.lock().expect("store lock");
        let gone: Vec<String> = rows
            .values()
            .filter(|r| match revoked {
                Revocation::KeId(id) => r.open.meta.ke_id == *id,
                Revocation::Enrolee(e) => r.open.meta.enrolee_id == *e,
            })
            .map(|r| r.open.meta.ke_id.clone())
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        for id in &gone {
            rows.remove(id);
        }
        self.save(&rows)?;
        Ok(gone)
    }

    /// The enrolment with this KeID, unless unknown or expired.
    pub fn get(&self, ke_id: &str) -> Option<Enrolment> {
        let rows = self.rows.lock().expect("store lock");
        rows.get(ke_id)
            .map(|r| &r.open)
            .filter(|e| e.meta.expires > now_secs())
            .cloned()
    }

    fn save(&self, rows: &BTreeMap<String, Row>) -> Result<(), String> {
        let image = FileImageRef {
            enrolments: rows.values().map(|r| &r.sealed).collect(),
        };
        let text = serde_json::to_vec_pretty(&image).map_err(|e| e.to_string())?;
        let tmp = self.path.with_extension("tmp");
        let err = |e: std::io::Error| format!("{}: {e}", tmp.display());
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(err)?;
        // The mode above applies only to a file it creates: a leftover temporary file keeps its own.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(err)?;
        }
        f.write_all(&text).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrolment(ke_id: &str, expires: u64) -> Enrolment {
        Enrolment {
            meta: EnrolmentMeta {
                ke_id: ke_id.into(),
                enrolee_id: "/id-asn".into(),
                indications: vec!["MAF".into()],
                maf_id: Some("maf.keys.example.net".into()),
                targets: vec![TargetRef {
                    id: "/id-in".into(),
                    suid: 12,
                }],
                expires,
            },
            ke: Secret::from_slice(&[7u8; 32]),
        }
    }

    #[test]
    fn round_trip_expiry_and_tamper_detection() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = (dir.path().join("s.json"), dir.path().join("s.key"));
        let store = Store::open(&path, &key).unwrap();
        store.insert(enrolment("A@mef", now_secs() + 100)).unwrap();
        store.insert(enrolment("B@mef", now_secs() - 1)).unwrap();
        assert!(store.get("B@mef").is_none());
        let again = Store::open(&path, &key).unwrap();
        let a = again.get("A@mef").unwrap();
        assert_eq!(a.ke, Secret::from_slice(&[7u8; 32]));
        assert_eq!(a.meta.targets[0].id, "/id-in");
        assert!(again.get("B@mef").is_none());
        // Widening the targets on disk breaks the seal.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("/id-in", "/id-xx")).unwrap();
        let err = Store::open(&path, &key).err().unwrap();
        assert!(err.contains("does not open"), "{err}");
    }

    /// The enrolment file is 0600 in a 0700 directory: created so, tightened when left readable
    /// (also through a leftover temporary file), refused when writable by others.
    #[cfg(unix)]
    #[test]
    fn the_enrolment_file_is_private() {
        use m2m_security::data_files::mode_of;
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mef-data");
        let (path, key) = (dir.join("enrolments.json"), tmp.path().join("s.key"));
        let store = Store::open(&path, &key).unwrap();
        assert_eq!(mode_of(&dir).unwrap(), 0o700);
        store.insert(enrolment("A@mef", now_secs() + 100)).unwrap();
        assert_eq!(mode_of(&path).unwrap(), 0o600);
        // A temporary file left readable by a crash: the rewritten file is private all the same.
        let leftover = path.with_extension("tmp");
        std::fs::write(&leftover, b"{}").unwrap();
        set(&leftover, 0o644);
        store.insert(enrolment("B@mef", now_secs() + 100)).unwrap();
        assert_eq!(mode_of(&path).unwrap(), 0o600);
        drop(store);
        set(&dir, 0o755);
        set(&path, 0o644);
        let again = Store::open(&path, &key).unwrap();
        assert!(again.get("B@mef").is_some());
        assert_eq!(mode_of(&dir).unwrap(), 0o700);
        assert_eq!(mode_of(&path).unwrap(), 0o600);
        set(&path, 0o660);
        let err = Store::open(&path, &key).err().unwrap();
        assert!(err.contains("writable by group or others"), "{err}");
    }
}
