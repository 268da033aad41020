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
//!
//! # Lifetimes
//! Every key registration and E2E credential belongs to the client registration it was made under
//! (`client_reg`): de-registering that client deletes them in the same transaction, shortening it
//! shortens them (re-sealed under the shorter expiry), and once it has expired they are gone for
//! every reader and the sweep ([`Store::purge`]) deletes them. The binding is not part of the sealed
//! record; the key's own expiry is, so an edit of the file can shorten a key's life, never lengthen
//! it past what the MAF granted. Rows of an earlier MAF (no `client_reg` column) are bound at open
//! to their source's latest client registration; a row with none is gone.
//!
//! # Files
//! `maf.sqlite` (and SQLite's `-wal`/`-shm`) are 0600 in a 0700 directory
//! ([`m2m_security::data_files`]: created so, tightened when group or others may read, refused when
//! they may write).

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
    /// The KmID of the association the client registered (or last updated the registration)
    /// over; `None` for a certificate. The Key Retrieval answer names it as the source's
    /// credential (TS-0003 clause 8.2.2.3: the Credential-ID "formed from KmID provided by the
    /// MAF"). Not sealed: it names a credential, it grants nothing.
    pub km_id: Option<String>,
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
    /// The client registration (`mafClientRegID`) it was made under; `None` only for a row of an
    /// earlier MAF no registration was found for, which is gone.
    pub client_reg: Option<String>,
    /// The latest expiry the key may ever have: the lifetime left to the credential of the
    /// association it was registered over (a remote-provisioned Km's enrolment), if that has one.
    pub ceiling: Option<i64>,
}

