//! An AE's notification receiver at its pointOfAccess (TS-0004 clause 7.3.3.x: the Notify
//! procedure; TS-0009 HTTP binding, or TS-0008 CoAP binding with [`start_coap`]): accepts NOTIFY
//! requests carrying a `m2m:sgn` of one of the AE's own subscriptions (or a verification request)
//! and hands each over; answers anything else with a oneM2M error. Plain HTTP or plain CoAP:
//! nothing authenticates the sender beyond that check.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use m2m_core::http_binding;
use m2m_core::{M2mError, Operation, Response, ResponseStatusCode};
use serde_json::Value;
use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::mpsc::{channel, error::TrySendError, Receiver, Sender};

/// A notification is small; a CSE sending more is refused rather than buffered.
const MAX_BODY: usize = 1 << 20;

/// Notifications waiting for the AE; a sender flooding the receiver gets an error, not memory.
const QUEUE: usize = 256;

/// The subscriptions whose notifications the receiver accepts: their `sur` (the SP-relative
/// resource ID `/CSE-ID/ri` of the `<subscription>`).
#[derive(Clone, Debug, Default)]
pub struct OwnSubscriptions(Arc<RwLock<HashSet<String>>>);

impl OwnSubscriptions {
    /// Accepts the notifications of the subscription `sur` from now on.
    pub fn add(&self, sur: String) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sur);
    }

    /// Every subscription accepted so far.
    pub fn all(&self) -> Vec<String> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn contains(&self, sur: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(sur)
    }
}

/// The `sur` of a `<subscription>` created at `to` (as the AE addressed it) answered with `ri`:
/// hosted by the CSE an SP-relative `to` names, else by the AE's registrar `registrar_cse_id`.
pub fn subscription_reference(to: &str, ri: &str, registrar_cse_id: &str) -> String {
    // `//SP-ID/CSE-ID/...` (absolute), `/CSE-ID/...` (SP-relative), else CSE-relative.
    let hosting = match to.strip_prefix("//") {
        Some(absolute) => absolute.split('/').nth(1),
        None => to.strip_prefix('/').and_then(|r| r.split('/').next()),
    };
    let host = match hosting {
        Some(cse) => format!("/{cse}"),
        None => registrar_cse_id.to_owned(),
    };
    format!("{host}/{ri}")
}

/// A running receiver.
pub struct NotificationReceiver {
    /// Where it listens; `None` for a receiver that polls (no pointOfAccess).
    pub addr: Option<SocketAddr>,
    pub notes: Receiver<Notification>,
    /// Add each subscription the AE creates: only their notifications are accepted.
    pub subscriptions: OwnSubscriptions,
    /// The CoAP receiver's listener, which ends when the receiver is dropped.
    _coap: Option<m2m_transport::Server>,
    /// The long polling task, which ends when the receiver is dropped.
    _poller: Option<AbortOnDrop>,
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a polling receiver polls: its CSE, the `pcu` of its `<pollingChannel>`, as its AE-ID.
pub struct PollingChannel {
    pub client: m2m_client::Client,
    pub cse_url: String,
    /// The address of `<pollingChannel>/pcu`.
    pub pcu: String,
    pub aei: String,
    /// How long one poll waits at the CSE (its Request Expiration Timestamp); shorter than the
    /// client's own timeout.
    pub wait: std::time::Duration,
}

/// Receives by service layer long polling (TS-0004 clause 7.4.22.2.2, TS-0001 clause
/// 10.2.5.18): an AE that no CSE can reach polls its `<pollingChannel>`; each request handed out
/// gets the same checks as at a pointOfAccess, and its answer goes back as a NOTIFY to `pcu`
/// carrying `m2m:rsp` (TS-0004 clause 7.5.1.2.7).
pub fn start_polling(pch: PollingChannel) -> NotificationReceiver {
    let (tx, notes) = channel(QUEUE);
    let subscriptions = OwnSubscriptions::default();
    let own = subscriptions.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Err(pause) = poll_once(&pch, &tx, &own).await {
                tokio::time::sleep(pause).await;
            }
        }
    });
    NotificationReceiver {
        addr: None,
        notes,
        subscriptions,
        _coap: None,
        _poller: Some(AbortOnDrop(task)),
    }
}

