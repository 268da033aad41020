//! The oneM2M CSE (TS-0001): resource tree in an embedded store, the HTTP binding, registration of
//! AEs and CSEs, discovery, subscriptions and notifications, groups, and retargeting between CSEs.
//!
//! A request travels: binding (`http_server`, `coap_server`, `mqtt_binding`) → [`Cse::handle`] → target resolution (`resolve`) →
//! local operation (`dispatcher`, `discovery`, `group`) or forwarding (`routing`) → store → response.
//!
//! Layers, bottom to top (docs/ARCHITECTURE.md; `tests/layers.rs` fails on an import upward):
//! foundation (`config`, `store`), security gate (`context` and the TS-0003 modules),
//! notification (`notification`: delivery; `polling_queue`, `outbound`), resource types (`cse`,
//! `dispatcher`, `resources`, `subscription_events`, ...), binding entry (`http_server`,
//! `coap_server`, `mqtt_binding`, `websocket_server`, `upper_tester`).
//!
//! # Clause index
//!
//! | clause | module |
//! |---|---|
//! | TS-0004 7.3: the Receiver's generic procedure | `cse` (over `context::Context`) |
//! | TS-0001 7.2, TS-0004 7.3.2: target resolution | `resolve` |
//! | TS-0001 9.6.1.3: expirationTime | `expiry` |
//! | TS-0001 10.2.2.4: CSE registration | `registration` |
//! | TS-0001 9.6.4 (descendantCSEs), 10.2.2.4: which CSEs a registree speaks for | `descendants`, `registration` |
//! | TS-0001 10.2.2.2, TS-0004 7.4.5.2.1: S-stem AE-IDs unique in the SP (`<AEAnnc>`) | `resources::ae`, `resources::ae_annc` |
//! | TS-0001 10.2.6, TS-0004 7.3.3.17: discovery | `discovery`, `search_threads`, `store::scan` |
//! | TS-0004 7.3.3.18, 7.3.3.19: semantic discovery and semantic query (SPARQL) | `semantic_query`, `sparql` |
//! | TS-0001 9.6.13, TS-0004 7.4.13: `<group>` | `group`, `resources::group` |
//! | TS-0001 9.6.44, 10.2.7.13: multicast fan-out | `multicast` |
//! | TS-0004 7.3.2.1: checks of a request primitive | `validity`, `impersonation` |
//! | TS-0004 7.3.2.6: retargeting | `routing` |
//! | TS-0004 7.3.3: CREATE/RETRIEVE/UPDATE/DELETE/NOTIFY | `dispatcher` |
//! | TS-0004 7.4: each resource type | `resources::*` (one module per type) |
//! | TS-0004 7.5.1.2.2 to 7.5.1.2.4: which subscriptions an event triggers, their policies | `subscription_events` |
//! | TS-0004 7.5.1.2.x, 7.3.3.9.1: delivery of a Notify (URL, AE, pollingChannel, by ID) | `notification`, `polling_queue` |
//! | TS-0003 7.1, TS-0004 7.3.3.15: access decision | `access` |
//! | TS-0001 9.6.1.3, 9.6.2.1: acpi, macp, daci and acor groups pinned when written | `access_references` |
//! | TS-0003 7.2.1: impersonation check | `impersonation` |
//! | TS-0003 7.3.2.2: dynamic authorization | `dynamic_authorization` |
//! | TS-0003 7.4.3: role-based access control | `roles` |
//! | TS-0003 8.2: security associations | `association` |
//! | TS-0003 8.2.2.3: MAF-based keys | `maf_keys` |
//! | TS-0003 8.3: MEF and GBA provisioned keys | `provisioned_keys` |
//! | TS-0003 8.4, TS-0004 7.6.2: ESPrim | `esprim` |
//! | TS-0003 8.7: ESCertKE | `escertke` |
//! | TS-0008 (CoAP), TS-0009 (HTTP), TS-0010 (MQTT), TS-0020 (WebSocket) | `coap_server`, `http_server`, `mqtt_binding` and `mqtt_broker`, `websocket_server` |
//! | TS-0019: Upper Tester | `upper_tester` |
//! | seeds/001 5.1: group credentials | `group_credentials` |
//! | seeds/001 8.2.1: group authentication | `group_authentication` |
//! | seeds/001 Annex A, seeds/002 6.3.5: the store encrypted at rest | `store::encryption` |
//! | seeds/002 6.3.5.2: secure storage | `secure_storage` |
//! | seeds/002 security administration: Kpsa rotation | `credential_rotation` |

