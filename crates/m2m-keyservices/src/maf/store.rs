//! SQLite storage of client and key registrations.
//!
//! Key values at rest are encrypted with AES-256-GCM under the storage key of the configuration
//! (`storage_key_file`): a fresh random 96-bit nonce per value, and the relative key ID as associated data,
//! so a ciphertext copied to another row does not decrypt. Everything else (IDs, SUID, targets, expiry) is
//! stored in clear. Times are Unix seconds.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use m2m_security::credentials::Secret;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// A client registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReg {
    pub reg_id: String,
    pub client_id: String,
    pub admin_fqdn: Option<String>,
    pub expires: i64,
}

/// A key registration (the key value decrypted only on retrieval).
#[derive(Debug, Clone)]
pub struct KeyReg {
    pub relative_id: String,
    pub source_id: String,
    pub suid: u32,
    pub targets: Vec<String>,
    pub admin_fqdn: Option<String>,
    pub expires: i64,
}

pub struct Store {
    conn: Connection,
    cipher: Aes256Gcm,
}

fn db(e: rusqlite::Error) -> String {
    format!("storage: {e}")
}

impl Store {
    /// Opens (creating) `dir/maf.sqlite`.
    pub fn open(dir: &Path, storage_key: &Secret) -> Result<Store, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conn = Connection::open(dir.join("maf.sqlite")).map_err(db)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS clients (
                reg_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, admin_fqdn TEXT, expires INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS keys (
                relative_id TEXT PRIMARY KEY, source_id TEXT NOT NULL, suid INTEGER NOT NULL,
                targets TEXT NOT NULL, admin_fqdn TEXT, expires INTEGER NOT NULL,
                nonce BLOB NOT NULL, value BLOB NOT NULL);",
        )
        .map_err(db)?;
        let cipher = Aes256Gcm::new_from_slice(storage_key.expose())
            .map_err(|_| "the storage key must be 32 bytes".to_string())?;
        Ok(Store { conn, cipher })
    }

    /// Deletes every registration expired at `now`; returns (clients, keys) removed.
    pub fn purge(&self, now: i64) -> Result<(usize, usize), String> {
        let c = self
            .conn
            .execute("DELETE FROM clients WHERE expires <= ?1", [now])
            .map_err(db)?;
        let k = self
            .conn
            .execute("DELETE FROM keys WHERE expires <= ?1", [now])
            .map_err(db)?;
        Ok((c, k))
    }

    pub fn add_client(&self, reg: &ClientReg) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO clients (reg_id, client_id, admin_fqdn, expires) VALUES (?1, ?2, ?3, ?4)",
                params![reg.reg_id, reg.client_id, reg.admin_fqdn, reg.expires],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Client Registration Update: the new expiry (and adminFQDN) of an existing registration.
    pub fn update_client(&self, reg: &ClientReg) -> Result<bool, String> {
        Ok(self
            .conn
            .execute(
                "UPDATE clients SET admin_fqdn = ?2, expires = ?3 WHERE reg_id = ?1",
                params![reg.reg_id, reg.admin_fqdn, reg.expires],
            )
            .map_err(db)?
            > 0)
    }

    pub fn client(&self, reg_id: &str) -> Result<Option<ClientReg>, String> {
        self.conn
            .query_row(
                "SELECT reg_id, client_id, admin_fqdn, expires FROM clients WHERE reg_id = ?1",
                [reg_id],
                |r| {
                    Ok(ClientReg {
                        reg_id: r.get(0)?,
                        client_id: r.get(1)?,
                        admin_fqdn: r.get(2)?,
                        expires: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(db)
    }

    /// Whether `client_id` holds a client registration valid at `now`.
    pub fn is_registered(&self, client_id: &str, now: i64) -> Result<bool, String> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM clients WHERE client_id = ?1 AND expires > ?2",
                params![client_id, now],
                |r| r.get(0),
            )
            .map_err(db)?;
        Ok(n > 0)
    }

    pub fn delete_client(&self, reg_id: &str) -> Result<bool, String> {
        Ok(self
            .conn
            .execute("DELETE FROM clients WHERE reg_id = ?1", [reg_id])
            .map_err(db)?
            > 0)
    }

    /// Stores a key registration with its value encrypted. `Ok(false)`: the relative ID is taken.
    pub fn add_key(&self, reg: &KeyReg, value: &Secret) -> Result<bool, String> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.expose(),
                    aad: reg.relative_id.as_bytes(),
                },
            )
            .map_err(|_| "storage: encryption failed".to_string())?;
        let targets = serde_json::to_string(&reg.targets).map_err(|e| e.to_string())?;
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO keys (relative_id, source_id, suid, targets, admin_fqdn, expires, nonce, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    reg.relative_id,
                    reg.source_id,
                    reg.suid,
                    targets,
                    reg.admin_fqdn,
                    reg.expires,
                    &nonce[..],
                    ct
                ],
            )
            .map_err(db)?;
        Ok(n == 1)
    }

    /// The registration of `relative_id`, without its value.
    pub fn key(&self, relative_id: &str) -> Result<Option<KeyReg>, String> {
        let row = self
            .conn
            .query_row(
                "SELECT relative_id, source_id, suid, targets, admin_fqdn, expires FROM keys WHERE relative_id = ?1",
                [relative_id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        let Some((relative_id, source_id, suid, targets, admin_fqdn, expires)) = row else {
            return Ok(None);
        };
        let targets: Vec<String> =
            serde_json::from_str(&targets).map_err(|e| format!("storage: targets: {e}"))?;
        Ok(Some(KeyReg {
            relative_id,
            source_id,
            suid,
            targets,
            admin_fqdn,
            expires,
        }))
    }

    /// Decrypts the value of `relative_id`.
    pub fn key_value(&self, relative_id: &str) -> Result<Option<Secret>, String> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT nonce, value FROM keys WHERE relative_id = ?1",
                [relative_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)?;
        let Some((nonce, ct)) = row else {
            return Ok(None);
        };
        if nonce.len() != 12 {
            return Err("storage: bad nonce".into());
        }
        let pt = self
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: relative_id.as_bytes(),
                },
            )
            .map_err(|_| {
                "storage: a key value does not decrypt (wrong storage key?)".to_string()
            })?;
        Ok(Some(Secret::new(pt)))
    }

    pub fn update_key(
        &self,
        relative_id: &str,
        targets: &[String],
        expires: i64,
    ) -> Result<(), String> {
        let targets = serde_json::to_string(targets).map_err(|e| e.to_string())?;
        self.conn
            .execute(
                "UPDATE keys SET targets = ?2, expires = ?3 WHERE relative_id = ?1",
                params![relative_id, targets, expires],
            )
            .map_err(db)?;
        Ok(())
    }

    pub fn delete_key(&self, relative_id: &str) -> Result<bool, String> {
        Ok(self
            .conn
            .execute("DELETE FROM keys WHERE relative_id = ?1", [relative_id])
            .map_err(db)?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_encrypted_at_rest() {
        let dir = tempfile::tempdir().unwrap();
        let sk = Secret::new(vec![7u8; 32]);
        let store = Store::open(dir.path(), &sk).unwrap();
        let reg = KeyReg {
            relative_id: "00ff".into(),
            source_id: "//sp/Sae".into(),
            suid: 12,
            targets: vec!["//sp/id-in".into()],
            admin_fqdn: None,
            expires: 100,
        };
        let value = Secret::new(vec![0xabu8; 32]);
        assert!(store.add_key(&reg, &value).unwrap());
        assert!(!store.add_key(&reg, &value).unwrap());
        assert_eq!(store.key_value("00ff").unwrap().unwrap(), value);
        let raw: Vec<u8> = store
            .conn
            .query_row("SELECT value FROM keys", [], |r| r.get(0))
            .unwrap();
        assert!(!raw.windows(32).any(|w| w == value.expose()));
        drop(store);
        let other = Store::open(dir.path(), &Secret::new(vec![8u8; 32])).unwrap();
        assert!(other.key_value("00ff").is_err());
        assert_eq!(other.purge(100).unwrap(), (0, 1));
    }
}