/// Receives over MQTT (TS-0010 clause 6.4.3): the AE's own request topic at the MQTT server of
/// `url`, which lets only this AE read it and only its CSE publish on it (the server's ACL);
/// each request gets the same checks as at a pointOfAccess and its answer goes to the sender's
/// response topic. A lost session is opened again.
pub async fn start_mqtt(
    client: m2m_client::Client,
    url: String,
    aei: String,
) -> anyhow::Result<NotificationReceiver> {
    let (tx, notes) = channel(QUEUE);
    let subscriptions = OwnSubscriptions::default();
    let own = subscriptions.clone();
    // The first session before the AE subscribes: a verification request must find it.
    let first = client
        .mqtt_inbox(&url, &aei)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.dbg))?;
    let task = tokio::spawn(async move {
        let mut inbox = Some(first);
        loop {
            let mut current = match inbox.take() {
                Some(i) => i,
                None => match client.mqtt_inbox(&url, &aei).await {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::warn!(dbg = %e.dbg, "MQTT notification session not opened");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            while let Some(received) = current.next().await {
                let rsp = match received
                    .request
                    .clone()
                    .and_then(|r| accept_request(r, &own))
                {
                    Ok(note) => deliver(&tx, note, received.rqi.clone()),
                    Err(e) => Response::error(&e, received.rqi.clone()),
                };
                let _ = current.answer(&received, &rsp).await;
            }
            tracing::warn!("MQTT notification session ended; opening it again");
        }
    });
    Ok(NotificationReceiver {
        addr: None,
        notes,
        subscriptions,
        _coap: None,
        _poller: Some(AbortOnDrop(task)),
    })
}

/// Receives over the AE's WebSocket connection to its CSE (TS-0020 clause 5.2): the CSE sends the
/// AE's notifications on the connection the AE proved itself on; each gets the same checks as at
/// a pointOfAccess and its answer goes back on the connection. A closed connection is opened
/// again and the AE proves itself on it (a RETRIEVE of its own `<AE>` at `ae_path`).
pub async fn start_websocket(
    client: m2m_client::Client,
    url: String,
    aei: String,
    ae_path: String,
) -> anyhow::Result<NotificationReceiver> {
    let (tx, notes) = channel(QUEUE);
    let subscriptions = OwnSubscriptions::default();
    let own = subscriptions.clone();
    let first = client
        .websocket_inbox(&url)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.dbg))?;
    let task = tokio::spawn(async move {
        let mut inbox = Some(first);
        loop {
            let mut current = match inbox.take() {
                Some(i) => i,
                None => {
                    let opened = client.websocket_inbox(&url).await;
                    let proven = async {
                        let hello = m2m_core::Request::new(
                            Operation::Retrieve,
                            &ae_path,
                            Some(aei.clone()),
                            m2m_client::next_request_id(),
                        );
                        client.send(&url, &hello).await
                    };
                    match (opened, proven.await) {
                        (Ok(i), Ok(r)) if r.rsc.is_success() => i,
                        _ => {
                            tracing::warn!("WebSocket to the CSE not reopened; trying again");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
            };
            while let Some(req) = current.next().await {
                let rqi = req.rqi.clone();
                let rsp = match accept_request(req, &own) {
                    Ok(note) => deliver(&tx, note, rqi),
                    Err(e) => Response::error(&e, rqi),
                };
                let _ = current.answer(&rsp).await;
            }
            tracing::warn!("WebSocket to the CSE closed; opening it again");
        }
    });
    Ok(NotificationReceiver {
        addr: None,
        notes,
        subscriptions,
        _coap: None,
        _poller: Some(AbortOnDrop(task)),
    })
}

/// One long poll and the answer to what it brought; `Err(pause)` when the CSE could not be
/// polled (then the next try waits a little instead of spinning).
async fn poll_once(
    ch: &PollingChannel,
    tx: &Sender<Notification>,
    own: &OwnSubscriptions,
) -> Result<(), std::time::Duration> {
    use m2m_core::Request;
    let pause = std::time::Duration::from_secs(1);
    let mut poll = Request::new(
        Operation::Retrieve,
        &ch.pcu,
        Some(ch.aei.clone()),
        m2m_client::next_request_id(),
    );
    poll.rqet = Some(ch.wait.as_millis().to_string());
    let rsp = match ch.client.send(&ch.cse_url, &poll).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(rsc = e.rsc.code(), dbg = %e.dbg, "long poll failed");
            return Err(pause);
        }
    };
    match rsp.rsc {
        ResponseStatusCode::Ok => {}
        // Nothing came while the poll waited: poll again.
        ResponseStatusCode::RequestTimeout => return Ok(()),
        other => {
            tracing::warn!(
                rsc = other.code(),
                dbg = rsp.dbg().unwrap_or(""),
                "long poll refused"
            );
            return Err(pause);
        }
    }
    let Some(polled) = rsp.pc.as_ref().and_then(|pc| pc.get("m2m:rqp")) else {
        tracing::warn!("long poll answer without m2m:rqp");
        return Ok(());
    };
    let answer = match Request::from_json(polled) {
        Ok(req) => {
            let rqi = req.rqi.clone();
            match accept_request(req, own) {
                Ok(note) => deliver(tx, note, rqi),
                Err(e) => Response::error(&e, rqi),
            }
        }
        // Unreadable: there is no Request Identifier to answer to.
        Err(e) => {
            tracing::warn!(dbg = %e.dbg, "polled request unreadable");
            return Ok(());
        }
    };
    let mut back = Request::new(
        Operation::Notify,
        &ch.pcu,
        Some(ch.aei.clone()),
        m2m_client::next_request_id(),
    );
    back.pc = Some(serde_json::json!({ "m2m:rsp": answer.to_rsp_json() }));
    match ch.client.send(&ch.cse_url, &back).await {
        Ok(r) if r.rsc.is_success() => Ok(()),
        // The sender gave up waiting (4004): the answer is simply late.
        Ok(r) => {
            tracing::info!(
                rsc = r.rsc.code(),
                "answer over the polling channel not taken"
            );
            Ok(())
        }
        Err(e) => {
            tracing::warn!(rsc = e.rsc.code(), dbg = %e.dbg, "answer over the polling channel failed");
            Err(pause)
        }
    }
}

