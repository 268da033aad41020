//! The MEF server (TS-0003 clause 8.3): its listener is the transport layer's ([`m2m_transport`]:
//! connection cap, per-source handshakes, timeouts, graceful shutdown); `MefBinder` turns a
//! completed handshake (PSK on Kpm or a certificate) into the peer and the connection's bootstrap
//! key; the HTTP/1.1 JSON API is described in the [module documentation](super).

use super::config::{MefConfig, StorageKey};
use super::store::{now_secs, Enrolment, EnrolmentMeta, Revocation, Store, TargetRef};
use super::{credential_for, SUID_MAF};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use m2m_security::certificates::{identity_of, CertIdentity};
use m2m_security::credentials::Secret;
use m2m_security::kdf::{self, BOOTSTRAP_EXPORTER_LABEL, EXPORT_LEN};
use m2m_security::tls::{self, Authenticated, PskKey, PskLookup, ServerTlsConfig};
use m2m_transport::{Binder, Connection, Listener, Security, Server};
use openssl::ssl::{SslContext, SslRef};
use openssl::x509::X509;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use zeroize::Zeroizing;

const MAX_BODY: usize = 64 * 1024;

/// KpmID -> Kpm: the `[[kpm]]` rows, then the token's entries.
struct KpmTable {
    rows: HashMap<String, Secret>,
    token: Option<Arc<m2m_security::secure_environment::pkcs11::Pkcs11Token>>,
}

impl PskLookup for KpmTable {
    fn lookup(&self, psk_identity: &str, _: &tls::PskHandshake) -> Option<PskKey> {
        use m2m_security::secure_environment::SecureEnvironment;
        let key = match self.rows.get(psk_identity) {
            Some(key) => key.clone(),
            // A Kpm in the token names its enrolee; one that names none opens nothing.
            None => {
                let entry = self.token.as_ref()?.psk(psk_identity)?;
                entry.entity_id.as_ref()?;
                entry.key
            }
        };
        Some(PskKey {
            association: m2m_security::association::Association {
                mode: m2m_security::association::SaeMode::ProvisionedKey,
                credential: m2m_security::credentials::CredentialId::new(
                    m2m_security::credentials::CredentialId::TYPE_KPM_ID,
                    psk_identity,
                )
                .ok()?,
                // The enrolee keeps the ID form it was configured with (an AE-ID, a CSE-ID or an
                // FQDN), so the binding is carried in the Credential-ID's row, not parsed here.
                entity: None,
            },
            key: Zeroizing::new(key.expose().to_vec()),
        })
    }
}

/// The enrolee keys the MEF accepts: Kpm rows, then B-TIDs of its BSF (GBA).
struct EnroleeKeys {
    kpm: KpmTable,
    gba: Option<crate::bsf::NafKeys>,
}

impl PskLookup for EnroleeKeys {
    fn lookup(&self, psk_identity: &str, handshake: &tls::PskHandshake) -> Option<PskKey> {
        match &self.gba {
            Some(gba) if gba.governs(psk_identity) => gba.lookup(psk_identity, handshake),
            _ => self.kpm.lookup(psk_identity, handshake),
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
enum PeerAuth {
    /// TLS-PSK on a Kpm.
    Kpm { kpm_id: String, enrolee_id: String },
    /// TLS-PSK on the Ks_NAF of a B-TID (GBA): the subscriber, and the enrolee its record names.
    Gba {
        subscriber: String,
        enrolee_id: String,
    },
    /// A certificate; its oneM2M identity (CSE-ID, AE-ID or FQDN).
    Certificate { identity: String },
}

impl PeerAuth {
    fn id(&self) -> &str {
        match self {
            PeerAuth::Kpm { enrolee_id, .. } | PeerAuth::Gba { enrolee_id, .. } => enrolee_id,
            PeerAuth::Certificate { identity } => identity,
        }
    }
}

/// One TLS connection: its peer and its bootstrap key.
struct Conn {
    addr: SocketAddr,
    auth: PeerAuth,
    ke: Secret,
    ke_id: String,
}

impl std::fmt::Display for Conn {
    /// For the acceptor's audit line: the credential and the peer, never key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.auth {
            PeerAuth::Kpm { kpm_id, enrolee_id } => write!(
                f,
                "Kpm {}-{kpm_id} -> {enrolee_id}",
                m2m_security::credentials::CredentialId::TYPE_KPM_ID
            ),
            PeerAuth::Gba {
                subscriber,
                enrolee_id,
            } => write!(f, "GBA {subscriber} -> {enrolee_id}"),
            PeerAuth::Certificate { identity } => write!(f, "certificate -> {identity}"),
        }
    }
}

/// What the MEF makes of a completed handshake (TS-0003 clause 8.3.2): the enrolee a Kpm row
/// names, or the identity of a certificate, with the bootstrap key of the connection (Ke and KeID
/// from the exporter, clauses 10.3.1, 10.3.4).
struct MefBinder {
    mef: Arc<Mef>,
}

impl Binder for MefBinder {
    type Association = Conn;

