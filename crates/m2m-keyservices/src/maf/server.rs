//! The MAF server (TS-0003 clause 8.8): its listener is the transport layer's ([`m2m_transport`]:
//! connection cap, per-source handshakes, timeouts, graceful shutdown); `MafBinder` turns a
//! completed handshake into the MAF client and the connection's exporter output; the HTTP/JSON
//! handlers follow (see the module documentation of [`crate::maf`] for the API).

use super::config::MafConfig;
use super::store::{ClientReg, KeyReg, Store};
use super::ttp::{self, Delegations};
use super::{absolute_id, normalize_relative_id};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use m2m_core::EntityId;
use m2m_security::association::{Association, SaeMode};
use m2m_security::credentials::{CredentialId, Secret};
use m2m_security::kdf::{self, CONNECTION_EXPORTER_LABEL, EXPORT_LEN};
use m2m_security::tls::{Authenticated, PskKey, PskLookup, ServerTlsConfig};
use m2m_transport::{Binder, Connection, Listener, Security, Server};
use openssl::ssl::{SslContext, SslRef};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

/// The MAF's clock: Unix seconds. Tests inject their own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp())
}

const MAX_BODY: usize = 64 * 1024;

/// When the enrolment behind each remote-provisioned Km ends (MAF clock, Unix seconds), by
/// psk_identity (KeID): written by the PSK lookup from the MEF's `lifetime`, read right after the
/// handshake into the connection's [`Conn::ceiling`]. Entries of ended enrolments are dropped at the
/// next write; a missing entry reads as ended (fail closed).
#[derive(Default)]
struct EnrolmentLifetimes(Mutex<HashMap<String, i64>>);

impl EnrolmentLifetimes {
    fn record(&self, ke_id: &str, until: i64, now: i64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, t| *t > now);
        m.insert(ke_id.to_owned(), until);
    }

    fn until(&self, ke_id: &str) -> i64 {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(ke_id).copied().unwrap_or(i64::MIN)
    }
}

/// The PSK side of the MAF: configured Km rows first, then (with `[mef]`) remote-provisioned Km.
struct KmTable {
    rows: HashMap<String, (EntityId, Secret)>,
    /// Km kept in a PKCS#11 token, each bound to its client by the entry's entity.
    token: Option<Arc<m2m_security::secure_environment::pkcs11::Pkcs11Token>>,
    sp_fqdn: String,
    mef: Option<Arc<MefKm>>,
}

/// The association a Km opens: its KmID as Credential-ID (typeID 11), bound to the MAF client.
fn km_association(km_id: &str, client: EntityId) -> Option<Association> {
    Some(Association {
        mode: SaeMode::ProvisionedKey,
        credential: CredentialId::new(CredentialId::TYPE_KM_ID, km_id).ok()?,
        entity: Some(client),
    })
}

impl PskLookup for KmTable {
    fn lookup(&self, psk_identity: &str, _: &m2m_security::tls::PskHandshake) -> Option<PskKey> {
        if let Some((client, key)) = self.rows.get(psk_identity) {
            return Some(PskKey {
                association: km_association(psk_identity, client.clone())?,
                key: Zeroizing::new(key.expose().to_vec()),
            });
        }
        if let Some(entry) = self.token.as_ref().and_then(|t| {
            use m2m_security::secure_environment::SecureEnvironment;
            t.psk(psk_identity)
        }) {
            // A Km names its client; one that names none, or no valid ID, opens nothing.
            let client = super::entity_id(entry.entity_id.as_deref()?, &self.sp_fqdn)?;
            return Some(PskKey {
                association: km_association(psk_identity, client)?,
                key: Zeroizing::new(entry.key.expose().to_vec()),
            });
        }
        self.mef.as_ref()?.lookup(psk_identity)
    }
}

/// Remote-provisioned Km (TS-0003 clauses 8.3.2.1, 8.8.3.1): an enrolee of the MEF offers
/// psk_identity = its KeID (`hex(RelativeKeID)@MEF-FQDN`; this project's KmID for a remotely
/// provisioned Km, SUID 21 in TS-0004 terms) and psk = Km = kdf::km(Ke, MAF-FQDN). The MAF fetches that
/// Km from the MEF (`fetchCredentials/{KeID}/11`) over its own FQDN certificate association, for every
/// handshake (no cache: an expired enrolment opens nothing), and binds the enrolee ID the MEF names.
/// The lifetime the MEF reports is kept in [`EnrolmentLifetimes`]: what the client registers over
/// that association ends with the enrolment.
/// What the MEF says of an enrolment now.
enum Enrolment {
    Holds,
    /// Expired or revoked (the MEF no longer knows the KeID, or no longer for this MAF).
    Ended,
    /// The MEF could not be asked; nothing derived from the enrolment is handed out meanwhile.
    Unknown(String),
}

struct MefKm {
    addr: String,
    mef_fqdn: String,
    timeout: Duration,
    sp_fqdn: String,
    /// The MAF's certificate context towards the MEF, built at start: a handshake (even of an
    /// unauthenticated peer) reads no files.
    context: SslContext,
    lifetimes: Arc<EnrolmentLifetimes>,
    clock: Clock,
}