/// One notification as received.
#[derive(Debug, Clone)]
pub struct Notification {
    pub at: Instant,
    /// The From of the NOTIFY request (the notifying CSE).
    pub from: Option<String>,
    /// The content of `m2m:sgn`.
    pub sgn: Value,
}

impl Notification {
    /// A verification request (sent when a subscription is created), not an event.
    pub fn is_verification(&self) -> bool {
        self.sgn.get("vrq") == Some(&Value::Bool(true))
    }

    /// The `con` of the contentInstance an event notification carries, if any.
    pub fn content_instance_con(&self) -> Option<&Value> {
        self.sgn.pointer("/nev/rep/m2m:cin/con")
    }
}

/// Listens on `listen` (e.g. `127.0.0.1:0`).
pub async fn start(listen: &str) -> anyhow::Result<NotificationReceiver> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("notification receiver: cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let (tx, notes) = channel(QUEUE);
    let subscriptions = OwnSubscriptions::default();
    let own = subscriptions.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tx, own) = (tx.clone(), own.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(tx.clone(), own.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(NotificationReceiver {
        addr: Some(addr),
        notes,
        subscriptions,
        _coap: None,
        _poller: None,
    })
}

/// Listens for CoAP (plain UDP, TS-0008) on `listen`: the same checks, answered through the
/// CoAP message layer (acknowledgements, duplicates, blocks).
pub async fn start_coap(listen: &str) -> anyhow::Result<NotificationReceiver> {
    start_datagram(
        listen,
        "ae-notifications",
        m2m_transport::Security::Plain,
        Arc::new(m2m_transport::NoAssociation),
    )
    .await
}

/// Listens for CoAP over DTLS 1.2 (`coaps`, TS-0003 clause 10.2.1) on `listen`: only the CSE
/// that `security` names completes a handshake, so a notification arrives from it or not at all.
pub async fn start_coaps(
    listen: &str,
    security: &ReceiverSecurity,
) -> anyhow::Result<NotificationReceiver> {
    let context = security.dtls_context()?;
    start_datagram(
        listen,
        "ae-notifications-dtls",
        m2m_transport::Security::Tls(context),
        Arc::new(security.binder()),
    )
    .await
}

async fn start_datagram<B: m2m_transport::Binder>(
    listen: &str,
    name: &'static str,
    security: m2m_transport::Security,
    binder: Arc<B>,
) -> anyhow::Result<NotificationReceiver> {
    let udp = tokio::net::UdpSocket::bind(listen).await.map_err(|e| {
        anyhow::anyhow!("notification receiver: cannot listen on udp {listen}: {e}")
    })?;
    let (tx, notes) = channel(QUEUE);
    let subscriptions = OwnSubscriptions::default();
    let own = subscriptions.clone();
    let server = m2m_transport::Server::spawn_datagram(
        m2m_transport::DatagramListener {
            name,
            udp,
            security,
            limits: m2m_transport::Limits::default(),
        },
        binder,
        move |mut session: m2m_transport::Session<B::Association>| {
            let (tx, own) = (tx.clone(), own.clone());
            async move {
                let mut exchanges = m2m_core::coap_exchange::Exchanges::default();
                while let Some(d) = session.io.recv().await {
                    let answer = exchanges
                        .answer(&d, MAX_BODY, |request| {
                            let (tx, own) = (tx.clone(), own.clone());
                            async move { coap_notify(&tx, &own, request) }
                        })
                        .await;
                    if let Some(reply) = answer {
                        if session.io.send(&reply).await.is_err() {
                            break;
                        }
                    }
                }
            }
        },
    )?;
    Ok(NotificationReceiver {
        addr: Some(server.local_addr),
        notes,
        subscriptions,
        _coap: Some(server),
        _poller: None,
    })
}

/// Who may open a DTLS association with the AE's `coaps` receiver, and how the AE proves itself:
/// the security association of the AE with its CSE (TS-0003 clause 8.2), run the other way.
pub enum ReceiverSecurity {
    /// The AE's KpsaID and Kpsa: the CSE proves itself by knowing the key (TLS-PSK, clause 10.2.2).
    Psk {
        kpsa_id: String,
        key: m2m_security::credentials::Secret,
    },
    /// The AE's certificate; the CSE's must chain to `trusted_ca` and carry `cse_name` (a DNS
    /// name or IP address, as the AE checks when it connects to the CSE).
    Certificate {
        certificate: std::path::PathBuf,
        private_key: std::path::PathBuf,
        trusted_ca: std::path::PathBuf,
        cse_name: String,
    },
}

impl std::fmt::Debug for ReceiverSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReceiverSecurity::Psk { kpsa_id, .. } => write!(f, "Psk({kpsa_id})"),
            ReceiverSecurity::Certificate { cse_name, .. } => write!(f, "Certificate({cse_name})"),
        }
    }
}