/// What one purge, de-registration or shortening touched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Affected {
    pub clients: usize,
    pub keys: usize,
    pub credentials: usize,
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
    /// Opens (creating) `dir/maf.sqlite`, the directory 0700 and the files 0600.
    pub fn open(dir: &Path, storage_key: &Secret) -> Result<Store, String> {
        let conn = at_rest::open_private_sqlite(dir, "maf.sqlite", "MAF")?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS clients (
                reg_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, admin_fqdn TEXT, expires INTEGER NOT NULL,
                km_id TEXT);
             CREATE TABLE IF NOT EXISTS keys (
                relative_id TEXT PRIMARY KEY, source_id TEXT NOT NULL, suid INTEGER NOT NULL,
                targets TEXT NOT NULL, admin_fqdn TEXT, expires INTEGER NOT NULL,
                nonce BLOB NOT NULL, value BLOB NOT NULL, client_reg TEXT, ceiling INTEGER);
             CREATE TABLE IF NOT EXISTS e2e_credentials (
                id TEXT PRIMARY KEY, registrant TEXT NOT NULL, subject TEXT NOT NULL, usage TEXT NOT NULL,
                requesters TEXT NOT NULL, expires INTEGER NOT NULL, nonce BLOB NOT NULL, jwk BLOB NOT NULL,
                client_reg TEXT);",
        )
        .map_err(db)?;
        check_key_record_version(&conn, dir)?;
        bind_to_client_registrations(&conn)?;
        // A client's live registration is found by index, not by reading every client (the rows
        // under a registration have theirs from `bind_to_client_registrations`).
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS clients_by_client ON clients (client_id, expires);",
        )
        .map_err(db)?;
        let cipher = at_rest::cipher(storage_key)?;
        Ok(Store { conn, cipher })
    }

    /// Deletes every client registration expired at `now`, and every key and credential that has
    /// expired or whose client registration is gone or expired.
    pub fn purge(&self, now: i64) -> Result<Affected, String> {
        let tx = self.conn.unchecked_transaction().map_err(db)?;
        let clients = tx
            .execute("DELETE FROM clients WHERE expires <= ?1", [now])
            .map_err(db)?;
        let orphan = "client_reg IS NULL OR NOT EXISTS (SELECT 1 FROM clients c WHERE c.reg_id = client_reg)";
        let keys = tx
            .execute(
                &format!("DELETE FROM keys WHERE expires <= ?1 OR {orphan}"),
                [now],
            )
            .map_err(db)?;
        let credentials = tx
            .execute(
                &format!("DELETE FROM e2e_credentials WHERE expires <= ?1 OR {orphan}"),
                [now],
            )
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Affected {
            clients,
            keys,
            credentials,
        })
    }

    pub fn add_client(&self, reg: &ClientReg) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO clients (reg_id, client_id, admin_fqdn, expires, km_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![reg.reg_id, reg.client_id, reg.admin_fqdn, reg.expires, reg.km_id],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Client Registration Update: the new expiry, adminFQDN and KmID of an existing registration. Its
    /// keys and credentials that would outlive it are shortened to its expiry (re-sealed), in the
    /// same transaction; longer-lived ones are not lengthened. Returns what was shortened.
    pub fn update_client(&self, reg: &ClientReg) -> Result<Affected, String> {
        let tx = self.conn.unchecked_transaction().map_err(db)?;
        let clients = tx
            .execute(
                "UPDATE clients SET admin_fqdn = ?2, expires = ?3, km_id = ?4 WHERE reg_id = ?1",
                params![reg.reg_id, reg.admin_fqdn, reg.expires, reg.km_id],
            )
            .map_err(db)?;
        let mut affected = Affected {
            clients,
            ..Affected::default()
        };
        for id in self.ids_outliving("keys", "relative_id", reg)? {
            if let Some(mut key) = self.key(&id)? {
                key.expires = reg.expires;
                self.update_key(&key)?;
                affected.keys += 1;
            }
        }
        for id in self.ids_outliving("e2e_credentials", "id", reg)? {
            if let Some(old) = self.credential(&id)? {
                let jwk = self
                    .credential_jwk(&old)?
                    .ok_or_else(|| format!("storage: no credential {id}"))?;
                let new = CredentialReg {
                    expires: reg.expires,
                    ..old
                };
                self.update_credential(&new, &jwk)?;
                affected.credentials += 1;
            }
        }
        tx.commit().map_err(db)?;
        Ok(affected)
    }

    /// The IDs of `table`'s rows under client registration `reg` that expire after it.
    fn ids_outliving(&self, table: &str, id: &str, reg: &ClientReg) -> Result<Vec<String>, String> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {id} FROM {table} WHERE client_reg = ?1 AND expires > ?2"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map(params![reg.reg_id, reg.expires], |r| r.get::<_, String>(0))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    pub fn client(&self, reg_id: &str) -> Result<Option<ClientReg>, String> {
        self.conn
            .prepare_cached(
                "SELECT reg_id, client_id, admin_fqdn, expires, km_id FROM clients WHERE reg_id = ?1",
            )
            .map_err(db)?
            .query_row([reg_id], client_row)
            .optional()
            .map_err(db)
    }

    /// The client registration of `client_id` valid at `now` that expires last, if any: the one a
    /// new key or credential of that client is registered under.
    pub fn live_client(&self, client_id: &str, now: i64) -> Result<Option<ClientReg>, String> {
        self.conn
            .prepare_cached(
                "SELECT reg_id, client_id, admin_fqdn, expires, km_id FROM clients
                 WHERE client_id = ?1 AND expires > ?2 ORDER BY expires DESC, reg_id LIMIT 1",
            )
            .map_err(db)?
            .query_row(params![client_id, now], client_row)
            .optional()
            .map_err(db)
    }

    /// De-registers a client together with its keys and credentials, in one transaction.
    pub fn delete_client(&self, reg_id: &str) -> Result<Affected, String> {
        let tx = self.conn.unchecked_transaction().map_err(db)?;
        let keys = tx
            .execute("DELETE FROM keys WHERE client_reg = ?1", [reg_id])
            .map_err(db)?;
        let credentials = tx
            .execute(
                "DELETE FROM e2e_credentials WHERE client_reg = ?1",
                [reg_id],
            )
            .map_err(db)?;
        let clients = tx
            .execute("DELETE FROM clients WHERE reg_id = ?1", [reg_id])
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Affected {
            clients,
            keys,
            credentials,
        })
    }

    /// Stores a key registration with its value encrypted. `Ok(false)`: the relative ID is taken.
    pub fn add_key(&self, reg: &KeyReg, value: &Secret) -> Result<bool, String> {
        let (nonce, ct) = at_rest::seal(&self.cipher, value.expose(), &key_aad(reg)?)?;
        let targets = serde_json::to_string(&reg.targets).map_err(|e| e.to_string())?;
        let n = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO keys (relative_id, source_id, suid, targets, admin_fqdn, expires, nonce, value,
                    client_reg, ceiling)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(db)?
            .execute(params![
                    reg.relative_id,
                    reg.source_id,
                    reg.suid,
                    targets,
                    reg.admin_fqdn,
                    reg.expires,
                    &nonce[..],
                    ct,
                    reg.client_reg,
                    reg.ceiling
                ],
            )
            .map_err(db)?;
        Ok(n == 1)
    }

    /// The registration of `relative_id`, without its value.
    pub fn key(&self, relative_id: &str) -> Result<Option<KeyReg>, String> {
        // Cached statements: a retrieval reads three rows, and preparing SQL would cost more.
        let row = self
            .conn
            .prepare_cached(
                "SELECT relative_id, source_id, suid, targets, admin_fqdn, expires, client_reg, ceiling
                 FROM keys WHERE relative_id = ?1",
            )
            .map_err(db)?
            .query_row(
                [relative_id],
                |r| {
                    Ok((
                        KeyReg {
                            relative_id: r.get(0)?,
                            source_id: r.get(1)?,
                            suid: r.get(2)?,
                            targets: Vec::new(),
                            admin_fqdn: r.get(4)?,
                            expires: r.get(5)?,
                            client_reg: r.get(6)?,
                            ceiling: r.get(7)?,
                        },
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        let Some((mut reg, targets)) = row else {
            return Ok(None);
        };
        reg.targets =
            serde_json::from_str(&targets).map_err(|e| format!("storage: targets: {e}"))?;
        Ok(Some(reg))
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
            .prepare_cached(sql)
            .map_err(db)?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
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
                "INSERT OR IGNORE INTO e2e_credentials (id, registrant, subject, usage, requesters, expires, nonce, jwk,
                    client_reg)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    reg.id,
                    reg.registrant,
                    reg.subject,
                    reg.usage.as_str(),
                    requesters,
                    reg.expires,
                    &nonce[..],
                    ct,
                    reg.client_reg
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
                "SELECT id, registrant, subject, usage, requesters, expires, client_reg FROM e2e_credentials WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        let Some((id, registrant, subject, usage, requesters, expires, client_reg)) = row else {
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
            client_reg,
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
}

fn client_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClientReg> {
    Ok(ClientReg {
        reg_id: r.get(0)?,
        client_id: r.get(1)?,
        admin_fqdn: r.get(2)?,
        expires: r.get(3)?,
        km_id: r.get(4)?,
    })
}

/// Brings a store of an earlier MAF to the binding of keys and credentials to their client
/// registration: adds the columns and binds each unbound row to its source's (registrant's) client
/// registration that expires last. A row whose client has none stays unbound, which is gone.
fn bind_to_client_registrations(conn: &Connection) -> Result<(), String> {
    for (table, column, kind) in [
        // A client registration of an earlier MAF names no KmID: its keys' retrieval answers
        // none until the client updates its registration.
        ("clients", "km_id", "TEXT"),
        ("keys", "client_reg", "TEXT"),
        ("keys", "ceiling", "INTEGER"),
        ("e2e_credentials", "client_reg", "TEXT"),
    ] {
        let present: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |r| r.get(0),
            )
            .map_err(db)?;
        if present == 0 {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                .map_err(db)?;
        }
    }
    let latest = "SELECT c.reg_id FROM clients c WHERE c.client_id = {owner} ORDER BY c.expires DESC LIMIT 1";
    for (table, owner) in [("keys", "source_id"), ("e2e_credentials", "registrant")] {
        let n = conn
            .execute(
                &format!(
                    "UPDATE {table} SET client_reg = ({}) WHERE client_reg IS NULL",
                    latest.replace("{owner}", &format!("{table}.{owner}"))
                ),
                [],
            )
            .map_err(db)?;
        if n > 0 {
            tracing::info!(target: "audit", rows = n, table, "bound rows of an earlier MAF to their client registrations");
        }
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS keys_client_reg ON keys(client_reg);
         CREATE INDEX IF NOT EXISTS e2e_credentials_client_reg ON e2e_credentials(client_reg);",
    )
    .map_err(db)
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
            client_reg: Some("mcr-1".into()),
            ceiling: None,
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
        let purged = other.purge(100).unwrap();
        assert_eq!((purged.clients, purged.keys), (0, 1));
    }

    fn client(reg_id: &str, client_id: &str, expires: i64) -> ClientReg {
        ClientReg {
            reg_id: reg_id.into(),
            client_id: client_id.into(),
            admin_fqdn: None,
            expires,
            km_id: None,
        }
    }

    fn key(id: &str, source: &str, client_reg: Option<&str>, expires: i64) -> KeyReg {
        KeyReg {
            relative_id: id.into(),
            source_id: source.into(),
            suid: 12,
            targets: vec!["//sp/id-in".into()],
            admin_fqdn: None,
            expires,
            client_reg: client_reg.map(str::to_owned),
            ceiling: None,
        }
    }

    /// The KmID a client registered over is kept, replaced by an update, and read back.
    #[test]
    fn a_client_registration_keeps_its_kmid() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Secret::new(vec![7u8; 32])).unwrap();
        let mut reg = ClientReg {
            km_id: Some("ae1@maf.example.net".into()),
            ..client("mcr-a", "//sp/Sae", 1000)
        };
        store.add_client(&reg).unwrap();
        assert_eq!(store.client("mcr-a").unwrap().unwrap(), reg);
        reg.km_id = Some("0011@mef.example.net".into());
        store.update_client(&reg).unwrap();
        assert_eq!(store.live_client("//sp/Sae", 0).unwrap().unwrap(), reg);
        reg.km_id = None;
        store.update_client(&reg).unwrap();
        assert_eq!(store.client("mcr-a").unwrap().unwrap().km_id, None);
    }

    /// Shortening a client registration shortens (and re-seals) its keys only; de-registering it
    /// deletes them; the sweep deletes keys whose client registration has expired.
    #[test]
    fn keys_follow_their_client_registration() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Secret::new(vec![7u8; 32])).unwrap();
        let value = Secret::new(vec![0x11u8; 32]);
        store
            .add_client(&client("mcr-a", "//sp/Sae", 1000))
            .unwrap();
        store.add_client(&client("mcr-b", "//sp/Sae", 900)).unwrap();
        store
            .add_key(&key("0A", "//sp/Sae", Some("mcr-a"), 800), &value)
            .unwrap();
        store
            .add_key(&key("0B", "//sp/Sae", Some("mcr-a"), 300), &value)
            .unwrap();
        store
            .add_key(&key("0C", "//sp/Sae", Some("mcr-b"), 800), &value)
            .unwrap();
        assert_eq!(
            store.live_client("//sp/Sae", 0).unwrap().unwrap().reg_id,
            "mcr-a"
        );
        assert_eq!(
            store.live_client("//sp/Sae", 950).unwrap().unwrap().reg_id,
            "mcr-a"
        );
        assert!(store.live_client("//sp/Sae", 1000).unwrap().is_none());

        let shortened = store
            .update_client(&client("mcr-a", "//sp/Sae", 500))
            .unwrap();
        assert_eq!((shortened.clients, shortened.keys), (1, 1));
        let a = store.key("0A").unwrap().unwrap();
        assert_eq!(a.expires, 500);
        assert_eq!(store.key_value(&a).unwrap().unwrap(), value, "re-sealed");
        assert_eq!(
            store.key("0B").unwrap().unwrap().expires,
            300,
            "not lengthened"
        );
        assert_eq!(
            store.key("0C").unwrap().unwrap().expires,
            800,
            "another registration's"
        );

        let gone = store.delete_client("mcr-a").unwrap();
        assert_eq!((gone.clients, gone.keys), (1, 2));
        assert!(store.key("0A").unwrap().is_none() && store.key("0B").unwrap().is_none());
        assert!(store.key("0C").unwrap().is_some());

        // mcr-b expires at 900; its key (800 by itself) is purged with it, even when its own
        // expiry says later (a row as an earlier MAF left it).
        store
            .conn
            .execute(
                "UPDATE clients SET expires = 100 WHERE reg_id = 'mcr-b'",
                [],
            )
            .unwrap();
        let purged = store.purge(200).unwrap();
        assert_eq!((purged.clients, purged.keys), (1, 1));
        assert!(store.key("0C").unwrap().is_none());
    }

    /// A store of an earlier MAF (no client_reg column) is bound at open: each key to its source's
    /// latest client registration; a key whose source has none is gone at the next purge.
    #[test]
    fn rows_of_an_earlier_maf_are_bound_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let sk = Secret::new(vec![7u8; 32]);
        let store = Store::open(dir.path(), &sk).unwrap();
        let value = Secret::new(vec![0x22u8; 32]);
        store
            .add_client(&client("mcr-old", "//sp/Sae", 500))
            .unwrap();
        store
            .add_client(&client("mcr-new", "//sp/Sae", 900))
            .unwrap();
        store
            .add_key(&key("0A", "//sp/Sae", None, 800), &value)
            .unwrap();
        store
            .add_key(&key("0B", "//sp/Snobody", None, 800), &value)
            .unwrap();
        store
            .conn
            .execute_batch(
                "DROP INDEX keys_client_reg; DROP INDEX e2e_credentials_client_reg;
                 ALTER TABLE keys DROP COLUMN client_reg; ALTER TABLE keys DROP COLUMN ceiling;
                 ALTER TABLE e2e_credentials DROP COLUMN client_reg;
                 ALTER TABLE clients DROP COLUMN km_id;",
            )
            .unwrap();
        drop(store);
        let store = Store::open(dir.path(), &sk).unwrap();
        let a = store.key("0A").unwrap().unwrap();
        assert_eq!(a.client_reg.as_deref(), Some("mcr-new"));
        assert_eq!(store.key_value(&a).unwrap().unwrap(), value);
        assert_eq!(store.key("0B").unwrap().unwrap().client_reg, None);
        assert_eq!(store.client("mcr-new").unwrap().unwrap().km_id, None);
        assert_eq!(store.purge(0).unwrap().keys, 1);
        assert!(store.key("0B").unwrap().is_none());
    }
}
