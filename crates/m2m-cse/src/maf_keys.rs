//! MAF-based security association establishment on the CSE (TS-0003 clause 8.2.2.3): a client
//! offers a psk_identity of the form `hex(KcID)@MAF-FQDN`; the CSE retrieves that Kc from the MAF
//! over its own certificate association (it must be among the key's targets) and completes the
//! TLS-PSK handshake with it. The AE-ID bound is the one the MAF names as the key's source; the
//! Credential-ID is formed from the KmID the MAF names for that source (`11-<KmID>`), or, for a
//! source that registered at the MAF with a certificate, from its identity (`33-<AE-ID in FQDN
//! form>`, `32-<CSE DNS name>`), never from the KcID.
//!
//! By default keys are fetched for every handshake (no cache), so a key the MAF has
//! de-registered or let expire opens no further association. `[maf] cache_seconds` lets the CSE
//! keep a retrieved key until its expiration, at most that long: fewer round trips to the MAF,
//! at the price that a de-registration is seen only when the cached entry runs out. TLS-PSK needs one key: the first half of Kc is used
//! (clause 8.8.1: "If the security protocol requires a single symmetric key, then the first half
//! of the distributed symmetric key shall be used").
//!
//! The same retrieval serves the MAF ESPrim Framework (`crate::esprim`): a key is released for the use
//! its SUID names, so a SAEF key (12/22/32) is no pairwiseESPrimKey and an ESPrim key (33) opens no
//! association.

use crate::config::{Config, MafSection};
use m2m_core::{EntityId, Home};
use m2m_keyservices::maf::MafClient;
use m2m_keyservices::psk_fetch::{FetchLimits, KeyCache};
use m2m_security::association::{Association, SaeMode};
use m2m_security::credentials::{CredentialId, Secret};
use m2m_security::tls::{PskHandshake, PskKey, PskLookup};
use openssl::ssl::SslContext;
use std::time::Duration;
use zeroize::Zeroizing;

/// SUIDs whose keys may establish a security association (SAEF: pre-provisioned, RSPF- and
/// MAF-distributed; TS-0004 table 6.3.4.2.39-1).
const SAEF_SUIDS: [u32; 3] = [12, 22, 32];
/// The SUID of a MAF-distributed pairwiseESPrimKey.
pub(crate) use m2m_keyservices::sae::ESPRIM_MAF_SUID;

/// The MAF of `[maf]`: one per CSE, shared by the TLS listener (MAF-based SAE) and the ESPrim
/// Target (MAF ESPrim Framework), so both use one cache and one TLS context.
pub(crate) struct MafKeys {
    section: MafSection,
    /// The SP the MAF's source IDs are read in.
    home: Home,
    /// How this SP's certificates name CSEs (the Credential-ID of a certificate source).
    naming: m2m_security::certificates::CseNaming,
    /// psk_identity -> cached key.
    cache: KeyCache<String>,
    /// Refusals remembered and fetches in flight.
    limits: FetchLimits,
    /// This CSE's certificate context (built once at start, not per handshake).
    context: SslContext,
}

impl MafKeys {
    /// The MAF of `[maf]`, reached with `certificate`, this CSE's outgoing certificate context;
    /// `None` without `[maf]`.
    pub(crate) fn from_config(
        cfg: &Config,
        certificate: Option<&SslContext>,
    ) -> anyhow::Result<Option<Self>> {
        let Some(section) = cfg.maf.clone() else {
            return Ok(None);
        };
        let cache_seconds = section.cache_seconds;
        let has_key = cfg.tls.as_ref().is_some_and(|t| t.private_key.is_some());
        let Some(context) = certificate.filter(|_| has_key).cloned() else {
            anyhow::bail!(
                "[maf] needs [tls] certificate, private_key and trusted_ca to authenticate to the MAF"
            );
        };
        let identity = cfg.identity()?;
        Ok(Some(Self {
            section,
            home: identity.home,
            naming: identity.naming,
            cache: KeyCache::new(Duration::from_secs(cache_seconds)),
            limits: FetchLimits::default(),
            context,
        }))
    }

    /// The hex(KcID) of a Key Identifier `hex(KcID)@MAF-FQDN` of this CSE's MAF; `None` for any other
    /// form (a provisioned KpsaID or pairwiseESPrimKeyID, another MAF).
    pub(crate) fn relative_id<'a>(&self, key_id: &'a str) -> Option<&'a str> {
        let relative = key_id.strip_suffix(&format!("@{}", self.section.fqdn))?;
        (!relative.is_empty() && relative.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(relative)
    }

    /// How long a retrieval may take.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.section.timeout_ms)
    }

    /// Key Retrieval over this CSE's certificate association with the MAF (it must be among the key's
    /// targets); the key must have been registered for `usage`.
    pub(crate) async fn retrieve(
        &self,
        relative_id: &str,
        usage: KeyUsage,
    ) -> Result<MafKey, String> {
        // The MAF proves its FQDN certificate (TS-0003 clause 8.8.2.2, the MAF Handshake).
        let check = m2m_transport::PeerCheck::Host(self.section.fqdn.clone());
        let mut maf = MafClient::connect(
            &self.section.url,
            &self.section.fqdn,
            self.context.clone(),
            &check,
        )
        .await
        .map_err(|e| e.to_string())?;
        let key = maf
            .retrieve_key(relative_id)
            .await
            .map_err(|e| e.to_string())?;
        usage.check(key.suid)?;
        if key.key.len() < 2 {
            return Err("the key is too short".into());
        }
        let expires = m2m_core::time::parse(&key.expiration_time)
            .map_err(|_| "the MAF gave no valid expirationTime".to_owned())?;
        Ok(MafKey {
            kc: key.key,
            source_id: key.source_id,
            source_km_id: key.source_km_id,
            expires,
        })
    }

    async fn fetch(&self, relative_id: &str) -> Result<(PskKey, Duration), String> {
        let key = self.retrieve(relative_id, KeyUsage::Association).await?;
        let expires_in = (key.expires - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        // The MAF names the source: the association is bound to it (TS-0003 clause 8.2.2.3).
        let entity = EntityId::parse(&key.source_id, &self.home).map_err(|_| {
            "the MAF named a source that is no AE-ID or CSE-ID of this SP".to_owned()
        })?;
        // TS-0003 clause 8.2.2.3: the Credential-ID formed from the KmID the MAF provides; a
        // source without one (a certificate client of the MAF) is named by its identity.
        let credential = match &key.source_km_id {
            Some(km_id) => CredentialId::new(CredentialId::TYPE_KM_ID, km_id).map_err(|e| {
                format!("the MAF named a source KmID that is no Credential-ID value: {e}")
            })?,
            None => crate::context::identity_credential(&entity, &self.naming)?,
        };
        Ok((
            PskKey {
                association: Association {
                    mode: SaeMode::MafKey,
                    credential,
                    entity: Some(entity),
                },
                key: Zeroizing::new(m2m_keyservices::sae::psk_of_kc(&key.kc).expose().to_vec()),
            },
            expires_in,
        ))
    }
}

