//! SQLite storage of client and key registrations, and of the TTP's E2E credentials.
//!
//! Key values at rest are encrypted with AES-256-GCM under the storage key ([`crate::at_rest`]): a fresh
//! random 96-bit nonce per value, and the whole key registration (relative ID, source, SUID, targets,
//! adminFQDN, expiry) as associated data. The registration itself is stored in clear, but a row whose
//! targets, source or expiry were edited in the file (or whose ciphertext was copied to another row) no
//! longer decrypts, so tampering with the store cannot widen who gets the key. Times are Unix seconds.
//!
//! An E2E credential's JWK is encrypted the same way, with its whole registration (ID, registrant,
//! subject, usage, requesters, expiry) as associated data.
//!
//! Key rows written before the registration was bound (schema version 0, relative ID only) are
//! refused at open: their clear-text targets cannot be trusted, and key registrations are short-lived,
//! so the operator deletes them and the sources register again.

use super::jwk::Jwk;
use super::ttp::{CredentialReg, CredentialUsage};
use crate::at_rest;
use aes_gcm::Aes256Gcm;
use m2m_security::credentials::Secret;
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

/// `PRAGMA user_version` of a store whose key values are bound to their whole registration.
const KEY_RECORD_VERSION: i64 = 1;

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
                nonce BLOB NOT NULL, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS e2e_credentials (
                id TEXT PRIMARY KEY, registrant TEXT NOT NULL, subject TEXT NOT NULL, usage TEXT NOT NULL,
                requesters TEXT NOT NULL, expires INTEGER NOT NULL, nonce BLOB NOT NULL, jwk BLOB NOT NULL);",
        )
        .map_err(db)?;
        check_key_record_version(&conn, dir)?;
        let cipher = at_rest::cipher(storage_key)?;
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
        let (nonce, ct) = at_rest::seal(&self.cipher, value.expose(), &key_aad(reg)?)?;
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

    /// Decrypts the value of `reg` (read with [`Store::key`]); an error when the row was altered
    /// outside the MAF or the storage key is another.
    pub fn key_value(&self, reg: &KeyReg) -> Result<Option<Secret>, String> {
        let sql = "SELECT nonce, value FROM keys WHERE relative_id = ?1";
        let what = format!("key {}", reg.relative_id);
        let pt = self.open_row(sql, &reg.relative_id, &key_aad(reg)?, &what)?;
        Ok(pt.map(|pt| Secret::from_slice(&pt)))
    }

    /// Reads the (nonce, ciphertext) row `sql` selects for `id` and opens it bound to `aad`; `what`
    /// names the row in the error when it does not open.
    fn open_row(
        &self,
        sql: &str,
        id: &str,
        aad: &[u8],
        what: &str,
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, String> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row(sql, [id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db)?;
        let Some((nonce, ct)) = row else {
            return Ok(None);
        };
        at_rest::open(&self.cipher, &nonce, &ct, aad)
            .map(Some)
            .ok_or_else(|| {
                format!("storage: {what} does not decrypt (altered row or wrong storage key)")
            })
    }

    /// Replaces the targets and expiry of a key registration, sealing its value again under the new
    /// registration (the value is opened under the stored one first, so an altered row stays refused).
    pub fn update_key(&self, reg: &KeyReg) -> Result<(), String> {
        let stored = self
            .key(&reg.relative_id)?
            .ok_or_else(|| format!("storage: no key {}", reg.relative_id))?;
        let value = self
            .key_value(&stored)?
            .ok_or_else(|| format!("storage: no key {}", reg.relative_id))?;
        let (nonce, ct) = at_rest::seal(&self.cipher, value.expose(), &key_aad(reg)?)?;
        let targets = serde_json::to_string(&reg.targets).map_err(|e| e.to_string())?;
        self.conn
            .execute(
                "UPDATE keys SET targets = ?2, expires = ?3, nonce = ?4, value = ?5 WHERE relative_id = ?1",
                params![reg.relative_id, targets, reg.expires, &nonce[..], ct],
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

    /// Encrypts a JWK under the storage key, bound to its registration.
    fn seal_jwk(
        &self,
        reg: &CredentialReg,
        jwk: &Jwk,
    ) -> Result<([u8; at_rest::NONCE_LEN], Vec<u8>), String> {
        at_rest::seal(&self.cipher, jwk.json().expose(), &credential_aad(reg)?)
    }

    /// Stores an E2E credential with its JWK encrypted. `Ok(false)`: the ID is taken.
    pub fn add_credential(&self, reg: &CredentialReg, jwk: &Jwk) -> Result<bool, String> {
        let (nonce, ct) = self.seal_jwk(reg, jwk)?;
        let requesters = serde_json::to_string(&reg.requesters).map_err(|e| e.to_string())?;
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO e2e_credentials (id, registrant, subject, usage, requesters, expires, nonce, jwk)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    reg.id,
                    reg.registrant,
                    reg.subject,
                    reg.usage.as_str(),
                    requesters,
                    reg.expires,
                    &nonce[..],
                    ct
                ],
            )
            .map_err(db)?;
        Ok(n == 1)
    }

    /// The registration of credential `id`, without its JWK.
    pub fn credential(&self, id: &str) -> Result<Option<CredentialReg>, String> {
        let row = self
            .conn
            .query_row(
                "SELECT id, registrant, subject, usage, requesters, expires FROM e2e_credentials WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        let Some((id, registrant, subject, usage, requesters, expires)) = row else {
            return Ok(None);
        };
        Ok(Some(CredentialReg {
            id,
            registrant,
            subject,
            usage: CredentialUsage::parse(&usage)
                .ok_or_else(|| format!("storage: unknown usage {usage}"))?,
            requesters: serde_json::from_str(&requesters)
                .map_err(|e| format!("storage: requesters: {e}"))?,
            expires,
        }))
    }

    /// Decrypts the JWK of `reg` (read with [`Store::credential`]); an error when the row was
    /// altered outside the MAF or the storage key is another.
    pub fn credential_jwk(&self, reg: &CredentialReg) -> Result<Option<Jwk>, String> {
        let sql = "SELECT nonce, jwk FROM e2e_credentials WHERE id = ?1";
        let what = format!("credential {}", reg.id);
        let Some(pt) = self.open_row(sql, &reg.id, &credential_aad(reg)?, &what)? else {
            return Ok(None);
        };
        Jwk::from_json(&pt, reg.usage)
            .map(Some)
            .map_err(|e| format!("storage: credential {}: {e}", reg.id))
    }

    /// Replaces the requesters and expiry of a credential, sealing its JWK again under the new
    /// registration.
    pub fn update_credential(&self, reg: &CredentialReg, jwk: &Jwk) -> Result<(), String> {
        let (nonce, ct) = self.seal_jwk(reg, jwk)?;
        let requesters = serde_json::to_string(&reg.requesters).map_err(|e| e.to_string())?;
        self.conn
            .execute(
                "UPDATE e2e_credentials SET requesters = ?2, expires = ?3, nonce = ?4, jwk = ?5 WHERE id = ?1",
                params![reg.id, requesters, reg.expires, &nonce[..], ct],
            )
            .map_err(db)?;
        Ok(())
    }

    pub fn delete_credential(&self, id: &str) -> Result<bool, String> {
        Ok(self
            .conn
            .execute("DELETE FROM e2e_credentials WHERE id = ?1", [id])
            .map_err(db)?
            > 0)
    }

    /// Deletes every credential expired at `now`; returns how many.
    pub fn purge_credentials(&self, now: i64) -> Result<usize, String> {
        self.conn
            .execute("DELETE FROM e2e_credentials WHERE expires <= ?1", [now])
            .map_err(db)
    }
}

