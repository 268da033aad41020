//! MAF-based security association establishment on the CSE (TS-0003 clause 8.2.2.3): a client
//! offers a psk_identity of the form `hex(KcID)@MAF-FQDN`; the CSE retrieves that Kc from the MAF
//! over its own certificate association (it must be among the key's targets) and completes the
//! TLS-PSK handshake with it. The AE-ID bound is the one the MAF names as the key's source.
//!
//! By default keys are fetched for every handshake (no cache), so a key the MAF has
//! de-registered or let expire opens no further association. `[maf] cache_seconds` lets the CSE
//! keep a retrieved key until its expiration, at most that long: fewer round trips to the MAF,
//! at the price that a de-registration is seen only when the cached entry runs out. TLS-PSK needs one key: the first half of Kc is used
//! (clause 8.8.1: "If the security protocol requires a single symmetric key, then the first half
//! of the distributed symmetric key shall be used").

use crate::config::MafSection;
use m2m_keyservices::maf::MafClient;
use m2m_security::tls::{PskKey, PskLookup};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// SUIDs whose keys may establish a security association (SAEF: pre-provisioned, RSPF- and
/// MAF-distributed; TS-0004 table 6.3.4.2.39-1).
const SAEF_SUIDS: [u32; 3] = [12, 22, 32];

/// A retrieved key: the entity bound, the PSK, and until when it may be used from the cache.
type Cached = (Option<String>, Zeroizing<Vec<u8>>, Instant);

pub struct MafKeys {
    section: MafSection,
    /// psk_identity -> cached key.
    cache: Mutex<HashMap<String, Cached>>,
    certificate: PathBuf,
    private_key: PathBuf,
    trusted_ca: PathBuf,
}

impl MafKeys {
    pub fn new(
        section: MafSection,
        certificate: PathBuf,
        private_key: PathBuf,
        trusted_ca: PathBuf,
    ) -> Self {
        Self {
            section,
            certificate,
            private_key,
            trusted_ca,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A cached key still valid for `psk_identity`.
    fn cached(&self, psk_identity: &str) -> Option<PskKey> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(psk_identity) {
            Some((entity, key, until)) if *until > Instant::now() => Some(PskKey {
                entity: entity.clone(),
                key: key.clone(),
            }),
            Some(_) => {
                cache.remove(psk_identity);
                None
            }
            None => None,
        }
    }

    fn remember(&self, psk_identity: &str, key: &PskKey, expires_in: Duration) {
        let keep = expires_in.min(Duration::from_secs(self.section.cache_seconds));
        if keep.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (_, _, until)| *until > Instant::now());
        cache.insert(
            psk_identity.to_owned(),
            (key.entity.clone(), key.key.clone(), Instant::now() + keep),
        );
    }

    async fn fetch(&self, relative_id: &str) -> Result<(PskKey, Duration), String> {
        let mut maf = MafClient::connect_certificate(
            &self.section.url,
            &self.section.fqdn,
            &self.certificate,
            &self.private_key,
            &self.trusted_ca,
        )
        .await
        .map_err(|e| e.to_string())?;
        let key = maf
            .retrieve_key(relative_id)
            .await
            .map_err(|e| e.to_string())?;
        if !SAEF_SUIDS.contains(&key.suid) {
            return Err(format!(
                "the key is for SUID {}, not for security association establishment",
                key.suid
            ));
        }
        let kc = key.key.expose();
        if kc.len() < 2 {
            return Err("the key is too short".into());
        }
        let expires_in = m2m_core::time::parse(&key.expiration_time)
            .ok()
            .and_then(|t| (t - chrono::Utc::now()).to_std().ok())
            .unwrap_or_default();
        Ok((
            PskKey {
                entity: Some(key.source_id.clone()),
                key: Zeroizing::new(kc[..kc.len() / 2].to_vec()),
            },
            expires_in,
        ))
    }
}

impl PskLookup for MafKeys {
    fn lookup(&self, psk_identity: &str) -> Option<PskKey> {
        let relative = psk_identity.strip_suffix(&format!("@{}", self.section.fqdn))?;
        if relative.is_empty() || !relative.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if let Some(key) = self.cached(psk_identity) {
            return Some(key);
        }
        let timeout = Duration::from_millis(self.section.timeout_ms);
        match m2m_keyservices::psk_fetch::fetch_in_psk_callback(timeout, self.fetch(relative)) {
            Ok((key, expires_in)) => {
                self.remember(psk_identity, &key, expires_in);
                Some(key)
            }
            Err(why) => {
                tracing::warn!(target: "audit", psk_identity, reason = %why, "MAF key not available");
                None
            }
        }
    }
}
