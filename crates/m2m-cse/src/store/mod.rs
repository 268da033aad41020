//! The resource store: every resource of the CSE in one embedded SQLite database.
//!
//! A resource is kept as its JSON representation (short names) plus the columns the CSE looks it
//! up by: resourceID, structured name (`cse-in/ae1/cnt`), parent, type and expiration, and those
//! discovery searches by ([`schema`]). Writes go through one connection in WAL mode, one
//! transaction per request, so an acknowledged write is in the log before the response leaves: it
//! survives `kill -9` (and, with `sync = "full"`, power loss). The log stays bounded ([`wal`]).
//! Reads use a small pool of their own connections and never wait for a writer; discovery reads
//! candidates from indexes in name order ([`scan`]).
//!
//! `resources.db` and SQLite's `-wal`/`-shm` files are 0600 in a 0700 directory: created so, an
//! existing one that group or others may read is tightened (logged), one they may write is refused
//! ([`m2m_security::data_files`]).

use crate::config::SyncMode;
use m2m_core::{M2mError, M2mResult, ResourceType};
use m2m_security::credentials::CredentialId;
use m2m_security::data_files;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod cache;
pub mod encryption;
pub mod scan;
pub mod schema;
mod wal;

use cache::{Cache, Key};
use std::cell::RefCell;
use std::sync::Arc;

use schema::IndexColumns;

/// One stored resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Creation order; increases monotonically and is never reused.
    pub seq: i64,
    pub ty: ResourceType,
    /// Structured resource name relative to the CSE, e.g. `cse-in/ae1/cnt`.
    pub srn: String,
    /// All attributes, short names, including `ri`, `pi`, `rn`, `ty`, `ct`, `lt`, `et`.
    pub attrs: Map<String, Value>,
    /// The originator of the CREATE: the only one the default access policy admits when the
    /// resource has no accessControlPolicyIDs (TS-0001 table 9.6.1.3.2-1). Not an attribute.
    pub creator: Option<String>,
    /// The specialization a `<flexContainer>` (or its instance) is represented under, kept
    /// where its containerDefinition cannot tell it (TS-0004 Annex J: `m2m:gis`). Fixed at
    /// creation. Not an attribute.
    pub specialization: Option<String>,
}

impl Resource {
    /// The JSON root name of its representation: its type's (`m2m:cnt`), or for a
    /// `<flexContainer>` (and its instances) or `<mgmtObj>` its specialization's (`cod:lock`,
    /// `m2m:fwr`).
    pub fn root_name(&self) -> std::borrow::Cow<'static, str> {
        if self.ty == ResourceType::MgmtObj {
            if let Some(spec) = self.mgmt_spec() {
                return std::borrow::Cow::Borrowed(spec.root);
            }
        }
        if matches!(
            self.ty,
            ResourceType::FlexContainer | ResourceType::FlexContainerInstance
        ) {
            if let Some(spec) = self.flex_specialization() {
                return std::borrow::Cow::Owned(spec.key);
            }
        }
        std::borrow::Cow::Borrowed(self.ty.root_name())
    }

    /// The specialization of a stored `<mgmtObj>` (its mgmtDefinition).
    pub fn mgmt_spec(&self) -> Option<&'static m2m_core::mgmt_obj::MgmtSpec> {
        self.u64_attr("mgd").and_then(m2m_core::mgmt_obj::by_mgd)
    }

    /// The specialization of a flexContainer or its instance: the one kept with it, or the one
    /// its containerDefinition names (stored before the CSE kept it, or kept under a key the
    /// definitions no longer have).
    pub fn flex_specialization(&self) -> Option<m2m_core::specialization::Specialization> {
        self.specialization
            .as_deref()
            .and_then(m2m_core::specialization::by_key)
            .or_else(|| {
                self.str_attr("cnd")
                    .and_then(m2m_core::specialization::by_cnd)
            })
    }

    pub fn ri(&self) -> &str {
        self.str_attr("ri").unwrap_or("")
    }
    pub fn pi(&self) -> &str {
        self.str_attr("pi").unwrap_or("")
    }
    pub fn rn(&self) -> &str {
        self.str_attr("rn").unwrap_or("")
    }
    pub fn str_attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).and_then(Value::as_str)
    }
    /// The creator as the entity it names (stored in absolute form, compared as an identity).
    pub fn creator_entity(&self, home: &m2m_core::Home) -> Option<m2m_core::EntityId> {
        self.creator
            .as_deref()
            .and_then(|c| m2m_core::EntityId::parse(c, home).ok())
    }
    pub fn u64_attr(&self, name: &str) -> Option<u64> {
        self.attrs.get(name).and_then(Value::as_u64)
    }
    pub fn et(&self) -> Option<&str> {
        self.str_attr("et")
    }
}

/// The strings of a JSON list attribute (lists of IDs, URIs, patterns); anything else is empty.
pub fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn internal(e: rusqlite::Error) -> M2mError {
    tracing::error!(error = %e, "store failure");
    M2mError::internal("storage failure")
}

/// A SELECT of the columns `row_to_resource` reads, followed by `$rest`: the statement texts are
/// constants (prepared once, cached by text), not formatted per query.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT seq, ty, srn, doc, creator, spec FROM resources ",
            $rest
        )
    };
}

const BY_RI: &str = select!("WHERE ri = ?1");
const BY_SEQ: &str = select!("WHERE seq = ?1");
const BY_SRN: &str = select!("WHERE srn = ?1");
const CHILDREN_OF_TYPE: &str = select!("WHERE pi = ?1 AND ty = ?2 ORDER BY seq");
const CHILDREN: &str = select!("WHERE pi = ?1 ORDER BY seq");
const LATEST_CHILD: &str = select!("WHERE pi = ?1 AND ty = ?2 ORDER BY seq DESC LIMIT 1");
const OLDEST_CHILD: &str = select!("WHERE pi = ?1 AND ty = ?2 ORDER BY seq ASC LIMIT 1");
const LATEST_CHILDREN: &str = select!("WHERE pi = ?1 AND ty = ?2 ORDER BY seq DESC LIMIT ?3");
const EXPIRED: &str = select!("WHERE et IS NOT NULL AND et < ?1 ORDER BY et LIMIT ?2");
const OF_TYPE: &str = select!("WHERE ty = ?1 ORDER BY seq");
const OF_TYPE_IN_SUBTREE: &str =
    select!("INDEXED BY resources_type WHERE ty = ?1 AND srn >= ?2 AND srn < ?3");

fn row_to_resource(row: &Row<'_>) -> rusqlite::Result<Resource> {
    let seq: i64 = row.get(0)?;
    let ty: u16 = row.get(1)?;
    let srn: String = row.get(2)?;
    let doc: String = row.get(3)?;
    let creator: Option<String> = row.get(4)?;
    let specialization: Option<String> = row.get(5)?;
    let attrs: Map<String, Value> = serde_json::from_str(&doc).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let ty = ResourceType::from_code(ty).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Integer,
            format!("unknown ty {ty}").into(),
        )
    })?;
    Ok(Resource {
        seq,
        ty,
        srn,
        attrs,
        creator,
        specialization,
    })
}

use scan::subtree_bounds;

/// A write job for the writer thread. It is called with `None` when no transaction could be
/// started; it returns whether its changes are to be kept, and what to do once the batch's fate
/// (committed or not) is known.
type Job = Box<dyn for<'a, 'c> FnOnce(Option<&'a Writer<'c>>) -> (bool, Finisher) + Send>;
type Finisher = Box<dyn FnOnce(bool) + Send>;

