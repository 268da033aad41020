//! A cache of hot resources in front of the store: the targets of busy requests (a container, its
//! `la` and `ol`, the policies that govern it) are answered from memory instead of a SQLite read
//! transaction each, which costs file locks and a wake-up of the other threads per request.
//!
//! It never answers with something older than the last acknowledged write:
//! - the writer invalidates every key a batch touched after the commit and before any request of
//!   the batch is answered, so a client that saw its write acknowledged reads it back; the keys
//!   the cache held it refreshes with the values the batch committed (write-through: a busy
//!   container is updated by every instance created in it, and is read by the next CREATE);
//! - a reader that missed reads the store and fills the entry only if no invalidation of that key
//!   happened since it started (a generation counter, and the generation of the last
//!   invalidation per stripe of keys), so a value read before a commit is never cached after the
//!   commit's invalidation.
//!
//! Entries are bounded ([`CAPACITY`]); a full shard drops an arbitrary entry.

use super::Resource;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What an entry is looked up by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// A resource by structured name (`None` cached too: an address that names nothing, such as
    /// `…/la`, is looked up on every request).
    Srn(String),
    /// A resource by resourceID.
    Ri(String),
    /// The newest contentInstance of the container with this resourceID.
    Latest(String),
    /// The oldest one.
    Oldest(String),
}

/// The most entries kept.
pub const CAPACITY: usize = 8192;
const SHARDS: usize = 16;
const STRIPES: usize = 4096;

pub type Entry = Option<Arc<Resource>>;

pub struct Cache {
    hasher: std::collections::hash_map::RandomState,
    /// Incremented by every invalidation.
    generation: AtomicU64,
    /// The generation of the last invalidation of any key in the stripe.
    stripes: Vec<AtomicU64>,
    /// Everything invalidated at or before this generation (a subtree was deleted).
    cleared: AtomicU64,
    shards: Vec<Mutex<HashMap<Key, Entry>>>,
    /// Incremented after each commit that wrote or deleted a `<remoteCSE>` (or a whole
    /// subtree): what is derived from all registrees (`descendants::Index`) is rebuilt then.
    registrees: AtomicU64,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            hasher: Default::default(),
            generation: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            cleared: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            registrees: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// The generation of the registrees: changes after every commit that changed one.
    pub fn registrees_generation(&self) -> u64 {
        self.registrees.load(Ordering::Acquire)
    }

    pub(super) fn registrees_changed(&self) {
        self.registrees.fetch_add(1, Ordering::AcqRel);
    }

    fn hash(&self, key: &Key) -> usize {
        self.hasher.hash_one(key) as usize
    }

    fn shard(&self, h: usize) -> &Mutex<HashMap<Key, Entry>> {
        &self.shards[h % SHARDS]
    }

    /// The entry for `key`, loaded with `load` on a miss.
    pub fn get<E>(
        &self,
        key: Key,
        load: impl FnOnce() -> Result<Option<Resource>, E>,
    ) -> Result<Entry, E> {
        let h = self.hash(&key);
        let started = self.generation.load(Ordering::Acquire);
        if let Some(e) = lock(self.shard(h)).get(&key) {
            return Ok(e.clone());
        }
        let entry = load()?.map(Arc::new);
        let mut shard = lock(self.shard(h));
        let stripe = self.stripes[(h >> 8) % STRIPES].load(Ordering::Acquire);
        if stripe <= started && self.cleared.load(Ordering::Acquire) <= started {
            if shard.len() >= CAPACITY / SHARDS {
                if let Some(k) = shard.keys().next().cloned() {
                    shard.remove(&k);
                }
            }
            shard.insert(key, entry.clone());
        }
        Ok(entry)
    }

    /// The entry for `key`, if there is one; never loads.
    pub fn peek(&self, key: &Key) -> Option<Entry> {
        lock(self.shard(self.hash(key))).get(key).cloned()
    }

    /// Whether `key` has an entry now that `accept`s.
    pub fn holds(&self, key: &Key, accept: impl FnOnce(&Entry) -> bool) -> bool {
        lock(self.shard(self.hash(key)))
            .get(key)
            .is_some_and(accept)
    }

