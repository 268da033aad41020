//! The BSF's two listeners: Ub, where devices bootstrap (HTTP Digest AKA, TS 24.109 clause 4),
//! and Zn, where NAFs fetch the NAF-specific key of a B-TID (TS 33.220 clause 4.5.3) over mutual
//! TLS. The exchanges are described in the [module documentation](super).

use super::config::{known_naf, BsfConfig};
use super::store::{now_secs, Session, Store};
use crate::provisioned_keys::{read_storage_key, WhenMissing};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use m2m_security::certificates::{identity_of, CertIdentity};
use m2m_security::gba::bootstrapping::{self, Pending, Subscriber, Verdict};
use m2m_security::gba::digest_aka;
use m2m_security::gba::key_derivation::{ks_naf, NafId};
use m2m_security::tls::{self, Authenticated, ServerTlsConfig};
use m2m_transport::{Binder, Connection, Listener, NoAssociation, Security, Server};
use openssl::ssl::{SslContext, SslRef};
use openssl::x509::X509;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const MAX_BODY: usize = 16 * 1024;
/// Challenges waiting for an answer, in all (one per subscriber).
const MAX_PENDING: usize = 10_000;
/// The media type of the BSF's 200 answer (TS 24.109 Annex C).
pub const BOOTSTRAPPING_INFO_TYPE: &str = "application/vnd.3gpp.bsf+xml";

/// A BSF serving on its two sockets.
pub struct RunningBsf {
    pub ub_addr: SocketAddr,
    pub zn_addr: SocketAddr,
    servers: Vec<Server>,
    grace: Duration,
}

impl RunningBsf {
    /// Stops accepting, lets the requests in progress finish, then ends every connection.
    pub async fn shutdown(self) {
        for s in self.servers {
            s.shutdown(self.grace).await;
        }
    }
}

/// The BSF's state.
pub struct Bsf {
    config: BsfConfig,
    store: Store,
    zn_tls: SslContext,
    /// How certificates name CSEs, and the NAF FQDNs of `nafs`: derived once, at start.
    naming: m2m_security::certificates::CseNaming,
    naf_fqdns: Vec<String>,
    pending: Mutex<Challenges>,
}

/// The challenges waiting for an answer: at most one per subscriber, sent again to whoever asks
/// until it is answered or expires, so that asking spends no SQN (an attacker naming an IMPI
/// could otherwise push the subscriber's SQN out of the USIM's window).
#[derive(Default)]
struct Challenges {
    /// nonce -> the challenge, until when it may be answered, its WWW-Authenticate.
    by_nonce: HashMap<String, (Pending, Instant, String)>,
    /// IMPI -> the nonce of its challenge.
    by_impi: HashMap<String, String>,
}

impl Challenges {
    fn purge(&mut self, now: Instant) {
        self.by_nonce.retain(|_, (_, until, _)| *until > now);
        let live = &self.by_nonce;
        self.by_impi.retain(|_, nonce| live.contains_key(nonce));
    }

    /// The WWW-Authenticate of the subscriber's live challenge.
    fn of(&mut self, impi: &str, now: Instant) -> Option<String> {
        self.purge(now);
        let nonce = self.by_impi.get(impi)?;
        self.by_nonce.get(nonce).map(|(_, _, www)| www.clone())
    }

    fn take(&mut self, nonce: &str, now: Instant) -> Option<Pending> {
        let (p, until, _) = self.by_nonce.remove(nonce)?;
        if self.by_impi.get(&p.impi).is_some_and(|n| n == nonce) {
            self.by_impi.remove(&p.impi);
        }
        (until > now).then_some(p)
    }

    /// Drops the subscriber's challenge (its SQN is no longer the next one).
    fn forget(&mut self, impi: &str) {
        if let Some(nonce) = self.by_impi.remove(impi) {
            self.by_nonce.remove(&nonce);
        }
    }
}

/// A NAF on Zn: the identity its certificate names.
struct NafPeer {
    addr: SocketAddr,
    identity: CertIdentity,
}

impl std::fmt::Display for NafPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "certificate -> {}", self.identity)
    }
}

struct ZnBinder {
    bsf: Arc<Bsf>,
}

impl Binder for ZnBinder {
    type Association = NafPeer;

    fn bind(&self, proof: Authenticated, _: &SslRef, addr: SocketAddr) -> Result<NafPeer, String> {
        let Authenticated::Certificate { leaf_der } = proof else {
            return Err("NAFs authenticate with certificates".into());
        };
        let cert = X509::from_der(&leaf_der).map_err(|e| e.to_string())?;
        let identity = identity_of(&cert, &self.bsf.naming)?;
        Ok(NafPeer { addr, identity })
    }
}