pub struct Store {
    path: PathBuf,
    /// The key of a store encrypted at rest, for every connection opened.
    key: Option<Arc<encryption::StoreKey>>,
    /// The storage directory's lock ([`lock_dir`]), held as long as the store is open.
    _lock: std::fs::File,
    jobs: std::sync::mpsc::Sender<Job>,
    readers: Mutex<Vec<Connection>>,
    cache: Arc<Cache>,
}

/// The keys of a store encrypted at rest ([`encryption`]): none keeps it in the clear.
#[derive(Debug, Default)]
pub struct AtRest {
    /// The key the store is (or is to be) encrypted under.
    pub key: Option<encryption::StoreKey>,
    /// The key it may still be encrypted under: re-encrypted under `key` at open.
    pub previous: Option<encryption::StoreKey>,
}

/// Takes the storage directory for this process: an exclusive lock on `resources.lock` (0600),
/// held while the returned file is open and dropped by the system when the process ends, however
/// it ends. A second process on the same directory (another CSE, `m2m store encrypt` while a CSE
/// runs) is refused: two writers of one database, or a conversion replacing the file under a
/// CSE, would lose data.
pub fn lock_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("resources.lock");
    if let Some(t) = data_files::private_file(&path).map_err(anyhow::Error::msg)? {
        tracing::warn!("resource store: {t}");
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "{}: another process (a CSE, m2m store) has this storage directory open",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("{}: {e}", path.display())
        }
    }
}

/// A connection to the store, keyed (before anything is read) when it is encrypted.
fn open_keyed(
    path: &Path,
    flags: OpenFlags,
    key: Option<&encryption::StoreKey>,
) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(path, flags)?;
    if let Some(k) = key {
        k.apply(&c)?;
    }
    Ok(c)
}

/// The most write jobs committed together.
const MAX_BATCH: usize = 256;

impl Store {
    /// Opens (or creates) the database `resources.db` in `dir` in the clear and starts its writer
    /// thread.
    #[cfg(test)]
    pub fn open(dir: &Path, sync: SyncMode) -> anyhow::Result<Self> {
        Self::open_at_rest(dir, sync, AtRest::default())
    }

    /// Opens (or creates) `resources.db` in `dir`, encrypted under `at_rest.key` when there is
    /// one ([`encryption`]), and starts its writer thread.
    pub fn open_at_rest(dir: &Path, sync: SyncMode, at_rest: AtRest) -> anyhow::Result<Self> {
        let path = dir.join("resources.db");
        let mut tightened = vec![data_files::private_dir(dir).map_err(anyhow::Error::msg)?];
        let lock = lock_dir(dir)?;
        for suffix in ["-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            tightened.push(
                data_files::existing_private_file(Path::new(&p)).map_err(anyhow::Error::msg)?,
            );
        }
        // Created 0600 before SQLite opens it: SQLite would create it with the umask's mode, and
        // gives its -wal and -shm files the database's mode.
        tightened.push(data_files::private_file(&path).map_err(anyhow::Error::msg)?);
        for t in tightened.into_iter().flatten() {
            tracing::warn!("resource store: {t}");
        }
        let keys = encryption::Keys {
            current: at_rest.key.as_ref(),
            previous: at_rest.previous.as_ref(),
            adopt_plain: false,
        };
        if let Some(done) = encryption::prepare(&path, &keys)? {
            tracing::warn!("{done}");
        }
        let key = at_rest.key.map(Arc::new);
        let writer = open_keyed(&path, OpenFlags::default(), key.as_deref())?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(
            None,
            "synchronous",
            if sync == SyncMode::Full {
                "FULL"
            } else {
                "NORMAL"
            },
        )?;
        writer.busy_timeout(std::time::Duration::from_secs(5))?;
        // Each request runs under a savepoint, whose journal SQLite otherwise keeps in a
        // temporary file: a write system call for every page a request changes.
        writer.pragma_update(None, "temp_store", "MEMORY")?;
        schema::prepare(&writer)?;
        let (wal_limit, checkpointer) = wal::policy(&path);
        wal_limit.configure(&writer)?;
        // Checkpoints copy the log into the database and sync it; done on the writer they stall
        // every write behind them, so a thread of their own runs them instead.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpoint_conn = open_keyed(&path, OpenFlags::default(), key.as_deref())?;
        checkpoint_conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // The writer holds `stop` and drops it when it ends (the store was dropped): the
        // checkpointer then ends too instead of outliving its store.
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("m2m-store-checkpoint".into())
            .spawn(move || checkpointer.run(checkpoint_conn, stopped))?;
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let cache = Arc::new(Cache::default());
        let writer_cache = Arc::clone(&cache);
        std::thread::Builder::new()
            .name("m2m-store-writer".into())
            .spawn(move || {
                writer_loop(writer, rx, wal_limit, &writer_cache);
                drop(stop);
            })?;
        Ok(Self {
            path,
            key,
            _lock: lock,
            jobs,
            readers: Mutex::new(Vec::new()),
            cache,
        })
    }

    fn open_reader(&self) -> M2mResult<Connection> {
        let c = open_keyed(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            self.key.as_deref(),
        )
        .map_err(internal)?;
        c.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(internal)?;
        Ok(c)
    }

    /// Runs `f` on a pooled read connection.
    pub fn read<T>(&self, f: impl FnOnce(&Reader<'_>) -> M2mResult<T>) -> M2mResult<T> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => self.open_reader()?,
        };
        let out = f(&Reader { conn: &conn });
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 16 {
            pool.push(conn);
        }
        out
    }

    /// Hands `f` to the writer thread, which runs it inside a transaction shared with other
    /// writes (group commit) under a savepoint of its own: `f`'s changes are kept only if it
    /// succeeds, and the result is delivered only once the transaction is committed.
    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> M2mResult<T> + Send + 'static,
        deliver: impl FnOnce(M2mResult<T>) + Send + 'static,
    ) {
        let job: Job = Box::new(move |w| match w {
            None => (
                false,
                Box::new(move |_| deliver(Err(M2mError::internal("storage failure")))),
            ),
            Some(w) => {
                let r = f(w);
                let keep = r.is_ok();
                (
                    keep,
                    Box::new(move |committed| {
                        deliver(if committed || r.is_err() {
                            r
                        } else {
                            Err(M2mError::internal("storage failure"))
                        })
                    }),
                )
            }
        });
        // The writer thread only ends when the store is dropped.
        let _ = self.jobs.send(job);
    }

    /// Runs `f` in a write transaction and waits for the commit.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> M2mResult<T> + Send + 'static,
    ) -> M2mResult<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, move |r| {
            let _ = tx.send(r);
        });
        rx.await
            .unwrap_or_else(|_| Err(M2mError::internal("storage writer failed")))
    }

    /// Same as [`Store::write`] for code that is not async (start-up, tests).
    pub fn write_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> M2mResult<T> + Send + 'static,
    ) -> M2mResult<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(f, move |r| {
            let _ = tx.send(r);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(M2mError::internal("storage writer failed")))
    }

    /// Changes after every commit that wrote or deleted a `<remoteCSE>`: read it before reading
    /// the registrees to know whether what was derived from them is still theirs.
    pub fn registrees_generation(&self) -> u64 {
        self.cache.registrees_generation()
    }

    /// A resource by resourceID, from the cache of hot resources or the store.
    pub fn get(&self, ri: &str) -> M2mResult<Option<Resource>> {
        Ok(self.get_shared(ri)?.map(|r| Resource::clone(&r)))
    }

    /// A resource by resourceID as the cache of hot resources holds it, not copied: for a look
    /// at a few attributes on every request (the originator checks), where a copy of the whole
    /// resource would cost more than the look.
    pub fn get_shared(&self, ri: &str) -> M2mResult<Option<Arc<Resource>>> {
        self.cache
            .get(Key::Ri(ri.to_owned()), || self.read(|r| r.get(ri)))
    }

    /// A resource by structured name, from the cache of hot resources or the store.
    pub fn get_by_srn(&self, srn: &str) -> M2mResult<Option<Resource>> {
        self.cached(Key::Srn(srn.to_owned()), |r| r.get_by_srn(srn))
    }

    /// A resource by structured name as the cache holds it, not copied (see [`Self::get_shared`]).
    pub fn get_by_srn_shared(&self, srn: &str) -> M2mResult<Option<Arc<Resource>>> {
        self.cache.get(Key::Srn(srn.to_owned()), || {
            self.read(|r| r.get_by_srn(srn))
        })
    }

    /// The newest instance of a container or timeSeries (`la`), cached.
    pub fn latest_instance(&self, parent: &Resource) -> M2mResult<Option<Resource>> {
        let Some(ty) = parent.ty.instance_type() else {
            return Ok(None);
        };
        self.cached(Key::Latest(parent.ri().to_owned()), |r| {
            r.latest_child(parent.ri(), ty)
        })
    }

    /// The oldest instance of a container or timeSeries (`ol`), cached.
    pub fn oldest_instance(&self, parent: &Resource) -> M2mResult<Option<Resource>> {
        let Some(ty) = parent.ty.instance_type() else {
            return Ok(None);
        };
        self.cached(Key::Oldest(parent.ri().to_owned()), |r| {
            r.oldest_child(parent.ri(), ty)
        })
    }

    fn cached(
        &self,
        key: Key,
        load: impl FnOnce(&Reader<'_>) -> M2mResult<Option<Resource>>,
    ) -> M2mResult<Option<Resource>> {
        let entry = self.cache.get(key, || self.read(load))?;
        Ok(entry.map(|r| Resource::clone(&r)))
    }
}