    fn bind(&self, proof: Authenticated, ssl: &SslRef, addr: SocketAddr) -> Result<Conn, String> {
        let mef = &self.mef;
        let auth = match proof {
            // A B-TID: the enrolee is the AE-ID the BSF's subscriber record names.
            Authenticated::Psk(a) if a.mode == m2m_security::association::SaeMode::GbaKey => {
                let enrolee = a
                    .entity
                    .as_ref()
                    .ok_or("the subscriber record names no AE-ID to enrol")?;
                PeerAuth::Gba {
                    subscriber: a.credential.to_string(),
                    enrolee_id: enrolee.sp_relative(),
                }
            }
            // Every Kpm row names its enrolee, so a PSK association always carries one.
            Authenticated::Psk(a) => {
                let kpm_id = a.credential.value().to_owned();
                let enrolee_id = mef
                    .enrolees
                    .get(&kpm_id)
                    .cloned()
                    .or_else(|| mef.token.as_ref()?.psk_entity(&kpm_id))
                    .ok_or("the KpmID names no enrolee")?;
                PeerAuth::Kpm { enrolee_id, kpm_id }
            }
            Authenticated::Certificate { leaf_der } => {
                let cert = X509::from_der(&leaf_der).map_err(|e| e.to_string())?;
                let naming = m2m_security::certificates::CseNaming::new(
                    &mef.config.sp_fqdn,
                    &mef.config.in_cse_id,
                )?;
                let identity = match identity_of(&cert, &naming)? {
                    CertIdentity::Entity(e) => e.sp_relative(),
                    CertIdentity::Fqdn(f) => f,
                };
                PeerAuth::Certificate { identity }
            }
        };
        let mut out = Zeroizing::new([0u8; EXPORT_LEN]);
        ssl.export_keying_material(&mut out[..], BOOTSTRAP_EXPORTER_LABEL, None)
            .map_err(|e| format!("TLS exporter: {e}"))?;
        let (ke, rel) = kdf::export_split(&out);
        let ke_id = kdf::ke_id_string(&rel, &mef.config.fqdn);
        Ok(Conn {
            addr,
            auth,
            ke,
            ke_id,
        })
    }
}

/// A MEF serving on a socket. [`RunningMef::shutdown`] stops accepting and lets requests in
/// progress finish (`[limits] shutdown_grace_ms`); dropping it ends the listener and every
/// connection at once.
pub struct RunningMef {
    pub addr: SocketAddr,
    server: Server,
    grace: Duration,
}

impl RunningMef {
    /// Stops accepting, lets the requests in progress finish, then ends every connection.
    pub async fn shutdown(self) {
        self.server.shutdown(self.grace).await
    }
}

/// The MEF's state and handlers.
pub struct Mef {
    config: MefConfig,
    store: Store,
    tls: SslContext,
    /// KpmID -> the enrolee it was provisioned for.
    enrolees: HashMap<String, String>,
    /// The token holding Kpm (their enrolees are its entries' entities).
    token: Option<Arc<m2m_security::secure_environment::pkcs11::Pkcs11Token>>,
}

impl Mef {
    /// Checks the configuration, opens the store and builds the TLS context.
    pub fn new(config: MefConfig) -> Result<Arc<Mef>, String> {
        if let Some(k) = config
            .private_key
            .as_ref()
            .filter(|k| !m2m_security::secure_environment::pkcs11::is_key_uri(k))
        {
            m2m_security::secure_environment::check_private_file(k)?;
        }
        let keys = config.load_keys()?;
        let table: HashMap<String, Secret> = keys
            .kpm
            .iter()
            .map(|k| (k.kpm_id.clone(), k.key.clone()))
            .collect();
        let enrolees = keys
            .kpm
            .iter()
            .map(|k| (k.kpm_id.clone(), k.enrolee_id.clone()))
            .collect();
        let suites = tls::PSK_SUITES
            .iter()
            .chain(tls::CERTIFICATE_SUITES)
            .map(|s| s.to_string())
            .collect();
        let gba = match &config.gba {
            Some(g) => {
                let (Some(cert), Some(key), Some(ca)) =
                    (&config.certificate, &config.private_key, &config.trusted_ca)
                else {
                    return Err("[gba] needs certificate, private_key and trusted_ca".into());
                };
                let sp = m2m_core::SpId::parse(&config.sp_fqdn).map_err(|e| e.dbg)?;
                let in_cse = m2m_core::CseId::parse(&config.in_cse_id).map_err(|e| e.dbg)?;
                Some(crate::bsf::NafKeys::new(
                    crate::bsf::ZnClient::new(
                        &g.zn_url,
                        &g.bsf_fqdn,
                        crate::bsf::ZnClient::context(cert, key, ca)?,
                    ),
                    &config.fqdn,
                    m2m_core::Home::cse(sp, in_cse),
                    Duration::from_millis(g.timeout_ms),
                    0,
                ))
            }
            None => None,
        };
        let psk = (!table.is_empty() || gba.is_some() || keys.token.is_some()).then(|| {
            Arc::new(EnroleeKeys {
                kpm: KpmTable {
                    rows: table,
                    token: keys.token.clone(),
                },
                gba,
            }) as Arc<dyn PskLookup>
        });
        let tls = tls::server_context(&ServerTlsConfig {
            cipher_suites: suites,
            tls13: false,
            certificate_chain: config.certificate.clone(),
            private_key: config.private_key.clone(),
            trusted_ca: config.trusted_ca.clone(),
            psk,
            revocation: crate::revocation_list(
                config.crl.as_deref(),
                config.trusted_ca.as_deref(),
            )?,
        })?;
        let store = match &keys.storage_key {
            StorageKey::File(p) => Store::open(&config.storage, p)?,
            StorageKey::Held(k) => Store::open_with_key(&config.storage, k)?,
        };
        Ok(Arc::new(Mef {
            config,
            store,
            tls,
            enrolees,
            token: keys.token,
        }))
    }

