//! `wss://` (TS-0020) as a client: one WebSocket connection per server over this client's TLS
//! (a SAEF completes before the WebSocket handshake, clause 7), subprotocol `oneM2M.json`.
//! Requests go out on it and their answers are matched by Request Identifier; requests the CSE
//! sends on it (notifications) go to the [`WsInbox`], whose answers go back on it.

use crate::tls::TlsSettings;
use crate::{lock, unreachable};
use futures_util::{SinkExt, StreamExt};
use m2m_core::serialization::Serialization;
use m2m_core::{primitive_message, M2mError, M2mResult, Request, Response, ResponseStatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const SUBPROTOCOL: &str = "oneM2M.json";

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Response>>>>;

/// One open connection.
struct Connection {
    out: mpsc::Sender<Message>,
    pending: Pending,
    inbox: Arc<Mutex<Option<mpsc::Sender<Request>>>>,
    open: Arc<std::sync::atomic::AtomicBool>,
}

/// The connections of a client, by server.
#[derive(Default)]
pub(crate) struct WsTransport {
    connections: tokio::sync::Mutex<HashMap<String, Arc<Connection>>>,
}

impl std::fmt::Debug for WsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTransport").finish_non_exhaustive()
    }
}

pub(crate) fn is_websocket(url: &str) -> bool {
    url.starts_with("wss://") || url.starts_with("ws://")
}

fn text(body: Vec<u8>) -> Message {
    Message::Text(String::from_utf8_lossy(&body).into_owned().into())
}

impl WsTransport {
    pub(crate) async fn send(
        &self,
        url: &str,
        req: &Request,
        tls: Option<&TlsSettings>,
        timeout: Duration,
        max: usize,
    ) -> M2mResult<Response> {
        let conn = self.connection(url, tls, timeout, max).await?;
        let (tx, rx) = oneshot::channel();
        lock(&conn.pending).insert(req.rqi.clone(), tx);
        let body = primitive_message::encode_request(req, Serialization::Json)?;
        let sent = conn.out.send(text(body)).await.is_ok();
        let answer = if sent {
            tokio::time::timeout(timeout, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        lock(&conn.pending).remove(&req.rqi);
        answer.ok_or_else(|| unreachable(url, format_args!("no answer within {timeout:?}")))
    }

    /// The open connection to the server of `url`, or a new one.
    async fn connection(
        &self,
        url: &str,
        tls: Option<&TlsSettings>,
        timeout: Duration,
        max: usize,
    ) -> M2mResult<Arc<Connection>> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| unreachable(url, format_args!("invalid URL: {e}")))?;
        if uri.scheme_str() != Some("wss") {
            return Err(unreachable(url, "only wss:// (TLS) is supported"));
        }
        let host = uri
            .host()
            .ok_or_else(|| unreachable(url, "no host"))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let authority = format!("{host}:{port}");
        let mut connections = self.connections.lock().await;
        if let Some(c) = connections
            .get(&authority)
            .filter(|c| c.open.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Ok(Arc::clone(c));
        }
        let tls =
            tls.ok_or_else(|| unreachable(url, "wss:// needs TLS credentials (none configured)"))?;
        let tcp = tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)),
        )
        .await
        .map_err(|_| unreachable(url, "TCP connect timed out"))?
        .map_err(|e| unreachable(url, e))?;
        let _ = tcp.set_nodelay(true);
        let stream = m2m_transport::connect(&tls.context, tcp, &tls.check_for(&host), timeout)
            .await
            .map_err(|e| unreachable(url, e))?;
        // TS-0020 clause 6.2.2: request target "/", the oneM2M subprotocol.
        let mut request = format!("wss://{authority}/")
            .into_client_request()
            .map_err(|e| unreachable(url, e))?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            http::HeaderValue::from_static(SUBPROTOCOL),
        );
        let config = WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let (ws, answer) = tokio::time::timeout(
            timeout,
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)),
        )
        .await
        .map_err(|_| unreachable(url, "WebSocket handshake timed out"))?
        .map_err(|e| unreachable(url, format_args!("WebSocket handshake: {e}")))?;
        let agreed = answer
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok());
        if agreed != Some(SUBPROTOCOL) {
            return Err(unreachable(url, "the server did not agree to oneM2M.json"));
        }
        let (mut sink, mut source) = ws.split();
        let (out, mut queue) = mpsc::channel::<Message>(256);
        let pending: Pending = Arc::default();
        let inbox: Arc<Mutex<Option<mpsc::Sender<Request>>>> = Arc::default();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        tokio::spawn(async move {
            while let Some(m) = queue.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let (answers, requests, alive, replies) = (
            Arc::clone(&pending),
            Arc::clone(&inbox),
            Arc::clone(&open),
            out.clone(),
        );
        tokio::spawn(async move {
            while let Some(Ok(m)) = source.next().await {
                let body = match m {
                    Message::Text(t) => t.as_bytes().to_vec(),
                    Message::Binary(b) => b.to_vec(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                    continue;
                };
                if v.get("rsc").is_some() {
                    if let Ok(resp) = primitive_message::response_from_value(&v) {
                        if let Some(tx) = lock(&answers).remove(&resp.rqi) {
                            let _ = tx.send(resp);
                        }
                    }
                    continue;
                }
                let rqi = v
                    .get("rqi")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let to = lock(&requests).clone();
                let refusal = match primitive_message::request_from_value(&v, |_| false) {
                    Ok(req) => match to {
                        Some(to) if to.try_send(req).is_ok() => None,
                        _ => Some(M2mError::new(
                            ResponseStatusCode::TargetNotReachable,
                            "this client takes no requests",
                        )),
                    },
                    Err(e) => Some(e),
                };
                if let Some(e) = refusal {
                    let resp = Response::error(&e, rqi);
                    let body = primitive_message::encode_response(&resp, Serialization::Json);
                    let _ = replies.send(text(body)).await;
                }
            }
            alive.store(false, std::sync::atomic::Ordering::Relaxed);
            lock(&requests).take();
        });
        let conn = Arc::new(Connection {
            out,
            pending,
            inbox,
            open,
        });
        connections.insert(authority, Arc::clone(&conn));
        Ok(conn)
    }
}

/// The requests the server sends on this client's connection (notifications), each answered
/// on it.
pub struct WsInbox {
    requests: mpsc::Receiver<Request>,
    out: mpsc::Sender<Message>,
}

impl WsInbox {
    /// The next request, `None` once the connection has closed.
    pub async fn next(&mut self) -> Option<Request> {
        self.requests.recv().await
    }

    /// Sends the answer to a request.
    pub async fn answer(&self, resp: &Response) -> M2mResult<()> {
        let body = primitive_message::encode_response(resp, Serialization::Json);
        self.out
            .send(text(body))
            .await
            .map_err(|_| unreachable("wss", "the connection has closed"))
    }
}

impl crate::Client {
    /// Receives the requests the server of `url` sends on this client's connection (opened if
    /// it is not yet).
    pub async fn websocket_inbox(&self, url: &str) -> M2mResult<WsInbox> {
        let conn = self
            .websocket
            .connection(
                url,
                self.tls_settings.as_deref(),
                self.timeout,
                self.max_body,
            )
            .await?;
        let (tx, requests) = mpsc::channel(256);
        *lock(&conn.inbox) = Some(tx);
        Ok(WsInbox {
            requests,
            out: conn.out.clone(),
        })
    }
}
