//! The WebSocket binding on the server side (TS-0020), over the TLS listener's associations
//! (`tls.wss_listen`: clause 7, a SAEF completes before the WebSocket handshake). A connection
//! is the association it came over, as an HTTP connection is; its subprotocol names the
//! serialization (`oneM2M.json` in text frames, `oneM2M.cbor` in binary frames, clause 6.2.2.9).
//!
//! Requests and responses travel both ways on one connection (clause 5.2): the requests of the
//! client go through [`Cse::handle`] as the connection's peer; once an AE has proven itself on
//! the connection (registered over it, or authenticated by its association), the CSE sends that
//! AE's notifications over it (`outbound::Links`) and reads their answers from it.

use crate::association::{Association, Peer, PlainTrust, Proof};
use crate::cse::Cse;
use futures_util::{SinkExt, StreamExt};
use m2m_core::serialization::Serialization;
use m2m_core::{
    primitive_message, EntityId, M2mError, Operation, Originator, Request, ResourceType, Response,
    ResponseStatusCode,
};
use m2m_transport::Connection;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as Handshake, Response as HandshakeResponse,
};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The subprotocols this CSE speaks (TS-0020 table 6.2.2.9-1), in its order of preference.
const SUBPROTOCOLS: &[(&str, Serialization)] = &[
    ("oneM2M.json", Serialization::Json),
    ("oneM2M.cbor", Serialization::Cbor),
];

/// Requests of one connection handled at once.
const MAX_IN_FLIGHT: usize = 16;
/// Requests this CSE sent over one connection awaiting their answer.
const MAX_PENDING: usize = 1024;
/// A ping at this interval keeps an idle connection (and its NAT binding) alive, and the
/// transport's idle timeout from closing a connection that only waits for notifications.
const PING_EVERY: Duration = Duration::from_secs(20);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One open connection, as the CSE sends on it.
pub(crate) struct Link {
    out: mpsc::Sender<Message>,
    ser: Serialization,
    pending: Mutex<HashMap<String, oneshot::Sender<Response>>>,
    /// Set when the connection ends: a closed link is never bound again.
    closed: std::sync::atomic::AtomicBool,
}

impl crate::outbound::Link for Link {
    fn request<'a>(
        &'a self,
        req: &'a Request,
        timeout: Duration,
    ) -> futures_util::future::BoxFuture<'a, Result<Response, M2mError>> {
        Box::pin(self.request(req, timeout))
    }

    fn is_open(&self) -> bool {
        !self.closed.load(Ordering::SeqCst) && !self.out.is_closed()
    }
}

impl Link {
    /// Sends `req` to the client and waits for its answer.
    async fn request(&self, req: &Request, timeout: Duration) -> Result<Response, M2mError> {
        let unreachable =
            |why: &str| M2mError::new(ResponseStatusCode::TargetNotReachable, why.to_owned());
        let body = primitive_message::encode_request(req, self.ser)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING || pending.contains_key(&req.rqi) {
                return Err(unreachable(
                    "too many requests awaiting an answer on the WebSocket",
                ));
            }
            pending.insert(req.rqi.clone(), tx);
        }
        let sent = self.out.send(frame(self.ser, body)).await.is_ok();
        let answer = if sent {
            tokio::time::timeout(timeout, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        lock(&self.pending).remove(&req.rqi);
        answer.ok_or_else(|| unreachable("no answer over the WebSocket"))
    }
}

/// Whether `peer` proves the AE `aei` registered here, as a request of that AE now would be
/// judged: never from what a response says, never for a CSE's credential.
fn proves_registered(cse: &Cse, peer: &Peer, aei: &str) -> Option<EntityId> {
    if peer.association.as_ref()?.is_cse() {
        return None;
    }
    let entity = EntityId::parse(aei, &cse.id.home).ok()?;
    let stem = entity.local_stem(&cse.id.home)?;
    match cse.store.get(stem.as_str()) {
        Ok(Some(r)) if r.ty == ResourceType::Ae => {}
        _ => return None,
    }
    let probe = Request::new(
        Operation::Retrieve,
        stem.as_str(),
        Some(aei.to_owned()),
        "bind",
    );
    proven_entity(cse, &probe, peer).filter(|e| *e == entity)
}

/// The message of a primitive: a text frame for JSON, a binary frame for CBOR.
fn frame(ser: Serialization, body: Vec<u8>) -> Message {
    match ser {
        Serialization::Cbor => Message::Binary(body.into()),
        _ => Message::Text(String::from_utf8_lossy(&body).into_owned().into()),
    }
}

/// The subprotocol of a client handshake: the client's first that this CSE speaks.
fn choose(handshake: &Handshake) -> Option<(&'static str, Serialization)> {
    handshake
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|offered| {
            SUBPROTOCOLS
                .iter()
                .find(|(name, _)| *name == offered)
                .copied()
        })
}

