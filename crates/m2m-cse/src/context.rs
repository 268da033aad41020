//! What every layer from the security gate up reads: who this CSE is (its identity and
//! configuration), its resource tree (the store), its clock, its credentials and outgoing
//! clients, and the state of the Security CSF (TS-0003: associations, key services, dynamic
//! authorization, ESPrim, group authentication, secure storage). The notification layer
//! (`notification::Delivery`) holds it and derefs to it, the resource engine (`cse::Cse`) holds
//! that and derefs to it in turn; the layers below the engine reach the Receiver back only
//! through `Receiver`, a seam the engine registers.

use crate::association::Peer;
use crate::config::{Config, CseIdentity};
use crate::store::Store;
use chrono::{DateTime, Utc};
use m2m_core::{CseId, EntityId, M2mError, M2mResult, Request, Response};
use m2m_security::association::{Association, SaeMode};
use m2m_security::credentials::{CredentialId, KpsaId};
use m2m_security::secure_environment::{SecureEnvironment, SharedEnvironments};
use openssl::ssl::SslContext;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock, Weak};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The Receiver of TS-0004 clause 7.3 as the layers below the engine reach it: a decrypted
/// ESPrim request, or a request the gate makes of its own CSE, goes through every check again.
pub(crate) trait Receiver: Send + Sync {
    fn receive(self: Arc<Self>, req: Request, peer: Peer) -> BoxFuture<Response>;
}

/// The state every layer from the security gate up reads; built once by `Context::open` from
/// the configuration and the secure environments, held by the engine (`cse::Cse`).
pub struct Context {
    pub(crate) id: CseIdentity,
    pub(crate) cfg: Config,
    pub(crate) store: Store,
    /// Outgoing requests: notifications, retargeting down to registrees, group fan-out.
    pub(crate) client: m2m_client::Client,
    /// Outgoing requests to the registrar: the same credentials, with its expected name.
    pub(crate) registrar_client: m2m_client::Client,
    /// This CSE's certificate as a client, for the registree clients below.
    certificate: Option<SslContext>,
    /// The same certificate as a DTLS client (`coaps` points of access).
    dtls_certificate: Option<SslContext>,
    /// The KpsaID of the PSK bound to each entity: the association of TS-0003 clause 8.2.2.1
    /// opened by the CSE towards a `coaps` point of access (only the entity, or this CSE, knows
    /// the key). The key is asked of the secure environments at each handshake.
    entity_psk: std::collections::HashMap<EntityId, KpsaId>,
    /// The secure environments (shared with the TLS listener's psk table).
    environments: SharedEnvironments,
    /// Retargeting down to a registree CSE over https: one client per CSE-ID that requires the
    /// peer's certificate to name that CSE (`<cse-id>.<sp>`), whatever address its poa holds.
    registree_clients: std::sync::Mutex<std::collections::HashMap<String, m2m_client::Client>>,
    /// All configured KpsaIDs bound to each entity, and every configured KpsaID (canonical).
    bound_kpsa: std::collections::HashMap<EntityId, Vec<String>>,
    configured_kpsa: std::collections::HashSet<String>,
    /// `[tls] crl`, opened once: the TLS and DTLS listeners, ESCertKE and every outgoing client
    /// check certificates against it.
    pub(crate) revocation: Option<Arc<m2m_security::revocation::RevocationList>>,
    /// Remote Kpsa rotation: the rotation key and the rotated KpsaIDs (`[security] rotation_key`).
    pub(crate) rotation: Option<Arc<crate::credential_rotation::Rotation>>,
    /// This CSE's descendantCSEs on their way to its registrar (`registration::publish_descendants`).
    pub(crate) publishing: crate::descendants::Publishing,
    /// Which registree lists each descendant CSE (routing down, TS-0001 clause 10.2.2.4).
    pub(crate) descendant_index: crate::descendants::Index,
    /// Dynamic authorization: the servers of `[dynamic_authorization]` and their decisions.
    pub(crate) dynamic_authorization: Option<crate::dynamic_authorization::Consultations>,
    public_url: RwLock<String>,
    /// Group authentication, entity C: the current Ksx (when agents are configured).
    pub(crate) group_keys: Option<Arc<crate::group_authentication::GroupKeys>>,
    /// The MAF of `[maf]` (MAF-based SAE and the MAF ESPrim Framework), one cache for both.
    pub(crate) maf: Option<Arc<crate::maf_keys::MafKeys>>,
    /// The BSF this CSE is a NAF of (`[gba]`), for GBA-based SAE.
    pub(crate) gba: Option<Arc<m2m_keyservices::bsf::NafKeys>>,
    /// The MEF this CSE is an enrolment target of (`[mef]`), for remote-provisioned Kpsa.
    pub(crate) mef: Option<Arc<m2m_keyservices::mef::ProvisionedKpsaKeys>>,
    /// Group authentication, entity B: live inner associations and the current round.
    pub(crate) group_agent: crate::group_authentication::Agent,
    /// ESPrim Target: the pairwiseESPrimKeys and the rands, sessions and replay cache.
    pub(crate) esprim: Option<crate::esprim::EsprimTarget>,
    /// Group credentials end to end (IN-CSE): the members' own E2E keys, when configured.
    pub(crate) group_credentials: Option<crate::group_credentials::GroupCredentials>,
    /// Which AE-IDs and CSE-IDs a PSK row binds to its credential (the KpsaID): nobody else may
    /// register them.
    bound_credentials: std::collections::HashMap<EntityId, String>,
    /// `[tls] accepted_identities`, parsed.
    accepted_identities: Vec<EntityId>,
    /// Clients that check a peer's certificate names an entity (AEs' https points of access).
    entity_clients: std::sync::Mutex<std::collections::HashMap<EntityId, m2m_client::Client>>,
    /// The Secure Storage service (`[secure_storage]`).
    pub(crate) secure_storage: Option<crate::secure_storage::SecureStorage>,
    /// The Receiver, registered by the engine once it exists (weak: the engine owns this).
    receiver: OnceLock<Weak<dyn Receiver>>,
}

