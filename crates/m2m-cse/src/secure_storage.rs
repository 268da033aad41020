//! The Secure Storage service of the Security CSF (seeds/002 clause 6.3.5.2): AEs and CSEs store
//! sensitive data objects that only they, and the entities they name, can read back.
//!
//! "Data securely stored by the AE, CSE or Local CSF shall only be accessible through the Security
//! CSF and by authorized entities ... Stored data shall be associated with the entity owning the
//! data." The seed leaves the resource structure open; here it is the virtual resource
//! `<CSEBase>/secureStorage` over the CSE's own bindings:
//!
//! | request | what it does |
//! |---|---|
//! | UPDATE `<CSEBase>/secureStorage/<name>`, `{"m2m:sdo": {"con", "rdr"?}}` | stores a data object of the originator (its owner) under `name` (2001), or replaces its `con` and/or `rdr` (2004); `rdr` lists the AE-IDs/CSE-IDs that may read it |
//! | RETRIEVE `<CSEBase>/secureStorage` | the originator's own objects (names, IDs, sizes, never contents) |
//! | RETRIEVE `<CSEBase>/secureStorage/<name or ri>` | the object with its `con`: the owner by name or ID, a reader by ID |
//! | DELETE `<CSEBase>/secureStorage/<name or ri>` | the owner, or the administrator (who can never read one) |
//!
//! Storing is an UPDATE of the object's address, not a CREATE: a data object is no resource
//! type of TS-0004, and every binding carries an UPDATE without one.
//!
//! Only an originator its own security association proves is served (not a trusted listener's
//! From, not an entity relayed by a CSE, not a request the CSE makes itself), and only
//! blocking requests (a non-blocking one would keep the content in a `<request>`); an object that is not the requester's to see is answered as one that does not
//! exist. Contents are sealed with AES-256-GCM under a key the secure environment derives
//! (HMAC-SHA-256 inside a PKCS#11 token, or with a keystore secret: `[secure_storage] secret`),
//! bound to the object's ID, owner, name and readers, in their own database
//! (`secure-storage.sqlite`, mode 0600), never in the resource store.

use crate::association::Peer;
use crate::context::Context;
use m2m_core::ResponseStatusCode as Rsc;
use m2m_core::{Address, EntityId, M2mError, M2mResult, Operation, Request, Response};
use m2m_security::association::Proof;
use m2m_security::credentials::Secret;
use serde_json::{json, Map, Value};
use std::sync::Mutex;

/// The virtual resource's name under the CSEBase.
pub const NAME: &str = "secureStorage";
/// What the storage key is derived for: its HMAC input.
const KEY_INFO: &[u8] = b"oneM2M secure storage v1";

/// The service: its database and the sealing key.
pub struct SecureStorage {
    db: Mutex<rusqlite::Connection>,
    cipher: aes_gcm::Aes256Gcm,
    limits: Limits,
}

/// `[secure_storage]`'s bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub object_bytes: usize,
    pub objects_per_owner: usize,
    pub total_bytes: u64,
}

impl std::fmt::Debug for SecureStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureStorage").finish_non_exhaustive()
    }
}

