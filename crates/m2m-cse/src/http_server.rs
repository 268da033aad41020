//! The HTTP binding on the server side (TS-0009): the transport layer (m2m-transport) accepts the
//! connection and establishes its association; here each HTTP request becomes a request primitive,
//! goes to the CSE with the peer's facts, and its response primitive is written back.

use crate::association::{Association, Peer, PlainTrust};
use crate::cse::Cse;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use m2m_core::serialization::Serialization;
use m2m_core::{http_binding, M2mError, Response};
use m2m_security::tls::Authenticated;
use m2m_transport::{Binder, Connection};
use openssl::ssl::SslRef;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the CSE makes of a completed handshake: the PSK row's association, or the identity of a
/// client certificate; never this CSE itself, and only the accepted identities when configured.
pub struct CseBinder {
    pub cse: Arc<Cse>,
}

impl Binder for CseBinder {
    type Association = Association;

    fn bind(
        &self,
        proof: Authenticated,
        _ssl: &SslRef,
        _peer: SocketAddr,
    ) -> Result<Association, String> {
        self.cse.bind_association(proof)
    }
}

/// Serves one accepted connection: its requests, as the peer it is.
pub async fn serve_connection(cse: Arc<Cse>, conn: Connection<Association>, plain: PlainTrust) {
    // Group authentication: a member is inner-authenticated while connected.
    let (peer, _inner) = Peer::of_transport(&cse, conn.peer, conn.association.as_ref(), plain);
    let svc = service_fn(move |req| handle(Arc::clone(&cse), peer.clone(), req));
    m2m_transport::http::serve(conn, svc).await
}

async fn handle(
    cse: Arc<Cse>,
    peer: Peer,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    if let Some(resp) = upper_tester(&cse, &peer, &parts) {
        return Ok(resp);
    }
    let rqi = http_binding::request_identifier(&parts.headers);
    let ser = http_binding::response_serialization(&parts.headers);
    let max = cse.config().http.max_body_bytes;
    let within = Duration::from_millis(cse.config().limits.body_read_timeout_ms);
    let body = match tokio::time::timeout(within, Limited::new(body, max).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            let e = M2mError::bad_request(format!("request body larger than {max} bytes"));
            return Ok(to_hyper(Response::error(&e, rqi), ser));
        }
        Err(_) => {
            let e = M2mError::new(
                m2m_core::ResponseStatusCode::RequestTimeout,
                "the request body did not arrive in time",
            );
            return Ok(to_hyper(Response::error(&e, rqi), ser));
        }
    };
    let resp = match http_binding::decode_request(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &body,
        m2m_core::schema::is_attribute_name,
    ) {
        Ok(req) if req.rt == m2m_core::ResponseType::NoResponse => {
            cse.handle(req, peer).await;
            return Ok(no_response());
        }
        Ok(req) => cse.handle(req, peer).await,
        Err(e) => {
            let mut resp = Response::error(&e, rqi);
            cse.stamp(&mut resp);
            resp
        }
    };
    Ok(to_hyper(resp, ser))
}

/// `POST /__ut__` with `X-M2M-UTCMD` when the interface is on and the request came over the
/// trusted plain listener (`crate::upper_tester`); anything else is an ordinary request.
fn upper_tester(
    cse: &Cse,
    peer: &Peer,
    parts: &http::request::Parts,
) -> Option<hyper::Response<Full<Bytes>>> {
    let path = parts.uri.path().trim_end_matches('/');
    if path != crate::upper_tester::PATH
        || parts.method != hyper::Method::POST
        || !cse.config().http.upper_tester
        || peer.association.is_some()
        || peer.plain != PlainTrust::Trusted
        || !parts
            .headers
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(crate::upper_tester::is_loopback_host)
    {
        return None;
    }
    let cmd = parts.headers.get("x-m2m-utcmd")?;
    // From here on the interface answers, whatever happens: a command is never also taken for
    // an ordinary request.
    let (status, rsc, answer) = match cmd.to_str().map(|c| crate::upper_tester::run(cse, c)) {
        Ok(Ok(answer)) => (200, "2000", answer),
        Ok(Err(refused)) => (400, "4000", refused.0),
        Err(_) => (400, "4000", "the command is not text".to_owned()),
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    resp.headers_mut()
        .insert("x-m2m-rsc", hyper::header::HeaderValue::from_static(rsc));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&answer) {
        if !answer.is_empty() {
            resp.headers_mut().insert("x-m2m-utrsp", v);
        }
    }
    Some(resp)
}

/// The answer to a request that wanted none (Response Type noResponse): 204 without oneM2M
/// headers or body, since HTTP must answer something.
fn no_response() -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = hyper::StatusCode::NO_CONTENT;
    resp
}

fn to_hyper(resp: Response, ser: Serialization) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = http_binding::encode_response(&resp, ser).into_parts();
    hyper::Response::from_parts(parts, Full::new(body))
}