#![forbid(unsafe_code)]

mod access;
mod access_references;
pub mod association;
pub(crate) mod coap_server;
pub mod config;
pub mod context;
mod credential_rotation;
pub mod cse;
mod descendants;
mod discovery;
mod dispatcher;
mod dynamic_authorization;
pub(crate) mod escertke;
pub(crate) mod esprim;
pub(crate) mod expiry;
mod group;
pub(crate) mod group_authentication;
pub(crate) mod group_credentials;
pub(crate) mod http_server;
mod impersonation;
mod maf_keys;
pub(crate) mod mqtt_binding;
pub mod mqtt_broker;
pub(crate) mod multicast;
mod notification;
mod outbound;
mod overrides;
mod polling_queue;
pub mod prefill;
mod provisioned_keys;
pub(crate) mod registration;
mod resolve;
mod resources;
mod roles;
mod routing;
pub(crate) mod search_threads;
pub(crate) mod secure_storage;
pub(crate) mod semantic_query;
pub(crate) mod sparql;
pub(crate) mod store;
mod subscription_events;
pub(crate) mod upper_tester;
mod validity;
pub(crate) mod websocket_server;

pub use config::{Config, Role};
pub use cse::{Cse, Peer};

use m2m_security::secure_environment::SharedEnvironments;
use std::sync::Arc;

/// A running CSE: its listeners are bound and its background tasks started. Dropping it stops
/// the listeners at once; [`Running::shutdown`] lets open requests finish first.
pub struct Running {
    pub cse: Arc<Cse>,
    /// The plain-HTTP listener, if configured.
    pub local_addr: Option<std::net::SocketAddr>,
    /// The TLS listener, if configured.
    pub tls_addr: Option<std::net::SocketAddr>,
    /// The DTLS listener (CoAP), if configured.
    pub dtls_addr: Option<std::net::SocketAddr>,
    /// The plain CoAP listener, if configured.
    pub coap_addr: Option<std::net::SocketAddr>,
    /// The WebSocket listener over TLS (`tls.wss_listen`), if configured.
    pub wss_addr: Option<std::net::SocketAddr>,
    servers: Vec<m2m_transport::Server>,
}

impl Running {
    /// Stops accepting, lets open connections finish within `limits.shutdown_grace_ms`, then ends them.
    pub async fn shutdown(self) {
        let grace = std::time::Duration::from_millis(self.cse.config().limits.shutdown_grace_ms);
        for server in self.servers {
            server.shutdown(grace).await;
        }
    }
}

