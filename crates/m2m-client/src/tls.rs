//! The `https` transport: a connector that opens TLS connections in the oneM2M profiles
//! (TS-0003 clause 10.2) with the client's credentials, for hyper's pooled client.

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use m2m_transport::PeerCheck;
use openssl::ssl::SslContext;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// Who the servers of a client must be (TS-0003 clause 8.2.1, Entity A's check of Entity B).
#[derive(Clone)]
pub enum PeerPolicy {
    /// Each URL's host: the server's certificate must carry that DNS name (sent as SNI) or IP
    /// address. For clients that follow URLs someone gave them (notification targets).
    UrlHost,
    /// Whatever address the URL gives, the server's certificate must name this host (e.g.
    /// `id-in.m2m.example.com` when the registrar is reached by IP address).
    Named(String),
    /// TLS-PSK: knowing the key proves the server.
    PreSharedKey,
    /// A check of the server's certificate of the caller's own (e.g. its oneM2M identity).
    Certificate(m2m_transport::CertificateCheck),
}

/// The TLS side of a client: its context (credentials, trust, suites) and who its servers must be.
#[derive(Clone)]
pub struct TlsSettings {
    pub context: SslContext,
    pub peer: PeerPolicy,
}

impl TlsSettings {
    /// The check for a connection to `host` (the URL's).
    pub(crate) fn check_for(&self, host: &str) -> PeerCheck {
        match &self.peer {
            PeerPolicy::UrlHost => PeerCheck::Host(host.to_owned()),
            PeerPolicy::Named(name) => PeerCheck::Host(name.clone()),
            PeerPolicy::PreSharedKey => PeerCheck::PreSharedKey,
            PeerPolicy::Certificate(f) => PeerCheck::Certificate(Arc::clone(f)),
        }
    }
}

impl std::fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerPolicy::UrlHost => f.write_str("UrlHost"),
            PeerPolicy::Named(n) => write!(f, "Named({n:?})"),
            PeerPolicy::PreSharedKey => f.write_str("PreSharedKey"),
            PeerPolicy::Certificate(_) => f.write_str("Certificate(..)"),
        }
    }
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub(crate) struct TlsConnector {
    pub(crate) settings: Arc<TlsSettings>,
    /// The handshake must finish within this time.
    pub(crate) handshake_timeout: std::time::Duration,
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
        let timeout = self.handshake_timeout;
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
            let check = settings.check_for(&host);
            let stream = m2m_transport::connect(&settings.context, tcp, &check, timeout).await?;
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