/// The cache keys a batch's writes touched, invalidated after its commit, and the values written
/// for those of them the cache held (write-through: a busy container, updated by every instance
/// created in it, is not read back and parsed again by the next request).
#[derive(Default)]
struct Changes {
    /// Every key a write touched, in the order written, with the value the write left when the
    /// cache may take it; the last entry of a key decides (a later write that leaves no value,
    /// an update of an instance or a deletion, makes the key only invalidated). Append-only, so
    /// a job rolled back is cut off by its length at the job's start.
    log: Vec<(Key, Option<Arc<Resource>>)>,
    /// A subtree went: everything is forgotten.
    everything: bool,
    /// A `<remoteCSE>` was written or deleted: what is derived from them all is out of date.
    remote_cses: bool,
}

impl Changes {
    fn keys_of(res: &Resource) -> [Option<Key>; 4] {
        let instance = res.ty.is_instance();
        [
            Some(Key::Srn(res.srn.clone())),
            Some(Key::Ri(res.ri().to_owned())),
            instance.then(|| Key::Latest(res.pi().to_owned())),
            instance.then(|| Key::Oldest(res.pi().to_owned())),
        ]
    }

    /// `res` was inserted (`inserted`) or updated: its keys are invalidated, and where the cache
    /// holds them, refreshed with it. An inserted instance is the newest of its type under its
    /// parent (the highest `seq`): it refreshes a cached newest of the same type only; the
    /// oldest is only invalidated.
    fn written(&mut self, res: &Resource, inserted: bool, cache: &Cache) {
        self.remote_cses |= res.ty == ResourceType::RemoteCse;
        let mut shared = None;
        // Both names of the resource carry its value when the cache holds either: the cache
        // takes back only the keys it held (`Cache::invalidate`), and the writer's own reads
        // (`Writer::get_as_committed`) find it under whichever key they look at last.
        let keys = Self::keys_of(res);
        let named = keys[..2].iter().flatten().any(|k| cache.holds(k, |_| true));
        for key in keys.into_iter().flatten() {
            let refresh = match key {
                Key::Srn(_) | Key::Ri(_) => named,
                Key::Latest(_) => {
                    inserted && cache.holds(&key, |e| e.as_ref().is_some_and(|l| l.ty == res.ty))
                }
                Key::Oldest(_) => false,
            };
            let value =
                refresh.then(|| Arc::clone(shared.get_or_insert_with(|| Arc::new(res.clone()))));
            self.log.push((key, value));
        }
    }

    /// `res` was deleted: its keys are invalidated, whatever was written to them before.
    fn deleted(&mut self, res: &Resource) {
        self.remote_cses |= res.ty == ResourceType::RemoteCse;
        for key in Self::keys_of(res).into_iter().flatten() {
            self.log.push((key, None));
        }
    }

    /// After the batch: a commit invalidates every key touched and puts back the value each
    /// key's last write left; a failed commit only invalidates (nothing of it is stored).
    fn apply(self, cache: &Cache, committed: bool) {
        // After the commit and the cache's invalidation: a reader that reads the generation and
        // then the store (or the cache) sees at least the writes the generation counts.
        let registrees = self.remote_cses;
        if self.everything {
            cache.clear();
            cache.registrees_changed();
            return;
        }
        let mut fresh = Vec::new();
        if committed {
            let mut seen = std::collections::HashSet::new();
            for (key, value) in self.log.iter().rev() {
                if seen.insert(key) {
                    if let Some(v) = value {
                        fresh.push((key.clone(), Arc::clone(v)));
                    }
                }
            }
        }
        let keys: Vec<Key> = self.log.into_iter().map(|(k, _)| k).collect();
        cache.invalidate(&keys, fresh);
        if registrees {
            cache.registrees_changed();
        }
    }
}

/// The writer thread: takes every job waiting, runs each under its own savepoint inside one
/// transaction, commits once, then tells every job whether it was committed.
fn writer_loop(
    conn: Connection,
    rx: std::sync::mpsc::Receiver<Job>,
    mut wal: wal::WalLimit,
    cache: &Cache,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut finishers = Vec::with_capacity(batch.len());
        let changes = RefCell::new(Changes::default());
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            internal(e);
            for job in batch {
                finishers.push(job(None).1);
            }
            finishers.into_iter().for_each(|f| f(false));
            continue;
        }
        // SQLite rolls the whole transaction back by itself after some errors (a full disk, an
        // I/O error, no memory): what the batch's jobs wrote is gone, the log's values with it.
        let mut lost = false;
        for job in batch {
            if lost {
                finishers.push(job(None).1);
                continue;
            }
            if let Err(e) = conn.execute_batch("SAVEPOINT job") {
                internal(e);
                finishers.push(job(None).1);
                continue;
            }
            let w = Writer {
                reader: Reader { conn: &conn },
                changes: &changes,
                cache,
            };
            // A job undone writes nothing through to the cache (its keys are still invalidated).
            let logged_before = changes.borrow().log.len();
            // A panicking job must not take the writer down with it.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Some(&w))));
            let keep = matches!(outcome, Ok((true, _)));
            let end = if keep {
                "RELEASE job"
            } else {
                let mut c = changes.borrow_mut();
                let undone: Vec<Key> = c.log.drain(logged_before..).map(|(k, _)| k).collect();
                c.log.extend(undone.into_iter().map(|k| (k, None)));
                "ROLLBACK TO job; RELEASE job"
            };
            if let Err(e) = conn.execute_batch(end) {
                internal(e);
            }
            if conn.is_autocommit() {
                // No transaction any more: nothing of the batch will be committed, the rest of
                // it does not run (a SAVEPOINT would open a new transaction under a log that
                // remembers writes the database no longer has), and the cache forgets all.
                tracing::error!("the store's write transaction was rolled back by SQLite");
                lost = true;
                changes.borrow_mut().everything = true;
            }
            if let Ok((_, fin)) = outcome {
                finishers.push(fin);
            }
        }
        let committed = !lost
            && match conn.execute_batch("COMMIT") {
                Ok(()) => true,
                Err(e) => {
                    internal(e);
                    let _ = conn.execute_batch("ROLLBACK");
                    false
                }
            };
        // Before any request of the batch is answered: read-your-writes through the cache.
        changes.into_inner().apply(cache, committed);
        finishers.into_iter().for_each(|f| f(committed));
        wal.after_batch(&conn);
    }
}