/// The psk lookup table: B-TIDs of the BSF (GBA), the rows of every secure environment
/// configured, first match wins, then the keys the MAF distributes. KpsaIDs are compared as [`KpsaId`]s everywhere (the FQDN without
/// case), so a group member's KsxId in other letter case is still the group member's.
struct SecureEnvironmentPsk {
    environments: SharedEnvironments,
    home: m2m_core::Home,
    /// MAF-distributed keys, asked for when no environment knows the identity.
    maf: Option<Arc<maf_keys::MafKeys>>,
    /// GBA NAF keys: a B-TID of the configured BSF opens only with its Ks_NAF.
    gba: Option<Arc<m2m_keyservices::bsf::NafKeys>>,
    /// Kpsa the MEF provisioned: a KeID of the configured MEF opens only with its Kpsa.
    mef: Option<Arc<m2m_keyservices::mef::ProvisionedKpsaKeys>>,
    /// Entities no key service may name: the administrator and every entity a configured PSK
    /// row binds.
    reserved: std::collections::HashSet<m2m_core::EntityId>,
    /// Group authentication (entity C): a member's KsxId opens only with its current Ksx.
    group: Option<Arc<group_authentication::GroupKeys>>,
    /// Rotated KpsaIDs first: a retired one opens nothing, whatever row still holds it.
    rotation: Option<Arc<credential_rotation::Rotation>>,
    /// This CSE's own identity at its MQTT server (`[mqtt] psk_identity`): its row is the CSE's
    /// key towards the server, which opens no association with the CSE.
    own_mqtt_identity: Option<m2m_security::credentials::KpsaId>,
}

impl m2m_security::tls::PskLookup for SecureEnvironmentPsk {
    fn lookup(
        &self,
        psk_identity: &str,
        handshake: &m2m_security::tls::PskHandshake,
    ) -> Option<m2m_security::tls::PskKey> {
        use m2m_security::association::{Association, SaeMode};
        use m2m_security::credentials::{CredentialId, KpsaId};
        if self.own_mqtt_identity.is_some()
            && KpsaId::parse(psk_identity).ok() == self.own_mqtt_identity
        {
            return None;
        }
        if let Some(rotation) = &self.rotation {
            match rotation.lookup(psk_identity) {
                credential_rotation::Lookup::Rotated(key) => return Some(key),
                credential_rotation::Lookup::Retired => return None,
                credential_rotation::Lookup::Unknown => {}
            }
        }
        if let Some(gba) = self.gba.as_ref().filter(|g| g.governs(psk_identity)) {
            return self.named_elsewhere(psk_identity, gba.lookup(psk_identity, handshake));
        }
        if let Some(mef) = self.mef.as_ref().filter(|m| m.governs(psk_identity)) {
            return self.named_elsewhere(psk_identity, mef.lookup(psk_identity, handshake));
        }
        if let (Some(group), Ok(id)) = (self.group.as_ref(), KpsaId::parse(psk_identity)) {
            if group.governs(&id) {
                return group.psk(&id);
            }
        }
        match self.environments.iter().find_map(|se| se.psk(psk_identity)) {
            Some(entry) => {
                let entity = match entry.entity_id.as_deref() {
                    None => None,
                    // Rows were checked at start; one that no longer parses opens nothing.
                    Some(e) => Some(m2m_core::EntityId::parse(e, &self.home).ok()?),
                };
                Some(m2m_security::tls::PskKey {
                    key: zeroize::Zeroizing::new(entry.key.expose().to_vec()),
                    association: Association {
                        mode: SaeMode::ProvisionedKey,
                        credential: CredentialId::for_kpsa(&entry.kpsa_id),
                        entity,
                    },
                })
            }
            None => {
                let key = self.maf.as_ref()?.lookup(psk_identity, handshake);
                self.named_elsewhere(psk_identity, key)
            }
        }
    }
}

impl SecureEnvironmentPsk {
    /// A key another function names the entity of (the BSF's subscriber record, the MEF's
    /// enrolee, the MAF's source): never the administrator, nor an entity a configured PSK row
    /// binds. Those associations are fully authenticated as their entity, so a key service of
    /// another trust domain must not be able to hand them out.
    fn named_elsewhere(
        &self,
        psk_identity: &str,
        key: Option<m2m_security::tls::PskKey>,
    ) -> Option<m2m_security::tls::PskKey> {
        let key = key?;
        match &key.association.entity {
            Some(e) if self.reserved.contains(e) => {
                tracing::warn!(target: "audit", psk_identity, entity = %e, "key refused: a key service named the administrator or an entity a configured credential binds");
                None
            }
            _ => Some(key),
        }
    }
}