impl MefKm {
    /// Km and the enrolee of `ke_id`, and the seconds its enrolment has left.
    async fn fetch(&self, ke_id: &str) -> Result<(PskKey, u64), String> {
        let mut mef = crate::mef::MefClient::connect_with_context(
            &self.addr,
            &self.mef_fqdn,
            &self.context,
            &m2m_transport::PeerCheck::Host(self.mef_fqdn.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
        let got = mef
            .fetch_credentials(ke_id, crate::mef::SUID_MAF, None)
            .await
            .map_err(|e| e.to_string())?;
        if got.credential.is_empty() {
            return Err("the MEF returned an empty Km".into());
        }
        if got.lifetime == 0 {
            return Err("the enrolment has no lifetime left".into());
        }
        let client = super::entity_id(&got.enrolee_id, &self.sp_fqdn).ok_or_else(|| {
            format!(
                "the enrolee ID '{}' is no AE-ID/CSE-ID of this SP",
                got.enrolee_id
            )
        })?;
        Ok((
            PskKey {
                association: km_association(ke_id, client)
                    .ok_or("the KeID is no Credential-ID value")?,
                key: Zeroizing::new(got.credential.expose().to_vec()),
            },
            got.lifetime,
        ))
    }

    /// Whether the enrolment of `ke_id` still holds at the MEF, asked now (a key registered over
    /// its Km is about to be handed out).
    async fn confirm(&self, ke_id: &str) -> Enrolment {
        let mut mef = match crate::mef::MefClient::connect_with_context(
            &self.addr,
            &self.mef_fqdn,
            &self.context,
            &m2m_transport::PeerCheck::Host(self.mef_fqdn.clone()),
        )
        .await
        {
            Ok(m) => m,
            Err(e) => return Enrolment::Unknown(e.to_string()),
        };
        let asked = mef.fetch_credentials(ke_id, crate::mef::SUID_MAF, None);
        match tokio::time::timeout(self.timeout, asked).await {
            Ok(Ok(got)) if got.lifetime > 0 => Enrolment::Holds,
            Ok(Ok(_)) => Enrolment::Ended,
            Ok(Err(e)) if matches!(e.status(), Some(403 | 404)) => Enrolment::Ended,
            Ok(Err(e)) => Enrolment::Unknown(e.to_string()),
            Err(_) => Enrolment::Unknown("the MEF did not answer in time".into()),
        }
    }

    fn lookup(&self, psk_identity: &str) -> Option<PskKey> {
        let relative = psk_identity.strip_suffix(&format!("@{}", self.mef_fqdn))?;
        if relative.is_empty() || !relative.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        match crate::psk_fetch::fetch_in_psk_callback(self.timeout, self.fetch(psk_identity)) {
            Ok((key, lifetime)) => {
                let now = (self.clock)();
                let lifetime = i64::try_from(lifetime).unwrap_or(i64::MAX);
                self.lifetimes
                    .record(psk_identity, now.saturating_add(lifetime), now);
                Some(key)
            }
            Err(why) => {
                tracing::warn!(target: "audit", psk_identity, reason = %why, "remote-provisioned Km not available");
                None
            }
        }
    }
}

impl State {
    /// Whether a KmID is a remote-provisioned Km: a KeID of the configured MEF (`hex@MEF-FQDN`;
    /// no `[[km]]` row may end so). Such an association ends with its enrolment; a Km of a row
    /// or of the token does not.
    fn remote_km(&self, km_id: &str) -> bool {
        let Some(mef) = &self.cfg.mef else {
            return false;
        };
        km_id
            .rsplit_once('@')
            .is_some_and(|(_, domain)| domain.eq_ignore_ascii_case(&mef.fqdn))
    }
}

pub(super) struct State {
    pub(super) cfg: MafConfig,
    store: Mutex<Store>,
    pub(super) clock: Clock,
    /// The TTP's delegations, in absolute form.
    pub(super) delegations: Delegations,
    lifetimes: Arc<EnrolmentLifetimes>,
    /// The MEF of remote-provisioned Km, asked again before a key registered over one is handed out.
    mef: Option<Arc<MefKm>>,
}

impl State {
    pub(super) fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one connection authenticated, and its exporter output.
pub(super) struct Conn {
    /// The MAF client: an AE-ID or CSE-ID in absolute form.
    pub(super) identity: String,
    /// The KmID the client authenticated with (TLS-PSK on Km); `None` for a certificate.
    pub(super) km_id: Option<String>,
    exporter: Zeroizing<[u8; EXPORT_LEN]>,
    pub(super) peer: SocketAddr,
    /// When the credential the association was authenticated with ends (MAF clock): the enrolment
    /// of a remote-provisioned Km. `None`: a `[[km]]` row or a certificate (no lifetime kept here).
    /// Nothing registered over this association outlives it, and once it has passed the association
    /// serves no request.
    pub(super) ceiling: Option<i64>,
}

impl Conn {
    /// `expires`, cut to this association's [`Conn::ceiling`].
    pub(super) fn cap(&self, expires: i64) -> i64 {
        self.ceiling.map_or(expires, |c| expires.min(c))
    }
}

impl std::fmt::Display for Conn {
    /// For the acceptor's audit line: the credential and the client, never key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.km_id {
            Some(km_id) => write!(
                f,
                "Km {}-{km_id} -> {}",
                CredentialId::TYPE_KM_ID,
                self.identity
            ),
            None => write!(f, "certificate -> {}", self.identity),
        }
    }
}

/// What the MAF makes of a completed handshake (TS-0003 clause 8.8.2.2, the MAF Handshake): the
/// client a Km row or a remote-provisioned Km names, or the AE-ID/CSE-ID of a client certificate
/// (an FQDN certificate names no MAF client), with the connection's exporter output (Kc, KcID).
struct MafBinder {
    state: Arc<State>,
}

impl Binder for MafBinder {
    type Association = Conn;

