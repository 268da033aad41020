//! `mqtts://` (TS-0010) as an originator: a session with the MQTT server over TLS (the server
//! proves the PSK, or its certificate), one per topic the client publishes as, kept open; each
//! request published on its request topic (`/oneM2M/req/<From>/<CSE>/json`, or the registration
//! topic of the client's Credential-ID when it has no AE-ID yet) and its answer matched by
//! Request Identifier on the response topic, which the server lets only this client read.

use crate::tls::TlsSettings;
use crate::{lock, unreachable};
use m2m_core::mqtt_binding::{topic_id, Kind, MqttUrl, Topic};
use m2m_core::serialization::Serialization;
use m2m_core::{primitive_message, M2mError, M2mResult, Request, Response};
use m2m_transport::mqtt::{self, Publisher};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// What an MQTT originator needs besides the server's URL.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    /// TLS towards the MQTT server.
    pub tls: TlsSettings,
    /// The Credential-ID of the registration topics (`12-<KpsaID>`), for requests without an
    /// AE-ID yet (TS-0010 clause 6.4.4).
    pub credential: Option<String>,
    /// The receiving CSE's CSE-ID (`/id-in`): the receiver level of every topic.
    pub cse_id: String,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Response>>>>;

/// The session with one MQTT server: the answers it awaits, the filters it subscribed to, and
/// where requests to this client go (an [`MqttInbox`]). The server ends an older connection of
/// the same credential (its client identifier is the credential), so a client keeps one.
struct Session {
    publisher: Publisher,
    pending: Pending,
    subscribed: tokio::sync::Mutex<std::collections::HashSet<String>>,
    inbox: Arc<Mutex<Inbox>>,
}

/// Where requests to this client go: the [`MqttInbox`] once there is one; until then the first
/// of them wait (a kept session delivers what was queued as soon as it connects).
#[derive(Default)]
struct Inbox {
    to: Option<tokio::sync::mpsc::Sender<mqtt::Message>>,
    early: std::collections::VecDeque<mqtt::Message>,
}

/// Requests kept for an inbox not attached yet.
const EARLY: usize = 256;

impl Session {
    /// Subscribes to `filter` unless it already is.
    async fn subscribe(&self, url: &str, filter: String, timeout: Duration) -> M2mResult<()> {
        let mut subscribed = self.subscribed.lock().await;
        if subscribed.contains(&filter) {
            return Ok(());
        }
        self.publisher
            .subscribe(std::slice::from_ref(&filter), timeout)
            .await
            .map_err(|e| unreachable(url, e))?;
        subscribed.insert(filter);
        Ok(())
    }
}

/// The sessions of a client, by server.
#[derive(Default)]
pub(crate) struct MqttTransport {
    sessions: tokio::sync::Mutex<HashMap<String, Arc<Session>>>,
}

impl std::fmt::Debug for MqttTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTransport").finish_non_exhaustive()
    }
}

pub(crate) fn is_mqtt(url: &str) -> bool {
    url.starts_with("mqtts://") || url.starts_with("mqtt://")
}

/// The server of an `mqtts://` URL.
fn server_of(url: &str) -> M2mResult<MqttUrl> {
    let server = MqttUrl::parse(url).map_err(|e| unreachable(url, e.dbg))?;
    if !server.tls {
        return Err(unreachable(
            url,
            "plain mqtt:// is not supported: use mqtts://",
        ));
    }
    Ok(server)
}

impl MqttTransport {
    /// Sends `req` through the MQTT server of `url` and waits for its answer.
    pub(crate) async fn send(
        &self,
        url: &str,
        req: &Request,
        settings: Option<&MqttSettings>,
        ser: Serialization,
        timeout: Duration,
        max_packet: usize,
    ) -> M2mResult<Response> {
        let settings = settings.ok_or_else(|| {
            unreachable(
                url,
                "mqtts:// needs TLS credentials and the CSE's ID (none configured)",
            )
        })?;
        let (kind, level) = originator_level(req, settings).map_err(|e| unreachable(url, e.dbg))?;
        let receiver = topic_id(&settings.cse_id);
        let session = self.session(url, settings, timeout, max_packet).await?;
        session
            .subscribe(
                url,
                Topic::originator_filter(kind.answer(), &level),
                timeout,
            )
            .await?;
        let (tx, rx) = oneshot::channel();
        lock(&session.pending).insert(req.rqi.clone(), tx);
        let topic = Topic::new(kind, &level, &receiver, ser);
        let body = primitive_message::encode_request(req, ser)?;
        let sent = session.publisher.publish(&topic.to_string(), body).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(timeout, rx)
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        lock(&session.pending).remove(&req.rqi);
        answer.ok_or_else(|| unreachable(url, format_args!("no answer within {timeout:?}")))
    }

