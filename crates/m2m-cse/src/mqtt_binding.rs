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
    /// This CSE's key at the server, asked of the secure environments at each connection.
    key: m2m_security::tls::PskSource,
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
        environments: &m2m_security::secure_environment::SharedEnvironments,
    ) -> anyhow::Result<Option<Binding>> {
        use m2m_security::secure_environment::{holds_psk, psk_source};
        let Some(mqtt) = &cse.config().mqtt else {
            return Ok(None);
        };
        let url = mqtt.url()?;
        if !holds_psk(environments, &mqtt.psk_identity) {
            anyhow::bail!(
                "mqtt.psk_identity '{}' has no PSK row in [security]",
                mqtt.psk_identity
            );
        }
        let own = KpsaId::parse(&mqtt.psk_identity).ok();
        let rows =
            crate::mqtt_broker::rows(environments, &cse.id.home, &|k| Some(k) == own.as_ref());
        Ok(Some(Binding {
            url,
            identity: mqtt.psk_identity.clone(),
            key: psk_source(environments, &mqtt.psk_identity),
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
                let subscriber = publisher.clone();
                let filters = vec![
                    Topic::receiver_filter(Kind::Request, &binding.receiver),
                    Topic::receiver_filter(Kind::RegistrationRequest, &binding.receiver),
                    // The answers to this CSE's own requests (notifications), clause 6.5.4.
                    Topic::originator_filter(Kind::Response, &binding.receiver),
                ];
                let timeout = Duration::from_millis(strong.config().limits.outgoing_timeout_ms);
                tokio::spawn(async move {
                    if let Err(e) = subscriber.subscribe(&filters, timeout).await {
                        tracing::warn!(target: "audit", error = %e, "MQTT subscriptions of this CSE refused");
                    }
                });
                tracing::info!(target: "audit", broker = %binding.url.authority(), identity = %binding.identity, "MQTT server associated (TLS-PSK)");
                drop(strong);
                let began = std::time::Instant::now();
                *lock(&binding.publisher) = Some(publisher.clone());
                serve(cse.clone(), &binding, publisher, messages, broker).await;
                *lock(&binding.publisher) = None;
                tracing::warn!(target: "audit", broker = %binding.url.authority(), "MQTT connection ended; connecting again");
                // A session that ends at once (the server refusing it, or another client with
                // this identity) is not retried at full speed.
                if began.elapsed() < Duration::from_secs(10) {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                } else {
                    backoff = Duration::from_secs(1);
                }
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
        psk_source: Some(b.key.clone()),
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
        max_packet: max_packet(cse),
        timeout,
    };
    let (publisher, messages) = mqtt::open(tls, &options).await.map_err(|e| e.to_string())?;
    Ok((publisher, messages, broker))
}

/// Requests of one sender (one originator level) handled at once; more are answered 5103 at once.
const MAX_IN_FLIGHT_PER_SENDER: usize = 8;

/// Each message in a task of its own, at most [`MAX_IN_FLIGHT`] at once and
/// [`MAX_IN_FLIGHT_PER_SENDER`] of one sender: one AE cannot hold every slot.
async fn serve(
    cse: std::sync::Weak<Cse>,
    b: &Arc<Binding>,
    publisher: Publisher,
    mut messages: tokio::sync::mpsc::Receiver<Message>,
    broker: SocketAddr,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let per_sender: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> =
        Arc::default();
    while let Some(message) = messages.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(cse) = cse.upgrade() else {
            return;
        };
        let parsed = Topic::parse(&message.topic);
        // Answers to this CSE's requests are cheap and never wait behind anyone's requests.
        if let Ok(t) = &parsed {
            if t.kind == Kind::Response && t.originator == b.receiver {
                answered(b, t, &message.payload);
                continue;
            }
        }
        let sender = parsed.map(|t| t.originator).unwrap_or_default();
        let busy = {
            let mut counts = lock(&per_sender);
            let n = counts.entry(sender.clone()).or_default();
            *n += 1;
            *n > MAX_IN_FLIGHT_PER_SENDER
        };
        let (b, publisher, counts) = (Arc::clone(b), publisher.clone(), Arc::clone(&per_sender));
        tokio::spawn(async move {
            let _slot = slot;
            if busy {
                answer_busy(&cse, &b, &publisher, &message).await;
            } else {
                answer(&cse, &b, &publisher, message, broker).await;
            }
            let mut counts = lock(&counts);
            if let Some(n) = counts.get_mut(&sender) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&sender);
                }
            }
        });
    }
}

