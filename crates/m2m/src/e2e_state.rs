//! The replay state of `m2m e2e open-data` and `open-credential` (`--state FILE`; freshness rules of
//! `m2m_security::e2e::freshness`, a project decision): the newest ESData creation time opened per
//! container and creator, and the newest group credential version opened per member and group.
//!
//! One JSON file, `{"format": 1, "esdata": {CONTAINER: {CREATOR: MICROS}}, "group_credentials":
//! {MEMBER: {GID: VERSION}}}`, mode 0600 (refused when group or others may access it: whoever can
//! write it can reset it), created when missing, replaced atomically. `FILE.lock` beside it is held
//! (an exclusive lock) from reading to saving, so two commands sharing the file cannot both accept
//! the same object.

use anyhow::{bail, Context};
use m2m_security::secure_environment::{check_private_file, replace_private};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

const FORMAT: u8 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    format: u8,
    #[serde(default)]
    esdata: BTreeMap<String, BTreeMap<String, i64>>,
    #[serde(default)]
    group_credentials: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The state file, loaded and locked until dropped.
pub struct ReplayState {
    path: PathBuf,
    doc: Doc,
    /// Held for the lock it carries.
    _lock: File,
}

impl ReplayState {
    /// Locks and loads `path` (an empty state when it does not exist yet).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let name = path
            .file_name()
            .with_context(|| format!("--state {}: not a file path", path.display()))?;
        let lock_path = path.with_file_name(format!("{}.lock", name.to_string_lossy()));
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let lock = options
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
        let doc = match std::fs::read(path) {
            Ok(bytes) => {
                check_private_file(path).map_err(|e| anyhow::anyhow!(e))?;
                let doc: Doc = serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is not a state file of m2m e2e", path.display())
                })?;
                if doc.format != FORMAT {
                    bail!(
                        "{}: state format {} is not {FORMAT}",
                        path.display(),
                        doc.format
                    );
                }
                doc
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Doc {
                format: FORMAT,
                ..Doc::default()
            },
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Self {
            path: path.to_owned(),
            doc,
            _lock: lock,
        })
    }

    /// The newest creation time (microseconds) opened from `creator` in `container`.
    pub fn newest_data(&self, container: &str, creator: &str) -> Option<i64> {
        self.doc.esdata.get(container)?.get(creator).copied()
    }

    pub fn record_data(&mut self, container: &str, creator: &str, created: i64) {
        self.doc
            .esdata
            .entry(container.to_owned())
            .or_default()
            .insert(creator.to_owned(), created);
    }

    /// The newest credential version `member` opened for `group`.
    pub fn newest_credential(&self, member: &str, group: &str) -> Option<u64> {
        self.doc.group_credentials.get(member)?.get(group).copied()
    }

    pub fn record_credential(&mut self, member: &str, group: &str, version: u64) {
        self.doc
            .group_credentials
            .entry(member.to_owned())
            .or_default()
            .insert(group.to_owned(), version);
    }

    /// Writes the state back (atomically, mode 0600).
    pub fn save(&self) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(&self.doc).context("state")?;
        replace_private(&self.path, &text)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_save_and_scopes_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        {
            let mut s = ReplayState::open(&path).unwrap();
            assert_eq!(s.newest_data("/c", "Cw"), None);
            s.record_data("/c", "Cw", 10);
            s.record_credential("/id-mn/Clock1", "/id-mn/g", 7);
            s.save().unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let s = ReplayState::open(&path).unwrap();
        assert_eq!(s.newest_data("/c", "Cw"), Some(10));
        assert_eq!(s.newest_data("/c", "Cother"), None);
        assert_eq!(s.newest_data("/d", "Cw"), None);
        assert_eq!(s.newest_credential("/id-mn/Clock1", "/id-mn/g"), Some(7));
        assert_eq!(s.newest_credential("/id-mn/Clock2", "/id-mn/g"), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_state_file_others_may_write_or_garbage_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, br#"{"format":1}"#).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = ReplayState::open(&path).err().unwrap().to_string();
        assert!(e.contains("accessible by group or others"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(ReplayState::open(&path).is_ok());
        std::fs::write(&path, b"[1,2]").unwrap();
        let e = ReplayState::open(&path).err().unwrap().to_string();
        assert!(e.contains("not a state file"), "{e}");
        std::fs::write(&path, br#"{"format":2}"#).unwrap();
        assert!(ReplayState::open(&path).is_err());
    }

    #[test]
    fn a_second_opener_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let first = ReplayState::open(&path).unwrap();
        let lock = File::open(dir.path().join("state.json.lock")).unwrap();
        assert!(
            matches!(lock.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            "the state is locked while open"
        );
        drop(first);
        assert!(lock.try_lock().is_ok());
    }
}
