//! The HTTP binding on the server side (TS-0009): accepts connections (plain, or TLS with a
//! security association), turns each HTTP request into a request primitive, hands it to the CSE
//! with the peer's facts, and writes the response primitive back.

use crate::association::{Association, Peer};
use crate::cse::Cse;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use m2m_core::{http_binding, M2mError, Response};
use openssl::ssl::{Ssl, SslContext};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// What a listener does with a new connection.
pub enum ListenerKind {
    /// Plain HTTP: no security association. `development` marks the loopback listener of the
    /// embedded defaults, where the admin originator is honoured.
    Plain { development: bool },
    /// TLS in the oneM2M profiles; every connection is a security association.
    Tls(Arc<TlsListener>),
}

pub struct TlsListener {
    pub context: SslContext,
    pub handshake_timeout: Duration,
    pub max_handshakes_per_source: usize,
    /// Handshakes in progress per source address.
    pending: Mutex<HashMap<IpAddr, usize>>,
}

impl TlsListener {
    pub fn new(
        context: SslContext,
        handshake_timeout: Duration,
        max_handshakes_per_source: usize,
    ) -> Self {
        Self {
            context,
            handshake_timeout,
            max_handshakes_per_source,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn begin(&self, ip: IpAddr) -> bool {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let n = p.entry(ip).or_insert(0);
        if *n >= self.max_handshakes_per_source {
            return false;
        }
        *n += 1;
        true
    }

    fn end(&self, ip: IpAddr) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = p.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                p.remove(&ip);
            }
        }
    }
}

/// Serves a listener until the task is dropped.
pub async fn serve(cse: Arc<Cse>, listener: TcpListener, kind: ListenerKind) {
    let kind = Arc::new(kind);
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Running out of file descriptors must not end the server.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let cse = Arc::clone(&cse);
        let kind = Arc::clone(&kind);
        tokio::spawn(async move {
            match &*kind {
                ListenerKind::Plain { development } => {
                    let peer = Peer {
                        addr: Some(addr),
                        association: None,
                        development: *development,
                        authenticated: false,
                    };
                    // An idle connection holds no HTTP buffers until its first request.
                    if first_bytes(&stream).await {
                        serve_connection(cse, stream, peer).await
                    }
                }
                ListenerKind::Tls(tls) => {
                    if let Some((stream, association)) = establish(&cse, tls, stream, addr).await {
                        // Group authentication: a member is inner-authenticated while connected.
                        let _inner = if cse.config().group_agent.members.is_empty() {
                            None
                        } else {
                            cse.group_agent.enter(&association)
                        };
                        let peer = Peer {
                            addr: Some(addr),
                            association: Some(Arc::new(association)),
                            development: false,
                            authenticated: false,
                        };
                        // Nothing is read yet: wait until the client speaks before allocating the
                        // HTTP buffers, so that idle associations stay small.
                        let ready =
                            stream.ssl().pending() > 0 || first_bytes(stream.get_ref()).await;
                        if ready {
                            serve_connection(cse, stream, peer).await
                        }
                    }
                }
            }
        });
    }
}

/// Waits until the client sends something (or closes), without consuming it. Readiness alone is
/// not enough: after a handshake the socket often still reads as ready although nothing is there,
/// and HTTP buffers (16 KB a connection) would be allocated for every idle association.
async fn first_bytes(tcp: &TcpStream) -> bool {
    let mut one = [0u8; 1];
    tcp.peek(&mut one).await.is_ok()
}

/// Runs the TLS handshake and turns what it authenticated into an association. Every outcome is
/// one audit line; no key material is ever logged, only the identity string a client offered.
async fn establish(
    cse: &Cse,
    tls: &TlsListener,
    stream: TcpStream,
    addr: SocketAddr,
) -> Option<(tokio_openssl::SslStream<TcpStream>, Association)> {
    if !tls.begin(addr.ip()) {
        tracing::warn!(target: "audit", peer = %addr, "association refused: too many handshakes in progress from this address");
        return None;
    }
    let outcome = handshake(cse, tls, stream).await;
    tls.end(addr.ip());
    match outcome {
        Ok((stream, association)) => {
            tracing::info!(target: "audit", peer = %addr, mode = ?association.mode, credential = %association.credential_id,
                entity = association.entity.as_deref().unwrap_or("-"), "association established");
            Some((stream, association))
        }
        Err(why) => {
            tracing::warn!(target: "audit", peer = %addr, reason = %why, "association refused");
            None
        }
    }
}

async fn handshake(
    cse: &Cse,
    tls: &TlsListener,
    stream: TcpStream,
) -> Result<(tokio_openssl::SslStream<TcpStream>, Association), String> {
    let ssl = Ssl::new(&tls.context).map_err(|e| e.to_string())?;
    let mut stream = tokio_openssl::SslStream::new(ssl, stream).map_err(|e| e.to_string())?;
    match tokio::time::timeout(tls.handshake_timeout, Pin::new(&mut stream).accept()).await {
        Err(_) => return Err("handshake timed out".into()),
        Ok(Err(e)) => return Err(m2m_security::tls::handshake_reason(&e)),
        Ok(Ok(())) => {}
    }
    let ssl = stream.ssl();
    let offered =
        m2m_security::tls::association_of(ssl).ok_or("the handshake authenticated nothing")?;
    let association = Association::from_handshake(offered, |der| cse.certificate_identity(der))
        .ok_or("the certificate names no oneM2M identity of this service provider")?;
    if association.mode == crate::association::SaeMode::Certificate {
        let accepted = cse
            .config()
            .tls
            .as_ref()
            .map(|t| t.accepted_identities.as_slice())
            .unwrap_or_default();
        let entity = association.entity.as_deref().unwrap_or("");
        if !accepted.is_empty()
            && !accepted
                .iter()
                .any(|a| crate::impersonation::same_entity(cse, a, entity))
        {
            return Err(format!(
                "certificate identity {entity} is not among the accepted peers"
            ));
        }
    }
    Ok((stream, association))
}

async fn serve_connection<S>(cse: Arc<Cse>, stream: S, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = peer.addr;
    let svc = service_fn(move |req| handle(Arc::clone(&cse), peer.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = conn.await {
        tracing::debug!(peer = ?addr, error = %e, "connection closed with error");
    }
}

async fn handle(
    cse: Arc<Cse>,
    peer: Peer,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let rqi = http_binding::request_identifier(&parts.headers);
    let max = cse.config().http.max_body_bytes;
    let body = match Limited::new(body, max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let e = M2mError::bad_request(format!("request body larger than {max} bytes"));
            return Ok(to_hyper(Response::error(&e, rqi)));
        }
    };
    let resp = match http_binding::decode_request(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &body,
        m2m_core::schema::is_attribute_name,
    ) {
        Ok(req) => cse.handle(req, peer).await,
        Err(e) => Response::error(&e, rqi),
    };
    Ok(to_hyper(resp))
}

fn to_hyper(resp: Response) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = http_binding::encode_response(&resp).into_parts();
    hyper::Response::from_parts(parts, Full::new(body))
}