/// A request of a sender with too many in progress: 5103, at once.
async fn answer_busy(cse: &Cse, b: &Binding, publisher: &Publisher, m: &Message) {
    let Ok(topic) = Topic::parse(&m.topic) else {
        return;
    };
    if topic.receiver != b.receiver
        || !matches!(topic.kind, Kind::Request | Kind::RegistrationRequest)
    {
        return;
    }
    let rqi = primitive_message::request_identifier(&m.payload, topic.serialization);
    let resp = refused(
        cse,
        &unreachable("too many requests of this originator in progress"),
        rqi,
    );
    publish_answer(cse, publisher, &topic, resp).await;
}

/// Publishes `resp` on the answer topic of `topic`; an answer larger than the binding carries
/// becomes a 5000 error the requester can read.
async fn publish_answer(cse: &Cse, publisher: &Publisher, topic: &Topic, resp: Response) {
    let ser = topic.serialization;
    let answer_topic = topic.answer().to_string();
    let mut body = primitive_message::encode_response(&resp, ser);
    if body.len() + answer_topic.len() + 16 > max_packet(cse) {
        let big = M2mError::new(
            m2m_core::ResponseStatusCode::InternalServerError,
            "the answer is larger than the MQTT binding carries",
        );
        body = primitive_message::encode_response(&refused(cse, &big, resp.rqi.clone()), ser);
    }
    if let Err(e) = publisher.publish(&answer_topic, body).await {
        tracing::debug!(error = %e, "MQTT response not sent");
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
    tracing::debug!(topic = %m.topic, bytes = m.payload.len(), "MQTT message");
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
            let silent = req.rt == m2m_core::ResponseType::NoResponse;
            let mut resp = match peer_of(cse, b, &topic, &req, broker) {
                Ok(peer) => cse.handle(req, peer).await,
                Err(e) => refused(cse, &e, req.rqi.clone()),
            };
            if silent {
                // noResponse: nothing is published, whatever the outcome.
                return;
            }
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
    publish_answer(cse, publisher, &topic, resp).await;
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

fn unreachable(why: impl Into<String>) -> M2mError {
    M2mError::new(m2m_core::ResponseStatusCode::TargetNotReachable, why)
}

/// Sends `req` to the entity `target` (an AE whose pointOfAccess is `poa`) through this CSE's
/// MQTT server: published on `/oneM2M/req/<csi>/<target>/<ser>`, its answer awaited on the
/// response topic of that entity (clause 6.4.3). Only the server this CSE is a client of can be
/// reached.
impl crate::outbound::MqttServer for Binding {
    fn send<'a>(
        &'a self,
        cse: &'a crate::context::Context,
        poa: &'a str,
        target: &'a EntityId,
        req: &'a m2m_core::Request,
        ser: m2m_core::serialization::Serialization,
    ) -> futures_util::future::BoxFuture<'a, M2mResult<Response>> {
        Box::pin(send(self, cse, poa, target, req, ser))
    }
}

async fn send(
    b: &Binding,
    cse: &crate::context::Context,
    poa: &str,
    target: &EntityId,
    req: &m2m_core::Request,
    ser: m2m_core::serialization::Serialization,
) -> M2mResult<Response> {
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
    tracing::debug!(topic = %topic, rqi = %req.rqi, "request sent over MQTT");
    let timeout = Duration::from_millis(cse.config().limits.outgoing_timeout_ms);
    let outcome = match publisher.publish(&topic.to_string(), body).await {
        Ok(()) => tokio::time::timeout(timeout, rx)
            .await
            .ok()
            .and_then(Result::ok),
        Err(e) => {
            tracing::debug!(error = %e, "MQTT request not published");
            None
        }
    };
    lock(&b.pending).remove(&req.rqi);
    outcome.ok_or_else(|| unreachable("no answer over MQTT"))
}

fn refused(cse: &Cse, e: &M2mError, rqi: String) -> Response {
    let mut resp = Response::error(e, rqi);
    cse.stamp(&mut resp);
    resp
}

