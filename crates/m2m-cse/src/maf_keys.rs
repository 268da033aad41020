//! MAF-based security association establishment on the CSE (TS-0003 clause 8.2.2.3): a client
//! offers a psk_identity of the form `hex(KcID)@MAF-FQDN`; the CSE retrieves that Kc from the MAF
//! over its own certificate association (it must be among the key's targets) and completes the
//! TLS-PSK handshake with it. The AE-ID bound is the one the MAF names as the key's source.
//!
//! Keys are fetched for every handshake (no cache), so a key the MAF has de-registered or let
//! expire opens no further association. TLS-PSK needs one key: the first half of Kc is used
//! (clause 8.8.1: "If the security protocol requires a single symmetric key, then the first half
//! of the distributed symmetric key shall be used").

use crate::config::MafSection;
use m2m_keyservices::maf::MafClient;
use m2m_security::tls::{PskKey, PskLookup};
use std::path::PathBuf;
use std::time::Duration;
use zeroize::Zeroizing;

/// SUIDs whose keys may establish a security association (SAEF: pre-provisioned, RSPF- and
/// MAF-distributed; TS-0004 table 6.3.4.2.39-1).
const SAEF_SUIDS: [u32; 3] = [12, 22, 32];

pub struct MafKeys {
    section: MafSection,
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
        }
    }

    async fn fetch(&self, relative_id: &str) -> Result<PskKey, String> {
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
        Ok(PskKey {
            entity: Some(key.source_id.clone()),
            key: Zeroizing::new(kc[..kc.len() / 2].to_vec()),
        })
    }
}

impl PskLookup for MafKeys {
    fn lookup(&self, psk_identity: &str) -> Option<PskKey> {
        let relative = psk_identity.strip_suffix(&format!("@{}", self.section.fqdn))?;
        if relative.is_empty() || !relative.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        // The PSK callback is synchronous: wait for the MAF here, letting the runtime move its
        // other tasks off this worker meanwhile.
        let handle = tokio::runtime::Handle::try_current().ok()?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return None;
        }
        let timeout = Duration::from_millis(self.section.timeout_ms);
        let outcome = tokio::task::block_in_place(|| {
            handle.block_on(tokio::time::timeout(timeout, self.fetch(relative)))
        });
        match outcome {
            Ok(Ok(key)) => Some(key),
            Ok(Err(why)) => {
                tracing::warn!(target: "audit", psk_identity, reason = %why, "MAF key not available");
                None
            }
            Err(_) => {
                tracing::warn!(target: "audit", psk_identity, "MAF did not answer in time");
                None
            }
        }
    }
}
