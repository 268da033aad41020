//! The BSF's store (SQLite): the subscribers its HSS part knows (IMPI, K and OPc, the next SQN,
//! the AE-ID the operator assigned) and the bootstrapped keys (B-TID -> Ks, RAND, IMPI, expiry).
//!
//! K || OPc and Ks are encrypted with AES-256-GCM under the storage key ([`crate::at_rest`]); the
//! row they belong to is the associated data (the subscriber's IMPI and AE-ID; the session's
//! B-TID, IMPI, RAND and expiry), so a row edited or copied in the file no longer opens. The SQN is
//! in clear: it grants nothing, and it is written (one statement, SQLite's transaction) before the
//! challenge that uses it leaves the BSF, so a crash never makes the BSF reuse one.
//!
//! `bsf.sqlite` (and SQLite's `-wal`/`-shm`) are 0600 in a 0700 directory
//! ([`m2m_security::data_files`]). Several processes may open it (the running BSF and `m2m bsf
//! subscriber add`): SQLite serialises their writes.

use crate::at_rest;
use aes_gcm::Aes256Gcm;
use m2m_security::credentials::Secret;
use m2m_security::gba::key_derivation::Ks;
use m2m_security::gba::milenage::{Block, Milenage};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// A subscriber as the store holds it.
pub struct SubscriberRecord {
    pub impi: String,
    /// The AE-ID the operator assigned to the device (the NAF binds its association to it).
    pub ae_id: Option<String>,
    pub milenage: Milenage,
    pub amf: [u8; 2],
}

impl std::fmt::Debug for SubscriberRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberRecord")
            .field("impi", &self.impi)
            .field("ae_id", &self.ae_id)
            .finish_non_exhaustive()
    }
}

/// A bootstrapped key and what it was bootstrapped for.
#[derive(Debug)]
pub struct Session {
    pub b_tid: String,
    pub impi: String,
    pub rand: Block,
    pub ks: Ks,
    /// Seconds since the Unix epoch.
    pub bootstrapped: i64,
    pub expires: i64,
}

/// The store; one connection, used under a lock (the BSF's requests are short).
pub struct Store {
    conn: Mutex<Connection>,
    cipher: Aes256Gcm,
}

fn db(e: rusqlite::Error) -> String {
    format!("storage: {e}")
}

/// Now, in seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn subscriber_aad(impi: &str, ae_id: Option<&str>) -> Vec<u8> {
    format!("subscriber\n{impi}\n{}", ae_id.unwrap_or("")).into_bytes()
}

fn session_aad(b_tid: &str, impi: &str, rand: &Block, bootstrapped: i64, expires: i64) -> Vec<u8> {
    format!(
        "session\n{b_tid}\n{impi}\n{}\n{bootstrapped}\n{expires}",
        hex::encode(rand)
    )
    .into_bytes()
}

