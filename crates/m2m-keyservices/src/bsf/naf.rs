//! A NAF's side of GBA-based security association establishment (TS-0003 clause 8.3.2.3 with
//! 3GPP TS 33.222), for any TLS or DTLS server of the project (the CSE, the MEF): a device offers
//! its B-TID (`base64(RAND)@BSF-domain`) as psk_identity; the server fetches Ks_NAF for it from
//! the BSF over Zn (mutual TLS with its certificate) and completes the PSK handshake with it.
//! NAF_Id is the server's NAF FQDN and the Ua protocol of the handshake: for TLS and DTLS 1.2
//! the suite being negotiated (0x01,0x00,0x01,suite), for TLS 1.3 one identifier (TS 33.220
//! Annex H).
//!
//! The association binds the AE-ID the BSF's subscriber record names; its Credential-ID is
//! `97-<IMPI>` (the subscriber, [`CredentialId::TYPE_GBA_IMPI`]), which registration rules name.
//!
//! TS 33.222 has the server send the PSK identity hint "3GPP-bootstrapping": the `openssl` crate
//! has no safe setter for it (SSL_CTX_use_psk_identity_hint is not bound) and this project uses no
//! `unsafe`, so no hint is sent; the clients are configured for GBA and do not need it.

use super::client::ZnClient;
use crate::psk_fetch::{fetch_in_psk_callback, FetchLimits, KeyCache};
use m2m_core::{EntityId, Home};
use m2m_security::association::{Association, SaeMode};
use m2m_security::credentials::CredentialId;
use m2m_security::gba::key_derivation::{is_b_tid_of, ua_tls13_psk, ua_tls_psk, NafId};
use m2m_security::tls::{PskHandshake, PskKey, PskLookup, PskSuite};
use std::time::Duration;
use zeroize::Zeroizing;

/// The NAF keys of one BSF, for one NAF.
pub struct NafKeys {
    zn: ZnClient,
    /// This server's NAF FQDN (a CSE's public domain name, the MEF's FQDN).
    naf_fqdn: String,
    /// Where the subscriber's AE-ID is read from.
    home: Home,
    timeout: Duration,
    /// (B-TID, Ua protocol) -> the key.
    cache: KeyCache<(String, [u8; 5])>,
    limits: FetchLimits,
}

impl NafKeys {
    /// The keys of `zn`'s BSF for the NAF `naf_fqdn`; AE-IDs are read against `home`; a fetch
    /// waits at most `timeout`; a key is kept at most `cache_seconds` (0: fetched for every
    /// handshake).
    pub fn new(
        zn: ZnClient,
        naf_fqdn: &str,
        home: Home,
        timeout: Duration,
        cache_seconds: u64,
    ) -> NafKeys {
        NafKeys {
            zn,
            naf_fqdn: naf_fqdn.to_owned(),
            home,
            timeout,
            cache: KeyCache::new(Duration::from_secs(cache_seconds)),
            limits: FetchLimits::default(),
        }
    }

    /// Whether a psk_identity is a B-TID of this BSF.
    pub fn governs(&self, psk_identity: &str) -> bool {
        is_b_tid_of(psk_identity, self.zn.bsf_fqdn())
    }
    /// Ks_NAF from the BSF, and the association it opens.
    async fn fetch(&self, b_tid: &str, naf: &NafId) -> Result<(PskKey, Duration), String> {
        let key = self.zn.naf_key(b_tid, naf).await?;
        let expires_in = (key.expires - chrono::Utc::now())
            .to_std()
            .map_err(|_| "the B-TID has expired".to_owned())?;
        let entity = match &key.ae_id {
            Some(ae) => Some(
                EntityId::parse(ae, &self.home)
                    .ok()
                    .filter(EntityId::is_ae)
                    .ok_or("the BSF named an AE-ID that is no AE-ID of this SP")?,
            ),
            None => None,
        };
        let credential = CredentialId::new(CredentialId::TYPE_GBA_IMPI, &key.impi)
            .map_err(|e| format!("the subscriber's IMPI is no Credential-ID value: {e}"))?;
        Ok((
            PskKey {
                association: Association {
                    mode: SaeMode::GbaKey,
                    credential,
                    entity,
                },
                key: Zeroizing::new(key.ks_naf.to_vec()),
            },
            expires_in,
        ))
    }
}

impl PskLookup for NafKeys {
    fn lookup(&self, psk_identity: &str, handshake: &PskHandshake) -> Option<PskKey> {
        if !self.governs(psk_identity) {
            return None;
        }
        let ua = match handshake.suite {
            PskSuite::Tls12(code) => ua_tls_psk(u16::from_be_bytes(code)),
            PskSuite::Tls13 => ua_tls13_psk(),
            // Without the protocol there is no NAF_Id, so no key.
            PskSuite::Unknown => return None,
        };
        let cache_key = (psk_identity.to_owned(), ua);
        if let Some(key) = self.cache.get(&cache_key) {
            return Some(key);
        }
        // B-TIDs are base64: compared exactly, never without case.
        if self.limits.refused_recently(psk_identity) {
            return None;
        }
        let peer = handshake.peer;
        let Some(_slot) = self.limits.fetch_slot(peer) else {
            tracing::warn!(target: "audit", psk_identity, peer = ?peer, "GBA key not fetched: too many fetches in flight from this address");
            return None;
        };
        let naf = NafId {
            fqdn: self.naf_fqdn.clone(),
            ua_protocol: ua,
        };
        match fetch_in_psk_callback(self.timeout, self.fetch(psk_identity, &naf)) {
            Ok((key, expires_in)) => {
                self.cache.put(cache_key, &key, expires_in);
                Some(key)
            }
            Err(why) => {
                tracing::warn!(target: "audit", psk_identity, reason = %why, "GBA key not available");
                self.limits.remember_refusal(psk_identity);
                None
            }
        }
    }
}
