//! The AE's side of MAF-based security association establishment in one call (TS-0003 clauses
//! 8.2.2.3, 8.3, 8.8): from a pre-provisioned Kpm (enrolment at the MEF) or a Km, to the
//! psk_identity and PSK the AE opens TLS-PSK with at its target CSE.

use crate::maf::{MafClient, RegisteredKey};
use crate::mef::{EnrolmentRequest, MefClient};
use m2m_security::credentials::Secret;
use m2m_security::kdf;

/// How to reach a MAF and authenticate to it.
pub struct MafAccess {
    /// `https://host:port`
    pub url: String,
    /// The MAF-FQDN (SNI, certificate name, suffix of its key IDs).
    pub fqdn: String,
    /// psk_identity towards the MAF: a pre-provisioned KmID, or the KeID of a MEF enrolment.
    pub km_id: String,
    pub km: Secret,
}

/// What the AE presents to its target CSE.
pub struct ConnectionKey {
    /// `HEX(KcID)@MAF-FQDN`
    pub psk_identity: String,
    /// [`psk_of_kc`] of Kc.
    pub psk: Secret,
    pub expiration_time: String,
}

impl std::fmt::Debug for ConnectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionKey")
            .field("psk_identity", &self.psk_identity)
            .finish_non_exhaustive()
    }
}

/// Enrols at the MEF with Kpm/KpmID and derives the Km for `maf_fqdn` (clause 10.3.2); the MAF
/// fetches the same Km from the MEF, and the KeID serves as the KmID.
pub async fn enrol_for_maf(
    mef_url: &str,
    mef_fqdn: &str,
    kpm_id: &str,
    kpm: &Secret,
    maf_url: &str,
    maf_fqdn: &str,
) -> Result<MafAccess, String> {
    let addr = crate::mef::client::mef_addr(mef_url).map_err(|e| format!("MEF: {e}"))?;
    let mef = MefClient::connect_psk(&addr, mef_fqdn, kpm_id, kpm)
        .await
        .map_err(|e| format!("MEF: {e}"))?;
    enrol_for_maf_on(mef, maf_url, maf_fqdn).await
}

/// The enrolment for the MAF on an open MEF connection (an enrolee on Kpm or by GBA), and the Km
/// it gives.
pub async fn enrol_for_maf_on(
    mut mef: MefClient,
    maf_url: &str,
    maf_fqdn: &str,
) -> Result<MafAccess, String> {
    let request = EnrolmentRequest {
        indications: vec!["MAF".into()],
        maf_id: Some(maf_fqdn.into()),
        targets: Vec::new(),
    };
    let enrolled = mef
        .enrol(&request)
        .await
        .map_err(|e| format!("MEF enrolment: {e}"))?;
    let km = kdf::km(&enrolled.ke, maf_fqdn);
    Ok(MafAccess {
        url: maf_url.into(),
        fqdn: maf_fqdn.into(),
        km_id: enrolled.ke_id,
        km,
    })
}

/// A Kpsa provisioned by the MEF (TS-0003 clauses 8.3.2.1, 10.3.3).
pub struct ProvisionedKpsa {
    /// KpsaID = KeID (`hex@MEF-FQDN`): the psk_identity, the name the target fetches it by.
    pub kpsa_id: String,
    pub kpsa: Secret,
    /// Seconds the enrolment (and so the key) is valid.
    pub lifetime: u64,
}

impl std::fmt::Debug for ProvisionedKpsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionedKpsa")
            .field("kpsa_id", &self.kpsa_id)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// Enrols on an open MEF connection naming `target` (a CSE's SP-relative CSE-ID, as its