impl ReceiverSecurity {
    fn dtls_context(&self) -> anyhow::Result<openssl::ssl::SslContext> {
        use m2m_security::tls::{ServerTlsConfig, CERTIFICATE_SUITES, PSK_SUITES};
        let suites = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        let config = match self {
            ReceiverSecurity::Psk { kpsa_id, key } => ServerTlsConfig {
                cipher_suites: suites(PSK_SUITES),
                tls13: false,
                certificate_chain: None,
                private_key: None,
                trusted_ca: None,
                psk: Some(Arc::new(OwnKey {
                    kpsa_id: m2m_security::credentials::KpsaId::parse(kpsa_id)
                        .map_err(|e| anyhow::anyhow!("[security] kpsa_id: {e}"))?,
                    key: key.clone(),
                })),
                revocation: None,
            },
            ReceiverSecurity::Certificate {
                certificate,
                private_key,
                trusted_ca,
                ..
            } => ServerTlsConfig {
                cipher_suites: suites(CERTIFICATE_SUITES),
                tls13: false,
                certificate_chain: Some(certificate.clone()),
                private_key: Some(private_key.clone()),
                trusted_ca: Some(trusted_ca.clone()),
                psk: None,
                revocation: None,
            },
        };
        m2m_security::tls::dtls_server_context(&config)
            .map_err(|e| anyhow::anyhow!("notification receiver (coaps): {e}"))
    }