    /// Forgets `keys` (called by the writer after a commit, before answering), then puts back
    /// the `fresh` values, as committed, of those that had an entry (the last one for a key
    /// wins). A reader that started before this never caches what it read (its generation is
    /// older than the stripe's); the fresh values are the committed state, so no reader sees
    /// an older one after the commit is acknowledged.
    pub fn invalidate(&self, keys: &[Key], fresh: Vec<(Key, Arc<Resource>)>) {
        if keys.is_empty() {
            return;
        }
        let now = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let mut held = Vec::new();
        for key in keys {
            let h = self.hash(key);
            self.stripes[(h >> 8) % STRIPES].store(now, Ordering::Release);
            if lock(self.shard(h)).remove(key).is_some() {
                held.push(key);
            }
        }
        for (key, res) in fresh {
            if held.contains(&&key) {
                lock(self.shard(self.hash(&key))).insert(key, Some(res));
            }
        }
    }

    /// Forgets everything (a subtree was deleted: its keys are not listed).
    pub fn clear(&self) {
        let now = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.cleared.store(now, Ordering::Release);
        for s in &self.shards {
            lock(s).clear();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_core::ResourceType;

    fn res(v: &str) -> Resource {
        Resource {
            seq: 1,
            ty: ResourceType::Container,
            srn: "cse-in/c".into(),
            attrs: serde_json::json!({"v": v}).as_object().unwrap().clone(),
            creator: None,
            specialization: None,
        }
    }

    fn v(e: &Entry) -> &str {
        e.as_ref().unwrap().attrs["v"].as_str().unwrap()
    }

    #[test]
    fn hits_and_invalidation() {
        let c = Cache::default();
        let k = Key::Srn("cse-in/c".into());
        let e = c.get::<()>(k.clone(), || Ok(Some(res("1")))).unwrap();
        assert_eq!(v(&e), "1");
        let e = c.get::<()>(k.clone(), || panic!("cached")).unwrap();
        assert_eq!(v(&e), "1");
        c.invalidate(std::slice::from_ref(&k), Vec::new());
        let e = c.get::<()>(k.clone(), || Ok(Some(res("2")))).unwrap();
        assert_eq!(v(&e), "2");
        c.clear();
        assert_eq!(c.len(), 0);
    }

    /// A value read before an invalidation is not cached after it.
    #[test]
    fn a_read_overtaken_by_a_write_is_not_cached() {
        let c = Cache::default();
        let k = Key::Latest("cnt1".into());
        let e = c
            .get::<()>(k.clone(), || {
                // The writer commits and invalidates while this read is under way.
                c.invalidate(std::slice::from_ref(&k), Vec::new());
                Ok(Some(res("stale")))
            })
            .unwrap();
        assert_eq!(v(&e), "stale", "the reader still answers what it read");
        let e = c.get::<()>(k.clone(), || Ok(Some(res("fresh")))).unwrap();
        assert_eq!(v(&e), "fresh");
        // The same after a clear.
        let e = c
            .get::<()>(k.clone(), || {
                c.clear();
                Ok(Some(res("stale")))
            })
            .unwrap();
        assert_eq!(v(&e), "fresh", "cached before the clear");
        let e = c
            .get::<()>(Key::Srn("x".into()), || {
                c.clear();
                Ok(None)
            })
            .unwrap();
        assert!(e.is_none());
        assert_eq!(c.len(), 0);
    }

    /// Write-through: a committed value replaces an entry the cache held, never adds one.
    #[test]
    fn fresh_values_replace_held_entries_only() {
        let c = Cache::default();
        let held = Key::Srn("cse-in/c".into());
        let absent = Key::Ri("c2".into());
        c.get::<()>(held.clone(), || Ok(Some(res("1")))).unwrap();
        let fresh = vec![
            (held.clone(), Arc::new(res("2"))),
            (held.clone(), Arc::new(res("3"))),
            (absent.clone(), Arc::new(res("x"))),
        ];
        c.invalidate(&[held.clone(), absent.clone()], fresh);
        let e = c.get::<()>(held, || panic!("written through")).unwrap();
        assert_eq!(v(&e), "3", "the last one written");
        assert!(!c.holds(&absent, |_| true), "not added");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn bounded() {
        let c = Cache::default();
        for i in 0..(3 * CAPACITY) {
            c.get::<()>(Key::Ri(i.to_string()), || Ok(None)).unwrap();
        }
        assert!(c.len() <= CAPACITY);
    }
}