/// Refuses key rows sealed before their registration was bound ([`KEY_RECORD_VERSION`]); marks a store
/// without such rows as current.
fn check_key_record_version(conn: &Connection, dir: &Path) -> Result<(), String> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    if version >= KEY_RECORD_VERSION {
        return Ok(());
    }
    let old: i64 = conn
        .query_row("SELECT COUNT(*) FROM keys", [], |r| r.get(0))
        .map_err(db)?;
    if old > 0 {
        return Err(format!(
            "storage {}: {old} key registration(s) were sealed by an earlier MAF that bound only their ID, \
             so their targets and source cannot be trusted; delete them \
             (sqlite3 maf.sqlite 'DELETE FROM keys') and let their sources register again",
            dir.display()
        ));
    }
    conn.execute_batch(&format!("PRAGMA user_version = {KEY_RECORD_VERSION}"))
        .map_err(db)
}

/// The associated data of a key value: its whole registration, in a fixed order.
fn key_aad(reg: &KeyReg) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&(
        "maf-key",
        &reg.relative_id,
        &reg.source_id,
        reg.suid,
        &reg.targets,
        &reg.admin_fqdn,
        reg.expires,
    ))
    .map_err(|e| e.to_string())
}

/// The associated data of a credential's JWK: its whole registration, in a fixed order.
fn credential_aad(reg: &CredentialReg) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&(
        "e2e-credential",
        &reg.id,
        &reg.registrant,
        &reg.subject,
        reg.usage.as_str(),
        &reg.requesters,
        reg.expires,
    ))
    .map_err(|e| e.to_string())
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
        assert_eq!(store.key_value(&reg).unwrap().unwrap(), value);
        // Re-targeting re-seals; the old registration no longer opens the value.
        let moved = KeyReg {
            targets: vec!["//sp/id-other".into()],
            ..reg.clone()
        };
        store.update_key(&moved).unwrap();
        assert_eq!(store.key_value(&moved).unwrap().unwrap(), value);
        assert!(store.key_value(&reg).is_err());
        let raw: Vec<u8> = store
            .conn
            .query_row("SELECT value FROM keys", [], |r| r.get(0))
            .unwrap();
        assert!(!raw.windows(32).any(|w| w == value.expose()));
        drop(store);
        let other = Store::open(dir.path(), &Secret::new(vec![8u8; 32])).unwrap();
        assert!(other.key_value(&moved).is_err());
        assert_eq!(other.purge(100).unwrap(), (0, 1));
    }
}
