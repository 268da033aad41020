//! The pairwiseESPrimKey of `m2m request --esprim-to` (TS-0003 clause 8.4.2 step A), from one of three
//! sources: provisioned (`--esprim-key-id`/`--esprim-key-env`), the MAF ESPrim Framework (`--esprim-maf`
//! with the `--maf-url`/`--maf-fqdn` and `--km-id`/`--km-env` or MEF options: Kc registered with SUID 33
//! for the Target), or ESCertKE with the Target (`--esprim-cert`/`--esprim-cert-key`/`--esprim-ca`,
//! clause 8.7), run through the same CSE the protected request then goes through.

use crate::association::{maf_access, MafSae, SecretSource};
use m2m_core::{M2mError, M2mResult, ResponseStatusCode as Rsc};
use m2m_keyservices::sae::MafAccess;
use m2m_security::credentials::Secret;
use std::path::{Path, PathBuf};

/// Where the pairwiseESPrimKey comes from.
pub enum EsprimKeySource {
    /// A provisioned key and its ID.
    Provisioned { kid: String, key: SecretSource },
    /// Kc from the MAF (`target_cse` is the ESPrim Target).
    Maf(MafSae),
    /// ESCertKE with the Originator's certificate and key and a root of trust for the Target's.
    Certificate {
        certificate: PathBuf,
        private_key: PathBuf,
        trusted_ca: PathBuf,
    },
}

/// The Originator and the Target, as the outer NOTIFYs address them.
pub struct Route<'a> {
    pub client: &'a m2m_client::Client,
    pub url: &'a str,
    /// The Target's CSEBase (`/id-in` or `//sp/id-in`).
    pub to: &'a str,
    pub from: &'a str,
}

/// Obtains (pairwiseESPrimKeyID, pairwiseESPrimKey). A key service that cannot be reached or refuses
/// is 5103 (the command exits 2); the Target's ESCertKE refusals come back with their codes.
/// `known` is the MAF access the command already has (its MAF-based SAE), used instead of
/// enrolling again.
pub async fn obtain(
    source: &EsprimKeySource,
    route: &Route<'_>,
    known: Option<&MafAccess>,
) -> M2mResult<(String, Secret)> {
    match source {
        EsprimKeySource::Provisioned { kid, key } => {
            let key = key
                .load()
                .map_err(|e| M2mError::bad_request(e.to_string()))?;
            Ok((kid.clone(), key))
        }
        EsprimKeySource::Maf(maf) => {
            let unreachable = |e: String| M2mError::new(Rsc::TargetNotReachable, e);
            let fetched;
            let access = match known {
                Some(access) => access,
                None => {
                    fetched = maf_access(maf)
                        .await
                        .map_err(|e| unreachable(format!("{e:#}")))?;
                    &fetched
                }
            };
            let key = m2m_keyservices::sae::esprim_key(access, &maf.target_cse)
                .await
                .map_err(unreachable)?;
            Ok((key.kid, key.key))
        }
        EsprimKeySource::Certificate {
            certificate,
            private_key,
            trusted_ca,
        } => escertke(certificate, private_key, trusted_ca, route).await,
    }
}

async fn escertke(
    certificate: &Path,
    private_key: &Path,
    trusted_ca: &Path,
    route: &Route<'_>,
) -> M2mResult<(String, Secret)> {
    let bad = |e: String| M2mError::bad_request(e);
    let ctx = m2m_security::tls::client_context(&m2m_security::tls::ClientTlsConfig {
        cipher_suites: m2m_security::tls::CERTIFICATE_SUITES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        certificate_chain: Some(certificate.to_path_buf()),
        private_key: Some(private_key.to_path_buf()),
        trusted_ca: Some(trusted_ca.to_path_buf()),
        ..Default::default()
    })
    .map_err(|e| bad(format!("--esprim-cert: {e}")))?;
    let server_name = target_name(route.to, certificate).map_err(bad)?;
    let target = m2m_client::escertke::EscertkeTarget {
        url: route.url,
        to: route.to,
        from: route.from,
        server_name: &server_name,
    };
    let key = m2m_client::escertke::establish(route.client, &target, &ctx).await?;
    Ok((key.key_id_text(), key.key))
}

/// The name the Target's certificate must carry: the CSE's public domain name (`<in>.<sp>` for the
/// IN-CSE `/id-in`, `<cse>.id-in.<sp>` for another), with the SP of an absolute `--esprim-to` or
/// else the SP of the Originator's own certificate.
fn target_name(to: &str, own_certificate: &Path) -> Result<String, String> {
    use m2m_security::certificates::{sp_of, CseNaming};
    let (sp, path) = match to.strip_prefix("//") {
        Some(rest) => {
            let (sp, path) = rest.split_once('/').unwrap_or((rest, ""));
            (sp.to_owned(), path)
        }
        None => {
            let pem = std::fs::read(own_certificate)
                .map_err(|e| format!("{}: {e}", own_certificate.display()))?;
            let cert = openssl::x509::X509::from_pem(&pem)
                .map_err(|_| format!("{} holds no PEM certificate", own_certificate.display()))?;
            let sp = sp_of(&cert).ok_or_else(|| {
                "--esprim-cert names no SP: give --esprim-to as an absolute CSE-ID (//sp/id-in)"
                    .to_owned()
            })?;
            (sp, to.trim_start_matches('/'))
        }
    };
    let cse_id = path.split('/').next().unwrap_or_default();
    let cse_id = m2m_core::CseId::parse(cse_id).map_err(|e| e.dbg)?;
    CseNaming::new(&sp, "/id-in")?.dns_name(&cse_id)
}