    pub fn config(&self) -> &MefConfig {
        &self.config
    }

    /// Binds `config.listen` and serves on the transport layer ([`m2m_transport`]) until the
    /// returned [`RunningMef`] is shut down or dropped.
    pub async fn start(self: &Arc<Self>) -> Result<RunningMef, String> {
        let tcp = TcpListener::bind(&self.config.listen)
            .await
            .map_err(|e| format!("listen {}: {e}", self.config.listen))?;
        let limits = self.config.limits.clone();
        let grace = Duration::from_millis(limits.shutdown_grace_ms);
        let binder = Arc::new(MefBinder {
            mef: Arc::clone(self),
        });
        let me = Arc::clone(self);
        let server = Server::spawn(
            Listener {
                name: "mef",
                tcp,
                security: Security::Tls(self.tls.clone()),
                limits,
            },
            binder,
            move |conn: Connection<Conn>| Arc::clone(&me).serve(conn),
        )
        .map_err(|e| format!("MEF listener: {e}"))?;
        Ok(RunningMef {
            addr: server.local_addr,
            server,
            grace,
        })
    }

    /// Serves the MEF's HTTP/JSON API on one association.
    async fn serve(self: Arc<Self>, conn: Connection<Conn>) {
        // The listener is TLS: every connection handed over is an association.
        let Some(association) = conn.association.clone() else {
            return;
        };
        let svc = service_fn(move |req| {
            let me = Arc::clone(&self);
            let association = Arc::clone(&association);
            async move { Ok::<_, Infallible>(me.handle(&association, req).await) }
        });
        m2m_transport::http::serve(conn, svc).await
    }

