//! The CoAP binding on the server side (TS-0008): the transport layer (m2m-transport's datagram
//! listener) gives a session of one peer address, plain or a DTLS association; its messages go
//! through the message layer ([`m2m_core::coap_exchange`]: piggybacked answers, deduplication,
//! blocks), and each whole request becomes a request primitive for [`Cse::handle`], as the peer
//! the session is.

use crate::association::{Association, Peer, PlainTrust};
use crate::cse::Cse;
use coap_lite::Packet;
use m2m_core::coap_binding;
use m2m_core::coap_exchange::Exchanges;
use m2m_core::Response;
use m2m_transport::Session;
use std::sync::Arc;

/// Serves one session: its requests, as the peer it is.
pub async fn serve_session(cse: Arc<Cse>, mut session: Session<Association>, plain: PlainTrust) {
    let (peer, _inner) =
        Peer::of_transport(&cse, session.peer, session.association.as_ref(), plain);
    let mut exchanges = Exchanges::default();
    let max = cse.config().http.max_body_bytes;
    while let Some(datagram) = session.io.recv().await {
        let answer = exchanges
            .answer(&datagram, max, |request| respond(&cse, &peer, request))
            .await;
        let Some(reply) = answer else {
            continue;
        };
        if session.io.send(&reply).await.is_err() {
            break;
        }
        if *session.shutdown.borrow() {
            break;
        }
    }
    session.io.close().await;
}

/// One whole request: decoded, handled by the CSE as `peer`, encoded.
async fn respond(cse: &Arc<Cse>, peer: &Peer, request: Packet) -> Packet {
    // Methods without an operation were refused by the message layer (4.05) already.
    let op = coap_binding::operation(&request).unwrap_or(m2m_core::Operation::Notify);
    let resp = match coap_binding::decode_request(&request, m2m_core::schema::is_attribute_name) {
        Ok(req) if req.rt == m2m_core::ResponseType::NoResponse => {
            cse.handle(req, peer.clone()).await;
            return coap_binding::no_response();
        }
        Ok(req) => cse.handle(req, peer.clone()).await,
        Err(e) => {
            let mut resp = Response::error(&e, coap_binding::request_identifier(&request));
            cse.stamp(&mut resp);
            resp
        }
    };
    coap_binding::encode_response(&resp, op, coap_binding::response_serialization(&request))
}