    /// The open session with the server of `url`, or a new one.
    async fn session(
        &self,
        url: &str,
        settings: &MqttSettings,
        timeout: Duration,
        max_packet: usize,
    ) -> M2mResult<Arc<Session>> {
        let server = server_of(url)?;
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions
            .get(&server.authority())
            .filter(|s| s.publisher.is_open())
        {
            return Ok(Arc::clone(s));
        }
        let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(server.authority()))
            .await
            .map_err(|_| unreachable(url, "TCP connect timed out"))?
            .map_err(|e| unreachable(url, e))?;
        let _ = tcp.set_nodelay(true);
        let tls = m2m_transport::connect(
            &settings.tls.context,
            tcp,
            &settings.tls.check_for(&server.host),
            timeout,
        )
        .await
        .map_err(|e| unreachable(url, e))?;
        let options = mqtt::Options {
            // TS-0010 clause 6.3.3 (the server replaces it with the credential's identity).
            client_id: format!("A::{}", settings.credential.as_deref().unwrap_or("client")),
            // Clause 6.3.3: the server keeps what arrives while the client is away.
            clean_session: false,
            keep_alive: Duration::from_secs(60),
            max_packet,
            timeout,
        };
        let (publisher, mut messages) = mqtt::open(tls, &options)
            .await
            .map_err(|e| unreachable(url, e))?;
        let pending: Pending = Arc::default();
        let inbox: Arc<Mutex<Inbox>> = Arc::default();
        let session = Arc::new(Session {
            publisher,
            pending: Arc::clone(&pending),
            subscribed: Default::default(),
            inbox: Arc::clone(&inbox),
        });
        tokio::spawn(async move {
            while let Some(m) = messages.recv().await {
                let Ok(topic) = Topic::parse(&m.topic) else {
                    continue;
                };
                if topic.kind == Kind::Request {
                    let mut inbox = lock(&inbox);
                    match inbox.to.clone() {
                        Some(to) => {
                            let _ = to.try_send(m);
                        }
                        None if inbox.early.len() < EARLY => inbox.early.push_back(m),
                        None => {}
                    }
                    continue;
                }
                if let Ok(resp) =
                    primitive_message::decode_response(&m.payload, topic.serialization)
                {
                    if let Some(tx) = lock(&pending).remove(&resp.rqi) {
                        let _ = tx.send(resp);
                    }
                }
            }
            // The inbox ends with the session.
            lock(&inbox).to.take();
        });
        sessions.insert(server.authority(), Arc::clone(&session));
        Ok(session)
    }
}

/// The topic a request goes on: its From's request topic; an AE registration, or a request
/// without an AE-ID (no From, or `C`/`S` alone), on the registration topic of the client's
/// credential (TS-0010 clause 6.4.4): the server opens the AE's own topics only once it is
/// registered.
fn originator_level(req: &Request, settings: &MqttSettings) -> M2mResult<(Kind, String)> {
    let registration =
        req.op == m2m_core::Operation::Create && req.ty == Some(m2m_core::ResourceType::Ae);
    match (req.from.as_deref(), &settings.credential) {
        (None | Some("" | "C" | "S"), None) => Err(M2mError::bad_request(
            "a request without AE-ID over MQTT needs the client's Credential-ID",
        )),
        (None | Some("" | "C" | "S"), Some(credential)) => {
            Ok((Kind::RegistrationRequest, credential.clone()))
        }
        (Some(_), Some(credential)) if registration => {
            Ok((Kind::RegistrationRequest, credential.clone()))
        }
        (Some(from), _) => Ok((Kind::Request, topic_id(from))),
    }
}

/// Requests the MQTT server delivers to this client's own request topic
/// (`/oneM2M/req/+/<level>/#`, TS-0010 clause 6.4.3): notifications to an AE whose pointOfAccess
/// is `mqtts://`. Each is answered on the response topic of its sender.
pub struct MqttInbox {
    publisher: Publisher,
    messages: tokio::sync::mpsc::Receiver<mqtt::Message>,
    max_packet: usize,
}

/// One request received: the request (or why it could not be read, with its Request
/// Identifier) and where its answer goes.
pub struct Received {
    pub request: M2mResult<Request>,
    pub rqi: String,
    answer: Topic,
}

impl MqttInbox {
    /// The next request, `None` once the session has ended.
    pub async fn next(&mut self) -> Option<Received> {
        loop {
            let m = self.messages.recv().await?;
            let Ok(topic) = Topic::parse(&m.topic) else {
                continue;
            };
            if topic.kind != Kind::Request || m.payload.len() > self.max_packet {
                continue;
            }
            let ser = topic.serialization;
            return Some(Received {
                request: primitive_message::decode_request(&m.payload, ser, |_| false),
                rqi: primitive_message::request_identifier(&m.payload, ser),
                answer: topic.answer(),
            });
        }
    }

    /// Publishes the answer to `received`.
    pub async fn answer(&self, received: &Received, resp: &Response) -> M2mResult<()> {
        let body = primitive_message::encode_response(resp, received.answer.serialization);
        self.publisher
            .publish(&received.answer.to_string(), body)
            .await
            .map_err(|e| unreachable("mqtts", e))
    }
}

impl crate::Client {
    /// Receives the requests the MQTT server of `url` delivers for the entity `id` (its AE-ID,
    /// as its topics name it), on the client's session with that server.
    pub async fn mqtt_inbox(&self, url: &str, id: &str) -> M2mResult<MqttInbox> {
        let settings = self.mqtt_settings.as_deref().ok_or_else(|| {
            unreachable(
                url,
                "mqtts:// needs TLS credentials and the CSE's ID (none configured)",
            )
        })?;
        let session = self
            .mqtt
            .session(url, settings, self.timeout, self.max_body)
            .await?;
        let (tx, messages) = tokio::sync::mpsc::channel(EARLY + 256);
        {
            let mut inbox = lock(&session.inbox);
            for early in inbox.early.drain(..) {
                let _ = tx.try_send(early);
            }
            inbox.to = Some(tx);
        }
        session
            .subscribe(
                url,
                Topic::receiver_filter(Kind::Request, &topic_id(id)),
                self.timeout,
            )
            .await?;
        Ok(MqttInbox {
            publisher: session.publisher.clone(),
            messages,
            max_packet: self.max_body,
        })
    }
}
