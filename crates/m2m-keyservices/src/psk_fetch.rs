//! Fetching a key from another key service while a TLS handshake waits for it.
//!
//! OpenSSL's PSK callback is synchronous, but the key lives at a MAF, MEF or BSF: the callback
//! waits here for the fetch, while the runtime moves its other tasks off this worker
//! (`block_in_place`). This needs tokio's multi-thread runtime; elsewhere nothing is fetched.
//!
//! Since every ClientHello naming such a key could make the server contact the key service,
//! [`FetchLimits`] remembers the identifiers the service refused for a while and keeps few
//! fetches in flight per source address.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Runs `fetch` to completion (at most `timeout`) from inside a PSK callback; `Err` says why
/// there is no key.
pub fn fetch_in_psk_callback<T>(
    timeout: Duration,
    fetch: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| "no runtime to fetch the key".to_owned())?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err("fetching a key during a handshake needs a multi-thread runtime".into());
    }
    match tokio::task::block_in_place(|| handle.block_on(tokio::time::timeout(timeout, fetch))) {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// How long a key identifier the service refused is not asked for again.
const NEGATIVE_CACHE: Duration = Duration::from_secs(30);
/// At most this many refused identifiers are remembered (then the oldest half is forgotten).
const NEGATIVE_CACHE_LEN: usize = 10_000;
/// Fetches in flight per source address, and in all.
const FETCHES_PER_SOURCE: usize = 2;
const FETCHES_IN_ALL: usize = 32;

/// The refusals remembered and the fetches in flight of one key service.
#[derive(Default)]
pub struct FetchLimits {
    /// Key identifiers (in the form the caller compares them) -> until when not asked again.
    refused: Mutex<HashMap<String, Instant>>,
    inflight: Mutex<HashMap<Option<IpAddr>, usize>>,
}

impl FetchLimits {
    /// Whether `key` was refused less than `NEGATIVE_CACHE` ago. The caller passes the
    /// identifier in its comparison form (lower case where the identifier has no case).
    pub fn refused_recently(&self, key: &str) -> bool {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        match refused.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                refused.remove(key);
                false
            }
            None => false,
        }
    }

    pub fn remember_refusal(&self, key: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.len() >= NEGATIVE_CACHE_LEN {
            let now = Instant::now();
            refused.retain(|_, until| *until > now);
            if refused.len() >= NEGATIVE_CACHE_LEN {
                let mut by_age: Vec<Instant> = refused.values().copied().collect();
                by_age.sort();
                let cut = by_age[by_age.len() / 2];
                refused.retain(|_, until| *until > cut);
            }
        }
        refused.insert(key.to_owned(), Instant::now() + NEGATIVE_CACHE);
    }

    /// A fetch slot for `peer` (and in all), given back when dropped.
    pub fn fetch_slot(&self, peer: Option<IpAddr>) -> Option<FetchSlot<'_>> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = inflight.values().sum();
        let mine = inflight.entry(peer).or_insert(0);
        if *mine >= FETCHES_PER_SOURCE || total >= FETCHES_IN_ALL {
            return None;
        }
        *mine += 1;
        Some(FetchSlot { limits: self, peer })
    }
}

/// One fetch in flight for a source.
pub struct FetchSlot<'a> {
    limits: &'a FetchLimits,
    peer: Option<IpAddr>,
}

impl Drop for FetchSlot<'_> {
    fn drop(&mut self) {
        let mut inflight = self
            .limits
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = inflight.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                inflight.remove(&self.peer);
            }
        }
    }
}

/// Keys fetched for handshakes, kept until they expire (or the cache's own limit), by the
/// identifier they were fetched for.
pub struct KeyCache<K> {
    /// The longest a key is kept (0: never kept, fetched for every handshake).
    limit: Duration,
    entries: Mutex<HashMap<K, (m2m_security::tls::PskKey, Instant)>>,
}

impl<K: std::hash::Hash + Eq + Clone> KeyCache<K> {
    pub fn new(limit: Duration) -> KeyCache<K> {
        KeyCache {
            limit,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The key of `id`, while it is valid.
    pub fn get(&self, id: &K) -> Option<m2m_security::tls::PskKey> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(id) {
            Some((key, until)) if *until > Instant::now() => Some(m2m_security::tls::PskKey {
                association: key.association.clone(),
                key: key.key.clone(),
            }),
            Some(_) => {
                entries.remove(id);
                None
            }
            None => None,
        }
    }

    /// Keeps `key` for `id` until it expires in `expires_in`, at most the cache's limit.
    pub fn put(&self, id: K, key: &m2m_security::tls::PskKey, expires_in: Duration) {
        let keep = expires_in.min(self.limit);
        if keep.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        entries.retain(|_, (_, until)| *until > now);
        entries.insert(
            id,
            (
                m2m_security::tls::PskKey {
                    association: key.association.clone(),
                    key: key.key.clone(),
                },
                now + keep,
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello naming a key costs a fetch at most: per source address a few in flight, in
    /// all a few more, and an identifier refused a moment ago none.
    #[test]
    fn fetches_are_limited_per_source_and_refusals_remembered() {
        let k = FetchLimits::default();
        let a: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        let b: Option<IpAddr> = Some("192.0.2.2".parse().unwrap());
        let a1 = k.fetch_slot(a).expect("first");
        let a2 = k.fetch_slot(a).expect("second");
        assert!(k.fetch_slot(a).is_none(), "a third from the same source");
        let b1 = k.fetch_slot(b).expect("another source is not shut out");
        drop(a1);
        assert!(k.fetch_slot(a).is_some(), "a slot given back is free again");
        drop((a2, b1));
        let many: Vec<_> = (0..FETCHES_IN_ALL)
            .map(|i| {
                let ip = IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]);
                k.fetch_slot(Some(ip)).expect("below the total")
            })
            .collect();
        assert!(k.fetch_slot(b).is_none(), "over the total");
        drop(many);
        let id = "AbC+/w==@bsf.example";
        assert!(!k.refused_recently(id));
        k.remember_refusal(id);
        assert!(k.refused_recently(id));
        // Compared as given: a B-TID differing in case is another B-TID.
        assert!(!k.refused_recently(&id.to_ascii_lowercase()));
    }
}