impl Store {
    /// Opens (creating) `dir/bsf.sqlite`, the directory 0700 and the files 0600.
    pub fn open(dir: &Path, storage_key: &Secret) -> Result<Store, String> {
        let conn = at_rest::open_private_sqlite(dir, "bsf.sqlite", "BSF")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS subscribers (
                impi TEXT PRIMARY KEY, ae_id TEXT, amf BLOB NOT NULL, next_sqn INTEGER NOT NULL,
                nonce BLOB NOT NULL, sealed BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS sessions (
                b_tid TEXT PRIMARY KEY, impi TEXT NOT NULL, rand BLOB NOT NULL,
                bootstrapped INTEGER NOT NULL, expires INTEGER NOT NULL,
                nonce BLOB NOT NULL, sealed_ks BLOB NOT NULL);",
        )
        .map_err(db)?;
        Ok(Store {
            conn: Mutex::new(conn),
            cipher: at_rest::cipher(storage_key)?,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a subscriber (its SQN starts at 1); an IMPI already present is refused.
    pub fn add_subscriber(
        &self,
        impi: &str,
        ae_id: Option<&str>,
        k: &Block,
        opc: &Block,
        amf: [u8; 2],
    ) -> Result<(), String> {
        let mut secret = Zeroizing::new([0u8; 32]);
        secret[..16].copy_from_slice(k);
        secret[16..].copy_from_slice(opc);
        let (nonce, ct) = at_rest::seal(&self.cipher, &secret[..], &subscriber_aad(impi, ae_id))?;
        let added = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO subscribers (impi, ae_id, amf, next_sqn, nonce, sealed)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5)",
                params![impi, ae_id, &amf[..], &nonce[..], ct],
            )
            .map_err(db)?;
        if added == 0 {
            return Err(format!("subscriber {impi} exists already"));
        }
        Ok(())
    }

    /// The subscriber of this IMPI; `Err` when its row does not open (edited, or another key).
    pub fn subscriber(&self, impi: &str) -> Result<Option<SubscriberRecord>, String> {
        let row = self
            .conn()
            .query_row(
                "SELECT ae_id, amf, nonce, sealed FROM subscribers WHERE impi = ?1",
                params![impi],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        let Some((ae_id, amf, nonce, sealed)) = row else {
            return Ok(None);
        };
        let secret = at_rest::open(
            &self.cipher,
            &nonce,
            &sealed,
            &subscriber_aad(impi, ae_id.as_deref()),
        )
        .filter(|s| s.len() == 32)
        .ok_or_else(|| format!("subscriber {impi}: the sealed keys do not open"))?;
        let amf: [u8; 2] = amf
            .try_into()
            .map_err(|_| format!("subscriber {impi}: AMF is not two octets"))?;
        let k: Block = secret[..16].try_into().expect("16");
        let opc: Block = secret[16..].try_into().expect("16");
        Ok(Some(SubscriberRecord {
            impi: impi.to_owned(),
            ae_id,
            milenage: Milenage::new(k, opc),
            amf,
        }))
    }

    /// Takes the subscriber's next SQN: the stored one is advanced before it is returned.
    pub fn take_sqn(&self, impi: &str) -> Result<Option<u64>, String> {
        let conn = self.conn();
        let n: Option<i64> = conn
            .query_row(
                "UPDATE subscribers SET next_sqn = next_sqn + 1 WHERE impi = ?1
                 RETURNING next_sqn - 1",
                params![impi],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        Ok(n.and_then(|n| u64::try_from(n).ok()))
    }

    /// After an authentic AUTS (MAC-S over the RAND of a live challenge): the USIM is at `sqn_ms`,
    /// so the next SQN is the one after it (TS 33.102 clause 6.3.5: SQN_HE is reset to SQN_MS),
    /// down as well as up: a BSF pushed beyond the USIM's window recovers.
    pub fn resynchronise(&self, impi: &str, sqn_ms: u64) -> Result<(), String> {
        let next = i64::try_from(sqn_ms.saturating_add(1)).map_err(|_| "SQN out of range")?;
        self.conn()
            .execute(
                "UPDATE subscribers SET next_sqn = ?2 WHERE impi = ?1",
                params![impi, next],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Records a bootstrapped key under its B-TID; a B-TID in use is refused (RAND collided).
    pub fn insert_session(&self, s: &Session) -> Result<(), String> {
        let aad = session_aad(&s.b_tid, &s.impi, &s.rand, s.bootstrapped, s.expires);
        let (nonce, ct) = at_rest::seal(&self.cipher, s.ks.expose(), &aad)?;
        let conn = self.conn();
        // A new bootstrapping replaces the subscriber's earlier Ks (TS 33.220 clause 4.5.2):
        // its B-TIDs open nothing more.
        conn.execute(
            "DELETE FROM sessions WHERE expires <= ?1 OR impi = ?2",
            params![now_secs(), s.impi],
        )
        .map_err(db)?;
        let added = conn
            .execute(
                "INSERT OR IGNORE INTO sessions (b_tid, impi, rand, bootstrapped, expires, nonce, sealed_ks)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![s.b_tid, s.impi, &s.rand[..], s.bootstrapped, s.expires, &nonce[..], ct],
            )
            .map_err(db)?;
        if added == 0 {
            return Err("the B-TID is in use".into());
        }
        Ok(())
    }

    /// The live session of a B-TID; `None` when unknown or expired.
    pub fn session(&self, b_tid: &str) -> Result<Option<Session>, String> {
        let row = self
            .conn()
            .query_row(
                "SELECT impi, rand, bootstrapped, expires, nonce, sealed_ks FROM sessions
                 WHERE b_tid = ?1 AND expires > ?2",
                params![b_tid, now_secs()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, Vec<u8>>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        let Some((impi, rand, bootstrapped, expires, nonce, sealed)) = row else {
            return Ok(None);
        };
        let rand: Block = rand
            .try_into()
            .map_err(|_| "a session's RAND is not 16 octets".to_owned())?;
        let ks = at_rest::open(
            &self.cipher,
            &nonce,
            &sealed,
            &session_aad(b_tid, &impi, &rand, bootstrapped, expires),
        )
        .filter(|k| k.len() == 32)
        .ok_or("a session's sealed Ks does not open")?;
        let ks = Ks::from_bytes(ks[..].try_into().expect("32"));
        Ok(Some(Session {
            b_tid: b_tid.to_owned(),
            impi,
            rand,
            ks,
            bootstrapped,
            expires,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Store {
        Store::open(dir, &Secret::new(vec![9u8; 32])).unwrap()
    }

    #[test]
    fn subscribers_and_sessions_round_trip_and_edits_do_not_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bsf");
        let s = store(&dir);
        s.add_subscriber(
            "imsi1@ims.example",
            Some("CLock"),
            &[1; 16],
            &[2; 16],
            [0x80, 0],
        )
        .unwrap();
        assert!(s
            .add_subscriber("imsi1@ims.example", None, &[3; 16], &[4; 16], [0, 0])
            .is_err());
        let sub = s.subscriber("imsi1@ims.example").unwrap().unwrap();
        assert_eq!(sub.ae_id.as_deref(), Some("CLock"));
        assert_eq!(sub.amf, [0x80, 0]);
        assert!(s.subscriber("nobody@ims.example").unwrap().is_none());
        assert_eq!(s.take_sqn("imsi1@ims.example").unwrap(), Some(1));
        assert_eq!(s.take_sqn("imsi1@ims.example").unwrap(), Some(2));
        s.resynchronise("imsi1@ims.example", 40).unwrap();
        assert_eq!(s.take_sqn("imsi1@ims.example").unwrap(), Some(41));
        // A resynchronisation resets to the USIM's SQN, down as well.
        s.resynchronise("imsi1@ims.example", 5).unwrap();
        assert_eq!(s.take_sqn("imsi1@ims.example").unwrap(), Some(6));
        assert_eq!(s.take_sqn("nobody@ims.example").unwrap(), None);

        let now = now_secs();
        let session = Session {
            b_tid: "AQEBAQEBAQEBAQEBAQEBAQ==@bsf.example".into(),
            impi: "imsi1@ims.example".into(),
            rand: [1; 16],
            ks: Ks::new(&[5; 16], &[6; 16]),
            bootstrapped: now,
            expires: now + 100,
        };
        s.insert_session(&session).unwrap();
        // The same subscriber again: its earlier key goes (the B-TID itself is replaced).
        s.insert_session(&session).unwrap();
        let other = Session {
            b_tid: "AgICAgICAgICAgICAgICAg==@bsf.example".into(),
            impi: "imsi2@ims.example".into(),
            rand: [2; 16],
            ks: Ks::new(&[7; 16], &[8; 16]),
            bootstrapped: now,
            expires: now + 100,
        };
        s.insert_session(&other).unwrap();
        assert!(s.session(&other.b_tid).unwrap().is_some());
        let got = s.session(&session.b_tid).unwrap().unwrap();
        assert_eq!(got.ks.expose(), session.ks.expose());
        assert_eq!(got.impi, session.impi);
        // An edit of the clear columns (rebinding the subscriber to another AE, lengthening a
        // session) makes the row unusable.
        let c = Connection::open(dir.join("bsf.sqlite")).unwrap();
        c.execute("UPDATE subscribers SET ae_id = 'CAttacker'", [])
            .unwrap();
        c.execute("UPDATE sessions SET expires = expires + 1000", [])
            .unwrap();
        assert!(s.subscriber("imsi1@ims.example").is_err());
        assert!(s.session(&session.b_tid).is_err());
        // Another storage key opens nothing.
        let other = Store::open(&dir, &Secret::new(vec![8u8; 32])).unwrap();
        c.execute("UPDATE subscribers SET ae_id = 'CLock'", [])
            .unwrap();
        assert!(other.subscriber("imsi1@ims.example").is_err());
        assert!(s.subscriber("imsi1@ims.example").unwrap().is_some());
    }

    #[test]
    fn expired_sessions_are_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let now = now_secs();
        let session = Session {
            b_tid: "x@bsf.example".into(),
            impi: "i@ims.example".into(),
            rand: [1; 16],
            ks: Ks::new(&[5; 16], &[6; 16]),
            bootstrapped: now - 10,
            expires: now - 1,
        };
        s.insert_session(&session).unwrap();
        assert!(s.session("x@bsf.example").unwrap().is_none());
    }
}