/// The TLS listener's psk lookup table: the secure environments (opened once, at start) with
/// the CSE's group keys and MAF; `None` when nothing could answer a psk_identity.
fn psk_table(
    environments: SharedEnvironments,
    cse: &Cse,
) -> Option<Arc<dyn m2m_security::tls::PskLookup>> {
    if environments.is_empty()
        && cse.maf.is_none()
        && cse.gba.is_none()
        && cse.mef.is_none()
        && cse.rotation.is_none()
    {
        return None;
    }
    Some(Arc::new(SecureEnvironmentPsk {
        environments,
        home: cse.identity().home.clone(),
        maf: cse.maf.clone(),
        gba: cse.gba.clone(),
        mef: cse.mef.clone(),
        reserved: cse.reserved_entities(),
        group: cse.group_keys.clone(),
        rotation: cse.rotation.clone(),
        own_mqtt_identity: cse
            .config()
            .mqtt
            .as_ref()
            .and_then(|m| m2m_security::credentials::KpsaId::parse(&m.psk_identity).ok()),
    }))
}

/// Opens the secure environments of the configuration: the keystore, and the rows given inline.
pub(crate) fn secure_environments(
    cfg: &Config,
) -> anyhow::Result<Vec<Box<dyn m2m_security::secure_environment::SecureEnvironment>>> {
    use m2m_security::credentials::{KpsaId, PskEntry, Secret};
    use m2m_security::secure_environment::{
        open_configured_keystore, PlainPskTable, SecureEnvironment,
    };
    let sec = &cfg.security;
    let mut environments: Vec<Box<dyn SecureEnvironment>> = Vec::new();
    if let Some(p) = &sec.pkcs11 {
        let token = m2m_security::secure_environment::pkcs11::Pkcs11Token::open(&p.token_config())
            .map_err(|e| anyhow::anyhow!("security.pkcs11: {e}"))?;
        if let Some(required) = sec.required_level.filter(|r| token.security_level() < *r) {
            anyhow::bail!(
                "security.required_level is {required}: the token {} is at level {}",
                p.token,
                token.security_level()
            );
        }
        tracing::info!(token = %p.token, level = %token.security_level(), "secure environment: PKCS#11 token");
        environments.push(Box::new(token));
    }
    let keystore = open_configured_keystore(
        sec.keystore.as_deref(),
        sec.key_file.as_deref(),
        sec.passphrase_env.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("security: {e}"))?;
    if let Some(ks) = keystore {
        environments.push(Box::new(ks));
    }
    if !sec.psk.is_empty() {
        let mut rows = Vec::with_capacity(sec.psk.len());
        for (i, row) in sec.psk.iter().enumerate() {
            let kpsa_id = KpsaId::parse(&row.kpsa_id)
                .map_err(|e| anyhow::anyhow!("security.psk[{i}].kpsa_id: {e}"))?;
            let key = Secret::from_hex(&row.key)
                .map_err(|e| anyhow::anyhow!("security.psk[{i}].key: {e}"))?;
            rows.push(PskEntry {
                entity_id: row.entity.clone(),
                kpsa_id,
                key,
            });
        }
        environments.push(Box::new(
            PlainPskTable::new("configuration", rows)
                .map_err(|e| anyhow::anyhow!("security.psk: {e}"))?,
        ));
    }
    Ok(environments)
}

