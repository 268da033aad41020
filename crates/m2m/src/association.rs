//! Security association establishment of an AE with its CSE (TS-0003 clause 8.2): the three
//! modes an AE of this project uses (provisioned symmetric key 8.2.2.1, certificates 8.2.2.2,
//! MAF-based 8.2.2.3), shared by `m2m request`, `m2m ae` and `m2m demo`.

use anyhow::{anyhow, Context};
use m2m_client::{Client, PeerPolicy, TlsSettings};
use m2m_keyservices::sae::{connection_key, MafAccess};
use m2m_security::credentials::Secret;
use m2m_security::tls::{client_context, dtls_client_context, ClientTlsConfig};
use std::path::PathBuf;
use std::time::Duration;
use zeroize::Zeroizing;

/// Where a secret comes from: never the configuration itself, so that configurations can be
/// shown, copied and committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable holding the key in hex (keeps it out of the process list).
    Env(String),
    /// A file holding the key in hex; it must be private (mode 0600).
    File(PathBuf),
}

/// Looks up an environment variable; injectable so that tests need not touch the process's.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<Zeroizing<String>>;

/// The process's environment.
pub fn process_env(name: &str) -> Option<Zeroizing<String>> {
    std::env::var(name).ok().map(Zeroizing::new)
}

impl SecretSource {
    /// Reads the key; errors name the variable or file, never the value.
    pub fn load(&self) -> anyhow::Result<Secret> {
        self.load_with(&process_env)
    }

    /// [`SecretSource::load`] with the environment looked up through `env`.
    pub fn load_with(&self, env: EnvLookup) -> anyhow::Result<Secret> {
        let text = self.text_with(env)?;
        // from_hex trims the trailing newline of a file itself.
        Secret::from_hex(&text).map_err(|e| anyhow!("{}: {e}", self.origin()))
    }

    /// The secret's text as stored (hex, or a JWK): the variable, or the private file.
    pub fn text_with(&self, env: EnvLookup) -> anyhow::Result<Zeroizing<String>> {
        match self {
            SecretSource::Env(var) => env(var).ok_or_else(|| anyhow!("${var} is not set")),
            SecretSource::File(path) => {
                m2m_security::secure_environment::check_private_file(path)
                    .map_err(|e| anyhow!(e))?;
                Ok(Zeroizing::new(std::fs::read_to_string(path).with_context(
                    || format!("cannot read {}", path.display()),
                )?))
            }
        }
    }

    /// `$VAR` or the file's path, for messages.
    fn origin(&self) -> String {
        match self {
            SecretSource::Env(var) => format!("${var}"),
            SecretSource::File(path) => path.display().to_string(),
        }
    }
}

/// How the AE obtains the credential it presents to the MAF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MafCredential {
    /// A pre-provisioned Km with its KmID.
    Km { km_id: String, km: SecretSource },
    /// Remote provisioning: enrol at the MEF (TS-0003 clause 8.3); Km is derived from the
    /// enrolment.
    Enrolment(MefEnrolment),
}

/// An enrolment at a MEF: where, and how the enrolee authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MefEnrolment {
    pub mef_url: String,
    pub mef_fqdn: String,
    pub enrolee: MefEnrolee,
}

/// How an enrolee authenticates to the MEF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MefEnrolee {
    /// The factory credential Kpm with its KpmID (clause 8.3.2.1).
    Kpm { kpm_id: String, kpm: SecretSource },
    /// GBA (clause 8.3.2.3): the USIM's bootstrapped key, the MEF a NAF of the device's BSF.
    Gba(GbaDevice),
    /// A certificate (clause 8.3.2.2): the enrolee is the identity it names; the MEF's
    /// certificate must chain to `trusted_ca` and name the MEF-FQDN.
    Certificate {
        certificate: PathBuf,
        private_key: PathBuf,
        trusted_ca: PathBuf,
    },
}

/// A device with a USIM and the BSF it bootstraps at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GbaDevice {
    /// The software USIM file (0600): IMPI, K, OPc, SQN, the key of the last bootstrapping.
    pub usim: PathBuf,
    /// The BSF's Ub URL (`http://host:port`).
    pub ub_url: String,
    /// The BSF's domain (realm, B-TID suffix).
    pub bsf_fqdn: String,
}

impl GbaDevice {
    /// The bootstrapped key the USIM file keeps while fresh, else a new bootstrapping.
    pub async fn key(&self, force: bool) -> anyhow::Result<m2m_keyservices::bsf::Bootstrapped> {
        let mut usim =
            m2m_keyservices::bsf::SoftwareUsim::load(&self.usim).map_err(|e| anyhow!(e))?;
        m2m_keyservices::bsf::current_key(&self.ub_url, &self.bsf_fqdn, &mut usim, force)
            .await
            .map_err(|e| anyhow!("GBA: {e}"))
    }
}

