//! The MQTT binding of the CSE (TS-0010): the CSE is a client of its MQTT server over TLS-PSK
//! (clause 7.3: the server proves the key, as the CSE does), subscribes to the request topics of
//! its CSE-ID (clause 6.4.3) and answers each request on its response topic, in the serialization
//! the topic names (clause 6.5.3).
//!
//! Who sent a request is read from its topic: the MQTT server authenticated the publisher by
//! its PSK and let it publish only on its own topics ([`crate::mqtt_broker`]'s ACL, clause 7.4).
//! A request topic names an entity: the request is handled as over an association bound to
//! that entity, so the impersonation check holds its From to it (4106 otherwise, clause 7.2). A
//! registration topic names a Credential-ID: the request is handled as over an association of
//! that credential (its PSK row's binding, else the registration rules decide).

use crate::association::{Association, Peer, SaeMode};
use crate::cse::Cse;
use crate::mqtt_broker::AclFile;
use m2m_core::mqtt_binding::{topic_entities, topic_id, Kind, Topic};
use m2m_core::{primitive_message, EntityId, M2mError, M2mResult, Originator, Response};
use m2m_security::credentials::{CredentialId, KpsaId};
use m2m_security::tls::PskLookup;
use m2m_transport::mqtt::{self, Message, Publisher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Requests over MQTT handled at once; more wait for a place (the server holds them meanwhile).
const MAX_IN_FLIGHT: usize = 64;
/// The largest MQTT packet read or written (the request body limit plus the topic and header).
fn max_packet(cse: &Cse) -> usize {
    cse.config().http.max_body_bytes + 4096
}

/// What the binding needs to connect: the server, this CSE's PSK there, the psk lookup table
/// that names the credentials of registration topics, and the ACL file it keeps.
pub(crate) struct Binding {
    url: m2m_core::mqtt_binding::MqttUrl,
    identity: String,
    key: Zeroizing<Vec<u8>>,
    keep_alive: Duration,
    /// The psk lookup table (set at start, once the listeners have theirs).
    pub(crate) psk: Option<Arc<dyn PskLookup>>,
    pub(crate) acl: Option<Arc<AclFile>>,
    /// This CSE's ID as a topic level.
    receiver: String,
    /// The session's publisher while connected: notifications go out through it.
    publisher: std::sync::Mutex<Option<Publisher>>,
    /// Requests this CSE sent and awaits the answer of: Request Identifier -> (the receiver's
    /// topic level, where its answer must come from).
    pending: std::sync::Mutex<
        std::collections::HashMap<String, (String, tokio::sync::oneshot::Sender<Response>)>,
    >,
}

/// Requests of this CSE awaiting their answer over MQTT at once; more are refused (5103).
const MAX_PENDING: usize = 4096;

impl Binding {
    /// Reads `[mqtt]`: the key of `psk_identity` from the secure environments (refused at start
    /// when it has none).
    pub(crate) fn from_config(
        cse: &Cse,
        environments: &[Box<dyn m2m_security::secure_environment::SecureEnvironment>],
    ) -> anyhow::Result<Option<Binding>> {
        let Some(mqtt) = &cse.config().mqtt else {
            return Ok(None);
        };
        let url = mqtt.url()?;
        let entry = environments
            .iter()
            .find_map(|se| se.psk(&mqtt.psk_identity))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "mqtt.psk_identity '{}' has no PSK row in [security]",
                    mqtt.psk_identity
                )
            })?;
        let rows = crate::mqtt_broker::rows(environments, &cse.id.home);
        Ok(Some(Binding {
            url,
            identity: mqtt.psk_identity.clone(),
            key: Zeroizing::new(entry.key.expose().to_vec()),
            keep_alive: Duration::from_secs(mqtt.keep_alive_seconds),
            psk: None,
            acl: AclFile::new(mqtt, rows),
            receiver: topic_id(&cse.id.entity.sp_relative()),
            publisher: Default::default(),
            pending: Default::default(),
        }))
    }
}

