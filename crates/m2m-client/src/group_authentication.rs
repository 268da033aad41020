//! Group Authentication Solution 1, the member's side (seeds/001 clause 8.2.1, TR-0012): ask the
//! group agent B, over the inner TLS-PSK association (KpsaxmId/Kpsaxm), for the round's Rand,
//! derive Ksx from Kpsaxi, and use (KsxId, Ksx) as the TLS-PSK credential towards C.

use crate::{Client, TlsSettings};
use m2m_core::group_authentication::{self as wire, KeyMaterial, KeyRequest};
use m2m_core::{M2mError, M2mResult, Operation, Request, ResponseStatusCode};
use m2m_security::credentials::Secret;
use zeroize::Zeroizing;

/// Where the group agent is and how the member authenticates to it.
pub struct GroupAgent<'a> {
    /// B's base URL (`https://host:port`).
    pub url: &'a str,
    /// B's CSEBase, the target of the key request (e.g. `/id-mn`).
    pub to: &'a str,
    /// The member's AE-ID or CSE-ID.
    pub from: &'a str,
    /// KpsaxmId and Kpsaxm: the inner association.
    pub kpsaxm_id: &'a str,
    pub kpsaxm: &'a Secret,
}

/// The TLS-PSK credential the member opens C with: psk_identity KsxId and psk Ksx.
pub struct GroupKey {
    pub ksx_id: String,
    pub ksx: Secret,
    /// What B forwarded (Rand, Enrolee-Ax-ID, C's CSE-ID, expiry).
    pub material: KeyMaterial,
}

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupKey")
            .field("ksx_id", &self.ksx_id)
            .finish_non_exhaustive()
    }
}

/// Asks B for the key material over the inner association; B's refusals come back as errors
/// carrying B's status code.
pub async fn request_key_material(
    agent: &GroupAgent<'_>,
    client: Client,
) -> M2mResult<KeyMaterial> {
    let context = m2m_security::tls::client_context(&m2m_security::tls::ClientTlsConfig {
        cipher_suites: m2m_security::tls::PSK_SUITES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        psk: Some((
            agent.kpsaxm_id.to_owned(),
            Zeroizing::new(agent.kpsaxm.expose().to_vec()),
        )),
        ..Default::default()
    })
    .map_err(M2mError::internal)?;
    let client = client.with_tls(TlsSettings {
        context,
        peer: crate::PeerPolicy::PreSharedKey,
    });
    let mut req = Request::new(
        Operation::Notify,
        agent.to.to_owned(),
        Some(agent.from.to_owned()),
        crate::next_request_id(),
    );
    req.pc = Some(wire::wrap(wire::KEY_REQUEST, &KeyRequest {}));
    let rsp = client.send(agent.url, &req).await?.into_result()?;
    wire::unwrap(wire::KEY_MATERIAL, rsp.pc.as_ref()).unwrap_or_else(|| {
        Err(M2mError::new(
            ResponseStatusCode::InternalServerError,
            "the group agent's answer carries no m2m:gaKey",
        ))
    })
}

/// Ksx = HMAC-SHA-256(Kpsaxi, label || NFKC(Enrolee-Ax-ID) || Rand), KsxId = KpsaxiId.
pub fn derive(material: KeyMaterial, kpsaxi: &Secret) -> M2mResult<GroupKey> {
    let rand = wire::rand_from_hex(&material.rand)?;
    Ok(GroupKey {
        ksx_id: material.kid.clone(),
        ksx: m2m_security::kdf::ksx(kpsaxi, &material.eid, &rand),
        material,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_kdf_key_and_hides_it() {
        let kpsaxi = Secret::from_hex("00112233445566778899aabbccddeeff").unwrap();
        let material = KeyMaterial {
            rand: "0102".into(),
            eid: "Smeter1".into(),
            kid: "meter1@in.example.com".into(),
            csi: "/id-in".into(),
            exp: "20300101T000000".into(),
        };
        let key = derive(material, &kpsaxi).unwrap();
        assert_eq!(key.ksx_id, "meter1@in.example.com");
        assert_eq!(key.ksx, m2m_security::kdf::ksx(&kpsaxi, "Smeter1", &[1, 2]));
        assert!(!format!("{key:?}").contains(&key.ksx.to_hex().to_string()));
        let bad = KeyMaterial {
            rand: "xyz".into(),
            ..key.material
        };
        assert!(derive(bad, &kpsaxi).is_err());
    }
}