impl SecureStorage {
    /// Opens (creating) the database in `dir` with the key the environments derive from the
    /// secret `secret`.
    pub fn open(
        dir: &std::path::Path,
        secret: &str,
        environments: &[Box<dyn m2m_security::secure_environment::SecureEnvironment>],
        limits: Limits,
    ) -> anyhow::Result<SecureStorage> {
        let key: Secret = environments
            .iter()
            .find_map(|se| se.derive_key(secret, KEY_INFO))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "secure_storage: no secure environment holds the secret {secret:?} \
                     (make it with `m2m keys token ... generate-secret --name {secret}` or \
                     `m2m keys add-secret --generate --name {secret}`)"
                )
            })?;
        let cipher = m2m_keyservices::at_rest::cipher(&key)
            .map_err(|e| anyhow::anyhow!("secure_storage: {e}"))?;
        let db = m2m_keyservices::at_rest::open_private_sqlite(
            dir,
            "secure-storage.sqlite",
            "secure storage",
        )
        .map_err(|e| anyhow::anyhow!("secure_storage: {e}"))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS sdo (
                 ri TEXT PRIMARY KEY,
                 owner TEXT NOT NULL,
                 rn TEXT NOT NULL,
                 readers TEXT NOT NULL,
                 ct TEXT NOT NULL,
                 lt TEXT NOT NULL,
                 size INTEGER NOT NULL,
                 nonce BLOB NOT NULL,
                 sealed BLOB NOT NULL,
                 UNIQUE (owner, rn)
             );",
        )
        .map_err(|e| anyhow::anyhow!("secure_storage: {e}"))?;
        Ok(SecureStorage {
            db: Mutex::new(db),
            cipher,
            limits,
        })
    }
}

/// The object a request addresses when its target is the secure storage of this CSE:
/// `Some(None)` for the collection, `Some(Some(name))` for one object.
pub fn addressed(cse: &Context, addr: &Address) -> Option<Option<String>> {
    let mut segs = addr.segments();
    let first = segs.next()?;
    if first != cse.id.rn && first != "-" {
        return None;
    }
    if segs.next()? != NAME {
        return None;
    }
    match (segs.next(), segs.next()) {
        (None, _) => Some(None),
        (Some(name), None) => Some(Some(name.to_owned())),
        // Deeper paths name nothing here: answered as no object.
        (Some(_), Some(_)) => Some(Some(String::new())),
    }
}

/// Who is asking: only an entity its own security association proves. Never a claim, never an
/// entity a CSE peer relays for or a trusted listener believes (anyone on the host could write
/// its From), never a request the CSE makes itself (a group fan-out, an `<action>`: they carry
/// someone's From without that entity's proof).
fn requester(peer: &Peer) -> M2mResult<EntityId> {
    let proven = peer.proof == Proof::Authenticated
        && peer.association.is_some()
        && !peer.is_internal()
        && !peer.by_action;
    match (&peer.originator, proven) {
        (Some(who), true) => Ok(who.clone()),
        _ => Err(crate::access::refused()),
    }
}

/// Serves one request to the secure storage.
pub fn serve(
    cse: &Context,
    req: &Request,
    object: Option<String>,
    peer: &Peer,
) -> M2mResult<Response> {
    let Some(storage) = cse.secure_storage.as_ref() else {
        return Err(M2mError::not_implemented(
            "the secure storage service is not configured on this CSE",
        ));
    };
    let who = requester(peer)?;
    let admin = peer.is_admin(cse);
    let rqi = req.rqi.as_str();
    // One request at a time: what an UPDATE read is what it replaces (a concurrent change of
    // the readers is never undone by another's change of the content).
    let db = storage.lock();
    match (req.op, object) {
        (Operation::Retrieve, None) => storage.list(&db, &who, admin, rqi),
        (Operation::Retrieve, Some(name)) => {
            let sdo = storage.find(&db, &who, &name, Access::Read)?;
            Ok(Response::new(
                Rsc::Ok,
                rqi,
                Some(storage.representation(&sdo, true)?),
            ))
        }
        (Operation::Update, Some(name)) => match storage.find(&db, &who, &name, Access::Own) {
            Ok(old) => storage.replace(&db, cse, req, old),
            Err(e) if e.rsc == Rsc::NotFound => storage.create(&db, cse, req, &who, &name),
            Err(e) => Err(e),
        },
        (Operation::Delete, Some(name)) => {
            let access = if admin {
                Access::Administer
            } else {
                Access::Own
            };
            let sdo = storage.find(&db, &who, &name, access)?;
            db.execute("DELETE FROM sdo WHERE ri = ?1", [&sdo.ri])
                .map_err(storage_error)?;
            tracing::info!(target: "audit", requester = %who, object = %sdo.ri, owner = %sdo.owner, "secure storage: object deleted");
            Ok(Response::new(Rsc::Deleted, rqi, None))
        }
        (Operation::Create, _) => Err(M2mError::not_allowed(
            "a data object is stored with an UPDATE of secureStorage/<name>",
        )),
        _ => Err(M2mError::not_allowed(
            "the secure storage takes RETRIEVE, UPDATE (store) and DELETE",
        )),
    }
}