    fn bind(&self, proof: Authenticated, ssl: &SslRef, peer: SocketAddr) -> Result<Conn, String> {
        let state = &self.state;
        let mut ceiling = None;
        let mut km_id = None;
        let identity = match proof {
            Authenticated::Psk(a) => {
                let psk_identity = a.credential.value();
                if state.remote_km(psk_identity) {
                    // A remote-provisioned Km: the association ends with its enrolment.
                    ceiling = Some(state.lifetimes.until(psk_identity));
                }
                km_id = Some(psk_identity.to_owned());
                a.entity.ok_or("the KmID names no client")?.absolute()
            }
            Authenticated::Certificate { leaf_der } => {
                let cert = openssl::x509::X509::from_der(&leaf_der).map_err(|e| e.to_string())?;
                let id = m2m_security::certificates::identity_of(&cert, &state.cfg.naming()?)?;
                match id {
                    m2m_security::certificates::CertIdentity::Fqdn(f) => {
                        return Err(format!("FQDN certificate {f} names no MAF client"))
                    }
                    m2m_security::certificates::CertIdentity::Entity(e) => e.absolute(),
                }
            }
        };
        let mut exporter = Zeroizing::new([0u8; EXPORT_LEN]);
        ssl.export_keying_material(&mut exporter[..], CONNECTION_EXPORTER_LABEL, None)
            .map_err(|e| format!("TLS exporter: {e}"))?;
        Ok(Conn {
            identity,
            km_id,
            exporter,
            peer,
            ceiling,
        })
    }
}

/// A MAF serving on a socket. [`RunningMaf::shutdown`] stops accepting and lets requests in
/// progress finish (`[limits] shutdown_grace_ms`); dropping it ends the listener, every connection
/// and the sweep at once.
pub struct RunningMaf {
    pub addr: SocketAddr,
    server: Option<Server>,
    grace: Duration,
    sweep: JoinHandle<()>,
}

impl RunningMaf {
    /// Opens the storage, binds `cfg.listen` and starts serving.
    pub async fn start(cfg: MafConfig, clock: Clock) -> Result<RunningMaf, String> {
        if let Some(k) = cfg
            .private_key
            .as_ref()
            .filter(|k| !m2m_security::secure_environment::pkcs11::is_key_uri(k))
        {
            m2m_security::secure_environment::check_private_file(k)?;
        }
        let limits = cfg.listener_limits()?;
        let keys = cfg.load_keys()?;
        let store = Store::open(&cfg.storage, &keys.storage_key)?;
        let mut km = HashMap::new();
        for row in &keys.km {
            let client = super::entity_id(&row.client_id, &cfg.sp_fqdn)
                .ok_or_else(|| format!("km {}: bad client_id", row.km_id))?;
            km.insert(row.km_id.clone(), (client, row.key.clone()));
        }
        let lifetimes = Arc::new(EnrolmentLifetimes::default());
        let mef = match &cfg.mef {
            None => None,
            Some(m) => Some(Arc::new(MefKm {
                addr: crate::mef::client::mef_addr(&m.url).map_err(|e| format!("mef.url: {e}"))?,
                mef_fqdn: m.fqdn.clone(),
                timeout: Duration::from_millis(m.timeout_ms.max(1)),
                sp_fqdn: cfg.sp_fqdn.clone(),
                context: crate::mef::MefClient::certificate_context(
                    cfg.certificate
                        .as_deref()
                        .ok_or("[mef] needs certificate")?,
                    cfg.private_key
                        .as_deref()
                        .ok_or("[mef] needs private_key")?,
                    cfg.trusted_ca.as_deref().ok_or("[mef] needs trusted_ca")?,
                )
                .map_err(|e| format!("[mef]: the MAF's certificate association: {e}"))?,
                lifetimes: Arc::clone(&lifetimes),
                clock: Arc::clone(&clock),
            })),
        };
        let mef_for_state = mef.clone();
        let context = m2m_security::tls::server_context(&ServerTlsConfig {
            cipher_suites: m2m_security::tls::PSK_SUITES
                .iter()
                .chain(m2m_security::tls::CERTIFICATE_SUITES)
                .map(|s| s.to_string())
                .collect(),
            tls13: false,
            certificate_chain: cfg.certificate.clone(),
            private_key: cfg.private_key.clone(),
            trusted_ca: cfg.trusted_ca.clone(),
            psk: (!km.is_empty() || mef.is_some() || keys.token.is_some()).then(|| {
                Arc::new(KmTable {
                    rows: km,
                    token: keys.token.clone(),
                    sp_fqdn: cfg.sp_fqdn.clone(),
                    mef,
                }) as Arc<dyn PskLookup>
            }),
            revocation: crate::revocation_list(cfg.crl.as_deref(), cfg.trusted_ca.as_deref())?,
        })?;
        let tcp = TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| format!("listen {}: {e}", cfg.listen))?;
        let delegations = Delegations::from_config(&cfg.ttp.delegations, &cfg.sp_fqdn)?;
        let state = Arc::new(State {
            cfg,
            store: Mutex::new(store),
            clock,
            delegations,
            lifetimes,
            mef: mef_for_state,
        });
        let sweep_state = Arc::clone(&state);
        let sweep = tokio::spawn(async move {
            let period = Duration::from_secs(sweep_state.cfg.sweep_interval.max(1));
            loop {
                tokio::time::sleep(period).await;
                let now = (sweep_state.clock)();
                match sweep_state.store().purge(now) {
                    Ok(a) if a == super::store::Affected::default() => {}
                    Ok(a) => {
                        tracing::info!(target: "audit", clients = a.clients, keys = a.keys, credentials = a.credentials, "expired registrations purged")
                    }
                    Err(e) => tracing::warn!(error = %e, "sweep failed"),
                }
            }
        });
        let grace = Duration::from_millis(limits.shutdown_grace_ms);
        let binder = Arc::new(MafBinder {
            state: Arc::clone(&state),
        });
        let server = Server::spawn(
            Listener {
                name: "maf",
                tcp,
                security: Security::Tls(context),
                limits,
            },
            binder,
            move |conn: Connection<Conn>| serve(Arc::clone(&state), conn),
        )
        .map_err(|e| format!("MAF listener: {e}"))?;
        Ok(RunningMaf {
            addr: server.local_addr,
            server: Some(server),
            grace,
            sweep,
        })
    }