    async fn handle(
        &self,
        conn: &Conn,
        req: hyper::Request<Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        let path = parts.uri.path().replace("%40", "@");
        if parts.method == Method::POST && path == "/mef/enrolment" {
            return self.enrol(conn, &body);
        }
        if parts.method == Method::POST && path == "/mef/revocation" {
            return self.revoke(conn, &body);
        }
        if let Some(rest) = path.strip_prefix("/mef/fetchCredentials/") {
            if parts.method != Method::GET {
                return error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
            }
            let origin = parts
                .headers
                .get("x-m2m-origin")
                .and_then(|v| v.to_str().ok());
            return self.fetch(conn, rest, origin);
        }
        error(StatusCode::NOT_FOUND, "no such MEF resource")
    }

    /// Revocation of enrolments by an administrator (a certificate identity among `admins`): the
    /// enrolments and their Ke are gone, so no target fetches a key derived from them any more,
    /// and the MAF refuses the Km (it asks the MEF at every handshake and key retrieval).
    fn revoke(&self, conn: &Conn, body: &[u8]) -> hyper::Response<Full<Bytes>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Req {
            #[serde(default, rename = "keID")]
            ke_id: Option<String>,
            #[serde(default, rename = "enroleeID")]
            enrolee_id: Option<String>,
        }
        let admin = match &conn.auth {
            PeerAuth::Certificate { identity } if self.config.admins.contains(identity) => identity,
            _ => {
                tracing::warn!(target: "audit", peer = %conn.addr, who = %conn.auth.id(), "enrolment revocation refused: not an administrator");
                return error(StatusCode::FORBIDDEN, "not an administrator of this MEF");
            }
        };
        let which = match serde_json::from_slice::<Req>(body) {
            Ok(Req {
                ke_id: Some(k),
                enrolee_id: None,
            }) => Revocation::KeId(k),
            Ok(Req {
                ke_id: None,
                enrolee_id: Some(e),
            }) => Revocation::Enrolee(e),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "expected {\"keID\": ...} or {\"enroleeID\": ...}",
                )
            }
        };
        match self.store.revoke(&which) {
            Err(e) => {
                tracing::error!(target: "audit", "MEF storage: {e}");
                error(StatusCode::INTERNAL_SERVER_ERROR, "storage failure")
            }
            Ok(gone) if gone.is_empty() => error(StatusCode::NOT_FOUND, "no such enrolment"),
            Ok(gone) => {
                for ke_id in &gone {
                    tracing::warn!(target: "audit", peer = %conn.addr, admin = %admin, ke_id = %ke_id, "enrolment revoked");
                }
                respond(StatusCode::OK, &json!({ "revoked": gone }))
            }
        }
    }

    fn enrol(&self, conn: &Conn, body: &[u8]) -> hyper::Response<Full<Bytes>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Req {
            indications: Vec<String>,
            #[serde(default)]
            maf_id: Option<String>,
            #[serde(default)]
            targets: Vec<TargetRef>,
        }
        let req: Req = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("enrolment request: {e}")),
        };
        if req.indications.is_empty() && req.targets.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "the enrolment names no indication and no target",
            );
        }
        if req.indications.iter().any(|i| i == "MAF") && req.maf_id.is_none() {
            return error(StatusCode::BAD_REQUEST, "indication MAF needs mafId");
        }
        if let Some(maf) = &req.maf_id {
            if !self.config.target_allows(maf, SUID_MAF) {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "mafId {maf} is not a MAF this MEF provisions (no target row with SUID 11)"
                    ),
                );
            }
        }
        if let Some(t) = req
            .targets
            .iter()
            .find(|t| !self.config.target_allows(&t.id, t.suid))
        {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("target {} is not allowed SUID {} by this MEF", t.id, t.suid),
            );
        }
        let meta = EnrolmentMeta {
            ke_id: conn.ke_id.clone(),
            enrolee_id: conn.auth.id().to_owned(),
            indications: req.indications,
            maf_id: req.maf_id,
            targets: req.targets,
            expires: now_secs() + self.config.lifetime_seconds,
        };
        let targets: Vec<String> = meta
            .targets
            .iter()
            .map(|t| format!("{}:{}", t.id, t.suid))
            .collect();
        tracing::info!(target: "audit", peer = %conn.addr, enrolee = %meta.enrolee_id, ke_id = %meta.ke_id,
            indications = ?meta.indications, maf_id = meta.maf_id.as_deref().unwrap_or("-"),
            targets = ?targets, "enrolment created");
        let reply = json!({
            "keID": meta.ke_id,
            "enroleeID": meta.enrolee_id,
            "lifetime": self.config.lifetime_seconds,
        });
        if let Err(e) = self.store.insert(Enrolment {
            meta,
            ke: conn.ke.clone(),
        }) {
            tracing::error!(error = %e, "storing an enrolment failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storing the enrolment failed",
            );
        }
        respond(StatusCode::CREATED, &reply)
    }

    fn fetch(&self, conn: &Conn, rest: &str, origin: Option<&str>) -> hyper::Response<Full<Bytes>> {
        let refuse = |status: StatusCode, target: &str, ke_id: &str, why: &str| {
            tracing::warn!(target: "audit", peer = %conn.addr, target_id = %target, ke_id = %ke_id, reason = %why,
                "credential fetch refused");
            error(status, why)
        };
        let Some((ke_id, suid)) = rest.rsplit_once('/') else {
            return error(
                StatusCode::BAD_REQUEST,
                "expected /mef/fetchCredentials/{KeID}/{SUID}",
            );
        };
        let Ok(suid) = suid.parse::<u32>() else {
            return error(StatusCode::BAD_REQUEST, "SUID is not a number");
        };
        let target = match &conn.auth {
            PeerAuth::Certificate { identity } => identity.as_str(),
            PeerAuth::Kpm { enrolee_id, .. } | PeerAuth::Gba { enrolee_id, .. } => {
                return refuse(
                    StatusCode::FORBIDDEN,
                    enrolee_id,
                    ke_id,
                    "enrolment targets authenticate with certificates",
                )
            }
        };
        if let Some(o) = origin {
            if !self.config.same_id(o, target) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    target,
                    ke_id,
                    "X-M2M-Origin differs from the certificate identity",
                );
            }
        }
        if !self.config.target_allows(target, suid) {
            return refuse(
                StatusCode::FORBIDDEN,
                target,
                ke_id,
                &format!("this target may not fetch SUID {suid}"),
            );
        }
        let Some(e) = self.store.get(ke_id) else {
            return refuse(
                StatusCode::NOT_FOUND,
                target,
                ke_id,
                "unknown or expired KeID",
            );
        };
        let named = e
            .meta
            .targets
            .iter()
            .any(|t| t.suid == suid && self.config.same_id(&t.id, target))
            || (suid == SUID_MAF
                && e.meta
                    .maf_id
                    .as_deref()
                    .is_some_and(|m| self.config.same_id(m, target)));
        if !named {
            return refuse(
                StatusCode::FORBIDDEN,
                target,
                ke_id,
                &format!("the enrolment does not name this target for SUID {suid}"),
            );
        }
        let credential = credential_for(&e.ke, suid, target);
        let lifetime = e.meta.expires.saturating_sub(now_secs());
        tracing::info!(target: "audit", peer = %conn.addr, target_id = %target, ke_id = %ke_id, suid,
            enrolee = %e.meta.enrolee_id, "credential delivered");
        respond(
            StatusCode::OK,
            &json!({
                "status": "SUCCESS",
                "keID": ke_id,
                "suid": suid,
                "credential": credential.to_hex().as_str(),
                "enroleeID": e.meta.enrolee_id,
                "lifetime": lifetime,
            }),
        )
    }
}

fn respond(status: StatusCode, body: &serde_json::Value) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: &str) -> hyper::Response<Full<Bytes>> {
    respond(status, &json!({ "error": msg }))
}