    fn binder(&self) -> CseOnly {
        match self {
            ReceiverSecurity::Psk { .. } => CseOnly::KnowsTheKey,
            ReceiverSecurity::Certificate { cse_name, .. } => CseOnly::Named(cse_name.clone()),
        }
    }
}

/// The AE's own row as the receiver's psk lookup table: its KpsaID opens, nothing else does.
struct OwnKey {
    kpsa_id: m2m_security::credentials::KpsaId,
    key: m2m_security::credentials::Secret,
}

impl m2m_security::tls::PskLookup for OwnKey {
    fn lookup(
        &self,
        psk_identity: &str,
        _: &m2m_security::tls::PskHandshake,
    ) -> Option<m2m_security::tls::PskKey> {
        use m2m_security::credentials::{CredentialId, KpsaId};
        if KpsaId::parse(psk_identity).ok()? != self.kpsa_id {
            return None;
        }
        Some(m2m_security::tls::PskKey {
            key: zeroize::Zeroizing::new(self.key.expose().to_vec()),
            association: m2m_security::association::Association {
                mode: m2m_security::association::SaeMode::ProvisionedKey,
                credential: CredentialId::for_kpsa(&self.kpsa_id),
                entity: None,
            },
        })
    }
}

/// The receiver's binder: a handshake stands only if it authenticated the AE's CSE.
enum CseOnly {
    KnowsTheKey,
    Named(String),
}

/// The CSE that a `coaps` notification receiver accepted.
pub struct NotifyingCse(String);

impl std::fmt::Display for NotifyingCse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl m2m_transport::Binder for CseOnly {
    type Association = NotifyingCse;
    fn bind(
        &self,
        proof: m2m_security::tls::Authenticated,
        _ssl: &openssl::ssl::SslRef,
        _peer: SocketAddr,
    ) -> Result<NotifyingCse, String> {
        use m2m_security::tls::Authenticated;
        match (self, proof) {
            (CseOnly::KnowsTheKey, Authenticated::Psk(a)) => {
                Ok(NotifyingCse(a.credential.to_string()))
            }
            (CseOnly::Named(name), Authenticated::Certificate { leaf_der }) => {
                let leaf = openssl::x509::X509::from_der(&leaf_der).map_err(|e| e.to_string())?;
                if certificate_names(&leaf, name) {
                    Ok(NotifyingCse(name.clone()))
                } else {
                    Err(format!(
                        "the client certificate does not name the CSE '{name}'"
                    ))
                }
            }
            _ => Err("not the security association of this AE's CSE".into()),
        }
    }
}

/// Whether a certificate carries `name` as a dNSName (case-insensitive) or, for an IP address,
/// as an iPAddress subjectAltName.
fn certificate_names(cert: &openssl::x509::X509Ref, name: &str) -> bool {
    let ip: Option<std::net::IpAddr> = name.trim_matches(['[', ']']).parse().ok();
    cert.subject_alt_names().is_some_and(|sans| {
        sans.iter()
            .any(|san| match (ip, san.dnsname(), san.ipaddress()) {
                (None, Some(dns), _) => dns.eq_ignore_ascii_case(name),
                (Some(ip), _, Some(bytes)) => match ip {
                    std::net::IpAddr::V4(v4) => bytes == v4.octets(),
                    std::net::IpAddr::V6(v6) => bytes == v6.octets(),
                },
                _ => false,
            })
    })
}