/// `m2m store encrypt`: the resource store of `cfg`, written in the clear, encrypted under the key
/// of `[storage] encryption_secret` (re-encrypted or decrypted as a start would, too). Refused
/// while a CSE has the storage directory open. What it did, for the operator.
pub fn encrypt_store(cfg: &Config) -> anyhow::Result<Option<&'static str>> {
    let environments: SharedEnvironments = secure_environments(cfg)?.into();
    let at_rest = context::store_keys(&cfg.storage, &environments)?;
    if at_rest.key.is_none() {
        anyhow::bail!("[storage] encryption_secret is not set: there is no key to encrypt under");
    }
    let dir = &cfg.storage.path;
    if !dir.join("resources.db").exists() {
        anyhow::bail!("{}: there is no resource store here", dir.display());
    }
    let _lock = store::lock_dir(dir)?;
    store::encryption::prepare(
        &dir.join("resources.db"),
        &store::encryption::Keys {
            current: at_rest.key.as_ref(),
            previous: at_rest.previous.as_ref(),
            adopt_plain: true,
        },
    )
}

/// `m2m store release-ae-id`: frees an AE-ID that stays with the credential it registered with
/// (`store::AeIdHolder`) once its `<AE>` is gone, for whoever the registration rules admit next:
/// the operator's step for a device replaced under the same AE-ID with a credential of its own
/// (the administrator's DELETE frees it while the `<AE>` exists). With the CSE stopped: its
/// storage directory is locked while it runs. `Ok(false)`: nothing held it.
pub fn release_ae_id(cfg: &Config, ae_id: &str) -> anyhow::Result<bool> {
    let identity = cfg.identity()?;
    let entity = m2m_core::EntityId::parse(ae_id, &identity.home)
        .map_err(|e| anyhow::anyhow!("{ae_id}: {}", e.dbg))?;
    let stem = entity
        .local_stem(&identity.home)
        .ok_or_else(|| anyhow::anyhow!("{ae_id} is no AE-ID registered at this CSE"))?
        .to_string();
    let dir = &cfg.storage.path;
    if !dir.join("resources.db").exists() {
        anyhow::bail!("{}: there is no resource store here", dir.display());
    }
    let environments: SharedEnvironments = secure_environments(cfg)?.into();
    let store = store::Store::open_at_rest(
        dir,
        cfg.storage.sync,
        context::store_keys(&cfg.storage, &environments)?,
    )?;
    if store
        .get(&stem)
        .map_err(|e| anyhow::anyhow!(e.dbg))?
        .is_some()
    {
        anyhow::bail!("{ae_id} is registered: the administrator's DELETE of its <AE> frees it");
    }
    let held = store
        .read(|r| r.holder_of(&stem))
        .map_err(|e| anyhow::anyhow!(e.dbg))?
        .is_some();
    if held {
        let s = stem.clone();
        store
            .write_blocking(move |w| w.release_ae_id(&s))
            .map_err(|e| anyhow::anyhow!(e.dbg))?;
        tracing::warn!(target: "audit", ae_id = %stem, "AE-ID released by the operator");
    }
    Ok(held)
}