impl MefEnrolment {
    /// The enrolee's connection to the MEF.
    pub async fn connect(&self) -> anyhow::Result<m2m_keyservices::mef::MefClient> {
        use m2m_keyservices::mef::{client::mef_addr, MefClient};
        let addr = mef_addr(&self.mef_url).map_err(|e| anyhow!("MEF: {e}"))?;
        match &self.enrolee {
            MefEnrolee::Kpm { kpm_id, kpm } => {
                MefClient::connect_psk(&addr, &self.mef_fqdn, kpm_id, &kpm.load()?).await
            }
            MefEnrolee::Gba(device) => {
                MefClient::connect_gba(&addr, &self.mef_fqdn, &device.key(false).await?).await
            }
            MefEnrolee::Certificate {
                certificate,
                private_key,
                trusted_ca,
            } => {
                MefClient::connect_certificate(
                    &addr,
                    &self.mef_fqdn,
                    certificate,
                    private_key,
                    trusted_ca,
                )
                .await
            }
        }
        .map_err(|e| anyhow!("MEF: {e}"))
    }
}

/// MAF-based SAE: the MAF to obtain Kc from, the credential towards it, the target CSE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MafSae {
    pub url: String,
    pub fqdn: String,
    /// The absolute CSE-ID of the target CSE (e.g. `//m2m.example.com/id-in`).
    pub target_cse: String,
    pub credential: MafCredential,
}

/// The security association mode of an AE with its CSE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaeMode {
    /// No association: plain HTTP (loopback development and the gateway app on its MN-CSE).
    None,
    /// Provisioned symmetric key: TLS-PSK with KpsaID and Kpsa.
    Psk { kpsa_id: String, key: SecretSource },
    /// Certificates: a client certificate chain and its key.
    Certificate {
        certificate: PathBuf,
        private_key: PathBuf,
    },
    /// MAF-based: TLS-PSK with a connection key Kc from the MAF.
    Maf(MafSae),
    /// GBA-based: TLS-PSK (DTLS-PSK) with the B-TID and Ks_NAF (TS-0003 clause 8.3.2.3).
    Gba(GbaSae),
    /// Provisioned symmetric key from the MEF: TLS-PSK with KeID and the Kpsa derived for the CSE.
    MefKpsa(MefKpsa),
}

/// GBA-based SAE: the device and the CSE as NAF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GbaSae {
    pub device: GbaDevice,
    /// The CSE's NAF FQDN: its CSE-ID's public domain name (`id-in.m2m.example.com`).
    pub naf_fqdn: String,
}

/// Remote-provisioned Kpsa (TS-0003 clauses 8.3.2.1, 10.3.3): the enrolment names the target CSE
/// for SUID 12; KpsaID = KeID, Kpsa = HMAC(Ke, label || target CSE-ID); the CSE fetches the same
/// key from the MEF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MefKpsa {
    pub enrolment: MefEnrolment,
    /// The target CSE's SP-relative CSE-ID (`/id-in`), as its certificate names it.
    pub target: String,
}

/// The TLS suite a GBA client offers (one, so that it knows the NAF_Id its key is for), and the
/// DTLS one.
const GBA_TLS_SUITE: (&str, u16) = ("PSK-AES128-CBC-SHA256", 0x00AE);
const GBA_DTLS_SUITE: (&str, u16) = ("PSK-AES128-CCM8", 0xC0A8);

/// What the AE knows of the CSE's side of TLS.
#[derive(Clone, Debug, Default)]
pub struct TlsPeer {
    /// Root of trust for the CSE's certificate (certificate mode).
    pub trusted_ca: Option<PathBuf>,
    /// The CSE's name for SNI and certificate verification (e.g. `id-in.m2m.example.com`).
    pub server_name: Option<String>,
    /// Revocation lists the CSE's certificate is checked against (TS-0003 clause 8.1.2.2).
    pub crl: Option<PathBuf>,
    /// The CSE's CSE-ID (`/id-in`): the receiver of the MQTT topics (`mqtts://` URLs).
    pub cse_id: Option<String>,
}

/// A psk_identity and its key, ready for the TLS context.
#[derive(Clone)]
pub struct PskCredential {
    pub identity: String,
    pub key: Zeroizing<Vec<u8>>,
    /// The key of DTLS associations when it is another (GBA: NAF_Id names the suite).
    pub dtls_key: Option<Zeroizing<Vec<u8>>>,
}

impl PskCredential {
    /// One key for every transport.
    pub fn new(identity: String, key: Zeroizing<Vec<u8>>) -> PskCredential {
        PskCredential {
            identity,
            key,
            dtls_key: None,
        }
    }
}