/// One whole CoAP request to the receiver.
fn coap_notify(
    tx: &Sender<Notification>,
    own: &OwnSubscriptions,
    request: coap_lite::Packet,
) -> coap_lite::Packet {
    use m2m_core::coap_binding;
    let op = coap_binding::operation(&request).unwrap_or(Operation::Notify);
    let rqi = coap_binding::request_identifier(&request);
    let rsp = match coap_binding::decode_request(&request, |_| false)
        .and_then(|req| accept_request(req, own))
    {
        Ok(note) => deliver(tx, note, rqi),
        Err(e) => Response::error(&e, rqi),
    };
    coap_binding::encode_response(&rsp, op, Default::default())
}

/// Hands a notification over; the answer to its sender.
fn deliver(tx: &Sender<Notification>, note: Notification, rqi: String) -> Response {
    match tx.try_send(note) {
        Ok(()) | Err(TrySendError::Closed(_)) => Response::new(ResponseStatusCode::Ok, rqi, None),
        Err(TrySendError::Full(_)) => Response::error(
            &M2mError::new(
                ResponseStatusCode::InternalServerError,
                "too many notifications waiting",
            ),
            rqi,
        ),
    }
}

async fn handle(
    tx: Sender<Notification>,
    own: OwnSubscriptions,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let rqi = http_binding::request_identifier(&parts.headers);
    let rsp = match Limited::new(body, MAX_BODY).collect().await {
        Err(_) => Response::error(
            &M2mError::bad_request(format!("notification larger than {MAX_BODY} bytes")),
            rqi,
        ),
        Ok(body) => match accept(&parts, &body.to_bytes(), &own) {
            Ok(note) => deliver(&tx, note, rqi),
            Err(e) => Response::error(&e, rqi),
        },
    };
    let (parts, body) =
        http_binding::encode_response(&rsp, m2m_core::serialization::Serialization::Json)
            .into_parts();
    Ok(hyper::Response::from_parts(parts, Full::new(body)))
}

/// The notification in a request, or why it is not one.
fn accept(
    parts: &http::request::Parts,
    body: &[u8],
    own: &OwnSubscriptions,
) -> Result<Notification, M2mError> {
    let req =
        http_binding::decode_request(&parts.method, &parts.uri, &parts.headers, body, |_| false)?;
    accept_request(req, own)
}