/// Binds the listeners, starts the servers, the expiry sweeper and (for an MN) registration.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    if cfg.http.listen.is_empty() && cfg.tls.is_none() && cfg.coap.is_none() && cfg.mqtt.is_none() {
        anyhow::bail!("no listener configured: set http.listen, [tls], [coap] or [mqtt]");
    }
    let mut plain = None;
    if !cfg.http.listen.is_empty() {
        let listen = cfg.listen_addr()?;
        let loopback = listen.ip().is_loopback();
        if !loopback && !cfg.http.allow_insecure {
            anyhow::bail!(
                "refusing plain HTTP on {listen}: requests there have no security association; use [tls], \
                 listen on loopback, or set http.allow_insecure = true"
            );
        }
        // The test interface reconfigures the CSE: only where every caller is the admin already.
        if cfg.http.upper_tester
            && (!loopback || cfg.http.originators != association::PlainTrust::Trusted)
        {
            anyhow::bail!(
                "http.upper_tester needs the plain listener on loopback with originators = \"trusted\""
            );
        }
        if cfg.http.upper_tester {
            tracing::warn!(target: "audit", "the Upper Tester interface (POST {}) is on: for conformance testing only", upper_tester::PATH);
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        announce_plain("HTTP", listen, cfg.http.originators);
        plain = Some(listener);
    }
    let explicit_url = cfg.http.public_url.clone();
    // The keystore is opened (and its passphrase stretched) once: the CSE takes what it needs
    // from it, the TLS listener keeps it for the psk lookups.
    let environments: SharedEnvironments = secure_environments(&cfg)?.into();
    let cse = Cse::open(cfg, &environments)?;
    // Before any listener serves a request or this CSE publishes its list to its registrar.
    descendants::judge_stored(&cse)
        .await
        .map_err(|e| anyhow::anyhow!(e.dbg))?;
    access_references::pin_stored(&cse)
        .await
        .map_err(|e| anyhow::anyhow!(e.dbg))?;
    let limits = cse.config().transport_limits();
    let binder = Arc::new(http_server::CseBinder {
        cse: Arc::clone(&cse),
    });
    let mut servers = Vec::new();
    let mut local_addr = None;
    if let Some(tcp) = plain {
        let trust = cse.config().http.originators;
        let server = m2m_transport::Server::spawn(
            m2m_transport::Listener {
                name: "cse-http",
                tcp,
                security: m2m_transport::Security::Plain,
                limits: limits.clone(),
            },
            Arc::clone(&binder),
            connection_handler(&cse, trust),
        )?;
        local_addr = Some(server.local_addr);
        servers.push(server);
    }
    let mut tls_addr = None;
    let mut dtls_addr = None;
    let mut wss_addr = None;
    let mqtt = mqtt_binding::Binding::from_config(&cse, &environments)?;
    let psk = psk_table(environments, &cse);
    if let Some(tls) = &cse.config().tls {
        let psk = psk.clone();
        let tls_config = m2m_security::tls::ServerTlsConfig {
            cipher_suites: tls.cipher_suites.clone(),
            tls13: tls.tls13,
            certificate_chain: tls.certificate.clone(),
            private_key: tls.private_key.clone(),
            trusted_ca: tls.trusted_ca.clone(),
            psk,
            revocation: cse.revocation.clone(),
        };
        let context = m2m_security::tls::server_context(&tls_config)
            .map_err(|e| anyhow::anyhow!("[tls]: {e}"))?;
        let tls_limits = m2m_transport::Limits {
            handshake_timeout_ms: tls.handshake_timeout_ms,
            max_handshakes_per_source: tls.max_handshakes_per_source,
            ..limits.clone()
        };
        if let Some(listen) = &tls.dtls_listen {
            let context = m2m_security::tls::dtls_server_context(&tls_config)
                .map_err(|e| anyhow::anyhow!("[tls] (DTLS): {e}"))?;
            let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
                anyhow::anyhow!("tls.dtls_listen '{listen}' is not an address:port")
            })?;
            let udp = tokio::net::UdpSocket::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on udp {addr}: {e}"))?;
            // Its own thread: a DTLS handshake is a run of small datagrams, cheaper when none of
            // them crosses threads (docs/PERFORMANCE.md, CoAP over DTLS).
            let server = m2m_transport::Server::spawn_datagram_on_own_thread(
                m2m_transport::DatagramListener {
                    name: "cse-dtls",
                    udp,
                    security: m2m_transport::Security::Tls(context),
                    limits: tls_limits.clone(),
                },
                Arc::clone(&binder),
                session_handler(&cse, association::PlainTrust::Anonymous),
            )?;
            dtls_addr = Some(server.local_addr);
            servers.push(server);
        }
        if let Some(listen) = &tls.wss_listen {
            let addr: std::net::SocketAddr = listen
                .parse()
                .map_err(|_| anyhow::anyhow!("tls.wss_listen '{listen}' is not an address:port"))?;
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            let server = m2m_transport::Server::spawn(
                m2m_transport::Listener {
                    name: "cse-wss",
                    tcp,
                    security: m2m_transport::Security::Tls(context.clone()),
                    limits: tls_limits.clone(),
                },
                Arc::clone(&binder),
                websocket_handler(&cse),
            )?;
            wss_addr = Some(server.local_addr);
            servers.push(server);
        }
        let addr: std::net::SocketAddr = tls
            .listen
            .parse()
            .map_err(|_| anyhow::anyhow!("tls.listen '{}' is not an address:port", tls.listen))?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let server = m2m_transport::Server::spawn(
            m2m_transport::Listener {
                name: "cse-tls",
                tcp,
                security: m2m_transport::Security::Tls(context),
                limits: tls_limits,
            },
            Arc::clone(&binder),
            connection_handler(&cse, association::PlainTrust::Anonymous),
        )?;
        tls_addr = Some(server.local_addr);
        servers.push(server);
    }
    let mut coap_addr = None;
    if let Some(coap) = &cse.config().coap {
        let addr = coap.addr()?;
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on udp {addr}: {e}"))?;
        announce_plain("CoAP", addr, coap.originators);
        let server = m2m_transport::Server::spawn_datagram_on_own_thread(
            m2m_transport::DatagramListener {
                name: "cse-coap",
                udp,
                security: m2m_transport::Security::Plain,
                limits: limits.clone(),
            },
            Arc::clone(&binder),
            session_handler(&cse, coap.originators),
        )?;
        coap_addr = Some(server.local_addr);
        servers.push(server);
    }
    let mqtt_url = cse.config().mqtt.as_ref().map(|m| m.broker.clone());
    let url = explicit_url.unwrap_or_else(|| match (tls_addr, local_addr) {
        (Some(a), _) => format!("https://{a}"),
        (None, Some(a)) => format!("http://{a}"),
        (None, None) => match (dtls_addr, coap_addr) {
            (Some(a), _) => format!("coaps://{a}"),
            (None, Some(a)) => format!("coap://{a}"),
            (None, None) => mqtt_url.unwrap_or_default(),
        },
    });
    cse.set_public_url(url)
        .map_err(|e| anyhow::anyhow!(e.dbg))?;
    if let Some(mut binding) = mqtt {
        binding.psk = psk;
        if let Some(acl) = &binding.acl {
            acl.write(&cse)
                .map_err(|e| anyhow::anyhow!("mqtt.acl_file: {e}"))?;
            let _ = cse.mqtt_acl.set(Arc::clone(acl) as _);
        }
        let binding = Arc::new(binding);
        let _ = cse.mqtt.set(Arc::clone(&binding) as _);
        tokio::spawn(mqtt_binding::run(Arc::downgrade(&cse), binding));
    }
    tokio::spawn(expiry::run(Arc::clone(&cse)));
    tokio::spawn(registration::register_with_registrar(Arc::clone(&cse)));
    if let Some(m) = &cse.multicast_member {
        m.restore(&cse);
    }
    Ok(Running {
        cse,
        local_addr,
        tls_addr,
        dtls_addr,
        coap_addr,
        wss_addr,
        servers,
    })
}