/// Connects, serves until the connection ends, connects again (1 s, doubling to 30 s between
/// failed attempts), for as long as the CSE runs.
pub(crate) async fn run(cse: std::sync::Weak<Cse>, binding: Arc<Binding>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(strong) = cse.upgrade() else {
            return;
        };
        match connect(&strong, &binding).await {
            Ok((publisher, messages, broker)) => {
                tracing::info!(target: "audit", broker = %binding.url.authority(), identity = %binding.identity, "MQTT server associated (TLS-PSK)");
                backoff = Duration::from_secs(1);
                drop(strong);
                *lock(&binding.publisher) = Some(publisher.clone());
                serve(cse.clone(), &binding, publisher, messages, broker).await;
                *lock(&binding.publisher) = None;
                tracing::warn!(broker = %binding.url.authority(), "MQTT connection ended; connecting again");
            }
            Err(e) => {
                tracing::warn!(broker = %binding.url.authority(), error = %e, "MQTT server not reached");
                drop(strong);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// TLS-PSK to the server (which must prove the key), then the MQTT session with the
/// subscriptions of clause 6.4.3 (requests and registration requests for this CSE).
async fn connect(
    cse: &Cse,
    b: &Binding,
) -> Result<(Publisher, tokio::sync::mpsc::Receiver<Message>, SocketAddr), String> {
    let context = m2m_security::tls::client_context(&m2m_security::tls::ClientTlsConfig {
        cipher_suites: m2m_security::tls::PSK_SUITES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        psk: Some((b.identity.clone(), b.key.clone())),
        ..Default::default()
    })?;
    let timeout = Duration::from_millis(cse.config().limits.outgoing_timeout_ms);
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(b.url.authority()))
        .await
        .map_err(|_| "TCP connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let broker = tcp.peer_addr().map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let tls = m2m_transport::connect(
        &context,
        tcp,
        &m2m_transport::PeerCheck::PreSharedKey,
        timeout,
    )
    .await?;
    let options = mqtt::Options {
        // Clause 6.3.3: C:: and the CSE-ID.
        client_id: format!("C::{}", b.receiver),
        clean_session: false,
        keep_alive: b.keep_alive,
        subscriptions: vec![
            Topic::receiver_filter(Kind::Request, &b.receiver),
            Topic::receiver_filter(Kind::RegistrationRequest, &b.receiver),
            // The answers to this CSE's own requests (notifications), clause 6.5.4.
            Topic::originator_filter(Kind::Response, &b.receiver),
        ],
        max_packet: max_packet(cse),
        timeout,
    };
    let (publisher, messages) = mqtt::open(tls, &options).await.map_err(|e| e.to_string())?;
    Ok((publisher, messages, broker))
}

/// Each message in a task of its own, at most [`MAX_IN_FLIGHT`] at once.
async fn serve(
    cse: std::sync::Weak<Cse>,
    b: &Arc<Binding>,
    publisher: Publisher,
    mut messages: tokio::sync::mpsc::Receiver<Message>,
    broker: SocketAddr,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    while let Some(message) = messages.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(cse) = cse.upgrade() else {
            return;
        };
        let (b, publisher) = (Arc::clone(b), publisher.clone());
        tokio::spawn(async move {
            let _slot = slot;
            answer(&cse, &b, &publisher, message, broker).await;
        });
    }
}

/// One message: a request of a topic of this CSE, handled and answered on its response topic.
async fn answer(
    cse: &Arc<Cse>,
    b: &Binding,
    publisher: &Publisher,
    m: Message,
    broker: SocketAddr,
) {
    let topic = match Topic::parse(&m.topic) {
        Ok(t) if t.kind == Kind::Response && t.originator == b.receiver => {
            return answered(b, &t, &m.payload);
        }
        Ok(t) if t.receiver == b.receiver => t,
        Ok(_) | Err(_) => {
            tracing::debug!(topic = %m.topic, "MQTT message on a topic that is not a request to this CSE");
            return;
        }
    };
    if !matches!(topic.kind, Kind::Request | Kind::RegistrationRequest) {
        return;
    }
    let ser = topic.serialization;
    let mut resp = match primitive_message::decode_request(
        &m.payload,
        ser,
        m2m_core::schema::is_attribute_name,
    ) {
        Ok(req) => {
            let from = req.from.clone();
            let mut resp = match peer_of(cse, b, &topic, &req, broker) {
                Ok(peer) => cse.handle(req, peer).await,
                Err(e) => refused(cse, &e, req.rqi.clone()),
            };
            if resp.to.is_none() {
                resp.to = from;
            }
            resp
        }
        Err(e) => refused(
            cse,
            &e,
            primitive_message::request_identifier(&m.payload, ser),
        ),
    };
    if resp.from.is_none() {
        resp.from = Some(cse.id.entity.sp_relative());
    }
    let body = primitive_message::encode_response(&resp, ser);
    if let Err(e) = publisher.publish(&topic.answer().to_string(), body).await {
        tracing::debug!(error = %e, "MQTT response not sent");
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The answer to a request this CSE sent: taken only from the topic of the entity it was sent
/// to (any other entity could publish an answer with a guessed Request Identifier on its own).
fn answered(b: &Binding, topic: &Topic, payload: &[u8]) {
    let Ok(resp) = primitive_message::decode_response(payload, topic.serialization) else {
        tracing::debug!(topic = %topic, "malformed MQTT answer");
        return;
    };
    let mut pending = lock(&b.pending);
    match pending.get(&resp.rqi) {
        Some((receiver, _)) if *receiver == topic.receiver => {
            if let Some((_, tx)) = pending.remove(&resp.rqi) {
                let _ = tx.send(resp);
            }
        }
        Some(_) => {
            tracing::warn!(target: "audit", topic = %topic, "MQTT answer from an entity the request was not sent to, ignored");
        }
        None => {}
    }
}

/// Whether a point of access is an MQTT one (TS-0010 clause 6.6).
pub(crate) fn is_mqtt_url(s: &str) -> bool {
    s.starts_with("mqtts://") || s.starts_with("mqtt://")
}

fn unreachable(why: impl Into<String>) -> M2mError {
    M2mError::new(m2m_core::ResponseStatusCode::TargetNotReachable, why)
}

/// Sends `req` to the entity `target` (an AE whose pointOfAccess is `poa`) through this CSE's
/// MQTT server: published on `/oneM2M/req/<csi>/<target>/<ser>`, its answer awaited on the
/// response topic of that entity (clause 6.4.3). Only the server this CSE is a client of can be
/// reached.
pub(crate) async fn send(
    cse: &Cse,
    poa: &str,
    target: &EntityId,
    req: &m2m_core::Request,
    ser: m2m_core::serialization::Serialization,
) -> M2mResult<Response> {
    let b = cse
        .mqtt
        .get()
        .ok_or_else(|| unreachable("this CSE has no MQTT binding"))?;
    let url = m2m_core::mqtt_binding::MqttUrl::parse(poa).map_err(|e| unreachable(e.dbg))?;
    if (url.host.as_str(), url.port) != (b.url.host.as_str(), b.url.port) {
        return Err(unreachable(
            "the pointOfAccess names an MQTT server this CSE is not a client of",
        ));
    }
    let level = target
        .local_stem(&cse.id.home)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|| topic_id(&target.as_seen_from(&cse.id.home)));
    let publisher = lock(&b.publisher)
        .clone()
        .ok_or_else(|| unreachable("not connected to the MQTT server"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let mut pending = lock(&b.pending);
        if pending.len() >= MAX_PENDING || pending.contains_key(&req.rqi) {
            return Err(unreachable("too many requests awaiting an MQTT answer"));
        }
        pending.insert(req.rqi.clone(), (level.clone(), tx));
    }
    let topic = Topic::new(Kind::Request, &b.receiver, &level, ser);
    let body = primitive_message::encode_request(req, ser)?;
    let timeout = Duration::from_millis(cse.config().limits.outgoing_timeout_ms);
    let outcome = match publisher.publish(&topic.to_string(), body).await {
        Ok(()) => tokio::time::timeout(timeout, rx)
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    };
    lock(&b.pending).remove(&req.rqi);
    outcome.ok_or_else(|| unreachable("no answer over MQTT"))
}

fn refused(cse: &Cse, e: &M2mError, rqi: String) -> Response {
    let mut resp = Response::error(e, rqi);
    cse.stamp(&mut resp);
    resp
}

/// The peer a request topic names: an association bound to the entity that published, or to
/// the credential of a registration topic.
fn peer_of(
    cse: &Cse,
    b: &Binding,
    topic: &Topic,
    req: &m2m_core::Request,
    broker: SocketAddr,
) -> M2mResult<Peer> {
    let association = match topic.kind {
        Kind::RegistrationRequest => registration_association(b, &topic.originator)?,
        _ => {
            let entity = sender(cse, &topic.originator, req)?;
            let name = entity
                .segments()
                .last()
                .copied()
                .unwrap_or_default()
                .to_owned();
            Association {
                mode: SaeMode::MqttServer,
                credential: CredentialId::new(CredentialId::TYPE_MQTT_TOPIC, &name)
                    .map_err(|_| not_the_sender("the topic names no entity"))?,
                entity: Some(entity),
            }
        }
    };
    Ok(Peer::associated(broker, Arc::new(association)))
}

/// 4106: the From is not who published (why: audit log only).
fn not_the_sender(why: impl std::fmt::Display) -> M2mError {
    tracing::warn!(target: "audit", reason = %why, "originator refused (MQTT)");
    M2mError::new(
        m2m_core::ResponseStatusCode::OriginatorNotAuthenticated,
        "the originator is not the entity the security association authenticated",
    )
}

/// Which entity published on a request topic whose originator level is `level`: the From, when
/// the level names it; nobody else (4106). Relaying for another originator over MQTT (Mcc) is not
/// taken: a C-stem level also reads as a CSE-ID, and an AE must not pass for a CSE. A CSE is
/// taken as the sender only when a PSK row of this CSE is bound to it (the MQTT server then lets
/// only that credential publish as it) and no AE registered here has that stem.
fn sender(cse: &Cse, level: &str, req: &m2m_core::Request) -> M2mResult<EntityId> {
    let home = &cse.id.home;
    let refuse = || {
        not_the_sender(format_args!(
            "From {} published on the request topic of {level}",
            req.from.as_deref().unwrap_or("(none)")
        ))
    };
    let Originator::Entity(from) = Originator::parse(req.from.as_deref(), home)? else {
        return Err(refuse());
    };
    if !topic_entities(level, home).contains(&from) || from.is_home_cse(home) {
        return Err(refuse());
    }
    if from.is_cse() {
        let stem_registered = m2m_core::AeStem::parse(level)
            .ok()
            .is_some_and(|stem| matches!(cse.store.get(stem.as_str()), Ok(Some(_))));
        if cse.credential_bound_to(&from).is_none() || stem_registered {
            return Err(refuse());
        }
    }
    Ok(from)
}

/// The association of a registration topic's Credential-ID (clause 6.4.4): a KpsaID's PSK row
/// (its binding, as over TLS), or a credential the CSE has no row of, bound to nothing (the
/// registration rules decide what it may register).
fn registration_association(b: &Binding, level: &str) -> M2mResult<Association> {
    let credential = CredentialId::parse(level).map_err(|_| {
        not_the_sender(format_args!(
            "registration topic with Credential-ID {level:?}"
        ))
    })?;
    let row = (credential.type_id() == CredentialId::TYPE_KPSA_ID)
        .then(|| KpsaId::parse(credential.value()).ok())
        .flatten()
        .and_then(|kpsa| b.psk.as_ref()?.lookup(&kpsa.to_string(), None));
    Ok(match row {
        Some(key) => Association {
            mode: SaeMode::MqttServer,
            ..key.association
        },
        None => Association {
            mode: SaeMode::MqttServer,
            credential,
            entity: None,
        },
    })
}