/// What a request may do with an object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The owner's (by name or ID).
    Own,
    /// The owner's, or a listed reader's by ID.
    Read,
    /// The owner's, or the administrator's (deletion only).
    Administer,
}

/// One stored object, its content still sealed.
struct Stored {
    ri: String,
    owner: String,
    rn: String,
    readers: Vec<String>,
    ct: String,
    lt: String,
    size: i64,
    nonce: Vec<u8>,
    sealed: Vec<u8>,
}

/// The columns [`stored`] reads, in its order.
const COLUMNS: &str = "SELECT ri, owner, rn, readers, ct, lt, size, nonce, sealed FROM sdo";

/// One row of [`COLUMNS`].
fn stored(row: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    let readers: String = row.get(3)?;
    Ok(Stored {
        ri: row.get(0)?,
        owner: row.get(1)?,
        rn: row.get(2)?,
        readers: serde_json::from_str(&readers).unwrap_or_default(),
        ct: row.get(4)?,
        lt: row.get(5)?,
        size: row.get(6)?,
        nonce: row.get(7)?,
        sealed: row.get(8)?,
    })
}

fn storage_error(e: rusqlite::Error) -> M2mError {
    tracing::error!(error = %e, "secure storage database");
    M2mError::internal("the secure storage failed")
}

fn no_object() -> M2mError {
    M2mError::not_found("no such data object")
}