impl std::fmt::Debug for PskCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PskCredential")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// The GBA credential: the B-TID of a fresh bootstrapped key (the USIM file's, or a new
/// bootstrapping; `force` always bootstraps anew), Ks_NAF for the TLS and the DTLS suite.
pub async fn gba_psk(gba: &GbaSae, force: bool) -> anyhow::Result<PskCredential> {
    use m2m_security::gba::key_derivation::{ua_tls_psk, NafId};
    let key = gba.device.key(force).await?;
    let naf = |suite: u16| NafId {
        fqdn: gba.naf_fqdn.clone(),
        ua_protocol: ua_tls_psk(suite),
    };
    let tls = key.ks_naf(&naf(GBA_TLS_SUITE.1)).map_err(|e| anyhow!(e))?;
    let dtls = key.ks_naf(&naf(GBA_DTLS_SUITE.1)).map_err(|e| anyhow!(e))?;
    Ok(PskCredential {
        identity: key.b_tid.clone(),
        key: Zeroizing::new(tls.to_vec()),
        dtls_key: Some(Zeroizing::new(dtls.to_vec())),
    })
}

impl SaeMode {
    /// The TLS-PSK credential of the mode. For MAF-based SAE this goes to the network (MEF
    /// enrolment when configured, MAF client and key registration), so its errors mean the key
    /// services could not be reached or refused.
    pub async fn psk(&self) -> anyhow::Result<Option<PskCredential>> {
        match self {
            SaeMode::Psk { kpsa_id, key } => {
                let key = key.load()?;
                Ok(Some(PskCredential::new(
                    kpsa_id.clone(),
                    Zeroizing::new(key.expose().to_vec()),
                )))
            }
            SaeMode::Maf(maf) => maf_psk(maf).await.map(Some),
            SaeMode::Gba(gba) => gba_psk(gba, false).await.map(Some),
            SaeMode::MefKpsa(k) => mef_kpsa(k).await.map(Some),
            SaeMode::None | SaeMode::Certificate { .. } => Ok(None),
        }
    }

    /// A client that opens associations in this mode, given the PSK `psk()` returned.
    pub fn client(
        &self,
        psk: Option<PskCredential>,
        peer: &TlsPeer,
        timeout: Duration,
    ) -> anyhow::Result<Client> {
        let client = Client::new().with_timeout(timeout);
        let (certificate_chain, private_key) = match self {
            SaeMode::Certificate {
                certificate,
                private_key,
            } => (Some(certificate.clone()), Some(private_key.clone())),
            _ => (None, None),
        };
        if psk.is_none() && certificate_chain.is_none() && peer.trusted_ca.is_none() {
            return Ok(client);
        }
        // With a PSK the server proves itself by knowing the key; with certificates it must
        // carry the configured name, else the URL's host.
        let check = match (&psk, &peer.server_name) {
            (Some(_), _) => PeerPolicy::PreSharedKey,
            (None, Some(name)) => PeerPolicy::Named(name.clone()),
            (None, None) => PeerPolicy::UrlHost,
        };
        // GBA offers one suite per transport: the key is Ks_NAF for that suite's NAF_Id.
        let gba = matches!(self, SaeMode::Gba(_));
        let dtls_psk = psk.as_ref().map(|p| {
            (
                p.identity.clone(),
                p.dtls_key.clone().unwrap_or_else(|| p.key.clone()),
            )
        });
        let config = ClientTlsConfig {
            cipher_suites: if gba {
                vec![GBA_TLS_SUITE.0.to_owned()]
            } else {
                Vec::new()
            },
            tls13: false,
            psk: psk.as_ref().map(|p| (p.identity.clone(), p.key.clone())),
            psk_source: None,
            certificate_chain,
            private_key,
            trusted_ca: peer.trusted_ca.clone(),
            revocation: m2m_security::revocation::RevocationList::open_configured(
                peer.crl.as_deref(),
                peer.trusted_ca.as_deref(),
            )
            .map_err(|e| anyhow!("crl: {e}"))?,
        };
        let credential = config
            .psk
            .as_ref()
            .map(|(identity, _)| format!("12-{identity}"));
        let context = client_context(&config).map_err(|e| anyhow!("TLS: {e}"))?;
        // The same credentials for coaps:// (DTLS 1.2, the CoAP binding).
        let dtls_config = ClientTlsConfig {
            cipher_suites: if gba {
                vec![GBA_DTLS_SUITE.0.to_owned()]
            } else {
                Vec::new()
            },
            psk: dtls_psk,
            ..config.clone()
        };
        let dtls = dtls_client_context(&dtls_config).map_err(|e| anyhow!("DTLS: {e}"))?;
        // ... and for mqtts:// (the MQTT server is the TLS peer, TS-0010 clause 7.3; a NAF key
        // is the CSE's, never the MQTT server's).
        let client = match &peer.cse_id {
            Some(cse_id) if !gba => client.with_mqtt(m2m_client::MqttSettings {
                tls: TlsSettings {
                    context: context.clone(),
                    peer: check.clone(),
                },
                credential,
                cse_id: cse_id.clone(),
            }),
            _ => client,
        };
        Ok(client
            .with_tls(TlsSettings {
                context,
                peer: check.clone(),
            })
            .with_dtls(TlsSettings {
                context: dtls,
                peer: check,
            }))
    }