/// What a MAF-distributed key is retrieved for: a key registered for one use opens nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyUsage {
    /// Security association establishment (TLS-PSK with this CSE).
    Association,
    /// A pairwiseESPrimKey (MAF ESPrim Framework, TS-0003 clause 8.4.2 C.6a).
    Esprim,
}

impl KeyUsage {
    /// The key's SUID must be one of this usage's (TS-0004 table 6.3.4.2.39-1).
    fn check(self, suid: u32) -> Result<(), String> {
        let (allowed, what): (&[u32], _) = match self {
            KeyUsage::Association => (&SAEF_SUIDS, "security association establishment"),
            KeyUsage::Esprim => (&[ESPRIM_MAF_SUID], "ESPrim (MAF-distributed, SUID 33)"),
        };
        if allowed.contains(&suid) {
            Ok(())
        } else {
            Err(format!("the key is for SUID {suid}, not for {what}"))
        }
    }
}

/// A retrieved Kc with the entity it belongs to and its lifetime.
pub(crate) struct MafKey {
    pub kc: Secret,
    /// The key's Source ID as the MAF reports it.
    pub source_id: String,
    /// The KmID the source registered at the MAF with, as the MAF reports it.
    pub source_km_id: Option<String>,
    pub expires: chrono::DateTime<chrono::Utc>,
}

impl PskLookup for MafKeys {
    fn lookup(&self, psk_identity: &str, handshake: &PskHandshake) -> Option<PskKey> {
        let peer = handshake.peer;
        let relative = self.relative_id(psk_identity)?;
        if let Some(key) = self.cache.get(&psk_identity.to_owned()) {
            return Some(key);
        }
        // Every ClientHello naming the MAF would otherwise make this CSE contact the MAF: key
        // identifiers the MAF refused are not asked again for a while, and each source address
        // has few fetches in flight (the fetch runs inside OpenSSL's synchronous callback).
        // KcIDs (hex) and the MAF-FQDN have no case.
        let refusal_key = psk_identity.to_ascii_lowercase();
        if self.limits.refused_recently(&refusal_key) {
            tracing::debug!(
                psk_identity,
                "MAF key refused recently: not asked again yet"
            );
            return None;
        }
        let Some(_slot) = self.limits.fetch_slot(peer) else {
            tracing::warn!(target: "audit", psk_identity, peer = ?peer, "MAF key not fetched: too many fetches in flight from this address");
            return None;
        };
        let timeout = self.timeout();
        match m2m_keyservices::psk_fetch::fetch_in_psk_callback(timeout, self.fetch(relative)) {
            Ok((key, expires_in)) => {
                self.cache.put(psk_identity.to_owned(), &key, expires_in);
                Some(key)
            }
            Err(why) => {
                tracing::warn!(target: "audit", psk_identity, reason = %why, "MAF key not available");
                self.limits.remember_refusal(&refusal_key);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lookup skips an identifier the MAF refused a moment ago without any network (no
    /// runtime here: a fetch would fail with "no runtime", never reached).
    #[test]
    fn a_refused_identifier_is_not_fetched_again() {
        let k = MafKeys {
            section: MafSection {
                url: "https://127.0.0.1:1".into(),
                fqdn: "maf.example.com".into(),
                timeout_ms: 100,
                cache_seconds: 0,
            },
            home: Home::sp(m2m_core::SpId::parse("m2m.example.com").unwrap()),
            naming: m2m_security::certificates::CseNaming::new("m2m.example.com", "/id-in")
                .unwrap(),
            cache: KeyCache::new(Duration::ZERO),
            limits: FetchLimits::default(),
            context: openssl::ssl::SslContext::builder(openssl::ssl::SslMethod::tls_client())
                .unwrap()
                .build(),
        };
        let id = "00112233445566778899AABBCCDDEEFF@maf.example.com";
        k.limits.remember_refusal(&id.to_ascii_lowercase());
        let a: Option<std::net::IpAddr> = Some("192.0.2.1".parse().unwrap());
        assert!(k.lookup(id, &PskHandshake::from_peer(a)).is_none());
    }
}