/// Opens the store of a configuration (the storage key file is created when missing).
pub fn open_store(config: &BsfConfig) -> Result<Store, String> {
    let key = read_storage_key(&config.storage_key, WhenMissing::Create)?;
    Store::open(&config.storage, &key)
}

impl Bsf {
    /// Checks the configuration, opens the store and builds the Zn TLS context.
    pub fn new(config: BsfConfig) -> Result<Arc<Bsf>, String> {
        m2m_security::secure_environment::check_private_file(&config.private_key)?;
        let zn_tls = tls::server_context(&ServerTlsConfig {
            cipher_suites: tls::CERTIFICATE_SUITES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            tls13: false,
            certificate_chain: Some(config.certificate.clone()),
            private_key: Some(config.private_key.clone()),
            trusted_ca: Some(config.trusted_ca.clone()),
            psk: None,
            revocation: crate::revocation_list(config.crl.as_deref(), Some(&config.trusted_ca))?,
        })?;
        let store = open_store(&config)?;
        Ok(Arc::new(Bsf {
            naming: config.naming()?,
            naf_fqdns: config.naf_fqdns()?,
            config,
            store,
            zn_tls,
            pending: Mutex::new(Challenges::default()),
        }))
    }

    /// Binds both listeners and serves until the returned [`RunningBsf`] is shut down or dropped.
    pub async fn start(self: &Arc<Self>) -> Result<RunningBsf, String> {
        let limits = self.config.limits.clone();
        let grace = Duration::from_millis(limits.shutdown_grace_ms);
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|e| format!("listen {addr}: {e}"))
        };
        let me = Arc::clone(self);
        let ub = Server::spawn(
            Listener {
                name: "bsf-ub",
                tcp: bind(self.config.ub_listen.clone()).await?,
                security: Security::Plain,
                limits: limits.clone(),
            },
            Arc::new(NoAssociation),
            move |conn: Connection<m2m_transport::acceptor::Never>| {
                let me = Arc::clone(&me);
                let peer = conn.peer;
                let svc = service_fn(move |req| {
                    let me = Arc::clone(&me);
                    async move { Ok::<_, Infallible>(me.ub(peer, req).await) }
                });
                m2m_transport::http::serve(conn, svc)
            },
        )
        .map_err(|e| format!("BSF Ub listener: {e}"))?;
        let me = Arc::clone(self);
        let zn = Server::spawn(
            Listener {
                name: "bsf-zn",
                tcp: bind(self.config.zn_listen.clone()).await?,
                security: Security::Tls(self.zn_tls.clone()),
                limits,
            },
            Arc::new(ZnBinder {
                bsf: Arc::clone(self),
            }),
            move |conn: Connection<NafPeer>| {
                let me = Arc::clone(&me);
                async move {
                    let Some(naf) = conn.association.clone() else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        let me = Arc::clone(&me);
                        let naf = Arc::clone(&naf);
                        async move { Ok::<_, Infallible>(me.zn(&naf, req).await) }
                    });
                    m2m_transport::http::serve(conn, svc).await
                }
            },
        )
        .map_err(|e| format!("BSF Zn listener: {e}"))?;
        Ok(RunningBsf {
            ub_addr: ub.local_addr,
            zn_addr: zn.local_addr,
            servers: vec![ub, zn],
            grace,
        })
    }

    fn realm(&self) -> &str {
        &self.config.fqdn
    }

    /// Ub: the bootstrapping run of TS 24.109 clause 4.4.
    async fn ub(&self, peer: SocketAddr, req: hyper::Request<Incoming>) -> Response {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        if parts.uri.path() != "/" {
            return plain(StatusCode::NOT_FOUND, "bootstrapping is at /");
        }
        if parts.method != Method::GET && parts.method != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        let authorization = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(authorization) = authorization else {
            return plain(
                StatusCode::UNAUTHORIZED,
                "an Authorization header naming the IMPI is required",
            );
        };
        let Ok(p) = digest_aka::parse(authorization) else {
            return plain(StatusCode::BAD_REQUEST, "malformed Authorization");
        };
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
        let impi = get("username").to_owned();
        if impi.is_empty() {
            return plain(StatusCode::BAD_REQUEST, "Authorization names no IMPI");
        }
        let nonce = get("nonce");
        if nonce.is_empty() {
            return self.challenge(peer, &impi);
        }
        let Some(pending) = self.take_pending(nonce) else {
            // Unknown, expired or answered already: a replayed answer gets a fresh challenge.
            tracing::warn!(target: "audit", peer = %peer, impi = %impi, "bootstrapping: the nonce is unknown, expired or used; challenged again");
            return self.challenge(peer, &impi);
        };
        if get("response").is_empty() && !p.contains_key("auts") {
            // TS 24.109 clause 4.4: the UE could not authenticate the network (AUTN's MAC).
            tracing::warn!(target: "audit", peer = %peer, impi = %impi, "bootstrapping refused by the device: the network was not authenticated");
            return plain(StatusCode::FORBIDDEN, "bootstrapping ended by the device");
        }
        let subscriber = match self.store.subscriber(&pending.impi) {
            Ok(Some(s)) => s,
            Ok(None) => return plain(StatusCode::FORBIDDEN, "unknown subscriber"),
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "BSF storage");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "storage failure");
            }
        };
        let sub = Subscriber {
            impi: subscriber.impi,
            milenage: subscriber.milenage,
            next_sqn: 0,
            amf: subscriber.amf,
        };
        let uri = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let request = bootstrapping::Request {
            method: parts.method.as_str(),
            uri,
            body: &body,
        };
        match bootstrapping::verify(
            pending,
            &sub,
            self.realm(),
            &self.config.fqdn,
            authorization,
            request,
        ) {
            Verdict::Bootstrapped {
                b_tid,
                ks,
                rand,
                auth_info,
            } => {
                let now = now_secs();
                let expires = now + i64::try_from(self.config.lifetime_seconds).unwrap_or(i64::MAX);
                let session = Session {
                    b_tid: b_tid.clone(),
                    impi: sub.impi.clone(),
                    rand,
                    ks,
                    bootstrapped: now,
                    expires,
                };
                if let Err(e) = self.store.insert_session(&session) {
                    tracing::error!(target: "audit", error = %e, "BSF storage: the bootstrapped key was not kept");
                    return plain(StatusCode::INTERNAL_SERVER_ERROR, "storage failure");
                }
                let lifetime = chrono::DateTime::from_timestamp(expires, 0)
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let body = bootstrapping::bootstrapping_info(&b_tid, &lifetime);
                tracing::info!(target: "audit", peer = %peer, impi = %sub.impi, b_tid = %b_tid, lifetime = %lifetime, "bootstrapped");
                let mut r = hyper::Response::new(Full::new(Bytes::from(body.clone())));
                let h = r.headers_mut();
                h.insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(BOOTSTRAPPING_INFO_TYPE),
                );
                if let Ok(v) =
                    hyper::header::HeaderValue::from_str(&auth_info.header(body.as_bytes()))
                {
                    h.insert("authentication-info", v);
                }
                r
            }
            Verdict::Resynchronise { sqn_ms } => {
                self.challenges().forget(&sub.impi);
                if let Err(e) = self.store.resynchronise(&sub.impi, sqn_ms) {
                    tracing::error!(target: "audit", error = %e, "BSF storage");
                    return plain(StatusCode::INTERNAL_SERVER_ERROR, "storage failure");
                }
                tracing::info!(target: "audit", peer = %peer, impi = %sub.impi, "bootstrapping: SQN resynchronised");
                self.challenge(peer, &sub.impi)
            }
            Verdict::Refused(why) => {
                tracing::warn!(target: "audit", peer = %peer, impi = %sub.impi, reason = why, "bootstrapping refused; challenged again");
                self.challenge(peer, &sub.impi)
            }
        }
    }

    fn challenges(&self) -> std::sync::MutexGuard<'_, Challenges> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A 401 with the subscriber's live challenge, or a fresh authentication vector; 403 for an
    /// IMPI no subscriber has.
    fn challenge(&self, peer: SocketAddr, impi: &str) -> Response {
        if let Some(www) = self.challenges().of(impi, Instant::now()) {
            return unauthorized(&www);
        }
        let record = match self.store.subscriber(impi) {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::warn!(target: "audit", peer = %peer, impi = %impi, "bootstrapping refused: unknown subscriber");
                return plain(StatusCode::FORBIDDEN, "unknown subscriber");
            }
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "BSF storage");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "storage failure");
            }
        };
        // The SQN is spent in the store before the challenge leaves.
        let sqn = match self.store.take_sqn(impi) {
            Ok(Some(n)) => n,
            Ok(None) => return plain(StatusCode::FORBIDDEN, "unknown subscriber"),
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "BSF storage");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "storage failure");
            }
        };
        let mut sub = Subscriber {
            impi: record.impi,
            milenage: record.milenage,
            next_sqn: sqn,
            amf: record.amf,
        };
        let mut rand = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut rand);
        let Some((pending, www)) = bootstrapping::challenge(&mut sub, self.realm(), rand) else {
            tracing::error!(target: "audit", impi = %impi, "bootstrapping refused: the subscriber's SQN is spent");
            return plain(StatusCode::FORBIDDEN, "no authentication vector left");
        };
        match self.keep_pending(pending, www) {
            Some(www) => unauthorized(&www),
            None => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many bootstrappings in progress",
            ),
        }
    }

    /// Keeps a new challenge; returns the WWW-Authenticate to send (another request's, should
    /// one have been kept for the subscriber meanwhile), `None` when too many are waiting.
    fn keep_pending(&self, p: Pending, www: String) -> Option<String> {
        let now = Instant::now();
        let mut c = self.challenges();
        if let Some(www) = c.of(&p.impi, now) {
            return Some(www);
        }
        if c.by_nonce.len() >= MAX_PENDING {
            return None;
        }
        let until = now + Duration::from_secs(self.config.challenge_seconds);
        c.by_impi.insert(p.impi.clone(), p.nonce.clone());
        c.by_nonce.insert(p.nonce.clone(), (p, until, www.clone()));
        Some(www)
    }

    /// The challenge of `nonce`, once: an answer is checked against it at most one time.
    fn take_pending(&self, nonce: &str) -> Option<Pending> {
        self.challenges().take(nonce, Instant::now())
    }

    /// Zn: a NAF asks for the NAF-specific key of a B-TID.
    async fn zn(&self, naf: &NafPeer, req: hyper::Request<Incoming>) -> Response {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Req {
            b_tid: String,
            naf_fqdn: String,
            ua_security_protocol_id: String,
        }
        let (parts, body) = req.into_parts();
        if parts.method != Method::POST || parts.uri.path() != "/zn/naf-key" {
            return json_error(StatusCode::NOT_FOUND, "POST /zn/naf-key");
        }
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return json_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        let req: Req = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("request: {e}")),
        };
        let refuse = |status: StatusCode, why: &str| {
            tracing::warn!(target: "audit", peer = %naf.addr, naf = %naf.identity, b_tid = %req.b_tid, reason = %why, "NAF key refused");
            json_error(status, why)
        };
        // TS 33.220 clause 4.5.3: only a NAF the BSF knows, and only for its own FQDN.
        let Some(fqdn) = known_naf(&naf.identity, &self.naming, &self.naf_fqdns) else {
            return refuse(StatusCode::FORBIDDEN, "not a NAF of this BSF");
        };
        if !fqdn.eq_ignore_ascii_case(&req.naf_fqdn) {
            return refuse(
                StatusCode::FORBIDDEN,
                "the NAF FQDN is not the one the certificate names",
            );
        }
        let ua: [u8; 5] = match hex::decode(&req.ua_security_protocol_id)
            .ok()
            .and_then(|v| v.try_into().ok())
        {
            Some(u) => u,
            None => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "uaSecurityProtocolId is not 5 octets in hex",
                )
            }
        };
        let session = match self.store.session(&req.b_tid) {
            Ok(Some(s)) => s,
            Ok(None) => return refuse(StatusCode::NOT_FOUND, "unknown or expired B-TID"),
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "BSF storage");
                return json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage failure");
            }
        };
        let ae_id = match self.store.subscriber(&session.impi) {
            Ok(Some(s)) => s.ae_id,
            Ok(None) => return refuse(StatusCode::NOT_FOUND, "the subscriber is gone"),
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "BSF storage");
                return json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage failure");
            }
        };
        let naf_id = NafId {
            fqdn: fqdn.clone(),
            ua_protocol: ua,
        };
        let Some(key) = ks_naf(&session.ks, &session.rand, &session.impi, &naf_id) else {
            return json_error(StatusCode::BAD_REQUEST, "identifiers too long for the KDF");
        };
        let time = |t: i64| {
            chrono::DateTime::from_timestamp(t, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        tracing::info!(target: "audit", peer = %naf.addr, naf = %fqdn, b_tid = %req.b_tid, impi = %session.impi, "NAF key delivered");
        let key_hex = zeroize::Zeroizing::new(hex::encode(&key[..]));
        let mut r = hyper::Response::new(Full::new(Bytes::from(
            json!({
                "ksNaf": key_hex.as_str(),
                "impi": session.impi,
                "aeId": ae_id,
                "bootstrapTime": time(session.bootstrapped),
                "keyLifetime": time(session.expires),
                "lifetime": (session.expires - now_secs()).max(0),
            })
            .to_string(),
        )));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        r
    }
}

type Response = hyper::Response<Full<Bytes>>;

fn unauthorized(www: &str) -> Response {
    let mut r = plain(StatusCode::UNAUTHORIZED, "");
    if let Ok(v) = hyper::header::HeaderValue::from_str(www) {
        r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, v);
    }
    r
}

fn plain(status: StatusCode, msg: &str) -> Response {
    let mut r = hyper::Response::new(Full::new(Bytes::from(msg.to_owned())));
    *r.status_mut() = status;
    r
}

fn json_error(status: StatusCode, msg: &str) -> Response {
    let mut r = hyper::Response::new(Full::new(Bytes::from(json!({ "error": msg }).to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}
