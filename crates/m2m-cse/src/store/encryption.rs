//! The resource store encrypted at rest (seeds/001 Annex A: the threat of a CSE's storage being
//! read; seeds/002 clause 6.3.5: keys of the secure environment).
//!
//! Every page of `resources.db` and of its write-ahead log is encrypted by SQLCipher 4
//! (AES-256-CBC, HMAC-SHA512 per page, a random salt per database) under a raw 256-bit key that
//! the secure environment derives from a named secret (`[storage] encryption_secret`): inside a
//! PKCS#11 token (CKM_SHA256_HMAC) or from a keystore secret. Resource names, labels, contents,
//! creators and the index pages are all inside the encrypted pages; the file is a standard
//! SQLCipher 4 database that any SQLCipher 4 reader opens with the same raw key.
//!
//! SQLCipher holds the derived key in process memory while the store is open (it encrypts every
//! page it writes); the secret it is derived from stays in the token.
//!
//! [`prepare`] runs before the store opens: it encrypts a store written in the clear (a CSE
//! that turns encryption on keeps its resources), re-encrypts one under the key of
//! `previous_encryption_secret` (key rotation), writes it back in the clear when only
//! `previous_encryption_secret` is left (encryption turned off), and refuses, with what to do, an
//! encrypted store without a key or with a key that does not open it. Each conversion is a copy to a new file
//! (`sqlcipher_export`) renamed over the old one once synced: a crash leaves the old store or the
//! new one, never half of each.

use m2m_security::credentials::Secret;
use rusqlite::Connection;
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// What the store's key is derived for: the HMAC input.
pub const KEY_INFO: &[u8] = b"oneM2M resource store v1";

/// The first bytes of a database SQLite wrote in the clear; an encrypted one starts with its
/// random salt.
const PLAIN_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The raw key of an encrypted store, as SQLCipher's `PRAGMA key` takes it (`x'<64 hex>'`).
/// Zeroed when dropped; never printed.
pub struct StoreKey(Zeroizing<String>);

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    /// The key from the 32 bytes the secure environment derived.
    pub fn new(derived: &Secret) -> Result<StoreKey, String> {
        let bytes = derived.expose();
        if bytes.len() != 32 {
            return Err(format!(
                "the store key is {} bytes, 32 expected",
                bytes.len()
            ));
        }
        let mut text = Zeroizing::new(String::with_capacity(67));
        text.push_str("x'");
        for b in bytes {
            text.push(char::from(HEX[usize::from(b >> 4)]));
            text.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        text.push('\'');
        Ok(StoreKey(text))
    }

    /// Keys `conn` (before its first read or write). The statement is built in memory that is
    /// zeroed afterwards and handed to SQLite as it is (rusqlite's pragma helpers would format
    /// the key into a String of their own).
    pub fn apply(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut sql = Zeroizing::new(String::with_capacity(80));
        sql.push_str("PRAGMA key = \"");
        sql.push_str(&self.0);
        sql.push_str("\";");
        conn.execute_batch(&sql)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The keys [`prepare`] opens the store with.
#[derive(Debug, Default)]
pub struct Keys<'a> {
    /// The key the store is to be encrypted under (None: in the clear).
    pub current: Option<&'a StoreKey>,
    /// The key it may still be encrypted under (rotation; without `current`: decryption).
    pub previous: Option<&'a StoreKey>,
    /// Whether a store found in the clear is to be encrypted (`m2m store encrypt`, run by the
    /// operator); at start it is refused: someone who can write the storage directory could have
    /// put it there.
    pub adopt_plain: bool,
}

/// What the file on disk is.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// No database yet (missing or empty).
    Nothing,
    Plain,
    Encrypted,
}

fn found(path: &Path) -> anyhow::Result<Found> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    let mut read = 0;
    while read < head.len() {
        match f.read(&mut head[read..])? {
            0 => break,
            n => read += n,
        }
    }
    Ok(match read {
        0 => Found::Nothing,
        _ if &head == PLAIN_HEADER => Found::Plain,
        _ => Found::Encrypted,
    })
}

