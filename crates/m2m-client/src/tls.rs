//! The `https` transport: a connector that opens TLS connections in the oneM2M profiles
//! (TS-0003 clause 10.2) with the client's credentials, for hyper's pooled client.

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use openssl::ssl::SslContext;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// The TLS side of a client: its context (credentials, trust, suites) and the server name
/// it sends as SNI and verifies, when the servers it talks to are known by one name.
#[derive(Clone)]
pub struct TlsSettings {
    pub context: SslContext,
    /// Overrides the URL host for SNI and certificate name checks (e.g. `id-in.m2m.example.com`
    /// when the registrar is reached by IP address).
    pub server_name: Option<String>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub(crate) struct TlsConnector {
    pub(crate) settings: Arc<TlsSettings>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TlsConnection;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsConnection, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let settings = Arc::clone(&self.settings);
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or("URL has no host")?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            // SNI carries a host name, never an address literal (RFC 6066 clause 3).
            let name = settings.server_name.clone().or_else(|| {
                host.parse::<std::net::IpAddr>()
                    .is_err()
                    .then(|| host.clone())
            });
            let ssl = m2m_security::tls::client_ssl(&settings.context, name.as_deref())?;
            let mut stream = SslStream::new(ssl, tcp)?;
            Pin::new(&mut stream).connect().await.map_err(|e| {
                format!(
                    "TLS handshake failed: {}",
                    m2m_security::tls::handshake_reason(&e)
                )
            })?;
            Ok(TlsConnection(TokioIo::new(stream)))
        })
    }
}

/// One TLS connection, as hyper's client reads and writes it.
pub struct TlsConnection(TokioIo<SslStream<TcpStream>>);

impl Connection for TlsConnection {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