/// The notification a decoded request carries, or why it is not one.
fn accept_request(
    req: m2m_core::Request,
    own: &OwnSubscriptions,
) -> Result<Notification, M2mError> {
    if req.op != Operation::Notify {
        return Err(M2mError::new(
            ResponseStatusCode::OperationNotAllowed,
            "this is a notification receiver: NOTIFY only",
        ));
    }
    let sgn = req
        .pc
        .as_ref()
        .and_then(|pc| pc.get("m2m:sgn"))
        .filter(|s| s.is_object())
        .ok_or_else(|| M2mError::bad_request("the content is not a m2m:sgn notification"))?;
    let note = Notification {
        at: Instant::now(),
        from: req.from,
        sgn: sgn.clone(),
    };
    // A verification request comes while the subscription is being created, before its
    // resource ID is known here: answered, it only lets the creation go through.
    let sur = note.sgn.get("sur").and_then(Value::as_str).unwrap_or("");
    if !note.is_verification() && !own.contains(sur) {
        return Err(M2mError::new(
            ResponseStatusCode::NotFound,
            "not a subscription of this AE",
        ));
    }
    Ok(note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_core::Request;
    use serde_json::json;

    async fn send(url: &str, op: Operation, pc: Option<Value>) -> Response {
        let mut req = Request::new(op, "phone", Some("/id-in".into()), "r1".to_owned());
        req.pc = pc;
        m2m_client::Client::new().send(url, &req).await.unwrap()
    }

    #[tokio::test]
    async fn notifications_pass_anything_else_gets_a_status_code() {
        let mut r = start("127.0.0.1:0").await.unwrap();
        r.subscriptions.add(subscription_reference(
            "cse-in/lock/state",
            "sub1",
            "/id-in",
        ));
        let url = format!("http://{}", r.addr.expect("listening"));
        let sgn = json!({ "m2m:sgn": { "nev": { "rep": { "m2m:cin": { "con": "UNLOCKED" } }, "net": 3 }, "sur": "/id-in/sub1" } });
        assert_eq!(
            send(&url, Operation::Notify, Some(sgn)).await.rsc.code(),
            2000
        );
        let note = r.notes.recv().await.unwrap();
        assert_eq!(note.from.as_deref(), Some("/id-in"));
        assert_eq!(note.content_instance_con(), Some(&json!("UNLOCKED")));
        assert!(!note.is_verification());

        let rsp = send(&url, Operation::Retrieve, None).await;
        assert_eq!(rsp.rsc, ResponseStatusCode::OperationNotAllowed);
        let rsp = send(&url, Operation::Notify, Some(json!({ "m2m:cin": {} }))).await;
        assert_eq!(rsp.rsc.code(), 4000);
        assert!(rsp.dbg().unwrap().contains("m2m:sgn"));
        assert!(
            r.notes.try_recv().is_err(),
            "refused requests are not notifications"
        );
    }

    #[tokio::test]
    async fn only_own_subscriptions_and_verifications_get_through() {
        let mut r = start("127.0.0.1:0").await.unwrap();
        r.subscriptions.add(subscription_reference(
            "/mn-cse-1/cse-mn/lock/state",
            "sub7",
            "/id-in",
        ));
        assert_eq!(
            subscription_reference("//sp.example/mn-cse-1/x", "s", "/id-in"),
            "/mn-cse-1/s"
        );
        let url = format!("http://{}", r.addr.expect("listening"));
        // A forged event for a subscription this AE never made: refused, never handed over.
        for sur in ["/id-in/sub7", "/mn-cse-1/sub8", ""] {
            let forged = json!({ "m2m:sgn": { "nev": { "rep": { "m2m:cin": { "con": "UNLOCKED" } }, "net": 3 }, "sur": sur } });
            let rsp = send(&url, Operation::Notify, Some(forged)).await;
            assert_eq!(rsp.rsc, ResponseStatusCode::NotFound, "{sur}");
        }
        assert!(r.notes.try_recv().is_err(), "forged notifications dropped");
        // The verification request of a subscription being created passes.
        let vrq = json!({ "m2m:sgn": { "vrq": true, "sur": "/id-in/sub9", "cr": "Cphone" } });
        assert_eq!(
            send(&url, Operation::Notify, Some(vrq)).await.rsc.code(),
            2000
        );
        assert!(r.notes.recv().await.unwrap().is_verification());
        let own = json!({ "m2m:sgn": { "nev": { "net": 3 }, "sur": "/mn-cse-1/sub7" } });
        assert_eq!(
            send(&url, Operation::Notify, Some(own)).await.rsc.code(),
            2000
        );
        assert!(!r.notes.recv().await.unwrap().is_verification());
    }

    #[tokio::test]
    async fn a_full_queue_answers_an_error() {
        let r = start("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", r.addr.expect("listening"));
        let vrq = json!({ "m2m:sgn": { "vrq": true, "sur": "/id-in/sub1" } });
        for _ in 0..QUEUE {
            let rsp = send(&url, Operation::Notify, Some(vrq.clone())).await;
            assert_eq!(rsp.rsc.code(), 2000);
        }
        let rsp = send(&url, Operation::Notify, Some(vrq)).await;
        assert_eq!(rsp.rsc, ResponseStatusCode::InternalServerError);
    }
}