/// Brings the database at `path` to the encryption `keys.current` asks for (see the module doc).
/// Returns what it did, for the log.
pub fn prepare(path: &Path, keys: &Keys<'_>) -> anyhow::Result<Option<&'static str>> {
    // A copy a crash left behind is never used: the store it was made from is intact.
    remove_staging(path)?;
    match (found(path)?, keys.current) {
        (Found::Nothing, _) | (Found::Plain, None) => Ok(None),
        (Found::Encrypted, None) => match keys.previous {
            Some(old) if opens(path, old)? => {
                convert(path, Some(old), None)?;
                Ok(Some(
                    "the resource store is decrypted: it is kept in the clear from now on",
                ))
            }
            Some(_) => anyhow::bail!(
                "{} cannot be decrypted with the key derived from [storage] \
                 previous_encryption_secret: the secret is not the one it was encrypted under",
                path.display()
            ),
            None => anyhow::bail!(
                "{} is encrypted: set [storage] encryption_secret to the secret it was encrypted \
                 under",
                path.display()
            ),
        },
        (Found::Plain, Some(_)) if !keys.adopt_plain => anyhow::bail!(
            "{} is in the clear while [storage] encryption_secret is set: encrypt it once with \
             `m2m store encrypt --config FILE` (a store found in the clear is not taken at start: \
             it need not be the one this CSE wrote)",
            path.display()
        ),
        (Found::Plain, Some(key)) => {
            convert(path, None, Some(key))?;
            Ok(Some(
                "the resource store, written in the clear, is now encrypted",
            ))
        }
        (Found::Encrypted, Some(key)) => {
            if opens(path, key)? {
                return Ok(None);
            }
            match keys.previous {
                Some(old) if opens(path, old)? => {
                    convert(path, Some(old), Some(key))?;
                    Ok(Some(
                        "the resource store is re-encrypted under the key of \
                         [storage] encryption_secret",
                    ))
                }
                _ => anyhow::bail!(
                    "{} cannot be decrypted with the key derived from [storage] \
                     encryption_secret{}: the secret is not the one it was encrypted under",
                    path.display(),
                    if keys.previous.is_some() {
                        " nor from previous_encryption_secret"
                    } else {
                        ""
                    }
                ),
            }
        }
    }
}

/// Whether `key` opens the encrypted database at `path`.
fn opens(path: &Path, key: &StoreKey) -> anyhow::Result<bool> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    key.apply(&conn)?;
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(true),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Copies the database at `path` (opened with `from`, or in the clear) into a new file encrypted
/// under `to` (or in the clear), then puts it in the old one's place. The caller holds the
/// storage directory's lock ([`super::lock_dir`]): no other process has the database open.
fn convert(path: &Path, from: Option<&StoreKey>, to: Option<&StoreKey>) -> anyhow::Result<()> {
    let staging = staging_path(path);
    // Whatever happens below, no half-made copy stays (one in the clear, when decrypting).
    let _cleanup = Cleanup(path);
    m2m_security::data_files::private_file(&staging).map_err(anyhow::Error::msg)?;
    {
        let conn = Connection::open(path)?;
        if let Some(k) = from {
            k.apply(&conn)?;
        }
        // Everything the log holds goes into the database first: the old log must not outlive
        // it (SQLite would replay it into the new file).
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            anyhow::bail!("{}: another connection holds the database", path.display());
        }
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        // SQLCipher: an attached database without a KEY takes the main one's; an empty key is
        // the clear. Built in zeroed memory and handed to SQLite as it is.
        let mut attach = Zeroizing::new(String::with_capacity(160));
        attach.push_str("ATTACH DATABASE '");
        attach.push_str(&path_text(&staging)?.replace('\'', "''"));
        attach.push_str("' AS staging KEY \"");
        attach.push_str(to.map_or("", |k| k.0.as_str()));
        attach.push_str("\";");
        conn.execute_batch(&attach)?;
        conn.query_row("SELECT sqlcipher_export('staging')", [], |_| Ok(()))?;
        conn.pragma_update(
            Some(rusqlite::DatabaseName::Attached("staging")),
            "user_version",
            version,
        )?;
        conn.execute_batch("DETACH DATABASE staging")?;
    }
    std::fs::File::open(&staging)?.sync_all()?;
    for suffix in ["-wal", "-shm"] {
        remove_if_present(&with_suffix(path, suffix))?;
    }
    std::fs::rename(&staging, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Removes the staging copy and its journal when dropped.
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Err(e) = remove_staging(self.0) {
            tracing::warn!("resource store: {e}");
        }
    }
}

/// Removes what a conversion of `path` left: the copy and its rollback journal.
fn remove_staging(path: &Path) -> anyhow::Result<()> {
    let staging = staging_path(path);
    remove_if_present(&with_suffix(&staging, "-journal"))?;
    remove_if_present(&staging)
}

fn staging_path(path: &Path) -> PathBuf {
    with_suffix(path, ".rekey")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            anyhow::bail!("{}: {e}", path.display())
        }
        _ => Ok(()),
    }
}