    /// The short name of the mode, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            SaeMode::None => "none",
            SaeMode::Psk { .. } => "psk",
            SaeMode::Certificate { .. } => "certificate",
            SaeMode::Maf(_) => "maf",
            SaeMode::Gba(_) => "gba",
            SaeMode::MefKpsa(_) => "mef-kpsa",
        }
    }
}

/// MAF-based SAE in one call: enrol at the MEF when configured, obtain Kc for the target CSE.
async fn maf_psk(maf: &MafSae) -> anyhow::Result<PskCredential> {
    maf_psk_with(&maf_access(maf).await?, &maf.target_cse).await
}

/// Enrols at the MEF naming the target CSE for Kpsa (SUID 12): KpsaID = KeID, the Kpsa derived
/// for the target.
async fn mef_kpsa(k: &MefKpsa) -> anyhow::Result<PskCredential> {
    let kpsa = m2m_keyservices::sae::enrol_for_kpsa(k.enrolment.connect().await?, &k.target)
        .await
        .map_err(|e| anyhow!(e))?;
    Ok(PskCredential::new(
        kpsa.kpsa_id,
        Zeroizing::new(kpsa.kpsa.expose().to_vec()),
    ))
}

/// The TLS-PSK credential of a Kc for `target_cse`, with the MAF access in hand (so that a
/// command needing the MAF twice enrols once).
pub async fn maf_psk_with(access: &MafAccess, target_cse: &str) -> anyhow::Result<PskCredential> {
    let key = connection_key(access, target_cse)
        .await
        .map_err(|e| anyhow!(e))?;
    Ok(PskCredential::new(
        key.psk_identity.clone(),
        Zeroizing::new(key.psk.expose().to_vec()),
    ))
}

/// The MAF with the credential towards it: Km as given, or from a MEF enrolment made now.
pub async fn maf_access(maf: &MafSae) -> anyhow::Result<MafAccess> {
    Ok(match &maf.credential {
        MafCredential::Enrolment(enrolment) => {
            m2m_keyservices::sae::enrol_for_maf_on(enrolment.connect().await?, &maf.url, &maf.fqdn)
                .await
                .map_err(|e| anyhow!(e))?
        }
        MafCredential::Km { km_id, km } => MafAccess {
            url: maf.url.clone(),
            fqdn: maf.fqdn.clone(),
            km_id: km_id.clone(),
            km: km.load()?,
        },
    })
}

/// A TLS-PSK client with an identity and key in hand (the demo's locks and attackers).
pub fn psk_client(identity: &str, key: &[u8], timeout: Duration) -> anyhow::Result<Client> {
    let mode = SaeMode::None;
    mode.client(
        Some(PskCredential::new(
            identity.to_owned(),
            Zeroizing::new(key.to_vec()),
        )),
        &TlsPeer::default(),
        timeout,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_come_from_variables_and_private_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.hex");
        std::fs::write(&file, "1a2b3c4d5e6f7a8b\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SecretSource::File(file.clone()).load().unwrap_err();
        assert!(format!("{err:#}").contains("chmod 600"), "{err:#}");
        assert!(!format!("{err:#}").contains("1a2b"), "{err:#}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = SecretSource::File(file).load().unwrap();
        assert_eq!(key.expose(), hex::decode("1a2b3c4d5e6f7a8b").unwrap());

        let err = SecretSource::Env("M2M_TEST_UNSET_KEY_VAR".into())
            .load()
            .unwrap_err();
        assert_eq!(err.to_string(), "$M2M_TEST_UNSET_KEY_VAR is not set");

        let env = |name: &str| (name == "K").then(|| Zeroizing::new("1a2b\n".to_owned()));
        let key = SecretSource::Env("K".into()).load_with(&env).unwrap();
        assert_eq!(key.expose(), [0x1a, 0x2b]);
        let env = |_: &str| Some(Zeroizing::new("1a2x".to_owned()));
        let err = SecretSource::Env("K".into()).load_with(&env).unwrap_err();
        assert!(err.to_string().starts_with("$K: "), "{err}");
        assert!(!err.to_string().contains("1a2x"), "{err}");
    }
}