fn refuse(status: u16, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_owned()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    r
}

/// Serves one accepted connection: the WebSocket handshake (request target `/`, a oneM2M
/// subprotocol), then its messages until either side closes.
pub(crate) async fn serve_connection(cse: Arc<Cse>, conn: Connection<Association>) {
    let (peer, _inner) = Peer::of_transport(
        &cse,
        conn.peer,
        conn.association.as_ref(),
        PlainTrust::Anonymous,
    );
    let chosen: Arc<Mutex<Option<Serialization>>> = Arc::default();
    let pick = Arc::clone(&chosen);
    let origins = cse
        .config()
        .tls
        .as_ref()
        .map(|t| t.wss_origins.clone())
        .unwrap_or_default();
    // The shape of the callback is tungstenite's (its error is the HTTP refusal).
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Handshake, mut resp: HandshakeResponse| {
        if req.uri().path() != "/" {
            return Err(refuse(404, "the oneM2M WebSocket endpoint is /"));
        }
        // A browser names the page that opens the socket; only the listed origins may (a page
        // elsewhere would otherwise speak with the browser's client certificate).
        if let Some(origin) = req.headers().get("origin") {
            let listed = origin.to_str().is_ok_and(|o| {
                origins
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(o))
            });
            if !listed {
                return Err(refuse(403, "this origin may not open a WebSocket here"));
            }
        }
        let Some((name, ser)) = choose(req) else {
            return Err(refuse(
                400,
                "no oneM2M subprotocol offered: oneM2M.json or oneM2M.cbor",
            ));
        };
        resp.headers_mut().insert(
            "sec-websocket-protocol",
            http::HeaderValue::from_static(name),
        );
        *lock(&pick) = Some(ser);
        Ok(resp)
    };
    let max = cse.config().http.max_body_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let within = Duration::from_millis(cse.config().limits.header_read_timeout_ms.max(1000));
    let ws = match tokio::time::timeout(
        within,
        tokio_tungstenite::accept_hdr_async_with_config(conn.io, callback, Some(config)),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "WebSocket handshake refused");
            return;
        }
        Err(_) => return,
    };
    let Some(ser) = *lock(&chosen) else {
        return;
    };
    let mut ws = ws;
    // Frames from here on: no request heads to time; the peer's pongs keep it alive.
    ws.get_mut().set_framed();
    let (mut sink, mut stream) = ws.split();
    let (out, mut queue) = mpsc::channel::<Message>(64);
    let link = Arc::new(Link {
        out,
        ser,
        pending: Mutex::new(HashMap::new()),
        closed: std::sync::atomic::AtomicBool::new(false),
    });
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            let m = tokio::select! {
                m = queue.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = ping.tick() => Message::Ping(Default::default()),
            };
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut shutdown = conn.shutdown;
    loop {
        let message = tokio::select! {
            m = stream.next() => match m {
                Some(Ok(m)) => m,
                _ => break,
            },
            _ = shutdown.changed() => break,
        };
        let body = match message {
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (cse, peer, link) = (Arc::clone(&cse), peer.clone(), Arc::clone(&link));
        tokio::spawn(async move {
            let _slot = slot;
            message_in(&cse, &peer, &link, &body).await;
        });
    }
    // Closed first (no late request binds it again), then forgotten.
    link.closed.store(true, Ordering::SeqCst);
    let as_link: Arc<dyn crate::outbound::Link> = link.clone();
    cse.websockets.close(&as_link);
    let _ = link.out.try_send(Message::Close(None));
    drop(link);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

/// One message from the client: the answer to a request of this CSE, or a request to handle
/// and answer.
async fn message_in(cse: &Arc<Cse>, peer: &Peer, link: &Arc<Link>, body: &[u8]) {
    let value = match link.ser.decode(body) {
        Ok(v) => v,
        Err(e) => {
            let resp = refused(cse, &e, String::new());
            let _ = link
                .out
                .send(frame(
                    link.ser,
                    primitive_message::encode_response(&resp, link.ser),
                ))
                .await;
            return;
        }
    };
    let value = value
        .get("m2m:rsp")
        .or_else(|| value.get("m2m:rqp"))
        .cloned()
        .unwrap_or(value);
    if value.get("rsc").is_some() {
        if let Ok(resp) = primitive_message::response_from_value(&value) {
            if let Some(tx) = lock(&link.pending).remove(&resp.rqi) {
                let _ = tx.send(resp);
            }
        }
        return;
    }
    let rqi = value
        .get("rqi")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let resp =
        match primitive_message::request_from_value(&value, m2m_core::schema::is_attribute_name) {
            Ok(req) => {
                let proven = proven_entity(cse, &req, peer);
                let registration = req.op == Operation::Create && req.ty == Some(ResourceType::Ae);
                let from = req.from.clone();
                let silent = req.rt == m2m_core::ResponseType::NoResponse;
                let mut resp = cse.handle(req, peer.clone()).await;
                if resp.to.is_none() {
                    resp.to = from;
                }
                bind_proven(
                    cse,
                    link,
                    peer,
                    peer.association.is_some(),
                    proven,
                    registration,
                    &resp,
                );
                if silent {
                    // noResponse: no message goes back, whatever the outcome.
                    return;
                }
                resp
            }
            Err(e) => refused(cse, &e, rqi),
        };
    let _ = link
        .out
        .send(frame(
            link.ser,
            primitive_message::encode_response(&resp, link.ser),
        ))
        .await;
}

fn refused(cse: &Cse, e: &M2mError, rqi: String) -> Response {
    let mut resp = Response::error(e, rqi);
    cse.stamp(&mut resp);
    resp
}

/// The AE a request proves on this connection: its From, authenticated by the association.
fn proven_entity(cse: &Cse, req: &Request, peer: &Peer) -> Option<EntityId> {
    peer.association.as_ref()?;
    match crate::impersonation::check(cse, req, peer) {
        Ok((Originator::Entity(e), Proof::Authenticated)) if e.is_ae() => Some(e),
        _ => None,
    }
}

/// After a request: the connection carries the notifications of the AE it proved, or of the AE
/// it registered (clause 6.4: routing to the registree once registered).
fn bind_proven(
    cse: &Cse,
    link: &Arc<Link>,
    peer: &Peer,
    associated: bool,
    proven: Option<EntityId>,
    registration: bool,
    resp: &Response,
) {
    if !resp.rsc.is_success() {
        return;
    }
    // A registration binds the AE it made here, if this connection's association proves it
    // (the response's content is only where to look).
    let registered = registration
        .then(|| resp.pc.as_ref()?.pointer("/m2m:ae/aei")?.as_str())
        .flatten()
        .filter(|_| associated)
        .and_then(|aei| proves_registered(cse, peer, aei));
    if let Some(e) = registered.or(proven) {
        cse.websockets
            .bind(e, Arc::clone(link) as Arc<dyn crate::outbound::Link>);
    }
}