/// Who may register an AE-ID again once its `<AE>` has gone (deregistered, expired): the
/// credential it registered with binds the identity (TS-0003 clause 7.2.1), as the Credential-ID
/// an IN-CSE keeps for an S-stem AE-ID does (TS-0001 clause 10.2.2.2, step 005b). Only the
/// administrator's DELETE of the `<AE>` frees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AeIdHolder {
    /// An association bound to the AE-ID (a PSK row, certificate, MAF, MEF or BSF key naming it).
    Itself,
    /// The credential, bound to no entity, it registered with (or an association bound to it).
    Credential(CredentialId),
}

/// The registered AEs bound to a credential that names no entity: their holders of that kind
/// whose `<AE>` exists (so the binding goes with the registration, the holder stays).
const BOUND_TO_CREDENTIAL_ALL: &str = "SELECT h.ae_id, h.credential_id FROM ae_id_holders h \
     JOIN resources r ON r.ri = h.ae_id AND r.ty = 2 \
     WHERE h.credential_id IS NOT NULL ORDER BY h.ae_id";
const BOUND_TO_CREDENTIAL_ONE: &str = "SELECT h.credential_id FROM ae_id_holders h \
     JOIN resources r ON r.ri = h.ae_id AND r.ty = 2 \
     WHERE h.ae_id = ?1 AND h.credential_id IS NOT NULL";

/// Queries, on a read connection or inside a write transaction.
pub struct Reader<'c> {
    pub(super) conn: &'c Connection,
}

impl Reader<'_> {
    fn one(&self, sql: &str, p: impl rusqlite::Params) -> M2mResult<Option<Resource>> {
        let mut st = self.conn.prepare_cached(sql).map_err(internal)?;
        st.query_row(p, row_to_resource)
            .optional()
            .map_err(internal)
    }

    fn many(&self, sql: &str, p: impl rusqlite::Params) -> M2mResult<Vec<Resource>> {
        let mut st = self.conn.prepare_cached(sql).map_err(internal)?;
        let rows = st.query_map(p, row_to_resource).map_err(internal)?;
        rows.collect::<Result<_, _>>().map_err(internal)
    }

    pub fn get(&self, ri: &str) -> M2mResult<Option<Resource>> {
        self.one(BY_RI, [ri])
    }

    pub fn get_by_srn(&self, srn: &str) -> M2mResult<Option<Resource>> {
        self.one(BY_SRN, [srn])
    }

    /// The resource a [`scan::Key`] names (`None`: deleted since the key was read).
    pub fn get_by_seq(&self, seq: i64) -> M2mResult<Option<Resource>> {
        self.one(BY_SEQ, [seq])
    }

    /// Direct children, in creation order, optionally of one type.
    pub fn children(&self, pi: &str, ty: Option<ResourceType>) -> M2mResult<Vec<Resource>> {
        match ty {
            Some(ty) => self.many(CHILDREN_OF_TYPE, params![pi, ty.code()]),
            None => self.many(CHILDREN, [pi]),
        }
    }

    /// How many children of type `ty` the resource `pi` has.
    pub fn count_children(&self, pi: &str, ty: ResourceType) -> M2mResult<u64> {
        self.conn
            .prepare_cached("SELECT COUNT(*) FROM resources WHERE pi = ?1 AND ty = ?2")
            .and_then(|mut st| st.query_row(params![pi, ty.code()], |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
            .map_err(internal)
    }

    /// Whether a direct child of `pi` expires after `et` (a normalized timestamp; see
    /// [`m2m_core::time::normalize`]): stops at the first.
    pub fn child_outlives(&self, pi: &str, et: &str) -> M2mResult<bool> {
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM resources WHERE pi = ?1 AND et > ?2 LIMIT 1")
            .map_err(internal)?;
        st.exists(params![pi, et]).map_err(internal)
    }

    /// The newest direct child of a type (`la`).
    pub fn latest_child(&self, pi: &str, ty: ResourceType) -> M2mResult<Option<Resource>> {
        self.one(LATEST_CHILD, params![pi, ty.code()])
    }

    /// The `n` newest direct children of a type, newest first.
    pub fn latest_children(&self, pi: &str, ty: ResourceType, n: u64) -> M2mResult<Vec<Resource>> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.many(LATEST_CHILDREN, params![pi, ty.code(), n])
    }

    /// The oldest direct child of a type (`ol`).
    pub fn oldest_child(&self, pi: &str, ty: ResourceType) -> M2mResult<Option<Resource>> {
        self.one(OLDEST_CHILD, params![pi, ty.code()])
    }

    /// Resources whose expiration time lies before `now` (normalized timestamps), oldest first.
    pub fn expired(&self, now: &str, limit: u32) -> M2mResult<Vec<Resource>> {
        self.many(EXPIRED, params![now, limit])
    }

    /// The Credential-ID a registered AE registered with, when its credential named no entity
    /// (its [`AeIdHolder::Credential`], while its `<AE>` exists).
    pub fn credential_of(&self, ae_id: &str) -> M2mResult<Option<String>> {
        let mut st = self
            .conn
            .prepare_cached(BOUND_TO_CREDENTIAL_ONE)
            .map_err(internal)?;
        st.query_row([ae_id], |r| r.get(0))
            .optional()
            .map_err(internal)
    }

    /// Who may register the AE-ID `ae_id` (its stem) again: recorded at each registration
    /// over a security association, kept when the AE goes.
    pub fn holder_of(&self, ae_id: &str) -> M2mResult<Option<AeIdHolder>> {
        Ok(self.holding(ae_id)?.map(|(holder, _)| holder))
    }

    /// [`Reader::holder_of`], with the Credential-ID of the association the AE-ID last
    /// registered over (`None` for a holder of its own AE-ID recorded before schema version 5).
    pub fn holding(&self, ae_id: &str) -> M2mResult<Option<(AeIdHolder, Option<CredentialId>)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT credential_id, registered_with FROM ae_id_holders WHERE ae_id = ?1",
            )
            .map_err(internal)?;
        let held: Option<(Option<String>, Option<String>)> = st
            .query_row([ae_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(internal)?;
        let parse = |c: &str| {
            CredentialId::parse(c)
                .map_err(|e| M2mError::internal(format!("stored Credential-ID: {e}")))
        };
        held.map(|(credential, registered_with)| {
            let holder = match credential {
                None => AeIdHolder::Itself,
                Some(c) => AeIdHolder::Credential(parse(&c)?),
            };
            Ok((holder, registered_with.as_deref().map(parse).transpose()?))
        })
        .transpose()
    }

    /// Every AE registered with a credential not bound to it: (AE-ID-Stem, Credential-ID).
    pub fn credential_bindings(&self) -> M2mResult<Vec<(String, String)>> {
        let mut st = self
            .conn
            .prepare_cached(BOUND_TO_CREDENTIAL_ALL)
            .map_err(internal)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(internal)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(internal)
    }

    /// Resources of one type anywhere in the tree.
    pub fn all_of_type(&self, ty: ResourceType) -> M2mResult<Vec<Resource>> {
        self.many(OF_TYPE, [ty.code()])
    }

    /// Whether the one-off task `task` (a migration's work the CSE does at start) is still to do.
    pub fn upkeep_pending(&self, task: &str) -> M2mResult<bool> {
        self.conn
            .prepare_cached("SELECT 1 FROM upkeep WHERE task = ?1")
            .and_then(|mut s| s.exists([task]))
            .map_err(internal)
    }
}