    /// Stops accepting, lets the requests in progress finish (at most `[limits]
    /// shutdown_grace_ms`), then ends every connection and the sweep.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(self.grace).await;
        }
        self.sweep.abort();
    }
}

impl Drop for RunningMaf {
    fn drop(&mut self) {
        // Dropping the server ends its listener and connections at once.
        self.server.take();
        self.sweep.abort();
    }
}

/// Serves the MAF's HTTP/JSON API on one association.
async fn serve(state: Arc<State>, conn: Connection<Conn>) {
    // The listener is TLS: every connection handed over is an association.
    let Some(association) = conn.association.clone() else {
        return;
    };
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        let association = Arc::clone(&association);
        async move { Ok::<_, Infallible>(handle(&state, &association, req).await) }
    });
    m2m_transport::http::serve(conn, service).await
}

pub(super) type Answer = Response<Full<Bytes>>;
/// A refusal on the way to an answer (boxed: a response is large).
pub(super) type Refused = Box<Answer>;

pub(super) fn answer(status: StatusCode, body: Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, reason: &str) -> Answer {
    answer(status, json!({ "error": reason }))
}

fn refuse(status: StatusCode, reason: &str) -> Refused {
    Box::new(error(status, reason))
}

fn no_content() -> Answer {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

pub(super) fn internal(e: String) -> Answer {
    tracing::error!(error = %e, "MAF storage error");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// Unix seconds as a oneM2M timestamp.
pub fn format_time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%S")
        .to_string()
}

fn parse_time(s: &str) -> Option<i64> {
    m2m_core::time::parse(s).ok().map(|t| t.timestamp())
}

/// The expiry for a requested expirationTime: `default` seconds from now when absent, at most
/// `max` seconds from now.
pub(super) fn lifetime(
    now: i64,
    requested: Option<&str>,
    default: u64,
    max: u64,
) -> Result<i64, &'static str> {
    let max = now.saturating_add(max as i64);
    match requested {
        None => Ok(now.saturating_add(default as i64).min(max)),
        Some(s) => match parse_time(s) {
            None => Err("expirationTime is not a oneM2M timestamp"),
            Some(t) if t <= now => Err("expirationTime is in the past"),
            Some(t) => Ok(t.min(max)),
        },
    }
}

/// The expiry for a requested expirationTime, within the limits of the configuration.
fn expiry(state: &State, now: i64, requested: Option<&str>, default: u64) -> Result<i64, Refused> {
    lifetime(now, requested, default, state.cfg.max_lifetime)
        .map_err(|why| refuse(StatusCode::BAD_REQUEST, why))
}

async fn handle(state: &State, conn: &Conn, req: Request<Incoming>) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if conn.ceiling.is_some_and(|c| c <= (state.clock)()) {
        // The enrolment the Km of this association came from has ended while it stayed open.
        tracing::warn!(target: "audit", peer = %conn.peer, client = %conn.identity, "MAF request refused: the enrolment of this association has ended");
        let why = "the enrolment this association was authenticated with has ended";
        return match segments.as_slice() {
            ["maf", "e2e-credentials", ..] => {
                ttp::refused(m2m_core::ResponseStatusCode::OriginatorHasNoPrivilege, why)
            }
            _ => error(StatusCode::FORBIDDEN, why),
        };
    }
    if method != Method::GET {
        if let Some(refused) = enrolment_of_writer(state, conn).await {
            return refused;
        }
    }
    let key = |id: &str| normalize_relative_id(id);
    match (method, segments.as_slice()) {
        (Method::POST, ["maf", "clients"]) => register_client(state, conn, &body),
        (Method::PUT, ["maf", "clients", id]) => update_client(state, conn, id, &body),
        (Method::DELETE, ["maf", "clients", id]) => deregister_client(state, conn, id),
        (Method::POST, ["maf", "keys"]) => register_key(state, conn, &body),
        (Method::GET, ["maf", "keys", id]) => {
            let id = key(id);
            match enrolment_of_source(state, conn, &id).await {
                Some(refused) => refused,
                None => retrieve_key(state, conn, &id),
            }
        }
        (Method::PUT, ["maf", "keys", id]) => update_key(state, conn, &key(id), &body),
        (Method::DELETE, ["maf", "keys", id]) => deregister_key(state, conn, &key(id)),
        (method, ["maf", "e2e-credentials", rest @ ..]) => {
            if let (&Method::GET, [id]) = (&method, rest) {
                if let Some(refused) = enrolment_of_credential(state, conn, id).await {
                    return refused;
                }
            }
            ttp::handle(state, conn, &method, rest, &body)
        }
        (_, ["maf", "clients"] | ["maf", "clients", _] | ["maf", "keys"] | ["maf", "keys", _]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "no such resource"),
    }
}

fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, Refused> {
    parse_json(body).map_err(|why| refuse(StatusCode::BAD_REQUEST, why))
}

/// A JSON request body (empty: the defaults), or a short reason.
pub(super) fn parse_json<T: for<'de> Deserialize<'de> + Default>(
    body: &[u8],
) -> Result<T, &'static str> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // serde_json's message may quote input; keep only its category to never echo key material.
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => "request body has wrong or missing fields",
        _ => "request body is not JSON",
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClientRegRequest {
    expiration_time: Option<String>,
    #[serde(rename = "adminFQDN")]
    admin_fqdn: Option<String>,
    #[serde(rename = "mafFQDN")]
    maf_fqdn: Option<String>,
}

fn register_client(state: &State, conn: &Conn, body: &[u8]) -> Answer {
    let req: ClientRegRequest = match parse_body(body) {
        Ok(r) => r,
        Err(a) => return *a,
    };
    if let Err(a) = check_maf_fqdn(state, req.maf_fqdn.as_deref()) {
        return *a;
    }
    let now = (state.clock)();
    let expires = match expiry(
        state,
        now,
        req.expiration_time.as_deref(),
        state.cfg.default_client_lifetime,
    ) {
        // A registration over a remote-provisioned Km ends with its enrolment.
        Ok(t) => conn.cap(t),
        Err(a) => return *a,
    };
    let mut id = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut id);
    let reg = ClientReg {
        reg_id: format!("mcr-{}", hex::encode(id)),
        client_id: conn.identity.clone(),
        admin_fqdn: req.admin_fqdn,
        expires,
        km_id: conn.km_id.clone(),
    };
    // Expired rows are left to the sweep: every read filters on expiry.
    if let Err(e) = state.store().add_client(&reg) {
        return internal(e);
    }
    tracing::info!(target: "audit", peer = %conn.peer, client = %reg.client_id, reg = %reg.reg_id, "MAF client registered");
    answer(StatusCode::CREATED, client_json(&reg))
}

/// The answer body of a client registration.
fn client_json(reg: &ClientReg) -> Value {
    let mut v = json!({
        "mafClientRegID": reg.reg_id,
        "mafClientID": reg.client_id,
        "expirationTime": format_time(reg.expires),
    });
    if let Some(a) = &reg.admin_fqdn {
        v["adminFQDN"] = json!(a);
    }
    v
}

/// Refuses a request whose mafFQDN names another MAF than this one.
fn check_maf_fqdn(state: &State, maf_fqdn: Option<&str>) -> Result<(), Refused> {
    match maf_fqdn {
        Some(f) if !f.eq_ignore_ascii_case(&state.cfg.fqdn) => {
            Err(refuse(StatusCode::BAD_REQUEST, "mafFQDN names another MAF"))
        }
        _ => Ok(()),
    }
}

/// Client Registration Update (TS-0003 clause 8.8.2.5): a new expiration time (and adminFQDN),
/// only by the registered client itself. The new time is cut to the credential of this association
/// (clause 8.8.2.5 lets an update "establish a new Km": the registration lives under the Km it was
/// last registered or updated with); the client's keys and credentials that would outlive it are
/// shortened with it.
fn update_client(state: &State, conn: &Conn, id: &str, body: &[u8]) -> Answer {
    let req: ClientRegRequest = match parse_body(body) {
        Ok(r) => r,
        Err(a) => return *a,
    };
    let now = (state.clock)();
    let store = state.store();
    let mut reg = match store.client(id) {
        Err(e) => return internal(e),
        Ok(Some(reg)) if reg.expires > now => reg,
        Ok(_) => return error(StatusCode::NOT_FOUND, "no such client registration"),
    };
    if reg.client_id != conn.identity {
        tracing::warn!(target: "audit", peer = %conn.peer, client = %conn.identity, reg = %id, "MAF client registration update refused: not the registered client");
        return error(StatusCode::FORBIDDEN, "not the registered client");
    }
    reg.expires = match expiry(
        state,
        now,
        req.expiration_time.as_deref(),
        state.cfg.default_client_lifetime,
    ) {
        Ok(t) => conn.cap(t),
        Err(a) => return *a,
    };
    if req.admin_fqdn.is_some() {
        reg.admin_fqdn = req.admin_fqdn;
    }
    // The registration now lives under this association's credential (a new Km, or none).
    reg.km_id = conn.km_id.clone();
    let shortened = match store.update_client(&reg) {
        Ok(a) => a,
        Err(e) => return internal(e),
    };
    tracing::info!(target: "audit", peer = %conn.peer, client = %conn.identity, reg = %id,
        keys_shortened = shortened.keys, credentials_shortened = shortened.credentials, "MAF client registration updated");
    answer(StatusCode::OK, client_json(&reg))
}