impl Context {
    pub(crate) fn open(cfg: Config, environments: &SharedEnvironments) -> anyhow::Result<Self> {
        let id = cfg.identity()?;
        crate::roles::check_config(&cfg, &id.home)?;
        for path in &cfg.flex_container.specializations {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("flex_container.specializations: {}: {e}", path.display())
            })?;
            m2m_core::specialization::install(&text).map_err(|e| {
                anyhow::anyhow!("flex_container.specializations: {}: {e}", path.display())
            })?;
        }
        let store = Store::open_at_rest(
            &cfg.storage.path,
            cfg.storage.sync,
            store_keys(&cfg.storage, environments)?,
        )?;
        // One list for the listeners and the clients: one file watch, one parsed copy.
        let revocation = match &cfg.tls {
            Some(t) => t.revocation_list()?,
            None => None,
        };
        let certificate = certificate_context(&cfg, false, revocation.clone())?;
        let dtls_certificate = certificate_context(&cfg, true, revocation.clone())?;
        let maf = crate::maf_keys::MafKeys::from_config(&cfg, certificate.as_ref())?.map(Arc::new);
        let gba = crate::provisioned_keys::from_config(&cfg, certificate.as_ref())?.map(Arc::new);
        let mef =
            crate::provisioned_keys::provisioned_kpsa(&cfg, certificate.as_ref())?.map(Arc::new);
        let (client, registrar_client) = outgoing_clients(
            &cfg,
            certificate.clone(),
            dtls_certificate.clone(),
            environments,
        )?;
        let esprim = crate::esprim::EsprimTarget::from_config(
            &cfg,
            environments,
            maf.as_ref(),
            revocation.clone(),
        )?;
        let rotation =
            crate::credential_rotation::Rotation::from_config(&cfg, &id.home, environments)?;
        let (bound_kpsa, configured_kpsa) = all_kpsa_rows(&id.home, environments);
        let dynamic_authorization = crate::dynamic_authorization::Consultations::from_config(
            &cfg,
            &client,
            certificate.as_ref(),
        )?;
        let group_credentials = crate::group_credentials::GroupCredentials::from_config(
            &cfg.group_credentials,
            environments,
        )?;
        let group_keys = crate::group_authentication::GroupKeys::from_config(
            &cfg.group_authentication,
            &id.home,
            |kid| environments.iter().find_map(|se| se.psk(kid)),
        )?
        .map(Arc::new);
        let bound = bound_rows(&id, environments)?;
        let entity_psk = bound.iter().cloned().collect();
        let bound_credentials = bound
            .iter()
            .map(|(e, k)| (e.clone(), CredentialId::for_kpsa(k).to_string()))
            .collect();
        let accepted_identities = cfg
            .tls
            .iter()
            .flat_map(|t| &t.accepted_identities)
            .map(|a| {
                EntityId::parse(a, &id.home)
                    .map_err(|e| anyhow::anyhow!("tls.accepted_identities: '{a}': {}", e.dbg))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let public_url = cfg
            .http
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", cfg.http.listen));
        let secure_storage = match &cfg.secure_storage {
            Some(s) => Some(crate::secure_storage::SecureStorage::open(
                &cfg.storage.path,
                &s.secret,
                environments,
                crate::secure_storage::Limits {
                    object_bytes: s.max_object_bytes,
                    objects_per_owner: s.max_objects_per_owner,
                    total_bytes: s.max_total_bytes,
                },
            )?),
            None => None,
        };
        Ok(Self {
            id,
            cfg,
            store,
            client,
            registrar_client,
            certificate,
            dtls_certificate,
            entity_psk,
            environments: environments.clone(),
            registree_clients: Default::default(),
            publishing: Default::default(),
            descendant_index: Default::default(),
            dynamic_authorization,
            rotation,
            revocation,
            bound_kpsa,
            configured_kpsa,
            public_url: RwLock::new(public_url),
            group_keys,
            maf,
            gba,
            mef,
            group_agent: Default::default(),
            esprim,
            group_credentials,
            bound_credentials,
            accepted_identities,
            entity_clients: Default::default(),
            secure_storage,
            receiver: OnceLock::new(),
        })
    }

    /// The client for a next hop: the registrar's own for its URL; for a registree CSE reached over
    /// https, one that verifies the peer is that CSE (TS-0003 clause 10.1.1.7: its certificate's
    /// dNSName `<cse-id>.<sp>`), since its poa is an address any certificate of the same root could
    /// answer on; the general one otherwise.
    pub(crate) fn client_for(
        &self,
        url: &str,
        registree: Option<&CseId>,
    ) -> M2mResult<m2m_client::Client> {
        // A registree's address is its own word: whatever URL it gave (the registrar's one, or
        // this CSE's own plain listener, included), the peer there must prove to be that
        // registree. An address where no peer proves anything is no route.
        if let Some(cse) = registree {
            let tls = url.starts_with("https://") || url.starts_with("coaps://");
            return match &self.certificate {
                Some(context) if tls => self.registree_client(cse, context),
                _ => Err(M2mError::new(
                    m2m_core::ResponseStatusCode::TargetNotReachable,
                    format!(
                        "CSE {cse} is reached only over TLS or DTLS that proves it is that CSE"
                    ),
                )),
            };
        }
        if let Some(r) = &self.cfg.registrar {
            if r.url == url {
                return Ok(self.registrar_client.clone());
            }
        }
        Ok(self.client.clone())
    }

    fn registree_client(&self, cse: &CseId, context: &SslContext) -> M2mResult<m2m_client::Client> {
        let mut clients = self
            .registree_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(cse.bare()) {
            return Ok(client.clone());
        }
        let server_name = self.id.naming.dns_name(cse).map_err(|e| {
            M2mError::new(
                m2m_core::ResponseStatusCode::TargetNotReachable,
                format!("cannot verify registree {cse}: {e}"),
            )
        })?;
        let mut client = self.client.clone().with_tls(m2m_client::TlsSettings {
            context: context.clone(),
            peer: m2m_client::PeerPolicy::Named(server_name.clone()),
        });
        // Over coaps the same name check: its poa is an address it gave itself.
        if let Some(dtls) = &self.dtls_certificate {
            client = client.with_dtls(m2m_client::TlsSettings {
                context: dtls.clone(),
                peer: m2m_client::PeerPolicy::Named(server_name),
            });
        }
        clients.insert(cse.bare().to_owned(), client.clone());
        Ok(client)
    }

    pub fn identity(&self) -> &CseIdentity {
        &self.id
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The URL peers reach this CSE at (its pointOfAccess).
    pub fn public_url(&self) -> String {
        self.public_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    pub(crate) fn now_ts(&self) -> String {
        m2m_core::time::format(self.now())
    }

    /// The association a client certificate makes (TS-0003 clause 8.2.2.2): the AE-ID or CSE-ID it
    /// names, with its Credential-ID (typeID 33 for an AE-ID, 32 for a CSE-ID, clause 12.3.2.1,
    /// valued with the name the certificate carries). FQDN certificates (MAF, MEF) name no AE or CSE.
    pub(crate) fn certificate_association(&self, der: &[u8]) -> Result<Association, String> {
        use m2m_security::certificates::{identity_of, CertIdentity};
        let cert = openssl::x509::X509::from_der(der).map_err(|e| e.to_string())?;
        let entity = match identity_of(&cert, &self.id.naming)? {
            CertIdentity::Entity(e) => e,
            CertIdentity::Fqdn(f) => {
                return Err(format!(
                    "the certificate of {f} names no AE-ID or CSE-ID of this service provider"
                ))
            }
        };
        let credential = identity_credential(&entity, &self.id.naming)?;
        Ok(Association {
            mode: SaeMode::Certificate,
            credential,
            entity: Some(entity),
        })
    }

    /// What a completed handshake makes on this CSE (TS-0003 clause 8.2.1): the PSK row's
    /// association, or the identity of a client certificate; never this CSE itself, and only the
    /// `[tls] accepted_identities` when configured. `Err` is the reason for the audit log.
    pub fn bind_association(
        &self,
        proof: m2m_security::tls::Authenticated,
    ) -> Result<Association, String> {
        use m2m_security::tls::Authenticated;
        let association = match proof {
            Authenticated::Psk(a) => a,
            Authenticated::Certificate { leaf_der } => self.certificate_association(&leaf_der)?,
        };
        if let Some(entity) = &association.entity {
            if entity.is_home_cse(&self.id.home) {
                return Err(format!(
                    "the peer presented a credential of this CSE itself ({})",
                    association.credential
                ));
            }
        }
        if let (SaeMode::ProvisionedKey, Some(rotation)) = (association.mode, &self.rotation) {
            rotation
                .used(association.credential.value())
                .map_err(|_| "the credential rotation cannot be recorded".to_owned())?;
        }
        if association.mode == SaeMode::Certificate && !self.accepted_identities.is_empty() {
            let entity = association.entity.as_ref();
            if !entity.is_some_and(|e| self.accepted_identities.contains(e)) {
                return Err(format!(
                    "certificate identity {} is not among the accepted peers",
                    entity.map(EntityId::to_string).unwrap_or_default()
                ));
            }
        }
        Ok(association)
    }

    /// Every KpsaID that authenticates as `entity`: the configured rows bound to it, and the
    /// credential it registered with (a row bound to no entity).
    pub(crate) fn kpsa_ids_of(&self, entity: &EntityId) -> Vec<String> {
        let mut ids = self.bound_kpsa.get(entity).cloned().unwrap_or_default();
        if let Some(stem) = entity.local_stem(&self.id.home) {
            if let Ok(Some(c)) = self.store.read(|r| r.credential_of(stem.as_str())) {
                if let Some(kpsa) = c.strip_prefix("12-") {
                    ids.push(kpsa.to_owned());
                }
            }
        }
        ids
    }

    /// Every KpsaID of the configured rows (FQDN part in lower case).
    pub(crate) fn configured_kpsa_ids(&self) -> &std::collections::HashSet<String> {
        &self.configured_kpsa
    }

    /// The credential (KpsaID) a PSK row binds `entity` to, if any.
    pub(crate) fn credential_bound_to(&self, entity: &EntityId) -> Option<&str> {
        self.bound_credentials.get(entity).map(String::as_str)
    }

    /// Whether `entity` is one of `[tls] accepted_identities`: a certificate names it, so its
    /// AE-ID is registered only over that certificate.
    pub(crate) fn is_certificate_identity(&self, entity: &EntityId) -> bool {
        self.accepted_identities.contains(entity)
    }

    /// The administrator and every entity a configured credential binds: no key service (MAF,
    /// BSF, MEF) may name them.
    pub(crate) fn reserved_entities(&self) -> std::collections::HashSet<EntityId> {
        self.bound_credentials
            .keys()
            .cloned()
            .chain(std::iter::once(self.id.admin.clone()))
            .collect()
    }

    /// A client whose https peers must present a certificate naming `entity` (an AE's point of
    /// access: its AE-ID certificate carries no host name the address could be checked against).
    pub(crate) fn client_for_entity(&self, entity: &EntityId) -> m2m_client::Client {
        let psk = self.entity_psk.get(entity);
        if self.certificate.is_none() && psk.is_none() {
            return self.client.clone();
        }
        let mut clients = self
            .entity_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(entity) {
            return c.clone();
        }
        let naming = self.id.naming.clone();
        let want = entity.clone();
        let check: m2m_transport::CertificateCheck =
            Arc::new(
                move |cert| match m2m_security::certificates::identity_of(cert, &naming)? {
                    m2m_security::certificates::CertIdentity::Entity(e) if e == want => Ok(()),
                    other => Err(format!("the server is {other}, not {want}")),
                },
            );
        let mut client = self.client.clone();
        if let Some(context) = &self.certificate {
            client = client.with_tls(m2m_client::TlsSettings {
                context: context.clone(),
                peer: m2m_client::PeerPolicy::Certificate(check.clone()),
            });
        }
        // Over coaps the entity's own PSK row when it has one (a constrained device often has
        // nothing else), else its certificate.
        let dtls = match (psk, &self.dtls_certificate) {
            (Some(kpsa_id), _) => match psk_dtls_context(kpsa_id, &self.environments) {
                Ok(context) => Some((context, m2m_client::PeerPolicy::PreSharedKey)),
                Err(e) => {
                    tracing::warn!(entity = %entity, "no DTLS-PSK context: {e}");
                    None
                }
            },
            (None, Some(context)) => {
                Some((context.clone(), m2m_client::PeerPolicy::Certificate(check)))
            }
            (None, None) => None,
        };
        if let Some((context, peer)) = dtls {
            client = client.with_dtls(m2m_client::TlsSettings { context, peer });
        }
        // A few hundred AEs at most talk https to one CSE; the map is bounded anyway.
        if clients.len() >= 4096 {
            clients.clear();
        }
        clients.insert(entity.clone(), client.clone());
        client
    }

    /// The resourceID of the CSEBase.
    pub(crate) fn base_ri(&self) -> &str {
        self.id.cse_id.bare()
    }

    /// SP-relative form of a local resourceID, as used in `sur` and routed addresses.
    pub(crate) fn sp_relative(&self, ri: &str) -> String {
        format!("{}/{}", self.id.cse_id, ri)
    }
    /// Sets the Originating Timestamp of a response this CSE gives (TS-0004 table 7.2.1.2-1):
    /// when it answered. Bindings call it for the requests they refuse before decoding them.
    pub(crate) fn stamp(&self, resp: &mut Response) {
        // A response forwarded from another CSE keeps the time that CSE answered.
        if resp.ot.is_none() {
            resp.ot = Some(m2m_core::time::format(self.now()));
        }
    }

    /// Registers the Receiver requests of the layers below the engine go to.
    pub(crate) fn register(&self, receiver: &Arc<dyn Receiver>) {
        let _ = self.receiver.set(Arc::downgrade(receiver));
    }

    /// Hands a request to the Receiver (TS-0004 clause 7.3), as if it had come in.
    pub(crate) fn handle(&self, req: Request, peer: Peer) -> BoxFuture<Response> {
        match self.receiver.get().and_then(Weak::upgrade) {
            Some(r) => r.receive(req, peer),
            None => {
                let gone = M2mError::internal("the CSE is shutting down");
                let rqi = req.rqi.clone();
                Box::pin(async move { Response::error(&gone, rqi) })
            }
        }
    }

    /// Sets the pointOfAccess (the engine writes it into the CSEBase).
    pub(crate) fn set_public_url(&self, url: String) {
        *self.public_url.write().unwrap_or_else(|e| e.into_inner()) = url;
    }
}

/// A random resource ID part (lower-case letters and digits).
pub(crate) fn random_suffix(n: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The clients this CSE sends with. Over `https` a CSE presents its certificate (Mcc, TS-0003
/// clause 8.2.2.2) and verifies its peer against the same root of trust; the registrar is also
/// checked by name (`registrar.server_name`, sent as SNI).
fn outgoing_clients(
    cfg: &Config,
    certificate: Option<SslContext>,
    dtls_certificate: Option<SslContext>,
    environments: &SharedEnvironments,
) -> anyhow::Result<(m2m_client::Client, m2m_client::Client)> {
    let mut base = m2m_client::Client::new().with_timeout(std::time::Duration::from_millis(
        cfg.limits.outgoing_timeout_ms,
    ));
    if let Some(context) = &dtls_certificate {
        // A coaps notification URL: the certificate must carry the URL's host, as over https.
        base = base.with_dtls(m2m_client::TlsSettings {
            context: context.clone(),
            peer: m2m_client::PeerPolicy::UrlHost,
        });
    }
    let (general, registrar) = certificate_clients(cfg, certificate, dtls_certificate, base)?;
    match cfg.registrar.as_ref().and_then(|r| r.psk_identity.as_ref()) {
        Some(identity) => Ok((general, registrar_psk_client(cfg, environments, identity)?)),
        None => Ok((general, registrar)),
    }
}

/// The registrar's client over TLS-PSK (the outer association of group authentication, seeds/001
/// clause 8.2.1): the key is this CSE's own PSK for `identity` (Kpsami), asked of the secure
/// environments at each handshake.
fn registrar_psk_client(
    cfg: &Config,
    environments: &SharedEnvironments,
    identity: &str,
) -> anyhow::Result<m2m_client::Client> {
    if !m2m_security::secure_environment::holds_psk(environments, identity) {
        anyhow::bail!("registrar.psk_identity '{identity}' has no PSK row in [security]");
    }
    let context = m2m_security::tls::client_context(&psk_client_config(environments, identity))
        .map_err(|e| anyhow::anyhow!("registrar TLS-PSK: {e}"))?;
    Ok(m2m_client::Client::new()
        .with_timeout(std::time::Duration::from_millis(
            cfg.limits.outgoing_timeout_ms,
        ))
        .with_tls(m2m_client::TlsSettings {
            context,
            // The registrar proves itself by knowing the key.
            peer: m2m_client::PeerPolicy::PreSharedKey,
        }))
}

/// This CSE's certificate as a client (Mcc, and towards the MAF), built once, for TLS or for DTLS;
/// `None` without a [tls] certificate and trusted_ca.
fn certificate_context(
    cfg: &Config,
    dtls: bool,
    revocation: Option<Arc<m2m_security::revocation::RevocationList>>,
) -> anyhow::Result<Option<SslContext>> {
    let Some(tls) = cfg
        .tls
        .as_ref()
        .filter(|t| t.certificate.is_some() && t.trusted_ca.is_some())
    else {
        return Ok(None);
    };
    let config = m2m_security::tls::ClientTlsConfig {
        cipher_suites: m2m_security::tls::CERTIFICATE_SUITES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        tls13: tls.tls13 && !dtls,
        psk: None,
        psk_source: None,
        certificate_chain: tls.certificate.clone(),
        private_key: tls.private_key.clone(),
        trusted_ca: tls.trusted_ca.clone(),
        // The peers this CSE connects to (registrar, registrees, DAS, MAF, AEs' https points of
        // access) are checked against the same lists as the ones connecting to it.
        revocation,
    };
    let context = if dtls {
        m2m_security::tls::dtls_client_context(&config)
            .map_err(|e| anyhow::anyhow!("outgoing DTLS: {e}"))?
    } else {
        m2m_security::tls::client_context(&config)
            .map_err(|e| anyhow::anyhow!("outgoing TLS: {e}"))?
    };
    Ok(Some(context))
}

/// The general and registrar clients presenting this CSE's certificate (or plain ones). The
/// general client checks each URL's host; the registrar client checks the registrar's name in its
/// certificate, `registrar.server_name` or else the public domain name of its CSE-ID, whatever
/// address `registrar.url` gives.
fn certificate_clients(
    cfg: &Config,
    certificate: Option<SslContext>,
    dtls_certificate: Option<SslContext>,
    base: m2m_client::Client,
) -> anyhow::Result<(m2m_client::Client, m2m_client::Client)> {
    let Some(context) = certificate else {
        return Ok((base.clone(), base));
    };
    let general = base.clone().with_tls(m2m_client::TlsSettings {
        context: context.clone(),
        peer: m2m_client::PeerPolicy::UrlHost,
    });
    let registrar_name = match &cfg.registrar {
        None => None,
        Some(r) => Some(match &r.server_name {
            Some(name) => name.clone(),
            None => {
                let cse = CseId::parse(&r.cse_id)
                    .map_err(|e| anyhow::anyhow!("registrar.cse_id: {}", e.dbg))?;
                cfg.identity()?.naming.dns_name(&cse).map_err(|e| {
                    anyhow::anyhow!("registrar: no name to check its certificate against: {e}; set registrar.server_name")
                })?
            }
        }),
    };
    let peer = match registrar_name {
        Some(name) => m2m_client::PeerPolicy::Named(name),
        None => m2m_client::PeerPolicy::UrlHost,
    };
    let mut registrar = base.with_tls(m2m_client::TlsSettings {
        context,
        peer: peer.clone(),
    });
    // A coaps registrar URL: the same name check.
    if let Some(dtls) = dtls_certificate {
        registrar = registrar.with_dtls(m2m_client::TlsSettings {
            context: dtls,
            peer,
        });
    }
    Ok((general, registrar))
}

/// The Credential-ID that names `entity` by its identity (TS-0003 table 12.3.2.1-1): typeID 32
/// and the DNS name of a CSE-ID certificate, typeID 33 and the FQDN form of an AE-ID. Certificate
/// associations use it, and so do MAF-key associations whose source registered at the MAF with a
/// certificate (no KmID to form it from).
pub(crate) fn identity_credential(
    entity: &EntityId,
    naming: &m2m_security::certificates::CseNaming,
) -> Result<CredentialId, String> {
    let (type_id, value) = match entity {
        EntityId::Cse { cse, .. } => (32, naming.dns_name(cse)?),
        ae => (33, fqdn_form(ae)),
    };
    CredentialId::new(type_id, &value)
}

/// The FQDN form of an AE's absolute AE-ID (`Cphone.id-in.m2m.example.com`, `Sdoorlock.m2m.example.com`),
/// the value of its certificate Credential-ID.
fn fqdn_form(ae: &EntityId) -> String {
    let mut segments = ae.segments();
    segments.reverse();
    segments.join(".")
}

/// Every configured KpsaID by the entity its row binds, and all of them (canonical forms).
type KpsaRows = (
    std::collections::HashMap<EntityId, Vec<String>>,
    std::collections::HashSet<String>,
);

/// The keys of `[storage] encryption_secret` and `previous_encryption_secret`, derived by the
/// first secure environment holding each secret (inside the token for a PKCS#11 one).
pub(crate) fn store_keys(
    storage: &crate::config::StorageSection,
    environments: &[Box<dyn SecureEnvironment>],
) -> anyhow::Result<crate::store::AtRest> {
    use crate::store::encryption::{StoreKey, KEY_INFO};
    let derive = |what: &str, name: &Option<String>| -> anyhow::Result<Option<StoreKey>> {
        let Some(name) = name else { return Ok(None) };
        let derived = environments
            .iter()
            .find_map(|se| se.derive_key(name, KEY_INFO))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "storage.{what}: no secure environment holds the secret {name:?} (make it \
                     with `m2m keys token ... generate-secret --name {name}` or \
                     `m2m keys add-secret --generate --name {name}`)"
                )
            })?;
        StoreKey::new(&derived)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("storage.{what}: {e}"))
    };
    Ok(crate::store::AtRest {
        key: derive("encryption_secret", &storage.encryption_secret)?,
        previous: derive(
            "previous_encryption_secret",
            &storage.previous_encryption_secret,
        )?,
    })
}

