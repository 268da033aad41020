//! An enrolment target's side of remote-provisioned Kpsa (TS-0003 clauses 8.3.2.1, 10.3.3), for
//! a TLS or DTLS server of the project (the CSE): an enrolee offers its KeID (`hex@MEF-FQDN`) as
//! KpsaID; the target fetches Kpsa for it from the MEF (`fetchCredentials`, SUID 12) over its
//! own certificate association, and completes the PSK handshake with it. The association binds
//! the enrolee the MEF names; its Credential-ID is `12-<KpsaID>`. A key is kept at most until the
//! enrolment ends (the MEF's lifetime) and at most `cache_seconds`; then it is fetched again, so
//! a revoked or expired enrolment opens nothing more.

use super::client::{mef_addr, MefClient};
use super::SUID_SAEF;
use crate::psk_fetch::{fetch_in_psk_callback, FetchLimits, KeyCache};
use m2m_core::{EntityId, Home};
use m2m_security::association::{Association, SaeMode};
use m2m_security::credentials::{CredentialId, KpsaId};
use m2m_security::tls::{PskHandshake, PskKey, PskLookup};
use m2m_transport::PeerCheck;
use openssl::ssl::SslContext;
use std::time::Duration;
use zeroize::Zeroizing;

/// The Kpsa a MEF provisions for this target.
pub struct ProvisionedKpsaKeys {
    mef_url: String,
    mef_fqdn: String,
    /// This target's certificate context (its identity at the MEF).
    context: SslContext,
    /// This target's ID, sent as From (it must be the certificate's identity).
    origin: String,
    /// Where enrolee IDs are read from.
    home: Home,
    timeout: Duration,
    cache: KeyCache<String>,
    limits: FetchLimits,
}

impl ProvisionedKpsaKeys {
    /// The keys of the MEF at `mef_url` (`mef_fqdn` its certificate's name and the KeIDs'
    /// suffix) for the target `origin` with its certificate `context`.
    pub fn new(
        mef_url: &str,
        mef_fqdn: &str,
        context: SslContext,
        origin: &str,
        home: Home,
        timeout: Duration,
        cache_seconds: u64,
    ) -> ProvisionedKpsaKeys {
        ProvisionedKpsaKeys {
            mef_url: mef_url.to_owned(),
            mef_fqdn: mef_fqdn.to_owned(),
            context,
            origin: origin.to_owned(),
            home,
            timeout,
            cache: KeyCache::new(Duration::from_secs(cache_seconds)),
            limits: FetchLimits::default(),
        }
    }

    /// Whether a psk_identity is a KeID of this MEF (`hex@MEF-FQDN`).
    pub fn governs(&self, psk_identity: &str) -> bool {
        self.canonical(psk_identity).is_some()
    }

    /// The KeID as the MEF writes it (upper-case hex, the configured FQDN): every letter case of
    /// one KeID is that KeID, fetched, cached and refused as one (an attacker offering a victim's
    /// KeID in another case must not get it refused).
    fn canonical(&self, psk_identity: &str) -> Option<String> {
        let (relative, fqdn) = psk_identity.rsplit_once('@')?;
        (fqdn.eq_ignore_ascii_case(&self.mef_fqdn)
            && !relative.is_empty()
            && relative.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("{}@{}", relative.to_ascii_uppercase(), self.mef_fqdn))
    }

    async fn fetch(&self, ke_id: &str) -> Result<(PskKey, Duration), String> {
        let addr = mef_addr(&self.mef_url)?;
        let check = PeerCheck::Host(self.mef_fqdn.clone());
        let mut mef = MefClient::connect_with_context(&addr, &self.mef_fqdn, &self.context, &check)
            .await
            .map_err(|e| e.to_string())?;
        let fetched = mef
            .fetch_credentials(ke_id, SUID_SAEF, Some(&self.origin))
            .await
            .map_err(|e| e.to_string())?;
        let entity = EntityId::parse(&fetched.enrolee_id, &self.home)
            .map_err(|_| "the MEF named an enrolee that is no AE-ID or CSE-ID of this SP")?;
        let kpsa_id = KpsaId::parse(ke_id).map_err(|e| format!("KeID: {e}"))?;
        Ok((
            PskKey {
                association: Association {
                    mode: SaeMode::ProvisionedKey,
                    credential: CredentialId::for_kpsa(&kpsa_id),
                    entity: Some(entity),
                },
                key: Zeroizing::new(fetched.credential.expose().to_vec()),
            },
            Duration::from_secs(fetched.lifetime),
        ))
    }
}

impl PskLookup for ProvisionedKpsaKeys {
    fn lookup(&self, psk_identity: &str, handshake: &PskHandshake) -> Option<PskKey> {
        let id = self.canonical(psk_identity)?;
        if let Some(key) = self.cache.get(&id) {
            return Some(key);
        }
        if self.limits.refused_recently(&id) {
            return None;
        }
        let Some(_slot) = self.limits.fetch_slot(handshake.peer) else {
            tracing::warn!(target: "audit", psk_identity, peer = ?handshake.peer, "Kpsa not fetched: too many fetches in flight from this address");
            return None;
        };
        match fetch_in_psk_callback(self.timeout, self.fetch(&id)) {
            Ok((key, lifetime)) => {
                self.cache.put(id, &key, lifetime);
                Some(key)
            }
            Err(why) => {
                tracing::warn!(target: "audit", psk_identity, reason = %why, "Kpsa from the MEF not available");
                self.limits.remember_refusal(&id);
                None
            }
        }
    }
}