/// Client De-Registration (TS-0003 clause 8.8.2.6): ends the registration and, at once, every key
/// and E2E credential registered under it.
fn deregister_client(state: &State, conn: &Conn, id: &str) -> Answer {
    let now = (state.clock)();
    let store = state.store();
    match store.client(id) {
        Err(e) => internal(e),
        Ok(Some(reg)) if reg.expires > now => {
            if reg.client_id != conn.identity {
                tracing::warn!(target: "audit", peer = %conn.peer, client = %conn.identity, reg = %id, "MAF client de-registration refused: not the registered client");
                return error(StatusCode::FORBIDDEN, "not the registered client");
            }
            let gone = match store.delete_client(id) {
                Ok(a) => a,
                Err(e) => return internal(e),
            };
            tracing::info!(target: "audit", peer = %conn.peer, client = %conn.identity, reg = %id,
                keys = gone.keys, credentials = gone.credentials, "MAF client de-registered with its keys and credentials");
            no_content()
        }
        Ok(_) => error(StatusCode::NOT_FOUND, "no such client registration"),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyRegRequest {
    suid: Option<u32>,
    #[serde(rename = "targetIDs")]
    target_ids: Option<Vec<String>>,
    expiration_time: Option<String>,
    #[serde(rename = "adminFQDN")]
    admin_fqdn: Option<String>,
    #[serde(rename = "mafFQDN")]
    maf_fqdn: Option<String>,
    /// Hex; deserialized straight into a `Secret`.
    key_value: Option<Secret>,
}

/// SUIDs the MAF registers keys for: SAEF, ESPrim, ESData (pre-provisioned, RSPF- and MAF-distributed).
fn suid_allowed(suid: u32) -> bool {
    matches!(suid, 12..=15 | 22..=25 | 32..=35)
}

fn single_target(suid: u32) -> bool {
    matches!(suid % 10, 2 | 3)
}

fn check_targets(state: &State, suid: u32, targets: &[String]) -> Result<Vec<String>, Refused> {
    if targets.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "targetIDs is empty"));
    }
    if single_target(suid) && targets.len() != 1 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "targetIDs must hold exactly one ID for SAEF and ESPrim",
        ));
    }
    let mut out = Vec::new();
    for t in targets {
        let Some(abs) = absolute_id(t, &state.cfg.sp_fqdn) else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "targetIDs must be SP-relative or absolute AE-IDs/CSE-IDs",
            ));
        };
        if !out.contains(&abs) {
            out.push(abs);
        }
    }
    Ok(out)
}

fn key_json(state: &State, reg: &KeyReg) -> Value {
    let mut v = json!({
        "relativeKeyID": reg.relative_id,
        "keyID": format!("{}@{}", reg.relative_id, state.cfg.fqdn),
        "expirationTime": format_time(reg.expires),
        "sourceID": reg.source_id,
        "suid": reg.suid,
        "targetIDs": reg.targets,
    });
    if let Some(a) = &reg.admin_fqdn {
        v["adminFQDN"] = json!(a);
    }
    v
}

/// Key Registration (TS-0003 clause 8.8.2.7), under the requester's client registration: the key
/// expires no later than that registration.
fn register_key(state: &State, conn: &Conn, body: &[u8]) -> Answer {
    let req: KeyRegRequest = match parse_body(body) {
        Ok(r) => r,
        Err(a) => return *a,
    };
    if let Err(a) = check_maf_fqdn(state, req.maf_fqdn.as_deref()) {
        return *a;
    }
    let now = (state.clock)();
    if let Err(a) = registered_client(&state.store(), conn, now) {
        return *a;
    }
    let Some(suid) = req.suid else {
        return error(StatusCode::BAD_REQUEST, "suid is missing");
    };
    if !suid_allowed(suid) {
        return error(
            StatusCode::BAD_REQUEST,
            "suid is not one the MAF registers keys for",
        );
    }
    let targets = match check_targets(state, suid, req.target_ids.as_deref().unwrap_or_default()) {
        Ok(t) => t,
        Err(a) => return *a,
    };
    let expires = match expiry(
        state,
        now,
        req.expiration_time.as_deref(),
        state.cfg.default_key_lifetime,
    ) {
        Ok(t) => t,
        Err(a) => return *a,
    };
    let (relative_id, value) = match &req.key_value {
        Some(value) => {
            let value = value.clone();
            if !(16..=64).contains(&value.len()) {
                return error(StatusCode::BAD_REQUEST, "keyValue must be 16 to 64 bytes");
            }
            let mut id = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut id);
            (kdf::hex_binary(&id), value)
        }
        None => {
            let (kc, kc_id) = kdf::export_split(&conn.exporter);
            (kdf::hex_binary(&kc_id), kc)
        }
    };
    let store = state.store();
    // Under the lock that also adds the key: a de-registration in between leaves no orphan.
    let client = match registered_client(&store, conn, now) {
        Ok(c) => c,
        Err(a) => return *a,
    };
    let reg = KeyReg {
        relative_id,
        source_id: conn.identity.clone(),
        suid,
        targets,
        admin_fqdn: req.admin_fqdn,
        // Never longer than the client registration it is made under, nor than the credential
        // of the association it is registered over (and, for Kc, derived from).
        expires: conn.cap(expires.min(client.expires)),
        client_reg: Some(client.reg_id),
        ceiling: conn.ceiling,
    };
    // An expired registration of this very KcID (same connection) makes room; others wait for the sweep.
    if let Err(e) = live_key(state, &store, &reg.relative_id) {
        return internal(e);
    }
    match store.add_key(&reg, &value) {
        Err(e) => return internal(e),
        Ok(false) => {
            return error(
                StatusCode::CONFLICT,
                "a key with this ID is already registered (one Kc per connection)",
            )
        }
        Ok(true) => {}
    }
    tracing::info!(target: "audit", peer = %conn.peer, source = %reg.source_id, key = %reg.relative_id, suid = reg.suid,
        targets = %reg.targets.join(","), "MAF key registered");
    answer(StatusCode::CREATED, key_json(state, &reg))
}

/// The client registration of the requester that a new key or credential is registered under
/// (valid now, expiring last); 403 when it has none.
fn registered_client(store: &Store, conn: &Conn, now: i64) -> Result<ClientReg, Refused> {
    match store.live_client(&conn.identity, now) {
        Err(e) => Err(Box::new(internal(e))),
        Ok(Some(c)) => Ok(c),
        Ok(None) => {
            tracing::warn!(target: "audit", peer = %conn.peer, client = %conn.identity, "MAF key registration refused: not a registered MAF client");
            Err(refuse(StatusCode::FORBIDDEN, "not a registered MAF client"))
        }
    }
}