impl SecureStorage {
    fn lock(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The associated data of an object's content: everything that says whose it is and who
    /// may read it. A row edited on disk (another owner, another reader) no longer opens.
    fn aad(ri: &str, owner: &str, rn: &str, readers: &[String]) -> Vec<u8> {
        let mut aad = b"m2m-sdo-v1\0".to_vec();
        for part in [ri, owner, rn] {
            aad.extend_from_slice(part.as_bytes());
            aad.push(0);
        }
        aad.extend_from_slice(readers.join("\n").as_bytes());
        aad
    }

    fn find(
        &self,
        db: &rusqlite::Connection,
        who: &EntityId,
        name: &str,
        access: Access,
    ) -> M2mResult<Stored> {
        let owner = who.to_string();
        let read = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> M2mResult<Option<Stored>> {
            let mut stmt = db.prepare_cached(sql).map_err(storage_error)?;
            let mut rows = stmt.query(args).map_err(storage_error)?;
            match rows.next().map_err(storage_error)? {
                Some(row) => stored(row).map(Some).map_err(storage_error),
                None => Ok(None),
            }
        };
        if let Some(own) = read(
            &format!("{COLUMNS} WHERE owner = ?1 AND rn = ?2"),
            &[&owner, &name],
        )? {
            return Ok(own);
        }
        let by_id = read(&format!("{COLUMNS} WHERE ri = ?1"), &[&name])?.ok_or_else(no_object)?;
        let allowed = by_id.owner == owner
            || match access {
                Access::Own => false,
                Access::Read => by_id.readers.iter().any(|r| r == &owner),
                Access::Administer => true,
            };
        if allowed {
            Ok(by_id)
        } else {
            // Not the requester's to see: as if there were none (no oracle of other entities'
            // objects).
            Err(no_object())
        }
    }

    /// The object as the requester sees it: with its content only when `with_content`.
    fn representation(&self, s: &Stored, with_content: bool) -> M2mResult<Value> {
        let mut o = Map::new();
        o.insert("rn".into(), json!(s.rn));
        o.insert("ri".into(), json!(s.ri));
        o.insert("own".into(), json!(s.owner));
        o.insert("rdr".into(), json!(s.readers));
        o.insert("ct".into(), json!(s.ct));
        o.insert("lt".into(), json!(s.lt));
        o.insert("cs".into(), json!(s.size));
        if with_content {
            let aad = Self::aad(&s.ri, &s.owner, &s.rn, &s.readers);
            let clear = m2m_keyservices::at_rest::open(&self.cipher, &s.nonce, &s.sealed, &aad)
                .ok_or_else(|| {
                    tracing::error!(target: "audit", object = %s.ri, "secure storage: an object does not open (altered on disk, or another key)");
                    M2mError::internal("the data object cannot be read")
                })?;
            let text = String::from_utf8(clear.to_vec())
                .map_err(|_| M2mError::internal("the data object cannot be read"))?;
            o.insert("con".into(), json!(text));
        }
        Ok(json!({ "m2m:sdo": o }))
    }

    /// `con` and `rdr` of a request's `m2m:sdo`, checked.
    fn content<'r>(&self, req: &'r Request, creating: bool) -> M2mResult<&'r Map<String, Value>> {
        let sdo = req
            .pc
            .as_ref()
            .and_then(|pc| pc.get("m2m:sdo"))
            .and_then(Value::as_object)
            .ok_or_else(|| M2mError::bad_request("the content is no m2m:sdo"))?;
        let allowed: &[&str] = &["con", "rdr"];
        if let Some(k) = sdo.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(M2mError::bad_request(format!(
                "m2m:sdo: '{k}' cannot be set here"
            )));
        }
        if let Some(con) = sdo.get("con") {
            let con = con
                .as_str()
                .ok_or_else(|| M2mError::bad_request("m2m:sdo: con is a string"))?;
            if con.len() > self.limits.object_bytes {
                return Err(M2mError::new(
                    Rsc::NotAcceptable,
                    format!(
                        "m2m:sdo: con is larger than {} bytes",
                        self.limits.object_bytes
                    ),
                ));
            }
        } else if creating {
            return Err(M2mError::bad_request("m2m:sdo: con is missing"));
        }
        Ok(sdo)
    }

    /// The readers of `rdr`, each an AE-ID or CSE-ID in the form this CSE writes owners in.
    fn readers(cse: &Context, sdo: &Map<String, Value>) -> M2mResult<Option<Vec<String>>> {
        let Some(rdr) = sdo.get("rdr") else {
            return Ok(None);
        };
        let list = rdr
            .as_array()
            .ok_or_else(|| M2mError::bad_request("m2m:sdo: rdr is a list of AE-IDs and CSE-IDs"))?;
        if list.len() > 32 {
            return Err(M2mError::bad_request("m2m:sdo: at most 32 readers"));
        }
        let mut readers = Vec::with_capacity(list.len());
        for r in list {
            let id = r
                .as_str()
                .and_then(|s| EntityId::parse(s, &cse.id.home).ok())
                .ok_or_else(|| {
                    M2mError::bad_request("m2m:sdo: rdr is a list of AE-IDs and CSE-IDs")
                })?;
            let id = id.to_string();
            if !readers.contains(&id) {
                readers.push(id);
            }
        }
        Ok(Some(readers))
    }

    fn create(
        &self,
        db: &rusqlite::Connection,
        cse: &Context,
        req: &Request,
        who: &EntityId,
        rn: &str,
    ) -> M2mResult<Response> {
        if !valid_name(rn) {
            return Err(M2mError::bad_request(
                "a data object's name is 1 to 64 letters, digits, '.', '_' or '-'",
            ));
        }
        let sdo = self.content(req, true)?;
        let con = sdo.get("con").and_then(Value::as_str).unwrap_or_default();
        let readers = Self::readers(cse, sdo)?.unwrap_or_default();
        let owner = who.to_string();
        let ri = format!("sdo{}", hex::encode(rand::random::<[u8; 8]>()));
        let now = cse.now_ts();
        let aad = Self::aad(&ri, &owner, rn, &readers);
        let (nonce, sealed) = m2m_keyservices::at_rest::seal(&self.cipher, con.as_bytes(), &aad)
            .map_err(M2mError::internal)?;
        let held: i64 = db
            .query_row("SELECT COUNT(*) FROM sdo WHERE owner = ?1", [&owner], |r| {
                r.get(0)
            })
            .map_err(storage_error)?;
        if held as usize >= self.limits.objects_per_owner {
            return Err(M2mError::new(
                Rsc::NotAcceptable,
                format!(
                    "at most {} data objects per owner",
                    self.limits.objects_per_owner
                ),
            ));
        }
        self.check_total(db, con.len() as i64)?;
        let inserted = db.execute(
            "INSERT INTO sdo (ri, owner, rn, readers, ct, lt, size, nonce, sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                ri,
                owner,
                rn,
                serde_json::to_string(&readers).expect("strings serialize"),
                now,
                con.len() as i64,
                nonce.to_vec(),
                sealed
            ],
        );
        match inserted {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(M2mError::conflict("a data object of this name exists"));
            }
            Err(e) => return Err(storage_error(e)),
        }
        tracing::info!(target: "audit", owner = %owner, object = %ri, readers = readers.len(), "secure storage: object stored");
        let stored = Stored {
            ri,
            owner,
            rn: rn.to_owned(),
            readers,
            ct: now.clone(),
            lt: now,
            size: con.len() as i64,
            nonce: Vec::new(),
            sealed: Vec::new(),
        };
        Ok(Response::new(
            Rsc::Created,
            &req.rqi,
            Some(self.representation(&stored, false)?),
        ))
    }

    fn replace(
        &self,
        db: &rusqlite::Connection,
        cse: &Context,
        req: &Request,
        old: Stored,
    ) -> M2mResult<Response> {
        let sdo = self.content(req, false)?;
        let readers = Self::readers(cse, sdo)?.unwrap_or_else(|| old.readers.clone());
        let con = match sdo.get("con").and_then(Value::as_str) {
            Some(c) => zeroize::Zeroizing::new(c.as_bytes().to_vec()),
            None => {
                let aad = Self::aad(&old.ri, &old.owner, &old.rn, &old.readers);
                m2m_keyservices::at_rest::open(&self.cipher, &old.nonce, &old.sealed, &aad)
                    .ok_or_else(|| M2mError::internal("the data object cannot be read"))?
            }
        };
        self.check_total(db, con.len() as i64 - old.size)?;
        let aad = Self::aad(&old.ri, &old.owner, &old.rn, &readers);
        let (nonce, sealed) =
            m2m_keyservices::at_rest::seal(&self.cipher, &con, &aad).map_err(M2mError::internal)?;
        let now = cse.now_ts();
        db.execute(
                "UPDATE sdo SET readers = ?2, lt = ?3, size = ?4, nonce = ?5, sealed = ?6 WHERE ri = ?1",
                rusqlite::params![
                    old.ri,
                    serde_json::to_string(&readers).expect("strings serialize"),
                    now,
                    con.len() as i64,
                    nonce.to_vec(),
                    sealed
                ],
            )
            .map_err(storage_error)?;
        tracing::info!(target: "audit", owner = %old.owner, object = %old.ri, readers = readers.len(), "secure storage: object updated");
        let stored = Stored {
            readers,
            lt: now,
            size: con.len() as i64,
            ..old
        };
        Ok(Response::new(
            Rsc::Updated,
            &req.rqi,
            Some(self.representation(&stored, false)?),
        ))
    }

    /// Refuses growing the contents of all owners by `added` bytes beyond `max_total_bytes`.
    fn check_total(&self, db: &rusqlite::Connection, added: i64) -> M2mResult<()> {
        if added <= 0 {
            return Ok(());
        }
        let total: i64 = db
            .query_row("SELECT COALESCE(SUM(size), 0) FROM sdo", [], |r| r.get(0))
            .map_err(storage_error)?;
        if (total + added) as u64 > self.limits.total_bytes {
            return Err(M2mError::new(
                Rsc::NotAcceptable,
                "the secure storage is full",
            ));
        }
        Ok(())
    }

    /// The requester's objects (the administrator's view: everyone's), without contents.
    fn list(
        &self,
        db: &rusqlite::Connection,
        who: &EntityId,
        admin: bool,
        rqi: &str,
    ) -> M2mResult<Response> {
        let mut stmt = db
            .prepare_cached(&format!(
                "{COLUMNS} WHERE owner = ?1 OR ?2 ORDER BY owner, rn LIMIT 10000"
            ))
            .map_err(storage_error)?;
        let rows = stmt
            .query_map(rusqlite::params![who.to_string(), admin], stored)
            .map_err(storage_error)?;
        let mut list = Vec::new();
        for s in rows {
            let s = s.map_err(storage_error)?;
            list.push(self.representation(&s, false)?["m2m:sdo"].clone());
        }
        Ok(Response::new(
            Rsc::Ok,
            rqi,
            Some(json!({ "m2m:sdoL": list })),
        ))
    }
}