/// What each session of a UDP listener runs: the CoAP binding, as the peer it is.
fn session_handler(
    cse: &Arc<Cse>,
    trust: association::PlainTrust,
) -> impl Fn(
    m2m_transport::Session<association::Association>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
       + Send
       + Sync
       + 'static {
    let cse = Arc::clone(cse);
    move |session| Box::pin(coap_server::serve_session(Arc::clone(&cse), session, trust))
}

/// What each connection of the WebSocket listener runs: the WebSocket binding (TS-0020).
fn websocket_handler(
    cse: &Arc<Cse>,
) -> impl Fn(
    m2m_transport::Connection<association::Association>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
       + Send
       + Sync
       + 'static {
    let cse = Arc::clone(cse);
    move |conn| Box::pin(websocket_server::serve_connection(Arc::clone(&cse), conn))
}

/// What each accepted connection of a listener runs: the HTTP binding, as the peer it is.
fn connection_handler(
    cse: &Arc<Cse>,
    trust: association::PlainTrust,
) -> impl Fn(
    m2m_transport::Connection<association::Association>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
       + Send
       + Sync
       + 'static {
    let cse = Arc::clone(cse);
    move |conn| Box::pin(http_server::serve_connection(Arc::clone(&cse), conn, trust))
}

/// Says loudly at start what a listener without security association does with a From.
fn announce_plain(binding: &str, listen: std::net::SocketAddr, trust: association::PlainTrust) {
    let table = binding.to_ascii_lowercase();
    match trust {
        association::PlainTrust::Trusted => tracing::warn!(
            target: "audit",
            address = %listen,
            "plain-{binding} listener with {table}.originators = \"trusted\": every From is believed as written, the admin \
             included, so every process that can reach {listen} is the admin; for development only (set \
             \"anonymous\", or remove {table}.listen, for anything else)"
        ),
        association::PlainTrust::Anonymous => tracing::warn!(
            target: "audit",
            address = %listen,
            "plain-{binding} listener without security associations: a From there is a claim only ({table}.originators = \
             \"anonymous\": it matches only \"all\" in access control, is never the creator nor the admin)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_security::credentials::{KpsaId, PskEntry, Secret};
    use m2m_security::secure_environment::{PlainPskTable, SecureEnvironment};
    use m2m_security::tls::PskLookup;

    /// A group member's long-term row opens nothing while group authentication governs its KsxId,
    /// in whatever letter case the psk lookup table would accept (issue 11, class 9).
    #[test]
    fn a_group_members_identity_in_any_case_never_falls_through_to_its_row() {
        let rows = vec![
            PskEntry {
                entity_id: Some("Smeter1".into()),
                kpsa_id: KpsaId::parse("meter1@in.example.com").unwrap(),
                key: Secret::from_slice(&[1u8; 16]),
            },
            PskEntry {
                entity_id: Some("Clock".into()),
                kpsa_id: KpsaId::parse("lock@in.example.com").unwrap(),
                key: Secret::from_slice(&[2u8; 16]),
            },
        ];
        let environments: Vec<Box<dyn SecureEnvironment>> =
            vec![Box::new(PlainPskTable::new("t", rows).unwrap())];
        let section = crate::config::GroupAuthenticationSection {
            key_lifetime_seconds: 60,
            agents: vec![crate::config::GroupAgentRow {
                agent: "/id-mn".into(),
                members: vec!["meter1@in.example.com".into()],
            }],
        };
        let home = m2m_core::Home::cse(
            m2m_core::SpId::parse("m2m.example.com").unwrap(),
            m2m_core::CseId::parse("/id-in").unwrap(),
        );
        let group = group_authentication::GroupKeys::from_config(&section, &home, |id| {
            environments.iter().find_map(|se| se.psk(id))
        })
        .unwrap()
        .map(Arc::new);
        let table = SecureEnvironmentPsk {
            environments: environments.into(),
            home,
            maf: None,
            gba: None,
            mef: None,
            reserved: Default::default(),
            group,
            rotation: None,
            own_mqtt_identity: None,
        };
        for id in [
            "meter1@in.example.com",
            "meter1@IN.EXAMPLE.COM",
            "meter1@In.Example.Com",
        ] {
            assert!(
                table
                    .lookup(id, &m2m_security::tls::PskHandshake::from_peer(None))
                    .is_none(),
                "{id} opened with the long-term key"
            );
        }
        // Control: another row opens, in any case of its FQDN.
        for id in ["lock@in.example.com", "lock@IN.example.com"] {
            let key = table
                .lookup(id, &m2m_security::tls::PskHandshake::from_peer(None))
                .expect(id);
            assert_eq!(
                key.association.credential.to_string(),
                "12-lock@in.example.com"
            );
        }
    }
}