fn all_kpsa_rows(home: &m2m_core::Home, environments: &[Box<dyn SecureEnvironment>]) -> KpsaRows {
    let mut bound: std::collections::HashMap<EntityId, Vec<String>> = Default::default();
    let mut all = std::collections::HashSet::new();
    for se in environments {
        for (entity, kpsa_id) in se.psk_entries() {
            let id = kpsa_id.canonical();
            all.insert(id.clone());
            if let Some(e) = entity.and_then(|e| EntityId::parse(&e, home).ok()) {
                bound.entry(e).or_default().push(id);
            }
        }
    }
    (bound, all)
}

/// A DTLS-PSK client context with one row's KpsaID and key.
fn psk_dtls_context(
    kpsa_id: &KpsaId,
    environments: &SharedEnvironments,
) -> Result<SslContext, String> {
    m2m_security::tls::dtls_client_context(&psk_client_config(environments, &kpsa_id.to_string()))
}

/// A client profile of the TS-0003 PSK suites presenting `identity`, its key asked of the
/// secure environments at each handshake (TLS to the registrar, DTLS to a `coaps` poa).
fn psk_client_config(
    environments: &SharedEnvironments,
    identity: &str,
) -> m2m_security::tls::ClientTlsConfig {
    m2m_security::tls::ClientTlsConfig {
        cipher_suites: m2m_security::tls::PSK_SUITES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        psk_source: Some(m2m_security::secure_environment::psk_source(
            environments,
            identity,
        )),
        ..Default::default()
    }
}

/// Which entities the PSK rows of the secure environments bind, and with which KpsaID (the first
/// row wins). A row whose entity is no AE-ID or CSE-ID, or names this CSE itself, is a
/// configuration error.
fn bound_rows(
    id: &crate::config::CseIdentity,
    environments: &[Box<dyn SecureEnvironment>],
) -> anyhow::Result<Vec<(EntityId, KpsaId)>> {
    let mut bound: Vec<(EntityId, KpsaId)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for se in environments {
        for (entity, kpsa_id) in se.psk_entries() {
            let Some(entity) = entity else { continue };
            let parsed = EntityId::parse(&entity, &id.home).map_err(|e| {
                anyhow::anyhow!(
                    "{}: the PSK row of {kpsa_id} names '{entity}': {}",
                    se.name(),
                    e.dbg
                )
            })?;
            if parsed.is_home_cse(&id.home) {
                anyhow::bail!(
                    "{}: the PSK row of {kpsa_id} is bound to this CSE itself",
                    se.name()
                );
            }
            if seen.insert(parsed.clone()) {
                bound.push((parsed, kpsa_id));
            }
        }
    }
    Ok(bound)
}