/// A live key registration and the client registration it belongs to.
struct LiveKey {
    reg: KeyReg,
    client: ClientReg,
}

impl LiveKey {
    /// The key's expiry as answered: its own, never past its client registration's.
    fn expires(&self) -> i64 {
        self.reg.expires.min(self.client.expires)
    }
}

/// The live registration of `id` with its client registration, checked now: a key that has
/// expired, or whose client registration has expired or is gone, is purged and answered as unknown.
fn live_key(state: &State, store: &Store, id: &str) -> Result<Option<LiveKey>, String> {
    let now = (state.clock)();
    let Some(reg) = store.key(id)? else {
        return Ok(None);
    };
    let client = match &reg.client_reg {
        Some(c) => store.client(c)?,
        None => None,
    };
    let why = match &client {
        _ if reg.expires <= now => "MAF key expired and purged",
        Some(c) if c.expires > now && c.client_id == reg.source_id => {
            return Ok(client.map(|client| LiveKey { reg, client }))
        }
        Some(c) if c.expires <= now => "MAF key purged: its client registration has expired",
        _ => "MAF key purged: its client registration is gone",
    };
    store.delete_key(id)?;
    tracing::info!(target: "audit", key = %id, source = %reg.source_id, "{why}");
    Ok(None)
}

/// Before key `id` is handed out: if its source registered over a remote-provisioned Km, the
/// enrolment that Km came from must still hold at the MEF (it may have been revoked since the
/// handshake). An ended enrolment ends the client registration and its keys; an MEF that cannot be
/// asked hands out nothing (503). `None`: go on (the requester is no target, the source has no
/// remote-provisioned Km, or its enrolment holds).
async fn enrolment_of_source(state: &State, conn: &Conn, id: &str) -> Option<Answer> {
    let reg_id = {
        let store = state.store();
        let key = store.key(id).ok()??;
        // Only for a target: anyone else gets retrieve_key's refusal, and no MEF round trip.
        if !key.targets.contains(&conn.identity) {
            return None;
        }
        key.client_reg?
    };
    match enrolment_of_client(state, &reg_id).await? {
        Err(e) => Some(internal(e)),
        Ok(Enrolment::Holds) => None,
        Ok(Enrolment::Ended) => Some(error(StatusCode::NOT_FOUND, "no such key")),
        Ok(Enrolment::Unknown(why)) => {
            tracing::warn!(target: "audit", key = %id, reason = %why, "MAF key retrieval deferred: the enrolment cannot be confirmed at the MEF");
            Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the key's enrolment cannot be confirmed now",
            ))
        }
    }
}

/// Before a registration over a remote-provisioned Km (client, key or credential, or a change to
/// one): its enrolment must still hold at the MEF, asked at every such write (they are rare), so
/// that an enrolment revoked while the association stays open registers nothing more.
async fn enrolment_of_writer(state: &State, conn: &Conn) -> Option<Answer> {
    let mef = state.mef.as_ref()?;
    let km_id = conn.km_id.as_ref()?;
    if !state.remote_km(km_id) {
        return None;
    }
    match mef.confirm(km_id).await {
        Enrolment::Holds => None,
        Enrolment::Ended => {
            tracing::warn!(target: "audit", peer = %conn.peer, client = %conn.identity, ke_id = %km_id, "MAF request refused: the enrolment of this association no longer holds at the MEF");
            Some(error(
                StatusCode::FORBIDDEN,
                "the enrolment this association was authenticated with has ended",
            ))
        }
        Enrolment::Unknown(why) => {
            tracing::warn!(target: "audit", peer = %conn.peer, client = %conn.identity, ke_id = %km_id, reason = %why, "MAF request deferred: the enrolment cannot be confirmed at the MEF");
            Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the enrolment cannot be confirmed now",
            ))
        }
    }
}

/// The same before an E2E credential (TTP) is handed out to its registrant or a requester.
async fn enrolment_of_credential(state: &State, conn: &Conn, id: &str) -> Option<Answer> {
    let reg_id = {
        let store = state.store();
        let rel = ttp::relative_id(id, &state.cfg.fqdn)?;
        let reg = store.credential(rel).ok()??;
        if reg.registrant != conn.identity && !reg.requesters.contains(&conn.identity) {
            return None;
        }
        reg.client_reg?
    };
    let rsc = m2m_core::ResponseStatusCode::NotFound;
    match enrolment_of_client(state, &reg_id).await? {
        Err(e) => Some(internal(e)),
        Ok(Enrolment::Holds) => None,
        Ok(Enrolment::Ended) => Some(ttp::refused(rsc, "no such credential")),
        Ok(Enrolment::Unknown(why)) => {
            tracing::warn!(target: "audit", credential = %id, reason = %why, "TTP credential retrieval deferred: the enrolment cannot be confirmed at the MEF");
            Some(ttp::refused(
                m2m_core::ResponseStatusCode::TargetNotReachable,
                "the credential's enrolment cannot be confirmed now",
            ))
        }
    }
}

