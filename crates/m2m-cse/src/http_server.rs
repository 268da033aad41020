//! The HTTP binding on the server side (TS-0009): accepts connections, turns each HTTP request
//! into a request primitive, hands it to the CSE, and writes the response primitive back.

use crate::cse::{Cse, Peer};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use m2m_core::{http_binding, M2mError, Response};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves HTTP on `listener` until the task is dropped.
pub async fn serve(cse: Arc<Cse>, listener: TcpListener) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Running out of file descriptors must not end the server.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let cse = Arc::clone(&cse);
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(Arc::clone(&cse), addr, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(peer = %addr, error = %e, "connection closed with error");
            }
        });
    }
}

async fn handle(
    cse: Arc<Cse>,
    addr: SocketAddr,
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
        Ok(req) => cse.handle(req, Peer::Remote(addr)).await,
        Err(e) => Response::error(&e, rqi),
    };
    Ok(to_hyper(resp))
}

fn to_hyper(resp: Response) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = http_binding::encode_response(&resp).into_parts();
    hyper::Response::from_parts(parts, Full::new(body))
}