/// Changes inside one write transaction. Dereferences to [`Reader`] for reads that must see them.
pub struct Writer<'c> {
    reader: Reader<'c>,
    changes: &'c RefCell<Changes>,
    cache: &'c Cache,
}

impl<'c> std::ops::Deref for Writer<'c> {
    type Target = Reader<'c>;
    fn deref(&self) -> &Reader<'c> {
        &self.reader
    }
}

impl Writer<'_> {
    /// A resource by resourceID as this transaction sees it, without parsing it again when it
    /// can: when a write of this batch touched it, the value the last such write left (the log
    /// keeps it for what the cache holds; a job rolled back left none), which is what the
    /// transaction reads; when none did, the cache's, which is the committed value (the writer
    /// refreshes or drops what each batch wrote before the next one starts, and a reader never
    /// fills in a value older than the last commit). A CREATE reads its parent so: under load,
    /// the CREATEs of one batch under one container each changed it before the next.
    /// `srn` is the structured name the resource had when the caller read it: the cache may
    /// hold it under either key (a request's target is looked up by name).
    pub fn get_as_committed(&self, ri: &str, srn: &str) -> M2mResult<Option<Resource>> {
        let keys = [Key::Ri(ri.to_owned()), Key::Srn(srn.to_owned())];
        // None: untouched; Some(None): touched, and only the database knows the value.
        let written = {
            let c = self.changes.borrow();
            if c.everything {
                Some(None)
            } else {
                c.log
                    .iter()
                    .rev()
                    .find(|(k, _)| keys.contains(k))
                    .map(|(_, v)| v.clone())
            }
        };
        match written {
            Some(Some(last)) if last.ri() == ri => return Ok(Some(Resource::clone(&last))),
            Some(_) => return self.reader.get(ri),
            None => {}
        }
        for key in &keys {
            if let Some(Some(cached)) = self.cache.peek(key) {
                if cached.ri() == ri {
                    return Ok(Some(Resource::clone(&cached)));
                }
            }
        }
        self.reader.get(ri)
    }

    /// Inserts a new resource; returns it with its sequence number. A taken resourceID or name is a CONFLICT.
    pub fn insert(&self, mut res: Resource) -> M2mResult<Resource> {
        let doc =
            serde_json::to_string(&res.attrs).map_err(|e| M2mError::internal(e.to_string()))?;
        let c = IndexColumns::of(&res.attrs);
        let conn = self.reader.conn;
        let mut st = conn
            .prepare_cached(
                "INSERT INTO resources (ri, srn, pi, ty, et, doc, creator, rn, ct, lt, cs, cty, spec) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .map_err(internal)?;
        match st.execute(params![
            res.ri(),
            res.srn,
            res.pi(),
            res.ty.code(),
            c.et,
            doc,
            res.creator,
            c.rn,
            c.ct,
            c.lt,
            c.cs,
            c.cty,
            res.specialization
        ]) {
            Ok(_) => {
                res.seq = conn.last_insert_rowid();
                self.put_labels(&res.srn, res.seq, &c.labels)?;
                self.changes.borrow_mut().written(&res, true, self.cache);
                Ok(res)
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(M2mError::conflict(format!(
                    "a resource named '{}' or with ID '{}' already exists",
                    res.rn(),
                    res.ri()
                )))
            }
            Err(e) => Err(internal(e)),
        }
    }

    fn put_labels(&self, srn: &str, seq: i64, labels: &[String]) -> M2mResult<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let mut st = self
            .reader
            .conn
            .prepare_cached(schema::LABEL_INSERT)
            .map_err(internal)?;
        for l in labels {
            st.execute(params![l, srn, seq]).map_err(internal)?;
        }
        Ok(())
    }

    /// Replaces the stored attributes of an existing resource. Only the searchable columns whose
    /// values changed are written: SQLite rewrites the index entries of every column an UPDATE
    /// sets, and most updates (a container's counters after each new instance) change none.
    pub fn update(&self, res: &Resource) -> M2mResult<()> {
        let doc =
            serde_json::to_string(&res.attrs).map_err(|e| M2mError::internal(e.to_string()))?;
        let new = IndexColumns::of(&res.attrs);
        let conn = self.reader.conn;
        let (old, creator, spec) = conn
            .prepare_cached(
                "SELECT rn, ct, lt, et, cs, cty, creator, spec FROM resources WHERE seq = ?1",
            )
            .and_then(|mut st| {
                st.query_row([res.seq], |r| {
                    let columns = IndexColumns {
                        rn: r.get(0)?,
                        ct: r.get(1)?,
                        lt: r.get(2)?,
                        et: r.get(3)?,
                        cs: r.get(4)?,
                        cty: r.get(5)?,
                        labels: Vec::new(),
                    };
                    let creator: Option<String> = r.get(6)?;
                    let spec: Option<String> = r.get(7)?;
                    Ok((columns, creator, spec))
                })
                .optional()
            })
            .map_err(internal)?
            .ok_or_else(|| M2mError::not_found(format!("resource '{}' disappeared", res.ri())))?;
        let mut sql = String::from("UPDATE resources SET doc = ?1");
        let mut values: Vec<rusqlite::types::Value> = vec![doc.into(), res.seq.into()];
        let mut set = |column: &str, changed: bool, value: rusqlite::types::Value| {
            if changed {
                values.push(value);
                sql.push_str(&format!(", {column} = ?{}", values.len()));
            }
        };
        set("rn", old.rn != new.rn, new.rn.clone().into());
        set("ct", old.ct != new.ct, new.ct.clone().into());
        set("lt", old.lt != new.lt, new.lt.clone().into());
        set("et", old.et != new.et, new.et.clone().into());
        set("cs", old.cs != new.cs, new.cs.into());
        set("cty", old.cty != new.cty, new.cty.clone().into());
        // Not attributes, but kept with the resource as it is (the cache holds it so too).
        set(
            "creator",
            creator != res.creator,
            res.creator.clone().into(),
        );
        set(
            "spec",
            spec != res.specialization,
            res.specialization.clone().into(),
        );
        sql.push_str(" WHERE seq = ?2");
        conn.prepare_cached(&sql)
            .and_then(|mut st| st.execute(rusqlite::params_from_iter(values)))
            .map_err(internal)?;
        let old_labels: Vec<String> = conn
            .prepare_cached("SELECT lbl FROM labels WHERE srn = ?1 ORDER BY lbl")
            .and_then(|mut st| {
                st.query_map([&res.srn], |r| r.get(0))?
                    .collect::<Result<_, _>>()
            })
            .map_err(internal)?;
        if old_labels != new.labels {
            conn.prepare_cached("DELETE FROM labels WHERE srn = ?1")
                .and_then(|mut s| s.execute([&res.srn]))
                .map_err(internal)?;
            self.put_labels(&res.srn, res.seq, &new.labels)?;
        }
        self.changes.borrow_mut().written(res, false, self.cache);
        Ok(())
    }

    /// Deletes a resource and its whole subtree. Returns the resource and those of its
    /// descendants whose type is in `reported` (deleting a container of a million
    /// contentInstances does not read them).
    pub fn delete_subtree(
        &self,
        res: &Resource,
        reported: &[ResourceType],
    ) -> M2mResult<Vec<Resource>> {
        let mut deleted = vec![res.clone()];
        self.changes.borrow_mut().everything = true;
        let (lo, hi) = subtree_bounds(&res.srn);
        for ty in reported {
            deleted.extend(self.many(OF_TYPE_IN_SUBTREE, params![ty.code(), lo, hi])?);
        }
        let conn = self.reader.conn;
        for sql in [
            "DELETE FROM resources WHERE srn >= ?1 AND srn < ?2",
            "DELETE FROM labels WHERE srn >= ?1 AND srn < ?2",
        ] {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.execute(params![lo, hi]))
                .map_err(internal)?;
        }
        self.delete_one(res)?;
        Ok(deleted)
    }

    /// Records who may register the AE-ID `ae_id` (its stem) again ([`AeIdHolder`]), and the
    /// Credential-ID of the association it registered over now.
    pub fn hold_ae_id(
        &self,
        ae_id: &str,
        holder: &AeIdHolder,
        registered_with: &CredentialId,
    ) -> M2mResult<()> {
        let credential = match holder {
            AeIdHolder::Itself => None,
            AeIdHolder::Credential(c) => Some(c.to_string()),
        };
        self.reader
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO ae_id_holders (ae_id, credential_id, registered_with) \
                 VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![ae_id, credential, registered_with.to_string()]))
            .map_err(internal)?;
        Ok(())
    }

    /// Frees the AE-ID `ae_id` (its stem) for whoever the registration rules admit.
    /// Marks the one-off task `task` done (with the changes it made, in this transaction).
    pub fn upkeep_done(&self, task: &str) -> M2mResult<()> {
        self.reader
            .conn
            .prepare_cached("DELETE FROM upkeep WHERE task = ?1")
            .and_then(|mut s| s.execute([task]))
            .map_err(internal)?;
        Ok(())
    }

    pub fn release_ae_id(&self, ae_id: &str) -> M2mResult<()> {
        self.reader
            .conn
            .prepare_cached("DELETE FROM ae_id_holders WHERE ae_id = ?1")
            .and_then(|mut s| s.execute([ae_id]))
            .map_err(internal)?;
        Ok(())
    }

    /// Deletes one leaf resource (e.g. a contentInstance dropped by mni/mbs).
    pub fn delete_one(&self, res: &Resource) -> M2mResult<()> {
        let conn = self.reader.conn;
        self.changes.borrow_mut().deleted(res);
        conn.prepare_cached("DELETE FROM resources WHERE seq = ?1")
            .and_then(|mut s| s.execute([res.seq]))
            .map_err(internal)?;
        conn.prepare_cached("DELETE FROM labels WHERE srn = ?1")
            .and_then(|mut s| s.execute([&res.srn]))
            .map_err(internal)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res(ri: &str, srn: &str, pi: &str, ty: ResourceType) -> Resource {
        let rn = srn.rsplit('/').next().unwrap();
        let attrs = json!({"ri": ri, "pi": pi, "rn": rn, "ty": ty.code()})
            .as_object()
            .unwrap()
            .clone();
        Resource {
            seq: 0,
            ty,
            srn: srn.into(),
            attrs,
            creator: None,
            specialization: None,
        }
    }

    #[test]
    fn insert_get_children_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), SyncMode::Normal).unwrap();
        store
            .write_blocking(|w| {
                w.insert(res("id-in", "cse-in", "", ResourceType::CseBase))?;
                w.insert(res("Cae", "cse-in/ae", "id-in", ResourceType::Ae))?;
                w.insert(res("cnt1", "cse-in/ae/cnt", "Cae", ResourceType::Container))?;
                w.insert(res(
                    "cin1",
                    "cse-in/ae/cnt/a",
                    "cnt1",
                    ResourceType::ContentInstance,
                ))?;
                w.insert(res(
                    "cin2",
                    "cse-in/ae/cnt/b",
                    "cnt1",
                    ResourceType::ContentInstance,
                ))?;
                // A sibling whose name extends "ae": must not count as a descendant of "ae".
                w.insert(res("Cae2", "cse-in/ae2", "id-in", ResourceType::Ae))?;
                Ok(())
            })
            .unwrap();
        let conflict = store
            .write_blocking(|w| w.insert(res("x", "cse-in/ae", "id-in", ResourceType::Ae)))
            .unwrap_err();
        assert_eq!(conflict.rsc, m2m_core::ResponseStatusCode::Conflict);

        assert_eq!(
            store.get_by_srn("cse-in/ae/cnt").unwrap().unwrap().ri(),
            "cnt1"
        );
        store
            .read(|r| {
                assert_eq!(
                    r.latest_child("cnt1", ResourceType::ContentInstance)?
                        .unwrap()
                        .ri(),
                    "cin2"
                );
                assert_eq!(
                    r.oldest_child("cnt1", ResourceType::ContentInstance)?
                        .unwrap()
                        .ri(),
                    "cin1"
                );
                assert_eq!(r.children("id-in", None)?.len(), 2);
                Ok(())
            })
            .unwrap();
        let ae = store.get("Cae").unwrap().unwrap();
        let deleted = store
            .write_blocking(move |w| w.delete_subtree(&ae, &[ResourceType::ContentInstance]))
            .unwrap();
        // The AE and the reported type below it, not the container.
        assert_eq!(deleted.len(), 3);
        assert!(store.get("cin2").unwrap().is_none());
        assert!(store.get("Cae2").unwrap().is_some());
    }

    /// The database and its -wal/-shm are 0600 in a 0700 directory, whatever the umask gave.
    #[cfg(unix)]
    #[test]
    fn the_database_files_are_private() {
        use data_files::mode_of;
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let files = |dir: &Path| {
            ["resources.db", "resources.db-wal", "resources.db-shm"].map(|f| dir.join(f))
        };
        {
            let store = Store::open(&dir, SyncMode::Normal).unwrap();
            store
                .write_blocking(|w| w.insert(res("id-in", "cse-in", "", ResourceType::CseBase)))
                .unwrap();
            assert!(store.get("id-in").unwrap().is_some());
            assert_eq!(mode_of(&dir).unwrap(), 0o700);
            for f in files(&dir) {
                assert_eq!(mode_of(&f).unwrap(), 0o600, "{}", f.display());
            }
        }
        // Left readable by an earlier version: tightened at open, content kept.
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(&dir, 0o755);
        for f in files(&dir).iter().filter(|f| f.exists()) {
            set(f, 0o644);
        }
        let store = Store::open(&dir, SyncMode::Normal).unwrap();
        assert!(store.get("id-in").unwrap().is_some());
        assert_eq!(mode_of(&dir).unwrap(), 0o700);
        for f in files(&dir).iter().filter(|f| f.exists()) {
            assert_eq!(mode_of(f).unwrap(), 0o600, "{}", f.display());
        }
        drop(store);
        // Writable by group: refused, left as found.
        let db = dir.join("resources.db");
        set(&db, 0o664);
        let err = Store::open(&dir, SyncMode::Normal)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        assert_eq!(mode_of(&db).unwrap(), 0o664);
    }

    /// An encrypted store: every connection (writer, readers, checkpointer) keyed, and neither
    /// the database nor its log holds a resource's name, label or content in the clear, before
    /// and after a checkpoint; reopened with the key it reads back.
    #[test]
    fn an_encrypted_store_keeps_nothing_in_the_clear() {
        use encryption::StoreKey;
        use m2m_security::credentials::Secret;
        let tmp = tempfile::tempdir().unwrap();
        let key = || StoreKey::new(&Secret::from_slice(&[7; 32])).unwrap();
        let at_rest = || AtRest {
            key: Some(key()),
            previous: None,
        };
        let files = ["resources.db", "resources.db-wal"].map(|f| tmp.path().join(f));
        let clear = |needle: &[u8]| {
            files.iter().filter(|f| f.exists()).any(|f| {
                let b = std::fs::read(f).unwrap();
                b.windows(needle.len()).any(|w| w == needle)
            })
        };
        {
            let store = Store::open_at_rest(tmp.path(), SyncMode::Normal, at_rest()).unwrap();
            store
                .write_blocking(|w| {
                    let mut r = res("doorlock1", "cse-in/front-door", "", ResourceType::Ae);
                    r.attrs.insert("lbl".into(), json!(["home-of-alice"]));
                    r.attrs.insert("con".into(), json!("unlock-code-4711"));
                    w.insert(r)
                })
                .unwrap();
            assert!(store.get("doorlock1").unwrap().is_some());
            assert!(tmp.path().join("resources.db-wal").exists());
            for needle in [&b"front-door"[..], b"home-of-alice", b"unlock-code-4711"] {
                assert!(
                    !clear(needle),
                    "{} in the clear",
                    String::from_utf8_lossy(needle)
                );
            }
        }
        let store = Store::open_at_rest(tmp.path(), SyncMode::Normal, at_rest()).unwrap();
        let r = store.get_by_srn("cse-in/front-door").unwrap().unwrap();
        assert_eq!(r.attrs["con"], json!("unlock-code-4711"));
        drop(store);
        for needle in [&b"front-door"[..], b"home-of-alice", b"unlock-code-4711"] {
            assert!(
                !clear(needle),
                "{} in the clear",
                String::from_utf8_lossy(needle)
            );
        }
        // Without its key the store does not open.
        let e = Store::open(tmp.path(), SyncMode::Normal)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is encrypted"), "{e}");
    }

    /// One store per directory: a second opening (another CSE, `m2m store encrypt`) is refused
    /// while the first is open, and allowed once it is closed.
    #[test]
    fn a_storage_directory_is_opened_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path(), SyncMode::Normal).unwrap();
        let e = Store::open(dir.path(), SyncMode::Normal)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("has this storage directory open"), "{e}");
        assert!(lock_dir(dir.path()).is_err());
        drop(first);
        assert!(lock_dir(dir.path()).is_ok());
    }

    /// A store holding a CSEBase and container `cnt1` (`cse-in/cnt`), with instance `cin1`
    /// when `instance`.
    fn container_store(instance: bool) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), SyncMode::Normal).unwrap();
        store
            .write_blocking(move |w| {
                w.insert(res("id-in", "cse-in", "", ResourceType::CseBase))?;
                w.insert(res("cnt1", "cse-in/cnt", "id-in", ResourceType::Container))?;
                if instance {
                    let cin = res(
                        "cin1",
                        "cse-in/cnt/a",
                        "cnt1",
                        ResourceType::ContentInstance,
                    );
                    w.insert(cin)?;
                }
                Ok(())
            })
            .unwrap();
        (dir, store)
    }

    /// Write-through: what a committed job wrote is what the cache answers next, without a
    /// read; an undone job, a deletion later in the job, or an instance of another type never
    /// leave a value behind.
    #[test]
    fn the_cache_answers_what_was_committed() {
        let (_dir, store) = container_store(true);
        let cnt = || store.get_by_srn("cse-in/cnt").unwrap().unwrap();
        let la = |c: &Resource| store.latest_instance(c).unwrap().unwrap();
        let c = cnt();
        assert_eq!(la(&c).ri(), "cin1");
        assert_eq!(store.get("cnt1").unwrap().unwrap().attrs.get("cni"), None);
        // A new instance and the container's counter, as a CREATE writes them.
        let mut updated = c.clone();
        updated.attrs.insert("cni".into(), json!(2));
        store
            .write_blocking(move |w| {
                w.insert(res(
                    "cin2",
                    "cse-in/cnt/b",
                    "cnt1",
                    ResourceType::ContentInstance,
                ))?;
                w.update(&updated)
            })
            .unwrap();
        // Written through, before anything read it again.
        let cached = |k: Key, cni: Value| {
            store.cache.holds(&k, |e| {
                e.as_ref().is_some_and(|r| r.attrs.get("cni") == Some(&cni))
            })
        };
        assert!(cached(Key::Srn("cse-in/cnt".into()), json!(2)));
        assert!(cached(Key::Ri("cnt1".into()), json!(2)));
        assert!(store.cache.holds(&Key::Latest("cnt1".into()), |e| e
            .as_ref()
            .is_some_and(|r| r.ri() == "cin2")));
        assert_eq!(cnt().attrs["cni"], json!(2));
        assert_eq!(store.get("cnt1").unwrap().unwrap().attrs["cni"], json!(2));
        assert_eq!(la(&c).ri(), "cin2");
        // Undone: neither the update nor the instance is seen.
        let mut undone = cnt();
        undone.attrs.insert("cni".into(), json!(99));
        let e = store.write_blocking(move |w| {
            w.insert(res(
                "cin3",
                "cse-in/cnt/c",
                "cnt1",
                ResourceType::ContentInstance,
            ))?;
            w.update(&undone)?;
            Err::<(), _>(M2mError::bad_request("undone"))
        });
        assert!(e.is_err());
        assert_eq!(cnt().attrs["cni"], json!(2));
        assert_eq!(la(&c).ri(), "cin2");
        // Updated, then deleted in the same job: gone.
        let mut doomed = cnt();
        doomed.attrs.insert("cni".into(), json!(3));
        store
            .write_blocking(move |w| {
                w.update(&doomed)?;
                w.delete_one(&doomed)
            })
            .unwrap();
        assert!(store.get_by_srn("cse-in/cnt").unwrap().is_none());
        assert!(store.get("cnt1").unwrap().is_none());
        // An instance of another type under a container is not its `la`.
        store
            .write_blocking(|w| {
                w.insert(res("cnt2", "cse-in/cnt2", "id-in", ResourceType::Container))?;
                w.insert(res(
                    "cinA",
                    "cse-in/cnt2/a",
                    "cnt2",
                    ResourceType::ContentInstance,
                ))
            })
            .unwrap();
        let c2 = store.get_by_srn("cse-in/cnt2").unwrap().unwrap();
        assert_eq!(la(&c2).ri(), "cinA");
        store
            .write_blocking(|w| {
                w.insert(res(
                    "fci",
                    "cse-in/cnt2/f",
                    "cnt2",
                    ResourceType::FlexContainerInstance,
                ))
            })
            .unwrap();
        assert_eq!(la(&c2).ri(), "cinA");
    }

    /// The last write of a key decides what the cache holds after the commit: an update of an
    /// instance after its insert (its `la` only invalidated), a deletion after an update, a job
    /// rolled back after it deleted something (nothing of it stays), and a failed commit
    /// (nothing written through).
    #[test]
    fn the_last_write_of_a_key_decides() {
        let (_dir, store) = container_store(true);
        let cnt = store.get_by_srn("cse-in/cnt").unwrap().unwrap();
        store.latest_instance(&cnt).unwrap();
        store.get("cin1").unwrap();
        // Written through, then written again in the same job without a value the cache may
        // take: the later write decides.
        let cin = res(
            "cin2",
            "cse-in/cnt/b",
            "cnt1",
            ResourceType::ContentInstance,
        );
        store
            .write_blocking(move |w| {
                let mut cin = w.insert(cin)?;
                cin.attrs.insert("et".into(), json!("20991231T000000"));
                w.update(&cin)
            })
            .unwrap();
        assert!(!store.cache.holds(&Key::Latest("cnt1".into()), |_| true));
        let la = store.latest_instance(&cnt).unwrap().unwrap();
        assert_eq!(la.attrs["et"], json!("20991231T000000"), "as stored");
        // Updated, then deleted by a later job of the same batch: forgotten.
        let mut c = store.get("cnt1").unwrap().unwrap();
        c.attrs.insert("lbl".into(), json!(["x"]));
        let mut changes = Changes::default();
        changes.written(&c, false, &store.cache);
        changes.deleted(&c);
        changes.apply(&store.cache, true);
        assert!(!store.cache.holds(&Key::Ri("cnt1".into()), |_| true));
        // A job that deletes, writes, then fails: none of it reaches the cache.
        store.get("cnt1").unwrap();
        let oldest = store.get("cin1").unwrap().unwrap();
        let mut doomed = store.get("cnt1").unwrap().unwrap();
        doomed.attrs.insert("cni".into(), json!(42));
        let e = store.write_blocking(move |w| {
            w.delete_one(&oldest)?;
            w.update(&doomed)?;
            Err::<(), _>(M2mError::internal("failed after writing"))
        });
        assert!(e.is_err());
        assert_eq!(store.get("cnt1").unwrap().unwrap().attrs.get("cni"), None);
        assert!(store.get("cin1").unwrap().is_some());
        // A commit that failed: invalidated, nothing put back.
        let mut c = store.get("cnt1").unwrap().unwrap();
        c.attrs.insert("cni".into(), json!(7));
        let mut changes = Changes::default();
        changes.written(&c, false, &store.cache);
        changes.apply(&store.cache, false);
        assert!(!store.cache.holds(&Key::Ri("cnt1".into()), |_| true));
        assert_eq!(store.get("cnt1").unwrap().unwrap().attrs.get("cni"), None);
    }

    /// Inside a write, a resource comes from the cache only while the batch has not touched
    /// it: after a write of its own the transaction's view counts.
    #[test]
    fn a_writer_reads_the_cache_only_for_what_it_did_not_touch() {
        let (_dir, store) = container_store(false);
        store.get("cnt1").unwrap();
        assert!(store.cache.holds(&Key::Ri("cnt1".into()), |e| e.is_some()));
        let (before, after) = store
            .write_blocking(|w| {
                let before = w.get_as_committed("cnt1", "cse-in/cnt")?.unwrap();
                let mut c = before.clone();
                c.attrs.insert("cni".into(), json!(5));
                w.update(&c)?;
                let after = w.get_as_committed("cnt1", "cse-in/cnt")?.unwrap();
                Ok((before, after))
            })
            .unwrap();
        assert_eq!(before.attrs.get("cni"), None);
        assert_eq!(after.attrs["cni"], json!(5), "the transaction's own write");
        let next = store
            .write_blocking(|w| w.get_as_committed("cnt1", "cse-in/cnt"))
            .unwrap()
            .unwrap();
        assert_eq!(next.attrs["cni"], json!(5), "committed, then cached");
        // Written, then deleted in one transaction: the last write left no value, so the
        // database answers, and it has none.
        let gone = store
            .write_blocking(|w| {
                let mut c = w.get_as_committed("cnt1", "cse-in/cnt")?.unwrap();
                c.attrs.insert("cni".into(), json!(6));
                w.update(&c)?;
                let written = w.get_as_committed("cnt1", "cse-in/cnt")?.unwrap();
                assert_eq!(written.attrs["cni"], json!(6), "the write's own value");
                w.delete_one(&c)?;
                w.get_as_committed("cnt1", "cse-in/cnt")
            })
            .unwrap();
        assert!(gone.is_none(), "{gone:?}");
    }

    /// SQLite may roll the whole transaction back by itself (a full disk): the jobs after that
    /// in the batch do not run on a new transaction with what the log remembers of the lost
    /// writes, and none of the batch is reported committed.
    #[test]
    fn a_transaction_lost_mid_batch_ends_the_batch() {
        let (_dir, store) = container_store(false);
        store.get("cnt1").unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<(&str, bool)>();
        let done = |name: &'static str| {
            let tx = tx.clone();
            move |r: M2mResult<()>| {
                let _ = tx.send((name, r.is_ok()));
            }
        };
        // The writer is busy with a first job while the next three queue: one batch.
        let (started_tx, started) = std::sync::mpsc::channel();
        store.submit(
            move |_| {
                let _ = started_tx.send(());
                std::thread::sleep(std::time::Duration::from_millis(300));
                Ok(())
            },
            done("first"),
        );
        started.recv().unwrap();
        store.submit(
            |w| {
                let mut c = w.get_as_committed("cnt1", "cse-in/cnt")?.unwrap();
                c.attrs.insert("cni".into(), json!(5));
                w.update(&c)
            },
            done("write"),
        );
        store.submit(
            |w| {
                // As SQLite does after SQLITE_FULL or SQLITE_IOERR.
                w.reader.conn.execute_batch("ROLLBACK").map_err(internal)
            },
            done("lost"),
        );
        store.submit(
            |w| {
                let mut c = w.get_as_committed("cnt1", "cse-in/cnt")?.unwrap();
                c.attrs.insert("lbl".into(), json!(["after"]));
                w.update(&c)
            },
            done("after"),
        );
        let mut outcome: Vec<(&str, bool)> = (0..4).map(|_| rx.recv().unwrap()).collect();
        outcome.sort();
        assert_eq!(
            outcome,
            [
                ("after", false),
                ("first", true),
                ("lost", false),
                ("write", false)
            ]
        );
        let c = store.get("cnt1").unwrap().unwrap();
        assert_eq!(c.attrs.get("cni"), None, "{c:?}");
        assert_eq!(c.attrs.get("lbl"), None, "{c:?}");
    }

    #[test]
    fn failed_transaction_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), SyncMode::Normal).unwrap();
        let r: M2mResult<()> = store.write_blocking(|w| {
            w.insert(res("a", "cse-in", "", ResourceType::CseBase))?;
            Err(M2mError::bad_request("abort"))
        });
        assert!(r.is_err());
        assert!(store.get("a").unwrap().is_none());
    }
}
