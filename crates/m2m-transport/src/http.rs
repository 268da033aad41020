//! HTTP/1.1 (TS-0009) over an accepted connection: hyper serves it, the connection's timeouts sit
//! below it ([`crate::timed_io`]), and a shutdown lets the request in progress finish first.

use crate::acceptor::Connection;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::TokioIo;

/// Serves HTTP requests on `conn` with `service` until the client closes, a timeout ends the
/// connection, or the server shuts down.
pub async fn serve<A, S>(conn: Connection<A>, service: S)
where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<Full<Bytes>>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Connection {
        peer,
        io,
        mut shutdown,
        ..
    } = conn;
    let http = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(http);
    let outcome = tokio::select! {
        r = http.as_mut() => r,
        _ = crate::acceptor::stop_requested(&mut shutdown) => {
            http.as_mut().graceful_shutdown();
            http.await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(peer = %peer, error = %e, "connection closed with error");
    }
}