/// The peer a request topic names: the association of the credential the MQTT server lets
/// publish on it (its ACL is built from the same table), as the CSE's psk lookup table answers
/// for that credential now.
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
            check_from(cse, &topic.originator, req)?;
            level_association(cse, b, &topic.originator)?
        }
    };
    let mut peer = Peer::associated(broker, Arc::new(association));
    peer.via_mqtt_server = true;
    Ok(peer)
}

/// 4106: the From is not who published (why: audit log only).
fn not_the_sender(why: impl std::fmt::Display) -> M2mError {
    tracing::warn!(target: "audit", reason = %why, "originator refused (MQTT)");
    M2mError::new(
        m2m_core::ResponseStatusCode::OriginatorNotAuthenticated,
        "the originator is not the entity the security association authenticated",
    )
}

/// The From of a request topic must be the AE the topic names (TS-0010 clause 7.2): an AE-ID
/// the level reads as. A CSE is never taken as the sender (Mcc over MQTT is not served).
fn check_from(cse: &Cse, level: &str, req: &m2m_core::Request) -> M2mResult<()> {
    let home = &cse.id.home;
    match Originator::parse(req.from.as_deref(), home)? {
        Originator::Entity(from) if from.is_ae() && topic_entities(level, home).contains(&from) => {
            Ok(())
        }
        _ => Err(not_the_sender(format_args!(
            "From {} published on the request topic of {level}",
            req.from.as_deref().unwrap_or("(none)")
        ))),
    }
}

/// The association of the credential that publishes as `level`: the PSK row bound to the AE
/// the level names, else the credential that AE registered with (then the association is
/// unbound, as over TLS, and the impersonation check holds the From to that registration).
/// A level no credential, or more than one, publishes as is refused (4106).
fn level_association(cse: &Cse, b: &Binding, level: &str) -> M2mResult<Association> {
    let home = &cse.id.home;
    let mut found: Vec<Association> = Vec::new();
    for entity in topic_entities(level, home)
        .into_iter()
        .filter(EntityId::is_ae)
    {
        if let Some(bound) = cse.credential_bound_to(&entity) {
            let row = current_row(b, bound)
                .filter(|a| a.entity.as_ref() == Some(&entity))
                .ok_or_else(|| not_the_sender(format_args!("{bound} no longer opens")))?;
            found.push(row);
        } else if let Some(stem) = entity.local_stem(home) {
            let registered = cse
                .store
                .read(|r| r.credential_of(stem.as_str()))
                .ok()
                .flatten();
            if let Some(credential) = registered {
                let row = current_row(b, &credential)
                    .filter(|a| a.entity.is_none())
                    .ok_or_else(|| not_the_sender(format_args!("{credential} no longer opens")))?;
                found.push(row);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(not_the_sender(format_args!(
            "no credential publishes as {level}"
        ))),
        _ => Err(not_the_sender(format_args!(
            "more than one credential publishes as {level}"
        ))),
    }
}

/// The association of a PSK credential (`12-<KpsaID>`) as the psk lookup table answers now: a
/// rotated-out or group-governed KpsaID, this CSE's own identity at the MQTT server, or any
/// other kind of credential opens nothing here.
fn current_row(b: &Binding, credential: &str) -> Option<Association> {
    let credential = CredentialId::parse(credential).ok()?;
    if credential.type_id() != CredentialId::TYPE_KPSA_ID {
        return None;
    }
    let kpsa = KpsaId::parse(credential.value()).ok()?;
    if KpsaId::parse(&b.identity).ok().as_ref() == Some(&kpsa) {
        return None;
    }
    let key = b.psk.as_ref()?.lookup(
        &kpsa.to_string(),
        &m2m_security::tls::PskHandshake::from_peer(None),
    )?;
    (key.association.mode == SaeMode::ProvisionedKey).then_some(Association {
        mode: SaeMode::MqttServer,
        ..key.association
    })
}

/// The association of a registration topic's Credential-ID (clause 6.4.4): its PSK row (its
/// binding, as over TLS-PSK); a credential that opens nothing here is refused (4106).
fn registration_association(b: &Binding, level: &str) -> M2mResult<Association> {
    current_row(b, level).ok_or_else(|| {
        not_the_sender(format_args!(
            "registration topic of {level:?}, which opens nothing here"
        ))
    })
}
