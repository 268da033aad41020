//! Keys another function provisions for this CSE, looked up during the handshake: GBA-based
//! security association establishment (TS-0003 clause 8.3.2.3: this CSE a NAF of the BSF of
//! `[gba]`, its NAF FQDN the public domain name of its CSE-ID; [`m2m_keyservices::bsf::NafKeys`])
//! and remote-provisioned Kpsa (clause 8.3.2.1: this CSE an enrolment target of the MEF of
//! `[mef]`; [`m2m_keyservices::mef::ProvisionedKpsaKeys`]).

use crate::config::Config;
use m2m_keyservices::bsf::{NafKeys, ZnClient};
use openssl::ssl::SslContext;
use std::time::Duration;

/// The NAF keys of `[gba]`, fetched with `certificate`, this CSE's outgoing certificate context;
/// `None` without `[gba]`.
pub(crate) fn from_config(
    cfg: &Config,
    certificate: Option<&SslContext>,
) -> anyhow::Result<Option<NafKeys>> {
    let Some(section) = cfg.gba.clone() else {
        return Ok(None);
    };
    let has_key = cfg.tls.as_ref().is_some_and(|t| t.private_key.is_some());
    let Some(context) = certificate.filter(|_| has_key).cloned() else {
        anyhow::bail!(
            "[gba] needs [tls] certificate, private_key and trusted_ca to authenticate to the BSF"
        );
    };
    let identity = cfg.identity()?;
    let naf_fqdn = identity
        .naming
        .dns_name(&identity.cse_id)
        .map_err(|e| anyhow::anyhow!("[gba]: this CSE has no NAF FQDN: {e}"))?;
    Ok(Some(NafKeys::new(
        ZnClient::new(&section.zn_url, &section.bsf_fqdn, context),
        &naf_fqdn,
        identity.home,
        Duration::from_millis(section.timeout_ms),
        section.cache_seconds,
    )))
}

/// The Kpsa the MEF of `[mef]` provisions for this CSE, fetched with `certificate`; `None`
/// without `[mef]`.
pub(crate) fn provisioned_kpsa(
    cfg: &Config,
    certificate: Option<&SslContext>,
) -> anyhow::Result<Option<m2m_keyservices::mef::ProvisionedKpsaKeys>> {
    let Some(section) = cfg.mef.clone() else {
        return Ok(None);
    };
    let has_key = cfg.tls.as_ref().is_some_and(|t| t.private_key.is_some());
    let Some(context) = certificate.filter(|_| has_key).cloned() else {
        anyhow::bail!(
            "[mef] needs [tls] certificate, private_key and trusted_ca to authenticate to the MEF"
        );
    };
    let identity = cfg.identity()?;
    Ok(Some(m2m_keyservices::mef::ProvisionedKpsaKeys::new(
        &section.url,
        &section.fqdn,
        context,
        &identity.cse_id.to_string(),
        identity.home,
        Duration::from_millis(section.timeout_ms),
        section.cache_seconds,
    )))
}