fn path_text(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .ok_or_else(|| anyhow::anyhow!("{}: not a UTF-8 path", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys a CSE opens its store with at start (a plain store not adopted).
    fn at_start<'a>(current: Option<&'a StoreKey>, previous: Option<&'a StoreKey>) -> Keys<'a> {
        Keys {
            current,
            previous,
            adopt_plain: false,
        }
    }

    fn key(byte: u8) -> StoreKey {
        StoreKey::new(&Secret::from_slice(&[byte; 32])).unwrap()
    }

    fn write_plain(path: &Path) {
        let c = Connection::open(path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('door-lock-secret');")
            .unwrap();
        c.pragma_update(None, "user_version", 7).unwrap();
    }

    fn read(path: &Path, k: Option<&StoreKey>) -> rusqlite::Result<(String, i64)> {
        let c = Connection::open(path)?;
        if let Some(k) = k {
            k.apply(&c)?;
        }
        let v = c.query_row("SELECT v FROM t", [], |r| r.get(0))?;
        let version = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        Ok((v, version))
    }

    fn bytes_contain(path: &Path, needle: &[u8]) -> bool {
        let b = std::fs::read(path).unwrap();
        b.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_plain_store_is_encrypted_then_rotated_and_a_wrong_key_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("resources.db");
        write_plain(&db);
        let (k1, k2, k3) = (key(1), key(2), key(3));

        // At start a store in the clear is refused, untouched; the operator's command takes it.
        let plain = std::fs::read(&db).unwrap();
        let e = prepare(&db, &at_start(Some(&k1), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("m2m store encrypt"), "{e}");
        assert_eq!(std::fs::read(&db).unwrap(), plain);
        let did = prepare(
            &db,
            &Keys {
                current: Some(&k1),
                previous: None,
                adopt_plain: true,
            },
        )
        .unwrap();
        assert!(did.unwrap().contains("now encrypted"));
        assert!(!bytes_contain(&db, b"door-lock-secret"));
        assert!(!bytes_contain(&db, b"SQLite format 3"));
        assert_eq!(
            read(&db, Some(&k1)).unwrap(),
            ("door-lock-secret".into(), 7)
        );
        assert!(read(&db, None).is_err(), "no key: not a database");
        assert!(!staging_path(&db).exists());

        // Opened again with the same key: nothing to do.
        assert_eq!(prepare(&db, &at_start(Some(&k1), None)).unwrap(), None);

        // Rotation: the old key as previous.
        let did = prepare(&db, &at_start(Some(&k2), Some(&k1))).unwrap();
        assert!(did.unwrap().contains("re-encrypted"));
        assert!(read(&db, Some(&k1)).is_err());
        assert_eq!(read(&db, Some(&k2)).unwrap().0, "door-lock-secret");

        // A key that opens nothing, with or without a previous that does not either: refused,
        // the file left as it was.
        let before = std::fs::read(&db).unwrap();
        for previous in [None, Some(&k1)] {
            let e = prepare(
                &db,
                &Keys {
                    current: Some(&k3),
                    previous,
                    adopt_plain: false,
                },
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("cannot be decrypted"), "{e}");
            assert!(!e.contains("x'"), "no key in the error: {e}");
        }
        let e = prepare(&db, &Keys::default()).unwrap_err().to_string();
        assert!(
            e.contains("is encrypted: set [storage] encryption_secret"),
            "{e}"
        );
        let e = prepare(&db, &at_start(None, Some(&k1)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("previous_encryption_secret"), "{e}");
        assert_eq!(std::fs::read(&db).unwrap(), before);

        // Encryption turned off: only the previous secret left, the store is written in the clear.
        let did = prepare(&db, &at_start(None, Some(&k2))).unwrap();
        assert!(did.unwrap().contains("decrypted"));
        assert!(bytes_contain(&db, b"SQLite format 3"));
        assert_eq!(read(&db, None).unwrap(), ("door-lock-secret".into(), 7));
    }

    /// A copy a crash left half-made is removed, not used; a new store needs no conversion.
    #[test]
    fn a_stale_copy_is_removed_and_a_new_store_needs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("resources.db");
        std::fs::write(staging_path(&db), b"half").unwrap();
        std::fs::write(with_suffix(&staging_path(&db), "-journal"), b"half").unwrap();
        let k = key(9);
        assert_eq!(prepare(&db, &at_start(Some(&k), None)).unwrap(), None);
        assert!(!staging_path(&db).exists());
        assert!(!with_suffix(&staging_path(&db), "-journal").exists());
        std::fs::write(&db, b"").unwrap();
        assert_eq!(prepare(&db, &at_start(Some(&k), None)).unwrap(), None);
    }

    #[test]
    fn the_key_is_never_printed() {
        let k = key(0xab);
        assert_eq!(format!("{k:?}"), "StoreKey(..)");
        assert!(StoreKey::new(&Secret::from_slice(&[1; 16])).is_err());
    }
}
