//! Key material at rest in the MAF, MEF and BSF stores and the CSE's secure storage (TS-0003 clauses 8.3 and 8.8 leave storage to the
//! implementation): AES-256-GCM under the storage key, a fresh random 96-bit nonce per value, and the
//! record the value belongs to as associated data, so a row edited or copied on disk no longer opens.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use m2m_security::credentials::Secret;
use rand::RngCore;
use zeroize::Zeroizing;

/// Bytes of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;

/// The cipher of a 32-byte storage key.
pub fn cipher(storage_key: &Secret) -> Result<Aes256Gcm, String> {
    Aes256Gcm::new_from_slice(storage_key.expose())
        .map_err(|_| "the storage key must be 32 bytes".to_string())
}

/// Encrypts `msg` bound to `aad`; returns the fresh nonce and the ciphertext (with its tag).
pub fn seal(
    cipher: &Aes256Gcm,
    msg: &[u8],
    aad: &[u8],
) -> Result<([u8; NONCE_LEN], Vec<u8>), String> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg, aad })
        .map_err(|_| "storage: encryption failed".to_string())?;
    Ok((nonce, ct))
}

/// Decrypts what [`seal`] produced under the same `aad`; `None` when the nonce is malformed, the
/// record or ciphertext was altered, or the storage key is another (the caller names the record).
pub fn open(cipher: &Aes256Gcm, nonce: &[u8], ct: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if nonce.len() != NONCE_LEN {
        return None;
    }
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

/// Opens (creating) the SQLite database `dir/file` of `service` (for its log lines): the
/// directory 0700, the database and SQLite's `-wal`/`-shm` 0600 ([`m2m_security::data_files`]:
/// created so, tightened when group or others may read, refused when they may write).
pub fn open_private_sqlite(
    dir: &std::path::Path,
    file: &str,
    service: &str,
) -> Result<rusqlite::Connection, String> {
    use m2m_security::data_files;
    let db_path = dir.join(file);
    let mut tightened = vec![data_files::private_dir(dir)?];
    for suffix in ["-wal", "-shm"] {
        let mut p = db_path.clone().into_os_string();
        p.push(suffix);
        tightened.push(data_files::existing_private_file(std::path::Path::new(&p))?);
    }
    tightened.push(data_files::private_file(&db_path)?);
    for t in tightened.into_iter().flatten() {
        tracing::warn!(target: "audit", "{service} storage: {t}");
    }
    rusqlite::Connection::open(&db_path).map_err(|e| format!("storage: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_under_the_same_key_and_associated_data() {
        let c = cipher(&Secret::new(vec![1u8; 32])).unwrap();
        let (nonce, ct) = seal(&c, b"key material", b"record").unwrap();
        assert_eq!(
            &open(&c, &nonce, &ct, b"record").unwrap()[..],
            b"key material"
        );
        assert!(open(&c, &nonce, &ct, b"edited record").is_none());
        assert!(open(&c, &nonce[..11], &ct, b"record").is_none());
        let other = cipher(&Secret::new(vec![2u8; 32])).unwrap();
        assert!(open(&other, &nonce, &ct, b"record").is_none());
        assert!(cipher(&Secret::new(vec![1u8; 16])).is_err());
    }
}