/// An AE or CSE is gone (deregistered, expired): its objects go, and it reads no other's.
pub fn owner_gone(cse: &Context, entity: &EntityId) {
    let Some(storage) = cse.secure_storage.as_ref() else {
        return;
    };
    let gone = entity.to_string();
    let db = storage.lock();
    let result = (|| -> rusqlite::Result<(usize, usize)> {
        let deleted = db.execute("DELETE FROM sdo WHERE owner = ?1", [&gone])?;
        // Readers are part of each object's sealed associated data: re-seal those that named it.
        let mut stmt = db.prepare(&format!("{COLUMNS} WHERE readers != '[]'"))?;
        let rows = stmt
            .query_map([], stored)?
            .collect::<rusqlite::Result<Vec<Stored>>>()?;
        let mut changed = 0;
        for s in rows {
            if !s.readers.contains(&gone) {
                continue;
            }
            let new: Vec<String> = s.readers.iter().filter(|r| **r != gone).cloned().collect();
            let Some(clear) = m2m_keyservices::at_rest::open(
                &storage.cipher,
                &s.nonce,
                &s.sealed,
                &SecureStorage::aad(&s.ri, &s.owner, &s.rn, &s.readers),
            ) else {
                continue;
            };
            let Ok((nonce, sealed)) = m2m_keyservices::at_rest::seal(
                &storage.cipher,
                &clear,
                &SecureStorage::aad(&s.ri, &s.owner, &s.rn, &new),
            ) else {
                continue;
            };
            db.execute(
                "UPDATE sdo SET readers = ?2, nonce = ?3, sealed = ?4 WHERE ri = ?1",
                rusqlite::params![
                    s.ri,
                    serde_json::to_string(&new).expect("strings serialize"),
                    nonce.to_vec(),
                    sealed
                ],
            )?;
            changed += 1;
        }
        Ok((deleted, changed))
    })();
    match result {
        Ok((0, 0)) => {}
        Ok((deleted, changed)) => {
            tracing::info!(target: "audit", entity = %gone, deleted, reader_removed_from = changed, "secure storage: an owner is gone");
        }
        Err(e) => {
            tracing::error!(target: "audit", entity = %gone, error = %e, "secure storage: the objects of a gone owner could not be removed");
        }
    }
}

fn valid_name(rn: &str) -> bool {
    !rn.is_empty()
        && rn.len() <= 64
        && rn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
