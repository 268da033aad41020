//! A file its readers consult at every use and read again only when it changed: its identity
//! (inode, size, modification time) is compared with the one last read. Writers replace such
//! files by rename, so a reader sees the old content or the new, never half. A file that is
//! missing or does not parse is an error at every use until it is back (the callers fail closed).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The file at `path` and what it parsed to last.
pub struct WatchedFile<T> {
    path: PathBuf,
    loaded: Mutex<(Option<Stamp>, Parsed<T>)>,
}

/// What the file parsed to, or why it did not.
type Parsed<T> = Result<Arc<T>, String>;

/// A file's identity when it was read.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl<T> WatchedFile<T> {
    pub fn new(path: &Path) -> Self {
        WatchedFile {
            path: path.to_path_buf(),
            loaded: Mutex::new((None, Err("not read yet".into()))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The content as the file holds it now: `parse` runs again only when the file changed (or
    /// is missing, so that its return is seen at once).
    pub fn current(
        &self,
        parse: impl FnOnce(&Path) -> Result<T, String>,
    ) -> Result<Arc<T>, String> {
        let stamp = stamp_of(&self.path);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.is_none() || loaded.0 != stamp {
            loaded.1 = parse(&self.path).map(Arc::new);
            loaded.0 = stamp;
        }
        loaded.1.clone()
    }
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        modified: m.modified().ok(),
    })
}