/// certificate names it) for SUID 12, and derives the Kpsa the target fetches from the MEF.
pub async fn enrol_for_kpsa(mut mef: MefClient, target: &str) -> Result<ProvisionedKpsa, String> {
    let request = EnrolmentRequest {
        indications: Vec::new(),
        maf_id: None,
        targets: vec![crate::mef::store::TargetRef {
            id: target.to_owned(),
            suid: crate::mef::SUID_SAEF,
        }],
    };
    let enrolled = mef
        .enrol(&request)
        .await
        .map_err(|e| format!("MEF enrolment: {e}"))?;
    Ok(ProvisionedKpsa {
        kpsa: crate::mef::credential_for(&enrolled.ke, crate::mef::SUID_SAEF, target),
        kpsa_id: enrolled.ke_id,
        lifetime: enrolled.lifetime,
    })
}

/// Registers at the MAF on Km and registers a Kc with `suid` for `target` (TS-0003 clause 8.8.2),
/// valid until `expiration_time` when given, else for the MAF's default lifetime.
async fn register_kc(
    maf: &MafAccess,
    suid: u32,
    target: &str,
    expiration_time: Option<&str>,
) -> Result<RegisteredKey, String> {
    let mut client = MafClient::connect_psk(&maf.url, &maf.fqdn, &maf.km_id, &maf.km)
        .await
        .map_err(|e| format!("MAF: {e}"))?;
    client
        .register_client(None)
        .await
        .map_err(|e| format!("MAF client registration: {e}"))?;
    client
        .register_key(suid, &[target], expiration_time)
        .await
        .map_err(|e| format!("MAF key registration: {e}"))
}

/// The TLS-PSK of a MAF-distributed Kc: its first half, since TLS-PSK takes one key where Kc is
/// 32 bytes (TS-0003 clause 8.8.1; the AE and the target CSE must cut it the same way).
pub fn psk_of_kc(kc: &Secret) -> Secret {
    let kc = kc.expose();
    Secret::from_slice(&kc[..kc.len() / 2])
}

/// Registers at the MAF and registers a connection key for `target` (the absolute CSE-ID of the
/// CSE to associate with, e.g. `//m2m.example.com/id-in`); returns what the AE presents to it.
pub async fn connection_key(maf: &MafAccess, target: &str) -> Result<ConnectionKey, String> {
    connection_key_until(maf, target, None).await
}

/// [`connection_key`] with the Kc's expirationTime requested (`YYYYMMDDTHHMMSS`); `None` leaves
/// it to the MAF.
pub async fn connection_key_until(
    maf: &MafAccess,
    target: &str,
    expiration_time: Option<&str>,
) -> Result<ConnectionKey, String> {
    let key = register_kc(maf, 12, target, expiration_time).await?;
    Ok(ConnectionKey {
        psk_identity: key.key_id.clone(),
        psk: psk_of_kc(&key.key),
        expiration_time: key.expiration_time.clone(),
    })
}

/// The SUID of a MAF-distributed pairwiseESPrimKey (TS-0004 table 6.3.4.2.39-1); the target CSE
/// checks retrieved keys against it.
pub const ESPRIM_MAF_SUID: u32 = 33;

/// A pairwiseESPrimKey from the MAF ESPrim Framework.
pub struct EsprimMafKey {
    /// pairwiseESPrimKeyID = the Key Identifier `HEX(KcID)@MAF-FQDN`.
    pub kid: String,
    /// HMAC-SHA-256(Kc, the project's reserved string) (`kdf::esprim_maf_pairwise`).
    pub key: Secret,
    pub expiration_time: String,
}

impl std::fmt::Debug for EsprimMafKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsprimMafKey")
            .field("kid", &self.kid)
            .field("expiration_time", &self.expiration_time)
            .finish_non_exhaustive()
    }
}

/// The Originator's side of the MAF ESPrim Framework (TS-0003 clause 8.4.2 A): registers at the MAF and
/// registers this connection's Kc with SUID 33 for `target` (the Target CSE's ID); the Target retrieves
/// the same Kc on first use.
pub async fn esprim_key(maf: &MafAccess, target: &str) -> Result<EsprimMafKey, String> {
    let key = register_kc(maf, ESPRIM_MAF_SUID, target, None).await?;
    Ok(EsprimMafKey {
        kid: key.key_id.clone(),
        key: kdf::esprim_maf_pairwise(&key.key),
        expiration_time: key.expiration_time.clone(),
    })
}