/// Whether the enrolment behind client registration `reg_id` still holds, when it was made over
/// a remote-provisioned Km (`None` otherwise: nothing to confirm). An ended enrolment ends the
/// registration with its keys and credentials.
async fn enrolment_of_client(state: &State, reg_id: &str) -> Option<Result<Enrolment, String>> {
    let mef = state.mef.as_ref()?;
    let km_id = {
        let store = state.store();
        store.client(reg_id).ok()??.km_id?
    };
    if !state.remote_km(&km_id) {
        return None;
    }
    let verdict = mef.confirm(&km_id).await;
    if let Enrolment::Ended = verdict {
        match state.store().delete_client(reg_id) {
            Ok(a) => {
                tracing::warn!(target: "audit", ke_id = %km_id, reg = %reg_id, keys = a.keys, credentials = a.credentials, "MAF client registration ended: its enrolment no longer holds at the MEF")
            }
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(verdict))
}

fn retrieve_key(state: &State, conn: &Conn, id: &str) -> Answer {
    let store = state.store();
    let (reg, expires, source_km_id) = match live_key(state, &store, id) {
        Err(e) => return internal(e),
        Ok(None) => {
            tracing::warn!(target: "audit", peer = %conn.peer, requester = %conn.identity, key = %id, "MAF key retrieval refused: unknown or expired key");
            return error(StatusCode::NOT_FOUND, "no such key");
        }
        Ok(Some(live)) => {
            let expires = live.expires();
            (live.reg, expires, live.client.km_id)
        }
    };
    if !reg.targets.contains(&conn.identity) {
        tracing::warn!(target: "audit", peer = %conn.peer, requester = %conn.identity, key = %id, source = %reg.source_id, "MAF key retrieval refused: not a target");
        return error(
            StatusCode::FORBIDDEN,
            "the requester is not a target of this key",
        );
    }
    let value = match store.key_value(&reg) {
        Ok(Some(v)) => v,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such key"),
        Err(e) => return internal(e),
    };
    tracing::info!(target: "audit", peer = %conn.peer, requester = %conn.identity, key = %id, source = %reg.source_id, suid = reg.suid, "MAF key retrieval granted");
    let mut v = json!({
        "keyValue": value.to_hex().as_str(),
        "expirationTime": format_time(expires),
        "sourceID": reg.source_id,
        "suid": reg.suid,
    });
    if let Some(a) = &reg.admin_fqdn {
        v["adminFQDN"] = json!(a);
    }
    // The source's credential, for the target's Credential-ID (TS-0003 clause 8.2.2.3); a
    // source that registered over a certificate has none.
    if let Some(km_id) = source_km_id {
        v["sourceKmID"] = json!(km_id);
    }
    answer(StatusCode::OK, v)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyUpdateRequest {
    expiration_time: Option<String>,
    #[serde(rename = "targetIDs")]
    target_ids: Option<Vec<String>>,
}

/// The live registration of `id` if the requester is its source; the refusal otherwise (404 for a
/// key that has expired or whose client registration has ended: it no longer exists).
fn own_key(
    state: &State,
    store: &Store,
    conn: &Conn,
    id: &str,
    what: &str,
) -> Result<LiveKey, Refused> {
    match live_key(state, store, id) {
        Err(e) => Err(Box::new(internal(e))),
        Ok(None) => {
            tracing::warn!(target: "audit", peer = %conn.peer, requester = %conn.identity, key = %id, "MAF key {what} refused: unknown or expired key");
            Err(refuse(StatusCode::NOT_FOUND, "no such key"))
        }
        Ok(Some(live)) if live.reg.source_id != conn.identity => {
            tracing::warn!(target: "audit", peer = %conn.peer, requester = %conn.identity, key = %id, source = %live.reg.source_id, "MAF key {what} refused: not the source");
            Err(refuse(
                StatusCode::FORBIDDEN,
                "only the source may change this key",
            ))
        }
        Ok(Some(live)) => Ok(live),
    }
}

/// Key Registration Update (TS-0003 clause 8.8.2.9), only by the source while the key and its
/// client registration live: an extension stops at the client registration's expiry.
fn update_key(state: &State, conn: &Conn, id: &str, body: &[u8]) -> Answer {
    let req: KeyUpdateRequest = match parse_body(body) {
        Ok(r) => r,
        Err(a) => return *a,
    };
    let store = state.store();
    let (mut reg, client) = match own_key(state, &store, conn, id, "update") {
        Ok(live) => (live.reg, live.client),
        Err(a) => return *a,
    };
    if let Some(t) = &req.target_ids {
        reg.targets = match check_targets(state, reg.suid, t) {
            Ok(t) => t,
            Err(a) => return *a,
        };
    }
    if let Some(e) = &req.expiration_time {
        let now = (state.clock)();
        reg.expires = match expiry(state, now, Some(e), state.cfg.default_key_lifetime) {
            // Never past the client registration, the key's own ceiling, or this association's.
            Ok(t) => conn.cap(reg.ceiling.map_or(t, |c| t.min(c)).min(client.expires)),
            Err(a) => return *a,
        };
    }
    if let Err(e) = store.update_key(&reg) {
        return internal(e);
    }
    tracing::info!(target: "audit", peer = %conn.peer, source = %conn.identity, key = %id, targets = %reg.targets.join(","), "MAF key registration updated");
    answer(StatusCode::OK, key_json(state, &reg))
}

fn deregister_key(state: &State, conn: &Conn, id: &str) -> Answer {
    let store = state.store();
    if let Err(a) = own_key(state, &store, conn, id, "de-registration") {
        return *a;
    }
    if let Err(e) = store.delete_key(id) {
        return internal(e);
    }
    tracing::info!(target: "audit", peer = %conn.peer, source = %conn.identity, key = %id, "MAF key de-registered");
    no_content()
}
