//! Private data files of the services (the MAF and MEF stores, the CSE's resource database): the
//! storage left to the implementation by TS-0003 clauses 8.3 and 8.8 and TS-0001 clause 9.
//!
//! A missing directory is created 0700, a missing file 0600. An existing one that group or others
//! may only read or traverse is tightened (0700 / 0600) and reported to the caller, who logs it:
//! earlier versions created these paths with the umask's defaults, and taking access away harms no
//! one but an intruder. An existing one that group or others may **write** is refused, never
//! tightened: someone else may have replaced or edited its content, and a shared directory (`/tmp`)
//! is no place for key material. So is a path that is not a directory (a regular file) or that
//! the service cannot chmod (owned by another user). On non-Unix systems only existence is handled.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// An existing path whose permissions were narrowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tightened {
    pub path: PathBuf,
    /// The permission bits found.
    pub from: u32,
    /// The permission bits set.
    pub to: u32,
}

impl fmt::Display for Tightened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} was accessible by group or others (mode {:04o}); set to {:04o}",
            self.path.display(),
            self.from,
            self.to
        )
    }
}

/// Mode of a private directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of a private file.
pub const FILE_MODE: u32 = 0o600;

/// Makes `dir` (and every missing parent) a directory only its owner may enter: created 0700 when
/// missing, tightened when group or others may read or enter it, refused when they may write it.
pub fn private_dir(dir: &Path) -> Result<Option<Tightened>, String> {
    if !dir.exists() {
        create_dir(dir)?;
        return Ok(None);
    }
    let md = fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !md.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    restrict(dir, &md, DIR_MODE, "700")
}

/// Makes `file` a regular file only its owner may read: created empty with mode 0600 when missing,
/// tightened or refused like [`private_dir`] when it exists.
pub fn private_file(file: &Path) -> Result<Option<Tightened>, String> {
    if !file.exists() {
        create_file(file)?;
        return Ok(None);
    }
    existing_private_file(file)
}

/// As [`private_file`] for a file the caller does not create (a database's `-wal`/`-shm`, written
/// by SQLite with the database's mode): nothing when it does not exist.
pub fn existing_private_file(file: &Path) -> Result<Option<Tightened>, String> {
    let md = match fs::metadata(file) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    if !md.is_file() {
        return Err(format!("{} is not a regular file", file.display()));
    }
    restrict(file, &md, FILE_MODE, "600")
}

#[cfg(unix)]
fn create_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))
}

#[cfg(not(unix))]
fn create_dir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn create_file(file: &Path) -> Result<(), String> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(FILE_MODE);
    }
    match opts.open(file) {
        Ok(_) => Ok(()),
        // Created meanwhile by someone else: judged like any existing file.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            existing_private_file(file).map(|_| ())
        }
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

#[cfg(unix)]
fn restrict(
    path: &Path,
    md: &fs::Metadata,
    mode: u32,
    chmod: &str,
) -> Result<Option<Tightened>, String> {
    use std::os::unix::fs::PermissionsExt;
    let found = md.permissions().mode() & 0o7777;
    if found & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {found:04o}): its content cannot be trusted; \
             check it, then run `chmod {chmod} {}`",
            path.display(),
            path.display()
        ));
    }
    if found & 0o077 == 0 {
        return Ok(None);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| {
        format!(
            "{} is accessible by group or others (mode {found:04o}) and could not be restricted \
             ({e}); run `chmod {chmod} {}`",
            path.display(),
            path.display()
        )
    })?;
    Ok(Some(Tightened {
        path: path.to_path_buf(),
        from: found,
        to: mode,
    }))
}

#[cfg(not(unix))]
fn restrict(
    _path: &Path,
    _md: &fs::Metadata,
    _mode: u32,
    _chmod: &str,
) -> Result<Option<Tightened>, String> {
    Ok(None)
}

/// The permission bits of `path` (Unix), for tests and diagnostics.
#[cfg(unix)]
pub fn mode_of(path: &Path) -> std::io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(fs::metadata(path)?.permissions().mode() & 0o7777)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn set(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn missing_paths_are_created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        assert_eq!(private_dir(&dir).unwrap(), None);
        assert_eq!(mode_of(&tmp.path().join("a")).unwrap(), 0o700);
        assert_eq!(mode_of(&dir).unwrap(), 0o700);
        let file = dir.join("db");
        assert_eq!(private_file(&file).unwrap(), None);
        assert_eq!(mode_of(&file).unwrap(), 0o600);
        assert_eq!(fs::metadata(&file).unwrap().len(), 0);
        assert_eq!(existing_private_file(&dir.join("db-wal")).unwrap(), None);
        assert!(!dir.join("db-wal").exists());
    }

    #[test]
    fn readable_paths_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir(&dir).unwrap();
        set(&dir, 0o755);
        let t = private_dir(&dir).unwrap().expect("tightened");
        assert_eq!((t.from, t.to), (0o755, 0o700));
        assert!(t.to_string().contains("mode 0755"), "{t}");
        assert_eq!(mode_of(&dir).unwrap(), 0o700);
        assert_eq!(private_dir(&dir).unwrap(), None, "already private");
        let file = dir.join("db");
        fs::write(&file, b"content").unwrap();
        set(&file, 0o644);
        let t = private_file(&file).unwrap().expect("tightened");
        assert_eq!((t.from, t.to), (0o644, 0o600));
        assert_eq!(mode_of(&file).unwrap(), 0o600);
        assert_eq!(fs::read(&file).unwrap(), b"content", "content kept");
        set(&file, 0o640);
        assert!(existing_private_file(&file).unwrap().is_some());
        assert_eq!(mode_of(&file).unwrap(), 0o600);
    }

    #[test]
    fn writable_paths_and_wrong_kinds_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir(&dir).unwrap();
        for mode in [0o775, 0o757, 0o1777] {
            set(&dir, mode);
            let err = private_dir(&dir).unwrap_err();
            assert!(err.contains("writable by group or others"), "{err}");
            assert!(err.contains("chmod 700"), "{err}");
            assert_eq!(mode_of(&dir).unwrap(), mode, "left as found");
        }
        set(&dir, 0o700);
        let file = dir.join("db");
        fs::write(&file, b"x").unwrap();
        set(&file, 0o664);
        let err = private_file(&file).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        assert_eq!(mode_of(&file).unwrap(), 0o664);
        // A directory where a file belongs, and the reverse.
        assert!(private_file(&dir)
            .unwrap_err()
            .contains("not a regular file"));
        set(&file, 0o600);
        assert!(private_dir(&file).unwrap_err().contains("not a directory"));
    }
}
